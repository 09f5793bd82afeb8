//! Glob patterns for rules (`orders-*`, `clicks-??`): `glob_match` for one name, `glob_filter` for many at once,
//! natively (a watched set of thousands of job names is filtered without a Rhai loop step per name).
//!
//! `*` matches any run of characters (also none), `?` exactly one character; every other character matches itself
//! (case-sensitive, as Flink job names are). There is no escape and no character class: job names rarely contain
//! `*` or `?`, and a name without them is matched exactly.

use rhai::{Array, Dynamic, Engine, EvalAltResult, Map};

type R<T> = Result<T, Box<EvalAltResult>>;

/// True when `pattern` has a wildcard (`*` or `?`); a name without one only matches itself.
pub fn is_pattern(pattern: &str) -> bool {
    pattern.contains(['*', '?'])
}

/// True when `text` matches `pattern` as a whole. Linear in the lengths for patterns with one `*`, and at most
/// their product otherwise (the classic greedy match with one backtrack point: no exponential blow-up).
pub fn matches(pattern: &str, text: &str) -> bool {
    if !is_pattern(pattern) {
        return pattern == text;
    }
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    // Where the last `*` was, and the text position it currently stands for the end of.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || (p[pi] != '*' && p[pi] == t[ti])) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            // Let the last `*` take one more character and try again from there.
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// The patterns of a Rhai array, as text (an element that is not a string is an error naming it).
fn patterns_of(patterns: &Array) -> R<Vec<String>> {
    patterns
        .iter()
        .map(|p| {
            p.clone().into_string().map_err(|t| format!("glob_filter(): a pattern must be a string, not {t}").into())
        })
        .collect()
}

/// `glob_match(text, pattern)`: whether `text` matches `pattern`.
fn glob_match(text: &str, pattern: &str) -> bool {
    matches(pattern, text)
}

/// The strings of `texts` that match one of `patterns`, in order. Elements that are not strings are left out.
fn filter_texts<'a>(texts: impl Iterator<Item = &'a str>, patterns: &[String]) -> Array {
    texts.filter(|t| patterns.iter().any(|p| matches(p, t))).map(|t| Dynamic::from(t.to_string())).collect()
}

/// `glob_filter(array, patterns)`: the strings of `array` that match one of `patterns`.
fn glob_filter_array(texts: Array, patterns: Array) -> R<Array> {
    let patterns = patterns_of(&patterns)?;
    let strings: Vec<String> = texts.into_iter().filter_map(|t| t.into_string().ok()).collect();
    Ok(filter_texts(strings.iter().map(String::as_str), &patterns))
}

/// `glob_filter(map, patterns)`: the keys of `map` that match one of `patterns` (a map used as a set of names,
/// e.g. what `count_by("name")` gives).
fn glob_filter_map(texts: Map, patterns: Array) -> R<Array> {
    let patterns = patterns_of(&patterns)?;
    Ok(filter_texts(texts.keys().map(|k| k.as_str()), &patterns))
}

/// `glob_patterns(array)`: the strings of `array` that are patterns (have a `*` or `?`), in order.
fn glob_patterns(texts: Array) -> Array {
    texts.into_iter().filter(|t| t.read_lock::<rhai::ImmutableString>().is_some_and(|s| is_pattern(&s))).collect()
}

/// Registers `glob_match`, `glob_filter` and `glob_patterns` (documented in `docs/rules.md`).
pub(super) fn register(engine: &mut Engine) {
    engine.register_fn("glob_patterns", glob_patterns);
    engine.register_fn("glob_match", glob_match);
    engine.register_fn("glob_filter", glob_filter_array);
    engine.register_fn("glob_filter", glob_filter_map);
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn stars_and_question_marks_match_as_in_a_shell() {
        for (p, t) in [
            ("orders-*", "orders-eu"),
            ("orders-*", "orders-"),
            ("*", ""),
            ("*-eu", "orders-eu"),
            ("o*s-*u", "orders-eu"),
            ("clicks-??", "clicks-01"),
            ("a*b*c", "aXbYbZc"),
            ("*a*a*a*", "banana-a"),
            ("clicks", "clicks"),
            ("Ünïcode-?", "Ünïcode-é"),
        ] {
            assert!(matches(p, t), "{p} should match {t}");
        }
        for (p, t) in [
            ("orders-*", "order-eu"),
            ("orders-*", "xorders-eu"),
            ("clicks-??", "clicks-1"),
            ("clicks-??", "clicks-123"),
            ("clicks", "clicks-2"),
            ("clicks", "Clicks"),
            ("a*b*c", "aXbYbZ"),
            ("?", ""),
        ] {
            assert!(!matches(p, t), "{p} should not match {t}");
        }
    }

    #[test]
    fn a_pathological_pattern_stays_cheap() {
        let text = "a".repeat(5_000);
        let pattern = format!("{}b", "*a".repeat(50));
        let t = std::time::Instant::now();
        assert!(!matches(&pattern, &text));
        // Greedy with one backtrack point: at most len(pattern) × len(text) steps (~0.5 M here), not exponential.
        assert!(t.elapsed() < std::time::Duration::from_secs(2), "{:?}", t.elapsed());
    }
}
