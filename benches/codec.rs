//! The cost of looking at an Envoy CheckRequest's shape before decoding it
//! (`proto::codec`'s `Admit`), against decoding it with prost: on a request as Envoy sends
//! it behind `deploy/envoy/envoy.yaml` (raw header map, a verified JWT's payload in
//! metadata) and on a larger one.
//!
//! `cargo bench --bench codec`

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use envoy_types::pb::envoy::config::core::v3::{HeaderMap, HeaderValue, Metadata};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Peer, Request};
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};
use envoy_types::pb::google::protobuf::{ListValue, Struct, Value, value::Kind};
use iot_authz::proto::codec::Admit;
use prost::Message;

fn string(s: &str) -> Value {
    Value {
        kind: Some(Kind::StringValue(s.to_owned())),
    }
}

/// A CheckRequest with `headers` headers and a JWT payload with `groups` groups.
fn request(headers: usize, groups: usize) -> Vec<u8> {
    let mut header_map: Vec<HeaderValue> = [
        (":authority", "api.example.com"),
        (
            ":path",
            "/subscriptions/s1/resourceGroups/factory/providers/Microsoft.Edge/targets/line-1",
        ),
        (":method", "GET"),
        (":scheme", "http"),
        ("user-agent", "curl/8.5.0"),
        ("accept", "*/*"),
        ("x-forwarded-proto", "http"),
        ("x-request-id", "2f6f1f0e-8c1d-4d59-9f7e-0b8f3f2a6c11"),
    ]
    .iter()
    .map(|(k, v)| HeaderValue {
        key: (*k).to_owned(),
        raw_value: v.as_bytes().to_vec(),
        ..Default::default()
    })
    .collect();
    header_map.extend((header_map.len()..headers).map(|i| HeaderValue {
        key: format!("x-extra-{i}"),
        raw_value: b"some value".to_vec(),
        ..Default::default()
    }));
    let payload = Struct {
        fields: [
            ("iss".to_owned(), string("https://issuer.iot-authz.example")),
            ("sub".to_owned(), string("alice@contoso.com")),
            ("aud".to_owned(), string("iot-authz-demo")),
            (
                "exp".to_owned(),
                Value {
                    kind: Some(Kind::NumberValue(1.9e9)),
                },
            ),
            (
                "groups".to_owned(),
                Value {
                    kind: Some(Kind::ListValue(ListValue {
                        values: (0..groups).map(|i| string(&format!("group-{i}"))).collect(),
                    })),
                },
            ),
        ]
        .into(),
    };
    let jwt = Struct {
        fields: [(
            "jwt_payload".to_owned(),
            Value {
                kind: Some(Kind::StructValue(payload)),
            },
        )]
        .into(),
    };
    CheckRequest {
        attributes: Some(AttributeContext {
            source: Some(Peer {
                principal: "spiffe://cluster.local/ns/default/sa/client".into(),
                ..Default::default()
            }),
            request: Some(Request {
                http: Some(HttpRequest {
                    id: "1234567890".into(),
                    method: "GET".into(),
                    path: "/subscriptions/s1/resourceGroups/factory/providers/Microsoft.Edge/targets/line-1".into(),
                    host: "api.example.com".into(),
                    scheme: "http".into(),
                    protocol: "HTTP/1.1".into(),
                    header_map: Some(HeaderMap {
                        headers: header_map,
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            metadata_context: Some(Metadata {
                filter_metadata: [("envoy.filters.http.jwt_authn".to_owned(), jwt)].into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
    .encode_to_vec()
}

fn bench(c: &mut Criterion) {
    for (name, headers, groups) in [("typical", 12, 3), ("large", 100, 200)] {
        let bytes = request(headers, groups);
        let mut group = c.benchmark_group(format!("envoy_check_{name}_{}B", bytes.len()));
        group.bench_function("admit", |b| {
            b.iter(|| CheckRequest::admit(black_box(&bytes)).is_ok())
        });
        group.bench_function("decode", |b| {
            b.iter(|| CheckRequest::decode(black_box(bytes.as_slice())).is_ok())
        });
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
