//! SIGHUP against the real daemon: a broken configuration keeps everything
//! in force and says why; settings tied to the kernel sources are logged as
//! needing a restart and keep their values; rules, rule paths and outputs
//! change without a restart.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{Sensor, json_str, unique_name};

fn rule(id: &str, needle: &str) -> String {
    format!(
        "[rule]\nid = \"{id}\"\nname = \"{id}\"\ndescription = \"test\"\nrisk_score = 1\n\
         severity = \"low\"\nquery = '''\nprocess where process.args == \"{needle}\"\n'''\n"
    )
}

fn config(rules: &Path, capture: &str, file: Option<&Path>) -> String {
    let file = match file {
        Some(p) => format!(
            "[output.file]\nenabled = true\npath = \"{}\"\n",
            p.display()
        ),
        None => String::new(),
    };
    format!(
        "[sensor]\nrules = [\"{}\"]\ncapture = \"{capture}\"\n\
         [output.syslog]\nenabled = false\n[output.socket]\nenabled = false\n\
         [output.stdout]\nenabled = true\n{file}",
        rules.display()
    )
}

/// Runs a process whose argv carries the rule's `needle` and a fresh
/// marker; true once `id` fired on that process.
fn fires(s: &Sensor, id: &str, needle: &str) -> bool {
    let marker = unique_name("run");
    let _ = Command::new("/bin/sh")
        .args(["-c", "sleep 0.1", needle, &marker])
        .status();
    s.wait_for(
        |v| {
            json_str(v, "rule.id") == Some(id)
                && json_str(v, "process.command_line").is_some_and(|c| c.contains(&marker))
        },
        Duration::from_secs(5),
    )
    .is_some()
}

fn hup(s: &Sensor) {
    s.signal(libc::SIGHUP);
    std::thread::sleep(Duration::from_millis(700));
}

#[test]
fn sighup_applies_a_valid_config_and_keeps_everything_on_a_broken_one() {
    if !common::require_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let rules_a = dir.path().join("a");
    let rules_b = dir.path().join("b");
    std::fs::create_dir(&rules_a).unwrap();
    std::fs::create_dir(&rules_b).unwrap();
    let first = unique_name("first");
    std::fs::write(rules_a.join("r.toml"), rule("test-first", &first)).unwrap();
    let second = unique_name("second");
    std::fs::write(rules_b.join("r.toml"), rule("test-second", &second)).unwrap();
    let cfg = dir.path().join("execsentry.toml");
    std::fs::write(&cfg, config(&rules_a, "proc", None)).unwrap();

    let mut s = Sensor::spawn(&["run", "--config", cfg.to_str().unwrap()]);
    s.wait_ready(Duration::from_secs(10));
    assert!(fires(&s, "test-first", &first), "{}", s.stderr());

    // A broken config: the rules, outputs and all stay as they were.
    std::fs::write(&cfg, "[sensor\nrules = ").unwrap();
    hup(&s);
    assert!(
        s.stderr()
            .contains("keeping the running rule set and configuration"),
        "{}",
        s.stderr()
    );
    assert!(fires(&s, "test-first", &first));

    // A valid config that asks for another capture mode and new rule
    // paths and adds a file output: the mode needs a restart, the rest
    // applies.
    let alerts = dir.path().join("alerts.json");
    std::fs::write(&cfg, config(&rules_b, "fanotify", Some(&alerts))).unwrap();
    hup(&s);
    let log = s.stderr();
    assert!(
        log.contains("sensor.capture changed") && log.contains("needs a restart"),
        "{log}"
    );
    assert!(fires(&s, "test-second", &second), "{}", s.stderr());
    assert!(
        !fires(&s, "test-first", &first),
        "the old rule path is no longer loaded"
    );
    let written = std::fs::read_to_string(&alerts).unwrap_or_default();
    assert!(
        written.contains("test-second"),
        "the file output added by the reload got the alert: {written:?}"
    );

    // A rule set that does not load keeps the running one.
    std::fs::write(rules_b.join("r.toml"), "[rule\nbroken").unwrap();
    hup(&s);
    assert!(
        s.stderr()
            .matches("keeping the running rule set and configuration")
            .count()
            >= 2,
        "{}",
        s.stderr()
    );
    assert!(fires(&s, "test-second", &second));
    s.stop(Duration::from_secs(5));
}
