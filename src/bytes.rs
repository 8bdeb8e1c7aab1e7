//! Lossless text for kernel bytes, and escaping for line-oriented readers.
//!
//! Arguments and paths are bytes. In JSON we keep valid UTF-8 verbatim; an
//! argument that is not valid UTF-8 gets `\xNN` for each invalid byte and `\\`
//! for each backslash, and the event lists its index in
//! `execsentry.args_escaped`, so [`unescape`] recovers the exact bytes.
//! Human- and line-oriented outputs (syslog MSG, `tail`) additionally pass
//! through [`escape_control`], so no byte can end a line or fake a field.

use std::borrow::Cow;
use std::fmt::Write;

/// Renders `raw` as text. Returns `(text, escaped)`; `escaped` is true when
/// the text uses the `\xNN`/`\\` escapes and must be unescaped to get `raw`.
pub fn render(raw: &[u8]) -> (Cow<'_, str>, bool) {
    match std::str::from_utf8(raw) {
        Ok(s) => (Cow::Borrowed(s), false),
        Err(_) => (Cow::Owned(escape_invalid(raw)), true),
    }
}

fn escape_invalid(mut raw: &[u8]) -> String {
    let mut out = String::with_capacity(raw.len() + 8);
    while !raw.is_empty() {
        let (valid, rest) = match std::str::from_utf8(raw) {
            Ok(s) => (s, &raw[raw.len()..]),
            Err(e) => {
                let (ok, bad) = raw.split_at(e.valid_up_to());
                // SAFETY-free: `valid_up_to` guarantees `ok` is UTF-8.
                (std::str::from_utf8(ok).unwrap_or_default(), bad)
            }
        };
        for c in valid.chars() {
            if c == '\\' {
                out.push_str("\\\\");
            } else {
                out.push(c);
            }
        }
        raw = rest;
        if let Some((&b, tail)) = raw.split_first() {
            let _ = write!(out, "\\x{b:02x}");
            raw = tail;
        }
    }
    out
}

/// Inverse of [`render`] for a text that was escaped.
pub fn unescape(text: &str) -> Vec<u8> {
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 1 < b.len() {
            if b[i + 1] == b'\\' {
                out.push(b'\\');
                i += 2;
                continue;
            }
            // Parsed from bytes, not by slicing `text`: a slice could cut a
            // multi-byte character and panic.
            if b[i + 1] == b'x'
                && i + 3 < b.len()
                && let (Some(h), Some(l)) = (hex_val(b[i + 2]), hex_val(b[i + 3]))
            {
                out.push(h << 4 | l);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

fn hex_val(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

/// Appends `s` to `out` with every control character (C0, DEL, C1), and the
/// Unicode bidi/format characters that can reorder what a terminal shows,
/// replaced by a visible escape (`\n`, `\t`, `\x1b`, `\u{202e}`), and
/// backslashes doubled so that an escape cannot be forged either.
pub fn escape_control(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\x7f' => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if is_invisible_format(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
}

/// Convenience form of [`escape_control`].
pub fn escaped_control(s: &str) -> Cow<'_, str> {
    if s.chars()
        .all(|c| c != '\\' && (c as u32) >= 0x20 && c != '\x7f' && !is_invisible_format(c))
    {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    escape_control(s, &mut out);
    Cow::Owned(out)
}

fn is_invisible_format(c: char) -> bool {
    matches!(c as u32,
        0x80..=0x9f            // C1 controls
        | 0x200b..=0x200f      // zero-width, LRM/RLM
        | 0x2028..=0x202e      // line/para separators, bidi embeddings
        | 0x2066..=0x2069      // bidi isolates
        | 0xfeff)
}

/// ECS `process.command_line`: the arguments joined by single spaces, as
/// Elastic Defend builds it.
pub fn command_line(args: &[String]) -> String {
    args.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_utf8_is_verbatim() {
        let (t, esc) = render("héllo\\ wörld\n".as_bytes());
        assert_eq!(t, "héllo\\ wörld\n");
        assert!(!esc);
    }

    #[test]
    fn invalid_utf8_round_trips() {
        let raw = b"a\xffb\\x41\xc3";
        let (t, esc) = render(raw);
        assert!(esc);
        assert_eq!(t, "a\\xffb\\\\x41\\xc3");
        assert_eq!(unescape(&t), raw);
    }

    #[test]
    fn unescape_never_panics_on_odd_text() {
        for t in [r"\\", r"\x", r"\xé", r"\xéé", r"\x4", r"é\x4é", r"\"] {
            let _ = unescape(t);
        }
        assert_eq!(unescape(r"\x41\\"), br"A\");
    }

    #[test]
    fn control_and_bidi_are_escaped() {
        let s = "ls\n<13>forged\x1b[31m\u{202e}x\\";
        assert_eq!(escaped_control(s), "ls\\n<13>forged\\x1b[31m\\u{202e}x\\\\");
        assert_eq!(escaped_control("plain text"), "plain text");
    }
}
