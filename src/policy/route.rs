//! From an HTTP request to `(action, scope)`: path canonicalisation and the route table
//! (SPEC §4).
//!
//! Architecture invariant: a route only ever sees a canonical path, and every captured value
//! is checked to be one plain segment before it reaches an action or a scope.

use smallvec::SmallVec;
use std::borrow::Cow;
use std::cmp::Ordering;

use super::document::RouteDoc;
use super::syntax::{self, SyntaxError, escape};

mod errors;

pub use errors::{
    Capture, DecodeError, MalformedRequest, PathError, RouteError, SegmentError, Target,
};

/// The longest path (after cutting query and fragment) that is accepted.
pub const MAX_PATH_BYTES: usize = 4096;

/// What looking a header up found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderFound<'a> {
    /// No header of that name.
    Missing,
    /// The header's value (every spelling of the name that occurs carries this value).
    Value(&'a str),
    /// The name occurs more than once (in any ASCII case) with different values: the
    /// request is ambiguous, so it is malformed (fail closed).
    Conflicting,
}

impl<'a> HeaderFound<'a> {
    /// The value, when there is exactly one.
    pub fn value(self) -> Option<&'a str> {
        match self {
            Self::Value(v) => Some(v),
            Self::Missing | Self::Conflicting => None,
        }
    }
}

/// Looks up a header among `(name, value)` pairs, comparing names ASCII
/// case-insensitively (HTTP header names are case-insensitive). The answer never depends
/// on the pairs' order: one value repeated is that value, different values conflict.
/// Every [`HeaderLookup`] implementation goes through here.
///
/// A comma separates copies too: a proxy may join repeated header lines into one line,
/// comma-separated (RFC 9110 §5.3), and Envoy does so before it asks ext_authz. So
/// `x-app-id: a2, a1` is two different copies, and conflicts, exactly like the two lines
/// it was joined from; a single-valued header the decision reads never holds a comma.
pub fn lookup_header<'a>(
    pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    lowercase_name: &str,
) -> HeaderFound<'a> {
    let mut found = HeaderFound::Missing;
    for (name, value) in pairs {
        if !name.eq_ignore_ascii_case(lowercase_name) {
            continue;
        }
        for copy in value.split(',').map(|c| c.trim_matches([' ', '\t'])) {
            match found {
                HeaderFound::Missing => found = HeaderFound::Value(copy),
                HeaderFound::Value(seen) if seen == copy => {}
                HeaderFound::Value(_) | HeaderFound::Conflicting => {
                    return HeaderFound::Conflicting;
                }
            }
        }
    }
    found
}

/// The message for a header given more than once with different values.
pub fn conflicting_header_message(lowercase_name: &str) -> String {
    format!(
        "header `{}` is given more than once with different values",
        escape(lowercase_name)
    )
}

/// Looks up a request header by its lowercase name.
pub trait HeaderLookup {
    /// Every occurrence of the header, in any ASCII case (see [`lookup_header`]).
    fn lookup(&self, lowercase_name: &str) -> HeaderFound<'_>;

    /// The header's value; `None` when it is missing or given with different values.
    fn header(&self, lowercase_name: &str) -> Option<&str> {
        self.lookup(lowercase_name).value()
    }
}

impl<K: AsRef<str>, V: AsRef<str>> HeaderLookup for [(K, V)] {
    fn lookup(&self, lowercase_name: &str) -> HeaderFound<'_> {
        lookup_header(
            self.iter().map(|(k, v)| (k.as_ref(), v.as_ref())),
            lowercase_name,
        )
    }
}

impl<K: AsRef<str>, V: AsRef<str>> HeaderLookup for Vec<(K, V)> {
    fn lookup(&self, lowercase_name: &str) -> HeaderFound<'_> {
        self.as_slice().lookup(lowercase_name)
    }
}

impl<V: AsRef<str>> HeaderLookup for std::collections::HashMap<String, V> {
    fn lookup(&self, lowercase_name: &str) -> HeaderFound<'_> {
        lookup_header(
            self.iter().map(|(k, v)| (k.as_str(), v.as_ref())),
            lowercase_name,
        )
    }
}

impl<V: AsRef<str>> HeaderLookup for std::collections::BTreeMap<String, V> {
    fn lookup(&self, lowercase_name: &str) -> HeaderFound<'_> {
        lookup_header(
            self.iter().map(|(k, v)| (k.as_str(), v.as_ref())),
            lowercase_name,
        )
    }
}

/// A canonical request path: checked, decoded, without query, fragment or trailing slash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanonicalPath {
    path: String,
}

impl CanonicalPath {
    pub fn as_str(&self) -> &str {
        &self.path
    }

    /// The path's segments (none for `/`).
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.path[1..].split('/').filter(|s| !s.is_empty())
    }
}

/// Checks and canonicalises a request path (SPEC §4), or says why it is malformed.
pub fn canonicalize(raw: &str) -> Result<CanonicalPath, PathError> {
    let end = raw.find(['?', '#']).unwrap_or(raw.len());
    let path = &raw[..end];
    if path.len() > MAX_PATH_BYTES {
        return Err(PathError::too_long(path.len()));
    }
    if !path.starts_with('/') {
        return Err(PathError::NotOriginForm);
    }
    let mut out = String::with_capacity(path.len());
    decode_into(path, &mut out).map_err(PathError::Decode)?;
    // Empty segments first: `//` is one, even though dropping its trailing slash would
    // leave `/`.
    if out.contains("//") {
        return Err(PathError::EmptySegment);
    }
    if out.len() > 1 && out.ends_with('/') {
        out.pop();
    }
    if out != "/"
        && out[1..]
            .split('/')
            .any(|segment| matches!(segment, "." | ".."))
    {
        return Err(PathError::DotSegment);
    }
    Ok(CanonicalPath { path: out })
}

/// Decodes `raw` into `out` by the path rules of SPEC §4: escapes of unreserved
/// characters other than `.` are decoded, every other escape, a backslash, `;`, a control
/// or a non-ASCII byte is refused (the error says what the text contains). Both the
/// request path and captured header values go through here, so they cannot drift apart.
fn decode_into(raw: &str, out: &mut String) -> Result<(), DecodeError> {
    let bytes = raw.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'%' => {
                let decoded = bytes
                    .get(i + 1..i + 3)
                    .and_then(|hex| std::str::from_utf8(hex).ok())
                    .and_then(|hex| u8::from_str_radix(hex, 16).ok());
                match decoded {
                    Some(c) if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'~') => {
                        out.push(char::from(c));
                        i += 3;
                    }
                    Some(_) => {
                        return Err(DecodeError::ReservedEscape {
                            text: raw[i..i + 3].into(),
                        });
                    }
                    None => return Err(DecodeError::InvalidEscape),
                }
            }
            b'\\' => return Err(DecodeError::Backslash),
            b';' => return Err(DecodeError::Semicolon),
            b' ' => return Err(DecodeError::Whitespace),
            0..=0x1f | 0x7f => return Err(DecodeError::ControlByte),
            0x80.. => return Err(DecodeError::NonAscii),
            _ => {
                // The plain bytes up to the next one looked at, copied at once.
                let end = bytes
                    .iter()
                    .skip(i)
                    .position(|&c| {
                        c.is_ascii_control()
                            || !c.is_ascii()
                            || matches!(c, b'%' | b'\\' | b';' | b' ')
                    })
                    .map_or(bytes.len(), |n| i + n);
                out.push_str(raw.get(i..end).unwrap_or_default());
                i = end;
            }
        }
    }
    Ok(())
}

/// The one segment rule for captured values, path or header (SPEC §4): the value is
/// decoded as a path is (so `secre%74` is `secret`, and `%2F`, `;`, `\`, whitespace, a
/// control or non-ASCII byte is refused), and must then be one plain segment: not empty,
/// not `.` or `..`, and without `/`, `*`, `?` or `#` (none of which a canonical path
/// segment can hold). Returns the decoded value, or what is wrong with it. A value with
/// no byte that [`decode_into`] treats specially (a canonical path segment) comes back
/// unchanged, without a copy.
pub fn capture_segment(raw: &str) -> Result<Cow<'_, str>, SegmentError> {
    let value = if raw
        .bytes()
        .any(|b| b.is_ascii_control() || !b.is_ascii() || matches!(b, b'%' | b'\\' | b';' | b' '))
    {
        let mut out = String::with_capacity(raw.len());
        decode_into(raw, &mut out)?;
        Cow::Owned(out)
    } else {
        Cow::Borrowed(raw)
    };
    if value.is_empty() {
        Err(SegmentError::Empty)
    } else if value == "." || value == ".." {
        Err(SegmentError::DotSegment)
    } else if value.contains(['/', '\\', '*']) {
        Err(SegmentError::Separator)
    } else if value.contains(['?', '#']) {
        Err(SegmentError::QueryOrFragment)
    } else {
        Ok(value)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum PathSegment {
    Static(Box<str>),
    Capture(Box<str>),
    Rest(Box<str>),
}

impl PathSegment {
    fn rank(&self) -> u8 {
        match self {
            Self::Static(_) => 0,
            Self::Capture(_) => 1,
            Self::Rest(_) => 2,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum TemplatePart {
    Literal(Box<str>),
    /// Index into the route's path segments.
    Capture(usize),
    /// Lowercase header name.
    Header(Box<str>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Template {
    parts: Box<[TemplatePart]>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Methods {
    Any,
    List(Box<[Box<str>]>),
}

impl Methods {
    fn matches(&self, method: &str) -> bool {
        match self {
            Self::Any => true,
            Self::List(list) => list.iter().any(|m| m.eq_ignore_ascii_case(method)),
        }
    }

    /// The pairwise rule [`find_conflicts`] implements by grouping (its test oracle).
    #[cfg(test)]
    fn overlaps(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Any, _) | (_, Self::Any) => true,
            (Self::List(a), Self::List(b)) => a.iter().any(|m| b.contains(m)),
        }
    }
}

/// One compiled route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The route's path as written, for messages.
    pub path: String,
    /// Its position among the routes given to [`RouteTable::compile`].
    input: usize,
    methods: Methods,
    segments: Box<[PathSegment]>,
    action: Option<Template>,
    scope: Option<Template>,
    pub data_action: bool,
    pub public: bool,
    /// Shadow mode: decisions are logged but not enforced.
    pub shadow: bool,
}

/// What a request maps to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteOutcome<'r> {
    /// A route matched; `action` and `scope` are filled in (absent only on public routes
    /// that name none).
    Matched {
        route: &'r Route,
        action: Option<String>,
        scope: Option<String>,
    },
    /// No route matches: deny, reason `noRoute`.
    NoRoute,
    /// The request is malformed: deny with status 400.
    Malformed(MalformedRequest),
}

/// The compiled route table, ordered by precedence.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteTable {
    routes: Vec<Route>,
}

impl RouteTable {
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// Every literal action the routes can produce (templates without placeholders).
    pub fn literal_actions(&self) -> impl Iterator<Item = (&str, bool)> {
        self.routes
            .iter()
            .filter_map(|r| match r.action.as_ref()?.parts.as_ref() {
                [TemplatePart::Literal(text)] => Some((&**text, r.data_action)),
                _ => None,
            })
    }

    /// Compiles routes given with their origins (shown in messages), checking each and the
    /// table for conflicts. Problems are returned as `(position in docs, message)` pairs, so
    /// the caller places them without parsing the origin back.
    pub fn compile(docs: &[(String, &RouteDoc)]) -> Result<Self, Vec<(usize, RouteError)>> {
        let mut routes = Vec::new();
        let mut problems = Vec::new();
        for (input, (_, doc)) in docs.iter().enumerate() {
            match compile_route(input, doc) {
                Ok(route) => routes.push(route),
                Err(list) => problems.extend(list.into_iter().map(|message| (input, message))),
            }
        }
        for (a, b) in find_conflicts(&routes).0 {
            let (a, b) = (&routes[a], &routes[b]);
            problems.push((
                b.input,
                RouteError::Conflict {
                    path: b.path.clone(),
                    earlier: a.path.clone(),
                    origin: docs[a.input].0.clone(),
                },
            ));
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        // Precedence: segment by segment from the left, static < capture < rest. A stable
        // sort keeps file order among routes that cannot match the same request anyway.
        routes.sort_by(precedence);
        Ok(Self { routes })
    }

    /// Maps a request to its route, action and scope.
    pub fn resolve<H: HeaderLookup + ?Sized>(
        &self,
        method: &str,
        raw_path: &str,
        headers: &H,
    ) -> RouteOutcome<'_> {
        let path = match canonicalize(raw_path) {
            Ok(p) => p,
            Err(e) => return RouteOutcome::Malformed(e.into()),
        };
        if method.is_empty() || !method.bytes().all(|b| b.is_ascii_alphabetic()) {
            return RouteOutcome::Malformed(MalformedRequest::Method);
        }
        // On the stack for the paths routes are written for (at most `INLINE_SEGMENTS`
        // segments): resolving is on every request's path.
        let segments: Segments<'_> = path.segments().collect();
        for route in &self.routes {
            if !route.methods.matches(method) {
                continue;
            }
            let Some(captures) = match_segments(&route.segments, &segments) else {
                continue;
            };
            // Every capture of the route, whether a template uses it or not, is checked
            // once here; rendering only copies the checked values.
            let header_values = match check_captures(route, &captures, &segments, headers) {
                Ok(values) => values,
                Err(e) => return RouteOutcome::Malformed(e),
            };
            let mut header_values = header_values.into_iter();
            let mut render = |template: &Option<Template>| {
                template
                    .as_ref()
                    .map(|t| render(t, &captures, &segments, &mut header_values))
            };
            let action = render(&route.action);
            let scope = render(&route.scope);
            if let Some(action) = &action
                && let Err(e) = syntax::check_action(action)
            {
                return RouteOutcome::Malformed(e.into());
            }
            if let Some(scope) = &scope
                && let Err(e) = syntax::normalize_scope(scope)
            {
                return RouteOutcome::Malformed(e.into());
            }
            return RouteOutcome::Matched {
                route,
                action,
                scope,
            };
        }
        RouteOutcome::NoRoute
    }
}

/// Segments (and spans) held on the stack by [`RouteTable::resolve`] before it spills to
/// the heap: more than any route of the shipped policies has.
const INLINE_SEGMENTS: usize = 16;
type Segments<'a> = SmallVec<[&'a str; INLINE_SEGMENTS]>;
type Spans = SmallVec<[(usize, usize); INLINE_SEGMENTS]>;

/// For each route segment, the range of request segments it covers.
fn match_segments(pattern: &[PathSegment], segments: &[&str]) -> Option<Spans> {
    // A route without a rest capture matches only its own number of segments: most
    // routes are ruled out here, before any segment is compared.
    if segments.len() != pattern.len() && !pattern.iter().any(|s| matches!(s, PathSegment::Rest(_)))
    {
        return None;
    }
    let mut spans = Spans::new();
    for (i, seg) in pattern.iter().enumerate() {
        match seg {
            PathSegment::Static(text) => {
                if !segments.get(i)?.eq_ignore_ascii_case(text) {
                    return None;
                }
                // Never read (only captures are), but kept so that `spans` is indexed
                // like the pattern.
                spans.push((i, i));
            }
            PathSegment::Capture(_) => {
                segments.get(i)?;
                spans.push((i, i + 1));
            }
            PathSegment::Rest(_) => {
                if segments.len() <= i {
                    return None;
                }
                spans.push((i, segments.len()));
                return Some(spans);
            }
        }
    }
    (segments.len() == pattern.len()).then_some(spans)
}

/// Checks every value the route captures: each request segment a `{name}` or `{name...}`
/// spans, and each header a `{header:NAME}` of the action or scope reads. Returns the
/// header values, decoded by [`capture_segment`], in the order [`render`] uses them (the
/// action's, then the scope's).
fn check_captures<'h, H: HeaderLookup + ?Sized>(
    route: &Route,
    spans: &[(usize, usize)],
    segments: &[&str],
    headers: &'h H,
) -> Result<Vec<Cow<'h, str>>, MalformedRequest> {
    for (pattern, &(start, end)) in route.segments.iter().zip(spans) {
        let (PathSegment::Capture(name) | PathSegment::Rest(name)) = pattern else {
            continue;
        };
        let spanned = segments.get(start..end).unwrap_or_default();
        let problem = if spanned.is_empty() {
            Some(SegmentError::Empty)
        } else {
            spanned.iter().find_map(|s| capture_segment(s).err())
        };
        if let Some(problem) = problem {
            return Err(MalformedRequest::PathCapture {
                capture: Capture {
                    name: name.to_string(),
                    rest: matches!(pattern, PathSegment::Rest(_)),
                },
                problem,
            });
        }
    }
    let mut values = Vec::new();
    for (target, template) in [
        (Target::Action, &route.action),
        (Target::Scope, &route.scope),
    ] {
        for part in template.iter().flat_map(|t| t.parts.iter()) {
            let TemplatePart::Header(name) = part else {
                continue;
            };
            let value = match headers.lookup(name) {
                HeaderFound::Value(v) => v,
                HeaderFound::Missing => {
                    return Err(MalformedRequest::HeaderMissing {
                        name: name.to_string(),
                        target,
                    });
                }
                HeaderFound::Conflicting => {
                    return Err(MalformedRequest::HeaderConflict {
                        name: name.to_string(),
                    });
                }
            };
            match capture_segment(value) {
                Ok(value) => values.push(value),
                Err(problem) => {
                    return Err(MalformedRequest::HeaderCapture {
                        name: name.to_string(),
                        target,
                        problem,
                    });
                }
            }
        }
    }
    Ok(values)
}

/// The capacity [`render`] starts its string with.
const RENDER_CAPACITY: usize = 128;

/// A template with the route's captures in place: path segments from `spans`, header
/// values from `header_values` in template order. Every value was checked by
/// [`check_captures`].
fn render<'h>(
    template: &Template,
    spans: &[(usize, usize)],
    segments: &[&str],
    header_values: &mut impl Iterator<Item = Cow<'h, str>>,
) -> String {
    // Room for a typical scope or action (an ARM resource id is about 100 bytes), so that
    // most requests allocate once.
    let mut out = String::with_capacity(RENDER_CAPACITY);
    for part in template.parts.iter() {
        match part {
            TemplatePart::Literal(text) => out.push_str(text),
            TemplatePart::Capture(index) => {
                let (start, end) = spans.get(*index).copied().unwrap_or((0, 0));
                let spanned = segments.get(start..end).unwrap_or_default();
                for (n, seg) in spanned.iter().enumerate() {
                    if n > 0 {
                        out.push('/');
                    }
                    out.push_str(seg);
                }
            }
            TemplatePart::Header(_) => out.push_str(&header_values.next().unwrap_or_default()),
        }
    }
    out
}

/// A route's shape: its segments with capture names ignored (static segments are stored
/// lowercase). Two routes conflict when their shapes are equal and their methods overlap.
fn shape(route: &Route) -> Vec<(u8, &str)> {
    route
        .segments
        .iter()
        .map(|s| match s {
            PathSegment::Static(text) => (0, &**text),
            other => (other.rank(), ""),
        })
        .collect()
}

/// Every conflicting pair `(earlier, later)` as positions in `routes`, each later route
/// paired with the first earlier one it conflicts with, and the number of method lookups
/// it took. Routes are grouped by shape, and within a group each method (or `*`) is
/// remembered once: the work is linear in the routes and their methods, however many
/// routes share a shape (80,000 routes compared pairwise took half a minute).
fn find_conflicts(routes: &[Route]) -> (Vec<(usize, usize)>, usize) {
    #[derive(Default)]
    struct Group<'r> {
        first: Option<usize>,
        any: Option<usize>,
        methods: std::collections::HashMap<&'r str, usize>,
    }
    let mut groups: std::collections::HashMap<Vec<(u8, &str)>, Group<'_>> =
        std::collections::HashMap::new();
    let mut conflicts = Vec::new();
    let mut work = 0;
    for (i, route) in routes.iter().enumerate() {
        let group = groups.entry(shape(route)).or_default();
        let earlier = match &route.methods {
            Methods::Any => group.first,
            Methods::List(list) => group.any.or_else(|| {
                list.iter().find_map(|m| {
                    work += 1;
                    group.methods.get(&**m).copied()
                })
            }),
        };
        if let Some(earlier) = earlier {
            conflicts.push((earlier, i));
        }
        group.first.get_or_insert(i);
        match &route.methods {
            Methods::Any => {
                group.any.get_or_insert(i);
            }
            Methods::List(list) => {
                for m in list.iter() {
                    work += 1;
                    group.methods.entry(&**m).or_insert(i);
                }
            }
        }
    }
    (conflicts, work)
}

fn precedence(a: &Route, b: &Route) -> Ordering {
    let ranks = |r: &Route| r.segments.iter().map(PathSegment::rank).collect::<Vec<_>>();
    ranks(a).cmp(&ranks(b))
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Compiles one route, with every problem it has: its methods, its path, and (when the
/// path is sound, since they name its captures) its action and scope templates.
fn compile_route(input: usize, doc: &RouteDoc) -> Result<Route, Vec<RouteError>> {
    let mut problems = Vec::new();
    let methods = compile_methods(&doc.methods)
        .map_err(|e| problems.push(e))
        .ok();
    let segments = compile_path(&doc.path).map_err(|e| problems.push(e)).ok();
    let mut template = |text: &Option<String>, target: Target| match (text, &segments) {
        (Some(text), Some(segments)) => compile_template(text, segments, target)
            .and_then(|t| check_template_literals(&t, target).map(|()| t))
            .map_err(|e| problems.push(e))
            .ok(),
        _ => None,
    };
    let action = template(&doc.action, Target::Action);
    let scope = template(&doc.scope, Target::Scope);
    if !doc.public && (doc.action.is_none() || doc.scope.is_none()) {
        problems.push(RouteError::NeedsActionAndScope {
            path: doc.path.clone(),
        });
    }
    match (methods, segments) {
        (Some(methods), Some(segments)) if problems.is_empty() => Ok(Route {
            path: doc.path.clone(),
            input,
            methods,
            segments: segments.into(),
            action,
            scope,
            data_action: doc.data_action,
            public: doc.public,
            shadow: doc.mode == super::document::RouteMode::Shadow,
        }),
        _ => Err(problems),
    }
}

/// A route's `methods`: HTTP method tokens, or `*` alone.
fn compile_methods(methods: &[String]) -> Result<Methods, RouteError> {
    if methods.iter().any(|m| m == "*") {
        if methods.len() > 1 {
            return Err(RouteError::StarNotAlone);
        }
        return Ok(Methods::Any);
    }
    if methods.is_empty() {
        return Err(RouteError::NoMethods);
    }
    let mut list = Vec::new();
    for m in methods {
        if m.is_empty() || !m.bytes().all(|b| b.is_ascii_alphabetic()) {
            return Err(RouteError::BadMethod { method: m.clone() });
        }
        list.push(m.to_ascii_uppercase().into_boxed_str());
    }
    Ok(Methods::List(list.into()))
}

/// A route's path template: canonical, with whole-segment captures named once each.
fn compile_path(path: &str) -> Result<Vec<PathSegment>, RouteError> {
    let canonical = canonicalize(path).map_err(|problem| RouteError::BadPath {
        path: path.into(),
        problem,
    })?;
    if canonical.as_str() != path.strip_suffix('/').unwrap_or(path) && path != "/" {
        return Err(RouteError::NotCanonical { path: path.into() });
    }
    let raw_segments: Vec<&str> = canonical.segments().collect();
    let mut segments = Vec::new();
    for (i, seg) in raw_segments.iter().enumerate() {
        let parsed = if let Some(inner) = seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            if let Some(name) = inner.strip_suffix("...") {
                if i + 1 != raw_segments.len() {
                    return Err(RouteError::RestNotLast {
                        path: path.into(),
                        name: name.into(),
                    });
                }
                PathSegment::Rest(name.into())
            } else {
                PathSegment::Capture(inner.into())
            }
        } else {
            if seg.contains(['{', '}']) {
                return Err(RouteError::PartialCapture { path: path.into() });
            }
            PathSegment::Static(seg.to_ascii_lowercase().into())
        };
        if let PathSegment::Capture(name) | PathSegment::Rest(name) = &parsed {
            if name.starts_with("header:") {
                return Err(RouteError::HeaderInPath { path: path.into() });
            }
            if !valid_name(name) {
                return Err(RouteError::BadCaptureName {
                    path: path.into(),
                    name: name.to_string(),
                });
            }
            let duplicate = segments
                .iter()
                .any(|s| matches!(s, PathSegment::Capture(n) | PathSegment::Rest(n) if n == name));
            if duplicate {
                return Err(RouteError::DuplicateCapture {
                    path: path.into(),
                    name: name.to_string(),
                });
            }
        }
        segments.push(parsed);
    }
    Ok(segments)
}

/// A template's literal text must already be valid, with each placeholder standing for
/// one plain segment: check it by rendering with a harmless value.
fn check_template_literals(template: &Template, target: Target) -> Result<(), RouteError> {
    let sample: String = template
        .parts
        .iter()
        .map(|p| match p {
            TemplatePart::Literal(text) => text.to_string(),
            _ => "x".to_owned(),
        })
        .collect();
    let checked = match target {
        Target::Action => syntax::check_action(&sample).map_err(SyntaxError::from),
        Target::Scope => syntax::normalize_scope(&sample)
            .map(|_| ())
            .map_err(SyntaxError::from),
    };
    checked.map_err(|problem| RouteError::BadTemplate { target, problem })
}

fn compile_template(
    text: &str,
    segments: &[PathSegment],
    target: Target,
) -> Result<Template, RouteError> {
    let mut parts = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        match rest.find('{') {
            Some(0) => {
                let close = rest.find('}').ok_or_else(|| RouteError::Unclosed {
                    target,
                    text: text.into(),
                })?;
                let name = &rest[1..close];
                if let Some(header) = name.strip_prefix("header:") {
                    if !valid_name(header) {
                        return Err(RouteError::BadHeaderName {
                            target,
                            text: text.into(),
                            header: header.into(),
                        });
                    }
                    parts.push(TemplatePart::Header(header.to_ascii_lowercase().into()));
                } else {
                    let name = name.strip_suffix("...").unwrap_or(name);
                    let index = segments
                        .iter()
                        .position(|s| matches!(s, PathSegment::Capture(n) | PathSegment::Rest(n) if **n == *name))
                        .ok_or_else(|| RouteError::UnknownCapture {
                            target,
                            text: text.into(),
                            name: name.into(),
                        })?;
                    parts.push(TemplatePart::Capture(index));
                }
                rest = &rest[close + 1..];
            }
            Some(at) => {
                parts.push(TemplatePart::Literal(rest[..at].into()));
                rest = &rest[at..];
            }
            None => {
                if rest.contains('}') {
                    return Err(RouteError::StrayBrace {
                        target,
                        text: text.into(),
                    });
                }
                parts.push(TemplatePart::Literal(rest.into()));
                rest = "";
            }
        }
    }
    if parts
        .iter()
        .any(|p| matches!(p, TemplatePart::Literal(t) if t.contains('}')))
    {
        return Err(RouteError::StrayBrace {
            target,
            text: text.into(),
        });
    }
    Ok(Template {
        parts: parts.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonicalisation_follows_the_spec() {
        assert_eq!(canonicalize("/a/b/?x=1").unwrap().as_str(), "/a/b");
        assert_eq!(canonicalize("/%79es").unwrap().as_str(), "/yes");
        assert_eq!(canonicalize("/").unwrap().as_str(), "/");
        for bad in [
            "/a/%2e%2e/b",
            "/a/%2E",
            "/a%2Fb",
            "/a%5Cb",
            "/a%25",
            "/a%00",
            "/a%zz",
            "/a%4",
            "/a//b",
            "//",
            "//?q=1",
            "///",
            "/a//",
            "/a/./b",
            "/a/../b",
            "/a\\b",
            "/admin;x/",
            "/a\u{7f}",
            "/caf\u{e9}",
            "a/b",
            "*",
            "http://host/a",
        ] {
            assert!(canonicalize(bad).is_err(), "{bad} should be malformed");
        }
        assert!(canonicalize(&format!("/{}", "a".repeat(MAX_PATH_BYTES))).is_err());
    }

    fn table(routes: &[(&str, Option<&str>, Option<&str>, bool)]) -> RouteTable {
        let docs: Vec<RouteDoc> = routes
            .iter()
            .map(|(path, action, scope, public)| RouteDoc {
                methods: vec!["GET".into()],
                path: (*path).into(),
                action: action.map(Into::into),
                scope: scope.map(Into::into),
                public: *public,
                ..RouteDoc::default()
            })
            .collect();
        let named: Vec<(String, &RouteDoc)> = docs
            .iter()
            .enumerate()
            .map(|(i, d)| (format!("routes[{i}]"), d))
            .collect();
        RouteTable::compile(&named).unwrap()
    }

    /// `Err(None)` is no route; `Err(Some(problem))` a malformed request.
    fn resolve(
        table: &RouteTable,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<(), Option<MalformedRequest>> {
        match table.resolve("GET", path, headers) {
            RouteOutcome::Matched { .. } => Ok(()),
            RouteOutcome::NoRoute => Err(None),
            RouteOutcome::Malformed(e) => Err(Some(e)),
        }
    }

    #[test]
    fn every_capture_is_checked_whether_a_template_uses_it_or_not() {
        let table = table(&[
            (
                "/used/{a}/{rest...}",
                Some("x/read"),
                Some("/u/{a}/{rest}"),
                false,
            ),
            ("/unused/{a}/{rest...}", Some("x/read"), Some("/u"), false),
            ("/public/{a}/{rest...}", None, None, true),
        ]);
        for prefix in ["/used", "/unused", "/public"] {
            assert_eq!(resolve(&table, &format!("{prefix}/a/b/c"), &[]), Ok(()));
            for bad in ["*/b", "a/*", "a/b/*/d", "a/b/x*y", "a*/b"] {
                let path = format!("{prefix}/{bad}");
                let e = resolve(&table, &path, &[]).unwrap_err();
                assert!(
                    matches!(e, Some(MalformedRequest::PathCapture { .. })),
                    "{path}: {e:?}"
                );
            }
        }
    }

    /// Path and header captures share one segment rule: escapes are decoded the same way,
    /// and what a canonical path segment cannot hold is refused.
    #[test]
    fn a_captured_value_passes_the_path_segment_rules() {
        assert_eq!(capture_segment("secre%74").unwrap(), "secret");
        assert_eq!(capture_segment("%73ecret").unwrap(), "secret");
        assert!(matches!(
            capture_segment("plain"),
            Ok(Cow::Borrowed("plain"))
        ));
        for bad in [
            "secret?x",
            "secret#x",
            "secret;v=1",
            "secret%00",
            "sec ret",
            "sec\tret",
            "a%2Fb",
            "%2e",
            "%2E%2E",
            "a%25",
            "a%zz",
            "a\\b",
            "a*",
            "caf\u{e9}",
            "\u{85}",
            "",
            ".",
        ] {
            assert!(capture_segment(bad).is_err(), "{bad:?} should be refused");
        }
        let table = table(&[
            ("/h", Some("x/read"), Some("/apps/{header:x-app}"), false),
            ("/p/{id}", Some("x/read"), Some("/apps/{id}"), false),
        ]);
        match table.resolve("GET", "/h", &[("x-app", "secre%74")][..]) {
            RouteOutcome::Matched { scope, .. } => {
                assert_eq!(scope.as_deref(), Some("/apps/secret"))
            }
            other => panic!("{other:?}"),
        }
        for bad in ["secret;v=1", "secret%00", "sec ret", "secret?x"] {
            let e = resolve(&table, "/h", &[("x-app", bad)]).unwrap_err();
            assert!(
                matches!(
                    &e,
                    Some(MalformedRequest::HeaderCapture { name, target: Target::Scope, .. })
                        if name == "x-app"
                ),
                "{bad}: {e:?}"
            );
        }
    }

    /// Conflicts are found by grouping routes by shape, not by comparing every pair: the
    /// same conflicts as the pairwise rule, with work linear in the routes (80,000 routes
    /// once took half a minute to compile).
    #[test]
    fn route_conflicts_are_found_in_linear_work() {
        let methods = [vec!["GET"], vec!["POST", "PUT"], vec!["*"], vec!["put"]];
        let mut docs = Vec::new();
        for i in 0..40 {
            let path = match i % 4 {
                0 => format!("/a/{{x}}/s{}", i % 3),
                1 => format!("/A/{{y}}/S{}", i % 3),
                2 => "/a/{z...}".to_owned(),
                _ => format!("/b/{}", i % 5),
            };
            docs.push(RouteDoc {
                methods: methods[i % methods.len()]
                    .iter()
                    .map(|m| (*m).into())
                    .collect(),
                path,
                public: true,
                ..RouteDoc::default()
            });
        }
        let routes: Vec<Route> = docs
            .iter()
            .enumerate()
            .map(|(i, d)| compile_route(i, d).unwrap())
            .collect();
        let same_shape = |a: &Route, b: &Route| shape(a) == shape(b);
        let (found, _) = find_conflicts(&routes);
        let conflicted: std::collections::BTreeSet<usize> = found.iter().map(|&(_, b)| b).collect();
        let pairwise: std::collections::BTreeSet<usize> = (0..routes.len())
            .filter(|&b| {
                (0..b).any(|a| {
                    same_shape(&routes[a], &routes[b])
                        && routes[a].methods.overlaps(&routes[b].methods)
                })
            })
            .collect();
        assert_eq!(conflicted, pairwise);
        for (a, b) in found {
            assert!(a < b && same_shape(&routes[a], &routes[b]));
            assert!(routes[a].methods.overlaps(&routes[b].methods));
        }

        // Many routes of one shape with distinct methods, and many distinct shapes: the
        // work grows with the routes, not with their pairs.
        let many: Vec<Route> = (0..5000)
            .map(|i| {
                let method = format!("M{}", char::from(b'A' + (i % 26) as u8)).repeat(1 + i / 26);
                let doc = RouteDoc {
                    methods: vec![method],
                    path: if i % 2 == 0 {
                        "/same/{x}".into()
                    } else {
                        format!("/s{i}/{{x}}")
                    },
                    public: true,
                    ..RouteDoc::default()
                };
                compile_route(i, &doc).unwrap()
            })
            .collect();
        let (found, work) = find_conflicts(&many);
        assert!(found.is_empty(), "{found:?}");
        // Each route's one method is looked up once and remembered once: the work is
        // counted exactly, and stays linear.
        assert_eq!(
            work,
            2 * many.len(),
            "method lookups and insertions for {} routes",
            many.len()
        );
    }

    #[test]
    fn header_lookup_is_case_insensitive_and_order_free() {
        use std::collections::{BTreeMap, HashMap};
        let pairs = vec![("X-Who", "a"), ("x-other", "z"), ("x-who", "b")];
        let reversed: Vec<(&str, &str)> = pairs.iter().rev().copied().collect();
        let hash: HashMap<String, &str> = pairs.iter().map(|(k, v)| ((*k).into(), *v)).collect();
        let tree: BTreeMap<String, &str> = pairs.iter().map(|(k, v)| ((*k).into(), *v)).collect();
        let lookups: [&dyn HeaderLookup; 4] = [&pairs, &reversed, &hash, &tree];
        for headers in lookups {
            assert_eq!(headers.lookup("x-who"), HeaderFound::Conflicting);
            assert_eq!(headers.header("x-who"), None);
            assert_eq!(headers.lookup("x-other"), HeaderFound::Value("z"));
            assert_eq!(headers.lookup("x-none"), HeaderFound::Missing);
        }
        let same = [("X-Who", "a"), ("x-who", "a"), ("x-WHO", "a")];
        assert_eq!(same[..].lookup("x-who"), HeaderFound::Value("a"));

        let table = table(&[("/h", Some("x/read"), Some("/apps/{header:x-app}"), false)]);
        let e = resolve(&table, "/h", &[("x-app", "a"), ("X-App", "b")]).unwrap_err();
        assert_eq!(
            e,
            Some(MalformedRequest::HeaderConflict {
                name: "x-app".into()
            })
        );
        assert_eq!(
            resolve(&table, "/h", &[("x-app", "a"), ("X-App", "a")]),
            Ok(())
        );
    }

    /// Envoy joins repeated header lines with commas before it asks ext_authz: the joined
    /// line conflicts exactly like the lines it came from.
    #[test]
    fn a_comma_joined_header_is_its_copies() {
        let joined = [("x-app", "a2,a1")];
        assert_eq!(joined[..].lookup("x-app"), HeaderFound::Conflicting);
        let spaced = [("x-app", "a2 ,\ta1")];
        assert_eq!(spaced[..].lookup("x-app"), HeaderFound::Conflicting);
        let trailing = [("x-app", "a2,")];
        assert_eq!(trailing[..].lookup("x-app"), HeaderFound::Conflicting);
        let repeated = [("x-app", "a2, a2"), ("X-App", "a2")];
        assert_eq!(repeated[..].lookup("x-app"), HeaderFound::Value("a2"));
        let mixed = [("x-app", "a2"), ("X-App", "a2, a1")];
        assert_eq!(mixed[..].lookup("x-app"), HeaderFound::Conflicting);

        let table = table(&[("/h", Some("x/read"), Some("/apps/{header:x-app}"), false)]);
        let e = resolve(&table, "/h", &[("x-app", "a2,a1")]).unwrap_err();
        assert_eq!(
            e,
            Some(MalformedRequest::HeaderConflict {
                name: "x-app".into()
            })
        );
        // The message names the header, escaped, as every caller renders it.
        assert_eq!(
            e.unwrap().to_string(),
            "header `x-app` is given more than once with different values"
        );
        assert_eq!(
            conflicting_header_message("x-`a\n"),
            "header `x-\\u{60}a\\n` is given more than once with different values"
        );
    }

    fn doc(methods: &[&str], path: &str, action: Option<&str>, scope: Option<&str>) -> RouteDoc {
        RouteDoc {
            methods: methods.iter().map(|m| (*m).into()).collect(),
            path: path.into(),
            action: action.map(Into::into),
            scope: scope.map(Into::into),
            ..RouteDoc::default()
        }
    }

    /// Compiles route documents; on failure, the positions of the documents with problems.
    fn compile_docs(docs: &[RouteDoc]) -> Result<RouteTable, Vec<usize>> {
        let named: Vec<(String, &RouteDoc)> = docs
            .iter()
            .enumerate()
            .map(|(i, d)| (format!("routes[{i}]"), d))
            .collect();
        RouteTable::compile(&named).map_err(|problems| problems.iter().map(|p| p.0).collect())
    }

    /// The action, scope and shadow flag a request resolves to, or why it does not.
    fn outcome(table: &RouteTable, method: &str, path: &str) -> Result<Matched, String> {
        match table.resolve(method, path, &[("x-app", "a1")][..]) {
            RouteOutcome::Matched {
                route,
                action,
                scope,
            } => Ok((action, scope, route.shadow)),
            RouteOutcome::NoRoute => Err("noRoute".into()),
            RouteOutcome::Malformed(e) => Err(format!("malformed: {e}")),
        }
    }

    type Matched = (Option<String>, Option<String>, bool);

    fn matched(action: &str, scope: &str) -> Result<Matched, String> {
        Ok((Some(action.into()), Some(scope.into()), false))
    }

    #[test]
    fn a_header_has_a_value_only_when_it_is_given_once() {
        assert_eq!(HeaderFound::Value("a").value(), Some("a"));
        assert_eq!(HeaderFound::Missing.value(), None);
        assert_eq!(HeaderFound::Conflicting.value(), None);
        let pairs = vec![("X-App", "a1"), ("x-app", "a1"), ("x-other", "z")];
        assert_eq!(pairs.header("x-app"), Some("a1"));
        assert_eq!(pairs.header("x-other"), Some("z"));
        assert_eq!(pairs.header("x-none"), None);
        // Given twice with different values, it has none.
        let conflicting = vec![("x-app", "a1"), ("X-App", "a2")];
        assert_eq!(conflicting.header("x-app"), None);
        assert_eq!(conflicting[..].lookup("x-app"), HeaderFound::Conflicting);
    }

    #[test]
    fn a_path_of_the_longest_length_is_accepted_and_one_byte_more_is_not() {
        let longest = format!("/{}", "a".repeat(MAX_PATH_BYTES - 1));
        assert_eq!(canonicalize(&longest).unwrap().as_str(), longest);
        // The query does not count.
        let with_query = format!("{longest}?{}", "q".repeat(100));
        assert_eq!(canonicalize(&with_query).unwrap().as_str(), longest);
        assert!(canonicalize(&format!("{longest}a")).is_err());
        let segments: Vec<String> = canonicalize("/a/B/c/")
            .unwrap()
            .segments()
            .map(str::to_owned)
            .collect();
        assert_eq!(segments, ["a", "B", "c"]);
        assert_eq!(canonicalize("/").unwrap().segments().count(), 0);
        // Only unreserved escapes other than `.` are decoded.
        assert_eq!(
            canonicalize("/%41%7a%30-%5F%7e").unwrap().as_str(),
            "/Az0-_~"
        );
        assert!(canonicalize("/a b").is_err());
    }

    /// Static segments before captures before rest captures, whatever the order in the file;
    /// static segments in any case.
    #[test]
    fn precedence_is_static_then_capture_then_rest() {
        let table = compile_docs(&[
            doc(&["GET"], "/a/{rest...}", Some("x/rest"), Some("/r/{rest}")),
            doc(&["GET"], "/a/{x}", Some("x/capture"), Some("/c/{x}")),
            doc(&["GET"], "/a/b", Some("x/static"), Some("/s")),
        ])
        .unwrap();
        assert_eq!(outcome(&table, "GET", "/a/b"), matched("x/static", "/s"));
        assert_eq!(outcome(&table, "GET", "/A/B/"), matched("x/static", "/s"));
        assert_eq!(outcome(&table, "GET", "/a/c"), matched("x/capture", "/c/c"));
        assert_eq!(
            outcome(&table, "GET", "/a/c/d/e"),
            matched("x/rest", "/r/c/d/e")
        );
        // A rest capture spans at least one segment.
        assert_eq!(outcome(&table, "GET", "/a"), Err("noRoute".into()));
        assert_eq!(outcome(&table, "GET", "/b/c"), Err("noRoute".into()));
    }

    #[test]
    fn methods_select_routes_and_must_be_tokens() {
        let table = compile_docs(&[
            doc(&["GET"], "/g", Some("x/get"), Some("/")),
            doc(&["*"], "/any", Some("x/any"), Some("/")),
            doc(&["get", "Post"], "/two", Some("x/two"), Some("/")),
        ])
        .unwrap();
        assert_eq!(outcome(&table, "GET", "/g"), matched("x/get", "/"));
        assert_eq!(outcome(&table, "get", "/g"), matched("x/get", "/"));
        assert_eq!(outcome(&table, "POST", "/g"), Err("noRoute".into()));
        assert_eq!(outcome(&table, "DELETE", "/any"), matched("x/any", "/"));
        assert_eq!(outcome(&table, "POST", "/two"), matched("x/two", "/"));
        assert_eq!(outcome(&table, "PUT", "/two"), Err("noRoute".into()));
        for method in ["", "GE T", "GET1", "G-T"] {
            let e = outcome(&table, method, "/any").unwrap_err();
            assert!(e.starts_with("malformed"), "{method:?}: {e}");
        }
        let bad = |method: &str| RouteError::BadMethod {
            method: method.into(),
        };
        for (methods, problem) in [
            (&["*", "GET"][..], RouteError::StarNotAlone),
            (&[], RouteError::NoMethods),
            (&["GE-T"], bad("GE-T")),
            (&[""], bad("")),
            (&["GET", "P T"], bad("P T")),
        ] {
            let doc = doc(methods, "/m", Some("x/read"), Some("/"));
            let named = [("routes[0]".to_owned(), &doc)];
            let problems = RouteTable::compile(&named).unwrap_err();
            assert_eq!(problems, [(0, problem)], "{methods:?}");
        }
    }

    #[test]
    fn a_route_table_tells_its_size_and_its_literal_actions() {
        assert!(RouteTable::default().is_empty());
        assert_eq!(RouteTable::default().len(), 0);
        let mut data = doc(&["PUT"], "/d", Some("d/write"), Some("/"));
        data.data_action = true;
        let public = RouteDoc {
            public: true,
            ..doc(&["GET"], "/p", None, None)
        };
        let table = compile_docs(&[
            doc(&["GET"], "/a", Some("x/read"), Some("/")),
            doc(&["GET"], "/b/{id}", Some("x/{id}/read"), Some("/")),
            data,
            public,
        ])
        .unwrap();
        assert_eq!(table.len(), 4);
        assert!(!table.is_empty());
        let literal: std::collections::BTreeSet<(&str, bool)> = table.literal_actions().collect();
        assert_eq!(
            literal,
            [("d/write", true), ("x/read", false)].into_iter().collect()
        );
        assert_eq!(outcome(&table, "GET", "/p"), Ok((None, None, false)));
    }

    /// A rest capture renders the segments it spans joined by `/`; a problem with a capture
    /// names the capture as the path writes it.
    #[test]
    fn captures_render_and_are_named_in_problems() {
        let table = compile_docs(&[
            doc(
                &["GET"],
                "/files/{path...}",
                Some("x/read"),
                Some("/f/{path}"),
            ),
            doc(&["GET"], "/one/{id}", Some("x/{id}/read"), Some("/o/{id}")),
        ])
        .unwrap();
        assert_eq!(
            outcome(&table, "GET", "/files/a/b/c"),
            matched("x/read", "/f/a/b/c")
        );
        assert_eq!(
            outcome(&table, "GET", "/files/a"),
            matched("x/read", "/f/a")
        );
        assert_eq!(
            outcome(&table, "GET", "/one/7"),
            matched("x/7/read", "/o/7")
        );
        let e = outcome(&table, "GET", "/files/a/b*").unwrap_err();
        assert!(e.contains("path capture `{path...}`"), "{e}");
        let e = outcome(&table, "GET", "/one/b*").unwrap_err();
        assert!(e.contains("path capture `{id}`"), "{e}");
    }

    #[test]
    fn route_documents_are_checked() {
        let ok = |d: RouteDoc| compile_docs(&[d]).is_ok();
        // The one problem of a refused document.
        let refused = |d: RouteDoc| {
            let named = [("routes[0]".to_owned(), &d)];
            let mut problems = RouteTable::compile(&named).unwrap_err();
            assert_eq!(problems.len(), 1, "{problems:?}");
            problems.remove(0).1
        };
        use RouteError as E;
        // An enforced route needs both an action and a scope; a public one neither.
        for d in [
            doc(&["GET"], "/a", Some("x/read"), None),
            doc(&["GET"], "/a", None, Some("/")),
        ] {
            assert_eq!(refused(d), E::NeedsActionAndScope { path: "/a".into() });
        }
        assert!(ok(RouteDoc {
            public: true,
            ..doc(&["GET"], "/a", None, None)
        }));
        // Templates name captures of the path and are valid once filled in.
        let e = refused(doc(&["GET"], "/a/{id}", Some("x/{nope}/read"), Some("/")));
        assert!(
            matches!(&e, E::UnknownCapture { name, .. } if name == "nope"),
            "{e:?}"
        );
        let e = refused(doc(&["GET"], "/a/{id}", Some("x/read"), Some("apps/{id}")));
        assert!(matches!(e, E::BadTemplate { .. }), "{e:?}");
        let e = refused(doc(&["GET"], "/a/{id}", Some("x y/{id}"), Some("/")));
        assert!(matches!(e, E::BadTemplate { .. }), "{e:?}");
        let e = refused(doc(&["GET"], "/a/{id}", Some("x/{id"), Some("/")));
        assert!(matches!(e, E::Unclosed { .. }), "{e:?}");
        let e = refused(doc(&["GET"], "/a/{id}", Some("x/id}"), Some("/")));
        assert!(matches!(e, E::StrayBrace { .. }), "{e:?}");
        let e = refused(doc(&["GET"], "/a", Some("x/{header:x.y}"), Some("/")));
        assert!(
            matches!(&e, E::BadHeaderName { header, .. } if header == "x.y"),
            "{e:?}"
        );
        assert!(ok(doc(
            &["GET"],
            "/a/{app_id}/{dev-id}",
            Some("x/{app_id}/{header:x-app}"),
            Some("/{dev-id}")
        )));
        // Capture names, their place and their number.
        let e = refused(doc(&["GET"], "/a/{b.c}", Some("x/read"), Some("/")));
        assert!(
            matches!(&e, E::BadCaptureName { name, .. } if name == "b.c"),
            "{e:?}"
        );
        let e = refused(doc(&["GET"], "/a/{}", Some("x/read"), Some("/")));
        assert!(matches!(e, E::BadCaptureName { .. }), "{e:?}");
        let e = refused(doc(&["GET"], "/a/{rest...}/b", Some("x/read"), Some("/")));
        assert!(
            matches!(&e, E::RestNotLast { name, .. } if name == "rest"),
            "{e:?}"
        );
        let e = refused(doc(&["GET"], "/a/{x}/{x}", Some("x/read"), Some("/")));
        assert!(
            matches!(&e, E::DuplicateCapture { name, .. } if name == "x"),
            "{e:?}"
        );
        let e = refused(doc(&["GET"], "/a/x{y}", Some("x/read"), Some("/")));
        assert!(matches!(e, E::PartialCapture { .. }), "{e:?}");
        // The path is written canonical; a trailing slash is allowed.
        for path in ["/a/%62", "/a/b?x=1", "/a/./b"] {
            let e = refused(doc(&["GET"], path, Some("x/read"), Some("/")));
            assert!(
                matches!(e, E::NotCanonical { .. } | E::BadPath { .. }),
                "{path}: {e:?}"
            );
        }
        assert!(ok(doc(&["GET"], "/a/b/", Some("x/read"), Some("/"))));
        let root = compile_docs(&[doc(&["GET"], "/", Some("x/root"), Some("/"))]).unwrap();
        assert_eq!(outcome(&root, "GET", "/"), matched("x/root", "/"));
        assert_eq!(outcome(&root, "GET", "/a"), Err("noRoute".into()));
        // Shadow mode is kept on the route.
        let shadow = RouteDoc {
            mode: super::super::document::RouteMode::Shadow,
            ..doc(&["GET"], "/s", Some("x/read"), Some("/"))
        };
        let table =
            compile_docs(&[shadow, doc(&["GET"], "/e", Some("x/read"), Some("/"))]).unwrap();
        assert_eq!(
            outcome(&table, "GET", "/s"),
            Ok((Some("x/read".into()), Some("/".into()), true))
        );
        assert_eq!(outcome(&table, "GET", "/e"), matched("x/read", "/"));
    }
}
