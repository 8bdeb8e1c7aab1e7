//! Reading the proc connector until it would block: datagrams decoded into
//! kernel events, in kernel order, with the losses on the way counted here
//! (buffer overruns, the kernel's dropped events, undecodable datagrams).

use std::io;

use super::wire::{self, KernelEvent};
use super::{ProcConnector, is_overrun};
use crate::counters::{Counter, Counters};
use crate::seqgap::SeqGaps;

/// What one drain found besides the events.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Drained {
    pub datagrams: u64,
    /// At least one `ENOBUFS`: exits may be lost, the table needs a rescan.
    pub overrun: bool,
}

pub struct KernelReader {
    pub conn: ProcConnector,
    buf: Vec<u8>,
    seq_gaps: SeqGaps,
    counters: Counters,
}

impl KernelReader {
    pub fn new(conn: ProcConnector) -> Self {
        let mut counters = Counters::default();
        for c in [
            Counter::Overruns,
            Counter::LostEvents,
            Counter::DecodeErrors,
        ] {
            counters.set(c, 0);
        }
        KernelReader {
            conn,
            buf: vec![0u8; 64 * 1024],
            seq_gaps: SeqGaps::default(),
            counters,
        }
    }

    /// Reads until the socket would block (the kernel queue is the only
    /// buffer between us and an overrun), handing each event to `f`.
    pub fn drain(&mut self, f: &mut dyn FnMut(KernelEvent)) -> Drained {
        let mut d = Drained::default();
        loop {
            let n = match self.conn.recv(&mut self.buf) {
                Ok(0) => return d,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return d,
                Err(e) if is_overrun(&e) => {
                    self.counters.inc(Counter::Overruns);
                    d.overrun = true;
                    continue;
                }
                Err(e) => {
                    log::warn!("netlink receive failed: {e}");
                    return d;
                }
            };
            d.datagrams += 1;
            crate::stages::lap(crate::stages::Stage::KernelRead);
            for item in wire::decode_records(&self.buf[..n]) {
                match item {
                    Ok(rec) => {
                        if rec.ack == 0 {
                            let lost = self.seq_gaps.observe(rec.cpu, rec.seq);
                            self.counters.add(Counter::LostEvents, lost);
                        }
                        f(rec.event);
                    }
                    Err(e) => {
                        self.counters.inc(Counter::DecodeErrors);
                        log::debug!("undecodable netlink datagram: {e}");
                    }
                }
            }
        }
    }

    pub fn counters(&self, out: &mut Counters) {
        out.merge(&self.counters);
    }
}
