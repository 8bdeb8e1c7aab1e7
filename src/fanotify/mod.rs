//! Complete argv for every exec: a fanotify group with `FAN_OPEN_EXEC_PERM`
//! marks on every exec-capable filesystem, exposed to the daemon's mio loop.
//!
//! A permission event arrives while the exec'ing task is parked inside
//! `execve`, before its old image is replaced: [`remote`] reads its
//! `/proc/<pid>/syscall` and, through the pointers there, the `filename` and
//! `argv` it passed. The event is answered right after that (the kernel
//! holds the exec until then), before anything else is done with it. The
//! [`watchdog`] thread answers whatever the loop leaves unanswered for a few
//! milliseconds. [`mounts`] decides which filesystems to mark.
//!
//! Safety of the host: closing the group fd (drop, or the process dying,
//! SIGKILL included) makes the kernel allow every pending event and drop the
//! marks. The one way to hang the host is a *child* that inherited the group
//! fd across `fork` and then blocks in its own exec before `FAN_CLOEXEC`
//! applies: the process holding a capture must not fork/exec.

pub mod mounts;
pub mod remote;
pub mod watchdog;

use std::collections::{BTreeSet, HashMap};
use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};
use thiserror::Error;

use crate::identity::FileKey;
use remote::{ExecCall, ProcessMem, SyscallState};
use watchdog::{Claim, SLOTS, Watchdog};

/// Limits and policy of a capture.
#[derive(Debug, Clone, Copy)]
pub struct CaptureOptions {
    /// Most argv bytes kept (NULs included); more sets `truncated`.
    pub max_args_bytes: usize,
    /// Most arguments kept; more sets `truncated`.
    pub max_args: usize,
    /// Only with `enforce` is `decide` consulted and `FAN_DENY` possible.
    pub enforce: bool,
}

/// One exec seen at permission time, before the new image replaces the old
/// one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecCapture {
    /// Thread-group id of the exec'ing task, as the proc connector's exec
    /// event will report it once the exec completes.
    pub pid: u32,
    /// NUL-separated, like `/proc/<pid>/cmdline`. Empty when not read (see
    /// `args_read`) or when execve got an empty argv.
    pub argv: Vec<u8>,
    pub truncated: bool,
    /// Where the event fd points (`/proc/self/fd/N`): the exact file opened
    /// for exec, ` (deleted)` suffix and `/memfd:...` names included.
    pub executable: Vec<u8>,
    /// execve's path argument, as given (relative, empty for
    /// `execveat(fd, "", AT_EMPTY_PATH)` / `fexecve`).
    pub filename: Vec<u8>,
    /// A script's `#!` interpreter, read from the executable's first line.
    pub interpreter: Option<Vec<u8>>,
    /// The opened file's identity (fstat of the event fd), so the
    /// executable's cached facts are found even after the process is gone.
    pub file: Option<FileKey>,
    /// The system call the task was in (59 execve, 322 execveat on x86_64);
    /// 0 if it could not be read.
    pub syscall: u32,
    /// Whether argv and filename come from the task's memory. False when the
    /// task could not be read (pid outside our pid namespace, 32-bit task,
    /// vanished): the daemon should keep the proc path for such an exec.
    pub args_read: bool,
    /// The answer the kernel got: `Deny` only if `decide` denied it (with
    /// `enforce`) and the loop, not the watchdog, answered.
    pub verdict: Verdict,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    Deny,
}

/// Counters since open. `answered` counts the loop's own answers;
/// `watchdog_answers` those the watchdog had to give (read but late, or
/// never read by the loop).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FanotifyStats {
    pub events: u64,
    pub answered: u64,
    pub denied: u64,
    /// Events answered without argv because their task never parked
    /// within [`DEFER_BUDGET`] (or the deferred set was full).
    pub syscall_running_misses: u64,
    /// Events deferred because their task read `running` at first; most
    /// are captured on a retry.
    pub deferred: u64,
    pub argv_read_errors: u64,
    pub watchdog_answers: u64,
    pub marks: u64,
    pub mark_errors: u64,
    /// Loader/interpreter opens in the same execve.
    pub extra_opens: u64,
}

/// Why a capture could not be opened; the message says what the kernel
/// refused so `auto` mode can log why it fell back to the proc connector.
#[derive(Debug, Error)]
pub enum FanotifyError {
    #[error("the kernel has no fanotify (CONFIG_FANOTIFY off): fanotify_init: {0}")]
    NoFanotify(io::Error),
    #[error(
        "fanotify permission events need CAP_SYS_ADMIN in the initial user namespace \
         ({op}: {source})"
    )]
    NeedsCapSysAdmin { op: &'static str, source: io::Error },
    #[error(
        "the kernel refused FAN_OPEN_EXEC_PERM/FAN_MARK_FILESYSTEM (kernel older than 5.0, \
         or CONFIG_FANOTIFY_ACCESS_PERMISSIONS off): fanotify_mark: {0}"
    )]
    NoExecPermission(io::Error),
    #[error("no exec-capable filesystem could be marked (last error: {0})")]
    NothingMarked(io::Error),
    #[error("fanotify: {op}: {source}")]
    Io { op: &'static str, source: io::Error },
}

/// `struct fanotify_event_metadata` is 24 bytes; the kernel writes whole
/// events only.
const METADATA_LEN: usize = 24;
const FANOTIFY_METADATA_VERSION: u8 = 3;
/// How long an event whose task still reads `running` may stay deferred
/// before it is allowed without argv: the exec latency we accept to add,
/// kept below the watchdog's [`watchdog::ANSWER_AFTER`] so the loop, not
/// the watchdog, gives the answer.
const DEFER_BUDGET: Duration = Duration::from_millis(2);
/// Retry period of a deferred event. The timer is a timerfd, so it is not
/// rounded to the poll timeout's milliseconds.
const RETRY_EVERY: Duration = Duration::from_micros(50);
/// Most events deferred at once; beyond, a `running` task costs its argv.
/// Below [`SLOTS`] so a batch always has slots to read into.
const DEFER_MAX: usize = 16;
/// Whether to `sched_yield` once when a task reads `running` before
/// deferring it. Measured on 2 cores at load 10: without it ~1 in 20 events
/// was deferred and 41% of those lost; with it ~1 in 25 to 40, 15-30% lost.
const YIELD_BEFORE_DEFER: bool = true;
/// Threads of one process scanned for the one inside execve.
const MAX_THREADS_SCANNED: usize = 64;
/// Recent execs remembered for the per-execve dedup.
const RECENT_MAX: usize = 4096;
/// Answer latencies kept for percentiles.
const LATENCY_SAMPLES: usize = 1 << 16;
/// Bytes of a script's first line read for its interpreter.
const SHEBANG_MAX: usize = 256;

/// One event as read from the group fd. PURE decoding in [`parse_events`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawEvent {
    pub mask: u64,
    /// -1 (`FAN_NOFD`) for a queue overflow.
    pub fd: i32,
    pub pid: i32,
}

/// Decodes a read from a fanotify group fd. Stops at the first malformed or
/// foreign-version record. PURE.
pub fn parse_events(buf: &[u8]) -> impl Iterator<Item = RawEvent> + '_ {
    let mut off = 0usize;
    std::iter::from_fn(move || {
        let b = buf.get(off..off + METADATA_LEN)?;
        let event_len = u32::from_ne_bytes(b[0..4].try_into().ok()?) as usize;
        if b[4] != FANOTIFY_METADATA_VERSION || event_len < METADATA_LEN {
            return None;
        }
        let ev = RawEvent {
            mask: u64::from_ne_bytes(b[8..16].try_into().ok()?),
            fd: i32::from_ne_bytes(b[16..20].try_into().ok()?),
            pid: i32::from_ne_bytes(b[20..24].try_into().ok()?),
        };
        off = off.checked_add(event_len)?;
        Some(ev)
    })
}

/// What identifies one execve of one task: the syscall and its pointers
/// (unchanged while the loader and interpreter are opened) and the file
/// first opened for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ExecKey {
    nr: i64,
    filename: u64,
    argv: u64,
    file: (u64, u64),
}

/// An event of the current batch between its answer and its push.
struct InFlight {
    fd: RawFd,
    /// Its watchdog slot, and the word that claims it.
    slot: usize,
    slot_word: u64,
    capture: Option<ExecCapture>,
    /// Moved to the deferred set: neither answered nor closed.
    deferred: bool,
}

/// An event read while its task had not parked yet (`/proc/<pid>/syscall`
/// said `running`): unanswered, its fd open and its watchdog slot still
/// PENDING, so the watchdog remains the safety net.
#[derive(Clone, Copy)]
struct Deferred {
    ev: RawEvent,
    slot: usize,
    slot_word: u64,
    read_at: Instant,
    next_try: Instant,
    /// Past this, allowed without argv.
    deadline: Instant,
}

/// What inspecting an event found.
enum Inspected {
    /// The task has not parked yet; try again later.
    Running,
    /// Done: a capture, or `None` for an extra open or an unreadable task.
    Done(Option<ExecCapture>),
}

/// The fanotify exec-permission capture.
pub struct FanotifyCapture {
    // Field order matters: the watchdog (which writes to the group fd) is
    // dropped before the group fd is closed. `Drop` also does it explicitly.
    watchdog: Option<Watchdog>,
    group: OwnedFd,
    mountinfo: File,
    opts: CaptureOptions,
    stats: FanotifyStats,
    marked: BTreeSet<(u32, u32)>,
    recent: HashMap<u32, ExecKey>,
    buf: Vec<u64>,
    batch: Vec<InFlight>,
    deferred: Vec<Deferred>,
    /// Bit i set: watchdog slot i is free (no event fd of ours in it).
    free_slots: u64,
    /// One-shot timer for the deferred events' retries, registered under
    /// the events token.
    timer: OwnedFd,
    timer_armed: bool,
    latencies_ns: Vec<u32>,
    latency_next: usize,
}

impl FanotifyCapture {
    /// `fanotify_init` + a mark on every exec-capable filesystem in
    /// `/proc/self/mountinfo`, and starts the watchdog.
    pub fn open(opts: CaptureOptions) -> Result<Self, FanotifyError> {
        Self::open_group(opts, true)
    }

    /// Like [`open`](Self::open) without the watchdog. For tests that must
    /// leave events unanswered (a sensor that hangs); never use it in the
    /// daemon.
    #[doc(hidden)]
    pub fn open_unguarded(opts: CaptureOptions) -> Result<Self, FanotifyError> {
        Self::open_group(opts, false)
    }

    /// `guarded`: start the watchdog process, before the first mark (it is
    /// forked, and a fork must not happen once execs can wait on us).
    fn open_group(opts: CaptureOptions, guarded: bool) -> Result<Self, FanotifyError> {
        let flags = libc::FAN_CLASS_CONTENT | libc::FAN_CLOEXEC | libc::FAN_NONBLOCK;
        let ev_flags = libc::O_RDONLY | libc::O_LARGEFILE | libc::O_CLOEXEC;
        // SAFETY: plain system call; the result is checked.
        let fd = unsafe { libc::fanotify_init(flags, ev_flags as libc::c_uint) };
        if fd < 0 {
            let e = io::Error::last_os_error();
            return Err(match e.raw_os_error() {
                Some(libc::ENOSYS) => FanotifyError::NoFanotify(e),
                Some(libc::EPERM) => FanotifyError::NeedsCapSysAdmin {
                    op: "fanotify_init(FAN_CLASS_CONTENT)",
                    source: e,
                },
                Some(libc::EINVAL) => FanotifyError::NoExecPermission(e),
                _ => FanotifyError::Io {
                    op: "fanotify_init",
                    source: e,
                },
            });
        }
        // SAFETY: a fresh fd we own.
        let group = unsafe { OwnedFd::from_raw_fd(fd) };
        let mountinfo = File::open("/proc/self/mountinfo").map_err(|source| FanotifyError::Io {
            op: "open /proc/self/mountinfo",
            source,
        })?;
        // SAFETY: plain system call; the result is checked.
        let tfd = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if tfd < 0 {
            return Err(FanotifyError::Io {
                op: "timerfd_create",
                source: io::Error::last_os_error(),
            });
        }
        // SAFETY: a fresh fd we own.
        let timer = unsafe { OwnedFd::from_raw_fd(tfd) };
        let mut c = FanotifyCapture {
            watchdog: None,
            group,
            mountinfo,
            opts,
            stats: FanotifyStats::default(),
            marked: BTreeSet::new(),
            recent: HashMap::new(),
            buf: vec![0u64; SLOTS * METADATA_LEN / 8],
            batch: Vec::with_capacity(SLOTS),
            deferred: Vec::with_capacity(DEFER_MAX),
            free_slots: u64::MAX >> (64 - SLOTS),
            timer,
            timer_armed: false,
            latencies_ns: Vec::new(),
            latency_next: 0,
        };
        if guarded {
            let wd = Watchdog::start(c.group.as_raw_fd()).map_err(|source| FanotifyError::Io {
                op: "starting the watchdog process",
                source,
            })?;
            c.watchdog = Some(wd);
        }
        let text = read_mountinfo("/proc/self/mountinfo").map_err(|source| FanotifyError::Io {
            op: "read /proc/self/mountinfo",
            source,
        })?;
        let mut last_err = None;
        c.mark_targets(b"", &mounts::targets(&mounts::parse(&text)), &mut last_err);
        c.mark_memfd_filesystem();
        if c.marked.is_empty() {
            let e = last_err.unwrap_or_else(|| io::ErrorKind::NotFound.into());
            return Err(match e.raw_os_error() {
                Some(libc::EINVAL) => FanotifyError::NoExecPermission(e),
                Some(libc::EPERM) => FanotifyError::NeedsCapSysAdmin {
                    op: "fanotify_mark(FAN_MARK_FILESYSTEM)",
                    source: e,
                },
                _ => FanotifyError::NothingMarked(e),
            });
        }
        Ok(c)
    }

    /// Registers the group fd and the retry timer of deferred events
    /// (readable: call [`drain`](Self::drain)) under `events`, and the
    /// mountinfo fd (`POLLPRI`: the mount table changed) under `mounts`.
    pub fn register(
        &mut self,
        registry: &Registry,
        events: Token,
        mounts: Token,
    ) -> io::Result<()> {
        registry.register(
            &mut SourceFd(&self.group.as_raw_fd()),
            events,
            Interest::READABLE,
        )?;
        registry.register(
            &mut SourceFd(&self.timer.as_raw_fd()),
            events,
            Interest::READABLE,
        )?;
        registry.register(
            &mut SourceFd(&self.mountinfo.as_raw_fd()),
            mounts,
            Interest::PRIORITY,
        )
    }

    /// Handles everything due: every pending event until `WouldBlock`, and
    /// the deferred events whose retry time has come. For each exec: reads
    /// argv, answers (after `decide`, only consulted with `enforce`; it must
    /// be cheap), and only then pushes the capture to `out`. Loader and
    /// interpreter opens of an execve already captured are answered and
    /// counted, not pushed.
    ///
    /// An event whose task still reads `running` (it queued the event but
    /// was preempted before parking) is not waited for here: it stays
    /// unanswered in a small deferred set and is retried every
    /// [`RETRY_EVERY`], by later calls. The retry timer is registered under
    /// the events token (see [`register`](Self::register)), so a caller
    /// that calls `drain` whenever that token is ready needs nothing else;
    /// [`next_retry`](Self::next_retry) tells when the next one is due.
    pub fn drain(
        &mut self,
        decide: &mut dyn FnMut(&ExecCapture) -> Verdict,
        out: &mut Vec<ExecCapture>,
    ) {
        if let Some(wd) = &self.watchdog {
            wd.drain_started();
        }
        // Older events first: they are the closest to their deadline.
        self.retry_deferred(decide, out);
        self.read_events(decide, out);
        // Reading the batch gave deferred tasks time to park.
        self.retry_deferred(decide, out);
        self.arm_timer();
    }

    /// When the earliest deferred event is due for a retry (or its
    /// deadline); `None` when nothing is deferred. The capture's own timer
    /// already wakes the events token then; this is for callers that poll
    /// the group fd by other means.
    pub fn next_retry(&self) -> Option<Instant> {
        self.deferred
            .iter()
            .map(|d| d.next_try.min(d.deadline))
            .min()
    }

    /// Events read from the group fd, in batches of at most the free
    /// watchdog slots (deferred events keep theirs).
    fn read_events(
        &mut self,
        decide: &mut dyn FnMut(&ExecCapture) -> Verdict,
        out: &mut Vec<ExecCapture>,
    ) {
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
            let buf = std::mem::take(&mut self.buf);
            let bytes = as_bytes(&buf, n);
            let mut evs = [RawEvent {
                mask: 0,
                fd: -1,
                pid: 0,
            }; SLOTS];
            let mut count = 0;
            for ev in parse_events(bytes) {
                if ev.fd < 0 {
                    // FAN_NOFD: a queue overflow; nothing to answer.
                    log::warn!("fanotify queue overflow");
                } else if count < free {
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
                let capture = match self.inspect(ev, may_defer) {
                    Inspected::Running => {
                        self.stats.deferred += 1;
                        inflight.deferred = true;
                        self.deferred.push(Deferred {
                            ev: *ev,
                            slot: inflight.slot,
                            slot_word: inflight.slot_word,
                            read_at: t_read,
                            next_try: Instant::now() + RETRY_EVERY,
                            deadline: t_read + DEFER_BUDGET,
                        });
                        continue;
                    }
                    Inspected::Done(c) => c,
                };
                let verdict = self.decide(capture.as_ref(), decide);
                let given = self.answer(
                    inflight.fd,
                    inflight.slot,
                    inflight.slot_word,
                    verdict,
                    t_read,
                );
                inflight.capture = capture.map(|mut c| {
                    c.verdict = given;
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
    fn retry_deferred(
        &mut self,
        decide: &mut dyn FnMut(&ExecCapture) -> Verdict,
        out: &mut Vec<ExecCapture>,
    ) {
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
            let verdict = self.decide(capture.as_ref(), decide);
            // The CAS in `answer` settles a watchdog answer given since the
            // check above: no second answer, and the fd stays open until
            // the watchdog has written its response.
            let given = self.answer(d.ev.fd, d.slot, d.slot_word, verdict, d.read_at);
            let capture = capture.map(|mut c| {
                c.verdict = given;
                c
            });
            self.finish(d.ev.fd, d.slot, capture, out);
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
            out.push(c);
        }
        // SAFETY: the fd was installed for us by the read and the watchdog
        // is done with it (`answer` released the slot).
        drop(unsafe { OwnedFd::from_raw_fd(fd) });
        self.free_slots |= 1 << slot;
    }

    /// The verdict for a capture: `Allow` unless enforcing, when `decide`
    /// judges it.
    fn decide(
        &self,
        capture: Option<&ExecCapture>,
        decide: &mut dyn FnMut(&ExecCapture) -> Verdict,
    ) -> Verdict {
        match capture {
            Some(c) if self.opts.enforce && c.args_read => decide(c),
            _ => Verdict::Allow,
        }
    }

    /// The lowest free watchdog slot; the caller checked there is one.
    fn take_slot(&mut self) -> usize {
        let slot = self.free_slots.trailing_zeros() as usize;
        self.free_slots &= !(1 << slot);
        slot
    }

    /// Sets the retry timer to [`next_retry`](Self::next_retry), or
    /// disarms it. Setting also resets its expiry count, so a fired timer
    /// needs no read.
    fn arm_timer(&mut self) {
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
    fn answer(
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
            self.record_latency(read_at);
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
            self.record_latency(read_at);
            Verdict::Allow
        };
        if let Some(wd) = &self.watchdog {
            wd.release(slot, slot_word);
        }
        given
    }

    /// Reads what the parked task tells about its exec. `Done(None)` for
    /// an extra open (loader, interpreter) of an execve already captured,
    /// or an event from a task outside our pid namespace. `Running` (only
    /// if `may_defer`) when the task has not parked yet; without
    /// `may_defer` such a task is reported without argv and counted.
    fn inspect(&mut self, ev: &RawEvent, may_defer: bool) -> Inspected {
        let Ok(pid) = u32::try_from(ev.pid) else {
            self.stats.argv_read_errors += 1;
            return Inspected::Done(None);
        };
        if pid == 0 {
            // The task is in a pid namespace we cannot see into.
            self.stats.argv_read_errors += 1;
            return Inspected::Done(None);
        }
        let (state, tid) = self.syscall_of(pid);
        let state = match state {
            Some(SyscallState::Running) if may_defer => return Inspected::Running,
            Some(SyscallState::Running) => {
                self.stats.syscall_running_misses += 1;
                None
            }
            other => other,
        };
        Inspected::Done(self.capture_of(ev, pid, state, tid))
    }

    /// The capture of an event whose task's syscall state was read.
    fn capture_of(
        &mut self,
        ev: &RawEvent,
        pid: u32,
        state: Option<SyscallState>,
        tid: u32,
    ) -> Option<ExecCapture> {
        let stat = file_stat(ev.fd);
        let file = stat.map_or((0, 0), |k| (k.dev, k.ino));
        let call = state.and_then(remote::exec_call);
        let mut cap = ExecCapture {
            pid,
            argv: Vec::new(),
            truncated: false,
            executable: Vec::new(),
            filename: Vec::new(),
            interpreter: None,
            file: stat,
            syscall: call.map_or(0, |c| u32::try_from(c.nr).unwrap_or(0)),
            args_read: false,
            verdict: Verdict::Allow,
        };
        if let Some(call) = call {
            let key = ExecKey {
                nr: call.nr,
                filename: call.filename,
                argv: call.argv,
                file,
            };
            if let Some(prev) = self.recent.get(&pid) {
                // Same execve (same pointers), another file: the loader or
                // interpreter. The same file again is a new execve.
                if prev.nr == key.nr
                    && prev.filename == key.filename
                    && prev.argv == key.argv
                    && prev.file != key.file
                {
                    self.stats.extra_opens += 1;
                    return None;
                }
            }
            if self.recent.len() >= RECENT_MAX {
                self.recent.clear();
            }
            self.recent.insert(pid, key);
            self.read_args(tid, &call, &mut cap);
        } else {
            self.stats.argv_read_errors += 1;
        }
        // Before the answer: once the new program runs it could rename its
        // own file, and the path read would be the new name.
        cap.executable = fd_path(ev.fd);
        // execveat(fd, "", AT_EMPTY_PATH) (fexecve, runc's memfd): the file
        // is the task's dirfd. Its filesystem may be unmarkable (memfds live
        // on an internal mount), so the event may be the loader's: neither
        // its path nor its identity is the program's.
        if let Some(call) = call
            && call.nr == remote::SYS_EXECVEAT
            && call.flags & libc::AT_EMPTY_PATH as u64 != 0
            && cap.args_read
            && cap.filename.is_empty()
            && let Ok(target) = std::fs::read_link(format!("/proc/{tid}/fd/{}", call.dirfd))
        {
            cap.executable = target.into_os_string().into_encoded_bytes();
            cap.file = None;
        }
        Some(cap)
    }

    fn read_args(&mut self, tid: u32, call: &ExecCall, cap: &mut ExecCapture) {
        let mut mem = ProcessMem::new(tid);
        match remote::read_args(&mut mem, call, self.opts.max_args, self.opts.max_args_bytes) {
            Ok(a) => {
                cap.argv = a.argv;
                cap.truncated = a.truncated;
                cap.filename = a.filename;
                cap.args_read = true;
            }
            Err(e) => {
                self.stats.argv_read_errors += 1;
                log::debug!("argv of {tid}: {e}");
            }
        }
    }

    /// `/proc/<pid>/syscall`. When another thread than the leader execs,
    /// the leader is not in execve: the threads are scanned for the one
    /// that is. Returns the state and the task to read; `Running` when no
    /// thread is in execve and the leader has not parked yet (it queued the
    /// event but was preempted): never waited for here, the caller defers.
    fn syscall_of(&mut self, pid: u32) -> (Option<SyscallState>, u32) {
        let read = || syscall_state(pid, None);
        let mut state = read();
        if YIELD_BEFORE_DEFER && state == Some(SyscallState::Running) {
            // Our wake-up often preempted the task on its CPU: giving the
            // CPU back once lets it park (microseconds) before we defer.
            std::thread::yield_now();
            state = read();
        }
        if state.and_then(remote::exec_call).is_some() {
            return (state, pid);
        }
        // Multi-threaded exec from a non-leader thread.
        if let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) {
            for ent in dir.flatten().take(MAX_THREADS_SCANNED) {
                let name = ent.file_name();
                let Some(tid) = std::str::from_utf8(name.as_bytes())
                    .ok()
                    .and_then(|s| s.parse::<u32>().ok())
                else {
                    continue;
                };
                if tid == pid {
                    continue;
                }
                let st = syscall_state(pid, Some(tid));
                if st.and_then(remote::exec_call).is_some() {
                    return (st, tid);
                }
            }
        }
        (state, pid)
    }

    /// The mount table changed: marks exec-capable filesystems not marked
    /// yet, and forgets those that are gone (the kernel drops their marks
    /// with the superblock; a new one may reuse the device number).
    pub fn remark(&mut self) {
        let text = match read_mountinfo("/proc/self/mountinfo") {
            Ok(t) => t,
            Err(e) => {
                log::warn!("re-reading /proc/self/mountinfo: {e}");
                return;
            }
        };
        let targets = mounts::targets(&mounts::parse(&text));
        let live: BTreeSet<(u32, u32)> = mounts::parse(&text).iter().map(|m| m.dev).collect();
        self.marked.retain(|d| live.contains(d));
        let mut last = None;
        self.mark_targets(b"", &targets, &mut last);
    }

    /// Marks the filesystems mounted in `pid`'s mount namespace (a container
    /// started: its tmpfs mounts exist nowhere in ours), reached through
    /// `/proc/<pid>/root`.
    pub fn mark_mounts_of(&mut self, pid: u32) -> io::Result<()> {
        let text = read_mountinfo(&format!("/proc/{pid}/mountinfo"))?;
        let prefix = format!("/proc/{pid}/root");
        let mut last = None;
        self.mark_targets(
            prefix.as_bytes(),
            &mounts::targets(&mounts::parse(&text)),
            &mut last,
        );
        Ok(())
    }

    fn mark_targets(
        &mut self,
        prefix: &[u8],
        targets: &[mounts::Target],
        last_err: &mut Option<io::Error>,
    ) {
        for t in targets {
            if self.marked.contains(&t.dev) {
                continue;
            }
            // Prefer a mount point that really shows this superblock (the
            // first may be over-mounted); else try them all in order.
            let mut paths: Vec<Vec<u8>> = t
                .mounts
                .iter()
                .map(|(_, mp)| [prefix, mp.as_slice()].concat())
                .collect();
            paths.sort_by_key(|p| dev_of(p) != Some(t.dev));
            for p in paths {
                match self.mark(&p) {
                    Ok(()) => {
                        self.stats.marks += 1;
                        self.marked.insert(t.dev);
                        log::debug!(
                            "fanotify: marked {} ({})",
                            String::from_utf8_lossy(&p),
                            String::from_utf8_lossy(&t.fstype)
                        );
                        break;
                    }
                    Err(e) => {
                        self.stats.mark_errors += 1;
                        log::debug!("fanotify_mark {}: {e}", String::from_utf8_lossy(&p));
                        *last_err = Some(e);
                    }
                }
            }
        }
    }

    /// `memfd_create` files live on the kernel's internal shmem mount, which
    /// no mountinfo lists; runc and fileless malware exec them with
    /// `execveat(fd, "", AT_EMPTY_PATH)`. Marking through a memfd of our own
    /// (pathname NULL: the mark goes on `dirfd`'s filesystem) covers them.
    fn mark_memfd_filesystem(&mut self) {
        // SAFETY: plain system call with a static name; the result is checked.
        let fd = unsafe { libc::memfd_create(c"execsentry-mark".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            log::debug!("memfd_create: {}", io::Error::last_os_error());
            return;
        }
        // SAFETY: a fresh fd we own, closed at the end of this scope.
        let memfd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: valid fds; a NULL pathname means "dirfd itself".
        let r = unsafe {
            libc::fanotify_mark(
                self.group.as_raw_fd(),
                libc::FAN_MARK_ADD | libc::FAN_MARK_FILESYSTEM,
                libc::FAN_OPEN_EXEC_PERM,
                memfd.as_raw_fd(),
                std::ptr::null(),
            )
        };
        if r < 0 {
            self.stats.mark_errors += 1;
            log::debug!("fanotify_mark(memfd): {}", io::Error::last_os_error());
        } else {
            self.stats.marks += 1;
        }
    }

    fn mark(&self, path: &[u8]) -> io::Result<()> {
        let c = CString::new(path).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: valid fd and NUL-terminated path.
        let r = unsafe {
            libc::fanotify_mark(
                self.group.as_raw_fd(),
                libc::FAN_MARK_ADD | libc::FAN_MARK_FILESYSTEM,
                libc::FAN_OPEN_EXEC_PERM,
                libc::AT_FDCWD,
                c.as_ptr(),
            )
        };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    pub fn stats(&self) -> FanotifyStats {
        let mut s = self.stats;
        if let Some(wd) = &self.watchdog {
            s.watchdog_answers = wd.answers() + wd.takeover_answers();
        }
        s
    }

    /// Time from reading an event to answering it, (p50, p99) in µs over
    /// the last 65 536 events; `None` before any event.
    pub fn answer_latency_us(&self) -> Option<(f64, f64)> {
        if self.latencies_ns.is_empty() {
            return None;
        }
        let mut v = self.latencies_ns.clone();
        v.sort_unstable();
        let at = |q: f64| {
            let i = ((v.len() - 1) as f64 * q).round() as usize;
            f64::from(v[i.min(v.len() - 1)]) / 1000.0
        };
        Some((at(0.5), at(0.99)))
    }

    /// Records the time from `read_at` (the event's read) to now.
    fn record_latency(&mut self, read_at: Instant) {
        let ns = u32::try_from(read_at.elapsed().as_nanos()).unwrap_or(u32::MAX);
        if self.latencies_ns.len() < LATENCY_SAMPLES {
            self.latencies_ns.push(ns);
        } else {
            self.latencies_ns[self.latency_next] = ns;
            self.latency_next = (self.latency_next + 1) % LATENCY_SAMPLES;
        }
    }
}

impl Drop for FanotifyCapture {
    fn drop(&mut self) {
        // Stop the watchdog first: it writes to the group fd by number.
        // Closing the group fd then makes the kernel allow every pending
        // event and remove our marks.
        self.watchdog.take();
        // Deferred events too would be allowed by that close; answering
        // them first releases their tasks without depending on it.
        for d in std::mem::take(&mut self.deferred) {
            watchdog::allow(self.group.as_raw_fd(), d.ev.fd);
            // SAFETY: an event fd of ours, closed once.
            drop(unsafe { OwnedFd::from_raw_fd(d.ev.fd) });
        }
    }
}

impl AsRawFd for FanotifyCapture {
    fn as_raw_fd(&self) -> RawFd {
        self.group.as_raw_fd()
    }
}

impl AsFd for FanotifyCapture {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.group.as_fd()
    }
}

fn as_bytes(buf: &[u64], n: usize) -> &[u8] {
    // SAFETY: u64 has no padding; any byte is a valid u8.
    let all = unsafe {
        std::slice::from_raw_parts(buf.as_ptr().cast::<u8>(), std::mem::size_of_val(buf))
    };
    &all[..n.min(all.len())]
}

/// `/proc/<pid>/syscall` (or `/proc/<pid>/task/<tid>/syscall`), read with
/// no allocation: this read sits between the event and its answer. The
/// file is at most ~150 bytes and handed out whole by one read.
fn syscall_state(pid: u32, tid: Option<u32>) -> Option<SyscallState> {
    use std::io::Write;
    let mut path = [0u8; 64];
    let mut w = &mut path[..];
    match tid {
        None => write!(w, "/proc/{pid}/syscall\0"),
        Some(t) => write!(w, "/proc/{pid}/task/{t}/syscall\0"),
    }
    .ok()?;
    // SAFETY: `path` is NUL-terminated above (and zero-filled after).
    let fd = unsafe { libc::open(path.as_ptr().cast(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return None;
    }
    // SAFETY: a fresh fd we own.
    let file = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut text = [0u8; 256];
    // SAFETY: reads at most the buffer's length into it.
    let n = unsafe { libc::read(file.as_raw_fd(), text.as_mut_ptr().cast(), text.len()) };
    remote::parse_syscall(&text[..usize::try_from(n).ok()?])
}

fn read_mountinfo(path: &str) -> io::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(16 * 1024);
    // Bounded: a mount table of tens of thousands of lines still fits.
    File::open(path)?.take(16 << 20).read_to_end(&mut buf)?;
    Ok(buf)
}

/// The identity of an event fd's file; `None` if fstat fails.
fn file_stat(fd: RawFd) -> Option<FileKey> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat writes a stat on success.
    if unsafe { libc::fstat(fd, st.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: initialized by the successful fstat.
    let st = unsafe { st.assume_init() };
    Some(FileKey::from(&st))
}

fn dev_of(path: &[u8]) -> Option<(u32, u32)> {
    let c = CString::new(path).ok()?;
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: valid path; stat writes on success.
    if unsafe { libc::stat(c.as_ptr(), st.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: initialized by the successful stat.
    let st = unsafe { st.assume_init() };
    Some((libc::major(st.st_dev), libc::minor(st.st_dev)))
}

/// Target of `/proc/self/fd/<fd>` as bytes.
fn fd_path(fd: RawFd) -> Vec<u8> {
    std::fs::read_link(format!("/proc/self/fd/{fd}"))
        .map(|p| p.into_os_string().into_encoded_bytes())
        .unwrap_or_default()
}

/// The interpreter of a `#!` script, from its first bytes. The kernel
/// (binfmt_script) reads the same line right after our answer.
fn shebang(fd: BorrowedFd<'_>) -> Option<Vec<u8>> {
    // Borrow the fd as a File without taking ownership of it.
    let f = std::mem::ManuallyDrop::new(unsafe { File::from_raw_fd(fd.as_raw_fd()) });
    let mut head = [0u8; SHEBANG_MAX];
    let n = f.read_at(&mut head, 0).ok()?;
    parse_shebang(&head[..n])
}

/// `#!  /bin/sh -e\n` → `/bin/sh`. PURE.
pub fn parse_shebang(head: &[u8]) -> Option<Vec<u8>> {
    let rest = head.strip_prefix(b"#!")?;
    let line = rest.split(|&c| c == b'\n').next()?;
    let path = line
        .split(|&c| c == b' ' || c == b'\t')
        .find(|f| !f.is_empty())?;
    Some(path.to_vec())
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
    fn shebang_lines() {
        assert_eq!(parse_shebang(b"#!/bin/sh\necho"), Some(b"/bin/sh".to_vec()));
        assert_eq!(
            parse_shebang(b"#!  /usr/bin/env python3 -u\n"),
            Some(b"/usr/bin/env".to_vec())
        );
        assert_eq!(parse_shebang(b"#!\t/bin/bash"), Some(b"/bin/bash".to_vec()));
        assert_eq!(parse_shebang(b"\x7fELF"), None);
        assert_eq!(parse_shebang(b"#!\n"), None);
    }
}
