//! The handshake on a thread of its own (without enforcement): a waiting
//! exec never waits for the pipeline.
//!
//! The loop does the whole exec path for every exec: `/proc` reads,
//! identity, rules, formatting, output. On a fast CPU that is tens of µs;
//! on a slow one (a qemu TCG guest: ~30 times slower) it is milliseconds,
//! and a permission event queued meanwhile waited behind it until the
//! watchdog's [`ANSWER_AFTER`](super::watchdog::ANSWER_AFTER) gave it up
//! without argv. Here a thread reads, inspects and answers the events (the
//! same [`FanotifyCapture::drain`]) and queues the captures for the loop;
//! the loop only takes them.
//!
//! The loop also drains the group whenever it takes the queue (before
//! every proc-connector exec): whichever of the two runs first answers.
//!
//! Ordering: the thread holds the capture's lock from reading an event to
//! queueing its capture, and the loop takes the lock before pairing a
//! proc-connector exec. An exec's message exists only after our answer, so
//! by the time the loop has it, its capture is queued or the loop waits
//! for the lock until it is.
//!
//! With `enforce = true` the verdict needs the pipeline's rules, so the
//! daemon keeps the inline capture on the loop.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Registry, Token};

use super::FanotifyCapture;
use crate::capture::{AllowAll, ArgsSource, Capture, CaptureSource, Decider};
use crate::counters::{Counter, Counters};
use crate::event::Event;

/// Captures queued for the loop at most, and their bytes: a stalled loop
/// costs argv (counted), never memory.
const QUEUE_MAX: usize = 4_096;
const QUEUE_MAX_BYTES: usize = 16 << 20;

const EVENTS: Token = Token(0);
const MOUNTS: Token = Token(1);
const STOP: Token = Token(2);

struct Core {
    cap: FanotifyCapture,
    queued: Vec<Capture>,
    bytes: usize,
    dropped: u64,
}

impl Core {
    fn push(&mut self, c: Capture) {
        let w = crate::join::capture_bytes(&c);
        if self.queued.len() >= QUEUE_MAX || self.bytes + w > QUEUE_MAX_BYTES {
            self.dropped += 1;
            return;
        }
        self.bytes += w;
        self.queued.push(c);
    }
}

/// A [`FanotifyCapture`] whose events a thread of its own handles.
pub struct ThreadedCapture {
    core: Arc<Mutex<Core>>,
    /// Written by the thread when it queued captures (the loop's token).
    ready: Arc<OwnedFd>,
    /// Written by the loop to stop the thread.
    stop: Arc<OwnedFd>,
    thread: Option<JoinHandle<()>>,
}

fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: plain system call; the result is checked.
    let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh fd we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn poke(fd: RawFd) {
    let one: u64 = 1;
    // SAFETY: writes 8 bytes from a local to our eventfd. A full counter
    // (EAGAIN) is readable anyway.
    unsafe { libc::write(fd, (&raw const one).cast(), 8) };
}

fn clear(fd: RawFd) {
    let mut n: u64 = 0;
    // SAFETY: reads 8 bytes into a local from our eventfd.
    unsafe { libc::read(fd, (&raw mut n).cast(), 8) };
}

impl ThreadedCapture {
    pub fn new(cap: FanotifyCapture) -> io::Result<Self> {
        Ok(ThreadedCapture {
            core: Arc::new(Mutex::new(Core {
                cap,
                queued: Vec::new(),
                bytes: 0,
                dropped: 0,
            })),
            ready: Arc::new(eventfd()?),
            stop: Arc::new(eventfd()?),
            thread: None,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Core> {
        // A panic on the thread aborts the process in release builds; a
        // poisoned lock still holds a consistent capture.
        self.core.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn spawn(&mut self) -> io::Result<()> {
        let poll = Poll::new()?;
        let core = Arc::clone(&self.core);
        let ready = Arc::clone(&self.ready);
        let stop = Arc::clone(&self.stop);
        poll.registry()
            .register(&mut SourceFd(&stop.as_raw_fd()), STOP, Interest::READABLE)?;
        // Registered here, so the group is in this poll before the thread
        // runs.
        core.lock()
            .unwrap_or_else(|p| p.into_inner())
            .cap
            .register(poll.registry(), EVENTS, MOUNTS)?;
        let thread = std::thread::Builder::new()
            .name("fanotify".into())
            .spawn(move || run(poll, &core, &ready))?;
        self.thread = Some(thread);
        Ok(())
    }
}

/// Ends the process when the thread unwinds (release builds abort at the
/// panic already): a sensor whose handshake died would hold the group
/// while only the watchdog answers.
struct ExitOnPanic;

impl Drop for ExitOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            std::process::exit(101);
        }
    }
}

/// The thread: drain when the group (or the retry timer) is ready, remark
/// when the mount table changed, until the loop says stop.
fn run(mut poll: Poll, core: &Mutex<Core>, ready: &OwnedFd) {
    let _exit_on_panic = ExitOnPanic;
    let _policy = super::sched::BatchPolicy::enter();
    // Capabilities are per thread: this one keeps what the loop keeps for
    // a fanotify capture (its marks, other tasks' /proc and memory).
    if let Err(e) = crate::privilege::drop_capabilities(true) {
        log::debug!("fanotify thread: dropping capabilities: {e}");
    }
    let mut events = Events::with_capacity(16);
    let mut out = Vec::new();
    loop {
        match poll.poll(&mut events, None) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                log::warn!("fanotify thread: poll: {e}; events go to the watchdog");
                return;
            }
            Ok(()) => {}
        }
        let (mut fan, mut mounts) = (false, false);
        for ev in events.iter() {
            match ev.token() {
                STOP => return,
                MOUNTS => mounts = true,
                _ => fan = true,
            }
        }
        let mut c = core.lock().unwrap_or_else(|p| p.into_inner());
        if mounts {
            c.cap.remark();
        }
        if fan {
            c.cap.drain(&mut AllowAll, &mut out);
            let any = !out.is_empty();
            for cap in out.drain(..) {
                c.push(cap);
            }
            drop(c);
            if any {
                poke(ready.as_raw_fd());
            }
        }
    }
}

impl CaptureSource for ThreadedCapture {
    fn source(&self) -> ArgsSource {
        ArgsSource::Fanotify
    }

    fn register(&mut self, registry: &Registry, first: Token) -> io::Result<usize> {
        registry.register(
            &mut SourceFd(&self.ready.as_raw_fd()),
            first,
            Interest::READABLE,
        )?;
        if self.thread.is_none() {
            self.spawn()?;
        }
        Ok(1)
    }

    /// Takes the queued captures. The loop, on its CPU already, then also
    /// drains the group itself: an event the thread has not reached yet
    /// (its CPU busy: a `SCHED_BATCH` thread waits for the tick there) is
    /// answered now instead of waiting.
    fn on_ready(&mut self, token: Option<Token>, _: &mut dyn Decider, out: &mut Vec<Capture>) {
        if token.is_some() {
            clear(self.ready.as_raw_fd());
        }
        let mut c = self.lock();
        out.append(&mut c.queued);
        c.bytes = 0;
        c.cap.drain(&mut AllowAll, out);
    }

    fn observe(&mut self, event: &Event) {
        // Only a container's exec can need new marks: no lock otherwise.
        if event.container.as_ref().is_some_and(|c| !c.id.is_empty()) {
            self.lock().cap.mark_new_container(event);
        }
    }

    fn counters(&self, out: &mut Counters) {
        let c = self.lock();
        CaptureSource::counters(&c.cap, out);
        out.set(Counter::FanotifyHandoffDropped, c.dropped);
    }

    fn answer_latency_us(&self) -> Option<(f64, f64)> {
        self.lock().cap.answer_latency_us()
    }
}

impl Drop for ThreadedCapture {
    fn drop(&mut self) {
        poke(self.stop.as_raw_fd());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        // The capture itself (watchdog, deferred events, group fd) goes
        // with the last reference, now ours.
    }
}
