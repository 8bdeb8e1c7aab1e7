//! `[[rule.test]]` cases: a compact inline event merged onto a default exec
//! event, and the expected verdict and score.
//!
//! ```toml
//! [[rule.test]]
//! name = "kubectl exec into a pod from a container"
//! event = { process = { args = ["kubectl", "exec", "-it", "web-0", "--", "sh"] }, container = {} }
//! expect = true
//! score = 75            # optional; only for rules with [[rule.score]]
//! ```
//! The default event is a Linux `exec` start by root, parent `/usr/bin/bash`.
//! Derived when not given: `process.command_line` and `args_count` from
//! `args`; `executable` from `args[0]` (or `/usr/bin/<name>`); `name` from
//! the executable's base name; the same for `process.parent`. Giving
//! `container` (even `{}`) puts the process in a container: id and runtime
//! get defaults and `process.entry_leader.entry_meta.type` becomes
//! `"container"`, as the sensor's enrichment sets it.

use serde_json::{Map, Value, json};
use toml::de::{DeTable, DeValue};

use super::load::TestCase;
use super::spans::Src;

fn to_json(v: &DeValue) -> Value {
    match v {
        DeValue::String(s) => Value::String(s.to_string()),
        DeValue::Integer(i) => i
            .as_str()
            .replace('_', "")
            .parse::<i64>()
            .map_or(Value::Null, Value::from),
        DeValue::Float(f) => f
            .as_str()
            .replace('_', "")
            .parse::<f64>()
            .map_or(Value::Null, Value::from),
        DeValue::Boolean(b) => Value::Bool(*b),
        DeValue::Datetime(d) => Value::String(d.to_string()),
        DeValue::Array(a) => Value::Array(a.iter().map(|x| to_json(x.get_ref())).collect()),
        DeValue::Table(t) => Value::Object(
            t.iter()
                .map(|(k, v)| (k.get_ref().to_string(), to_json(v.get_ref())))
                .collect(),
        ),
    }
}

fn merge(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                merge(b.entry(k).or_insert(Value::Null), v);
            }
        }
        (b, o) => *b = o,
    }
}

fn basename(p: &str) -> &str {
    p.rsplit('/').next().unwrap_or(p)
}

/// Fills `command_line`, `args_count`, `executable` and `name` of a process
/// (or parent) object from what the test gave.
fn derive(p: &mut Map<String, Value>, count: bool) {
    let args: Vec<String> = p
        .get("args")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    if !p.contains_key("command_line") && !args.is_empty() {
        p.insert(
            "command_line".into(),
            Value::String(crate::bytes::command_line(&args)),
        );
    }
    if count && !p.contains_key("args_count") {
        p.insert("args_count".into(), json!(args.len()));
    }
    let name = p.get("name").and_then(Value::as_str).map(str::to_string);
    if !p.contains_key("executable") {
        let exe = match (args.first(), &name) {
            (Some(a0), _) if a0.contains('/') => a0.clone(),
            (Some(a0), None) => format!("/usr/bin/{a0}"),
            (_, Some(n)) => format!("/usr/bin/{n}"),
            (None, None) => String::new(),
        };
        p.insert("executable".into(), Value::String(exe));
    }
    if name.is_none() {
        let exe = p.get("executable").and_then(Value::as_str).unwrap_or("");
        let n = basename(exe).to_string();
        p.insert("name".into(), Value::String(n));
    }
}

/// Builds the full event for a test case from its inline `event` table.
pub fn build_event(given: Value) -> Result<crate::event::Event, String> {
    let mut ev = json!({
        "@timestamp": "2025-01-01T00:00:00.000Z",
        "event": { "kind": "event", "category": ["process"], "type": ["start"], "action": "exec", "id": "test", "sequence": 0 },
        "host": { "hostname": "test-host", "os": { "type": "linux" } },
        "process": { "pid": 4242, "entity_id": "test", "name": "", "user": { "id": "0" }, "group": { "id": "0" } },
        "execsentry": { "args_complete": true, "args_source": "proc" }
    });
    let has_parent = given.pointer("/process/parent").is_some();
    let has_user = given.get("user").is_some();
    let has_leader = given.pointer("/process/entry_leader").is_some();
    let in_container = given.get("container").is_some();
    merge(&mut ev, given);
    let Some(proc_) = ev.get_mut("process").and_then(Value::as_object_mut) else {
        return Err("event.process must be a table".into());
    };
    if proc_.get("name").and_then(Value::as_str) == Some("") {
        proc_.remove("name");
    }
    derive(proc_, true);
    if !has_parent {
        proc_.insert("parent".into(), json!({ "pid": 1000, "name": "bash", "executable": "/usr/bin/bash", "args": ["bash"], "command_line": "bash" }));
    } else if let Some(p) = proc_.get_mut("parent").and_then(Value::as_object_mut) {
        p.entry("pid").or_insert(json!(1000));
        derive(p, false);
    }
    if !has_user {
        // ECS top-level user: the process's effective user, as enrichment
        // writes it.
        let uid = proc_
            .get("user")
            .and_then(|u| u.get("id"))
            .cloned()
            .unwrap_or(json!("0"));
        let gid = proc_
            .get("group")
            .and_then(|u| u.get("id"))
            .cloned()
            .unwrap_or(json!("0"));
        ev["user"] = json!({ "id": uid });
        ev["group"] = json!({ "id": gid });
    }
    let proc_ = ev
        .get_mut("process")
        .and_then(Value::as_object_mut)
        .ok_or("event.process must be a table")?;
    if in_container && !has_leader {
        proc_.insert(
            "entry_leader".into(),
            json!({ "entry_meta": { "type": "container" } }),
        );
    }
    // The event model reads leniently (replay takes anyone's ECS); a test
    // event is ours, so a field the model lacks is a typo to report.
    let mut unknown = Vec::new();
    let ev: crate::event::Event =
        serde_ignored::deserialize(ev, |path| unknown.push(path.to_string()))
            .map_err(|e| format!("invalid test event: {e}"))?;
    if let Some(u) = unknown.first() {
        return Err(format!("invalid test event: unknown field `{u}`"));
    }
    Ok(ev)
}

pub fn parse(src: Src, t: &DeTable, at: usize, index: usize) -> Result<TestCase, String> {
    for (k, _) in t.iter() {
        if !["name", "event", "expect", "score"].contains(&k.get_ref().as_ref()) {
            return Err(src.err(
                k.span().start,
                format!(
                    "unknown key `{}` in [[rule.test]] (name, event, expect, score)",
                    k.get_ref()
                ),
            ));
        }
    }
    let name = match t.get("name") {
        Some(v) => v
            .get_ref()
            .as_str()
            .ok_or_else(|| src.err(v.span().start, "name must be a string"))?
            .to_string(),
        None => format!("case {}", index + 1),
    };
    let ev = t
        .get("event")
        .ok_or_else(|| src.err(at, "[[rule.test]] needs `event`"))?;
    let DeValue::Table(et) = ev.get_ref() else {
        return Err(src.err(ev.span().start, "event must be a table"));
    };
    let mut given = to_json(&DeValue::Table(et.clone()));
    // Keep the test's container fields over the defaults merged later.
    if let Some(c) = given.get_mut("container").and_then(Value::as_object_mut) {
        c.entry("id").or_insert(json!(
            "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0"
        ));
        c.entry("runtime").or_insert(json!("docker"));
    }
    let event = build_event(given).map_err(|e| src.err(ev.span().start, e))?;
    let expect = match t.get("expect") {
        Some(v) => v
            .get_ref()
            .as_bool()
            .ok_or_else(|| src.err(v.span().start, "expect must be true or false"))?,
        None => return Err(src.err(at, "[[rule.test]] needs `expect = true|false`")),
    };
    let score = match t.get("score") {
        Some(v) => Some(match to_json(v.get_ref()).as_f64() {
            Some(x) => x,
            None => return Err(src.err(v.span().start, "score must be a number")),
        }),
        None => None,
    };
    Ok(TestCase {
        name,
        event,
        expect,
        score,
        at: src.loc(at),
    })
}
