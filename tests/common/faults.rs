//! Helpers for the fault tests (a stopped sensor, injected panics): the
//! watchdog process of a sensor, a timed exec storm, and a rescue that
//! SIGKILLs the sensor and its watchdog if the host's execs hang anyway,
//! so a failing test fails instead of freezing the machine. Nothing here
//! execs while a fault is active except the storm itself.

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The pids of `parent`'s children whose comm is `comm`, read from /proc.
pub fn children_named(parent: u32, comm: &str) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            let Some((head, rest)) = stat.rsplit_once(") ") else {
                return false;
            };
            let name = head.split_once(" (").map_or("", |(_, n)| n);
            let ppid = rest.split_whitespace().nth(1).and_then(|p| p.parse().ok());
            name == comm && ppid == Some(parent)
        })
        .collect()
}

/// The sensor's fanotify watchdog process (comm `es-watchdog`).
pub fn watchdog_of(sensor: u32) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        if let Some(&pid) = children_named(sensor, "es-watchdog").first() {
            return pid;
        }
        assert!(
            Instant::now() < deadline,
            "sensor {sensor} has no es-watchdog child"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// SIGKILLs `pids` after `after` unless disarmed; says so if it fired.
pub struct Rescue {
    disarmed: Arc<AtomicBool>,
    fired: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Rescue {
    pub fn arm(pids: Vec<u32>, after: Duration) -> Rescue {
        let disarmed = Arc::new(AtomicBool::new(false));
        let fired = Arc::new(AtomicBool::new(false));
        let (d, f) = (Arc::clone(&disarmed), Arc::clone(&fired));
        let thread = std::thread::spawn(move || {
            let deadline = Instant::now() + after;
            while Instant::now() < deadline {
                if d.load(Ordering::SeqCst) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            f.store(true, Ordering::SeqCst);
            for pid in pids {
                // SAFETY: kill(2) on pids this test started.
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            }
        });
        Rescue {
            disarmed,
            fired,
            thread: Some(thread),
        }
    }

    /// Stops the timer; true if it had fired (the execs hung).
    pub fn disarm(mut self) -> bool {
        self.disarmed.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.fired.load(Ordering::SeqCst)
    }
}

impl Drop for Rescue {
    fn drop(&mut self) {
        self.disarmed.store(true, Ordering::SeqCst);
    }
}

/// Runs `/bin/true` `n` times, or until `stop` is set; each exec's wall time.
pub fn exec_storm(n: usize, stop: Option<&AtomicBool>) -> Vec<Duration> {
    let mut waits = Vec::with_capacity(n);
    for _ in 0..n {
        if stop.is_some_and(|s| s.load(Ordering::SeqCst)) {
            break;
        }
        let t = Instant::now();
        let st = Command::new("/bin/true").status().expect("exec /bin/true");
        assert!(st.success());
        waits.push(t.elapsed());
    }
    waits
}

/// Sends `sig` to `pid`.
pub fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) with a pid this test started.
    unsafe { libc::kill(pid as libc::pid_t, sig) };
}
