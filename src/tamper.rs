//! Self-defence: alerts when someone goes for the sensor itself. A sensor
//! that can be silently disabled is the first thing an attacker touches.
//!
//! PURE: the daemon notices the act (a ptrace attach reported by the proc
//! connector, a signal's sender from signalfd, rule or config files that
//! became writable by non-root) and describes the actor as an ordinary
//! event; this module turns that into an alert.

use crate::bytes::escaped_control;
use crate::event::{Event, RuleRef, Threat, ThreatRefs};

/// What was attempted against the sensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tamper {
    /// A process attached to the sensor with ptrace.
    Ptrace,
    /// A process sent the sensor a terminating signal.
    Signal(i32),
    /// A rule or config file can be written by someone other than root.
    Files,
}

impl Tamper {
    pub fn rule_id(self) -> &'static str {
        match self {
            Tamper::Ptrace => "execsentry-tamper-ptrace",
            Tamper::Signal(_) => "execsentry-tamper-signal",
            Tamper::Files => "execsentry-tamper-files",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Tamper::Ptrace => "Process attached to the execsentry sensor with ptrace",
            Tamper::Signal(_) => "Process signalled the execsentry sensor to stop",
            Tamper::Files => "execsentry rule or configuration file writable by non-root",
        }
    }
}

/// Turns the actor's event into a tamper alert. `detail` says what was
/// seen (the signal, the file). A stop from init (systemd stopping the
/// service) is expected and low; anything else is high.
pub fn alert(mut actor: Event, what: Tamper, detail: &str) -> Event {
    let routine = matches!(what, Tamper::Signal(_)) && actor.process.pid == 1;
    let (severity, risk) = if routine { (21, 21.0) } else { (73, 73.0) };
    actor.event.kind = "alert".into();
    actor.event.category = vec!["process".into()];
    actor.event.kind_type = vec!["info".into()];
    actor.event.action = what.rule_id().trim_start_matches("execsentry-").into();
    actor.event.severity = Some(severity);
    actor.event.risk_score = Some(risk);
    actor.rule = Some(RuleRef {
        id: what.rule_id().into(),
        uuid: what.rule_id().into(),
        name: what.name().into(),
        description: what.name().into(),
        version: "1".into(),
        ruleset: "execsentry".into(),
        reference: Some("https://attack.mitre.org/techniques/T1562/001/".into()),
    });
    actor.threat = Some(Threat {
        framework: "MITRE ATT&CK".into(),
        technique: ThreatRefs {
            id: vec!["T1562.001".into()],
            name: vec!["Impair Defenses: Disable or Modify Tools".into()],
            reference: vec![],
        },
        tactic: ThreatRefs {
            id: vec!["TA0005".into()],
            name: vec!["Defense Evasion".into()],
            reference: vec![],
        },
    });
    let who = if actor.process.pid == 0 {
        "an unknown process".to_string()
    } else {
        format!(
            "{} (pid {}) \"{}\"",
            escaped_control(&actor.process.name),
            actor.process.pid,
            escaped_control(&actor.process.command_line)
        )
    };
    actor.message = Some(format!(
        "{}: {who}: {}",
        what.name(),
        escaped_control(detail)
    ));
    actor
}

#[cfg(test)]
mod tests {
    use super::*;

    fn actor(pid: u32, name: &str) -> Event {
        let mut e = Event::default();
        e.process.pid = pid;
        e.process.name = name.into();
        e.process.command_line = format!("{name} -p 1234\nforged");
        e
    }

    #[test]
    fn ptrace_alert_names_the_tracer_and_escapes_it() {
        let a = alert(actor(4321, "gdb"), Tamper::Ptrace, "attached to pid 1234");
        assert_eq!(a.event.kind, "alert");
        assert_eq!(a.rule.as_ref().unwrap().id, "execsentry-tamper-ptrace");
        assert_eq!(a.event.severity, Some(73));
        let m = a.message.unwrap();
        assert!(m.contains("gdb (pid 4321)") && !m.contains('\n'), "{m}");
        assert_eq!(a.threat.unwrap().technique.id, ["T1562.001"]);
    }

    #[test]
    fn stop_by_init_is_low_and_by_others_high() {
        let by_init = alert(actor(1, "systemd"), Tamper::Signal(15), "SIGTERM");
        assert_eq!(by_init.event.severity, Some(21));
        let by_shell = alert(actor(777, "kill"), Tamper::Signal(15), "SIGTERM");
        assert_eq!(by_shell.event.severity, Some(73));
    }
}
