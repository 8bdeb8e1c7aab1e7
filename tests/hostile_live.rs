//! Hostile process names and arguments through the running daemon (issue
//! 10), against the real kernel. Needs root.
//!
//! A process chooses its own argv and, through the file it execs, its name
//! and executable path. Here they carry newlines, ESC sequences, bidi
//! controls, invalid UTF-8, `"`, `]`, `|`, `=`, JSON-looking text, a 128 KiB
//! argument and about 2 MiB of argv. The JSON the daemon prints must give
//! the bytes back exactly (README: `execsentry.args_escaped` +
//! `execsentry::bytes::unescape`), and the alert it raises, rendered by
//! every syslog formatter, must stay one line whose SD and CEF fields are
//! exactly the formatter's own: the same checks the `syslog_format` fuzz
//! target applies (`fuzz/harness.rs`).

// This binary uses only part of the shared helpers' re-exports.
mod common;

#[path = "../fuzz/harness.rs"]
mod harness;

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::events::{arg_bytes, args_of, has_arg_of_kind};
use common::{Sensor, json_path, json_str, output_of_fresh, unique_name};
use execsentry::config::{Format, Payload};
use execsentry::event::Event;
use execsentry::sink::format::Formatter;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(20);

/// The kernel's per-argument limit (MAX_ARG_STRLEN, NUL included).
const ARG_MAX_STRLEN: usize = 128 * 1024;

/// As root: a temporary directory for the test's files and the sensor,
/// whose config lives there. `None` (the test is skipped) otherwise.
fn sensor_in_tempdir() -> Option<(tempfile::TempDir, Sensor)> {
    if !common::require_root() {
        return None;
    }
    let tmp = tempfile::Builder::new()
        .prefix("execsentry-hostile.")
        .tempdir()
        .unwrap();
    let s = sensor(tmp.path());
    Some((tmp, s))
}

/// The sensor in fanotify mode (exact argv, even of a process that exits at
/// once), with an argv cap above this test's 2 MiB so nothing is cut.
fn sensor(dir: &Path) -> Sensor {
    let cfg = dir.join("execsentry.toml");
    std::fs::write(&cfg, "[sensor]\nmax_args_bytes = 4194304\n").unwrap();
    let mut s = Sensor::spawn(&[
        "run",
        "--config",
        cfg.to_str().unwrap(),
        "--output",
        "stdout",
        "--events",
        "--capture",
        "fanotify",
        "--rules",
        common::rules_dir().to_str().unwrap(),
    ]);
    s.wait_ready(Duration::from_secs(10));
    s
}

/// Every hostile argument shape the issue names, plus a kubelet URL so the
/// shipped kubelet rule fires and an alert is built from this very exec.
fn hostile_args(marker: &str) -> Vec<Vec<u8>> {
    let mut args: Vec<Vec<u8>> = vec![
        marker.as_bytes().to_vec(),
        b"https://10.0.0.1:10250/run/kube-system/pod/c".to_vec(),
        b"line1\nline2\r\n<13>1 2026-01-01T00:00:00Z forged - - - - fake".to_vec(),
        b"\x1b[31mred\x1b[0m\x1b]0;title\x07\x1b[2J".to_vec(),
        "bidi \u{202e}txt.exe\u{202c} \u{2066}iso\u{2069} \u{200b}"
            .as_bytes()
            .to_vec(),
        b"bad utf8 \xff\xfe\xc3\x28 \\x41 \\\\".to_vec(),
        b"quote\" bracket] pipe| equals= backslash\\".to_vec(),
        br#"] [execsentry@32473 rule_id="forged"] cs1=forged msg=x|CEF:0|a|b"#.to_vec(),
        br#"{"event":{"kind":"alert"},"process":{"name":"forged"}}"#.to_vec(),
        b"\xc2\x85 NEL \xe2\x80\xa8 LS \x7f DEL \x01\x02".to_vec(),
        Vec::new(),
    ];
    // One argument at the kernel's limit.
    args.push(vec![b'L'; ARG_MAX_STRLEN - 1]);
    args
}

/// About 2 MiB of argv: 128 KiB arguments, each with a multi-byte
/// character across a page boundary (a reader that split argv into pages
/// as text would break it).
fn two_mib_args(marker: &str) -> Vec<Vec<u8>> {
    let mut args = vec![marker.as_bytes().to_vec()];
    let mut total = marker.len() + 1;
    let mut i = 0u8;
    while total < 2 * 1024 * 1024 {
        let mut a = vec![b'a' + i % 26; ARG_MAX_STRLEN - 1];
        a[65534..65537].copy_from_slice("\u{20ac}".as_bytes());
        total += a.len() + 1;
        args.push(a);
        i += 1;
    }
    args
}

/// Copies /bin/true to `dir/<name>`; `name` is raw bytes.
fn hostile_executable(dir: &Path, name: &[u8]) -> std::path::PathBuf {
    let path = dir.join(std::ffi::OsStr::from_bytes(name));
    std::fs::copy("/bin/true", &path).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn run_fresh(cmd: &mut Command) {
    let out = output_of_fresh(cmd);
    assert!(out.status.success(), "run hostile executable: {out:?}");
}

/// The raise of RLIMIT_STACK lets 2 MiB of argv through execve: the kernel
/// allows a quarter of the stack limit for argv and environment together.
fn with_big_stack(cmd: &mut Command) -> &mut Command {
    // SAFETY: setrlimit is async-signal-safe and touches no Rust state.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: 64 << 20,
                rlim_max: libc::RLIM_INFINITY,
            };
            if libc::setrlimit(libc::RLIMIT_STACK, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    }
}

#[test]
fn hostile_argv_name_and_path_stay_exact_in_json_and_inert_in_syslog() {
    let Some((tmp, s)) = sensor_in_tempdir() else {
        return;
    };

    // A directory whose name has a newline, an executable whose name has
    // ESC, a bidi override, `"`, `]`, `|`, `=` and is longer than comm's
    // 15 bytes, so `process.name` must be made whole from the path.
    let dir = tmp.path().join("dir\nwith newline");
    std::fs::create_dir(&dir).unwrap();
    let name = "ku\x1b[1m\u{202e}\"]|=\n{\"x\":1}name";
    let exe = hostile_executable(&dir, name.as_bytes());
    let marker = unique_name("hostile");
    let args = hostile_args(&marker);
    let total: usize = args.iter().map(Vec::len).sum();
    run_fresh(
        with_big_stack(&mut Command::new(&exe))
            .args(args.iter().map(|a| OsString::from_vec(a.clone())))
            .env_clear(),
    );

    let ev = s
        .wait_for(|v| has_arg_of_kind(v, "event", &marker), WAIT)
        .unwrap_or_else(|| panic!("no exec event with {marker}; stderr:\n{}", s.stderr()));
    assert!(
        s.non_json_lines().is_empty(),
        "stdout lines that are not JSON (a line was broken): {:?}",
        s.non_json_lines()
    );
    let got = args_of(&ev);
    assert_eq!(
        got.len(),
        args.len() + 1,
        "argv0 plus every argument; execsentry: {}, lengths {:?}",
        json_path(&ev, "execsentry").unwrap_or(&Value::Null),
        got.iter().map(String::len).collect::<Vec<_>>()
    );
    assert_eq!(arg_bytes(&ev, 0), exe.as_os_str().as_bytes(), "argv[0]");
    for (i, want) in args.iter().enumerate() {
        assert!(&arg_bytes(&ev, i + 1) == want, "argument {} differs", i + 1);
    }
    assert_eq!(
        json_path(&ev, "execsentry.args_complete"),
        Some(&Value::Bool(true))
    );
    assert_eq!(json_path(&ev, "execsentry.args_truncated"), None);
    assert_eq!(json_str(&ev, "execsentry.args_source"), Some("fanotify"));
    assert_eq!(
        json_str(&ev, "process.executable").map(str::as_bytes),
        Some(exe.as_os_str().as_bytes()),
        "executable path with a newline"
    );
    assert_eq!(json_str(&ev, "process.name"), Some(name));
    eprintln!(
        "{} arguments, {total} bytes of argv, kept exactly",
        args.len() + 1
    );

    // The alert the kubelet rule raised on the same exec.
    let alert = s
        .wait_for(|v| has_arg_of_kind(v, "alert", &marker), WAIT)
        .unwrap_or_else(|| panic!("no alert with {marker}; stderr:\n{}", s.stderr()));
    assert_eq!(
        json_str(&alert, "rule.id"),
        Some("t1609-kubelet-api-exec"),
        "{}",
        json_str(&alert, "rule.id").unwrap_or("?")
    );
    let alert: Event = serde_json::from_value(alert).expect("alert JSON is an Event");
    for format in [Format::Rfc5424, Format::Rfc3164, Format::Cef] {
        for payload in [Payload::Message, Payload::Json] {
            // The shipped default, and a size where nothing is cut.
            for max_bytes in [8192, 8 << 20] {
                let f = Formatter {
                    format,
                    payload,
                    facility: 10 << 3,
                    app_name: "execsentry".into(),
                    procid: 4242,
                    max_bytes,
                    hostname: true,
                };
                let msg = String::from_utf8(f.format(&alert)).expect("UTF-8 syslog message");
                harness::assert_no_raw_controls(&msg);
                match format {
                    Format::Rfc5424 => harness::check_rfc5424(&msg, &alert, payload),
                    Format::Rfc3164 => harness::check_rfc3164(&msg),
                    Format::Cef => harness::check_cef(&msg, &alert),
                }
            }
        }
    }
}

/// A short name with a newline and ESC fits comm whole: the kernel's comm
/// is then the name itself and must come through exactly.
#[test]
fn short_hostile_name_is_exact() {
    let Some((tmp, s)) = sensor_in_tempdir() else {
        return;
    };
    let name = "a\nb\x1b[7m\u{202e}";
    let exe = hostile_executable(tmp.path(), name.as_bytes());
    let marker = unique_name("short");
    run_fresh(Command::new(&exe).arg(&marker));
    let ev = s
        .wait_for(|v| has_arg_of_kind(v, "event", &marker), WAIT)
        .unwrap_or_else(|| panic!("no exec event with {marker}; stderr:\n{}", s.stderr()));
    assert_eq!(json_str(&ev, "process.name"), Some(name));
    assert!(s.non_json_lines().is_empty());
}

/// About 2 MiB of argv (the kernel's default limit). The sensor must give
/// it back exactly, or mark it `args_truncated` with every kept byte exact:
/// never a silently different argv. Which of the two happened is printed;
/// the fanotify watchdog (it lets a blocked exec go after a few ms) decides
/// how much can be read before the process image is replaced.
#[test]
fn two_mib_argv_is_exact_or_marked_truncated() {
    let Some((_tmp, s)) = sensor_in_tempdir() else {
        return;
    };
    let marker = unique_name("big");
    let args = two_mib_args(&marker);
    let total: usize = args.iter().map(|a| a.len() + 1).sum();
    run_fresh(
        with_big_stack(&mut Command::new("/bin/true"))
            .args(args.iter().map(|a| OsString::from_vec(a.clone())))
            .env_clear(),
    );
    let Some(ev) = s.wait_for(|v| has_arg_of_kind(v, "event", &marker), WAIT) else {
        panic!(
            "no event with the 2 MiB argv's first argument; stderr:\n{}",
            s.stderr()
        );
    };
    assert!(s.non_json_lines().is_empty());
    let got = args_of(&ev);
    let kept: usize = got.iter().map(|a| a.len() + 1).sum();
    let truncated = json_path(&ev, "execsentry.args_truncated") == Some(&Value::Bool(true));
    eprintln!(
        "2 MiB argv: {kept} of {} bytes kept ({} of {} arguments), args_truncated={truncated}",
        total + "/bin/true".len() + 1,
        got.len(),
        args.len() + 1
    );
    assert_eq!(got[0], "/bin/true");
    for (i, a) in got.iter().enumerate().skip(1) {
        let want = &args[i - 1];
        if i + 1 < got.len() || !truncated {
            assert!(a.as_bytes() == &want[..], "argument {i} differs");
        } else {
            assert!(
                want.starts_with(a.as_bytes()),
                "cut argument {i} is not a prefix"
            );
        }
    }
    if !truncated {
        assert_eq!(
            got.len(),
            args.len() + 1,
            "arguments lost without args_truncated"
        );
    }
}
