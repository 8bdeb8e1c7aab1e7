//! `execsentry replay`: ECS process events as JSON lines in, alerts out.
//!
//! Input from any producer is accepted (Elastic Defend, Auditbeat, another
//! execsentry version): keys may be dotted (`"process.name": …`) or nested
//! objects, or both; fields the event model does not know are kept, and
//! every field is optional except the `process` object itself. An alert is
//! the input event as given, plus the rule's fields (`event.kind`,
//! `event.severity`, `event.risk_score`, `rule`, `threat`, `message`).

use std::io::{self, BufRead, Write};

use serde_json::{Map, Value};

use super::RuleSet;
use crate::event::Event;

/// Counts from [`replay`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplayStats {
    pub lines: u64,
    pub bad_lines: u64,
    pub alerts: u64,
}

/// Nesting limit for input objects, so a hostile line cannot recurse deep.
const MAX_DEPTH: usize = 64;

/// Rewrites dotted keys into nested objects, merging with objects already
/// there (`{"process.name": "x", "process": {"pid": 1}}` is one process).
fn nest(v: Value, depth: usize) -> Result<Value, String> {
    if depth > MAX_DEPTH {
        return Err(format!("nested deeper than {MAX_DEPTH} levels"));
    }
    let Value::Object(m) = v else {
        return Ok(v);
    };
    let mut out = Map::new();
    for (k, v) in m {
        let v = nest(v, depth + 1)?;
        let mut parts = k.split('.').collect::<Vec<_>>();
        if parts.iter().any(|p| p.is_empty()) {
            // `.` alone or `a..b` is not a path: keep the key as it is.
            parts = vec![k.as_str()];
        }
        insert(&mut out, &parts, v, &k)?;
    }
    Ok(Value::Object(out))
}

fn insert(m: &mut Map<String, Value>, path: &[&str], v: Value, key: &str) -> Result<(), String> {
    let (first, rest) = path.split_first().expect("split gives one part at least");
    if rest.is_empty() {
        return match (m.get_mut(*first), v) {
            (Some(Value::Object(have)), Value::Object(new)) => {
                for (k, v) in new {
                    insert(have, &[k.as_str()], v, key)?;
                }
                Ok(())
            }
            (Some(_), _) => Err(format!("`{key}` is given twice")),
            (None, v) => {
                m.insert((*first).to_string(), v);
                Ok(())
            }
        };
    }
    let slot = m
        .entry((*first).to_string())
        .or_insert_with(|| Value::Object(Map::new()));
    match slot {
        Value::Object(inner) => insert(inner, rest, v, key),
        _ => Err(format!(
            "`{key}` conflicts with `{first}`, which is not an object"
        )),
    }
}

/// One input line: the event for the rules and the document to print.
fn read_line(line: &[u8]) -> Result<(Event, Value), String> {
    let v: Value = serde_json::from_slice(line).map_err(|e| format!("not JSON: {e}"))?;
    if !v.is_object() {
        return Err("not a JSON object".into());
    }
    let doc = nest(v, 0)?;
    if !doc.get("process").is_some_and(Value::is_object) {
        return Err("no `process` object: not an ECS process event".into());
    }
    let ev = Event::deserialize_from(&doc).map_err(|e| format!("invalid ECS event: {e}"))?;
    Ok((ev, doc))
}

impl Event {
    fn deserialize_from(doc: &Value) -> Result<Event, serde_json::Error> {
        serde::Deserialize::deserialize(doc)
    }
}

/// The rule's fields of `alert`, laid over the input document `doc`.
fn alert_doc(doc: &Value, alert: &Event) -> Value {
    let mut out = doc.clone();
    let a = serde_json::to_value(alert).unwrap_or(Value::Null);
    let (Some(o), Some(a)) = (out.as_object_mut(), a.as_object()) else {
        return out;
    };
    for k in ["rule", "threat", "message"] {
        if let Some(v) = a.get(k) {
            o.insert(k.to_string(), v.clone());
        }
    }
    let ev = o
        .entry("event")
        .or_insert_with(|| Value::Object(Map::new()));
    if !ev.is_object() {
        *ev = Value::Object(Map::new());
    }
    if let (Some(ev), Some(ae)) = (ev.as_object_mut(), a.get("event")) {
        for k in ["kind", "severity", "risk_score"] {
            if let Some(v) = ae.get(k) {
                ev.insert(k.to_string(), v.clone());
            }
        }
    }
    out
}

/// Reads events as JSON lines and writes an alert line for every match. A
/// line that cannot be read is reported to `err` as `line N: message` and
/// skipped; blank lines are ignored, and events that already are alerts (a
/// `run --events` capture) are passed over so they do not alert twice.
pub fn replay(
    rules: &RuleSet,
    mut input: impl BufRead,
    mut out: impl Write,
    mut err: impl Write,
) -> io::Result<ReplayStats> {
    let mut stats = ReplayStats::default();
    let mut line = Vec::new();
    let mut matches = Vec::new();
    loop {
        line.clear();
        if input.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        stats.lines += 1;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let (ev, doc) = match read_line(&line) {
            Ok(x) => x,
            Err(e) => {
                stats.bad_lines += 1;
                writeln!(err, "line {}: {e}", stats.lines)?;
                continue;
            }
        };
        if ev.is_alert() {
            continue;
        }
        matches.clear();
        rules.evaluate(&ev, &mut matches);
        for m in &matches {
            serde_json::to_writer(&mut out, &alert_doc(&doc, &rules.alert(&ev, m)))?;
            out.write_all(b"\n")?;
            stats.alerts += 1;
        }
    }
    out.flush()?;
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn dotted_and_nested_keys_merge() {
        let v = nest(
            json!({"process.name": "x", "process": {"pid": 1, "parent.name": "sh"}, "a.b.c": 1}),
            0,
        )
        .unwrap();
        assert_eq!(
            v,
            json!({"process": {"name": "x", "pid": 1, "parent": {"name": "sh"}}, "a": {"b": {"c": 1}}})
        );
        assert!(nest(json!({"process": 1, "process.name": "x"}), 0).is_err());
        assert!(nest(json!({"process.name": "x", "process": {"name": "y"}}), 0).is_err());
        let mut deep = json!(1);
        for _ in 0..100 {
            deep = json!({ "a": deep });
        }
        assert!(nest(deep, 0).is_err());
    }

    #[test]
    fn lines_without_process_or_json_are_errors() {
        assert!(read_line(b"nope").unwrap_err().starts_with("not JSON"));
        assert_eq!(read_line(b"[1]").unwrap_err(), "not a JSON object");
        assert!(
            read_line(br#"{"event": {"kind": "event"}}"#)
                .unwrap_err()
                .contains("no `process`")
        );
        let (ev, _) = read_line(br#"{"process.name": "ls", "user": {"id": 0}}"#).unwrap();
        assert_eq!(ev.process.name, "ls");
        assert_eq!(ev.user.unwrap().id, "0");
    }
}
