//! The execsentry binary as a child process: JSON lines from its stdout,
//! its stderr kept for diagnostics, SIGTERM (then SIGKILL) on drop.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Set by cargo for integration tests once the package has an `execsentry`
/// binary target. `option_env!` keeps the helpers compiling before it does.
const SENSOR_BIN: Option<&str> = option_env!("CARGO_BIN_EXE_execsentry");

pub struct Sensor {
    child: Child,
    lines: Receiver<Result<Value, String>>,
    /// Every JSON line received so far, in order: `wait_for` searches it
    /// first, so an event that arrived before the one a test waited for
    /// earlier is not lost.
    seen: Mutex<Vec<Value>>,
    /// Stdout lines that were not JSON (a sensor bug worth showing).
    errors: Mutex<Vec<String>>,
    stderr: Arc<Mutex<String>>,
}

impl Sensor {
    /// The path of the sensor binary under test.
    pub fn binary() -> &'static str {
        SENSOR_BIN.expect("the execsentry binary target does not exist yet (no src/main.rs)")
    }

    /// `execsentry run` with the shipped rules, JSON on stdout, `capture`
    /// and its control socket at `control`; callers add flags or env.
    pub fn run_command(capture: &str, control: &std::path::Path) -> Command {
        let mut cmd = Command::new(Self::binary());
        cmd.args(["run", "--output", "stdout", "--capture", capture, "--rules"])
            .arg(super::rules_dir())
            .arg("--control")
            .arg(control);
        cmd
    }

    /// Spawns `execsentry <args>` with stdout/stderr captured.
    pub fn spawn(args: &[&str]) -> Sensor {
        Self::spawn_cmd(Command::new(Self::binary()).args(args))
    }

    /// Spawns a prepared command (e.g. wrapped in `setpriv` to drop
    /// capabilities); stdin is /dev/null, stdout and stderr are captured.
    pub fn spawn_cmd(cmd: &mut Command) -> Sensor {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));

        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().expect("piped stdout");
        thread::Builder::new()
            .name("sensor-stdout".into())
            .spawn(move || {
                // Bytes, not String lines: one bad byte must not end the reader.
                let mut reader = BufReader::new(stdout);
                let mut buf = Vec::new();
                loop {
                    buf.clear();
                    match reader.read_until(b'\n', &mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                    let line = buf.strip_suffix(b"\n").unwrap_or(&buf);
                    if line.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    let item = serde_json::from_slice::<Value>(line)
                        .map_err(|_| String::from_utf8_lossy(line).into_owned());
                    if tx.send(item).is_err() {
                        break;
                    }
                }
            })
            .expect("spawn stdout reader");

        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&stderr);
        let mut pipe = child.stderr.take().expect("piped stderr");
        thread::Builder::new()
            .name("sensor-stderr".into())
            .spawn(move || {
                let mut chunk = [0u8; 4096];
                while let Ok(n) = pipe.read(&mut chunk) {
                    if n == 0 {
                        break;
                    }
                    sink.lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(&chunk[..n]));
                }
            })
            .expect("spawn stderr reader");

        Sensor {
            child,
            lines,
            seen: Mutex::new(Vec::new()),
            errors: Mutex::new(Vec::new()),
            stderr,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the sensor wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits for the `execsentry: ready` line the daemon prints after its
    /// self-check. Panics with the sensor's stderr if it exits or times out:
    /// every later assertion would be meaningless.
    pub fn wait_ready(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if self.stderr().lines().any(is_ready_line) {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                // Give the reader a moment to collect the last words.
                thread::sleep(Duration::from_millis(100));
                panic!(
                    "sensor exited ({status}) before ready; stderr:\n{}",
                    self.stderr()
                );
            }
            if Instant::now() >= deadline {
                panic!(
                    "sensor not ready after {timeout:?}; stderr:\n{}",
                    self.stderr()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// The first event, among those already received and those arriving
    /// before `timeout`, for which `pred` holds.
    pub fn wait_for(&self, pred: impl Fn(&Value) -> bool, timeout: Duration) -> Option<Value> {
        if let Some(v) = self.seen.lock().unwrap().iter().find(|v| pred(v)) {
            return Some(v.clone());
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(Ok(v)) => {
                    let hit = pred(&v);
                    self.seen.lock().unwrap().push(v.clone());
                    if hit {
                        return Some(v);
                    }
                }
                Ok(Err(line)) => self.errors.lock().unwrap().push(line),
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => return None,
            }
        }
    }

    /// Collects whatever arrives within `quiet` and returns every event
    /// received so far.
    pub fn events(&self, quiet: Duration) -> Vec<Value> {
        let _ = self.wait_for(|_| false, quiet);
        self.seen.lock().unwrap().clone()
    }

    /// Stdout lines that did not parse as JSON.
    pub fn non_json_lines(&self) -> Vec<String> {
        self.errors.lock().unwrap().clone()
    }

    /// Waits for the sensor to exit by itself (e.g. a failing self-check).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                thread::sleep(Duration::from_millis(50));
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then SIGKILL after `grace`; returns the exit status.
    pub fn stop(&mut self, grace: Duration) -> Option<ExitStatus> {
        if let Ok(Some(status)) = self.child.try_wait() {
            return Some(status);
        }
        self.signal(libc::SIGTERM);
        if let Some(status) = self.wait_exit(grace) {
            return Some(status);
        }
        let _ = self.child.kill();
        self.child.wait().ok()
    }

    /// Sends a signal (SIGHUP for reload, ...) to the sensor.
    pub fn signal(&self, sig: libc::c_int) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid fits pid_t");
        // SAFETY: kill(2) with our own child's pid; no memory is involved.
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

impl Drop for Sensor {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(3));
    }
}

/// `execsentry: ready ...`, possibly behind a log prefix; not "not ready" or
/// "already".
fn is_ready_line(line: &str) -> bool {
    let lower = line.to_ascii_lowercase();
    !lower.contains("not ready")
        && lower
            .split(|c: char| !c.is_ascii_alphanumeric())
            .any(|word| word == "ready")
}
