//! A small client of etcd's v3 gRPC API (KV, Watch and Auth's Authenticate), generated from
//! the vendored protos (`proto/vendor/etcd/`): ranges read page by page at one revision,
//! transactions, and the watch stream, failing over from an unreachable member to the next;
//! with a user and password, every call carries the token etcd gave for them, renewed when
//! etcd no longer accepts it.

use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tonic::metadata::AsciiMetadataValue;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::policy::syntax::escape;
use crate::proto::etcd::etcdserverpb::{
    self as pb, AuthenticateRequest, Compare, RangeRequest, RequestOp, TxnRequest,
    auth_client::AuthClient, compare, kv_client::KvClient, request_op, watch_client::WatchClient,
};

/// How many keys the first range request of a read asks for.
const FIRST_PAGE: i64 = 10_000;

/// About how many bytes each later page holds: its size in keys follows from the bytes per
/// key seen so far. etcd (3.4 and 3.5) walks every key left in the range for each page, so
/// a read of N keys in pages of P costs about N²/(2P) key visits: pages are large (a
/// million assignments of about 130 bytes each are read in about ten pages).
const PAGE_BYTES: usize = 16 * 1024 * 1024;

/// The bounds of a page, in keys.
const MIN_PAGE: usize = 16;
const MAX_PAGE: usize = 1_000_000;

/// The size of the next page, in keys, after `keys` keys of `bytes` bytes in all.
fn page_size(keys: usize, bytes: usize) -> i64 {
    let per_key = (bytes / keys.max(1)).max(1);
    i64::try_from((PAGE_BYTES / per_key).clamp(MIN_PAGE, MAX_PAGE)).unwrap_or(FIRST_PAGE)
}

/// The largest response accepted from etcd (a page of large objects).
const MAX_RESPONSE_BYTES: usize = 256 * 1024 * 1024;

/// How long one request may take (the first page of a read: a linearizable read, which
/// waits for a quorum).
const PAGE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long each later page of a read may take. They are read at the first page's
/// revision from the same member, serializably (no quorum round: data at a past revision
/// does not change), so only their size and the member's load make them slow.
const LATER_PAGE_TIMEOUT: Duration = Duration::from_secs(60);

/// TLS for the connection to etcd (`https://` endpoints).
#[derive(Debug, Clone, Default)]
pub struct EtcdTls {
    /// PEM bundle of the certificate authorities trusted for etcd's certificate.
    pub ca: Option<Vec<u8>>,
    /// PEM client certificate and key, when etcd asks for one (`--client-cert-auth`).
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
}

/// etcd user/password authentication (etcd's `auth enable`): the user and where its
/// password is. Neither the password nor the token etcd gives for it is ever logged or
/// shown (`Debug` leaves them out).
#[derive(Debug, Clone)]
pub struct EtcdAuth {
    pub username: String,
    pub password: Password,
}

/// Where the password of [`EtcdAuth`] comes from.
#[derive(Clone)]
pub enum Password {
    /// A file, read at each authentication (so a rotated Secret is picked up); one
    /// trailing line break is not part of the password.
    File(PathBuf),
    /// The password itself (from the environment).
    Value(Arc<str>),
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Password::File(path) => f.debug_tuple("File").field(path).finish(),
            Password::Value(_) => f.write_str("Value(<redacted>)"),
        }
    }
}

/// The etcd password file cannot be read.
#[derive(Debug, thiserror::Error)]
#[error("reading the etcd password file `{}`: {error}", escape(&.path.display().to_string()))]
pub struct PasswordError {
    pub path: std::path::PathBuf,
    pub error: std::io::Error,
}

/// The etcd client cannot be set up (before any connection is made).
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("no etcd endpoint given")]
    NoEndpoint,
    /// An endpoint that is not a URI (as given).
    #[error("etcd endpoint `{}`: {error}", escape(.url))]
    Endpoint {
        url: String,
        error: tonic::transport::Error,
    },
    #[error("etcd TLS: {0}")]
    Tls(tonic::transport::Error),
}

impl Password {
    /// The password now; a file that cannot be read is an error naming the file.
    pub fn read(&self) -> Result<String, PasswordError> {
        match self {
            Password::Value(v) => Ok(v.to_string()),
            Password::File(path) => {
                let text = std::fs::read_to_string(path).map_err(|error| PasswordError {
                    path: path.clone(),
                    error,
                })?;
                let text = text
                    .strip_suffix('\n')
                    .map_or(text.as_str(), |t| t.strip_suffix('\r').unwrap_or(t));
                Ok(text.to_owned())
            }
        }
    }
}

/// The token of an authenticated user, shared by every clone of an [`Etcd`].
struct Session {
    credentials: EtcdAuth,
    token: Mutex<Option<AsciiMetadataValue>>,
    /// One authentication at a time: callers that find the token stale wait for it.
    renewing: tokio::sync::Mutex<()>,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("username", &self.credentials.username)
            .finish_non_exhaustive()
    }
}

impl Session {
    fn current(&self) -> Option<AsciiMetadataValue> {
        match self.token.lock() {
            Ok(t) => t.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn set(&self, token: AsciiMetadataValue) {
        match self.token.lock() {
            Ok(mut t) => *t = Some(token),
            Err(poisoned) => *poisoned.into_inner() = Some(token),
        }
    }
}

/// Sends etcd's auth token (the `token` metadata) with every request of a client.
#[derive(Clone)]
pub struct WithToken(Option<AsciiMetadataValue>);

impl Interceptor for WithToken {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(token) = &self.0 {
            request.metadata_mut().insert("token", token.clone());
        }
        Ok(request)
    }
}

/// A KV client that sends the auth token, if any.
pub type Kv = KvClient<InterceptedService<Channel, WithToken>>;
/// A Watch client that sends the auth token, if any.
pub type Watch = WatchClient<InterceptedService<Channel, WithToken>>;

/// Whether etcd refused a call for its token (expired, or issued before the user's roles
/// changed): authenticating again may cure it.
fn stale_token(status: &tonic::Status) -> bool {
    status.code() == tonic::Code::Unauthenticated
        || status.message().contains("revision of auth store is old")
}

/// A connection to an etcd cluster: one lazily connected channel per endpoint, used one
/// at a time; a request that finds its member unreachable (`UNAVAILABLE`) moves on to the
/// next member and is tried there, so one member down costs one failed attempt.
#[derive(Debug, Clone)]
pub struct Etcd {
    channels: Vec<Channel>,
    current: Arc<AtomicUsize>,
    session: Option<Arc<Session>>,
}

/// One key and its value, with the revision it was last written at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub mod_revision: i64,
}

impl Etcd {
    /// Connects lazily: the first request opens the connections.
    pub fn connect(endpoints: &[String], tls: Option<&EtcdTls>) -> Result<Self, ConnectError> {
        if endpoints.is_empty() {
            return Err(ConnectError::NoEndpoint);
        }
        let mut channels = Vec::new();
        for url in endpoints {
            let mut endpoint = Endpoint::from_shared(url.clone())
                .map_err(|error| ConnectError::Endpoint {
                    url: url.clone(),
                    error,
                })?
                .connect_timeout(Duration::from_secs(2))
                .tcp_nodelay(true)
                .http2_keep_alive_interval(Duration::from_secs(10))
                .keep_alive_timeout(Duration::from_secs(5))
                .keep_alive_while_idle(true);
            if let Some(tls) = tls {
                let mut config = ClientTlsConfig::new();
                if let Some(ca) = &tls.ca {
                    config = config.ca_certificate(Certificate::from_pem(ca));
                }
                if let Some((cert, key)) = &tls.identity {
                    config = config.identity(Identity::from_pem(cert, key));
                }
                endpoint = endpoint.tls_config(config).map_err(ConnectError::Tls)?;
            }
            channels.push(endpoint.connect_lazy());
        }
        Ok(Self {
            channels,
            current: Arc::new(AtomicUsize::new(0)),
            session: None,
        })
    }

    /// Authenticates as this user (etcd's Auth service) before the first request, and
    /// again whenever etcd refuses the token.
    #[must_use]
    pub fn with_auth(mut self, auth: Option<EtcdAuth>) -> Self {
        self.session = auth.map(|credentials| {
            Arc::new(Session {
                credentials,
                token: Mutex::new(None),
                renewing: tokio::sync::Mutex::new(()),
            })
        });
        self
    }

    /// The token to send (`None` without authentication): the one held, unless there is
    /// none yet or it is `stale` (refused by etcd), in which case the user authenticates.
    async fn token(
        &self,
        stale: Option<&AsciiMetadataValue>,
    ) -> Result<Option<AsciiMetadataValue>, tonic::Status> {
        let Some(session) = &self.session else {
            return Ok(None);
        };
        let usable = |t: &Option<AsciiMetadataValue>| t.is_some() && t.as_ref() != stale;
        let current = session.current();
        if usable(&current) {
            return Ok(current);
        }
        let _one = session.renewing.lock().await;
        // Another caller may have renewed it meanwhile.
        let current = session.current();
        if usable(&current) {
            return Ok(current);
        }
        let token = self.authenticate(&session.credentials).await?;
        session.set(token.clone());
        Ok(Some(token))
    }

    /// etcd's Authenticate, on the member in use (an unreachable one is left for the
    /// next). The error names the user and etcd's reason, never the password.
    async fn authenticate(
        &self,
        credentials: &EtcdAuth,
    ) -> Result<AsciiMetadataValue, tonic::Status> {
        let password = credentials
            .password
            .read()
            .map_err(|e| tonic::Status::failed_precondition(e.to_string()))?;
        let request = AuthenticateRequest {
            name: credentials.username.clone(),
            password,
        };
        let mut last = tonic::Status::unavailable("no etcd endpoint");
        for _ in 0..self.channels.len().max(1) {
            let (i, channel) = self.channel();
            let mut client = AuthClient::new(channel);
            match tokio::time::timeout(PAGE_TIMEOUT, client.authenticate(request.clone())).await {
                Err(_) => {
                    self.failed(i);
                    last = tonic::Status::unavailable("etcd did not answer in time");
                }
                Ok(Err(s)) if s.code() == tonic::Code::Unavailable => {
                    self.failed(i);
                    last = s;
                }
                Ok(Err(s)) => {
                    return Err(tonic::Status::new(
                        s.code(),
                        format!(
                            "authenticating as etcd user `{}`: {}",
                            escape(&credentials.username),
                            crate::policy::syntax::escape_controls(s.message())
                        ),
                    ));
                }
                Ok(Ok(response)) => {
                    return AsciiMetadataValue::try_from(response.into_inner().token).map_err(
                        |_| tonic::Status::internal("etcd gave an auth token that is not ASCII"),
                    );
                }
            }
        }
        Err(last)
    }

    /// The member in use (its index, for [`Etcd::failed`]) and its channel.
    fn channel(&self) -> (usize, Channel) {
        let i = self.current.load(Ordering::Relaxed) % self.channels.len().max(1);
        (i, self.channels[i].clone())
    }

    /// Member `i` did not answer: use the next one (unless another caller moved on first).
    pub fn failed(&self, i: usize) {
        let next = (i + 1) % self.channels.len().max(1);
        let _ = self
            .current
            .compare_exchange(i, next, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// A KV client on the member in use, sending `token`.
    fn kv(&self, token: Option<AsciiMetadataValue>) -> (usize, Kv) {
        let (i, c) = self.channel();
        (
            i,
            KvClient::with_interceptor(c, WithToken(token))
                .max_decoding_message_size(MAX_RESPONSE_BYTES),
        )
    }

    /// A Watch client on the member in use, with the token held (a watch follows a read,
    /// which authenticated; a watch refused for its token ends, and the read that resumes
    /// it authenticates again).
    pub fn watch(&self) -> (usize, Watch) {
        let (i, c) = self.channel();
        let token = self.session.as_ref().and_then(|s| s.current());
        (
            i,
            WatchClient::with_interceptor(c, WithToken(token))
                .max_decoding_message_size(MAX_RESPONSE_BYTES),
        )
    }

    /// Runs `call` on the member in use; a member found unreachable (`UNAVAILABLE`) is
    /// left for the next one and the call tried there, each member at most once. A call
    /// refused for its auth token is tried once more with a new one.
    async fn on_members<T, F, Fut>(&self, mut call: F) -> Result<T, tonic::Status>
    where
        F: FnMut(Kv) -> Fut,
        Fut: Future<Output = Result<T, tonic::Status>>,
    {
        let mut last = tonic::Status::unavailable("no etcd endpoint");
        let mut renewed = false;
        let mut tries = 0;
        while tries < self.channels.len().max(1) {
            let token = self.token(None).await?;
            let (i, kv) = self.kv(token.clone());
            match call(kv).await {
                Err(s) if s.code() == tonic::Code::Unavailable => {
                    self.failed(i);
                    last = s;
                    tries += 1;
                }
                Err(s) if token.is_some() && !renewed && stale_token(&s) => {
                    renewed = true;
                    self.token(token.as_ref()).await?;
                }
                done => return done,
            }
        }
        Err(last)
    }

    /// Every key under `prefix`, read at one revision (the first page's), page by page.
    /// Returns the pairs in key order and that revision.
    pub async fn range_prefix(&self, prefix: &[u8]) -> Result<(Vec<KeyValue>, i64), tonic::Status> {
        let (pages, revision) = self.range_prefix_map(prefix, |page| page).await?;
        Ok((pages.into_iter().flatten().collect(), revision))
    }

    /// Every key under `prefix`, read at one revision (the first page's), page by page;
    /// each page is handed to `map` on a blocking thread as soon as it arrives, while the
    /// next one is read. Returns what `map` made of each page, in key order, and that
    /// revision.
    pub async fn range_prefix_map<T, F>(
        &self,
        prefix: &[u8],
        map: F,
    ) -> Result<(Vec<T>, i64), tonic::Status>
    where
        T: Send + 'static,
        F: Fn(Vec<KeyValue>) -> T + Clone + Send + 'static,
    {
        self.on_members(|kv| Self::range_on(kv, prefix, map.clone()))
            .await
    }

    async fn range_on<T, F>(kv: Kv, prefix: &[u8], map: F) -> Result<(Vec<T>, i64), tonic::Status>
    where
        T: Send + 'static,
        F: Fn(Vec<KeyValue>) -> T + Clone + Send + 'static,
    {
        let end = prefix_end(prefix);
        // One page, read on its own task so that it is on its way while the page before
        // is handed over.
        let fetch = |start: Vec<u8>, limit: i64, revision: i64| {
            let mut kv = kv.clone();
            let request = RangeRequest {
                key: start,
                range_end: end.clone(),
                limit,
                revision,
                serializable: revision != 0,
                ..Default::default()
            };
            // Without a quorum a member may hold a linearizable read until its own
            // timeout; the first page is given up on sooner, and the read tried again
            // later.
            let timeout = if revision == 0 {
                PAGE_TIMEOUT
            } else {
                LATER_PAGE_TIMEOUT
            };
            tokio::spawn(async move {
                match tokio::time::timeout(timeout, kv.range(request)).await {
                    Ok(response) => Ok(response?.into_inner()),
                    Err(_) => Err(tonic::Status::unavailable("etcd did not answer in time")),
                }
            })
        };
        let joined = |e: tokio::task::JoinError| {
            tonic::Status::internal(format!("reading the store failed: {e}"))
        };
        let mut next = Some(fetch(prefix.to_vec(), FIRST_PAGE, 0));
        let mut revision = 0;
        let (mut keys, mut bytes) = (0usize, 0usize);
        let mut mapped = Vec::new();
        while let Some(page) = next.take() {
            let response = page.await.map_err(joined)??;
            if revision == 0 {
                revision = response.header.as_ref().map_or(0, |h| h.revision);
            }
            keys += response.kvs.len();
            bytes += response
                .kvs
                .iter()
                .map(|kv| kv.key.len() + kv.value.len())
                .sum::<usize>();
            if let (true, Some(last)) = (response.more, response.kvs.last()) {
                let mut start = last.key.clone();
                start.push(0);
                next = Some(fetch(start, page_size(keys, bytes), revision));
            }
            let page: Vec<KeyValue> = response
                .kvs
                .into_iter()
                .map(|kv| KeyValue {
                    key: kv.key,
                    value: kv.value,
                    mod_revision: kv.mod_revision,
                })
                .collect();
            let map = map.clone();
            mapped.push(tokio::task::spawn_blocking(move || map(page)));
        }
        let mut out = Vec::with_capacity(mapped.len());
        for page in mapped {
            out.push(page.await.map_err(joined)?);
        }
        Ok((out, revision))
    }

    /// One key, read linearizably; also proves that a quorum answers. Returns the key (if
    /// present) and the store's revision.
    pub async fn get(&self, key: &[u8]) -> Result<(Option<KeyValue>, i64), tonic::Status> {
        let response = self
            .on_members(|mut kv| async move {
                let request = RangeRequest {
                    key: key.to_vec(),
                    ..Default::default()
                };
                Ok(kv.range(request).await?.into_inner())
            })
            .await?;
        let revision = response.header.as_ref().map_or(0, |h| h.revision);
        Ok((
            response.kvs.into_iter().next().map(|kv| KeyValue {
                key: kv.key,
                value: kv.value,
                mod_revision: kv.mod_revision,
            }),
            revision,
        ))
    }

    /// Whether a key under `prefix` was written after `since`, as of `revision`. (Not a
    /// `count_only` range: etcd counts every key in the range for it, whatever the
    /// revision filters; the filters apply to the keys returned, here at most one name.)
    pub async fn written_since(
        &self,
        prefix: &[u8],
        since: i64,
        revision: i64,
    ) -> Result<bool, tonic::Status> {
        let request = RangeRequest {
            key: prefix.to_vec(),
            range_end: prefix_end(prefix),
            revision,
            min_mod_revision: since + 1,
            limit: 1,
            keys_only: true,
            ..Default::default()
        };
        self.on_members(|mut kv| {
            let request = request.clone();
            async move {
                match tokio::time::timeout(PAGE_TIMEOUT, kv.range(request)).await {
                    Ok(r) => Ok(!r?.into_inner().kvs.is_empty()),
                    Err(_) => Err(tonic::Status::unavailable("etcd did not answer in time")),
                }
            }
        })
        .await
    }

    /// Runs `ops` if every comparison holds. Returns whether it did, and the revision of
    /// the store after the transaction.
    pub async fn txn(
        &self,
        compare: Vec<Compare>,
        ops: Vec<RequestOp>,
    ) -> Result<(bool, i64), tonic::Status> {
        let request = TxnRequest {
            compare,
            success: ops,
            failure: Vec::new(),
        };
        // The comparison makes a second attempt safe: a first one that was applied after
        // all makes it fail, never apply twice.
        let response = self
            .on_members(|mut kv| {
                let request = request.clone();
                async move { Ok(kv.txn(request).await?.into_inner()) }
            })
            .await?;
        Ok((
            response.succeeded,
            response.header.as_ref().map_or(0, |h| h.revision),
        ))
    }
}

/// The end of the range holding every key that starts with `prefix` (etcd's convention:
/// the prefix with its last byte below 0xff incremented; `\0` for "to the end").
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// "No key in `[key, range_end)` was written after `revision`" (nor created after it).
pub fn unchanged_since(key: &[u8], range_end: &[u8], revision: i64) -> Compare {
    Compare {
        result: compare::CompareResult::Less as i32,
        target: compare::CompareTarget::Mod as i32,
        key: key.to_vec(),
        range_end: range_end.to_vec(),
        target_union: Some(compare::TargetUnion::ModRevision(revision + 1)),
    }
}

/// "The key's last write was at `mod_revision`" (0: the key does not exist).
pub fn mod_revision_is(key: &[u8], mod_revision: i64) -> Compare {
    Compare {
        result: compare::CompareResult::Equal as i32,
        target: compare::CompareTarget::Mod as i32,
        key: key.to_vec(),
        range_end: Vec::new(),
        target_union: Some(compare::TargetUnion::ModRevision(mod_revision)),
    }
}

/// A put, as one operation of a transaction.
pub fn put(key: Vec<u8>, value: Vec<u8>) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestPut(pb::PutRequest {
            key,
            value,
            ..Default::default()
        })),
    }
}

/// A delete of one key, as one operation of a transaction.
pub fn delete(key: Vec<u8>) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestDeleteRange(
            pb::DeleteRangeRequest {
                key,
                ..Default::default()
            },
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::{MAX_PAGE, MIN_PAGE, PAGE_BYTES, page_size, prefix_end};

    #[test]
    fn pages_hold_about_page_bytes_within_bounds() {
        assert_eq!(page_size(10_000, 1_300_000), (PAGE_BYTES / 130) as i64);
        assert_eq!(page_size(1, 1), MAX_PAGE as i64);
        assert_eq!(page_size(2, 2 * 1024 * 1024 * 1024), MIN_PAGE as i64);
        assert_eq!(page_size(0, 0), MAX_PAGE as i64);
    }

    #[test]
    fn prefix_end_increments_the_last_byte_below_0xff() {
        assert_eq!(prefix_end(b"/iot-authz/"), b"/iot-authz0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
    }
}

#[cfg(test)]
mod error_tests {
    use super::*;

    #[test]
    fn connect_errors_carry_the_endpoint() {
        assert!(matches!(
            Etcd::connect(&[], None),
            Err(ConnectError::NoEndpoint)
        ));
        let Err(e) = Etcd::connect(&["http://a b".into()], None) else {
            panic!("a URI with a space was taken");
        };
        assert!(
            matches!(&e, ConnectError::Endpoint { url, .. } if url == "http://a b"),
            "{e:?}"
        );
        assert!(
            e.to_string().starts_with("etcd endpoint `http://a b`: "),
            "{e}"
        );
    }
}
