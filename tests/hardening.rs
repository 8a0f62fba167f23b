//! Regression tests for the second hardening round: each attack found against the release
//! binary behind the real Envoy and nginx, replayed through the real proxy where one is
//! involved.

use reqwest::StatusCode;
use serde_json::Value;

use crate::support::{Envoy, TestServer, Upstream, crypto, policy};

/// Dave may do anything under `/apps` except at `/apps/secret`; the scope comes from a
/// path capture on `/p/{id}` and from the `x-app-id` header on `/h`.
const SECRET_POLICY: &str = r"version: 1
roles: [{name: R, actions: ['x/*']}]
assignments:
  - {principal: 'user:dave', role: R, scope: /apps}
denyAssignments:
  - {name: no-secret, principals: ['user:dave'], actions: ['x/*'], scope: /apps/secret}
routes:
  - {methods: [GET], path: '/h', action: x/read, scope: '/apps/{header:x-app-id}'}
  - {methods: [GET], path: '/p/{id}', action: x/read, scope: '/apps/{id}'}
identity:
  sources:
    - header: x-iotauthz-principal
";

const DAVE: (&str, &str) = ("x-iotauthz-principal", "user:dave");

/// Spellings of `secret` (or of something that is not one plain segment) that a header
/// capture once let through to the upstream, raw.
const SECRET_SPELLINGS: [&str; 9] = [
    "secre%74",
    "%73ecret",
    "secret?x",
    "secret#x",
    "secret;v=1",
    "secret%00",
    "sec ret",
    "secret%2F",
    "SECRET",
];

/// A captured header value passes exactly the segment rules of a path capture: through
/// the real Envoy, no spelling of `secret` in `x-app-id` reaches the upstream, and the one
/// that decodes to it is denied by the deny assignment, as the same text in the path is.
#[tokio::test(flavor = "multi_thread")]
async fn a_header_capture_is_a_segment_like_a_path_capture() {
    crypto();
    let server = TestServer::start(policy(SECRET_POLICY)).await;
    let upstream = Upstream::start().await;
    let envoy = Envoy::start("envoy.yaml", server.grpc, upstream.addr, &[]).await;
    let client = reqwest::Client::new();
    let resp = client
        .get(envoy.url("/h"))
        .header(DAVE.0, DAVE.1)
        .header("x-app-id", "public")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(upstream.requests().len(), 1);
    for value in SECRET_SPELLINGS {
        let resp = client
            .get(envoy.url("/h"))
            .header(DAVE.0, DAVE.1)
            .header("x-app-id", value)
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let body: Value = resp.json().await.unwrap();
        assert!(
            status == StatusCode::FORBIDDEN || status == StatusCode::BAD_REQUEST,
            "{value}: {status} {body}"
        );
        if status == StatusCode::FORBIDDEN {
            let scope = body["scope"].as_str().unwrap();
            assert!(
                scope.eq_ignore_ascii_case("/apps/secret"),
                "{value}: {body}"
            );
            assert_eq!(body["reason"], "denyAssignment", "{value}: {body}");
        } else {
            assert_eq!(body["reason"], "malformed", "{value}: {body}");
        }
        // The same text in a path capture gets the same answer.
        if !value.contains(['?', '#', ' ']) {
            let path = client
                .get(envoy.url(&format!("/p/{value}")))
                .header(DAVE.0, DAVE.1)
                .send()
                .await
                .unwrap();
            assert_eq!(path.status(), status, "{value} in the path");
        }
    }
    assert_eq!(upstream.requests().len(), 1, "nothing else went upstream");
}
