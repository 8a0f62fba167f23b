//! Path canonicalisation and route resolution (SPEC §4) on the embedded demo policy's
//! route table.
//!
//! Input (plain text, so that seeds are readable): the first line is the raw request path;
//! an optional second line is the method (default `GET`); every further line is a header
//! `name: value`. Invalid UTF-8 is replaced (U+FFFD), which canonicalisation must refuse
//! as non-ASCII.
//!
//! Checked:
//! - `canonicalize` and `resolve` never panic;
//! - `canonicalize` agrees with an independent model written from SPEC §4;
//! - a canonical path starts with `/`, holds no `//`, `/./`, `/../`, `%`, `\`, `;`, `?`,
//!   `#`, control or non-ASCII byte, has no empty, `.` or `..` segment, no trailing slash
//!   (but `/`), is at most 4096 bytes, and canonicalising it again returns it unchanged;
//! - a path that is not canonical never reaches a route (`Malformed`);
//! - a `Matched` outcome's scope parses as a scope, its action is a literal action (no
//!   `*`), and a non-public route has both;
//! - resolving the canonical path gives the same outcome as resolving the raw one, and so
//!   does flipping the ASCII case of the method and of the path (same route; action and
//!   scope equal ignoring ASCII case).

#![no_main]

use iot_authz::policy::route::{MAX_PATH_BYTES, RouteOutcome, canonicalize};
use iot_authz::policy::syntax::{Scope, check_action};
use libfuzzer_sys::fuzz_target;

#[path = "common/mod.rs"]
mod common;

/// SPEC §4, read literally: cut query and fragment; refuse paths over 4096 bytes and
/// paths not starting with `/`; decode percent-escapes of unreserved characters other
/// than `.`; refuse any other escape, backslashes, `;`, control and non-ASCII bytes;
/// ignore one trailing slash; refuse empty, `.` and `..` segments.
fn model_canonicalize(raw: &str) -> Option<String> {
    let path = raw.split(['?', '#']).next().unwrap_or("");
    if path.len() > MAX_PATH_BYTES || !path.starts_with('/') {
        return None;
    }
    let b = path.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = |c: u8| (c as char).to_digit(16);
                let (Some(h), Some(l)) = (
                    b.get(i + 1).copied().and_then(hex),
                    b.get(i + 2).copied().and_then(hex),
                ) else {
                    return None;
                };
                let c = (h * 16 + l) as u8;
                let unreserved_not_dot = c.is_ascii_alphanumeric() || b"-_~".contains(&c);
                if !unreserved_not_dot {
                    return None;
                }
                out.push(c);
                i += 3;
            }
            // A space is whitespace in a segment: malformed (SPEC §3, "Request values").
            b'\\' | b';' | b' ' => return None,
            c if c < 0x20 || c >= 0x7f => return None,
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    let mut s = String::from_utf8(out).ok()?;
    // `//` is an empty segment wherever it is, even where dropping a trailing slash would
    // leave `/`.
    if s.contains("//") {
        return None;
    }
    if s.len() > 1 && s.ends_with('/') {
        s.pop();
    }
    if s != "/" && s[1..].split('/').any(|seg| matches!(seg, "" | "." | "..")) {
        return None;
    }
    Some(s)
}

fn check_canonical(raw: &str, c: &str) {
    assert!(
        c.starts_with('/'),
        "canonical {c:?} of {raw:?} is not absolute"
    );
    assert!(
        c.len() <= MAX_PATH_BYTES,
        "canonical of {raw:?} is too long"
    );
    for bad in ["//", "/./", "/../"] {
        assert!(
            !c.contains(bad),
            "canonical {c:?} of {raw:?} contains {bad:?}"
        );
    }
    for b in c.bytes() {
        assert!(
            !matches!(b, b'%' | b'\\' | b';' | b'?' | b'#' | b' ')
                && !b.is_ascii_control()
                && b.is_ascii(),
            "canonical {c:?} of {raw:?} contains byte {b:#04x}"
        );
    }
    if c != "/" {
        assert!(
            !c.ends_with('/'),
            "canonical {c:?} of {raw:?} ends with `/`"
        );
        for seg in c[1..].split('/') {
            assert!(
                !matches!(seg, "" | "." | ".."),
                "canonical {c:?} of {raw:?} has segment {seg:?}"
            );
        }
    }
    let again = canonicalize(c).unwrap_or_else(|e| panic!("canonical {c:?} is refused: {e}"));
    assert_eq!(
        again.as_str(),
        c,
        "canonicalisation is not idempotent on {c:?}"
    );
}

fn flip_case(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_lowercase() {
                c.to_ascii_uppercase()
            } else {
                c.to_ascii_lowercase()
            }
        })
        .collect()
}

// Parse and compile the demo policy before fuzzing starts (seconds in an unoptimised
// build), so that it counts against no input's timeout.
fuzz_target!(init: {
    common::demo_snapshot();
}, |data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (raw, rest) = common::split_line(&text);
    let (method, header_lines) = match rest {
        Some(rest) => {
            let (m, h) = common::split_line(rest);
            (m, h.unwrap_or(""))
        }
        None => ("GET", ""),
    };
    let headers: Vec<(String, String)> = header_lines
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.strip_prefix(' ').unwrap_or(v).to_owned()))
        .collect();

    // Canonicalisation alone.
    let canonical = canonicalize(raw);
    let model = model_canonicalize(raw);
    match (&canonical, &model) {
        (Ok(c), Some(m)) => {
            assert_eq!(c.as_str(), m, "canonical form of {raw:?} differs from SPEC §4 model");
            check_canonical(raw, c.as_str());
            let segs: Vec<&str> = c.segments().collect();
            assert_eq!(
                segs.join("/"),
                c.as_str().trim_start_matches('/'),
                "segments of {c:?}"
            );
        }
        (Err(_), None) => {}
        (Ok(c), None) => panic!("{raw:?} is accepted as {:?}; SPEC §4 makes it malformed", c),
        (Err(e), Some(m)) => panic!("{raw:?} is refused ({e}); SPEC §4 canonicalises it to {m:?}"),
    }

    // Routing on the demo policy.
    let table = &common::demo_snapshot().routes;
    let outcome = table.resolve(method, raw, &headers);
    let Ok(canonical) = canonical else {
        assert!(
            matches!(outcome, RouteOutcome::Malformed(_)),
            "non-canonical path {raw:?} reached routing: {outcome:?}"
        );
        return;
    };
    if let RouteOutcome::Matched {
        route,
        action,
        scope,
    } = &outcome
    {
        if let Some(a) = action {
            assert!(!a.contains('*'), "action {a:?} from {raw:?} has `*`");
            check_action(a).unwrap_or_else(|e| panic!("action {a:?} from {raw:?}: {e}"));
        }
        if let Some(s) = scope {
            Scope::parse(s).unwrap_or_else(|e| panic!("scope {s:?} from {raw:?}: {e}"));
        }
        if !route.public {
            assert!(
                action.is_some() && scope.is_some(),
                "non-public route {} matched {raw:?} without action or scope",
                route.path
            );
        }
    }
    let again = table.resolve(method, canonical.as_str(), &headers);
    assert_eq!(outcome, again, "raw {raw:?} and canonical {canonical:?} route differently");

    // Static segments and methods compare ASCII case-insensitively.
    let flipped_path = flip_case(canonical.as_str());
    let flipped_method = flip_case(method);
    let flipped = table.resolve(&flipped_method, &flipped_path, &headers);
    match (&outcome, &flipped) {
        (
            RouteOutcome::Matched {
                route: r1,
                action: a1,
                scope: s1,
            },
            RouteOutcome::Matched {
                route: r2,
                action: a2,
                scope: s2,
            },
        ) => {
            assert!(
                std::ptr::eq(*r1, *r2),
                "case flip of {raw:?} changes the route: {} vs {}",
                r1.path,
                r2.path
            );
            let same = |x: &Option<String>, y: &Option<String>| match (x, y) {
                (Some(x), Some(y)) => x.eq_ignore_ascii_case(y),
                (None, None) => true,
                _ => false,
            };
            assert!(same(a1, a2) && same(s1, s2), "case flip of {raw:?}: {a1:?}/{s1:?} vs {a2:?}/{s2:?}");
        }
        (RouteOutcome::NoRoute, RouteOutcome::NoRoute)
        | (RouteOutcome::Malformed(_), RouteOutcome::Malformed(_)) => {}
        (a, b) => panic!("case flip of {raw:?} / {method:?} changes the outcome: {a:?} vs {b:?}"),
    }
});
