//! The metadata cache (PURE: callers pass the time and a liveness test).
//!
//! One slot per container id. A container is looked up on its first exec;
//! if nothing is found (the runtime may not have written its state yet)
//! the slot answers "unknown" for [`NEGATIVE_TTL_MS`], then allows exactly
//! one more attempt. A slot remembers the init pid and the last few pids
//! that exec'd in the container; once none of them is alive the container
//! is over and the slot is evicted (checked every [`SWEEP_EVERY_MS`], and
//! before evicting the oldest slot when full).

use std::collections::HashMap;
use std::sync::Arc;

use super::ContainerMeta;

/// How long a miss is believed before the one retry.
pub const NEGATIVE_TTL_MS: u64 = 500;
/// How often dead containers are looked for.
pub const SWEEP_EVERY_MS: u64 = 10_000;
/// Recent exec'ing pids remembered per container, besides the init.
const PIDS: usize = 4;

/// What [`Cache::probe`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    Hit(Arc<ContainerMeta>),
    /// Known to be unknown: do not read now.
    Negative,
    /// Read the state files, then [`Cache::store`]. `retry` for the second
    /// (and last) attempt.
    Load {
        retry: bool,
    },
}

#[derive(Debug)]
enum State {
    Found(Arc<ContainerMeta>),
    Missing { retry_at_ms: u64 },
    GaveUp,
}

#[derive(Debug)]
struct Slot {
    state: State,
    pids: [u32; PIDS],
    next: usize,
    /// Insertion number: the oldest goes first when full.
    seq: u64,
}

impl Slot {
    fn note(&mut self, pid: u32) {
        if pid != 0 && !self.pids.contains(&pid) {
            self.pids[self.next] = pid;
            self.next = (self.next + 1) % PIDS;
        }
    }

    fn alive(&self, alive: &dyn Fn(u32) -> bool) -> bool {
        let init = match &self.state {
            State::Found(m) => m.init_pid,
            _ => 0,
        };
        std::iter::once(init)
            .chain(self.pids)
            .any(|p| p != 0 && alive(p))
    }
}

pub struct Cache {
    slots: HashMap<String, Slot>,
    capacity: usize,
    seq: u64,
    next_sweep_ms: u64,
}

impl Cache {
    pub fn new(capacity: usize) -> Self {
        Cache {
            slots: HashMap::new(),
            capacity: capacity.max(1),
            seq: 0,
            next_sweep_ms: SWEEP_EVERY_MS,
        }
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Looks `id` up for an exec by `pid`.
    pub fn probe(&mut self, id: &str, pid: u32, now_ms: u64) -> Probe {
        let Some(slot) = self.slots.get_mut(id) else {
            return Probe::Load { retry: false };
        };
        slot.note(pid);
        match &slot.state {
            State::Found(m) => Probe::Hit(Arc::clone(m)),
            State::Missing { retry_at_ms } if now_ms >= *retry_at_ms => Probe::Load { retry: true },
            State::Missing { .. } | State::GaveUp => Probe::Negative,
        }
    }

    /// Records the result of a load; returns it shared, and how many slots
    /// were evicted to make room.
    pub fn store(
        &mut self,
        id: &str,
        pid: u32,
        found: Option<ContainerMeta>,
        now_ms: u64,
        alive: &dyn Fn(u32) -> bool,
    ) -> (Option<Arc<ContainerMeta>>, u64) {
        let found = found.map(Arc::new);
        if let Some(slot) = self.slots.get_mut(id) {
            slot.state = match &found {
                Some(m) => State::Found(Arc::clone(m)),
                None => State::GaveUp,
            };
            return (found, 0);
        }
        let mut evicted = 0;
        if self.slots.len() >= self.capacity {
            evicted += self.purge(alive);
        }
        if self.slots.len() >= self.capacity
            && let Some(oldest) = self
                .slots
                .iter()
                .min_by_key(|(_, s)| s.seq)
                .map(|(k, _)| k.clone())
        {
            self.slots.remove(&oldest);
            evicted += 1;
        }
        self.seq += 1;
        let mut slot = Slot {
            state: match &found {
                Some(m) => State::Found(Arc::clone(m)),
                None => State::Missing {
                    retry_at_ms: now_ms + NEGATIVE_TTL_MS,
                },
            },
            pids: [0; PIDS],
            next: 0,
            seq: self.seq,
        };
        slot.note(pid);
        self.slots.insert(id.to_owned(), slot);
        (found, evicted)
    }

    /// Evicts dead containers if a sweep is due; returns how many.
    pub fn sweep(&mut self, now_ms: u64, alive: &dyn Fn(u32) -> bool) -> u64 {
        if now_ms < self.next_sweep_ms {
            return 0;
        }
        self.next_sweep_ms = now_ms + SWEEP_EVERY_MS;
        self.purge(alive)
    }

    fn purge(&mut self, alive: &dyn Fn(u32) -> bool) -> u64 {
        let before = self.slots.len();
        self.slots.retain(|_, s| s.alive(alive));
        (before - self.slots.len()) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(name: &str, init: u32) -> ContainerMeta {
        ContainerMeta {
            name: Some(name.into()),
            init_pid: init,
            ..Default::default()
        }
    }

    #[test]
    fn hit_after_load() {
        let mut c = Cache::new(8);
        assert_eq!(c.probe("a", 10, 0), Probe::Load { retry: false });
        let (m, ev) = c.store("a", 10, Some(meta("web", 0)), 0, &|_| true);
        assert_eq!((m.is_some(), ev), (true, 0));
        assert!(matches!(c.probe("a", 11, 1), Probe::Hit(m) if m.name.as_deref() == Some("web")));
    }

    #[test]
    fn miss_is_negative_then_retried_once() {
        let mut c = Cache::new(8);
        assert_eq!(c.probe("a", 10, 0), Probe::Load { retry: false });
        c.store("a", 10, None, 0, &|_| true);
        assert_eq!(c.probe("a", 10, NEGATIVE_TTL_MS - 1), Probe::Negative);
        assert_eq!(
            c.probe("a", 10, NEGATIVE_TTL_MS),
            Probe::Load { retry: true }
        );
        c.store("a", 10, None, NEGATIVE_TTL_MS, &|_| true);
        assert_eq!(c.probe("a", 10, 10 * NEGATIVE_TTL_MS), Probe::Negative);
        // A retry that finds the state is a hit from then on.
        let mut c = Cache::new(8);
        c.store("b", 10, None, 0, &|_| true);
        assert_eq!(c.probe("b", 10, 600), Probe::Load { retry: true });
        c.store("b", 10, Some(meta("late", 0)), 600, &|_| true);
        assert!(matches!(c.probe("b", 10, 601), Probe::Hit(_)));
    }

    #[test]
    fn dead_containers_are_swept() {
        let mut c = Cache::new(8);
        c.store("a", 10, Some(meta("a", 1)), 0, &|_| true);
        c.store("b", 20, Some(meta("b", 0)), 0, &|_| true);
        c.probe("b", 21, 0);
        // Not due yet.
        assert_eq!(c.sweep(1, &|_| false), 0);
        // a's init (1) lives; b's pids 20 and 21 are gone.
        let alive = |p: u32| p == 1;
        assert_eq!(c.sweep(SWEEP_EVERY_MS, &alive), 1);
        assert!(matches!(c.probe("a", 0, SWEEP_EVERY_MS), Probe::Hit(_)));
        assert_eq!(
            c.probe("b", 0, SWEEP_EVERY_MS),
            Probe::Load { retry: false }
        );
    }

    #[test]
    fn full_cache_evicts_dead_then_oldest() {
        let mut c = Cache::new(2);
        c.store("a", 1, Some(meta("a", 0)), 0, &|_| true);
        c.store("b", 2, Some(meta("b", 0)), 0, &|_| true);
        // Everything alive: the oldest (a) goes.
        let (_, ev) = c.store("c", 3, Some(meta("c", 0)), 0, &|_| true);
        assert_eq!((ev, c.len()), (1, 2));
        assert_eq!(c.probe("a", 1, 0), Probe::Load { retry: false });
        // b dead: it goes, c stays.
        let (_, ev) = c.store("d", 4, None, 0, &|p| p != 2);
        assert_eq!(ev, 1);
        assert!(matches!(c.probe("c", 3, 0), Probe::Hit(_)));
        // Many pids: only the last few are kept, never more.
        for p in 100..200 {
            c.probe("c", p, 0);
        }
        assert_eq!(c.len(), 2);
    }
}
