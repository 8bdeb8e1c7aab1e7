//! The exec join: pairs each proc-connector exec with the argv capture of
//! the same exec, from whichever capture source supplied it.
//!
//! PURE. A capture is taken at exec time, before the proc connector's exec
//! event of the same task is read (a source is drained before each join).
//! A process can exec again before its first event is handled, hence a
//! small queue per tgid, in exec order, paired by time (`take_for`). A
//! capture whose exec failed after the source saw it has no partner: it is
//! skipped at the pid's next exec or expires, counted either way. Bounded in
//! count and in bytes (argv can be large, and failing execs are cheap to
//! make): when full, the new capture is dropped and counted, and its exec
//! falls back to `/proc/<pid>/cmdline`.

use std::collections::{HashMap, VecDeque};

use crate::capture::Capture;
use crate::counters::{Counter, Counters};

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CaptureStats {
    pub matched: u64,
    /// Captures skipped because they were not the exec being reported (an
    /// earlier exec of the same process that failed after the open).
    pub mismatched: u64,
    pub expired: u64,
    pub dropped_full: u64,
}

/// Bytes of argv and paths held at most.
pub const MAX_PENDING_BYTES: usize = 64 << 20;

/// What a queued capture holds, in bytes (every queue of captures is
/// bounded by it).
pub fn capture_bytes(c: &Capture) -> usize {
    c.argv.len()
        + c.executable.len()
        + c.filename.len()
        + c.envp.as_ref().map_or(0, Vec::len)
        + c.cgroup.as_ref().map_or(0, String::len)
        + 64
}

pub struct ExecJoin {
    by_pid: HashMap<u32, VecDeque<(u64, Capture)>>,
    len: usize,
    bytes: usize,
    capacity: usize,
    max_age_ms: u64,
    pub stats: CaptureStats,
}

impl ExecJoin {
    pub fn new(capacity: usize, max_age_ms: u64) -> Self {
        ExecJoin {
            by_pid: HashMap::new(),
            len: 0,
            bytes: 0,
            capacity,
            max_age_ms,
            stats: CaptureStats::default(),
        }
    }

    pub fn counters(&self, out: &mut Counters) {
        let s = &self.stats;
        out.add(Counter::CapturesMatched, s.matched);
        out.add(Counter::CapturesMismatched, s.mismatched);
        out.add(Counter::CapturesExpired, s.expired);
        out.add(Counter::CapturesDropped, s.dropped_full);
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn push(&mut self, capture: Capture, now_ms: u64) {
        let w = capture_bytes(&capture);
        if self.len >= self.capacity || self.bytes + w > MAX_PENDING_BYTES {
            self.stats.dropped_full += 1;
            return;
        }
        self.len += 1;
        self.bytes += w;
        self.by_pid
            .entry(capture.pid)
            .or_default()
            .push_back((now_ms, capture));
    }

    /// The oldest capture of `pid`, for its proc-connector exec event.
    pub fn take(&mut self, pid: u32) -> Option<Capture> {
        let q = self.by_pid.get_mut(&pid)?;
        let (_, c) = q.pop_front()?;
        if q.is_empty() {
            self.by_pid.remove(&pid);
        }
        self.len -= 1;
        self.bytes -= capture_bytes(&c);
        self.stats.matched += 1;
        Some(c)
    }

    /// The capture of the exec the proc connector reports for `pid` at
    /// `exec_ns` (CLOCK_MONOTONIC), given the kernel's comm read from
    /// `/proc` since (`None`: the process is gone).
    ///
    /// Captures with a time stamp are paired by time: the last one of the
    /// pid from before the exec is its own; older ones are from execs that
    /// failed after the source saw them (or whose events were lost), and
    /// are skipped and counted; younger ones wait for the pid's next exec.
    /// So a failed `execve("/tmp/junk", …)` never lends its argv to the
    /// next exec, a program that renames itself at once (`prctl
    /// PR_SET_NAME`) keeps its own, and of two quick execs each gets its own.
    ///
    /// Without time stamps the comm decides: older captures that do not fit
    /// it are skipped. That comm is the last exec's and may have been
    /// changed by the program since, so it is only the fallback.
    pub fn take_for(&mut self, pid: u32, comm: Option<&[u8]>, exec_ns: u64) -> Option<Capture> {
        let q = self.by_pid.get(&pid)?;
        if exec_ns != 0 && q.front().is_some_and(|(_, c)| c.ns.is_some()) {
            let before = q
                .iter()
                .take_while(|(_, c)| c.ns.is_some_and(|t| t <= exec_ns))
                .count();
            if before == 0 {
                return None;
            }
            for _ in 1..before {
                self.skip(pid, comm);
            }
            return self.take(pid);
        }
        let Some(comm) = comm else {
            return self.take(pid);
        };
        loop {
            let fits = comm_fits(&self.by_pid.get(&pid)?.front()?.1, comm);
            if fits {
                return self.take(pid);
            }
            self.skip(pid, Some(comm));
        }
    }

    /// Drops the oldest capture of `pid`: not the exec being reported.
    fn skip(&mut self, pid: u32, comm: Option<&[u8]>) {
        if let Some(c) = self.take(pid) {
            self.stats.matched -= 1;
            self.stats.mismatched += 1;
            log::debug!(
                "join: pid {pid} capture skipped: its comm {:?}, the exec's {:?}",
                c.comm.as_deref().map(String::from_utf8_lossy),
                comm.map(String::from_utf8_lossy)
            );
        }
    }

    /// Drops captures older than the maximum age (execs that failed after
    /// the open, or whose event the kernel dropped).
    pub fn expire(&mut self, now_ms: u64) {
        let max_age = self.max_age_ms;
        let mut expired = 0;
        let mut freed = 0;
        self.by_pid.retain(|_, q| {
            while q
                .front()
                .is_some_and(|(at, _)| now_ms.saturating_sub(*at) > max_age)
            {
                if let Some((_, c)) = q.pop_front() {
                    freed += capture_bytes(&c);
                }
                expired += 1;
            }
            !q.is_empty()
        });
        self.len -= expired;
        self.bytes -= freed;
        self.stats.expired += expired as u64;
    }
}

/// Whether `comm` is what the kernel sets after the exec of `c`: the
/// source's own reading when it fired after the exec, else derived from the
/// path given to execve.
fn comm_fits(c: &Capture, comm: &[u8]) -> bool {
    const COMM_MAX: usize = 15;
    if let Some(seen) = &c.comm {
        return seen.as_slice() == comm;
    }
    if c.filename.is_empty() {
        // fexecve / execveat(fd, "", AT_EMPTY_PATH): the kernel names the
        // file "/dev/fd/N", so comm is the descriptor number.
        return !comm.is_empty() && comm.iter().all(u8::is_ascii_digit);
    }
    let base = c
        .filename
        .rsplit(|&b| b == b'/')
        .next()
        .unwrap_or(&c.filename);
    base[..base.len().min(COMM_MAX)] == *comm
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cap(pid: u32, arg: &str) -> Capture {
        Capture {
            pid,
            argv: arg.as_bytes().to_vec(),
            filename: format!("/usr/bin/{arg}").into_bytes(),
            syscall: 59,
            args_read: true,
            ..Default::default()
        }
    }

    #[test]
    fn takes_in_exec_order_per_pid() {
        let mut p = ExecJoin::new(8, 1000);
        p.push(cap(1, "first"), 0);
        p.push(cap(2, "other"), 0);
        p.push(cap(1, "second"), 1);
        assert_eq!(p.take(1).unwrap().argv, b"first");
        assert_eq!(p.take(1).unwrap().argv, b"second");
        assert!(p.take(1).is_none());
        assert_eq!(p.len(), 1);
        assert_eq!(p.stats.matched, 2);
    }

    #[test]
    fn a_failed_exec_never_lends_its_argv_to_the_next() {
        let mut p = ExecJoin::new(8, 1000);
        p.push(cap(7, "junk"), 0); // execve("/usr/bin/junk") failed after the open
        p.push(cap(7, "kubectl"), 1);
        let c = p.take_for(7, Some(b"kubectl"), 0).unwrap();
        assert_eq!(c.argv, b"kubectl");
        assert_eq!(p.stats.mismatched, 1);
        assert_eq!(p.stats.matched, 1);
        assert!(p.is_empty());
        // Only a stale capture: nothing is taken for the real exec.
        p.push(cap(8, "junk"), 0);
        assert!(p.take_for(8, Some(b"ls"), 0).is_none());
        assert_eq!(p.stats.mismatched, 2);
    }

    fn timed(pid: u32, arg: &str, comm: &str, ns: u64) -> Capture {
        Capture {
            comm: Some(comm.as_bytes().to_vec()),
            filename: Vec::new(),
            ns: Some(ns),
            ..cap(pid, arg)
        }
    }

    #[test]
    fn a_program_that_renames_itself_keeps_its_capture() {
        // busybox re-exec'd as /proc/self/exe (comm "exe") names itself
        // "sed" before /proc is read.
        let mut p = ExecJoin::new(8, 1000);
        p.push(timed(5, "sed", "exe", 100), 0);
        let c = p.take_for(5, Some(b"sed"), 150).unwrap();
        assert_eq!(c.argv, b"sed");
        assert_eq!(p.stats.mismatched, 0);
    }

    #[test]
    fn two_quick_execs_each_get_their_own_capture() {
        // `sh -c 'exec kubectl …'`: by the time the first exec is handled,
        // /proc already shows the second program.
        let mut p = ExecJoin::new(8, 1000);
        p.push(timed(9, "sh", "sh", 100), 0);
        p.push(timed(9, "kubectl", "kubectl", 300), 0);
        assert_eq!(p.take_for(9, Some(b"kubectl"), 200).unwrap().argv, b"sh");
        assert_eq!(
            p.take_for(9, Some(b"kubectl"), 400).unwrap().argv,
            b"kubectl"
        );
        assert_eq!((p.stats.matched, p.stats.mismatched), (2, 0));
    }

    #[test]
    fn by_time_an_older_capture_is_skipped_and_a_younger_one_waits() {
        let mut p = ExecJoin::new(8, 1000);
        // A failed exec (seen, never completed), then the real one.
        p.push(timed(3, "junk", "junk", 100), 0);
        p.push(timed(3, "ls", "ls", 200), 0);
        assert_eq!(p.take_for(3, None, 250).unwrap().argv, b"ls");
        assert_eq!(p.stats.mismatched, 1);
        // This exec's record was lost; the next exec's is already here and
        // is not lent to it.
        p.push(timed(3, "next", "next", 500), 0);
        assert!(p.take_for(3, Some(b"next"), 400).is_none());
        assert_eq!(p.take_for(3, None, 600).unwrap().argv, b"next");
        assert!(p.is_empty());
    }

    #[test]
    fn comm_is_cut_at_15_and_fd_execs_have_numbers() {
        let mut long = cap(1, "x");
        long.filename = b"/opt/kube-controller-manager".to_vec();
        assert!(comm_fits(&long, b"kube-controller"));
        let mut fd = cap(1, "x");
        fd.filename.clear();
        assert!(comm_fits(&fd, b"3"));
        assert!(!comm_fits(&fd, b"sh"));
    }

    #[test]
    fn a_comm_seen_by_the_source_decides() {
        let mut c = cap(1, "x");
        c.filename.clear();
        c.comm = Some(b"kubectl".to_vec());
        assert!(comm_fits(&c, b"kubectl"));
        assert!(
            !comm_fits(&c, b"3"),
            "not the fd-exec rule when comm is known"
        );
    }

    #[test]
    fn unmatched_captures_expire_and_are_counted() {
        let mut p = ExecJoin::new(8, 100);
        p.push(cap(1, "failed exec"), 0);
        p.push(cap(2, "young"), 150);
        p.expire(200);
        assert_eq!(p.stats.expired, 1);
        assert!(p.take(1).is_none());
        assert!(p.take(2).is_some());
        assert!(p.is_empty());
    }

    #[test]
    fn byte_budget_bounds_big_argv() {
        let mut p = ExecJoin::new(1000, 100);
        let mut big = cap(1, "x");
        big.argv = vec![b'a'; MAX_PENDING_BYTES / 2];
        p.push(big.clone(), 0);
        p.push(big.clone(), 0);
        assert_eq!(p.len(), 1, "the second would pass the byte budget");
        assert_eq!(p.stats.dropped_full, 1);
        p.take(1);
        p.push(big, 0);
        assert_eq!(p.len(), 1, "taking frees its bytes");
    }

    #[test]
    fn full_store_drops_and_counts() {
        let mut p = ExecJoin::new(1, 100);
        p.push(cap(1, "a"), 0);
        p.push(cap(2, "b"), 0);
        assert_eq!(p.stats.dropped_full, 1);
        assert_eq!(p.len(), 1);
    }
}
