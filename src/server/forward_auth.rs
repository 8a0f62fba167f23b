//! HTTP authorization mode for proxies that cannot speak gRPC ext_authz: Envoy's HTTP
//! ext_authz service (`/v1/authz/envoy/<original path>`, the original method), nginx
//! `auth_request` (`/v1/authz/nginx` with `X-Original-Method` and `X-Original-URI`) and
//! Traefik ForwardAuth (`/v1/authz/traefik` with `X-Forwarded-Method` and
//! `X-Forwarded-Uri`). Same canonicalisation, routes, identity and decisions as gRPC mode.
//!
//! Answers: 200 with `x-iotauthz-*` headers on allow; 401, 403 or 400 with the JSON deny
//! body otherwise. nginx treats only 2xx, 401 and 403 specially (anything else becomes a
//! 500), so its endpoint answers a malformed request with 403 and says 400 in
//! `x-iotauthz-status`; the deny body is also in `x-iotauthz-body`, since nginx does not
//! pass an auth subrequest's body on. The example config turns both back into the real
//! status and body.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode};

use super::response;
use super::{App, RequestContext};
use crate::policy::queries::{HttpDecision, HttpRequest};
use crate::policy::syntax;
use crate::policy::{Decision, Reason};

/// Where the endpoints live.
pub const ENVOY_PREFIX: &str = "/v1/authz/envoy";
pub const NGINX_PATH: &str = "/v1/authz/nginx";
pub const TRAEFIK_PATH: &str = "/v1/authz/traefik";

/// The proxy whose contract a request follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proxy {
    Envoy,
    Nginx,
    Traefik,
}

impl Proxy {
    fn api(self) -> &'static str {
        match self {
            Self::Envoy => "http_envoy",
            Self::Nginx => "http_nginx",
            Self::Traefik => "http_traefik",
        }
    }
}

/// Why the original request cannot be read from the proxy's headers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum OriginalError {
    #[error("`{0}` is missing")]
    Missing(&'static str),
    /// Given more than once with different values.
    #[error("{}", crate::policy::route::conflicting_header_message(.0))]
    Conflicting(&'static str),
    #[error("`{0}` is not visible ASCII")]
    NotAscii(&'static str),
}

/// The original method and path, as each proxy reports them. A header given more than
/// once with different values is ambiguous, so malformed, as a conflicting identity header
/// is (a comma does not separate copies here: a URI may hold one).
fn original(
    proxy: Proxy,
    req: &axum::http::request::Parts,
) -> Result<(String, String), OriginalError> {
    let header = |name: &'static str| {
        let mut copies = req.headers.get_all(name).iter();
        let first = copies.next().ok_or(OriginalError::Missing(name))?;
        if copies.any(|other| other != first) {
            return Err(OriginalError::Conflicting(name));
        }
        first
            .to_str()
            .map(str::to_owned)
            .map_err(|_| OriginalError::NotAscii(name))
    };
    match proxy {
        Proxy::Envoy => {
            // The raw request target: never the decoded form.
            let raw = req.uri.path_and_query().map_or("/", |p| p.as_str());
            let rest = raw.strip_prefix(ENVOY_PREFIX).unwrap_or(raw);
            let path = if rest.is_empty() || rest.starts_with('?') {
                format!("/{rest}")
            } else {
                rest.to_owned()
            };
            Ok((req.method.as_str().to_owned(), path))
        }
        Proxy::Nginx => Ok((header("x-original-method")?, header("x-original-uri")?)),
        Proxy::Traefik => Ok((header("x-forwarded-method")?, header("x-forwarded-uri")?)),
    }
}

/// A header value that is not visible ASCII, as the decision sees it: a control character,
/// which no principal, group or route capture accepts.
const UNREADABLE: &str = "\u{1}";

/// Headers as `(lowercase name, value)`. A value that is not visible ASCII becomes
/// [`UNREADABLE`]: it identifies no one and fills no capture, yet still counts as a copy, so
/// a second, different copy of a header the decision reads makes the request malformed, as
/// any other conflicting copy does.
pub(crate) fn header_pairs(headers: &HeaderMap) -> Vec<(String, String)> {
    header_refs(headers)
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// [`header_pairs`] borrowed from the map: the authorization path copies no header.
fn header_refs(headers: &HeaderMap) -> Vec<(&str, &str)> {
    headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.to_str().unwrap_or(UNREADABLE)))
        .collect()
}

pub async fn envoy(State(app): State<Arc<App>>, req: Request) -> Response<Body> {
    if let Some(refused) = consistency(&app, token(&req)).await {
        return refused;
    }
    authorize(&app, Proxy::Envoy, req).await
}

pub async fn nginx(State(app): State<Arc<App>>, req: Request) -> Response<Body> {
    if let Some(refused) = consistency(&app, token(&req)).await {
        return refused;
    }
    authorize(&app, Proxy::Nginx, req).await
}

pub async fn traefik(State(app): State<Arc<App>>, req: Request) -> Response<Body> {
    if let Some(refused) = consistency(&app, token(&req)).await {
        return refused;
    }
    authorize(&app, Proxy::Traefik, req).await
}

/// The request's `x-iotauthz-consistency` header (a value that is not text is kept as one
/// that no token matches).
fn token(req: &Request) -> Option<String> {
    req.headers()
        .get(crate::store::CONSISTENCY_HEADER)
        .map(|v| v.to_str().unwrap_or("\u{1}").to_owned())
}

/// A consistency token in `x-iotauthz-consistency` (SPEC §10): waits until this replica
/// answers at least at it; `Some` is the refusal (503 behind, 400 not a token).
async fn consistency(app: &App, token: Option<String>) -> Option<Response<Body>> {
    let e = crate::store::wait_for(app, &token?, None).await.err()?;
    let (status, message) = match &e {
        crate::store::TokenError::Behind(m) => (StatusCode::SERVICE_UNAVAILABLE, m),
        crate::store::TokenError::Invalid(m) => (StatusCode::BAD_REQUEST, m),
    };
    let mut r = Response::new(Body::from(
        serde_json::json!({"error": message}).to_string(),
    ));
    *r.status_mut() = status;
    set(&mut r, "content-type", "application/json");
    Some(r)
}

async fn authorize(app: &App, proxy: Proxy, req: Request) -> Response<Body> {
    // The body is not Sync and is never read: only the head is kept across the key fetch.
    let (parts, _) = req.into_parts();
    let headers = header_refs(&parts.headers);
    let ctx = RequestContext::begin(proxy.api(), |k| {
        headers.iter().find(|(n, _)| *n == k).map(|(_, v)| *v)
    });
    let Some(policy) = app.policy.current() else {
        return plain(StatusCode::SERVICE_UNAVAILABLE, "no policy loaded\n");
    };
    let decision_id = app.ids.next();
    let original = original(proxy, &parts);
    let outcome = match original {
        Ok((method, path)) => {
            app.check_with_keys(|| {
                policy.snapshot.check_http_with(
                    &HttpRequest {
                        method: &method,
                        path: &path,
                        headers: &headers,
                        principal: None,
                        groups: &[],
                        metadata: None,
                        peer_principal: None,
                        verifier: Some(app.verifier()),
                        at: syntax::now(),
                    },
                    |_, r| app.decide(&policy, r),
                )
            })
            .await
        }
        // Without the original request there is nothing to authorize: malformed.
        Err(e) => Ok(HttpDecision {
            decision: Decision::deny(Reason::Malformed {
                message: e.to_string(),
            }),
            action: None,
            scope: None,
            data_action: false,
            principal: None,
            route: None,
            token_rejection: None,
        }),
    };
    let Ok(outcome) = outcome else {
        // Only an explicit principal can fail; none is passed here.
        return plain(StatusCode::INTERNAL_SERVER_ERROR, "internal error\n");
    };
    let shadowed = app.conclude_http(&ctx, &outcome, &decision_id, &policy.snapshot.revision);
    if outcome.decision.allowed || shadowed {
        allow(proxy, &outcome, shadowed, &parts.headers, &decision_id)
    } else {
        deny(proxy, &outcome, &decision_id)
    }
}

fn plain(status: StatusCode, text: &'static str) -> Response<Body> {
    let mut r = Response::new(Body::from(text));
    *r.status_mut() = status;
    r
}

fn set(r: &mut Response<Body>, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        r.headers_mut().insert(header_name(name), v);
    }
}

/// The names the HTTP modes answer with, parsed once: a name given as text is parsed (and
/// checked against the standard names) on every insert, several times per request.
static NAMES: [HeaderName; 10] = [
    HeaderName::from_static(response::PRINCIPAL_HEADER),
    HeaderName::from_static(response::ACTION_HEADER),
    HeaderName::from_static(response::SCOPE_HEADER),
    HeaderName::from_static(response::SHADOW_DECISION_HEADER),
    HeaderName::from_static(response::SHADOW_REASON_HEADER),
    HeaderName::from_static("x-iotauthz-decision-id"),
    HeaderName::from_static("x-envoy-auth-headers-to-remove"),
    HeaderName::from_static("content-type"),
    HeaderName::from_static("x-iotauthz-status"),
    HeaderName::from_static("x-iotauthz-body"),
];

fn header_name(name: &'static str) -> HeaderName {
    NAMES
        .iter()
        .find(|n| n.as_str() == name)
        .cloned()
        .unwrap_or_else(|| HeaderName::from_static(name))
}

fn allow(
    proxy: Proxy,
    outcome: &HttpDecision<'_>,
    shadowed: bool,
    request_headers: &HeaderMap,
    decision_id: &str,
) -> Response<Body> {
    let mut r = Response::new(Body::empty());
    let set_headers = response::allow_headers(outcome, shadowed);
    for (name, value) in &set_headers {
        set(&mut r, name, value);
    }
    set(&mut r, "x-iotauthz-decision-id", decision_id);
    if proxy == Proxy::Envoy {
        // Client-sent x-iotauthz-* headers that the decision does not overwrite, every one
        // of them: also those whose value is not visible ASCII (which identify no one, but
        // would still reach the upstream), and their underscore twins.
        let stale: Vec<&str> = request_headers
            .keys()
            .map(|k| k.as_str())
            .filter(|k| response::is_decision_header(k))
            .filter(|k| !set_headers.iter().any(|(s, _)| s == k))
            .collect();
        if !stale.is_empty() {
            set(&mut r, "x-envoy-auth-headers-to-remove", &stale.join(","));
        }
    }
    r
}

fn deny(proxy: Proxy, outcome: &HttpDecision<'_>, decision_id: &str) -> Response<Body> {
    let body = response::deny_body(outcome, decision_id);
    let status = match (proxy, &outcome.decision.reason) {
        (Proxy::Nginx, Reason::Malformed { .. }) => 403,
        _ => outcome.status(),
    };
    let mut r = Response::new(Body::from(body.clone()));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::FORBIDDEN);
    set(&mut r, "content-type", "application/json");
    set(&mut r, "x-iotauthz-decision-id", decision_id);
    if proxy == Proxy::Nginx {
        set(&mut r, "x-iotauthz-status", &outcome.status().to_string());
        set(&mut r, "x-iotauthz-body", &body);
    }
    r
}
