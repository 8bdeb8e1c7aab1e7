//! The rule engine: loads rule files, compiles their EQL once, evaluates
//! every exec event against the set, builds alerts, runs the rules' own test
//! cases and replays JSON-lines event files. Pure: no I/O except reading the
//! rule files in [`RuleSet::load`] and the streams given to [`replay`].
//!
//! # Layering of rule files (shipped rules, then `/etc/execsentry/rules.d`)
//! Files load in the order given; a directory contributes its `*.toml` files
//! sorted by file name. Each file holds at most one `[rule]` and may also say:
//! - a new rule: `[rule]` with a `query` (Elastic detection-rules format plus
//!   our `id`, `[[rule.score]]`, `threshold`, `[[rule.exception]]`,
//!   `[[rule.test]]`). Its `id` (default: Elastic's `rule_id`) must be new.
//! - a change to a rule loaded earlier: `[rule]` with `id` and no `query`,
//!   setting `enabled = false` and/or adding `[[rule.exception]]` tables
//!   (`when`, `reason`). Nothing else may be set there.
//! - `disable = ["id", …]` at the top level: turns those rules off.
//!
//! Naming a rule id that was not loaded before is an error (a typo would
//! otherwise silently leave the rule on), as is a duplicate id.

mod alert;
mod compile;
mod eval;
mod fields;
mod lexer;
mod load;
mod matchers;
mod parser;
mod replay;
mod spans;
mod testcase;

use std::collections::HashMap;
use std::path::PathBuf;

pub use fields::FIELDS;
pub use replay::{ReplayStats, replay};

use crate::event::Event;
use load::{Item, RuleDef};

/// A query error at a byte offset of the query text (mapped to a file
/// position by the loader).
#[derive(Debug, Clone, PartialEq)]
pub struct QueryError {
    pub pos: usize,
    pub msg: String,
}

impl QueryError {
    fn new(pos: usize, msg: impl Into<String>) -> QueryError {
        QueryError {
            pos,
            msg: msg.into(),
        }
    }
}

/// `sensor.unsupported_rules`: what a rule file that cannot be loaded does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Unsupported {
    /// The whole set fails to load (the sensor does not start).
    #[default]
    Error,
    /// The file is left out, with its reason kept in [`RuleSet::skipped`].
    Skip,
}

/// A rule file left out under [`Unsupported::Skip`].
#[derive(Debug, Clone, PartialEq)]
pub struct Skipped {
    pub file: String,
    /// Every error of the file, each `file:line:col: what`.
    pub reasons: Vec<String>,
}

/// A loaded and compiled set of (enabled) rules.
#[derive(Default)]
pub struct RuleSet {
    rules: Vec<RuleDef>,
    skipped: Vec<Skipped>,
    /// Rules that require one of a fixed set of process names, by folded name.
    by_name: HashMap<String, Vec<usize>>,
    /// Rules that any event may match.
    always: Vec<usize>,
}

/// One rule that matched an event. `score` is the summed `[[rule.score]]`
/// entries for scored rules.
#[derive(Debug, Clone, PartialEq)]
pub struct Match {
    pub rule: usize,
    pub score: Option<f64>,
}

/// Errors from loading rules; Display is `file:line:col: what`, one a line.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadError {
    pub errors: Vec<String>,
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.errors.join("\n"))
    }
}

impl std::error::Error for LoadError {}

/// Result of one `[[rule.test]]` case.
#[derive(Debug, Clone, PartialEq)]
pub struct TestOutcome {
    pub rule_id: String,
    /// 0-based index of the case within its rule.
    pub case: usize,
    pub name: String,
    pub passed: bool,
    /// Why it failed (empty when it passed).
    pub detail: String,
    /// `file:line:col` of the case.
    pub location: String,
}

impl std::fmt::Debug for RuleSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuleSet")
            .field(
                "rules",
                &self.rules.iter().map(|r| &r.id).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl RuleSet {
    /// Loads every `*.toml` under each path (file or directory, in order;
    /// directory entries sorted by file name). See the module doc for how
    /// later files change earlier rules.
    pub fn load(paths: &[PathBuf]) -> Result<RuleSet, LoadError> {
        RuleSet::load_with(paths, Unsupported::Error)
    }

    /// [`Self::load`] where `mode` says what a file that cannot be loaded
    /// does. Under `Skip`, a set left with no rule at all because files were
    /// skipped is still an error: a sensor watching nothing must not run.
    pub fn load_with(paths: &[PathBuf], mode: Unsupported) -> Result<RuleSet, LoadError> {
        let mut sources = Vec::new();
        let mut errors = Vec::new();
        for p in paths {
            let files = if p.is_dir() {
                match std::fs::read_dir(p) {
                    Ok(rd) => {
                        let mut v: Vec<PathBuf> = rd
                            .filter_map(|e| e.ok().map(|e| e.path()))
                            .filter(|f| f.extension().is_some_and(|x| x == "toml") && f.is_file())
                            .collect();
                        v.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
                        v
                    }
                    Err(e) => {
                        errors.push(format!("{}: cannot read directory: {e}", p.display()));
                        continue;
                    }
                }
            } else {
                vec![p.clone()]
            };
            for f in files {
                match read_capped(&f) {
                    Ok(text) => sources.push((f.display().to_string(), text)),
                    Err(e) => errors.push(format!("{}:1:1: {e}", f.display())),
                }
            }
        }
        if !errors.is_empty() {
            return Err(LoadError { errors });
        }
        RuleSet::from_sources_with(&sources, mode)
    }

    /// Loads rules from in-memory `(name, text)` pairs, in order.
    pub fn from_sources(sources: &[(String, String)]) -> Result<RuleSet, LoadError> {
        RuleSet::from_sources_with(sources, Unsupported::Error)
    }

    /// [`Self::from_sources`] with a choice for files that cannot be loaded.
    pub fn from_sources_with(
        sources: &[(String, String)],
        mode: Unsupported,
    ) -> Result<RuleSet, LoadError> {
        let mut rules: Vec<RuleDef> = Vec::new();
        let mut defined: HashMap<String, (usize, String)> = HashMap::new();
        let mut errors = Vec::new();
        let mut skipped = Vec::new();
        for (name, text) in sources {
            let items = match load::parse_file(name, text) {
                Ok(items) => items,
                Err(e) if mode == Unsupported::Skip => {
                    skipped.push(Skipped {
                        file: name.clone(),
                        reasons: e,
                    });
                    continue;
                }
                Err(e) => {
                    errors.extend(e);
                    continue;
                }
            };
            if mode == Unsupported::Skip {
                let e = link_errors(&items, &defined);
                if !e.is_empty() {
                    skipped.push(Skipped {
                        file: name.clone(),
                        reasons: e,
                    });
                    continue;
                }
            }
            for item in items {
                match item {
                    Item::Rule(def, at) => {
                        if let Some((_, first)) = defined.get(&def.id) {
                            errors.push(format!(
                                "{at}: duplicate rule id `{}` (first defined at {first})",
                                def.id
                            ));
                        } else {
                            defined.insert(def.id.clone(), (rules.len(), at));
                            rules.push(*def);
                        }
                    }
                    Item::Override {
                        id,
                        at,
                        enabled,
                        exceptions,
                    } => match defined.get(&id) {
                        Some(&(i, _)) => {
                            if let Some(en) = enabled {
                                rules[i].enabled = en;
                            }
                            rules[i].exceptions.extend(exceptions);
                        }
                        None => errors.push(format!(
                            "{at}: no rule with id `{id}` was loaded before this file"
                        )),
                    },
                    Item::Disable(ids) => {
                        for (id, at) in ids {
                            match defined.get(&id) {
                                Some(&(i, _)) => rules[i].enabled = false,
                                None => errors.push(format!("{at}: cannot disable `{id}`: no rule with that id was loaded before this file")),
                            }
                        }
                    }
                }
            }
        }
        if !errors.is_empty() {
            return Err(LoadError { errors });
        }
        rules.retain(|r| r.enabled);
        if rules.is_empty() && !skipped.is_empty() {
            let mut errors = vec![format!(
                "no rule loaded: all {} rule file(s) were skipped as unsupported",
                skipped.len()
            )];
            errors.extend(skipped.into_iter().flat_map(|s| s.reasons));
            return Err(LoadError { errors });
        }
        let mut set = RuleSet {
            rules,
            skipped,
            ..RuleSet::default()
        };
        for (i, r) in set.rules.iter().enumerate() {
            match compile::required_names(&r.query) {
                Some(names) => {
                    for n in names {
                        let v = set.by_name.entry(n).or_default();
                        if !v.contains(&i) {
                            v.push(i);
                        }
                    }
                }
                None => set.always.push(i),
            }
        }
        Ok(set)
    }

    /// The files left out under [`Unsupported::Skip`], in load order.
    pub fn skipped(&self) -> &[Skipped] {
        &self.skipped
    }

    /// Number of enabled rules.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The `id` of rule `i` (as in [`Match::rule`]).
    pub fn rule_id(&self, i: usize) -> Option<&str> {
        self.rules.get(i).map(|r| r.id.as_str())
    }

    /// The display name of rule `i`.
    pub fn rule_name(&self, i: usize) -> Option<&str> {
        self.rules.get(i).map(|r| r.name.as_str())
    }

    /// Index of the rule with this `id`.
    pub fn index_of(&self, id: &str) -> Option<usize> {
        self.rules.iter().position(|r| r.id == id)
    }

    /// Appends the matches for `ev` to `out`, in rule order. Allocates
    /// nothing unless `out` must grow.
    pub fn evaluate(&self, ev: &Event, out: &mut Vec<Match>) {
        let start = out.len();
        let name = ev.process.name.as_bytes();
        let mut buf = [0u8; 64];
        if !name.is_ascii() || name.len() > buf.len() {
            // Not indexable without allocating: meet every rule.
            for i in 0..self.rules.len() {
                self.eval_into(i, ev, out);
            }
            return;
        }
        let key = &mut buf[..name.len()];
        key.copy_from_slice(name);
        key.make_ascii_lowercase();
        let named = std::str::from_utf8(key)
            .ok()
            .and_then(|k| self.by_name.get(k))
            .map_or(&[][..], Vec::as_slice);
        for &i in self.always.iter().chain(named) {
            self.eval_into(i, ev, out);
        }
        out[start..].sort_unstable_by_key(|m| m.rule);
    }

    /// Ids of the enabled rules with `action = "deny"`.
    pub fn deny_rules(&self) -> Vec<&str> {
        self.rules
            .iter()
            .filter(|r| r.deny)
            .map(|r| r.id.as_str())
            .collect()
    }

    /// The first matching `action = "deny"` rule, evaluated on what is known
    /// at permission time.
    pub fn denies(&self, ev: &Event, scratch: &mut Vec<Match>) -> Option<Match> {
        scratch.clear();
        self.evaluate(ev, scratch);
        scratch
            .iter()
            .find(|m| self.rules.get(m.rule).is_some_and(|r| r.deny))
            .cloned()
    }

    fn eval_into(&self, i: usize, ev: &Event, out: &mut Vec<Match>) {
        if let Some(score) = self.rules.get(i).and_then(|r| verdict(r, ev)) {
            out.push(Match { rule: i, score });
        }
    }

    /// Builds the alert for a match; see [`alert::build`].
    pub fn alert(&self, ev: &Event, m: &Match) -> Event {
        match self.rules.get(m.rule) {
            Some(r) => alert::build(r, ev, m),
            None => ev.clone(),
        }
    }

    /// Runs every `[[rule.test]]` case of every enabled rule.
    pub fn run_tests(&self) -> Vec<TestOutcome> {
        let mut out = Vec::new();
        for r in &self.rules {
            for (i, t) in r.tests.iter().enumerate() {
                let fired = verdict(r, &t.event);
                let score = gated_score(r, &t.event);
                let mut detail = Vec::new();
                if fired.is_some() != t.expect {
                    let what = if t.expect {
                        "expected an alert, got none"
                    } else {
                        "expected no alert, got one"
                    };
                    detail.push(what.to_string());
                    if let Some(x) = r.exceptions.iter().find(|x| eval::eval(&x.when, &t.event)) {
                        detail.push(format!("suppressed by exception: {}", x.reason));
                    }
                }
                if let Some(want) = t.score {
                    match score {
                        Some(got) if (got - want).abs() < 1e-9 => {}
                        Some(got) => detail.push(format!("score: expected {want}, got {got}")),
                        None => detail.push(format!(
                            "score: expected {want}, but the query did not match"
                        )),
                    }
                }
                out.push(TestOutcome {
                    rule_id: r.id.clone(),
                    case: i,
                    name: t.name.clone(),
                    passed: detail.is_empty(),
                    detail: detail.join("; "),
                    location: t.at.clone(),
                });
            }
        }
        out
    }
}

/// The errors that linking a file's items to the rules loaded before it
/// would give (duplicate ids, changes to rules never loaded), so that under
/// `Skip` a file is applied whole or not at all.
fn link_errors(items: &[Item], defined: &HashMap<String, (usize, String)>) -> Vec<String> {
    let mut out = Vec::new();
    for item in items {
        match item {
            Item::Rule(def, at) => {
                if let Some((_, first)) = defined.get(&def.id) {
                    out.push(format!(
                        "{at}: duplicate rule id `{}` (first defined at {first})",
                        def.id
                    ));
                }
            }
            Item::Override { id, at, .. } if !defined.contains_key(id) => out.push(format!(
                "{at}: no rule with id `{id}` was loaded before this file"
            )),
            Item::Override { .. } => {}
            Item::Disable(ids) => {
                for (id, at) in ids {
                    if !defined.contains_key(id) {
                        out.push(format!("{at}: cannot disable `{id}`: no rule with that id was loaded before this file"));
                    }
                }
            }
        }
    }
    out
}

/// The summed score of a scored rule whose query matched.
fn gated_score(r: &RuleDef, ev: &Event) -> Option<f64> {
    r.threshold?;
    eval::eval(&r.query, ev).then(|| {
        r.scores
            .iter()
            .filter(|s| eval::eval(&s.when, ev))
            .map(|s| s.add)
            .sum()
    })
}

/// `Some(score)` when rule `r` fires on `ev`: the query matches, the score
/// (if any) reaches the threshold and no exception applies.
fn verdict(r: &RuleDef, ev: &Event) -> Option<Option<f64>> {
    if !eval::eval(&r.query, ev) {
        return None;
    }
    let score = match r.threshold {
        Some(th) => {
            let s: f64 = r
                .scores
                .iter()
                .filter(|s| eval::eval(&s.when, ev))
                .map(|s| s.add)
                .sum();
            if s < th {
                return None;
            }
            Some(s)
        }
        None => None,
    };
    if r.exceptions.iter().any(|x| eval::eval(&x.when, ev)) {
        return None;
    }
    Some(score)
}

fn read_capped(path: &std::path::Path) -> std::io::Result<String> {
    use std::io::Read;
    let f = std::fs::File::open(path)?;
    let mut text = String::new();
    f.take(load::MAX_FILE_BYTES as u64 + 1)
        .read_to_string(&mut text)?;
    if text.len() > load::MAX_FILE_BYTES {
        return Err(std::io::Error::other(format!(
            "file is larger than {} bytes",
            load::MAX_FILE_BYTES
        )));
    }
    Ok(text)
}
