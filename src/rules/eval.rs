//! Evaluates compiled conditions against one event. Nothing here allocates:
//! values are borrowed from the event and literals were prepared at compile
//! time. Recursion depth is bounded by the parser's nesting limit.

use super::compile::{DynOp, DynTest, Kind, Node, Operand, StrMatch, Test};
use super::fields::{FIELDS, Val};
use super::matchers::{contains, contains_fold, ends_with, eq_ci, eq_fold, has_term, starts_with};
use super::parser::Cmp;
use crate::event::Event;

pub fn eval(n: &Node, ev: &Event) -> bool {
    match n {
        Node::And(v) => v.iter().all(|x| eval(x, ev)),
        Node::Or(v) => v.iter().any(|x| eval(x, ev)),
        Node::Not(x) => !eval(x, ev),
        Node::Const(b) => *b,
        Node::Test(t) => test(t, ev),
        Node::Dyn(d) => dyn_test(d, ev),
    }
}

/// One operand's values: a field's string or list elements, or a literal.
fn values<'a>(o: &'a Operand, ev: &'a Event) -> Option<Val<'a>> {
    match o {
        Operand::Lit(s) => Some(Val::Str(s)),
        Operand::Null => None,
        Operand::Field { field, index } => match ((FIELDS[*field].get)(ev), index) {
            (Val::List(l), Some(i)) => l.get(*i).filter(|s| !s.is_empty()).map(|s| Val::Str(s)),
            (Val::Missing, _) | (_, Some(_)) => None,
            (v, None) => Some(v),
        },
    }
}

fn each<'a>(v: Val<'a>, f: &mut dyn FnMut(&'a str) -> bool) -> bool {
    match v {
        Val::Str(s) => f(s),
        Val::List(l) => l.iter().any(|s| f(s)),
        _ => false,
    }
}

fn dyn_match(op: DynOp, ci: bool, a: &str, b: &str) -> bool {
    match (op, ci) {
        (DynOp::Eq, false) => a == b,
        (DynOp::Eq, true) => eq_fold(a, b),
        (DynOp::Prefix, false) => a.starts_with(b),
        (DynOp::Prefix, true) => a.get(..b.len()).is_some_and(|p| eq_fold(p, b)),
        (DynOp::Suffix, false) => a.ends_with(b),
        (DynOp::Suffix, true) => a
            .len()
            .checked_sub(b.len())
            .and_then(|i| a.get(i..))
            .is_some_and(|t| eq_fold(t, b)),
        (DynOp::Contains, false) => a.contains(b),
        (DynOp::Contains, true) => contains_fold(a, b),
    }
}

fn dyn_test(d: &DynTest, ev: &Event) -> bool {
    let Some(lhs) = values(&d.lhs, ev) else {
        return false;
    };
    let mut present = false;
    let mut any = false;
    for r in d.rhs.iter() {
        let Some(rv) = values(r, ev) else { continue };
        present = true;
        any = each(lhs, &mut |a| each(rv, &mut |b| dyn_match(d.op, d.ci, a, b)));
        if any {
            break;
        }
    }
    present && (any != d.negate)
}

fn cmp(op: Option<Cmp>, a: f64, b: f64) -> bool {
    match op {
        None => a == b,
        Some(Cmp::Lt) => a < b,
        Some(Cmp::Le) => a <= b,
        Some(Cmp::Gt) => a > b,
        Some(Cmp::Ge) => a >= b,
    }
}

fn test(t: &Test, ev: &Event) -> bool {
    let mut v = (FIELDS[t.field].get)(ev);
    if let Some(i) = t.index {
        v = match v {
            Val::List(l) => l.get(i).map_or(Val::Missing, |s| {
                if s.is_empty() {
                    Val::Missing
                } else {
                    Val::Str(s)
                }
            }),
            _ => Val::Missing,
        };
    }
    match &t.kind {
        Kind::Exists(want) => !matches!(v, Val::Missing) == *want,
        Kind::Str { m, negate } => {
            let any = match v {
                Val::Str(s) => str_match(m, s),
                Val::List(l) => l.iter().any(|s| str_match(m, s)),
                _ => return false,
            };
            any != *negate
        }
        Kind::Num { op, vals, negate } => match v {
            Val::Num(n) => vals.iter().any(|&x| cmp(*op, n, x)) != *negate,
            _ => false,
        },
        Kind::Bool { val, negate } => match v {
            Val::Bool(b) => (b == *val) != *negate,
            _ => false,
        },
        Kind::Len { op, val, negate } => {
            let n = match v {
                Val::Str(s) => s.chars().count(),
                Val::List(l) => l.len(),
                _ => return false,
            };
            cmp(*op, n as f64, *val) != *negate
        }
    }
}

fn str_match(m: &StrMatch, s: &str) -> bool {
    match m {
        StrMatch::Exact(l) => l.iter().any(|x| **x == *s),
        StrMatch::ExactCi(l) => l.iter().any(|x| eq_ci(s, x)),
        StrMatch::Wild(w) => w.iter().any(|w| w.is_match(s)),
        StrMatch::Regex(r) => r.is_match(s),
        StrMatch::Prefix { lits, ci } => lits.iter().any(|x| starts_with(s, x, *ci)),
        StrMatch::Suffix { lits, ci } => lits.iter().any(|x| ends_with(s, x, *ci)),
        StrMatch::Contains { lits, ci } => lits.iter().any(|x| contains(s, x, *ci)),
        StrMatch::Has(terms) => terms.iter().any(|x| has_term(s, x)),
    }
}

#[cfg(test)]
mod tests {
    use super::super::compile::compile;
    use super::super::parser::parse_condition;
    use super::*;

    fn ev() -> Event {
        let mut e = Event::default();
        e.process.name = "kubectl".into();
        e.process.args = ["kubectl", "exec", "-it", "web-0", "--", "sh"]
            .map(String::from)
            .to_vec();
        e.process.args_count = 6;
        e.process.command_line = e.process.args.join(" ");
        e.event.kind_type = vec!["start".into()];
        e
    }

    fn t(q: &str) -> bool {
        eval(&compile(&parse_condition(q).unwrap()).unwrap(), &ev())
    }

    #[test]
    fn fields_on_either_side() {
        assert!(t("startsWith(process.command_line, process.name)"));
        assert!(!t("startsWith(process.name, process.command_line)"));
        assert!(t("stringContains(process.command_line, process.args)"));
        assert!(t(r#"endsWith("/usr/local/bin/kubectl", process.name)"#));
        assert!(!t(r#"endsWith("/usr/local/bin/KUBECTL", process.name)"#));
        assert!(t(r#"endsWith~("/usr/local/bin/KUBECTL", process.name)"#));
        assert!(t(r#"startsWith~("KUBECTL EXEC", process.name)"#));
        assert!(t("process.args == process.name"));
        assert!(t("process.args[0] : process.name"));
        assert!(!t("process.args[1] == process.name"));
        assert!(t("process.args[1] != process.name"));
        // A null side makes the comparison false, negated or not.
        assert!(!t("process.name == process.parent.name"));
        assert!(!t("process.name != process.parent.name"));
        assert!(!t("process.name in (process.parent.name, ?nope.field)"));
        assert!(t(r#"process.name in ("x", process.args)"#));
        assert!(t(r#"process.name not in ("x", process.parent.args, "y")"#));
    }

    #[test]
    fn optional_fields() {
        // Known fields read as usual; absent ones are null.
        assert!(t(r#"?process.name == "kubectl""#));
        assert!(!t(r#"?process.parent.name == "bash""#));
        assert!(t(r#"not ?process.parent.name == "bash""#));
        assert!(t("?process.parent.name == null"));
        assert!(!t(r#"?elastic.only.field : "*""#));
        assert!(!t(r#"?elastic.only.field != "x""#));
        assert!(t("?elastic.only.field == null"));
        assert!(!t("?elastic.only.field != null"));
        assert!(t(r#"not ?elastic.only.field in ("a", "b")"#));
    }

    #[test]
    fn semantics() {
        assert!(t(r#"event.type == "start""#));
        assert!(t(r#"process.args == "exec""#));
        assert!(!t(r#"process.args != "exec""#));
        assert!(t(r#"process.args != "run""#));
        assert!(t(
            r#"process.args[1] == "exec" and process.args[0] : "KUBECTL""#
        ));
        assert!(!t(r#"process.args[9] != "x""#));
        assert!(!t(r#"process.parent.name != "bash""#));
        assert!(t(r#"not process.parent.name in ("bash")"#));
        assert!(!t(r#"process.parent.name not in ("bash")"#));
        assert!(t(r#"process.name : "KUBE*""#));
        assert!(!t(r#"process.name like "KUBE*""#));
        assert!(t(r#"process.name like~ "KUBE*""#));
        assert!(t(r#"process.name regex "kube.*""#));
        assert!(!t(r#"process.name regex "kube""#));
        assert!(t(r#"process.name regex~ "KUBE[a-z]+""#));
        assert!(t(r#"process.name in~ ("KUBECTL")"#));
        assert!(!t(r#"process.name in ("KUBECTL")"#));
        assert!(t("process.args_count >= 2 and length(process.args) == 6"));
        assert!(t(r#"length(process.name) < 8"#));
        assert!(t(r#"startsWith(process.command_line, "kubectl exec")"#));
        assert!(t(r#"endsWith~(process.name, "CTL")"#));
        assert!(t(r#"stringContains(process.command_line, "-- sh")"#));
        assert!(t(r#"has_any(process.command_line, ["attach", "-it"])"#));
        assert!(!t(r#"has(process.command_line, "bash")"#));
        assert!(t(r#"container.id == null and process.name != null"#));
        assert!(!t(r#"container.id : "*""#));
        assert!(t(r#"process.interactive == false"#));
    }

    #[test]
    fn type_errors() {
        let err = |q: &str| compile(&parse_condition(q).unwrap()).unwrap_err();
        assert_eq!(
            err(r#"process.nmae == "x""#).msg,
            "unknown field process.nmae (did you mean process.name?)"
        );
        assert_eq!(err(r#"process.pid == "1""#).pos, 15);
        assert_eq!(err(r#"process.name < 3"#).pos, 15);
        assert_eq!(err(r#"process.name[0] == "x""#).pos, 0);
        assert!(
            err(r#"process.name regex "(""#)
                .msg
                .starts_with("invalid regex")
        );
    }
}
