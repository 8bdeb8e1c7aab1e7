//! The body of every fuzz target, shared by the libFuzzer binaries
//! (`fuzz/fuzz_targets/*.rs`, nightly) and by `tests/fuzz_corpus.rs`, which
//! replays the committed corpora and crash inputs on stable so `make test`
//! covers them. One body per target means a replayed input exercises exactly
//! what the fuzzer exercised.
//!
//! Each body panics when an invariant breaks, not only when the code under
//! test panics: "no crash" is a weak property for parsers whose whole point
//! is that hostile bytes come out exact (JSON) or inert (syslog, CEF).
//!
//! Included with `#[path]` by both sides, so it depends only on `execsentry`
//! and `serde_json` (a dependency of both).

#![allow(dead_code)]

use execsentry::bytes;
use execsentry::config::{Format, Payload};
use execsentry::container;
use execsentry::event::{Container, Event, Namespaces, RuleRef};
use execsentry::fanotify::mounts;
use execsentry::netlink::wire;
use execsentry::procfs;
use execsentry::rules::RuleSet;
use execsentry::sink::format::{Formatter, SD_ID, json_line};

/// A target's name (its corpus directory) and its body.
pub type Target = (&'static str, fn(&[u8]));

/// Every target.
pub const TARGETS: &[Target] = &[
    ("netlink_wire", netlink_wire),
    ("proc_stat", proc_stat),
    ("proc_status", proc_status),
    ("proc_cmdline", proc_cmdline),
    ("mountinfo", mountinfo),
    ("container_detect", container_detect),
    ("rules_parse", rules_parse),
    ("syslog_format", syslog_format),
    ("bytes_escape", bytes_escape),
];

/// Proc connector datagrams. Every record that decodes must survive the
/// encoder and decode back to itself: the encoder builds test fixtures, so
/// a mismatch would make those fixtures lie.
pub fn netlink_wire(data: &[u8]) {
    for item in wire::decode(data) {
        let _ = item.map_err(|e| e.to_string());
    }
    for rec in wire::decode_records(data).flatten() {
        let mut buf = Vec::new();
        wire::encode_record(&rec, &mut buf);
        let back: Vec<_> = wire::decode_records(&buf).collect();
        assert_eq!(back, [Ok(rec)], "encode/decode round trip");
    }
}

/// `/proc/<pid>/stat`: the comm is whatever a process named itself.
pub fn proc_stat(data: &[u8]) {
    if let Some(st) = procfs::parse_stat(data) {
        assert!(st.comm.len() <= data.len());
        let _ = procfs::tty_major_minor(st.tty_nr);
    }
}

/// `/proc/<pid>/status` (the `Name:` line is the process's own choice).
pub fn proc_status(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Some(st) = procfs::parse_status(&text) {
        assert!(procfs::cap_names(st.cap_eff).len() <= 64);
    }
}

/// `/proc/<pid>/cmdline` and a namespace link target. Splitting must be
/// lossless: the arguments joined by NUL give back the cmdline without its
/// final NUL.
pub fn proc_cmdline(data: &[u8]) {
    let args: Vec<&[u8]> = procfs::split_cmdline(data).collect();
    let body = data.strip_suffix(b"\0").unwrap_or(data);
    if data.is_empty() {
        assert!(args.is_empty());
    } else {
        assert_eq!(args.join(&0u8), body, "split_cmdline lost bytes");
    }
    let _ = procfs::parse_ns_link(data);
}

/// `/proc/<pid>/mountinfo`, which carries paths any user can create.
pub fn mountinfo(data: &[u8]) {
    let parsed = mounts::parse(data);
    for m in &parsed {
        assert!(m.mount_point.len() <= data.len());
    }
    let _ = mounts::targets(&parsed);
    for field in data.split(|&c| c == b' ') {
        assert!(mounts::unescape(field).len() <= field.len());
    }
}

/// `/proc/<pid>/cgroup` plus namespaces. The first byte says which of the
/// process's namespaces differ from the host's, so the fallback paths are
/// reached too.
pub fn container_detect(data: &[u8]) {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let host = Namespaces {
        pid: 1,
        mnt: 2,
        net: 3,
        uts: 4,
        ipc: 5,
        user: 6,
        cgroup: 7,
    };
    let mut ns = host;
    if flags & 1 != 0 {
        ns.pid = 11;
    }
    if flags & 2 != 0 {
        ns.mnt = 12;
    }
    if flags & 4 != 0 {
        ns.cgroup = 17;
    }
    let text = String::from_utf8_lossy(rest);
    if let Some(c) = container::detect(&text, &ns, &host) {
        assert!(
            container::RUNTIMES.contains(&c.runtime),
            "runtime {}",
            c.runtime
        );
    }
    if flags & 7 == 0 {
        // Same namespaces as the host: only a cgroup path can say
        // "container", and that path must then be in the text.
        if let Some(c) = container::detect(&text, &host, &host) {
            assert!(c.runtime != "unknown");
        }
    }
}

/// Rule files (TOML with EQL queries). A rule set that loads is evaluated
/// against a few events and its own test cases, so the compiled matchers
/// are fuzzed along with the parser. A `\0` in the input starts a second
/// file, to reach overrides and duplicate ids.
pub fn rules_parse(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let sources: Vec<(String, String)> = text
        .split('\0')
        .take(4)
        .enumerate()
        .map(|(i, t)| (format!("fuzz{i}.toml"), t.to_owned()))
        .collect();
    let Ok(set) = RuleSet::from_sources(&sources) else {
        return;
    };
    let mut out = Vec::new();
    for ev in sample_events() {
        out.clear();
        set.evaluate(&ev, &mut out);
        for m in &out {
            let alert = set.alert(&ev, m);
            assert!(alert.is_alert());
        }
    }
    let _ = set.run_tests();
}

fn sample_events() -> Vec<Event> {
    let mut evs = Vec::new();
    for (name, args) in [
        (
            "kubectl",
            &["kubectl", "exec", "-it", "web-0", "--", "sh"][..],
        ),
        (
            "ctr",
            &["ctr", "tasks", "exec", "--exec-id", "x", "c1", "sh"][..],
        ),
        (
            "curl",
            &["curl", "-k", "https://10.0.0.1:10250/run/ns/pod/c"][..],
        ),
        ("K\u{e9}bectl", &["\u{202e}", "a\nb", "\\x41"][..]),
    ] {
        let mut ev = Event::default();
        ev.event.kind = "event".into();
        ev.event.action = "exec".into();
        ev.process.name = name.into();
        ev.process.executable = format!("/usr/bin/{name}");
        ev.process.args = args.iter().map(|a| (*a).to_owned()).collect();
        ev.process.command_line = bytes::command_line(&ev.process.args);
        ev.process.user.id = "0".into();
        ev.container = Some(Container {
            id: "4c1f0a9e7b2d".into(),
            runtime: "docker".into(),
            ..Container::default()
        });
        evs.push(ev.clone());
        ev.container = None;
        evs.push(ev);
    }
    evs
}

/// Builds an event from fuzz bytes: `\0` separates the fields, so the
/// fuzzer can put any byte (newline, ESC, `"`, `]`, `|`, `=`, bidi marks,
/// a backslash before the delimiter) into any one of them.
pub fn event_from(data: &[u8]) -> Event {
    let (flags, rest) = data.split_first().map_or((0, &[][..]), |(f, r)| (*f, r));
    let mut fields = rest
        .split(|&c| c == 0)
        .map(|f| String::from_utf8_lossy(f).into_owned());
    let mut next = || fields.next().unwrap_or_default();
    let mut ev = Event {
        timestamp: next(),
        ..Event::default()
    };
    ev.event.kind = if flags & 1 != 0 { "alert" } else { "event" }.into();
    ev.event.action = "exec".into();
    ev.event.id = next();
    ev.event.severity = (flags & 2 != 0).then_some(flags.wrapping_mul(7) % 101);
    ev.event.risk_score = (flags & 4 != 0).then_some(f64::from(flags));
    ev.host.hostname = next();
    ev.process.pid = u32::from(flags) * 977;
    ev.process.name = next();
    ev.process.executable = next();
    ev.process.user.id = next();
    let user = next();
    ev.process.user.name = (!user.is_empty()).then_some(user);
    if flags & 8 != 0 {
        ev.container = Some(Container {
            id: next(),
            runtime: next(),
            ..Container::default()
        });
    }
    if flags & 1 != 0 {
        ev.rule = Some(RuleRef {
            id: next(),
            name: next(),
            ..RuleRef::default()
        });
        let msg = next();
        ev.message = (flags & 16 != 0).then_some(msg);
    }
    ev.process.args = std::iter::from_fn(|| fields.next()).take(64).collect();
    ev.process.args_count = ev.process.args.len() as u32;
    ev.process.command_line = bytes::command_line(&ev.process.args);
    ev
}

/// The syslog and CEF formatters, both payloads, and the JSON line. Checked
/// for every message: one line, no raw control or bidi character, an SD
/// that parses with exactly the params the formatter writes, a CEF header
/// of seven fields and an extension whose keys are the formatter's own.
/// The JSON line must parse back to the very same event.
pub fn syslog_format(data: &[u8]) {
    let ev = event_from(data);
    let json = json_line(&ev);
    assert_no_raw_controls(&json);
    let back: Event = serde_json::from_str(&json).expect("json_line is JSON");
    assert_eq!(back, ev, "json_line lost data");

    for format in [Format::Rfc5424, Format::Rfc3164, Format::Cef] {
        for payload in [Payload::Message, Payload::Json] {
            let f = Formatter {
                format,
                payload,
                facility: 10 << 3,
                app_name: "execsentry".into(),
                procid: 4242,
                max_bytes: 2048,
                hostname: true,
            };
            let msg = String::from_utf8(f.format(&ev)).expect("syslog message is UTF-8");
            assert!(msg.len() <= 2048, "max_bytes exceeded: {}", msg.len());
            assert_no_raw_controls(&msg);
            match format {
                Format::Rfc5424 => check_rfc5424(&msg, &ev, payload),
                Format::Rfc3164 => check_rfc3164(&msg),
                Format::Cef => check_cef(&msg, &ev),
            }
        }
    }
}

/// Nothing a terminal or a line-based reader would act on.
pub fn assert_no_raw_controls(s: &str) {
    for c in s.chars() {
        let u = c as u32;
        let bad = u < 0x20
            || (0x7f..=0x9f).contains(&u)
            || (0x200b..=0x200f).contains(&u)
            || (0x2028..=0x202e).contains(&u)
            || (0x2066..=0x2069).contains(&u)
            || u == 0xfeff;
        assert!(!bad, "raw U+{u:04X} in {s:?}");
    }
}

/// Skips `n` space-separated header tokens, returning the rest.
fn after_tokens(s: &str, n: usize) -> &str {
    let mut rest = s;
    for _ in 0..n {
        let (tok, r) = rest.split_once(' ').expect("header token");
        assert!(!tok.is_empty(), "empty header token in {s:?}");
        rest = r;
    }
    rest
}

/// `<PRI>1 TS HOST APP PROCID MSGID [execsentry@32473 k="v"...] MSG`.
pub fn check_rfc5424(msg: &str, ev: &Event, payload: Payload) {
    assert!(msg.starts_with('<'), "{msg:?}");
    let sd = after_tokens(msg, 6);
    let mut rest = sd
        .strip_prefix('[')
        .and_then(|r| r.strip_prefix(SD_ID))
        .unwrap_or_else(|| panic!("no SD in {msg:?}"));
    let mut names = Vec::new();
    loop {
        if let Some(r) = rest.strip_prefix(']') {
            rest = r;
            break;
        }
        let r = rest.strip_prefix(' ').expect("space before SD-PARAM");
        let (name, r) = r.split_once("=\"").expect("SD-PARAM name");
        assert!(
            !name.is_empty() && name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
            "SD-PARAM name {name:?} in {msg:?}"
        );
        names.push(name);
        // PARAM-VALUE: `\` escapes the next char; an unescaped `"` ends it.
        let mut chars = r.char_indices();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => {
                    chars.next().expect("dangling escape in SD");
                }
                Some((i, '"')) => break i,
                Some((_, ']')) => panic!("unescaped ] in SD value: {msg:?}"),
                Some(_) => {}
                None => panic!("unterminated SD value: {msg:?}"),
            }
        };
        rest = &r[end + 1..];
    }
    let mut want = Vec::new();
    if ev.rule.is_some() {
        want.push("rule_id");
    }
    if ev.event.severity.is_some() {
        want.push("severity");
    }
    if ev.event.risk_score.is_some() {
        want.push("risk_score");
    }
    want.push("pid");
    want.push("container_id");
    if ev.container.is_some() {
        want.push("runtime");
    }
    want.push("event_id");
    assert_eq!(names, want, "SD params of {msg:?}");
    let body = rest.strip_prefix(' ').expect("space before MSG");
    if payload == Payload::Json && !body.ends_with("...[truncated]") {
        let back: Event = serde_json::from_str(body).expect("JSON payload");
        assert_eq!(&back, ev);
    }
}

/// `<PRI>Mmm dd hh:mm:ss HOST APP[PROCID]: MSG`.
pub fn check_rfc3164(msg: &str) {
    assert!(msg.starts_with('<'), "{msg:?}");
    // The day is space-padded (`Jan  5`), so split on the fixed layout:
    // `<PRI>` then 15 bytes of timestamp.
    let gt = msg.find('>').expect("PRI");
    let rest = &msg[gt + 1..];
    assert!(rest.len() > 16 && rest.as_bytes()[15] == b' ', "{msg:?}");
    let rest = after_tokens(&rest[16..], 1);
    assert!(rest.starts_with("execsentry[4242]: "), "{msg:?}");
}

/// `<PRI>Mmm dd hh:mm:ss HOST CEF:0|v|p|ver|id|name|sev|k=v k=v...`.
pub fn check_cef(msg: &str, ev: &Event) {
    let body = &msg[msg.find("CEF:0|").expect("CEF prefix")..];
    // Header: seven unescaped `|`.
    let mut fields = Vec::new();
    let mut cur = String::new();
    let mut chars = body.chars();
    while fields.len() < 7 {
        match chars.next() {
            Some('\\') => {
                cur.push('\\');
                cur.push(chars.next().expect("dangling escape in CEF header"));
            }
            Some('|') => fields.push(std::mem::take(&mut cur)),
            Some(c) => cur.push(c),
            None => panic!("CEF header has {} fields: {msg:?}", fields.len()),
        }
    }
    assert_eq!(&fields[..3], ["CEF:0", "execsentry", "execsentry"]);
    let sev: u8 = fields[6].parse().expect("CEF severity");
    assert!(sev <= 10);
    // Extension: keys are the words before each unescaped `=`.
    let ext: String = chars.collect();
    let mut keys = Vec::new();
    let mut word_start = 0;
    let mut it = ext.char_indices();
    while let Some((i, c)) = it.next() {
        match c {
            '\\' => {
                // The whole message may be cut right after a backslash.
                it.next();
            }
            ' ' => word_start = i + 1,
            '=' => keys.push(&ext[word_start..i]),
            _ => {}
        }
    }
    let mut want = Vec::new();
    if execsentry::sink::format::Timestamp::parse(&ev.timestamp).is_some() {
        want.push("rt");
    }
    want.extend(["dvchost", "spid", "sproc", "filePath", "suid"]);
    if ev.process.user.name.is_some() {
        want.push("suser");
    }
    want.extend(["cs1Label", "cs1", "cs2Label", "cs2", "cs3Label", "cs3"]);
    if ev.event.risk_score.is_some() {
        want.extend(["cn1Label", "cn1"]);
    }
    want.extend(["externalId", "msg"]);
    // The message is cut at max_bytes, so the tail keys may be missing, but
    // every key present must be the formatter's, in its order.
    assert!(
        keys.len() <= want.len() && keys[..] == want[..keys.len()],
        "CEF keys {keys:?} in {msg:?}"
    );
    if !msg.ends_with("...[truncated]") {
        assert_eq!(keys, want, "CEF keys of {msg:?}");
    }
}

/// Lossless rendering of bytes and the control escaping.
pub fn bytes_escape(data: &[u8]) {
    let (text, escaped) = bytes::render(data);
    if escaped {
        assert_eq!(bytes::unescape(&text), data, "render/unescape round trip");
    } else {
        assert_eq!(text.as_bytes(), data);
    }
    let lossy = String::from_utf8_lossy(data);
    let _ = bytes::unescape(&lossy);
    let esc = bytes::escaped_control(&lossy);
    assert_no_raw_controls(&esc);
    let mut out = String::new();
    bytes::escape_control(&lossy, &mut out);
    assert_eq!(out, esc);
}
