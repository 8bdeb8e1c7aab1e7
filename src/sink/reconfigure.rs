//! SIGHUP for the outputs: sinks whose section is unchanged keep running
//! (an alert-socket reader stays connected, a syslog queue keeps its
//! messages); changed ones are rebuilt. A syslog sink is built off the loop
//! by the caller, because resolving its collector's name can block.

use std::time::Instant;

use super::socket::AlertSocket;
use super::{FileSink, Outputs, StdoutSink, SyslogSink, TOKEN_LISTENER, TOKEN_STDOUT};
use crate::config::OutputConfig;
use crate::counters::{Counter, Counters, Kind};

impl Outputs {
    /// Applies the socket, file and stdout sections of `new` where they
    /// differ from `old`, and `emit_events`. A sink that cannot be rebuilt
    /// is logged and left off; the others are unaffected.
    pub fn reconfigure_local(
        &mut self,
        registry: &mio::Registry,
        old: &OutputConfig,
        new: &OutputConfig,
        emit_events: bool,
    ) {
        self.emit_events = emit_events;
        if old.socket != new.socket {
            // Closed first: the new one may bind the same path.
            if let Some(s) = self.socket.take() {
                self.retire(|c| s.counters(c));
            }
            if new.socket.enabled {
                match AlertSocket::bind(&new.socket) {
                    Ok(mut s) => match s.register(registry, mio::Token(TOKEN_LISTENER)) {
                        Ok(()) => self.socket = Some(s),
                        Err(e) => log::error!("reload: alert socket: {e}; it stays off"),
                    },
                    Err(e) => log::error!("reload: alert socket: {e}; it stays off"),
                }
            }
        }
        if old.file != new.file {
            if let Some(mut f) = self.file.take() {
                f.sync();
                self.retire(|c| f.counters(c));
            }
            if new.file.enabled {
                match FileSink::open(&new.file.path) {
                    Ok(f) => self.file = Some(f),
                    Err(e) => log::error!("reload: output file: {e}; it stays off"),
                }
            }
        }
        if old.stdout != new.stdout {
            if let Some(mut s) = self.stdout.take() {
                s.flush_blocking(Instant::now());
                self.retire(|c| s.counters(c));
            }
            self.stdout = new.stdout.enabled.then(|| {
                let mut s = StdoutSink::new();
                s.register(registry, mio::Token(TOKEN_STDOUT));
                s
            });
        }
    }

    /// Puts a new syslog sink (or none) in place of the running one; the
    /// old one gets one non-blocking try at its queue, what is left is
    /// counted as dropped.
    pub fn replace_syslog(&mut self, registry: &mio::Registry, sink: Option<SyslogSink>) {
        if let Some(mut old) = self.syslog.take() {
            old.flush_blocking(Instant::now());
            self.retire(|c| old.counters(c));
        }
        self.syslog = sink.map(|mut s| {
            s.connect_now(registry, Instant::now());
            s
        });
    }

    /// Keeps a replaced sink's counters, so totals never go backwards;
    /// what was still queued in it is lost, and counted so.
    fn retire(&mut self, counters_of: impl FnOnce(&mut Counters)) {
        let mut c = Counters::default();
        counters_of(&mut c);
        for (k, v) in c.iter() {
            match (k, k.kind()) {
                (Counter::SyslogQueued, _) => self.retired.add(Counter::SyslogDropped, v),
                (Counter::StdoutQueued, _) => self.retired.add(Counter::StdoutDropped, v),
                (_, Kind::Gauge) => {}
                _ => self.retired.add(k, v),
            }
        }
    }
}
