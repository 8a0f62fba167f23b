//! Hostile requests through the real Envoy into the real iot-authz and on to a recording
//! upstream, with Envoy's path normalisation in three settings. For every attack, the
//! upstream either never sees the request, or sees exactly a request the policy allows for
//! the principal it was told about: the decision is re-derived from what the upstream
//! received, and must be an allow for the same action and scope.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use iot_authz::policy::Snapshot;
use iot_authz::policy::queries::HttpRequest;
use iot_authz::proto::iotauthz::v1 as pb;
use iot_authz::proto::iotauthz::v1::authorizer_client::AuthorizerClient;

use crate::support::{Envoy, JwtKey, Seen, TestServer, Upstream, crypto, demo};

/// Sends raw bytes as one HTTP/1.1 request and returns the response status (None when the
/// connection closed without one).
fn raw(addr: SocketAddr, request: &[u8]) -> Option<u16> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream.write_all(request).ok()?;
    let mut buf = [0u8; 512];
    let n = stream.read(&mut buf).ok()?;
    let head = String::from_utf8_lossy(&buf[..n]);
    head.split_whitespace().nth(1)?.parse().ok()
}

fn request(method: &str, target: &[u8], headers: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(target);
    out.extend_from_slice(b" HTTP/1.1\r\nhost: factory.example\r\nconnection: close\r\n");
    for (k, v) in headers {
        out.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out
}

const ALICE: (&str, &str) = ("x-iotauthz-principal", "user:alice@contoso.com");
const RG: &str = "/subscriptions/s1/resourceGroups";
const TGT: &str = "providers/Microsoft.Edge/targets";

/// One attack: name, method, raw request target, extra headers. Alice's identity header
/// is sent first unless the name starts with `own identity:` (the extra headers then
/// carry the identity).
type Attack = (String, &'static str, Vec<u8>, Vec<(&'static str, String)>);

/// The attack corpus: (name, method, raw request target, extra headers). Alice may read
/// targets in resource group `factory` and nothing else.
fn corpus() -> Vec<Attack> {
    let mut cases: Vec<Attack> = Vec::new();
    let mut add = |name: &str, method: &'static str, target: Vec<u8>| {
        cases.push((name.to_owned(), method, target, Vec::new()))
    };
    let b = |s: String| s.into_bytes();
    add(
        "baseline allowed read",
        "GET",
        b(format!("{RG}/factory/{TGT}/line-1")),
    );
    add(
        "baseline denied write",
        "PUT",
        b(format!("{RG}/factory/{TGT}/line-1")),
    );
    add(
        "dot-dot raw",
        "GET",
        b(format!("{RG}/factory/../other/{TGT}/x")),
    );
    add(
        "dot-dot into factory",
        "PUT",
        b(format!("{RG}/other/../factory/{TGT}/line-1")),
    );
    add("dot raw", "GET", b(format!("{RG}/./other/{TGT}/x")));
    add(
        "encoded dot-dot lower",
        "GET",
        b(format!("{RG}/factory/%2e%2e/other/{TGT}/x")),
    );
    add(
        "encoded dot-dot upper",
        "GET",
        b(format!("{RG}/factory/%2E%2E/other/{TGT}/x")),
    );
    add(
        "half-encoded dot-dot",
        "GET",
        b(format!("{RG}/factory/.%2e/other/{TGT}/x")),
    );
    add(
        "double-encoded dot-dot",
        "GET",
        b(format!("{RG}/factory/%252e%252e/other/{TGT}/x")),
    );
    add(
        "encoded slash",
        "GET",
        b(format!("{RG}/factory%2F..%2Fother/{TGT}/x")),
    );
    add(
        "encoded slash lower",
        "GET",
        b(format!("{RG}/factory%2f..%2fother/{TGT}/x")),
    );
    add(
        "encoded backslash",
        "GET",
        b(format!("{RG}/factory%5C..%5Cother/{TGT}/x")),
    );
    add(
        "raw backslash",
        "GET",
        b(format!("{RG}/factory\\..\\other/{TGT}/x")),
    );
    add(
        "double-encoded slash",
        "GET",
        b(format!("{RG}/factory%252F..%252Fother/{TGT}/x")),
    );
    add(
        "matrix parameter",
        "GET",
        b(format!("{RG}/other;x/{TGT}/x")),
    );
    add("matrix admin", "GET", b("/admin;x/".into()));
    add(
        "matrix on allowed",
        "GET",
        b(format!("{RG}/factory;jsessionid=1/{TGT}/line-1")),
    );
    add(
        "double slash leading",
        "GET",
        b(format!("/{RG}/other/{TGT}/x")),
    );
    add(
        "double slash inside",
        "GET",
        b(format!("{RG}//other/{TGT}/x")),
    );
    add(
        "slash run to factory",
        "PUT",
        b(format!("{RG}/factory//{TGT}/line-1")),
    );
    add(
        "mixed case other",
        "GET",
        b(format!("/SUBSCRIPTIONS/s1/RESOURCEGROUPS/OTHER/{TGT}/x")),
    );
    add(
        "mixed case factory",
        "GET",
        b(format!(
            "/Subscriptions/S1/ResourceGroups/FACTORY/{TGT}/LINE-1"
        )),
    );
    add(
        "overlong utf-8 dot",
        "GET",
        b(format!("{RG}/factory/%c0%ae%c0%ae/other/{TGT}/x")),
    );
    add(
        "raw invalid utf-8",
        "GET",
        [
            format!("{RG}/factory/").as_bytes(),
            b"\xc0\xae\xc0\xae/other",
        ]
        .concat(),
    );
    add(
        "raw non-ascii",
        "GET",
        [format!("{RG}/f").as_bytes(), "actöry".as_bytes()].concat(),
    );
    add(
        "encoded nul",
        "GET",
        b(format!("{RG}/factory%00/{TGT}/line-1")),
    );
    add(
        "raw control",
        "GET",
        [
            format!("{RG}/factory").as_bytes(),
            b"\x01",
            format!("/{TGT}/line-1").as_bytes(),
        ]
        .concat(),
    );
    add(
        "query dot-dot",
        "GET",
        b(format!("{RG}/other/{TGT}/x?/../../factory/{TGT}/line-1")),
    );
    add(
        "query on allowed",
        "GET",
        b(format!("{RG}/factory/{TGT}/line-1?x=%2e%2e")),
    );
    add(
        "fragment",
        "GET",
        b(format!("{RG}/other/{TGT}/x#/../../factory")),
    );
    add(
        "absolute-form uri",
        "GET",
        b(format!("http://evil.example{RG}/factory/{TGT}/line-1")),
    );
    add(
        "absolute-form other",
        "GET",
        b(format!("http://factory.example{RG}/other/{TGT}/x")),
    );
    add("asterisk-form", "OPTIONS", b("*".into()));
    add(
        "very long path",
        "GET",
        b(format!("{RG}/factory/{TGT}/{}", "a".repeat(5000))),
    );
    add(
        "long but allowed",
        "GET",
        b(format!("{RG}/factory/{TGT}/{}", "a".repeat(200))),
    );
    add("unrouted", "GET", b("/internal/admin".into()));
    add("empty path", "GET", b("".into()));
    add(
        "trailing slash",
        "GET",
        b(format!("{RG}/factory/{TGT}/line-1/")),
    );
    add(
        "encoded unreserved",
        "GET",
        b(format!("{RG}/f%61ctory/{TGT}/line-1")),
    );
    add("star in segment", "GET", b(format!("{RG}/*/{TGT}/x")));
    cases.push((
        "forged decision headers".into(),
        "PUT",
        b(format!("{RG}/factory/{TGT}/line-1")),
        vec![
            ("x-iotauthz-action", "Microsoft.Edge/targets/read".into()),
            ("x-iotauthz-scope", "/".into()),
        ],
    ));
    cases.push((
        "duplicate identity headers".into(),
        "PUT",
        b(format!("{RG}/factory/{TGT}/line-1")),
        vec![("x-iotauthz-principal", "user:dave@contoso.com".into())],
    ));
    cases.push((
        "many headers".into(),
        "GET",
        b(format!("{RG}/factory/{TGT}/line-1")),
        (0..200).map(|i| ("x-filler", format!("v{i}"))).collect(),
    ));
    cases.push((
        "huge header".into(),
        "GET",
        b(format!("{RG}/factory/{TGT}/line-1")),
        vec![("x-big", "a".repeat(70_000))],
    ));
    cases.push((
        "forged original uri".into(),
        "PUT",
        b(format!("{RG}/factory/{TGT}/line-1")),
        vec![
            ("x-original-uri", "/healthz".into()),
            ("x-envoy-original-path", "/healthz".into()),
        ],
    ));
    cases.push((
        "host trick".into(),
        "GET",
        b(format!("{RG}/other/{TGT}/x")),
        vec![("x-forwarded-host", "factory.example".into())],
    ));
    // Header captures decode and check exactly like path segments: escapes that spell
    // another value, parameters, NULs and separators are that value or malformed.
    let device = b("/iot.devices.v1.Devices/Reboot".into());
    for value in [
        "fleet",
        "flee%74",
        "fleet;v=1",
        "fleet%00",
        "fleet%2F..%2Fother",
        "%2e%2e",
        "fleet?x=1",
        "fleet#x",
        "fle\u{202e}et",
    ] {
        cases.push((
            format!("header capture {value:?}"),
            "POST",
            device.clone(),
            vec![("x-app-id", value.to_owned())],
        ));
    }
    cases.push((
        "header capture in two different copies".into(),
        "POST",
        device,
        vec![("x-app-id", "fleet".into()), ("x-app-id", "other".into())],
    ));
    // Underscore twins of the decision and identity headers (WSGI/CGI upstreams read
    // `x_iotauthz_scope` as `x-iotauthz-scope`): refused by Envoy.
    for name in [
        "x_iotauthz_principal",
        "x_iotauthz_scope",
        "x_iotauthz_action",
        "X_IOTAUTHZ_PRINCIPAL",
    ] {
        cases.push((
            format!("underscore twin {name}"),
            "GET",
            b(format!("{RG}/factory/{TGT}/line-1")),
            vec![(name, "user:dave@contoso.com".into())],
        ));
    }
    // Repeated forwarding headers (Traefik's X-Forwarded-Uri names the original request
    // in HTTP mode; behind Envoy they are only client text).
    cases.push((
        "repeated x-forwarded-uri".into(),
        "PUT",
        b(format!("{RG}/factory/{TGT}/line-1")),
        vec![
            ("x-forwarded-uri", format!("{RG}/factory/{TGT}/line-1")),
            ("x-forwarded-uri", "/healthz".into()),
            ("x-forwarded-method", "GET".into()),
        ],
    ));
    // C1 controls, bidi overrides and line separators in principals (Dave is Owner of
    // the whole subscription, so only the malformed rule stands between these and the
    // upstream) and in scopes.
    for principal in [
        "user:dave@contoso.com\u{202e}",
        "user:da\u{2028}ve@contoso.com",
        "user:dave@contoso.com\u{85}",
        "user:\u{2066}dave@contoso.com",
    ] {
        cases.push((
            format!("own identity: principal {principal:?}"),
            "PUT",
            b(format!("{RG}/factory/{TGT}/line-1")),
            vec![("x-iotauthz-principal", principal.to_owned())],
        ));
    }
    for segment in [
        "line%E2%80%AE1",
        "line%E2%80%A81",
        "line%C2%851",
        "line\u{202e}1",
    ] {
        cases.push((
            format!("own identity: scope segment {segment:?}"),
            "PUT",
            b(format!("{RG}/factory/{TGT}/{segment}")),
            vec![("x-iotauthz-principal", "user:dave@contoso.com".to_owned())],
        ));
    }
    cases
}

/// Re-derives the decision from what the upstream saw: it must be an allow for exactly the
/// action and scope the upstream was told.
fn assert_upstream_saw_only_allowed(snapshot: &Snapshot, seen: &[Seen], context: &str) {
    for s in seen {
        let principal = s.headers.get("x-iotauthz-principal").map(|v| v.join(","));
        // The header a route captures, as the upstream received it.
        let headers: Vec<(String, &str)> = s
            .headers
            .get("x-app-id")
            .into_iter()
            .flatten()
            .map(|v| ("x-app-id".to_owned(), v.as_str()))
            .collect();
        let out = snapshot
            .check_http(&HttpRequest {
                method: &s.method,
                path: &s.path,
                headers: &headers,
                principal: principal.as_deref(),
                groups: &[],
                metadata: None,
                peer_principal: None,
                verifier: None,
                at: iot_authz::policy::syntax::now(),
            })
            .unwrap_or_else(|e| {
                panic!("{context}: upstream saw an invalid principal {principal:?}: {e}")
            });
        assert!(
            out.decision.allowed,
            "{context}: upstream saw {} {} as {principal:?}, which the policy denies ({:?})",
            s.method, s.path, out.decision.reason
        );
        if !out.route.is_some_and(|r| r.public) {
            assert_eq!(
                s.headers.get("x-iotauthz-action"),
                out.action.map(|a| vec![a]).as_ref(),
                "{context}: {}",
                s.path
            );
            assert_eq!(
                s.headers.get("x-iotauthz-scope"),
                out.scope.map(|a| vec![a]).as_ref(),
                "{context}: {}",
                s.path
            );
        }
    }
}

async fn run_corpus(variant: &str, replacements: &[(&str, &str)]) {
    crypto();
    let snapshot = demo();
    let server = TestServer::start(demo()).await;
    let upstream = Upstream::start().await;
    let envoy = Envoy::start("envoy.yaml", server.grpc, upstream.addr, replacements).await;
    let mut reached = 0;
    for (name, method, target, extra) in corpus() {
        let mut headers: Vec<(&str, &str)> = if name.starts_with("own identity:") {
            Vec::new()
        } else {
            vec![ALICE]
        };
        headers.extend(extra.iter().map(|(k, v)| (*k, v.as_str())));
        let before = upstream.requests().len();
        let status = tokio::task::spawn_blocking({
            let bytes = request(method, &target, &headers);
            let addr = envoy.listener;
            move || raw(addr, &bytes)
        })
        .await
        .unwrap();
        let after = upstream.requests();
        let new = &after[before..];
        assert_upstream_saw_only_allowed(
            &snapshot,
            new,
            &format!("{variant}: {name} (status {status:?})"),
        );
        if !new.is_empty() {
            reached += 1;
            assert_eq!(status, Some(200), "{variant}: {name}");
        }
    }
    // The allowed baselines did get through (the test is not vacuous).
    assert!(
        reached >= 3,
        "{variant}: only {reached} requests reached the upstream"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn attacks_with_the_recommended_normalisation() {
    run_corpus("recommended", &[]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn attacks_with_normalisation_off() {
    run_corpus(
        "normalisation off",
        &[("normalize_path: true", "normalize_path: false")],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn attacks_with_every_normalisation_on() {
    run_corpus(
        "all normalisation on",
        &[
            ("merge_slashes: false", "merge_slashes: true"),
            (
                "path_with_escaped_slashes_action: KEEP_UNCHANGED",
                "path_with_escaped_slashes_action: UNESCAPE_AND_FORWARD",
            ),
        ],
    )
    .await;
}

/// With JWT as the only identity source, a forged identity header identifies no one, and a
/// valid token wins over it.
#[tokio::test(flavor = "multi_thread")]
async fn a_forged_identity_header_is_ignored_when_identity_comes_from_jwt() {
    crypto();
    let key = JwtKey::generate();
    let policy = "version: 1\nroles: [{name: R, actions: ['x/*']}]\nassignments:\n  - {principal: 'user:dave', role: R, scope: /}\n  - {principal: 'user:bob', role: R, scope: /b}\nroutes:\n  - {methods: [GET], path: '/t/{id}', action: x/read, scope: '/t/{id}'}\n  - {methods: [GET], path: '/b/{id}', action: x/read, scope: '/b/{id}'}\nidentity:\n  sources:\n    - jwt: {principalType: user}\n";
    let snapshot = crate::support::policy(policy);
    let server = TestServer::start(crate::support::policy(policy)).await;
    let upstream = Upstream::start().await;
    let envoy = Envoy::start_with_jwks(server.grpc, upstream.addr, &key).await;
    let client = reqwest::Client::new();
    let resp = client
        .get(envoy.url("/t/1"))
        .header("x-iotauthz-principal", "user:dave")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let token = key.token(&serde_json::json!({"iss": "https://issuer.iot-authz.example", "aud": "iot-authz-demo", "sub": "bob"}));
    let resp = client
        .get(envoy.url("/t/1"))
        .bearer_auth(&token)
        .header("x-iotauthz-principal", "user:dave")
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        403,
        "bob may not read /t, whatever the header says"
    );
    let resp = client
        .get(envoy.url("/b/1"))
        .bearer_auth(&token)
        .header("x-iotauthz-principal", "user:dave")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let seen = upstream.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].headers["x-iotauthz-principal"], vec!["user:bob"]);
    assert_upstream_saw_only_allowed(&snapshot, &seen, "jwt");
}

const SOLUTIONS: &str =
    "/subscriptions/s1/resourceGroups/factory/providers/Microsoft.Edge/targets/line-1/solutions";

/// CheckHttp on the native API; headers are sent exactly as given (names keep their case).
async fn check_http(
    server: &TestServer,
    principal: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> pb::CheckHttpResponse {
    let mut client = AuthorizerClient::connect(server.grpc_url()).await.unwrap();
    client
        .check_http(crate::support::check_http_request(
            principal, method, path, headers,
        ))
        .await
        .unwrap()
        .into_inner()
}

/// Envoy's ext_authz Check, called directly; returns (gRPC code, HTTP status of a denial).
async fn ext_authz(
    server: &TestServer,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (i32, Option<i32>) {
    let answer = crate::support::ext_authz(server, method, path, headers).await;
    (answer.code, answer.status)
}

/// A `{name...}` capture that neither the action nor the scope uses is still checked, segment
/// by segment: `*` (or any other character a segment may not hold) makes the request
/// malformed, as it does in a capture a template uses.
#[tokio::test(flavor = "multi_thread")]
async fn an_unused_rest_capture_is_checked_like_any_other() {
    crypto();
    let snapshot = demo();
    let server = TestServer::start(demo()).await;
    let alice = "user:alice@contoso.com";
    let fine = format!("{SOLUTIONS}/s-1/versions/3");
    let out = check_http(&server, alice, "GET", &fine, &[]).await;
    assert!(out.allowed, "{out:?}");
    assert_eq!(ext_authz(&server, "GET", &fine, &[ALICE]).await, (0, None));
    for bad in [
        format!("{SOLUTIONS}/*"),
        format!("{SOLUTIONS}/s-1/*/3"),
        format!("{SOLUTIONS}/s-1/versions/a*b"),
    ] {
        let out = check_http(&server, alice, "GET", &bad, &[]).await;
        assert!(!out.allowed, "{bad}: {out:?}");
        assert_eq!(out.status, 400, "{bad}: {out:?}");
        let reason = out.reason.unwrap();
        assert_eq!(reason.kind, "malformed", "{bad}");
        assert!(reason.message.contains("{rest...}"), "{bad}: {reason:?}");
        assert_eq!(
            ext_authz(&server, "GET", &bad, &[ALICE]).await,
            (7, Some(400)),
            "{bad}"
        );
        let local = snapshot
            .check_http(&HttpRequest {
                method: "GET",
                path: &bad,
                headers: &vec![ALICE],
                principal: None,
                groups: &[],
                metadata: None,
                peer_principal: None,
                verifier: None,
                at: iot_authz::policy::syntax::now(),
            })
            .unwrap();
        assert_eq!(local.status(), 400, "{bad}");
    }
    // And through the real Envoy: the upstream never sees it.
    let upstream = Upstream::start().await;
    let envoy = Envoy::start("envoy.yaml", server.grpc, upstream.addr, &[]).await;
    let status = tokio::task::spawn_blocking({
        let bytes = request("GET", format!("{SOLUTIONS}/*").as_bytes(), &[ALICE]);
        let addr = envoy.listener;
        move || raw(addr, &bytes)
    })
    .await
    .unwrap();
    assert_eq!(status, Some(400));
    assert!(upstream.requests().is_empty());
}

/// HTTP header names are case-insensitive: a looked-up header (identity or `{header:...}`)
/// given under two spellings with different values is ambiguous, so the request is malformed,
/// every time, on CheckHttp and on ext_authz alike. The same value twice is fine.
#[tokio::test(flavor = "multi_thread")]
async fn a_header_in_two_spellings_with_different_values_is_malformed() {
    crypto();
    let server = TestServer::start(demo()).await;
    let line_1 = "/subscriptions/s1/resourceGroups/factory/providers/Microsoft.Edge/targets/line-1";
    let conflicting = [
        ("x-iotauthz-principal", "user:dave@contoso.com"),
        ("X-Iotauthz-Principal", "user:alice@contoso.com"),
    ];
    // The map's order is random: ask often enough that a random pick would show.
    for _ in 0..20 {
        let out = check_http(&server, "", "GET", line_1, &conflicting).await;
        assert!(!out.allowed, "{out:?}");
        assert_eq!(out.status, 400, "{out:?}");
        let reason = out.reason.unwrap();
        assert_eq!(reason.kind, "malformed");
        assert!(
            reason.message.contains("x-iotauthz-principal")
                && reason.message.contains("more than once"),
            "{reason:?}"
        );
        assert_eq!(
            ext_authz(&server, "GET", line_1, &conflicting).await,
            (7, Some(400))
        );
    }
    let same = [
        ("x-iotauthz-principal", "user:alice@contoso.com"),
        ("X-Iotauthz-Principal", "user:alice@contoso.com"),
    ];
    let out = check_http(&server, "", "GET", line_1, &same).await;
    assert!(out.allowed, "{out:?}");
    assert_eq!(out.principal, "user:alice@contoso.com");
    assert_eq!(ext_authz(&server, "GET", line_1, &same).await, (0, None));
    // An explicit principal means no identity header is looked up.
    let out = check_http(
        &server,
        "user:alice@contoso.com",
        "GET",
        line_1,
        &conflicting,
    )
    .await;
    assert!(out.allowed, "{out:?}");

    // A `{header:...}` capture.
    let devices = "/iot.devices.v1.Devices/List";
    for _ in 0..20 {
        let out = check_http(
            &server,
            "user:alice@contoso.com",
            "POST",
            devices,
            &[("x-app-id", "app-1"), ("X-App-Id", "app-2")],
        )
        .await;
        assert_eq!(out.status, 400, "{out:?}");
        assert!(
            out.reason.unwrap().message.contains("more than once"),
            "x-app-id"
        );
        assert_eq!(
            ext_authz(
                &server,
                "POST",
                devices,
                &[ALICE, ("x-app-id", "app-1"), ("X-App-Id", "app-2")]
            )
            .await,
            (7, Some(400))
        );
    }
    let out = check_http(
        &server,
        "user:alice@contoso.com",
        "POST",
        devices,
        &[("x-app-id", "app-1"), ("X-App-Id", "app-1")],
    )
    .await;
    assert_ne!(out.status, 400, "{out:?}");
    assert_eq!(out.scope, "/apps/app-1");
}
