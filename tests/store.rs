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
    let (server, store) = serve_with_store(
        etcd.endpoints(),
        PREFIX,
        &[("roles.yaml", FILES)],
        |_| {},
        true,
    )
    .await;
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
