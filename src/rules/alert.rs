//! Turns a match into an alert event, and `replay`: JSON-lines events in,
//! JSON-lines alerts out.

use std::io::{self, BufRead, Write};

use super::load::RuleDef;
use super::{Match, RuleSet};
use crate::bytes::escaped_control;
use crate::event::{Event, RuleRef};

/// Counts from [`replay`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplayStats {
    pub lines: u64,
    pub bad_lines: u64,
    pub alerts: u64,
}

/// The alert: the event plus `event.kind = "alert"`, severity (low 21,
/// medium 47, high 73, critical 99), `event.risk_score` (the summed score for
/// scored rules, else the rule's `risk_score`), `rule.*`, `threat.*` and a
/// one-line `message` with control characters escaped.
pub(super) fn build(r: &RuleDef, ev: &Event, m: &Match) -> Event {
    let mut a = ev.clone();
    a.event.kind = "alert".into();
    a.event.severity = Some(r.severity);
    a.event.risk_score = Some(m.score.unwrap_or(r.risk_score));
    a.rule = Some(RuleRef {
        id: r.id.clone(),
        uuid: r.uuid.clone(),
        name: r.name.clone(),
        description: r.description.clone(),
        version: r.version.clone(),
        ruleset: "execsentry".into(),
        reference: r.reference.clone(),
    });
    a.threat = r.threat.clone();
    let mut msg = format!(
        "{}: {} ran \"{}\"",
        escaped_control(&r.name),
        escaped_control(&ev.process.name),
        escaped_control(&ev.process.command_line)
    );
    if let Some(c) = &ev.container {
        let short: String = c.id.chars().take(12).collect();
        msg.push_str(&format!(
            " in container {} ({})",
            escaped_control(&short),
            escaped_control(&c.runtime)
        ));
    }
    if let Some(s) = m.score {
        msg.push_str(&format!(", score {s}"));
    }
    a.message = Some(msg);
    a
}

/// `execsentry replay`: reads events as JSON lines and writes an alert line
/// for every match. A line that is not a valid event is reported to `err` as
/// `line N: message` and skipped; blank lines are ignored, and events that
/// already are alerts (a `run --events` capture) are passed over so they do
/// not alert twice.
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
        let ev: Event = match serde_json::from_slice(&line) {
            Ok(ev) => ev,
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
            serde_json::to_writer(&mut out, &rules.alert(&ev, m))?;
            out.write_all(b"\n")?;
            stats.alerts += 1;
        }
    }
    out.flush()?;
    Ok(stats)
}
