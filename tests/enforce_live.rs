//! Opt-in blocking: with `sensor.enforce` and the shipped deny rule enabled,
//! a container administration tool run inside a real container fails with
//! EPERM and the alert says "blocked"; without enforcement it runs. Needs
//! root and Docker (runc otherwise).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::{AnyContainer, Sensor, json_str, rules_dir, unique_name};

const WAIT: Duration = Duration::from_secs(10);
const DENY_RULE: &str = "t1609-deny-cmu-in-container";

/// An enforcing sensor refuses execs host-wide: no other test of this
/// binary may run beside it.
static HOST: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn alone() -> std::sync::MutexGuard<'static, ()> {
    HOST.lock().unwrap_or_else(|e| e.into_inner())
}

/// rules.d enabling the shipped (disabled) deny rule.
fn enable_deny(dir: &Path) -> PathBuf {
    let d = dir.join("rules.d");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(
        d.join("enable-deny.toml"),
        format!("[rule]\nid = \"{DENY_RULE}\"\nenabled = true\n"),
    )
    .unwrap();
    d
}

fn config(dir: &Path, enforce: bool, extra_rules: Option<&Path>) -> PathBuf {
    let mut rules = format!("\"{}\"", rules_dir().display());
    if let Some(e) = extra_rules {
        rules.push_str(&format!(", \"{}\"", e.display()));
    }
    let text = format!(
        "[sensor]\nrules = [{rules}]\ncapture = \"fanotify\"\nenforce = {enforce}\n\n\
         [output.syslog]\nenabled = false\n\n[output.socket]\nenabled = false\n\n\
         [output.stdout]\nenabled = true\n"
    );
    let p = dir.join(format!("enforce-{enforce}.toml"));
    std::fs::write(&p, text).unwrap();
    p
}

fn sensor(cfg: &Path, dir: &Path) -> Sensor {
    let control = dir.join(format!("{}.control", unique_name("c")));
    Sensor::spawn(&[
        "run",
        "--config",
        cfg.to_str().unwrap(),
        "--control",
        control.to_str().unwrap(),
    ])
}

/// The shell inside reports how the exec of `kubectl` went: 126 is the
/// shell's code for "found but could not execute" (our EPERM), 127 is
/// busybox's "applet not found" (it ran).
fn run_kubectl(c: &AnyContainer, marker: &str) -> Output {
    let script = format!("kubectl get pods {marker}; echo rc=$?");
    c.exec(&["sh", "-c", script.as_str()])
}

#[test]
fn enforcement_blocks_kubectl_in_a_container_and_says_so() {
    if !common::require_root() {
        return;
    }
    let _alone = alone();
    let dir = tempfile::tempdir().unwrap();
    let rules_d = enable_deny(dir.path());
    let mut s = sensor(&config(dir.path(), true, Some(&rules_d)), dir.path());
    s.wait_ready(WAIT);
    let b = AnyContainer::start();
    let marker = unique_name("deny");
    let out = run_kubectl(&b, &marker);
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("rc=126"), "the exec was refused: {text}");
    let alert = s
        .wait_for(
            |v| {
                json_str(v, "rule.id") == Some(DENY_RULE)
                    && json_str(v, "process.command_line").is_some_and(|c| c.contains(&marker))
            },
            WAIT,
        )
        .unwrap_or_else(|| panic!("no blocked alert; stderr:\n{}", s.stderr()));
    assert_eq!(json_str(&alert, "event.outcome"), Some("blocked"));
    assert_eq!(json_str(&alert, "process.name"), Some("kubectl"));
    assert!(json_str(&alert, "container.id").is_some());

    // The host is not affected: the same tool runs outside a container.
    let host_tool = dir.path().join("kubectl");
    std::fs::copy(common::busybox(), &host_tool).unwrap();
    let out = common::output_of_fresh(Command::new(&host_tool).arg("version"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("applet not found"), "ran on the host: {err}");
    s.stop(WAIT);
}

#[test]
fn without_enforcement_the_tool_runs() {
    if !common::require_root() {
        return;
    }
    let _alone = alone();
    let dir = tempfile::tempdir().unwrap();
    let mut s = sensor(&config(dir.path(), false, None), dir.path());
    s.wait_ready(WAIT);
    let b = AnyContainer::start();
    let out = run_kubectl(&b, &unique_name("allow"));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("rc=127"),
        "kubectl ran (busybox: applet not found): {text}"
    );
    s.stop(WAIT);
}

#[test]
fn a_deny_rule_without_enforcement_is_a_config_error() {
    if !common::require_root() {
        return;
    }
    let _alone = alone();
    let dir = tempfile::tempdir().unwrap();
    let rules_d = enable_deny(dir.path());
    let mut s = sensor(&config(dir.path(), false, Some(&rules_d)), dir.path());
    let status = s.wait_exit(WAIT).expect("refuses to start");
    assert_eq!(status.code(), Some(2));
    let err = s.stderr();
    assert!(
        err.contains(DENY_RULE) && err.contains("sensor.enforce is false"),
        "{err}"
    );
}

#[test]
fn the_deny_rule_passes_its_own_test_cases_when_enabled() {
    let dir = tempfile::tempdir().unwrap();
    let rules_d = enable_deny(dir.path());
    let out = Command::new(Sensor::binary())
        .args(["rules", "test"])
        .arg(rules_dir())
        .arg(&rules_d)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains(DENY_RULE), "{stdout}");
}
