//! Answering a waiting exec: the verdict, the race with the watchdog for
//! the right to answer, and the retry timer of deferred events.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::time::Instant;

use super::watchdog::{self, Claim};
use super::{ExecCapture, FanotifyCapture, Verdict};
use crate::capture::Decider;

impl FanotifyCapture {
    /// The verdict for a capture: `Allow` unless enforcing, when `decide`
    /// judges it.
    pub(super) fn decide(
        &self,
        capture: Option<&ExecCapture>,
        decider: &mut dyn Decider,
    ) -> Verdict {
        match capture {
            Some(c) if self.opts.enforce && c.args_read => decider.decide(c),
            _ => Verdict::Allow,
        }
    }

    /// The lowest free watchdog slot; the caller checked there is one.
    pub(super) fn take_slot(&mut self) -> usize {
        let slot = self.free_slots.trailing_zeros() as usize;
        self.free_slots &= !(1 << slot);
        slot
    }

    /// Sets the retry timer to [`next_retry`](Self::next_retry), or
    /// disarms it. Setting also resets its expiry count, so a fired timer
    /// needs no read.
    pub(super) fn arm_timer(&mut self) {
        let next = self.next_retry();
        if next.is_none() && !self.timer_armed {
            return;
        }
        let mut spec: libc::itimerspec = unsafe { std::mem::zeroed() };
        if let Some(at) = next {
            // A zero value would disarm: at least 1 µs.
            let d = at
                .saturating_duration_since(Instant::now())
                .max(std::time::Duration::from_micros(1));
            spec.it_value.tv_sec = d.as_secs() as libc::time_t;
            spec.it_value.tv_nsec = libc::c_long::from(d.subsec_nanos() as i32);
        }
        // SAFETY: our timerfd and a local itimerspec.
        let r = unsafe {
            libc::timerfd_settime(self.timer.as_raw_fd(), 0, &spec, std::ptr::null_mut())
        };
        if r != 0 {
            // The next event or the watchdog still moves deferred ones on.
            log::debug!("timerfd_settime: {}", io::Error::last_os_error());
        }
        self.timer_armed = next.is_some();
    }

    /// Answers event `fd` in watchdog slot `slot` unless the watchdog did;
    /// returns what the kernel got. The wait recorded ends just before the
    /// answer is written: the task resumes inside that write, whereas the
    /// loop may lose its CPU to the task on the way out of it.
    pub(super) fn answer(
        &mut self,
        fd: RawFd,
        slot: usize,
        slot_word: u64,
        verdict: Verdict,
        read_at: Instant,
    ) -> Verdict {
        let ours = match &self.watchdog {
            Some(wd) => wd.claim(slot, slot_word) == Claim::Loop,
            None => true,
        };
        let given = if ours {
            let response = match verdict {
                Verdict::Allow => libc::FAN_ALLOW,
                Verdict::Deny => libc::FAN_DENY,
            };
            self.latency.record(read_at);
            if watchdog::respond(self.group.as_raw_fd(), fd, response) {
                self.stats.answered += 1;
                if verdict == Verdict::Deny {
                    self.stats.denied += 1;
                }
            } else {
                log::debug!("fanotify response: {}", io::Error::last_os_error());
            }
            verdict
        } else {
            // The watchdog answered: at least this long, at most until now.
            self.latency.record(read_at);
            Verdict::Allow
        };
        if let Some(wd) = &self.watchdog {
            wd.release(slot, slot_word);
        }
        given
    }
}
