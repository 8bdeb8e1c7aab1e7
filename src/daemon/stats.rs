//! The counter snapshot (every part's counters, from the registry) and the
//! `stats:` self-log line.

use std::time::{Duration, Instant};

use super::Loop;
use crate::counters::Counters;

pub struct StatsLine {
    last: Instant,
    pub every: Duration,
    /// Sum of the loss counters at the last `stats:` line.
    last_losses: u64,
}

impl StatsLine {
    pub fn new(every: Duration) -> Self {
        StatsLine {
            last: Instant::now(),
            every,
            last_losses: 0,
        }
    }
}

impl Loop {
    /// Every counter: the proc connector, the pipeline and what it owns
    /// (table, join, caches, capture source), the outputs.
    pub(super) fn counters(&self) -> Counters {
        let mut out = Counters::default();
        self.kernel.counters(&mut out);
        self.pipeline.counters(&mut out);
        out.merge(&self.outputs.counters());
        out
    }

    /// One self-log line when a loss counter moved (or on exit).
    pub(super) fn log_stats(&mut self, always: bool) {
        if !always && self.stats.last.elapsed() < self.stats.every {
            return;
        }
        let counters = self.counters();
        let losses = counters.losses();
        if always || losses != self.stats.last_losses {
            let mut line: Vec<String> = counters
                .iter()
                .map(|(c, v)| format!("{}={v}", c.name()))
                .collect();
            if let Some((p50, p99)) = self.pipeline.source().and_then(|s| s.answer_latency_us()) {
                line.push(format!(
                    "fanotify.answer_us_p50={p50:.1} fanotify.answer_us_p99={p99:.1}"
                ));
            }
            log::info!("stats: {}", line.join(" "));
            self.stats.last_losses = losses;
        }
        self.stats.last = Instant::now();
    }
}
