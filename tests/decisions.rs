//! Data-driven decision tests: every policy under `tests/fixtures/decisions/`, the role
//! packs with their fixtures, and the embedded demo, each run through its own `tests:`.

use std::path::{Path, PathBuf};

use iot_authz::policy::source::{DEFAULT_MAX_POLICY_BYTES, read_paths};
use iot_authz::policy::{Snapshot, compile_sources};
use iot_authz::testing::{self, Outcome};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

fn load(paths: &[&str]) -> Snapshot {
    let paths: Vec<PathBuf> = paths.iter().map(|p| root().join(p)).collect();
    let sources = read_paths(&paths, DEFAULT_MAX_POLICY_BYTES).unwrap();
    compile_sources(&sources).unwrap_or_else(|e| panic!("{e}"))
}

/// Runs every case and fails with the list of failures; returns the number of cases.
fn run_all(snapshot: &Snapshot) -> usize {
    let results = testing::run(snapshot, iot_authz::policy::syntax::now());
    let failures: Vec<String> = results
        .iter()
        .filter(|r| r.outcome != Outcome::Passed)
        .map(|r| format!("{}: {}: {:?}", r.document, r.name, r.outcome))
        .collect();
    assert!(
        failures.is_empty(),
        "{} failing case(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
    results.len()
}

#[test]
fn evaluation_fixtures() {
    let dir = root().join("tests/fixtures/decisions");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(!files.is_empty());
    for file in files {
        let snapshot = load(&[file.to_str().unwrap()]);
        assert!(run_all(&snapshot) > 0, "{} has no cases", file.display());
    }
}

#[test]
fn role_packs_reproduce_their_seeds() {
    let snapshot = load(&["packs", "packs/fixtures"]);
    let cases = run_all(&snapshot);
    assert!(cases > 500, "only {cases} cases");
}

#[test]
fn embedded_demo_passes_its_tests_and_matches_the_files() {
    let embedded = compile_sources(&iot_authz::demo::sources()).unwrap();
    run_all(&embedded);
    let from_files = load(&["packs", "demo"]);
    assert_eq!(embedded.revision, from_files.revision);
    assert!(embedded.counts.roles >= 30);
}

/// One control-plane check without token groups, at time 0.
pub(crate) fn ask<'s>(
    snapshot: &'s Snapshot,
    principal: &str,
    action: &str,
    scope: &str,
) -> Result<iot_authz::policy::Decision<'s>, iot_authz::policy::RequestError> {
    snapshot.check(&iot_authz::policy::CheckRequest {
        principal,
        groups: &[],
        action,
        data_action: false,
        scope,
        at: 0,
    })
}

/// The engine skips validating a principal, action or scope that the policy knows (they
/// were validated when it was compiled), and looks them up in any ASCII case without a
/// lowercase copy. Unknown and malformed values must still get the same answers and errors.
#[test]
fn known_and_unknown_request_values_get_the_same_answers_and_errors() {
    use iot_authz::policy::RequestError;
    use iot_authz::policy::source::SourceDocument;

    let yaml = "version: 1
actions:
  - {name: Microsoft.Edge/targets/read}
roles:
  - {name: Reader, actions: ['*/read']}
  - {name: Writer, actions: [Microsoft.Edge/targets/write]}
assignments:
  - {principal: 'user:alice', role: Reader, scope: /}
  - {principal: 'user:bob', role: Writer, scope: /subscriptions/s1}
";
    let snapshot = compile_sources(&[SourceDocument::new("t.yaml", yaml)]).unwrap();
    let check = |principal: &str, action: &str, scope: &str| {
        ask(&snapshot, principal, action, scope).map(|d| d.allowed)
    };
    // Known action (in the catalog) and unknown action (matched by pattern), in any case.
    assert_eq!(
        check("user:alice", "MICROSOFT.EDGE/TARGETS/READ", "/x"),
        Ok(true)
    );
    assert_eq!(
        check("user:alice", "Other.Provider/things/Read", "/x"),
        Ok(true)
    );
    assert_eq!(
        check("user:alice", "Other.Provider/things/write", "/x"),
        Ok(false)
    );
    // Known scope in another case and with its one trailing slash; unknown scope below it.
    assert_eq!(
        check(
            "user:bob",
            "microsoft.edge/targets/write",
            "/SUBSCRIPTIONS/S1/"
        ),
        Ok(true)
    );
    assert_eq!(
        check(
            "user:bob",
            "Microsoft.Edge/targets/write",
            "/subscriptions/S1/rg/a"
        ),
        Ok(true)
    );
    assert_eq!(
        check(
            "user:bob",
            "Microsoft.Edge/targets/write",
            "/subscriptions/s10"
        ),
        Ok(false)
    );
    // Principal ids compare exactly: another case is an unknown (valid) principal.
    assert_eq!(check("user:Alice", "a/read", "/"), Ok(false));
    let kind = |e: RequestError| match e {
        RequestError::Principal(_) => "principal",
        RequestError::Action(_) => "action",
        RequestError::Scope(_) => "scope",
        _ => "other",
    };
    for (principal, action, scope, expected) in [
        // `/` is known, but `//` is an empty segment, not `/`.
        ("user:alice", "a/read", "//", "scope"),
        ("user:alice", "a/read", "/subscriptions/s1//", "scope"),
        ("user:alice", "a/read", "/subscriptions/./s1", "scope"),
        ("robot:alice", "a/read", "/", "principal"),
        ("user:alice", "a/re ad", "/", "action"),
        // Errors keep their order: the principal before the action before the scope.
        ("robot:x", "a*", "//", "principal"),
        ("user:alice", "a*", "//", "action"),
    ] {
        assert_eq!(
            check(principal, action, scope).map_err(kind),
            Err(expected),
            "{principal} {action} {scope}"
        );
    }
}

/// A principal's assignments are searched by a merge when it holds few (up to 64) and by a
/// binary search per ancestor beyond. Both must report the same grant: of the grants at
/// the request's ancestors, the first in policy order.
#[test]
fn long_and_short_assignment_rows_report_the_same_grant() {
    use iot_authz::policy::Reason;
    use iot_authz::policy::source::SourceDocument;

    // `grants` are (id, scope) of Writer assignments, placed at the given policy positions
    // among `fillers` Other assignments at sibling scopes.
    let policy = |fillers: usize, grants: &[(usize, &str, &str)]| {
        let mut yaml = String::from(
            "version: 1\nroles:\n  - {name: Writer, actions: [x/write]}\n  - {name: Other, actions: [y/write]}\nassignments:\n",
        );
        for i in 0..fillers {
            for (at, id, scope) in grants {
                if *at == i {
                    yaml.push_str(&format!(
                        "  - {{id: {id}, principal: 'user:u', role: Writer, scope: '{scope}'}}\n"
                    ));
                }
            }
            yaml.push_str(&format!(
                "  - {{principal: 'user:u', role: Other, scope: /s/{i}}}\n"
            ));
        }
        compile_sources(&[SourceDocument::new("rows.yaml", yaml)]).unwrap()
    };
    let granted = |snapshot: &Snapshot| {
        let decision = ask(snapshot, "user:u", "x/write", "/s/7/x/y").unwrap();
        match decision.reason {
            Reason::RoleAssignment { assignment_id, .. } => assignment_id.map(str::to_owned),
            other => panic!("not granted: {other:?}"),
        }
    };
    let orders: [&[(usize, &str, &str)]; 3] = [
        &[(2, "deep", "/s/7/x"), (3, "mid", "/s/7"), (4, "root", "/")],
        &[(2, "root", "/"), (3, "deep", "/s/7/x"), (4, "mid", "/s/7")],
        &[
            (2, "mid", "/S/7"),
            (3, "elsewhere", "/s/8"),
            (4, "deep", "/s/7/x"),
        ],
    ];
    for grants in orders {
        let expected = grants
            .iter()
            .find(|(_, _, scope)| *scope != "/s/8")
            .map(|(_, id, _)| (*id).to_owned());
        let short = policy(8, grants);
        let medium = policy(40, grants);
        let long = policy(150, grants);
        assert_eq!(granted(&short), expected, "short row, {grants:?}");
        assert_eq!(granted(&medium), expected, "medium row, {grants:?}");
        assert_eq!(granted(&long), expected, "long row, {grants:?}");
    }
}

/// A request's scope is looked up by every prefix, longest first, to find its longest known
/// ancestor. Prefixes longer than every known scope are skipped without being hashed, so a
/// hostile scope of a million segments costs one pass over its bytes, not one pass per
/// segment (which took minutes at this size). The answer is still the one its known
/// ancestors give.
#[test]
fn a_scope_of_a_million_segments_is_answered_in_one_pass() {
    let policy = "version: 1\nroles:\n  - {name: R, actions: [a/read]}\nassignments:\n  - {principal: 'user:u', role: R, scope: /x}\n";
    let snapshot =
        iot_authz::policy::compile_sources(&[iot_authz::policy::source::SourceDocument::new(
            "deep.yaml",
            policy,
        )])
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let deep = "/x".repeat(1_000_000);
        let granted = ask(&snapshot, "user:u", "a/read", &deep).map(|d| d.allowed);
        let other = ask(&snapshot, "user:u", "a/read", &format!("/y{deep}")).map(|d| d.allowed);
        let _ = tx.send((granted, other));
    });
    // Only a regression to one hash per prefix comes near this bound (about 10^12 bytes
    // hashed); the linear pass takes milliseconds.
    let answers = rx.recv_timeout(std::time::Duration::from_secs(120));
    assert_eq!(answers, Ok((Ok(true), Ok(false))));
}

/// Scopes compare in any case, but output keeps the policy's spelling (SPEC §2): a reason
/// names the scope as the assignment that granted it spells it, even when another object
/// mentioned the same scope first in another case (here a scope link and an assignment).
#[test]
fn a_reason_spells_the_scope_as_its_assignment_does() {
    use iot_authz::policy::Reason;
    let policy = "version: 1
roles:
  - {name: R, actions: [x/read]}
scopeLinks:
  - {scope: /Other, parents: [/M]}
assignments:
  - {id: first, principal: 'user:a', role: R, scope: /Apps/Fleet}
  - {id: second, principal: 'user:b', role: R, scope: /apps/fleet/}
  - {id: third, principal: 'user:c', role: R, scope: /m/}
";
    let snapshot =
        iot_authz::policy::compile_sources(&[iot_authz::policy::source::SourceDocument::new(
            "spelling.yaml",
            policy,
        )])
        .unwrap();
    for (principal, scope, id, shown) in [
        ("user:a", "/APPS/FLEET/x", "first", "/Apps/Fleet"),
        // the trailing slash it was written with, too
        ("user:b", "/apps/fleet/x", "second", "/apps/fleet/"),
        ("user:c", "/m/y", "third", "/m/"),
    ] {
        let decision = ask(&snapshot, principal, "x/read", scope).unwrap();
        assert!(decision.allowed, "{principal}");
        match decision.reason {
            Reason::RoleAssignment {
                assignment_id,
                scope,
                ..
            } => {
                assert_eq!(assignment_id, Some(id));
                assert_eq!(scope, shown, "{principal}");
            }
            other => panic!("{principal}: {other:?}"),
        }
        let permissions = snapshot
            .permissions(principal, &[], scope, 0)
            .unwrap()
            .into_iter()
            .flat_map(|p| p.assignments)
            .collect::<Vec<_>>();
        assert!(
            permissions
                .iter()
                .all(|r| matches!(r, Reason::RoleAssignment { scope, .. } if *scope == shown)),
            "{principal}: {permissions:?}"
        );
        assert!(!permissions.is_empty(), "{principal}");
    }
}
