//! Shared test support: the real server in-process on port 0, a recording upstream, the
//! real Envoy and grpcurl binaries, and JWT signing.

#![allow(dead_code)]

pub mod etcd;
pub mod jwt;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use iot_authz::live::PolicyState;
use iot_authz::policy::{Snapshot, SourceDocument, compile_sources};
use iot_authz::server::{self, App, AppOptions, ServerOptions};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

pub mod webdriver;

/// A native CheckHttp request; headers are sent exactly as given (names keep their case).
pub fn check_http_request(
    principal: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> iot_authz::proto::iotauthz::v1::CheckHttpRequest {
    iot_authz::proto::iotauthz::v1::CheckHttpRequest {
        principal: principal.into(),
        method: method.into(),
        path: path.into(),
        headers: headers
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect(),
        ..Default::default()
    }
}

/// Envoy's ext_authz `CheckRequest` for `method path` with these headers (names as given).
pub fn ext_authz_request(
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> envoy_types::pb::envoy::service::auth::v3::CheckRequest {
    use envoy_types::pb::envoy::service::auth::v3::{
        AttributeContext, CheckRequest, attribute_context,
    };
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(attribute_context::Request {
                http: Some(attribute_context::HttpRequest {
                    method: method.into(),
                    path: path.into(),
                    headers: headers
                        .iter()
                        .map(|(k, v)| ((*k).into(), (*v).into()))
                        .collect(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

/// What Envoy's ext_authz Check answered.
pub struct ExtAuthzAnswer {
    /// The gRPC status code of the answer (0: allowed).
    pub code: i32,
    /// The HTTP status of a denial.
    pub status: Option<i32>,
    /// The body of a denial.
    pub body: String,
    pub response: envoy_types::pb::envoy::service::auth::v3::CheckResponse,
}

/// Envoy's ext_authz Check of `method path` with these headers, sent to the server.
pub async fn ext_authz(
    server: &TestServer,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> ExtAuthzAnswer {
    use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
    use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
    let mut client = AuthorizationClient::connect(server.grpc_url())
        .await
        .unwrap();
    let response = client
        .check(ext_authz_request(method, path, headers))
        .await
        .unwrap()
        .into_inner();
    let (status, body) = match &response.http_response {
        Some(HttpResponse::DeniedResponse(denied)) => {
            (denied.status.map(|s| s.code), denied.body.clone())
        }
        _ => (None, String::new()),
    };
    ExtAuthzAnswer {
        code: response.status.as_ref().map_or(-1, |s| s.code),
        status,
        body,
        response,
    }
}

/// The real binary serving, both listeners on port 0, with `args` after them and `env`
/// set; waits for its ready line and returns the addresses the line names.
pub fn serve_binary<I, A>(args: I, env: &[(&str, &str)]) -> (Child, SocketAddr, SocketAddr)
where
    I: IntoIterator<Item = A>,
    A: AsRef<std::ffi::OsStr>,
{
    let mut all: Vec<std::ffi::OsString> =
        ["--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"]
            .iter()
            .map(Into::into)
            .collect();
    all.extend(args.into_iter().map(|a| a.as_ref().to_owned()));
    spawn_serve(all, env)
}

/// `iot-authz serve` with exactly `args` and `env` (listener addresses included, from
/// either); waits for its ready line and returns the gRPC and HTTP addresses it names.
pub fn spawn_serve<I, A>(args: I, env: &[(&str, &str)]) -> (Child, SocketAddr, SocketAddr)
where
    I: IntoIterator<Item = A>,
    A: AsRef<std::ffi::OsStr>,
{
    let mut command = Command::new(env!("CARGO_BIN_EXE_iot-authz"));
    command
        .arg("serve")
        .args(args)
        .envs(env.iter().copied())
        .stderr(Stdio::null());
    spawn_child(command)
}

/// Runs `command` (an `iot-authz serve`, its standard output taken here); waits for its
/// ready line and returns the gRPC and HTTP addresses it names.
pub fn spawn_child(mut command: Command) -> (Child, SocketAddr, SocketAddr) {
    use std::io::BufRead;
    let mut child = command.stdout(Stdio::piped()).spawn().unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = |key: &str| -> SocketAddr {
        line.split(key)
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|addr| addr.parse().ok())
            .unwrap_or_else(|| panic!("no {key} address in {line:?}"))
    };
    let (grpc, http) = (addr("grpc="), addr("http="));
    (child, grpc, http)
}

/// Whether the server closes `stream` (end of stream or a reset) within `within`,
/// whatever it sends first.
pub async fn closed_by_server(stream: &mut tokio::net::TcpStream, within: Duration) -> bool {
    use tokio::io::AsyncReadExt;
    tokio::time::timeout(within, async {
        let mut buf = [0u8; 256];
        while let Ok(n) = stream.read(&mut buf).await {
            if n == 0 {
                return;
            }
        }
    })
    .await
    .is_ok()
}

/// Sends `GET path` on an open HTTP/1.1 keep-alive connection and returns the status
/// code of the answer (read whole: its headers and `content-length` bytes), or `None`
/// when the connection is closed first.
pub async fn get_on(stream: &mut tokio::net::TcpStream, path: &str) -> Option<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let request = format!("GET {path} HTTP/1.1\r\nhost: test\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        let n = stream.read(&mut buf).await.ok().filter(|&n| n > 0)?;
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got);
        let Some((head, body)) = text.split_once("\r\n\r\n") else {
            continue;
        };
        let length: usize = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(|v| v.trim().parse().unwrap_or(0))
            })
            .unwrap_or(0);
        if body.len() >= length {
            return head.split(' ').nth(1)?.parse().ok();
        }
    }
}

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

/// Finds a real tool: `$IOT_AUTHZ_<NAME>`, the project's `.venv/bin`, or `PATH`. A missing
/// tool fails the test: the test script installs every tool, and tests never skip.
pub fn tool(name: &str) -> PathBuf {
    let var = format!("IOT_AUTHZ_{}", name.to_ascii_uppercase());
    if let Ok(p) = std::env::var(&var) {
        return PathBuf::from(p);
    }
    let venv = root().join(".venv/bin").join(name);
    if venv.exists() {
        return venv;
    }
    if let Some(paths) = std::env::var_os("PATH") {
        let extra = [PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/sbin")];
        for dir in std::env::split_paths(&paths).chain(extra) {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    panic!("`{name}` not found (set {var}, or run scripts/test.sh, which installs it into .venv)");
}

/// Installs rustls' ring provider once (reqwest is built without a default provider).
pub fn crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

pub fn demo() -> Snapshot {
    compile_sources(&iot_authz::demo::sources()).unwrap()
}

pub fn policy(text: &str) -> Snapshot {
    compile_sources(&[SourceDocument::new("test.yaml", text.as_bytes())])
        .unwrap_or_else(|e| panic!("{e}"))
}

/// The real server running in-process on 127.0.0.1:0.
pub struct TestServer {
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    pub app: Arc<App>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl TestServer {
    pub async fn start(snapshot: Snapshot) -> Self {
        Self::start_with(
            Arc::new(PolicyState::with_snapshot(snapshot)),
            ServerOptions::default(),
        )
        .await
    }

    /// Serves `snapshot` with these server options (limits, timeouts, shutdown).
    pub async fn start_server_options(snapshot: Snapshot, options: ServerOptions) -> Self {
        Self::start_with(Arc::new(PolicyState::with_snapshot(snapshot)), options).await
    }

    pub async fn start_with(state: Arc<PolicyState>, options: ServerOptions) -> Self {
        Self::start_app(Arc::new(App::new(state)), options).await
    }

    /// Serves `snapshot` with these app options (cache, decision log, shadow mode).
    pub async fn start_options(snapshot: Snapshot, options: &AppOptions) -> Self {
        let app = App::with_options(Arc::new(PolicyState::with_snapshot(snapshot)), options)
            .expect("app options");
        Self::start_app(Arc::new(app), ServerOptions::default()).await
    }

    pub async fn start_app(app: Arc<App>, options: ServerOptions) -> Self {
        let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (grpc_addr, http_addr) = (grpc.local_addr().unwrap(), http.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server::run(app.clone(), options, grpc, http, async {
            let _ = stopped.await;
        }));
        Self {
            grpc: grpc_addr,
            http: http_addr,
            app,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn grpc_url(&self) -> String {
        format!("http://{}", self.grpc)
    }

    /// A connected channel to the gRPC listener.
    pub async fn channel(&self) -> tonic::transport::Channel {
        tonic::transport::Channel::from_shared(self.grpc_url())
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    /// The Prometheus text of `/metrics`.
    pub async fn metrics(&self) -> String {
        crypto();
        reqwest::get(format!("http://{}/metrics", self.http))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Graceful shutdown; waits until both listeners have stopped.
    pub async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }
}

/// What the upstream received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub headers: BTreeMap<String, Vec<String>>,
}

/// An HTTP upstream that records every request and answers 200 with it as JSON.
pub struct Upstream {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

impl Upstream {
    pub async fn start() -> Self {
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let record = seen.clone();
        let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
            let record = record.clone();
            async move {
                let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
                for (k, v) in req.headers() {
                    headers
                        .entry(k.as_str().to_owned())
                        .or_default()
                        .push(String::from_utf8_lossy(v.as_bytes()).into_owned());
                }
                let s = Seen {
                    method: req.method().to_string(),
                    path: req
                        .uri()
                        .path_and_query()
                        .map(|p| p.to_string())
                        .unwrap_or_default(),
                    headers,
                };
                let body =
                    json!({"method": s.method, "path": s.path, "headers": s.headers}).to_string();
                record.lock().unwrap().push(s);
                body
            }
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, seen }
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

/// A real Envoy started from one of the configs in `deploy/envoy/`, with the ports (and
/// anything else the test needs) substituted.
pub struct Envoy {
    child: Child,
    pub listener: SocketAddr,
    pub admin: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Envoy {
    /// Starts Envoy from `deploy/envoy/<file>`, pointing it at `authz` and `upstream`.
    pub async fn start(
        file: &str,
        authz: SocketAddr,
        upstream: SocketAddr,
        extra: &[(&str, &str)],
    ) -> Self {
        let text = std::fs::read_to_string(root().join("deploy/envoy").join(file)).unwrap();
        let mut config = text
            .replace(
                "address: 0.0.0.0, port_value: 10000",
                "address: 127.0.0.1, port_value: 0",
            )
            .replace(
                "address: 0.0.0.0, port_value: 10443",
                "address: 127.0.0.1, port_value: 0",
            )
            .replace("port_value: 9901", "port_value: 0")
            .replace(
                "port_value: 50051",
                &format!("port_value: {}", authz.port()),
            )
            .replace(
                "port_value: 8080",
                &format!("port_value: {}", upstream.port()),
            );
        for (from, to) in extra {
            assert!(config.contains(from), "config has no `{from}`");
            config = config.replace(from, to);
        }
        let dir = tempfile::tempdir().unwrap();
        let config_path = dir.path().join("envoy.yaml");
        std::fs::write(&config_path, config).unwrap();
        let admin_path = dir.path().join("admin-address");
        let child = Command::new(tool("envoy"))
            .arg("-c")
            .arg(&config_path)
            .arg("--use-dynamic-base-id")
            .arg("--admin-address-path")
            .arg(&admin_path)
            .args(["--log-level", "warn", "--concurrency", "1"])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut envoy = Self {
            child,
            listener: "127.0.0.1:0".parse().unwrap(),
            admin: "127.0.0.1:0".parse().unwrap(),
            _dir: dir,
        };
        // Ready signal: the admin address file, then the listener Envoy reports bound.
        let deadline = Instant::now() + Duration::from_secs(30);
        let admin = loop {
            assert!(
                envoy.child.try_wait().unwrap().is_none(),
                "envoy exited during start-up"
            );
            if let Ok(text) = std::fs::read_to_string(&admin_path)
                && let Ok(addr) = text.trim().parse::<SocketAddr>()
            {
                break addr;
            }
            assert!(Instant::now() < deadline, "envoy did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        envoy.admin = admin;
        let client = reqwest::Client::new();
        loop {
            if let Ok(resp) = client
                .get(format!("http://{admin}/listeners?format=json"))
                .send()
                .await
                && let Ok(v) = resp.json::<Value>().await
                && let Some(port) =
                    v["listener_statuses"][0]["local_address"]["socket_address"]["port_value"]
                        .as_u64()
                && port != 0
            {
                envoy.listener = SocketAddr::from(([127, 0, 0, 1], u16::try_from(port).unwrap()));
                break;
            }
            assert!(Instant::now() < deadline, "envoy listener did not come up");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        envoy
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.listener)
    }

    /// Envoy with HTTP ext_authz (`deploy/envoy/envoy-http.yaml`) in front of `upstream`,
    /// asking the server's HTTP listener.
    pub async fn start_http(server: &TestServer, upstream: SocketAddr) -> Self {
        let http_port = format!("port_value: {}", server.http.port());
        Self::start(
            "envoy-http.yaml",
            server.grpc,
            upstream,
            &[("port_value: 8181", http_port.as_str())],
        )
        .await
    }

    /// Starts `deploy/envoy/envoy.yaml` with its demo JWKS replaced by `key`'s.
    pub async fn start_with_jwks(authz: SocketAddr, upstream: SocketAddr, key: &JwtKey) -> Self {
        let config = std::fs::read_to_string(root().join("deploy/envoy/envoy.yaml")).unwrap();
        let demo_jwks = config
            .lines()
            .find_map(|l| l.trim().strip_prefix("inline_string: "))
            .unwrap()
            .to_owned();
        let jwks = format!("'{}'", key.jwks());
        Self::start(
            "envoy.yaml",
            authz,
            upstream,
            &[(demo_jwks.as_str(), jwks.as_str())],
        )
        .await
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the real grpcurl (reflection only, no proto files) and returns its stdout as JSON.
pub fn grpcurl(addr: SocketAddr, method: &str, data: &Value) -> Value {
    let out = Command::new(tool("grpcurl"))
        .args([
            "-plaintext",
            "-d",
            &data.to_string(),
            &addr.to_string(),
            method,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "grpcurl {method} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

/// Runs grpcurl with raw arguments; returns (success, stdout, stderr).
pub fn grpcurl_raw(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(tool("grpcurl")).args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub fn b64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

/// An ES256 signing key and its JWKS.
pub struct JwtKey {
    key: ring::signature::EcdsaKeyPair,
    rng: ring::rand::SystemRandom,
}

impl JwtKey {
    pub fn generate() -> Self {
        use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap();
        Self { key, rng }
    }

    pub fn jwks(&self) -> String {
        use ring::signature::KeyPair;
        let public = self.key.public_key().as_ref();
        json!({"keys": [{"kty": "EC", "crv": "P-256", "alg": "ES256", "kid": "test",
            "x": b64url(&public[1..33]), "y": b64url(&public[33..65])}]})
        .to_string()
    }

    pub fn token(&self, claims: &Value) -> String {
        let header = b64url(
            json!({"alg": "ES256", "typ": "JWT", "kid": "test"})
                .to_string()
                .as_bytes(),
        );
        let payload = b64url(claims.to_string().as_bytes());
        let input = format!("{header}.{payload}");
        let sig = self.key.sign(&self.rng, input.as_bytes()).unwrap();
        format!("{input}.{}", b64url(sig.as_ref()))
    }
}

/// A real nginx (Debian's package) started from `deploy/nginx/nginx.conf` with the ports
/// substituted, in its own prefix directory.
pub struct Nginx {
    child: Child,
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Nginx {
    pub async fn start(authz_http: SocketAddr, upstream: SocketAddr) -> Self {
        let text = std::fs::read_to_string(root().join("deploy/nginx/nginx.conf")).unwrap();
        // nginx cannot report a port-0 bind, so pick a free port and retry if it is taken
        // before nginx binds it.
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let config = text
                .replace(
                    "listen 127.0.0.1:8000;",
                    &format!("listen 127.0.0.1:{port};"),
                )
                .replace("server 127.0.0.1:8080;", &format!("server {upstream};"))
                .replace("http://127.0.0.1:8181/", &format!("http://{authz_http}/"));
            let dir = tempfile::tempdir().unwrap();
            let conf = dir.path().join("nginx.conf");
            std::fs::write(&conf, config).unwrap();
            let mut child = Command::new(tool("nginx"))
                .arg("-p")
                .arg(dir.path())
                .arg("-c")
                .arg(&conf)
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .unwrap();
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if child.try_wait().unwrap().is_some() {
                    break; // Exited: most likely the port was taken; try another.
                }
                if tokio::net::TcpStream::connect(addr).await.is_ok() {
                    return Self {
                        child,
                        addr,
                        _dir: dir,
                    };
                }
                assert!(Instant::now() < deadline, "nginx did not start");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        panic!("nginx could not start");
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every turn of a server's query pool, held by queries that wait until released, so a
/// test can see that a request waits for a turn. Dropped (a failed assertion too), the
/// turns are freed, so the holders end and the test can shut its server down.
pub struct HeldTurns {
    free: Arc<std::sync::atomic::AtomicBool>,
    holders: Vec<tokio::task::JoinHandle<Result<(), tonic::Status>>>,
}

impl HeldTurns {
    /// Takes every turn of `app`'s query pool, and returns once all are taken.
    pub async fn take(app: &Arc<App>) -> Self {
        use std::sync::atomic::{AtomicBool, Ordering};
        let free = Arc::new(AtomicBool::new(false));
        let holders = (0..app.queries.limit())
            .map(|_| {
                let (app, free) = (app.clone(), free.clone());
                tokio::spawn(async move {
                    app.queries
                        .run(move |_| {
                            while !free.load(Ordering::Relaxed) {
                                std::thread::sleep(Duration::from_millis(1));
                            }
                        })
                        .await
                })
            })
            .collect();
        while app.queries.in_flight() < app.queries.limit() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Self { free, holders }
    }

    /// Frees the turns and waits until every holder has given its turn back.
    pub async fn release(mut self) {
        self.free.store(true, std::sync::atomic::Ordering::Relaxed);
        for holder in std::mem::take(&mut self.holders) {
            holder.await.unwrap().unwrap();
        }
    }
}

impl Drop for HeldTurns {
    fn drop(&mut self) {
        self.free.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}
