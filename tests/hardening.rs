//! Regression tests for the second hardening round: each attack found against the release
//! binary behind the real Envoy and nginx, replayed through the real proxy where one is
//! involved.

use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use reqwest::StatusCode;
use serde_json::Value;

use crate::support::{Envoy, TestServer, Upstream, crypto, policy};

/// Dave may do anything under `/apps` except at `/apps/secret`; the scope comes from a
/// path capture on `/p/{id}` and from the `x-app-id` header on `/h`.
const SECRET_POLICY: &str = r"version: 1
roles: [{name: R, actions: ['x/*']}]
assignments:
  - {principal: 'user:dave', role: R, scope: /apps}
denyAssignments:
  - {name: no-secret, principals: ['user:dave'], actions: ['x/*'], scope: /apps/secret}
routes:
  - {methods: [GET], path: '/h', action: x/read, scope: '/apps/{header:x-app-id}'}
  - {methods: [GET], path: '/p/{id}', action: x/read, scope: '/apps/{id}'}
identity:
  sources:
    - header: x-iotauthz-principal
";

const DAVE: (&str, &str) = ("x-iotauthz-principal", "user:dave");

/// Spellings of `secret` (or of something that is not one plain segment) that a header
/// capture once let through to the upstream, raw.
const SECRET_SPELLINGS: [&str; 9] = [
    "secre%74",
    "%73ecret",
    "secret?x",
    "secret#x",
    "secret;v=1",
    "secret%00",
    "sec ret",
    "secret%2F",
    "SECRET",
];

/// A captured header value passes exactly the segment rules of a path capture: through
/// the real Envoy, no spelling of `secret` in `x-app-id` reaches the upstream, and the one
/// that decodes to it is denied by the deny assignment, as the same text in the path is.
#[tokio::test(flavor = "multi_thread")]
async fn a_header_capture_is_a_segment_like_a_path_capture() {
    crypto();
    let server = TestServer::start(policy(SECRET_POLICY)).await;
    let upstream = Upstream::start().await;
    let envoy = Envoy::start("envoy.yaml", server.grpc, upstream.addr, &[]).await;
    let client = reqwest::Client::new();
    let resp = client
        .get(envoy.url("/h"))
        .header(DAVE.0, DAVE.1)
        .header("x-app-id", "public")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(upstream.requests().len(), 1);
    for value in SECRET_SPELLINGS {
        let resp = client
            .get(envoy.url("/h"))
            .header(DAVE.0, DAVE.1)
            .header("x-app-id", value)
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let body: Value = resp.json().await.unwrap();
        assert!(
            status == StatusCode::FORBIDDEN || status == StatusCode::BAD_REQUEST,
            "{value}: {status} {body}"
        );
        if status == StatusCode::FORBIDDEN {
            let scope = body["scope"].as_str().unwrap();
            assert!(
                scope.eq_ignore_ascii_case("/apps/secret"),
                "{value}: {body}"
            );
            assert_eq!(body["reason"], "denyAssignment", "{value}: {body}");
        } else {
            assert_eq!(body["reason"], "malformed", "{value}: {body}");
        }
        // The same text in a path capture gets the same answer.
        if !value.contains(['?', '#', ' ']) {
            let path = client
                .get(envoy.url(&format!("/p/{value}")))
                .header(DAVE.0, DAVE.1)
                .send()
                .await
                .unwrap();
            assert_eq!(path.status(), status, "{value} in the path");
        }
    }
    assert_eq!(upstream.requests().len(), 1, "nothing else went upstream");
}

/// Asks the ext_authz service directly and returns the allow response's headers to remove.
async fn headers_removed_on_allow(server: &TestServer, headers: &[(&str, &str)]) -> Vec<String> {
    let response = crate::support::ext_authz(server, "GET", "/p/public", headers)
        .await
        .response;
    match response.http_response {
        Some(HttpResponse::OkResponse(ok)) => {
            let mut removed = ok.headers_to_remove;
            removed.sort();
            removed
        }
        other => panic!("not allowed: {other:?}"),
    }
}

/// Underscore twins of the decision headers (`x_iotauthz_principal`, which a WSGI or CGI
/// upstream reads as `HTTP_X_IOTAUTHZ_PRINCIPAL`, joined with the real header, forged value
/// first) never reach the upstream: every shipped Envoy config refuses header names with
/// underscores, and the ext_authz and Envoy HTTP-mode answers remove any header whose name
/// normalises to an `x-iotauthz-` name.
#[tokio::test(flavor = "multi_thread")]
async fn underscore_twins_of_decision_headers_never_reach_the_upstream() {
    crypto();
    let server = TestServer::start(policy(SECRET_POLICY)).await;
    let upstream = Upstream::start().await;
    let client = reqwest::Client::new();
    let http_port = format!("port_value: {}", server.http.port());
    for (config, extra) in [
        ("envoy.yaml", None),
        (
            "envoy-http.yaml",
            Some(("port_value: 8181", http_port.as_str())),
        ),
    ] {
        let envoy = Envoy::start(config, server.grpc, upstream.addr, extra.as_slice()).await;
        let resp = client
            .get(envoy.url("/p/public"))
            .header("x_iotauthz_principal", "user:mallory")
            .header(DAVE.0, DAVE.1)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{config}");
        let resp = client
            .get(envoy.url("/p/public"))
            .header(DAVE.0, DAVE.1)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{config}");
    }
    assert_eq!(upstream.requests().len(), 2);
    for seen in upstream.requests() {
        assert!(
            seen.headers.keys().all(|k| !k.contains('_')),
            "{:?}",
            seen.headers
        );
    }

    // The ext_authz answer removes every twin, in any case, whatever the proxy in front.
    let removed = headers_removed_on_allow(
        &server,
        &[
            DAVE,
            ("x_iotauthz_principal", "user:mallory"),
            ("X_IotAuthz-Scope", "/"),
            ("x-iotauthz_extra", "1"),
            ("x_other", "kept"),
        ],
    )
    .await;
    assert_eq!(
        removed,
        [
            "X_IotAuthz-Scope",
            "x-iotauthz_extra",
            "x_iotauthz_principal"
        ]
    );

    // So does the Envoy HTTP-mode answer.
    let resp = client
        .get(format!("http://{}/v1/authz/envoy/p/public", server.http))
        .header(DAVE.0, DAVE.1)
        .header("x_iotauthz_principal", "user:mallory")
        .header("X_IOTAUTHZ_SCOPE", "/")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let removed = resp.headers()["x-envoy-auth-headers-to-remove"]
        .to_str()
        .unwrap();
    let mut removed: Vec<&str> = removed.split(',').collect();
    removed.sort_unstable();
    assert_eq!(removed, ["x_iotauthz_principal", "x_iotauthz_scope"]);
}

/// Forward-auth reads the original method and URI from headers: two different copies of
/// one (`X-Forwarded-Uri`, `X-Original-Method`, ...) are malformed, as two different
/// identity headers are, never decided on whichever copy comes first. The same value twice
/// is that value.
#[tokio::test(flavor = "multi_thread")]
async fn two_different_copies_of_an_original_request_header_are_malformed() {
    crypto();
    let server = TestServer::start(policy(SECRET_POLICY)).await;
    let client = reqwest::Client::new();
    let cases = [
        ("traefik", "x-forwarded-uri", "x-forwarded-method"),
        ("nginx", "x-original-uri", "x-original-method"),
    ];
    for (endpoint, uri, method) in cases {
        let url = format!("http://{}/v1/authz/{endpoint}", server.http);
        let send = |uris: &[&str], methods: &[&str]| {
            let mut request = client.get(&url).header(DAVE.0, DAVE.1);
            for u in uris {
                request = request.header(uri, *u);
            }
            for m in methods {
                request = request.header(method, *m);
            }
            request.send()
        };
        let malformed = |resp: reqwest::Response| async move {
            let body: Value = serde_json::from_str(&resp.text().await.unwrap()).unwrap();
            body["reason"] == "malformed"
        };
        // One copy, or the same copy twice: decided.
        let resp = send(&["/p/public"], &["GET"]).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{endpoint}");
        let resp = send(&["/p/public", "/p/public"], &["GET", "GET"])
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{endpoint}");
        // Two different URIs, or two different methods: malformed, in either order.
        for (uris, methods) in [
            (&["/p/public", "/p/secret"][..], &["GET"][..]),
            (&["/p/secret", "/p/public"][..], &["GET"][..]),
            (&["/p/public"][..], &["GET", "DELETE"][..]),
        ] {
            let resp = send(uris, methods).await.unwrap();
            assert_ne!(
                resp.status(),
                StatusCode::OK,
                "{endpoint} {uris:?} {methods:?}"
            );
            assert!(malformed(resp).await, "{endpoint} {uris:?} {methods:?}");
        }
    }
}

/// Characters that split a record into lines in common tools or make it read differently
/// from what it holds: C1 controls, line and paragraph separators, bidi overrides.
const SNEAKY: [char; 6] = [
    '\u{85}', '\u{9b}', '\u{2028}', '\u{2029}', '\u{202e}', '\u{2066}',
];

/// Principals and scopes follow one character policy, and neither the decision log nor a
/// deny body ever carries a raw line separator, bidi override or C1 control: each record is
/// one line in any tool.
#[tokio::test(flavor = "multi_thread")]
async fn no_output_carries_raw_line_separators_or_bidi_overrides() {
    use iot_authz::proto::iotauthz::v1 as pb;
    use iot_authz::server::AppOptions;
    use iot_authz::server::decision_log::LogTarget;

    crypto();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("decisions.jsonl");
    let options = AppOptions {
        decision_log: Some((LogTarget::File(log.clone()), 1.0)),
        ..AppOptions::default()
    };
    let server = TestServer::start_options(policy(SECRET_POLICY), &options).await;
    let mut native = pb::authorizer_client::AuthorizerClient::connect(server.grpc_url())
        .await
        .unwrap();
    let mut ext = AuthorizationClient::connect(server.grpc_url())
        .await
        .unwrap();
    let mut bodies = Vec::new();
    for c in SNEAKY {
        // A principal and a scope holding the character: refused as arguments.
        for (principal, scope) in [
            (format!("user:da{c}ve"), "/apps/x".to_owned()),
            ("user:dave".to_owned(), format!("/apps/x{c}y")),
        ] {
            let answer = native
                .check(pb::CheckRequest {
                    principal,
                    action: "x/read".into(),
                    scope,
                    ..Default::default()
                })
                .await;
            let status = answer.unwrap_err();
            assert_eq!(status.code(), tonic::Code::InvalidArgument, "{c:?}");
            assert!(!status.message().contains(c), "{c:?}: {status:?}");
        }
        // The same principal from the identity header of an ext_authz request.
        let sneaky = format!("user:da{c}ve");
        let response = ext
            .check(crate::support::ext_authz_request(
                "GET",
                "/p/secret",
                &[(DAVE.0, &sneaky)],
            ))
            .await
            .unwrap()
            .into_inner();
        match response.http_response {
            Some(HttpResponse::DeniedResponse(denied)) => bodies.push(denied.body),
            other => panic!("{c:?}: {other:?}"),
        }
    }
    // A decision that is logged, so the log is known to be written.
    native
        .check(pb::CheckRequest {
            principal: "user:dave".into(),
            action: "x/read".into(),
            scope: "/apps/x".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let text = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("/apps/x\"") {
            break text;
        }
        assert!(std::time::Instant::now() < deadline, "log: {text}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    for output in bodies.iter().chain([&text]) {
        assert!(!output.contains(SNEAKY), "{output:?}");
        for line in output.lines() {
            serde_json::from_str::<Value>(line).unwrap();
        }
    }
}

/// A decision id reveals nothing: not the process's start time or pid (no shared prefix
/// between processes or between ids of one process) and not a request counter (no id is
/// the previous one plus one).
#[test]
fn decision_ids_reveal_nothing() {
    use iot_authz::server::DecisionIds;
    let a = DecisionIds::default();
    let b = DecisionIds::default();
    let ids: Vec<String> = (0..200)
        .map(|_| a.next())
        .chain((0..200).map(|_| b.next()))
        .collect();
    let pid = format!("{:x}", std::process::id());
    for id in &ids {
        assert_eq!(id.len(), 32, "{id}");
        assert!(id.bytes().all(|c| c.is_ascii_hexdigit()), "{id}");
        assert!(!id.contains('-'), "{id}");
    }
    let prefixes: std::collections::HashSet<&str> = ids.iter().map(|id| &id[..8]).collect();
    assert_eq!(prefixes.len(), ids.len(), "ids share a prefix");
    let suffixes: std::collections::HashSet<&str> = ids.iter().map(|id| &id[24..]).collect();
    assert_eq!(suffixes.len(), ids.len(), "ids share a suffix");
    // A short pid turns up in random hex by chance (about one id in a hundred for three
    // digits); an id that embeds it has it every time.
    assert!(
        ids.iter().filter(|id| id.contains(&pid)).count() < ids.len() / 10,
        "{pid}"
    );
}

/// A tar.gz bundle from raw entries: `(path bytes, type, link target, content)`. Paths are
/// written into the header as given (the tar crate's own checks would refuse `..`).
fn raw_tar_gz(entries: &[(&[u8], tar::EntryType, &str, &str)]) -> Vec<u8> {
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::default(),
    ));
    for (path, kind, link, text) in entries {
        let mut header = tar::Header::new_old();
        header.as_old_mut().name[..path.len()].copy_from_slice(path);
        header.set_entry_type(*kind);
        header.set_size(text.len() as u64);
        header.set_mode(0o644);
        if !link.is_empty() {
            header.set_link_name(link).unwrap();
        }
        header.set_cksum();
        builder.append(&header, text.as_bytes()).unwrap();
    }
    builder.into_inner().unwrap().finish().unwrap()
}

const GRANT: &str = "version: 1\nroles: [{name: R, actions: ['x/*']}]\nassignments:\n  - {principal: 'user:dave', role: R, scope: /apps}\n";
const DENY: &str = "version: 1\ndenyAssignments:\n  - {name: no-secret, principals: ['user:dave'], actions: ['x/*'], scope: /apps/secret}\n";

/// A bundle gives the policy the same tree gives on disk, or is refused loudly: a deny
/// file that is a symlink (read through the link on disk) is an error in a bundle, not a
/// silently missing deny; so are hard links and entries outside the bundle root; and an
/// entry name with control characters never reaches a message raw.
#[test]
fn a_bundle_is_the_tree_on_disk_or_an_error() {
    use iot_authz::policy::compile_sources;
    use iot_authz::policy::source::read_paths;
    use iot_authz::sources::bundle::unpack;
    use tar::EntryType::{Directory, Link, Regular, Symlink};

    // On disk: the deny file is a symlink, and it is read.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("real")).unwrap();
    std::fs::write(dir.path().join("grant.yaml"), GRANT).unwrap();
    std::fs::write(dir.path().join("real/deny.yaml"), DENY).unwrap();
    std::os::unix::fs::symlink("real/deny.yaml", dir.path().join("deny.yaml")).unwrap();
    let on_disk = compile_sources(&read_paths(&[dir.path().to_path_buf()], 1 << 20).unwrap());
    assert_eq!(on_disk.unwrap().counts.deny_assignments, 1);

    let url = "https://bundles.example/p.tar.gz";
    let refused = |entries: &[(&[u8], tar::EntryType, &str, &str)], expect: &str| {
        let e = unpack(url, &raw_tar_gz(entries), 1 << 20)
            .unwrap_err()
            .to_string();
        assert!(e.contains(expect), "{e}");
        assert!(!e.contains(['\u{1b}', '\n', '\r', '\u{2028}']), "{e:?}");
    };
    let grant: (&[u8], _, _, _) = (b"grant.yaml", Regular, "", GRANT);
    refused(
        &[grant, (b"deny.yaml", Symlink, "real/deny.yaml", "")],
        "is a symlink",
    );
    refused(
        &[grant, (b"deny.yaml", Link, "grant.yaml", "")],
        "is a hard link",
    );
    for outside in [
        &b"../deny.yaml"[..],
        b"a/../../deny.yaml",
        b"/etc/deny.yaml",
    ] {
        refused(
            &[grant, (outside, Regular, "", DENY)],
            "outside the bundle root",
        );
    }
    refused(
        &[grant, (b"x\x1b[31m\nINFO forged.yaml", Regular, "", DENY)],
        "control, line-separator or bidi",
    );
    refused(
        &[grant, ("a\u{2028}b.yaml".as_bytes(), Regular, "", DENY)],
        "control, line-separator or bidi",
    );
    // Directories, `./` prefixes and links under hidden directories are fine.
    let docs = unpack(
        url,
        &raw_tar_gz(&[
            (b"./", Directory, "", ""),
            (b"./grant.yaml", Regular, "", GRANT),
            (b"./.git/HEAD", Symlink, "refs/heads/main", ""),
            (b"./sub/deny.yaml", Regular, "", DENY),
        ]),
        1 << 20,
    )
    .unwrap();
    let names: Vec<&str> = docs.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(
        names,
        [format!("{url}#grant.yaml"), format!("{url}#sub/deny.yaml")]
    );
    assert_eq!(compile_sources(&docs).unwrap().counts.deny_assignments, 1);
}

/// Serves `answer` for every request on a new loopback port; counts the requests.
async fn canned_server(
    answer: impl Fn() -> axum::response::Response + Clone + Send + Sync + 'static,
) -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = hits.clone();
    let app = axum::Router::new().fallback(move || {
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let answer = answer.clone();
        async move { answer() }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, hits)
}

fn redirect_to(location: String) -> impl Fn() -> axum::response::Response + Clone {
    move || {
        axum::response::Response::builder()
            .status(302)
            .header("location", location.clone())
            .body(axum::body::Body::empty())
            .unwrap()
    }
}

/// A bundle fetch follows redirects only within its origin (a bundle server cannot send
/// the poller to an internal host), and no error quotes what a server answered.
#[tokio::test(flavor = "multi_thread")]
async fn bundle_fetches_stay_on_their_origin_and_never_quote_bodies() {
    use iot_authz::sources::bundle::{BundleClient, BundleOptions, Fetched};
    crypto();
    let page = "<html>internal-secret-page: [1, 2\n</html>";
    let (internal, internal_hits) =
        canned_server(move || axum::response::Response::new(axum::body::Body::from(page))).await;
    let (origin, _) = canned_server(redirect_to(format!("http://{internal}/policy.yaml"))).await;
    let fetch = |url: String| async move {
        let mut client = BundleClient::new(BundleOptions::new(url)).unwrap();
        client.fetch().await.map(|_| ()).unwrap_err().to_string()
    };
    // To another origin (another port): not followed.
    let e = fetch(format!("http://{origin}/bundle.yaml")).await;
    assert!(e.contains("302") && e.contains("not followed"), "{e}");
    assert_eq!(internal_hits.load(std::sync::atomic::Ordering::Relaxed), 0);
    // Within the origin: followed.
    let app = axum::Router::new()
        .route(
            "/start",
            axum::routing::get(|| async { axum::response::Redirect::to("/policy.yaml") }),
        )
        .route("/policy.yaml", axum::routing::get(|| async { GRANT }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let same = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let mut client = BundleClient::new(BundleOptions::new(format!("http://{same}/start"))).unwrap();
    match client.fetch().await.unwrap() {
        Fetched::Bundle { documents, .. } => assert_eq!(documents[0].bytes, GRANT.as_bytes()),
        Fetched::NotModified => panic!("not modified"),
    }
    // A fetched page that is not a policy: the problem says where, never what.
    let url = format!("http://{internal}/policy.yaml");
    let mut client = BundleClient::new(BundleOptions::new(url)).unwrap();
    let Fetched::Bundle { documents, .. } = client.fetch().await.unwrap() else {
        panic!("not modified");
    };
    let problem = iot_authz::policy::compile_sources(&documents)
        .unwrap_err()
        .to_string();
    assert!(!problem.contains("internal-secret-page"), "{problem}");
    assert!(problem.contains("line 1 column"), "{problem}");
}

/// An in-place rewrite (truncate, then write in chunks with a pause shorter than two
/// debounce periods) never serves the torn file, although its first chunk, cut right before
/// `denyAssignments:`, parses and would allow what the whole file denies: a read is only
/// installed once it has held still for a debounce period.
#[tokio::test(flavor = "multi_thread")]
async fn a_torn_in_place_write_is_never_served() {
    use std::io::Write as _;
    use std::time::Duration;

    use iot_authz::policy::{SourceDocument, compile_sources, source};
    use iot_authz::sources::Loader;
    use iot_authz::sources::files::{FileWatcher, WatchOptions};

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("policy.yaml");
    std::fs::write(&file, SECRET_POLICY).unwrap();
    let server = TestServer::start(policy(SECRET_POLICY)).await;
    let debounce = Duration::from_millis(200);
    let watcher = FileWatcher::start(
        Loader::new(server.app.clone()),
        vec![file.clone()],
        WatchOptions {
            debounce,
            poll_interval: None,
            notify: true,
            max_bytes: 1 << 20,
        },
    );
    let (_stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (_trigger, trigger) = tokio::sync::mpsc::channel(1);
    tokio::spawn(watcher.run(trigger, async {
        let _ = stopped.await;
    }));
    let mut revisions = server.app.policy.subscribe();
    // The first pass reads at once (and installs the file under its own name): wait for it.
    tokio::time::timeout(Duration::from_secs(10), revisions.changed())
        .await
        .unwrap()
        .unwrap();
    let initial = revisions.borrow_and_update().clone();

    let next = SECRET_POLICY.replace("no-secret", "still-no-secret");
    let cut = next.find("denyAssignments:").unwrap();
    let (head, tail) = next.split_at(cut);
    assert!(
        compile_sources(&[SourceDocument::new("policy.yaml", head)]).is_ok(),
        "the torn file must parse for this test to mean anything"
    );
    let installed = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = installed.clone();
    let mut watch = revisions.clone();
    tokio::spawn(async move {
        while watch.changed().await.is_ok() {
            let revision = watch.borrow_and_update().clone();
            seen.lock().unwrap().push(revision);
        }
    });
    let mut writer = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&file)
        .unwrap();
    writer.write_all(head.as_bytes()).unwrap();
    writer.flush().unwrap();
    tokio::time::sleep(debounce * 3 / 2).await;
    writer.write_all(tail.as_bytes()).unwrap();
    drop(writer);

    let want = Some(source::revision(&[SourceDocument::new(
        "policy.yaml",
        next.as_str(),
    )]));
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while *revisions.borrow_and_update() != want {
        assert!(
            std::time::Instant::now() < deadline,
            "the whole file was never installed"
        );
        let _ = tokio::time::timeout(Duration::from_millis(100), revisions.changed()).await;
    }
    // The recorder sees the same change on its own task: wait until it has it too.
    let recorded = std::time::Instant::now() + Duration::from_secs(10);
    while installed.lock().unwrap().last() != Some(&want) {
        assert!(
            std::time::Instant::now() < recorded,
            "the recorder never saw it"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let installed = installed.lock().unwrap().clone();
    assert_eq!(installed, [want], "from {initial:?}");
}

/// Sends raw bytes as one HTTP/1.1 request; returns the status (None: closed without one).
fn raw_status(addr: std::net::SocketAddr, request: &[u8]) -> Option<u16> {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .ok()?;
    stream.write_all(request).ok()?;
    let mut buf = [0u8; 512];
    let n = stream.read(&mut buf).ok()?;
    String::from_utf8_lossy(&buf[..n])
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Bytes that are not UTF-8 in a captured header are malformed behind Envoy too: the
/// shipped gRPC configs send ext_authz each header's raw bytes, where Envoy's `headers` map
/// would have rewritten them to `!` (which a capture accepts), so nothing reaches the
/// upstream. Envoy's HTTP ext_authz client rewrites them the same way and has no raw form,
/// so `envoy-http.yaml` refuses such a header (400) before asking: without that, `secr\xffet`
/// was asked about as `secr!et` and let through.
#[tokio::test(flavor = "multi_thread")]
async fn invalid_utf8_in_a_captured_header_is_malformed_behind_envoy() {
    crypto();
    let server = TestServer::start(policy(SECRET_POLICY)).await;
    let upstream = Upstream::start().await;
    for config in ["envoy.yaml", "envoy-mtls.yaml", "envoy-http.yaml"] {
        if config == "envoy-mtls.yaml" {
            // Needs certificates; its ext_authz filter is checked by text below.
            let text =
                std::fs::read_to_string(crate::support::root().join("deploy/envoy").join(config))
                    .unwrap();
            assert!(text.contains("encode_raw_headers: true"), "{config}");
            assert!(
                text.contains("headers_with_underscores_action: REJECT_REQUEST"),
                "{config}"
            );
            continue;
        }
        let envoy = if config == "envoy-http.yaml" {
            Envoy::start_http(&server, upstream.addr).await
        } else {
            Envoy::start(config, server.grpc, upstream.addr, &[]).await
        };
        let request = |value: &[u8]| {
            let mut out = b"GET /h HTTP/1.1\r\nhost: x\r\nconnection: close\r\n".to_vec();
            // UTF-8 beyond ASCII in a header nobody captures is no reason to refuse.
            out.extend_from_slice(b"x-note: caf\xc3\xa9\r\n");
            out.extend_from_slice(b"x-iotauthz-principal: user:dave\r\nx-app-id: ");
            out.extend_from_slice(value);
            out.extend_from_slice(b"\r\n\r\n");
            out
        };
        let addr = envoy.listener;
        let status = tokio::task::spawn_blocking(move || {
            (
                raw_status(addr, &request(b"public")),
                raw_status(addr, &request(b"secr\xffet")),
                raw_status(addr, &request(b"secr\xc3\xa9t")),
            )
        })
        .await
        .unwrap();
        assert_eq!(status, (Some(200), Some(400), Some(400)), "{config}");
    }
    assert_eq!(
        upstream.requests().len(),
        2,
        "only the plain request, once per Envoy started"
    );
}

/// Connection slots cannot be held forever: on the HTTP port a client trickling its
/// headers, an idle keep-alive connection and unterminated headers are closed, so with
/// every slot taken by such clients a new one is served again soon; on both ports a
/// connection is retired at its maximum age (HTTP/2: even if it answers every PING; HTTP/1:
/// even if it is never idle). Each limit is checked where no other limit could close the
/// connection in time.
#[tokio::test(flavor = "multi_thread")]
async fn slow_idle_and_old_connections_give_their_slots_back() {
    use std::time::Duration;
    use tokio::io::AsyncWriteExt;

    use crate::support::{closed_by_server, get_on};
    use iot_authz::server::ServerOptions;

    // The default age (10 min) closes nothing here.
    let options = ServerOptions {
        max_connections: 2,
        header_read_timeout: Duration::from_secs(3),
        idle_timeout: Duration::from_millis(400),
        max_header_bytes: 8 * 1024,
        shutdown_grace: Duration::from_millis(200),
        ..ServerOptions::default()
    };
    let server = TestServer::start_server_options(policy(SECRET_POLICY), options).await;
    let connect = || tokio::net::TcpStream::connect(server.http);

    // Trickling headers: one header line every 100 ms for 10 s, never ending.
    let mut trickle = connect().await.unwrap();
    trickle
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    let trickler = tokio::spawn(async move {
        for i in 0..100 {
            if trickle
                .write_all(format!("x-{i}: y\r\n").as_bytes())
                .await
                .is_err()
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    });
    // Idle keep-alive after one answered request.
    let mut idle = connect().await.unwrap();
    assert_eq!(get_on(&mut idle, "/healthz").await, Some(200));
    // Both slots are taken now; both are given back.
    assert!(
        closed_by_server(&mut idle, Duration::from_secs(5)).await,
        "idle keep-alive kept"
    );
    assert!(trickler.await.unwrap(), "trickling client kept");
    let mut fresh = connect().await.unwrap();
    assert_eq!(get_on(&mut fresh, "/healthz").await, Some(200));
    drop(fresh);

    // Unterminated headers past the byte limit: closed well before the header timeout.
    let mut big = connect().await.unwrap();
    big.write_all(b"GET /healthz HTTP/1.1\r\nx-big: ")
        .await
        .unwrap();
    let _ = big.write_all(&[b'a'; 64 * 1024]).await;
    assert!(
        closed_by_server(&mut big, Duration::from_millis(1500)).await,
        "huge headers kept"
    );

    // Retired at their age (the default idle timeout, 1 min, closes nothing here).
    let options = ServerOptions {
        max_connection_age: Duration::from_millis(1500),
        shutdown_grace: Duration::from_millis(200),
        ..ServerOptions::default()
    };
    let server = TestServer::start_server_options(policy(SECRET_POLICY), options).await;
    // HTTP/1: a request every 200 ms, so never idle; the age closes it at a request boundary.
    let mut busy = tokio::net::TcpStream::connect(server.http).await.unwrap();
    let retired = tokio::time::timeout(Duration::from_secs(5), async {
        while get_on(&mut busy, "/healthz").await == Some(200) {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    assert!(retired.is_ok(), "busy HTTP/1 connection kept past its age");
    // gRPC: an HTTP/2 connection that answers PINGs (hyper does) is retired at its age.
    let mut h2 = tokio::net::TcpStream::connect(server.grpc).await.unwrap();
    h2.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    h2.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await.unwrap();
    assert!(
        closed_by_server(&mut h2, Duration::from_secs(5)).await,
        "HTTP/2 connection kept"
    );
}

/// The gRPC port's idle timeout: an HTTP/2 connection that opens no stream is closed after
/// `grpc_idle_timeout` even while it sends PINGs (which hyper answers, so keepalive never
/// closes it, and before this only the 10-minute age did), while a connection carrying a
/// long stream (health `Watch`) for several timeouts is kept.
#[tokio::test(flavor = "multi_thread")]
async fn an_idle_grpc_connection_is_closed_even_if_it_pings() {
    use std::time::Duration;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use iot_authz::server::ServerOptions;

    let options = ServerOptions {
        grpc_idle_timeout: Duration::from_millis(500),
        ..ServerOptions::default()
    };
    let server = TestServer::start_server_options(policy(SECRET_POLICY), options).await;

    // A stream held open for three idle timeouts keeps its connection.
    let channel = server.channel().await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let mut watch = health
        .watch(tonic_health::pb::HealthCheckRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(watch.message().await.unwrap().is_some(), "first status");

    // Idle but for PINGs, one every 100 ms.
    let (mut read, mut write) = tokio::net::TcpStream::connect(server.grpc)
        .await
        .unwrap()
        .into_split();
    write
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    write.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await.unwrap();
    let pinger = tokio::spawn(async move {
        // PING: 8 bytes of payload, type 6, no flags, stream 0.
        let ping = [0, 0, 8, 6, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8];
        let mut pings = 0u32;
        while write.write_all(&ping).await.is_ok() {
            pings += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        pings
    });
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        let mut buf = [0u8; 1024];
        // PING ACKs come back until the server closes the connection.
        let mut got = 0usize;
        while let Ok(n @ 1..) = read.read(&mut buf).await {
            got += n;
        }
        got
    })
    .await;
    let got = closed.expect("an idle HTTP/2 connection that pings was kept");
    let pings = pinger.await.unwrap();
    assert!(
        pings >= 3,
        "closed before its idle timeout: after {pings} pings"
    );
    // The SETTINGS exchange and at least one PING ACK (17 bytes) were answered.
    assert!(got > 17, "{got} bytes");

    // The Watch stream outlived the idle timeout thrice: no status, no error, no end.
    assert!(
        tokio::time::timeout(Duration::from_millis(1000), watch.message())
            .await
            .is_err(),
        "the stream's connection was closed"
    );
}

/// Health probes keep a way in when squatters hold every ordinary slot of the HTTP port:
/// with both slots taken by silent connections (which hold theirs for the 10 s opening
/// timeout), `/healthz` and `/readyz` still answer, in a probe slot that serves one
/// request and then closes; anything else in a probe slot is closed unanswered, and a
/// silent connection in one is closed within the probe timeout, freeing it. Before, the
/// probe was closed at once like any connection over the limit.
#[tokio::test(flavor = "multi_thread")]
async fn health_probes_answer_while_squatters_hold_every_slot() {
    use std::time::Duration;

    use crate::support::{closed_by_server, get_on};
    use iot_authz::server::{PROBE_SLOTS, PROBE_TIMEOUT, ServerOptions};

    let options = ServerOptions {
        max_connections: 2,
        ..ServerOptions::default()
    };
    let server = TestServer::start_server_options(policy(SECRET_POLICY), options).await;
    let connect = || tokio::net::TcpStream::connect(server.http);
    let mut squatters = Vec::new();
    for _ in 0..2 {
        squatters.push(connect().await.unwrap());
    }
    // The squatters hold both ordinary slots: a probe still answers, once.
    for path in ["/healthz", "/readyz", "/healthz?verbose=1"] {
        let mut probe = connect().await.unwrap();
        assert_eq!(get_on(&mut probe, path).await, Some(200), "{path}");
        assert!(
            closed_by_server(&mut probe, Duration::from_secs(2)).await,
            "{path}: a probe slot was kept after its answer"
        );
    }
    // Not a probe: closed unanswered.
    for path in ["/metrics", "/healthzz", "/v1/authz/nginx"] {
        let mut other = connect().await.unwrap();
        assert_eq!(get_on(&mut other, path).await, None, "{path}");
    }
    // Silent connections in every probe slot are closed within the probe timeout.
    let mut silent = Vec::new();
    for _ in 0..PROBE_SLOTS {
        silent.push(connect().await.unwrap());
    }
    for conn in &mut silent {
        assert!(
            closed_by_server(conn, PROBE_TIMEOUT + Duration::from_secs(3)).await,
            "a silent connection kept its probe slot"
        );
    }
    let mut probe = connect().await.unwrap();
    assert_eq!(get_on(&mut probe, "/healthz").await, Some(200));
    // The ordinary slots were held by the squatters all along.
    for squatter in &mut squatters {
        assert!(!closed_by_server(squatter, Duration::from_millis(10)).await);
    }
}

/// A kept-alive connection's next request must be read in time too: its header timer is
/// not the idle timer it waited under (a connection idle for a while, then trickling its
/// headers, was only closed at the end of the idle timeout).
#[tokio::test(flavor = "multi_thread")]
async fn a_later_request_on_a_kept_alive_connection_is_read_in_time() {
    use std::time::Duration;
    use tokio::io::AsyncWriteExt;

    use crate::support::{closed_by_server, get_on};
    use iot_authz::server::ServerOptions;

    let options = ServerOptions {
        header_read_timeout: Duration::from_millis(400),
        ..ServerOptions::default()
    };
    let server = TestServer::start_server_options(policy(SECRET_POLICY), options).await;
    let mut conn = tokio::net::TcpStream::connect(server.http).await.unwrap();
    assert_eq!(get_on(&mut conn, "/healthz").await, Some(200));
    // Idle for longer than the header timeout (well within the idle timeout, 1 min).
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(get_on(&mut conn, "/healthz").await, Some(200));
    tokio::time::sleep(Duration::from_millis(800)).await;
    conn.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    assert!(
        closed_by_server(&mut conn, Duration::from_secs(5)).await,
        "unfinished headers kept"
    );
}

/// The HTTP port speaks HTTP/1.1 only: its limits (header bytes, header and idle timers)
/// are per request and answer, which HTTP/2's streams would sidestep (one connection, many
/// streams, frames that are not a request head). A client that opens with the HTTP/2
/// preface (h2c with prior knowledge) is closed without an answer, and HTTP/1.1 on the same
/// port still works.
#[tokio::test(flavor = "multi_thread")]
async fn the_http_port_refuses_http2() {
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use crate::support::get_on;

    let server = TestServer::start(policy(SECRET_POLICY)).await;
    for split in [24, 3] {
        let mut conn = tokio::net::TcpStream::connect(server.http).await.unwrap();
        // The connection preface, then an empty SETTINGS frame; the first time whole, then
        // in two writes (the preface's first bytes alone).
        let mut opening = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        opening.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
        conn.write_all(&opening[..split]).await.unwrap();
        conn.flush().await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let _ = conn.write_all(&opening[split..]).await;
        let mut answer = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut answer))
            .await
            .expect("the connection stayed open");
        assert!(
            read.is_err() || answer.is_empty(),
            "an HTTP/2 client was answered: {answer:?}"
        );
    }
    let mut conn = tokio::net::TcpStream::connect(server.http).await.unwrap();
    assert_eq!(get_on(&mut conn, "/healthz").await, Some(200));
}

/// The expensive queries run in their own pool and stop when their caller leaves: a
/// WhoCan over many principals with a 400 KB action, whose caller gives up after 200 ms,
/// no longer burns a thread for seconds afterwards, and Check is answered meanwhile.
#[tokio::test(flavor = "multi_thread")]
async fn expensive_queries_stop_when_their_caller_leaves() {
    use std::fmt::Write as _;
    use std::time::Duration;

    use iot_authz::proto::iotauthz::v1 as pb;

    // WhoCan matches the action against the roles once, but a deny assignment at an
    // ancestor is still matched per principal: `x/*a*b/*` scans the whole action for
    // `b/` each time, so 20,000 principals keep the query busy well past 200 ms.
    let mut text = String::from(
        "version: 1\nroles: [{name: R, actions: ['x/*']}, {name: S, actions: ['y/*']}]\n\
         denyAssignments: [{name: slow, principals: ['user:u0'], actions: ['x/*a*b/*'], scope: /apps}]\n\
         assignments:\n",
    );
    for i in 0..20_000 {
        let _ = writeln!(
            text,
            "  - {{principal: 'user:u{i}', role: R, scope: /apps}}"
        );
    }
    let server = TestServer::start(policy(&text)).await;
    let mut client = pb::authorizer_client::AuthorizerClient::new(server.channel().await)
        .max_encoding_message_size(8 << 20);
    let action = format!("x/{}", "a".repeat(400 * 1024));
    let mut callers = Vec::new();
    for _ in 0..4 {
        let mut client = client.clone();
        let action = action.clone();
        callers.push(tokio::spawn(async move {
            let mut request = tonic::Request::new(pb::WhoCanRequest {
                action,
                scope: "/apps/a".into(),
                ..Default::default()
            });
            request.set_timeout(Duration::from_millis(200));
            client.who_can(request).await
        }));
    }
    // Check is answered while the queries run (its own workers and cores).
    let check = client
        .check(pb::CheckRequest {
            principal: "user:u1".into(),
            action: "x/read".into(),
            scope: "/apps/a".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(check.allowed);
    for caller in callers {
        let status = caller.await.unwrap().unwrap_err();
        assert!(
            matches!(
                status.code(),
                tonic::Code::Cancelled | tonic::Code::DeadlineExceeded
            ),
            "{status:?}"
        );
    }
    // The queries notice their callers are gone and give their threads back.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while server.app.queries.in_flight() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "{} queries still running after their callers left",
            server.app.queries.in_flight()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // And the pool serves the next query.
    let who = client
        .who_can(pb::WhoCanRequest {
            action: "y/read".into(),
            scope: "/apps".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(who.principals.is_empty());
}

/// An action longer than every action the policy's roles could grant (no role has a pattern
/// with `*`) is allowed to no one anywhere, so WhoCan, Plan and the AuthZEN subject and
/// resource searches answer it at once: while every turn of the query pool is held, they
/// still answer (empty), and an invalid one is still refused. A shorter unknown action
/// takes its turn as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_action_no_role_could_grant_is_answered_without_a_turn() {
    use std::time::Duration;

    use iot_authz::proto::iotauthz::v1 as pb;
    use serde_json::json;

    let server = TestServer::start(policy(
        "version: 1\nroles: [{name: R, actions: ['x/read'], dataActions: ['x/data/read']}]\n\
         assignments: [{principal: 'user:alice', role: R, scope: /apps}]\n",
    ))
    .await;
    let turns = crate::support::HeldTurns::take(&server.app).await;
    let mut grpc = pb::authorizer_client::AuthorizerClient::new(server.channel().await)
        .max_encoding_message_size(8 << 20);
    fn timed<T>(mut request: tonic::Request<T>) -> tonic::Request<T> {
        request.set_timeout(Duration::from_secs(2));
        request
    }
    // Longer than `x/data/read` and `x/read`: in neither plane can any role grant it.
    let long = format!("x/{}", "a".repeat(1 << 20));
    for data_action in [false, true] {
        let who = grpc
            .who_can(timed(tonic::Request::new(pb::WhoCanRequest {
                action: long.clone(),
                scope: "/apps".into(),
                data_action,
                ..Default::default()
            })))
            .await
            .unwrap()
            .into_inner();
        assert!(
            who.principals.is_empty() && who.groups.is_empty(),
            "{who:?}"
        );
        let plan = grpc
            .plan(timed(tonic::Request::new(pb::PlanRequest {
                principal: "user:alice".into(),
                action: long.clone(),
                data_action,
                ..Default::default()
            })))
            .await
            .unwrap()
            .into_inner();
        assert!(
            plan.include.is_empty() && plan.exclude.is_empty(),
            "{plan:?}"
        );
    }
    // Still validated: an invalid long action is refused, at once too.
    let status = grpc
        .who_can(timed(tonic::Request::new(pb::WhoCanRequest {
            action: format!("{long} x"),
            scope: "/apps".into(),
            ..Default::default()
        })))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    crypto();
    let client = reqwest::Client::new();
    let searches = [
        (
            "/access/v1/search/subject",
            json!({"subject": {"type": "user"}, "action": {"name": long},
                   "resource": {"type": "scope", "id": "/apps"}}),
        ),
        (
            "/access/v1/search/resource",
            json!({"subject": {"type": "user", "id": "alice"},
                   "action": {"name": long}, "resource": {"type": "scope"}}),
        ),
    ];
    for (path, body) in &searches {
        let answer = client
            .post(format!("http://{}{path}", server.http))
            .json(body)
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200, "{path}");
        let answer: Value = answer.json().await.unwrap();
        assert_eq!(answer["results"], json!([]), "{path}: {answer}");
    }
    // An unknown action no longer than `x/read` might be granted by its length, so it
    // waits for a turn.
    let status = grpc
        .who_can({
            let mut request = tonic::Request::new(pb::WhoCanRequest {
                action: "x/rea".into(),
                scope: "/apps".into(),
                ..Default::default()
            });
            request.set_timeout(Duration::from_millis(300));
            request
        })
        .await
        .unwrap_err();
    assert!(
        matches!(
            status.code(),
            tonic::Code::Cancelled | tonic::Code::DeadlineExceeded
        ),
        "{status:?}"
    );
    turns.release().await;
    let who = grpc
        .who_can(pb::WhoCanRequest {
            action: "x/read".into(),
            scope: "/apps".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(who.principals, ["user:alice"]);
}

/// Repeated fields are refused from the request's shape before it is decoded: a native
/// Check with hundreds of thousands of groups, or a CheckHttp with as many headers, once
/// decoded to well over 100 MB; now they are refused, undecoded, naming the limit.
#[tokio::test(flavor = "multi_thread")]
async fn huge_repeated_fields_are_refused_before_decoding() {
    use iot_authz::proto::codec::{MAX_GROUPS, MAX_HEADERS};
    use iot_authz::proto::iotauthz::v1 as pb;

    let server = TestServer::start(policy(SECRET_POLICY)).await;
    let mut client = pb::authorizer_client::AuthorizerClient::new(server.channel().await)
        .max_encoding_message_size(8 << 20);
    let status = client
        .check(pb::CheckRequest {
            principal: "user:dave".into(),
            action: "x/read".into(),
            scope: "/apps/a".into(),
            groups: vec!["group:g".into(); 400_000],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().contains(&format!("at most {MAX_GROUPS}")),
        "{status:?}"
    );
    let status = client
        .check_http(pb::CheckHttpRequest {
            method: "GET".into(),
            path: "/p/a".into(),
            headers: (0..300_000)
                .map(|i| (format!("h{i}"), String::new()))
                .collect(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().contains(&format!("at most {MAX_HEADERS}")),
        "{status:?}"
    );
    // Within the limits, answered as before.
    let answer = client
        .check(pb::CheckRequest {
            principal: "user:dave".into(),
            action: "x/read".into(),
            scope: "/apps/a".into(),
            groups: vec!["group:g".into(); 100],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(answer.allowed);
}

/// Reflection decodes small requests only: a 1 MiB symbol (or host) is refused before it
/// is decoded, so it is never echoed back (it was, in an error answer of twice its size);
/// its errors are escaped and at most 256 bytes; and a normal lookup still works.
#[tokio::test(flavor = "multi_thread")]
async fn reflection_refuses_huge_requests_and_bounds_its_errors() {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let server = TestServer::start(policy(SECRET_POLICY)).await;
    let mut client =
        ServerReflectionClient::new(server.channel().await).max_encoding_message_size(8 << 20);
    let ask = |host: String, symbol: String| {
        tonic::codegen::tokio_stream::iter([ServerReflectionRequest {
            host,
            message_request: Some(MessageRequest::FileContainingSymbol(symbol)),
        }])
    };
    let big = "x".repeat(1 << 20);
    for (host, symbol) in [
        (String::new(), big.clone()),
        (big.clone(), "iotauthz.v1.Authorizer".into()),
    ] {
        // Refused undecoded: the stream ends with no answer (tonic-reflection ends it when
        // its request stream fails) or with a short error; never an echo.
        match client.server_reflection_info(ask(host, symbol)).await {
            Ok(stream) => match stream.into_inner().message().await {
                Ok(answer) => assert!(answer.is_none(), "answered: {answer:?}"),
                Err(status) => assert!(status.message().len() < 1024),
            },
            Err(status) => assert!(status.message().len() < 1024),
        }
    }
    // A symbol under the request limit that is not found: the error names it escaped and
    // cut, never whole (it was echoed in full, control characters and all).
    let symbol = format!("{}\u{202e}\n{}", "x".repeat(300), "y".repeat(15_000));
    let status = match client
        .server_reflection_info(ask(String::new(), symbol))
        .await
    {
        Ok(stream) => stream.into_inner().message().await.unwrap_err(),
        Err(status) => status,
    };
    assert_eq!(status.code(), tonic::Code::NotFound, "{status:?}");
    assert!(status.message().len() <= 256, "{}", status.message().len());
    assert!(status.message().starts_with("symbol 'xxx"), "{status:?}");
    assert!(
        !status
            .message()
            .chars()
            .any(|c| c.is_control() || !c.is_ascii()),
        "{status:?}"
    );
    let mut stream = client
        .server_reflection_info(ask(String::new(), "iotauthz.v1.Authorizer".into()))
        .await
        .unwrap()
        .into_inner();
    let answer = stream.message().await.unwrap().unwrap();
    assert!(matches!(
        answer.message_response,
        Some(MessageResponse::FileDescriptorResponse(_))
    ));
}

/// Envoy's CheckRequest with its `attributes` (field 1) already encoded: the same wire
/// format, so one 4 MiB body is built once and sent many times.
#[derive(Clone, PartialEq, prost::Message)]
struct PreEncodedCheck {
    #[prost(bytes = "bytes", tag = "1")]
    attributes: prost::bytes::Bytes,
}

/// Field `number` holding `body`, length-delimited.
fn delimited(number: u32, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 16);
    prost::encoding::encode_key(number, prost::encoding::WireType::LengthDelimited, &mut out);
    prost::encoding::encode_varint(body.len() as u64, &mut out);
    out.extend_from_slice(body);
    out
}

/// An AttributeContext whose metadata holds one ListValue of `n` empty values (two bytes
/// each on the wire), in namespace `ns`, field `x`.
fn huge_list_attributes(n: usize) -> prost::bytes::Bytes {
    let list = [0x0a, 0x00].repeat(n); // ListValue.values, each an empty Value
    let value = delimited(6, &list); // Value.list_value
    let field = [delimited(1, b"x"), delimited(2, &value)].concat(); // Struct.fields entry
    let fields = delimited(1, &field); // Struct
    let namespace = [delimited(1, b"ns"), delimited(2, &fields)].concat();
    let metadata = delimited(1, &namespace); // Metadata.filter_metadata entry
    delimited(11, &metadata).into() // AttributeContext.metadata_context
}

/// The process's peak resident set (VmHWM), in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Sends a pre-encoded Envoy CheckRequest; the status it was refused with.
async fn send_pre_encoded(
    channel: tonic::transport::Channel,
    request: PreEncodedCheck,
) -> Result<(), tonic::Status> {
    use envoy_types::pb::envoy::service::auth::v3::CheckResponse;
    let mut grpc = tonic::client::Grpc::new(channel).max_encoding_message_size(8 << 20);
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let codec = tonic_prost::ProstCodec::<PreEncodedCheck, CheckResponse>::default();
    let path = http::uri::PathAndQuery::from_static("/envoy.service.auth.v3.Authorization/Check");
    grpc.unary(tonic::Request::new(request), path, codec)
        .await
        .map(|_| ())
}

/// A 4 MiB ext_authz CheckRequest whose metadata is one ListValue of two million empty
/// values is refused from its shape before it is decoded: the release binary grew by
/// 236 MB decoding one (536 MB for eight at once). Measured on the real binary: its peak
/// resident set grows by about the request bodies it buffers, not by what they decode to.
/// Checks within the limits are answered as before.
#[tokio::test(flavor = "multi_thread")]
async fn a_huge_envoy_metadata_list_is_refused_before_decoding() {
    let (mut child, grpc, _) = crate::support::spawn_serve(
        ["--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"],
        &[],
    );
    let pid = child.id();
    let channel = tonic::transport::Channel::from_shared(format!("http://{grpc}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = AuthorizationClient::new(channel.clone());
    let small = crate::support::ext_authz_request("GET", "/", &[]);
    client.check(small.clone()).await.unwrap();

    let huge = PreEncodedCheck {
        attributes: huge_list_attributes(2_000_000),
    };
    assert!(huge.attributes.len() > 4_000_000);
    let before = peak_rss_kib(pid);
    let status = send_pre_encoded(channel.clone(), huge.clone())
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("more than 50000"), "{status:?}");
    let one = peak_rss_kib(pid) - before;
    let sends: Vec<_> = (0..8)
        .map(|_| tokio::spawn(send_pre_encoded(channel.clone(), huge.clone())))
        .collect();
    for send in sends {
        let status = send.await.unwrap().unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
    }
    let eight = peak_rss_kib(pid) - before;
    // The request bodies themselves are buffered (4 MiB each, with the buffer's growth);
    // decoding one would add over 200 MB.
    assert!(one < 24 * 1024, "one request grew the peak by {one} KiB");
    assert!(
        eight < 120 * 1024,
        "eight requests grew the peak by {eight} KiB"
    );
    // Still serving.
    client.check(small).await.unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
}

/// The real Envoy, allowed to take many headers, asks ext_authz about a request with more
/// than the 10,000 headers a CheckRequest may carry: iot-authz refuses the CheckRequest
/// before decoding it, and Envoy (`failure_mode_allow: false`) answers 403 with no deny
/// body; the upstream never sees it. The same request with a few headers goes through.
#[tokio::test(flavor = "multi_thread")]
async fn envoy_fails_closed_when_a_check_request_is_refused_from_its_shape() {
    use iot_authz::proto::codec::MAX_HEADERS;
    crypto();
    let server = TestServer::start(policy(SECRET_POLICY)).await;
    let upstream = Upstream::start().await;
    let envoy = Envoy::start(
        "envoy.yaml",
        server.grpc,
        upstream.addr,
        &[
            (
                "stat_prefix: ingress",
                "stat_prefix: ingress\n                max_request_headers_kb: 4096",
            ),
            (
                "headers_with_underscores_action: REJECT_REQUEST",
                "headers_with_underscores_action: REJECT_REQUEST\n                  max_headers_count: 20000",
            ),
        ],
    )
    .await;
    let client = reqwest::Client::new();
    let send = |headers: usize| {
        let mut request = client.get(envoy.url("/p/a")).header(DAVE.0, DAVE.1);
        for i in 0..headers {
            request = request.header(format!("x-h{i}"), "v");
        }
        request.send()
    };
    let resp = send(20).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = send(MAX_HEADERS + 1).await.unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        resp.text().await.unwrap(),
        "",
        "a deny body: the policy decided"
    );
    assert_eq!(upstream.requests().len(), 1);
}
