//! The bounded identity cache: one entry per executable file version, keyed
//! by what `stat` says of it — device, inode, size and modification time —
//! so a file rewritten in place (new mtime or size) is identified again and
//! a copy (new inode) is identified on its own. Eviction is first-in,
//! first-out: cheap, with no bookkeeping on a hit, which is the hot path.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use crate::event::ExeIdentity;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileKey {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime_sec: i64,
    pub mtime_nsec: i64,
}

impl From<&std::fs::Metadata> for FileKey {
    fn from(m: &std::fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt;
        FileKey {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime_sec: m.mtime(),
            mtime_nsec: m.mtime_nsec(),
        }
    }
}

impl From<&libc::stat> for FileKey {
    fn from(st: &libc::stat) -> Self {
        FileKey {
            dev: st.st_dev,
            ino: st.st_ino,
            size: u64::try_from(st.st_size).unwrap_or(0),
            mtime_sec: st.st_mtime,
            mtime_nsec: st.st_mtime_nsec,
        }
    }
}

/// What is known of one file. `None` fields are negative results, cached
/// too: most executables are not Go binaries, and asking again would cost a
/// parse per exec.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Known {
    pub exe: Option<ExeIdentity>,
    pub sha256: Option<String>,
}

/// Counters, reported with the sensor's other counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    /// Files whose ELF or Go build info could not be parsed.
    pub parse_errors: u64,
    pub evictions: u64,
    /// Execs whose executable could not be stat'ed or opened (process gone).
    pub unreadable: u64,
    pub entries: u64,
}

pub struct Cache {
    map: HashMap<FileKey, Arc<Known>>,
    order: VecDeque<FileKey>,
    cap: usize,
    pub stats: CacheStats,
}

impl Cache {
    pub fn new(cap: usize) -> Self {
        Cache {
            map: HashMap::new(),
            order: VecDeque::new(),
            cap: cap.max(1),
            stats: CacheStats::default(),
        }
    }

    /// Looks `key` up, counting a hit or a miss.
    pub fn get(&mut self, key: &FileKey) -> Option<Arc<Known>> {
        let found = self.map.get(key).cloned();
        if found.is_some() {
            self.stats.hits += 1;
        } else {
            self.stats.misses += 1;
        }
        found
    }

    /// Like [`get`](Self::get), but a miss is not counted: the caller
    /// goes on to [`get`](Self::get) by another way to the file.
    pub fn get_if_cached(&mut self, key: &FileKey) -> Option<Arc<Known>> {
        let found = self.map.get(key).cloned();
        if found.is_some() {
            self.stats.hits += 1;
        }
        found
    }

    pub fn insert(&mut self, key: FileKey, known: Arc<Known>) {
        if self.map.insert(key, known).is_some() {
            return;
        }
        self.order.push_back(key);
        while self.order.len() > self.cap {
            if let Some(old) = self.order.pop_front() {
                self.map.remove(&old);
                self.stats.evictions += 1;
            }
        }
        self.stats.entries = self.map.len() as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(ino: u64) -> FileKey {
        FileKey {
            dev: 1,
            ino,
            size: 10,
            mtime_sec: 0,
            mtime_nsec: 0,
        }
    }

    #[test]
    fn bounded_fifo_with_counters() {
        let mut c = Cache::new(2);
        assert!(c.get(&key(1)).is_none());
        c.insert(key(1), Arc::default());
        c.insert(key(2), Arc::default());
        c.insert(key(3), Arc::default());
        assert!(c.get(&key(1)).is_none(), "oldest evicted");
        assert!(c.get(&key(3)).is_some());
        let s = c.stats;
        assert_eq!((s.hits, s.misses, s.evictions, s.entries), (1, 2, 1, 2));
        let mut changed = key(3);
        changed.mtime_nsec = 1;
        assert!(c.get(&changed).is_none(), "a rewritten file is a new key");
    }
}
