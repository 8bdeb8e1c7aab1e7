//! Real runc containers with a chosen `linux.cgroupsPath`, so the tests can
//! reproduce the cgroup layouts of containerd/CRI, cri-o, ... without those
//! daemons. Killed, deleted and their bundle and new cgroup directories
//! removed on drop.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard};

use serde_json::{Value, json};

use super::{cgroup_mounts, populate_rootfs, unique_name};

/// Whether the `runc` binary is installed; otherwise a skip (a failure in
/// CI, see [`super::skip`]).
pub fn runc_available() -> bool {
    super::require_tool("runc", "--version")
}

/// Cgroup directories that runc created for containers of this test binary
/// (they did not exist before). Shared because parallel tests share parents
/// such as /kubepods/besteffort: whichever container is dropped last removes
/// them. The lock is also held around `runc run` so a cleanup never removes
/// a parent that a concurrent start is about to create a child in.
static CREATED_CGROUPS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

fn created_cgroups() -> MutexGuard<'static, Vec<PathBuf>> {
    // A panicking test must not poison cleanup for the others.
    CREATED_CGROUPS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub struct RuncContainer {
    id: String,
    pid: u32,
    bundle: tempfile::TempDir,
}

impl RuncContainer {
    /// Starts `args` detached in a new pid/mnt/ipc/uts namespace (host
    /// network and user namespace: none are needed to look like a container)
    /// in a busybox rootfs. `cgroups_path` is the OCI `linux.cgroupsPath`
    /// (e.g. `/kubepods/besteffort/pod<uid>/<64hex>`); empty leaves runc's
    /// default. Panics with runc's stderr when it fails.
    pub fn start(cgroups_path: &str, annotations: &[(&str, &str)], args: &[&str]) -> RuncContainer {
        let id = unique_name("es");
        let bundle = tempfile::Builder::new()
            .prefix("execsentry-bundle.")
            .tempdir()
            .expect("create bundle dir");
        populate_rootfs(&bundle.path().join("rootfs"));
        let config = oci_config(cgroups_path, annotations, args);
        std::fs::write(
            bundle.path().join("config.json"),
            serde_json::to_vec_pretty(&config).expect("serialize config.json"),
        )
        .expect("write config.json");

        let mut registry = created_cgroups();
        for dir in missing_cgroup_dirs(cgroups_path) {
            if !registry.contains(&dir) {
                registry.push(dir);
            }
        }
        let stderr_path = bundle.path().join("runc.stderr");
        // stdout must not be a pipe: with `terminal: false` the container's
        // stdio is inherited, and a pipe would keep `output()` waiting until
        // the container exits.
        let status = Command::new("runc")
            .args(["run", "-d", "--bundle"])
            .arg(bundle.path())
            .arg("--pid-file")
            .arg(bundle.path().join("pid"))
            .arg(&id)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&stderr_path).expect("create runc stderr file"))
            .status()
            .expect("spawn runc run");
        drop(registry);
        let mut container = RuncContainer { id, pid: 0, bundle };
        if !status.success() {
            let err = std::fs::read_to_string(&stderr_path).unwrap_or_default();
            // Drop still runs: deletes whatever runc left half-created.
            panic!("runc run {} failed ({status}): {err}", container.id);
        }
        container.pid = container
            .state()
            .get("pid")
            .and_then(Value::as_u64)
            .and_then(|p| u32::try_from(p).ok())
            .filter(|&p| p > 0)
            .unwrap_or_else(|| panic!("runc state {}: no pid", container.id));
        container
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Host pid of the container's init process (from `runc state`).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn bundle(&self) -> &Path {
        self.bundle.path()
    }

    /// `runc state <id>` as JSON.
    pub fn state(&self) -> Value {
        let out = Command::new("runc")
            .args(["state", &self.id])
            .output()
            .expect("spawn runc state");
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "runc state {}: {e}: {}",
                self.id,
                String::from_utf8_lossy(&out.stderr)
            )
        })
    }

    /// `runc exec <id> argv...`; the output whatever the exit status.
    pub fn exec(&self, argv: &[&str]) -> Output {
        Command::new("runc")
            .args(["exec", &self.id])
            .args(argv)
            .stdin(Stdio::null())
            .output()
            .expect("spawn runc exec")
    }
}

impl Drop for RuncContainer {
    fn drop(&mut self) {
        let quiet = |args: &[&str]| {
            let _ = Command::new("runc")
                .args(args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        };
        quiet(&["kill", &self.id, "KILL"]);
        // delete -f also kills, and waits for the init to be gone; it removes
        // the container's own (leaf) cgroup.
        quiet(&["delete", "-f", &self.id]);
        let mut registry = created_cgroups();
        // Deepest first; a directory still used by another test's container
        // is not empty, rmdir fails harmlessly and it stays registered.
        registry.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        registry.retain(|dir| std::fs::remove_dir(dir).is_err() && dir.exists());
        // The bundle TempDir is removed when the field drops, after this.
    }
}

/// The OCI runtime config: what `runc spec` would write, reduced to what a
/// busybox container needs, plus the caller's cgroups path and annotations.
fn oci_config(cgroups_path: &str, annotations: &[(&str, &str)], args: &[&str]) -> Value {
    let caps = json!(["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]);
    let annotations: serde_json::Map<String, Value> = annotations
        .iter()
        .map(|(k, v)| ((*k).to_string(), Value::from(*v)))
        .collect();
    let mut linux = json!({
        "namespaces": [
            {"type": "pid"}, {"type": "mount"}, {"type": "ipc"}, {"type": "uts"}
        ],
        "resources": {"devices": [{"allow": false, "access": "rwm"}]},
        "maskedPaths": [
            "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
            "/proc/timer_list", "/proc/sched_debug", "/sys/firmware"
        ],
        "readonlyPaths": [
            "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"
        ]
    });
    if !cgroups_path.is_empty() {
        linux["cgroupsPath"] = Value::from(cgroups_path);
    }
    json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": 0, "gid": 0},
            "args": args,
            "env": ["PATH=/bin", "HOME=/root", "TERM=xterm"],
            "cwd": "/",
            "capabilities": {
                "bounding": caps, "effective": caps, "permitted": caps
            },
            "noNewPrivileges": true
        },
        "root": {"path": "rootfs", "readonly": false},
        "hostname": "execsentry-test",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs",
             "options": ["nosuid", "noexec", "nodev", "ro"]}
        ],
        "linux": linux,
        "annotations": annotations
    })
}

/// Every `<hierarchy>/<prefix of cgroups_path>` that does not exist yet,
/// shallowest first.
fn missing_cgroup_dirs(cgroups_path: &str) -> Vec<PathBuf> {
    let rel = cgroups_path.trim_start_matches('/');
    // Only absolute "/a/b/c" paths map onto directories; runc's systemd form
    // "slice:prefix:name" and the empty default are left alone.
    if rel.is_empty() || cgroups_path.contains(':') {
        return Vec::new();
    }
    let mut out = Vec::new();
    for mount in cgroup_mounts() {
        let mut dir = mount.clone();
        for part in rel.split('/').filter(|p| !p.is_empty()) {
            dir.push(part);
            if !dir.exists() {
                out.push(dir.clone());
            }
        }
    }
    out
}
