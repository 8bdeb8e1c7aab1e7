//! Where the sensor's CPU per exec goes, for `make bench`: the loop's
//! thread CPU time is cut into laps at stage boundaries, and each lap is
//! added to the stage that just ended. Off unless `EXECSENTRY_PROFILE_STAGES=1`
//! (each lap is a `clock_gettime(CLOCK_THREAD_CPUTIME_ID)`); the laps of a
//! run add up to the loop thread's CPU time.

use std::cell::RefCell;

/// The stages of the exec path, in the order an exec meets them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Waiting for and reading kernel messages (epoll, recv, decode).
    KernelRead,
    /// The capture source: reading its records, answering the kernel.
    Capture,
    /// `/proc/<pid>` reads and event shaping.
    Proc,
    /// Executable identity (Go build info, hash).
    Identity,
    /// Container metadata from runtime state.
    Metadata,
    Rules,
    /// JSON and syslog formatting.
    Format,
    /// Writes to the outputs.
    Output,
}

impl Stage {
    pub const ALL: [Stage; 8] = [
        Stage::KernelRead,
        Stage::Capture,
        Stage::Proc,
        Stage::Identity,
        Stage::Metadata,
        Stage::Rules,
        Stage::Format,
        Stage::Output,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Stage::KernelRead => "kernel_read",
            Stage::Capture => "capture",
            Stage::Proc => "proc",
            Stage::Identity => "identity",
            Stage::Metadata => "metadata",
            Stage::Rules => "rules",
            Stage::Format => "format",
            Stage::Output => "output",
        }
    }
}

struct Clock {
    on: bool,
    last_ns: u64,
    acc_ns: [u64; 8],
}

thread_local! {
    static CLOCK: RefCell<Clock> = const {
        RefCell::new(Clock { on: false, last_ns: 0, acc_ns: [0; 8] })
    };
}

fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: writes one timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}

/// Turns the laps on for the calling thread when the environment asks.
pub fn enable_from_env() {
    if std::env::var_os("EXECSENTRY_PROFILE_STAGES").is_some_and(|v| v == "1") {
        CLOCK.with(|c| {
            let mut c = c.borrow_mut();
            c.on = true;
            c.last_ns = thread_cpu_ns();
        });
    }
}

/// Ends the current lap: the CPU time since the last lap goes to `stage`.
#[inline]
pub fn lap(stage: Stage) {
    CLOCK.with(|c| {
        let mut c = c.borrow_mut();
        if !c.on {
            return;
        }
        let now = thread_cpu_ns();
        let d = now.saturating_sub(c.last_ns);
        c.acc_ns[stage as usize] += d;
        c.last_ns = now;
    });
}

/// The totals per stage name, or nothing when off.
pub fn totals() -> Vec<(&'static str, u64)> {
    CLOCK.with(|c| {
        let c = c.borrow();
        if !c.on {
            return Vec::new();
        }
        Stage::ALL
            .iter()
            .map(|s| (s.name(), c.acc_ns[*s as usize]))
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn laps_add_up_to_the_thread_cpu_time() {
        CLOCK.with(|c| {
            let mut c = c.borrow_mut();
            c.on = true;
            c.last_ns = thread_cpu_ns();
        });
        let start = thread_cpu_ns();
        let mut x = 0u64;
        for stage in Stage::ALL {
            for i in 0..200_000u64 {
                x = x.wrapping_mul(31).wrapping_add(i);
            }
            lap(stage);
        }
        std::hint::black_box(x);
        let total: u64 = totals().iter().map(|(_, v)| v).sum();
        let measured = thread_cpu_ns() - start;
        assert!(
            total > 0 && total <= measured + 1_000_000,
            "{total} {measured}"
        );
        assert!(totals().iter().all(|(_, v)| *v > 0), "{:?}", totals());
    }
}
