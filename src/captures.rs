//! Exec captures from fanotify waiting for their proc-connector exec event.
//!
//! PURE. A capture is taken at permission time, before the exec completes,
//! so it always precedes the proc connector's exec event of the same task.
//! A process can exec again before its first event is handled, hence a
//! small queue per pid. A capture whose exec failed after the open has no
//! partner: it expires and is counted. Bounded in count and in bytes (argv
//! can be large, and failing execs are cheap to make): when full, the new
//! capture is dropped and counted (its exec falls back to the `/proc` path).

use std::collections::{HashMap, VecDeque};

use crate::fanotify::ExecCapture;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CaptureStats {
    pub matched: u64,
    pub expired: u64,
    pub dropped_full: u64,
}

/// Bytes of argv and paths held at most.
pub const MAX_PENDING_BYTES: usize = 64 << 20;

fn weight(c: &ExecCapture) -> usize {
    c.argv.len() + c.executable.len() + c.filename.len() + 64
}

pub struct PendingCaptures {
    by_pid: HashMap<u32, VecDeque<(u64, ExecCapture)>>,
    len: usize,
    bytes: usize,
    capacity: usize,
    max_age_ms: u64,
    pub stats: CaptureStats,
}

impl PendingCaptures {
    pub fn new(capacity: usize, max_age_ms: u64) -> Self {
        PendingCaptures {
            by_pid: HashMap::new(),
            len: 0,
            bytes: 0,
            capacity,
            max_age_ms,
            stats: CaptureStats::default(),
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn push(&mut self, capture: ExecCapture, now_ms: u64) {
        let w = weight(&capture);
        if self.len >= self.capacity || self.bytes + w > MAX_PENDING_BYTES {
            self.stats.dropped_full += 1;
            return;
        }
        self.len += 1;
        self.bytes += w;
        self.by_pid
            .entry(capture.pid)
            .or_default()
            .push_back((now_ms, capture));
    }

    /// The oldest capture of `pid`, for its proc-connector exec event.
    pub fn take(&mut self, pid: u32) -> Option<ExecCapture> {
        let q = self.by_pid.get_mut(&pid)?;
        let (_, c) = q.pop_front()?;
        if q.is_empty() {
            self.by_pid.remove(&pid);
        }
        self.len -= 1;
        self.bytes -= weight(&c);
        self.stats.matched += 1;
        Some(c)
    }

    /// Drops captures older than the maximum age (execs that failed after
    /// the open, or whose event the kernel dropped).
    pub fn expire(&mut self, now_ms: u64) {
        let max_age = self.max_age_ms;
        let mut expired = 0;
        let mut freed = 0;
        self.by_pid.retain(|_, q| {
            while q
                .front()
                .is_some_and(|(at, _)| now_ms.saturating_sub(*at) > max_age)
            {
                if let Some((_, c)) = q.pop_front() {
                    freed += weight(&c);
                }
                expired += 1;
            }
            !q.is_empty()
        });
        self.len -= expired;
        self.bytes -= freed;
        self.stats.expired += expired as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fanotify::Verdict;

    fn cap(pid: u32, arg: &str) -> ExecCapture {
        ExecCapture {
            pid,
            argv: arg.as_bytes().to_vec(),
            truncated: false,
            executable: vec![],
            filename: vec![],
            interpreter: None,
            syscall: 59,
            args_read: true,
            verdict: Verdict::Allow,
        }
    }

    #[test]
    fn takes_in_exec_order_per_pid() {
        let mut p = PendingCaptures::new(8, 1000);
        p.push(cap(1, "first"), 0);
        p.push(cap(2, "other"), 0);
        p.push(cap(1, "second"), 1);
        assert_eq!(p.take(1).unwrap().argv, b"first");
        assert_eq!(p.take(1).unwrap().argv, b"second");
        assert!(p.take(1).is_none());
        assert_eq!(p.len(), 1);
        assert_eq!(p.stats.matched, 2);
    }

    #[test]
    fn unmatched_captures_expire_and_are_counted() {
        let mut p = PendingCaptures::new(8, 100);
        p.push(cap(1, "failed exec"), 0);
        p.push(cap(2, "young"), 150);
        p.expire(200);
        assert_eq!(p.stats.expired, 1);
        assert!(p.take(1).is_none());
        assert!(p.take(2).is_some());
        assert!(p.is_empty());
    }

    #[test]
    fn byte_budget_bounds_big_argv() {
        let mut p = PendingCaptures::new(1000, 100);
        let mut big = cap(1, "x");
        big.argv = vec![b'a'; MAX_PENDING_BYTES / 2];
        p.push(big.clone(), 0);
        p.push(big.clone(), 0);
        assert_eq!(p.len(), 1, "the second would pass the byte budget");
        assert_eq!(p.stats.dropped_full, 1);
        p.take(1);
        p.push(big, 0);
        assert_eq!(p.len(), 1, "taking frees its bytes");
    }

    #[test]
    fn full_store_drops_and_counts() {
        let mut p = PendingCaptures::new(1, 100);
        p.push(cap(1, "a"), 0);
        p.push(cap(2, "b"), 0);
        assert_eq!(p.stats.dropped_full, 1);
        assert_eq!(p.len(), 1);
    }
}
