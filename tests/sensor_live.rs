//! The sensor core against the real kernel and real containers: exact argv,
//! host vs. container context (Docker, runc with CRI-style and plain cgroup
//! paths), the process table across fork/exit, and the self-check.
//! Needs root; skipped loudly otherwise.

mod common;

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::process::Command;
use std::time::Duration;

use common::events::{self, arg_bytes, args_of, is_exec_with_arg};
use common::{DockerContainer, Sensor, TEST_IMAGE, docker_available};
use common::{RuncContainer, runc_available};
use common::{json_path, json_str, random_container_id, random_uuid, rules_dir, unique_name};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(10);

fn sensor() -> Sensor {
    events::sensor("auto", &[])
}

#[test]
fn host_exec_keeps_exact_argv_and_is_not_a_container() {
    if !common::require_root() {
        return;
    }
    for capture in ["proc", "fanotify"] {
        host_exec_keeps_exact_argv(capture);
    }
}

fn host_exec_keeps_exact_argv(capture: &str) {
    let s = events::sensor(capture, &[]);
    let marker = unique_name("argv");
    let big = "A".repeat(100 * 1024);
    let raw_args: Vec<Vec<u8>> = vec![
        b"-c".to_vec(),
        b"sleep 0.5".to_vec(),
        marker.clone().into_bytes(),
        b"with space".to_vec(),
        b"tab\there".to_vec(),
        b"new\nline".to_vec(),
        "utf8 \u{e9}\u{1f600} \u{202e}".as_bytes().to_vec(),
        b"bad \xff\xfe utf8 \\x41".to_vec(),
        big.clone().into_bytes(),
    ];
    let status = Command::new("/bin/sh")
        .args(raw_args.iter().map(|a| OsString::from_vec(a.clone())))
        .status()
        .expect("run /bin/sh");
    assert!(status.success());

    let ev = s
        .wait_for(|v| is_exec_with_arg(v, &marker), WAIT)
        .unwrap_or_else(|| panic!("no exec event with {marker}; stderr:\n{}", s.stderr()));
    let args = args_of(&ev);
    assert_eq!(args.len(), raw_args.len() + 1, "argv0 plus every argument");
    assert_eq!(args[0], "/bin/sh");
    for (i, want) in raw_args.iter().enumerate() {
        assert_eq!(&arg_bytes(&ev, i + 1), want, "argument {}", i + 1);
    }
    assert_eq!(json_path(&ev, "process.args_count"), Some(&Value::from(10)));
    assert_eq!(
        json_path(&ev, "execsentry.args_complete"),
        Some(&Value::Bool(true))
    );
    assert_eq!(json_str(&ev, "execsentry.args_source"), Some(capture));
    assert!(json_path(&ev, "container").is_none(), "host process: {ev}");
    // A host process has a host session's entry leader, never a container.
    assert_ne!(
        json_str(&ev, "process.entry_leader.entry_meta.type"),
        Some("container")
    );
    assert_eq!(json_str(&ev, "host.os.type"), Some("linux"));
    assert_eq!(json_str(&ev, "event.action"), Some("exec"));
    assert!(json_str(&ev, "process.entity_id").is_some_and(|s| !s.is_empty()));
    // The parent is this test process.
    assert_eq!(
        json_path(&ev, "process.parent.pid").and_then(Value::as_u64),
        Some(u64::from(std::process::id()))
    );
}

/// A process that forked without exec, then exited before its child
/// exec'd: the child's event still names it (from the table, within the
/// grace period) although /proc already says the child was reparented.
#[test]
fn fork_and_exit_are_tracked_in_the_table() {
    if !common::require_root() {
        return;
    }
    let s = sensor();
    let marker = unique_name("fork");
    let script = format!("(sleep 0.3; exec /bin/sleep 0.2 {marker}) & echo $$; exit 0");
    let out = Command::new("/bin/sh")
        .args(["-c", &script])
        .output()
        .expect("run sh");
    let sh_pid: u64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    let ev = s
        .wait_for(|v| is_exec_with_arg(v, &marker), WAIT)
        .expect("exec event of the grandchild");
    // The subshell is a fork of sh without exec; its parent is sh, which
    // exited before the exec.
    let parent_pid = json_path(&ev, "process.parent.pid").and_then(Value::as_u64);
    assert_eq!(parent_pid, Some(sh_pid), "{ev}");
    assert_eq!(json_str(&ev, "process.parent.name"), Some("sh"), "{ev}");
    assert_eq!(json_str(&ev, "process.name"), Some("sleep"));
}

/// proc mode reads /proc after the kernel's notification, so a process
/// that exits within microseconds can be gone. Retry the short-lived exec
/// until the sensor caught it alive (fanotify mode has no such race).
fn retry_exec<F: Fn(&str)>(
    s: &Sensor,
    attempts: usize,
    run: F,
    want: impl Fn(&Value) -> bool,
) -> Value {
    for i in 0..attempts {
        let marker = unique_name("try");
        run(&marker);
        if let Some(v) = s.wait_for(
            |v| is_exec_with_arg(v, &marker) && want(v),
            Duration::from_secs(2),
        ) {
            eprintln!("caught after {} attempt(s)", i + 1);
            return v;
        }
    }
    panic!(
        "no matching event after {attempts} attempts; stderr:\n{}",
        s.stderr()
    );
}

#[test]
fn docker_exec_is_seen_in_its_container() {
    if !common::require_root() {
        return;
    }
    if !docker_available() {
        eprintln!("docker NOT available: covered by the runc tests instead");
        return;
    }
    let s = sensor();
    let c = DockerContainer::run(TEST_IMAGE, &["sleep", "300"], &[]);
    assert!(c.wait_running(WAIT));
    let ev = retry_exec(
        &s,
        30,
        |m| {
            c.exec(&["kubectl", "get", "pods", m]);
        },
        |v| json_path(v, "container").is_some(),
    );
    assert_eq!(json_str(&ev, "container.runtime"), Some("docker"), "{ev}");
    assert_eq!(json_str(&ev, "container.id"), Some(c.id()));
    assert_eq!(
        json_str(&ev, "process.entry_leader.entry_meta.type"),
        Some("container")
    );
    assert_eq!(json_str(&ev, "process.name"), Some("kubectl"));
}

#[test]
fn runc_with_cri_cgroup_path_is_containerd_with_pod() {
    if !common::require_root() || !runc_available() {
        eprintln!("SKIP: runc not available");
        return;
    }
    let s = sensor();
    let pod = random_uuid();
    let id = random_container_id();
    let cgroup = format!("/kubepods/besteffort/pod{pod}/{id}");
    let marker = unique_name("cri");
    let c = RuncContainer::start(&cgroup, &[], &["sh", "-c", "sleep 300; true", &marker]);
    // The container's init is exec'd by runc: sleep lives, so it is caught.
    let mut s = s;
    let Some(ev) = s.wait_for(|v| is_exec_with_arg(v, &marker), WAIT) else {
        panic!(
            "no event for runc init; exit {:?}, stderr:\n{}",
            s.wait_exit(Duration::from_millis(100)),
            s.stderr()
        );
    };
    assert_eq!(
        json_str(&ev, "container.runtime"),
        Some("containerd"),
        "{ev}"
    );
    assert_eq!(json_str(&ev, "container.id"), Some(id.as_str()));
    assert_eq!(json_str(&ev, "orchestrator.type"), Some("kubernetes"));
    assert_eq!(
        json_str(&ev, "orchestrator.resource.id"),
        Some(pod.as_str())
    );
    assert_eq!(
        json_str(&ev, "process.entry_leader.entry_meta.type"),
        Some("container")
    );
    drop(c);
}

#[test]
fn runc_with_unknown_cgroup_path_is_still_a_container() {
    if !common::require_root() || !runc_available() {
        eprintln!("SKIP: runc not available");
        return;
    }
    let s = sensor();
    let marker = unique_name("plain");
    let path = format!("/execsentry-test/{}", unique_name("grp"));
    let _c = RuncContainer::start(&path, &[], &["sh", "-c", "sleep 300; true", &marker]);
    let ev = s
        .wait_for(|v| is_exec_with_arg(v, &marker), WAIT)
        .unwrap_or_else(|| panic!("no event; stderr:\n{}", s.stderr()));
    assert_eq!(json_str(&ev, "container.runtime"), Some("unknown"), "{ev}");
    assert_eq!(
        json_str(&ev, "process.entry_leader.entry_meta.type"),
        Some("container")
    );
}

fn sensor_cmd(wrapper: &[&str]) -> Command {
    let rules = rules_dir();
    let mut cmd = Command::new(wrapper[0]);
    cmd.args(&wrapper[1..]).args([
        Sensor::binary(),
        "run",
        "--output",
        "stdout",
        "--rules",
        rules.to_str().unwrap(),
    ]);
    cmd
}

/// Before Linux 6.6 the proc connector needs CAP_NET_ADMIN; since 6.6 the
/// kernel accepts unprivileged listeners. Either way the sensor must not sit
/// deaf: it is ready (events do arrive) or it exits 3 naming the capability.
#[test]
fn without_cap_net_admin_it_works_or_fails_naming_the_capability() {
    if !common::require_root() {
        return;
    }
    let mut s = Sensor::spawn_cmd(&mut sensor_cmd(&[
        "setpriv",
        "--bounding-set=-net_admin",
        "--inh-caps=-net_admin",
        "--",
    ]));
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let err = s.stderr();
        if err.contains("execsentry: ready") {
            eprintln!("this kernel lets a listener without CAP_NET_ADMIN subscribe");
            break;
        }
        if let Some(status) = s.wait_exit(Duration::from_millis(100)) {
            assert_eq!(status.code(), Some(3), "setup failures exit 3: {err}");
            assert!(s.stderr().contains("CAP_NET_ADMIN"), "{}", s.stderr());
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "neither ready nor failed: {err}"
        );
    }
}

/// The kernel silently ignores subscriptions from outside the initial pid
/// namespace: the sensor must say so and exit, not sit deaf.
#[test]
fn self_check_fails_cleanly_outside_the_host_pid_namespace() {
    if !common::require_root() {
        return;
    }
    let mut s = Sensor::spawn_cmd(&mut sensor_cmd(&["unshare", "--pid", "--fork", "--"]));
    let status = s
        .wait_exit(WAIT)
        .expect("the sensor must exit, not sit deaf");
    assert_eq!(
        status.code(),
        Some(3),
        "setup failures exit 3: {}",
        s.stderr()
    );
    let err = s.stderr();
    assert!(err.contains("namespace"), "stderr names the cause: {err}");
    assert!(!err.contains("ready"), "{err}");
}
