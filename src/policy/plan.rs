//! Plan (SPEC §11): where may a principal perform an action, as a filter over scopes.
//!
//! The answer at a scope X depends only on which of two small sets lie in Ancestors(X):
//! the scopes of the principal's active grants of the action (`grants`) and the scopes of
//! the deny assignments that apply to it and cover the action (`denies`). Ancestors(X) is
//! the ancestor row of X's longest known prefix, so the answer is constant below a known
//! scope until the next known scope that changes it, and a known scope can only change it
//! when it holds a grant or a deny, or when its own `scopeLinks` bring one in. Those are
//! the only candidates: the plan walks them (never the whole scope tree), in path order,
//! and writes an entry where the answer differs from the one the entries above give.
//!
//! The answer along a path only ever goes "not granted" → "allowed" → "denied" (a grant
//! reaches everything below it, a deny too, and a deny wins), so the entries are an
//! `include` followed by `exclude`s below it, which is exactly what "some include is a
//! prefix and no exclude is" can express: the plan is exact for every scope, known or not,
//! linked or not.

use serde::Serialize;

use super::snapshot::{LowerBuf, RequestError, ScopeIdx, Snapshot, lower_into};
use super::syntax::{self, Instant};

/// A Plan question.
#[derive(Debug, Clone, Copy)]
pub struct PlanRequest<'a> {
    pub principal: &'a str,
    /// Caller-supplied groups (from a token), full `group:` ids.
    pub groups: &'a [String],
    pub action: &'a str,
    pub data_action: bool,
    /// Only scopes at or below this one are planned (`/` for all).
    pub under: &'a str,
    pub at: Instant,
}

/// The answer: the principal may act at X exactly when some `include` entry is X or a path
/// prefix of X and no `exclude` entry is. Both lists are sorted and minimal.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Plan {
    pub include: Vec<String>,
    pub exclude: Vec<String>,
}

impl Plan {
    /// Whether the plan allows scope `scope` (any spelling; compared as scopes compare).
    pub fn covers(&self, scope: &str) -> bool {
        let Ok(scope) = syntax::normalize_scope(scope) else {
            return false;
        };
        let under = |entry: &String| is_at_or_below(scope, entry);
        self.include.iter().any(under) && !self.exclude.iter().any(under)
    }
}

/// Whether `scope` is `entry` or lies below it (both normalized; ASCII case ignored).
pub fn is_at_or_below(scope: &str, entry: &str) -> bool {
    let entry = syntax::trim_scope(entry);
    if entry == "/" {
        return true;
    }
    let (s, e) = (scope.as_bytes(), entry.as_bytes());
    s.len() >= e.len()
        && s[..e.len()].eq_ignore_ascii_case(e)
        && (s.len() == e.len() || s[e.len()] == b'/')
}

impl Snapshot {
    /// Plan (SPEC §11). Costs the principal's assignments plus the deny assignments plus,
    /// per candidate scope, its ancestor row: never the size of the scope tree.
    pub fn plan(&self, req: &PlanRequest<'_>) -> Result<Plan, RequestError> {
        if let Some(full) = self.full_other() {
            return full.plan(req);
        }
        let principal_type =
            syntax::principal_type(req.principal).map_err(RequestError::Principal)?;
        for g in req.groups {
            syntax::group_id(g).map_err(RequestError::Group)?;
        }
        syntax::check_action(req.action).map_err(RequestError::Action)?;
        let under = syntax::normalize_scope(req.under).map_err(RequestError::Scope)?;
        // An action no role could grant (longer than all they grant) is allowed nowhere.
        if self.grants_nothing_to(req.action, req.data_action) {
            return Ok(Plan::default());
        }
        let mut buf = LowerBuf::new();
        let action = self.action(lower_into(req.action, &mut buf), req.data_action);
        let subjects = self.subjects(req.principal, req.groups);

        // The scopes of the active grants, and of the applying denies (sorted, distinct).
        let mut grants: Vec<ScopeIdx> = Vec::new();
        for &[start, end] in subjects.rows() {
            for i in start..end {
                if self.grants(i, action, req.at) {
                    grants.push(self.assignments.scope(i));
                }
            }
        }
        grants.sort_unstable();
        grants.dedup();
        let mut denies: Vec<ScopeIdx> = self
            .denies
            .iter()
            // Who first: a selector test is cheaper than matching action patterns.
            .filter(|d| d.applies(&subjects, principal_type) && d.covers(action.lower, action.data))
            .map(|d| d.scope)
            .collect();
        denies.sort_unstable();
        denies.dedup();
        let answer = |row: &[ScopeIdx]| {
            row.iter().any(|s| grants.binary_search(s).is_ok())
                && !row.iter().any(|s| denies.binary_search(s).is_ok())
        };

        let mut plan = Plan::default();
        let under_key = under.to_ascii_lowercase();
        let start = answer(self.ancestors_of(&under_key));
        if start {
            plan.include.push(self.spelling(under));
        }
        if grants.is_empty() {
            return Ok(plan);
        }
        let strictly_below = |s: ScopeIdx| {
            let key = self.scopes[s.index()].key();
            key.len() > under_key.len() && is_at_or_below(key, &under_key)
        };
        let touches = |row: &[ScopeIdx]| {
            row.iter()
                .any(|s| grants.binary_search(s).is_ok() || denies.binary_search(s).is_ok())
        };
        // Candidates: grant and deny scopes below `under`, and linked scopes below it whose
        // ancestors hold one of them (their answer may differ from their path's).
        let mut candidates: Vec<ScopeIdx> = grants
            .iter()
            .chain(&denies)
            .copied()
            .filter(|&s| strictly_below(s))
            .chain(
                self.linked_scopes
                    .iter()
                    .copied()
                    .filter(|&s| strictly_below(s) && touches(self.ancestors.row(s))),
            )
            .collect();
        candidates.sort_unstable();
        candidates.dedup();
        let answers: super::snapshot::FastMap<&str, bool> = candidates
            .iter()
            .map(|&s| (self.scopes[s.index()].key(), answer(self.ancestors.row(s))))
            .collect();
        for &s in &candidates {
            let scope = &self.scopes[s.index()];
            let Some(&here) = answers.get(scope.key()) else {
                continue;
            };
            // The answer the entries above give: the nearest candidate above, else `under`.
            let above = syntax::scope_prefixes(scope.key())
                .skip(1)
                .take_while(|p| p.len() > under_key.len())
                .find_map(|p| answers.get(p).copied())
                .unwrap_or(start);
            if here != above {
                let list = if here {
                    &mut plan.include
                } else {
                    &mut plan.exclude
                };
                list.push(scope.as_str().to_owned());
            }
        }
        plan.include.sort_unstable();
        plan.exclude.sort_unstable();
        Ok(plan)
    }

    /// The policy's spelling of a known scope, else the request's.
    fn spelling(&self, scope: &str) -> String {
        let key = scope.to_ascii_lowercase();
        match self.scope_index.get(key.as_bytes(), &self.scope_text) {
            Some(s) => self.scopes[s as usize].as_str().to_owned(),
            None => scope.to_owned(),
        }
    }
}
