//! How long execs waited for our answer: a ring of the last samples,
//! summarised as percentiles for `status` and the `stats:` line.

use std::time::Instant;

/// Answer latencies kept for percentiles.
const LATENCY_SAMPLES: usize = 1 << 16;

#[derive(Default)]
pub struct Latency {
    samples_ns: Vec<u32>,
    next: usize,
}

impl Latency {
    /// Records the time from `read_at` (the event's read) to now.
    pub fn record(&mut self, read_at: Instant) {
        let ns = u32::try_from(read_at.elapsed().as_nanos()).unwrap_or(u32::MAX);
        if self.samples_ns.len() < LATENCY_SAMPLES {
            self.samples_ns.push(ns);
        } else {
            self.samples_ns[self.next] = ns;
            self.next = (self.next + 1) % LATENCY_SAMPLES;
        }
    }

    /// (p50, p99) in µs over the last 65 536 events; `None` before any.
    pub fn percentiles_us(&self) -> Option<(f64, f64)> {
        if self.samples_ns.is_empty() {
            return None;
        }
        let mut v = self.samples_ns.clone();
        v.sort_unstable();
        let at = |q: f64| {
            let i = ((v.len() - 1) as f64 * q).round() as usize;
            f64::from(v[i.min(v.len() - 1)]) / 1000.0
        };
        Some((at(0.5), at(0.99)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_recorded_waits() {
        let mut l = Latency::default();
        assert_eq!(l.percentiles_us(), None);
        let past = Instant::now() - std::time::Duration::from_millis(2);
        l.record(past);
        let (p50, p99) = l.percentiles_us().unwrap();
        assert!(p50 >= 2000.0 && p99 >= p50, "{p50} {p99}");
    }
}
