//! The perf read path: one `perf_event_open` per CPU and probe on the
//! probe's tracepoint id, a CPU's probes writing into one mmap'ed ring
//! (`PERF_EVENT_IOC_SET_OUTPUT`). Draining a ring is reading
//! memory, no system call; a full ring makes the kernel count what it
//! could not write and report it in a `PERF_RECORD_LOST`. The events die
//! with their fds, so a killed sensor leaves no enabled probe behind.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{Ordering, fence};

const PERF_TYPE_TRACEPOINT: u32 = 2;
const PERF_SAMPLE_TID: u64 = 1 << 1;
const PERF_SAMPLE_TIME: u64 = 1 << 2;
const PERF_SAMPLE_RAW: u64 = 1 << 10;
const PERF_SAMPLE_REGS_USER: u64 = 1 << 12;
const PERF_SAMPLE_STACK_USER: u64 = 1 << 13;
/// `PERF_REG_X86_SP`: the one user register sampled.
const REG_SP: u64 = 1 << 7;
/// `sample_stack_user` must be below `USHRT_MAX` and a multiple of 8.
pub const MAX_STACK_DUMP: u32 = 65528;
const FLAG_DISABLED: u64 = 1 << 0;
const FLAG_WATERMARK: u64 = 1 << 14;
const FLAG_USE_CLOCKID: u64 = 1 << 25;
/// Attribute size VER5 (4.17); older kernels accept it when the fields
/// they do not know are zero (clockid is, without use_clockid).
const ATTR_SIZE_VER5: u32 = 112;

const IOC_ENABLE: libc::c_ulong = 0x2400;
const IOC_SET_OUTPUT: libc::c_ulong = 0x2405;
const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 8;

pub const RECORD_LOST: u32 = 2;
pub const RECORD_SAMPLE: u32 = 9;

#[repr(C)]
#[derive(Default)]
struct Attr {
    kind: u32,
    size: u32,
    config: u64,
    sample_period: u64,
    sample_type: u64,
    read_format: u64,
    flags: u64,
    wakeup_watermark: u32,
    bp_type: u32,
    config1: u64,
    config2: u64,
    branch_sample_type: u64,
    sample_regs_user: u64,
    sample_stack_user: u32,
    clockid: i32,
    sample_regs_intr: u64,
    aux_watermark: u32,
    sample_max_stack: u16,
    reserved: u16,
}

/// Opens the tracepoint `id` on `cpu`, disabled, each sample with the
/// task's user stack pointer and `stack_dump` bytes of its user stack.
/// Time stamps are CLOCK_MONOTONIC where the kernel supports
/// `use_clockid` (4.1).
pub fn open(
    id: u64,
    cpu: u32,
    watermark: u32,
    stack_dump: u32,
    monotonic: bool,
) -> io::Result<OwnedFd> {
    let mut attr = Attr {
        kind: PERF_TYPE_TRACEPOINT,
        size: ATTR_SIZE_VER5,
        config: id,
        sample_period: 1,
        sample_type: PERF_SAMPLE_TID
            | PERF_SAMPLE_TIME
            | PERF_SAMPLE_RAW
            | PERF_SAMPLE_REGS_USER
            | PERF_SAMPLE_STACK_USER,
        flags: FLAG_DISABLED | FLAG_WATERMARK,
        wakeup_watermark: watermark.max(1),
        sample_regs_user: REG_SP,
        sample_stack_user: stack_dump.min(MAX_STACK_DUMP) & !7,
        ..Attr::default()
    };
    if monotonic {
        attr.flags |= FLAG_USE_CLOCKID;
        attr.clockid = libc::CLOCK_MONOTONIC;
    }
    // SAFETY: attr is a valid perf_event_attr of the size it declares.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            &attr as *const Attr,
            -1 as libc::pid_t,
            cpu as libc::c_int,
            -1 as libc::c_int,
            PERF_FLAG_FD_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this fd to us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

pub fn enable(fd: &OwnedFd) -> io::Result<()> {
    ioctl(fd.as_raw_fd(), IOC_ENABLE, 0)
}

/// Makes `fd` write into `leader`'s ring (same CPU).
pub fn set_output(fd: &OwnedFd, leader: &OwnedFd) -> io::Result<()> {
    ioctl(
        fd.as_raw_fd(),
        IOC_SET_OUTPUT,
        leader.as_raw_fd() as libc::c_ulong,
    )
}

fn ioctl(fd: RawFd, req: libc::c_ulong, arg: libc::c_ulong) -> io::Result<()> {
    // SAFETY: perf ioctls that take an integer argument.
    if unsafe { libc::ioctl(fd, req as _, arg) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A CPU's ring: the control page and 2^n data pages.
pub struct Ring {
    base: *mut u8,
    len: usize,
    page: usize,
    data_size: usize,
    /// A record that wraps around the end is copied here.
    scratch: Vec<u8>,
}

// The mapping is owned by the Ring and only touched through &mut self.
unsafe impl Send for Ring {}

impl Ring {
    pub fn map(fd: &OwnedFd, data_pages: usize) -> io::Result<Ring> {
        let page = page_size();
        let data_pages = data_pages.max(1).next_power_of_two();
        let len = page * (1 + data_pages);
        // SAFETY: a shared mapping of a perf fd; checked below.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Ring {
            base: base.cast(),
            len,
            page,
            data_size: page * data_pages,
            scratch: Vec::new(),
        })
    }

    /// Calls `f` with every record written since the last drain, then
    /// frees their space for the kernel.
    pub fn drain(&mut self, mut f: impl FnMut(&[u8])) {
        // SAFETY: data_head (offset 1024) and data_tail (1032) lie in the
        // control page; the data area is `data_size` bytes after it. The
        // fences pair with the kernel's, as perf_event_mmap_page documents.
        unsafe {
            let head_ptr = self.base.add(1024) as *const u64;
            let tail_ptr = self.base.add(1032) as *mut u64;
            let head = std::ptr::read_volatile(head_ptr);
            fence(Ordering::Acquire);
            let tail = std::ptr::read_volatile(tail_ptr);
            let data = std::slice::from_raw_parts(self.base.add(self.page), self.data_size);
            let tail = walk(data, tail, head, &mut self.scratch, &mut f);
            fence(Ordering::Release);
            std::ptr::write_volatile(tail_ptr, tail);
        }
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        // SAFETY: our own mapping.
        unsafe { libc::munmap(self.base.cast(), self.len) };
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096)
}

/// Walks the records between `tail` and `head` of a ring's data area (its
/// length a power of two); returns the new tail. A record with a size the
/// ring cannot hold ends the walk at head (counted by the caller as lost).
pub fn walk(
    data: &[u8],
    mut tail: u64,
    head: u64,
    scratch: &mut Vec<u8>,
    f: &mut dyn FnMut(&[u8]),
) -> u64 {
    let size = data.len() as u64;
    let mask = size - 1;
    while head.wrapping_sub(tail) >= 8 {
        let at = (tail & mask) as usize;
        let mut hdr = [0u8; 8];
        copy_out(data, at, &mut hdr);
        let len = u16::from_ne_bytes([hdr[6], hdr[7]]) as u64;
        if len < 8 || len > head.wrapping_sub(tail) {
            // A torn or corrupt header: skip what the kernel gave.
            f(&[]);
            return head;
        }
        let len = len as usize;
        if at + len <= data.len() {
            f(&data[at..at + len]);
        } else {
            scratch.resize(len, 0);
            copy_out(data, at, scratch);
            f(scratch);
        }
        tail = tail.wrapping_add(len as u64);
    }
    tail
}

fn copy_out(data: &[u8], at: usize, out: &mut [u8]) {
    let first = (data.len() - at).min(out.len());
    out[..first].copy_from_slice(&data[at..at + first]);
    let rest = out.len() - first;
    out[first..].copy_from_slice(&data[..rest]);
}

/// One record of the ring, decoded for our sample layout.
#[derive(Debug, PartialEq, Eq)]
pub enum Record<'a> {
    /// pid, time stamp, the trace record (`raw`), the user stack pointer
    /// and the bytes from it on that the kernel could copy (`stack`).
    Sample {
        pid: u32,
        time: u64,
        raw: &'a [u8],
        sp: Option<u64>,
        stack: &'a [u8],
    },
    Lost(u64),
    Other,
    Corrupt,
}

pub fn decode(rec: &[u8]) -> Record<'_> {
    let Some(hdr) = rec.get(..8) else {
        return Record::Corrupt;
    };
    let kind = u32::from_ne_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]);
    let u32_at = |o: usize| {
        rec.get(o..o + 4)
            .map(|b| u32::from_ne_bytes(b.try_into().unwrap_or_default()))
    };
    let u64_at = |o: usize| {
        rec.get(o..o + 8)
            .map(|b| u64::from_ne_bytes(b.try_into().unwrap_or_default()))
    };
    match kind {
        RECORD_SAMPLE => {
            // TID (pid u32, tid u32), TIME u64, RAW (size u32, bytes),
            // REGS_USER (abi u64, then sp if abi), STACK_USER (size u64,
            // bytes, then the copied size if size).
            let (Some(pid), Some(time), Some(n)) = (u32_at(8), u64_at(16), u32_at(24)) else {
                return Record::Corrupt;
            };
            let mut off = 28 + n as usize;
            let Some(raw) = rec.get(28..off) else {
                return Record::Corrupt;
            };
            let Some(abi) = u64_at(off) else {
                return Record::Corrupt;
            };
            off += 8;
            let sp = if abi != 0 {
                off += 8;
                match u64_at(off - 8) {
                    Some(sp) => Some(sp),
                    None => return Record::Corrupt,
                }
            } else {
                None
            };
            let Some(size) = u64_at(off).and_then(|s| usize::try_from(s).ok()) else {
                return Record::Corrupt;
            };
            off += 8;
            let stack = if size == 0 {
                &[][..]
            } else {
                let (Some(data), Some(dyn_size)) = (
                    rec.get(off..off.saturating_add(size)),
                    u64_at(off.saturating_add(size)),
                ) else {
                    return Record::Corrupt;
                };
                &data[..usize::try_from(dyn_size).unwrap_or(usize::MAX).min(size)]
            };
            Record::Sample {
                pid,
                time,
                raw,
                sp,
                stack,
            }
        }
        RECORD_LOST => u64_at(16).map_or(Record::Corrupt, Record::Lost),
        _ => Record::Other,
    }
}

/// A sample as the kernel writes it (raw padded so that its u32 size and
/// bytes end 8-aligned; `size` bytes of stack of which `copied` are valid).
#[cfg(test)]
pub fn sample_bytes(
    pid: u32,
    time: u64,
    raw: &[u8],
    sp: u64,
    stack: &[u8],
    size: usize,
) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&RECORD_SAMPLE.to_ne_bytes());
    v.extend_from_slice(&0u16.to_ne_bytes());
    v.extend_from_slice(&0u16.to_ne_bytes());
    v.extend_from_slice(&pid.to_ne_bytes());
    v.extend_from_slice(&pid.to_ne_bytes());
    v.extend_from_slice(&time.to_ne_bytes());
    let padded = (raw.len() + 4).div_ceil(8) * 8 - 4;
    v.extend_from_slice(&(padded as u32).to_ne_bytes());
    v.extend_from_slice(raw);
    v.resize(28 + padded, 0);
    v.extend_from_slice(&2u64.to_ne_bytes());
    v.extend_from_slice(&sp.to_ne_bytes());
    v.extend_from_slice(&(size as u64).to_ne_bytes());
    if size > 0 {
        let at = v.len();
        v.extend_from_slice(stack);
        v.resize(at + size, 0);
        v.extend_from_slice(&(stack.len() as u64).to_ne_bytes());
    }
    let len = v.len() as u16;
    v[6..8].copy_from_slice(&len.to_ne_bytes());
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lost(n: u64) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&RECORD_LOST.to_ne_bytes());
        v.extend_from_slice(&0u16.to_ne_bytes());
        v.extend_from_slice(&24u16.to_ne_bytes());
        v.extend_from_slice(&7u64.to_ne_bytes());
        v.extend_from_slice(&n.to_ne_bytes());
        v
    }

    #[test]
    fn attr_layout_matches_the_kernel() {
        assert_eq!(std::mem::size_of::<Attr>(), ATTR_SIZE_VER5 as usize);
    }

    #[test]
    fn walks_records_across_the_wrap() {
        let mut ring = vec![0u8; 256];
        let a = sample_bytes(10, 1, b"abcdefghij", 0x7000, b"", 0);
        let b = lost(3);
        let c = sample_bytes(11, 2, &[7; 20], 0x7000, b"ab", 8);
        // Start near the end so `c` wraps.
        let start = 120u64;
        let mut at = start;
        for r in [&a, &b, &c] {
            for (i, byte) in r.iter().enumerate() {
                ring[((at + i as u64) & 255) as usize] = *byte;
            }
            at += r.len() as u64;
        }
        let mut got = Vec::new();
        let mut scratch = Vec::new();
        let tail = walk(&ring, start, at, &mut scratch, &mut |r| {
            got.push(r.to_vec())
        });
        assert_eq!(tail, at);
        assert_eq!(got, vec![a.clone(), b.clone(), c.clone()]);
        assert!(
            matches!(decode(&got[0]), Record::Sample { pid: 10, time: 1, raw, sp: Some(0x7000), stack: b"" } if raw.starts_with(b"abcdefghij"))
        );
        assert_eq!(decode(&got[1]), Record::Lost(3));
        assert!(matches!(
            decode(&got[2]),
            Record::Sample {
                pid: 11,
                stack: b"ab",
                ..
            }
        ));
    }

    #[test]
    fn corrupt_headers_end_the_walk() {
        let ring = vec![0u8; 64];
        let mut n = 0;
        let tail = walk(&ring, 0, 16, &mut Vec::new(), &mut |r| {
            assert!(r.is_empty());
            n += 1;
        });
        assert_eq!((tail, n), (16, 1));
        assert_eq!(decode(&[1, 2, 3]), Record::Corrupt);
        let mut s = sample_bytes(1, 1, b"xy", 1, b"abc", 16);
        s[24] = 200; // raw size beyond the record
        assert_eq!(decode(&s), Record::Corrupt);
        let s = sample_bytes(1, 1, b"xy", 1, b"abc", 16);
        for cut in 0..s.len() {
            // Any short record decodes to Corrupt, never panics.
            let _ = decode(&s[..cut]);
        }
    }
}
