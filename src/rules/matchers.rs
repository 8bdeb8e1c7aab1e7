//! String matching primitives the compiled rules use: case folding without
//! allocation, `*`/`?` wildcards, and KQL-style `has` terms. Everything here
//! works on borrowed text so that evaluating an event never allocates.

/// Folds one character for case-insensitive comparison. Literals are folded
/// with the same function at compile time, so both sides always agree.
#[inline]
pub fn fold(c: char) -> char {
    if c.is_ascii() {
        c.to_ascii_lowercase()
    } else {
        // Multi-char lowercase forms (rare) compare by their first char.
        c.to_lowercase().next().unwrap_or(c)
    }
}

/// Folds a whole literal (compile time only; allocates).
pub fn fold_str(s: &str) -> String {
    s.chars().map(fold).collect()
}

/// `hay` equals the already folded `lit`, ignoring case.
#[inline]
pub fn eq_ci(hay: &str, lit: &str) -> bool {
    if hay.is_ascii() && lit.is_ascii() {
        return hay.eq_ignore_ascii_case(lit);
    }
    let mut h = hay.chars();
    let mut l = lit.chars();
    loop {
        match (h.next(), l.next()) {
            (None, None) => return true,
            (Some(a), Some(b)) if fold(a) == b => {}
            _ => return false,
        }
    }
}

/// `a` equals `b`, ignoring case, neither folded beforehand (both come from
/// the event).
pub fn eq_fold(a: &str, b: &str) -> bool {
    if a.is_ascii() && b.is_ascii() {
        return a.eq_ignore_ascii_case(b);
    }
    a.chars().map(fold).eq(b.chars().map(fold))
}

/// `hay` contains `needle`, ignoring case, both from the event. Folds
/// copies: a needle from the event can be long, and a naive scan of two
/// long values would be quadratic. Only rules that compare two fields with
/// `stringContains~` come here.
pub fn contains_fold(hay: &str, needle: &str) -> bool {
    if needle.len() > hay.len() * 4 {
        return false;
    }
    fold_str(hay).contains(&fold_str(needle))
}

/// If the folded `lit` matches `hay` at byte `at`, the byte just past it.
#[inline]
fn match_at(hay: &str, at: usize, lit: &str, ci: bool) -> Option<usize> {
    let rest = hay.get(at..)?;
    if !ci {
        return rest.starts_with(lit).then_some(at + lit.len());
    }
    if lit.is_ascii() {
        let n = lit.len();
        let cand = rest.as_bytes().get(..n)?;
        // An ASCII literal can only match bytes that are ASCII, so `at + n`
        // is a char boundary whenever this succeeds.
        return cand.eq_ignore_ascii_case(lit.as_bytes()).then_some(at + n);
    }
    let mut it = rest.char_indices();
    for lc in lit.chars() {
        match it.next() {
            Some((_, c)) if fold(c) == lc => {}
            _ => return None,
        }
    }
    Some(it.next().map_or(hay.len(), |(i, _)| at + i))
}

pub fn starts_with(hay: &str, lit: &str, ci: bool) -> bool {
    match_at(hay, 0, lit, ci).is_some()
}

pub fn ends_with(hay: &str, lit: &str, ci: bool) -> bool {
    if !ci {
        return hay.ends_with(lit);
    }
    // Try every char boundary from the end whose tail is long enough.
    hay.char_indices()
        .rev()
        .take(lit.chars().count())
        .last()
        .is_some_and(|(i, _)| match_at(hay, i, lit, true) == Some(hay.len()))
        || lit.is_empty()
}

pub fn contains(hay: &str, lit: &str, ci: bool) -> bool {
    if !ci {
        return hay.contains(lit);
    }
    find_ci(hay, lit, 0).is_some()
}

/// Byte offset of the first case-insensitive occurrence of the folded `lit`
/// in `hay` at or after `from` (a char boundary). ASCII literals, the common
/// case, are found by a byte scan.
fn find_ci(hay: &str, lit: &str, from: usize) -> Option<usize> {
    if lit.is_empty() {
        return Some(from);
    }
    if lit.is_ascii() {
        let (h, n) = (hay.as_bytes(), lit.as_bytes());
        let first = n[0];
        let last_start = h.len().checked_sub(n.len())?;
        // An ASCII byte never occurs inside a multi-byte char, so any hit
        // is on a char boundary.
        return (from..=last_start).find(|&i| {
            h[i].to_ascii_lowercase() == first && h[i..i + n.len()].eq_ignore_ascii_case(n)
        });
    }
    hay.get(from..)?
        .char_indices()
        .map(|(i, _)| from + i)
        .find(|&i| match_at(hay, i, lit, true).is_some())
}

/// KQL `has` as issue 4 fixes it: the folded `term` occurs case-insensitively
/// at a position where, if the term starts with a letter or digit, the char
/// before is not one, and, if it ends with a letter or digit, the char after
/// is not one.
pub fn has_term(hay: &str, term: &str) -> bool {
    let (Some(first), Some(last)) = (term.chars().next(), term.chars().next_back()) else {
        return false;
    };
    let check_start = first.is_alphanumeric();
    let check_end = last.is_alphanumeric();
    let mut from = 0;
    while let Some(i) = find_ci(hay, term, from) {
        from = i + hay[i..].chars().next().map_or(1, char::len_utf8);
        let Some(end) = match_at(hay, i, term, true) else {
            continue;
        };
        if check_start
            && hay[..i]
                .chars()
                .next_back()
                .is_some_and(char::is_alphanumeric)
        {
            continue;
        }
        if check_end && hay[end..].chars().next().is_some_and(char::is_alphanumeric) {
            continue;
        }
        return true;
    }
    false
}

/// One element of a compiled wildcard pattern.
#[derive(Debug, Clone, Copy, PartialEq)]
enum P {
    Star,
    Any,
    Lit(char),
}

/// A compiled `*`/`?` pattern. Matching is iterative with single-star
/// backtracking, so it is linear-ish and cannot recurse on hostile input.
#[derive(Debug, Clone)]
pub struct Wildcard {
    parts: Box<[P]>,
    ci: bool,
    /// Patterns of the form `lit`, `lit*`, `*lit`, `*lit*` (the usual ones)
    /// skip the general matcher.
    fast: Option<(Shape, Box<str>)>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Shape {
    Exact,
    Prefix,
    Suffix,
    Contains,
}

impl Wildcard {
    pub fn new(pattern: &str, ci: bool) -> Wildcard {
        let mut parts: Vec<P> = Vec::with_capacity(pattern.len());
        for c in pattern.chars() {
            let p = match c {
                '*' => P::Star,
                '?' => P::Any,
                c if ci => P::Lit(fold(c)),
                c => P::Lit(c),
            };
            // Consecutive stars are one star.
            if !(p == P::Star && parts.last() == Some(&P::Star)) {
                parts.push(p);
            }
        }
        let lits: String = parts
            .iter()
            .filter_map(|p| if let P::Lit(c) = p { Some(*c) } else { None })
            .collect();
        let stars = parts.iter().filter(|p| **p == P::Star).count();
        let lead = parts.first() == Some(&P::Star);
        let trail = parts.len() > 1 && parts.last() == Some(&P::Star);
        let fast = if parts.contains(&P::Any) || stars != usize::from(lead) + usize::from(trail) {
            None
        } else {
            Some(match (lead, trail) {
                (false, false) => Shape::Exact,
                (false, true) => Shape::Prefix,
                (true, false) => Shape::Suffix,
                (true, true) => Shape::Contains,
            })
        };
        Wildcard {
            parts: parts.into_boxed_slice(),
            ci,
            fast: fast.map(|f| (f, lits.into_boxed_str())),
        }
    }

    pub fn has_wildcards(pattern: &str) -> bool {
        pattern.contains(['*', '?'])
    }

    pub fn is_match(&self, hay: &str) -> bool {
        if let Some((shape, lit)) = &self.fast {
            let ci = self.ci;
            return match shape {
                Shape::Exact if ci => eq_ci(hay, lit),
                Shape::Exact => hay == &**lit,
                Shape::Prefix => starts_with(hay, lit, ci),
                Shape::Suffix => ends_with(hay, lit, ci),
                Shape::Contains => contains(hay, lit, ci),
            };
        }
        let p = &self.parts;
        let (mut pi, mut h) = (0usize, 0usize);
        let mut star: Option<(usize, usize)> = None;
        loop {
            let next = hay[h..].chars().next();
            if let Some(&part) = p.get(pi) {
                match (part, next) {
                    (P::Star, _) => {
                        star = Some((pi + 1, h));
                        pi += 1;
                        continue;
                    }
                    (P::Any, Some(c)) => {
                        pi += 1;
                        h += c.len_utf8();
                        continue;
                    }
                    (P::Lit(l), Some(c)) if (if self.ci { fold(c) } else { c }) == l => {
                        pi += 1;
                        h += c.len_utf8();
                        continue;
                    }
                    _ => {}
                }
            } else if h == hay.len() {
                return true;
            }
            // Mismatch: let the last star swallow one more char.
            let Some((sp, sh)) = star else { return false };
            let Some(c) = hay[sh..].chars().next() else {
                return false;
            };
            star = Some((sp, sh + c.len_utf8()));
            pi = sp;
            h = sh + c.len_utf8();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn has_edges_from_issue() {
        assert!(has_term("/bin/sh -c id", "sh"));
        assert!(has_term("sh", "sh"));
        assert!(!has_term("bash", "sh"));
        assert!(has_term("docker run alpine", "run"));
        assert!(has_term("ls /var/run/x", "run"));
        assert!(!has_term("runc exec", "run"));
        assert!(has_term("kubectl exec -it p -- sh", "-it"));
        assert!(!has_term("docker run -itd alpine", "-it"));
        assert!(has_term("DOCKER EXEC x", "exec"));
        assert!(has_term("docker exec -i x", "-i "));
        assert!(!has_term("docker exec -it x", "-i "));
        assert!(has_term("curl https://n:10250/run/a", ":10250"));
        assert!(!has_term("anything", ""));
    }

    #[test]
    fn wildcards() {
        let w = Wildcard::new(".*", true);
        assert!(w.is_match(".hidden"));
        assert!(w.is_match("."));
        assert!(!w.is_match("ctr"));
        let w = Wildcard::new("*containerd.sock*", false);
        assert!(w.is_match("--address=/run/containerd/containerd.sock"));
        assert!(!w.is_match("--address=/run/containerd/CONTAINERD.sock"));
        let w = Wildcard::new("a?c*d", true);
        assert!(w.is_match("AbCxxD"));
        assert!(w.is_match("aéc d"));
        assert!(!w.is_match("ac d"));
        assert!(Wildcard::new("*", false).is_match(""));
        assert!(Wildcard::new("**", true).is_match("x"));
        assert!(Wildcard::new("*:10250/RUN/*", true).is_match("https://n:10250/run/a"));
        assert!(!Wildcard::new("*:10250/run/*", true).is_match("https://n:10250/run"));
        assert!(Wildcard::new("*.sock", true).is_match("/x/Docker.SOCK"));
        assert!(Wildcard::new("/tmp/*", false).is_match("/tmp/x"));
        assert!(!Wildcard::new("/tmp/*", false).is_match("/TMP/x"));
        assert!(Wildcard::new("a*b", false).is_match("axxb"));
        assert!(!Wildcard::new("a*b", false).is_match("axxbc"));
        assert!(!Wildcard::new("*a*a*a*a*b", false).is_match(&"a".repeat(200)));
    }

    #[test]
    fn case_folding() {
        assert!(eq_ci("KubeCTL", "kubectl"));
        assert!(eq_ci("ÉCHO", "écho"));
        assert!(!eq_ci("kubectl1", "kubectl"));
        assert!(starts_with("/TMP/x", "/tmp/", true));
        assert!(ends_with("x.SOCK", ".sock", true));
        assert!(ends_with("x", "", true));
        assert!(contains("aXyZb", "xyz", true));
        assert!(!contains("ab", "abc", true));
    }
}
