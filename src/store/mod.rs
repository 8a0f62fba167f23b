//! The store (SPEC §9): policy objects kept in etcd, one per key, merged with the file or
//! bundle documents and validated with them as one policy.
//!
//! Each replica reads the prefix once ([`follow`]), then follows etcd's watch from that
//! revision; every change is compiled off the request path and installed, or rejected
//! like a bad file (the last good policy keeps serving). A compacted or broken watch is
//! resumed by a fresh read. Until the first read succeeds the server is not ready: it never
//! answers from the files alone, since the store may hold deny assignments.

pub mod admin_queue;
pub mod etcd;
pub mod follow;
pub mod objects;
pub mod worker;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, watch};

use crate::live::{LoadOutcome, LoadedPolicy, PolicySink};
use crate::policy::document::{AssignmentDoc, Document};
use crate::policy::overlay::{FullPolicy, NotIncremental, OverlayBase};
use crate::policy::{PolicyError, Problem, Snapshot, SourceDocument, compile_documents, source};

/// What the store needs of the service it feeds: its live policy ([`PolicySink`]) and
/// the store itself, once one is configured. The server's `App` is one; the store never
/// names the server.
pub trait StoreHost: PolicySink {
    /// The store, when one is configured.
    fn store(&self) -> Option<&Arc<Store>>;
}

/// The service a store feeds, as the store sees it.
type App = dyn StoreHost;

pub use etcd::{ConnectError, Etcd, EtcdAuth, EtcdTls, Password, PasswordError};
pub use objects::{Kind, Object, ObjectError, Objects};

/// The default key prefix.
pub const DEFAULT_PREFIX: &str = "/iot-authz/";

/// Where the store is and how it is read.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub endpoints: Vec<String>,
    pub prefix: String,
    pub max_value_bytes: usize,
    pub tls: Option<EtcdTls>,
    /// etcd user/password authentication.
    pub auth: Option<EtcdAuth>,
    /// An overlay of more assignment changes than this is compacted into a new base.
    pub compact_at: usize,
    /// The least time between two compiles of the watch's changes on a replica that did
    /// not make them itself (the changes arriving sooner are gathered), unless a request
    /// waits for this replica to catch up (see `follow::watch`).
    pub apply_window: Duration,
    /// How many store objects a compaction copies per hold of the inputs' lock.
    pub gather_piece: usize,
    /// Called by a compaction each time it lets the inputs' lock go while it copies the
    /// objects (`true` the last time, the copy complete): a seam for tests, which change
    /// the store there to show that what changes during a compaction is not lost.
    pub between_pieces: Option<PieceHook>,
}

/// See [`StoreOptions::between_pieces`].
#[derive(Clone)]
pub struct PieceHook(pub Arc<dyn Fn(bool) + Send + Sync>);

impl std::fmt::Debug for PieceHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PieceHook")
    }
}

impl StoreOptions {
    pub fn new(endpoints: Vec<String>) -> Self {
        Self {
            endpoints,
            prefix: DEFAULT_PREFIX.into(),
            max_value_bytes: objects::DEFAULT_MAX_VALUE_BYTES,
            tls: None,
            auth: None,
            compact_at: COMPACT_AT,
            apply_window: Duration::from_millis(DEFAULT_APPLY_WINDOW_MS),
            gather_piece: GATHER_PIECE,
            between_pieces: None,
        }
    }
}

/// What the policy is made of: the file (or bundle) documents and the store's objects.
#[derive(Debug, Default)]
pub struct Inputs {
    /// The last file documents that compiled (with the store); `None` until the first
    /// (a bundle not fetched yet).
    pub files: Option<Vec<SourceDocument>>,
    /// Every key under the prefix, as of `revision`; `None` until the first read.
    pub objects: Option<Objects>,
    /// The etcd revision `objects` were read at (or brought up to by the watch).
    pub revision: i64,
    /// The serving policy is the files plus `objects` (no change under the prefix was
    /// rejected since): only then may the revision it answers at advance.
    pub consistent: bool,
    /// Keys the watch changed in `objects` since the last compile (policy keys only).
    pub pending: BTreeSet<String>,
    /// The base the serving policy was built on and the assignments changed since.
    pub(crate) incremental: Incremental,
}

impl Inputs {
    /// Whether the inputs are consistent and the incremental path is still on `base`
    /// (no full compile or fresh read replaced it).
    fn still_on(&self, base: &Arc<OverlayBase>) -> bool {
        self.consistent
            && self
                .incremental
                .base
                .as_ref()
                .is_some_and(|b| Arc::ptr_eq(b, base))
    }
}

/// The incremental path's state (see `policy::overlay`): the base policy, compiled in
/// full, and every store assignment changed since, by id, with the revision it was
/// compiled at (its value is the one in `Inputs::objects`: absent when deleted). The
/// serving policy is the base plus these, as an overlay, whenever `base` is set and the
/// inputs are consistent.
#[derive(Debug, Default)]
pub(crate) struct Incremental {
    base: Option<Arc<OverlayBase>>,
    changes: BTreeMap<String, i64>,
    /// The last overlay made over `base` from `changes` (their values then): the next one
    /// reuses what it found for the changes not written since
    /// ([`OverlayBase::apply_over`]).
    last: Option<Snapshot>,
    /// A compaction is running.
    compacting: bool,
    /// Counts every change of `base`, `changes` and `last`: an overlay made at one count
    /// is the one the path would make again at the same count from the same writes.
    generation: u64,
    /// The overlay the Admin API's validation last made for a group of assignment writes
    /// ([`Store::keep_validated`]).
    validated: Option<Validated>,
}

impl Incremental {
    /// `base`, `changes` or `last` changed: an overlay validated before is stale.
    fn moved(&mut self) {
        self.generation = self.generation.wrapping_add(1);
        // Freed off this thread (which holds the inputs' lock): an overlay can be large.
        if let Some(stale) = self.validated.take() {
            crate::live::reaper::drop_later(stale);
        }
    }
}

/// An overlay the Admin API's validation made for a group of assignment writes, kept so
/// that the watch, bringing exactly that group's transaction, installs it instead of
/// making the same overlay a second time on the replica that validated it.
#[derive(Debug)]
pub(crate) struct Validated {
    /// [`Incremental::generation`] when it was made.
    generation: u64,
    /// The group's assignment ids, in key order, with the values validated (`None`:
    /// deleted).
    values: Vec<(String, Option<AssignmentDoc>)>,
    snapshot: Snapshot,
}

/// The value of store assignment `id` in `objects` (`None`: deleted); refused if the key
/// holds anything else (a value that did not decode).
fn value_of<'a>(
    objects: &'a Objects,
    id: &str,
) -> Result<Option<&'a AssignmentDoc>, NotIncremental> {
    match objects.get(&format!("{ASSIGNMENTS}{id}")) {
        None => Ok(None),
        Some(Ok(Object::Assignment(a))) => Ok(Some(a)),
        Some(_) => Err(NotIncremental(format!(
            "`{ASSIGNMENTS}{id}` is not an assignment"
        ))),
    }
}

/// The union of two sets of ids, each in key order, in key order.
fn merged<'a>(
    a: impl Iterator<Item = &'a str>,
    b: impl Iterator<Item = &'a str>,
) -> impl Iterator<Item = &'a str> {
    let (mut a, mut b) = (a.peekable(), b.peekable());
    std::iter::from_fn(move || match (a.peek(), b.peek()) {
        (Some(x), Some(y)) if x == y => {
            b.next();
            a.next()
        }
        (Some(x), Some(y)) if x < y => a.next(),
        (Some(_), Some(_)) | (None, _) => b.next(),
        (_, None) => a.next(),
    })
}

/// The key prefix of store assignments.
const ASSIGNMENTS: &str = "assignments/";

/// By default, an overlay with more changes than this is compacted into a new base (off
/// the request path); its changes are also dropped at every full compile.
pub const COMPACT_AT: usize = 10_000;

/// The most `--etcd-compact-at` accepts.
pub const MAX_COMPACT_AT: usize = 1_000_000;

/// By default, how long a replica gathers the watch's changes before it compiles them
/// ([`StoreOptions::apply_window`]).
pub const DEFAULT_APPLY_WINDOW_MS: u64 = 20;

/// The longest apply window `serve` accepts (a change elsewhere served without a token
/// at most this late).
pub const MAX_APPLY_WINDOW_MS: u64 = 10_000;

/// The store of one server: its connection, its inputs and its status.
#[derive(Debug)]
pub struct Store {
    pub options: StoreOptions,
    pub etcd: Etcd,
    inputs: Mutex<Inputs>,
    last_contact: Mutex<Option<Instant>>,
    reachable: AtomicBool,
    /// The store revision the serving policy answers at (0 before the first load).
    through: watch::Sender<i64>,
    /// The store revision whose objects were last compiled, installed or rejected: a
    /// change at that revision has been judged (status, tests).
    judged: watch::Sender<i64>,
    /// Asks the watch for a progress report (a token names a later revision).
    pub(crate) progress: Notify,
    /// Requests waiting for this replica to catch up now (a consistency token, an Admin
    /// API write judged): while there are any, the watch compiles each change as soon as
    /// it is applied ([`Self::waiting_for_changes`]).
    waiting: AtomicUsize,
    /// Tells the watch that a request started waiting (ends a gathering window).
    pub(crate) hurry: Notify,
    /// The last policy compiled in full and the store revision of its objects: the full
    /// policy of every overlay at or before that revision (see [`Snapshot::full`]).
    last_full: Mutex<Option<(i64, Snapshot)>>,
    /// The Admin API writes waiting for this replica's next transaction: the writes
    /// through one replica are committed in groups, one transaction at a time, each group
    /// validated on the state the one before it made (see `server::admin`).
    pub(crate) admin_queue: Mutex<admin_queue::AdminQueue>,
    /// The thread every compile of the objects runs on, below the request path's priority.
    pub(crate) worker: worker::StoreWorker,
    /// Overlays installed as the Admin API validated them ([`Self::keep_validated`]).
    validated_installed: std::sync::atomic::AtomicU64,
    /// Compactions that made a new base ([`Self::compactions`]).
    compactions: std::sync::atomic::AtomicU64,
}

impl Store {
    pub fn new(options: StoreOptions) -> Result<Self, etcd::ConnectError> {
        let etcd = Etcd::connect(&options.endpoints, options.tls.as_ref())?
            .with_auth(options.auth.clone());
        Ok(Self {
            options,
            etcd,
            inputs: Mutex::new(Inputs::default()),
            last_contact: Mutex::new(None),
            reachable: AtomicBool::new(false),
            through: watch::Sender::new(0),
            judged: watch::Sender::new(0),
            progress: Notify::new(),
            waiting: AtomicUsize::new(0),
            hurry: Notify::new(),
            admin_queue: Mutex::new(admin_queue::AdminQueue::default()),
            last_full: Mutex::new(None),
            worker: worker::StoreWorker::default(),
            validated_installed: Default::default(),
            compactions: Default::default(),
        })
    }

    /// How many batches of the watch were installed as the overlay this replica's Admin
    /// API validated them on, rather than made again.
    pub fn validated_overlays_installed(&self) -> u64 {
        self.validated_installed.load(Ordering::Relaxed)
    }

    /// The Admin API writes through this replica waiting for a transaction, and those
    /// of the group being validated and committed.
    pub fn admin_writes(&self) -> (usize, usize) {
        match self.admin_queue.lock() {
            Ok(q) => q.len(),
            Err(poisoned) => poisoned.into_inner().len(),
        }
    }

    /// The document name store objects are reported under.
    pub fn document_name(&self) -> String {
        format!("etcd:{}", self.options.prefix)
    }

    /// Counts a request waiting for this replica to catch up, until the guard is dropped,
    /// and ends the watch's gathering window now.
    pub(crate) fn waiting_for_changes(&self) -> Waiting<'_> {
        self.waiting.fetch_add(1, Ordering::AcqRel);
        self.hurry.notify_one();
        Waiting(&self.waiting)
    }

    /// Whether the watch's changes should be compiled as soon as they are applied: a
    /// request waits for this replica to catch up, or the Admin API kept an overlay it
    /// validated, which the watch's next change may install as it is (not known while a
    /// compaction gathers the inputs: then no).
    pub(crate) fn in_a_hurry(&self) -> bool {
        self.waiting.load(Ordering::Acquire) > 0
            || self
                .inputs
                .try_lock()
                .is_ok_and(|inputs| inputs.incremental.validated.is_some())
    }

    pub fn inputs(&self) -> MutexGuard<'_, Inputs> {
        match self.inputs.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// etcd answered.
    pub fn contact(&self) {
        if let Ok(mut t) = self.last_contact.lock() {
            *t = Some(Instant::now());
        }
        self.reachable.store(true, Ordering::Relaxed);
    }

    /// etcd did not answer.
    pub fn lost(&self) {
        self.reachable.store(false, Ordering::Relaxed);
    }

    /// Seconds since etcd last answered (`None`: never).
    pub fn seconds_since_contact(&self) -> Option<f64> {
        self.last_contact
            .lock()
            .ok()
            .and_then(|t| t.map(|t| t.elapsed().as_secs_f64()))
    }

    pub fn reachable(&self) -> bool {
        self.reachable.load(Ordering::Relaxed)
    }

    /// The store revision the serving policy answers at.
    pub fn through(&self) -> i64 {
        *self.through.borrow()
    }

    pub fn subscribe(&self) -> watch::Receiver<i64> {
        self.through.subscribe()
    }

    /// Follows the revision of the last change judged (installed or rejected).
    pub fn judged(&self) -> watch::Receiver<i64> {
        self.judged.subscribe()
    }

    /// Nothing changed under the prefix up to `revision` (a watch progress report): the
    /// serving policy, if it is the files plus the objects, answers at `revision` too.
    pub fn advance(&self, app: &App, revision: i64) {
        let mut inputs = self.inputs();
        if revision <= inputs.revision {
            return;
        }
        inputs.revision = revision;
        if inputs.consistent
            && let Some(policy) = app.policy().current()
        {
            policy.store_revision.fetch_max(revision, Ordering::AcqRel);
            self.answers_at(app, revision);
        }
        // Nothing to judge up to `revision` (the watch compiles what it applied before it
        // believes a report): a write waiting for it need not wait on.
        self.judged.send_if_modified(|judged| {
            let moved = *judged < revision;
            *judged = (*judged).max(revision);
            moved
        });
    }

    /// The store revision whose objects this replica has applied (compiled or not).
    pub(crate) fn applied(&self) -> i64 {
        self.inputs().revision
    }

    /// The serving policy answers at `revision` now: tells the requests waiting for a token
    /// and the metric (GetPolicyStatus reads the policy's own revision).
    fn answers_at(&self, app: &App, revision: i64) {
        app.store_revision_reached(revision);
        self.through.send_replace(revision);
    }

    /// Compiles the files with the store's objects: the one place a served policy is
    /// compiled in full when a store is configured.
    pub fn compose(
        &self,
        files: &[SourceDocument],
        objects: &Objects,
    ) -> Result<Snapshot, PolicyError> {
        let docs = self.documents(files, objects)?;
        let mut snapshot = compile_documents(&docs)?;
        snapshot.revision = source::revision(files);
        Ok(snapshot)
    }

    /// The files and the store's objects as the documents of one policy (the store's
    /// last, its objects in key order).
    fn documents(
        &self,
        files: &[SourceDocument],
        objects: &Objects,
    ) -> Result<Vec<(String, Document)>, PolicyError> {
        let name = self.document_name();
        let mut problems = Vec::new();
        let mut docs: Vec<(String, Document)> = Vec::with_capacity(files.len() + 1);
        for file in files {
            match file.parse() {
                Ok(doc) => docs.push((file.name.clone(), doc)),
                Err(p) => problems.push(p),
            }
        }
        match objects::document(objects) {
            Ok(doc) => docs.push((name.clone(), doc)),
            Err(bad) => problems.extend(bad.into_iter().map(|(key, problem)| {
                Problem::new(
                    &name,
                    format!("`{}`", crate::policy::syntax::escape(&key)),
                    problem.to_string(),
                )
            })),
        }
        if !problems.is_empty() {
            return Err(PolicyError { problems });
        }
        Ok(docs)
    }

    /// A full compile of the current inputs, when they are the serving state's (made for
    /// the queries that answer from a full policy; see [`Snapshot::full`]). The documents
    /// are gathered under the lock, and compiled after it is let go.
    ///
    /// A state at `at_least` or later answers: a full policy already made at such a
    /// revision is reused, else the current objects are compiled (a later state than the
    /// overlay's, which a consistency token allows: it names the oldest state that may
    /// answer). `None` when the current objects are not a valid policy.
    fn full_now(&self, at_least: i64) -> Option<Snapshot> {
        if let Ok(last) = self.last_full.lock()
            && let Some((revision, full)) = &*last
            && *revision >= at_least
        {
            return Some(full.share());
        }
        let (docs, revision, at) = {
            let inputs = self.inputs();
            if !inputs.consistent {
                return None;
            }
            let (Some(files), Some(objects)) = (&inputs.files, &inputs.objects) else {
                return None;
            };
            (
                self.documents(files, objects).ok()?,
                source::revision(files),
                inputs.revision,
            )
        };
        let mut snapshot = compile_documents(&docs).ok()?;
        snapshot.revision = revision;
        self.keep_full(at, &snapshot);
        Some(snapshot)
    }

    /// Keeps `snapshot`, compiled in full at `revision`, for [`Store::full_now`].
    fn keep_full(&self, revision: i64, snapshot: &Snapshot) {
        let replaced = if let Ok(mut last) = self.last_full.lock()
            && last.as_ref().is_none_or(|(r, _)| *r <= revision)
        {
            last.replace((revision, snapshot.share()))
        } else {
            None
        };
        // Its memory (maybe the last reference to a full policy) goes on the reaper, not
        // on this query thread while it holds the lock the loader also takes.
        crate::live::reaper::drop_later(replaced);
    }

    fn full_maker(self: &Arc<Self>, at_least: i64) -> FullPolicy {
        let store = Arc::downgrade(self);
        Arc::new(move || store.upgrade().and_then(|s| s.full_now(at_least)))
    }

    /// The policy of the current objects (which may hold a group of writes being
    /// validated, not committed yet) laid over the incremental path's base, when every
    /// store object changed since the base is an assignment: those changed by the watch
    /// since it, and `batch` (ids of assignments the objects hold changed). `None` when
    /// only a full compile can tell whether the state is valid (or say why not).
    pub fn apply_incrementally(inputs: &Inputs, batch: &BTreeSet<String>) -> Option<Snapshot> {
        let base = inputs.incremental.base.as_ref()?;
        if !inputs.consistent || !inputs.pending.is_empty() {
            return None;
        }
        let objects = inputs.objects.as_ref()?;
        let ids = merged(
            inputs.incremental.changes.keys().map(String::as_str),
            batch.iter().map(String::as_str),
        );
        let changes = ids.map(|id| (id, move || value_of(objects, id)));
        let written = |id: &str| batch.contains(id);
        base.apply_over(inputs.incremental.last.as_ref(), written, changes, None)
            .ok()
    }

    /// Keeps the overlay `snapshot` that [`Self::apply_incrementally`] made on `inputs` as
    /// they are now (before the group's writes were put back) for a group of assignment
    /// writes (`values`: each id with the value validated), until the watch brings them
    /// or anything else changes.
    pub(crate) fn keep_validated(
        inputs: &mut Inputs,
        mut values: Vec<(String, Option<AssignmentDoc>)>,
        snapshot: Snapshot,
    ) {
        // In key order, as the watch's pending keys are.
        values.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        if snapshot.has_overlay() && !values.is_empty() {
            inputs.incremental.validated = Some(Validated {
                generation: inputs.incremental.generation,
                values,
                snapshot,
            });
        }
    }

    /// The overlay the Admin API validated for exactly these pending assignment ids, when
    /// nothing changed since but them, to the values it validated: the overlay
    /// `apply_over` would make now.
    fn take_validated(inputs: &mut Inputs, fresh: &[&str]) -> Option<Snapshot> {
        let validated = inputs.incremental.validated.take()?;
        let objects = inputs.objects.as_ref()?;
        let same = validated.generation == inputs.incremental.generation
            && validated.values.len() == fresh.len()
            && validated
                .values
                .iter()
                .zip(fresh)
                .all(|((id, value), fresh)| {
                    id == fresh && value_of(objects, id).is_ok_and(|now| now == value.as_ref())
                });
        if same {
            return Some(validated.snapshot);
        }
        // Not this batch's (a group split over two transactions, a transaction that lost
        // its race, another writer): freed off this thread.
        crate::live::reaper::drop_later(validated);
        None
    }

    /// Applies the pending keys as an overlay over the base, when they are all store
    /// assignments and the overlay is valid. `None`: compile in full.
    fn incrementally(
        self: &Arc<Self>,
        app: &Arc<App>,
        inputs: &mut Inputs,
        pending: &BTreeSet<String>,
    ) -> Option<(LoadOutcome, Option<Arc<LoadedPolicy>>)> {
        if !inputs.consistent || pending.is_empty() {
            return None;
        }
        let base = inputs.incremental.base.clone()?;
        // Every pending key is a store assignment's (in key order, as the ids are).
        let fresh: Vec<&str> = pending
            .iter()
            .map(|key| key.strip_prefix(ASSIGNMENTS))
            .collect::<Option<_>>()?;
        let full_maker = self.full_maker(inputs.revision);
        let validated = Self::take_validated(inputs, &fresh).and_then(|mut snapshot| {
            snapshot
                .set_full_maker(full_maker.clone())
                .then_some(snapshot)
        });
        let snapshot = match validated {
            Some(snapshot) => {
                self.validated_installed.fetch_add(1, Ordering::Relaxed);
                snapshot
            }
            None => {
                let objects = inputs.objects.as_ref()?;
                let ids = merged(
                    inputs.incremental.changes.keys().map(String::as_str),
                    fresh.iter().copied(),
                );
                let changes = ids.map(|id| (id, move || value_of(objects, id)));
                let written = |id: &str| fresh.binary_search(&id).is_ok();
                base.apply_over(
                    inputs.incremental.last.as_ref(),
                    written,
                    changes,
                    Some(full_maker),
                )
                .map_err(|e| tracing::debug!(reason = %e.0, "store change compiled in full"))
                .ok()?
            }
        };
        let compact =
            snapshot.overlay_len() > self.options.compact_at && !inputs.incremental.compacting;
        for id in fresh {
            inputs
                .incremental
                .changes
                .insert(id.to_owned(), inputs.revision);
        }
        inputs.incremental.last = Some(snapshot.share());
        inputs.incremental.moved();
        let revision = snapshot.revision.clone();
        let previous = self.install(&**app, inputs, snapshot);
        if compact {
            inputs.incremental.compacting = true;
            let (store, app) = (self.clone(), app.clone());
            let spawned = std::thread::Builder::new()
                .name("store-compact".into())
                .spawn(move || store.compact(&app));
            if let Err(e) = spawned {
                tracing::warn!(error = %e, "store compaction not started");
                inputs.incremental.compacting = false;
            }
        }
        Some((LoadOutcome::Installed(revision), previous))
    }

    /// Compacts the overlay into a new base: the documents gathered under the lock, a
    /// piece at a time, the compile done without it (at a lower priority), and the changes
    /// made since the gather began laid over the new base. Runs on a thread of its own;
    /// abandoned if a full compile replaced the base meanwhile.
    pub(crate) fn compact(self: &Arc<Self>, app: &Arc<App>) {
        let mut piece = self.options.gather_piece.max(1);
        let mut lowered = false;
        let (started_at, whole, old_base, compiled) = loop {
            let Some(Gathered {
                docs,
                revision,
                started_at,
                whole,
                base,
            }) = self.gather_for_compaction(piece)
            else {
                self.inputs().incremental.compacting = false;
                return;
            };
            if !std::mem::replace(&mut lowered, true)
                && let Err(e) = crate::priority::lower_niceness_by(COMPACTION_NICENESS)
            {
                tracing::debug!(error = %e, "store compaction runs at the normal priority");
            }
            let store_assignments = docs.last().map_or(0, |(_, d)| d.assignments.len());
            let compiled = compile_documents(&docs);
            drop(docs);
            match compiled {
                // A copy made a piece at a time mixes states, and may break a rule of the
                // whole policy that no state breaks (a `minAssignments` met, in every
                // state, by an assignment the copy passed before it was written or one
                // deleted before the copy reached it): copied again, in one piece.
                Err(_) if !whole && piece != usize::MAX => piece = usize::MAX,
                compiled => {
                    let compiled = compiled.map(|mut snapshot| {
                        snapshot.revision = revision;
                        let base = Arc::new(OverlayBase::new(&snapshot, store_assignments));
                        (snapshot, base)
                    });
                    break (started_at, whole, base, compiled);
                }
            }
        };
        let mut inputs = self.inputs();
        inputs.incremental.compacting = false;
        let (snapshot, base) = match compiled {
            Ok(compiled) => compiled,
            Err(e) => {
                tracing::debug!(error = %e, "store compaction abandoned");
                return;
            }
        };
        if !inputs.still_on(&old_base) {
            return;
        }
        if whole {
            // Gathered at one revision: the full policy of that state.
            self.keep_full(started_at, &snapshot);
        }
        let remaining: BTreeMap<String, i64> = inputs
            .incremental
            .changes
            .iter()
            .filter(|(_, rev)| **rev > started_at)
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        if !inputs.pending.is_empty() {
            // The objects hold changes the watch brought and the store thread has not
            // compiled yet (it will, within its window): nothing is served from them here.
            // The new base takes over, and that compile lays them and the changes made
            // during this compaction over it.
            self.take_base(&mut inputs, base, remaining, None);
            drop(inputs);
            tracing::debug!(
                started_at,
                "store overlay compacted; served at the next compile"
            );
            return;
        }
        let served = if remaining.is_empty() {
            Ok(snapshot)
        } else {
            let Some(objects) = inputs.objects.as_ref() else {
                return;
            };
            let changes = remaining
                .keys()
                .map(|id| (id.as_str(), move || value_of(objects, id)));
            base.apply_over(
                None,
                |_| true,
                changes,
                Some(self.full_maker(inputs.revision)),
            )
        };
        let Ok(served) = served else {
            return;
        };
        self.take_base(&mut inputs, base, remaining, Some(served.share()));
        let previous = self.install(&**app, &mut inputs, served);
        drop(inputs);
        tracing::debug!(started_at, "store overlay compacted");
        drop(previous);
    }

    /// A compaction's new base becomes the incremental path's, with the changes made since
    /// its copy began and the overlay made of them over it (`None`: made by the next
    /// compile).
    fn take_base(
        &self,
        inputs: &mut Inputs,
        base: Arc<OverlayBase>,
        changes: BTreeMap<String, i64>,
        last: Option<Snapshot>,
    ) {
        inputs.incremental.base = Some(base);
        inputs.incremental.changes = changes;
        inputs.incremental.last = last;
        inputs.incremental.moved();
        self.compactions.fetch_add(1, Ordering::AcqRel);
    }

    /// How many compactions have made a new base for the incremental path.
    pub fn compactions(&self) -> u64 {
        self.compactions.load(Ordering::Acquire)
    }

    /// The documents a compaction compiles: the files, and the store's objects copied
    /// `piece` at a time ([`StoreOptions::gather_piece`]), each piece under the inputs' lock, so that the
    /// validation of writes and the watch's changes go on between pieces. The objects
    /// may change between pieces, so the copy need not be the objects of any one
    /// revision; it need not be: every object changed after the gather began is one of the
    /// changes laid over the new base (by id, with its value then), whatever the base holds
    /// under its id. `None` when the base was replaced meanwhile (or is not the current
    /// state's), or when something cannot be read.
    fn gather_for_compaction(&self, piece: usize) -> Option<Gathered> {
        let mut inputs = self.inputs();
        let base = inputs
            .incremental
            .base
            .clone()
            .filter(|_| inputs.consistent)?;
        let files = inputs.files.clone()?;
        let started_at = inputs.revision;
        let mut store = Document {
            version: Some(1),
            ..Document::default()
        };
        store
            .assignments
            .reserve(base.snapshot().counts.assignments);
        let mut bad = Vec::new();
        let mut after: Option<String> = None;
        let between = |done| {
            if let Some(PieceHook(hook)) = &self.options.between_pieces {
                hook(done);
            }
        };
        loop {
            let objects = inputs.objects.as_ref()?;
            after = objects::copy_into(&mut store, &mut bad, objects, after.as_deref(), piece);
            if !bad.is_empty() {
                return None;
            }
            if after.is_none() {
                break;
            }
            drop(inputs);
            between(false);
            inputs = self.inputs();
            if !inputs.still_on(&base) {
                return None;
            }
        }
        let whole = inputs.revision == started_at;
        drop(inputs);
        between(true);
        // The files are parsed without the lock: a change of them compiles in full, which
        // replaces the base, and the compaction is then abandoned.
        let mut docs = Vec::with_capacity(files.len() + 1);
        for file in &files {
            docs.push((file.name.clone(), file.parse().ok()?));
        }
        docs.push((self.document_name(), store));
        Some(Gathered {
            docs,
            revision: source::revision(&files),
            started_at,
            whole,
            base,
        })
    }

    /// Installs a policy compiled in full, and makes it the incremental path's base.
    fn install_full(
        &self,
        app: &App,
        inputs: &mut Inputs,
        snapshot: Snapshot,
    ) -> Option<Arc<LoadedPolicy>> {
        let store_assignments = inputs.objects.as_ref().map_or(0, |o| {
            o.range(ASSIGNMENTS.to_owned()..)
                .take_while(|(k, _)| k.starts_with(ASSIGNMENTS))
                .filter(|(_, v)| matches!(v, Ok(Object::Assignment(_))))
                .count()
        });
        inputs.incremental.base = Some(Arc::new(OverlayBase::new(&snapshot, store_assignments)));
        inputs.incremental.changes.clear();
        inputs.incremental.last = None;
        inputs.incremental.moved();
        // The last full policy is this one: an older one's memory is let go here.
        let replaced = self
            .last_full
            .lock()
            .ok()
            .and_then(|mut last| last.replace((inputs.revision, snapshot.share())));
        crate::live::reaper::drop_later(replaced);
        self.install(app, inputs, snapshot)
    }

    /// New file (or bundle) documents: compiled with the store's objects and installed, or
    /// rejected. Runs on a blocking thread. Before the store is first read they are only
    /// kept (the server stays unready).
    pub fn load_files(
        &self,
        app: &App,
        files: Vec<SourceDocument>,
    ) -> Result<LoadOutcome, PolicyError> {
        let mut inputs = self.inputs();
        if let Some(current) = &inputs.files
            && source::revision(current) == source::revision(&files)
            && current
                .iter()
                .map(|s| &s.name)
                .eq(files.iter().map(|s| &s.name))
        {
            return Ok(LoadOutcome::Unchanged);
        }
        let Some(objects) = &inputs.objects else {
            inputs.files = Some(files);
            return Ok(LoadOutcome::Unchanged);
        };
        let snapshot = self.compose(&files, objects)?;
        inputs.files = Some(files);
        let revision = snapshot.revision.clone();
        let previous = self.install_full(app, &mut inputs, snapshot);
        drop(inputs);
        drop(previous);
        Ok(LoadOutcome::Installed(revision))
    }

    /// The store's objects changed (a fresh read, or watch events applied to `inputs`):
    /// installs the change, or records the error. A batch that only writes store
    /// assignments, on a consistent state, is laid over the base as an overlay (no full
    /// compile); anything else compiles in full. Runs on the store's thread ([`worker`]).
    pub fn recompile(self: &Arc<Self>, app: &Arc<App>) -> LoadOutcome {
        let mut inputs = self.inputs();
        let judged = inputs.revision;
        if inputs.files.is_none() || inputs.objects.is_none() {
            return LoadOutcome::Unchanged;
        }
        let pending = std::mem::take(&mut inputs.pending);
        if let Some((outcome, previous)) = self.incrementally(app, &mut inputs, &pending) {
            drop(inputs);
            self.judged.send_replace(judged);
            drop(previous);
            return outcome;
        }
        let (Some(files), Some(objects)) = (&inputs.files, &inputs.objects) else {
            return LoadOutcome::Unchanged;
        };
        let mut previous = None;
        let outcome = match self.compose(files, objects) {
            Ok(snapshot) => {
                let revision = snapshot.revision.clone();
                previous = self.install_full(&**app, &mut inputs, snapshot);
                drop(inputs);
                LoadOutcome::Installed(revision)
            }
            Err(e) => {
                inputs.consistent = false;
                drop(inputs);
                let message = format!("store change rejected: {e}");
                app.reject(message.clone());
                LoadOutcome::Rejected(message)
            }
        };
        self.judged.send_replace(judged);
        drop(previous);
        outcome
    }

    fn install(
        &self,
        app: &App,
        inputs: &mut Inputs,
        snapshot: Snapshot,
    ) -> Option<Arc<LoadedPolicy>> {
        inputs.consistent = true;
        let revision = inputs.revision;
        let previous = app.install_at(snapshot, revision);
        self.answers_at(app, revision);
        previous
    }
}

/// What a compaction compiles ([`Store::gather_for_compaction`]).
struct Gathered {
    docs: Vec<(String, Document)>,
    /// The files' revision.
    revision: String,
    /// The store revision when the gather began: every object changed since is laid
    /// over the new base.
    started_at: i64,
    /// Nothing changed during the gather: the documents are the state at `started_at`.
    whole: bool,
    /// The base the overlay was laid over when the gather began.
    base: Arc<OverlayBase>,
}

/// How many store objects a compaction copies per hold of the inputs' lock (a few
/// milliseconds each).
const GATHER_PIECE: usize = 16_384;

/// How much lower than the request path's the compaction thread's priority is (its nice
/// value, on Linux): a compaction at a million assignments is a second or more of CPU,
/// which must not take the cores from the checks while they have work.
const COMPACTION_NICENESS: i32 = 10;

/// A token naming a store revision (SPEC §10). Opaque to clients.
pub fn token(revision: i64) -> String {
    if revision <= 0 {
        String::new()
    } else {
        format!("r{revision}")
    }
}

/// A consistency token this service did not issue (as given).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "consistency token `{}` is not one this service issued",
    crate::policy::syntax::escape(.token)
)]
pub struct InvalidToken {
    pub token: String,
}

/// The revision a token names; `Err` for anything that is not a token of ours.
pub fn parse_token(token: &str) -> Result<i64, InvalidToken> {
    token
        .strip_prefix('r')
        .and_then(|n| n.parse::<i64>().ok())
        .filter(|n| *n > 0)
        .ok_or_else(|| InvalidToken {
            token: token.into(),
        })
}

/// The request header that carries a consistency token in ext_authz and the HTTP modes.
pub const CONSISTENCY_HEADER: &str = "x-iotauthz-consistency";

/// The longest a request waits for its replica to catch up with a token.
pub const MAX_TOKEN_WAIT: Duration = Duration::from_secs(2);

/// Why a request could not be answered at its token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenError {
    /// Not a token (`INVALID_ARGUMENT`, 400).
    Invalid(String),
    /// The replica did not catch up in time (`UNAVAILABLE`, 503).
    Behind(String),
}

/// Waits until the policy answers at least at `token`'s revision, up to `limit` (itself at
/// most [`MAX_TOKEN_WAIT`]). Without a store a token is refused as `Behind`: no state
/// here can be shown to contain the write it names. An empty token asks for nothing.
pub async fn wait_for(app: &App, token: &str, limit: Option<Duration>) -> Result<(), TokenError> {
    if token.is_empty() {
        return Ok(());
    }
    let wanted = parse_token(token).map_err(|e| TokenError::Invalid(e.to_string()))?;
    let Some(store) = app.store() else {
        return Err(TokenError::Behind(
            "this server has no store, so it cannot answer at a consistency token".into(),
        ));
    };
    if store.through() >= wanted {
        return Ok(());
    }
    // A tenth of the caller's deadline is left to send the refusal before it expires.
    let limit = limit
        .map_or(MAX_TOKEN_WAIT, |d| d - d / 10)
        .min(MAX_TOKEN_WAIT);
    let mut rx = store.subscribe();
    let _waiting = store.waiting_for_changes();
    store.progress.notify_one();
    let waited = tokio::time::timeout(limit, async {
        // A report may prove the revision current without any event: ask again now and then.
        loop {
            tokio::select! {
                r = rx.wait_for(|t| *t >= wanted) => return r.is_ok(),
                () = tokio::time::sleep(Duration::from_millis(100)) => store.progress.notify_one(),
            }
        }
    })
    .await;
    match waited {
        Ok(true) => Ok(()),
        _ => Err(TokenError::Behind(format!(
            "this replica has not caught up with the consistency token (it answers at {}, the token names {})",
            token_or_none(store.through()),
            escape_token(token)
        ))),
    }
}

/// One request counted as waiting for the store's changes while it lives
/// ([`Store::waiting_for_changes`]).
pub(crate) struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

fn token_or_none(revision: i64) -> String {
    if revision <= 0 {
        "no store revision yet".into()
    } else {
        token(revision)
    }
}

fn escape_token(token: &str) -> String {
    crate::policy::syntax::escape(token)
}

/// The token of the state a policy answers at (empty without a store).
pub fn token_of(policy: &LoadedPolicy) -> String {
    token(policy.store_revision())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The overlay the Admin API validated is installed only for a batch of exactly its
    /// ids with exactly its values, at the generation it was made at, and only once.
    #[test]
    fn a_validated_overlay_is_taken_only_for_exactly_its_writes() {
        let roles = "version: 1\nroles:\n  - {name: Reader, actions: [\"*/read\"]}\n";
        let files =
            crate::policy::compile_sources(&[SourceDocument::new("r.yaml", roles)]).unwrap();
        let base = OverlayBase::new(&files, 0);
        let grant = |id: &str, principal: &str| AssignmentDoc {
            principal: principal.into(),
            role: "Reader".into(),
            scope: "/apps".into(),
            id: Some(id.into()),
            ..Default::default()
        };
        let a1 = grant("a-1", "user:one");
        let set = |inputs: &mut Inputs, value: Option<AssignmentDoc>| {
            let objects = inputs.objects.get_or_insert_with(Default::default);
            match value {
                Some(a) => objects.insert("assignments/a-1".into(), Ok(Object::Assignment(a))),
                None => objects.remove("assignments/a-1"),
            };
        };
        let keep = |inputs: &mut Inputs| {
            let made = base.apply([("a-1", Some(&a1))], None).unwrap();
            Store::keep_validated(inputs, vec![("a-1".into(), Some(a1.clone()))], made);
        };
        let mut inputs = Inputs::default();
        set(&mut inputs, Some(a1.clone()));

        keep(&mut inputs);
        let taken = Store::take_validated(&mut inputs, &["a-1"]).unwrap();
        assert_eq!(taken.overlay_len(), 1);
        // Once only.
        assert!(Store::take_validated(&mut inputs, &["a-1"]).is_none());
        // Not after the base, the changes or the last overlay moved.
        keep(&mut inputs);
        inputs.incremental.generation += 1;
        assert!(Store::take_validated(&mut inputs, &["a-1"]).is_none());
        keep(&mut inputs);
        inputs.incremental.moved();
        assert!(inputs.incremental.validated.is_none());
        // Not for another value of the same key (rewritten, or revoked), nor for a batch
        // holding another key too, nor for a batch without it.
        keep(&mut inputs);
        set(&mut inputs, Some(grant("a-1", "user:two")));
        assert!(Store::take_validated(&mut inputs, &["a-1"]).is_none());
        keep(&mut inputs);
        set(&mut inputs, None);
        assert!(Store::take_validated(&mut inputs, &["a-1"]).is_none());
        set(&mut inputs, Some(a1.clone()));
        keep(&mut inputs);
        assert!(Store::take_validated(&mut inputs, &["a-1", "a-2"]).is_none());
        keep(&mut inputs);
        assert!(Store::take_validated(&mut inputs, &["a-0"]).is_none());
        // And again for exactly its writes.
        keep(&mut inputs);
        assert!(Store::take_validated(&mut inputs, &["a-1"]).is_some());
    }

    #[test]
    fn merged_ids_are_the_union_in_key_order() {
        let union = |a: &[&'static str], b: &[&'static str]| {
            merged(a.iter().copied(), b.iter().copied()).collect::<Vec<_>>()
        };
        assert_eq!(
            union(&["a", "c", "e"], &["b", "c", "f", "g"]),
            ["a", "b", "c", "e", "f", "g"]
        );
        assert_eq!(union(&[], &["x"]), ["x"]);
        assert_eq!(union(&["x", "y"], &[]), ["x", "y"]);
        assert_eq!(union(&["b"], &["a"]), ["a", "b"]);
        assert!(union(&[], &[]).is_empty());
    }

    #[test]
    fn a_value_is_read_only_from_an_assignment_key() {
        let mut objects = Objects::new();
        let a: AssignmentDoc =
            serde_json::from_str(r#"{"principal":"user:a","role":"R","scope":"/s","id":"a-1"}"#)
                .unwrap();
        objects.insert("assignments/a-1".into(), Ok(Object::Assignment(a)));
        objects.insert("assignments/a-2".into(), Err(ObjectError::EmptyId));
        assert_eq!(
            value_of(&objects, "a-1").unwrap().unwrap().principal,
            "user:a"
        );
        assert!(value_of(&objects, "a-3").unwrap().is_none());
        assert!(value_of(&objects, "a-2").is_err());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_compaction_thread_runs_at_a_lower_priority_than_the_others() {
        let nice = || rustix::process::getpriority_process(Some(rustix::thread::gettid()));
        let before = nice().unwrap();
        let (lowered, after) = std::thread::spawn(move || {
            let inherited = nice().unwrap();
            crate::priority::lower_niceness_by(COMPACTION_NICENESS).unwrap();
            (nice().unwrap() - inherited, inherited)
        })
        .join()
        .unwrap();
        assert_eq!(after, before);
        // 19 is the lowest priority: a thread already near it goes no lower.
        assert_eq!(lowered, COMPACTION_NICENESS.min(19 - before));
        assert_eq!(
            nice().unwrap(),
            before,
            "only the compaction thread is lowered"
        );
    }

    #[test]
    fn tokens_round_trip_and_refuse_anything_else() {
        assert_eq!(parse_token(&token(42)), Ok(42));
        assert_eq!(parse_token("42"), Err(InvalidToken { token: "42".into() }));
        assert!(parse_token("r-1").is_err());
        assert!(parse_token("r0").is_err());
        assert_eq!(token(0), "");
    }
}
