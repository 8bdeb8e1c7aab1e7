//! Counting the proc-connector events the kernel dropped for us.
//!
//! PURE. `ENOBUFS` says *that* the socket overflowed, not how much was
//! lost. The kernel numbers events with a per-CPU counter (`cn_msg.seq`)
//! and every listener sees every number, so a gap in one CPU's sequence is
//! exactly the number of events lost.

/// CPUs tracked; events from a higher CPU number are not gap-checked.
const MAX_CPUS: usize = 8192;

#[derive(Debug, Default)]
pub struct SeqGaps {
    /// Next expected sequence number per CPU; `None` until first seen.
    next: Vec<Option<u32>>,
    pub lost: u64,
}

impl SeqGaps {
    /// Records one event's `(cpu, seq)`; returns how many were skipped.
    pub fn observe(&mut self, cpu: u32, seq: u32) -> u64 {
        let cpu = cpu as usize;
        if cpu >= MAX_CPUS {
            return 0;
        }
        if self.next.len() <= cpu {
            self.next.resize(cpu + 1, None);
        }
        let gap = match self.next[cpu] {
            // wrapping_sub: the counter wraps at 2^32. A number from the
            // past (reordering on old kernels) is not a loss, and must not
            // move the expectation back either, or the next in-order event
            // would look like a gap.
            Some(expected) => {
                let d = seq.wrapping_sub(expected);
                if d >= u32::MAX / 2 {
                    return 0;
                }
                u64::from(d)
            }
            None => 0,
        };
        self.next[cpu] = Some(seq.wrapping_add(1));
        self.lost += gap;
        gap
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_per_cpu_are_counted_exactly() {
        let mut g = SeqGaps::default();
        assert_eq!(g.observe(0, 10), 0, "the first number is the baseline");
        assert_eq!(g.observe(1, 500), 0);
        assert_eq!(g.observe(0, 11), 0);
        assert_eq!(g.observe(0, 15), 3);
        assert_eq!(g.observe(1, 501), 0);
        assert_eq!(g.lost, 3);
    }

    #[test]
    fn wrap_and_stale_numbers_are_not_losses() {
        let mut g = SeqGaps::default();
        g.observe(0, u32::MAX);
        assert_eq!(g.observe(0, 0), 0, "wrapped");
        assert_eq!(g.observe(0, 2), 1);
        assert_eq!(g.observe(0, 1), 0, "from the past");
        assert_eq!(g.observe(0, 3), 0, "the past did not move the expectation");
        assert_eq!(g.observe(9000, 1), 0, "beyond the tracked CPUs");
    }
}
