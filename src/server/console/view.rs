//! The frame every console page shares, and small rendering helpers. `maud` escapes every
//! value put into the markup; URLs built here percent-encode every query value.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::{DOCTYPE, Markup, html};

use super::Caller;
use super::csrf::Csrf;

/// The pages, in the navigation's order: (path, title).
pub const PAGES: [(&str, &str); 8] = [
    ("/console/check", "Check access"),
    ("/console/assignments", "Role assignments"),
    ("/console/roles", "Roles"),
    ("/console/scopes", "Scopes"),
    ("/console/who-can", "Who can"),
    ("/console/where-can", "Where can"),
    ("/console/decisions", "Recent decisions"),
    ("/console/status", "Policy status"),
];

/// A whole page: the frame around `body`.
pub fn page(
    status: StatusCode,
    title: &str,
    current: &str,
    caller: Option<&Caller>,
    body: Markup,
) -> Response {
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · iot-authz console" }
                link rel="stylesheet" href="/console/static/console.css";
                script src="/console/static/console.js" defer {}
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    a.brand href="/console/" { "iot-authz console" }
                    nav aria-label="Console pages" {
                        ul {
                            @for (path, name) in PAGES {
                                li {
                                    @if path == current {
                                        a href=(path) aria-current="page" { (name) }
                                    } @else {
                                        a href=(path) { (name) }
                                    }
                                }
                            }
                        }
                    }
                    @if let Some(c) = caller {
                        p.who { "Signed in as " code { (c.principal) } }
                    }
                }
                main #main {
                    h1 { (title) }
                    (body)
                }
            }
        }
    };
    let mut response = (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        )],
        markup.into_string(),
    )
        .into_response();
    if let Some(c) = caller
        && c.new_session
        && let Ok(v) = HeaderValue::from_str(&Csrf::cookie(&c.session))
    {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    response
}

/// A refused request: the response that says why (boxed: it travels in `Err`).
#[derive(Debug)]
pub struct Refusal(Box<Response>);

impl From<Response> for Refusal {
    fn from(response: Response) -> Self {
        Self(Box::new(response))
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        *self.0
    }
}

/// A page that only says why the request was refused.
pub fn refusal(status: StatusCode, title: &str, message: Markup) -> Refusal {
    let mut response = page(
        status,
        title,
        "",
        None,
        html! { p.error role="alert" { (message) } },
    );
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"iot-authz console\""),
        );
    }
    response.into()
}

/// A console URL with query parameters, every value percent-encoded.
pub fn link(path: &str, params: &[(&str, &str)]) -> String {
    let mut out = path.to_owned();
    let mut first = true;
    for (k, v) in params {
        if v.is_empty() {
            continue;
        }
        out.push(if first { '?' } else { '&' });
        first = false;
        out.push_str(k);
        out.push('=');
        out.push_str(&encode(v));
    }
    out
}

/// Percent-encodes everything but the unreserved characters of RFC 3986.
pub fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A principal, linked to Check access for it.
pub fn principal(id: &str) -> Markup {
    html! { a href=(link("/console/check", &[("principal", id)])) { code { (id) } } }
}

/// A scope, linked to its place on the Scopes page.
pub fn scope(s: &str) -> Markup {
    html! { a href=(link("/console/scopes", &[("scope", s)])) { code { (s) } } }
}

/// A role, linked to its definition.
pub fn role(name: &str) -> Markup {
    html! { a href=(link("/console/roles", &[("role", name)])) { (name) } }
}

/// A list of codes, or a dash.
pub fn codes(items: &[&str]) -> Markup {
    html! {
        @if items.is_empty() {
            span.muted { "none" }
        } @else {
            @for (i, item) in items.iter().enumerate() {
                @if i > 0 { ", " }
                code { (item) }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn links_encode_every_value() {
        assert_eq!(
            super::link(
                "/console/check",
                &[("principal", "user:a&b=\"<c>\""), ("scope", "")]
            ),
            "/console/check?principal=user%3Aa%26b%3D%22%3Cc%3E%22"
        );
    }
}
