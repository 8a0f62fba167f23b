//! Header captures (SPEC §4): a `{header:NAME}` value passes exactly the segment rule of a
//! path capture, escapes included.
//!
//! Input (plain text): the header value. Invalid UTF-8 is replaced.
//!
//! Checked:
//! - `capture_segment` never panics; what it accepts is one plain segment: not empty, not
//!   `.`/`..`, and without `/`, `\`, `*`, `?`, `#`, `;`, `%`, whitespace, control or
//!   non-ASCII characters; it is a fixed point (a decoded value decodes to itself), and a
//!   value without `%` comes back unchanged;
//! - the same text as a `{header:...}` capture and as a `{name}` path capture gives the same
//!   scope, or is malformed both ways (when the text can stand in a path segment and as one
//!   header copy at all).

#![no_main]

use iot_authz::policy::document::RouteDoc;
use iot_authz::policy::route::{RouteOutcome, RouteTable, capture_segment};
use libfuzzer_sys::fuzz_target;

fn table() -> RouteTable {
    let doc = |path: &str, scope: &str| RouteDoc {
        methods: vec!["GET".into()],
        path: path.into(),
        action: Some("x/read".into()),
        scope: Some(scope.into()),
        ..RouteDoc::default()
    };
    let docs = [
        doc("/h", "/apps/{header:x-app}"),
        doc("/p/{id}", "/apps/{id}"),
    ];
    let named: Vec<(String, &RouteDoc)> = docs
        .iter()
        .enumerate()
        .map(|(i, d)| (format!("routes[{i}]"), d))
        .collect();
    RouteTable::compile(&named).unwrap_or_default()
}

fn scope(outcome: RouteOutcome<'_>) -> Option<String> {
    match outcome {
        RouteOutcome::Matched { scope, .. } => scope,
        _ => None,
    }
}

fuzz_target!(|data: &[u8]| {
    let value = String::from_utf8_lossy(data);
    if let Ok(decoded) = capture_segment(&value) {
        assert!(!decoded.is_empty() && decoded != "." && decoded != "..");
        assert!(
            decoded.bytes().all(|b| b.is_ascii_graphic()
                && !matches!(b, b'/' | b'\\' | b'*' | b'?' | b'#' | b';' | b'%')),
            "{decoded:?}"
        );
        assert_eq!(capture_segment(&decoded).ok().as_deref(), Some(&*decoded));
        if !value.contains('%') {
            assert_eq!(&*decoded, &*value);
        }
    }
    // Only text that can stand both in a path segment and as one header copy: no query,
    // fragment or slash, no comma (which separates header copies) and no blanks at the ends
    // (which header parsing trims).
    if value.is_empty()
        || value.contains(['?', '#', '/', ',', '\r', '\n'])
        || value.starts_with([' ', '\t'])
        || value.ends_with([' ', '\t'])
    {
        return;
    }
    let table = table();
    let headers = [("x-app", &*value)];
    let by_header = scope(table.resolve("GET", "/h", &headers[..]));
    let no_headers: [(&str, &str); 0] = [];
    let by_path = scope(table.resolve("GET", &format!("/p/{value}"), &no_headers[..]));
    assert_eq!(by_header, by_path, "{value:?}");
});
