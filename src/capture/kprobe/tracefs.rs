//! tracefs: finding (or mounting) it, writing `kprobe_events`, reading an
//! event's `format`, and saying clearly why kprobes cannot be used here.
//! Every path is under a root (`/` on a host, a fake tree in tests).

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::probes::SYMBOL;

/// The two places tracefs lives: its own mount (4.1) and under debugfs.
const MOUNTS: [&str; 2] = ["sys/kernel/tracing", "sys/kernel/debug/tracing"];

#[derive(Debug)]
pub struct Tracefs {
    pub dir: PathBuf,
    /// `kprobe_events`, opened for appending at the first write and kept:
    /// removing our probes at exit then needs neither the capabilities
    /// dropped after set-up nor a path that could be remounted read-only or
    /// unmounted meanwhile. Never opened with O_TRUNC (that removes every
    /// kprobe on the host).
    events: std::cell::OnceCell<fs::File>,
}

/// Finds tracefs under `root`; on the real root, mounts it when absent.
pub fn find(root: &Path) -> Result<Tracefs, String> {
    if let Some(t) = existing(root) {
        return Ok(t);
    }
    if root == Path::new("/") {
        mount_tracefs();
        if let Some(t) = existing(root) {
            return Ok(t);
        }
    }
    if tracefs_known(root) {
        Err("tracefs is not mounted at /sys/kernel/tracing or /sys/kernel/debug/tracing and could not be mounted".into())
    } else {
        Err("the kernel has no tracefs (CONFIG_FTRACE off?)".into())
    }
}

fn existing(root: &Path) -> Option<Tracefs> {
    MOUNTS
        .iter()
        .map(|m| root.join(m))
        .find(|d| {
            d.join("events").is_dir()
                || d.join("kprobe_events").exists()
                || d.join("trace").exists()
        })
        .map(|dir| Tracefs {
            dir,
            events: std::cell::OnceCell::new(),
        })
}

fn tracefs_known(root: &Path) -> bool {
    fs::read_to_string(root.join("proc/filesystems"))
        .map(|s| {
            s.lines()
                .any(|l| l.ends_with("\ttracefs") || l.ends_with("\tdebugfs"))
        })
        .unwrap_or(false)
}

fn mount_tracefs() {
    use nix::mount::{MsFlags, mount};
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    if mount(
        Some("tracefs"),
        "/sys/kernel/tracing",
        Some("tracefs"),
        flags,
        None::<&str>,
    )
    .is_ok()
    {
        return;
    }
    let _ = mount(
        Some("debugfs"),
        "/sys/kernel/debug",
        Some("debugfs"),
        flags,
        None::<&str>,
    );
}

/// Why kprobe events cannot be defined, when something already says so
/// before trying: no `kprobe_events`, lockdown, the symbol missing.
pub fn precheck(root: &Path, t: &Tracefs) -> Result<(), String> {
    if !t.dir.join("kprobe_events").exists() {
        return Err(format!(
            "{} has no kprobe_events: the kernel is built without CONFIG_KPROBE_EVENTS",
            t.dir.display()
        ));
    }
    if lockdown(root).as_deref() == Some("confidentiality") {
        return Err("kernel lockdown (confidentiality) forbids kprobes".into());
    }
    // An unreadable or empty kallsyms: the definition itself will tell.
    if let Ok(syms) = fs::read_to_string(root.join("proc/kallsyms"))
        && !syms.is_empty()
        && !syms
            .lines()
            .any(|l| l.split_whitespace().nth(2) == Some(SYMBOL))
    {
        return Err(format!("the kernel has no symbol {SYMBOL} to probe"));
    }
    Ok(())
}

/// The active lockdown mode (`[integrity]` in the file), if any.
pub fn lockdown(root: &Path) -> Option<String> {
    let s = fs::read_to_string(root.join("sys/kernel/security/lockdown")).ok()?;
    let start = s.find('[')?;
    let end = s[start..].find(']')?;
    let mode = &s[start + 1..start + end];
    (mode != "none").then(|| mode.to_string())
}

impl Tracefs {
    /// Appends one line to `kprobe_events` (one write, as the kernel
    /// parses it).
    pub fn write_event(&self, line: &str) -> io::Result<()> {
        let mut f = match self.events.get() {
            Some(f) => f,
            None => {
                let f = OpenOptions::new()
                    .append(true)
                    .open(self.dir.join("kprobe_events"))?;
                self.events.get_or_init(|| f)
            }
        };
        f.write_all(format!("{line}\n").as_bytes())
    }

    pub fn kprobe_events(&self) -> io::Result<String> {
        fs::read_to_string(self.dir.join("kprobe_events"))
    }

    pub fn format(&self, group: &str, event: &str) -> io::Result<String> {
        fs::read_to_string(
            self.dir
                .join("events")
                .join(group)
                .join(event)
                .join("format"),
        )
    }

    /// The kernel's own explanation of the last refused definition (5.4).
    pub fn error_log(&self) -> Option<String> {
        let s = fs::read_to_string(self.dir.join("error_log")).ok()?;
        let line = s.lines().find(|l| l.contains("error:"))?;
        Some(line.split("error:").nth(1)?.trim().to_string())
    }
}

/// A refused write of a definition, in words.
pub fn refusal(e: &io::Error, t: &Tracefs, root: &Path) -> String {
    match e.raw_os_error() {
        Some(libc::EPERM) | Some(libc::EACCES) => match lockdown(root) {
            Some(mode) => format!("kernel lockdown ({mode}) refuses kprobes"),
            None => format!("writing kprobe_events refused: {e}"),
        },
        Some(libc::ENOENT) => format!("the kernel cannot probe {SYMBOL}: {e}"),
        _ => match t.error_log() {
            Some(why) => format!("the kernel refused the probe: {why}"),
            None => format!("the kernel refused the probe: {e}"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake(files: &[(&str, &str)]) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        for (p, text) in files {
            let p = d.path().join(p);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, text).unwrap();
        }
        d
    }

    #[test]
    fn no_tracefs_at_all() {
        let d = fake(&[("proc/filesystems", "nodev\tproc\n")]);
        assert!(find(d.path()).unwrap_err().contains("no tracefs"));
        let d = fake(&[("proc/filesystems", "nodev\ttracefs\n")]);
        assert!(find(d.path()).unwrap_err().contains("not mounted"));
    }

    #[test]
    fn tracefs_without_kprobes() {
        let d = fake(&[("sys/kernel/debug/tracing/trace", "")]);
        let t = find(d.path()).unwrap();
        assert!(t.dir.ends_with("sys/kernel/debug/tracing"));
        assert!(
            precheck(d.path(), &t)
                .unwrap_err()
                .contains("CONFIG_KPROBE_EVENTS")
        );
    }

    #[test]
    fn lockdown_and_missing_symbol() {
        let d = fake(&[
            ("sys/kernel/tracing/kprobe_events", ""),
            (
                "sys/kernel/security/lockdown",
                "none integrity [confidentiality]\n",
            ),
            ("proc/kallsyms", "ffffffff81000000 T start_thread\n"),
        ]);
        let t = find(d.path()).unwrap();
        assert!(
            precheck(d.path(), &t)
                .unwrap_err()
                .contains("lockdown (confidentiality)")
        );
        fs::write(
            d.path().join("sys/kernel/security/lockdown"),
            "[none] integrity confidentiality\n",
        )
        .unwrap();
        assert_eq!(lockdown(d.path()), None);
        assert_eq!(precheck(d.path(), &t), Ok(()));
        fs::write(
            d.path().join("proc/kallsyms"),
            "ffffffff81000000 T start_thread_x\n",
        )
        .unwrap();
        assert!(
            precheck(d.path(), &t)
                .unwrap_err()
                .contains("no symbol start_thread")
        );
        let eperm = io::Error::from_raw_os_error(libc::EPERM);
        fs::write(
            d.path().join("sys/kernel/security/lockdown"),
            "none [integrity] confidentiality\n",
        )
        .unwrap();
        assert_eq!(
            refusal(&eperm, &t, d.path()),
            "kernel lockdown (integrity) refuses kprobes"
        );
    }

    #[test]
    fn writes_and_reads_definitions() {
        let d = fake(&[
            ("sys/kernel/tracing/kprobe_events", ""),
            (
                "sys/kernel/tracing/error_log",
                "[ 5.3] trace_kprobe: error: Invalid fetch argument\n  Command: p:x\n",
            ),
        ]);
        let t = find(d.path()).unwrap();
        t.write_event("p:g/e start_thread").unwrap();
        t.write_event("p:g/f start_thread").unwrap();
        assert_eq!(
            t.kprobe_events().unwrap(),
            "p:g/e start_thread\np:g/f start_thread\n"
        );
        let einval = io::Error::from_raw_os_error(libc::EINVAL);
        assert_eq!(
            refusal(&einval, &t, d.path()),
            "the kernel refused the probe: Invalid fetch argument"
        );
    }

    #[test]
    fn removal_at_exit_writes_through_the_fd_kept_from_set_up() {
        let d = fake(&[("sys/kernel/tracing/kprobe_events", "")]);
        let t = find(d.path()).unwrap();
        t.write_event("p:g/e start_thread").unwrap();
        // The path is gone (or would now be refused); the kept fd is not.
        let moved = d.path().join("moved");
        fs::rename(d.path().join("sys"), &moved).unwrap();
        t.write_event("-:g/e").unwrap();
        assert_eq!(
            fs::read_to_string(moved.join("kernel/tracing/kprobe_events")).unwrap(),
            "p:g/e start_thread\n-:g/e\n"
        );
    }
}
