//! Real Docker containers from the local busybox image, removed on drop.

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use super::{rootfs, run_ok, shell_quote, unique_name};

/// The local image `tests/support/setup.sh` builds (`docker import` of the
/// busybox rootfs). Built here too when missing, so a test run does not
/// depend on setup having been run first.
pub const TEST_IMAGE: &str = "execsentry-busybox:test";

/// Label on every container we start, so leftovers can be found by filter.
const LABEL: &str = "execsentry-test=1";

/// Whether `docker info` answers and the test image exists (building it if
/// needed). Cached: asked once per test binary. Without Docker the callers
/// fall back to runc or skip; in CI ([`super::require_all`]) a missing
/// Docker is a failure, since setup.sh starts it.
pub fn docker_available() -> bool {
    docker_up() || super::skip("docker not available (docker info failed or no test image)")
}

/// The probe alone, for callers with a fallback: no skip recorded.
pub fn docker_up() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(probe)
}

fn probe() -> bool {
    let info = Command::new("timeout")
        .args(["20", "docker", "info"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !matches!(info, Ok(s) if s.success()) {
        eprintln!("docker: NOT available (docker info failed), tests fall back to runc");
        return false;
    }
    match ensure_image() {
        Ok(()) => true,
        Err(e) => {
            eprintln!("docker: image {TEST_IMAGE} unavailable ({e}), tests fall back to runc");
            false
        }
    }
}

fn ensure_image() -> Result<(), String> {
    let present = Command::new("docker")
        .args(["image", "inspect", TEST_IMAGE])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|e| e.to_string())?;
    if present.success() {
        return Ok(());
    }
    let root = rootfs();
    let tar = Command::new("tar")
        .arg("-C")
        .arg(root.path())
        .args(["-c", "."])
        .output()
        .map_err(|e| format!("tar: {e}"))?;
    let mut import = Command::new("docker")
        .args([
            "import",
            "-c",
            "ENV PATH=/bin",
            "-c",
            r#"CMD ["/bin/sh"]"#,
            "-",
        ])
        .arg(TEST_IMAGE)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("docker import: {e}"))?;
    // Two tests may import at once; the result is the same image either way.
    import
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(&tar.stdout)
        .map_err(|e| format!("docker import stdin: {e}"))?;
    let out = import.wait_with_output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// A detached container; `docker rm -f` on drop.
pub struct DockerContainer {
    id: String,
}

impl DockerContainer {
    /// `docker run -d [extra_docker_args] image args...`. No network unless
    /// the caller asks for one: tests send no traffic. Panics when docker
    /// refuses; check [`docker_available`] first.
    pub fn run(image: &str, args: &[&str], extra_docker_args: &[&str]) -> DockerContainer {
        let name = unique_name("execsentry-test");
        let mut cmd = Command::new("docker");
        cmd.args(["run", "-d", "--label", LABEL, "--name", &name]);
        if !extra_docker_args.iter().any(|a| a.starts_with("--net")) {
            cmd.arg("--network=none");
        }
        cmd.args(extra_docker_args).arg(image).args(args);
        let out = cmd.output().expect("spawn docker run");
        let stdout = String::from_utf8_lossy(&out.stdout);
        // The id is the last line: pulls or warnings may come first.
        let id = stdout.lines().last().unwrap_or("").trim().to_string();
        if !out.status.success() || !is_full_id(&id) {
            // The container may exist although run failed (e.g. start error).
            let _ = Command::new("docker")
                .args(["rm", "-f", &name])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            panic!(
                "{cmd:?} failed ({}):\nstdout: {stdout}\nstderr: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        DockerContainer { id }
    }

    /// The full 64-hex id `docker run -d` printed.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The host pid of the container's init process.
    pub fn pid(&self) -> u32 {
        let out =
            run_ok(Command::new("docker").args(["inspect", "-f", "{{.State.Pid}}", &self.id]));
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("docker inspect pid")
    }

    /// `docker exec <id> argv...`; the output whatever the exit status.
    pub fn exec(&self, argv: &[&str]) -> Output {
        Command::new("docker")
            .arg("exec")
            .arg(&self.id)
            .args(argv)
            .stdin(Stdio::null())
            .output()
            .expect("spawn docker exec")
    }

    /// `docker exec -it` inside a pty made by `script` (util-linux), so the
    /// process in the container has a controlling terminal as an operator's
    /// interactive session would. Works with no stdin (CI).
    pub fn exec_tty(&self, argv: &[&str]) -> Output {
        let mut line = format!("docker exec -it {}", self.id);
        for a in argv {
            line.push(' ');
            line.push_str(&shell_quote(a));
        }
        Command::new("script")
            .args(["-qec", &line, "/dev/null"])
            .stdin(Stdio::null())
            .output()
            .expect("spawn script for docker exec -it")
    }

    /// Waits until `docker exec` works (the container is running).
    pub fn wait_running(&self, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if self.exec(&["true"]).status.success() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }
}

impl Drop for DockerContainer {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rm", "-f", &self.id])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

fn is_full_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}
