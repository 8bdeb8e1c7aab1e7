//! Reading `/proc`: one [`ProcFs`] rooted at `/proc` (or at a fixture tree in
//! tests) with one reader per file, and the pure parsers behind them.
//!
//! Everything a process can write about itself (comm, argv, paths, cgroup
//! names) is returned as bytes or parsed without trusting it. A process that
//! vanished between the event and the read gives `io::ErrorKind::NotFound`
//! (the kernel's ESRCH included), which callers treat as "emit a partial
//! event", not as a failure.

use std::ffi::{CStr, CString};
use std::fs;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use crate::event::Namespaces;

/// Fields of `/proc/<pid>/stat` the sensor uses.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Stat {
    /// The kernel's comm (at most 15 bytes for user tasks), raw.
    pub comm: Vec<u8>,
    /// `R`, `S`, `D`, `Z`, ...
    pub state: u8,
    pub ppid: u32,
    pub pgrp: u32,
    pub session: u32,
    /// Encoded controlling tty; 0 when none (see [`tty_major_minor`]).
    pub tty_nr: u32,
    /// Field 22: start time in clock ticks since boot. With the pid it is
    /// the identity of a process.
    pub start_ticks: u64,
}

/// Fields of `/proc/<pid>/status` the sensor uses.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Status {
    pub ppid: u32,
    /// Real, effective, saved, filesystem.
    pub uid: [u32; 4],
    /// Real, effective, saved, filesystem.
    pub gid: [u32; 4],
    /// Effective capability mask (see [`cap_names`]).
    pub cap_eff: u64,
    pub tgid: u32,
}

/// The namespace links read by [`PidDir::namespaces`], in `Namespaces` order.
const NS_LINKS: [&CStr; 7] = [
    c"ns/pid",
    c"ns/mnt",
    c"ns/net",
    c"ns/uts",
    c"ns/ipc",
    c"ns/user",
    c"ns/cgroup",
];

/// `/proc/<pid>/loginuid` and `sessionid` use -1 for "never set".
const AUDIT_UNSET: u32 = u32::MAX;

/// A `/proc` tree.
#[derive(Debug, Clone)]
pub struct ProcFs {
    root: PathBuf,
}

impl ProcFs {
    /// A tree rooted at `root` (a fixture directory in tests).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        ProcFs { root: root.into() }
    }

    /// The host's `/proc`.
    pub fn host() -> Self {
        Self::new("/proc")
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Opens `/proc/<pid>` for several reads. Every read through the handle
    /// is about that one process: once it exits, reads fail with NotFound
    /// instead of reaching a new process that reused the pid.
    pub fn dir(&self, pid: u32) -> io::Result<PidDir> {
        let path = self.root.join(pid.to_string());
        let path = CString::new(path.into_os_string().into_vec())
            .map_err(|_| io::ErrorKind::InvalidInput)?;
        // SAFETY: a NUL-terminated path; the result is checked.
        let fd = unsafe {
            libc::open(
                path.as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(gone(io::Error::last_os_error()));
        }
        Ok(PidDir {
            // SAFETY: a fresh fd we own.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            buf: Vec::with_capacity(SMALL_FILE),
            reaped: false,
        })
    }

    pub fn stat(&self, pid: u32) -> io::Result<Stat> {
        self.dir(pid)?.stat(pid)
    }

    pub fn status(&self, pid: u32) -> io::Result<Status> {
        self.dir(pid)?.status(pid)
    }

    /// See [`PidDir::cmdline`].
    pub fn cmdline(&self, pid: u32, buf: &mut Vec<u8>, max: usize) -> io::Result<bool> {
        self.dir(pid)?.cmdline(buf, max)
    }

    pub fn exe(&self, pid: u32) -> io::Result<Vec<u8>> {
        self.dir(pid)?.exe()
    }

    pub fn cwd(&self, pid: u32) -> io::Result<Vec<u8>> {
        self.dir(pid)?.cwd()
    }

    pub fn cgroup(&self, pid: u32, buf: &mut String) -> io::Result<()> {
        self.dir(pid)?.cgroup(buf)
    }

    pub fn namespaces(&self, pid: u32) -> io::Result<Namespaces> {
        self.dir(pid)?.namespaces()
    }

    pub fn loginuid(&self, pid: u32) -> io::Result<Option<u32>> {
        self.dir(pid)?.loginuid()
    }

    pub fn sessionid(&self, pid: u32) -> io::Result<Option<u32>> {
        self.dir(pid)?.sessionid()
    }

    /// Pids of the processes currently in the tree (numeric directories).
    pub fn pids(&self) -> io::Result<impl Iterator<Item = u32> + use<>> {
        Ok(fs::read_dir(&self.root)?
            .filter_map(Result::ok)
            .filter_map(|e| parse_u32(e.file_name().as_bytes())))
    }

    /// `btime` from `/proc/stat`: boot time in seconds since the epoch.
    pub fn boot_time_secs(&self) -> io::Result<u64> {
        let raw = fs::read(self.root.join("stat"))?;
        raw.split(|&b| b == b'\n')
            .find_map(|l| l.strip_prefix(b"btime "))
            .and_then(|v| std::str::from_utf8(trim(v)).ok()?.parse().ok())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no btime in /proc/stat"))
    }

    /// Clock ticks per second, the unit of [`Stat::start_ticks`].
    pub fn clock_ticks(&self) -> u64 {
        clock_ticks()
    }
}

/// `sysconf(_SC_CLK_TCK)`; 100 (the value on every Linux ABI) if unknown.
pub fn clock_ticks() -> u64 {
    use nix::unistd::{SysconfVar, sysconf};
    match sysconf(SysconfVar::CLK_TCK) {
        Ok(Some(t)) if t > 0 => t as u64,
        _ => 100,
    }
}

/// One page: stat, status, cgroup and the login ids fit in one read.
const SMALL_FILE: usize = 4096;
/// Bound of a small `/proc` file (a cgroup v1 file on a host with many
/// controllers is a few KiB; status about 1.5).
const SMALL_FILE_MAX: usize = 64 * 1024;

/// An open `/proc/<pid>` directory and a scratch buffer for its files.
///
/// Each file costs `openat` + `read` + `close`: no path walk from `/proc`,
/// no size probe (proc files report size 0), and no read to see the end.
/// The files read here (`single_open` seq files, `cmdline`, the audit ids)
/// hand out everything they have in one read, so a short read is the end;
/// fixture trees are regular files, for which that holds too.
///
/// Once a read has answered ESRCH the task is reaped, and every later read
/// through this directory would answer the same (the directory stays bound
/// to the dead task, never to a pid's next owner): they are not made, which
/// spares a short-lived process's exec a dozen failing system calls.
pub struct PidDir {
    fd: OwnedFd,
    buf: Vec<u8>,
    reaped: bool,
}

impl PidDir {
    pub fn stat(&mut self, pid: u32) -> io::Result<Stat> {
        let raw = self.read(c"stat", SMALL_FILE_MAX)?;
        parse_stat(raw).ok_or_else(|| invalid("stat", pid))
    }

    pub fn status(&mut self, pid: u32) -> io::Result<Status> {
        let raw = self.read(c"status", SMALL_FILE_MAX)?;
        parse_status_bytes(raw).ok_or_else(|| invalid("status", pid))
    }

    /// Reads `cmdline` into `buf` (cleared first), at most `max` bytes.
    /// Returns whether it was truncated. An empty result is normal for
    /// kernel threads and zombies.
    pub fn cmdline(&mut self, buf: &mut Vec<u8>, max: usize) -> io::Result<bool> {
        buf.clear();
        self.guarded(|dir, _| read_into(dir, c"cmdline", buf, max.saturating_add(1)))?;
        let truncated = buf.len() > max;
        buf.truncate(max);
        Ok(truncated)
    }

    /// Target of `exe` as raw bytes, " (deleted)" suffix kept. Kernel
    /// threads have none: NotFound, like a vanished process.
    pub fn exe(&mut self) -> io::Result<Vec<u8>> {
        self.link(c"exe")
    }

    pub fn cwd(&mut self) -> io::Result<Vec<u8>> {
        self.link(c"cwd")
    }

    fn link(&mut self, name: &CStr) -> io::Result<Vec<u8>> {
        self.guarded(|dir, _| read_link_at(dir, name))
    }

    /// Reads `cgroup` into `buf` (cleared first). Invalid UTF-8 in a cgroup
    /// name is replaced by U+FFFD: detection only matches ASCII.
    pub fn cgroup(&mut self, buf: &mut String) -> io::Result<()> {
        buf.clear();
        let raw = self.read(c"cgroup", SMALL_FILE_MAX)?;
        match std::str::from_utf8(raw) {
            Ok(s) => buf.push_str(s),
            Err(_) => buf.push_str(&String::from_utf8_lossy(raw)),
        }
        Ok(())
    }

    /// Namespace inodes from `ns/*`. A link that is missing (older kernel)
    /// or unreadable is 0; NotFound only if the process is gone.
    pub fn namespaces(&mut self) -> io::Result<Namespaces> {
        let mut ino = [0u64; NS_LINKS.len()];
        let mut target = [0u8; 64];
        for (slot, name) in ino.iter_mut().zip(NS_LINKS) {
            // Links read before the task was reaped are kept.
            if let Ok(n) = self.guarded(|dir, _| readlinkat(dir, name, &mut target)) {
                *slot = parse_ns_link(&target[..n]).unwrap_or(0);
            }
        }
        if ino.iter().all(|&i| i == 0) && !self.alive() {
            return Err(io::ErrorKind::NotFound.into());
        }
        let [pid, mnt, net, uts, ipc, user, cgroup] = ino;
        Ok(Namespaces {
            pid,
            mnt,
            net,
            uts,
            ipc,
            user,
            cgroup,
        })
    }

    /// Audit login uid; `None` when never set (or no audit support).
    pub fn loginuid(&mut self) -> io::Result<Option<u32>> {
        self.audit_id(c"loginuid")
    }

    /// Audit session id; `None` when never set (or no audit support).
    pub fn sessionid(&mut self) -> io::Result<Option<u32>> {
        self.audit_id(c"sessionid")
    }

    fn audit_id(&mut self, leaf: &CStr) -> io::Result<Option<u32>> {
        let read = self
            .read(leaf, 64)
            .map(|raw| parse_u32(trim(raw)).filter(|&v| v != AUDIT_UNSET));
        match read {
            Ok(id) => Ok(id),
            // Without CONFIG_AUDIT the file never exists.
            Err(e) if e.kind() == io::ErrorKind::NotFound && self.alive() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Whether the process is still there: a lookup in the directory of an
    /// exited task fails. (A fixture directory without `stat` counts as an
    /// exited process.)
    fn alive(&self) -> bool {
        // SAFETY: our dirfd and a NUL-terminated name.
        !self.reaped
            && unsafe { libc::faccessat(self.fd.as_raw_fd(), c"stat".as_ptr(), libc::F_OK, 0) == 0 }
    }

    /// Whether a read found the task reaped.
    pub fn reaped(&self) -> bool {
        self.reaped
    }

    /// Every read of the directory goes through here: `op` gets the
    /// directory and the scratch buffer, and is not called (NotFound, no
    /// system call) once a read found the task reaped.
    fn guarded<T>(
        &mut self,
        op: impl FnOnce(BorrowedFd<'_>, &mut Vec<u8>) -> io::Result<T>,
    ) -> io::Result<T> {
        if self.reaped {
            return Err(gone(io::Error::from_raw_os_error(libc::ESRCH)));
        }
        let r = op(self.fd.as_fd(), &mut self.buf);
        if let Err(e) = &r
            && is_reaped(e)
        {
            self.reaped = true;
        }
        r
    }

    /// The whole file `name`, at most `max` bytes, in the scratch buffer.
    fn read(&mut self, name: &CStr, max: usize) -> io::Result<&[u8]> {
        self.guarded(|dir, buf| {
            buf.clear();
            read_into(dir, name, buf, max)
        })?;
        Ok(&self.buf)
    }
}

/// Appends at most `max` bytes of file `name` under `dir` to `buf`.
fn read_into(dir: BorrowedFd<'_>, name: &CStr, buf: &mut Vec<u8>, max: usize) -> io::Result<()> {
    // SAFETY: a valid dirfd and a NUL-terminated name; the result is checked.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NOCTTY,
        )
    };
    if fd < 0 {
        return Err(gone(io::Error::last_os_error()));
    }
    // SAFETY: a fresh fd we own; closed on return.
    let file = unsafe { OwnedFd::from_raw_fd(fd) };
    let start = buf.len();
    while buf.len() - start < max {
        let want = (max - (buf.len() - start)).min(SMALL_FILE.max(buf.capacity() - buf.len()));
        buf.reserve(want);
        let spare = &mut buf.spare_capacity_mut()[..want];
        // SAFETY: reads at most `want` bytes into memory we reserved.
        let n = unsafe { libc::read(file.as_raw_fd(), spare.as_mut_ptr().cast(), want) };
        let n = match usize::try_from(n) {
            Ok(n) => n,
            Err(_) => {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(gone(e));
            }
        };
        // SAFETY: the kernel initialized these `n` bytes.
        unsafe { buf.set_len(buf.len() + n) };
        if n < want {
            break;
        }
    }
    Ok(())
}

/// `readlinkat` into `out`; returns the target's length. A target that
/// fills `out` is reported as truncated (ENAMETOOLONG).
fn readlinkat(dir: BorrowedFd<'_>, name: &CStr, out: &mut [u8]) -> io::Result<usize> {
    // SAFETY: a valid dirfd, a NUL-terminated name and a buffer of the
    // given length.
    let n = unsafe {
        libc::readlinkat(
            dir.as_raw_fd(),
            name.as_ptr(),
            out.as_mut_ptr().cast(),
            out.len(),
        )
    };
    match usize::try_from(n) {
        Ok(n) if n < out.len() => Ok(n),
        Ok(_) => Err(io::Error::from_raw_os_error(libc::ENAMETOOLONG)),
        Err(_) => Err(gone(io::Error::last_os_error())),
    }
}

/// The target of link `name` under `dir` as bytes. `/proc` links are at
/// most a page (the kernel's `d_path` buffer).
fn read_link_at(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; 256];
    loop {
        match readlinkat(dir, name, &mut buf) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf);
            }
            Err(e) if e.raw_os_error() == Some(libc::ENAMETOOLONG) && buf.len() < 2 * 4096 => {
                buf.resize(buf.len() * 4, 0);
            }
            Err(e) => return Err(e),
        }
    }
}

/// The kernel answers ESRCH when the task died after `open`.
fn gone(e: io::Error) -> io::Error {
    if e.raw_os_error() == Some(libc::ESRCH) {
        io::Error::new(io::ErrorKind::NotFound, e)
    } else {
        e
    }
}

/// Whether `e` is [`gone`]'s ESRCH: the task was reaped.
fn is_reaped(e: &io::Error) -> bool {
    e.get_ref()
        .and_then(|i| i.downcast_ref::<io::Error>())
        .and_then(io::Error::raw_os_error)
        == Some(libc::ESRCH)
}

fn invalid(file: &str, pid: u32) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("unparsable /proc/{pid}/{file}"),
    )
}

fn trim(b: &[u8]) -> &[u8] {
    b.trim_ascii()
}

fn parse_u32(b: &[u8]) -> Option<u32> {
    std::str::from_utf8(b).ok()?.parse().ok()
}

/// Parses a signed decimal field as the kernel prints pid_t/dev_t (`%d`).
fn parse_i32_bits(b: &[u8]) -> Option<u32> {
    let s = std::str::from_utf8(b).ok()?;
    s.parse::<u32>()
        .ok()
        .or_else(|| s.parse::<i32>().ok().map(|v| v as u32))
}

/// Parses `/proc/<pid>/stat`. The comm sits between the first `(` and the
/// *last* `)`: it may itself contain `)`, spaces or newlines.
pub fn parse_stat(b: &[u8]) -> Option<Stat> {
    let open = b.iter().position(|&c| c == b'(')?;
    let close = b.iter().rposition(|&c| c == b')')?;
    let comm = b.get(open + 1..close)?.to_vec();
    // Fields after the comm, numbered from 3 (state) as in proc(5).
    let mut f = b
        .get(close + 1..)?
        .split(|c| c.is_ascii_whitespace())
        .filter(|s| !s.is_empty());
    let state = *f.next()?.first()?;
    let ppid = parse_i32_bits(f.next()?)?;
    let pgrp = parse_i32_bits(f.next()?)?;
    let session = parse_i32_bits(f.next()?)?;
    let tty_nr = parse_i32_bits(f.next()?)?;
    // Skip fields 8..=21 to reach 22 (starttime).
    let start = f.nth(14)?;
    let start_ticks = std::str::from_utf8(start).ok()?.parse().ok()?;
    Some(Stat {
        comm,
        state,
        ppid,
        pgrp,
        session,
        tty_nr,
        start_ticks,
    })
}

/// Parses `/proc/<pid>/status`. `Uid:`, `Gid:`, `PPid:` and `Tgid:` are
/// required; `CapEff:` is 0 when absent.
pub fn parse_status(s: &str) -> Option<Status> {
    parse_status_bytes(s.as_bytes())
}

/// Works on bytes because the `Name:` line may hold invalid UTF-8.
fn parse_status_bytes(b: &[u8]) -> Option<Status> {
    let (mut ppid, mut tgid, mut uid, mut gid) = (None, None, None, None);
    let mut cap_eff = 0;
    for line in b.split(|&c| c == b'\n') {
        let Some(colon) = line.iter().position(|&c| c == b':') else {
            continue;
        };
        let (key, val) = (&line[..colon], trim(&line[colon + 1..]));
        match key {
            b"PPid" => ppid = parse_u32(val),
            b"Tgid" => tgid = parse_u32(val),
            b"Uid" => uid = parse_ids(val),
            b"Gid" => gid = parse_ids(val),
            b"CapEff" => {
                cap_eff = std::str::from_utf8(val)
                    .ok()
                    .and_then(|v| u64::from_str_radix(v, 16).ok())?;
            }
            _ => {}
        }
    }
    Some(Status {
        ppid: ppid?,
        uid: uid?,
        gid: gid?,
        cap_eff,
        tgid: tgid?,
    })
}

fn parse_ids(val: &[u8]) -> Option<[u32; 4]> {
    let mut out = [0u32; 4];
    let mut it = val
        .split(|c| c.is_ascii_whitespace())
        .filter(|s| !s.is_empty());
    for slot in &mut out {
        *slot = parse_u32(it.next()?)?;
    }
    Some(out)
}

/// Splits a raw cmdline into arguments. The kernel ends each argument with a
/// NUL; only the final one is dropped, so empty arguments survive. A process
/// that rewrote its argv area without NULs gives a single argument.
pub fn split_cmdline(b: &[u8]) -> impl Iterator<Item = &[u8]> {
    let body = b.strip_suffix(b"\0").unwrap_or(b);
    // `split` on an empty slice yields one empty item; an empty cmdline has
    // no arguments at all.
    body.split(|&c| c == 0)
        .take(if b.is_empty() { 0 } else { usize::MAX })
}

/// Inode of a namespace link target such as `pid:[4026531836]`.
pub fn parse_ns_link(b: &[u8]) -> Option<u64> {
    let open = b.iter().position(|&c| c == b'[')?;
    let inner = b.get(open + 1..)?.strip_suffix(b"]")?;
    if inner.is_empty() || !inner.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(inner).ok()?.parse().ok()
}

/// Decodes a controlling tty number; `None` for "no tty".
pub fn tty_major_minor(tty_nr: u32) -> Option<(u32, u32)> {
    if tty_nr == 0 {
        return None;
    }
    let major = (tty_nr >> 8) & 0xfff;
    let minor = (tty_nr & 0xff) | ((tty_nr >> 12) & 0xfff00);
    Some((major, minor))
}

/// Capability names by bit number (include/uapi/linux/capability.h).
const CAP_NAMES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// Names of the capabilities set in `mask`, lowest bit first; bits newer
/// than this table are named `CAP_<bit>`.
pub fn cap_names(mask: u64) -> Vec<String> {
    (0..64u32)
        .filter(|bit| mask & (1u64 << bit) != 0)
        .map(|bit| match CAP_NAMES.get(bit as usize) {
            Some(name) => (*name).to_owned(),
            None => format!("CAP_{bit}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(case: &str) -> ProcFs {
        ProcFs::new(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/data/proc")
                .join(case),
        )
    }

    const STAT: &[u8] = b"4242 (a) b) (c\n) S 1 4242 4242 34816 4242 4194560 \
        100 0 0 0 1 2 0 0 20 0 1 0 987654 1000000 100 18446744073709551615";

    #[test]
    fn stat_comm_with_parens_spaces_newline() {
        let s = parse_stat(STAT).expect("parses");
        assert_eq!(s.comm, b"a) b) (c\n");
        assert_eq!(s.state, b'S');
        assert_eq!((s.ppid, s.pgrp, s.session), (1, 4242, 4242));
        assert_eq!(s.tty_nr, 34816);
        assert_eq!(tty_major_minor(s.tty_nr), Some((136, 0)));
        assert_eq!(s.start_ticks, 987654);
    }

    #[test]
    fn stat_garbage_is_none() {
        for bad in [
            &b""[..],
            b"1 (x",
            b"1 x) S 1",
            b"1 (x) S 1 2 3 4",
            b"1 (x) S a b c d 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19",
        ] {
            assert_eq!(parse_stat(bad), None, "{bad:?}");
        }
        // Every prefix of a valid line: never panics.
        for n in 0..STAT.len() {
            let _ = parse_stat(&STAT[..n]);
        }
    }

    const STATUS: &str = "Name:\tbash\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t4242\n\
        Ngid:\t0\nPid:\t4242\nPPid:\t1\nTracerPid:\t0\nUid:\t1000\t0\t0\t0\n\
        Gid:\t1000\t1000\t1000\t1000\nFDSize:\t256\nCapInh:\t0000000000000000\n\
        CapPrm:\t0000000000000000\nCapEff:\t00000000a80425fb\n";

    #[test]
    fn status_fields() {
        let s = parse_status(STATUS).expect("parses");
        assert_eq!(s.tgid, 4242);
        assert_eq!(s.ppid, 1);
        assert_eq!(s.uid, [1000, 0, 0, 0]);
        assert_eq!(s.gid, [1000; 4]);
        assert_eq!(s.cap_eff, 0xa80425fb);
        assert_eq!(parse_status("Name:\tx\n"), None);
        assert_eq!(
            parse_status("Tgid:\t1\nPPid:\t0\nUid:\t1 2 3\nGid:\t1 2 3 4\n"),
            None
        );
    }

    #[test]
    fn status_with_invalid_utf8_name() {
        let mut raw = b"Name:\t\xff\xfe\n".to_vec();
        raw.extend_from_slice(STATUS.as_bytes());
        assert_eq!(parse_status_bytes(&raw).map(|s| s.tgid), Some(4242));
    }

    #[test]
    fn cmdline_splitting() {
        let args = |b: &'static [u8]| split_cmdline(b).collect::<Vec<_>>();
        assert_eq!(args(b"ls\0-l\0a b\0"), [&b"ls"[..], b"-l", b"a b"]);
        assert_eq!(args(b"x\0\0"), [&b"x"[..], b""]);
        assert_eq!(
            args(b"nginx: worker process"),
            [&b"nginx: worker process"[..]]
        );
        assert_eq!(args(b"\0"), [&b""[..]]);
        assert!(args(b"").is_empty());
    }

    #[test]
    fn ns_links() {
        assert_eq!(parse_ns_link(b"pid:[4026531836]"), Some(4026531836));
        assert_eq!(parse_ns_link(b"cgroup:[1]"), Some(1));
        for bad in [
            &b"pid:[]"[..],
            b"pid:4026531836",
            b"pid:[12",
            b"pid:[-1]",
            b"pid:[1x]",
        ] {
            assert_eq!(parse_ns_link(bad), None);
        }
    }

    #[test]
    fn capability_names() {
        assert!(cap_names(0).is_empty());
        assert_eq!(cap_names(1 << 21 | 1), ["CAP_CHOWN", "CAP_SYS_ADMIN"]);
        assert_eq!(cap_names(1 << 40), ["CAP_CHECKPOINT_RESTORE"]);
        assert_eq!(cap_names(1 << 41 | 1 << 63), ["CAP_41", "CAP_63"]);
        assert_eq!(cap_names(u64::MAX).len(), 64);
    }

    #[test]
    fn host_fixture_tree() {
        let p = fixture("host");
        let stat = p.stat(1234).expect("stat");
        assert_eq!(stat.comm, b"bash");
        assert_eq!(stat.start_ticks, 5000);
        let st = p.status(1234).expect("status");
        assert_eq!(st.uid, [1000; 4]);
        assert_eq!(cap_names(st.cap_eff), Vec::<String>::new());
        let mut buf = Vec::new();
        assert!(!p.cmdline(1234, &mut buf, 4096).expect("cmdline"));
        assert_eq!(split_cmdline(&buf).count(), 3);
        assert!(p.cmdline(1234, &mut buf, 4).expect("cmdline"));
        assert_eq!(buf, b"bash");
        assert_eq!(p.exe(1234).expect("exe"), b"/usr/bin/bash");
        assert_eq!(p.cwd(1234).expect("cwd"), b"/home/alice (deleted)");
        assert_eq!(p.loginuid(1234).expect("loginuid"), Some(1000));
        assert_eq!(p.sessionid(1234).expect("sessionid"), None);
        let ns = p.namespaces(1234).expect("ns");
        assert_eq!(ns.pid, 4026531836);
        assert_eq!(ns.cgroup, 0, "missing link reads as 0");
        let mut cg = String::new();
        p.cgroup(1234, &mut cg).expect("cgroup");
        assert!(cg.starts_with("0::/user.slice/"));
        assert_eq!(p.boot_time_secs().expect("btime"), 1_700_000_000);
        assert_eq!(p.pids().expect("pids").collect::<Vec<_>>(), [1234]);
    }

    #[test]
    fn vanished_pid_is_not_found() {
        let p = fixture("host");
        let nf = |r: io::Error| r.kind() == io::ErrorKind::NotFound;
        assert!(p.stat(99).map_err(nf).expect_err("gone"));
        assert!(p.namespaces(99).map_err(nf).expect_err("gone"));
        assert!(p.loginuid(99).map_err(nf).expect_err("gone"));
        assert!(
            p.cmdline(99, &mut Vec::new(), 10)
                .map_err(nf)
                .expect_err("gone")
        );
        assert!(nf(gone(io::Error::from_raw_os_error(libc::ESRCH))));
        assert!(is_reaped(&gone(io::Error::from_raw_os_error(libc::ESRCH))));
        assert!(!is_reaped(&io::ErrorKind::NotFound.into()));
        assert!(!is_reaped(&gone(io::Error::from_raw_os_error(
            libc::ENOENT
        ))));
    }

    #[test]
    fn a_reaped_task_is_read_no_further() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("spawn sleep");
        let pid = child.id();
        let mut d = ProcFs::host().dir(pid).expect("dir");
        assert_eq!(d.stat(pid).expect("stat").comm, b"sleep");
        child.kill().expect("kill");
        child.wait().expect("reap");
        let nf = |r: io::Error| r.kind() == io::ErrorKind::NotFound;
        assert!(d.status(pid).map_err(nf).expect_err("reaped"));
        assert!(d.reaped, "ESRCH marks the directory reaped");
        assert!(d.exe().map_err(nf).expect_err("reaped"));
        assert!(d.namespaces().map_err(nf).expect_err("reaped"));
        assert!(d.loginuid().map_err(nf).expect_err("reaped"));
        assert!(
            d.cmdline(&mut Vec::new(), 10)
                .map_err(nf)
                .expect_err("reaped")
        );
    }

    #[test]
    fn live_self() {
        let p = ProcFs::host();
        let me = std::process::id();
        let stat = p.stat(me).expect("stat self");
        assert!(stat.start_ticks > 0);
        assert_eq!(p.status(me).expect("status").tgid, me);
        assert!(p.namespaces(me).expect("ns").pid != 0);
        assert!(p.boot_time_secs().expect("btime") > 1_000_000_000);
        assert!(p.clock_ticks() > 0);
        assert!(p.pids().expect("pids").any(|pid| pid == me));
    }

    #[test]
    fn open_dir_never_reads_another_process() {
        let p = ProcFs::host();
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("spawn sleep");
        let mut dir = p.dir(child.id()).expect("dir of the child");
        assert!(dir.stat(child.id()).is_ok(), "alive: readable");
        child.kill().expect("kill");
        child.wait().expect("reap");
        // Reaped: the pid may be reused, but this handle still means the
        // old process and says it is gone.
        let gone = |r: io::Error| r.kind() == io::ErrorKind::NotFound;
        assert!(dir.stat(child.id()).map_err(gone).expect_err("reaped"));
        assert!(dir.exe().map_err(gone).expect_err("reaped"));
        assert!(dir.namespaces().map_err(gone).expect_err("reaped"));
    }
}
