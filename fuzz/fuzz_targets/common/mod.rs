//! Helpers shared by the fuzz targets (each target includes this file with `#[path]`).

#![allow(dead_code)]

use std::sync::OnceLock;

use iot_authz::policy::document::Document;
use iot_authz::policy::syntax;
use iot_authz::policy::{Snapshot, compile_documents};

/// The embedded demo policy as raw documents (parsed once per process): for the reference
/// model, and compiled into [`demo_snapshot`].
pub fn demo_documents() -> &'static [(String, Document)] {
    static DOCS: OnceLock<Vec<(String, Document)>> = OnceLock::new();
    DOCS.get_or_init(|| {
        iot_authz::demo::sources()
            .iter()
            .map(|s| (s.name.clone(), s.parse().expect("demo documents parse")))
            .collect()
    })
}

/// The embedded demo policy compiled from [`demo_documents`] (so its revision is empty).
pub fn compile_demo() -> Snapshot {
    compile_documents(demo_documents()).expect("the embedded demo policy compiles")
}

/// The embedded demo policy, compiled once per process.
pub fn demo_snapshot() -> &'static Snapshot {
    static SNAPSHOT: OnceLock<Snapshot> = OnceLock::new();
    SNAPSHOT.get_or_init(compile_demo)
}

/// SPEC §2 principal ids, written from the spec text: `TYPE:VALUE`, TYPE one of six,
/// VALUE non-empty and free of the characters no id may hold (controls, line separators,
/// bidi marks: the engine's one character policy, `syntax::is_unsafe_char`, not a copy of
/// it that could drift).
pub fn is_principal(id: &str) -> bool {
    const TYPES: [&str; 6] = [
        "user",
        "group",
        "servicePrincipal",
        "application",
        "device",
        "gateway",
    ];
    match id.split_once(':') {
        Some((t, v)) => {
            TYPES.contains(&t) && !v.is_empty() && !v.chars().any(syntax::is_unsafe_char)
        }
        None => false,
    }
}

/// Splits `text` at the first `\n`: `(first line, rest)`.
pub fn split_line(text: &str) -> (&str, Option<&str>) {
    match text.split_once('\n') {
        Some((a, b)) => (a, Some(b)),
        None => (text, None),
    }
}

/// Whether a message is free of raw control characters (ARCHITECTURE: user text reaches
/// messages only through `syntax::escape`). Line breaks and tabs are allowed: parsers lay
/// out their messages with them (a source excerpt under the error); what must never come
/// through raw is the rest (ESC, CR, NUL, DEL, C1 controls...), which can rewrite a
/// terminal or a log line.
pub fn no_raw_control(text: &str) -> bool {
    !text
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
}
