//! The EQL syntax of Elastic's public Linux rules (issue 17, part 1), with
//! rule texts of our own in `tests/data/eql-syntax/`: each loads, its
//! `[[rule.test]]` cases pass, and `rules check --summary` loads them all.
//! Also every operator and function against one event (case folding,
//! wildcards, multi-valued fields, `in` lists, `?`), the clear errors for
//! fields of other event kinds, `unsupported_rules = "skip"`, and replay of
//! an event shaped as Elastic Defend writes it.
#![recursion_limit = "256"]

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::{Sensor, repo_root};
use execsentry::event::Event;
use execsentry::rules::{RuleSet, Unsupported, replay};
use serde_json::{Value, json};

fn syntax_dir() -> PathBuf {
    repo_root().join("tests/data/eql-syntax")
}

#[test]
fn rule_texts_in_elastic_syntax_load_and_pass_their_cases() {
    let set = RuleSet::load(&[syntax_dir()]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(set.len(), 12);
    assert!(set.skipped().is_empty());
    let outcomes = set.run_tests();
    assert!(outcomes.len() >= 30, "{}", outcomes.len());
    let failed: Vec<_> = outcomes.iter().filter(|o| !o.passed).collect();
    assert!(failed.is_empty(), "{failed:#?}");
    // Each rule has a case that fires and one that does not.
    for i in 0..set.len() {
        let id = set.rule_id(i).unwrap();
        let cases: Vec<_> = outcomes.iter().filter(|o| o.rule_id == id).collect();
        assert!(cases.len() >= 2, "{id}");
    }
}

#[test]
fn rules_check_summary_loads_the_whole_folder() {
    let out = Command::new(Sensor::binary())
        .args(["rules", "check", "--summary"])
        .arg(syntax_dir())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("loaded: 12 rules"), "{stdout}");
    assert!(stdout.contains("skipped: 0 files"), "{stdout}");
}

const HEAD: &str =
    "[rule]\nname = \"n\"\ndescription = \"d\"\ntype = \"eql\"\nlanguage = \"eql\"\n";

fn rule_file(id: &str, query: &str) -> (String, String) {
    (
        format!("{id}.toml"),
        format!("{HEAD}rule_id = \"{id}\"\nquery = '''\n{query}\n'''\n"),
    )
}

#[test]
fn skip_mode_loads_the_rest_and_says_why_for_each_file() {
    let files = vec![
        rule_file("good", "process where process.name == \"x\""),
        rule_file(
            "auditd",
            "process where auditd.data.syscall == \"prctl\" and process.name == \"x\"",
        ),
        rule_file("typo", "process where process.nmae == \"x\""),
        ("broken.toml".into(), "[rule\n".into()),
    ];
    let err = RuleSet::from_sources(&files).unwrap_err().to_string();
    assert!(
        err.contains(
            "auditd.toml:8:15: auditd.data.syscall is a field of Auditbeat's auditd events"
        ),
        "{err}"
    );
    assert!(err.contains("cannot match process events"), "{err}");
    assert!(err.contains("unknown field process.nmae"), "{err}");
    let set = RuleSet::from_sources_with(&files, Unsupported::Skip).unwrap();
    assert_eq!(set.len(), 1);
    let skipped: Vec<&str> = set.skipped().iter().map(|s| s.file.as_str()).collect();
    assert_eq!(skipped, ["auditd.toml", "typo.toml", "broken.toml"]);
    assert!(set.skipped()[1].reasons[0].starts_with("typo.toml:8:15: unknown field"));
    // Skipping everything leaves nothing to run: an error, not an idle sensor.
    let e = RuleSet::from_sources_with(&files[1..], Unsupported::Skip).unwrap_err();
    assert!(e.errors[0].contains("no rule loaded"), "{e}");
    // An optional field of another kind is null, as EQL defines.
    let opt = rule_file(
        "opt",
        "process where ?file.path == null and process.name == \"x\"",
    );
    assert!(RuleSet::from_sources(&[opt]).is_ok());
}

fn event() -> Event {
    let v = json!({
        "event": { "kind": "event", "category": ["process"], "type": ["start"], "action": "exec" },
        "host": { "os": { "type": "linux" } },
        "process": {
            "pid": 10, "name": "Kubectl", "executable": "/usr/local/bin/Kubectl",
            "args": ["Kubectl", "exec", "-it", "web-0", "--", "sh"], "args_count": 6,
            "command_line": "Kubectl exec -it web-0 -- sh",
            "user": { "id": "1000" }, "real_user": { "id": "1000" },
            "parent": { "pid": 9, "name": "bash", "executable": "/usr/bin/bash", "args": ["bash"], "command_line": "bash" },
            "env_vars": ["HTTPS_PROXY=socks5h://h:1"]
        },
        "user": { "id": "1000", "name": "alice" }
    });
    serde_json::from_value(v).unwrap()
}

fn holds(cond: &str) -> bool {
    let (name, text) = rule_file("t", &format!("process where {cond}"));
    let set = RuleSet::from_sources(&[(name, text)]).unwrap_or_else(|e| panic!("{cond}: {e}"));
    let mut out = Vec::new();
    set.evaluate(&event(), &mut out);
    !out.is_empty()
}

#[test]
fn every_operator_and_function() {
    let cases: &[(&str, bool)] = &[
        // `==` is case-sensitive; `:` folds case and takes wildcards.
        (r#"process.name == "Kubectl""#, true),
        (r#"process.name == "kubectl""#, false),
        (r#"process.name : "kubectl""#, true),
        (r#"process.name : "KUBE*""#, true),
        (r#"process.name : ("x", "*CTL")"#, true),
        (r#"process.name != "kubectl""#, true),
        // like / like~ / regex / regex~.
        (r#"process.name like "Kube*""#, true),
        (r#"process.name like "kube*""#, false),
        (r#"process.name like~ "kube?tl""#, true),
        (r#"process.name like~ ("a*", "b*")"#, false),
        (r#"process.name regex "K[a-z]+""#, true),
        (r#"process.name regex "k[a-z]+""#, false),
        (r#"process.name regex~ "k[a-z]+""#, true),
        (r#"process.name regex "ube""#, false),
        // in / in~ / not in / not in~.
        (r#"process.name in ("docker", "Kubectl")"#, true),
        (r#"process.name in ("kubectl")"#, false),
        (r#"process.name in~ ("KUBECTL")"#, true),
        (r#"process.name not in ("docker")"#, true),
        (r#"process.name not in~ ("kubectl")"#, false),
        // Multi-valued fields: any element.
        (r#"process.args == "exec""#, true),
        (r#"process.args : "WEB-*""#, true),
        (r#"process.args in ("run", "sh")"#, true),
        (r#"process.args != "exec""#, false),
        (r#"process.args[1] == "exec""#, true),
        (r#"process.args like~ "-IT""#, true),
        // Functions on literals.
        (r#"startsWith(process.executable, "/usr/local/")"#, true),
        (r#"startsWith~(process.executable, "/USR/")"#, true),
        (r#"startsWith(process.executable, "/USR/")"#, false),
        (r#"endsWith(process.executable, "/Kubectl")"#, true),
        (r#"endsWith~(process.executable, "/KUBECTL")"#, true),
        (r#"stringContains(process.command_line, "web-0")"#, true),
        (r#"stringContains~(process.command_line, "WEB-0")"#, true),
        ("length(process.args) == 6", true),
        ("length(process.name) > 7", false),
        ("process.args_count >= 6 and process.pid < 11", true),
        // Functions and comparisons with fields on either side.
        ("startsWith(process.command_line, process.name)", true),
        (
            "startsWith(process.executable, process.command_line)",
            false,
        ),
        ("endsWith(process.executable, process.name)", true),
        (r#"endsWith~("/x/KUBECTL", process.name)"#, true),
        (
            "stringContains(process.command_line, process.args[3])",
            true,
        ),
        ("process.args == process.name", true),
        ("process.user.id == process.real_user.id", true),
        ("process.user.id != process.real_user.id", false),
        ("process.parent.name in (process.args, \"zsh\")", false),
        // `?`: known fields read as usual, absent ones are null.
        (r#"?process.parent.name == "bash""#, true),
        ("?process.working_directory == null", true),
        (r#"?cloud.instance.id == "i-1""#, false),
        (r#"not ?cloud.instance.id == "i-1""#, true),
        ("?cloud.instance.id == null", true),
        ("?cloud.instance.id != null", false),
        // New ECS fields.
        (r#"user.name == "alice" and user.id == "1000""#, true),
        (r#"process.env_vars : "https_proxy=SOCKS5H://*""#, true),
        ("process.session_leader.name == null", true),
        // Comments in the middle of an expression.
        (
            "process.name : \"kubectl\" /* a block */ and // a line\n process.pid == 10",
            true,
        ),
    ];
    let wrong: Vec<_> = cases
        .iter()
        .filter(|(c, want)| holds(c) != *want)
        .map(|(c, want)| format!("{c} should be {want}"))
        .collect();
    assert!(wrong.is_empty(), "{wrong:#?}");
}

/// An exec event as Elastic Defend writes it, from the fields its
/// documentation lists (ECS process fieldset plus Defend's `Ext`), with
/// dotted and nested keys mixed, values of types this sensor does not
/// model, and fields it does not know at all.
fn defend_event() -> Value {
    json!({
        "@timestamp": "2026-11-30T08:15:02.311Z",
        "agent": { "type": "endpoint", "version": "8.15.0", "id": "a1b2" },
        "data_stream": { "dataset": "endpoint.events.process", "namespace": "default", "type": "logs" },
        "ecs": { "version": "8.10.0" },
        "elastic": { "agent": { "id": "a1b2" } },
        "event.action": "exec",
        "event.category": ["process"],
        "event.type": ["start"],
        "event.kind": "event",
        "event.dataset": "endpoint.events.process",
        "event.module": "endpoint",
        "event.created": "2026-11-30T08:15:02.311Z",
        "event.id": "NhCfL3b1vIU5iS8B+++++9Mk",
        "host": {
            "hostname": "node-3", "name": "node-3", "id": "9a3f",
            "os": { "type": "linux", "family": "debian", "kernel": "6.1.0-28-amd64", "name": "Linux", "platform": "debian", "version": "12" },
            "architecture": "x86_64", "ip": ["10.0.0.3"], "mac": ["00-16-3e-00-00-01"]
        },
        "process": {
            "entity_id": "ZTBhZjRiNjctY2Y3NC00YjBj",
            "pid": 30877,
            "name": "kubectl",
            "executable": "/usr/local/bin/kubectl",
            "args": ["kubectl", "exec", "-it", "web-0", "--", "sh"],
            "args_count": 6,
            "command_line": "kubectl exec -it web-0 -- sh",
            "working_directory": "/root",
            "interactive": true,
            "start": "2026-11-30T08:15:02.301Z",
            "hash": { "md5": "d41d8cd98f00b204e9800998ecf8427e", "sha256": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" },
            "tty": { "char_device": { "major": 136, "minor": 0 }, "columns": 120, "rows": 40 },
            "user": { "id": 0, "name": "root" },
            "group": { "id": 0, "name": "root" },
            "real_user": { "id": 0, "name": "root" },
            "real_group": { "id": 0, "name": "root" },
            "saved_user": { "id": 0 },
            "supplemental_groups": [{ "id": 0, "name": "root" }],
            "env_vars": ["HTTPS_PROXY=socks5h://10.9.9.9:1080"],
            "parent": {
                "entity_id": "NjZmYzQ2ZGQtZjA0OC00", "pid": 30841, "name": "bash",
                "executable": "/usr/bin/bash", "args": ["-bash"], "args_count": 1,
                "command_line": "-bash", "interactive": true, "working_directory": "/root",
                "user": { "id": "0", "name": "root" }, "group": { "id": "0" },
                "start": "2026-11-30T08:01:00.000Z"
            },
            "entry_leader": {
                "entity_id": "MzRmNmQyYjgtNzk1Yy00", "pid": 30800, "name": "bash",
                "executable": "/usr/bin/bash", "args": ["-bash"], "interactive": true,
                "same_as_process": false,
                "entry_meta": { "type": "sshd", "source": { "ip": "10.0.0.77" } },
                "parent": { "entity_id": "x", "pid": 30799 }
            },
            "session_leader": { "entity_id": "MzRm", "pid": 30800, "name": "bash", "executable": "/usr/bin/bash", "same_as_process": false },
            "group_leader": { "entity_id": "ZTBh", "pid": 30877, "name": "kubectl", "same_as_process": true },
            "previous": [{ "executable": "/usr/bin/bash", "args": ["bash"] }],
            "Ext": { "ancestry": ["NjZm", "MzRm"], "authentication_id": "0" }
        },
        "user": { "id": "0", "name": "root", "Ext": { "real": { "id": "0", "name": "root" } } },
        "group": { "id": "0", "name": "root", "Ext": { "real": { "id": "0", "name": "root" } } },
        "message": "Endpoint process event"
    })
}

#[test]
fn replay_reads_an_elastic_defend_event_and_keeps_its_fields() {
    let rule = rule_file(
        "defend",
        concat!(
            "process where event.action == \"exec\" and process.name == \"kubectl\" and\n",
            "process.args == \"exec\" and process.entry_leader.entry_meta.type == \"sshd\" and\n",
            "process.entry_leader.same_as_process == false and process.session_leader.name == \"bash\" and\n",
            "process.parent.interactive == true and process.parent.args_count == 1 and\n",
            "user.Ext.real.id == \"0\" and process.user.id == \"0\" and process.real_group.id == \"0\" and\n",
            "process.env_vars like~ \"https_proxy=socks5h://*\" and ?process.Ext.authentication_id == null",
        ),
    );
    let set = RuleSet::from_sources(&[rule]).unwrap();
    let line = defend_event().to_string() + "\n";
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let stats = replay(&set, line.as_bytes(), &mut out, &mut err).unwrap();
    assert_eq!(stats.bad_lines, 0, "{}", String::from_utf8_lossy(&err));
    assert_eq!(stats.alerts, 1);
    let alert: Value = serde_json::from_slice(&out).unwrap();
    // The rule's fields are added…
    assert_eq!(alert["event"]["kind"], "alert");
    assert_eq!(alert["rule"]["id"], "defend");
    assert!(alert["message"].as_str().unwrap().contains("kubectl"));
    // …and everything of the input is kept, dotted keys as nested fields.
    assert_eq!(alert["event"]["module"], "endpoint");
    assert_eq!(alert["agent"]["type"], "endpoint");
    assert_eq!(alert["process"]["Ext"]["ancestry"][1], "MzRm");
    assert_eq!(alert["process"]["tty"]["columns"], 120);
    assert_eq!(
        alert["process"]["entry_leader"]["entry_meta"]["source"]["ip"],
        "10.0.0.77"
    );
    assert_eq!(
        alert["process"]["hash"]["md5"],
        "d41d8cd98f00b204e9800998ecf8427e"
    );
    assert_eq!(alert["host"]["os"]["kernel"], "6.1.0-28-amd64");
    assert_eq!(
        alert["process"]["user"]["id"], 0,
        "values are kept as given"
    );
}

#[test]
fn replay_errors_name_the_line() {
    let set =
        RuleSet::from_sources(&[rule_file("r", "process where process.name == \"x\"")]).unwrap();
    let input = "{\"process\": {\"name\": \"x\"}}\nnot json\n\n{\"event\": {\"kind\": \"event\"}}\n{\"process.name\": \"x\"}\n";
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let stats = replay(&set, input.as_bytes(), &mut out, &mut err).unwrap();
    let err = String::from_utf8(err).unwrap();
    assert_eq!(
        (stats.lines, stats.bad_lines, stats.alerts),
        (5, 2, 2),
        "{err}"
    );
    assert!(err.contains("line 2: not JSON"), "{err}");
    assert!(err.contains("line 4: no `process` object"), "{err}");
}
