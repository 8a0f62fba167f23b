//! The reference model of SPEC §3: a naive, independent implementation over raw
//! [`Document`]s, written straight from the spec text. It shares no code with the engine
//! beyond the document types and `parse_time`: plain loops over the raw documents, its own
//! glob matcher (a DP over bytes), its own scope ancestors and group closure.
//!
//! Shared by the property tests (`tests/properties.rs`) and the fuzz targets
//! (`fuzz/fuzz_targets/*.rs`), which both include this file with `#[path]`; it must
//! therefore only use `iot_authz` and `std`.

use std::collections::BTreeSet;

use iot_authz::policy::document::{Document, RoleDoc};
use iot_authz::policy::syntax::{Instant, parse_time};

/// `*` matches any sequence (`/` included); everything else matches itself, ASCII
/// case-insensitively. `m[i][j]`: does `pattern[i..]` match `text[j..]`?
pub fn glob(pattern: &str, text: &str) -> bool {
    let p: Vec<u8> = pattern.bytes().map(|b| b.to_ascii_lowercase()).collect();
    let t: Vec<u8> = text.bytes().map(|b| b.to_ascii_lowercase()).collect();
    let mut m = vec![vec![false; t.len() + 1]; p.len() + 1];
    m[p.len()][t.len()] = true;
    for i in (0..p.len()).rev() {
        for j in (0..=t.len()).rev() {
            m[i][j] = if p[i] == b'*' {
                m[i + 1][j] || (j < t.len() && m[i][j + 1])
            } else {
                j < t.len() && p[i] == t[j] && m[i + 1][j + 1]
            };
        }
    }
    m[0][0]
}

fn any_glob(patterns: &[String], text: &str) -> bool {
    patterns.iter().any(|p| glob(p, text))
}

/// A scope's comparison key: ASCII lowercase, one trailing slash dropped.
pub fn key(scope: &str) -> String {
    let lower = scope.to_ascii_lowercase();
    match lower.strip_suffix('/') {
        Some(s) if !s.is_empty() => s.to_owned(),
        _ => lower,
    }
}

/// `/a/b` -> `/a/b`, `/a`, `/`.
pub fn prefixes(key: &str) -> Vec<String> {
    let mut out = vec![key.to_owned()];
    let mut cur = key.to_owned();
    while cur != "/" {
        cur = match cur.rfind('/') {
            Some(0) | None => "/".to_owned(),
            Some(i) => cur[..i].to_owned(),
        };
        out.push(cur.clone());
    }
    out
}

/// Ancestors(S): S's path prefixes, closed under scopeLinks (a linked parent brings its
/// own prefixes and links).
pub fn ancestors(docs: &[(String, Document)], scope: &str) -> BTreeSet<String> {
    let mut set = BTreeSet::new();
    let mut work = prefixes(&key(scope));
    while let Some(s) = work.pop() {
        if !set.insert(s.clone()) {
            continue;
        }
        for (_, d) in docs {
            for link in &d.scope_links {
                if key(&link.scope) == s {
                    for p in &link.parents {
                        work.extend(prefixes(&key(p)));
                    }
                }
            }
        }
    }
    set
}

/// Subjects(P) = {P} ∪ G ∪ every group containing one of them, transitively.
pub fn subjects(
    docs: &[(String, Document)],
    principal: &str,
    groups: &[String],
) -> BTreeSet<String> {
    let mut set: BTreeSet<String> = groups.iter().cloned().collect();
    set.insert(principal.to_owned());
    loop {
        let mut grew = false;
        for (_, d) in docs {
            for g in &d.groups {
                if !set.contains(&g.id) && g.members.iter().any(|m| set.contains(m)) {
                    set.insert(g.id.clone());
                    grew = true;
                }
            }
        }
        if !grew {
            return set;
        }
    }
}

fn principal_type(id: &str) -> &str {
    id.split_once(':').map_or(id, |(t, _)| t)
}

/// A deny selector: an id naming a subject, `TYPE:*` for P's type, or `*`.
pub fn selects(selector: &str, principal: &str, subjects: &BTreeSet<String>) -> bool {
    if selector == "*" {
        return true;
    }
    if let Some(t) = selector.strip_suffix(":*") {
        return t == principal_type(principal);
    }
    subjects.contains(selector)
}

pub fn find_role<'d>(docs: &'d [(String, Document)], name_or_id: &str) -> Option<&'d RoleDoc> {
    docs.iter().flat_map(|(_, d)| &d.roles).find(|r| {
        // Names and ids both compare ASCII case-insensitively (README, "Roles").
        r.name.eq_ignore_ascii_case(name_or_id)
            || r.id
                .as_deref()
                .is_some_and(|id| id.eq_ignore_ascii_case(name_or_id))
    })
}

/// The role's own patterns: matches one of actions (dataActions) and none of
/// notActions (notDataActions).
fn grants_directly(role: &RoleDoc, action: &str, data: bool) -> bool {
    let (yes, no) = if data {
        (&role.data_actions, &role.not_data_actions)
    } else {
        (&role.actions, &role.not_actions)
    };
    any_glob(yes, action) && !any_glob(no, action)
}

/// Every (lowercase action, data flag) implied, transitively through the catalog, by a
/// catalog action the role grants (with the catalog entry's own flag).
pub fn implied(docs: &[(String, Document)], role: &RoleDoc) -> BTreeSet<(String, bool)> {
    let catalog: Vec<_> = docs.iter().flat_map(|(_, d)| &d.actions).collect();
    let entry = |name: &str| catalog.iter().find(|c| c.name.eq_ignore_ascii_case(name));
    let mut out = BTreeSet::new();
    let mut work: Vec<(String, bool)> = Vec::new();
    for c in &catalog {
        if grants_directly(role, &c.name, c.data_action) {
            for i in &c.implies {
                work.push((i.clone(), c.data_action));
            }
        }
    }
    while let Some((name, implying_flag)) = work.pop() {
        let flag = entry(&name).map_or(implying_flag, |c| c.data_action);
        if !out.insert((name.to_ascii_lowercase(), flag)) {
            continue;
        }
        if let Some(c) = entry(&name) {
            for i in &c.implies {
                work.push((i.clone(), c.data_action));
            }
        }
    }
    out
}

pub fn role_grants(docs: &[(String, Document)], role: &RoleDoc, action: &str, data: bool) -> bool {
    // A catalog action is granted only in its own plane (SPEC §3 "Planes").
    let catalogued = docs
        .iter()
        .flat_map(|(_, d)| &d.actions)
        .find(|c| c.name.eq_ignore_ascii_case(action));
    if catalogued.is_some_and(|c| c.data_action != data) {
        return false;
    }
    grants_directly(role, action, data)
        || implied(docs, role).contains(&(action.to_ascii_lowercase(), data))
}

fn time(t: &Option<String>, default: Instant) -> Instant {
    t.as_deref().map_or(default, |t| parse_time(t).unwrap())
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub role: String,
    pub scope_key: String,
    pub id: Option<String>,
    pub via: String,
}

#[derive(Debug, Clone)]
pub struct Decision {
    pub allowed: bool,
    pub kind: &'static str,
    /// Every deny assignment that applies (names).
    pub denies: Vec<String>,
    /// Every assignment that grants.
    pub grants: Vec<Grant>,
}

impl Decision {
    /// Whether the engine's decision is one this reference admits: the same allow or deny
    /// and reason kind, and the grant or deny assignment it names among those found here.
    pub fn admits(&self, got: &iot_authz::policy::Decision<'_>) -> Result<(), String> {
        use iot_authz::policy::Reason;
        let mismatch = |what: &str| {
            Err(format!(
                "{what}: engine {} {:?}, reference {} {} (denies {:?}, grants {:?})",
                got.allowed, got.reason, self.allowed, self.kind, self.denies, self.grants
            ))
        };
        if got.allowed != self.allowed || got.reason.kind() != self.kind {
            return mismatch("the decision differs");
        }
        match &got.reason {
            Reason::DenyAssignment { deny_assignment }
                if !self.denies.iter().any(|d| d == deny_assignment) =>
            {
                mismatch("the engine's deny is not one the reference finds")
            }
            Reason::RoleAssignment {
                role,
                assignment_id,
                scope,
                via,
            } if !self.grants.iter().any(|g| {
                g.role == *role
                    && g.scope_key == key(scope)
                    && g.id.as_deref() == *assignment_id
                    && g.via == *via
            }) =>
            {
                mismatch("the engine's grant is not one the reference finds")
            }
            _ => Ok(()),
        }
    }
}

pub struct Request<'a> {
    pub principal: &'a str,
    pub groups: &'a [String],
    pub action: &'a str,
    pub data: bool,
    pub scope: &'a str,
    pub at: Instant,
}

/// SPEC §3, steps 1 to 5.
pub fn check(docs: &[(String, Document)], req: &Request<'_>) -> Decision {
    let subjects = subjects(docs, req.principal, req.groups);
    let ancestors = ancestors(docs, req.scope);
    let mut denies = Vec::new();
    for (_, d) in docs {
        for x in &d.deny_assignments {
            if !ancestors.contains(&key(&x.scope)) {
                continue;
            }
            let applies = x
                .principals
                .iter()
                .any(|s| selects(s, req.principal, &subjects))
                && !x
                    .exclude_principals
                    .iter()
                    .any(|s| selects(s, req.principal, &subjects));
            let (yes, no) = if req.data {
                (&x.data_actions, &x.not_data_actions)
            } else {
                (&x.actions, &x.not_actions)
            };
            if applies && any_glob(yes, req.action) && !any_glob(no, req.action) {
                denies.push(x.name.clone());
            }
        }
    }
    let mut grants = Vec::new();
    for (_, d) in docs {
        for a in &d.assignments {
            let active = time(&a.not_before, Instant::MIN) <= req.at
                && req.at < time(&a.not_after, Instant::MAX);
            if !active || !subjects.contains(&a.principal) || !ancestors.contains(&key(&a.scope)) {
                continue;
            }
            let Some(role) = find_role(docs, &a.role) else {
                continue;
            };
            if role_grants(docs, role, req.action, req.data) {
                grants.push(Grant {
                    role: role.name.clone(),
                    scope_key: key(&a.scope),
                    id: a.id.clone(),
                    via: a.principal.clone(),
                });
            }
        }
    }
    let (allowed, kind) = if !denies.is_empty() {
        (false, "denyAssignment")
    } else if !grants.is_empty() {
        (true, "roleAssignment")
    } else {
        (false, "noGrant")
    };
    Decision {
        allowed,
        kind,
        denies,
        grants,
    }
}

/// The validation rules of SPEC §2 that the generator below can break: cycles in the
/// scope graph, assignments outside assignable scopes, implied actions removed by the
/// same role's notActions. (It never breaks the others.)
pub fn validate(docs: &[(String, Document)]) -> Result<(), String> {
    // Scope graph: every mentioned scope and its prefixes; edges to the path parent and
    // to linked parents. Peel off nodes whose parents are all peeled; a rest is a cycle.
    let mut nodes = BTreeSet::new();
    let mut mention = |s: &str| nodes.extend(prefixes(&key(s)));
    for (_, d) in docs {
        for l in &d.scope_links {
            mention(&l.scope);
            l.parents.iter().for_each(|p| mention(p));
        }
        d.assignments.iter().for_each(|a| mention(&a.scope));
        d.deny_assignments.iter().for_each(|x| mention(&x.scope));
        for r in &d.roles {
            r.assignable_scopes
                .iter()
                .flatten()
                .for_each(|s| mention(s));
        }
    }
    let parents = |n: &str| -> Vec<String> {
        let mut out: Vec<String> = prefixes(n).into_iter().nth(1).into_iter().collect();
        for (_, d) in docs {
            for l in &d.scope_links {
                if key(&l.scope) == n {
                    out.extend(l.parents.iter().map(|p| key(p)));
                }
            }
        }
        out
    };
    let mut left = nodes;
    loop {
        let free: Vec<String> = left
            .iter()
            .filter(|n| parents(n).iter().all(|p| !left.contains(p)))
            .cloned()
            .collect();
        if free.is_empty() {
            break;
        }
        for n in free {
            left.remove(&n);
        }
    }
    if !left.is_empty() {
        return Err(format!("scope cycle through {left:?}"));
    }
    for (_, d) in docs {
        for a in &d.assignments {
            let role = find_role(docs, &a.role).ok_or("unknown role")?;
            let anc = ancestors(docs, &a.scope);
            let assignable = role
                .assignable_scopes
                .clone()
                .unwrap_or_else(|| vec!["/".into()]);
            if !assignable.iter().any(|s| anc.contains(&key(s))) {
                return Err(format!(
                    "{} outside assignable scopes of {}",
                    a.scope, role.name
                ));
            }
        }
        for r in &d.roles {
            for (action, data) in implied(docs, r) {
                let no = if data {
                    &r.not_data_actions
                } else {
                    &r.not_actions
                };
                if any_glob(no, &action) {
                    return Err(format!("{action} implied in {} is removed", r.name));
                }
            }
        }
    }
    Ok(())
}
