//! Where each runtime keeps its state, and reading it safely.
//!
//! Those files are written by whoever controls the runtime, so every read
//! is bounded: the file is opened non-blocking (a FIFO planted in its place
//! cannot hang the sensor), must be a regular file, and is refused — never
//! loaded — when larger than `max_file_bytes`.
//!
//! Most runtimes key their state by the container id the cgroup shows.
//! Plain runc does not: `/run/runc/<runc id>/state.json` is keyed by runc's
//! own id, while the cgroup leaf is whatever `cgroupsPath` said. For those
//! the state directories are listed and each new `state.json` is indexed by
//! the leaf of its cgroups path — incrementally, so a directory is parsed
//! once, and only when an id was not found directly.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::{ContainerMeta, MetaCounters, parse};
use crate::config::MetadataConfig;

/// Directory entries listed per scan of a state root, at most.
const MAX_SCAN_ENTRIES: usize = 4096;
/// `init.pid` and the like are a few bytes.
const SMALL_FILE: u64 = 64;

/// Why a state file was not used (besides simply not being there).
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{path}: {len} bytes, over the {max}-byte limit")]
    TooBig { path: PathBuf, len: u64, max: u64 },
    #[error("{path}: not a regular file")]
    NotRegular { path: PathBuf },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

/// Reads a whole regular file of at most `max` bytes; `Ok(None)` when it
/// does not exist.
pub fn read_bounded(path: &Path, max: u64) -> Result<Option<Vec<u8>>, ReadError> {
    let io_err = |source| ReadError::Io {
        path: path.to_path_buf(),
        source,
    };
    let f = match File::options()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(path)
    {
        Ok(f) => f,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
            ) =>
        {
            return Ok(None);
        }
        Err(e) => return Err(io_err(e)),
    };
    let md = f.metadata().map_err(io_err)?;
    if !md.is_file() {
        return Err(ReadError::NotRegular {
            path: path.to_path_buf(),
        });
    }
    let too_big = |len| ReadError::TooBig {
        path: path.to_path_buf(),
        len,
        max,
    };
    if md.len() > max {
        return Err(too_big(md.len()));
    }
    // The file may grow after fstat: never take more than max + 1.
    let mut buf = Vec::with_capacity(md.len() as usize);
    f.take(max + 1).read_to_end(&mut buf).map_err(io_err)?;
    if buf.len() as u64 > max {
        return Err(too_big(buf.len() as u64));
    }
    Ok(Some(buf))
}

/// Ids become path components: nothing that could leave the root.
fn safe_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 256 && id != "." && id != ".." && !id.contains(['/', '\0'])
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Docker,
    ContainerdTask,
    RuncById,
    CrunById,
    Storage,
    RuncScan,
}

/// Reads the state files under the configured roots.
pub struct Reader {
    cfg: MetadataConfig,
    /// Runc state directory → the container id its cgroups path ends in.
    index: HashMap<PathBuf, String>,
}

impl Reader {
    pub fn new(cfg: &MetadataConfig) -> Self {
        Reader {
            cfg: cfg.clone(),
            index: HashMap::new(),
        }
    }

    /// Everything the state files say about container `id` of `runtime`,
    /// labels filtered by the allow-list; `None` when nothing was found.
    pub fn load(&mut self, id: &str, runtime: &str, n: &mut MetaCounters) -> Option<ContainerMeta> {
        use Source::*;
        if !safe_id(id) {
            return None;
        }
        let order: &[Source] = match runtime {
            "docker" | "ecs" => &[Docker, RuncById, ContainerdTask, RuncScan],
            "containerd" => &[ContainerdTask, RuncById, RuncScan],
            "cri-o" | "podman" => &[Storage, CrunById, RuncById],
            // Names, not OCI containers: there is no state to read.
            "lxc" | "systemd-nspawn" => &[],
            _ => &[
                ContainerdTask,
                Docker,
                Storage,
                RuncById,
                CrunById,
                RuncScan,
            ],
        };
        let mut meta = order
            .iter()
            .find_map(|s| self.source(*s, id, n).filter(|m| !m.is_empty()))?;
        meta.owner = meta
            .owner
            .take()
            .or_else(|| parse::owner(&meta.labels, meta.pod_name.as_deref()));
        let allow = &self.cfg.labels;
        meta.labels.retain(|k, _| allowed(allow, k));
        Some(meta)
    }

    fn source(&mut self, s: Source, id: &str, n: &mut MetaCounters) -> Option<ContainerMeta> {
        match s {
            Source::Docker => self.docker(id, n),
            Source::ContainerdTask => self.containerd_task(id, n),
            Source::RuncById => {
                let direct = self.cfg.runc_roots.iter().map(|r| r.join(id));
                let nested = (self.cfg.containerd_runc_roots.iter())
                    .flat_map(|r| subdirs(r))
                    .map(|ns| ns.join(id));
                direct.chain(nested).find_map(|d| self.runc(&d, n))
            }
            Source::CrunById => self.cfg.crun_roots.iter().find_map(|r| {
                let st = self.parsed(&r.join(id).join("status"), n, parse::crun_status)?;
                let mut m = self.bundle(st.bundle.as_deref(), n).unwrap_or_default();
                m.init_pid = st.pid;
                Some(m)
            }),
            Source::Storage => self.storage(id, n),
            Source::RuncScan => {
                let dir = self.scan(id, n)?;
                self.runc(&dir, n)
            }
        }
    }

    fn docker(&self, id: &str, n: &mut MetaCounters) -> Option<ContainerMeta> {
        self.cfg.docker_roots.iter().find_map(|r| {
            let dir = r.join(id);
            let mut m = self.parsed(&dir.join("config.v2.json"), n, parse::docker_config)?;
            m.privileged = self.parsed(&dir.join("hostconfig.json"), n, parse::docker_hostconfig);
            Some(m)
        })
    }

    /// `<root>/<namespace>/<id>/config.json` (containerd v2 shims).
    fn containerd_task(&self, id: &str, n: &mut MetaCounters) -> Option<ContainerMeta> {
        for root in &self.cfg.containerd_task_roots {
            for ns in subdirs(root) {
                let dir = ns.join(id);
                if let Some(mut m) = self.parsed(&dir.join("config.json"), n, parse::oci_config) {
                    m.init_pid = read_bounded(&dir.join("init.pid"), SMALL_FILE)
                        .ok()
                        .flatten()
                        .and_then(|b| String::from_utf8(b).ok())
                        .and_then(|s| s.trim().parse().ok())
                        .unwrap_or(0);
                    return Some(m);
                }
            }
        }
        None
    }

    /// cri-o and podman: the userdata `config.json`, then the storage's
    /// container list for the names and image it alone knows.
    fn storage(&self, id: &str, n: &mut MetaCounters) -> Option<ContainerMeta> {
        let mut found: Option<ContainerMeta> = None;
        for root in &self.cfg.storage_roots {
            let oc = root.join("overlay-containers");
            let user = oc.join(id).join("userdata").join("config.json");
            let listed = self
                .parsed(&oc.join("containers.json"), n, |b| {
                    parse::storage_containers(b, id)
                })
                .flatten();
            for m in [self.parsed(&user, n, parse::oci_config), listed]
                .into_iter()
                .flatten()
            {
                found.get_or_insert_with(Default::default).merge(m);
            }
        }
        found
    }

    fn runc(&self, dir: &Path, n: &mut MetaCounters) -> Option<ContainerMeta> {
        let st = self.parsed(&dir.join("state.json"), n, parse::runc_state)?;
        let mut m = st.meta;
        // Old runc kept the annotations only in the bundle.
        if m.is_empty()
            && let Some(b) = self.bundle(st.bundle.as_deref(), n)
        {
            m.merge(b);
        }
        Some(m)
    }

    fn bundle(&self, bundle: Option<&str>, n: &mut MetaCounters) -> Option<ContainerMeta> {
        let b = Path::new(bundle?);
        if !b.is_absolute() {
            return None;
        }
        self.parsed(&b.join("config.json"), n, parse::oci_config)
    }

    /// Finds the runc state directory whose cgroups path ends in `id`.
    fn scan(&mut self, id: &str, n: &mut MetaCounters) -> Option<PathBuf> {
        let hit = |index: &HashMap<PathBuf, String>| {
            index
                .iter()
                .find(|(_, leaf)| *leaf == id)
                .map(|(d, _)| d.clone())
        };
        if let Some(d) = hit(&self.index).filter(|d| d.exists()) {
            return Some(d);
        }
        n.scans += 1;
        let dirs = self.state_dirs();
        let listed: HashSet<&PathBuf> = dirs.iter().collect();
        self.index.retain(|d, _| listed.contains(d));
        for d in &dirs {
            if self.index.contains_key(d) {
                continue;
            }
            let leaf = self
                .parsed(&d.join("state.json"), n, parse::runc_state)
                .map(|st| parse::cgroup_leaf_id(&st.cgroups_path).to_owned())
                .unwrap_or_default();
            // Indexed even when unreadable, so it is not parsed again.
            self.index.insert(d.clone(), leaf);
        }
        hit(&self.index)
    }

    /// Every runc state directory: `<runc root>/<id>` and
    /// `<containerd runc root>/<namespace>/<id>`, bounded in number.
    fn state_dirs(&self) -> Vec<PathBuf> {
        let flat = self.cfg.runc_roots.iter().cloned();
        let nested = self
            .cfg
            .containerd_runc_roots
            .iter()
            .flat_map(|r| subdirs(r));
        flat.chain(nested)
            .flat_map(|r| subdirs(&r))
            .take(MAX_SCAN_ENTRIES)
            .collect()
    }

    /// Reads and parses one file, counting what went wrong.
    fn parsed<T, E: std::fmt::Display>(
        &self,
        path: &Path,
        n: &mut MetaCounters,
        parse: impl FnOnce(&[u8]) -> Result<T, E>,
    ) -> Option<T> {
        match read_bounded(path, self.cfg.max_file_bytes) {
            Ok(Some(bytes)) => match parse(&bytes) {
                Ok(v) => Some(v),
                Err(e) => {
                    n.errors += 1;
                    log::debug!("metadata: {}: {e}", path.display());
                    None
                }
            },
            Ok(None) => None,
            Err(e) => {
                match e {
                    ReadError::TooBig { .. } => n.oversize += 1,
                    _ => n.errors += 1,
                }
                log::debug!("metadata: {e}");
                None
            }
        }
    }
}

/// The subdirectories of `dir`, bounded; none if it cannot be listed.
fn subdirs(dir: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    rd.filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .take(MAX_SCAN_ENTRIES)
        .map(|e| e.path())
        .collect()
}

/// Whether label `key` is on the allow-list (`prefix*` entries match any
/// key that starts with the prefix).
pub fn allowed(allow: &[String], key: &str) -> bool {
    allow.iter().any(|a| match a.strip_suffix('*') {
        Some(prefix) => key.starts_with(prefix),
        None => a == key,
    })
}
