//! Tokens of the EQL subset, each with its byte offset in the query text so
//! that every error can point at the exact column.

use super::QueryError;

#[derive(Debug, Clone, PartialEq)]
pub enum Tok {
    /// Field names, keywords and function names (`process.args`, `and`).
    Ident(String),
    /// `?field`: an optional field, null where the schema lacks it.
    Opt(String),
    Str(String),
    Num(f64),
    LParen,
    RParen,
    LBrack,
    RBrack,
    Comma,
    Eq,
    Ne,
    Colon,
    Lt,
    Le,
    Gt,
    Ge,
    Tilde,
    Eof,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Token {
    pub tok: Tok,
    pub pos: usize,
}

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == '@'
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '@')
}

pub fn lex(src: &str) -> Result<Vec<Token>, QueryError> {
    let mut out = Vec::new();
    let mut it = src.char_indices().peekable();
    while let Some(&(pos, c)) = it.peek() {
        if c.is_whitespace() {
            it.next();
            continue;
        }
        let rest = &src[pos..];
        // Comments: `//` to the end of the line, `/* … */` (not nested).
        let skip = if rest.starts_with("//") {
            Some(rest.find('\n').unwrap_or(rest.len()))
        } else if let Some(body) = rest.strip_prefix("/*") {
            match body.find("*/") {
                Some(end) => Some(end + 4),
                None => return Err(QueryError::new(pos, "unterminated /* comment")),
            }
        } else {
            None
        };
        if let Some(len) = skip {
            while it.peek().is_some_and(|&(p, _)| p < pos + len) {
                it.next();
            }
            continue;
        }
        let single = match c {
            '(' => Some(Tok::LParen),
            ')' => Some(Tok::RParen),
            '[' => Some(Tok::LBrack),
            ']' => Some(Tok::RBrack),
            ',' => Some(Tok::Comma),
            ':' => Some(Tok::Colon),
            '~' => Some(Tok::Tilde),
            _ => None,
        };
        if let Some(tok) = single {
            it.next();
            out.push(Token { tok, pos });
            continue;
        }
        let two = |a: &str| rest.starts_with(a);
        let (tok, len) = if two("==") {
            (Tok::Eq, 2)
        } else if two("!=") {
            (Tok::Ne, 2)
        } else if two("<=") {
            (Tok::Le, 2)
        } else if two(">=") {
            (Tok::Ge, 2)
        } else if c == '<' {
            (Tok::Lt, 1)
        } else if c == '>' {
            (Tok::Gt, 1)
        } else if c == '=' {
            return Err(QueryError::new(
                pos,
                "`=` is not an operator; use `==` or `:`",
            ));
        } else if c == '"' {
            let (s, len) = string(src, pos)?;
            (Tok::Str(s), len)
        } else if c == '\'' {
            return Err(QueryError::new(pos, "strings use double quotes in EQL"));
        } else if c.is_ascii_digit()
            || (c == '-' && rest[1..].starts_with(|d: char| d.is_ascii_digit()))
        {
            let len = rest[1..]
                .find(|d: char| !(d.is_ascii_alphanumeric() || d == '.' || d == '_'))
                .map_or(rest.len(), |n| n + 1);
            let text = &rest[..len];
            let n: f64 = text
                .parse()
                .map_err(|_| QueryError::new(pos, format!("invalid number `{text}`")))?;
            (Tok::Num(n), len)
        } else if is_ident_start(c) {
            let len = rest.find(|d: char| !is_ident_char(d)).unwrap_or(rest.len());
            (Tok::Ident(rest[..len].to_string()), len)
        } else if c == '?' && rest[1..].starts_with(is_ident_start) {
            let body = &rest[1..];
            let len = body.find(|d: char| !is_ident_char(d)).unwrap_or(body.len());
            (Tok::Opt(body[..len].to_string()), len + 1)
        } else {
            return Err(QueryError::new(pos, format!("unexpected character `{c}`")));
        };
        out.push(Token { tok, pos });
        // Skip `len` bytes; every token ends on a char boundary.
        while it.peek().is_some_and(|&(p, _)| p < pos + len) {
            it.next();
        }
    }
    out.push(Token {
        tok: Tok::Eof,
        pos: src.len(),
    });
    Ok(out)
}

/// A `"..."` string with EQL escapes, or a `"""..."""` raw string. Returns
/// the value and the length of its source text.
fn string(src: &str, start: usize) -> Result<(String, usize), QueryError> {
    let rest = &src[start..];
    if let Some(raw) = rest.strip_prefix("\"\"\"") {
        let end = raw
            .find("\"\"\"")
            .ok_or_else(|| QueryError::new(start, "unterminated \"\"\" string"))?;
        return Ok((raw[..end].to_string(), end + 6));
    }
    let mut out = String::new();
    let mut chars = rest.char_indices().skip(1);
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((out, i + 1)),
            '\\' => {
                let (j, e) = chars
                    .next()
                    .ok_or_else(|| QueryError::new(start + i, "unterminated string"))?;
                out.push(match e {
                    '"' => '"',
                    '\\' => '\\',
                    '\'' => '\'',
                    'n' => '\n',
                    'r' => '\r',
                    't' => '\t',
                    _ => {
                        return Err(QueryError::new(
                            start + j - 1,
                            format!("unknown escape `\\{e}` (write `\\\\` for a backslash)"),
                        ));
                    }
                });
            }
            '\n' => return Err(QueryError::new(start + i, "newline inside a string")),
            c => out.push(c),
        }
    }
    Err(QueryError::new(start, "unterminated string"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_and_positions() {
        let t = lex(r#"process.args[1] in~ ("a\"b", -2.5)"#).unwrap();
        let toks: Vec<_> = t.iter().map(|t| (&t.tok, t.pos)).collect();
        assert_eq!(toks[0], (&Tok::Ident("process.args".into()), 0));
        assert_eq!(toks[1], (&Tok::LBrack, 12));
        assert_eq!(toks[2], (&Tok::Num(1.0), 13));
        assert_eq!(toks[5], (&Tok::Tilde, 18));
        assert_eq!(toks[7], (&Tok::Str("a\"b".into()), 21));
        assert_eq!(toks[9], (&Tok::Num(-2.5), 29));
    }

    #[test]
    fn comments_and_optional_fields() {
        let t = lex("a // x == \"y\"\n /* b\n c */ ?p.q : \"/*\" // end").unwrap();
        let toks: Vec<_> = t.iter().map(|t| t.tok.clone()).collect();
        assert_eq!(
            toks,
            vec![
                Tok::Ident("a".into()),
                Tok::Opt("p.q".into()),
                Tok::Colon,
                Tok::Str("/*".into()),
                Tok::Eof
            ]
        );
        assert_eq!(t[1].pos, 26);
        assert_eq!(lex("a /* open").unwrap_err().pos, 2);
        assert!(lex("a ? b").is_err());
    }

    #[test]
    fn errors() {
        assert_eq!(lex("a = 1").unwrap_err().pos, 2);
        assert_eq!(lex("a == \"x").unwrap_err().pos, 5);
        assert_eq!(lex("a == \"\\q\"").unwrap_err().pos, 6);
        assert_eq!(lex("a == 'x'").unwrap_err().pos, 5);
        assert_eq!(
            lex(r#"x == """a\d""""#).unwrap()[2].tok,
            Tok::Str("a\\d".into())
        );
    }
}
