//! One answer for every query (SPEC §3 "Planes", §11): on random policies (data and control
//! catalog entries, implications crossing planes, wildcards, denies, links, time bounds),
//! for every principal, action and scope, ListPermissions lists the action, WhoCan lists
//! the principal, and Plan covers the scope exactly when Check allows. Plus the request
//! value rules and the two document-reading rules found the same way.

use std::collections::BTreeSet;

use iot_authz::policy::document::{CatalogActionDoc, Document, RoleDoc};
use iot_authz::policy::plan::PlanRequest;
use iot_authz::policy::snapshot::{CheckRequest, Snapshot};
use iot_authz::policy::syntax::Instant;
use iot_authz::policy::{SourceDocument, compile_documents, compile_sources};
use proptest::prelude::*;
use proptest::sample::select;

use crate::properties::{
    GROUPS, PEOPLE, Policy, REQUEST_SCOPES, action, at, below, config, policy, reference,
};

/// Every literal action the policy names (what ListPermissions can list), lowercase.
fn literal_actions(docs: &Policy) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut add = |a: &str| {
        if !a.contains('*') {
            out.insert(a.to_ascii_lowercase());
        }
    };
    for (_, d) in docs {
        for c in &d.actions {
            add(&c.name);
            c.implies.iter().for_each(|i| add(i));
        }
        for r in &d.roles {
            for a in r
                .actions
                .iter()
                .chain(&r.not_actions)
                .chain(&r.data_actions)
                .chain(&r.not_data_actions)
            {
                add(a);
            }
        }
        for x in &d.deny_assignments {
            for a in x
                .actions
                .iter()
                .chain(&x.not_actions)
                .chain(&x.data_actions)
                .chain(&x.not_data_actions)
            {
                add(a);
            }
        }
    }
    add("Microsoft.Authorization/roleAssignments/write");
    out
}

/// Every principal the policy names, and a stranger.
fn principals(docs: &Policy) -> BTreeSet<String> {
    let mut out: BTreeSet<String> = ["user:nobody".to_owned()].into();
    for (_, d) in docs {
        for a in &d.assignments {
            out.insert(a.principal.clone());
        }
        for g in &d.groups {
            out.insert(g.id.clone());
            out.extend(g.members.iter().cloned());
        }
        for x in &d.deny_assignments {
            out.extend(
                x.principals
                    .iter()
                    .chain(&x.exclude_principals)
                    .filter(|p| !p.ends_with('*'))
                    .cloned(),
            );
        }
    }
    out
}

/// The scopes a policy mentions, and scopes below them that it does not know.
fn scopes(docs: &Policy) -> Vec<String> {
    let mut out: Vec<String> = vec!["/".into()];
    for (_, d) in docs {
        out.extend(d.assignments.iter().map(|a| a.scope.clone()));
        out.extend(d.deny_assignments.iter().map(|x| x.scope.clone()));
        for l in &d.scope_links {
            out.push(l.scope.clone());
            out.extend(l.parents.iter().cloned());
        }
    }
    out
}

fn allowed(
    snapshot: &Snapshot,
    principal: &str,
    groups: &[String],
    action: &str,
    data: bool,
    scope: &str,
    at: Instant,
) -> bool {
    snapshot
        .check(&CheckRequest {
            principal,
            groups,
            action,
            data_action: data,
            scope,
            at,
        })
        .unwrap_or_else(|e| panic!("valid request rejected: {e}"))
        .allowed
}

/// A compiled policy with the scopes, times and extra actions to ask about.
type Case = (Policy, Vec<String>, Instant, Vec<String>, Vec<String>);

fn case() -> BoxedStrategy<Case> {
    policy()
        .prop_flat_map(|docs| {
            let known = scopes(&docs);
            let asked = prop::collection::vec(
                prop_oneof![3 => below(known), 1 => select(REQUEST_SCOPES).prop_map(str::to_owned)],
                4,
            );
            let unders = prop::collection::vec(
                prop_oneof![2 => Just("/".to_owned()), 1 => below(scopes(&docs))],
                2,
            );
            (
                Just(docs),
                asked,
                at(),
                prop::collection::vec(action(), 2),
                unders,
            )
        })
        .boxed()
}

/// Checks every query against Check on one policy.
fn queries_agree_with_check(
    docs: &Policy,
    snapshot: &Snapshot,
    asked: &[String],
    at: Instant,
    extra: &[String],
    unders: &[String],
) -> Result<(), String> {
    let literal = literal_actions(docs);
    let people = principals(docs);
    let token_groups: Vec<Vec<String>> = vec![vec![], vec![GROUPS[1].to_owned()]];
    for scope in asked {
        // ListPermissions: listed (in its plane) exactly when Check allows.
        for p in &people {
            for groups in &token_groups {
                let listed: BTreeSet<(String, bool)> = snapshot
                    .permissions(p, groups, scope, at)
                    .map_err(|e| e.to_string())?
                    .into_iter()
                    .map(|x| (x.action.to_ascii_lowercase(), x.data_action))
                    .collect();
                for a in &literal {
                    for data in [false, true] {
                        let check = allowed(snapshot, p, groups, a, data, scope, at);
                        if check != listed.contains(&(a.clone(), data)) {
                            return Err(format!(
                                "ListPermissions({p}, {groups:?}, {scope}) lists {a} (data {data}): {}, Check: {check}",
                                !check
                            ));
                        }
                    }
                }
            }
        }
        // WhoCan: lists a principal exactly when Check (with its policy groups) allows.
        for a in literal.iter().chain(extra) {
            for data in [false, true] {
                let who = snapshot
                    .who_can(a, data, scope, at)
                    .map_err(|e| e.to_string())?;
                let listed: BTreeSet<&str> =
                    who.principals.iter().chain(&who.groups).copied().collect();
                for p in &people {
                    let check = allowed(snapshot, p, &[], a, data, scope, at);
                    if check != listed.contains(p.as_str()) {
                        return Err(format!(
                            "WhoCan({a}, data {data}, {scope}) lists {p}: {}, Check: {check}",
                            !check
                        ));
                    }
                }
            }
        }
    }
    // CheckAssign: the missing actions are exactly the universe's actions (each in the
    // planes it may be asked in) that the role grants and Check denies the actor.
    let assign = "microsoft.authorization/roleassignments/write";
    let catalogued = |a: &str| {
        docs.iter()
            .flat_map(|(_, d)| &d.actions)
            .find(|c| c.name.eq_ignore_ascii_case(a))
            .map(|c| c.data_action)
    };
    for scope in asked.iter().take(2) {
        for role in docs.iter().flat_map(|(_, d)| &d.roles) {
            for p in people.iter().take(4) {
                let answer = snapshot
                    .check_assign(p, &role.name, scope, at)
                    .map_err(|e| e.to_string())?;
                let got: BTreeSet<String> = answer
                    .missing_actions
                    .iter()
                    .map(|a| a.to_ascii_lowercase())
                    .collect();
                let mut want = BTreeSet::new();
                if !allowed(snapshot, p, &[], assign, false, scope, at) {
                    want.insert(assign.to_owned());
                }
                for a in &literal {
                    let planes = match catalogued(a) {
                        Some(plane) => vec![plane],
                        None => vec![false, true],
                    };
                    for data in planes {
                        if reference::role_grants(docs, role, a, data)
                            && !allowed(snapshot, p, &[], a, data, scope, at)
                        {
                            want.insert(a.clone());
                        }
                    }
                }
                if got != want {
                    return Err(format!(
                        "CheckAssign({p}, {}, {scope}) misses {got:?}, expected {want:?}",
                        role.name
                    ));
                }
            }
        }
    }
    // Plan: covers a scope exactly when Check allows, at every asked scope at or below
    // `under`; and the lists are sorted and minimal.
    for under in unders {
        let everyone: BTreeSet<String> = people
            .iter()
            .cloned()
            .chain(PEOPLE.iter().map(|s| (*s).to_owned()))
            .collect();
        for p in &everyone {
            for groups in &token_groups {
                for a in literal.iter().chain(extra) {
                    for data in [false, true] {
                        let plan = snapshot
                            .plan(&PlanRequest {
                                principal: p,
                                groups,
                                action: a,
                                data_action: data,
                                under,
                                at,
                            })
                            .map_err(|e| e.to_string())?;
                        plan_is_minimal(&plan.include, &plan.exclude)?;
                        for scope in asked.iter().chain(std::iter::once(under)) {
                            if !iot_authz::policy::plan::is_at_or_below(
                                &reference::key(scope),
                                &reference::key(under),
                            ) {
                                continue;
                            }
                            let check = allowed(snapshot, p, groups, a, data, scope, at);
                            if check != plan.covers(scope) {
                                return Err(format!(
                                    "Plan({p}, {groups:?}, {a}, data {data}, under {under}) = {plan:?} covers {scope}: {}, Check: {check}",
                                    !check
                                ));
                            }
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

/// Sorted, distinct, no include below another include, no exclude below another exclude,
/// every exclude strictly below some include.
fn plan_is_minimal(include: &[String], exclude: &[String]) -> Result<(), String> {
    let below = |a: &String, b: &String| {
        iot_authz::policy::plan::is_at_or_below(&reference::key(a), &reference::key(b))
    };
    for list in [include, exclude] {
        if !list.is_sorted() {
            return Err(format!("not sorted: {list:?}"));
        }
        for (i, a) in list.iter().enumerate() {
            for (j, b) in list.iter().enumerate() {
                if i != j && below(a, b) {
                    return Err(format!("{a} is implied by {b} in {list:?}"));
                }
            }
        }
    }
    for e in exclude {
        if !include
            .iter()
            .any(|i| below(e, i) && reference::key(e) != reference::key(i))
        {
            return Err(format!("exclude {e} is below no include ({include:?})"));
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(160))]

    /// SPEC §3 "Planes": Check, ListPermissions, WhoCan, CheckAssign and Plan give one answer.
    #[test]
    fn every_query_agrees_with_check((docs, asked, at, extra, unders) in case()) {
        let Ok(snapshot) = compile_documents(&docs) else {
            return Ok(());
        };
        queries_agree_with_check(&docs, &snapshot, &asked, at, &extra, &unders)
            .map_err(TestCaseError::fail)?;
    }
}

/// The case a new user meets first: a role with `actions: ["*"]`, and a data-plane catalog
/// action implied by a control-plane one. Check allows the data action in the data plane
/// only (implied in its own plane), never in the control plane (`*` there does not reach a
/// catalog data action), and ListPermissions, WhoCan and Plan say the same.
#[test]
fn a_catalog_data_action_is_granted_in_its_own_plane_only() {
    let doc = Document {
        version: Some(1),
        actions: vec![
            CatalogActionDoc {
                name: "Fleet/devices/manage".into(),
                implies: vec!["Fleet/devices/telemetry/read".into()],
                ..CatalogActionDoc::default()
            },
            CatalogActionDoc {
                name: "Fleet/devices/telemetry/read".into(),
                data_action: true,
                ..CatalogActionDoc::default()
            },
        ],
        roles: vec![RoleDoc {
            name: "Owner".into(),
            actions: vec!["*".into()],
            ..RoleDoc::default()
        }],
        assignments: vec![iot_authz::policy::document::AssignmentDoc {
            principal: "user:alice".into(),
            role: "Owner".into(),
            scope: "/fleet".into(),
            id: None,
            not_before: None,
            not_after: None,
        }],
        ..Document::default()
    };
    let docs = vec![("p.yaml".to_owned(), doc)];
    let snapshot = compile_documents(&docs).unwrap();
    let now = iot_authz::policy::syntax::now();
    let read = "Fleet/devices/telemetry/read";
    assert!(allowed(
        &snapshot,
        "user:alice",
        &[],
        read,
        true,
        "/fleet/d1",
        now
    ));
    assert!(!allowed(
        &snapshot,
        "user:alice",
        &[],
        read,
        false,
        "/fleet/d1",
        now
    ));
    let listed: Vec<(String, bool)> = snapshot
        .permissions("user:alice", &[], "/fleet/d1", now)
        .unwrap()
        .into_iter()
        .map(|p| (p.action.to_owned(), p.data_action))
        .collect();
    assert!(listed.contains(&(read.to_owned(), true)), "{listed:?}");
    assert!(!listed.contains(&(read.to_owned(), false)), "{listed:?}");
    assert_eq!(
        snapshot
            .who_can(read, true, "/fleet/d1", now)
            .unwrap()
            .principals,
        ["user:alice"]
    );
    assert!(
        snapshot
            .who_can(read, false, "/fleet/d1", now)
            .unwrap()
            .principals
            .is_empty()
    );
    let plan = |data| {
        snapshot
            .plan(&PlanRequest {
                principal: "user:alice",
                groups: &[],
                action: read,
                data_action: data,
                under: "/",
                at: now,
            })
            .unwrap()
    };
    assert_eq!(plan(true).include, ["/fleet"]);
    assert!(plan(false).include.is_empty());
    let _ = scopes(&docs);
}

/// SPEC §3 "Request values" and §4: a request action is a literal and a scope segment with
/// whitespace is malformed, in every query.
#[test]
fn request_values_are_checked_by_every_query() {
    let snapshot = compile_documents(&[(
        "p.yaml".to_owned(),
        Document {
            version: Some(1),
            ..Document::default()
        },
    )])
    .unwrap();
    let now = iot_authz::policy::syntax::now();
    for (action, scope) in [
        ("a/*", "/s"),
        ("a b", "/s"),
        ("a/\u{e9}", "/s"),
        ("a/b", "/s/t 1"),
        ("a/b", "/s/t\u{a0}1"),
        ("a/b", "/s/t\t1"),
    ] {
        let check = snapshot.check(&CheckRequest {
            principal: "user:a",
            groups: &[],
            action,
            data_action: false,
            scope,
            at: now,
        });
        assert!(check.is_err(), "check {action:?} {scope:?}");
        assert!(snapshot.who_can(action, false, scope, now).is_err());
        let plan = snapshot.plan(&PlanRequest {
            principal: "user:a",
            groups: &[],
            action,
            data_action: false,
            under: scope,
            at: now,
        });
        assert!(plan.is_err(), "plan {action:?} {scope:?}");
        if action == "a/b" {
            assert!(snapshot.permissions("user:a", &[], scope, now).is_err());
        }
    }
}

/// SPEC §2: a reported assignment scope keeps the spelling it was written with, trailing
/// slash included.
#[test]
fn a_reported_assignment_scope_keeps_its_trailing_slash() {
    let yaml = "version: 1\nroles: [{name: R, actions: [a/b]}]\nassignments:\n  - {principal: user:a, role: R, scope: /Apps/Fleet/}\n";
    let snapshot = compile_sources(&[SourceDocument::new("p.yaml", yaml)]).unwrap();
    let decision = snapshot
        .check(&CheckRequest {
            principal: "user:a",
            groups: &[],
            action: "a/b",
            data_action: false,
            scope: "/apps/fleet/x",
            at: iot_authz::policy::syntax::now(),
        })
        .unwrap();
    match decision.reason {
        iot_authz::policy::Reason::RoleAssignment { scope, .. } => {
            assert_eq!(scope, "/Apps/Fleet/")
        }
        other => panic!("{other:?}"),
    }
}

/// The same document means the same in YAML and JSON: every typed field takes only its
/// type in both (a quoted number or boolean is a string, refused), and a string field is
/// refused a number or a boolean in both.
#[test]
fn yaml_and_json_read_typed_fields_alike() {
    let cases: &[(&str, &str, bool)] = &[
        ("version: 1", r#""version": 1"#, true),
        (r#"version: "1""#, r#""version": "1""#, false),
        ("version: 1.0", r#""version": 1.0"#, false),
        (
            "version: 1\nactions: [{name: a/b, dataAction: true}]",
            r#""version": 1, "actions": [{"name": "a/b", "dataAction": true}]"#,
            true,
        ),
        (
            "version: 1\nactions: [{name: a/b, dataAction: \"true\"}]",
            r#""version": 1, "actions": [{"name": "a/b", "dataAction": "true"}]"#,
            false,
        ),
        (
            "version: 1\nactions: [{name: a/b, dataAction: yes}]",
            r#""version": 1, "actions": [{"name": "a/b", "dataAction": "yes"}]"#,
            false,
        ),
        (
            "version: 1\nroles: [{name: 17, actions: [a/b]}]",
            r#""version": 1, "roles": [{"name": 17, "actions": ["a/b"]}]"#,
            false,
        ),
        (
            "version: 1\nroles: [{name: \"17\", actions: [a/b]}]",
            r#""version": 1, "roles": [{"name": "17", "actions": ["a/b"]}]"#,
            true,
        ),
        (
            "version: 1\nroles: [{name: R, actions: [a/b]}]\nconstraints: [{minAssignments: {role: R, scope: /, count: \"0\"}}]",
            r#""version": 1, "roles": [{"name": "R", "actions": ["a/b"]}], "constraints": [{"minAssignments": {"role": "R", "scope": "/", "count": "0"}}]"#,
            false,
        ),
        (
            "version: 1\nroutes: [{methods: [GET], path: /h, public: \"true\"}]",
            r#""version": 1, "routes": [{"methods": ["GET"], "path": "/h", "public": "true"}]"#,
            false,
        ),
    ];
    for (yaml, json, ok) in cases {
        let yaml_result = SourceDocument::new("p.yaml", *yaml).parse();
        let json_result = SourceDocument::new("p.json", format!("{{{json}}}")).parse();
        assert_eq!(yaml_result.is_ok(), *ok, "YAML {yaml}: {yaml_result:?}");
        assert_eq!(json_result.is_ok(), *ok, "JSON {json}: {json_result:?}");
    }
}
