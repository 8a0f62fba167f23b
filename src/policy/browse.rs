//! Read-only views of a snapshot for people: every role assignment as written, deny
//! assignments, a role's patterns and implied actions, the scope tree, and the chain of
//! group memberships that made a principal the holder of an assignment.
//!
//! Like [`super::explain`], this is a separate path that allocates freely and runs only when
//! asked (the web console); [`Snapshot::check`] is untouched by it.

use super::snapshot::{PrincipalIdx, Reason, Role, Selector, Snapshot, pos};
use super::syntax::{self, Instant, scope_key_prefixes};

/// One role assignment as the policy states it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssignmentView<'s> {
    pub id: Option<&'s str>,
    pub role: &'s str,
    pub principal: &'s str,
    pub scope: &'s str,
    pub not_before: Option<String>,
    pub not_after: Option<String>,
}

/// One deny assignment, its selectors in words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DenyView<'s> {
    pub name: &'s str,
    pub scope: &'s str,
    pub principals: Vec<String>,
    pub exclude: Vec<String>,
    pub actions: Vec<&'s str>,
    pub not_actions: Vec<&'s str>,
    pub data_actions: Vec<&'s str>,
    pub not_data_actions: Vec<&'s str>,
}

/// A role's definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleView<'s> {
    pub name: &'s str,
    pub id: Option<&'s str>,
    pub description: Option<&'s str>,
    pub actions: Vec<&'s str>,
    pub not_actions: Vec<&'s str>,
    pub data_actions: Vec<&'s str>,
    pub not_data_actions: Vec<&'s str>,
    pub assignable_scopes: Vec<&'s str>,
    /// Catalog actions granted through `implies` (as the catalog spells them, sorted),
    /// control plane.
    pub implied: Vec<&'s str>,
    /// The same for the data plane.
    pub implied_data: Vec<&'s str>,
}

/// A scope the policy names, placed in the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopeNode<'s> {
    pub scope: &'s str,
    /// How many known path prefixes lie above it (0 for the top).
    pub depth: usize,
    /// Known ancestors that are not path prefixes: parents through `scopeLinks` (and
    /// their own ancestors), sorted.
    pub linked: Vec<&'s str>,
}

/// One step of a membership chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainStart {
    /// The principal itself holds the assignment.
    Principal,
    /// The caller's token named this group.
    TokenGroup(String),
}

/// The patterns' texts.
fn texts(patterns: &[syntax::ActionPattern]) -> Vec<&str> {
    patterns.iter().map(syntax::ActionPattern::as_str).collect()
}

impl Snapshot {
    /// Every role assignment, in policy order.
    pub fn assignment_views(&self) -> Vec<AssignmentView<'_>> {
        if let Some(full) = self.full_other() {
            return full.assignment_views();
        }
        let mut order: Vec<u32> = (0..pos(self.assignments.len())).collect();
        order.sort_unstable_by_key(|&i| self.assignments.order(i));
        order
            .into_iter()
            .filter_map(|i| {
                let a = self.assignments.record(i);
                let Reason::RoleAssignment {
                    role,
                    assignment_id,
                    scope,
                    via,
                } = self.grant_reason(i)
                else {
                    return None;
                };
                let (from, until) = self.windows[a.window as usize];
                Some(AssignmentView {
                    id: assignment_id,
                    role,
                    principal: via,
                    scope,
                    not_before: (from != Instant::MIN).then(|| syntax::format_time(from)),
                    not_after: (until != Instant::MAX).then(|| syntax::format_time(until)),
                })
            })
            .collect()
    }

    /// Every deny assignment, in policy order.
    pub fn deny_views(&self) -> Vec<DenyView<'_>> {
        let words = |selectors: &[Selector]| -> Vec<String> {
            selectors
                .iter()
                .map(|s| match s {
                    Selector::Everyone => "*".to_owned(),
                    Selector::Type(t) => format!("{t}:*"),
                    Selector::Id(p) => self.principal_name(*p).to_owned(),
                })
                .collect()
        };
        self.denies
            .iter()
            .map(|d| DenyView {
                name: &d.name,
                scope: self.scopes[d.scope.index()].as_str(),
                principals: words(&d.principals),
                exclude: words(&d.exclude),
                actions: texts(&d.actions),
                not_actions: texts(&d.not_actions),
                data_actions: texts(&d.data_actions),
                not_data_actions: texts(&d.not_data_actions),
            })
            .collect()
    }

    /// A role's definition, with the actions it is granted through the catalog's `implies`.
    pub fn role_view<'s>(&'s self, role: &'s Role) -> RoleView<'s> {
        // Implied actions are kept lowercase; show them as the catalog spells them.
        let spelling: std::collections::HashMap<String, &'s str> = self
            .catalog
            .iter()
            .map(|a| (a.name.to_ascii_lowercase(), &*a.name))
            .collect();
        let implied = |set: &'s super::snapshot::ImpliedSet| -> Vec<&'s str> {
            let mut names: Vec<&str> = set
                .ids()
                .map(|i| set.actions().name(i))
                .map(|lower| spelling.get(lower).copied().unwrap_or(lower))
                .collect();
            names.sort_unstable_by_key(|n| n.to_ascii_lowercase());
            names
        };
        RoleView {
            name: &role.name,
            id: role.id.as_deref(),
            description: role.description.as_deref(),
            actions: texts(&role.actions),
            not_actions: texts(&role.not_actions),
            data_actions: texts(&role.data_actions),
            not_data_actions: texts(&role.not_data_actions),
            assignable_scopes: role
                .assignable_scopes
                .iter()
                .map(|&s| self.scopes[s.index()].as_str())
                .collect(),
            implied: implied(&role.implied),
            implied_data: implied(&role.implied_data),
        }
    }

    /// Every scope the policy names, in tree order (sorted by key, so children follow
    /// their parent).
    pub fn scope_tree(&self) -> Vec<ScopeNode<'_>> {
        if let Some(full) = self.full_other() {
            return full.scope_tree();
        }
        let mut order: Vec<usize> = (0..self.scopes.len()).collect();
        order.sort_by(|&a, &b| self.scopes[a].key().cmp(self.scopes[b].key()));
        order
            .into_iter()
            .map(|s| {
                let scope = &self.scopes[s];
                let key = scope.key().as_bytes();
                let prefixes: Vec<&[u8]> = scope_key_prefixes(key).skip(1).collect();
                let depth = prefixes
                    .iter()
                    .filter(|p| self.scope_index.get(p, &self.scope_text).is_some())
                    .count();
                let mut linked: Vec<&str> = self
                    .ancestors
                    .row(s as u32)
                    .iter()
                    .map(|&a| &self.scopes[a.index()])
                    .filter(|a| {
                        a.key().as_bytes() != key && !prefixes.contains(&a.key().as_bytes())
                    })
                    .map(|a| a.as_str())
                    .collect();
                linked.sort_unstable();
                ScopeNode {
                    scope: scope.as_str(),
                    depth,
                    linked,
                }
            })
            .collect()
    }

    /// The known scopes that are ancestors of `scope` (SPEC §3 Ancestors(S)), itself
    /// included when known, in tree order.
    pub fn scope_ancestors(&self, scope: &str) -> Vec<&str> {
        if let Some(full) = self.full_other() {
            return full.scope_ancestors(scope);
        }
        let mut out: Vec<&syntax::Scope> = self
            .ancestors_of(syntax::trim_scope(&scope.to_ascii_lowercase()))
            .iter()
            .map(|&a| &self.scopes[a.index()])
            .collect();
        out.sort_by(|a, b| a.key().cmp(b.key()));
        out.into_iter().map(syntax::Scope::as_str).collect()
    }

    /// How `principal` (with token `groups`) comes to be the subject `via`: where the chain
    /// starts, then each group joined in turn, ending with `via` (empty when `via` is the
    /// principal itself). Each step is a direct membership the policy states. `None` when
    /// `via` is not one of the principal's subjects.
    pub fn membership_chain(
        &self,
        principal: &str,
        groups: &[String],
        via: &str,
    ) -> Option<(ChainStart, Vec<String>)> {
        if let Some(full) = self.full_other() {
            return full.membership_chain(principal, groups, via);
        }
        if principal.eq_ignore_ascii_case(via) {
            return Some((ChainStart::Principal, Vec::new()));
        }
        let target = self.principal_slot(via)?.principal();
        if let Some(path) = self.chain_from(principal, target) {
            return Some((ChainStart::Principal, path));
        }
        for g in groups {
            if g.eq_ignore_ascii_case(via) {
                return Some((ChainStart::TokenGroup(g.clone()), Vec::new()));
            }
            if let Some(path) = self.chain_from(g, target) {
                return Some((ChainStart::TokenGroup(g.clone()), path));
            }
        }
        None
    }

    /// The scopes of the assignments held by the principal, its groups and the token
    /// `groups`, distinct, in tree order.
    pub fn held_scopes(&self, principal: &str, groups: &[String]) -> Vec<&str> {
        if let Some(full) = self.full_other() {
            return full.held_scopes(principal, groups);
        }
        let subjects = self.subjects(principal, groups);
        let mut scopes: Vec<&str> = Vec::new();
        for &s in subjects.iter() {
            let [start, end] = self.assignment_row(s);
            for i in start..end {
                if let Reason::RoleAssignment { scope, .. } = self.grant_reason(i) {
                    scopes.push(scope);
                }
            }
        }
        scopes.sort_by_key(|s| s.to_ascii_lowercase());
        scopes.dedup_by(|a, b| a.eq_ignore_ascii_case(b));
        scopes
    }

    /// The groups of a principal, transitively: its row of `member_rows`, by index
    /// (sorted by group).
    fn closure(&self, p: PrincipalIdx) -> &[[u32; 3]] {
        let p = p.index();
        match (self.principal_rows.get(p), self.principal_rows.get(p + 1)) {
            (Some(a), Some(b)) => self
                .member_rows
                .get(a.groups as usize..b.groups as usize)
                .unwrap_or_default(),
            _ => &[],
        }
    }

    /// Whether principal `p` is a member of group `g`, directly or not.
    fn is_member(&self, p: PrincipalIdx, g: PrincipalIdx) -> bool {
        self.closure(p)
            .binary_search_by_key(&g.get(), |&[group, _, _]| group)
            .is_ok()
    }

    /// A chain of direct memberships from `from` to the group `target`. At each step the
    /// next group is one that leads to `target` and lies in no other such group's closure,
    /// which makes it a direct group of the current member.
    fn chain_from(&self, from: &str, target: PrincipalIdx) -> Option<Vec<String>> {
        let mut current = self.principal_slot(from)?.principal();
        let mut path = Vec::new();
        // Each step moves one membership closer; the closure bounds the walk.
        for _ in 0..=self.principal_count() {
            if !self.is_member(current, target) {
                return None;
            }
            let leads: Vec<PrincipalIdx> = self
                .closure(current)
                .iter()
                .map(|&[g, _, _]| PrincipalIdx::new(g))
                .filter(|&g| g == target || self.is_member(g, target))
                .collect();
            let next = leads
                .iter()
                .copied()
                .find(|&g| !leads.iter().any(|&o| o != g && self.is_member(o, g)))?;
            path.push(self.principal_name(next).to_owned());
            if next == target {
                return Some(path);
            }
            current = next;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use crate::policy::{SourceDocument, compile_documents};

    fn snapshot(yaml: &str) -> crate::policy::Snapshot {
        let doc = SourceDocument::new("p.yaml", yaml).parse().unwrap();
        compile_documents(&[("p.yaml".into(), doc)]).unwrap()
    }

    const POLICY: &str = r#"
version: 1
actions:
  - name: Microsoft.Edge/targets/read
    implies: [Microsoft.Edge/targets/list]
  - name: Microsoft.Edge/targets/list
roles:
  - name: Reader
    actions: ["Microsoft.Edge/targets/read"]
groups:
  - id: "group:outer"
    members: ["group:inner"]
  - id: "group:inner"
    members: ["user:alice", "group:side"]
  - id: "group:side"
    members: ["user:bob"]
assignments:
  - id: ra-1
    role: Reader
    principal: "group:outer"
    scope: /subscriptions/s1
scopeLinks:
  - scope: /subscriptions/s1/resourceGroups/rg
    parents: [/serviceGroups/line]
"#;

    #[test]
    fn chains_name_each_direct_membership() {
        let s = snapshot(POLICY);
        let (_, alice) = s
            .membership_chain("user:alice", &[], "group:outer")
            .unwrap();
        assert_eq!(alice, ["group:inner", "group:outer"]);
        let (_, bob) = s.membership_chain("user:bob", &[], "group:outer").unwrap();
        assert_eq!(bob, ["group:side", "group:inner", "group:outer"]);
        let (start, via_token) = s
            .membership_chain("user:carol", &["group:side".into()], "group:outer")
            .unwrap();
        assert_eq!(start, super::ChainStart::TokenGroup("group:side".into()));
        assert_eq!(via_token, ["group:inner", "group:outer"]);
        assert!(
            s.membership_chain("user:carol", &[], "group:outer")
                .is_none()
        );
    }

    #[test]
    fn the_scope_tree_shows_links_apart_from_prefixes() {
        let s = snapshot(POLICY);
        let tree = s.scope_tree();
        let rg = tree
            .iter()
            .find(|n| n.scope == "/subscriptions/s1/resourceGroups/rg")
            .unwrap();
        assert_eq!(rg.linked, ["/serviceGroups/line"]);
        assert_eq!(s.assignment_views()[0].id, Some("ra-1"));
        assert_eq!(s.held_scopes("user:bob", &[]), ["/subscriptions/s1"]);
        let view = s.role_view(s.role("reader").unwrap());
        assert_eq!(view.actions, ["Microsoft.Edge/targets/read"]);
        assert_eq!(view.implied, ["Microsoft.Edge/targets/list"]);
        assert!(view.implied_data.is_empty());
        assert!(s.held_scopes("user:carol", &[]).is_empty());
    }
}
