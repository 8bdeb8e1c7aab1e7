//! The sensor's state machine, without the event loop: kernel events in,
//! ECS events and alerts out. Owning no sockets, it is driven by `daemon`
//! live and can be driven by tests with recorded events.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::enrich::{self, EventInput, HostContext, ProcReader};
use crate::event::Event;
use crate::fanotify::ExecCapture;
use crate::metadata::{self, Metadata};
use crate::netlink::wire::KernelEvent;
use crate::process_table::{ProcKey, ProcessTable};
use crate::rules::{Match, RuleSet};

/// Everything the sensor counts; each loss or degradation has its own.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counters {
    pub kernel_events: u64,
    pub execs: u64,
    pub forks: u64,
    pub exits: u64,
    /// Netlink receive buffer overruns (ENOBUFS): episodes of loss.
    pub overruns: u64,
    /// Events the kernel dropped, from gaps in its per-CPU sequence numbers.
    pub lost_events: u64,
    /// Datagrams the decoder rejected.
    pub decode_errors: u64,
    /// Exec events whose process was gone or had no cmdline.
    pub partial_events: u64,
    pub args_truncated: u64,
    pub alerts: u64,
    pub rescans: u64,
    /// Total time spent evaluating rules, for the mean in `status`.
    pub rule_eval_ns: u64,
}

pub struct Pipeline {
    pub table: ProcessTable,
    pub reader: ProcReader,
    pub host: HostContext,
    pub rules: RuleSet,
    pub counters: Counters,
    pub metadata: Metadata,
    /// Executable identity (Go build info, hash), cached per file.
    pub identity: crate::identity::Identifier,
    matches: Vec<Match>,
    sequence: u64,
    /// Distinguishes this sensor run in `event.id`.
    run_id: u64,
}

/// What one exec produced.
pub struct ExecOutcome {
    pub event: Event,
    pub alerts: Vec<Event>,
}

impl Pipeline {
    pub fn new(
        table: ProcessTable,
        reader: ProcReader,
        host: HostContext,
        rules: RuleSet,
        metadata: Metadata,
        identity: crate::identity::Identifier,
    ) -> Self {
        let run_id = enrich::fnv1a(&now_nanos().to_le_bytes()) ^ host.id_seed;
        Pipeline {
            table,
            reader,
            host,
            rules,
            counters: Counters::default(),
            metadata,
            identity,
            matches: Vec::new(),
            sequence: 0,
            run_id,
        }
    }

    /// Fills the table from `/proc`, so processes that were already running
    /// (and their containers) are known before the first event.
    pub fn scan(&mut self) {
        let Ok(pids) = self.reader.procfs.pids() else {
            return;
        };
        let mut pids: Vec<u32> = pids.collect();
        // Parents usually have lower pids: insert them first so children
        // can link to them.
        pids.sort_unstable();
        for pid in pids {
            self.learn(pid);
        }
    }

    /// Reads one process from `/proc` into the table without emitting.
    fn learn(&mut self, pid: u32) {
        let facts =
            self.reader
                .read_limited(pid, false, None, crate::process_table::MAX_IMAGE_ARGS_BYTES);
        let Some(stat) = facts.stat.as_ref() else {
            return;
        };
        let ppid = stat.ppid;
        let parent = self.parent_of(pid, ppid);
        let ev = self.shape(&facts, parent, ppid);
        let container = enrich::container_of(&ev);
        let key = ProcKey {
            pid,
            start_ticks: facts.start_ticks(),
        };
        self.table
            .upsert(key, parent, enrich::image_of(&ev, container));
    }

    /// Every counter of the pipeline and the caches it owns, by name. The
    /// names are stable: the `stats:` line and `execsentry status` use them.
    pub fn counter_map(&self, out: &mut std::collections::BTreeMap<String, u64>) {
        let c = &self.counters;
        let t = self.table.stats();
        let m = &self.metadata.counters;
        let i = self.identity.stats();
        for (k, v) in [
            ("kernel_events", c.kernel_events),
            ("execs", c.execs),
            ("forks", c.forks),
            ("exits", c.exits),
            ("alerts", c.alerts),
            ("overruns", c.overruns),
            ("lost_events", c.lost_events),
            ("decode_errors", c.decode_errors),
            ("partial_events", c.partial_events),
            ("args_truncated", c.args_truncated),
            ("rescans", c.rescans),
            ("table_live", t.live as u64),
            ("table_evictions", t.evictions),
            ("metadata.hits", m.hits),
            ("metadata.loads", m.loads),
            ("metadata.misses", m.misses),
            ("metadata.errors", m.errors),
            ("metadata.oversize", m.oversize),
            ("metadata.evictions", m.evictions),
            ("identity.hits", i.hits),
            ("identity.misses", i.misses),
            ("identity.parse_errors", i.parse_errors),
            ("identity.unreadable", i.unreadable),
            ("identity.evictions", i.evictions),
        ] {
            out.insert(k.to_string(), v);
        }
    }

    /// The event an exec would give, from what is known at permission time:
    /// the capture's argv and file, the exec'ing process's parent from the
    /// table, and its container from its cgroup and namespaces (two reads:
    /// `runc exec` joins the container just before the exec, so the table,
    /// which knows the forking runc, would say "host"). Opt-in deny rules are
    /// evaluated on it while the exec waits.
    pub fn permission_event(&mut self, cap: &ExecCapture) -> Event {
        let entry = self.table.live(cap.pid);
        let parent = entry.and_then(|e| e.parent);
        let known_container = entry.and_then(|e| e.image.container.clone());
        // The kernel's comm will be the basename of the path given to
        // execve (so a symlinked tool keeps its name), cut at 15 bytes.
        let path = if cap.filename.is_empty() {
            &cap.executable
        } else {
            &cap.filename
        };
        let base = path.rsplit(|&b| b == b'/').next().unwrap_or(path);
        let comm = base[..base.len().min(15)].to_vec();
        let mut facts = enrich::ProcFacts {
            pid: cap.pid,
            stat: Some(crate::procfs::Stat {
                comm,
                ppid: parent.map_or(0, |k| k.pid),
                ..Default::default()
            }),
            cmdline: cap.argv.clone(),
            cmdline_truncated: cap.truncated,
            exe: Some(cap.executable.clone()),
            captured: true,
            known_container,
            ..Default::default()
        };
        if let Ok(mut d) = self.reader.procfs.dir(cap.pid)
            && d.cgroup(&mut facts.cgroup).is_ok()
        {
            facts.ns = d.namespaces().ok();
        }
        let mut ev = self.shape(&facts, parent, parent.map_or(0, |k| k.pid));
        ev.process.start = None;
        ev
    }

    /// Describes a live process as an event (for tamper alerts: the actor),
    /// without counting it as an exec.
    pub fn describe(&mut self, pid: u32) -> Event {
        let facts = self.reader.read(pid, true, None);
        let ppid = facts.stat.as_ref().map_or(0, |s| s.ppid);
        let parent = self.parent_of(pid, ppid);
        self.shape(&facts, parent, ppid)
    }

    /// After an overrun some exits were lost: forget the dead, learn the new.
    pub fn resync(&mut self, now_ms: u64) {
        self.counters.rescans += 1;
        let root = self.reader.procfs.root().to_path_buf();
        self.table
            .retain_live(&|pid| root.join(pid.to_string()).exists(), now_ms);
        self.scan();
    }

    /// Applies one kernel event; returns the exec outcome for execs.
    pub fn on_kernel(&mut self, ev: KernelEvent, now_ms: u64) -> Option<ExecOutcome> {
        self.counters.kernel_events += 1;
        match ev {
            // A new thread shares its process's image; only new processes
            // (child pid == child tgid) enter the table.
            KernelEvent::Fork {
                parent_tgid,
                child_pid,
                child_tgid,
                ..
            } if child_pid == child_tgid => {
                self.counters.forks += 1;
                // A parent that never exec'd (a subshell) has no start time
                // yet: read it now, so its children name it by its real
                // identity (`process.parent.entity_id`).
                if self
                    .table
                    .live(parent_tgid)
                    .is_some_and(|e| e.key.start_ticks == 0)
                    && let Ok(st) = self.reader.procfs.stat(parent_tgid)
                {
                    self.table.set_start(parent_tgid, st.start_ticks);
                }
                self.table.fork(parent_tgid, child_tgid);
                None
            }
            KernelEvent::Exit { pid, tgid, .. } if pid == tgid => {
                self.counters.exits += 1;
                self.table.exit(tgid, now_ms);
                None
            }
            // After exec the kernel reports the thread-group leader's pid,
            // even when another thread called execve.
            KernelEvent::Exec { tgid, .. } => Some(self.on_exec(tgid, None, None)),
            _ => None,
        }
    }

    /// An exec, with the fanotify capture of its argv when there is one
    /// and the `/proc/<pid>/stat` read to pick it.
    pub fn on_exec(
        &mut self,
        pid: u32,
        capture: Option<ExecCapture>,
        opened: Option<(crate::procfs::PidDir, crate::procfs::Stat)>,
    ) -> ExecOutcome {
        self.counters.execs += 1;
        let facts = match opened {
            Some((dir, st)) => self.reader.read_with_stat(pid, dir, st, capture),
            None => self.reader.read(pid, true, capture),
        };
        let ppid = facts
            .status
            .as_ref()
            .map(|s| s.ppid)
            .or(facts.stat.as_ref().map(|s| s.ppid))
            .unwrap_or(0);
        let parent = self.parent_of(pid, ppid);
        let mut event = self.shape(&facts, parent, ppid);
        self.identity
            .fill(self.reader.procfs.root(), pid, facts.exe_file, &mut event);
        let table = &self.table;
        if let Some(meta) = self.metadata.lookup(&event, &|p| table.live(p).is_some()) {
            metadata::apply(&meta, &mut event);
        }
        if !event.execsentry.args_complete {
            self.counters.partial_events += 1;
        }
        if event.execsentry.args_truncated {
            self.counters.args_truncated += 1;
        }
        if facts.stat.is_some() {
            let key = ProcKey {
                pid,
                start_ticks: facts.start_ticks(),
            };
            let image = enrich::image_of(&event, enrich::container_of(&event));
            self.table.upsert(key, parent, image);
        }
        let alerts = self.evaluate(&event);
        ExecOutcome { event, alerts }
    }

    /// Runs the rules over an event (also used by `replay`).
    pub fn evaluate(&mut self, event: &Event) -> Vec<Event> {
        self.matches.clear();
        let t = std::time::Instant::now();
        self.rules.evaluate(event, &mut self.matches);
        self.counters.rule_eval_ns += t.elapsed().as_nanos() as u64;
        self.counters.alerts += self.matches.len() as u64;
        self.matches
            .iter()
            .map(|m| self.rules.alert(event, m))
            .collect()
    }

    /// The fork-time parent is exact even if the parent has since exited
    /// and its pid was reused; /proc's `ppid` is the fallback.
    fn parent_of(&self, pid: u32, ppid: u32) -> Option<ProcKey> {
        self.table
            .live(pid)
            .and_then(|e| e.parent)
            .or_else(|| self.table.live(ppid).map(|e| e.key))
    }

    fn shape(&mut self, facts: &enrich::ProcFacts, parent: Option<ProcKey>, ppid: u32) -> Event {
        self.sequence += 1;
        let parent_entry = parent.and_then(|k| self.table.get(k));
        enrich::build_event(&EventInput {
            facts,
            parent: parent_entry,
            parent_pid: parent.map_or(ppid, |k| k.pid),
            table: Some(&self.table),
            host: &self.host,
            sequence: self.sequence,
            event_id: format!("{:016x}-{}", self.run_id, self.sequence),
            timestamp: enrich::rfc3339_nanos(now_nanos()),
        })
    }

    pub fn replace_rules(&mut self, rules: RuleSet) {
        self.rules = rules;
    }
}

pub fn now_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::procfs::ProcFs;

    fn fixture_pipeline(case: &str) -> Pipeline {
        let root = format!("{}/tests/data/proc/{case}", env!("CARGO_MANIFEST_DIR"));
        let procfs = ProcFs::new(root);
        let host_root = format!("{}/tests/data/proc/host", env!("CARGO_MANIFEST_DIR"));
        let host_ns = ProcFs::new(host_root).namespaces(1234).unwrap();
        let host = HostContext {
            hostname: "fixture".into(),
            host_ns,
            clock_ticks: 100,
            ..Default::default()
        };
        let rules = RuleSet::from_sources(&[]).unwrap();
        Pipeline::new(
            ProcessTable::new(64, 1000),
            ProcReader::new(procfs, 4096),
            host,
            rules,
            Metadata::disabled(),
            crate::identity::Identifier::disabled(),
        )
    }

    fn exec(p: &mut Pipeline, pid: u32) -> Event {
        p.on_kernel(KernelEvent::Exec { pid, tgid: pid }, 0)
            .expect("exec outcome")
            .event
    }

    #[test]
    fn exec_in_docker_fixture_carries_container_and_entry_meta() {
        let mut p = fixture_pipeline("docker-v1");
        let ev = exec(&mut p, 4242);
        let c = ev.container.as_ref().expect("container");
        assert_eq!(c.runtime, "docker");
        assert_eq!(c.id.len(), 64);
        let meta = ev.process.entry_leader.as_ref().expect("entry leader");
        assert_eq!(meta.entry_meta.meta_type, "container");
        assert_eq!(ev.process.name, "nginx");
        assert_eq!(ev.execsentry.start_ticks, 5000);
        assert_eq!(p.counters.execs, 1);
    }

    #[test]
    fn kubepods_fixture_names_the_pod() {
        let mut p = fixture_pipeline("k8s-containerd-v1");
        let ev = exec(&mut p, 4242);
        assert_eq!(ev.container.as_ref().unwrap().runtime, "containerd");
        let o = ev.orchestrator.as_ref().expect("orchestrator");
        assert_eq!(o.orchestrator_type, "kubernetes");
        assert!(o.resource.id.is_some());
    }

    #[test]
    fn host_fixture_is_not_a_container() {
        let mut p = fixture_pipeline("host");
        let ev = exec(&mut p, 1234);
        assert!(ev.container.is_none());
        assert!(ev.process.entry_leader.is_none());
        assert!(ev.execsentry.args_complete);
    }

    #[test]
    fn fork_then_exec_names_the_forking_parent() {
        let mut p = fixture_pipeline("host");
        p.scan();
        // 1234 forks 1300, which execs but is already gone from /proc.
        p.on_kernel(
            KernelEvent::Fork {
                parent_pid: 1234,
                parent_tgid: 1234,
                child_pid: 1300,
                child_tgid: 1300,
            },
            0,
        );
        let ev = exec(&mut p, 1300);
        assert_eq!(ev.process.parent.pid, 1234);
        assert_eq!(ev.process.parent.name, "bash");
        assert!(!ev.execsentry.args_complete, "vanished: partial event");
        assert_eq!(p.counters.partial_events, 1);
        assert_eq!(p.counters.forks, 1);
    }

    #[test]
    fn threads_do_not_enter_the_table() {
        let mut p = fixture_pipeline("host");
        p.scan();
        let before = p.table.stats().live;
        p.on_kernel(
            KernelEvent::Fork {
                parent_pid: 1234,
                parent_tgid: 1234,
                child_pid: 1301,
                child_tgid: 1234,
            },
            0,
        );
        p.on_kernel(
            KernelEvent::Exit {
                pid: 1301,
                tgid: 1234,
                exit_code: 0,
                exit_signal: u32::MAX,
                parent_pid: 0,
                parent_tgid: 0,
            },
            0,
        );
        assert_eq!(p.table.stats().live, before);
        assert!(p.table.live(1234).is_some());
    }

    #[test]
    fn exec_reads_the_identity_of_the_real_executable() {
        let mut p = fixture_pipeline("host");
        p.reader = ProcReader::new(ProcFs::host(), 4096);
        let cfg = crate::identity::IdentityConfig::default();
        p.identity = crate::identity::Identifier::new(cfg, Default::default());
        let ev = exec(&mut p, std::process::id());
        assert_eq!(ev.execsentry.exe, None, "a Rust test binary is not Go");
        exec(&mut p, std::process::id());
        let s = p.identity.stats();
        assert_eq!((s.misses, s.hits, s.unreadable), (1, 1, 0));
    }
}
