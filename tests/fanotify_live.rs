//! Live tests of the fanotify exec capture on the real kernel (root only;
//! they skip loudly otherwise).
//!
//! The capture never runs in the test process itself: a process holding a
//! fanotify permission group must not fork, because a child that inherited
//! the group fd and then blocks in its own exec would hang every exec on the
//! host. So each test starts a *collector* (this test binary re-run in the
//! hidden `collector_process` role) before any mark exists; it reports
//! captures on stdout, and the test process runs the workloads. The
//! collector exits when its stdin closes, so a dying test releases it.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use execsentry::fanotify::{CaptureOptions, ExecCapture, FanotifyCapture};

mod common;

const ROLE_ENV: &str = "EXECSENTRY_FANOTIFY_ROLE";

/// The live tests mark every filesystem: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn is_root() -> bool {
    common::is_root() || common::skip("fanotify live tests need root (CAP_SYS_ADMIN)")
}

fn opts() -> CaptureOptions {
    CaptureOptions {
        max_args_bytes: 64 * 1024,
        max_args: 1024,
        enforce: false,
        env: false,
    }
}

// ---------------------------------------------------------------- collector

fn hex(b: &[u8]) -> String {
    b.iter().map(|c| format!("{c:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .filter_map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok())
        .collect()
}

/// The hidden role: run a capture and report on stdout until stdin closes
/// (`collect`), or read events and never answer them (`hold`).
#[test]
#[ignore = "helper role, run by the live tests"]
fn collector_process() {
    match std::env::var(ROLE_ENV).as_deref() {
        Ok("collect") => collect(),
        Ok("hold") => hold(),
        _ => {}
    }
}

fn collect() {
    use mio::unix::SourceFd;
    use mio::{Events, Interest, Poll, Token};
    const FAN: Token = Token(0);
    const MOUNTS: Token = Token(1);
    const STDIN: Token = Token(2);

    let mut cap = Some(FanotifyCapture::open(opts()).expect("open capture"));
    let mut poll = Poll::new().expect("poll");
    if let Some(c) = cap.as_mut() {
        c.register(poll.registry(), FAN, MOUNTS).expect("register");
    }
    poll.registry()
        .register(&mut SourceFd(&0), STDIN, Interest::READABLE)
        .expect("register stdin");
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    writeln!(out, "READY").ok();
    out.flush().ok();
    let mut events = Events::with_capacity(64);
    let mut caps: Vec<ExecCapture> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut line = Vec::new();
    let report = |c: &FanotifyCapture, out: &mut std::io::StdoutLock<'_>| {
        let s = c.stats();
        let (p50, p99) = c.answer_latency_us().unwrap_or((0.0, 0.0));
        writeln!(
            out,
            "STATS events={} answered={} watchdog={} extra={} running_misses={} argv_errors={} \
             marks={} mark_errors={} p50_us={p50:.1} p99_us={p99:.1}",
            s.events,
            s.answered,
            s.watchdog_answers,
            s.extra_opens,
            s.syscall_running_misses,
            s.argv_read_errors,
            s.marks,
            s.mark_errors
        )
        .ok();
    };
    while Instant::now() < deadline {
        if let Err(e) = poll.poll(&mut events, Some(Duration::from_millis(200))) {
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            break;
        }
        for ev in events.iter() {
            match ev.token() {
                FAN => {
                    if let Some(c) = cap.as_mut() {
                        c.drain(&mut execsentry::capture::AllowAll, &mut caps);
                    }
                }
                MOUNTS => {
                    if let Some(c) = cap.as_mut() {
                        c.remark();
                    }
                }
                _ => {
                    let mut buf = [0u8; 256];
                    // SAFETY: reading stdin into a local buffer.
                    let n = unsafe { libc::read(0, buf.as_mut_ptr().cast(), buf.len()) };
                    if n <= 0 {
                        if let Some(c) = cap.take() {
                            report(&c, &mut out);
                        }
                        out.flush().ok();
                        return;
                    }
                    line.extend_from_slice(&buf[..n as usize]);
                    if line.windows(4).any(|w| w == b"DROP") {
                        line.clear();
                        if let Some(c) = cap.take() {
                            report(&c, &mut out);
                        }
                        writeln!(out, "DROPPED").ok();
                    }
                }
            }
        }
        for c in caps.drain(..) {
            writeln!(
                out,
                "CAP\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
                c.pid,
                hex(&c.argv),
                hex(&c.executable),
                hex(&c.filename),
                c.interpreter.as_deref().map_or("-".to_string(), hex),
                c.syscall,
                c.truncated,
                c.args_read
            )
            .ok();
        }
        out.flush().ok();
    }
}

/// A sensor that hangs: reads one batch of events and never answers them.
fn hold() {
    use std::os::fd::AsRawFd;
    let cap = FanotifyCapture::open_unguarded(opts()).expect("open capture");
    println!("READY");
    let fd = cap.as_raw_fd();
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one pollfd.
    unsafe { libc::poll(&mut p, 1, 10_000) };
    let mut buf = [0u64; 512];
    // SAFETY: read into a local buffer; the event fds are deliberately
    // leaked: the process is about to be killed holding them.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), std::mem::size_of_val(&buf)) };
    println!("HOLDING {n}");
    std::io::stdout().flush().ok();
    std::thread::sleep(Duration::from_secs(30));
    drop(cap);
}

#[derive(Debug, Clone)]
struct Cap {
    pid: u32,
    argv: Vec<u8>,
    executable: Vec<u8>,
    filename: Vec<u8>,
    interpreter: Option<Vec<u8>>,
    syscall: u32,
}

enum Line {
    Cap(Cap),
    Other(String),
}

struct Collector {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<Line>,
    caps: Vec<Cap>,
    others: Vec<String>,
}

impl Collector {
    fn start(role: &str) -> Collector {
        let exe = std::env::current_exe().expect("current exe");
        let mut child = Command::new(exe)
            .args(["--ignored", "--exact", "collector_process", "--nocapture"])
            .args(["--test-threads", "1"])
            .env(ROLE_ENV, role)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn collector");
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("collector stdout");
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let parsed = match line.split('\t').collect::<Vec<_>>()[..] {
                    ["CAP", pid, argv, exe, file, interp, sc, _, _] => Line::Cap(Cap {
                        pid: pid.parse().unwrap_or(0),
                        argv: unhex(argv),
                        executable: unhex(exe),
                        filename: unhex(file),
                        interpreter: (interp != "-").then(|| unhex(interp)),
                        syscall: sc.parse().unwrap_or(0),
                    }),
                    _ => Line::Other(line),
                };
                if tx.send(parsed).is_err() {
                    break;
                }
            }
        });
        let mut c = Collector {
            child,
            stdin,
            lines: rx,
            caps: Vec::new(),
            others: Vec::new(),
        };
        assert!(
            c.wait_for(|l| l.ends_with("READY"), Duration::from_secs(20)),
            "collector did not get ready"
        );
        c
    }

    /// Collects lines until one satisfies `f` or the timeout passes.
    fn wait_for(&mut self, f: impl Fn(&str) -> bool, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(Line::Cap(c)) => self.caps.push(c),
                Ok(Line::Other(l)) => {
                    let hit = f(&l);
                    self.others.push(l);
                    if hit {
                        return true;
                    }
                }
                Err(_) => return false,
            }
        }
        false
    }

    /// Lets in-flight captures arrive.
    fn settle(&mut self, d: Duration) {
        self.wait_for(|_| false, d);
    }

    fn send(&mut self, s: &str) {
        if let Some(i) = self.stdin.as_mut() {
            i.write_all(s.as_bytes()).ok();
            i.flush().ok();
        }
    }

    /// Closes stdin, collects the rest and the STATS line.
    fn finish(mut self) -> (Vec<Cap>, String) {
        self.stdin.take();
        self.wait_for(|l| l.contains("STATS"), Duration::from_secs(10));
        let stats = self
            .others
            .iter()
            .find(|l| l.contains("STATS"))
            .cloned()
            .unwrap_or_default();
        let caps = std::mem::take(&mut self.caps);
        (caps, stats)
    }

    fn find(&self, argv: &[u8]) -> Option<&Cap> {
        self.caps.iter().find(|c| c.argv == argv)
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.stdin.take();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

fn cmdline(args: &[&[u8]]) -> Vec<u8> {
    let mut v = Vec::new();
    for a in args {
        v.extend_from_slice(a);
        v.push(0);
    }
    v
}

/// Removes a file on drop.
struct TempPath(PathBuf);

impl Drop for TempPath {
    fn drop(&mut self) {
        std::fs::remove_file(&self.0).ok();
    }
}

fn copy_exec(from: &str, to: &Path) -> TempPath {
    std::fs::copy(from, to).expect("copy binary");
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    TempPath(to.to_path_buf())
}

/// Waits for a child with a deadline; kills it (and fails) on timeout.
fn wait_bounded(child: &mut Child, timeout: Duration, what: &str) -> Duration {
    let start = Instant::now();
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            return start.elapsed();
        }
        if start.elapsed() > timeout {
            child.kill().ok();
            child.wait().ok();
            panic!("{what} did not finish within {timeout:?}: an exec stayed blocked");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn storm(n: u32) -> Child {
    Command::new("/bin/sh")
        .args([
            "-c",
            &format!("i=0; while [ $i -lt {n} ]; do /bin/true storm-$i; i=$((i+1)); done"),
        ])
        .spawn()
        .expect("spawn storm")
}

// -------------------------------------------------------------------- tests

#[test]
fn five_thousand_execs_with_exact_argv() {
    if !is_root() {
        return;
    }
    let _g = serial();
    let mut col = Collector::start("collect");
    let tag = std::process::id();
    let started = Instant::now();
    let workers: Vec<_> = (0..2)
        .map(|w| {
            std::thread::spawn(move || {
                for i in 0..2500 {
                    Command::new("/bin/true")
                        .args([format!("es-{tag}-w{w}-{i}"), format!("unique arg {i}")])
                        .status()
                        .expect("run /bin/true");
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("worker");
    }
    let took = started.elapsed();
    col.settle(Duration::from_millis(500));
    let expected: Vec<Vec<u8>> = (0..2)
        .flat_map(|w| {
            (0..2500).map(move |i| {
                cmdline(&[
                    b"/bin/true",
                    format!("es-{tag}-w{w}-{i}").as_bytes(),
                    format!("unique arg {i}").as_bytes(),
                ])
            })
        })
        .collect();
    let (caps, stats) = col.finish();
    let got: std::collections::HashSet<&[u8]> = caps.iter().map(|c| c.argv.as_slice()).collect();
    let hits = expected
        .iter()
        .filter(|e| got.contains(e.as_slice()))
        .count();
    let pct = 100.0 * hits as f64 / expected.len() as f64;
    println!(
        "fanotify capture: {hits}/{} execs with exact argv ({pct:.2}%) in {took:?}; {stats}",
        expected.len()
    );
    assert!(pct >= 99.9, "captured only {pct:.2}%");
}

#[test]
fn static_binary_hidden_in_dev_shm() {
    if !is_root() {
        return;
    }
    let _g = serial();
    let path = PathBuf::from(format!("/dev/shm/.hidden-x-{}", std::process::id()));
    let _file = copy_exec("/bin/busybox", &path);
    let mut col = Collector::start("collect");
    let st = Command::new(&path)
        .arg0("busybox")
        .args(["echo", "hidden", "two words"])
        .stdout(Stdio::null())
        .status()
        .expect("run hidden busybox");
    assert!(st.success());
    col.settle(Duration::from_millis(300));
    let want = cmdline(&[b"busybox", b"echo", b"hidden", b"two words"]);
    let cap = col.find(&want).cloned();
    let (_, stats) = col.finish();
    let cap = cap.unwrap_or_else(|| panic!("no capture of the static binary in /dev/shm; {stats}"));
    assert_eq!(cap.executable, path.as_os_str().as_encoded_bytes());
    assert_eq!(cap.filename, path.as_os_str().as_encoded_bytes());
}

#[test]
fn scripts_memfd_deleted_and_failing_execs() {
    if !is_root() {
        return;
    }
    let _g = serial();
    let pid = std::process::id();
    let script = PathBuf::from(format!("/tmp/execsentry-script-{pid}.sh"));
    std::fs::write(&script, "#!/bin/sh\nexit 0\n").expect("write script");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let _script = TempPath(script.clone());
    let deleted = PathBuf::from(format!("/tmp/execsentry-deleted-{pid}"));
    let deleted_guard = copy_exec("/bin/busybox", &deleted);
    let noexec = PathBuf::from(format!("/tmp/execsentry-garbage-{pid}"));
    std::fs::write(&noexec, b"\x01\x02 not a binary").expect("write garbage");
    std::fs::set_permissions(&noexec, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let _noexec = TempPath(noexec.clone());
    let noperm = PathBuf::from(format!("/tmp/execsentry-noperm-{pid}"));
    std::fs::copy("/bin/true", &noperm).expect("copy");
    std::fs::set_permissions(&noperm, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let _noperm = TempPath(noperm.clone());

    let mut col = Collector::start("collect");

    // A script: argv is the script's own execve argv; /bin/sh is noted as
    // its interpreter and not reported as a second exec.
    let st = Command::new(&script)
        .args(["alpha", "beta gamma"])
        .status()
        .expect("run script");
    assert!(st.success());

    // fexecve of a memfd (execveat(fd, "", AT_EMPTY_PATH), as runc does).
    let memfd_argv = ["memfd-true", "--memfd-arg", "x y"];
    let memfd_status = run_memfd(&memfd_argv);
    assert_eq!(memfd_status, Some(0), "fexecve of a memfd failed");

    // A binary deleted right after it started.
    let mut child = Command::new(&deleted)
        .arg0("busybox")
        .args(["sleep", "0.2"])
        .spawn()
        .expect("run soon-deleted binary");
    drop(deleted_guard);
    wait_bounded(&mut child, Duration::from_secs(10), "deleted binary");

    // Failing execs: none may hang.
    let enoent = Command::new(format!("/nonexistent-{pid}/x"))
        .arg("never")
        .status();
    assert!(enoent.is_err());
    let garbage = Command::new(&noexec).arg("garbage-arg").status();
    assert!(garbage.map(|s| !s.success()).unwrap_or(true));
    let denied = Command::new(&noperm).arg("noperm-arg").status();
    assert!(denied.is_err());

    col.settle(Duration::from_millis(400));
    let script_b = script.as_os_str().as_encoded_bytes();
    let want_script = cmdline(&[script_b, b"alpha", b"beta gamma"]);
    let s = col.find(&want_script).cloned().expect("script captured");
    assert_eq!(s.executable, script_b);
    assert_eq!(s.interpreter.as_deref(), Some(&b"/bin/sh"[..]));
    let sh_reports = col
        .caps
        .iter()
        .filter(|c| c.pid == s.pid && c.argv != want_script)
        .count();
    assert_eq!(
        sh_reports, 0,
        "the interpreter open was reported as an exec"
    );

    let want_memfd = cmdline(&memfd_argv.map(str::as_bytes));
    let m = col.find(&want_memfd).cloned().expect("memfd exec captured");
    assert_eq!(m.syscall, 322, "fexecve goes through execveat");
    assert!(m.filename.is_empty());
    assert!(
        m.executable.starts_with(b"/memfd:"),
        "{}",
        String::from_utf8_lossy(&m.executable)
    );

    let want_deleted = cmdline(&[b"busybox", b"sleep", b"0.2"]);
    let d = col
        .find(&want_deleted)
        .cloned()
        .expect("deleted binary captured");
    assert!(
        d.executable
            .starts_with(deleted.as_os_str().as_encoded_bytes())
    );

    // ENOENT and EACCES fail before the open: no event. ENOEXEC fails after
    // it: the capture exists, and it did not hang.
    assert!(col.caps.iter().all(|c| !c.argv.ends_with(b"never\0")));
    assert!(col.caps.iter().all(|c| !c.argv.ends_with(b"noperm-arg\0")));
    let (_, stats) = col.finish();
    println!("edge cases ok; {stats}");
}

/// Forks a child that `fexecve`s a memfd holding `/bin/true`; its exit code.
fn run_memfd(argv: &[&str]) -> Option<i32> {
    use std::ffi::CString;
    let bin = std::fs::read("/bin/true").ok()?;
    // SAFETY: plain system calls; results checked.
    let fd = unsafe { libc::memfd_create(c"execsentry-test".as_ptr(), libc::MFD_CLOEXEC) };
    assert!(fd >= 0, "memfd_create");
    let mut f = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    f.write_all(&bin).ok()?;
    let args: Vec<CString> = argv.iter().filter_map(|a| CString::new(*a).ok()).collect();
    let env: Vec<CString> = Vec::new();
    // SAFETY: the child only calls async-signal-safe fexecve and _exit.
    match unsafe { nix::unistd::fork() }.ok()? {
        nix::unistd::ForkResult::Child => {
            let _ = nix::unistd::fexecve(&f, &args, &env);
            // SAFETY: leave the forked child without running destructors.
            unsafe { libc::_exit(127) }
        }
        nix::unistd::ForkResult::Parent { child } => {
            drop(f);
            match nix::sys::wait::waitpid(child, None).ok()? {
                nix::sys::wait::WaitStatus::Exited(_, code) => Some(code),
                _ => None,
            }
        }
    }
}

#[test]
fn closing_the_capture_during_a_storm_releases_every_exec() {
    if !is_root() {
        return;
    }
    let _g = serial();
    let mut col = Collector::start("collect");
    let mut st = storm(1000);
    std::thread::sleep(Duration::from_millis(300));
    col.send("DROP\n");
    assert!(
        col.wait_for(|l| l == "DROPPED", Duration::from_secs(10)),
        "collector did not drop"
    );
    let took = wait_bounded(
        &mut st,
        Duration::from_secs(30),
        "storm after the capture closed",
    );
    let n = col.caps.len();
    drop(col);
    println!("storm finished {took:?} after the drop; {n} captures before it");
}

#[test]
fn sigkill_of_a_hanging_sensor_releases_every_exec() {
    if !is_root() {
        return;
    }
    let _g = serial();
    // The storm starts first: its spawn must not wait on the hanging sensor.
    let mut st = storm(1000);
    let mut holder = Collector::start("hold");
    let held = holder.wait_for(|l| l.contains("HOLDING"), Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(200));
    let blocked = st.try_wait().ok().flatten().is_none();
    holder.child.kill().expect("SIGKILL the holder");
    holder.child.wait().ok();
    let took = wait_bounded(&mut st, Duration::from_secs(30), "storm after SIGKILL");
    println!("held={held} storm blocked while held={blocked}; finished {took:?} after SIGKILL");
    assert!(held, "the holder never saw an event");
}
