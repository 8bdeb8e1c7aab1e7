//! The start rules of the README's exit-code table, through the real
//! binary: bad configuration never looks like success. A missing `--rules`
//! path, every configured path missing, zero rules, a broken rule file, a
//! bad config or a bad tools.toml exit 2 (naming file:line:col where there
//! is one) and never report ready; a configured path that is missing
//! beside one that exists is only a warning.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::{Sensor, rules_dir};

const BROKEN_RULE: &str = "[rule]\nid = \"x\"\nname = \"x\"\ndescription = \"x\"\nrisk_score = 1\n\
     severity = \"low\"\nquery = '''\nprocess where process.nmae == \"kubectl\"\n'''\n";

fn execsentry(args: &[&str]) -> Output {
    Command::new(Sensor::binary())
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run execsentry")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Exit code 2, no ready line, and stderr containing each of `want`.
#[track_caller]
fn assert_bad_input(out: &Output, want: &[&str]) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr:\n{err}");
    assert!(!err.contains("ready"), "reported ready:\n{err}");
    for w in want {
        assert!(err.contains(w), "stderr lacks {w:?}:\n{err}");
    }
}

/// `run` with a private control socket, so a start that gets far enough
/// never touches the system's.
fn run(dir: &Path, args: &[&str]) -> Output {
    let control = dir.join("control.sock");
    let mut all = vec!["run", "--output", "stdout", "--capture", "proc"];
    all.extend_from_slice(args);
    all.extend(["--control", s(&control)]);
    execsentry(&all)
}

fn config(dir: &Path, rules: &[&Path], extra: &str) -> PathBuf {
    let list: Vec<String> = rules.iter().map(|p| format!("{:?}", s(p))).collect();
    let p = dir.join("execsentry.toml");
    std::fs::write(
        &p,
        format!("[sensor]\nrules = [{}]\n{extra}", list.join(", ")),
    )
    .unwrap();
    p
}

#[test]
fn a_missing_command_line_rule_path_exits_2_for_run_replay_and_rules_check() {
    let dir = tempfile::tempdir().unwrap();
    let typo = dir.path().join("typo");
    let good = rules_dir();
    let want = [s(&typo), "does not exist"];
    assert_bad_input(&run(dir.path(), &["--rules", s(&typo)]), &want);
    // Beside a good path it is still an error: the operator typed it.
    assert_bad_input(
        &run(dir.path(), &["--rules", s(&good), "--rules", s(&typo)]),
        &want,
    );
    assert_bad_input(&execsentry(&["replay", "-", "--rules", s(&typo)]), &want);
    assert_bad_input(&execsentry(&["rules", "check", s(&typo)]), &want);
    assert_bad_input(&execsentry(&["rules", "check", s(&good), s(&typo)]), &want);
}

#[test]
fn zero_rules_exit_2_for_run_replay_and_rules_check() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let want = ["zero rules", s(&empty)];
    assert_bad_input(&run(dir.path(), &["--rules", s(&empty)]), &want);
    assert_bad_input(&execsentry(&["replay", "-", "--rules", s(&empty)]), &want);
    assert_bad_input(&execsentry(&["rules", "check", s(&empty)]), &want);
}

#[test]
fn a_broken_rule_file_exits_2_naming_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules");
    std::fs::create_dir(&rules).unwrap();
    let file = rules.join("bad.toml");
    std::fs::write(&file, BROKEN_RULE).unwrap();
    let want = format!("{}:8:15: unknown field process.nmae", file.display());
    assert_bad_input(&run(dir.path(), &["--rules", s(&rules)]), &[&want]);
    assert_bad_input(
        &execsentry(&["replay", "-", "--rules", s(&rules)]),
        &[&want],
    );
    assert_bad_input(&execsentry(&["rules", "check", s(&rules)]), &[&want]);
    // From the config, the same.
    let cfg = config(dir.path(), &[&rules], "");
    assert_bad_input(&run(dir.path(), &["--config", s(&cfg)]), &[&want]);
}

#[test]
fn every_configured_rule_path_missing_exits_2_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("gone-a");
    let b = dir.path().join("gone-b");
    let cfg = config(dir.path(), &[&a, &b], "");
    let want = ["none of the configured rule paths exists", s(&a), s(&b)];
    assert_bad_input(&run(dir.path(), &["--config", s(&cfg)]), &want);
    assert_bad_input(&execsentry(&["replay", "-", "--config", s(&cfg)]), &want);
    // No path at all is the same case.
    let none = config(dir.path(), &[], "");
    assert_bad_input(
        &run(dir.path(), &["--config", s(&none)]),
        &["no rule path is configured"],
    );
}

#[test]
fn a_bad_config_exits_2_naming_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, "[sensor]\nemit_events = true\nstats_intreval = 5\n").unwrap();
    let want = format!("{}:3:1: unknown field `stats_intreval`", cfg.display());
    assert_bad_input(&run(dir.path(), &["--config", s(&cfg)]), &[&want]);
    assert_bad_input(&execsentry(&["replay", "-", "--config", s(&cfg)]), &[&want]);
    assert_bad_input(&execsentry(&["config", "check", s(&cfg)]), &[&want]);
}

/// tools.toml is read after the capture is open, so this one needs root.
#[test]
fn a_bad_tools_toml_exits_2_naming_file_line_and_column() {
    if !common::require_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let tools = dir.path().join("extra-tools.toml");
    std::fs::write(
        &tools,
        "[[metadata.tool]]\nname = \"docker\"\nmian = [\"x\"]\n",
    )
    .unwrap();
    let cfg = config(
        dir.path(),
        &[&rules_dir()],
        &format!("[identity]\ntools = [{:?}]\n", s(&tools)),
    );
    let want = format!("{}:3:1: unknown field `mian`", tools.display());
    assert_bad_input(&run(dir.path(), &["--config", s(&cfg)]), &[&want]);
}

/// A configured path that is missing beside one that exists: a warning,
/// and the sensor starts with the rules it found.
#[test]
fn a_missing_configured_path_beside_a_good_one_is_a_warning() {
    if !common::require_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let gone = dir.path().join("rules.d");
    let cfg = config(dir.path(), &[&rules_dir(), &gone], "");
    let control = dir.path().join("control.sock");
    let mut sensor = Sensor::spawn(&[
        "run",
        "--config",
        s(&cfg),
        "--output",
        "stdout",
        "--capture",
        "proc",
        "--control",
        s(&control),
    ]);
    sensor.wait_ready(Duration::from_secs(10));
    let err = sensor.stderr();
    assert!(
        err.contains(&format!(
            "configured rule path {} does not exist; skipped",
            gone.display()
        )),
        "{err}"
    );
    let status = sensor.stop(Duration::from_secs(5)).expect("sensor exits");
    assert!(status.success(), "{status:?}");
}
