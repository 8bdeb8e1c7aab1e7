//! A panic in either half of the sensor releases the host. The debug
//! build's test hook `EXECSENTRY_TEST_PANIC` (absent from release builds)
//! injects one two seconds after the watchdog starts: `loop` panics the
//! event loop at its next drain, `watchdog` crashes the watchdog process
//! (which the loop notices and stops the sensor for). Either way host execs
//! keep flowing during and after, and the sensor exits non-zero. Root only.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::Sensor;
use common::faults::{Rescue, exec_storm, watchdog_of};

const BOUND: Duration = Duration::from_millis(500);

fn inject(fault: &str, expect_in_stderr: &str) {
    let dir = tempfile::tempdir().unwrap();
    let control = dir.path().join("control.sock");
    let mut cmd = Sensor::run_command("fanotify", &control);
    cmd.env("EXECSENTRY_TEST_PANIC", fault);
    let mut s = Sensor::spawn_cmd(&mut cmd);
    s.wait_ready(Duration::from_secs(10));
    let pid = s.pid();
    let wd = watchdog_of(pid);
    let rescue = Rescue::arm(vec![pid, wd], Duration::from_secs(60));

    // Execs all along: before, at and after the fault.
    let stop = Arc::new(AtomicBool::new(false));
    let storm = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || exec_storm(100_000, Some(&stop)))
    };
    let status = s.wait_exit(Duration::from_secs(15));
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::SeqCst);
    let waits = storm.join().expect("storm");
    assert!(
        !rescue.disarm(),
        "execs hung: the rescue had to kill the sensor"
    );

    let status = status.unwrap_or_else(|| panic!("sensor still running; stderr:\n{}", s.stderr()));
    assert!(!status.success(), "{status:?}");
    let err = s.stderr();
    assert!(err.contains(expect_in_stderr), "stderr:\n{err}");
    assert!(waits.len() > 10, "only {} execs ran", waits.len());
    let max = waits.iter().max().unwrap();
    eprintln!(
        "{fault}: {} execs, the longest {max:?}, sensor {status:?}",
        waits.len()
    );
    assert!(*max <= BOUND, "an exec waited {max:?}");
    assert!(!common::pid_alive(wd), "watchdog {wd} left behind");
}

#[test]
fn a_panic_in_the_event_loop_releases_the_host_and_exits_non_zero() {
    if !common::require_root() {
        return;
    }
    inject("loop", "injected panic in the event loop");
}

#[test]
fn a_crash_of_the_watchdog_process_stops_the_sensor_non_zero() {
    if !common::require_root() {
        return;
    }
    inject("watchdog", "the fanotify watchdog process");
}
