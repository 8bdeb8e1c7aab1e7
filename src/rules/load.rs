//! Rule files: TOML text → compiled rule definitions, with every error as
//! `file:line:col: what`. Walks toml's spanned document tree by hand so that
//! each key, value and query character keeps its position.
//!
//! Keys: ours are checked strictly (a typo such as `thresold` is an error);
//! keys from Elastic's detection-rules schema are accepted and ignored so an
//! Elastic rule loads unchanged; any other key is an error too.

use toml::de::{DeTable, DeValue};

use super::compile::{Node, compile};
use super::parser::{parse_condition, parse_query};
use super::spans::{
    Src, V, check_keys, get, tables, value_offset, want_bool, want_num, want_str, want_table,
};
use super::testcase;
use crate::event::{Event, Threat};

/// Files larger than this are rejected before parsing.
pub const MAX_FILE_BYTES: usize = 1 << 20;

pub struct Score {
    pub when: Node,
    pub add: f64,
}

pub struct Exception {
    pub when: Node,
    pub reason: String,
}

pub struct TestCase {
    pub name: String,
    pub event: Event,
    pub expect: bool,
    pub score: Option<f64>,
    /// `file:line:col` of the case, for reports.
    pub at: String,
}

pub struct RuleDef {
    pub id: String,
    pub uuid: String,
    pub name: String,
    pub description: String,
    pub version: String,
    pub reference: Option<String>,
    pub severity: u8,
    pub risk_score: f64,
    pub threat: Option<Threat>,
    pub query: Node,
    pub scores: Vec<Score>,
    pub threshold: Option<f64>,
    pub exceptions: Vec<Exception>,
    pub tests: Vec<TestCase>,
    pub enabled: bool,
    /// `action = "deny"`: with `sensor.enforce`, a matching exec is refused
    /// at permission time (fanotify capture only).
    pub deny: bool,
}

/// What one file contributes, in file order.
pub enum Item {
    Rule(Box<RuleDef>, String),
    /// `[rule]` with `id` and no `query`: changes a rule loaded earlier.
    Override {
        id: String,
        at: String,
        enabled: Option<bool>,
        exceptions: Vec<Exception>,
    },
    /// Top-level `disable = [..]`.
    Disable(Vec<(String, String)>),
}

const OUR_KEYS: &[&str] = &[
    "id",
    "name",
    "description",
    "query",
    "severity",
    "risk_score",
    "rule_id",
    "references",
    "threat",
    "score",
    "threshold",
    "exception",
    "test",
    "enabled",
    "version",
    "type",
    "language",
    "action",
];

/// Elastic detection-rules `[rule]` keys that do not change what we match.
const ELASTIC_IGNORED: &[&str] = &[
    "actions",
    "alert_suppression",
    "anomaly_threshold",
    "author",
    "building_block_type",
    "concurrent_searches",
    "data_view_id",
    "event_category_override",
    "exceptions_list",
    "false_positives",
    "filters",
    "from",
    "history_window_start",
    "index",
    "interval",
    "investigation_fields",
    "items_per_search",
    "license",
    "machine_learning_job_id",
    "max_signals",
    "meta",
    "namespace",
    "new_terms_fields",
    "note",
    "output_index",
    "related_integrations",
    "required_fields",
    "response_actions",
    "risk_score_mapping",
    "rule_name_override",
    "saved_id",
    "setup",
    "severity_mapping",
    "tags",
    "threat_filters",
    "threat_index",
    "threat_indicator_path",
    "threat_language",
    "threat_mapping",
    "threat_query",
    "throttle",
    "tiebreaker_field",
    "timeline_id",
    "timeline_title",
    "timestamp_field",
    "timestamp_override",
    "to",
];

/// Compiles a query (`full`) or a `when` condition held in TOML value `v`.
fn condition(src: Src, v: &V, what: &str, full: bool) -> Result<Node, String> {
    let q = want_str(src, v, what)?;
    let parsed = if full {
        parse_query(&q)
    } else {
        parse_condition(&q)
    };
    parsed
        .and_then(|e| compile(&e))
        .map_err(|e| src.err(value_offset(src.text, v.span(), e.pos), e.msg))
}

fn severity_num(src: Src, v: &V) -> Result<u8, String> {
    let s = want_str(src, v, "severity")?;
    match s.to_ascii_lowercase().as_str() {
        "low" => Ok(21),
        "medium" => Ok(47),
        "high" => Ok(73),
        "critical" => Ok(99),
        _ => Err(src.err(
            v.span().start,
            "severity must be low, medium, high or critical",
        )),
    }
}

fn exceptions(src: Src, v: &V, errs: &mut Vec<String>) -> Vec<Exception> {
    let mut out = Vec::new();
    match tables(src, v, "rule.exception") {
        Err(e) => errs.push(e),
        Ok(ts) => {
            for (t, at) in ts {
                check_keys(src, t, "[[rule.exception]]", &["when", "reason"], &[], errs);
                let when =
                    get(t, "when").ok_or_else(|| src.err(at, "[[rule.exception]] needs `when`"));
                let reason = get(t, "reason")
                    .ok_or_else(|| src.err(at, "[[rule.exception]] needs `reason`"));
                match (
                    when.and_then(|w| condition(src, w, "when", false)),
                    reason.and_then(|r| want_str(src, r, "reason")),
                ) {
                    (Ok(when), Ok(reason)) => out.push(Exception { when, reason }),
                    (a, b) => errs.extend(a.err().into_iter().chain(b.err())),
                }
            }
        }
    }
    out
}

fn threat(src: Src, v: &V, errs: &mut Vec<String>) -> Option<Threat> {
    let mut th = Threat::default();
    let push = |refs: &mut crate::event::ThreatRefs, t: &DeTable, errs: &mut Vec<String>| {
        let field = |k: &str| get(t, k).map(|x| want_str(src, x, k));
        match (field("id"), field("name")) {
            (Some(Ok(id)), Some(Ok(name))) if !refs.id.contains(&id) => {
                refs.id.push(id);
                refs.name.push(name);
                if let Some(Ok(r)) = field("reference") {
                    refs.reference.push(r);
                }
            }
            (Some(Err(e)), _) | (_, Some(Err(e))) => errs.push(e),
            _ => {}
        }
    };
    for (t, _) in tables(src, v, "rule.threat")
        .map_err(|e| errs.push(e))
        .ok()?
    {
        check_keys(
            src,
            t,
            "[[rule.threat]]",
            &["framework", "technique", "tactic"],
            &[],
            errs,
        );
        if th.framework.is_empty() {
            th.framework = get(t, "framework")
                .and_then(|f| f.get_ref().as_str())
                .unwrap_or("MITRE ATT&CK")
                .to_string();
        }
        if let Some(tech) = get(t, "technique") {
            for (x, _) in tables(src, tech, "rule.threat.technique")
                .map_err(|e| errs.push(e))
                .ok()?
            {
                push(&mut th.technique, x, errs);
            }
        }
        if let Some(tac) = get(t, "tactic") {
            match want_table(src, tac, "rule.threat.tactic") {
                Ok(x) => push(&mut th.tactic, x, errs),
                Err(e) => errs.push(e),
            }
        }
    }
    Some(th)
}

/// Parses one rule file into its items, or every error found in it.
pub fn parse_file(name: &str, text: &str) -> Result<Vec<Item>, Vec<String>> {
    let src = Src { name, text };
    if text.len() > MAX_FILE_BYTES {
        return Err(vec![format!(
            "{name}:1:1: file is larger than {MAX_FILE_BYTES} bytes"
        )]);
    }
    let doc = DeTable::parse(text)
        .map_err(|e| vec![src.err(e.span().map_or(0, |s| s.start), e.message().trim())])?;
    let doc = doc.get_ref();
    let mut errs = Vec::new();
    let mut items = Vec::new();
    check_keys(
        src,
        doc,
        "the file",
        &["metadata", "rule", "disable"],
        &["transform"],
        &mut errs,
    );
    if let Some(d) = get(doc, "disable") {
        match d.get_ref().as_array() {
            Some(a) => {
                let ids = a
                    .iter()
                    .filter_map(|x| {
                        want_str(src, x, "disable entries")
                            .map_err(|e| errs.push(e))
                            .ok()
                            .map(|s| (s, src.loc(x.span().start)))
                    })
                    .collect();
                items.push(Item::Disable(ids));
            }
            None => errs.push(src.err(d.span().start, "disable must be an array of rule ids")),
        }
    }
    if let Some(r) = get(doc, "rule") {
        match want_table(src, r, "rule") {
            Ok(t) if get(t, "query").is_none() => {
                override_item(src, t, r.span().start, &mut items, &mut errs)
            }
            Ok(t) => {
                if let Some(def) = rule(src, t, r.span().start, &mut errs) {
                    items.push(Item::Rule(Box::new(def), src.loc(r.span().start)));
                }
            }
            Err(e) => errs.push(e),
        }
    }
    if errs.is_empty() {
        Ok(items)
    } else {
        Err(errs)
    }
}

fn override_item(src: Src, t: &DeTable, at: usize, items: &mut Vec<Item>, errs: &mut Vec<String>) {
    let Some(idv) = get(t, "id") else {
        errs.push(src.err(
            at,
            "[rule] needs a `query` (or an `id` to change a rule loaded earlier)",
        ));
        return;
    };
    for (k, _) in t.iter() {
        if !["id", "enabled", "exception"].contains(&k.get_ref().as_ref()) {
            errs.push(src.err(k.span().start, format!(
                "`{}` cannot be set here: a [rule] without `query` changes a rule loaded earlier and may only set `enabled` and [[rule.exception]]",
                k.get_ref()
            )));
        }
    }
    let id = want_str(src, idv, "id")
        .map_err(|e| errs.push(e))
        .unwrap_or_default();
    let enabled =
        get(t, "enabled").and_then(|v| want_bool(src, v, "enabled").map_err(|e| errs.push(e)).ok());
    let exceptions = get(t, "exception")
        .map(|v| exceptions(src, v, errs))
        .unwrap_or_default();
    items.push(Item::Override {
        id,
        at: src.loc(idv.span().start),
        enabled,
        exceptions,
    });
}

fn rule(src: Src, t: &DeTable, at: usize, errs: &mut Vec<String>) -> Option<RuleDef> {
    let n0 = errs.len();
    check_keys(src, t, "[rule]", OUR_KEYS, ELASTIC_IGNORED, errs);
    for k in ["type", "language"] {
        if let Some(v) = get(t, k).filter(|v| v.get_ref().as_str() != Some("eql")) {
            errs.push(src.err(
                v.span().start,
                format!("{k} must be \"eql\": only EQL rules are supported"),
            ));
        }
    }
    let mut s =
        |k: &str| get(t, k).and_then(|v| want_str(src, v, k).map_err(|e| errs.push(e)).ok());
    let name = s("name");
    let rule_id = s("rule_id");
    let id = s("id").or_else(|| rule_id.clone());
    let description = s("description").unwrap_or_default();
    let action = get(t, "action").map(|v| (v.span().start, want_str(src, v, "action")));
    let deny = match action {
        None => false,
        Some((_, Ok(a))) if a == "alert" => false,
        Some((_, Ok(a))) if a == "deny" => true,
        Some((pos, Ok(a))) => {
            errs.push(src.err(
                pos,
                format!("action must be \"alert\" or \"deny\", not \"{a}\""),
            ));
            false
        }
        Some((_, Err(e))) => {
            errs.push(e);
            false
        }
    };
    let reference = get(t, "references")
        .and_then(|v| v.get_ref().as_array())
        .and_then(|a| {
            a.iter()
                .find_map(|x| x.get_ref().as_str().map(str::to_string))
        });
    if name.is_none() {
        errs.push(src.err(at, "[rule] needs `name`"));
    }
    if id.is_none() {
        errs.push(src.err(at, "[rule] needs `id` (or Elastic's `rule_id`)"));
    }
    let severity = match get(t, "severity") {
        Some(v) => severity_num(src, v).map_err(|e| errs.push(e)).unwrap_or(47),
        None => 47,
    };
    let risk_score = get(t, "risk_score")
        .and_then(|v| {
            want_num(src, v, "risk_score")
                .map_err(|e| errs.push(e))
                .ok()
        })
        .unwrap_or(f64::from(severity));
    let version = match get(t, "version") {
        Some(v) => match v.get_ref() {
            DeValue::Integer(i) => i.as_str().to_string(),
            DeValue::String(s) => s.to_string(),
            _ => {
                errs.push(src.err(v.span().start, "version must be a number or a string"));
                String::new()
            }
        },
        None => "1".into(),
    };
    let enabled = get(t, "enabled")
        .and_then(|v| want_bool(src, v, "enabled").map_err(|e| errs.push(e)).ok())
        .unwrap_or(true);
    let query = get(t, "query").and_then(|v| {
        condition(src, v, "query", true)
            .map_err(|e| errs.push(e))
            .ok()
    });
    let threat = get(t, "threat").and_then(|v| threat(src, v, errs));
    let threshold = match get(t, "threshold") {
        Some(v) if v.get_ref().is_table() => {
            errs.push(src.err(
                v.span().start,
                "rule.threshold must be a number (Elastic threshold rules are not supported)",
            ));
            None
        }
        Some(v) => want_num(src, v, "threshold").map_err(|e| errs.push(e)).ok(),
        None => None,
    };
    let mut scores = Vec::new();
    let has_scores = get(t, "score").is_some();
    if let Some(v) = get(t, "score") {
        match tables(src, v, "rule.score") {
            Err(e) => errs.push(e),
            Ok(ts) => {
                for (st, sat) in ts {
                    check_keys(
                        src,
                        st,
                        "[[rule.score]]",
                        &["when", "add", "name"],
                        &[],
                        errs,
                    );
                    let when = get(st, "when")
                        .ok_or_else(|| src.err(sat, "[[rule.score]] needs `when`"))
                        .and_then(|w| condition(src, w, "when", false));
                    let add = get(st, "add")
                        .ok_or_else(|| src.err(sat, "[[rule.score]] needs `add`"))
                        .and_then(|a| want_num(src, a, "add"));
                    match (when, add) {
                        (Ok(when), Ok(add)) => scores.push(Score { when, add }),
                        (a, b) => errs.extend(a.err().into_iter().chain(b.err())),
                    }
                }
            }
        }
    }
    match (has_scores, get(t, "threshold").is_some()) {
        (true, false) => errs.push(src.err(at, "[[rule.score]] needs `threshold` in [rule]")),
        (false, true) => errs.push(src.err(at, "`threshold` needs at least one [[rule.score]]")),
        _ => {}
    }
    let exceptions = get(t, "exception")
        .map(|v| exceptions(src, v, errs))
        .unwrap_or_default();
    let mut tests = Vec::new();
    if let Some(v) = get(t, "test") {
        match tables(src, v, "rule.test") {
            Err(e) => errs.push(e),
            Ok(ts) => {
                for (i, (tt, tat)) in ts.into_iter().enumerate() {
                    match testcase::parse(src, tt, tat, i) {
                        Ok(c) => tests.push(c),
                        Err(e) => errs.push(e),
                    }
                }
            }
        }
    }
    if errs.len() > n0 {
        return None;
    }
    let id = id?;
    Some(RuleDef {
        uuid: rule_id.unwrap_or_else(|| id.clone()),
        id,
        name: name?,
        description,
        version,
        reference,
        severity,
        risk_score,
        threat: threat.filter(|t| !t.technique.id.is_empty()),
        query: query?,
        scores,
        threshold,
        exceptions,
        tests,
        enabled,
        deny,
    })
}
