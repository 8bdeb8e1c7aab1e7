//! The probe written to `kprobe_events`, and the group names that tell
//! which sensor owns which probes.
//!
//! One return probe on `start_thread(regs, new_ip, new_sp)`: when it
//! returns, the exec'ing task's user stack pointer is `new_sp`, below
//! which nothing was written yet, and above which lie argc, the argv and
//! envp pointers, the aux vector and the strings the kernel copied moments
//! before. The probe's own trace record is fixed and tiny (the common
//! fields, the return addresses and `$comm`, bounded by `TASK_COMM_LEN`):
//! no string fetch, so no user can make it larger than
//! `PERF_MAX_TRACE_SIZE` (2 048 bytes before 5.13) and trip the kernel's
//! `WARN_ONCE` in `perf_trace_buf_alloc`. The argv itself comes with the
//! perf sample as a user-stack dump (`PERF_SAMPLE_STACK_USER`), a record
//! field outside that limit, sized by us and bounded by the u16 sample
//! size; the copy stops at the first unmapped byte, the end of the stack.

/// `PERF_MAX_TRACE_SIZE` before 5.13 (8 192 after): the smallest trace
/// record limit on the perf read path.
pub const PERF_MAX_TRACE_SIZE: usize = 2048;
/// The perf path allocates `ALIGN(size + sizeof(u32), 8) - sizeof(u32)`.
pub const RECORD_LIMIT: usize = PERF_MAX_TRACE_SIZE - 4;
/// `TASK_COMM_LEN`: what `$comm` adds to a record.
pub const COMM_MAX: usize = 16;
/// The symbol probed.
pub const SYMBOL: &str = "start_thread";
/// Group names: `execsentry_<pid>_<start time>`.
pub const GROUP_PREFIX: &str = "execsentry_";

/// What the running kernel accepts, found by trying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Features {
    /// `$comm` (absent on some old kernels).
    pub comm: bool,
}

/// `MAX_ARRAY_LEN`: elements of one array fetch (5.1).
pub const MAX_ARRAY_LEN: usize = 64;
/// Bytes the entry probe reads from `argv[0]`.
pub const HEAD_BYTES: usize = 8 * MAX_ARRAY_LEN;

/// What 32-bit (and x32) programs start through on a 64-bit kernel, with
/// the same `(regs, new_ip, new_sp)` first arguments; absent without
/// `CONFIG_COMPAT`, so probed where the kernel accepts it.
pub const COMPAT_SYMBOL: &str = "compat_start_thread";

/// The compat return probe's event: `<group>_c`.
pub fn compat_event(group: &str) -> String {
    format!("{group}_c")
}

/// The return probe on [`COMPAT_SYMBOL`]: the same fixed, tiny record as
/// [`definition`]'s; the argv comes from the user-stack dump, in 4-byte
/// words. No entry probe: its fetches would dereference 8-byte words.
pub fn compat_definition(group: &str, features: Features) -> String {
    let mut d = format!("r:{group}/{} {COMPAT_SYMBOL}", compat_event(group));
    if features.comm {
        d.push_str(" comm=$comm:string");
    }
    d
}

/// The entry probe's event: `<group>_a`.
pub fn entry_event(group: &str) -> String {
    format!("{group}_a")
}

/// The entry probe on `start_thread`: `new_sp` and the first
/// [`HEAD_BYTES`] of the strings, from `argv[0]`, with fixed-size reads
/// (an array where the kernel has them, else one field per word: at most
/// 66 arguments, below `MAX_TRACE_ARGS`). The user-stack dump of the
/// return sample is cut, on some execs, at the page below the strings;
/// this head completes short argv then. Its record is 16 + 8 + 512 bytes.
pub fn entry_definition(group: &str, arrays: bool) -> String {
    let mut d = format!("p:{group}/{} {SYMBOL} sp=%dx:u64", entry_event(group));
    if arrays {
        d.push_str(&format!(" b=+0(+8(%dx)):u64[{MAX_ARRAY_LEN}]"));
    } else {
        for i in 0..MAX_ARRAY_LEN {
            d.push_str(&format!(" b{i}=+{}(+8(%dx)):u64", 8 * i));
        }
    }
    d
}

/// The definition line of our probe. The event is named like its group:
/// `kprobe_profile` lists events by name alone.
pub fn definition(group: &str, features: Features) -> String {
    let mut d = format!("r:{group}/{group} {SYMBOL}");
    if features.comm {
        d.push_str(" comm=$comm:string");
    }
    d
}

/// The largest trace record of the probe by its format: the fixed part
/// and what the dynamic `$comm` can add.
pub fn max_record(fixed_size: usize, features: Features) -> usize {
    fixed_size + if features.comm { COMM_MAX } else { 0 }
}

/// The line that removes one event.
pub fn removal(group: &str, event: &str) -> String {
    format!("-:{group}/{event}")
}

/// This sensor's group: unique per process and per start, so a pid reused
/// after a crash does not pass for the old owner.
pub fn group_name(pid: u32, start_time: u64) -> String {
    format!("{GROUP_PREFIX}{pid}_{start_time}")
}

/// (pid, start time) of one of our groups' names.
pub fn group_owner(group: &str) -> Option<(u32, u64)> {
    let rest = group.strip_prefix(GROUP_PREFIX)?;
    let (pid, start) = rest.split_once('_')?;
    Some((pid.parse().ok()?, start.parse().ok()?))
}

/// Every `(group, event)` of `kprobe_events` that belongs to some
/// execsentry sensor.
pub fn listed_events(kprobe_events: &str) -> Vec<(String, String)> {
    kprobe_events
        .lines()
        .filter_map(|l| {
            let name = l.split_whitespace().next()?;
            let (_, ge) = name.split_once(':')?;
            let (g, e) = ge.split_once('/')?;
            group_owner(g).map(|_| (g.to_string(), e.to_string()))
        })
        .collect()
}

/// The events of other sensors' groups whose owner is gone: not `ours`,
/// and `alive(pid)` does not return the start time in the name. (A sensor
/// in another pid namespace may look gone from here; its event is held
/// open through perf, and the kernel refuses to remove it with EBUSY.)
pub fn stale_events(
    kprobe_events: &str,
    ours: &str,
    alive: impl Fn(u32) -> Option<u64>,
) -> Vec<(String, String)> {
    listed_events(kprobe_events)
        .into_iter()
        .filter(|(g, _)| g != ours)
        .filter(|(g, _)| match group_owner(g) {
            Some((pid, start)) => alive(pid) != Some(start),
            None => false,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn definition_text_and_bound() {
        assert_eq!(
            definition("execsentry_7_9", Features { comm: true }),
            "r:execsentry_7_9/execsentry_7_9 start_thread comm=$comm:string"
        );
        assert_eq!(
            definition("g", Features { comm: false }),
            "r:g/g start_thread"
        );
        // No string fetch of user memory: the record cannot grow with argv.
        for c in [true, false] {
            let d = definition("g", Features { comm: c });
            assert!(!d.contains("ustring") && !d.contains("+0("));
        }
        // A kretprobe record: 8 common bytes, func and ret_ip, comm's loc.
        assert!(max_record(28, Features { comm: true }) <= RECORD_LIMIT);
        assert_eq!(removal("g", "exec"), "-:g/exec");
        assert_eq!(
            compat_definition("g", Features { comm: true }),
            "r:g/g_c compat_start_thread comm=$comm:string"
        );
        assert_eq!(
            entry_definition("g", true),
            "p:g/g_a start_thread sp=%dx:u64 b=+0(+8(%dx)):u64[64]"
        );
        let scalar = entry_definition("g", false);
        assert!(scalar.ends_with(" b63=+504(+8(%dx)):u64"));
        assert_eq!(scalar.split_whitespace().count() - 2, 65);
    }

    #[test]
    fn ownership_of_groups() {
        assert_eq!(group_name(42, 1234), "execsentry_42_1234");
        assert_eq!(group_owner("execsentry_42_1234"), Some((42, 1234)));
        assert_eq!(group_owner("execsentry_x"), None);
        assert_eq!(group_owner("kprobes"), None);
        let listing = "r:execsentry_10_5/exec start_thread comm=$comm:string\n\
r:execsentry_11_6/exec start_thread\n\
r:execsentry_12_7/exec start_thread\n\
p:execsentry_13_8/exec start_thread\n\
p:kprobes/myprobe do_sys_open\n\
r:execsentryfoo/x do_exit\n";
        // 10 is us; 11 lives with the same start; 12's pid was reused; 13 is gone.
        let alive = |pid| match pid {
            11 => Some(6),
            12 => Some(99),
            _ => None,
        };
        let stale = stale_events(listing, "execsentry_10_5", alive);
        assert_eq!(
            stale,
            vec![
                ("execsentry_12_7".to_string(), "exec".to_string()),
                ("execsentry_13_8".to_string(), "exec".to_string())
            ]
        );
        // Someone else's probes are never touched.
        assert_eq!(listed_events(listing).len(), 4);
    }
}
