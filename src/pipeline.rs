//! The sensor's state machine, without the event loop: kernel events and
//! captures in, ECS events and alerts out. An exec flows one way through it:
//! a capture source's [`Capture`] waits in the [`ExecJoin`]; the proc
//! connector's exec takes it (or falls back to `/proc/<pid>/cmdline`);
//! enrichment from `/proc`, metadata and identity shape the event; the rules
//! judge it; the caller hands what comes out to the outputs. Owning no
//! sockets, it is driven by `daemon` live and by tests with recorded events,
//! through the same calls.

use std::time::{SystemTime, UNIX_EPOCH};

use mio::Token;

use crate::capture::{Capture, CaptureSource, Decider, Verdict};
use crate::counters::{Counter, Counters};
use crate::enrich::{self, EventInput, HostContext, ProcReader};
use crate::event::Event;
use crate::join::ExecJoin;
use crate::metadata::{self, Metadata};
use crate::netlink::wire::KernelEvent;
use crate::proc_reader::Prefetched;
use crate::process_table::{ProcKey, ProcessTable};
use crate::rules::{Match, RuleSet};
use crate::stages::{self, Stage};
use crate::tamper::{self, Tamper};

/// How long a capture waits for its proc-connector exec event before it is
/// counted as unmatched (an exec that failed after the source saw it).
pub const CAPTURE_MAX_AGE_MS: u64 = 2_000;
/// Captures held at most (the join also bounds their bytes).
pub const CAPTURE_PENDING_MAX: usize = 16_384;

pub struct Pipeline {
    pub table: ProcessTable,
    pub reader: ProcReader,
    pub host: HostContext,
    pub rules: RuleSet,
    /// The pipeline's own counters (see [`Pipeline::counters`] for all).
    pub counters: Counters,
    /// Total time spent evaluating rules, for the mean in `status`.
    pub rule_eval_ns: u64,
    pub metadata: Metadata,
    /// Executable identity (Go build info, hash), cached per file.
    pub identity: crate::identity::Identifier,
    join: ExecJoin,
    source: Option<Box<dyn CaptureSource>>,
    /// Reused buffer for one drain of the source.
    captured: Vec<Capture>,
    /// Kernel events read and not applied yet, with what was read ahead
    /// of an exec's `/proc` (see [`Self::enqueue`]).
    pending: std::collections::VecDeque<(KernelEvent, Option<Prefetched>)>,
    /// Execs the decider refused during the current drain: (pid, the
    /// permission-time event, the rule), so the alert says exactly why.
    denied: Vec<(u32, Event, Match)>,
    matches: Vec<Match>,
    sequence: u64,
    /// Distinguishes this sensor run in `event.id`.
    run_id: u64,
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
        let mut counters = Counters::default();
        for c in Counter::ALL
            .iter()
            .filter(|c| c.owner() == crate::counters::Owner::Pipeline)
        {
            counters.set(*c, 0);
        }
        Pipeline {
            table,
            reader,
            host,
            rules,
            counters,
            rule_eval_ns: 0,
            metadata,
            identity,
            join: ExecJoin::new(CAPTURE_PENDING_MAX, CAPTURE_MAX_AGE_MS),
            source: None,
            captured: Vec::new(),
            pending: std::collections::VecDeque::new(),
            denied: Vec::new(),
            matches: Vec::new(),
            sequence: 0,
            run_id,
        }
    }

    /// The capture source whose captures the join pairs with execs.
    pub fn set_source(&mut self, source: Box<dyn CaptureSource>) {
        self.source = Some(source);
    }

    pub fn source(&self) -> Option<&dyn CaptureSource> {
        self.source.as_deref()
    }

    pub fn source_mut(&mut self) -> Option<&mut (dyn CaptureSource + 'static)> {
        self.source.as_deref_mut()
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

    /// Every counter of the pipeline and of the parts it owns: the table,
    /// the join, the caches and the capture source.
    pub fn counters(&self, out: &mut Counters) {
        out.merge(&self.counters);
        let t = self.table.stats();
        let m = &self.metadata.counters;
        let i = self.identity.stats();
        let slow = self.identity.slow_stats();
        for (c, v) in [
            (Counter::TableLive, t.live as u64),
            (Counter::TableEvictions, t.evictions),
            (Counter::MetadataHits, m.hits),
            (Counter::MetadataLoads, m.loads),
            (Counter::MetadataMisses, m.misses),
            (Counter::MetadataErrors, m.errors),
            (Counter::MetadataOversize, m.oversize),
            (Counter::MetadataEvictions, m.evictions),
            (Counter::IdentityHits, i.hits),
            (Counter::IdentityMisses, i.misses),
            (Counter::IdentityParseErrors, i.parse_errors),
            (Counter::IdentityUnreadable, i.unreadable),
            (Counter::IdentityEvictions, i.evictions),
            (Counter::IdentitySlowLookups, slow.lookups),
            (Counter::IdentityStalled, slow.stalled),
            (Counter::RulesSkipped, self.rules.skipped().len() as u64),
        ] {
            out.set(c, v);
        }
        if let Some(src) = &self.source {
            self.join.counters(out);
            src.counters(out);
        }
    }

    /// The event an exec would give, from what is known at permission time:
    /// the capture's argv and file, the exec'ing process's parent from the
    /// table, and its container from its cgroup and namespaces (two reads:
    /// `runc exec` joins the container just before the exec, so the table,
    /// which knows the forking runc, would say "host"). Opt-in deny rules are
    /// evaluated on it while the exec waits.
    pub fn permission_event(&mut self, cap: &Capture) -> Event {
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
            capture_source: cap.source.as_str(),
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
        self.counters.inc(Counter::Rescans);
        let root = self.reader.procfs.root().to_path_buf();
        self.table
            .retain_live(&|pid| root.join(pid.to_string()).exists(), now_ms);
        self.scan();
    }

    /// A source's token is ready (`None`: the join is about to pair an
    /// exec). Its captures enter the join; an exec it refused becomes its
    /// alert in `out`.
    pub fn on_source_ready(&mut self, token: Option<Token>, now_ms: u64, out: &mut Vec<Event>) {
        let Some(mut src) = self.source.take() else {
            return;
        };
        let mut captured = std::mem::take(&mut self.captured);
        src.on_ready(token, self, &mut captured);
        self.source = Some(src);
        for cap in captured.drain(..) {
            self.on_capture(cap, now_ms, out);
        }
        self.captured = captured;
        stages::lap(Stage::Capture);
        // Decisions the watchdog overtook (it allowed the exec first).
        self.denied.clear();
    }

    /// One capture from a source: it waits in the join for its exec, or,
    /// refused, is reported as blocked (no exec event will follow).
    pub fn on_capture(&mut self, cap: Capture, now_ms: u64, out: &mut Vec<Event>) {
        if cap.verdict == Verdict::Deny {
            self.blocked(cap.pid, out);
        } else if cap.args_read {
            self.join.push(cap, now_ms);
        }
    }

    /// Kernel events read but not applied yet, at most: in proc mode a
    /// third of them (the execs) hold a `/proc/<pid>` directory fd.
    pub const PENDING_MAX: usize = 192;

    /// Kernel events just read, in kernel order, queued behind those not
    /// applied yet. In proc mode the `cmdline` and `stat` of every process
    /// exec'd in them are read now, before any is enriched: a short-lived
    /// process is gone by the time the execs before it are. Only a
    /// process's last exec among them: for an earlier one, its `/proc`
    /// already shows the later program.
    pub fn enqueue(&mut self, events: &[KernelEvent]) {
        let proc_mode = self.source.is_none();
        for (i, ev) in events.iter().enumerate() {
            let pre = match *ev {
                KernelEvent::Exec { tgid, .. }
                    if proc_mode
                        && !events[i + 1..].iter().any(
                            |e| matches!(*e, KernelEvent::Exec { tgid: t, .. } if t == tgid),
                        ) =>
                {
                    Some(self.reader.prefetch(tgid))
                }
                _ => None,
            };
            self.pending.push_back((*ev, pre));
        }
        stages::lap(Stage::Proc);
    }

    /// Kernel events queued by [`Self::enqueue`] and not applied yet.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Applies the oldest queued kernel event: `None` when none is queued,
    /// else whether it was an exec (the costly kind, after which the caller
    /// reads the kernel again before going on).
    pub fn step(&mut self, now_ms: u64, out: &mut Vec<Event>) -> Option<bool> {
        let (ev, pre) = self.pending.pop_front()?;
        let exec = matches!(ev, KernelEvent::Exec { .. });
        self.apply(ev, pre, now_ms, out);
        Some(exec)
    }

    /// [`Self::enqueue`] and then every queued event applied.
    pub fn on_batch(&mut self, events: &[KernelEvent], now_ms: u64, out: &mut Vec<Event>) {
        self.enqueue(events);
        while self.step(now_ms, out).is_some() {}
    }

    /// Applies one kernel event; an exec's event and alerts go to `out`.
    pub fn on_kernel(&mut self, ev: KernelEvent, now_ms: u64, out: &mut Vec<Event>) {
        self.apply(ev, None, now_ms, out);
    }

    fn apply(
        &mut self,
        ev: KernelEvent,
        pre: Option<Prefetched>,
        now_ms: u64,
        out: &mut Vec<Event>,
    ) {
        self.counters.inc(Counter::KernelEvents);
        match ev {
            // A new thread shares its process's image; only new processes
            // (child pid == child tgid) enter the table.
            KernelEvent::Fork {
                parent_tgid,
                child_pid,
                child_tgid,
                ..
            } if child_pid == child_tgid => {
                self.counters.inc(Counter::Forks);
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
                stages::lap(Stage::Proc);
            }
            KernelEvent::Exit { pid, tgid, .. } if pid == tgid => {
                self.counters.inc(Counter::Exits);
                self.table.exit(tgid, now_ms);
                stages::lap(Stage::Proc);
            }
            // After exec the kernel reports the thread-group leader's pid,
            // even when another thread called execve.
            KernelEvent::Exec { tgid, ns, .. } => {
                // The source's record of this exec may still sit unread in
                // its queue: the proc connector's message can overtake it.
                if self.source.is_some() {
                    self.on_source_ready(None, now_ms, out);
                }
                self.on_exec(tgid, ns, pre, out);
            }
            KernelEvent::Ptrace {
                tgid, tracer_tgid, ..
            } if tgid == std::process::id() && tracer_tgid != 0 => {
                let detail = format!("ptrace attach by pid {tracer_tgid}");
                self.tamper(Tamper::Ptrace, tracer_tgid, &detail, out);
            }
            _ => {}
        }
    }

    /// An exec: the join's capture of it when there is one, else
    /// `/proc/<pid>/cmdline`.
    fn on_exec(&mut self, pid: u32, ns: u64, pre: Option<Prefetched>, out: &mut Vec<Event>) {
        self.counters.inc(Counter::Execs);
        // With captures pending, stat comes first: where they carry no
        // time stamp, its comm picks the capture of this very exec. The
        // directory and stat are handed on, so neither is read twice.
        let pre = if self.join.is_empty() {
            pre
        } else {
            Some(self.reader.open_stat(pid))
        };
        let comm = pre.as_ref().and_then(Prefetched::comm);
        let capture = self.join.take_for(pid, comm, ns);
        let uncaptured = capture.is_none() && self.source.is_some();
        let captured_comm = capture.as_ref().and_then(|c| c.comm.clone());
        let mut facts = match pre {
            Some(p) => self.reader.read_from(pid, capture, p),
            None => self.reader.read(pid, true, capture),
        };
        if facts.stat.is_none()
            && let Some(comm) = captured_comm
        {
            // Gone before /proc was read: the comm the source saw after the
            // exec (kprobe) still names it, for `process.name` and rules.
            facts.stat = Some(crate::procfs::Stat {
                comm,
                ..Default::default()
            });
        }
        if uncaptured && let Some(src) = self.source.as_ref().filter(|s| s.sees_every_exec()) {
            // Its record was lost (ring overflow, a full join): the argv is
            // `/proc`'s reading after the fact, which the program may have
            // rewritten or not yet have had: never reported as complete.
            // An exec from before the source watched is no loss.
            if src
                .watching_since_ns()
                .is_none_or(|since| ns == 0 || ns >= since)
            {
                self.counters.inc(Counter::CapturesMissing);
                log::debug!("join: pid {pid} exec without a capture");
            }
            facts.cmdline_truncated = true;
        }
        let ppid = facts
            .status
            .as_ref()
            .map(|s| s.ppid)
            .or(facts.stat.as_ref().map(|s| s.ppid))
            .unwrap_or(0);
        let parent = self.parent_of(pid, ppid);
        let mut event = self.shape(&facts, parent, ppid);
        stages::lap(Stage::Proc);
        self.identity.fill(
            self.reader.procfs.root(),
            pid,
            !facts.gone,
            facts.exe_file,
            &mut event,
        );
        stages::lap(Stage::Identity);
        let table = &self.table;
        if let Some(meta) = self.metadata.lookup(&event, &|p| table.live(p).is_some()) {
            metadata::apply(&meta, &mut event);
        }
        stages::lap(Stage::Metadata);
        if !event.execsentry.args_complete {
            self.counters.inc(Counter::PartialEvents);
        }
        if event.execsentry.args_truncated {
            self.counters.inc(Counter::ArgsTruncated);
        }
        if uncaptured && crate::fanotify::looks_like_loader(event.process.executable.as_bytes()) {
            // `ld.so /path/prog`: the loader's exec events are ignored (one
            // wait per exec instead of two), so its argv is `/proc`'s.
            self.counters.inc(Counter::LoaderExecs);
        }
        if facts.stat.is_some() {
            let key = ProcKey {
                pid,
                start_ticks: facts.start_ticks(),
            };
            let image = enrich::image_of(&event, enrich::container_of(&event));
            self.table.upsert(key, parent, image);
        }
        if let Some(src) = self.source.as_mut() {
            src.observe(&event);
        }
        let alerts = self.evaluate(&event);
        out.push(event);
        out.extend(alerts);
        stages::lap(Stage::Rules);
    }

    /// A refused exec's alert, from what the decider saw while it waited.
    fn blocked(&mut self, pid: u32, out: &mut Vec<Event>) {
        let Some(i) = self.denied.iter().position(|(p, _, _)| *p == pid) else {
            return;
        };
        let (_, ev, m) = self.denied.swap_remove(i);
        let mut alert = self.rules.alert(&ev, &m);
        alert.event.outcome = Some("blocked".into());
        self.counters.inc(Counter::Alerts);
        self.counters.inc(Counter::BlockedExecs);
        out.push(alert);
    }

    /// Someone went for the sensor: an alert with the actor's process facts.
    pub fn tamper(&mut self, what: Tamper, actor_pid: u32, detail: &str, out: &mut Vec<Event>) {
        let actor = if actor_pid == 0 {
            Event::default()
        } else {
            self.describe(actor_pid)
        };
        let alert = tamper::alert(actor, what, detail);
        log::warn!("{}", alert.message.as_deref().unwrap_or_default());
        self.counters.inc(Counter::TamperAlerts);
        out.push(alert);
    }

    /// Timers: exited processes and unmatched captures age out.
    pub fn housekeeping(&mut self, now_ms: u64) {
        self.table.expire(now_ms);
        self.join.expire(now_ms);
    }

    /// Runs the rules over an event (also used by `replay`).
    pub fn evaluate(&mut self, event: &Event) -> Vec<Event> {
        self.matches.clear();
        let t = std::time::Instant::now();
        self.rules.evaluate(event, &mut self.matches);
        self.rule_eval_ns += t.elapsed().as_nanos() as u64;
        self.counters
            .add(Counter::Alerts, self.matches.len() as u64);
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

/// The deny decision while a gating source's exec waits: the only call a
/// source makes into the pipeline.
impl Decider for Pipeline {
    fn decide(&mut self, cap: &Capture) -> Verdict {
        let ev = self.permission_event(cap);
        let mut scratch = std::mem::take(&mut self.matches);
        let verdict = match self.rules.denies(&ev, &mut scratch) {
            Some(m) => {
                self.denied.push((cap.pid, ev, m));
                Verdict::Deny
            }
            None => Verdict::Allow,
        };
        self.matches = scratch;
        verdict
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
        let mut out = Vec::new();
        p.on_kernel(
            KernelEvent::Exec {
                pid,
                tgid: pid,
                ns: crate::capture::monotonic_ns(),
            },
            0,
            &mut out,
        );
        out.into_iter().next().expect("exec outcome")
    }

    /// A capture source that hands out what it was given, only when the
    /// join asks (`on_ready(None)`): the production path must drain the
    /// source before it pairs an exec.
    struct FakeSource {
        queued: Vec<Capture>,
        observed: std::rc::Rc<std::cell::Cell<usize>>,
        every_exec: bool,
        since: Option<u64>,
    }

    impl CaptureSource for FakeSource {
        fn source(&self) -> crate::capture::ArgsSource {
            crate::capture::ArgsSource::Fanotify
        }
        fn register(&mut self, _: &mio::Registry, _: Token) -> std::io::Result<usize> {
            Ok(0)
        }
        fn on_ready(&mut self, token: Option<Token>, _: &mut dyn Decider, out: &mut Vec<Capture>) {
            if token.is_none() {
                out.append(&mut self.queued);
            }
        }
        fn observe(&mut self, _: &Event) {
            self.observed.set(self.observed.get() + 1);
        }
        fn sees_every_exec(&self) -> bool {
            self.every_exec
        }
        fn watching_since_ns(&self) -> Option<u64> {
            self.since
        }
        fn counters(&self, _: &mut Counters) {}
    }

    #[test]
    fn a_process_gone_before_proc_is_read_keeps_the_captured_name() {
        let mut p = fixture_pipeline("host");
        // 4321 is not in the fixture's /proc: it exited already.
        p.set_source(Box::new(FakeSource {
            queued: vec![Capture {
                pid: 4321,
                argv: b"/opt/bin/kubectl\0get\0secrets\0".to_vec(),
                comm: Some(b"kubectl".to_vec()),
                source: crate::capture::ArgsSource::Kprobe,
                args_read: true,
                ..Default::default()
            }],
            observed: std::rc::Rc::default(),
            every_exec: true,
            since: None,
        }));
        let ev = exec(&mut p, 4321);
        assert_eq!(ev.process.name, "kubectl");
        assert_eq!(ev.process.args, ["/opt/bin/kubectl", "get", "secrets"]);
        assert_eq!(ev.execsentry.args_source, "kprobe");
    }

    #[test]
    fn a_container_exec_gone_before_proc_is_read_keeps_its_captured_cgroup() {
        const ID: &str = "5f1c2d3e4a5b6c7d8e9f00112233445566778899aabbccddeeff001122334455";
        let mut p = fixture_pipeline("host");
        p.set_source(Box::new(FakeSource {
            queued: vec![Capture {
                pid: 4321,
                argv: b"kubectl\0exec\0web-0\0".to_vec(),
                executable: b"/usr/local/bin/kubectl".to_vec(),
                cgroup: Some(format!("0::/system.slice/docker-{ID}.scope\n")),
                args_read: true,
                ..Default::default()
            }],
            observed: std::rc::Rc::default(),
            every_exec: true,
            since: None,
        }));
        let ev = exec(&mut p, 4321);
        let c = ev.container.expect("container from the captured cgroup");
        assert_eq!(c.id, ID);
        assert_eq!(c.runtime, "docker");
    }

    #[test]
    fn an_exec_whose_record_was_lost_is_flagged_from_proc() {
        for every_exec in [true, false] {
            let mut p = fixture_pipeline("host");
            p.set_source(Box::new(FakeSource {
                queued: Vec::new(),
                observed: std::rc::Rc::default(),
                every_exec,
                since: None,
            }));
            let ev = exec(&mut p, 1234);
            assert_eq!(ev.execsentry.args_source, "proc");
            // A source that records every exec but has none for this one
            // lost it: /proc's argv is then never passed off as the exec's.
            assert_eq!(ev.execsentry.args_truncated, every_exec);
            assert_eq!(ev.execsentry.args_complete, !every_exec);
            let mut c = Counters::default();
            p.counters(&mut c);
            assert_eq!(c.get(Counter::CapturesMissing), u64::from(every_exec));
            assert_eq!(c.get(Counter::ArgsTruncated), u64::from(every_exec));
        }
    }

    #[test]
    fn an_exec_from_before_the_source_watched_is_flagged_but_no_loss() {
        let mut p = fixture_pipeline("host");
        p.set_source(Box::new(FakeSource {
            queued: Vec::new(),
            observed: std::rc::Rc::default(),
            every_exec: true,
            since: Some(u64::MAX),
        }));
        let ev = exec(&mut p, 1234);
        assert!(ev.execsentry.args_truncated);
        let mut c = Counters::default();
        p.counters(&mut c);
        assert_eq!(c.get(Counter::CapturesMissing), 0);
    }

    #[test]
    fn an_exec_takes_its_capture_through_the_join() {
        let mut plain = fixture_pipeline("host");
        let from_proc = exec(&mut plain, 1234);
        let mut p = fixture_pipeline("host");
        let capture = Capture {
            pid: 1234,
            argv: b"bash\0-c\0kubectl exec -it web -- sh".to_vec(),
            filename: b"/bin/bash".to_vec(),
            executable: b"/usr/bin/bash".to_vec(),
            args_read: true,
            syscall: 59,
            ..Default::default()
        };
        let observed = std::rc::Rc::default();
        p.set_source(Box::new(FakeSource {
            queued: vec![capture],
            observed: std::rc::Rc::clone(&observed),
            every_exec: true,
            since: None,
        }));
        let mut out = Vec::new();
        p.on_kernel(
            KernelEvent::Exec {
                pid: 1234,
                tgid: 1234,
                ns: crate::capture::monotonic_ns(),
            },
            0,
            &mut out,
        );
        let ev = &out[0];
        assert_eq!(
            ev.process.args,
            ["bash", "-c", "kubectl exec -it web -- sh"]
        );
        assert_eq!(ev.execsentry.args_source, "fanotify");
        assert!(ev.execsentry.args_complete);
        // Everything /proc says is what the proc path says.
        assert_eq!(ev.process.pid, from_proc.process.pid);
        assert_eq!(ev.process.name, from_proc.process.name);
        assert_eq!(ev.process.parent, from_proc.process.parent);
        assert_eq!(ev.process.user, from_proc.process.user);
        assert_eq!(ev.execsentry.start_ticks, from_proc.execsentry.start_ticks);
        assert_eq!(ev.container, from_proc.container);
        let mut c = Counters::default();
        p.counters(&mut c);
        assert_eq!(c.get(Counter::CapturesMatched), 1);
        assert_eq!(
            c.get(Counter::KernelEvents),
            1,
            "execs are kernel events too"
        );
        assert_eq!(c.get(Counter::Execs), 1);
        assert_eq!(observed.get(), 1, "the source sees the event it fed");
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
        assert_eq!(p.counters.get(Counter::Execs), 1);
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
            &mut Vec::new(),
        );
        let ev = exec(&mut p, 1300);
        assert_eq!(ev.process.parent.pid, 1234);
        assert_eq!(ev.process.parent.name, "bash");
        assert!(!ev.execsentry.args_complete, "vanished: partial event");
        assert_eq!(p.counters.get(Counter::PartialEvents), 1);
        assert_eq!(p.counters.get(Counter::Forks), 1);
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
            &mut Vec::new(),
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
            &mut Vec::new(),
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

#[cfg(test)]
mod batch_tests {
    //! The batched path (a first pass of `cmdline` and `stat` reads, then
    //! enrichment) against the one-event-at-a-time path it replaced: the
    //! same kernel messages give the same JSON, apart from timing fields.

    use std::path::Path;

    use super::*;
    use crate::procfs::ProcFs;

    /// Copies a fixture process directory, symlinks (ns, exe, cwd) kept.
    fn copy_tree(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            let (src, dst) = (entry.path(), to.join(entry.file_name()));
            let kind = entry.file_type().unwrap();
            if kind.is_symlink() {
                std::os::unix::fs::symlink(std::fs::read_link(&src).unwrap(), &dst).unwrap();
            } else if kind.is_dir() {
                copy_tree(&src, &dst);
            } else {
                std::fs::copy(&src, &dst).unwrap();
            }
        }
    }

    /// One /proc holding every fixture's process (containers of each
    /// runtime, the host), each under its own pid.
    fn mixed_proc() -> (tempfile::TempDir, Vec<u32>) {
        let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/proc");
        let dir = tempfile::tempdir().unwrap();
        let mut pids = Vec::new();
        let mut cases: Vec<_> = std::fs::read_dir(&data)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        cases.sort();
        for (i, case) in cases.iter().enumerate() {
            for entry in std::fs::read_dir(case).unwrap() {
                let entry = entry.unwrap();
                if entry.file_type().unwrap().is_dir() {
                    let pid = 2000 + i as u32;
                    copy_tree(&entry.path(), &dir.path().join(pid.to_string()));
                    pids.push(pid);
                }
            }
        }
        (dir, pids)
    }

    fn pipeline(root: &Path) -> Pipeline {
        let host_root = format!("{}/tests/data/proc/host", env!("CARGO_MANIFEST_DIR"));
        let host = HostContext {
            hostname: "fixture".into(),
            host_ns: ProcFs::new(host_root).namespaces(1234).unwrap(),
            clock_ticks: 100,
            ..Default::default()
        };
        let rules_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules");
        Pipeline::new(
            ProcessTable::new(64, 1000),
            ProcReader::new(ProcFs::new(root.to_path_buf()), 4096),
            host,
            RuleSet::load(&[rules_dir]).unwrap(),
            Metadata::disabled(),
            crate::identity::Identifier::disabled(),
        )
    }

    /// Fork, exec (twice for some: the earlier exec must not take the
    /// later one's reads), exit; and an exec of a pid with no directory.
    fn workload(pids: &[u32]) -> Vec<KernelEvent> {
        let mut evs = Vec::new();
        for (i, &pid) in pids.iter().enumerate() {
            evs.push(KernelEvent::Fork {
                parent_pid: 1,
                parent_tgid: 1,
                child_pid: pid,
                child_tgid: pid,
            });
            evs.push(KernelEvent::Exec {
                pid,
                tgid: pid,
                ns: 0,
            });
            if i % 3 == 0 {
                evs.push(KernelEvent::Exec {
                    pid,
                    tgid: pid,
                    ns: 0,
                });
            }
        }
        evs.push(KernelEvent::Exec {
            pid: 99_999,
            tgid: 99_999,
            ns: 0,
        });
        for &pid in pids.iter().step_by(2) {
            evs.push(KernelEvent::Exit {
                pid,
                tgid: pid,
                exit_code: 0,
                exit_signal: 17,
                parent_pid: 1,
                parent_tgid: 1,
            });
        }
        evs
    }

    fn json_without_timing(events: &[Event]) -> Vec<serde_json::Value> {
        events
            .iter()
            .map(|e| {
                let mut v = serde_json::to_value(e).unwrap();
                let o = v.as_object_mut().unwrap();
                o.remove("@timestamp");
                if let Some(m) = o.get_mut("event").and_then(|m| m.as_object_mut()) {
                    // The run's random id and the evaluation time.
                    m.remove("id");
                    m.remove("ingested");
                }
                v
            })
            .collect()
    }

    #[test]
    fn batches_give_the_json_of_one_event_at_a_time() {
        let (dir, pids) = mixed_proc();
        assert!(pids.len() >= 10, "fixtures: {pids:?}");
        let evs = workload(&pids);
        let mut one = pipeline(dir.path());
        let mut want = Vec::new();
        for ev in &evs {
            one.on_kernel(*ev, 0, &mut want);
        }
        let want = json_without_timing(&want);
        assert!(want.len() > pids.len(), "{} events", want.len());
        for size in [1, 2, 3, 7, crate::netlink::BATCH] {
            let mut p = pipeline(dir.path());
            let mut got = Vec::new();
            for chunk in evs.chunks(size) {
                p.on_batch(chunk, 0, &mut got);
            }
            assert_eq!(json_without_timing(&got), want, "batches of {size}");
        }
    }
}
