//! The process table: what the sensor knows about every live process, so an
//! exec event can name its parent even when the parent is already gone.
//!
//! PURE: no I/O and no clock; callers pass `now_ms`. Identity is
//! `(pid, start_ticks)`, so a reused pid never inherits the old process's
//! parent, container or argv. The table is bounded: when full, the oldest
//! entry is evicted and counted.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use crate::container::ContainerInfo;

/// `(pid, start time in clock ticks since boot)`. A start time of 0 means
/// "not read yet" (an entry created from a fork event, before its exec).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProcKey {
    pub pid: u32,
    pub start_ticks: u64,
}

/// What a process is running, kept for its children's `process.parent.*`.
/// Shared between a parent and the children it forks until they exec.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Image {
    pub name: String,
    pub executable: String,
    pub args: Vec<String>,
    pub command_line: String,
    pub container: Option<ContainerInfo>,
    /// For the children's `process.parent.*`.
    pub args_count: u32,
    pub user_id: String,
    pub group_id: String,
    pub working_directory: Option<String>,
    pub interactive: bool,
    /// The session's entry process, which the children inherit.
    pub entry_leader: Option<Arc<crate::event::EntryLeader>>,
}

#[derive(Debug, Clone)]
pub struct Entry {
    pub key: ProcKey,
    pub parent: Option<ProcKey>,
    pub image: Arc<Image>,
    pub exited_at_ms: Option<u64>,
    /// Insertion number, so the eviction queue can tell a stale slot.
    seq: u64,
}

impl Entry {
    fn live(key: ProcKey, parent: Option<ProcKey>, image: Arc<Image>) -> Entry {
        Entry {
            key,
            parent,
            image,
            exited_at_ms: None,
            seq: 0,
        }
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TableStats {
    pub live: usize,
    pub evictions: u64,
}

pub struct ProcessTable {
    by_pid: HashMap<u32, Entry>,
    /// Exited processes kept for `grace_ms` so late events can still name
    /// them as parent; keyed by full identity because the pid may be reused.
    exited: HashMap<ProcKey, Entry>,
    exit_order: VecDeque<(u64, ProcKey)>,
    /// Insertion order `(pid, seq)`, for eviction when full. May hold stale
    /// slots (pid removed or reused since); those are skipped.
    insert_order: VecDeque<(u32, u64)>,
    next_seq: u64,
    capacity: usize,
    grace_ms: u64,
    evictions: u64,
}

/// Parents' argv is kept for `process.parent.args`; cap what one entry may
/// hold so a table full of huge command lines stays small.
pub const MAX_IMAGE_ARGS_BYTES: usize = 4096;
/// Exited processes kept at most, whatever their grace period: a parent
/// that exited more than this many exits ago is rarely named again, and
/// each entry holds an image of a few hundred bytes.
pub const MAX_EXITED: usize = 4096;

impl ProcessTable {
    pub fn new(capacity: usize, grace_ms: u64) -> Self {
        ProcessTable {
            // Grown as needed: a table sized for `capacity` up front is
            // megabytes of memory a quiet host never touches.
            by_pid: HashMap::new(),
            exited: HashMap::new(),
            exit_order: VecDeque::new(),
            insert_order: VecDeque::new(),
            next_seq: 0,
            capacity: capacity.max(1),
            grace_ms,
            evictions: 0,
        }
    }

    pub fn stats(&self) -> TableStats {
        TableStats {
            live: self.by_pid.len(),
            evictions: self.evictions,
        }
    }

    /// The live process with this pid.
    pub fn live(&self, pid: u32) -> Option<&Entry> {
        self.by_pid.get(&pid)
    }

    /// A process by identity, live or recently exited.
    pub fn get(&self, key: ProcKey) -> Option<&Entry> {
        match self.by_pid.get(&key.pid) {
            Some(e) if e.key == key => Some(e),
            _ => self.exited.get(&key),
        }
    }

    /// Records a process seen in a `/proc` scan or at exec.
    pub fn upsert(&mut self, key: ProcKey, parent: Option<ProcKey>, image: Arc<Image>) {
        if let Some(e) = self.by_pid.get_mut(&key.pid) {
            // Same process (or its fork-time entry, start not yet known):
            // update in place, keeping the fork-time parent identity.
            if e.key == key || e.key.start_ticks == 0 {
                e.key = key;
                e.image = image;
                if e.parent.is_none() {
                    e.parent = parent;
                }
                return;
            }
        }
        self.insert(Entry::live(key, parent, image));
    }

    /// Gives a fork-created entry (start time not read yet) its identity,
    /// before it forks children that will name it as their parent.
    pub fn set_start(&mut self, pid: u32, start_ticks: u64) {
        if let Some(e) = self.by_pid.get_mut(&pid)
            && e.key.start_ticks == 0
        {
            e.key.start_ticks = start_ticks;
        }
    }

    /// A new process forked from `parent_pid`; it runs the parent's image
    /// until it execs. Its start time is read only if it execs.
    pub fn fork(&mut self, parent_pid: u32, child_pid: u32) {
        let (parent, image) = match self.by_pid.get(&parent_pid) {
            Some(p) => (Some(p.key), p.image.clone()),
            None => (None, Arc::new(Image::default())),
        };
        let key = ProcKey {
            pid: child_pid,
            start_ticks: 0,
        };
        self.insert(Entry::live(key, parent, image));
    }

    /// The process left; keep it for the grace period.
    pub fn exit(&mut self, pid: u32, now_ms: u64) {
        if let Some(mut e) = self.by_pid.remove(&pid) {
            e.exited_at_ms = Some(now_ms);
            self.exit_order.push_back((now_ms, e.key));
            self.exited.insert(e.key, e);
            self.bound_exited();
        }
    }

    /// Under an exec storm the grace period alone would keep every process
    /// of the last seconds (thousands per second, each with its image):
    /// the oldest exited entries go first, counted as evictions.
    fn bound_exited(&mut self) {
        while self.exited.len() > MAX_EXITED {
            let Some((_, key)) = self.exit_order.pop_front() else {
                break;
            };
            if self.exited.remove(&key).is_some() {
                self.evictions += 1;
            }
        }
    }

    /// Drops exited entries whose grace period is over. Returns how many.
    pub fn expire(&mut self, now_ms: u64) -> usize {
        let mut n = 0;
        while let Some(&(at, key)) = self.exit_order.front() {
            if now_ms.saturating_sub(at) < self.grace_ms {
                break;
            }
            self.exit_order.pop_front();
            if self.exited.remove(&key).is_some() {
                n += 1;
            }
        }
        n
    }

    /// Forgets every live pid not in `alive` (after a kernel overrun, when
    /// exit events may have been lost).
    pub fn retain_live(&mut self, alive: &dyn Fn(u32) -> bool, now_ms: u64) {
        let gone: Vec<u32> = self.by_pid.keys().copied().filter(|p| !alive(*p)).collect();
        for pid in gone {
            self.exit(pid, now_ms);
        }
    }

    fn insert(&mut self, mut entry: Entry) {
        let key = entry.key;
        self.next_seq += 1;
        entry.seq = self.next_seq;
        if let Some(old) = self.by_pid.insert(key.pid, entry) {
            // The pid was reused while we missed the exit: keep the old one
            // as exited so its children still resolve to the right parent.
            if old.key != key {
                self.exit_order.push_back((0, old.key));
                self.exited.insert(old.key, old);
                self.bound_exited();
            }
        }
        self.insert_order.push_back((key.pid, self.next_seq));
        self.evict_if_full();
        // The order queue may hold stale slots; compact it when it grows
        // far beyond the table so memory stays bounded.
        if self.insert_order.len() > self.capacity * 2 {
            let by_pid = &self.by_pid;
            self.insert_order
                .retain(|(pid, seq)| by_pid.get(pid).is_some_and(|e| e.seq == *seq));
        }
    }

    fn evict_if_full(&mut self) {
        while self.by_pid.len() > self.capacity {
            let Some((pid, seq)) = self.insert_order.pop_front() else {
                return;
            };
            if self.by_pid.get(&pid).is_some_and(|e| e.seq == seq) {
                self.by_pid.remove(&pid);
                self.evictions += 1;
            }
        }
        // Exited entries are bounded by the same capacity.
        while self.exited.len() > self.capacity {
            let Some((_, k)) = self.exit_order.pop_front() else {
                return;
            };
            if self.exited.remove(&k).is_some() {
                self.evictions += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn img(name: &str) -> Arc<Image> {
        Arc::new(Image {
            name: name.into(),
            ..Default::default()
        })
    }

    fn key(pid: u32, start_ticks: u64) -> ProcKey {
        ProcKey { pid, start_ticks }
    }

    #[test]
    fn fork_inherits_parent_image_and_identity() {
        let mut t = ProcessTable::new(16, 1000);
        t.upsert(key(10, 5), None, img("bash"));
        t.fork(10, 11);
        let child = t.live(11).unwrap();
        assert_eq!(child.parent, Some(key(10, 5)));
        assert_eq!(child.image.name, "bash");
        // Exec fills the start time and keeps the fork-time parent.
        t.upsert(key(11, 7), Some(key(999, 1)), img("ls"));
        let child = t.live(11).unwrap();
        assert_eq!(child.key, key(11, 7));
        assert_eq!(child.parent, Some(key(10, 5)));
        assert_eq!(child.image.name, "ls");
    }

    #[test]
    fn a_fork_only_parent_gets_its_identity_before_its_children() {
        let mut t = ProcessTable::new(16, 1000);
        t.upsert(key(10, 5), None, img("bash"));
        t.fork(10, 11); // a subshell: fork without exec
        t.set_start(11, 77);
        t.fork(11, 12);
        assert_eq!(t.live(12).unwrap().parent, Some(key(11, 77)));
        assert!(t.get(key(11, 77)).is_some());
        t.set_start(11, 99);
        assert_eq!(t.live(11).unwrap().key, key(11, 77), "set once");
    }

    #[test]
    fn exited_parent_is_found_during_grace_then_expires() {
        let mut t = ProcessTable::new(16, 1000);
        t.upsert(key(10, 5), None, img("bash"));
        t.exit(10, 100);
        assert!(t.live(10).is_none());
        assert_eq!(t.get(key(10, 5)).unwrap().image.name, "bash");
        assert_eq!(t.expire(500), 0);
        assert_eq!(t.expire(1100), 1);
        assert!(t.get(key(10, 5)).is_none());
    }

    #[test]
    fn a_storm_of_exits_keeps_at_most_max_exited() {
        let mut t = ProcessTable::new(1 << 20, 60_000);
        let n = MAX_EXITED as u32 + 100;
        for pid in 1..=n {
            t.upsert(key(pid, 1), None, img("true"));
            t.exit(pid, 0);
        }
        assert_eq!(t.exited.len(), MAX_EXITED);
        assert_eq!(t.stats().evictions, 100);
        assert!(t.get(key(1, 1)).is_none(), "the oldest went first");
        assert!(t.get(key(n, 1)).is_some());
    }

    #[test]
    fn reused_pid_never_takes_old_identity() {
        let mut t = ProcessTable::new(16, 1000);
        t.upsert(key(10, 5), None, img("old"));
        t.fork(10, 20);
        // pid 10 is reused by a new process while its exit was missed.
        t.upsert(key(10, 900), Some(key(1, 1)), img("new"));
        assert_eq!(t.live(10).unwrap().image.name, "new");
        assert_eq!(t.get(key(10, 5)).unwrap().image.name, "old");
        // The child forked from the old process still names the old one.
        let child_parent = t.live(20).unwrap().parent.unwrap();
        assert_eq!(t.get(child_parent).unwrap().image.name, "old");
    }

    #[test]
    fn full_table_evicts_oldest_and_counts() {
        let mut t = ProcessTable::new(3, 1000);
        for pid in 1..=5 {
            t.upsert(key(pid, pid as u64), None, img("p"));
        }
        let s = t.stats();
        assert_eq!(s.live, 3);
        assert_eq!(s.evictions, 2);
        assert!(t.live(1).is_none() && t.live(2).is_none());
        assert!(t.live(5).is_some());
    }

    #[test]
    fn retain_live_moves_vanished_to_exited() {
        let mut t = ProcessTable::new(8, 1000);
        t.upsert(key(1, 1), None, img("init"));
        t.upsert(key(2, 2), None, img("gone"));
        t.retain_live(&|p| p == 1, 10);
        assert!(t.live(2).is_none());
        assert!(t.get(key(2, 2)).is_some());
        assert!(t.live(1).is_some());
    }
}
