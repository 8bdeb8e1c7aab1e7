//! Whether reading another task's memory could wait on a file server.
//!
//! `process_vm_readv` faults in the pages it reads. The argv an exec'ing
//! task passes lives in *its* memory, which it chose: pages mapped from a
//! FUSE file it never touched are read, on that fault, by a request from
//! *our* thread to the FUSE server, which can hold it forever (and keeps
//! the page locked, so the exec then hangs too). Before a read, the pages
//! are looked up in `/proc/<pid>/pagemap`, which walks page tables and
//! faults nothing: a present or swapped page costs no request. Only for a
//! page that is neither is `/proc/<pid>/maps` read to find its mapping: an
//! anonymous one (zero-filled) or a file on a filesystem our mount tables
//! call local is read as always; anything else is not read at all.
//!
//! PURE: [`faults_on_read`], [`page_runs`], [`vma_at`]; [`PageGuard`] does
//! the reads.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;

const PAGE: u64 = 4096;
/// Pages checked at most per read; a read spanning more is refused (argv
/// is bounded by `max_args_bytes`, far below).
const MAX_PAGES: u64 = 1 << 16;
/// Pages to be faulted in looked up in `maps` at most; more is refused.
const MAX_FAULTING: usize = 64;

/// A pagemap entry whose page is neither present nor in swap: reading it
/// faults it in, from its file if it has one. PURE.
pub fn faults_on_read(entry: u64) -> bool {
    const PRESENT: u64 = 1 << 63;
    const SWAPPED: u64 = 1 << 62;
    entry & (PRESENT | SWAPPED) == 0
}

/// The pages `ranges` cover, as runs `(first page, count)` of consecutive
/// page numbers, sorted; `None` past [`MAX_PAGES`]. PURE.
pub fn page_runs(ranges: &[(u64, usize)]) -> Option<Vec<(u64, u64)>> {
    let mut pages: Vec<(u64, u64)> = ranges
        .iter()
        .filter(|r| r.1 > 0)
        .map(|&(addr, len)| {
            let end = addr.saturating_add(len as u64 - 1);
            (addr / PAGE, end / PAGE)
        })
        .collect();
    pages.sort_unstable();
    let mut runs: Vec<(u64, u64)> = Vec::new();
    let mut total = 0u64;
    for (first, last) in pages {
        match runs.last_mut() {
            Some((s, n)) if first <= *s + *n => {
                let end = (*s + *n).max(last + 1);
                total += end - (*s + *n);
                *n = end - *s;
            }
            _ => {
                runs.push((first, last - first + 1));
                total += last - first + 1;
            }
        }
        if total > MAX_PAGES {
            return None;
        }
    }
    Some(runs)
}

/// The mapping of `/proc/<pid>/maps` that holds `addr`: `(major, minor,
/// inode)` (inode 0: anonymous). PURE.
pub fn vma_at(maps: &[u8], addr: u64) -> Option<(u32, u32, u64)> {
    for line in maps.split(|&c| c == b'\n') {
        let mut f = line.split(|&c| c == b' ').filter(|x| !x.is_empty());
        let range = std::str::from_utf8(f.next()?).ok()?;
        let (a, b) = range.split_once('-')?;
        let (start, end) = (
            u64::from_str_radix(a, 16).ok()?,
            u64::from_str_radix(b, 16).ok()?,
        );
        if addr < start || addr >= end {
            continue;
        }
        let _perms = f.next()?;
        let _offset = f.next()?;
        let dev = std::str::from_utf8(f.next()?).ok()?;
        let (ma, mi) = dev.split_once(':')?;
        let inode = std::str::from_utf8(f.next()?).ok()?.parse().ok()?;
        return Some((
            u32::from_str_radix(ma, 16).ok()?,
            u32::from_str_radix(mi, 16).ok()?,
            inode,
        ));
    }
    None
}

/// The check before each remote read of one task.
pub struct PageGuard<'a> {
    pid: u32,
    /// Superblocks our mount tables call local (any of the sets).
    local: &'a [BTreeSet<(u32, u32)>],
    pagemap: Option<File>,
    maps: Option<Vec<u8>>,
    /// Reads refused so far.
    pub refused: u64,
}

impl<'a> PageGuard<'a> {
    pub fn new(pid: u32, local: &'a [BTreeSet<(u32, u32)>]) -> Self {
        PageGuard {
            pid,
            local,
            pagemap: None,
            maps: None,
            refused: 0,
        }
    }

    /// Whether reading `ranges` faults in nothing but anonymous pages and
    /// pages of local files. `false` also when a table cannot be read, but
    /// `true` where the kernel offers no pagemap to check.
    pub fn safe(&mut self, ranges: &[(u64, usize)]) -> bool {
        let ok = self.check(ranges).unwrap_or(false);
        self.refused += u64::from(!ok);
        ok
    }

    fn check(&mut self, ranges: &[(u64, usize)]) -> Option<bool> {
        let runs = page_runs(ranges)?;
        if self.pagemap.is_none() {
            match File::open(format!("/proc/{}/pagemap", self.pid)) {
                Ok(f) => self.pagemap = Some(f),
                // No pagemap (CONFIG_PROC_PAGE_MONITOR off) or refused where
                // the read itself may still be allowed (`/proc/<pid>/mem`
                // under an LSM): read unchecked, as before this guard.
                Err(_) => return Some(true),
            }
        }
        let pm = self.pagemap.as_ref()?;
        let mut entries = [0u64; 64];
        // Pages that a read would fault in: rare (argv was just written).
        let mut faulting = Vec::new();
        for (first, count) in runs {
            let mut page = first;
            while page < first + count {
                let n = (first + count - page).min(entries.len() as u64) as usize;
                // SAFETY: u64 has no padding; any byte pattern is valid.
                let bytes = unsafe {
                    std::slice::from_raw_parts_mut(entries.as_mut_ptr().cast::<u8>(), n * 8)
                };
                let got = pm.read_at(bytes, page.checked_mul(8)?).ok()?;
                // A short read: past the address space's end, nothing to fault.
                for (i, e) in entries[..got / 8].iter().enumerate() {
                    if faults_on_read(*e) {
                        if faulting.len() >= MAX_FAULTING {
                            return Some(false);
                        }
                        faulting.push((page + i as u64) * PAGE);
                    }
                }
                page += n as u64;
            }
        }
        for addr in faulting {
            if !self.mapping_is_safe(addr)? {
                return Some(false);
            }
        }
        Some(true)
    }

    /// A page that would be faulted in: safe if anonymous or of a file on
    /// a local filesystem; unmapped is safe too (the read just stops).
    fn mapping_is_safe(&mut self, addr: u64) -> Option<bool> {
        if self.maps.is_none() {
            let mut text = Vec::with_capacity(16 * 1024);
            File::open(format!("/proc/{}/maps", self.pid))
                .ok()?
                .take(64 << 20)
                .read_to_end(&mut text)
                .ok()?;
            self.maps = Some(text);
        }
        Some(match vma_at(self.maps.as_ref()?, addr) {
            None => true,
            Some((_, _, 0)) => true,
            Some((ma, mi, _)) => self.local.iter().any(|l| l.contains(&(ma, mi))),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pagemap_entries() {
        assert!(!faults_on_read(1 << 63 | 0x1234), "present");
        assert!(!faults_on_read(1 << 62), "swapped");
        assert!(faults_on_read(0), "never touched");
        assert!(faults_on_read(1 << 61), "file page, not mapped");
    }

    #[test]
    fn runs_of_pages() {
        assert_eq!(page_runs(&[]), Some(vec![]));
        assert_eq!(page_runs(&[(4095, 2)]), Some(vec![(0, 2)]));
        assert_eq!(
            page_runs(&[
                (0x3000, 10),
                (0x1000, 4096),
                (0x2010, 5),
                (0x9000, 1),
                (0, 0)
            ]),
            Some(vec![(1, 3), (9, 1)])
        );
        assert_eq!(page_runs(&[(0, usize::MAX)]), None);
    }

    const MAPS: &[u8] = b"\
55d4a0a00000-55d4a0a28000 r--p 00000000 fd:01 1835048                    /usr/bin/bash
7f0000000000-7f0000001000 r--p 00000000 00:2c 2                          /tmp/x/mnt/argv.bin
7ffd7c3e0000-7ffd7c401000 rw-p 00000000 00:00 0                          [stack]
";

    #[test]
    fn mappings_by_address() {
        assert_eq!(vma_at(MAPS, 0x55d4a0a00000), Some((0xfd, 1, 1835048)));
        assert_eq!(vma_at(MAPS, 0x7f0000000fff), Some((0, 0x2c, 2)));
        assert_eq!(vma_at(MAPS, 0x7f0000001000), None);
        assert_eq!(vma_at(MAPS, 0x7ffd7c3e0010), Some((0, 0, 0)));
        assert_eq!(vma_at(b"garbage\n", 5), None);
    }

    #[test]
    fn our_own_stack_is_safe_to_read() {
        let local = [BTreeSet::new()];
        let v = [7u8; 100];
        let mut g = PageGuard::new(std::process::id(), &local);
        assert!(g.safe(&[(v.as_ptr() as u64, v.len())]));
        assert_eq!(g.refused, 0);
    }
}
