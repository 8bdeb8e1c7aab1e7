//! Container detection (PURE): `/proc/<pid>/cgroup` text plus namespace
//! inodes → which container, under which runtime, a process runs in.
//!
//! Each cgroup line (`N:controllers:/path` on v1, `0::/path` on v2) is
//! checked in file order and the first one that names a container wins.
//! Within a path the *innermost* match wins, so docker inside LXC reports
//! docker. Runtimes are recognised by the cgroup names they create (cgroupfs
//! and systemd drivers alike):
//!
//! | runtime          | path shapes                                                    |
//! |------------------|----------------------------------------------------------------|
//! | docker           | `/docker/<id>`, `docker-<id>.scope`                            |
//! | containerd       | `cri-containerd-<id>.scope`, kubepods leaf without a prefix    |
//! | cri-o            | `crio-<id>.scope` (not `crio-conmon-…`)                        |
//! | podman           | `libpod-<id>.scope` (not `libpod-conmon-…`)                    |
//! | lxc              | `/lxc/<name>`, `lxc.payload.<name>`, `/lxc.payload/<name>`     |
//! | systemd-nspawn   | `machine-<name>.scope` (`\x2d` unescaped; not libvirt `qemu-`) |
//! | ecs              | `/ecs/<task>/<id>`                                             |
//!
//! Under `kubepods` (`/kubepods/<qos>/pod<uid>/<id>`, `/kubepods/pod<uid>/<id>`,
//! `kubepods-<qos>-pod<uid_with_underscores>.slice/<leaf>`) the pod uid is
//! reported and the leaf's prefix picks the runtime (containerd by default).
//!
//! When no path matches but the pid or mount namespace differs from the
//! host's, the process is still in a container of runtime `"unknown"`; its
//! id is the cgroup leaf when that looks like an id (≥ 12 hex digits), else
//! empty. One exception: a process that differs only by mount namespace and
//! sits in a systemd `.service` cgroup is a sandboxed host service
//! (`PrivateTmp=`, `ProtectSystem=`), not a container.

use crate::event::Namespaces;

/// Every `container.runtime` value [`detect`] gives.
pub const RUNTIMES: [&str; 8] = [
    "docker",
    "containerd",
    "cri-o",
    "podman",
    "lxc",
    "systemd-nspawn",
    "ecs",
    "unknown",
];

/// What [`detect`] found out about a process's container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerInfo {
    /// Runtime id (usually 64 hex digits); the name for lxc/nspawn; maybe
    /// empty for `"unknown"`.
    pub id: String,
    /// docker | containerd | cri-o | podman | lxc | systemd-nspawn | ecs | unknown
    pub runtime: &'static str,
    /// Kubernetes pod uid (dashed form), when under `kubepods`.
    pub pod_uid: Option<String>,
    /// Container or machine name, when the cgroup path carries one.
    pub name: Option<String>,
}

impl ContainerInfo {
    fn new(runtime: &'static str, id: &str) -> Self {
        ContainerInfo {
            id: id.to_owned(),
            runtime,
            pod_uid: None,
            name: None,
        }
    }

    fn named(runtime: &'static str, name: String) -> Self {
        ContainerInfo {
            id: name.clone(),
            runtime,
            pod_uid: None,
            name: Some(name),
        }
    }
}

/// Recognises the container of a process from its cgroup text and its
/// namespaces, `host_ns` being the sensor's own (taken at start).
pub fn detect(cgroup: &str, ns: &Namespaces, host_ns: &Namespaces) -> Option<ContainerInfo> {
    from_cgroup(cgroup).or_else(|| namespace_fallback(cgroup, ns, host_ns))
}

/// The container a cgroup path names, without the namespace fallback.
pub fn from_cgroup(cgroup: &str) -> Option<ContainerInfo> {
    cgroup.lines().filter_map(cgroup_path).find_map(detect_path)
}

/// The path part of a `/proc/<pid>/cgroup` line (it may contain ':').
fn cgroup_path(line: &str) -> Option<&str> {
    let mut parts = line.splitn(3, ':');
    let (_id, _controllers) = (parts.next()?, parts.next()?);
    parts.next()
}

/// Scans one path from the root down; the last (innermost) match wins.
fn detect_path(path: &str) -> Option<ContainerInfo> {
    let mut found = None;
    let (mut prev, mut prev2) = ("", "");
    let mut kube = false;
    let mut pod_uid: Option<String> = None;
    let mut after_pod = false;
    for seg in path.split('/').filter(|s| !s.is_empty()) {
        kube |= seg.starts_with("kubepods");
        let hit = if after_pod {
            kube_leaf(seg).map(|mut c| {
                c.pod_uid = pod_uid.clone();
                c
            })
        } else {
            match_segment(seg, prev, prev2)
        };
        after_pod = false;
        if kube && let Some(uid) = pod_segment(seg) {
            pod_uid = Some(uid);
            after_pod = true;
        }
        if hit.is_some() {
            found = hit;
        }
        (prev2, prev) = (prev, seg);
    }
    found
}

/// Matches one segment, given its parent and grandparent.
fn match_segment(seg: &str, prev: &str, prev2: &str) -> Option<ContainerInfo> {
    if let Some(id) = scope_id(seg, "docker-") {
        return Some(ContainerInfo::new("docker", id));
    }
    if let Some(id) = scope_id(seg, "cri-containerd-") {
        return Some(ContainerInfo::new("containerd", id));
    }
    if let Some(id) = scope_id(seg, "crio-") {
        return Some(ContainerInfo::new("cri-o", id));
    }
    if let Some(id) = scope_id(seg, "libpod-") {
        return Some(ContainerInfo::new("podman", id));
    }
    if let Some(name) = seg.strip_prefix("lxc.payload.").filter(|n| !n.is_empty()) {
        return Some(ContainerInfo::named("lxc", name.to_owned()));
    }
    if let Some(name) = machine_name(seg) {
        return Some(ContainerInfo::named("systemd-nspawn", name));
    }
    match (prev2, prev) {
        ("ecs", _) if is_id(seg) => Some(ContainerInfo::new("ecs", seg)),
        (_, "docker") if is_id(seg) => Some(ContainerInfo::new("docker", seg)),
        (_, "lxc" | "lxc.payload") => Some(ContainerInfo::named("lxc", seg.to_owned())),
        _ => None,
    }
}

/// `<prefix><id>` or `<prefix><id>.scope` with a hex id. The hex check is
/// what rejects `crio-conmon-…`, `libpod-conmon-…`, `docker-containerd…`.
fn scope_id<'a>(seg: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = seg.strip_prefix(prefix)?;
    let id = rest.strip_suffix(".scope").unwrap_or(rest);
    is_id(id).then_some(id)
}

/// systemd-machined's `machine-<escaped name>.scope`, except libvirt's
/// `qemu-` machines, which are virtual machines seen from the host.
fn machine_name(seg: &str) -> Option<String> {
    let escaped = seg.strip_prefix("machine-")?.strip_suffix(".scope")?;
    let name = unescape_unit(escaped);
    (!name.is_empty() && !name.starts_with("qemu-")).then_some(name)
}

/// The pod uid of a kubepods pod segment: `pod<uid>` (cgroupfs) or
/// `kubepods[-<qos>]-pod<uid_with_underscores>.slice` (systemd).
fn pod_segment(seg: &str) -> Option<String> {
    let raw = match seg.strip_prefix("pod") {
        Some(uid) => uid,
        None => {
            let slice = seg.strip_prefix("kubepods")?.strip_suffix(".slice")?;
            let at = slice.find("-pod")?;
            &slice[at + 4..]
        }
    };
    let uid_like = raw
        .bytes()
        .all(|b| b.is_ascii_hexdigit() || b == b'-' || b == b'_');
    (!raw.is_empty() && uid_like).then(|| raw.replace('_', "-"))
}

/// The container leaf under a pod: its prefix names the runtime; a bare
/// 64-hex id is containerd (the CRI default).
fn kube_leaf(seg: &str) -> Option<ContainerInfo> {
    for (prefix, runtime) in [
        ("cri-containerd-", "containerd"),
        ("crio-", "cri-o"),
        ("docker-", "docker"),
    ] {
        if let Some(id) = scope_id(seg, prefix) {
            return Some(ContainerInfo::new(runtime, id));
        }
    }
    (seg.len() == 64 && is_id(seg)).then(|| ContainerInfo::new("containerd", seg))
}

/// Container ids are hex; 12 digits is docker's short form.
fn is_id(s: &str) -> bool {
    s.len() >= 12 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Undoes systemd unit-name escaping (`\x2d` → `-`).
fn unescape_unit(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 2..i + 4)
            .filter(|_| b[i] == b'\\' && b.get(i + 1) == Some(&b'x'));
        match hex
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            Some(v) => {
                out.push(v);
                i += 4;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn namespace_fallback(cgroup: &str, ns: &Namespaces, host: &Namespaces) -> Option<ContainerInfo> {
    let differs = |a: u64, b: u64| a != 0 && b != 0 && a != b;
    let pid_differs = differs(ns.pid, host.pid);
    let mnt_differs = differs(ns.mnt, host.mnt);
    if !pid_differs && !mnt_differs {
        return None;
    }
    let leaves = || cgroup.lines().filter_map(cgroup_path).filter_map(leaf);
    if !pid_differs && leaves().any(|l| l.ends_with(".service")) {
        return None;
    }
    let id = leaves().find(|l| is_id(l)).unwrap_or("");
    Some(ContainerInfo::new("unknown", id))
}

fn leaf(path: &str) -> Option<&str> {
    path.rsplit('/').find(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::procfs::ProcFs;

    const D: &str = "3f4e5d6c7b8a99887766554433221100ffeeddccbbaa00998877665544332211";
    const C: &str = "e1c2b3a4d5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90";
    const POD: &str = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0";
    const POD_: &str = "0f1e2d3c_4b5a_6978_8796_a5b4c3d2e1f0";

    fn host() -> Namespaces {
        Namespaces {
            pid: 4026531836,
            mnt: 4026531841,
            net: 4026531840,
            ..Namespaces::default()
        }
    }

    fn inner() -> Namespaces {
        Namespaces {
            pid: 4026532501,
            mnt: 4026532500,
            ..host()
        }
    }

    /// A cgroup v1 file: the path on several controllers, then the v2 line.
    fn v1(path: &str) -> String {
        let mut s = String::new();
        for c in ["12:pids", "11:memory", "4:cpu,cpuacct", "1:name=systemd"] {
            s.push_str(&format!("{c}:{path}\n"));
        }
        s.push_str("0::/\n");
        s
    }

    fn v2(path: &str) -> String {
        format!("0::{path}\n")
    }

    fn check(cgroup: &str, runtime: &str, id: &str, pod: Option<&str>, name: Option<&str>) {
        let got = detect(cgroup, &inner(), &host()).expect(cgroup);
        assert_eq!(got.runtime, runtime, "{cgroup}");
        assert_eq!(got.id, id, "{cgroup}");
        assert_eq!(got.pod_uid.as_deref(), pod, "{cgroup}");
        assert_eq!(got.name.as_deref(), name, "{cgroup}");
        // Namespaces do not matter once the cgroup path names the runtime.
        assert_eq!(detect(cgroup, &host(), &host()), Some(got));
    }

    #[test]
    fn docker() {
        check(&v1(&format!("/docker/{D}")), "docker", D, None, None);
        check(
            &v2(&format!("/system.slice/docker-{D}.scope")),
            "docker",
            D,
            None,
            None,
        );
        check(&v2(&format!("/docker/{D}")), "docker", D, None, None);
    }

    #[test]
    fn containerd_and_kubepods() {
        let pod = Some(POD);
        check(
            &v2(&format!("/system.slice/cri-containerd-{C}.scope")),
            "containerd",
            C,
            None,
            None,
        );
        check(
            &v1(&format!("/kubepods/besteffort/pod{POD}/{C}")),
            "containerd",
            C,
            pod,
            None,
        );
        check(
            &v1(&format!("/kubepods/burstable/pod{POD}/{C}")),
            "containerd",
            C,
            pod,
            None,
        );
        check(
            &v1(&format!("/kubepods/pod{POD}/{C}")),
            "containerd",
            C,
            pod,
            None,
        );
        let sd = format!(
            "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{POD_}.slice/\
             cri-containerd-{C}.scope"
        );
        check(&v2(&sd), "containerd", C, pod, None);
        check(&v1(&sd), "containerd", C, pod, None);
        let guaranteed =
            format!("/kubepods.slice/kubepods-pod{POD_}.slice/cri-containerd-{C}.scope");
        check(&v2(&guaranteed), "containerd", C, pod, None);
        // Kubernetes inside a docker node (kind): the innermost wins.
        check(
            &v1(&format!("/docker/{D}/kubepods/besteffort/pod{POD}/{C}")),
            "containerd",
            C,
            pod,
            None,
        );
    }

    #[test]
    fn kubepods_leaf_prefix_picks_runtime() {
        let pod = Some(POD);
        let base =
            format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{POD_}.slice");
        check(
            &v2(&format!("{base}/crio-{C}.scope")),
            "cri-o",
            C,
            pod,
            None,
        );
        check(
            &v2(&format!("{base}/docker-{D}.scope")),
            "docker",
            D,
            pod,
            None,
        );
        check(
            &v1(&format!("/kubepods/besteffort/pod{POD}/crio-{C}")),
            "cri-o",
            C,
            pod,
            None,
        );
        // A pod-level cgroup (no container leaf) is not enough.
        assert_eq!(detect(&v2(&base), &host(), &host()), None);
        assert_eq!(
            detect(
                &v1(&format!("/kubepods/besteffort/pod{POD}/short")),
                &host(),
                &host()
            ),
            None
        );
    }

    #[test]
    fn cri_o() {
        check(
            &v2(&format!("/machine.slice/crio-{C}.scope")),
            "cri-o",
            C,
            None,
            None,
        );
        check(
            &v1(&format!("/system.slice/crio-{C}.scope")),
            "cri-o",
            C,
            None,
            None,
        );
    }

    #[test]
    fn podman() {
        let rootless = format!(
            "/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{D}.scope/container"
        );
        check(&v2(&rootless), "podman", D, None, None);
        check(
            &v2(&format!("/machine.slice/libpod-{D}.scope")),
            "podman",
            D,
            None,
            None,
        );
        check(
            &v1(&format!("/libpod_parent/libpod-{D}")),
            "podman",
            D,
            None,
            None,
        );
    }

    #[test]
    fn lxc() {
        let web = Some("web01");
        check(&v1("/lxc/web01"), "lxc", "web01", None, web);
        check(
            &v1("/lxc/web01/system.slice/cron.service"),
            "lxc",
            "web01",
            None,
            web,
        );
        check(
            &v2("/lxc.payload.web01/system.slice/cron.service"),
            "lxc",
            "web01",
            None,
            web,
        );
        check(&v1("/lxc.payload/web01"), "lxc", "web01", None, web);
        // Docker inside LXC is docker.
        check(
            &v2(&format!("/lxc.payload.web01/system.slice/docker-{D}.scope")),
            "docker",
            D,
            None,
            None,
        );
    }

    #[test]
    fn systemd_nspawn() {
        let name = Some("debian-buster");
        check(
            &v2("/machine.slice/machine-debian\\x2dbuster.scope/payload/init.scope"),
            "systemd-nspawn",
            "debian-buster",
            None,
            name,
        );
        check(
            &v1("/machine.slice/machine-debian\\x2dbuster.scope"),
            "systemd-nspawn",
            "debian-buster",
            None,
            name,
        );
        // libvirt's qemu guests are VMs, not containers.
        assert_eq!(
            detect(
                &v2("/machine.slice/machine-qemu\\x2d1\\x2dvm.scope"),
                &host(),
                &host()
            ),
            None
        );
    }

    #[test]
    fn ecs() {
        check(
            &v1(&format!("/ecs/5a6b7c8d9e0f41a2b3c4d5e6f7a8b9c0/{C}")),
            "ecs",
            C,
            None,
            None,
        );
    }

    #[test]
    fn first_matching_line_wins() {
        let text = format!("5:memory:/\n4:pids:/docker/{D}\n1:name=systemd:/lxc/other\n");
        check(&text, "docker", D, None, None);
    }

    #[test]
    fn conmon_and_shims_are_not_containers() {
        for path in [
            format!("/machine.slice/crio-conmon-{C}.scope"),
            format!("/machine.slice/libpod-conmon-{D}.scope"),
            "/system.slice/docker-containerd-shim.service".to_owned(),
            "/system.slice/docker.service".to_owned(),
            "/system.slice/containerd.service".to_owned(),
            "/lxc.monitor.web01".to_owned(),
        ] {
            assert_eq!(detect(&v2(&path), &host(), &host()), None, "{path}");
            assert_eq!(detect(&v1(&path), &host(), &host()), None, "{path}");
        }
    }

    #[test]
    fn host_processes() {
        for text in [
            v2("/user.slice/user-1000.slice/session-3.scope"),
            v2("/"),
            v1("/user.slice"),
            v2("/init.scope"),
            String::new(),
        ] {
            assert_eq!(detect(&text, &host(), &host()), None, "{text}");
        }
    }

    #[test]
    fn namespace_only_fallback() {
        let unknown = |text: &str, ns: Namespaces| detect(text, &ns, &host());
        let got = unknown(&v2("/"), inner()).expect("container");
        assert_eq!((got.runtime, got.id.as_str()), ("unknown", ""));
        let got = unknown(&v1("/mycontainers/abcdef0123456789abcdef"), inner()).expect("container");
        assert_eq!(got.id, "abcdef0123456789abcdef");
        let got = unknown(&v2("/custom/not-an-id"), inner()).expect("container");
        assert_eq!(got.id, "");
        let pid_only = Namespaces { pid: 7, ..host() };
        assert!(unknown(&v2("/"), pid_only).is_some());
        // Zero means "could not read": never evidence of a container.
        let unreadable = Namespaces::default();
        assert_eq!(unknown(&v2("/"), unreadable), None);
        assert_eq!(detect(&v2("/"), &inner(), &Namespaces::default()), None);
    }

    #[test]
    fn sandboxed_host_service_is_not_a_container() {
        let mnt_only = Namespaces { mnt: 7, ..host() };
        let svc = v2("/system.slice/systemd-logind.service");
        assert_eq!(detect(&svc, &mnt_only, &host()), None);
        // A separate pid namespace is a container even in a .service.
        assert!(detect(&svc, &inner(), &host()).is_some());
    }

    #[test]
    fn adversarial_input() {
        let huge = format!("0::/{}\n", "a/".repeat(500_000));
        assert_eq!(detect(&huge, &host(), &host()), None);
        let long_id = format!("0::/docker/{}\n", "a".repeat(100_000));
        assert_eq!(
            detect(&long_id, &host(), &host()).map(|c| c.id.len()),
            Some(100_000)
        );
        for junk in [
            "no colons at all",
            ":",
            "::",
            "::::::",
            "0::",
            "0::docker",
            "x:y:/docker/",
            "0::/lxc/",
            "0::/machine-.scope",
            "0::/kubepods/pod/",
            "0::/kubepods-pod.slice/x",
            "0::/docker-\u{fffd}.scope",
            "0::/machine-\\x.scope",
            "0::/machine-\\xzz\\x2.scope",
        ] {
            let _ = detect(junk, &inner(), &host());
        }
        assert_eq!(unescape_unit("a\\x2db\\x"), "a-b\\x");
        assert_eq!(unescape_unit("\\xff"), "\u{fffd}");
    }

    /// Every fixture tree under tests/data/proc, through ProcFs like enrich.
    #[test]
    fn fixture_trees() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/proc");
        let host_ns = ProcFs::new(root.join("host"))
            .namespaces(1234)
            .expect("host ns");
        // (case, pid, expected (runtime, id, pod uid))
        type Want = Option<(&'static str, &'static str, Option<&'static str>)>;
        let cases: [(&str, u32, Want); 14] = [
            ("host", 1234, None),
            ("docker-v1", 4242, Some(("docker", D, None))),
            ("docker-v2", 4242, Some(("docker", D, None))),
            (
                "k8s-containerd-v1",
                4242,
                Some(("containerd", C, Some(POD))),
            ),
            (
                "k8s-guaranteed-v1",
                4242,
                Some(("containerd", C, Some(POD))),
            ),
            (
                "k8s-containerd-v2",
                4242,
                Some(("containerd", C, Some(POD))),
            ),
            ("k8s-crio-v2", 4242, Some(("cri-o", C, Some(POD)))),
            ("podman-v2", 4242, Some(("podman", D, None))),
            ("lxc-v1", 4242, Some(("lxc", "web01", None))),
            ("lxc-v2", 4242, Some(("lxc", "web01", None))),
            (
                "nspawn-v2",
                4242,
                Some(("systemd-nspawn", "debian-buster", None)),
            ),
            ("ecs-v1", 4242, Some(("ecs", C, None))),
            ("ns-only-v2", 4242, Some(("unknown", "", None))),
            (
                "runc-plain-v1",
                4242,
                Some(("unknown", "abcdef0123456789abcdef", None)),
            ),
        ];
        let mut cg = String::new();
        for (case, pid, want) in cases {
            let p = ProcFs::new(root.join(case));
            p.cgroup(pid, &mut cg).expect(case);
            let ns = p.namespaces(pid).expect(case);
            let got = detect(&cg, &ns, &host_ns);
            let got = got
                .as_ref()
                .map(|c| (c.runtime, c.id.as_str(), c.pod_uid.as_deref()));
            assert_eq!(got, want, "{case}");
        }
    }
}
