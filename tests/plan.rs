//! Plan (SPEC §11) through its real interfaces: the gRPC RPC (the generated client and the
//! real grpcurl through reflection), the command line, and the README's recipe: a plan
//! turned into one SQL `WHERE` over a devices table in a real SQLite database, which
//! returns exactly the rows Check allows.

use iot_authz::policy::CheckRequest;
use iot_authz::policy::plan::Plan;
use iot_authz::policy::syntax::parse_time;
use iot_authz::proto::iotauthz::v1 as pb;
use iot_authz::proto::iotauthz::v1::authorizer_client::AuthorizerClient;
use serde_json::json;
use tonic::Code;

use crate::support::{TestServer, grpcurl, policy};

/// The README's example policy: a service group linked over a line of one site, a
/// time-bound grant, and a quarantined line.
pub const FLEET: &str = r#"version: 1
actions:
  - name: Fleet/devices/read
  - name: Fleet/devices/telemetry/read
    dataAction: true
roles:
  - name: Device Reader
    actions: [Fleet/devices/read]
  - name: Operator
    actions: ["Fleet/*"]
    dataActions: ["Fleet/*"]
groups:
  - id: group:north-ops
    members: [user:alice]
scopeLinks:
  - scope: /sites/Berlin/lines/l2
    parents: [/serviceGroups/north]
assignments:
  - {id: north, principal: group:north-ops, role: Device Reader, scope: /serviceGroups/north}
  - {id: munich, principal: user:alice, role: Device Reader, scope: /sites/Munich/}
  - id: paris-2026
    principal: user:alice
    role: Operator
    scope: /sites/Paris
    notBefore: 2026-01-01T00:00:00Z
    notAfter: 2027-01-01T00:00:00Z
  - {id: all, principal: user:bob, role: Operator, scope: /}
denyAssignments:
  - name: quarantine
    principals: ["*"]
    actions: ["*"]
    dataActions: ["*"]
    scope: /sites/Munich/lines/l9
"#;

const SITES: &[&str] = &["Berlin", "Munich", "Paris", "Rome"];
const LINES: &[&str] = &["l1", "l2", "l9"];

/// The README's recipe: `scope_key` is the device's scope, lowercase, without a trailing
/// slash. An entry `E` (lowercase) covers `scope_key = E` or `scope_key` starting with
/// `E/`; `/` covers everything. Parameters only: scope text never enters the SQL.
fn where_clause(plan: &Plan) -> (String, Vec<String>) {
    let mut params = Vec::new();
    let mut covers = |entries: &[String]| -> String {
        let parts: Vec<String> = entries
            .iter()
            .map(|e| {
                let key = e.trim_end_matches('/').to_ascii_lowercase();
                if key.is_empty() {
                    return "1".to_owned();
                }
                params.push(key.clone());
                params.push(format!("{key}/"));
                params.push(format!("{key}/"));
                "(scope_key = ? OR substr(scope_key, 1, length(?)) = ?)".to_owned()
            })
            .collect();
        if parts.is_empty() {
            "0".to_owned()
        } else {
            parts.join(" OR ")
        }
    };
    let include = covers(&plan.include);
    let exclude = covers(&plan.exclude);
    (format!("({include}) AND NOT ({exclude})"), params)
}

async fn client(server: &TestServer) -> AuthorizerClient<tonic::transport::Channel> {
    AuthorizerClient::connect(server.grpc_url()).await.unwrap()
}

fn request(principal: &str, action: &str, data: bool, under: &str, at: &str) -> pb::PlanRequest {
    let at = parse_time(at).unwrap();
    pb::PlanRequest {
        principal: principal.into(),
        action: action.into(),
        data_action: data,
        under: under.into(),
        at: Some(iot_authz::proto::instant_to_timestamp(at)),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_rpc_answers_the_specs_shape_and_refuses_bad_arguments() {
    let server = TestServer::start(policy(FLEET)).await;
    let mut c = client(&server).await;
    let r = c
        .plan(request(
            "user:alice",
            "Fleet/devices/read",
            false,
            "",
            "2026-06-01T00:00:00Z",
        ))
        .await
        .unwrap()
        .into_inner();
    // Scopes as the policy spells them (the scope, without an assignment's trailing slash).
    assert_eq!(
        r.include,
        [
            "/serviceGroups/north",
            "/sites/Berlin/lines/l2",
            "/sites/Munich",
            "/sites/Paris"
        ]
    );
    assert_eq!(r.exclude, ["/sites/Munich/lines/l9"]);
    assert_eq!(r.revision, policy(FLEET).revision);
    // After the time-bound grant ends, Paris is gone.
    let r = c
        .plan(request(
            "user:alice",
            "Fleet/devices/read",
            false,
            "/sites",
            "2027-01-01T00:00:00Z",
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.include, ["/sites/Berlin/lines/l2", "/sites/Munich"]);
    // Everything for bob, but the quarantined line.
    let r = c
        .plan(request(
            "user:bob",
            "Fleet/devices/telemetry/read",
            true,
            "/",
            "2026-06-01T00:00:00Z",
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (r.include, r.exclude),
        (
            vec!["/".to_owned()],
            vec!["/sites/Munich/lines/l9".to_owned()]
        )
    );
    for (principal, action, under) in [
        ("", "Fleet/devices/read", "/"),
        ("user:alice", "Fleet/*", "/"),
        ("user:alice", "Fleet devices", "/"),
        ("user:alice", "Fleet/devices/read", "/sites/a b"),
        ("user:alice", "Fleet/devices/read", "sites"),
    ] {
        let status = c
            .plan(request(
                principal,
                action,
                false,
                under,
                "2026-06-01T00:00:00Z",
            ))
            .await
            .unwrap_err();
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "{principal} {action} {under}"
        );
    }
    // The real grpcurl, through reflection only.
    let out = grpcurl(
        server.grpc,
        "iotauthz.v1.Authorizer/Plan",
        &json!({"principal": "user:bob", "action": "Fleet/devices/read", "under": "/sites/Munich"}),
    );
    assert_eq!(out["include"], json!(["/sites/Munich"]));
    assert_eq!(out["exclude"], json!(["/sites/Munich/lines/l9"]));
}

#[test]
fn plan_on_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("fleet.yaml");
    std::fs::write(&file, FLEET).unwrap();
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_iot-authz"))
            .arg("plan")
            .arg("--policy")
            .arg(&file)
            .args(args)
            .output()
            .unwrap()
    };
    let out = run(&[
        "--principal",
        "user:bob",
        "--action",
        "Fleet/devices/read",
        "--under",
        "/sites",
        "--json",
    ]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["include"], json!(["/sites"]));
    assert_eq!(v["exclude"], json!(["/sites/Munich/lines/l9"]));
    assert_eq!(v["revision"].as_str().unwrap().len(), 64);
    let out = run(&["--principal", "user:bob", "--action", "Fleet/devices/read"]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("include /\n") && text.contains("exclude /sites/Munich/lines/l9"),
        "{text}"
    );
    let out = run(&["--principal", "user:bob", "--action", "Fleet/*"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("must not contain `*`"));
}

/// The README recipe against a real SQLite database: for every principal, action, plane
/// and time, the rows the `WHERE` returns are exactly the devices Check allows, including
/// devices the policy has never heard of, below the linked line and in any case.
#[tokio::test]
async fn a_plan_as_sql_returns_exactly_the_rows_check_allows() {
    let server = TestServer::start(policy(FLEET)).await;
    let snapshot = policy(FLEET);
    let mut c = client(&server).await;
    let db = rusqlite::Connection::open_in_memory().unwrap();
    db.execute_batch(
        "CREATE TABLE devices (id INTEGER PRIMARY KEY, scope TEXT NOT NULL, scope_key TEXT NOT NULL);
         CREATE INDEX devices_scope_key ON devices (scope_key);",
    )
    .unwrap();
    let mut devices = Vec::new();
    for site in SITES {
        devices.push(format!("/sites/{site}"));
        for line in LINES {
            for d in 0..3 {
                // a device as the platform spells it, sometimes in another case
                let scope = if d == 2 {
                    format!("/SITES/{site}/Lines/{line}/devices/dev-{d}")
                } else {
                    format!("/sites/{site}/lines/{line}/devices/dev-{d}")
                };
                devices.push(scope);
            }
        }
    }
    devices.push("/serviceGroups/north/devices/virtual".into());
    devices.push("/elsewhere/d1".into());
    for scope in &devices {
        db.execute(
            "INSERT INTO devices (scope, scope_key) VALUES (?1, ?2)",
            (scope, scope.trim_end_matches('/').to_ascii_lowercase()),
        )
        .unwrap();
    }
    let mut nonempty = 0;
    for principal in ["user:alice", "user:bob", "group:north-ops", "user:carol"] {
        for (action, data) in [
            ("Fleet/devices/read", false),
            ("Fleet/devices/telemetry/read", true),
            ("Fleet/devices/telemetry/read", false),
        ] {
            for at in ["2025-06-01T00:00:00Z", "2026-06-01T00:00:00Z"] {
                for under in ["/", "/sites", "/sites/munich"] {
                    let r = c
                        .plan(request(principal, action, data, under, at))
                        .await
                        .unwrap()
                        .into_inner();
                    let plan = Plan {
                        include: r.include,
                        exclude: r.exclude,
                    };
                    let (clause, params) = where_clause(&plan);
                    let sql = format!("SELECT scope FROM devices WHERE {clause} ORDER BY id");
                    let mut stmt = db.prepare(&sql).unwrap();
                    let got: Vec<String> = stmt
                        .query_map(rusqlite::params_from_iter(params.iter()), |row| row.get(0))
                        .unwrap()
                        .collect::<Result<_, _>>()
                        .unwrap();
                    let under_key = under.to_ascii_lowercase();
                    let want: Vec<String> = devices
                        .iter()
                        .filter(|s| {
                            iot_authz::policy::plan::is_at_or_below(
                                &s.to_ascii_lowercase(),
                                &under_key,
                            )
                        })
                        .filter(|s| {
                            snapshot
                                .check(&CheckRequest {
                                    principal,
                                    groups: &[],
                                    action,
                                    data_action: data,
                                    scope: s,
                                    at: parse_time(at).unwrap(),
                                })
                                .unwrap()
                                .allowed
                        })
                        .cloned()
                        .collect();
                    // Every entry lies at or below `under`: nothing outside is returned.
                    let mut got_under = got;
                    got_under.sort();
                    let mut want = want;
                    want.sort();
                    assert_eq!(
                        got_under, want,
                        "{principal} {action} {data} {at} under {under}: {plan:?}"
                    );
                    nonempty += usize::from(!want.is_empty());
                }
            }
        }
    }
    assert!(nonempty > 10, "the cases must allow something");
}
