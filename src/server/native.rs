//! The native `iotauthz.v1.Authorizer` service (SPEC §6). Requests are converted to engine
//! calls here; the engine never sees generated types.

use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use tonic::{Request, Response, Status};

use super::query_pool::Cancel;
use super::{App, RequestContext};
use crate::live::LoadedPolicy;
use crate::policy::queries::HttpRequest;
use crate::policy::syntax::{self, Instant};
use crate::policy::{CheckRequest as EngineCheck, Reason as EngineReason, RequestError};
use crate::proto::iotauthz::v1 as pb;
use crate::proto::{instant_to_timestamp, request_instant};

/// The most checks one BatchCheck may carry (refused before decoding by the codec, and
/// checked again here).
pub use crate::proto::codec::MAX_BATCH;

#[derive(Debug, Clone)]
pub struct Authorizer {
    app: Arc<App>,
    /// The largest ListPermissions answer, encoded (see [`Authorizer::new`]).
    max_listed_bytes: usize,
}

impl Authorizer {
    /// The native API, sending messages of at most `max_message_bytes` (the server's
    /// `--max-message-bytes`). A ListPermissions answer is refused past that, with room
    /// for the revision: a role with `*` over a large catalog, held through many
    /// assignments, makes actions × assignments pairs, and the answer is never built
    /// beyond what could be sent.
    pub fn new(app: Arc<App>, max_message_bytes: usize) -> Self {
        Self {
            app,
            max_listed_bytes: max_message_bytes.saturating_sub(4096),
        }
    }

    fn policy(&self) -> Result<Arc<LoadedPolicy>, Status> {
        self.app
            .policy
            .current()
            .ok_or_else(|| Status::unavailable("no policy loaded"))
    }

    /// The policy, once it answers at least at the consistency token `at_least` (SPEC §10;
    /// an empty token asks for nothing and never waits).
    async fn policy_at(
        &self,
        at_least: &str,
        metadata: &tonic::metadata::MetadataMap,
    ) -> Result<Arc<LoadedPolicy>, Status> {
        if !at_least.is_empty() {
            crate::store::wait_for(&*self.app, at_least, super::admin::call_deadline(metadata))
                .await
                .map_err(super::admin::token_status)?;
        }
        self.policy()
    }

    /// Counts an invalid request and turns it into `INVALID_ARGUMENT`.
    fn invalid(&self, api: &'static str, message: impl std::fmt::Display) -> Status {
        self.app
            .metrics
            .rpc_errors
            .get_or_create(&super::metrics::ApiLabels { api })
            .inc();
        Status::invalid_argument(message.to_string())
    }

    /// Runs an expensive query in the query pool. `query` gets the pool's cancel token and
    /// the largest answer it may give, in bytes, and returns `None` when its answer would
    /// be larger: `RESOURCE_EXHAUSTED`, with `hint` after the advice to ask at a narrower
    /// scope. An invalid request is `INVALID_ARGUMENT`, counted under `api`. With
    /// `at_once` (the query will not walk the policy: its action is one no role could
    /// grant), it runs here, without waiting for a turn.
    async fn pooled<T: Send + 'static>(
        &self,
        api: &'static str,
        hint: &str,
        at_once: bool,
        query: impl FnOnce(&Cancel, usize) -> Result<Option<T>, RequestError> + Send + 'static,
    ) -> Result<T, Status> {
        let max = self.max_listed_bytes;
        let answer = if at_once {
            query(&Cancel::default(), max)
        } else {
            self.app
                .queries
                .run(move |cancel| query(cancel, max))
                .await?
        };
        match answer {
            Ok(Some(answer)) => Ok(answer),
            Ok(None) => Err(Status::resource_exhausted(format!(
                "the answer would exceed {max} bytes; ask at a narrower scope{hint}"
            ))),
            Err(e) => Err(self.invalid(api, e)),
        }
    }
}

/// A request's `at`, or `now()` without one; a timestamp protobuf does not allow is
/// invalid.
fn at_or(
    at: Option<&prost_types::Timestamp>,
    now: impl FnOnce() -> Instant,
) -> Result<Instant, RequestError> {
    at.map_or_else(|| Ok(now()), request_instant)
        .map_err(RequestError::At)
}

/// [`at_or`] the current time.
fn at_or_now(at: Option<&prost_types::Timestamp>) -> Result<Instant, RequestError> {
    at_or(at, syntax::now)
}

fn reason(r: &EngineReason<'_>) -> pb::Reason {
    let mut out = pb::Reason {
        kind: r.kind().to_owned(),
        ..Default::default()
    };
    match r {
        EngineReason::RoleAssignment {
            role,
            assignment_id,
            scope,
            via,
        } => {
            out.role = (*role).to_owned();
            out.assignment_id = assignment_id.unwrap_or_default().to_owned();
            out.assignment_scope = (*scope).to_owned();
            out.via = (*via).to_owned();
        }
        EngineReason::DenyAssignment { deny_assignment } => {
            out.deny_assignment = (*deny_assignment).to_owned();
        }
        EngineReason::Malformed { message } => out.message = message.clone(),
        _ => {}
    }
    out
}

/// One check: evaluated (through the cache), counted and logged.
fn check_one(
    app: &App,
    policy: &LoadedPolicy,
    req: &pb::CheckRequest,
    ctx: &RequestContext,
) -> Result<pb::CheckResponse, RequestError> {
    let engine = engine_check(req, syntax::now)?;
    let verdict = app.decide(policy, &engine)?;
    let decision = policy.snapshot.explain(verdict);
    app.conclude_check(ctx, &engine, &decision, &policy.snapshot.revision);
    let mut out = check_response(&decision, &policy.snapshot.revision);
    if req.explain {
        // The slower explaining path, only when asked; the decision above is the one
        // counted and logged.
        let e = policy.snapshot.explain_check(&engine)?;
        out.groups_of_principal = e.groups_of_principal;
        out.near_misses = e
            .near_misses
            .iter()
            .map(|m| near_miss(m, engine.action, engine.data_action))
            .collect();
    }
    Ok(out)
}

/// One near miss of an explained deny.
fn near_miss(m: &crate::policy::NearMiss<'_>, action: &str, data: bool) -> pb::NearMiss {
    use crate::policy::MissReason;
    let mut out = pb::NearMiss {
        assignment: Some(reason(&m.assignment)),
        kind: m.reason.kind().to_owned(),
        message: m.reason.message(action, data),
        ..Default::default()
    };
    match &m.reason {
        MissReason::NotActions { pattern } => out.pattern = (*pattern).to_owned(),
        MissReason::OutsideWindow {
            not_before,
            not_after,
        } => {
            out.not_before = not_before.clone().unwrap_or_default();
            out.not_after = not_after.clone().unwrap_or_default();
        }
        MissReason::OverriddenByDeny { deny_assignment } => {
            out.deny_assignment = (*deny_assignment).to_owned();
        }
        MissReason::ActionNotInRole | MissReason::WrongPlane { .. } => {}
    }
    out
}

/// The engine's view of a CheckRequest; `now` gives the time when the request has no `at`.
fn engine_check(
    req: &pb::CheckRequest,
    now: impl FnOnce() -> Instant,
) -> Result<EngineCheck<'_>, RequestError> {
    let at = at_or(req.at.as_ref(), now)?;
    Ok(EngineCheck {
        principal: &req.principal,
        groups: &req.groups,
        action: &req.action,
        data_action: req.data_action,
        scope: &req.scope,
        at,
    })
}

fn check_response(decision: &crate::policy::Decision<'_>, revision: &str) -> pb::CheckResponse {
    pb::CheckResponse {
        allowed: decision.allowed,
        reason: Some(reason(&decision.reason)),
        revision: revision.to_owned(),
        ..Default::default()
    }
}

/// A gRPC metadata value as text.
fn metadata<'r, T>(request: &'r Request<T>, key: &str) -> Option<&'r str> {
    request.metadata().get(key).and_then(|v| v.to_str().ok())
}

#[tonic::async_trait]
impl pb::authorizer_server::Authorizer for Authorizer {
    async fn check(
        &self,
        request: Request<pb::CheckRequest>,
    ) -> Result<Response<pb::CheckResponse>, Status> {
        let policy = self
            .policy_at(&request.get_ref().at_least, request.metadata())
            .await?;
        let ctx = RequestContext::begin("check", |k| metadata(&request, k));
        // Without a principal, the caller asks about itself: its bearer token says who it is.
        let identified = if request.get_ref().principal.is_empty() {
            self.app
                .identify_metadata(&policy.snapshot, request.metadata())
                .await?
        } else {
            None
        };
        let mut out = match identified {
            Some(identity) => {
                let mut req = request.get_ref().clone();
                req.principal = identity.principal;
                req.groups.extend(identity.groups);
                check_one(&self.app, &policy, &req, &ctx)
            }
            None => check_one(&self.app, &policy, request.get_ref(), &ctx),
        }
        .map_err(|e| self.invalid("check", e))?;
        out.token = crate::store::token_of(&policy);
        Ok(Response::new(out))
    }

    async fn batch_check(
        &self,
        request: Request<pb::BatchCheckRequest>,
    ) -> Result<Response<pb::BatchCheckResponse>, Status> {
        let checks = &request.get_ref().checks;
        if checks.len() > MAX_BATCH {
            return Err(self.invalid(
                "batch_check",
                format!(
                    "batch has {} checks; at most {MAX_BATCH} are allowed",
                    checks.len()
                ),
            ));
        }
        let policy = self
            .policy_at(&request.get_ref().at_least, request.metadata())
            .await?;
        let revision = policy.snapshot.revision.as_str();
        // One clock reading, one latency observation and one counter update per decision
        // kind for the whole batch: per-item bookkeeping would cost more than the checks.
        let ctx = RequestContext::begin("batch_check", |k| metadata(&request, k));
        let now = syntax::now();
        // Every check is decided (and so validated) before any is counted or logged: one
        // invalid check rejects the whole batch, which then leaves no decision behind.
        let verdicts = checks
            .iter()
            .enumerate()
            .map(|(i, c)| {
                engine_check(c, || now)
                    .and_then(|engine| Ok((self.app.decide(&policy, &engine)?, engine)))
                    .map_err(|e| self.invalid("batch_check", format!("checks[{i}]: {e}")))
            })
            .collect::<Result<Vec<_>, Status>>()?;
        let mut results = Vec::with_capacity(checks.len());
        let mut tally = super::metrics::DecisionTally::default();
        for (verdict, engine) in verdicts {
            let decision = policy.snapshot.explain(verdict);
            tally.add(decision.allowed, decision.reason.kind());
            self.app.log_check(&ctx, &engine, &decision, revision);
            results.push(check_response(&decision, revision));
        }
        let elapsed = ctx.started.elapsed();
        tally.flush(&self.app.metrics, ctx.api);
        self.app.metrics.observe_latency(ctx.api, elapsed);
        crate::telemetry::record_batch(&ctx.span, checks.len(), revision);
        Ok(Response::new(pb::BatchCheckResponse {
            results,
            revision: revision.to_owned(),
            token: crate::store::token_of(&policy),
        }))
    }

    async fn check_http(
        &self,
        request: Request<pb::CheckHttpRequest>,
    ) -> Result<Response<pb::CheckHttpResponse>, Status> {
        let policy = self
            .policy_at(&request.get_ref().at_least, request.metadata())
            .await?;
        let ctx = RequestContext::begin("check_http", |k| metadata(&request, k));
        let req = request.get_ref();
        let at = at_or_now(req.at.as_ref()).map_err(|e| self.invalid("check_http", e))?;
        let mut headers: Vec<(String, &str)> = req
            .headers
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.as_str()))
            .collect();
        // A bearer token: the described request's `authorization` header, else the call's
        // own `authorization` metadata (the caller asks about itself).
        if req.principal.is_empty() && !headers.iter().any(|(k, _)| k == "authorization") {
            for value in request.metadata().get_all("authorization") {
                headers.push((
                    "authorization".to_owned(),
                    value.to_str().unwrap_or("\u{fffd}"),
                ));
            }
        }
        let outcome = self
            .app
            .check_with_keys(|| {
                policy.snapshot.check_http_with(
                    &HttpRequest {
                        method: &req.method,
                        path: &req.path,
                        headers: &headers,
                        principal: (!req.principal.is_empty()).then_some(req.principal.as_str()),
                        groups: &req.groups,
                        metadata: None,
                        peer_principal: None,
                        verifier: Some(self.app.verifier()),
                        at,
                    },
                    |_, r| self.app.decide(&policy, r),
                )
            })
            .await
            .map_err(|e| self.invalid("check_http", e))?;
        // Unlike the proxy-facing paths (`App::conclude_http`), shadow mode never applies:
        // CheckHttp reports the real decision.
        self.app
            .record_http(&ctx, &outcome, None, &policy.snapshot.revision, false);
        Ok(Response::new(pb::CheckHttpResponse {
            allowed: outcome.decision.allowed,
            status: u32::from(outcome.status()),
            action: outcome.action.clone().unwrap_or_default(),
            scope: outcome.scope.clone().unwrap_or_default(),
            reason: Some(reason(&outcome.decision.reason)),
            revision: policy.snapshot.revision.clone(),
            principal: outcome.principal.clone().unwrap_or_default(),
            token: crate::store::token_of(&policy),
        }))
    }

    async fn list_permissions(
        &self,
        request: Request<pb::ListPermissionsRequest>,
    ) -> Result<Response<pb::ListPermissionsResponse>, Status> {
        let policy = self
            .policy_at(&request.get_ref().at_least, request.metadata())
            .await?;
        let token = crate::store::token_of(&policy);
        let req = request.into_inner();
        let at = at_or_now(req.at.as_ref()).map_err(|e| self.invalid("list_permissions", e))?;
        // In the query pool: the walk over the action universe can take a while on a large
        // catalog, and stops when the caller leaves.
        let hint = ", or run `iot-authz permissions` on the policy";
        let permissions = self
            .pooled("list_permissions", hint, false, move |cancel, max_bytes| {
                use prost::Message;
                let mut bytes = 0usize;
                let mut permissions = Vec::new();
                policy.snapshot.each_permission_until(
                    &req.principal,
                    &req.groups,
                    &req.scope,
                    at,
                    |p| {
                        let permission = pb::Permission {
                            action: p.action.to_owned(),
                            data_action: p.data_action,
                            grants: p.assignments.iter().map(reason).collect(),
                        };
                        // The field's tag and length prefix take at most 6 bytes more.
                        bytes += permission.encoded_len() + 6;
                        if bytes > max_bytes {
                            return ControlFlow::Break(());
                        }
                        permissions.push(permission);
                        ControlFlow::Continue(())
                    },
                    &|| cancel.is_cancelled(),
                )?;
                Ok((bytes <= max_bytes).then(|| pb::ListPermissionsResponse {
                    permissions,
                    revision: policy.snapshot.revision.clone(),
                    token,
                }))
            })
            .await?;
        Ok(Response::new(permissions))
    }

    async fn who_can(
        &self,
        request: Request<pb::WhoCanRequest>,
    ) -> Result<Response<pb::WhoCanResponse>, Status> {
        let policy = self
            .policy_at(&request.get_ref().at_least, request.metadata())
            .await?;
        let req = request.into_inner();
        let at = at_or_now(req.at.as_ref()).map_err(|e| self.invalid("who_can", e))?;
        // In the query pool: one check per principal the policy knows; an action no role
        // could grant is answered at once.
        let at_once = policy
            .snapshot
            .grants_nothing_to(&req.action, req.data_action);
        let answer = self
            .pooled("who_can", "", at_once, move |cancel, max_bytes| {
                let who = policy.snapshot.who_can_until(
                    &req.action,
                    req.data_action,
                    &req.scope,
                    at,
                    &|| cancel.is_cancelled(),
                )?;
                // The answer's size is known from the names before any is copied.
                let bytes: usize = who
                    .principals
                    .iter()
                    .chain(&who.groups)
                    .map(|s| s.len() + 6)
                    .sum();
                Ok((bytes <= max_bytes).then(|| pb::WhoCanResponse {
                    principals: who.principals.iter().map(|s| (*s).to_owned()).collect(),
                    groups: who.groups.iter().map(|s| (*s).to_owned()).collect(),
                    revision: policy.snapshot.revision.clone(),
                    token: crate::store::token_of(&policy),
                }))
            })
            .await?;
        Ok(Response::new(answer))
    }

    async fn check_assign(
        &self,
        request: Request<pb::CheckAssignRequest>,
    ) -> Result<Response<pb::CheckAssignResponse>, Status> {
        let policy = self.policy()?;
        let req = request.into_inner();
        let at = at_or_now(req.at.as_ref()).map_err(|e| self.invalid("check_assign", e))?;
        // In the query pool: one evaluation per action of the catalog the role grants.
        let answer = self
            .pooled("check_assign", "", false, move |cancel, max_bytes| {
                let answer = policy.snapshot.check_assign_until(
                    &req.actor,
                    &req.role,
                    &req.scope,
                    at,
                    &|| cancel.is_cancelled(),
                )?;
                let bytes: usize = answer.missing_actions.iter().map(|s| s.len() + 6).sum();
                Ok((bytes <= max_bytes).then(|| pb::CheckAssignResponse {
                    allowed: answer.allowed,
                    missing_actions: answer.missing_actions,
                    message: answer.message.unwrap_or_default(),
                    revision: policy.snapshot.revision.clone(),
                }))
            })
            .await?;
        Ok(Response::new(answer))
    }

    async fn plan(
        &self,
        request: Request<pb::PlanRequest>,
    ) -> Result<Response<pb::PlanResponse>, Status> {
        let policy = self
            .policy_at(&request.get_ref().at_least, request.metadata())
            .await?;
        let token = crate::store::token_of(&policy);
        let req = request.into_inner();
        let at = at_or_now(req.at.as_ref()).map_err(|e| self.invalid("plan", e))?;
        // In the query pool: the cost grows with the principal's assignments and the
        // policy's deny assignments. An action no role could grant is answered at once.
        let at_once = policy
            .snapshot
            .grants_nothing_to(&req.action, req.data_action);
        let query = move |_: &Cancel| {
            let under = if req.under.is_empty() {
                "/"
            } else {
                req.under.as_str()
            };
            policy
                .snapshot
                .plan(&crate::policy::plan::PlanRequest {
                    principal: &req.principal,
                    groups: &req.groups,
                    action: &req.action,
                    data_action: req.data_action,
                    under,
                    at,
                })
                .map(|plan| (plan, policy.snapshot.revision.clone()))
        };
        let answer = if at_once {
            query(&Cancel::default())
        } else {
            self.app.queries.run(query).await?
        };
        let (plan, revision) = answer.map_err(|e| self.invalid("plan", e))?;
        Ok(Response::new(pb::PlanResponse {
            include: plan.include,
            exclude: plan.exclude,
            revision,
            token,
        }))
    }

    async fn get_policy_status(
        &self,
        _request: Request<pb::GetPolicyStatusRequest>,
    ) -> Result<Response<pb::PolicyStatus>, Status> {
        let current = self.app.policy.current();
        let error = self.app.policy.last_error();
        let mut status = pb::PolicyStatus {
            last_error: error
                .as_ref()
                .map(|e| e.message.clone())
                .unwrap_or_default(),
            last_error_at: error
                .as_ref()
                .map(|e| instant_to_timestamp(system_time_nanos(e.at))),
            ..Default::default()
        };
        if let Some(store) = self.app.store.get() {
            status.store_seconds_since_contact = store.seconds_since_contact().unwrap_or(-1.0);
            status.store_reachable = store.reachable();
        }
        if let Some(p) = current {
            status.store_revision = p.store_revision();
            status.token = crate::store::token_of(&p);
            let c = p.snapshot.counts;
            status.revision = p.snapshot.revision.clone();
            status.loaded_at = Some(instant_to_timestamp(system_time_nanos(p.loaded_at)));
            status.sources = p.snapshot.sources.clone();
            status.counts = Some(pb::PolicyCounts {
                documents: c.documents as u64,
                roles: c.roles as u64,
                assignments: c.assignments as u64,
                deny_assignments: c.deny_assignments as u64,
                groups: c.groups as u64,
                principals: c.principals as u64,
                scopes: c.scopes as u64,
                catalog_actions: c.catalog_actions as u64,
                routes: c.routes as u64,
            });
        }
        Ok(Response::new(status))
    }
}

/// Unix nanoseconds of a system time (0 before the epoch).
pub fn system_time_nanos(t: std::time::SystemTime) -> Instant {
    t.duration_since(UNIX_EPOCH)
        .ok()
        .and_then(|d| Instant::try_from(d.as_nanos()).ok())
        .unwrap_or(0)
}
