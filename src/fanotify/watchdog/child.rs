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
    pub(super) fn answer_overdue(&self, readers: &mut Readers) -> (Option<u64>, u64) {
        let now = self.now_ns();
        readers.begin_pass();
        let handoff = self.handoff.load(Ordering::SeqCst);
        let beat = self.heartbeat_ns.load(Ordering::Relaxed);
        let mut next: Option<u64> = None;
        let mut answered = 0;
        for (i, slot) in self.slots.iter().enumerate() {
            let word = slot.state.load(Ordering::SeqCst);
            if word & STATE_MASK != PENDING {
                continue;
            }
            let fd = slot.fd.load(Ordering::Relaxed);
            let read = slot.read_ns.load(Ordering::Relaxed);
            let due = if handoff {
                0
            } else {
                let due = due_ns(read, beat, slot.hold_ns.load(Ordering::Relaxed))
                    .max(readers.waiting_until(i, word));
                match runnable_due_ns(read, now) {
                    Some(until)
                        if now >= due
                            && readers.runnable(self.pid, slot.tid.load(Ordering::Relaxed)) =>
                    {
                        readers.wait(i, word, until);
                        self.runnable_waits.fetch_add(1, Ordering::Relaxed);
                        until
                    }
                    _ => due,
                }
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

/// When an event found overdue at `now` is next looked at, given that the
/// thread that read it is runnable: [`ANSWER_AFTER`] later, up to
/// [`RUNNABLE_MAX`] after the read; `None` once that has passed.
pub(super) fn runnable_due_ns(read: u64, now: u64) -> Option<u64> {
    let cap = read.saturating_add(ns(RUNNABLE_MAX));
    (now < cap).then(|| now.saturating_add(ns(ANSWER_AFTER)).min(cap))
}

/// How many reader threads' `stat` files the child keeps open: the loop
/// and the fanotify thread, with room for a restart of either.
const READERS: usize = 4;

/// The child's view of the threads that read events: one open
/// `/proc/<pid>/task/<tid>/stat` per thread, and the events it decided to
/// leave to a runnable reader. Fixed arrays on the child's stack: nothing
/// here allocates.
pub(super) struct Readers {
    tids: [libc::pid_t; READERS],
    fds: [RawFd; READERS],
    next: usize,
    /// Each thread's state as read in this pass over the slots: one read
    /// per thread however many of its events are overdue.
    seen: [Option<bool>; READERS],
    /// (slot word, until) per slot: left to its reader until then.
    waits: [(u64, u64); SLOTS],
}

impl Readers {
    pub(super) const fn new() -> Self {
        Readers {
            tids: [0; READERS],
            fds: [-1; READERS],
            next: 0,
            seen: [None; READERS],
            waits: [(0, 0); SLOTS],
        }
    }

    /// A new pass over the slots: thread states are read afresh.
    fn begin_pass(&mut self) {
        self.seen = [None; READERS];
    }

    fn waiting_until(&self, i: usize, word: u64) -> u64 {
        match self.waits[i] {
            (w, until) if w == word => until,
            _ => 0,
        }
    }

    fn wait(&mut self, i: usize, word: u64, until: u64) {
        self.waits[i] = (word, until);
    }

    /// Whether thread `tid` of process `pid` is on a CPU or waiting for
    /// one. Anything unknown (no such thread, no `/proc`, no fd left, a
    /// `stat` of another task) is `false`: the event is answered as if
    /// the reader were stalled.
    pub(super) fn runnable(&mut self, pid: libc::pid_t, tid: libc::pid_t) -> bool {
        if tid <= 0 {
            return false;
        }
        let k = match self.tids.iter().position(|&t| t == tid) {
            Some(k) => k,
            None => {
                let k = self.next;
                self.next = (k + 1) % READERS;
                if self.fds[k] >= 0 {
                    // SAFETY: our own fd, opened below.
                    unsafe { libc::close(self.fds[k]) };
                }
                self.tids[k] = tid;
                self.fds[k] = open_stat(pid, tid);
                self.seen[k] = None;
                k
            }
        };
        if let Some(r) = self.seen[k] {
            return r;
        }
        let mut buf = [0u8; 64];
        // SAFETY: reads into a local buffer of its length; a seq_file
        // read at offset 0 shows the task's state now.
        let n = unsafe { libc::pread(self.fds[k], buf.as_mut_ptr().cast(), buf.len(), 0) };
        let r = usize::try_from(n).is_ok_and(|n| stat_state(&buf[..n], tid) == Some(b'R'));
        self.seen[k] = Some(r);
        r
    }
}

/// Opens `/proc/<pid>/task/<tid>/stat` with a path formatted on the stack
/// (`fmt` into a slice allocates nothing); -1 on failure.
fn open_stat(pid: libc::pid_t, tid: libc::pid_t) -> RawFd {
    use std::io::Write;
    let mut path = [0u8; 64];
    // Fails only when the path and its NUL do not fit.
    if write!(&mut path[..], "/proc/{pid}/task/{tid}/stat\0").is_err() {
        return -1;
    }
    // SAFETY: `path` holds a NUL-terminated string.
    unsafe { libc::open(path.as_ptr().cast(), libc::O_RDONLY | libc::O_CLOEXEC) }
}

/// The state letter of a `stat` line (`"<tid> (<comm>) S ..."`) that
/// belongs to `tid`: `None` for a truncated line or another task's (a
/// `/proc` of another pid namespace). The comm may hold `)`, so the
/// state follows the last one; fields after it are numbers.
pub(super) fn stat_state(line: &[u8], tid: libc::pid_t) -> Option<u8> {
    let sp = line.iter().position(|&b| b == b' ')?;
    let first = std::str::from_utf8(&line[..sp]).ok()?;
    if first.parse::<libc::pid_t>().ok()? != tid {
        return None;
    }
    let close = line.iter().rposition(|&b| b == b')')?;
    match line.get(close + 1..close + 3)? {
        [b' ', state] => Some(*state),
        _ => None,
    }
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
    let mut readers = Readers::new();
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
        let (next_due, mut answered) = s.answer_overdue(&mut readers);
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
