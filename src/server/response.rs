//! What a denied request gets back: the JSON body shared by ext_authz and the HTTP modes,
//! and the headers an allowed request carries upstream.

use serde_json::json;

use crate::policy::queries::HttpDecision;

/// Headers iot-authz sets on allowed requests; client-sent copies are removed first.
pub const PRINCIPAL_HEADER: &str = "x-iotauthz-principal";
pub const ACTION_HEADER: &str = "x-iotauthz-action";
pub const SCOPE_HEADER: &str = "x-iotauthz-scope";
/// Every header with this prefix that a client sends is removed before the request goes on.
pub const HEADER_PREFIX: &str = "x-iotauthz-";

/// Whether a client-sent header name is, or could be read as, one of ours: its name
/// starts with [`HEADER_PREFIX`] in any ASCII case once `_` counts as `-` (WSGI, CGI and
/// many frameworks read `x_iotauthz_principal` as `x-iotauthz-principal`).
pub fn is_decision_header(name: &str) -> bool {
    name.len() >= HEADER_PREFIX.len()
        && name
            .bytes()
            .zip(HEADER_PREFIX.bytes())
            .all(|(n, p)| n.to_ascii_lowercase() == p || (n == b'_' && p == b'-'))
}

/// The short error text of a denial's reason.
pub fn error_text(reason: &crate::policy::Reason<'_>) -> &'static str {
    match reason {
        crate::policy::Reason::Malformed { .. } => "bad request",
        crate::policy::Reason::NoIdentity => "unauthenticated",
        _ => "forbidden",
    }
}

/// The JSON body of a denied request: `{"error","action","scope","principal","reason",
/// "decisionId"}`, plus `message` for a malformed request and `denyAssignment` (its name)
/// for a deny assignment. JSON-escaped, and `<`, `>`, `&` escaped too so that no raw request
/// text can turn into markup wherever the body is shown.
pub fn deny_body(outcome: &HttpDecision<'_>, decision_id: &str) -> String {
    let mut body = json!({
        "error": error_text(&outcome.decision.reason),
        "action": outcome.action,
        "scope": outcome.scope,
        "principal": outcome.principal,
        "reason": outcome.decision.reason.kind(),
        "decisionId": decision_id,
    });
    match &outcome.decision.reason {
        crate::policy::Reason::Malformed { message } => body["message"] = json!(message),
        // The deny assignment by name, so a person can look it up in the policy.
        crate::policy::Reason::DenyAssignment { deny_assignment } => {
            body["denyAssignment"] = json!(deny_assignment)
        }
        _ => {}
    }
    escape_markup(&body.to_string())
}

fn escape_markup(json: &str) -> String {
    let json = crate::policy::syntax::escape_json_output(json);
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            c => out.push(c),
        }
    }
    out
}

/// Set on requests that shadow mode lets through although the policy denies them.
pub const SHADOW_DECISION_HEADER: &str = "x-iotauthz-shadow-decision";
pub const SHADOW_REASON_HEADER: &str = "x-iotauthz-shadow-reason";

/// The `x-iotauthz-*` headers to set on a request that goes on: an allowed one, or a
/// would-be denial that shadow mode lets through (`shadowed`), which is marked.
pub fn allow_headers<'a>(
    outcome: &'a HttpDecision<'_>,
    shadowed: bool,
) -> Vec<(&'static str, &'a str)> {
    let mut headers = Vec::with_capacity(5);
    if shadowed {
        headers.push((SHADOW_DECISION_HEADER, "deny"));
        headers.push((SHADOW_REASON_HEADER, outcome.decision.reason.kind()));
    }
    if let Some(p) = &outcome.principal {
        headers.push((PRINCIPAL_HEADER, p.as_str()));
    }
    if let Some(a) = &outcome.action {
        headers.push((ACTION_HEADER, a.as_str()));
    }
    if let Some(s) = &outcome.scope {
        headers.push((SCOPE_HEADER, s.as_str()));
    }
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decision_headers_are_recognised_in_any_spelling() {
        for name in [
            "x-iotauthz-principal",
            "X-IOTAUTHZ-SCOPE",
            "x_iotauthz_principal",
            "X_IotAuthz-x",
            "x-iotauthz_",
        ] {
            assert!(is_decision_header(name), "{name}");
        }
        for name in ["x-iotauthz", "x_iotauth_z", "xx-iotauthz-a", "x-other", ""] {
            assert!(!is_decision_header(name), "{name}");
        }
    }

    #[test]
    fn markup_is_escaped() {
        assert_eq!(
            escape_markup(r#"{"a":"<b>&"}"#),
            r#"{"a":"\u003cb\u003e\u0026"}"#
        );
        let v: serde_json::Value = serde_json::from_str(&escape_markup(r#"{"a":"<b>&"}"#)).unwrap();
        assert_eq!(v["a"], "<b>&");
    }
}
