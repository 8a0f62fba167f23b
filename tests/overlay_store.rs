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

/// A hook for [`StoreOptions::between_pieces`](iot_authz::store::StoreOptions): at the
/// first call whose `done` is `at_done`, waits until `armed` is set, then runs `act` (once)
/// with the replica's store.
struct Between {
    armed: std::sync::atomic::AtomicBool,
    acted: std::sync::atomic::AtomicBool,
    store: std::sync::OnceLock<std::sync::Arc<iot_authz::store::Store>>,
}

fn between(
    at_done: bool,
    act: impl Fn(&iot_authz::store::Store) + Send + Sync + 'static,
) -> (std::sync::Arc<Between>, iot_authz::store::PieceHook) {
    use std::sync::atomic::Ordering;
    let state = std::sync::Arc::new(Between {
        armed: false.into(),
        acted: false.into(),
        store: std::sync::OnceLock::new(),
    });
    let s = state.clone();
    let hook = iot_authz::store::PieceHook(std::sync::Arc::new(move |done| {
        if done == at_done && !s.acted.load(Ordering::Acquire) {
            wait_until("the hook armed", || s.armed.load(Ordering::Acquire));
            act(s
                .store
                .get()
                .expect("the store is set before the hook is armed"));
            s.acted.store(true, Ordering::Release);
        }
    }));
    (state, hook)
}

/// Grants Reader at `scope` to `user:uN` as `a-N` for each N of `ns`, straight into
/// etcd under `prefix`; returns the revision of the last.
fn grant_users(etcd: &Etcd, prefix: &str, ns: std::ops::RangeInclusive<u32>, scope: &str) -> i64 {
    let mut r = 0;
    for n in ns {
        let id = format!("a-{n}");
        r = etcd.put(
            &format!("{prefix}assignments/{id}"),
            assignment(&id, &format!("user:u{n}"), "Reader", scope).as_bytes(),
        );
    }
    r
}

/// A replica following `prefix` with `files`, compacting past 3 changes, with `hook`
/// between the pieces of its copies (`configure` sets the rest).
async fn compacting_replica(
    etcd: &Etcd,
    prefix: &str,
    files: &str,
    hook: (std::sync::Arc<Between>, iot_authz::store::PieceHook),
    configure: impl FnOnce(&mut iot_authz::store::StoreOptions),
) -> (
    std::sync::Arc<Between>,
    crate::support::TestServer,
    std::sync::Arc<iot_authz::store::Store>,
) {
    let (state, between_pieces) = hook;
    let (server, store) = serve_with_store(
        etcd.endpoints(),
        prefix,
        &[("roles.yaml", files)],
        |o| {
            o.compact_at = 3;
            o.between_pieces = Some(between_pieces);
            configure(o);
        },
        true,
    )
    .await;
    let _ = state.store.set(store.clone());
    (state, server, store)
}

/// Waits (on a plain thread) until `f` holds, for at most 20 s.
fn wait_until(what: &str, f: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(std::time::Instant::now() < deadline, "{what}: not in time");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Waits until `store` has made `n` compactions.
async fn compacted(store: &iot_authz::store::Store, n: u64) {
    tokio::time::timeout(Duration::from_secs(20), async {
        while store.compactions() < n {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the overlay was not compacted");
}

#[tokio::test(flavor = "multi_thread")]
async fn what_changes_while_a_compaction_copies_the_store_is_laid_over_the_new_base() {
    const P: &str = "/ovc/";
    let etcd = std::sync::Arc::new(Etcd::start().await);
    let e = etcd.clone();
    // After the first piece (one object: `assignments/a-1`, copied as it was), a-1 is
    // revoked, a-2 moves to another principal and scope, and a-9 is new; each is judged
    // by the replica (the lock is free between pieces) before the copy goes on.
    let hook = between(false, move |store| {
        e.delete(&format!("{P}assignments/a-1"));
        e.put(
            &format!("{P}assignments/a-2"),
            assignment("a-2", "user:moved", "Reader", "/apps/moved").as_bytes(),
        );
        let r = e.put(
            &format!("{P}assignments/a-9"),
            assignment("a-9", "user:nine", "Reader", "/apps/nine").as_bytes(),
        );
        wait_until("the changes judged", || *store.judged().borrow() >= r);
    });
    let (hook, server, store) =
        compacting_replica(&etcd, P, FILES, hook, |o| o.gather_piece = 1).await;
    let app = server.app.clone();
    judged(&store, grant_users(&etcd, P, 1..=3, "/apps/s")).await;
    assert_eq!(store.compactions(), 0);
    // The fourth change takes the overlay past `compact_at`: a compaction starts.
    hook.armed.store(true, std::sync::atomic::Ordering::Release);
    let r = etcd.put(
        &format!("{P}assignments/a-4"),
        assignment("a-4", "user:u4", "Reader", "/apps/s").as_bytes(),
    );
    judged(&store, r).await;
    compacted(&store, 1).await;
    assert!(
        hook.acted.load(std::sync::atomic::Ordering::Acquire),
        "the compaction did not stop between pieces"
    );
    // The new base holds a-1 as the first piece copied it; the changes made during the
    // copy are laid over it.
    assert!(
        overlay_len(&app).is_some(),
        "the changes during the copy are not an overlay"
    );
    assert!(
        !allowed(&app, "user:u1", "/apps/s/d"),
        "a revocation during the copy was lost"
    );
    assert!(!allowed(&app, "user:u2", "/apps/s/d"));
    assert!(allowed(&app, "user:moved", "/apps/moved/d"));
    assert!(allowed(&app, "user:nine", "/apps/nine/d"));
    for u in ["user:u3", "user:u4"] {
        assert!(allowed(&app, u, "/apps/s/d"), "{u}");
    }
    // The queries that read a full policy see the same state.
    let policy = app.policy.current().unwrap();
    let who = policy
        .snapshot
        .who_can("Devices/read", false, "/apps/s/d", 0)
        .unwrap();
    assert_eq!(who.principals, ["user:u3", "user:u4"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_compaction_ending_while_the_watch_gathers_changes_serves_them_at_the_next_compile() {
    const P: &str = "/ovg/";
    let etcd = std::sync::Arc::new(Etcd::start().await);
    let e = etcd.clone();
    // Once the copy is complete, a-9 is written and taken from the watch, not compiled:
    // this replica gathers changes for an hour unless a request waits for them.
    let hook = between(true, move |store| {
        let r = e.put(
            &format!("{P}assignments/a-9"),
            assignment("a-9", "user:nine", "Reader", "/apps/s").as_bytes(),
        );
        wait_until("a-9 taken from the watch", || store.inputs().revision >= r);
    });
    let (hook, server, store) = compacting_replica(&etcd, P, FILES, hook, |o| {
        o.apply_window = Duration::from_secs(3600);
    })
    .await;
    let app = server.app.clone();
    hurried_judged(&server, grant_users(&etcd, P, 1..=3, "/apps/s")).await;
    assert_eq!(store.compactions(), 0);
    let r = etcd.put(
        "/ovg/assignments/a-4",
        assignment("a-4", "user:u4", "Reader", "/apps/s").as_bytes(),
    );
    hurried_judged(&server, r).await;
    // Armed once the Check at a-4's token has its answer (no request waits any more);
    // the compaction a-4 started waits for it with its copy complete.
    hook.armed.store(true, std::sync::atomic::Ordering::Release);
    compacted(&store, 1).await;
    // a-9 is in the objects, not compiled: the compaction made the new base and served
    // nothing from those objects.
    assert!(
        !allowed(&app, "user:nine", "/apps/s/d"),
        "served before it was compiled"
    );
    assert!(allowed(&app, "user:u4", "/apps/s/d"));
    // A request at a-9's token: the next compile lays it over the new base alone.
    let r9 = store.inputs().revision;
    hurried_judged(&server, r9).await;
    assert!(allowed(&app, "user:nine", "/apps/s/d"));
    assert_eq!(
        overlay_len(&app),
        Some(1),
        "not laid over the compacted base"
    );
    for n in 1..=4 {
        assert!(
            allowed(&app, &format!("user:u{n}"), "/apps/s/d"),
            "user:u{n}"
        );
    }
}

/// A Check at `revision`'s token (which ends the replica's gathering window), then until
/// the replica has judged it.
async fn hurried_judged(server: &crate::support::TestServer, revision: i64) {
    let answer = crate::store::check_at(server.grpc, "user:u1", &format!("r{revision}")).await;
    assert!(answer.is_ok(), "{answer:?}");
    judged(server.app.store.get().unwrap(), revision).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_piecewise_copy_that_breaks_a_rule_no_state_breaks_is_copied_again_whole() {
    const P: &str = "/ovm/";
    // At least one Reader at /apps/s, in every state below.
    const FILES_MIN: &str = r#"
version: 1
roles:
  - {name: Reader, id: r-reader, actions: ["*/read"]}
constraints:
  - minAssignments: {role: Reader, scope: /apps/s, count: 1}
"#;
    let etcd = std::sync::Arc::new(Etcd::start().await);
    etcd.put(
        &format!("{P}assignments/m-5"),
        assignment("m-5", "user:owner", "Reader", "/apps/s").as_bytes(),
    );
    let e = etcd.clone();
    // Once the copy has passed a-1: a-0 (behind it) made the owner, then m-5 (ahead of it)
    // revoked. The copy holds neither: no Reader at /apps/s.
    let hook = between(false, move |store| {
        e.put(
            &format!("{P}assignments/a-0"),
            assignment("a-0", "user:owner2", "Reader", "/apps/s").as_bytes(),
        );
        let r = e.delete(&format!("{P}assignments/m-5"));
        wait_until("the hand-over judged", || *store.judged().borrow() >= r);
    });
    let (hook, server, store) =
        compacting_replica(&etcd, P, FILES_MIN, hook, |o| o.gather_piece = 1).await;
    let app = server.app.clone();
    hook.armed.store(true, std::sync::atomic::Ordering::Release);
    judged(&store, grant_users(&etcd, P, 1..=4, "/apps/t")).await;
    compacted(&store, 1).await;
    assert!(hook.acted.load(std::sync::atomic::Ordering::Acquire));
    assert!(allowed(&app, "user:owner2", "/apps/s/d"));
    assert!(!allowed(&app, "user:owner", "/apps/s/d"));
}
