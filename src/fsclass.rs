//! Which filesystem a file lives on, told without asking that filesystem.
//!
//! On FUSE (any user can mount one) and network filesystems, `stat`,
//! `fstat`, `statfs`, `open` and `read` are requests to a process or a
//! server, which may answer late or never: the loop must not make them.
//! What costs such a filesystem nothing is the kernel's own bookkeeping: an
//! open fd's `/proc/self/fdinfo/<fd>` names its mount (`mnt_id`), and
//! mountinfo names each mount's filesystem type. An `O_PATH` open (no
//! permission check, no `open` method called) of `/proc/<pid>/exe` gives
//! such an fd for a process's executable.
//!
//! The parsing is PURE ([`parse_fdinfo`], [`MountClasses`], [`class_in`]);
//! [`HostMounts`], [`fd_mount`] and [`pid_mount_class`] are the I/O.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

use crate::fanotify::mounts::{self, Mount};

/// Where a file lives, as far as the loop is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsClass {
    /// A local filesystem: read inline, as always.
    Local,
    /// FUSE or network (see [`mounts::slow_type`]), or a mount no table
    /// shows: never touched from the loop.
    Slow,
}

/// What `/proc/<pid>/fdinfo/<fd>` says of a file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FdInfo {
    /// The mount (since Linux 3.15).
    pub mnt_id: Option<u64>,
    /// The inode number (since Linux 5.14).
    pub ino: Option<u64>,
}

/// Parses fdinfo text (`pos:\t0\nflags:\t0100000\nmnt_id:\t25\nino:\t12\n`).
/// PURE.
pub fn parse_fdinfo(text: &[u8]) -> FdInfo {
    let mut info = FdInfo::default();
    for line in text.split(|&c| c == b'\n') {
        let Some(colon) = line.iter().position(|&c| c == b':') else {
            continue;
        };
        let value = || {
            std::str::from_utf8(&line[colon + 1..])
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        match &line[..colon] {
            b"mnt_id" => info.mnt_id = value(),
            b"ino" => info.ino = value(),
            _ => {}
        }
    }
    info
}

/// Mount id → class, for one mount namespace's mountinfo.
#[derive(Debug, Clone, Default)]
pub struct MountClasses {
    by_id: HashMap<u64, FsClass>,
    any_slow: bool,
}

impl MountClasses {
    pub fn new(mounts: &[Mount]) -> Self {
        let mut by_id = HashMap::with_capacity(mounts.len());
        let mut any_slow = false;
        for m in mounts {
            let class = class_of_type(&m.fstype);
            any_slow |= class == FsClass::Slow;
            by_id.insert(m.mount_id, class);
        }
        MountClasses { by_id, any_slow }
    }

    /// `None`: not a mount of this table (another namespace's, or gone).
    pub fn class(&self, mnt_id: u64) -> Option<FsClass> {
        self.by_id.get(&mnt_id).copied()
    }

    /// Whether any mount of the table is slow.
    pub fn any_slow(&self) -> bool {
        self.any_slow
    }
}

/// The class of a filesystem type. PURE.
pub fn class_of_type(fstype: &[u8]) -> FsClass {
    if mounts::slow_type(fstype) {
        FsClass::Slow
    } else {
        FsClass::Local
    }
}

/// The class of mount `mnt_id` in a mountinfo text, `None` if it has no
/// such mount. PURE.
pub fn class_in(text: &[u8], mnt_id: u64) -> Option<FsClass> {
    text.split(|&c| c == b'\n')
        .filter_map(mounts::parse_line)
        .find(|m| m.mount_id == mnt_id)
        .map(|m| class_of_type(&m.fstype))
}

/// A memfd of our own, close-on-exec: it stands for every (non-hugetlb)
/// memfd on the host, which all live on one internal shmem mount.
pub fn own_memfd(name: &std::ffi::CStr) -> std::io::Result<OwnedFd> {
    // SAFETY: a NUL-terminated name and plain flags; the result is checked.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh fd we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The mount id of that internal mount.
fn memfd_mount() -> Option<u64> {
    fd_mount(own_memfd(c"execsentry-mnt").ok()?.as_raw_fd()).mnt_id
}

/// `/proc/self/fdinfo/<fd>`, read into a stack buffer: procfs only, no
/// request to the file's filesystem (an fd's `show_fdinfo` is the file
/// type's, and regular files of FUSE and network filesystems have none).
pub fn fd_mount(fd: RawFd) -> FdInfo {
    let mut path = [0u8; 40];
    let mut w = &mut path[..];
    if std::io::Write::write_fmt(&mut w, format_args!("/proc/self/fdinfo/{fd}\0")).is_err() {
        return FdInfo::default();
    }
    // SAFETY: NUL-terminated above.
    let f = unsafe { libc::open(path.as_ptr().cast(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if f < 0 {
        return FdInfo::default();
    }
    // SAFETY: a fresh fd we own.
    let f = unsafe { OwnedFd::from_raw_fd(f) };
    let mut buf = [0u8; 256];
    // SAFETY: reads at most the buffer's length into it.
    let n = unsafe { libc::read(f.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
    match usize::try_from(n) {
        Ok(n) => parse_fdinfo(&buf[..n]),
        Err(_) => FdInfo::default(),
    }
}

/// The class of mount `mnt_id` in `pid`'s mount namespace, from its
/// mountinfo (procfs). `None` when the process is gone or has no such
/// mount (the file came from elsewhere: callers treat it as slow).
pub fn pid_mount_class(proc_root: &Path, pid: u32, mnt_id: u64) -> Option<FsClass> {
    let text = read_bounded(&mut File::open(proc_root.join(format!("{pid}/mountinfo"))).ok()?)?;
    class_in(&text, mnt_id)
}

fn read_bounded(f: &mut File) -> Option<Vec<u8>> {
    let mut buf = Vec::with_capacity(8 * 1024);
    f.take(16 << 20).read_to_end(&mut buf).ok()?;
    Some(buf)
}

/// The sensor's own mount table, re-read only when the kernel says it
/// changed (`POLLPRI` on the open mountinfo, polled without waiting).
pub struct HostMounts {
    file: Option<File>,
    classes: MountClasses,
    /// The kernel's internal mount of memfd files, in no mountinfo: runc
    /// runs `runc init` from a memfd copy of itself.
    memfd_mnt: Option<u64>,
}

impl HostMounts {
    /// Opens `/proc/self/mountinfo`; a failure leaves an empty table (every
    /// mount then looks unknown, so slow: safe, not fast).
    pub fn open() -> Self {
        let mut h = HostMounts {
            file: File::open("/proc/self/mountinfo").ok(),
            classes: MountClasses::default(),
            memfd_mnt: memfd_mount(),
        };
        h.reload();
        h
    }

    /// A table with no file behind it (tests, replay).
    pub fn fixed(classes: MountClasses) -> Self {
        HostMounts {
            file: None,
            classes,
            memfd_mnt: None,
        }
    }

    fn reload(&mut self) {
        let Some(f) = self.file.as_mut() else {
            return;
        };
        if f.rewind().is_err() {
            return;
        }
        if let Some(text) = read_bounded(f) {
            self.classes = MountClasses::new(&mounts::parse(&text));
        }
    }

    /// The current table: re-read first if a mount came or went.
    pub fn current(&mut self) -> &MountClasses {
        if let Some(f) = &self.file {
            let mut p = libc::pollfd {
                fd: f.as_raw_fd(),
                events: libc::POLLPRI,
                revents: 0,
            };
            // SAFETY: one valid pollfd, no wait.
            let n = unsafe { libc::poll(&mut p, 1, 0) };
            if n > 0 && p.revents & (libc::POLLPRI | libc::POLLERR) != 0 {
                self.reload();
            }
        }
        &self.classes
    }
}

/// The class of the file open at `fd`, for a process `pid` (whose mount
/// namespace is asked when ours has no such mount). Unknown is slow.
pub fn class_of_fd(host: &mut HostMounts, proc_root: &Path, pid: u32, fd: RawFd) -> FsClass {
    let Some(mnt_id) = fd_mount(fd).mnt_id else {
        return FsClass::Slow;
    };
    if host.memfd_mnt == Some(mnt_id) {
        return FsClass::Local;
    }
    host.current()
        .class(mnt_id)
        .or_else(|| pid_mount_class(proc_root, pid, mnt_id))
        .unwrap_or(FsClass::Slow)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_memfd_is_local_though_no_mountinfo_lists_its_mount() {
        let fd = own_memfd(c"t").expect("memfd_create");
        let mut host = HostMounts::fixed(MountClasses::default());
        assert_eq!(
            class_of_fd(&mut host, Path::new("/nonexistent"), 1, fd.as_raw_fd()),
            FsClass::Slow,
            "unknown mounts are slow"
        );
        host.memfd_mnt = memfd_mount();
        assert!(host.memfd_mnt.is_some());
        assert_eq!(
            class_of_fd(&mut host, Path::new("/nonexistent"), 1, fd.as_raw_fd()),
            FsClass::Local
        );
    }

    #[test]
    fn fdinfo_of_a_regular_file_and_of_an_old_kernel() {
        let new = b"pos:\t0\nflags:\t0100000\nmnt_id:\t1234\nino:\t98765\n";
        assert_eq!(
            parse_fdinfo(new),
            FdInfo {
                mnt_id: Some(1234),
                ino: Some(98765)
            }
        );
        // 3.15 .. 5.13: no ino line.
        let old = b"pos:\t0\nflags:\t02100000\nmnt_id:\t21\n";
        assert_eq!(parse_fdinfo(old).mnt_id, Some(21));
        assert_eq!(parse_fdinfo(old).ino, None);
        // Before 3.15, or garbage: nothing.
        assert_eq!(parse_fdinfo(b"pos:\t0\nflags:\t0\n"), FdInfo::default());
        assert_eq!(parse_fdinfo(b"mnt_id:\tx\nino 5\n"), FdInfo::default());
        // A fanotify group's own fdinfo has more lines; they are ignored.
        let fan =
            b"pos:\t0\nflags:\t04002\nmnt_id:\t15\nino:\t1\nfanotify flags:10 event-flags:0\n";
        assert_eq!(parse_fdinfo(fan).mnt_id, Some(15));
    }

    const MOUNTINFO: &[u8] = b"\
22 1 259:1 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p1 rw
23 22 0:21 / /proc rw,nosuid - proc proc rw
40 22 0:50 / /home/u/remote rw,nosuid,nodev,relatime shared:80 - fuse.sshfs u@h:/ rw,user_id=1000,group_id=1000
41 22 0:51 / /mnt/fuse rw,nosuid,nodev - fuse esfuse rw,user_id=0,group_id=0
42 22 0:52 / /net/home rw,relatime - nfs4 srv:/home rw,vers=4.2
43 22 0:53 / /var/lib/docker/overlay2/x/merged rw - overlay overlay rw,lowerdir=a
44 22 0:54 / /mnt/share rw - cifs //srv/share rw
";

    #[test]
    fn mountinfo_classes_by_mount_id() {
        let c = MountClasses::new(&mounts::parse(MOUNTINFO));
        assert!(c.any_slow());
        for (id, want) in [
            (22, FsClass::Local),
            (23, FsClass::Local),
            (40, FsClass::Slow),
            (41, FsClass::Slow),
            (42, FsClass::Slow),
            (43, FsClass::Local),
            (44, FsClass::Slow),
        ] {
            assert_eq!(c.class(id), Some(want), "mount {id}");
        }
        assert_eq!(c.class(99), None, "another namespace's mount");
        assert_eq!(class_in(MOUNTINFO, 44), Some(FsClass::Slow));
        assert_eq!(class_in(MOUNTINFO, 43), Some(FsClass::Local));
        assert_eq!(class_in(MOUNTINFO, 7), None);
        let local = b"22 1 259:1 / / rw - ext4 /dev/sda1 rw\n";
        assert!(!MountClasses::new(&mounts::parse(local)).any_slow());
    }

    #[test]
    fn own_fds_and_mounts_are_classified_without_error() {
        // A file of ours on whatever /proc/self/exe is (local in CI).
        let f = File::open("/proc/self/exe").unwrap();
        let info = fd_mount(f.as_raw_fd());
        assert!(info.mnt_id.is_some(), "{info:?}");
        let mut host = HostMounts::open();
        assert!(host.current().class(info.mnt_id.unwrap()).is_some());
        assert_eq!(fd_mount(-1), FdInfo::default());
    }
}
