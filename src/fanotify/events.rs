//! Reading the group fd: decoding its records, publishing each batch to
//! the watchdog, inspecting, answering, and retrying the events whose task
//! had not parked yet.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::Instant;

use super::inspect::{Inspected, shebang};
use super::watchdog::{self, SLOTS};
use super::{DEFER_BUDGET, DEFER_MAX, ExecCapture, FanotifyCapture, READ_HOLD, RETRY_EVERY};
use crate::capture::Decider;

/// `struct fanotify_event_metadata` is 24 bytes; the kernel writes whole
/// events only.
pub(super) const METADATA_LEN: usize = 24;
const FANOTIFY_METADATA_VERSION: u8 = 3;

/// One event as read from the group fd. PURE decoding in [`parse_events`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawEvent {
    pub mask: u64,
    /// -1 (`FAN_NOFD`) for a queue overflow.
    pub fd: i32,
    pub pid: i32,
}

/// One record of a read from the group fd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Record {
    Event(RawEvent),
    /// `FAN_Q_OVERFLOW` (no fd): the kernel's queue was full.
    Overflow,
    /// A record of another metadata version or an impossible length: not
    /// trusted, not even its fd. Decoding goes on after it.
    Malformed,
}

/// Decodes a read from a fanotify group fd, every record of it: a
/// malformed one does not hide the permission events after it, which
/// would otherwise stay unanswered until the watchdog and leak their fds.
/// Our group asks for no info records, so every record the kernel writes
/// is exactly [`METADATA_LEN`] bytes: a record whose length cannot be
/// trusted is stepped over by that much. PURE.
pub fn decode(buf: &[u8]) -> impl Iterator<Item = Record> + '_ {
    let mut off = 0usize;
    std::iter::from_fn(move || {
        let b = buf.get(off..off.checked_add(METADATA_LEN)?)?;
        let event_len = u32::from_ne_bytes(b[0..4].try_into().ok()?) as usize;
        let rest = buf.len() - off;
        if event_len < METADATA_LEN || event_len > rest {
            off += METADATA_LEN;
            return Some(Record::Malformed);
        }
        off += event_len;
        if b[4] != FANOTIFY_METADATA_VERSION {
            return Some(Record::Malformed);
        }
        let ev = RawEvent {
            mask: u64::from_ne_bytes(b[8..16].try_into().ok()?),
            fd: i32::from_ne_bytes(b[16..20].try_into().ok()?),
            pid: i32::from_ne_bytes(b[20..24].try_into().ok()?),
        };
        Some(if ev.fd < 0 || ev.mask & libc::FAN_Q_OVERFLOW != 0 {
            Record::Overflow
        } else {
            Record::Event(ev)
        })
    })
}

/// The well-formed events of a read (see [`decode`]). PURE.
pub fn parse_events(buf: &[u8]) -> impl Iterator<Item = RawEvent> + '_ {
    decode(buf).filter_map(|r| match r {
        Record::Event(e) => Some(e),
        _ => None,
    })
}

/// An event of the current batch between its answer and its push.
pub(super) struct InFlight {
    pub(super) fd: RawFd,
    /// Its watchdog slot, and the word that claims it.
    pub(super) slot: usize,
    pub(super) slot_word: u64,
    pub(super) capture: Option<ExecCapture>,
    /// Moved to the deferred set: neither answered nor closed.
    pub(super) deferred: bool,
}

/// An event read while its task had not parked yet (`/proc/<pid>/syscall`
/// said `running`): unanswered, its fd open and its watchdog slot still
/// PENDING, so the watchdog remains the safety net.
#[derive(Clone, Copy)]
pub(super) struct Deferred {
    pub(super) ev: RawEvent,
    pub(super) slot: usize,
    pub(super) slot_word: u64,
    pub(super) read_at: Instant,
    /// `read_at` on the proc connector's clock (`Capture::ns`).
    pub(super) read_ns: u64,
    pub(super) next_try: Instant,
    /// Past this, allowed without argv.
    pub(super) deadline: Instant,
}

fn as_bytes(buf: &[u64], n: usize) -> &[u8] {
    // SAFETY: u64 has no padding; any byte is a valid u8.
    let all = unsafe {
        std::slice::from_raw_parts(buf.as_ptr().cast::<u8>(), std::mem::size_of_val(buf))
    };
    &all[..n.min(all.len())]
}

impl FanotifyCapture {
    /// Events read from the group fd, in batches of at most the free
    /// watchdog slots (deferred events keep theirs).
    pub(super) fn read_events(&mut self, decider: &mut dyn Decider, out: &mut Vec<ExecCapture>) {
        loop {
            let free = self.free_slots.count_ones() as usize;
            if free == 0 {
                // Unreachable while DEFER_MAX < SLOTS; the events stay
                // queued for the next call (or the watchdog) if it were.
                return;
            }
            // SAFETY: reading into our own buffer, at most its byte length.
            let n = unsafe {
                libc::read(
                    self.group.as_raw_fd(),
                    self.buf.as_mut_ptr().cast(),
                    (free * METADATA_LEN).min(self.buf.len() * 8),
                )
            };
            let n = match usize::try_from(n) {
                Ok(0) => return,
                Ok(n) => n,
                Err(_) => {
                    let e = io::Error::last_os_error();
                    match e.kind() {
                        io::ErrorKind::Interrupted => continue,
                        io::ErrorKind::WouldBlock => return,
                        _ => {
                            log::warn!("fanotify read: {e}");
                            return;
                        }
                    }
                }
            };
            let t_read = Instant::now();
            // Every exec read here waits for its answer, so it completes
            // after this: the join's order (`Capture::ns`).
            let read_ns = crate::capture::monotonic_ns();
            let buf = std::mem::take(&mut self.buf);
            let bytes = as_bytes(&buf, n);
            let mut evs = [RawEvent {
                mask: 0,
                fd: -1,
                pid: 0,
            }; SLOTS];
            let mut count = 0;
            for rec in decode(bytes) {
                let ev = match rec {
                    Record::Event(ev) => ev,
                    Record::Overflow => {
                        // Nothing to answer: the kernel allowed the events it
                        // could not queue (FAN_UNLIMITED_QUEUE would hold the
                        // execs instead; see the README on the bound).
                        self.stats.queue_overflows += 1;
                        continue;
                    }
                    Record::Malformed => {
                        self.stats.malformed += 1;
                        continue;
                    }
                };
                if count < free {
                    evs[count] = ev;
                    count += 1;
                } else {
                    // Cannot happen (the read was sized to `free`); never
                    // leave a permission event unanswered all the same.
                    watchdog::allow(self.group.as_raw_fd(), ev.fd);
                    // SAFETY: the fd was installed for us by this read.
                    drop(unsafe { OwnedFd::from_raw_fd(ev.fd) });
                }
            }
            let evs = &evs[..count];
            self.buf = buf;
            // Publish the whole batch to the watchdog before working on any
            // of it: the last event waits for the others' argv reads.
            let mut batch = std::mem::take(&mut self.batch);
            batch.clear();
            for ev in evs {
                let slot = self.take_slot();
                let slot_word = match &mut self.watchdog {
                    Some(wd) => wd.publish(slot, ev.fd),
                    None => 0,
                };
                batch.push(InFlight {
                    fd: ev.fd,
                    slot,
                    slot_word,
                    capture: None,
                    deferred: false,
                });
            }
            // Phase 1: read, decide, answer, or defer. Nothing else.
            for (ev, inflight) in evs.iter().zip(batch.iter_mut()) {
                self.stats.events += 1;
                let may_defer = self.deferred.len() < DEFER_MAX;
                self.starting_on(inflight.slot, inflight.slot_word);
                let capture = match self.inspect(ev, may_defer) {
                    Inspected::Running => {
                        self.stats.deferred += 1;
                        inflight.deferred = true;
                        self.deferred.push(Deferred {
                            ev: *ev,
                            slot: inflight.slot,
                            slot_word: inflight.slot_word,
                            read_at: t_read,
                            read_ns,
                            next_try: Instant::now() + RETRY_EVERY,
                            deadline: t_read + DEFER_BUDGET,
                        });
                        continue;
                    }
                    Inspected::Done(c) => c,
                };
                let verdict = self.decide(capture.as_ref(), decider);
                let given = self.answer(
                    inflight.fd,
                    inflight.slot,
                    inflight.slot_word,
                    verdict,
                    t_read,
                );
                inflight.capture = capture.map(|mut c| {
                    c.verdict = given;
                    c.ns = Some(read_ns);
                    c
                });
            }
            // Phase 2: everything that can wait, then close the event fds.
            for inflight in batch.drain(..) {
                if !inflight.deferred {
                    self.finish(inflight.fd, inflight.slot, inflight.capture, out);
                }
            }
            self.batch = batch;
        }
    }

    /// Re-reads the deferred events that are due: answers those whose task
    /// has parked (with argv) or whose deadline passed (without); the rest
    /// wait for the next retry.
    pub(super) fn retry_deferred(&mut self, decider: &mut dyn Decider, out: &mut Vec<ExecCapture>) {
        let mut i = 0;
        while i < self.deferred.len() {
            let d = self.deferred[i];
            let now = Instant::now();
            let late = now >= d.deadline;
            if now < d.next_try && !late {
                i += 1;
                continue;
            }
            // After the watchdog's answer the task went on with its exec:
            // its syscall and memory no longer describe this event.
            let taken = self
                .watchdog
                .as_ref()
                .is_some_and(|wd| !wd.is_pending(d.slot, d.slot_word));
            let capture = if taken {
                self.stats.syscall_running_misses += 1;
                self.stats.argv_read_errors += 1;
                None
            } else {
                self.starting_on(d.slot, d.slot_word);
                match self.inspect(&d.ev, !late) {
                    Inspected::Running => {
                        self.deferred[i].next_try = now + RETRY_EVERY;
                        i += 1;
                        continue;
                    }
                    Inspected::Done(c) => c,
                }
            };
            self.deferred.swap_remove(i);
            let verdict = self.decide(capture.as_ref(), decider);
            // The CAS in `answer` settles a watchdog answer given since the
            // check above: no second answer, and the fd stays open until
            // the watchdog has written its response.
            let given = self.answer(d.ev.fd, d.slot, d.slot_word, verdict, d.read_at);
            let capture = capture.map(|mut c| {
                c.verdict = given;
                c.ns = Some(d.read_ns);
                c
            });
            self.finish(d.ev.fd, d.slot, capture, out);
        }
    }

    /// Tells the watchdog the loop is at work on the event in `slot`.
    fn starting_on(&self, slot: usize, word: u64) {
        if let Some(wd) = &self.watchdog {
            wd.heartbeat();
            wd.hold(slot, word, READ_HOLD);
        }
    }

    /// After the answer: the interpreter, the push, and the fd's close,
    /// which frees its slot for the next batch.
    fn finish(
        &mut self,
        fd: RawFd,
        slot: usize,
        capture: Option<ExecCapture>,
        out: &mut Vec<ExecCapture>,
    ) {
        if let Some(mut c) = capture {
            // SAFETY: the event fd is open until the close below.
            let bfd = unsafe { BorrowedFd::borrow_raw(fd) };
            c.interpreter = shebang(bfd);
            // Answered: the task goes on with its exec, and a short-lived
            // one may be gone before the pipeline reaches it.
            let mut cg = String::new();
            if self.procfs.cgroup(c.pid, &mut cg).is_ok() {
                c.cgroup = Some(cg);
            }
            if c.interpreter.is_some()
                && let Some(k) = self.recent.get_mut(&c.pid)
            {
                k.script = true;
            }
            out.push(c);
        }
        // SAFETY: the fd was installed for us by the read and the watchdog
        // is done with it (`answer` released the slot).
        drop(unsafe { OwnedFd::from_raw_fd(fd) });
        self.free_slots |= 1 << slot;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(mask: u64, fd: i32, pid: i32) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&(METADATA_LEN as u32).to_ne_bytes());
        b.push(FANOTIFY_METADATA_VERSION);
        b.push(0);
        b.extend_from_slice(&(METADATA_LEN as u16).to_ne_bytes());
        b.extend_from_slice(&mask.to_ne_bytes());
        b.extend_from_slice(&fd.to_ne_bytes());
        b.extend_from_slice(&pid.to_ne_bytes());
        b
    }

    #[test]
    fn decodes_event_records() {
        let mut buf = meta(0x40000, 7, 1234);
        buf.extend(meta(0x40000, 8, 99));
        buf.extend_from_slice(&[1, 2, 3]); // a partial trailing record
        let evs: Vec<_> = parse_events(&buf).collect();
        assert_eq!(
            evs,
            [
                RawEvent {
                    mask: 0x40000,
                    fd: 7,
                    pid: 1234
                },
                RawEvent {
                    mask: 0x40000,
                    fd: 8,
                    pid: 99
                },
            ]
        );
        let mut bad = meta(0x40000, 7, 1);
        bad[4] = 2; // another metadata version
        assert_eq!(parse_events(&bad).count(), 0);
        let mut short = meta(0x40000, 7, 1);
        short[0] = 4; // event_len below the metadata size
        assert_eq!(parse_events(&short).count(), 0);
    }

    #[test]
    fn a_malformed_record_does_not_hide_the_events_after_it() {
        let mut buf = meta(0x40000, 7, 1);
        let mut short = meta(0x40000, 8, 2);
        short[0] = 4;
        buf.extend(short);
        let mut foreign = meta(0x40000, 9, 3);
        foreign[4] = 2;
        buf.extend(foreign);
        let mut huge = meta(0x40000, 10, 4);
        huge[0..4].copy_from_slice(&u32::MAX.to_ne_bytes());
        buf.extend(huge);
        buf.extend(meta(libc::FAN_Q_OVERFLOW, -1, 0));
        buf.extend(meta(0x40000, 11, 5));
        let recs: Vec<_> = decode(&buf).collect();
        let fds: Vec<i32> = parse_events(&buf).map(|e| e.fd).collect();
        assert_eq!(fds, [7, 11], "{recs:?}");
        assert_eq!(recs.iter().filter(|r| **r == Record::Malformed).count(), 3);
        assert!(recs.contains(&Record::Overflow));
    }
}
