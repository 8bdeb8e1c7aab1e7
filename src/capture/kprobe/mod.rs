//! The kprobe capture source: an ftrace return probe on `start_thread`,
//! read through perf rings. It fires once per successful exec, after the
//! new stack is built and before the new program runs, so it sees exactly
//! the argv the program receives; nobody waits for it.
//!
//! The probe: [`probes`]; its record: [`format`]; from the user-stack dump
//! to an argv: [`args`]; the rings: [`perf`]; tracefs and why a kernel
//! cannot do it: [`tracefs`].

pub mod args;
pub mod debug;
pub mod format;
pub mod perf;
pub mod probes;
pub mod tracefs;

use std::fs;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};

use crate::capture::{ArgsSource, Capture, CaptureSource, Decider, Unavailable};
use crate::counters::{Counter, Counters};

use format::Format;
use perf::{Record, Ring};
use probes::Features;
use tracefs::Tracefs;

/// User stack copied per exec: argc, the pointer arrays, the aux vector
/// and about 14 KiB of argument strings. Longer argv is flagged and
/// completed from `/proc/<pid>/cmdline`. Every sample takes this much
/// ring space whatever the exec's size (the kernel skips what it could
/// not copy).
pub const DEFAULT_STACK_DUMP: u32 = 16 * 1024;
/// Data pages of each CPU's ring (power of two): 4 MiB with 4 KiB pages,
/// about 250 execs between two drains.
pub const DEFAULT_RING_PAGES: usize = 1024;
/// The rings of all CPUs together (locked kernel memory): 64 MiB, so a
/// 64-CPU host gets 1 MiB rings.
pub const RINGS_BYTES_MAX: usize = 64 << 20;

#[derive(Debug, Clone)]
pub struct Options {
    pub max_args_bytes: usize,
    /// Keep the exec's environment (`sensor.capture_env_vars`).
    pub env: bool,
    pub ring_pages: usize,
    pub stack_dump: u32,
    /// `/` on a host; tests point it at a fake tree.
    pub root: PathBuf,
}

impl Options {
    pub fn new(max_args_bytes: usize) -> Options {
        Options {
            max_args_bytes,
            env: false,
            ring_pages: DEFAULT_RING_PAGES,
            stack_dump: DEFAULT_STACK_DUMP,
            root: PathBuf::from("/"),
        }
    }
}

#[derive(Default)]
struct Tally {
    records: u64,
    lost: u64,
    corrupt: u64,
    cut: u64,
}

/// What the entry probe read of the exec now returning on a ring.
struct Head {
    pid: u32,
    sp: u64,
    bytes: Vec<u8>,
}

pub struct KprobeSource {
    tracefs: Tracefs,
    group: String,
    format: Format,
    entry: Format,
    /// The return probe on `compat_start_thread`, where the kernel has it.
    compat: Option<Format>,
    rings: Vec<Ring>,
    heads: Vec<Option<Head>>,
    /// The return probes' fds, one per ring (the loop polls these).
    fds: Vec<OwnedFd>,
    /// The entry probes' fds (and the compat probes'), writing into the
    /// same rings.
    extra_fds: Vec<OwnedFd>,
    opts: Options,
    tally: Tally,
    /// Records copied out of a ring before they are decoded.
    batch: Vec<u8>,
    /// Sample times are CLOCK_MONOTONIC (`use_clockid`, 4.1): comparable
    /// with the proc connector's.
    monotonic: bool,
    /// CLOCK_MONOTONIC once every probe was enabled.
    since_ns: u64,
}

fn unavailable(reason: impl Into<String>) -> Unavailable {
    Unavailable {
        source: "kprobe",
        reason: reason.into(),
    }
}

impl KprobeSource {
    /// Defines the probe (the richest form the kernel accepts), removes
    /// probes of sensors that are gone, and opens the rings.
    pub fn open(opts: Options) -> Result<KprobeSource, Unavailable> {
        let t = tracefs::find(&opts.root).map_err(unavailable)?;
        tracefs::precheck(&opts.root, &t).map_err(unavailable)?;
        let (pid, start) = (std::process::id(), own_start_time(&opts.root));
        let group = probes::group_name(pid, start);
        remove_stale(&t, &group, &opts.root);
        let format = define(&t, &group, &opts.root)?;
        let entry = match define_entry(&t, &group) {
            Ok(f) => f,
            Err(u) => {
                let _ = t.write_event(&probes::removal(&group, &probes::entry_event(&group)));
                let _ = t.write_event(&probes::removal(&group, &group));
                return Err(u);
            }
        };
        let compat = define_compat(&t, &group, format.fields.contains_key("comm"));
        let mut src = KprobeSource {
            tracefs: t,
            group,
            format,
            entry,
            compat,
            rings: Vec::new(),
            heads: Vec::new(),
            fds: Vec::new(),
            extra_fds: Vec::new(),
            opts,
            tally: Tally::default(),
            batch: Vec::new(),
            monotonic: false,
            since_ns: 0,
        };
        // On error, Drop removes what was defined.
        src.open_rings()?;
        Ok(src)
    }

    pub fn group(&self) -> &str {
        &self.group
    }

    pub fn stack_dump(&self) -> u32 {
        self.opts.stack_dump
    }

    /// 32-bit execs are probed too (`compat_start_thread`).
    pub fn compat(&self) -> bool {
        self.compat.is_some()
    }

    fn open_rings(&mut self) -> Result<(), Unavailable> {
        let page = 4096usize;
        let cpus = online_cpus(&self.opts.root);
        let pages = ring_pages(self.opts.ring_pages, cpus.len());
        let watermark = u32::try_from(pages * page / 4).unwrap_or(u32::MAX);
        let id = u64::from(self.format.id);
        let dump = self.opts.stack_dump;
        let mut monotonic = true;
        let entry_id = u64::from(self.entry.id);
        for cpu in cpus {
            let fd = match perf::open(id, cpu, watermark, dump, monotonic) {
                Ok(fd) => fd,
                Err(e)
                    if monotonic
                        && matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::E2BIG)) =>
                {
                    monotonic = false;
                    perf::open(id, cpu, watermark, dump, false).map_err(|e| perf_refused(&e))?
                }
                // A CPU that went offline since the list was read.
                Err(e) if e.raw_os_error() == Some(libc::ENODEV) => continue,
                Err(e) => return Err(perf_refused(&e)),
            };
            let ring = Ring::map(&fd, pages).map_err(|e| {
                let hint = if e.raw_os_error() == Some(libc::EPERM) {
                    " (above perf_event_mlock_kb without CAP_IPC_LOCK)"
                } else {
                    ""
                };
                unavailable(format!("mmap of a perf ring: {e}{hint}"))
            })?;
            let head =
                perf::open(entry_id, cpu, watermark, 0, monotonic).map_err(|e| perf_refused(&e))?;
            perf::set_output(&head, &fd)
                .map_err(|e| unavailable(format!("PERF_EVENT_IOC_SET_OUTPUT: {e}")))?;
            if let Some(c) = &self.compat {
                let cfd = perf::open(u64::from(c.id), cpu, watermark, dump, monotonic)
                    .map_err(|e| perf_refused(&e))?;
                perf::set_output(&cfd, &fd)
                    .map_err(|e| unavailable(format!("PERF_EVENT_IOC_SET_OUTPUT: {e}")))?;
                self.extra_fds.push(cfd);
            }
            self.rings.push(ring);
            self.heads.push(None);
            self.fds.push(fd);
            self.extra_fds.push(head);
        }
        if self.rings.is_empty() {
            return Err(unavailable("no CPU accepted a perf event"));
        }
        for fd in self.extra_fds.iter().chain(&self.fds) {
            perf::enable(fd).map_err(|e| unavailable(format!("enabling a perf event: {e}")))?;
        }
        self.monotonic = monotonic;
        self.since_ns = crate::capture::monotonic_ns();
        Ok(())
    }

    fn drain_ring(&mut self, i: usize, out: &mut Vec<Capture>) {
        // Records are copied out first (a record may wrap the ring end),
        // each prefixed by its length, into one reused buffer.
        let mut batch = std::mem::take(&mut self.batch);
        batch.clear();
        self.rings[i].drain(|r| {
            batch.extend_from_slice(&(r.len() as u32).to_ne_bytes());
            batch.extend_from_slice(r);
        });
        let mut at = 0;
        while let Some(n) = batch
            .get(at..at + 4)
            .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as usize)
        {
            let rec = &batch[at + 4..at + 4 + n];
            at += 4 + n;
            self.on_record(i, rec, out);
        }
        self.batch = batch;
    }

    fn on_record(&mut self, i: usize, rec: &[u8], out: &mut Vec<Capture>) {
        match perf::decode(rec) {
            Record::Sample {
                pid,
                time,
                raw,
                sp,
                stack,
            } => {
                self.tally.records += 1;
                let id = raw.get(..2).map(|b| u16::from_ne_bytes([b[0], b[1]]));
                if id == Some(self.entry.id) {
                    let mut h = self.heads[i].take().map(|h| h.bytes).unwrap_or_default();
                    h.clear();
                    h.extend_from_slice(self.entry.bytes_of(raw, "b").unwrap_or_default());
                    for j in 0..probes::MAX_ARRAY_LEN {
                        match self.entry.bytes_of(raw, &format!("b{j}")) {
                            Some(b) => h.extend_from_slice(b),
                            None => break,
                        }
                    }
                    self.heads[i] = Some(Head {
                        pid,
                        sp: self.entry.u64_of(raw, "sp").unwrap_or(0),
                        bytes: h,
                    });
                    return;
                }
                let compat = self.compat.as_ref().filter(|c| Some(c.id) == id);
                let word = if compat.is_some() {
                    args::Word::W32
                } else {
                    args::Word::W64
                };
                let mut cap = Capture {
                    pid,
                    comm: compat
                        .unwrap_or(&self.format)
                        .string_of(raw, "comm")
                        .map(<[u8]>::to_vec),
                    source: ArgsSource::Kprobe,
                    ns: self.monotonic.then_some(time),
                    ..Capture::default()
                };
                match sp {
                    Some(sp) if !stack.is_empty() => {
                        // The entry record of this very exec: same task,
                        // same new stack pointer, just before on this ring.
                        let head = self.heads[i]
                            .as_ref()
                            .filter(|h| h.pid == pid && h.sp == sp)
                            .map(|h| h.bytes.as_slice());
                        let a = match word {
                            args::Word::W64 => {
                                args::from_stack(sp, stack, head, self.opts.max_args_bytes)
                            }
                            args::Word::W32 => {
                                args::from_compat_stack(sp, stack, self.opts.max_args_bytes)
                            }
                        };
                        if a.truncated {
                            self.tally.cut += 1;
                            log::debug!(
                                "kprobe capture: pid {pid} argv cut: sp {sp:#x}, {} stack bytes, head {:?}, {} argv bytes",
                                stack.len(),
                                head.map(<[u8]>::len),
                                a.bytes.len()
                            );
                        }
                        cap.argv = a.bytes;
                        cap.truncated = a.truncated;
                        cap.args_read = true;
                        if self.opts.env {
                            cap.envp =
                                args::env_from_stack(sp, stack, self.opts.max_args_bytes, word);
                        }
                    }
                    // No user registers or stack (a kernel thread's exec).
                    _ => cap.truncated = true,
                }
                out.push(cap);
            }
            Record::Lost(n) => self.tally.lost += n,
            Record::Other => {}
            Record::Corrupt => self.tally.corrupt += 1,
        }
    }

    fn remove_own(&mut self) {
        // An event is busy while a perf fd holds it: the rings' followers
        // first, then the rings' own events.
        self.extra_fds.clear();
        self.rings.clear();
        self.fds.clear();
        let compat = self
            .compat
            .is_some()
            .then(|| probes::compat_event(&self.group));
        let events = [probes::entry_event(&self.group), self.group.clone()];
        for event in compat.into_iter().chain(events) {
            // The kernel can hold an event busy for a moment after its last
            // perf fd closed.
            for _ in 0..50 {
                match self
                    .tracefs
                    .write_event(&probes::removal(&self.group, &event))
                {
                    Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                        std::thread::sleep(std::time::Duration::from_millis(10))
                    }
                    Err(e) => {
                        log::warn!("kprobe capture: removing {}/{event}: {e}", self.group);
                        break;
                    }
                    Ok(()) => break,
                }
            }
        }
    }
}

impl Drop for KprobeSource {
    fn drop(&mut self) {
        self.remove_own();
    }
}

impl CaptureSource for KprobeSource {
    fn source(&self) -> ArgsSource {
        ArgsSource::Kprobe
    }

    /// `start_thread` runs in every successful exec of a 64-bit program,
    /// `compat_start_thread` in a 32-bit one's. Without the compat probe a
    /// 32-bit exec has no record: flagged as lost all the same.
    fn sees_every_exec(&self) -> bool {
        true
    }

    fn watching_since_ns(&self) -> Option<u64> {
        self.monotonic.then_some(self.since_ns)
    }

    fn register(&mut self, registry: &Registry, first: Token) -> io::Result<usize> {
        for (i, fd) in self.fds.iter().enumerate() {
            registry.register(
                &mut SourceFd(&fd.as_raw_fd()),
                Token(first.0 + i),
                Interest::READABLE,
            )?;
        }
        Ok(self.fds.len())
    }

    fn on_ready(
        &mut self,
        _token: Option<Token>,
        _decider: &mut dyn Decider,
        out: &mut Vec<Capture>,
    ) {
        // Every ring: the join's request needs them all, and a woken ring
        // is rarely alone under load. Draining an empty ring is two loads.
        for i in 0..self.rings.len() {
            self.drain_ring(i, out);
        }
    }

    fn counters(&self, out: &mut Counters) {
        out.add(Counter::KprobeRecords, self.tally.records);
        out.add(Counter::KprobeLost, self.tally.lost);
        out.add(Counter::KprobeCorrupt, self.tally.corrupt);
        out.add(Counter::KprobeCut, self.tally.cut);
    }
}

/// Defines the probe, `$comm` first; returns its format, the record bound
/// checked against it.
fn define(t: &Tracefs, group: &str, root: &Path) -> Result<Format, Unavailable> {
    let mut last = String::new();
    for features in [Features { comm: true }, Features { comm: false }] {
        let def = probes::definition(group, features);
        if let Err(e) = t.write_event(&def) {
            last = tracefs::refusal(&e, t, root);
            // Only a parse refusal makes the simpler form worth trying.
            if e.raw_os_error() != Some(libc::EINVAL) {
                return Err(unavailable(last));
            }
            continue;
        }
        let remove = |why: String| {
            let _ = t.write_event(&probes::removal(group, group));
            unavailable(why)
        };
        let format = match t.format(group, group).map(|s| Format::parse(&s)) {
            Ok(Ok(f)) => f,
            Ok(Err(e)) => return Err(remove(format!("format of {group}/{group}: {e}"))),
            Err(e) => return Err(remove(format!("format of {group}/{group}: {e}"))),
        };
        let max = probes::max_record(format.fixed_size, features);
        if max > probes::RECORD_LIMIT {
            return Err(remove(format!(
                "{group}/{group} records could reach {max} bytes, above the perf limit {}",
                probes::RECORD_LIMIT
            )));
        }
        return Ok(format);
    }
    Err(unavailable(last))
}

/// Defines the return probe on `compat_start_thread` when the kernel has
/// it; `None` (logged) otherwise: 32-bit execs then have no record and are
/// flagged, their argv from `/proc`.
fn define_compat(t: &Tracefs, group: &str, comm: bool) -> Option<Format> {
    let ev = probes::compat_event(group);
    let def = probes::compat_definition(group, Features { comm });
    if let Err(e) = t.write_event(&def) {
        log::info!(
            "kprobe capture: {} not probed ({e}): 32-bit execs are flagged, argv from /proc",
            probes::COMPAT_SYMBOL
        );
        return None;
    }
    let max = |f: &Format| probes::max_record(f.fixed_size, Features { comm });
    match t.format(group, &ev).map(|s| Format::parse(&s)) {
        Ok(Ok(f)) if max(&f) <= probes::RECORD_LIMIT => Some(f),
        other => {
            log::warn!("kprobe capture: {group}/{ev} not used: {other:?}");
            let _ = t.write_event(&probes::removal(group, &ev));
            None
        }
    }
}

/// Defines the entry probe (arrays first, one field per word on kernels
/// before 5.1); returns its format, the record bound checked.
fn define_entry(t: &Tracefs, group: &str) -> Result<Format, Unavailable> {
    let ev = probes::entry_event(group);
    let mut last = None;
    for arrays in [true, false] {
        match t.write_event(&probes::entry_definition(group, arrays)) {
            Ok(()) => {
                let f = t
                    .format(group, &ev)
                    .map_err(|e| e.to_string())
                    .and_then(|s| Format::parse(&s).map_err(|e| e.to_string()));
                return match f {
                    Ok(f) if f.fixed_size <= probes::RECORD_LIMIT => Ok(f),
                    Ok(f) => Err(unavailable(format!(
                        "{group}/{ev} records of {} bytes",
                        f.fixed_size
                    ))),
                    Err(e) => Err(unavailable(format!("format of {group}/{ev}: {e}"))),
                };
            }
            Err(e) => last = Some(e),
        }
    }
    let e = last.unwrap_or_else(|| io::Error::from_raw_os_error(libc::EINVAL));
    Err(unavailable(tracefs::refusal(&e, t, Path::new("/"))))
}

fn perf_refused(e: &io::Error) -> Unavailable {
    let hint = match e.raw_os_error() {
        Some(libc::EPERM) | Some(libc::EACCES) => {
            " (needs CAP_PERFMON or CAP_SYS_ADMIN, and perf_event_open allowed by seccomp: it is in @debug)"
        }
        Some(libc::ENOSYS) => " (no perf events in this kernel, or no user-stack sampling)",
        _ => "",
    };
    unavailable(format!("perf_event_open on a kprobe event: {e}{hint}"))
}

/// Removes the events of sensors that are gone; a busy event (a live
/// sensor in another pid namespace) stays.
fn remove_stale(t: &Tracefs, ours: &str, root: &Path) {
    let Ok(listing) = t.kprobe_events() else {
        return;
    };
    for (g, e) in probes::stale_events(&listing, ours, |pid| start_time(root, pid)) {
        match t.write_event(&probes::removal(&g, &e)) {
            Ok(()) => log::info!("kprobe capture: removed {g}/{e}, left by a sensor that is gone"),
            Err(err) => log::debug!("kprobe capture: {g}/{e} kept: {err}"),
        }
    }
}

/// Field 22 of /proc/<pid>/stat (clock ticks since boot).
fn start_time(root: &Path, pid: u32) -> Option<u64> {
    let s = fs::read_to_string(root.join(format!("proc/{pid}/stat"))).ok()?;
    parse_start_time(&s)
}

fn parse_start_time(stat: &str) -> Option<u64> {
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(19)?.parse().ok()
}

fn own_start_time(root: &Path) -> u64 {
    start_time(root, std::process::id()).unwrap_or(0)
}

/// All rings together stay within [`RINGS_BYTES_MAX`]: `requested` pages
/// per CPU, fewer on a large host, a power of two, at least 16 (four
/// samples of the default dump).
fn ring_pages(requested: usize, cpus: usize) -> usize {
    let cap = RINGS_BYTES_MAX / 4096 / cpus.max(1);
    requested.min(cap).max(16).next_power_of_two()
}

fn online_cpus(root: &Path) -> Vec<u32> {
    let s = fs::read_to_string(root.join("sys/devices/system/cpu/online")).unwrap_or_default();
    let cpus = parse_cpu_list(&s);
    if cpus.is_empty() {
        let n = std::thread::available_parallelism().map_or(1, |n| n.get());
        return (0..n as u32).collect();
    }
    cpus
}

fn parse_cpu_list(s: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for r in s.trim().split(',').filter(|r| !r.is_empty()) {
        let (a, b) = r.split_once('-').unwrap_or((r, r));
        if let (Ok(a), Ok(b)) = (a.parse::<u32>(), b.parse::<u32>()) {
            out.extend(a..=b.min(a + 4095));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_and_cpu_lists() {
        let stat =
            "1234 (a b) c) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 98765 1000 200";
        assert_eq!(parse_start_time(stat), Some(98765));
        assert_eq!(parse_cpu_list("0-3,5\n"), vec![0, 1, 2, 3, 5]);
        assert_eq!(parse_cpu_list(""), Vec::<u32>::new());
    }

    #[test]
    fn rings_are_bounded_in_total() {
        assert_eq!(ring_pages(DEFAULT_RING_PAGES, 2), 1024);
        assert_eq!(ring_pages(DEFAULT_RING_PAGES, 64), 256);
        assert_eq!(ring_pages(DEFAULT_RING_PAGES, 4096), 16);
        assert_eq!(ring_pages(3, 1), 16);
        assert_eq!(ring_pages(1000, 1), 1024);
    }

    #[test]
    fn unavailable_on_a_fake_tracefs_root() {
        let d = tempfile::tempdir().unwrap();
        let mut opts = Options::new(4096);
        opts.root = d.path().to_path_buf();
        let err = KprobeSource::open(opts.clone()).err().unwrap();
        assert_eq!(err.source, "kprobe");
        assert!(err.reason.contains("tracefs"), "{}", err.reason);
        fs::create_dir_all(d.path().join("sys/kernel/tracing/events")).unwrap();
        let err = KprobeSource::open(opts).err().unwrap();
        assert!(
            err.reason.contains("CONFIG_KPROBE_EVENTS"),
            "{}",
            err.reason
        );
    }
}
