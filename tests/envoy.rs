//! End to end through the real Envoy (`deploy/envoy/*.yaml`): plain HTTP requests go
//! through Envoy's ext_authz filter (gRPC mode) to the real iot-authz and on to a
//! recording upstream.

use std::sync::Arc;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{Envoy, JwtKey, TestServer, Upstream, crypto, demo};

const LINE_1: &str =
    "/subscriptions/s1/resourceGroups/factory/providers/Microsoft.Edge/targets/line-1";

struct Rig {
    server: TestServer,
    upstream: Upstream,
    envoy: Envoy,
    client: reqwest::Client,
}

async fn rig() -> Rig {
    crypto();
    let server = TestServer::start(demo()).await;
    let upstream = Upstream::start().await;
    let envoy = Envoy::start("envoy.yaml", server.grpc, upstream.addr, &[]).await;
    Rig {
        server,
        upstream,
        envoy,
        client: reqwest::Client::new(),
    }
}

async fn deny_body(resp: reqwest::Response) -> Value {
    assert_eq!(
        resp.headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap()),
        Some("application/json")
    );
    let decision_id = resp.headers().get("x-iotauthz-decision-id").cloned();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body["decisionId"].as_str(),
        decision_id.as_ref().map(|v| v.to_str().unwrap())
    );
    body
}

#[tokio::test(flavor = "multi_thread")]
async fn allowed_requests_reach_the_upstream_with_trusted_headers_only() {
    let rig = rig().await;
    let resp = rig
        .client
        .get(rig.envoy.url(LINE_1))
        .header("x-iotauthz-principal", "user:alice@contoso.com")
        .header("x-iotauthz-action", "Forged/everything/write")
        .header("x-iotauthz-scope", "/")
        .header("x-iotauthz-shadow-decision", "allow")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let seen = rig.upstream.requests();
    assert_eq!(seen.len(), 1);
    let h = &seen[0].headers;
    assert_eq!(h["x-iotauthz-principal"], vec!["user:alice@contoso.com"]);
    assert_eq!(h["x-iotauthz-action"], vec!["Microsoft.Edge/targets/read"]);
    assert_eq!(h["x-iotauthz-scope"], vec![LINE_1]);
    assert!(!h.contains_key("x-iotauthz-shadow-decision"), "{h:?}");
    assert_eq!(seen[0].path, LINE_1);
}

/// Envoy joins repeated request headers into one comma-separated value before it asks
/// ext_authz. Two different copies of a header the decision reads stay malformed (400)
/// through that join, never decided on the joined text; the same copy twice is one value.
#[tokio::test(flavor = "multi_thread")]
async fn repeated_headers_joined_by_envoy_are_still_copies() {
    let rig = rig().await;
    let alice = ("x-iotauthz-principal", "user:alice@contoso.com");
    let reboot = rig.envoy.url("/iot.devices.v1.Devices/Reboot");
    let post = |app_ids: &[&str]| {
        let mut request = rig.client.post(&reboot).header(alice.0, alice.1);
        for id in app_ids {
            request = request.header("x-app-id", *id);
        }
        request.send()
    };
    // One copy is decided (nobody in the demo may reboot devices).
    let resp = post(&["a2"]).await.unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(deny_body(resp).await["scope"], "/apps/a2");
    // Two different copies: malformed, whichever way Envoy joined them.
    let resp = post(&["a2", "a1"]).await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let body = deny_body(resp).await;
    assert_eq!(body["reason"], "malformed");
    // The same copy twice is that one value.
    let resp = post(&["a2", "a2"]).await.unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(deny_body(resp).await["scope"], "/apps/a2");

    // The identity header: two different principals are malformed, one repeated is one.
    let get = |principals: &[&str]| {
        let mut request = rig.client.get(rig.envoy.url(LINE_1));
        for p in principals {
            request = request.header(alice.0, *p);
        }
        request.send()
    };
    let resp = get(&[alice.1, "user:bob@contoso.com"]).await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(deny_body(resp).await["reason"], "malformed");
    let resp = get(&[alice.1, alice.1]).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(rig.upstream.requests().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn every_deny_kind_gets_its_status_and_json_body() {
    let rig = rig().await;
    let alice = ("x-iotauthz-principal", "user:alice@contoso.com");
    // Denied by the policy.
    let resp = rig
        .client
        .put(rig.envoy.url(LINE_1))
        .header(alice.0, alice.1)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let body = deny_body(resp).await;
    assert_eq!(body["reason"], "noGrant");
    assert_eq!(body["error"], "forbidden");
    assert_eq!(body["action"], "Microsoft.Edge/targets/write");
    assert_eq!(body["principal"], "user:alice@contoso.com");
    // Deny assignment.
    let carol = ("x-iotauthz-principal", "user:carol@contoso.com");
    let resp = rig
        .client
        .delete(rig.envoy.url(LINE_1))
        .header(carol.0, carol.1)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let body = deny_body(resp).await;
    assert_eq!(body["reason"], "denyAssignment");
    // The body names the deny assignment, so the caller can look it up.
    assert_eq!(body["denyAssignment"], "no-target-deletes-by-operators");
    // No route.
    let resp = rig
        .client
        .get(rig.envoy.url("/admin/users"))
        .header(alice.0, alice.1)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(deny_body(resp).await["reason"], "noRoute");
    // Malformed paths: matrix parameters, an encoded slash.
    for path in [
        "/subscriptions/s1;x/resourceGroups/factory/providers/Microsoft.Edge/targets/line-1",
        "/subscriptions/s1/resourceGroups/factory/providers/Microsoft.Edge/targets/line-1%2F..%2Fline-2",
    ] {
        let resp = rig
            .client
            .get(rig.envoy.url(path))
            .header(alice.0, alice.1)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{path}");
        let body = deny_body(resp).await;
        assert_eq!(body["reason"], "malformed", "{path}");
        assert_eq!(body["error"], "bad request");
    }
    // No identity.
    let resp = rig.client.get(rig.envoy.url(LINE_1)).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(deny_body(resp).await["reason"], "noIdentity");
    // None of them reached the upstream.
    assert!(
        rig.upstream.requests().is_empty(),
        "{:?}",
        rig.upstream.requests()
    );
    // A public route needs no identity.
    let resp = rig
        .client
        .get(rig.envoy.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(rig.upstream.requests().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn deny_bodies_never_echo_markup() {
    let rig = rig().await;
    let resp = rig
        .client
        .put(rig.envoy.url(LINE_1))
        .header("x-iotauthz-principal", "user:<script>alert(1)</script>")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let text = resp.text().await.unwrap();
    assert!(!text.contains('<') && !text.contains('>'), "{text}");
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["principal"], "user:<script>alert(1)</script>");
}

#[tokio::test(flavor = "multi_thread")]
async fn envoy_denies_when_iot_authz_is_down() {
    let mut rig = rig().await;
    let alice = ("x-iotauthz-principal", "user:alice@contoso.com");
    let resp = rig
        .client
        .get(rig.envoy.url(LINE_1))
        .header(alice.0, alice.1)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    rig.server.stop().await;
    let resp = rig
        .client
        .get(rig.envoy.url(LINE_1))
        .header(alice.0, alice.1)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        rig.upstream.requests().len(),
        1,
        "the upstream saw a request while iot-authz was down"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn jwt_claims_from_envoy_identify_the_caller() {
    crypto();
    let key = JwtKey::generate();
    let server = TestServer::start(demo()).await;
    let upstream = Upstream::start().await;
    let envoy = Envoy::start_with_jwks(server.grpc, upstream.addr, &key).await;
    let client = reqwest::Client::new();
    let token = |sub: &str, groups: &[&str]| {
        key.token(
            &json!({"iss": "https://issuer.iot-authz.example", "aud": "iot-authz-demo",
            "sub": sub, "groups": groups, "exp": 4_102_444_800u64}),
        )
    };
    // An unknown user, allowed through the groups claim.
    let resp = client
        .get(envoy.url(LINE_1))
        .bearer_auth(token("zed@contoso.com", &["factory-operators"]))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let seen = upstream.requests();
    assert_eq!(
        seen[0].headers["x-iotauthz-principal"],
        vec!["user:zed@contoso.com"]
    );
    // The same user without the group is denied.
    let resp = client
        .get(envoy.url(LINE_1))
        .bearer_auth(token("zed@contoso.com", &[]))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["principal"],
        "user:zed@contoso.com"
    );
    // A known user by `sub`.
    let resp = client
        .get(envoy.url(LINE_1))
        .bearer_auth(token("alice@contoso.com", &[]))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    // A token signed by another key never reaches iot-authz or the upstream.
    let other = JwtKey::generate();
    let forged = other.token(&json!({"iss": "https://issuer.iot-authz.example", "aud": "iot-authz-demo", "sub": "alice@contoso.com"}));
    let resp = client
        .get(envoy.url(LINE_1))
        .bearer_auth(forged)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(upstream.requests().len(), 2);
}

struct Pki {
    ca_pem: String,
    server_cert_pem: String,
    server_key_pem: String,
    ca: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl Pki {
    fn new() -> Self {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "iot-authz test CA");
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let ca = rcgen::Issuer::new(ca_params, ca_key);
        let server_key = rcgen::KeyPair::generate().unwrap();
        let server_cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .signed_by(&server_key, &ca)
            .unwrap();
        Self {
            ca_pem: ca_cert.pem(),
            server_cert_pem: server_cert.pem(),
            server_key_pem: server_key.serialize_pem(),
            ca,
        }
    }

    /// A client certificate with a SPIFFE URI SAN.
    fn client(&self, spiffe: &str) -> (rcgen::Certificate, rcgen::KeyPair) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.subject_alt_names = vec![rcgen::SanType::URI(spiffe.try_into().unwrap())];
        (params.signed_by(&key, &self.ca).unwrap(), key)
    }

    fn https_client(&self, spiffe: &str) -> reqwest::Client {
        use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
        let (cert, key) = self.client(spiffe);
        let mut roots = rustls::RootCertStore::empty();
        let ca_der =
            rustls::pki_types::pem::PemObject::from_pem_slice(self.ca_pem.as_bytes()).unwrap();
        roots.add(CertificateDer::into_owned(ca_der)).unwrap();
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(
            vec![cert.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .unwrap();
        reqwest::Client::builder()
            .tls_backend_preconfigured(config)
            .build()
            .unwrap()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn mtls_peer_certificates_identify_devices() {
    crypto();
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("server.crt"), &pki.server_cert_pem).unwrap();
    std::fs::write(dir.path().join("server.key"), &pki.server_key_pem).unwrap();
    std::fs::write(dir.path().join("client-ca.crt"), &pki.ca_pem).unwrap();
    let server = TestServer::start(demo()).await;
    let upstream = Upstream::start().await;
    let tls_dir = dir.path().display().to_string();
    let envoy = Envoy::start(
        "envoy-mtls.yaml",
        server.grpc,
        upstream.addr,
        &[("/etc/envoy/tls", tls_dir.as_str())],
    )
    .await;
    let url = |path: &str| format!("https://localhost:{}{path}", envoy.listener.port());

    let plc = pki.https_client("spiffe://factory.example/line-1/plc-7");
    let resp = plc
        .get(url(&format!("{LINE_1}/solutions/s-1")))
        // Forged identity: Envoy strips it before authorization.
        .header("x-iotauthz-principal", "user:dave@contoso.com")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let seen = upstream.requests();
    assert_eq!(
        seen[0].headers["x-iotauthz-principal"],
        vec!["device:spiffe://factory.example/line-1/plc-7"]
    );
    // The device may not delete the target, and the forged header did not make it Dave.
    let resp = plc
        .delete(url(LINE_1))
        .header("x-iotauthz-principal", "user:dave@contoso.com")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["principal"],
        "device:spiffe://factory.example/line-1/plc-7"
    );
    // Another device holds nothing.
    let other = pki.https_client("spiffe://factory.example/line-9/plc-1");
    let resp = other
        .get(url(&format!("{LINE_1}/solutions/s-1")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(upstream.requests().len(), 1);
}
