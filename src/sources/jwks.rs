//! Keys for the `bearer` identity sources (SPEC §13): one task per issuer keeps its key set
//! fresh (a watched JWKS file, a JWKS URL, or the issuer's OpenID discovery document), and
//! [`KeyStore`] verifies tokens with them, remembering good verifications until the token
//! expires so that a hot token costs no signature check.
//!
//! A fetch that fails keeps the last good key set. A token with a `kid` no key has makes
//! the request path ask for one fetch now ([`KeyStore::refresh_for`]), at most once per
//! [`KeyOptions::unknown_kid_interval`] per issuer.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use serde::Deserialize;
use tokio::sync::{Notify, watch};

use crate::policy::bearer::{self, BearerSource, JwksLocation, KeySet, Rejection, Verified};
use crate::policy::identity::IdentityConfig;
use crate::policy::syntax::{Instant, escape};

/// How keys are fetched and verifications remembered.
#[derive(Debug, Clone)]
pub struct KeyOptions {
    /// Refresh interval when the server sends no `Cache-Control: max-age`.
    pub default_refresh: Duration,
    /// Bounds on the refresh interval a `max-age` may set.
    pub min_refresh: Duration,
    pub max_refresh: Duration,
    /// First wait after a failed fetch (doubling up to `max_refresh`, and at most 5 minutes).
    pub retry: Duration,
    /// A `kid` no key has triggers at most one fetch per issuer this often.
    pub unknown_kid_interval: Duration,
    /// Time limit for one HTTP request, body included.
    pub timeout: Duration,
    /// Largest JWKS or discovery document, in bytes.
    pub max_bytes: u64,
    /// Verified tokens remembered (0: none).
    pub cache_capacity: u64,
    /// How often a JWKS file is checked even without a file-system event.
    pub file_poll: Duration,
}

impl Default for KeyOptions {
    fn default() -> Self {
        Self {
            default_refresh: Duration::from_secs(300),
            min_refresh: Duration::from_secs(60),
            max_refresh: Duration::from_secs(24 * 3600),
            retry: Duration::from_secs(5),
            unknown_kid_interval: Duration::from_secs(30),
            timeout: Duration::from_secs(10),
            max_bytes: 1024 * 1024,
            cache_capacity: 100_000,
            file_poll: Duration::from_secs(30),
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct RejectionLabels {
    pub issuer: String,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct FetchLabels {
    pub issuer: String,
    pub result: &'static str,
}

/// The counters of the key store (registered by `server::metrics`).
#[derive(Clone, Debug, Default)]
pub struct KeyCounters {
    pub rejections: Family<RejectionLabels, Counter>,
    pub fetches: Family<FetchLabels, Counter>,
    pub cache_hits: Counter,
    pub cache_misses: Counter,
}

/// The live key set of one issuer and the task that keeps it.
struct IssuerKeys {
    location: JwksLocation,
    keys: ArcSwapOption<KeySet>,
    /// Shared with the task, which holds no strong reference while it waits: dropping the
    /// last `Arc<IssuerKeys>` (the issuer left the policy) aborts it.
    wake: Arc<Notify>,
    /// Fetch attempts finished, and whether one is running now: a request waits for a fetch
    /// that started after it asked (the one running then may predate a rotation).
    attempts: watch::Sender<(u64, bool)>,
    /// When a request last asked for a fetch (tokio time, so tests can pause it).
    last_forced: Mutex<Option<tokio::time::Instant>>,
    last_error: Mutex<Option<KeyFetchError>>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Drop for IssuerKeys {
    fn drop(&mut self) {
        if let Ok(mut task) = self.task.lock()
            && let Some(task) = task.take()
        {
            task.abort();
        }
    }
}

/// A remembered verification: good while the key set it was checked with is the current
/// one, for the same source settings, until the token expires. `source` is the policy's
/// own `Arc`: while that policy serves, a hit knows the settings by pointer; after a
/// reload it compares them by value (the same settings keep the verification).
struct CachedToken {
    keys: Arc<KeySet>,
    source: Arc<BearerSource>,
    verified: Verified,
}

impl CachedToken {
    /// Whether this verification still answers for `token` under `source` and `keys` at
    /// `now_secs`. The entry holds its `Arc`s, so neither allocation can be freed and
    /// reused while it lives: equal pointers are the same key set and the same settings.
    fn answers(&self, source: &Arc<BearerSource>, keys: &Arc<KeySet>, now_secs: i64) -> bool {
        Arc::ptr_eq(&self.keys, keys)
            && (Arc::ptr_eq(&self.source, source) || *self.source == **source)
            && now_secs < self.verified.expires
    }
}

/// The issuers' key sets, by issuer.
type Issuers = HashMap<String, Arc<IssuerKeys>, foldhash::fast::RandomState>;

/// A cached token's weight: one per started KiB of the token.
#[allow(clippy::borrowed_box)] // moka hands the key as it is stored
fn token_weight(token: &Box<str>, _: &Arc<CachedToken>) -> u32 {
    u32::try_from(token.len().div_ceil(1024).max(1)).unwrap_or(u32::MAX)
}

/// Key sets per issuer, and the verification cache.
pub struct KeyStore {
    options: KeyOptions,
    issuers: ArcSwap<Issuers>,
    /// Serialises `sync` (reconciling tasks with the policy).
    sync_lock: Mutex<()>,
    /// Keyed by the token itself (a hit compares the whole token, so no hash collision can
    /// lend one token's identity to another), hashed with a per-process random seed.
    cache: Option<moka::sync::Cache<Box<str>, Arc<CachedToken>, foldhash::fast::RandomState>>,
    pub counters: KeyCounters,
    client: Option<reqwest::Client>,
}

impl std::fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyStore")
            .field("issuers", &self.issuers.load().keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Default for KeyStore {
    fn default() -> Self {
        Self::new(KeyOptions::default(), KeyCounters::default())
    }
}

/// The state of one issuer's keys, for status and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuerStatus {
    pub issuer: String,
    pub kids: Vec<String>,
    pub last_error: Option<KeyFetchError>,
}

/// Why a key set could not be read or fetched: an issuer's last error (its message is the
/// one logged and shown). Text from outside (the issuer, a parser's message) is escaped;
/// URLs are shown without their credentials.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyFetchError {
    #[error("JWKS file {path} exceeds {limit} bytes")]
    FileTooBig { path: String, limit: u64 },
    #[error("JWKS file {path} {message}")]
    FileUnreadable { path: String, message: String },
    #[error("reading the JWKS file failed: {0}")]
    FileTask(String),
    /// The document is not a usable JWKS (`url` empty for a file).
    #[error("{}{error}", if url.is_empty() { String::new() } else { format!("{url}: ") })]
    InvalidKeys {
        url: String,
        error: crate::policy::bearer::JwksError,
    },
    #[error("{url}: not an OpenID configuration: {message}")]
    NotDiscovery { url: String, message: String },
    #[error("{url}: its `issuer` is not `{issuer}`")]
    IssuerMismatch { url: String, issuer: String },
    #[error("{url}: no `jwks_uri`")]
    NoJwksUri { url: String },
    /// The discovery document's `jwks_uri` is not a URL the server fetches.
    #[error("{0}")]
    JwksUri(crate::policy::identity::FetchUrlError),
    #[error("no HTTP client")]
    NoClient,
    #[error("{url}: request failed: {message}")]
    Request { url: String, message: String },
    #[error("{url}: server answered {status}")]
    Status {
        url: String,
        status: reqwest::StatusCode,
    },
    #[error("{url}: exceeds the size limit of {limit} bytes")]
    TooBig { url: String, limit: u64 },
    #[error("{url}: reading the body failed: {message}")]
    Body { url: String, message: String },
}

impl KeyStore {
    pub fn new(options: KeyOptions, counters: KeyCounters) -> Self {
        crate::install_crypto_provider();
        let client = reqwest::Client::builder()
            .timeout(options.timeout)
            .connect_timeout(options.timeout.min(Duration::from_secs(10)))
            // A redirect could lead a key fetch somewhere plain-text; refuse them.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| tracing::error!(error = %e, "cannot build the HTTP client for key sets"))
            .ok();
        let cache = (options.cache_capacity > 0).then(|| {
            moka::sync::Cache::builder()
                // Capacity in tokens of up to 1 KiB: a longer one counts once per started
                // KiB, so the cache holds at most `cache_capacity` KiB of tokens.
                .max_capacity(options.cache_capacity)
                .weigher(token_weight)
                // Entries also end at their token's expiry, checked on every hit; this
                // only bounds how long a dead entry can occupy space.
                .time_to_live(Duration::from_secs(3600))
                .build_with_hasher(foldhash::fast::RandomState::default())
        });
        Self {
            options,
            issuers: ArcSwap::default(),
            sync_lock: Mutex::new(()),
            cache,
            counters,
            client,
        }
    }

    /// Starts a task for every bearer source of `identity` that has none (or whose key
    /// location changed) and stops the tasks of issuers no longer configured. Needs a Tokio
    /// runtime.
    pub fn sync(self: &Arc<Self>, identity: &IdentityConfig) {
        let Ok(_guard) = self.sync_lock.lock() else {
            return;
        };
        let current = self.issuers.load_full();
        let mut next = Issuers::default();
        for source in identity.bearer_sources() {
            if let Some(existing) = current.get(&source.issuer)
                && existing.location == source.jwks
            {
                next.insert(source.issuer.clone(), existing.clone());
                continue;
            }
            let entry = Arc::new(IssuerKeys {
                location: source.jwks.clone(),
                keys: ArcSwapOption::default(),
                wake: Arc::new(Notify::new()),
                attempts: watch::Sender::new((0, false)),
                last_forced: Mutex::new(None),
                last_error: Mutex::new(None),
                task: Mutex::new(None),
            });
            let task = tokio::spawn(keep_fresh(
                Arc::downgrade(self),
                Arc::downgrade(&entry),
                source.issuer.clone(),
            ));
            if let Ok(mut slot) = entry.task.lock() {
                *slot = Some(task);
            }
            next.insert(source.issuer.clone(), entry);
        }
        self.issuers.store(Arc::new(next));
        // Dropping the old map's entries that are not in the new one aborts their tasks.
    }

    /// Keeps the key store in step with the serving policy until the state is dropped.
    pub fn follow(self: &Arc<Self>, policy: &Arc<crate::live::PolicyState>) {
        if let Some(p) = policy.current() {
            self.sync(&p.snapshot.identity);
        }
        let mut revisions = policy.subscribe();
        let store = Arc::downgrade(self);
        let state = policy.clone();
        tokio::spawn(async move {
            while revisions.changed().await.is_ok() {
                let (Some(store), Some(p)) = (store.upgrade(), state.current()) else {
                    break;
                };
                store.sync(&p.snapshot.identity);
            }
        });
    }

    /// Each issuer's key ids and last fetch error.
    pub fn status(&self) -> Vec<IssuerStatus> {
        let mut out: Vec<IssuerStatus> = self
            .issuers
            .load()
            .iter()
            .map(|(issuer, entry)| IssuerStatus {
                issuer: issuer.clone(),
                kids: entry
                    .keys
                    .load()
                    .as_ref()
                    .map(|k| k.kids().map(str::to_owned).collect())
                    .unwrap_or_default(),
                last_error: entry.last_error.lock().ok().and_then(|e| e.clone()),
            })
            .collect();
        out.sort_by(|a, b| a.issuer.cmp(&b.issuer));
        out
    }

    /// Waits until every issuer has had at least one fetch attempt, or `limit` passes.
    pub async fn first_fetches(&self, limit: Duration) {
        let entries: Vec<Arc<IssuerKeys>> = self.issuers.load().values().cloned().collect();
        let _ = tokio::time::timeout(limit, async {
            for entry in entries {
                let mut rx = entry.attempts.subscribe();
                let _ = rx.wait_for(|(n, _)| *n > 0).await;
            }
        })
        .await;
    }

    /// Asks for a fetch of `issuer`'s keys now, because a token named a key the set does
    /// not have (or there is no set yet). At most once per `unknown_kid_interval` per
    /// issuer; returns whether a fetch ran and brought a different key set, in which case
    /// the request is worth verifying again.
    pub async fn refresh_for(&self, issuer: &str) -> bool {
        let Some(entry) = self.issuers.load().get(issuer).cloned() else {
            return false;
        };
        {
            let Ok(mut last) = entry.last_forced.lock() else {
                return false;
            };
            let now = tokio::time::Instant::now();
            if last.is_some_and(|t| now.duration_since(t) < self.options.unknown_kid_interval) {
                return false;
            }
            *last = Some(now);
        }
        let before = entry.keys.load_full();
        let mut rx = entry.attempts.subscribe();
        let (seen, running) = *rx.borrow_and_update();
        // A fetch running now may have started before the keys changed: wait for the next.
        let target = seen + if running { 2 } else { 1 };
        entry.wake.notify_one();
        let waited = tokio::time::timeout(
            (self.options.timeout + Duration::from_secs(1)) * 2,
            rx.wait_for(|(n, _)| *n >= target),
        )
        .await;
        if waited.is_err() {
            return false;
        }
        let after = entry.keys.load_full();
        match (before, after) {
            (Some(a), Some(b)) => !Arc::ptr_eq(&a, &b),
            (None, Some(_)) => true,
            _ => false,
        }
    }

    /// Counts and logs a rejected token (its issuer and the fixed reason, never the token).
    pub fn count_rejection(&self, issuer: &str, reason: Rejection) {
        self.counters
            .rejections
            .get_or_create(&RejectionLabels {
                issuer: issuer.to_owned(),
                reason: reason.as_str(),
            })
            .inc();
        tracing::info!(issuer = %escape(issuer), reason = reason.as_str(), "bearer token rejected");
    }
}

impl bearer::TokenVerifier for KeyStore {
    fn verify(
        &self,
        source: &Arc<BearerSource>,
        token: &str,
        now: Instant,
    ) -> Result<Verified, Rejection> {
        let keys = self
            .issuers
            .load()
            .get(&source.issuer)
            .and_then(|e| e.keys.load_full());
        if token.len() > bearer::MAX_TOKEN_BYTES {
            return Err(Rejection::TooLarge);
        }
        let now_secs = i64::try_from(now.div_euclid(1_000_000_000)).unwrap_or(i64::MAX);
        if let (Some(cache), Some(keys)) = (&self.cache, &keys) {
            if let Some(hit) = cache.get(token) {
                if hit.answers(source, keys, now_secs) {
                    self.counters.cache_hits.inc();
                    return Ok(hit.verified.clone());
                }
                cache.invalidate(token);
            }
            self.counters.cache_misses.inc();
        }
        let verified = bearer::verify(source, keys.as_deref(), token, now)?;
        if let (Some(cache), Some(keys)) = (&self.cache, keys) {
            cache.insert(
                token.into(),
                Arc::new(CachedToken {
                    keys,
                    source: source.clone(),
                    verified: verified.clone(),
                }),
            );
        }
        Ok(verified)
    }
}

/// A fetched key set and how long the server says it stays fresh.
struct Fetched {
    keys: KeySet,
    max_age: Option<Duration>,
}

/// The task of one issuer: fetch, then wait for the refresh interval, a file event or a
/// request's wake-up; repeat until the store or the issuer goes away.
async fn keep_fresh(
    store: std::sync::Weak<KeyStore>,
    entry: std::sync::Weak<IssuerKeys>,
    issuer: String,
) {
    let mut failures: u32 = 0;
    // Holds the file watcher of a JWKS file alive for as long as the task runs.
    let mut _watcher: Option<notify::RecommendedWatcher> = None;
    let file_events = Arc::new(Notify::new());
    loop {
        let (Some(store_arc), Some(entry_arc)) = (store.upgrade(), entry.upgrade()) else {
            return;
        };
        if _watcher.is_none()
            && let JwksLocation::File(path) = &entry_arc.location
        {
            _watcher = watch_file(Path::new(path), file_events.clone());
        }
        entry_arc
            .attempts
            .send_modify(|(_, running)| *running = true);
        let result = fetch(&store_arc, &issuer, &entry_arc.location).await;
        let wait = match result {
            Ok(fetched) => {
                failures = 0;
                let current = entry_arc.keys.load_full();
                // An unchanged document keeps the serving set (and the verifications
                // remembered with it).
                let same = current
                    .as_ref()
                    .is_some_and(|c| c.digest() == fetched.keys.digest());
                if !same {
                    tracing::info!(
                        issuer = %escape(&issuer),
                        kids = ?fetched.keys.kids().map(escape).collect::<Vec<_>>(),
                        "bearer key set loaded"
                    );
                    entry_arc.keys.store(Some(Arc::new(fetched.keys)));
                }
                if let Ok(mut e) = entry_arc.last_error.lock() {
                    *e = None;
                }
                store_arc
                    .counters
                    .fetches
                    .get_or_create(&FetchLabels {
                        issuer: issuer.clone(),
                        result: "success",
                    })
                    .inc();
                let o = &store_arc.options;
                fetched
                    .max_age
                    .unwrap_or(o.default_refresh)
                    .clamp(o.min_refresh, o.max_refresh.max(o.min_refresh))
            }
            Err(message) => {
                failures = failures.saturating_add(1);
                tracing::warn!(
                    issuer = %escape(&issuer),
                    error = %message,
                    "bearer key fetch failed; the last good key set stays in use"
                );
                if let Ok(mut e) = entry_arc.last_error.lock() {
                    *e = Some(message);
                }
                store_arc
                    .counters
                    .fetches
                    .get_or_create(&FetchLabels {
                        issuer: issuer.clone(),
                        result: "failure",
                    })
                    .inc();
                let o = &store_arc.options;
                let ceiling = o.max_refresh.min(Duration::from_secs(300)).max(o.retry);
                o.retry
                    .saturating_mul(2u32.saturating_pow(failures.saturating_sub(1).min(16)))
                    .min(ceiling)
            }
        };
        let wait = match &entry_arc.location {
            JwksLocation::File(_) => wait.min(store_arc.options.file_poll),
            _ => wait,
        };
        entry_arc
            .attempts
            .send_modify(|(n, running)| (*n, *running) = (*n + 1, false));
        let wake = entry_arc.wake.clone();
        drop(store_arc);
        drop(entry_arc);
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = wake.notified() => {}
            () = file_events.notified() => {
                // Let an editor's write-then-rename settle.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Watches the directory of a JWKS file; any event there wakes the task (it re-reads the
/// file, and an unchanged key set changes nothing).
fn watch_file(path: &Path, wake: Arc<Notify>) -> Option<notify::RecommendedWatcher> {
    use notify::Watcher as _;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok_and(|e| !matches!(e.kind, notify::EventKind::Access(_))) {
            wake.notify_one();
        }
    })
    .ok()?;
    watcher
        .watch(&dir, notify::RecursiveMode::NonRecursive)
        .ok()?;
    Some(watcher)
}

#[derive(Deserialize)]
struct Discovery {
    issuer: Option<String>,
    jwks_uri: Option<String>,
}

async fn fetch(
    store: &KeyStore,
    issuer: &str,
    location: &JwksLocation,
) -> Result<Fetched, KeyFetchError> {
    match location {
        JwksLocation::File(path) => {
            let path = PathBuf::from(path);
            let limit = store.options.max_bytes;
            let bytes = tokio::task::spawn_blocking(move || {
                let shown = path.display().to_string();
                crate::policy::source::read_limited(&path, limit).map_err(|e| match e {
                    crate::policy::source::ReadError::TooBig => {
                        KeyFetchError::FileTooBig { path: shown, limit }
                    }
                    crate::policy::source::ReadError::Failed(message) => {
                        KeyFetchError::FileUnreadable {
                            path: shown,
                            message,
                        }
                    }
                })
            })
            .await
            .map_err(|e| KeyFetchError::FileTask(e.to_string()))??;
            Ok(Fetched {
                keys: KeySet::parse(&bytes).map_err(|error| KeyFetchError::InvalidKeys {
                    url: String::new(),
                    error,
                })?,
                max_age: None,
            })
        }
        JwksLocation::Url(url) => fetch_jwks(store, url).await,
        JwksLocation::Discovery => {
            let url = format!(
                "{}/.well-known/openid-configuration",
                issuer.trim_end_matches('/')
            );
            let (body, _) = get(store, &url).await?;
            let shown = super::bundle::shown_url(&url);
            let doc: Discovery =
                serde_json::from_slice(&body).map_err(|e| KeyFetchError::NotDiscovery {
                    url: shown.clone(),
                    message: escape(&e.to_string()),
                })?;
            if doc.issuer.as_deref() != Some(issuer) {
                return Err(KeyFetchError::IssuerMismatch {
                    url: shown,
                    issuer: escape(issuer),
                });
            }
            let jwks_uri = doc
                .jwks_uri
                .ok_or(KeyFetchError::NoJwksUri { url: shown })?;
            crate::policy::identity::check_fetch_url(&jwks_uri).map_err(KeyFetchError::JwksUri)?;
            fetch_jwks(store, &jwks_uri).await
        }
    }
}

async fn fetch_jwks(store: &KeyStore, url: &str) -> Result<Fetched, KeyFetchError> {
    let (body, max_age) = get(store, url).await?;
    let keys = KeySet::parse(&body).map_err(|error| KeyFetchError::InvalidKeys {
        url: super::bundle::shown_url(url),
        error,
    })?;
    Ok(Fetched { keys, max_age })
}

/// One GET with the size limit; returns the body and the `Cache-Control: max-age`.
async fn get(store: &KeyStore, url: &str) -> Result<(Vec<u8>, Option<Duration>), KeyFetchError> {
    let shown = super::bundle::shown_url(url);
    let client = store.client.as_ref().ok_or(KeyFetchError::NoClient)?;
    let mut response = client
        .get(url)
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(|e| KeyFetchError::Request {
            url: shown.clone(),
            message: e.without_url().to_string(),
        })?;
    let status = response.status();
    if !status.is_success() {
        return Err(KeyFetchError::Status { url: shown, status });
    }
    let max_age = response
        .headers()
        .get(reqwest::header::CACHE_CONTROL)
        .and_then(|v| v.to_str().ok())
        .and_then(cache_max_age);
    let max = store.options.max_bytes;
    let too_big = |url: &str| KeyFetchError::TooBig {
        url: url.to_owned(),
        limit: max,
    };
    if response.content_length().is_some_and(|n| n > max) {
        return Err(too_big(&shown));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| KeyFetchError::Body {
        url: shown.clone(),
        message: e.without_url().to_string(),
    })? {
        body.extend_from_slice(&chunk);
        if body.len() as u64 > max {
            return Err(too_big(&shown));
        }
    }
    Ok((body, max_age))
}

/// `max-age` of a `Cache-Control` value; `no-cache` and `no-store` mean zero (the
/// refresh interval's lower bound then applies).
pub fn cache_max_age(value: &str) -> Option<Duration> {
    let mut out = None;
    for directive in value.split(',').map(str::trim) {
        let lower = directive.to_ascii_lowercase();
        if lower == "no-cache" || lower == "no-store" {
            return Some(Duration::ZERO);
        }
        if let Some(n) = lower.strip_prefix("max-age=") {
            out = n
                .trim_matches('"')
                .parse::<u64>()
                .ok()
                .map(Duration::from_secs);
        }
    }
    out
}

#[cfg(test)]
mod tests;
