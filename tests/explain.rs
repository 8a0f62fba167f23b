//! Deny answers a person can act on: `check --explain`, the native API's `explain` flag and
//! the near misses behind a deny, one case for each reason a held assignment does not grant;
//! and the deny body that names its deny assignment.

use std::process::Command;

use iot_authz::policy::{CheckRequest, MissReason, Reason};
use iot_authz::proto::iotauthz::v1 as pb;
use iot_authz::proto::iotauthz::v1::authorizer_client::AuthorizerClient;
use serde_json::Value;

use crate::support::{TestServer, policy};

/// One principal, two groups (one nested), and one assignment for each way of missing
/// `Fleet/devices/write` at `/apps/a1/devices/d1`.
const POLICY: &str = r#"
version: 1
actions:
  - name: Fleet/telemetry/read
    dataAction: true
roles:
  - name: Reader
    actions: ["Fleet/*/read"]
  - name: Writer but not devices
    actions: ["Fleet/*"]
    notActions: ["Fleet/devices/*"]
  - name: Writer
    actions: ["Fleet/devices/write"]
  - name: Data writer
    dataActions: ["Fleet/devices/write"]
  - name: Telemetry
    actions: ["Fleet/telemetry/read"]
groups:
  - id: group:operators
    members: [user:ann, group:night-shift]
  - id: group:night-shift
    members: [user:bob]
assignments:
  - {id: r-1, principal: group:operators, role: Reader, scope: /apps/a1}
  - {id: n-1, principal: user:bob, role: Writer but not devices, scope: /apps}
  - {id: w-1, principal: group:night-shift, role: Writer, scope: /apps/a1/devices/d1,
     notBefore: "2026-01-01T00:00:00Z", notAfter: "2026-02-01T00:00:00Z"}
  - {id: d-1, principal: user:bob, role: Data writer, scope: /}
  - {id: t-1, principal: user:bob, role: Telemetry, scope: /apps/a1}
  - {id: elsewhere, principal: user:bob, role: Writer, scope: /apps/a2}
  - {id: c-1, principal: user:carl, role: Writer, scope: /apps/a1}
denyAssignments:
  - name: no-writes-by-carl
    principals: [user:carl]
    actions: ["Fleet/devices/write"]
    scope: /apps
"#;

const ACTION: &str = "Fleet/devices/write";
const SCOPE: &str = "/apps/a1/devices/d1";
const AT: &str = "2026-06-01T00:00:00Z";

fn at() -> iot_authz::policy::syntax::Instant {
    iot_authz::policy::syntax::parse_time(AT).unwrap()
}

/// The near misses of a request as (assignment id, reason kind).
fn misses(principal: &str, action: &str, data: bool) -> (bool, Vec<(String, String)>) {
    let snapshot = policy(POLICY);
    let e = snapshot
        .explain_check(&CheckRequest {
            principal,
            groups: &[],
            action,
            data_action: data,
            scope: SCOPE,
            at: at(),
        })
        .unwrap();
    let list = e
        .near_misses
        .iter()
        .map(|m| {
            let Reason::RoleAssignment { assignment_id, .. } = &m.assignment else {
                panic!("not an assignment: {m:?}")
            };
            (
                assignment_id.unwrap_or_default().to_owned(),
                m.reason.kind().to_owned(),
            )
        })
        .collect();
    (e.decision.allowed, list)
}

#[test]
fn every_reason_a_held_assignment_does_not_grant() {
    let (allowed, list) = misses("user:bob", ACTION, false);
    assert!(!allowed);
    // In policy order; the assignment at /apps/a2 is not at the scope or above.
    let expected = [
        ("r-1", "actionNotInRole"),
        ("n-1", "notActions"),
        ("w-1", "outsideWindow"),
        ("d-1", "wrongPlane"),
        ("t-1", "actionNotInRole"),
    ];
    let expected: Vec<(String, String)> = expected
        .iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect();
    assert_eq!(list, expected);
}

#[test]
fn the_reasons_carry_what_a_person_needs() {
    let snapshot = policy(POLICY);
    let e = snapshot
        .explain_check(&CheckRequest {
            principal: "user:bob",
            groups: &["group:visitors".to_owned()],
            action: ACTION,
            data_action: false,
            scope: SCOPE,
            at: at(),
        })
        .unwrap();
    assert_eq!(
        e.groups_of_principal,
        ["group:night-shift", "group:operators", "group:visitors"]
    );
    let reason = |id: &str| {
        e.near_misses
            .iter()
            .find(|m| matches!(m.assignment, Reason::RoleAssignment { assignment_id: Some(a), .. } if a == id))
            .unwrap()
            .reason
            .clone()
    };
    assert_eq!(
        reason("n-1"),
        MissReason::NotActions {
            pattern: "Fleet/devices/*"
        }
    );
    assert_eq!(
        reason("w-1"),
        MissReason::OutsideWindow {
            not_before: Some("2026-01-01T00:00:00Z".into()),
            not_after: Some("2026-02-01T00:00:00Z".into()),
        }
    );
    assert_eq!(reason("d-1"), MissReason::WrongPlane { data_action: true });
    assert!(
        reason("n-1")
            .message(ACTION, false)
            .contains("notActions pattern `Fleet/devices/*`")
    );
    // The time window is the only miss when asked inside it: the deny becomes an allow.
    let inside = snapshot
        .explain_check(&CheckRequest {
            principal: "user:bob",
            groups: &[],
            action: ACTION,
            data_action: false,
            scope: SCOPE,
            at: iot_authz::policy::syntax::parse_time("2026-01-15T00:00:00Z").unwrap(),
        })
        .unwrap();
    assert!(inside.decision.allowed);
    assert!(inside.near_misses.is_empty());
}

#[test]
fn a_control_plane_grant_misses_a_data_action_and_a_catalogued_plane() {
    // Asked as a data action: the control-plane Writer roles miss by plane, the data
    // writer grants (an allow: nothing to explain).
    let (allowed, _) = misses("user:bob", ACTION, true);
    assert!(allowed);
    // The catalog puts Fleet/telemetry/read in the data plane: the Telemetry role's
    // control-plane `actions` do not grant it, asked either way.
    let (allowed, list) = misses("user:bob", "Fleet/telemetry/read", true);
    assert!(!allowed);
    assert!(
        list.contains(&("t-1".to_owned(), "wrongPlane".to_owned())),
        "{list:?}"
    );
}

#[test]
fn a_deny_assignment_overrides_the_grant_it_names() {
    let (allowed, list) = misses("user:carl", ACTION, false);
    assert!(!allowed);
    assert_eq!(list, [("c-1".to_owned(), "overriddenByDeny".to_owned())]);
}

#[test]
fn nothing_held_lists_no_misses() {
    let (allowed, list) = misses("user:nobody", ACTION, false);
    assert!(!allowed);
    assert!(list.is_empty());
}

fn write_policy() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policy.yaml");
    std::fs::write(&path, POLICY).unwrap();
    let path = path.display().to_string();
    (dir, path)
}

fn cli(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_iot-authz"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8(out.stdout).unwrap(),
    )
}

#[test]
fn check_explain_prints_groups_and_near_misses() {
    let (_dir, path) = write_policy();
    let args = [
        "check",
        "--policy",
        &path,
        "--principal",
        "user:bob",
        "--action",
        ACTION,
        "--scope",
        SCOPE,
        "--at",
        AT,
        "--explain",
    ];
    let (code, text) = cli(&args);
    assert_eq!(code, 1, "{text}");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "deny: noGrant");
    assert_eq!(
        lines[1],
        "groups of user:bob: group:night-shift, group:operators"
    );
    assert_eq!(lines[2], "near misses:");
    assert!(
        lines[4].starts_with(
            "  role `Writer but not devices` at `/apps` held by `user:bob` (assignment n-1): notActions: "
        ),
        "{text}"
    );
    assert_eq!(lines.len(), 8, "{text}");

    let mut json_args = args.to_vec();
    json_args.push("--json");
    let (code, text) = cli(&json_args);
    assert_eq!(code, 1);
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["groupsOfPrincipal"][1], "group:operators");
    assert_eq!(v["nearMisses"][2]["reason"]["kind"], "outsideWindow");
    assert_eq!(
        v["nearMisses"][2]["reason"]["notAfter"],
        "2026-02-01T00:00:00Z"
    );
    assert_eq!(v["nearMisses"][2]["assignment"]["assignmentId"], "w-1");

    // Without --explain: the one line the README shows.
    let (code, text) = cli(&args[..args.len() - 1]);
    assert_eq!(code, 1);
    assert_eq!(text, "deny: noGrant\n");
}

#[tokio::test]
async fn the_native_api_explains_when_asked() {
    let server = TestServer::start(policy(POLICY)).await;
    let mut client = AuthorizerClient::new(server.channel().await);
    let request = |explain| pb::CheckRequest {
        principal: "user:carl".into(),
        action: ACTION.into(),
        scope: SCOPE.into(),
        explain,
        ..Default::default()
    };
    let plain = client.check(request(false)).await.unwrap().into_inner();
    assert!(!plain.allowed);
    assert!(plain.near_misses.is_empty() && plain.groups_of_principal.is_empty());
    let explained = client.check(request(true)).await.unwrap().into_inner();
    assert_eq!(explained.reason, plain.reason);
    assert_eq!(explained.near_misses.len(), 1);
    let miss = &explained.near_misses[0];
    assert_eq!(miss.kind, "overriddenByDeny");
    assert_eq!(miss.deny_assignment, "no-writes-by-carl");
    assert_eq!(miss.assignment.as_ref().unwrap().assignment_id, "c-1");
    assert!(
        miss.message.contains("no-writes-by-carl"),
        "{}",
        miss.message
    );
}
