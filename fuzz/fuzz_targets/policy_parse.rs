//! Policy documents (SPEC §2): arbitrary bytes read as a YAML document and as a JSON
//! document, parsed, validated and compiled, alone and after a small base document.
//!
//! Checked:
//! - parsing and compiling never panic (errors are fine);
//! - every problem message and object is free of raw control characters (ARCHITECTURE:
//!   user text reaches messages only through `syntax::escape`);
//! - a document that does not parse never compiles;
//! - when the document compiles, a few requests derived from it (its principals, groups,
//!   scopes and the scopes below them, actions instantiated from its patterns, its time
//!   boundaries) are evaluated: `Snapshot::check` agrees with the reference model of
//!   SPEC §3 (`tests/reference/mod.rs`) on allow/deny and reason, names a grant or deny the
//!   reference also finds, and holds over the whole `validity` window; each route is
//!   driven through `check_http` and agrees with `check`; ListPermissions, WhoCan and
//!   CheckAssign agree with `check`; an explanation (`explain_check`) carries the same
//!   decision, and on a `noGrant` no near miss is an assignment that grants; the policy's
//!   own `tests:` cases run without panicking.

#![no_main]

use iot_authz::policy::document::Document;
use iot_authz::policy::queries::HttpRequest;
use iot_authz::policy::snapshot::{CheckRequest, Snapshot};
use iot_authz::policy::syntax::{Instant, parse_time};
use iot_authz::policy::{
    MissReason, Reason, SourceDocument, compile_documents, compile_sources,
};
use libfuzzer_sys::fuzz_target;

#[path = "common/mod.rs"]
mod common;

#[allow(dead_code, clippy::all)]
#[path = "../../tests/reference/mod.rs"]
mod reference;

/// The document a fuzzed one is merged with: one of each kind of object.
const BASE: &str = r#"version: 1
actions:
  - {name: Fleet/devices/update, implies: [Fleet/devices/read]}
  - {name: Fleet/telemetry/read, dataAction: true}
roles:
  - {name: Reader, id: r-1, actions: ['*/read']}
  - {name: Editor, actions: ['Fleet/*'], notActions: [Fleet/devices/delete], dataActions: ['Fleet/telemetry/*'], assignableScopes: [/apps]}
groups:
  - {id: 'group:ops', members: ['user:ann', 'group:leads']}
  - {id: 'group:leads', members: ['user:lee']}
scopeLinks:
  - {scope: /apps/fleet/lines/l1, parents: [/sg/north]}
assignments:
  - {id: a-1, principal: 'group:ops', role: Reader, scope: /apps/fleet}
  - {id: a-2, principal: 'user:lee', role: Editor, scope: /apps/fleet, notBefore: '2026-01-01T00:00:00Z', notAfter: '2027-01-01T00:00:00Z'}
  - {id: a-3, principal: 'user:ann', role: R-1, scope: /sg/north}
denyAssignments:
  - {name: no-deletes, principals: ['application:*', 'group:leads'], excludePrincipals: ['user:ann'], actions: ['*/delete'], scope: /apps}
routes:
  - {methods: [GET], path: '/apps/{app}/devices/{device}', action: Fleet/devices/read, scope: '/apps/{app}/devices/{device}'}
  - {methods: [POST], path: '/svc/{m}', action: 'Svc/{m}', scope: '/apps/{header:x-app}', mode: shadow}
  - {methods: ['*'], path: /healthz, public: true}
tests:
  - {name: ann reads, principal: 'user:ann', action: Fleet/devices/read, scope: /apps/fleet/d1, expect: allow}
  - {name: ann by path, method: GET, path: /apps/fleet/devices/d1, headers: {x-iotauthz-principal: 'user:ann'}, expect: allow}
"#;

fn base_documents() -> &'static [(String, Document)] {
    static DOCS: std::sync::OnceLock<Vec<(String, Document)>> = std::sync::OnceLock::new();
    DOCS.get_or_init(|| {
        let doc = SourceDocument::new("base.yaml", BASE)
            .parse()
            .expect("the base document parses");
        compile_documents(&[("base.yaml".to_owned(), doc.clone())])
            .expect("the base document compiles");
        vec![("base.yaml".to_owned(), doc)]
    })
}

/// A fixed "now" so that runs are reproducible.
const NOW: Instant = 1_780_000_000_000_000_000; // 2026-05-28

fn push_unique(out: &mut Vec<String>, value: &str, cap: usize) {
    if out.len() < cap && !out.iter().any(|v| v == value) {
        out.push(value.to_owned());
    }
}

struct Derived {
    principals: Vec<String>,
    groups: Vec<String>,
    scopes: Vec<String>,
    actions: Vec<String>,
    times: Vec<Instant>,
}

fn derive(docs: &[(String, Document)]) -> Derived {
    const CAP: usize = 8;
    let mut principals = Vec::new();
    let mut groups = Vec::new();
    let mut scopes = vec!["/".to_owned()];
    let mut actions = Vec::new();
    let mut times = vec![NOW];
    let pattern = |p: &str, actions: &mut Vec<String>| {
        push_unique(actions, &p.replace('*', "x"), CAP);
        if p.contains('*') {
            push_unique(actions, &p.replace('*', ""), CAP);
            push_unique(actions, &p.replace('*', "a/B"), CAP);
        }
    };
    // The last document first: after the demo policy, the fuzzed document is the last one.
    for (_, d) in docs.iter().rev() {
        for a in &d.assignments {
            push_unique(&mut principals, &a.principal, CAP);
            push_unique(&mut scopes, &a.scope, CAP);
            push_unique(
                &mut scopes,
                &format!("{}/Child", a.scope.trim_end_matches('/')),
                CAP,
            );
            for t in [&a.not_before, &a.not_after].into_iter().flatten() {
                if let Ok(t) = parse_time(t) {
                    if times.len() < 6 {
                        times.push(t);
                        times.push(t.saturating_sub(1));
                    }
                }
            }
        }
        for g in &d.groups {
            push_unique(&mut groups, &g.id, CAP);
            for m in &g.members {
                push_unique(&mut principals, m, CAP);
            }
        }
        for x in &d.deny_assignments {
            push_unique(&mut scopes, &x.scope, CAP);
            for p in x.principals.iter().chain(&x.exclude_principals) {
                if !p.ends_with('*') {
                    push_unique(&mut principals, p, CAP);
                }
            }
            for p in x
                .actions
                .iter()
                .chain(&x.data_actions)
                .chain(&x.not_actions)
            {
                pattern(p, &mut actions);
            }
        }
        for l in &d.scope_links {
            push_unique(&mut scopes, &l.scope, CAP);
            for p in &l.parents {
                push_unique(&mut scopes, p, CAP);
            }
        }
        for r in &d.roles {
            for p in r
                .actions
                .iter()
                .chain(&r.data_actions)
                .chain(&r.not_actions)
                .chain(&r.not_data_actions)
            {
                pattern(p, &mut actions);
            }
        }
        for c in &d.actions {
            push_unique(&mut actions, &c.name, CAP);
            for i in &c.implies {
                push_unique(&mut actions, i, CAP);
            }
        }
    }
    push_unique(&mut principals, "user:fuzz-nobody", CAP + 1);
    push_unique(&mut actions, "Fuzz/nothing/read", CAP + 1);
    Derived {
        principals,
        groups,
        scopes,
        actions,
        times,
    }
}

/// `Snapshot::check` against the reference model on one request.
fn check_against_reference(
    snapshot: &Snapshot,
    docs: &[(String, Document)],
    principal: &str,
    groups: &[String],
    action: &str,
    data: bool,
    scope: &str,
    at: Instant,
) {
    let req = CheckRequest {
        principal,
        groups,
        action,
        data_action: data,
        scope,
        at,
    };
    let Ok(decision) = snapshot.check(&req) else {
        return; // not a valid request (e.g. a policy-side id the engine refuses as input)
    };
    let expected = reference::check(
        docs,
        &reference::Request {
            principal,
            groups,
            action,
            data,
            scope,
            at,
        },
    );
    let context = || {
        format!(
            "principal {principal:?} groups {groups:?} action {action:?} data {data} scope {scope:?} at {at}: \
             engine {decision:?}, reference allowed={} kind={} denies={:?} grants={:?}",
            expected.allowed, expected.kind, expected.denies, expected.grants
        )
    };
    if let Err(e) = expected.admits(&decision) {
        panic!("{e}: {}", context());
    }
    // An explanation never changes the decision; for noGrant, nothing held grants.
    let explained = snapshot
        .explain_check(&req)
        .unwrap_or_else(|e| panic!("explain refused what check accepted ({e}): {}", context()));
    assert_eq!(explained.decision, decision, "explain changed the decision: {}", context());
    if decision.reason == Reason::NoGrant {
        assert!(
            !explained
                .near_misses
                .iter()
                .any(|m| matches!(m.reason, MissReason::OverriddenByDeny { .. })),
            "a noGrant near miss that grants: {:?}: {}",
            explained.near_misses,
            context()
        );
    }
    // A decision holds over its whole validity window (what the decision cache relies on).
    let verdict = snapshot.verdict(&req).ok();
    let (from, until) = snapshot.validity(at);
    assert!(
        from <= at && (at < until || until == Instant::MAX),
        "validity window {from}..{until} misses {at}"
    );
    for edge in [from, until.saturating_sub(1)] {
        if edge != Instant::MIN {
            let other = snapshot.verdict(&CheckRequest { at: edge, ..req }).ok();
            assert_eq!(
                verdict,
                other,
                "decision changes inside its validity window at {edge}: {}",
                context()
            );
        }
    }
}

fn route_path(template: &str) -> String {
    template
        .split('/')
        .map(|seg| {
            if seg.starts_with('{') && seg.ends_with("...}") {
                "r1/r2"
            } else if seg.starts_with('{') {
                "c1"
            } else {
                seg
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

fn header_names(template: &str) -> Vec<String> {
    template
        .split("{header:")
        .skip(1)
        .filter_map(|s| s.split_once('}').map(|(n, _)| n.to_ascii_lowercase()))
        .collect()
}

/// `reference_checks`: how many derived requests also go to the reference model (which is
/// slow on the large demo policy).
fn exercise(snapshot: &Snapshot, docs: &[(String, Document)], reference_checks: usize) {
    let d = derive(docs);
    let token_groups: Vec<Vec<String>> = std::iter::once(Vec::new())
        .chain(d.groups.iter().take(2).map(|g| vec![g.clone()]))
        .collect();
    let combos = d.principals.len() * d.scopes.len() * d.actions.len() * 2;
    for k in 0..combos.min(96) {
        let principal = &d.principals[k % d.principals.len()];
        let scope = &d.scopes[(k * 7 + k / d.principals.len()) % d.scopes.len()];
        let action = &d.actions[(k * 13 + 3 + k / 5) % d.actions.len()];
        let data = k % 2 == 1;
        let at = d.times[(k / 2) % d.times.len()];
        let groups = &token_groups[(k / 3) % token_groups.len()];
        if k < reference_checks {
            check_against_reference(snapshot, docs, principal, groups, action, data, scope, at);
        } else {
            let _ = snapshot.check(&CheckRequest {
                principal,
                groups,
                action,
                data_action: data,
                scope,
                at,
            });
        }
    }

    // Routes through check_http, with an explicit principal and through the identity
    // header; the answer must agree with check on the route's (action, scope).
    for (_, doc) in docs {
        for route in doc.routes.iter().take(8) {
            let method = route
                .methods
                .iter()
                .find(|m| *m != "*")
                .map_or("GET", String::as_str);
            let path = route_path(&route.path);
            let mut headers: Vec<(String, String)> = Vec::new();
            for t in route.action.iter().chain(&route.scope) {
                for name in header_names(t) {
                    headers.push((name, "h1".into()));
                }
            }
            for principal in d.principals.iter().take(2) {
                let mut with_identity = headers.clone();
                for name in snapshot.identity.identity_headers() {
                    with_identity.push((name.to_owned(), principal.clone()));
                }
                for (explicit, hs) in [(Some(principal.as_str()), &headers), (None, &with_identity)]
                {
                    let Ok(out) = snapshot.check_http(&HttpRequest {
                        method,
                        path: &path,
                        headers: hs,
                        principal: explicit,
                        groups: &[],
                        metadata: None,
                        peer_principal: None,
                        verifier: None,
                        at: NOW,
                    }) else {
                        continue;
                    };
                    assert_eq!(
                        out.decision.allowed,
                        out.status() == 200,
                        "status {} for {:?}",
                        out.status(),
                        out.decision
                    );
                    if let (Some(route), Some(action), Some(scope), Some(p), 200 | 403) = (
                        out.route,
                        out.action.as_deref(),
                        out.scope.as_deref(),
                        out.principal.as_deref(),
                        out.status(),
                    ) {
                        if route.public {
                            continue;
                        }
                        let direct = snapshot.check(&CheckRequest {
                            principal: p,
                            groups: &[],
                            action,
                            data_action: route.data_action,
                            scope,
                            at: NOW,
                        });
                        assert_eq!(
                            direct.map(|x| x.allowed).ok(),
                            Some(out.decision.allowed),
                            "check_http and check disagree on {method} {path}"
                        );
                    }
                }
            }
        }
    }

    // ListPermissions, WhoCan, CheckAssign: no panic, and consistent with check.
    for (i, principal) in d.principals.iter().take(3).enumerate() {
        let scope = &d.scopes[i % d.scopes.len()];
        if let Ok(perms) = snapshot.permissions(principal, &[], scope, NOW) {
            for p in perms.iter().take(16) {
                let allowed = snapshot.check(&CheckRequest {
                    principal,
                    groups: &[],
                    action: p.action,
                    data_action: p.data_action,
                    scope,
                    at: NOW,
                });
                assert_eq!(
                    allowed.map(|x| x.allowed).ok(),
                    Some(true),
                    "ListPermissions lists {} for {principal} at {scope}, check denies it",
                    p.action
                );
            }
        }
        for role in docs.iter().flat_map(|(_, d)| &d.roles).take(2) {
            let _ = snapshot.check_assign(principal, &role.name, scope, NOW);
        }
    }
    for (i, action) in d.actions.iter().take(3).enumerate() {
        let scope = &d.scopes[i % d.scopes.len()];
        if let Ok(who) = snapshot.who_can(action, false, scope, NOW) {
            for p in who.principals.iter().chain(&who.groups) {
                let allowed = snapshot.check(&CheckRequest {
                    principal: p,
                    groups: &[],
                    action,
                    data_action: false,
                    scope,
                    at: NOW,
                });
                assert_eq!(
                    allowed.map(|x| x.allowed).ok(),
                    Some(true),
                    "WhoCan lists {p} for {action} at {scope}, check denies it"
                );
            }
        }
    }

    // The document's own `tests:` cases (the `test` command): no panic.
    let _ = iot_authz::testing::run(snapshot, NOW);
}

fn check_messages(error: &iot_authz::policy::PolicyError) {
    for p in &error.problems {
        assert!(
            common::no_raw_control(&p.message) && common::no_raw_control(&p.object),
            "a problem carries raw control characters: object {:?} message {:?}",
            p.object,
            p.message
        );
    }
}

// Parse the base document before fuzzing starts.
fuzz_target!(init: {
    base_documents();
}, |data: &[u8]| {
    for name in ["fuzz.yaml", "fuzz.json"] {
        let source = SourceDocument::new(name, data);
        let parsed = source.parse();
        let compiled = compile_sources(std::slice::from_ref(&source));
        if let Err(e) = &compiled {
            check_messages(e);
        }
        let doc = match (parsed, compiled) {
            (Ok(doc), Ok(snapshot)) => {
                let docs = vec![(name.to_owned(), doc)];
                exercise(&snapshot, &docs, 96);
                docs.into_iter().next().map(|(_, d)| d)
            }
            (Err(problem), Ok(_)) => panic!("compiled although it does not parse: {problem}"),
            (Ok(doc), Err(_)) => Some(doc),
            (Err(_), Err(_)) => None,
        };
        // After a small base document: merging (names, ids, groups and routes defined in
        // both, assignments to the other document's roles) must not panic either, and
        // must agree with the reference. (The demo policy itself would be too slow to
        // compile on every input.)
        if let Some(doc) = doc {
            let mut docs: Vec<(String, Document)> = base_documents().to_vec();
            docs.push((name.to_owned(), doc));
            match compile_documents(&docs) {
                Ok(snapshot) => exercise(&snapshot, &docs, 32),
                Err(e) => check_messages(&e),
            }
        }
    }
});
