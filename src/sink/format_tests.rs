//! Formatter tests: structure, PRI, escaping, and a loop of hostile strings
//! in every field asserting that framing and fields cannot be forged.

use super::*;
use crate::event::{Container, Event, EventMeta, Host, Process, RuleRef, User};

pub(crate) fn alert(text: &str) -> Event {
    Event {
        timestamp: "2024-05-01T12:34:56.123456789Z".into(),
        event: EventMeta {
            kind: "alert".into(),
            id: "ev-1".into(),
            severity: Some(73),
            risk_score: Some(73.0),
            ..Default::default()
        },
        host: Host {
            hostname: "node1".into(),
            ..Default::default()
        },
        process: Process {
            pid: 4242,
            name: text.into(),
            executable: format!("/usr/bin/{text}"),
            args: vec!["sh".into(), "-c".into(), text.into()],
            command_line: format!("sh -c {text}"),
            user: User {
                id: "0".into(),
                name: Some("root".into()),
            },
            ..Default::default()
        },
        container: Some(Container {
            id: format!("abc{text}"),
            runtime: "docker".into(),
            name: None,
            ..Default::default()
        }),
        rule: Some(RuleRef {
            id: format!("ES-{text}"),
            name: format!("Shell {text}"),
            ..Default::default()
        }),
        message: Some(format!("shell in container: {text}")),
        ..Default::default()
    }
}

fn fmt(format: Format, payload: Payload) -> Formatter {
    Formatter {
        format,
        payload,
        facility: ::syslog::Facility::LOG_AUTHPRIV as u8,
        app_name: "execsentry".into(),
        procid: 7,
        max_bytes: 8192,
        hostname: true,
    }
}

const HOSTILE: &[&str] = &[
    "a\nb",
    "x\r\n<13>1 2024-01-01T00:00:00Z evil app - - - forged",
    "]\" forged=\"1\"] [x@1 a=\"b\"]",
    "\\",
    "\\\\\"",
    "a|b|c|10|",
    "k=v cs1=forged",
    "\u{0}\u{1b}[31m\u{7f}\u{85}\u{2028}\u{202e}",
    "tab\there",
    "\\x41\\xff",
    "é✓🚀",
];

/// Splits an RFC 5424 message into (header fields, SD params, msg), failing
/// on unbalanced SD. Param values are returned still escaped.
fn parse_5424(m: &str) -> (Vec<String>, Vec<(String, String)>, String) {
    let sd_start = m.find('[').expect("SD");
    let header: Vec<String> = m[..sd_start].split(' ').map(String::from).collect();
    let b = m.as_bytes();
    let mut i = sd_start + 1;
    let id_end = m[i..].find(' ').expect("sd id") + i;
    assert_eq!(&m[i..id_end], SD_ID);
    i = id_end;
    let mut params = Vec::new();
    while b[i] == b' ' {
        let eq = m[i..].find('=').expect("=") + i;
        let name = m[i + 1..eq].to_string();
        assert_eq!(b[eq + 1], b'"', "value opens with a quote");
        let mut j = eq + 2;
        while b[j] != b'"' {
            if b[j] == b'\\' {
                j += 1;
            }
            assert!(b[j] != b']' || b[j - 1] == b'\\', "raw ] inside a value");
            j += 1;
        }
        params.push((name, m[eq + 2..j].to_string()));
        i = j + 1;
    }
    assert_eq!(b[i], b']', "SD closes right after the last param");
    assert_eq!(b[i + 1], b' ');
    (header, params, m[i + 2..].to_string())
}

fn no_line_breaks(s: &str) {
    for c in s.chars() {
        let u = c as u32;
        assert!(
            u >= 0x20 && u != 0x7f && !(0x80..=0x9f).contains(&u) && u != 0x2028 && u != 0x2029,
            "raw control {u:#x} in {s:?}"
        );
    }
}

#[test]
fn rfc5424_shape_and_pri() {
    let m = String::from_utf8(fmt(Format::Rfc5424, Payload::Message).format(&alert("x"))).unwrap();
    // authpriv (10) * 8 + error (3) = 83: severity 73 maps to error.
    assert!(
        m.starts_with("<83>1 2024-05-01T12:34:56.123456Z node1 execsentry 7 alert ["),
        "{m}"
    );
    let (_, params, msg) = parse_5424(&m);
    let names: Vec<&str> = params.iter().map(|p| p.0.as_str()).collect();
    assert_eq!(
        names,
        [
            "rule_id",
            "severity",
            "risk_score",
            "pid",
            "container_id",
            "runtime",
            "event_id"
        ]
    );
    assert_eq!(params[0].1, "ES-x");
    assert_eq!(msg, "shell in container: x");
}

#[test]
fn hostile_strings_never_break_5424() {
    for payload in [Payload::Message, Payload::Json] {
        for h in HOSTILE {
            let m = String::from_utf8(fmt(Format::Rfc5424, payload).format(&alert(h))).unwrap();
            no_line_breaks(&m);
            let (header, params, _) = parse_5424(&m);
            assert_eq!(header.len(), 7, "{m}");
            assert_eq!(params.len(), 7, "{m}");
        }
    }
}

#[test]
fn sd_value_escapes_per_rfc() {
    assert_eq!(sd_value(r#"a"b]c\d"#), r#"a\"b\]c\\\\d"#);
    assert_eq!(sd_value("l1\nl2"), r"l1\\nl2");
}

#[test]
fn rfc3164_shape() {
    let m = String::from_utf8(fmt(Format::Rfc3164, Payload::Message).format(&alert("x"))).unwrap();
    assert_eq!(
        m,
        "<83>May  1 12:34:56 node1 execsentry[7]: shell in container: x"
    );
    for h in HOSTILE {
        let m =
            String::from_utf8(fmt(Format::Rfc3164, Payload::Message).format(&alert(h))).unwrap();
        no_line_breaks(&m);
    }
}

/// What `/dev/log` gets: syslog(3)'s local form, which journald parses
/// into SYSLOG_IDENTIFIER=execsentry and SYSLOG_PID (it would take a
/// HOSTNAME for the tag and store the line with no identifier).
#[test]
fn rfc3164_local_shape_has_no_hostname() {
    let f = Formatter {
        hostname: false,
        ..fmt(Format::Rfc3164, Payload::Message)
    };
    let m = String::from_utf8(f.format(&alert("x"))).unwrap();
    assert_eq!(
        m,
        "<83>May  1 12:34:56 execsentry[7]: shell in container: x"
    );
}

/// Splits on delimiters not preceded by an escaping backslash.
fn split_unescaped(s: &str, delim: char) -> Vec<String> {
    split_unescaped_n(s, delim, usize::MAX)
}

/// At most `n` fields; the last one keeps the rest verbatim.
fn split_unescaped_n(s: &str, delim: char, n: usize) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut esc = false;
    for c in s.chars() {
        if esc {
            esc = false;
        } else if c == '\\' {
            esc = true;
        } else if c == delim && out.len() < n {
            out.push(String::new());
            continue;
        }
        out.last_mut().unwrap().push(c);
    }
    out
}

fn cef_keys(ext: &str) -> Vec<String> {
    // Every unescaped `=` ends a key; the key is the word before it.
    let parts = split_unescaped(ext, '=');
    parts[..parts.len() - 1]
        .iter()
        .map(|p| p.rsplit(' ').next().unwrap_or("").to_string())
        .collect()
}

#[test]
fn cef_shape_and_hostile() {
    let f = fmt(Format::Cef, Payload::Message);
    let body = cef_body(&alert("x"));
    let expected = cef_keys(body.splitn(8, '|').nth(7).unwrap());
    assert!(expected.contains(&"cs3".to_string()));
    for h in HOSTILE {
        let m = String::from_utf8(f.format(&alert(h))).unwrap();
        no_line_breaks(&m);
        let body = &m[m.find("CEF:0|").unwrap()..];
        // The extension may hold raw pipes (CEF escapes `|` only in the
        // header), so the header is the first 7 unescaped pipes.
        let fields = split_unescaped_n(body, '|', 8);
        assert_eq!(fields.len(), 8, "{body}");
        assert_eq!(fields[1], "execsentry");
        assert_eq!(fields[6], "7", "severity 73 → CEF 7");
        assert_eq!(cef_keys(&fields[7]), expected, "{body}");
    }
}

#[test]
fn huge_argv_is_truncated_with_marker() {
    let big = "A".repeat(1 << 20);
    for format in [Format::Rfc5424, Format::Rfc3164, Format::Cef] {
        for payload in [Payload::Message, Payload::Json] {
            let m = fmt(format, payload).format(&alert(&big));
            assert!(m.len() <= 8192, "{format:?} {}", m.len());
            assert!(String::from_utf8(m).unwrap().ends_with(TRUNCATED));
        }
    }
    let m = String::from_utf8(fmt(Format::Rfc5424, Payload::Message).format(&alert(&big))).unwrap();
    parse_5424(&m);
}

#[test]
fn truncation_never_splits_chars_or_escapes() {
    for n in 150..170 {
        let s = format!("{}\\\\\\", "é".repeat(n / 2));
        let v = sd_value(&s);
        assert!(v.len() <= FIELD_MAX);
        let body = v.trim_end_matches(r"...[truncated\]");
        let trailing = body.bytes().rev().take_while(|b| *b == b'\\').count();
        assert_eq!(trailing % 2, 0, "{v}");
    }
}

#[test]
fn json_line_is_one_line_and_lossless() {
    for h in HOSTILE {
        let ev = alert(h);
        let line = json_line(&ev);
        no_line_breaks(&line);
        let back: Event = serde_json::from_str(&line).unwrap();
        assert_eq!(back, ev);
    }
}

#[test]
fn timestamps() {
    let t = Timestamp::parse("2024-05-01T12:34:56+02:00").unwrap();
    assert_eq!(t.rfc5424(), "2024-05-01T12:34:56.000000+02:00");
    assert_eq!(t.unix_millis(), Some(1_714_559_696_000));
    assert!(Timestamp::parse("2024-05-01T12:34:56Z\n<13>").is_none());
    assert!(Timestamp::parse("garbage").is_none());
    assert!(Timestamp::parse("2024-13-01T12:34:56Z").is_none());
}

#[test]
fn severity_table() {
    let mut ev = alert("x");
    for (s, want) in [(99, 2), (73, 3), (47, 4), (21, 5), (5, 6)] {
        ev.event.severity = Some(s);
        assert_eq!(syslog_severity(&ev) as u8, want, "{s}");
    }
    ev.event.severity = None;
    assert_eq!(syslog_severity(&ev) as u8, 6);
}

#[test]
fn error_fallback_is_one_valid_json_line_whatever_the_message() {
    for msg in [
        "plain",
        "a \"quoted\" key",
        "back\\slash \\u0041 and \\",
        "new\nline\r\tand \u{0}\u{1b}[31m",
        "\u{2028}\u{7f}\u{85} \u{fffd}",
    ] {
        let line = line_safe_json(&error_json(&msg)).into_owned();
        assert!(!line.contains('\n') && !line.contains('\r'), "{line}");
        let v: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line}: {e}"));
        assert_eq!(
            v["error"],
            format!("cannot serialize event: {msg}"),
            "{line}"
        );
        assert_eq!(v.as_object().unwrap().len(), 1);
    }
}

/// The escaping as it was before the fast path: every character looked at.
fn line_safe_reference(raw: &str) -> String {
    let mut out = String::new();
    for c in raw.chars() {
        let u = c as u32;
        if u == 0x7f || (0x80..=0x9f).contains(&u) || escaped_control_needed(c) {
            let _ = write!(out, "\\u{u:04x}");
        } else {
            out.push(c);
        }
    }
    out
}

#[test]
fn the_fast_path_escapes_exactly_as_every_character_did() {
    // Characters around each lead byte the fast path looks for, and every
    // escaped range's edges.
    let probes = [
        '\u{7e}',
        '\u{7f}',
        '\u{80}',
        '\u{9f}',
        '\u{a0}',
        '\u{ff}',
        '\u{2000}',
        '\u{200a}',
        '\u{200b}',
        '\u{200f}',
        '\u{2010}',
        '\u{2027}',
        '\u{2028}',
        '\u{202e}',
        '\u{202f}',
        '\u{2065}',
        '\u{2066}',
        '\u{2069}',
        '\u{206a}',
        '\u{efff}',
        '\u{f000}',
        '\u{fefe}',
        '\u{feff}',
        '\u{ff00}',
        '\u{fffd}',
        '\u{1f600}',
        'a',
    ];
    for a in probes {
        for b in probes {
            let text = format!("x{a}y{b}");
            let mut ev = alert(&text);
            ev.process.args = vec![text.clone(), format!("{b}{a}")];
            let raw = serde_json::to_string(&ev).unwrap();
            assert_eq!(line_safe_json(&raw), line_safe_reference(&raw), "{text:?}");
            assert_eq!(json_line(&ev), line_safe_reference(&raw), "{text:?}");
        }
    }
    for h in HOSTILE {
        let raw = serde_json::to_string(&alert(h)).unwrap();
        assert_eq!(json_line(&alert(h)), line_safe_reference(&raw), "{h:?}");
    }
}
