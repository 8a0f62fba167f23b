//! The typed problems of routing: a request the route table cannot map (malformed, a
//! 400), and a route the compiler refuses. Each carries the offending name, value or
//! limit; the message is rendered once, here, quoting user text only through [`escape`].

use std::fmt;

use super::{MAX_PATH_BYTES, conflicting_header_message};
use crate::policy::syntax::{ActionError, ScopeError, SyntaxError, escape};

/// What a path or a captured value holds that the path rules of SPEC §4 refuse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// An escape of a reserved character (as written, e.g. `%2F`).
    #[error("contains the reserved escape `{}`", escape(.text))]
    ReservedEscape { text: String },
    #[error("contains an invalid percent-escape")]
    InvalidEscape,
    #[error("contains a backslash")]
    Backslash,
    #[error("contains `;` (matrix parameters are refused)")]
    Semicolon,
    #[error("contains whitespace")]
    Whitespace,
    #[error("contains a control byte")]
    ControlByte,
    #[error("contains a non-ASCII byte")]
    NonAscii,
}

/// Why a request path is malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The path (before any query or fragment) is `length` bytes, over the limit.
    #[error("path is longer than {limit} bytes")]
    TooLong { length: usize, limit: usize },
    #[error("path must start with `/` (origin form)")]
    NotOriginForm,
    #[error("path {0}")]
    Decode(DecodeError),
    #[error("path contains an empty segment (`//`)")]
    EmptySegment,
    #[error("path contains a `.` or `..` segment")]
    DotSegment,
}

impl PathError {
    pub(super) fn too_long(length: usize) -> Self {
        Self::TooLong {
            length,
            limit: MAX_PATH_BYTES,
        }
    }
}

/// Why a captured value (a path segment or a header value) is not one plain segment.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SegmentError {
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("is empty")]
    Empty,
    #[error("is a `.` or `..` segment")]
    DotSegment,
    #[error("contains `/`, `\\` or `*`")]
    Separator,
    #[error("contains `?` or `#`")]
    QueryOrFragment,
}

/// Which template of a route: its action or its scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Action,
    Scope,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Action => "action",
            Self::Scope => "scope",
        })
    }
}

/// A path capture as written in the route (`{name}` or `{name...}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capture {
    pub name: String,
    /// A rest capture, `{name...}`.
    pub rest: bool,
}

impl fmt::Display for Capture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dots = if self.rest { "..." } else { "" };
        write!(f, "{{{}{dots}}}", escape(&self.name))
    }
}

/// A request the route table cannot map: deny with status 400 (reason `malformed`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MalformedRequest {
    #[error(transparent)]
    Path(#[from] PathError),
    #[error("method is empty or not a token")]
    Method,
    /// A request segment a capture of the matched route spans is not a plain segment.
    #[error("path capture `{capture}` {problem}")]
    PathCapture {
        capture: Capture,
        problem: SegmentError,
    },
    /// A header a template reads (lowercase name) is absent.
    #[error("header `{}` needed for the {target} is missing", escape(.name))]
    HeaderMissing { name: String, target: Target },
    /// A header a template reads is given more than once with different values.
    #[error("{}", conflicting_header_message(.name))]
    HeaderConflict { name: String },
    #[error("header `{}` captured for the {target} {problem}", escape(.name))]
    HeaderCapture {
        name: String,
        target: Target,
        problem: SegmentError,
    },
    /// The rendered action is not an action.
    #[error(transparent)]
    Action(#[from] ActionError),
    /// The rendered scope is not a scope.
    #[error(transparent)]
    Scope(#[from] ScopeError),
}

/// A route the compiler refuses (`path` is the route's path, `text` a template, as
/// written).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("methods: `*` must stand alone")]
    StarNotAlone,
    #[error("methods: must list at least one method or `*`")]
    NoMethods,
    #[error("method `{}` is not an HTTP method", escape(.method))]
    BadMethod { method: String },
    #[error("path `{}`: {problem}", escape(.path))]
    BadPath { path: String, problem: PathError },
    #[error(
        "path `{}` is not canonical (write it decoded, without query or fragment)",
        escape(.path)
    )]
    NotCanonical { path: String },
    #[error("path `{}`: `{{{}...}}` must be the last segment", escape(.path), escape(.name))]
    RestNotLast { path: String, name: String },
    #[error("path `{}`: a capture must be a whole segment", escape(.path))]
    PartialCapture { path: String },
    #[error(
        "path `{}`: `{{header:...}}` may appear in action and scope only",
        escape(.path)
    )]
    HeaderInPath { path: String },
    #[error(
        "path `{}`: capture name `{}` must be letters, digits, `_` or `-`",
        escape(.path),
        escape(.name)
    )]
    BadCaptureName { path: String, name: String },
    #[error("path `{}`: capture `{}` is used twice", escape(.path), escape(.name))]
    DuplicateCapture { path: String, name: String },
    #[error("{target} `{}` has an unclosed `{{`", escape(.text))]
    Unclosed { target: Target, text: String },
    #[error("{target} `{}` has a stray `}}`", escape(.text))]
    StrayBrace { target: Target, text: String },
    #[error("{target} `{}`: bad header name `{}`", escape(.text), escape(.header))]
    BadHeaderName {
        target: Target,
        text: String,
        header: String,
    },
    #[error(
        "{target} `{}` uses `{{{}}}`, which the path does not capture",
        escape(.text),
        escape(.name)
    )]
    UnknownCapture {
        target: Target,
        text: String,
        name: String,
    },
    /// The template's literal text is not a valid action or scope.
    #[error("{target} template: {problem}")]
    BadTemplate {
        target: Target,
        problem: SyntaxError,
    },
    #[error(
        "route `{}` needs an `action` and a `scope` (or `public: true`)",
        escape(.path)
    )]
    NeedsActionAndScope { path: String },
    /// Same path shape and overlapping methods as an earlier route (`origin` names the
    /// document of the earlier one).
    #[error(
        "route `{}` conflicts with route `{}` ({origin}): same path shape and overlapping methods",
        escape(.path),
        escape(.earlier)
    )]
    Conflict {
        path: String,
        earlier: String,
        origin: String,
    },
}

#[cfg(test)]
mod tests {
    use super::super::{RouteOutcome, RouteTable, canonicalize, capture_segment};
    use super::*;
    use crate::policy::document::RouteDoc;
    use crate::policy::syntax::ScopeProblem;

    /// A route as `(path, methods, action, scope)`.
    type Spec<'a> = (&'a str, &'a [&'a str], Option<&'a str>, Option<&'a str>);

    fn compile(routes: &[Spec<'_>]) -> Vec<RouteError> {
        let docs: Vec<RouteDoc> = routes
            .iter()
            .map(|(path, methods, action, scope)| RouteDoc {
                methods: methods.iter().map(|m| (*m).into()).collect(),
                path: (*path).into(),
                action: action.map(Into::into),
                scope: scope.map(Into::into),
                ..RouteDoc::default()
            })
            .collect();
        let named: Vec<(String, &RouteDoc)> = docs
            .iter()
            .enumerate()
            .map(|(i, d)| (format!("doc{i}"), d))
            .collect();
        match RouteTable::compile(&named) {
            Ok(_) => Vec::new(),
            Err(list) => list.into_iter().map(|(_, e)| e).collect(),
        }
    }

    #[test]
    fn path_errors_carry_the_limit_the_length_and_the_byte() {
        let long = format!("/{}", "a".repeat(MAX_PATH_BYTES));
        assert_eq!(
            canonicalize(&long),
            Err(PathError::TooLong {
                length: MAX_PATH_BYTES + 1,
                limit: MAX_PATH_BYTES
            })
        );
        assert_eq!(canonicalize("a/b"), Err(PathError::NotOriginForm));
        assert_eq!(canonicalize("/a//b"), Err(PathError::EmptySegment));
        assert_eq!(canonicalize("/a/../b"), Err(PathError::DotSegment));
        for (path, problem) in [
            ("/a%2Fb", DecodeError::ReservedEscape { text: "%2F".into() }),
            ("/a%zz", DecodeError::InvalidEscape),
            ("/a\\b", DecodeError::Backslash),
            ("/a;x", DecodeError::Semicolon),
            ("/a b", DecodeError::Whitespace),
            ("/a\u{7f}", DecodeError::ControlByte),
            ("/caf\u{e9}", DecodeError::NonAscii),
        ] {
            assert_eq!(
                canonicalize(path),
                Err(PathError::Decode(problem)),
                "{path:?}"
            );
        }
        assert_eq!(
            canonicalize("/a%2Fb").unwrap_err().to_string(),
            "path contains the reserved escape `%2F`"
        );
        assert_eq!(
            canonicalize(&long).unwrap_err().to_string(),
            format!("path is longer than {MAX_PATH_BYTES} bytes")
        );
    }

    #[test]
    fn segment_errors_name_what_the_value_holds() {
        assert_eq!(capture_segment(""), Err(SegmentError::Empty));
        assert_eq!(capture_segment(".."), Err(SegmentError::DotSegment));
        assert_eq!(capture_segment("a*"), Err(SegmentError::Separator));
        assert_eq!(capture_segment("a?x"), Err(SegmentError::QueryOrFragment));
        assert_eq!(
            capture_segment("a;x"),
            Err(SegmentError::Decode(DecodeError::Semicolon))
        );
    }

    #[test]
    fn malformed_requests_carry_the_capture_the_header_and_the_target() {
        let docs = [
            RouteDoc {
                methods: vec!["GET".into()],
                path: "/p/{id}/{rest...}".into(),
                action: Some("x/{id}".into()),
                scope: Some("/apps/{header:x-app}".into()),
                ..RouteDoc::default()
            },
            RouteDoc {
                methods: vec!["GET".into()],
                path: "/s/{id}".into(),
                action: Some("x/read".into()),
                scope: Some("/apps/{id}".into()),
                ..RouteDoc::default()
            },
        ];
        let named: Vec<(String, &RouteDoc)> = docs.iter().map(|d| ("t".to_owned(), d)).collect();
        let Ok(table) = RouteTable::compile(&named) else {
            panic!("the routes compile");
        };
        let malformed = |method: &str, path: &str, headers: &[(&str, &str)]| match table
            .resolve(method, path, headers)
        {
            RouteOutcome::Malformed(e) => e,
            other => panic!("{path}: {other:?}"),
        };
        assert_eq!(malformed("", "/p/a/b", &[]), MalformedRequest::Method);
        assert_eq!(
            malformed("GET", "/a//b", &[]),
            MalformedRequest::Path(PathError::EmptySegment)
        );
        let e = malformed("GET", "/p/a/b*", &[("x-app", "a")]);
        assert_eq!(
            e,
            MalformedRequest::PathCapture {
                capture: Capture {
                    name: "rest".into(),
                    rest: true
                },
                problem: SegmentError::Separator
            }
        );
        assert_eq!(
            e.to_string(),
            "path capture `{rest...}` contains `/`, `\\` or `*`"
        );
        let e = malformed("GET", "/p/a/b", &[]);
        assert_eq!(
            e,
            MalformedRequest::HeaderMissing {
                name: "x-app".into(),
                target: Target::Scope
            }
        );
        assert_eq!(
            e.to_string(),
            "header `x-app` needed for the scope is missing"
        );
        assert_eq!(
            malformed("GET", "/p/a/b", &[("x-app", "")]),
            MalformedRequest::HeaderCapture {
                name: "x-app".into(),
                target: Target::Scope,
                problem: SegmentError::Empty
            }
        );
        assert_eq!(
            malformed("GET", "/p/a/b", &[("x-app", "1"), ("x-app", "2")]),
            MalformedRequest::HeaderConflict {
                name: "x-app".into()
            }
        );
        let none: &[(&str, &str)] = &[];
        assert!(matches!(
            table.resolve("GET", "/s/x", none),
            RouteOutcome::Matched { .. }
        ));
    }

    #[test]
    fn route_errors_carry_the_route_text() {
        assert_eq!(
            compile(&[("/a", &["GET", "*"], Some("x/r"), Some("/"))]),
            vec![RouteError::StarNotAlone]
        );
        assert_eq!(
            compile(&[("/a", &[], Some("x/r"), Some("/"))]),
            vec![RouteError::NoMethods]
        );
        assert_eq!(
            compile(&[("/a", &["G3T"], Some("x/r"), Some("/"))]),
            vec![RouteError::BadMethod {
                method: "G3T".into()
            }]
        );
        assert_eq!(
            compile(&[("/a//b", &["GET"], Some("x/r"), Some("/"))]),
            vec![RouteError::BadPath {
                path: "/a//b".into(),
                problem: PathError::EmptySegment
            }]
        );
        assert_eq!(
            compile(&[("/a?x", &["GET"], Some("x/r"), Some("/"))]),
            vec![RouteError::NotCanonical {
                path: "/a?x".into()
            }]
        );
        assert_eq!(
            compile(&[("/{r...}/a", &["GET"], Some("x/r"), Some("/"))]),
            vec![RouteError::RestNotLast {
                path: "/{r...}/a".into(),
                name: "r".into()
            }]
        );
        assert_eq!(
            compile(&[("/a{b}", &["GET"], Some("x/r"), Some("/"))]),
            vec![RouteError::PartialCapture {
                path: "/a{b}".into()
            }]
        );
        assert_eq!(
            compile(&[("/{header:x}", &["GET"], Some("x/r"), Some("/"))]),
            vec![RouteError::HeaderInPath {
                path: "/{header:x}".into()
            }]
        );
        assert_eq!(
            compile(&[("/{a.b}", &["GET"], Some("x/r"), Some("/"))]),
            vec![RouteError::BadCaptureName {
                path: "/{a.b}".into(),
                name: "a.b".into()
            }]
        );
        assert_eq!(
            compile(&[("/{a}/{a}", &["GET"], Some("x/r"), Some("/"))]),
            vec![RouteError::DuplicateCapture {
                path: "/{a}/{a}".into(),
                name: "a".into()
            }]
        );
        assert_eq!(
            compile(&[("/a", &["GET"], Some("x/{a"), Some("/"))]),
            vec![RouteError::Unclosed {
                target: Target::Action,
                text: "x/{a".into()
            }]
        );
        assert_eq!(
            compile(&[("/a", &["GET"], Some("x/r"), Some("/a}"))]),
            vec![RouteError::StrayBrace {
                target: Target::Scope,
                text: "/a}".into()
            }]
        );
        assert_eq!(
            compile(&[("/a", &["GET"], Some("x/{header:a.b}"), Some("/"))]),
            vec![RouteError::BadHeaderName {
                target: Target::Action,
                text: "x/{header:a.b}".into(),
                header: "a.b".into()
            }]
        );
        assert_eq!(
            compile(&[("/a", &["GET"], Some("x/{id}"), Some("/"))]),
            vec![RouteError::UnknownCapture {
                target: Target::Action,
                text: "x/{id}".into(),
                name: "id".into()
            }]
        );
        let errors = compile(&[("/a", &["GET"], Some("x/r"), Some("/a//{header:h}"))]);
        assert!(
            matches!(
                &errors[..],
                [RouteError::BadTemplate {
                    target: Target::Scope,
                    problem: SyntaxError::Scope(ScopeError {
                        problem: ScopeProblem::EmptySegment,
                        ..
                    })
                }]
            ),
            "{errors:?}"
        );
        assert_eq!(
            compile(&[("/a", &["GET"], None, Some("/"))]),
            vec![RouteError::NeedsActionAndScope { path: "/a".into() }]
        );
        let errors = compile(&[
            ("/a/{x}", &["GET"], Some("x/r"), Some("/")),
            ("/a/{y}", &["GET", "PUT"], Some("x/r"), Some("/")),
        ]);
        assert_eq!(
            errors,
            vec![RouteError::Conflict {
                path: "/a/{y}".into(),
                earlier: "/a/{x}".into(),
                origin: "doc0".into()
            }]
        );
        assert_eq!(
            errors[0].to_string(),
            "route `/a/{y}` conflicts with route `/a/{x}` (doc0): same path shape and overlapping methods"
        );
    }
}
