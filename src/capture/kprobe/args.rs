//! From the user-stack dump of one exec to its argv.
//!
//! The dump starts at the new stack pointer `sp`: argc, the argv pointers,
//! NULL, the envp pointers, NULL, the aux vector, then (from `argv[0]` on)
//! the argument strings, then the environment's. The kernel copies only
//! readable bytes and says how many; every argument's start is checked
//! against its pointer, so a cut dump or an odd stack is flagged, never
//! passed on short.

/// An exec's argv as `/proc/<pid>/cmdline` shows it (every argument
/// followed by a NUL), and whether anything is missing.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Argv {
    pub bytes: Vec<u8>,
    /// Cut: by `max_bytes`, by the end of the dump, or by a stack that
    /// does not look like the one exec builds.
    pub truncated: bool,
}

/// The size of argc and of each pointer on the new stack: 8 for a 64-bit
/// program, 4 for a 32-bit (or x32) one started by `compat_start_thread`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Word {
    W64,
    W32,
}

impl Word {
    const fn size(self) -> usize {
        match self {
            Word::W64 => 8,
            Word::W32 => 4,
        }
    }

    fn at(self, dump: &[u8], off: usize) -> Option<u64> {
        let b = dump.get(off..off.checked_add(self.size())?)?;
        Some(match self {
            Word::W64 => u64::from_ne_bytes(b.try_into().ok()?),
            Word::W32 => u64::from(u32::from_ne_bytes(b.try_into().ok()?)),
        })
    }
}

fn u64_at(dump: &[u8], off: usize) -> Option<u64> {
    Word::W64.at(dump, off)
}

/// [`from_stack`] for a 32-bit program's stack (no entry-probe head: its
/// fetches dereference 64-bit words).
pub fn from_compat_stack(sp: u64, dump: &[u8], max_bytes: usize) -> Argv {
    split(sp, dump, max_bytes, Word::W32)
}

/// `dump` holds the bytes from `sp` on that the kernel could copy; `head`
/// (from the entry probe) the first bytes from `argv[0]` on, used where
/// the dump stops short of them.
pub fn from_stack(sp: u64, dump: &[u8], head: Option<&[u8]>, max_bytes: usize) -> Argv {
    if let Some(head) = head
        && let Some(at) = u64_at(dump, 8)
            .and_then(|p| p.checked_sub(sp))
            .and_then(|o| usize::try_from(o).ok())
        && at < dump.len().saturating_add(64 * 1024)
        && dump.len() < at + head.len()
    {
        // The bytes between the dump's end and argv[0] (the aux vector's
        // strings) are never read as arguments: the pointers say where
        // each argument starts.
        let mut joined = dump.to_vec();
        joined.resize(at.max(joined.len()), 0);
        let from = joined.len() - at;
        joined.extend_from_slice(&head[from..]);
        return split(sp, &joined, max_bytes, Word::W64);
    }
    split(sp, dump, max_bytes, Word::W64)
}

fn split(sp: u64, dump: &[u8], max_bytes: usize, w: Word) -> Argv {
    let ws = w.size() as u64;
    let mut out = Argv::default();
    let Some(argc) = w.at(dump, 0) else {
        out.truncated = true;
        return out;
    };
    if argc == 0 {
        return out;
    }
    // Offsets of the strings, by their pointers.
    let offset_of = |i: u64| -> Option<usize> {
        let p = w.at(
            dump,
            usize::try_from(i.checked_add(1)?.checked_mul(ws)?).ok()?,
        )?;
        usize::try_from(p.checked_sub(sp)?).ok()
    };
    let Some(mut pos) = offset_of(0) else {
        out.truncated = true;
        return out;
    };
    // The strings lie above the pointer arrays.
    if u64::try_from(pos).unwrap_or(u64::MAX) < argc.saturating_add(2).saturating_mul(ws) {
        out.truncated = true;
        return out;
    }
    for i in 0..argc {
        if i > 0 {
            match offset_of(i) {
                Some(o) if o == pos => {}
                // The pointer lies past the dump: the string too.
                None if usize::try_from((i + 1) * ws).is_ok_and(|o| o + w.size() > dump.len()) => {}
                _ => {
                    out.truncated = true;
                    return out;
                }
            }
        }
        let rest = dump.get(pos..).unwrap_or_default();
        let Some(len) = rest.iter().position(|&b| b == 0) else {
            // The argument goes on past what the dump holds.
            push_clipped(&mut out, rest, max_bytes);
            out.truncated = true;
            return out;
        };
        if out.bytes.len() + len + 1 > max_bytes {
            push_clipped(&mut out, &rest[..len], max_bytes);
            out.truncated = true;
            return out;
        }
        out.bytes.extend_from_slice(&rest[..len]);
        out.bytes.push(0);
        pos += len + 1;
    }
    out
}

/// The environment from the same dump: the `envp` pointers after argv's
/// NULL, each string checked against its pointer like argv's. `None` when
/// the dump does not hold all of it within `max_bytes` (the pipeline then
/// reads `/proc/<pid>/environ`, marked as such).
pub fn env_from_stack(sp: u64, dump: &[u8], max_bytes: usize, w: Word) -> Option<Vec<u8>> {
    let argc = usize::try_from(w.at(dump, 0)?).ok()?;
    let mut out = Vec::new();
    for i in argc.checked_add(2)?.. {
        let p = w.at(dump, i.checked_mul(w.size())?)?;
        if p == 0 {
            return Some(out);
        }
        let at = usize::try_from(p.checked_sub(sp)?).ok()?;
        let rest = dump.get(at..)?;
        let len = rest.iter().position(|&b| b == 0)?;
        if out.len() + len + 1 > max_bytes {
            return None;
        }
        out.extend_from_slice(&rest[..len]);
        out.push(0);
    }
    None
}

fn push_clipped(out: &mut Argv, s: &[u8], max_bytes: usize) {
    let room = max_bytes.saturating_sub(out.bytes.len() + 1);
    if room > 0 && !s.is_empty() {
        out.bytes.extend_from_slice(&s[..s.len().min(room)]);
        out.bytes.push(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SP: u64 = 0x7ffd_0000_1000;

    /// A stack as exec lays it out from sp: argc, argv, NULL, envp, NULL,
    /// a short aux vector, then the strings.
    fn stack(args: &[&[u8]], env: &[&[u8]]) -> Vec<u8> {
        let tables = 8 * (1 + args.len() + 1 + env.len() + 1 + 4);
        let mut strings = Vec::new();
        let mut ptrs = Vec::new();
        for s in args.iter().chain(env) {
            ptrs.push(SP + (tables + strings.len()) as u64);
            strings.extend_from_slice(s);
            strings.push(0);
        }
        let mut d = Vec::new();
        d.extend_from_slice(&(args.len() as u64).to_ne_bytes());
        for (i, p) in ptrs.iter().enumerate() {
            if i == args.len() {
                d.extend_from_slice(&0u64.to_ne_bytes());
            }
            d.extend_from_slice(&p.to_ne_bytes());
        }
        if env.is_empty() {
            d.extend_from_slice(&0u64.to_ne_bytes());
        }
        d.extend_from_slice(&0u64.to_ne_bytes());
        d.extend_from_slice(&[0xaa; 32]); // aux vector
        assert_eq!(d.len(), tables);
        d.extend_from_slice(&strings);
        d.extend_from_slice(b"/bin/true\0\0\0\0\0\0\0\0\0");
        d
    }

    #[test]
    fn the_environment_comes_from_the_same_dump() {
        let d = stack(&[b"/bin/true", b"x"], &[b"A=1", b"ES_WANTED=yes"]);
        assert_eq!(
            env_from_stack(SP, &d, 4096, Word::W64).as_deref(),
            Some(&b"A=1\0ES_WANTED=yes\0"[..])
        );
        assert_eq!(
            env_from_stack(SP, &d, 8, Word::W64),
            None,
            "over the budget"
        );
        let cut = d.len() - 20;
        assert_eq!(
            env_from_stack(SP, &d[..cut], 4096, Word::W64),
            None,
            "the dump stops short"
        );
        let none = stack(&[b"/bin/true"], &[]);
        assert_eq!(
            env_from_stack(SP, &none, 4096, Word::W64).as_deref(),
            Some(&b""[..])
        );
    }

    /// The same layout with 32-bit argc and pointers, as
    /// `compat_start_thread` leaves it for a 32-bit program.
    fn stack32(args: &[&[u8]], env: &[&[u8]]) -> (u64, Vec<u8>) {
        const SP32: u64 = 0xffd0_1000;
        let tables = 4 * (1 + args.len() + 1 + env.len() + 1 + 4);
        let (mut d, mut strings) = (Vec::new(), Vec::new());
        d.extend_from_slice(&(args.len() as u32).to_ne_bytes());
        for (i, s) in args.iter().chain(env).enumerate() {
            if i == args.len() {
                d.extend_from_slice(&0u32.to_ne_bytes());
            }
            d.extend_from_slice(&((SP32 as usize + tables + strings.len()) as u32).to_ne_bytes());
            strings.extend_from_slice(s);
            strings.push(0);
        }
        if env.is_empty() {
            d.extend_from_slice(&0u32.to_ne_bytes());
        }
        d.extend_from_slice(&0u32.to_ne_bytes());
        d.extend_from_slice(&[0xaa; 16]);
        assert_eq!(d.len(), tables);
        d.extend_from_slice(&strings);
        (SP32, d)
    }

    #[test]
    fn a_32_bit_stack_has_4_byte_words() {
        let (sp, d) = stack32(&[b"/opt/t32", b"a b", b"end"], &[b"E=1"]);
        let a = from_compat_stack(sp, &d, 4096);
        assert_eq!(a.bytes, b"/opt/t32\0a b\0end\0");
        assert!(!a.truncated);
        assert_eq!(
            env_from_stack(sp, &d, 4096, Word::W32).as_deref(),
            Some(&b"E=1\0"[..])
        );
        // Read as a 64-bit stack it contradicts itself: flagged, not garbage.
        assert!(from_stack(sp, &d, None, 4096).truncated);
        // Cut inside "end" (the environment, "E=1", follows it).
        assert!(from_compat_stack(sp, &d[..d.len() - 6], 4096).truncated);
    }

    #[test]
    fn exact_argv_from_the_stack() {
        let d = stack(
            &[b"/bin/true", b"a b", b"\n\x01\xff\"", b""],
            &[b"PATH=/bin"],
        );
        let a = from_stack(SP, &d, None, 4096);
        assert_eq!(a.bytes, b"/bin/true\0a b\0\n\x01\xff\"\0\0");
        assert!(!a.truncated);
        let d = stack(&[b"x"], &[]);
        assert_eq!(from_stack(SP, &d, None, 64).bytes, b"x\0");
        let d = stack(&[], &[b"E=1"]);
        assert_eq!(from_stack(SP, &d, None, 64), Argv::default());
    }

    #[test]
    fn a_cut_dump_is_flagged() {
        let big = vec![b'A'; 5000];
        let d = stack(&[b"/bin/echo", &big, b"end"], &[b"E=1"]);
        let a = from_stack(SP, &d[..3000], None, 1 << 20);
        assert!(a.truncated);
        assert!(a.bytes.starts_with(b"/bin/echo\0AAAA"));
        assert!(
            a.bytes.ends_with(b"A\0"),
            "what was dumped is kept, NUL-ended"
        );
        // max_bytes cuts.
        let a = from_stack(SP, &d, None, 100);
        assert!(a.truncated);
        assert_eq!(a.bytes.len(), 100);
        // The dump ends inside the pointer array.
        let args: Vec<Vec<u8>> = (0..300).map(|i| format!("x{i}").into_bytes()).collect();
        let refs: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
        let d = stack(&refs, &[]);
        let a = from_stack(SP, &d[..1000], None, 1 << 20);
        assert!(a.truncated);
        assert!(
            from_stack(SP, &d, None, 1 << 20)
                == Argv {
                    bytes: args.join(&0u8).into_iter().chain([0]).collect(),
                    truncated: false
                }
        );
        assert!(from_stack(SP, &d[..4], None, 64).truncated);
    }

    #[test]
    fn the_head_completes_a_dump_cut_below_the_strings() {
        let d = stack(&[b"/bin/true", b"--x", b"storm-1-2"], &[b"E=1"]);
        let at = (u64::from_ne_bytes(d[8..16].try_into().unwrap()) - SP) as usize;
        let head = &d[at..at + 30];
        // Cut at the strings: the head gives them.
        let a = from_stack(SP, &d[..at - 8], Some(head), 4096);
        assert_eq!(a.bytes, b"/bin/true\0--x\0storm-1-2\0");
        assert!(!a.truncated);
        // Cut inside the strings: the head goes on from there.
        assert_eq!(from_stack(SP, &d[..at + 5], Some(head), 4096), a);
        // The head too short for the last argument: flagged.
        assert!(from_stack(SP, &d[..at], Some(&head[..12]), 4096).truncated);
        // A complete dump does not need it.
        assert_eq!(from_stack(SP, &d, Some(b"garbage"), 4096), a);
    }

    #[test]
    fn a_stack_that_contradicts_its_pointers_is_flagged() {
        let mut d = stack(&[b"/bin/ls", b"secret"], &[b"E=1"]);
        // argv[1] pointing elsewhere than after argv[0].
        let p1 = u64::from_ne_bytes(d[16..24].try_into().unwrap());
        d[16..24].copy_from_slice(&(p1 + 2).to_ne_bytes());
        let a = from_stack(SP, &d, None, 64);
        assert!(a.truncated);
        assert_eq!(a.bytes, b"/bin/ls\0");
        // argv[0] pointing into the tables, below sp, or far away.
        for p in [SP + 8, SP - 8, u64::MAX] {
            let mut d = stack(&[b"a"], &[]);
            d[8..16].copy_from_slice(&p.to_ne_bytes());
            assert!(from_stack(SP, &d, None, 64).truncated);
        }
        // A huge argc on a short stack ends, flagged.
        let mut d = stack(&[b"a"], &[]);
        d[..8].copy_from_slice(&u64::MAX.to_ne_bytes());
        assert!(from_stack(SP, &d, None, 64).truncated);
    }
}
