//! The typed problems of the policy language's value parsers. Each variant carries the
//! offending text as given (raw) and what is wrong with it; the message is rendered once,
//! here, and quotes the text only through [`escape`].

use super::{PRINCIPAL_TYPES, escape};

/// A principal id (`TYPE:VALUE`), a deny selector (`TYPE:*`) or a group id that is not
/// valid. `id` is the text as given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrincipalError {
    #[error("principal `{}` is not of the form TYPE:VALUE", escape(.id))]
    NotTypeValue { id: String },
    #[error(
        "principal `{}` has unknown type `{}` (expected one of {})",
        escape(.id),
        escape(.kind),
        PRINCIPAL_TYPES.join(", ")
    )]
    UnknownType { id: String, kind: String },
    /// A selector `:*` without a type.
    #[error("principal `{}` has an empty type", escape(.id))]
    EmptyType { id: String },
    #[error("principal `{}` has an empty value", escape(.id))]
    EmptyValue { id: String },
    #[error(
        "principal `{}` contains a control, line-separator or bidi character",
        escape(.id)
    )]
    UnsafeChar { id: String },
    /// A valid principal of another type where a `group:` id is needed.
    #[error("`{}` is not a group id (group:NAME)", escape(.id))]
    NotGroup { id: String },
}

/// A scope that is not valid: the text as given and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("scope `{}` {problem}", escape(.text))]
pub struct ScopeError {
    pub text: String,
    pub problem: ScopeProblem,
}

/// What is wrong with a scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ScopeProblem {
    #[error("must be an absolute path starting with `/`")]
    NotAbsolute,
    #[error("contains an empty segment")]
    EmptySegment,
    #[error("contains a `.` or `..` segment")]
    DotSegment,
    #[error("contains a control, line-separator or bidi character")]
    UnsafeChar,
    #[error("contains whitespace")]
    Whitespace,
    #[error("contains a backslash")]
    Backslash,
}

/// An action name or action pattern that is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ActionError {
    #[error("action pattern is empty")]
    Empty,
    #[error("action pattern `{}` contains {found}", escape(.pattern))]
    BadChar { pattern: String, found: BadChar },
    /// A `*` in a literal action (a request's action, a catalog entry).
    #[error("action `{}` must not contain `*` here", escape(.action))]
    Wildcard { action: String },
}

/// The first character an action pattern may not hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BadChar {
    #[error("whitespace")]
    Whitespace(char),
    #[error("a control character")]
    Control(char),
    /// Named escaped, never raw: a bidirectional override or a look-alike must not reach
    /// a terminal or a log through an error message.
    #[error("the non-ASCII character `{}`", .0.escape_unicode())]
    NonAscii(char),
}

impl BadChar {
    /// Classifies a character an action pattern may not hold.
    pub(crate) fn of(c: char) -> Self {
        if c.is_whitespace() {
            Self::Whitespace(c)
        } else if c.is_control() {
            Self::Control(c)
        } else {
            Self::NonAscii(c)
        }
    }
}

/// A time that is not RFC 3339: the text as given and the parser's reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("time `{}` is not RFC 3339: {reason}", escape(.text))]
pub struct TimeError {
    pub text: String,
    pub reason: time::error::Parse,
}

/// A timestamp `google.protobuf.Timestamp` does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TimestampError {
    #[error("timestamp nanos {0} is outside 0 to 999999999")]
    Nanos(i32),
    #[error("timestamp seconds {0} is outside the years 0001 to 9999")]
    Seconds(i64),
}

/// Any problem of a checked value, for the places that check more than one kind (route
/// templates check both actions and scopes).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SyntaxError {
    #[error(transparent)]
    Principal(#[from] PrincipalError),
    #[error(transparent)]
    Scope(#[from] ScopeError),
    #[error(transparent)]
    Action(#[from] ActionError),
    #[error(transparent)]
    Time(#[from] TimeError),
}

#[cfg(test)]
mod tests {
    use super::super::{
        ActionPattern, PrincipalSelector, Scope, check_action, group_id, normalize_scope,
        parse_time, principal_type,
    };
    use super::*;

    #[test]
    fn principal_errors_carry_the_id_and_the_kind() {
        assert_eq!(
            principal_type("alice"),
            Err(PrincipalError::NotTypeValue { id: "alice".into() })
        );
        assert_eq!(
            principal_type("robot:x"),
            Err(PrincipalError::UnknownType {
                id: "robot:x".into(),
                kind: "robot".into()
            })
        );
        assert_eq!(
            principal_type("user:"),
            Err(PrincipalError::EmptyValue { id: "user:".into() })
        );
        assert_eq!(
            principal_type("user:a\u{202e}b"),
            Err(PrincipalError::UnsafeChar {
                id: "user:a\u{202e}b".into()
            })
        );
        assert_eq!(
            group_id("user:alice"),
            Err(PrincipalError::NotGroup {
                id: "user:alice".into()
            })
        );
        assert_eq!(
            PrincipalSelector::parse(":*"),
            Err(PrincipalError::EmptyType { id: ":*".into() })
        );
        assert_eq!(
            PrincipalSelector::parse("robot:*"),
            Err(PrincipalError::UnknownType {
                id: "robot:*".into(),
                kind: "robot".into()
            })
        );
    }

    #[test]
    fn principal_messages_escape_the_id() {
        let e = principal_type("user:a\u{1b}b").unwrap_err();
        assert_eq!(
            e.to_string(),
            "principal `user:a\\u{1b}b` contains a control, line-separator or bidi character"
        );
    }

    #[test]
    fn scope_errors_carry_the_text_and_the_problem() {
        for (text, problem) in [
            ("a/b", ScopeProblem::NotAbsolute),
            ("/a//b", ScopeProblem::EmptySegment),
            ("/a/../b", ScopeProblem::DotSegment),
            ("/a\u{2028}b", ScopeProblem::UnsafeChar),
            ("/a\u{a0}b", ScopeProblem::Whitespace),
            ("/a\\b", ScopeProblem::Backslash),
        ] {
            let expected = ScopeError {
                text: text.into(),
                problem,
            };
            assert_eq!(normalize_scope(text), Err(expected.clone()), "{text:?}");
            assert_eq!(Scope::parse(text), Err(expected), "{text:?}");
        }
        assert_eq!(
            normalize_scope("a/b").unwrap_err().to_string(),
            "scope `a/b` must be an absolute path starting with `/`"
        );
        assert_eq!(
            normalize_scope("/a//b").unwrap_err().to_string(),
            "scope `/a//b` contains an empty segment"
        );
    }

    #[test]
    fn action_errors_carry_the_text_and_the_character() {
        assert_eq!(ActionPattern::parse(""), Err(ActionError::Empty));
        assert_eq!(
            ActionPattern::parse("a b"),
            Err(ActionError::BadChar {
                pattern: "a b".into(),
                found: BadChar::Whitespace(' ')
            })
        );
        assert_eq!(
            check_action("a\u{7f}"),
            Err(ActionError::BadChar {
                pattern: "a\u{7f}".into(),
                found: BadChar::Control('\u{7f}')
            })
        );
        assert_eq!(
            check_action("caf\u{e9}"),
            Err(ActionError::BadChar {
                pattern: "caf\u{e9}".into(),
                found: BadChar::NonAscii('\u{e9}')
            })
        );
        assert_eq!(
            check_action("a/*"),
            Err(ActionError::Wildcard {
                action: "a/*".into()
            })
        );
        assert_eq!(
            check_action("a\u{202e}b").unwrap_err().to_string(),
            "action pattern `a\\u{202e}b` contains the non-ASCII character `\\u{202e}`"
        );
    }

    #[test]
    fn time_errors_carry_the_text_and_the_parser_reason() {
        let Err(e) = parse_time("2026-13-01T00:00:00Z") else {
            panic!("month 13 parsed");
        };
        assert_eq!(e.text, "2026-13-01T00:00:00Z");
        assert!(matches!(
            e.reason,
            time::error::Parse::TryFromParsed(_) | time::error::Parse::ParseFromDescription(_)
        ));
        assert!(
            e.to_string()
                .starts_with("time `2026-13-01T00:00:00Z` is not RFC 3339: "),
            "{e}"
        );
    }

    #[test]
    fn syntax_error_is_transparent() {
        let e = SyntaxError::from(check_action("a/*").unwrap_err());
        assert!(matches!(
            e,
            SyntaxError::Action(ActionError::Wildcard { .. })
        ));
        assert_eq!(e.to_string(), "action `a/*` must not contain `*` here");
    }
}
