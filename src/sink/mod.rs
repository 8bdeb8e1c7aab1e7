//! Every way an alert leaves the process: syslog (RFC 5424/3164/CEF over
//! unix, UDP, TCP, TLS), the local alert socket, a JSON-lines file and
//! stdout. [`Outputs`] is the one handle the daemon holds.
//!
//! Discipline: [`Outputs::emit`] formats each event once per format, pushes
//! it into bounded per-sink queues and tries a non-blocking write; the mio
//! loop finishes the job through [`Outputs::handle`] and [`Outputs::tick`].
//! Nothing here blocks except [`Outputs::flush`] (bounded by its deadline),
//! and every message that cannot be delivered is counted.

use crate::counters::Counters;
use crate::stages::{self, Stage};

pub mod format;
mod local;
mod queue;
mod reconfigure;
pub mod socket;
mod syslog;
pub mod tail;
mod tls;

use std::io;
use std::time::{Duration, Instant};

use crate::config::OutputConfig;
use crate::event::Event;

pub use local::{FileSink, StdoutSink};
pub use socket::AlertSocket;
pub use syslog::SyslogSink;

/// mio tokens at or above this belong to the sinks; below, to the daemon.
pub const TOKEN_BASE: usize = 1000;
const TOKEN_SYSLOG: usize = TOKEN_BASE;
const TOKEN_STDOUT: usize = TOKEN_BASE + 1;
const TOKEN_LISTENER: usize = TOKEN_BASE + 2;
/// Readers of the alert socket get `TOKEN_READERS + n`.
const TOKEN_READERS: usize = TOKEN_BASE + 16;

/// How often, at most, the self-log line about drops is written.
const REPORT_EVERY: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("alert socket {path}: {op}: {source}")]
    Socket {
        path: std::path::PathBuf,
        op: &'static str,
        source: io::Error,
    },
    #[error("output file {path}: {source}")]
    File {
        path: std::path::PathBuf,
        source: io::Error,
    },
    #[error("syslog: {0}")]
    Syslog(String),
}

/// All enabled sinks.
pub struct Outputs {
    emit_events: bool,
    syslog: Option<SyslogSink>,
    socket: Option<AlertSocket>,
    file: Option<FileSink>,
    stdout: Option<StdoutSink>,
    last_report: Option<Instant>,
    reported_drops: u64,
    /// Counters of sinks replaced by a reload (see `reconfigure`).
    retired: Counters,
    /// The JSON line being written, reused.
    line: Vec<u8>,
}

impl Outputs {
    pub fn new(cfg: &OutputConfig, emit_events: bool) -> Result<Outputs, SinkError> {
        let syslog = match cfg.syslog.enabled {
            true => Some(SyslogSink::new(&cfg.syslog)?),
            false => None,
        };
        let socket = match cfg.socket.enabled {
            true => Some(AlertSocket::bind(&cfg.socket)?),
            false => None,
        };
        let file = match cfg.file.enabled {
            true => Some(FileSink::open(&cfg.file.path)?),
            false => None,
        };
        let stdout = cfg.stdout.enabled.then(StdoutSink::new);
        Ok(Outputs {
            emit_events,
            syslog,
            socket,
            file,
            stdout,
            last_report: None,
            reported_drops: 0,
            retired: Counters::default(),
            line: Vec::new(),
        })
    }

    pub fn register(&mut self, registry: &mio::Registry) -> io::Result<()> {
        if let Some(s) = &mut self.socket {
            s.register(registry, mio::Token(TOKEN_LISTENER))?;
        }
        if let Some(s) = &mut self.stdout {
            s.register(registry, mio::Token(TOKEN_STDOUT));
        }
        if let Some(s) = &mut self.syslog {
            s.connect_now(registry, Instant::now());
        }
        Ok(())
    }

    /// Readiness for one of the sinks' tokens (>= [`TOKEN_BASE`]).
    pub fn handle(&mut self, registry: &mio::Registry, event: &mio::event::Event) {
        let t = event.token().0;
        match t {
            TOKEN_SYSLOG => {
                if let Some(s) = &mut self.syslog {
                    s.ready(registry, Instant::now());
                }
            }
            TOKEN_STDOUT => {
                if let Some(s) = &mut self.stdout {
                    s.drain();
                }
            }
            TOKEN_LISTENER => {
                if let Some(s) = &mut self.socket {
                    s.accept(registry, TOKEN_READERS);
                }
            }
            t if t >= TOKEN_READERS => {
                if let Some(s) = &mut self.socket {
                    s.reader_ready(t - TOKEN_READERS, event);
                }
            }
            _ => {}
        }
    }

    /// Sends one event everywhere: alerts always, plain events only when
    /// `emit_events`. Never blocks.
    pub fn emit(&mut self, ev: &Event) {
        if !ev.is_alert() && !self.emit_events {
            return;
        }
        let needs_json = self.socket.is_some() || self.file.is_some() || self.stdout.is_some();
        let mut line = std::mem::take(&mut self.line);
        if needs_json {
            format::json_line_into(ev, &mut line);
        } else {
            line.clear();
        }
        line.push(b'\n');
        if let Some(s) = &mut self.syslog {
            s.push(ev);
        }
        stages::lap(Stage::Format);
        if let Some(s) = &mut self.socket {
            s.send(&line);
        }
        if let Some(f) = &mut self.file {
            f.write(&line);
        }
        if let Some(s) = &mut self.stdout {
            s.write(&line);
        }
        self.line = line;
        stages::lap(Stage::Output);
    }

    /// Reconnects, retries writes, and logs a line when a drop counter
    /// moved. Call it after every poll wake-up; returns when it wants to be
    /// called next at the latest.
    pub fn tick(&mut self, registry: &mio::Registry, now: Instant) -> Option<Instant> {
        let mut next = None;
        if let Some(s) = &mut self.syslog {
            next = s.tick(registry, now);
        }
        if let Some(s) = &mut self.stdout {
            s.drain();
        }
        let drops = self.counters().losses();
        if drops != self.reported_drops {
            let due = self.last_report.is_none_or(|t| now >= t + REPORT_EVERY);
            if due {
                let counters = self.counters();
                let moved: Vec<String> = counters
                    .iter()
                    .filter(|(c, v)| *v > 0 && c.is_loss())
                    .map(|(c, v)| format!("{}={v}", c.name()))
                    .collect();
                log::warn!("outputs lost messages: {}", moved.join(" "));
                self.reported_drops = drops;
                self.last_report = Some(now);
            } else if let Some(t) = self.last_report {
                next = earliest(next, Some(t + REPORT_EVERY));
            }
        }
        next
    }

    /// SIGHUP: reopen the output file (after logrotate moved it).
    pub fn reopen(&mut self) {
        if let Some(f) = &mut self.file {
            f.reopen();
        }
    }

    /// SIGTERM: drain queues, blocking until done or `deadline`.
    pub fn flush(&mut self, deadline: Instant) {
        if let Some(s) = &mut self.stdout {
            s.flush_blocking(deadline);
        }
        if let Some(s) = &mut self.socket {
            s.flush_blocking(deadline);
        }
        if let Some(s) = &mut self.syslog {
            s.flush_blocking(deadline);
        }
        if let Some(f) = &mut self.file {
            f.sync();
        }
    }

    /// Counters for `status` and the self-log line, as `sink.name` pairs.
    pub fn counters(&self) -> Counters {
        let mut live = Counters::default();
        if let Some(s) = &self.syslog {
            s.counters(&mut live);
        }
        if let Some(s) = &self.socket {
            s.counters(&mut live);
        }
        if let Some(f) = &self.file {
            f.counters(&mut live);
        }
        if let Some(s) = &self.stdout {
            s.counters(&mut live);
        }
        let mut out = self.retired.clone();
        out.merge(&live);
        out
    }

    /// True once a write to stdout failed with EPIPE (the reader is gone);
    /// the daemon decides whether that ends the run.
    pub fn stdout_broken(&self) -> bool {
        self.stdout.as_ref().is_some_and(StdoutSink::broken)
    }
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// `host:port` → (host, port); `[v6]:port` accepted. Used by validation.
pub fn split_host_port(addr: &str) -> Result<(String, u16), String> {
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| format!("`{addr}`: expected host:port"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("`{addr}`: bad port `{port}`"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(format!("`{addr}`: empty host"));
    }
    Ok((host.to_string(), port))
}
