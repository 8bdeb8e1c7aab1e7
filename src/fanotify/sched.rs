//! The reading thread's scheduling policy: `SCHED_BATCH` while it holds
//! the group.
//!
//! The exec'ing task queues its permission event and wakes us *before* it
//! parks in `fanotify_get_response`; until it has parked its
//! `/proc/<pid>/syscall` reads `running` (`task_current_syscall` wants the
//! task inactive). When the wake-up lands on the task's own CPU, a
//! `SCHED_NORMAL` reader preempts it at the `might_sleep()` just before it
//! sets its sleep state, and then keeps that CPU: under CFS (kernels before
//! 6.6) a reader that sleeps often sits milliseconds of vruntime behind a
//! freshly forked child, so neither `sched_yield` nor a later wake-up lets
//! the child run, and the event waits out the watchdog. A `SCHED_BATCH`
//! thread never preempts on wake-up (its preemption is tick-driven): the
//! task goes on to park, which hands the CPU over, and the first read of
//! its syscall is the right one. Nothing else about the thread changes
//! (same nice level, same CPU share); the watchdog process keeps the
//! normal policy so its deadline answers stay prompt.

/// The policy the thread had, restored on drop when we changed it.
pub(super) struct BatchPolicy {
    tid: libc::pid_t,
    changed: bool,
}

impl BatchPolicy {
    /// Switches the calling thread to `SCHED_BATCH` if it is `SCHED_OTHER`
    /// (an operator's own choice, real-time or idle, is left alone).
    /// Failing (a seccomp filter without `sched_setscheduler`) costs only
    /// the benefit, and is logged.
    pub(super) fn enter() -> Self {
        // SAFETY: plain system calls on the calling thread.
        let tid = unsafe { libc::gettid() };
        let policy = unsafe { libc::sched_getscheduler(0) };
        let mut changed = false;
        if policy == libc::SCHED_OTHER {
            let param = libc::sched_param { sched_priority: 0 };
            // SAFETY: a valid sched_param for a non-real-time policy.
            if unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) } == 0 {
                changed = true;
            } else {
                log::info!(
                    "fanotify: could not switch the reader to SCHED_BATCH ({}): \
                     on CFS kernels more execs may be answered without argv",
                    std::io::Error::last_os_error()
                );
            }
        }
        BatchPolicy { tid, changed }
    }
}

impl Drop for BatchPolicy {
    fn drop(&mut self) {
        // SAFETY: gettid has no failure mode.
        if self.changed && unsafe { libc::gettid() } == self.tid {
            let param = libc::sched_param { sched_priority: 0 };
            // SAFETY: as in `enter`.
            unsafe { libc::sched_setscheduler(0, libc::SCHED_OTHER, &param) };
        }
    }
}
