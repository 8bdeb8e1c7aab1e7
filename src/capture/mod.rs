//! Argv capture sources: kernel facilities that see an exec's complete
//! argv at exec time, before a short-lived process can vanish. Each source
//! is one module implementing [`CaptureSource`]; what it yields is a
//! [`Capture`], which the exec join (`crate::join`) pairs with the proc
//! connector's exec event of the same task. `/proc/<pid>/cmdline` read after
//! the fact is the join's fallback, not a source.

pub mod kprobe;

use std::io;
use std::time::Instant;

use mio::{Registry, Token};

use crate::counters::Counters;
use crate::event::Event;
use crate::identity::FileKey;

/// Which facility supplied an exec's argv; becomes `execsentry.args_source`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ArgsSource {
    #[default]
    Fanotify,
    Kprobe,
}

impl ArgsSource {
    pub fn as_str(self) -> &'static str {
        match self {
            ArgsSource::Fanotify => "fanotify",
            ArgsSource::Kprobe => "kprobe",
        }
    }
}

/// The answer a gating source gave the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Verdict {
    #[default]
    Allow,
    Deny,
}

/// One exec as a capture source saw it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Capture {
    /// Thread-group id of the exec'ing task, as the proc connector's exec
    /// event will report it once the exec completes.
    pub pid: u32,
    /// NUL-separated, like `/proc/<pid>/cmdline`. Empty when not read (see
    /// `args_read`) or when execve got an empty argv.
    pub argv: Vec<u8>,
    /// argv was cut (by `max_args_bytes` or a kernel limit of the source):
    /// the join completes it from `/proc/<pid>/cmdline` while it can.
    pub truncated: bool,
    /// The exact file opened for exec when the source knows it (fanotify:
    /// the event fd's path, ` (deleted)` and `/memfd:...` names included).
    pub executable: Vec<u8>,
    /// execve's path argument, as given (relative, empty for
    /// `execveat(fd, "", AT_EMPTY_PATH)` / `fexecve`); empty when unknown.
    pub filename: Vec<u8>,
    /// The kernel's comm after the exec, when the source saw it (a source
    /// that fires after the point of no return, like kprobe). The join uses
    /// it, or else the basename of `filename`, to pair the capture with the
    /// exec the proc connector reports.
    pub comm: Option<Vec<u8>>,
    /// A script's `#!` interpreter, read from the executable's first line.
    pub interpreter: Option<Vec<u8>>,
    /// The opened file's identity, so the executable's cached facts are
    /// found even after the process is gone.
    pub file: Option<FileKey>,
    /// The system call the task was in (59 execve, 322 execveat on x86_64);
    /// 0 if unknown.
    pub syscall: u32,
    /// Whether argv comes from the task's memory. False when the source saw
    /// the exec but could not read it: the join keeps the `/proc` path.
    pub args_read: bool,
    /// The exec's environment (NUL-separated, as `envp` gave it), only when
    /// `sensor.capture_env_vars` names variables and the source saw it.
    pub envp: Option<Vec<u8>>,
    /// `/proc/<pid>/cgroup`, when the source could read it while the
    /// process surely lived (fanotify: right after its answer). A
    /// short-lived process in a container is gone by the time the
    /// pipeline reaches it, and its cgroup is what says "container".
    pub cgroup: Option<String>,
    /// When the source saw the exec, CLOCK_MONOTONIC, where that is the
    /// proc connector's clock: before the exec completed (kprobe: in
    /// `start_thread`; fanotify: while the exec waited). The join pairs an
    /// exec with the last capture of its pid from before it; `None` leaves
    /// pairing to the comm.
    pub ns: Option<u64>,
    /// `Deny` only from a gating source that refused the exec.
    pub verdict: Verdict,
    pub source: ArgsSource,
}

/// CLOCK_MONOTONIC now, the clock of the proc connector's time stamps.
pub fn monotonic_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).map_or(0, |t| {
        (t.tv_sec() as u64)
            .saturating_mul(1_000_000_000)
            .saturating_add(t.tv_nsec() as u64)
    })
}

/// Why a source cannot run here; `auto` logs it and tries the next one,
/// `status` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unavailable {
    pub source: &'static str,
    pub reason: String,
}

impl std::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} capture: {}", self.source, self.reason)
    }
}

/// The one call a gating source may make into the pipeline while an exec
/// waits: a verdict on the facts it has. Everything else flows one way,
/// through the join.
pub trait Decider {
    fn decide(&mut self, capture: &Capture) -> Verdict;
}

/// Always allows: for sources that never gate, and for `enforce = false`.
pub struct AllowAll;

impl Decider for AllowAll {
    fn decide(&mut self, _: &Capture) -> Verdict {
        Verdict::Allow
    }
}

/// A kernel facility that yields captures to the exec join.
pub trait CaptureSource {
    /// `sensor.capture` name and `execsentry.args_source` of what it yields.
    fn source(&self) -> ArgsSource;

    /// Registers its fds with the loop's poll under tokens `first`,
    /// `first + 1`, …; returns how many it used. The loop sends every ready
    /// token in that range to [`on_ready`](Self::on_ready).
    fn register(&mut self, registry: &Registry, first: Token) -> io::Result<usize>;

    /// One of its tokens is ready, or (`None`) the join is about to pair a
    /// proc-connector exec and needs everything the kernel already gave
    /// this source. Pushes every capture it can to `out`, in kernel order.
    fn on_ready(&mut self, token: Option<Token>, decider: &mut dyn Decider, out: &mut Vec<Capture>);

    /// The source records every successful exec (kprobe), so an exec
    /// without a capture is one whose record was lost and its argv is only
    /// `/proc`'s guess. fanotify skips some execs on purpose (the loader).
    fn sees_every_exec(&self) -> bool {
        false
    }

    /// CLOCK_MONOTONIC from which a source that sees every exec has
    /// recorded them all: an exec that completed before (its event still
    /// queued at start) has no capture, and that is no loss.
    fn watching_since_ns(&self) -> Option<u64> {
        None
    }

    /// Every event the pipeline emits passes here too, so a source can learn
    /// of what it must watch (fanotify marks a new container's mounts).
    fn observe(&mut self, _event: &Event) {}

    /// When the source needs `on_ready(None)` again without a token.
    fn next_deadline(&self) -> Option<Instant> {
        None
    }

    /// Adds its counters to the registry's values.
    fn counters(&self, out: &mut Counters);

    /// Exec wait percentiles (p50, p99) in µs, for a gating source.
    fn answer_latency_us(&self) -> Option<(f64, f64)> {
        None
    }
}
