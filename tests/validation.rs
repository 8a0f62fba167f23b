//! One test per validation rule of SPEC §2: each invalid document is rejected with a
//! message that names the document, the object and the problem.

use iot_authz::policy::{PolicyError, SourceDocument, compile_sources};

const BASE: &str = "version: 1\nroles:\n  - name: Reader\n    actions: ['*/read']\n";

fn problems(name: &str, text: &str) -> PolicyError {
    match compile_sources(&[SourceDocument::new(name, text.as_bytes())]) {
        Ok(_) => panic!("{name} should be invalid:\n{text}"),
        Err(e) => e,
    }
}

/// Asserts that the policy is rejected and one problem names `object` and says `message`.
fn rejects(text: &str, object: &str, message: &str) {
    let error = problems("policy.yaml", text);
    assert!(
        error.problems.iter().any(|p| p.document == "policy.yaml"
            && p.object.contains(object)
            && p.message.contains(message)),
        "expected a problem on `{object}` saying `{message}`, got:\n{error}"
    );
}

#[test]
fn a_valid_base_compiles() {
    compile_sources(&[SourceDocument::new("policy.yaml", BASE.as_bytes())]).unwrap();
}

#[test]
fn version_is_required() {
    rejects("roles: []\n", "document", "version");
    rejects("version: 2\n", "document", "version: 2");
}

#[test]
fn unknown_keys_are_errors_everywhere() {
    rejects("version: 1\nrole: []\n", "document", "role");
    rejects(
        "version: 1\nroles:\n  - name: R\n    notAction: ['x/y']\n",
        "document",
        "notAction",
    );
    rejects(
        "version: 1\nassignments:\n  - {principal: 'user:a', role: R, scope: /, expires: x}\n",
        "document",
        "expires",
    );
    rejects(
        "version: 1\nidentity:\n  sources:\n    - jwt: {principalType: user, clam: sub}\n",
        "document",
        "clam",
    );
    let json = problems("p.json", r#"{"version": 1, "denyAssignment": []}"#);
    assert!(json.to_string().contains("denyAssignment"), "{json}");
}

#[test]
fn duplicate_names_and_ids_are_errors() {
    rejects(
        &format!("{BASE}  - name: reader\n"),
        "roles[1] `reader`",
        "defined twice",
    );
    rejects(
        "version: 1\nroles:\n  - {name: A, id: x1}\n  - {name: B, id: X1}\n",
        "roles[1] `B`",
        "defined twice",
    );
    rejects(
        "version: 1\ngroups:\n  - {id: 'group:g'}\n  - {id: 'group:g'}\n",
        "groups[1]",
        "defined twice",
    );
    rejects(
        &format!(
            "{BASE}assignments:\n  - {{id: a1, principal: 'user:a', role: Reader, scope: /}}\n  - {{id: a1, principal: 'user:b', role: Reader, scope: /}}\n"
        ),
        "assignments[1] (id `a1`)",
        "defined twice",
    );
    rejects(
        "version: 1\ndenyAssignments:\n  - {name: d, principals: ['*'], scope: /}\n  - {name: D, principals: ['*'], scope: /}\n",
        "denyAssignments[1]",
        "defined twice",
    );
    rejects(
        "version: 1\nactions:\n  - name: a/b\n  - name: A/B\n",
        "actions[1]",
        "defined twice",
    );
}

#[test]
fn duplicates_across_documents_name_both() {
    let error = compile_sources(&[
        SourceDocument::new("one.yaml", BASE.as_bytes()),
        SourceDocument::new("two.yaml", BASE.as_bytes()),
    ])
    .unwrap_err();
    let p = &error.problems[0];
    assert_eq!(p.document, "two.yaml");
    assert!(p.message.contains("one.yaml"), "{p}");
}

#[test]
fn assignments_to_unknown_roles_are_errors() {
    rejects(
        &format!("{BASE}assignments:\n  - {{principal: 'user:a', role: Writer, scope: /}}\n"),
        "assignments[0]",
        "role `Writer` is not defined",
    );
}

#[test]
fn roles_resolve_by_name_or_id() {
    let text = "version: 1\nroles:\n  - {name: Reader, id: 0a1b, actions: ['*/read']}\nassignments:\n  - {principal: 'user:a', role: 0A1B, scope: /}\n  - {principal: 'user:b', role: READER, scope: /}\n";
    compile_sources(&[SourceDocument::new("p.yaml", text.as_bytes())]).unwrap();
}

#[test]
fn assignments_outside_assignable_scopes_are_errors() {
    rejects(
        "version: 1\nroles:\n  - {name: Site Admin, actions: ['*'], assignableScopes: [/sites]}\nassignments:\n  - {principal: 'user:a', role: Site Admin, scope: /subs/s1}\n",
        "assignments[0]",
        "outside the assignable scopes",
    );
}

#[test]
fn assignable_scopes_follow_scope_links() {
    let text = "version: 1\nroles:\n  - {name: SG Admin, actions: ['*'], assignableScopes: [/sg/north]}\nscopeLinks:\n  - {scope: /subs/s1/t/line-1, parents: [/sg/north]}\nassignments:\n  - {principal: 'user:a', role: SG Admin, scope: /subs/s1/t/line-1/x}\n";
    compile_sources(&[SourceDocument::new("p.yaml", text.as_bytes())]).unwrap();
}

#[test]
fn group_cycles_are_errors() {
    rejects(
        "version: 1\ngroups:\n  - {id: 'group:a', members: ['group:b']}\n  - {id: 'group:b', members: ['group:c']}\n  - {id: 'group:c', members: ['group:a']}\n",
        "groups",
        "cycle",
    );
    rejects(
        "version: 1\ngroups:\n  - {id: 'group:a', members: ['group:a']}\n",
        "groups",
        "cycle",
    );
}

#[test]
fn group_nesting_is_bounded() {
    let mut text = String::from("version: 1\ngroups:\n");
    for i in 0..100 {
        text.push_str(&format!(
            "  - {{id: 'group:g{i}', members: ['group:g{}']}}\n",
            i + 1
        ));
    }
    rejects(&text, "groups", "deeper than");
}

#[test]
fn scope_graph_cycles_are_errors() {
    rejects(
        "version: 1\nscopeLinks:\n  - {scope: /a, parents: [/b]}\n  - {scope: /b, parents: [/a/x]}\n",
        "scopeLinks",
        "cycle",
    );
    rejects(
        "version: 1\nscopeLinks:\n  - {scope: /a/b, parents: [/a/b/c]}\n",
        "scopeLinks",
        "cycle",
    );
}

#[test]
fn implied_actions_removed_by_not_actions_are_errors() {
    rejects(
        "version: 1\nactions:\n  - {name: d/update, implies: [d/read]}\nroles:\n  - {name: R, actions: ['d/*'], notActions: [d/read]}\n",
        "roles[0] `R`",
        "implied by `d/update` is removed by notActions `d/read`",
    );
}

#[test]
fn malformed_values_are_errors() {
    rejects(
        &format!("{BASE}assignments:\n  - {{principal: alice, role: Reader, scope: /}}\n"),
        "assignments[0]",
        "TYPE:VALUE",
    );
    rejects(
        &format!("{BASE}assignments:\n  - {{principal: 'robot:r2', role: Reader, scope: /}}\n"),
        "assignments[0]",
        "unknown type `robot`",
    );
    rejects(
        &format!("{BASE}assignments:\n  - {{principal: 'user:a', role: Reader, scope: subs}}\n"),
        "assignments[0]",
        "absolute path",
    );
    rejects(
        &format!("{BASE}assignments:\n  - {{principal: 'user:a', role: Reader, scope: /a//b}}\n"),
        "assignments[0]",
        "empty segment",
    );
    rejects(
        &format!("{BASE}assignments:\n  - {{principal: 'user:a', role: Reader, scope: /a/../b}}\n"),
        "assignments[0]",
        "`..`",
    );
    rejects(
        "version: 1\nroles:\n  - {name: R, actions: ['']}\n",
        "roles[0]",
        "empty",
    );
    rejects(
        "version: 1\nroles:\n  - {name: R, actions: ['a b']}\n",
        "roles[0]",
        "whitespace",
    );
    rejects(
        &format!(
            "{BASE}assignments:\n  - {{principal: 'user:a', role: Reader, scope: /, notBefore: tomorrow}}\n"
        ),
        "assignments[0]",
        "RFC 3339",
    );
    rejects(
        "version: 1\ngroups:\n  - {id: ops}\n",
        "groups[0]",
        "TYPE:VALUE",
    );
    rejects(
        "version: 1\ngroups:\n  - {id: 'user:ops'}\n",
        "groups[0]",
        "not a group id",
    );
    rejects(
        "version: 1\ndenyAssignments:\n  - {name: d, principals: ['robot:*'], scope: /}\n",
        "denyAssignments[0]",
        "robot",
    );
}

#[test]
fn not_after_before_not_before_is_an_error() {
    rejects(
        &format!(
            "{BASE}assignments:\n  - {{principal: 'user:a', role: Reader, scope: /, notBefore: '2026-02-01T00:00:00Z', notAfter: '2026-01-01T00:00:00Z'}}\n"
        ),
        "assignments[0]",
        "notAfter is before notBefore",
    );
}

#[test]
fn route_conflicts_are_errors() {
    rejects(
        "version: 1\nroutes:\n  - {methods: [GET], path: '/t/{a}', action: x/read, scope: '/t/{a}'}\n  - {methods: [GET, POST], path: '/T/{b}', action: x/write, scope: '/t/{b}'}\n",
        "routes[1]",
        "conflicts",
    );
    rejects(
        "version: 1\nroutes:\n  - {methods: ['*'], path: /h, public: true}\n  - {methods: [GET], path: /h/, public: true}\n",
        "routes[1]",
        "conflicts",
    );
    // Same shape, disjoint methods: fine.
    let ok = "version: 1\nroutes:\n  - {methods: [GET], path: '/t/{a}', action: x/read, scope: '/t/{a}'}\n  - {methods: [PUT], path: '/t/{b}', action: x/write, scope: '/t/{b}'}\n";
    compile_sources(&[SourceDocument::new("p.yaml", ok.as_bytes())]).unwrap();
}

#[test]
fn malformed_routes_are_errors() {
    rejects(
        "version: 1\nroutes:\n  - {methods: [GET], path: '/t/{a}', action: 'x/{b}', scope: /}\n",
        "routes[0]",
        "does not capture",
    );
    rejects(
        "version: 1\nroutes:\n  - {methods: [GET], path: '/t/{rest...}/x', action: x/read, scope: /}\n",
        "routes[0]",
        "last segment",
    );
    rejects(
        "version: 1\nroutes:\n  - {methods: [GET], path: /t}\n",
        "routes[0]",
        "needs an `action`",
    );
    rejects(
        "version: 1\nroutes:\n  - {methods: [GET], path: '/t/%2e', action: x/read, scope: /}\n",
        "routes[0]",
        "escape",
    );
}

#[test]
fn violated_constraints_are_errors() {
    let base = "version: 1\nroles:\n  - {name: App Administrator, actions: ['*']}\nconstraints:\n  - minAssignments: {role: App Administrator, scope: /apps/fleet, count: 1}\n";
    rejects(base, "constraints[0]", "at least 1");
    // An assignment above the scope counts.
    let ok = format!(
        "{base}assignments:\n  - {{principal: 'user:a', role: App Administrator, scope: /apps}}\n"
    );
    compile_sources(&[SourceDocument::new("p.yaml", ok.as_bytes())]).unwrap();
    // One below the scope does not.
    let low = format!(
        "{base}assignments:\n  - {{principal: 'user:a', role: App Administrator, scope: /apps/fleet/orgs/x}}\n"
    );
    rejects(&low, "constraints[0]", "found 0");
}

#[test]
fn identity_is_checked() {
    rejects(
        "version: 1\nidentity:\n  sources:\n    - {header: x-p, peerCertificate: {principalType: device}}\n",
        "identity.sources[0]",
        "exactly one",
    );
    rejects(
        "version: 1\nidentity:\n  sources:\n    - peerCertificate: {principalType: robot}\n",
        "identity.sources[0]",
        "robot",
    );
}

#[test]
fn every_problem_is_reported() {
    let text = "version: 1\nroles:\n  - {name: R, actions: ['']}\n  - {name: r}\nassignments:\n  - {principal: bad, role: Nope, scope: x}\n";
    let error = problems("p.yaml", text);
    assert!(error.problems.len() >= 4, "{error}");
}

#[test]
fn messages_never_carry_raw_control_bytes() {
    let error = problems(
        "p.yaml",
        "version: 1\ngroups:\n  - {id: \"group:\\u001b[31mred\"}\n",
    );
    assert!(!error.to_string().contains('\u{1b}'), "{error}");
}

/// Found by the `policy_parse` fuzz target: the JSON parser quotes an unknown key verbatim,
/// so an escape sequence in a key reached the message raw.
#[test]
fn parser_messages_escape_control_characters_in_keys() {
    for (name, text) in [
        ("p.json", "{\"version\": 1, \"\\u001b[31mred\": 1}"),
        ("p.yaml", "version: 1\n\"\\e[31mred\": 1\n"),
    ] {
        let error = problems(name, text);
        let message = &error.problems[0].message;
        assert!(message.contains("unknown field"), "{name}: {message}");
        assert!(message.contains("[31mred"), "{name}: {message}");
        assert!(
            !message.chars().any(|c| c.is_control() && c != '\n'),
            "{name}: raw control character in {message:?}"
        );
    }
}
