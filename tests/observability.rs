//! Decision logs and shadow mode, through the real Envoy where a proxy is involved.

use std::sync::Arc;
use std::time::{Duration, Instant};

use iot_authz::server::decision_log::LogTarget;
use iot_authz::server::state::PolicyState;
use iot_authz::server::{App, AppOptions, ServerOptions};
use reqwest::StatusCode;
use serde_json::Value;

use crate::support::{Envoy, TestServer, Upstream, crypto, demo, policy};

const LINE_1: &str =
    "/subscriptions/s1/resourceGroups/factory/providers/Microsoft.Edge/targets/line-1";

async fn server_with(snapshot: iot_authz::policy::Snapshot, options: AppOptions) -> TestServer {
    let app = App::with_options(Arc::new(PolicyState::with_snapshot(snapshot)), &options).unwrap();
    TestServer::start_app(Arc::new(app), ServerOptions::default()).await
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
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("decisions.jsonl");
    let options = AppOptions {
        decision_log: Some((LogTarget::File(log.clone()), 0.0)),
        ..AppOptions::default()
    };
    let server = server_with(demo(), options).await;
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
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("decisions.jsonl");
    let options = AppOptions {
        decision_log: Some((LogTarget::File(log.clone()), 0.5)),
        ..AppOptions::default()
    };
    let server = server_with(demo(), options).await;
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
    let server = server_with(
        demo(),
        AppOptions {
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
    let server = server_with(policy(text), AppOptions::default()).await;
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
}
