//! The syslog sink: one connection to one collector (unix datagram or
//! stream, UDP, TCP with RFC 6587 octet counting, TLS per RFC 5425), a
//! bounded queue in front of it, reconnect with exponential back-off.
//!
//! A message leaves the queue only when its last byte was accepted by the
//! kernel (for TLS: when rustls has no record left to write). A message cut
//! off by a broken connection goes back to the front of the queue, so after
//! a reconnect the collector sees everything in order. Before writing on a
//! stream we read it: a collector that closed its side is noticed before we
//! hand more messages to a dead socket.

use crate::counters::{Counter, Counters};

use std::io::{self, Read, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::{TcpStream, UdpSocket, UnixDatagram, UnixStream};
use mio::{Interest, Registry, Token};
use rustls::ClientConnection;

use super::format::Formatter;
use super::queue::Queue;
use super::{SinkError, TOKEN_SYSLOG, tls};
use crate::config::{SyslogConfig, Transport};
use crate::event::Event;

const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Bytes held while the collector is away, besides `output.syslog.queue`
/// messages: whichever bound is met first refuses (and counts) the next.
pub const SYSLOG_QUEUE_BYTES: usize = 32 << 20;
/// A TCP connect still pending after this is abandoned and retried.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

enum Conn {
    Down { retry_at: Instant },
    Dgram(UnixDatagram),
    Udp(UdpSocket),
    Stream(Box<StreamConn>),
}

enum Raw {
    Unix(UnixStream),
    Tcp(TcpStream),
}

struct StreamConn {
    raw: Raw,
    tls: Option<ClientConnection>,
    connected: bool,
    started: Instant,
    /// Framed bytes of the message in flight and how much of it is written.
    out: Vec<u8>,
    off: usize,
    inflight: Option<Vec<u8>>,
}

pub struct SyslogSink {
    transport: Transport,
    path: PathBuf,
    addrs: Vec<SocketAddr>,
    tls: Option<(
        Arc<rustls::ClientConfig>,
        rustls::pki_types::ServerName<'static>,
    )>,
    formatter: Formatter,
    queue: Queue,
    conn: Conn,
    backoff: Duration,
    connects: u64,
    too_big: u64,
}

impl SyslogSink {
    pub fn new(cfg: &SyslogConfig) -> Result<SyslogSink, SinkError> {
        let facility = ::syslog::Facility::from_str(&cfg.facility)
            .map_err(|()| SinkError::Syslog(format!("unknown facility `{}`", cfg.facility)))?;
        let mut addrs = Vec::new();
        let mut tls_cfg = None;
        if cfg.transport != Transport::Unix {
            // Names are resolved once, at start: a resolver call can block.
            addrs = cfg
                .address
                .to_socket_addrs()
                .map_err(|e| SinkError::Syslog(format!("address `{}`: {e}", cfg.address)))?
                .collect();
            if addrs.is_empty() {
                return Err(SinkError::Syslog(format!(
                    "`{}` resolves to nothing",
                    cfg.address
                )));
            }
        }
        if cfg.transport == Transport::Tls {
            let config = tls::client_config(
                cfg.ca_file.as_deref(),
                cfg.cert_file.as_deref(),
                cfg.key_file.as_deref(),
            )
            .map_err(SinkError::Syslog)?;
            let name = match &cfg.server_name {
                Some(n) => n.clone(),
                None => {
                    super::split_host_port(&cfg.address)
                        .map_err(SinkError::Syslog)?
                        .0
                }
            };
            tls_cfg = Some((config, tls::server_name(&name).map_err(SinkError::Syslog)?));
        }
        Ok(SyslogSink {
            transport: cfg.transport,
            path: cfg.path.clone(),
            addrs,
            tls: tls_cfg,
            formatter: Formatter {
                format: cfg.format,
                payload: cfg.payload,
                facility: facility as u8,
                app_name: cfg.app_name.clone(),
                procid: std::process::id(),
                max_bytes: cfg.max_message_bytes,
                hostname: cfg.transport != Transport::Unix,
            },
            queue: Queue::new(cfg.queue, SYSLOG_QUEUE_BYTES),
            conn: Conn::Down {
                retry_at: Instant::now(),
            },
            backoff: BACKOFF_MIN,
            connects: 0,
            too_big: 0,
        })
    }

    /// Formats, queues and tries to send (never blocks).
    pub fn push(&mut self, ev: &Event) {
        if self.queue.push(self.formatter.format(ev)) {
            self.pump(Instant::now());
        }
    }

    /// First connection attempt, from `Outputs::register`.
    pub fn connect_now(&mut self, registry: &Registry, now: Instant) {
        self.connect(Some(registry), now);
    }

    /// Readiness on the connection's token.
    pub fn ready(&mut self, _registry: &Registry, now: Instant) {
        self.pump(now);
    }

    pub fn tick(&mut self, registry: &Registry, now: Instant) -> Option<Instant> {
        match &self.conn {
            Conn::Down { retry_at } if now >= *retry_at => self.connect(Some(registry), now),
            Conn::Stream(s) if !s.connected && now >= s.started + CONNECT_TIMEOUT => {
                self.down(now, "connect timed out".into());
            }
            _ => self.pump(now),
        }
        match &self.conn {
            Conn::Down { retry_at } => Some(*retry_at),
            Conn::Stream(s) if !s.connected => Some(s.started + CONNECT_TIMEOUT),
            _ => None,
        }
    }

    /// Best effort drain until `deadline`, polling (the loop is stopping).
    pub fn flush_blocking(&mut self, deadline: Instant) {
        loop {
            let now = Instant::now();
            if let Conn::Down { retry_at } = self.conn
                && now >= retry_at
            {
                self.connect(None, now);
            }
            self.pump(now);
            if self.idle() || now >= deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        if let Conn::Stream(s) = &mut self.conn
            && let (Some(tls), Raw::Tcp(t)) = (&mut s.tls, &mut s.raw)
        {
            tls.send_close_notify();
            let _ = tls.write_tls(t);
        }
    }

    fn idle(&self) -> bool {
        let inflight = match &self.conn {
            Conn::Stream(s) => {
                s.inflight.is_some() || s.tls.as_ref().is_some_and(|t| t.wants_write())
            }
            _ => false,
        };
        self.queue.is_empty() && !inflight
    }

    pub fn counters(&self, out: &mut Counters) {
        let inflight = match &self.conn {
            Conn::Stream(s) => u64::from(s.inflight.is_some()),
            _ => 0,
        };
        self.queue.counters(
            [
                Counter::SyslogSent,
                Counter::SyslogDropped,
                Counter::SyslogQueued,
            ],
            out,
        );
        out.add(Counter::SyslogQueued, inflight);
        out.set(Counter::SyslogTooBigDropped, self.too_big);
        out.set(Counter::SyslogConnects, self.connects);
        let up = !matches!(self.conn, Conn::Down { .. });
        out.set(Counter::SyslogConnected, u64::from(up));
    }

    fn connect(&mut self, registry: Option<&Registry>, now: Instant) {
        match self.open() {
            Ok(mut conn) => {
                let reg = match (&mut conn, registry) {
                    (_, None) => Ok(()),
                    (Conn::Dgram(s), Some(r)) => {
                        r.register(s, Token(TOKEN_SYSLOG), Interest::WRITABLE)
                    }
                    (Conn::Udp(s), Some(r)) => {
                        r.register(s, Token(TOKEN_SYSLOG), Interest::WRITABLE)
                    }
                    (Conn::Stream(s), Some(r)) => {
                        let i = Interest::READABLE | Interest::WRITABLE;
                        match &mut s.raw {
                            Raw::Unix(u) => r.register(u, Token(TOKEN_SYSLOG), i),
                            Raw::Tcp(t) => r.register(t, Token(TOKEN_SYSLOG), i),
                        }
                    }
                    (Conn::Down { .. }, _) => Ok(()),
                };
                match reg {
                    Ok(()) => {
                        self.conn = conn;
                        self.connects += 1;
                        self.pump(now);
                    }
                    Err(e) => self.down(now, format!("register: {e}")),
                }
            }
            Err(e) => self.down(now, e.to_string()),
        }
    }

    fn open(&self) -> io::Result<Conn> {
        let now = Instant::now();
        let stream = |raw| {
            Conn::Stream(Box::new(StreamConn {
                raw,
                tls: None,
                connected: false,
                started: now,
                out: Vec::new(),
                off: 0,
                inflight: None,
            }))
        };
        let addr = self.addrs.first().copied();
        match self.transport {
            Transport::Unix => {
                let d = std::os::unix::net::UnixDatagram::unbound()?;
                match d.connect(&self.path) {
                    Ok(()) => {
                        d.set_nonblocking(true)?;
                        Ok(Conn::Dgram(UnixDatagram::from_std(d)))
                    }
                    // A stream socket at the path (syslog-ng, some setups).
                    Err(e) if e.raw_os_error() == Some(libc::EPROTOTYPE) => {
                        Ok(stream(Raw::Unix(UnixStream::connect(&self.path)?)))
                    }
                    Err(e) => Err(e),
                }
            }
            Transport::Udp => {
                let addr = addr.ok_or(io::ErrorKind::AddrNotAvailable)?;
                let bind: SocketAddr = if addr.is_ipv4() {
                    "0.0.0.0:0".parse().expect("literal")
                } else {
                    "[::]:0".parse().expect("literal")
                };
                let s = UdpSocket::bind(bind)?;
                s.connect(addr)?;
                Ok(Conn::Udp(s))
            }
            Transport::Tcp | Transport::Tls => {
                let addr = addr.ok_or(io::ErrorKind::AddrNotAvailable)?;
                let t = TcpStream::connect(addr)?;
                let _ = t.set_nodelay(true);
                let mut conn = stream(Raw::Tcp(t));
                if let (Conn::Stream(s), Some((cfg, name))) = (&mut conn, &self.tls) {
                    s.tls = Some(
                        ClientConnection::new(cfg.clone(), name.clone())
                            .map_err(|e| io::Error::other(e.to_string()))?,
                    );
                }
                Ok(conn)
            }
        }
    }

    /// Closes the connection, keeps any message in flight, schedules a retry.
    fn down(&mut self, now: Instant, why: String) {
        let was_up = !matches!(self.conn, Conn::Down { .. });
        let old = std::mem::replace(
            &mut self.conn,
            Conn::Down {
                retry_at: now + self.backoff,
            },
        );
        if let Conn::Stream(s) = old
            && let Some(m) = s.inflight
        {
            self.queue.requeue(m);
        }
        if was_up {
            log::warn!(
                "syslog collector unreachable ({why}); retrying in {:?}",
                self.backoff
            );
        } else {
            log::debug!(
                "syslog connect failed ({why}); retrying in {:?}",
                self.backoff
            );
        }
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
    }

    /// Writes as much of the queue as the socket takes now.
    fn pump(&mut self, now: Instant) {
        let res = match &mut self.conn {
            Conn::Down { .. } => return,
            Conn::Dgram(s) => pump_dgram(&mut self.queue, &mut self.too_big, |m| s.send(m)),
            Conn::Udp(s) => pump_dgram(&mut self.queue, &mut self.too_big, |m| s.send(m)),
            Conn::Stream(s) => s.pump(&mut self.queue, self.transport),
        };
        match res {
            Ok(true) => self.backoff = BACKOFF_MIN,
            Ok(false) => {}
            Err(e) => self.down(now, e.to_string()),
        }
    }
}

/// Sends datagrams until the socket would block. `Ok(true)` when at least
/// one message went out.
fn pump_dgram(
    q: &mut Queue,
    too_big: &mut u64,
    mut send: impl FnMut(&[u8]) -> io::Result<usize>,
) -> io::Result<bool> {
    let mut progress = false;
    let mut refused_retry = false;
    while let Some(m) = q.front() {
        match send(m) {
            Ok(_) => {
                q.pop();
                q.sent += 1;
                progress = true;
                refused_retry = false;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.raw_os_error() == Some(libc::EMSGSIZE) => {
                q.pop();
                *too_big += 1;
            }
            // UDP: an ICMP error reports an *earlier* datagram as lost; this
            // one was not sent. Count the loss and retry once.
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused && !refused_retry => {
                refused_retry = true;
                q.dropped += 1;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(progress)
}

impl StreamConn {
    fn pump(&mut self, q: &mut Queue, transport: Transport) -> io::Result<bool> {
        if !self.connected {
            if let Some(e) = self.take_error()? {
                return Err(e);
            }
            if !self.peer_connected() {
                return Ok(false);
            }
            self.connected = true;
        }
        self.check_peer()?;
        if let Some(tls) = &mut self.tls {
            let Raw::Tcp(t) = &mut self.raw else {
                return Err(io::Error::other("tls over unix"));
            };
            return pump_tls(tls, t, q, &mut self.inflight);
        }
        let mut progress = false;
        loop {
            if self.off >= self.out.len() {
                if self.inflight.take().is_some() {
                    q.sent += 1;
                    progress = true;
                }
                let Some(m) = q.pop() else { break };
                self.out.clear();
                frame(&mut self.out, &m, transport);
                self.off = 0;
                self.inflight = Some(m);
            }
            let r = match &mut self.raw {
                Raw::Unix(u) => u.write(&self.out[self.off..]),
                Raw::Tcp(t) => t.write(&self.out[self.off..]),
            };
            match r {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.off += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(progress)
    }

    fn take_error(&self) -> io::Result<Option<io::Error>> {
        match &self.raw {
            Raw::Unix(u) => u.take_error(),
            Raw::Tcp(t) => t.take_error(),
        }
    }

    fn peer_connected(&self) -> bool {
        match &self.raw {
            Raw::Unix(u) => u.peer_addr().is_ok(),
            Raw::Tcp(t) => t.peer_addr().is_ok(),
        }
    }

    /// Reads what the collector sent (nothing, normally). EOF or a TLS alert
    /// means it went away: report it before anything else is written.
    fn check_peer(&mut self) -> io::Result<()> {
        if let (Some(tls), Raw::Tcp(t)) = (&mut self.tls, &mut self.raw) {
            loop {
                match tls.read_tls(t) {
                    Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                    Ok(_) => {
                        let st = tls
                            .process_new_packets()
                            .map_err(|e| io::Error::other(e.to_string()))?;
                        if st.peer_has_closed() {
                            return Err(io::ErrorKind::UnexpectedEof.into());
                        }
                        let mut sink = [0u8; 512];
                        while matches!(tls.reader().read(&mut sink), Ok(n) if n > 0) {}
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
        }
        let mut buf = [0u8; 512];
        loop {
            let r = match &mut self.raw {
                Raw::Unix(u) => u.read(&mut buf),
                Raw::Tcp(t) => t.read(&mut buf),
            };
            match r {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

/// TLS: hand rustls one message only when it has written everything before,
/// so "in flight" is exactly one message.
fn pump_tls(
    tls: &mut ClientConnection,
    t: &mut TcpStream,
    q: &mut Queue,
    inflight: &mut Option<Vec<u8>>,
) -> io::Result<bool> {
    let mut progress = false;
    loop {
        while tls.wants_write() {
            match tls.write_tls(t) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(progress),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if tls.is_handshaking() {
            // Waiting for the server's flight; readiness brings us back.
            return Ok(progress);
        }
        if inflight.take().is_some() {
            q.sent += 1;
            progress = true;
        }
        let Some(m) = q.pop() else {
            return Ok(progress);
        };
        let mut framed = Vec::with_capacity(m.len() + 8);
        frame(&mut framed, &m, Transport::Tls);
        tls.writer().write_all(&framed)?;
        *inflight = Some(m);
    }
}

/// RFC 6587 §3.4.1 octet counting for TCP/TLS (RFC 5425 uses the same);
/// a newline after each message on a unix stream socket, where the
/// formatters guarantee none inside.
fn frame(out: &mut Vec<u8>, msg: &[u8], transport: Transport) {
    match transport {
        Transport::Tcp | Transport::Tls => {
            out.extend_from_slice(msg.len().to_string().as_bytes());
            out.push(b' ');
            out.extend_from_slice(msg);
        }
        _ => {
            out.extend_from_slice(msg);
            out.push(b'\n');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn octet_counting() {
        let mut out = Vec::new();
        frame(&mut out, b"<13>1 hi", Transport::Tcp);
        assert_eq!(out, b"8 <13>1 hi");
        out.clear();
        frame(&mut out, b"x", Transport::Unix);
        assert_eq!(out, b"x\n");
    }
}
