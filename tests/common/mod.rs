//! Shared helpers for the integration tests: real containers (Docker, runc),
//! a busybox root filesystem, the sensor as a child process, and JSON lookup.
//!
//! Each test binary does `mod common;` and uses what it needs. Everything a
//! helper creates is owned by a guard whose `Drop` removes it (container,
//! process, bundle, temp dir, cgroup directories), so a panicking test leaves
//! nothing behind.
//!
//! Most helpers need root; call [`require_root`] first and return early when it
//! is false. Off CI that is a skip, said loudly and recorded for `make test`'s
//! summary; with `CI=true` or `EXECSENTRY_REQUIRE_ALL=1` every skip (no root,
//! no Docker, no runc, no `go`) is a failure instead: see [`skip`].

// Every test binary compiles this module but uses only part of it.
#![allow(dead_code, unused_imports)]

mod docker;
pub mod events;
pub mod faults;
pub mod rsyslog;
mod runc;
mod sensor;

pub use docker::{DockerContainer, TEST_IMAGE, docker_available, docker_up};
pub use runc::{RuncContainer, runc_available};
pub use sensor::Sensor;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;

/// Names under which the rootfs carries real copies of busybox: the rules
/// match on the executable name, so these must not be symlinks.
pub const TOOL_COPIES: &[&str] = &["kubectl", "crictl", "ctr", "docker"];

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Whether a test may not skip: in CI (`CI=true`, as CI services set it)
/// or when asked with `EXECSENTRY_REQUIRE_ALL=1` (`.ci/run` does).
pub fn require_all() -> bool {
    let on = |k: &str, v: &[&str]| std::env::var(k).is_ok_and(|x| v.contains(&x.as_str()));
    on("CI", &["true", "1"]) || on("EXECSENTRY_REQUIRE_ALL", &["1", "true"])
}

/// The test that is running: libtest names each test's thread after it.
fn test_name() -> String {
    let bin = std::env::args()
        .next()
        .and_then(|a| {
            Path::new(&a)
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
        })
        .map(|f| match f.rsplit_once('-') {
            Some((name, hash)) if hash.bytes().all(|b| b.is_ascii_hexdigit()) => name.to_string(),
            _ => f,
        })
        .unwrap_or_default();
    let test = std::thread::current().name().unwrap_or("main").to_string();
    format!("{bin}::{test}")
}

/// Where skips are recorded for `make test`'s summary (it sets the path).
fn skip_log() -> PathBuf {
    std::env::var_os("EXECSENTRY_SKIP_LOG")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_TARGET_TMPDIR")).join("skipped.log"))
}

/// A test cannot run here because `why` (no root, a missing tool). With
/// [`require_all`] that is a failure: this panics with the reason. Otherwise
/// it prints a line that stands out, appends it to the skip log so the run's
/// summary lists it, and returns false for the caller to return on.
pub fn skip(why: &str) -> bool {
    let name = test_name();
    let line = format!("{name}: {why}");
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(skip_log())
    {
        use std::io::Write;
        let tag = if require_all() { "FAILED" } else { "SKIPPED" };
        let _ = writeln!(f, "{tag} {line}");
    }
    if require_all() {
        panic!(
            "{line} (CI/EXECSENTRY_REQUIRE_ALL: a test that cannot run fails; tests/support/setup.sh installs what is needed)"
        );
    }
    eprintln!("\n*** SKIPPED {line} ***\n");
    false
}

/// True when running as root; otherwise a [`skip`] (a failure in CI).
pub fn require_root() -> bool {
    is_root() || skip("needs root (real kernel events and containers)")
}

/// True when `tool` runs (`tool <arg>` exits 0); otherwise a [`skip`].
pub fn require_tool(tool: &str, arg: &str) -> bool {
    let ok = Command::new(tool)
        .arg(arg)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    ok || skip(&format!(
        "`{tool}` not found or not working (tests/support/setup.sh installs it)"
    ))
}

/// The repository root (where Cargo.toml is).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The shipped rules directory.
pub fn rules_dir() -> PathBuf {
    repo_root().join("rules")
}

/// Path of a static busybox. Container rootfs need a static binary: there is
/// no libc inside. Debian's busybox-static installs /bin/busybox.
pub fn busybox() -> PathBuf {
    for p in ["/bin/busybox", "/usr/bin/busybox", "/usr/local/bin/busybox"] {
        if Path::new(p).is_file() {
            return PathBuf::from(p);
        }
    }
    panic!("busybox not found: apt-get install busybox-static (tests/support/setup.sh does)");
}

/// A unique, short, lowercase name for containers and bundles: pid and a
/// counter keep parallel tests apart, the clock keeps reruns apart.
pub fn unique_name(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{prefix}-{}-{n}-{t:x}", std::process::id())
}

/// `n` random bytes as lowercase hex (from the kernel, no extra crate).
pub fn random_hex(n: usize) -> String {
    let mut buf = vec![0u8; n];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .expect("read /dev/urandom");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// A random version-4 UUID, e.g. for a pod uid in a kubepods cgroup path.
pub fn random_uuid() -> String {
    let h = random_hex(16);
    format!(
        "{}-{}-4{}-{}{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        // variant bits 10xx
        ["8", "9", "a", "b"][usize::from_str_radix(&h[16..17], 16).unwrap() % 4],
        &h[17..20],
        &h[20..32]
    )
}

/// A container id in the 64-hex shape docker and containerd use.
pub fn random_container_id() -> String {
    random_hex(32)
}

/// A busybox root filesystem in a temporary directory; removed on drop.
pub struct TempRootfs {
    dir: tempfile::TempDir,
}

impl TempRootfs {
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// Builds a busybox rootfs: /bin/busybox, a symlink per applet (so `sh`,
/// `sleep`, `cat` work), and real copies named kubectl/crictl/ctr/docker.
pub fn rootfs() -> TempRootfs {
    let dir = tempfile::Builder::new()
        .prefix("execsentry-rootfs.")
        .tempdir()
        .expect("create temp rootfs dir");
    populate_rootfs(dir.path());
    TempRootfs { dir }
}

/// Fills `root` with the busybox tree described at [`rootfs`].
pub fn populate_rootfs(root: &Path) {
    use std::os::unix::fs::{PermissionsExt, symlink};
    for d in ["bin", "dev", "etc", "proc", "sys", "tmp", "root"] {
        std::fs::create_dir_all(root.join(d)).expect("mkdir in rootfs");
    }
    std::fs::set_permissions(root.join("tmp"), std::fs::Permissions::from_mode(0o1777))
        .expect("chmod rootfs/tmp");
    let bin = root.join("bin");
    let bb = bin.join("busybox");
    std::fs::copy(busybox(), &bb).expect("copy busybox into rootfs");
    let list = output_of_fresh(Command::new(&bb).arg("--list"));
    assert!(list.status.success(), "busybox --list: {list:?}");
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        let applet = applet.trim();
        if applet.is_empty() || applet == "busybox" || TOOL_COPIES.contains(&applet) {
            continue;
        }
        // Relative target so the link resolves inside the container too.
        let _ = symlink("busybox", bin.join(applet));
    }
    for tool in TOOL_COPIES {
        std::fs::copy(&bb, bin.join(tool)).expect("copy busybox as tool");
    }
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n")
        .expect("write passwd");
    std::fs::write(root.join("etc/group"), "root:x:0:\n").expect("write group");
}

/// Runs a command and panics with its stderr unless it succeeds.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Quotes one word for `sh -c` (used to build the `script -c` command line).
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:@%+,".contains(&b))
    {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Looks up `"process.args"`, `"container.id"`, `"process.args.0"` in a JSON
/// event. At each level a literal dotted key is tried before descending, so
/// both nested ECS objects and flattened keys (`{"event.kind": ..}`) resolve;
/// a numeric segment indexes an array.
pub fn json_path<'a>(v: &'a Value, dotted: &str) -> Option<&'a Value> {
    if dotted.is_empty() {
        return Some(v);
    }
    match v {
        Value::Object(map) => {
            if let Some(x) = map.get(dotted) {
                return Some(x);
            }
            // Try every split point, shortest head first (the usual nesting).
            for (i, _) in dotted.match_indices('.') {
                if let Some(inner) = map.get(&dotted[..i])
                    && let Some(found) = json_path(inner, &dotted[i + 1..])
                {
                    return Some(found);
                }
            }
            None
        }
        Value::Array(items) => {
            let (head, rest) = dotted.split_once('.').unwrap_or((dotted, ""));
            let idx: usize = head.parse().ok()?;
            json_path(items.get(idx)?, rest)
        }
        _ => None,
    }
}

/// `json_path` as a string slice, for terse assertions.
pub fn json_str<'a>(v: &'a Value, dotted: &str) -> Option<&'a str> {
    json_path(v, dotted).and_then(Value::as_str)
}

/// The cgroup hierarchies mounted on this host (v1 controllers and the v2
/// unified tree), from /proc/self/mountinfo.
pub fn cgroup_mounts() -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            // "... <mount point> <opts> [optional...] - <fstype> <source> ..."
            let (left, right) = line.split_once(" - ")?;
            let fstype = right.split_whitespace().next()?;
            if fstype != "cgroup" && fstype != "cgroup2" {
                return None;
            }
            left.split_whitespace().nth(4).map(PathBuf::from)
        })
        .collect()
}

/// The lines of `/proc/<pid>/cgroup`, or empty when the process is gone.
pub fn proc_cgroup(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default()
}

/// Whether a pid is alive (and not a zombie).
pub fn pid_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(") ")
            .map(|(_, rest)| !rest.starts_with('Z') && !rest.starts_with('X'))
            .unwrap_or(false),
        Err(_) => false,
    }
}

/// Runs a file this process just wrote. Another thread of the test binary
/// that forks at that moment briefly holds the write fd, so the exec can
/// fail with ETXTBSY: retry that (and only that).
pub fn output_of_fresh(cmd: &mut Command) -> Output {
    for _ in 0..50 {
        match cmd.output() {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) => {
                std::thread::sleep(std::time::Duration::from_millis(20))
            }
            r => return r.unwrap_or_else(|e| panic!("{cmd:?}: {e}")),
        }
    }
    panic!("{cmd:?}: text file busy for a second")
}

/// A container to run things in: Docker when it runs, else runc with a
/// CRI-style cgroup path (and the fallback is said on stderr). `id()` is
/// what the sensor must report as `container.id`.
pub enum AnyContainer {
    Docker(DockerContainer),
    Runc { c: RuncContainer, id: String },
}

impl AnyContainer {
    pub fn start() -> AnyContainer {
        if docker_up() {
            let c = DockerContainer::run(TEST_IMAGE, &["sleep", "300"], &[]);
            assert!(c.wait_running(std::time::Duration::from_secs(10)));
            return AnyContainer::Docker(c);
        }
        if require_all() {
            // In CI the Docker path must be the one tested.
            skip("docker not available: the runc fallback is not taken in CI");
        }
        assert!(runc_available(), "neither docker nor runc");
        eprintln!("docker NOT available: using runc");
        let id = random_container_id();
        let path = format!("/kubepods/besteffort/pod{}/{id}", random_uuid());
        let c = RuncContainer::start(&path, &[], &["sh", "-c", "sleep 300; true"]);
        AnyContainer::Runc { c, id }
    }

    pub fn id(&self) -> &str {
        match self {
            AnyContainer::Docker(c) => c.id(),
            AnyContainer::Runc { id, .. } => id,
        }
    }

    pub fn exec(&self, argv: &[&str]) -> Output {
        match self {
            AnyContainer::Docker(c) => c.exec(argv),
            AnyContainer::Runc { c, .. } => c.exec(argv),
        }
    }

    /// With a terminal where the runtime can give one (`docker exec -it`).
    pub fn exec_tty(&self, argv: &[&str]) -> Output {
        match self {
            AnyContainer::Docker(c) => c.exec_tty(argv),
            AnyContainer::Runc { c, .. } => c.exec(argv),
        }
    }
}

/// `execsentry status --json` from the sensor whose control socket is
/// `control`; panics with the client's stderr when it fails.
pub fn status_json(control: &Path) -> Value {
    let out = Command::new(Sensor::binary())
        .args(["status", "--json", "--socket", control.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("status --json is JSON")
}
