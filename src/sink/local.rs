//! Local outputs: the JSON-lines file (appended, reopened on SIGHUP for
//! logrotate) and stdout (one JSON line per event, flushed per event).
//!
//! A regular file never blocks for long, so it is written directly. Stdout
//! may be a pipe whose reader stalls: when it is a pipe or socket it is made
//! non-blocking and fed from a bounded queue drained on writable readiness.

use crate::counters::{Counter, Counters};

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};

use super::SinkError;
use super::queue::Queue;

pub struct FileSink {
    path: PathBuf,
    file: Option<File>,
    written: u64,
    errors: u64,
    reopens: u64,
}

impl FileSink {
    pub fn open(path: &Path) -> Result<FileSink, SinkError> {
        let file = open_append(path).map_err(|source| SinkError::File {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(FileSink {
            path: path.to_path_buf(),
            file: Some(file),
            written: 0,
            errors: 0,
            reopens: 0,
        })
    }

    pub fn write(&mut self, line: &[u8]) {
        // One write_all per line on an O_APPEND file: lines never interleave.
        match self.file.as_mut().map(|f| f.write_all(line)) {
            Some(Ok(())) => self.written += 1,
            Some(Err(e)) => {
                self.errors += 1;
                log::debug!("{}: {e}", self.path.display());
            }
            None => self.errors += 1,
        }
    }

    pub fn reopen(&mut self) {
        self.reopens += 1;
        match open_append(&self.path) {
            Ok(f) => self.file = Some(f),
            Err(e) => {
                // Keep writing to the old file rather than to nothing.
                log::warn!("reopen {}: {e}", self.path.display());
            }
        }
    }

    pub fn sync(&mut self) {
        if let Some(f) = &self.file {
            let _ = f.sync_data();
        }
    }

    pub fn counters(&self, out: &mut Counters) {
        out.set(Counter::FileSent, self.written);
        out.set(Counter::FileErrors, self.errors);
        out.set(Counter::FileReopens, self.reopens);
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o640)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
}

/// Messages held for a stalled stdout reader.
const STDOUT_QUEUE: usize = 10_000;
/// Lines per vectored write (IOV_MAX is 1024 on Linux).
const WRITEV_MAX: usize = 256;

pub struct StdoutSink {
    /// True when stdout is a pipe/socket we made non-blocking.
    nonblocking: bool,
    queue: Queue,
    /// Bytes of the front message already written.
    off: usize,
    errors: u64,
    broken: bool,
}

impl StdoutSink {
    pub fn new() -> StdoutSink {
        let fd = io::stdout().as_raw_fd();
        let nonblocking = is_pipe_or_socket(fd) && set_nonblocking(fd);
        StdoutSink {
            nonblocking,
            queue: Queue::new(STDOUT_QUEUE),
            off: 0,
            errors: 0,
            broken: false,
        }
    }

    pub fn register(&mut self, registry: &Registry, token: Token) {
        if self.nonblocking {
            let fd = io::stdout().as_raw_fd();
            if let Err(e) = registry.register(&mut SourceFd(&fd), token, Interest::WRITABLE) {
                log::debug!("stdout not pollable ({e}); drained on tick");
            }
        }
    }

    pub fn write(&mut self, line: &[u8]) {
        if self.broken {
            self.queue.dropped += 1;
            return;
        }
        // Written by `drain` once per loop turn: under a storm one
        // vectored write carries many lines instead of one syscall each.
        self.queue.push(line.to_vec());
    }

    pub fn drain(&mut self) {
        // Straight to fd 1: std's LineWriter would hide partial writes of
        // a non-blocking pipe in its own buffer.
        // SAFETY: fd 1 stays open for the life of the process; ManuallyDrop
        // keeps this handle from closing it.
        let mut out = std::mem::ManuallyDrop::new(unsafe { File::from_raw_fd(1) });
        while !self.queue.is_empty() {
            let off = self.off;
            let slices: Vec<io::IoSlice<'_>> = self
                .queue
                .iter()
                .take(WRITEV_MAX)
                .enumerate()
                .map(|(i, m)| io::IoSlice::new(if i == 0 { &m[off..] } else { m }))
                .collect();
            match out.write_vectored(&slices) {
                Ok(mut n) => {
                    // Pop what went out whole; remember where a partial
                    // write stopped in the next message.
                    n += self.off;
                    while let Some(m) = self.queue.front() {
                        if n < m.len() {
                            self.off = n;
                            break;
                        }
                        n -= m.len();
                        self.queue.pop();
                        self.queue.sent += 1;
                        self.off = 0;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.errors += 1;
                    self.queue.pop();
                    self.off = 0;
                    if e.kind() == io::ErrorKind::BrokenPipe {
                        self.broken = true;
                        // Nobody will ever read these: count them as lost.
                        self.queue.dropped += self.queue.len() as u64;
                        while self.queue.pop().is_some() {}
                    }
                }
            }
        }
    }

    pub fn flush_blocking(&mut self, deadline: Instant) {
        while !self.queue.is_empty() && !self.broken && Instant::now() < deadline {
            self.drain();
            if !self.queue.is_empty() {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }

    pub fn broken(&self) -> bool {
        self.broken
    }

    pub fn counters(&self, out: &mut Counters) {
        self.queue.counters(
            [
                Counter::StdoutSent,
                Counter::StdoutDropped,
                Counter::StdoutQueued,
            ],
            out,
        );
        out.set(Counter::StdoutErrors, self.errors);
    }
}

impl Default for StdoutSink {
    fn default() -> Self {
        Self::new()
    }
}

fn is_pipe_or_socket(fd: i32) -> bool {
    let path = format!("/proc/self/fd/{fd}");
    std::fs::metadata(path)
        .map(|m| m.file_type().is_fifo() || m.file_type().is_socket())
        .unwrap_or(false)
}

fn set_nonblocking(fd: i32) -> bool {
    // SAFETY: fcntl on our own stdout descriptor with valid flags.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        flags >= 0 && libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) == 0
    }
}
