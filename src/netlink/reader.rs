//! Reading the proc connector until it would block: datagrams decoded into
//! kernel events, in kernel order, with the losses on the way counted here
//! (buffer overruns, the kernel's dropped events, undecodable datagrams).

use std::io;

use super::wire::{self, KernelEvent};
use super::{BATCH, ProcConnector, RecvBatch, is_overrun};
use crate::counters::{Counter, Counters};
use crate::seqgap::SeqGaps;

/// What one drain found besides the events.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Drained {
    pub datagrams: u64,
    /// At least one `ENOBUFS`: exits may be lost, the table needs a rescan.
    pub overrun: bool,
}

/// What one [`KernelReader::read_batch`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Batch {
    /// Events; `short`: fewer datagrams than asked, the socket is empty.
    Events { short: bool },
    /// Nothing: the socket is empty.
    Dry,
}

pub struct KernelReader {
    pub conn: ProcConnector,
    batch: RecvBatch,
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
            batch: RecvBatch::default(),
            seq_gaps: SeqGaps::default(),
            counters,
        }
    }

    /// Reads one batch of datagrams (one `recvmmsg`) into `events`, in
    /// kernel order. [`Batch::Dry`] when the socket would block. The socket
    /// is known to be empty after `Dry` or a short batch: a datagram that
    /// arrives later raises a new edge-triggered wake-up. Before sleeping,
    /// read until then; the kernel queue is the only buffer between us and
    /// an overrun.
    pub fn read_batch(&mut self, events: &mut Vec<KernelEvent>, d: &mut Drained) -> Batch {
        events.clear();
        loop {
            // A short receive emptied the socket.
            let emptied = match self.conn.recv_batch(&mut self.batch) {
                Ok(n) => {
                    d.datagrams += n as u64;
                    n > 0 && n < BATCH
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Batch::Dry,
                Err(e) if is_overrun(&e) => {
                    self.counters.inc(Counter::Overruns);
                    d.overrun = true;
                    continue;
                }
                Err(e) => {
                    log::warn!("netlink receive failed: {e}");
                    return Batch::Dry;
                }
            };
            for dgram in self.batch.datagrams() {
                for item in wire::decode_records(dgram) {
                    match item {
                        Ok(rec) => {
                            if rec.ack == 0 {
                                let lost = self.seq_gaps.observe(rec.cpu, rec.seq);
                                self.counters.add(Counter::LostEvents, lost);
                            }
                            events.push(rec.event);
                        }
                        Err(e) => {
                            self.counters.inc(Counter::DecodeErrors);
                            log::debug!("undecodable netlink datagram: {e}");
                        }
                    }
                }
            }
            crate::stages::lap(crate::stages::Stage::KernelRead);
            if !events.is_empty() {
                return Batch::Events { short: emptied };
            }
            if emptied {
                return Batch::Dry;
            }
        }
    }

    pub fn counters(&self, out: &mut Counters) {
        out.merge(&self.counters);
    }
}
