//! The I/O half of enrichment: `/proc/<pid>` read into [`ProcFacts`] as
//! soon as an exec is reported (short-lived processes vanish), with the
//! capture source's argv and environment taking the place of `cmdline`
//! and `environ` when the join found one.

use crate::enrich::ProcFacts;
use crate::fanotify::ExecCapture;
use crate::procfs::{PidDir, ProcFs, Stat};

/// What was read of an exec'd process before its turn came: the directory
/// (so the rest is read from the same process; `None` when it was gone
/// already), and what a short-lived process loses first.
pub struct Prefetched {
    dir: Option<PidDir>,
    stat: Option<Stat>,
    /// The cmdline and whether it was cut; `None` when the read failed.
    cmdline: Option<(Vec<u8>, bool)>,
}

impl Prefetched {
    /// The comm of the `stat` read, if it was.
    pub fn comm(&self) -> Option<&[u8]> {
        self.stat.as_ref().map(|s| s.comm.as_slice())
    }
}

/// Reads `/proc/<pid>` for enrichment, bounded by `max_args_bytes`.
pub struct ProcReader {
    pub procfs: ProcFs,
    pub max_args_bytes: usize,
    /// `sensor.capture_env_vars`: empty turns `process.env_vars` off.
    pub env_vars: Vec<String>,
}

impl ProcReader {
    pub fn new(procfs: ProcFs, max_args_bytes: usize) -> Self {
        ProcReader {
            procfs,
            max_args_bytes,
            env_vars: Vec::new(),
        }
    }

    /// Reads what an exec event needs. `full` also reads the costlier facts
    /// (cwd, login ids) that only the exec'ing process needs. A capture
    /// replaces the cmdline and exe reads. A vanished process is not an
    /// error: the facts stay partial.
    pub fn read(&self, pid: u32, full: bool, capture: Option<ExecCapture>) -> ProcFacts {
        self.read_limited(pid, full, capture, self.max_args_bytes)
    }

    /// The directory and `stat` of `pid`, read before its capture is
    /// chosen (the comm decides where captures carry no time stamp).
    pub fn open_stat(&self, pid: u32) -> Prefetched {
        let mut dir = self.procfs.dir(pid).ok();
        let stat = dir.as_mut().and_then(|d| d.stat(pid).ok());
        Prefetched {
            dir,
            stat,
            cmdline: None,
        }
    }

    /// Proc mode, as the exec's kernel message is read: `cmdline`, then
    /// `stat`, of a process that may be gone by the time its exec is
    /// enriched.
    pub fn prefetch(&self, pid: u32) -> Prefetched {
        let mut dir = self.procfs.dir(pid).ok();
        let mut cmdline = None;
        let mut stat = None;
        if let Some(d) = dir.as_mut() {
            let mut buf = Vec::new();
            cmdline = d
                .cmdline(&mut buf, self.max_args_bytes)
                .ok()
                .map(|t| (buf, t));
            stat = d.stat(pid).ok();
        }
        Prefetched { dir, stat, cmdline }
    }

    /// [`Self::read`] completing what [`Self::open_stat`] or
    /// [`Self::prefetch`] read: neither the directory nor a file is read
    /// twice.
    pub fn read_from(&self, pid: u32, capture: Option<ExecCapture>, pre: Prefetched) -> ProcFacts {
        self.read_inner(pid, true, capture, self.max_args_bytes, Some(pre))
    }

    /// [`Self::read`] keeping at most `max_args` bytes of cmdline (a `/proc`
    /// scan only needs what the table keeps for children).
    pub fn read_limited(
        &self,
        pid: u32,
        full: bool,
        capture: Option<ExecCapture>,
        max_args: usize,
    ) -> ProcFacts {
        self.read_inner(pid, full, capture, max_args, None)
    }

    fn read_inner(
        &self,
        pid: u32,
        full: bool,
        capture: Option<ExecCapture>,
        max_args: usize,
        pre: Option<Prefetched>,
    ) -> ProcFacts {
        let mut f = ProcFacts {
            pid,
            ..Default::default()
        };
        let (dir, stat, mut cmdline) = match pre {
            Some(p) => (p.dir, p.stat, p.cmdline),
            None => (self.procfs.dir(pid).ok(), None, None),
        };
        if let Some(c) = capture {
            if let Some(cg) = c.cgroup {
                f.cgroup = cg;
            }
            f.cmdline = c.argv;
            f.cmdline_truncated = c.truncated;
            f.exe = (!c.executable.is_empty()).then_some(c.executable);
            f.interpreter = c.interpreter;
            f.exe_file = c.file;
            f.captured = true;
            f.capture_source = c.source.as_str();
            if let Some(envp) = &c.envp {
                f.set_env_from_envp(envp, &self.env_vars, self.max_args_bytes);
            }
        }
        let Some(mut d) = dir else {
            f.gone = true;
            return f;
        };
        // cmdline first: it is what a short-lived process loses first.
        if !f.captured {
            let read = match cmdline.take() {
                Some((c, t)) => {
                    f.cmdline = c;
                    Ok(t)
                }
                None => d.cmdline(&mut f.cmdline, max_args),
            };
            match read {
                Ok(t) => f.cmdline_truncated = t,
                Err(_) => f.cmdline.clear(),
            }
        } else if f.cmdline_truncated {
            // Cut by its source: completed from /proc while the process
            // lives (still flagged truncated), when /proc agrees on the
            // captured prefix.
            let mut full = Vec::new();
            let prefix = &f.cmdline[..f.cmdline.len().saturating_sub(1)];
            if d.cmdline(&mut full, max_args).is_ok()
                && full.len() > f.cmdline.len()
                && full.starts_with(prefix)
            {
                f.cmdline = full;
            }
        }
        f.stat = stat.or_else(|| d.stat(pid).ok());
        if f.stat.is_none() {
            f.gone = d.reaped();
            return f;
        }
        // The cgroup decides the container: read it before the rest.
        if f.cgroup.is_empty() && d.cgroup(&mut f.cgroup).is_err() {
            f.cgroup.clear();
        }
        if f.exe.is_none() {
            f.exe = d.exe().ok();
        }
        f.status = d.status(pid).ok();
        f.ns = d.namespaces().ok();
        if full {
            f.cwd = d.cwd().ok();
            f.loginuid = d.loginuid().ok().flatten();
            f.sessionid = d.sessionid().ok().flatten();
            if !self.env_vars.is_empty()
                && f.env_vars_source.is_none()
                && let Ok(envp) = crate::envvars::read_environ(self.procfs.root(), pid)
            {
                f.set_env_from_envp(&envp, &self.env_vars, self.max_args_bytes);
                f.env_vars_source = Some(crate::envvars::FROM_PROC);
            }
        }
        f.gone = d.reaped();
        f
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn host_fixture() -> ProcReader {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/proc/host");
        ProcReader::new(ProcFs::new(root), 4096)
    }

    #[test]
    fn a_live_process_is_read_whole_and_not_gone() {
        let r = host_fixture();
        let f = r.read_from(1234, None, r.prefetch(1234));
        assert!(!f.gone);
        assert_eq!(f.stat.expect("stat").comm, b"bash");
        assert!(f.status.is_some() && f.ns.is_some() && f.cwd.is_some());
        assert_eq!(f.exe.as_deref(), Some(&b"/usr/bin/bash"[..]));
    }

    #[test]
    fn a_process_gone_before_its_directory_was_opened_is_gone() {
        let r = host_fixture();
        let pre = r.prefetch(99);
        assert!(pre.comm().is_none());
        let f = r.read_from(99, None, pre);
        assert!(f.gone && f.stat.is_none() && f.cmdline.is_empty());
    }

    #[test]
    fn a_process_reaped_after_its_stat_keeps_what_was_read() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("spawn sleep");
        let pid = child.id();
        let r = ProcReader::new(ProcFs::host(), 4096);
        let pre = r.prefetch(pid);
        assert_eq!(pre.comm(), Some(&b"sleep"[..]));
        let read = pre
            .cmdline
            .as_ref()
            .map(|(c, _)| c.clone())
            .expect("cmdline");
        child.kill().expect("kill");
        child.wait().expect("reap");
        let f = r.read_from(pid, None, pre);
        assert!(f.gone, "reaped while its facts were read");
        assert_eq!(f.cmdline, read, "the prefetched cmdline is kept");
        assert!(f.status.is_none() && f.ns.is_none() && f.exe.is_none());
    }
}
