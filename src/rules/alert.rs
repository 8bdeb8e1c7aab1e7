//! Turns a match into an alert event.

use super::Match;
use super::load::RuleDef;
use crate::bytes::escaped_control;
use crate::event::{Event, RuleRef};

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
