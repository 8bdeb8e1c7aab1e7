//! Least privilege: which capabilities the daemon keeps after set-up, the
//! refusal to load files that non-root users could have written, and the
//! systemd readiness notification.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use caps::{CapSet, Capability, CapsHashSet};

/// After set-up the sensor only reads other processes' `/proc` entries:
/// `exe`, `cwd` and `ns/*` need ptrace-read access (CAP_SYS_PTRACE for
/// processes with capabilities we no longer hold), and CAP_DAC_READ_SEARCH
/// lets it traverse directories of other users' processes.
pub const KEPT: [Capability; 2] = [Capability::CAP_SYS_PTRACE, Capability::CAP_DAC_READ_SEARCH];

/// Drops every capability but [`KEPT`] (plus CAP_SYS_ADMIN when the
/// fanotify capture must mark filesystems mounted later) from all five sets
/// and sets `no_new_privs`. Returns the names kept (those we actually had).
pub fn drop_capabilities(keep_sys_admin: bool) -> Result<Vec<String>> {
    let permitted = caps::read(None, CapSet::Permitted)?;
    let extra = keep_sys_admin.then_some(Capability::CAP_SYS_ADMIN);
    let keep: CapsHashSet = KEPT
        .iter()
        .copied()
        .chain(extra)
        .filter(|c| permitted.contains(c))
        .collect();
    // The bounding set can only shrink while CAP_SETPCAP is still effective,
    // so it goes first.
    if permitted.contains(&Capability::CAP_SETPCAP) {
        for c in caps::all() {
            if !keep.contains(&c) && caps::has_cap(None, CapSet::Bounding, c).unwrap_or(false) {
                caps::drop(None, CapSet::Bounding, c)?;
            }
        }
    }
    caps::clear(None, CapSet::Ambient)?;
    caps::clear(None, CapSet::Inheritable)?;
    caps::set(None, CapSet::Effective, &keep)?;
    caps::set(None, CapSet::Permitted, &keep)?;
    nix::sys::prctl::set_no_new_privs()?;
    let mut names: Vec<String> = keep.iter().map(|c| c.to_string()).collect();
    names.sort();
    Ok(names)
}

/// Empties every capability set of the calling thread (capabilities are
/// per thread) and sets `no_new_privs`, for helper threads that need none.
pub fn drop_all_in_this_thread() -> Result<()> {
    if caps::has_cap(None, CapSet::Effective, Capability::CAP_SETPCAP).unwrap_or(false) {
        for c in caps::all() {
            if caps::has_cap(None, CapSet::Bounding, c).unwrap_or(false) {
                caps::drop(None, CapSet::Bounding, c)?;
            }
        }
    }
    caps::clear(None, CapSet::Ambient)?;
    caps::clear(None, CapSet::Inheritable)?;
    caps::clear(None, CapSet::Effective)?;
    caps::clear(None, CapSet::Permitted)?;
    nix::sys::prctl::set_no_new_privs()?;
    Ok(())
}

/// Keeps only `keep` (those the thread has) in the calling thread's
/// effective and permitted sets, clears the others and sets
/// `no_new_privs`: for a helper thread that needs less than the loop.
pub fn keep_only_in_this_thread(keep: &[Capability]) -> Result<()> {
    let permitted = caps::read(None, CapSet::Permitted)?;
    let keep: CapsHashSet = keep
        .iter()
        .copied()
        .filter(|c| permitted.contains(c))
        .collect();
    caps::clear(None, CapSet::Ambient)?;
    caps::clear(None, CapSet::Inheritable)?;
    caps::set(None, CapSet::Effective, &keep)?;
    caps::set(None, CapSet::Permitted, &keep)?;
    nix::sys::prctl::set_no_new_privs()?;
    Ok(())
}

/// Rules and configuration decide what the sensor reports: refuse a file or
/// directory that anyone but root could have written.
pub fn check_owned_by_root(paths: &[PathBuf]) -> Result<()> {
    for p in paths {
        check_one(p)?;
        if p.is_dir() {
            for entry in std::fs::read_dir(p)? {
                let path = entry?.path();
                if path.extension().is_some_and(|e| e == "toml") {
                    check_one(&path)?;
                }
            }
        }
    }
    Ok(())
}

fn check_one(p: &Path) -> Result<()> {
    let md = std::fs::metadata(p)?;
    // Only enforce when running as root: a developer's own checkout is
    // owned by the developer.
    if !nix::unistd::geteuid().is_root() {
        return Ok(());
    }
    if md.uid() != 0 {
        bail!(
            "{}: refusing to load: owned by uid {}, not root",
            p.display(),
            md.uid()
        );
    }
    if md.mode() & 0o022 != 0 {
        bail!(
            "{}: refusing to load: writable by group or others (mode {:o})",
            p.display(),
            md.mode() & 0o7777
        );
    }
    Ok(())
}
