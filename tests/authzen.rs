//! The AuthZEN Authorization API 1.0 (SPEC §12) through the running server's HTTP port,
//! with a real HTTP client: every endpoint, the specification's shapes, semantics, paging
//! and errors, and the To-Do interoperability scenario (API gateway profile) from
//! `packs/interop/authzen-todo.yaml`.

use std::collections::BTreeSet;

use iot_authz::policy::plan::PlanRequest;
use iot_authz::policy::syntax::parse_time;
use serde_json::{Value, json};

use crate::support::{TestServer, crypto, policy};

const TODO: &str = include_str!("../packs/interop/authzen-todo.yaml");

/// The scenario's identities (the identity provider's ids) and roles.
const RICK: &str = "CiRmZDA2MTRkMy1jMzlhLTQ3ODEtYjdiZC04Yjk2ZjVhNTEwMGQSBWxvY2Fs";
const MORTY: &str = "CiRmZDE2MTRkMy1jMzlhLTQ3ODEtYjdiZC04Yjk2ZjVhNTEwMGQSBWxvY2Fs";
const SUMMER: &str = "CiRmZDI2MTRkMy1jMzlhLTQ3ODEtYjdiZC04Yjk2ZjVhNTEwMGQSBWxvY2Fs";
const BETH: &str = "CiRmZDM2MTRkMy1jMzlhLTQ3ODEtYjdiZC04Yjk2ZjVhNTEwMGQSBWxvY2Fs";
const JERRY: &str = "CiRmZDQ2MTRkMy1jMzlhLTQ3ODEtYjdiZC04Yjk2ZjVhNTEwMGQSBWxvY2Fs";

/// The scenario's 25 evaluation requests and expected decisions: (subject, method, route).
fn todo_decisions() -> Vec<(&'static str, &'static str, &'static str, bool)> {
    let routes = [
        ("GET", "/users/{userId}"),
        ("GET", "/todos"),
        ("POST", "/todos"),
        ("PUT", "/todos/{todoId}"),
        ("DELETE", "/todos/{todoId}"),
    ];
    let mut out = Vec::new();
    for (who, writes) in [
        (RICK, true),
        (MORTY, true),
        (SUMMER, true),
        (BETH, false),
        (JERRY, false),
    ] {
        for (method, route) in routes {
            out.push((who, method, route, method == "GET" || writes));
        }
    }
    out
}

const FLEET: &str = r#"version: 1
authzen:
  subjectTypes: {identity: user, machine: device}
actions:
  - name: Fleet/devices/read
  - name: Fleet/devices/telemetry/read
    dataAction: true
roles:
  - name: Reader
    actions: [Fleet/devices/read]
  - name: Telemetry
    dataActions: [Fleet/devices/telemetry/read]
groups:
  - id: group:ops
    members: [user:alice, user:carol]
assignments:
  - {principal: group:ops, role: Reader, scope: /sites/munich}
  - {principal: user:bob, role: Reader, scope: /sites/paris, notAfter: 2026-01-01T00:00:00Z}
  - {principal: device:plc-7, role: Telemetry, scope: /sites/munich/lines/l1}
  - {principal: group:night, role: Reader, scope: /sites/rome}
  - {principal: user:dave, role: Reader, scope: /sites/munich/lines/l2}
  - {principal: user:erin, role: Reader, scope: /sites/munich}
denyAssignments:
  - name: quarantine
    principals: ["*"]
    actions: ["*"]
    scope: /sites/munich/lines/l9
"#;

async fn post(server: &TestServer, path: &str, body: &Value) -> (u16, Value) {
    let (status, text, _) = post_raw(server, path, "application/json", body.to_string()).await;
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, value)
}

async fn post_raw(
    server: &TestServer,
    path: &str,
    content_type: &str,
    body: String,
) -> (u16, String, reqwest::header::HeaderMap) {
    crypto();
    let resp = reqwest::Client::new()
        .post(format!("http://{}{path}", server.http))
        .header("content-type", content_type)
        .header("x-request-id", "req-42")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    (status, resp.text().await.unwrap(), headers)
}

fn evaluation(kind: &str, id: &str, action: &str, rtype: &str, rid: &str) -> Value {
    json!({
        "subject": {"type": kind, "id": id},
        "action": {"name": action},
        "resource": {"type": rtype, "id": rid},
    })
}

/// The interoperability scenario: each of its evaluation requests, as an API gateway sends
/// it, gets the scenario's decision; the same requests boxcarred give the same decisions;
/// and the pack's own `tests:` pass.
#[tokio::test]
async fn the_todo_interop_scenario_gets_its_decisions() {
    let snapshot = policy(TODO);
    let results = iot_authz::testing::run(&snapshot, iot_authz::policy::syntax::now());
    assert_eq!(results.len(), 25);
    assert!(
        results
            .iter()
            .all(|r| matches!(r.outcome, iot_authz::testing::Outcome::Passed)),
        "the pack's tests"
    );
    let server = TestServer::start(snapshot).await;
    let mut batch = Vec::new();
    for (who, method, route, expected) in todo_decisions() {
        let body = evaluation("identity", who, method, "route", route);
        let (status, answer) = post(&server, "/access/v1/evaluation", &body).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(
            answer["decision"], expected,
            "{who} {method} {route}: {answer}"
        );
        let reason = if expected {
            "roleAssignment"
        } else {
            "noGrant"
        };
        assert_eq!(answer["context"]["reason"], reason);
        batch.push((body, expected));
    }
    let (status, answer) = post(
        &server,
        "/access/v1/evaluations",
        &json!({"evaluations": batch.iter().map(|(b, _)| b.clone()).collect::<Vec<_>>()}),
    )
    .await;
    assert_eq!(status, 200);
    let got: Vec<bool> = answer["evaluations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["decision"].as_bool().unwrap())
        .collect();
    assert_eq!(got, batch.iter().map(|(_, e)| *e).collect::<Vec<_>>());
}

#[tokio::test]
async fn evaluation_maps_subjects_resources_context_and_records_decisions() {
    let server = TestServer::start(policy(FLEET)).await;
    let ask = |body: Value| {
        let server = &server;
        async move { post(server, "/access/v1/evaluation", &body).await }
    };
    // Renamed subject type, a scope resource below an assignment, a device unknown to the
    // policy.
    let (s, a) = ask(evaluation(
        "identity",
        "alice",
        "Fleet/devices/read",
        "scope",
        "/sites/munich/lines/l3/devices/new-1",
    ))
    .await;
    assert_eq!(s, 200);
    assert_eq!(a["decision"], true);
    assert_eq!(a["context"]["reason"], "roleAssignment");
    assert_eq!(a["context"]["revision"], policy(FLEET).revision);
    assert_eq!(a["context"]["token"], "");
    // A principal type as subject type needs no renaming; the quarantine deny wins.
    let (_, a) = ask(evaluation(
        "user",
        "alice",
        "Fleet/devices/read",
        "scope",
        "/sites/munich/lines/l9/d",
    ))
    .await;
    assert_eq!(
        (a["decision"].clone(), a["context"]["reason"].clone()),
        (json!(false), json!("denyAssignment"))
    );
    // Data plane through resource.properties.dataAction.
    let mut body = evaluation(
        "machine",
        "plc-7",
        "Fleet/devices/telemetry/read",
        "scope",
        "/sites/munich/lines/l1",
    );
    let (_, a) = ask(body.clone()).await;
    assert_eq!(a["decision"], false, "control plane: {a}");
    body["resource"]["properties"] = json!({"dataAction": true});
    let (_, a) = ask(body).await;
    assert_eq!(a["decision"], true, "data plane: {a}");
    // Token groups in subject.properties.groups.
    let mut body = evaluation(
        "user",
        "zoe",
        "Fleet/devices/read",
        "scope",
        "/sites/rome/x",
    );
    let (_, a) = ask(body.clone()).await;
    assert_eq!(a["decision"], false);
    body["subject"]["properties"] = json!({"groups": ["group:night"]});
    let (_, a) = ask(body).await;
    assert_eq!(a["decision"], true);
    // context.time: bob's grant ended on 2026-01-01.
    let mut body = evaluation("user", "bob", "Fleet/devices/read", "scope", "/sites/paris");
    body["context"] = json!({"time": "2025-12-31T23:59:59Z"});
    assert_eq!(ask(body.clone()).await.1["decision"], true);
    body["context"] = json!({"time": "2026-01-01T00:00:00Z"});
    assert_eq!(ask(body).await.1["decision"], false);
    // An unknown subject type is a decision, false with a reason, never an error.
    let (s, a) = ask(evaluation(
        "robot\u{1b}[31m",
        "r2",
        "Fleet/devices/read",
        "scope",
        "/",
    ))
    .await;
    assert_eq!(s, 200);
    assert_eq!(a["decision"], false);
    assert_eq!(a["context"]["reason"], "unknownSubjectType");
    assert!(!a.to_string().contains('\u{1b}'), "{a}");
    // A value the engine refuses (a scope with whitespace, a wildcard action): false, with
    // the message.
    let (s, a) = ask(evaluation("user", "alice", "Fleet/*", "scope", "/sites")).await;
    assert_eq!((s, a["decision"].clone()), (200, json!(false)));
    assert_eq!(a["context"]["reason"], "invalidArgument");
    let (_, a) = ask(evaluation(
        "user",
        "alice",
        "Fleet/devices/read",
        "scope",
        "/sites/a b",
    ))
    .await;
    assert_eq!(a["context"]["reason"], "invalidArgument");
    // Metrics and the decision log count AuthZEN decisions like any HTTP decision.
    let metrics = server.metrics().await;
    assert!(
        metrics.contains("api=\"authzen_evaluation\",decision=\"allow\",reason=\"roleAssignment\""),
        "{metrics}"
    );
    assert!(
        metrics.contains("api=\"authzen_evaluation\",decision=\"deny\",reason=\"denyAssignment\"")
    );
}

#[tokio::test]
async fn evaluations_apply_defaults_and_the_three_semantics() {
    let server = TestServer::start(policy(FLEET)).await;
    let items = json!([
        {"resource": {"type": "scope", "id": "/sites/munich/a"}},
        {"resource": {"type": "scope", "id": "/sites/rome/b"}},
        {"resource": {"type": "scope", "id": "/sites/munich/c"}},
        {"resource": {"type": "scope", "id": "/sites/munich/lines/l9/d"},
         "subject": {"type": "user", "id": "erin"}},
    ]);
    let decisions = |answer: &Value| -> Vec<bool> {
        answer["evaluations"]
            .as_array()
            .unwrap_or_else(|| panic!("{answer}"))
            .iter()
            .map(|d| d["decision"].as_bool().unwrap())
            .collect()
    };
    let mut body = json!({
        "subject": {"type": "identity", "id": "alice"},
        "action": {"name": "Fleet/devices/read"},
        "evaluations": items,
    });
    let (s, a) = post(&server, "/access/v1/evaluations", &body).await;
    assert_eq!(s, 200);
    assert_eq!(decisions(&a), [true, false, true, false]);
    body["options"] = json!({"evaluations_semantic": "execute_all"});
    assert_eq!(
        decisions(&post(&server, "/access/v1/evaluations", &body).await.1),
        [true, false, true, false]
    );
    body["options"] = json!({"evaluations_semantic": "deny_on_first_deny"});
    assert_eq!(
        decisions(&post(&server, "/access/v1/evaluations", &body).await.1),
        [true, false]
    );
    body["options"] = json!({"evaluations_semantic": "permit_on_first_permit"});
    assert_eq!(
        decisions(&post(&server, "/access/v1/evaluations", &body).await.1),
        [true]
    );
    // Without evaluations, an evaluations request is one evaluation.
    let single = evaluation(
        "identity",
        "alice",
        "Fleet/devices/read",
        "scope",
        "/sites/munich",
    );
    let (s, a) = post(&server, "/access/v1/evaluations", &single).await;
    assert_eq!((s, a["decision"].clone()), (200, json!(true)));
    let mut empty = single.clone();
    empty["evaluations"] = json!([]);
    assert_eq!(
        post(&server, "/access/v1/evaluations", &empty).await.1["decision"],
        true
    );
}

/// Bad bodies get the specification's errors: 400 with an error message string (never a
/// 500, nothing unescaped), and the request id comes back.
#[tokio::test]
async fn bad_requests_get_400_with_a_message() {
    let server = TestServer::start(policy(FLEET)).await;
    let good = evaluation("user", "alice", "Fleet/devices/read", "scope", "/");
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "/access/v1/evaluation",
            json!([good.clone()]),
            "must be a JSON object",
        ),
        (
            "/access/v1/evaluation",
            json!({"action": {"name": "a"}, "resource": {"type": "scope", "id": "/"}}),
            "`subject` is required",
        ),
        (
            "/access/v1/evaluation",
            json!({"subject": {"type": 7, "id": "a"}, "action": {"name": "a"}, "resource": {"type": "scope", "id": "/"}}),
            "`subject.type` must be a string",
        ),
        (
            "/access/v1/evaluation",
            json!({"subject": {"type": "user"}, "action": {"name": "a"}, "resource": {"type": "scope", "id": "/"}}),
            "`subject.id` is required",
        ),
        (
            "/access/v1/evaluation",
            json!({"subject": {"type": "user", "id": "a"}, "action": "read", "resource": {"type": "scope", "id": "/"}}),
            "`action` must be an object",
        ),
        (
            "/access/v1/evaluation",
            json!({"subject": {"type": "user", "id": "a", "properties": {"groups": "group:x"}}, "action": {"name": "a"}, "resource": {"type": "scope", "id": "/"}}),
            "groups` must be an array",
        ),
        (
            "/access/v1/evaluation",
            json!({"subject": {"type": "user", "id": "a"}, "action": {"name": "a"}, "resource": {"type": "scope", "id": "/", "properties": {"dataAction": "true"}}}),
            "must be a boolean",
        ),
        (
            "/access/v1/evaluation",
            json!({"subject": {"type": "user", "id": "a"}, "action": {"name": "a"}, "resource": {"type": "scope", "id": "/"}, "context": {"time": 5}}),
            "`context.time`",
        ),
        (
            "/access/v1/evaluations",
            json!({"evaluations": {"a": 1}}),
            "`evaluations` must be an array",
        ),
        (
            "/access/v1/evaluations",
            json!({"evaluations": [good.clone(), {"subject": {"type": "user", "id": "a"}}]}),
            "`evaluations[1].action` is required",
        ),
        (
            "/access/v1/evaluations",
            json!({"evaluations": vec![good.clone(); 1001]}),
            "at most 1000",
        ),
        (
            "/access/v1/evaluations",
            json!({"evaluations": [good.clone()], "options": {"evaluations_semantic": "first_come"}}),
            "evaluations_semantic",
        ),
        (
            "/access/v1/search/subject",
            json!({"subject": {"type": "user"}, "action": {"name": "a"}, "resource": {"type": "scope", "id": "/"}, "page": {"limit": -1}}),
            "must be a positive integer",
        ),
        (
            "/access/v1/search/subject",
            json!({"subject": {"type": "user"}, "action": {"name": "a"}, "resource": {"type": "scope", "id": "/"}, "page": {"token": "9.0000"}}),
            "another request",
        ),
        (
            "/access/v1/search/subject",
            json!({"action": {"name": "a"}, "resource": {"type": "scope", "id": "/"}}),
            "`subject` is required",
        ),
        (
            "/access/v1/search/resource",
            json!({"subject": {"type": "user"}, "action": {"name": "a"}, "resource": {"type": "scope"}}),
            "`subject.id` is required",
        ),
        (
            "/access/v1/search/action",
            json!({"subject": {"type": "user", "id": "a"}, "resource": {"type": "scope"}}),
            "`resource.id` is required",
        ),
        (
            "/access/v1/search/action",
            json!({"subject": {"type": "user", "id": "a"}, "resource": {"type": "scope", "id": "/"}, "page": {"limit": 0}}),
            "`page.limit` must be a positive integer",
        ),
    ];
    for (path, body, message) in cases {
        let (status, text, headers) =
            post_raw(&server, path, "application/json", body.to_string()).await;
        assert_eq!(status, 400, "{path} {body}: {text}");
        assert!(text.contains(message), "{path}: {text}");
        assert_eq!(headers["x-request-id"], "req-42");
        assert!(
            headers["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/plain")
        );
    }
    for (content_type, body) in [
        ("text/plain", good.to_string()),
        ("application/json", "{\"subject\": ".to_owned()),
        ("application/json", "\u{1b}[31m".to_owned()),
        (
            "application/json",
            format!("{{\"x\": \"{}\"}}", "a".repeat(5 * 1024 * 1024)),
        ),
    ] {
        let (status, text, _) =
            post_raw(&server, "/access/v1/evaluation", content_type, body).await;
        assert_eq!(status, 400, "{text}");
        assert!(!text.contains('\u{1b}'));
    }
    // A search request with an unknown subject type finds no one, without error.
    let (s, a) = post(
        &server,
        "/access/v1/search/subject",
        &json!({"subject": {"type": "robot"}, "action": {"name": "Fleet/devices/read"}, "resource": {"type": "scope", "id": "/sites/munich"}}),
    )
    .await;
    assert_eq!((s, a["results"].clone()), (200, json!([])));
    // Unknown fields are ignored, as the specification requires.
    let mut extra = good.clone();
    extra["future"] = json!({"x": 1});
    extra["subject"]["nickname"] = json!("al");
    assert_eq!(post(&server, "/access/v1/evaluation", &extra).await.0, 200);
    // The specification's successful response carries the request id too.
    let (_, _, headers) = post_raw(
        &server,
        "/access/v1/evaluation",
        "application/json",
        good.to_string(),
    )
    .await;
    assert_eq!(headers["x-request-id"], "req-42");
    assert_eq!(headers["content-type"], "application/json");
}

/// Follows `next_token` from the first page to the last; returns every result.
async fn all_pages(
    server: &TestServer,
    path: &str,
    mut body: Value,
    limit: u64,
) -> (Vec<Value>, Value) {
    let mut out = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        body["page"] = json!({"limit": limit, "token": token});
        let (status, answer) = post(server, path, &body).await;
        assert_eq!(status, 200, "{answer}");
        let results = answer["results"].as_array().unwrap().clone();
        assert!(results.len() as u64 <= limit);
        assert_eq!(answer["page"]["count"], results.len());
        out.extend(results);
        pages += 1;
        token = answer["page"]["next_token"].as_str().unwrap().to_owned();
        if token.is_empty() {
            assert_eq!(answer["page"]["total"], out.len());
            return (out, answer["context"].clone());
        }
        assert!(pages < 100);
    }
}

#[tokio::test]
async fn searches_page_through_whocan_plan_and_permissions() {
    let snapshot = policy(FLEET);
    let server = TestServer::start(policy(FLEET)).await;
    let now = iot_authz::policy::syntax::now();
    // Subject search: WhoCan, filtered by type, renamed types answered as asked.
    let body = json!({
        "subject": {"type": "identity"},
        "action": {"name": "Fleet/devices/read"},
        "resource": {"type": "scope", "id": "/sites/munich/lines/l2/d1"},
    });
    let (found, _) = all_pages(&server, "/access/v1/search/subject", body, 2).await;
    let ids: BTreeSet<&str> = found.iter().map(|s| s["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["alice", "carol", "dave", "erin"].into());
    assert!(found.iter().all(|s| s["type"] == "identity"));
    let who = snapshot
        .who_can(
            "Fleet/devices/read",
            false,
            "/sites/munich/lines/l2/d1",
            now,
        )
        .unwrap();
    assert_eq!(
        ids.len(),
        who.principals
            .iter()
            .filter(|p| p.starts_with("user:"))
            .count()
    );
    let body = json!({
        "subject": {"type": "group"},
        "action": {"name": "Fleet/devices/read"},
        "resource": {"type": "scope", "id": "/sites/munich"},
    });
    let (found, _) = all_pages(&server, "/access/v1/search/subject", body, 5).await;
    assert_eq!(found, [json!({"type": "group", "id": "ops"})]);
    // Resource search: Plan's include as scopes, its exclude in the context.
    let body = json!({
        "subject": {"type": "identity", "id": "alice"},
        "action": {"name": "Fleet/devices/read"},
        "resource": {"type": "scope"},
    });
    let (found, context) = all_pages(&server, "/access/v1/search/resource", body, 1).await;
    let plan = snapshot
        .plan(&PlanRequest {
            principal: "user:alice",
            groups: &[],
            action: "Fleet/devices/read",
            data_action: false,
            under: "/",
            at: now,
        })
        .unwrap();
    assert_eq!(
        found,
        plan.include
            .iter()
            .map(|s| json!({"type": "scope", "id": s}))
            .collect::<Vec<_>>()
    );
    assert_eq!(context["exclude"], json!(["/sites/munich/lines/l9"]));
    // Action search: what ListPermissions lists, data actions marked.
    let body = json!({
        "subject": {"type": "machine", "id": "plc-7"},
        "resource": {"type": "scope", "id": "/sites/munich/lines/l1/x"},
        "context": {"time": "2026-06-01T00:00:00Z"},
    });
    let (found, _) = all_pages(&server, "/access/v1/search/action", body, 1).await;
    assert_eq!(
        found,
        [json!({"name": "Fleet/devices/telemetry/read", "properties": {"dataAction": true}})]
    );
    let listed = snapshot
        .permissions(
            "device:plc-7",
            &[],
            "/sites/munich/lines/l1/x",
            parse_time("2026-06-01T00:00:00Z").unwrap(),
        )
        .unwrap();
    assert_eq!(listed.len(), found.len());
}

#[tokio::test]
async fn the_well_known_configuration_names_every_endpoint() {
    crypto();
    let server = TestServer::start(policy(FLEET)).await;
    let resp = reqwest::Client::new()
        .get(format!(
            "http://{}/.well-known/authzen-configuration",
            server.http
        ))
        .header("x-forwarded-proto", "https")
        .header("host", "pdp.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["policy_decision_point"], "https://pdp.example.com");
    for (key, path) in [
        ("access_evaluation_endpoint", "/access/v1/evaluation"),
        ("access_evaluations_endpoint", "/access/v1/evaluations"),
        ("search_subject_endpoint", "/access/v1/search/subject"),
        ("search_resource_endpoint", "/access/v1/search/resource"),
        ("search_action_endpoint", "/access/v1/search/action"),
    ] {
        assert_eq!(v[key], format!("https://pdp.example.com{path}"));
    }
}

/// The `authzen.subjectTypes` key is validated like every key.
#[test]
fn subject_types_are_validated() {
    for (yaml, message) in [
        (
            "authzen: {subjectTypes: {identity: person}}",
            "is not a principal type",
        ),
        (
            "authzen: {subjectTypes: {user: device}}",
            "cannot be renamed",
        ),
        ("authzen: {subjectTypes: {\"a:b\": user}}", "without `:`"),
        ("authzen: {subjectType: {identity: user}}", "unknown field"),
    ] {
        let text = format!("version: 1\n{yaml}\n");
        let err = iot_authz::policy::compile_sources(&[iot_authz::policy::SourceDocument::new(
            "p.yaml", text,
        )])
        .unwrap_err()
        .to_string();
        assert!(err.contains(message), "{yaml}: {err}");
    }
    let twice = [
        iot_authz::policy::SourceDocument::new(
            "a.yaml",
            "version: 1\nauthzen: {subjectTypes: {identity: user}}\n",
        ),
        iot_authz::policy::SourceDocument::new(
            "b.yaml",
            "version: 1\nauthzen: {subjectTypes: {identity: device}}\n",
        ),
    ];
    let err = iot_authz::policy::compile_sources(&twice)
        .unwrap_err()
        .to_string();
    assert!(err.contains("renamed twice"), "{err}");
}

/// A body is not header bytes: a batch of 1000 evaluations (well over the 64 KiB header
/// limit of the HTTP port) is answered, while a request whose headers pass that limit is
/// still refused.
#[tokio::test]
async fn a_large_batch_body_is_not_counted_as_headers() {
    let server = TestServer::start(policy(FLEET)).await;
    let one = evaluation("user", "alice", "Sites/read", "scope", "/sites/munich/a");
    let items: Vec<Value> = (0..1000).map(|_| one.clone()).collect();
    let body = json!({"evaluations": items});
    assert!(body.to_string().len() > 100_000);
    let (status, answer) = post(&server, "/access/v1/evaluations", &body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["evaluations"].as_array().unwrap().len(), 1000);
    // Headers over the limit are still refused (the connection is closed, or 431).
    crypto();
    let big = "x".repeat(70 * 1024);
    let refused = reqwest::Client::new()
        .post(format!("http://{}/access/v1/evaluation", server.http))
        .header("content-type", "application/json")
        .header("x-filler", big)
        .body(one.to_string())
        .send()
        .await;
    assert!(
        refused
            .as_ref()
            .map_or(true, |r| r.status().as_u16() >= 400),
        "{refused:?}"
    );
}

/// The searches, like Plan and the native API's other queries, take turns in the query
/// pool: while every turn is held, a search (and a Plan) waits; once a turn is free, it
/// is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn searches_and_plan_take_turns_in_the_query_pool() {
    use std::time::Duration;

    use iot_authz::proto::iotauthz::v1 as pb;

    let server = TestServer::start(policy(FLEET)).await;
    let turns = crate::support::HeldTurns::take(&server.app).await;
    let searches = [
        (
            "/access/v1/search/subject",
            json!({"subject": {"type": "identity"}, "action": {"name": "Fleet/devices/read"},
                   "resource": {"type": "scope", "id": "/sites/munich"}}),
        ),
        (
            "/access/v1/search/resource",
            json!({"subject": {"type": "identity", "id": "alice"},
                   "action": {"name": "Fleet/devices/read"}, "resource": {"type": "scope"}}),
        ),
        (
            "/access/v1/search/action",
            json!({"subject": {"type": "identity", "id": "alice"},
                   "resource": {"type": "scope", "id": "/sites/munich"}}),
        ),
    ];
    crypto();
    let client = reqwest::Client::new();
    let search = |path: &str, body: &Value| {
        client
            .post(format!("http://{}{path}", server.http))
            .json(body)
            .timeout(Duration::from_millis(300))
            .send()
    };
    for (path, body) in &searches {
        let answer = search(path, body).await;
        assert!(
            answer.as_ref().is_err_and(reqwest::Error::is_timeout),
            "{path} answered while every turn was held: {answer:?}"
        );
    }
    let mut grpc = pb::authorizer_client::AuthorizerClient::new(server.channel().await);
    let plan = || {
        let mut request = tonic::Request::new(pb::PlanRequest {
            principal: "user:alice".into(),
            action: "Fleet/devices/read".into(),
            ..Default::default()
        });
        request.set_timeout(Duration::from_millis(300));
        request
    };
    let status = grpc.plan(plan()).await.unwrap_err();
    assert!(
        matches!(
            status.code(),
            tonic::Code::Cancelled | tonic::Code::DeadlineExceeded
        ),
        "{status:?}"
    );
    turns.release().await;
    for (path, body) in &searches {
        let answer = search(path, body).await.unwrap();
        assert_eq!(answer.status(), 200, "{path}");
    }
    assert_eq!(
        grpc.plan(plan()).await.unwrap().into_inner().include,
        ["/sites/munich"]
    );
}
