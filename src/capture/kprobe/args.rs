//! From the fetched bytes of one exec to its argv.
//!
//! The block read from `argv[0]` on holds the argument strings, then the
//! environment's; `argc` NULs end the arguments. Bytes past the end of the
//! stack cannot be read, and the kernel leaves those elements of a fetch
//! as they were (stale), so only the bytes before the argc-th NUL are used:
//! they always lie inside the stack, which the kernel wrote moments before.
//! The argv pointers part 0 fetched give the first arguments' exact
//! lengths (`argv[i+1] - argv[i]`, `envp[0] - argv[argc-1]`), checked
//! against the NULs found.

/// An exec's argv as `/proc/<pid>/cmdline` shows it (every argument
/// followed by a NUL), and whether anything is missing.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Argv {
    pub bytes: Vec<u8>,
    /// Cut: by `max_bytes`, by the end of the fetched block, by a part that
    /// never arrived, or by a length the pointers contradict.
    pub truncated: bool,
}

/// `block` is the concatenation of the parts received, in block order,
/// stopping at the first missing one.
pub fn split(argc: u64, pointers: &[u64], block: &[u8], max_bytes: usize) -> Argv {
    let mut out = Argv::default();
    let mut pos = 0usize;
    let argc = usize::try_from(argc).unwrap_or(usize::MAX);
    for i in 0..argc {
        let rest = &block[pos.min(block.len())..];
        let Some(len) = rest.iter().position(|&b| b == 0) else {
            // The argument goes on past what was fetched.
            push_clipped(&mut out, rest, max_bytes);
            out.truncated = true;
            return out;
        };
        if let Some(want) = expected_len(i, argc, pointers) {
            if want != len {
                out.truncated = true;
                return out;
            }
        }
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

/// Argument `i`'s length by the pointers, when part 0 fetched them.
fn expected_len(i: usize, argc: usize, p: &[u64]) -> Option<usize> {
    let start = *p.get(i)?;
    let end = if i + 1 < argc {
        *p.get(i + 1)?
    } else {
        // argv[argc] is NULL, envp[0] (if any env) follows.
        match (p.get(argc), p.get(argc + 1)) {
            (Some(0), Some(&e)) if e != 0 => e,
            _ => return None,
        }
    };
    let d = end.checked_sub(start)?;
    usize::try_from(d).ok()?.checked_sub(1)
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

    /// A stack as the kernel lays it out: the pointers (argv, NULL, envp,
    /// NULL) and the block of strings at `base`.
    fn stack(args: &[&[u8]], env: &[&[u8]], base: u64) -> (Vec<u64>, Vec<u8>) {
        let mut block = Vec::new();
        let mut ptrs = Vec::new();
        for a in args {
            ptrs.push(base + block.len() as u64);
            block.extend_from_slice(a);
            block.push(0);
        }
        ptrs.push(0);
        for e in env {
            ptrs.push(base + block.len() as u64);
            block.extend_from_slice(e);
            block.push(0);
        }
        ptrs.push(0);
        (ptrs, block)
    }

    #[test]
    fn exact_argv_from_the_block() {
        let (p, b) = stack(&[b"/bin/true", b"a b", b"\n\x01\xff"], &[b"PATH=/bin"], 0x7ffd_0000);
        let a = split(3, &p, &b, 4096);
        assert_eq!(a.bytes, b"/bin/true\0a b\0\n\x01\xff\0");
        assert!(!a.truncated);
        // Without the pointers (an old kernel's short fetch) still exact.
        assert_eq!(split(3, &[], &b, 4096), a);
        // No environment: the last length is not checked, still exact.
        let (p, b) = stack(&[b"x", b""], &[], 0x1000);
        assert_eq!(split(2, &p, &b, 64).bytes, b"x\0\0");
        assert_eq!(split(0, &p, &b, 64), Argv::default());
    }

    #[test]
    fn cut_arguments_are_flagged() {
        let big = vec![b'A'; 5000];
        let (p, b) = stack(&[b"/bin/echo", &big], &[b"E=1"], 0x1000);
        // The fetch covered 2000 bytes only.
        let a = split(2, &p, &b[..2000], 1 << 20);
        assert!(a.truncated);
        assert_eq!(&a.bytes[..10], b"/bin/echo\0");
        assert_eq!(a.bytes.len(), 2001, "what was fetched is kept, NUL-ended");
        // max_bytes cuts.
        let a = split(2, &p, &b, 100);
        assert!(a.truncated);
        assert_eq!(a.bytes.len(), 100);
        // More arguments than the block holds.
        let (p, b) = stack(&[b"a", b"b", b"c"], &[], 0x1000);
        let a = split(3, &p, &b[..4], 64);
        assert_eq!(a.bytes, b"a\0b\0");
        assert!(a.truncated);
    }

    #[test]
    fn stale_bytes_contradicting_the_pointers_are_not_used() {
        let (p, mut b) = stack(&[b"/bin/ls", b"secret"], &[b"E=1"], 0x1000);
        // An element the kernel could not read kept another record's bytes.
        b[9] = 0;
        let a = split(2, &p, &b, 64);
        assert!(a.truncated);
        assert_eq!(a.bytes, b"/bin/ls\0");
    }

    #[test]
    fn hostile_argc_does_not_loop() {
        let a = split(u64::MAX, &[], b"a\0b\0", 64);
        assert!(a.truncated);
        assert_eq!(a.bytes, b"a\0b\0");
    }
}
