//! Prometheus metrics (`iot_authz_*`, base units, `_total` counters).

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CheckLabels {
    pub api: &'static str,
    pub decision: &'static str,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApiLabels {
    pub api: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RevisionLabels {
    pub revision: String,
}

/// Every metric the server exports.
#[derive(Debug)]
pub struct Metrics {
    /// Tells this set of metrics apart in the per-thread [`HOT`] handles.
    id: u64,
    registry: Registry,
    pub checks: Family<CheckLabels, Counter>,
    pub check_duration: Family<ApiLabels, Histogram>,
    pub rpc_errors: Family<ApiLabels, Counter>,
    pub reloads: Family<ResultLabels, Counter>,
    pub policy_loaded: Gauge<f64, AtomicU64>,
    pub policy_info: Family<RevisionLabels, Gauge>,
    pub cache: super::cache::CacheCounters,
    pub decision_log: super::decision_log::LogCounters,
    pub keys: crate::sources::jwks::KeyCounters,
    /// With a store (SPEC §9): the etcd revision the policy answers at, the seconds since
    /// etcd last answered (set when scraped), and whether it answers now.
    pub store_revision: Gauge,
    pub store_contact_age: Gauge<f64, AtomicU64>,
    pub store_reachable: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("iot_authz");
        let checks = Family::<CheckLabels, Counter>::default();
        registry.register(
            "checks",
            "Authorization decisions by API, decision and reason",
            checks.clone(),
        );
        let check_duration = Family::<ApiLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.000_005, 2.0, 20))
        });
        registry.register(
            "check_duration_seconds",
            "Time to answer one authorization request, by API",
            check_duration.clone(),
        );
        let rpc_errors = Family::<ApiLabels, Counter>::default();
        registry.register(
            "request_errors",
            "Requests rejected as invalid, by API",
            rpc_errors.clone(),
        );
        let reloads = Family::<ResultLabels, Counter>::default();
        registry.register(
            "policy_reloads",
            "Policy loads by result (success, failure)",
            reloads.clone(),
        );
        let policy_loaded = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "policy_loaded_timestamp_seconds",
            "Unix time the current policy was loaded",
            policy_loaded.clone(),
        );
        let policy_info = Family::<RevisionLabels, Gauge>::default();
        registry.register(
            "policy_info",
            "The current policy revision (value 1)",
            policy_info.clone(),
        );
        let cache = super::cache::CacheCounters::default();
        registry.register(
            "decision_cache_hits",
            "Decisions answered from the cache",
            cache.hits.clone(),
        );
        registry.register(
            "decision_cache_misses",
            "Decisions evaluated because the cache had no valid entry",
            cache.misses.clone(),
        );
        registry.register(
            "decision_cache_evictions",
            "Cache entries evicted for size or age",
            cache.evictions.clone(),
        );
        let decision_log = super::decision_log::LogCounters::default();
        registry.register(
            "decision_log_lines_written",
            "Decision log lines written",
            decision_log.written.clone(),
        );
        registry.register(
            "decision_log_lines_dropped",
            "Decision log lines dropped because the writer fell behind",
            decision_log.dropped.clone(),
        );
        registry.register(
            "decision_log_write_errors",
            "Decision log write or flush failures",
            decision_log.write_errors.clone(),
        );
        let keys = crate::sources::jwks::KeyCounters::default();
        registry.register(
            "token_rejections",
            "Bearer tokens refused, by issuer and reason",
            keys.rejections.clone(),
        );
        registry.register(
            "jwks_fetches",
            "Fetches of bearer-token key sets, by issuer and result",
            keys.fetches.clone(),
        );
        registry.register(
            "token_cache_hits",
            "Bearer tokens answered from the verification cache",
            keys.cache_hits.clone(),
        );
        registry.register(
            "token_cache_misses",
            "Bearer tokens verified because the cache did not have them",
            keys.cache_misses.clone(),
        );
        let store_revision = Gauge::default();
        registry.register(
            "store_revision",
            "The etcd revision the serving policy answers at (with a store)",
            store_revision.clone(),
        );
        let store_contact_age = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "store_seconds_since_contact",
            "Seconds since etcd last answered (with a store)",
            store_contact_age.clone(),
        );
        let store_reachable = Gauge::default();
        registry.register(
            "store_reachable",
            "1 while etcd answers, 0 while it does not (with a store)",
            store_reachable.clone(),
        );
        static IDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        Self {
            id: IDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            keys,
            store_revision,
            store_contact_age,
            store_reachable,
            decision_log,
            cache,
            registry,
            checks,
            check_duration,
            rpc_errors,
            reloads,
            policy_loaded,
            policy_info,
        }
    }

    /// Counts one decision and its latency.
    pub fn observe(
        &self,
        api: &'static str,
        allowed: bool,
        reason: &'static str,
        elapsed: Duration,
    ) {
        self.observe_decision(api, if allowed { "allow" } else { "deny" }, reason, elapsed);
    }

    /// Counts one decision and observes its latency, through this thread's [`HOT`]
    /// handles: the family lookups (hashing the labels, the family's lock) happen once per
    /// thread and label set, not on every request.
    fn observe_decision(
        &self,
        api: &'static str,
        decision: &'static str,
        reason: &'static str,
        elapsed: Duration,
    ) {
        let seconds = elapsed.as_secs_f64();
        let done = HOT.with(|hot| {
            let Ok(mut hot) = hot.try_borrow_mut() else {
                return false;
            };
            let found = hot.iter().find(|h| {
                h.metrics == self.id
                    && std::ptr::eq(h.api, api)
                    && std::ptr::eq(h.decision, decision)
                    && std::ptr::eq(h.reason, reason)
            });
            let handles = match found {
                Some(h) => h,
                None => {
                    if hot.len() >= HOT_HANDLES {
                        hot.clear();
                    }
                    hot.push(Hot {
                        metrics: self.id,
                        api,
                        decision,
                        reason,
                        checks: self
                            .checks
                            .get_or_create(&CheckLabels {
                                api,
                                decision,
                                reason,
                            })
                            .clone(),
                        duration: self
                            .check_duration
                            .get_or_create(&ApiLabels { api })
                            .clone(),
                    });
                    match hot.last() {
                        Some(h) => h,
                        None => return false,
                    }
                }
            };
            handles.checks.inc();
            handles.duration.observe(seconds);
            true
        });
        if !done {
            self.count(api, decision, reason, 1);
            self.observe_latency(api, elapsed);
        }
    }

    /// Counts `n` decisions of one kind.
    pub fn count_checks(&self, api: &'static str, allowed: bool, reason: &'static str, n: u64) {
        self.count(api, if allowed { "allow" } else { "deny" }, reason, n);
    }

    fn count(&self, api: &'static str, decision: &'static str, reason: &'static str, n: u64) {
        let labels = CheckLabels {
            api,
            decision,
            reason,
        };
        self.checks.get_or_create(&labels).inc_by(n);
    }

    /// Observes the time one request (one call, for BatchCheck) took.
    pub fn observe_latency(&self, api: &'static str, elapsed: Duration) {
        self.check_duration
            .get_or_create(&ApiLabels { api })
            .observe(elapsed.as_secs_f64());
    }

    /// Counts a would-be denial that shadow mode let through, and its latency.
    pub fn observe_shadow_deny(&self, api: &'static str, reason: &'static str, elapsed: Duration) {
        self.observe_decision(api, "shadow_deny", reason, elapsed);
    }

    /// Records a newly installed policy.
    pub fn policy_installed(&self, revision: &str, loaded_unix_seconds: f64) {
        self.reloads
            .get_or_create(&ResultLabels { result: "success" })
            .inc();
        self.policy_loaded.set(loaded_unix_seconds);
        self.policy_info.clear();
        self.policy_info
            .get_or_create(&RevisionLabels {
                revision: revision.to_owned(),
            })
            .set(1);
    }

    /// Renders the Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// The handles one thread last used to count a decision and observe its latency, by
/// [`Metrics`] and label values. The values are `&'static str`s compared by address: the
/// same text at another address only takes a second entry, and each entry's handles were
/// looked up by value, so a count always lands on its labels.
struct Hot {
    metrics: u64,
    api: &'static str,
    decision: &'static str,
    reason: &'static str,
    checks: Counter,
    duration: Histogram,
}

/// At most this many [`Hot`] entries per thread (APIs × decisions × reasons seen); beyond
/// it they are dropped and looked up again.
const HOT_HANDLES: usize = 64;

thread_local! {
    static HOT: std::cell::RefCell<Vec<Hot>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Decisions counted locally and added to the metrics once, for requests that carry many
/// checks.
#[derive(Debug, Default)]
pub struct DecisionTally {
    counts: Vec<(bool, &'static str, u64)>,
}

impl DecisionTally {
    pub fn add(&mut self, allowed: bool, reason: &'static str) {
        match self
            .counts
            .iter_mut()
            .find(|(a, r, _)| *a == allowed && *r == reason)
        {
            Some((_, _, n)) => *n += 1,
            None => self.counts.push((allowed, reason, 1)),
        }
    }

    pub fn flush(self, metrics: &Metrics, api: &'static str) {
        for (allowed, reason, n) in self.counts {
            metrics.count_checks(api, allowed, reason, n);
        }
    }
}
