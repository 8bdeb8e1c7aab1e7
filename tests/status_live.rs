//! `execsentry status` against the running daemon, the capabilities it
//! keeps, and the tamper alerts it raises when someone goes for it.
//! Needs root.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{Sensor, json_str, status_json};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(10);

fn sensor(control: &std::path::Path, capture: &str) -> Sensor {
    let mut s = Sensor::spawn_cmd(&mut Sensor::run_command(capture, control));
    s.wait_ready(WAIT);
    s
}

/// Bits of a `Cap*:` line of /proc/<pid>/status.
fn cap_mask(pid: u32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = text.lines().find(|l| l.starts_with(field)).unwrap();
    u64::from_str_radix(line.split_whitespace().nth(1).unwrap(), 16).unwrap()
}

const CAP_DAC_READ_SEARCH: u64 = 1 << 2;
const CAP_SYS_PTRACE: u64 = 1 << 19;
const CAP_SYS_ADMIN: u64 = 1 << 21;

#[test]
fn status_reports_capture_counters_and_kept_capabilities() {
    if !common::require_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let control = dir.path().join("control.sock");
    let s = sensor(&control, "fanotify");
    let _ = Command::new("/bin/true").status();
    std::thread::sleep(Duration::from_millis(300));
    let st = status_json(&control);
    assert_eq!(st["capture"], "fanotify");
    assert_eq!(st["features"]["fanotify"], "active");
    assert_eq!(st["features"]["proc_connector"], true);
    assert!(st["rules"].as_u64().unwrap() >= 6);
    assert!(st["counters"]["execs"].as_u64().unwrap() >= 1);
    assert!(st["counters"].get("overruns").is_some());
    assert!(st["counters"].get("fanotify.watchdog_answers").is_some());
    assert!(st["counters"].get("stdout.dropped").is_some());

    // Only what the sensor needs after set-up: reading other processes'
    // /proc, and CAP_SYS_ADMIN to mark filesystems mounted later.
    let want = CAP_DAC_READ_SEARCH | CAP_SYS_PTRACE | CAP_SYS_ADMIN;
    assert_eq!(cap_mask(s.pid(), "CapEff:"), want);
    assert_eq!(cap_mask(s.pid(), "CapPrm:"), want);
    assert_eq!(cap_mask(s.pid(), "CapBnd:"), want);
    assert_eq!(cap_mask(s.pid(), "CapInh:"), 0);
    assert_eq!(cap_mask(s.pid(), "CapAmb:"), 0);
    // Capabilities are per thread: every thread keeps `want`; the fanotify
    // watchdog, a process of its own, keeps none.
    let field = |status: &str, name: &str| {
        let line = status.lines().find(|l| l.starts_with(name)).unwrap();
        u64::from_str_radix(line.split_whitespace().nth(1).unwrap(), 16).unwrap()
    };
    let mut threads = 0;
    for task in std::fs::read_dir(format!("/proc/{}/task", s.pid())).unwrap() {
        let status = std::fs::read_to_string(task.unwrap().path().join("status")).unwrap();
        threads += 1;
        assert_eq!(field(&status, "CapEff:"), want, "{status}");
        assert_eq!(field(&status, "CapPrm:"), want, "{status}");
    }
    // The loop, and the fanotify handshake's own thread (no enforcement).
    assert_eq!(threads, 2, "the loop and the fanotify thread");
    let wd = common::faults::watchdog_of(s.pid());
    let status = std::fs::read_to_string(format!("/proc/{wd}/status")).unwrap();
    for set in ["CapEff:", "CapPrm:", "CapBnd:", "CapInh:", "CapAmb:"] {
        assert_eq!(field(&status, set), 0, "{status}");
    }
    let caps: Vec<&str> = st["capabilities"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(
        caps,
        ["CAP_DAC_READ_SEARCH", "CAP_SYS_ADMIN", "CAP_SYS_PTRACE"]
    );

    let human = Command::new(Sensor::binary())
        .args(["status", "--socket", control.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(text.contains("capture:       fanotify"), "{text}");
    assert!(text.contains("losses:"), "{text}");

    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&control).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "the control socket is root-only");
}

#[test]
fn proc_mode_keeps_no_cap_sys_admin() {
    if !common::require_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let s = sensor(&dir.path().join("c.sock"), "proc");
    assert_eq!(
        cap_mask(s.pid(), "CapEff:"),
        CAP_DAC_READ_SEARCH | CAP_SYS_PTRACE
    );
}

#[test]
fn a_ptrace_attach_to_the_sensor_raises_a_tamper_alert() {
    if !common::require_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let s = sensor(&dir.path().join("c.sock"), "proc");
    let pid = s.pid() as libc::pid_t;
    // SAFETY: PTRACE_SEIZE/DETACH on a child we own; no memory is passed.
    let rc = unsafe { libc::ptrace(libc::PTRACE_SEIZE, pid, 0, 0) };
    assert_eq!(rc, 0, "seize: {}", std::io::Error::last_os_error());
    // SAFETY: as above. Interrupt so the tracee stops, then let it go.
    unsafe {
        libc::ptrace(libc::PTRACE_INTERRUPT, pid, 0, 0);
        let mut status = 0;
        libc::waitpid(pid, &mut status, libc::__WALL);
        libc::ptrace(libc::PTRACE_DETACH, pid, 0, 0);
    }
    let alert = s
        .wait_for(
            |v| json_str(v, "rule.id") == Some("execsentry-tamper-ptrace"),
            WAIT,
        )
        .unwrap_or_else(|| panic!("no tamper alert; stderr:\n{}", s.stderr()));
    assert_eq!(
        alert["process"]["pid"].as_u64(),
        Some(u64::from(std::process::id()))
    );
    assert_eq!(json_str(&alert, "event.kind"), Some("alert"));
}

#[test]
fn sigterm_from_a_process_raises_a_tamper_alert_then_a_clean_exit() {
    if !common::require_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut s = sensor(&dir.path().join("c.sock"), "proc");
    let st = Command::new("/bin/kill")
        .args(["-TERM", &s.pid().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let status = s.wait_exit(WAIT).expect("exits on SIGTERM");
    assert!(status.success(), "SIGTERM is a clean exit: {status:?}");
    let alert = s
        .wait_for(
            |v| json_str(v, "rule.id") == Some("execsentry-tamper-signal"),
            Duration::from_secs(2),
        )
        .unwrap_or_else(|| panic!("no tamper alert; stderr:\n{}", s.stderr()));
    assert!(
        json_str(&alert, "message").is_some_and(|m| m.contains("SIGTERM")),
        "{alert}"
    );
}
