//! The watchdog: the one justified exception to the sensor's single thread.
//!
//! A permission event blocks the exec'ing task until someone answers, so a
//! stalled event loop (a slow sink, a bug, a long `/proc` read) would stall
//! every exec on the host. This thread does nothing but answer `FAN_ALLOW`:
//! (1) for events the loop has read but not answered within
//! [`ANSWER_AFTER`], and (2) for events the loop has not even read: if the
//! group fd stays readable for [`ANSWER_AFTER`] while the loop has not entered
//! `drain` in between, the watchdog reads and allows them itself (their argv
//! is lost and counted). It never touches `/proc`, allocates nothing per
//! event and takes no lock shared with the loop.
//!
//! ## Slots, and why there is no double answer or fd-reuse race
//! The kernel matches a response to an event by the event's fd *number*. A
//! response written after that fd was closed and its number reused would
//! answer a different event, and a slot read half-way through its reuse
//! would do the same. Each slot is therefore one state word
//! `generation << 2 | state`, plus the fd and read time written only while
//! the slot is free:
//! - the loop publishes an event: writes fd and time, then stores
//!   `(gen+1, PENDING)`;
//! - whoever answers first wins a compare-and-swap from that exact
//!   `(gen, PENDING)` word to `(gen, LOOP)` or `(gen, WATCHDOG)`; the loser
//!   does not answer. A stale snapshot (the slot was freed and reused) has a
//!   different generation, so its CAS fails;
//! - the loop closes the event fd only after the slot is back to free; if
//!   the watchdog won, the loop first waits for `(gen, WATCHDOG_DONE)`, so
//!   the number the watchdog writes is still open and still this event's.
//!
//! ## Deferred events
//! The loop may leave an event whose task has not parked yet unanswered
//! across `drain` calls (the capture's deferred set). Its slot simply stays
//! PENDING meanwhile, with its fd open: to the watchdog it is one more case
//! (1) event, allowed once [`ANSWER_AFTER`] has passed since its read. The
//! loop answers it later through the same claim/release, so a watchdog
//! answer in between costs the argv but is never doubled, and its fd number
//! cannot be reused before the watchdog is done writing. Slots are not tied
//! to batch positions: the loop hands out only slots it has freed (fd
//! closed), so a deferred event's slot is never republished.

use std::os::fd::RawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// An event read but unanswered for this long is allowed by the watchdog.
pub const ANSWER_AFTER: Duration = Duration::from_millis(3);
/// Shortest sleep: below this, sleeping costs more than it saves.
const MIN_SLEEP: Duration = Duration::from_micros(100);
/// Time without a published event before parking.
const IDLE_BEFORE_PARK: Duration = Duration::from_millis(50);
/// While parked the watchdog still wakes this often to notice a loop that
/// stopped reading the group fd altogether.
const PARKED_WAKE: Duration = Duration::from_millis(50);
/// At most this many events are read in one batch (one slot each).
pub const SLOTS: usize = 64;

const FREE: u64 = 0;
const PENDING: u64 = 1;
const LOOP: u64 = 2;
const WATCHDOG: u64 = 3;
const STATE_MASK: u64 = 3;
/// Marks a watchdog-claimed slot whose answer has been written.
const DONE_BIT: u64 = 1 << 63;

struct Slot {
    state: AtomicU64,
    fd: AtomicI32,
    read_ns: AtomicU64,
}

/// State shared by the loop and the watchdog thread.
pub struct Shared {
    group_fd: RawFd,
    epoch: Instant,
    slots: [Slot; SLOTS],
    stop: AtomicBool,
    sleeping: AtomicBool,
    published: AtomicU64,
    /// Bumped on every entry to `drain`: proof of life of the loop.
    drains: AtomicU64,
    pub answers: AtomicU64,
    pub takeover_answers: AtomicU64,
}

/// The loop's handle: publish, claim, release; stops the thread on drop.
pub struct Watchdog {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    generation: u64,
}

/// Who gets to answer a published event.
#[derive(Debug, PartialEq, Eq)]
pub enum Claim {
    /// The loop owns the answer.
    Loop,
    /// The watchdog answered (allowed) it already.
    Watchdog,
}

impl Watchdog {
    /// Starts the thread. `group_fd` must stay open until this is dropped
    /// (the capture drops the watchdog before its fd).
    pub fn start(group_fd: RawFd) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            group_fd,
            epoch: Instant::now(),
            slots: std::array::from_fn(|_| Slot {
                state: AtomicU64::new(FREE),
                fd: AtomicI32::new(-1),
                read_ns: AtomicU64::new(0),
            }),
            stop: AtomicBool::new(false),
            sleeping: AtomicBool::new(false),
            published: AtomicU64::new(0),
            drains: AtomicU64::new(0),
            answers: AtomicU64::new(0),
            takeover_answers: AtomicU64::new(0),
        });
        let s = Arc::clone(&shared);
        let thread = thread::Builder::new()
            .name("fanotify-watchdog".into())
            .spawn(move || {
                // Capabilities are per thread: this one only writes answers
                // to an fd it already holds, so it keeps none at all.
                if let Err(e) = crate::privilege::drop_all_in_this_thread() {
                    log::warn!("watchdog could not drop its capabilities: {e}");
                }
                run(&s)
            })?;
        Ok(Watchdog {
            shared,
            thread: Some(thread),
            generation: 0,
        })
    }

    /// The loop is alive and about to read the group fd.
    pub fn drain_started(&self) {
        self.shared.drains.fetch_add(1, Ordering::SeqCst);
    }

    /// Publishes event fd `fd` in slot `i`, which must be free: released,
    /// and its previous fd closed. Returns the word to claim it with.
    pub fn publish(&mut self, i: usize, fd: RawFd) -> u64 {
        self.generation += 1;
        let word = (self.generation << 2) | PENDING;
        let slot = &self.shared.slots[i];
        slot.fd.store(fd, Ordering::Relaxed);
        slot.read_ns.store(self.shared.now_ns(), Ordering::Relaxed);
        slot.state.store(word, Ordering::SeqCst);
        self.shared.published.fetch_add(1, Ordering::SeqCst);
        // Pairs with the watchdog's store of `sleeping` and re-scan: one of
        // the two sees the other (both SeqCst).
        if self.shared.sleeping.load(Ordering::SeqCst)
            && self.shared.sleeping.swap(false, Ordering::SeqCst)
            && let Some(t) = &self.thread
        {
            t.thread().unpark();
        }
        word
    }

    /// Whether the event published in slot `i` with `word` is still
    /// unanswered and unclaimed. A hint only: the watchdog may claim it
    /// right after; [`claim`](Self::claim) decides.
    pub fn is_pending(&self, i: usize, word: u64) -> bool {
        self.shared.slots[i].state.load(Ordering::SeqCst) == word
    }

    /// Claims slot `i` for the loop's own answer.
    pub fn claim(&self, i: usize, word: u64) -> Claim {
        let st = &self.shared.slots[i].state;
        match st.compare_exchange(
            word,
            (word & !STATE_MASK) | LOOP,
            Ordering::SeqCst,
            Ordering::SeqCst,
        ) {
            Ok(_) => Claim::Loop,
            Err(_) => Claim::Watchdog,
        }
    }

    /// Frees slot `i` once nobody will write its fd number any more; after
    /// this the loop may close the event fd.
    pub fn release(&self, i: usize, word: u64) {
        let st = &self.shared.slots[i].state;
        let watchdog_done = (word & !STATE_MASK) | WATCHDOG | DONE_BIT;
        let mut spins = 0u32;
        loop {
            let cur = st.load(Ordering::SeqCst);
            // Our own claim, or never claimed (the caller gave up), or the
            // watchdog finished writing.
            if cur & STATE_MASK != WATCHDOG || cur == watchdog_done {
                break;
            }
            // The watchdog is inside one write(2): microseconds.
            spins += 1;
            if spins > 64 {
                thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
        st.store(FREE, Ordering::SeqCst);
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

impl Watchdog {
    pub fn answers(&self) -> u64 {
        self.shared.answers.load(Ordering::Relaxed)
    }

    pub fn takeover_answers(&self) -> u64 {
        self.shared.takeover_answers.load(Ordering::Relaxed)
    }
}

impl Shared {
    fn now_ns(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Answers overdue published events; returns when the earliest one
    /// still pending falls due (ns since `epoch`), `None` if none is.
    fn answer_overdue(&self) -> Option<u64> {
        let now = self.now_ns();
        let after = u64::try_from(ANSWER_AFTER.as_nanos()).unwrap_or(u64::MAX);
        let mut next: Option<u64> = None;
        for slot in &self.slots {
            let word = slot.state.load(Ordering::SeqCst);
            if word & STATE_MASK != PENDING {
                continue;
            }
            let fd = slot.fd.load(Ordering::Relaxed);
            let due = slot.read_ns.load(Ordering::Relaxed).saturating_add(after);
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
                slot.state.store(claimed | DONE_BIT, Ordering::SeqCst);
            }
        }
        next
    }

    /// The loop has not read the group fd for [`ANSWER_AFTER`] while it was
    /// readable: read and allow everything queued.
    fn take_over(&self) {
        let mut buf = [0u64; 3 * SLOTS];
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
                return; // EAGAIN (drained) or an error: nothing more to do.
            };
            if n == 0 {
                return;
            }
            let bytes: &[u8] = bytemuck_u8(&buf, n);
            for ev in super::parse_events(bytes) {
                if ev.fd >= 0 {
                    allow(self.group_fd, ev.fd);
                    // SAFETY: the fd was installed for us by this read.
                    unsafe { libc::close(ev.fd) };
                    self.takeover_answers.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

fn bytemuck_u8(buf: &[u64], n: usize) -> &[u8] {
    // SAFETY: u64 has no padding and any byte pattern is a valid u8.
    let all = unsafe {
        std::slice::from_raw_parts(buf.as_ptr().cast::<u8>(), std::mem::size_of_val(buf))
    };
    &all[..n.min(all.len())]
}

fn readable(fd: RawFd) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, zero timeout.
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    n > 0 && p.revents & libc::POLLIN != 0
}

/// Writes `FAN_ALLOW` for event fd `fd`; errors (ENOENT: already answered)
/// are ignored, the kernel being the authority on what is pending.
pub fn allow(group_fd: RawFd, fd: RawFd) {
    respond(group_fd, fd, libc::FAN_ALLOW);
}

pub fn respond(group_fd: RawFd, fd: RawFd, response: u32) -> bool {
    let r = libc::fanotify_response { fd, response };
    loop {
        // SAFETY: writes one fanotify_response from a local.
        let n = unsafe {
            libc::write(
                group_fd,
                (&r as *const libc::fanotify_response).cast(),
                std::mem::size_of::<libc::fanotify_response>(),
            )
        };
        if n >= 0 {
            return true;
        }
        if std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return false;
        }
    }
}

/// Sleeps until something can fall due: the earliest pending event's
/// deadline, or the next check of an fd the loop may have stopped reading
/// (every half [`ANSWER_AFTER`] while events flow), so a busy host costs a
/// few hundred wake-ups a second, not one per event. Parks when idle.
fn run(s: &Shared) {
    let mut last_published = 0u64;
    let mut last_activity = s.now_ns();
    // (drains counter, time) when the fd was first seen readable: the loop
    // is stuck if the fd stays readable for ANSWER_AFTER without a drain.
    let mut readable_since: Option<(u64, u64)> = None;
    let after = u64::try_from(ANSWER_AFTER.as_nanos()).unwrap_or(u64::MAX);
    let idle_ns = u64::try_from(IDLE_BEFORE_PARK.as_nanos()).unwrap_or(u64::MAX);
    while !s.stop.load(Ordering::SeqCst) {
        let next_due = s.answer_overdue();
        let drains = s.drains.load(Ordering::SeqCst);
        let now = s.now_ns();
        if readable(s.group_fd) {
            match readable_since {
                Some((d, t)) if d == drains && now.saturating_sub(t) >= after => {
                    s.take_over();
                    readable_since = None;
                }
                Some((d, _)) if d == drains => {}
                _ => readable_since = Some((drains, now)),
            }
        } else {
            readable_since = None;
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
                wake = wake.min(t.saturating_add(after));
            }
            let nap = Duration::from_nanos(wake.saturating_sub(now)).max(MIN_SLEEP);
            thread::sleep(nap);
            continue;
        }
        s.sleeping.store(true, Ordering::SeqCst);
        // Re-check after announcing sleep (see `publish`).
        if s.slots
            .iter()
            .any(|sl| sl.state.load(Ordering::SeqCst) & STATE_MASK == PENDING)
        {
            s.sleeping.store(false, Ordering::SeqCst);
            continue;
        }
        thread::park_timeout(PARKED_WAKE);
        s.sleeping.store(false, Ordering::SeqCst);
        if s.published.load(Ordering::SeqCst) != last_published {
            last_activity = s.now_ns();
        }
    }
}
