//! `execsentry run`: set-up, the start-up self-check, and the single mio
//! event loop that drives the [`Pipeline`] from the proc connector and feeds
//! the outputs. Handlers never wait on a peer (sockets are non-blocking,
//! queues bounded); the slow paths (an overrun rescan) are deferred to
//! housekeeping, and timers set the poll timeout.

use std::collections::{BTreeMap, HashSet};
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
use crate::enrich::{self, ProcReader};
use crate::fanotify::{CaptureOptions, ExecCapture, FanotifyCapture, FanotifyError, Verdict};
use crate::netlink::{self, ProcConnector, wire};
use crate::pacing::{Mode, PACED_POLL, Pacing};
use crate::pipeline::{ExecOutcome, Pipeline};
use crate::privilege;
use crate::process_table::ProcessTable;
use crate::procfs::ProcFs;
use crate::rules::RuleSet;
use crate::seqgap::SeqGaps;
use crate::sink::Outputs;
use crate::status::{ControlServer, Features, Status};
use crate::tamper::{self, Tamper};

const NETLINK: Token = Token(0);
const SIGNALS: Token = Token(1);
const FANOTIFY: Token = Token(2);
const MOUNTS: Token = Token(3);
const CONTROL: Token = Token(4);
/// How often rule and config files are checked for non-root write access.
const FILE_CHECK_EVERY: Duration = Duration::from_secs(30);

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
/// The least time between two `/proc` rescans after overruns.
const RESYNC_EVERY: Duration = Duration::from_secs(5);
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

/// A failure caused by the user's input: config, rules (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadInput(pub String);

/// A setup failure that must name its likely cause and exit non-zero.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SetupError(pub String);

pub fn load_rules(paths: &[PathBuf]) -> Result<RuleSet> {
    load_rules_with(paths, crate::rules::Unsupported::Error)
}

/// [`load_rules`] under `sensor.unsupported_rules`; each skipped file is
/// logged with its `file:line:col` reasons.
pub fn load_rules_with(paths: &[PathBuf], mode: crate::rules::Unsupported) -> Result<RuleSet> {
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
    let set = RuleSet::load_with(&existing, mode).map_err(|e| anyhow::anyhow!("{e}"))?;
    for s in set.skipped() {
        log::warn!(
            "skipped rule file {} (unsupported_rules = \"skip\"): {}",
            s.file,
            s.reasons.join("; ")
        );
    }
    Ok(set)
}

/// An enabled `action = "deny"` rule without `sensor.enforce` would look
/// like protection and be none: refuse it, saying so.
pub fn check_enforcement(rules: &RuleSet, enforce: bool) -> Result<()> {
    let deny = rules.deny_rules();
    if !enforce && !deny.is_empty() {
        bail!(BadInput(format!(
            "rule(s) {} have action = \"deny\" but sensor.enforce is false: set \
             `enforce = true` in [sensor] to block, or disable the rule(s)",
            deny.join(", ")
        )));
    }
    Ok(())
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
    let rules = load_rules_with(&cfg.sensor.rules, cfg.sensor.unsupported_rules)?;
    check_enforcement(&rules, cfg.sensor.enforce)?;
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
    let mut reader = ProcReader::new(procfs, cfg.sensor.max_args_bytes);
    reader.env_vars = cfg.sensor.capture_env_vars.clone();
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
        pacing: Pacing::new(Instant::now()),
        outputs,
        pipeline,
        buf: vec![0u8; 64 * 1024],
        started: Instant::now(),
        self_check_pid: None,
        self_check_ok: false,
        last_stats: Instant::now(),
        last_losses: 0,
        stats_every: Duration::from_secs(cfg.sensor.stats_interval.max(1)),
        opts_config: opts.config_path.clone(),
        cli_rules: opts.cli_rules.clone(),
        rule_paths: cfg.sensor.rules.clone(),
        capture: None,
        pending: PendingCaptures::new(CAPTURE_PENDING_MAX, CAPTURE_MAX_AGE_MS),
        captured: Vec::new(),
        marked_containers: HashSet::new(),
        seq_gaps: SeqGaps::default(),
        resync_due: false,
        last_resync: Instant::now()
            .checked_sub(RESYNC_EVERY)
            .unwrap_or_else(Instant::now),
        deny_scratch: Vec::new(),
        denied: Vec::new(),
        enforce: cfg.sensor.enforce,
        blocked_execs: 0,
        control: None,
        started_at: enrich::rfc3339_nanos(crate::pipeline::now_nanos()),
        features: Features::default(),
        kept_caps: Vec::new(),
        tamper_alerts: 0,
        file_finding: None,
        last_file_check: Instant::now(),
    };
    lp.self_check(&mut signals)?;
    // After this point the sensor must never fork or exec: a child holding
    // the fanotify fd that blocked in its own exec would hang the host.
    // Before open: the capture's watchdog thread inherits the nice value.
    set_nice(GATING_NICE);
    let (capture, fanotify_state) = open_capture(&cfg)?;
    lp.capture = capture;
    match lp.capture.as_mut() {
        Some(c) => c.register(lp.poll.registry(), FANOTIFY, MOUNTS)?,
        None => set_nice(0),
    }
    let mode = if lp.capture.is_some() {
        "fanotify"
    } else {
        "proc"
    };

    lp.control = match ControlServer::bind(&opts.control) {
        Ok(mut c) => {
            lp.poll
                .registry()
                .register(c.source(), CONTROL, Interest::READABLE)?;
            Some(c)
        }
        Err(e) => {
            log::warn!("no control socket, `execsentry status` will not answer: {e}");
            None
        }
    };
    lp.features = Features {
        kernel: kernel_release(),
        proc_connector: true,
        fanotify: fanotify_state,
        cgroup: cgroup_version().into(),
        netlink_rcvbuf: lp.conn.rcvbuf(),
    };
    let kept =
        privilege::drop_capabilities(lp.capture.is_some()).context("dropping capabilities")?;
    log::info!("capabilities kept: {}", kept.join(" "));
    lp.kept_caps = kept;
    eprintln!(
        "execsentry: ready (capture={mode}, rules={}, processes={})",
        lp.pipeline.rules.len(),
        lp.pipeline.table.stats().live
    );
    privilege::notify_ready();
    lp.run(&mut signals)
}

/// Opens the fanotify capture as `sensor.capture` asks; see
/// [`choose_capture`]. Returns the capture and what `status` reports.
fn open_capture(cfg: &Config) -> Result<(Option<FanotifyCapture>, String)> {
    let opts = CaptureOptions {
        max_args_bytes: cfg.sensor.max_args_bytes,
        max_args: MAX_ARGS,
        enforce: cfg.sensor.enforce,
    };
    let mode = cfg.sensor.capture.as_str();
    let release = kernel_release();
    if mode != "proc"
        && let Err(why) = fanotify_kernel_ok(&release)
    {
        if mode == "fanotify" {
            return Err(SetupError(format!("fanotify capture: {why}")).into());
        }
        log::warn!("fanotify capture not used: {why}; using the proc connector alone");
        return Ok((None, format!("unavailable: {why}")));
    }
    let opened = (mode != "proc").then(|| FanotifyCapture::open(opts));
    Ok(choose_capture(mode, opened)?)
}

/// PURE. Before Linux 5.7, reading `/proc/<pid>/syscall` (and
/// process_vm_readv) takes the task's `cred_guard_mutex`, which an exec'ing
/// task holds while it waits for our permission answer: every argv read
/// would block until the watchdog let the exec go. 5.7 moved those readers
/// to `exec_update_mutex`, which exec takes only after the open.
pub fn fanotify_kernel_ok(release: &str) -> Result<(), String> {
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .filter(|p| !p.is_empty())
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let version = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    if version >= (5, 7) {
        Ok(())
    } else {
        Err(format!(
            "kernel {release} is older than 5.7, where reading an exec'ing task's argv \
             would block on its cred_guard_mutex"
        ))
    }
}

/// PURE. `auto` takes fanotify when the kernel and our capabilities allow
/// and says why not otherwise (old kernels answer EINVAL, kernels without
/// fanotify ENOSYS, a missing CAP_SYS_ADMIN EPERM); `fanotify` insists;
/// `proc` never tries.
pub fn choose_capture<C>(
    mode: &str,
    opened: Option<Result<C, FanotifyError>>,
) -> Result<(Option<C>, String), SetupError> {
    match (mode, opened) {
        ("proc", _) | (_, None) => Ok((None, "off".into())),
        (_, Some(Ok(c))) => Ok((Some(c), "active".into())),
        ("fanotify", Some(Err(e))) => Err(SetupError(format!("fanotify capture: {e}"))),
        (_, Some(Err(e))) => {
            log::warn!("fanotify capture unavailable ({e}); using the proc connector alone");
            Ok((None, format!("unavailable: {e}")))
        }
    }
}

fn kernel_release() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// `v2` (unified), `hybrid` (v1 with a unified hierarchy beside it) or
/// `v1`, from the filesystem mounted at /sys/fs/cgroup.
fn cgroup_version() -> &'static str {
    const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;
    let magic = |p: &str| {
        nix::sys::statfs::statfs(p)
            .map(|s| s.filesystem_type().0)
            .ok()
    };
    if magic("/sys/fs/cgroup") == Some(CGROUP2_SUPER_MAGIC) {
        "v2"
    } else if magic("/sys/fs/cgroup/unified") == Some(CGROUP2_SUPER_MAGIC) {
        "hybrid"
    } else {
        "v1"
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
    /// Whether the proc connector wakes the loop (see [`crate::pacing`]).
    pacing: Pacing,
    outputs: Outputs,
    pipeline: Pipeline,
    buf: Vec<u8>,
    started: Instant,
    self_check_pid: Option<u32>,
    self_check_ok: bool,
    last_stats: Instant,
    stats_every: Duration,
    /// Sum of the loss counters at the last `stats:` line.
    last_losses: u64,
    opts_config: Option<PathBuf>,
    cli_rules: Option<Vec<PathBuf>>,
    /// The rule paths in force (checked for tampering, reloaded on SIGHUP).
    rule_paths: Vec<PathBuf>,
    capture: Option<FanotifyCapture>,
    pending: PendingCaptures,
    /// Reused buffer for one drain of the capture.
    captured: Vec<ExecCapture>,
    marked_containers: HashSet<String>,
    seq_gaps: SeqGaps,
    /// Exits may have been lost in an overrun: rescan /proc when due.
    resync_due: bool,
    last_resync: Instant,
    deny_scratch: Vec<crate::rules::Match>,
    /// Execs refused during the current drain: (pid, event, rule).
    denied: Vec<(u32, crate::event::Event, crate::rules::Match)>,
    enforce: bool,
    blocked_execs: u64,
    control: Option<ControlServer>,
    started_at: String,
    features: Features,
    kept_caps: Vec<String>,
    tamper_alerts: u64,
    /// The last rule/config ownership finding, so each is alerted once.
    file_finding: Option<String>,
    last_file_check: Instant,
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
                    NETLINK => self.drain_netlink(),
                    FANOTIFY => self.drain_fanotify(),
                    CONTROL => self.serve_status(),
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
            if paced {
                self.drain_netlink();
            }
            if self.capture.is_some() {
                self.pace();
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
                if self.resync_due && self.last_resync.elapsed() >= RESYNC_EVERY {
                    self.resync_due = false;
                    self.last_resync = Instant::now();
                    self.pipeline.resync(now_ms);
                }
                self.log_counters(false);
                if self.last_file_check.elapsed() >= FILE_CHECK_EVERY {
                    self.last_file_check = Instant::now();
                    self.check_files();
                }
            }
        }
    }

    /// Switches the proc connector between waking the loop and being read
    /// on the loop's schedule, by the message rate (fanotify mode only:
    /// there the permission events keep the loop turning under load).
    fn pace(&mut self) {
        let switched = match self.pacing.decide(Instant::now()) {
            Some(Mode::Paced) => self.poll.registry().deregister(&mut self.conn),
            Some(Mode::Eager) => {
                let r = self
                    .poll
                    .registry()
                    .register(&mut self.conn, NETLINK, Interest::READABLE);
                self.drain_netlink();
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

    /// Reads until the socket would block: the kernel queue is the only
    /// buffer between us and an overrun.
    fn drain_netlink(&mut self) {
        loop {
            let n = match self.conn.recv(&mut self.buf) {
                Ok(0) => return,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if netlink::is_overrun(&e) => {
                    // The rescan runs from housekeeping, at most every few
                    // seconds: done here, under the storm that caused the
                    // overrun, it would cause the next one.
                    self.pipeline.counters.overruns += 1;
                    self.resync_due = true;
                    continue;
                }
                Err(e) => {
                    log::warn!("netlink receive failed: {e}");
                    return;
                }
            };
            self.pacing.read(1);
            // Lend the buffer out so handlers can borrow self mutably.
            let buf = std::mem::take(&mut self.buf);
            for item in wire::decode_records(&buf[..n]) {
                match item {
                    Ok(rec) => {
                        if rec.ack == 0 {
                            self.pipeline.counters.lost_events +=
                                self.seq_gaps.observe(rec.cpu, rec.seq);
                        }
                        self.on_kernel(rec.event)
                    }
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
        let pipeline = &mut self.pipeline;
        let scratch = &mut self.deny_scratch;
        let decided = &mut self.denied;
        // Only called with `sensor.enforce`; it runs while the exec waits.
        // What it decided on is kept, so the alert for a refused exec says
        // exactly why, without a second look at /proc.
        let mut decide = |cap: &ExecCapture| {
            let ev = pipeline.permission_event(cap);
            match pipeline.rules.denies(&ev, scratch) {
                Some(m) => {
                    decided.push((cap.pid, ev, m));
                    Verdict::Deny
                }
                None => Verdict::Allow,
            }
        };
        c.drain(&mut decide, &mut self.captured);
        let now_ms = self.now_ms();
        let captured = std::mem::take(&mut self.captured);
        for cap in captured {
            if cap.verdict == Verdict::Deny {
                // The exec fails with EPERM: no exec event will follow, so
                // the alert is made here, from the permission-time facts.
                self.blocked(cap.pid);
            } else if cap.args_read {
                self.pending.push(cap, now_ms);
            }
        }
        // Decisions the watchdog overtook (it allowed the exec first).
        self.denied.clear();
    }

    fn on_kernel(&mut self, ev: wire::KernelEvent) {
        let now_ms = self.now_ms();
        let outcome = match ev {
            wire::KernelEvent::Ptrace {
                tgid, tracer_tgid, ..
            } if tgid == std::process::id() && tracer_tgid != 0 => {
                let detail = format!("ptrace attach by pid {tracer_tgid}");
                self.tamper(Tamper::Ptrace, tracer_tgid, &detail);
                None
            }
            wire::KernelEvent::Exec { tgid, .. } => {
                // The permission event may still sit unread in the fanotify
                // queue: the exec event can overtake it.
                if self.capture.is_some() {
                    self.drain_fanotify();
                }
                // With captures pending, stat comes first: its comm picks the
                // capture of this very exec. The directory and stat are
                // handed on, so neither is read twice.
                let opened = if self.pending.is_empty() {
                    None
                } else {
                    self.pipeline
                        .reader
                        .procfs
                        .dir(tgid)
                        .ok()
                        .and_then(|mut d| {
                            let st = d.stat(tgid).ok()?;
                            Some((d, st))
                        })
                };
                let comm = opened.as_ref().map(|(_, s)| s.comm.as_slice());
                let cap = self.pending.take_for(tgid, comm);
                Some(self.pipeline.on_exec(tgid, cap, opened))
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

    fn blocked(&mut self, pid: u32) {
        let Some(i) = self.denied.iter().position(|(p, _, _)| *p == pid) else {
            return;
        };
        let (_, ev, m) = self.denied.swap_remove(i);
        let mut alert = self.pipeline.rules.alert(&ev, &m);
        alert.event.outcome = Some("blocked".into());
        self.pipeline.counters.alerts += 1;
        self.blocked_execs += 1;
        self.outputs.emit(&alert);
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
                Ok(sig @ (Signal::SIGTERM | Signal::SIGINT)) => {
                    let detail = format!("{sig} from pid {} (uid {})", info.ssi_pid, info.ssi_uid);
                    self.tamper(Tamper::Signal(sig as i32), info.ssi_pid, &detail);
                    return Control::Stop;
                }
                _ => {}
            }
        }
        Control::Continue
    }

    /// SIGHUP: reload rules (and the rule paths from the config); a broken
    /// file keeps the running rule set.
    fn reload(&mut self) {
        self.outputs.reopen();
        if let Ok(text) = std::fs::read_to_string("/etc/passwd") {
            self.pipeline.host.users = enrich::parse_passwd(&text);
        }
        // The config is read once: its rule paths are what gets reloaded.
        let mut mode = crate::rules::Unsupported::Error;
        let paths = match (&self.cli_rules, &self.opts_config) {
            (Some(r), _) => r.clone(),
            (None, Some(path)) => match Config::load(path) {
                Ok(c) => {
                    mode = c.sensor.unsupported_rules;
                    c.sensor.rules
                }
                Err(e) => {
                    log::error!("reload: {e}; keeping the running configuration");
                    return;
                }
            },
            (None, None) => Config::default().sensor.rules,
        };
        match load_rules_with(&paths, mode).and_then(|r| {
            check_enforcement(&r, self.enforce)?;
            Ok(r)
        }) {
            Ok(r) => {
                log::info!("reloaded {} rules", r.len());
                self.pipeline.replace_rules(r);
                self.rule_paths = paths;
            }
            Err(e) => log::error!("reload: {e:#}; keeping the running rule set"),
        }
    }

    /// One self-log line when a loss counter moved (or on exit).
    fn log_counters(&mut self, always: bool) {
        let due = self.last_stats.elapsed() >= self.stats_every;
        if !always && !due {
            return;
        }
        let counters = self.counters();
        let losses: u64 = counters
            .iter()
            .filter(|(k, _)| crate::status::is_loss(k))
            .map(|(_, v)| *v)
            .sum();
        if always || losses != self.last_losses {
            let mut line: Vec<String> = counters.iter().map(|(k, v)| format!("{k}={v}")).collect();
            if let Some((p50, p99)) = self.capture.as_ref().and_then(|c| c.answer_latency_us()) {
                line.push(format!(
                    "fanotify.answer_us_p50={p50:.1} fanotify.answer_us_p99={p99:.1}"
                ));
            }
            log::info!("stats: {}", line.join(" "));
            self.last_losses = losses;
        }
        self.last_stats = Instant::now();
    }

    /// Every counter, by stable name: pipeline and caches first, then the
    /// capture and the outputs.
    fn counters(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        self.pipeline.counter_map(&mut out);
        if let Some(c) = &self.capture {
            let f = c.stats();
            let p = self.pending.stats;
            for (k, v) in [
                ("fanotify.events", f.events),
                ("fanotify.answered", f.answered),
                ("fanotify.denied", f.denied),
                ("fanotify.watchdog_answers", f.watchdog_answers),
                ("fanotify.deferred", f.deferred),
                ("fanotify.argv_read_errors", f.argv_read_errors),
                ("fanotify.running_misses", f.syscall_running_misses),
                ("fanotify.marks", f.marks),
                ("fanotify.mark_errors", f.mark_errors),
                ("captures.matched", p.matched),
                ("captures.mismatched", p.mismatched),
                ("captures.expired", p.expired),
                ("captures.dropped", p.dropped_full),
            ] {
                out.insert(k.to_string(), v);
            }
        }
        out.extend(
            self.outputs
                .counters()
                .into_iter()
                .map(|(k, v)| (k.to_string(), v)),
        );
        out.insert("tamper_alerts".into(), self.tamper_alerts);
        out.insert("blocked_execs".into(), self.blocked_execs);
        out
    }

    /// `execsentry status`: everything above plus what was chosen at start.
    fn status(&self) -> Status {
        let counters = self.counters();
        let up = self.started.elapsed();
        let execs = counters.get("execs").copied().unwrap_or(0);
        let evals = self.pipeline.counters.execs.max(1);
        Status {
            version: env!("CARGO_PKG_VERSION").to_string(),
            pid: std::process::id(),
            started: self.started_at.clone(),
            uptime_secs: up.as_secs(),
            capture: if self.capture.is_some() {
                "fanotify"
            } else {
                "proc"
            }
            .into(),
            features: self.features.clone(),
            capabilities: self.kept_caps.clone(),
            rules: self.pipeline.rules.len(),
            rule_eval_ns: self.pipeline.counters.rule_eval_ns / evals,
            execs_per_sec: execs as f64 / up.as_secs_f64().max(1e-3),
            answer_latency_us: self
                .capture
                .as_ref()
                .and_then(|c| c.answer_latency_us())
                .map(|(p50, p99)| [p50, p99]),
            counters,
        }
    }

    fn serve_status(&mut self) {
        let reply = match serde_json::to_vec(&self.status()) {
            Ok(mut v) => {
                v.push(b'\n');
                v
            }
            Err(_) => return,
        };
        if let Some(c) = self.control.as_mut() {
            c.serve(&reply);
        }
    }

    /// Someone went for the sensor: alert with the actor's process facts.
    fn tamper(&mut self, what: Tamper, actor_pid: u32, detail: &str) {
        let actor = if actor_pid == 0 {
            crate::event::Event::default()
        } else {
            self.pipeline.describe(actor_pid)
        };
        let alert = tamper::alert(actor, what, detail);
        log::warn!("{}", alert.message.as_deref().unwrap_or_default());
        self.tamper_alerts += 1;
        self.outputs.emit(&alert);
    }

    /// Rules and configuration decide what the sensor reports: raise an
    /// alert (once per distinct finding) when they become writable by
    /// someone other than root.
    fn check_files(&mut self) {
        let mut paths = self.rule_paths.clone();
        paths.extend(self.opts_config.clone());
        paths.retain(|p| p.exists());
        let finding = privilege::check_owned_by_root(&paths)
            .err()
            .map(|e| e.to_string());
        if finding != self.file_finding {
            if let Some(f) = &finding {
                self.tamper(Tamper::Files, 0, f);
            }
            self.file_finding = finding;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(errno: i32) -> FanotifyError {
        let e = io::Error::from_raw_os_error(errno);
        match errno {
            libc::ENOSYS => FanotifyError::NoFanotify(e),
            libc::EPERM => FanotifyError::NeedsCapSysAdmin {
                op: "fanotify_init",
                source: e,
            },
            _ => FanotifyError::NoExecPermission(e),
        }
    }

    #[test]
    fn auto_falls_back_to_proc_and_says_why_on_old_kernels() {
        for errno in [libc::EINVAL, libc::ENOSYS, libc::EPERM] {
            let (c, state) = choose_capture::<()>("auto", Some(Err(refused(errno)))).unwrap();
            assert!(c.is_none());
            assert!(state.starts_with("unavailable: "), "{state}");
        }
        let (_, state) = choose_capture::<()>("auto", Some(Err(refused(libc::EINVAL)))).unwrap();
        assert!(state.contains("older than 5.0"), "{state}");
    }

    #[test]
    fn kernels_before_5_7_do_not_get_fanotify() {
        for ok in ["5.7.0", "5.10.0-28-amd64", "6.18.44-fc-v657", "10.1"] {
            assert!(fanotify_kernel_ok(ok).is_ok(), "{ok}");
        }
        for old in [
            "3.10.0-1160.el7.x86_64",
            "4.19.0",
            "5.4.0-42-generic",
            "5.6.19",
            "",
        ] {
            assert!(fanotify_kernel_ok(old).is_err(), "{old}");
        }
    }

    #[test]
    fn fanotify_mode_refuses_to_run_without_it() {
        let err = choose_capture::<()>("fanotify", Some(Err(refused(libc::EPERM)))).unwrap_err();
        assert!(err.0.contains("CAP_SYS_ADMIN"), "{}", err.0);
    }

    #[test]
    fn proc_mode_never_opens_and_auto_takes_what_opened() {
        assert_eq!(
            choose_capture::<u8>("proc", None).unwrap(),
            (None, "off".into())
        );
        assert_eq!(
            choose_capture("auto", Some(Ok(7u8))).unwrap(),
            (Some(7), "active".into())
        );
    }
}
