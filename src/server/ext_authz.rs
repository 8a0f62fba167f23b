//! Envoy's external authorization API (`envoy.service.auth.v3.Authorization/Check`),
//! SPEC §6: canonicalise and map the request, identify the caller, evaluate.

use std::sync::Arc;

use envoy_types::ext_authz::v3::pb::{
    CheckRequest, CheckResponse, DeniedHttpResponse, HeaderAppendAction, HeaderValue,
    HeaderValueOption, HttpResponse, HttpStatus, OkHttpResponse,
};
use envoy_types::pb::envoy::service::auth::v3::attribute_context;
use envoy_types::pb::google::protobuf::{ListValue, Struct, Value as PbValue, value::Kind};
use envoy_types::pb::google::rpc;
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
    async fn check(
        &self,
        request: Request<CheckRequest>,
    ) -> Result<Response<CheckResponse>, Status> {
        let deadline = super::admin::call_deadline(request.metadata());
        let check = request.into_inner();
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
            && let Err(e) = crate::store::wait_for(&*self.app, token, deadline).await
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
            allow_response(&outcome, shadowed, &pairs, &decision_id, &snapshot.revision)
        } else {
            deny_response(&outcome, &decision_id, &snapshot.revision)
        };
        Ok(Response::new(response))
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

fn allow_response(
    outcome: &HttpDecision<'_>,
    shadowed: bool,
    client_headers: &[(String, String)],
    decision_id: &str,
    revision: &str,
) -> CheckResponse {
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
    CheckResponse {
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
        dynamic_metadata: Some(decision_metadata(outcome, decision_id, revision)),
    }
}

fn deny_response(outcome: &HttpDecision<'_>, decision_id: &str, revision: &str) -> CheckResponse {
    let code = match outcome.decision.reason {
        crate::policy::Reason::NoIdentity => UNAUTHENTICATED,
        _ => PERMISSION_DENIED,
    };
    CheckResponse {
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
        dynamic_metadata: Some(decision_metadata(outcome, decision_id, revision)),
    }
}

/// A request whose consistency token could not be honoured: 503 when this replica is
/// behind it, 400 when it is not a token.
fn token_refused(e: &crate::store::TokenError) -> CheckResponse {
    let (code, http, message) = match e {
        crate::store::TokenError::Behind(m) => (UNAVAILABLE, 503, m),
        crate::store::TokenError::Invalid(m) => (INVALID_ARGUMENT, 400, m),
    };
    CheckResponse {
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

/// The decision as Envoy dynamic metadata (for access logs and later filters).
fn decision_metadata(outcome: &HttpDecision<'_>, decision_id: &str, revision: &str) -> Struct {
    let string = |s: &str| PbValue {
        kind: Some(Kind::StringValue(s.to_owned())),
    };
    let mut fields = std::collections::HashMap::with_capacity(7);
    fields.insert(
        "allowed".to_owned(),
        PbValue {
            kind: Some(Kind::BoolValue(outcome.decision.allowed)),
        },
    );
    fields.insert("reason".to_owned(), string(outcome.decision.reason.kind()));
    fields.insert("decisionId".to_owned(), string(decision_id));
    fields.insert("revision".to_owned(), string(revision));
    for (key, value) in [
        ("principal", &outcome.principal),
        ("action", &outcome.action),
        ("scope", &outcome.scope),
    ] {
        if let Some(v) = value {
            fields.insert(key.to_owned(), string(v));
        }
    }
    Struct { fields }
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
