//! The peer engines as Envoy ext_authz services: `scripts/bench-peers-envoy.sh` drives
//! `iot-authz serve` and this server (`--engine regorus|cedar`, and `iot-authz` for the
//! same thin service around iot-authz's engine) through the same Envoy.
//!
//! Every side answers from the same policy file (written by `policy`): the peers read its
//! routes and identity sources with iot-authz's own code (`RouteTable::resolve`,
//! `IdentityConfig::identify`, compiled from that file by `compile_sources`), so the
//! services differ only in the decision engine. The engines encode the workload of
//! `src/workload.rs` their own way (`src/engines/`), drawn from the same seed and size.
//!
//! ```text
//! iot-authz-peer-service policy OUT.json [size]
//! iot-authz-peer-service requests N LIST.tsv WRK.lua [size]
//! iot-authz-peer-service serve regorus|cedar|iot-authz POLICY.json ADDR [size]
//!   size: --users N --assignments N --seed N (default: the issue's size and seed)
//! ```

// The in-process benchmark's modules; this binary uses only part of them.
#[allow(dead_code)]
mod engines;
#[allow(dead_code)]
mod reference;
#[allow(dead_code)]
mod workload;

use std::cell::RefCell;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use envoy_types::ext_authz::v3::pb::{
    Authorization, AuthorizationServer, CheckRequest, CheckResponse, DeniedHttpResponse,
    HttpResponse, HttpStatus, OkHttpResponse,
};
use envoy_types::pb::envoy::service::auth::v3::attribute_context;
use envoy_types::pb::google::rpc;
use iot_authz::policy::document::{Document, RouteDoc};
use iot_authz::policy::identity::{IdentifyError, IdentityInput};
use iot_authz::policy::route::{HeaderLookup, RouteOutcome, RouteTable};
use iot_authz::policy::{Snapshot, compile_sources, source, syntax};
use iot_authz::server::ServerOptions;
use tonic::{Request, Response, Status};

use engines::cedar::Cedar;
use engines::rego::Rego;
use workload::{SEED, Size, Workload};

/// The same allocator as the `iot-authz` binary.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const USAGE: &str = "\
usage: iot-authz-peer-service policy OUT.json [size]
       iot-authz-peer-service requests N LIST.tsv WRK.lua [size]
       iot-authz-peer-service serve regorus|cedar|iot-authz POLICY.json ADDR [size]
  size: --users N (default 10000) --assignments N (default 50000) --seed N";

// ---------------------------------------------------------------------------------------
// The route table: ARM-style paths for every catalog action at every level of the tree.

/// Where a route's path starts, and the scope it names: the root, a subscription, a
/// resource group, an Edge target.
const LEVELS: &[(&str, &str)] = &[
    ("", "/"),
    ("/subscriptions/{sub}", "/subscriptions/{sub}"),
    (
        "/subscriptions/{sub}/resourceGroups/{rg}",
        "/subscriptions/{sub}/resourceGroups/{rg}",
    ),
    (TARGET, TARGET),
];
const TARGET: &str =
    "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Edge/targets/{target}";

/// What each method does to a resource (type) path.
const VERBS: &[(&str, &str)] = &[("GET", "read"), ("PUT", "write"), ("DELETE", "delete")];

fn route(method: &str, path: String, action: String, scope: &str) -> RouteDoc {
    RouteDoc {
        methods: vec![method.to_owned()],
        path,
        action: Some(action),
        scope: Some(scope.to_owned()),
        ..RouteDoc::default()
    }
}

/// The routes: the Edge target as a resource (`GET|PUT|DELETE {target}`, `POST
/// {target}/deploy`), and at each level `{scope}/providers/{provider}/{type}[/{child}]`
/// (GET read, PUT write, DELETE delete) and `POST {scope}/providers/{provider}/{type}/{op}`
/// (`{op}/action`), the scope being the level's path.
pub fn routes() -> Vec<RouteDoc> {
    let mut out = Vec::new();
    for (method, op) in VERBS {
        out.push(route(
            method,
            TARGET.to_owned(),
            format!("Microsoft.Edge/targets/{op}"),
            TARGET,
        ));
    }
    out.push(route(
        "POST",
        format!("{TARGET}/deploy"),
        "Microsoft.Edge/targets/deploy/action".to_owned(),
        TARGET,
    ));
    for (prefix, scope) in LEVELS {
        for (method, op) in VERBS {
            out.push(route(
                method,
                format!("{prefix}/providers/{{provider}}/{{type}}"),
                format!("{{provider}}/{{type}}/{op}"),
                scope,
            ));
            out.push(route(
                method,
                format!("{prefix}/providers/{{provider}}/{{type}}/{{child}}"),
                format!("{{provider}}/{{type}}/{{child}}/{op}"),
                scope,
            ));
        }
        out.push(route(
            "POST",
            format!("{prefix}/providers/{{provider}}/{{type}}/{{op}}"),
            "{provider}/{type}/{op}/action".to_owned(),
            scope,
        ));
    }
    out
}

/// The HTTP request for a check: `(method, path)`, or `None` when the action has no
/// request form (an operation of a nested type).
fn request_for(action: &str, scope: &str) -> Option<(&'static str, String)> {
    let parts: Vec<&str> = action.split('/').collect();
    let (method, provider, ty, op) = match parts.as_slice() {
        [provider, ty @ .., op, "action"] if !ty.is_empty() => ("POST", provider, ty, Some(*op)),
        [provider, ty @ .., verb] if !ty.is_empty() => {
            let method = VERBS.iter().find(|(_, v)| v == verb)?.0;
            (method, provider, ty, None)
        }
        _ => return None,
    };
    let target = scope.contains("/providers/Microsoft.Edge/targets/");
    if target && *provider == "Microsoft.Edge" && ty == ["targets"] {
        return Some(match op {
            Some("deploy") => (method, format!("{scope}/deploy")),
            Some(_) => return None,
            None => (method, scope.to_owned()),
        });
    }
    let base = if scope == "/" { "" } else { scope };
    let mut path = format!("{base}/providers/{provider}/{}", ty.join("/"));
    if let Some(op) = op {
        path.push('/');
        path.push_str(op);
    }
    Some((method, path))
}

// ---------------------------------------------------------------------------------------
// Command line.

struct Args {
    positional: Vec<String>,
    size: Size,
    seed: u64,
}

fn parse_args(raw: Vec<String>) -> Result<Args, String> {
    let mut size = Size {
        checks: 0,
        ..Size::ISSUE
    };
    let mut seed = SEED;
    let mut positional = Vec::new();
    let mut it = raw.into_iter();
    while let Some(a) = it.next() {
        let mut value = |flag: &str| -> Result<u64, String> {
            let v = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
            let parsed = match v.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => v.parse(),
            };
            parsed.map_err(|e| format!("{flag} {v}: {e}"))
        };
        match a.as_str() {
            "--users" => size.users = value("--users")?.max(1) as usize,
            "--assignments" => size.assignments = value("--assignments")? as usize,
            "--seed" => seed = value("--seed")?,
            "-h" | "--help" => return Err(USAGE.to_owned()),
            s if s.starts_with("--") => return Err(format!("unknown flag {s}\n{USAGE}")),
            _ => positional.push(a),
        }
    }
    Ok(Args {
        positional,
        size,
        seed,
    })
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1).collect()) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let result = match args
        .positional
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()[..]
    {
        ["policy", out] => write_policy(&args, out),
        ["requests", n, list, lua] => match n.parse() {
            Ok(n) => write_requests(&args, n, list, lua),
            Err(e) => Err(format!("requests {n}: {e}")),
        },
        ["serve", engine, policy, addr] => serve(&args, engine, policy, addr),
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("iot-authz-peer-service: {e}");
            ExitCode::FAILURE
        }
    }
}

// ---------------------------------------------------------------------------------------
// `policy` and `requests`.

/// The iot-authz policy: the workload as `engines::iot_authz::document` encodes it (the
/// action catalog, the roles, the assignments) plus [`routes`]; identity left to the
/// default (the principal header).
fn policy_document(w: &Workload) -> Document {
    let mut doc = engines::iot_authz::document(w, true);
    doc.routes = routes();
    doc
}

fn write_policy(args: &Args, out: &str) -> Result<(), String> {
    let w = Workload::new(args.size, args.seed);
    let text = serde_json::to_string(&policy_document(&w)).map_err(|e| e.to_string())?;
    std::fs::write(out, text).map_err(|e| format!("{out}: {e}"))?;
    println!(
        "policy: {} roles, {} assignments, {} routes -> {out}",
        w.roles.len(),
        w.assignments.len(),
        routes().len()
    );
    Ok(())
}

/// The first `n` checks of the workload that have a request form and whose request the
/// route table maps back to exactly the check's action and scope, with the reference's
/// answer: `LIST.tsv` (`method path principal status`) for the agreement pass and a Lua
/// table for wrk.
fn write_requests(args: &Args, n: usize, list: &str, lua: &str) -> Result<(), String> {
    let mut size = args.size;
    // Checks are drawn after the assignments: more of them change no assignment.
    size.checks = n.saturating_mul(2).max(16);
    let w = Workload::new(size, args.seed);
    let answers = reference::answers(&w);
    let docs = routes();
    let named: Vec<(String, &RouteDoc)> = docs.iter().map(|d| ("routes".to_owned(), d)).collect();
    let table = RouteTable::compile(&named).map_err(|e| format!("routes: {e:?}"))?;
    let (mut tsv, mut wrk) = (String::new(), String::from("return {\n"));
    let (mut kept, mut allowed, mut skipped) = (0usize, 0usize, 0usize);
    for (check, &allow) in w.checks.iter().zip(&answers) {
        if kept == n {
            break;
        }
        let (principal, action, scope) = w.check_strings(check);
        let Some((method, path)) = request_for(action, scope) else {
            skipped += 1;
            continue;
        };
        let no_headers: &[(&str, &str)] = &[];
        match table.resolve(method, &path, no_headers) {
            RouteOutcome::Matched {
                action: Some(a),
                scope: Some(s),
                ..
            } if a == action && s == scope => {}
            _ => {
                skipped += 1;
                continue;
            }
        }
        let status = if allow { 200 } else { 403 };
        tsv.push_str(&format!("{method}\t{path}\t{principal}\t{status}\n"));
        wrk.push_str(&format!("  {{{method:?}, {path:?}, {principal:?}}},\n"));
        kept += 1;
        allowed += usize::from(allow);
    }
    wrk.push_str("}\n");
    if kept < n {
        return Err(format!("only {kept} of {n} requests found"));
    }
    std::fs::write(list, tsv).map_err(|e| format!("{list}: {e}"))?;
    std::fs::write(lua, wrk).map_err(|e| format!("{lua}: {e}"))?;
    println!(
        "requests: {kept} ({allowed} allowed, {} denied by the reference); {skipped} checks without a distinct request form skipped",
        kept - allowed
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// `serve`.

enum Engine {
    /// iot-authz's own engine behind this thin service: `Snapshot::check`.
    IotAuthz,
    Cedar(Cedar),
    /// A prototype, cloned once into each worker thread (`eval_rule` needs `&mut`).
    Rego(Mutex<Rego>),
}

thread_local! {
    static REGO: RefCell<Option<Rego>> = const { RefCell::new(None) };
}

struct Service {
    /// The policy file compiled by iot-authz: its routes and identity sources (and, for
    /// `--engine iot-authz`, its engine).
    snapshot: Snapshot,
    engine: Engine,
}

/// HTTP and gRPC status of each answer.
const ALLOW: (u16, i32) = (200, 0);
const FORBIDDEN: (u16, i32) = (403, 7);
const UNAUTHENTICATED: (u16, i32) = (401, 16);
const MALFORMED: (u16, i32) = (400, 3);

impl Service {
    /// The engine's answer; an engine error denies (fail closed).
    fn allows(&self, principal: &str, action: &str, scope: &str, data_action: bool) -> bool {
        match &self.engine {
            Engine::IotAuthz => {
                let req = iot_authz::policy::CheckRequest {
                    principal,
                    groups: &[],
                    action,
                    data_action,
                    scope,
                    at: syntax::now(),
                };
                matches!(self.snapshot.check(&req), Ok(d) if d.allowed)
            }
            Engine::Cedar(c) => c.try_check(principal, action, scope).unwrap_or(false),
            Engine::Rego(proto) => REGO.with(|slot| {
                let mut slot = slot.borrow_mut();
                if slot.is_none() {
                    *slot = proto.lock().ok().map(|r| r.clone());
                }
                slot.as_mut()
                    .and_then(|r| r.try_check(principal, action, scope).ok())
                    .unwrap_or(false)
            }),
        }
    }

    /// Route, identity, decision: the steps of iot-authz's ext_authz, with iot-authz's
    /// route table and identity sources, and this service's engine.
    fn decide(
        &self,
        method: &str,
        path: &str,
        headers: &dyn HeaderLookup,
        peer: &str,
    ) -> (u16, i32) {
        let (route, action, scope) = match self.snapshot.routes.resolve(method, path, headers) {
            RouteOutcome::Malformed(_) => return MALFORMED,
            RouteOutcome::NoRoute => return FORBIDDEN,
            RouteOutcome::Matched {
                route,
                action,
                scope,
            } => (route, action, scope),
        };
        if route.public {
            return ALLOW;
        }
        let identity = self.snapshot.identity.identify(&IdentityInput {
            headers: Some(headers),
            metadata: None,
            peer_principal: (!peer.is_empty()).then_some(peer),
            verifier: None,
            at: syntax::now(),
        });
        let principal = match identity {
            Ok(Some(found)) => found.principal,
            Ok(None) | Err(IdentifyError::Rejected { .. }) => return UNAUTHENTICATED,
            Err(IdentifyError::Ambiguous(_)) => return MALFORMED,
        };
        let (Some(action), Some(scope)) = (action, scope) else {
            return FORBIDDEN;
        };
        if self.allows(&principal, &action, &scope, route.data_action) {
            ALLOW
        } else {
            FORBIDDEN
        }
    }
}

/// The request's headers as `(name, value)` pairs, as iot-authz's ext_authz reads them:
/// `header_map` (raw values) when Envoy sends it, else the `headers` map.
fn header_pairs(http: &mut attribute_context::HttpRequest) -> Vec<(String, String)> {
    match http.header_map.take() {
        Some(map) if !map.headers.is_empty() => map
            .headers
            .into_iter()
            .map(|h| {
                let value = if h.raw_value.is_empty() {
                    h.value
                } else {
                    String::from_utf8(h.raw_value).unwrap_or_else(|_| "\u{1}".to_owned())
                };
                (h.key, value)
            })
            .collect(),
        _ => std::mem::take(&mut http.headers).into_iter().collect(),
    }
}

struct Peer(Arc<Service>);

#[tonic::async_trait]
impl Authorization for Peer {
    async fn check(
        &self,
        request: Request<CheckRequest>,
    ) -> Result<Response<CheckResponse>, Status> {
        let attributes = request.into_inner().attributes.unwrap_or_default();
        let mut http = attributes.request.and_then(|r| r.http).unwrap_or_default();
        let pairs = header_pairs(&mut http);
        let headers: Vec<(&str, &str)> = pairs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let peer = attributes.source.map(|s| s.principal).unwrap_or_default();
        let (http_status, code) = self.0.decide(&http.method, &http.path, &headers, &peer);
        let http_response = if code == 0 {
            HttpResponse::OkResponse(OkHttpResponse::default())
        } else {
            HttpResponse::DeniedResponse(DeniedHttpResponse {
                status: Some(HttpStatus {
                    code: i32::from(http_status),
                }),
                ..DeniedHttpResponse::default()
            })
        };
        Ok(Response::new(CheckResponse {
            status: Some(rpc::Status {
                code,
                ..rpc::Status::default()
            }),
            http_response: Some(http_response),
            dynamic_metadata: None,
        }))
    }
}

fn load(args: &Args, engine: &str, policy: &str) -> Result<Service, String> {
    let sources =
        source::read_paths(&[PathBuf::from(policy)], 1 << 30).map_err(|e| e.to_string())?;
    let snapshot = compile_sources(&sources).map_err(|e| e.to_string())?;
    let engine = match engine {
        "iot-authz" => Engine::IotAuthz,
        "cedar" | "regorus" => {
            let w = Workload::new(args.size, args.seed);
            if engine == "cedar" {
                Engine::Cedar(engines::cedar::load(&w)?)
            } else {
                let mut rego = engines::rego::load(&w)?;
                // Evaluated once before it is cloned, so every clone starts prepared.
                rego.try_check("user:u0", "Microsoft.Edge/targets/read", "/")?;
                Engine::Rego(Mutex::new(rego))
            }
        }
        other => {
            return Err(format!(
                "unknown engine {other}: regorus, cedar or iot-authz"
            ));
        }
    };
    Ok(Service { snapshot, engine })
}

fn serve(args: &Args, engine: &str, policy: &str, addr: &str) -> Result<(), String> {
    let addr: SocketAddr = addr
        .parse()
        .map_err(|e| format!("not an address: {addr}: {e}"))?;
    let service = Arc::new(load(args, engine, policy)?);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    runtime
        .block_on(grpc(service, addr))
        .map_err(|e| e.to_string())
}

/// The gRPC server, on the settings of `iot-authz serve` (as `benches/null`).
async fn grpc(service: Arc<Service>, addr: SocketAddr) -> Result<(), Box<dyn std::error::Error>> {
    let options = ServerOptions::default();
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("listening on {}", listener.local_addr()?);
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let service = AuthorizationServer::new(Peer(service))
        .max_decoding_message_size(options.max_message_bytes)
        .max_encoding_message_size(options.max_message_bytes);
    tonic::transport::Server::builder()
        .concurrency_limit_per_connection(options.concurrency_per_connection)
        .max_concurrent_streams(options.max_concurrent_streams)
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .max_connection_age(options.max_connection_age)
        .max_connection_age_grace(options.shutdown_grace)
        .http2_max_header_list_size(u32::try_from(options.max_header_bytes).unwrap_or(u32::MAX))
        .tcp_nodelay(true)
        .add_service(service)
        .serve_with_incoming(incoming)
        .await?;
    Ok(())
}
