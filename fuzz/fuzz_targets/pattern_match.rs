//! Action patterns (SPEC §2): `*` matches any sequence of characters, `/` included;
//! matching is ASCII case-insensitive; no other metacharacters.
//!
//! Input (plain text): the first line is the pattern, the rest (after the first `\n`) is
//! the action text; without a `\n` the whole input is both. Invalid UTF-8 is replaced.
//!
//! Checked:
//! - `ActionPattern::parse` accepts exactly the non-empty patterns without whitespace,
//!   control or non-ASCII characters;
//! - `matches` equals a naive dynamic-programming glob matcher (below) on every text, in
//!   any ASCII case, and agrees with `matches_lower` on the lowercased text;
//! - `is_literal` is "has no `*`", and a literal pattern matches its own text.

#![no_main]

use iot_authz::policy::syntax::ActionPattern;
use libfuzzer_sys::fuzz_target;

#[path = "common/mod.rs"]
mod common;

/// Naive glob: `*` matches any (possibly empty) sequence of bytes, anything else matches
/// itself ASCII case-insensitively. `row[j]`: does the pattern read so far match
/// `text[..j]`? O(|pattern| * |text|) time, O(|text|) space.
fn naive_glob(pattern: &[u8], text: &[u8]) -> bool {
    let mut row = vec![false; text.len() + 1];
    let mut next = vec![false; text.len() + 1];
    row[0] = true;
    for &p in pattern {
        if p == b'*' {
            // next[j] = some row[k] with k <= j
            let mut seen = false;
            for j in 0..=text.len() {
                seen |= row[j];
                next[j] = seen;
            }
        } else {
            next[0] = false;
            for j in 1..=text.len() {
                next[j] = row[j - 1] && p.eq_ignore_ascii_case(&text[j - 1]);
            }
        }
        std::mem::swap(&mut row, &mut next);
    }
    row[text.len()]
}

fn valid_pattern_text(p: &str) -> bool {
    !p.is_empty()
        && !p
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || !c.is_ascii())
}

fuzz_target!(|data: &[u8]| {
    let input = String::from_utf8_lossy(data);
    let (pattern, text) = match common::split_line(&input) {
        (p, Some(t)) => (p, t),
        (p, None) => (p, p),
    };
    let parsed = ActionPattern::parse(pattern);
    assert_eq!(
        parsed.is_ok(),
        valid_pattern_text(pattern),
        "parse({pattern:?}) = {parsed:?}"
    );
    let Ok(compiled) = parsed else {
        return;
    };
    assert_eq!(compiled.as_str(), pattern);
    assert_eq!(
        compiled.is_literal(),
        !pattern.contains('*'),
        "is_literal({pattern:?})"
    );

    // The naive matcher is quadratic: beyond this, only check that matching terminates
    // (and quickly: the engine is linear, and a slow unit fails the run).
    if pattern.len() * text.len() > 30_000 {
        let _ = compiled.matches(text);
        return;
    }
    let expected = naive_glob(pattern.as_bytes(), text.as_bytes());
    assert_eq!(
        compiled.matches(text),
        expected,
        "pattern {pattern:?} on {text:?}: engine {}, naive glob {expected}",
        compiled.matches(text)
    );
    let lower = text.to_ascii_lowercase();
    assert_eq!(
        compiled.matches_lower(&lower),
        expected,
        "matches_lower({lower:?})"
    );
    let upper = text.to_ascii_uppercase();
    assert_eq!(compiled.matches(&upper), expected, "matches({upper:?})");
    // A pattern always matches itself read as text (`*` matching a literal `*`).
    assert!(
        compiled.matches(pattern),
        "{pattern:?} does not match itself"
    );
});
