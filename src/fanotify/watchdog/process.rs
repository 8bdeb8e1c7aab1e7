//! The watchdog's process: forked by [`super::Watchdog::start`] before any
//! fanotify mark exists, so that a stopped sensor (SIGSTOP, a ptrace stop)
//! does not stop its safety net too.
//!
//! After `fork` the child may run only async-signal-safe code: the parent
//! can have other threads, whose locks (the allocator's among them) the
//! child inherits held. Everything below is therefore raw system calls on
//! memory that exists already: no allocation, no lock, no `std::io`
//! printing. The child never returns: it `_exit`s.

use std::os::fd::RawFd;
use std::time::Duration;

/// The descriptor that tells the child its parent is gone: a pidfd of the
/// parent (Linux 5.3+: readable when it exits), else the read end of a pipe
/// whose only writer is the parent (hang-up when it exits). Not
/// `PR_SET_PDEATHSIG`: that follows the forking *thread*, not the process.
pub(super) struct DeathFd {
    /// What the child polls.
    pub child_end: RawFd,
    /// The pipe's write end, kept open by the parent; -1 with a pidfd.
    pub parent_end: RawFd,
}

impl DeathFd {
    pub fn new() -> std::io::Result<DeathFd> {
        // SAFETY: plain system calls; results checked.
        unsafe {
            let pidfd = libc::syscall(libc::SYS_pidfd_open, libc::getpid(), 0);
            if pidfd >= 0 {
                // pidfd_open sets O_CLOEXEC itself.
                return Ok(DeathFd {
                    child_end: pidfd as RawFd,
                    parent_end: -1,
                });
            }
            let mut p = [-1; 2];
            if libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(DeathFd {
                child_end: p[0],
                parent_end: p[1],
            })
        }
    }
}

/// Descriptor numbers the child keeps free above the parent's range: one
/// read's worth of event fds, with margin.
const CHILD_ROOM: u64 = 4 * super::SLOTS as u64;

/// The parent's soft limit on open files, lowered (which needs no
/// privilege) to at most `cap`, and to leave [`CHILD_ROOM`] below the hard
/// limit. The parent's event fds are all below it; the child takes every
/// number below it and reads events above (see [`isolate_fds`]).
pub(super) fn fd_limit(cap: u64) -> u64 {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit on local structs.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) != 0 {
            return 0;
        }
        let want = rl
            .rlim_cur
            .min(cap)
            .min(rl.rlim_max.saturating_sub(CHILD_ROOM));
        if want < rl.rlim_cur {
            let lower = libc::rlimit {
                rlim_cur: want,
                rlim_max: rl.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lower) != 0 {
                return 0;
            }
            log::info!(
                "open-file limit lowered from {} to {want}: the fanotify watchdog reads events above it",
                rl.rlim_cur
            );
        }
        want
    }
}

/// The child's descriptor table: `keep` stays, every other number below
/// `limit` becomes a copy of `group_fd`, everything above is closed.
///
/// Why: the kernel matches a response to an event by fd *number*, and a
/// number the child reads an event into could equal one the parent holds
/// for another pending event (two tables, one group). The parent's numbers
/// are all below its open-file limit; with every number below it taken
/// here, the child's reads land above it and can never collide. Copying
/// the group fd over the inherited ones also drops the child's share of
/// every other descriptor (sockets, pipes) at once.
///
/// Returns whether the child has room above `limit` to read events into
/// (`limit` 0: the parent's limit could not be set). Without it a read
/// would fail to install the fd, and the kernel denies a permission event
/// it cannot hand out: the child then must not read.
pub(super) fn isolate_fds(group_fd: RawFd, death_fd: RawFd, limit: u64) -> bool {
    if limit == 0 || limit > i32::MAX as u64 / 2 {
        return false;
    }
    // SAFETY: raw descriptor calls on numbers of our own table.
    unsafe {
        let mut rl = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) != 0 {
            return false;
        }
        // Within the hard limit (fd_limit left the room): no privilege.
        let raised = libc::rlimit {
            rlim_cur: (limit + CHILD_ROOM).min(rl.rlim_max),
            rlim_max: rl.rlim_max,
        };
        let room = libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0
            && raised.rlim_cur >= limit + CHILD_ROOM;
        let limit = limit as RawFd;
        for fd in 0..limit {
            if fd != group_fd && fd != death_fd {
                libc::dup2(group_fd, fd);
            }
        }
        if group_fd < limit && death_fd < limit {
            libc::syscall(
                libc::SYS_close_range,
                limit as libc::c_uint,
                libc::c_uint::MAX,
                0,
            );
        }
        room
    }
}

/// Signals a service manager sends to the whole unit (or a user to the
/// process group) are the parent's to handle: the child ends when the
/// parent does, not before, so a clean stop stays clean.
pub(super) fn ignore_stop_signals() {
    for sig in [
        libc::SIGTERM,
        libc::SIGINT,
        libc::SIGHUP,
        libc::SIGQUIT,
        libc::SIGUSR1,
        libc::SIGUSR2,
        libc::SIGPIPE,
    ] {
        // SAFETY: signal(2) with SIG_IGN is async-signal-safe.
        unsafe { libc::signal(sig, libc::SIG_IGN) };
    }
    // SAFETY: prctl with a static NUL-terminated name / plain flags.
    unsafe {
        libc::prctl(
            libc::PR_SET_NAME,
            c"es-watchdog".as_ptr() as libc::c_ulong,
            0,
            0,
            0,
        );
        // A copy of the sensor's memory (TLS keys among it): never dumped,
        // never attached to by anyone without privilege.
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
    }
}

/// Every capability gone from every set, and `no_new_privs`: the child
/// only writes answers to a descriptor it already holds. Raw calls (the
/// `caps` crate allocates).
pub(super) fn drop_capabilities() {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
    // SAFETY: prctl and capset with valid arguments; errors leave less
    // dropped, never more privilege.
    unsafe {
        for cap in 0..64 {
            libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0);
        }
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        );
        let header = Header {
            version: LINUX_CAPABILITY_VERSION_3,
            pid: 0,
        };
        let data = [
            Data {
                effective: 0,
                permitted: 0,
                inheritable: 0,
            },
            Data {
                effective: 0,
                permitted: 0,
                inheritable: 0,
            },
        ];
        libc::syscall(libc::SYS_capset, &header, data.as_ptr());
        libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
    }
}

/// Whether the parent is gone, waiting at most `timeout` for it.
pub(super) fn parent_gone(death_fd: RawFd, timeout: Duration) -> bool {
    let mut p = libc::pollfd {
        fd: death_fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: one valid pollfd and timespec; no signal mask change.
    let n = unsafe { libc::ppoll(&mut p, 1, &ts, std::ptr::null()) };
    n > 0 && p.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0
}

/// Waits while `*word == expected`, at most `timeout` (a shared futex:
/// the word lives in the mapping both processes see).
pub(super) fn futex_wait(word: &std::sync::atomic::AtomicU32, expected: u32, timeout: Duration) {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: FUTEX_WAIT on a live, aligned u32 with a relative timeout.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            &ts as *const libc::timespec,
        )
    };
}

pub(super) fn futex_wake(word: &std::sync::atomic::AtomicU32) {
    // SAFETY: FUTEX_WAKE on a live, aligned u32.
    unsafe { libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, 1) };
}
