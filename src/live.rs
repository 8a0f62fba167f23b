//! The live policy: the current snapshot behind an atomic pointer, and its status; and
//! [`PolicySink`], what a policy loader (a watched file, a bundle poller, the store) needs
//! of the service it feeds. Loaders and the server both depend on this module, never on
//! each other: the server implements the sink.
//!
//! Architecture invariant: readers take an `Arc` of the current snapshot and drop it when
//! their request ends; a reload builds a whole new snapshot off the request path and swaps
//! it in with one store, so a request never sees half a policy.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::ArcSwapOption;
use tokio::sync::watch;

use crate::policy::Snapshot;

/// What one load attempt did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadOutcome {
    /// A new policy is serving (its revision).
    Installed(String),
    /// The sources are the ones serving (same names, same revision): nothing to do, and
    /// an earlier error no longer describes them (it is cleared).
    Unchanged,
    /// Rejected; the last good policy keeps serving.
    Rejected(String),
}

/// Where a loader delivers policies: the live policy of a service, which installs a
/// compiled snapshot (clearing whatever the service keeps about the old one) and records
/// a rejection.
pub trait PolicySink: std::fmt::Debug + Send + Sync {
    /// The live policy.
    fn policy(&self) -> &PolicyState;

    /// Swaps in a new policy read from the store at `store_revision` (0: without a
    /// store): one atomic store; requests in flight keep the old one, which is returned
    /// for the caller to free off the request path ([`retire_later`]).
    fn install_at(&self, snapshot: Snapshot, store_revision: i64) -> Option<Arc<LoadedPolicy>>;

    /// [`Self::install_at`] without a store.
    fn install(&self, snapshot: Snapshot) -> Option<Arc<LoadedPolicy>> {
        self.install_at(snapshot, 0)
    }

    /// Records a rejected policy; the last good one keeps serving.
    fn reject(&self, message: String);

    /// The serving policy now answers at `revision` of the store (a metric's value).
    fn store_revision_reached(&self, revision: i64);
}

/// A snapshot, when it was loaded, and its generation (a number unique to this install).
#[derive(Debug)]
pub struct LoadedPolicy {
    pub snapshot: Snapshot,
    pub loaded_at: SystemTime,
    pub generation: u64,
    /// With a store (SPEC §9): the etcd revision this policy is known to match, 0
    /// without one. It only grows: a store that changed nothing under its prefix since
    /// the policy was read advances it without a new snapshot (the same state, proved
    /// current at a later revision).
    pub store_revision: AtomicI64,
}

impl LoadedPolicy {
    /// The store revision this policy answers at (0 without a store).
    pub fn store_revision(&self) -> i64 {
        self.store_revision.load(Ordering::Acquire)
    }
}

/// The last failed load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadError {
    pub message: String,
    pub at: SystemTime,
}

/// The policy the server answers from.
#[derive(Debug)]
pub struct PolicyState {
    current: ArcSwapOption<LoadedPolicy>,
    last_error: Mutex<Option<LoadError>>,
    /// The current revision, for whoever waits on changes (health, tests).
    revision: watch::Sender<Option<String>>,
    generations: AtomicU64,
}

impl Default for PolicyState {
    fn default() -> Self {
        Self {
            current: ArcSwapOption::empty(),
            last_error: Mutex::new(None),
            revision: watch::Sender::new(None),
            generations: AtomicU64::new(0),
        }
    }
}

impl PolicyState {
    pub fn new() -> Self {
        Self::default()
    }

    /// Follows the current revision: `None` until a policy is loaded.
    pub fn subscribe(&self) -> watch::Receiver<Option<String>> {
        self.revision.subscribe()
    }

    /// A state already holding a snapshot.
    pub fn with_snapshot(snapshot: Snapshot) -> Self {
        let state = Self::new();
        state.install(snapshot);
        state
    }

    /// The current policy, if one is loaded.
    pub fn current(&self) -> Option<Arc<LoadedPolicy>> {
        self.current.load_full()
    }

    /// Swaps in a new snapshot and clears the last error. Returns the snapshot it replaced,
    /// so that the caller decides on which thread its memory is freed.
    pub fn install(&self, snapshot: Snapshot) -> Option<Arc<LoadedPolicy>> {
        self.install_at(snapshot, 0)
    }

    /// [`Self::install`] for a policy read from the store at `store_revision`.
    pub fn install_at(&self, snapshot: Snapshot, store_revision: i64) -> Option<Arc<LoadedPolicy>> {
        let revision = snapshot.revision.clone();
        let previous = self.current.swap(Some(Arc::new(LoadedPolicy {
            snapshot,
            loaded_at: SystemTime::now(),
            generation: self.generations.fetch_add(1, Ordering::Relaxed) + 1,
            store_revision: AtomicI64::new(store_revision),
        })));
        self.clear_error();
        self.revision.send_replace(Some(revision));
        previous
    }

    /// Records a failed load; the current snapshot keeps serving.
    pub fn record_error(&self, message: String) {
        if let Ok(mut e) = self.last_error.lock() {
            *e = Some(LoadError {
                message,
                at: SystemTime::now(),
            });
        }
    }

    /// Forgets the last error: the sources read again are the policy that is serving.
    pub fn clear_error(&self) {
        if let Ok(mut e) = self.last_error.lock() {
            *e = None;
        }
    }

    pub fn last_error(&self) -> Option<LoadError> {
        self.last_error.lock().ok().and_then(|e| e.clone())
    }

    pub fn is_ready(&self) -> bool {
        self.current.load().is_some()
    }
}

/// How long the thread that replaced a policy waits for the requests still holding it.
pub const RETIRE_PATIENCE: std::time::Duration = std::time::Duration::from_secs(5);

/// [`retire`] (with [`RETIRE_PATIENCE`]) on a blocking thread of its own, so the caller
/// goes on at once: a loader (the store's watch, the file watcher) must not wait for a
/// request that still holds the replaced policy (a long query, an Admin API write waiting
/// for its turn) before it applies the next change. Without a runtime (tests), retires
/// here.
pub fn retire_later(previous: Option<Arc<LoadedPolicy>>) {
    if previous.is_none() {
        return;
    }
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => {
            runtime.spawn_blocking(move || retire(previous, RETIRE_PATIENCE));
        }
        Err(_) => {
            retire(previous, RETIRE_PATIENCE);
        }
    }
}

/// Frees a replaced policy off the request path. Requests in flight may still hold it; the
/// last of them would otherwise free it on a runtime worker, and freeing a policy of a
/// million assignments takes long enough to show in the latency tail. So the caller (the
/// thread that compiled its successor) waits until it holds the only reference, up to
/// `patience`, then lets go. Returns whether it freed the policy itself (false: there was
/// none, or a request still held it after `patience` and will free it).
pub fn retire(previous: Option<Arc<LoadedPolicy>>, patience: std::time::Duration) -> bool {
    let Some(previous) = previous else {
        return false;
    };
    let deadline = std::time::Instant::now() + patience;
    while Arc::strong_count(&previous) > 1 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    // `into_inner` yields the policy only to the last owner, so this is exact even if a
    // request lets go between the check above and here.
    Arc::into_inner(previous).is_some()
}
