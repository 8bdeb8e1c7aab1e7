//! `execsentry run`: set-up, the start-up self-check, and the single mio
//! event loop that drives the [`Pipeline`] from the proc connector and feeds
//! the outputs. Nothing in a handler blocks; timers set the poll timeout.

use std::collections::HashSet;
use std::io;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use crate::captures::PendingCaptures;
use crate::config::Config;
use crate::fanotify::{CaptureOptions, ExecCapture, FanotifyCapture, Verdict};
use crate::enrich::{self, ProcReader};
use crate::netlink::{self, ProcConnector, wire};
use crate::pipeline::{Counters, ExecOutcome, Pipeline};
use crate::privilege;
use crate::process_table::ProcessTable;
use crate::procfs::ProcFs;
use crate::rules::RuleSet;
use crate::sink::Outputs;

const NETLINK: Token = Token(0);
const SIGNALS: Token = Token(1);
const FANOTIFY: Token = Token(2);
const MOUNTS: Token = Token(3);

/// How long a fanotify capture waits for its proc-connector exec event
/// before it is counted as unmatched (an exec that failed after the open).
const CAPTURE_MAX_AGE_MS: u64 = 2_000;
const CAPTURE_PENDING_MAX: usize = 16_384;
/// Container ids whose mounts were already marked for fanotify.
const MARKED_CONTAINERS_MAX: usize = 4_096;

/// How long an exited process stays in the table for its children's events.
const EXIT_GRACE_MS: u64 = 5_000;
/// The self-check's deadline: the kernel delivers an exec event in
/// microseconds, so two seconds of silence means we are not subscribed.
const SELF_CHECK: Duration = Duration::from_secs(2);
const HOUSEKEEPING: Duration = Duration::from_millis(500);
const STATS_EVERY: Duration = Duration::from_secs(300);
const FLUSH_ON_EXIT: Duration = Duration::from_millis(800);

/// Exit codes, documented in the README.
pub const EXIT_SETUP: i32 = 3;

/// What `run` was asked for, after the CLI overrides were applied.
pub struct RunOptions {
    pub config: Config,
    pub config_path: Option<PathBuf>,
    pub cli_rules: Option<Vec<PathBuf>>,
    pub cli_stdout: bool,
    pub cli_events: bool,
    /// Where `execsentry status` asks.
    pub control: PathBuf,
}

/// A setup failure that must name its likely cause and exit non-zero.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SetupError(pub String);

pub fn load_rules(paths: &[PathBuf]) -> Result<RuleSet> {
    let existing: Vec<PathBuf> = paths
        .iter()
        .filter(|p| {
            let ok = p.exists();
            if !ok {
                log::warn!("rule path {} does not exist; skipped", p.display());
            }
            ok
        })
        .cloned()
        .collect();
    privilege::check_owned_by_root(&existing)?;
    RuleSet::load(&existing).map_err(|e| anyhow::anyhow!("{e}"))
}

fn apply_overrides(opts: &RunOptions) -> Config {
    let mut cfg = opts.config.clone();
    if let Some(r) = &opts.cli_rules {
        cfg.sensor.rules = r.clone();
    }
    if opts.cli_stdout {
        cfg.stdout_only();
    }
    if opts.cli_events {
        cfg.sensor.emit_events = true;
    }
    cfg
}

pub fn run(opts: RunOptions) -> Result<()> {
    let cfg = apply_overrides(&opts);
    let rules = load_rules(&cfg.sensor.rules)?;
    log::info!("loaded {} rules", rules.len());

    let mut conn = ProcConnector::open().map_err(|e| SetupError(format!("{e}")))?;
    let mut outputs =
        Outputs::new(&cfg.output, cfg.sensor.emit_events).context("setting up outputs")?;
    let mut signals = block_signals()?;

    let poll = Poll::new()?;
    poll.registry()
        .register(&mut conn, NETLINK, Interest::READABLE)?;
    poll.registry().register(
        &mut SourceFd(&signals.as_raw_fd()),
        SIGNALS,
        Interest::READABLE,
    )?;
    outputs.register(poll.registry())?;

    let procfs = ProcFs::host();
    let host = enrich::host_context(&procfs).context("reading host facts from /proc")?;
    let reader = ProcReader::new(procfs, cfg.sensor.max_args_bytes);
    let table = ProcessTable::new(cfg.sensor.table_size, EXIT_GRACE_MS);
    let metadata = crate::metadata::Metadata::new(&cfg.metadata);
    let mut pipeline = Pipeline::new(
        table,
        reader,
        host,
        rules,
        metadata,
        crate::identity::Identifier::from_config(&cfg.identity, &cfg.sensor.rules)?,
    );
    pipeline.scan();

    let mut lp = Loop {
        poll,
        conn,
        outputs,
        pipeline,
        buf: vec![0u8; 64 * 1024],
        started: Instant::now(),
        self_check_pid: None,
        self_check_ok: false,
        last_stats: Instant::now(),
        last_reported: Counters::default(),
        opts_config: opts.config_path.clone(),
        cli_rules: opts.cli_rules.clone(),
        capture: None,
        pending: PendingCaptures::new(CAPTURE_PENDING_MAX, CAPTURE_MAX_AGE_MS),
        captured: Vec::new(),
        marked_containers: HashSet::new(),
    };
    lp.self_check(&mut signals)?;
    // After this point the sensor must never fork or exec: a child holding
    // the fanotify fd that blocked in its own exec would hang the host.
    // Before open: the capture's watchdog thread inherits the nice value.
    set_nice(GATING_NICE);
    lp.capture = open_capture(&cfg)?;
    match lp.capture.as_mut() {
        Some(c) => c.register(lp.poll.registry(), FANOTIFY, MOUNTS)?,
        None => set_nice(0),
    }
    let mode = if lp.capture.is_some() { "fanotify" } else { "proc" };

    let kept = privilege::drop_capabilities(lp.capture.is_some()).context("dropping capabilities")?;
    log::info!("capabilities kept: {}", kept.join(" "));
    eprintln!(
        "execsentry: ready (capture={mode}, rules={}, processes={})",
        lp.pipeline.rules.len(),
        lp.pipeline.table.stats().live
    );
    privilege::notify_ready();
    lp.run(&mut signals)
}

/// `auto` takes fanotify when the kernel and our capabilities allow and
/// says why not otherwise; `fanotify` insists; `proc` never tries.
fn open_capture(cfg: &Config) -> Result<Option<FanotifyCapture>> {
    let opts = CaptureOptions {
        max_args_bytes: cfg.sensor.max_args_bytes,
        max_args: MAX_ARGS,
        enforce: false,
    };
    match cfg.sensor.capture.as_str() {
        "proc" => Ok(None),
        "fanotify" => FanotifyCapture::open(opts)
            .map(Some)
            .map_err(|e| SetupError(format!("fanotify capture: {e}")).into()),
        _ => match FanotifyCapture::open(opts) {
            Ok(c) => Ok(Some(c)),
            Err(e) => {
                log::warn!("fanotify capture unavailable ({e}); using the proc connector alone");
                Ok(None)
            }
        },
    }
}

/// With fanotify every exec on the host waits for our answer: the loop must
/// not be starved by the very processes it gates, or the watchdog answers
/// without argv. Set while we still hold CAP_SYS_NICE.
const GATING_NICE: i32 = -10;

/// Linux nice values are per thread: this sets the calling thread's, which
/// threads created afterwards inherit.
fn set_nice(nice: i32) {
    // SAFETY: setpriority on our own thread with plain integers.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) };
    if rc != 0 {
        log::warn!("could not set nice {nice}: {}", io::Error::last_os_error());
    }
}

/// The most arguments a fanotify capture keeps (the byte bound is
/// `sensor.max_args_bytes`); the kernel's own limit is far above.
const MAX_ARGS: usize = 4096;

fn block_signals() -> Result<SignalFd> {
    let mut set = SigSet::empty();
    for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        set.add(s);
    }
    set.thread_block().context("blocking signals")?;
    Ok(SignalFd::with_flags(
        &set,
        SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC,
    )?)
}

struct Loop {
    poll: Poll,
    conn: ProcConnector,
    outputs: Outputs,
    pipeline: Pipeline,
    buf: Vec<u8>,
    started: Instant,
    self_check_pid: Option<u32>,
    self_check_ok: bool,
    last_stats: Instant,
    last_reported: Counters,
    opts_config: Option<PathBuf>,
    cli_rules: Option<Vec<PathBuf>>,
    capture: Option<FanotifyCapture>,
    pending: PendingCaptures,
    /// Reused buffer for one drain of the capture.
    captured: Vec<ExecCapture>,
    marked_containers: HashSet<String>,
}

enum Control {
    Continue,
    Stop,
}

impl Loop {
    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Never sit silently deaf: prove that exec events arrive before saying
    /// ready. The kernel ignores subscriptions from outside the initial user
    /// and pid namespaces without an error, so this is the only way to know.
    fn self_check(&mut self, signals: &mut SignalFd) -> Result<()> {
        let mut child = Command::new("/bin/true")
            .spawn()
            .context("spawning /bin/true for the self-check")?;
        self.self_check_pid = Some(child.id());
        let deadline = Instant::now() + SELF_CHECK;
        let mut events = Events::with_capacity(64);
        while !self.self_check_ok {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            poll_retrying(&mut self.poll, &mut events, Some(deadline - now))?;
            for ev in events.iter() {
                if ev.token() == NETLINK {
                    self.drain_netlink();
                } else if ev.token() == SIGNALS {
                    if let Control::Stop = self.on_signals(signals) {
                        let _ = child.wait();
                        bail!("stopped by a signal during the self-check");
                    }
                } else {
                    self.outputs.handle(self.poll.registry(), ev);
                }
            }
        }
        let _ = child.wait();
        if !self.self_check_ok {
            bail!(SetupError(
                "self-check failed: no exec event from the proc connector within 2 s after \
                 running /bin/true. Likely causes: the sensor lacks CAP_NET_ADMIN; it runs \
                 outside the initial user or pid namespace (the kernel silently ignores the \
                 subscription there: use the host pid namespace, no user namespace); or the \
                 kernel was built without CONFIG_PROC_EVENTS."
                    .into()
            ));
        }
        Ok(())
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
            poll_retrying(
                &mut self.poll,
                &mut events,
                Some(deadline.saturating_duration_since(now)),
            )?;
            for ev in events.iter() {
                match ev.token() {
                    NETLINK => self.drain_netlink(),
                    FANOTIFY => self.drain_fanotify(),
                    MOUNTS => {
                        if let Some(c) = self.capture.as_mut() {
                            c.remark();
                        }
                    }
                    SIGNALS => {
                        if let Control::Stop = self.on_signals(signals) {
                            self.outputs.flush(Instant::now() + FLUSH_ON_EXIT);
                            self.log_counters(true);
                            return Ok(());
                        }
                    }
                    _ => self.outputs.handle(self.poll.registry(), ev),
                }
            }
            if self.outputs.stdout_broken() {
                log::warn!("stdout was closed by its reader; stopping");
                return Ok(());
            }
            if Instant::now() >= next_housekeeping {
                next_housekeeping = Instant::now() + HOUSEKEEPING;
                let now_ms = self.now_ms();
                self.pipeline.table.expire(now_ms);
                self.pending.expire(now_ms);
                self.log_counters(false);
            }
        }
    }

    /// Reads until the socket would block: the kernel queue is the only
    /// buffer between us and an overrun.
    fn drain_netlink(&mut self) {
        loop {
            let n = match self.conn.recv(&mut self.buf) {
                Ok(0) => return,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if netlink::is_overrun(&e) => {
                    self.pipeline.counters.overruns += 1;
                    let now_ms = self.now_ms();
                    self.pipeline.resync(now_ms);
                    continue;
                }
                Err(e) => {
                    log::warn!("netlink receive failed: {e}");
                    return;
                }
            };
            // Lend the buffer out so handlers can borrow self mutably.
            let buf = std::mem::take(&mut self.buf);
            for item in wire::decode(&buf[..n]) {
                match item {
                    Ok(ev) => self.on_kernel(ev),
                    Err(e) => {
                        self.pipeline.counters.decode_errors += 1;
                        log::debug!("undecodable netlink datagram: {e}");
                    }
                }
            }
            self.buf = buf;
        }
    }

    /// Reads the capture's queue. Captures come before the proc connector's
    /// exec event of the same task, which picks them up in `on_kernel`.
    fn drain_fanotify(&mut self) {
        let Some(c) = self.capture.as_mut() else {
            return;
        };
        c.drain(&mut |_| Verdict::Allow, &mut self.captured);
        let now_ms = self.started.elapsed().as_millis() as u64;
        for cap in self.captured.drain(..) {
            if cap.args_read {
                self.pending.push(cap, now_ms);
            }
        }
    }

    fn on_kernel(&mut self, ev: wire::KernelEvent) {
        let now_ms = self.now_ms();
        let outcome = match ev {
            wire::KernelEvent::Exec { tgid, .. } => {
                // The permission event may still sit unread in the fanotify
                // queue: the exec event can overtake it.
                if self.capture.is_some() {
                    self.drain_fanotify();
                }
                let cap = self.pending.take(tgid);
                Some(self.pipeline.on_exec(tgid, cap))
            }
            _ => self.pipeline.on_kernel(ev, now_ms),
        };
        let Some(ExecOutcome { event, alerts }) = outcome else {
            return;
        };
        if Some(event.process.pid) == self.self_check_pid {
            self.self_check_ok = true;
            self.self_check_pid = None;
        }
        self.mark_new_container(&event);
        self.outputs.emit(&event);
        for a in &alerts {
            self.outputs.emit(a);
        }
    }

    /// A container's own filesystems (a tmpfs /tmp, /dev/shm) are separate
    /// superblocks that the host's marks do not cover: mark them once.
    fn mark_new_container(&mut self, event: &crate::event::Event) {
        let (Some(capture), Some(c)) = (self.capture.as_mut(), event.container.as_ref()) else {
            return;
        };
        if c.id.is_empty() || self.marked_containers.contains(&c.id) {
            return;
        }
        if self.marked_containers.len() >= MARKED_CONTAINERS_MAX {
            self.marked_containers.clear();
        }
        self.marked_containers.insert(c.id.clone());
        if let Err(e) = capture.mark_mounts_of(event.process.pid) {
            log::debug!("marking the mounts of container {}: {e}", c.id);
        }
    }

    fn on_signals(&mut self, signals: &mut SignalFd) -> Control {
        while let Ok(Some(info)) = signals.read_signal() {
            match Signal::try_from(info.ssi_signo as i32) {
                Ok(Signal::SIGHUP) => self.reload(),
                Ok(Signal::SIGTERM | Signal::SIGINT) => return Control::Stop,
                _ => {}
            }
        }
        Control::Continue
    }

    /// SIGHUP: reload rules (and the rule paths from the config); a broken
    /// file keeps the running rule set.
    fn reload(&mut self) {
        self.outputs.reopen();
        let paths = match (&self.cli_rules, &self.opts_config) {
            (Some(r), _) => r.clone(),
            (None, Some(path)) => match Config::load(path) {
                Ok(c) => c.sensor.rules,
                Err(e) => {
                    log::error!("reload: {e}; keeping the running configuration");
                    return;
                }
            },
            (None, None) => Config::default().sensor.rules,
        };
        match load_rules(&paths) {
            Ok(r) => {
                log::info!("reloaded {} rules", r.len());
                self.pipeline.replace_rules(r);
            }
            Err(e) => log::error!("reload: {e:#}; keeping the running rule set"),
        }
    }

    /// One self-log line when a loss counter moved (or on exit).
    fn log_counters(&mut self, always: bool) {
        let c = self.pipeline.counters;
        let lossy = |c: &Counters| (c.overruns, c.decode_errors, c.partial_events);
        let due = self.last_stats.elapsed() >= STATS_EVERY;
        if always || (due && lossy(&c) != lossy(&self.last_reported)) {
            let t = self.pipeline.table.stats();
            let sinks: Vec<String> = self
                .outputs
                .counters()
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            let fan = self
                .capture
                .as_ref()
                .map(|c| {
                    let f = c.stats();
                    let p = self.pending.stats;
                    format!(
                        " fanotify.events={} fanotify.answered={} fanotify.watchdog_answers={} \
                         fanotify.argv_read_errors={} fanotify.running_misses={} \
                         fanotify.mark_errors={} captures.matched={} captures.expired={} \
                         captures.dropped={}",
                        f.events,
                        f.answered,
                        f.watchdog_answers,
                        f.argv_read_errors,
                        f.syscall_running_misses,
                        f.mark_errors,
                        p.matched,
                        p.expired,
                        p.dropped_full
                    )
                })
                .unwrap_or_default();
            log::info!(
                "stats: execs={} forks={} exits={} alerts={} overruns={} decode_errors={} \
                 partial_events={} args_truncated={} rescans={} table_live={} table_evictions={} {}{}",
                c.execs,
                c.forks,
                c.exits,
                c.alerts,
                c.overruns,
                c.decode_errors,
                c.partial_events,
                c.args_truncated,
                c.rescans,
                t.live,
                t.evictions,
                sinks.join(" "),
                fan
            );
            self.last_reported = c;
            self.last_stats = Instant::now();
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
