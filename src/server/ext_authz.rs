//! Envoy's external authorization API (`envoy.service.auth.v3.Authorization/Check`),
//! SPEC §6: canonicalise and map the request, identify the caller, evaluate.

use std::sync::Arc;

use envoy_types::ext_authz::v3::pb::{
    CheckRequest, DeniedHttpResponse, HeaderAppendAction, HeaderValue, HeaderValueOption,
    HttpResponse, HttpStatus, OkHttpResponse,
};
use envoy_types::pb::envoy::service::auth::v3::attribute_context;
use envoy_types::pb::google::protobuf::{ListValue, Struct, Value as PbValue, value::Kind};
use envoy_types::pb::google::rpc;
use prost::bytes::{Buf, BufMut};
use prost::encoding::{
    DecodeContext, WireType, encode_key, encode_varint, encoded_len_varint, key_len,
};
use serde_json::Value;
use tonic::{Request, Response, Status};

use super::response;
use super::{App, RequestContext};
use crate::policy::queries::{HttpDecision, HttpRequest};
use crate::policy::syntax;
use crate::proto::envoy_auth::authorization_server::Authorization;

/// The ext_authz gRPC service.
#[derive(Debug, Clone)]
pub struct ExtAuthz {
    app: Arc<App>,
}

impl ExtAuthz {
    pub fn new(app: Arc<App>) -> Self {
        Self { app }
    }
}

/// gRPC codes in `CheckResponse.status`.
const OK: i32 = 0;
const PERMISSION_DENIED: i32 = 7;
const UNAUTHENTICATED: i32 = 16;
const INVALID_ARGUMENT: i32 = 3;
const UNAVAILABLE: i32 = 14;

#[tonic::async_trait]
impl Authorization for ExtAuthz {
    async fn check(&self, request: Request<CheckRequest>) -> Result<Response<CheckAnswer>, Status> {
        let (grpc_metadata, _, check) = request.into_parts();
        let attributes = check.attributes.unwrap_or_default();
        let mut http = attributes.request.and_then(|r| r.http).unwrap_or_default();
        let pairs = header_pairs(&mut http);
        let header = |k: &str| {
            pairs
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(k))
                .map(|(_, v)| v.as_str())
        };
        // A consistency token (SPEC §10): answer from a state at least that new, or 503.
        if let Some(token) = header(crate::store::CONSISTENCY_HEADER)
            && let Err(e) = crate::store::wait_for(
                &*self.app,
                token,
                super::admin::call_deadline(&grpc_metadata),
            )
            .await
        {
            return Ok(Response::new(token_refused(&e)));
        }
        let Some(policy) = self.app.policy.current() else {
            return Err(Status::unavailable("no policy loaded"));
        };
        let snapshot = &policy.snapshot;
        let ctx = RequestContext::begin("ext_authz", header);
        // Only the namespaces an identity source reads are copied into JSON: the rest of
        // Envoy's metadata, however large, is never looked at.
        let metadata = attributes.metadata_context.map(|m| {
            Value::Object(
                m.filter_metadata
                    .into_iter()
                    .filter(|(namespace, _)| snapshot.identity.reads_namespace(namespace))
                    .map(|(namespace, s)| (namespace, struct_to_json(&s)))
                    .collect(),
            )
        });
        let peer = attributes.source.map(|s| s.principal).unwrap_or_default();
        let headers: Vec<(&str, &str)> = pairs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let decision_id = self.app.ids.next();
        let outcome = self
            .app
            .check_with_keys(|| {
                snapshot.check_http_with(
                    &HttpRequest {
                        method: &http.method,
                        path: &http.path,
                        headers: &headers,
                        principal: None,
                        groups: &[],
                        metadata: metadata.as_ref(),
                        peer_principal: (!peer.is_empty()).then_some(peer.as_str()),
                        verifier: Some(self.app.verifier()),
                        at: syntax::now(),
                    },
                    |_, r| self.app.decide(&policy, r),
                )
            })
            .await;
        // Only an explicit principal can make check_http fail; ext_authz never passes one.
        let outcome = outcome.map_err(|e| Status::internal(e.to_string()))?;
        let shadowed = self
            .app
            .conclude_http(&ctx, &outcome, &decision_id, &snapshot.revision);
        let response = if outcome.decision.allowed || shadowed {
            allow_response(&outcome, shadowed, &pairs)
        } else {
            deny_response(&outcome, &decision_id)
        };
        Ok(Response::new(CheckAnswer {
            dynamic_metadata: Some(DecisionMetadata::new(
                outcome,
                decision_id,
                &snapshot.revision,
            )),
            ..response
        }))
    }
}

/// A header value that is not UTF-8, as the decision sees it: a control character, which
/// no principal, group or route capture accepts (as in the HTTP modes).
const UNREADABLE: &str = "\u{1}";

/// The request's headers as `(name, value)` pairs. With `encode_raw_headers` (every
/// shipped Envoy config sets it) Envoy sends `header_map`, each copy with its raw bytes:
/// a value that is not UTF-8 becomes [`UNREADABLE`] (Envoy's `headers` map would have
/// rewritten those bytes to `!`, which a capture accepts). Otherwise the `headers` map.
fn header_pairs(http: &mut attribute_context::HttpRequest) -> Vec<(String, String)> {
    match http.header_map.take() {
        Some(map) if !map.headers.is_empty() => map
            .headers
            .into_iter()
            .map(|h| {
                let value = if h.raw_value.is_empty() {
                    h.value
                } else {
                    String::from_utf8(h.raw_value).unwrap_or_else(|_| UNREADABLE.to_owned())
                };
                (h.key, value)
            })
            .collect(),
        _ => std::mem::take(&mut http.headers).into_iter().collect(),
    }
}

fn header(key: &str, value: &str, action: HeaderAppendAction) -> HeaderValueOption {
    #[allow(deprecated)]
    HeaderValueOption {
        header: Some(HeaderValue {
            key: key.to_owned(),
            value: value.to_owned(),
            raw_value: Vec::new(),
        }),
        append: None,
        append_action: action.into(),
        keep_empty_value: false,
    }
}

/// The answer to an allowed request, without its dynamic metadata.
fn allow_response(
    outcome: &HttpDecision<'_>,
    shadowed: bool,
    client_headers: &[(String, String)],
) -> CheckAnswer {
    let set = response::allow_headers(outcome, shadowed);
    let headers = set
        .iter()
        .map(|(k, v)| header(k, v, HeaderAppendAction::OverwriteIfExistsOrAdd))
        .collect();
    // Remove every client-sent x-iotauthz-* header we do not overwrite, and every name a
    // framework could read as one (`x_iotauthz_principal`).
    let mut headers_to_remove: Vec<String> = client_headers
        .iter()
        .map(|(k, _)| k)
        .filter(|k| response::is_decision_header(k))
        .filter(|k| !set.iter().any(|(s, _)| s.eq_ignore_ascii_case(k)))
        .cloned()
        .collect();
    headers_to_remove.sort_unstable();
    headers_to_remove.dedup();
    CheckAnswer {
        status: Some(rpc::Status {
            code: OK,
            message: String::new(),
            details: Vec::new(),
        }),
        http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
            headers,
            headers_to_remove,
            ..Default::default()
        })),
        dynamic_metadata: None,
    }
}

/// The answer to a denied request, without its dynamic metadata.
fn deny_response(outcome: &HttpDecision<'_>, decision_id: &str) -> CheckAnswer {
    let code = match outcome.decision.reason {
        crate::policy::Reason::NoIdentity => UNAUTHENTICATED,
        _ => PERMISSION_DENIED,
    };
    CheckAnswer {
        status: Some(rpc::Status {
            code,
            message: outcome.decision.reason.kind().to_owned(),
            details: Vec::new(),
        }),
        http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
            status: Some(HttpStatus {
                code: i32::from(outcome.status()),
            }),
            headers: vec![
                header(
                    "content-type",
                    "application/json",
                    HeaderAppendAction::OverwriteIfExistsOrAdd,
                ),
                header(
                    "x-iotauthz-decision-id",
                    decision_id,
                    HeaderAppendAction::OverwriteIfExistsOrAdd,
                ),
            ],
            body: response::deny_body(outcome, decision_id),
        })),
        dynamic_metadata: None,
    }
}

/// A request whose consistency token could not be honoured: 503 when this replica is
/// behind it, 400 when it is not a token.
fn token_refused(e: &crate::store::TokenError) -> CheckAnswer {
    let (code, http, message) = match e {
        crate::store::TokenError::Behind(m) => (UNAVAILABLE, 503, m),
        crate::store::TokenError::Invalid(m) => (INVALID_ARGUMENT, 400, m),
    };
    CheckAnswer {
        status: Some(rpc::Status {
            code,
            message: message.clone(),
            details: Vec::new(),
        }),
        http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
            status: Some(HttpStatus { code: http }),
            headers: vec![header(
                "content-type",
                "application/json",
                HeaderAppendAction::OverwriteIfExistsOrAdd,
            )],
            body: serde_json::json!({"error": message}).to_string(),
        })),
        dynamic_metadata: None,
    }
}

/// The answer to one Check: Envoy's `CheckResponse` on the wire (field for field, so
/// Envoy and every client decode it as one), with the decision's dynamic metadata written
/// straight from the decision. As a `google.protobuf.Struct` it would be a hash map of
/// seven owned keys and values, built, hashed, encoded and dropped on every request: more
/// than the rest of the answer together.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CheckAnswer {
    /// `CheckResponse.status`.
    pub status: Option<rpc::Status>,
    /// `CheckResponse.http_response` (`denied_response`, `ok_response`, `error_response`).
    pub http_response: Option<HttpResponse>,
    /// `CheckResponse.dynamic_metadata`.
    pub dynamic_metadata: Option<DecisionMetadata>,
}

/// The decision as Envoy dynamic metadata (for access logs and later filters): the
/// `Struct` `{allowed, reason, decisionId, revision, principal?, action?, scope?}`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DecisionMetadata {
    pub allowed: bool,
    pub reason: &'static str,
    pub decision_id: String,
    pub revision: String,
    pub principal: Option<String>,
    pub action: Option<String>,
    pub scope: Option<String>,
}

/// One value of [`DecisionMetadata`]: `google.protobuf.Value`'s `bool_value` (field 4) or
/// `string_value` (field 3).
#[derive(Clone, Copy)]
enum MetadataValue<'a> {
    Bool(bool),
    Text(&'a str),
}

impl MetadataValue<'_> {
    /// The encoded `Value` message, without its key and length.
    fn len(self) -> usize {
        match self {
            Self::Bool(_) => key_len(4) + 1,
            Self::Text(s) => text_len(3, s),
        }
    }

    fn encode(self, buf: &mut impl BufMut) {
        match self {
            Self::Bool(b) => {
                encode_key(4, WireType::Varint, buf);
                encode_varint(u64::from(b), buf);
            }
            Self::Text(s) => put_text(3, s, buf),
        }
    }
}

/// A length-delimited field of `s`: its key, length and bytes.
fn text_len(tag: u32, s: &str) -> usize {
    key_len(tag) + encoded_len_varint(s.len() as u64) + s.len()
}

fn put_text(tag: u32, s: &str, buf: &mut impl BufMut) {
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(s.len() as u64, buf);
    buf.put_slice(s.as_bytes());
}

impl DecisionMetadata {
    fn new(outcome: HttpDecision<'_>, decision_id: String, revision: &str) -> Self {
        Self {
            allowed: outcome.decision.allowed,
            reason: outcome.decision.reason.kind(),
            decision_id,
            revision: revision.to_owned(),
            principal: outcome.principal,
            action: outcome.action,
            scope: outcome.scope,
        }
    }

    /// The entries of the `Struct`'s `fields` map, in a fixed order.
    fn entries(&self) -> impl Iterator<Item = (&'static str, MetadataValue<'_>)> {
        fn text(v: &Option<String>) -> Option<MetadataValue<'_>> {
            v.as_deref().map(MetadataValue::Text)
        }
        [
            ("allowed", Some(MetadataValue::Bool(self.allowed))),
            ("reason", Some(MetadataValue::Text(self.reason))),
            ("decisionId", Some(MetadataValue::Text(&self.decision_id))),
            ("revision", Some(MetadataValue::Text(&self.revision))),
            ("principal", text(&self.principal)),
            ("action", text(&self.action)),
            ("scope", text(&self.scope)),
        ]
        .into_iter()
        .filter_map(|(k, v)| Some((k, v?)))
    }

    /// One map entry message (`key` = 1, `value` = 2), without its key and length.
    fn entry_len(key: &str, value: MetadataValue<'_>) -> usize {
        let value = value.len();
        text_len(1, key) + key_len(2) + encoded_len_varint(value as u64) + value
    }

    /// The `Struct` message, without its key and length: every entry as field 1.
    fn len(&self) -> usize {
        self.entries()
            .map(|(k, v)| {
                let entry = Self::entry_len(k, v);
                key_len(1) + encoded_len_varint(entry as u64) + entry
            })
            .sum()
    }

    fn encode(&self, buf: &mut impl BufMut) {
        for (key, value) in self.entries() {
            encode_key(1, WireType::LengthDelimited, buf);
            encode_varint(Self::entry_len(key, value) as u64, buf);
            put_text(1, key, buf);
            encode_key(2, WireType::LengthDelimited, buf);
            encode_varint(value.len() as u64, buf);
            value.encode(buf);
        }
    }
}

/// `CheckResponse`'s field numbers.
const STATUS_FIELD: u32 = 1;
const DYNAMIC_METADATA_FIELD: u32 = 4;

impl prost::Message for CheckAnswer {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        if let Some(status) = &self.status {
            prost::encoding::message::encode(STATUS_FIELD, status, buf);
        }
        if let Some(metadata) = &self.dynamic_metadata {
            encode_key(DYNAMIC_METADATA_FIELD, WireType::LengthDelimited, buf);
            encode_varint(metadata.len() as u64, buf);
            metadata.encode(buf);
        }
        if let Some(http) = &self.http_response {
            http.encode(buf);
        }
    }

    /// The server only sends answers: one read back (never done) keeps no field.
    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        prost::encoding::skip_field(wire_type, tag, buf, ctx)
    }

    fn encoded_len(&self) -> usize {
        let status = self.status.as_ref().map_or(0, |s| {
            prost::encoding::message::encoded_len(STATUS_FIELD, s)
        });
        let metadata = self.dynamic_metadata.as_ref().map_or(0, |m| {
            let len = m.len();
            key_len(DYNAMIC_METADATA_FIELD) + encoded_len_varint(len as u64) + len
        });
        let http = self
            .http_response
            .as_ref()
            .map_or(0, HttpResponse::encoded_len);
        status + metadata + http
    }

    fn clear(&mut self) {
        *self = Self::default();
    }
}

/// Converts Envoy metadata (a protobuf `Struct`) to JSON for the identity sources.
fn struct_to_json(s: &Struct) -> Value {
    Value::Object(
        s.fields
            .iter()
            .map(|(k, v)| (k.clone(), value_to_json(v)))
            .collect(),
    )
}

fn value_to_json(v: &PbValue) -> Value {
    match &v.kind {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::NumberValue(n)) => {
            serde_json::Number::from_f64(*n).map_or(Value::Null, Value::Number)
        }
        Some(Kind::StringValue(s)) => Value::String(s.clone()),
        Some(Kind::BoolValue(b)) => Value::Bool(*b),
        Some(Kind::StructValue(s)) => struct_to_json(s),
        Some(Kind::ListValue(ListValue { values })) => {
            Value::Array(values.iter().map(value_to_json).collect())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::ext_authz::v3::pb::CheckResponse;
    use prost::Message;

    fn text(s: &str) -> PbValue {
        PbValue {
            kind: Some(Kind::StringValue(s.to_owned())),
        }
    }

    /// The hand-written answer decodes as the `CheckResponse` prost would have encoded
    /// from the same fields, the metadata as the `Struct` it stands for.
    #[test]
    fn an_answer_decodes_as_the_check_response_it_stands_for() {
        let ok = HttpResponse::OkResponse(OkHttpResponse {
            headers: vec![header(
                "x-iotauthz-principal",
                "user:alice@contoso.com",
                HeaderAppendAction::OverwriteIfExistsOrAdd,
            )],
            headers_to_remove: vec!["x-iotauthz-stale".to_owned()],
            ..Default::default()
        });
        let status = rpc::Status {
            code: OK,
            message: String::new(),
            details: Vec::new(),
        };
        // A long value, so lengths take two bytes.
        let scope = format!("/subscriptions/s1/{}", "x".repeat(300));
        let full = DecisionMetadata {
            allowed: true,
            reason: "roleAssignment",
            decision_id: "0123456789abcdef0123456789abcdef".to_owned(),
            revision: "rev-1".to_owned(),
            principal: Some("user:alice@contoso.com".to_owned()),
            action: Some("Microsoft.Edge/targets/read".to_owned()),
            scope: Some(scope.clone()),
        };
        let answer = CheckAnswer {
            status: Some(status.clone()),
            http_response: Some(ok.clone()),
            dynamic_metadata: Some(full),
        };
        let bytes = answer.encode_to_vec();
        assert_eq!(bytes.len(), answer.encoded_len());
        let decoded = CheckResponse::decode(bytes.as_slice()).unwrap();
        let fields = [
            (
                "allowed",
                PbValue {
                    kind: Some(Kind::BoolValue(true)),
                },
            ),
            ("reason", text("roleAssignment")),
            ("decisionId", text("0123456789abcdef0123456789abcdef")),
            ("revision", text("rev-1")),
            ("principal", text("user:alice@contoso.com")),
            ("action", text("Microsoft.Edge/targets/read")),
            ("scope", text(&scope)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        assert_eq!(
            decoded,
            CheckResponse {
                status: Some(status.clone()),
                http_response: Some(ok),
                dynamic_metadata: Some(Struct { fields }),
            }
        );

        // A denial with no principal, action or scope: those keys are absent, and
        // `allowed` is there as `false`.
        let denied = CheckAnswer {
            status: Some(rpc::Status {
                code: PERMISSION_DENIED,
                message: "noRoute".to_owned(),
                details: Vec::new(),
            }),
            http_response: None,
            dynamic_metadata: Some(DecisionMetadata {
                allowed: false,
                reason: "noRoute",
                decision_id: "ff".to_owned(),
                revision: String::new(),
                ..Default::default()
            }),
        };
        let bytes = denied.encode_to_vec();
        assert_eq!(bytes.len(), denied.encoded_len());
        let decoded = CheckResponse::decode(bytes.as_slice()).unwrap();
        let fields = decoded.dynamic_metadata.unwrap().fields;
        let mut keys: Vec<&str> = fields.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["allowed", "decisionId", "reason", "revision"]);
        assert_eq!(
            fields["allowed"].kind,
            Some(Kind::BoolValue(false)),
            "a false `allowed` is sent, not left out"
        );
        assert_eq!(
            fields["revision"].kind,
            Some(Kind::StringValue(String::new()))
        );
        assert_eq!(decoded.status.unwrap().code, PERMISSION_DENIED);

        // No metadata (a refused consistency token): no field 4 at all.
        let bare = CheckAnswer {
            status: Some(status),
            ..Default::default()
        };
        let decoded = CheckResponse::decode(bare.encode_to_vec().as_slice()).unwrap();
        assert_eq!(decoded.dynamic_metadata, None);
    }
}
