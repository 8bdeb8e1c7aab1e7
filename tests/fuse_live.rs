//! The loop must not be stalled by a monitored process (issue 16): a real
//! FUSE filesystem (`tests/support/stallfs.py`, mounted with fusermount3)
//! serves a static busybox and a `#!/bin/sh` script, and never answers a
//! request made by any thread of the sensor, as a hostile server would.
//! Everyone else's requests (the exec, the kernel loading the binary) are
//! served, so the kernel is never stuck.
//!
//! In both capture modes: the execs from the FUSE mount complete and are
//! reported, the busybox one marked `execsentry.stalled: ["identity"]`; an
//! exec of a host program (/bin/sh) whose argv lies in untouched pages of a FUSE file
//! completes and is reported (fanotify leaves those pages alone); a
//! storm of host execs started while the sensor's read is stalled is
//! reported in full (argv, identity hash); `status` counts the stall; and
//! the server's log shows that the loop thread itself never sent the
//! filesystem a request (only the identity worker did, and it is the one
//! left waiting). Needs root and fuse3; cleans up (server killed, mount
//! lazily unmounted) on every exit path.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use common::events::{args_of, strings_at};
use common::{Sensor, json_path, json_str, repo_root, status_json, unique_name};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(15);
/// Host execs started while the sensor's FUSE read is stalled.
const STORM: usize = 100;

/// The two tests mount and mark filesystems: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// The stalling FUSE server and its mount; killed and unmounted on drop.
struct StallFs {
    server: Child,
    mnt: PathBuf,
    log: PathBuf,
}

impl StallFs {
    fn start(dir: &Path, stall_pid: u32) -> StallFs {
        let mnt = dir.join("mnt");
        std::fs::create_dir_all(&mnt).unwrap();
        let log = dir.join("stallfs.log");
        let server = Command::new("python3")
            .arg(repo_root().join("tests/support/stallfs.py"))
            .arg(&mnt)
            .arg("--exe")
            .arg(common::busybox())
            .arg("--stall-pid")
            .arg(stall_pid.to_string())
            .arg("--log")
            .arg(&log)
            .stdin(Stdio::null())
            .spawn()
            .expect("python3 tests/support/stallfs.py");
        let fs = StallFs { server, mnt, log };
        let deadline = Instant::now() + WAIT;
        while !fs.log().contains("MOUNTED") {
            assert!(Instant::now() < deadline, "stallfs did not mount");
            thread::sleep(Duration::from_millis(20));
        }
        fs
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `(opcode, tid, tgid, stalled)` of every request the server got.
    fn requests(&self) -> Vec<(String, u32, u32, bool)> {
        self.log()
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split(' ').collect();
                (f.len() == 5).then(|| {
                    (
                        f[0].to_string(),
                        f[2].parse().unwrap_or(0),
                        f[3].parse().unwrap_or(0),
                        f[4] == "STALLED",
                    )
                })
            })
            .collect()
    }
}

impl Drop for StallFs {
    fn drop(&mut self) {
        // Killing the server aborts the connection: every stalled request
        // fails, so the sensor's worker is released before the sensor stops.
        let _ = self.server.kill();
        let _ = self.server.wait();
        let _ = Command::new("fusermount3")
            .arg("-u")
            .arg("-z")
            .arg(&self.mnt)
            .stderr(Stdio::null())
            .status();
    }
}

fn counter(st: &Value, name: &str) -> u64 {
    st["counters"][name].as_u64().unwrap_or(0)
}

fn is_event_with(v: &Value, marker: &str) -> bool {
    json_str(v, "event.kind") == Some("event") && args_of(v).iter().any(|a| a == marker)
}

fn stalled_marker(v: &Value) -> Vec<String> {
    strings_at(v, "execsentry.stalled")
}

fn loop_is_not_stalled_by_fuse(capture: &str) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !common::require_root()
        || !common::require_tool("fusermount3", "-V")
        || !common::require_tool("python3", "--version")
    {
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("execsentry-fuse.")
        .tempdir()
        .unwrap();
    let cfg = dir.path().join("execsentry.toml");
    std::fs::write(&cfg, "[identity]\nhash = true\n").unwrap();
    let control = dir.path().join("control.sock");
    let mut sensor = Sensor::spawn_cmd(
        Sensor::run_command(capture, &control)
            .arg("--events")
            .arg("--config")
            .arg(&cfg),
    );
    sensor.wait_ready(WAIT);
    let sensor_pid = sensor.pid();
    // Declared after the sensor: dropped (server killed) first.
    let fs = StallFs::start(dir.path(), sensor_pid);

    if capture == "fanotify" {
        // The mount table changed: the capture re-read it and left the
        // FUSE filesystem unmarked (marking it would make every read of
        // the group fd open its files: a request from the loop).
        let deadline = Instant::now() + WAIT;
        while counter(&status_json(&control), "fanotify.slow_unmarked") == 0 {
            assert!(Instant::now() < deadline, "FUSE mount never counted");
            thread::sleep(Duration::from_millis(50));
        }
    }

    // The exec from FUSE completes (its requests are served) and is
    // reported without its identity, marked.
    let first = unique_name("fuse-first");
    let t = Instant::now();
    // It lingers a second, so its /proc/<pid>/exe is there to be read.
    let st = Command::new(fs.mnt.join("busybox"))
        .args(["sh", "-c", "sleep 1", &first])
        .status()
        .unwrap();
    let took = t.elapsed();
    assert!(st.success(), "the FUSE exec failed: {st}");
    assert!(
        took < Duration::from_secs(10),
        "the FUSE exec took {took:?}"
    );
    let ev = sensor
        .wait_for(|v| is_event_with(v, &first), WAIT)
        .unwrap_or_else(|| panic!("no event for the FUSE exec; stderr:\n{}", sensor.stderr()));
    assert_eq!(stalled_marker(&ev), ["identity"], "{ev}");
    assert!(
        json_str(&ev, "process.executable").is_some_and(|e| e.ends_with("/mnt/busybox")),
        "{ev}"
    );
    assert!(json_path(&ev, "process.hash").is_none(), "{ev}");
    let worker_stalled = || {
        fs.requests()
            .iter()
            .any(|(_, tid, tgid, stalled)| *stalled && *tgid == sensor_pid && *tid != sensor_pid)
    };
    assert!(
        worker_stalled(),
        "the worker's read never reached the server:\n{}",
        fs.log()
    );

    // While the worker is still stuck: another FUSE exec (refused at once,
    // counted and marked) and a script from the FUSE mount.
    let second = unique_name("fuse-second");
    let mut child = Command::new(fs.mnt.join("busybox"))
        .args(["sh", "-c", "sleep 1", &second])
        .spawn()
        .unwrap();
    let script = unique_name("fuse-script");
    let st = Command::new(fs.mnt.join("script.sh"))
        .arg(&script)
        .status()
        .unwrap();
    assert!(st.success(), "the FUSE script failed: {st}");
    let ev = sensor
        .wait_for(|v| is_event_with(v, &second), WAIT)
        .expect("no event for the second FUSE exec");
    assert_eq!(stalled_marker(&ev), ["identity"], "{ev}");
    assert!(
        sensor
            .wait_for(|v| is_event_with(v, &script), WAIT)
            .is_some(),
        "no event for the FUSE script"
    );
    let _ = child.wait();

    // An exec whose argv lies in pages of a FUSE file nobody touched yet:
    // reading it would fault them in with a request from the loop. It is
    // left to the kernel (which faults them in as the exec'ing task), and
    // the exec is reported with argv from /proc.
    let t = Instant::now();
    let st = Command::new("python3")
        .arg(repo_root().join("tests/support/stallfs.py"))
        .arg("exec-argv")
        .arg(fs.mnt.join("argv.bin"))
        .status()
        .unwrap();
    assert!(st.success(), "the exec with argv on FUSE failed: {st}");
    let argv_took = t.elapsed();
    assert!(
        argv_took < Duration::from_secs(10),
        "the exec with argv on FUSE took {argv_took:?}"
    );
    let ev = sensor
        .wait_for(|v| is_event_with(v, "argv-from-fuse"), WAIT)
        .expect("no event for the exec with argv on FUSE");
    assert_eq!(
        args_of(&ev),
        ["/bin/sh", "-c", "sleep 1", "argv-from-fuse"],
        "{ev}"
    );
    if capture == "fanotify" {
        assert_ne!(
            json_str(&ev, "execsentry.args_source"),
            Some("fanotify"),
            "{ev}"
        );
        let st = status_json(&control);
        assert!(
            counter(&st, "fanotify.argv_slow_pages") >= 1,
            "{}",
            st["counters"]
        );
    }

    // A storm of host execs, all while the worker still waits: every one
    // reported with its argv and its identity (hash), none marked.
    let storm = unique_name("storm");
    let markers: Vec<String> = (0..STORM).map(|i| format!("{storm}-{i}")).collect();
    let t = Instant::now();
    let mut children: Vec<Child> = markers
        .iter()
        .map(|m| {
            Command::new("/bin/sh")
                .args(["-c", "sleep 0.5", m])
                .spawn()
                .unwrap()
        })
        .collect();
    for c in &mut children {
        assert!(c.wait().unwrap().success());
    }
    let storm_took = t.elapsed();
    let mut from_capture = 0;
    for m in &markers {
        let ev = sensor
            .wait_for(|v| is_event_with(v, m), WAIT)
            .unwrap_or_else(|| panic!("no event for {m}; stderr:\n{}", sensor.stderr()));
        assert_eq!(
            args_of(&ev),
            ["/bin/sh", "-c", "sleep 0.5", m.as_str()],
            "{ev}"
        );
        assert!(stalled_marker(&ev).is_empty(), "{ev}");
        assert!(
            json_str(&ev, "process.hash.sha256").is_some_and(|h| h.len() == 64),
            "a host exec lost its identity while the worker was stalled: {ev}"
        );
        if json_str(&ev, "execsentry.args_source") == Some("fanotify") {
            from_capture += 1;
        }
    }
    if capture == "fanotify" {
        // The loop kept reading the group: argv came from the capture, not
        // from the watchdog's blind answers (a few may be deferred misses).
        assert!(
            from_capture * 10 >= STORM * 9,
            "only {from_capture}/{STORM} storm execs were captured"
        );
    }
    assert!(worker_stalled(), "the worker was released early");

    // The worker thread keeps CAP_DAC_READ_SEARCH alone (to read
    // executables whose mode grants no read), whatever the loop keeps.
    let mut workers = 0;
    for task in std::fs::read_dir(format!("/proc/{sensor_pid}/task")).unwrap() {
        let task = task.unwrap().path();
        let comm = std::fs::read_to_string(task.join("comm")).unwrap_or_default();
        if comm.trim() != "identity-slow" {
            continue;
        }
        workers += 1;
        let status = std::fs::read_to_string(task.join("status")).unwrap();
        for set in ["CapEff:", "CapPrm:"] {
            let line = status.lines().find(|l| l.starts_with(set)).unwrap();
            let mask = u64::from_str_radix(line.split_whitespace().nth(1).unwrap(), 16).unwrap();
            assert_eq!(mask, 1 << 2, "worker {set} {line}");
        }
        assert!(status.contains("NoNewPrivs:\t1"), "{status}");
    }
    assert_eq!(workers, 1, "one identity worker thread");

    // Counted and visible in `status`.
    let st = status_json(&control);
    assert!(counter(&st, "identity.stalled") >= 2, "{}", st["counters"]);
    assert!(
        counter(&st, "identity.slow_lookups") >= 1,
        "{}",
        st["counters"]
    );

    // The loop thread never sent the FUSE server a request: only the
    // worker, a thread of its own, did.
    let reqs = fs.requests();
    let from_loop: Vec<_> = reqs.iter().filter(|r| r.1 == sensor_pid).collect();
    assert!(from_loop.is_empty(), "the loop asked FUSE: {from_loop:?}");
    eprintln!(
        "{capture}: FUSE exec {took:?}, storm of {STORM} in {storm_took:?}, \
         {from_capture} captured; {} requests from the sensor's worker",
        reqs.iter().filter(|r| r.2 == sensor_pid).count()
    );
    drop(fs);
    drop(sensor);
}

#[test]
fn fanotify_loop_is_not_stalled_by_a_fuse_server() {
    loop_is_not_stalled_by_fuse("fanotify");
}

#[test]
fn proc_loop_is_not_stalled_by_a_fuse_server() {
    loop_is_not_stalled_by_fuse("proc");
}
