//! The web console (`serve --console`): server-rendered pages under `/console/` on the HTTP
//! port, for the people who administer the policy. Check access (a decision explained),
//! Role assignments, Roles, Scopes, Who can, Where can, Recent decisions (live) and Policy
//! status.
//!
//! - Every page identifies its caller with the policy's identity sources over the request
//!   headers (as the HTTP authorization modes do) and is itself authorized by the policy:
//!   reading needs [`READ_ACTIONS`] (either) at the scope the page shows (`/` when it shows
//!   none). No identity: 401; not allowed: 403.
//! - HTML is rendered by `maud` (compile-time templates, escaping every value); the CSS and
//!   the one script are embedded in the binary ([`assets`]) and served from
//!   `/console/static/`. Nothing is loaded from elsewhere; the pages work without the
//!   script (it only adds the live updates of Recent decisions).
//! - Every response under `/console/` carries a strict Content-Security-Policy (no inline
//!   script or style, `frame-ancestors 'none'`) and `nosniff`; writes are protected by
//!   [`csrf`].
//! - [`feed`] taps the decision path: [`crate::server::App`] publishes every decision it
//!   concludes when the console is on.
//!
//! Writes (adding and removing role assignments) belong to the store's Admin API; where a
//! server has no store, the console says so and refuses them. Where can is the Plan query
//! ([`crate::policy::plan`]).

pub mod assets;
pub mod csrf;
pub mod feed;
mod pages;
mod view;

pub use view::link;

use std::sync::Arc;

use axum::Router;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::Response;
use axum::routing::get;

use crate::policy::identity::{IdentifyError, Identity, IdentityInput};
use crate::policy::{CheckRequest, Snapshot, syntax};
use crate::server::App;

/// Where the console lives.
pub const PREFIX: &str = "/console";

/// Reading any console page needs one of these at the scope it shows.
pub const READ_ACTIONS: [&str; 2] = [
    "Microsoft.Authorization/roleAssignments/read",
    "Microsoft.Authorization/roleDefinitions/read",
];

/// The Content-Security-Policy of every console response: only the console's own script,
/// style sheet and event stream; no inline script or style, no framing, forms post only
/// to the console.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
     connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// The most live decision streams open at once (all callers together); one more is
/// refused with 503 until one closes.
pub const MAX_WATCHERS: usize = 64;

/// The console's state in the [`App`].
#[derive(Debug)]
pub struct Console {
    pub feed: feed::DecisionFeed,
    pub csrf: csrf::Csrf,
    /// One permit per open live decision stream ([`MAX_WATCHERS`]).
    pub watchers: Arc<tokio::sync::Semaphore>,
}

impl Console {
    pub fn new() -> Result<Self, csrf::CsrfError> {
        Ok(Self {
            feed: feed::DecisionFeed::default(),
            csrf: csrf::Csrf::new()?,
            watchers: Arc::new(tokio::sync::Semaphore::new(MAX_WATCHERS)),
        })
    }
}

/// The console's routes (mounted by the HTTP router when the console is on), with the
/// security headers on every response.
pub fn router() -> Router<Arc<App>> {
    Router::new()
        .route(PREFIX, get(pages::to_index))
        .route(&format!("{PREFIX}/"), get(pages::index))
        .route(&format!("{PREFIX}/check"), get(pages::check))
        .route(
            &format!("{PREFIX}/assignments"),
            get(pages::assignments).post(pages::assignments_write),
        )
        .route(&format!("{PREFIX}/roles"), get(pages::roles))
        .route(&format!("{PREFIX}/scopes"), get(pages::scopes))
        .route(&format!("{PREFIX}/who-can"), get(pages::who_can))
        .route(&format!("{PREFIX}/where-can"), get(pages::where_can))
        .route(&format!("{PREFIX}/decisions"), get(pages::decisions))
        .route(&format!("{PREFIX}/decisions/events"), get(pages::events))
        .route(&format!("{PREFIX}/status"), get(pages::status))
        .route(&format!("{PREFIX}/static/{{file}}"), get(assets::serve))
        .route(&format!("{PREFIX}/{{*rest}}"), get(pages::not_found))
        .layer(axum::middleware::map_response(secure))
}

/// The headers every console response carries.
async fn secure(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

/// The identified caller of a console page.
#[derive(Debug, Clone)]
pub struct Caller {
    pub principal: String,
    pub groups: Vec<String>,
    /// The console session (see [`csrf`]).
    pub session: String,
    /// Set when the session is new: the cookie to set.
    pub new_session: bool,
}

/// Whether the caller may read at `scope` (either of [`READ_ACTIONS`]).
pub(crate) fn may_read(
    snapshot: &Snapshot,
    caller: &Caller,
    scope: &str,
) -> Result<bool, crate::policy::RequestError> {
    let at = syntax::now();
    for action in READ_ACTIONS {
        let decision = snapshot.check(&CheckRequest {
            principal: &caller.principal,
            groups: &caller.groups,
            action,
            data_action: false,
            scope,
            at,
        })?;
        if decision.allowed {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Identifies the caller from the request headers with the policy's identity sources,
/// through [`App::identify_with_keys`]: a bearer token naming a key its issuer's set lacks
/// has the keys fetched once, as in the HTTP modes; a present but invalid token identifies
/// no one (`IdentifyError::Rejected`, counted).
pub(crate) async fn identify(
    app: &App,
    snapshot: &Snapshot,
    headers: &HeaderMap,
) -> Result<Option<Identity>, IdentifyError> {
    let pairs = crate::server::forward_auth::header_pairs(headers);
    app.identify_with_keys(|| {
        snapshot.identity.identify(&IdentityInput {
            headers: Some(&pairs),
            metadata: None,
            peer_principal: None,
            verifier: Some(app.verifier()),
            at: syntax::now(),
        })
    })
    .await
}
