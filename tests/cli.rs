//! The `iot-authz` command line, run as a real process: exit codes and JSON output
//! (SPEC §8).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_iot-authz"))
        .args(args)
        .output()
        .unwrap()
}

/// `check` of one plain request against the policy at `policy`.
fn check_args(policy: &str) -> [&str; 9] {
    [
        "check",
        "--policy",
        policy,
        "--principal",
        "user:a",
        "--action",
        "a/b",
        "--scope",
        "/",
    ]
}

fn code(out: &Output) -> i32 {
    out.status.code().unwrap()
}

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

fn small() -> String {
    fixture("cli/small.yaml").display().to_string()
}

#[test]
fn check_allow_exits_0_with_the_spec_json() {
    let out = run(&[
        "check",
        "--policy",
        &small(),
        "--principal",
        "user:ann",
        "--action",
        "Fleet/devices/read",
        "--scope",
        "/apps/fleet/devices/d1",
        "--json",
    ]);
    assert_eq!(code(&out), 0, "{out:?}");
    let v = json(&out);
    assert_eq!(v["allowed"], true);
    assert_eq!(v["reason"]["kind"], "roleAssignment");
    assert_eq!(v["reason"]["role"], "Device Reader");
    assert_eq!(v["reason"]["assignmentId"], "a-1");
    assert_eq!(v["reason"]["scope"], "/apps/fleet");
    assert_eq!(v["reason"]["via"], "group:ops");
    assert_eq!(v["action"], "Fleet/devices/read");
    assert_eq!(v["scope"], "/apps/fleet/devices/d1");
    assert_eq!(v["revision"].as_str().unwrap().len(), 64);
}

#[test]
fn check_deny_exits_1() {
    let out = run(&[
        "check",
        "--policy",
        &small(),
        "--principal",
        "user:ann",
        "--action",
        "Fleet/devices/update",
        "--scope",
        "/apps/fleet",
        "--json",
    ]);
    assert_eq!(code(&out), 1);
    assert_eq!(json(&out)["reason"]["kind"], "noGrant");
}

#[test]
fn check_method_path_form_covers_every_deny_kind() {
    let base = ["check", "--policy", &small(), "--json"].map(String::from);
    let cases: [(&[&str], i32, &str); 5] = [
        (
            &[
                "--principal",
                "user:ann",
                "--method",
                "GET",
                "--path",
                "/apps/fleet/devices/d1",
            ],
            0,
            "roleAssignment",
        ),
        (
            &[
                "--principal",
                "user:ann",
                "--method",
                "GET",
                "--path",
                "/apps/fleet/devices/%2e%2e",
            ],
            1,
            "malformed",
        ),
        (
            &[
                "--principal",
                "user:ann",
                "--method",
                "GET",
                "--path",
                "/nowhere",
            ],
            1,
            "noRoute",
        ),
        (
            &["--method", "GET", "--path", "/apps/fleet/devices/d1"],
            1,
            "noIdentity",
        ),
        (
            &[
                "--method",
                "GET",
                "--path",
                "/apps/fleet/devices/d1",
                "--header",
                "x-iotauthz-principal: user:ann",
            ],
            0,
            "roleAssignment",
        ),
    ];
    for (extra, want, kind) in cases {
        let mut args: Vec<&str> = base.iter().map(String::as_str).collect();
        args.extend_from_slice(extra);
        let out = run(&args);
        assert_eq!(code(&out), want, "{extra:?}: {out:?}");
        assert_eq!(json(&out)["reason"]["kind"], kind, "{extra:?}");
    }
}

#[test]
fn check_errors_exit_2() {
    for args in [
        &[
            "check",
            "--policy",
            &small(),
            "--principal",
            "ann",
            "--action",
            "a/b",
            "--scope",
            "/",
        ][..],
        &[
            "check",
            "--policy",
            &small(),
            "--principal",
            "user:ann",
            "--action",
            "a/b",
            "--scope",
            "no-slash",
        ],
        &check_args("/does/not/exist.yaml"),
        &["check", "--principal", "user:a", "--action", "a/b"],
        &[
            "check",
            "--principal",
            "user:a",
            "--action",
            "a/b",
            "--scope",
            "/",
            "--at",
            "yesterday",
        ],
        // A header without a name, or without a colon.
        &["check", "--method", "GET", "--path", "/", "--header", ":v"],
        &[
            "check", "--method", "GET", "--path", "/", "--header", "novalue",
        ],
    ] {
        let out = run(args);
        assert_eq!(code(&out), 2, "{args:?}: {out:?}");
    }
    // Exit 2 alone is any error: a header without a name says why.
    let out = run(&["check", "--method", "GET", "--path", "/", "--header", ":v"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("`:v` is not NAME:VALUE"),
        "{out:?}"
    );
}

#[test]
fn check_uses_the_embedded_demo_without_policy() {
    let out = run(&[
        "check",
        "--principal",
        "user:alice@contoso.com",
        "--method",
        "GET",
        "--path",
        "/subscriptions/s1/resourceGroups/factory/providers/Microsoft.Edge/targets/line-1",
        "--json",
    ]);
    assert_eq!(code(&out), 0, "{out:?}");
    assert_eq!(json(&out)["action"], "Microsoft.Edge/targets/read");
}

#[test]
fn check_honours_at_and_groups() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.yaml");
    std::fs::write(
        &file,
        "version: 1\nroles:\n  - {name: R, actions: ['*']}\nassignments:\n  - {principal: 'group:g', role: R, scope: /, notAfter: '2026-01-01T00:00:00Z'}\n",
    )
    .unwrap();
    let file = file.to_str().unwrap();
    let args = |at: &str| {
        run(&[
            "check",
            "--policy",
            file,
            "--principal",
            "user:x",
            "--group",
            "group:g",
            "--action",
            "a/b",
            "--scope",
            "/",
            "--at",
            at,
        ])
    };
    assert_eq!(code(&args("2025-06-01T00:00:00Z")), 0);
    assert_eq!(code(&args("2026-06-01T00:00:00Z")), 1);
}

#[test]
fn validate_exit_codes_and_problems() {
    assert_eq!(code(&run(&["validate", &small()])), 0);
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "version: 1\nroles:\n  - {name: R, notAction: [x]}\nassignments:\n  - {principal: 'user:a', role: Nope, scope: /}\n").unwrap();
    let out = run(&["validate", bad.to_str().unwrap()]);
    assert_eq!(code(&out), 2);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("bad.yaml") && text.contains("notAction"),
        "{text}"
    );
    let out = run(&["validate", "--json", bad.to_str().unwrap()]);
    assert_eq!(code(&out), 2);
    assert_eq!(json(&out)["valid"], false);

    // Invalid `tests:` cases are problems, each named; a failing case is not.
    let cases = dir.path().join("cases.yaml");
    std::fs::write(
        &cases,
        "version: 1\nroutes:\n  - {methods: [GET], path: '/s/{s}', action: x/read, scope: '/{s}'}\ntests:\n  - {name: fails, principal: 'user:a', action: x/read, scope: /, expect: allow}\n  - {name: bad time, principal: 'user:a', action: x/read, scope: /, at: tomorrow, expect: deny}\n  - {name: mixed, principal: 'user:a', action: x/read, scope: /s1, path: /elsewhere, expect: deny}\n  - {name: mixed too, principal: 'user:a', method: GET, path: /s/s1, scope: /other, expect: deny}\n",
    )
    .unwrap();
    let out = run(&["validate", "--json", cases.to_str().unwrap()]);
    assert_eq!(code(&out), 2, "{out:?}");
    let problems: Vec<(String, String)> = json(&out)["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["object"].as_str().unwrap().to_owned(),
                p["message"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(problems.len(), 3, "{problems:?}");
    assert_eq!(problems[0].0, "tests[1] `bad time`");
    assert!(problems[0].1.contains("RFC 3339"), "{problems:?}");
    assert_eq!(problems[1].0, "tests[2] `mixed`");
    assert!(problems[1].1.contains("no `path`"), "{problems:?}");
    assert_eq!(problems[2].0, "tests[3] `mixed too`");
    assert!(problems[2].1.contains("no `scope`"), "{problems:?}");
    assert_eq!(code(&run(&["test", cases.to_str().unwrap()])), 2);
}

#[test]
fn test_command_counts_and_exit_codes() {
    let out = run(&["test", &small()]);
    assert_eq!(code(&out), 0, "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().last(),
        Some("2 passed, 0 failed")
    );

    let dir = tempfile::tempdir().unwrap();
    let failing = dir.path().join("f.yaml");
    std::fs::write(
        &failing,
        "version: 1\ntests:\n  - {name: nobody may, principal: 'user:a', action: a/b, scope: /, expect: allow}\n  - {name: fine, principal: 'user:a', action: a/b, scope: /, expect: deny, reason: noGrant}\n",
    )
    .unwrap();
    let out = run(&["test", failing.to_str().unwrap()]);
    assert_eq!(code(&out), 1);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("FAIL") && text.contains("nobody may"),
        "{text}"
    );
    assert_eq!(text.lines().last(), Some("1 passed, 1 failed"));

    let broken = dir.path().join("b.yaml");
    std::fs::write(&broken, "version: 1\ntests:\n  - {name: no scope, principal: 'user:a', action: a/b, expect: allow}\n").unwrap();
    assert_eq!(code(&run(&["test", broken.to_str().unwrap()])), 2);
    assert_eq!(code(&run(&["test", "/does/not/exist"])), 2);
    // An expected reason that is not a reason kind (here in the wrong case) makes the case
    // invalid, not failed: it could never pass.
    let misspelt = dir.path().join("m.yaml");
    std::fs::write(&misspelt, "version: 1\ntests:\n  - {name: spelling, principal: 'user:a', action: a/b, scope: /, expect: deny, reason: nogrant}\n").unwrap();
    let out = run(&["test", misspelt.to_str().unwrap()]);
    assert_eq!(code(&out), 2, "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("unknown kind `nogrant`"),
        "{out:?}"
    );
}

#[test]
fn validate_and_test_take_paths_policy_options_or_the_demo() {
    // `--policy` works like a path argument (SPEC §8: every command that reads a policy
    // takes it), and both may be given: the documents are read arguments first.
    let out = run(&["validate", "--policy", &small(), "--json"]);
    assert_eq!(code(&out), 0, "{out:?}");
    assert_eq!(json(&out)["counts"]["documents"], 1);
    let dir = tempfile::tempdir().unwrap();
    let extra = dir.path().join("extra.yaml");
    std::fs::write(
        &extra,
        "version: 1\ntests:\n  - {name: ed reads, principal: 'user:ed', action: Fleet/devices/read, scope: /apps/fleet/d, expect: allow}\n",
    )
    .unwrap();
    let extra = extra.to_str().unwrap();
    let out = run(&["validate", &small(), "--policy", extra, "--json"]);
    assert_eq!(json(&out)["counts"]["documents"], 2, "{out:?}");
    let out = run(&["test", &small(), "--policy", extra]);
    assert_eq!(code(&out), 0, "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().last(),
        Some("3 passed, 0 failed")
    );
    // Neither: the embedded demo policy, whose packs carry their own test suites.
    let out = run(&["validate", "--json"]);
    assert_eq!(code(&out), 0, "{out:?}");
    assert!(json(&out)["counts"]["documents"].as_u64().unwrap() > 1);
    let out = run(&["test", "--json"]);
    assert_eq!(code(&out), 0, "{out:?}");
    let v = json(&out);
    assert!(v["passed"].as_u64().unwrap() > 1000, "{v}");
    assert_eq!(v["failed"], 0);
}

#[test]
fn an_empty_identity_source_list_trusts_no_header() {
    // Only an absent `sources` means the default header source; `sources: []` is no
    // source at all, so a client's header cannot become the principal.
    let dir = tempfile::tempdir().unwrap();
    let with = |identity: &str| {
        let path = dir.path().join(format!("p{}.yaml", identity.len()));
        let base = std::fs::read_to_string(small()).unwrap();
        std::fs::write(&path, format!("{base}identity: {identity}\n")).unwrap();
        let out = run(&[
            "check",
            "--policy",
            path.to_str().unwrap(),
            "--method",
            "GET",
            "--path",
            "/apps/fleet/devices/d1",
            "--header",
            "x-iotauthz-principal: user:ann",
            "--json",
        ]);
        (code(&out), json(&out)["reason"]["kind"].clone())
    };
    assert_eq!(with("{sources: []}"), (1, "noIdentity".into()));
    assert_eq!(
        with("{assignAction: Microsoft.Authorization/roleAssignments/write}"),
        (0, "roleAssignment".into())
    );
    assert_eq!(
        with("{sources: [{header: x-iotauthz-principal}]}"),
        (0, "roleAssignment".into())
    );
}

#[test]
fn serve_json_logs_one_json_object_per_line() {
    use std::io::BufRead;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_iot-authz"))
        .args(["serve", "--json", "--grpc-addr", "127.0.0.1:0"])
        .args(["--http-addr", "127.0.0.1:0"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    // Up to the `listening` line, every line is one JSON object.
    let mut messages = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
        let message = v["fields"]["message"].as_str().unwrap().to_owned();
        assert_eq!(v["level"], "INFO", "{line}");
        messages.push(message);
        if messages.last().is_some_and(|m| m == "listening") {
            break;
        }
    }
    // The loop ends at `listening`, not because the server died and closed its stderr.
    assert_eq!(
        messages.last().map(String::as_str),
        Some("listening"),
        "{messages:?}"
    );
    assert!(messages[0].contains("embedded demo policy"), "{messages:?}");
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn permissions_lists_catalog_expanded_actions() {
    let out = run(&[
        "permissions",
        "--policy",
        &small(),
        "--principal",
        "user:ed",
        "--scope",
        "/apps/fleet/x",
        "--json",
    ]);
    assert_eq!(code(&out), 0, "{out:?}");
    let v = json(&out);
    let actions: Vec<&str> = v["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["action"].as_str().unwrap())
        .collect();
    assert!(actions.contains(&"Fleet/devices/update"), "{actions:?}");
    assert!(actions.contains(&"Fleet/devices/read"), "{actions:?}");
    // Sorted by action (in any case), whatever the policy's order.
    let mut sorted = actions.clone();
    sorted.sort_by_key(|a| a.to_ascii_lowercase());
    assert_eq!(actions, sorted);
    let read = v["actions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["action"] == "Fleet/devices/read")
        .unwrap();
    assert_eq!(read["assignments"].as_array().unwrap().len(), 2, "{read}");
    assert_eq!(
        code(&run(&[
            "permissions",
            "--policy",
            &small(),
            "--principal",
            "bad",
            "--scope",
            "/"
        ])),
        2
    );
}

#[test]
fn who_can_lists_principals_and_groups() {
    let out = run(&[
        "who-can",
        "--policy",
        &small(),
        "--action",
        "Fleet/devices/read",
        "--scope",
        "/apps/fleet/d",
        "--json",
    ]);
    assert_eq!(code(&out), 0);
    let v = json(&out);
    assert_eq!(v["groups"], serde_json::json!(["group:ops"]));
    assert_eq!(
        v["principals"],
        serde_json::json!(["user:ann", "user:ed", "user:ra"])
    );
}

#[test]
fn can_assign_follows_delegation() {
    let p = small();
    // ed holds roleAssignments/write and everything Device Editor grants.
    let out = run(&[
        "can-assign",
        "--policy",
        &p,
        "--actor",
        "user:ed",
        "--role",
        "Device Editor",
        "--scope",
        "/apps/fleet",
        "--json",
    ]);
    assert_eq!(code(&out), 0, "{out:?}");
    assert_eq!(json(&out)["missingActions"], serde_json::json!([]));
    // ra may assign but lacks the update permission.
    let out = run(&[
        "can-assign",
        "--policy",
        &p,
        "--actor",
        "user:ra",
        "--role",
        "Device Editor",
        "--scope",
        "/apps/fleet",
        "--json",
    ]);
    assert_eq!(code(&out), 1);
    assert_eq!(
        json(&out)["missingActions"],
        serde_json::json!(["Fleet/devices/update"])
    );
    // ann lacks the assign action itself.
    let out = run(&[
        "can-assign",
        "--policy",
        &p,
        "--actor",
        "user:ann",
        "--role",
        "Device Reader",
        "--scope",
        "/apps/fleet",
        "--json",
    ]);
    assert_eq!(code(&out), 1);
    assert_eq!(
        json(&out)["missingActions"],
        serde_json::json!(["Microsoft.Authorization/roleAssignments/write"])
    );
    assert_eq!(
        code(&run(&[
            "can-assign",
            "--policy",
            &p,
            "--actor",
            "user:ed",
            "--role",
            "Nope",
            "--scope",
            "/"
        ])),
        2
    );
}

#[test]
fn import_azure_converts_and_refuses_conditions() {
    let azure = |f: &str| fixture(&format!("azure/{f}")).display().to_string();
    let out = run(&[
        "import-azure",
        &azure("role-definitions.json"),
        &azure("role-assignments.json"),
    ]);
    assert_eq!(code(&out), 0, "{out:?}");
    let yaml = String::from_utf8(out.stdout).unwrap();
    assert!(
        yaml.contains("acdd72a7-3385-48ef-bd42-f606fba81ae7"),
        "{yaml}"
    );
    // The output is a policy document (it names Owner, which these files do not define).
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("imported.yaml");
    std::fs::write(&file, &yaml).unwrap();
    let out = run(&["validate", file.to_str().unwrap()]);
    let problems = String::from_utf8_lossy(&out.stdout);
    assert!(
        problems
            .lines()
            .filter(|l| l.contains("imported.yaml"))
            .all(|l| l.contains("Owner")),
        "{problems}"
    );
    let out = run(&["import-azure", "--json", &azure("role-definitions.json")]);
    assert_eq!(code(&out), 0);
    assert_eq!(json(&out)["version"], 1);
    let out = run(&[
        "import-azure",
        &azure("role-definitions.json"),
        &azure("assignment-with-condition.json"),
    ]);
    assert_eq!(code(&out), 2);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("condition"),
        "{out:?}"
    );
    assert_eq!(code(&run(&["import-azure", "/does/not/exist.json"])), 2);

    // A self-contained import that would not load is an error, not output: a role
    // assignable at a management group, assigned at a subscription (the JSON cannot show
    // that the subscription is below the group). Imported apart, each file converts.
    let roles = dir.path().join("mg-roles.json");
    std::fs::write(
        &roles,
        r#"[{"roleName": "Plant MG Reader", "name": "9a1b2c3d-0000-4000-8000-000000000001",
            "assignableScopes": ["/providers/Microsoft.Management/managementGroups/mg-plants"],
            "permissions": [{"actions": ["*/read"]}]}]"#,
    )
    .unwrap();
    let assignments = dir.path().join("mg-assignments.json");
    std::fs::write(
        &assignments,
        r#"[{"principalId": "a1", "principalType": "User", "roleDefinitionName": "Plant MG Reader",
            "scope": "/subscriptions/6f2e0000-0000-4000-8000-000000000001", "name": "x1"}]"#,
    )
    .unwrap();
    let (roles, assignments) = (roles.to_str().unwrap(), assignments.to_str().unwrap());
    let out = run(&["import-azure", roles, assignments]);
    assert_eq!(code(&out), 2, "{out:?}");
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("does not validate") && err.contains("assignable scopes"),
        "{err}"
    );
    assert_eq!(code(&run(&["import-azure", roles])), 0);
    assert_eq!(code(&run(&["import-azure", assignments])), 0);
}

/// Runs the binary, failing the test if it has not exited within `limit` (a regression
/// that waits on a FIFO would otherwise hang the test run).
fn run_within(args: &[&str], limit: std::time::Duration) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_iot-authz"))
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!(
                "`iot-authz {}` still running after {limit:?}",
                args.join(" ")
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// A FIFO or a device under a policy name is refused at once: opening a FIFO would wait for
/// a writer, and `/dev/zero` never ends. Directories holding one refuse it too.
#[test]
fn files_that_are_not_regular_are_refused_without_reading_them() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("policy.yaml");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let fifo = fifo.to_str().unwrap();
    let dir_path = dir.path().to_str().unwrap();
    let limit = std::time::Duration::from_secs(30);
    for args in [
        vec!["validate", fifo],
        vec!["validate", "/dev/zero"],
        vec!["validate", dir_path],
        vec!["test", fifo],
        check_args("/dev/zero").to_vec(),
        vec!["import-azure", fifo],
        vec!["import-azure", "/dev/zero"],
    ] {
        let out = run_within(&args, limit);
        assert_eq!(code(&out), 2, "{args:?}: {out:?}");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(text.contains("not a regular file"), "{args:?}: {text}");
    }
}

/// IoT Central: "a user may only grant roles with the same or fewer permissions", with the
/// app's own user-management permission as the assign action.
#[test]
fn iot_central_delegation_through_can_assign() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("zz-identity.yaml"),
        "version: 1\nidentity:\n  assignAction: IoTCentral/users/add\n",
    )
    .unwrap();
    let packs = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("packs")
        .display()
        .to_string();
    let extra = dir.path().display().to_string();
    let snapshot_has = |actor: &str, role: &str, scope: &str| {
        let out = run(&[
            "can-assign",
            "--policy",
            &packs,
            "--policy",
            &extra,
            "--actor",
            actor,
            "--role",
            role,
            "--scope",
            scope,
            "--json",
        ]);
        (code(&out), json(&out))
    };
    // The pack's example users: alice is App Administrator, bob App Builder, carol App
    // Operator, olivia Org Administrator at Contoso.
    let (c, v) = snapshot_has("user:ioc-alice", "App Operator", "/apps/fleet");
    assert_eq!(c, 0, "{v}");
    let (c, v) = snapshot_has("user:ioc-bob", "App Administrator", "/apps/fleet");
    assert_eq!(c, 1, "{v}");
    assert!(
        v["missingActions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a.as_str().unwrap().contains("billing")),
        "{v}"
    );
    let seattle = "/apps/fleet/organizations/contoso/organizations/seattle";
    let (c, v) = snapshot_has("user:ioc-olivia", "Org Viewer", seattle);
    assert_eq!(c, 0, "{v}");
    let (c, v) = snapshot_has(
        "user:ioc-olivia",
        "Org Viewer",
        "/apps/fleet/organizations/fabrikam",
    );
    assert_eq!(c, 1, "{v}");
    // The assign action is among the missing ones, which are sorted (in any case).
    let missing: Vec<String> = v["missingActions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect();
    assert!(missing.iter().any(|a| a == "IoTCentral/users/add"), "{v}");
    let mut sorted = missing.clone();
    sorted.sort_by_key(|a| a.to_ascii_lowercase());
    assert_eq!(missing, sorted);
    let (c, _) = snapshot_has("user:ioc-carol", "Org Viewer", seattle);
    assert_eq!(c, 1);
}

#[test]
fn serve_refuses_an_unknown_log_format() {
    // A typo used to give text logs silently; now it is a usage error before serving.
    let out = run(&["serve", "--log-format", "jsn", "--grpc-addr", "127.0.0.1:0"]);
    assert_eq!(code(&out), 2, "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("invalid value 'jsn'"), "{stderr}");
    assert!(stderr.contains("text, json"), "{stderr}");
}

#[test]
fn every_flag_and_argument_has_help_text() {
    use clap::CommandFactory;
    let cli = iot_authz::cli::Cli::command();
    let mut missing = Vec::new();
    for command in cli.get_subcommands() {
        for arg in command.get_arguments() {
            let id = arg.get_id().as_str();
            if id != "help" && id != "version" && arg.get_help().is_none() {
                missing.push(format!("{} {id}", command.get_name()));
            }
        }
    }
    assert!(missing.is_empty(), "no help text: {missing:?}");
}

#[test]
fn check_verifies_a_bearer_token_against_a_jwks_file() {
    use crate::support::jwt::{TestKey, claims, jwks, unix_now};
    let dir = tempfile::tempdir().unwrap();
    let key = TestKey::ec("k1", jsonwebtoken::Algorithm::ES256);
    let jwks_path = dir.path().join("jwks.json");
    std::fs::write(&jwks_path, jwks(&[&key])).unwrap();
    let policy = dir.path().join("policy.yaml");
    let base = std::fs::read_to_string(small()).unwrap();
    std::fs::write(
        &policy,
        format!(
            "{base}identity: {{sources: [{{bearer: {{issuer: iss, audiences: [api], jwks: {{file: '{}'}}, principalType: user}}}}]}}\n",
            jwks_path.display()
        ),
    )
    .unwrap();
    let with = |token: &str| {
        let header = format!("authorization: Bearer {token}");
        let out = run(&[
            "check",
            "--policy",
            policy.to_str().unwrap(),
            "--method",
            "GET",
            "--path",
            "/apps/fleet/devices/d1",
            "--header",
            &header,
            "--json",
        ]);
        (
            code(&out),
            json(&out)["principal"].clone(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code_ok, principal, _) = with(&key.sign(&claims("iss", "api", "ann", unix_now())));
    assert_eq!((code_ok, principal), (0, Value::from("user:ann")));
    let expired = key.sign(&claims("iss", "api", "ann", unix_now() - 7200));
    let (code_expired, _, stderr) = with(&expired);
    assert_eq!(code_expired, 1);
    assert!(stderr.contains("refused: expired"), "{stderr}");
    assert!(!stderr.contains(&expired));
}
