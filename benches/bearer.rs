//! Server CPU per ext_authz check with a bearer token, against the same check with a
//! header identity, in one run: the real `ExtAuthz::check` handler called in-process on a
//! current-thread runtime (no network, so the figure is the server's own work per request:
//! decoding aside, route, identity, evaluation, response and metrics).
//!
//! - `header`: `x-iotauthz-principal` (the bearer source finds no token and lets the header
//!   source answer).
//! - `bearer_cached/{ES256,RS256}`: the same token every time, answered by the verification
//!   cache.
//! - `bearer_first_sight/{ES256,RS256}`: the verification cache off, so every request checks
//!   the signature and claims, as a token seen for the first time does.
//!
//! `cargo bench --bench bearer`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../tests/support/jwt.rs"]
mod jwt;

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use envoy_types::ext_authz::v3::pb::CheckRequest;
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, attribute_context};
use iot_authz::live::PolicyState;
use iot_authz::policy::{SourceDocument, compile_sources};
use iot_authz::proto::envoy_auth::authorization_server::Authorization;
use iot_authz::server::ext_authz::ExtAuthz;
use iot_authz::server::{App, AppOptions};
use iot_authz::sources::jwks::KeyOptions;
use jsonwebtoken::Algorithm;
use jwt::{TestKey, claims, jwks, unix_now};

const LINE_1: &str =
    "/subscriptions/s1/resourceGroups/factory/providers/Microsoft.Edge/targets/line-1";
const ISSUER: &str = "https://login.example.com/";

fn request(header: (&str, &str)) -> CheckRequest {
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(attribute_context::Request {
                http: Some(attribute_context::HttpRequest {
                    method: "GET".into(),
                    path: LINE_1.into(),
                    headers: [
                        (header.0.to_owned(), header.1.to_owned()),
                        ("user-agent".to_owned(), "bench".to_owned()),
                        (":authority".to_owned(), "iot.example.com".to_owned()),
                    ]
                    .into_iter()
                    .collect(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

fn service(
    rt: &tokio::runtime::Runtime,
    jwks_file: &std::path::Path,
    cache_capacity: u64,
) -> ExtAuthz {
    let bearer = format!(
        "{{issuer: '{ISSUER}', audiences: [iot-api], jwks: {{file: '{}'}}, principalType: user, algorithms: [ES256, RS256]}}",
        jwks_file.display()
    );
    let sources: Vec<SourceDocument> = iot_authz::demo::sources()
        .into_iter()
        .map(|d| {
            let text = String::from_utf8(d.bytes.clone()).expect("UTF-8");
            let text = text.replace(
                "\nidentity:\n  sources:\n",
                &format!("\nidentity:\n  sources:\n    - bearer: {bearer}\n"),
            );
            SourceDocument::new(d.name.clone(), text.into_bytes())
        })
        .collect();
    let snapshot = compile_sources(&sources).expect("policy");
    let app = Arc::new(
        App::with_options(
            Arc::new(PolicyState::with_snapshot(snapshot)),
            &AppOptions {
                keys: KeyOptions {
                    cache_capacity,
                    ..KeyOptions::default()
                },
                ..AppOptions::default()
            },
        )
        .expect("app"),
    );
    rt.block_on(async {
        app.keys.follow(&app.policy);
        app.keys.first_fetches(Duration::from_secs(10)).await;
    });
    ExtAuthz::new(app)
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let ec = TestKey::ec("ec", Algorithm::ES256);
    let rsa = TestKey::rsa("rsa", Algorithm::RS256);
    let path = dir.path().join("jwks.json");
    std::fs::write(&path, jwks(&[&ec, &rsa])).expect("jwks");
    let now = unix_now();
    let tokens = [
        (
            "ES256",
            format!(
                "Bearer {}",
                ec.sign(&claims(ISSUER, "iot-api", "alice@contoso.com", now))
            ),
        ),
        (
            "RS256",
            format!(
                "Bearer {}",
                rsa.sign(&claims(ISSUER, "iot-api", "alice@contoso.com", now))
            ),
        ),
    ];
    let cached = service(&rt, &path, 100_000);
    let uncached = service(&rt, &path, 0);
    let mut group = c.benchmark_group("ext_authz");
    let run = |svc: &ExtAuthz, req: &CheckRequest| {
        let response = rt
            .block_on(svc.check(tonic::Request::new(req.clone())))
            .expect("check");
        let code = response.get_ref().status.as_ref().map_or(-1, |s| s.code);
        assert_eq!(code, 0, "the benchmark's requests are allowed");
        black_box(response);
    };
    let header = request(("x-iotauthz-principal", "user:alice@contoso.com"));
    group.bench_function("header", |b| b.iter(|| run(&cached, &header)));
    for (alg, token) in &tokens {
        let req = request(("authorization", token));
        group.bench_function(format!("bearer_cached/{alg}"), |b| {
            b.iter(|| run(&cached, &req))
        });
        group.bench_function(format!("bearer_first_sight/{alg}"), |b| {
            b.iter(|| run(&uncached, &req))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
