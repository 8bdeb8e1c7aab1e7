//! Turning a kernel exec notification into an ECS [`Event`]: the one place
//! that mixes `/proc` reads, the process table and container detection.
//!
//! [`ProcReader::read`] (in `proc_reader`) does the I/O, as soon as possible
//! after the event since short-lived processes vanish; [`build_event`] is
//! pure, so the shaping of events is tested from fixtures.

use std::collections::HashMap;
use std::io;
use std::sync::Arc;

use crate::bytes;
use crate::container::{self, ContainerInfo};
use crate::event::{
    Capabilities, CharDevice, Container, EcsGroup, EcsUser, Event, EventMeta, Group, Host, HostOs,
    IdExt, Namespaces, Orchestrator, OrchestratorResource, Parent, Process, SensorFacts, Thread,
    Tty, User,
};
use crate::process_table::{Entry, Image, MAX_IMAGE_ARGS_BYTES, ProcKey, ProcessTable};
use crate::procfs::{self, ProcFs, Stat, Status};
use crate::session::{self, SelfFacts};

pub use crate::proc_reader::ProcReader;

/// Facts about the host, read once at start.
#[derive(Debug, Clone, Default)]
pub struct HostContext {
    pub hostname: String,
    /// The sensor's own namespaces: the reference for "not the host".
    pub host_ns: Namespaces,
    pub boot_time_secs: u64,
    pub clock_ticks: u64,
    /// Seed for `process.entity_id`: machine id and boot id, so ids are
    /// stable across sensor restarts but never collide across reboots.
    pub id_seed: u64,
    pub users: HashMap<u32, String>,
}

/// Everything `/proc` told us about one process. Fields are `None` when the
/// process vanished before they could be read.
#[derive(Debug, Clone, Default)]
pub struct ProcFacts {
    pub pid: u32,
    pub stat: Option<Stat>,
    pub status: Option<Status>,
    pub cmdline: Vec<u8>,
    pub cmdline_truncated: bool,
    pub exe: Option<Vec<u8>>,
    pub cwd: Option<Vec<u8>>,
    pub cgroup: String,
    pub ns: Option<Namespaces>,
    pub loginuid: Option<u32>,
    pub sessionid: Option<u32>,
    /// argv and executable came from a capture source, not `/proc`.
    pub captured: bool,
    /// Which source (`execsentry.args_source`); empty: fanotify.
    pub capture_source: &'static str,
    /// The container already known for this process (from the table), used
    /// when its cgroup and namespaces were not read.
    pub known_container: Option<ContainerInfo>,
    pub interpreter: Option<Vec<u8>>,
    /// The executable's identity at exec time, from a capture.
    pub exe_file: Option<crate::identity::FileKey>,
    /// `process.env_vars` (see [`crate::envvars`]) and where they came from.
    pub env_vars: Vec<String>,
    pub env_vars_source: Option<&'static str>,
    /// A listed variable did not fit in the byte budget.
    pub env_vars_truncated: bool,
    /// The process was reaped before everything was read, or its directory
    /// could not be opened: nothing more is to be had of `/proc/<pid>`,
    /// whose pid may be another process's by now.
    pub gone: bool,
}

impl ProcFacts {
    /// Fills `process.env_vars` from an exec's `envp` (a capture source's),
    /// keeping only `names`, within what the args left of `budget` bytes.
    pub fn set_env_from_envp(&mut self, envp: &[u8], names: &[String], budget: usize) {
        if names.is_empty() {
            return;
        }
        let left = budget.saturating_sub(self.cmdline.len());
        let (vars, cut) = crate::envvars::filter(envp, names, left);
        self.env_vars = vars;
        self.env_vars_truncated = cut;
        self.env_vars_source = Some(crate::envvars::FROM_CAPTURE);
    }
}

impl ProcFacts {
    pub fn start_ticks(&self) -> u64 {
        self.stat.as_ref().map_or(0, |s| s.start_ticks)
    }
}

/// Where the argv of an event came from.
pub const ARGS_PROC: &str = "proc";
pub const ARGS_COMM: &str = "comm";
pub const ARGS_FANOTIFY: &str = "fanotify";

/// The per-event inputs besides the `/proc` facts.
pub struct EventInput<'a> {
    pub facts: &'a ProcFacts,
    pub parent: Option<&'a Entry>,
    pub parent_pid: u32,
    /// For `process.session_leader` / `group_leader` (none: not looked up).
    pub table: Option<&'a ProcessTable>,
    pub host: &'a HostContext,
    pub sequence: u64,
    pub event_id: String,
    pub timestamp: String,
}

/// Shapes the ECS event for an exec. PURE.
pub fn build_event(inp: &EventInput<'_>) -> Event {
    let f = inp.facts;
    let host = inp.host;
    let (args, escaped) = render_args(&f.cmdline);
    let comm = f
        .stat
        .as_ref()
        .map(|s| bytes::render(&s.comm).0.into_owned())
        .unwrap_or_default();
    let executable = f
        .exe
        .as_deref()
        .map(|e| bytes::render(e).0.into_owned())
        .unwrap_or_default();
    let (args, args_source, args_complete) = if args.is_empty() {
        let fallback = if comm.is_empty() {
            vec![]
        } else {
            vec![comm.clone()]
        };
        (fallback, ARGS_COMM, false)
    } else if f.captured {
        let source = if f.capture_source.is_empty() {
            ARGS_FANOTIFY
        } else {
            f.capture_source
        };
        (args, source, !f.cmdline_truncated)
    } else {
        (args, ARGS_PROC, !f.cmdline_truncated)
    };
    let name = process_name(&comm, &executable, args.first().map(String::as_str));
    let container = match &f.ns {
        Some(ns) => container::detect(&f.cgroup, ns, &host.host_ns),
        // Gone before its namespaces were read: its cgroup, when a capture
        // source read it in time, still names the container.
        None => container::from_cgroup(&f.cgroup),
    }
    .or_else(|| f.known_container.clone());
    let (uid, gid, ruid, rgid, caps) = match &f.status {
        Some(s) => (
            Some(s.uid[1]),
            Some(s.gid[1]),
            Some(s.uid[0]),
            Some(s.gid[0]),
            procfs::cap_names(s.cap_eff),
        ),
        None => (None, None, None, None, vec![]),
    };
    let tty_nr = f.stat.as_ref().map_or(0, |s| s.tty_nr);
    let key = ProcKey {
        pid: f.pid,
        start_ticks: f.start_ticks(),
    };
    let eid = entity_id(host.id_seed, key);
    let command_line = bytes::command_line(&args);
    let me = SelfFacts {
        key,
        entity_id: &eid,
        name: &name,
        executable: &executable,
        args: &args,
        session: f.stat.as_ref().map_or(0, |s| s.session),
        pgrp: f.stat.as_ref().map_or(0, |s| s.pgrp),
        tty_nr,
        container: container.as_ref(),
    };
    let entry_leader = session::entry_leader(&me, inp.parent);
    let (session_leader, group_leader) =
        session::leaders(&me, inp.table, &|k| entity_id(host.id_seed, k));
    let user_name = uid
        .filter(|_| container.is_none())
        .and_then(|u| host.users.get(&u).cloned());
    let id_str = |v: Option<u32>| v.map(|u| u.to_string()).unwrap_or_default();
    let top_user = uid.map(|u| EcsUser {
        id: u.to_string(),
        name: user_name.clone(),
        ext: ruid.map(|r| IdExt {
            real: Some(Group { id: r.to_string() }),
        }),
    });
    let top_group = gid.map(|g| EcsGroup {
        id: g.to_string(),
        ext: rgid.map(|r| IdExt {
            real: Some(Group { id: r.to_string() }),
        }),
    });
    let process = Process {
        pid: f.pid,
        entity_id: eid.clone(),
        executable,
        name,
        args_count: args.len() as u32,
        command_line,
        args,
        working_directory: f.cwd.as_deref().map(|c| bytes::render(c).0.into_owned()),
        start: f.stat.as_ref().map(|s| start_time(host, s.start_ticks)),
        interactive: tty_nr != 0,
        tty: procfs::tty_major_minor(tty_nr).map(|(major, minor)| Tty {
            char_device: CharDevice { major, minor },
        }),
        user: User {
            id: id_str(uid),
            // Names come from the host's passwd, which says nothing about
            // users inside a container.
            name: user_name,
        },
        group: Group { id: id_str(gid) },
        real_user: ruid.map(|r| User {
            id: r.to_string(),
            name: None,
        }),
        real_group: rgid.map(|r| Group { id: r.to_string() }),
        thread: (!caps.is_empty()).then_some(Thread {
            capabilities: Capabilities { effective: caps },
        }),
        parent: parent_fields(inp.parent, inp.parent_pid, host.id_seed),
        entry_leader,
        session_leader,
        group_leader,
        env_vars: f.env_vars.clone(),
        // Filled by `identity` after the event is shaped.
        hash: None,
    };
    let orchestrator = container.as_ref().and_then(orchestrator_of);
    Event {
        timestamp: inp.timestamp.clone(),
        event: EventMeta {
            kind: "event".into(),
            category: vec!["process".into()],
            kind_type: vec!["start".into()],
            action: "exec".into(),
            id: inp.event_id.clone(),
            sequence: inp.sequence,
            ..Default::default()
        },
        host: Host {
            hostname: host.hostname.clone(),
            os: HostOs {
                os_type: "linux".into(),
            },
        },
        process,
        user: top_user,
        group: top_group,
        container: container.as_ref().map(|c| Container {
            id: c.id.clone(),
            runtime: c.runtime.into(),
            name: c.name.clone(),
            ..Default::default()
        }),
        orchestrator,
        execsentry: SensorFacts {
            args_complete,
            args_source: args_source.into(),
            args_escaped: escaped,
            args_truncated: f.cmdline_truncated,
            loginuid: f.loginuid,
            sessionid: f.sessionid,
            ns: f.ns,
            start_ticks: key.start_ticks,
            interpreter: f
                .interpreter
                .as_deref()
                .map(|i| bytes::render(i).0.into_owned()),
            env_vars_source: f.env_vars_source.map(str::to_string),
            env_vars_truncated: f.env_vars_truncated,
            exe: None,
            stalled: Vec::new(),
        },
        ..Default::default()
    }
}

/// What the table keeps of a process for its children, from its event.
pub fn image_of(ev: &Event, container: Option<ContainerInfo>) -> Arc<Image> {
    let p = &ev.process;
    let mut budget = MAX_IMAGE_ARGS_BYTES;
    let args = p
        .args
        .iter()
        .take_while(|a| {
            let fits = a.len() <= budget;
            budget = budget.saturating_sub(a.len());
            fits
        })
        .cloned()
        .collect();
    let mut command_line = p.command_line.clone();
    if command_line.len() > MAX_IMAGE_ARGS_BYTES {
        let mut cut = MAX_IMAGE_ARGS_BYTES;
        while !command_line.is_char_boundary(cut) {
            cut -= 1;
        }
        command_line.truncate(cut);
    }
    Arc::new(Image {
        name: p.name.clone(),
        executable: p.executable.clone(),
        args,
        command_line,
        container,
        args_count: p.args_count,
        user_id: p.user.id.clone(),
        group_id: p.group.id.clone(),
        working_directory: p.working_directory.clone(),
        interactive: p.interactive,
        entry_leader: session::inheritable(p.entry_leader.as_ref()),
    })
}

/// The container of an event, in the form the table keeps.
pub fn container_of(ev: &Event) -> Option<ContainerInfo> {
    let c = ev.container.as_ref()?;
    Some(ContainerInfo {
        id: c.id.clone(),
        runtime: runtime_str(&c.runtime),
        pod_uid: ev.orchestrator.as_ref().and_then(|o| o.resource.id.clone()),
        name: c.name.clone(),
    })
}

fn runtime_str(r: &str) -> &'static str {
    container::RUNTIMES
        .iter()
        .find(|k| **k == r)
        .copied()
        .unwrap_or("unknown")
}

fn orchestrator_of(c: &ContainerInfo) -> Option<Orchestrator> {
    let uid = c.pod_uid.clone()?;
    Some(Orchestrator {
        orchestrator_type: "kubernetes".into(),
        namespace: None,
        resource: OrchestratorResource {
            id: Some(uid),
            name: None,
            resource_type: Some("pod".into()),
            ..Default::default()
        },
    })
}

fn parent_fields(parent: Option<&Entry>, ppid: u32, seed: u64) -> Parent {
    let Some(p) = parent else {
        return Parent {
            pid: ppid,
            ..Default::default()
        };
    };
    Parent {
        pid: p.key.pid,
        entity_id: entity_id(seed, p.key),
        executable: p.image.executable.clone(),
        name: p.image.name.clone(),
        args: p.image.args.clone(),
        args_count: (p.image.args_count > 0).then_some(p.image.args_count),
        command_line: p.image.command_line.clone(),
        start: None,
        working_directory: p.image.working_directory.clone(),
        // Known only once the parent was enriched (not a fork-only entry).
        interactive: (!p.image.executable.is_empty()).then_some(p.image.interactive),
        user: (!p.image.user_id.is_empty()).then(|| User {
            id: p.image.user_id.clone(),
            name: None,
        }),
        group: (!p.image.group_id.is_empty()).then(|| Group {
            id: p.image.group_id.clone(),
        }),
    }
}

/// Splits a raw cmdline into rendered arguments and the indexes that needed
/// escaping (see [`crate::bytes`]).
pub fn render_args(cmdline: &[u8]) -> (Vec<String>, Vec<u32>) {
    let mut args = Vec::new();
    let mut escaped = Vec::new();
    for (i, a) in procfs::split_cmdline(cmdline).enumerate() {
        let (text, esc) = bytes::render(a);
        if esc {
            escaped.push(i as u32);
        }
        args.push(text.into_owned());
    }
    (args, escaped)
}

/// ECS `process.name`. The kernel's comm is the basename of the path given
/// to execve (so a busybox symlink keeps its own name) but is cut at 15
/// bytes; only a comm of exactly that length is made whole, from the exe's
/// or argv[0]'s basename that it is a prefix of (`python3` stays `python3`
/// though the file is `python3.11`). argv[0] alone is never trusted.
pub fn process_name(comm: &str, executable: &str, argv0: Option<&str>) -> String {
    const COMM_MAX: usize = 15;
    let base = |p: &str| p.rsplit('/').next().unwrap_or(p).to_string();
    if comm.is_empty() {
        return base(executable);
    }
    if comm.len() < COMM_MAX {
        return comm.to_string();
    }
    let exe_base = base(executable.strip_suffix(" (deleted)").unwrap_or(executable));
    if exe_base.starts_with(comm) {
        return exe_base;
    }
    if let Some(a0) = argv0.map(base)
        && a0.starts_with(comm)
    {
        return a0;
    }
    comm.to_string()
}

/// `process.entity_id`: stable for (host, boot, pid, start time).
pub fn entity_id(seed: u64, key: ProcKey) -> String {
    let mut bytes = [0u8; 20];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    bytes[8..12].copy_from_slice(&key.pid.to_le_bytes());
    bytes[12..].copy_from_slice(&key.start_ticks.to_le_bytes());
    format!("{:016x}", fnv1a(&bytes))
}

/// FNV-1a, 64 bit: stable across runs and builds (std's hasher is not).
pub fn fnv1a(data: &[u8]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for b in data {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

fn start_time(host: &HostContext, start_ticks: u64) -> String {
    let ticks = host.clock_ticks.max(1);
    let nanos = u128::from(host.boot_time_secs) * 1_000_000_000
        + u128::from(start_ticks) * 1_000_000_000 / u128::from(ticks);
    rfc3339_nanos(nanos)
}

/// RFC 3339 UTC with nanoseconds, as ECS `@timestamp` wants.
pub fn rfc3339_nanos(unix_nanos: u128) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(unix_nanos as i128)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// PURE. The namespaces that mean "the host". The sensor runs in the
/// initial pid namespace (the kernel sends it nothing otherwise), so pid 1
/// is the host's init, whose namespaces are the reference; but the sensor's
/// own may differ (a private mount namespace under systemd's
/// `ProtectSystem=`, a container image with `hostPID`), and treating those
/// as the host would make every host process look containerised. Links of
/// pid 1 that cannot be read fall back to the sensor's own.
pub fn host_reference(own: &Namespaces, init: &Namespaces) -> Namespaces {
    let pick = |i: u64, o: u64| if i != 0 { i } else { o };
    Namespaces {
        pid: pick(init.pid, own.pid),
        mnt: pick(init.mnt, own.mnt),
        net: pick(init.net, own.net),
        uts: pick(init.uts, own.uts),
        ipc: pick(init.ipc, own.ipc),
        user: pick(init.user, own.user),
        cgroup: pick(init.cgroup, own.cgroup),
    }
}

/// Parses `/etc/passwd` text into uid → name.
pub fn parse_passwd(text: &str) -> HashMap<u32, String> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.split(':');
            let name = it.next()?;
            let uid = it.nth(1)?.parse().ok()?;
            Some((uid, name.to_string()))
        })
        .collect()
}

/// Reads the host facts once at start.
pub fn host_context(procfs: &ProcFs) -> io::Result<HostContext> {
    let own = procfs.namespaces(std::process::id())?;
    let init = procfs.namespaces(1).unwrap_or_default();
    let host_ns = host_reference(&own, &init);
    let hostname = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_default();
    let machine_id = std::fs::read("/etc/machine-id").unwrap_or_default();
    let boot_id =
        std::fs::read(procfs.root().join("sys/kernel/random/boot_id")).unwrap_or_default();
    let seed = fnv1a(&[machine_id, boot_id, hostname.as_bytes().to_vec()].concat());
    Ok(HostContext {
        hostname,
        host_ns,
        boot_time_secs: procfs.boot_time_secs()?,
        clock_ticks: procfs::clock_ticks(),
        id_seed: seed,
        users: std::fs::read_to_string("/etc/passwd")
            .map(|t| parse_passwd(&t))
            .unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_prefers_untruncated_exe_then_argv0_then_comm() {
        assert_eq!(
            process_name("kube-controller", "/usr/bin/kube-controller-manager", None),
            "kube-controller-manager"
        );
        // busybox symlink: comm says sh, exe is busybox.
        assert_eq!(process_name("sh", "/bin/busybox", Some("/bin/sh")), "sh");
        // argv[0] that does not agree with comm is not believed.
        assert_eq!(
            process_name("kubectl", "/bin/busybox", Some("ls")),
            "kubectl"
        );
        assert_eq!(process_name("x", "/tmp/x (deleted)", None), "x");
        // Not cut: the kernel's name stands, whatever the file is called.
        assert_eq!(
            process_name("python3", "/usr/bin/python3.11", None),
            "python3"
        );
        assert_eq!(
            process_name("node", "/usr/bin/nodejs", Some("node")),
            "node"
        );
    }

    #[test]
    fn render_args_marks_escaped_indexes() {
        let (args, esc) = render_args(b"a b\0\xff\0\0");
        assert_eq!(args[0], "a b");
        assert_eq!(args[1], "\\xff");
        assert_eq!(esc, vec![1]);
    }

    #[test]
    fn entity_id_depends_on_start_time() {
        let a = entity_id(
            1,
            ProcKey {
                pid: 5,
                start_ticks: 10,
            },
        );
        let b = entity_id(
            1,
            ProcKey {
                pid: 5,
                start_ticks: 11,
            },
        );
        assert_ne!(a, b);
        assert_eq!(
            a,
            entity_id(
                1,
                ProcKey {
                    pid: 5,
                    start_ticks: 10
                }
            )
        );
    }

    #[test]
    fn host_reference_is_init_with_own_as_fallback() {
        let own = Namespaces {
            pid: 1,
            mnt: 50, // a private mount namespace (ProtectSystem=)
            net: 3,
            ..Default::default()
        };
        let init = Namespaces {
            pid: 1,
            mnt: 2,
            net: 0, // unreadable
            ..Default::default()
        };
        let r = host_reference(&own, &init);
        assert_eq!((r.pid, r.mnt, r.net), (1, 2, 3));
    }

    #[test]
    fn passwd_parses() {
        let m = parse_passwd("root:x:0:0:root:/root:/bin/bash\nbad\nnobody:x:65534:65534::/:/x\n");
        assert_eq!(m.get(&0).map(String::as_str), Some("root"));
        assert_eq!(m.get(&65534).map(String::as_str), Some("nobody"));
    }

    #[test]
    fn vanished_process_gives_partial_event() {
        let facts = ProcFacts {
            pid: 42,
            ..Default::default()
        };
        let host = HostContext::default();
        let ev = build_event(&EventInput {
            facts: &facts,
            parent: None,
            parent_pid: 1,
            table: None,
            host: &host,
            sequence: 7,
            event_id: "x".into(),
            timestamp: "t".into(),
        });
        assert_eq!(ev.process.pid, 42);
        assert!(!ev.execsentry.args_complete);
        assert_eq!(ev.execsentry.args_source, "comm");
        assert_eq!(ev.process.parent.pid, 1);
        assert!(ev.container.is_none());
    }
}
