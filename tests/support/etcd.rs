//! A real etcd (Debian's `etcd-server`) on loopback ports with a temporary data dir, one
//! member or a cluster, and `etcdctl` to write into it behind the server's back.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use iot_authz::live::PolicyState;
use iot_authz::policy::SourceDocument;
use iot_authz::server::{App, AppOptions, ServerOptions};
use iot_authz::store::{Store, StoreOptions};
use serde_json::Value;

use super::{TestServer, tool};

/// A loopback port that was free a moment ago. etcd cannot bind port 0 and report it, so
/// the port is found by binding 0 and letting go.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One etcd member.
pub struct Member {
    pub name: String,
    pub client: String,
    pub peer: String,
    child: Option<Child>,
}

/// A running etcd cluster (one member unless started with more).
pub struct Etcd {
    pub members: Vec<Member>,
    cluster: String,
    dir: tempfile::TempDir,
    /// `USER:PASSWORD` for etcdctl, once etcd's authentication is on.
    user: Option<String>,
}

impl Etcd {
    /// A single member; returns once it answers.
    pub async fn start() -> Self {
        Self::start_cluster(1).await
    }

    /// `n` members on loopback; returns once the cluster answers.
    pub async fn start_cluster(n: usize) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut members: Vec<Member> = (0..n)
            .map(|i| Member {
                name: format!("m{i}"),
                client: format!("http://127.0.0.1:{}", free_port()),
                peer: format!("http://127.0.0.1:{}", free_port()),
                child: None,
            })
            .collect();
        let cluster = members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer))
            .collect::<Vec<_>>()
            .join(",");
        let mut etcd = Self {
            members: Vec::new(),
            cluster,
            dir,
            user: None,
        };
        for m in &mut members {
            m.child = Some(etcd.spawn(m));
        }
        etcd.members = members;
        etcd.wait_healthy().await;
        etcd
    }

    fn spawn(&self, m: &Member) -> Child {
        let data: PathBuf = self.dir.path().join(&m.name);
        Command::new(tool("etcd"))
            .args(["--name", &m.name, "--data-dir"])
            .arg(&data)
            .args(["--listen-client-urls", &m.client])
            .args(["--advertise-client-urls", &m.client])
            .args(["--listen-peer-urls", &m.peer])
            .args(["--initial-advertise-peer-urls", &m.peer])
            .args(["--initial-cluster", &self.cluster])
            .args(["--initial-cluster-state", "new"])
            .args(["--log-level", "error"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    }

    /// Waits until a linearizable read succeeds through every running member (bounded).
    pub async fn wait_healthy(&self) {
        let endpoints = self.running_endpoints();
        let etcd = iot_authz::store::Etcd::connect(&endpoints, None).unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let ok = tokio::time::timeout(Duration::from_secs(1), etcd.get(b"health"))
                .await
                .is_ok_and(|r| r.is_ok());
            if ok {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "etcd did not become healthy"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Every member's client URL.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.client.clone()).collect()
    }

    fn running_endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .filter(|m| m.child.is_some())
            .map(|m| m.client.clone())
            .collect()
    }

    /// Stops member `i` (SIGKILL).
    pub fn stop_member(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts member `i` again on its data dir.
    pub fn restart_member(&mut self, i: usize) {
        let child = self.spawn(&self.members[i]);
        self.members[i].child = Some(child);
    }

    /// etcdctl's later calls authenticate as `USER:PASSWORD` (after `auth enable`).
    pub fn act_as(&mut self, user_password: &str) {
        self.user = Some(user_password.into());
    }

    /// `etcdctl ARGS` (standard input from `stdin`): whether it succeeded, and its output.
    pub fn etcdctl(&self, args: &[&str], stdin: Option<&[u8]>) -> (bool, String) {
        use std::io::Write;
        let mut child = Command::new(tool("etcdctl"))
            .env("ETCDCTL_API", "3")
            .arg(format!(
                "--endpoints={}",
                self.running_endpoints().join(",")
            ))
            .args(self.user.iter().map(|u| format!("--user={u}")))
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        if let Some(bytes) = stdin {
            child.stdin.take().unwrap().write_all(bytes).unwrap();
        }
        let out = child.wait_with_output().unwrap();
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        (out.status.success(), text)
    }

    /// `etcdctl put KEY` with the value on standard input; returns the store revision after
    /// the write.
    pub fn put(&self, key: &str, value: &[u8]) -> i64 {
        let (ok, out) = self.etcdctl(&["put", key, "-w", "json"], Some(value));
        assert!(ok, "etcdctl put failed: {out}");
        header_revision(&out)
    }

    /// `etcdctl del KEY`; returns the store revision after it.
    pub fn delete(&self, key: &str) -> i64 {
        let (ok, out) = self.etcdctl(&["del", key, "-w", "json"], None);
        assert!(ok, "etcdctl del failed: {out}");
        header_revision(&out)
    }

    /// `etcdctl get KEY --print-value-only`: the value, or `None` when the key is absent.
    pub fn get(&self, key: &str) -> Option<String> {
        let (ok, out) = self.etcdctl(&["get", key, "-w", "json"], None);
        assert!(ok, "etcdctl get failed: {out}");
        let v: Value = serde_json::from_str(out.trim()).unwrap();
        v["kvs"].as_array().and_then(|kvs| kvs.first()).map(|kv| {
            let b64 = kv["value"].as_str().unwrap_or("");
            String::from_utf8(base64_decode(b64)).unwrap()
        })
    }

    /// `etcdctl compact REV`.
    pub fn compact(&self, revision: i64) {
        let (ok, out) = self.etcdctl(&["compact", &revision.to_string()], None);
        assert!(ok, "etcdctl compact failed: {out}");
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.stop_member(i);
        }
    }
}

fn header_revision(json: &str) -> i64 {
    let v: Value = serde_json::from_str(json.trim())
        .unwrap_or_else(|e| panic!("etcdctl output {json:?}: {e}"));
    v["header"]["revision"].as_i64().unwrap()
}

fn base64_decode(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in text.bytes().filter(|c| *c != b'=') {
        let v = ALPHABET.iter().position(|a| *a == c).unwrap() as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

/// An in-process server whose policy is `files` plus the store at `etcd` under `prefix`,
/// following it; returns once the first policy is installed (or, with `wait: false`, at
/// once).
pub async fn serve_with_store(
    endpoints: Vec<String>,
    prefix: &str,
    files: &[(&str, &str)],
    configure: impl FnOnce(&mut StoreOptions),
    wait: bool,
) -> (TestServer, Arc<Store>) {
    serve_with_store_options(
        endpoints,
        prefix,
        files,
        configure,
        &AppOptions::default(),
        wait,
    )
    .await
}

/// [`serve_with_store`] with these app options (decision log, cache).
pub async fn serve_with_store_options(
    endpoints: Vec<String>,
    prefix: &str,
    files: &[(&str, &str)],
    configure: impl FnOnce(&mut StoreOptions),
    app_options: &AppOptions,
    wait: bool,
) -> (TestServer, Arc<Store>) {
    let mut options = StoreOptions::new(endpoints);
    options.prefix = prefix.into();
    configure(&mut options);
    let store = Arc::new(Store::new(options).unwrap());
    store.inputs().files = Some(
        files
            .iter()
            .map(|(n, t)| SourceDocument::new(*n, t.as_bytes()))
            .collect(),
    );
    let app = Arc::new(App::with_options(Arc::new(PolicyState::new()), app_options).unwrap());
    app.store.set(store.clone()).unwrap();
    tokio::spawn(iot_authz::store::follow::follow(
        store.clone(),
        app.clone(),
        std::future::pending(),
    ));
    let server = TestServer::start_app(app.clone(), ServerOptions::default()).await;
    if wait {
        let mut ready = app.policy.subscribe();
        tokio::time::timeout(Duration::from_secs(20), ready.wait_for(Option::is_some))
            .await
            .expect("the store was not loaded in time")
            .unwrap();
    }
    (server, store)
}

/// Waits until the store's change at `revision` has been judged (installed or rejected).
pub async fn judged(store: &Store, revision: i64) {
    let mut rx = store.judged();
    tokio::time::timeout(Duration::from_secs(20), rx.wait_for(|r| *r >= revision))
        .await
        .unwrap_or_else(|_| panic!("revision {revision} was not judged in time"))
        .unwrap();
}
