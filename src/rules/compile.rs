//! Lowers the parsed AST into the form [`super::eval`] runs: fields resolved
//! to registry getters, literals type-checked and pre-folded for
//! case-insensitive operators, wildcards and regexes compiled once.

use regex::{Regex, RegexBuilder};

use super::QueryError;
use super::fields::{FIELDS, FType, lookup, suggest};
use super::matchers::{Wildcard, fold_str};
use super::parser::{Cmp, Expr, Lit, Op, Pred};

#[derive(Debug)]
pub enum Node {
    And(Box<[Node]>),
    Or(Box<[Node]>),
    Not(Box<Node>),
    Const(bool),
    Test(Test),
}

#[derive(Debug)]
pub struct Test {
    /// Index into [`FIELDS`].
    pub field: usize,
    /// `process.args[N]`: the N-th element of a list field.
    pub index: Option<usize>,
    pub kind: Kind,
}

#[derive(Debug)]
pub enum Kind {
    /// `negate`: the field is present and no element matches (`!=`, `not in`).
    Str {
        m: StrMatch,
        negate: bool,
    },
    Num {
        op: Option<Cmp>,
        vals: Box<[f64]>,
        negate: bool,
    },
    Bool {
        val: bool,
        negate: bool,
    },
    /// `== null` (false) / `!= null` (true).
    Exists(bool),
    /// `length(field) <op> n`; a string's length is in characters.
    Len {
        op: Option<Cmp>,
        val: f64,
        negate: bool,
    },
}

#[derive(Debug)]
pub enum StrMatch {
    Exact(Box<[Box<str>]>),
    /// Literals already folded.
    ExactCi(Box<[Box<str>]>),
    Wild(Box<[Wildcard]>),
    Regex(Regex),
    Prefix {
        lits: Box<[Box<str>]>,
        ci: bool,
    },
    Suffix {
        lits: Box<[Box<str>]>,
        ci: bool,
    },
    Contains {
        lits: Box<[Box<str>]>,
        ci: bool,
    },
    /// Folded KQL terms.
    Has(Box<[Box<str>]>),
}

/// Upper bound on one compiled regex, so a hostile pattern cannot eat memory.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

pub fn compile(e: &Expr) -> Result<Node, QueryError> {
    Ok(match e {
        Expr::And(v) => Node::And(v.iter().map(compile).collect::<Result<_, _>>()?),
        Expr::Or(v) => Node::Or(v.iter().map(compile).collect::<Result<_, _>>()?),
        Expr::Not(x) => Node::Not(Box::new(compile(x)?)),
        Expr::Const(b) => Node::Const(*b),
        Expr::Pred(p) => Node::Test(pred(p)?),
    })
}

fn ty_name(t: FType) -> &'static str {
    match t {
        FType::Str => "a string",
        FType::List => "a list of strings",
        FType::Num => "a number",
        FType::Bool => "a boolean",
    }
}

fn pred(p: &Pred) -> Result<Test, QueryError> {
    let f = &p.field;
    let field = lookup(&f.name).ok_or_else(|| {
        let hint = suggest(&f.name)
            .map(|s| format!(" (did you mean {s}?)"))
            .unwrap_or_default();
        QueryError::new(f.pos, format!("unknown field {}{hint}", f.name))
    })?;
    let mut ty = FIELDS[field].ty;
    if f.index.is_some() {
        if ty != FType::List {
            return Err(QueryError::new(
                f.pos,
                format!("{} is not a list and cannot be indexed", f.name),
            ));
        }
        ty = FType::Str;
    }
    let name = f.name.as_str();
    let type_err = |pos: usize, want: &str| {
        QueryError::new(
            pos,
            format!("{name} is {}; expected {want} here", ty_name(ty)),
        )
    };
    let strs = |vals: &[(Lit, usize)]| -> Result<Vec<String>, QueryError> {
        vals.iter()
            .map(|(l, pos)| match l {
                Lit::Str(s) => Ok(s.clone()),
                _ => Err(QueryError::new(
                    *pos,
                    format!("{name} is {}; expected a string", ty_name(ty)),
                )),
            })
            .collect()
    };
    let boxed = |v: Vec<String>| {
        v.into_iter()
            .map(String::into_boxed_str)
            .collect::<Box<[_]>>()
    };
    let folded = |v: Vec<String>| {
        v.iter()
            .map(|s| fold_str(s).into_boxed_str())
            .collect::<Box<[_]>>()
    };
    let is_str = matches!(ty, FType::Str | FType::List);

    // `== null` / `!= null` test presence, whatever the field's type.
    if matches!(p.op, Op::Eq | Op::Ne) && matches!(p.values.first(), Some((Lit::Null, _))) {
        return Ok(Test {
            field,
            index: f.index,
            kind: Kind::Exists(p.op == Op::Ne),
        });
    }

    let kind = match &p.op {
        Op::Length { op, negate } => {
            let (Lit::Num(val), _) = p.values[0] else {
                return Err(QueryError::new(
                    p.values[0].1,
                    "length(…) compares with a number",
                ));
            };
            if !is_str {
                return Err(type_err(f.pos, "a string or list"));
            }
            Kind::Len {
                op: *op,
                val,
                negate: *negate,
            }
        }
        Op::Eq | Op::Ne | Op::In { .. } | Op::NotIn { .. } => {
            let negate = matches!(p.op, Op::Ne | Op::NotIn { .. });
            let ci = matches!(p.op, Op::In { ci: true } | Op::NotIn { ci: true });
            match ty {
                FType::Str | FType::List => {
                    let v = strs(&p.values)?;
                    let m = if ci {
                        StrMatch::ExactCi(folded(v))
                    } else {
                        StrMatch::Exact(boxed(v))
                    };
                    Kind::Str { m, negate }
                }
                FType::Num => {
                    let vals = p
                        .values
                        .iter()
                        .map(|(l, pos)| match l {
                            Lit::Num(n) => Ok(*n),
                            _ => Err(type_err(*pos, "a number")),
                        })
                        .collect::<Result<_, _>>()?;
                    Kind::Num {
                        op: None,
                        vals,
                        negate,
                    }
                }
                FType::Bool => {
                    let (l, pos) = &p.values[0];
                    let (Lit::Bool(val), 1) = (l, p.values.len()) else {
                        return Err(type_err(*pos, "true or false"));
                    };
                    Kind::Bool { val: *val, negate }
                }
            }
        }
        Op::Cmp(c) => {
            let (Lit::Num(n), pos) = p.values[0] else {
                return Err(QueryError::new(
                    p.values[0].1,
                    "<, <=, >, >= compare with a number",
                ));
            };
            if ty != FType::Num {
                return Err(type_err(pos, "a number field for <, <=, >, >="));
            }
            Kind::Num {
                op: Some(*c),
                vals: Box::new([n]),
                negate: false,
            }
        }
        Op::Colon | Op::Like { .. } => {
            if !is_str {
                return Err(type_err(p.op_pos, "a string for `:`/`like`"));
            }
            let ci = matches!(p.op, Op::Colon | Op::Like { ci: true });
            let v = strs(&p.values)?;
            let m = if v.iter().any(|s| Wildcard::has_wildcards(s)) {
                StrMatch::Wild(v.iter().map(|s| Wildcard::new(s, ci)).collect())
            } else if ci {
                StrMatch::ExactCi(folded(v))
            } else {
                StrMatch::Exact(boxed(v))
            };
            Kind::Str { m, negate: false }
        }
        Op::Regex { ci } => {
            if !is_str {
                return Err(type_err(p.op_pos, "a string for `regex`"));
            }
            let v = strs(&p.values)?;
            // EQL regexes match the whole value: anchor the alternation.
            let alt = v
                .iter()
                .map(|s| format!("(?:{s})"))
                .collect::<Vec<_>>()
                .join("|");
            let re = RegexBuilder::new(&format!("^(?:{alt})$"))
                .case_insensitive(*ci)
                .size_limit(REGEX_SIZE_LIMIT)
                .build()
                .map_err(|e| {
                    let msg = e
                        .to_string()
                        .lines()
                        .last()
                        .unwrap_or("invalid regex")
                        .trim()
                        .to_string();
                    QueryError::new(p.values[0].1, format!("invalid regex: {msg}"))
                })?;
            Kind::Str {
                m: StrMatch::Regex(re),
                negate: false,
            }
        }
        Op::Func { name, ci } => {
            if !is_str {
                return Err(type_err(p.op_pos, "a string"));
            }
            let v = strs(&p.values)?;
            let has = name == "has" || name == "has_any";
            if has && v.iter().any(|t| t.is_empty()) {
                return Err(QueryError::new(p.op_pos, "empty has term"));
            }
            let lits = if *ci || has { folded(v) } else { boxed(v) };
            let m = match name.as_str() {
                "startsWith" => StrMatch::Prefix { lits, ci: *ci },
                "endsWith" => StrMatch::Suffix { lits, ci: *ci },
                "stringContains" => StrMatch::Contains { lits, ci: *ci },
                _ => StrMatch::Has(lits),
            };
            Kind::Str { m, negate: false }
        }
    };
    Ok(Test {
        field,
        index: f.index,
        kind,
    })
}

/// The folded `process.name` values a condition requires, if it requires
/// one of a fixed set: the rule set indexes rules by these so that an event
/// only meets rules that can match its process name.
pub fn required_names(n: &Node) -> Option<Vec<String>> {
    match n {
        Node::Test(t) if FIELDS[t.field].name == "process.name" && t.index.is_none() => {
            match &t.kind {
                Kind::Str {
                    m: StrMatch::Exact(l) | StrMatch::ExactCi(l),
                    negate: false,
                } => Some(l.iter().map(|s| fold_str(s)).collect()),
                _ => None,
            }
        }
        Node::And(v) => v.iter().filter_map(required_names).min_by_key(Vec::len),
        Node::Or(v) => {
            let mut all = Vec::new();
            for x in v.iter() {
                all.extend(required_names(x)?);
            }
            Some(all)
        }
        _ => None,
    }
}
