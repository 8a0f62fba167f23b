//! Decision logs and shadow mode, through the real Envoy where a proxy is involved.

use std::time::{Duration, Instant};

use iot_authz::server::AppOptions;
use iot_authz::server::decision_log::LogTarget;
use reqwest::StatusCode;
use serde_json::Value;

use crate::support::{Envoy, TestServer, Upstream, crypto, demo, policy};

const LINE_1: &str =
    "/subscriptions/s1/resourceGroups/factory/providers/Microsoft.Edge/targets/line-1";

/// The demo served with a decision log in a new temporary directory, allows sampled at
/// `sample`, on top of `options`; returns the directory (keep it alive), the log's path
/// and the server.
async fn logged_server(
    options: AppOptions,
    sample: f64,
) -> (tempfile::TempDir, std::path::PathBuf, TestServer) {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("decisions.jsonl");
    let options = AppOptions {
        decision_log: Some((LogTarget::File(log.clone()), sample)),
        ..options
    };
    let server = TestServer::start_options(demo(), &options).await;
    (dir, log, server)
}

/// Reads the decision log until `count` lines are there (bounded wait for the writer thread).
async fn log_lines(path: &std::path::Path, count: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        if lines.len() >= count {
            return lines;
        }
        assert!(
            Instant::now() < deadline,
            "only {} decision log lines: {text}",
            lines.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn decision_logs_carry_ids_that_match_deny_bodies_and_never_tokens() {
    crypto();
    let (_dir, log, server) = logged_server(AppOptions::default(), 0.0).await;
    let upstream = Upstream::start().await;
    let envoy = Envoy::start("envoy.yaml", server.grpc, upstream.addr, &[]).await;
    let client = reqwest::Client::new();
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    // An allow (not sampled at rate 0), then a deny that carries a trace and a secret.
    let resp = client
        .get(envoy.url(LINE_1))
        .header("x-iotauthz-principal", "user:alice@contoso.com")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = client
        .put(envoy.url(LINE_1))
        .header("x-iotauthz-principal", "user:alice@contoso.com")
        .header("traceparent", traceparent)
        .header("x-api-key", "top-secret-key-material")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let body: Value = resp.json().await.unwrap();
    let lines = log_lines(&log, 1).await;
    assert_eq!(
        lines.len(),
        1,
        "the allow must not be logged at sample 0: {lines:?}"
    );
    let line = &lines[0];
    assert_eq!(line["decisionId"], body["decisionId"]);
    assert_eq!(line["allowed"], false);
    assert_eq!(line["reason"], "noGrant");
    assert_eq!(line["api"], "ext_authz");
    assert_eq!(line["principal"], "user:alice@contoso.com");
    assert_eq!(line["action"], "Microsoft.Edge/targets/write");
    assert_eq!(line["scope"], LINE_1);
    assert_eq!(line["revision"], demo().revision);
    assert_eq!(line["traceId"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert!(line["latencyUs"].is_u64());
    assert!(line["time"].as_str().unwrap().ends_with('Z'));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        !text.contains("top-secret") && !text.contains("x-api-key"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn allows_are_sampled_and_native_checks_are_logged() {
    use iot_authz::proto::iotauthz::v1 as pb;
    let (_dir, log, server) = logged_server(AppOptions::default(), 0.5).await;
    let mut c = pb::authorizer_client::AuthorizerClient::connect(server.grpc_url())
        .await
        .unwrap();
    let req = |action: &str| pb::CheckRequest {
        principal: "user:alice@contoso.com".into(),
        action: action.into(),
        scope: LINE_1.into(),
        ..Default::default()
    };
    for _ in 0..10 {
        c.check(req("Microsoft.Edge/targets/read")).await.unwrap();
    }
    for _ in 0..3 {
        c.check(req("Microsoft.Edge/targets/write")).await.unwrap();
    }
    let lines = log_lines(&log, 8).await;
    let allows = lines.iter().filter(|l| l["allowed"] == true).count();
    let denies = lines.iter().filter(|l| l["allowed"] == false).count();
    assert_eq!((allows, denies), (5, 3), "{lines:?}");
    assert!(lines.iter().all(|l| l["api"] == "check"));
}

#[tokio::test(flavor = "multi_thread")]
async fn global_shadow_mode_lets_denials_through_marked() {
    crypto();
    let server = TestServer::start_options(
        demo(),
        &AppOptions {
            shadow: true,
            ..AppOptions::default()
        },
    )
    .await;
    let upstream = Upstream::start().await;
    let envoy = Envoy::start("envoy.yaml", server.grpc, upstream.addr, &[]).await;
    let client = reqwest::Client::new();
    let resp = client
        .put(envoy.url(LINE_1))
        .header("x-iotauthz-principal", "user:alice@contoso.com")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = client
        .get(envoy.url(LINE_1))
        .header("x-iotauthz-principal", "user:alice@contoso.com")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let seen = upstream.requests();
    assert_eq!(seen[0].headers["x-iotauthz-shadow-decision"], vec!["deny"]);
    assert_eq!(seen[0].headers["x-iotauthz-shadow-reason"], vec!["noGrant"]);
    assert_eq!(
        seen[0].headers["x-iotauthz-action"],
        vec!["Microsoft.Edge/targets/write"]
    );
    assert!(
        !seen[1].headers.contains_key("x-iotauthz-shadow-decision"),
        "an allow is not marked"
    );
    let metrics = server.metrics().await;
    assert!(
        metrics.contains(
            r#"iot_authz_checks_total{api="ext_authz",decision="shadow_deny",reason="noGrant"} 1"#
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            r#"iot_authz_checks_total{api="ext_authz",decision="allow",reason="roleAssignment"} 1"#
        ),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_shadow_route_is_not_enforced_while_others_are() {
    crypto();
    let text = "version: 1\nroles: [{name: R, actions: ['x/read']}]\nassignments: [{principal: 'user:a', role: R, scope: /}]\nroutes:\n  - {methods: [GET], path: '/new/{id}', action: x/new, scope: '/n/{id}', mode: shadow}\n  - {methods: [GET], path: '/old/{id}', action: x/old, scope: '/o/{id}'}\n";
    let server = TestServer::start_options(policy(text), &AppOptions::default()).await;
    let upstream = Upstream::start().await;
    let envoy = Envoy::start("envoy.yaml", server.grpc, upstream.addr, &[]).await;
    let client = reqwest::Client::new();
    let get = |p: &str| {
        client
            .get(envoy.url(p))
            .header("x-iotauthz-principal", "user:a")
            .send()
    };
    assert_eq!(get("/new/1").await.unwrap().status(), StatusCode::OK);
    assert_eq!(get("/old/1").await.unwrap().status(), StatusCode::FORBIDDEN);
    let seen = upstream.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].headers["x-iotauthz-shadow-decision"], vec!["deny"]);
    // A shadow route does not let a malformed request through, even one found malformed
    // after its route matched: two different identity headers (HTTP mode, which sees every
    // copy).
    let ambiguous = client
        .get(format!("http://{}/v1/authz/envoy/new/1", server.http))
        .header("x-iotauthz-principal", "user:a")
        .header("x-iotauthz-principal", "user:b")
        .send()
        .await
        .unwrap();
    assert_eq!(ambiguous.status(), StatusCode::BAD_REQUEST);
    let single = client
        .get(format!("http://{}/v1/authz/envoy/new/1", server.http))
        .header("x-iotauthz-principal", "user:a")
        .send()
        .await
        .unwrap();
    assert_eq!(single.status(), StatusCode::OK);
    assert_eq!(single.headers()["x-iotauthz-shadow-decision"], "deny");
}

/// A native request carrying the caller's W3C trace context as gRPC metadata.
fn traced<T>(message: T, traceparent: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("traceparent", traceparent.parse().unwrap());
    request
}

#[tokio::test(flavor = "multi_thread")]
async fn check_http_decisions_are_logged_and_counted_like_checks() {
    use iot_authz::proto::iotauthz::v1 as pb;
    let (_dir, log, server) = logged_server(AppOptions::default(), 1.0).await;
    let mut c = pb::authorizer_client::AuthorizerClient::connect(server.grpc_url())
        .await
        .unwrap();
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let http = |method: &str| {
        crate::support::check_http_request(
            "",
            method,
            LINE_1,
            &[("x-iotauthz-principal", "user:alice@contoso.com")],
        )
    };
    let allow = c
        .check_http(traced(http("GET"), traceparent))
        .await
        .unwrap()
        .into_inner();
    assert!(allow.allowed);
    let deny = c
        .check_http(traced(http("PUT"), traceparent))
        .await
        .unwrap()
        .into_inner();
    assert!(!deny.allowed);
    assert_eq!(deny.status, 403);
    // The same denial through Check, for the set of fields a native decision logs.
    c.check(pb::CheckRequest {
        principal: "user:alice@contoso.com".into(),
        action: "Microsoft.Edge/targets/write".into(),
        scope: LINE_1.into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let lines = log_lines(&log, 3).await;
    assert_eq!(lines.len(), 3, "{lines:?}");
    let (allowed, denied, checked) = (&lines[0], &lines[1], &lines[2]);
    for (line, verdict) in [(allowed, true), (denied, false)] {
        assert_eq!(line["api"], "check_http", "{line}");
        assert_eq!(line["allowed"], verdict, "{line}");
        assert_eq!(line["principal"], "user:alice@contoso.com");
        assert_eq!(line["scope"], LINE_1);
        assert_eq!(line["revision"], demo().revision);
        assert_eq!(line["traceId"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert!(line["decisionId"].as_str().is_some_and(|s| !s.is_empty()));
        assert!(line["latencyUs"].is_u64());
        assert!(line["time"].as_str().unwrap().ends_with('Z'));
        assert!(line.get("shadow").is_none(), "{line}");
    }
    assert_eq!(allowed["action"], "Microsoft.Edge/targets/read");
    assert_eq!(allowed["reason"], "roleAssignment");
    assert!(allowed["role"].is_string(), "{allowed}");
    assert_eq!(denied["action"], "Microsoft.Edge/targets/write");
    assert_eq!(denied["reason"], "noGrant");
    assert_ne!(allowed["decisionId"], denied["decisionId"]);
    // Apart from the trace context, a denial logs what the same denial through Check logs.
    let keys = |v: &Value| {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.retain(|k| k != "traceId");
        k.sort();
        k
    };
    assert_eq!(checked["api"], "check");
    assert_eq!(keys(denied), keys(checked));
    for key in [
        "principal",
        "action",
        "scope",
        "allowed",
        "reason",
        "revision",
    ] {
        assert_eq!(denied[key], checked[key], "{key}");
    }
    let metrics = server.metrics().await;
    for line in [
        r#"iot_authz_checks_total{api="check_http",decision="allow",reason="roleAssignment"} 1"#,
        r#"iot_authz_checks_total{api="check_http",decision="deny",reason="noGrant"} 1"#,
        r#"iot_authz_check_duration_seconds_count{api="check_http"} 2"#,
        "iot_authz_decision_log_lines_written_total 3",
    ] {
        assert!(metrics.contains(line), "{line} missing from\n{metrics}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn check_http_denials_without_a_route_or_identity_are_logged() {
    use iot_authz::proto::iotauthz::v1 as pb;
    let (_dir, log, server) = logged_server(AppOptions::default(), 0.0).await;
    let mut c = pb::authorizer_client::AuthorizerClient::connect(server.grpc_url())
        .await
        .unwrap();
    let req = crate::support::check_http_request;
    for r in [
        req("", "GET", LINE_1, &[]),
        req("user:alice@contoso.com", "GET", "/nothing", &[]),
    ] {
        assert!(!c.check_http(r).await.unwrap().into_inner().allowed);
    }
    let lines = log_lines(&log, 2).await;
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines.iter().all(|l| l["api"] == "check_http"));
    let (unidentified, unrouted) = (&lines[0], &lines[1]);
    assert_eq!(unidentified["reason"], "noIdentity");
    assert_eq!(unidentified["action"], "Microsoft.Edge/targets/read");
    assert!(unidentified.get("principal").is_none(), "{unidentified}");
    assert_eq!(unrouted["reason"], "noRoute");
    assert_eq!(unrouted["principal"], "user:alice@contoso.com");
    assert!(unrouted.get("action").is_none(), "{unrouted}");
    assert!(unrouted.get("scope").is_none(), "{unrouted}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_with_an_invalid_check_logs_no_decision() {
    use iot_authz::proto::iotauthz::v1 as pb;
    let (_dir, log, server) = logged_server(AppOptions::default(), 1.0).await;
    let mut c = pb::authorizer_client::AuthorizerClient::connect(server.grpc_url())
        .await
        .unwrap();
    let check = |action: &str, scope: &str| pb::CheckRequest {
        principal: "user:alice@contoso.com".into(),
        action: action.into(),
        scope: scope.into(),
        ..Default::default()
    };
    let checks = vec![
        check("Microsoft.Edge/targets/read", LINE_1),
        check("Microsoft.Edge/targets/write", LINE_1),
        check("Microsoft.Edge/targets/read", "nope"),
    ];
    let e = c
        .batch_check(pb::BatchCheckRequest {
            checks,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("checks[2]"), "{}", e.message());
    // A later decision goes through the same queue: once it is written, anything the
    // rejected batch logged would have been written before it.
    c.check(check("Microsoft.Edge/targets/write", LINE_1))
        .await
        .unwrap();
    let lines = log_lines(&log, 1).await;
    assert_eq!(lines.len(), 1, "the rejected batch logged: {lines:?}");
    assert_eq!(lines[0]["api"], "check");
    // The counters of a rejected batch: grpc::rejected_batches_count_as_one_request_error_each.
}

#[tokio::test(flavor = "multi_thread")]
async fn check_http_reports_and_logs_the_real_decision_under_global_shadow() {
    use iot_authz::proto::iotauthz::v1 as pb;
    let (_dir, log, server) = logged_server(
        AppOptions {
            shadow: true,
            ..AppOptions::default()
        },
        0.0,
    )
    .await;
    let mut c = pb::authorizer_client::AuthorizerClient::connect(server.grpc_url())
        .await
        .unwrap();
    let r = c
        .check_http(crate::support::check_http_request(
            "user:alice@contoso.com",
            "PUT",
            LINE_1,
            &[],
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(!r.allowed);
    let lines = log_lines(&log, 1).await;
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["api"], "check_http");
    assert_eq!(lines[0]["allowed"], false);
    assert!(lines[0].get("shadow").is_none(), "{}", lines[0]);
    let metrics = server.metrics().await;
    assert!(
        metrics.contains(
            r#"iot_authz_checks_total{api="check_http",decision="deny",reason="noGrant"} 1"#
        ),
        "{metrics}"
    );
    assert!(!metrics.contains("shadow_deny"), "{metrics}");
}
