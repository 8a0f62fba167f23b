//! Bearer tokens verified by iot-authz itself (SPEC §13): keys from a JWKS file, a JWKS URL
//! and OpenID discovery served by the test over HTTP; rotation, an endpoint that is down,
//! slow or returns garbage; every mode (ext_authz, CheckHttp, the native API's metadata,
//! nginx `auth_request` and Envoy's HTTP ext_authz without `jwt_authn`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use iot_authz::policy::bearer::JwksError;
use iot_authz::policy::{Snapshot, SourceDocument, compile_sources};
use iot_authz::proto::iotauthz::v1 as pb;
use iot_authz::proto::iotauthz::v1::authorizer_client::AuthorizerClient;
use iot_authz::server::AppOptions;
use iot_authz::sources::jwks::{KeyFetchError, KeyOptions};
use jsonwebtoken::Algorithm;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::support::jwt::{TestKey, claims, jwks, raw_token, unix_now};
use crate::support::{Envoy, Nginx, TestServer, Upstream, crypto};

const LINE_1: &str =
    "/subscriptions/s1/resourceGroups/factory/providers/Microsoft.Edge/targets/line-1";
const ALICE: &str = "alice@contoso.com";

/// What the test's JWKS server answers.
struct Served {
    jwks: String,
    status: u16,
    delay: Duration,
    cache_control: Option<String>,
    /// The `issuer` of the discovery document.
    discovery_issuer: String,
    jwks_hits: usize,
    discovery_hits: usize,
}

/// A JWKS and OpenID discovery endpoint on 127.0.0.1:0.
struct KeyServer {
    base: String,
    state: Arc<Mutex<Served>>,
}

impl KeyServer {
    async fn start(keys: &[&TestKey]) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(Served {
            jwks: jwks(keys),
            status: 200,
            delay: Duration::ZERO,
            cache_control: None,
            discovery_issuer: base.clone(),
            jwks_hits: 0,
            discovery_hits: 0,
        }));
        let jwks_state = state.clone();
        let discovery_state = state.clone();
        let jwks_uri = format!("{base}/keys/jwks.json");
        let app = axum::Router::new()
            .route(
                "/keys/jwks.json",
                axum::routing::get(move || {
                    let state = jwks_state.clone();
                    async move {
                        let (body, status, delay, cache) = {
                            let mut s = state.lock().unwrap();
                            s.jwks_hits += 1;
                            (s.jwks.clone(), s.status, s.delay, s.cache_control.clone())
                        };
                        tokio::time::sleep(delay).await;
                        let mut response = axum::response::Response::builder()
                            .status(status)
                            .header("content-type", "application/json");
                        if let Some(c) = cache {
                            response = response.header("cache-control", c);
                        }
                        response.body(axum::body::Body::from(body)).unwrap()
                    }
                }),
            )
            .route(
                "/.well-known/openid-configuration",
                axum::routing::get(move || {
                    let state = discovery_state.clone();
                    let jwks_uri = jwks_uri.clone();
                    async move {
                        let mut s = state.lock().unwrap();
                        s.discovery_hits += 1;
                        json!({"issuer": s.discovery_issuer, "jwks_uri": jwks_uri}).to_string()
                    }
                }),
            );
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { base, state }
    }

    fn url(&self) -> String {
        format!("{}/keys/jwks.json", self.base)
    }

    fn set(&self, f: impl FnOnce(&mut Served)) {
        f(&mut self.state.lock().unwrap());
    }

    fn jwks_hits(&self) -> usize {
        self.state.lock().unwrap().jwks_hits
    }
}

/// The demo policy with `bearer` (YAML flow mapping) as the first identity source, before
/// the demo's header and jwt sources.
fn policy_with(bearer: &str) -> Snapshot {
    policy_with_sources(&[format!("bearer: {bearer}")])
}

/// The demo policy with these identity sources (each one YAML line, such as
/// `bearer: {...}`) first, in this order, before the demo's header and jwt sources.
fn policy_with_sources(sources: &[String]) -> Snapshot {
    let first: String = sources.iter().map(|s| format!("    - {s}\n")).collect();
    let documents: Vec<SourceDocument> = iot_authz::demo::sources()
        .into_iter()
        .map(|d| {
            let text = String::from_utf8(d.bytes.to_vec()).unwrap();
            if text.contains("\nidentity:\n  sources:\n") {
                let text = text.replace(
                    "\nidentity:\n  sources:\n",
                    &format!("\nidentity:\n  sources:\n{first}"),
                );
                SourceDocument::new(d.name.clone(), text.into_bytes())
            } else {
                d
            }
        })
        .collect();
    compile_sources(&documents).unwrap_or_else(|e| panic!("{e}"))
}

fn url_source(issuer: &str, url: &str) -> String {
    format!(
        "{{issuer: '{issuer}', audiences: [iot-api], jwks: {{url: '{url}'}}, principalType: user, groupsClaim: groups}}"
    )
}

const ISSUER: &str = "https://login.example.com/";

async fn start(snapshot: Snapshot, keys: KeyOptions) -> TestServer {
    crypto();
    let options = AppOptions {
        keys,
        ..AppOptions::default()
    };
    TestServer::start_options(snapshot, &options).await
}

/// Waits until the issuer's key set holds exactly `kids` (the key task's own report).
async fn wait_kids(server: &TestServer, issuer: &str, kids: &[&str]) {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let status = server.app.keys.status();
        if status.iter().any(|s| s.issuer == issuer && s.kids == kids) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "keys never became {kids:?}: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until the issuer's last fetch failed with an error `is` accepts; returns it.
async fn wait_error(
    server: &TestServer,
    issuer: &str,
    is: impl Fn(&KeyFetchError) -> bool,
) -> KeyFetchError {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let status = server.app.keys.status();
        if let Some(e) = status
            .iter()
            .find(|s| s.issuer == issuer)
            .and_then(|s| s.last_error.clone())
            .filter(|e| is(e))
        {
            return e;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no such error: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A key document that is not a usable JWKS, for this reason.
fn invalid_keys(is: fn(&JwksError) -> bool) -> impl Fn(&KeyFetchError) -> bool {
    move |e| matches!(e, KeyFetchError::InvalidKeys { error, .. } if is(error))
}

/// Envoy's ext_authz Check of `GET LINE_1` with these headers: (gRPC code, denial's HTTP
/// status, body).
async fn ext_authz(server: &TestServer, headers: &[(&str, &str)]) -> (i32, Option<i32>, String) {
    let answer = crate::support::ext_authz(server, "GET", LINE_1, headers).await;
    (answer.code, answer.status, answer.body)
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

fn alice_claims() -> Value {
    claims(ISSUER, "iot-api", ALICE, unix_now())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_verified_with_a_served_jwks_identifies_the_caller_in_ext_authz_and_check_http() {
    let key = TestKey::ec("k1", Algorithm::ES256);
    let keys = KeyServer::start(&[&key]).await;
    let server = start(
        policy_with(&url_source(ISSUER, &keys.url())),
        KeyOptions::default(),
    )
    .await;
    wait_kids(&server, ISSUER, &["k1"]).await;
    let token = key.sign(&alice_claims());
    let auth = bearer(&token);
    assert_eq!(ext_authz(&server, &[("authorization", &auth)]).await.0, 0);
    // A second time: from the verification cache.
    assert_eq!(ext_authz(&server, &[("authorization", &auth)]).await.0, 0);
    let metrics = server.metrics().await;
    assert!(
        metrics.contains("iot_authz_token_cache_hits_total 1"),
        "{metrics}"
    );

    // A token for someone without a grant is identified, then denied by policy.
    let bob = key.sign(&claims(ISSUER, "iot-api", "bob@contoso.com", unix_now()));
    assert_eq!(
        ext_authz(&server, &[("authorization", &bearer(&bob))])
            .await
            .1,
        Some(403)
    );

    // An expired token stops the search: the demo's trusted header behind it does not count.
    let expired = key.sign(&claims(ISSUER, "iot-api", ALICE, unix_now() - 7200));
    let (code, status, body) = ext_authz(
        &server,
        &[
            ("authorization", &bearer(&expired)),
            ("x-iotauthz-principal", "user:alice@contoso.com"),
        ],
    )
    .await;
    assert_eq!((code, status), (16, Some(401)));
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["reason"], "noIdentity");
    assert!(!body.to_string().contains(&expired));
    // Without a token, the next source (the header) answers.
    assert_eq!(
        ext_authz(
            &server,
            &[("x-iotauthz-principal", "user:alice@contoso.com")]
        )
        .await
        .0,
        0
    );

    // CheckHttp: the token in the described request's headers.
    let mut client = AuthorizerClient::connect(server.grpc_url()).await.unwrap();
    let out = client
        .check_http(crate::support::check_http_request(
            "",
            "GET",
            LINE_1,
            &[("Authorization", &auth)],
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(out.allowed, "{out:?}");
    assert_eq!(out.principal, "user:alice@contoso.com");
    let out = client
        .check_http(crate::support::check_http_request(
            "",
            "GET",
            LINE_1,
            &[("Authorization", &bearer(&expired))],
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((out.allowed, out.status), (false, 401));

    let metrics = server.metrics().await;
    assert!(
        metrics.contains(&format!(
            "iot_authz_token_rejections_total{{issuer=\"{ISSUER}\",reason=\"expired\"}} 2"
        )),
        "{metrics}"
    );
    assert!(!metrics.contains(&expired));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_native_api_identifies_its_caller_from_authorization_metadata() {
    let key = TestKey::rsa("r1", Algorithm::RS256);
    let keys = KeyServer::start(&[&key]).await;
    let server = start(
        policy_with(&url_source(ISSUER, &keys.url())),
        KeyOptions::default(),
    )
    .await;
    wait_kids(&server, ISSUER, &["r1"]).await;
    let mut client = AuthorizerClient::connect(server.grpc_url()).await.unwrap();
    let check = |token: Option<String>| {
        let mut request = tonic::Request::new(pb::CheckRequest {
            principal: String::new(),
            action: "Microsoft.Edge/targets/read".into(),
            scope: LINE_1.into(),
            ..Default::default()
        });
        if let Some(t) = token {
            request
                .metadata_mut()
                .insert("authorization", t.parse().unwrap());
        }
        request
    };
    let token = key.sign(&alice_claims());
    let out = client
        .check(check(Some(bearer(&token))))
        .await
        .unwrap()
        .into_inner();
    assert!(out.allowed, "{out:?}");
    let expired = key.sign(&claims(ISSUER, "iot-api", ALICE, unix_now() - 7200));
    let err = client
        .check(check(Some(bearer(&expired))))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    assert!(err.message().contains("expired"), "{}", err.message());
    assert!(!err.message().contains(&expired));
    // No token and no principal: as before, an invalid argument.
    let err = client.check(check(None)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    // CheckHttp without headers uses the call's own token.
    let mut request =
        tonic::Request::new(crate::support::check_http_request("", "GET", LINE_1, &[]));
    request
        .metadata_mut()
        .insert("authorization", bearer(&token).parse().unwrap());
    let out = client.check_http(request).await.unwrap().into_inner();
    assert!(out.allowed, "{out:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn rotation_fetches_an_unknown_kid_at_most_once_per_interval() {
    let old = TestKey::ec("old", Algorithm::ES256);
    let new = TestKey::ec("new", Algorithm::ES256);
    let keys = KeyServer::start(&[&old]).await;
    let server = start(
        policy_with(&url_source(ISSUER, &keys.url())),
        KeyOptions::default(),
    )
    .await;
    wait_kids(&server, ISSUER, &["old"]).await;
    let old_token = bearer(&old.sign(&alice_claims()));
    assert_eq!(
        ext_authz(&server, &[("authorization", &old_token)]).await.0,
        0
    );
    assert_eq!(keys.jwks_hits(), 1);

    // The issuer rotates: `new` appears, `old` is removed. A token with the new kid makes
    // the server fetch once, and passes.
    keys.set(|s| s.jwks = jwks(&[&new]));
    let new_token = bearer(&new.sign(&alice_claims()));
    assert_eq!(
        ext_authz(&server, &[("authorization", &new_token)]).await.0,
        0
    );
    assert_eq!(keys.jwks_hits(), 2);
    // The old key is gone: its token (verified and remembered before) is refused now.
    let (code, status, _) = ext_authz(&server, &[("authorization", &old_token)]).await;
    assert_eq!((code, status), (16, Some(401)));
    // Unknown kids within the interval fetch nothing more.
    for kid in ["unknown-1", "unknown-2", "../../etc/passwd"] {
        let stranger = TestKey::ec(kid, Algorithm::ES256);
        let t = bearer(&stranger.sign(&alice_claims()));
        assert_eq!(
            ext_authz(&server, &[("authorization", &t)]).await.1,
            Some(401)
        );
    }
    assert_eq!(keys.jwks_hits(), 2);
    let metrics = server.metrics().await;
    assert!(
        metrics.contains(&format!(
            "iot_authz_token_rejections_total{{issuer=\"{ISSUER}\",reason=\"unknown key\"}} 4"
        )),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_jwks_endpoint_keeps_the_last_good_keys() {
    let key = TestKey::ec("k1", Algorithm::ES256);
    let keys = KeyServer::start(&[&key]).await;
    // Refresh often, so that each failure below is seen quickly.
    let options = KeyOptions {
        default_refresh: Duration::from_millis(20),
        min_refresh: Duration::from_millis(20),
        retry: Duration::from_millis(20),
        timeout: Duration::from_millis(300),
        ..KeyOptions::default()
    };
    let server = start(policy_with(&url_source(ISSUER, &keys.url())), options).await;
    wait_kids(&server, ISSUER, &["k1"]).await;
    let token = bearer(&key.sign(&alice_claims()));

    keys.set(|s| s.status = 503);
    let e = wait_error(
        &server,
        ISSUER,
        |e| matches!(e, KeyFetchError::Status { status, .. } if status.as_u16() == 503),
    )
    .await;
    assert!(e.to_string().contains("/keys/jwks.json"), "{e}");
    assert_eq!(ext_authz(&server, &[("authorization", &token)]).await.0, 0);

    keys.set(|s| {
        s.status = 200;
        s.jwks = "<html>maintenance</html>".into();
    });
    wait_error(
        &server,
        ISSUER,
        invalid_keys(|e| matches!(e, JwksError::NotJwks(_))),
    )
    .await;
    assert_eq!(ext_authz(&server, &[("authorization", &token)]).await.0, 0);

    keys.set(|s| s.jwks = json!({"keys": []}).to_string());
    wait_error(
        &server,
        ISSUER,
        invalid_keys(|e| *e == JwksError::NoSignatureKey),
    )
    .await;

    keys.set(|s| {
        s.jwks = jwks(&[&key]);
        s.delay = Duration::from_secs(5);
    });
    wait_error(&server, ISSUER, |e| {
        matches!(e, KeyFetchError::Request { .. })
    })
    .await;
    assert_eq!(ext_authz(&server, &[("authorization", &token)]).await.0, 0);
    assert_eq!(server.app.keys.status()[0].kids, ["k1"]);

    let metrics = server.metrics().await;
    assert!(
        metrics.contains(&format!(
            "iot_authz_jwks_fetches_total{{issuer=\"{ISSUER}\",result=\"failure\"}}"
        )),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_jwks_down_at_start_identifies_no_one_until_it_answers() {
    let key = TestKey::ec("k1", Algorithm::ES256);
    let keys = KeyServer::start(&[&key]).await;
    keys.set(|s| s.status = 500);
    let server = start(
        policy_with(&url_source(ISSUER, &keys.url())),
        KeyOptions::default(),
    )
    .await;
    wait_error(
        &server,
        ISSUER,
        |e| matches!(e, KeyFetchError::Status { status, .. } if status.as_u16() == 500),
    )
    .await;
    let token = bearer(&key.sign(&alice_claims()));
    let (code, status, _) = ext_authz(&server, &[("authorization", &token)]).await;
    assert_eq!((code, status), (16, Some(401)));
    let metrics = server.metrics().await;
    assert!(metrics.contains("reason=\"no keys\""), "{metrics}");
}

#[tokio::test(flavor = "multi_thread")]
async fn cache_control_max_age_sets_the_refresh_interval() {
    let key = TestKey::ec("k1", Algorithm::ES256);
    let keys = KeyServer::start(&[&key]).await;
    keys.set(|s| s.cache_control = Some("public, max-age=1".into()));
    let options = KeyOptions {
        default_refresh: Duration::from_secs(3600),
        min_refresh: Duration::ZERO,
        ..KeyOptions::default()
    };
    let server = start(policy_with(&url_source(ISSUER, &keys.url())), options).await;
    wait_kids(&server, ISSUER, &["k1"]).await;
    let rotated = TestKey::ec("k2", Algorithm::ES256);
    keys.set(|s| s.jwks = jwks(&[&rotated]));
    // Without max-age the next fetch would be an hour away.
    wait_kids(&server, ISSUER, &["k2"]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn openid_discovery_finds_the_jwks() {
    let key = TestKey::rsa("d1", Algorithm::PS256);
    let keys = KeyServer::start(&[&key]).await;
    let issuer = keys.base.clone();
    let source = format!(
        "{{issuer: '{issuer}', audiences: [iot-api], discovery: true, principalType: user, algorithms: [PS256]}}"
    );
    let server = start(policy_with(&source), KeyOptions::default()).await;
    wait_kids(&server, &issuer, &["d1"]).await;
    let token = bearer(&key.sign(&claims(&issuer, "iot-api", ALICE, unix_now())));
    assert_eq!(ext_authz(&server, &[("authorization", &token)]).await.0, 0);
    assert_eq!(keys.state.lock().unwrap().discovery_hits, 1);

    // A discovery document naming another issuer is refused.
    let other = KeyServer::start(&[&key]).await;
    other.set(|s| s.discovery_issuer = "https://evil.example.com".into());
    let source = format!(
        "{{issuer: '{}', audiences: [iot-api], discovery: true, principalType: user}}",
        other.base
    );
    let server = start(policy_with(&source), KeyOptions::default()).await;
    let e = wait_error(&server, &other.base, |e| {
        matches!(e, KeyFetchError::IssuerMismatch { .. })
    })
    .await;
    assert!(e.to_string().contains("its `issuer` is not"), "{e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_watched_jwks_file_is_reloaded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    let first = TestKey::ec("f1", Algorithm::ES384);
    std::fs::write(&path, jwks(&[&first])).unwrap();
    let source = format!(
        "{{issuer: '{ISSUER}', audiences: [iot-api], jwks: {{file: '{}'}}, principalType: user, algorithms: [ES384]}}",
        path.display()
    );
    let server = start(policy_with(&source), KeyOptions::default()).await;
    wait_kids(&server, ISSUER, &["f1"]).await;
    let token = bearer(&first.sign(&alice_claims()));
    assert_eq!(ext_authz(&server, &[("authorization", &token)]).await.0, 0);

    // An editor's write-then-rename with a new key.
    let second = TestKey::ec("f2", Algorithm::ES384);
    let tmp = dir.path().join(".jwks.json.tmp");
    std::fs::write(&tmp, jwks(&[&second])).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    wait_kids(&server, ISSUER, &["f2"]).await;
    let token2 = bearer(&second.sign(&alice_claims()));
    assert_eq!(ext_authz(&server, &[("authorization", &token2)]).await.0, 0);
    assert_eq!(
        ext_authz(&server, &[("authorization", &token)]).await.1,
        Some(401)
    );

    // A broken file keeps the last good keys.
    std::fs::write(&path, "{not json").unwrap();
    wait_error(
        &server,
        ISSUER,
        invalid_keys(|e| matches!(e, JwksError::NotJwks(_))),
    )
    .await;
    assert_eq!(ext_authz(&server, &[("authorization", &token2)]).await.0, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn several_issuers_each_verify_their_own_tokens() {
    let a = TestKey::ec("a", Algorithm::ES256);
    let b = TestKey::rsa("b", Algorithm::RS256);
    let keys_a = KeyServer::start(&[&a]).await;
    let keys_b = KeyServer::start(&[&b]).await;
    let issuer_b = "https://partner.example.com/";
    // The second source goes after the first one in the demo's list.
    let snapshot = policy_with_sources(&[
        format!("bearer: {}", url_source(ISSUER, &keys_a.url())),
        format!("bearer: {}", url_source(issuer_b, &keys_b.url())),
    ]);
    let server = start(snapshot, KeyOptions::default()).await;
    wait_kids(&server, ISSUER, &["a"]).await;
    wait_kids(&server, issuer_b, &["b"]).await;
    let ta = bearer(&a.sign(&alice_claims()));
    let tb = bearer(&b.sign(&claims(issuer_b, "iot-api", ALICE, unix_now())));
    assert_eq!(ext_authz(&server, &[("authorization", &ta)]).await.0, 0);
    assert_eq!(ext_authz(&server, &[("authorization", &tb)]).await.0, 0);
    // A token claiming issuer B but signed with A's key fails B's check.
    let forged = bearer(&a.sign(&claims(issuer_b, "iot-api", ALICE, unix_now())));
    assert_eq!(
        ext_authz(&server, &[("authorization", &forged)]).await.1,
        Some(401)
    );
    let metrics = server.metrics().await;
    assert!(
        metrics.contains(&format!(
            "iot_authz_token_rejections_total{{issuer=\"{issuer_b}\",reason=\"unknown key\"}} 1"
        )),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn attacks_through_ext_authz_are_refused_without_echoing_the_token() {
    let key = TestKey::rsa("r1", Algorithm::RS256);
    let keys = KeyServer::start(&[&key]).await;
    let server = start(
        policy_with(&url_source(ISSUER, &keys.url())),
        KeyOptions::default(),
    )
    .await;
    wait_kids(&server, ISSUER, &["r1"]).await;
    let good = key.sign(&alice_claims());
    let none = raw_token(&json!({"alg": "none", "kid": "r1"}), &alice_claims(), b"");
    let confused = crate::support::jwt::hs256("r1", &key.public_der, &alice_claims());
    let mut wrong_aud = alice_claims();
    wrong_aud["aud"] = json!("another-api");
    let mut future = alice_claims();
    future["nbf"] = json!(unix_now() + 3600);
    let mut wrong_iss = alice_claims();
    wrong_iss["iss"] = json!("https://evil.example.com/");
    // A comma would read as two principals in the header the upstream receives.
    let mut comma = alice_claims();
    comma["sub"] = json!("mallory,user:alice@contoso.com");
    let oversized = format!("{good}{}", "A".repeat(20_000));
    for (name, token, reason) in [
        ("alg none", none, "algorithm not allowed"),
        (
            "HS256 with the public key",
            confused,
            "algorithm not allowed",
        ),
        ("wrong audience", key.sign(&wrong_aud), "wrong audience"),
        ("not yet valid", key.sign(&future), "not yet valid"),
        ("wrong issuer", key.sign(&wrong_iss), "wrong issuer"),
        ("comma in the subject", key.sign(&comma), "no principal"),
        (
            "truncated",
            good[..good.len() - 20].to_owned(),
            "bad signature",
        ),
        ("oversized", oversized, "too large"),
    ] {
        let (code, status, body) = ext_authz(&server, &[("authorization", &bearer(&token))]).await;
        assert_eq!((code, status), (16, Some(401)), "{name}");
        assert!(!body.contains(&token[..40]), "{name}: {body}");
        let metrics = server.metrics().await;
        assert!(
            metrics.contains(&format!("reason=\"{reason}\"")),
            "{name}: {metrics}"
        );
    }
    // A second Authorization header: ambiguous, so malformed (400), never the first one.
    let (code, status, _) = ext_authz(
        &server,
        &[("authorization", &format!("Bearer {good}, Bearer {good}x"))],
    )
    .await;
    assert_eq!((code, status), (7, Some(400)));
}

#[tokio::test(flavor = "multi_thread")]
async fn decision_log_names_the_rejection_not_the_token() {
    let key = TestKey::ec("k1", Algorithm::ES256);
    let keys = KeyServer::start(&[&key]).await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("decisions.jsonl");
    crypto();
    let options = AppOptions {
        decision_log: Some((
            iot_authz::server::decision_log::LogTarget::File(log.clone()),
            1.0,
        )),
        ..AppOptions::default()
    };
    let server =
        TestServer::start_options(policy_with(&url_source(ISSUER, &keys.url())), &options).await;
    wait_kids(&server, ISSUER, &["k1"]).await;
    let expired = key.sign(&claims(ISSUER, "iot-api", ALICE, unix_now() - 7200));
    assert_eq!(
        ext_authz(&server, &[("authorization", &bearer(&expired))])
            .await
            .1,
        Some(401)
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let line = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(line) = text.lines().find(|l| l.contains("noIdentity")) {
            break line.to_owned();
        }
        assert!(std::time::Instant::now() < deadline, "no decision line");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let record: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(record["tokenRejection"], "expired");
    assert!(!line.contains(&expired[..40]));
    assert!(!line.contains(ALICE));
}

/// Real nginx `auth_request` and real Envoy HTTP ext_authz (no `jwt_authn`) in front.
async fn through_proxy(envoy: bool) {
    let key = TestKey::ec("k1", Algorithm::ES256);
    let keys = KeyServer::start(&[&key]).await;
    let server = start(
        policy_with(&url_source(ISSUER, &keys.url())),
        KeyOptions::default(),
    )
    .await;
    wait_kids(&server, ISSUER, &["k1"]).await;
    let upstream = Upstream::start().await;
    let (base, _proxy): (String, Box<dyn std::any::Any>) = if envoy {
        let e = Envoy::start_http(&server, upstream.addr).await;
        (e.url(""), Box::new(e))
    } else {
        let n = Nginx::start(server.http, upstream.addr).await;
        (n.url(""), Box::new(n))
    };
    let client = reqwest::Client::new();
    let token = key.sign(&alice_claims());
    let resp = client
        .get(format!("{base}{LINE_1}"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let seen = upstream.requests();
    assert_eq!(
        seen[0].headers["x-iotauthz-principal"],
        ["user:alice@contoso.com"]
    );

    let expired = key.sign(&claims(ISSUER, "iot-api", ALICE, unix_now() - 7200));
    let resp = client
        .get(format!("{base}{LINE_1}"))
        .bearer_auth(&expired)
        .header("x-iotauthz-principal", "user:alice@contoso.com")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let text = resp.text().await.unwrap();
    let body: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert_eq!(body["reason"], "noIdentity");
    assert!(!text.contains(&expired[..40]));
    assert_eq!(upstream.requests().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn nginx_auth_request_verifies_bearer_tokens() {
    through_proxy(false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn envoy_http_ext_authz_without_jwt_authn_verifies_bearer_tokens() {
    through_proxy(true).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_issuer_removed_from_the_policy_stops_being_fetched() {
    let key = TestKey::ec("k1", Algorithm::ES256);
    let keys = KeyServer::start(&[&key]).await;
    let options = KeyOptions {
        default_refresh: Duration::from_millis(10),
        min_refresh: Duration::from_millis(10),
        ..KeyOptions::default()
    };
    let server = start(policy_with(&url_source(ISSUER, &keys.url())), options).await;
    wait_kids(&server, ISSUER, &["k1"]).await;
    server.app.install(crate::support::demo());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !server.app.keys.status().is_empty() {
        assert!(std::time::Instant::now() < deadline, "issuer still known");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let hits = keys.jwks_hits();
    // Twenty refresh intervals: a task still running would fetch again and again.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        keys.jwks_hits() <= hits + 1,
        "{} > {hits} + 1",
        keys.jwks_hits()
    );
}

/// A present token is judged by the first bearer source reached, even when another source
/// (a forgeable header) sits between two issuers' sources, and a credential that looks
/// like a bearer token but is not exactly `Bearer <token>` stops the search too: neither
/// lets the header behind it speak for the caller.
#[tokio::test(flavor = "multi_thread")]
async fn a_present_token_is_never_skipped_for_a_source_behind_it() {
    let a = TestKey::ec("a", Algorithm::ES256);
    let b = TestKey::rsa("b", Algorithm::RS256);
    let keys_a = KeyServer::start(&[&a]).await;
    let keys_b = KeyServer::start(&[&b]).await;
    let issuer_b = "https://partner.example.com/";
    let snapshot = policy_with_sources(&[
        format!("bearer: {}", url_source(ISSUER, &keys_a.url())),
        "header: x-iotauthz-principal".to_owned(),
        format!("bearer: {}", url_source(issuer_b, &keys_b.url())),
    ]);
    let server = start(snapshot, KeyOptions::default()).await;
    wait_kids(&server, ISSUER, &["a"]).await;
    wait_kids(&server, issuer_b, &["b"]).await;
    let header = ("x-iotauthz-principal", "user:alice@contoso.com");
    // The header alone identifies (the policy trusts it), and a valid token of B too.
    assert_eq!(ext_authz(&server, &[header]).await.0, 0);
    let tb = b.sign(&claims(issuer_b, "iot-api", ALICE, unix_now()));
    assert_eq!(
        ext_authz(&server, &[("authorization", &bearer(&tb)), header])
            .await
            .0,
        0
    );
    // A token naming issuer B but signed with A's key, and an expired token of B: 401,
    // whatever the header behind the first source says.
    let forged = bearer(&a.sign(&claims(issuer_b, "iot-api", ALICE, unix_now())));
    let expired = bearer(&b.sign(&claims(issuer_b, "iot-api", ALICE, unix_now() - 7200)));
    for token in [&forged, &expired] {
        assert_eq!(
            ext_authz(&server, &[("authorization", token), header])
                .await
                .1,
            Some(401),
            "{token}"
        );
    }
    // Bearer-looking credentials that are not `Bearer <token>`: 401 too.
    let tab = format!("Bearer\t{tb}");
    for value in ["Bearer", "Bearer ", tab.as_str(), "bearer:xyz"] {
        assert_eq!(
            ext_authz(&server, &[("authorization", value), header])
                .await
                .1,
            Some(401),
            "{value:?}"
        );
    }
    // Another scheme is not a bearer token: the header behind decides.
    assert_eq!(
        ext_authz(
            &server,
            &[("authorization", "Basic YWxhZGRpbjpvcGVu"), header]
        )
        .await
        .0,
        0
    );
}
