//! Which filesystems to mark for exec-permission events. PURE: parses
//! `/proc/<pid>/mountinfo` text and chooses, per superblock, the mount
//! points through which it can be marked; the I/O lives in `mod.rs`.
//!
//! A `FAN_MARK_FILESYSTEM` mark covers a whole superblock, whichever mount
//! (bind mounts included) it is reached through, so the unit of choice is the
//! device number (`major:minor`, field 3), not the mount.

use std::collections::{BTreeMap, BTreeSet};

/// One line of mountinfo, the fields this module needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// Field 1: the mount id (unique among current mounts).
    pub mount_id: u64,
    /// Field 3: the superblock's device number, as `stat` reports it.
    pub dev: (u32, u32),
    /// Field 5: the mount point, unescaped (`\040` → space), raw bytes.
    pub mount_point: Vec<u8>,
    /// Field 6: per-mount options (`rw,nosuid,noexec,...`).
    pub noexec: bool,
    /// The filesystem type after the ` - ` separator (`tmpfs`, `ext4`, ...).
    pub fstype: Vec<u8>,
}

/// Filesystems that cannot hold an executable anyone could run, or whose
/// files are synthesized by the kernel: marking them only costs a mark.
const NEVER_EXEC: &[&[u8]] = &[
    b"proc",
    b"sysfs",
    b"devpts",
    b"mqueue",
    b"bpf",
    b"tracefs",
    b"debugfs",
    b"securityfs",
    b"pstore",
    b"configfs",
    b"fusectl",
    b"hugetlbfs",
    b"binfmt_misc",
    b"autofs",
    b"efivarfs",
    b"nsfs",
    b"rpc_pipefs",
    b"selinuxfs",
    b"nfsd",
];

/// Filesystems whose reads and even `stat` are answered by a process (FUSE:
/// any user can mount one) or a server over the network: the sensor must
/// never wait on them from its loop. Told from the mountinfo type alone,
/// which costs them no request. `fuse.<subtype>` (sshfs, rclone, s3fs,
/// gocryptfs, fuse-overlayfs) is matched by prefix.
const SLOW: &[&[u8]] = &[
    b"fuse",
    b"fuseblk",
    b"virtiofs",
    b"nfs",
    b"nfs4",
    b"cifs",
    b"smb3",
    b"smbfs",
    b"9p",
    b"ceph",
    b"glusterfs",
    b"afs",
    b"coda",
    b"ncpfs",
    b"lustre",
    b"orangefs",
    b"pvfs2",
    b"gpfs",
    b"beegfs",
    b"davfs",
];

/// Whether files of this filesystem type may be slow or never answer
/// (FUSE, network filesystems). PURE.
pub fn slow_type(fstype: &[u8]) -> bool {
    SLOW.contains(&fstype) || fstype.starts_with(b"fuse.") || fstype.starts_with(b"fuseblk.")
}

/// Whether `path` lies strictly below one of `slow_points`: reaching it
/// walks through that filesystem's directories (each a possible request).
/// PURE.
pub fn behind_slow(path: &[u8], slow_points: &[&[u8]]) -> bool {
    slow_points.iter().any(|s| {
        *s != path && (*s == b"/" || (path.starts_with(s) && path.get(s.len()) == Some(&b'/')))
    })
}

/// Parses one mountinfo line; `None` for a malformed line (skipped, never
/// trusted half-way).
///
/// Format (proc(5)): `id parent major:minor root mount_point options
/// [optional fields...] - fstype source super_options`. The optional fields
/// are zero or more `tag[:value]` items ended by a lone `-`.
pub fn parse_line(line: &[u8]) -> Option<Mount> {
    let mut it = line
        .split(|&c| c == b' ')
        .filter(|f| !f.is_empty())
        .peekable();
    let mount_id = parse_u64(it.next()?)?;
    let _parent = it.next()?;
    let dev = it.next()?;
    let colon = dev.iter().position(|&c| c == b':')?;
    let major = u32::try_from(parse_u64(&dev[..colon])?).ok()?;
    let minor = u32::try_from(parse_u64(&dev[colon + 1..])?).ok()?;
    let _root = it.next()?;
    let mount_point = unescape(it.next()?);
    let options = it.next()?;
    let noexec = options.split(|&c| c == b',').any(|o| o == b"noexec");
    // Skip the optional fields up to the separator.
    loop {
        if it.next()? == b"-" {
            break;
        }
    }
    let fstype = it.next()?.to_vec();
    Some(Mount {
        mount_id,
        dev: (major, minor),
        mount_point,
        noexec,
        fstype,
    })
}

/// Parses a whole mountinfo text, skipping malformed lines.
pub fn parse(text: &[u8]) -> Vec<Mount> {
    text.split(|&c| c == b'\n')
        .filter(|l| !l.is_empty())
        .filter_map(parse_line)
        .collect()
}

/// Whether files on a filesystem of this type can be exec'd at all.
pub fn exec_capable_type(fstype: &[u8]) -> bool {
    !(NEVER_EXEC.contains(&fstype) || fstype.starts_with(b"cgroup"))
}

/// A superblock to mark, with the mount points (in mountinfo order, exec-
/// allowing first) through which the caller may try to reach it: the first
/// may be over-mounted, so the caller checks `stat().st_dev` and moves on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub dev: (u32, u32),
    pub fstype: Vec<u8>,
    /// `(mount_id, mount_point)` candidates.
    pub mounts: Vec<(u64, Vec<u8>)>,
}

/// The superblocks worth marking: an exec-capable type mounted at least once
/// without `noexec` (an exec through that mount is possible, and the mark
/// covers the superblock anyway).
///
/// Never a [`slow_type`]: reading an event makes the kernel open its file
/// in the reader (the loop), and opening a FUSE or network file is a
/// request to its server, which can hold the loop — and the exec, whose
/// event is then neither queued for the watchdog nor answered — forever.
/// Their execs are seen by the proc connector alone. Mount points below a
/// slow mount are left out too: the path walk to them would ask it.
pub fn targets(mounts: &[Mount]) -> Vec<Target> {
    let mut by_dev: BTreeMap<(u32, u32), Target> = BTreeMap::new();
    let mut order = Vec::new();
    let slow_points: Vec<&[u8]> = mounts
        .iter()
        .filter(|m| slow_type(&m.fstype))
        .map(|m| m.mount_point.as_slice())
        .collect();
    for m in mounts {
        if !exec_capable_type(&m.fstype) || slow_type(&m.fstype) {
            continue;
        }
        let t = by_dev.entry(m.dev).or_insert_with(|| {
            order.push(m.dev);
            Target {
                dev: m.dev,
                fstype: m.fstype.clone(),
                mounts: Vec::new(),
            }
        });
        if !m.noexec && !behind_slow(&m.mount_point, &slow_points) {
            t.mounts.push((m.mount_id, m.mount_point.clone()));
        }
    }
    order
        .into_iter()
        .filter_map(|d| by_dev.remove(&d))
        .filter(|t| !t.mounts.is_empty())
        .collect()
}

/// The slow superblocks of a mount table (left unmarked by [`targets`]).
pub fn slow_devs(mounts: &[Mount]) -> BTreeSet<(u32, u32)> {
    mounts
        .iter()
        .filter(|m| slow_type(&m.fstype))
        .map(|m| m.dev)
        .collect()
}

/// The superblocks of a mount table that are not [`slow_type`]. Kept
/// apart from [`slow_devs`]: a device no table names is neither.
pub fn local_devs(mounts: &[Mount]) -> BTreeSet<(u32, u32)> {
    mounts
        .iter()
        .filter(|m| !slow_type(&m.fstype))
        .map(|m| m.dev)
        .collect()
}

/// Undoes the kernel's octal escaping of space, tab, newline and backslash
/// (`\040`, `\011`, `\012`, `\134`) in mountinfo paths.
pub fn unescape(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        if field[i] == b'\\' && i + 3 < field.len() {
            let oct = &field[i + 1..i + 4];
            if oct.iter().all(|c| (b'0'..=b'7').contains(c)) {
                let v = oct
                    .iter()
                    .fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0'));
                if let Ok(b) = u8::try_from(v) {
                    out.push(b);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(field[i]);
        i += 1;
    }
    out
}

fn parse_u64(b: &[u8]) -> Option<u64> {
    if b.is_empty() || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(b).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &[u8] = b"\
22 1 259:1 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p1 rw
23 22 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw
24 22 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:2 - sysfs sysfs rw
25 24 0:23 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw
26 22 0:5 / /dev rw,nosuid,relatime shared:8 - devtmpfs udev rw,size=4g
27 26 0:24 / /dev/shm rw,nosuid,nodev shared:9 - tmpfs tmpfs rw
28 22 0:25 / /run rw,nosuid,nodev,noexec,relatime shared:10 - tmpfs tmpfs rw
29 22 0:26 / /mnt/my\\040disk rw,relatime - vfat /dev/sdb1 rw
30 22 259:1 /var/lib /srv/bind rw,noexec,relatime shared:1 master:3 propagate_from:2 unbindable - ext4 /dev/nvme0n1p1 rw
31 22 0:27 / /tmp rw,noexec - tmpfs tmpfs rw
32 22 0:27 / /tmp2 rw - tmpfs tmpfs rw
";

    #[test]
    fn parses_fields_optional_fields_and_escapes() {
        let m = parse(SAMPLE);
        assert_eq!(m.len(), 11);
        assert_eq!(m[0].mount_id, 22);
        assert_eq!(m[0].dev, (259, 1));
        assert_eq!(m[0].mount_point, b"/");
        assert_eq!(m[0].fstype, b"ext4");
        assert!(!m[0].noexec);
        assert!(m[1].noexec);
        assert_eq!(m[7].mount_point, b"/mnt/my disk");
        assert_eq!(m[7].fstype, b"vfat");
        // Several optional fields before the separator.
        assert_eq!(m[8].fstype, b"ext4");
        assert!(m[8].noexec);
    }

    #[test]
    fn malformed_lines_are_skipped() {
        assert!(parse_line(b"").is_none());
        assert!(parse_line(b"22 1 259:1 / / rw,relatime shared:1").is_none());
        assert!(parse_line(b"x 1 259:1 / / rw - ext4 a rw").is_none());
        assert!(parse_line(b"1 1 2591 / / rw - ext4 a rw").is_none());
        assert_eq!(parse(b"garbage\n\n").len(), 0);
    }

    #[test]
    fn chooses_exec_capable_superblocks() {
        let t = targets(&parse(SAMPLE));
        let devs: Vec<_> = t.iter().map(|t| t.dev).collect();
        // ext4 root (its noexec bind mount does not count), devtmpfs,
        // /dev/shm, the vfat disk, and the tmpfs mounted noexec at /tmp but
        // exec-capable at /tmp2. Not proc/sysfs/cgroup2 nor noexec /run.
        assert_eq!(devs, [(259, 1), (0, 5), (0, 24), (0, 26), (0, 27)]);
        assert_eq!(t[0].mounts, [(22, b"/".to_vec())]);
        assert_eq!(t[4].mounts, [(32, b"/tmp2".to_vec())]);
    }

    #[test]
    fn slow_filesystems_are_told_by_type() {
        for t in [
            &b"fuse"[..],
            b"fuseblk",
            b"fuse.sshfs",
            b"fuse.fuse-overlayfs",
            b"nfs",
            b"nfs4",
            b"cifs",
            b"smb3",
            b"9p",
            b"ceph",
            b"glusterfs",
            b"virtiofs",
        ] {
            assert!(slow_type(t), "{}", String::from_utf8_lossy(t));
        }
        for t in [
            &b"ext4"[..],
            b"tmpfs",
            b"overlay",
            b"xfs",
            b"fusectl",
            b"fuse2x",
        ] {
            assert!(!slow_type(t), "{}", String::from_utf8_lossy(t));
        }
    }

    #[test]
    fn mount_points_behind_a_slow_mount_are_not_walked() {
        let text = b"\
22 1 259:1 / / rw - ext4 /dev/sda1 rw
40 22 0:50 / /mnt/sshfs rw,nosuid - fuse.sshfs u@h:/ rw,user_id=0
41 40 0:51 / /mnt/sshfs/tmp rw - tmpfs tmpfs rw
42 22 0:51 / /srv/tmp rw - tmpfs tmpfs rw
43 22 0:52 / /mnt/sshfs2 rw - tmpfs tmpfs rw
44 40 0:53 / /mnt/sshfs/only rw - tmpfs tmpfs rw
";
        let t = targets(&parse(text));
        let by_dev = |d| t.iter().find(|t| t.dev == d);
        // The slow filesystem itself is never marked, but counted.
        assert!(by_dev((0, 50)).is_none());
        assert_eq!(
            slow_devs(&parse(text)).into_iter().collect::<Vec<_>>(),
            [(0, 50)]
        );
        // Reachable elsewhere: only that mount point is kept.
        assert_eq!(
            by_dev((0, 51)).unwrap().mounts,
            [(42, b"/srv/tmp".to_vec())]
        );
        // A sibling whose name merely starts the same is not behind it.
        assert_eq!(by_dev((0, 52)).unwrap().mounts.len(), 1);
        // Reachable only through the slow mount: not marked at all.
        assert!(by_dev((0, 53)).is_none());
        assert!(behind_slow(b"/a/b", &[b"/"]));
        assert!(!behind_slow(b"/", &[b"/"]));
    }

    #[test]
    fn unescapes_octal() {
        assert_eq!(unescape(br"a\040b\011c\134d"), b"a b\tc\\d");
        assert_eq!(unescape(br"trail\04"), br"trail\04");
        assert_eq!(unescape(br"bad\089"), br"bad\089");
        assert_eq!(unescape(br"\\"), br"\\");
    }

    #[test]
    fn type_filter() {
        for t in [&b"proc"[..], b"cgroup", b"cgroup2", b"tracefs", b"devpts"] {
            assert!(!exec_capable_type(t), "{t:?}");
        }
        for t in [&b"ext4"[..], b"tmpfs", b"overlay", b"xfs", b"btrfs"] {
            assert!(exec_capable_type(t), "{t:?}");
        }
    }
}
