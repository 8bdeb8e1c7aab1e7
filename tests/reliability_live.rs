//! Identity and overload against the real kernel (issue 10): pid reuse,
//! SIGTERM under an exec storm, a netlink overrun that is counted and
//! recovered from, and process-tree races (parent gone before the exec, a
//! double fork, an exec from a thread that is not the leader). Needs root.
//!
//! The races are driven by a small C program compiled here with `cc`: only
//! raw `fork`/`execve`/`pthread_create` give the exact shapes (std's Command
//! cannot exec from a second thread of the child, nor exit a middle parent).

// This binary uses only part of the shared helpers' re-exports.
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::events::{args_of, is_exec_with_arg, sensor};
use common::{Sensor, json_path, json_str, run_ok, unique_name};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(10);

/// The storms here measure the sensor against a busy machine; two at once
/// on two cores would mostly measure each other.
static HEAVY: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_heavy_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    HEAVY.lock().unwrap_or_else(|e| e.into_inner())
}

fn u64_at(v: &Value, path: &str) -> u64 {
    json_path(v, path)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("{path} missing in {v}"))
}

/// The exec whose last argument is `marker` and whose argv[0] is a shell:
/// the helper that starts it carries the marker in its own argv too.
fn wait_event(s: &Sensor, marker: &str) -> Value {
    s.wait_for(
        |v| {
            let a = args_of(v);
            is_exec_with_arg(v, marker)
                && a.last().is_some_and(|l| l == marker)
                && a.first().is_some_and(|f| f.ends_with("sh"))
        },
        WAIT,
    )
    .unwrap_or_else(|| panic!("no exec event with {marker}; stderr:\n{}", s.stderr()))
}

/// Compiled helpers in a temp dir, removed on drop.
struct Helpers {
    dir: tempfile::TempDir,
}

impl Helpers {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// `race` modes (each writes what the test must know to `argv[3]` and then
/// execs `/bin/sh -c 'sleep 1' <marker>`, so the exec carries the marker and
/// the process lives long enough to be read):
///
/// - `orphan`: forks; the parent exits at once; the child waits until it
///   has been reparented, writes `pid new_ppid old_ppid`, then execs.
/// - `doublefork`: forks a middle process that forks the final child and
///   exits; the child waits for the reparenting, writes
///   `pid new_ppid middle_pid`, then execs.
/// - `thread`: a second thread writes `tgid tid` and execs while the leader
///   sleeps; the kernel turns the thread into the leader.
const RACE_C: &str = r#"
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static const char *marker, *out;

static void note(long a, long b, long c)
{
	FILE *f = fopen(out, "w");
	if (!f) _exit(90);
	fprintf(f, "%ld %ld %ld\n", a, b, c);
	fclose(f);
}

static void run(void)
{
	char *argv[] = {"sh", "-c", "sleep 1", (char *)marker, NULL};
	char *envp[] = {"PATH=/usr/bin:/bin", NULL};
	execve("/bin/sh", argv, envp);
	_exit(91);
}

static void wait_reparented(pid_t old, long other)
{
	while (getppid() == old) usleep(1000);
	note(getpid(), getppid(), other);
	run();
}

static void *thread_main(void *arg)
{
	(void)arg;
	note(getpid(), syscall(SYS_gettid), 0);
	run();
	return NULL;
}

int main(int argc, char **argv)
{
	if (argc != 4) return 2;
	marker = argv[2];
	out = argv[3];
	if (!strcmp(argv[1], "orphan")) {
		pid_t me = getpid();
		if (fork() == 0) wait_reparented(me, me);
		return 0;
	}
	if (!strcmp(argv[1], "doublefork")) {
		pid_t c = fork();
		if (c == 0) {
			pid_t middle = getpid();
			if (fork() == 0) wait_reparented(middle, middle);
			_exit(0);
		}
		waitpid(c, NULL, 0);
		return 0;
	}
	if (!strcmp(argv[1], "thread")) {
		pthread_t t;
		if (pthread_create(&t, NULL, thread_main, NULL)) return 3;
		for (;;) pause();
	}
	return 2;
}
"#;

fn helpers() -> Helpers {
    let dir = tempfile::Builder::new()
        .prefix("execsentry-reliability.")
        .tempdir()
        .unwrap();
    std::fs::write(dir.path().join("race.c"), RACE_C).unwrap();
    run_ok(
        Command::new("cc")
            .args(["-O", "-pthread", "-o"])
            .arg(dir.path().join("race"))
            .arg(dir.path().join("race.c")),
    );
    run_ok(
        Command::new("cc")
            .args(["-O", "-o"])
            .arg(dir.path().join("storm"))
            .arg(common::repo_root().join("bench/storm.c")),
    );
    Helpers { dir }
}

/// Reads the three numbers a `race` mode wrote, waiting for the file.
fn read_note(path: &Path) -> [u32; 3] {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            let v: Vec<u32> = text
                .split_whitespace()
                .filter_map(|w| w.parse().ok())
                .collect();
            if v.len() == 3 {
                return [v[0], v[1], v[2]];
            }
        }
        assert!(
            Instant::now() < deadline,
            "{} never written",
            path.display()
        );
        thread::sleep(Duration::from_millis(10));
    }
}

/// A `storm` process group (bench/storm.c) killed on drop, so a failing
/// test leaves no workers forking behind it.
struct Storm {
    child: std::process::Child,
}

impl Storm {
    fn start(h: &Helpers, execs: u32, tag: &str) -> Storm {
        use std::os::unix::process::CommandExt;
        let child = Command::new(h.path("storm"))
            .args(["-w", "2", "-n", &execs.to_string(), "-t", tag])
            .arg("-p")
            .arg(h.path(&format!("{tag}.pids")))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("spawn storm");
        Storm { child }
    }

    /// Waits for the storm to finish and returns its summary line.
    fn finish(mut self) -> String {
        use std::io::Read;
        let mut out = String::new();
        if let Some(mut o) = self.child.stdout.take() {
            let _ = o.read_to_string(&mut out);
        }
        let _ = self.child.wait();
        out.trim().to_string()
    }
}

impl Drop for Storm {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let pgid = libc::pid_t::try_from(self.child.id()).unwrap();
            // SAFETY: kill(2) on the process group this struct created.
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            }
            let _ = self.child.wait();
        }
    }
}

/// `/proc/sys/kernel/pid_max` lowered for the test, restored on drop (also
/// when the test panics): the rest of the machine shares it.
struct PidMax {
    saved: String,
}

const PID_MAX: &str = "/proc/sys/kernel/pid_max";

impl PidMax {
    fn lower_to(n: u32) -> PidMax {
        let saved = std::fs::read_to_string(PID_MAX).unwrap().trim().to_string();
        std::fs::write(PID_MAX, n.to_string()).expect("lower pid_max");
        PidMax { saved }
    }
}

impl Drop for PidMax {
    fn drop(&mut self) {
        if let Err(e) = std::fs::write(PID_MAX, &self.saved) {
            eprintln!("!!! could not restore {PID_MAX} to {}: {e}", self.saved);
        }
    }
}

/// Forks a child that exits at once and returns its pid (reaped).
fn burn_pid() -> u32 {
    // SAFETY: the child calls only _exit, which is async-signal-safe, so
    // forking this multi-threaded test process is sound.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        unsafe { libc::_exit(0) };
    }
    assert!(pid > 0, "fork failed");
    // SAFETY: waiting for our own child; status is not read.
    unsafe {
        libc::waitpid(pid, std::ptr::null_mut(), 0);
    }
    pid as u32
}

#[test]
fn reused_pid_is_never_enriched_with_the_old_process() {
    if !common::require_root() {
        return;
    }
    let _heavy = one_heavy_at_a_time();
    let s = sensor("auto", &[]);
    // Small enough to wrap in a few thousand forks, large enough that the
    // rest of the machine (its other tests included) still finds free pids.
    let limit = 4096;
    let mut guard = Some(PidMax::lower_to(limit));

    // The old process: a grandchild (its parent is a shell), argv `old`.
    let old_marker = unique_name("old");
    run_ok(
        Command::new("/bin/sh").args(["-c", &format!("/bin/sh -c 'sleep 0.3' {old_marker}; :")]),
    );
    let old = wait_event(&s, &old_marker);
    let old_pid = u64_at(&old, "process.pid") as u32;
    let old_parent = u64_at(&old, "process.parent.pid") as u32;
    assert!(old_pid < limit, "old pid {old_pid} allocated above pid_max");

    // Cycle the pid space until the pid just before the old one is taken,
    // then start the new process: it gets the old pid unless another
    // process on the machine took it first, in which case cycle again.
    let new_marker = unique_name("new");
    let mut new_child = None;
    for _ in 0..4 * limit {
        let last = burn_pid();
        // After pid_max - 1 the kernel wraps to 300 (RESERVED_PIDS).
        let before_old = if old_pid <= 300 {
            limit - 1
        } else {
            old_pid - 1
        };
        if last != before_old {
            continue;
        }
        let child = Command::new("/bin/sh")
            .args(["-c", "sleep 0.5", &new_marker])
            .spawn()
            .unwrap();
        if child.id() == old_pid {
            new_child = Some(child);
            break;
        }
        let mut c = child;
        let _ = c.wait();
    }
    drop(guard.take());
    let mut new_child = new_child.unwrap_or_else(|| panic!("pid {old_pid} was never reused"));
    let new = wait_event(&s, &new_marker);
    let _ = new_child.wait();

    eprintln!(
        "pid {old_pid} reused: old parent {old_parent}, new parent {}",
        std::process::id()
    );
    assert_eq!(
        u64_at(&new, "process.pid") as u32,
        old_pid,
        "new event {new}\nold event {old}"
    );
    assert_eq!(
        u64_at(&new, "process.parent.pid") as u32,
        std::process::id(),
        "new process got a parent other than its own: {new}"
    );
    assert_ne!(old_parent, std::process::id());
    assert_eq!(args_of(&new), ["/bin/sh", "-c", "sleep 0.5", &new_marker]);
    assert_ne!(
        json_str(&new, "process.entity_id"),
        json_str(&old, "process.entity_id"),
        "same entity_id for two processes"
    );
    assert_ne!(
        json_path(&new, "execsentry.start_ticks"),
        json_path(&old, "execsentry.start_ticks")
    );
    assert_ne!(json_str(&new, "process.start"), None);
    assert_ne!(
        json_str(&new, "process.parent.entity_id"),
        json_str(&old, "process.parent.entity_id")
    );
}

#[test]
fn sigterm_under_an_exec_storm_exits_zero_promptly() {
    if !common::require_root() {
        return;
    }
    let _heavy = one_heavy_at_a_time();
    let h = helpers();
    let mut s = sensor("auto", &[]);
    let storm = Storm::start(&h, 200_000, &unique_name("term"));
    // Let the storm reach full rate and the sensor's queues fill.
    thread::sleep(Duration::from_millis(1500));
    let t0 = Instant::now();
    s.signal(libc::SIGTERM);
    let status = s.wait_exit(Duration::from_secs(10));
    let took = t0.elapsed();
    drop(storm);
    eprintln!("SIGTERM under an exec storm: exited in {took:?} ({status:?})");
    let status = status.unwrap_or_else(|| panic!("no exit 10 s after SIGTERM"));
    assert_eq!(status.code(), Some(0), "stderr:\n{}", s.stderr());
    // The requirement is < 1 s; the bound is generous for a loaded CI box.
    assert!(took < Duration::from_secs(3), "took {took:?}");
    assert!(s.stderr().contains("stats:"), "no stats line at exit");
}

/// The `overruns=` value of the last stats line.
fn stat_value(stderr: &str, key: &str) -> Option<u64> {
    let line = stderr.lines().rev().find(|l| l.contains("stats:"))?;
    let at = line.find(&format!(" {key}="))? + key.len() + 2;
    line[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

#[test]
fn netlink_overrun_is_counted_and_events_resume() {
    if !common::require_root() {
        return;
    }
    let _heavy = one_heavy_at_a_time();
    let h = helpers();
    // proc capture: a stopped fanotify listener would hold every exec on
    // the machine for its watchdog's timeout; the overrun is the proc
    // connector's.
    let mut s = sensor("proc", &[]);
    s.signal(libc::SIGSTOP);
    let summary = Storm::start(&h, 15_000, &unique_name("ovr")).finish();
    eprintln!("while the sensor was stopped: {summary}");
    s.signal(libc::SIGCONT);

    // Events resume: a marker exec after the overrun is still reported.
    let marker = unique_name("after");
    let deadline = Instant::now() + WAIT;
    let mut seen = None;
    while seen.is_none() && Instant::now() < deadline {
        run_ok(Command::new("/bin/sh").args(["-c", "sleep 0.2", &marker]));
        seen = s.wait_for(|v| is_exec_with_arg(v, &marker), Duration::from_secs(1));
    }
    assert!(
        seen.is_some(),
        "no event after the overrun; stderr:\n{}",
        s.stderr()
    );

    let status = s.stop(WAIT);
    assert_eq!(status.and_then(|st| st.code()), Some(0));
    let stderr = s.stderr();
    let overruns = stat_value(&stderr, "overruns")
        .unwrap_or_else(|| panic!("no overruns= in the exit stats line:\n{stderr}"));
    let rescans = stat_value(&stderr, "rescans");
    let lost = stat_value(&stderr, "lost_events").unwrap_or(0);
    eprintln!("overruns={overruns} rescans={rescans:?} lost_events={lost}");
    assert!(
        overruns > 0,
        "15000 execs against a stopped sensor overran nothing:\n{stderr}"
    );
    // Each of the 15000 execs is a fork, an exec and an exit: what did not
    // fit in the socket buffer is counted event by event, not only as one
    // overrun episode.
    assert!(lost > 0, "an overrun lost no event?\n{stderr}");
    assert!(
        lost <= 3 * 15_000 + 1000,
        "lost_events={lost} exceeds what happened"
    );
    // Nothing lost silently: every exec of the storm was either received or
    // is among the events counted as lost.
    let execs = stat_value(&stderr, "execs").unwrap_or(0);
    assert!(
        execs + lost >= 15_000,
        "execs={execs} + lost_events={lost} < 15000 execs done:\n{stderr}"
    );
}

#[test]
fn exec_after_the_parent_exited_keeps_the_forking_parent() {
    if !common::require_root() {
        return;
    }
    let h = helpers();
    let s = sensor("auto", &[]);
    for mode in ["orphan", "doublefork"] {
        let marker = unique_name(mode);
        let note = h.path(&format!("{mode}.note"));
        run_ok(
            Command::new(h.path("race"))
                .arg(mode)
                .arg(&marker)
                .arg(&note),
        );
        let [pid, ppid, gone] = read_note(&note);
        let ev = wait_event(&s, &marker);
        eprintln!("{mode}: pid {pid}, parent {gone} exited, reparented to {ppid}");
        assert_eq!(u64_at(&ev, "process.pid") as u32, pid, "{mode}: {ev}");
        // The lineage is kept: the parent is the process that forked this
        // one (from the fork event), even though it has exited and the
        // kernel now names the reaper. A double fork cannot hide its origin.
        assert_eq!(
            u64_at(&ev, "process.parent.pid") as u32,
            gone,
            "{mode}: the parent is the forking process {gone}, not the reaper {ppid}: {ev}"
        );
        assert!(json_str(&ev, "process.parent.entity_id").is_some_and(|e| !e.is_empty()));
        assert_eq!(args_of(&ev), ["sh", "-c", "sleep 1", &marker]);
    }
}

#[test]
fn exec_from_a_non_leader_thread_reports_the_leader_pid() {
    if !common::require_root() {
        return;
    }
    let h = helpers();
    let s = sensor("auto", &[]);
    let marker = unique_name("thread");
    let note = h.path("thread.note");
    let mut child = Command::new(h.path("race"))
        .arg("thread")
        .arg(&marker)
        .arg(&note)
        .spawn()
        .unwrap();
    let [tgid, tid, _] = read_note(&note);
    let ev = wait_event(&s, &marker);
    let _ = child.wait();
    eprintln!("exec from thread {tid} of process {tgid}");
    assert_ne!(tgid, tid, "the exec must come from a second thread");
    assert_eq!(tgid, child.id());
    assert_eq!(u64_at(&ev, "process.pid") as u32, tgid, "{ev}");
    assert_eq!(u64_at(&ev, "process.parent.pid") as u32, std::process::id());
    assert_eq!(args_of(&ev), ["sh", "-c", "sleep 1", &marker]);
}
