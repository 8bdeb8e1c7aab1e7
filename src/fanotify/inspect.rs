//! Inspecting a task parked in execve: which system call, which thread,
//! and through the pointers it passed, the filename and argv it gave.

use std::fs::File;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;

use super::remote::{self, ExecCall, ProcessMem, SyscallState};
use super::{ExecCapture, FanotifyCapture, RawEvent, Verdict};
use crate::capture::ArgsSource;
use crate::identity::FileKey;

/// Whether to `sched_yield` once when a task reads `running` before
/// deferring it. Measured on 2 cores at load 10: without it ~1 in 20 events
/// was deferred and 41% of those lost; with it ~1 in 25 to 40, 15-30% lost.
const YIELD_BEFORE_DEFER: bool = true;
/// Threads of one process scanned for the one inside execve.
const MAX_THREADS_SCANNED: usize = 64;
/// Recent execs remembered for the per-execve dedup.
pub(super) const RECENT_MAX: usize = 4096;
/// Dynamic loaders whose exec events are ignored at most: each ignore mark
/// pins its inode.
const LOADER_MARKS_MAX: usize = 64;
/// Bytes of a script's first line read for its interpreter.
const SHEBANG_MAX: usize = 256;

/// What identifies one execve of one task: the syscall and its pointers
/// (unchanged while the loader and interpreter are opened) and the file
/// first opened for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ExecKey {
    nr: i64,
    filename: u64,
    argv: u64,
    file: (u64, u64),
    /// The first file was a `#!` script: its first extra open is the
    /// interpreter, the second that interpreter's loader.
    pub(super) script: bool,
    /// Extra opens seen for this execve so far.
    extras: u8,
}

/// What inspecting an event found.
// Lives on the stack for the one event being inspected and is moved out
// at once: boxing the capture would cost an allocation per exec.
#[allow(clippy::large_enum_variant)]
pub(super) enum Inspected {
    /// The task has not parked yet; try again later.
    Running,
    /// Done: a capture, or `None` for an extra open or an unreadable task.
    Done(Option<ExecCapture>),
}

impl FanotifyCapture {
    /// Reads what the parked task tells about its exec. `Done(None)` for
    /// an extra open (loader, interpreter) of an execve already captured,
    /// or an event from a task outside our pid namespace. `Running` (only
    /// if `may_defer`) when the task has not parked yet; without
    /// `may_defer` such a task is reported without argv and counted.
    /// Every dynamically linked exec opens its loader with `open_exec`
    /// too, and so waits for a second answer that tells nothing new. An
    /// ignore mark on the loader's inode spares that wait. Not under
    /// enforcement: a direct `ld.so /denied/prog` must still be refused.
    /// Only files named like a loader: any other `PT_INTERP` keeps its
    /// events. Not either where the memfd filesystem is unmarked: a
    /// `fexecve` of a memfd (runc) is then seen only through its loader. A direct exec of an ignored loader is then seen by the proc
    /// connector alone, and flagged there.
    fn ignore_loader(&mut self, fd: RawFd) {
        if self.opts.enforce || !self.memfd_marked || self.loaders.len() >= LOADER_MARKS_MAX {
            return;
        }
        let Some(key) = file_stat(fd).map(|k| (k.dev, k.ino)) else {
            return;
        };
        if self.loaders.contains(&key) || !looks_like_loader(&fd_path(fd)) {
            return;
        }
        // SAFETY: our group fd and the event's fd; a NULL path marks the
        // fd's own inode.
        let r = unsafe {
            libc::fanotify_mark(
                self.group.as_raw_fd(),
                libc::FAN_MARK_ADD
                    | libc::FAN_MARK_IGNORED_MASK
                    | libc::FAN_MARK_IGNORED_SURV_MODIFY,
                libc::FAN_OPEN_EXEC_PERM,
                fd,
                std::ptr::null(),
            )
        };
        if r == 0 {
            self.loaders.insert(key);
        } else {
            self.stats.mark_errors += 1;
            log::debug!(
                "ignore mark on the loader: {}",
                std::io::Error::last_os_error()
            );
        }
    }

    pub(super) fn inspect(&mut self, ev: &RawEvent, may_defer: bool) -> Inspected {
        let Ok(pid) = u32::try_from(ev.pid) else {
            self.stats.argv_read_errors += 1;
            return Inspected::Done(None);
        };
        if pid == 0 {
            // The task is in a pid namespace we cannot see into.
            self.stats.argv_read_errors += 1;
            return Inspected::Done(None);
        }
        let (state, tid) = self.syscall_of(pid);
        let state = match state {
            Some(SyscallState::Running) if may_defer => return Inspected::Running,
            Some(SyscallState::Running) => {
                self.stats.syscall_running_misses += 1;
                None
            }
            other => other,
        };
        Inspected::Done(self.capture_of(ev, pid, state, tid))
    }

    /// The capture of an event whose task's syscall state was read.
    fn capture_of(
        &mut self,
        ev: &RawEvent,
        pid: u32,
        state: Option<SyscallState>,
        tid: u32,
    ) -> Option<ExecCapture> {
        let stat = file_stat(ev.fd);
        let file = stat.map_or((0, 0), |k| (k.dev, k.ino));
        let call = state.and_then(remote::exec_call);
        let mut cap = ExecCapture {
            pid,
            argv: Vec::new(),
            truncated: false,
            executable: Vec::new(),
            filename: Vec::new(),
            interpreter: None,
            file: stat,
            syscall: call.map_or(0, |c| u32::try_from(c.nr).unwrap_or(0)),
            args_read: false,
            verdict: Verdict::Allow,
            comm: None,
            envp: None,
            cgroup: None,
            // Set by the reader: the time the event was read.
            ns: None,
            source: ArgsSource::Fanotify,
        };
        if let Some(call) = call {
            let key = ExecKey {
                nr: call.nr,
                filename: call.filename,
                argv: call.argv,
                file,
                script: false,
                extras: 0,
            };
            if let Some(prev) = self.recent.get_mut(&pid) {
                // Same execve (same pointers), another file: the loader or
                // interpreter. The same file again is a new execve.
                if prev.nr == key.nr
                    && prev.filename == key.filename
                    && prev.argv == key.argv
                    && prev.file != key.file
                {
                    self.stats.extra_opens += 1;
                    let loader_turn = prev.extras == u8::from(prev.script);
                    prev.extras = prev.extras.saturating_add(1);
                    if loader_turn {
                        self.ignore_loader(ev.fd);
                    }
                    return None;
                }
            }
            if self.recent.len() >= RECENT_MAX {
                self.recent.clear();
            }
            self.recent.insert(pid, key);
            self.read_args(tid, &call, &mut cap);
        } else {
            self.stats.argv_read_errors += 1;
        }
        // Before the answer: once the new program runs it could rename its
        // own file, and the path read would be the new name.
        cap.executable = fd_path(ev.fd);
        // execveat(fd, "", AT_EMPTY_PATH) (fexecve, runc's memfd): the file
        // is the task's dirfd. Its filesystem may be unmarkable (memfds live
        // on an internal mount), so the event may be the loader's: neither
        // its path nor its identity is the program's.
        if let Some(call) = call
            && call.nr == remote::SYS_EXECVEAT
            && call.flags & libc::AT_EMPTY_PATH as u64 != 0
            && cap.args_read
            && cap.filename.is_empty()
            && let Ok(target) = std::fs::read_link(format!("/proc/{tid}/fd/{}", call.dirfd))
        {
            cap.executable = target.into_os_string().into_encoded_bytes();
            cap.file = None;
        }
        Some(cap)
    }

    fn read_args(&mut self, tid: u32, call: &ExecCall, cap: &mut ExecCapture) {
        // argv lives in pages the task chose: none of a FUSE file is faulted
        // in by us (see `pageguard`).
        let mut mem = ProcessMem::guarded(tid, &self.local_devs);
        // Only when `sensor.capture_env_vars` names variables: the
        // environment is read the same way as argv, within the same budget.
        if self.opts.env && call.envp != 0 {
            let env = ExecCall {
                filename: 0,
                argv: call.envp,
                ..*call
            };
            if let Ok(e) =
                remote::read_args(&mut mem, &env, self.opts.max_args, self.opts.max_args_bytes)
            {
                cap.envp = Some(e.argv);
            }
        }
        match remote::read_args(&mut mem, call, self.opts.max_args, self.opts.max_args_bytes) {
            Ok(a) => {
                cap.argv = a.argv;
                cap.truncated = a.truncated;
                cap.filename = a.filename;
                cap.args_read = true;
            }
            Err(e) => {
                self.stats.argv_read_errors += 1;
                log::debug!("argv of {tid}: {e}");
            }
        }
        self.stats.argv_slow_pages += mem.refused();
    }

    /// `/proc/<pid>/syscall`. When another thread than the leader execs,
    /// the leader is not in execve: the threads are scanned for the one
    /// that is. Returns the state and the task to read; `Running` when no
    /// thread is in execve and the leader has not parked yet (it queued the
    /// event but was preempted): never waited for here, the caller defers.
    fn syscall_of(&mut self, pid: u32) -> (Option<SyscallState>, u32) {
        let read = || syscall_state(pid, None);
        let mut state = read();
        if YIELD_BEFORE_DEFER && state == Some(SyscallState::Running) {
            // Our wake-up often preempted the task on its CPU: giving the
            // CPU back once lets it park (microseconds) before we defer.
            std::thread::yield_now();
            state = read();
        }
        if state.and_then(remote::exec_call).is_some() {
            return (state, pid);
        }
        // Multi-threaded exec from a non-leader thread.
        if let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) {
            for ent in dir.flatten().take(MAX_THREADS_SCANNED) {
                let name = ent.file_name();
                let Some(tid) = std::str::from_utf8(name.as_bytes())
                    .ok()
                    .and_then(|s| s.parse::<u32>().ok())
                else {
                    continue;
                };
                if tid == pid {
                    continue;
                }
                let st = syscall_state(pid, Some(tid));
                if st.and_then(remote::exec_call).is_some() {
                    return (st, tid);
                }
            }
        }
        (state, pid)
    }
}

/// `/proc/<pid>/syscall` (or `/proc/<pid>/task/<tid>/syscall`), read with
/// no allocation: this read sits between the event and its answer. The
/// file is at most ~150 bytes and handed out whole by one read.
fn syscall_state(pid: u32, tid: Option<u32>) -> Option<SyscallState> {
    use std::io::Write;
    let mut path = [0u8; 64];
    let mut w = &mut path[..];
    match tid {
        None => write!(w, "/proc/{pid}/syscall\0"),
        Some(t) => write!(w, "/proc/{pid}/task/{t}/syscall\0"),
    }
    .ok()?;
    // SAFETY: `path` is NUL-terminated above (and zero-filled after).
    let fd = unsafe { libc::open(path.as_ptr().cast(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return None;
    }
    // SAFETY: a fresh fd we own.
    let file = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut text = [0u8; 256];
    // SAFETY: reads at most the buffer's length into it.
    let n = unsafe { libc::read(file.as_raw_fd(), text.as_mut_ptr().cast(), text.len()) };
    remote::parse_syscall(&text[..usize::try_from(n).ok()?])
}

/// The identity of an event fd's file; `None` if fstat fails.
fn file_stat(fd: RawFd) -> Option<FileKey> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat writes a stat on success.
    if unsafe { libc::fstat(fd, st.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: initialized by the successful fstat.
    let st = unsafe { st.assume_init() };
    Some(FileKey::from(&st))
}

/// Target of `/proc/self/fd/<fd>` as bytes.
fn fd_path(fd: RawFd) -> Vec<u8> {
    std::fs::read_link(format!("/proc/self/fd/{fd}"))
        .map(|p| p.into_os_string().into_encoded_bytes())
        .unwrap_or_default()
}

/// The interpreter of a `#!` script, from its first bytes. The file is on
/// a local filesystem: slow ones are never marked (see `mounts::targets`),
/// so no event fd refers to their files. The kernel
/// (binfmt_script) reads the same line right after our answer.
pub(super) fn shebang(fd: BorrowedFd<'_>) -> Option<Vec<u8>> {
    // Borrow the fd as a File without taking ownership of it.
    let f = std::mem::ManuallyDrop::new(unsafe { File::from_raw_fd(fd.as_raw_fd()) });
    let mut head = [0u8; SHEBANG_MAX];
    let n = f.read_at(&mut head, 0).ok()?;
    parse_shebang(&head[..n])
}

/// Whether a path names a dynamic loader (`ld-linux-x86-64.so.2`,
/// `ld-musl-x86_64.so.1`, `ld64.so.2`, `ld.so`). PURE.
pub fn looks_like_loader(path: &[u8]) -> bool {
    let base = path.rsplit(|&b| b == b'/').next().unwrap_or(path);
    let so = base.windows(3).any(|w| w == b".so");
    so && (base.starts_with(b"ld-") || base.starts_with(b"ld64.") || base.starts_with(b"ld.so"))
}

/// `#!  /bin/sh -e\n` → `/bin/sh`. PURE.
pub fn parse_shebang(head: &[u8]) -> Option<Vec<u8>> {
    let rest = head.strip_prefix(b"#!")?;
    let line = rest.split(|&c| c == b'\n').next()?;
    let path = line
        .split(|&c| c == b' ' || c == b'\t')
        .find(|f| !f.is_empty())?;
    Some(path.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loaders_are_told_by_name() {
        for l in [
            &b"/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"[..],
            b"/var/lib/docker/overlay2/x/merged/lib/ld-musl-x86_64.so.1",
            b"/lib64/ld64.so.2",
            b"/lib/ld.so.1",
        ] {
            assert!(looks_like_loader(l), "{}", String::from_utf8_lossy(l));
        }
        for other in [
            &b"/bin/sh"[..],
            b"/tmp/ld-fake",
            b"/usr/lib/libld-x.so",
            b"/bin/ldd",
        ] {
            assert!(
                !looks_like_loader(other),
                "{}",
                String::from_utf8_lossy(other)
            );
        }
    }

    #[test]
    fn shebang_lines() {
        assert_eq!(parse_shebang(b"#!/bin/sh\necho"), Some(b"/bin/sh".to_vec()));
        assert_eq!(
            parse_shebang(b"#!  /usr/bin/env python3 -u\n"),
            Some(b"/usr/bin/env".to_vec())
        );
        assert_eq!(parse_shebang(b"#!\t/bin/bash"), Some(b"/bin/bash".to_vec()));
        assert_eq!(parse_shebang(b"\x7fELF"), None);
        assert_eq!(parse_shebang(b"#!\n"), None);
    }
}
