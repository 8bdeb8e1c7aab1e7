//! Helpers for walking toml's spanned document tree: byte offsets to
//! `file:line:col`, typed getters with positioned errors, strict key checks
//! with "did you mean", and the map from a position inside a string value
//! (an EQL query) back to the file.

use std::ops::Range;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

pub type V<'i> = Spanned<DeValue<'i>>;

/// Where errors point: one source file.
#[derive(Clone, Copy)]
pub struct Src<'a> {
    pub name: &'a str,
    pub text: &'a str,
}

impl Src<'_> {
    /// `file:line:col` of a byte offset; the column counts characters.
    pub fn loc(&self, byte: usize) -> String {
        let byte = byte.min(self.text.len());
        let before = self.text.get(..byte).unwrap_or("");
        let line = before.matches('\n').count() + 1;
        let col = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
        format!("{}:{line}:{col}", self.name)
    }

    pub fn err(&self, byte: usize, msg: impl std::fmt::Display) -> String {
        format!("{}: {msg}", self.loc(byte))
    }
}

pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            cur.push(
                (prev[j] + usize::from(ca != *cb))
                    .min(prev[j + 1] + 1)
                    .min(cur[j] + 1),
            );
        }
        prev = cur;
    }
    prev[b.len()]
}

pub fn unknown_key(
    src: Src,
    key: &Spanned<std::borrow::Cow<str>>,
    table: &str,
    known: &[&str],
) -> String {
    let k = key.get_ref();
    let hint = known
        .iter()
        .map(|n| (edit_distance(k, n), n))
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, n)| format!(" (did you mean `{n}`?)"))
        .unwrap_or_default();
    src.err(
        key.span().start,
        format!("unknown key `{k}` in {table}{hint}"),
    )
}

/// Checks the keys of `t` against `known` (plus `ignored`), collecting errors.
pub fn check_keys(
    src: Src,
    t: &DeTable,
    table: &str,
    known: &[&str],
    ignored: &[&str],
    errs: &mut Vec<String>,
) {
    for (k, _) in t.iter() {
        if !known.contains(&k.get_ref().as_ref()) && !ignored.contains(&k.get_ref().as_ref()) {
            errs.push(unknown_key(src, k, table, known));
        }
    }
}

pub fn get<'a, 'i>(t: &'a DeTable<'i>, key: &str) -> Option<&'a V<'i>> {
    t.get(key)
}

pub fn want_str(src: Src, v: &V, what: &str) -> Result<String, String> {
    v.get_ref()
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| src.err(v.span().start, format!("{what} must be a string")))
}

pub fn want_num(src: Src, v: &V, what: &str) -> Result<f64, String> {
    match v.get_ref() {
        DeValue::Integer(i) => i.as_str().replace('_', "").parse::<f64>().ok(),
        DeValue::Float(f) => f
            .as_str()
            .replace('_', "")
            .parse::<f64>()
            .ok()
            .filter(|x| x.is_finite()),
        _ => None,
    }
    .ok_or_else(|| src.err(v.span().start, format!("{what} must be a number")))
}

pub fn want_bool(src: Src, v: &V, what: &str) -> Result<bool, String> {
    v.get_ref()
        .as_bool()
        .ok_or_else(|| src.err(v.span().start, format!("{what} must be true or false")))
}

pub fn want_table<'a, 'i>(src: Src, v: &'a V<'i>, what: &str) -> Result<&'a DeTable<'i>, String> {
    v.get_ref()
        .as_table()
        .ok_or_else(|| src.err(v.span().start, format!("{what} must be a table")))
}

/// Array of tables (`[[rule.test]]`) or a single inline table.
pub fn tables<'a, 'i>(
    src: Src,
    v: &'a V<'i>,
    what: &str,
) -> Result<Vec<(&'a DeTable<'i>, usize)>, String> {
    match v.get_ref() {
        DeValue::Array(a) => a
            .iter()
            .map(|x| want_table(src, x, what).map(|t| (t, x.span().start)))
            .collect(),
        DeValue::Table(t) => Ok(vec![(t, v.span().start)]),
        _ => Err(src.err(v.span().start, format!("{what} must be an array of tables"))),
    }
}

/// Maps a byte offset inside a TOML string's value to the byte offset of
/// that character in the file, accounting for the quotes, the newline TOML
/// trims after `'''`/`"""`, and escapes in basic strings.
pub fn value_offset(text: &str, span: Range<usize>, off: usize) -> usize {
    let Some(raw) = text.get(span.clone()) else {
        return span.start;
    };
    let (delim, basic) = if raw.starts_with("'''") {
        (3, false)
    } else if raw.starts_with("\"\"\"") {
        (3, true)
    } else if raw.starts_with('\'') {
        (1, false)
    } else if raw.starts_with('"') {
        (1, true)
    } else {
        return span.start + off;
    };
    let mut body = &raw[delim..];
    let mut start = span.start + delim;
    if delim == 3 {
        let trim = if body.starts_with("\r\n") {
            2
        } else {
            usize::from(body.starts_with('\n'))
        };
        body = &body[trim..];
        start += trim;
    }
    if !basic {
        return start + off;
    }
    let (mut decoded, mut it) = (0usize, body.char_indices().peekable());
    while let Some((i, c)) = it.next() {
        if decoded >= off {
            return start + i;
        }
        if c != '\\' {
            decoded += c.len_utf8();
            continue;
        }
        match it.next() {
            Some((_, 'u')) | Some((_, 'U')) | Some((_, 'x')) => {
                let n = match body[i + 1..].chars().next() {
                    Some('u') => 4,
                    Some('U') => 8,
                    _ => 2,
                };
                let hex: String = (0..n).filter_map(|_| it.next().map(|(_, h)| h)).collect();
                let ch = u32::from_str_radix(&hex, 16)
                    .ok()
                    .and_then(char::from_u32)
                    .unwrap_or('?');
                decoded += ch.len_utf8();
            }
            Some((_, w)) if w.is_whitespace() => {
                // Line-ending backslash: swallows all following whitespace.
                while it.peek().is_some_and(|(_, c)| c.is_whitespace()) {
                    it.next();
                }
            }
            Some(_) => decoded += 1,
            None => break,
        }
    }
    start + body.len().min(off)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_in_strings() {
        let text = "q = '''\nab'''\nr = \"a\\\"bc\"\ns = \"\"\"\\\n   xy\"\"\"";
        let doc = DeTable::parse(text).unwrap();
        let span = |k: &str| doc.get_ref().get(k).unwrap().span();
        assert_eq!(&text[value_offset(text, span("q"), 1)..][..1], "b");
        assert_eq!(&text[value_offset(text, span("r"), 2)..][..1], "b");
        assert_eq!(&text[value_offset(text, span("s"), 1)..][..1], "y");
    }

    #[test]
    fn distance() {
        assert_eq!(edit_distance("thresold", "threshold"), 1);
        assert_eq!(edit_distance("", "ab"), 2);
    }
}
