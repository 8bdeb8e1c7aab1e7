//! `sensor.capture_env_vars`: the listed variables of even a process that
//! lives microseconds come from the capture source, which saw `envp` at
//! exec time; the rest of the environment never leaves the host.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{Sensor, json_path, json_str, rules_dir, unique_name};

#[test]
fn listed_env_vars_come_from_the_capture_and_others_stay_out() {
    if !common::require_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("execsentry.toml");
    std::fs::write(
        &cfg,
        format!(
            "[sensor]\nrules = [\"{}\"]\ncapture = \"fanotify\"\nemit_events = true\n\
             capture_env_vars = [\"ES_WANTED\"]\n\
             [output.syslog]\nenabled = false\n[output.socket]\nenabled = false\n\
             [output.stdout]\nenabled = true\n",
            rules_dir().display()
        ),
    )
    .unwrap();
    let mut s = Sensor::spawn(&["run", "--config", cfg.to_str().unwrap()]);
    s.wait_ready(Duration::from_secs(10));
    let marker = unique_name("env");
    let value = unique_name("value");
    let _ = Command::new("/bin/true")
        .arg(&marker)
        .env("ES_WANTED", &value)
        .env("ES_SECRET", "do-not-ship")
        .status();
    let ev = s
        .wait_for(
            |v| json_str(v, "process.args.1") == Some(marker.as_str()),
            Duration::from_secs(10),
        )
        .unwrap_or_else(|| panic!("the exec was not seen: {}", s.stderr()));
    let vars = json_path(&ev, "process.env_vars")
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        vars,
        serde_json::json!([format!("ES_WANTED={value}")]),
        "{ev}"
    );
    assert_eq!(
        json_str(&ev, "execsentry.env_vars_source"),
        Some("capture"),
        "{ev}"
    );
    assert!(!ev.to_string().contains("do-not-ship"));
    s.stop(Duration::from_secs(5));
}
