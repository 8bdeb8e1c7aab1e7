//! Pure formatters: an [`Event`] → one syslog message (RFC 5424, RFC 3164 or
//! CEF) or one JSON line. No I/O here, so every escaping rule is unit-tested.
//!
//! Injection safety rests on two steps applied to every value taken from the
//! event: [`escaped_control`] first (no control, bidi or line-breaking
//! character survives; backslashes doubled), then the target syntax's own
//! escaping (SD-PARAM: `\`, `"`, `]`; CEF: `\`, `|` in the header, `=` in the
//! extension). A decoder of either syntax therefore gets back exactly the
//! `escaped_control` text, and no byte of a process name or argv can end a
//! line, close a field or start a new one.

use std::borrow::Cow;
use std::fmt::Write as _;

use crate::bytes::escaped_control;
use crate::config::{Format, Payload};
use crate::event::Event;

/// Registered-looking SD-ID (RFC 5424 §7.2.2: name@private-enterprise-number).
pub const SD_ID: &str = "execsentry@32473";
/// Appended to anything that was cut.
pub const TRUNCATED: &str = "...[truncated]";
/// Cap on one SD-PARAM value or CEF extension value (after escaping), so the
/// header and SD always fit in the 2048-byte minimum `max_message_bytes`.
const FIELD_MAX: usize = 160;

/// Syslog severity from ECS `event.severity` (0-100, as Elastic rules set it:
/// low 21, medium 47, high 73, critical 99):
///
/// | event.severity | syslog severity |
/// |---|---|
/// | ≥ 90 | 2 critical |
/// | 70-89 | 3 error |
/// | 40-69 | 4 warning |
/// | 20-39 | 5 notice |
/// | < 20, or a plain event | 6 informational |
pub fn syslog_severity(ev: &Event) -> syslog::Severity {
    use syslog::Severity::*;
    match ev.event.severity {
        Some(s) if s >= 90 => LOG_CRIT,
        Some(s) if s >= 70 => LOG_ERR,
        Some(s) if s >= 40 => LOG_WARNING,
        Some(s) if s >= 20 => LOG_NOTICE,
        _ => LOG_INFO,
    }
}

/// CEF severity 0-10: ECS severity / 10, rounded.
pub fn cef_severity(ev: &Event) -> u8 {
    ev.event
        .severity
        .map_or(0, |s| ((u16::from(s) + 5) / 10).min(10) as u8)
}

/// A word for humans (`tail`).
pub fn severity_word(ev: &Event) -> &'static str {
    match ev.event.severity {
        Some(s) if s >= 90 => "critical",
        Some(s) if s >= 70 => "high",
        Some(s) if s >= 40 => "medium",
        Some(_) => "low",
        None => "info",
    }
}

/// ECS JSON, one line. serde_json already escapes C0 controls; DEL, C1 and
/// the bidi/line-separator characters are also written as `\uXXXX` (still the
/// same JSON string) so a terminal or a line reader never sees them raw.
pub fn json_line(ev: &Event) -> String {
    let mut buf = Vec::with_capacity(2048);
    json_line_into(ev, &mut buf);
    // serde_json writes UTF-8 and the escaping keeps it so.
    String::from_utf8(buf).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// [`json_line`] into a reused buffer (cleared first), without allocating
/// when no character needs the extra escaping.
pub fn json_line_into(ev: &Event, buf: &mut Vec<u8>) {
    buf.clear();
    if let Err(e) = serde_json::to_writer(&mut *buf, ev) {
        buf.clear();
        buf.extend_from_slice(error_json(&e).as_bytes());
    }
    if let Some(first) = first_lead_byte(buf) {
        let tail = String::from_utf8_lossy(&buf[first..]);
        let escaped = line_safe_json(&tail).into_owned();
        buf.truncate(first);
        buf.extend_from_slice(escaped.as_bytes());
    }
}

/// The line written instead of an event that cannot be serialised: still
/// one valid JSON object, whatever the error text holds (quotes,
/// backslashes, newlines, controls), because serde_json writes it too.
pub(crate) fn error_json(e: &dyn std::fmt::Display) -> String {
    serde_json::json!({ "error": format!("cannot serialize event: {e}") }).to_string()
}

/// Where the first byte that can start an escaped character is: DEL,
/// and the lead bytes of U+0080..U+009F (0xC2), U+2000..U+2FFF (0xE2) and
/// U+F000..U+FFFF (0xEF). Most lines have none and are left as they are.
fn first_lead_byte(b: &[u8]) -> Option<usize> {
    b.iter()
        .position(|&c| matches!(c, 0x7f | 0xc2 | 0xe2 | 0xef))
}

/// Serialised JSON with DEL, C1 and the invisible format characters written
/// as `\uXXXX`. Valid only for text serde_json produced: those characters
/// can then only stand inside strings, where the escape means the same.
pub fn line_safe_json(raw: &str) -> Cow<'_, str> {
    let Some(first) = first_lead_byte(raw.as_bytes()) else {
        return Cow::Borrowed(raw);
    };
    let mut out = String::with_capacity(raw.len() + 16);
    out.push_str(&raw[..first]);
    for c in raw[first..].chars() {
        let u = c as u32;
        if u == 0x7f || (0x80..=0x9f).contains(&u) || escaped_control_needed(c) {
            let _ = write!(out, "\\u{u:04x}");
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// The invisible format characters that `bytes::escape_control` escapes.
fn escaped_control_needed(c: char) -> bool {
    matches!(c as u32, 0x200b..=0x200f | 0x2028..=0x202e | 0x2066..=0x2069 | 0xfeff)
}

/// Who ran it, for a human at 3 a.m.: `container=web pod=payments/web-7d9f`
/// with whatever of the container name, namespace and pod is known.
pub fn workload(ev: &Event) -> Option<String> {
    let name = ev.container.as_ref().and_then(|c| c.name.as_deref());
    let o = ev.orchestrator.as_ref();
    let pod = o.and_then(|o| o.resource.name.as_deref());
    let ns = o.and_then(|o| o.namespace.as_deref());
    let mut parts = Vec::new();
    if let Some(n) = name {
        parts.push(format!("container={n}"));
    }
    match (ns, pod) {
        (Some(ns), Some(pod)) => parts.push(format!("pod={ns}/{pod}")),
        (None, Some(pod)) => parts.push(format!("pod={pod}")),
        (Some(ns), None) => parts.push(format!("namespace={ns}")),
        (None, None) => {}
    }
    (!parts.is_empty()).then(|| parts.join(" "))
}

/// The alert's one-line human message, control-escaped.
pub fn human_message(ev: &Event) -> String {
    let mut text = match (&ev.message, &ev.rule) {
        (Some(m), _) if !m.is_empty() => m.clone(),
        (_, Some(r)) => format!("{}: {}", r.name, ev.process.command_line),
        _ => format!(
            "exec {} (pid {}, uid {}): {}",
            ev.process.executable, ev.process.pid, ev.process.user.id, ev.process.command_line
        ),
    };
    if let Some(w) = workload(ev) {
        let _ = write!(text, " [{w}]");
    }
    escaped_control(&text).into_owned()
}

/// Builds syslog messages for one configured sink.
#[derive(Debug, Clone)]
pub struct Formatter {
    pub format: Format,
    pub payload: Payload,
    /// Facility code already shifted (`syslog::Facility as u8`).
    pub facility: u8,
    pub app_name: String,
    pub procid: u32,
    pub max_bytes: usize,
    /// RFC 3164 HOSTNAME. Off for `/dev/log`: syslog(3)'s local form has
    /// none, and journald and rsyslog's imuxsock would otherwise take the
    /// host name for the tag (journald then stores no identifier at all).
    pub hostname: bool,
}

impl Formatter {
    /// One message without transport framing.
    pub fn format(&self, ev: &Event) -> Vec<u8> {
        let msg = match self.format {
            Format::Rfc5424 => self.rfc5424(ev),
            Format::Rfc3164 => self.rfc3164(ev),
            Format::Cef => self.cef(ev),
        };
        truncate(msg, self.max_bytes).into_bytes()
    }

    fn pri(&self, ev: &Event) -> u8 {
        self.facility | syslog_severity(ev) as u8
    }

    fn msg(&self, ev: &Event) -> String {
        match self.payload {
            Payload::Message => human_message(ev),
            Payload::Json => json_line(ev),
        }
    }

    fn rfc5424(&self, ev: &Event) -> String {
        let ts = Timestamp::parse(&ev.timestamp).unwrap_or_else(Timestamp::now);
        let msgid = if ev.is_alert() { "alert" } else { "event" };
        let mut s = format!(
            "<{}>1 {} {} {} {} {} ",
            self.pri(ev),
            ts.rfc5424(),
            header_token(&ev.host.hostname, 255),
            self.app_name,
            self.procid,
            msgid
        );
        s.push('[');
        s.push_str(SD_ID);
        let mut param = |name: &str, value: &str| {
            let _ = write!(s, " {name}=\"{}\"", sd_value(value));
        };
        if let Some(r) = &ev.rule {
            param("rule_id", &r.id);
        }
        if let Some(sev) = ev.event.severity {
            param("severity", &sev.to_string());
        }
        if let Some(rs) = ev.event.risk_score {
            param("risk_score", &rs.to_string());
        }
        param("pid", &ev.process.pid.to_string());
        match &ev.container {
            Some(c) => {
                param("container_id", &c.id);
                param("runtime", &c.runtime);
                if let Some(n) = &c.name {
                    param("container_name", n);
                }
            }
            None => param("container_id", "host"),
        }
        if let Some(o) = &ev.orchestrator {
            if let Some(ns) = &o.namespace {
                param("namespace", ns);
            }
            if let Some(pod) = &o.resource.name {
                param("pod", pod);
            }
        }
        param("event_id", &ev.event.id);
        s.push_str("] ");
        s.push_str(&self.msg(ev));
        s
    }

    fn rfc3164(&self, ev: &Event) -> String {
        let ts = Timestamp::parse(&ev.timestamp).unwrap_or_else(Timestamp::now);
        let host = if self.hostname {
            header_token(&ev.host.hostname, 255) + " "
        } else {
            String::new()
        };
        format!(
            "<{}>{} {}{}[{}]: {}",
            self.pri(ev),
            ts.rfc3164(),
            host,
            self.app_name,
            self.procid,
            self.msg(ev)
        )
    }

    /// CEF inside an RFC 3164 header, as ArcSight-style collectors expect.
    fn cef(&self, ev: &Event) -> String {
        let ts = Timestamp::parse(&ev.timestamp).unwrap_or_else(Timestamp::now);
        format!(
            "<{}>{} {} {}",
            self.pri(ev),
            ts.rfc3164(),
            header_token(&ev.host.hostname, 255),
            cef_body(ev)
        )
    }
}

/// `CEF:0|execsentry|execsentry|VERSION|rule id|name|severity|extension`.
pub fn cef_body(ev: &Event) -> String {
    let (id, name) = match &ev.rule {
        Some(r) => (r.id.as_str(), r.name.as_str()),
        None => ("exec", "process exec"),
    };
    let mut s = format!(
        "CEF:0|execsentry|execsentry|{}|{}|{}|{}|",
        env!("CARGO_PKG_VERSION"),
        cef_header(id),
        cef_header(name),
        cef_severity(ev)
    );
    let mut first = true;
    let mut ext = |k: &str, v: &str| {
        if !first {
            s.push(' ');
        }
        first = false;
        let _ = write!(s, "{k}={}", cef_ext(v));
    };
    if let Some(ms) = Timestamp::parse(&ev.timestamp).and_then(|t| t.unix_millis()) {
        ext("rt", &ms.to_string());
    }
    ext("dvchost", &ev.host.hostname);
    ext("spid", &ev.process.pid.to_string());
    ext("sproc", &ev.process.name);
    ext("filePath", &ev.process.executable);
    ext("suid", &ev.process.user.id);
    if let Some(n) = &ev.process.user.name {
        ext("suser", n);
    }
    let (cid, rt) = match &ev.container {
        Some(c) => (c.id.as_str(), c.runtime.as_str()),
        None => ("host", ""),
    };
    ext("cs1Label", "containerId");
    ext("cs1", cid);
    ext("cs2Label", "runtime");
    ext("cs2", rt);
    ext("cs3Label", "commandLine");
    ext("cs3", &ev.process.command_line);
    if let Some(n) = ev.container.as_ref().and_then(|c| c.name.as_deref()) {
        ext("cs4Label", "containerName");
        ext("cs4", n);
    }
    if let Some(o) = &ev.orchestrator {
        if let Some(ns) = &o.namespace {
            ext("cs5Label", "namespace");
            ext("cs5", ns);
        }
        if let Some(pod) = &o.resource.name {
            ext("cs6Label", "pod");
            ext("cs6", pod);
        }
    }
    if let Some(r) = ev.event.risk_score {
        ext("cn1Label", "riskScore");
        ext("cn1", &r.to_string());
    }
    ext("externalId", &ev.event.id);
    ext("msg", &human_message_raw(ev));
    s
}

/// The message before control escaping (CEF escapes it itself).
fn human_message_raw(ev: &Event) -> String {
    match (&ev.message, &ev.rule) {
        (Some(m), _) if !m.is_empty() => m.clone(),
        (_, Some(r)) => format!("{}: {}", r.name, ev.process.command_line),
        _ => format!("exec {}", ev.process.executable),
    }
}

/// A header field (HOSTNAME): printable ASCII without spaces, or `-`.
fn header_token(s: &str, max: usize) -> String {
    let t: String = s
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(max)
        .collect();
    if t.is_empty() { "-".into() } else { t }
}

/// RFC 5424 §6.3.3 PARAM-VALUE escaping on top of control escaping.
pub fn sd_value(v: &str) -> String {
    let mut out = String::new();
    for c in escaped_control(v).chars() {
        if matches!(c, '\\' | '"' | ']') {
            out.push('\\');
        }
        out.push(c);
    }
    cap_escaped(out, r"...[truncated\]")
}

fn cef_header(v: &str) -> String {
    cef_escape(v, '|')
}

fn cef_ext(v: &str) -> String {
    cef_escape(v, '=')
}

fn cef_escape(v: &str, special: char) -> String {
    let mut out = String::new();
    for c in escaped_control(v).chars() {
        if c == '\\' || c == special {
            out.push('\\');
        }
        out.push(c);
    }
    cap_escaped(out, TRUNCATED)
}

/// Cuts an escaped field to [`FIELD_MAX`] bytes without leaving a dangling
/// escape: an odd run of trailing backslashes would escape the delimiter.
/// `marker` is [`TRUNCATED`] already escaped for the target syntax.
fn cap_escaped(mut s: String, marker: &str) -> String {
    if s.len() <= FIELD_MAX {
        return s;
    }
    let mut cut = FIELD_MAX - marker.len();
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    s.truncate(cut);
    let trailing = s.bytes().rev().take_while(|b| *b == b'\\').count();
    if trailing % 2 == 1 {
        s.pop();
    }
    s.push_str(marker);
    s
}

/// Cuts a whole message to `max` bytes (on a char boundary) with the marker.
/// The SD and CEF header are bounded well below `max`, so only the free text
/// at the end is ever cut.
pub fn truncate(mut s: String, max: usize) -> String {
    if s.len() <= max {
        return s;
    }
    let mut cut = max.saturating_sub(TRUNCATED.len());
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    s.truncate(cut);
    s.push_str(TRUNCATED);
    s
}

/// The parts of an RFC 3339 timestamp that syslog needs. The event's own
/// string is parsed strictly, so nothing but digits reaches the header.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timestamp {
    year: u16,
    month: u8,
    day: u8,
    hour: u8,
    min: u8,
    sec: u8,
    micros: u32,
    /// Offset from UTC in minutes.
    offset: i16,
}

impl Timestamp {
    pub fn now() -> Timestamp {
        let t = time::OffsetDateTime::now_utc();
        Timestamp {
            year: t.year().clamp(0, 9999) as u16,
            month: t.month() as u8,
            day: t.day(),
            hour: t.hour(),
            min: t.minute(),
            sec: t.second(),
            micros: t.microsecond(),
            offset: 0,
        }
    }

    /// `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`; `None` for anything else.
    pub fn parse(s: &str) -> Option<Timestamp> {
        let b = s.as_bytes();
        let num = |r: std::ops::Range<usize>| -> Option<u32> {
            let part = b.get(r)?;
            if part.iter().all(u8::is_ascii_digit) {
                std::str::from_utf8(part).ok()?.parse().ok()
            } else {
                None
            }
        };
        if b.len() < 20
            || b[4] != b'-'
            || b[7] != b'-'
            || !matches!(b[10], b'T' | b't')
            || b[13] != b':'
            || b[16] != b':'
        {
            return None;
        }
        let mut t = Timestamp {
            year: num(0..4)? as u16,
            month: num(5..7)? as u8,
            day: num(8..10)? as u8,
            hour: num(11..13)? as u8,
            min: num(14..16)? as u8,
            sec: num(17..19)? as u8,
            micros: 0,
            offset: 0,
        };
        let mut i = 19;
        if b[i] == b'.' {
            let start = i + 1;
            i = start;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            let digits = &s[start..i];
            if digits.is_empty() {
                return None;
            }
            let six: String = digits.chars().chain("000000".chars()).take(6).collect();
            t.micros = six.parse().ok()?;
        }
        match &b[i..] {
            [b'Z' | b'z'] => {}
            [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
                let h = num(i + 1..i + 3)? as i16;
                let m = num(i + 4..i + 6)? as i16;
                t.offset = if *sign == b'-' {
                    -(h * 60 + m)
                } else {
                    h * 60 + m
                };
            }
            _ => return None,
        }
        let valid = (1..=12).contains(&t.month)
            && (1..=31).contains(&t.day)
            && t.hour < 24
            && t.min < 60
            && t.sec <= 60
            && t.offset.abs() < 24 * 60;
        valid.then_some(t)
    }

    /// RFC 5424 TIMESTAMP: at most 6 fraction digits.
    pub fn rfc5424(&self) -> String {
        let mut s = format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}",
            self.year, self.month, self.day, self.hour, self.min, self.sec, self.micros
        );
        if self.offset == 0 {
            s.push('Z');
        } else {
            let sign = if self.offset < 0 { '-' } else { '+' };
            let o = self.offset.abs();
            let _ = write!(s, "{sign}{:02}:{:02}", o / 60, o % 60);
        }
        s
    }

    /// RFC 3164 `Mmm dd hh:mm:ss` (the clock time as the event gives it).
    pub fn rfc3164(&self) -> String {
        const MONTHS: [&str; 12] = [
            "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
        ];
        format!(
            "{} {:>2} {:02}:{:02}:{:02}",
            MONTHS[usize::from(self.month.clamp(1, 12) - 1)],
            self.day,
            self.hour,
            self.min,
            self.sec
        )
    }

    fn unix_millis(&self) -> Option<i64> {
        let month = time::Month::try_from(self.month).ok()?;
        let date = time::Date::from_calendar_date(i32::from(self.year), month, self.day).ok()?;
        let t = date
            .with_hms(self.hour, self.min, self.sec.min(59))
            .ok()?
            .assume_utc();
        Some(
            t.unix_timestamp() * 1000 + i64::from(self.micros / 1000)
                - i64::from(self.offset) * 60_000,
        )
    }
}

#[cfg(test)]
#[path = "format_tests.rs"]
mod tests;
