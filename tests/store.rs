//! The etcd store (SPEC §9) against a real etcd: objects served with the files, followed
//! through the watch, bad values rejected with the last good policy serving, start-up with
//! an unreadable store, and the status.

use std::time::Duration;

use iot_authz::proto::iotauthz::v1 as pb;
use iot_authz::proto::iotauthz::v1::authorizer_client::AuthorizerClient;

use crate::support::TestServer;
use crate::support::etcd::{Etcd, judged, serve_with_store};

/// The file part of the policy: the roles, and a constraint on the store's assignments.
pub const FILES: &str = r#"
version: 1
roles:
  - name: Reader
    id: r-reader
    actions: ["*/read"]
  - name: App Administrator
    id: r-admin
    actions: ["*"]
    assignableScopes: ["/apps"]
"#;

pub const PREFIX: &str = "/t/";

pub fn assignment(id: &str, principal: &str, role: &str, scope: &str) -> String {
    format!(r#"{{"principal":"{principal}","role":"{role}","scope":"{scope}","id":"{id}"}}"#)
}

async fn client(server: &TestServer) -> AuthorizerClient<tonic::transport::Channel> {
    AuthorizerClient::connect(server.grpc_url()).await.unwrap()
}

pub async fn allowed(server: &TestServer, principal: &str, action: &str, scope: &str) -> bool {
    client(server)
        .await
        .check(pb::CheckRequest {
            principal: principal.into(),
            action: action.into(),
            scope: scope.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .allowed
}

async fn status(server: &TestServer) -> pb::PolicyStatus {
    client(server)
        .await
        .get_policy_status(pb::GetPolicyStatusRequest {})
        .await
        .unwrap()
        .into_inner()
}

#[tokio::test]
async fn store_objects_are_served_with_the_files_and_followed_through_the_watch() {
    let etcd = Etcd::start().await;
    etcd.put(
        "/t/assignments/a-1",
        assignment("a-1", "user:alice", "Reader", "/apps/fleet").as_bytes(),
    );
    let (server, store) = replica(&etcd).await;
    assert!(allowed(&server, "user:alice", "Devices/read", "/apps/fleet/d1").await);
    assert!(!allowed(&server, "user:bob", "Devices/read", "/apps/fleet/d1").await);

    // A grant written into etcd is followed by the watch.
    let rev = etcd.put(
        "/t/assignments/a-2",
        assignment("a-2", "user:bob", "r-reader", "/apps/fleet").as_bytes(),
    );
    judged(&store, rev).await;
    assert!(allowed(&server, "user:bob", "Devices/read", "/apps/fleet/d1").await);
    let s = status(&server).await;
    assert_eq!(s.store_revision, rev);
    assert_eq!(s.token, format!("r{rev}"));
    assert!(s.store_reachable);
    assert!((0.0..5.0).contains(&s.store_seconds_since_contact));
    assert_eq!(s.counts.unwrap().assignments, 2);
    assert!(
        s.sources.contains(&"etcd:/t/".to_string()),
        "{:?}",
        s.sources
    );
    assert!(
        server
            .metrics()
            .await
            .contains(&format!("iot_authz_store_revision {rev}"))
    );

    // A revocation likewise; keys outside the prefix are not policy.
    etcd.put("/other/assignments/x", b"not json");
    let rev = etcd.delete("/t/assignments/a-2");
    judged(&store, rev).await;
    assert!(!allowed(&server, "user:bob", "Devices/read", "/apps/fleet/d1").await);
    assert!(status(&server).await.last_error.is_empty());
}

#[tokio::test]
async fn bad_values_written_behind_the_api_are_rejected_and_the_last_good_policy_serves() {
    let etcd = Etcd::start().await;
    etcd.put(
        "/t/assignments/a-1",
        assignment("a-1", "user:alice", "Reader", "/apps/fleet").as_bytes(),
    );
    let (server, store) = serve_with_store(
        etcd.endpoints(),
        PREFIX,
        &[("roles.yaml", FILES)],
        |o| o.max_value_bytes = 200,
        true,
    )
    .await;
    let mut good = status(&server).await.store_revision;
    let cases: [(&str, String, &str); 5] = [
        (
            "/t/assignments/a-9",
            "{\"principal\": ".into(),
            "invalid JSON",
        ),
        (
            "/t/assignments/a-9",
            assignment("a-8", "user:bob", "Reader", "/apps"),
            "not the object's id",
        ),
        (
            "/t/assignments/a-9",
            format!(
                r#"{{"principal":"user:bob","role":"Reader","scope":"/apps/{}","id":"a-9"}}"#,
                "x".repeat(300)
            ),
            "over the limit of 200",
        ),
        (
            "/t/assignments/a-9",
            assignment("a-9", "user:bob", "No Such Role", "/apps"),
            "No Such Role",
        ),
        (
            "/t/roles/r-reader",
            r#"{"name":"Reader","id":"r-reader"}"#.into(),
            "defined twice",
        ),
    ];
    for (key, value, expected) in cases {
        let rev = etcd.put(key, value.as_bytes());
        judged(&store, rev).await;
        let s = status(&server).await;
        assert!(
            s.last_error.contains(expected) && s.last_error.contains("etcd:/t/"),
            "{key}: {expected}: {}",
            s.last_error
        );
        // The last good policy keeps serving, at the revision it was read at.
        assert_eq!(s.store_revision, good);
        assert!(allowed(&server, "user:alice", "Devices/read", "/apps/fleet/d1").await);
        assert!(!allowed(&server, "user:bob", "Devices/read", "/apps/d1").await);
        // Removing the bad key makes the store valid again: served at that revision.
        good = etcd.delete(key);
        judged(&store, good).await;
        assert_eq!(status(&server).await.store_revision, good);
    }
    // Once the bad key is gone (and a good change made), the store serves again.
    let rev = etcd.put(
        "/t/assignments/a-9",
        assignment("a-9", "user:bob", "Reader", "/apps").as_bytes(),
    );
    judged(&store, rev).await;
    let s = status(&server).await;
    assert!(s.last_error.is_empty(), "{}", s.last_error);
    assert_eq!(s.store_revision, rev);
    assert!(allowed(&server, "user:bob", "Devices/read", "/apps/d1").await);
}

#[tokio::test]
async fn a_store_that_cannot_be_read_at_start_up_is_not_ready_and_answers_nothing() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (server, store) = serve_with_store(
        vec![format!("http://127.0.0.1:{port}")],
        PREFIX,
        &[("roles.yaml", FILES)],
        |_| {},
        false,
    )
    .await;
    crate::support::crypto();
    // Not ready: wait for the first failed read to be recorded (bounded), then look.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while server.app.policy.last_error().is_none() {
        assert!(tokio::time::Instant::now() < deadline, "no error recorded");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let response = reqwest::get(format!("http://{}/readyz", server.http))
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    let body = response.text().await.unwrap();
    assert!(body.contains("store not loaded"), "{body}");
    assert!(body.contains("the store could not be read"), "{body}");
    assert!(!server.app.policy.is_ready());
    assert!(!store.reachable());
    let err = client(&server)
        .await
        .check(pb::CheckRequest {
            principal: "user:alice".into(),
            action: "Devices/read".into(),
            scope: "/apps".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable);
}

/// An App Administrator in the store, so that the Admin API has someone to act for.
pub fn seed_admin(etcd: &Etcd) {
    etcd.put(
        "/t/assignments/admin-1",
        assignment("admin-1", "user:root1", "App Administrator", "/apps").as_bytes(),
    );
}

/// A replica in-process on the store under [`PREFIX`] with the roles of [`FILES`], ready.
async fn replica(etcd: &Etcd) -> (TestServer, std::sync::Arc<iot_authz::store::Store>) {
    serve_with_store(
        etcd.endpoints(),
        PREFIX,
        &[("roles.yaml", FILES)],
        |_| {},
        true,
    )
    .await
}

pub fn as_actor<T>(actor: &str, message: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    r.metadata_mut()
        .insert("x-iotauthz-principal", actor.parse().unwrap());
    r
}

/// `user:root1` grants Reader at `/apps/fleet` to `principal` (under `id`, or one the
/// server picks when empty) through the Admin API; returns the write's consistency token.
pub async fn grant_reader(
    admin: &mut iot_authz::proto::iotauthz::v1::admin_client::AdminClient<
        tonic::transport::Channel,
    >,
    id: &str,
    principal: &str,
) -> String {
    admin
        .create_role_assignment(as_actor(
            "user:root1",
            pb::CreateRoleAssignmentRequest {
                assignment: Some(pb::RoleAssignment {
                    id: id.into(),
                    principal: principal.into(),
                    role: "Reader".into(),
                    scope: "/apps/fleet".into(),
                    ..Default::default()
                }),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .token
}

pub async fn check_at(
    grpc: std::net::SocketAddr,
    principal: &str,
    token: &str,
) -> Result<pb::CheckResponse, tonic::Status> {
    let mut c = AuthorizerClient::connect(format!("http://{grpc}"))
        .await
        .unwrap();
    let mut r = tonic::Request::new(pb::CheckRequest {
        principal: principal.into(),
        action: "Devices/read".into(),
        scope: "/apps/fleet/d1".into(),
        at_least: token.into(),
        ..Default::default()
    });
    r.set_timeout(Duration::from_millis(1500));
    c.check(r).await.map(tonic::Response::into_inner)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_write_through_one_replica_is_read_through_another_with_its_token() {
    use iot_authz::proto::iotauthz::v1::admin_client::AdminClient;
    let etcd = Etcd::start().await;
    seed_admin(&etcd);
    // Replica 1 in-process; replica 2 the real binary, started with the store flags.
    let (one, _) = replica(&etcd).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("roles.yaml");
    std::fs::write(&file, FILES).unwrap();
    let (two, two_grpc, two_http) = crate::support::serve_binary(
        [
            "--policy".as_ref(),
            file.as_os_str(),
            "--etcd-endpoints".as_ref(),
            etcd.endpoints().join(",").as_ref(),
            "--etcd-prefix".as_ref(),
            PREFIX.as_ref(),
        ],
        &[],
    );
    // Stopped however the test ends.
    let _two = KillOnDrop(two);
    let mut admin = AdminClient::connect(one.grpc_url()).await.unwrap();
    for round in 0..3 {
        let principal = format!("user:reader-{round}");
        let token = grant_reader(&mut admin, &format!("g-{round}"), &principal).await;
        // At once, on the other replica: the token makes it wait for the write.
        let r = check_at(two_grpc, &principal, &token).await.unwrap();
        assert!(r.allowed, "round {round}");
        let at = |t: &str| t.trim_start_matches('r').parse::<i64>().unwrap();
        assert!(at(&r.token) >= at(&token), "{} {}", r.token, token);
        let deleted = admin
            .delete_role_assignment(as_actor(
                "user:root1",
                pb::DeleteRoleAssignmentRequest {
                    id: format!("g-{round}"),
                },
            ))
            .await
            .unwrap()
            .into_inner();
        let r = check_at(two_grpc, &principal, &deleted.token)
            .await
            .unwrap();
        assert!(!r.allowed, "round {round}");
    }
    // The binary reports the store in its readiness detail.
    crate::support::crypto();
    let body = reqwest::get(format!("http://{two_http}/readyz"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(body.starts_with("ready\nstore revision "), "{body}");
}

/// A child process killed (and reaped) when dropped.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replica_behind_the_token_answers_unavailable_and_a_bad_token_is_invalid() {
    let etcd = Etcd::start().await;
    etcd.put(
        "/t/assignments/a-1",
        assignment("a-1", "user:alice", "Reader", "/apps/fleet").as_bytes(),
    );
    let (server, store) = replica(&etcd).await;
    let ahead = format!("r{}", store.through() + 1000);
    // Bounded by the caller's deadline (under the 2 s cap), then UNAVAILABLE.
    let started = std::time::Instant::now();
    let err = check_at(server.grpc, "user:alice", &ahead)
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    assert!(err.message().contains("not caught up"), "{}", err.message());
    assert!(started.elapsed() < Duration::from_secs(3));
    let err = check_at(server.grpc, "user:alice", "yesterday")
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    // A token this replica has reached answers at once, with the current token.
    let now = format!("r{}", store.through());
    let r = check_at(server.grpc, "user:alice", &now).await.unwrap();
    assert_eq!(r.token, now);
    // A revision reached only by a write outside the prefix: a progress report proves the
    // policy current there, and the status and the metric say so.
    let outside = etcd.put("/elsewhere/x", b"not policy");
    let r = check_at(server.grpc, "user:alice", &format!("r{outside}"))
        .await
        .unwrap();
    assert_eq!(r.token, format!("r{outside}"));
    assert_eq!(status(&server).await.store_revision, outside);
    let metrics = server.metrics().await;
    assert!(
        metrics.contains(&format!("iot_authz_store_revision {outside}\n")),
        "{metrics}"
    );
    // The HTTP modes read the header: 503 behind, 400 for a bad token.
    crate::support::crypto();
    let http = reqwest::Client::new();
    let url = format!("http://{}/v1/authz/nginx", server.http);
    let r = http
        .get(&url)
        .header("x-iotauthz-consistency", &ahead)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let r = http
        .get(&url)
        .header("x-iotauthz-consistency", "nope")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn a_server_without_a_store_refuses_tokens_and_answers_without_one() {
    let server = TestServer::start(crate::support::demo()).await;
    let r = check_at(server.grpc, "user:alice@contoso.com", "")
        .await
        .unwrap();
    assert!(r.token.is_empty());
    let err = check_at(server.grpc, "user:alice@contoso.com", "r5")
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable);
    assert!(err.message().contains("no store"), "{}", err.message());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_three_member_cluster_survives_one_member_and_refuses_writes_without_a_majority() {
    use iot_authz::proto::iotauthz::v1::admin_client::AdminClient;
    let mut etcd = Etcd::start_cluster(3).await;
    seed_admin(&etcd);
    let (one, _) = replica(&etcd).await;
    let (two, two_store) = replica(&etcd).await;
    let mut admin = AdminClient::connect(one.grpc_url()).await.unwrap();
    let grant = |id: &str| {
        as_actor(
            "user:root1",
            pb::CreateRoleAssignmentRequest {
                assignment: Some(pb::RoleAssignment {
                    id: id.into(),
                    principal: format!("user:{id}"),
                    role: "Reader".into(),
                    scope: "/apps/fleet".into(),
                    ..Default::default()
                }),
            },
        )
    };

    // One member down: writes and watches go on (once the others agree on a leader, if
    // the stopped member led).
    etcd.stop_member(0);
    etcd.wait_healthy().await;
    let mut token = String::new();
    for i in 0..3 {
        token = admin
            .create_role_assignment(grant(&format!("one-down-{i}")))
            .await
            .unwrap()
            .into_inner()
            .token;
    }
    for i in 0..3 {
        let r = check_at(two.grpc, &format!("user:one-down-{i}"), &token)
            .await
            .unwrap();
        assert!(r.allowed, "{i}");
    }

    // A majority down: writes fail with UNAVAILABLE, both replicas keep answering from
    // their last policy and report etcd unreachable.
    etcd.stop_member(1);
    let err = admin
        .create_role_assignment(grant("no-quorum"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    for server in [&one, &two] {
        assert!(allowed(server, "user:one-down-0", "Devices/read", "/apps/fleet/d1").await);
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while two_store.reachable() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "etcd still reported reachable"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let s = status(&two).await;
    assert!(!s.store_reachable);
    assert!(s.store_seconds_since_contact >= 0.0);

    // Back: the replicas catch up with no lost or duplicated change.
    etcd.restart_member(0);
    etcd.restart_member(1);
    etcd.wait_healthy().await;
    let mut last = String::new();
    for attempt in 0.. {
        match admin.create_role_assignment(grant("after")).await {
            Ok(r) => {
                last = r.into_inner().token;
                break;
            }
            // The write that timed out without a quorum may have been applied: read it.
            Err(e) if e.code() == tonic::Code::AlreadyExists => break,
            Err(e) => {
                assert!(attempt < 50, "{e:?}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    for server in [&one, &two] {
        let r = check_at(server.grpc, "user:after", &last).await.unwrap();
        assert!(r.allowed);
    }
    let listed = AdminClient::connect(two.grpc_url())
        .await
        .unwrap()
        .list_role_assignments(as_actor(
            "user:root1",
            pb::ListRoleAssignmentsRequest {
                scope: "/apps".into(),
                at_least: last.clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let mut ids: Vec<String> = listed.assignments.into_iter().map(|a| a.id).collect();
    ids.sort();
    let expected_without = ["admin-1", "after", "one-down-0", "one-down-1", "one-down-2"];
    let expected_with = [
        "admin-1",
        "after",
        "no-quorum",
        "one-down-0",
        "one-down-1",
        "one-down-2",
    ];
    assert!(ids == expected_without || ids == expected_with, "{ids:?}");
}

/// The files plus a route, for requests through Envoy.
const FILES_WITH_ROUTES: &str = r#"
version: 1
roles:
  - name: Reader
    id: r-reader
    actions: ["*/read"]
  - name: App Administrator
    id: r-admin
    actions: ["*"]
    assignableScopes: ["/apps"]
routes:
  - methods: [GET]
    path: /apps/{app}/devices/{device}
    action: Devices/read
    scope: /apps/{app}/devices/{device}
"#;

#[tokio::test(flavor = "multi_thread")]
async fn grants_and_revocations_are_seen_through_envoy_on_every_replica_with_the_token() {
    use iot_authz::proto::iotauthz::v1::admin_client::AdminClient;
    crate::support::crypto();
    let etcd = Etcd::start().await;
    seed_admin(&etcd);
    let files = [("roles.yaml", FILES_WITH_ROUTES)];
    let (one, _) = serve_with_store(etcd.endpoints(), PREFIX, &files, |_| {}, true).await;
    let (two, _) = serve_with_store(etcd.endpoints(), PREFIX, &files, |_| {}, true).await;
    let upstream = crate::support::Upstream::start().await;
    // Envoy's gRPC ext_authz cluster round-robins over both replicas.
    let endpoint = |port: u16| {
        format!(
            "              - endpoint:\n                  address:\n                    socket_address: {{address: 127.0.0.1, port_value: {port}}}"
        )
    };
    let both = format!(
        "{}\n{}",
        endpoint(one.grpc.port()),
        endpoint(two.grpc.port())
    );
    let envoy = crate::support::Envoy::start(
        "envoy.yaml",
        one.grpc,
        upstream.addr,
        &[(endpoint(one.grpc.port()).as_str(), both.as_str())],
    )
    .await;
    let http = reqwest::Client::new();
    let get = |token: String| {
        let http = http.clone();
        let url = envoy.url("/apps/fleet/devices/d1");
        async move {
            http.get(url)
                .header("x-iotauthz-principal", "user:erin")
                .header("x-iotauthz-consistency", token)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    let mut admin = AdminClient::connect(one.grpc_url()).await.unwrap();
    for round in 0..3 {
        let granted = grant_reader(&mut admin, &format!("e-{round}"), "user:erin").await;
        // Four requests at once after the write: round robin sends two to each replica.
        for _ in 0..4 {
            assert_eq!(get(granted.clone()).await, 200, "round {round}");
        }
        let revoked = admin
            .delete_role_assignment(as_actor(
                "user:root1",
                pb::DeleteRoleAssignmentRequest {
                    id: format!("e-{round}"),
                },
            ))
            .await
            .unwrap()
            .into_inner()
            .token;
        for _ in 0..4 {
            assert_eq!(get(revoked.clone()).await, 403, "round {round}");
        }
    }
    // A token no replica has reached: 503 through Envoy, bounded by its 1 s timeout.
    assert_eq!(get("r99999999".into()).await, 503);
    assert!(upstream.requests().len() >= 12);
    // Both replicas answered.
    for server in [&one, &two] {
        let metrics = server.metrics().await;
        assert!(metrics.contains("api=\"ext_authz\""), "{metrics}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn after_random_bursts_of_writes_the_followed_policy_decides_as_a_fresh_compile() {
    use iot_authz::policy::{CheckRequest, SourceDocument};
    use iot_authz::store::objects;
    let etcd = Etcd::start().await;
    let (server, store) = replica(&etcd).await;
    let client = iot_authz::store::Etcd::connect(&etcd.endpoints(), None).unwrap();
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move |n: u64| {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (seed >> 33) % n
    };
    let mut last = 0;
    for round in 0..6 {
        // A burst: writes sent back to back, so that the watch delivers several at once.
        for _ in 0..15 {
            let k = next(12);
            let key = format!("{PREFIX}assignments/a-{k}").into_bytes();
            let op = if next(4) == 0 {
                iot_authz::store::etcd::delete(key)
            } else {
                let role = if next(3) == 0 {
                    "App Administrator"
                } else {
                    "Reader"
                };
                let value = assignment(
                    &format!("a-{k}"),
                    &format!("user:p{}", next(5)),
                    role,
                    &format!("/apps/s{}", next(3)),
                );
                iot_authz::store::etcd::put(key, value.into_bytes())
            };
            last = client.txn(Vec::new(), vec![op]).await.unwrap().1;
        }
        judged(&store, last).await;
        // The same objects compiled from scratch.
        let (pairs, _) = client.range_prefix(PREFIX.as_bytes()).await.unwrap();
        let fresh_objects: objects::Objects = pairs
            .iter()
            .filter_map(|kv| {
                let rel = &kv.key[PREFIX.len()..];
                objects::decode(rel, &kv.value, 1 << 20)
                    .unwrap()
                    .map(|o| (String::from_utf8_lossy(rel).into_owned(), Ok(o)))
            })
            .collect();
        let fresh = store
            .compose(&[SourceDocument::new("roles.yaml", FILES)], &fresh_objects)
            .unwrap();
        let served = server.app.policy.current().unwrap();
        assert_eq!(served.store_revision(), last, "round {round}");
        for p in 0..5 {
            for s in 0..3 {
                for action in ["Devices/read", "Devices/write"] {
                    let principal = format!("user:p{p}");
                    let scope = format!("/apps/s{s}/d");
                    let request = CheckRequest {
                        principal: &principal,
                        groups: &[],
                        action,
                        data_action: false,
                        scope: &scope,
                        at: 0,
                    };
                    assert_eq!(
                        served.snapshot.check(&request).unwrap(),
                        fresh.check(&request).unwrap(),
                        "round {round}: {principal} {action} {scope}"
                    );
                }
            }
        }
    }
}

/// `iot-authz load --target assign` against two replicas of one store: each grant goes
/// through the first replica's Admin API and is checked on the second at its token; every
/// grant is counted, allowed, and lands in etcd.
#[tokio::test(flavor = "multi_thread")]
async fn the_load_generator_grants_and_checks_each_grant_on_another_replica() {
    use iot_authz::loadgen::{LoadOptions, Target, WriteOptions, run};
    let etcd = Etcd::start().await;
    seed_admin(&etcd);
    let files = [("roles.yaml", FILES)];
    let (one, _) = serve_with_store(etcd.endpoints(), PREFIX, &files, |_| {}, true).await;
    let (two, _) = serve_with_store(etcd.endpoints(), PREFIX, &files, |_| {}, true).await;
    let report = run(LoadOptions {
        target: Target::Assign,
        addr: one.grpc.to_string(),
        connections: 1,
        concurrency: 1,
        duration: Duration::from_millis(500),
        rate: Some(10.0),
        batch: 1,
        warmup: Duration::ZERO,
        only_allowed: false,
        writes: WriteOptions {
            actor: "user:root1".into(),
            role: "Reader".into(),
            scope: "/apps/fleet".into(),
            action: "Devices/read".into(),
            check_addr: Some(two.grpc.to_string()),
        },
    })
    .await
    .unwrap();
    assert_eq!(
        (report.requests, report.allowed, report.errors),
        (5, 5, 0),
        "{report:?}"
    );
    let (granted, _) = iot_authz::store::Etcd::connect(&etcd.endpoints(), None)
        .unwrap()
        .range_prefix(b"/t/assignments/")
        .await
        .unwrap();
    // The seeded administrator and the five grants.
    assert_eq!(granted.len(), 6);
    // A grant the actor may not make is an error, not a success.
    let refused = run(LoadOptions {
        target: Target::Assign,
        addr: one.grpc.to_string(),
        connections: 1,
        concurrency: 1,
        duration: Duration::from_millis(200),
        rate: Some(10.0),
        batch: 1,
        warmup: Duration::ZERO,
        only_allowed: false,
        writes: WriteOptions {
            actor: "user:nobody".into(),
            ..WriteOptions::default()
        },
    })
    .await
    .unwrap();
    assert_eq!((refused.requests, refused.errors), (2, 2), "{refused:?}");
}

/// A request that still holds a replaced policy (a long query, a page being written) does
/// not hold up the store's watch: the replaced policy is freed off the watch's path, so
/// the next change is applied at once and its token is answered (the watch waited up to
/// 5 s for the holder, past the token's 2 s, and writes through one replica stalled
/// each other).
#[tokio::test(flavor = "multi_thread")]
async fn a_request_holding_a_replaced_policy_does_not_hold_up_the_watch() {
    use iot_authz::proto::iotauthz::v1::admin_client::AdminClient;
    let etcd = Etcd::start().await;
    seed_admin(&etcd);
    let (server, _) = replica(&etcd).await;
    // Held until the end of the test, as a slow request would.
    let held = server.app.policy.current().unwrap();
    let mut admin = AdminClient::connect(server.grpc_url()).await.unwrap();
    for round in 0..3 {
        let principal = format!("user:held-{round}");
        let token = grant_reader(&mut admin, "", &principal).await;
        let answer = check_at(server.grpc, &principal, &token).await;
        assert!(
            answer.as_ref().is_ok_and(|a| a.allowed),
            "round {round}: {answer:?}"
        );
    }
    drop(held);
}

/// A replica on the store under [`PREFIX`] that gathers the changes made elsewhere for an
/// hour: only a request waiting for it ends its window within a test.
async fn gathering_replica(etcd: &Etcd) -> (TestServer, std::sync::Arc<iot_authz::store::Store>) {
    serve_with_store(
        etcd.endpoints(),
        PREFIX,
        &[("roles.yaml", FILES)],
        |o| o.apply_window = Duration::from_secs(3600),
        true,
    )
    .await
}

/// Waits until `store`'s watch has taken the changes up to `revision` into its objects
/// (compiled or not).
async fn taken_from_watch(store: &iot_authz::store::Store, revision: i64) {
    tokio::time::timeout(Duration::from_secs(20), async {
        while store.inputs().revision < revision {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the watch did not bring the change");
}

/// The successful policy installs a server has counted.
async fn installs(server: &TestServer) -> u64 {
    let metrics = server.metrics().await;
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(r#"iot_authz_policy_reloads_total{result="success"} "#))
        .map_or(0, |v| v.trim().parse().unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replica_gathers_changes_made_elsewhere_until_a_token_asks_for_them() {
    let etcd = Etcd::start().await;
    let (server, store) = gathering_replica(&etcd).await;
    let before = installs(&server).await;
    let first = etcd.put(
        "/t/assignments/a-1",
        assignment("a-1", "user:alice", "Reader", "/apps/fleet").as_bytes(),
    );
    let second = etcd.put(
        "/t/assignments/a-2",
        assignment("a-2", "user:bob", "Reader", "/apps/fleet").as_bytes(),
    );
    // The watch takes both writes into the store's objects (two responses)...
    taken_from_watch(&store, second).await;
    // ...and compiles neither while its window is open.
    assert!(store.through() < first, "compiled before the window closed");
    assert!(!allowed(&server, "user:alice", "Devices/read", "/apps/fleet/d1").await);
    assert_eq!(installs(&server).await, before);
    // A check at the second write's token ends the window at once: both writes are
    // compiled together, in one install.
    let r = check_at(server.grpc, "user:bob", &format!("r{second}"))
        .await
        .unwrap();
    assert!(r.allowed);
    assert!(allowed(&server, "user:alice", "Devices/read", "/apps/fleet/d1").await);
    assert_eq!(store.through(), second);
    assert_eq!(installs(&server).await, before + 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replica_gathering_changes_judges_a_write_on_them_not_on_its_served_policy() {
    use iot_authz::proto::iotauthz::v1::admin_client::AdminClient;
    let etcd = Etcd::start().await;
    seed_admin(&etcd);
    etcd.put(
        "/t/assignments/ops-admin",
        assignment("ops-admin", "user:ops", "App Administrator", "/apps").as_bytes(),
    );
    // Replica A gathers the changes made elsewhere for longer than the test; B is as usual.
    let (a, a_store) = gathering_replica(&etcd).await;
    let (b, _) = replica(&etcd).await;
    // Through B, root revokes ops's role.
    let mut admin_b = AdminClient::connect(b.grpc_url()).await.unwrap();
    let revoked = admin_b
        .delete_role_assignment(as_actor(
            "user:root1",
            pb::DeleteRoleAssignmentRequest {
                id: "ops-admin".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .token;
    let revoked: i64 = revoked.trim_start_matches('r').parse().unwrap();
    // A has taken the revocation from its watch, and still serves the policy before it.
    taken_from_watch(&a_store, revoked).await;
    assert!(a_store.through() < revoked);
    // ops's grant through A is judged on the revocation: refused, nothing written.
    let mut admin_a = AdminClient::connect(a.grpc_url()).await.unwrap();
    let refused = admin_a
        .create_role_assignment(as_actor(
            "user:ops",
            pb::CreateRoleAssignmentRequest {
                assignment: Some(pb::RoleAssignment {
                    id: "late".into(),
                    principal: "user:mallory".into(),
                    role: "Reader".into(),
                    scope: "/apps/fleet".into(),
                    ..Default::default()
                }),
            },
        ))
        .await
        .expect_err("a revoked administrator's grant was allowed");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    assert_eq!(etcd.get("/t/assignments/late"), None);
    assert!(a_store.through() >= revoked);
}
