//! A policy bundle polled over HTTP(S): one YAML/JSON document, or a `.tar.gz` of documents.
//! Conditional requests (`ETag` / `If-None-Match`), a poll interval, exponential backoff
//! with jitter on failure, an optional bearer token read from a file on every poll, and the
//! same validate-then-swap and last-good rules as files.

use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

use super::{LoadOutcome, Loader};
use crate::policy::syntax::{self, escape};
use crate::policy::{PolicyError, Problem, SourceDocument, source};

/// How to poll a bundle.
#[derive(Debug, Clone)]
pub struct BundleOptions {
    pub url: String,
    pub interval: Duration,
    /// Longest wait between attempts after failures.
    pub max_backoff: Duration,
    /// Time limit for one request, body included.
    pub timeout: Duration,
    /// A file holding a bearer token (re-read on every poll, so it can rotate).
    pub token_file: Option<PathBuf>,
    /// Largest bundle accepted, compressed or not, in bytes.
    pub max_bytes: u64,
}

/// `serve --policy-url-interval-seconds`'s default.
pub const DEFAULT_INTERVAL_SECONDS: u64 = 30;

impl BundleOptions {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            interval: Duration::from_secs(DEFAULT_INTERVAL_SECONDS),
            max_backoff: Duration::from_secs(300),
            timeout: Duration::from_secs(30),
            token_file: None,
            max_bytes: crate::policy::source::DEFAULT_MAX_POLICY_BYTES,
        }
    }
}

/// The result of one poll.
#[derive(Debug)]
pub enum Fetched {
    NotModified,
    Bundle {
        documents: Vec<SourceDocument>,
        etag: Option<String>,
    },
}

fn problem(url: &str, message: String) -> PolicyError {
    PolicyError::one(Problem::new(url, "bundle", message))
}

/// The URL as it may be shown in logs, problems and document names: without user
/// information, query and fragment, where pre-signed URLs carry their credentials
/// (`?X-Amz-Signature=...`, `?sig=...`).
pub fn shown_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut parsed) => {
            // Both only fail for URLs that cannot have them, which then have none.
            let _ = parsed.set_username("");
            let _ = parsed.set_password(None);
            parsed.set_query(None);
            parsed.set_fragment(None);
            parsed.into()
        }
        // Not a URL: keep the part before anything that could be a credential.
        Err(_) => url
            .split(['?', '#'])
            .next()
            .map(|head| head.rsplit('@').next().unwrap_or(head))
            .unwrap_or_default()
            .to_owned(),
    }
}

/// Redirects are followed (at most 5) only within the bundle URL's origin: a bundle
/// server cannot send iot-authz, with its token, to another host.
fn same_origin_redirects() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        let same = attempt
            .previous()
            .first()
            .is_some_and(|first| first.origin() == attempt.url().origin());
        if attempt.previous().len() > 5 {
            attempt.error("more than 5 redirects")
        } else if same {
            attempt.follow()
        } else {
            attempt.stop()
        }
    })
}

/// A bundle poller: keeps the HTTP client and the last `ETag`.
#[derive(Debug)]
pub struct BundleClient {
    options: BundleOptions,
    client: reqwest::Client,
    etag: Option<String>,
}

impl BundleClient {
    pub fn new(options: BundleOptions) -> Result<Self, PolicyError> {
        crate::install_crypto_provider();
        let client = reqwest::Client::builder()
            .redirect(same_origin_redirects())
            .timeout(options.timeout)
            .connect_timeout(options.timeout.min(Duration::from_secs(10)))
            .build()
            .map_err(|e| {
                problem(
                    &shown_url(&options.url),
                    format!("cannot build an HTTP client: {e}"),
                )
            })?;
        Ok(Self {
            options,
            client,
            etag: None,
        })
    }

    /// Fetches the bundle once.
    pub async fn fetch(&mut self) -> Result<Fetched, PolicyError> {
        let mut request = self.client.get(&self.options.url);
        // Everything shown (problems, logs, document names) names the URL without its
        // credentials, and reqwest's errors are stripped of the URL they quote.
        let url = shown_url(&self.options.url);
        if let Some(etag) = &self.etag {
            request = request.header(reqwest::header::IF_NONE_MATCH, etag);
        }
        if let Some(file) = &self.options.token_file {
            let token = tokio::fs::read_to_string(file).await.map_err(|e| {
                problem(
                    &url,
                    format!("cannot read token file {}: {e}", file.display()),
                )
            })?;
            request = request.bearer_auth(token.trim());
        }
        let mut response = request
            .send()
            .await
            .map_err(|e| problem(&url, format!("request failed: {}", e.without_url())))?;
        let status = response.status();
        if status == reqwest::StatusCode::NOT_MODIFIED {
            return Ok(Fetched::NotModified);
        }
        if status.is_redirection() {
            return Err(problem(
                &url,
                format!(
                    "server answered {status}: a redirect to another origin (scheme, host or \
                     port) is not followed"
                ),
            ));
        }
        // The body of an error answer is never read, let alone quoted.
        if !status.is_success() {
            return Err(problem(&url, format!("server answered {status}")));
        }
        let etag = response
            .headers()
            .get(reqwest::header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let max = self.options.max_bytes;
        if response.content_length().is_some_and(|n| n > max) {
            return Err(problem(
                &url,
                format!("bundle exceeds the size limit of {max} bytes"),
            ));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| {
            problem(
                &url,
                format!("reading the body failed: {}", e.without_url()),
            )
        })? {
            body.extend_from_slice(&chunk);
            if body.len() as u64 > max {
                return Err(problem(
                    &url,
                    format!("bundle exceeds the size limit of {max} bytes"),
                ));
            }
        }
        // Gunzip and untar are CPU work of up to the size limit: a blocking thread's, not a
        // runtime worker's.
        let shown = url.clone();
        let documents = tokio::task::spawn_blocking(move || unpack(&url, &body, max))
            .await
            .map_err(|e| problem(&shown, format!("unpacking the bundle failed: {e}")))??;
        Ok(Fetched::Bundle { documents, etag })
    }

    /// Remembers the `ETag` of a bundle that was installed (or found unchanged).
    pub fn accept(&mut self, etag: Option<String>) {
        self.etag = etag;
    }
}

/// Splits a bundle into documents: a gzip'd tar of `*.yaml|*.yml|*.json` files (sorted by
/// path, hidden names skipped), or one document.
pub fn unpack(url: &str, body: &[u8], max_bytes: u64) -> Result<Vec<SourceDocument>, PolicyError> {
    let url = &shown_url(url);
    if !body.starts_with(&[0x1f, 0x8b]) {
        let name = url.clone();
        return Ok(vec![SourceDocument::fetched(name, body.to_vec())]);
    }
    // Decompression is bounded too: a small bomb cannot exhaust memory.
    let decoder = flate2::read::GzDecoder::new(body).take(max_bytes + 1);
    let mut archive = tar::Archive::new(decoder);
    let entries = archive.entries().map_err(|e| {
        problem(
            url,
            format!("not a tar.gz bundle: {}", escape(&e.to_string())),
        )
    })?;
    let mut documents = Vec::new();
    let mut total: u64 = 0;
    for entry in entries {
        let mut entry = entry.map_err(|e| {
            problem(
                url,
                format!("corrupt tar.gz bundle: {}", escape(&e.to_string())),
            )
        })?;
        let raw = entry.path_bytes().into_owned();
        let Some(path) = entry_path(url, &raw)? else {
            continue; // The bundle root itself (`./`).
        };
        // As in a directory: policy names only, and nothing under a hidden directory
        // (`.git/`) either.
        let file_name = path.rsplit('/').next().unwrap_or(&path);
        let hidden = path.split('/').any(|part| part.starts_with('.'));
        let kind = entry.header().entry_type();
        if kind.is_dir() || kind.is_pax_global_extensions() || kind.is_pax_local_extensions() {
            continue;
        }
        if !kind.is_file() {
            // A link (or device, FIFO, ...) would be followed on disk and give a policy
            // the bundle does not: refuse it loudly rather than serve less than the tree.
            if hidden {
                continue;
            }
            let what = if kind.is_symlink() {
                "a symlink"
            } else if kind.is_hard_link() {
                "a hard link"
            } else {
                "not a regular file"
            };
            return Err(problem(
                url,
                format!(
                    "bundle entry `{}` is {what}: a bundle holds regular files only (resolve \
                     links when building it)",
                    escape(&path)
                ),
            ));
        }
        if hidden || !source::is_policy_name(file_name.as_bytes()) {
            continue;
        }
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).map_err(|e| {
            problem(
                url,
                format!(
                    "corrupt tar.gz bundle at `{}`: {}",
                    escape(&path),
                    escape(&e.to_string())
                ),
            )
        })?;
        total += bytes.len() as u64;
        if total > max_bytes {
            return Err(problem(
                url,
                format!("bundle exceeds the size limit of {max_bytes} bytes"),
            ));
        }
        documents.push(SourceDocument::fetched(format!("{url}#{path}"), bytes));
    }
    if documents.is_empty() {
        return Err(problem(
            url,
            "bundle holds no *.yaml, *.yml or *.json document".into(),
        ));
    }
    documents.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(documents)
}

/// An entry's path inside the bundle, `./` prefixes dropped: `None` for the root itself,
/// an error for a path that leaves the bundle root (absolute, or with a `..` part) or that
/// holds a character the one character policy refuses (a forged log line, an ANSI escape).
fn entry_path(url: &str, raw: &[u8]) -> Result<Option<String>, PolicyError> {
    let text = String::from_utf8_lossy(raw);
    if text.chars().any(syntax::is_unsafe_char) {
        return Err(problem(
            url,
            format!(
                "bundle entry `{}` has a control, line-separator or bidi character in its name",
                escape(&text)
            ),
        ));
    }
    if text.starts_with('/') || text.split(['/', '\\']).any(|part| part == "..") {
        return Err(problem(
            url,
            format!(
                "bundle entry `{}` lies outside the bundle root",
                escape(&text)
            ),
        ));
    }
    let parts: Vec<&str> = text
        .split('/')
        .filter(|part| !part.is_empty() && *part != ".")
        .collect();
    Ok((!parts.is_empty()).then(|| parts.join("/")))
}

/// A pseudo-random factor in [0.5, 1.0) for backoff jitter.
fn jitter() -> f64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let mut x = u64::from(nanos) ^ 0x9e37_79b9_7f4a_7c15;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    0.5 + (x % 1000) as f64 / 2000.0
}

/// The wait after `failures` consecutive failures: the interval doubled per failure, capped,
/// with jitter so that replicas do not poll in step.
pub fn backoff(options: &BundleOptions, failures: u32) -> Duration {
    if failures == 0 {
        return options.interval;
    }
    let factor = 2f64.powi(i32::try_from(failures.min(20)).unwrap_or(20));
    let base = (options.interval.as_secs_f64() * factor).min(options.max_backoff.as_secs_f64());
    Duration::from_secs_f64(base * jitter())
}

/// Fetches once and loads what was fetched. Returns the outcome, or the fetch error.
pub async fn poll_once(client: &mut BundleClient, loader: &Loader) -> LoadOutcome {
    match client.fetch().await {
        // The bundle is the one serving: an earlier failed fetch no longer applies.
        Ok(Fetched::NotModified) => loader.unchanged(),
        Ok(Fetched::Bundle { documents, etag }) => {
            let outcome = loader.load(move || Ok(documents)).await;
            if !matches!(outcome, LoadOutcome::Rejected(_)) {
                client.accept(etag);
            }
            outcome
        }
        Err(e) => {
            let message = e.to_string();
            loader.sink().reject(message.clone());
            LoadOutcome::Rejected(message)
        }
    }
}

/// Polls until `shutdown` resolves; `trigger` (SIGHUP) fetches at once.
pub async fn poll(
    mut client: BundleClient,
    loader: Loader,
    mut trigger: tokio::sync::mpsc::Receiver<()>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut failures = 0u32;
    loop {
        match poll_once(&mut client, &loader).await {
            LoadOutcome::Rejected(_) => failures = failures.saturating_add(1),
            _ => failures = 0,
        }
        tokio::select! {
            _ = &mut shutdown => return,
            _ = tokio::time::sleep(backoff(&client.options, failures)) => {}
            Some(()) = trigger.recv() => {}
        }
    }
}
