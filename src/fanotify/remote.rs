//! Reading an exec's arguments out of the task that is blocked inside
//! `execve`: the PURE parser of `/proc/<pid>/syscall`, the PURE argv walker
//! over a [`RemoteMem`], and the two real readers (`process_vm_readv`, with
//! `/proc/<pid>/mem` as the fallback).
//!
//! While a permission event is pending the task still runs on its old
//! address space, so the `filename` and `argv` pointers it passed to the
//! kernel are valid there. Everything read is untrusted bytes and every read
//! is bounded: at most `max_args` pointers and `max_bytes` of strings, with
//! remote reads split at page boundaries so one bad page never costs more
//! than the argument it holds.

use std::fs::File;
use std::io::{self, IoSliceMut};
use std::os::unix::fs::FileExt;

use nix::sys::uio::{RemoteIoVec, process_vm_readv};

use super::pageguard::PageGuard;
use nix::unistd::Pid;

/// `execve` and `execveat` numbers of the native ABI. 32-bit compat tasks
/// use other numbers and 4-byte pointers; they are reported without argv.
#[cfg(target_arch = "x86_64")]
pub const SYS_EXECVE: i64 = 59;
#[cfg(target_arch = "x86_64")]
pub const SYS_EXECVEAT: i64 = 322;
#[cfg(target_arch = "aarch64")]
pub const SYS_EXECVE: i64 = 221;
#[cfg(target_arch = "aarch64")]
pub const SYS_EXECVEAT: i64 = 281;
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
pub const SYS_EXECVE: i64 = -2;
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
pub const SYS_EXECVEAT: i64 = -3;

const PAGE: u64 = 4096;
/// Most ranges one `process_vm_readv` takes (`UIO_MAXIOV`).
const IOV_MAX: usize = 1024;
const PTR: usize = std::mem::size_of::<u64>();
/// Longest filename read (PATH_MAX).
pub const MAX_FILENAME: usize = 4096;

/// What `/proc/<pid>/syscall` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyscallState {
    /// The task is on a CPU: no stable answer yet.
    Running,
    /// Blocked, but not in a system call (`-1 sp pc`).
    NotInSyscall,
    /// Blocked in system call `nr` with these six arguments.
    In { nr: i64, args: [u64; 6] },
}

/// Parses `/proc/<pid>/syscall`: `running`, `-1 0xsp 0xpc`, or
/// `nr 0xa0 0xa1 0xa2 0xa3 0xa4 0xa5 0xsp 0xpc`. PURE.
pub fn parse_syscall(text: &[u8]) -> Option<SyscallState> {
    let text = text.strip_suffix(b"\n").unwrap_or(text);
    if text == b"running" {
        return Some(SyscallState::Running);
    }
    let mut it = text.split(|&c| c == b' ');
    let nr: i64 = std::str::from_utf8(it.next()?).ok()?.parse().ok()?;
    if nr < 0 {
        return Some(SyscallState::NotInSyscall);
    }
    let mut args = [0u64; 6];
    for a in &mut args {
        let f = it.next()?.strip_prefix(b"0x")?;
        *a = u64::from_str_radix(std::str::from_utf8(f).ok()?, 16).ok()?;
    }
    Some(SyscallState::In { nr, args })
}

/// The pointers of an exec system call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExecCall {
    pub nr: i64,
    pub filename: u64,
    pub argv: u64,
    /// The environment's pointer array.
    pub envp: u64,
    /// `execveat` only: the directory fd and flags (`AT_EMPTY_PATH` for
    /// `fexecve` and runc's memfd).
    pub dirfd: i64,
    pub flags: u64,
}

/// `Some` when the task sits in `execve`/`execveat`. PURE.
pub fn exec_call(state: SyscallState) -> Option<ExecCall> {
    let SyscallState::In { nr, args } = state else {
        return None;
    };
    if nr == SYS_EXECVE {
        Some(ExecCall {
            nr,
            filename: args[0],
            argv: args[1],
            envp: args[2],
            dirfd: i64::from(libc::AT_FDCWD),
            flags: 0,
        })
    } else if nr == SYS_EXECVEAT {
        Some(ExecCall {
            nr,
            // The fd is an int: sign-extend its low 32 bits.
            dirfd: i64::from(args[0] as u32 as i32),
            filename: args[1],
            argv: args[2],
            envp: args[3],
            flags: args[4],
        })
    } else {
        None
    }
}

/// Another task's memory. `read` fills a prefix of `buf` and returns its
/// length; a short read means the next byte is not readable.
pub trait RemoteMem {
    fn read(&mut self, addr: u64, buf: &mut [u8]) -> io::Result<usize>;

    /// Reads each `(addr, len)` range into consecutive parts of `buf`
    /// (sized to their total) and returns the bytes read: every range
    /// before the first short one is complete. Readers that can do it in
    /// one system call override this.
    fn read_ranges(&mut self, ranges: &[(u64, usize)], buf: &mut [u8]) -> io::Result<usize> {
        read_each(self, ranges, buf)
    }
}

/// [`RemoteMem::read_ranges`] with one `read` per range.
fn read_each<M: RemoteMem + ?Sized>(
    mem: &mut M,
    ranges: &[(u64, usize)],
    buf: &mut [u8],
) -> io::Result<usize> {
    let mut done = 0;
    for &(addr, len) in ranges {
        let n = mem.read(addr, &mut buf[done..done + len])?;
        done += n;
        if n < len {
            break;
        }
    }
    Ok(done)
}

/// Arguments read from a remote task.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RemoteArgs {
    /// NUL-terminated strings, as in `/proc/<pid>/cmdline`.
    pub argv: Vec<u8>,
    pub truncated: bool,
    pub filename: Vec<u8>,
}

/// First piece of a string read in the batch: up to this many bytes, never
/// past its page, so one bad page cannot fail the whole batch's range.
const PIECE: u64 = 256;
/// Smallest first piece, however many arguments share the budget.
const MIN_PIECE: u64 = 16;

/// Reads `filename` and `argv` through `mem`, bounded by `max_args`
/// pointers and `max_bytes` of argv text (NULs included). PURE over `mem`.
///
/// The exec'ing task waits for this, so the reads are few: the pointer
/// array page by page up to its NULL, then one batch with a first piece of
/// the filename and of every argument; only strings longer than their
/// piece cost more reads.
pub fn read_args(
    mem: &mut dyn RemoteMem,
    call: &ExecCall,
    max_args: usize,
    max_bytes: usize,
) -> io::Result<RemoteArgs> {
    let mut out = RemoteArgs::default();
    // argv == NULL is legal (the kernel then passes an empty argv[0]).
    let ptrs = if call.argv == 0 {
        Vec::new()
    } else {
        read_pointers(mem, call.argv, max_args, &mut out.truncated)?
    };
    let mut ranges = Vec::with_capacity(ptrs.len() + 1);
    // The batch stays within about the argv budget: with many arguments
    // each piece shrinks (a longer string is then continued by single
    // reads), so a process cannot make every exec copy a megabyte.
    let per_arg = u64::try_from(max_bytes / ptrs.len().max(1)).unwrap_or(PIECE);
    let piece_max = per_arg.clamp(MIN_PIECE, PIECE);
    let piece = |addr: u64| usize::try_from(piece_max.min(PAGE - addr % PAGE)).unwrap_or(0);
    if call.filename != 0 {
        ranges.push((call.filename, piece(call.filename)));
    }
    ranges.extend(ptrs.iter().map(|&p| (p, piece(p))));
    let mut buf = vec![0u8; ranges.iter().map(|r| r.1).sum()];
    let got = mem.read_ranges(&ranges, &mut buf)?;
    let mut batch = Batch {
        ranges: &ranges,
        buf: &buf,
        got,
        next: 0,
        off: 0,
    };
    if call.filename != 0 {
        let (name, _) = batch.string(mem, MAX_FILENAME)?;
        out.filename = name;
    }
    for _ in &ptrs {
        let left = max_bytes.saturating_sub(out.argv.len());
        if left == 0 {
            out.truncated = true;
            break;
        }
        // Room for the string and its NUL.
        let (s, complete) = batch.string(mem, left - 1)?;
        out.argv.extend_from_slice(&s);
        out.argv.push(0);
        if !complete {
            out.truncated = true;
            break;
        }
    }
    Ok(out)
}

/// The argv pointer array up to its NULL, at most `max_args` of them;
/// sets `truncated` when there were more or the array ran into an
/// unreadable page.
fn read_pointers(
    mem: &mut dyn RemoteMem,
    argv: u64,
    max_args: usize,
    truncated: &mut bool,
) -> io::Result<Vec<u64>> {
    // One slot past the limit tells "exactly max_args" from "more".
    let want_total = max_args.saturating_add(1).saturating_mul(PTR);
    let mut raw: Vec<u8> = Vec::new();
    let mut ptrs = Vec::new();
    while raw.len() < want_total {
        let at = argv.wrapping_add(raw.len() as u64);
        let want = usize::try_from(PAGE - at % PAGE)
            .unwrap_or(PAGE as usize)
            .min(want_total - raw.len());
        let start = raw.len();
        raw.resize(start + want, 0);
        let got = mem.read(at, &mut raw[start..])?;
        raw.truncate(start + got);
        // Pointers completed by this read (one may straddle two pages).
        for c in raw[ptrs.len() * PTR..raw.len() - raw.len() % PTR].chunks_exact(PTR) {
            let p = u64::from_ne_bytes(c.try_into().unwrap_or([0; PTR]));
            if p == 0 {
                return Ok(ptrs);
            }
            ptrs.push(p);
        }
        if got < want {
            if ptrs.is_empty() {
                return Err(io::Error::from_raw_os_error(libc::EFAULT));
            }
            *truncated = true;
            return Ok(ptrs);
        }
    }
    if ptrs.len() > max_args {
        *truncated = true;
        ptrs.truncate(max_args);
    }
    Ok(ptrs)
}

/// The batch of first pieces, consumed string by string in range order.
struct Batch<'a> {
    ranges: &'a [(u64, usize)],
    buf: &'a [u8],
    got: usize,
    next: usize,
    off: usize,
}

impl Batch<'_> {
    /// The next string, at most `max` bytes, and whether its NUL was seen:
    /// from its piece when that holds the NUL, else continued (or, when the
    /// batch stopped short of it, read) with single reads.
    fn string(&mut self, mem: &mut dyn RemoteMem, max: usize) -> io::Result<(Vec<u8>, bool)> {
        let Some(&(addr, len)) = self.ranges.get(self.next) else {
            return Ok((Vec::new(), false));
        };
        let piece_at = self.off;
        self.next += 1;
        self.off += len;
        if piece_at + len > self.got {
            return read_cstr(mem, addr, max);
        }
        let piece = &self.buf[piece_at..piece_at + len];
        if let Some(nul) = piece.iter().position(|&c| c == 0) {
            let complete = nul <= max;
            return Ok((piece[..nul.min(max)].to_vec(), complete));
        }
        if len > max {
            return Ok((piece[..max].to_vec(), false));
        }
        let mut s = piece.to_vec();
        match read_cstr(mem, addr + len as u64, max - len) {
            Ok((rest, complete)) => {
                s.extend_from_slice(&rest);
                Ok((s, complete))
            }
            // The string runs into an unreadable page.
            Err(_) => Ok((s, false)),
        }
    }
}

/// Reads a C string of at most `max` bytes at `addr`; returns it and whether
/// its NUL was seen. Reads page by page, so a long argument costs no more
/// than its pages and a short one one read.
fn read_cstr(mem: &mut dyn RemoteMem, addr: u64, max: usize) -> io::Result<(Vec<u8>, bool)> {
    let mut out = Vec::new();
    let mut at = addr;
    let mut chunk = [0u8; PAGE as usize];
    loop {
        let want = usize::try_from(PAGE - at % PAGE)
            .unwrap_or(PAGE as usize)
            .min(max + 1 - out.len());
        let got = mem.read(at, &mut chunk[..want])?;
        if let Some(nul) = chunk[..got].iter().position(|&c| c == 0) {
            out.extend_from_slice(&chunk[..nul]);
            let complete = out.len() <= max;
            out.truncate(max);
            return Ok((out, complete));
        }
        out.extend_from_slice(&chunk[..got]);
        if out.len() > max {
            out.truncate(max);
            return Ok((out, false));
        }
        if got < want {
            if out.is_empty() {
                return Err(io::Error::from_raw_os_error(libc::EFAULT));
            }
            return Ok((out, false));
        }
        at += got as u64;
    }
}

/// `process_vm_readv` on a pid, falling back to `/proc/<pid>/mem` when the
/// system call is refused (ENOSYS, or EPERM under a restrictive LSM). With
/// a [`PageGuard`], a read that would fault in a page of a file not on a
/// local filesystem is refused (`WouldBlock`) instead.
pub struct ProcessMem<'a> {
    pid: u32,
    mem: Option<File>,
    use_mem: bool,
    guard: Option<PageGuard<'a>>,
}

impl<'a> ProcessMem<'a> {
    pub fn new(pid: u32) -> Self {
        ProcessMem {
            pid,
            mem: None,
            use_mem: false,
            guard: None,
        }
    }

    /// Reads guarded by `local`, the superblocks our mount tables call local.
    pub fn guarded(pid: u32, local: &'a [std::collections::BTreeSet<(u32, u32)>]) -> Self {
        ProcessMem {
            guard: Some(PageGuard::new(pid, local)),
            ..ProcessMem::new(pid)
        }
    }

    /// Reads the guard refused.
    pub fn refused(&self) -> u64 {
        self.guard.as_ref().map_or(0, |g| g.refused)
    }

    fn check(&mut self, ranges: &[(u64, usize)]) -> io::Result<()> {
        if let Some(g) = &mut self.guard
            && !g.safe(ranges)
        {
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                "argv in pages of a file on a FUSE or network filesystem, not read",
            ));
        }
        Ok(())
    }

    fn read_mem_file(&mut self, addr: u64, buf: &mut [u8]) -> io::Result<usize> {
        if self.mem.is_none() {
            self.mem = Some(File::open(format!("/proc/{}/mem", self.pid))?);
        }
        let Some(f) = &self.mem else {
            return Err(io::ErrorKind::NotFound.into());
        };
        match f.read_at(buf, addr) {
            Ok(n) => Ok(n),
            // An unmapped address reads as EIO: a short read of nothing.
            Err(e) if e.raw_os_error() == Some(libc::EIO) => Ok(0),
            Err(e) => Err(e),
        }
    }
}

impl RemoteMem for ProcessMem<'_> {
    fn read(&mut self, addr: u64, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        self.check(&[(addr, buf.len())])?;
        if self.use_mem {
            return self.read_mem_file(addr, buf);
        }
        let Ok(pid) = i32::try_from(self.pid) else {
            return Err(io::ErrorKind::InvalidInput.into());
        };
        let Ok(base) = usize::try_from(addr) else {
            return Ok(0);
        };
        let remote = [RemoteIoVec {
            base,
            len: buf.len(),
        }];
        match process_vm_readv(Pid::from_raw(pid), &mut [IoSliceMut::new(buf)], &remote) {
            Ok(n) => Ok(n),
            Err(nix::errno::Errno::EFAULT) => Ok(0),
            Err(nix::errno::Errno::ESRCH) => Err(io::ErrorKind::NotFound.into()),
            Err(nix::errno::Errno::ENOSYS | nix::errno::Errno::EPERM) => {
                self.use_mem = true;
                self.read_mem_file(addr, buf)
            }
            Err(e) => Err(e.into()),
        }
    }

    fn read_ranges(&mut self, ranges: &[(u64, usize)], buf: &mut [u8]) -> io::Result<usize> {
        let Ok(pid) = i32::try_from(self.pid) else {
            return Err(io::ErrorKind::InvalidInput.into());
        };
        self.check(ranges)?;
        let mut done = 0;
        let mut ranges_done = 0;
        // The kernel takes at most IOV_MAX remote ranges per call.
        for group in ranges.chunks(IOV_MAX) {
            if self.use_mem {
                break;
            }
            let remote: Vec<RemoteIoVec> = group
                .iter()
                .map(|&(addr, len)| RemoteIoVec {
                    base: usize::try_from(addr).unwrap_or(0),
                    len,
                })
                .collect();
            let want: usize = group.iter().map(|r| r.1).sum();
            let local = &mut buf[done..done + want];
            match process_vm_readv(Pid::from_raw(pid), &mut [IoSliceMut::new(local)], &remote) {
                Ok(n) => {
                    done += n;
                    if n < want {
                        return Ok(done);
                    }
                    ranges_done += group.len();
                }
                // The first range is unreadable.
                Err(nix::errno::Errno::EFAULT) => return Ok(done),
                Err(nix::errno::Errno::ESRCH) => return Err(io::ErrorKind::NotFound.into()),
                Err(nix::errno::Errno::ENOSYS | nix::errno::Errno::EPERM) => self.use_mem = true,
                Err(e) => return Err(e.into()),
            }
        }
        // /proc/<pid>/mem from where process_vm_readv stopped being allowed.
        Ok(done + read_each(self, &ranges[ranges_done..], &mut buf[done..])?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake address space: readable bytes from `base`, nothing else.
    struct Fake {
        base: u64,
        bytes: Vec<u8>,
        reads: usize,
        /// Calls a real reader would make: one per `read`, one per batch.
        calls: usize,
    }

    impl RemoteMem for Fake {
        fn read(&mut self, addr: u64, buf: &mut [u8]) -> io::Result<usize> {
            self.reads += 1;
            self.calls += 1;
            let end = self.base + self.bytes.len() as u64;
            if addr < self.base || addr >= end {
                return Ok(0);
            }
            let off = (addr - self.base) as usize;
            let n = buf.len().min(self.bytes.len() - off);
            buf[..n].copy_from_slice(&self.bytes[off..off + n]);
            Ok(n)
        }

        fn read_ranges(&mut self, ranges: &[(u64, usize)], buf: &mut [u8]) -> io::Result<usize> {
            let calls = self.calls;
            let done = read_each(self, ranges, buf);
            self.calls = calls + 1;
            done
        }
    }

    /// Lays out filename, strings and a NULL-terminated pointer array.
    fn image(args: &[&[u8]]) -> (Fake, ExecCall) {
        image_padded(args, 0)
    }

    /// [`image`] with `pad` bytes before the pointer array, which is then
    /// no longer 8-byte aligned unless `pad` is a multiple of 8.
    fn image_padded(args: &[&[u8]], pad: usize) -> (Fake, ExecCall) {
        let base = 0x10_0000u64;
        let mut bytes = b"/bin/true\0".to_vec();
        let mut ptrs = Vec::new();
        for a in args {
            ptrs.push(base + bytes.len() as u64);
            bytes.extend_from_slice(a);
            bytes.push(0);
        }
        while !bytes.len().is_multiple_of(8) {
            bytes.push(0xaa);
        }
        bytes.extend(std::iter::repeat_n(0xbb, pad));
        let argv = base + bytes.len() as u64;
        for p in ptrs {
            bytes.extend_from_slice(&p.to_ne_bytes());
        }
        bytes.extend_from_slice(&0u64.to_ne_bytes());
        // Memory is mapped in whole pages.
        bytes.resize(bytes.len().next_multiple_of(PAGE as usize), 0xcc);
        let call = ExecCall {
            nr: SYS_EXECVE,
            filename: base,
            argv,
            envp: 0,
            dirfd: -100,
            flags: 0,
        };
        (
            Fake {
                base,
                bytes,
                reads: 0,
                calls: 0,
            },
            call,
        )
    }

    #[test]
    fn syscall_lines() {
        assert_eq!(parse_syscall(b"running\n"), Some(SyscallState::Running));
        assert_eq!(
            parse_syscall(b"-1 0x7ffd1 0x7f2\n"),
            Some(SyscallState::NotInSyscall)
        );
        let st = parse_syscall(b"59 0x55d0a1 0x55d0b2 0x55d0c3 0x0 0x8 0x0 0x7ffc9d8 0x7f1e2c3\n")
            .unwrap();
        assert_eq!(
            st,
            SyscallState::In {
                nr: 59,
                args: [0x55d0a1, 0x55d0b2, 0x55d0c3, 0, 8, 0]
            }
        );
        assert!(parse_syscall(b"").is_none());
        assert!(parse_syscall(b"59 0x1 0x2").is_none());
        assert!(parse_syscall(b"59 1 2 3 4 5 6 7 8").is_none());
        assert!(parse_syscall(b"x 0x1").is_none());
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn exec_calls() {
        let ve = exec_call(parse_syscall(b"59 0xa 0xb 0xc 0x0 0x0 0x0 0x1 0x2").unwrap()).unwrap();
        assert_eq!((ve.filename, ve.argv, ve.dirfd), (0xa, 0xb, -100));
        // execveat(memfd 3, "", argv, envp, AT_EMPTY_PATH)
        let at =
            exec_call(parse_syscall(b"322 0x3 0xb 0xc 0xd 0x1000 0x0 0x1 0x2").unwrap()).unwrap();
        assert_eq!(
            (at.dirfd, at.filename, at.argv, at.flags),
            (3, 0xb, 0xc, 0x1000)
        );
        let neg = exec_call(parse_syscall(b"322 0xffffff9c 0xb 0xc 0xd 0x0 0x0 0x1 0x2").unwrap())
            .unwrap();
        assert_eq!(neg.dirfd, -100);
        assert!(exec_call(parse_syscall(b"0 0x3 0xb 0xc 0xd 0x0 0x0 0x1 0x2").unwrap()).is_none());
        assert!(exec_call(SyscallState::Running).is_none());
    }

    #[test]
    fn reads_argv_and_filename() {
        let (mut m, call) = image(&[b"true", b"--x", b"", b"a b"]);
        let r = read_args(&mut m, &call, 64, 4096).unwrap();
        assert_eq!(r.argv, b"true\0--x\0\0a b\0");
        assert_eq!(r.filename, b"/bin/true");
        assert!(!r.truncated);
        // The pointer array, then one batch for every string.
        assert_eq!(m.calls, 2);
    }

    #[test]
    fn batch_stays_within_the_argv_budget() {
        // 1000 arguments of 100 bytes against a 4 KiB budget: pieces of
        // 16 bytes, not 256, and the budget still bounds what is kept.
        let arg = vec![b'a'; 100];
        let args: Vec<&[u8]> = (0..1000).map(|_| arg.as_slice()).collect();
        let (mut m, call) = image(&args);
        let r = read_args(&mut m, &call, 4096, 4096).unwrap();
        assert!(r.truncated);
        assert_eq!(r.argv.len(), 4096);
        assert!(r.argv.starts_with(&[b'a'; 100]));
        assert_eq!(r.argv[100], 0);
    }

    #[test]
    fn string_crossing_a_page_is_continued() {
        // The first argument ends just before the page end, so the second
        // starts 10 bytes before it: its first piece stops at the page.
        let first = vec![b'p'; 4096 - 10 - 10 - 1];
        let (mut m, call) = image(&[&first, b"crossing-the-page-boundary"]);
        let r = read_args(&mut m, &call, 64, 1 << 20).unwrap();
        assert!(r.argv.ends_with(b"\0crossing-the-page-boundary\0"));
        assert!(!r.truncated);
    }

    #[test]
    fn pointer_array_straddling_pages() {
        // The pointers start 4 bytes before a page end.
        let filler = vec![b'f'; 4096 - 16 - 10 - 1];
        for pad in [0, 4, 12] {
            let (mut m, call) = image_padded(&[&filler, b"a", b"b"], pad);
            let r = read_args(&mut m, &call, 64, 1 << 20).unwrap();
            assert!(r.argv.ends_with(b"\0a\0b\0"), "pad {pad}");
            assert!(!r.truncated, "pad {pad}");
        }
    }

    #[test]
    fn unreadable_argument_fails_the_read_like_the_exec() {
        // execve fails with EFAULT on such an argv: nothing to report.
        let (mut m, mut call) = image(&[b"a", b"b"]);
        let second = call.argv + 8;
        let at = usize::try_from(second - m.base).unwrap();
        m.bytes[at..at + 8].copy_from_slice(&0xdead_0000u64.to_ne_bytes());
        assert!(read_args(&mut m, &call, 64, 4096).is_err());
        call.filename = 0xdead_1000;
        assert!(read_args(&mut m, &call, 64, 4096).is_err());
    }

    #[test]
    fn bounds_bytes_and_count() {
        let (mut m, call) = image(&[b"aaaa", b"bbbb", b"cccc"]);
        let r = read_args(&mut m, &call, 2, 4096).unwrap();
        assert_eq!(r.argv, b"aaaa\0bbbb\0");
        assert!(r.truncated);
        let r = read_args(&mut m, &call, 64, 8).unwrap();
        assert_eq!(r.argv, b"aaaa\0bb\0");
        assert!(r.truncated);
        let r = read_args(&mut m, &call, 64, 15).unwrap();
        assert_eq!(r.argv, b"aaaa\0bbbb\0cccc\0");
        assert!(!r.truncated);
    }

    #[test]
    fn null_argv_and_bad_pointers() {
        let (mut m, mut call) = image(&[b"x"]);
        call.argv = 0;
        let r = read_args(&mut m, &call, 64, 4096).unwrap();
        assert!(r.argv.is_empty() && !r.truncated);
        call.argv = 0xdead_0000;
        assert!(read_args(&mut m, &call, 64, 4096).is_err());
    }

    #[test]
    fn string_crossing_into_unmapped_memory_is_truncated() {
        // The last string has no NUL before the end of the mapping.
        let mut m = Fake {
            base: 0x1000,
            bytes: Vec::new(),
            reads: 0,
            calls: 0,
        };
        let argv = 0x1000u64;
        m.bytes.extend_from_slice(&(0x1010u64).to_ne_bytes());
        m.bytes.extend_from_slice(&0u64.to_ne_bytes());
        m.bytes.extend_from_slice(b"unterminated");
        let call = ExecCall {
            nr: SYS_EXECVE,
            filename: 0,
            argv,
            envp: 0,
            dirfd: -100,
            flags: 0,
        };
        let r = read_args(&mut m, &call, 64, 4096).unwrap();
        assert_eq!(r.argv, b"unterminated\0");
        assert!(r.truncated);
    }

    #[test]
    fn long_argument_spans_pages() {
        let long = vec![b'z'; 10_000];
        let (mut m, call) = image(&[&long, b"end"]);
        let r = read_args(&mut m, &call, 64, 1 << 20).unwrap();
        assert_eq!(r.argv.len(), 10_000 + 1 + 4);
        assert!(r.argv.ends_with(b"\0end\0"));
        assert!(!r.truncated);
    }
}
