//! Reading the sensor's ECS events in tests, and starting it the usual way.

use std::time::Duration;

use serde_json::Value;

use super::{Sensor, json_path, json_str, rules_dir};

/// `execsentry run --output stdout --events --capture <capture>` with the
/// shipped rules, once it said it is ready; `extra` goes before `--rules`.
pub fn sensor(capture: &str, extra: &[&str]) -> Sensor {
    let rules = rules_dir();
    let mut args = vec![
        "run",
        "--output",
        "stdout",
        "--events",
        "--capture",
        capture,
    ];
    args.extend_from_slice(extra);
    args.extend(["--rules", rules.to_str().unwrap()]);
    let mut s = Sensor::spawn(&args);
    s.wait_ready(Duration::from_secs(10));
    s
}

/// `process.args` as strings (escaped arguments stay escaped).
pub fn args_of(v: &Value) -> Vec<String> {
    strings_at(v, "process.args")
}

/// The string elements of the array at `path`; empty when there is none.
pub fn strings_at(v: &Value, path: &str) -> Vec<String> {
    json_path(v, path)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// Argument `i` as bytes, undoing the documented `\xNN`/`\\` escaping of
/// the indexes listed in `execsentry.args_escaped`.
pub fn arg_bytes(v: &Value, i: usize) -> Vec<u8> {
    let text = args_of(v)[i].clone();
    let escaped = json_path(v, "execsentry.args_escaped")
        .and_then(Value::as_array)
        .is_some_and(|a| a.iter().any(|x| x.as_u64() == Some(i as u64)));
    if escaped {
        execsentry::bytes::unescape(&text)
    } else {
        text.into_bytes()
    }
}

/// An event of `kind` ("event" or "alert") with `marker` among its args.
pub fn has_arg_of_kind(v: &Value, kind: &str, marker: &str) -> bool {
    json_str(v, "event.kind") == Some(kind) && args_of(v).iter().any(|a| a == marker)
}

/// A plain exec event with `marker` among its args.
pub fn is_exec_with_arg(v: &Value, marker: &str) -> bool {
    has_arg_of_kind(v, "event", marker)
}
