//! Checked value types of the policy language: principal ids, scopes, action patterns and
//! instants. Each has one parser that returns a typed problem (in [`errors`]) on bad input,
//! whose message is lowercase; the compiler adds the document and object to it.

use std::fmt;

mod errors;

pub use errors::{
    ActionError, BadChar, PrincipalError, ScopeError, ScopeProblem, SyntaxError, TimeError,
    TimestampError,
};

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// The principal types SPEC §2 knows.
pub const PRINCIPAL_TYPES: [&str; 6] = [
    "user",
    "group",
    "servicePrincipal",
    "application",
    "device",
    "gateway",
];

/// Checks a `TYPE:VALUE` principal id and returns its type.
pub fn principal_type(id: &str) -> Result<&str, PrincipalError> {
    // Fast path on bytes: a known type, a non-empty printable ASCII value.
    let bytes = id.as_bytes();
    if let Some(colon) = bytes.iter().position(|&b| b == b':') {
        let (kind, value) = (&id[..colon], &bytes[colon + 1..]);
        if !value.is_empty()
            && value.iter().all(|&b| (0x20..0x7f).contains(&b))
            && let Some(kind) = known_type(kind)
        {
            return Ok(kind);
        }
    }
    principal_type_slow(id)
}

/// The static spelling of a known principal type.
fn known_type(kind: &str) -> Option<&'static str> {
    PRINCIPAL_TYPES.iter().copied().find(|&t| t == kind)
}

fn principal_type_slow(id: &str) -> Result<&str, PrincipalError> {
    let Some((kind, value)) = id.split_once(':') else {
        return Err(PrincipalError::NotTypeValue { id: id.into() });
    };
    if !PRINCIPAL_TYPES.contains(&kind) {
        return Err(PrincipalError::UnknownType {
            id: id.into(),
            kind: kind.into(),
        });
    }
    if value.is_empty() {
        return Err(PrincipalError::EmptyValue { id: id.into() });
    }
    if value.chars().any(is_unsafe_char) {
        return Err(PrincipalError::UnsafeChar { id: id.into() });
    }
    Ok(kind)
}

/// Checks that `id` is a full `group:` principal id.
pub fn group_id(id: &str) -> Result<(), PrincipalError> {
    match principal_type(id)? {
        "group" => Ok(()),
        _ => Err(PrincipalError::NotGroup { id: id.into() }),
    }
}

/// A principal selector of a deny assignment: an id, `TYPE:*` or `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrincipalSelector {
    Everyone,
    Type(String),
    Id(String),
}

impl PrincipalSelector {
    pub fn parse(text: &str) -> Result<Self, PrincipalError> {
        if text == "*" {
            return Ok(Self::Everyone);
        }
        if let Some(kind) = text.strip_suffix(":*") {
            // Problems quote the selector as written, not a made-up id.
            return match known_type(kind) {
                Some(kind) => Ok(Self::Type(kind.to_owned())),
                None if kind.is_empty() => Err(PrincipalError::EmptyType { id: text.into() }),
                None => Err(PrincipalError::UnknownType {
                    id: text.into(),
                    kind: kind.into(),
                }),
            };
        }
        principal_type(text)?;
        Ok(Self::Id(text.to_owned()))
    }
}

/// A checked scope: `/` or `/seg/seg/...`.
///
/// `display` keeps the policy's spelling (without a trailing slash); `key` is the ASCII
/// lowercase form every comparison uses.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Scope {
    display: Box<str>,
    key: Box<str>,
}

impl Scope {
    pub fn parse(text: &str) -> Result<Self, ScopeError> {
        let trimmed = normalize_scope(text)?;
        Ok(Self {
            display: trimmed.into(),
            key: trimmed.to_ascii_lowercase().into(),
        })
    }

    pub fn root() -> Self {
        Self {
            display: "/".into(),
            key: "/".into(),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.display
    }

    pub fn key(&self) -> &str {
        &self.key
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.display)
    }
}

/// A scope without its one optional trailing slash: `/a/b/` is `/a/b`, `/` stays `/`, and
/// `//` stays `//` (an empty segment, not the root). Scope keys are the lowercase form of
/// this.
pub fn trim_scope(text: &str) -> &str {
    match text.strip_suffix('/') {
        Some(trimmed) if trimmed.len() > 1 => trimmed,
        _ => text,
    }
}

/// Checks a scope and returns it without its one optional trailing slash.
pub fn normalize_scope(text: &str) -> Result<&str, ScopeError> {
    // Fast path: one pass over the bytes; any problem is described by the slow path.
    if text == "/" {
        return Ok(text);
    }
    let trimmed = trim_scope(text);
    if scope_bytes_ok(trimmed.as_bytes()) {
        return Ok(trimmed);
    }
    normalize_scope_slow(text)
}

/// Whether `/seg/.../seg` (no trailing slash) has only valid segments: no control
/// character, space, DEL, backslash or non-ASCII byte (one branch-free pass, which
/// vectorizes; a non-ASCII scope is judged by the slow path, which knows Unicode
/// whitespace, line separators and bidi controls), and no empty, `.` or `..` segment
/// (found by `memchr` between slashes).
fn scope_bytes_ok(bytes: &[u8]) -> bool {
    let Some((&b'/', rest)) = bytes.split_first() else {
        return false;
    };
    let bad = rest.iter().fold(0u8, |acc, &b| {
        acc | u8::from(matches!(b, 0..=0x20 | 0x7f..=0xff | b'\\'))
    });
    if bad != 0 {
        return false;
    }
    let mut start = 0;
    for end in memchr::memchr_iter(b'/', rest).chain(std::iter::once(rest.len())) {
        let segment = &rest[start..end];
        if segment.is_empty() || segment == b"." || segment == b".." {
            return false;
        }
        start = end + 1;
    }
    true
}

fn normalize_scope_slow(text: &str) -> Result<&str, ScopeError> {
    let error = |problem| ScopeError {
        text: text.into(),
        problem,
    };
    if !text.starts_with('/') {
        return Err(error(ScopeProblem::NotAbsolute));
    }
    if text == "/" {
        return Ok(text);
    }
    let trimmed = trim_scope(text);
    for segment in trimmed[1..].split('/') {
        let problem = match segment {
            "" => Some(ScopeProblem::EmptySegment),
            "." | ".." => Some(ScopeProblem::DotSegment),
            s if s.chars().any(is_unsafe_char) => Some(ScopeProblem::UnsafeChar),
            s if s.contains(char::is_whitespace) => Some(ScopeProblem::Whitespace),
            s if s.contains('\\') => Some(ScopeProblem::Backslash),
            _ => None,
        };
        if let Some(problem) = problem {
            return Err(error(problem));
        }
    }
    Ok(trimmed)
}

/// Iterates over the path prefixes of a normalized lowercase scope key, longest first,
/// ending with `/`: `/a/b` yields `/a/b`, `/a`, `/`.
pub fn scope_prefixes(key: &str) -> impl Iterator<Item = &str> {
    // Prefixes end before an ASCII `/`, so they are always on a character boundary.
    scope_key_prefixes(key.as_bytes()).map(move |p| key.get(..p.len()).unwrap_or("/"))
}

/// [`scope_prefixes`] over bytes.
pub fn scope_key_prefixes(key: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut next = Some(key.len());
    std::iter::from_fn(move || {
        let end = next?;
        if end == 0 || key == b"/" {
            next = None;
            return Some(&b"/"[..]);
        }
        let prefix = &key[..end];
        next = memchr::memrchr(b'/', prefix);
        Some(prefix)
    })
}

/// Checks the text of an action pattern (`*` is the only metacharacter).
pub fn check_pattern(text: &str) -> Result<(), ActionError> {
    // Fast path: printable ASCII other than space is always valid.
    if !text.is_empty() && text.bytes().all(|b| (0x21..0x7f).contains(&b)) {
        return Ok(());
    }
    check_pattern_slow(text)
}

fn check_pattern_slow(text: &str) -> Result<(), ActionError> {
    if text.is_empty() {
        return Err(ActionError::Empty);
    }
    if let Some(c) = text
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || !c.is_ascii())
    {
        return Err(ActionError::BadChar {
            pattern: text.into(),
            found: BadChar::of(c),
        });
    }
    Ok(())
}

/// Checks a literal action name (a pattern without `*`).
pub fn check_action(text: &str) -> Result<(), ActionError> {
    if !text.is_empty() && text.bytes().all(|b| (0x21..0x7f).contains(&b) && b != b'*') {
        return Ok(());
    }
    check_pattern(text)?;
    if text.contains('*') {
        return Err(ActionError::Wildcard {
            action: text.into(),
        });
    }
    Ok(())
}

/// A compiled action pattern: ASCII-lowercase literal parts between `*`s.
///
/// Matching is greedy leftmost search of each middle part, which is exact for patterns whose
/// only metacharacter is `*` and never backtracks: linear in the input for each part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionPattern {
    source: Box<str>,
    kind: PatternKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum PatternKind {
    Exact(Box<str>),
    Any,
    Glob {
        first: Box<str>,
        middle: Box<[Box<str>]>,
        last: Box<str>,
    },
}

impl ActionPattern {
    pub fn parse(text: &str) -> Result<Self, ActionError> {
        check_pattern(text)?;
        let lower = text.to_ascii_lowercase();
        let kind = if !lower.contains('*') {
            PatternKind::Exact(lower.into())
        } else if lower.bytes().all(|b| b == b'*') {
            PatternKind::Any
        } else {
            let mut parts: Vec<&str> = lower.split('*').collect();
            let last = parts.pop().unwrap_or_default();
            let first = if parts.is_empty() {
                ""
            } else {
                parts.remove(0)
            };
            let middle: Vec<Box<str>> = parts
                .into_iter()
                .filter(|p| !p.is_empty())
                .map(Into::into)
                .collect();
            PatternKind::Glob {
                first: first.into(),
                middle: middle.into(),
                last: last.into(),
            }
        };
        Ok(Self {
            source: text.into(),
            kind,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }

    pub fn is_literal(&self) -> bool {
        matches!(self.kind, PatternKind::Exact(_))
    }

    /// The lowercase action a pattern without `*` matches.
    pub fn literal(&self) -> Option<&str> {
        match &self.kind {
            PatternKind::Exact(exact) => Some(exact),
            _ => None,
        }
    }

    /// Matches an action that the caller already lowercased (ASCII).
    pub fn matches_lower(&self, action: &str) -> bool {
        match &self.kind {
            PatternKind::Exact(exact) => **exact == *action,
            PatternKind::Any => true,
            PatternKind::Glob {
                first,
                middle,
                last,
            } => {
                if action.len() < first.len() + last.len()
                    || !action.starts_with(&**first)
                    || !action.ends_with(&**last)
                {
                    return false;
                }
                let mut rest = &action[first.len()..action.len() - last.len()];
                for part in middle.iter() {
                    match rest.find(&**part) {
                        Some(at) => rest = &rest[at + part.len()..],
                        None => return false,
                    }
                }
                true
            }
        }
    }

    /// Matches an action in any ASCII case.
    pub fn matches(&self, action: &str) -> bool {
        if action.bytes().any(|b| b.is_ascii_uppercase()) {
            self.matches_lower(&action.to_ascii_lowercase())
        } else {
            self.matches_lower(action)
        }
    }
}

/// An instant as Unix nanoseconds. 128 bits, so that every time RFC 3339 can write (the
/// years 0000 to 9999) and every protobuf timestamp is held exactly: a `notAfter` of
/// `9999-12-31T23:59:59Z` (a common "never") and a request in the year 2400 compare as
/// written, and an absent bound (`Instant::MIN`, `Instant::MAX`) lies beyond every time
/// that can be written.
pub type Instant = i128;

/// Parses an RFC 3339 time.
pub fn parse_time(text: &str) -> Result<Instant, TimeError> {
    let parsed = OffsetDateTime::parse(text, &Rfc3339).map_err(|reason| TimeError {
        text: text.into(),
        reason,
    })?;
    Ok(parsed.unix_timestamp_nanos())
}

/// Formats an instant as RFC 3339 (UTC).
pub fn format_time(at: Instant) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(at)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| at.to_string())
}

/// The current time.
pub fn now() -> Instant {
    OffsetDateTime::now_utc().unix_timestamp_nanos()
}

/// The one character policy of principals, scopes and every output: characters that
/// are refused in names and escaped wherever text leaves the process. C0 and C1 controls
/// and DEL, the Unicode line and paragraph separators (which split a log record into lines
/// in common tools), and the bidirectional marks, embeddings, overrides and isolates (which
/// make a log line read differently from what it holds).
pub fn is_unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}'
                | '\u{2029}'
                | '\u{061c}'
                | '\u{200e}'
                | '\u{200f}'
                | '\u{202a}'..='\u{202e}'
                | '\u{2066}'..='\u{2069}'
                | '\u{feff}'
        )
}

/// JSON text (serde_json's output) with every [`is_unsafe_char`] that serde_json leaves
/// raw written as a `\uXXXX` escape: the same value to a JSON reader, one line to every
/// other tool. Only string contents can hold such characters, so the escape is valid JSON.
pub fn escape_json_output(json: &str) -> std::borrow::Cow<'_, str> {
    if json.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return json.into();
    }
    let mut out = String::with_capacity(json.len() + 16);
    for c in json.chars() {
        if is_unsafe_char(c) {
            use std::fmt::Write as _;
            let _ = write!(out, "\\u{:04x}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    out.into()
}

/// Renders user-supplied text safely inside a message: control characters, non-ASCII and
/// backticks (the quotes messages put around values) are escaped, and long values are cut,
/// so that error messages never carry raw input.
pub fn escape(text: &str) -> String {
    const LIMIT: usize = 200;
    let mut out = String::with_capacity(text.len().min(LIMIT + 8));
    for (count, c) in text.chars().enumerate() {
        if count == LIMIT {
            out.push_str("...");
            break;
        }
        if c.is_ascii() && !c.is_ascii_control() && c != '`' {
            out.push(c);
        } else if c == '`' {
            // `escape_default` keeps a backtick, which would end the quote around the value.
            out.push_str("\\u{60}");
        } else {
            out.extend(c.escape_default());
        }
    }
    out
}

/// Renders a message that quotes user text verbatim (a parser's error, which names unknown
/// keys and shows source lines) safely: control characters other than newline and tab are
/// escaped, everything else, and the message's length, is kept. Use [`escape`] for a single
/// value.
pub fn escape_controls(message: &str) -> std::borrow::Cow<'_, str> {
    let unsafe_char = |c: char| is_unsafe_char(c) && c != '\n' && c != '\t';
    if !message.chars().any(unsafe_char) {
        return message.into();
    }
    let mut out = String::with_capacity(message.len() + 8);
    for c in message.chars() {
        if unsafe_char(c) {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_non_ascii_character_is_named_escaped() {
        let e = check_action("a\u{202e}b").unwrap_err().to_string();
        assert!(e.is_ascii(), "{e:?}");
        assert!(e.contains("\\u{202e}"), "{e}");
    }

    #[test]
    fn one_character_policy_for_principals_scopes_and_outputs() {
        for c in [
            '\u{85}', '\u{9b}', '\u{2028}', '\u{2029}', '\u{202e}', '\u{2066}', '\u{7f}',
        ] {
            assert!(is_unsafe_char(c), "{c:?}");
            let principal = format!("user:a{c}b");
            assert!(principal_type(&principal).is_err(), "{c:?}");
            let scope = format!("/apps/a{c}b");
            assert!(normalize_scope(&scope).is_err(), "{c:?}");
            let json = serde_json::to_string(&scope).unwrap();
            let escaped = escape_json_output(&json);
            assert!(!escaped.contains(c), "{escaped}");
            assert_eq!(serde_json::from_str::<String>(&escaped).unwrap(), scope);
        }
        assert!(normalize_scope("/caf\u{e9}").is_ok());
        assert!(principal_type("user:caf\u{e9}").is_ok());
    }

    #[test]
    fn escape_controls_keeps_structure_and_escapes_control_characters() {
        assert_eq!(escape_controls("line `a`\n\tb"), "line `a`\n\tb");
        assert_eq!(escape_controls("key `\u{1b}[31m`"), "key `\\u{1b}[31m`");
    }

    #[test]
    fn every_rfc3339_time_is_exact_and_inside_the_absent_bounds() {
        let never = parse_time("9999-12-31T23:59:59Z").unwrap();
        let later = parse_time("2400-01-01T00:00:00Z").unwrap();
        let first = parse_time("0000-01-01T00:00:00Z").unwrap();
        assert_eq!(never, 253_402_300_799_000_000_000);
        assert!(first < parse_time("0001-01-01T00:00:00Z").unwrap());
        assert!(Instant::MIN < first && later < never && never < Instant::MAX);
        assert_eq!(format_time(later), "2400-01-01T00:00:00Z");
        assert_eq!(parse_time("1970-01-01T00:00:01Z"), Ok(1_000_000_000));
        assert!(parse_time("2026-13-01T00:00:00Z").is_err());
    }

    #[test]
    fn prefixes_walk_to_root() {
        assert_eq!(
            scope_prefixes("/a/b/c").collect::<Vec<_>>(),
            vec!["/a/b/c", "/a/b", "/a", "/"]
        );
        assert_eq!(scope_prefixes("/").collect::<Vec<_>>(), vec!["/"]);
        assert_eq!(scope_prefixes("/a").collect::<Vec<_>>(), vec!["/a", "/"]);
    }

    #[test]
    fn scopes_are_checked_and_trimmed() {
        assert_eq!(Scope::parse("/A/b/").unwrap().key(), "/a/b");
        assert_eq!(Scope::parse("/A/b/").unwrap().as_str(), "/A/b");
        assert!(Scope::parse("a/b").is_err());
        assert!(Scope::parse("/a//b").is_err());
        assert!(Scope::parse("/a/./b").is_err());
        assert!(Scope::parse("/a/../b").is_err());
        assert!(Scope::parse("/a/b//").is_err());
    }

    #[test]
    fn patterns_match_like_globs() {
        let p = ActionPattern::parse("*/read").unwrap();
        assert!(p.matches("Microsoft.Edge/targets/READ"));
        assert!(!p.matches("Microsoft.Edge/targets/write"));
        let p = ActionPattern::parse("Microsoft.Security/*").unwrap();
        assert!(p.matches("microsoft.security/alerts/read"));
        assert!(!p.matches("Microsoft.SecurityX"));
        let p = ActionPattern::parse("a*b*a").unwrap();
        assert!(p.matches("aba"));
        assert!(!p.matches("ab"));
        assert!(p.matches("abba"));
        let p = ActionPattern::parse("*a*a*a*a*b").unwrap();
        assert!(!p.matches(&"a".repeat(10_000)));
        assert!(p.matches(&format!("{}b", "a".repeat(10))));
    }

    #[test]
    fn fast_paths_agree_with_the_full_checks() {
        let samples = [
            "",
            "/",
            "//",
            "///",
            "/a",
            "/a/",
            "/a//",
            "/A/b",
            "/a/./b",
            "/a/../b",
            "/./",
            "/..",
            "/...",
            "/.a",
            "/a.",
            "/a\\b",
            "/a\u{7f}",
            "/a\tb",
            "/é",
            "a/b",
            "/a/b/",
            "a/",
            "/ab/",
            "user:alice",
            "user:",
            ":x",
            "robot:x",
            "group:g1",
            "user:a\u{85}b",
            "user:a b",
            "user:é",
            "user:a:b",
            "Microsoft.Edge/*",
            "a*b",
            "*",
            "a b",
            "a\u{a0}b",
            "\t",
            "ab\u{7f}",
            "x/read",
        ];
        for text in samples {
            assert_eq!(
                normalize_scope(text),
                normalize_scope_slow(text),
                "{text:?}"
            );
            // A valid scope normalizes to its trimmed form, the form scope keys are made of.
            if let Ok(normalized) = normalize_scope(text) {
                assert_eq!(trim_scope(text), normalized, "{text:?}");
            }
            assert_eq!(principal_type(text), principal_type_slow(text), "{text:?}");
            assert_eq!(check_pattern(text), check_pattern_slow(text), "{text:?}");
            let full = check_pattern_slow(text).and_then(|()| {
                if text.contains('*') {
                    Err(ActionError::Wildcard {
                        action: text.into(),
                    })
                } else {
                    Ok(())
                }
            });
            assert_eq!(check_action(text), full, "{text:?}");
        }
    }

    #[test]
    fn principals_are_typed() {
        assert_eq!(principal_type("user:alice").unwrap(), "user");
        assert!(principal_type("alice").is_err());
        assert!(principal_type("robot:x").is_err());
        assert!(principal_type("user:").is_err());
        assert_eq!(
            PrincipalSelector::parse("application:*").unwrap(),
            PrincipalSelector::Type("application".into())
        );
    }

    #[test]
    fn selector_problems_quote_the_selector_as_written() {
        let unknown = |id: &str, kind: &str| PrincipalError::UnknownType {
            id: id.into(),
            kind: kind.into(),
        };
        for (text, expected) in [
            ("robot:*", unknown("robot:*", "robot")),
            (":*", PrincipalError::EmptyType { id: ":*".into() }),
            ("User:*", unknown("User:*", "User")),
            ("user:a:*", unknown("user:a:*", "user:a")),
        ] {
            assert_eq!(PrincipalSelector::parse(text), Err(expected), "{text}");
        }
        assert_eq!(
            PrincipalSelector::parse("*").unwrap(),
            PrincipalSelector::Everyone
        );
        assert_eq!(
            PrincipalSelector::parse("gateway:g-1").unwrap(),
            PrincipalSelector::Id("gateway:g-1".into())
        );
    }

    #[test]
    fn group_ids_are_group_principals() {
        assert!(group_id("group:g1").is_ok());
        assert!(group_id("user:g1").is_err());
        assert!(group_id("g1").is_err());
        assert!(group_id("group:").is_err());
    }

    #[test]
    fn a_scope_displays_as_written_without_its_trailing_slash() {
        assert_eq!(Scope::parse("/A/b/").unwrap().to_string(), "/A/b");
        assert_eq!(Scope::root().to_string(), "/");
        assert_eq!(Scope::root().key(), "/");
        // `//` is an empty segment, never the root.
        assert_eq!(trim_scope("//"), "//");
        assert_eq!(trim_scope("/"), "/");
        assert_eq!(trim_scope("/a/"), "/a");
        assert_eq!(trim_scope("/a"), "/a");
    }

    /// What the slow path refuses, `normalize_scope` refuses: whitespace of any kind, a
    /// backslash, an empty or dot segment.
    #[test]
    fn scopes_refuse_whitespace_backslashes_and_empty_or_dot_segments() {
        use ScopeProblem as P;
        for (bad, problem) in [
            ("/a b", P::Whitespace),
            ("/a\u{a0}b", P::Whitespace),
            ("/a\u{2003}b", P::Whitespace),
            ("/a\\b", P::Backslash),
            ("/a\\b\\c", P::Backslash),
            ("/a b\tc", P::UnsafeChar),
            ("/a//b", P::EmptySegment),
            ("/a/./b", P::DotSegment),
            ("/a/../b", P::DotSegment),
            ("/..", P::DotSegment),
            ("/.", P::DotSegment),
            ("//", P::EmptySegment),
            ("a", P::NotAbsolute),
            ("", P::NotAbsolute),
        ] {
            let expected = ScopeError {
                text: bad.into(),
                problem,
            };
            assert_eq!(normalize_scope(bad).unwrap_err(), expected, "{bad:?}");
            assert_eq!(normalize_scope_slow(bad).unwrap_err(), expected, "{bad:?}");
        }
        for good in ["/", "/a", "/a/b/", "/...", "/.a", "/a./b", "/caf\u{e9}"] {
            assert_eq!(normalize_scope(good), Ok(trim_scope(good)), "{good:?}");
        }
    }

    /// The byte pass answers exactly what the full check answers for ASCII scopes without a
    /// trailing slash (a non-ASCII scope is left to the full check).
    #[test]
    fn the_scope_byte_pass_accepts_exactly_the_valid_ascii_scopes() {
        let samples = [
            "/",
            "/a",
            "/a/b",
            "/A/b-c_d.e~f",
            "/a b",
            "/a\tb",
            "/a\\b",
            "/a\\b\\c",
            "/a\u{7f}",
            "/a//b",
            "/a/./b",
            "/a/../b",
            "/.",
            "/..",
            "/...",
            "/.a",
            "/a.",
            "a/b",
            "",
        ];
        for text in samples {
            let valid = text != "/" && normalize_scope_slow(text).is_ok();
            assert_eq!(scope_bytes_ok(text.as_bytes()), valid, "{text:?}");
        }
        assert!(!scope_bytes_ok("/caf\u{e9}".as_bytes()));
    }

    #[test]
    fn action_patterns_refuse_blanks_and_other_characters() {
        for bad in ["", "a b", "a\tb", "a\u{a0}b", "a\u{7f}", "caf\u{e9}/read"] {
            assert!(check_pattern(bad).is_err(), "{bad:?}");
            assert!(check_pattern_slow(bad).is_err(), "{bad:?}");
            assert!(check_action(bad).is_err(), "{bad:?}");
            assert!(ActionPattern::parse(bad).is_err(), "{bad:?}");
        }
        assert!(check_pattern("a*").is_ok());
        assert!(check_action("a*").is_err());
        assert!(check_action("*").is_err());
        assert!(check_action("a/b").is_ok());
        let e = check_pattern("a b").unwrap_err().to_string();
        assert!(e.contains("whitespace"), "{e}");
        let e = check_pattern("a\u{7f}").unwrap_err().to_string();
        assert!(e.contains("control"), "{e}");
    }

    #[test]
    fn a_pattern_keeps_its_spelling_and_matches_literally_without_a_star() {
        let p = ActionPattern::parse("Microsoft.Edge/Targets/Read").unwrap();
        assert_eq!(p.as_str(), "Microsoft.Edge/Targets/Read");
        assert!(p.is_literal());
        assert_eq!(p.literal(), Some("microsoft.edge/targets/read"));
        assert!(p.matches("MICROSOFT.EDGE/TARGETS/READ"));
        assert!(p.matches_lower("microsoft.edge/targets/read"));
        assert!(!p.matches("microsoft.edge/targets/write"));
        assert!(!p.matches("microsoft.edge/targets/rea"));
        let p = ActionPattern::parse("Microsoft.Edge/*").unwrap();
        assert_eq!(p.as_str(), "Microsoft.Edge/*");
        assert!(!p.is_literal());
        assert_eq!(p.literal(), None);
        for any in ["*", "**"] {
            let p = ActionPattern::parse(any).unwrap();
            assert!(!p.is_literal() && p.literal().is_none());
            assert!(p.matches("") && p.matches("a/b/c"));
        }
    }

    /// Each literal part of a pattern is matched in order, without overlapping another.
    #[test]
    fn glob_parts_match_in_order_without_overlap() {
        let cases = [
            ("a*b", "ab", true),
            ("a*b", "axyb", true),
            ("a*b", "ba", false),
            ("a*a", "a", false),
            ("a*a", "aa", true),
            ("a*b*a", "a", false),
            ("a*b*b", "ab", false),
            ("a*b*b", "abb", true),
            ("a*b*c", "axc", false),
            ("a*b*c", "abc", true),
            ("*b*b*", "xb", false),
            ("*b*b*", "xbb", true),
            ("*ab*ab*", "xabab", true),
            ("*ab*ab*", "xaba", false),
            ("x/*", "y/x/z", false),
            ("*/read", "x/write", false),
        ];
        for (pattern, action, expected) in cases {
            let p = ActionPattern::parse(pattern).unwrap();
            assert_eq!(p.matches(action), expected, "{pattern} on {action}");
        }
    }

    #[test]
    fn now_is_the_current_time() {
        let clock = || {
            let since = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap();
            i128::try_from(since.as_nanos()).unwrap()
        };
        let before = clock();
        let t = now();
        let after = clock();
        // Nanoseconds since the epoch, read between two readings of the system clock.
        assert!(before <= t && t <= after, "{before} <= {t} <= {after}");
    }

    /// `escape` keeps printable ASCII other than a backtick as it is, escapes the rest and
    /// cuts long text.
    #[test]
    fn escape_keeps_printable_ascii_and_escapes_the_rest() {
        let plain = "C:\\dir \"x\" 'y' {z} ~!";
        assert_eq!(escape(plain), plain);
        assert_eq!(escape("a\u{1b}[31mb"), "a\\u{1b}[31mb");
        assert_eq!(escape("a\nb"), "a\\nb");
        assert_eq!(escape("a`b"), "a\\u{60}b");
        assert_eq!(escape("caf\u{e9}"), "caf\\u{e9}");
        assert_eq!(escape(""), "");
        let long = "a".repeat(300);
        assert_eq!(escape(&long), format!("{}...", "a".repeat(200)));
        assert_eq!(escape(&"a".repeat(200)), "a".repeat(200));
    }
}
