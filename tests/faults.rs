//! Faults: iot-authz killed and restarted under load behind the real Envoy, a full disk for
//! the decision log, slow clients holding connections open, and a flood of BatchChecks at
//! the size limit. Nothing crashes, nothing is allowed that should not be.

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use iot_authz::proto::iotauthz::v1 as pb;
use iot_authz::proto::iotauthz::v1::authorizer_client::AuthorizerClient;
use iot_authz::server::AppOptions;
use iot_authz::server::decision_log::LogTarget;

use crate::support::{Envoy, TestServer, Upstream, closed_by_server, crypto, demo, get_on};

const LINE_1: &str =
    "/subscriptions/s1/resourceGroups/factory/providers/Microsoft.Edge/targets/line-1";

fn check(action: &str) -> pb::CheckRequest {
    pb::CheckRequest {
        principal: "user:alice@contoso.com".into(),
        action: action.into(),
        scope: LINE_1.into(),
        ..Default::default()
    }
}

/// Starts the real binary on the demo policy at a given gRPC port; waits for its ready line.
fn start_binary(grpc_port: u16) -> Child {
    let grpc = format!("127.0.0.1:{grpc_port}");
    let (child, bound, _) = crate::support::spawn_serve(
        ["--grpc-addr", grpc.as_str(), "--http-addr", "127.0.0.1:0"],
        &[],
    );
    assert_eq!(bound.port(), grpc_port);
    child
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_and_restart_under_load_denies_while_down_and_recovers() {
    crypto();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = start_binary(port);
    let upstream = Upstream::start().await;
    let envoy = Envoy::start(
        "envoy.yaml",
        format!("127.0.0.1:{port}").parse().unwrap(),
        upstream.addr,
        &[],
    )
    .await;
    let client = reqwest::Client::new();
    let send = |method: reqwest::Method| {
        client
            .request(method, envoy.url(LINE_1))
            .header("x-iotauthz-principal", "user:alice@contoso.com")
            .send()
    };
    // Load: alternate an allowed read and a denied write.
    let mut statuses = Vec::new();
    for _ in 0..20 {
        statuses.push((
            send(reqwest::Method::GET).await.unwrap().status().as_u16(),
            "GET",
        ));
        statuses.push((
            send(reqwest::Method::PUT).await.unwrap().status().as_u16(),
            "PUT",
        ));
    }
    assert!(
        statuses
            .iter()
            .all(|(s, m)| (*m == "GET" && *s == 200) || (*m == "PUT" && *s == 403)),
        "{statuses:?}"
    );
    // kill -9: no graceful anything.
    child.kill().unwrap();
    child.wait().unwrap();
    for _ in 0..20 {
        assert_eq!(
            send(reqwest::Method::GET).await.unwrap().status(),
            403,
            "Envoy must deny while iot-authz is down"
        );
        assert_eq!(send(reqwest::Method::PUT).await.unwrap().status(), 403);
    }
    let seen_while_down = upstream.requests().len();
    assert_eq!(
        seen_while_down, 20,
        "only the allowed reads before the kill reached the upstream"
    );
    // Restart on the same port: Envoy recovers without a restart of its own.
    let mut child = start_binary(port);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if send(reqwest::Method::GET).await.unwrap().status() == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "Envoy did not recover");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(send(reqwest::Method::PUT).await.unwrap().status(), 403);
    assert!(
        upstream.requests().iter().all(|s| s.method == "GET"),
        "a denied write reached the upstream"
    );
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_for_the_decision_log_loses_no_decision() {
    let options = AppOptions {
        decision_log: Some((LogTarget::File("/dev/full".into()), 1.0)),
        ..AppOptions::default()
    };
    let server = TestServer::start_options(demo(), &options).await;
    let app = server.app.clone();
    let mut c = AuthorizerClient::connect(server.grpc_url()).await.unwrap();
    for i in 0..300 {
        let r = c
            .check(check(if i % 2 == 0 {
                "Microsoft.Edge/targets/read"
            } else {
                "Microsoft.Edge/targets/write"
            }))
            .await
            .unwrap();
        assert_eq!(r.into_inner().allowed, i % 2 == 0);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while app.metrics.decision_log.write_errors.get() == 0 {
        assert!(Instant::now() < deadline, "the full disk was never noticed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_clients_holding_connections_do_not_block_others() {
    use tokio::io::AsyncWriteExt;
    let server = TestServer::start(demo()).await;
    let mut idle = Vec::new();
    for i in 0..200 {
        let mut s = tokio::net::TcpStream::connect(server.grpc).await.unwrap();
        if i % 2 == 0 {
            // Half an HTTP/2 preface, then silence.
            s.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
        }
        idle.push(s);
    }
    let answered = tokio::time::timeout(Duration::from_secs(10), async {
        let mut c = AuthorizerClient::connect(server.grpc_url()).await.unwrap();
        c.check(check("Microsoft.Edge/targets/read"))
            .await
            .unwrap()
            .into_inner()
            .allowed
    })
    .await
    .expect("a normal client was blocked by slow ones");
    assert!(answered);
    drop(idle);
}

/// Connections that never send their opening bytes (nothing at all, or half the HTTP/2
/// preface; nothing, or half a request line on the HTTP port) are closed by the server
/// once the opening timeout passes, so they cannot pile up; a connection that opened in
/// time is kept, however long it then idles.
#[tokio::test(flavor = "multi_thread")]
async fn connections_that_never_open_are_closed() {
    use iot_authz::server::ServerOptions;
    use tokio::io::AsyncWriteExt;
    let options = ServerOptions {
        opening_timeout: Duration::from_millis(300),
        ..Default::default()
    };
    let server = TestServer::start_server_options(demo(), options).await;
    let mut silent = Vec::new();
    for (addr, opening) in [
        (server.grpc, &b""[..]),
        (server.grpc, &b"PRI * HTTP/2.0\r\n"[..]),
        (server.http, &b""[..]),
        (server.http, &b"GET /he"[..]),
    ] {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(opening).await.unwrap();
        silent.push(s);
    }
    for mut s in silent {
        assert!(
            closed_by_server(&mut s, Duration::from_secs(10)).await,
            "a silent connection was kept open"
        );
    }
    // A connection that opened in time is kept past the opening timeout: the same socket
    // answers again after it (a client library would reconnect and hide a close).
    let mut opened = tokio::net::TcpStream::connect(server.http).await.unwrap();
    assert_eq!(get_on(&mut opened, "/healthz").await, Some(200));
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(get_on(&mut opened, "/healthz").await, Some(200));
}

/// Past the connection limit of a listener a new connection is closed at once, the older
/// ones keep working, the other listener is not affected (health probes survive a flood of
/// gRPC connections), and a slot frees when its connection closes.
#[tokio::test(flavor = "multi_thread")]
async fn connections_past_the_limit_are_closed() {
    use iot_authz::server::ServerOptions;
    let options = ServerOptions {
        max_connections: 2,
        // Long, so that only the limit can close a silent connection within the test.
        opening_timeout: Duration::from_secs(120),
        ..Default::default()
    };
    let server = TestServer::start_server_options(demo(), options).await;
    let bound = Duration::from_secs(10);
    // gRPC: a client and a silent connection take both slots; a third is closed.
    let mut c = AuthorizerClient::connect(server.grpc_url()).await.unwrap();
    assert!(c.check(check("Microsoft.Edge/targets/read")).await.is_ok());
    let mut held = vec![tokio::net::TcpStream::connect(server.grpc).await.unwrap()];
    let mut extra = tokio::net::TcpStream::connect(server.grpc).await.unwrap();
    assert!(
        closed_by_server(&mut extra, bound).await,
        "past the gRPC limit, kept"
    );
    // The client keeps working (with the slots full, a reconnect would be refused too).
    assert!(c.check(check("Microsoft.Edge/targets/read")).await.is_ok());
    // HTTP has its own slots: an opened keep-alive connection and a silent one; a third
    // is closed, and the opened one still answers on the same socket.
    let mut probe = tokio::net::TcpStream::connect(server.http).await.unwrap();
    assert_eq!(get_on(&mut probe, "/healthz").await, Some(200));
    held.push(tokio::net::TcpStream::connect(server.http).await.unwrap());
    let mut extra = tokio::net::TcpStream::connect(server.http).await.unwrap();
    assert!(
        closed_by_server(&mut extra, bound).await,
        "past the HTTP limit, kept"
    );
    assert_eq!(get_on(&mut probe, "/healthz").await, Some(200));
    // Closing the silent connections frees their slots: a new client gets in (retried
    // until the server has seen them close, within a bound).
    held.clear();
    let joined = tokio::time::timeout(bound, async {
        loop {
            if let Ok(mut fresh) = AuthorizerClient::connect(server.grpc_url()).await
                && fresh
                    .check(check("Microsoft.Edge/targets/read"))
                    .await
                    .is_ok()
            {
                return;
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(
        joined.is_ok(),
        "a freed slot was not given to a new connection"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flood_of_batch_checks_at_the_size_limit() {
    let server = TestServer::start(demo()).await;
    let batch: Vec<pb::CheckRequest> = (0..1000)
        .map(|i| {
            check(if i % 2 == 0 {
                "Microsoft.Edge/targets/read"
            } else {
                "Microsoft.Edge/targets/write"
            })
        })
        .collect();
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let url = server.grpc_url();
        let batch = batch.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = AuthorizerClient::connect(url).await.unwrap();
            for _ in 0..5 {
                let r = c
                    .batch_check(pb::BatchCheckRequest {
                        checks: batch.clone(),
                        ..Default::default()
                    })
                    .await
                    .unwrap()
                    .into_inner();
                assert_eq!(r.results.len(), 1000);
                assert_eq!(r.results.iter().filter(|x| x.allowed).count(), 500);
            }
            let mut over = batch.clone();
            over.push(batch[0].clone());
            let e = c
                .batch_check(pb::BatchCheckRequest {
                    checks: over,
                    ..Default::default()
                })
                .await
                .unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument);
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mut c = AuthorizerClient::connect(server.grpc_url()).await.unwrap();
    assert!(
        c.check(check("Microsoft.Edge/targets/read"))
            .await
            .unwrap()
            .into_inner()
            .allowed
    );
}

/// Starts the real binary on the demo policy with `extra` arguments, both listeners on
/// port 0; returns it with its gRPC and HTTP addresses, read from its ready line.
fn start_serving(extra: &[&str]) -> (Child, String, String) {
    let (child, grpc, http) = crate::support::serve_binary(extra, &[]);
    (child, grpc.to_string(), http.to_string())
}

/// A read the demo allows, asked on a new connection to `grpc`.
async fn read_allowed_on_a_new_connection(grpc: &str) -> bool {
    let mut c = AuthorizerClient::connect(format!("http://{grpc}"))
        .await
        .unwrap();
    c.check(check("Microsoft.Edge/targets/read"))
        .await
        .unwrap()
        .into_inner()
        .allowed
}

fn sigterm(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Waits for the process to exit; a hang detector, so the bound is generous.
async fn wait_for_exit(child: Child) -> std::process::ExitStatus {
    let pid = child.id().to_string();
    let mut child = child;
    let waited = tokio::time::timeout(
        Duration::from_secs(20),
        tokio::task::spawn_blocking(move || child.wait()),
    )
    .await;
    match waited {
        Ok(status) => status.unwrap().unwrap(),
        Err(_) => {
            let _ = Command::new("kill").args(["-KILL", &pid]).status();
            panic!("iot-authz did not exit within 20 s of SIGTERM");
        }
    }
}

async fn health_client(
    grpc: &str,
) -> tonic_health::pb::health_client::HealthClient<tonic::transport::Channel> {
    let channel = tonic::transport::Channel::from_shared(format!("http://{grpc}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    tonic_health::pb::health_client::HealthClient::new(channel)
}

async fn health_status(grpc: &str, service: &str) -> i32 {
    health_client(grpc)
        .await
        .check(tonic_health::pb::HealthCheckRequest {
            service: service.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status
}

const SERVING: i32 = tonic_health::pb::health_check_response::ServingStatus::Serving as i32;
const NOT_SERVING: i32 = tonic_health::pb::health_check_response::ServingStatus::NotServing as i32;

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_with_a_health_watch_open_exits_after_the_grace_period() {
    let (child, grpc, _) = start_serving(&["--shutdown-grace-ms", "300"]);
    let mut watch = health_client(&grpc)
        .await
        .watch(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    // The first message: the stream is open.
    assert_eq!(watch.message().await.unwrap().unwrap().status, SERVING);
    // An ordinary request on another connection still works.
    assert!(read_allowed_on_a_new_connection(&grpc).await);
    sigterm(&child);
    // The watcher hears the drain before its connection is closed.
    assert_eq!(watch.message().await.unwrap().unwrap().status, NOT_SERVING);
    let status = wait_for_exit(child).await;
    assert!(status.success(), "{status}");
    // The stream ends (an error or the end) once the grace period is over.
    assert!(!matches!(watch.message().await, Ok(Some(_))));
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_with_a_shutdown_delay_turns_unready_while_still_serving() {
    crypto();
    // The checks below must all happen within the delay: generous, for a loaded machine.
    let (child, grpc, http) = start_serving(&["--shutdown-delay-ms", "6000"]);
    let client = reqwest::Client::new();
    let readyz = || client.get(format!("http://{http}/readyz")).send();
    assert_eq!(readyz().await.unwrap().status(), 200);
    assert_eq!(health_status(&grpc, "").await, SERVING);
    sigterm(&child);
    // The signal is handled asynchronously: wait until readiness changes. During the delay
    // the listener is still open, so every answer is an answer, never a refused connection.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = readyz()
            .await
            .expect("the HTTP listener closed during the delay");
        if status.status() != 200 {
            assert_eq!(status.status(), 503);
            assert_eq!(status.text().await.unwrap(), "draining\n");
            break;
        }
        assert!(Instant::now() < deadline, "/readyz never turned 503");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // A new connection during the delay is still served, and hears NOT_SERVING.
    for service in [
        "",
        "iotauthz.v1.Authorizer",
        "envoy.service.auth.v3.Authorization",
    ] {
        assert_eq!(
            health_status(&grpc, service).await,
            NOT_SERVING,
            "{service:?}"
        );
    }
    assert!(read_allowed_on_a_new_connection(&grpc).await);
    let status = wait_for_exit(child).await;
    assert!(status.success(), "{status}");
}

/// SIGTERM sent the moment the ready line is read is a graceful stop (exit 0), never the
/// default action: the handlers are installed before the line is printed.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_right_after_the_ready_line_is_a_graceful_stop() {
    for _ in 0..5 {
        let (child, _, _) = start_serving(&[]);
        sigterm(&child);
        let status = wait_for_exit(child).await;
        assert_eq!(status.code(), Some(0), "{status:?}");
    }
}
