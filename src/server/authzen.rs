//! The OpenID AuthZEN Authorization API 1.0 (SPEC §12) on the HTTP listener: access
//! evaluation, access evaluations (with `options.evaluations_semantic`), subject, resource
//! and action search with paging, and the `/.well-known/authzen-configuration` metadata.
//!
//! Errors follow the specification's HTTPS binding: a status code (400 for anything wrong
//! with the request, 503 while no policy is loaded) and an error message string as the body
//! (`text/plain`). A deny is never an error: it is `200` with `"decision": false`. The
//! request's shape is checked first, for the whole payload (a required attribute missing or
//! of the wrong type anywhere is a 400 naming it); what an evaluation's values mean (an
//! unknown subject type, an invalid scope or principal) is that evaluation's decision,
//! `false` with a reason in its `context`, never an error for the batch. Unknown fields are
//! ignored, as the specification requires. Text from the request reaches messages only
//! through `syntax::escape`.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::{App, RequestContext};
use crate::live::LoadedPolicy;
use crate::policy::queries::{HttpDecision, HttpRequest};
use crate::policy::syntax::{self, Instant, escape};
use crate::policy::{CheckRequest, Decision, Reason, RequestError};

/// The default paths (the specification's Table "API Endpoint Overview").
pub const EVALUATION_PATH: &str = "/access/v1/evaluation";
pub const EVALUATIONS_PATH: &str = "/access/v1/evaluations";
pub const SEARCH_SUBJECT_PATH: &str = "/access/v1/search/subject";
pub const SEARCH_RESOURCE_PATH: &str = "/access/v1/search/resource";
pub const SEARCH_ACTION_PATH: &str = "/access/v1/search/action";
pub const CONFIGURATION_PATH: &str = "/.well-known/authzen-configuration";

/// The largest request body read (the native API's default message size).
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;
/// The most evaluations one request may carry (as BatchCheck).
pub const MAX_EVALUATIONS: usize = crate::proto::codec::MAX_BATCH;
/// The most results one search page holds, and the page size without `page.limit`.
pub const MAX_PAGE: usize = 1000;

/// An error for the whole request: its status and message.
struct Failure(StatusCode, String);

impl Failure {
    fn bad(message: impl Into<String>) -> Self {
        Self(StatusCode::BAD_REQUEST, message.into())
    }
}

type Outcome = Result<Value, Failure>;

/// One evaluation, its shape checked.
#[derive(Debug, Clone)]
struct Evaluation {
    subject_type: String,
    subject_id: String,
    groups: Vec<String>,
    action: String,
    resource_type: String,
    resource_id: String,
    data_action: bool,
    time: Option<String>,
}

// ---------------------------------------------------------------------------------------
// Handlers.
// ---------------------------------------------------------------------------------------

pub async fn evaluation(State(app): State<Arc<App>>, req: Request) -> Response<Body> {
    handle(&app, "authzen_evaluation", req, |app, ctx, policy, body| {
        let evaluation = parse_evaluation(&body, &Map::new(), "")?;
        evaluate(app, ctx, policy, &evaluation)
    })
    .await
}

pub async fn evaluations(State(app): State<Arc<App>>, req: Request) -> Response<Body> {
    handle(&app, "authzen_evaluations", req, evaluate_many).await
}

pub async fn search_subject(State(app): State<Arc<App>>, req: Request) -> Response<Body> {
    handle_blocking(
        &app,
        "authzen_search_subject",
        req,
        search_subjects,
        grants_nothing,
    )
    .await
}

pub async fn search_resource(State(app): State<Arc<App>>, req: Request) -> Response<Body> {
    handle_blocking(
        &app,
        "authzen_search_resource",
        req,
        search_resources,
        grants_nothing,
    )
    .await
}

pub async fn search_action(State(app): State<Arc<App>>, req: Request) -> Response<Body> {
    handle_blocking(
        &app,
        "authzen_search_action",
        req,
        search_actions,
        |_, _| false,
    )
    .await
}

/// The PDP metadata: the identifier is this server as the caller reached it (the `Host`
/// header; the scheme from `X-Forwarded-Proto` when a proxy terminates TLS, else `http`).
pub async fn configuration(req: Request) -> Response<Body> {
    let headers = req.headers();
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            !h.is_empty()
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
        })
        .unwrap_or("localhost");
    let scheme = match headers
        .get("x-forwarded-proto")
        .and_then(|h| h.to_str().ok())
    {
        Some(p) if p.eq_ignore_ascii_case("https") => "https",
        _ => "http",
    };
    let base = format!("{scheme}://{host}");
    let body = json!({
        "policy_decision_point": base,
        "access_evaluation_endpoint": format!("{base}{EVALUATION_PATH}"),
        "access_evaluations_endpoint": format!("{base}{EVALUATIONS_PATH}"),
        "search_subject_endpoint": format!("{base}{SEARCH_SUBJECT_PATH}"),
        "search_resource_endpoint": format!("{base}{SEARCH_RESOURCE_PATH}"),
        "search_action_endpoint": format!("{base}{SEARCH_ACTION_PATH}"),
    });
    json_response(StatusCode::OK, body.to_string(), headers)
}

// ---------------------------------------------------------------------------------------
// The HTTPS binding: content type, body, JSON, errors, X-Request-ID.
// ---------------------------------------------------------------------------------------

/// Reads and checks the request, then answers with `work` on the request's task.
async fn handle(
    app: &Arc<App>,
    api: &'static str,
    req: Request,
    work: impl FnOnce(&App, &RequestContext, &LoadedPolicy, Map<String, Value>) -> Outcome,
) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, MAX_BODY_BYTES).await;
    let headers = parts.headers;
    let lookup = |k: &str| headers.get(k).and_then(|v| v.to_str().ok());
    let ctx = RequestContext::begin(api, lookup);
    let result = read(app, &headers, body)
        .await
        .and_then(|(policy, object)| {
            let outcome = work(app, &ctx, &policy, object);
            outcome.map(|value| value.to_string())
        });
    respond(app, api, result, &headers)
}

/// [`handle`] with the work in the server's query pool: searches walk every principal (WhoCan),
/// the principal's assignments and the deny assignments (Plan), or the action universe.
/// A request `at_once` says will not walk the policy is answered on the request's task.
async fn handle_blocking(
    app: &Arc<App>,
    api: &'static str,
    req: Request,
    work: fn(&LoadedPolicy, &Map<String, Value>) -> Result<String, Failure>,
    at_once: fn(&LoadedPolicy, &Map<String, Value>) -> bool,
) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, MAX_BODY_BYTES).await;
    let headers = parts.headers;
    let result = match read(app, &headers, body).await {
        Ok((policy, object)) if at_once(&policy, &object) => work(&policy, &object),
        Ok((policy, object)) => app
            .queries
            .run(move |_| work(&policy, &object))
            .await
            .unwrap_or_else(|status| {
                Err(Failure(
                    StatusCode::SERVICE_UNAVAILABLE,
                    status.message().to_owned(),
                ))
            }),
        Err(f) => Err(f),
    };
    respond(app, api, result, &headers)
}

/// Whether a search's action (`action.name`, on a resource that is not a route) is one no
/// role could grant in either plane: the search answers it without walking the policy.
fn grants_nothing(policy: &LoadedPolicy, body: &Map<String, Value>) -> bool {
    let on_route = body
        .get("resource")
        .and_then(|r| r.get("type"))
        .is_some_and(|t| t == "route");
    let name = body
        .get("action")
        .and_then(|a| a.get("name"))
        .and_then(Value::as_str);
    !on_route
        && name.is_some_and(|name| {
            policy.snapshot.grants_nothing_to(name, false)
                && policy.snapshot.grants_nothing_to(name, true)
        })
}

/// The policy and the body as a JSON object, or the request's error.
async fn read(
    app: &App,
    headers: &HeaderMap,
    body: Result<Bytes, axum::Error>,
) -> Result<(Arc<LoadedPolicy>, Map<String, Value>), Failure> {
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"));
    if !json {
        return Err(Failure::bad("Content-Type must be application/json"));
    }
    let body = body.map_err(|_| {
        Failure::bad(format!(
            "the request body exceeds {MAX_BODY_BYTES} bytes or could not be read"
        ))
    })?;
    let value: Value = serde_json::from_slice(&body)
        .map_err(|e| Failure::bad(format!("the request body is not valid JSON: {e}")))?;
    let Value::Object(object) = value else {
        return Err(Failure::bad("the request body must be a JSON object"));
    };
    // `context.consistency` (SPEC §10): answer from a state at least that new, or 503.
    match object.get("context").and_then(|c| c.get("consistency")) {
        None | Some(Value::Null) => {}
        Some(Value::String(token)) => {
            crate::store::wait_for(app, token, None)
                .await
                .map_err(|e| match e {
                    crate::store::TokenError::Invalid(m) => Failure::bad(m),
                    crate::store::TokenError::Behind(m) => {
                        Failure(StatusCode::SERVICE_UNAVAILABLE, m)
                    }
                })?;
        }
        Some(_) => return Err(Failure::bad("context.consistency must be a string")),
    }
    let policy = app.policy.current().ok_or_else(|| {
        Failure(
            StatusCode::SERVICE_UNAVAILABLE,
            "no policy loaded".to_owned(),
        )
    })?;
    Ok((policy, object))
}

fn respond(
    app: &App,
    api: &'static str,
    result: Result<String, Failure>,
    headers: &HeaderMap,
) -> Response<Body> {
    match result {
        Ok(body) => json_response(StatusCode::OK, body, headers),
        Err(Failure(status, message)) => {
            app.metrics
                .rpc_errors
                .get_or_create(&super::metrics::ApiLabels { api })
                .inc();
            let mut r = Response::new(Body::from(message));
            *r.status_mut() = status;
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            echo_request_id(&mut r, headers);
            r
        }
    }
}

fn json_response(status: StatusCode, body: String, headers: &HeaderMap) -> Response<Body> {
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    echo_request_id(&mut r, headers);
    r
}

/// The specification: a request identifier in `X-Request-ID` comes back in the response.
fn echo_request_id(r: &mut Response<Body>, headers: &HeaderMap) {
    if let Some(id) = headers.get("x-request-id") {
        r.headers_mut().insert("x-request-id", id.clone());
    }
}

// ---------------------------------------------------------------------------------------
// Shapes.
// ---------------------------------------------------------------------------------------

fn object<'v>(value: &'v Value, path: &str) -> Result<&'v Map<String, Value>, Failure> {
    value
        .as_object()
        .ok_or_else(|| Failure::bad(format!("`{path}` must be an object")))
}

fn string(map: &Map<String, Value>, key: &str, path: &str) -> Result<String, Failure> {
    match map.get(key) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(Failure::bad(format!("`{path}.{key}` must be a string"))),
        None => Err(Failure::bad(format!("`{path}.{key}` is required"))),
    }
}

fn optional_properties<'v>(
    map: &'v Map<String, Value>,
    path: &str,
) -> Result<Option<&'v Map<String, Value>>, Failure> {
    map.get("properties")
        .map(|p| object(p, &format!("{path}.properties")))
        .transpose()
}

/// `key` from the evaluation, else from the defaults, else missing.
fn pick<'v>(
    item: &'v Map<String, Value>,
    defaults: &'v Map<String, Value>,
    key: &str,
    prefix: &str,
) -> Result<Option<(&'v Value, String)>, Failure> {
    Ok(match item.get(key) {
        Some(v) => Some((v, format!("{prefix}{key}"))),
        None => defaults.get(key).map(|v| (v, key.to_owned())),
    })
}

/// The subject of an evaluation or search: `type`, `id` (when `with_id`) and the groups
/// in `properties.groups`.
fn parse_subject(
    value: &Value,
    path: &str,
    with_id: bool,
) -> Result<(String, String, Vec<String>), Failure> {
    let map = object(value, path)?;
    let kind = string(map, "type", path)?;
    let id = if with_id {
        string(map, "id", path)?
    } else {
        String::new()
    };
    let mut groups = Vec::new();
    if let Some(props) = optional_properties(map, path)?
        && let Some(list) = props.get("groups")
    {
        let Value::Array(list) = list else {
            return Err(Failure::bad(format!(
                "`{path}.properties.groups` must be an array of strings"
            )));
        };
        if list.len() > MAX_PAGE {
            return Err(Failure::bad(format!(
                "`{path}.properties.groups` has more than {MAX_PAGE} entries"
            )));
        }
        for g in list {
            let Value::String(g) = g else {
                return Err(Failure::bad(format!(
                    "`{path}.properties.groups` must be an array of strings"
                )));
            };
            groups.push(g.clone());
        }
    }
    Ok((kind, id, groups))
}

/// `resource`: `type`, `id` (when `with_id`), `properties.dataAction`, `properties.under`.
fn parse_resource(
    value: &Value,
    path: &str,
    with_id: bool,
) -> Result<(String, String, bool, Option<String>), Failure> {
    let map = object(value, path)?;
    let kind = string(map, "type", path)?;
    let id = if with_id {
        string(map, "id", path)?
    } else {
        String::new()
    };
    let mut data = false;
    let mut under = None;
    if let Some(props) = optional_properties(map, path)? {
        match props.get("dataAction") {
            None => {}
            Some(Value::Bool(b)) => data = *b,
            Some(_) => {
                return Err(Failure::bad(format!(
                    "`{path}.properties.dataAction` must be a boolean"
                )));
            }
        }
        match props.get("under") {
            None => {}
            Some(Value::String(s)) => under = Some(s.clone()),
            Some(_) => {
                return Err(Failure::bad(format!(
                    "`{path}.properties.under` must be a string"
                )));
            }
        }
    }
    Ok((kind, id, data, under))
}

fn parse_action(value: &Value, path: &str) -> Result<String, Failure> {
    string(object(value, path)?, "name", path)
}

/// `context.time`, if given (a string; parsed when evaluated).
fn parse_context(value: Option<&Value>, path: &str) -> Result<Option<String>, Failure> {
    let Some(value) = value else {
        return Ok(None);
    };
    let map = object(value, path)?;
    match map.get("time") {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(Failure::bad(format!(
            "`{path}.time` must be an RFC 3339 string"
        ))),
    }
}

/// One evaluation from `item`, with `defaults` (the top level of an evaluations request).
fn parse_evaluation(
    item: &Map<String, Value>,
    defaults: &Map<String, Value>,
    prefix: &str,
) -> Result<Evaluation, Failure> {
    let required = |key: &str| -> Result<(&Value, String), Failure> {
        pick(item, defaults, key, prefix)?
            .ok_or_else(|| Failure::bad(format!("`{prefix}{key}` is required")))
    };
    let (subject, path) = required("subject")?;
    let (subject_type, subject_id, groups) = parse_subject(subject, &path, true)?;
    let (action, path) = required("action")?;
    let action = parse_action(action, &path)?;
    let (resource, path) = required("resource")?;
    let (resource_type, resource_id, data_action, _) = parse_resource(resource, &path, true)?;
    let context = pick(item, defaults, "context", prefix)?;
    let time = match context {
        Some((value, path)) => parse_context(Some(value), &path)?,
        None => None,
    };
    Ok(Evaluation {
        subject_type,
        subject_id,
        groups,
        action,
        resource_type,
        resource_id,
        data_action,
        time,
    })
}

// ---------------------------------------------------------------------------------------
// Evaluation.
// ---------------------------------------------------------------------------------------

/// The principal type an AuthZEN subject type stands for: renamed by the policy, or a
/// principal type itself.
fn principal_type<'a>(policy: &'a LoadedPolicy, subject_type: &'a str) -> Option<&'a str> {
    match policy.snapshot.authzen_subject_types.get(subject_type) {
        Some(t) => Some(t.as_str()),
        None => syntax::PRINCIPAL_TYPES
            .iter()
            .copied()
            .find(|&t| t == subject_type),
    }
}

/// A decision `false` that no evaluation made: the reason and a message.
fn refused(policy: &LoadedPolicy, reason: &str, message: String) -> Value {
    json!({
        "decision": false,
        "context": {
            "reason": reason,
            "message": message,
            "revision": policy.snapshot.revision,
            "token": crate::store::token_of(policy),
        }
    })
}

/// Evaluates one (shape-checked) evaluation: its decision, with the reason, revision and
/// token in its context; recorded in the metrics and the decision log as any HTTP decision.
fn evaluate(app: &App, ctx: &RequestContext, policy: &LoadedPolicy, e: &Evaluation) -> Outcome {
    let snapshot = &policy.snapshot;
    let Some(kind) = principal_type(policy, &e.subject_type) else {
        return Ok(refused(
            policy,
            "unknownSubjectType",
            format!(
                "subject type `{}` is neither a principal type nor renamed by authzen.subjectTypes",
                escape(&e.subject_type)
            ),
        ));
    };
    let principal = format!("{kind}:{}", e.subject_id);
    let at = match &e.time {
        Some(t) => match syntax::parse_time(t) {
            Ok(at) => at,
            Err(e) => return Ok(refused(policy, "invalidArgument", e.to_string())),
        },
        None => syntax::now(),
    };
    let decision_id = app.ids.next();
    let outcome = if e.resource_type == "route" {
        snapshot.check_http_with(
            &HttpRequest {
                method: &e.action,
                path: &e.resource_id,
                headers: &NO_HEADERS,
                principal: Some(&principal),
                groups: &e.groups,
                metadata: None,
                peer_principal: None,
                verifier: None,
                at,
            },
            |_, r| app.decide(policy, r),
        )
    } else {
        scope_decision(app, policy, &principal, e, at)
    };
    let outcome = match outcome {
        Ok(o) => o,
        Err(e) => return Ok(refused(policy, "invalidArgument", request_error(&e))),
    };
    let shadowed = app.conclude_http(ctx, &outcome, &decision_id, &snapshot.revision);
    let mut context = json!({
        "reason": outcome.decision.reason.kind(),
        "revision": snapshot.revision,
        "token": crate::store::token_of(policy),
        "decisionId": decision_id,
    });
    if shadowed {
        context["shadow"] = Value::Bool(true);
    }
    if let Reason::Malformed { message } = &outcome.decision.reason {
        context["message"] = Value::String(message.clone());
    }
    Ok(json!({
        "decision": outcome.decision.allowed || shadowed,
        "context": context,
    }))
}

/// The message of a request error, which quotes request text only escaped.
fn request_error(e: &RequestError) -> String {
    e.to_string()
}

/// A scope resource: `resource.id` is the scope, `action.name` the action.
fn scope_decision<'s>(
    app: &App,
    policy: &'s LoadedPolicy,
    principal: &str,
    e: &Evaluation,
    at: Instant,
) -> Result<HttpDecision<'s>, RequestError> {
    let req = CheckRequest {
        principal,
        groups: &e.groups,
        action: &e.action,
        data_action: e.data_action,
        scope: &e.resource_id,
        at,
    };
    let verdict = app.decide(policy, &req)?;
    let decision: Decision<'s> = policy.snapshot.explain(verdict);
    Ok(HttpDecision {
        decision,
        action: Some(e.action.clone()),
        scope: Some(syntax::trim_scope(&e.resource_id).to_owned()),
        data_action: e.data_action,
        principal: Some(principal.to_owned()),
        route: None,
        token_rejection: None,
    })
}

/// No request headers: an AuthZEN request names its subject; a route that captures a
/// header finds none (malformed, fail closed).
static NO_HEADERS: Vec<(String, String)> = Vec::new();

/// How an evaluations request runs (`options.evaluations_semantic`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Semantic {
    ExecuteAll,
    DenyOnFirstDeny,
    PermitOnFirstPermit,
}

fn evaluate_many(
    app: &App,
    ctx: &RequestContext,
    policy: &LoadedPolicy,
    body: Map<String, Value>,
) -> Outcome {
    let semantic = match body.get("options") {
        None => Semantic::ExecuteAll,
        Some(options) => {
            let options = object(options, "options")?;
            match options.get("evaluations_semantic") {
                None => Semantic::ExecuteAll,
                Some(Value::String(s)) if s == "execute_all" => Semantic::ExecuteAll,
                Some(Value::String(s)) if s == "deny_on_first_deny" => Semantic::DenyOnFirstDeny,
                Some(Value::String(s)) if s == "permit_on_first_permit" => {
                    Semantic::PermitOnFirstPermit
                }
                Some(_) => {
                    return Err(Failure::bad(
                        "`options.evaluations_semantic` must be one of execute_all, \
                         deny_on_first_deny, permit_on_first_permit",
                    ));
                }
            }
        }
    };
    let items = match body.get("evaluations") {
        None => &Vec::new(),
        Some(Value::Array(items)) => items,
        Some(_) => return Err(Failure::bad("`evaluations` must be an array")),
    };
    if items.is_empty() {
        // The specification: without evaluations, the request is a single evaluation.
        let e = parse_evaluation(&body, &Map::new(), "")?;
        return evaluate(app, ctx, policy, &e);
    }
    if items.len() > MAX_EVALUATIONS {
        return Err(Failure::bad(format!(
            "`evaluations` has {} entries; at most {MAX_EVALUATIONS} are allowed",
            items.len()
        )));
    }
    // Every evaluation's shape first: a malformed request is refused whole.
    let parsed = items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let path = format!("evaluations[{i}]");
            parse_evaluation(object(item, &path)?, &body, &format!("{path}."))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut out = Vec::with_capacity(parsed.len());
    for e in &parsed {
        let decision = evaluate(app, ctx, policy, e)?;
        let allowed = decision["decision"].as_bool().unwrap_or(false);
        out.push(decision);
        match semantic {
            Semantic::DenyOnFirstDeny if !allowed => break,
            Semantic::PermitOnFirstPermit if allowed => break,
            _ => {}
        }
    }
    Ok(json!({ "evaluations": out }))
}

// ---------------------------------------------------------------------------------------
// Search.
// ---------------------------------------------------------------------------------------

/// `page.token` and `page.limit`, and the request's fingerprint (every member but the
/// token), which a token must carry: a changed request is an error, as the specification
/// asks.
struct Page {
    offset: usize,
    limit: usize,
    fingerprint: String,
}

fn parse_page(body: &Map<String, Value>) -> Result<Page, Failure> {
    let mut rest = body.clone();
    let mut token = None;
    let mut limit = MAX_PAGE;
    if let Some(page) = rest.get_mut("page") {
        let Value::Object(page) = page else {
            return Err(Failure::bad("`page` must be an object"));
        };
        match page.remove("token") {
            None => {}
            Some(Value::String(t)) => token = Some(t),
            Some(_) => return Err(Failure::bad("`page.token` must be a string")),
        }
        match page.get("limit") {
            None => {}
            // A limit of 0 would page forever without moving: refused, like any value that
            // is not a positive integer (a larger one than 1000 returns 1000).
            Some(Value::Number(n)) if n.as_u64().is_some_and(|n| n > 0) => {
                let n = n.as_u64().unwrap_or(1);
                limit = usize::try_from(n).unwrap_or(usize::MAX).min(MAX_PAGE);
            }
            Some(_) => {
                return Err(Failure::bad(
                    "`page.limit` must be a positive integer (at most 1000 results are returned)",
                ));
            }
        }
    }
    let digest = Sha256::digest(Value::Object(rest).to_string().as_bytes());
    let fingerprint: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    let offset = match token.as_deref() {
        None | Some("") => 0,
        Some(t) => {
            let (offset, print) = t
                .split_once('.')
                .ok_or_else(|| Failure::bad("`page.token` is not a token this PDP issued"))?;
            if print != fingerprint {
                return Err(Failure::bad(
                    "`page.token` belongs to another request: every member but the token \
                     must stay the same between pages",
                ));
            }
            offset
                .parse::<usize>()
                .map_err(|_| Failure::bad("`page.token` is not a token this PDP issued"))?
        }
    };
    Ok(Page {
        offset,
        limit,
        fingerprint,
    })
}

/// The response: `page` first (the specification recommends it), then `context` and
/// `results` (one page of `all`).
fn page_of(page: &Page, all: Vec<Value>, context: Value) -> String {
    let total = all.len();
    let start = page.offset.min(total);
    let end = start.saturating_add(page.limit).min(total);
    let next = if end < total {
        format!("{end}.{}", page.fingerprint)
    } else {
        String::new()
    };
    let results: Vec<Value> = all.into_iter().skip(start).take(end - start).collect();
    format!(
        "{{\"page\":{},\"context\":{},\"results\":{}}}",
        json!({"next_token": next, "count": results.len(), "total": total}),
        context,
        Value::Array(results)
    )
}

fn search_context(policy: &LoadedPolicy) -> Value {
    json!({"revision": policy.snapshot.revision, "token": crate::store::token_of(policy)})
}

/// The (action, scope, data plane) a search resource stands for: a scope, or a route
/// resolved through the route table (with the action's name as the method).
fn search_target(
    policy: &LoadedPolicy,
    action: &str,
    resource_type: &str,
    resource_id: &str,
    data: bool,
) -> Result<Option<(String, String, bool)>, Failure> {
    if resource_type != "route" {
        return Ok(Some((action.to_owned(), resource_id.to_owned(), data)));
    }
    Ok(
        match policy
            .snapshot
            .routes
            .resolve(action, resource_id, &NO_HEADERS)
        {
            crate::policy::route::RouteOutcome::Matched {
                route,
                action: Some(action),
                scope: Some(scope),
            } if !route.public => Some((action, scope, route.data_action)),
            _ => None,
        },
    )
}

/// Subject search: WhoCan, filtered by the subject type asked for.
fn search_subjects(policy: &LoadedPolicy, body: &Map<String, Value>) -> Result<String, Failure> {
    let page = parse_page(body)?;
    let subject = body
        .get("subject")
        .ok_or_else(|| Failure::bad("`subject` is required"))?;
    let (subject_type, _, _) = parse_subject(subject, "subject", false)?;
    let action = parse_action(
        body.get("action")
            .ok_or_else(|| Failure::bad("`action` is required"))?,
        "action",
    )?;
    let (resource_type, resource_id, data, _) = parse_resource(
        body.get("resource")
            .ok_or_else(|| Failure::bad("`resource` is required"))?,
        "resource",
        true,
    )?;
    let at = context_time(body)?;
    let mut results = Vec::new();
    if let (Some(kind), Some((action, scope, data))) = (
        principal_type(policy, &subject_type),
        search_target(policy, &action, &resource_type, &resource_id, data)?,
    ) {
        let who = policy
            .snapshot
            .who_can(&action, data, &scope, at)
            .map_err(|e| Failure::bad(request_error(&e)))?;
        let prefix = format!("{kind}:");
        for id in who.principals.iter().chain(&who.groups) {
            if let Some(value) = id.strip_prefix(&prefix) {
                results.push(json!({"type": subject_type, "id": value}));
            }
        }
    }
    Ok(page_of(&page, results, search_context(policy)))
}

/// Resource search: Plan's `include` as resources of type `scope` (its `exclude` in the
/// response context, so that the PEP has the exact filter).
fn search_resources(policy: &LoadedPolicy, body: &Map<String, Value>) -> Result<String, Failure> {
    let page = parse_page(body)?;
    let (subject_type, subject_id, groups) = parse_subject(
        body.get("subject")
            .ok_or_else(|| Failure::bad("`subject` is required"))?,
        "subject",
        true,
    )?;
    let action = parse_action(
        body.get("action")
            .ok_or_else(|| Failure::bad("`action` is required"))?,
        "action",
    )?;
    let (resource_type, _, data, under) = parse_resource(
        body.get("resource")
            .ok_or_else(|| Failure::bad("`resource` is required"))?,
        "resource",
        false,
    )?;
    let at = context_time(body)?;
    let mut context = search_context(policy);
    let mut results = Vec::new();
    if resource_type == "scope"
        && let Some(kind) = principal_type(policy, &subject_type)
    {
        let principal = format!("{kind}:{subject_id}");
        let plan = policy
            .snapshot
            .plan(&crate::policy::plan::PlanRequest {
                principal: &principal,
                groups: &groups,
                action: &action,
                data_action: data,
                under: under.as_deref().unwrap_or("/"),
                at,
            })
            .map_err(|e| Failure::bad(request_error(&e)))?;
        results = plan
            .include
            .iter()
            .map(|s| json!({"type": "scope", "id": s}))
            .collect();
        context["exclude"] = json!(plan.exclude);
    }
    Ok(page_of(&page, results, context))
}

/// Action search: the actions ListPermissions lists at the resource's scope.
fn search_actions(policy: &LoadedPolicy, body: &Map<String, Value>) -> Result<String, Failure> {
    let page = parse_page(body)?;
    let (subject_type, subject_id, groups) = parse_subject(
        body.get("subject")
            .ok_or_else(|| Failure::bad("`subject` is required"))?,
        "subject",
        true,
    )?;
    let (resource_type, resource_id, _, _) = parse_resource(
        body.get("resource")
            .ok_or_else(|| Failure::bad("`resource` is required"))?,
        "resource",
        true,
    )?;
    if resource_type == "route" {
        return Err(Failure::bad(
            "action search takes a scope resource (a route's action is its method)",
        ));
    }
    let at = context_time(body)?;
    let mut results = Vec::new();
    if let Some(kind) = principal_type(policy, &subject_type) {
        let principal = format!("{kind}:{subject_id}");
        let mut failed = None;
        policy
            .snapshot
            .each_permission(&principal, &groups, &resource_id, at, |p| {
                let mut action = json!({"name": p.action});
                if p.data_action {
                    action["properties"] = json!({"dataAction": true});
                }
                results.push(action);
                // An answer past this size is refused, as ListPermissions' is.
                if results.len() > 100_000 {
                    failed = Some(());
                    return std::ops::ControlFlow::Break(());
                }
                std::ops::ControlFlow::Continue(())
            })
            .map_err(|e| Failure::bad(request_error(&e)))?;
        if failed.is_some() {
            return Err(Failure::bad(
                "the answer holds more than 100000 actions; ask at a narrower scope",
            ));
        }
    }
    Ok(page_of(&page, results, search_context(policy)))
}

/// `context.time` of a search, else now.
fn context_time(body: &Map<String, Value>) -> Result<Instant, Failure> {
    match parse_context(body.get("context"), "context")? {
        Some(t) => syntax::parse_time(&t).map_err(|e| Failure::bad(format!("`context.time`: {e}"))),
        None => Ok(syntax::now()),
    }
}
