//! Container and Kubernetes metadata from the runtimes' **local state
//! files** — container name, image, labels, privileged, pod, namespace and
//! owner — without a socket or an API call that could hang the sensor.
//!
//! - [`parse`]: PURE, one parser per file format (runc `state.json`, crun
//!   `status`, OCI `config.json` annotations of containerd task bundles and
//!   cri-o/podman userdata, containers/storage `containers.json`, Docker
//!   `config.v2.json` + `hostconfig.json`).
//! - [`read`]: where each runtime keeps those files (roots from
//!   `[metadata]`), bounded reads, and the one scan plain runc needs.
//! - [`cache`]: one lookup per container id, a short negative cache with
//!   one retry, eviction once the container's processes are gone.
//! - [`apply`]: the result into the ECS event.
//!
//! A missing or malformed file never fails the event: it goes out with
//! what is known and the miss or error is counted.

pub mod cache;
pub mod image;
pub mod parse;
pub mod read;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use crate::config::MetadataConfig;
use crate::event::{Event, Orchestrator, ResourceParent, SecurityContext};

/// What the runtime state says about one container. Every field is
/// optional: each source knows only part of it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerMeta {
    pub name: Option<String>,
    /// The reference as the user gave it (`nginx:1.25`).
    pub image: Option<String>,
    /// The image id or digest (`sha256:…`).
    pub image_id: Option<String>,
    /// After [`read`]: only the allow-listed labels.
    pub labels: BTreeMap<String, String>,
    pub privileged: Option<bool>,
    pub pod_name: Option<String>,
    pub pod_namespace: Option<String>,
    pub pod_uid: Option<String>,
    /// CRI `container` or `sandbox` (the pause container).
    pub container_type: Option<String>,
    /// The workload owning the pod: `(type, name)`.
    pub owner: Option<(String, String)>,
    /// The container's init as the host sees it (0: unknown); its exit is
    /// the container's end.
    pub init_pid: u32,
}

impl ContainerMeta {
    /// Fills what `self` lacks from `other` (a later, less preferred source).
    pub fn merge(&mut self, other: ContainerMeta) {
        fn fill<T>(a: &mut Option<T>, b: Option<T>) {
            if a.is_none() {
                *a = b;
            }
        }
        fill(&mut self.name, other.name);
        fill(&mut self.image, other.image);
        fill(&mut self.image_id, other.image_id);
        fill(&mut self.privileged, other.privileged);
        fill(&mut self.pod_name, other.pod_name);
        fill(&mut self.pod_namespace, other.pod_namespace);
        fill(&mut self.pod_uid, other.pod_uid);
        fill(&mut self.container_type, other.container_type);
        fill(&mut self.owner, other.owner);
        for (k, v) in other.labels {
            self.labels.entry(k).or_insert(v);
        }
        if self.init_pid == 0 {
            self.init_pid = other.init_pid;
        }
    }

    /// Whether any field would show in an event.
    pub fn is_empty(&self) -> bool {
        let bare = ContainerMeta {
            init_pid: self.init_pid,
            ..Default::default()
        };
        *self == bare
    }

    fn is_kubernetes(&self) -> bool {
        self.pod_name.is_some() || self.pod_namespace.is_some() || self.pod_uid.is_some()
    }
}

/// Writes `meta` into an event that already has its `container` (from the
/// cgroup). Values from the cgroup (id, runtime, pod uid) are kept.
pub fn apply(meta: &ContainerMeta, ev: &mut Event) {
    let Some(c) = ev.container.as_mut() else {
        return;
    };
    if meta.name.is_some() {
        c.name.clone_from(&meta.name);
    }
    if let Some(img) = meta.image.as_deref().or(meta.image_id.as_deref()) {
        c.image = image::split(img, meta.image_id.as_deref());
    }
    if !meta.labels.is_empty() {
        c.labels.clone_from(&meta.labels);
    }
    if let Some(p) = meta.privileged {
        c.security_context = Some(SecurityContext { privileged: p });
    }
    if !meta.is_kubernetes() {
        return;
    }
    let o = ev.orchestrator.get_or_insert_with(|| Orchestrator {
        orchestrator_type: "kubernetes".into(),
        ..Default::default()
    });
    let r = &mut o.resource;
    r.resource_type.get_or_insert_with(|| "pod".into());
    if r.id.is_none() {
        r.id.clone_from(&meta.pod_uid);
    }
    if meta.pod_name.is_some() {
        r.name.clone_from(&meta.pod_name);
    }
    if meta.pod_namespace.is_some() {
        o.namespace.clone_from(&meta.pod_namespace);
    }
    if let Some((t, n)) = &meta.owner {
        r.parent = Some(ResourceParent {
            parent_type: t.clone(),
            name: n.clone(),
        });
    }
}

/// Everything the metadata lookup counts.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MetaCounters {
    /// Lookups answered from the cache.
    pub hits: u64,
    /// Lookups that read the state files and found something.
    pub loads: u64,
    /// Lookups that found no state (file absent, or nothing in it).
    pub misses: u64,
    /// Lookups answered "not known" by the negative cache.
    pub negative_hits: u64,
    /// Second attempts after a miss.
    pub retries: u64,
    /// Files that could not be read or parsed.
    pub errors: u64,
    /// Files refused for being larger than `max_file_bytes`.
    pub oversize: u64,
    /// Cache entries dropped (container gone, or cache full).
    pub evictions: u64,
    /// Runc state directories listed to find a container by cgroup path.
    pub scans: u64,
}

/// The lookup the pipeline calls on every exec in a container.
pub struct Metadata {
    reader: Option<read::Reader>,
    cache: cache::Cache,
    pub counters: MetaCounters,
    epoch: Instant,
}

impl Metadata {
    pub fn new(cfg: &MetadataConfig) -> Self {
        Metadata {
            reader: cfg.enabled.then(|| read::Reader::new(cfg)),
            cache: cache::Cache::new(cfg.cache_size),
            counters: MetaCounters::default(),
            epoch: Instant::now(),
        }
    }

    /// Looks nothing up (tests, `enabled = false`).
    pub fn disabled() -> Self {
        Metadata::new(&MetadataConfig {
            enabled: false,
            ..Default::default()
        })
    }

    /// The metadata of the event's container, read once per container.
    /// `alive(pid)` tells whether a process still runs: an entry whose
    /// processes are all gone is evicted.
    pub fn lookup(
        &mut self,
        ev: &Event,
        alive: &dyn Fn(u32) -> bool,
    ) -> Option<Arc<ContainerMeta>> {
        let reader = self.reader.as_mut()?;
        let c = ev.container.as_ref()?;
        if c.id.is_empty() {
            return None;
        }
        let now = self.epoch.elapsed().as_millis() as u64;
        let pid = ev.process.pid;
        self.counters.evictions += self.cache.sweep(now, alive);
        match self.cache.probe(&c.id, pid, now) {
            cache::Probe::Hit(m) => {
                self.counters.hits += 1;
                Some(m)
            }
            cache::Probe::Negative => {
                self.counters.negative_hits += 1;
                None
            }
            cache::Probe::Load { retry } => {
                self.counters.retries += u64::from(retry);
                let found = reader.load(&c.id, &c.runtime, &mut self.counters);
                match &found {
                    Some(_) => self.counters.loads += 1,
                    None => self.counters.misses += 1,
                }
                let (m, evicted) = self.cache.store(&c.id, pid, found, now, alive);
                self.counters.evictions += evicted;
                m
            }
        }
    }

    pub fn cached(&self) -> usize {
        self.cache.len()
    }
}

#[cfg(test)]
mod tests;
