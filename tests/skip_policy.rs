//! The rule every live test follows when it cannot run here: off CI a skip
//! is recorded for `make test`'s summary; with `CI=true` or
//! `EXECSENTRY_REQUIRE_ALL=1` it is a failure. Checked on a child run of
//! this binary, so the parent's own environment does not matter.

mod common;

use std::process::Command;

/// Only run as a child (ignored in a normal run, which asserts nothing).
#[test]
#[ignore = "run by the tests below as a child process"]
fn child_that_cannot_run_here() {
    assert!(!common::skip("pretend a tool is missing"));
}

fn child(env: &[(&str, &str)], log: &std::path::Path) -> std::process::Output {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--ignored", "--exact", "child_that_cannot_run_here"])
        .env_remove("CI")
        .env_remove("EXECSENTRY_REQUIRE_ALL")
        .env("EXECSENTRY_SKIP_LOG", log);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

#[test]
fn off_ci_a_skip_passes_and_is_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("skips");
    let out = child(&[], &log);
    assert!(out.status.success(), "{out:?}");
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        text.trim(),
        "SKIPPED skip_policy::child_that_cannot_run_here: pretend a tool is missing"
    );
}

#[test]
fn in_ci_or_with_require_all_a_skip_fails_with_its_reason() {
    for env in [("CI", "true"), ("EXECSENTRY_REQUIRE_ALL", "1")] {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("skips");
        let out = child(&[env], &log);
        assert!(!out.status.success(), "{env:?}: {out:?}");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains("pretend a tool is missing"), "{stdout}");
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(text.starts_with("FAILED skip_policy::"), "{text}");
    }
}
