//! Following the store: read the prefix once, then apply etcd's watch from that revision;
//! a compacted or broken watch (or an unreachable etcd) is resumed by a fresh read, with
//! backoff. A prober reads one key linearizably now and then, so that the status says how
//! long ago etcd last answered even when nothing changes.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::{App, Store, objects};
use crate::proto::etcd::etcdserverpb::{
    WatchCreateRequest, WatchProgressRequest, WatchRequest, WatchResponse,
    watch_request::RequestUnion,
};
use crate::proto::etcd::mvccpb::event::EventType;

/// The first and the longest wait between attempts to reach etcd.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// How often the prober asks etcd, and how long it waits for an answer.
const PROBE_EVERY: Duration = Duration::from_secs(1);
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The most watch responses applied before one compile.
const MAX_BATCH: usize = 1000;

/// Why a watch ended.
enum WatchEnd {
    /// Read everything again (compacted, canceled, or the stream failed).
    Reload(String),
}

/// Why the store could not be read.
#[derive(Debug, thiserror::Error)]
enum LoadError {
    /// etcd refused or failed the read (its status, shown by [`status_text`]).
    #[error("{}", status_text(.0))]
    Etcd(tonic::Status),
    /// The blocking task that compiles what was read did not finish.
    #[error("store load failed: {0}")]
    Compile(tokio::task::JoinError),
}

/// Follows the store until `stop` completes.
pub async fn follow(store: Arc<Store>, app: Arc<App>, stop: impl Future<Output = ()>) {
    tokio::pin!(stop);
    let prober = tokio::spawn(probe(store.clone()));
    let mut backoff = BACKOFF_MIN;
    loop {
        let attempt = async {
            let revision = load(&store, &app).await?;
            Ok::<_, LoadError>(watch(&store, &app, revision).await)
        };
        let outcome = tokio::select! {
            () = &mut stop => break,
            outcome = attempt => outcome,
        };
        match outcome {
            Ok(WatchEnd::Reload(why)) => {
                tracing::warn!(reason = %why, "store watch ended; reading the store again");
                backoff = BACKOFF_MIN;
            }
            Err(e) => {
                store.lost();
                if app.policy().current().is_none() {
                    app.policy()
                        .record_error(format!("the store could not be read: {e}"));
                }
                tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "the store could not be read");
            }
        }
        // A request waiting for a consistency token cuts the wait short.
        tokio::select! {
            () = &mut stop => break,
            () = tokio::time::sleep(backoff) => {}
            () = store.progress.notified() => {}
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
    prober.abort();
}

/// Reads every object under the prefix and installs the policy they make with the files.
/// Returns the revision read at.
async fn load(store: &Arc<Store>, app: &Arc<App>) -> Result<i64, LoadError> {
    let started = std::time::Instant::now();
    let prefix = store.options.prefix.as_bytes().to_vec();
    let max = store.options.max_value_bytes;
    // Each page is decoded on a blocking thread while the next one is read.
    let skip = prefix.len();
    let (pages, revision) = store
        .etcd
        .range_prefix_map(&prefix, move |page| decode_page(page, skip, max))
        .await
        .map_err(LoadError::Etcd)?;
    store.contact();
    let read = started.elapsed();
    let (s, a) = (store.clone(), app.clone());
    let (count, outcome) = tokio::task::spawn_blocking(move || {
        // In key order already (etcd's), which the map's bulk build finds at once; one
        // vector of the right size, which the build reuses, instead of one that grows.
        let mut all = Vec::with_capacity(pages.iter().map(Vec::len).sum());
        for page in pages {
            all.extend(page);
        }
        let objects: objects::Objects = all.into_iter().collect();
        let count = objects.len();
        {
            let mut inputs = s.inputs();
            inputs.objects = Some(objects);
            inputs.revision = revision;
            inputs.consistent = false;
            // A fresh read compiles in full (and makes a new base).
            inputs.pending.clear();
            inputs.incremental = Default::default();
        }
        (count, s.recompile(&a))
    })
    .await
    .map_err(LoadError::Compile)?;
    tracing::info!(
        revision,
        objects = count,
        read_ms = read.as_millis() as u64,
        total_ms = started.elapsed().as_millis() as u64,
        outcome = ?outcome,
        "store read"
    );
    Ok(revision)
}

/// Decodes one page of the prefix's keys (`skip`: the prefix's length) into objects; the
/// store's own keys (`meta/`) are left out.
fn decode_page(
    page: Vec<super::etcd::KeyValue>,
    skip: usize,
    max: usize,
) -> Vec<(String, Result<objects::Object, objects::ObjectError>)> {
    // Sized for the page at once (collecting a `filter_map` grows from empty).
    let mut objects = Vec::with_capacity(page.len());
    objects.extend(page.into_iter().filter_map(|kv| {
        let rel = &kv.key[skip.min(kv.key.len())..];
        let decoded = match objects::decode(rel, &kv.value, max) {
            Ok(Some(o)) => Ok(o),
            Ok(None) => return None,
            Err(e) => Err(e),
        };
        Some((String::from_utf8_lossy(rel).into_owned(), decoded))
    }));
    objects
}

/// The watch's next message if it comes before `until` and no request waits for this
/// replica to catch up (`None` otherwise: the gathering window is over).
async fn next_in_window(
    store: &Store,
    stream: &mut tonic::Streaming<WatchResponse>,
    until: tokio::time::Instant,
) -> Option<Result<Option<WatchResponse>, tonic::Status>> {
    loop {
        let until = if store.in_a_hurry() {
            tokio::time::Instant::now()
        } else {
            until
        };
        tokio::select! {
            biased;
            m = tokio::time::timeout_at(until, stream.message()) => return m.ok(),
            // A wake-up left from a request that no longer waits (`Notify` keeps one for
            // the next waiter) does not end the window.
            () = store.hurry.notified() => if store.in_a_hurry() {
                return None;
            },
        }
    }
}

/// Applies the watch from `revision + 1` until it ends.
async fn watch(store: &Arc<Store>, app: &Arc<App>, revision: i64) -> WatchEnd {
    let prefix = store.options.prefix.as_bytes().to_vec();
    let (tx, rx) = mpsc::channel(4);
    let create = WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
            key: prefix.clone(),
            range_end: super::etcd::prefix_end(&prefix),
            start_revision: revision + 1,
            ..Default::default()
        })),
    };
    if tx.send(create).await.is_err() {
        return WatchEnd::Reload("watch request not sent".into());
    }
    let (member, mut client) = store.etcd.watch();
    let mut stream = match client.watch(ReceiverStream::new(rx)).await {
        Ok(s) => s.into_inner(),
        Err(s) => {
            store.etcd.failed(member);
            return WatchEnd::Reload(status_text(&s));
        }
    };
    let max = store.options.max_value_bytes;
    // Changes applied to the objects and not compiled yet: responses already waiting are
    // applied first, so a burst of writes costs one compile, not one per write.
    let mut pending = 0usize;
    // When the last compile ended (the load's, at first), and until when the changes
    // applied are gathered before they are compiled: a window after the last compile, so
    // a change after a quiet spell is compiled at once and a stream of changes is
    // compiled once a window.
    let mut compiled_at = tokio::time::Instant::now();
    let mut gather_until = compiled_at;
    loop {
        // A message taken while looking for more changes, to be handled after the compile.
        let mut carried = None;
        if pending > 0 {
            // `timeout` polls the message first: a response already here is taken at once,
            // and, on a replica that did not make the change itself, others are awaited
            // until the gathering window closes (up to a bound, so that a steady stream of
            // writes still gets compiled). A request waiting for this replica to catch up
            // ends the window at once.
            if pending < MAX_BATCH {
                match next_in_window(store, &mut stream, gather_until).await {
                    Some(Ok(Some(r)))
                        if !r.events.is_empty() && r.compact_revision == 0 && !r.canceled =>
                    {
                        store.contact();
                        if let Err(end) = apply_off_runtime(store, &prefix, max, r.events).await {
                            return end;
                        }
                        pending += 1;
                        continue;
                    }
                    Some(other) => carried = Some(other),
                    None => {}
                }
            }
            pending = 0;
            if let Err(end) = compile(store, app).await {
                return end;
            }
            compiled_at = tokio::time::Instant::now();
        }
        let message = match carried {
            Some(m) => m,
            None => tokio::select! {
                m = stream.message() => m,
                () = store.progress.notified() => {
                    let progress = WatchRequest {
                        request_union: Some(RequestUnion::ProgressRequest(WatchProgressRequest {})),
                    };
                    if tx.send(progress).await.is_err() {
                        return WatchEnd::Reload("watch request not sent".into());
                    }
                    continue;
                }
            },
        };
        let response = match message {
            Ok(Some(r)) => r,
            Ok(None) => {
                store.etcd.failed(member);
                return WatchEnd::Reload("the watch stream ended".into());
            }
            Err(s) => {
                store.etcd.failed(member);
                return WatchEnd::Reload(status_text(&s));
            }
        };
        store.contact();
        if response.compact_revision != 0 {
            return WatchEnd::Reload(format!(
                "the watch was compacted at revision {}",
                response.compact_revision
            ));
        }
        if response.canceled {
            return WatchEnd::Reload(format!(
                "the watch was canceled: {}",
                response.cancel_reason
            ));
        }
        if response.events.is_empty() {
            let header = response.header.as_ref().map_or(0, |h| h.revision);
            // Created, or a progress report: nothing under the prefix changed up to here.
            // The report is checked against the store before it is believed (a watch that
            // is still catching up may be sent one early), with a read of the keys written
            // since: none, so the policy is current at `header` too.
            let since = match off_runtime(store, |s| s.inputs().revision).await {
                Ok(since) => since,
                Err(end) => return end,
            };
            if !response.created && header > since {
                match store.etcd.written_since(&prefix, since, header).await {
                    Ok(false) => {
                        let app = app.clone();
                        if let Err(end) =
                            off_runtime(store, move |s| s.advance(&*app, header)).await
                        {
                            return end;
                        }
                    }
                    Ok(true) => {}
                    Err(s) => tracing::debug!(error = %status_text(&s), "progress not confirmed"),
                }
            }
            continue;
        }
        if let Err(end) = apply_off_runtime(store, &prefix, max, response.events).await {
            return end;
        }
        pending = 1;
        gather_until = compiled_at
            .checked_add(store.options.apply_window)
            .unwrap_or(compiled_at);
        // The header's revision is not a promise that every event up to it has been sent
        // (a watch catching up gets its history in batches): the policy answers at the
        // last event applied, and only a confirmed progress report moves it further.
    }
}

/// Runs `f` on the store's own thread ([`super::worker`]): the inputs' lock may be held
/// for a while (a compaction gathers a million objects under it), and a runtime worker
/// waiting for it would hold up the requests queued on that worker.
async fn off_runtime<T: Send + 'static>(
    store: &Arc<Store>,
    f: impl FnOnce(&Arc<Store>) -> T + Send + 'static,
) -> Result<T, WatchEnd> {
    let s = store.clone();
    store
        .worker
        .run(move || f(&s))
        .await
        .map_err(|e| WatchEnd::Reload(format!("store change not applied: {e}")))
}

/// [`apply`] on the store's thread (see [`off_runtime`]).
async fn apply_off_runtime(
    store: &Arc<Store>,
    prefix: &[u8],
    max: usize,
    events: Vec<crate::proto::etcd::mvccpb::Event>,
) -> Result<(), WatchEnd> {
    let prefix = prefix.to_vec();
    off_runtime(store, move |s| apply(s, &prefix, max, &events)).await
}

/// Applies watch events to the store's objects (not compiled yet).
fn apply(store: &Store, prefix: &[u8], max: usize, events: &[crate::proto::etcd::mvccpb::Event]) {
    let mut inputs = store.inputs();
    let mut last = inputs.revision;
    let inputs = &mut *inputs;
    let Some(objects) = inputs.objects.as_mut() else {
        return;
    };
    for event in events {
        let Some(kv) = &event.kv else { continue };
        last = last.max(kv.mod_revision);
        let rel = &kv.key[prefix.len().min(kv.key.len())..];
        let key = String::from_utf8_lossy(rel).into_owned();
        if !key.starts_with(objects::META) {
            inputs.pending.insert(key.clone());
        }
        if event.r#type == EventType::Delete as i32 {
            objects.remove(&key);
            continue;
        }
        match objects::decode(rel, &kv.value, max) {
            Ok(Some(o)) => {
                objects.insert(key, Ok(o));
            }
            Ok(None) => {}
            Err(e) => {
                objects.insert(key, Err(e));
            }
        }
    }
    inputs.revision = last;
}

/// Compiles and installs (or rejects) the objects as they are now, on the store's thread.
async fn compile(store: &Arc<Store>, app: &Arc<App>) -> Result<(), WatchEnd> {
    let app = app.clone();
    let outcome = off_runtime(store, move |s| s.recompile(&app)).await?;
    tracing::debug!(outcome = ?outcome, "store change applied");
    Ok(())
}

/// Asks etcd for one key now and then (a linearizable read, so a minority member does not
/// count as contact), recording whether and when it answered.
async fn probe(store: Arc<Store>) {
    let key = format!("{}{}write", store.options.prefix, objects::META).into_bytes();
    loop {
        match tokio::time::timeout(PROBE_TIMEOUT, store.etcd.get(&key)).await {
            Ok(Ok(_)) => store.contact(),
            _ => store.lost(),
        }
        tokio::time::sleep(PROBE_EVERY).await;
    }
}

/// A gRPC status from etcd, for messages (etcd's own message, which holds no user data).
pub fn status_text(status: &tonic::Status) -> String {
    let message = status.message();
    if message.is_empty() {
        format!("etcd: {:?}", status.code())
    } else {
        format!(
            "etcd: {:?}: {}",
            status.code(),
            crate::policy::syntax::escape_controls(message)
        )
    }
}
