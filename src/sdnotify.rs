//! systemd's notify protocol: `READY=1` once the self-check passed, and
//! `WATCHDOG=1` at a steady pace from the loop, so systemd restarts a loop
//! that wedged (`WatchdogSec=` in the unit). One datagram per message, so
//! no extra crate is needed.

use std::ffi::OsString;
use std::io;
use std::path::Path;
use std::time::{Duration, Instant};

pub struct Notifier {
    socket: Option<OsString>,
    /// Half the watchdog interval systemd asked for, when it asked us.
    watchdog_every: Option<Duration>,
    last_ping: Option<Instant>,
}

impl Notifier {
    /// From `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID`.
    pub fn from_env() -> Self {
        let var = |k: &str| std::env::var(k).ok();
        Notifier {
            socket: std::env::var_os("NOTIFY_SOCKET"),
            watchdog_every: watchdog_every(
                var("WATCHDOG_USEC").as_deref(),
                var("WATCHDOG_PID").as_deref(),
                std::process::id(),
            ),
            last_ping: None,
        }
    }

    /// Tells systemd (`Type=notify`) that the sensor is capturing.
    pub fn ready(&mut self) {
        self.send(b"READY=1");
        self.last_ping = Some(Instant::now());
    }

    /// Called from the loop's housekeeping: a ping when half the interval
    /// has passed. A loop that stops turning stops pinging.
    pub fn tick(&mut self, now: Instant) {
        let Some(every) = self.watchdog_every else {
            return;
        };
        if self.last_ping.is_some_and(|t| now < t + every) {
            return;
        }
        self.send(b"WATCHDOG=1");
        self.last_ping = Some(now);
    }

    /// How often [`tick`](Self::tick) must be called at least.
    pub fn interval(&self) -> Option<Duration> {
        self.watchdog_every
    }

    fn send(&self, msg: &[u8]) {
        let Some(path) = &self.socket else {
            return;
        };
        if let Err(e) = send_notify(path, msg) {
            log::warn!("sd_notify failed: {e}");
        }
    }
}

/// PURE. Half of `WATCHDOG_USEC`, if the watchdog is meant for `our_pid`
/// (`WATCHDOG_PID` unset means the main process, which we are).
pub fn watchdog_every(usec: Option<&str>, pid: Option<&str>, our_pid: u32) -> Option<Duration> {
    let usec: u64 = usec?.trim().parse().ok().filter(|u| *u > 0)?;
    if let Some(p) = pid
        && p.trim().parse::<u32>().ok() != Some(our_pid)
    {
        return None;
    }
    Some(Duration::from_micros(usec / 2))
}

fn send_notify(path: &std::ffi::OsStr, msg: &[u8]) -> io::Result<()> {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    let sock = UnixDatagram::unbound()?;
    let bytes = path.as_bytes();
    let addr = match bytes.strip_prefix(b"@") {
        Some(name) => SocketAddr::from_abstract_name(name)?,
        None => SocketAddr::from_pathname(Path::new(path))?,
    };
    sock.send_to_addr(msg, &addr)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watchdog_pings_at_half_the_interval_for_our_pid_only() {
        assert_eq!(
            watchdog_every(Some("10000000"), None, 7),
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            watchdog_every(Some("4000000"), Some("7"), 7),
            Some(Duration::from_secs(2))
        );
        assert_eq!(watchdog_every(Some("4000000"), Some("8"), 7), None);
        assert_eq!(watchdog_every(Some("0"), None, 7), None);
        assert_eq!(watchdog_every(Some("junk"), None, 7), None);
        assert_eq!(watchdog_every(None, None, 7), None);
    }

    #[test]
    fn pings_reach_the_socket_at_the_pace_asked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let sock = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        sock.set_nonblocking(true).unwrap();
        let mut n = Notifier {
            socket: Some(path.into_os_string()),
            watchdog_every: Some(Duration::from_secs(5)),
            last_ping: None,
        };
        n.ready();
        let t0 = Instant::now();
        n.tick(t0);
        n.tick(t0 + Duration::from_secs(6));
        let mut got = Vec::new();
        let mut buf = [0u8; 64];
        while let Ok(len) = sock.recv(&mut buf) {
            got.push(String::from_utf8_lossy(&buf[..len]).into_owned());
        }
        assert_eq!(got, ["READY=1", "WATCHDOG=1"]);
    }
}
