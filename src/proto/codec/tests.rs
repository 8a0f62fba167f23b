use super::*;

#[test]
fn repeated_groups_and_headers_are_refused_before_decoding() {
    let check = |n: usize| {
        pb::CheckRequest {
            groups: vec![String::new(); n],
            ..Default::default()
        }
        .encode_to_vec()
    };
    assert!(pb::CheckRequest::admit(&check(MAX_GROUPS)).is_ok());
    assert!(pb::CheckRequest::admit(&check(MAX_GROUPS + 1)).is_err());
    let http = |headers: usize, groups: usize| {
        pb::CheckHttpRequest {
            headers: (0..headers)
                .map(|i| (i.to_string(), String::new()))
                .collect(),
            groups: vec![String::new(); groups],
            ..Default::default()
        }
        .encode_to_vec()
    };
    assert!(pb::CheckHttpRequest::admit(&http(MAX_HEADERS, MAX_GROUPS)).is_ok());
    assert!(pb::CheckHttpRequest::admit(&http(MAX_HEADERS + 1, 0)).is_err());
    assert!(pb::CheckHttpRequest::admit(&http(0, MAX_GROUPS + 1)).is_err());
    let list = pb::ListPermissionsRequest {
        groups: vec![String::new(); MAX_GROUPS + 1],
        ..Default::default()
    };
    assert!(pb::ListPermissionsRequest::admit(&list.encode_to_vec()).is_err());
}

mod envoy {
    pub use envoy_types::pb::envoy::config::core::v3::{HeaderMap, HeaderValue, Metadata};
    pub use envoy_types::pb::envoy::service::auth::v3::attribute_context::{
        HttpRequest, Peer, Request,
    };
    pub use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};
    pub use envoy_types::pb::google::protobuf::{ListValue, Struct, Value, value::Kind};
}

fn envoy_check(headers: usize, metadata: envoy::Struct) -> Vec<u8> {
    let header = |i: usize| envoy::HeaderValue {
        key: format!("x-h{i}"),
        raw_value: b"v".to_vec(),
        ..Default::default()
    };
    envoy::CheckRequest {
        attributes: Some(envoy::AttributeContext {
            source: Some(envoy::Peer {
                principal: "spiffe://example/client".into(),
                labels: [("app".to_owned(), "web".to_owned())].into(),
                ..Default::default()
            }),
            request: Some(envoy::Request {
                http: Some(envoy::HttpRequest {
                    method: "GET".into(),
                    path: "/p/a".into(),
                    header_map: Some(envoy::HeaderMap {
                        headers: (0..headers).map(header).collect(),
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            context_extensions: [("k".to_owned(), "v".to_owned())].into(),
            metadata_context: Some(envoy::Metadata {
                filter_metadata: [("envoy.filters.http.jwt_authn".to_owned(), metadata)].into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
    .encode_to_vec()
}

fn list(values: Vec<envoy::Value>) -> envoy::Value {
    envoy::Value {
        kind: Some(envoy::Kind::ListValue(envoy::ListValue { values })),
    }
}

/// `levels` Struct / ListValue levels, the namespace's Struct the first.
fn nested(levels: usize) -> envoy::Struct {
    let mut value = envoy::Value {
        kind: Some(envoy::Kind::StringValue("deep".into())),
    };
    for _ in 1..levels {
        value = list(vec![value]);
    }
    envoy::Struct {
        fields: [("claims".to_owned(), value)].into(),
    }
}

fn admit_envoy(bytes: &[u8]) -> Result<(), Status> {
    envoy::CheckRequest::admit(bytes)
}

#[test]
fn envoy_check_requests_are_walked_before_decoding() {
    // A request as Envoy sends it passes, up to every limit.
    let payload = envoy::Struct {
        fields: [
            ("sub".to_owned(), list(vec![])),
            (
                "groups".to_owned(),
                list(vec![envoy::Value::default(); 100]),
            ),
        ]
        .into(),
    };
    assert!(admit_envoy(&envoy_check(20, payload)).is_ok());
    assert!(admit_envoy(&envoy_check(MAX_HEADERS, nested(MAX_METADATA_DEPTH))).is_ok());
    // One namespace, one context extension, one label, the struct field: 4 entries.
    let wide = |n: usize| envoy::Struct {
        fields: [("groups".to_owned(), list(vec![envoy::Value::default(); n]))].into(),
    };
    assert!(admit_envoy(&envoy_check(0, wide(MAX_ENTRIES - 4))).is_ok());

    let refused = |bytes: Vec<u8>, why: &str| {
        let e = admit_envoy(&bytes).unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.message().contains(why), "{e:?}");
    };
    refused(envoy_check(0, wide(MAX_ENTRIES - 3)), "metadata values");
    refused(envoy_check(MAX_HEADERS + 1, nested(1)), "headers");
    refused(
        envoy_check(0, nested(MAX_METADATA_DEPTH + 1)),
        "nests deeper",
    );
    // The `headers` map counts as the header map does.
    let map = envoy::CheckRequest {
        attributes: Some(envoy::AttributeContext {
            request: Some(envoy::Request {
                http: Some(envoy::HttpRequest {
                    headers: (0..=MAX_HEADERS)
                        .map(|i| (i.to_string(), String::new()))
                        .collect(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    };
    refused(map.encode_to_vec(), "headers");
    // The route's metadata is walked as the request's is.
    let route = envoy::CheckRequest {
        attributes: Some(envoy::AttributeContext {
            route_metadata_context: Some(envoy::Metadata {
                filter_metadata: [("ns".to_owned(), nested(MAX_METADATA_DEPTH + 1))].into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
    };
    refused(route.encode_to_vec(), "nests deeper");
    // Malformed bytes, and a group (which prost would skip) in front of the rest.
    refused(vec![0x0a, 0x05, 0x01], "cannot be walked");
    let mut grouped = vec![0x13, 0x14];
    grouped.extend(envoy_check(1, nested(2)));
    refused(grouped, "cannot be walked");
}

/// The deepest metadata admitted still decodes (prost stops at 100 nested messages; a
/// `Struct` level is three of them).
#[test]
fn the_deepest_admitted_metadata_decodes() {
    let mut value = envoy::Value {
        kind: Some(envoy::Kind::StringValue("deep".into())),
    };
    for _ in 1..MAX_METADATA_DEPTH {
        value = envoy::Value {
            kind: Some(envoy::Kind::StructValue(envoy::Struct {
                fields: [("a".to_owned(), value)].into(),
            })),
        };
    }
    let deepest = envoy::Struct {
        fields: [("a".to_owned(), value)].into(),
    };
    let bytes = envoy_check(1, deepest);
    assert!(admit_envoy(&bytes).is_ok());
    assert!(envoy::CheckRequest::decode(bytes.as_slice()).is_ok());
}

/// The blow-up that was measured: a 4 MiB request of empty values in one ListValue
/// (two bytes each, about 2 million) is refused from its bytes.
#[test]
fn a_huge_list_value_is_refused_undecoded() {
    let bytes = envoy_check(0, {
        let mut s = envoy::Struct::default();
        s.fields
            .insert("x".into(), list(vec![envoy::Value::default(); 2_000_000]));
        s
    });
    assert!(bytes.len() > 4_000_000);
    let e = admit_envoy(&bytes).unwrap_err();
    assert!(e.message().contains("more than 50000"), "{e:?}");
}

#[test]
fn fields_are_counted_on_the_wire() {
    let batch = |n: usize| pb::BatchCheckRequest {
        checks: (0..n)
            .map(|i| pb::CheckRequest {
                principal: format!("user:{i}"),
                groups: vec!["group:g".into()],
                at: Some(prost_types::Timestamp {
                    seconds: 5,
                    nanos: 7,
                }),
                data_action: true,
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    for n in [0, 1, 1000, 1001, MAX_DECODED_BATCH, MAX_DECODED_BATCH + 1] {
        let bytes = batch(n).encode_to_vec();
        assert_eq!(count_field(&bytes, 1), Some(n));
        let admitted = pb::BatchCheckRequest::admit(&bytes).is_ok();
        assert_eq!(admitted, n <= MAX_DECODED_BATCH, "{n}");
    }
    // Two million empty checks are refused from their bytes alone.
    let empty = [0x0a, 0x00].repeat(2_000_000);
    let e = pb::BatchCheckRequest::admit(&empty).unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("batch has 2000000 checks"), "{e:?}");
    // Bytes the walk cannot follow are refused, not counted short: an empty group
    // (prost would skip it) in front of two million empty checks.
    assert_eq!(count_field(&[0x0a, 0x05, 0x01], 1), None);
    assert_eq!(count_field(&[0xff; 11], 1), None);
    let mut grouped = vec![0x13, 0x14];
    grouped.extend([0x0a, 0x00].repeat(2_000_000));
    assert_eq!(count_field(&grouped, 1), None);
    assert!(pb::BatchCheckRequest::admit(&grouped).is_err());
}
