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
    // The object is where the unknown key is in the document.
    rejects("version: 1\nrole: []\n", "role", "role");
    rejects(
        "version: 1\nroles:\n  - name: R\n    notAction: ['x/y']\n",
        "roles[0].notAction",
        "notAction",
    );
    rejects(
        "version: 1\nassignments:\n  - {principal: 'user:a', role: R, scope: /}\n  - {principal: 'user:a', role: R, scope: /, expires: x}\n",
        "assignments[1].expires",
        "expires",
    );
    rejects(
        "version: 1\nidentity:\n  sources:\n    - jwt: {principalType: user, clam: sub}\n",
        "identity.sources[0].jwt.clam",
        "clam",
    );
    rejects(
        "version: 1\nidentity:\n  sources:\n    - bearer: {issuer: i, audience: [a], jwks: {file: k}, principalType: user}\n",
        "identity.sources[0].bearer.audience",
        "audience",
    );
    rejects(
        "version: 1\nidentity:\n  sources:\n    - bearer: {issuer: i, audiences: [a], jwks: {path: k}, principalType: user}\n",
        "identity.sources[0].bearer.jwks.path",
        "path",
    );
    let json = problems(
        "p.json",
        r#"{"version": 1, "groups": [{"id": "group:g", "members": [], "member": ["user:x"]}]}"#,
    );
    assert_eq!(json.problems.len(), 1, "{json}");
    assert_eq!(json.problems[0].object, "groups[0].member", "{json}");
    assert!(json.problems[0].message.contains("member"), "{json}");
    // A problem that is not at a key still names the document as a whole.
    rejects("- 1\n", "document", "YAML");
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

/// A key written twice in one mapping names the object that holds it (the parser cannot
/// name the second key itself) and the key in the message.
#[test]
fn a_key_written_twice_names_its_object() {
    for (text, object, key) in [
        (
            "version: 1\nroles: [{name: A, notActions: [x], notActions: []}]\n",
            "roles[0]",
            "notActions",
        ),
        ("version: 1\nversion: 1\n", "document", "version"),
    ] {
        let error = problems("p.yaml", text);
        let problem = &error.problems[0];
        assert_eq!(problem.object, object, "{error}");
        assert!(
            problem
                .message
                .contains(&format!("duplicate mapping key: {key}")),
            "{error}"
        );
        assert!(!problem.message.contains("DuplicateKeyPolicy"), "{error}");
    }
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
    let snapshot = compile_sources(&[SourceDocument::new("p.yaml", text.as_bytes())]).unwrap();
    // Both spellings name the one role: each principal is granted through it.
    for principal in ["user:a", "user:b"] {
        let d = snapshot
            .check(&iot_authz::policy::CheckRequest {
                principal,
                groups: &[],
                action: "x/read",
                data_action: false,
                scope: "/s",
                at: 0,
            })
            .unwrap();
        assert!(d.allowed, "{principal}: {d:?}");
        match d.reason {
            iot_authz::policy::Reason::RoleAssignment { role, .. } => assert_eq!(role, "Reader"),
            other => panic!("{principal}: {other:?}"),
        }
    }
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
    // Far times (beyond 2262, where 64-bit nanoseconds end) are still in order.
    rejects(
        &format!(
            "{BASE}assignments:\n  - {{principal: 'user:a', role: Reader, scope: /, notBefore: '9999-12-31T00:00:00Z', notAfter: '9000-01-01T00:00:00Z'}}\n"
        ),
        "assignments[0]",
        "notAfter is before notBefore",
    );
    // An absent bound is unbounded, beyond any time written.
    let open = format!(
        "{BASE}assignments:\n  - {{principal: 'user:a', role: Reader, scope: /, notBefore: '9999-12-31T00:00:00Z'}}\n  - {{principal: 'user:b', role: Reader, scope: /, notAfter: '0001-01-01T00:00:00Z'}}\n"
    );
    compile_sources(&[SourceDocument::new("p.yaml", open.as_bytes())]).unwrap();
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

/// A document whose name holds `: ` (a directory `rc: dir`) is still named whole in route
/// problems, and the object is the route.
#[test]
fn route_problems_name_documents_with_colons_whole() {
    let docs = [
        (
            "rc: dir/a.yaml",
            "version: 1\nroutes:\n  - {methods: [GET], path: /q}\n",
        ),
        (
            "rc: dir/b.yaml",
            "version: 1\nroutes:\n  - {methods: [GET], path: /t, action: x/read, scope: /}\n  - {methods: [GET], path: /T, action: x/read, scope: /}\n",
        ),
    ];
    let problems = problems_of(&docs);
    let shown = show(&problems);
    assert!(
        problems.iter().any(|p| p.document == "rc: dir/a.yaml"
            && p.object == "routes[0] `/q`"
            && p.message.contains("needs an `action`")),
        "{shown}"
    );
    assert!(
        problems.iter().any(|p| p.document == "rc: dir/b.yaml"
            && p.object == "routes[1] `/T`"
            && p.message.contains("conflicts")),
        "{shown}"
    );
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
    // An assignment that is never active (an empty window) guarantees nothing.
    let never = format!(
        "{base}assignments:\n  - {{principal: 'user:a', role: App Administrator, scope: /apps, notBefore: '2020-01-01T00:00:00Z', notAfter: '2020-01-01T00:00:00Z'}}\n"
    );
    rejects(&never, "constraints[0]", "found 0");
    // A time-bound one counts, even once it has ended: the check must not start failing
    // as time passes (a restart would then refuse the policy).
    let ended = format!(
        "{base}assignments:\n  - {{principal: 'user:a', role: App Administrator, scope: /apps, notAfter: '2020-01-01T00:00:00Z'}}\n"
    );
    compile_sources(&[SourceDocument::new("p.yaml", ended.as_bytes())]).unwrap();
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
    // A `sources` list or an `identity` section emptied by commenting out its entries is
    // null: an error, never the default (forgeable) header source.
    rejects(
        "version: 1\nidentity:\n  sources:\n    # - peerCertificate: {principalType: device}\n",
        "identity.sources",
        "is null",
    );
    rejects(
        "{\"version\": 1, \"identity\": {\"sources\": null}}",
        "identity.sources",
        "is null",
    );
    rejects("version: 1\nidentity:\n", "identity", "is null");
}

/// One object with several problems shows each of them, not only the first.
#[test]
fn every_problem_of_one_object_is_reported() {
    let text = "version: 1\nactions:\n  - {name: 'bad name', implies: ['x y']}\ngroups:\n  - {id: 'user:x', members: [bad]}\nroutes:\n  - {methods: ['G T'], path: '/a/{b}', action: 'a b', scope: '/{c}'}\n";
    let error = problems("p.yaml", text);
    let on = |object: &str, message: &str| {
        assert!(
            error
                .problems
                .iter()
                .any(|p| p.object.starts_with(object) && p.message.contains(message)),
            "expected `{message}` on `{object}`:\n{error}"
        );
    };
    on("actions[0]", "bad name");
    on("actions[0]", "implies:");
    on("groups[0]", "is not a group id");
    on("groups[0]", "members:");
    on("routes[0]", "method `G T`");
    on("routes[0]", "action pattern `a b`");
    on("routes[0]", "uses `{c}`");
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

/// Compiles several documents, which must be invalid, and returns every problem.
fn problems_of(docs: &[(&str, &str)]) -> Vec<iot_authz::policy::Problem> {
    let sources: Vec<SourceDocument> = docs
        .iter()
        .map(|(name, text)| SourceDocument::new(*name, text.as_bytes()))
        .collect();
    match compile_sources(&sources) {
        Ok(_) => panic!("should be invalid: {docs:?}"),
        Err(e) => e.problems,
    }
}

fn show(problems: &[iot_authz::policy::Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("\n  {p}"))
        .collect::<String>()
}

#[test]
fn a_scope_cycle_names_the_link_that_closes_it() {
    let problems = problems_of(&[
        (
            "a.yaml",
            "version: 1\nscopeLinks: [{scope: /site/plant-1, parents: [/sg/north]}]\n",
        ),
        (
            "b.yaml",
            "version: 1\nscopeLinks: [{scope: /x, parents: [/x/y]}]\n",
        ),
    ]);
    assert_eq!(problems.len(), 1, "{}", show(&problems));
    let p = &problems[0];
    assert_eq!(p.document, "b.yaml", "{p}");
    assert_eq!(p.object, "scopeLinks[0] `/x`", "{p}");
    assert!(p.message.contains("cycle through `/x`"), "{p}");
    assert!(p.message.contains("`/x` -> `/x/y` -> `/x`"), "{p}");

    // The link named is one in the cycle, whichever document comes first.
    let problems = problems_of(&[
        (
            "a.yaml",
            "version: 1\nscopeLinks:\n  - {scope: /p, parents: [/q]}\n  - {scope: /m, parents: [/n]}\n",
        ),
        (
            "b.yaml",
            "version: 1\nscopeLinks:\n  - {scope: /s, parents: [/t]}\n  - {scope: /n, parents: [/m/k]}\n",
        ),
    ]);
    assert_eq!(problems.len(), 1, "{}", show(&problems));
    let p = &problems[0];
    assert!(
        (p.document == "a.yaml" && p.object == "scopeLinks[1] `/m`")
            || (p.document == "b.yaml" && p.object == "scopeLinks[1] `/n`"),
        "{p}"
    );
    assert!(
        p.message.contains("`/m`") && p.message.contains("`/n`"),
        "{p}"
    );
}

#[test]
fn a_scope_cycle_causes_no_false_follow_on_problems() {
    let text = "version: 1\nroles:\n  - {name: R, actions: ['*']}\n  - {name: Site Admin, actions: ['*'], assignableScopes: [/sites]}\nscopeLinks:\n  - {scope: /x, parents: [/x/y]}\nassignments:\n  - {principal: 'user:a', role: R, scope: /}\n  - {principal: 'user:b', role: R, scope: /x/y/z}\n  - {principal: 'user:c', role: Site Admin, scope: /subs/s1}\nconstraints:\n  - minAssignments: {role: R, scope: /apps, count: 1}\n  - minAssignments: {role: R, scope: /x/y, count: 1}\n";
    let problems = problems_of(&[("p.yaml", text)]);
    // The cycle, and the one real problem that does not depend on it.
    assert_eq!(problems.len(), 2, "{}", show(&problems));
    assert!(
        problems
            .iter()
            .any(|p| p.object == "scopeLinks[0] `/x`" && p.message.contains("cycle")),
        "{}",
        show(&problems)
    );
    assert!(
        problems
            .iter()
            .any(|p| p.object.starts_with("assignments[2]")
                && p.message
                    .contains("outside the assignable scopes of role `Site Admin`")),
        "{}",
        show(&problems)
    );
}

#[test]
fn a_group_cycle_causes_no_follow_on_problems() {
    let text = "version: 1\nroles:\n  - {name: R, actions: ['*']}\ngroups:\n  - {id: 'group:a', members: ['group:b', 'user:u']}\n  - {id: 'group:b', members: ['group:a']}\nassignments:\n  - {principal: 'group:a', role: R, scope: /}\n  - {principal: 'user:u', role: R, scope: /apps}\nconstraints:\n  - minAssignments: {role: R, scope: /apps, count: 2}\n";
    let problems = problems_of(&[("p.yaml", text)]);
    assert_eq!(problems.len(), 1, "{}", show(&problems));
    assert!(problems[0].message.contains("cycle"), "{}", show(&problems));
}

#[test]
fn every_cycle_is_reported_once() {
    let text = "version: 1\ngroups:\n  - {id: 'group:a', members: ['group:b']}\n  - {id: 'group:b', members: ['group:a', 'group:a']}\n  - {id: 'group:c', members: ['group:d']}\n  - {id: 'group:d', members: ['group:e']}\n  - {id: 'group:e', members: ['group:c']}\n  - {id: 'group:f', members: ['group:f']}\nscopeLinks:\n  - {scope: /a, parents: [/b, /b/]}\n  - {scope: /b, parents: [/a/x]}\n  - {scope: /c, parents: [/c/d]}\n";
    let problems = problems_of(&[("p.yaml", text)]);
    let groups: Vec<_> = problems
        .iter()
        .filter(|p| p.message.starts_with("group membership cycle"))
        .collect();
    let scopes: Vec<_> = problems
        .iter()
        .filter(|p| p.message.starts_with("scope graph has a cycle"))
        .collect();
    assert_eq!(groups.len(), 3, "{}", show(&problems));
    assert_eq!(scopes.len(), 2, "{}", show(&problems));
    assert_eq!(problems.len(), 5, "{}", show(&problems));
    // Each cycle once, named at one of its groups, shown in full and closed.
    for cycle in [
        &["group:a", "group:b"][..],
        &["group:c", "group:d", "group:e"],
        &["group:f"],
    ] {
        let hits: Vec<_> = groups
            .iter()
            .filter(|p| cycle.iter().all(|g| p.message.contains(&format!("`{g}`"))))
            .collect();
        assert_eq!(hits.len(), 1, "{cycle:?}: {}", show(&problems));
        let p = hits[0];
        let named = cycle
            .iter()
            .find(|g| p.object.ends_with(&format!("`{g}`")))
            .unwrap_or_else(|| panic!("{cycle:?}: {p}"));
        assert!(
            p.message
                .contains(&format!("cycle through `{named}`: `{named}` -> "))
                && p.message.contains(&format!(" -> `{named}` (each")),
            "{p}"
        );
        assert_eq!(p.message.matches(" -> ").count(), cycle.len(), "{p}");
    }
    assert!(
        scopes
            .iter()
            .any(|p| p.message.contains("`/c` -> `/c/d` -> `/c`")),
        "{}",
        show(&problems)
    );
    assert!(
        scopes.iter().any(|p| p.message.contains("`/a`")
            && p.message.contains("`/b`")
            && p.message.contains("`/a/x`")),
        "{}",
        show(&problems)
    );
}

#[test]
fn a_long_cycle_is_shown_shortened() {
    let mut text = String::from("version: 1\ngroups:\n");
    for i in 0..40 {
        text.push_str(&format!(
            "  - {{id: 'group:g{i}', members: ['group:g{}']}}\n",
            (i + 1) % 40
        ));
    }
    let problems = problems_of(&[("p.yaml", &text)]);
    assert_eq!(problems.len(), 1, "{}", show(&problems));
    assert!(problems[0].message.contains("more)"), "{}", show(&problems));
}

#[test]
fn too_deep_nesting_names_a_group_definition() {
    let mut text = String::from("version: 1\ngroups:\n");
    for i in 0..65 {
        let member = if i == 64 {
            "user:u".to_owned()
        } else {
            format!("group:g{}", i + 1)
        };
        text.push_str(&format!(
            "  - {{id: 'group:g{i}', members: ['{member}']}}\n"
        ));
    }
    let problems = problems_of(&[("p.yaml", &text)]);
    assert_eq!(problems.len(), 1, "{}", show(&problems));
    let p = &problems[0];
    assert_eq!(p.document, "p.yaml", "{p}");
    assert_eq!(p.object, "groups[64] `group:g64`", "{p}");
    assert!(
        p.message.contains("deeper than 64 levels at `user:u`"),
        "{p}"
    );
}

#[test]
fn every_duplicate_role_is_reported_in_one_run() {
    let text =
        "version: 1\nroles:\n  - {name: R, id: r1}\n  - {name: Q, id: R1}\n  - {name: S, id: Q}\n";
    let problems = problems_of(&[("p.yaml", text)]);
    assert_eq!(problems.len(), 2, "{}", show(&problems));
    assert!(
        problems[0].object == "roles[1] `Q`" && problems[0].message.contains("`r1`"),
        "{}",
        show(&problems)
    );
    assert!(
        problems[1].object == "roles[2] `S`" && problems[1].message.contains("`q`"),
        "{}",
        show(&problems)
    );
}

#[test]
fn a_duplicate_role_is_checked_in_full() {
    let text = "version: 1\nroles:\n  - {name: R}\n  - {name: r, actions: [''], assignableScopes: [bad]}\n";
    let problems = problems_of(&[("p.yaml", text)]);
    for message in ["defined twice", "actions:", "assignableScopes:"] {
        assert!(
            problems
                .iter()
                .any(|p| p.object == "roles[1] `r`" && p.message.contains(message)),
            "{message}: {}",
            show(&problems)
        );
    }
}

#[test]
fn a_duplicate_deny_assignment_is_checked_in_full() {
    let text = "version: 1\ndenyAssignments:\n  - {name: d, principals: ['*'], scope: /}\n  - {name: D, principals: ['robot:x'], actions: [''], scope: bad}\n";
    let problems = problems_of(&[("p.yaml", text)]);
    for message in ["defined twice", "principals:", "actions:", "scope:"] {
        assert!(
            problems
                .iter()
                .any(|p| p.object == "denyAssignments[1] `D`" && p.message.contains(message)),
            "{message}: {}",
            show(&problems)
        );
    }
}

#[test]
fn selector_problems_quote_the_selector_as_written() {
    for (selector, quoted) in [("robot:*", "`robot:*`"), (":*", "`:*`")] {
        let text = format!(
            "version: 1\ndenyAssignments:\n  - {{name: d, principals: ['*'], excludePrincipals: ['{selector}'], scope: /}}\n"
        );
        let problems = problems_of(&[("p.yaml", &text)]);
        assert_eq!(problems.len(), 1, "{}", show(&problems));
        let p = &problems[0];
        assert!(p.message.starts_with("excludePrincipals:"), "{p}");
        assert!(p.message.contains(quoted), "{p}");
        assert!(!p.message.contains(":x`"), "{p}");
    }
}

#[test]
fn bearer_sources_name_their_bad_values() {
    let source = |extra: &str| {
        format!(
            "{BASE}identity:\n  sources:\n    - bearer: {{issuer: 'https://login.example.com/', audiences: [iot-api], principalType: user{extra}}}\n"
        )
    };
    rejects(
        &source(", jwks: {file: k}, algorithms: [RS256, none]"),
        "identity.sources[0].bearer",
        "algorithm `none` is never accepted",
    );
    rejects(
        &source(", jwks: {file: k}, algorithms: [HS256]"),
        "identity.sources[0].bearer",
        "HMAC",
    );
    rejects(
        &source(", jwks: {url: 'http://keys.example.com/jwks.json'}"),
        "identity.sources[0].bearer",
        "use https",
    );
    rejects(
        &source(""),
        "identity.sources[0].bearer",
        "exactly one of `jwks` and `discovery: true`",
    );
    rejects(
        &format!(
            "{BASE}identity:\n  sources:\n    - bearer: {{issuer: i, audiences: [a], jwks: {{file: k}}, principalType: 'not a type'}}\n"
        ),
        "identity.sources[0].bearer",
        "is not a principal type",
    );
}
