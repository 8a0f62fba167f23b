//! The `iot-authz` command line (SPEC §8). Every command returns its exit code; `main`
//! only maps it to the process.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use serde_json::json;

pub mod admin;
pub mod serve;

use crate::demo;
use crate::telemetry::LogFormat;

/// `println!` without the panic when stdout is closed early (`iot-authz ... | head -1`):
/// output that nobody reads is dropped.
macro_rules! out {
    ($($arg:tt)*) => {{
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}
use crate::policy::queries::HttpRequest;
use crate::policy::source::{self, DEFAULT_MAX_POLICY_BYTES};
use crate::policy::syntax::{self, Instant};
use crate::policy::{
    CheckRequest, Decision, Explanation, PolicyError, Reason, Snapshot, compile_sources,
};
use crate::testing::{self, Outcome};

/// Exit code: allowed / valid / all tests passed.
pub const EXIT_OK: u8 = 0;
/// Exit code: denied / may not / a test failed.
pub const EXIT_DENY: u8 = 1;
/// Exit code: bad arguments or an invalid policy.
pub const EXIT_ERROR: u8 = 2;

#[derive(Debug, Parser)]
#[command(
    name = "iot-authz",
    version,
    about = "Azure-style RBAC authorization for IoT platforms"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the native gRPC API, Envoy ext_authz and the HTTP endpoints.
    Serve(Box<crate::cli::ServeArgs>),
    /// Decide one request and explain the decision.
    Check(CheckArgs),
    /// Validate policy documents and print every problem.
    Validate(ValidateArgs),
    /// Run the `tests:` cases of a policy.
    Test(TestArgs),
    /// Convert Azure role definitions and assignments (az CLI JSON) to policy YAML.
    ImportAzure(ImportArgs),
    /// List the effective permissions of a principal at a scope.
    Permissions(PermissionsArgs),
    /// List the principals and groups allowed an action at a scope.
    WhoCan(WhoCanArgs),
    /// May an actor assign a role at a scope?
    CanAssign(CanAssignArgs),
    /// Where may a principal perform an action? Scopes to include and exclude.
    Plan(PlanArgs),
    /// Generate load against a running service and report throughput and latency.
    Load(LoadArgs),
    /// Manage role assignments, role definitions and groups through a server's Admin API.
    Admin(admin::AdminArgs),
    /// Copy policy objects between files and the etcd store.
    Store(admin::StoreArgs),
}

#[derive(Debug, Args)]
pub struct LoadArgs {
    /// What to drive.
    #[arg(long, value_enum, default_value = "check")]
    pub target: crate::loadgen::Target,
    /// gRPC `host:port`, or a base URL for `--target http`.
    #[arg(long, default_value = "127.0.0.1:50051")]
    pub addr: String,
    /// Connections (gRPC channels, or the HTTP pool size).
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// Requests in flight.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Seconds to measure (after the warm-up).
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Seconds of warm-up, not measured.
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// Requests per second (fixed rate, latency from the intended send time); without it,
    /// closed loop.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Checks per BatchCheck call.
    #[arg(long, default_value_t = 1000)]
    pub batch: usize,
    /// Only requests the demo policy allows (reads by alice), for proxy A/B comparisons.
    #[arg(long)]
    pub only_allowed: bool,
    /// Client worker threads. One leaves the other cores to the server when both run on
    /// the same machine.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// `--target assign`: the principal the grants are made as.
    #[arg(long, default_value = "user:root")]
    pub actor: String,
    /// `--target assign`: the role granted.
    #[arg(long, default_value = "Reader")]
    pub role: String,
    /// `--target assign`: the scope of the grants.
    #[arg(long, default_value = "/apps/bench")]
    pub scope: String,
    /// `--target assign`: an action the role grants, checked with `--check-addr`.
    #[arg(long, default_value = "Devices/read")]
    pub action: String,
    /// `--target assign`: another replica's gRPC `host:port`, asked for each grant at its
    /// consistency token (the latency is then the grant's visibility there).
    #[arg(long)]
    pub check_addr: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct PolicyArgs {
    /// Policy file or directory (repeatable); without it, the embedded demo policy.
    #[arg(long = "policy", value_name = "PATH")]
    pub policy: Vec<PathBuf>,
    /// Machine-readable JSON output.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Policy file or directory (repeatable; one path per flag, commas included); without
    /// it, the comma-separated list in IOT_AUTHZ_POLICY, or the embedded demo policy.
    #[arg(long = "policy", value_name = "PATH")]
    pub policy: Vec<PathBuf>,
    /// gRPC listen address (native API, ext_authz, health, reflection).
    #[arg(long, env = "IOT_AUTHZ_GRPC_ADDR", default_value = "0.0.0.0:50051")]
    pub grpc_addr: String,
    /// HTTP listen address (/healthz, /readyz, /metrics).
    #[arg(long, env = "IOT_AUTHZ_HTTP_ADDR", default_value = "0.0.0.0:8181")]
    pub http_addr: String,
    /// PEM certificate chain for TLS on the gRPC listener.
    #[arg(long, env = "IOT_AUTHZ_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for TLS on the gRPC listener.
    #[arg(long, env = "IOT_AUTHZ_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA bundle: require client certificates signed by it (mTLS).
    #[arg(long, env = "IOT_AUTHZ_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
    /// Largest gRPC message accepted, in bytes.
    #[arg(long, env = "IOT_AUTHZ_MAX_MESSAGE_BYTES", default_value_t = crate::server::defaults::MAX_MESSAGE_BYTES)]
    pub max_message_bytes: usize,
    /// Requests running longer are cancelled (milliseconds).
    #[arg(long, env = "IOT_AUTHZ_REQUEST_TIMEOUT_MS", default_value_t = crate::server::defaults::REQUEST_TIMEOUT_MS)]
    pub request_timeout_ms: u64,
    /// WhoCan, CheckAssign, ListPermissions, Plan and the AuthZEN searches that may run at
    /// once, on their own threads (more wait for a turn), so they never take the workers
    /// Check and ext_authz need. Default: half the CPU cores, at least 1.
    #[arg(long, env = "IOT_AUTHZ_MAX_CONCURRENT_QUERIES", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_concurrent_queries: Option<u32>,
    /// How the query pool's threads are scheduled against Check and ext_authz: `idle`
    /// (SCHED_IDLE: a decision always takes the core first; on a host kept busy by other
    /// work, queries wait up to their deadline), `low` (niceness 19: a small share, never
    /// none) or `normal`.
    #[arg(long, env = "IOT_AUTHZ_QUERY_PRIORITY", value_enum, default_value_t = crate::server::query_pool::QueryPriority::default())]
    pub query_priority: crate::server::query_pool::QueryPriority,
    /// Concurrent requests per client connection.
    #[arg(
        long,
        env = "IOT_AUTHZ_CONCURRENCY_PER_CONNECTION",
        default_value_t = crate::server::defaults::CONCURRENCY_PER_CONNECTION
    )]
    pub concurrency_per_connection: usize,
    /// Concurrent HTTP/2 streams per client connection.
    #[arg(long, env = "IOT_AUTHZ_MAX_CONCURRENT_STREAMS", default_value_t = crate::server::defaults::MAX_CONCURRENT_STREAMS)]
    pub max_concurrent_streams: u32,
    /// Open client connections per listener (gRPC, HTTP); a connection beyond it is
    /// closed at once. Keep twice this below the process's file-descriptor limit.
    #[arg(long, env = "IOT_AUTHZ_MAX_CONNECTIONS", default_value_t = crate::server::defaults::MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// HTTP port: a request must be read and its answer begun within this long of its
    /// first byte (milliseconds); a client trickling its headers is closed.
    #[arg(
        long,
        env = "IOT_AUTHZ_HEADER_READ_TIMEOUT_MS",
        default_value_t = crate::server::defaults::HEADER_READ_TIMEOUT_MS
    )]
    pub header_read_timeout_ms: u64,
    /// HTTP port: a keep-alive connection with no request for this long is closed
    /// (milliseconds).
    #[arg(long, env = "IOT_AUTHZ_IDLE_TIMEOUT_MS", default_value_t = crate::server::defaults::IDLE_TIMEOUT_MS)]
    pub idle_timeout_ms: u64,
    /// Both ports: connections older than this are retired (gRPC: GOAWAY, then the
    /// shutdown grace; HTTP: at the next request) (seconds).
    #[arg(
        long,
        env = "IOT_AUTHZ_MAX_CONNECTION_AGE_SECONDS",
        default_value_t = crate::server::defaults::MAX_CONNECTION_AGE_SECONDS
    )]
    pub max_connection_age_seconds: u64,
    /// gRPC port: a connection with no request in flight for this long is closed, even if
    /// it answers every PING (milliseconds).
    #[arg(
        long,
        env = "IOT_AUTHZ_GRPC_IDLE_TIMEOUT_MS",
        default_value_t = crate::server::defaults::GRPC_IDLE_TIMEOUT_MS
    )]
    pub grpc_idle_timeout_ms: u64,
    /// HTTP port: bytes of a request line and headers; gRPC port: the HTTP/2 header list
    /// size.
    #[arg(long, env = "IOT_AUTHZ_MAX_HEADER_BYTES", default_value_t = crate::server::defaults::MAX_HEADER_BYTES)]
    pub max_header_bytes: usize,
    /// On SIGTERM or SIGINT, keep serving this long with health NOT_SERVING and `/readyz`
    /// 503 before the listeners close, so load balancers stop routing here (milliseconds).
    #[arg(long, env = "IOT_AUTHZ_SHUTDOWN_DELAY_MS", default_value_t = crate::server::defaults::SHUTDOWN_DELAY_MS)]
    pub shutdown_delay_ms: u64,
    /// Once the listeners close, the longest requests and streams in flight (such as
    /// health Watch) may take; connections still open then are closed (milliseconds).
    #[arg(long, env = "IOT_AUTHZ_SHUTDOWN_GRACE_MS", default_value_t = crate::server::defaults::SHUTDOWN_GRACE_MS)]
    pub shutdown_grace_ms: u64,
    /// Poll an HTTP(S) policy bundle (one YAML/JSON document or a .tar.gz of documents)
    /// instead of reading --policy files.
    #[arg(long, env = "IOT_AUTHZ_POLICY_URL", conflicts_with = "policy")]
    pub policy_url: Option<String>,
    /// Seconds between bundle polls (failures back off exponentially from this).
    #[arg(
        long,
        env = "IOT_AUTHZ_POLICY_URL_INTERVAL_SECONDS",
        default_value_t = crate::sources::bundle::DEFAULT_INTERVAL_SECONDS
    )]
    pub policy_url_interval_seconds: u64,
    /// File holding a bearer token for the bundle server (re-read on every poll).
    #[arg(long, env = "IOT_AUTHZ_POLICY_URL_TOKEN_FILE")]
    pub policy_url_token_file: Option<PathBuf>,
    /// Largest policy accepted, in bytes (files in all, or one bundle).
    #[arg(long, env = "IOT_AUTHZ_MAX_POLICY_BYTES", default_value_t = crate::policy::source::DEFAULT_MAX_POLICY_BYTES)]
    pub max_policy_bytes: u64,
    #[command(flatten)]
    pub etcd: admin::EtcdArgs,
    /// Largest value accepted for one store object, in bytes.
    #[arg(long, env = "IOT_AUTHZ_ETCD_MAX_VALUE_BYTES", default_value_t = crate::store::objects::DEFAULT_MAX_VALUE_BYTES)]
    pub etcd_max_value_bytes: usize,
    /// The least time between two compiles of the store's changes written through other
    /// replicas, in milliseconds (0: each at once); changes arriving sooner are gathered.
    /// A request waiting for a consistency token, and a change written through this
    /// replica, are compiled at once.
    #[arg(long, env = "IOT_AUTHZ_ETCD_APPLY_WINDOW_MS", default_value_t = crate::store::DEFAULT_APPLY_WINDOW_MS,
          value_parser = clap::value_parser!(u64).range(0..=crate::store::MAX_APPLY_WINDOW_MS))]
    pub etcd_apply_window_ms: u64,
    /// An overlay of more assignment changes than this (made since the last full compile)
    /// is compacted into a new base: a full compile off the request path. Lower: less CPU
    /// per write and more compactions; higher: the reverse.
    #[arg(long, env = "IOT_AUTHZ_ETCD_COMPACT_AT", default_value_t = crate::store::COMPACT_AT,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=crate::store::MAX_COMPACT_AT as u64))]
    pub etcd_compact_at: usize,
    /// Re-read policy files this often even without change events (0: never).
    #[arg(long, env = "IOT_AUTHZ_POLICY_POLL_SECONDS", default_value_t = crate::sources::files::DEFAULT_POLL_SECONDS)]
    pub policy_poll_seconds: u64,
    /// Quiet time after a file change before reloading (milliseconds).
    #[arg(long, env = "IOT_AUTHZ_POLICY_DEBOUNCE_MS", default_value_t = crate::sources::files::DEFAULT_DEBOUNCE_MS)]
    pub policy_debounce_ms: u64,
    /// Do not use file-system notifications (reload on SIGHUP and polls only).
    #[arg(long, env = "IOT_AUTHZ_NO_WATCH")]
    pub no_watch: bool,
    /// Decision cache entries (0 turns the cache off).
    #[arg(long, env = "IOT_AUTHZ_DECISION_CACHE_SIZE", default_value_t = crate::server::defaults::DECISION_CACHE_SIZE)]
    pub decision_cache_size: u64,
    /// Longest a cached decision lives (seconds); policy swaps and time windows end
    /// entries earlier.
    #[arg(
        long,
        env = "IOT_AUTHZ_DECISION_CACHE_TTL_SECONDS",
        default_value_t = crate::server::defaults::DECISION_CACHE_TTL_SECONDS
    )]
    pub decision_cache_ttl_seconds: u64,
    /// Write one JSON line per decision to this file, or `-` for stdout.
    #[arg(long, env = "IOT_AUTHZ_DECISION_LOG")]
    pub decision_log: Option<String>,
    /// Fraction of allowed decisions logged (denies are always logged), 0 to 1.
    #[arg(long, env = "IOT_AUTHZ_DECISION_LOG_SAMPLE", default_value_t = 1.0)]
    pub decision_log_sample: f64,
    /// Shadow mode for every route: evaluate and log as usual, but let every request
    /// through, marking would-be denials with `x-iotauthz-shadow-decision: deny`.
    #[arg(long, env = "IOT_AUTHZ_SHADOW")]
    pub shadow: bool,
    /// Serve the web console under /console/ on the HTTP port (every page is authorized
    /// by the policy: the caller needs roleAssignments/read or roleDefinitions/read).
    #[arg(long, env = "IOT_AUTHZ_CONSOLE")]
    pub console: bool,
    /// Log format: text or json (anything else is an error, never a silent text).
    #[arg(long, env = "IOT_AUTHZ_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Machine-readable output: log lines as JSON, the same as `--log-format json`.
    #[arg(long)]
    pub json: bool,
    /// Worker threads of the runtime (0: one per CPU core).
    #[arg(long, env = "IOT_AUTHZ_WORKER_THREADS", default_value_t = 0)]
    pub worker_threads: usize,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// The principal (TYPE:VALUE); in the method/path form, identity comes from headers
    /// when it is absent.
    #[arg(long)]
    pub principal: Option<String>,
    /// The action asked for, e.g. `Microsoft.Edge/targets/read` (with --scope).
    #[arg(long, requires = "scope", conflicts_with_all = ["method", "path"])]
    pub action: Option<String>,
    /// The scope the action is asked at, e.g. `/subscriptions/s1/resourceGroups/factory`.
    #[arg(long, requires = "action")]
    pub scope: Option<String>,
    /// Ask for the action as a data action (the role's `dataActions`).
    #[arg(long, requires = "action")]
    pub data_action: bool,
    /// The HTTP method of a request mapped through the policy's routes (with --path).
    #[arg(long, requires = "path")]
    pub method: Option<String>,
    /// The request path, e.g. `/subscriptions/s1/...` (with --method).
    #[arg(long, requires = "method")]
    pub path: Option<String>,
    /// A request header NAME:VALUE (repeatable).
    #[arg(long = "header", value_name = "NAME:VALUE")]
    pub headers: Vec<String>,
    /// An extra group of the caller, a full `group:` id (repeatable).
    #[arg(long = "group", value_name = "GROUP")]
    pub groups: Vec<String>,
    /// Evaluate at this RFC 3339 time instead of now.
    #[arg(long)]
    pub at: Option<String>,
    /// On a deny, also list the groups the principal is in and every assignment its
    /// subjects hold at the scope or above, with the reason each does not grant.
    #[arg(long)]
    pub explain: bool,
}

/// The policy of `validate` and `test`: paths as arguments, `--policy` paths, or neither
/// for the embedded demo policy.
#[derive(Debug, Args)]
pub struct PolicyPaths {
    /// Policy files or directories.
    #[arg(value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Policy file or directory (repeatable), read after the PATH arguments; with neither,
    /// the embedded demo policy.
    #[arg(long = "policy", value_name = "PATH")]
    pub policy: Vec<PathBuf>,
    /// Machine-readable JSON output.
    #[arg(long)]
    pub json: bool,
}

impl PolicyPaths {
    /// Every path, the arguments first.
    fn all(&self) -> Vec<PathBuf> {
        self.paths.iter().chain(&self.policy).cloned().collect()
    }
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    #[command(flatten)]
    pub policy: PolicyPaths,
}

#[derive(Debug, Args)]
pub struct TestArgs {
    #[command(flatten)]
    pub policy: PolicyPaths,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// `az role definition list` and `az role assignment list` JSON files.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Print the policy as JSON instead of YAML.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct PermissionsArgs {
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// The principal (TYPE:VALUE).
    #[arg(long)]
    pub principal: String,
    /// The scope to list the effective permissions at.
    #[arg(long)]
    pub scope: String,
    /// An extra group of the caller, a full `group:` id (repeatable).
    #[arg(long = "group", value_name = "GROUP")]
    pub groups: Vec<String>,
    /// Evaluate at this RFC 3339 time instead of now.
    #[arg(long)]
    pub at: Option<String>,
}

#[derive(Debug, Args)]
pub struct WhoCanArgs {
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// The action, e.g. `Microsoft.Edge/targets/write`.
    #[arg(long)]
    pub action: String,
    /// The scope the action is asked at.
    #[arg(long)]
    pub scope: String,
    /// Ask for the action as a data action (the roles' `dataActions`).
    #[arg(long)]
    pub data_action: bool,
    /// Evaluate at this RFC 3339 time instead of now.
    #[arg(long)]
    pub at: Option<String>,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// The principal asking (TYPE:VALUE).
    #[arg(long)]
    pub principal: String,
    /// The action, a literal (no `*`).
    #[arg(long)]
    pub action: String,
    /// Ask about the action in the data plane.
    #[arg(long)]
    pub data_action: bool,
    /// Plan only the scopes at or below this one.
    #[arg(long, default_value = "/")]
    pub under: String,
    /// A group the principal is in besides the policy's (a token's groups), a full
    /// `group:` id; repeatable.
    #[arg(long = "group", value_name = "GROUP")]
    pub groups: Vec<String>,
    /// Evaluate time-bound assignments at this RFC 3339 time instead of now.
    #[arg(long)]
    pub at: Option<String>,
}

#[derive(Debug, Args)]
pub struct CanAssignArgs {
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// The principal who would create the assignment (TYPE:VALUE).
    #[arg(long)]
    pub actor: String,
    /// The role to assign, by name (any case) or id.
    #[arg(long)]
    pub role: String,
    /// The scope of the assignment.
    #[arg(long)]
    pub scope: String,
    /// Evaluate at this RFC 3339 time instead of now.
    #[arg(long)]
    pub at: Option<String>,
}

/// A command's failure: a message for stderr and exit code 2.
#[derive(Debug)]
pub struct CliError(pub String);

impl From<PolicyError> for CliError {
    fn from(e: PolicyError) -> Self {
        Self(e.to_string())
    }
}

impl From<crate::policy::RequestError> for CliError {
    fn from(e: crate::policy::RequestError) -> Self {
        Self(e.to_string())
    }
}

type CliResult = Result<u8, CliError>;

/// Loads the policy the arguments name, or the embedded demo.
pub fn load_policy(paths: &[PathBuf]) -> Result<Snapshot, PolicyError> {
    let sources = if paths.is_empty() {
        demo::sources()
    } else {
        source::read_paths(paths, DEFAULT_MAX_POLICY_BYTES)?
    };
    compile_sources(&sources)
}

fn parse_at(at: &Option<String>) -> Result<Instant, CliError> {
    match at {
        Some(t) => syntax::parse_time(t).map_err(|e| CliError(format!("--at: {e}"))),
        None => Ok(syntax::now()),
    }
}

fn print_json(value: &serde_json::Value) {
    out!("{value}");
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Serve(args) => serve(&args),
        Command::Check(args) => check(&args),
        Command::Validate(args) => validate(&args),
        Command::Test(args) => test(&args),
        Command::ImportAzure(args) => import_azure(&args),
        Command::Permissions(args) => permissions(&args),
        Command::WhoCan(args) => who_can(&args),
        Command::CanAssign(args) => can_assign(&args),
        Command::Plan(args) => plan(&args),
        Command::Load(args) => load(&args),
        Command::Admin(args) => Ok(admin::admin(&args)),
        Command::Store(args) => Ok(admin::store(&args)),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(CliError(message)) => {
            eprintln!("error: {message}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

fn serve(args: &ServeArgs) -> CliResult {
    // `IOT_AUTHZ_POLICY` is read here rather than by clap: it is a comma-separated list,
    // while each `--policy` flag is one path, commas included (`my,policy.yaml`), and
    // clap's delimiter would split both.
    let mut args = args.clone();
    if args.policy.is_empty()
        && let Some(list) = std::env::var_os("IOT_AUTHZ_POLICY")
    {
        if args.policy_url.is_some() {
            return Err(CliError(
                "IOT_AUTHZ_POLICY and --policy-url cannot be used together".into(),
            ));
        }
        args.policy = split_policy_list(&list);
    }
    serve::serve(&args).map_err(|e| CliError(format!("{e:#}")))
}

/// The paths of a comma-separated `IOT_AUTHZ_POLICY` (empty items skipped), split on the
/// bytes so that a path that is not UTF-8 stays as it is.
fn split_policy_list(list: &std::ffi::OsStr) -> Vec<PathBuf> {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        list.as_bytes()
            .split(|&b| b == b',')
            .filter(|item| !item.is_empty())
            .map(|item| PathBuf::from(std::ffi::OsStr::from_bytes(item)))
            .collect()
    }
    #[cfg(not(unix))]
    {
        list.to_string_lossy()
            .split(',')
            .filter(|item| !item.is_empty())
            .map(PathBuf::from)
            .collect()
    }
}

fn reason_text(reason: &Reason<'_>) -> String {
    match reason {
        Reason::RoleAssignment {
            role,
            assignment_id,
            scope,
            via,
        } => format!(
            "roleAssignment: role `{role}` at `{scope}` held by `{via}`{}",
            assignment_id
                .map(|id| format!(" (assignment {id})"))
                .unwrap_or_default()
        ),
        Reason::DenyAssignment { deny_assignment } => {
            format!("denyAssignment: `{deny_assignment}`")
        }
        Reason::Malformed { message } => format!("malformed: {message}"),
        other => other.kind().to_owned(),
    }
}

/// The `check --json` reason object (SPEC §8): the reason's one serde form.
pub fn reason_json(reason: &Reason<'_>) -> serde_json::Value {
    serde_json::to_value(reason).unwrap_or_else(|_| json!({"kind": reason.kind()}))
}

/// The key sets of the bearer sources whose keys are a JWKS file, read once: `check` does
/// no network fetches, so a source with a URL or discovery has no keys here (its tokens are
/// refused with `no keys`).
fn file_key_sets(snapshot: &Snapshot) -> crate::policy::bearer::StaticKeys {
    use crate::policy::bearer::{JwksLocation, KeySet, StaticKeys};
    let mut sets = Vec::new();
    for source in snapshot.identity.bearer_sources() {
        let JwksLocation::File(path) = &source.jwks else {
            continue;
        };
        let parsed = source::read_limited(std::path::Path::new(path), 1024 * 1024)
            .map_err(|e| match e {
                source::ReadError::TooBig => "is too large".to_owned(),
                source::ReadError::Failed(m) => m,
            })
            .and_then(|bytes| KeySet::parse(&bytes).map_err(|e| e.to_string()));
        match parsed {
            Ok(keys) => sets.push((source.issuer.clone(), std::sync::Arc::new(keys))),
            Err(e) => {
                let _ = writeln!(
                    std::io::stderr().lock(),
                    "JWKS file {} of issuer `{}`: {e}",
                    syntax::escape(path),
                    syntax::escape(&source.issuer)
                );
            }
        }
    }
    StaticKeys(sets)
}

fn check(args: &CheckArgs) -> CliResult {
    let at = parse_at(&args.at)?;
    for g in &args.groups {
        syntax::group_id(g).map_err(|e| CliError(format!("--group: {e}")))?;
    }
    let snapshot = load_policy(&args.policy.policy)?;
    let mut data_action = args.data_action;
    let (decision, action, scope, principal): (
        Decision<'_>,
        Option<String>,
        Option<String>,
        Option<String>,
    ) = match (&args.action, &args.method) {
        (Some(action), None) => {
            let Some(principal) = &args.principal else {
                return Err(CliError("--action needs --principal".into()));
            };
            let scope = args.scope.clone().unwrap_or_default();
            let decision = snapshot.check(&CheckRequest {
                principal,
                groups: &args.groups,
                action,
                data_action: args.data_action,
                scope: &scope,
                at,
            })?;
            (
                decision,
                Some(action.clone()),
                Some(scope),
                Some(principal.clone()),
            )
        }
        (None, Some(method)) => {
            let mut headers = Vec::new();
            for h in &args.headers {
                let (name, value) = h
                    .split_once(':')
                    .filter(|(name, _)| !name.trim().is_empty())
                    .ok_or_else(|| {
                        CliError(format!(
                            "--header `{}` is not NAME:VALUE",
                            syntax::escape(h)
                        ))
                    })?;
                headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
            }
            let path = args.path.clone().unwrap_or_default();
            let keys = file_key_sets(&snapshot);
            let out = snapshot.check_http(&HttpRequest {
                method,
                path: &path,
                headers: &headers,
                principal: args.principal.as_deref(),
                groups: &args.groups,
                metadata: None,
                peer_principal: None,
                verifier: Some(&keys),
                at,
            })?;
            data_action = out.data_action;
            if let Some((issuer, reason)) = &out.token_rejection {
                let _ = writeln!(
                    std::io::stderr().lock(),
                    "bearer token of issuer `{}` refused: {reason}",
                    syntax::escape(issuer)
                );
            }
            (out.decision, out.action, out.scope, out.principal)
        }
        _ => {
            return Err(CliError(
                "give either --action and --scope, or --method and --path".into(),
            ));
        }
    };
    // The explanation of a deny that an assignment could have granted: the request as the
    // engine saw it, asked again on the slower explaining path.
    let explanation = match (&action, &scope, &principal) {
        (Some(action), Some(scope), Some(principal)) if args.explain => {
            Some(snapshot.explain_check(&CheckRequest {
                principal,
                groups: &args.groups,
                action,
                data_action,
                scope,
                at,
            })?)
        }
        _ => None,
    };
    if args.policy.json {
        let mut body = json!({
            "allowed": decision.allowed,
            "reason": reason_json(&decision.reason),
            "action": action,
            "scope": scope,
            "principal": principal,
            "revision": snapshot.revision,
        });
        if args.explain {
            let (groups, misses) = match &explanation {
                Some(e) => (
                    json!(e.groups_of_principal),
                    json!(near_misses_json(
                        e,
                        action.as_deref().unwrap_or_default(),
                        data_action
                    )),
                ),
                None => (json!([]), json!([])),
            };
            body["groupsOfPrincipal"] = groups;
            body["nearMisses"] = misses;
        }
        print_json(&body);
    } else {
        out!(
            "{}: {}",
            if decision.allowed { "allow" } else { "deny" },
            reason_text(&decision.reason)
        );
        if args.explain {
            print_explanation(
                explanation.as_ref(),
                principal.as_deref(),
                action.as_deref().unwrap_or_default(),
                data_action,
            );
        }
    }
    Ok(if decision.allowed { EXIT_OK } else { EXIT_DENY })
}

/// The near misses of an explanation as JSON objects.
fn near_misses_json(e: &Explanation<'_>, action: &str, data: bool) -> Vec<serde_json::Value> {
    e.near_misses
        .iter()
        .map(|m| {
            json!({
                "assignment": reason_json(&m.assignment),
                "reason": m.reason,
                "message": m.reason.message(action, data),
            })
        })
        .collect()
}

/// `check --explain` as text: the principal's groups, then one line per near miss.
fn print_explanation(
    e: Option<&Explanation<'_>>,
    principal: Option<&str>,
    action: &str,
    data: bool,
) {
    let Some(e) = e else {
        out!("(nothing to explain: no principal, action and scope were decided)");
        return;
    };
    let who = principal.map(syntax::escape).unwrap_or_default();
    if e.groups_of_principal.is_empty() {
        out!("groups of {who}: none");
    } else {
        let groups: Vec<String> = e
            .groups_of_principal
            .iter()
            .map(|g| syntax::escape(g))
            .collect();
        out!("groups of {who}: {}", groups.join(", "));
    }
    if e.decision.allowed {
        return;
    }
    if e.near_misses.is_empty() {
        out!("near misses: none (no assignment of {who} or its groups at this scope or above)");
        return;
    }
    out!("near misses:");
    for m in &e.near_misses {
        out!(
            "  {}: {}: {}",
            reason_text(&m.assignment).trim_start_matches("roleAssignment: "),
            m.reason.kind(),
            m.reason.message(action, data)
        );
    }
}

fn validate(args: &ValidateArgs) -> CliResult {
    // Invalid `tests:` cases are problems too (serve and check ignore the cases).
    let result = load_policy(&args.policy.all()).and_then(|snapshot| {
        let problems = testing::case_problems(&snapshot, syntax::now());
        if problems.is_empty() {
            Ok(snapshot)
        } else {
            Err(PolicyError { problems })
        }
    });
    match result {
        Ok(snapshot) => {
            if args.policy.json {
                print_json(
                    &json!({"valid": true, "problems": [], "revision": snapshot.revision, "counts": snapshot.counts}),
                );
            } else {
                out!(
                    "valid: {} document(s), {} role(s), {} assignment(s), revision {}",
                    snapshot.counts.documents,
                    snapshot.counts.roles,
                    snapshot.counts.assignments,
                    snapshot.revision
                );
            }
            Ok(EXIT_OK)
        }
        Err(e) => {
            if args.policy.json {
                let problems: Vec<_> = e
                    .problems
                    .iter()
                    .map(|p| json!({"document": p.document, "object": p.object, "message": p.message}))
                    .collect();
                print_json(&json!({"valid": false, "problems": problems}));
            } else {
                for p in &e.problems {
                    out!("{p}");
                }
                out!("invalid: {} problem(s)", e.problems.len());
            }
            Ok(EXIT_ERROR)
        }
    }
}

fn test(args: &TestArgs) -> CliResult {
    let snapshot = load_policy(&args.policy.all())?;
    let results = testing::run(&snapshot, syntax::now());
    let passed = results
        .iter()
        .filter(|r| r.outcome == Outcome::Passed)
        .count();
    let errors = results
        .iter()
        .filter(|r| matches!(r.outcome, Outcome::Error(_)))
        .count();
    let failed = results.len() - passed;
    let mut out = std::io::stdout().lock();
    if args.policy.json {
        let cases: Vec<_> = results
            .iter()
            .map(|r| {
                let (status, detail) = match &r.outcome {
                    Outcome::Passed => ("passed", None),
                    Outcome::Failed(d) => ("failed", Some(d)),
                    Outcome::Error(d) => ("error", Some(d)),
                };
                json!({"document": r.document, "name": r.name, "status": status, "detail": detail})
            })
            .collect();
        let _ = writeln!(
            out,
            "{}",
            json!({"passed": passed, "failed": failed, "cases": cases, "revision": snapshot.revision})
        );
    } else {
        for r in &results {
            match &r.outcome {
                Outcome::Passed => {}
                Outcome::Failed(d) => {
                    let _ = writeln!(out, "FAIL {}: {}: {d}", r.document, r.name);
                }
                Outcome::Error(d) => {
                    let _ = writeln!(out, "ERROR {}: {}: {d}", r.document, r.name);
                }
            }
        }
        let _ = writeln!(out, "{passed} passed, {failed} failed");
    }
    Ok(if errors > 0 {
        EXIT_ERROR
    } else if failed > 0 {
        EXIT_DENY
    } else {
        EXIT_OK
    })
}

fn import_azure(args: &ImportArgs) -> CliResult {
    let mut files = Vec::new();
    let mut left = DEFAULT_MAX_POLICY_BYTES;
    for f in &args.files {
        let bytes = source::read_limited(f, left).map_err(|e| {
            CliError(match e {
                source::ReadError::TooBig => format!(
                    "{}: the input exceeds the size limit of {DEFAULT_MAX_POLICY_BYTES} bytes",
                    f.display()
                ),
                source::ReadError::Failed(message) => format!("{}: {message}", f.display()),
            })
        })?;
        left = left.saturating_sub(bytes.len() as u64);
        files.push((f.display().to_string(), bytes));
    }
    let doc = crate::import_azure::import(&files).map_err(|e| CliError(e.to_string()))?;
    crate::import_azure::check_self_contained(&doc).map_err(|e| {
        CliError(format!(
            "the imported policy does not validate (import the role definitions and the \
             assignments separately to edit them, for example to add `scopeLinks`):\n{e}"
        ))
    })?;
    if args.json {
        out!(
            "{}",
            serde_json::to_string_pretty(&doc).map_err(|e| CliError(e.to_string()))?
        );
    } else {
        print!(
            "{}",
            crate::import_azure::to_yaml(&doc).map_err(|e| CliError(e.to_string()))?
        );
    }
    Ok(EXIT_OK)
}

fn permissions(args: &PermissionsArgs) -> CliResult {
    let at = parse_at(&args.at)?;
    let snapshot = load_policy(&args.policy.policy)?;
    // Written one permission at a time: the answer can be far larger than the policy (a
    // role with `*` over a large catalog, held through many assignments), so it is never
    // held whole. Output that nobody reads (a closed pipe) ends the walk.
    let json = args.policy.json;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut count = 0usize;
    let mut written = Ok(());
    snapshot.each_permission(&args.principal, &args.groups, &args.scope, at, |p| {
        written = if json {
            let entry = json!({
                "action": p.action,
                "dataAction": p.data_action,
                "assignments": p.assignments.iter().map(reason_json).collect::<Vec<_>>(),
            });
            let lead = if count == 0 { "{\"actions\":[" } else { "," };
            write!(out, "{lead}{entry}")
        } else {
            let via: Vec<String> = p.assignments.iter().map(reason_text).collect();
            let data = if p.data_action { " (data)" } else { "" };
            writeln!(out, "{}{data}  <- {}", p.action, via.join("; "))
        };
        count += 1;
        if written.is_ok() {
            std::ops::ControlFlow::Continue(())
        } else {
            std::ops::ControlFlow::Break(())
        }
    })?;
    if written.is_ok() {
        let revision = &snapshot.revision;
        let _ = if json {
            let lead = if count == 0 { "{\"actions\":[" } else { "" };
            writeln!(out, "{lead}],\"revision\":{}}}", json!(revision))
        } else {
            writeln!(out, "{count} action(s), revision {revision}")
        };
        let _ = out.flush();
    }
    Ok(EXIT_OK)
}

fn who_can(args: &WhoCanArgs) -> CliResult {
    let at = parse_at(&args.at)?;
    let snapshot = load_policy(&args.policy.policy)?;
    let who = snapshot.who_can(&args.action, args.data_action, &args.scope, at)?;
    if args.policy.json {
        print_json(
            &json!({"principals": who.principals, "groups": who.groups, "revision": snapshot.revision}),
        );
    } else {
        for p in &who.principals {
            out!("principal {p}");
        }
        for g in &who.groups {
            out!("group {g}");
        }
        out!(
            "{} principal(s), {} group(s), revision {}",
            who.principals.len(),
            who.groups.len(),
            snapshot.revision
        );
    }
    Ok(EXIT_OK)
}

fn plan(args: &PlanArgs) -> CliResult {
    let at = parse_at(&args.at)?;
    let snapshot = load_policy(&args.policy.policy)?;
    let plan = snapshot.plan(&crate::policy::plan::PlanRequest {
        principal: &args.principal,
        groups: &args.groups,
        action: &args.action,
        data_action: args.data_action,
        under: &args.under,
        at,
    })?;
    if args.policy.json {
        print_json(&json!({
            "include": plan.include,
            "exclude": plan.exclude,
            "revision": snapshot.revision,
            "token": "",
        }));
    } else {
        for s in &plan.include {
            out!("include {s}");
        }
        for s in &plan.exclude {
            out!("exclude {s}");
        }
        out!(
            "{} include(s), {} exclude(s), revision {}",
            plan.include.len(),
            plan.exclude.len(),
            snapshot.revision
        );
    }
    Ok(EXIT_OK)
}

fn can_assign(args: &CanAssignArgs) -> CliResult {
    let at = parse_at(&args.at)?;
    let snapshot = load_policy(&args.policy.policy)?;
    let answer = snapshot.check_assign(&args.actor, &args.role, &args.scope, at)?;
    if args.policy.json {
        print_json(&json!({
            "allowed": answer.allowed,
            "missingActions": answer.missing_actions,
            "message": answer.message,
            "revision": snapshot.revision,
        }));
    } else {
        out!(
            "{}",
            if answer.allowed {
                "may assign"
            } else {
                "may not assign"
            }
        );
        if let Some(m) = &answer.message {
            out!("{m}");
        }
        for a in &answer.missing_actions {
            out!("missing {a}");
        }
        out!("revision {}", snapshot.revision);
    }
    Ok(if answer.allowed { EXIT_OK } else { EXIT_DENY })
}

fn load(args: &LoadArgs) -> CliResult {
    let options = crate::loadgen::LoadOptions {
        target: args.target,
        addr: args.addr.clone(),
        connections: args.connections.max(1),
        concurrency: args.concurrency.max(1),
        duration: std::time::Duration::from_secs_f64(args.duration.max(0.1)),
        rate: args.rate,
        batch: args.batch.clamp(1, crate::server::native::MAX_BATCH),
        warmup: std::time::Duration::from_secs_f64(args.warmup.max(0.0)),
        only_allowed: args.only_allowed,
        writes: crate::loadgen::WriteOptions {
            actor: args.actor.clone(),
            role: args.role.clone(),
            scope: args.scope.clone(),
            action: args.action.clone(),
            check_addr: args.check_addr.clone(),
        },
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()
        .map_err(|e| CliError(e.to_string()))?;
    let report = runtime
        .block_on(crate::loadgen::run(options))
        .map_err(|e| CliError(format!("{e:#}")))?;
    if args.json {
        out!(
            "{}",
            serde_json::to_string(&report).map_err(|e| CliError(e.to_string()))?
        );
    } else {
        out!(
            "{} {} conns={} inflight={}: {:.0} req/s, {:.0} checks/s, errors {}, allowed {}/{}",
            report.target,
            report.mode,
            report.connections,
            report.concurrency,
            report.requests_per_second,
            report.checks_per_second,
            report.errors,
            report.allowed,
            report.checks
        );
        out!(
            "latency us: p50 {:.1}  p90 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1}",
            report.p50_us,
            report.p90_us,
            report.p99_us,
            report.p999_us,
            report.max_us
        );
        for (why, n) in &report.error_kinds {
            out!("errors: {n} × {why}");
        }
    }
    Ok(if report.errors == 0 {
        EXIT_OK
    } else {
        EXIT_DENY
    })
}
