//! A small client of etcd's v3 gRPC API (KV and Watch), generated from the vendored protos
//! (`proto/vendor/etcd/`): ranges read page by page at one revision, transactions, and the
//! watch stream, failing over from an unreachable member to the next.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::proto::etcd::etcdserverpb::{
    self as pb, Compare, RangeRequest, RequestOp, TxnRequest, compare, kv_client::KvClient,
    request_op, watch_client::WatchClient,
};

/// How many keys one range request reads. etcd 3.4 counts every key left in the range
/// for each page, so a read of N keys costs about N²/(2 × PAGE): pages are large.
const PAGE: i64 = 10_000;

/// The largest response accepted from etcd (a page of large objects).
const MAX_RESPONSE_BYTES: usize = 256 * 1024 * 1024;

/// How long one page may take.
const PAGE_TIMEOUT: Duration = Duration::from_secs(5);

/// TLS for the connection to etcd (`https://` endpoints).
#[derive(Debug, Clone, Default)]
pub struct EtcdTls {
    /// PEM bundle of the certificate authorities trusted for etcd's certificate.
    pub ca: Option<Vec<u8>>,
    /// PEM client certificate and key, when etcd asks for one (`--client-cert-auth`).
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
}

/// A connection to an etcd cluster: one lazily connected channel per endpoint, used one
/// at a time; a request that finds its member unreachable (`UNAVAILABLE`) moves on to the
/// next member and is tried there, so one member down costs one failed attempt.
#[derive(Debug, Clone)]
pub struct Etcd {
    channels: Vec<Channel>,
    current: Arc<AtomicUsize>,
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
    pub fn connect(endpoints: &[String], tls: Option<&EtcdTls>) -> Result<Self, String> {
        if endpoints.is_empty() {
            return Err("no etcd endpoint given".into());
        }
        let mut channels = Vec::new();
        for url in endpoints {
            let mut endpoint = Endpoint::from_shared(url.clone())
                .map_err(|e| {
                    format!(
                        "etcd endpoint `{}`: {e}",
                        crate::policy::syntax::escape(url)
                    )
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
                endpoint = endpoint
                    .tls_config(config)
                    .map_err(|e| format!("etcd TLS: {e}"))?;
            }
            channels.push(endpoint.connect_lazy());
        }
        Ok(Self {
            channels,
            current: Arc::new(AtomicUsize::new(0)),
        })
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

    /// A KV client on the member in use.
    pub fn kv(&self) -> (usize, KvClient<Channel>) {
        let (i, c) = self.channel();
        (
            i,
            KvClient::new(c).max_decoding_message_size(MAX_RESPONSE_BYTES),
        )
    }

    /// A Watch client on the member in use.
    pub fn watch(&self) -> (usize, WatchClient<Channel>) {
        let (i, c) = self.channel();
        (
            i,
            WatchClient::new(c).max_decoding_message_size(MAX_RESPONSE_BYTES),
        )
    }

    /// Runs `call` on the member in use; a member found unreachable (`UNAVAILABLE`) is
    /// left for the next one and the call tried there, each member at most once.
    async fn on_members<T, F, Fut>(&self, mut call: F) -> Result<T, tonic::Status>
    where
        F: FnMut(KvClient<Channel>) -> Fut,
        Fut: Future<Output = Result<T, tonic::Status>>,
    {
        let mut last = tonic::Status::unavailable("no etcd endpoint");
        for _ in 0..self.channels.len().max(1) {
            let (i, kv) = self.kv();
            match call(kv).await {
                Err(s) if s.code() == tonic::Code::Unavailable => {
                    self.failed(i);
                    last = s;
                }
                done => return done,
            }
        }
        Err(last)
    }

    /// Every key under `prefix`, read at one revision (the first page's), page by page.
    /// Returns the pairs in key order and that revision.
    pub async fn range_prefix(&self, prefix: &[u8]) -> Result<(Vec<KeyValue>, i64), tonic::Status> {
        self.on_members(|kv| Self::range_on(kv, prefix)).await
    }

    async fn range_on(
        mut kv: KvClient<Channel>,
        prefix: &[u8],
    ) -> Result<(Vec<KeyValue>, i64), tonic::Status> {
        let end = prefix_end(prefix);
        let mut out = Vec::new();
        let mut start = prefix.to_vec();
        let mut revision = 0;
        loop {
            let page = kv.range(RangeRequest {
                key: start.clone(),
                range_end: end.clone(),
                limit: PAGE,
                revision,
                ..Default::default()
            });
            // Without a quorum a member may hold a linearizable read until its own
            // timeout; a page is given up on sooner, and the read tried again later.
            let response = tokio::time::timeout(PAGE_TIMEOUT, page)
                .await
                .map_err(|_| tonic::Status::unavailable("etcd did not answer in time"))??
                .into_inner();
            if revision == 0 {
                revision = response.header.as_ref().map_or(0, |h| h.revision);
            }
            let more = response.more;
            let last = response.kvs.last().map(|kv| kv.key.clone());
            out.extend(response.kvs.into_iter().map(|kv| KeyValue {
                key: kv.key,
                value: kv.value,
                mod_revision: kv.mod_revision,
            }));
            match (more, last) {
                (true, Some(mut last)) => {
                    last.push(0);
                    start = last;
                }
                _ => return Ok((out, revision)),
            }
        }
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
    use super::prefix_end;

    #[test]
    fn prefix_end_increments_the_last_byte_below_0xff() {
        assert_eq!(prefix_end(b"/iot-authz/"), b"/iot-authz0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
    }
}
