//! `process.env_vars`: the values of the environment variables that
//! `sensor.capture_env_vars` names, and no others (an environment holds
//! secrets; Elastic Defend captures a configured list too).
//!
//! [`filter`] is pure and works on an `envp` blob as the kernel lays it out
//! (`NAME=value\0…`): a capture source that sees `envp` at exec time passes
//! it here. [`read_environ`] is the fallback, `/proc/<pid>/environ` read
//! after the exec: a process that exits first is missed, so events say
//! which source they came from (`execsentry.env_vars_source`).

use std::io::Read;
use std::path::Path;

/// Source names for `execsentry.env_vars_source`.
pub const FROM_CAPTURE: &str = "capture";
pub const FROM_PROC: &str = "proc";

/// Bytes of `/proc/<pid>/environ` read at most: the kernel caps argv plus
/// envp at a quarter of the stack limit, which is usually 2 MiB.
pub const MAX_ENVIRON_BYTES: usize = 2 << 20;

/// The `NAME=value` entries of `envp` whose NAME is in `names` (exact,
/// case-sensitive, as the environment is), in `envp` order, the first
/// occurrence of a name only, taking at most `budget` bytes in all. Returns
/// the entries and whether any matching entry did not fit.
pub fn filter(envp: &[u8], names: &[String], budget: usize) -> (Vec<String>, bool) {
    let mut out: Vec<String> = Vec::new();
    let mut used = 0usize;
    let mut dropped = false;
    let mut seen: Vec<&[u8]> = Vec::new();
    if names.is_empty() {
        return (out, false);
    }
    for entry in envp.split(|&b| b == 0) {
        let Some(eq) = entry.iter().position(|&b| b == b'=') else {
            continue;
        };
        let name = &entry[..eq];
        if !names.iter().any(|n| n.as_bytes() == name) {
            continue;
        }
        if seen.contains(&name) {
            continue;
        }
        seen.push(name);
        let (text, _) = crate::bytes::render(entry);
        if used + text.len() > budget {
            dropped = true;
            continue;
        }
        used += text.len();
        out.push(text.into_owned());
    }
    (out, dropped)
}

/// Reads `/proc/<pid>/environ` under `proc_root`, bounded.
pub fn read_environ(proc_root: &Path, pid: u32) -> std::io::Result<Vec<u8>> {
    let f = std::fs::File::open(proc_root.join(pid.to_string()).join("environ"))?;
    let mut buf = Vec::new();
    f.take(MAX_ENVIRON_BYTES as u64).read_to_end(&mut buf)?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn keeps_only_listed_names_within_budget() {
        let envp =
            b"HOME=/root\0HTTPS_PROXY=socks5h://x:1\0https_proxy=y\0PATH=/bin\0HTTPS_PROXY=dup\0";
        let (v, cut) = filter(envp, &names(&["HTTPS_PROXY", "PATH"]), 1024);
        assert_eq!(v, vec!["HTTPS_PROXY=socks5h://x:1", "PATH=/bin"]);
        assert!(!cut);
        let (v, cut) = filter(envp, &names(&["HTTPS_PROXY", "PATH"]), 12);
        assert_eq!(v, vec!["PATH=/bin"]);
        assert!(cut);
        assert_eq!(filter(envp, &[], 1024), (vec![], false));
        // Names are exact: a prefix is not a match.
        assert!(filter(b"PATHX=1\0", &names(&["PATH"]), 99).0.is_empty());
        // Hostile bytes are escaped, never passed raw.
        let (v, _) = filter(b"X=a\nb\xff\0", &names(&["X"]), 99);
        assert!(!v[0].contains('\u{fffd}'));
        assert!(v[0].starts_with("X=a"));
    }

    #[test]
    fn environ_of_this_process() {
        let env = read_environ(Path::new("/proc"), std::process::id()).unwrap();
        let (v, _) = filter(&env, &names(&["PATH"]), 1 << 20);
        assert_eq!(v.len(), usize::from(std::env::var_os("PATH").is_some()));
    }
}
