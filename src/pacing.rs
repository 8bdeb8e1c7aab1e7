//! When to read the proc connector on the loop's own schedule instead of
//! being woken for each of its messages. PURE: the daemon feeds it message
//! counts and applies the mode it returns.
//!
//! In fanotify mode every exec already wakes the loop twice (its permission
//! events), and the proc connector adds a fork, an exec and an exit message
//! per process, each a wake-up of its own when the loop sleeps. On a busy
//! host those wake-ups (a context switch, often a cross-CPU interrupt) cost
//! more than the messages: measured on 2 cores, 4.2 context switches and
//! 265 µs of sensor CPU per exec eagerly, 1.8 and 179 µs paced. Paced, the
//! socket is drained after every wake-up of the loop and at least every
//! [`PACED_POLL`], so a message waits at most that long; an idle host keeps
//! the eager mode and no timer at all.

use std::time::{Duration, Instant};

/// Longest a proc-connector message waits in paced mode.
pub const PACED_POLL: Duration = Duration::from_millis(1);
/// Length of the window the message rate is measured over.
const WINDOW: Duration = Duration::from_secs(1);
/// Messages per window above which the loop switches to paced reads
/// (about 300 execs/s: fork, exec and exit each).
const PACE_ABOVE: u64 = 1000;
/// Messages per window below which it goes back to eager reads.
const EAGER_BELOW: u64 = 300;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The socket is in the poll set: read as soon as a message arrives.
    Eager,
    /// The socket is out of the poll set and read on every loop turn.
    Paced,
}

#[derive(Debug)]
pub struct Pacing {
    mode: Mode,
    window_start: Instant,
    messages: u64,
}

impl Pacing {
    pub fn new(now: Instant) -> Self {
        Pacing {
            mode: Mode::Eager,
            window_start: now,
            messages: 0,
        }
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Puts the mode back when switching to the one [`decide`](Self::decide)
    /// chose failed.
    pub fn keep(&mut self, mode: Mode) {
        self.mode = mode;
    }

    /// Counts `n` messages read.
    pub fn read(&mut self, n: u64) {
        self.messages = self.messages.saturating_add(n);
    }

    /// At the end of each window, the mode for the next one; `Some` only
    /// when it changes.
    pub fn decide(&mut self, now: Instant) -> Option<Mode> {
        let elapsed = now.saturating_duration_since(self.window_start);
        if elapsed < WINDOW {
            return None;
        }
        // Per WINDOW, whatever the real length of this one was.
        let rate = u128::from(self.messages) * WINDOW.as_nanos() / elapsed.as_nanos().max(1);
        let rate = u64::try_from(rate).unwrap_or(u64::MAX);
        self.window_start = now;
        self.messages = 0;
        let next = match self.mode {
            Mode::Eager if rate > PACE_ABOVE => Mode::Paced,
            Mode::Paced if rate < EAGER_BELOW => Mode::Eager,
            m => m,
        };
        (next != self.mode).then(|| {
            self.mode = next;
            next
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paces_under_load_and_returns_when_quiet() {
        let t0 = Instant::now();
        let mut p = Pacing::new(t0);
        p.read(5000);
        assert_eq!(
            p.decide(t0 + Duration::from_millis(500)),
            None,
            "mid-window"
        );
        assert_eq!(p.decide(t0 + WINDOW), Some(Mode::Paced));
        assert_eq!(p.mode(), Mode::Paced);
        // Between the thresholds: no flapping.
        p.read(500);
        assert_eq!(p.decide(t0 + 2 * WINDOW), None);
        p.read(10);
        assert_eq!(p.decide(t0 + 3 * WINDOW), Some(Mode::Eager));
        p.read(500);
        assert_eq!(p.decide(t0 + 4 * WINDOW), None);
    }

    #[test]
    fn rate_is_per_window_even_after_a_long_gap() {
        let t0 = Instant::now();
        let mut p = Pacing::new(t0);
        // 1500 messages over 10 s is 150/s: stays eager.
        p.read(1500);
        assert_eq!(p.decide(t0 + 10 * WINDOW), None);
        assert_eq!(p.mode(), Mode::Eager);
    }
}
