//! The live policy: the current snapshot behind an atomic pointer, and its status; and
//! [`PolicySink`], what a policy loader (a watched file, a bundle poller, the store) needs
//! of the service it feeds. Loaders and the server both depend on this module, never on
//! each other: the server implements the sink.
//!
//! Architecture invariant: readers take an `Arc` of the current snapshot and drop it when
//! their request ends; a reload builds a whole new snapshot off the request path and swaps
//! it in with one store, so a request never sees half a policy. Whoever lets go of a
//! replaced policy last (a request, the loader), its compiled data is freed on the
//! [`reaper`] thread, never where the last reference was dropped.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

use arc_swap::ArcSwapOption;
use tokio::sync::watch;

use crate::policy::Snapshot;
use crate::policy::snapshot::Core;

pub mod reaper;

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
    /// store): one atomic store; requests in flight keep the old one, which is returned.
    /// The caller may drop it anywhere: its data is freed on the [`reaper`] thread.
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

    /// Its snapshot, taken out whole (the policy left to drop holds the empty policy's
    /// core instead). `None` only if the empty policy did not compile.
    pub fn into_snapshot(mut self) -> Option<Snapshot> {
        let empty = empty_core()?;
        Some(Snapshot {
            revision: std::mem::take(&mut self.snapshot.revision),
            counts: self.snapshot.counts,
            core: std::mem::replace(&mut self.snapshot.core, empty),
            overlay: self.snapshot.overlay.take(),
        })
    }
}

/// The last reference to a policy goes wherever it goes (a request on a runtime worker, a
/// loader): freeing the compiled data of a million assignments there would show in the
/// latency tail. So the data (its core and overlay) is swapped for an empty core and
/// sent to the [`reaper`], which frees it on its own low-priority thread. One channel
/// send here, no waiting and no polling.
impl Drop for LoadedPolicy {
    fn drop(&mut self) {
        let Some(empty) = empty_core() else {
            return;
        };
        let core = std::mem::replace(&mut self.snapshot.core, empty);
        let overlay = self.snapshot.overlay.take();
        reaper::drop_later((core, overlay));
    }
}

/// The core of a policy of no documents, compiled once: what a dropped [`LoadedPolicy`]
/// holds instead of its data for the instant before its memory goes. `None` only if the
/// empty policy did not compile (then data is freed in place).
fn empty_core() -> Option<Arc<Core>> {
    static EMPTY: OnceLock<Option<Arc<Core>>> = OnceLock::new();
    EMPTY
        .get_or_init(|| {
            crate::policy::compile_documents(&[])
                .ok()
                .map(|s| s.core.clone())
        })
        .clone()
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

    /// Swaps in a new snapshot and clears the last error. Returns the snapshot it replaced
    /// (requests in flight may still hold it; its data is freed on the [`reaper`] thread
    /// whoever drops it last).
    pub fn install(&self, snapshot: Snapshot) -> Option<Arc<LoadedPolicy>> {
        self.install_at(snapshot, 0)
    }

    /// [`Self::install`] for a policy read from the store at `store_revision`.
    pub fn install_at(&self, snapshot: Snapshot, store_revision: i64) -> Option<Arc<LoadedPolicy>> {
        let revision = snapshot.revision.clone();
        // The empty core and the reaper's thread are made here, off the request path,
        // before any policy drops.
        let _ = empty_core();
        reaper::start();
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    fn policy(text: &str) -> Snapshot {
        let source = crate::policy::SourceDocument::new("p.yaml", text.as_bytes());
        crate::policy::compile_sources(&[source]).unwrap()
    }

    /// Blocks the reaper until told to go on, so that what it holds can be looked at.
    struct Gate(mpsc::Receiver<()>);

    impl Drop for Gate {
        fn drop(&mut self) {
            let _ = self.0.recv();
        }
    }

    /// The request that holds a replaced policy last lets go of it on its own thread, and
    /// the policy's data is freed on the reaper's, not there; nothing is left behind.
    #[test]
    fn the_last_drop_of_a_replaced_policy_frees_its_data_on_the_reaper() {
        let state = PolicyState::with_snapshot(policy(
            "version: 1\nroles: [{name: R, actions: ['a/*']}]\n",
        ));
        let in_flight = state.current().unwrap();
        let core = Arc::downgrade(&in_flight.snapshot.core);
        let previous = state.install(policy("version: 1\nroles: [{name: S, actions: ['a/*']}]\n"));
        // The loader lets go at once; the request still holds the policy.
        drop(previous);
        assert!(core.upgrade().is_some());
        let (open, gate) = mpsc::channel();
        reaper::drop_later(Gate(gate));
        // The request ends: the last reference goes here, the data does not.
        drop(in_flight);
        assert!(core.upgrade().is_some(), "freed on the request's thread");
        open.send(()).unwrap();
        reaper::flush();
        assert!(core.upgrade().is_none(), "the reaper freed the data");
        // The serving policy is untouched.
        assert!(state.current().unwrap().snapshot.role("S").is_some());
    }
}
