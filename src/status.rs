//! `execsentry status`: what the running daemon reports about itself, the
//! root-only control socket that serves it, and the client side.
//!
//! The protocol is as small as it can be: a client connects, the daemon
//! writes one JSON object and a newline, and closes. There is nothing to
//! parse on the daemon's side, so nothing a client can send matters.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub const DEFAULT_CONTROL_SOCKET: &str = "/run/execsentry/control.sock";

/// The daemon's self-report.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub version: String,
    pub pid: u32,
    pub started: String,
    pub uptime_secs: u64,
    /// `fanotify` or `proc`.
    pub capture: String,
    pub features: Features,
    pub capabilities: Vec<String>,
    pub rules: usize,
    /// Mean rule evaluation time per exec event.
    pub rule_eval_ns: u64,
    pub execs_per_sec: f64,
    /// Time from reading a fanotify permission event to answering it, p50
    /// and p99 in µs over the last 65 536 events (the exec waits that long).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer_latency_us: Option<[f64; 2]>,
    /// Every counter: pipeline, process table, capture, per-sink.
    pub counters: BTreeMap<String, u64>,
    /// Loop thread CPU per stage of the exec path, in ns since start, with
    /// `EXECSENTRY_PROFILE_STAGES=1` (for `make bench`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub stages_ns: BTreeMap<String, u64>,
}

/// What the kernel offered at start, and what was chosen.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Features {
    pub kernel: String,
    pub proc_connector: bool,
    /// `active`, `off` (capture = "proc") or why it is unavailable.
    pub fanotify: String,
    /// `active`, `off` (not tried) or why it is unavailable.
    #[serde(default)]
    pub kprobe: String,
    /// `v1`, `v2` or `hybrid`.
    pub cgroup: String,
    pub netlink_rcvbuf: usize,
}

impl Status {
    /// The counters that mean something was lost or degraded.
    pub fn losses(&self) -> impl Iterator<Item = (&String, &u64)> {
        self.counters.iter().filter(|(k, v)| **v > 0 && is_loss(k))
    }

    /// One `key: value` line each, for people.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "execsentry {} (pid {})", self.version, self.pid);
        let _ = writeln!(
            s,
            "started:       {} (up {} s)",
            self.started, self.uptime_secs
        );
        let _ = writeln!(s, "capture:       {}", self.capture);
        let f = &self.features;
        let _ = writeln!(
            s,
            "kernel:        {} (proc connector: {}, kprobe: {}, fanotify: {}, cgroup {}, rcvbuf {} bytes)",
            f.kernel,
            if f.proc_connector { "yes" } else { "no" },
            if f.kprobe.is_empty() {
                "off"
            } else {
                &f.kprobe
            },
            f.fanotify,
            f.cgroup,
            f.netlink_rcvbuf
        );
        let _ = writeln!(s, "capabilities:  {}", self.capabilities.join(" "));
        let _ = writeln!(
            s,
            "rules:         {} ({} ns per exec on average)",
            self.rules, self.rule_eval_ns
        );
        let _ = writeln!(s, "execs/s:       {:.1}", self.execs_per_sec);
        if let Some([p50, p99]) = self.answer_latency_us {
            let _ = writeln!(
                s,
                "exec wait:     p50 {p50:.1} µs, p99 {p99:.1} µs (fanotify answer)"
            );
        }
        let losses: Vec<String> = self.losses().map(|(k, v)| format!("{k}={v}")).collect();
        let _ = writeln!(
            s,
            "losses:        {}",
            if losses.is_empty() {
                "none".to_string()
            } else {
                losses.join(" ")
            }
        );
        s.push_str("counters:\n");
        for (k, v) in &self.counters {
            let _ = writeln!(s, "  {k:32} {v}");
        }
        s
    }
}

/// Whether a counter of a status report counts a loss or a degraded event
/// (the registry says; a name it does not know, from a newer sensor, is not).
pub fn is_loss(name: &str) -> bool {
    crate::counters::Counter::from_name(name).is_some_and(|c| c.is_loss())
}

/// The daemon's end: a root-only listening socket.
pub struct ControlServer {
    listener: mio::net::UnixListener,
    path: PathBuf,
}

impl ControlServer {
    /// Binds `path` with mode 0600. A stale socket file (nobody listening)
    /// is replaced; a live one belongs to another sensor and is an error.
    pub fn bind(path: &Path) -> io::Result<ControlServer> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        if let Ok(md) = std::fs::symlink_metadata(path) {
            if !md.file_type().is_socket() {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} exists and is not a socket", path.display()),
                ));
            }
            if UnixStream::connect(path).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("{} is served by another running sensor", path.display()),
                ));
            }
            std::fs::remove_file(path)?;
        }
        // Bind under a umask that leaves no window with a wider mode.
        // SAFETY: umask only swaps the process's file-creation mask.
        let old = unsafe { libc::umask(0o177) };
        let bound = mio::net::UnixListener::bind(path);
        // SAFETY: as above, restoring the previous mask.
        unsafe { libc::umask(old) };
        let listener = bound?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        Ok(ControlServer {
            listener,
            path: path.to_path_buf(),
        })
    }

    pub fn source(&mut self) -> &mut mio::net::UnixListener {
        &mut self.listener
    }

    /// Answers every waiting client with `reply` and closes them. A client
    /// that cannot take the whole reply at once is dropped: the loop never
    /// waits for a reader.
    pub fn serve(&mut self, reply: &[u8]) -> usize {
        let mut served = 0;
        loop {
            match self.listener.accept() {
                Ok((mut stream, _)) => {
                    let _ = stream.write(reply);
                    served += 1;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return served,
            }
        }
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The client's end, for `execsentry status`.
pub fn query(path: &Path) -> io::Result<Status> {
    let stream = UnixStream::connect(path)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut buf = Vec::new();
    stream.take(16 << 20).read_to_end(&mut buf)?;
    serde_json::from_slice(&buf).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn losses_are_told_apart_from_throughput() {
        let mut st = Status::default();
        for (k, v) in [
            ("execs", 10),
            ("overruns", 2),
            ("syslog.dropped", 3),
            ("syslog.sent", 9),
            ("partial_events", 0),
        ] {
            st.counters.insert(k.into(), v);
        }
        let l: Vec<&String> = st.losses().map(|(k, _)| k).collect();
        assert_eq!(l, ["overruns", "syslog.dropped"]);
        let text = st.render();
        assert!(
            text.contains("losses:        overruns=2 syslog.dropped=3"),
            "{text}"
        );
    }

    #[test]
    fn served_status_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.sock");
        let mut srv = ControlServer::bind(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let st = Status {
            version: "1".into(),
            rules: 6,
            ..Default::default()
        };
        let reply = serde_json::to_vec(&st).unwrap();
        let client = std::thread::spawn(move || query(&path));
        // The listener is non-blocking: serve until the client came.
        let mut served = 0;
        while served == 0 {
            served = srv.serve(&reply);
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(client.join().unwrap().unwrap(), st);
    }

    #[test]
    fn a_live_socket_is_not_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.sock");
        let _first = ControlServer::bind(&path).unwrap();
        let err = ControlServer::bind(&path).err().unwrap();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
    }
}
