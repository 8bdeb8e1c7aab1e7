//! The status server: `execsentry status` over the root-only control
//! socket, answered with the counters and what was chosen at start.

use super::Loop;
use crate::status::{ControlServer, Features, Status};

/// What `status` reports besides the counters.
pub struct Control {
    pub server: Option<ControlServer>,
    pub started_at: String,
    pub features: Features,
    pub kept_caps: Vec<String>,
    /// `fanotify`, `kprobe` or `proc`.
    pub capture: String,
}

impl Control {
    pub fn serve(&mut self, status: &Status) {
        let Ok(mut reply) = serde_json::to_vec(status) else {
            return;
        };
        reply.push(b'\n');
        if let Some(c) = self.server.as_mut() {
            c.serve(&reply);
        }
    }
}

impl Loop {
    /// `execsentry status`: every counter plus what was chosen at start.
    pub(super) fn status(&self) -> Status {
        let counters = self.counters();
        let up = self.started.elapsed();
        let execs = counters.get(crate::counters::Counter::Execs);
        let c = &self.control;
        Status {
            version: env!("CARGO_PKG_VERSION").to_string(),
            pid: std::process::id(),
            started: c.started_at.clone(),
            uptime_secs: up.as_secs(),
            capture: c.capture.clone(),
            features: c.features.clone(),
            capabilities: c.kept_caps.clone(),
            rules: self.pipeline.rules.len(),
            rule_eval_ns: self.pipeline.rule_eval_ns / execs.max(1),
            execs_per_sec: execs as f64 / up.as_secs_f64().max(1e-3),
            answer_latency_us: self
                .pipeline
                .source()
                .and_then(|s| s.answer_latency_us())
                .map(|(p50, p99)| [p50, p99]),
            counters: counters.to_map(),
            stages_ns: crate::stages::totals()
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        }
    }
}
