//! Fixture tests: one real-looking state tree per runtime under
//! `tests/data/runtime`, plus malformed, oversize and hostile files.

use std::path::PathBuf;

use super::read::{ReadError, Reader, read_bounded};
use super::*;
use crate::event::Container;

const DOCKER: &str = "876ad67cb5186b5bab91a8250029a9bb3fad59415fced53bc905c3e92afaecb0";
const DOCKERSHIM: &str = "ab12d67cb5186b5bab91a8250029a9bb3fad59415fced53bc905c3e92afaecb0";
const DOCKER_BAD: &str = "bad0d67cb5186b5bab91a8250029a9bb3fad59415fced53bc905c3e92afaecb0";
const TASK: &str = "e1c2b3a4d5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90";
const SANDBOX: &str = "5a5db3a4d5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90";
const RUNC_CRI: &str = "c2c2b3a4d5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90";
const RUNC_DOCKER: &str = "58fa676f22ce7db75687e60febe8506f59863cabaa703409c907ec1837d12f77";
const CRIO: &str = "c3c2b3a4d5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90";
const PODMAN: &str = "d4d2b3a4d5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90";
const POD: &str = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0";

fn data() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/runtime")
}

fn fixture_config() -> MetadataConfig {
    let d = data();
    MetadataConfig {
        runc_roots: vec![d.join("runc")],
        containerd_runc_roots: vec![d.join("no-such-dir")],
        containerd_task_roots: vec![d.join("containerd/task")],
        crun_roots: vec![d.join("crun")],
        storage_roots: vec![d.join("storage/run"), d.join("storage/lib")],
        docker_roots: vec![d.join("docker")],
        ..MetadataConfig::default()
    }
}

fn load(id: &str, runtime: &str) -> (Option<ContainerMeta>, MetaCounters) {
    let mut n = MetaCounters::default();
    let m = Reader::new(&fixture_config()).load(id, runtime, &mut n);
    (m, n)
}

fn s(v: &str) -> Option<String> {
    Some(v.to_owned())
}

#[test]
fn docker_name_image_labels() {
    let (m, n) = load(DOCKER, "docker");
    let m = m.expect("docker meta");
    assert_eq!(m.name, s("es-probe"));
    assert_eq!(m.image, s("execsentry-busybox:test"));
    assert!(
        m.image_id
            .as_deref()
            .unwrap()
            .starts_with("sha256:09ffd49c")
    );
    assert_eq!(m.privileged, Some(false));
    assert_eq!(m.labels.get("app").map(String::as_str), Some("web"));
    assert_eq!(m.pod_name, None);
    assert_eq!(n, MetaCounters::default());
}

#[test]
fn dockershim_is_a_pod_with_an_owner_and_privileged() {
    let m = load(DOCKERSHIM, "docker").0.expect("meta");
    assert_eq!(m.name, s("api"));
    assert_eq!(m.pod_name, s("api-6c5d8b7f4-x2x9q"));
    assert_eq!(m.pod_namespace, s("payments"));
    assert_eq!(m.pod_uid, s(POD));
    assert_eq!(m.privileged, Some(true));
    assert_eq!(m.init_pid, 4242);
    assert_eq!(m.owner, Some(("deployment".into(), "api".into())));
    // Only allow-listed labels survive.
    assert_eq!(m.labels.keys().collect::<Vec<_>>(), ["app"]);
}

#[test]
fn containerd_task_bundle_annotations() {
    let m = load(TASK, "containerd").0.expect("meta");
    assert_eq!(m.name, s("web"));
    assert_eq!(m.pod_name, s("web-7d9f"));
    assert_eq!(m.pod_namespace, s("payments"));
    assert_eq!(m.pod_uid, s(POD));
    assert_eq!(m.image, s("docker.io/library/nginx:1.25"));
    assert_eq!(m.container_type, s("container"));
    assert_eq!(m.init_pid, 4444);
    let sb = load(SANDBOX, "containerd").0.expect("sandbox");
    assert_eq!((sb.container_type, sb.name), (s("sandbox"), None));
    assert_eq!(sb.pod_name, s("web-7d9f"));
}

#[test]
fn plain_runc_is_found_by_its_cgroup_path() {
    let (m, n) = load(RUNC_CRI, "containerd");
    let m = m.expect("found by scan");
    assert_eq!(m.name, s("web"));
    assert_eq!(m.image, s("nginx:1.25"));
    assert_eq!(m.pod_namespace, s("payments"));
    assert_eq!(m.init_pid, 4343);
    assert_eq!(n.scans, 1);
    // The garbage state.json next to it is counted, not fatal.
    assert_eq!(n.errors, 1);
    // Indexed: a second lookup does not list the directories again.
    let mut r = Reader::new(&fixture_config());
    let mut n = MetaCounters::default();
    assert!(r.load(RUNC_CRI, "containerd", &mut n).is_some());
    assert!(r.load(RUNC_CRI, "containerd", &mut n).is_some());
    assert_eq!(n.scans, 1);
    // Keyed by id (Docker's runc): nothing but the pid and bundle there.
    assert_eq!(load(RUNC_DOCKER, "unknown").0, None);
}

#[test]
fn crio_userdata_and_storage_list() {
    let m = load(CRIO, "cri-o").0.expect("meta");
    assert_eq!(m.name, s("redis"));
    assert_eq!(m.pod_name, s("cache-0"));
    assert_eq!(m.pod_namespace, s("kube-system"));
    assert_eq!(m.pod_uid, s(POD));
    assert_eq!(m.image, s("quay.io/opstree/redis:v7.0.12"));
    assert!(m.image_id.unwrap().starts_with("sha256:7f6e"));
    assert_eq!(m.owner, None);
}

#[test]
fn podman_name_from_storage_list() {
    let m = load(PODMAN, "podman").0.expect("meta");
    assert_eq!(m.name, s("quirky_hopper"));
    assert_eq!(m.image, s("docker.io/library/alpine:3.19"));
    assert_eq!(
        m.image_id,
        s("sha256:a416a98b71e224a31ee99cff8e16063554498227d2b696152a9c3e0aa65e5824")
    );
}

#[test]
fn crun_status_points_at_the_bundle() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("bundle");
    std::fs::create_dir_all(&bundle).unwrap();
    let spec = r#"{"ociVersion":"1.0.0","annotations":{"io.kubernetes.cri.container-name":"job","io.kubernetes.cri.sandbox-name":"nightly-28561","io.kubernetes.cri.sandbox-namespace":"batch"}}"#;
    std::fs::write(bundle.join("config.json"), spec).unwrap();
    let id = "f00dfeedf00dfeedf00d";
    std::fs::create_dir_all(dir.path().join("crun").join(id)).unwrap();
    let status = format!(
        r#"{{"pid":777,"process-start-time":123,"cgroup-path":"/machine.slice/libpod-{id}.scope/container","scope":"libpod-{id}.scope","rootfs":"/x/merged","systemd-cgroup":true,"bundle":"{}","created":"2024-05-01T12:00:00Z","owner":"root","detached":true}}"#,
        bundle.display()
    );
    std::fs::write(dir.path().join("crun").join(id).join("status"), status).unwrap();
    let cfg = MetadataConfig {
        crun_roots: vec![dir.path().join("crun")],
        storage_roots: vec![],
        runc_roots: vec![],
        ..fixture_config()
    };
    let m = Reader::new(&cfg)
        .load(id, "podman", &mut MetaCounters::default())
        .expect("meta");
    assert_eq!(
        (m.name, m.pod_namespace, m.init_pid),
        (s("job"), s("batch"), 777)
    );
}

#[test]
fn malformed_files_are_counted_misses() {
    let (m, n) = load(DOCKER_BAD, "docker");
    assert_eq!(m, None);
    // The bad config.v2.json, then the broken runc state met by the scan.
    assert_eq!(n.errors, 2);
    let (m, n) = load("bad0", "containerd");
    assert_eq!(m, None);
    assert!(n.errors >= 1, "{n:?}");
    // Ids that would leave the root are never used as paths.
    for id in ["..", "../docker", "a/b", ""] {
        assert_eq!(load(id, "unknown").0, None);
    }
    // Not a container runtime with state: nothing read.
    assert_eq!(load("web01", "lxc"), (None, MetaCounters::default()));
}

#[test]
fn oversize_and_hostile_files_are_refused_unread() {
    // The real Docker runc state is ~30 KB: over a 8 KiB cap.
    let cfg = MetadataConfig {
        max_file_bytes: 8192,
        ..fixture_config()
    };
    let mut n = MetaCounters::default();
    assert_eq!(Reader::new(&cfg).load(RUNC_CRI, "containerd", &mut n), None);
    assert!(n.oversize >= 1, "{n:?}");
    let path = data().join("runc").join(RUNC_DOCKER).join("state.json");
    assert!(matches!(
        read_bounded(&path, 8192),
        Err(ReadError::TooBig { .. })
    ));
    // A FIFO in place of a state file must not block the sensor.
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("state.json");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
    assert!(matches!(
        read_bounded(&fifo, 8192),
        Err(ReadError::NotRegular { .. })
    ));
    assert!(matches!(
        read_bounded(dir.path(), 8192),
        Err(ReadError::NotRegular { .. })
    ));
    assert!(matches!(
        read_bounded(&dir.path().join("none"), 1),
        Ok(None)
    ));
    // Junk through every parser: errors, never panics.
    for junk in [
        &b""[..],
        b"null",
        b"[]",
        b"{",
        b"\xff\xfe",
        b"{\"config\":7}",
        b"1e999",
    ] {
        let _ = parse::runc_state(junk);
        let _ = parse::oci_config(junk);
        let _ = parse::crun_status(junk);
        let _ = parse::docker_config(junk);
        let _ = parse::docker_hostconfig(junk);
        let _ = parse::storage_containers(junk, "x");
    }
}

#[test]
fn cgroup_leaf_ids() {
    let id = TASK;
    for p in [
        format!("/kubepods/besteffort/pod{POD}/{id}"),
        format!("kubepods-besteffort-pod_x.slice:cri-containerd:{id}"),
        format!("/system.slice/docker-{id}.scope"),
        format!("/machine.slice/crio-{id}.scope"),
    ] {
        assert_eq!(parse::cgroup_leaf_id(&p), id, "{p}");
    }
    assert_eq!(parse::cgroup_leaf_id("/execsentry-test/grp-1"), "grp-1");
    assert_eq!(parse::cgroup_leaf_id(""), "");
}

#[test]
fn owners_from_pod_labels() {
    let l = |pairs: &[(&str, &str)]| {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    };
    let own = |labels: &[(&str, &str)], pod| parse::owner(&l(labels), pod);
    let pair = |t: &str, n: &str| Some((t.to_owned(), n.to_owned()));
    assert_eq!(
        own(&[("pod-template-hash", "7d9f")], Some("web-7d9f-x1")),
        pair("deployment", "web")
    );
    assert_eq!(
        own(&[("pod-template-hash", "zzz")], Some("web-7d9f-x1")),
        None
    );
    assert_eq!(
        own(
            &[
                ("statefulset.kubernetes.io/pod-name", "db-2"),
                ("controller-revision-hash", "db-5c")
            ],
            Some("db-2")
        ),
        pair("statefulset", "db")
    );
    assert_eq!(
        own(&[("controller-revision-hash", "6f")], Some("fluentd-k8s7q")),
        pair("daemonset", "fluentd")
    );
    assert_eq!(
        own(&[("job-name", "nightly-28561")], None),
        pair("job", "nightly-28561")
    );
    assert_eq!(own(&[("pod-template-hash", "h")], Some("nodash")), None);
    assert_eq!(own(&[], Some("web-1")), None);
}

#[test]
fn apply_fills_the_event() {
    let m = load(TASK, "containerd").0.unwrap();
    let mut ev = Event {
        container: Some(Container {
            id: TASK.into(),
            runtime: "containerd".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    apply(&m, &mut ev);
    let c = ev.container.as_ref().unwrap();
    assert_eq!(c.name.as_deref(), Some("web"));
    let img = c.image.as_ref().unwrap();
    assert_eq!(
        (img.name.as_deref(), img.tag.as_deref()),
        (Some("docker.io/library/nginx"), Some("1.25"))
    );
    let o = ev.orchestrator.as_ref().unwrap();
    assert_eq!(o.orchestrator_type, "kubernetes");
    assert_eq!(o.namespace.as_deref(), Some("payments"));
    assert_eq!(o.resource.name.as_deref(), Some("web-7d9f"));
    assert_eq!(o.resource.id.as_deref(), Some(POD));
    assert_eq!(o.resource.resource_type.as_deref(), Some("pod"));
    // A host event is left alone.
    let mut host = Event::default();
    apply(&m, &mut host);
    assert_eq!(host, Event::default());
    // Round trip through JSON (deny_unknown_fields) keeps everything.
    let dm = load(DOCKERSHIM, "docker").0.unwrap();
    apply(&dm, &mut ev);
    let back: Event = serde_json::from_str(&serde_json::to_string(&ev).unwrap()).unwrap();
    assert_eq!(back, ev);
    let c = back.container.unwrap();
    assert_eq!(c.security_context.map(|s| s.privileged), Some(true));
    assert_eq!(c.labels.get("app").map(String::as_str), Some("api"));
    let parent = back.orchestrator.unwrap().resource.parent.unwrap();
    assert_eq!(
        (parent.parent_type.as_str(), parent.name.as_str()),
        ("deployment", "api")
    );
}

#[test]
fn metadata_lookup_caches_and_counts() {
    let mut md = Metadata::new(&fixture_config());
    let mut ev = Event::default();
    ev.process.pid = 10;
    assert_eq!(md.lookup(&ev, &|_| true), None, "no container");
    ev.container = Some(Container {
        id: DOCKER.into(),
        runtime: "docker".into(),
        ..Default::default()
    });
    assert!(md.lookup(&ev, &|_| true).is_some());
    assert!(md.lookup(&ev, &|_| true).is_some());
    ev.container.as_mut().unwrap().id = "0123456789abcdef".into();
    assert_eq!(md.lookup(&ev, &|_| true), None);
    assert_eq!(md.lookup(&ev, &|_| true), None);
    let n = md.counters;
    assert_eq!((n.loads, n.hits, n.misses, n.negative_hits), (1, 1, 1, 1));
    assert_eq!(md.cached(), 2);
    let mut off = Metadata::disabled();
    assert_eq!(off.lookup(&ev, &|_| true), None);
}

/// `cargo test --release --lib cached_lookup -- --nocapture` prints the
/// real figure; the bound only catches pathologies in debug builds.
#[test]
fn cached_lookup_is_cheap() {
    let mut md = Metadata::new(&fixture_config());
    let mut ev = Event {
        container: Some(Container {
            id: DOCKERSHIM.into(),
            runtime: "docker".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    ev.process.pid = 10;
    let n = 20_000u32;
    let t = std::time::Instant::now();
    for _ in 0..n {
        let mut e = ev.clone();
        if let Some(m) = md.lookup(&e, &|_| true) {
            apply(&m, &mut e);
        }
    }
    let per = t.elapsed() / n;
    eprintln!("cached lookup + apply (with an event clone): {per:?}");
    assert_eq!(md.counters.hits, u64::from(n - 1));
    assert!(per < std::time::Duration::from_micros(200), "{per:?}");
}
