//! Set-up of `run`: rules and outputs, the proc connector, the capture
//! source `sensor.capture` asks for, the start-up self-check, capabilities
//! dropped, readiness.

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

use super::{CONTROL, Flow, Loop, NETLINK, SIGNALS, SOURCE_FIRST, poll_retrying};
use crate::capture::CaptureSource;
use crate::capture::kprobe::{KprobeSource, Options as KprobeOptions};
use crate::config::Config;
use crate::enrich::{self, ProcReader};
use crate::event::Event;
use crate::fanotify::{CaptureOptions, FanotifyCapture, FanotifyError, ThreadedCapture};
use crate::netlink::ProcConnector;
use crate::netlink::reader::KernelReader;
use crate::pacing::Pacing;
use crate::pipeline::Pipeline;
use crate::privilege;
use crate::process_table::ProcessTable;
use crate::procfs::ProcFs;
use crate::rules::RuleSet;
use crate::sink::Outputs;
use crate::status::{ControlServer, Features};

/// How long an exited process stays in the table for its children's events.
const EXIT_GRACE_MS: u64 = 5_000;
/// The self-check's deadline: the kernel delivers an exec event in
/// microseconds, so two seconds of silence means we are not subscribed.
const SELF_CHECK: Duration = Duration::from_secs(2);

/// Exit codes, documented in the README.
pub const EXIT_SETUP: i32 = 3;

/// What `run` was asked for, after the CLI overrides were applied.
pub struct RunOptions {
    pub config: Config,
    pub config_path: Option<PathBuf>,
    pub cli_rules: Option<Vec<PathBuf>>,
    pub cli_stdout: bool,
    pub cli_events: bool,
    /// `run --capture`, already applied to `config`; kept so a reload
    /// applies it over the re-read file too.
    pub cli_capture: Option<String>,
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

/// [`load_rules`] under `sensor.unsupported_rules`.
pub fn load_rules_with(paths: &[PathBuf], mode: crate::rules::Unsupported) -> Result<RuleSet> {
    Ok(crate::rule_paths::load_with(
        paths,
        crate::rule_paths::Origin::Config,
        mode,
    )?)
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

/// What the command line says over the config file, at start and on every
/// reload.
#[derive(Debug, Clone, Default)]
pub struct CliOverrides {
    pub rules: Option<Vec<PathBuf>>,
    pub stdout: bool,
    pub events: bool,
    pub capture: Option<String>,
}

impl CliOverrides {
    pub fn apply(&self, file: &Config) -> Config {
        let mut cfg = file.clone();
        if let Some(r) = &self.rules {
            cfg.sensor.rules = r.clone();
        }
        if self.stdout {
            cfg.stdout_only();
        }
        if self.events {
            cfg.sensor.emit_events = true;
        }
        if let Some(c) = &self.capture {
            cfg.sensor.capture = c.clone();
        }
        cfg
    }
}

fn apply_overrides(opts: &RunOptions) -> (Config, CliOverrides) {
    let cli = CliOverrides {
        rules: opts.cli_rules.clone(),
        stdout: opts.cli_stdout,
        events: opts.cli_events,
        capture: opts.cli_capture.clone(),
    };
    (cli.apply(&opts.config), cli)
}

pub fn run(opts: RunOptions) -> Result<()> {
    crate::stages::enable_from_env();
    let (cfg, cli) = apply_overrides(&opts);
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
        kernel: KernelReader::new(conn),
        pacing: Pacing::new(Instant::now()),
        outputs,
        pipeline,
        emitted: Vec::new(),
        batch: Vec::new(),
        started: Instant::now(),
        self_check: SelfCheck::default(),
        resync_due: false,
        last_resync: Instant::now()
            .checked_sub(super::RESYNC_EVERY)
            .unwrap_or_else(Instant::now),
        reload: super::reload::Reload::new(opts.config_path.clone(), cli, cfg.clone()),
        control: super::control::Control {
            server: None,
            started_at: enrich::rfc3339_nanos(crate::pipeline::now_nanos()),
            features: Features::default(),
            kept_caps: Vec::new(),
            capture: "proc".into(),
        },
        stats: super::stats::StatsLine::new(Duration::from_secs(cfg.sensor.stats_interval.max(1))),
        files: super::files::FileCheck::new(opts.config_path.clone()),
        notifier: crate::sdnotify::Notifier::from_env(),
    };
    lp.self_check(&mut signals)?;
    // After this point the sensor must never fork or exec: a child holding
    // the fanotify fd that blocked in its own exec would hang the host.
    // Before open: the capture's watchdog thread inherits the nice value.
    set_nice(GATING_NICE);
    let (source, kprobe_state, fanotify_state) = open_capture(&cfg)?;
    let gating = source
        .as_ref()
        .is_some_and(|s| s.source() == crate::capture::ArgsSource::Fanotify);
    if !gating {
        set_nice(0);
    }
    if let Some(mut s) = source {
        s.register(lp.poll.registry(), Token(SOURCE_FIRST))?;
        lp.control.capture = s.source().as_str().into();
        lp.pipeline.set_source(s);
    }

    lp.control.server = match ControlServer::bind(&opts.control) {
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
    lp.control.features = Features {
        kernel: kernel_release(),
        proc_connector: true,
        fanotify: fanotify_state,
        kprobe: kprobe_state,
        cgroup: cgroup_version().into(),
        netlink_rcvbuf: lp.kernel.conn.rcvbuf(),
    };
    let kept = privilege::drop_capabilities(gating).context("dropping capabilities")?;
    log::info!("capabilities kept: {}", kept.join(" "));
    lp.control.kept_caps = kept;
    eprintln!(
        "execsentry: ready (capture={}, rules={}, processes={})",
        lp.control.capture,
        lp.pipeline.rules.len(),
        lp.pipeline.table.stats().live
    );
    lp.notifier.ready();
    lp.run(&mut signals)
}

/// The source `sensor.capture` asks for: `kprobe` (complete and never
/// gating) first under `auto`, unless enforcement needs fanotify's
/// verdict; then fanotify as [`choose_capture`] decides. Returns the
/// source and what `status` reports for kprobe and fanotify.
#[allow(clippy::type_complexity)]
fn open_capture(cfg: &Config) -> Result<(Option<Box<dyn CaptureSource>>, String, String)> {
    let mode = cfg.sensor.capture.as_str();
    let kprobe_state = if mode == "kprobe" || (mode == "auto" && !cfg.sensor.enforce) {
        let kopts = KprobeOptions {
            env: !cfg.sensor.capture_env_vars.is_empty(),
            ring_pages: cfg.sensor.kprobe_ring_pages,
            ..KprobeOptions::new(cfg.sensor.max_args_bytes)
        };
        match KprobeSource::open(kopts) {
            Ok(k) => {
                log::info!(
                    "kprobe capture: probe {} on {}{}",
                    k.group(),
                    crate::capture::kprobe::probes::SYMBOL,
                    if k.compat() {
                        " and compat_start_thread (32-bit execs)"
                    } else {
                        ""
                    }
                );
                return Ok((Some(Box::new(k)), "active".into(), "off".into()));
            }
            Err(u) if mode == "kprobe" => return Err(SetupError(u.to_string()).into()),
            Err(u) => {
                log::warn!("{u}; trying fanotify");
                format!("unavailable: {}", u.reason)
            }
        }
    } else if mode == "auto" {
        log::info!("kprobe capture not tried: enforce = true needs fanotify's verdict");
        "off (enforce)".into()
    } else {
        "off".into()
    };
    let (source, fanotify_state) = open_fanotify(cfg)?;
    Ok((source, kprobe_state, fanotify_state))
}

/// Opens the fanotify capture as `sensor.capture` asks; see
/// [`choose_capture`]. Returns the capture and what `status` reports.
fn open_fanotify(cfg: &Config) -> Result<(Option<Box<dyn CaptureSource>>, String)> {
    let opts = CaptureOptions {
        max_args_bytes: cfg.sensor.max_args_bytes,
        max_args: MAX_ARGS,
        enforce: cfg.sensor.enforce,
        env: !cfg.sensor.capture_env_vars.is_empty(),
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
    let (capture, state) = choose_capture(mode, opened)?;
    // Without enforcement the handshake runs on its own thread, so a
    // waiting exec never waits for the pipeline (see fanotify::threaded).
    let capture = match capture {
        Some(c) if !opts.enforce => Some(Box::new(
            ThreadedCapture::new(c).context("fanotify: the handshake thread")?,
        ) as Box<dyn CaptureSource>),
        c => c.map(|c| Box::new(c) as Box<dyn CaptureSource>),
    };
    Ok((capture, state))
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

/// The self-check's exec: its pid until its event passed the pipeline.
#[derive(Default)]
pub(super) struct SelfCheck {
    pid: Option<u32>,
    ok: bool,
}

impl SelfCheck {
    pub(super) fn saw(&mut self, ev: &Event) {
        if self.pid.is_some() && Some(ev.process.pid) == self.pid {
            self.ok = true;
            self.pid = None;
        }
    }
}

impl Loop {
    /// Never sit silently deaf: prove that exec events arrive before saying
    /// ready. The kernel ignores subscriptions from outside the initial user
    /// and pid namespaces without an error, so this is the only way to know.
    fn self_check(&mut self, signals: &mut SignalFd) -> Result<()> {
        let mut child = Command::new("/bin/true")
            .spawn()
            .context("spawning /bin/true for the self-check")?;
        self.self_check.pid = Some(child.id());
        let deadline = Instant::now() + SELF_CHECK;
        let mut events = Events::with_capacity(64);
        while !self.self_check.ok {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            poll_retrying(&mut self.poll, &mut events, Some(deadline - now))?;
            for ev in events.iter() {
                if ev.token() == NETLINK {
                    self.on_netlink();
                } else if ev.token() == SIGNALS {
                    if let Flow::Stop = self.on_signals(signals) {
                        let _ = child.wait();
                        bail!("stopped by a signal during the self-check");
                    }
                } else {
                    self.outputs.handle(self.poll.registry(), ev);
                }
            }
        }
        let _ = child.wait();
        if !self.self_check.ok {
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
