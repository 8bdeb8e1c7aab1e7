//! The rule engine end to end: shipped rules and their own test cases, the
//! Elastic seed rules loading verbatim, KQL `has` edge cases, the Sentinel
//! score, rules.d overrides, error positions, alerts and replay.

use std::path::PathBuf;

use execsentry::event::Event;
use execsentry::rules::{Match, RuleSet, replay};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn shipped() -> RuleSet {
    RuleSet::load(&[root().join("rules")]).unwrap_or_else(|e| panic!("shipped rules:\n{e}"))
}

fn set(files: &[(&str, &str)]) -> Result<RuleSet, String> {
    let v: Vec<(String, String)> = files
        .iter()
        .map(|(n, t)| (n.to_string(), t.to_string()))
        .collect();
    RuleSet::from_sources(&v).map_err(|e| e.to_string())
}

/// A plain exec event: `args` as given, optionally inside a container.
fn exec(args: &[&str], container: bool) -> Event {
    let mut e = Event::default();
    e.event.kind = "event".into();
    e.event.kind_type = vec!["start".into()];
    e.event.category = vec!["process".into()];
    e.event.action = "exec".into();
    e.host.os.os_type = "linux".into();
    e.process.args = args.iter().map(|s| s.to_string()).collect();
    e.process.args_count = args.len() as u32;
    e.process.command_line = args.join(" ");
    e.process.name = args[0].rsplit('/').next().unwrap().to_string();
    e.process.executable = format!("/usr/bin/{}", e.process.name);
    e.process.parent.name = "bash".into();
    e.process.parent.executable = "/usr/bin/bash".into();
    if container {
        e.container = Some(execsentry::event::Container {
            id: "c0ffee".repeat(10) + "abcd",
            runtime: "docker".into(),
            name: None,
            ..Default::default()
        });
        e.process.entry_leader = Some(execsentry::event::EntryLeader {
            entry_meta: execsentry::event::EntryMeta {
                meta_type: "container".into(),
            },
            ..Default::default()
        });
    }
    e
}

fn fired(rs: &RuleSet, ev: &Event) -> Vec<(String, Option<f64>)> {
    let mut out = Vec::new();
    rs.evaluate(ev, &mut out);
    out.iter()
        .map(|m| (rs.rule_id(m.rule).unwrap().to_string(), m.score))
        .collect()
}

fn ids(rs: &RuleSet, ev: &Event) -> Vec<String> {
    fired(rs, ev).into_iter().map(|(i, _)| i).collect()
}

const FIXED_IDS: &[&str] = &[
    "t1609-elastic-cmu-in-container",
    "t1609-elastic-runtime-cli-suspicious",
    "t1609-datadog-cmu-in-container",
    "t1609-sentinel-admin-command-score",
    "t1609-kubelet-api-exec",
    "t1609-runtime-socket-in-container",
];

#[test]
fn shipped_rules_load_with_their_fixed_ids() {
    let rs = shipped();
    for id in FIXED_IDS {
        assert!(rs.index_of(id).is_some(), "missing rule {id}");
    }
}

#[test]
fn every_shipped_rule_test_case_passes() {
    let rs = shipped();
    let outcomes = rs.run_tests();
    let failed: Vec<_> = outcomes.iter().filter(|o| !o.passed).collect();
    assert!(failed.is_empty(), "failing cases: {failed:#?}");
    for id in FIXED_IDS {
        let n = outcomes.iter().filter(|o| o.rule_id == *id).count();
        assert!(n >= 5, "{id} has only {n} test cases");
    }
}

#[test]
fn elastic_seed_rules_load_verbatim_and_behave() {
    let rs =
        RuleSet::load(&[root().join("tests/data/rules/elastic")]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(rs.len(), 2);
    // Without our `id`, Elastic's rule_id is the id.
    let cmu = "4b74d3b0-416e-4099-b432-677e1cd098cc";
    let cli = "0398c0a2-1237-478e-84c4-84510f1925e6";
    assert_eq!(ids(&rs, &exec(&["kubectl", "get", "pods"], true)), [cmu]);
    assert!(ids(&rs, &exec(&["kubectl", "get", "pods"], false)).is_empty());

    let mut ev = exec(
        &[
            "ctr",
            "-n",
            "k8s.io",
            "tasks",
            "exec",
            "--exec-id",
            "x",
            "c1",
            "sh",
        ],
        false,
    );
    assert_eq!(ids(&rs, &ev), [cli]);
    // The parent-executable exclusions: `not x in (..)` is `not (x in (..))`.
    for parent in [
        "/usr/bin/kubelet",
        "/usr/sbin/containerd",
        "/lib/systemd/systemd",
        "/sbin/init",
    ] {
        ev.process.parent.executable = parent.into();
        assert!(ids(&rs, &ev).is_empty(), "{parent} should be excluded");
    }
    // An unknown parent executable is not in the list, so the rule fires.
    ev.process.parent.executable = String::new();
    assert_eq!(ids(&rs, &ev), [cli]);
    // `process.name : ".*"` is a hidden name, not a regex.
    let mut hidden = exec(
        &["x", "--address", "/run/containerd/containerd.sock", "ps"],
        false,
    );
    hidden.process.name = ".x".into();
    assert_eq!(ids(&rs, &hidden), [cli]);
    hidden.process.name = "xx".into();
    assert!(ids(&rs, &hidden).is_empty());
    // Any-element semantics: `tasks` alone is not enough.
    assert!(ids(&rs, &exec(&["ctr", "tasks", "ls"], false)).is_empty());
    // `host.os.type == "linux"` gates both.
    let mut other = exec(&["kubectl", "get", "pods"], true);
    other.host.os.os_type = "windows".into();
    assert!(ids(&rs, &other).is_empty());
}

fn has_rule(term: &str) -> RuleSet {
    let q = format!(
        "[rule]\nid = \"h\"\nname = \"h\"\nquery = 'process where has(process.command_line, \"{term}\")'\n"
    );
    set(&[("h.toml", &q)]).unwrap()
}

#[test]
fn has_follows_the_kql_term_rule() {
    let cases: &[(&str, &str, bool)] = &[
        ("sh", "/bin/sh -c id", true),
        ("sh", "sh", true),
        ("sh", "bash -c id", false),
        ("run", "docker run alpine", true),
        ("run", "ls /var/run/x", true),
        ("run", "runc list", false),
        ("-it", "docker exec -it web sh", true),
        ("-it", "docker run -itd nginx", false),
        ("EXEC", "kubectl Exec web", true),
        (":10250", "curl https://n:10250/pods", true),
        (":10250", "curl https://n:102500/pods", false),
    ];
    for (term, cmd, want) in cases {
        let args: Vec<&str> = cmd.split(' ').collect();
        let got =
            !has_rule(term).is_empty() && !ids(&has_rule(term), &exec(&args, false)).is_empty();
        assert_eq!(got, *want, "has({cmd:?}, {term:?})");
    }
}

#[test]
fn sentinel_score_adds_the_factors() {
    let rs = shipped();
    let score = |ev: &Event| {
        fired(&rs, ev)
            .into_iter()
            .find(|(i, _)| i == "t1609-sentinel-admin-command-score")
            .and_then(|(_, s)| s)
    };
    // interactive 30 + shell 25 + kubectl exec 20
    assert_eq!(
        score(&exec(&["kubectl", "exec", "-it", "p", "--", "sh"], false)),
        Some(75.0)
    );
    // interactive + shell + privileged
    assert_eq!(
        score(&exec(
            &["docker", "run", "--privileged", "-it", "alpine", "bash"],
            false
        )),
        Some(90.0)
    );
    // --tty counts as interactive; zsh is a shell
    assert_eq!(
        score(&exec(&["podman", "exec", "--tty", "c1", "zsh"], false)),
        Some(55.0)
    );
    // privileged alone (35) passes the threshold; --net=host is the same factor
    assert_eq!(
        score(&exec(
            &[
                "nerdctl",
                "run",
                "--net=host",
                "--cap-add",
                "SYS_ADMIN",
                "img"
            ],
            false
        )),
        Some(35.0)
    );
    // kubectl exec alone is 20 < 25: no alert
    assert_eq!(
        score(&exec(&["kubectl", "exec", "p", "--", "id"], false)),
        None
    );
    // scripting parent (30) + docker exec
    let mut ev = exec(&["docker", "exec", "web", "id"], false);
    ev.process.parent.name = "PHP".into();
    assert_eq!(score(&ev), Some(30.0));
    // curl under a docker parent hitting the kubelet: 40 (+ -i… no)
    let mut ev = exec(
        &["curl", "-k", "https://n:10250/exec/ns/p/c?command=id"],
        false,
    );
    ev.process.parent.name = "docker".into();
    assert_eq!(score(&ev), Some(40.0));
    // every factor at once
    let mut ev = exec(
        &[
            "kubectl",
            "exec",
            "-it",
            "--privileged",
            "p",
            "--",
            "/bin/bash",
        ],
        false,
    );
    ev.process.parent.name = "python3".into();
    assert_eq!(score(&ev), Some(30.0 + 25.0 + 35.0 + 20.0 + 30.0));
}

const BASE: &str = r#"
[rule]
id = "base"
name = "kubectl anywhere"
severity = "low"
query = 'process where process.name == "kubectl"'
"#;

#[test]
fn rules_d_can_disable_and_add_exceptions() {
    let ev = exec(&["kubectl", "get", "pods"], false);
    let rs = set(&[("a.toml", BASE)]).unwrap();
    assert_eq!(ids(&rs, &ev), ["base"]);

    let off = set(&[("a.toml", BASE), ("b.toml", "disable = [\"base\"]\n")]).unwrap();
    assert_eq!(off.len(), 0);
    let off = set(&[
        ("a.toml", BASE),
        ("b.toml", "[rule]\nid = \"base\"\nenabled = false\n"),
    ])
    .unwrap();
    assert_eq!(off.len(), 0);

    let exc = "[rule]\nid = \"base\"\n[[rule.exception]]\nwhen = 'process.args == \"get\"'\nreason = \"read-only\"\n";
    let rs = set(&[("a.toml", BASE), ("b.toml", exc)]).unwrap();
    assert!(ids(&rs, &ev).is_empty());
    assert_eq!(
        ids(&rs, &exec(&["kubectl", "delete", "pod", "x"], false)),
        ["base"]
    );

    let err = set(&[("a.toml", BASE), ("b.toml", "disable = [\"nope\"]\n")]).unwrap_err();
    assert_eq!(
        err,
        "b.toml:1:12: cannot disable `nope`: no rule with that id was loaded before this file"
    );
    let err = set(&[
        ("a.toml", BASE),
        ("b.toml", "[rule]\nid = \"base\"\nname = \"x\"\n"),
    ])
    .unwrap_err();
    assert!(
        err.starts_with("b.toml:3:1: `name` cannot be set here"),
        "{err}"
    );
    let err = set(&[("a.toml", BASE), ("b.toml", BASE)]).unwrap_err();
    assert!(
        err.starts_with("b.toml:2:1: duplicate rule id `base` (first defined at a.toml:2:1)"),
        "{err}"
    );
}

#[test]
fn shipped_rules_accept_a_rules_d_exception() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("50-ci.toml"),
        "[rule]\nid = \"t1609-datadog-cmu-in-container\"\n[[rule.exception]]\nwhen = 'process.args[1] == \"get\"'\nreason = \"CI reads\"\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("README.md"), "not a rule").unwrap();
    let rs = RuleSet::load(&[root().join("rules"), dir.path().to_path_buf()]).unwrap();
    let ev = exec(&["kubectl", "get", "pods"], true);
    assert!(!ids(&rs, &ev).contains(&"t1609-datadog-cmu-in-container".to_string()));
    assert!(ids(&shipped(), &ev).contains(&"t1609-datadog-cmu-in-container".to_string()));
}

#[test]
fn errors_name_file_line_and_column() {
    let bad_field = "[rule]\nid = \"x\"\nname = \"x\"\nquery = '''\nprocess where\n  process.name == \"a\" and process.nmae == \"b\"\n'''\n";
    assert_eq!(
        set(&[("rules/x.toml", bad_field)]).unwrap_err(),
        "rules/x.toml:6:27: unknown field process.nmae (did you mean process.name?)"
    );
    // A basic string with escapes: the column is still the character's.
    let escaped = "[rule]\nid = \"x\"\nname = \"x\"\nquery = \"process where process.name == \\\"a\\\" and process.nmae == 1\"\n";
    assert_eq!(
        set(&[("y.toml", escaped)]).unwrap_err(),
        "y.toml:4:50: unknown field process.nmae (did you mean process.name?)"
    );
    let syntax = "[rule]\nid = \"x\"\nname = \"x\"\nquery = 'process where process.name =='\n";
    assert_eq!(
        set(&[("s.toml", syntax)]).unwrap_err(),
        "s.toml:4:39: expected a value (string, number, true, false, null or a field)"
    );
    let category = "[rule]\nid = \"x\"\nname = \"x\"\nquery = 'network where true'\n";
    assert!(
        set(&[("c.toml", category)])
            .unwrap_err()
            .starts_with("c.toml:4:10: event category `network` is not supported")
    );
    let typo = "[rule]\nid = \"x\"\nname = \"x\"\nthresold = 3\nquery = 'process where true'\n";
    assert_eq!(
        set(&[("t.toml", typo)]).unwrap_err(),
        "t.toml:4:1: unknown key `thresold` in [rule] (did you mean `threshold`?)"
    );
    let toml_err = "[rule\nid = 1\n";
    assert!(
        set(&[("e.toml", toml_err)])
            .unwrap_err()
            .starts_with("e.toml:1:"),
        "toml errors have positions"
    );
    let score_typo = "[rule]\nid = \"x\"\nname = \"x\"\nthreshold = 1\nquery = 'process where true'\n[[rule.score]]\nwhen = 'process.pid > \"1\"'\nadd = 1\n";
    assert_eq!(
        set(&[("p.toml", score_typo)]).unwrap_err(),
        "p.toml:7:23: <, <=, >, >= compare with a number"
    );
    // Several errors are all reported.
    let two = set(&[("a.toml", typo), ("b.toml", category)]).unwrap_err();
    assert_eq!(two.lines().count(), 2);
}

#[test]
fn hostile_input_is_an_error_not_a_crash() {
    let deep = format!(
        "[rule]\nid = \"x\"\nname = \"x\"\nquery = 'process where {}true{}'\n",
        "(".repeat(5000),
        ")".repeat(5000)
    );
    assert!(
        set(&[("d.toml", &deep)])
            .unwrap_err()
            .contains("nested too deeply")
    );
    let huge = format!("# {}\n", "x".repeat(2 << 20));
    assert!(
        set(&[("h.toml", &huge)])
            .unwrap_err()
            .contains("larger than")
    );
    let regex = "[rule]\nid = \"x\"\nname = \"x\"\nquery = 'process where process.name regex \"a{1000}{1000}\"'\n";
    assert!(
        set(&[("r.toml", regex)])
            .unwrap_err()
            .contains("invalid regex")
    );
    let not_toml = "\u{0}\u{1}\u{2}";
    assert!(set(&[("n.toml", not_toml)]).is_err());
}

#[test]
fn alert_carries_rule_threat_and_a_readable_message() {
    let rs = shipped();
    let mut ev = exec(
        &[
            "kubectl",
            "exec",
            "-it",
            "web-0",
            "--",
            "sh",
            "-c",
            "echo\nforged",
        ],
        true,
    );
    ev.process.command_line = ev.process.args.join(" ");
    let mut out = Vec::new();
    rs.evaluate(&ev, &mut out);
    let i = rs.index_of("t1609-elastic-cmu-in-container").unwrap();
    let m = out.iter().find(|m| m.rule == i).unwrap();
    let a = rs.alert(&ev, m);
    assert_eq!(a.event.kind, "alert");
    assert_eq!(a.event.severity, Some(21));
    assert_eq!(a.event.risk_score, Some(21.0));
    let r = a.rule.as_ref().unwrap();
    assert_eq!(r.id, "t1609-elastic-cmu-in-container");
    assert_eq!(r.uuid, "4b74d3b0-416e-4099-b432-677e1cd098cc");
    assert_eq!(r.ruleset, "execsentry");
    let t = a.threat.as_ref().unwrap();
    assert_eq!(t.technique.id, ["T1609"]);
    assert_eq!(t.tactic.name, ["Execution"]);
    let msg = a.message.as_ref().unwrap();
    assert!(!msg.contains('\n'), "{msg}");
    assert!(
        msg.contains("echo\\nforged") && msg.contains("in container c0ffeec0ffee (docker)"),
        "{msg}"
    );

    let s = rs.index_of("t1609-sentinel-admin-command-score").unwrap();
    let a = rs.alert(
        &ev,
        &Match {
            rule: s,
            score: Some(75.0),
        },
    );
    assert_eq!(
        (a.event.severity, a.event.risk_score),
        (Some(73), Some(75.0))
    );

    let cli = rs.index_of("t1609-elastic-runtime-cli-suspicious").unwrap();
    let a = rs.alert(
        &ev,
        &Match {
            rule: cli,
            score: None,
        },
    );
    assert_eq!(a.threat.unwrap().technique.id, ["T1609", "T1611"]);
}

#[test]
fn replay_reports_bad_lines_and_writes_alerts() {
    let rs = shipped();
    let input = std::fs::read(root().join("tests/data/rules/replay.jsonl")).unwrap();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let stats = replay(&rs, &input[..], &mut out, &mut err).unwrap();
    let err = String::from_utf8(err).unwrap();
    assert_eq!((stats.lines, stats.bad_lines), (6, 2), "{err}");
    assert!(err.starts_with("line 3: "), "{err}");
    assert!(err.contains("line 6: no `process` object"), "{err}");
    let alerts: Vec<Event> = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(alerts.len() as u64, stats.alerts);
    let got: Vec<(&str, &str)> = alerts
        .iter()
        .map(|a| (a.event.id.as_str(), a.rule.as_ref().unwrap().id.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            // Rules are in load order: files sorted by name.
            ("e1", "t1609-datadog-cmu-in-container"),
            ("e1", "t1609-elastic-cmu-in-container"),
            ("e1", "t1609-sentinel-admin-command-score"),
            ("e4", "t1609-elastic-runtime-cli-suspicious"),
            ("e4", "t1609-sentinel-admin-command-score"),
        ]
    );
    assert!(alerts.iter().all(|a| a.is_alert()));
    // Feeding alerts back in does not alert again.
    let again = alerts
        .iter()
        .map(|a| serde_json::to_string(a).unwrap() + "\n")
        .collect::<String>();
    let stats = replay(&rs, again.as_bytes(), std::io::sink(), std::io::sink()).unwrap();
    assert_eq!(stats.alerts, 0);
}

#[test]
fn rule_test_cases_report_failures_and_bad_events() {
    let rule = |tests: &str| format!("{BASE}{tests}");
    let bad = rule("[[rule.test]]\nevent = { process = { nmae = \"kubectl\" } }\nexpect = true\n");
    let err = set(&[("t.toml", &bad)]).unwrap_err();
    assert!(
        err.starts_with("t.toml:8:9: invalid test event: unknown field `process.nmae`"),
        "{err}"
    );
    let cases = rule(concat!(
        "[[rule.test]]\nname = \"fires\"\nevent = { process = { args = [\"kubectl\", \"get\"] } }\nexpect = true\n",
        "[[rule.test]]\nevent = { process = { args = [\"ls\"] } }\nexpect = true\n",
    ));
    let rs = set(&[("t.toml", &cases)]).unwrap();
    let out = rs.run_tests();
    assert_eq!(out.len(), 2);
    assert!(out[0].passed && out[0].name == "fires");
    assert!(!out[1].passed);
    assert_eq!(
        (out[1].name.as_str(), out[1].detail.as_str()),
        ("case 2", "expected an alert, got none")
    );
    assert_eq!(out[1].location, "t.toml:11:1");
}
