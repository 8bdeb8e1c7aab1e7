//! Container metadata from the runtimes' local state, against real
//! containers: a runc container with a CRI-style cgroup path and CRI
//! annotations (found by scanning runc's state), and Docker containers with
//! a name, labels and `--privileged`. Needs root; skipped loudly otherwise.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{DockerContainer, RuncContainer, Sensor, TEST_IMAGE, docker_available};
use common::{json_path, json_str, random_container_id, random_uuid, run_ok};
use common::{runc_available, unique_name};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(10);

fn exec_with_arg(s: &Sensor, marker: &str) -> Value {
    s.wait_for(
        |v| {
            // In the container: the host's `docker run` carries it too.
            json_str(v, "event.kind") == Some("event")
                && json_path(v, "container").is_some()
                && json_path(v, "process.args")
                    .and_then(Value::as_array)
                    .is_some_and(|a| a.iter().any(|x| x.as_str() == Some(marker)))
        },
        WAIT,
    )
    .unwrap_or_else(|| panic!("no exec event with {marker}; stderr:\n{}", s.stderr()))
}

#[test]
fn runc_with_cri_annotations_names_container_pod_and_image() {
    if !common::require_root() || !runc_available() {
        eprintln!("SKIP: runc not available");
        return;
    }
    let s = common::events::sensor("auto", &[]);
    let pod = random_uuid();
    let id = random_container_id();
    let cgroup = format!("/kubepods/besteffort/pod{pod}/{id}");
    let marker = unique_name("meta");
    let annotations = [
        ("io.kubernetes.cri.container-type", "container"),
        ("io.kubernetes.cri.container-name", "web"),
        ("io.kubernetes.cri.sandbox-name", "web-7d9f"),
        ("io.kubernetes.cri.sandbox-namespace", "payments"),
        ("io.kubernetes.cri.sandbox-uid", pod.as_str()),
        ("io.kubernetes.cri.image-name", "nginx:1.25"),
    ];
    let _c = RuncContainer::start(
        &cgroup,
        &annotations,
        &["sh", "-c", "sleep 300; true", &marker],
    );
    let ev = exec_with_arg(&s, &marker);
    assert_eq!(json_str(&ev, "container.id"), Some(id.as_str()), "{ev}");
    assert_eq!(json_str(&ev, "container.name"), Some("web"), "{ev}");
    assert_eq!(json_str(&ev, "container.image.name"), Some("nginx"));
    assert_eq!(json_str(&ev, "container.image.tag"), Some("1.25"));
    assert_eq!(json_str(&ev, "orchestrator.type"), Some("kubernetes"));
    assert_eq!(json_str(&ev, "orchestrator.namespace"), Some("payments"));
    assert_eq!(
        json_str(&ev, "orchestrator.resource.name"),
        Some("web-7d9f")
    );
    assert_eq!(json_str(&ev, "orchestrator.resource.type"), Some("pod"));
    assert_eq!(
        json_str(&ev, "orchestrator.resource.id"),
        Some(pod.as_str())
    );
}

fn docker_name(id: &str) -> String {
    let out = run_ok(Command::new("docker").args(["inspect", "-f", "{{.Name}}", id]));
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .trim_start_matches('/')
        .to_owned()
}

#[test]
fn docker_container_name_image_and_labels() {
    if !common::require_root() {
        return;
    }
    if !docker_available() {
        eprintln!("SKIP: docker NOT available");
        return;
    }
    let s = common::events::sensor("auto", &[]);
    let marker = unique_name("dmeta");
    let c = DockerContainer::run(
        TEST_IMAGE,
        &["sh", "-c", "sleep 300; true", &marker],
        &["--label", "app=web", "--label", "secret-label=hidden"],
    );
    let ev = exec_with_arg(&s, &marker);
    assert_eq!(json_str(&ev, "container.id"), Some(c.id()), "{ev}");
    assert_eq!(
        json_str(&ev, "container.name"),
        Some(docker_name(c.id()).as_str())
    );
    assert_eq!(
        json_str(&ev, "container.image.name"),
        Some("execsentry-busybox")
    );
    assert_eq!(json_str(&ev, "container.image.tag"), Some("test"));
    assert_eq!(json_str(&ev, "container.labels.app"), Some("web"));
    // Not on the default allow-list.
    assert_eq!(json_path(&ev, "container.labels.secret-label"), None);
    assert_eq!(
        json_path(&ev, "container.security_context.privileged"),
        Some(&Value::Bool(false))
    );
    assert!(
        json_path(&ev, "container.image.hash.all.0")
            .and_then(Value::as_str)
            .is_some_and(|h| h.starts_with("sha256:")),
        "{ev}"
    );
}

/// A `--privileged` container reports `privileged: true`. Some sandboxes
/// (no CAP_SYS_RESOURCE in the bounding set) cannot start one; there the
/// container is created by Docker — its state is real — and a runc process
/// is run in its cgroup, which is how the sensor recognises it anyway.
#[test]
fn docker_privileged_container_is_flagged() {
    if !common::require_root() {
        return;
    }
    if !docker_available() {
        eprintln!("SKIP: docker NOT available");
        return;
    }
    let s = common::events::sensor("auto", &[]);
    let marker = unique_name("priv");
    let args = ["sh", "-c", "sleep 300; true", marker.as_str()];
    let can_start = Command::new("docker")
        .args([
            "run",
            "--rm",
            "--privileged",
            "--network=none",
            TEST_IMAGE,
            "true",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|st| st.success());
    let (id, _guards) = if can_start {
        let c = DockerContainer::run(TEST_IMAGE, &args, &["--privileged"]);
        (c.id().to_owned(), (None, Some(c), None))
    } else {
        eprintln!("docker cannot start --privileged here: created only, runc in its cgroup");
        let created = Created::new(&["--privileged", TEST_IMAGE, "true"]);
        let r = RuncContainer::start(&format!("/docker/{}", created.0), &[], &args);
        // The runc process goes first, then the created container.
        (created.0.clone(), (Some(r), None, Some(created)))
    };
    let ev = exec_with_arg(&s, &marker);
    assert_eq!(json_str(&ev, "container.id"), Some(id.as_str()), "{ev}");
    assert_eq!(json_str(&ev, "container.runtime"), Some("docker"));
    assert_eq!(
        json_path(&ev, "container.security_context.privileged"),
        Some(&Value::Bool(true)),
        "{ev}"
    );
}

/// `docker create`d (never started) container; removed on drop.
struct Created(String);

impl Created {
    fn new(args: &[&str]) -> Created {
        let name = unique_name("execsentry-test");
        let out = run_ok(
            Command::new("docker")
                .args([
                    "create",
                    "--label",
                    "execsentry-test=1",
                    "--network=none",
                    "--name",
                ])
                .arg(&name)
                .args(args),
        );
        let id = String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .unwrap_or("")
            .trim()
            .to_owned();
        Created(id)
    }
}

impl Drop for Created {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rm", "-f", &self.0])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
