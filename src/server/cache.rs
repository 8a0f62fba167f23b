//! A bounded decision cache that can never return a stale answer.
//!
//! Keys are a 64-bit hash, seeded per process, of everything a decision depends on: the
//! policy generation, principal, caller groups, action and scope (both hashed ignoring ASCII
//! case, in place, with the engine's [`folded_hash`]; the scope without its optional
//! trailing slash, as the engine reads it) and data flag. Every entry also stores those
//! inputs, and a hit must match them exactly (action and scope in any ASCII case), so a
//! hash collision is a miss, never a wrong answer.
//! Entries from an older policy never match (the generation differs, and the cache is
//! cleared on every swap), and an entry only answers for times inside the window in which
//! no `notBefore`/`notAfter` of the policy falls.

use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::time::Duration;

use moka::notification::RemovalCause;
use prometheus_client::metrics::counter::Counter;

use crate::policy::snapshot::folded_hash;
use crate::policy::syntax::{Instant, trim_scope};
use crate::policy::{CheckRequest, RequestError, Snapshot, Verdict};

/// The most bytes a cache entry's request strings (principal, action, scope and caller
/// groups) may take, counted as the entry holds them (see [`held_bytes`]); larger requests
/// are evaluated without the cache.
pub const MAX_ENTRY_BYTES: usize = 4096;

/// What one string costs an entry: its bytes, rounded up to the allocator's 16-byte
/// granule, and the 16-byte pointer and length that hold it. So 500 one-letter groups
/// count 16 KB, not 500 bytes.
fn held_bytes(s: &str) -> usize {
    16 + s.len().next_multiple_of(16)
}

/// Size and lifetime of cache entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheOptions {
    /// Most entries kept (0 turns the cache off).
    pub capacity: u64,
    /// Longest an entry lives, whatever else holds.
    pub ttl: Duration,
}

impl Default for CacheOptions {
    fn default() -> Self {
        Self {
            capacity: super::defaults::DECISION_CACHE_SIZE,
            ttl: Duration::from_secs(super::defaults::DECISION_CACHE_TTL_SECONDS),
        }
    }
}

#[derive(Debug)]
struct Entry {
    generation: u64,
    principal: Box<str>,
    groups: Box<[Box<str>]>,
    action: Box<str>,
    data: bool,
    scope: Box<str>,
    verdict: Verdict,
    from: Instant,
    until: Instant,
}

impl Entry {
    fn answers(&self, generation: u64, req: &CheckRequest<'_>) -> bool {
        self.generation == generation
            && self.from <= req.at
            && req.at < self.until
            && self.data == req.data_action
            && *self.principal == *req.principal
            && self.action.eq_ignore_ascii_case(req.action)
            && self.scope.eq_ignore_ascii_case(trim_scope(req.scope))
            && self.groups.len() == req.groups.len()
            && self.groups.iter().zip(req.groups).all(|(a, b)| **a == **b)
    }
}

/// Cache counters, exported as `iot_authz_decision_cache_*_total`.
#[derive(Debug, Clone, Default)]
pub struct CacheCounters {
    pub hits: Counter,
    pub misses: Counter,
    pub evictions: Counter,
}

/// The decision cache.
#[derive(Debug)]
pub struct DecisionCache {
    cache: moka::sync::Cache<u64, Arc<Entry>, foldhash::fast::RandomState>,
    /// Randomly seeded per process: keys cannot be chosen to collide (and a collision
    /// would only cost a miss: an entry is used only when it answers the exact request).
    hasher: foldhash::fast::RandomState,
    /// Seed of the case-insensitive hash of actions and scopes.
    seed: u64,
    counters: CacheCounters,
}

impl DecisionCache {
    pub fn new(options: CacheOptions, counters: CacheCounters) -> Self {
        let evictions = counters.evictions.clone();
        let cache = moka::sync::Cache::builder()
            .max_capacity(options.capacity)
            .time_to_live(options.ttl)
            .eviction_listener(move |_, _, cause| {
                if matches!(cause, RemovalCause::Size | RemovalCause::Expired) {
                    evictions.inc();
                }
            })
            .build_with_hasher(foldhash::fast::RandomState::default());
        let hasher = foldhash::fast::RandomState::default();
        Self {
            cache,
            seed: hasher.hash_one(0u64),
            hasher,
            counters,
        }
    }

    fn key(&self, generation: u64, req: &CheckRequest<'_>) -> u64 {
        let mut h = self.hasher.build_hasher();
        h.write_u64(generation);
        h.write(req.principal.as_bytes());
        h.write_u8(0xff);
        for g in req.groups {
            h.write(g.as_bytes());
            h.write_u8(0xfe);
        }
        h.write_u64(folded_hash(self.seed, req.action.as_bytes()));
        h.write_u64(folded_hash(self.seed, trim_scope(req.scope).as_bytes()));
        h.write_u8(u8::from(req.data_action));
        h.finish()
    }

    /// The verdict for `req` under the snapshot of `generation`, from the cache or freshly
    /// evaluated (and then cached).
    pub fn decide(
        &self,
        generation: u64,
        snapshot: &Snapshot,
        req: &CheckRequest<'_>,
    ) -> Result<Verdict, RequestError> {
        let key = self.key(generation, req);
        if let Some(entry) = self.cache.get(&key)
            && entry.answers(generation, req)
        {
            self.counters.hits.inc();
            return Ok(entry.verdict);
        }
        self.counters.misses.inc();
        let verdict = snapshot.verdict(req)?;
        // An entry holds the request's strings, so a request whose strings are long (many
        // caller groups, say) is never cached (and so never found): the cache's memory
        // stays bounded by its entry count times this size, whatever callers send.
        let bytes = held_bytes(req.principal)
            + held_bytes(req.action)
            + held_bytes(req.scope)
            + req.groups.iter().map(|g| held_bytes(g)).sum::<usize>();
        if bytes > MAX_ENTRY_BYTES {
            return Ok(verdict);
        }
        let (from, until) = snapshot.validity(req.at);
        self.cache.insert(
            key,
            Arc::new(Entry {
                generation,
                principal: req.principal.into(),
                groups: req.groups.iter().map(|g| g.as_str().into()).collect(),
                action: req.action.to_ascii_lowercase().into(),
                data: req.data_action,
                scope: trim_scope(req.scope).to_ascii_lowercase().into(),
                verdict,
                from,
                until,
            }),
        );
        Ok(verdict)
    }

    /// Drops every entry (on a policy swap).
    pub fn clear(&self) {
        self.cache.invalidate_all();
    }

    pub fn entry_count(&self) -> u64 {
        self.cache.run_pending_tasks();
        self.cache.entry_count()
    }
}
