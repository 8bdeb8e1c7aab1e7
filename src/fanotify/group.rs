//! The group's marks: every exec-capable filesystem of the host's mount
//! table, the kernel's internal memfd mount, and the filesystems that only
//! a container's mount namespace shows.

use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use std::collections::{BTreeSet, HashMap, HashSet};

use super::events::METADATA_LEN;
use super::watchdog::{SLOTS, Watchdog};
use super::{
    CaptureOptions, DEFER_MAX, FanotifyCapture, FanotifyError, FanotifyStats,
    MARKED_CONTAINERS_MAX, mounts,
};
use crate::event::Event;

impl FanotifyCapture {
    /// `guarded`: start the watchdog process, before the first mark (it is
    /// forked, and a fork must not happen once execs can wait on us).
    pub(super) fn open_group(opts: CaptureOptions, guarded: bool) -> Result<Self, FanotifyError> {
        let mut flags = libc::FAN_CLASS_CONTENT | libc::FAN_CLOEXEC | libc::FAN_NONBLOCK;
        // A full queue (16 384 events by default) makes the kernel allow
        // the execs it cannot queue, unseen: under enforcement that is
        // failing open. Unlimited, the queue holds one entry per task
        // waiting in execve, which the host's task limit bounds (see the
        // README); without enforcement an overflow only costs argv, and
        // is counted.
        if opts.enforce {
            flags |= libc::FAN_UNLIMITED_QUEUE;
        }
        let ev_flags = libc::O_RDONLY | libc::O_LARGEFILE | libc::O_CLOEXEC;
        // SAFETY: plain system call; the result is checked.
        let fd = unsafe { libc::fanotify_init(flags, ev_flags as libc::c_uint) };
        if fd < 0 {
            let e = io::Error::last_os_error();
            return Err(match e.raw_os_error() {
                Some(libc::ENOSYS) => FanotifyError::NoFanotify(e),
                Some(libc::EPERM) => FanotifyError::NeedsCapSysAdmin {
                    op: "fanotify_init(FAN_CLASS_CONTENT)",
                    source: e,
                },
                Some(libc::EINVAL) => FanotifyError::NoExecPermission(e),
                _ => FanotifyError::Io {
                    op: "fanotify_init",
                    source: e,
                },
            });
        }
        // SAFETY: a fresh fd we own.
        let group = unsafe { OwnedFd::from_raw_fd(fd) };
        let mountinfo = File::open("/proc/self/mountinfo").map_err(|source| FanotifyError::Io {
            op: "open /proc/self/mountinfo",
            source,
        })?;
        // SAFETY: plain system call; the result is checked.
        let tfd = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if tfd < 0 {
            return Err(FanotifyError::Io {
                op: "timerfd_create",
                source: io::Error::last_os_error(),
            });
        }
        // SAFETY: a fresh fd we own.
        let timer = unsafe { OwnedFd::from_raw_fd(tfd) };
        let mut c = FanotifyCapture {
            watchdog: None,
            group,
            mountinfo,
            opts,
            stats: FanotifyStats::default(),
            marked: BTreeSet::new(),
            marked_containers: HashSet::new(),
            recent: HashMap::new(),
            loaders: HashSet::new(),
            memfd_marked: false,
            buf: vec![0u64; SLOTS * METADATA_LEN / 8],
            batch: Vec::with_capacity(SLOTS),
            deferred: Vec::with_capacity(DEFER_MAX),
            free_slots: u64::MAX >> (64 - SLOTS),
            timer,
            timer_armed: false,
            latency: Default::default(),
            tokens: None,
            slow_unmarked: Default::default(),
            local_devs: Default::default(),
            policy: None,
            procfs: crate::procfs::ProcFs::host(),
        };
        if guarded {
            let wd = Watchdog::start(c.group.as_raw_fd()).map_err(|source| FanotifyError::Io {
                op: "starting the watchdog process",
                source,
            })?;
            c.watchdog = Some(wd);
        }
        let text = read_mountinfo("/proc/self/mountinfo").map_err(|source| FanotifyError::Io {
            op: "read /proc/self/mountinfo",
            source,
        })?;
        let mut last_err = None;
        let parsed = mounts::parse(&text);
        c.slow_unmarked.0 = mounts::slow_devs(&parsed);
        c.local_devs[0] = mounts::local_devs(&parsed);
        c.mark_targets(b"", &mounts::targets(&parsed), &mut last_err);
        c.mark_memfd_filesystem();
        if c.marked.is_empty() {
            let e = last_err.unwrap_or_else(|| io::ErrorKind::NotFound.into());
            return Err(match e.raw_os_error() {
                Some(libc::EINVAL) => FanotifyError::NoExecPermission(e),
                Some(libc::EPERM) => FanotifyError::NeedsCapSysAdmin {
                    op: "fanotify_mark(FAN_MARK_FILESYSTEM)",
                    source: e,
                },
                _ => FanotifyError::NothingMarked(e),
            });
        }
        Ok(c)
    }

    /// A container's own filesystems (a tmpfs /tmp, /dev/shm) are separate
    /// superblocks that the host's marks do not cover: marked once, when
    /// the first event from the container passes.
    pub(super) fn mark_new_container(&mut self, event: &Event) {
        let Some(c) = event.container.as_ref() else {
            return;
        };
        if c.id.is_empty() || self.marked_containers.contains(&c.id) {
            return;
        }
        if self.marked_containers.len() >= MARKED_CONTAINERS_MAX {
            self.marked_containers.clear();
        }
        self.marked_containers.insert(c.id.clone());
        if let Err(e) = self.mark_mounts_of(event.process.pid) {
            log::debug!("marking the mounts of container {}: {e}", c.id);
        }
    }

    /// The mount table changed: marks exec-capable filesystems not marked
    /// yet, and forgets those that are gone (the kernel drops their marks
    /// with the superblock; a new one may reuse the device number).
    pub fn remark(&mut self) {
        let text = match read_mountinfo("/proc/self/mountinfo") {
            Ok(t) => t,
            Err(e) => {
                log::warn!("re-reading /proc/self/mountinfo: {e}");
                return;
            }
        };
        let parsed = mounts::parse(&text);
        let targets = mounts::targets(&parsed);
        let live: BTreeSet<(u32, u32)> = parsed.iter().map(|m| m.dev).collect();
        self.marked.retain(|d| live.contains(d));
        self.slow_unmarked.0 = mounts::slow_devs(&parsed);
        self.local_devs[0] = mounts::local_devs(&parsed);
        let mut last = None;
        self.mark_targets(b"", &targets, &mut last);
    }

    /// Marks the filesystems mounted in `pid`'s mount namespace (a container
    /// started: its tmpfs mounts exist nowhere in ours), reached through
    /// `/proc/<pid>/root`.
    pub fn mark_mounts_of(&mut self, pid: u32) -> io::Result<()> {
        let text = read_mountinfo(&format!("/proc/{pid}/mountinfo"))?;
        let prefix = format!("/proc/{pid}/root");
        let mut last = None;
        let parsed = mounts::parse(&text);
        let containers = &mut self.slow_unmarked.1;
        if containers.len() >= MARKED_CONTAINERS_MAX {
            containers.clear();
        }
        containers.extend(mounts::slow_devs(&parsed));
        let local = &mut self.local_devs[1];
        if local.len() >= MARKED_CONTAINERS_MAX {
            local.clear();
        }
        local.extend(mounts::local_devs(&parsed));
        self.mark_targets(prefix.as_bytes(), &mounts::targets(&parsed), &mut last);
        Ok(())
    }

    fn mark_targets(
        &mut self,
        prefix: &[u8],
        targets: &[mounts::Target],
        last_err: &mut Option<io::Error>,
    ) {
        for t in targets {
            if self.marked.contains(&t.dev) {
                continue;
            }
            // Prefer a mount point that really shows this superblock (the
            // first may be over-mounted); else try them all in order.
            // `targets` left out the mount points whose path walk would ask
            // a slow filesystem.
            let mut paths: Vec<Vec<u8>> = t
                .mounts
                .iter()
                .map(|(_, mp)| [prefix, mp.as_slice()].concat())
                .collect();
            paths.sort_by_key(|p| dev_of(p) != Some(t.dev));
            for p in paths {
                match self.mark(&p) {
                    Ok(()) => {
                        self.stats.marks += 1;
                        self.marked.insert(t.dev);
                        log::debug!(
                            "fanotify: marked {} ({})",
                            String::from_utf8_lossy(&p),
                            String::from_utf8_lossy(&t.fstype)
                        );
                        break;
                    }
                    Err(e) => {
                        self.stats.mark_errors += 1;
                        log::debug!("fanotify_mark {}: {e}", String::from_utf8_lossy(&p));
                        *last_err = Some(e);
                    }
                }
            }
        }
    }

    /// `memfd_create` files live on the kernel's internal shmem mount, which
    /// no mountinfo lists; runc and fileless malware exec them with
    /// `execveat(fd, "", AT_EMPTY_PATH)`. Marking through a memfd of our own
    /// (pathname NULL: the mark goes on `dirfd`'s filesystem) covers them.
    fn mark_memfd_filesystem(&mut self) {
        let memfd = match crate::fsclass::own_memfd(c"execsentry-mark") {
            Ok(fd) => fd,
            Err(e) => {
                log::debug!("memfd_create: {e}");
                return;
            }
        };
        // SAFETY: valid fds; a NULL pathname means "dirfd itself".
        let r = unsafe {
            libc::fanotify_mark(
                self.group.as_raw_fd(),
                libc::FAN_MARK_ADD | libc::FAN_MARK_FILESYSTEM,
                libc::FAN_OPEN_EXEC_PERM,
                memfd.as_raw_fd(),
                std::ptr::null(),
            )
        };
        if r < 0 {
            self.stats.mark_errors += 1;
            log::debug!("fanotify_mark(memfd): {}", io::Error::last_os_error());
        } else {
            self.stats.marks += 1;
            self.memfd_marked = true;
        }
    }

    fn mark(&self, path: &[u8]) -> io::Result<()> {
        let c = CString::new(path).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: valid fd and NUL-terminated path.
        let r = unsafe {
            libc::fanotify_mark(
                self.group.as_raw_fd(),
                libc::FAN_MARK_ADD | libc::FAN_MARK_FILESYSTEM,
                libc::FAN_OPEN_EXEC_PERM,
                libc::AT_FDCWD,
                c.as_ptr(),
            )
        };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }
}

fn read_mountinfo(path: &str) -> io::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(16 * 1024);
    // Bounded: a mount table of tens of thousands of lines still fits.
    File::open(path)?.take(16 << 20).read_to_end(&mut buf)?;
    Ok(buf)
}

fn dev_of(path: &[u8]) -> Option<(u32, u32)> {
    let c = CString::new(path).ok()?;
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: valid path; stat writes on success.
    if unsafe { libc::stat(c.as_ptr(), st.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: initialized by the successful stat.
    let st = unsafe { st.assume_init() };
    Some((libc::major(st.st_dev), libc::minor(st.st_dev)))
}
