//! The incremental path end to end: a real etcd, the watch, the admin validation and
//! compaction.

use std::time::Duration;

use iot_authz::policy::CheckRequest;
use iot_authz::server::App;

use crate::store::{FILES, assignment};
use crate::support::etcd::{Etcd, judged, serve_with_store};

const PREFIX: &str = "/ov/";

fn allowed(app: &App, principal: &str, scope: &str) -> bool {
    let policy = app.policy.current().unwrap();
    policy
        .snapshot
        .check(&CheckRequest {
            principal,
            groups: &[],
            action: "Devices/read",
            data_action: false,
            scope,
            at: 0,
        })
        .unwrap()
        .allowed
}

fn overlay_len(app: &App) -> Option<usize> {
    let policy = app.policy.current().unwrap();
    policy
        .snapshot
        .has_overlay()
        .then(|| policy.snapshot.overlay_len())
}

#[tokio::test]
async fn assignment_writes_are_overlaid_other_writes_compile_in_full_and_overlays_compact() {
    let etcd = Etcd::start().await;
    let (server, store) = serve_with_store(
        etcd.endpoints(),
        PREFIX,
        &[("roles.yaml", FILES)],
        |o| o.compact_at = 3,
        true,
    )
    .await;
    let app = server.app.clone();
    let client = iot_authz::store::Etcd::connect(&etcd.endpoints(), None).unwrap();
    let put = |k: &str, v: String| {
        iot_authz::store::etcd::put(format!("{PREFIX}{k}").into_bytes(), v.into_bytes())
    };
    let write = |op| {
        let client = client.clone();
        async move { client.txn(Vec::new(), vec![op]).await.unwrap().1 }
    };
    let r = write(put(
        "assignments/a-1",
        assignment("a-1", "user:one", "Reader", "/apps/s1"),
    ))
    .await;
    judged(&store, r).await;
    assert_eq!(overlay_len(&app), Some(1));
    assert!(allowed(&app, "user:one", "/apps/s1/d"));
    // A role write compiles in full: a new base, no overlay.
    let r = write(put(
        "roles/r-x",
        r#"{"name":"Extra","id":"r-x","actions":["x/read"]}"#.to_owned(),
    ))
    .await;
    judged(&store, r).await;
    assert_eq!(overlay_len(&app), None);
    assert!(allowed(&app, "user:one", "/apps/s1/d"));
    // A grant to a principal the policy has never named, at a new scope: an overlay.
    let r = write(put(
        "assignments/a-2",
        assignment("a-2", "user:new", "Reader", "/apps/new/deeper"),
    ))
    .await;
    judged(&store, r).await;
    assert_eq!(overlay_len(&app), Some(1));
    assert!(allowed(&app, "user:new", "/apps/new/deeper/d"));
    assert!(!allowed(&app, "user:new", "/apps/new"));
    // A revocation of a base assignment: the overlay grows.
    let r = write(iot_authz::store::etcd::delete(
        format!("{PREFIX}assignments/a-1").into_bytes(),
    ))
    .await;
    judged(&store, r).await;
    assert_eq!(overlay_len(&app), Some(2));
    assert!(!allowed(&app, "user:one", "/apps/s1/d"));
    // The queries that read a full policy see the same state.
    {
        let policy = app.policy.current().unwrap();
        let who = policy
            .snapshot
            .who_can("Devices/read", false, "/apps/new/deeper", 0)
            .unwrap();
        assert_eq!(who.principals, ["user:new"]);
        let permissions = policy
            .snapshot
            .permissions("user:one", &[], "/apps/s1", 0)
            .unwrap();
        assert!(permissions.is_empty(), "{permissions:?}");
    }
    // So does a group write.
    let r = write(put(
        "groups/group:g",
        r#"{"id":"group:g","members":["user:c0"]}"#.to_owned(),
    ))
    .await;
    judged(&store, r).await;
    assert_eq!(overlay_len(&app), None);
    assert!(allowed(&app, "user:new", "/apps/new/deeper/d"));
    // Past `compact_at` changes, the overlay is compacted into a new base.
    let mut revision = app.policy.subscribe();
    for n in 0..5 {
        let id = format!("c-{n}");
        let r = write(put(
            &format!("assignments/{id}"),
            assignment(&id, &format!("user:c{n}"), "Reader", "/apps/c"),
        ))
        .await;
        judged(&store, r).await;
    }
    tokio::time::timeout(Duration::from_secs(20), async {
        while overlay_len(&app).is_some_and(|n| n > 3) {
            revision.changed().await.unwrap();
        }
    })
    .await
    .expect("the overlay was not compacted");
    for n in 0..5 {
        assert!(allowed(&app, &format!("user:c{n}"), "/apps/c"), "user:c{n}");
    }
    assert!(!allowed(&app, "user:one", "/apps/s1/d"));
}
