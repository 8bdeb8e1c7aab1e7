//! The kprobe capture source: ftrace kprobe events on `start_thread`,
//! read through perf rings. It fires once per successful exec, after the
//! new stack is built and before the new program runs, so it sees exactly
//! the argv the program receives; nobody waits for it.
//!
//! Layout of the probes: [`probes`]; their records: [`format`]; from the
//! records to an argv: [`args`]; the rings: [`perf`]; tracefs and why a
//! kernel cannot do it: [`tracefs`].

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
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};

use crate::capture::{ArgsSource, Capture, CaptureSource, Decider, Unavailable};
use crate::counters::{Counter, Counters};

use format::Format;
use perf::{Record, Ring};
use probes::{Features, Part};
use tracefs::Tracefs;

/// Data pages of each CPU's ring (power of two): 1 MiB with 4 KiB pages,
/// about 500 execs of a full part set between two drains.
pub const DEFAULT_RING_PAGES: usize = 256;
/// Probes on `start_thread`: each costs its reads on every exec, so the
/// block they cover is bounded (about 7.7 KiB); longer argv is flagged and
/// completed from `/proc/<pid>/cmdline`.
pub const DEFAULT_MAX_PARTS: usize = 4;
/// A group still missing parts this long after its first record is given
/// up as incomplete (the parts of one exec are written within microseconds).
const PART_WAIT: Duration = Duration::from_millis(20);

#[derive(Debug, Clone)]
pub struct Options {
    pub max_args_bytes: usize,
    pub ring_pages: usize,
    pub max_parts: usize,
    /// `/` on a host; tests point it at a fake tree.
    pub root: PathBuf,
}

impl Options {
    pub fn new(max_args_bytes: usize) -> Options {
        Options {
            max_args_bytes,
            ring_pages: DEFAULT_RING_PAGES,
            max_parts: DEFAULT_MAX_PARTS,
            root: PathBuf::from("/"),
        }
    }
}

struct PartInfo {
    part: Part,
    format: Format,
}

/// What a ring holds of the exec whose parts are arriving.
struct Pending {
    pid: u32,
    sp: u64,
    seen: u32,
    first_seen: Instant,
    argc: Option<u64>,
    comm: Option<Vec<u8>>,
    pointers: Vec<u64>,
    block: Vec<u8>,
}

struct CpuRing {
    ring: Ring,
    leader: i32,
    pending: Option<Pending>,
}

#[derive(Default)]
struct Tally {
    records: u64,
    lost: u64,
    incomplete: u64,
    corrupt: u64,
    cut: u64,
}

pub struct KprobeSource {
    tracefs: Tracefs,
    group: String,
    parts: Vec<PartInfo>,
    rings: Vec<CpuRing>,
    fds: Vec<OwnedFd>,
    opts: Options,
    block_len: usize,
    tally: Tally,
    /// Block buffers of finished groups, reused.
    spare: Vec<Vec<u8>>,
}

fn unavailable(reason: impl Into<String>) -> Unavailable {
    Unavailable {
        source: "kprobe",
        reason: reason.into(),
    }
}

impl KprobeSource {
    /// Defines the probes (the richest layout the kernel accepts), removes
    /// probes of sensors that are gone, and opens the rings.
    pub fn open(opts: Options) -> Result<KprobeSource, Unavailable> {
        let t = tracefs::find(&opts.root).map_err(unavailable)?;
        tracefs::precheck(&opts.root, &t).map_err(unavailable)?;
        let (pid, start) = (std::process::id(), own_start_time(&opts.root));
        let group = probes::group_name(pid, start);
        remove_stale(&t, &group, &opts.root);
        let parts = define(&t, &group, &opts)?;
        let mut src = KprobeSource {
            tracefs: t,
            group,
            block_len: parts.iter().map(|p| p.part.block_len).sum(),
            parts,
            rings: Vec::new(),
            fds: Vec::new(),
            opts,
            tally: Tally::default(),
            spare: Vec::new(),
        };
        // On error, Drop removes what was defined.
        src.open_rings()?;
        Ok(src)
    }

    pub fn group(&self) -> &str {
        &self.group
    }

    /// Bytes of arg block the probes read per exec.
    pub fn block_len(&self) -> usize {
        self.block_len
    }

    fn open_rings(&mut self) -> Result<(), Unavailable> {
        let cpus = online_cpus(&self.opts.root);
        let page = 4096usize;
        let watermark = u32::try_from(self.opts.ring_pages.max(1).next_power_of_two() * page / 4).unwrap_or(u32::MAX);
        let mut monotonic = true;
        for cpu in cpus {
            let mut leader: Option<(OwnedFd, Ring)> = None;
            for p in &self.parts {
                let fd = match perf::open(u64::from(p.format.id), cpu, watermark, monotonic) {
                    Ok(fd) => fd,
                    Err(e) if monotonic && matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::E2BIG)) => {
                        monotonic = false;
                        perf::open(u64::from(p.format.id), cpu, watermark, false)
                            .map_err(|e| perf_refused(&e))?
                    }
                    // A CPU that went offline since the list was read.
                    Err(e) if e.raw_os_error() == Some(libc::ENODEV) => break,
                    Err(e) => return Err(perf_refused(&e)),
                };
                match &leader {
                    None => {
                        let ring = Ring::map(&fd, self.opts.ring_pages)
                            .map_err(|e| unavailable(format!("mmap of a perf ring: {e}")))?;
                        leader = Some((fd, ring));
                    }
                    Some((l, _)) => {
                        perf::set_output(&fd, l).map_err(|e| unavailable(format!("PERF_EVENT_IOC_SET_OUTPUT: {e}")))?;
                        self.fds.push(fd);
                    }
                }
            }
            if let Some((fd, ring)) = leader {
                self.rings.push(CpuRing {
                    ring,
                    leader: fd.as_raw_fd(),
                    pending: None,
                });
                self.fds.push(fd);
            }
        }
        if self.rings.is_empty() {
            return Err(unavailable("no CPU accepted a perf event"));
        }
        for fd in &self.fds {
            perf::enable(fd).map_err(|e| unavailable(format!("enabling a perf event: {e}")))?;
        }
        Ok(())
    }

    /// Leader fds, one per ring, in ring order (for the loop's poll).
    fn leaders(&self) -> Vec<i32> {
        self.rings.iter().map(|r| r.leader).collect()
    }

    fn drain_ring(&mut self, i: usize, out: &mut Vec<Capture>) {
        let mut recs: Vec<Vec<u8>> = Vec::new();
        // Records are copied out first: the decode below needs &mut self.
        self.rings[i].ring.drain(|r| recs.push(r.to_vec()));
        for r in &recs {
            self.on_record(i, r, out);
        }
        self.expire(i, Instant::now(), out);
    }

    fn on_record(&mut self, i: usize, rec: &[u8], out: &mut Vec<Capture>) {
        match perf::decode(rec) {
            Record::Sample { pid, raw, .. } => {
                self.tally.records += 1;
                self.on_sample(i, pid, raw, out);
            }
            Record::Lost(n) => {
                self.tally.lost += n;
                // The parts after those already here were among the lost.
                self.finish(i, out);
            }
            Record::Other => {}
            Record::Corrupt => self.tally.corrupt += 1,
        }
    }

    fn on_sample(&mut self, i: usize, pid: u32, raw: &[u8], out: &mut Vec<Capture>) {
        let Some(id) = raw.get(..2).map(|b| u16::from_ne_bytes([b[0], b[1]])) else {
            self.tally.corrupt += 1;
            return;
        };
        let Some(k) = self.parts.iter().position(|p| p.format.id == id) else {
            self.tally.corrupt += 1;
            return;
        };
        let f = &self.parts[k].format;
        let Some(sp) = f.u64_of(raw, "sp") else {
            self.tally.corrupt += 1;
            return;
        };
        let same = matches!(&self.rings[i].pending, Some(p) if p.pid == pid && p.sp == sp && p.seen & (1 << k) == 0);
        if !same {
            self.finish(i, out);
            let block = self.spare.pop().unwrap_or_default();
            self.rings[i].pending = Some(Pending {
                pid,
                sp,
                seen: 0,
                first_seen: Instant::now(),
                argc: None,
                comm: None,
                pointers: Vec::new(),
                block,
            });
        }
        let info = &self.parts[k];
        let block_len = self.block_len;
        let Some(p) = self.rings[i].pending.as_mut() else { return };
        p.seen |= 1 << k;
        p.block.resize(block_len, 0);
        let mut at = info.part.block_start;
        for j in 0.. {
            let Some(b) = info.format.bytes_of(raw, &probes::block_field(j)) else { break };
            p.block[at..at + b.len()].copy_from_slice(b);
            at += b.len();
        }
        if k == 0 {
            p.argc = info.format.u64_of(raw, "argc");
            p.comm = info.format.string_of(raw, "comm").map(<[u8]>::to_vec);
            p.pointers.clear();
            if let Some(b) = info.format.bytes_of(raw, "p") {
                p.pointers.extend(b.chunks_exact(8).map(|c| u64::from_ne_bytes(c.try_into().unwrap_or_default())));
            } else {
                for j in 0..probes::POINTERS {
                    match info.format.u64_of(raw, &probes::pointer_field(j)) {
                        Some(v) => p.pointers.push(v),
                        None => break,
                    }
                }
            }
        }
        if p.seen == (1u32 << self.parts.len()) - 1 {
            self.finish(i, out);
        }
    }

    /// Turns the ring's pending group into a capture.
    fn finish(&mut self, i: usize, out: &mut Vec<Capture>) {
        let Some(mut p) = self.rings[i].pending.take() else { return };
        let all = (1u32 << self.parts.len()) - 1;
        if p.seen != all {
            self.tally.incomplete += 1;
        }
        let mut cap = Capture {
            pid: p.pid,
            comm: p.comm.take(),
            source: ArgsSource::Kprobe,
            ..Capture::default()
        };
        match p.argc {
            Some(argc) => {
                // The parts received, in block order, up to the first gap.
                let mut end = 0;
                for (k, info) in self.parts.iter().enumerate() {
                    if p.seen & (1 << k) == 0 {
                        break;
                    }
                    end = info.part.block_start + info.part.block_len;
                }
                let a = args::split(argc, &p.pointers, &p.block[..end], self.opts.max_args_bytes);
                if a.truncated {
                    self.tally.cut += 1;
                }
                cap.argv = a.bytes;
                cap.truncated = a.truncated;
                cap.args_read = true;
            }
            // Part 0 lost: the exec is known, its argv is not.
            None => cap.truncated = true,
        }
        p.block.clear();
        self.spare.push(p.block);
        out.push(cap);
    }

    fn expire(&mut self, i: usize, now: Instant, out: &mut Vec<Capture>) {
        if matches!(&self.rings[i].pending, Some(p) if now.duration_since(p.first_seen) >= PART_WAIT) {
            self.finish(i, out);
        }
    }

    fn remove_own(&mut self) {
        // The events are busy while a perf fd holds them.
        self.rings.clear();
        self.fds.clear();
        for p in &self.parts {
            let _ = self.tracefs.write_event(&probes::removal(&self.group, &p.part.event));
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

    fn register(&mut self, registry: &Registry, first: Token) -> io::Result<usize> {
        let leaders = self.leaders();
        for (i, fd) in leaders.iter().enumerate() {
            registry.register(&mut SourceFd(fd), Token(first.0 + i), Interest::READABLE)?;
        }
        Ok(leaders.len())
    }

    fn on_ready(&mut self, token: Option<Token>, _decider: &mut dyn Decider, out: &mut Vec<Capture>) {
        // Ring order is token order; the join's request drains them all.
        let _ = token;
        for i in 0..self.rings.len() {
            self.drain_ring(i, out);
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.rings
            .iter()
            .filter_map(|r| r.pending.as_ref().map(|p| p.first_seen + PART_WAIT))
            .min()
    }

    fn counters(&self, out: &mut Counters) {
        out.add(Counter::KprobeRecords, self.tally.records);
        out.add(Counter::KprobeLost, self.tally.lost);
        out.add(Counter::KprobeIncomplete, self.tally.incomplete);
        out.add(Counter::KprobeCorrupt, self.tally.corrupt);
        out.add(Counter::KprobeCut, self.tally.cut);
    }
}

/// Tries layouts from the richest down; returns the parts as defined and
/// their formats, every record bound checked against the format.
fn define(t: &Tracefs, group: &str, opts: &Options) -> Result<Vec<PartInfo>, Unavailable> {
    let layouts = [
        Features { arrays: true, comm: true },
        Features { arrays: true, comm: false },
        Features { arrays: false, comm: true },
        Features { arrays: false, comm: false },
    ];
    let mut last = String::new();
    for features in layouts {
        let parts = probes::parts(group, features, opts.max_args_bytes, opts.max_parts);
        let mut defined = Vec::new();
        let mut refused = None;
        for p in &parts {
            match t.write_event(&p.definition) {
                Ok(()) => defined.push(p),
                Err(e) => {
                    refused = Some(e);
                    break;
                }
            }
        }
        if let Some(e) = refused {
            for p in &defined {
                let _ = t.write_event(&probes::removal(group, &p.event));
            }
            last = tracefs::refusal(&e, t, &opts.root);
            // Only a parse refusal makes a simpler layout worth trying.
            if e.raw_os_error() != Some(libc::EINVAL) {
                return Err(unavailable(last));
            }
            continue;
        }
        let mut infos = Vec::new();
        for p in parts {
            let text = t.format(group, &p.event);
            let format = match text.as_deref().map(Format::parse) {
                Ok(Ok(f)) => f,
                Ok(Err(e)) => return Err(remove_all(t, group, &infos, &p, format!("format of {group}/{}: {e}", p.event))),
                Err(e) => return Err(remove_all(t, group, &infos, &p, format!("format of {group}/{}: {e}", p.event))),
            };
            let max = format.fixed_size + if features.comm && p.block_start == 0 { probes::COMM_MAX } else { 0 };
            if max > probes::RECORD_LIMIT {
                return Err(remove_all(
                    t,
                    group,
                    &infos,
                    &p,
                    format!("{group}/{} records could reach {max} bytes, above the perf limit {}", p.event, probes::RECORD_LIMIT),
                ));
            }
            infos.push(PartInfo { part: p, format });
        }
        log::info!(
            "kprobe capture: {} probes on {} ({}), {} bytes of argv block per exec",
            infos.len(),
            probes::SYMBOL,
            if features.arrays { "array fetches" } else { "scalar fetches" },
            infos.iter().map(|i| i.part.block_len).sum::<usize>()
        );
        return Ok(infos);
    }
    Err(unavailable(last))
}

fn remove_all(t: &Tracefs, group: &str, infos: &[PartInfo], p: &Part, why: String) -> Unavailable {
    for i in infos {
        let _ = t.write_event(&probes::removal(group, &i.part.event));
    }
    let _ = t.write_event(&probes::removal(group, &p.event));
    // Parts after `p` were defined too.
    if let Ok(listing) = t.kprobe_events() {
        for (g, e) in probes::listed_events(&listing) {
            if g == group {
                let _ = t.write_event(&probes::removal(&g, &e));
            }
        }
    }
    unavailable(why)
}

fn perf_refused(e: &io::Error) -> Unavailable {
    let hint = match e.raw_os_error() {
        Some(libc::EPERM) | Some(libc::EACCES) => " (needs CAP_PERFMON or CAP_SYS_ADMIN, and perf_event_open allowed by seccomp: it is in @debug)",
        Some(libc::ENOSYS) => " (no perf events in this kernel)",
        _ => "",
    };
    unavailable(format!("perf_event_open on a kprobe event: {e}{hint}"))
}

/// Removes the events of sensors that are gone; a busy event (a live
/// sensor in another pid namespace) stays.
fn remove_stale(t: &Tracefs, ours: &str, root: &Path) {
    let Ok(listing) = t.kprobe_events() else { return };
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
        let stat = "1234 (a b) c) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 98765 1000 200";
        assert_eq!(parse_start_time(stat), Some(98765));
        assert_eq!(parse_cpu_list("0-3,5\n"), vec![0, 1, 2, 3, 5]);
        assert_eq!(parse_cpu_list(""), Vec::<u32>::new());
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
        assert!(err.reason.contains("CONFIG_KPROBE_EVENTS"), "{}", err.reason);
    }
}
