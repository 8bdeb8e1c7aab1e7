//! The watchdog: a second process, forked before any fanotify mark exists,
//! whose only work is to keep the host's execs moving.
//!
//! A permission event blocks the exec'ing task until someone answers, so a
//! stalled event loop (a slow sink, a bug, a long `/proc` read) would stall
//! every exec on the host, and so would a *stopped* sensor (SIGSTOP, a
//! ptrace stop): a watchdog thread would stop with it. A process does not.
//! It shares the group fd and one `MAP_SHARED` page of the loop's progress
//! (the slots below), answers `FAN_ALLOW` and nothing else:
//! (1) for events the loop has read but not answered once it has shown no
//! progress for [`ANSWER_AFTER`] (a heartbeat per event it starts on, a
//! hold while it reads one event's task), or [`WAIT_MAX`] after the read
//! however it progresses, and (2) for events the loop has not even read: if the
//! group fd stays readable for [`ANSWER_AFTER`] while the loop has not entered
//! `drain` in between, the watchdog reads and allows them itself (their argv
//! is lost and counted). An event past [`ANSWER_AFTER`] whose reader
//! thread is runnable (on a CPU or waiting for one: starved, not stopped)
//! is left to it up to [`RUNNABLE_MAX`]; the one `/proc` file it reads is
//! that thread's `stat`. It allocates nothing (after
//! `fork` it may not: see [`process`]) and takes no lock. It keeps no
//! capability, ignores the signals meant for the sensor, and exits when the
//! sensor does (a pidfd, or a pipe on kernels before 5.3), so the kernel
//! can close the group and allow whatever is pending. It cannot outlive a
//! cgroup freeze: that freezes both processes (see the README).
//!
//! When the loop comes back from a silence the watchdog covered, it logs
//! how long it was silent and how many execs were allowed unseen; a
//! watchdog process that died makes the loop stop the sensor.
//!
//! ## Slots, and why there is no double answer or fd-reuse race
//! The kernel matches a response to an event by the event's fd *number*. A
//! response written after that fd was closed and its number reused would
//! answer a different event, and a slot read half-way through its reuse
//! would do the same. Each slot is therefore one state word
//! `generation << 2 | state`, plus the fd and read time written only while
//! the slot is free:
//! - the loop publishes an event: writes fd and time, then stores
//!   `(gen+1, PENDING)`;
//! - whoever answers first wins a compare-and-swap from that exact
//!   `(gen, PENDING)` word to `(gen, LOOP)` or `(gen, WATCHDOG)`; the loser
//!   does not answer. A stale snapshot (the slot was freed and reused) has a
//!   different generation, so its CAS fails;
//! - the loop closes the event fd only after the slot is back to free; if
//!   the watchdog won, the loop first waits for `(gen, WATCHDOG_DONE)`, so
//!   the number the watchdog writes is still open and still this event's;
//! - the events the watchdog reads itself get numbers in its own table that
//!   cannot equal one of the loop's (see `process::isolate_fds`).
//!
//! A stop that lands between the loop's `read` of a batch and its
//! `publish` leaves that batch (at most [`SLOTS`] events) unanswered until
//! the sensor resumes: those events are known to the kernel as read, and
//! their numbers only to the loop.
//!
//! ## Deferred events
//! The loop may leave an event whose task has not parked yet unanswered
//! across `drain` calls (the capture's deferred set). Its slot simply stays
//! PENDING meanwhile, with its fd open: to the watchdog it is one more case
//! (1) event; each retry is a heartbeat (its task, still running, is not
//! waiting for us), so a stopped loop hands it over within
//! [`ANSWER_AFTER`]. The
//! loop answers it later through the same claim/release, so a watchdog
//! answer in between costs the argv but is never doubled, and its fd number
//! cannot be reused before the watchdog is done writing. Slots are not tied
//! to batch positions: the loop hands out only slots it has freed (fd
//! closed), so a deferred event's slot is never republished.

mod child;
mod process;

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicPtr, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// An event read but unanswered is allowed by the watchdog once the loop
/// has shown no progress for this long: no heartbeat (one per event it
/// handles) since, nor a [hold](Watchdog::hold) of that event, and the
/// thread that read it not runnable (see [`RUNNABLE_MAX`]).
pub const ANSWER_AFTER: Duration = Duration::from_millis(3);
/// Events the loop has not read are read and allowed by the watchdog when
/// the group stays readable this long without the loop draining it.
pub const TAKE_OVER_AFTER: Duration = Duration::from_millis(10);
/// However the loop progresses, no event waits longer than this for its
/// answer (a slow loop, a long batch): then the watchdog allows it.
pub const WAIT_MAX: Duration = Duration::from_millis(100);
/// An event whose [`ANSWER_AFTER`] passed while the thread that read it
/// was still on a CPU or waiting for one (`R`: starved, not stopped) is
/// left to it for up to this long after the read, checked again every
/// [`ANSWER_AFTER`]. A stopped, traced or blocked thread is not runnable,
/// so its events are still answered after [`ANSWER_AFTER`].
pub const RUNNABLE_MAX: Duration = Duration::from_millis(40);
/// Shortest sleep: below this, sleeping costs more than it saves.
const MIN_SLEEP: Duration = Duration::from_micros(100);
/// Time without a published event before parking.
const IDLE_BEFORE_PARK: Duration = Duration::from_millis(50);
/// While parked the watchdog still wakes this often to notice a loop that
/// stopped reading the group fd altogether, and a parent that is gone.
const PARKED_WAKE: Duration = Duration::from_millis(50);
/// At most this many events are read in one batch (one slot each).
pub const SLOTS: usize = 64;
/// Answers given while the loop has not entered `drain` for this long are
/// reported by the loop when it comes back: it was stopped or stalled.
const SILENT_LOOP: Duration = Duration::from_millis(500);
/// How often the loop checks that the watchdog process is still there.
const CHILD_CHECK_EVERY: Duration = Duration::from_secs(1);
/// The parent's open-file limit is lowered to this when higher (the child
/// fills its own table up to it, see `process::isolate_fds`).
const FD_LIMIT_CAP: u64 = 65_536;

const FREE: u64 = 0;
const PENDING: u64 = 1;
const LOOP: u64 = 2;
const WATCHDOG: u64 = 3;
const STATE_MASK: u64 = 3;
/// Marks a watchdog-claimed slot whose answer has been written.
const DONE_BIT: u64 = 1 << 63;

/// Test-only faults (`EXECSENTRY_TEST_PANIC`, read in debug builds only).
const FAULT_NONE: u32 = 0;
const FAULT_LOOP: u32 = 1;
const FAULT_WATCHDOG: u32 = 2;
/// An injected fault fires this long after the watchdog started, so the
/// sensor is ready and execs are flowing when it does.
const FAULT_AFTER: Duration = Duration::from_secs(2);

struct Slot {
    state: AtomicU64,
    fd: AtomicI32,
    read_ns: AtomicU64,
    /// Not answered before this (ns since `epoch`): the loop is reading
    /// this event's task (see [`Watchdog::hold`]).
    hold_ns: AtomicU64,
    /// The thread that read the event: whether it is runnable decides
    /// whether a silent loop is stalled or only starved of CPU.
    tid: AtomicI32,
}

/// State shared by the loop and the watchdog process: one `MAP_SHARED`
/// page both see. Only atomics (and what is written before the fork).
struct Shared {
    group_fd: RawFd,
    death_fd: RawFd,
    /// The sensor's pid: its threads' `/proc/<pid>/task/<tid>/stat`.
    pid: libc::pid_t,
    /// CLOCK_MONOTONIC is one clock for both processes.
    epoch: Instant,
    fault: u32,
    /// The child may read events itself (it has fd numbers to spare).
    can_take_over: AtomicBool,
    /// Set by the child once it has isolated its fds and dropped every
    /// capability: `start` returns only after that (or a bounded wait), so
    /// no mark exists while a fully privileged copy of the sensor runs.
    settled: AtomicBool,
    slots: [Slot; SLOTS],
    stop: AtomicBool,
    /// 1 while the child is parked: a futex word.
    sleeping: AtomicU32,
    published: AtomicU64,
    /// Bumped on every entry to `drain` and every heartbeat: proof of
    /// life of the loop.
    drains: AtomicU64,
    /// When the loop last started on an event (ns since `epoch`).
    heartbeat_ns: AtomicU64,
    answers: AtomicU64,
    takeover_answers: AtomicU64,
    /// Answers given while the loop was silent for [`SILENT_LOOP`].
    silent_answers: AtomicU64,
    /// Times an overdue event was left to its reader because that thread
    /// was runnable (see [`RUNNABLE_MAX`]).
    runnable_waits: AtomicU64,
    /// The sensor is panicking: answer everything now, read everything
    /// queued, without waiting for deadlines (see [`hand_off`]).
    handoff: AtomicBool,
}

/// The running watchdog's shared page, for the panic hook.
static ACTIVE: AtomicPtr<Shared> = AtomicPtr::new(std::ptr::null_mut());

/// Called first thing in a panic, before the default hook prints (and may
/// symbolise a backtrace for hundreds of milliseconds) and the process
/// aborts or unwinds: until the group fd is closed every exec would wait,
/// so the watchdog process answers everything from here on.
fn hand_off() {
    let p = ACTIVE.load(Ordering::SeqCst);
    if p.is_null() {
        return;
    }
    // SAFETY: ACTIVE is cleared before the page is unmapped.
    let s = unsafe { &*p };
    s.handoff.store(true, Ordering::SeqCst);
    s.sleeping.store(0, Ordering::SeqCst);
    process::futex_wake(&s.sleeping);
}

fn install_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            hand_off();
            previous(info);
        }));
    });
}

/// The loop's handle: publish, claim, release; stops the process on drop.
pub struct Watchdog {
    shared: *mut Shared,
    child: libc::pid_t,
    /// The pipe's write end when there is no pidfd (-1 otherwise).
    death_parent_end: RawFd,
    generation: u64,
    last_drain_ns: AtomicU64,
    silent_seen: AtomicU64,
    next_child_check_ns: AtomicU64,
}

// SAFETY: `shared` points into a mapping owned by this handle for its whole
// life; everything in it is atomic or immutable after start.
unsafe impl Send for Watchdog {}
// SAFETY: as above; the loop-side counters are atomics.
unsafe impl Sync for Watchdog {}

/// Who gets to answer a published event.
#[derive(Debug, PartialEq, Eq)]
pub enum Claim {
    /// The loop owns the answer.
    Loop,
    /// The watchdog answered (allowed) it already.
    Watchdog,
}

fn ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// `EXECSENTRY_TEST_PANIC=loop|watchdog`: a test hook that does not exist
/// in release builds.
fn test_fault() -> u32 {
    if !cfg!(debug_assertions) {
        return FAULT_NONE;
    }
    match std::env::var("EXECSENTRY_TEST_PANIC").as_deref() {
        Ok("loop") => FAULT_LOOP,
        Ok("watchdog") => FAULT_WATCHDOG,
        _ => FAULT_NONE,
    }
}

impl Watchdog {
    /// Forks the watchdog process. Call it before any mark exists: the
    /// child never opens or execs anything, but nothing of the parent's
    /// event fds must be inherited either. `group_fd` must stay open until
    /// this is dropped (the capture drops the watchdog before its fd).
    pub fn start(group_fd: RawFd) -> std::io::Result<Self> {
        let fault = test_fault();
        let limit = process::fd_limit(FD_LIMIT_CAP);
        let death = process::DeathFd::new()?;
        let len = std::mem::size_of::<Shared>();
        // SAFETY: a fresh anonymous shared mapping, checked below.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        let close_death = || {
            // SAFETY: descriptors created above, closed once.
            unsafe {
                libc::close(death.child_end);
                if death.parent_end >= 0 {
                    libc::close(death.parent_end);
                }
            }
        };
        if map == libc::MAP_FAILED {
            let e = std::io::Error::last_os_error();
            close_death();
            return Err(e);
        }
        let shared = map.cast::<Shared>();
        // SAFETY: the mapping is page-aligned and large enough.
        unsafe {
            shared.write(Shared {
                group_fd,
                death_fd: death.child_end,
                pid: libc::getpid(),
                epoch: Instant::now(),
                fault,
                can_take_over: AtomicBool::new(false),
                settled: AtomicBool::new(false),
                slots: std::array::from_fn(|_| Slot {
                    state: AtomicU64::new(FREE),
                    fd: AtomicI32::new(-1),
                    read_ns: AtomicU64::new(0),
                    hold_ns: AtomicU64::new(0),
                    tid: AtomicI32::new(0),
                }),
                stop: AtomicBool::new(false),
                sleeping: AtomicU32::new(0),
                published: AtomicU64::new(0),
                drains: AtomicU64::new(0),
                heartbeat_ns: AtomicU64::new(0),
                answers: AtomicU64::new(0),
                takeover_answers: AtomicU64::new(0),
                silent_answers: AtomicU64::new(0),
                runnable_waits: AtomicU64::new(0),
                handoff: AtomicBool::new(false),
            })
        };
        // SAFETY: see `child_main`: the child runs only async-signal-safe
        // code and never returns.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            let e = std::io::Error::last_os_error();
            close_death();
            // SAFETY: our mapping, unused by anyone else.
            unsafe { libc::munmap(map, len) };
            return Err(e);
        }
        if pid == 0 {
            // SAFETY: the mapping stays valid in the child.
            child::child_main(unsafe { &*shared }, limit);
        }
        // The parent keeps only the pipe's write end (its death is the
        // child's signal); the pidfd or read end is the child's.
        // SAFETY: our descriptor, closed once.
        unsafe { libc::close(death.child_end) };
        let deadline = Instant::now() + Duration::from_secs(2);
        // SAFETY: the mapping is ours until `drop`.
        while !unsafe { &*shared }.settled.load(Ordering::Acquire) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        install_panic_hook();
        ACTIVE.store(shared, Ordering::SeqCst);
        Ok(Watchdog {
            shared,
            child: pid,
            death_parent_end: death.parent_end,
            generation: 0,
            last_drain_ns: AtomicU64::new(0),
            silent_seen: AtomicU64::new(0),
            next_child_check_ns: AtomicU64::new(0),
        })
    }

    fn shared(&self) -> &Shared {
        // SAFETY: valid until `drop` unmaps it.
        unsafe { &*self.shared }
    }

    /// The loop is alive and about to read the group fd. Also where the
    /// loop reports a silence the watchdog covered, and notices a watchdog
    /// process that is gone.
    pub fn drain_started(&self) {
        let s = self.shared();
        s.drains.fetch_add(1, Ordering::SeqCst);
        let now = s.now_ns();
        if s.fault == FAULT_LOOP && now >= ns(FAULT_AFTER) {
            panic!("EXECSENTRY_TEST_PANIC=loop: injected panic in the event loop");
        }
        let last = self.last_drain_ns.swap(now, Ordering::Relaxed);
        let silent = s.silent_answers.load(Ordering::SeqCst);
        let seen = self.silent_seen.swap(silent, Ordering::Relaxed);
        if silent > seen {
            log::warn!(
                "the sensor stopped answering exec permission events for {} ms (stopped, \
                 traced or stalled): its watchdog process allowed {} execs meanwhile, unseen",
                now.saturating_sub(last) / 1_000_000,
                silent - seen
            );
        }
        if now >= self.next_child_check_ns.load(Ordering::Relaxed) {
            self.next_child_check_ns
                .store(now + ns(CHILD_CHECK_EVERY), Ordering::Relaxed);
            self.check_child();
        }
    }

    /// A watchdog process that died leaves the host one stall away from
    /// every exec waiting: end the sensor (exit code 1; systemd restarts
    /// it) rather than run without it. At once, not by a panic: with no
    /// watchdog, every exec waits until the group fd is closed, and exiting
    /// closes it now.
    fn check_child(&self) {
        let mut status = 0;
        // SAFETY: our own child; WNOHANG never blocks.
        let r = unsafe { libc::waitpid(self.child, &mut status, libc::WNOHANG) };
        if r == self.child {
            log::error!(
                "the fanotify watchdog process (pid {}) is gone ({}): without it a stalled \
                 sensor would block every exec on the host; exiting",
                self.child,
                describe_status(status)
            );
            std::process::exit(1);
        }
    }

    /// Publishes event fd `fd` in slot `i`, which must be free: released,
    /// and its previous fd closed. Returns the word to claim it with.
    pub fn publish(&mut self, i: usize, fd: RawFd) -> u64 {
        self.generation += 1;
        let word = (self.generation << 2) | PENDING;
        let s = self.shared();
        let slot = &s.slots[i];
        slot.fd.store(fd, Ordering::Relaxed);
        slot.read_ns.store(s.now_ns(), Ordering::Relaxed);
        slot.hold_ns.store(0, Ordering::Relaxed);
        slot.tid.store(current_tid(), Ordering::Relaxed);
        slot.state.store(word, Ordering::SeqCst);
        s.published.fetch_add(1, Ordering::SeqCst);
        // Pairs with the watchdog's store of `sleeping` and re-scan: one of
        // the two sees the other (both SeqCst).
        if s.sleeping.load(Ordering::SeqCst) == 1 && s.sleeping.swap(0, Ordering::SeqCst) == 1 {
            process::futex_wake(&s.sleeping);
        }
        word
    }

    /// Whether the event published in slot `i` with `word` is still
    /// unanswered and unclaimed. A hint only: the watchdog may claim it
    /// right after; [`claim`](Self::claim) decides.
    pub fn is_pending(&self, i: usize, word: u64) -> bool {
        self.shared().slots[i].state.load(Ordering::SeqCst) == word
    }

    /// The loop starts on one more event: the events it has read but not
    /// reached yet are not waiting for a stalled loop, so their answer
    /// stays the loop's (up to [`WAIT_MAX`]).
    pub fn heartbeat(&self) {
        let s = self.shared();
        s.heartbeat_ns.store(s.now_ns(), Ordering::Relaxed);
        s.drains.fetch_add(1, Ordering::SeqCst);
    }

    /// The loop is about to read the task of the event in slot `i`
    /// (`/proc/<pid>/syscall`): that read waits while the task is still
    /// on a CPU on its way to park (`wait_task_inactive`), which on a
    /// virtual CPU the host has descheduled lasts milliseconds, and the
    /// task is not waiting for our answer meanwhile. Up to `d` from now
    /// (and [`WAIT_MAX`] from the read), the watchdog leaves it alone. A
    /// stopped loop costs that one event `d` at most.
    pub fn hold(&self, i: usize, word: u64, d: Duration) {
        let s = self.shared();
        let slot = &s.slots[i];
        if slot.state.load(Ordering::SeqCst) == word {
            slot.hold_ns
                .store(s.now_ns().saturating_add(ns(d)), Ordering::Relaxed);
        }
    }

    /// Claims slot `i` for the loop's own answer.
    pub fn claim(&self, i: usize, word: u64) -> Claim {
        let st = &self.shared().slots[i].state;
        match st.compare_exchange(
            word,
            (word & !STATE_MASK) | LOOP,
            Ordering::SeqCst,
            Ordering::SeqCst,
        ) {
            Ok(_) => Claim::Loop,
            Err(_) => Claim::Watchdog,
        }
    }

    /// Frees slot `i` once nobody will write its fd number any more; after
    /// this the loop may close the event fd.
    pub fn release(&self, i: usize, word: u64) {
        let st = &self.shared().slots[i].state;
        let watchdog_done = (word & !STATE_MASK) | WATCHDOG | DONE_BIT;
        let mut spins = 0u32;
        loop {
            let cur = st.load(Ordering::SeqCst);
            // Our own claim, or never claimed (the caller gave up), or the
            // watchdog finished writing.
            if cur & STATE_MASK != WATCHDOG || cur == watchdog_done {
                break;
            }
            // The watchdog is inside one write(2): microseconds.
            spins += 1;
            if spins > 64 {
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
        st.store(FREE, Ordering::SeqCst);
    }

    pub fn answers(&self) -> u64 {
        self.shared().answers.load(Ordering::Relaxed)
    }

    pub fn takeover_answers(&self) -> u64 {
        self.shared().takeover_answers.load(Ordering::Relaxed)
    }

    /// How often an overdue event was left to a reader that was runnable.
    pub fn runnable_waits(&self) -> u64 {
        self.shared().runnable_waits.load(Ordering::Relaxed)
    }
}

/// The calling thread's id, cached: `publish` runs once per event.
fn current_tid() -> libc::pid_t {
    thread_local! {
        static TID: std::cell::Cell<libc::pid_t> = const { std::cell::Cell::new(0) };
    }
    TID.with(|t| {
        if t.get() == 0 {
            // SAFETY: gettid has no failure mode.
            t.set(unsafe { libc::gettid() });
        }
        t.get()
    })
}

fn describe_status(status: i32) -> String {
    if libc::WIFSIGNALED(status) {
        format!("killed by signal {}", libc::WTERMSIG(status))
    } else {
        format!("exit code {}", libc::WEXITSTATUS(status))
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        let _ = ACTIVE.compare_exchange(
            self.shared,
            std::ptr::null_mut(),
            Ordering::SeqCst,
            Ordering::SeqCst,
        );
        let s = self.shared();
        s.stop.store(true, Ordering::SeqCst);
        s.sleeping.store(0, Ordering::SeqCst);
        process::futex_wake(&s.sleeping);
        let mut status = 0;
        // The child wakes within one nap (at most PARKED_WAKE) and exits.
        // SAFETY: our own child, reaped once.
        while unsafe { libc::waitpid(self.child, &mut status, 0) } < 0
            && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR)
        {}
        // SAFETY: our descriptor and mapping, released once; the child that
        // shared the mapping is gone.
        unsafe {
            if self.death_parent_end >= 0 {
                libc::close(self.death_parent_end);
            }
            libc::munmap(self.shared.cast(), std::mem::size_of::<Shared>());
        }
    }
}

/// Writes `FAN_ALLOW` for event fd `fd`; errors (ENOENT: already answered)
/// are ignored, the kernel being the authority on what is pending.
pub fn allow(group_fd: RawFd, fd: RawFd) {
    respond(group_fd, fd, libc::FAN_ALLOW);
}

pub fn respond(group_fd: RawFd, fd: RawFd, response: u32) -> bool {
    let r = libc::fanotify_response { fd, response };
    loop {
        // SAFETY: writes one fanotify_response from a local.
        let n = unsafe {
            libc::write(
                group_fd,
                (&r as *const libc::fanotify_response).cast(),
                std::mem::size_of::<libc::fanotify_response>(),
            )
        };
        if n >= 0 {
            return true;
        }
        if std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pipe's read end stands in for the group fd: the process polls it
    /// and writes answers to it (refused, which `allow` ignores), so the
    /// slot protocol across the two processes is tested without root.
    fn watchdog() -> (Watchdog, [RawFd; 2]) {
        let mut p = [-1; 2];
        // SAFETY: pipe2 into a local array.
        // Non-blocking, as a fanotify group is: a failing test's panic
        // hands off to the watchdog, whose reads must not block.
        let flags = libc::O_CLOEXEC | libc::O_NONBLOCK;
        assert_eq!(unsafe { libc::pipe2(p.as_mut_ptr(), flags) }, 0);
        (Watchdog::start(p[0]).unwrap(), p)
    }

    fn close(p: [RawFd; 2]) {
        // SAFETY: our pipe, closed once after the watchdog is gone.
        unsafe {
            libc::close(p[0]);
            libc::close(p[1]);
        }
    }

    #[test]
    fn an_event_the_loop_leaves_is_answered_by_the_watchdog_process() {
        let (mut wd, p) = watchdog();
        let word = wd.publish(3, 1234);
        let deadline = Instant::now() + Duration::from_secs(2);
        while wd.answers() == 0 {
            assert!(Instant::now() < deadline, "no answer from the watchdog");
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(!wd.is_pending(3, word));
        assert_eq!(wd.claim(3, word), Claim::Watchdog);
        wd.release(3, word);
        drop(wd);
        close(p);
    }

    #[test]
    fn an_event_the_loop_claims_in_time_is_the_loops_alone() {
        let (mut wd, p) = watchdog();
        let word = wd.publish(0, 1234);
        assert_eq!(wd.claim(0, word), Claim::Loop);
        std::thread::sleep(ANSWER_AFTER * 5);
        assert_eq!(wd.answers(), 0);
        wd.release(0, word);
        // A stale word (the slot moved on) never claims the new event.
        let next = wd.publish(0, 1235);
        assert_eq!(wd.claim(0, word), Claim::Watchdog);
        assert_eq!(wd.claim(0, next), Claim::Loop);
        wd.release(0, next);
        drop(wd);
        close(p);
    }

    #[test]
    fn an_event_waits_for_a_stalled_loop_only_answer_after_and_never_past_wait_max() {
        let ms = |n: u64| n * 1_000_000;
        let after = ns(ANSWER_AFTER);
        // A loop that shows no progress: ANSWER_AFTER after the read.
        assert_eq!(child::due_ns(ms(10), 0, 0), ms(10) + after);
        // A heartbeat since: ANSWER_AFTER after the heartbeat.
        assert_eq!(child::due_ns(ms(10), ms(15), 0), ms(15) + after);
        // Held while its task is read: until the hold, if that is later.
        assert_eq!(child::due_ns(ms(10), ms(11), ms(40)), ms(40));
        assert_eq!(child::due_ns(ms(10), ms(50), ms(40)), ms(50) + after);
        // However busy the loop is, never past WAIT_MAX.
        let cap = ms(10) + ns(WAIT_MAX);
        assert_eq!(child::due_ns(ms(10), cap, 0), cap);
        assert_eq!(child::due_ns(ms(10), 0, u64::MAX), cap);
    }

    #[test]
    fn a_held_event_outlives_answer_after_and_a_stopped_loop_still_gets_it_answered() {
        let (mut wd, p) = watchdog();
        let word = wd.publish(5, 1234);
        wd.hold(5, word, ANSWER_AFTER * 10);
        std::thread::sleep(ANSWER_AFTER * 3);
        assert_eq!(wd.answers(), 0, "answered while held");
        // No heartbeat and no renewal (a stopped loop): answered after the
        // hold.
        let deadline = Instant::now() + WAIT_MAX * 3;
        while wd.answers() == 0 {
            assert!(Instant::now() < deadline, "held event never answered");
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(wd.claim(5, word), Claim::Watchdog);
        wd.release(5, word);
        drop(wd);
        close(p);
    }

    #[test]
    fn a_runnable_reader_is_given_time_until_runnable_max_after_the_read() {
        let ms = |n: u64| n * 1_000_000;
        let after = ns(ANSWER_AFTER);
        // Looked at again ANSWER_AFTER later...
        assert_eq!(child::runnable_due_ns(ms(10), ms(13)), Some(ms(13) + after));
        // ...never past RUNNABLE_MAX after the read, and not at all after.
        let cap = ms(10) + ns(RUNNABLE_MAX);
        assert_eq!(child::runnable_due_ns(ms(10), cap - 1), Some(cap));
        assert_eq!(child::runnable_due_ns(ms(10), cap), None);
        const { assert!(RUNNABLE_MAX.as_nanos() < WAIT_MAX.as_nanos()) };
    }

    #[test]
    fn a_stat_line_gives_its_state_only_for_its_own_task() {
        let line = b"4242 (fan) thread)) R 1 4242 4242 0 -1 4194560 137";
        assert_eq!(child::stat_state(line, 4242), Some(b'R'));
        assert_eq!(child::stat_state(b"17 (execsentry) S 1 17", 17), Some(b'S'));
        // Another pid namespace's /proc: another task's line.
        assert_eq!(child::stat_state(line, 4243), None);
        // Truncated or garbage.
        assert_eq!(child::stat_state(b"17 (execsentry)", 17), None);
        assert_eq!(child::stat_state(b"", 17), None);
        assert_eq!(child::stat_state(b"x (a) R", 17), None);
    }

    /// A reader that keeps its CPU (as one starved of it does: `R`)
    /// without a heartbeat is not answered for at ANSWER_AFTER; once it
    /// sleeps (stopped, blocked) it is.
    #[test]
    fn an_event_of_a_runnable_reader_waits_for_it_and_a_sleeping_readers_does_not() {
        let (mut wd, p) = watchdog();
        std::thread::scope(|sc| {
            sc.spawn(|| {
                // A busy machine may not run the watchdog before
                // RUNNABLE_MAX has passed (then it answers, rightly):
                // a few tries.
                for slot in 10..15 {
                    let (waits, answers) = (wd.runnable_waits(), wd.answers());
                    let word = wd.publish(slot, 1234);
                    // Spin, as a thread on a CPU does, until the watchdog
                    // has looked at the overdue event.
                    let deadline = Instant::now() + Duration::from_secs(2);
                    while wd.runnable_waits() == waits && wd.answers() == answers {
                        assert!(Instant::now() < deadline, "the watchdog never looked");
                        std::hint::spin_loop();
                    }
                    let left_to_us = wd.answers() == answers;
                    if left_to_us {
                        // Now asleep: answered, without a heartbeat.
                        let deadline = Instant::now() + WAIT_MAX * 3;
                        while wd.answers() == answers {
                            assert!(Instant::now() < deadline, "never answered");
                            std::thread::sleep(Duration::from_millis(1));
                        }
                    }
                    assert_eq!(wd.claim(slot, word), Claim::Watchdog);
                    wd.release(slot, word);
                    if left_to_us {
                        return;
                    }
                }
                panic!("answered at once every time while its reader ran");
            });
        });
        drop(wd);
        close(p);
    }

    #[test]
    fn drop_ends_and_reaps_the_watchdog_process() {
        let (wd, p) = watchdog();
        let pid = wd.child;
        // SAFETY: kill with signal 0 only checks that the pid exists.
        assert_eq!(unsafe { libc::kill(pid, 0) }, 0);
        let t = Instant::now();
        drop(wd);
        assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
        // SAFETY: as above; reaped, so the pid is gone.
        assert_eq!(unsafe { libc::kill(pid, 0) }, -1);
        close(p);
    }
}
