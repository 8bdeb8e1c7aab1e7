//! The proc connector against the running kernel (root only; skipped with a
//! message otherwise): a spawned `/bin/true` is seen exec'ing, and a fork
//! without exec shows up as Fork then Exit.

use std::time::{Duration, Instant};

use execsentry::netlink::wire::{self, KernelEvent};
use execsentry::netlink::{ProcConnector, is_overrun};
use mio::{Events, Interest, Poll, Token};

mod common;

/// `test` is named by the skip itself (libtest names the thread).
fn root_or_skip(_test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    common::skip("needs root (CAP_NET_ADMIN) for the proc connector")
}

/// Polls `conn` until `pred` has seen what it wants (returns true) or 2 s pass.
fn wait_for(conn: &mut ProcConnector, mut pred: impl FnMut(KernelEvent) -> bool) -> bool {
    const TOKEN: Token = Token(0);
    let mut poll = Poll::new().expect("poll");
    poll.registry()
        .register(conn, TOKEN, Interest::READABLE)
        .expect("register");
    let mut events = Events::with_capacity(8);
    let mut buf = vec![0u8; 64 * 1024];
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut found = false;
    while !found {
        let Some(left) = deadline.checked_duration_since(Instant::now()) else {
            break;
        };
        poll.poll(&mut events, Some(left)).expect("poll");
        loop {
            match conn.recv(&mut buf) {
                Ok(n) => {
                    for ev in wire::decode(&buf[..n]).flatten() {
                        found |= pred(ev);
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if is_overrun(&e) => eprintln!("overrun (ENOBUFS), continuing"),
                Err(e) => panic!("recv: {e}"),
            }
        }
    }
    poll.registry().deregister(conn).expect("deregister");
    found
}

#[test]
fn sees_exec_of_bin_true() {
    if !root_or_skip("sees_exec_of_bin_true") {
        return;
    }
    let mut conn = ProcConnector::open().expect("open proc connector");
    assert!(conn.rcvbuf() > 0);
    let mut child = std::process::Command::new("/bin/true")
        .spawn()
        .expect("spawn /bin/true");
    let pid = child.id();
    let (mut acked, mut execd) = (false, false);
    wait_for(&mut conn, |ev| {
        match ev {
            // Concurrent tests subscribe too; any successful ack will do.
            KernelEvent::Ack { err: 0 } => acked = true,
            KernelEvent::Exec { tgid, .. } if tgid == pid => execd = true,
            _ => {}
        }
        acked && execd
    });
    child.wait().expect("wait");
    assert!(execd, "no Exec event for /bin/true (pid {pid}) within 2 s");
    assert!(acked, "no successful ack of PROC_CN_MCAST_LISTEN");
}

/// Before Linux 6.6 the proc connector needs CAP_NET_ADMIN and `open` must
/// say so; since 6.6 the kernel lets any user in the initial namespaces
/// listen, and `open` succeeds.
#[test]
fn without_cap_net_admin_open_succeeds_or_says_so() {
    if !root_or_skip("without_cap_net_admin_open_succeeds_or_says_so") {
        return;
    }
    // Capabilities are per thread: drop CAP_NET_ADMIN in a scratch thread
    // only, so the other tests keep it.
    let res = std::thread::spawn(|| {
        caps::drop(
            None,
            caps::CapSet::Effective,
            caps::Capability::CAP_NET_ADMIN,
        )
        .expect("drop CAP_NET_ADMIN");
        ProcConnector::open().map(|_| ())
    })
    .join()
    .expect("thread");
    match res {
        Ok(()) => eprintln!("kernel allows unprivileged proc connector listeners (>= 6.6)"),
        Err(err) => assert!(
            err.to_string().contains("needs CAP_NET_ADMIN"),
            "unclear error: {err}"
        ),
    }
}

#[test]
fn fork_without_exec_shows_fork_then_exit() {
    if !root_or_skip("fork_without_exec_shows_fork_then_exit") {
        return;
    }
    let mut conn = ProcConnector::open().expect("open proc connector");
    let me = std::process::id();
    // SAFETY: the child only calls the async-signal-safe `_exit`.
    let child = match unsafe { nix::unistd::fork() }.expect("fork") {
        nix::unistd::ForkResult::Child => unsafe { libc::_exit(3) },
        nix::unistd::ForkResult::Parent { child } => child.as_raw() as u32,
    };
    let mut forked = false;
    let mut exec_seen = false;
    let mut exit: Option<KernelEvent> = None;
    let done = wait_for(&mut conn, |ev| {
        match ev {
            KernelEvent::Fork {
                parent_tgid,
                child_pid,
                child_tgid,
                ..
            } if child_tgid == child => {
                assert_eq!(parent_tgid, me);
                assert_eq!(child_pid, child);
                forked = true;
            }
            KernelEvent::Exec { tgid, .. } if tgid == child => exec_seen = true,
            KernelEvent::Exit { tgid, .. } if tgid == child => {
                assert!(forked, "Exit before Fork");
                exit = Some(ev);
            }
            _ => {}
        }
        exit.is_some()
    });
    nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(child as i32), None).expect("waitpid");
    assert!(done, "no Fork+Exit for child {child} within 2 s");
    assert!(!exec_seen, "the child never exec'd");
    match exit {
        Some(KernelEvent::Exit {
            exit_code,
            parent_tgid,
            ..
        }) => {
            // exit_code is the wait status: _exit(3) → 3 << 8.
            assert_eq!(exit_code, 3 << 8);
            assert_eq!(parent_tgid, me);
        }
        other => panic!("unexpected {other:?}"),
    }
}
