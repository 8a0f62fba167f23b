//! `iot-authz load`: a load generator for the service over loopback. It drives native Check,
//! BatchCheck, CheckHttp, Envoy ext_authz Check, AuthZEN evaluation (HTTP/1.1 keep-alive),
//! plain HTTP through a proxy, or Admin API grants (each optionally followed by a Check at
//! its consistency token on another replica), with a configurable
//! number of connections and requests in flight, closed-loop or at a fixed rate, and reports
//! throughput and latency percentiles.
//!
//! Fixed-rate runs correct for coordinated omission: request `i` is due at `start + i/rate`
//! and its latency is measured from that intended send time, so a stall shows up as the
//! latency every delayed request really saw, not as a gap the generator quietly skipped.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::{
    AttributeContext, CheckRequest as EnvoyCheck, attribute_context,
};
use hdrhistogram::Histogram;
use serde::Serialize;
use tonic::transport::Channel;

use crate::proto::iotauthz::v1 as pb;
use crate::proto::iotauthz::v1::authorizer_client::AuthorizerClient;

/// What to drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Target {
    /// iotauthz.v1.Authorizer/Check
    Check,
    /// iotauthz.v1.Authorizer/BatchCheck (`--batch` checks per call)
    BatchCheck,
    /// envoy.service.auth.v3.Authorization/Check, as Envoy sends it
    ExtAuthz,
    /// plain HTTP GET/PUT through a proxy (URL in --addr)
    Http,
    /// iotauthz.v1.Authorizer/CheckHttp with the principal given (route + evaluation)
    CheckHttp,
    /// AuthZEN `POST /access/v1/evaluation` with a route resource, over HTTP/1.1 keep-alive
    /// (base URL of the HTTP port in --addr): the same work as CheckHttp, framed as AuthZEN
    Authzen,
    /// iotauthz.v1.Admin/CreateRoleAssignment: each request grants the role of `--role` at
    /// `--scope` to a new principal, as `--actor`; with `--check-addr`, each grant is
    /// followed by a Check on that server at the grant's consistency token, and the latency
    /// is the grant's visibility there (from the grant's answer to the allowed Check)
    Assign,
}

/// The grants of `--target assign`.
#[derive(Debug, Clone)]
pub struct WriteOptions {
    /// The principal the Admin API is called as (`x-iotauthz-principal`).
    pub actor: String,
    /// The role granted, and the scope.
    pub role: String,
    pub scope: String,
    /// An action the role grants, checked at the scope (with `check_addr`).
    pub action: String,
    /// Another replica (`host:port`) that must allow each grant at its token.
    pub check_addr: Option<String>,
}

impl Default for WriteOptions {
    fn default() -> Self {
        Self {
            actor: "user:root".into(),
            role: "Reader".into(),
            scope: "/apps/bench".into(),
            action: "Devices/read".into(),
            check_addr: None,
        }
    }
}

/// A load run.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub target: Target,
    /// `host:port` for gRPC targets, a base URL (`http://host:port`) for HTTP.
    pub addr: String,
    pub connections: usize,
    pub concurrency: usize,
    pub duration: Duration,
    /// Requests per second; `None` is closed-loop (as fast as responses come back).
    pub rate: Option<f64>,
    pub batch: usize,
    pub warmup: Duration,
    /// Send only requests the demo policy allows (reads by alice), so that a proxy with and
    /// without authorization does the same work.
    pub only_allowed: bool,
    /// The grants of [`Target::Assign`].
    pub writes: WriteOptions,
}

/// The figures of a run. Latencies in microseconds.
#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    pub target: String,
    pub mode: String,
    pub connections: usize,
    pub concurrency: usize,
    pub seconds: f64,
    pub requests: u64,
    /// Checks answered (requests × batch size for BatchCheck).
    pub checks: u64,
    pub errors: u64,
    /// Why requests failed: each distinct reason (the first [`ERROR_KINDS`]) with how
    /// many failed for it.
    pub error_kinds: std::collections::BTreeMap<String, u64>,
    pub requests_per_second: f64,
    pub checks_per_second: f64,
    pub allowed: u64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
}

/// How many distinct reasons for failed requests a report names (the others are counted
/// under "other reasons").
pub const ERROR_KINDS: usize = 8;

/// Counts one failed request under its reason.
fn count_error(kinds: &std::sync::Mutex<std::collections::BTreeMap<String, u64>>, why: String) {
    let mut kinds = match kinds.lock() {
        Ok(k) => k,
        Err(poisoned) => poisoned.into_inner(),
    };
    let key = if kinds.len() < ERROR_KINDS || kinds.contains_key(&why) {
        why
    } else {
        "other reasons".to_owned()
    };
    *kinds.entry(key).or_default() += 1;
}

const PRINCIPALS: [&str; 4] = [
    "user:alice@contoso.com",
    "user:carol@contoso.com",
    "user:dave@contoso.com",
    "user:nobody@contoso.com",
];
const TARGETS: [&str; 3] = ["line-1", "line-2", "line-3"];

/// The i-th request of the mix over the demo policy: reads, writes and deletes of targets by
/// four principals (about half allowed).
fn mix(i: u64, only_allowed: bool) -> (&'static str, &'static str, String) {
    let (principal, method) = if only_allowed {
        (PRINCIPALS[0], "GET")
    } else {
        (
            PRINCIPALS[(i % 4) as usize],
            ["GET", "PUT", "DELETE"][((i / 4) % 3) as usize],
        )
    };
    let target = TARGETS[((i / 12) % 3) as usize];
    let path = format!(
        "/subscriptions/s1/resourceGroups/factory/providers/Microsoft.Edge/targets/{target}"
    );
    (principal, method, path)
}

fn action_of(method: &str) -> &'static str {
    match method {
        "GET" => "Microsoft.Edge/targets/read",
        "PUT" => "Microsoft.Edge/targets/write",
        _ => "Microsoft.Edge/targets/delete",
    }
}

/// A BatchCheckRequest whose items were encoded once up front: `repeated bytes` has the
/// same wire format as `repeated CheckRequest`, so the generator spends no time building
/// and encoding requests (as with h2load and a prebuilt body).
#[derive(Clone, PartialEq, prost::Message)]
struct PreEncodedBatch {
    #[prost(bytes = "bytes", repeated, tag = "1")]
    checks: Vec<prost::bytes::Bytes>,
}

/// The only part of a BatchCheckResponse the generator reads: each result's `allowed`. The
/// decoder skips the reasons and revisions without allocating them.
#[derive(Clone, PartialEq, prost::Message)]
struct AllowedOnly {
    #[prost(message, repeated, tag = "1")]
    results: Vec<AllowedField>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct AllowedField {
    #[prost(bool, tag = "1")]
    allowed: bool,
}

/// Distinct prebuilt batches the generator cycles through.
const BATCH_VARIANTS: u64 = 8;

fn prebuilt_batches(batch: usize, only_allowed: bool) -> Vec<PreEncodedBatch> {
    use prost::Message as _;
    (0..BATCH_VARIANTS)
        .map(|v| PreEncodedBatch {
            checks: (0..batch as u64)
                .map(|k| {
                    let (principal, method, scope) = mix(v * batch as u64 + k, only_allowed);
                    pb::CheckRequest {
                        principal: principal.into(),
                        action: action_of(method).into(),
                        scope,
                        ..Default::default()
                    }
                    .encode_to_vec()
                    .into()
                })
                .collect(),
        })
        .collect()
}

enum Client {
    Batch(tonic::client::Grpc<Channel>, Arc<Vec<PreEncodedBatch>>),
    Native(AuthorizerClient<Channel>),
    CheckHttp(AuthorizerClient<Channel>),
    Envoy(AuthorizationClient<Channel>),
    Http(reqwest::Client, String),
    Authzen(reqwest::Client, String),
    Assign(Box<Writer>),
}

/// A granting client, and the replica that must see each grant.
#[derive(Clone)]
struct Writer {
    admin: crate::proto::iotauthz::v1::admin_client::AdminClient<Channel>,
    check: Option<AuthorizerClient<Channel>>,
    options: WriteOptions,
    /// Tells this run's principals from an earlier run's.
    run: u64,
}

/// Why one request of the load failed (counted as an error; the run goes on).
#[derive(Debug, thiserror::Error)]
enum SendError {
    #[error("{0}")]
    Grpc(#[from] tonic::Status),
    #[error("{0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("{0}")]
    Http(#[from] reqwest::Error),
    #[error("status {0}")]
    Status(reqwest::StatusCode),
    #[error("bad --actor")]
    BadActor,
    #[error("bad HTTP method")]
    Method,
    #[error("the grant was not seen at its token")]
    NotSeen,
    #[error("{got} results for {sent} checks")]
    ResultCount { got: usize, sent: usize },
    #[error("not a check")]
    NotACheck,
}

impl Writer {
    /// Grants the role to principal `i` of this run; with a replica to check, then asks it
    /// at the grant's token. Returns (1, 1 if allowed) and, with a check, when the grant
    /// was answered (the visibility is measured from there).
    async fn send(&mut self, i: u64) -> Result<(u64, u64, Option<Instant>), SendError> {
        let principal = format!("user:load-{}-{i}", self.run);
        let mut request = tonic::Request::new(pb::CreateRoleAssignmentRequest {
            assignment: Some(pb::RoleAssignment {
                principal: principal.clone(),
                role: self.options.role.clone(),
                scope: self.options.scope.clone(),
                ..Default::default()
            }),
        });
        let actor = self
            .options
            .actor
            .parse()
            .map_err(|_| SendError::BadActor)?;
        request.metadata_mut().insert("x-iotauthz-principal", actor);
        let token = self
            .admin
            .create_role_assignment(request)
            .await?
            .into_inner()
            .token;
        let Some(check) = self.check.as_mut() else {
            return Ok((1, 1, None));
        };
        let written = Instant::now();
        let r = check
            .check(pb::CheckRequest {
                principal,
                action: self.options.action.clone(),
                scope: self.options.scope.clone(),
                at_least: token,
                ..Default::default()
            })
            .await?
            .into_inner();
        if !r.allowed {
            return Err(SendError::NotSeen);
        }
        Ok((1, 1, Some(written)))
    }
}

impl Client {
    /// Sends request `i`; returns (checks answered, checks allowed), and the moment
    /// latency is measured from when it is not the intended send time (a grant's answer,
    /// for its visibility).
    async fn send(
        &mut self,
        batch: usize,
        only_allowed: bool,
        i: u64,
    ) -> Result<(u64, u64, Option<Instant>), SendError> {
        if let Client::Assign(writer) = self {
            return writer.send(i).await;
        }
        self.send_check(batch, only_allowed, i)
            .await
            .map(|(checks, allowed)| (checks, allowed, None))
    }

    async fn send_check(
        &mut self,
        batch: usize,
        only_allowed: bool,
        i: u64,
    ) -> Result<(u64, u64), SendError> {
        match self {
            Client::Assign(_) => Err(SendError::NotACheck),
            Client::Batch(grpc, batches) => {
                let body = batches[(i % BATCH_VARIANTS) as usize].clone();
                grpc.ready().await?;
                let path = tonic::codegen::http::uri::PathAndQuery::from_static(
                    "/iotauthz.v1.Authorizer/BatchCheck",
                );
                let codec = tonic_prost::ProstCodec::<PreEncodedBatch, AllowedOnly>::default();
                let r = grpc.unary(tonic::Request::new(body), path, codec).await?;
                let results = r.into_inner().results;
                if results.len() != batch {
                    return Err(SendError::ResultCount {
                        got: results.len(),
                        sent: batch,
                    });
                }
                Ok((
                    results.len() as u64,
                    results.iter().filter(|x| x.allowed).count() as u64,
                ))
            }
            Client::Native(c) => {
                let (principal, method, scope) = mix(i, only_allowed);
                let r = c
                    .check(pb::CheckRequest {
                        principal: principal.into(),
                        action: action_of(method).into(),
                        scope,
                        ..Default::default()
                    })
                    .await?;
                Ok((1, u64::from(r.into_inner().allowed)))
            }
            Client::CheckHttp(c) => {
                let (principal, method, path) = mix(i, only_allowed);
                let r = c
                    .check_http(pb::CheckHttpRequest {
                        principal: principal.into(),
                        method: method.into(),
                        path,
                        ..Default::default()
                    })
                    .await?;
                Ok((1, u64::from(r.into_inner().allowed)))
            }
            Client::Envoy(c) => {
                let (principal, method, path) = mix(i, only_allowed);
                let mut headers = HashMap::new();
                headers.insert("x-iotauthz-principal".to_owned(), principal.to_owned());
                headers.insert(":authority".to_owned(), "factory.example".to_owned());
                let req = EnvoyCheck {
                    attributes: Some(AttributeContext {
                        request: Some(attribute_context::Request {
                            http: Some(attribute_context::HttpRequest {
                                method: method.into(),
                                path,
                                headers,
                                ..Default::default()
                            }),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                };
                let r = c.check(req).await?.into_inner();
                Ok((1, u64::from(r.status.is_some_and(|s| s.code == 0))))
            }
            Client::Authzen(c, url) => {
                let (principal, method, path) = mix(i, only_allowed);
                let (kind, id) = principal.split_once(':').unwrap_or(("user", principal));
                let body = serde_json::json!({
                    "subject": {"type": kind, "id": id},
                    "action": {"name": method},
                    "resource": {"type": "route", "id": path},
                });
                let r = c
                    .post(url.as_str())
                    .header("content-type", "application/json")
                    .body(body.to_string())
                    .send()
                    .await?;
                if !r.status().is_success() {
                    return Err(SendError::Status(r.status()));
                }
                let bytes = r.bytes().await?;
                let allowed = serde_json::from_slice::<serde_json::Value>(&bytes)
                    .ok()
                    .and_then(|v| v["decision"].as_bool())
                    .unwrap_or(false);
                Ok((1, u64::from(allowed)))
            }
            Client::Http(c, base) => {
                let (principal, method, path) = mix(i, only_allowed);
                let method = reqwest::Method::from_bytes(method.as_bytes())
                    .map_err(|_| SendError::Method)?;
                let r = c
                    .request(method, format!("{base}{path}"))
                    .header("x-iotauthz-principal", principal)
                    .send()
                    .await?;
                let ok = r.status().is_success();
                let _ = r.bytes().await?;
                Ok((1, u64::from(ok)))
            }
        }
    }
}

async fn connect(options: &LoadOptions) -> anyhow::Result<Vec<Client>> {
    let mut clients = Vec::new();
    if matches!(options.target, Target::Http | Target::Authzen) {
        crate::install_crypto_provider();
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(options.connections)
            .http1_only()
            .tcp_nodelay(true)
            .build()?;
        let base = options.addr.trim_end_matches('/').to_owned();
        clients.push(if options.target == Target::Authzen {
            let base = if base.contains("://") {
                base
            } else {
                format!("http://{base}")
            };
            Client::Authzen(client, format!("{base}/access/v1/evaluation"))
        } else {
            Client::Http(client, base)
        });
        return Ok(clients);
    }
    let batches = Arc::new(if options.target == Target::BatchCheck {
        prebuilt_batches(options.batch, options.only_allowed)
    } else {
        Vec::new()
    });
    let run = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    for _ in 0..options.connections.max(1) {
        let channel = Channel::from_shared(format!("http://{}", options.addr))?
            .tcp_nodelay(true)
            .connect()
            .await?;
        if options.target == Target::Assign {
            let check = match &options.writes.check_addr {
                Some(addr) => Some(AuthorizerClient::new(
                    Channel::from_shared(format!("http://{addr}"))?
                        .tcp_nodelay(true)
                        .connect()
                        .await?,
                )),
                None => None,
            };
            clients.push(Client::Assign(Box::new(Writer {
                admin: crate::proto::iotauthz::v1::admin_client::AdminClient::new(channel),
                check,
                options: options.writes.clone(),
                run,
            })));
            continue;
        }
        clients.push(match options.target {
            Target::ExtAuthz => Client::Envoy(AuthorizationClient::new(channel)),
            Target::BatchCheck => Client::Batch(
                tonic::client::Grpc::new(channel).max_decoding_message_size(64 << 20),
                batches.clone(),
            ),
            Target::CheckHttp => Client::CheckHttp(AuthorizerClient::new(channel)),
            _ => Client::Native(AuthorizerClient::new(channel).max_decoding_message_size(64 << 20)),
        });
    }
    Ok(clients)
}

/// Sleeps the calling OS thread until `due` with microsecond precision: the kernel sleep
/// for all but the last stretch, then a spin until the deadline. Tokio's timer cannot
/// pace a fixed rate: it rounds every deadline up to the next millisecond, which would
/// add up to 1 ms to every latency measured from the intended send time. The spin does
/// not yield: a yielding thread hands its core to any other runnable thread for that
/// thread's whole time slice (milliseconds, even to a thread of the idle class), and the
/// request it was about to send would be counted that late, the pacer's own lateness
/// measured as the server's.
fn sleep_until_precise(due: Instant) {
    const SPIN: Duration = Duration::from_micros(60);
    loop {
        let now = Instant::now();
        if now >= due {
            return;
        }
        let left = due - now;
        if left > SPIN {
            std::thread::sleep(left - SPIN);
        } else {
            std::hint::spin_loop();
        }
    }
}

/// Asks the kernel to wake the calling thread's sleeps on time: by default a sleep may
/// end up to 50 µs late, so that wake-ups can be grouped (Linux's timer slack).
fn precise_timers() {
    #[cfg(target_os = "linux")]
    if let Err(e) = rustix::thread::set_current_timer_slack(std::num::NonZeroU64::new(1)) {
        tracing::debug!(error = %e, "the load generator's pacing keeps the default timer slack");
    }
}

/// Request `i`'s intended send time at a fixed rate.
fn due_time(origin: Instant, i: u64, rate: f64) -> Instant {
    origin + Duration::from_secs_f64(i as f64 / rate)
}

/// Runs the load and reports.
pub async fn run(options: LoadOptions) -> anyhow::Result<LoadReport> {
    let clients = connect(&options).await?;
    let total_checks = Arc::new(AtomicU64::new(0));
    let total_allowed = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let error_kinds = Arc::new(std::sync::Mutex::new(std::collections::BTreeMap::new()));
    let origin = Instant::now();
    let start = origin + options.warmup;
    let end = start + options.duration;
    // Closed loop: each worker takes the next request number as soon as it is free. Fixed
    // rate: a pacing thread releases request `i` at its due time into a queue the workers
    // drain, so a stall (all workers busy) leaves requests waiting in the queue and their
    // latency, measured from the due time, shows it.
    let next = Arc::new(AtomicU64::new(0));
    let paced = match options.rate {
        Some(rate) if rate > 0.0 => {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<u64>();
            std::thread::Builder::new()
                .name("load-pacer".into())
                .spawn(move || {
                    precise_timers();
                    for i in 0u64.. {
                        let due = due_time(origin, i, rate);
                        if due >= end {
                            break;
                        }
                        sleep_until_precise(due);
                        if tx.send(i).is_err() {
                            break;
                        }
                    }
                })?;
            Some((rate, Arc::new(tokio::sync::Mutex::new(rx))))
        }
        _ => None,
    };
    let mut tasks = Vec::new();
    let workers = options.concurrency.max(1);
    for w in 0..workers {
        // Clients (connections) are shared round-robin between workers.
        let mut client = match &clients[w % clients.len()] {
            Client::Batch(c, b) => Client::Batch(c.clone(), b.clone()),
            Client::Native(c) => Client::Native(c.clone()),
            Client::CheckHttp(c) => Client::CheckHttp(c.clone()),
            Client::Envoy(c) => Client::Envoy(c.clone()),
            Client::Http(c, b) => Client::Http(c.clone(), b.clone()),
            Client::Authzen(c, b) => Client::Authzen(c.clone(), b.clone()),
            Client::Assign(w) => Client::Assign(w.clone()),
        };
        let (next, total_checks, total_allowed, errors, error_kinds) = (
            next.clone(),
            total_checks.clone(),
            total_allowed.clone(),
            errors.clone(),
            error_kinds.clone(),
        );
        let paced = paced.clone();
        let options = options.clone();
        tasks.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).ok();
            loop {
                // The intended send time: the fixed-rate schedule, or now (closed loop).
                let (i, intended) = match &paced {
                    Some((rate, queue)) => {
                        let Some(i) = queue.lock().await.recv().await else {
                            break;
                        };
                        (i, due_time(origin, i, *rate))
                    }
                    None => (next.fetch_add(1, Ordering::Relaxed), Instant::now()),
                };
                if intended >= end {
                    break;
                }
                let result = client.send(options.batch, options.only_allowed, i).await;
                let done = Instant::now();
                if intended < start {
                    continue; // warm-up
                }
                match result {
                    Ok((checks, allowed, from)) => {
                        total_checks.fetch_add(checks, Ordering::Relaxed);
                        total_allowed.fetch_add(allowed, Ordering::Relaxed);
                        if let Some(h) = hist.as_mut() {
                            let from = from.unwrap_or(intended);
                            let nanos =
                                u64::try_from(done.saturating_duration_since(from).as_nanos())
                                    .unwrap_or(u64::MAX);
                            let _ = h.record(nanos.max(1));
                        }
                    }
                    Err(e) => {
                        count_error(&error_kinds, e.to_string());
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            hist
        }));
    }
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)?;
    for t in tasks {
        if let Some(h) = t.await? {
            hist.add(h)?;
        }
    }
    let seconds = options.duration.as_secs_f64();
    let requests = hist.len() + errors.load(Ordering::Relaxed);
    let checks = total_checks.load(Ordering::Relaxed);
    let us = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    Ok(LoadReport {
        target: format!("{:?}", options.target),
        mode: options
            .rate
            .map_or_else(|| "closed-loop".to_owned(), |r| format!("fixed-rate {r}/s")),
        connections: options.connections,
        concurrency: workers,
        seconds,
        requests,
        checks,
        errors: errors.load(Ordering::Relaxed),
        error_kinds: std::mem::take(&mut *error_kinds.lock().unwrap_or_else(|p| p.into_inner())),
        requests_per_second: hist.len() as f64 / seconds,
        checks_per_second: checks as f64 / seconds,
        allowed: total_allowed.load(Ordering::Relaxed),
        p50_us: us(0.5),
        p90_us: us(0.9),
        p99_us: us(0.99),
        p999_us: us(0.999),
        max_us: hist.max() as f64 / 1000.0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_os = "linux")]
    #[test]
    fn the_pacer_asks_for_timers_without_slack_on_its_own_thread_only() {
        let before = rustix::thread::current_timer_slack().unwrap();
        let paced = std::thread::spawn(|| {
            precise_timers();
            rustix::thread::current_timer_slack().unwrap()
        })
        .join()
        .unwrap();
        assert_eq!(paced, 1);
        assert_eq!(rustix::thread::current_timer_slack().unwrap(), before);
    }

    #[test]
    fn failed_requests_are_counted_by_reason_and_the_reasons_are_bounded() {
        let kinds = std::sync::Mutex::new(std::collections::BTreeMap::new());
        count_error(&kinds, "status Unavailable".into());
        count_error(&kinds, "status Unavailable".into());
        for n in 0..ERROR_KINDS + 3 {
            count_error(&kinds, format!("reason {n}"));
        }
        count_error(&kinds, "status Unavailable".into());
        let kinds = kinds.into_inner().unwrap();
        assert_eq!(kinds.len(), ERROR_KINDS + 1);
        assert_eq!(kinds["status Unavailable"], 3);
        assert_eq!(kinds["other reasons"], 4);
        assert_eq!(kinds.values().sum::<u64>(), ERROR_KINDS as u64 + 6);
    }

    #[test]
    fn a_precise_sleep_ends_at_its_deadline_not_before() {
        for micros in [0, 30, 200, 2_000] {
            let due = Instant::now() + Duration::from_micros(micros);
            sleep_until_precise(due);
            assert!(
                Instant::now() >= due,
                "woke before the deadline ({micros} µs)"
            );
        }
    }
}
