//! The command line as users and scripts see it: exit codes, error lines
//! with file:line:col, `replay`, `rules check/test`, `config check`, and
//! SIGHUP reloading rules (root only for that one).

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use common::{Sensor, json_str, repo_root, rules_dir, unique_name};

fn execsentry(args: &[&str]) -> Output {
    Command::new(Sensor::binary())
        .args(args)
        .output()
        .expect("run execsentry")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn replay_prints_alerts_and_reports_bad_lines_by_number() {
    let rules = rules_dir();
    let input = repo_root().join("tests/data/rules/replay.jsonl");
    let out = execsentry(&["replay", path_str(&input), "--rules", path_str(&rules)]);
    assert_eq!(out.status.code(), Some(2), "a bad line makes exit 2");
    let stdout = text(&out.stdout);
    let alerts: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("alerts are JSON lines"))
        .collect();
    assert!(!alerts.is_empty());
    assert!(
        alerts
            .iter()
            .all(|a| json_str(a, "event.kind") == Some("alert"))
    );
    assert!(
        alerts
            .iter()
            .any(|a| json_str(a, "rule.id") == Some("t1609-elastic-cmu-in-container"))
    );
    let stderr = text(&out.stderr);
    assert!(stderr.contains("line "), "bad lines named: {stderr}");
}

#[test]
fn replay_reads_stdin_and_exits_0_when_every_line_is_good() {
    let rules = rules_dir();
    let line = std::fs::read_to_string(repo_root().join("tests/data/rules/replay.jsonl"))
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .to_string();
    let mut child = Command::new(Sensor::binary())
        .args(["replay", "-", "--rules", path_str(&rules)])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    writeln!(child.stdin.take().unwrap(), "{line}").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert!(text(&out.stdout).contains("\"kind\":\"alert\""));
}

#[test]
fn rules_check_accepts_the_shipped_rules() {
    let out = execsentry(&["rules", "check", path_str(&rules_dir())]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with("ok: "));
}

#[test]
fn rules_check_names_file_line_and_column_of_an_unknown_field() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(
        &file,
        "[rule]\nid = \"x\"\nname = \"x\"\ndescription = \"x\"\nrisk_score = 1\nseverity = \"low\"\n\
         query = '''\nprocess where process.nmae == \"kubectl\"\n'''\n",
    )
    .unwrap();
    let out = execsentry(&["rules", "check", path_str(&file)]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    let want = format!("{}:8:15: unknown field process.nmae", file.display());
    assert!(err.contains(&want), "{err}");
}

#[test]
fn rules_test_runs_every_case_of_the_shipped_rules() {
    let out = execsentry(&["rules", "test", path_str(&rules_dir())]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    let last = stdout.lines().last().unwrap();
    assert!(last.ends_with(" 0 failed"), "{last}");
    assert!(!stdout.contains("FAIL"));
}

#[test]
fn config_check_prints_the_effective_config_and_rejects_unknown_keys() {
    let shipped = repo_root().join("packaging/execsentry.toml");
    let out = execsentry(&["config", "check", path_str(&shipped)]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("[output.syslog]"));

    let bad = repo_root().join("tests/data/config/unknown_key.toml");
    let out = execsentry(&["config", "check", path_str(&bad)]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("unknown_key.toml:"),
        "names the file and line: {err}"
    );
}

#[test]
fn version_and_help_work() {
    let out = execsentry(&["--version"]);
    assert!(out.status.success());
    assert!(text(&out.stdout).starts_with("execsentry "));
    let out = execsentry(&["--help"]);
    assert!(out.status.success());
    for cmd in ["run", "replay", "rules", "config", "tail"] {
        assert!(text(&out.stdout).contains(cmd), "{cmd}");
    }
}

/// SIGHUP reloads the rules; a broken rule file keeps the running set.
#[test]
fn sighup_reloads_rules_and_keeps_the_old_set_on_error() {
    if !common::require_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let rule = |name: &str, needle: &str| {
        format!(
            "[rule]\nid = \"{name}\"\nname = \"{name}\"\ndescription = \"test\"\nrisk_score = 1\n\
             severity = \"low\"\nquery = '''\nprocess where process.args == \"{needle}\"\n'''\n"
        )
    };
    let first = unique_name("first");
    std::fs::write(dir.path().join("a.toml"), rule("test-first", &first)).unwrap();
    let mut s = Sensor::spawn(&[
        "run",
        "--output",
        "stdout",
        "--capture",
        "proc",
        "--rules",
        path_str(dir.path()),
    ]);
    s.wait_ready(Duration::from_secs(10));
    let fired = |s: &Sensor, id: &str, marker: &str| {
        let _ = Command::new("/bin/sh")
            .args(["-c", "sleep 0.2", marker])
            .status();
        s.wait_for(
            |v| json_str(v, "rule.id") == Some(id),
            Duration::from_secs(5),
        )
        .is_some()
    };
    assert!(fired(&s, "test-first", &first));

    let second = unique_name("second");
    std::fs::write(dir.path().join("a.toml"), rule("test-second", &second)).unwrap();
    s.signal(libc::SIGHUP);
    std::thread::sleep(Duration::from_millis(500));
    assert!(fired(&s, "test-second", &second), "{}", s.stderr());

    std::fs::write(dir.path().join("a.toml"), "[rule\nbroken").unwrap();
    s.signal(libc::SIGHUP);
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        s.stderr().contains("keeping the running rule set"),
        "{}",
        s.stderr()
    );
    let again = format!("{second}-again");
    let _ = Command::new("/bin/sh")
        .args(["-c", "sleep 0.2", &second, &again])
        .status();
    assert!(
        s.wait_for(
            |v| json_str(v, "process.command_line").is_some_and(|c| c.contains(&again)),
            Duration::from_secs(5)
        )
        .is_some(),
        "the previous rule set still runs"
    );
}
