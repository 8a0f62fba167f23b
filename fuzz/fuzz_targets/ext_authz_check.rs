//! The real Envoy ext_authz handler (`ExtAuthz::check`, SPEC §6) on the embedded demo
//! policy, driven with Envoy `CheckRequest`s built from an `arbitrary`-derived description:
//! method, path (one of the demo routes with its captures filled in, or raw), headers
//! (the `x-iotauthz-principal` identity header, `x-app-id`, `traceparent`, client-sent
//! `x-iotauthz-*` copies, anything else), the JWT claims Envoy's `jwt_authn` filter puts
//! in metadata, other metadata, and the mTLS peer principal.
//!
//! Inputs that start with `#text\n` are read instead as a readable description (this is
//! what the seed corpus uses; see `fuzz/README.md`):
//!
//! ```text
//! #text
//! GET /subscriptions/s1/resourceGroups/factory/providers/Microsoft.Edge/targets/line-1
//! header x-iotauthz-principal: user:alice@contoso.com
//! jwt {"sub": "carol@contoso.com", "groups": ["line-leads"]}
//! meta some.namespace {"k": 1}
//! peer spiffe://factory.example/line-1/plc-7
//! ```
//!
//! Checked:
//! - no panic, and the handler never fails (it always answers with a `CheckResponse`);
//! - the response status code is OK, PERMISSION_DENIED or UNAUTHENTICATED, and it is the
//!   one SPEC §6 gives for what `Snapshot::check_http` says about the same request (200 →
//!   OK; 400 and 403 → PERMISSION_DENIED; 401 → UNAUTHENTICATED), with that HTTP status;
//! - an OK response sets `x-iotauthz-action`, `-scope` and `-principal` to what
//!   `check_http` says, and removes every client-sent `x-iotauthz-*` header it does not
//!   overwrite;
//! - a denied response's body is JSON with the reason kind, without raw `<`, `>`, `&`;
//! - on a non-public route, the caller identified by an independent model of SPEC §5
//!   (header, then JWT subject and groups, then peer) is the principal `check_http`
//!   reports (or there is none and the answer is UNAUTHENTICATED), and the allow/deny and
//!   reason agree with the reference model of SPEC §3 (`tests/reference/mod.rs`) on the
//!   route's (action, scope).

#![no_main]

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use arbitrary::{Arbitrary, Unstructured};
use envoy_types::ext_authz::v3::pb::{CheckRequest, CheckResponse, HttpResponse};
use envoy_types::pb::envoy::config::core::v3::Metadata;
use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{
    HttpRequest as EnvoyHttpRequest, Peer, Request as EnvoyRequest,
};
use envoy_types::pb::google::protobuf::{ListValue, Struct, Value as PbValue, value::Kind};
use iot_authz::policy::queries::HttpRequest;
use iot_authz::policy::syntax;
use iot_authz::proto::envoy_auth::authorization_server::Authorization;
use iot_authz::server::App;
use iot_authz::server::ext_authz::ExtAuthz;
use iot_authz::live::{LoadedPolicy, PolicyState};
use libfuzzer_sys::fuzz_target;
use prost::Message;
use serde_json::Value;

#[path = "common/mod.rs"]
mod common;

#[allow(dead_code, clippy::all)]
#[path = "../../tests/reference/mod.rs"]
mod reference;

const OK: i32 = 0;
const PERMISSION_DENIED: i32 = 7;
const UNAUTHENTICATED: i32 = 16;

const JWT_NAMESPACE: &str = "envoy.filters.http.jwt_authn";
const JWT_KEY: &str = "jwt_payload";
const PRINCIPAL_HEADER: &str = "x-iotauthz-principal";

// ------------------------------------------------------------------------------------
// Dictionaries that steer the fuzzer to the demo policy's routes, principals and scopes.
// ------------------------------------------------------------------------------------

/// The demo policy's route paths; `{}` is one capture, `{...}` the rest.
const ROUTES: &[&str] = &[
    "/healthz",
    "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Edge/targets/{}",
    "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Edge/targets/{}/solutions/{...}",
    "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.IoTSecurity/sites/{}/alerts",
    "/iot.devices.v1.Devices/{}",
    "/subscriptions/{}",
    "/",
];

const SEGMENTS: &[&str] = &[
    "s1",
    "factory",
    "line-1",
    "line-2",
    "ot",
    "plant-7",
    "Reboot",
    "fleet",
    "s-1",
    "versions",
    "3",
    "LINE-1",
    "Factory",
    "S1",
    "s2",
    "%2e%2e",
    "%2E",
    "..",
    ".",
    "%2F",
    "%5C",
    "%25",
    "%00",
    "a;b",
    "%79es",
    "x*",
    "caf\u{e9}",
    "",
    "a%20b",
    "%7e",
    "a?b",
    "#frag",
    "\\",
    "*",
];

const PRINCIPALS: &[&str] = &[
    "user:alice@contoso.com",
    "user:carol@contoso.com",
    "user:dave@contoso.com",
    "user:erin@contoso.com",
    "device:spiffe://factory.example/line-1/plc-7",
    "group:factory-operators",
    "group:line-leads",
    "application:app-1",
    "servicePrincipal:ci-bot",
    "user:",
    "alice@contoso.com",
    "robot:x",
    "User:dave@contoso.com",
    "user:dave@contoso.com\u{7}",
    "*",
];

const SUBJECTS: &[&str] = &[
    "alice@contoso.com",
    "carol@contoso.com",
    "dave@contoso.com",
    "erin@contoso.com",
    "",
    "dave@contoso.com\u{1b}",
    "user:dave@contoso.com",
];

const GROUP_VALUES: &[&str] = &[
    "factory-operators",
    "line-leads",
    "group:line-leads",
    "",
    "factory-operators line-leads",
    "a\u{0}b",
];

const PEERS: &[&str] = &[
    "spiffe://factory.example/line-1/plc-7",
    "spiffe://factory.example/line-2/plc-1",
    "",
    "spiffe://factory.example/line-1/plc-7\u{0}",
];

fn pick<'a>(list: &[&'a str], i: u8) -> &'a str {
    list[usize::from(i) % list.len()]
}

// ------------------------------------------------------------------------------------
// The description.
// ------------------------------------------------------------------------------------

#[derive(Arbitrary, Debug)]
enum Method {
    Get,
    Head,
    Put,
    Patch,
    Delete,
    Post,
    Options,
    Raw(String),
}

#[derive(Arbitrary, Debug, Clone)]
enum Seg {
    Known(u8),
    Raw(String),
}

impl Seg {
    fn text(&self) -> String {
        match self {
            Self::Known(i) => pick(SEGMENTS, *i).to_owned(),
            Self::Raw(s) => s.clone(),
        }
    }
}

#[derive(Arbitrary, Debug)]
enum PathSpec {
    /// One of [`ROUTES`] with its captures filled in from `segs`.
    Route {
        route: u8,
        segs: Vec<Seg>,
        extra: Vec<Seg>,
        trailing_slash: bool,
        query: Option<String>,
        flip_case: bool,
    },
    Raw(String),
}

#[derive(Arbitrary, Debug)]
enum Who {
    Known(u8),
    Raw(String),
}

#[derive(Arbitrary, Debug, Clone)]
enum Claim {
    Subject(u8),
    Group(u8),
    Str(String),
    Num(f64),
    Bool(bool),
    Null,
    List(Vec<Claim>),
    Object(Vec<(String, Claim)>),
}

impl Claim {
    fn as_string(&self) -> Option<String> {
        match self {
            Self::Subject(i) => Some(pick(SUBJECTS, *i).to_owned()),
            Self::Group(i) => Some(pick(GROUP_VALUES, *i).to_owned()),
            Self::Str(s) => Some(s.clone()),
            _ => None,
        }
    }

    /// As Envoy would put it in a protobuf `Struct` (nesting cut at a depth Envoy's
    /// protobuf limits would never reach anyway).
    fn to_pb(&self, depth: usize) -> PbValue {
        let kind = if depth > 8 {
            Kind::NullValue(0)
        } else {
            match self {
                Self::Num(n) => Kind::NumberValue(*n),
                Self::Bool(b) => Kind::BoolValue(*b),
                Self::Null => Kind::NullValue(0),
                Self::List(items) => Kind::ListValue(ListValue {
                    values: items.iter().map(|c| c.to_pb(depth + 1)).collect(),
                }),
                Self::Object(fields) => Kind::StructValue(Struct {
                    fields: fields
                        .iter()
                        .map(|(k, v)| (k.clone(), v.to_pb(depth + 1)))
                        .collect(),
                }),
                other => Kind::StringValue(other.as_string().unwrap_or_default()),
            }
        };
        PbValue { kind: Some(kind) }
    }
}

#[derive(Arbitrary, Debug)]
struct Jwt {
    /// `None`: the demo policy's `envoy.filters.http.jwt_authn`.
    namespace: Option<String>,
    /// `None`: `jwt_payload`.
    key: Option<String>,
    sub: Option<Claim>,
    groups: Option<Claim>,
    other: Vec<(String, Claim)>,
}

#[derive(Arbitrary, Debug)]
enum Traceparent {
    Valid {
        trace: [u8; 16],
        span: [u8; 8],
        flags: u8,
    },
    Raw(String),
}

#[derive(Arbitrary, Debug)]
enum PeerSpec {
    Known(u8),
    Raw(String),
}

#[derive(Arbitrary, Debug, Default)]
struct Input {
    method: Option<Method>,
    lowercase_method: bool,
    path: Option<PathSpec>,
    principal: Option<Who>,
    app_id: Option<Seg>,
    traceparent: Option<Traceparent>,
    /// Client-sent `x-iotauthz-{name}` headers that must never reach the upstream.
    spoofed: Vec<(String, String)>,
    headers: Vec<(String, String)>,
    jwt: Option<Jwt>,
    metadata: Vec<(String, Vec<(String, Claim)>)>,
    peer: Option<PeerSpec>,
}

// ------------------------------------------------------------------------------------
// The readable form of the seeds.
// ------------------------------------------------------------------------------------

fn claim_from_json(v: &Value) -> Claim {
    match v {
        Value::Null => Claim::Null,
        Value::Bool(b) => Claim::Bool(*b),
        Value::Number(n) => Claim::Num(n.as_f64().unwrap_or(0.0)),
        Value::String(s) => Claim::Str(s.clone()),
        Value::Array(a) => Claim::List(a.iter().map(claim_from_json).collect()),
        Value::Object(o) => Claim::Object(
            o.iter()
                .map(|(k, v)| (k.clone(), claim_from_json(v)))
                .collect(),
        ),
    }
}

fn fields_from_json(text: &str) -> Vec<(String, Claim)> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(o)) => o
            .iter()
            .map(|(k, v)| (k.clone(), claim_from_json(v)))
            .collect(),
        _ => Vec::new(),
    }
}

fn parse_text(text: &str) -> Input {
    let mut input = Input::default();
    let mut lines = text.split('\n');
    let first = lines.next().unwrap_or_default();
    let (method, path) = first.split_once(' ').unwrap_or((first, ""));
    input.method = Some(Method::Raw(method.to_owned()));
    input.path = Some(PathSpec::Raw(path.to_owned()));
    for line in lines {
        let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
        match word {
            "header" => {
                if let Some((k, v)) = rest.split_once(':') {
                    let v = v.strip_prefix(' ').unwrap_or(v);
                    input.headers.push((k.to_owned(), v.to_owned()));
                }
            }
            "jwt" => {
                let mut jwt = Jwt {
                    namespace: None,
                    key: None,
                    sub: None,
                    groups: None,
                    other: Vec::new(),
                };
                for (k, v) in fields_from_json(rest) {
                    match k.as_str() {
                        "sub" => jwt.sub = Some(v),
                        "groups" => jwt.groups = Some(v),
                        _ => jwt.other.push((k, v)),
                    }
                }
                input.jwt = Some(jwt);
            }
            "meta" => {
                let (ns, json) = rest.split_once(' ').unwrap_or((rest, "{}"));
                input.metadata.push((ns.to_owned(), fields_from_json(json)));
            }
            "peer" => input.peer = Some(PeerSpec::Raw(rest.to_owned())),
            _ => {}
        }
    }
    input
}

// ------------------------------------------------------------------------------------
// From the description to an Envoy CheckRequest.
// ------------------------------------------------------------------------------------

fn method_text(input: &Input) -> String {
    let m = match &input.method {
        None | Some(Method::Get) => "GET".to_owned(),
        Some(Method::Head) => "HEAD".into(),
        Some(Method::Put) => "PUT".into(),
        Some(Method::Patch) => "PATCH".into(),
        Some(Method::Delete) => "DELETE".into(),
        Some(Method::Post) => "POST".into(),
        Some(Method::Options) => "OPTIONS".into(),
        Some(Method::Raw(s)) => s.clone(),
    };
    if input.lowercase_method {
        m.to_ascii_lowercase()
    } else {
        m
    }
}

fn path_text(spec: &Option<PathSpec>) -> String {
    match spec {
        None => "/".to_owned(),
        Some(PathSpec::Raw(s)) => s.clone(),
        Some(PathSpec::Route {
            route,
            segs,
            extra,
            trailing_slash,
            query,
            flip_case,
        }) => {
            let mut supply = segs.iter().map(Seg::text);
            let mut parts: Vec<String> = Vec::new();
            for seg in pick(ROUTES, *route).split('/').skip(1) {
                match seg {
                    "{}" => parts.push(supply.next().unwrap_or_else(|| "x".into())),
                    "{...}" => {
                        parts.push(supply.next().unwrap_or_else(|| "x".into()));
                        parts.extend(supply.by_ref());
                    }
                    s => parts.push(s.to_owned()),
                }
            }
            parts.extend(extra.iter().map(Seg::text));
            let mut path = format!("/{}", parts.join("/"));
            if path == "//" {
                path = "/".into();
            }
            if *trailing_slash {
                path.push('/');
            }
            if *flip_case {
                path = path
                    .chars()
                    .map(|c| {
                        if c.is_ascii_lowercase() {
                            c.to_ascii_uppercase()
                        } else {
                            c.to_ascii_lowercase()
                        }
                    })
                    .collect();
            }
            if let Some(q) = query {
                path.push('?');
                path.push_str(q);
            }
            path
        }
    }
}

/// Envoy's view: lowercase header names, one value each.
fn headers_of(input: &Input) -> HashMap<String, String> {
    let mut headers = HashMap::new();
    for (k, v) in &input.headers {
        headers.insert(k.to_ascii_lowercase(), v.clone());
    }
    for (k, v) in &input.spoofed {
        headers.insert(format!("x-iotauthz-{}", k.to_ascii_lowercase()), v.clone());
    }
    if let Some(who) = &input.principal {
        let value = match who {
            Who::Known(i) => pick(PRINCIPALS, *i).to_owned(),
            Who::Raw(s) => s.clone(),
        };
        headers.insert(PRINCIPAL_HEADER.to_owned(), value);
    }
    if let Some(app) = &input.app_id {
        headers.insert("x-app-id".to_owned(), app.text());
    }
    match &input.traceparent {
        Some(Traceparent::Valid { trace, span, flags }) => {
            let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
            headers.insert(
                "traceparent".into(),
                format!("00-{}-{}-{flags:02x}", hex(trace), hex(span)),
            );
        }
        Some(Traceparent::Raw(s)) => {
            headers.insert("traceparent".into(), s.clone());
        }
        None => {}
    }
    headers
}

/// Metadata namespaces → fields (a protobuf `Struct` keeps the last of duplicate keys).
fn metadata_of(input: &Input) -> Option<HashMap<String, HashMap<String, Claim>>> {
    if input.jwt.is_none() && input.metadata.is_empty() {
        return None;
    }
    let mut out: HashMap<String, HashMap<String, Claim>> = HashMap::new();
    for (ns, fields) in &input.metadata {
        out.insert(ns.clone(), fields.iter().cloned().collect());
    }
    if let Some(jwt) = &input.jwt {
        let mut payload: Vec<(String, Claim)> = jwt.other.clone();
        if let Some(sub) = &jwt.sub {
            payload.push(("sub".into(), sub.clone()));
        }
        if let Some(groups) = &jwt.groups {
            payload.push(("groups".into(), groups.clone()));
        }
        let ns = jwt
            .namespace
            .clone()
            .unwrap_or_else(|| JWT_NAMESPACE.into());
        let key = jwt.key.clone().unwrap_or_else(|| JWT_KEY.into());
        out.entry(ns)
            .or_default()
            .insert(key, Claim::Object(payload));
    }
    Some(out)
}

fn peer_of(input: &Input) -> String {
    match &input.peer {
        None => String::new(),
        Some(PeerSpec::Known(i)) => pick(PEERS, *i).to_owned(),
        Some(PeerSpec::Raw(s)) => s.clone(),
    }
}

// ------------------------------------------------------------------------------------
// SPEC §5 identity, written independently for the demo policy's sources: the header
// `x-iotauthz-principal`, then the JWT claims (`sub` as a user, `groups` as groups), then
// the peer certificate (as a device). The first source that yields a valid id wins.
// ------------------------------------------------------------------------------------

/// A header's value as the decision reads it: Envoy joins repeated lines with commas, so
/// the comma-separated copies (without surrounding spaces and tabs) must all agree;
/// `Err` when they do not (the request is malformed).
fn model_header_value(value: &str) -> Result<&str, ()> {
    let mut copies = value.split(',').map(|c| c.trim_matches([' ', '\t']));
    let first = copies.next().unwrap_or_default();
    if copies.all(|c| c == first) {
        Ok(first)
    } else {
        Err(())
    }
}

fn model_identity(
    headers: &HashMap<String, String>,
    metadata: &Option<HashMap<String, HashMap<String, Claim>>>,
    peer: &str,
) -> Option<(String, Vec<String>)> {
    if let Some(Ok(v)) = headers.get(PRINCIPAL_HEADER).map(|v| model_header_value(v)) {
        if common::is_principal(v) {
            return Some((v.to_owned(), Vec::new()));
        }
    }
    let payload = metadata
        .as_ref()
        .and_then(|m| m.get(JWT_NAMESPACE))
        .and_then(|ns| ns.get(JWT_KEY));
    if let Some(Claim::Object(fields)) = payload {
        // A Struct keeps the last of duplicate keys.
        let field = |name: &str| fields.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v);
        if let Some(sub) = field("sub").and_then(Claim::as_string) {
            let principal = format!("user:{sub}");
            // A principal made from a claim never holds a comma (it is forwarded in a
            // header where a comma separates values).
            if !sub.contains(',') && common::is_principal(&principal) {
                let values: Vec<String> = match field("groups") {
                    Some(Claim::List(items)) => items.iter().filter_map(Claim::as_string).collect(),
                    Some(c) => c
                        .as_string()
                        .map(|s| s.split_whitespace().map(str::to_owned).collect())
                        .unwrap_or_default(),
                    None => Vec::new(),
                };
                let groups = values
                    .into_iter()
                    .map(|g| format!("group:{g}"))
                    .filter(|g| common::is_principal(g))
                    .collect();
                return Some((principal, groups));
            }
        }
    }
    let principal = format!("device:{peer}");
    (!peer.is_empty() && !peer.contains(',') && common::is_principal(&principal))
        .then_some((principal, Vec::new()))
}

// ------------------------------------------------------------------------------------
// The harness: one runtime, one app on the demo policy.
// ------------------------------------------------------------------------------------

struct Harness {
    runtime: tokio::runtime::Runtime,
    service: ExtAuthz,
    policy: Arc<LoadedPolicy>,
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let snapshot = common::compile_demo();
        let state = Arc::new(PolicyState::with_snapshot(snapshot));
        let policy = state.current().expect("a policy is loaded");
        let app = Arc::new(App::new(state));
        Harness {
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a tokio runtime"),
            service: ExtAuthz::new(app),
            policy,
        }
    })
}

fn run(input: &Input) {
    let h = harness();
    let snapshot = &h.policy.snapshot;
    let method = method_text(input);
    let path = path_text(&input.path);
    let headers = headers_of(input);
    let metadata = metadata_of(input);
    let peer = peer_of(input);

    let request = CheckRequest {
        attributes: Some(AttributeContext {
            source: Some(Peer {
                principal: peer.clone(),
                ..Default::default()
            }),
            request: Some(EnvoyRequest {
                http: Some(EnvoyHttpRequest {
                    method: method.clone(),
                    path: path.clone(),
                    headers: headers.clone(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            metadata_context: metadata.as_ref().map(|m| Metadata {
                filter_metadata: m
                    .iter()
                    .map(|(ns, fields)| {
                        let fields = fields
                            .iter()
                            .map(|(k, v)| (k.clone(), v.to_pb(0)))
                            .collect();
                        (ns.clone(), Struct { fields })
                    })
                    .collect(),
                ..Default::default()
            }),
            ..Default::default()
        }),
    };
    // The same request as the library's own HTTP query, for the expected answer. The
    // metadata goes through the handler's conversion, so build it the same way here.
    let metadata_json = request
        .attributes
        .as_ref()
        .and_then(|a| a.metadata_context.as_ref())
        .map(|m| {
            Value::Object(
                m.filter_metadata
                    .iter()
                    .map(|(ns, s)| (ns.clone(), struct_json(s)))
                    .collect(),
            )
        });

    // The handler's answer is encoded by hand (see `CheckAnswer`): read it back as Envoy
    // would, so the wire form is checked too.
    let answer = h
        .runtime
        .block_on(h.service.check(tonic::Request::new(request)))
        .unwrap_or_else(|status| panic!("the handler failed: {status:?}"))
        .into_inner();
    let bytes = answer.encode_to_vec();
    assert_eq!(bytes.len(), answer.encoded_len(), "encoded_len disagrees");
    let response = CheckResponse::decode(bytes.as_slice())
        .unwrap_or_else(|e| panic!("the answer does not decode as a CheckResponse: {e}"));
    let now = syntax::now();

    let header_list: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let expected = snapshot
        .check_http(&HttpRequest {
            method: &method,
            path: &path,
            headers: &header_list,
            principal: None,
            groups: &[],
            metadata: metadata_json.as_ref(),
            peer_principal: (!peer.is_empty()).then_some(peer.as_str()),
            verifier: None,
            at: now,
        })
        .expect("check_http without an explicit principal never fails");
    let context = || {
        format!(
            "{method:?} {path:?} headers {headers:?} peer {peer:?} metadata {metadata_json:?}: expected {expected:?}"
        )
    };

    let code = response.status.as_ref().map_or(-1, |s| s.code);
    assert!(
        matches!(code, OK | PERMISSION_DENIED | UNAUTHENTICATED),
        "status code {code}: {}",
        context()
    );
    let expected_code = match expected.status() {
        200 => OK,
        401 => UNAUTHENTICATED,
        400 | 403 => PERMISSION_DENIED,
        other => panic!("check_http status {other}: {}", context()),
    };
    assert_eq!(
        code,
        expected_code,
        "ext_authz and check_http disagree: {}",
        context()
    );

    let metadata_field = |name: &str| {
        response
            .dynamic_metadata
            .as_ref()
            .and_then(|s| s.fields.get(name))
            .and_then(|v| v.kind.clone())
    };
    assert_eq!(
        metadata_field("allowed"),
        Some(Kind::BoolValue(code == OK)),
        "dynamic metadata `allowed`: {}",
        context()
    );
    assert_eq!(
        metadata_field("reason"),
        Some(Kind::StringValue(
            expected.decision.reason.kind().to_owned()
        )),
        "dynamic metadata `reason`: {}",
        context()
    );

    match &response.http_response {
        Some(HttpResponse::OkResponse(ok)) => {
            assert_eq!(code, OK, "an OK response with status {code}: {}", context());
            let set: HashMap<&str, &str> = ok
                .headers
                .iter()
                .filter_map(|h| h.header.as_ref())
                .map(|h| (h.key.as_str(), h.value.as_str()))
                .collect();
            for (name, want) in [
                ("x-iotauthz-action", &expected.action),
                ("x-iotauthz-scope", &expected.scope),
                ("x-iotauthz-principal", &expected.principal),
            ] {
                assert_eq!(
                    set.get(name).copied(),
                    want.as_deref(),
                    "header {name} on allow: {}",
                    context()
                );
            }
            for name in headers.keys() {
                if name.to_ascii_lowercase().starts_with("x-iotauthz-") {
                    assert!(
                        ok.headers_to_remove.iter().any(|r| r == name)
                            || set.keys().any(|s| s.eq_ignore_ascii_case(name)),
                        "client-sent {name} goes upstream: {}",
                        context()
                    );
                }
            }
        }
        Some(HttpResponse::DeniedResponse(denied)) => {
            assert_ne!(code, OK, "a denied response with status OK: {}", context());
            assert_eq!(
                denied.status.as_ref().map(|s| s.code),
                Some(i32::from(expected.status())),
                "HTTP status of the denial: {}",
                context()
            );
            for raw in ['<', '>', '&'] {
                assert!(
                    !denied.body.contains(raw),
                    "deny body carries a raw {raw:?}: {} ({})",
                    denied.body,
                    context()
                );
            }
            let body: Value = serde_json::from_str(&denied.body)
                .unwrap_or_else(|e| panic!("deny body is not JSON ({e}): {}", denied.body));
            assert_eq!(
                body["reason"].as_str(),
                Some(expected.decision.reason.kind()),
                "deny body reason: {}",
                context()
            );
        }
        other => panic!("unexpected http_response {other:?}: {}", context()),
    }

    // The independent models: SPEC §5 identity and the SPEC §3 reference evaluation.
    let (Some(route), Some(action), Some(scope)) = (
        expected.route,
        expected.action.as_deref(),
        expected.scope.as_deref(),
    ) else {
        return;
    };
    if route.public {
        assert_eq!(code, OK, "public route denied: {}", context());
        return;
    }
    // Copies of the identity header that disagree make the request malformed (400).
    if let Some(Err(())) = headers.get(PRINCIPAL_HEADER).map(|v| model_header_value(v)) {
        assert_eq!(
            (code, expected.status()),
            (PERMISSION_DENIED, 400),
            "conflicting identity header copies, yet: {}",
            context()
        );
        return;
    }
    match model_identity(&headers, &metadata, &peer) {
        None => assert_eq!(code, UNAUTHENTICATED, "no identity, yet: {}", context()),
        Some((principal, groups)) => {
            assert_eq!(
                expected.principal.as_deref(),
                Some(principal.as_str()),
                "identity differs from SPEC §5 model (groups {groups:?}): {}",
                context()
            );
            let reference = reference::check(
                common::demo_documents(),
                &reference::Request {
                    principal: &principal,
                    groups: &groups,
                    action,
                    data: route.data_action,
                    scope,
                    at: now,
                },
            );
            assert_eq!(
                code == OK,
                reference.allowed,
                "reference model says allowed={} ({}), groups {groups:?}: {}",
                reference.allowed,
                reference.kind,
                context()
            );
            assert_eq!(
                expected.decision.reason.kind(),
                reference.kind,
                "reason differs from the reference model: {}",
                context()
            );
        }
    }
}

/// Envoy metadata `Struct` → JSON, for the expected answer (written here, not shared with
/// the handler: numbers that JSON cannot hold become null).
fn struct_json(s: &Struct) -> Value {
    Value::Object(
        s.fields
            .iter()
            .map(|(k, v)| (k.clone(), pb_json(v)))
            .collect(),
    )
}

fn pb_json(v: &PbValue) -> Value {
    match &v.kind {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::NumberValue(n)) => {
            serde_json::Number::from_f64(*n).map_or(Value::Null, Value::Number)
        }
        Some(Kind::StringValue(s)) => Value::String(s.clone()),
        Some(Kind::BoolValue(b)) => Value::Bool(*b),
        Some(Kind::StructValue(s)) => struct_json(s),
        Some(Kind::ListValue(l)) => Value::Array(l.values.iter().map(pb_json).collect()),
    }
}

// Parse and compile the demo policy before fuzzing starts (seconds in an unoptimised
// build), so that it counts against no input's timeout.
fuzz_target!(init: {
    harness();
    common::demo_documents();
}, |data: &[u8]| {
    let input = match data.strip_prefix(b"#text\n") {
        Some(text) => parse_text(&String::from_utf8_lossy(text)),
        None => match Input::arbitrary_take_rest(Unstructured::new(data)) {
            Ok(input) => input,
            Err(_) => return,
        },
    };
    run(&input);
});
