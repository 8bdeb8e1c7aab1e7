//! The one thread that reads executables on slow filesystems (FUSE,
//! network: see [`crate::fsclass`]), so a file server that answers late or
//! never cannot stall the loop.
//!
//! Bounded everywhere: one job in flight at most (a channel of one, and
//! no new job while the last one is unanswered), a reply channel of one,
//! a cache of [`CACHE_MAX`] entries, and the loop's wait for a reply
//! bounded by [`DEADLINE`] per job and [`WAIT_PER_SECOND`] in all. A job
//! that misses its deadline leaves the worker busy: until it answers,
//! every later job is refused at once (the caller counts and marks it), so
//! a server that never answers costs the loop one [`DEADLINE`], once.
//!
//! The thread is started on the first slow executable and keeps only
//! CAP_DAC_READ_SEARCH (to read executables whose mode grants no read): it
//! is handed an `O_PATH` fd, so it needs no access to other processes.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TryRecvError, TrySendError};
use std::time::{Duration, Instant};

use super::cache::{FileKey, Known};
use super::{IdentityConfig, ToolTable};

/// Longest the loop waits for one slow executable's identity. A local
/// identification takes well under 1 ms (64 MiB hashed: ~150 ms, which a
/// slow filesystem would not get); FUSE and NFS servers that answer at all
/// answer a few reads in this.
pub const DEADLINE: Duration = Duration::from_millis(100);
/// Most time the loop waits on the worker per second, so a server that
/// always answers just before the deadline holds the loop a tenth of the
/// time at most.
pub const WAIT_PER_SECOND: Duration = Duration::from_millis(100);
/// Slow executables whose identity the worker remembers.
const CACHE_MAX: usize = 256;

/// What the loop gets for one job.
#[derive(Debug)]
pub enum Outcome {
    /// Answered in time: the facts, or `None` (unreadable).
    Done(Option<Arc<Known>>),
    /// Not answered in time, or refused because the worker is still busy
    /// or the wait budget is spent.
    Stalled,
}

struct Job {
    id: u64,
    /// `O_PATH` fd of the executable.
    fd: OwnedFd,
}

struct Reply {
    id: u64,
    known: Option<Arc<Known>>,
    parse_error: bool,
}

/// PURE: how much of [`WAIT_PER_SECOND`] is left in the current second.
#[derive(Debug, Clone, Copy)]
pub struct WaitBudget {
    window: Option<Instant>,
    used: Duration,
    per_second: Duration,
}

impl WaitBudget {
    pub fn new(per_second: Duration) -> Self {
        WaitBudget {
            window: None,
            used: Duration::ZERO,
            per_second,
        }
    }

    /// How long the loop may wait now.
    pub fn left(&mut self, now: Instant) -> Duration {
        if self
            .window
            .is_none_or(|w| now.duration_since(w) >= Duration::from_secs(1))
        {
            self.window = Some(now);
            self.used = Duration::ZERO;
        }
        self.per_second.saturating_sub(self.used)
    }

    pub fn charge(&mut self, waited: Duration) {
        self.used += waited;
    }
}

/// The loop's handle on the worker thread.
pub struct Worker {
    jobs: SyncSender<Job>,
    replies: Receiver<Reply>,
    /// The job that missed its deadline and has not answered yet.
    outstanding: Option<u64>,
    next_id: u64,
    budget: WaitBudget,
    /// Parse errors the worker met, for the identity counters.
    pub parse_errors: u64,
}

impl Worker {
    pub fn spawn(cfg: IdentityConfig, tools: ToolTable) -> std::io::Result<Self> {
        let (jobs, job_rx) = mpsc::sync_channel::<Job>(1);
        let (reply_tx, replies) = mpsc::sync_channel::<Reply>(1);
        std::thread::Builder::new()
            .name("identity-slow".into())
            .spawn(move || run(cfg, tools, job_rx, reply_tx))?;
        Ok(Worker {
            jobs,
            replies,
            outstanding: None,
            next_id: 0,
            budget: WaitBudget::new(WAIT_PER_SECOND),
            parse_errors: 0,
        })
    }

    /// Whether a job is still unanswered after its deadline.
    pub fn busy(&mut self) -> bool {
        let Some(id) = self.outstanding else {
            return false;
        };
        loop {
            match self.replies.try_recv() {
                Ok(r) => {
                    self.parse_errors += u64::from(r.parse_error);
                    if r.id == id {
                        self.outstanding = None;
                        return false;
                    }
                }
                Err(TryRecvError::Empty) => return true,
                Err(TryRecvError::Disconnected) => return true,
            }
        }
    }

    /// Identifies the executable open (`O_PATH`) at `fd`, waiting at most
    /// [`DEADLINE`] and what is left of the second's budget. Even when no
    /// wait is left the job is sent, if the worker is idle: its answer is
    /// cached for the next exec of the same file.
    pub fn identify(&mut self, fd: OwnedFd) -> Outcome {
        if self.busy() {
            return Outcome::Stalled;
        }
        let id = self.next_id;
        self.next_id += 1;
        match self.jobs.try_send(Job { id, fd }) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => return Outcome::Stalled,
        }
        let start = Instant::now();
        let wait = self.budget.left(start).min(DEADLINE);
        let got = self.replies.recv_timeout(wait);
        self.budget.charge(start.elapsed());
        match got {
            Ok(r) if r.id == id => {
                self.parse_errors += u64::from(r.parse_error);
                Outcome::Done(r.known)
            }
            Ok(_) | Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => {
                self.outstanding = Some(id);
                Outcome::Stalled
            }
        }
    }
}

fn run(cfg: IdentityConfig, tools: ToolTable, jobs: Receiver<Job>, replies: SyncSender<Reply>) {
    if let Err(e) =
        crate::privilege::keep_only_in_this_thread(&[caps::Capability::CAP_DAC_READ_SEARCH])
    {
        log::warn!("identity worker: dropping capabilities: {e}; not started");
        return;
    }
    let mut cache: HashMap<FileKey, Arc<Known>> = HashMap::new();
    let mut order: VecDeque<FileKey> = VecDeque::new();
    // Ends when the Identifier (the sender) is dropped, e.g. on reload.
    while let Ok(job) = jobs.recv() {
        let (known, parse_error) = match identify_fd(&job.fd, &cfg, &tools, &mut cache) {
            Some((key, known, err)) => {
                if let std::collections::hash_map::Entry::Vacant(e) = cache.entry(key) {
                    e.insert(Arc::clone(&known));
                    order.push_back(key);
                    if order.len() > CACHE_MAX
                        && let Some(old) = order.pop_front()
                    {
                        cache.remove(&old);
                    }
                }
                (Some(known), err)
            }
            None => (None, false),
        };
        drop(job.fd);
        if replies
            .send(Reply {
                id: job.id,
                known,
                parse_error,
            })
            .is_err()
        {
            return;
        }
    }
}

/// The slow part: `fstat`, open, parse, hash. May block for as long as the
/// filesystem's server likes.
fn identify_fd(
    fd: &OwnedFd,
    cfg: &IdentityConfig,
    tools: &ToolTable,
    cache: &mut HashMap<FileKey, Arc<Known>>,
) -> Option<(FileKey, Arc<Known>, bool)> {
    let path = format!("/proc/self/fd/{}", fd.as_raw_fd());
    let key = FileKey::from(&std::fs::metadata(&path).ok()?);
    if let Some(k) = cache.get(&key) {
        return Some((key, Arc::clone(k), false));
    }
    let file = File::open(&path).ok()?;
    let key = file.metadata().map_or(key, |m| FileKey::from(&m));
    let (known, err) = super::identify_known(&file, key.size, cfg, tools);
    Some((key, Arc::new(known), err))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_budget_refills_each_second() {
        let t0 = Instant::now();
        let mut b = WaitBudget::new(Duration::from_millis(100));
        assert_eq!(b.left(t0), Duration::from_millis(100));
        b.charge(Duration::from_millis(70));
        assert_eq!(
            b.left(t0 + Duration::from_millis(10)),
            Duration::from_millis(30)
        );
        b.charge(Duration::from_millis(50));
        assert_eq!(b.left(t0 + Duration::from_millis(20)), Duration::ZERO);
        assert_eq!(
            b.left(t0 + Duration::from_millis(1000)),
            Duration::from_millis(100)
        );
    }

    #[test]
    fn a_local_file_is_identified_and_cached_by_the_worker() {
        let mut w = Worker::spawn(IdentityConfig::default(), ToolTable::default()).unwrap();
        let open = || -> OwnedFd {
            let f = File::open("/proc/self/exe").unwrap();
            f.into()
        };
        match w.identify(open()) {
            Outcome::Done(Some(_)) => {}
            other => panic!("{other:?}"),
        }
        assert!(!w.busy());
        assert!(matches!(w.identify(open()), Outcome::Done(Some(_))));
    }
}
