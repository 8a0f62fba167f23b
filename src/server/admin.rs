//! The Admin API `iotauthz.v1.Admin` (SPEC §9): role assignments, role definitions and
//! groups written to the store.
//!
//! Every write goes through [`Admin::write`]: identify the actor (the policy's identity
//! sources over the call's metadata), authorize the write by the policy itself, validate
//! the policy it would make (the current files and store objects plus the change, compiled
//! as one policy), then commit it in an etcd transaction that holds only if nothing under
//! the prefix changed since the revision validated against. A lost race is validated and
//! tried again (up to [`ATTEMPTS`] times), never applied half. Every attempt, accepted or
//! refused, is one audit line in the decision log.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tonic::{Request, Response, Status};

use super::App;
use crate::live::LoadedPolicy;
use crate::policy::document::{AssignmentDoc, GroupDoc, RoleDoc};
use crate::policy::identity::IdentityInput;
use crate::policy::syntax::{self, escape};
use crate::policy::{CheckRequest, RequestError};
use crate::proto::iotauthz::v1 as pb;
use crate::store::objects::{self, Kind, Object};
use crate::store::{self as store_mod, Store, etcd};

/// How long a write waits for etcd's answer (under the server's request deadline).
const ETCD_TIMEOUT: Duration = Duration::from_secs(3);

/// The longest a write waits for this replica to judge a change it has to see first.
const JUDGED_PATIENCE: Duration = Duration::from_secs(2);

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

/// What a write finds under its key: the stored object, one that could not be decoded, or
/// nothing.
type Existing<'a> = Option<&'a Result<Object, String>>;

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
        let prefix = store.options.prefix.as_bytes();
        let sentinel = [prefix, objects::META.as_bytes(), b"write"].concat();
        let mut fresh = false;
        // The writes through this replica take turns; only writes through other replicas
        // (or direct etcd writes to the same key) can move the state under this one.
        let _turn = store.admin_turn.lock().await;
        for _ in 0..ATTEMPTS {
            let policy = self.policy()?;
            let (s, p, a, k, plan) = (
                store.clone(),
                policy.clone(),
                actor.clone(),
                object.to_owned(),
                plan.clone(),
            );
            let (revision, planned) =
                tokio::task::spawn_blocking(move || validate(&s, &p, &a, &k, &*plan))
                    .await
                    .map_err(|e| Status::internal(format!("write not validated: {e}")))?;
            let value = match planned {
                Ok(value) => value,
                // A refusal by a state that lacks an admin write already made (a role put,
                // then an assignment of it at once, perhaps through another replica) is not
                // final: once this replica has judged that write, the change is planned
                // again. A state that is allowed needs no such read: it is committed only
                // if nothing changed since (the transaction's comparison).
                Err(refusal) if !fresh => {
                    fresh = true;
                    let last = last_admin_write(&store, &sentinel).await?;
                    if last <= revision.min(policy.store_revision()) {
                        return Err(refusal);
                    }
                    judged(&store, last).await;
                    continue;
                }
                Err(refusal) => return Err(refusal),
            };
            let key = [prefix, object.as_bytes()].concat();
            let op = match &value {
                Some(object) => etcd::put(key.clone(), object.to_json()),
                None => etcd::delete(key.clone()),
            };
            let marker = serde_json::json!({"actor": actor, "key": object}).to_string();
            // Two single keys, not the whole prefix: etcd evaluates a range comparison on
            // every key in the range, a second of its CPU per write at a million objects.
            // Every admin write moves the marker, so admin writes exclude each other; the
            // key itself catches a direct write to the same object.
            let compare = vec![
                etcd::unchanged_since(&sentinel, &[], revision),
                etcd::unchanged_since(&key, &[], revision),
            ];
            let txn = store.etcd.txn(
                compare,
                vec![op, etcd::put(sentinel.clone(), marker.into_bytes())],
            );
            // Without a quorum etcd may hold a write until its own timeout: answer first.
            let (succeeded, after) = match tokio::time::timeout(ETCD_TIMEOUT, txn).await {
                Ok(Ok(done)) => done,
                Ok(Err(s)) => {
                    return Err(Status::unavailable(format!(
                        "the store could not be written: {}",
                        store_mod::follow::status_text(&s)
                    )));
                }
                Err(_) => {
                    return Err(Status::unavailable(format!(
                        "the store could not be written: etcd did not answer within {} s (no quorum?); the write may or may not have been applied, read it back before trying again",
                        ETCD_TIMEOUT.as_secs()
                    )));
                }
            };
            store.contact();
            if succeeded {
                // The next write through this replica is validated on a state holding
                // this one (bounded: past the patience it validates on an older state,
                // and its transaction's comparison makes it wait and try again).
                judged(&store, after).await;
                return Ok(store_mod::token(after));
            }
            // Another write got in first: wait until this replica has judged it, then plan
            // and validate again against the new state.
            judged(&store, after).await;
        }
        Err(Status::aborted(
            "the store kept changing while this write was validated; try again",
        ))
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
    let _ = tokio::time::timeout(JUDGED_PATIENCE, judged.wait_for(|r| *r >= revision)).await;
}

/// Plans the change on the current objects, applies it to them, compiles the policy it
/// makes, and puts them back. Returns the store revision validated against, and the value
/// to write under `key` (`None`: delete it) or the refusal.
fn validate<P>(
    store: &Store,
    policy: &LoadedPolicy,
    actor: &str,
    key: &str,
    plan: &P,
) -> (i64, Result<Option<Object>, Status>)
where
    P: Fn(&LoadedPolicy, &str, Existing<'_>) -> Result<Option<Object>, Status>,
{
    let mut inputs = store.inputs();
    let revision = inputs.revision;
    let files = inputs.files.clone().unwrap_or_default();
    let Some(objects) = inputs.objects.as_mut() else {
        return (
            revision,
            Err(Status::unavailable("the store has not been read yet")),
        );
    };
    let value = match plan(policy, actor, objects.get(key)) {
        Ok(value) => value,
        Err(refusal) => return (revision, Err(refusal)),
    };
    // An assignment write is validated over the incremental path's base when it can be;
    // a refusal (or anything else) is judged by a full compile, which also words it.
    let assignment = match &value {
        Some(Object::Assignment(a)) => Some(Some(a)),
        None => Some(None),
        Some(_) => None,
    };
    if let Some(assignment) = assignment
        && Store::valid_incrementally(&inputs, key, assignment) == Some(true)
    {
        return (revision, Ok(value));
    }
    let Some(objects) = inputs.objects.as_mut() else {
        return (
            revision,
            Err(Status::unavailable("the store has not been read yet")),
        );
    };
    let old = match &value {
        Some(object) => objects.insert(key.to_owned(), Ok(object.clone())),
        None => objects.remove(key),
    };
    let compiled = store.compose(&files, objects);
    match old {
        Some(old) => {
            objects.insert(key.to_owned(), old);
        }
        None => {
            objects.remove(key);
        }
    }
    match compiled {
        Ok(_) => (revision, Ok(value)),
        Err(e) => (
            revision,
            Err(Status::failed_precondition(format!(
                "the write would make the policy invalid, so nothing was written: {e}"
            ))),
        ),
    }
}

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
                    .map_err(|e| Status::invalid_argument(format!("invalid principal: {e}")))?;
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
                    Err(RequestError::Role(m)) => Err(Status::failed_precondition(format!(
                        "unknown role: {m}, so nothing was written"
                    ))),
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
            .map_err(|e| Status::invalid_argument(format!("invalid scope: {e}")))?
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
