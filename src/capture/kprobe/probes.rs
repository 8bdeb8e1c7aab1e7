//! The probe definitions written to `kprobe_events`, per feature set, and
//! the group names that tell which sensor owns which probes.
//!
//! Every field of every probe has a fixed size, so the largest record a
//! probe can produce is known before it is enabled: no string fetch (a
//! `string`/`ustring` is as long as the task's argument, up to
//! `MAX_STRING_SIZE` = 4 KiB, which would let any user make a record larger
//! than `PERF_MAX_TRACE_SIZE` and hit the kernel's `WARN_ONCE`). The one
//! dynamic field is `$comm`, bounded by `TASK_COMM_LEN`.
//!
//! At `start_thread(regs, new_ip, new_sp)` (x86-64: `new_sp` in `%dx`) the
//! new stack holds argc, the argv pointers, NULL, the envp pointers; the
//! strings themselves lie contiguously from `argv[0]`: the arguments, then
//! the environment. Part 0 reads argc, the first pointers and the start of
//! that block; part k reads the block on from where part k-1 stopped. All
//! parts fire on the same exec, on the same CPU, one after the other.

/// `PERF_MAX_TRACE_SIZE` before 5.13 (8 192 after): the smallest record
/// limit on the perf read path. `perf_trace_buf_alloc` warns (and so
/// panics a `panic_on_warn` host) above it.
pub const PERF_MAX_TRACE_SIZE: usize = 2048;
/// The perf path allocates `ALIGN(size + sizeof(u32), 8) - sizeof(u32)`.
pub const RECORD_LIMIT: usize = PERF_MAX_TRACE_SIZE - 4;
/// `MAX_ARRAY_LEN`: elements of one array fetch.
pub const MAX_ARRAY_LEN: usize = 64;
/// `MAX_TRACE_ARGS`: arguments of one probe.
pub const MAX_TRACE_ARGS: usize = 128;
/// `TASK_COMM_LEN`: what `$comm` can add to a record.
pub const COMM_MAX: usize = 16;
/// The common fields (8 bytes) and the kprobe's `__probe_ip`.
pub const HEADER: usize = 16;
/// Bytes kept free in every record for the kernel's alignment of fields.
const SLACK: usize = 16;
/// argv pointers part 0 reads (validates the first arguments' lengths).
pub const POINTERS: usize = 16;
/// The symbol probed.
pub const SYMBOL: &str = "start_thread";
/// Group names: `execsentry_<pid>_<start time>`.
pub const GROUP_PREFIX: &str = "execsentry_";

/// What the running kernel accepts, found by trying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Features {
    /// `:u64[N]` array fetches (5.1).
    pub arrays: bool,
    /// `$comm` (absent on some old kernels).
    pub comm: bool,
}

/// One probe of the set: its event name and definition line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    pub event: String,
    pub definition: String,
    /// Byte offset in the arg block where this part's fetch starts.
    pub block_start: usize,
    /// Bytes of the block it reads.
    pub block_len: usize,
    /// Largest record it can produce, by this layout.
    pub max_record: usize,
}

/// Names of the block fields of a part: `b0`, `b1`, …
pub fn block_field(i: usize) -> String {
    format!("b{i}")
}

/// Names of the pointer fields (scalar layout): `p0`, `p1`, …; the array
/// layout has one field `p`.
pub fn pointer_field(i: usize) -> String {
    format!("p{i}")
}

/// The probe set for `features`, covering up to `want` bytes of arg block
/// in at most `max_parts` probes.
pub fn parts(group: &str, features: Features, want: usize, max_parts: usize) -> Vec<Part> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut k = 0;
    while k < max_parts.max(1) && (k == 0 || start < want) {
        let mut args = vec!["sp=%dx:u64".to_string()];
        let mut size = HEADER + 8;
        if k == 0 {
            args.push("argc=+0(%dx):u64".into());
            size += 8;
            if features.comm {
                args.push("comm=$comm:string".into());
                size += 4 + COMM_MAX;
            }
            if features.arrays {
                args.push(format!("p=+8(%dx):u64[{POINTERS}]"));
                size += 8 * POINTERS;
            } else {
                for i in 0..POINTERS {
                    args.push(format!("{}=+{}(%dx):u64", pointer_field(i), 8 + 8 * i));
                    size += 8;
                }
            }
        }
        let budget = RECORD_LIMIT - SLACK - size;
        let words = if features.arrays {
            budget / 8
        } else {
            (budget / 8).min(MAX_TRACE_ARGS - args.len())
        };
        let mut off = start;
        let mut left = words;
        let mut i = 0;
        while left > 0 {
            let n = if features.arrays { left.min(MAX_ARRAY_LEN) } else { 1 };
            let ty = if features.arrays { format!("u64[{n}]") } else { "u64".into() };
            args.push(format!("{}=+{off}(+8(%dx)):{ty}", block_field(i)));
            off += 8 * n;
            size += 8 * n;
            left -= n;
            i += 1;
        }
        let event = format!("argv{k}");
        out.push(Part {
            definition: format!("p:{group}/{event} {SYMBOL} {}", args.join(" ")),
            event,
            block_start: start,
            block_len: off - start,
            max_record: size,
        });
        start = off;
        k += 1;
    }
    out
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
/// in another pid namespace may look gone from here; its events are held
/// open through perf, and the kernel refuses to remove those with EBUSY.)
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

    const ALL: Features = Features { arrays: true, comm: true };

    #[test]
    fn every_part_fits_the_smallest_record_limit() {
        for features in [
            ALL,
            Features { arrays: false, comm: true },
            Features { arrays: true, comm: false },
            Features { arrays: false, comm: false },
        ] {
            let ps = parts("g", features, 1 << 20, 8);
            assert_eq!(ps.len(), 8);
            let mut next = 0;
            for p in &ps {
                assert!(p.max_record + SLACK <= RECORD_LIMIT, "{features:?} {}", p.max_record);
                let nargs = p.definition.split_whitespace().count() - 2;
                assert!(nargs <= MAX_TRACE_ARGS, "{nargs} args");
                assert_eq!(p.block_start, next, "parts cover the block without a gap");
                next += p.block_len;
                // No string fetch but the bounded $comm.
                assert!(!p.definition.contains("ustring"));
                assert_eq!(p.definition.matches(":string").count(), usize::from(p.event == "argv0" && features.comm));
                // kprobe_events takes lines of up to 4 KiB on old kernels.
                assert!(p.definition.len() < 4000);
            }
        }
    }

    #[test]
    fn definition_text() {
        let ps = parts("execsentry_7_9", ALL, 3000, 4);
        assert_eq!(ps.len(), 2, "3000 bytes need two parts");
        let d0 = &ps[0].definition;
        assert!(d0.starts_with("p:execsentry_7_9/argv0 start_thread sp=%dx:u64 argc=+0(%dx):u64 comm=$comm:string p=+8(%dx):u64[16] b0=+0(+8(%dx)):u64[64] b1=+512(+8(%dx)):u64[64]"), "{d0}");
        assert!(ps[1].definition.starts_with(&format!(
            "p:execsentry_7_9/argv1 start_thread sp=%dx:u64 b0=+{}(+8(%dx)):u64[64]",
            ps[0].block_len
        )));
        let scalar = parts("g", Features { arrays: false, comm: false }, 10, 4);
        assert_eq!(scalar.len(), 1);
        assert!(scalar[0].definition.contains(" p15=+128(%dx):u64 b0=+0(+8(%dx)):u64 b1=+8(+8(%dx)):u64"));
        assert_eq!(removal("g", "argv1"), "-:g/argv1");
    }

    #[test]
    fn ownership_of_groups() {
        assert_eq!(group_name(42, 1234), "execsentry_42_1234");
        assert_eq!(group_owner("execsentry_42_1234"), Some((42, 1234)));
        assert_eq!(group_owner("execsentry_x"), None);
        assert_eq!(group_owner("kprobes"), None);
        let listing = "p:execsentry_10_5/argv0 start_thread sp=%dx:u64\n\
p:execsentry_10_5/argv1 start_thread sp=%dx:u64\n\
p:execsentry_11_6/argv0 start_thread sp=%dx:u64\n\
p:execsentry_12_7/argv0 start_thread sp=%dx:u64\n\
p:kprobes/myprobe do_sys_open\n\
r:execsentryfoo/x do_exit\n";
        // 10 is us; 11 lives with the same start; 12's pid was reused.
        let alive = |pid| match pid {
            11 => Some(6),
            12 => Some(99),
            _ => None,
        };
        let stale = stale_events(listing, "execsentry_10_5", alive);
        assert_eq!(stale, vec![("execsentry_12_7".to_string(), "argv0".to_string())]);
        // Someone else's probes are never touched.
        assert_eq!(listed_events(listing).len(), 4);
    }
}
