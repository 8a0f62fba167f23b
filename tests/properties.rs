//! Property tests: the engine against a naive reference model of SPEC §3.
//!
//! [`reference`] is written straight from the spec text and shares no code with the engine
//! beyond the document types and `parse_time`: plain loops over the raw documents, its own
//! glob matcher (a DP over bytes), its own scope ancestors and group closure. The strategies
//! below generate random but (mostly) valid policies over a deliberately tiny alphabet, so
//! that names, scopes and patterns collide often, in every ASCII case. Requests are aimed at
//! the policy (its principals and groups, its scopes and the scopes below them, actions
//! instantiated from its patterns, the boundaries of its time windows), so that allows,
//! denies and near misses all occur; `generated_cases_cover_every_outcome` keeps it so.
//!
//! Cases: 512 policies x 8 requests against the reference (which also checks that the
//! engine accepts exactly the policies the reference calls valid), 2048 pattern/text pairs,
//! 256 x 6 for case-insensitivity and for deny-everything. A few seconds in a debug build;
//! `PROPERTIES_SCALE=N` multiplies every case count for a longer hunt.

use std::collections::BTreeSet;

use iot_authz::policy::compile_documents;
use iot_authz::policy::document::{
    AssignmentDoc, CatalogActionDoc, DenyAssignmentDoc, Document, GroupDoc, RoleDoc, ScopeLinkDoc,
};
use iot_authz::policy::snapshot::{CheckRequest, Snapshot};
use iot_authz::policy::syntax::{ActionPattern, Instant, parse_time};
use proptest::prelude::*;
use proptest::sample::{Index, select};
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;

// ---------------------------------------------------------------------------------------
// The reference model.
// ---------------------------------------------------------------------------------------

// Shared with the fuzz targets (fuzz/fuzz_targets/), which include the same file.
#[path = "reference/mod.rs"]
pub(crate) mod reference;

// ---------------------------------------------------------------------------------------
// Strategies: a tiny alphabet so that everything collides.
// ---------------------------------------------------------------------------------------

const PROVIDERS: &[&str] = &["P.A", "Q.B"];
const RESOURCES: &[&str] = &["x", "y", "x/y"];
const VERBS: &[&str] = &["read", "write"];

/// Scopes that policies mention: a small tree, a second branch, service groups, and two
/// segments that differ only in a non-ASCII case (distinct under ASCII case-folding).
pub(crate) const SCOPES: &[&str] = &[
    "/",
    "/s",
    "/s/s1",
    "/s/s1/rg",
    "/s/s1/rg/r1",
    "/s/s1/rg/r1/t",
    "/s/s1/rg/r1/t/t1",
    "/s/s1/rg/r2",
    "/s/s2",
    "/s/s2/rg/r1",
    "/providers",
    "/providers/sg",
    "/providers/sg/g1",
    "/providers/sg/g2",
    "/s/s1/rg/r1/t/\u{fc}",
    "/s/s1/rg/r1/t/\u{dc}",
];

/// Scopes that are usually given links, so that links chain (a linked parent with links).
const LINKED: &[&str] = &[
    "/s/s1/rg/r1",
    "/s/s1/rg/r1/t/t1",
    "/s/s2/rg/r1",
    "/s/s2",
    "/providers/sg/g1",
    "/providers/sg",
];

/// Scopes that requests name: the above plus unknown ones, deeper and elsewhere.
pub(crate) const REQUEST_SCOPES: &[&str] = &[
    "/",
    "/s",
    "/s/s1",
    "/s/s1/rg",
    "/s/s1/rg/r1",
    "/s/s1/rg/r1/t",
    "/s/s1/rg/r1/t/t1",
    "/s/s1/rg/r1/t/t1/deep",
    "/s/s1/rg/r1/t/t1/deep/deeper",
    "/s/s1/rg/r2",
    "/s/s2",
    "/s/s2/rg/r1",
    "/s/s2/rg/r1/t/t9",
    "/s/s3",
    "/providers",
    "/providers/sg",
    "/providers/sg/g1",
    "/providers/sg/g2/x",
    "/s/s1/rg/r1/t/\u{fc}",
    "/s/s1/rg/r1/t/\u{dc}",
    "/zz",
];

/// Non-group principals; ids compare case-sensitively, so `user:Alice` is someone else.
pub(crate) const PEOPLE: &[&str] = &[
    "user:alice",
    "user:Alice",
    "user:bob",
    "device:d1",
    "application:app1",
    "servicePrincipal:sp1",
    "gateway:gw1",
];
/// Groups g0..g3 may be defined; `group:ext` and `group:G0` never are.
pub(crate) const GROUPS: &[&str] = &[
    "group:g0",
    "group:g1",
    "group:g2",
    "group:g3",
    "group:ext",
    "group:G0",
];
const TYPE_SELECTORS: &[&str] = &[
    "*",
    "user:*",
    "group:*",
    "device:*",
    "application:*",
    "servicePrincipal:*",
    "gateway:*",
];

pub(crate) fn flip_case(s: &str, bits: u64) -> String {
    s.chars()
        .enumerate()
        .map(|(i, c)| {
            if (bits >> (i % 64)) & 1 == 1 {
                if c.is_ascii_lowercase() {
                    c.to_ascii_uppercase()
                } else {
                    c.to_ascii_lowercase()
                }
            } else {
                c
            }
        })
        .collect()
}

/// The same text in some ASCII spelling.
fn spelled(s: String) -> BoxedStrategy<String> {
    let (lower, upper) = (s.to_ascii_lowercase(), s.to_ascii_uppercase());
    prop_oneof![
        3 => Just(s.clone()),
        1 => Just(lower),
        1 => Just(upper),
        2 => any::<u64>().prop_map(move |bits| flip_case(&s, bits)),
    ]
    .boxed()
}

pub(crate) fn action() -> BoxedStrategy<String> {
    (select(PROVIDERS), select(RESOURCES), select(VERBS))
        .prop_map(|(p, r, v)| format!("{p}/{r}/{v}"))
        .prop_flat_map(spelled)
        .boxed()
}

fn pattern() -> BoxedStrategy<String> {
    prop_oneof![
        3 => action(),
        1 => Just("*".to_owned()),
        1 => select(VERBS).prop_map(|v| format!("*/{v}")),
        1 => select(PROVIDERS).prop_map(|p| format!("{p}/*")),
        1 => (select(PROVIDERS), select(RESOURCES)).prop_map(|(p, r)| format!("{p}/{r}/*")),
        1 => select(RESOURCES).prop_map(|r| format!("*/{r}/*")),
        // a random piece of an action replaced by `*`
        2 => (action(), any::<Index>(), any::<Index>()).prop_map(|(a, i, j)| {
            let i = i.index(a.len() + 1);
            let j = i + j.index(a.len() + 1 - i);
            format!("{}*{}", &a[..i], &a[j..])
        }),
    ]
    .prop_flat_map(spelled)
    .boxed()
}

/// A scope in some spelling, sometimes with a trailing slash.
pub(crate) fn scope_in(list: &'static [&'static str]) -> BoxedStrategy<String> {
    (
        select(list).prop_flat_map(|s| spelled(s.to_owned())),
        prop::bool::weighted(0.25),
    )
        .prop_map(|(s, slash)| if slash && s != "/" { s + "/" } else { s })
        .boxed()
}

fn segments(scope: &str) -> usize {
    reference::key(scope)
        .split('/')
        .filter(|s| !s.is_empty())
        .count()
}

/// The base instant; times are whole hours after it.
pub(crate) fn t0() -> Instant {
    parse_time("2026-01-01T00:00:00Z").unwrap()
}
pub(crate) const HOUR: i128 = 3_600_000_000_000;

/// Hour `h` after [`t0`] in one of several equivalent RFC 3339 spellings.
pub(crate) fn time_text(h: u32, style: u8) -> String {
    match style % 3 {
        0 => format!("2026-01-01T{h:02}:00:00Z"),
        1 => format!("2026-01-01T{:02}:00:00+01:00", h + 1),
        _ => format!("2026-01-01T{h:02}:00:00.000000000Z"),
    }
}

#[derive(Debug, Clone)]
struct RawRole {
    id: bool,
    actions: Vec<String>,
    not_actions: Vec<String>,
    data_actions: Vec<String>,
    not_data_actions: Vec<String>,
    assignable: Option<Vec<String>>,
}

fn raw_role() -> BoxedStrategy<RawRole> {
    (
        any::<bool>(),
        prop::collection::vec(pattern(), 0..3),
        prop::collection::vec(pattern(), 0..2),
        prop::collection::vec(pattern(), 0..3),
        prop::collection::vec(pattern(), 0..2),
        prop::option::weighted(0.15, prop::collection::vec(scope_in(SCOPES), 1..3)),
    )
        .prop_map(
            |(id, actions, not_actions, data_actions, not_data_actions, assignable)| RawRole {
                id,
                actions,
                not_actions,
                data_actions,
                not_data_actions,
                assignable,
            },
        )
        .boxed()
}

#[derive(Debug, Clone)]
pub(crate) struct RawAssignment {
    pub(crate) principal: String,
    pub(crate) role: Index,
    pub(crate) by_id: bool,
    pub(crate) role_spelling: u64,
    pub(crate) scope: String,
    pub(crate) id: bool,
    pub(crate) not_before: Option<(u32, u8)>,
    pub(crate) not_after: Option<(u32, u8)>,
}

pub(crate) fn raw_assignment() -> BoxedStrategy<RawAssignment> {
    (
        prop_oneof![2 => select(PEOPLE), 1 => select(GROUPS)],
        any::<Index>(),
        any::<bool>(),
        any::<u64>(),
        scope_in(SCOPES),
        any::<bool>(),
        prop::option::weighted(0.2, (0..5u32, any::<u8>())),
        prop::option::weighted(0.2, (0..5u32, any::<u8>())),
    )
        .prop_map(
            |(principal, role, by_id, role_spelling, scope, id, not_before, not_after)| {
                RawAssignment {
                    principal: principal.to_owned(),
                    role,
                    by_id,
                    role_spelling,
                    scope,
                    id,
                    not_before,
                    not_after,
                }
            },
        )
        .boxed()
}

fn selector() -> BoxedStrategy<String> {
    prop_oneof![
        3 => select(PEOPLE).prop_map(str::to_owned),
        2 => select(GROUPS).prop_map(str::to_owned),
        2 => select(TYPE_SELECTORS).prop_map(str::to_owned),
    ]
    .boxed()
}

fn raw_deny() -> BoxedStrategy<DenyAssignmentDoc> {
    (
        prop::collection::vec(selector(), 1..3),
        prop::collection::vec(selector(), 0..2),
        prop::collection::vec(pattern(), 0..2),
        prop::collection::vec(pattern(), 0..2),
        prop::collection::vec(pattern(), 0..2),
        prop::collection::vec(pattern(), 0..2),
        scope_in(SCOPES),
    )
        .prop_map(
            |(
                principals,
                exclude_principals,
                actions,
                not_actions,
                data_actions,
                not_data_actions,
                scope,
            )| {
                DenyAssignmentDoc {
                    name: String::new(),
                    principals,
                    exclude_principals,
                    actions,
                    not_actions,
                    data_actions,
                    not_data_actions,
                    scope,
                }
            },
        )
        .boxed()
}

/// A link: the child scope and its parents, each parent either shallower than the child
/// (always acyclic: every edge then loses a segment) or, rarely, any scope at all.
fn raw_link() -> BoxedStrategy<(String, Vec<(String, bool)>)> {
    (
        prop_oneof![3 => scope_in(LINKED), 1 => scope_in(SCOPES)],
        prop::collection::vec((scope_in(SCOPES), prop::bool::weighted(0.08)), 1..3),
    )
        .boxed()
}

fn raw_catalog() -> BoxedStrategy<Vec<CatalogActionDoc>> {
    prop::collection::vec(
        (
            action(),
            prop::bool::weighted(0.35),
            prop::collection::vec(action(), 0..3),
        ),
        0..5,
    )
    .prop_map(|entries| {
        entries
            .into_iter()
            .map(|(name, data_action, implies)| CatalogActionDoc {
                name,
                description: None,
                data_action,
                implies,
            })
            .collect()
    })
    .boxed()
}

pub(crate) type Policy = Vec<(String, Document)>;

#[allow(clippy::too_many_arguments)]
fn build(
    mut catalog: Vec<CatalogActionDoc>,
    raw_roles: Vec<RawRole>,
    raw_groups: Vec<Vec<String>>,
    raw_links: Vec<(String, Vec<(String, bool)>)>,
    raw_assignments: Vec<RawAssignment>,
    mut denies: Vec<DenyAssignmentDoc>,
    split: u64,
) -> Policy {
    // Catalog names are unique, case-insensitively.
    let mut seen = BTreeSet::new();
    catalog.retain(|c| seen.insert(c.name.to_ascii_lowercase()));
    let roles: Vec<RoleDoc> = raw_roles
        .into_iter()
        .enumerate()
        .map(|(i, r)| RoleDoc {
            name: format!("Role{i}"),
            id: r.id.then(|| format!("rid-{i}")),
            description: None,
            actions: r.actions,
            not_actions: r.not_actions,
            data_actions: r.data_actions,
            not_data_actions: r.not_data_actions,
            assignable_scopes: r.assignable,
        })
        .collect();
    // Group gi only contains groups gj with j > i: no cycles.
    let groups: Vec<GroupDoc> = raw_groups
        .into_iter()
        .enumerate()
        .map(|(i, members)| GroupDoc {
            id: format!("group:g{i}"),
            members: members
                .into_iter()
                .filter(|m| {
                    match m
                        .strip_prefix("group:g")
                        .and_then(|n| n.parse::<usize>().ok())
                    {
                        Some(j) => j > i,
                        None => true,
                    }
                })
                .collect(),
        })
        .collect();
    let mut linked = BTreeSet::new();
    let scope_links: Vec<ScopeLinkDoc> = raw_links
        .into_iter()
        .filter(|(child, _)| reference::key(child) != "/" && linked.insert(reference::key(child)))
        .map(|(child, parents)| {
            let depth = segments(&child);
            let parents = parents
                .into_iter()
                .map(|(p, anywhere)| {
                    if anywhere || segments(&p) < depth {
                        p
                    } else {
                        // the same spelling, cut to fewer segments than the child
                        let keep = segments(&p).min(depth - 1);
                        let cut: Vec<&str> =
                            p.split('/').filter(|s| !s.is_empty()).take(keep).collect();
                        format!("/{}", cut.join("/"))
                    }
                })
                .collect();
            ScopeLinkDoc {
                scope: child,
                parents,
            }
        })
        .collect();
    let assignments: Vec<AssignmentDoc> = raw_assignments
        .into_iter()
        .enumerate()
        .map(|(k, a)| {
            let r = a.role.index(roles.len());
            let role = match (&roles[r].id, a.by_id) {
                (Some(id), true) => id.clone(),
                _ => flip_case(&roles[r].name, a.role_spelling),
            };
            let (mut nb, mut na) = (a.not_before, a.not_after);
            if let (Some(b), Some(e)) = (nb, na)
                && e.0 < b.0
            {
                (nb, na) = (na, nb);
            }
            AssignmentDoc {
                principal: a.principal,
                role,
                scope: a.scope,
                id: a.id.then(|| format!("a{k}")),
                not_before: nb.map(|(h, s)| time_text(h, s)),
                not_after: na.map(|(h, s)| time_text(h, s)),
            }
        })
        .collect();
    for (i, d) in denies.iter_mut().enumerate() {
        d.name = format!("deny{i}");
    }

    // Spread the objects over two documents.
    let mut docs = [
        Document {
            version: Some(1),
            ..Document::default()
        },
        Document {
            version: Some(1),
            ..Document::default()
        },
    ];
    let mut bit = 0u32;
    let mut next = || {
        bit += 1;
        usize::from((split >> (bit % 64)) & 1 == 1)
    };
    for c in catalog {
        docs[next()].actions.push(c);
    }
    for r in roles {
        docs[next()].roles.push(r);
    }
    for g in groups {
        docs[next()].groups.push(g);
    }
    for l in scope_links {
        docs[next()].scope_links.push(l);
    }
    for a in assignments {
        docs[next()].assignments.push(a);
    }
    for d in denies {
        docs[next()].deny_assignments.push(d);
    }
    let [a, b] = docs;
    vec![("a.yaml".to_owned(), a), ("b.yaml".to_owned(), b)]
}

pub(crate) fn policy() -> BoxedStrategy<Policy> {
    (
        raw_catalog(),
        prop::collection::vec(raw_role(), 1..4),
        prop::collection::vec(
            prop::collection::vec(
                prop_oneof![2 => select(PEOPLE), 3 => select(GROUPS)].prop_map(str::to_owned),
                0..4,
            ),
            0..4,
        ),
        prop::collection::vec(raw_link(), 0..4),
        prop::collection::vec(raw_assignment(), 0..7),
        prop::collection::vec(raw_deny(), 0..3),
        any::<u64>(),
    )
        .prop_map(|(c, r, g, l, a, d, split)| build(c, r, g, l, a, d, split))
        .boxed()
}

#[derive(Debug, Clone)]
pub(crate) struct Request {
    pub(crate) principal: String,
    pub(crate) groups: Vec<String>,
    pub(crate) action: String,
    pub(crate) data: bool,
    pub(crate) scope: String,
    pub(crate) at: Instant,
}

fn request() -> BoxedStrategy<Request> {
    (
        prop_oneof![
            4 => select(PEOPLE),
            1 => select(GROUPS),
            1 => Just("user:nobody"),
        ],
        prop::collection::vec(select(GROUPS).prop_map(str::to_owned), 0..3),
        action(),
        prop::bool::weighted(0.35),
        scope_in(REQUEST_SCOPES),
        // half hours from -1 h to 5 h, give or take a nanosecond: every boundary is hit
        (-2i128..12, -1i128..=1),
    )
        .prop_map(
            |(principal, groups, action, data, scope, (half_hours, nanos))| Request {
                principal: principal.to_owned(),
                groups,
                action,
                data,
                scope,
                at: t0() + half_hours * HOUR / 2 + nanos,
            },
        )
        .boxed()
}

/// Requests aimed at the policy: most name a principal, group, scope or action that the
/// policy mentions (actions instantiated from its patterns), the rest are drawn at random.
pub(crate) fn request_for(docs: &Policy) -> BoxedStrategy<Request> {
    let mut principals: Vec<String> = vec!["user:alice".into()];
    let mut groups: Vec<String> = vec!["group:g0".into()];
    let mut scopes: Vec<String> = vec!["/s/s1".into()];
    let mut actions: Vec<(String, Option<bool>)> = vec![("P.A/x/read".into(), None)];
    let mut person_or_group = |id: &str| {
        if id.starts_with("group:") {
            groups.push(id.to_owned());
        } else if id.contains(':') && !id.ends_with(":*") {
            principals.push(id.to_owned());
        }
    };
    for (_, d) in docs {
        for a in &d.assignments {
            person_or_group(&a.principal);
            scopes.push(a.scope.clone());
        }
        for g in &d.groups {
            person_or_group(&g.id);
            g.members.iter().for_each(|m| person_or_group(m));
        }
        for x in &d.deny_assignments {
            x.principals
                .iter()
                .chain(&x.exclude_principals)
                .for_each(|p| person_or_group(p));
            scopes.push(x.scope.clone());
            for (list, data) in [
                (&x.actions, false),
                (&x.not_actions, false),
                (&x.data_actions, true),
                (&x.not_data_actions, true),
            ] {
                actions.extend(list.iter().map(|p| (p.clone(), Some(data))));
            }
        }
        for l in &d.scope_links {
            scopes.push(l.scope.clone());
            scopes.extend(l.parents.iter().cloned());
        }
        for r in &d.roles {
            for (list, data) in [
                (&r.actions, false),
                (&r.not_actions, false),
                (&r.data_actions, true),
                (&r.not_data_actions, true),
            ] {
                actions.extend(list.iter().map(|p| (p.clone(), Some(data))));
            }
        }
        for c in &d.actions {
            actions.push((c.name.clone(), Some(c.data_action)));
            actions.extend(c.implies.iter().map(|i| (i.clone(), None)));
        }
    }
    let aimed = (
        prop_oneof![
            3 => select(principals),
            2 => select(PEOPLE).prop_map(str::to_owned),
            1 => select(GROUPS).prop_map(str::to_owned),
            1 => Just("user:nobody".to_owned()),
        ],
        prop::collection::vec(
            prop_oneof![2 => select(groups), 1 => select(GROUPS).prop_map(str::to_owned)],
            0..3,
        ),
        prop_oneof![
            3 => instantiated(actions),
            1 => (action(), prop::bool::weighted(0.35)).boxed(),
        ],
        prop_oneof![
            3 => below(scopes),
            1 => scope_in(REQUEST_SCOPES),
        ],
        at(),
    )
        .prop_map(|(principal, groups, (action, data), scope, at)| Request {
            principal,
            groups,
            action,
            data,
            scope,
            at,
        });
    let (grants, denies) = targets(docs);
    // the target's scope, or (with links) any linked scope: it may reach the target's
    let linked: Vec<String> = docs
        .iter()
        .flat_map(|(_, d)| &d.scope_links)
        .map(|l| l.scope.clone())
        .collect();
    let targeted = |targets: Vec<Target>| {
        let linked = linked.clone();
        select(targets)
            .prop_flat_map(move |t| {
                let scope = if linked.is_empty() {
                    below(vec![t.scope])
                } else {
                    prop_oneof![2 => below(vec![t.scope]), 1 => below(linked.clone())].boxed()
                };
                // at one of the assignment's boundaries, give or take a nanosecond
                let at = if t.times.is_empty() {
                    at()
                } else {
                    prop_oneof![
                        1 => at(),
                        1 => (select(t.times), -1i128..=1).prop_map(|(t, d)| t + d),
                    ]
                    .boxed()
                };
                (select(t.who), instantiated(t.actions), scope, at).prop_map(
                    |((principal, groups), (action, data), scope, at)| Request {
                        principal,
                        groups,
                        action,
                        data,
                        scope,
                        at,
                    },
                )
            })
            .boxed()
    };
    let mut choices = vec![(2, aimed.boxed()), (1, request())];
    if !grants.is_empty() {
        choices.push((6, targeted(grants)));
    }
    if !denies.is_empty() {
        choices.push((4, targeted(denies)));
    }
    prop::strategy::Union::new_weighted(choices).boxed()
}

/// Half hours from -1 h to 6 h after [`t0`], give or take a nanosecond: every
/// `notBefore`/`notAfter` boundary is hit exactly, just before and just after.
pub(crate) fn at() -> BoxedStrategy<Instant> {
    (-2i128..12, -1i128..=1)
        .prop_map(|(half_hours, nanos)| t0() + half_hours * HOUR / 2 + nanos)
        .boxed()
}

/// Actions instantiated from patterns, each `*` replaced by a piece of an action name;
/// the data flag is the pattern's (or random when it has none).
pub(crate) fn instantiated(patterns: Vec<(String, Option<bool>)>) -> BoxedStrategy<(String, bool)> {
    const FILL: &[&str] = &["", "x", "/", "read", "write", "P.A/x/", "x/y/", "Q.B/"];
    (
        select(patterns),
        prop::collection::vec(select(FILL), 4),
        prop::bool::weighted(0.35),
    )
        .prop_map(|((pattern, data), fill, coin)| {
            let mut pieces = fill.into_iter().cycle();
            let mut out = String::new();
            for c in pattern.chars() {
                if c == '*' {
                    out.push_str(pieces.next().unwrap_or_default());
                } else {
                    out.push(c);
                }
            }
            if out.is_empty() {
                out.push_str("P.A/x/read");
            }
            (out, data.unwrap_or(coin))
        })
        .boxed()
}

/// One of the scopes or a scope below it, in the spelling given.
pub(crate) fn below(scopes: Vec<String>) -> BoxedStrategy<String> {
    const SUFFIX: &[&str] = &["", "", "/", "/t", "/deep/er"];
    (select(scopes), select(SUFFIX))
        .prop_map(|(s, suffix)| {
            let s = s.strip_suffix('/').unwrap_or(&s).to_owned();
            match (s.is_empty(), suffix.is_empty()) {
                (true, true) => "/".to_owned(),
                (_, true) => s,
                _ => s + suffix,
            }
        })
        .boxed()
}

/// What an assignment or a deny assignment is about: who it concerns (principal and token
/// groups), its scope, and the patterns that decide it.
#[derive(Debug, Clone)]
struct Target {
    who: Vec<(String, Vec<String>)>,
    /// The assignment's notBefore and notAfter.
    times: Vec<Instant>,
    scope: String,
    actions: Vec<(String, Option<bool>)>,
}

/// Who reaches one of `ids`: each id itself (a group as a token group) and everyone inside
/// a group, walking `members` downwards. Written independently of [`reference::subjects`]
/// (which walks upwards), so that a mistake there cannot hide the requests that would
/// show it.
fn reaching(docs: &Policy, ids: &[String]) -> Vec<(String, Vec<String>)> {
    let mut inside: BTreeSet<String> = BTreeSet::new();
    let mut work: Vec<String> = ids.to_vec();
    while let Some(id) = work.pop() {
        if inside.insert(id.clone()) {
            for (_, d) in docs {
                for g in d.groups.iter().filter(|g| g.id == id) {
                    work.extend(g.members.iter().cloned());
                }
            }
        }
    }
    let mut who = Vec::new();
    for id in inside {
        if id.starts_with("group:") {
            who.push(("user:nobody".to_owned(), vec![id.clone()]));
        }
        who.push((id, vec![]));
    }
    who
}

/// The targets of the assignments and of the deny assignments.
fn targets(docs: &Policy) -> (Vec<Target>, Vec<Target>) {
    let pool: Vec<&str> = PEOPLE
        .iter()
        .chain(GROUPS)
        .copied()
        .chain(["user:nobody"])
        .collect();
    let patterns = |lists: &[(&Vec<String>, bool)]| -> Vec<(String, Option<bool>)> {
        lists
            .iter()
            .flat_map(|&(list, data)| list.iter().map(move |p| (p.clone(), Some(data))))
            .collect()
    };
    let (mut grants, mut denies) = (Vec::new(), Vec::new());
    for (_, d) in docs {
        for a in &d.assignments {
            let who = reaching(docs, std::slice::from_ref(&a.principal));
            let Some(role) = reference::find_role(docs, &a.role) else {
                continue;
            };
            // what the role grants, twice as likely as what it removes
            let mut actions = patterns(&[
                (&role.actions, false),
                (&role.data_actions, true),
                (&role.actions, false),
                (&role.data_actions, true),
                (&role.not_actions, false),
                (&role.not_data_actions, true),
            ]);
            // and what the catalog implies for it
            actions.extend(
                reference::implied(docs, role)
                    .into_iter()
                    .map(|(a, data)| (a, Some(data))),
            );
            if !actions.is_empty() {
                let times = [&a.not_before, &a.not_after]
                    .into_iter()
                    .flatten()
                    .map(|t| parse_time(t).unwrap())
                    .collect();
                grants.push(Target {
                    who,
                    times,
                    scope: a.scope.clone(),
                    actions,
                });
            }
        }
        for x in &d.deny_assignments {
            let mut named: Vec<String> = Vec::new();
            for selector in &x.principals {
                match selector.strip_suffix('*') {
                    Some("") => named.extend(pool.iter().map(|p| (*p).to_owned())),
                    Some(kind) => named.extend(
                        pool.iter()
                            .filter(|p| p.starts_with(kind))
                            .map(|p| (*p).to_owned()),
                    ),
                    None => named.push(selector.clone()),
                }
            }
            let who = reaching(docs, &named);
            let actions = patterns(&[
                (&x.actions, false),
                (&x.not_actions, false),
                (&x.data_actions, true),
                (&x.not_data_actions, true),
            ]);
            if !who.is_empty() && !actions.is_empty() {
                denies.push(Target {
                    who,
                    times: vec![],
                    scope: x.scope.clone(),
                    actions,
                });
            }
        }
    }
    (grants, denies)
}

/// A policy with `n` requests aimed at it.
fn case(n: usize) -> BoxedStrategy<(Policy, Vec<Request>)> {
    policy()
        .prop_flat_map(move |docs| {
            let requests = prop::collection::vec(request_for(&docs), n);
            (Just(docs), requests)
        })
        .boxed()
}

// ---------------------------------------------------------------------------------------
// Comparing the two.
// ---------------------------------------------------------------------------------------

pub(crate) fn engine_check<'s>(
    snapshot: &'s Snapshot,
    r: &'s Request,
) -> iot_authz::policy::Decision<'s> {
    snapshot
        .check(&CheckRequest {
            principal: &r.principal,
            groups: &r.groups,
            action: &r.action,
            data_action: r.data,
            scope: &r.scope,
            at: r.at,
        })
        .unwrap_or_else(|e| panic!("valid request rejected: {e}: {r:?}"))
}

fn reference_check(docs: &Policy, r: &Request) -> reference::Decision {
    reference::check(
        docs,
        &reference::Request {
            principal: &r.principal,
            groups: &r.groups,
            action: &r.action,
            data: r.data,
            scope: &r.scope,
            at: r.at,
        },
    )
}

/// Engine and reference agree on the decision, and the engine's reason names a deny
/// assignment or a grant that the reference also found.
fn agree(docs: &Policy, snapshot: &Snapshot, r: &Request) -> Result<(), String> {
    reference_check(docs, r)
        .admits(&engine_check(snapshot, r))
        .map_err(|e| format!("{e}\nrequest: {r:?}"))
}

/// `cases` cases, or `PROPERTIES_SCALE` times as many (for a long hunt in release mode).
pub(crate) fn config(cases: u32) -> ProptestConfig {
    let scale = std::env::var("PROPERTIES_SCALE")
        .ok()
        .and_then(|s| s.parse::<u32>().ok())
        .unwrap_or(1);
    ProptestConfig {
        cases: cases.saturating_mul(scale),
        // never write proptest-regressions/ files into the repository
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config(512))]

    /// The main property: the engine decides every request exactly as SPEC §3 says, and it
    /// accepts exactly the policies that SPEC §2 allows (for the rules the generator can
    /// break).
    #[test]
    fn engine_agrees_with_reference((docs, requests) in case(8)) {
        let valid = reference::validate(&docs);
        let snapshot = match (compile_documents(&docs), valid) {
            (Ok(s), Ok(())) => s,
            (Err(_), Err(_)) => return Ok(()),
            (Err(e), Ok(())) => return Err(TestCaseError::fail(format!("engine rejects a valid policy: {e}"))),
            (Ok(_), Err(why)) => return Err(TestCaseError::fail(format!("engine accepts an invalid policy: {why}"))),
        };
        for r in &requests {
            agree(&docs, &snapshot, r).map_err(TestCaseError::fail)?;
        }
    }
}

// ---------------------------------------------------------------------------------------
// Focused properties.
// ---------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(config(2048))]

    /// The engine's pattern matcher is the naive glob, on a tiny alphabet where greedy
    /// search would go wrong if it could.
    #[test]
    fn pattern_matching_is_a_glob(
        pattern in "[abAB/*]{1,8}",
        text in "[abAB/]{0,10}",
    ) {
        let compiled = ActionPattern::parse(&pattern).unwrap();
        prop_assert_eq!(compiled.matches(&text), reference::glob(&pattern, &text), "pattern {:?} text {:?}", pattern, text);
    }
}

/// Every spelling of the same thing: ASCII case flipped, a trailing slash added or dropped.
fn respell_scope(scope: &str, bits: u64) -> String {
    let s = flip_case(scope, bits);
    match s.strip_suffix('/') {
        Some(t) if !t.is_empty() => t.to_owned(),
        _ if s != "/" => s + "/",
        _ => s,
    }
}

/// The policy with every scope, pattern, catalog name and role name respelled in ASCII
/// case (principals and role ids are left alone).
fn respell_policy(docs: &Policy, bits: u64) -> Policy {
    let mut k = 0u64;
    let mut next = || {
        k += 1;
        bits.rotate_left((k * 7 % 64) as u32) ^ k.wrapping_mul(0x9e37_79b9_7f4a_7c15)
    };
    let mut out = docs.clone();
    for (_, d) in &mut out {
        for c in &mut d.actions {
            c.name = flip_case(&c.name, next());
            c.implies.iter_mut().for_each(|i| *i = flip_case(i, next()));
        }
        for r in &mut d.roles {
            r.name = flip_case(&r.name, next());
            for list in [
                &mut r.actions,
                &mut r.not_actions,
                &mut r.data_actions,
                &mut r.not_data_actions,
            ] {
                list.iter_mut().for_each(|p| *p = flip_case(p, next()));
            }
            r.assignable_scopes
                .iter_mut()
                .flatten()
                .for_each(|s| *s = respell_scope(s, next()));
        }
        for l in &mut d.scope_links {
            l.scope = respell_scope(&l.scope, next());
            l.parents
                .iter_mut()
                .for_each(|p| *p = respell_scope(p, next()));
        }
        for a in &mut d.assignments {
            if !a.role.starts_with("rid-") {
                a.role = flip_case(&a.role, next());
            }
            a.scope = respell_scope(&a.scope, next());
        }
        for x in &mut d.deny_assignments {
            for list in [
                &mut x.actions,
                &mut x.not_actions,
                &mut x.data_actions,
                &mut x.not_data_actions,
            ] {
                list.iter_mut().for_each(|p| *p = flip_case(p, next()));
            }
            x.scope = respell_scope(&x.scope, next());
        }
    }
    out
}

fn same(a: &iot_authz::policy::Decision<'_>, b: &iot_authz::policy::Decision<'_>) -> bool {
    a.allowed == b.allowed && a.reason.kind() == b.reason.kind()
}

proptest! {
    #![proptest_config(config(256))]

    /// Scopes and actions compare ASCII case-insensitively, in requests and in policies;
    /// one trailing slash is ignored. (Engine against itself, no reference involved.)
    #[test]
    fn scopes_and_actions_are_case_insensitive(
        (docs, requests) in case(6),
        bits in any::<u64>(),
    ) {
        let Ok(snapshot) = compile_documents(&docs) else { return Ok(()) };
        let respelled = compile_documents(&respell_policy(&docs, bits))
            .map_err(|e| TestCaseError::fail(format!("respelled policy rejected: {e}")))?;
        for (i, r) in requests.iter().enumerate() {
            let bits = bits.rotate_left(i as u32 * 13);
            let mut r2 = r.clone();
            r2.action = flip_case(&r.action, bits);
            r2.scope = respell_scope(&r.scope, bits.rotate_left(29));
            let base = engine_check(&snapshot, r);
            let request_respelled = engine_check(&snapshot, &r2);
            let policy_respelled = engine_check(&respelled, r);
            prop_assert!(same(&base, &request_respelled), "{:?} vs {:?}: {:?} / {:?}", base, request_respelled, r, r2);
            prop_assert!(same(&base, &policy_respelled), "{:?} vs {:?} (policy respelled): {:?}", base, policy_respelled, r);
        }
    }

    /// A deny of `*` for everyone at `/` denies every request it covers; one with only
    /// `actions: ["*"]` leaves data actions alone; one that excludes `*` never applies.
    #[test]
    fn deny_everything_at_root_denies_everything(
        (docs, requests) in case(6),
        which in 0usize..2,
    ) {
        let Ok(before) = compile_documents(&docs) else { return Ok(()) };
        let deny = |name: &str, data: bool, exclude: Vec<String>| DenyAssignmentDoc {
            name: name.to_owned(),
            principals: vec!["*".into()],
            exclude_principals: exclude,
            actions: vec!["*".into()],
            data_actions: if data { vec!["*".into()] } else { vec![] },
            scope: "/".into(),
            ..DenyAssignmentDoc::default()
        };
        let with = |x: DenyAssignmentDoc| {
            let mut d = docs.clone();
            d[which].1.deny_assignments.push(x);
            compile_documents(&d).unwrap()
        };
        let all = with(deny("deny-all", true, vec![]));
        let control = with(deny("deny-control", false, vec![]));
        let nobody = with(deny("deny-nobody", true, vec!["*".into()]));
        for r in &requests {
            let base = engine_check(&before, r);
            let d = engine_check(&all, r);
            prop_assert!(!d.allowed && d.reason.kind() == "denyAssignment", "{:?} for {:?}", d, r);
            let c = engine_check(&control, r);
            if r.data {
                prop_assert!(same(&c, &base), "control-plane deny changed a data request: {:?} vs {:?}", c, base);
            } else {
                prop_assert!(!c.allowed && c.reason.kind() == "denyAssignment", "{:?} for {:?}", c, r);
            }
            prop_assert!(same(&engine_check(&nobody, r), &base), "a deny excluding `*` applied to {:?}", r);
        }
    }
}

// ---------------------------------------------------------------------------------------
// The generator is worth something: most policies compile and every outcome occurs.
// ---------------------------------------------------------------------------------------

#[test]
fn generated_cases_cover_every_outcome() {
    let mut runner = TestRunner::deterministic();
    let strategy = case(8);
    let (mut compiled, mut total) = (0usize, 0usize);
    let mut kinds = std::collections::BTreeMap::<&str, usize>::new();
    let mut linked = 0usize;
    let mut grouped = 0usize;
    for _ in 0..300 {
        let (docs, requests) = strategy.new_tree(&mut runner).unwrap().current();
        total += 1;
        let Ok(snapshot) = compile_documents(&docs) else {
            continue;
        };
        compiled += 1;
        linked += usize::from(docs.iter().any(|(_, d)| !d.scope_links.is_empty()));
        grouped += usize::from(docs.iter().any(|(_, d)| !d.groups.is_empty()));
        for r in &requests {
            *kinds
                .entry(engine_check(&snapshot, r).reason.kind())
                .or_default() += 1;
        }
    }
    eprintln!(
        "generator: {compiled}/{total} policies compile ({linked} with links, {grouped} with groups); outcomes {kinds:?}"
    );
    assert!(
        compiled * 10 >= total * 7,
        "only {compiled} of {total} generated policies compile"
    );
    let decided: usize = kinds.values().sum();
    for (kind, percent) in [
        ("roleAssignment", 15),
        ("denyAssignment", 5),
        ("noGrant", 15),
    ] {
        let n = kinds.get(kind).copied().unwrap_or(0);
        assert!(
            n * 100 >= decided * percent,
            "{kind}: only {n} of {decided} decisions (want {percent}%)"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Unit tests of the reference itself and of spec examples.
// ---------------------------------------------------------------------------------------

#[test]
fn reference_glob_follows_the_spec_examples() {
    use reference::glob;
    assert!(glob("*/read", "Microsoft.Edge/targets/read"));
    assert!(glob(
        "Microsoft.Security/*",
        "microsoft.security/alerts/READ"
    ));
    assert!(!glob("Microsoft.Security/*", "Microsoft.SecurityX"));
    assert!(glob("a*b*a", "abba"));
    assert!(!glob("a*a", "a"));
    assert!(glob("*", ""));
    assert!(!glob("a", ""));
}

#[test]
fn reference_ancestors_follow_links_and_prefixes() {
    let doc = Document {
        version: Some(1),
        scope_links: vec![
            ScopeLinkDoc {
                scope: "/S/s1/rg/R1/".into(),
                parents: vec!["/providers/sg/G1".into()],
            },
            ScopeLinkDoc {
                scope: "/providers/SG/g1".into(),
                parents: vec!["/providers/sg/g2".into()],
            },
        ],
        ..Document::default()
    };
    let docs = vec![("a".to_owned(), doc)];
    let got = reference::ancestors(&docs, "/s/s1/rg/r1/t/T1/");
    let want: BTreeSet<String> = [
        "/",
        "/s",
        "/s/s1",
        "/s/s1/rg",
        "/s/s1/rg/r1",
        "/s/s1/rg/r1/t",
        "/s/s1/rg/r1/t/t1",
        "/providers",
        "/providers/sg",
        "/providers/sg/g1",
        "/providers/sg/g2",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    assert_eq!(got, want);
}

/// A hand-written policy exercising each clause, checked against both implementations.
#[test]
fn engine_and_reference_agree_on_a_hand_written_policy() {
    let yaml = r#"
version: 1
actions:
  - name: P.A/x/write
    implies: [P.A/x/read]
  - name: P.A/x/read
    implies: [P.A/blob/read]
  - name: P.A/blob/read
    dataAction: true
roles:
  - name: Writer
    actions: ["p.a/X/write"]
  - name: Reader
    actions: ["*/read"]
    notActions: ["Q.B/*"]
groups:
  - id: group:inner
    members: [user:alice]
  - id: group:outer
    members: [group:inner]
scopeLinks:
  - scope: /s/s1/rg/r1
    parents: [/providers/sg/g1]
assignments:
  - {principal: group:outer, role: writer, scope: /providers/SG/g1/, id: w1}
  - {principal: user:bob, role: Reader, scope: /s, notBefore: "2026-01-01T01:00:00Z", notAfter: "2026-01-01T02:00:00Z"}
denyAssignments:
  - name: no-devices
    principals: ["device:*"]
    actions: ["*"]
    scope: /
  - name: no-bob-data
    principals: [user:bob]
    dataActions: ["*"]
    scope: /s/s1
"#;
    let doc: Document = parse_yaml(yaml);
    let docs = vec![("hand.yaml".to_owned(), doc)];
    let snapshot = compile_documents(&docs).unwrap();
    // principal, token groups, action, control/data, scope, half hours after t0, expected
    let table = "
        user:alice  -            P.A/x/write    c /s/s1/rg/r1/t/t1 0 allow roleAssignment
        user:alice  -            p.a/x/READ     c /S/S1/RG/R1      0 allow roleAssignment
        user:alice  -            P.A/blob/read  d /s/s1/rg/r1/     0 allow roleAssignment
        user:alice  -            P.A/blob/read  c /s/s1/rg/r1      0 deny  noGrant
        user:alice  -            P.A/x/write    c /s/s1/rg/r2      0 deny  noGrant
        user:Alice  -            P.A/x/write    c /s/s1/rg/r1      0 deny  noGrant
        user:x      group:inner  P.A/x/write    c /s/s1/rg/r1      0 allow roleAssignment
        device:d    group:outer  P.A/x/write    c /s/s1/rg/r1      0 deny  denyAssignment
        device:d    group:outer  P.A/blob/read  d /s/s1/rg/r1      0 allow roleAssignment
        user:bob    -            Q.C/y/read     c /s/s2            1 deny  noGrant
        user:bob    -            Q.C/y/read     c /s/s2            2 allow roleAssignment
        user:bob    -            Q.C/y/read     c /s/s2            3 allow roleAssignment
        user:bob    -            Q.C/y/read     c /s/s2            4 deny  noGrant
        user:bob    -            Q.B/y/read     c /s/s2            2 deny  noGrant
        user:bob    -            P.A/blob/read  d /s/s1/x          2 deny  denyAssignment
    ";
    for line in table.lines().filter(|l| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let [
            principal,
            groups,
            action,
            data,
            scope,
            half_hours,
            expect,
            kind,
        ] = f[..]
        else {
            panic!("bad line {line}");
        };
        let r = Request {
            principal: principal.into(),
            groups: groups
                .split(',')
                .filter(|g| *g != "-")
                .map(str::to_owned)
                .collect(),
            action: action.into(),
            data: data == "d",
            scope: scope.into(),
            at: t0() + half_hours.parse::<i128>().unwrap() * HOUR / 2,
        };
        let want = reference_check(&docs, &r);
        assert_eq!(
            (want.allowed, want.kind),
            (expect == "allow", kind),
            "reference on {r:?}"
        );
        agree(&docs, &snapshot, &r).unwrap();
    }
}

/// Parses a YAML document through the crate's own source loader.
fn parse_yaml(yaml: &str) -> Document {
    iot_authz::policy::SourceDocument::new("hand.yaml", yaml.as_bytes())
        .parse()
        .unwrap()
}
