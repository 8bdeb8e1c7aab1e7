//! The shipped rules on real execs: T1609 alerts from a real container and
//! from the host, through the running daemon. Needs root.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{Sensor, json_path, json_str, rules_dir, unique_name};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(10);

fn sensor() -> Sensor {
    let rules = rules_dir();
    let mut s = Sensor::spawn(&[
        "run",
        "--output",
        "stdout",
        "--rules",
        rules.to_str().unwrap(),
    ]);
    s.wait_ready(WAIT);
    s
}

fn alert_for(s: &Sensor, rule: &str, marker: &str) -> Value {
    alert_where(s, rule, marker, |_| true)
}

fn alert_where(s: &Sensor, rule: &str, marker: &str, also: impl Fn(&Value) -> bool) -> Value {
    s.wait_for(
        |v| {
            json_str(v, "event.kind") == Some("alert")
                && json_str(v, "rule.id") == Some(rule)
                && json_str(v, "process.command_line").is_some_and(|c| c.contains(marker))
                && also(v)
        },
        WAIT,
    )
    .unwrap_or_else(|| panic!("no {rule} alert for {marker}; stderr:\n{}", s.stderr()))
}

/// The container rules fire on `kubectl exec -it pod -- sh` inside a
/// container, with the container's id: from Docker when it runs, else from
/// a runc container with a CRI-style cgroup path.
#[test]
fn kubectl_exec_in_a_container_raises_the_container_rules() {
    if !common::require_root() {
        return;
    }
    let s = sensor();
    let marker = unique_name("pod");
    let argv = ["kubectl", "exec", "-it", marker.as_str(), "--", "sh"];
    let c = common::AnyContainer::start();
    c.exec_tty(&argv);
    let id = c.id().to_string();
    for rule in [
        "t1609-elastic-cmu-in-container",
        "t1609-datadog-cmu-in-container",
        "t1609-sentinel-admin-command-score",
    ] {
        // The host's `docker exec -it … kubectl exec …` may match too (the
        // Sentinel rule rightly scores it): take the alert from inside.
        let a = alert_where(&s, rule, &marker, |v| json_path(v, "container").is_some());
        assert_eq!(json_str(&a, "container.id"), Some(id.as_str()), "{rule}");
        assert_eq!(json_str(&a, "threat.framework"), Some("MITRE ATT&CK"));
        let techniques = json_path(&a, "threat.technique.id").unwrap();
        assert!(techniques.to_string().contains("T1609"), "{a}");
        assert!(json_str(&a, "message").is_some_and(|m| m.contains("kubectl")));
    }
    // -it (+30) and sh (+25) and kubectl exec (+20).
    let scored = alert_where(&s, "t1609-sentinel-admin-command-score", &marker, |v| {
        json_path(v, "container").is_some()
    });
    assert_eq!(
        json_path(&scored, "event.risk_score").and_then(Value::as_f64),
        Some(75.0)
    );
}

/// `ctr tasks exec` on the host reaches containerd directly, past the
/// Kubernetes API: the runtime-CLI rule (seed 004) fires.
#[test]
fn ctr_tasks_exec_on_the_host_raises_the_runtime_cli_rule() {
    if !common::require_root() {
        return;
    }
    let s = sensor();
    let dir = tempfile::tempdir().unwrap();
    let ctr = dir.path().join("ctr");
    std::fs::copy(common::busybox(), &ctr).unwrap();
    let marker = unique_name("task");
    // busybox has no `ctr` applet: it exits at once, the exec is what counts.
    common::output_of_fresh(Command::new(&ctr).args([
        "-n",
        "k8s.io",
        "tasks",
        "exec",
        "--exec-id",
        &marker,
        "web",
        "sh",
    ]));
    let a = alert_for(&s, "t1609-elastic-runtime-cli-suspicious", &marker);
    assert!(json_path(&a, "container").is_none(), "host process: {a}");
    assert_eq!(json_str(&a, "process.name"), Some("ctr"));
    assert_eq!(
        json_str(&a, "rule.uuid"),
        Some("0398c0a2-1237-478e-84c4-84510f1925e6")
    );
}

/// kubelet API abuse from the host: `curl -k https://node:10250/run/…`.
#[test]
fn curl_to_the_kubelet_run_endpoint_raises_the_kubelet_rule() {
    if !common::require_root() {
        return;
    }
    let s = sensor();
    let dir = tempfile::tempdir().unwrap();
    let curl = dir.path().join("curl");
    std::fs::copy(common::busybox(), &curl).unwrap();
    let marker = unique_name("ns");
    let url = format!("https://127.0.0.1:10250/run/{marker}/web-0/app");
    common::output_of_fresh(Command::new(&curl).args(["-sk", "-XPOST", &url, "-d", "cmd=id"]));
    let a = alert_for(&s, "t1609-kubelet-api-exec", &marker);
    assert_eq!(json_str(&a, "event.kind"), Some("alert"));
}
