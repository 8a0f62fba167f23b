//! Live policy sources (SPEC §7) with real files, a real HTTP bundle server and the real
//! binary: every change pattern is picked up, every fault keeps the last good policy, and
//! answers under reload always match the revision they report.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use iot_authz::live::PolicyState;
use iot_authz::policy::source::{read_paths, revision};
use iot_authz::policy::{SourceDocument, compile_sources};
use iot_authz::proto::iotauthz::v1 as pb;
use iot_authz::proto::iotauthz::v1::authorizer_client::AuthorizerClient;
use iot_authz::sources::bundle::{self, BundleClient, BundleOptions};
use iot_authz::sources::files::{self, WatchOptions};
use iot_authz::sources::{LoadOutcome, Loader};
use tokio::sync::{mpsc, oneshot};

use crate::support::{TestServer, crypto};

/// Policy A denies `b/c` to user:x; policy B allows it.
const A: &str = "version: 1\nroles: [{name: R, actions: ['a/*']}]\nassignments: [{principal: 'user:x', role: R, scope: /}]\n";
const B: &str = "version: 1\nroles: [{name: R, actions: ['*']}]\nassignments: [{principal: 'user:x', role: R, scope: /}]\n";

fn rev(text: &str) -> String {
    revision(&[SourceDocument::new("x", text.as_bytes())])
}

struct Live {
    server: TestServer,
    client: AuthorizerClient<tonic::transport::Channel>,
    trigger: mpsc::Sender<()>,
    _stop: oneshot::Sender<()>,
}

/// The real server on the policy at `paths`, with the real file watcher.
async fn live(paths: Vec<PathBuf>, notify: bool) -> Live {
    let snapshot = compile_sources(&read_paths(&paths, u64::MAX).unwrap()).unwrap();
    let server = TestServer::start(snapshot).await;
    let loader = Loader::new(server.app.clone());
    let (trigger, trigger_rx) = mpsc::channel(1);
    let (stop, stopped) = oneshot::channel::<()>();
    let options = WatchOptions {
        debounce: Duration::from_millis(50),
        poll_interval: None,
        notify,
        max_bytes: 1024 * 1024,
    };
    let watcher = files::FileWatcher::start(loader, paths, options);
    tokio::spawn(watcher.run(trigger_rx, async {
        let _ = stopped.await;
    }));
    let client = AuthorizerClient::connect(server.grpc_url()).await.unwrap();
    Live {
        server,
        client,
        trigger,
        _stop: stop,
    }
}

async fn check_bc(client: &mut AuthorizerClient<tonic::transport::Channel>) -> pb::CheckResponse {
    client
        .check(pb::CheckRequest {
            principal: "user:x".into(),
            action: "b/c".into(),
            scope: "/".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
}

async fn status(client: &mut AuthorizerClient<tonic::transport::Channel>) -> pb::PolicyStatus {
    client
        .get_policy_status(pb::GetPolicyStatusRequest {})
        .await
        .unwrap()
        .into_inner()
}

/// Polls the status until `pred` holds, failing after a deadline (no fixed sleeps).
async fn wait_status(
    client: &mut AuthorizerClient<tonic::transport::Channel>,
    what: &str,
    pred: impl Fn(&pb::PolicyStatus) -> bool,
) -> pb::PolicyStatus {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let s = status(client).await;
        if pred(&s) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; status: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn wait_revision(client: &mut AuthorizerClient<tonic::transport::Channel>, text: &str) {
    let want = rev(text);
    wait_status(client, "the new revision", |s| s.revision == want).await;
}

async fn wait_error(
    client: &mut AuthorizerClient<tonic::transport::Channel>,
    needle: &str,
) -> String {
    wait_status(client, needle, |s| s.last_error.contains(needle))
        .await
        .last_error
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

/// Editors write a temporary file and rename it over the original.
fn write_then_rename(path: &Path, text: &str) {
    let tmp = path.with_extension("yaml.swp");
    write(&tmp, text);
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn editor_write_then_rename_is_picked_up() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("policy.yaml");
    write(&file, A);
    let mut live = live(vec![file.clone()], true).await;
    assert!(!check_bc(&mut live.client).await.allowed);
    write_then_rename(&file, B);
    wait_revision(&mut live.client, B).await;
    let r = check_bc(&mut live.client).await;
    assert!(r.allowed);
    assert_eq!(r.revision, rev(B));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_written_in_chunks_is_read_complete() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("policy.yaml");
    write(&file, A);
    let mut live = live(vec![file.clone()], true).await;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&file)
        .unwrap();
    let (first, rest) = B.split_at(B.len() / 2);
    f.write_all(first.as_bytes()).unwrap();
    f.flush().unwrap();
    f.write_all(rest.as_bytes()).unwrap();
    drop(f);
    let s = wait_status(&mut live.client, "the complete file", |s| {
        s.revision == rev(B)
    })
    .await;
    assert!(s.last_error.is_empty(), "{s:?}");
    assert!(check_bc(&mut live.client).await.allowed);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deleted_and_recreated_file_keeps_the_last_good_policy_in_between() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("policy.yaml");
    write(&file, A);
    let mut live = live(vec![file.clone()], true).await;
    std::fs::remove_file(&file).unwrap();
    let error = wait_error(&mut live.client, "policy.yaml").await;
    assert!(error.contains("cannot be read"), "{error}");
    let r = check_bc(&mut live.client).await;
    assert!(!r.allowed);
    assert_eq!(r.revision, rev(A));
    write(&file, B);
    wait_revision(&mut live.client, B).await;
    assert!(check_bc(&mut live.client).await.allowed);
    assert!(status(&mut live.client).await.last_error.is_empty());
}

/// A Kubernetes ConfigMap volume: `policy.yaml -> ..data/policy.yaml`, `..data ->
/// ..<timestamp>`, and an update swaps `..data` atomically to a new directory.
#[tokio::test(flavor = "multi_thread")]
async fn configmap_symlink_swaps_are_picked_up() {
    use std::os::unix::fs::symlink;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let v1 = root.join("..2026_11_22_00_00_00.1");
    std::fs::create_dir(&v1).unwrap();
    write(&v1.join("policy.yaml"), A);
    symlink("..2026_11_22_00_00_00.1", root.join("..data")).unwrap();
    symlink("..data/policy.yaml", root.join("policy.yaml")).unwrap();
    let mut live = live(vec![root.to_path_buf()], true).await;
    assert!(!check_bc(&mut live.client).await.allowed);
    let v2 = root.join("..2026_11_22_00_01_00.2");
    std::fs::create_dir(&v2).unwrap();
    write(&v2.join("policy.yaml"), B);
    symlink("..2026_11_22_00_01_00.2", root.join("..data_tmp")).unwrap();
    std::fs::rename(root.join("..data_tmp"), root.join("..data")).unwrap();
    std::fs::remove_dir_all(&v1).unwrap();
    wait_revision(&mut live.client, B).await;
    assert!(check_bc(&mut live.client).await.allowed);
}

/// A read of a ConfigMap volume that overlaps `..data` swaps sees one version of every file.
/// Each version's two documents name that version's role, so a read mixing the versions
/// does not compile. (Reading each file through `..data` separately mixed them in a large
/// share of these reads.)
#[test]
fn a_configmap_read_never_mixes_two_versions() {
    use std::os::unix::fs::symlink;
    use std::sync::atomic::AtomicBool;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    for (version, role) in [("..v1", "R1"), ("..v2", "R2")] {
        let v = root.join(version);
        std::fs::create_dir(&v).unwrap();
        write(
            &v.join("00-roles.yaml"),
            &format!("version: 1\nroles: [{{name: {role}, actions: ['*']}}]\n"),
        );
        write(
            &v.join("10-assignments.yaml"),
            &format!(
                "version: 1\nassignments: [{{principal: 'user:x', role: {role}, scope: /}}]\n"
            ),
        );
    }
    symlink("..v1", root.join("..data")).unwrap();
    for name in ["00-roles.yaml", "10-assignments.yaml"] {
        symlink(format!("..data/{name}"), root.join(name)).unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let swapper = {
        let (stop, root) = (stop.clone(), root.clone());
        std::thread::spawn(move || {
            let mut swaps = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let version = if swaps.is_multiple_of(2) {
                    "..v2"
                } else {
                    "..v1"
                };
                symlink(version, root.join("..data_tmp")).unwrap();
                std::fs::rename(root.join("..data_tmp"), root.join("..data")).unwrap();
                swaps += 1;
            }
            swaps
        })
    };
    let deadline = Instant::now() + Duration::from_secs(2);
    let (mut reads, mut mixed) = (0u64, Vec::new());
    while Instant::now() < deadline {
        let docs = read_paths(std::slice::from_ref(&root), u64::MAX).unwrap();
        assert_eq!(
            docs[0].name,
            root.join("00-roles.yaml").display().to_string()
        );
        if let Err(e) = compile_sources(&docs) {
            mixed.push(e.to_string());
        }
        reads += 1;
    }
    stop.store(true, Ordering::Relaxed);
    let swaps = swapper.join().unwrap();
    assert!(swaps > 100 && reads > 100, "{swaps} swaps, {reads} reads");
    assert!(
        mixed.is_empty(),
        "{} of {reads} reads mixed two versions, first: {}",
        mixed.len(),
        mixed[0]
    );
}

/// A file behind a symlinked directory (`current` → `release-1`): replacing the symlink
/// is seen as a change (no polling here).
#[tokio::test(flavor = "multi_thread")]
async fn a_swapped_symlink_above_a_file_is_picked_up() {
    use std::os::unix::fs::symlink;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    for (release, text) in [("release-1", A), ("release-2", B)] {
        std::fs::create_dir(root.join(release)).unwrap();
        write(&root.join(release).join("policy.yaml"), text);
    }
    symlink("release-1", root.join("current")).unwrap();
    let mut live = live(vec![root.join("current/policy.yaml")], true).await;
    assert_eq!(status(&mut live.client).await.revision, rev(A));
    symlink("release-2", root.join("current.tmp")).unwrap();
    std::fs::rename(root.join("current.tmp"), root.join("current")).unwrap();
    wait_revision(&mut live.client, B).await;
    // And back, through the watch renewed on the new target's path.
    symlink("release-1", root.join("current.tmp")).unwrap();
    std::fs::rename(root.join("current.tmp"), root.join("current")).unwrap();
    wait_revision(&mut live.client, A).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_directory_gaining_and_losing_a_file() {
    let dir = tempfile::tempdir().unwrap();
    write(
        &dir.path().join("00-roles.yaml"),
        "version: 1\nroles: [{name: R, actions: ['*']}]\n",
    );
    let mut live = live(vec![dir.path().to_path_buf()], true).await;
    assert!(!check_bc(&mut live.client).await.allowed);
    let extra = dir.path().join("10-assignments.yaml");
    write(
        &extra,
        "version: 1\nassignments: [{principal: 'user:x', role: R, scope: /}]\n",
    );
    wait_status(&mut live.client, "the added file", |s| s.sources.len() == 2).await;
    assert!(check_bc(&mut live.client).await.allowed);
    std::fs::remove_file(&extra).unwrap();
    wait_status(&mut live.client, "the removed file", |s| {
        s.sources.len() == 1
    })
    .await;
    assert!(!check_bc(&mut live.client).await.allowed);
    // Hidden files and other extensions are not policy.
    write(&dir.path().join(".hidden.yaml"), "not: [valid");
    write(&dir.path().join("notes.txt"), "not: [valid");
    live.trigger.send(()).await.unwrap();
    let s = wait_status(&mut live.client, "a quiet reload", |s| s.sources.len() == 1).await;
    assert!(s.last_error.is_empty(), "{s:?}");
}

/// A fault: its name, how to cause it, and what the error must say.
type Fault = (&'static str, Box<dyn Fn(&Path)>, &'static str);

#[tokio::test(flavor = "multi_thread")]
async fn faults_keep_the_last_good_policy_and_show_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("policy.yaml");
    write(&file, A);
    let mut live = live(vec![file.clone()], true).await;
    let faults: [Fault; 5] = [
        (
            "invalid YAML",
            Box::new(|f: &Path| write(f, "version: 1\nroles: [{name: R\n")),
            "invalid YAML",
        ),
        (
            "unknown key",
            Box::new(|f: &Path| write(f, &A.replace("actions", "actionz"))),
            "actionz",
        ),
        (
            "half-written file",
            Box::new(|f: &Path| write(f, &B[..B.len() - 20])),
            "policy.yaml",
        ),
        (
            "file replaced by a directory",
            Box::new(|f: &Path| {
                std::fs::remove_file(f).unwrap();
                std::fs::create_dir(f).unwrap();
            }),
            "no *.yaml",
        ),
        (
            // Tests run as root, which reads any file whatever its mode: an unreadable file is
            // made with a dangling symlink instead.
            "unreadable file",
            Box::new(|f: &Path| {
                if f.is_dir() {
                    std::fs::remove_dir(f).unwrap();
                } else {
                    std::fs::remove_file(f).unwrap();
                }
                std::os::unix::fs::symlink("/nonexistent/policy.yaml", f).unwrap();
            }),
            "cannot be read",
        ),
    ];
    for (name, break_it, needle) in faults.iter() {
        break_it(&file);
        let error = wait_error(&mut live.client, needle).await;
        assert!(error.contains("policy.yaml"), "{name}: {error}");
        let r = check_bc(&mut live.client).await;
        assert!(!r.allowed, "{name}");
        assert_eq!(r.revision, rev(A), "{name}");
        // Restore A for the next fault (the same revision, so nothing is installed).
        if file.is_dir() {
            std::fs::remove_dir(&file).unwrap();
        } else {
            std::fs::remove_file(&file).unwrap();
        }
        write(&file, A);
        // The sources are the serving policy again: the error no longer describes them.
        wait_status(&mut live.client, "the error to clear", |s| {
            s.last_error.is_empty()
        })
        .await;
    }
    let metrics = live.server.metrics().await;
    assert!(
        metrics.contains(r#"iot_authz_policy_reloads_total{result="failure"}"#),
        "{metrics}"
    );
    // A later good version is picked up as usual.
    write_then_rename(&file, B);
    wait_revision(&mut live.client, B).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deleted_directory_keeps_the_last_good_policy() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("policies");
    std::fs::create_dir(&dir).unwrap();
    write(&dir.join("p.yaml"), A);
    let mut live = live(vec![dir.clone()], true).await;
    std::fs::remove_dir_all(&dir).unwrap();
    let error = wait_error(&mut live.client, "policies").await;
    // `remove_dir_all` deletes the file before the directory, so a reload may see the
    // directory empty or gone: either is a failed load that keeps the last good policy.
    assert!(
        error.contains("cannot be read") || error.contains("holds no"),
        "{error}"
    );
    assert_eq!(check_bc(&mut live.client).await.revision, rev(A));
    std::fs::create_dir(&dir).unwrap();
    write(&dir.join("p.yaml"), B);
    wait_revision(&mut live.client, B).await;
}

/// A file in a watched directory rewritten without pause (more often than the 50 ms
/// debounce) delays a reload by at most ten debounce periods; it cannot hold reloads back.
#[tokio::test(flavor = "multi_thread")]
async fn a_file_rewritten_without_pause_does_not_hold_reloads_back() {
    let dir = tempfile::tempdir().unwrap();
    write(&dir.path().join("p.yaml"), A);
    let mut live = live(vec![dir.path().to_path_buf()], true).await;
    let noisy = dir.path().join("noise.txt");
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                std::fs::write(&noisy, n.to_string()).unwrap();
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let written = std::time::Instant::now();
    write_then_rename(&dir.path().join("p.yaml"), B);
    wait_revision(&mut live.client, B).await;
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    // Ten periods are 0.5 s; the bound leaves room for a busy machine, and still catches
    // a cap ten times too loose.
    let took = written.elapsed();
    assert!(took < Duration::from_secs(3), "the reload waited {took:?}");
}

/// The revision hashes bytes only; a file renamed without a change of bytes is still read
/// again under its new name (here YAML renamed to `.json`, which then does not parse).
#[tokio::test(flavor = "multi_thread")]
async fn a_renamed_file_is_validated_under_its_new_name() {
    let dir = tempfile::tempdir().unwrap();
    write(&dir.path().join("p.yaml"), A);
    let mut live = live(vec![dir.path().to_path_buf()], true).await;
    std::fs::rename(dir.path().join("p.yaml"), dir.path().join("p.json")).unwrap();
    let error = wait_error(&mut live.client, "p.json").await;
    assert!(error.contains("invalid JSON"), "{error}");
    assert_eq!(check_bc(&mut live.client).await.revision, rev(A));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_policy_over_the_size_limit_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("policy.yaml");
    write(&file, A);
    let mut live = live(vec![file.clone()], true).await;
    let big = format!("{B}# {}\n", "x".repeat(2 * 1024 * 1024));
    write(&file, &big);
    let error = wait_error(&mut live.client, "size limit").await;
    assert!(error.contains("policy.yaml"), "{error}");
    assert_eq!(check_bc(&mut live.client).await.revision, rev(A));
}

/// Checks hammer the server while the file is swapped 50 times: no request fails, and every
/// answer is the one its reported revision gives.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reload_under_load_never_fails_or_mixes_revisions() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("policy.yaml");
    write(&file, A);
    let mut live = live(vec![file.clone()], true).await;
    let (rev_a, rev_b) = (rev(A), rev(B));
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..8 {
        let mut client = AuthorizerClient::connect(live.server.grpc_url())
            .await
            .unwrap();
        let (done, answered, rev_a, rev_b) =
            (done.clone(), answered.clone(), rev_a.clone(), rev_b.clone());
        workers.push(tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                let r = check_bc(&mut client).await;
                assert!(
                    r.revision == rev_a || r.revision == rev_b,
                    "unknown revision {}",
                    r.revision
                );
                assert_eq!(
                    r.allowed,
                    r.revision == rev_b,
                    "answer does not match revision {}",
                    r.revision
                );
                answered.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for i in 0..50 {
        let text = if i % 2 == 0 { B } else { A };
        write_then_rename(&file, text);
        wait_revision(&mut live.client, text).await;
    }
    done.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    assert!(answered.load(Ordering::Relaxed) > 50);
}

/// A canned answer: status, body, ETag.
type Canned = (u16, Vec<u8>, Option<String>);

/// A tiny bundle server whose answers the test sets.
#[derive(Clone, Default)]
struct BundleServer {
    response: Arc<std::sync::Mutex<Canned>>,
    conditional_hits: Arc<AtomicUsize>,
    hang: Arc<std::sync::atomic::AtomicBool>,
    auth: Arc<std::sync::Mutex<Option<String>>>,
}

impl BundleServer {
    async fn start(&self) -> String {
        let state = self.clone();
        let app = axum::Router::new().fallback(move |headers: axum::http::HeaderMap| {
            let state = state.clone();
            async move {
                *state.auth.lock().unwrap() = headers
                    .get("authorization")
                    .map(|v| v.to_str().unwrap().to_owned());
                if state.hang.load(Ordering::Relaxed) {
                    std::future::pending::<()>().await;
                }
                let (code, body, etag) = state.response.lock().unwrap().clone();
                let mut response = axum::response::Response::builder().status(code);
                if let Some(tag) = &etag {
                    if headers.get("if-none-match").and_then(|v| v.to_str().ok())
                        == Some(tag.as_str())
                    {
                        state.conditional_hits.fetch_add(1, Ordering::Relaxed);
                        return response
                            .status(304)
                            .body(axum::body::Body::empty())
                            .unwrap();
                    }
                    response = response.header("etag", tag);
                }
                response.body(axum::body::Body::from(body)).unwrap()
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        format!("http://{addr}/bundle")
    }

    fn set(&self, code: u16, body: impl Into<Vec<u8>>, etag: Option<&str>) {
        *self.response.lock().unwrap() = (code, body.into(), etag.map(str::to_owned));
    }
}

fn tar_gz(files: &[(&str, &str)]) -> Vec<u8> {
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::default(),
    ));
    for (name, text) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(text.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder
            .append_data(&mut header, name, text.as_bytes())
            .unwrap();
    }
    builder.into_inner().unwrap().finish().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn bundles_are_fetched_conditionally_and_faults_keep_the_last_good_policy() {
    crypto();
    let bundles = BundleServer::default();
    let url = bundles.start().await;
    let server = TestServer::start_with(Arc::new(PolicyState::new()), Default::default()).await;
    let loader = Loader::new(server.app.clone());
    let token = tempfile::NamedTempFile::new().unwrap();
    write(token.path(), "s3cret\n");
    let mut options = BundleOptions::new(url.clone());
    options.timeout = Duration::from_millis(500);
    options.token_file = Some(token.path().to_path_buf());
    let mut client = BundleClient::new(options).unwrap();
    let http = reqwest::Client::new();
    let ready = |http: &reqwest::Client| http.get(format!("http://{}/readyz", server.http)).send();

    // Unreachable (500) before any policy: not ready.
    bundles.set(500, "oops", None);
    assert!(
        matches!(bundle::poll_once(&mut client, &loader).await, LoadOutcome::Rejected(m) if m.contains("500"))
    );
    assert_eq!(ready(&http).await.unwrap().status(), 503);
    // A single YAML document.
    bundles.set(200, A, Some("\"v1\""));
    assert_eq!(
        bundle::poll_once(&mut client, &loader).await,
        LoadOutcome::Installed(rev(A))
    );
    assert_eq!(
        bundles.auth.lock().unwrap().as_deref(),
        Some("Bearer s3cret")
    );
    assert_eq!(ready(&http).await.unwrap().status(), 200);
    // Not modified: the ETag is sent back.
    assert_eq!(
        bundle::poll_once(&mut client, &loader).await,
        LoadOutcome::Unchanged
    );
    assert_eq!(bundles.conditional_hits.load(Ordering::Relaxed), 1);
    // A tar.gz of documents.
    let roles = "version: 1\nroles: [{name: R, actions: ['*']}]\n";
    let assignments = "version: 1\nassignments: [{principal: 'user:x', role: R, scope: /}]\n";
    let tgz = tar_gz(&[
        ("policy/10-assignments.yaml", assignments),
        ("policy/00-roles.yaml", roles),
        ("policy/.hidden.yaml", "x: ["),
        ("policy/.git/x.yaml", "x: ["),
        ("policy/UPPER.YAML", "x: ["),
        ("./policy/notes.txt", "x: ["),
    ]);
    bundles.set(200, tgz.clone(), Some("\"v2\""));
    assert!(matches!(
        bundle::poll_once(&mut client, &loader).await,
        LoadOutcome::Installed(_)
    ));
    let good = server
        .app
        .policy
        .current()
        .unwrap()
        .snapshot
        .revision
        .clone();
    assert!(server.app.policy.current().unwrap().snapshot.sources[0].ends_with("00-roles.yaml"));
    // Faults: 500, garbage, truncated tar.gz, an invalid policy, a hanging server.
    let faults: Vec<(&str, Vec<u8>, &str)> = vec![
        ("server error", b"oops".to_vec(), "500"),
        ("garbage", vec![0xff, 0x00, 0x13, 0x37], "UTF-8"),
        ("truncated tar.gz", tgz[..tgz.len() / 2].to_vec(), "bundle"),
        (
            "invalid policy",
            b"version: 1\nroles: [{nam: R}]\n".to_vec(),
            "unknown field",
        ),
    ];
    for (i, (name, body, needle)) in faults.into_iter().enumerate() {
        let code = if name == "server error" { 500 } else { 200 };
        bundles.set(code, body, Some(&format!("\"bad{i}\"")));
        let outcome = bundle::poll_once(&mut client, &loader).await;
        assert!(
            matches!(&outcome, LoadOutcome::Rejected(m) if m.contains(needle)),
            "{name}: {outcome:?}"
        );
        assert_eq!(
            server.app.policy.current().unwrap().snapshot.revision,
            good,
            "{name}"
        );
        assert_eq!(
            ready(&http).await.unwrap().status(),
            200,
            "{name}: a failing source must not make us unready"
        );
    }
    bundles.hang.store(true, Ordering::Relaxed);
    let outcome = bundle::poll_once(&mut client, &loader).await;
    assert!(
        matches!(&outcome, LoadOutcome::Rejected(m) if m.contains("request failed")),
        "{outcome:?}"
    );
    assert_eq!(server.app.policy.current().unwrap().snapshot.revision, good);
    assert!(server.app.policy.last_error().is_some());
    bundles.hang.store(false, Ordering::Relaxed);
    // The server is back with the bundle that is serving: 304, and the error is cleared
    // (it no longer describes the source).
    bundles.set(200, tgz.clone(), Some("\"v2\""));
    assert_eq!(
        bundle::poll_once(&mut client, &loader).await,
        LoadOutcome::Unchanged
    );
    assert!(server.app.policy.last_error().is_none());
    bundles.set(500, "oops", None);
    assert!(matches!(
        bundle::poll_once(&mut client, &loader).await,
        LoadOutcome::Rejected(_)
    ));
    // A later good bundle is installed and clears the error.
    bundles.set(200, B, Some("\"v3\""));
    assert_eq!(
        bundle::poll_once(&mut client, &loader).await,
        LoadOutcome::Installed(rev(B))
    );
    assert!(server.app.policy.last_error().is_none());
}

/// SIGHUP's trigger makes the bundle poller fetch at once instead of at its next interval
/// (an hour here).
#[tokio::test(flavor = "multi_thread")]
async fn a_trigger_fetches_the_bundle_at_once() {
    crypto();
    let bundles = BundleServer::default();
    let url = bundles.start().await;
    bundles.set(200, A, Some("\"a\""));
    let server = TestServer::start_with(Arc::new(PolicyState::new()), Default::default()).await;
    let mut options = BundleOptions::new(url);
    options.interval = Duration::from_secs(3600);
    let client = BundleClient::new(options).unwrap();
    let (trigger, trigger_rx) = mpsc::channel(1);
    let (_stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(bundle::poll(
        client,
        Loader::new(server.app.clone()),
        trigger_rx,
        async {
            let _ = stopped.await;
        },
    ));
    let mut grpc = AuthorizerClient::connect(server.grpc_url()).await.unwrap();
    wait_revision(&mut grpc, A).await;
    bundles.set(200, B, Some("\"b\""));
    trigger.send(()).await.unwrap();
    wait_revision(&mut grpc, B).await;
}

/// A pre-signed bundle URL carries its credential in the query (and some in the user
/// information). Problems, logs and document names show the URL without them, including
/// the HTTP client's own error text.
#[tokio::test]
async fn bundle_urls_are_shown_without_their_credentials() {
    assert_eq!(
        bundle::shown_url(
            "https://user:pw@example.com/p/policy.tar.gz?X-Amz-Signature=SECRET123#x"
        ),
        "https://example.com/p/policy.tar.gz"
    );
    assert_eq!(bundle::shown_url("not a url?sig=SECRET123"), "not a url");
    // Port 1 on loopback refuses the connection at once.
    let url = "http://127.0.0.1:1/policy.yaml?X-Amz-Signature=SECRET123";
    let mut client = BundleClient::new(BundleOptions::new(url)).unwrap();
    let error = client.fetch().await.unwrap_err();
    let shown = format!("{error} {error:?}");
    assert!(!shown.contains("SECRET123"), "{shown}");
    assert!(shown.contains("http://127.0.0.1:1/policy.yaml"), "{shown}");
    assert!(shown.contains("request failed"), "{shown}");
    // Documents of a bundle are named after the shown URL.
    let docs = bundle::unpack(url, b"version: 1\n", 1 << 20).unwrap();
    assert_eq!(docs[0].name, "http://127.0.0.1:1/policy.yaml");
}

#[test]
fn backoff_grows_with_jitter_and_is_capped() {
    let mut options = BundleOptions::new("http://x");
    options.interval = Duration::from_secs(10);
    options.max_backoff = Duration::from_secs(60);
    assert_eq!(bundle::backoff(&options, 0), Duration::from_secs(10));
    let first = bundle::backoff(&options, 1);
    assert!(
        first >= Duration::from_secs(10) && first < Duration::from_secs(20),
        "{first:?}"
    );
    // The jitter varies: a constant factor would give one value every time.
    let mut seen: Vec<Duration> = (0..64).map(|_| bundle::backoff(&options, 1)).collect();
    seen.sort_unstable();
    seen.dedup();
    assert!(seen.len() > 8, "{seen:?}");
    for failures in [5, 50, u32::MAX] {
        let b = bundle::backoff(&options, failures);
        assert!(
            b >= Duration::from_secs(30) && b < Duration::from_secs(60),
            "{b:?}"
        );
    }
}

/// The real binary: SIGHUP reloads even with file watching and polling off.
#[test]
fn sighup_forces_a_reload_in_the_real_binary() {
    use std::process::Command;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("policy.yaml");
    write(&file, A);
    let (mut child, grpc, _) = crate::support::serve_binary(
        [
            std::ffi::OsStr::new("--no-watch"),
            std::ffi::OsStr::new("--policy-poll-seconds"),
            std::ffi::OsStr::new("0"),
            std::ffi::OsStr::new("--policy"),
            file.as_os_str(),
        ],
        &[],
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut client = AuthorizerClient::connect(format!("http://{grpc}"))
            .await
            .unwrap();
        assert_eq!(status(&mut client).await.revision, rev(A));
        write(&file, B);
        let pid = child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-HUP", &pid])
                .status()
                .unwrap()
                .success()
        );
        wait_revision(&mut client, B).await;
        assert!(check_bc(&mut client).await.allowed);
    });
    assert!(
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    assert!(child.wait().unwrap().success());
}

#[test]
fn an_invalid_policy_at_start_up_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("policy.yaml");
    write(&file, "version: 1\nroles: [{name: R, actionz: []}]\n");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_iot-authz"))
        .args([
            "serve",
            "--grpc-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
            "--policy",
        ])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("policy.yaml") && stderr.contains("actionz"),
        "{stderr}"
    );
}

mod cache {
    use super::*;
    use iot_authz::server::AppOptions;
    use iot_authz::server::cache::CacheOptions;

    fn at(seconds: i64) -> Option<prost_types::Timestamp> {
        Some(prost_types::Timestamp { seconds, nanos: 0 })
    }

    /// The policy `text` served with a decision cache of `capacity` entries and a long TTL.
    async fn cached(text: &str, capacity: u64) -> TestServer {
        let cache = CacheOptions {
            capacity,
            ttl: Duration::from_secs(3600),
        };
        let options = AppOptions {
            cache: Some(cache),
            ..AppOptions::default()
        };
        TestServer::start_options(crate::support::policy(text), &options).await
    }

    /// A cache with a long TTL: a policy swap and a time-window boundary both take effect at
    /// once, and repeated questions are hits.
    #[tokio::test(flavor = "multi_thread")]
    async fn the_cache_never_serves_a_stale_answer() {
        crypto();
        const T: i64 = 1_800_000_000; // 2027-01-15T08:00:00Z
        let windowed = "version: 1\nroles: [{name: R, actions: ['*']}]\nassignments:\n  - {principal: 'user:x', role: R, scope: /, notBefore: '2027-01-15T08:00:00Z', notAfter: '2027-01-15T09:00:00Z'}\n";
        let server = cached(windowed, 10_000).await;
        let app = server.app.clone();
        let mut client = AuthorizerClient::connect(server.grpc_url()).await.unwrap();
        let ask = |seconds: i64| pb::CheckRequest {
            principal: "user:x".into(),
            action: "b/c".into(),
            scope: "/".into(),
            at: at(seconds),
            ..Default::default()
        };
        // Before, inside and after the window; each asked twice (the second is a hit).
        for (seconds, allowed) in [
            (T - 1, false),
            (T, true),
            (T + 3599, true),
            (T + 3600, false),
            (T - 1, false),
        ] {
            for _ in 0..2 {
                let r = client.check(ask(seconds)).await.unwrap().into_inner();
                assert_eq!(r.allowed, allowed, "at {seconds}");
            }
        }
        let hits = app.metrics.cache.hits.get();
        assert!(hits >= 4, "hits {hits}");
        // A policy swap takes effect at once, however long the TTL.
        app.install(crate::support::policy(A));
        let r = client.check(ask(T)).await.unwrap().into_inner();
        assert!(!r.allowed);
        assert_eq!(r.revision, crate::support::policy(A).revision);
        let metrics = server.metrics().await;
        assert!(
            metrics.contains("iot_authz_decision_cache_hits_total"),
            "{metrics}"
        );
    }

    /// A request whose strings are long (here 200 caller groups) is answered without the
    /// cache, so callers cannot make the cache hold megabytes per entry: the same request
    /// asked again is not a hit, and its answer is still right.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_request_with_long_strings_is_answered_without_the_cache() {
        crypto();
        let server = cached(B, 10_000).await;
        let app = server.app.clone();
        let mut client = AuthorizerClient::connect(server.grpc_url()).await.unwrap();
        let groups: Vec<String> = (0..200)
            .map(|i| format!("group:caller-supplied-group-number-{i:04}"))
            .collect();
        let ask = |groups: Vec<String>| pb::CheckRequest {
            principal: "user:x".into(),
            action: "b/c".into(),
            scope: "/".into(),
            groups,
            ..Default::default()
        };
        for _ in 0..3 {
            let r = client
                .check(ask(groups.clone()))
                .await
                .unwrap()
                .into_inner();
            assert!(r.allowed);
        }
        assert_eq!(app.metrics.cache.hits.get(), 0);
        assert_eq!(app.metrics.cache.misses.get(), 3);
        // Many short groups: 1.8 KB of text, but each group is an allocation of its own and
        // a pointer, so the entry would hold about 6 KB: answered without the cache too.
        let short: Vec<String> = (0..200).map(|i| format!("group:g{i:03}")).collect();
        for _ in 0..2 {
            assert!(
                client
                    .check(ask(short.clone()))
                    .await
                    .unwrap()
                    .into_inner()
                    .allowed
            );
        }
        assert_eq!(app.metrics.cache.hits.get(), 0);
        assert_eq!(app.metrics.cache.misses.get(), 5);
        // A short request is cached as usual.
        for _ in 0..2 {
            let r = client.check(ask(Vec::new())).await.unwrap().into_inner();
            assert!(r.allowed);
        }
        assert_eq!(app.metrics.cache.hits.get(), 1);
    }

    /// The cache is keyed by every input: changing any one of them is a miss with its own
    /// answer.
    #[tokio::test(flavor = "multi_thread")]
    async fn every_input_is_part_of_the_key() {
        let policy = "version: 1\nroles: [{name: R, actions: ['a/*'], dataActions: ['d/*']}]\nassignments:\n  - {principal: 'group:g', role: R, scope: /s}\n";
        let server = cached(policy, 100).await;
        let app = server.app.clone();
        let mut client = AuthorizerClient::connect(server.grpc_url()).await.unwrap();
        let base = pb::CheckRequest {
            principal: "user:x".into(),
            action: "a/b".into(),
            scope: "/s/t".into(),
            groups: vec!["group:g".into()],
            ..Default::default()
        };
        let cases: Vec<(pb::CheckRequest, bool)> = vec![
            (base.clone(), true),
            (
                pb::CheckRequest {
                    groups: vec![],
                    ..base.clone()
                },
                false,
            ),
            (
                pb::CheckRequest {
                    principal: "user:y".into(),
                    ..base.clone()
                },
                true,
            ),
            (
                pb::CheckRequest {
                    action: "d/b".into(),
                    ..base.clone()
                },
                false,
            ),
            (
                pb::CheckRequest {
                    action: "d/b".into(),
                    data_action: true,
                    ..base.clone()
                },
                true,
            ),
            (
                pb::CheckRequest {
                    scope: "/other".into(),
                    ..base.clone()
                },
                false,
            ),
            (
                pb::CheckRequest {
                    action: "A/B".into(),
                    scope: "/S/T".into(),
                    ..base.clone()
                },
                true,
            ),
        ];
        for round in 0..2 {
            for (req, allowed) in &cases {
                assert_eq!(
                    client
                        .check(req.clone())
                        .await
                        .unwrap()
                        .into_inner()
                        .allowed,
                    *allowed,
                    "round {round}: {req:?}"
                );
            }
        }
        assert!(app.metrics.cache.hits.get() >= cases.len() as u64);
        // Action and scope are keyed ignoring ASCII case: another spelling of a cached
        // request is a hit, not a miss.
        let (hits, misses) = (app.metrics.cache.hits.get(), app.metrics.cache.misses.get());
        let respelled = pb::CheckRequest {
            action: "A/b".into(),
            scope: "/s/T/".into(),
            ..base.clone()
        };
        assert!(client.check(respelled).await.unwrap().into_inner().allowed);
        assert_eq!(
            (app.metrics.cache.hits.get(), app.metrics.cache.misses.get()),
            (hits + 1, misses)
        );
    }
}

/// A replaced policy stays whole for the request that still holds it after the loader
/// lets go, and is freed (its data on the reaper's thread, see `live.rs`'s unit test)
/// once that request ends: nothing is kept alive or waited for.
#[test]
fn a_replaced_policy_lives_while_a_request_holds_it_and_is_freed_after() {
    use iot_authz::live::reaper;
    let state = PolicyState::with_snapshot(crate::support::policy(
        "version: 1\nroles: [{name: R, actions: ['a/*']}]\n",
    ));
    // A request in flight holds the policy about to be replaced.
    let in_flight = state.current().unwrap();
    let previous = state.install(crate::support::policy(
        "version: 1\nroles: [{name: S, actions: ['a/*']}]\n",
    ));
    let weak = Arc::downgrade(previous.as_ref().unwrap());
    // The loader lets go at once, without waiting for the request.
    drop(previous);
    reaper::flush();
    assert!(weak.upgrade().is_some());
    assert!(
        in_flight.snapshot.role("R").is_some(),
        "the request reads its policy"
    );
    // The request ends: the policy goes, and the reaper frees its data.
    drop(in_flight);
    reaper::flush();
    assert!(weak.upgrade().is_none());
    assert!(state.current().unwrap().snapshot.role("S").is_some());
}
