//! The Admin API `iotauthz.v1.Admin` (SPEC §9): role assignments, role definitions and
//! groups written to the store.
//!
//! Every write goes through [`Admin::write`]: identify the actor (the policy's identity
//! sources over the call's metadata), then queue the write for its replica's next
//! transaction (group commit). One task per replica takes the queued writes as a group
//! (in arrival order, at most [`MAX_GROUP`](crate::store::admin_queue::MAX_GROUP), one per key), plans, authorizes and
//! validates them in order against one store revision, each on the state holding the
//! group's earlier allowed writes (a refused write answers its own refusal and does not
//! stop the others), and commits the allowed ones in one etcd transaction that holds only
//! if no admin write and none of their keys changed since that revision: one revision,
//! every write's token. A lost race validates the group again (up to [`ATTEMPTS`] times),
//! never applies part of it. Every attempt, accepted or refused, is one audit line in the
//! decision log.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tonic::{Request, Response, Status};

use super::App;
use crate::live::LoadedPolicy;
use crate::policy::document::{AssignmentDoc, GroupDoc, RoleDoc};
use crate::policy::identity::IdentityInput;
use crate::policy::syntax::{self, escape};
use crate::policy::{CheckRequest, RequestError, Snapshot};
use crate::proto::iotauthz::v1 as pb;
use crate::store::admin_queue::{Existing, MAX_GROUP_BYTES, Queued, Write};
use crate::store::objects::{self, Kind, Object, ObjectError};
use crate::store::{self as store_mod, Store, etcd};

/// How long a write waits for etcd's answer (under the server's request deadline).
const ETCD_TIMEOUT: Duration = Duration::from_secs(3);

/// The longest a write waits for this replica to judge a change it has to see first.
const JUDGED_PATIENCE: Duration = Duration::from_secs(2);

/// How long that write waits for the watch before it asks etcd for a progress report.
const ASK_PROGRESS_AFTER: Duration = Duration::from_millis(50);

/// The longest writes arriving together are gathered into one group
/// (`--etcd-apply-window-ms`, at most this; see [`AdminQueue::gather_until`]).
///
/// [`AdminQueue::gather_until`]: crate::store::admin_queue::AdminQueue::gather_until
const MAX_GATHER: Duration = Duration::from_millis(50);

/// How many times a write is validated and tried when another write got in first.
pub const ATTEMPTS: usize = 5;

/// The action a role definition write or delete needs at each of its assignable scopes.
pub const ROLE_WRITE: &str = "Microsoft.Authorization/roleDefinitions/write";
pub const ROLE_DELETE: &str = "Microsoft.Authorization/roleDefinitions/delete";
/// The action a group write or delete needs at `/`.
pub const GROUP_WRITE: &str = "Microsoft.Authorization/groups/write";
pub const GROUP_DELETE: &str = "Microsoft.Authorization/groups/delete";
/// The action listing assignments needs at the listed scope.
pub const ASSIGNMENT_READ: &str = "Microsoft.Authorization/roleAssignments/read";

const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 1000;

/// The Admin service.
#[derive(Debug, Clone)]
pub struct Admin {
    app: Arc<App>,
}

/// One audit line.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AuditRecord<'a> {
    time: String,
    api: &'static str,
    actor: Option<&'a str>,
    operation: &'static str,
    object: &'a str,
    result: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<&'a str>,
}

/// Reads the call's metadata as headers for the identity sources (text values only).
fn metadata_headers(metadata: &tonic::metadata::MetadataMap) -> Vec<(String, String)> {
    metadata
        .iter()
        .filter_map(|entry| match entry {
            tonic::metadata::KeyAndValueRef::Ascii(k, v) => v
                .to_str()
                .ok()
                .map(|v| (k.as_str().to_owned(), v.to_owned())),
            tonic::metadata::KeyAndValueRef::Binary(..) => None,
        })
        .collect()
}

impl Admin {
    pub fn new(app: Arc<App>) -> Self {
        Self { app }
    }

    fn store(&self) -> Result<Arc<Store>, Status> {
        self.app.store.get().cloned().ok_or_else(|| {
            Status::failed_precondition(
                "this server has no store (serve --etcd-endpoints): the Admin API writes to the store",
            )
        })
    }

    fn policy(&self) -> Result<Arc<LoadedPolicy>, Status> {
        self.app
            .policy
            .current()
            .ok_or_else(|| Status::unavailable("no policy loaded"))
    }

    /// The caller, by the policy's identity sources over the call's metadata: a bearer
    /// source verifies the `authorization` metadata; a present but invalid token
    /// identifies no one and stops the search, as everywhere else.
    fn actor(
        app: &App,
        policy: &LoadedPolicy,
        metadata: &tonic::metadata::MetadataMap,
    ) -> Result<String, Status> {
        use crate::policy::identity::IdentifyError;
        let headers = metadata_headers(metadata);
        let input = IdentityInput {
            headers: Some(&headers),
            metadata: None,
            peer_principal: None,
            verifier: Some(app.verifier()),
            at: syntax::now(),
        };
        match policy.snapshot.identity.identify(&input) {
            Ok(Some(identity)) => Ok(identity.principal),
            Ok(None) => Err(Status::unauthenticated(
                "no identity: the call's metadata names no principal the policy's identity sources accept",
            )),
            Err(IdentifyError::Ambiguous(message)) => Err(Status::unauthenticated(message)),
            Err(IdentifyError::Rejected { issuer, reason }) => {
                app.keys.count_rejection(&issuer, reason);
                Err(Status::unauthenticated(format!(
                    "noIdentity: bearer token refused ({reason})"
                )))
            }
        }
    }

    fn audit(
        &self,
        actor: Option<&str>,
        operation: &'static str,
        object: &str,
        result: Result<&str, &Status>,
    ) {
        let Some(log) = &self.app.decision_log else {
            return;
        };
        let (outcome, message, token) = match result {
            Ok(token) => ("accepted", None, Some(token)),
            Err(status) => (status_name(status.code()), Some(status.message()), None),
        };
        log.audit(&AuditRecord {
            time: rfc3339_now(),
            api: "admin",
            actor,
            operation,
            object,
            result: outcome,
            message,
            token,
        });
    }

    /// Plans, authorizes, validates and commits one write (see the module docs) of the
    /// object `kind`/`id` (`field` names the id in messages). `plan` sees the serving
    /// policy, the actor and what is stored under the key, and returns the value to put
    /// (`None`: delete the key) or refuses the write.
    async fn write<P>(
        &self,
        operation: &'static str,
        kind: Kind,
        field: &'static str,
        id: &str,
        metadata: &tonic::metadata::MetadataMap,
        plan: P,
    ) -> Result<String, Status>
    where
        P: Fn(&LoadedPolicy, &str, Existing<'_>) -> Result<Option<Object>, Status>
            + Send
            + Sync
            + 'static,
    {
        let object = key(kind, id);
        let mut actor = None;
        let result = self
            .write_inner(field, id, &object, metadata, Arc::new(plan), &mut actor)
            .await;
        self.audit(actor.as_deref(), operation, &object, result.as_deref());
        result
    }

    async fn write_inner<P>(
        &self,
        field: &'static str,
        id: &str,
        object: &str,
        metadata: &tonic::metadata::MetadataMap,
        plan: Arc<P>,
        actor_out: &mut Option<String>,
    ) -> Result<String, Status>
    where
        P: Fn(&LoadedPolicy, &str, Existing<'_>) -> Result<Option<Object>, Status>
            + Send
            + Sync
            + 'static,
    {
        let store = self.store()?;
        let policy = self.policy()?;
        let actor = Self::actor(&self.app, &policy, metadata)?;
        // Not held while this write waits: a replaced policy is freed once nobody holds it.
        drop(policy);
        *actor_out = Some(actor.clone());
        check_id(field, id)?;
        let (reply, answer) = tokio::sync::oneshot::channel();
        let write = Arc::new(Write {
            actor,
            object: object.to_owned(),
            plan,
        });
        let start = {
            let mut queue = lock(&store.admin_queue);
            queue.writes.push_back(Queued { write, reply });
            !std::mem::replace(&mut queue.draining, true)
        };
        // One task per replica commits the queue, group by group; it is not this
        // request's, so a caller that goes away never leaves a group half answered.
        if start {
            let (admin, store) = (self.clone(), store.clone());
            tokio::spawn(async move { admin.drain(&store).await });
        }
        answer.await.unwrap_or_else(|_| {
            Err(Status::unavailable(
                "the write was not answered; it may or may not have been applied, read it back before trying again",
            ))
        })
    }

    /// Commits the queued writes, a group at a time, until the queue is empty.
    async fn drain(&self, store: &Arc<Store>) {
        let window = store.options.apply_window.min(MAX_GATHER);
        loop {
            let gather = lock(&store.admin_queue).gather_until(window);
            if let Some(until) = gather {
                tokio::time::sleep_until(until).await;
            }
            let group = {
                let mut queue = lock(&store.admin_queue);
                let group = queue.take_group();
                queue.committing = group.len();
                if group.is_empty() {
                    queue.draining = false;
                    return;
                }
                queue.last_group = Some((tokio::time::Instant::now(), group.len()));
                group
            };
            self.commit_group(store, group).await;
        }
    }

    /// Validates a group of writes together and commits the allowed ones in one etcd
    /// transaction (see the module docs); answers every write of the group.
    async fn commit_group(&self, store: &Arc<Store>, mut group: Vec<Queued>) {
        let prefix = store.options.prefix.as_bytes();
        let sentinel = [prefix, objects::META.as_bytes(), b"write"].concat();
        let mut fresh = false;
        for _ in 0..ATTEMPTS {
            // What this replica has taken from the watch is compiled first (the watch may
            // be gathering changes written elsewhere): a group is validated on a state it
            // has judged, and over the incremental path's base when it can be.
            let s = store.clone();
            if let Ok(applied) = store.worker.run(move || s.applied()).await {
                judged(store, applied).await;
            }
            let policy = match self.policy() {
                Ok(p) => p,
                Err(status) => return answer_all(group, &Err(status)),
            };
            let writes: Vec<Arc<Write>> = group.iter().map(|q| q.write.clone()).collect();
            let (s, p) = (store.clone(), policy.clone());
            let validated = store
                .worker
                .run(move || validate_group(&s, &p, &writes))
                .await;
            let (revision, mut planned) = match validated {
                Ok(v) => v,
                Err(e) => {
                    return answer_all(
                        group,
                        &Err(Status::internal(format!("write not validated: {e}"))),
                    );
                }
            };
            // A refusal by a state that lacks an admin write already made (a role put,
            // then an assignment of it at once, perhaps through another replica) is not
            // final: once this replica has judged that write, the group is planned again.
            // A state that is allowed needs no such read: it is committed only if nothing
            // changed since (the transaction's comparison).
            if !fresh && planned.iter().any(Result::is_err) {
                fresh = true;
                match last_admin_write(store, &sentinel).await {
                    Ok(last) if last > revision.min(policy.store_revision()) => {
                        judged(store, last).await;
                        continue;
                    }
                    Ok(_) => {}
                    Err(status) => {
                        for p in planned.iter_mut().filter(|p| p.is_err()) {
                            *p = Err(status.clone());
                        }
                    }
                }
            }
            drop(policy);
            // Past the transaction's size, the rest of the group waits for the next one
            // (and is validated again, on the state this one makes).
            let fits = fitting(&planned);
            if fits < group.len() {
                let rest = group.split_off(fits);
                planned.truncate(fits);
                lock(&store.admin_queue).put_back(rest);
            }
            let mut ops = Vec::new();
            let mut compare = vec![etcd::unchanged_since(&sentinel, &[], revision)];
            let mut marker = Vec::new();
            for (q, p) in group.iter().zip(&planned) {
                let Ok(value) = p else { continue };
                let key = [prefix, q.write.object.as_bytes()].concat();
                // The key itself catches a direct write to the same object. Two single
                // keys per write, not the whole prefix: etcd evaluates a range comparison
                // on every key in the range, a second of its CPU at a million objects.
                compare.push(etcd::unchanged_since(&key, &[], revision));
                ops.push(match value {
                    Some(object) => etcd::put(key, object.to_json()),
                    None => etcd::delete(key),
                });
                marker.push(serde_json::json!({"actor": q.write.actor, "key": q.write.object}));
            }
            if ops.is_empty() {
                return answer_each(group, planned, &Ok(String::new()));
            }
            // Every admin write moves the marker, so admin groups exclude each other.
            let marker = match <[_; 1]>::try_from(marker) {
                Ok([one]) => one,
                Err(many) => serde_json::json!({ "writes": many }),
            };
            ops.push(etcd::put(sentinel.clone(), marker.to_string().into_bytes()));
            let txn = store.etcd.txn(compare, ops);
            // Without a quorum etcd may hold a write until its own timeout: answer first.
            let (succeeded, after) = match tokio::time::timeout(ETCD_TIMEOUT, txn).await {
                Ok(Ok(done)) => done,
                Ok(Err(s)) => {
                    let status = Status::unavailable(format!(
                        "the store could not be written: {}",
                        store_mod::follow::status_text(&s)
                    ));
                    return answer_each(group, planned, &Err(status));
                }
                Err(_) => {
                    let status = Status::unavailable(format!(
                        "the store could not be written: etcd did not answer within {} s (no quorum?); the write may or may not have been applied, read it back before trying again",
                        ETCD_TIMEOUT.as_secs()
                    ));
                    return answer_each(group, planned, &Err(status));
                }
            };
            store.contact();
            // Either way this replica judges the revision before the next group is
            // validated (bounded: past the patience a group is validated on an older
            // state, and its transaction's comparison makes it wait and try again).
            judged(store, after).await;
            if succeeded {
                return answer_each(group, planned, &Ok(store_mod::token(after)));
            }
            // Another write got in first: plan and validate again against the new state.
        }
        answer_all(
            group,
            &Err(Status::aborted(
                "the store kept changing while this write was validated; try again",
            )),
        );
    }
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// How many writes of a validated group fit one transaction (at least one).
fn fitting(planned: &[Result<Option<Object>, Status>]) -> usize {
    let mut bytes = 0;
    for (i, p) in planned.iter().enumerate() {
        if let Ok(Some(object)) = p {
            bytes += object.to_json().len();
            if bytes > MAX_GROUP_BYTES && i > 0 {
                return i;
            }
        }
    }
    planned.len()
}

/// Answers every write of a group alike.
fn answer_all(group: Vec<Queued>, answer: &Result<String, Status>) {
    for q in group {
        let _ = q.reply.send(answer.clone());
    }
}

/// Answers each refused write of a group with its refusal, and each allowed one with
/// `allowed`: the transaction's token, or why it was not committed.
fn answer_each(
    group: Vec<Queued>,
    planned: Vec<Result<Option<Object>, Status>>,
    allowed: &Result<String, Status>,
) {
    for (q, p) in group.into_iter().zip(planned) {
        let _ = q.reply.send(match p {
            Err(refusal) => Err(refusal),
            Ok(_) => allowed.clone(),
        });
    }
}

/// The revision of the store's last admin write (every admin write also writes
/// `meta/write`; 0: none yet), read with a quorum; without one, the write is refused.
async fn last_admin_write(store: &Store, sentinel: &[u8]) -> Result<i64, Status> {
    match tokio::time::timeout(ETCD_TIMEOUT, store.etcd.get(sentinel)).await {
        Ok(Ok((last, _))) => Ok(last.map_or(0, |kv| kv.mod_revision)),
        Ok(Err(s)) => Err(Status::unavailable(format!(
            "the store could not be read: {}",
            store_mod::follow::status_text(&s)
        ))),
        Err(_) => Err(Status::unavailable(format!(
            "the store could not be read: etcd did not answer within {} s (no quorum?); nothing was written",
            ETCD_TIMEOUT.as_secs()
        ))),
    }
}

/// Waits, bounded, until this replica has judged the store's changes up to `revision`.
async fn judged(store: &Store, revision: i64) {
    let mut judged = store.judged();
    if *judged.borrow_and_update() >= revision {
        return;
    }
    let _waiting = store.waiting_for_changes();
    let first = tokio::time::timeout(ASK_PROGRESS_AFTER, judged.wait_for(|r| *r >= revision));
    if first.await.is_ok() {
        return;
    }
    // `revision` may be a write outside the prefix (a lost transaction's answer names
    // etcd's latest revision), which no change brings: a progress report proves it.
    store.progress.notify_one();
    let rest = JUDGED_PATIENCE - ASK_PROGRESS_AFTER;
    let _ = tokio::time::timeout(rest, judged.wait_for(|r| *r >= revision)).await;
}

/// Plans and validates a group of writes, in order, on the current objects: each write
/// is planned (authorized) by the policy holding the group's earlier allowed writes, and
/// judged by the rules on the objects holding them and itself; a refused write is left
/// out and does not stop the others. The objects are put back before the lock is let go.
/// Returns the store revision validated against, and for each write the value to write
/// under its key (`None`: delete it) or its refusal.
fn validate_group(
    store: &Store,
    policy: &Arc<LoadedPolicy>,
    writes: &[Arc<Write>],
) -> (i64, Vec<Result<Option<Object>, Status>>) {
    let mut inputs = store.inputs();
    // The writes are authorized by `policy`, so the transaction compares against the
    // revision `policy` answers at when the objects hold changes it was not compiled
    // from yet: a change that moved the write marker since (a revocation of the actor's
    // role through another replica) fails the comparison, and the group is planned again
    // once this replica has judged it.
    let revision = inputs.revision.min(policy.store_revision());
    let files = inputs.files.clone().unwrap_or_default();
    if inputs.objects.is_none() {
        let unread = || Err(Status::unavailable("the store has not been read yet"));
        return (revision, writes.iter().map(|_| unread()).collect());
    }
    if let Some(results) = validate_grants_together(&mut inputs, policy, writes) {
        return (revision, results);
    }
    let mut policy = policy.clone();
    let mut results = Vec::with_capacity(writes.len());
    // The keys the group's allowed writes changed, with what they held before.
    let mut undo: Vec<(String, Option<Result<Object, ObjectError>>)> = Vec::new();
    // The ids of the store assignments they changed; `None` once one changed another
    // kind of object (the incremental path's base no longer holds the others).
    let mut assignment_ids = Some(BTreeSet::new());
    // Whether the last write allowed was validated on an overlay (which then holds every
    // allowed assignment write of the group).
    let mut overlaid = false;
    for write in writes {
        let key = write.object.as_str();
        let Some(objects) = inputs.objects.as_mut() else {
            break;
        };
        let value = match (write.plan)(&policy, &write.actor, objects.get(key)) {
            Ok(value) => value,
            Err(refusal) => {
                results.push(Err(refusal));
                continue;
            }
        };
        let old = match &value {
            Some(object) => objects.insert(key.to_owned(), Ok(object.clone())),
            None => objects.remove(key),
        };
        // An assignment write is validated over the incremental path's base when it can
        // be; a refusal (or anything else) is judged by a full compile, which also words it.
        let assignment = match &value {
            Some(Object::Assignment(_)) | None => key.strip_prefix(ASSIGNMENTS),
            Some(_) => None,
        };
        let mut ids = assignment_ids.clone();
        let incremental = match (assignment, ids.as_mut()) {
            (Some(id), Some(ids)) => {
                ids.insert(id.to_owned());
                Store::apply_incrementally(&inputs, ids)
            }
            _ => None,
        };
        let on_overlay = incremental.is_some();
        let after = match incremental {
            Some(snapshot) => Ok(snapshot),
            None => match inputs.objects.as_ref() {
                Some(objects) => store.compose(&files, objects).map_err(|e| {
                    Status::failed_precondition(format!(
                        "the write would make the policy invalid, so nothing was written: {e}"
                    ))
                }),
                None => Err(Status::unavailable("the store has not been read yet")),
            },
        };
        match after {
            Ok(snapshot) => {
                overlaid = on_overlay;
                undo.push((key.to_owned(), old));
                assignment_ids = if assignment.is_some() { ids } else { None };
                policy = Arc::new(LoadedPolicy {
                    snapshot,
                    loaded_at: std::time::SystemTime::now(),
                    generation: policy.generation,
                    store_revision: std::sync::atomic::AtomicI64::new(revision),
                });
                results.push(Ok(value));
            }
            Err(refusal) => {
                put_back(&mut inputs, key, old);
                results.push(Err(refusal));
            }
        }
    }
    for (key, old) in undo.into_iter().rev() {
        put_back(&mut inputs, &key, old);
    }
    if overlaid && assignment_ids.is_some() {
        // The last state validated: the group's own overlay.
        if let Some(snapshot) = Arc::try_unwrap(policy).ok().and_then(|p| p.into_snapshot()) {
            keep_overlay(&mut inputs, snapshot, writes, &results);
        }
    }
    (revision, results)
}

/// Keeps the overlay a group was validated on, holding its allowed assignment writes,
/// for the watch to install when it brings them ([`Store::keep_validated`]).
fn keep_overlay(
    inputs: &mut store_mod::Inputs,
    snapshot: Snapshot,
    writes: &[Arc<Write>],
    results: &[Result<Option<Object>, Status>],
) {
    let mut values = Vec::new();
    for (write, result) in writes.iter().zip(results) {
        let Ok(value) = result else { continue };
        let Some(id) = write.object.strip_prefix(ASSIGNMENTS) else {
            return;
        };
        let value = match value {
            Some(Object::Assignment(a)) => Some(a.clone()),
            None => None,
            Some(_) => return,
        };
        values.push((id.to_owned(), value));
    }
    Store::keep_validated(inputs, values, snapshot);
}

/// The common group, validated at the cost of one write: new assignments only, none of
/// them to the actor of a later write nor to a group. Each write's plan then reads the same
/// decisions on the serving policy as on the state holding the group's earlier writes
/// (an assignment changes the decisions of its principal and of the members of a group it
/// names, nobody else's), and each state between is valid when the last is (the rules an
/// assignment write can break hold for each new assignment alone, and a minimum count of
/// assignments only grows with new ones). `None`: validate the writes one by one.
fn validate_grants_together(
    inputs: &mut store_mod::Inputs,
    policy: &LoadedPolicy,
    writes: &[Arc<Write>],
) -> Option<Vec<Result<Option<Object>, Status>>> {
    if writes.len() < 2 {
        return None;
    }
    let objects = inputs.objects.as_ref()?;
    let mut results = Vec::with_capacity(writes.len());
    let mut granted: Vec<String> = Vec::new();
    let mut ids = BTreeSet::new();
    for write in writes {
        if granted.iter().any(|g| g.eq_ignore_ascii_case(&write.actor)) {
            return None;
        }
        let existing = objects.get(&write.object);
        let planned = (write.plan)(policy, &write.actor, existing);
        if let Ok(value) = &planned {
            let Some(Object::Assignment(a)) = value else {
                return None;
            };
            let is_group = syntax::principal_type(&a.principal).map_or(true, |t| t == "group");
            let id = write.object.strip_prefix(ASSIGNMENTS)?;
            if existing.is_some() || is_group {
                return None;
            }
            granted.push(a.principal.clone());
            ids.insert(id.to_owned());
        }
        results.push(planned);
    }
    let objects = inputs.objects.as_mut()?;
    for (write, planned) in writes.iter().zip(&results) {
        if let Ok(Some(object)) = planned {
            objects.insert(write.object.clone(), Ok(object.clone()));
        }
    }
    let validated = Store::apply_incrementally(inputs, &ids);
    // Put back whatever happens next: the objects are the store's, not the group's.
    for (write, planned) in writes.iter().zip(&results) {
        if let Ok(Some(_)) = planned {
            put_back(inputs, &write.object, None);
        }
    }
    keep_overlay(inputs, validated?, writes, &results);
    Some(results)
}

/// Puts back what `key` held before a write was tried on the objects.
fn put_back(inputs: &mut store_mod::Inputs, key: &str, old: Option<Result<Object, ObjectError>>) {
    let Some(objects) = inputs.objects.as_mut() else {
        return;
    };
    match old {
        Some(old) => {
            objects.insert(key.to_owned(), old);
        }
        None => {
            objects.remove(key);
        }
    }
}

/// The key prefix of store assignments.
const ASSIGNMENTS: &str = "assignments/";

/// Whether `actor` is allowed `action` at `scope` now.
fn allowed(policy: &LoadedPolicy, actor: &str, action: &str, scope: &str) -> Result<bool, Status> {
    policy
        .snapshot
        .check(&CheckRequest {
            principal: actor,
            groups: &[],
            action,
            data_action: false,
            scope,
            at: syntax::now(),
        })
        .map(|d| d.allowed)
        .map_err(|e| Status::invalid_argument(e.to_string()))
}

/// Refuses unless `actor` is allowed `action` at every scope.
fn require(
    policy: &LoadedPolicy,
    actor: &str,
    action: &str,
    scopes: &[String],
) -> Result<(), Status> {
    let mut missing = Vec::new();
    for scope in scopes {
        if !allowed(policy, actor, action, scope)? {
            missing.push(format!("`{}` at `{}`", escape(action), escape(scope)));
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(Status::permission_denied(format!(
            "`{}` is not allowed this write; missing actions: {}",
            escape(actor),
            missing.join(", ")
        )))
    }
}

fn key(kind: Kind, id: &str) -> String {
    format!("{}/{id}", kind.as_str())
}

/// An id for an assignment created without one: 128 bits from the clock, the process and
/// a counter, hashed, in UUID form.
fn new_id(actor: &str) -> String {
    use sha2::{Digest, Sha256};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = Sha256::new();
    h.update(actor.as_bytes());
    h.update(std::process::id().to_le_bytes());
    h.update(COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    h.update(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default()
            .to_le_bytes(),
    );
    let b = h.finalize();
    let hex: String = b.iter().take(16).map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// An id given in a request: non-empty, printable, no `/` (it becomes a key's last part).
fn check_id(what: &str, id: &str) -> Result<(), Status> {
    if id.is_empty() {
        return Err(Status::invalid_argument(format!("{what} is required")));
    }
    if id.contains('/') || id.chars().any(char::is_control) || id.len() > 512 {
        return Err(Status::invalid_argument(format!(
            "{what} `{}` may not hold `/` or control characters, nor be over 512 bytes",
            escape(id)
        )));
    }
    Ok(())
}

fn none_if_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_owned())
}

fn assignment_doc(a: &pb::RoleAssignment) -> AssignmentDoc {
    AssignmentDoc {
        principal: a.principal.clone(),
        role: a.role.clone(),
        scope: a.scope.clone(),
        id: none_if_empty(&a.id),
        not_before: none_if_empty(&a.not_before),
        not_after: none_if_empty(&a.not_after),
    }
}

fn assignment_pb(a: &AssignmentDoc) -> pb::RoleAssignment {
    pb::RoleAssignment {
        id: a.id.clone().unwrap_or_default(),
        principal: a.principal.clone(),
        role: a.role.clone(),
        scope: a.scope.clone(),
        not_before: a.not_before.clone().unwrap_or_default(),
        not_after: a.not_after.clone().unwrap_or_default(),
    }
}

fn role_doc(r: &pb::RoleDefinition) -> RoleDoc {
    RoleDoc {
        name: r.name.clone(),
        id: none_if_empty(&r.id),
        description: none_if_empty(&r.description),
        actions: r.actions.clone(),
        not_actions: r.not_actions.clone(),
        data_actions: r.data_actions.clone(),
        not_data_actions: r.not_data_actions.clone(),
        assignable_scopes: (!r.assignable_scopes.is_empty()).then(|| r.assignable_scopes.clone()),
    }
}

fn assignable(r: &RoleDoc) -> Vec<String> {
    r.assignable_scopes
        .clone()
        .unwrap_or_else(|| vec!["/".to_owned()])
}

fn stored_role(existing: Existing<'_>) -> Option<&RoleDoc> {
    match existing {
        Some(Ok(Object::Role(r))) => Some(r),
        _ => None,
    }
}

#[tonic::async_trait]
impl pb::admin_server::Admin for Admin {
    async fn create_role_assignment(
        &self,
        request: Request<pb::CreateRoleAssignmentRequest>,
    ) -> Result<Response<pb::CreateRoleAssignmentResponse>, Status> {
        let (metadata, _, body) = request.into_parts();
        let given = body
            .assignment
            .ok_or_else(|| Status::invalid_argument("assignment is required"))?;
        let mut doc = assignment_doc(&given);
        let id = doc
            .id
            .get_or_insert_with(|| new_id(&given.principal))
            .clone();
        let planned = doc.clone();
        let token = self
            .write("createRoleAssignment", Kind::Assignments, "assignment id", &id, &metadata, move |policy, actor, existing| {
                if existing.is_some() {
                    return Err(Status::already_exists(format!(
                        "role assignment `{}` already exists",
                        escape(planned.id.as_deref().unwrap_or_default())
                    )));
                }
                for (field, value) in [
                    ("principal", &planned.principal),
                    ("role", &planned.role),
                    ("scope", &planned.scope),
                ] {
                    if value.is_empty() {
                        return Err(Status::invalid_argument(format!("assignment.{field} is required")));
                    }
                }
                syntax::principal_type(&planned.principal)
                    .map_err(|e| Status::invalid_argument(RequestError::Principal(e).to_string()))?;
                match policy
                    .snapshot
                    .check_assign(actor, &planned.role, &planned.scope, syntax::now())
                {
                    Ok(check) if !check.missing_actions.is_empty() => {
                        Err(Status::permission_denied(format!(
                            "`{}` may not assign role `{}` at `{}` (no escalation); missing actions: {}",
                            escape(actor),
                            escape(&planned.role),
                            escape(&planned.scope),
                            check.missing_actions.iter().map(|a| escape(a)).collect::<Vec<_>>().join(", ")
                        )))
                    }
                    // Not assignable at the scope: the validation below names the rule.
                    Ok(_) => Ok(()),
                    Err(e @ RequestError::Role { .. }) => Err(Status::failed_precondition(
                        format!("{e}, so nothing was written"),
                    )),
                    Err(e) => Err(Status::invalid_argument(e.to_string())),
                }?;
                Ok(Some(Object::Assignment(planned.clone())))
            })
            .await?;
        Ok(Response::new(pb::CreateRoleAssignmentResponse {
            assignment: Some(assignment_pb(&doc)),
            token,
        }))
    }

    async fn delete_role_assignment(
        &self,
        request: Request<pb::DeleteRoleAssignmentRequest>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        let (metadata, _, body) = request.into_parts();
        let id = body.id;
        let missing = format!("role assignment `{}` is not in the store", escape(&id));
        let token = self
            .write(
                "deleteRoleAssignment",
                Kind::Assignments,
                "id",
                &id,
                &metadata,
                move |policy, actor, existing| {
                    let Some(Ok(Object::Assignment(existing))) = existing else {
                        return Err(Status::not_found(missing.clone()));
                    };
                    require(
                        policy,
                        actor,
                        &policy.snapshot.identity.unassign_action,
                        std::slice::from_ref(&existing.scope),
                    )?;
                    Ok(None)
                },
            )
            .await?;
        Ok(Response::new(pb::WriteResponse { token }))
    }

    async fn list_role_assignments(
        &self,
        request: Request<pb::ListRoleAssignmentsRequest>,
    ) -> Result<Response<pb::ListRoleAssignmentsResponse>, Status> {
        let (metadata, _, body) = request.into_parts();
        let store = self.store()?;
        let deadline = call_deadline(&metadata);
        store_mod::wait_for(&*self.app, &body.at_least, deadline)
            .await
            .map_err(token_status)?;
        let policy = self.policy()?;
        let actor = Self::actor(&self.app, &policy, &metadata)?;
        let scope = if body.scope.is_empty() {
            "/"
        } else {
            body.scope.as_str()
        };
        let scope_key = syntax::normalize_scope(scope)
            .map_err(|e| Status::invalid_argument(RequestError::Scope(e).to_string()))?
            .to_ascii_lowercase();
        require(&policy, &actor, ASSIGNMENT_READ, &[scope.to_owned()])?;
        let role = (!body.role.is_empty())
            .then(|| policy.snapshot.role(&body.role))
            .flatten()
            .map(|r| (r.name.to_string(), r.id.as_deref().map(str::to_owned)));
        if !body.role.is_empty() && role.is_none() {
            return Err(Status::not_found(format!(
                "role `{}` is not defined",
                escape(&body.role)
            )));
        }
        let size = match body.page_size as usize {
            0 => DEFAULT_PAGE,
            n => n.min(MAX_PAGE),
        };
        let start = if body.page_token.is_empty() {
            key(Kind::Assignments, "")
        } else {
            body.page_token
                .strip_prefix('k')
                .filter(|k| k.starts_with("assignments/"))
                .map(|k| format!("{k}\u{0}"))
                .ok_or_else(|| {
                    Status::invalid_argument("page_token is not one this service issued")
                })?
        };
        let token = store_mod::token_of(&policy);
        let inputs = store.inputs();
        let mut out = Vec::new();
        let mut next = String::new();
        if let Some(objects) = &inputs.objects {
            for (k, object) in objects.range(start..) {
                if !k.starts_with("assignments/") {
                    break;
                }
                let Ok(Object::Assignment(a)) = object else {
                    continue;
                };
                if !body.principal.is_empty() && a.principal != body.principal {
                    continue;
                }
                if let Some((name, id)) = &role
                    && !(a.role.eq_ignore_ascii_case(name)
                        || id.as_deref() == Some(a.role.as_str()))
                {
                    continue;
                }
                let at = syntax::normalize_scope(&a.scope)
                    .map(str::to_ascii_lowercase)
                    .unwrap_or_default();
                let below = scope_key == "/"
                    || at == scope_key
                    || at
                        .strip_prefix(&scope_key)
                        .is_some_and(|r| r.starts_with('/'));
                if !below {
                    continue;
                }
                if out.len() == size {
                    next = format!(
                        "k{}",
                        out.last()
                            .map_or(k.as_str(), |(k, _): &(String, _)| k.as_str())
                    );
                    break;
                }
                out.push((k.clone(), assignment_pb(a)));
            }
        }
        Ok(Response::new(pb::ListRoleAssignmentsResponse {
            assignments: out.into_iter().map(|(_, a)| a).collect(),
            next_page_token: next,
            token,
        }))
    }

    async fn put_role_definition(
        &self,
        request: Request<pb::PutRoleDefinitionRequest>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        let (metadata, _, body) = request.into_parts();
        let role = role_doc(
            &body
                .role
                .ok_or_else(|| Status::invalid_argument("role is required"))?,
        );
        if role.name.is_empty() {
            return Err(Status::invalid_argument("role.name is required"));
        }
        let id = role.id.clone().unwrap_or_else(|| role.name.clone());
        let token = self
            .write(
                "putRoleDefinition",
                Kind::Roles,
                "role id (or name, without an id)",
                &id,
                &metadata,
                move |policy, actor, existing| {
                    let mut scopes = assignable(&role);
                    if let Some(old) = stored_role(existing) {
                        scopes.extend(assignable(old));
                    }
                    require(policy, actor, ROLE_WRITE, &scopes)?;
                    Ok(Some(Object::Role(role.clone())))
                },
            )
            .await?;
        Ok(Response::new(pb::WriteResponse { token }))
    }

    async fn delete_role_definition(
        &self,
        request: Request<pb::DeleteRoleDefinitionRequest>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        let (metadata, _, body) = request.into_parts();
        let id = body.id;
        let missing = format!("role definition `{}` is not in the store", escape(&id));
        let token = self
            .write(
                "deleteRoleDefinition",
                Kind::Roles,
                "id",
                &id,
                &metadata,
                move |policy, actor, existing| {
                    let Some(old) = stored_role(existing) else {
                        return Err(Status::not_found(missing.clone()));
                    };
                    require(policy, actor, ROLE_DELETE, &assignable(old))?;
                    Ok(None)
                },
            )
            .await?;
        Ok(Response::new(pb::WriteResponse { token }))
    }

    async fn put_group(
        &self,
        request: Request<pb::PutGroupRequest>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        let (metadata, _, body) = request.into_parts();
        let group = body
            .group
            .ok_or_else(|| Status::invalid_argument("group is required"))?;
        let doc = GroupDoc {
            id: group.id,
            members: group.members,
        };
        let id = doc.id.clone();
        let token = self
            .write(
                "putGroup",
                Kind::Groups,
                "group.id",
                &id,
                &metadata,
                move |policy, actor, _| {
                    require(policy, actor, GROUP_WRITE, &["/".to_owned()])?;
                    Ok(Some(Object::Group(doc.clone())))
                },
            )
            .await?;
        Ok(Response::new(pb::WriteResponse { token }))
    }

    async fn delete_group(
        &self,
        request: Request<pb::DeleteGroupRequest>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        let (metadata, _, body) = request.into_parts();
        let id = body.id;
        let missing = format!("group `{}` is not in the store", escape(&id));
        let token = self
            .write(
                "deleteGroup",
                Kind::Groups,
                "id",
                &id,
                &metadata,
                move |policy, actor, existing| {
                    if existing.is_none() {
                        return Err(Status::not_found(missing.clone()));
                    }
                    require(policy, actor, GROUP_DELETE, &["/".to_owned()])?;
                    Ok(None)
                },
            )
            .await?;
        Ok(Response::new(pb::WriteResponse { token }))
    }
}

/// The caller's deadline (`grpc-timeout`), if it sent one.
pub fn call_deadline(metadata: &tonic::metadata::MetadataMap) -> Option<Duration> {
    let value = metadata.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// A token that could not be honoured, as a gRPC status.
pub fn token_status(e: store_mod::TokenError) -> Status {
    match e {
        store_mod::TokenError::Invalid(m) => Status::invalid_argument(m),
        store_mod::TokenError::Behind(m) => Status::unavailable(m),
    }
}

fn status_name(code: tonic::Code) -> &'static str {
    match code {
        tonic::Code::PermissionDenied => "permissionDenied",
        tonic::Code::FailedPrecondition => "failedPrecondition",
        tonic::Code::Unauthenticated => "unauthenticated",
        tonic::Code::InvalidArgument => "invalidArgument",
        tonic::Code::NotFound => "notFound",
        tonic::Code::AlreadyExists => "alreadyExists",
        tonic::Code::Unavailable => "unavailable",
        tonic::Code::Aborted => "aborted",
        _ => "error",
    }
}

fn rfc3339_now() -> String {
    syntax::format_time(syntax::now())
}
