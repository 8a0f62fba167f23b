//! The HTTP listener: `/healthz` (alive), `/readyz` (a policy is loaded and the server is
//! not draining), `/metrics` (Prometheus text format) and the HTTP authorization endpoints
//! of [`super::forward_auth`]; with `--console`, the web console under `/console/`
//! ([`crate::server::console`]).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{any, get, post};

use super::{App, authzen, forward_auth};

/// The HTTP routes.
pub fn router(app: Arc<App>) -> Router {
    let routes = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        // Envoy appends the original path to the prefix: `/` becomes `<prefix>/`, which
        // `{*rest}` (one or more characters) does not match.
        .route(forward_auth::ENVOY_PREFIX, any(forward_auth::envoy))
        .route(
            &format!("{}/", forward_auth::ENVOY_PREFIX),
            any(forward_auth::envoy),
        )
        .route(forward_auth::NGINX_PATH, any(forward_auth::nginx))
        .route(forward_auth::TRAEFIK_PATH, any(forward_auth::traefik))
        // The AuthZEN Authorization API (SPEC §12).
        .route(authzen::EVALUATION_PATH, post(authzen::evaluation))
        .route(authzen::EVALUATIONS_PATH, post(authzen::evaluations))
        .route(authzen::SEARCH_SUBJECT_PATH, post(authzen::search_subject))
        .route(
            authzen::SEARCH_RESOURCE_PATH,
            post(authzen::search_resource),
        )
        .route(authzen::SEARCH_ACTION_PATH, post(authzen::search_action))
        .route(authzen::CONFIGURATION_PATH, get(authzen::configuration));
    let routes = if app.console.is_some() {
        routes.merge(crate::server::console::router())
    } else {
        routes
    };
    routes.fallback(unrouted).with_state(app)
}

/// Every path under the Envoy prefix (`<prefix>/<one or more characters>`) is Envoy's HTTP
/// ext_authz; any other unknown path is 404 with no body, as the router answers it. Not a
/// `{*rest}` route: the router would build a map of the path's captures for every request,
/// which nothing reads (the handler reads the raw request target).
async fn unrouted(
    State(app): State<Arc<App>>,
    req: axum::extract::Request,
) -> axum::response::Response {
    let envoy = req
        .uri()
        .path()
        .strip_prefix(forward_auth::ENVOY_PREFIX)
        .and_then(|rest| rest.strip_prefix('/'))
        .is_some_and(|rest| !rest.is_empty());
    if envoy {
        forward_auth::envoy(State(app), req).await
    } else {
        StatusCode::NOT_FOUND.into_response()
    }
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(app): State<Arc<App>>) -> impl IntoResponse {
    if app.draining.load(Ordering::Relaxed) {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n".to_string())
    } else if let Some(store) = app.store.get() {
        // With a store, the detail says how current the policy is.
        let detail = store_detail(store);
        if app.policy.is_ready() {
            (StatusCode::OK, format!("ready\n{detail}"))
        } else {
            let error = app
                .policy
                .last_error()
                .map(|e| format!("{}\n", e.message))
                .unwrap_or_default();
            (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("store not loaded\n{detail}{error}"),
            )
        }
    } else if app.policy.is_ready() {
        (StatusCode::OK, "ready\n".to_string())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "no policy loaded\n".to_string(),
        )
    }
}

fn store_detail(store: &crate::store::Store) -> String {
    let contact = store
        .seconds_since_contact()
        .map_or_else(|| "never".to_string(), |s| format!("{s:.1}s ago"));
    format!(
        "store revision {}, etcd {}, last contact {contact}\n",
        store.through(),
        if store.reachable() {
            "reachable"
        } else {
            "unreachable"
        },
    )
}

async fn metrics(State(app): State<Arc<App>>) -> impl IntoResponse {
    if let Some(store) = app.store.get() {
        app.metrics
            .store_contact_age
            .set(store.seconds_since_contact().unwrap_or(f64::INFINITY));
        app.metrics
            .store_reachable
            .set(i64::from(store.reachable()));
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        app.metrics.encode(),
    )
}
