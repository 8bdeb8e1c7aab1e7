//! The proc connector: [`wire`] turns bytes into events (pure), this module
//! owns the `NETLINK_CONNECTOR` socket subscribed to process events and
//! exposes it as a non-blocking mio [`Source`](mio::event::Source).
//!
//! The kernel only honours the subscription from a process with
//! `CAP_NET_ADMIN` in the initial user namespace *and* in the initial pid
//! namespace; elsewhere it silently sends nothing, which is why the daemon
//! runs a self-check after [`ProcConnector::open`].
//!
//! Before Linux 6.6 binding needs `CAP_NET_ADMIN` (EPERM) and the kernel
//! refuses an unprivileged subscription in its answer (an ack with
//! `err = EPERM`, or none at all if nobody else listens). Since 6.6 any user
//! in the initial namespaces may listen. Outside them the kernel never
//! answers. [`ProcConnector::open`] therefore waits briefly for its own ack
//! and turns silence into a diagnosis.

pub mod reader;
pub mod wire;

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_CONNECTOR};
use nix::sys::socket::{
    MsgFlags, MultiHeaders, NetlinkAddr, recvfrom, recvmmsg, setsockopt, sockopt,
};
use thiserror::Error;

use wire::{CN_IDX_PROC, McastOp};

/// Receive buffer asked for by [`ProcConnector::open`]: an exec storm
/// produces ~3 datagrams (fork, exec, exit) of 76 bytes per process, plus
/// skb overhead, so 8 MiB absorbs tens of thousands of processes.
pub const DEFAULT_RCVBUF: usize = 8 << 20;

/// How long [`ProcConnector::open`] waits for the kernel's ack. The kernel
/// answers synchronously inside `sendmsg`, so this only bounds a silence.
const ACK_TIMEOUT: Duration = Duration::from_millis(500);

/// Why the proc connector could not be opened.
#[derive(Debug, Error)]
pub enum ConnectorError {
    #[error(
        "the proc connector needs CAP_NET_ADMIN in the initial user namespace \
         ({op} failed: {source})"
    )]
    NeedsCapNetAdmin { op: &'static str, source: io::Error },
    #[error(
        "the kernel has no netlink connector (CONFIG_CONNECTOR/CONFIG_PROC_EVENTS \
         off?) ({op} failed: {source})"
    )]
    Unsupported { op: &'static str, source: io::Error },
    #[error(
        "the kernel ignored the proc connector subscription: the sensor must run \
         in the initial user and pid namespaces (not in a container)"
    )]
    NotInitialNamespace,
    #[error(
        "the kernel did not acknowledge the proc connector subscription \
         (CONFIG_PROC_EVENTS off?)"
    )]
    NoAck,
    #[error("proc connector: {op} failed: {source}")]
    Io { op: &'static str, source: io::Error },
}

impl ConnectorError {
    fn from_io(op: &'static str, source: io::Error) -> Self {
        match source.raw_os_error() {
            Some(libc::EPERM | libc::EACCES) => Self::NeedsCapNetAdmin { op, source },
            Some(libc::EPROTONOSUPPORT | libc::EAFNOSUPPORT) => Self::Unsupported { op, source },
            _ => Self::Io { op, source },
        }
    }
}

/// Datagrams one [`ProcConnector::recv_batch`] takes at most: one system
/// call instead of one per fork, exec and exit message.
pub const BATCH: usize = 32;
/// Bytes kept per datagram. A proc-connector message is 76 bytes; a longer
/// one is cut, then fails to decode and is counted.
const SLOT: usize = 512;

/// Buffers for [`ProcConnector::recv_batch`], allocated once.
pub struct RecvBatch {
    headers: MultiHeaders<NetlinkAddr>,
    buf: Box<[[u8; SLOT]; BATCH]>,
    lens: [usize; BATCH],
    n: usize,
}

impl Default for RecvBatch {
    fn default() -> Self {
        RecvBatch {
            headers: MultiHeaders::preallocate(BATCH, None),
            buf: Box::new([[0; SLOT]; BATCH]),
            lens: [0; BATCH],
            n: 0,
        }
    }
}

impl std::fmt::Debug for RecvBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecvBatch").field("n", &self.n).finish()
    }
}

impl RecvBatch {
    /// The kernel's datagrams of the last receive, in order.
    pub fn datagrams(&self) -> impl Iterator<Item = &[u8]> {
        self.buf
            .iter()
            .zip(&self.lens)
            .take(self.n)
            .filter(|(_, n)| **n > 0)
            .map(|(b, &n)| &b[..n])
    }
}

/// A non-blocking netlink socket subscribed to process events.
#[derive(Debug)]
pub struct ProcConnector {
    sock: Socket,
    port_id: u32,
    seq: u32,
    rcvbuf: usize,
}

impl ProcConnector {
    /// Opens, binds and subscribes with a [`DEFAULT_RCVBUF`] receive buffer.
    pub fn open() -> Result<Self, ConnectorError> {
        Self::open_with_rcvbuf(DEFAULT_RCVBUF)
    }

    /// Opens, binds to the `CN_IDX_PROC` group and sends
    /// `PROC_CN_MCAST_LISTEN`. `rcvbuf` is asked with `SO_RCVBUFFORCE` (not
    /// capped by `net.core.rmem_max`), falling back to `SO_RCVBUF`.
    pub fn open_with_rcvbuf(rcvbuf: usize) -> Result<Self, ConnectorError> {
        let err = ConnectorError::from_io;
        // netlink-sys opens with SOCK_CLOEXEC.
        let mut sock = Socket::new(NETLINK_CONNECTOR).map_err(|e| err("socket", e))?;
        sock.set_non_blocking(true)
            .map_err(|e| err("set non-blocking", e))?;
        let rcvbuf = set_rcvbuf(&sock, rcvbuf).map_err(|e| err("SO_RCVBUF", e))?;
        sock.bind(&SocketAddr::new(0, 1 << (CN_IDX_PROC - 1)))
            .map_err(|e| err("bind to CN_IDX_PROC", e))?;
        let mut addr = SocketAddr::new(0, 0);
        sock.get_address(&mut addr)
            .map_err(|e| err("getsockname", e))?;
        let mut conn = ProcConnector {
            sock,
            port_id: addr.port_number(),
            seq: 0,
            rcvbuf,
        };
        conn.send_op(McastOp::Listen)
            .map_err(|e| err("send PROC_CN_MCAST_LISTEN", e))?;
        conn.await_ack()?;
        Ok(conn)
    }

    /// Reads until the kernel's answer to our subscription. Events queued
    /// before it are dropped: the caller scans `/proc` after opening anyway.
    fn await_ack(&mut self) -> Result<(), ConnectorError> {
        let deadline = Instant::now() + ACK_TIMEOUT;
        let mut buf = [0u8; 4096];
        loop {
            match self.recv(&mut buf) {
                Ok(n) => {
                    let ack = wire::decode_records(&buf[..n])
                        .flatten()
                        .find_map(|rec| wire::is_ack_for(&rec, self.port_id));
                    match ack {
                        Some(0) => return Ok(()),
                        Some(errno) => {
                            let e = io::Error::from_raw_os_error(errno as i32);
                            return Err(ConnectorError::from_io("PROC_CN_MCAST_LISTEN", e));
                        }
                        None => {}
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if !self.wait_readable(deadline)? {
                        return Err(diagnose_silence());
                    }
                }
                Err(e) if is_overrun(&e) => {}
                Err(e) => return Err(ConnectorError::from_io("recv ack", e)),
            }
        }
    }

    /// Waits until the socket is readable (true) or `deadline` passes.
    fn wait_readable(&self, deadline: Instant) -> Result<bool, ConnectorError> {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        let left = deadline.saturating_duration_since(Instant::now());
        let timeout = PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX);
        let mut fds = [PollFd::new(self.sock.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, timeout) {
            Ok(n) => Ok(n > 0),
            Err(nix::errno::Errno::EINTR) => Ok(Instant::now() < deadline),
            Err(e) => Err(ConnectorError::from_io("poll", e.into())),
        }
    }

    /// The receive buffer size the kernel granted (as `SO_RCVBUF` reports
    /// it, i.e. doubled for bookkeeping).
    pub fn rcvbuf(&self) -> usize {
        self.rcvbuf
    }

    /// Receives one datagram into `buf`. Retries on `EINTR`; returns
    /// `WouldBlock` when drained and `ENOBUFS` (see [`is_overrun`]) when the
    /// kernel dropped events. Datagrams not sent by the kernel (port id 0)
    /// are discarded, so no other process can inject fake events.
    pub fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match recvfrom::<NetlinkAddr>(self.sock.as_raw_fd(), buf) {
                Ok((n, Some(from))) if from.pid() != 0 => {
                    log::debug!("dropped {n}-byte netlink datagram from port {}", from.pid());
                }
                Ok((n, _)) => return Ok(n),
                Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Up to [`BATCH`] datagrams in one `recvmmsg`; errors as
    /// [`Self::recv`]. Datagrams not sent by the kernel are discarded.
    /// Returns how many arrived (0 after `EINTR`: read again).
    pub fn recv_batch(&mut self, batch: &mut RecvBatch) -> io::Result<usize> {
        let RecvBatch {
            headers,
            buf,
            lens,
            n,
        } = batch;
        *n = 0;
        let mut slots = buf.iter_mut();
        let mut iovs: [[io::IoSliceMut<'_>; 1]; BATCH] = std::array::from_fn(|_| {
            [io::IoSliceMut::new(
                slots.next().map_or(&mut [][..], |b| &mut b[..]),
            )]
        });
        let msgs = match recvmmsg(
            self.sock.as_raw_fd(),
            headers,
            iovs.iter_mut(),
            MsgFlags::MSG_DONTWAIT,
            None,
        ) {
            Ok(msgs) => msgs,
            // The caller reads on until `WouldBlock`.
            Err(nix::errno::Errno::EINTR) => return Ok(0),
            Err(e) => return Err(e.into()),
        };
        for (len, m) in lens.iter_mut().zip(msgs) {
            *n += 1;
            // A kernel datagram has port id 0; anything else is a process
            // trying to inject events.
            *len = if m.address.is_some_and(|a| a.pid() != 0) {
                log::debug!("dropped {}-byte netlink datagram from a process", m.bytes);
                0
            } else {
                m.bytes.min(SLOT)
            };
        }
        Ok(*n)
    }

    fn send_op(&mut self, op: McastOp) -> io::Result<()> {
        self.seq = self.seq.wrapping_add(1);
        let msg = wire::mcast_message(op, self.seq, self.port_id);
        let kernel = SocketAddr::new(0, 0);
        loop {
            match self.sock.send_to(&msg, &kernel, 0) {
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

/// True when `e` means the kernel dropped events because the receive buffer
/// was full: the caller must count it and resynchronise from `/proc`.
pub fn is_overrun(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::ENOBUFS)
}

/// Names the likely reason the kernel did not answer a subscription.
fn diagnose_silence() -> ConnectorError {
    use caps::{CapSet, Capability};
    // The kernel checks namespaces before the capability.
    if !in_initial_namespaces() {
        return ConnectorError::NotInitialNamespace;
    }
    // With no other listener a pre-6.6 kernel drops even its EPERM ack.
    if !caps::has_cap(None, CapSet::Effective, Capability::CAP_NET_ADMIN).unwrap_or(true) {
        return ConnectorError::NeedsCapNetAdmin {
            op: "PROC_CN_MCAST_LISTEN (no answer)",
            source: io::Error::from_raw_os_error(libc::EPERM),
        };
    }
    ConnectorError::NoAck
}

/// Best guess from our own view of /proc; unknown counts as "initial".
fn in_initial_namespaces() -> bool {
    let initial_user = std::fs::read_to_string("/proc/self/uid_map").map_or(true, |m| {
        m.split_whitespace().collect::<Vec<_>>() == ["0", "0", "4294967295"]
    });
    // NSpid lists one pid per nested pid namespace.
    let initial_pid = std::fs::read_to_string("/proc/self/status").map_or(true, |s| {
        s.lines()
            .find_map(|l| l.strip_prefix("NSpid:"))
            .is_none_or(|v| v.split_whitespace().count() <= 1)
    });
    initial_user && initial_pid
}

fn set_rcvbuf(sock: &Socket, size: usize) -> io::Result<usize> {
    if let Err(e) = setsockopt(sock, sockopt::RcvBufForce, &size) {
        // Without CAP_NET_ADMIN only the rmem_max-capped option is allowed.
        log::debug!("SO_RCVBUFFORCE {size}: {e}; falling back to SO_RCVBUF");
        setsockopt(sock, sockopt::RcvBuf, &size)?;
    }
    Ok(nix::sys::socket::getsockopt(sock, sockopt::RcvBuf)?)
}

impl Drop for ProcConnector {
    fn drop(&mut self) {
        // Best effort: the kernel also forgets us when the socket closes,
        // but IGNORE keeps its listener count (and thus its work) exact.
        if let Err(e) = self.send_op(McastOp::Ignore) {
            log::debug!("PROC_CN_MCAST_IGNORE: {e}");
        }
    }
}

impl AsRawFd for ProcConnector {
    fn as_raw_fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }
}

impl AsFd for ProcConnector {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }
}

impl mio::event::Source for ProcConnector {
    fn register(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        SourceFd(&self.sock.as_raw_fd()).register(registry, token, interests)
    }

    fn reregister(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        SourceFd(&self.sock.as_raw_fd()).reregister(registry, token, interests)
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        SourceFd(&self.sock.as_raw_fd()).deregister(registry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enobufs_is_an_overrun() {
        assert!(is_overrun(&io::Error::from_raw_os_error(libc::ENOBUFS)));
        assert!(!is_overrun(&io::ErrorKind::WouldBlock.into()));
    }

    #[test]
    fn eperm_names_the_capability() {
        let e = ConnectorError::from_io("bind", io::Error::from_raw_os_error(libc::EPERM));
        assert!(e.to_string().contains("needs CAP_NET_ADMIN"), "{e}");
    }
}
