//! PURE parsers, one per state file, bytes → [`ContainerMeta`] (or the
//! pieces a lookup needs to find the next file). Unknown fields are
//! ignored: runtimes add fields in every release. A file that is not the
//! JSON shape we expect is an error, never a panic.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::ContainerMeta;

pub type Result<T> = std::result::Result<T, serde_json::Error>;

/// OCI annotations as containerd's CRI plugin, cri-o, dockershim and
/// nerdctl write them, into `meta` (fields already set are kept).
pub fn annotations<'a>(meta: &mut ContainerMeta, pairs: impl Iterator<Item = (&'a str, &'a str)>) {
    for (k, v) in pairs {
        if k == "io.kubernetes.cri-o.Labels" {
            // cri-o keeps the container's labels as a JSON string; read one
            // level only, so a label cannot nest labels without end.
            if let Ok(labels) = serde_json::from_str::<BTreeMap<String, String>>(v) {
                for (k, v) in &labels {
                    annotation(meta, k, v);
                }
                for (k, v) in labels {
                    meta.labels.entry(k).or_insert(v);
                }
            }
        } else {
            annotation(meta, k, v);
        }
    }
}

fn annotation(meta: &mut ContainerMeta, k: &str, v: &str) {
    if v.is_empty() {
        return;
    }
    let slot = match k {
        "io.kubernetes.cri.container-name" | "io.kubernetes.container.name" | "nerdctl/name" => {
            &mut meta.name
        }
        "io.kubernetes.cri.sandbox-name" | "io.kubernetes.pod.name" => &mut meta.pod_name,
        "io.kubernetes.cri.sandbox-namespace" | "io.kubernetes.pod.namespace" => {
            &mut meta.pod_namespace
        }
        "io.kubernetes.cri.sandbox-uid" | "io.kubernetes.pod.uid" => &mut meta.pod_uid,
        "io.kubernetes.cri.image-name" | "io.kubernetes.cri-o.ImageName" => &mut meta.image,
        "io.kubernetes.cri-o.ImageRef" => &mut meta.image_id,
        "io.kubernetes.cri.container-type" | "io.kubernetes.cri-o.ContainerType" => {
            &mut meta.container_type
        }
        _ => return,
    };
    if slot.is_none() {
        *slot = Some(v.to_owned());
    }
}

#[derive(Deserialize)]
struct OciSpec {
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

/// An OCI runtime `config.json` (containerd task bundle, cri-o/podman
/// userdata, any runc bundle): its annotations.
pub fn oci_config(bytes: &[u8]) -> Result<ContainerMeta> {
    let spec: OciSpec = serde_json::from_slice(bytes)?;
    let mut meta = ContainerMeta::default();
    annotations(
        &mut meta,
        spec.annotations
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str())),
    );
    Ok(meta)
}

/// What runc's `state.json` tells: its own id, the init pid, the cgroups
/// path the container was created with and the annotations (runc copies
/// them into `config.labels` as `key=value`, next to `bundle=<path>`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuncState {
    pub id: String,
    pub init_pid: u32,
    pub cgroups_path: String,
    pub bundle: Option<String>,
    pub meta: ContainerMeta,
}

#[derive(Deserialize)]
struct RawRunc {
    #[serde(default)]
    id: String,
    #[serde(default)]
    init_process_pid: u32,
    #[serde(default)]
    config: RawRuncConfig,
    #[serde(default)]
    cgroup_paths: BTreeMap<String, String>,
}

#[derive(Deserialize, Default)]
struct RawRuncConfig {
    #[serde(default)]
    labels: Option<Vec<String>>,
    #[serde(default)]
    cgroups: Option<RawCgroups>,
}

#[derive(Deserialize, Default)]
struct RawCgroups {
    #[serde(default)]
    path: Option<String>,
}

pub fn runc_state(bytes: &[u8]) -> Result<RuncState> {
    let raw: RawRunc = serde_json::from_slice(bytes)?;
    let labels = raw.config.labels.unwrap_or_default();
    let pairs = labels.iter().filter_map(|l| l.split_once('='));
    let mut meta = ContainerMeta::default();
    annotations(&mut meta, pairs.clone().filter(|(k, _)| *k != "bundle"));
    let bundle = pairs
        .clone()
        .find(|(k, _)| *k == "bundle")
        .map(|(_, v)| v.to_owned());
    // cgroups.path is what the caller asked for; older runc left it empty
    // and only the resolved per-controller paths say where it went.
    let cgroups_path = raw
        .config
        .cgroups
        .and_then(|c| c.path)
        .filter(|p| !p.is_empty())
        .or_else(|| raw.cgroup_paths.into_values().next())
        .unwrap_or_default();
    meta.init_pid = raw.init_process_pid;
    Ok(RuncState {
        id: raw.id,
        init_pid: raw.init_process_pid,
        cgroups_path,
        bundle,
        meta,
    })
}

/// crun's `status` file: no annotations, but the bundle and the pid.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct CrunStatus {
    #[serde(default)]
    pub pid: u32,
    #[serde(default)]
    pub bundle: Option<String>,
    #[serde(default, rename = "cgroup-path")]
    pub cgroup_path: Option<String>,
}

pub fn crun_status(bytes: &[u8]) -> Result<CrunStatus> {
    serde_json::from_slice(bytes)
}

/// The container id a cgroups path ends in: `/kubepods/…/<id>`,
/// `…/cri-containerd-<id>.scope`, or runc's systemd form `slice:prefix:id`.
pub fn cgroup_leaf_id(path: &str) -> &str {
    let leaf = if path.contains(':') {
        path.rsplit(':').next().unwrap_or(path)
    } else {
        path.rsplit('/').find(|s| !s.is_empty()).unwrap_or(path)
    };
    let leaf = leaf.strip_suffix(".scope").unwrap_or(leaf);
    match leaf.rsplit_once('-') {
        Some((_, id)) if id.len() >= 12 && id.bytes().all(|b| b.is_ascii_hexdigit()) => id,
        _ => leaf,
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerConfigV2 {
    #[serde(default)]
    name: String,
    #[serde(default)]
    image: String,
    #[serde(default)]
    config: DockerInner,
    #[serde(default)]
    state: DockerState,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct DockerInner {
    #[serde(default)]
    image: String,
    #[serde(default)]
    labels: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct DockerState {
    #[serde(default)]
    pid: u32,
}

/// Docker's `config.v2.json`: name, image, labels (with dockershim's
/// `io.kubernetes.*` labels read as the pod).
pub fn docker_config(bytes: &[u8]) -> Result<ContainerMeta> {
    let raw: DockerConfigV2 = serde_json::from_slice(bytes)?;
    let labels = raw.config.labels.unwrap_or_default();
    let mut meta = ContainerMeta::default();
    annotations(
        &mut meta,
        labels.iter().map(|(k, v)| (k.as_str(), v.as_str())),
    );
    if meta.name.is_none() {
        let name = raw.name.trim_start_matches('/');
        meta.name = (!name.is_empty()).then(|| name.to_owned());
    }
    meta.image = (!raw.config.image.is_empty()).then_some(raw.config.image);
    meta.image_id = (!raw.image.is_empty()).then_some(raw.image);
    meta.init_pid = raw.state.pid;
    meta.labels = labels;
    Ok(meta)
}

#[derive(Deserialize)]
struct HostConfig {
    #[serde(default, rename = "Privileged")]
    privileged: bool,
}

/// Docker's `hostconfig.json`: whether the container is privileged.
pub fn docker_hostconfig(bytes: &[u8]) -> Result<bool> {
    Ok(serde_json::from_slice::<HostConfig>(bytes)?.privileged)
}

#[derive(Deserialize)]
struct StorageContainer {
    #[serde(default)]
    id: String,
    #[serde(default)]
    names: Vec<String>,
    /// A JSON document in a string, written by podman or cri-o.
    #[serde(default)]
    metadata: String,
}

#[derive(Deserialize, Default)]
struct StorageMeta {
    #[serde(default, rename = "image-name")]
    image_name: Option<String>,
    #[serde(default, rename = "image-id")]
    image_id: Option<String>,
    #[serde(default)]
    name: Option<String>,
    /// cri-o: the Kubernetes container name (`name` is `k8s_…`).
    #[serde(default, rename = "metadata-name")]
    metadata_name: Option<String>,
    #[serde(default, rename = "pod-name")]
    pod_name: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
    /// cri-o: the pod uid (`pod-id` is the sandbox's container id).
    #[serde(default)]
    uid: Option<String>,
}

/// containers/storage `overlay-containers/containers.json` (podman, cri-o):
/// the entry for `id`, if listed.
pub fn storage_containers(bytes: &[u8], id: &str) -> Result<Option<ContainerMeta>> {
    let all: Vec<StorageContainer> = serde_json::from_slice(bytes)?;
    let Some(c) = all.into_iter().find(|c| c.id == id) else {
        return Ok(None);
    };
    // A bad inner document loses only what it would have added.
    let m: StorageMeta = serde_json::from_str(&c.metadata).unwrap_or_default();
    let nonempty = |s: Option<String>| s.filter(|s| !s.is_empty());
    Ok(Some(ContainerMeta {
        name: nonempty(m.metadata_name)
            .or(nonempty(m.name))
            .or(c.names.into_iter().next()),
        image: nonempty(m.image_name),
        image_id: nonempty(m.image_id).map(|i| {
            if i.contains(':') {
                i
            } else {
                format!("sha256:{i}")
            }
        }),
        pod_name: nonempty(m.pod_name),
        pod_namespace: nonempty(m.namespace),
        pod_uid: nonempty(m.uid),
        ..Default::default()
    }))
}

/// The workload owning a pod, from the labels its controller stamps on it:
/// `(type, name)`. The names follow the controllers' naming of pods.
pub fn owner(labels: &BTreeMap<String, String>, pod: Option<&str>) -> Option<(String, String)> {
    let label = |k: &str| labels.get(k).filter(|v| !v.is_empty());
    if let Some(job) = label("batch.kubernetes.io/job-name").or(label("job-name")) {
        return Some(("job".into(), job.clone()));
    }
    let pod = pod?;
    let cut = |n: usize| -> Option<String> {
        let mut it = pod.rsplitn(n + 1, '-');
        (0..n).try_for_each(|_| it.next().map(drop))?;
        it.next().filter(|s| !s.is_empty()).map(str::to_owned)
    };
    if let Some(hash) = label("pod-template-hash") {
        // Deployment → ReplicaSet `<deploy>-<hash>` → pod `<rs>-<suffix>`.
        let rs = cut(1)?;
        let deploy = rs.strip_suffix(&format!("-{hash}"))?;
        return Some(("deployment".into(), deploy.to_owned()));
    }
    if label("statefulset.kubernetes.io/pod-name").is_some() {
        return Some(("statefulset".into(), cut(1)?));
    }
    if label("controller-revision-hash").is_some() {
        return Some(("daemonset".into(), cut(1)?));
    }
    None
}
