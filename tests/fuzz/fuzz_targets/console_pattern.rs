//! The patterns of the console's `| match` and `| except`: any text either parses or is
//! refused, never panics, and a pattern that parses keeps the laws of regular
//! expressions against any line: `(p)`, `(p)+`, `(p){1}` and `(p){1,}` are found where
//! `p` is, `(p)*`, `(p)?`, `(p){0,}` and `(p){0,1}` everywhere, `(p)|(q)` where either
//! is, `^(p)`, `(p)$` and `(p){2}` only where `p` is, and a line's own text, taken as
//! written, is found in it.
//!
//! The input is a pattern, a line and a second pattern, separated by NUL octets.
#![no_main]

use drawbridge::proto::console::pattern::{MAX_PATTERN, Pattern};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.split('\0');
    let (p, line, q) = (
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
    );
    let Ok(pattern) = Pattern::parse(p) else {
        return;
    };
    let found = pattern.is_match(line);
    let with = |composed: String| Pattern::parse(&composed).ok().map(|c| c.is_match(line));
    for (composed, expected) in [
        (format!("({p})"), found),
        (format!("({p})+"), found),
        (format!("({p})*"), true),
        (format!("({p})?"), true),
        (format!("({p}){{1}}"), found),
        (format!("({p}){{1,}}"), found),
        (format!("({p}){{0,}}"), true),
        (format!("({p}){{0,1}}"), true),
    ] {
        if let Some(got) = with(composed.clone()) {
            assert_eq!(got, expected, "{composed:?} in {line:?}");
        }
    }
    for anchored in [format!("^({p})"), format!("({p})$"), format!("({p}){{2}}")] {
        if with(anchored.clone()) == Some(true) {
            assert!(found, "{anchored:?} found in {line:?} but {p:?} not");
        }
    }
    if let Ok(other) = Pattern::parse(q) {
        if let Some(either) = with(format!("({p})|({q})")) {
            assert_eq!(either, found || other.is_match(line), "{p:?}|{q:?} in {line:?}");
        }
    }
    let chars: Vec<char> = line.chars().collect();
    let middle: String = chars[chars.len() / 4..chars.len() / 2].iter().collect();
    let taken = Pattern::from(middle.as_str());
    assert!(taken.is_match(line), "{middle:?} not found in {line:?}");
    // Escaping may take the text past what `parse` accepts; within it, the round trip holds.
    if taken.as_str().chars().count() <= MAX_PATTERN {
        assert_eq!(Pattern::parse(taken.as_str()).ok(), Some(taken));
    }
});
