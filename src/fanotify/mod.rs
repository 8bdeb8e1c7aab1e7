//! Complete argv for every exec: a fanotify group with `FAN_OPEN_EXEC_PERM`
//! marks on every exec-capable filesystem, a capture source of the exec
//! join.
//!
//! A permission event arrives while the exec'ing task is parked inside
//! `execve`, before its old image is replaced: [`inspect`] reads its
//! `/proc/<pid>/syscall` and, through the pointers there ([`remote`]), the
//! `filename` and `argv` it passed. The event is answered ([`answer`])
//! right after that (the kernel holds the exec until then), before anything
//! else is done with it. The [`watchdog`] answers whatever the loop leaves
//! unanswered for a few milliseconds. [`group`] opens the group and places
//! the marks [`mounts`] chooses; [`events`] reads and decodes the group fd;
//! [`latency`] keeps how long execs waited.
//!
//! Safety of the host: closing the group fd (drop, or the process dying,
//! SIGKILL included) makes the kernel allow every pending event and drop the
//! marks. The one way to hang the host is a *child* that inherited the group
//! fd across `fork` and then blocks in its own exec before `FAN_CLOEXEC`
//! applies: the process holding a capture must not fork/exec.

mod answer;
pub mod events;
mod group;
mod inspect;
mod latency;
pub mod mounts;
pub mod pageguard;
pub mod remote;
mod sched;
mod threaded;
pub mod watchdog;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};
use thiserror::Error;

use crate::capture::{ArgsSource, CaptureSource, Decider};
pub use crate::capture::{Capture as ExecCapture, Verdict};
use crate::counters::{Counter, Counters};
use crate::event::Event;
pub use events::{RawEvent, parse_events};
pub use inspect::{looks_like_loader, parse_shebang};
pub use threaded::ThreadedCapture;
use watchdog::Watchdog;

/// Limits and policy of a capture.
#[derive(Debug, Clone, Copy)]
pub struct CaptureOptions {
    /// Most argv bytes kept (NULs included); more sets `truncated`.
    pub max_args_bytes: usize,
    /// Most arguments kept; more sets `truncated`.
    pub max_args: usize,
    /// Only with `enforce` is the decider consulted and `FAN_DENY` possible.
    pub enforce: bool,
    /// Read the exec's environment too (`sensor.capture_env_vars`).
    pub env: bool,
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
    /// Overdue events the watchdog left to their reader a while longer,
    /// because that thread was runnable (starved of CPU, not stalled).
    pub watchdog_runnable_waits: u64,
    pub marks: u64,
    pub mark_errors: u64,
    /// Loader/interpreter opens in the same execve.
    pub extra_opens: u64,
    /// `FAN_Q_OVERFLOW` records: the kernel's queue was full, and the
    /// events it could not queue were allowed unseen.
    pub queue_overflows: u64,
    /// Records that could not be decoded (answered, if they had an fd).
    pub malformed: u64,
    /// argv not read because reading it would have faulted in pages of a
    /// file on a FUSE or network filesystem (argv then comes from /proc).
    pub argv_slow_pages: u64,
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

/// How long an event whose task still reads `running` may stay deferred
/// before it is allowed without argv. A running task is not waiting for
/// our answer yet (a preempted one, or a virtual CPU the host descheduled,
/// can stay so for milliseconds); each retry is a heartbeat, so a stopped
/// loop still hands it to the watchdog within [`watchdog::ANSWER_AFTER`].
/// Below [`watchdog::WAIT_MAX`], so the loop, not the watchdog, answers.
const DEFER_BUDGET: Duration = Duration::from_millis(80);
/// How long the watchdog leaves an event alone while the loop reads its
/// task's `/proc/<pid>/syscall` (see [`watchdog::Watchdog::hold`]).
const READ_HOLD: Duration = Duration::from_millis(40);
/// Retry period of a deferred event. The timer is a timerfd, so it is not
/// rounded to the poll timeout's milliseconds.
const RETRY_EVERY: Duration = Duration::from_micros(50);
/// Most events deferred at once; beyond, a `running` task costs its argv.
/// Below [`watchdog::SLOTS`] so a batch always has slots to read into.
const DEFER_MAX: usize = 16;
/// Container ids whose mounts were already marked.
const MARKED_CONTAINERS_MAX: usize = 4_096;

/// Superblock device numbers (major, minor).
type Devs = BTreeSet<(u32, u32)>;

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
    marked_containers: HashSet<String>,
    recent: HashMap<u32, inspect::ExecKey>,
    /// Loader inodes (dev, ino) with an ignore mark.
    loaders: HashSet<(u64, u64)>,
    /// Whether the memfd filesystem could be marked: where it cannot
    /// (kernels refuse marks on internal mounts), a memfd exec is seen only
    /// through its loader's open, so loaders keep their events.
    memfd_marked: bool,
    buf: Vec<u64>,
    batch: Vec<events::InFlight>,
    deferred: Vec<events::Deferred>,
    /// Bit i set: watchdog slot i is free (no event fd of ours in it).
    free_slots: u64,
    /// One-shot timer for the deferred events' retries, registered under
    /// the events token.
    timer: OwnedFd,
    timer_armed: bool,
    latency: latency::Latency,
    /// The mio tokens of the group fd (and timer) and of the mount table.
    tokens: Option<(Token, Token)>,
    /// FUSE and network superblocks left unmarked (see `mounts::targets`):
    /// the host's (re-read with the mount table), and those seen in
    /// containers whose mounts were marked (bounded, never re-read).
    slow_unmarked: (Devs, Devs),
    /// Local superblocks (host's, and containers' once marked): argv in
    /// pages of files elsewhere is not faulted in by our reads.
    local_devs: [Devs; 2],
    /// The loop's `SCHED_BATCH` when it reads the group itself.
    policy: Option<sched::BatchPolicy>,
    /// Where an answered exec's cgroup is read.
    procfs: crate::procfs::ProcFs,
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
        )?;
        self.tokens = Some((events, mounts));
        Ok(())
    }

    /// Handles everything due: every pending event until `WouldBlock`, and
    /// the deferred events whose retry time has come. For each exec: reads
    /// argv, answers (after the decider, only consulted with `enforce`; it
    /// must be cheap), and only then pushes the capture to `out`. Loader and
    /// interpreter opens of an execve already captured are answered and
    /// counted, not pushed.
    ///
    /// An event whose task still reads `running` (it queued the event but
    /// was preempted before parking) is not waited for here: it stays
    /// unanswered in a small deferred set and is retried every
    /// [`RETRY_EVERY`], by later calls. The retry timer is registered under
    /// the events token, so a caller that calls `drain` whenever that token
    /// is ready needs nothing else; [`next_retry`](Self::next_retry) tells
    /// when the next one is due.
    pub fn drain(&mut self, decider: &mut dyn Decider, out: &mut Vec<ExecCapture>) {
        if let Some(wd) = &self.watchdog {
            wd.drain_started();
        }
        // Older events first: they are the closest to their deadline.
        self.retry_deferred(decider, out);
        self.read_events(decider, out);
        // Reading the batch gave deferred tasks time to park.
        self.retry_deferred(decider, out);
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

    pub fn stats(&self) -> FanotifyStats {
        let mut s = self.stats;
        if let Some(wd) = &self.watchdog {
            s.watchdog_answers = wd.answers() + wd.takeover_answers();
            s.watchdog_runnable_waits = wd.runnable_waits();
        }
        s
    }

    /// Time from reading an event to answering it, (p50, p99) in µs over
    /// the last 65 536 events; `None` before any event.
    pub fn answer_latency_us(&self) -> Option<(f64, f64)> {
        self.latency.percentiles_us()
    }
}

impl CaptureSource for FanotifyCapture {
    fn source(&self) -> ArgsSource {
        ArgsSource::Fanotify
    }

    fn register(&mut self, registry: &Registry, first: Token) -> io::Result<usize> {
        FanotifyCapture::register(self, registry, first, Token(first.0 + 1))?;
        // The loop itself reads the group (enforcement): see `sched`.
        if self.policy.is_none() {
            self.policy = Some(sched::BatchPolicy::enter());
        }
        Ok(2)
    }

    fn on_ready(
        &mut self,
        token: Option<Token>,
        decider: &mut dyn Decider,
        out: &mut Vec<ExecCapture>,
    ) {
        match (token, self.tokens) {
            (Some(t), Some((_, mounts))) if t == mounts => self.remark(),
            _ => self.drain(decider, out),
        }
    }

    fn observe(&mut self, event: &Event) {
        self.mark_new_container(event);
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.next_retry()
    }

    fn counters(&self, out: &mut Counters) {
        let f = self.stats();
        for (c, v) in [
            (Counter::FanotifyEvents, f.events),
            (Counter::FanotifyAnswered, f.answered),
            (Counter::FanotifyDenied, f.denied),
            (Counter::FanotifyWatchdogAnswers, f.watchdog_answers),
            (
                Counter::FanotifyWatchdogRunnableWaits,
                f.watchdog_runnable_waits,
            ),
            (Counter::FanotifyDeferred, f.deferred),
            (Counter::FanotifyArgvReadErrors, f.argv_read_errors),
            (Counter::FanotifyRunningMisses, f.syscall_running_misses),
            (Counter::FanotifyMarks, f.marks),
            (Counter::FanotifyMarkErrors, f.mark_errors),
            (Counter::FanotifyLoaderMarks, self.loaders.len() as u64),
            (Counter::FanotifyMemfdMarked, u64::from(self.memfd_marked)),
            (Counter::FanotifyExtraOpens, f.extra_opens),
            (Counter::FanotifyQueueOverflows, f.queue_overflows),
            (Counter::FanotifyMalformed, f.malformed),
            (Counter::FanotifyArgvSlowPages, f.argv_slow_pages),
            (
                Counter::FanotifySlowUnmarked,
                self.slow_unmarked.0.union(&self.slow_unmarked.1).count() as u64,
            ),
        ] {
            out.set(c, v);
        }
    }

    fn answer_latency_us(&self) -> Option<(f64, f64)> {
        self.latency.percentiles_us()
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
