//! The store with etcd's user/password authentication on (a real etcd, `auth enable`): a
//! replica started with `--etcd-username` and `--etcd-password-file` reads and follows the
//! store and writes through the Admin API, authenticates again with the file's new password
//! after a rotation, and a wrong password leaves it unready with a clear error that never
//! shows the password.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

use iot_authz::proto::iotauthz::v1::admin_client::AdminClient;

use crate::store::{FILES, KillOnDrop, PREFIX, assignment, check_at, grant_reader, seed_admin};
use crate::support::etcd::Etcd;

/// etcd with authentication on: `root` (etcd's administrator, for etcdctl) and `iot`, who
/// may read and write the store's prefix only.
fn enable_auth(etcd: &mut Etcd, iot_password: &str) {
    let run = |etcd: &Etcd, args: &[&str]| {
        let (ok, out) = etcd.etcdctl(args, None);
        assert!(ok, "etcdctl {args:?}: {out}");
    };
    run(
        etcd,
        &["user", "add", "root", "--new-user-password=root-pw"],
    );
    run(etcd, &["role", "add", "iot-authz"]);
    run(
        etcd,
        &[
            "role",
            "grant-permission",
            "iot-authz",
            "readwrite",
            "--prefix=true",
            PREFIX,
        ],
    );
    let new = format!("--new-user-password={iot_password}");
    run(etcd, &["user", "add", "iot", &new]);
    run(etcd, &["user", "grant-role", "iot", "iot-authz"]);
    run(etcd, &["auth", "enable"]);
    etcd.act_as("root:root-pw");
}

/// The binary on the store as `iot`, its password in `password_file`; its log on stderr.
fn serve_as_iot(etcd: &Etcd, policy: &std::path::Path, password_file: &std::path::Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_iot-authz"));
    command
        .arg("serve")
        .args([
            "--grpc-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
            "--policy",
        ])
        .arg(policy)
        .args([
            "--etcd-endpoints",
            &etcd.endpoints().join(","),
            "--etcd-prefix",
            PREFIX,
        ])
        .args(["--etcd-username", "iot", "--etcd-password-file"])
        .arg(password_file)
        .env_remove("IOT_AUTHZ_ETCD_PASSWORD");
    command
}

/// Waits (bounded) until the server's /readyz answers 200: the store has been read.
async fn wait_ready(http: std::net::SocketAddr) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let ready = reqwest::get(format!("http://{http}/readyz"))
            .await
            .is_ok_and(|r| r.status() == 200);
        if ready {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "not ready in time");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replica_authenticates_as_an_etcd_user_follows_the_store_and_survives_a_password_rotation()
 {
    let mut etcd = Etcd::start().await;
    seed_admin(&etcd);
    etcd.put(
        "/t/assignments/a-1",
        assignment("a-1", "user:alice", "Reader", "/apps/fleet").as_bytes(),
    );
    enable_auth(&mut etcd, "first-secret");
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("roles.yaml");
    std::fs::write(&policy, FILES).unwrap();
    let password = dir.path().join("password");
    // A trailing line break, as `echo secret > file` leaves, is not part of the password.
    std::fs::write(&password, "first-secret\n").unwrap();
    let (child, grpc, http) = crate::support::spawn_child(serve_as_iot(&etcd, &policy, &password));
    let _child = KillOnDrop(child);
    crate::support::crypto();
    wait_ready(http).await;

    // Read at start-up with the user's token.
    let r = check_at(grpc, "user:alice", "").await.unwrap();
    assert!(r.allowed, "{r:?}");
    // Followed: a write by someone else (etcdctl as root), seen at its revision.
    let rev = etcd.put(
        "/t/assignments/a-2",
        assignment("a-2", "user:bob", "Reader", "/apps/fleet").as_bytes(),
    );
    let r = check_at(grpc, "user:bob", &format!("r{rev}"))
        .await
        .unwrap();
    assert!(r.allowed, "{r:?}");

    // The password is rotated: etcd drops the user's tokens, the file gets the new one,
    // and the next write through the Admin API authenticates again with it.
    std::fs::write(&password, "second-secret").unwrap();
    let (ok, out) = etcd.etcdctl(
        &["user", "passwd", "iot", "--interactive=false"],
        Some(b"second-secret\n"),
    );
    assert!(ok, "{out}");
    let mut admin = AdminClient::connect(format!("http://{grpc}"))
        .await
        .unwrap();
    let token = grant_reader(&mut admin, "g-1", "user:carol").await;
    let r = check_at(grpc, "user:carol", &token).await.unwrap();
    assert!(r.allowed, "{r:?}");
    assert!(etcd.get("/t/assignments/g-1").is_some());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_etcd_password_leaves_the_replica_unready_with_an_error_that_never_shows_it() {
    let mut etcd = Etcd::start().await;
    seed_admin(&etcd);
    enable_auth(&mut etcd, "the-right-one");
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("roles.yaml");
    std::fs::write(&policy, FILES).unwrap();
    let password = dir.path().join("password");
    let wrong = "wrong-horse-battery-staple";
    std::fs::write(&password, wrong).unwrap();
    let mut command = serve_as_iot(&etcd, &policy, &password);
    command.stderr(Stdio::piped());
    let (mut child, grpc, http) = crate::support::spawn_child(command);
    crate::support::crypto();
    // Not ready, and /readyz says why (bounded wait for the first failed read).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let body = loop {
        let response = reqwest::get(format!("http://{http}/readyz")).await.unwrap();
        assert_eq!(response.status(), 503);
        let body = response.text().await.unwrap();
        if body.contains("authentication failed") {
            break body;
        }
        assert!(tokio::time::Instant::now() < deadline, "{body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(body.contains("etcd user `iot`"), "{body}");
    assert!(!body.contains(wrong), "{body}");
    let err = check_at(grpc, "user:root1", "").await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable);
    // Its log names the failure, never the password.
    let _ = child.kill();
    let mut log = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    let _ = child.wait();
    assert!(log.contains("authentication failed"), "{log}");
    assert!(!log.contains(wrong), "{log}");

    // Without a password source, the command refuses to start.
    let out = Command::new(env!("CARGO_BIN_EXE_iot-authz"))
        .args(["serve", "--policy"])
        .arg(&policy)
        .args([
            "--etcd-endpoints",
            &etcd.endpoints().join(","),
            "--etcd-username",
            "iot",
        ])
        .env_remove("IOT_AUTHZ_ETCD_PASSWORD")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--etcd-password-file"), "{stderr}");
}
