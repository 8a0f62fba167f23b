//! Why a request was denied, in terms a person can act on: the groups the principal is in,
//! and the near misses, every assignment the subjects hold at the scope or above with the
//! reason it does not grant the action.
//!
//! This is a separate, slower path that allocates freely; [`Snapshot::check`] stays as it
//! is and is only called again here for the decision itself. It runs only when asked
//! (`check --explain`, the native API's `explain` flag).

use serde::Serialize;

use super::snapshot::{CheckRequest, Decision, Reason, RequestError, Snapshot};
use super::syntax::{self, Instant};

/// Why an assignment the subjects hold at the scope or above does not grant the action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum MissReason<'s> {
    /// No pattern of the role's `actions` (`dataActions` for a data action) matches the
    /// action, and no action the role grants implies it.
    ActionNotInRole,
    /// A pattern of the role's `actions` matches, but this `notActions` pattern
    /// (`notDataActions` for a data action) removes it.
    NotActions { pattern: &'s str },
    /// The role grants the action, but the assignment is not active at the time asked.
    #[serde(rename_all = "camelCase")]
    OutsideWindow {
        not_before: Option<String>,
        not_after: Option<String>,
    },
    /// The role's patterns grant the action only in one plane, and not the plane it was
    /// asked in (or the catalog puts it in): `data_action` is the plane of the role's
    /// patterns that match (`dataActions` when true, `actions` when false).
    #[serde(rename_all = "camelCase")]
    WrongPlane { data_action: bool },
    /// The assignment grants the action, but a deny assignment applies first.
    #[serde(rename_all = "camelCase")]
    OverriddenByDeny { deny_assignment: &'s str },
}

impl MissReason<'_> {
    /// The reason kind, as the JSON and the native API spell it.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::ActionNotInRole => "actionNotInRole",
            Self::NotActions { .. } => "notActions",
            Self::OutsideWindow { .. } => "outsideWindow",
            Self::WrongPlane { .. } => "wrongPlane",
            Self::OverriddenByDeny { .. } => "overriddenByDeny",
        }
    }

    /// One sentence for people, about `action` (`data`: asked as a data action). User
    /// text goes through [`syntax::escape`].
    pub fn message(&self, action: &str, data: bool) -> String {
        let action = syntax::escape(action);
        let (allow, remove) = if data {
            ("dataActions", "notDataActions")
        } else {
            ("actions", "notActions")
        };
        match self {
            Self::ActionNotInRole => {
                format!("the role's {allow} do not include `{action}`")
            }
            Self::NotActions { pattern } => format!(
                "the role's {remove} pattern `{}` removes `{action}`",
                syntax::escape(pattern)
            ),
            Self::OutsideWindow {
                not_before,
                not_after,
            } => format!(
                "the assignment is not active at the time asked (notBefore {}, notAfter {})",
                not_before.as_deref().unwrap_or("none"),
                not_after.as_deref().unwrap_or("none"),
            ),
            Self::WrongPlane { data_action: true } => format!(
                "the role grants `{action}` only through its dataActions, but it was asked \
                 (or is catalogued) as a control-plane action"
            ),
            Self::WrongPlane { data_action: false } => format!(
                "the role grants `{action}` only through its actions, but it was asked \
                 (or is catalogued) as a data action"
            ),
            Self::OverriddenByDeny { deny_assignment } => format!(
                "the assignment grants `{action}`, but deny assignment `{}` applies first",
                syntax::escape(deny_assignment)
            ),
        }
    }
}

/// One assignment that does not grant, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NearMiss<'s> {
    /// The assignment, as a `roleAssignment` reason: role, assignment id, scope, holder.
    pub assignment: Reason<'s>,
    pub reason: MissReason<'s>,
}

/// A decision with what lies behind it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Explanation<'s> {
    pub decision: Decision<'s>,
    /// Every group the principal is in (policy groups, transitively, and the caller's
    /// token groups with the groups containing them), sorted. Only groups the policy
    /// names or the caller sent are listed.
    pub groups_of_principal: Vec<String>,
    /// For a deny: every assignment the subjects hold at the scope or one of its ancestors,
    /// in policy order, with the reason it does not grant. Empty for an allow.
    pub near_misses: Vec<NearMiss<'s>>,
}

impl Snapshot {
    /// [`Snapshot::check`] with the explanation a person needs to act on a deny.
    pub fn explain_check(&self, req: &CheckRequest<'_>) -> Result<Explanation<'_>, RequestError> {
        if let Some(full) = self.full_other() {
            return full.explain_check(req);
        }
        let decision = self.check(req)?;
        let subjects = self.subjects(req.principal, req.groups);
        let mut groups: Vec<String> = subjects
            .iter()
            .map(|&s| self.principal_name(s))
            .filter(|&name| name != req.principal)
            .map(str::to_owned)
            .collect();
        // Token groups the policy does not name are still the caller's groups.
        for g in req.groups {
            if !groups.contains(g) {
                groups.push(g.clone());
            }
        }
        groups.sort();
        groups.dedup();
        let mut near_misses = Vec::new();
        if !decision.allowed
            && matches!(
                decision.reason,
                Reason::NoGrant | Reason::DenyAssignment { .. }
            )
        {
            let deny = match decision.reason {
                Reason::DenyAssignment { deny_assignment } => Some(deny_assignment),
                _ => None,
            };
            let lower = req.action.to_ascii_lowercase();
            let action = self.action(&lower, req.data_action);
            let ancestors = self.ancestors_of(syntax::trim_scope(req.scope));
            let mut held: Vec<u32> = Vec::new();
            for &s in subjects.iter() {
                let row = self.assignment_row(s);
                held.extend(self.rows_at(row, ancestors).flatten());
            }
            held.sort_unstable_by_key(|&i| self.assignments.order(i));
            held.dedup();
            for i in held {
                let reason = self.miss_reason(i, &action, req.at, deny);
                near_misses.push(NearMiss {
                    assignment: self.grant_reason(i),
                    reason,
                });
            }
        }
        Ok(Explanation {
            decision,
            groups_of_principal: groups,
            near_misses,
        })
    }

    /// Why the assignment at position `i` does not grant the action at `at`.
    fn miss_reason<'s>(
        &'s self,
        i: u32,
        action: &super::snapshot::ActionRef<'_>,
        at: Instant,
        deny: Option<&'s str>,
    ) -> MissReason<'s> {
        let a = self.assignments.record(i);
        let role = &self.roles[a.role.index()];
        let (lower, data) = (action.lower, action.data);
        if action.granted_by(&self.roles, a.role) {
            if !self.active(a, at) {
                let (from, until) = self.windows[a.window as usize];
                return MissReason::OutsideWindow {
                    not_before: (from != Instant::MIN).then(|| syntax::format_time(from)),
                    not_after: (until != Instant::MAX).then(|| syntax::format_time(until)),
                };
            }
            return match deny {
                Some(deny_assignment) => MissReason::OverriddenByDeny { deny_assignment },
                // Not reached for a noGrant decision; said plainly all the same.
                None => MissReason::ActionNotInRole,
            };
        }
        let (allow, remove) = if data {
            (&role.data_actions, &role.not_data_actions)
        } else {
            (&role.actions, &role.not_actions)
        };
        if allow.iter().any(|p| p.matches_lower(lower))
            && let Some(p) = remove.iter().find(|p| p.matches_lower(lower))
        {
            return MissReason::NotActions {
                pattern: p.as_str(),
            };
        }
        // The role's patterns grant it in the other plane; or in the plane asked, while the
        // catalog puts the action in the other one (so the role does not grant it there).
        if role.grants(lower, !data) {
            return MissReason::WrongPlane { data_action: !data };
        }
        if role.grants(lower, data) {
            return MissReason::WrongPlane { data_action: data };
        }
        MissReason::ActionNotInRole
    }
}
