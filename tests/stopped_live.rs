//! A stopped sensor never blocks the host: with the sensor under SIGSTOP
//! its watchdog process (forked before any fanotify mark) answers every
//! exec. Each exec waits at most one parked wake-up of the watchdog (50 ms)
//! plus its answer deadline (3 ms) by design; the tests allow 500 ms for a
//! loaded CI machine, which still fails the "every exec waits until
//! SIGCONT" behaviour by orders of magnitude. Root only.

mod common;

use std::time::Duration;

use common::Sensor;
use common::faults::{Rescue, exec_storm, signal, watchdog_of};

/// The longest any one exec may wait while the sensor is stopped.
const BOUND: Duration = Duration::from_millis(500);
const STORM: usize = 300;

fn sensor(dir: &std::path::Path) -> Sensor {
    let control = dir.join("control.sock");
    let mut s = Sensor::spawn_cmd(&mut Sensor::run_command("fanotify", &control));
    s.wait_ready(Duration::from_secs(10));
    s
}

fn status_line(pid: u32, key: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(key))
        .unwrap_or_default()
        .to_string()
}

#[test]
fn a_stopped_sensor_does_not_block_the_hosts_execs() {
    if !common::require_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut s = sensor(dir.path());
    let pid = s.pid();
    let wd = watchdog_of(pid);
    // The watchdog keeps no capability at all.
    for set in ["CapEff:", "CapPrm:", "CapBnd:", "CapInh:", "CapAmb:"] {
        let line = status_line(wd, set);
        assert!(line.ends_with("0000000000000000"), "watchdog {line}");
    }

    let rescue = Rescue::arm(vec![pid, wd], Duration::from_secs(60));
    signal(pid, libc::SIGSTOP);
    let waits = exec_storm(STORM, None);
    signal(pid, libc::SIGCONT);
    assert!(
        !rescue.disarm(),
        "execs hung: the rescue had to kill the sensor"
    );

    assert_eq!(waits.len(), STORM);
    let max = waits.iter().max().unwrap();
    let total: Duration = waits.iter().sum();
    eprintln!("{STORM} execs with the sensor stopped: {total:?} in all, the longest {max:?}");
    assert!(*max <= BOUND, "an exec waited {max:?} (bound {BOUND:?})");

    // Back from the stop, the loop says what happened at its next event.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let want = "the sensor stopped answering exec permission events";
    while !s.stderr().contains(want) {
        assert!(
            std::time::Instant::now() < deadline,
            "no log line about the stop; stderr:\n{}",
            s.stderr()
        );
        exec_storm(1, None);
        std::thread::sleep(Duration::from_millis(50));
    }
    let line = s
        .stderr()
        .lines()
        .find(|l| l.contains(want))
        .unwrap()
        .to_string();
    assert!(line.contains("its watchdog process allowed"), "{line}");

    let status = s.stop(Duration::from_secs(5)).expect("sensor exits");
    assert!(status.success(), "{status:?}; stderr:\n{}", s.stderr());
    assert!(!common::pid_alive(wd), "the watchdog outlived the sensor");
}

/// SIGKILL of the sensor: its watchdog exits too (pidfd), so the kernel
/// closes the group and nothing stays pending, and no process is left.
#[test]
fn the_watchdog_process_exits_when_the_sensor_is_killed() {
    if !common::require_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let s = sensor(dir.path());
    let pid = s.pid();
    let wd = watchdog_of(pid);
    let rescue = Rescue::arm(vec![pid, wd], Duration::from_secs(30));
    // Stopped first, so the kill finds it with events pending.
    signal(pid, libc::SIGSTOP);
    let _ = exec_storm(20, None);
    signal(pid, libc::SIGKILL);
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while common::pid_alive(wd) {
        assert!(
            std::time::Instant::now() < deadline,
            "watchdog {wd} still alive 2 s after the sensor was killed"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let waits = exec_storm(20, None);
    assert!(!rescue.disarm(), "execs hung after the sensor was killed");
    assert!(waits.iter().all(|w| *w <= BOUND), "{waits:?}");
    drop(s);
}
