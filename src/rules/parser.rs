//! Parses the EQL subset into an AST whose nodes keep byte offsets, so the
//! compiler can report unknown fields and type errors at the right column.
//! `not` binds tighter than `and`/`or` and applies to a whole predicate, as
//! in Elasticsearch's EQL grammar: `not a in (..)` is `not (a in (..))`.

use super::QueryError;
use super::lexer::{Tok, Token, lex};

/// Nesting limit for parentheses, `not` and function calls: deep enough for
/// any real rule, shallow enough that recursion cannot exhaust the stack.
pub const MAX_DEPTH: usize = 64;

#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    And(Vec<Expr>),
    Or(Vec<Expr>),
    Not(Box<Expr>),
    Const(bool),
    Pred(Pred),
}

#[derive(Debug, Clone, PartialEq)]
pub struct FieldRef {
    pub name: String,
    pub index: Option<usize>,
    pub pos: usize,
    /// Written `?name`: null, not an error, where no event has the field.
    pub optional: bool,
}

/// An operand: a literal or, on either side of a comparison or in any
/// argument of a function, a field.
#[derive(Debug, Clone, PartialEq)]
pub enum Lit {
    Str(String),
    Num(f64),
    Bool(bool),
    Null,
    Field(FieldRef),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmp {
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    Eq,
    Ne,
    /// `:` — case-insensitive, wildcards.
    Colon,
    Like {
        ci: bool,
    },
    Regex {
        ci: bool,
    },
    In {
        ci: bool,
    },
    NotIn {
        ci: bool,
    },
    Cmp(Cmp),
    /// startsWith, endsWith, stringContains, has, has_any.
    Func {
        name: String,
        ci: bool,
    },
    /// `length(field) <op> n`; `op` is `None` for `==` and `!=` is negated.
    Length {
        op: Option<Cmp>,
        negate: bool,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Pred {
    /// The left operand: a field, except where a function's first argument
    /// is a literal.
    pub lhs: (Lit, usize),
    pub op: Op,
    pub op_pos: usize,
    pub values: Vec<(Lit, usize)>,
}

struct Parser {
    toks: Vec<Token>,
    i: usize,
    depth: usize,
}

/// Parses a full rule query: `process where <condition>`.
pub fn parse_query(src: &str) -> Result<Expr, QueryError> {
    let mut p = Parser::new(src)?;
    let t = p.peek().clone();
    match &t.tok {
        Tok::Ident(c) if c.eq_ignore_ascii_case("process") => {}
        Tok::Ident(c) if p.peek_at(1).is_some_and(|n| is_kw(n, "where")) => {
            return Err(QueryError::new(
                t.pos,
                format!("event category `{c}` is not supported; only `process where` queries are"),
            ));
        }
        _ => {
            return Err(QueryError::new(
                t.pos,
                "expected `process where <condition>`",
            ));
        }
    }
    p.i += 1;
    if !is_kw(p.peek(), "where") {
        return Err(QueryError::new(
            p.peek().pos,
            "expected `where` after `process`",
        ));
    }
    p.i += 1;
    p.finish()
}

/// Parses a bare condition (the `when` of scores and exceptions).
pub fn parse_condition(src: &str) -> Result<Expr, QueryError> {
    Parser::new(src)?.finish()
}

fn is_kw(t: &Token, kw: &str) -> bool {
    matches!(&t.tok, Tok::Ident(s) if s.eq_ignore_ascii_case(kw))
}

impl Parser {
    fn new(src: &str) -> Result<Parser, QueryError> {
        Ok(Parser {
            toks: lex(src)?,
            i: 0,
            depth: 0,
        })
    }

    fn finish(mut self) -> Result<Expr, QueryError> {
        let e = self.or()?;
        let t = self.peek();
        if t.tok != Tok::Eof {
            return Err(QueryError::new(
                t.pos,
                "expected `and`, `or` or the end of the query",
            ));
        }
        Ok(e)
    }

    fn peek(&self) -> &Token {
        // The token list always ends with Eof and `i` never passes it.
        &self.toks[self.i.min(self.toks.len() - 1)]
    }

    fn peek_at(&self, n: usize) -> Option<&Token> {
        self.toks.get(self.i + n)
    }

    fn bump(&mut self) -> Token {
        let t = self.peek().clone();
        if t.tok != Tok::Eof {
            self.i += 1;
        }
        t
    }

    fn eat(&mut self, tok: &Tok) -> bool {
        if &self.peek().tok == tok {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, tok: Tok, what: &str) -> Result<usize, QueryError> {
        let t = self.bump();
        if t.tok == tok {
            Ok(t.pos)
        } else {
            Err(QueryError::new(t.pos, format!("expected {what}")))
        }
    }

    fn or(&mut self) -> Result<Expr, QueryError> {
        let mut items = vec![self.and()?];
        while is_kw(self.peek(), "or") {
            self.i += 1;
            items.push(self.and()?);
        }
        Ok(if items.len() == 1 {
            items.remove(0)
        } else {
            Expr::Or(items)
        })
    }

    fn and(&mut self) -> Result<Expr, QueryError> {
        let mut items = vec![self.unary()?];
        while is_kw(self.peek(), "and") {
            self.i += 1;
            items.push(self.unary()?);
        }
        Ok(if items.len() == 1 {
            items.remove(0)
        } else {
            Expr::And(items)
        })
    }

    fn unary(&mut self) -> Result<Expr, QueryError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(QueryError::new(
                self.peek().pos,
                format!("expression nested too deeply (limit {MAX_DEPTH})"),
            ));
        }
        let r = if is_kw(self.peek(), "not") {
            self.i += 1;
            self.unary().map(|e| Expr::Not(Box::new(e)))
        } else {
            self.primary()
        };
        self.depth -= 1;
        r
    }

    fn primary(&mut self) -> Result<Expr, QueryError> {
        let t = self.bump();
        match t.tok {
            Tok::LParen => {
                let e = self.or()?;
                self.expect(Tok::RParen, "`)`")?;
                Ok(e)
            }
            Tok::Ident(ref s) if s.eq_ignore_ascii_case("true") => Ok(Expr::Const(true)),
            Tok::Ident(ref s) if s.eq_ignore_ascii_case("false") => Ok(Expr::Const(false)),
            Tok::Ident(name) => {
                let next = &self.peek().tok;
                let call = *next == Tok::LParen
                    || (*next == Tok::Tilde
                        && self.peek_at(1).is_some_and(|t| t.tok == Tok::LParen));
                if call {
                    self.call(name, t.pos)
                } else {
                    let field = self.field_rest(name, t.pos, false)?;
                    self.predicate(field)
                }
            }
            Tok::Opt(name) => {
                let field = self.field_rest(name, t.pos, true)?;
                self.predicate(field)
            }
            Tok::Eof => Err(QueryError::new(
                t.pos,
                "unexpected end of query; expected a condition",
            )),
            _ => Err(QueryError::new(
                t.pos,
                "expected a field name, a function or `(`",
            )),
        }
    }

    /// After a field name: an optional `[N]` index.
    fn field_rest(
        &mut self,
        name: String,
        pos: usize,
        optional: bool,
    ) -> Result<FieldRef, QueryError> {
        let mut index = None;
        if self.eat(&Tok::LBrack) {
            let t = self.bump();
            match t.tok {
                Tok::Num(n) if n >= 0.0 && n.fract() == 0.0 && n < 65536.0 => {
                    index = Some(n as usize)
                }
                _ => return Err(QueryError::new(t.pos, "expected an array index (0, 1, …)")),
            }
            self.expect(Tok::RBrack, "`]`")?;
        }
        Ok(FieldRef {
            name,
            index,
            pos,
            optional,
        })
    }

    fn predicate(&mut self, field: FieldRef) -> Result<Expr, QueryError> {
        let t = self.bump();
        let ci = |p: &mut Parser| p.eat(&Tok::Tilde);
        let op = match &t.tok {
            Tok::Eq => Op::Eq,
            Tok::Ne => Op::Ne,
            Tok::Colon => Op::Colon,
            Tok::Lt => Op::Cmp(Cmp::Lt),
            Tok::Le => Op::Cmp(Cmp::Le),
            Tok::Gt => Op::Cmp(Cmp::Gt),
            Tok::Ge => Op::Cmp(Cmp::Ge),
            _ if is_kw(&t, "in") => Op::In { ci: ci(self) },
            _ if is_kw(&t, "like") => Op::Like { ci: ci(self) },
            _ if is_kw(&t, "regex") => Op::Regex { ci: ci(self) },
            _ if is_kw(&t, "not") && is_kw(self.peek(), "in") => {
                self.i += 1;
                Op::NotIn { ci: ci(self) }
            }
            _ => {
                return Err(QueryError::new(
                    t.pos,
                    format!(
                        "expected an operator after `{}` (==, !=, :, in, like, regex, <, >)",
                        field.name
                    ),
                ));
            }
        };
        let values = match op {
            Op::In { .. } | Op::NotIn { .. } => {
                if self.peek().tok != Tok::LParen {
                    return Err(QueryError::new(
                        self.peek().pos,
                        "expected `(` and a list of values",
                    ));
                }
                self.list()?
            }
            Op::Colon | Op::Like { .. } | Op::Regex { .. } if self.peek().tok == Tok::LParen => {
                self.list()?
            }
            _ => vec![self.literal()?],
        };
        Ok(Expr::Pred(Pred {
            lhs: (Lit::Field(field.clone()), field.pos),
            op,
            op_pos: t.pos,
            values,
        }))
    }

    fn literal(&mut self) -> Result<(Lit, usize), QueryError> {
        let t = self.bump();
        let lit = match t.tok {
            Tok::Str(s) => Lit::Str(s),
            Tok::Num(n) => Lit::Num(n),
            Tok::Ident(ref s) if s.eq_ignore_ascii_case("true") => Lit::Bool(true),
            Tok::Ident(ref s) if s.eq_ignore_ascii_case("false") => Lit::Bool(false),
            Tok::Ident(ref s) if s.eq_ignore_ascii_case("null") => Lit::Null,
            Tok::Ident(name) => Lit::Field(self.field_rest(name, t.pos, false)?),
            Tok::Opt(name) => Lit::Field(self.field_rest(name, t.pos, true)?),
            _ => {
                return Err(QueryError::new(
                    t.pos,
                    "expected a value (string, number, true, false, null or a field)",
                ));
            }
        };
        Ok((lit, t.pos))
    }

    /// `( v, v, … )` or `[ v, v, … ]`.
    fn list(&mut self) -> Result<Vec<(Lit, usize)>, QueryError> {
        let open = self.bump();
        let close = match open.tok {
            Tok::LParen => Tok::RParen,
            Tok::LBrack => Tok::RBrack,
            _ => return Err(QueryError::new(open.pos, "expected a list")),
        };
        let mut out = Vec::new();
        loop {
            if self.eat(&close) {
                break;
            }
            out.push(self.literal()?);
            if !self.eat(&Tok::Comma) {
                let what = if close == Tok::RParen {
                    "`,` or `)`"
                } else {
                    "`,` or `]`"
                };
                self.expect(close, what)?;
                break;
            }
        }
        if out.is_empty() {
            return Err(QueryError::new(open.pos, "empty list"));
        }
        Ok(out)
    }

    fn call(&mut self, name: String, pos: usize) -> Result<Expr, QueryError> {
        let ci = self.eat(&Tok::Tilde);
        self.expect(Tok::LParen, "`(`")?;
        let known = [
            "startsWith",
            "endsWith",
            "stringContains",
            "has",
            "has_any",
            "length",
        ];
        let Some(fname) = known.iter().find(|k| k.eq_ignore_ascii_case(&name)) else {
            return Err(QueryError::new(pos, format!("unknown function `{name}`")));
        };
        let first = if matches!(self.peek().tok, Tok::LBrack | Tok::LParen) {
            let t = self.peek().pos;
            return Err(QueryError::new(
                t,
                "expected a field or a value as the first argument",
            ));
        } else {
            self.literal()?
        };
        if *fname == "length" {
            if !matches!(first.0, Lit::Field(_)) {
                return Err(QueryError::new(first.1, "length(…) takes a field"));
            }
            self.expect(Tok::RParen, "`)` (length takes one field)")?;
            let t = self.bump();
            let (op, negate) = match t.tok {
                Tok::Eq => (None, false),
                Tok::Ne => (None, true),
                Tok::Lt => (Some(Cmp::Lt), false),
                Tok::Le => (Some(Cmp::Le), false),
                Tok::Gt => (Some(Cmp::Gt), false),
                Tok::Ge => (Some(Cmp::Ge), false),
                _ => {
                    return Err(QueryError::new(
                        t.pos,
                        "expected a comparison after length(…)",
                    ));
                }
            };
            let v = self.literal()?;
            return Ok(Expr::Pred(Pred {
                lhs: first,
                op: Op::Length { op, negate },
                op_pos: pos,
                values: vec![v],
            }));
        }
        let mut values = Vec::new();
        while self.eat(&Tok::Comma) {
            if matches!(self.peek().tok, Tok::LBrack | Tok::LParen) {
                values.extend(self.list()?);
            } else {
                values.push(self.literal()?);
            }
        }
        self.expect(Tok::RParen, "`,` or `)`")?;
        if values.is_empty() {
            return Err(QueryError::new(
                pos,
                format!("{fname} needs at least one value"),
            ));
        }
        Ok(Expr::Pred(Pred {
            lhs: first,
            op: Op::Func {
                name: fname.to_string(),
                ci,
            },
            op_pos: pos,
            values,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_binds_to_the_predicate() {
        let e = parse_query("process where a == \"x\" and not b in (\"y\") or c : \"z\"").unwrap();
        let Expr::Or(items) = e else { panic!("{e:?}") };
        let Expr::And(ref a) = items[0] else { panic!() };
        assert!(matches!(a[1], Expr::Not(_)));
    }

    #[test]
    fn errors_point_at_columns() {
        let err = |q: &str| parse_query(q).unwrap_err();
        assert_eq!(err("network where a == 1").pos, 0);
        assert!(err("network where a == 1").msg.contains("not supported"));
        assert_eq!(err("process where a ==").pos, 18);
        assert_eq!(err("process where (a == 1").pos, 21);
        assert_eq!(err("process where a foo 1").pos, 16);
        assert_eq!(err("process where nope(a)").pos, 14);
        assert_eq!(err("process where a == 1 b").pos, 21);
    }

    #[test]
    fn depth_is_limited() {
        let deep = format!(
            "process where {}a == 1{}",
            "(".repeat(10_000),
            ")".repeat(10_000)
        );
        assert!(parse_query(&deep).unwrap_err().msg.contains("too deeply"));
        let nots = format!("process where {}a == 1", "not ".repeat(10_000));
        assert!(parse_query(&nots).is_err());
        let flat = format!("process where a == 1{}", " or a == 2".repeat(10_000));
        assert!(parse_query(&flat).is_ok());
    }

    #[test]
    fn functions_and_indexes() {
        let e = parse_condition(
            "has_any(process.command_line, [\"a\", \"b\"]) and process.args[1] != \"x\"",
        )
        .unwrap();
        let Expr::And(items) = e else { panic!() };
        let Expr::Pred(p) = &items[1] else { panic!() };
        let Lit::Field(f) = &p.lhs.0 else { panic!() };
        assert_eq!(f.index, Some(1));
        assert!(parse_condition("startsWith(process.executable, process.command_line)").is_ok());
        assert!(parse_condition("endsWith~(\"/usr/bin/X\", process.name)").is_ok());
        assert!(parse_condition("?process.parent.name : \"x\" or ?a.b == null").is_ok());
        assert!(parse_condition("process.name == process.parent.name").is_ok());
        assert!(parse_condition("length(process.args) >= 3").is_ok());
        assert!(parse_condition("startsWith~(process.name, \"KUBE\")").is_ok());
    }
}
