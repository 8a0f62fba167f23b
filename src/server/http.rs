//! The HTTP listener: `/healthz` (alive), `/readyz` (a policy is loaded and the server is
//! not draining), `/metrics` (Prometheus text format) and the HTTP authorization endpoints
//! of [`super::forward_auth`]; with `--console`, the web console under `/console/`
//! ([`crate::console`]).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{any, get};

use super::{App, forward_auth};

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
        .route(
            &format!("{}/{{*rest}}", forward_auth::ENVOY_PREFIX),
            any(forward_auth::envoy),
        )
        .route(forward_auth::NGINX_PATH, any(forward_auth::nginx))
        .route(forward_auth::TRAEFIK_PATH, any(forward_auth::traefik));
    let routes = if app.console.is_some() {
        routes.merge(crate::console::router())
    } else {
        routes
    };
    routes.with_state(app)
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(app): State<Arc<App>>) -> impl IntoResponse {
    if app.draining.load(Ordering::Relaxed) {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n")
    } else if app.policy.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "no policy loaded\n")
    }
}

async fn metrics(State(app): State<Arc<App>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        app.metrics.encode(),
    )
}
