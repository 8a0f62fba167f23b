//! The store's incremental path: a base policy plus an overlay of assignment writes
//! decides every request exactly as a fresh compile of the same documents does, decision
//! and reason (which assignment, which subject), and refuses exactly the writes a fresh
//! compile refuses.
//!
//! The base is a random policy (the generator of `properties.rs`: roles, groups, scope
//! links, deny assignments, time windows) whose assignments of one document are moved to
//! a last "store" document, keyed by id in key order as the store lists them. Then a
//! random sequence of writes (create, rewrite, delete; to known and new principals, at
//! known and new scopes) is applied through `OverlayBase::apply`, and after every write
//! the overlay is compared with `compile_documents` of the files plus the store as it is.

use std::collections::BTreeMap;

use iot_authz::policy::compile_documents;
use iot_authz::policy::document::{AssignmentDoc, Document};
use iot_authz::policy::overlay::OverlayBase;
use iot_authz::policy::snapshot::Snapshot;
use proptest::prelude::*;
use proptest::sample::{Index, select};

use crate::properties::{
    Policy, RawAssignment, Request, config, engine_check, flip_case, policy, raw_assignment,
    request_for, time_text,
};

/// Principals and scopes no generated base policy names.
const NEW_PRINCIPALS: &[&str] = &[
    "user:new",
    "user:New",
    "group:fresh",
    "group:ext",
    "device:d9",
];
const NEW_SCOPES: &[&str] = &[
    "/s/s1/rg/r1/t/t1/deep",
    "/s/s1/rg",
    "/s/s1/rg/r1/t",
    "/providers/sg/new",
    "/providers/sg/g1/n",
    "/s/s2/rg",
    "/zz",
    "/s/S1/RG/",
];

/// Token groups that assignments may name but no group definition does: numbered by
/// their first assignment, as the requesting principal is, so the order between them
/// depends on the writes.
const TOKEN_GROUPS: &[&str] = &["group:fresh", "group:ext", "group:G0"];

/// Store ids the writes pick from (some of the base's, some new).
const IDS: usize = 10;

fn store_id(n: usize) -> String {
    format!("k{n:02}")
}

/// One write: to key `id`, an assignment (`None`: delete), maybe to a new principal or
/// at a new scope.
#[derive(Debug, Clone)]
struct Write {
    id: usize,
    assignment: Option<(RawAssignment, Option<Index>, Option<Index>)>,
}

fn write() -> BoxedStrategy<Write> {
    (
        0..IDS,
        prop::option::weighted(
            0.7,
            (
                raw_assignment(),
                prop::option::weighted(0.4, any::<Index>()),
                prop::option::weighted(0.3, any::<Index>()),
            ),
        ),
    )
        .prop_map(|(id, assignment)| Write { id, assignment })
        .boxed()
}

/// The assignment document of a raw assignment over the policy's roles.
fn assignment(
    docs: &Policy,
    id: &str,
    w: &(RawAssignment, Option<Index>, Option<Index>),
) -> AssignmentDoc {
    let (a, new_principal, new_scope) = w;
    let roles: Vec<_> = docs.iter().flat_map(|(_, d)| d.roles.iter()).collect();
    let r = &roles[a.role.index(roles.len())];
    let role = match (&r.id, a.by_id) {
        (Some(id), true) => id.clone(),
        _ => flip_case(&r.name, a.role_spelling),
    };
    let (mut nb, mut na) = (a.not_before, a.not_after);
    if let (Some(b), Some(e)) = (nb, na)
        && e.0 < b.0
    {
        (nb, na) = (na, nb);
    }
    AssignmentDoc {
        principal: new_principal
            .map(|i| NEW_PRINCIPALS[i.index(NEW_PRINCIPALS.len())].to_owned())
            .unwrap_or_else(|| a.principal.clone()),
        role,
        scope: new_scope
            .map(|i| NEW_SCOPES[i.index(NEW_SCOPES.len())].to_owned())
            .unwrap_or_else(|| a.scope.clone()),
        id: Some(id.to_owned()),
        not_before: nb.map(|(h, s)| time_text(h, s)),
        not_after: na.map(|(h, s)| time_text(h, s)),
    }
}

/// The files (the generated documents without the second one's assignments) and the
/// store (those assignments, keyed `k00`, `k01`, ... in a shuffled order).
fn split(mut docs: Policy, shuffle: u64) -> (Policy, BTreeMap<String, AssignmentDoc>) {
    let moved = std::mem::take(&mut docs[1].1.assignments);
    let mut store = BTreeMap::new();
    for (n, mut a) in moved.into_iter().enumerate() {
        let id = store_id((n + shuffle as usize) % IDS);
        if store.contains_key(&id) {
            continue;
        }
        a.id = Some(id.clone());
        store.insert(id, a);
    }
    // Ids in the files never collide with the store's (`a0`.. against `k00`..).
    (docs, store)
}

/// The files plus the store as one policy, the store last, in key order.
fn documents(files: &Policy, store: &BTreeMap<String, AssignmentDoc>) -> Policy {
    let mut docs = files.clone();
    docs.push((
        "etcd:/iot-authz/".to_owned(),
        Document {
            version: Some(1),
            assignments: store.values().cloned().collect(),
            ..Document::default()
        },
    ));
    docs
}

/// Requests aimed at the policy, some of them by a new principal or with a new group.
fn requests(docs: &Policy) -> BoxedStrategy<Vec<Request>> {
    prop::collection::vec(
        (
            request_for(docs),
            prop::option::weighted(0.25, select(NEW_PRINCIPALS)),
            prop::option::weighted(0.35, select(TOKEN_GROUPS)),
            prop::option::weighted(0.2, select(NEW_SCOPES)),
        )
            .prop_map(|(mut r, p, g, s)| {
                if let Some(p) = p {
                    r.principal = p.to_owned();
                }
                if let Some(g) = g {
                    r.groups.push(g.to_owned());
                }
                if let Some(s) = s {
                    r.scope = s.to_owned();
                }
                r
            }),
        16,
    )
    .boxed()
}

#[allow(clippy::type_complexity)]
fn case() -> BoxedStrategy<(Policy, u64, Vec<Write>, Vec<Request>)> {
    policy()
        .prop_flat_map(|docs| {
            let requests = requests(&docs);
            (
                Just(docs),
                any::<u64>(),
                prop::collection::vec(write(), 1..8),
                requests,
            )
        })
        .boxed()
}

/// The overlay and a fresh compile decide every request alike, reason included.
fn compare(fresh: &Snapshot, overlay: &Snapshot, requests: &[Request]) -> Result<(), String> {
    for r in requests {
        let a = engine_check(fresh, r);
        let b = engine_check(overlay, r);
        if a != b {
            return Err(format!(
                "fresh compile: {a:?}\noverlay:       {b:?}\nrequest: {r:?}"
            ));
        }
        // The queries the overlay answers itself.
        let who = |s: &Snapshot| {
            s.who_can(&r.action, r.data, &r.scope, r.at)
                .map(|w| format!("{w:?}"))
        };
        if who(fresh) != who(overlay) {
            return Err(format!(
                "WhoCan differs: {:?} against {:?}\nrequest: {r:?}",
                who(fresh),
                who(overlay)
            ));
        }
        for role in fresh.roles() {
            let assign = |s: &Snapshot| s.check_assign(&r.principal, &role.name, &r.scope, r.at);
            if assign(fresh) != assign(overlay) {
                return Err(format!(
                    "CheckAssign of {} differs: {:?} against {:?}\nrequest: {r:?}",
                    role.name,
                    assign(fresh),
                    assign(overlay)
                ));
            }
        }
        let (from, until) = fresh.validity(r.at);
        let (f, u) = overlay.validity(r.at);
        if f < from || u > until {
            return Err(format!(
                "the overlay's decision is valid longer than the fresh compile's: {r:?}"
            ));
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn an_overlay_decides_as_a_fresh_compile((docs, shuffle, writes, requests) in case()) {
        let (files, mut store) = split(docs, shuffle);
        let Ok(base) = compile_documents(&documents(&files, &store)) else {
            return Ok(());
        };
        let prepared = OverlayBase::new(&base, store.len());
        // The base itself, through an empty overlay.
        let empty = prepared.apply([], None).map_err(|e| TestCaseError::fail(e.0))?;
        compare(&base, &empty, &requests).map_err(TestCaseError::fail)?;
        let mut changes: BTreeMap<String, Option<AssignmentDoc>> = BTreeMap::new();
        // The last overlay accepted: each write is also laid over it, as the store does,
        // reusing what it found for every change but the one written.
        let mut last: Option<Snapshot> = None;
        let all = documents(&files, &store);
        for w in &writes {
            let id = store_id(w.id);
            let value = w.assignment.as_ref().map(|a| assignment(&all, &id, a));
            let before = (store.get(&id).cloned(), changes.get(&id).cloned());
            match &value {
                Some(a) => store.insert(id.clone(), a.clone()),
                None => store.remove(&id),
            };
            changes.insert(id.clone(), value);
            let fresh = compile_documents(&documents(&files, &store));
            let incremental = prepared.apply(changes.iter().map(|(k, v)| (k.as_str(), v.as_ref())), None);
            let stacked = prepared.apply_over(
                last.as_ref(),
                |written| written == id,
                changes.iter().map(|(k, v)| (k.as_str(), move || Ok(v.as_ref()))),
                None,
            );
            match (fresh, incremental) {
                (Ok(fresh), Ok(overlay)) => {
                    prop_assert_eq!(fresh.counts.assignments, overlay.counts.assignments);
                    compare(&fresh, &overlay, &requests).map_err(TestCaseError::fail)?;
                    let stacked = stacked.map_err(|e| {
                        TestCaseError::fail(format!("laid over the last overlay, the write is refused: {}", e.0))
                    })?;
                    prop_assert_eq!(overlay.counts, stacked.counts);
                    compare(&fresh, &stacked, &requests)
                        .map_err(|e| TestCaseError::fail(format!("laid over the last overlay: {e}")))?;
                    last = Some(stacked);
                }
                (Err(_), Err(_)) => {
                    prop_assert!(stacked.is_err(), "laid over the last overlay, an invalid write is accepted");
                    // Refused, as the store refuses it: the write is undone.
                    match before.0 {
                        Some(a) => store.insert(id.clone(), a),
                        None => store.remove(&id),
                    };
                    match before.1 {
                        Some(c) => changes.insert(id, c),
                        None => changes.remove(&id),
                    };
                }
                (Ok(_), Err(e)) => {
                    return Err(TestCaseError::fail(format!("the overlay refuses a valid write: {}", e.0)));
                }
                (Err(e), Ok(_)) => {
                    return Err(TestCaseError::fail(format!("the overlay accepts an invalid write: {e}")));
                }
            }
        }
    }
}

/// Found by the property above: with two deny assignments that apply, at `/p/sg` and at
/// `/P/SG/G1/`, the one named depended on how the scopes were numbered, so an unrelated
/// grant at a new scope (`/p/sg/g1`) changed it in a fresh compile but not in the overlay.
/// The first in policy order is named, whatever the scopes.
#[test]
fn the_deny_named_is_the_first_in_policy_order_whatever_the_scopes() {
    use iot_authz::policy::{CheckRequest, Reason};

    let denies = r#"version: 1
roles:
  - {name: R, actions: ["*"]}
denyAssignments:
  - {name: deny0, principals: ["device:d1"], actions: ["*/x/*"], scope: /P/SG}
  - {name: deny1, principals: ["device:d1"], actions: ["*/write"], scope: /P/SG/G1/}
"#;
    let with_grant = format!(
        "{denies}assignments:\n  - {{principal: 'user:alice', role: R, scope: /p/sg/g1}}\n"
    );
    for text in [denies.to_owned(), with_grant] {
        let snapshot =
            iot_authz::policy::compile_sources(&[iot_authz::policy::SourceDocument::new(
                "test.yaml",
                text.as_bytes(),
            )])
            .unwrap();
        for scope in ["/P/SG/G1/deep/er", "/p/sg/g1", "/p/sg/g1/"] {
            let decision = snapshot
                .check(&CheckRequest {
                    principal: "device:d1",
                    groups: &[],
                    action: "P.A/x//write",
                    data_action: false,
                    scope,
                    at: iot_authz::policy::syntax::now(),
                })
                .unwrap();
            assert!(!decision.allowed);
            assert!(
                matches!(decision.reason, Reason::DenyAssignment { deny_assignment } if deny_assignment == "deny0"),
                "{scope}: {:?}\n{text}",
                decision.reason
            );
        }
    }
}
