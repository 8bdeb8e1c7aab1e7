//! The watchdog process's side: after the fork it only watches the shared
//! slots and the group fd, answering what the loop leaves unanswered.
//! Async-signal-safe only: no allocation, no locks (see `process`).

use std::os::fd::RawFd;
use std::sync::atomic::Ordering;

use super::*;

impl Shared {
    pub(super) fn now_ns(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Answers overdue published events; returns when the earliest one
    /// still pending falls due (ns since `epoch`), `None` if none is, and
    /// how many it answered.
    pub(super) fn answer_overdue(&self) -> (Option<u64>, u64) {
        let now = self.now_ns();
        let handoff = self.handoff.load(Ordering::SeqCst);
        let beat = self.heartbeat_ns.load(Ordering::Relaxed);
        let mut next: Option<u64> = None;
        let mut answered = 0;
        for slot in &self.slots {
            let word = slot.state.load(Ordering::SeqCst);
            if word & STATE_MASK != PENDING {
                continue;
            }
            let fd = slot.fd.load(Ordering::Relaxed);
            let due = if handoff {
                0
            } else {
                due_ns(
                    slot.read_ns.load(Ordering::Relaxed),
                    beat,
                    slot.hold_ns.load(Ordering::Relaxed),
                )
            };
            if now < due {
                next = Some(next.map_or(due, |n| n.min(due)));
                continue;
            }
            let claimed = (word & !STATE_MASK) | WATCHDOG;
            // Fails if the loop claimed it or the slot moved on (another
            // generation): then fd/read may be stale and are not used.
            if slot
                .state
                .compare_exchange(word, claimed, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
            {
                allow(self.group_fd, fd);
                self.answers.fetch_add(1, Ordering::Relaxed);
                answered += 1;
                slot.state.store(claimed | DONE_BIT, Ordering::SeqCst);
            }
        }
        (next, answered)
    }

    /// The loop has not read the group fd for [`ANSWER_AFTER`] while it was
    /// readable: read and allow everything queued. Returns how many.
    pub(super) fn take_over(&self) -> u64 {
        if !self.can_take_over.load(Ordering::Relaxed) {
            return 0;
        }
        let mut buf = [0u64; 3 * SLOTS];
        let mut answered = 0;
        loop {
            // SAFETY: reading into a local buffer of the given byte length.
            let n = unsafe {
                libc::read(
                    self.group_fd,
                    buf.as_mut_ptr().cast(),
                    std::mem::size_of_val(&buf),
                )
            };
            let Ok(n) = usize::try_from(n) else {
                return answered; // EAGAIN (drained) or an error.
            };
            if n == 0 {
                return answered;
            }
            let bytes: &[u8] = bytemuck_u8(&buf, n);
            for ev in crate::fanotify::parse_events(bytes) {
                if ev.fd >= 0 {
                    allow(self.group_fd, ev.fd);
                    // SAFETY: the fd was installed for us by this read.
                    unsafe { libc::close(ev.fd) };
                    self.takeover_answers.fetch_add(1, Ordering::Relaxed);
                    answered += 1;
                }
            }
        }
    }
}

/// When an event read at `read` is the watchdog's to answer: once the loop
/// has shown no progress for [`ANSWER_AFTER`] (since the later of the read
/// and its last heartbeat `beat`), or after its `hold`; [`WAIT_MAX`] after
/// the read at the latest.
pub(super) fn due_ns(read: u64, beat: u64, hold: u64) -> u64 {
    let idle = read.max(beat).saturating_add(ns(ANSWER_AFTER));
    idle.max(hold).min(read.saturating_add(ns(WAIT_MAX)))
}

pub(super) fn bytemuck_u8(buf: &[u64], n: usize) -> &[u8] {
    // SAFETY: u64 has no padding and any byte pattern is a valid u8.
    let all = unsafe {
        std::slice::from_raw_parts(buf.as_ptr().cast::<u8>(), std::mem::size_of_val(buf))
    };
    &all[..n.min(all.len())]
}

pub(super) fn readable(fd: RawFd) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, zero timeout.
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    n > 0 && p.revents & libc::POLLIN != 0
}

/// The child's whole life. Async-signal-safe only (see `process`).
pub(super) fn child_main(s: &Shared, fd_limit: u64) -> ! {
    process::ignore_stop_signals();
    let room = process::isolate_fds(s.group_fd, s.death_fd, fd_limit);
    s.can_take_over.store(room, Ordering::Relaxed);
    process::drop_capabilities();
    s.settled.store(true, Ordering::Release);
    run(s);
    // SAFETY: _exit skips atexit handlers and stdio, which belong to the
    // parent's state.
    unsafe { libc::_exit(0) }
}

/// Sleeps until something can fall due: the earliest pending event's
/// deadline, or the next check of an fd the loop may have stopped reading
/// (every half [`ANSWER_AFTER`] while events flow), so a busy host costs a
/// few hundred wake-ups a second, not one per event. Parks when idle.
/// Returns when the parent is gone or asked it to stop.
pub(super) fn run(s: &Shared) {
    let mut last_published = 0u64;
    let mut last_activity = s.now_ns();
    // (drains counter, time) when the fd was first seen readable: the loop
    // is stuck if the fd stays readable for ANSWER_AFTER without a drain.
    let mut readable_since: Option<(u64, u64)> = None;
    // The drains counter and when it was first seen at that value.
    let mut drains_seen = (u64::MAX, 0u64);
    let after = ns(ANSWER_AFTER);
    let take_after = ns(TAKE_OVER_AFTER);
    let idle_ns = ns(IDLE_BEFORE_PARK);
    while !s.stop.load(Ordering::SeqCst) {
        if s.fault == FAULT_WATCHDOG && s.now_ns() >= ns(FAULT_AFTER) {
            // The test hook's "panic": a crash, as a panic would be here.
            // SAFETY: abort(3) is async-signal-safe.
            unsafe { libc::abort() };
        }
        let (next_due, mut answered) = s.answer_overdue();
        let drains = s.drains.load(Ordering::SeqCst);
        let now = s.now_ns();
        if drains != drains_seen.0 {
            drains_seen = (drains, now);
        }
        if s.handoff.load(Ordering::SeqCst) {
            // The sensor is going down: everything queued, now, until the
            // parent is gone (its group fd closed).
            s.take_over();
            if process::parent_gone(s.death_fd, MIN_SLEEP) {
                return;
            }
            continue;
        }
        if readable(s.group_fd) {
            match readable_since {
                Some((d, t)) if d == drains && now.saturating_sub(t) >= take_after => {
                    answered += s.take_over();
                    readable_since = None;
                }
                Some((d, _)) if d == drains => {}
                _ => readable_since = Some((drains, now)),
            }
        } else {
            readable_since = None;
        }
        if answered > 0 && now.saturating_sub(drains_seen.1) >= ns(SILENT_LOOP) {
            s.silent_answers.fetch_add(answered, Ordering::SeqCst);
        }
        let published = s.published.load(Ordering::SeqCst);
        if published != last_published || next_due.is_some() || readable_since.is_some() {
            last_activity = now;
            last_published = published;
        }
        if now.saturating_sub(last_activity) < idle_ns {
            // Half the limit: an unread event is then taken over within
            // about 1.5 × ANSWER_AFTER of being queued.
            let mut wake = now.saturating_add(after / 2);
            if let Some(d) = next_due {
                wake = wake.min(d);
            }
            if let Some((_, t)) = readable_since {
                wake = wake.min(t.saturating_add(take_after));
            }
            let nap = Duration::from_nanos(wake.saturating_sub(now)).max(MIN_SLEEP);
            if process::parent_gone(s.death_fd, nap) {
                return;
            }
            continue;
        }
        s.sleeping.store(1, Ordering::SeqCst);
        // Re-check after announcing sleep (see `publish`).
        if s.slots
            .iter()
            .any(|sl| sl.state.load(Ordering::SeqCst) & STATE_MASK == PENDING)
            || s.stop.load(Ordering::SeqCst)
        {
            s.sleeping.store(0, Ordering::SeqCst);
            continue;
        }
        process::futex_wait(&s.sleeping, 1, PARKED_WAKE);
        s.sleeping.store(0, Ordering::SeqCst);
        if process::parent_gone(s.death_fd, Duration::ZERO) {
            return;
        }
        if s.published.load(Ordering::SeqCst) != last_published {
            last_activity = s.now_ns();
        }
    }
}
