//! Lowers the parsed AST into the form [`super::eval`] runs: fields resolved
//! to registry getters, literals type-checked and pre-folded for
//! case-insensitive operators, wildcards and regexes compiled once.

use regex::{Regex, RegexBuilder};

use super::QueryError;
use super::fields::{FIELDS, FType, resolve};
use super::matchers::{Wildcard, fold_str};
use super::parser::{Cmp, Expr, FieldRef, Lit, Op, Pred};

#[derive(Debug)]
pub enum Node {
    And(Box<[Node]>),
    Or(Box<[Node]>),
    Not(Box<Node>),
    Const(bool),
    Test(Test),
    /// A comparison or function with a field where a literal usually is.
    Dyn(Box<DynTest>),
}

/// One side of a [`DynTest`].
#[derive(Debug)]
pub enum Operand {
    /// A field (index into [`FIELDS`]), optionally one element of a list.
    Field {
        field: usize,
        index: Option<usize>,
    },
    Lit(Box<str>),
    /// `?name` of a field no event has: always null.
    Null,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DynOp {
    Eq,
    Prefix,
    Suffix,
    Contains,
}

/// `lhs <op> rhs` for any element of each side; false when a side is null.
/// `negate` (`!=`, `not in`): both sides present and no pair matches.
#[derive(Debug)]
pub struct DynTest {
    pub lhs: Operand,
    pub rhs: Box<[Operand]>,
    pub op: DynOp,
    pub ci: bool,
    pub negate: bool,
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
        Expr::Pred(p) => pred_node(p)?,
    })
}

/// A field of the registry, or `None` for an optional field no event has.
fn field_of(f: &FieldRef) -> Result<Option<usize>, QueryError> {
    resolve(&f.name, f.optional).map_err(|msg| QueryError::new(f.pos, msg))
}

fn pred_node(p: &Pred) -> Result<Node, QueryError> {
    let dynamic = !matches!(p.lhs.0, Lit::Field(_))
        || p.values.iter().any(|(v, _)| matches!(v, Lit::Field(_)));
    if dynamic {
        return dyn_pred(p).map(|d| Node::Dyn(Box::new(d)));
    }
    let Lit::Field(f) = &p.lhs.0 else {
        unreachable!("checked above")
    };
    match field_of(f)? {
        Some(field) => Ok(Node::Test(pred(p, f, field)?)),
        // An absent optional field is null: only `== null` holds.
        None => Ok(Node::Const(
            p.op == Op::Eq && matches!(p.values.first(), Some((Lit::Null, _))),
        )),
    }
}

fn operand(l: &Lit, pos: usize) -> Result<Operand, QueryError> {
    match l {
        Lit::Str(s) => Ok(Operand::Lit(s.clone().into_boxed_str())),
        Lit::Field(f) => {
            let Some(field) = field_of(f)? else {
                return Ok(Operand::Null);
            };
            let ty = FIELDS[field].ty;
            let ok = ty == FType::Str || ty == FType::List;
            if !ok {
                return Err(QueryError::new(
                    f.pos,
                    format!(
                        "{} is {}; a field compared with another field must be a string",
                        f.name,
                        ty_name(ty)
                    ),
                ));
            }
            if f.index.is_some() && ty != FType::List {
                return Err(QueryError::new(
                    f.pos,
                    format!("{} is not a list and cannot be indexed", f.name),
                ));
            }
            Ok(Operand::Field {
                field,
                index: f.index,
            })
        }
        _ => Err(QueryError::new(
            pos,
            "a comparison with a field on both sides takes strings",
        )),
    }
}

/// Comparisons and functions that name a field in a value position.
fn dyn_pred(p: &Pred) -> Result<DynTest, QueryError> {
    let (op, ci, negate) = match &p.op {
        Op::Eq => (DynOp::Eq, false, false),
        Op::Ne => (DynOp::Eq, false, true),
        Op::Colon => (DynOp::Eq, true, false),
        Op::Like { ci } | Op::In { ci } => (DynOp::Eq, *ci, false),
        Op::NotIn { ci } => (DynOp::Eq, *ci, true),
        Op::Func { name, ci } => match name.as_str() {
            "startsWith" => (DynOp::Prefix, *ci, false),
            "endsWith" => (DynOp::Suffix, *ci, false),
            "stringContains" => (DynOp::Contains, *ci, false),
            _ => {
                return Err(QueryError::new(
                    p.op_pos,
                    format!("{name} takes a field first and literal terms after it"),
                ));
            }
        },
        Op::Regex { .. } => {
            return Err(QueryError::new(
                p.op_pos,
                "regex takes literal patterns, not fields",
            ));
        }
        Op::Cmp(_) | Op::Length { .. } => {
            return Err(QueryError::new(
                p.op_pos,
                "<, <=, >, >= and length compare a field with a number literal",
            ));
        }
    };
    let lhs = operand(&p.lhs.0, p.lhs.1)?;
    let rhs = p
        .values
        .iter()
        .map(|(l, pos)| operand(l, *pos))
        .collect::<Result<_, _>>()?;
    Ok(DynTest {
        lhs,
        rhs,
        op,
        ci,
        negate,
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

fn pred(p: &Pred, f: &FieldRef, field: usize) -> Result<Test, QueryError> {
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
