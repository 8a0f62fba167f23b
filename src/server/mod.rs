//! The service: the native gRPC API, Envoy ext_authz, gRPC health and reflection on one
//! listener, and health, readiness and metrics on an HTTP listener.
//!
//! [`run`] takes bound listeners, a policy state and a shutdown future, so tests start
//! the real server in-process on port 0.

pub mod activity;
pub mod admin;
pub mod authzen;
pub mod cache;
pub mod console;
pub mod deadline;
pub mod decision_log;
pub mod defaults;
pub mod ext_authz;
pub mod forward_auth;
pub mod http;
pub mod metrics;
pub mod native;
pub mod query_pool;
pub mod reflection;
pub mod response;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use crate::proto::envoy_auth::authorization_server::AuthorizationServer;
use anyhow::Context as _;
use sha2::Digest as _;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tonic::codegen::tokio_stream::StreamExt;
use tonic::server::NamedService;
use tonic::transport::server::{Connected, TcpIncoming};
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};

use crate::live::PolicyState;
use crate::proto::iotauthz::v1::authorizer_server::AuthorizerServer;
use crate::proto::{ENVOY_AUTH_DESCRIPTOR, IOTAUTHZ_DESCRIPTOR};
use metrics::Metrics;
use tonic_health::ServingStatus;

/// Limits and TLS settings of the gRPC listener.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Largest gRPC message accepted or sent.
    pub max_message_bytes: usize,
    /// A request still running after this is answered with `DEADLINE_EXCEEDED`
    /// ([`deadline`]). A shorter `grpc-timeout` from the client still ends it earlier (tonic
    /// answers that one `CANCELLED`, when the client has already given up itself).
    pub request_timeout: Duration,
    /// Concurrent requests per connection.
    pub concurrency_per_connection: usize,
    /// Concurrent HTTP/2 streams per connection.
    pub max_concurrent_streams: u32,
    /// After the shutdown signal, how long to keep serving (health NOT_SERVING, readiness
    /// false) before the listeners close, so load balancers stop sending new requests.
    pub shutdown_delay: Duration,
    /// Once the listeners close, how long requests and streams in flight may take to
    /// finish; connections still open then are cut.
    pub shutdown_grace: Duration,
    pub tls: Option<TlsFiles>,
    /// A new connection that has not sent its opening bytes (the HTTP/2 connection preface
    /// on the gRPC port, a request line on the HTTP port) by then is closed, so silent
    /// connections cannot pile up until the process runs out of file descriptors.
    pub opening_timeout: Duration,
    /// Open client connections per listener; one beyond it is closed at once, so that
    /// connections cannot take every file descriptor the process has.
    pub max_connections: usize,
    /// HTTP port: from the first byte of a request to the first byte of its answer, at
    /// most this long (a client trickling its headers is closed).
    pub header_read_timeout: Duration,
    /// HTTP port: a keep-alive connection with no request for this long is closed.
    pub idle_timeout: Duration,
    /// Both ports: a connection older than this is closed (gRPC: a graceful `GOAWAY`,
    /// then `max_connection_age_grace`; HTTP: at its next request boundary).
    pub max_connection_age: Duration,
    /// gRPC port: a connection with no request in flight for this long is closed, however
    /// many PINGs it answers.
    pub grpc_idle_timeout: Duration,
    /// HTTP port: request bytes read before the answer starts (the request line and
    /// headers; the HTTP port's requests carry no body). gRPC port: the HTTP/2 header
    /// list size.
    pub max_header_bytes: usize,
}

impl Default for ServerOptions {
    fn default() -> Self {
        use defaults as d;
        Self {
            max_message_bytes: d::MAX_MESSAGE_BYTES,
            request_timeout: Duration::from_millis(d::REQUEST_TIMEOUT_MS),
            concurrency_per_connection: d::CONCURRENCY_PER_CONNECTION,
            max_concurrent_streams: d::MAX_CONCURRENT_STREAMS,
            shutdown_delay: Duration::from_millis(d::SHUTDOWN_DELAY_MS),
            shutdown_grace: Duration::from_millis(d::SHUTDOWN_GRACE_MS),
            tls: None,
            opening_timeout: Duration::from_millis(d::OPENING_TIMEOUT_MS),
            max_connections: d::MAX_CONNECTIONS,
            header_read_timeout: Duration::from_millis(d::HEADER_READ_TIMEOUT_MS),
            idle_timeout: Duration::from_millis(d::IDLE_TIMEOUT_MS),
            max_connection_age: Duration::from_secs(d::MAX_CONNECTION_AGE_SECONDS),
            grpc_idle_timeout: Duration::from_millis(d::GRPC_IDLE_TIMEOUT_MS),
            max_header_bytes: d::MAX_HEADER_BYTES,
        }
    }
}

/// PEM files for TLS; with `client_ca`, clients must present a certificate it signed.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
}

/// Unique ids for decisions that reveal nothing: the first 128 bits of SHA-256 over a
/// random per-process key and a counter, in hex. Without the key an id says nothing about
/// the process (start time, pid) or how many requests it has seen, and ids cannot be
/// predicted; with 128 bits, two ids of one process never collide in practice.
pub struct DecisionIds {
    key: [u8; 32],
    counter: AtomicU64,
}

impl std::fmt::Debug for DecisionIds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecisionIds").finish_non_exhaustive()
    }
}

impl Default for DecisionIds {
    fn default() -> Self {
        use ring::rand::SecureRandom as _;
        let mut key = [0u8; 32];
        if ring::rand::SystemRandom::new().fill(&mut key).is_err() {
            // No OS randomness (never seen on a supported system): a key from what the
            // process has, hashed; ids stay unique, but are guessable, so say so.
            tracing::warn!("no OS randomness for decision ids; they may be guessable");
            let seed = format!(
                "{:?} {} {:p}",
                std::time::SystemTime::now(),
                std::process::id(),
                &key
            );
            key = sha2::Sha256::digest(seed.as_bytes()).into();
        }
        Self {
            key,
            counter: AtomicU64::new(0),
        }
    }
}

impl DecisionIds {
    pub fn next(&self) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let mut hasher = sha2::Sha256::new();
        hasher.update(self.key);
        hasher.update(n.to_le_bytes());
        let digest = hasher.finalize();
        // 32 lowercase hex digits of the first 16 bytes (as `{:032x}` would write them,
        // without the formatting machinery: this runs once per request).
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut id = String::with_capacity(32);
        for &b in digest.iter().take(16) {
            id.push(char::from(HEX[usize::from(b >> 4)]));
            id.push(char::from(HEX[usize::from(b & 0xf)]));
        }
        id
    }
}

/// What every service shares.
#[derive(Debug, Default)]
pub struct App {
    pub policy: Arc<PolicyState>,
    pub metrics: Metrics,
    pub ids: DecisionIds,
    /// Set when shutdown starts: readiness turns false.
    pub draining: AtomicBool,
    pub cache: Option<cache::DecisionCache>,
    pub decision_log: Option<decision_log::DecisionLog>,
    /// `--shadow`: every route is in shadow mode.
    pub shadow: bool,
    /// Key sets of the bearer identity sources and the verified-token cache.
    pub keys: Arc<crate::sources::jwks::KeyStore>,
    /// The store (SPEC §9), when one is configured; set once, before serving.
    pub store: std::sync::OnceLock<Arc<crate::store::Store>>,
    /// `--console`: the web console, which also receives every decision concluded.
    pub console: Option<console::Console>,
    /// WhoCan, CheckAssign, ListPermissions, Plan and the AuthZEN searches: their own
    /// threads and concurrency limit.
    pub queries: query_pool::QueryPool,
}

/// Optional parts of an [`App`].
#[derive(Debug, Clone, Default)]
pub struct AppOptions {
    pub cache: Option<cache::CacheOptions>,
    /// Where decision lines go, and the fraction of allows logged.
    pub decision_log: Option<(decision_log::LogTarget, f64)>,
    pub shadow: bool,
    /// How bearer-token keys are fetched and verifications remembered.
    pub keys: crate::sources::jwks::KeyOptions,
    /// Serve the web console under `/console/` on the HTTP port.
    pub console: bool,
    /// The query pool's concurrency limit (`--max-concurrent-queries`); `None`: half the
    /// cores, at least one.
    pub max_concurrent_queries: Option<usize>,
    /// How the query pool's threads are scheduled (`--query-priority`).
    pub query_priority: query_pool::QueryPriority,
}

impl App {
    /// An app with no cache, no decision log and no shadow mode.
    pub fn new(policy: Arc<PolicyState>) -> Self {
        Self::assemble(policy, &AppOptions::default(), Metrics::new(), None, None)
    }

    /// An app with every optional part; fails only when the decision log cannot be opened.
    pub fn with_options(policy: Arc<PolicyState>, options: &AppOptions) -> std::io::Result<Self> {
        let metrics = Metrics::new();
        let decision_log = options
            .decision_log
            .as_ref()
            .map(|(target, sample)| {
                decision_log::DecisionLog::start(target, *sample, metrics.decision_log.clone())
            })
            .transpose()?;
        let console = if options.console {
            Some(console::Console::new().map_err(std::io::Error::other)?)
        } else {
            None
        };
        Ok(Self::assemble(
            policy,
            options,
            metrics,
            decision_log,
            console,
        ))
    }

    fn assemble(
        policy: Arc<PolicyState>,
        options: &AppOptions,
        metrics: Metrics,
        decision_log: Option<decision_log::DecisionLog>,
        console: Option<console::Console>,
    ) -> Self {
        let cache = options
            .cache
            .filter(|c| c.capacity > 0)
            .map(|c| cache::DecisionCache::new(c, metrics.cache.clone()));
        let keys = Arc::new(crate::sources::jwks::KeyStore::new(
            options.keys.clone(),
            metrics.keys.clone(),
        ));
        let app = Self {
            policy,
            metrics,
            cache,
            decision_log,
            shadow: options.shadow,
            keys,
            console,
            queries: query_pool::QueryPool::with_priority(
                options
                    .max_concurrent_queries
                    .unwrap_or_else(query_pool::default_limit),
                options.query_priority,
            ),
            ..Self::default()
        };
        if let Some(p) = app.policy.current() {
            app.metrics
                .policy_installed(&p.snapshot.revision, unix_seconds(p.loaded_at));
        }
        app
    }

    /// The verifier handed to the identity step: the key store (keys and cache).
    pub fn verifier(&self) -> &dyn crate::policy::bearer::TokenVerifier {
        &*self.keys
    }

    /// Runs `check` (an HTTP check with [`App::verifier`]); when a bearer token named a
    /// key the issuer's set lacks (or no set is loaded yet), asks for one fetch of the keys
    /// (rate-limited per issuer) and, if it brought new keys, runs `check` once more.
    pub async fn check_with_keys<'s, F>(
        &self,
        check: F,
    ) -> Result<crate::policy::queries::HttpDecision<'s>, crate::policy::RequestError>
    where
        F: Fn() -> Result<crate::policy::queries::HttpDecision<'s>, crate::policy::RequestError>,
    {
        let outcome = check();
        let issuer = match &outcome {
            Ok(o) => match &o.token_rejection {
                Some((issuer, reason)) if reason.wants_keys() => issuer.clone(),
                _ => return outcome,
            },
            Err(_) => return outcome,
        };
        if self.keys.refresh_for(&issuer).await {
            check()
        } else {
            outcome
        }
    }

    /// The caller of a gRPC call, from its `authorization` metadata, through the policy's
    /// bearer sources only (any client can set metadata, so header sources are never
    /// read there). `Ok(None)`: no bearer token. A present but invalid token is
    /// `UNAUTHENTICATED` (counted and logged like every rejection); two different
    /// `authorization` values are `INVALID_ARGUMENT`. This is the one function every
    /// gRPC API uses to identify its caller.
    pub async fn identify_metadata(
        &self,
        snapshot: &crate::policy::Snapshot,
        metadata: &tonic::metadata::MetadataMap,
    ) -> Result<Option<crate::policy::identity::Identity>, tonic::Status> {
        use crate::policy::identity::IdentifyError;
        let values: Vec<&str> = metadata
            .get_all("authorization")
            .iter()
            .map(|v| v.to_str().unwrap_or("\u{fffd}"))
            .collect();
        if values.is_empty() || snapshot.identity.bearer_sources().next().is_none() {
            return Ok(None);
        }
        let joined = values.join(", ");
        let result = self
            .identify_with_keys(|| {
                snapshot.identity.identify_bearer(
                    &joined,
                    self.verifier(),
                    crate::policy::syntax::now(),
                )
            })
            .await;
        match result {
            Ok(found) => Ok(found),
            Err(IdentifyError::Ambiguous(message)) => Err(tonic::Status::invalid_argument(message)),
            Err(IdentifyError::Rejected { reason, .. }) => Err(tonic::Status::unauthenticated(
                format!("noIdentity: bearer token refused ({reason})"),
            )),
        }
    }

    /// Runs `identify` (the identity step of one request, with [`App::verifier`]); when a
    /// bearer token named a key its issuer's set lacks (or no set is loaded yet), asks for
    /// one fetch of the keys (rate-limited per issuer) and, if it brought new keys, runs
    /// `identify` once more, as [`App::check_with_keys`] does for a check. A rejection
    /// that stands is counted.
    pub async fn identify_with_keys<F>(
        &self,
        identify: F,
    ) -> Result<Option<crate::policy::identity::Identity>, crate::policy::identity::IdentifyError>
    where
        F: Fn() -> Result<
            Option<crate::policy::identity::Identity>,
            crate::policy::identity::IdentifyError,
        >,
    {
        use crate::policy::identity::IdentifyError;
        let mut result = identify();
        if let Err(IdentifyError::Rejected { issuer, reason }) = &result
            && reason.wants_keys()
            && self.keys.refresh_for(issuer).await
        {
            result = identify();
        }
        if let Err(IdentifyError::Rejected { issuer, reason }) = &result {
            self.keys.count_rejection(issuer, *reason);
        }
        result
    }

    /// Counts, logs and (for shadow mode) softens a decision on an HTTP-facing path
    /// (ext_authz and the HTTP modes). Returns whether a would-be denial is let through.
    pub fn conclude_http(
        &self,
        ctx: &RequestContext,
        outcome: &crate::policy::queries::HttpDecision<'_>,
        decision_id: &str,
        revision: &str,
    ) -> bool {
        // A shadow route lets through what it decides, not what is malformed: a request
        // whose identity is ambiguous is refused after its route matched, and stays refused.
        let route_shadow = outcome.route.is_some_and(|r| r.shadow)
            && !matches!(
                outcome.decision.reason,
                crate::policy::Reason::Malformed { .. }
            );
        let shadowed = !outcome.decision.allowed && (self.shadow || route_shadow);
        self.record_http(ctx, outcome, Some(decision_id), revision, shadowed);
        shadowed
    }

    /// Traces, counts and logs an HTTP decision; `shadowed` marks a denial let through.
    /// Without a `decision_id` (no deny body carries one), one is made only for the log.
    pub fn record_http(
        &self,
        ctx: &RequestContext,
        outcome: &crate::policy::queries::HttpDecision<'_>,
        decision_id: Option<&str>,
        revision: &str,
        shadowed: bool,
    ) {
        let allowed = outcome.decision.allowed;
        let reason = outcome.decision.reason.kind();
        if let Some((issuer, rejection)) = &outcome.token_rejection {
            self.keys.count_rejection(issuer, *rejection);
        }
        let decision = match (allowed, shadowed) {
            (true, _) => "allow",
            (false, true) => "shadow_deny",
            (false, false) => "deny",
        };
        let elapsed = ctx.started.elapsed();
        crate::telemetry::record(
            &ctx.span,
            decision,
            reason,
            outcome.action.as_deref(),
            outcome.scope.as_deref(),
            revision,
        );
        if shadowed {
            self.metrics.observe_shadow_deny(ctx.api, reason, elapsed);
        } else {
            self.metrics.observe(ctx.api, allowed, reason, elapsed);
        }
        if self.decision_log.is_none() && self.console.is_none() {
            return;
        }
        let decision_id: std::borrow::Cow<'_, str> =
            decision_id.map_or_else(|| self.ids.next().into(), Into::into);
        let time = crate::policy::syntax::format_time(crate::policy::syntax::now());
        let (role, assignment_id, deny_assignment) = reason_names(&outcome.decision.reason);
        if let Some(console) = &self.console {
            console.feed.publish(console::feed::FeedItem {
                decision_id: decision_id.clone().into_owned(),
                time: time.clone(),
                api: ctx.api,
                principal: outcome.principal.clone(),
                action: outcome.action.clone(),
                scope: outcome.scope.clone(),
                data_action: outcome.data_action,
                allowed,
                shadow: shadowed,
                reason,
                detail: role.or(deny_assignment).map(str::to_owned),
            });
        }
        if let Some(log) = &self.decision_log {
            log.record(&decision_log::DecisionRecord {
                decision_id: &decision_id,
                time,
                api: ctx.api,
                principal: outcome.principal.as_deref(),
                action: outcome.action.as_deref(),
                scope: outcome.scope.as_deref(),
                allowed,
                reason,
                role,
                assignment_id,
                deny_assignment,
                shadow: shadowed,
                revision,
                latency_us: u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
                trace_id: ctx.trace_id,
                token_rejection: outcome.token_rejection.as_ref().map(|(_, r)| r.as_str()),
            });
        }
    }

    /// Counts and logs a decision of the native API.
    pub fn conclude_check(
        &self,
        ctx: &RequestContext,
        req: &crate::policy::CheckRequest<'_>,
        decision: &crate::policy::Decision<'_>,
        revision: &str,
    ) {
        let reason = decision.reason.kind();
        let elapsed = ctx.started.elapsed();
        let verdict = if decision.allowed { "allow" } else { "deny" };
        crate::telemetry::record(
            &ctx.span,
            verdict,
            reason,
            Some(req.action),
            Some(req.scope),
            revision,
        );
        self.metrics
            .observe(ctx.api, decision.allowed, reason, elapsed);
        self.log_check(ctx, req, decision, revision);
    }

    /// Writes the decision log line of one native-API decision (when the log is on).
    pub fn log_check(
        &self,
        ctx: &RequestContext,
        req: &crate::policy::CheckRequest<'_>,
        decision: &crate::policy::Decision<'_>,
        revision: &str,
    ) {
        if self.decision_log.is_none() && self.console.is_none() {
            return;
        }
        let reason = decision.reason.kind();
        let decision_id = self.ids.next();
        let time = crate::policy::syntax::format_time(crate::policy::syntax::now());
        let (role, assignment_id, deny_assignment) = reason_names(&decision.reason);
        if let Some(console) = &self.console {
            console.feed.publish(console::feed::FeedItem {
                decision_id: decision_id.clone(),
                time: time.clone(),
                api: ctx.api,
                principal: Some(req.principal.to_owned()),
                action: Some(req.action.to_owned()),
                scope: Some(req.scope.to_owned()),
                data_action: req.data_action,
                allowed: decision.allowed,
                shadow: false,
                reason,
                detail: role.or(deny_assignment).map(str::to_owned),
            });
        }
        if let Some(log) = &self.decision_log {
            let elapsed = ctx.started.elapsed();
            log.record(&decision_log::DecisionRecord {
                decision_id: &decision_id,
                time,
                api: ctx.api,
                principal: Some(req.principal),
                action: Some(req.action),
                scope: Some(req.scope),
                allowed: decision.allowed,
                reason,
                role,
                assignment_id,
                deny_assignment,
                shadow: false,
                revision,
                latency_us: u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
                trace_id: ctx.trace_id,
                token_rejection: None,
            });
        }
    }

    /// Swaps in a new policy: one atomic store; requests in flight keep the old one, which
    /// is returned (its data is freed on [`crate::live::reaper`]'s thread, whoever drops it
    /// last).
    pub fn install(
        &self,
        snapshot: crate::policy::Snapshot,
    ) -> Option<Arc<crate::live::LoadedPolicy>> {
        self.install_at(snapshot, 0)
    }

    /// [`Self::install`] for a policy read from the store at `store_revision`.
    pub fn install_at(
        &self,
        snapshot: crate::policy::Snapshot,
        store_revision: i64,
    ) -> Option<Arc<crate::live::LoadedPolicy>> {
        let revision = snapshot.revision.clone();
        let incremental = snapshot.has_overlay();
        let previous = self.policy.install_at(snapshot, store_revision);
        if let Some(cache) = &self.cache {
            cache.clear();
        }
        self.metrics
            .policy_installed(&revision, unix_seconds(std::time::SystemTime::now()));
        // A store's assignment writes install one overlay each (hundreds a second under
        // write load): counted in the metrics, logged only at debug level.
        if incremental {
            tracing::debug!(%revision, store_revision, "policy installed (store changes)");
        } else {
            tracing::info!(%revision, "policy installed");
        }
        previous
    }

    /// Evaluates one request on `policy`, through the decision cache when there is one.
    pub fn decide(
        &self,
        policy: &crate::live::LoadedPolicy,
        req: &crate::policy::CheckRequest<'_>,
    ) -> Result<crate::policy::Verdict, crate::policy::RequestError> {
        match &self.cache {
            Some(cache) => cache.decide(policy.generation, &policy.snapshot, req),
            None => policy.snapshot.verdict(req),
        }
    }

    /// Records a rejected policy; the last good one keeps serving.
    pub fn reject(&self, message: String) {
        tracing::warn!(error = %message, "policy rejected; the last good policy keeps serving");
        self.metrics
            .reloads
            .get_or_create(&metrics::ResultLabels { result: "failure" })
            .inc();
        self.policy.record_error(message);
    }
}

/// The loaders (file and bundle sources, the store) install into the app through these:
/// they never name the server.
impl crate::live::PolicySink for App {
    fn policy(&self) -> &PolicyState {
        &self.policy
    }

    fn install_at(
        &self,
        snapshot: crate::policy::Snapshot,
        store_revision: i64,
    ) -> Option<Arc<crate::live::LoadedPolicy>> {
        App::install_at(self, snapshot, store_revision)
    }

    fn reject(&self, message: String) {
        App::reject(self, message);
    }

    fn store_revision_reached(&self, revision: i64) {
        self.metrics.store_revision.set(revision);
    }
}

impl crate::store::StoreHost for App {
    fn store(&self) -> Option<&Arc<crate::store::Store>> {
        self.store.get()
    }
}

/// The role, assignment id and deny assignment a reason names.
fn reason_names<'r>(
    reason: &'r crate::policy::Reason<'_>,
) -> (Option<&'r str>, Option<&'r str>, Option<&'r str>) {
    match reason {
        crate::policy::Reason::RoleAssignment {
            role,
            assignment_id,
            ..
        } => (Some(role), *assignment_id, None),
        crate::policy::Reason::DenyAssignment { deny_assignment } => {
            (None, None, Some(deny_assignment))
        }
        _ => (None, None, None),
    }
}

fn unix_seconds(t: std::time::SystemTime) -> f64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// What one authorization request carries besides its question: the API, when it started,
/// the caller's trace id (from `traceparent`) and, when tracing is on, its span.
#[derive(Debug)]
pub struct RequestContext {
    pub api: &'static str,
    pub started: std::time::Instant,
    pub trace_id: Option<opentelemetry::trace::TraceId>,
    pub span: Option<tracing::Span>,
}

impl RequestContext {
    /// Starts the clock; `lookup` reads the caller's headers or gRPC metadata.
    pub fn begin<'a>(api: &'static str, lookup: impl Fn(&str) -> Option<&'a str>) -> Self {
        Self {
            api,
            started: std::time::Instant::now(),
            trace_id: lookup("traceparent").and_then(decision_log::trace_id),
            span: crate::telemetry::check_span(api, lookup),
        }
    }
}

/// Addresses the server is listening on.
#[derive(Debug, Clone, Copy)]
pub struct BoundAddrs {
    pub grpc: SocketAddr,
    pub http: SocketAddr,
}

/// Runs the gRPC and HTTP listeners until `shutdown` completes, then drains: health turns
/// NOT_SERVING and readiness false at once, both listeners keep serving for
/// [`ServerOptions::shutdown_delay`], then stop accepting; requests and streams in flight
/// get [`ServerOptions::shutdown_grace`] to finish before their connections are cut.
pub async fn run(
    app: Arc<App>,
    options: ServerOptions,
    grpc: TcpListener,
    http: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    // The bearer sources' key sets follow the serving policy.
    app.keys.follow(&app.policy);
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    let authorizer = AuthorizerServer::new(native::Authorizer::new(
        app.clone(),
        options.max_message_bytes,
    ))
    .max_decoding_message_size(options.max_message_bytes)
    .max_encoding_message_size(options.max_message_bytes);
    let admin =
        crate::proto::iotauthz::v1::admin_server::AdminServer::new(admin::Admin::new(app.clone()))
            .max_decoding_message_size(options.max_message_bytes)
            .max_encoding_message_size(options.max_message_bytes);
    let ext_authz = AuthorizationServer::new(ext_authz::ExtAuthz::new(app.clone()))
        .max_decoding_message_size(options.max_message_bytes)
        .max_encoding_message_size(options.max_message_bytes);
    // Health follows the policy: NOT_SERVING until the first good policy is loaded, and
    // again once draining starts. The lock keeps a late first policy from turning a
    // draining server SERVING again.
    let health_lock = Arc::new(tokio::sync::Mutex::new(()));
    follow_readiness(&app, &health_reporter, &health_lock).await;
    let reflection = |b: tonic_reflection::server::Builder<'static>| {
        b.register_encoded_file_descriptor_set(IOTAUTHZ_DESCRIPTOR)
            .register_encoded_file_descriptor_set(ENVOY_AUTH_DESCRIPTOR)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    // Reflection asks about symbols and files: a few KiB at most. A bounded request keeps
    // a huge symbol from being decoded at all; bounded, escaped error messages keep a
    // smaller one from being echoed back whole (src/server/reflection.rs).
    let reflection_v1 = reflection::BoundedErrors(
        reflection(tonic_reflection::server::Builder::configure())
            .build_v1()
            .context("building reflection v1")?
            .max_decoding_message_size(reflection::REQUEST_BYTES),
    );
    let reflection_v1alpha = reflection::BoundedErrors(
        reflection(tonic_reflection::server::Builder::configure())
            .build_v1alpha()
            .context("building reflection v1alpha")?
            .max_decoding_message_size(reflection::REQUEST_BYTES),
    );

    let mut builder = Server::builder()
        .concurrency_limit_per_connection(options.concurrency_per_connection)
        .max_concurrent_streams(options.max_concurrent_streams)
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        // An HTTP/2 connection that only answers PINGs is still retired: GOAWAY at its
        // age, closed after the grace whatever it still carries.
        .max_connection_age(options.max_connection_age)
        .max_connection_age_grace(options.shutdown_grace)
        .http2_max_header_list_size(u32::try_from(options.max_header_bytes).unwrap_or(u32::MAX))
        .tcp_nodelay(true);
    if let Some(tls) = &options.tls {
        builder = builder
            .tls_config(tls_config(tls, options.opening_timeout)?)
            .context("configuring TLS")?;
    }

    // One shutdown signal fans out to both listeners: draining at once, the listeners
    // close after the delay, and connections still open after the grace period are cut.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (cut_tx, cut_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(drain(
        shutdown,
        app.clone(),
        (health_reporter.clone(), health_lock),
        (options.shutdown_delay, options.shutdown_grace),
        (stop_tx, cut_tx),
    ));
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };

    let grpc_cut = cut_rx.clone();
    let opening_timeout = options.opening_timeout;
    let grpc_idle_timeout = options.grpc_idle_timeout;
    // Each listener has its own limit, so a flood of gRPC connections cannot take the
    // slots that health probes and metrics need on the HTTP port.
    let limit = (options.max_connections).clamp(1, tokio::sync::Semaphore::MAX_PERMITS);
    let grpc_connections = Arc::new(tokio::sync::Semaphore::new(limit));
    let grpc_incoming = TcpIncoming::from(grpc)
        .with_nodelay(Some(true))
        .filter_map(move |io| match io {
            Ok(io) => {
                let permit = admit_connection(&grpc_connections)?;
                let io = Severable::new(io, &grpc_cut)
                    .opening(GRPC_OPENING, opening_timeout)
                    .idle_after(grpc_idle_timeout);
                Some(Ok(io.holding(permit)))
            }
            Err(e) => Some(Err(e)),
        });
    let grpc_server = builder
        .layer(activity::ActivityLayer)
        .layer(deadline::DeadlineLayer::new(options.request_timeout))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(authorizer)
        .add_service(admin)
        .add_service(ext_authz)
        .serve_with_incoming_shutdown(grpc_incoming, stopped(stop_rx.clone()));
    let http_listener = SeverableListener {
        inner: http,
        cut: cut_rx,
        opening_timeout,
        pace: Pace {
            exchange: options.header_read_timeout,
            idle: options.idle_timeout,
            max_age: options.max_connection_age,
            max_request_bytes: options.max_header_bytes,
        },
        connections: Arc::new(tokio::sync::Semaphore::new(limit)),
        probes: Arc::new(tokio::sync::Semaphore::new(PROBE_SLOTS)),
    };
    let http_server = axum::serve(http_listener, http::router(app.clone()))
        .with_graceful_shutdown(stopped(stop_rx));
    let (g, h) = tokio::join!(grpc_server, http_server);
    g.context("gRPC server")?;
    h.context("HTTP server")?;
    Ok(())
}

/// Sets gRPC health from the policy: SERVING once a policy is loaded (at once, or when the
/// first one arrives, unless draining started meanwhile).
async fn follow_readiness(
    app: &Arc<App>,
    health_reporter: &tonic_health::server::HealthReporter,
    health_lock: &Arc<tokio::sync::Mutex<()>>,
) {
    if app.policy.is_ready() {
        set_health(health_reporter, ServingStatus::Serving).await;
        return;
    }
    set_health(health_reporter, ServingStatus::NotServing).await;
    let mut revisions = app.policy.subscribe();
    let ready_health = health_reporter.clone();
    let ready_app = app.clone();
    let ready_lock = health_lock.clone();
    tokio::spawn(async move {
        if revisions.wait_for(Option::is_some).await.is_ok() {
            let _guard = ready_lock.lock().await;
            if !ready_app.draining.load(Ordering::Relaxed) {
                set_health(&ready_health, ServingStatus::Serving).await;
            }
        }
    });
}

/// The shutdown sequence, once `shutdown` resolves: draining (unready) at once, the
/// listeners stopped after `delay` (`stop`), the connections still open cut after `grace`
/// (`cut`).
async fn drain(
    shutdown: impl Future<Output = ()>,
    app: Arc<App>,
    (health, health_lock): (
        tonic_health::server::HealthReporter,
        Arc<tokio::sync::Mutex<()>>,
    ),
    (delay, grace): (Duration, Duration),
    (stop_tx, cut_tx): (
        tokio::sync::watch::Sender<bool>,
        tokio::sync::watch::Sender<bool>,
    ),
) {
    shutdown.await;
    {
        let _guard = health_lock.lock().await;
        app.draining.store(true, Ordering::Relaxed);
        set_health(&health, ServingStatus::NotServing).await;
    }
    if !delay.is_zero() {
        tracing::info!(
            delay_ms = delay.as_millis(),
            "draining: still serving until the delay ends"
        );
        tokio::time::sleep(delay).await;
    }
    let _ = stop_tx.send(true);
    tokio::time::sleep(grace).await;
    if cut_tx.send(true).is_ok() {
        tracing::info!(
            grace_ms = grace.as_millis(),
            "grace period over: closing the connections still open"
        );
    }
}

/// Every health service name: the server as a whole (`""`) and each service it serves.
const HEALTH_SERVICES: [&str; 3] = [
    <AuthorizerServer<native::Authorizer> as NamedService>::NAME,
    <AuthorizationServer<ext_authz::ExtAuthz> as NamedService>::NAME,
    "",
];

async fn set_health(health: &tonic_health::server::HealthReporter, status: ServingStatus) {
    for service in HEALTH_SERVICES {
        health.set_service_status(service, status).await;
    }
}

/// A slot for a new connection, or `None` (logged) when every slot is taken: the caller
/// drops, so closes, the connection.
fn admit_connection(
    connections: &Arc<tokio::sync::Semaphore>,
) -> Option<tokio::sync::OwnedSemaphorePermit> {
    let permit = connections.clone().try_acquire_owned().ok();
    if permit.is_none() {
        tracing::debug!("connection limit reached: a new connection is closed");
    }
    permit
}

/// HTTP port: connection slots beyond `--max-connections` kept for health probes, so that
/// `/healthz` and `/readyz` answer while clients hold every ordinary slot. A connection in
/// one must open with a probe's request line ([`PROBE_LINES`]) and send its whole request
/// within [`PROBE_TIMEOUT`]; it is closed after its one answer.
pub const PROBE_SLOTS: usize = 8;
/// How long a connection in a probe slot has to send its request.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// The request lines a connection in a probe slot may open with (a probe's `GET` of
/// `/healthz` or `/readyz`, with or without a query).
const PROBE_LINES: [&[u8]; 4] = [
    b"GET /healthz ",
    b"GET /healthz?",
    b"GET /readyz ",
    b"GET /readyz?",
];

/// A connection in a probe slot: the opening bytes seen so far, until they are a probe's
/// request line, and whether its answer has been written.
#[derive(Debug, Default)]
struct ProbeGate {
    seen: Vec<u8>,
    passed: bool,
    /// Answer bytes have been written; `answered` once they are flushed.
    wrote: bool,
    answered: bool,
    /// The last reader's waker: woken once the answer is written, so a read already
    /// waiting sees the end of the stream.
    reader: Option<std::task::Waker>,
}

impl ProbeGate {
    /// Checks the bytes just read; an error once they cannot open a probe's request.
    fn read(&mut self, arrived: &[u8]) -> Option<std::io::Error> {
        if self.passed {
            return None;
        }
        let longest = PROBE_LINES.iter().map(|l| l.len()).max().unwrap_or(0);
        let room = longest.saturating_sub(self.seen.len());
        self.seen
            .extend_from_slice(arrived.get(..room.min(arrived.len())).unwrap_or_default());
        let seen = self.seen.as_slice();
        if PROBE_LINES.iter().any(|l| seen.starts_with(l)) {
            self.passed = true;
            self.seen = Vec::new();
            return None;
        }
        let may_still = PROBE_LINES
            .iter()
            .any(|l| l.starts_with(seen.get(..seen.len().min(l.len())).unwrap_or_default()));
        (!may_still).then(|| {
            std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                "a connection in a probe slot sent no probe",
            )
        })
    }
}

/// The bytes a gRPC connection opens with: the HTTP/2 connection preface.
const GRPC_OPENING: usize = 24;
/// The bytes an HTTP/1 connection opens with, at the least: `GET / HTTP/1.1` and CRLF.
const HTTP_OPENING: usize = 16;

/// A connection that fails its reads and writes once `cut` turns true, so the server
/// drops it (with whatever streams it still carries) at the end of the grace period; and,
/// with [`Severable::opening`], one that fails its reads when its opening bytes do not
/// arrive in time.
struct Severable<T> {
    io: T,
    cut: Pin<Box<dyn Future<Output = ()> + Send>>,
    severed: bool,
    /// Until the opening bytes have arrived: how many are still awaited, and by when.
    opening: Option<(usize, Pin<Box<tokio::time::Sleep>>)>,
    /// The connection's slot under the connection limit, given back when it closes.
    _slot: Option<tokio::sync::OwnedSemaphorePermit>,
    /// HTTP/1 request pacing (the HTTP port).
    pacing: Option<Pacing>,
    /// The idle timeout of a gRPC connection, over the requests its [`activity::Activity`]
    /// counts.
    idle: Option<activity::IdleCheck>,
    /// HTTP port: a connection in a probe slot (one probe request, then closed).
    probe: Option<ProbeGate>,
}

/// Time and size limits of an HTTP/1 connection on the HTTP port, where every request is
/// a request line and headers with no body, answered before the next is read.
#[derive(Debug, Clone, Copy)]
struct Pace {
    /// From a request's first byte to its answer's first byte.
    exchange: Duration,
    /// Between an answer and the next request.
    idle: Duration,
    /// The connection's whole life, checked between requests.
    max_age: Duration,
    /// Bytes read from a request's first byte to its answer's first byte.
    max_request_bytes: usize,
}

/// Where a connection is in its [`Pace`]. The timer is set for the current deadline
/// whenever that changes (a request begins, an answer starts), and checked when it fires.
struct Pacing {
    pace: Pace,
    born: tokio::time::Instant,
    last_answer: tokio::time::Instant,
    /// When the request being read began, and its header bytes so far.
    request: Option<(tokio::time::Instant, usize)>,
    /// The last bytes of the request's head read so far (`\r\n\r\n` ends it, across
    /// reads), or `None` once the head has ended: a body is not header bytes.
    head_tail: Option<[u8; 3]>,
    /// How many of the connection's first bytes match the HTTP/2 preface's request line,
    /// until they differ (`None`): the HTTP port speaks HTTP/1.1 only, since its limits
    /// are per request and answer, which HTTP/2's streams would sidestep.
    preface: Option<usize>,
    timer: Pin<Box<tokio::time::Sleep>>,
}

/// The request line an HTTP/2 client opens with (prior knowledge, h2c).
const H2_PREFACE_LINE: &[u8] = b"PRI * HTTP/2.0\r\n";

/// Where a request's head ends in the bytes just read (`arrived`), given the last three
/// bytes of the head read before them (`window`): `Ok(n)`, the head's last byte is
/// `arrived[n - 1]` (its `\r\n\r\n` perhaps begun in an earlier read), or `Err` with the
/// last three head bytes so far. One `memmem` search, not a step per byte: this runs on
/// every read of the HTTP port.
fn head_end(window: [u8; 3], arrived: &[u8]) -> Result<usize, [u8; 3]> {
    const END: &[u8] = b"\r\n\r\n";
    // A terminator across the boundary ends within the first three bytes read.
    let mut joined = [0u8; 6];
    let first = arrived.len().min(3);
    joined[..3].copy_from_slice(&window);
    joined[3..3 + first].copy_from_slice(arrived.get(..first).unwrap_or_default());
    if let Some(at) = memchr::memmem::find(joined.get(..3 + first).unwrap_or_default(), END) {
        return Ok(at + END.len() - 3);
    }
    if let Some(at) = memchr::memmem::find(arrived, END) {
        return Ok(at + END.len());
    }
    let tail = joined.get(first..first + 3).unwrap_or_default();
    let mut next = [0u8; 3];
    if arrived.len() >= 3 {
        next.copy_from_slice(arrived.get(arrived.len() - 3..).unwrap_or_default());
    } else {
        next.copy_from_slice(tail);
    }
    Err(next)
}

impl Pacing {
    fn new(pace: Pace) -> Self {
        let now = tokio::time::Instant::now();
        Self {
            pace,
            born: now,
            last_answer: now,
            request: None,
            head_tail: Some([0; 3]),
            preface: Some(0),
            timer: Box::pin(tokio::time::sleep(pace.idle.min(pace.max_age))),
        }
    }

    /// Sets the timer for the deadline of the connection's new state.
    fn rearm(&mut self) {
        let deadline = self.deadline();
        self.timer.as_mut().reset(deadline);
    }

    fn deadline(&self) -> tokio::time::Instant {
        match self.request {
            Some((start, _)) => start + self.pace.exchange,
            None => (self.last_answer + self.pace.idle).min(self.born + self.pace.max_age),
        }
    }

    /// An error once the current deadline has passed; otherwise the timer is armed for it
    /// (and registered with `cx`).
    fn check(&mut self, cx: &mut Context<'_>) -> Option<std::io::Error> {
        while self.timer.as_mut().poll(cx).is_ready() {
            let deadline = self.deadline();
            if tokio::time::Instant::now() >= deadline {
                let what = if self.request.is_some() {
                    "the request was not read in time"
                } else {
                    "the connection was idle or too old"
                };
                return Some(std::io::Error::new(std::io::ErrorKind::TimedOut, what));
            }
            self.timer.as_mut().reset(deadline);
        }
        None
    }

    /// Counts the bytes just read (`arrived`) against the header limit, up to the end of
    /// the request's head; a body streams past uncounted.
    fn read(&mut self, arrived: &[u8]) -> Option<std::io::Error> {
        if arrived.is_empty() {
            return None;
        }
        if let Some(matched) = self.preface {
            let rest = &H2_PREFACE_LINE[matched..];
            let n = rest.len().min(arrived.len());
            self.preface = (rest[..n] == arrived[..n]).then_some(matched + n);
            if self.preface == Some(H2_PREFACE_LINE.len()) {
                return Some(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "HTTP/2 is not served on the HTTP port",
                ));
            }
        }
        if self.request.is_none() {
            self.request = Some((tokio::time::Instant::now(), 0));
            self.rearm();
        }
        let (_, read) = self.request.as_mut()?;
        let window = self.head_tail?;
        match head_end(window, arrived) {
            Ok(n) => {
                *read += n;
                self.head_tail = None;
            }
            Err(window) => {
                *read += arrived.len();
                self.head_tail = Some(window);
            }
        }
        (*read > self.pace.max_request_bytes).then(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "the request's headers are too large",
            )
        })
    }

    fn answered(&mut self) {
        self.request = None;
        self.head_tail = Some([0; 3]);
        self.last_answer = tokio::time::Instant::now();
        self.rearm();
    }
}

impl<T> Severable<T> {
    fn new(io: T, cut: &tokio::sync::watch::Receiver<bool>) -> Self {
        let mut cut = cut.clone();
        Self {
            io,
            // A dropped sender (the server has returned) cuts as well.
            cut: Box::pin(async move {
                let _ = cut.wait_for(|c| *c).await;
            }),
            severed: false,
            opening: None,
            _slot: None,
            pacing: None,
            idle: None,
            probe: None,
        }
    }

    /// Holds the connection to one probe request ([`PROBE_SLOTS`]).
    fn probe_only(mut self) -> Self {
        self.probe = Some(ProbeGate::default());
        self
    }

    /// Fails the connection's reads once it has had no request in flight for `timeout`
    /// (the requests counted by [`activity::ActivityLayer`], which finds the connection's
    /// activity in its connect info).
    fn idle_after(mut self, timeout: Duration) -> Self {
        let activity = Arc::new(activity::Activity::new());
        self.idle = Some(activity::IdleCheck::new(activity, timeout));
        self
    }

    /// Holds the connection to `pace` from now on.
    fn paced(mut self, pace: Pace) -> Self {
        self.pacing = Some(Pacing::new(pace));
        self
    }

    /// Holds `slot` for as long as the connection lives.
    fn holding(mut self, slot: tokio::sync::OwnedSemaphorePermit) -> Self {
        self._slot = Some(slot);
        self
    }

    /// Fails the connection's reads unless its first `bytes` bytes arrive within
    /// `timeout` of now.
    fn opening(mut self, bytes: usize, timeout: Duration) -> Self {
        self.opening = Some((bytes, Box::pin(tokio::time::sleep(timeout))));
        self
    }

    /// The connection has written (part of) an answer.
    fn answered(&mut self) {
        if let Some(p) = self.pacing.as_mut() {
            p.answered();
        }
        if let Some(p) = self.probe.as_mut() {
            p.wrote = true;
        }
    }

    /// Whether the connection is cut; registers the task to be woken when it is.
    fn is_cut(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.severed && self.cut.as_mut().poll(cx).is_ready() {
            self.severed = true;
        }
        self.severed
    }
}

fn severed() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::ConnectionAborted,
        "shutdown grace period over",
    )
}

impl<T: AsyncRead + Unpin> AsyncRead for Severable<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.is_cut(cx) {
            return Poll::Ready(Err(severed()));
        }
        if let Some((_, deadline)) = &mut self.opening
            && deadline.as_mut().poll(cx).is_ready()
        {
            return Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the connection sent no opening bytes in time",
            )));
        }
        if let Some(e) = self.pacing.as_mut().and_then(|p| p.check(cx)) {
            return Poll::Ready(Err(e));
        }
        if let Some(e) = self.idle.as_mut().and_then(|i| i.check(cx)) {
            return Poll::Ready(Err(e));
        }
        if let Some(probe) = self.probe.as_mut() {
            if probe.answered {
                // A probe slot serves one request: then the end of the stream.
                return Poll::Ready(Ok(()));
            }
            probe.reader = Some(cx.waker().clone());
        }
        let before = buf.filled().len();
        let read = Pin::new(&mut self.io).poll_read(cx, buf);
        let arrived = buf.filled().len() - before;
        let pacing = self.pacing.as_mut();
        if let Some(e) = pacing.and_then(|p| p.read(&buf.filled()[before..])) {
            return Poll::Ready(Err(e));
        }
        let probe = self.probe.as_mut();
        if let Some(e) = probe.and_then(|p| p.read(&buf.filled()[before..])) {
            return Poll::Ready(Err(e));
        }
        if let Some((awaited, _)) = &mut self.opening {
            *awaited = awaited.saturating_sub(arrived);
            if *awaited == 0 {
                self.opening = None;
            }
        }
        read
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Severable<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if self.is_cut(cx) {
            return Poll::Ready(Err(severed()));
        }
        let written = Pin::new(&mut self.io).poll_write(cx, buf);
        if let Poll::Ready(Ok(1..)) = &written {
            self.answered();
        }
        written
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        if self.is_cut(cx) {
            return Poll::Ready(Err(severed()));
        }
        let written = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(1..)) = &written {
            self.answered();
        }
        written
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if self.is_cut(cx) {
            return Poll::Ready(Err(severed()));
        }
        let flushed = Pin::new(&mut self.io).poll_flush(cx);
        if let (Poll::Ready(Ok(())), Some(p)) = (&flushed, self.probe.as_mut())
            && p.wrote
        {
            p.answered = true;
            if let Some(reader) = p.reader.take() {
                reader.wake();
            }
        }
        flushed
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

impl<T: Connected> Connected for Severable<T> {
    type ConnectInfo = activity::ConnInfo<T::ConnectInfo>;

    fn connect_info(&self) -> Self::ConnectInfo {
        activity::ConnInfo {
            inner: self.io.connect_info(),
            activity: self.idle.as_ref().map(|i| i.activity().clone()),
        }
    }
}

/// The HTTP listener, its connections [`Severable`].
struct SeverableListener {
    inner: TcpListener,
    cut: tokio::sync::watch::Receiver<bool>,
    opening_timeout: Duration,
    pace: Pace,
    connections: Arc<tokio::sync::Semaphore>,
    /// [`PROBE_SLOTS`] more, for health probes only.
    probes: Arc<tokio::sync::Semaphore>,
}

impl axum::serve::Listener for SeverableListener {
    type Io = Severable<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let (io, addr) = axum::serve::Listener::accept(&mut self.inner).await;
            if let Some(permit) = admit_connection(&self.connections) {
                let io = Severable::new(io, &self.cut)
                    .opening(HTTP_OPENING, self.opening_timeout)
                    .paced(self.pace);
                return (io.holding(permit), addr);
            }
            // Every ordinary slot is taken: a probe slot, for one health probe sent at once.
            // Over that too: closed at once (dropped), and the next one waited.
            let Ok(permit) = self.probes.clone().try_acquire_owned() else {
                continue;
            };
            let pace = Pace {
                exchange: self.pace.exchange.min(PROBE_TIMEOUT),
                ..self.pace
            };
            let io = Severable::new(io, &self.cut)
                .opening(HTTP_OPENING, self.opening_timeout.min(PROBE_TIMEOUT))
                .paced(pace)
                .probe_only();
            return (io.holding(permit), addr);
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// The TLS settings; a handshake not done within `handshake` is dropped (the opening
/// timeout: below TLS, the opening bytes are the ClientHello's, so without this a client
/// could send a few and hold its connection).
fn tls_config(tls: &TlsFiles, handshake: Duration) -> anyhow::Result<ServerTlsConfig> {
    let read = |p: &PathBuf| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
    let mut config = ServerTlsConfig::new()
        .identity(Identity::from_pem(read(&tls.cert)?, read(&tls.key)?))
        .timeout(handshake);
    if let Some(ca) = &tls.client_ca {
        config = config.client_ca_root(Certificate::from_pem(read(ca)?));
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `head_end` finds the first `\r\n\r\n` as the byte-at-a-time scan it replaced did,
    /// however the bytes are split into reads.
    #[test]
    fn the_head_end_is_found_across_any_split_of_reads() {
        fn scan(mut window: [u8; 3], arrived: &[u8]) -> Result<usize, [u8; 3]> {
            for (i, &b) in arrived.iter().enumerate() {
                if window == *b"\r\n\r" && b == b'\n' {
                    return Ok(i + 1);
                }
                window = [window[1], window[2], b];
            }
            Err(window)
        }
        let requests: [&[u8]; 5] = [
            b"GET / HTTP/1.1\r\nhost: a\r\n\r\nbody\r\n\r\n",
            b"GET / HTTP/1.1\r\n\r\n",
            b"\r\n\r\n",
            b"\r\r\n\r\n\n\r\n\r",
            b"GET / HTTP/1.1\r\nx: \r\n\rx\r\n\n\r\n",
        ];
        for request in requests {
            for a in 0..=request.len() {
                for b in a..=request.len() {
                    let (mut ours, mut theirs) = (Err([0; 3]), Err([0; 3]));
                    for part in [&request[..a], &request[a..b], &request[b..]] {
                        if let (Err(w1), Err(w2)) = (ours, theirs) {
                            ours = head_end(w1, part)
                                .map(|n| n + (part.as_ptr() as usize - request.as_ptr() as usize));
                            theirs = scan(w2, part)
                                .map(|n| n + (part.as_ptr() as usize - request.as_ptr() as usize));
                        }
                    }
                    assert_eq!(ours, theirs, "{request:?} split at {a} and {b}");
                }
            }
        }
    }

    /// An id is the first 16 bytes of SHA-256(key, counter in little endian), in hex.
    #[test]
    fn a_decision_id_is_the_hex_of_the_first_half_of_its_digest() {
        let ids = DecisionIds {
            key: [7; 32],
            counter: AtomicU64::new(0),
        };
        for n in 0u64..3 {
            let digest = sha2::Sha256::new()
                .chain_update([7; 32])
                .chain_update(n.to_le_bytes())
                .finalize();
            let want: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
            assert_eq!(ids.next(), want);
        }
    }

    /// `--max-concurrent-queries` sets the query pool's limit (0 is refused); without it,
    /// half the cores, at least one.
    #[test]
    fn the_query_pool_limit_comes_from_the_flag() {
        use clap::Parser as _;
        let parse = |extra: &[&str]| {
            let args = ["iot-authz", "serve"].iter().chain(extra).copied();
            match crate::cli::Cli::try_parse_from(args).map(|c| c.command) {
                Ok(crate::cli::Command::Serve(serve)) => Ok(serve.max_concurrent_queries),
                Ok(_) => Err("not serve".to_owned()),
                Err(e) => Err(e.to_string()),
            }
        };
        assert_eq!(parse(&["--max-concurrent-queries", "3"]), Ok(Some(3)));
        assert_eq!(parse(&[]), Ok(None));
        assert!(parse(&["--max-concurrent-queries", "0"]).is_err());
        let app = |limit| {
            App::with_options(
                Arc::new(PolicyState::new()),
                &AppOptions {
                    max_concurrent_queries: limit,
                    ..AppOptions::default()
                },
            )
            .unwrap()
        };
        assert_eq!(app(Some(3)).queries.limit(), 3);
        assert_eq!(
            app(None).queries.limit(),
            query_pool::QueryPool::default().limit()
        );
    }
}
