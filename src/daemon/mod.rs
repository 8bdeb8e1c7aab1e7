//! `execsentry run`: the single mio event loop. Each token maps to one
//! handler and nothing more: the proc connector's events and the capture
//! source's captures go to the [`Pipeline`], what it emits goes to the
//! outputs. Handlers never wait on a peer (sockets are non-blocking, queues
//! bounded); slow work (an overrun rescan) is deferred to housekeeping, and
//! timers set the poll timeout.
//!
//! The rest of `run` has a file each: [`setup`] (start and self-check),
//! [`reload`] (SIGHUP), [`control`] (`execsentry status`), [`files`] (the
//! tamper check of rule and config files) and [`stats`] (the counter
//! snapshot and the `stats:` line).

mod control;
mod files;
mod reload;
mod setup;
mod stats;

use std::io;
use std::time::{Duration, Instant};

use anyhow::Result;
use mio::{Events, Interest, Poll, Token};
use nix::sys::signal::Signal;
use nix::sys::signalfd::SignalFd;

use crate::event::Event;
use crate::netlink::reader::{Batch, Drained, KernelReader};
use crate::pacing::{Mode, PACED_POLL, Pacing};
use crate::pipeline::Pipeline;
use crate::sink::Outputs;
use crate::tamper::Tamper;

pub use setup::{
    BadInput, EXIT_SETUP, RunOptions, SetupError, check_enforcement, choose_capture,
    fanotify_kernel_ok, load_rules, load_rules_with, run,
};

const NETLINK: Token = Token(0);
const SIGNALS: Token = Token(1);
const CONTROL: Token = Token(2);
/// The capture source registers its fds from here on (see
/// [`crate::capture::CaptureSource::register`]).
const SOURCE_FIRST: usize = 16;
/// The outputs' tokens start at [`crate::sink::TOKEN_BASE`].
const SOURCE_END: usize = crate::sink::TOKEN_BASE;

const HOUSEKEEPING: Duration = Duration::from_millis(500);
/// The least time between two `/proc` rescans after overruns.
const RESYNC_EVERY: Duration = Duration::from_secs(5);
const FLUSH_ON_EXIT: Duration = Duration::from_millis(800);

struct Loop {
    poll: Poll,
    kernel: KernelReader,
    /// Whether the proc connector wakes the loop (see [`crate::pacing`]).
    pacing: Pacing,
    outputs: Outputs,
    pipeline: Pipeline,
    /// What the pipeline emitted in one handler, reused.
    emitted: Vec<Event>,
    /// One batch of kernel events, reused.
    batch: Vec<crate::netlink::wire::KernelEvent>,
    started: Instant,
    /// The self-check's exec, until its event has passed.
    self_check: setup::SelfCheck,
    /// Exits may have been lost in an overrun: rescan /proc when due.
    resync_due: bool,
    last_resync: Instant,
    reload: reload::Reload,
    control: control::Control,
    stats: stats::StatsLine,
    files: files::FileCheck,
    notifier: crate::sdnotify::Notifier,
}

enum Flow {
    Continue,
    Stop,
}

impl Loop {
    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn run(&mut self, signals: &mut SignalFd) -> Result<()> {
        let mut events = Events::with_capacity(256);
        let mut next_housekeeping = Instant::now() + HOUSEKEEPING;
        loop {
            let now = Instant::now();
            let mut deadline = next_housekeeping;
            if let Some(d) = self.outputs.tick(self.poll.registry(), now) {
                deadline = deadline.min(d);
            }
            crate::stages::lap(crate::stages::Stage::Output);
            let paced = self.pacing.mode() == Mode::Paced;
            if paced {
                deadline = deadline.min(now + PACED_POLL);
            }
            poll_retrying(
                &mut self.poll,
                &mut events,
                Some(deadline.saturating_duration_since(now)),
            )?;
            for ev in events.iter() {
                match ev.token() {
                    NETLINK => self.on_netlink(),
                    CONTROL => self.on_control(),
                    SIGNALS => {
                        if let Flow::Stop = self.on_signals(signals) {
                            self.outputs.flush(Instant::now() + FLUSH_ON_EXIT);
                            self.log_stats(true);
                            return Ok(());
                        }
                    }
                    Token(t) if (SOURCE_FIRST..SOURCE_END).contains(&t) => {
                        self.on_source(Some(Token(t)))
                    }
                    _ => self.outputs.handle(self.poll.registry(), ev),
                }
            }
            if paced {
                self.on_netlink();
            }
            if self.pipeline.source().is_some() {
                self.pace();
            }
            if self.outputs.stdout_broken() {
                log::warn!("stdout was closed by its reader; stopping");
                return Ok(());
            }
            if Instant::now() >= next_housekeeping {
                next_housekeeping = Instant::now() + HOUSEKEEPING;
                self.housekeeping();
            }
        }
    }

    /// The proc connector: every event to the pipeline, in kernel order.
    fn on_netlink(&mut self) {
        let now_ms = self.now_ms();
        let mut drained = Drained::default();
        let mut batch = std::mem::take(&mut self.batch);
        // Kernel messages come before enrichment: the processes they name
        // may be gone by the time the execs queued before them are
        // enriched. So the socket is read again after each exec applied
        // (not after each fork or exit: they cost next to nothing).
        let mut read_now = true;
        loop {
            let mut empty = false;
            if read_now && self.pipeline.pending() < Pipeline::PENDING_MAX {
                match self.kernel.read_batch(&mut batch, &mut drained) {
                    Batch::Events { short } => {
                        self.pipeline.enqueue(&batch);
                        empty = short;
                    }
                    Batch::Dry => empty = true,
                }
            }
            match self.pipeline.step(now_ms, &mut self.emitted) {
                Some(exec) => {
                    read_now = exec;
                    self.emit();
                }
                // Asleep only once a read of this very turn found the
                // socket empty.
                None if empty => break,
                None => read_now = true,
            }
        }
        self.batch = batch;
        self.pacing.read(drained.datagrams);
        if drained.overrun {
            // The rescan runs from housekeeping, at most every few seconds:
            // done here, under the storm that caused the overrun, it would
            // cause the next one.
            self.resync_due = true;
        }
        self.emit();
    }

    /// The capture source: its captures to the pipeline's join.
    fn on_source(&mut self, token: Option<Token>) {
        let now_ms = self.now_ms();
        self.pipeline
            .on_source_ready(token, now_ms, &mut self.emitted);
        self.emit();
    }

    fn on_control(&mut self) {
        let status = self.status();
        self.control.serve(&status);
    }

    fn on_signals(&mut self, signals: &mut SignalFd) -> Flow {
        while let Ok(Some(info)) = signals.read_signal() {
            match Signal::try_from(info.ssi_signo as i32) {
                Ok(Signal::SIGHUP) => self.on_reload(),
                Ok(sig @ (Signal::SIGTERM | Signal::SIGINT)) => {
                    let detail = format!("{sig} from pid {} (uid {})", info.ssi_pid, info.ssi_uid);
                    self.pipeline.tamper(
                        Tamper::Signal(sig as i32),
                        info.ssi_pid,
                        &detail,
                        &mut self.emitted,
                    );
                    self.emit();
                    return Flow::Stop;
                }
                _ => {}
            }
        }
        Flow::Continue
    }

    fn on_reload(&mut self) {
        let registry = self.poll.registry();
        if let Some(applied) = self
            .reload
            .apply(&mut self.pipeline, &mut self.outputs, registry)
        {
            self.stats.every = applied.stats_every;
        }
    }

    fn housekeeping(&mut self) {
        let now_ms = self.now_ms();
        self.pipeline.housekeeping(now_ms);
        if self.resync_due && self.last_resync.elapsed() >= RESYNC_EVERY {
            self.resync_due = false;
            self.last_resync = Instant::now();
            self.pipeline.resync(now_ms);
        }
        self.notifier.tick(Instant::now());
        self.reload.poll(&mut self.outputs, self.poll.registry());
        self.log_stats(false);
        if let Some(finding) = self.files.due(self.reload.rule_paths()) {
            self.pipeline
                .tamper(Tamper::Files, 0, &finding, &mut self.emitted);
            self.emit();
        }
    }

    /// Hands what the pipeline emitted to the outputs, in order.
    fn emit(&mut self) {
        for ev in self.emitted.drain(..) {
            self.self_check.saw(&ev);
            self.outputs.emit(&ev);
        }
    }

    /// Switches the proc connector between waking the loop and being read
    /// on the loop's schedule, by the message rate (fanotify mode only:
    /// there the permission events keep the loop turning under load).
    fn pace(&mut self) {
        let switched = match self.pacing.decide(Instant::now()) {
            Some(Mode::Paced) => self.poll.registry().deregister(&mut self.kernel.conn),
            Some(Mode::Eager) => {
                let r = self.poll.registry().register(
                    &mut self.kernel.conn,
                    NETLINK,
                    Interest::READABLE,
                );
                self.on_netlink();
                r
            }
            None => return,
        };
        // The socket stays where it was; so does the mode that matches it.
        if let Err(e) = switched {
            log::warn!("proc connector: could not change how it is read: {e}");
            let back = match self.pacing.mode() {
                Mode::Paced => Mode::Eager,
                Mode::Eager => Mode::Paced,
            };
            self.pacing.keep(back);
        }
    }
}

fn poll_retrying(
    poll: &mut Poll,
    events: &mut Events,
    timeout: Option<Duration>,
) -> io::Result<()> {
    loop {
        match poll.poll(events, timeout) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            r => return r,
        }
    }
}
