//! The Admin API (SPEC §9) against a real etcd: grants and revocations authorized by the
//! policy itself, each write-time rule refused with nothing written (read back from etcd),
//! concurrent revocations of the last administrators, and the audit lines.

use iot_authz::proto::iotauthz::v1 as pb;
use iot_authz::proto::iotauthz::v1::admin_client::AdminClient;
use iot_authz::server::AppOptions;
use iot_authz::server::decision_log::LogTarget;
use tonic::Code;
use tonic::transport::Channel;

use crate::decisions::ask;
use crate::store::{PREFIX, allowed, assignment};
use crate::support::TestServer;
use crate::support::etcd::{Etcd, judged, serve_with_store_options};

/// Roles in the files; two App Administrators in the store, which must keep at least one.
const FILES: &str = r#"
version: 1
actions:
  - name: Devices/read
  - name: Devices/write
roles:
  - name: Reader
    id: r-reader
    actions: ["Devices/read"]
  - name: Device Writer
    id: r-writer
    actions: ["Devices/read", "Devices/write"]
  - name: App Administrator
    id: r-admin
    actions: ["*"]
    assignableScopes: ["/apps"]
  - name: User Administrator
    id: r-useradmin
    actions: ["Microsoft.Authorization/*", "Devices/read"]
assignments:
  - {principal: "user:helpdesk", role: User Administrator, scope: /, id: f-1}
constraints:
  - minAssignments: {role: App Administrator, scope: /apps/fleet, count: 1}
"#;

struct Fixture {
    etcd: Etcd,
    server: TestServer,
    store: std::sync::Arc<iot_authz::store::Store>,
    log: tempfile::NamedTempFile,
}

async fn fixture() -> Fixture {
    let etcd = Etcd::start().await;
    etcd.put(
        "/t/assignments/admin-1",
        assignment("admin-1", "user:root1", "App Administrator", "/apps").as_bytes(),
    );
    etcd.put(
        "/t/assignments/admin-2",
        assignment("admin-2", "user:root2", "App Administrator", "/apps").as_bytes(),
    );
    let log = tempfile::NamedTempFile::new().unwrap();
    let options = AppOptions {
        decision_log: Some((LogTarget::File(log.path().to_owned()), 1.0)),
        ..AppOptions::default()
    };
    let (server, store) = serve_with_store_options(
        etcd.endpoints(),
        PREFIX,
        &[("roles.yaml", FILES)],
        |_| {},
        &options,
        true,
    )
    .await;
    Fixture {
        etcd,
        server,
        store,
        log,
    }
}

async fn admin(server: &TestServer) -> AdminClient<Channel> {
    AdminClient::connect(server.grpc_url()).await.unwrap()
}

fn as_actor<T>(actor: &str, message: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    r.metadata_mut()
        .insert("x-iotauthz-principal", actor.parse().unwrap());
    r
}

fn grant(id: &str, principal: &str, role: &str, scope: &str) -> pb::CreateRoleAssignmentRequest {
    pb::CreateRoleAssignmentRequest {
        assignment: Some(pb::RoleAssignment {
            id: id.into(),
            principal: principal.into(),
            role: role.into(),
            scope: scope.into(),
            ..Default::default()
        }),
    }
}

fn revision(token: &str) -> i64 {
    token.strip_prefix('r').unwrap().parse().unwrap()
}

/// The replica that validates a write installs the overlay it validated the write on
/// when the watch brings that write, instead of making it again; a change by anyone
/// else is made as usual. Either way the policy is the one the writes make.
#[tokio::test]
async fn the_overlay_a_write_was_validated_on_is_the_one_installed() {
    let f = fixture().await;
    let mut c = admin(&f.server).await;
    let installed = || f.store.validated_overlays_installed();
    let before = installed();
    let created = c
        .create_role_assignment(as_actor(
            "user:root1",
            grant("v-1", "user:val", "Reader", "/apps/fleet"),
        ))
        .await
        .unwrap()
        .into_inner();
    judged(&f.store, revision(&created.token)).await;
    assert_eq!(installed(), before + 1);
    assert!(allowed(&f.server, "user:val", "Devices/read", "/apps/fleet/d1").await);
    assert!(!allowed(&f.server, "user:val", "Devices/write", "/apps/fleet/d1").await);
    // A grant written straight into etcd: made by the watch, nothing validated.
    let at = f.etcd.put(
        "/t/assignments/d-1",
        assignment("d-1", "user:direct", "Device Writer", "/apps").as_bytes(),
    );
    judged(&f.store, at).await;
    assert_eq!(installed(), before + 1);
    assert!(allowed(&f.server, "user:direct", "Devices/write", "/apps/x").await);
    // A revocation, validated and installed likewise, over the overlay of the two.
    let deleted = c
        .delete_role_assignment(as_actor(
            "user:root1",
            pb::DeleteRoleAssignmentRequest { id: "v-1".into() },
        ))
        .await
        .unwrap()
        .into_inner();
    judged(&f.store, revision(&deleted.token)).await;
    assert_eq!(installed(), before + 2);
    assert!(!allowed(&f.server, "user:val", "Devices/read", "/apps/fleet/d1").await);
    assert!(allowed(&f.server, "user:direct", "Devices/write", "/apps/x").await);
    // The served policy is the one a full compile of the same objects makes.
    let served = f.server.app.policy.current().unwrap();
    assert!(served.snapshot.has_overlay());
    let full = served.snapshot.full();
    assert!(
        !full.has_overlay(),
        "the installed overlay cannot compile its full policy"
    );
    for (principal, action, scope) in [
        ("user:val", "Devices/read", "/apps/fleet/d1"),
        ("user:direct", "Devices/write", "/apps/x"),
        ("user:root1", "Devices/write", "/apps/fleet"),
        ("user:helpdesk", "Devices/read", "/apps"),
    ] {
        let (a, b) = (
            ask(&served.snapshot, principal, action, scope).unwrap(),
            ask(full, principal, action, scope).unwrap(),
        );
        assert_eq!(
            (a.allowed, format!("{:?}", a.reason)),
            (b.allowed, format!("{:?}", b.reason)),
            "{principal}"
        );
    }
}

#[tokio::test]
async fn grant_list_and_revoke_through_the_admin_api() {
    let f = fixture().await;
    let mut c = admin(&f.server).await;
    let created = c
        .create_role_assignment(as_actor(
            "user:root1",
            grant("g-1", "user:bob", "Reader", "/apps/fleet"),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(created.assignment.unwrap().id, "g-1");
    let stored: serde_json::Value =
        serde_json::from_str(&f.etcd.get("/t/assignments/g-1").unwrap()).unwrap();
    assert_eq!(stored["principal"], "user:bob");
    assert_eq!(stored["role"], "Reader");
    judged(&f.store, revision(&created.token)).await;
    assert!(allowed(&f.server, "user:bob", "Devices/read", "/apps/fleet/d1").await);

    // An id is generated when none is given.
    let generated = c
        .create_role_assignment(as_actor(
            "user:root1",
            grant("", "user:carol", "Reader", "/apps/fleet"),
        ))
        .await
        .unwrap()
        .into_inner();
    let id = generated.assignment.unwrap().id;
    assert_eq!(id.len(), 36, "{id}");
    assert!(f.etcd.get(&format!("/t/assignments/{id}")).is_some());
    judged(&f.store, revision(&generated.token)).await;

    // Listing: filters and pages.
    let list = c
        .list_role_assignments(as_actor(
            "user:root1",
            pb::ListRoleAssignmentsRequest {
                role: "app administrator".into(),
                scope: "/apps".into(),
                page_size: 1,
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.assignments.len(), 1);
    assert_eq!(list.assignments[0].id, "admin-1");
    assert!(!list.next_page_token.is_empty());
    let next = c
        .list_role_assignments(as_actor(
            "user:root1",
            pb::ListRoleAssignmentsRequest {
                role: "r-admin".into(),
                scope: "/apps".into(),
                page_size: 1,
                page_token: list.next_page_token,
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(next.assignments[0].id, "admin-2");
    assert!(next.next_page_token.is_empty());
    let under = c
        .list_role_assignments(as_actor(
            "user:root1",
            pb::ListRoleAssignmentsRequest {
                principal: "user:bob".into(),
                scope: "/APPS".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(under.assignments.len(), 1);
    assert_eq!(under.assignments[0].scope, "/apps/fleet");

    // Revoke.
    let deleted = c
        .delete_role_assignment(as_actor(
            "user:root1",
            pb::DeleteRoleAssignmentRequest { id: "g-1".into() },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(f.etcd.get("/t/assignments/g-1").is_none());
    judged(&f.store, revision(&deleted.token)).await;
    assert!(!allowed(&f.server, "user:bob", "Devices/read", "/apps/fleet/d1").await);

    // Every attempt is one audit line, refused ones too.
    let err = c
        .delete_role_assignment(as_actor(
            "user:bob",
            pb::DeleteRoleAssignmentRequest {
                id: "admin-1".into(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(
        err.message().contains("roleAssignments/delete"),
        "{}",
        err.message()
    );
    let audit = read_audit(&f.log, 4).await;
    let lines: Vec<serde_json::Value> = audit
        .iter()
        .filter(|l| l["api"] == "admin")
        .cloned()
        .collect();
    assert_eq!(lines.len(), 4, "{audit:?}");
    assert_eq!(lines[0]["operation"], "createRoleAssignment");
    assert_eq!(lines[0]["actor"], "user:root1");
    assert_eq!(lines[0]["object"], "assignments/g-1");
    assert_eq!(lines[0]["result"], "accepted");
    assert_eq!(lines[0]["token"], created.token.as_str());
    assert_eq!(lines[2]["operation"], "deleteRoleAssignment");
    assert_eq!(lines[3]["result"], "permissionDenied");
    assert_eq!(lines[3]["actor"], "user:bob");
}

/// Waits (bounded) until the log holds at least `n` admin lines, and returns every line.
pub async fn read_audit(log: &tempfile::NamedTempFile, n: usize) -> Vec<serde_json::Value> {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(log.path()).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        if lines.iter().filter(|l| l["api"] == "admin").count() >= n
            || tokio::time::Instant::now() > deadline
        {
            return lines;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn escalation_is_refused_with_the_missing_actions_and_nothing_is_written() {
    let f = fixture().await;
    let mut c = admin(&f.server).await;
    // The help desk holds Microsoft.Authorization/* and Devices/read: it may grant Reader
    // but not Device Writer, whose Devices/write it lacks.
    let err = c
        .create_role_assignment(as_actor(
            "user:helpdesk",
            grant("e-1", "user:bob", "Device Writer", "/apps/fleet"),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(err.message().contains("Devices/write"), "{}", err.message());
    assert!(!err.message().contains("Devices/read"), "{}", err.message());
    assert!(f.etcd.get("/t/assignments/e-1").is_none());
    c.create_role_assignment(as_actor(
        "user:helpdesk",
        grant("e-2", "user:bob", "Reader", "/apps/fleet"),
    ))
    .await
    .unwrap();
    assert!(f.etcd.get("/t/assignments/e-2").is_some());
    // No identity at all.
    let err = c
        .create_role_assignment(grant("e-3", "user:bob", "Reader", "/apps"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(f.etcd.get("/t/assignments/e-3").is_none());
}

#[tokio::test]
async fn each_write_time_rule_is_refused_by_name_and_nothing_is_written() {
    let f = fixture().await;
    let mut c = admin(&f.server).await;
    // Unknown role.
    let err = c
        .create_role_assignment(as_actor(
            "user:root1",
            grant("v-1", "user:bob", "No Such Role", "/apps"),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("unknown role"), "{}", err.message());
    assert!(f.etcd.get("/t/assignments/v-1").is_none());
    // Outside the role's assignable scopes.
    let err = c
        .create_role_assignment(as_actor(
            "user:helpdesk",
            grant("v-2", "user:root3", "Reader", "/"),
        ))
        .await;
    assert!(err.is_ok(), "Reader is assignable at /: {err:?}");
    let err = c
        .create_role_assignment(as_actor(
            "user:root1",
            grant("v-3", "user:bob", "App Administrator", "/other"),
        ))
        .await
        .unwrap_err();
    // root1 holds nothing at /other: refused before validation, nothing written.
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(f.etcd.get("/t/assignments/v-3").is_none());
    let err = c
        .create_role_assignment(as_actor(
            "user:helpdesk",
            grant("v-4", "user:bob", "Reader", "/apps"),
        ))
        .await;
    assert!(err.is_ok());
    // Group cycle.
    let group = |id: &str, members: &[&str]| pb::PutGroupRequest {
        group: Some(pb::Group {
            id: id.into(),
            members: members.iter().map(|m| (*m).to_owned()).collect(),
        }),
    };
    c.put_group(as_actor("user:root1", group("group:a", &["group:b"])))
        .await
        .unwrap_err()
        .code()
        .eq(&Code::PermissionDenied)
        .then_some(())
        .expect("groups need Microsoft.Authorization/groups/write at /, which root1 lacks");
    c.put_group(as_actor("user:helpdesk", group("group:a", &["group:b"])))
        .await
        .unwrap();
    let err = c
        .put_group(as_actor("user:helpdesk", group("group:b", &["group:a"])))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(
        err.message().contains("group membership cycle"),
        "{}",
        err.message()
    );
    assert!(f.etcd.get("/t/groups/group:b").is_none());
    assert!(f.etcd.get("/t/groups/group:a").is_some());
    // A role whose assignable scopes exclude an existing assignment of it.
    let err = c
        .put_role_definition(as_actor(
            "user:helpdesk",
            pb::PutRoleDefinitionRequest {
                role: Some(pb::RoleDefinition {
                    name: "Operator".into(),
                    id: "r-op".into(),
                    actions: vec!["Devices/read".into()],
                    assignable_scopes: vec!["/apps".into()],
                    ..Default::default()
                }),
            },
        ))
        .await;
    assert!(err.is_ok(), "{err:?}");
    let value = f.etcd.get("/t/roles/r-op").unwrap();
    assert!(
        value.contains("\"assignableScopes\":[\"/apps\"]"),
        "{value}"
    );
    let token = c
        .create_role_assignment(as_actor(
            "user:helpdesk",
            grant("v-5", "user:bob", "Operator", "/apps/fleet"),
        ))
        .await
        .unwrap()
        .into_inner()
        .token;
    judged(&f.store, revision(&token)).await;
    let err = c
        .put_role_definition(as_actor(
            "user:helpdesk",
            pb::PutRoleDefinitionRequest {
                role: Some(pb::RoleDefinition {
                    name: "Operator".into(),
                    id: "r-op".into(),
                    actions: vec!["Devices/read".into()],
                    assignable_scopes: vec!["/elsewhere".into()],
                    ..Default::default()
                }),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("assignable"), "{}", err.message());
    assert_eq!(f.etcd.get("/t/roles/r-op").unwrap(), value);
}

#[tokio::test]
async fn the_last_app_administrator_is_kept_even_against_concurrent_revocations() {
    let f = fixture().await;
    let (mut a, mut b) = (admin(&f.server).await, admin(&f.server).await);
    // Both administrators revoke each other at once: one wins, the other is refused.
    let (ra, rb) = tokio::join!(
        a.delete_role_assignment(as_actor(
            "user:root1",
            pb::DeleteRoleAssignmentRequest {
                id: "admin-2".into()
            },
        )),
        b.delete_role_assignment(as_actor(
            "user:root2",
            pb::DeleteRoleAssignmentRequest {
                id: "admin-1".into()
            },
        )),
    );
    let results = [ra, rb];
    let refused: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert_eq!(refused.len(), 1, "{results:?}");
    // The loser is refused by the constraint (or, if its actor lost the role first, by
    // permission); never both applied.
    assert!(
        matches!(
            refused[0].code(),
            Code::FailedPrecondition | Code::PermissionDenied
        ),
        "{:?}",
        refused[0]
    );
    let left = [
        f.etcd.get("/t/assignments/admin-1"),
        f.etcd.get("/t/assignments/admin-2"),
    ];
    assert_eq!(left.iter().filter(|v| v.is_some()).count(), 1);

    // The survivor cannot remove themself: the constraint is named.
    let survivor = if left[0].is_some() {
        ("admin-1", "user:root1")
    } else {
        ("admin-2", "user:root2")
    };
    let err = a
        .delete_role_assignment(as_actor(
            survivor.1,
            pb::DeleteRoleAssignmentRequest {
                id: survivor.0.into(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(
        err.message().contains("minAssignments"),
        "{}",
        err.message()
    );
    assert!(
        f.etcd
            .get(&format!("/t/assignments/{}", survivor.0))
            .is_some()
    );
}

/// `iot-authz` with `args`: exit code, stdout, stderr.
fn cli(args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_iot-authz"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn the_admin_command_line_grants_lists_and_revokes() {
    let f = fixture().await;
    let server = f.server.grpc_url();
    let base = ["admin", "--server", server.as_str()];
    let run = |extra: &[&str]| {
        let mut args: Vec<String> = base.iter().map(|s| s.to_string()).collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        tokio::task::spawn_blocking(move || {
            cli(&args.iter().map(String::as_str).collect::<Vec<_>>())
        })
    };
    let (code, out, err) = run(&[
        "--as",
        "user:root1",
        "--json",
        "assign",
        "--principal",
        "user:dave",
        "--role",
        "Reader",
        "--scope",
        "/apps/fleet",
        "--id",
        "c-1",
    ])
    .await
    .unwrap();
    assert_eq!(code, 0, "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["assignment"]["id"], "c-1");
    let token = v["token"].as_str().unwrap().to_owned();
    assert!(f.etcd.get("/t/assignments/c-1").is_some());
    // Listed at least at the write's token.
    let (code, out, err) = run(&[
        "--as",
        "user:root1",
        "list",
        "--scope",
        "/apps",
        "--principal",
        "user:dave",
        "--at-least",
        &token,
    ])
    .await
    .unwrap();
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "c-1\tuser:dave\tReader\t/apps/fleet");
    // Refused: exit 1, the reason on stderr, nothing deleted.
    let (code, _, err) = run(&["--as", "user:dave", "unassign", "c-1"])
        .await
        .unwrap();
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("PermissionDenied"), "{err}");
    assert!(f.etcd.get("/t/assignments/c-1").is_some());
    let (code, out, err) = run(&["--as", "user:root1", "unassign", "c-1"])
        .await
        .unwrap();
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("unassigned c-1 (token r"), "{out}");
    assert!(f.etcd.get("/t/assignments/c-1").is_none());
    // Unreachable server: exit 2.
    let (code, _, _) = tokio::task::spawn_blocking(|| {
        cli(&[
            "admin",
            "--server",
            "http://127.0.0.1:1",
            "--as",
            "user:root1",
            "unassign",
            "x",
        ])
    })
    .await
    .unwrap();
    assert_eq!(code, 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn store_import_and_export_move_objects_between_files_and_the_store() {
    let etcd = Etcd::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.yaml");
    std::fs::write(&file, FILES).unwrap();
    let endpoints = etcd.endpoints().join(",");
    let path = file.to_str().unwrap().to_owned();
    let args = |extra: &[&str]| {
        let mut a = vec![
            "store",
            "--etcd-endpoints",
            endpoints.as_str(),
            "--etcd-prefix",
            "/imp/",
        ];
        a.extend_from_slice(extra);
        a.iter().map(|s| s.to_string()).collect::<Vec<_>>()
    };
    let run = |a: Vec<String>| {
        tokio::task::spawn_blocking(move || cli(&a.iter().map(String::as_str).collect::<Vec<_>>()))
    };
    let (code, out, err) = run(args(&["import", &path])).await.unwrap();
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("imported 5 objects"), "{out}");
    assert!(err.contains("stay in the files"), "{err}");
    let role: serde_json::Value =
        serde_json::from_str(&etcd.get("/imp/roles/r-reader").unwrap()).unwrap();
    assert_eq!(role["name"], "Reader");
    assert!(etcd.get("/imp/assignments/f-1").is_some());
    // Again: nothing to write.
    let (code, out, _) = run(args(&["import", &path])).await.unwrap();
    assert_eq!(code, 0);
    assert!(out.starts_with("imported 0 objects (5 unchanged)"), "{out}");
    // A conflicting value is refused unless --overwrite.
    etcd.put(
        "/imp/assignments/f-1",
        b"{\"principal\":\"user:x\",\"role\":\"Reader\",\"scope\":\"/\",\"id\":\"f-1\"}",
    );
    let (code, _, err) = run(args(&["import", &path])).await.unwrap();
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("assignments/f-1"), "{err}");
    let (code, _, _) = run(args(&["import", &path, "--overwrite"])).await.unwrap();
    assert_eq!(code, 0);
    // Export: one policy document that reads back as the same objects.
    let (code, out, err) = run(args(&["export"])).await.unwrap();
    assert_eq!(code, 0, "{err}");
    let exported = dir.path().join("exported.json");
    std::fs::write(&exported, &out).unwrap();
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["version"], 1);
    assert_eq!(doc["roles"].as_array().unwrap().len(), 4);
    assert_eq!(doc["assignments"][0]["principal"], "user:helpdesk");
    let (code, out, err) =
        tokio::task::spawn_blocking(move || cli(&["validate", exported.to_str().unwrap()]))
            .await
            .unwrap();
    assert_eq!(code, 0, "{out}{err}");
}

/// Plan and AuthZEN read their writes too (SPEC §10): `at_least` and `context.consistency`
/// wait for the write, and every answer carries the token of the state it used.
#[tokio::test]
async fn plan_and_authzen_answer_at_a_write_token() {
    use iot_authz::proto::iotauthz::v1::authorizer_client::AuthorizerClient;
    let f = fixture().await;
    let mut c = admin(&f.server).await;
    let created = c
        .create_role_assignment(as_actor(
            "user:root1",
            grant("g-plan", "user:pat", "Reader", "/apps/fleet"),
        ))
        .await
        .unwrap()
        .into_inner();
    let token = created.token;
    let mut authorizer = AuthorizerClient::connect(f.server.grpc_url())
        .await
        .unwrap();
    let plan = authorizer
        .plan(pb::PlanRequest {
            principal: "user:pat".into(),
            action: "Devices/read".into(),
            at_least: token.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(plan.include, vec!["/apps/fleet".to_owned()]);
    assert!(revision(&plan.token) >= revision(&token), "{plan:?}");

    let http = reqwest::Client::new();
    let url = format!("http://{}/access/v1/evaluation", f.server.http);
    let ask = |consistency: serde_json::Value| {
        http.post(&url).json(&serde_json::json!({
            "subject": {"type": "user", "id": "pat"},
            "action": {"name": "Devices/read"},
            "resource": {"type": "scope", "id": "/apps/fleet/d1"},
            "context": {"consistency": consistency},
        }))
    };
    let r = ask(serde_json::json!(token)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["decision"], true, "{body}");
    let answered = body["context"]["token"].as_str().unwrap();
    assert!(revision(answered) >= revision(&token), "{body}");
    // Not a token: 400; a token far ahead of the store: 503 after the wait.
    assert_eq!(
        ask(serde_json::json!("nope"))
            .send()
            .await
            .unwrap()
            .status(),
        400
    );
    assert_eq!(
        ask(serde_json::json!(7)).send().await.unwrap().status(),
        400
    );
    let ahead = format!("r{}", revision(&token) + 1_000_000);
    assert_eq!(
        ask(serde_json::json!(ahead)).send().await.unwrap().status(),
        503
    );
}

/// A write that follows another at once is planned on a state that holds the first: a role
/// put, then an assignment of it straight away, is not refused as an unknown role while
/// the replica is still compiling the role in (a large policy makes that take a while).
#[tokio::test(flavor = "multi_thread")]
async fn a_write_right_after_another_is_judged_on_a_state_that_holds_it() {
    let etcd = Etcd::start().await;
    etcd.put(
        "/t/assignments/admin-1",
        assignment("admin-1", "user:root1", "App Administrator", "/apps").as_bytes(),
    );
    let mut bulk = String::from("version: 1\nassignments:\n");
    for i in 0..10_000 {
        bulk.push_str(&format!(
            "  - {{principal: \"user:u{i}\", role: Reader, scope: /apps/fleet/d{i}}}\n"
        ));
    }
    let (server, _) = serve_with_store_options(
        etcd.endpoints(),
        PREFIX,
        &[("roles.yaml", FILES), ("bulk.yaml", &bulk)],
        |_| {},
        &AppOptions::default(),
        true,
    )
    .await;
    let mut c = admin(&server).await;
    for i in 0..3 {
        let role = format!("Fresh {i}");
        c.put_role_definition(as_actor(
            "user:helpdesk",
            pb::PutRoleDefinitionRequest {
                role: Some(pb::RoleDefinition {
                    name: role.clone(),
                    actions: vec!["Devices/read".into()],
                    ..Default::default()
                }),
            },
        ))
        .await
        .unwrap();
        let id = format!("fresh-{i}");
        let created = c
            .create_role_assignment(as_actor(
                "user:helpdesk",
                grant(&id, "user:bob", &role, "/apps/fleet"),
            ))
            .await;
        assert!(created.is_ok(), "{i}: {created:?}");
        assert!(etcd.get(&format!("/t/assignments/{id}")).is_some());
    }
}

/// Holds the store's inputs (as a long validation would) until dropped: the writes through
/// the replica queue up behind the group being validated.
struct HeldInputs {
    release: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn hold_inputs(store: &std::sync::Arc<iot_authz::store::Store>) -> HeldInputs {
    let store = store.clone();
    let (held, is_held) = std::sync::mpsc::channel();
    let (release, released) = std::sync::mpsc::channel::<()>();
    let thread = std::thread::spawn(move || {
        let _inputs = store.inputs();
        held.send(()).unwrap();
        let _ = released.recv();
    });
    is_held.recv().unwrap();
    HeldInputs {
        release: Some(release),
        thread: Some(thread),
    }
}

impl Drop for HeldInputs {
    fn drop(&mut self) {
        drop(self.release.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Waits until the replica's Admin API queue is as `ready` wants it (writes waiting, writes
/// of the group being committed).
async fn until_queue(
    store: &iot_authz::store::Store,
    ready: impl Fn((usize, usize)) -> bool,
    what: &str,
) {
    tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while !ready(store.admin_writes()) {
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{what}: the queue is {:?}", store.admin_writes()));
}

/// A first write, alone in its group and held in validation: the writes sent after it wait
/// together for the next transaction.
async fn plug(
    f: &Fixture,
) -> (
    HeldInputs,
    tokio::task::JoinHandle<Result<String, tonic::Status>>,
) {
    let held = hold_inputs(&f.store);
    let mut c = admin(&f.server).await;
    let first = tokio::spawn(async move {
        c.create_role_assignment(as_actor(
            "user:root1",
            grant("plug", "user:plug", "Reader", "/apps/fleet"),
        ))
        .await
        .map(|r| r.into_inner().token)
    });
    until_queue(
        &f.store,
        |q| q == (0, 1),
        "the first write is not being validated",
    )
    .await;
    (held, first)
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_grants_through_one_replica_all_succeed_in_one_transaction() {
    let f = fixture().await;
    let (held, first) = plug(&f).await;
    let c = admin(&f.server).await;
    let n = 20;
    let mut writes = Vec::new();
    for i in 0..n {
        let mut c = c.clone();
        writes.push(tokio::spawn(async move {
            c.create_role_assignment(as_actor(
                "user:root1",
                grant(
                    &format!("c-{i}"),
                    &format!("user:c{i}"),
                    "Reader",
                    "/apps/fleet",
                ),
            ))
            .await
            .map(|r| r.into_inner().token)
        }));
    }
    until_queue(&f.store, |q| q.0 == n, "the grants did not queue").await;
    drop(held);
    let first = first.await.unwrap().unwrap();
    let mut tokens = Vec::new();
    for w in writes {
        tokens.push(w.await.unwrap().unwrap());
    }
    // One transaction for the twenty, after the first's: one revision, one token.
    assert!(tokens.iter().all(|t| *t == tokens[0]), "{tokens:?}");
    assert!(
        revision(&tokens[0]) > revision(&first),
        "{first} {tokens:?}"
    );
    let mut authorizer =
        iot_authz::proto::iotauthz::v1::authorizer_client::AuthorizerClient::connect(
            f.server.grpc_url(),
        )
        .await
        .unwrap();
    for (i, token) in tokens.iter().enumerate() {
        assert!(f.etcd.get(&format!("/t/assignments/c-{i}")).is_some());
        let r = authorizer
            .check(pb::CheckRequest {
                principal: format!("user:c{i}"),
                action: "Devices/read".into(),
                scope: "/apps/fleet/d1".into(),
                at_least: token.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(r.allowed, "c-{i}");
        assert!(revision(&r.token) >= revision(token));
    }
}

/// Writes queued in this order form one group: each is judged on the state holding the
/// group's earlier allowed writes, and a refused one does not stop the others.
#[tokio::test(flavor = "multi_thread")]
async fn a_group_commits_its_allowed_writes_and_refuses_the_others_each_with_its_own_answer() {
    let f = fixture().await;
    let (held, first) = plug(&f).await;
    let c = admin(&f.server).await;
    type Answer = tokio::task::JoinHandle<Result<String, tonic::Status>>;
    let mut answers: Vec<Answer> = Vec::new();
    macro_rules! queue {
        ($call:ident, $actor:expr, $body:expr) => {{
            let mut c = c.clone();
            let (actor, body) = ($actor, $body);
            answers.push(tokio::spawn(async move {
                c.$call(as_actor(actor, body))
                    .await
                    .map(|r| r.into_inner().token)
            }));
            let k = answers.len();
            until_queue(&f.store, |q| q.0 == k, "a write did not queue").await;
        }};
    }
    // 0: a new role; 1: a grant of it, valid only after 0.
    let role = pb::RoleDefinition {
        name: "Fresh".into(),
        actions: vec!["Devices/read".into()],
        ..Default::default()
    };
    queue!(
        put_role_definition,
        "user:helpdesk",
        pb::PutRoleDefinitionRequest { role: Some(role) }
    );
    queue!(
        create_role_assignment,
        "user:helpdesk",
        grant("fresh-1", "user:bob", "Fresh", "/apps/fleet")
    );
    // 2: an unknown role.
    queue!(
        create_role_assignment,
        "user:helpdesk",
        grant("nope-1", "user:bob", "Nope", "/apps/fleet")
    );
    // 3: one of the two App Administrators revoked; 4: the other, now the last.
    queue!(
        delete_role_assignment,
        "user:root1",
        pb::DeleteRoleAssignmentRequest {
            id: "admin-2".into()
        }
    );
    queue!(
        delete_role_assignment,
        "user:helpdesk",
        pb::DeleteRoleAssignmentRequest {
            id: "admin-1".into()
        }
    );
    // 5: a grant by the administrator revoked in 3.
    queue!(
        create_role_assignment,
        "user:root2",
        grant("carol-1", "user:carol", "Reader", "/apps/fleet")
    );
    drop(held);
    let first = first.await.unwrap().unwrap();
    let mut results = Vec::new();
    for a in answers {
        results.push(a.await.unwrap());
    }
    let ok: Vec<&String> = [0, 1, 3]
        .iter()
        .map(|&i| results[i].as_ref().unwrap_or_else(|e| panic!("{i}: {e:?}")))
        .collect();
    // The allowed writes: one transaction, after the first write's.
    assert!(ok.iter().all(|t| *t == ok[0]), "{ok:?}");
    assert!(revision(ok[0]) > revision(&first));
    let refused = |i: usize| results[i].as_ref().unwrap_err();
    assert_eq!(
        refused(2).code(),
        Code::FailedPrecondition,
        "{:?}",
        refused(2)
    );
    assert!(
        refused(2).message().contains("unknown role"),
        "{:?}",
        refused(2)
    );
    assert_eq!(
        refused(4).code(),
        Code::FailedPrecondition,
        "{:?}",
        refused(4)
    );
    assert!(
        refused(4).message().contains("minAssignments"),
        "{:?}",
        refused(4)
    );
    assert_eq!(
        refused(5).code(),
        Code::PermissionDenied,
        "{:?}",
        refused(5)
    );
    // Only the allowed writes are in the store.
    assert!(f.etcd.get("/t/roles/Fresh").is_some());
    assert!(f.etcd.get("/t/assignments/fresh-1").is_some());
    assert!(f.etcd.get("/t/assignments/nope-1").is_none());
    assert!(f.etcd.get("/t/assignments/admin-2").is_none());
    assert!(f.etcd.get("/t/assignments/admin-1").is_some());
    assert!(f.etcd.get("/t/assignments/carol-1").is_none());
    judged(&f.store, revision(ok[0])).await;
    assert!(allowed(&f.server, "user:bob", "Devices/read", "/apps/fleet/d1").await);
    assert!(!allowed(&f.server, "user:root2", "Devices/read", "/apps/fleet/d1").await);
}

/// A group of grants that only the rules can tell apart (one with its window backwards):
/// the rules judge each, the valid ones commit together and the other is refused alone.
#[tokio::test(flavor = "multi_thread")]
async fn a_group_of_grants_with_one_invalid_commits_the_others() {
    let f = fixture().await;
    let (held, first) = plug(&f).await;
    let c = admin(&f.server).await;
    let mut answers = Vec::new();
    for i in 0..3 {
        let mut request = grant(
            &format!("w-{i}"),
            &format!("user:w{i}"),
            "Reader",
            "/apps/fleet",
        );
        if i == 1 {
            let a = request.assignment.as_mut().unwrap();
            a.not_before = "2031-01-01T00:00:00Z".into();
            a.not_after = "2030-01-01T00:00:00Z".into();
        }
        let mut c = c.clone();
        answers.push(tokio::spawn(async move {
            c.create_role_assignment(as_actor("user:root1", request))
                .await
                .map(|r| r.into_inner().token)
        }));
        until_queue(&f.store, |q| q.0 == i + 1, "a grant did not queue").await;
    }
    drop(held);
    first.await.unwrap().unwrap();
    let mut results = Vec::new();
    for a in answers {
        results.push(a.await.unwrap());
    }
    let (zero, two) = (results[0].as_ref().unwrap(), results[2].as_ref().unwrap());
    assert_eq!(zero, two);
    let refused = results[1].as_ref().unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(f.etcd.get("/t/assignments/w-0").is_some());
    assert!(f.etcd.get("/t/assignments/w-1").is_none());
    assert!(f.etcd.get("/t/assignments/w-2").is_some());
}
