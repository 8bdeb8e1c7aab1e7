//! The local alert socket: a unix stream listener serving ECS JSON lines to
//! any number of readers (`execsentry tail`, local agents).
//!
//! Each reader has its own bounded buffer; one that falls behind by more
//! than `reader_buffer` bytes is disconnected and counted, so a stalled
//! reader costs the others nothing. The socket file gets the configured mode
//! and group, replaces a stale socket (never another kind of file, never a
//! socket a live sensor still answers on), and is removed on drop.

use crate::counters::{Counter, Counters};

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mio::net::{UnixListener, UnixStream};
use mio::{Interest, Registry, Token};

use super::SinkError;
use crate::config::SocketConfig;

struct Reader {
    stream: UnixStream,
    buf: Vec<u8>,
    off: usize,
}

/// Readers served at once; more are refused and counted.
pub const MAX_READERS: usize = 64;

pub struct AlertSocket {
    path: PathBuf,
    listener: UnixListener,
    /// Inode of the socket we created, so drop removes only ours.
    ino: u64,
    limit: usize,
    readers: HashMap<usize, Reader>,
    next_id: usize,
    registry: Option<Registry>,
    sent: u64,
    accepted: u64,
    closed: u64,
    slow: u64,
    /// Readers turned away because [`MAX_READERS`] were connected.
    refused: u64,
}

impl AlertSocket {
    pub fn bind(cfg: &SocketConfig) -> Result<AlertSocket, SinkError> {
        let path = cfg.path.clone();
        let err = |op: &'static str| {
            let path = path.clone();
            move |source: io::Error| SinkError::Socket { path, op, source }
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
            && !dir.exists()
        {
            std::fs::create_dir_all(dir).map_err(err("create directory"))?;
            let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755));
        }
        remove_stale(&path).map_err(err("replace stale socket"))?;
        let listener = UnixListener::bind(&path).map_err(err("bind"))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(cfg.mode_bits()))
            .map_err(err("chmod"))?;
        set_group(&path, &cfg.group);
        let ino = std::fs::metadata(&path).map_err(err("stat"))?.ino();
        Ok(AlertSocket {
            path,
            listener,
            ino,
            limit: cfg.reader_buffer,
            readers: HashMap::new(),
            next_id: 0,
            registry: None,
            sent: 0,
            accepted: 0,
            closed: 0,
            slow: 0,
            refused: 0,
        })
    }

    pub fn register(&mut self, registry: &Registry, token: Token) -> io::Result<()> {
        registry.register(&mut self.listener, token, Interest::READABLE)?;
        // Kept to deregister readers we drop from `send`, which has no
        // registry argument.
        self.registry = Some(registry.try_clone()?);
        Ok(())
    }

    /// Accepts every pending reader.
    pub fn accept(&mut self, registry: &Registry, token_base: usize) {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) if self.readers.len() >= MAX_READERS => {
                    // Each reader costs an fd and up to `reader_buffer` bytes;
                    // unbounded readers could exhaust the fds fanotify needs
                    // to hand us events. Closed at once, counted.
                    drop(stream);
                    self.refused += 1;
                }
                Ok((mut stream, _)) => {
                    let id = self.next_id;
                    self.next_id = self.next_id.wrapping_add(1) % (usize::MAX - token_base);
                    let i = Interest::READABLE | Interest::WRITABLE;
                    if let Err(e) = registry.register(&mut stream, Token(token_base + id), i) {
                        log::warn!("alert socket reader: {e}");
                        continue;
                    }
                    self.accepted += 1;
                    self.readers.insert(
                        id,
                        Reader {
                            stream,
                            buf: Vec::new(),
                            off: 0,
                        },
                    );
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // EMFILE and friends: try again on the next readiness.
                    log::warn!("alert socket accept: {e}");
                    break;
                }
            }
        }
    }

    /// Queues `line` for every reader; drops the ones that are too far behind.
    pub fn send(&mut self, line: &[u8]) {
        let mut gone = Vec::new();
        for (id, r) in &mut self.readers {
            // An empty buffer always takes one line, however long.
            let pending = r.buf.len() - r.off;
            if pending > 0 && pending + line.len() > self.limit {
                self.slow += 1;
                gone.push(*id);
                continue;
            }
            if r.off > 0 && r.off == r.buf.len() {
                r.buf.clear();
                r.off = 0;
            }
            r.buf.extend_from_slice(line);
            match r.flush() {
                Ok(()) => {}
                Err(_) => {
                    self.closed += 1;
                    gone.push(*id);
                }
            }
        }
        self.sent += 1;
        for id in gone {
            self.remove(id);
        }
    }

    pub fn reader_ready(&mut self, id: usize, event: &mio::event::Event) {
        let Some(r) = self.readers.get_mut(&id) else {
            return;
        };
        let mut ok = r.flush().is_ok();
        if ok && (event.is_readable() || event.is_read_closed()) {
            ok = r.drain_input();
        }
        if !ok {
            self.closed += 1;
            self.remove(id);
        }
    }

    pub fn flush_blocking(&mut self, deadline: Instant) {
        while Instant::now() < deadline {
            let pending: Vec<usize> = self
                .readers
                .iter_mut()
                .filter_map(|(id, r)| match r.flush() {
                    Ok(()) if r.off < r.buf.len() => Some(*id),
                    _ => None,
                })
                .collect();
            if pending.is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn counters(&self, out: &mut Counters) {
        out.set(Counter::SocketSent, self.sent);
        out.set(Counter::SocketReaders, self.readers.len() as u64);
        out.set(Counter::SocketReadersConnected, self.accepted);
        out.set(Counter::SocketReadersDisconnected, self.closed);
        out.set(Counter::SocketSlowReaders, self.slow);
        out.set(Counter::SocketRefusedReaders, self.refused);
    }

    fn remove(&mut self, id: usize) {
        if let Some(mut r) = self.readers.remove(&id)
            && let Some(reg) = &self.registry
        {
            let _ = reg.deregister(&mut r.stream);
        }
    }
}

impl Reader {
    /// Writes buffered bytes until the reader's socket is full.
    fn flush(&mut self) -> io::Result<()> {
        while self.off < self.buf.len() {
            match self.stream.write(&self.buf[self.off..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.off += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.buf.clear();
        self.off = 0;
        Ok(())
    }

    /// Readers do not talk; discard input, report false on EOF.
    fn drain_input(&mut self) -> bool {
        let mut b = [0u8; 256];
        loop {
            match self.stream.read(&mut b) {
                Ok(0) => return false,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
    }
}

impl Drop for AlertSocket {
    fn drop(&mut self) {
        // Only our own socket: a newer sensor may have replaced it.
        let ours = std::fs::symlink_metadata(&self.path)
            .is_ok_and(|m| m.file_type().is_socket() && m.ino() == self.ino);
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Removes a leftover socket file: only a socket, and only if nobody
/// answers on it (a second sensor must not steal a live one's socket).
fn remove_stale(path: &Path) -> io::Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !meta.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "path exists and is not a socket; refusing to replace it",
        ));
    }
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            "another process is serving this socket",
        ));
    }
    std::fs::remove_file(path)
}

/// Gives the socket to `group`; a missing group keeps ours, with a warning.
fn set_group(path: &Path, group: &str) {
    if group.is_empty() {
        return;
    }
    match nix::unistd::Group::from_name(group) {
        Ok(Some(g)) => {
            if let Err(e) = nix::unistd::chown(path, None, Some(g.gid)) {
                log::warn!("alert socket: chgrp {group}: {e}");
            }
        }
        Ok(None) => log::warn!(
            "alert socket: group `{group}` does not exist; {} keeps the sensor's group",
            path.display()
        ),
        Err(e) => log::warn!("alert socket: group `{group}`: {e}"),
    }
}
