//! HTTP authorization mode through the real proxies: nginx `auth_request` and Envoy's HTTP
//! ext_authz service, each in front of a recording upstream; Traefik's ForwardAuth header
//! contract with a plain HTTP client (Traefik does not run here).

use reqwest::StatusCode;
use serde_json::Value;

use crate::support::{Envoy, Nginx, TestServer, Upstream, crypto, demo};

const LINE_1: &str =
    "/subscriptions/s1/resourceGroups/factory/providers/Microsoft.Edge/targets/line-1";
const ALICE: (&str, &str) = ("x-iotauthz-principal", "user:alice@contoso.com");

/// One proxy in front of iot-authz and a recording upstream.
struct Rig {
    server: TestServer,
    upstream: Upstream,
    base: String,
    _proxy: Box<dyn std::any::Any>,
}

async fn nginx_rig() -> Rig {
    crypto();
    let server = TestServer::start(demo()).await;
    let upstream = Upstream::start().await;
    let nginx = Nginx::start(server.http, upstream.addr).await;
    let base = nginx.url("");
    Rig {
        server,
        upstream,
        base,
        _proxy: Box::new(nginx),
    }
}

async fn envoy_http_rig() -> Rig {
    envoy_http_rig_with(demo()).await
}

async fn envoy_http_rig_with(snapshot: iot_authz::policy::Snapshot) -> Rig {
    crypto();
    let server = TestServer::start(snapshot).await;
    let upstream = Upstream::start().await;
    let envoy = Envoy::start_http(&server, upstream.addr).await;
    let base = envoy.url("");
    Rig {
        server,
        upstream,
        base,
        _proxy: Box::new(envoy),
    }
}

async fn json_body(resp: reqwest::Response) -> Value {
    let text = resp.text().await.unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// The same matrix for every proxy: allowed, denied, unidentified, malformed, unmatched and
/// forged headers.
async fn matrix(rig: Rig) {
    let client = reqwest::Client::new();
    let url = |p: &str| format!("{}{p}", rig.base);
    // Allowed, with forged x-iotauthz-* and original-URI headers that must not count.
    let resp = client
        .get(url(LINE_1))
        .header(ALICE.0, ALICE.1)
        .header("x-iotauthz-action", "Forged/everything/write")
        .header("x-iotauthz-scope", "/")
        .header("x-original-uri", "/healthz")
        .header("x-forwarded-uri", "/healthz")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let seen = rig.upstream.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, LINE_1);
    let h = &seen[0].headers;
    assert_eq!(h["x-iotauthz-principal"], vec!["user:alice@contoso.com"]);
    assert_eq!(h["x-iotauthz-action"], vec!["Microsoft.Edge/targets/read"]);
    assert_eq!(h["x-iotauthz-scope"], vec![LINE_1]);

    // A forged original URI does not turn a denied request into an allowed one.
    let resp = client
        .put(url(LINE_1))
        .header(ALICE.0, ALICE.1)
        .header("x-original-uri", "/healthz")
        .header("x-original-method", "GET")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let body = json_body(resp).await;
    assert_eq!(body["reason"], "noGrant");
    assert_eq!(body["action"], "Microsoft.Edge/targets/write");
    assert!(body["decisionId"].as_str().is_some_and(|d| !d.is_empty()));

    let resp = client.get(url(LINE_1)).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(json_body(resp).await["reason"], "noIdentity");

    let resp = client
        .get(url("/subscriptions/s1;x/resourceGroups/factory"))
        .header(ALICE.0, ALICE.1)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(json_body(resp).await["reason"], "malformed");

    let resp = client
        .get(url("/admin"))
        .header(ALICE.0, ALICE.1)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(json_body(resp).await["reason"], "noRoute");

    assert_eq!(
        rig.upstream.requests().len(),
        1,
        "a denied request reached the upstream"
    );
    // A public route without identity.
    let resp = client.get(url("/healthz")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let seen = rig.upstream.requests();
    assert_eq!(seen.len(), 2);
    assert!(
        !seen[1].headers.contains_key("x-iotauthz-principal"),
        "{:?}",
        seen[1].headers
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn nginx_auth_request() {
    matrix(nginx_rig().await).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn envoy_http_ext_authz() {
    matrix(envoy_http_rig().await).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn envoy_http_mode_removes_other_client_sent_iotauthz_headers() {
    let rig = envoy_http_rig().await;
    let resp = reqwest::Client::new()
        .get(format!("{}{LINE_1}", rig.base))
        .header(ALICE.0, ALICE.1)
        .header("x-iotauthz-shadow-decision", "allow")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let seen = rig.upstream.requests();
    assert!(
        !seen[0].headers.contains_key("x-iotauthz-shadow-decision"),
        "{:?}",
        seen[0].headers
    );
    // A value that is not visible ASCII (an obs-text byte) identifies no one, and its
    // header is listed for removal all the same. (Through this Envoy the upstream did not
    // receive such a value either way, so iot-authz's answer is checked directly: the list
    // is its part of the contract.)
    let resp = reqwest::Client::new()
        .get(format!("http://{}/v1/authz/envoy{LINE_1}", rig.server.http))
        .header(ALICE.0, ALICE.1)
        .header(
            "x-iotauthz-shadow-decision",
            reqwest::header::HeaderValue::from_bytes(b"allow\xa0").unwrap(),
        )
        .header("x-iotauthz-other", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut removed: Vec<&str> = resp.headers()["x-envoy-auth-headers-to-remove"]
        .to_str()
        .unwrap()
        .split(',')
        .collect();
    removed.sort_unstable();
    assert_eq!(removed, ["x-iotauthz-other", "x-iotauthz-shadow-decision"]);
    // An identity header sent twice, one copy not visible ASCII, is ambiguous: malformed.
    // Alone, such a copy identifies no one.
    let endpoint = format!("http://{}/v1/authz/envoy{LINE_1}", rig.server.http);
    let unreadable = reqwest::header::HeaderValue::from_bytes(b"user:\xff").unwrap();
    let resp = reqwest::Client::new()
        .get(&endpoint)
        .header(ALICE.0, ALICE.1)
        .header(ALICE.0, unreadable.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let resp = reqwest::Client::new()
        .get(&endpoint)
        .header(ALICE.0, unreadable)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
}

/// nginx passes shadow mode's markers upstream, and removes client-sent copies of them.
#[tokio::test(flavor = "multi_thread")]
async fn nginx_passes_shadow_markers_and_drops_forged_ones() {
    crypto();
    let server = TestServer::start_options(
        demo(),
        &iot_authz::server::AppOptions {
            shadow: true,
            ..Default::default()
        },
    )
    .await;
    let upstream = Upstream::start().await;
    let nginx = Nginx::start(server.http, upstream.addr).await;
    let client = reqwest::Client::new();
    // Denied (alice may not delete), let through and marked.
    let resp = client
        .delete(nginx.url(LINE_1))
        .header(ALICE.0, ALICE.1)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    // Allowed, with forged markers.
    let resp = client
        .get(nginx.url(LINE_1))
        .header(ALICE.0, ALICE.1)
        .header("x-iotauthz-shadow-decision", "deny")
        .header("x-iotauthz-shadow-reason", "forged")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let seen = upstream.requests();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].headers["x-iotauthz-shadow-decision"], vec!["deny"]);
    assert_eq!(
        seen[0].headers["x-iotauthz-shadow-reason"],
        vec!["denyAssignment"]
    );
    assert!(
        !seen[1].headers.contains_key("x-iotauthz-shadow-decision")
            && !seen[1].headers.contains_key("x-iotauthz-shadow-reason"),
        "{:?}",
        seen[1].headers
    );
}

/// Traefik's ForwardAuth sends the client's headers plus X-Forwarded-Method, -Uri, -Host and
/// -Proto; exactly that is sent here.
#[tokio::test]
async fn traefik_forward_auth_contract() {
    crypto();
    let server = TestServer::start(demo()).await;
    let client = reqwest::Client::new();
    let ask = |method: &str, uri: &str, principal: Option<&str>| {
        let mut req = client
            .get(format!("http://{}/v1/authz/traefik", server.http))
            .header("x-forwarded-method", method)
            .header("x-forwarded-uri", uri)
            .header("x-forwarded-host", "factory.example")
            .header("x-forwarded-proto", "https")
            .header("x-forwarded-for", "192.0.2.7");
        if let Some(p) = principal {
            req = req.header("x-iotauthz-principal", p);
        }
        req.send()
    };
    let resp = ask(
        "GET",
        &format!("{LINE_1}?expand=true"),
        Some("user:alice@contoso.com"),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.headers()["x-iotauthz-principal"],
        "user:alice@contoso.com"
    );
    assert_eq!(
        resp.headers()["x-iotauthz-action"],
        "Microsoft.Edge/targets/read"
    );
    assert_eq!(resp.headers()["x-iotauthz-scope"], LINE_1);
    for (method, uri, principal, status, reason) in [
        (
            "PUT",
            LINE_1,
            Some("user:alice@contoso.com"),
            403,
            "noGrant",
        ),
        ("GET", LINE_1, None, 401, "noIdentity"),
        (
            "GET",
            "/subscriptions/%2e%2e/x",
            Some("user:alice@contoso.com"),
            400,
            "malformed",
        ),
        (
            "GET",
            "/nowhere",
            Some("user:alice@contoso.com"),
            403,
            "noRoute",
        ),
    ] {
        let resp = ask(method, uri, principal).await.unwrap();
        assert_eq!(resp.status().as_u16(), status, "{method} {uri}");
        assert_eq!(resp.headers()["content-type"], "application/json");
        assert_eq!(json_body(resp).await["reason"], reason, "{method} {uri}");
    }
    // Without the forwarded URI there is nothing to authorize.
    let resp = client
        .get(format!("http://{}/v1/authz/traefik", server.http))
        .header("x-forwarded-method", "GET")
        .header("x-iotauthz-principal", "user:alice@contoso.com")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(json_body(resp).await["reason"], "malformed");
}

/// nginx's own endpoint says 400 in a header, since auth_request cannot pass a 400 on.
#[tokio::test]
async fn nginx_endpoint_maps_malformed_to_403_with_the_real_status_in_a_header() {
    crypto();
    let server = TestServer::start(demo()).await;
    let resp = reqwest::Client::new()
        .get(format!("http://{}/v1/authz/nginx", server.http))
        .header("x-original-method", "GET")
        .header("x-original-uri", "/a/../b")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(resp.headers()["x-iotauthz-status"], "400");
    let body: Value =
        serde_json::from_str(resp.headers()["x-iotauthz-body"].to_str().unwrap()).unwrap();
    assert_eq!(body["reason"], "malformed");
}

/// The root path is a path like any other in HTTP mode: Envoy asks for `<prefix>/`, and the
/// answer is a decision (here a `noRoute` deny with the usual JSON body), not a bare 404.
#[tokio::test(flavor = "multi_thread")]
async fn envoy_http_mode_decides_the_root_path() {
    let rig = envoy_http_rig().await;
    let client = reqwest::Client::new();
    let resp = client
        .get(format!("{}/", rig.base))
        .header(ALICE.0, ALICE.1)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let body = json_body(resp).await;
    assert_eq!(body["reason"], "noRoute");
    assert!(body["decisionId"].as_str().is_some_and(|d| !d.is_empty()));
    assert!(rig.upstream.requests().is_empty());

    // Directly, with and without the trailing slash, and with a query.
    let server = TestServer::start(demo()).await;
    for target in [
        "/v1/authz/envoy/",
        "/v1/authz/envoy",
        "/v1/authz/envoy/?a=1",
    ] {
        let resp = client
            .get(format!("http://{}{target}", server.http))
            .header(ALICE.0, ALICE.1)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::FORBIDDEN, "{target}");
        assert_eq!(
            resp.headers()["content-type"],
            "application/json",
            "{target}"
        );
        assert_eq!(json_body(resp).await["reason"], "noRoute", "{target}");
    }

    // A policy that routes `/` allows it, through Envoy and directly.
    let policy = "version: 1\nroles: [{name: R, actions: ['x/*']}]\nassignments:\n  - {principal: 'user:alice@contoso.com', role: R, scope: /}\nroutes:\n  - {methods: [GET], path: /, action: x/read, scope: /}\n";
    let rig = envoy_http_rig_with(crate::support::policy(policy)).await;
    let resp = client
        .get(format!("{}/", rig.base))
        .header(ALICE.0, ALICE.1)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let seen = rig.upstream.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, "/");
    assert_eq!(seen[0].headers["x-iotauthz-action"], vec!["x/read"]);
    assert_eq!(seen[0].headers["x-iotauthz-scope"], vec!["/"]);
    let resp = client.get(format!("{}/", rig.base)).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(json_body(resp).await["reason"], "noIdentity");
}
