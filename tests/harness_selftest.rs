//! Tests of the test harness itself (`tests/common`): containers really start
//! where the sensor tests expect them (ids, cgroup paths seen in /proc), and
//! every guard cleans up, even when the test panics. The `Sensor` helper is
//! exercised against a stand-in shell script, so this passes before and
//! independently of the real daemon.

mod common;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::json;

#[test]
fn json_path_reads_nested_flat_and_indexed_fields() {
    let v = json!({
        "process": {"args": ["a", "b"], "parent": {"pid": 1}},
        "container.id": "abc",
        "orchestrator": {"resource.id": "pod"}
    });
    assert_eq!(json_path(&v, "process.args.1"), Some(&json!("b")));
    assert_eq!(json_path(&v, "process.parent.pid"), Some(&json!(1)));
    assert_eq!(json_str(&v, "container.id"), Some("abc"));
    assert_eq!(json_str(&v, "orchestrator.resource.id"), Some("pod"));
    assert_eq!(json_path(&v, "process.nope"), None);
    assert_eq!(json_path(&v, "process.args.9"), None);
}

#[test]
fn shell_quote_survives_sh() {
    let word = "it's a \"test\" $HOME\t`x` \\";
    let out = run_ok(
        Command::new("sh")
            .arg("-c")
            .arg(format!("printf %s {}", shell_quote(word))),
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), word);
}

#[test]
fn random_ids_have_runtime_shapes() {
    let u = random_uuid();
    let parts: Vec<_> = u.split('-').map(str::len).collect();
    assert_eq!(parts, [8, 4, 4, 4, 12], "{u}");
    let id = random_container_id();
    assert!(id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()));
}

#[test]
fn rootfs_has_applets_and_tool_copies_and_is_removed() {
    let root = rootfs();
    let path = root.path().to_path_buf();
    let bin = path.join("bin");
    assert!(bin.join("sh").symlink_metadata().unwrap().is_symlink());
    for tool in TOOL_COPIES {
        let meta = bin.join(tool).symlink_metadata().unwrap();
        assert!(meta.is_file(), "{tool} must be a real file, not a link");
    }
    let out = output_of_fresh(Command::new(bin.join("sh")).args(["-c", "echo ok"]));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ok\n");
    drop(root);
    assert!(!path.exists(), "rootfs dir left behind: {}", path.display());
}

/// What must be gone once a runc container guard is dropped.
struct RuncTrace {
    id: String,
    pid: u32,
    bundle: PathBuf,
    cgroup_dirs: Vec<PathBuf>,
}

fn runc_trace(c: &RuncContainer, cgroups_path: &str) -> RuncTrace {
    RuncTrace {
        id: c.id().to_string(),
        pid: c.pid(),
        bundle: c.bundle().to_path_buf(),
        cgroup_dirs: cgroup_mounts()
            .into_iter()
            .map(|m| m.join(cgroups_path.trim_start_matches('/')))
            .collect(),
    }
}

fn assert_runc_gone(t: &RuncTrace) {
    // `runc state` of this one id, not `runc list`: list stats every
    // container's state dir and fails when another test deletes its own
    // container at that moment.
    let state = Command::new("runc")
        .args(["state", &t.id])
        .output()
        .expect("run runc state");
    assert!(
        !state.status.success()
            && String::from_utf8_lossy(&state.stderr).contains("does not exist"),
        "runc container {} left behind: {state:?}",
        t.id
    );
    assert!(!pid_alive(t.pid), "container init {} still alive", t.pid);
    assert!(!t.bundle.exists(), "bundle left: {}", t.bundle.display());
    for d in &t.cgroup_dirs {
        assert!(!d.exists(), "cgroup dir left: {}", d.display());
    }
}

fn runc_ready() -> bool {
    if !require_root() {
        return false;
    }
    if !runc_available() {
        return false;
    }
    true
}

#[test]
fn runc_container_in_kubepods_cgroup_is_seen_in_proc_and_cleaned_up() {
    if !runc_ready() {
        return;
    }
    let pod = random_uuid();
    let cid = random_container_id();
    let cg = format!("/kubepods/besteffort/pod{pod}/{cid}");
    let c = RuncContainer::start(
        &cg,
        &[("io.kubernetes.cri.container-type", "container")],
        &["sleep", "1000"],
    );
    let trace = runc_trace(&c, &cg);
    assert!(pid_alive(c.pid()));
    assert_eq!(c.state()["status"], "running");
    assert_eq!(
        c.state()["annotations"]["io.kubernetes.cri.container-type"],
        "container"
    );
    let init_cgroup = proc_cgroup(c.pid());
    assert!(init_cgroup.contains(&cg), "{cg} not in:\n{init_cgroup}");

    // A process started later by `runc exec` lands in the same cgroup.
    let out = c.exec(&["cat", "/proc/self/cgroup"]);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains(&cg));

    // The container is in its own pid and mnt namespaces.
    for ns in ["pid", "mnt"] {
        let host = std::fs::read_link(format!("/proc/self/ns/{ns}")).unwrap();
        let inside = std::fs::read_link(format!("/proc/{}/ns/{ns}", c.pid())).unwrap();
        assert_ne!(host, inside, "{ns} namespace not separate");
    }

    // The tool copies exec (busybox answers "applet not found": the exec,
    // which is what the sensor sees, still happened).
    let out = c.exec(&["kubectl", "get", "pods"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("kubectl"));

    drop(c);
    assert_runc_gone(&trace);
}

#[test]
fn runc_container_with_plain_cgroup_path() {
    if !runc_ready() {
        return;
    }
    let cg = format!("/execsentry-plain/{}", unique_name("c"));
    let c = RuncContainer::start(&cg, &[], &["sleep", "1000"]);
    let trace = runc_trace(&c, &cg);
    assert!(proc_cgroup(c.pid()).contains(&cg));
    let out = c.exec(&["echo", "hello"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\n");
    drop(c);
    assert_runc_gone(&trace);
}

#[test]
fn runc_guard_cleans_up_when_the_test_panics() {
    if !runc_ready() {
        return;
    }
    let cg = format!("/execsentry-plain/{}", unique_name("p"));
    let mut trace = None;
    let result = catch_unwind(AssertUnwindSafe(|| {
        let c = RuncContainer::start(&cg, &[], &["sleep", "1000"]);
        trace = Some(runc_trace(&c, &cg));
        panic!("deliberate");
    }));
    assert!(result.is_err());
    assert_runc_gone(&trace.expect("container started"));
}

fn docker_ps_has(id: &str) -> bool {
    let out = run_ok(Command::new("docker").args([
        "ps",
        "-a",
        "-q",
        "--no-trunc",
        "--filter",
        &format!("id={id}"),
    ]));
    String::from_utf8_lossy(&out.stdout).contains(id)
}

#[test]
fn docker_container_ids_exec_tty_and_cleanup() {
    if !require_root() {
        return;
    }
    if !docker_available() {
        eprintln!("\n*** docker not available: harness falls back to runc (tested above) ***\n");
        return;
    }
    let c = DockerContainer::run(TEST_IMAGE, &["sleep", "1000"], &[]);
    let id = c.id().to_string();
    assert!(id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()));
    assert!(docker_ps_has(&id));
    let pid = c.pid();
    let cg = proc_cgroup(pid);
    assert!(cg.contains(&id), "docker id not in cgroup:\n{cg}");

    let out = c.exec(&["sh", "-c", "echo $PATH"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "/bin\n");
    let out = c.exec(&["kubectl", "version"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("kubectl"));

    // exec_tty gives the process a terminal even with no stdin here.
    let out = c.exec_tty(&["sh", "-c", "tty"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("/dev/pts/"), "no tty: {out:?}");

    drop(c);
    assert!(!docker_ps_has(&id), "docker container {id} left behind");
    assert!(!pid_alive(pid));
}

#[test]
fn docker_guard_cleans_up_when_the_test_panics() {
    if !require_root() || !docker_available() {
        return;
    }
    let mut id = String::new();
    let result = catch_unwind(AssertUnwindSafe(|| {
        let c = DockerContainer::run(TEST_IMAGE, &["sleep", "1000"], &[]);
        id = c.id().to_string();
        panic!("deliberate");
    }));
    assert!(result.is_err());
    assert!(!id.is_empty() && !docker_ps_has(&id));
}

/// A stand-in for the daemon: announces readiness on stderr, prints two JSON
/// events and one broken line, then idles until signalled.
const FAKE_SENSOR: &str = r#"
echo 'execsentry: ready (fake)' >&2
echo '{"process":{"args":["/bin/true","x"],"pid":7},"container":{"id":"c1"}}'
echo 'not json'
echo '{"event":{"kind":"event"},"process":{"args":["second"]}}'
exec sleep 1000
"#;

#[test]
fn sensor_helper_reads_json_and_stops_the_child() {
    let mut s = Sensor::spawn_cmd(Command::new("sh").args(["-c", FAKE_SENSOR]));
    let pid = s.pid();
    s.wait_ready(Duration::from_secs(5));
    // Out of order on purpose: the second event is found from history after
    // the wait for the first one read past it... and vice versa.
    let second = s
        .wait_for(
            |v| json_str(v, "process.args.0") == Some("second"),
            Duration::from_secs(5),
        )
        .expect("second event");
    assert_eq!(json_str(&second, "event.kind"), Some("event"));
    let first = s
        .wait_for(
            |v| json_str(v, "container.id") == Some("c1"),
            Duration::from_secs(1),
        )
        .expect("first event from history");
    assert_eq!(json_path(&first, "process.pid"), Some(&json!(7)));
    assert!(
        s.wait_for(|_| false, Duration::from_millis(100)).is_none(),
        "no match must time out"
    );
    assert_eq!(s.non_json_lines(), vec!["not json".to_string()]);
    assert!(s.stderr().contains("ready"));
    drop(s);
    assert!(!pid_alive(pid), "sensor stand-in {pid} still alive");
}

#[test]
fn sensor_helper_reports_an_early_exit_with_its_stderr() {
    let result = catch_unwind(AssertUnwindSafe(|| {
        let mut s = Sensor::spawn_cmd(Command::new("sh").args([
            "-c",
            "echo 'execsentry: self-check failed: no CAP_NET_ADMIN' >&2; exit 3",
        ]));
        s.wait_ready(Duration::from_secs(5));
    }));
    let msg = result.expect_err("wait_ready must panic");
    let msg = msg.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(msg.contains("CAP_NET_ADMIN"), "{msg}");
}

#[test]
fn sensor_helper_stop_returns_the_exit_status() {
    let mut s = Sensor::spawn_cmd(Command::new("sh").args([
        "-c",
        "trap 'exit 0' TERM; echo 'execsentry: ready' >&2; while :; do sleep 0.05; done",
    ]));
    s.wait_ready(Duration::from_secs(5));
    let status = s.stop(Duration::from_secs(3)).expect("exited");
    assert!(status.success(), "{status}");
}
