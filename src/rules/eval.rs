//! Evaluates compiled conditions against one event. Nothing here allocates:
//! values are borrowed from the event and literals were prepared at compile
//! time. Recursion depth is bounded by the parser's nesting limit.

use super::compile::{Kind, Node, StrMatch, Test};
use super::fields::{FIELDS, Val};
use super::matchers::{contains, ends_with, eq_ci, has_term, starts_with};
use super::parser::Cmp;
use crate::event::Event;

pub fn eval(n: &Node, ev: &Event) -> bool {
    match n {
        Node::And(v) => v.iter().all(|x| eval(x, ev)),
        Node::Or(v) => v.iter().any(|x| eval(x, ev)),
        Node::Not(x) => !eval(x, ev),
        Node::Const(b) => *b,
        Node::Test(t) => test(t, ev),
    }
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
