//! The native API and the gRPC plumbing: the generated tonic client for every RPC, the
//! real grpcurl through server reflection only, health, limits and shutdown.

use iot_authz::proto::iotauthz::v1 as pb;
use iot_authz::proto::iotauthz::v1::authorizer_client::AuthorizerClient;
use serde_json::json;
use tonic::Code;

use crate::support::{TestServer, demo, grpcurl, grpcurl_raw, policy};

const LINE_1: &str =
    "/subscriptions/s1/resourceGroups/factory/providers/Microsoft.Edge/targets/line-1";

async fn client(server: &TestServer) -> AuthorizerClient<tonic::transport::Channel> {
    AuthorizerClient::connect(server.grpc_url()).await.unwrap()
}

fn check(principal: &str, action: &str, scope: &str) -> pb::CheckRequest {
    pb::CheckRequest {
        principal: principal.into(),
        action: action.into(),
        scope: scope.into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn check_answers_with_reason_and_revision() {
    let server = TestServer::start(demo()).await;
    let mut c = client(&server).await;
    let r = c
        .check(check(
            "user:alice@contoso.com",
            "Microsoft.Edge/targets/read",
            LINE_1,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(r.allowed);
    let reason = r.reason.unwrap();
    assert_eq!(reason.kind, "roleAssignment");
    assert_eq!(reason.role, "Reader");
    assert_eq!(reason.assignment_id, "demo-1");
    assert_eq!(reason.via, "group:factory-operators");
    assert_eq!(r.revision, demo().revision);
    let r = c
        .check(check(
            "user:alice@contoso.com",
            "Microsoft.Edge/targets/write",
            LINE_1,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(!r.allowed);
    assert_eq!(r.reason.unwrap().kind, "noGrant");
}

#[tokio::test]
async fn check_honours_at_and_token_groups() {
    let server = TestServer::start(policy(
        "version: 1\nroles:\n  - {name: R, actions: ['*']}\nassignments:\n  - {principal: 'group:g', role: R, scope: /, notAfter: '2026-01-01T00:00:00Z'}\n",
    ))
    .await;
    let mut c = client(&server).await;
    let mut req = check("user:x", "a/b", "/s");
    req.groups = vec!["group:g".into()];
    req.at = Some(prost_types::Timestamp {
        seconds: 1_750_000_000,
        nanos: 0,
    });
    assert!(c.check(req.clone()).await.unwrap().into_inner().allowed);
    req.at = Some(prost_types::Timestamp {
        seconds: 1_800_000_000,
        nanos: 0,
    });
    assert!(!c.check(req).await.unwrap().into_inner().allowed);
}

#[tokio::test]
async fn invalid_arguments_are_rejected_with_a_message() {
    let server = TestServer::start(demo()).await;
    let mut c = client(&server).await;
    for (req, needle) in [
        (check("", "a/b", "/"), "principal"),
        (check("alice", "a/b", "/"), "TYPE:VALUE"),
        (check("user:a", "a/b", "no-slash"), "scope"),
        (check("user:a", "a/b", "/a/../b"), "scope"),
        (check("user:a", "", "/"), "action"),
    ] {
        let e = c.check(req).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(e.message().contains(needle), "{}", e.message());
    }
    // A timestamp `google.protobuf.Timestamp` does not allow, in a Check, inside a batch,
    // and in the other queries.
    let at = |seconds: i64, nanos: i32| {
        let mut req = check("user:a", "a/b", "/");
        req.at = Some(prost_types::Timestamp { seconds, nanos });
        req
    };
    for (seconds, nanos) in [(0, -1), (0, 1_000_000_000), (i64::MAX, 0), (i64::MIN, 0)] {
        let e = c.check(at(seconds, nanos)).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{seconds} {nanos}");
        assert!(e.message().contains("invalid at"), "{}", e.message());
        let batch = pb::BatchCheckRequest {
            checks: vec![check("user:a", "a/b", "/"), at(seconds, nanos)],
            ..Default::default()
        };
        let e = c.batch_check(batch).await.unwrap_err();
        assert!(
            e.message().contains("checks[1]: invalid at"),
            "{}",
            e.message()
        );
    }
    let far = prost_types::Timestamp {
        seconds: i64::MAX,
        nanos: 0,
    };
    let e = c
        .who_can(pb::WhoCanRequest {
            action: "a/b".into(),
            scope: "/".into(),
            at: Some(far),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("invalid at"), "{}", e.message());
    // The last second of the year 9999 is a time like any other.
    assert!(c.check(at(253_402_300_799, 999_999_999)).await.is_ok());
    let mut req = check("user:a", "a/b", "/");
    req.groups = vec!["ops".into()];
    assert_eq!(
        c.check(req).await.unwrap_err().code(),
        Code::InvalidArgument
    );
}

#[tokio::test]
async fn batch_check_answers_in_order_up_to_the_limit() {
    let server = TestServer::start(demo()).await;
    let mut c = client(&server).await;
    let checks: Vec<_> = (0..1000)
        .map(|i| {
            let action = if i % 2 == 0 {
                "Microsoft.Edge/targets/read"
            } else {
                "Microsoft.Edge/targets/write"
            };
            check("user:alice@contoso.com", action, LINE_1)
        })
        .collect();
    let r = c
        .batch_check(pb::BatchCheckRequest {
            checks: checks.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.results.len(), 1000);
    assert!(
        r.results
            .iter()
            .enumerate()
            .all(|(i, x)| x.allowed == (i % 2 == 0))
    );
    // Every check is counted by its decision; the latency histogram holds one call.
    let text = server.metrics().await;
    for line in [
        r#"iot_authz_checks_total{api="batch_check",decision="allow",reason="roleAssignment"} 500"#,
        r#"iot_authz_checks_total{api="batch_check",decision="deny",reason="noGrant"} 500"#,
        r#"iot_authz_check_duration_seconds_count{api="batch_check"} 1"#,
    ] {
        assert!(text.contains(line), "{line} missing from\n{text}");
    }
    let mut too_many = checks.clone();
    too_many.push(check("user:a", "a/b", "/"));
    let e = c
        .batch_check(pb::BatchCheckRequest {
            checks: too_many,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let mut bad = checks[..3].to_vec();
    bad[2].scope = "nope".into();
    let e = c
        .batch_check(pb::BatchCheckRequest {
            checks: bad,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(e.message().contains("checks[2]"), "{}", e.message());
}

#[tokio::test]
async fn check_http_maps_identifies_and_decides() {
    let server = TestServer::start(demo()).await;
    let mut c = client(&server).await;
    let req = crate::support::check_http_request;
    let r = c
        .check_http(req(
            "",
            "GET",
            LINE_1,
            &[("X-IotAuthz-Principal", "user:alice@contoso.com")],
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(r.allowed);
    assert_eq!(r.status, 200);
    assert_eq!(r.action, "Microsoft.Edge/targets/read");
    assert_eq!(r.scope, LINE_1);
    assert_eq!(r.principal, "user:alice@contoso.com");
    for (r, status, kind) in [
        (req("", "GET", LINE_1, &[]), 401, "noIdentity"),
        (
            req("user:alice@contoso.com", "GET", "/a/%2e%2e/b", &[]),
            400,
            "malformed",
        ),
        (
            req("user:alice@contoso.com", "GET", "/nothing", &[]),
            403,
            "noRoute",
        ),
        (
            req("user:alice@contoso.com", "PUT", LINE_1, &[]),
            403,
            "noGrant",
        ),
    ] {
        let out = c.check_http(r).await.unwrap().into_inner();
        assert!(!out.allowed);
        assert_eq!(out.status, status);
        assert_eq!(out.reason.unwrap().kind, kind);
    }
}

/// A role with `*` over a large catalog, held through many assignments, makes actions ×
/// assignments grants from a small policy: the answer is refused once it would pass the
/// message size (4 MiB by default; RESOURCE_EXHAUSTED, with a message), never built
/// whole, and smaller answers from the same policy still come.
#[tokio::test]
async fn list_permissions_refuses_an_answer_past_the_message_size() {
    use std::fmt::Write;
    let mut text = String::from("version: 1\nactions:\n");
    for i in 0..2000 {
        writeln!(text, "  - name: Fleet/things{i}/read").unwrap();
    }
    text.push_str("roles:\n  - {name: All, actions: ['*']}\ngroups:\n  - {id: 'group:all', members: ['user:a']}\nassignments:\n  - {principal: 'user:b', role: All, scope: /sites/one}\n");
    for i in 0..200 {
        writeln!(
            text,
            "  - {{principal: 'group:all', role: All, scope: /, id: grant-number-{i}}}"
        )
        .unwrap();
    }
    let server = TestServer::start(crate::support::policy(&text)).await;
    let mut c = client(&server).await;
    let ask = |principal: &str| pb::ListPermissionsRequest {
        principal: principal.into(),
        scope: "/sites/one".into(),
        ..Default::default()
    };
    let err = c.list_permissions(ask("user:a")).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("narrower scope"), "{err:?}");
    let small = c
        .list_permissions(ask("user:b"))
        .await
        .unwrap()
        .into_inner();
    // The catalog, and the assign action every policy's universe holds.
    assert_eq!(small.permissions.len(), 2001);
    assert!(small.permissions.iter().all(|p| p.grants.len() == 1));
    // With a smaller --max-message-bytes the bound follows it: that answer (over 100 KB)
    // is refused the same way, not left to fail in the encoder.
    let options = iot_authz::server::ServerOptions {
        max_message_bytes: 64 * 1024,
        ..Default::default()
    };
    let small_server =
        TestServer::start_server_options(crate::support::policy(&text), options).await;
    let err = client(&small_server)
        .await
        .list_permissions(ask("user:b"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("61440 bytes"), "{err:?}");
}

#[tokio::test]
async fn list_permissions_who_can_and_check_assign() {
    let server = TestServer::start(demo()).await;
    let mut c = client(&server).await;
    let perms = c
        .list_permissions(pb::ListPermissionsRequest {
            principal: "user:carol@contoso.com".into(),
            scope: LINE_1.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let write = perms
        .permissions
        .iter()
        .find(|p| p.action == "Microsoft.Edge/targets/write")
        .unwrap();
    assert_eq!(write.grants[0].role, "Contributor");
    assert!(
        !perms
            .permissions
            .iter()
            .any(|p| p.action == "Microsoft.Edge/targets/delete"),
        "the deny applies"
    );
    let who = c
        .who_can(pb::WhoCanRequest {
            action: "Microsoft.Edge/targets/write".into(),
            scope: LINE_1.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        who.principals
            .contains(&"user:carol@contoso.com".to_owned())
    );
    assert!(who.principals.contains(&"user:dave@contoso.com".to_owned()));
    assert!(who.groups.contains(&"group:line-leads".to_owned()));
    assert!(
        !who.principals
            .contains(&"user:alice@contoso.com".to_owned())
    );
    let assign = c
        .check_assign(pb::CheckAssignRequest {
            actor: "user:dave@contoso.com".into(),
            role: "Reader".into(),
            scope: LINE_1.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(assign.allowed, "{assign:?}");
    let assign = c
        .check_assign(pb::CheckAssignRequest {
            actor: "user:carol@contoso.com".into(),
            role: "Reader".into(),
            scope: LINE_1.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!assign.allowed);
    assert_eq!(
        assign.missing_actions,
        vec!["Microsoft.Authorization/roleAssignments/write"]
    );
    let e = c
        .check_assign(pb::CheckAssignRequest {
            actor: "user:x".into(),
            role: "No Such Role".into(),
            scope: "/".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn policy_status_reports_the_loaded_policy() {
    let server = TestServer::start(demo()).await;
    let s = client(&server)
        .await
        .get_policy_status(pb::GetPolicyStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    let expected = demo();
    assert_eq!(s.revision, expected.revision);
    assert_eq!(s.sources, expected.sources);
    assert_eq!(s.sources.len(), 6);
    let c = expected.counts;
    let want = [
        c.documents,
        c.roles,
        c.assignments,
        c.deny_assignments,
        c.groups,
        c.principals,
        c.scopes,
        c.catalog_actions,
        c.routes,
    ]
    .map(|n| n as u64);
    // Every count differs from the others, so a count reported in another's field fails.
    let mut distinct = want.to_vec();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(distinct.len(), want.len(), "{want:?}");
    let got = s.counts.unwrap();
    let got = [
        got.documents,
        got.roles,
        got.assignments,
        got.deny_assignments,
        got.groups,
        got.principals,
        got.scopes,
        got.catalog_actions,
        got.routes,
    ];
    assert_eq!(got, want);
    assert!(s.loaded_at.is_some());
    assert!(s.last_error.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn grpcurl_uses_reflection_only() {
    let server = TestServer::start(demo()).await;
    let addr = server.grpc;
    let (ok, listing, err) = grpcurl_raw(&["-plaintext", &addr.to_string(), "list"]);
    assert!(ok, "{err}");
    for service in [
        "iotauthz.v1.Authorizer",
        "iotauthz.v1.Admin",
        "envoy.service.auth.v3.Authorization",
        "grpc.health.v1.Health",
    ] {
        assert!(listing.lines().any(|l| l == service), "{listing}");
    }
    let (ok, described, err) = grpcurl_raw(&[
        "-plaintext",
        &addr.to_string(),
        "describe",
        "envoy.service.auth.v3.Authorization",
    ]);
    assert!(ok && described.contains("rpc Check"), "{described}{err}");
    let r = grpcurl(
        addr,
        "iotauthz.v1.Authorizer/Check",
        &json!({
        "principal": "user:alice@contoso.com", "action": "Microsoft.Edge/targets/read", "scope": LINE_1}),
    );
    assert_eq!(r["allowed"], true);
    assert_eq!(r["reason"]["assignmentId"], "demo-1");
    let r = grpcurl(
        addr,
        "iotauthz.v1.Authorizer/CheckHttp",
        &json!({
        "method": "DELETE", "path": LINE_1, "headers": {"x-iotauthz-principal": "user:carol@contoso.com"}}),
    );
    assert_eq!(r["status"], 403);
    assert_eq!(r["reason"]["kind"], "denyAssignment");
    let r = grpcurl(addr, "iotauthz.v1.Authorizer/GetPolicyStatus", &json!({}));
    assert_eq!(r["revision"], demo().revision);
    let r = grpcurl(
        addr,
        "grpc.health.v1.Health/Check",
        &json!({"service": "iotauthz.v1.Authorizer"}),
    );
    assert_eq!(r["status"], "SERVING");
    let r = grpcurl(
        addr,
        "grpc.health.v1.Health/Check",
        &json!({"service": "envoy.service.auth.v3.Authorization"}),
    );
    assert_eq!(r["status"], "SERVING");
}

#[tokio::test]
async fn health_is_not_serving_without_a_policy_and_http_endpoints_answer() {
    use iot_authz::live::PolicyState;
    crate::support::crypto();
    let server =
        TestServer::start_with(std::sync::Arc::new(PolicyState::new()), Default::default()).await;
    let channel = server.channel().await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let status = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .status;
    assert_eq!(
        status,
        tonic_health::pb::health_check_response::ServingStatus::NotServing as i32
    );
    let http = reqwest::Client::new();
    let get = |p: &str| http.get(format!("http://{}{p}", server.http)).send();
    assert_eq!(get("/healthz").await.unwrap().status(), 200);
    assert_eq!(get("/readyz").await.unwrap().status(), 503);
    let e = client(&server)
        .await
        .check(check("user:a", "a/b", "/"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable);
}

#[tokio::test]
async fn every_health_service_is_not_serving_until_a_policy_loads() {
    use iot_authz::live::PolicyState;
    use tonic_health::pb::health_check_response::ServingStatus;
    let state = std::sync::Arc::new(PolicyState::new());
    let server = TestServer::start_with(state.clone(), Default::default()).await;
    let channel = server.channel().await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let services = [
        "",
        "iotauthz.v1.Authorizer",
        "envoy.service.auth.v3.Authorization",
    ];
    for service in services {
        let status = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap_or_else(|e| panic!("{service:?}: {e:?}"))
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::NotServing as i32, "{service:?}");
    }
    // Once the policy loads, every one of them turns SERVING.
    let mut watch = health
        .watch(tonic_health::pb::HealthCheckRequest {
            service: "envoy.service.auth.v3.Authorization".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        watch.message().await.unwrap().unwrap().status,
        ServingStatus::NotServing as i32
    );
    server.app.install(demo());
    assert_eq!(
        watch.message().await.unwrap().unwrap().status,
        ServingStatus::Serving as i32
    );
}

#[tokio::test]
async fn metrics_count_decisions_by_api_and_reason() {
    let server = TestServer::start(demo()).await;
    let mut c = client(&server).await;
    c.check(check(
        "user:alice@contoso.com",
        "Microsoft.Edge/targets/read",
        LINE_1,
    ))
    .await
    .unwrap();
    c.check(check(
        "user:alice@contoso.com",
        "Microsoft.Edge/targets/write",
        LINE_1,
    ))
    .await
    .unwrap();
    c.check(check(
        "user:alice@contoso.com",
        "Microsoft.Edge/targets/write",
        LINE_1,
    ))
    .await
    .unwrap();
    let text = server.metrics().await;
    assert!(
        text.contains(
            r#"iot_authz_checks_total{api="check",decision="allow",reason="roleAssignment"} 1"#
        ),
        "{text}"
    );
    assert!(
        text.contains(r#"iot_authz_checks_total{api="check",decision="deny",reason="noGrant"} 2"#),
        "{text}"
    );
    assert!(
        text.contains(r#"iot_authz_check_duration_seconds_count{api="check"} 3"#),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            r#"iot_authz_policy_info{{revision="{}"}} 1"#,
            demo().revision
        )),
        "{text}"
    );
}

#[tokio::test]
async fn oversized_messages_are_refused() {
    use iot_authz::server::ServerOptions;
    let options = ServerOptions {
        max_message_bytes: 1024,
        ..Default::default()
    };
    let server = TestServer::start_server_options(demo(), options).await;
    let mut c = client(&server).await;
    let e = c
        .check(check("user:a", &"a".repeat(4096), "/"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::OutOfRange, "{e:?}");
    assert!(c.check(check("user:a", "a/b", "/")).await.is_ok());
}

#[tokio::test]
async fn shutdown_drains_and_turns_unready() {
    crate::support::crypto();
    let mut server = TestServer::start(demo()).await;
    let mut c = client(&server).await;
    assert!(c.check(check("user:a", "a/b", "/")).await.is_ok());
    server.stop().await;
    assert!(c.check(check("user:a", "a/b", "/")).await.is_err());
    assert!(
        server
            .app
            .draining
            .load(std::sync::atomic::Ordering::Relaxed)
    );
}

#[tokio::test]
async fn shutdown_cuts_a_health_watch_after_the_grace_period() {
    use iot_authz::server::ServerOptions;
    let options = ServerOptions {
        shutdown_grace: std::time::Duration::from_millis(300),
        ..Default::default()
    };
    let mut server = TestServer::start_server_options(demo(), options).await;
    let channel = server.channel().await;
    let mut watch = tonic_health::pb::health_client::HealthClient::new(channel)
        .watch(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(watch.message().await.unwrap().is_some());
    // A hang detector: without the grace period, stop() waits for the stream forever.
    tokio::time::timeout(std::time::Duration::from_secs(20), server.stop())
        .await
        .expect("shutdown waited for the Watch stream");
    let mut rest = Vec::new();
    while let Ok(Some(m)) = watch.message().await {
        rest.push(m.status);
    }
    assert_eq!(
        rest,
        vec![tonic_health::pb::health_check_response::ServingStatus::NotServing as i32]
    );
}

/// Writes a CA, a server certificate for `localhost` and a client certificate, as PEM files.
fn pki(dir: &std::path::Path) -> (String, String, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let ca = rcgen::Issuer::new(ca_params, ca_key);
    let server_key = rcgen::KeyPair::generate().unwrap();
    let server = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&server_key, &ca)
        .unwrap();
    let client_key = rcgen::KeyPair::generate().unwrap();
    let client = rcgen::CertificateParams::new(vec!["client.example".to_owned()])
        .unwrap()
        .signed_by(&client_key, &ca)
        .unwrap();
    std::fs::write(dir.join("ca.crt"), ca_cert.pem()).unwrap();
    std::fs::write(dir.join("server.crt"), server.pem()).unwrap();
    std::fs::write(dir.join("server.key"), server_key.serialize_pem()).unwrap();
    (ca_cert.pem(), client.pem(), client_key.serialize_pem())
}

async fn tls_channel(
    port: u16,
    ca: &str,
    identity: Option<(&str, &str)>,
) -> Result<tonic::transport::Channel, tonic::transport::Error> {
    use tonic::transport::{Certificate, ClientTlsConfig, Identity};
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name("localhost");
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    tonic::transport::Channel::from_shared(format!("https://localhost:{port}"))
        .unwrap()
        .tls_config(tls)?
        .connect()
        .await
}

#[tokio::test]
async fn tls_and_mutual_tls_on_the_grpc_listener() {
    use iot_authz::server::{ServerOptions, TlsFiles};
    let dir = tempfile::tempdir().unwrap();
    let (ca, client_cert, client_key) = pki(dir.path());
    let files = |client_ca: bool| TlsFiles {
        cert: dir.path().join("server.crt"),
        key: dir.path().join("server.key"),
        client_ca: client_ca.then(|| dir.path().join("ca.crt")),
    };
    // TLS: a client that trusts the CA is served; a plaintext client is not.
    let options = ServerOptions {
        tls: Some(files(false)),
        ..Default::default()
    };
    let server = TestServer::start_server_options(demo(), options).await;
    let channel = tls_channel(server.grpc.port(), &ca, None).await.unwrap();
    let r = AuthorizerClient::new(channel)
        .check(check(
            "user:alice@contoso.com",
            "Microsoft.Edge/targets/read",
            LINE_1,
        ))
        .await
        .unwrap();
    assert!(r.into_inner().allowed);
    let plain = AuthorizerClient::connect(server.grpc_url()).await;
    let refused = match plain {
        Err(_) => true,
        Ok(mut c) => c.check(check("user:a", "a/b", "/")).await.is_err(),
    };
    assert!(refused, "plaintext must not be served on a TLS listener");

    // mTLS: without a client certificate the call fails; with one signed by the CA it works.
    let options = ServerOptions {
        tls: Some(files(true)),
        ..Default::default()
    };
    let server = TestServer::start_server_options(demo(), options).await;
    let anonymous = match tls_channel(server.grpc.port(), &ca, None).await {
        Err(_) => true,
        Ok(channel) => AuthorizerClient::new(channel)
            .check(check("user:a", "a/b", "/"))
            .await
            .is_err(),
    };
    assert!(anonymous, "a client without a certificate must be refused");
    let channel = tls_channel(server.grpc.port(), &ca, Some((&client_cert, &client_key)))
        .await
        .unwrap();
    assert!(
        AuthorizerClient::new(channel)
            .check(check("user:a", "a/b", "/"))
            .await
            .is_ok()
    );
}

/// On a TLS listener the opening bytes are the ClientHello's: a client that sends the
/// start of one and stalls is dropped after the opening timeout, by the TLS handshake's
/// own deadline.
#[tokio::test]
async fn a_stalled_tls_handshake_is_dropped() {
    use iot_authz::server::{ServerOptions, TlsFiles};
    use tokio::io::AsyncWriteExt;
    let dir = tempfile::tempdir().unwrap();
    pki(dir.path());
    let options = ServerOptions {
        tls: Some(TlsFiles {
            cert: dir.path().join("server.crt"),
            key: dir.path().join("server.key"),
            client_ca: None,
        }),
        opening_timeout: std::time::Duration::from_millis(300),
        ..Default::default()
    };
    let server = TestServer::start_server_options(demo(), options).await;
    let mut stalled = tokio::net::TcpStream::connect(server.grpc).await.unwrap();
    // A handshake record that announces 512 bytes, and 32 of them.
    let mut record = vec![0x16, 0x03, 0x01, 0x02, 0x00];
    record.extend([0x01; 32]);
    stalled.write_all(&record).await.unwrap();
    assert!(
        crate::support::closed_by_server(&mut stalled, std::time::Duration::from_secs(10)).await,
        "a stalled TLS handshake was kept open"
    );
}

/// The sources a running `serve` reports, stopping it afterwards.
fn served_sources(args: &[&str], env: &[(&str, &str)]) -> Vec<String> {
    let (mut child, grpc, _) = crate::support::spawn_serve(args, env);
    assert!(grpc.ip().is_loopback() && grpc.port() != 0, "{grpc}");
    let status = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let mut c = AuthorizerClient::connect(format!("http://{grpc}"))
            .await
            .unwrap();
        c.get_policy_status(pb::GetPolicyStatusRequest {})
            .await
            .unwrap()
            .into_inner()
    });
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    assert!(child.wait().unwrap().success());
    status.sources
}

#[test]
fn serve_is_configured_by_environment_variables() {
    let dir = tempfile::tempdir().unwrap();
    let files = [dir.path().join("p.yaml"), dir.path().join("q.yaml")];
    for file in &files {
        std::fs::write(file, "version: 1\n").unwrap();
    }
    let shown: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    // IOT_AUTHZ_POLICY is a comma-separated list.
    let sources = served_sources(
        &[],
        &[
            ("IOT_AUTHZ_GRPC_ADDR", "127.0.0.1:0"),
            ("IOT_AUTHZ_HTTP_ADDR", "127.0.0.1:0"),
            ("IOT_AUTHZ_POLICY", &shown.join(",")),
        ],
    );
    assert_eq!(sources, shown);
}

/// Each `--policy` flag is one path, commas included: only the environment variable is a
/// list.
#[test]
fn a_policy_flag_is_one_path_even_with_a_comma() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("my,policy.yaml");
    std::fs::write(&file, "version: 1\n").unwrap();
    let path = file.to_str().unwrap();
    let sources = served_sources(
        &[
            "--policy",
            path,
            "--grpc-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
        ],
        &[],
    );
    assert_eq!(sources, vec![path.to_owned()]);
}

/// The load generator (`iot-authz load`) against the real server: a fixed-rate run sends
/// exactly the requests its schedule holds, each answered; BatchCheck counts every check of
/// its prebuilt bodies and reads their answers (the demo mix is about half allowed).
#[tokio::test(flavor = "multi_thread")]
async fn the_load_generator_keeps_its_schedule_and_counts_answers() {
    use iot_authz::loadgen::{LoadOptions, Target, run};
    let server = TestServer::start(demo()).await;
    let options = |target, rate, batch| LoadOptions {
        target,
        addr: server.grpc.to_string(),
        connections: 2,
        concurrency: 8,
        duration: std::time::Duration::from_millis(500),
        rate,
        batch,
        warmup: std::time::Duration::ZERO,
        only_allowed: false,
        writes: Default::default(),
    };
    let fixed = run(options(Target::ExtAuthz, Some(400.0), 1))
        .await
        .unwrap();
    assert_eq!((fixed.requests, fixed.checks, fixed.errors), (200, 200, 0));
    assert!(
        fixed.allowed > 0 && fixed.allowed < fixed.checks,
        "{fixed:?}"
    );
    let batch = run(options(Target::BatchCheck, None, 10)).await.unwrap();
    assert_eq!(batch.errors, 0);
    assert!(batch.requests > 0);
    assert_eq!(batch.checks, batch.requests * 10);
    assert!(
        batch.allowed > 0 && batch.allowed < batch.checks,
        "{batch:?}"
    );
    // An unreachable server is an error at once, not a hang.
    let unreachable = LoadOptions {
        addr: "127.0.0.1:1".into(),
        ..options(Target::Check, Some(100.0), 1)
    };
    assert!(run(unreachable).await.is_err());
}

#[tokio::test]
async fn rejected_batches_count_as_one_request_error_each() {
    let server = TestServer::start(demo()).await;
    let mut c = client(&server).await;
    let read = check(
        "user:alice@contoso.com",
        "Microsoft.Edge/targets/read",
        LINE_1,
    );
    let too_many = vec![read.clone(); 1001];
    let e = c
        .batch_check(pb::BatchCheckRequest {
            checks: too_many,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("at most 1000"), "{}", e.message());
    let text = server.metrics().await;
    assert!(
        text.contains(r#"iot_authz_request_errors_total{api="batch_check"} 1"#),
        "{text}"
    );
    // Two invalid checks in one batch: still one rejected request, and no decision counted.
    let mut bad = vec![read; 4];
    bad[1].scope = "nope".into();
    bad[3].action = "".into();
    let e = c
        .batch_check(pb::BatchCheckRequest {
            checks: bad,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("checks[1]"), "{}", e.message());
    let text = server.metrics().await;
    assert!(
        text.contains(r#"iot_authz_request_errors_total{api="batch_check"} 2"#),
        "{text}"
    );
    assert!(
        !text.contains(r#"iot_authz_checks_total{api="batch_check""#),
        "{text}"
    );
    assert!(
        !text.contains(r#"iot_authz_check_duration_seconds_count{api="batch_check"}"#),
        "{text}"
    );
    // Past 10,000 checks the batch is refused by the codec, from its bytes, before it is
    // decoded: the handler never sees it, so it counts no request error.
    let flood = vec![pb::CheckRequest::default(); 10_001];
    let e = c
        .batch_check(pb::BatchCheckRequest {
            checks: flood,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.message().contains("batch has 10001 checks"),
        "{}",
        e.message()
    );
    let text = server.metrics().await;
    assert!(
        text.contains(r#"iot_authz_request_errors_total{api="batch_check"} 2"#),
        "{text}"
    );
}

/// A caller-supplied group is an argument of CheckHttp like its principal: a malformed one
/// is INVALID_ARGUMENT whatever the path, not only on a path whose route needs an identity.
#[tokio::test]
async fn check_http_rejects_a_malformed_group_on_every_path() {
    let server = TestServer::start(demo()).await;
    let mut c = client(&server).await;
    for path in [LINE_1, "/nothing/here", "/healthz"] {
        let mut req =
            crate::support::check_http_request("user:alice@contoso.com", "GET", path, &[]);
        req.groups = vec!["factory-operators".into()];
        let e = c.check_http(req).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{path}: {e:?}");
        assert!(e.message().contains("group"), "{path}: {}", e.message());
    }
}

/// The server's deadline reaches the client as `DEADLINE_EXCEEDED`: a Check whose request
/// message never arrives (sent as a stream that never yields) is answered when
/// `--request-timeout-ms` runs out, with that code.
#[tokio::test(flavor = "multi_thread")]
async fn a_request_past_the_server_deadline_is_deadline_exceeded() {
    use iot_authz::server::ServerOptions;
    let server = TestServer::start_server_options(
        demo(),
        ServerOptions {
            request_timeout: std::time::Duration::from_millis(200),
            ..ServerOptions::default()
        },
    )
    .await;
    let channel = server.channel().await;
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let never = tonic::codegen::tokio_stream::pending::<pb::CheckRequest>();
    let answer = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        grpc.client_streaming(
            tonic::Request::new(never),
            tonic::codegen::http::uri::PathAndQuery::from_static("/iotauthz.v1.Authorizer/Check"),
            tonic_prost::ProstCodec::<pb::CheckRequest, pb::CheckResponse>::default(),
        ),
    )
    .await
    .expect("the server answers within its deadline");
    let status = answer.unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(status.message().contains("200 ms"), "{}", status.message());
}
