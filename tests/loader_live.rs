//! One wait per exec in fanotify mode: the dynamic loader's own exec event
//! is ignored after the first, a script's interpreter still raises its
//! own, and a direct `ld.so prog` exec is still reported (from `/proc`) and
//! counted.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{Sensor, json_str, status_json, unique_name};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(10);
const LOADER: &str = "/lib64/ld-linux-x86-64.so.2";

fn counter(st: &Value, name: &str) -> u64 {
    st["counters"][name]
        .as_u64()
        .unwrap_or_else(|| panic!("{name} in {st}"))
}

#[test]
fn the_loaders_exec_event_is_ignored_and_direct_loader_execs_are_flagged() {
    if !common::require_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let control = dir.path().join("control.sock");
    let mut s = Sensor::spawn_cmd(Sensor::run_command("fanotify", &control).arg("--events"));
    s.wait_ready(WAIT);
    for _ in 0..3 {
        let _ = Command::new("/bin/true").status();
    }
    std::thread::sleep(Duration::from_millis(300));
    let before = status_json(&control);
    // Where the kernel refuses a mark on the memfd filesystem, a memfd
    // exec (runc) is seen only through its loader's open: loaders then keep
    // their events, and every exec waits twice.
    let ignoring = counter(&before, "fanotify.memfd_marked") == 1;
    if ignoring {
        assert!(counter(&before, "fanotify.loader_marks") >= 1, "{before}");
    } else {
        assert_eq!(counter(&before, "fanotify.loader_marks"), 0, "{before}");
    }
    let extra = counter(&before, "fanotify.extra_opens");

    let marker = unique_name("dyn");
    for i in 0..20 {
        let _ = Command::new("/bin/true")
            .arg(format!("{marker}-{i}"))
            .status();
    }
    // A script: its interpreter's open is not the loader and stays seen.
    let script = dir.path().join("s.sh");
    std::fs::write(&script, "#!/bin/sh\nexit 0\n").unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let _ = Command::new(&script).arg(&marker).status();
    let direct = unique_name("direct");
    let _ = Command::new(LOADER)
        .args(["/bin/sh", "-c", "sleep 0.3", &direct])
        .status();
    std::thread::sleep(Duration::from_millis(300));

    for i in 0..20 {
        let want = format!("{marker}-{i}");
        let ev = s
            .wait_for(
                |v| json_str(v, "process.args.1") == Some(want.as_str()),
                WAIT,
            )
            .unwrap_or_else(|| panic!("exec {i} not seen: {}", s.stderr()));
        assert_eq!(json_str(&ev, "execsentry.args_source"), Some("fanotify"));
    }
    let scripted = s
        .wait_for(
            |v| {
                json_str(v, "process.command_line")
                    .is_some_and(|c| c.contains("s.sh") && c.ends_with(marker.as_str()))
            },
            WAIT,
        )
        .expect("the script's exec");
    assert_eq!(
        json_str(&scripted, "execsentry.args_source"),
        Some("fanotify")
    );
    let by_loader = s
        .wait_for(
            |v| json_str(v, "process.command_line").is_some_and(|c| c.contains(&direct)),
            WAIT,
        )
        .expect("the direct loader exec is still reported");
    let want_source = if ignoring { "proc" } else { "fanotify" };
    assert_eq!(
        json_str(&by_loader, "execsentry.args_source"),
        Some(want_source)
    );

    let after = status_json(&control);
    let extra = counter(&after, "fanotify.extra_opens") - extra;
    if ignoring {
        // Twenty dynamically linked execs, none of whose loader opens
        // reached us; the script's interpreter was one extra open of its own.
        assert!(extra <= 2, "{before}\n{after}");
        assert!(counter(&after, "loader_execs") >= 1, "{after}");
    } else {
        assert!(
            extra >= 20,
            "every loader open still seen: {before}\n{after}"
        );
    }
    s.stop(Duration::from_secs(5));
}
