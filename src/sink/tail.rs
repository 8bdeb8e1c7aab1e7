//! `execsentry tail`: follow the alert socket and print each alert, either
//! as the raw JSON line or as one readable line. Reconnects with back-off
//! when the sensor restarts, until killed or until `out` fails (a closed
//! pipe such as `| head` ends it).
//!
//! Everything printed from an event goes through `escaped_control`, so a
//! hostile argv cannot move the cursor or fake another line.

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use super::format::{line_safe_json, severity_word, workload};
use crate::bytes::escaped_control;
use crate::event::Event;

const RETRY_MIN: Duration = Duration::from_millis(250);
const RETRY_MAX: Duration = Duration::from_secs(5);

pub fn tail(socket: &Path, json: bool, mut out: impl Write, color: bool) -> io::Result<()> {
    let mut wait = RETRY_MIN;
    let mut said_waiting = false;
    loop {
        match UnixStream::connect(socket) {
            Ok(stream) => {
                wait = RETRY_MIN;
                said_waiting = false;
                follow(stream, json, &mut out, color)?;
                eprintln!("execsentry tail: sensor went away; reconnecting");
            }
            // Not something that goes away by waiting (unlike a sensor
            // that is not up yet): refuse at once.
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                return Err(io::Error::new(
                    e.kind(),
                    format!(
                        "{}: {e}: only root and members of the socket's group \
                         (`execsentry` in the packages) may read alerts",
                        socket.display()
                    ),
                ));
            }
            Err(e) => {
                if !said_waiting {
                    eprintln!(
                        "execsentry tail: {}: {e}; retrying until it appears",
                        socket.display()
                    );
                    said_waiting = true;
                }
                std::thread::sleep(wait);
                wait = (wait * 2).min(RETRY_MAX);
            }
        }
    }
}

/// Prints every line from `input` until it ends. Errors from `out` are
/// returned (the caller should stop); errors from `input` end the stream.
pub fn follow(
    input: impl io::Read,
    json: bool,
    out: &mut impl Write,
    color: bool,
) -> io::Result<()> {
    let mut r = BufReader::new(input);
    let mut line = Vec::new();
    loop {
        line.clear();
        match r.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return Ok(()),
            Ok(_) => {}
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end_matches('\n');
        if json {
            // Raw lines, but only JSON goes out: re-serialised, so whatever
            // listens on this path cannot smuggle raw control characters to
            // the terminal, and the line stays valid JSON.
            match serde_json::from_str::<serde_json::Value>(text) {
                Ok(v) => writeln!(out, "{}", line_safe_json(&v.to_string()))?,
                Err(e) => writeln!(
                    out,
                    "(unreadable line: {})",
                    escaped_control(&e.to_string())
                )?,
            }
        } else {
            match serde_json::from_str::<Event>(text) {
                Ok(ev) if ev.is_alert() => writeln!(out, "{}", render(&ev, color))?,
                Ok(_) => {}
                Err(e) => writeln!(
                    out,
                    "(unreadable line: {})",
                    escaped_control(&e.to_string())
                )?,
            }
        }
        out.flush()?;
    }
}

/// `TIME SEVERITY RULE WHERE USER COMMAND`, with the severity coloured.
pub fn render(ev: &Event, color: bool) -> String {
    let sev = severity_word(ev);
    let sev_txt = if color {
        let code = match sev {
            "critical" => "1;31",
            "high" => "31",
            "medium" => "33",
            "low" => "36",
            _ => "2",
        };
        format!("\x1b[{code}m{sev:<8}\x1b[0m")
    } else {
        format!("{sev:<8}")
    };
    let rule = ev.rule.as_ref().map_or("-", |r| r.id.as_str());
    let place = match &ev.container {
        Some(c) => {
            let short: String = c.id.chars().take(12).collect();
            match workload(ev) {
                Some(w) => format!("{}:{short} {w}", c.runtime),
                None if ev.orchestrator.is_some() => format!("{}:{short} pod=-", c.runtime),
                None => format!("{}:{short}", c.runtime),
            }
        }
        None => "host".into(),
    };
    let user = match &ev.process.user.name {
        Some(n) => format!("{n}({})", ev.process.user.id),
        None => format!("uid={}", ev.process.user.id),
    };
    let cmd = if ev.process.command_line.is_empty() {
        &ev.process.executable
    } else {
        &ev.process.command_line
    };
    format!(
        "{} {sev_txt} {} {} {} {}",
        escaped_control(&ev.timestamp),
        escaped_control(rule),
        escaped_control(&place),
        escaped_control(&user),
        escaped_control(cmd)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Container, Orchestrator, RuleRef};
    use crate::sink::format::human_message;

    fn alert(name: Option<&str>, ns: Option<&str>, pod: Option<&str>) -> Event {
        let mut ev = Event {
            timestamp: "2024-05-01T12:00:00Z".into(),
            container: Some(Container {
                id: "e1c2b3a4d5f60718".into(),
                runtime: "containerd".into(),
                name: name.map(String::from),
                ..Default::default()
            }),
            rule: Some(RuleRef {
                id: "ES-1".into(),
                name: "Shell".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        ev.event.kind = "alert".into();
        ev.process.command_line = "sh -i".into();
        if ns.is_some() || pod.is_some() {
            let mut o = Orchestrator {
                orchestrator_type: "kubernetes".into(),
                namespace: ns.map(String::from),
                ..Default::default()
            };
            o.resource.name = pod.map(String::from);
            ev.orchestrator = Some(o);
        }
        ev
    }

    #[test]
    fn tail_and_message_name_the_workload() {
        let ev = alert(Some("web"), Some("payments"), Some("web-7d9f"));
        let line = render(&ev, false);
        assert!(
            line.contains("containerd:e1c2b3a4d5f6 container=web pod=payments/web-7d9f"),
            "{line}"
        );
        assert_eq!(
            human_message(&ev),
            "Shell: sh -i [container=web pod=payments/web-7d9f]"
        );
        // Only what is known is shown; a pod without a name stays `pod=-`.
        let line = render(&alert(None, None, None), false);
        assert!(line.contains(" containerd:e1c2b3a4d5f6 uid="), "{line}");
        assert_eq!(human_message(&alert(None, None, None)), "Shell: sh -i");
        let mut bare = alert(None, None, None);
        bare.orchestrator = Some(Orchestrator::default());
        assert!(render(&bare, false).contains("pod=-"));
        // A hostile pod name cannot break the line.
        let line = render(&alert(Some("a\nb"), Some("x\u{1b}[2J"), Some("p")), false);
        assert!(!line.contains('\n') && !line.contains('\u{1b}'), "{line}");
    }
}
