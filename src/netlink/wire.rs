//! PURE decoder (and encoder) for proc connector datagrams: `&[u8]` → an
//! iterator of [`KernelEvent`]s. No I/O, no allocation, never panics; any
//! truncated or malformed part of a datagram becomes a [`WireError`] value.
//!
//! A datagram is one or more netlink messages:
//!
//! ```text
//! nlmsghdr (16)  len:u32 type:u16 flags:u16 seq:u32 pid:u32
//! cn_msg   (20)  idx:u32 val:u32 seq:u32 ack:u32 len:u16 flags:u16
//! proc_event     what:u32 cpu:u32 timestamp_ns:u64 | union (24 bytes today)
//! ```
//!
//! All integers are in native byte order (netlink never leaves the host).
//! The kernel tags connector messages with `NLMSG_DONE`, so that type
//! carries a payload here rather than ending a dump. The `proc_event` starts
//! at offset 36 of the datagram, which is not 8-aligned: every field is read
//! byte-wise, never through a cast.
//!
//! Layout history that matters: `exit_proc_event` gained `parent_pid` and
//! `parent_tgid` (and `coredump_proc_event` its parent fields) in Linux 4.18.
//! The union was already 24 bytes because of `comm`, so both layouts send 40
//! bytes, but a sender that trims `cn_msg.len` to the old struct is accepted
//! and the missing parent fields decode as 0.

use thiserror::Error;

/// `sizeof(struct nlmsghdr)`.
pub const NLMSG_HDRLEN: usize = 16;
/// `sizeof(struct cn_msg)` without its flexible `data`.
pub const CN_MSG_HDRLEN: usize = 20;
/// `what`, `cpu`, `timestamp_ns` of `struct proc_event`.
pub const PROC_EVENT_HDRLEN: usize = 16;
/// `sizeof(struct proc_event)` on every kernel since 2.6.15 (union of 24).
pub const PROC_EVENT_LEN: usize = 40;
/// Size of one kernel datagram: nlmsghdr + cn_msg + proc_event.
pub const EVENT_DATAGRAM_LEN: usize = NLMSG_HDRLEN + CN_MSG_HDRLEN + PROC_EVENT_LEN;

/// Connector id of the process events connector (`CN_IDX_PROC`); it is also
/// the multicast group to bind to.
pub const CN_IDX_PROC: u32 = 1;
/// `CN_VAL_PROC`.
pub const CN_VAL_PROC: u32 = 1;

pub const NLMSG_NOOP: u16 = 1;
pub const NLMSG_ERROR: u16 = 2;
pub const NLMSG_DONE: u16 = 3;
pub const NLMSG_OVERRUN: u16 = 4;

pub const PROC_EVENT_NONE: u32 = 0x0000_0000;
pub const PROC_EVENT_FORK: u32 = 0x0000_0001;
pub const PROC_EVENT_EXEC: u32 = 0x0000_0002;
pub const PROC_EVENT_UID: u32 = 0x0000_0004;
pub const PROC_EVENT_GID: u32 = 0x0000_0040;
pub const PROC_EVENT_SID: u32 = 0x0000_0080;
pub const PROC_EVENT_PTRACE: u32 = 0x0000_0100;
pub const PROC_EVENT_COMM: u32 = 0x0000_0200;
pub const PROC_EVENT_COREDUMP: u32 = 0x4000_0000;
pub const PROC_EVENT_EXIT: u32 = 0x8000_0000;

/// One decoded `proc_event`. Pids are the kernel's `__kernel_pid_t` values
/// as seen from the initial pid namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelEvent {
    /// Answer to a (un)subscribe request: `err` is 0 on success, else an errno.
    Ack {
        err: u32,
    },
    Fork {
        parent_pid: u32,
        parent_tgid: u32,
        child_pid: u32,
        child_tgid: u32,
    },
    /// `ns`: when the exec completed, CLOCK_MONOTONIC (the `proc_event`
    /// header's time stamp, kept with the event: the exec join orders the
    /// capture sources' records against it).
    Exec {
        pid: u32,
        tgid: u32,
        ns: u64,
    },
    /// `exit_code` is the wait(2) status word. `exit_signal` is the signal
    /// the parent gets (SIGCHLD = 17), `u32::MAX` (-1) for a thread that is
    /// not the group leader, whose parent fields are then 0. Parent fields
    /// are also 0 on kernels before 4.18.
    Exit {
        pid: u32,
        tgid: u32,
        exit_code: u32,
        exit_signal: u32,
        parent_pid: u32,
        parent_tgid: u32,
    },
    Uid {
        pid: u32,
        tgid: u32,
        ruid: u32,
        euid: u32,
    },
    Gid {
        pid: u32,
        tgid: u32,
        rgid: u32,
        egid: u32,
    },
    Sid {
        pid: u32,
        tgid: u32,
    },
    Ptrace {
        pid: u32,
        tgid: u32,
        tracer_pid: u32,
        tracer_tgid: u32,
    },
    /// `comm` is NUL-padded, as the kernel sends it.
    Comm {
        pid: u32,
        tgid: u32,
        comm: [u8; 16],
    },
    /// Parent fields are 0 on kernels before 4.18.
    Coredump {
        pid: u32,
        tgid: u32,
        parent_pid: u32,
        parent_tgid: u32,
    },
    /// A `what` this decoder does not know; kept so callers can count it.
    Unknown {
        what: u32,
    },
}

/// A [`KernelEvent`] with the `cn_msg` and `proc_event` header fields
/// around it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    /// `cn_msg.seq`: the kernel's per-CPU event counter (a gap means lost
    /// events). Acks carry it too: the request's seq is not echoed.
    pub seq: u32,
    /// `cn_msg.ack`: 0 for events; for an ack, the request's ack + 1, which
    /// tells a socket its own ack from those multicast for other listeners.
    pub ack: u32,
    /// CPU the event was generated on.
    pub cpu: u32,
    /// `ktime_get_ns()` (CLOCK_MONOTONIC) when the kernel built the event.
    pub timestamp_ns: u64,
    pub event: KernelEvent,
}

/// Why part of a datagram could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum WireError {
    #[error("truncated {what}: need {need} bytes, have {have}")]
    Truncated {
        what: &'static str,
        need: usize,
        have: usize,
    },
    #[error("bad nlmsg_len {len} (remaining datagram {remaining} bytes)")]
    BadNlmsgLen { len: u32, remaining: usize },
    #[error("netlink error message: errno {errno}")]
    Netlink { errno: i32 },
    #[error("netlink overrun reported by the kernel")]
    Overrun,
    #[error("not a proc connector message (idx {idx}, val {val})")]
    NotProcConnector { idx: u32, val: u32 },
}

/// Subscription operations (`enum proc_cn_mcast_op`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum McastOp {
    Listen = 1,
    Ignore = 2,
}

/// Iterates over the records of one datagram. Returned by [`decode_records`].
#[derive(Debug, Clone)]
pub struct Records<'a> {
    rest: &'a [u8],
}

/// Iterates over the events of one datagram. Returned by [`decode`].
#[derive(Debug, Clone)]
pub struct Decoder<'a> {
    records: Records<'a>,
}

/// Decodes one datagram into its events. Messages that carry no event
/// (`NLMSG_NOOP`, a zero `NLMSG_ERROR` ack, an empty `NLMSG_DONE`) are
/// skipped. After an error in a netlink header the rest of the datagram is
/// unreadable and iteration ends; after an error inside one message the next
/// message is still decoded.
pub fn decode(buf: &[u8]) -> Decoder<'_> {
    Decoder {
        records: decode_records(buf),
    }
}

/// Like [`decode`], but keeps each event's `cpu` and `timestamp_ns`.
pub fn decode_records(buf: &[u8]) -> Records<'_> {
    Records { rest: buf }
}

impl Iterator for Decoder<'_> {
    type Item = Result<KernelEvent, WireError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.records.next().map(|r| r.map(|rec| rec.event))
    }
}

impl Iterator for Records<'_> {
    type Item = Result<Record, WireError>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.rest.is_empty() {
            let (ty, payload) = match self.next_message() {
                Ok(m) => m,
                Err(e) => return Some(Err(e)),
            };
            match ty {
                NLMSG_NOOP => continue,
                NLMSG_ERROR => match read_u32(payload, 0) {
                    // A zero error is an ack of a request; it carries no event.
                    Some(0) => continue,
                    Some(e) => {
                        return Some(Err(WireError::Netlink {
                            errno: (e as i32).wrapping_neg(),
                        }));
                    }
                    None => return Some(Err(truncated("nlmsgerr", 4, payload.len()))),
                },
                NLMSG_OVERRUN => return Some(Err(WireError::Overrun)),
                NLMSG_DONE if payload.is_empty() => continue,
                _ => return Some(decode_cn_msg(payload)),
            }
        }
        None
    }
}

impl<'a> Records<'a> {
    /// Splits off the next netlink message: `(nlmsg_type, payload)`.
    fn next_message(&mut self) -> Result<(u16, &'a [u8]), WireError> {
        let rest = self.rest;
        let (Some(len), Some(ty)) = (read_u32(rest, 0), read_u16(rest, 4)) else {
            self.rest = &[];
            return Err(truncated("nlmsghdr", NLMSG_HDRLEN, rest.len()));
        };
        let Some(msg) = usize::try_from(len)
            .ok()
            .filter(|&l| l >= NLMSG_HDRLEN)
            .and_then(|l| rest.get(..l))
        else {
            self.rest = &[];
            return Err(WireError::BadNlmsgLen {
                len,
                remaining: rest.len(),
            });
        };
        // Messages are padded to 4 bytes; the last one may lack its padding.
        let advance = msg.len().saturating_add(3) & !3;
        self.rest = rest.get(advance..).unwrap_or(&[]);
        Ok((ty, msg.get(NLMSG_HDRLEN..).unwrap_or(&[])))
    }
}

fn decode_cn_msg(payload: &[u8]) -> Result<Record, WireError> {
    let (Some(idx), Some(val), Some(seq), Some(ack), Some(len)) = (
        read_u32(payload, 0),
        read_u32(payload, 4),
        read_u32(payload, 8),
        read_u32(payload, 12),
        read_u16(payload, 16),
    ) else {
        return Err(truncated("cn_msg", CN_MSG_HDRLEN, payload.len()));
    };
    if idx != CN_IDX_PROC || val != CN_VAL_PROC {
        return Err(WireError::NotProcConnector { idx, val });
    }
    let data = payload.get(CN_MSG_HDRLEN..).unwrap_or(&[]);
    let data = data.get(..usize::from(len)).ok_or(truncated(
        "cn_msg data",
        usize::from(len),
        data.len(),
    ))?;
    let (cpu, timestamp_ns, event) = decode_proc_event(data)?;
    Ok(Record {
        seq,
        ack,
        cpu,
        timestamp_ns,
        event,
    })
}

fn decode_proc_event(data: &[u8]) -> Result<(u32, u64, KernelEvent), WireError> {
    let (Some(what), Some(cpu), Some(timestamp_ns)) =
        (read_u32(data, 0), read_u32(data, 4), read_u64(data, 8))
    else {
        return Err(truncated("proc_event", PROC_EVENT_HDRLEN, data.len()));
    };
    let event = decode_union(
        what,
        timestamp_ns,
        data.get(PROC_EVENT_HDRLEN..).unwrap_or(&[]),
    )?;
    Ok((cpu, timestamp_ns, event))
}

/// Reads the `event_data` union for `what`. `u` may be shorter than the 24
/// bytes the kernel sends; only the fields the event needs are required.
fn decode_union(what: u32, ns: u64, u: &[u8]) -> Result<KernelEvent, WireError> {
    let need = |n: usize, name: &'static str| -> Result<[u32; 6], WireError> {
        if u.len() < n {
            return Err(truncated(name, n, u.len()));
        }
        let mut w = [0u32; 6];
        for (i, slot) in w.iter_mut().enumerate() {
            *slot = read_u32(u, i * 4).unwrap_or(0);
        }
        Ok(w)
    };
    let ev = match what {
        PROC_EVENT_NONE => {
            let w = need(4, "ack event")?;
            KernelEvent::Ack { err: w[0] }
        }
        PROC_EVENT_FORK => {
            let w = need(16, "fork event")?;
            KernelEvent::Fork {
                parent_pid: w[0],
                parent_tgid: w[1],
                child_pid: w[2],
                child_tgid: w[3],
            }
        }
        PROC_EVENT_EXEC => {
            let w = need(8, "exec event")?;
            KernelEvent::Exec {
                pid: w[0],
                tgid: w[1],
                ns,
            }
        }
        PROC_EVENT_UID => {
            let w = need(16, "uid event")?;
            KernelEvent::Uid {
                pid: w[0],
                tgid: w[1],
                ruid: w[2],
                euid: w[3],
            }
        }
        PROC_EVENT_GID => {
            let w = need(16, "gid event")?;
            KernelEvent::Gid {
                pid: w[0],
                tgid: w[1],
                rgid: w[2],
                egid: w[3],
            }
        }
        PROC_EVENT_SID => {
            let w = need(8, "sid event")?;
            KernelEvent::Sid {
                pid: w[0],
                tgid: w[1],
            }
        }
        PROC_EVENT_PTRACE => {
            let w = need(16, "ptrace event")?;
            KernelEvent::Ptrace {
                pid: w[0],
                tgid: w[1],
                tracer_pid: w[2],
                tracer_tgid: w[3],
            }
        }
        PROC_EVENT_COMM => decode_comm(u)?,
        PROC_EVENT_COREDUMP => {
            // Pre-4.18 coredump events have only pid and tgid.
            let w = need(8, "coredump event")?;
            KernelEvent::Coredump {
                pid: w[0],
                tgid: w[1],
                parent_pid: w[2],
                parent_tgid: w[3],
            }
        }
        PROC_EVENT_EXIT => {
            // Pre-4.18 exit events stop after exit_signal.
            let w = need(16, "exit event")?;
            KernelEvent::Exit {
                pid: w[0],
                tgid: w[1],
                exit_code: w[2],
                exit_signal: w[3],
                parent_pid: w[4],
                parent_tgid: w[5],
            }
        }
        what => KernelEvent::Unknown { what },
    };
    Ok(ev)
}

fn decode_comm(u: &[u8]) -> Result<KernelEvent, WireError> {
    let (Some(pid), Some(tgid), Some(name)) = (read_u32(u, 0), read_u32(u, 4), u.get(8..24)) else {
        return Err(truncated("comm event", 24, u.len()));
    };
    let mut comm = [0u8; 16];
    comm.copy_from_slice(name);
    Ok(KernelEvent::Comm { pid, tgid, comm })
}

fn truncated(what: &'static str, need: usize, have: usize) -> WireError {
    WireError::Truncated { what, need, have }
}

fn read_u16(b: &[u8], at: usize) -> Option<u16> {
    let s = b.get(at..at.checked_add(2)?)?;
    Some(u16::from_ne_bytes(s.try_into().ok()?))
}

fn read_u32(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_ne_bytes(s.try_into().ok()?))
}

fn read_u64(b: &[u8], at: usize) -> Option<u64> {
    let s = b.get(at..at.checked_add(8)?)?;
    Some(u64::from_ne_bytes(s.try_into().ok()?))
}

// ---- encoding -------------------------------------------------------------

/// Length of a subscribe/unsubscribe request: nlmsghdr + cn_msg + op.
pub const MCAST_MSG_LEN: usize = NLMSG_HDRLEN + CN_MSG_HDRLEN + 4;

/// Builds the request that (un)subscribes a socket from process events.
/// The payload is the bare 4-byte op: kernels before 6.6 reject anything
/// longer, and newer ones treat it as "all events". `cn_msg.ack` carries
/// `port_id`, so the kernel's answer (multicast to every listener) comes
/// back with `ack == port_id + 1` (see [`is_ack_for`]).
pub fn mcast_message(op: McastOp, seq: u32, port_id: u32) -> [u8; MCAST_MSG_LEN] {
    let mut out = [0u8; MCAST_MSG_LEN];
    let mut w = Writer {
        buf: &mut out,
        at: 0,
    };
    w.nlmsghdr(MCAST_MSG_LEN as u32, seq, port_id);
    w.cn_msg(seq, port_id, 4);
    w.u32(op as u32);
    out
}

/// If `rec` is the kernel's answer to a request built by [`mcast_message`]
/// for `port_id`, returns its error (0 = subscribed). Only `ack` identifies
/// it: the kernel replaces the request's seq with its own counter.
pub fn is_ack_for(rec: &Record, port_id: u32) -> Option<u32> {
    match rec.event {
        KernelEvent::Ack { err } if rec.ack == port_id.wrapping_add(1) => Some(err),
        _ => None,
    }
}

/// Appends one kernel-shaped datagram carrying `rec` to `out` (76 bytes, as
/// the kernel sends it). For test fixtures, replay tools and fuzzing.
pub fn encode_record(rec: &Record, out: &mut Vec<u8>) {
    let start = out.len();
    out.resize(start + EVENT_DATAGRAM_LEN, 0);
    let mut w = Writer {
        buf: &mut out[start..],
        at: 0,
    };
    w.nlmsghdr(EVENT_DATAGRAM_LEN as u32, rec.seq, 0);
    w.cn_msg(rec.seq, rec.ack, PROC_EVENT_LEN as u16);
    let (what, words, comm) = event_fields(&rec.event);
    w.u32(what);
    w.u32(rec.cpu);
    w.bytes(&rec.timestamp_ns.to_ne_bytes());
    let n = if comm.is_some() { 2 } else { 6 };
    for word in &words[..n] {
        w.u32(*word);
    }
    if let Some(c) = comm {
        w.bytes(&c);
    }
}

/// `(what, union words, comm)` of an event.
fn event_fields(ev: &KernelEvent) -> (u32, [u32; 6], Option<[u8; 16]>) {
    use KernelEvent as K;
    match *ev {
        K::Ack { err } => (PROC_EVENT_NONE, [err, 0, 0, 0, 0, 0], None),
        K::Fork {
            parent_pid,
            parent_tgid,
            child_pid,
            child_tgid,
        } => (
            PROC_EVENT_FORK,
            [parent_pid, parent_tgid, child_pid, child_tgid, 0, 0],
            None,
        ),
        K::Exec { pid, tgid, .. } => (PROC_EVENT_EXEC, [pid, tgid, 0, 0, 0, 0], None),
        K::Exit {
            pid,
            tgid,
            exit_code,
            exit_signal,
            parent_pid,
            parent_tgid,
        } => (
            PROC_EVENT_EXIT,
            [pid, tgid, exit_code, exit_signal, parent_pid, parent_tgid],
            None,
        ),
        K::Uid {
            pid,
            tgid,
            ruid,
            euid,
        } => (PROC_EVENT_UID, [pid, tgid, ruid, euid, 0, 0], None),
        K::Gid {
            pid,
            tgid,
            rgid,
            egid,
        } => (PROC_EVENT_GID, [pid, tgid, rgid, egid, 0, 0], None),
        K::Sid { pid, tgid } => (PROC_EVENT_SID, [pid, tgid, 0, 0, 0, 0], None),
        K::Ptrace {
            pid,
            tgid,
            tracer_pid,
            tracer_tgid,
        } => (
            PROC_EVENT_PTRACE,
            [pid, tgid, tracer_pid, tracer_tgid, 0, 0],
            None,
        ),
        K::Comm { pid, tgid, comm } => (PROC_EVENT_COMM, [pid, tgid, 0, 0, 0, 0], Some(comm)),
        K::Coredump {
            pid,
            tgid,
            parent_pid,
            parent_tgid,
        } => (
            PROC_EVENT_COREDUMP,
            [pid, tgid, parent_pid, parent_tgid, 0, 0],
            None,
        ),
        K::Unknown { what } => (what, [0; 6], None),
    }
}

/// Sequential writer over a buffer sized exactly by the caller.
struct Writer<'a> {
    buf: &'a mut [u8],
    at: usize,
}

impl Writer<'_> {
    fn bytes(&mut self, b: &[u8]) {
        if let Some(dst) = self.buf.get_mut(self.at..self.at + b.len()) {
            dst.copy_from_slice(b);
        }
        self.at += b.len();
    }

    fn u32(&mut self, v: u32) {
        self.bytes(&v.to_ne_bytes());
    }

    fn u16(&mut self, v: u16) {
        self.bytes(&v.to_ne_bytes());
    }

    fn nlmsghdr(&mut self, len: u32, seq: u32, port_id: u32) {
        self.u32(len);
        self.u16(NLMSG_DONE);
        self.u16(0);
        self.u32(seq);
        self.u32(port_id);
    }

    fn cn_msg(&mut self, seq: u32, ack: u32, len: u16) {
        self.u32(CN_IDX_PROC);
        self.u32(CN_VAL_PROC);
        self.u32(seq);
        self.u32(ack);
        self.u16(len);
        self.u16(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a datagram field by field from the kernel layout, independent
    /// of [`encode_record`], so encoder and decoder cannot share a mistake.
    fn raw(what: u32, union: &[u8], cn_len: Option<u16>) -> Vec<u8> {
        let cn_len = cn_len.unwrap_or((16 + union.len()) as u16);
        let total = 16 + 20 + 16 + union.len();
        let mut b = Vec::new();
        b.extend_from_slice(&(total as u32).to_ne_bytes()); // nlmsg_len
        b.extend_from_slice(&3u16.to_ne_bytes()); // NLMSG_DONE
        b.extend_from_slice(&0u16.to_ne_bytes()); // flags
        b.extend_from_slice(&7u32.to_ne_bytes()); // seq
        b.extend_from_slice(&0u32.to_ne_bytes()); // pid: kernel
        b.extend_from_slice(&1u32.to_ne_bytes()); // idx
        b.extend_from_slice(&1u32.to_ne_bytes()); // val
        b.extend_from_slice(&7u32.to_ne_bytes()); // seq
        b.extend_from_slice(&0u32.to_ne_bytes()); // ack
        b.extend_from_slice(&cn_len.to_ne_bytes());
        b.extend_from_slice(&0u16.to_ne_bytes()); // flags
        b.extend_from_slice(&what.to_ne_bytes());
        b.extend_from_slice(&3u32.to_ne_bytes()); // cpu
        b.extend_from_slice(&123_456_789u64.to_ne_bytes());
        b.extend_from_slice(union);
        b
    }

    fn words(w: &[u32]) -> Vec<u8> {
        let mut u: Vec<u8> = w.iter().flat_map(|x| x.to_ne_bytes()).collect();
        u.resize(24, 0);
        u
    }

    fn one(buf: &[u8]) -> KernelEvent {
        let all: Vec<_> = decode(buf).collect();
        assert_eq!(all.len(), 1, "{all:?}");
        all[0].expect("decodes")
    }

    #[test]
    fn every_event_type_from_kernel_layout() {
        let cases = [
            (0x0, words(&[0]), KernelEvent::Ack { err: 0 }),
            (
                0x1,
                words(&[10, 10, 11, 11]),
                KernelEvent::Fork {
                    parent_pid: 10,
                    parent_tgid: 10,
                    child_pid: 11,
                    child_tgid: 11,
                },
            ),
            (
                0x2,
                words(&[12, 12]),
                KernelEvent::Exec {
                    pid: 12,
                    tgid: 12,
                    ns: 123_456_789,
                },
            ),
            (
                0x4,
                words(&[13, 13, 1000, 0]),
                KernelEvent::Uid {
                    pid: 13,
                    tgid: 13,
                    ruid: 1000,
                    euid: 0,
                },
            ),
            (
                0x40,
                words(&[14, 14, 100, 101]),
                KernelEvent::Gid {
                    pid: 14,
                    tgid: 14,
                    rgid: 100,
                    egid: 101,
                },
            ),
            (
                0x80,
                words(&[15, 15]),
                KernelEvent::Sid { pid: 15, tgid: 15 },
            ),
            (
                0x100,
                words(&[16, 16, 17, 17]),
                KernelEvent::Ptrace {
                    pid: 16,
                    tgid: 16,
                    tracer_pid: 17,
                    tracer_tgid: 17,
                },
            ),
            (
                0x4000_0000,
                words(&[18, 18, 1, 1]),
                KernelEvent::Coredump {
                    pid: 18,
                    tgid: 18,
                    parent_pid: 1,
                    parent_tgid: 1,
                },
            ),
            (
                0x8000_0000,
                words(&[19, 20, 0x8b00, 17, 5, 5]),
                KernelEvent::Exit {
                    pid: 19,
                    tgid: 20,
                    exit_code: 0x8b00,
                    exit_signal: 17,
                    parent_pid: 5,
                    parent_tgid: 5,
                },
            ),
            (0x1234, words(&[]), KernelEvent::Unknown { what: 0x1234 }),
        ];
        for (what, union, want) in cases {
            let buf = raw(what, &union, None);
            assert_eq!(buf.len(), EVENT_DATAGRAM_LEN);
            assert_eq!(one(&buf), want, "what {what:#x}");
        }
    }

    #[test]
    fn comm_event_keeps_all_16_bytes() {
        let mut u = words(&[21, 22]);
        u.truncate(8);
        u.extend_from_slice(b"kworker/u8:\xff\0\0\0\0");
        let mut comm = [0u8; 16];
        comm.copy_from_slice(b"kworker/u8:\xff\0\0\0\0");
        assert_eq!(
            one(&raw(0x200, &u, None)),
            KernelEvent::Comm {
                pid: 21,
                tgid: 22,
                comm
            }
        );
    }

    #[test]
    fn record_keeps_cpu_and_timestamp() {
        let buf = raw(0x2, &words(&[1, 1]), None);
        let rec = decode_records(&buf).next().and_then(Result::ok);
        assert_eq!(
            rec,
            Some(Record {
                seq: 7,
                ack: 0,
                cpu: 3,
                timestamp_ns: 123_456_789,
                event: KernelEvent::Exec {
                    pid: 1,
                    tgid: 1,
                    ns: 123_456_789,
                },
            })
        );
    }

    #[test]
    fn pre_4_18_exit_and_coredump_without_parent() {
        // cn_msg.len trimmed to the old 16-byte exit struct.
        let buf = raw(0x8000_0000, &words(&[30, 30, 256, 17])[..16], None);
        assert_eq!(
            one(&buf),
            KernelEvent::Exit {
                pid: 30,
                tgid: 30,
                exit_code: 256,
                exit_signal: 17,
                parent_pid: 0,
                parent_tgid: 0
            }
        );
        let buf = raw(0x4000_0000, &words(&[31, 31])[..8], None);
        assert_eq!(
            one(&buf),
            KernelEvent::Coredump {
                pid: 31,
                tgid: 31,
                parent_pid: 0,
                parent_tgid: 0
            }
        );
    }

    #[test]
    fn short_union_is_an_error() {
        let buf = raw(0x1, &words(&[1, 2, 3])[..12], None);
        let got: Vec<_> = decode(&buf).collect();
        assert!(matches!(
            got[..],
            [Err(WireError::Truncated {
                what: "fork event",
                need: 16,
                have: 12
            })]
        ));
    }

    #[test]
    fn cn_len_beyond_message_is_an_error() {
        let buf = raw(0x2, &words(&[1, 1]), Some(200));
        assert!(matches!(
            decode(&buf).next(),
            Some(Err(WireError::Truncated {
                what: "cn_msg data",
                ..
            }))
        ));
    }

    #[test]
    fn other_connector_is_rejected() {
        let mut buf = raw(0x2, &words(&[1, 1]), None);
        buf[16..20].copy_from_slice(&9u32.to_ne_bytes());
        assert_eq!(
            decode(&buf).next(),
            Some(Err(WireError::NotProcConnector { idx: 9, val: 1 }))
        );
    }

    #[test]
    fn several_messages_in_one_datagram() {
        let mut buf = raw(0x1, &words(&[1, 1, 2, 2]), None);
        buf.extend(raw(0x2, &words(&[2, 2]), None));
        // An odd-sized message in the middle exercises NLMSG_ALIGN padding.
        let mut odd = raw(0x2, &words(&[3, 3])[..9], Some(24));
        let len = odd.len() as u32;
        odd.extend_from_slice(&[0xAA; 3]);
        assert_eq!(len % 4, 1);
        buf.extend(odd);
        buf.extend(raw(0x8000_0000, &words(&[2, 2, 0, 17, 1, 1]), None));
        let got: Vec<_> = decode(&buf).collect::<Result<_, _>>().expect("all decode");
        assert_eq!(
            got,
            [
                KernelEvent::Fork {
                    parent_pid: 1,
                    parent_tgid: 1,
                    child_pid: 2,
                    child_tgid: 2
                },
                KernelEvent::Exec {
                    pid: 2,
                    tgid: 2,
                    ns: 123_456_789
                },
                KernelEvent::Exec {
                    pid: 3,
                    tgid: 3,
                    ns: 123_456_789
                },
                KernelEvent::Exit {
                    pid: 2,
                    tgid: 2,
                    exit_code: 0,
                    exit_signal: 17,
                    parent_pid: 1,
                    parent_tgid: 1
                },
            ]
        );
    }

    fn nlmsg(ty: u16, payload: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&((16 + payload.len()) as u32).to_ne_bytes());
        b.extend_from_slice(&ty.to_ne_bytes());
        b.extend_from_slice(&[0; 10]);
        b.extend_from_slice(payload);
        b
    }

    #[test]
    fn control_messages() {
        let mut buf = nlmsg(NLMSG_NOOP, &[]);
        buf.extend(nlmsg(NLMSG_DONE, &[]));
        buf.extend(nlmsg(NLMSG_ERROR, &0i32.to_ne_bytes()));
        buf.extend(nlmsg(NLMSG_ERROR, &(-1i32).to_ne_bytes()));
        buf.extend(nlmsg(NLMSG_OVERRUN, &[]));
        buf.extend(nlmsg(NLMSG_ERROR, &[]));
        buf.extend(raw(0x2, &words(&[4, 4]), None));
        let got: Vec<_> = decode(&buf).collect();
        assert_eq!(got.len(), 4, "{got:?}");
        assert_eq!(got[0], Err(WireError::Netlink { errno: 1 }));
        assert_eq!(got[1], Err(WireError::Overrun));
        assert!(matches!(got[2], Err(WireError::Truncated { .. })));
        assert_eq!(
            got[3],
            Ok(KernelEvent::Exec {
                pid: 4,
                tgid: 4,
                ns: 123_456_789
            })
        );
    }

    #[test]
    fn bad_nlmsg_len_stops_the_datagram() {
        for bad in [0u32, 15, 1000, u32::MAX] {
            let mut buf = raw(0x2, &words(&[1, 1]), None);
            buf[..4].copy_from_slice(&bad.to_ne_bytes());
            let got: Vec<_> = decode(&buf).collect();
            assert!(
                matches!(got[..], [Err(WireError::BadNlmsgLen { .. })]),
                "{got:?}"
            );
        }
    }

    #[test]
    fn every_prefix_of_a_datagram_is_safe() {
        let mut buf = raw(0x1, &words(&[1, 1, 2, 2]), None);
        buf.extend(raw(0x200, &words(&[2, 2, 0x6c6c6568, 0x6f]), None));
        buf.extend(raw(0x8000_0000, &words(&[2, 2, 0, 17, 1, 1]), None));
        let full = decode(&buf).filter(Result::is_ok).count();
        assert_eq!(full, 3);
        for n in 0..buf.len() {
            let got: Vec<_> = decode(&buf[..n]).collect();
            let ok = got.iter().filter(|r| r.is_ok()).count();
            assert!(ok < full, "prefix {n} gave {ok} events");
            if n % EVENT_DATAGRAM_LEN != 0 {
                assert!(got.iter().any(Result::is_err), "prefix {n}: no error");
            }
        }
    }

    #[test]
    fn random_garbage_never_panics() {
        // xorshift: deterministic, no dependency.
        let mut s = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        let template = raw(0x8000_0000, &words(&[2, 2, 0, 17, 1, 1]), None);
        for round in 0..20_000 {
            let len = (next() % 300) as usize;
            let mut buf: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if round % 2 == 0 {
                // Mostly-valid input reaches deeper into the decoder.
                buf = template.repeat(1 + round % 3);
                for _ in 0..(1 + next() % 4) {
                    let i = (next() as usize) % buf.len();
                    buf[i] = next() as u8;
                }
            }
            for r in decode(&buf) {
                let _ = r;
            }
        }
    }

    #[test]
    fn encoder_round_trips_every_event() {
        let events = [
            KernelEvent::Ack { err: 22 },
            KernelEvent::Exec {
                pid: 5,
                tgid: 6,
                ns: 99,
            },
            KernelEvent::Comm {
                pid: 1,
                tgid: 2,
                comm: *b"0123456789abcdef",
            },
            KernelEvent::Exit {
                pid: 1,
                tgid: 2,
                exit_code: 3,
                exit_signal: 4,
                parent_pid: 5,
                parent_tgid: 6,
            },
            KernelEvent::Unknown { what: 0x400 },
        ];
        let mut buf = Vec::new();
        for (i, ev) in events.iter().enumerate() {
            let rec = Record {
                seq: i as u32,
                ack: 0,
                cpu: i as u32,
                timestamp_ns: 99,
                event: *ev,
            };
            encode_record(&rec, &mut buf);
        }
        let got: Vec<_> = decode(&buf).collect::<Result<_, _>>().expect("decodes");
        assert_eq!(got, events);
        assert_eq!(
            encode_record_bytes(&events[1]),
            raw(0x2, &words(&[5, 6]), None)
        );
    }

    fn encode_record_bytes(ev: &KernelEvent) -> Vec<u8> {
        let mut v = Vec::new();
        let rec = Record {
            seq: 7,
            ack: 0,
            cpu: 3,
            timestamp_ns: 123_456_789,
            event: *ev,
        };
        encode_record(&rec, &mut v);
        v
    }

    #[test]
    fn subscribe_message_layout() {
        let m = mcast_message(McastOp::Listen, 1, 42);
        assert_eq!(u32::from_ne_bytes(m[0..4].try_into().unwrap()), 40);
        assert_eq!(u16::from_ne_bytes(m[4..6].try_into().unwrap()), NLMSG_DONE);
        assert_eq!(u32::from_ne_bytes(m[12..16].try_into().unwrap()), 42);
        assert_eq!(u32::from_ne_bytes(m[16..20].try_into().unwrap()), 1);
        assert_eq!(u32::from_ne_bytes(m[20..24].try_into().unwrap()), 1);
        assert_eq!(u16::from_ne_bytes(m[32..34].try_into().unwrap()), 4);
        assert_eq!(u32::from_ne_bytes(m[36..40].try_into().unwrap()), 1);
        assert_eq!(u32::from_ne_bytes(m[28..32].try_into().unwrap()), 42);
        let m = mcast_message(McastOp::Ignore, 2, 0);
        assert_eq!(u32::from_ne_bytes(m[36..40].try_into().unwrap()), 2);
    }

    #[test]
    fn ack_is_matched_by_seq_and_port() {
        let mut rec = Record {
            seq: 5,
            ack: 43,
            cpu: 0,
            timestamp_ns: 0,
            event: KernelEvent::Ack { err: 1 },
        };
        assert_eq!(is_ack_for(&rec, 42), Some(1));
        assert_eq!(is_ack_for(&rec, 41), None);
        rec.event = KernelEvent::Exec {
            pid: 1,
            tgid: 1,
            ns: 0,
        };
        assert_eq!(is_ack_for(&rec, 42), None);
    }
}
