//! Executable identity: what an exec'd file *is*, read from its content,
//! so a renamed or hidden copy of `docker` is still `docker`.
//!
//! The pure core ([`identify`]) parses ELF headers ([`elf`]) and the Go
//! build info ([`buildinfo`]) from any [`ReadAt`] and maps the main package
//! path to a tool name through a [`ToolTable`] loaded from data files
//! ([`tools`] documents where they live and their format). The thin shell
//! ([`Identifier`]) reads the file through `/proc/<pid>/exe` — the file the
//! kernel actually mapped, even if it was renamed, deleted or lives in
//! another mount namespace — and caches the result per file version.
//!
//! Cost: a cache hit is one `stat(2)` of the `/proc/<pid>/exe` magic link
//! (which resolves to the mapped file, never to a path name) and one hash
//! map lookup. A miss opens the link, parses with bounded reads and, when
//! `identity.hash` is on, hashes files up to `identity.max_file_bytes`.

mod buildinfo;
mod cache;
mod elf;
mod readat;
#[cfg(test)]
mod testelf;
mod tools;
mod worker;

use std::fmt::Write as _;
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use buildinfo::{BuildInfoError, GoBuildInfo, Module};
pub use cache::{CacheStats, FileKey, Known};
pub use elf::{Elf, ElfError};
pub use readat::{Budget, FileAt, ReadAt, ReadError};
pub use tools::{ToolTable, ToolsError};

use crate::event::{Event, ExeIdentity, GoFacts, Hash};
use crate::fsclass::{self, FsClass, HostMounts};
pub use worker::{DEADLINE, WAIT_PER_SECOND};

/// Bytes one identification may read: headers, a 1 MiB search for the
/// magic in section-less files, and the build info strings.
pub const PARSE_BUDGET: u64 = 4 << 20;

/// `[identity]` in the configuration file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdentityConfig {
    /// Read Go build info from every new executable (`execsentry.exe.*`).
    pub enabled: bool,
    /// Also compute `process.hash.sha256`, once per file version.
    pub hash: bool,
    /// Larger files are not hashed (their other facts are still read).
    pub max_file_bytes: u64,
    /// Executable file versions remembered.
    pub cache_size: usize,
    /// Tool tables loaded after `tools.toml` of each rules directory.
    pub tools: Vec<PathBuf>,
}

impl Default for IdentityConfig {
    fn default() -> Self {
        IdentityConfig {
            enabled: true,
            hash: false,
            max_file_bytes: 64 << 20,
            cache_size: 4096,
            tools: Vec::new(),
        }
    }
}

impl IdentityConfig {
    /// The offending key and why, for `config.rs` to locate.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if !(1..=1_000_000).contains(&self.cache_size) {
            return Err(("cache_size", "must be between 1 and 1000000".into()));
        }
        Ok(())
    }
}

/// Why a file could not be identified (it is still executed and reported).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentifyError {
    #[error(transparent)]
    Elf(#[from] ElfError),
    #[error(transparent)]
    BuildInfo(#[from] BuildInfoError),
}

/// PURE: the identity of the executable whose bytes `r` holds. `Ok(None)`
/// for files that are not ELF or not Go; an error for malformed ones.
pub fn identify<R: ReadAt + ?Sized>(
    r: &R,
    tools: &ToolTable,
) -> Result<Option<ExeIdentity>, IdentifyError> {
    let r = Budget::new(r, PARSE_BUDGET);
    let elf = match Elf::parse(&r) {
        Ok(e) => e,
        Err(ElfError::NotElf | ElfError::Unsupported) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let Some(info) = buildinfo::read(&r, &elf)? else {
        return Ok(None);
    };
    Ok(Some(ExeIdentity {
        tool: tools.tool_for(&info.main_path).map(str::to_string),
        go: Some(GoFacts {
            main: info.main_path,
            version: info.go_version,
        }),
        reexec: false,
    }))
}

/// The sensor's identity lookups: configuration, tool table and cache.
pub struct Identifier {
    cfg: IdentityConfig,
    tools: ToolTable,
    cache: cache::Cache,
    /// `/proc/<pid>/exe`, rebuilt in place for each exec.
    path: String,
    /// Our mount table, to tell slow filesystems (opened on first use).
    mounts: Option<HostMounts>,
    /// Reads of executables on slow filesystems (started on first use).
    worker: Option<worker::Worker>,
    slow: SlowStats,
}

/// Counters of executables on slow filesystems.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SlowStats {
    /// Lookups handed to the worker.
    pub lookups: u64,
    /// Events that went out without their identity: the worker did not
    /// answer within its deadline, was still busy, or could not start.
    pub stalled: u64,
}

/// What one lookup found.
enum Found {
    Known(Arc<Known>),
    Unreadable,
    /// On a slow filesystem and not answered in time.
    Stalled,
}

impl Identifier {
    pub fn new(cfg: IdentityConfig, tools: ToolTable) -> Self {
        let cache = cache::Cache::new(cfg.cache_size);
        Identifier {
            cfg,
            tools,
            cache,
            path: String::with_capacity(64),
            mounts: None,
            worker: None,
            slow: SlowStats::default(),
        }
    }

    /// Loads the tool tables for `cfg` next to the rules in `rule_paths`.
    pub fn from_config(cfg: &IdentityConfig, rule_paths: &[PathBuf]) -> Result<Self, ToolsError> {
        let tools = if cfg.enabled {
            ToolTable::load(&ToolTable::paths(rule_paths, &cfg.tools))?
        } else {
            ToolTable::default()
        };
        Ok(Identifier::new(cfg.clone(), tools))
    }

    /// One that never looks anything up (replay, tests).
    pub fn disabled() -> Self {
        let cfg = IdentityConfig {
            enabled: false,
            ..IdentityConfig::default()
        };
        Identifier::new(cfg, ToolTable::default())
    }

    pub fn stats(&self) -> CacheStats {
        let mut s = self.cache.stats;
        s.parse_errors += self.worker.as_ref().map_or(0, |w| w.parse_errors);
        s
    }

    pub fn slow_stats(&self) -> SlowStats {
        self.slow
    }

    pub fn tools(&self) -> &ToolTable {
        &self.tools
    }

    /// Adds `execsentry.exe.*` and `process.hash.sha256` to the event of
    /// an exec by `pid`, when its executable can be read. `file`, when
    /// given, is the identity of the file opened for the exec (the fanotify
    /// event's): if the process is already gone (not `alive`: then its
    /// `/proc/<pid>` is not looked at), a cached entry for it still
    /// identifies the executable. Only a fallback: that file may be
    /// the loader's when the program's own filesystem could not be marked.
    /// An executable on a slow filesystem is identified by the worker,
    /// waited for within its bounds; past them the event gets
    /// `execsentry.stalled: ["identity"]` instead.
    pub fn fill(
        &mut self,
        proc_root: &Path,
        pid: u32,
        alive: bool,
        file: Option<FileKey>,
        ev: &mut Event,
    ) {
        if !self.cfg.enabled {
            return;
        }
        // A reaped process's pid may be another's by now.
        let found = if alive {
            self.find(proc_root, pid, true)
        } else {
            Found::Unreadable
        };
        let known = match found {
            Found::Known(k) => k,
            Found::Stalled | Found::Unreadable => {
                if matches!(found, Found::Unreadable) && file.is_none() {
                    self.cache.stats.unreadable += 1;
                }
                match file.and_then(|k| self.cached(&k)) {
                    Some(k) => k,
                    None => {
                        if matches!(found, Found::Stalled) {
                            self.slow.stalled += 1;
                            ev.execsentry.stalled.push(STALLED_IDENTITY.into());
                        } else if file.is_some() {
                            self.cache.stats.unreadable += 1;
                        }
                        return;
                    }
                }
            }
        };
        Self::apply(&known, ev);
        if let Some(tool) = known.exe.as_ref().and_then(|x| x.tool.as_deref())
            && self.is_reexec(proc_root, pid, tool, known.sha256.as_deref(), ev)
            && let Some(x) = ev.execsentry.exe.as_mut()
        {
            x.reexec = true;
        }
    }

    /// Whether the exec'd program, an identified `tool`, is the parent's own
    /// program run again: the same file (through `/proc/self/exe`, however
    /// `/proc/<pid>/exe` then reads), the same path (the parent may have
    /// exited), or a memfd copy of a parent that is the same tool (runc
    /// clones itself into a memfd before `runc init`); or a runtime hook
    /// (below). The same content counts as the same file: runc 1.1 runs
    /// `runc init` from a bind mount of its own binary that it detached
    /// at once, whose `/proc/<pid>/exe` reads `/` and whose mount no
    /// mountinfo lists. A copy of a tool renamed and started from a shell
    /// has a shell for a parent, so it is never a re-exec. Files on slow
    /// filesystems are not waited for here.
    fn is_reexec(
        &mut self,
        proc_root: &Path,
        pid: u32,
        tool: &str,
        sha256: Option<&str>,
        ev: &Event,
    ) -> bool {
        let ppid = ev.process.parent.pid;
        let exe = &ev.process.executable;
        if ppid == 0 || ppid == pid {
            return false;
        }
        if !exe.is_empty() && *exe == ev.process.parent.executable {
            return true;
        }
        let mut key = |p: u32| match self.open_exe(proc_root, p) {
            Some((fd, FsClass::Local)) => fstat_key(&fd),
            _ => None,
        };
        if let (Some(a), Some(b)) = (key(pid), key(ppid))
            && a == b
        {
            return true;
        }
        let parent = match self.find(proc_root, ppid, false) {
            Found::Known(k) => Some(k),
            _ => None,
        };
        if sha256.is_some() && parent.as_ref().and_then(|k| k.sha256.as_deref()) == sha256 {
            return true;
        }
        let parent_tool = parent.and_then(|k| k.exe.as_ref().and_then(|x| x.tool.clone()));
        if exe.starts_with("/memfd:") || exe == "/" {
            return parent_tool.is_some_and(|t| t == tool);
        }
        // A runtime running another runtime's installed program through
        // `/proc/<pid>/exe` (the comm is then `exe`): runc starting dockerd's
        // `libnetwork-setkey` prestart hook. The file is the tool's own,
        // under its own name, and the caller is a runtime.
        let base = exe.rsplit('/').next().unwrap_or(exe);
        ev.process.name == "exe" && base == tool && parent_tool.is_some()
    }

    fn apply(known: &Known, ev: &mut Event) {
        ev.execsentry.exe.clone_from(&known.exe);
        if let Some(h) = &known.sha256 {
            ev.process.hash = Some(Hash {
                sha256: Some(h.clone()),
            });
        }
    }

    /// The cached facts of `key`'s file, counted as a hit.
    fn cached(&mut self, key: &FileKey) -> Option<Arc<Known>> {
        if !self.cfg.enabled {
            return None;
        }
        self.cache.get_if_cached(key)
    }

    /// What is known of `pid`'s executable, from the cache or the file
    /// (through the worker, waited for, if it is on a slow filesystem).
    pub fn lookup(&mut self, proc_root: &Path, pid: u32) -> Option<Arc<Known>> {
        if !self.cfg.enabled {
            return None;
        }
        match self.find(proc_root, pid, true) {
            Found::Known(k) => Some(k),
            Found::Unreadable => {
                self.cache.stats.unreadable += 1;
                None
            }
            Found::Stalled => {
                self.slow.stalled += 1;
                None
            }
        }
    }

    /// `/proc/<pid>/exe` opened `O_PATH` (which asks the file's filesystem
    /// nothing) and where it lives.
    fn open_exe(&mut self, proc_root: &Path, pid: u32) -> Option<(OwnedFd, FsClass)> {
        self.path.clear();
        let _ = write!(self.path, "{}/{pid}/exe", proc_root.display());
        let c = std::ffi::CString::new(self.path.as_str()).ok()?;
        // SAFETY: a NUL-terminated path; the result is checked.
        let fd = unsafe { libc::open(c.as_ptr(), libc::O_PATH | libc::O_CLOEXEC) };
        if fd < 0 {
            return None;
        }
        // SAFETY: a fresh fd we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let mounts = self.mounts.get_or_insert_with(HostMounts::open);
        let class = fsclass::class_of_fd(mounts, proc_root, pid, fd.as_raw_fd());
        Some((fd, class))
    }

    /// Local files are read here; files on slow filesystems by the worker,
    /// waited for only with `wait` (else refused at once, uncounted).
    fn find(&mut self, proc_root: &Path, pid: u32, wait: bool) -> Found {
        let Some((fd, class)) = self.open_exe(proc_root, pid) else {
            return Found::Unreadable;
        };
        if class == FsClass::Slow {
            if !wait {
                return Found::Stalled;
            }
            return self.find_slow(fd);
        }
        // fstat of the O_PATH fd: the mapped file itself, as stat of the
        // magic link gave.
        let Some(key) = fstat_key(&fd) else {
            return Found::Unreadable;
        };
        if let Some(k) = self.cache.get(&key) {
            return Found::Known(k);
        }
        let Ok(file) = File::open(format!("/proc/self/fd/{}", fd.as_raw_fd())) else {
            return Found::Unreadable;
        };
        // Key by what was opened.
        let key = file.metadata().map_or(key, |m| FileKey::from(&m));
        let (known, err) = identify_known(&file, key.size, &self.cfg, &self.tools);
        self.cache.stats.parse_errors += u64::from(err);
        let known = Arc::new(known);
        self.cache.insert(key, Arc::clone(&known));
        Found::Known(known)
    }

    fn find_slow(&mut self, fd: OwnedFd) -> Found {
        self.slow.lookups += 1;
        if self.worker.is_none() {
            match worker::Worker::spawn(self.cfg.clone(), self.tools.clone()) {
                Ok(w) => self.worker = Some(w),
                Err(e) => {
                    log::warn!("identity: starting the slow-filesystem worker: {e}");
                    return Found::Stalled;
                }
            }
        }
        let Some(w) = self.worker.as_mut() else {
            return Found::Stalled;
        };
        match w.identify(fd) {
            worker::Outcome::Done(Some(k)) => Found::Known(k),
            worker::Outcome::Done(None) => Found::Unreadable,
            worker::Outcome::Stalled => Found::Stalled,
        }
    }
}

/// The marker in `execsentry.stalled` of an event whose identity was not
/// read in time.
pub const STALLED_IDENTITY: &str = "identity";

fn fstat_key(fd: &OwnedFd) -> Option<FileKey> {
    nix::sys::stat::fstat(fd).ok().map(|st| FileKey::from(&st))
}

/// Identifies an opened executable of `size` bytes: the facts, and whether
/// its ELF or build info was malformed.
fn identify_known(
    file: &File,
    size: u64,
    cfg: &IdentityConfig,
    tools: &ToolTable,
) -> (Known, bool) {
    let (exe, err) = match identify(&FileAt { file, len: size }, tools) {
        Ok(x) => (x, false),
        Err(e) => {
            log::debug!("executable identity: {e}");
            (None, true)
        }
    };
    let sha256 = (cfg.hash && size <= cfg.max_file_bytes)
        .then(|| sha256_file(file, size))
        .flatten();
    (Known { exe, sha256 }, err)
}

/// Lowercase hex SHA-256 of the first `size` bytes (the keyed size).
pub fn sha256_file(file: &File, size: u64) -> Option<String> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut off = 0u64;
    while off < size {
        let want = usize::try_from((size - off).min(buf.len() as u64)).ok()?;
        let n = file.read_at(&mut buf[..want], off).ok()?;
        if n == 0 {
            return None; // shrank under us: no hash rather than a wrong one
        }
        h.update(&buf[..n]);
        off += n as u64;
    }
    let mut hex = String::with_capacity(64);
    for b in h.finalize().iter() {
        let _ = write!(hex, "{b:02x}");
    }
    Some(hex)
}

#[cfg(test)]
mod tests;
