//! Questions beyond a single check: HTTP requests (route + identity + evaluation),
//! ListPermissions, WhoCan and the delegation check CheckAssign (SPEC §3, §6).

use std::ops::ControlFlow;

use serde::Serialize;
use serde_json::Value;

use super::bearer::{Rejection, TokenVerifier};
use super::identity::{IdentifyError, IdentityInput};
use super::route::{HeaderLookup, Route, RouteOutcome};
use super::snapshot::{
    CheckRequest, Decision, LowerBuf, Reason, RequestError, Snapshot, Verdict, lower_into,
};
use super::syntax::{self, Instant};

/// An HTTP request to authorize (ext_authz, CheckHttp, `check --method --path`).
#[derive(Clone, Copy)]
pub struct HttpRequest<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub headers: &'a dyn HeaderLookup,
    /// A principal given by the caller; when absent, the identity sources decide.
    pub principal: Option<&'a str>,
    /// Extra groups given by the caller.
    pub groups: &'a [String],
    pub metadata: Option<&'a Value>,
    pub peer_principal: Option<&'a str>,
    /// Checks bearer tokens; `None` rejects every token (`no keys`).
    pub verifier: Option<&'a dyn TokenVerifier>,
    pub at: Instant,
}

/// The answer to an HTTP request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpDecision<'s> {
    pub decision: Decision<'s>,
    pub action: Option<String>,
    pub scope: Option<String>,
    pub data_action: bool,
    pub principal: Option<String>,
    pub route: Option<&'s Route>,
    /// Set when a bearer token was present but invalid: the issuer's source and why.
    pub token_rejection: Option<(String, Rejection)>,
}

impl HttpDecision<'_> {
    /// The HTTP status of this decision: [`Reason::http_status`].
    pub fn status(&self) -> u16 {
        self.decision.reason.http_status()
    }
}

impl Reason<'_> {
    /// The HTTP status a decision with this reason answers (SPEC §4): 200 allowed (a
    /// role assignment, a public route), 400 malformed, 401 no identity, 403 denied (a
    /// deny assignment, no grant, no route). The one mapping every HTTP-facing adapter
    /// uses; an adapter that must answer otherwise (nginx's `auth_request` turns a 400
    /// into a 500) matches on the reason.
    pub fn http_status(&self) -> u16 {
        match self {
            Self::RoleAssignment { .. } | Self::Public => 200,
            Self::Malformed { .. } => 400,
            Self::NoIdentity => 401,
            Self::DenyAssignment { .. } | Self::NoGrant | Self::NoRoute => 403,
        }
    }
}

/// One effective permission and the grants behind it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Permission<'s> {
    pub action: &'s str,
    pub data_action: bool,
    pub assignments: Vec<Reason<'s>>,
}

/// Who may perform an action.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct WhoCan<'s> {
    pub principals: Vec<&'s str>,
    pub groups: Vec<&'s str>,
}

/// The answer to CheckAssign.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AssignCheck {
    pub allowed: bool,
    pub missing_actions: Vec<String>,
    /// Set when the role may not be assigned at the scope at all.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// How often (in loop iterations) the `*_until` queries ask whether to stop.
const STOP_EVERY: usize = 64;

impl Snapshot {
    /// Authorizes an HTTP request: canonical path → route → identity → evaluation.
    pub fn check_http(&self, req: &HttpRequest<'_>) -> Result<HttpDecision<'_>, RequestError> {
        self.check_http_with(req, Snapshot::verdict)
    }

    /// [`Snapshot::check_http`] with the evaluation step supplied by the caller (a cache).
    pub fn check_http_with<F>(
        &self,
        req: &HttpRequest<'_>,
        decide: F,
    ) -> Result<HttpDecision<'_>, RequestError>
    where
        F: FnOnce(&Snapshot, &CheckRequest<'_>) -> Result<Verdict, RequestError>,
    {
        let mut out = HttpDecision {
            decision: Decision::deny(Reason::NoRoute),
            action: None,
            scope: None,
            data_action: false,
            principal: req.principal.map(str::to_owned),
            route: None,
            token_rejection: None,
        };
        // Caller-supplied arguments are invalid or not whatever the path: checked first, so
        // the same bad argument is the same error on every route (or none).
        if let Some(p) = req.principal {
            syntax::principal_type(p).map_err(RequestError::Principal)?;
        }
        for group in req.groups {
            syntax::group_id(group).map_err(RequestError::Group)?;
        }
        let (route, action, scope) = match self.routes.resolve(req.method, req.path, req.headers) {
            RouteOutcome::Malformed(problem) => {
                out.decision = Decision::deny(Reason::Malformed {
                    message: problem.to_string(),
                });
                return Ok(out);
            }
            RouteOutcome::NoRoute => return Ok(out),
            RouteOutcome::Matched {
                route,
                action,
                scope,
            } => (route, action, scope),
        };
        out.route = Some(route);
        out.data_action = route.data_action;
        out.action = action;
        out.scope = scope;
        if route.public {
            out.decision = Decision {
                allowed: true,
                reason: Reason::Public,
            };
            return Ok(out);
        }
        let identity = match req.principal {
            Some(p) => Some((p.to_owned(), Vec::new())),
            None => match self.identity.identify(&IdentityInput {
                headers: Some(req.headers),
                metadata: req.metadata,
                peer_principal: req.peer_principal,
                verifier: req.verifier,
                at: req.at,
            }) {
                Ok(found) => found.map(|i| (i.principal, i.groups)),
                // Which value would identify the caller is ambiguous: fail closed.
                Err(IdentifyError::Ambiguous(message)) => {
                    out.decision = Decision::deny(Reason::Malformed { message });
                    return Ok(out);
                }
                // A present but invalid token identifies no one, and no later source may.
                Err(IdentifyError::Rejected { issuer, reason }) => {
                    out.token_rejection = Some((issuer, reason));
                    None
                }
            },
        };
        let Some((principal, mut groups)) = identity else {
            out.decision = Decision::deny(Reason::NoIdentity);
            return Ok(out);
        };
        groups.extend(req.groups.iter().cloned());
        let (Some(action), Some(scope)) = (out.action.as_deref(), out.scope.as_deref()) else {
            return Ok(out);
        };
        let verdict = decide(
            self,
            &CheckRequest {
                principal: &principal,
                groups: &groups,
                action,
                data_action: route.data_action,
                scope,
                at: req.at,
            },
        )?;
        let decision = self.explain(verdict);
        out.decision = decision;
        out.principal = Some(principal);
        Ok(out)
    }

    /// ListPermissions: every action of the universe allowed to the principal at the scope
    /// (denies applied), with every active grant behind it.
    pub fn permissions(
        &self,
        principal: &str,
        groups: &[String],
        scope: &str,
        at: Instant,
    ) -> Result<Vec<Permission<'_>>, RequestError> {
        let mut out = Vec::new();
        self.each_permission(principal, groups, scope, at, |p| {
            out.push(p);
            ControlFlow::Continue(())
        })?;
        Ok(out)
    }

    /// [`Snapshot::permissions`] one permission at a time, in the same order, until `visit`
    /// breaks: the answer can be written out, or cut at a size limit, without holding it
    /// whole (a role with `*` over a large catalog, held through many assignments, makes
    /// actions × assignments pairs).
    pub fn each_permission<'s>(
        &'s self,
        principal: &str,
        groups: &[String],
        scope: &str,
        at: Instant,
        visit: impl FnMut(Permission<'s>) -> ControlFlow<()>,
    ) -> Result<(), RequestError> {
        self.each_permission_until(principal, groups, scope, at, visit, &|| false)
    }

    /// [`Snapshot::each_permission`] that also ends once `stop` says so (asked every few
    /// actions of the catalog, allowed or not: the caller left).
    pub fn each_permission_until<'s>(
        &'s self,
        principal: &str,
        groups: &[String],
        scope: &str,
        at: Instant,
        mut visit: impl FnMut(Permission<'s>) -> ControlFlow<()>,
        stop: &dyn Fn() -> bool,
    ) -> Result<(), RequestError> {
        if let Some(full) = self.full_other() {
            return full.each_permission_until(principal, groups, scope, at, visit, stop);
        }
        let principal_type = syntax::principal_type(principal).map_err(RequestError::Principal)?;
        for g in groups {
            syntax::group_id(g).map_err(RequestError::Group)?;
        }
        let scope = syntax::normalize_scope(scope).map_err(RequestError::Scope)?;
        let subjects = self.subjects(principal, groups);
        let ancestors = self.ancestors_of(scope);
        let mut buf = LowerBuf::new();
        for (n, (name, data)) in self.universe.iter().enumerate() {
            // `visit` may stop the walk (the caller left): asked every few actions, not
            // only for those allowed, since most of the cost is in the others.
            if n % STOP_EVERY == 0 && stop() {
                break;
            }
            let action = self.action(lower_into(name, &mut buf), *data);
            if !self
                .evaluate(&subjects, principal_type, action, ancestors, at)
                .allowed()
            {
                continue;
            }
            let assignments = subjects
                .iter()
                .flat_map(|&s| self.grants_of(s, action, ancestors, at))
                .map(|i| self.grant_reason(i))
                .collect();
            let permission = Permission {
                action: name,
                data_action: *data,
                assignments,
            };
            if visit(permission).is_break() {
                break;
            }
        }
        Ok(())
    }

    /// WhoCan: every principal and group the policy knows that is allowed the action at the
    /// scope, denies applied. Principals are judged with their policy groups only.
    pub fn who_can(
        &self,
        action: &str,
        data: bool,
        scope: &str,
        at: Instant,
    ) -> Result<WhoCan<'_>, RequestError> {
        self.who_can_until(action, data, scope, at, &|| false)
    }

    /// [`Snapshot::who_can`] that gives up, with a partial answer nobody should read, once
    /// `stop` says so (it is asked every few principals: the caller left).
    pub fn who_can_until(
        &self,
        action: &str,
        data: bool,
        scope: &str,
        at: Instant,
        stop: &dyn Fn() -> bool,
    ) -> Result<WhoCan<'_>, RequestError> {
        syntax::check_action(action).map_err(RequestError::Action)?;
        syntax::normalize_scope(scope).map_err(RequestError::Scope)?;
        let mut out = WhoCan::default();
        // An action no role could grant (longer than all they grant) is allowed to no one.
        if self.grants_nothing_to(action, data) {
            return Ok(out);
        }
        // Each principal as `check` judges it.
        self.each_allowed_principal(action, data, scope, at, stop, |name| {
            if name.starts_with("group:") {
                out.groups.push(name);
            } else {
                out.principals.push(name);
            }
        })?;
        out.principals.sort_unstable();
        out.groups.sort_unstable();
        Ok(out)
    }

    /// CheckAssign: may `actor` assign `role` at `scope`? (SPEC §3 Delegation.)
    pub fn check_assign(
        &self,
        actor: &str,
        role: &str,
        scope: &str,
        at: Instant,
    ) -> Result<AssignCheck, RequestError> {
        self.check_assign_until(actor, role, scope, at, &|| false)
    }

    /// [`Snapshot::check_assign`] that gives up, with a partial answer nobody should read,
    /// once `stop` says so (asked every few actions of the catalog).
    pub fn check_assign_until(
        &self,
        actor: &str,
        role: &str,
        scope: &str,
        at: Instant,
        stop: &dyn Fn() -> bool,
    ) -> Result<AssignCheck, RequestError> {
        let actor_type = syntax::principal_type(actor).map_err(RequestError::Principal)?;
        let scope = syntax::normalize_scope(scope).map_err(RequestError::Scope)?;
        let Some(target) = self.role(role) else {
            return Err(RequestError::Role { role: role.into() });
        };
        let subjects = self.subjects(actor, &[]);
        let ancestors = self.ancestors_of(scope);
        // Whether the actor is allowed an action: with an overlay, by `check` (which reads
        // it); else over the subjects and ancestors found once.
        let allowed = |lower: &str, data: bool| {
            if self.overlay.is_some() {
                self.check(&CheckRequest {
                    principal: actor,
                    groups: &[],
                    action: lower,
                    data_action: data,
                    scope,
                    at,
                })
                .is_ok_and(|d| d.allowed)
            } else {
                self.evaluate(
                    &subjects,
                    actor_type,
                    self.action(lower, data),
                    ancestors,
                    at,
                )
                .allowed()
            }
        };
        let mut buf = LowerBuf::new();
        let mut missing = Vec::new();
        let assign = self.identity.assign_action.as_str();
        let assign_lower = lower_into(assign, &mut buf).to_owned();
        if !allowed(&assign_lower, false) {
            missing.push(assign.to_owned());
        }
        let assignable = target
            .assignable_scopes
            .iter()
            .any(|s| ancestors.binary_search(s).is_ok());
        for (n, (name, data)) in self.universe.iter().enumerate() {
            if n % STOP_EVERY == 0 && stop() {
                break;
            }
            let lower = lower_into(name, &mut buf);
            if lower == assign_lower && !*data {
                continue;
            }
            if self.role_grants(target, lower, *data) && !allowed(lower, *data) {
                missing.push(name.to_string());
            }
        }
        let message = (!assignable).then(|| {
            format!(
                "role `{}` is not assignable at `{}`",
                target.name,
                syntax::escape(scope)
            )
        });
        missing.sort_by_cached_key(|a| a.to_ascii_lowercase());
        Ok(AssignCheck {
            allowed: missing.is_empty() && assignable,
            missing_actions: missing,
            message,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::Reason;

    /// Every reason has its status (SPEC §4), and the serde form is the one `check --json`
    /// prints: `kind` plus the reason's own fields in camelCase.
    #[test]
    fn each_reason_has_one_status_and_one_serde_form() {
        let role = Reason::RoleAssignment {
            role: "Reader",
            assignment_id: Some("a1"),
            scope: "/s",
            via: "user:a",
        };
        let cases = [
            (role.clone(), 200),
            (Reason::Public, 200),
            (
                Reason::Malformed {
                    message: "m".into(),
                },
                400,
            ),
            (Reason::NoIdentity, 401),
            (
                Reason::DenyAssignment {
                    deny_assignment: "d",
                },
                403,
            ),
            (Reason::NoGrant, 403),
            (Reason::NoRoute, 403),
        ];
        for (reason, status) in &cases {
            assert_eq!(reason.http_status(), *status, "{reason:?}");
            let json = serde_json::to_value(reason).unwrap();
            assert_eq!(json["kind"], reason.kind(), "{reason:?}");
        }
        assert_eq!(cases.len(), Reason::KINDS.len());
        assert_eq!(
            serde_json::to_value(&role).unwrap(),
            serde_json::json!({"kind": "roleAssignment", "role": "Reader", "assignmentId": "a1", "scope": "/s", "via": "user:a"})
        );
        assert_eq!(
            serde_json::to_value(Reason::DenyAssignment {
                deny_assignment: "d"
            })
            .unwrap(),
            serde_json::json!({"kind": "denyAssignment", "denyAssignment": "d"})
        );
    }
}
