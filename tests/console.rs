//! The web console over HTTP (`serve --console`): identity and page authorization, the
//! security headers on every response, the explanations of Check access, markup in policy
//! values shown as text, the anti-forgery check on writes, and the live decision stream.
//! The same pages in a real browser: `console_browser.rs`.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::HeaderMap;

use crate::support::{TestServer, crypto, policy};
use iot_authz::server::AppOptions;
use iot_authz::server::console::CSP;

pub const PRINCIPAL_HEADER: &str = "x-iotauthz-principal";
const FORM: &str = "application/x-www-form-urlencoded";

/// Principals, a group chain (carol → line-leads → plant-staff), a deny assignment, a
/// scoped reader, and an XSS corpus: a principal, group, role, scope and assignment id
/// holding markup, quotes and ampersands.
pub const POLICY: &str = r#"
version: 1
roles:
  - name: Console Reader
    actions: ["Microsoft.Authorization/roleAssignments/read", "Microsoft.Authorization/roleDefinitions/read"]
  - name: Target Reader
    actions: ["Microsoft.Edge/targets/read"]
  - name: Target Operator
    actions: ["Microsoft.Edge/targets/*"]
    notActions: ["Microsoft.Edge/targets/delete"]
  - name: '<b>Bold & "quoted"</b>'
    actions: ["Microsoft.Edge/targets/restart"]
groups:
  - id: group:plant-staff
    members: [group:line-leads]
  - id: group:line-leads
    members: [user:carol]
  - id: 'group:"><script>window.__xss=1</script>'
    members: ['user:<img src=x onerror=alert(1)>"&amp;']
assignments:
  - {id: ra-admin, principal: user:admin, role: Console Reader, scope: /}
  - {id: ra-staff, principal: group:plant-staff, role: Target Reader, scope: /subscriptions/s1}
  - {id: ra-carol, principal: user:carol, role: Target Operator, scope: /subscriptions/s1/resourceGroups/factory}
  - {id: 'ra-<u>"&</u>', principal: 'group:"><script>window.__xss=1</script>', role: '<b>Bold & "quoted"</b>', scope: '/apps/<i>x</i>&"q"'}
  - {id: ra-scoped, principal: user:scoped, role: Console Reader, scope: /subscriptions/s1}
denyAssignments:
  - name: no-deletes-by-leads
    principals: [group:line-leads]
    actions: [Microsoft.Edge/targets/delete]
    scope: /subscriptions/s1
routes:
  - methods: [GET]
    path: /targets/{t}
    action: Microsoft.Edge/targets/read
    scope: /subscriptions/s1/resourceGroups/factory/providers/Microsoft.Edge/targets/{t}
  - methods: [DELETE]
    path: /targets/{t}
    action: Microsoft.Edge/targets/delete
    scope: /subscriptions/s1/resourceGroups/factory/providers/Microsoft.Edge/targets/{t}
"#;

/// The XSS corpus: each must appear in pages as text.
pub const MARKUP: [&str; 5] = [
    r#"user:<img src=x onerror=alert(1)>"&amp;"#,
    r#"group:"><script>window.__xss=1</script>"#,
    r#"<b>Bold & "quoted"</b>"#,
    r#"/apps/<i>x</i>&"q""#,
    r#"ra-<u>"&</u>"#,
];

/// Every page, with a query that makes it show something.
pub const PAGES: [&str; 11] = [
    "/console/",
    "/console/check?principal=user%3Acarol&action=Microsoft.Edge%2Ftargets%2Fread&scope=%2Fsubscriptions%2Fs1%2FresourceGroups%2Fother",
    "/console/assignments",
    "/console/roles",
    "/console/scopes?scope=%2Fsubscriptions%2Fs1%2FresourceGroups%2Ffactory",
    "/console/who-can?action=Microsoft.Edge%2Ftargets%2Fread&scope=%2Fsubscriptions%2Fs1",
    "/console/where-can",
    "/console/decisions",
    "/console/status",
    "/console/static/console.css",
    "/console/static/console.js",
];

pub async fn start() -> TestServer {
    crypto();
    let options = AppOptions {
        console: true,
        ..AppOptions::default()
    };
    TestServer::start_options(policy(POLICY), &options).await
}

async fn get(
    server: &TestServer,
    path: &str,
    who: Option<&str>,
) -> (StatusCode, HeaderMap, String) {
    let client = reqwest::Client::new();
    let mut req = client.get(format!("http://{}{path}", server.http));
    if let Some(who) = who {
        req = req.header(PRINCIPAL_HEADER, who);
    }
    let resp = req.send().await.unwrap();
    let (status, headers) = (resp.status(), resp.headers().clone());
    (status, headers, resp.text().await.unwrap())
}

fn assert_secure(path: &str, headers: &HeaderMap) {
    assert_eq!(
        headers
            .get("content-security-policy")
            .map(|v| v.to_str().unwrap()),
        Some(CSP),
        "{path}"
    );
    assert!(CSP.contains("frame-ancestors 'none'") && !CSP.contains("unsafe-inline"));
    assert_eq!(
        headers.get("x-content-type-options").unwrap(),
        "nosniff",
        "{path}"
    );
    assert_eq!(headers.get("x-frame-options").unwrap(), "DENY", "{path}");
}

#[tokio::test]
async fn every_page_needs_an_identity_and_read_access_and_carries_the_csp() {
    let server = start().await;
    for path in PAGES {
        let is_page = !path.contains("/static/");
        let (status, headers, body) = get(&server, path, Some("user:admin")).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        assert_secure(path, &headers);
        if !is_page {
            continue;
        }
        assert!(
            body.contains("Signed in as <code>user:admin</code>"),
            "{path}"
        );
        // No inline script: the only script is the console's own file.
        assert_eq!(body.matches("<script").count(), 1, "{path}");
        assert!(body.contains(r#"<script src="/console/static/console.js" defer>"#));
        assert!(!body.contains(" style="), "{path}");

        let (status, headers, body) = get(&server, path, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
        assert_secure(path, &headers);
        assert!(headers.get("www-authenticate").is_some());
        assert!(body.contains("could not identify you"), "{path}");

        let (status, headers, body) = get(&server, path, Some("user:nobody")).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}");
        assert_secure(path, &headers);
        assert!(body.contains("may not read at scope"), "{path}");
        assert!(body.contains("Microsoft.Authorization/roleAssignments/read"));
    }
    // Static files need no identity; unknown console paths are 404 with the headers too.
    let (status, headers, _) = get(&server, "/console/nothing-here", Some("user:admin")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_secure("404", &headers);
    // Reading is authorized at the scope shown: a reader of /subscriptions/s1 sees it and
    // what lies below, not the root.
    let (status, _, body) = get(
        &server,
        "/console/scopes?scope=/subscriptions/s1/resourceGroups/factory",
        Some("user:scoped"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    // The tree shows the scope, its ancestors and what lies below, nothing beside it.
    let t = text(&body);
    assert!(
        t.contains("/ /subscriptions/s1 /subscriptions/s1/resourceGroups/factory"),
        "{t}"
    );
    assert!(!t.contains("/apps/"), "{t}");
    let (status, _, _) = get(&server, "/console/scopes?scope=/", Some("user:scoped")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // Without a scope asked for, a page shows the first scope the caller may read.
    let (status, _, body) = get(&server, "/console/", Some("user:scoped")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        text(&body).contains("Where you may read /subscriptions/s1 and below"),
        "{body}"
    );
    let (status, _, body) = get(&server, "/console/assignments", Some("user:scoped")).await;
    assert_eq!(status, StatusCode::OK);
    let t = text(&body);
    // Its own scope, what lies below and what it inherits (as Azure's IAM blade shows);
    // nothing elsewhere.
    assert!(
        t.contains("ra-staff Target Reader group:plant-staff /subscriptions/s1 here"),
        "{t}"
    );
    assert!(
        t.contains("ra-admin Console Reader user:admin / inherited"),
        "{t}"
    );
    assert!(
        t.contains(
            "ra-carol Target Operator user:carol /subscriptions/s1/resourceGroups/factory below"
        ),
        "{t}"
    );
    assert!(!t.contains("ra-<u>"), "{t}");
    let (status, _, _) = get(&server, "/console/status", Some("user:scoped")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _, _) = get(&server, "/console/decisions", Some("user:scoped")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _, _) = get(&server, "/console/roles", Some("user:scoped")).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, body) = get(&server, "/console/scopes?scope=/a/../b", Some("user:admin")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    // Without --console there is no console.
    let plain = TestServer::start(policy(POLICY)).await;
    let (status, _, _) = get(&plain, "/console/", Some("user:admin")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

pub fn text(html: &str) -> String {
    // Tags out, the few entities maud writes back, whitespace collapsed.
    let mut out = String::new();
    // Block elements and table cells are apart, as a reader sees them.
    const BLOCKS: [&str; 17] = [
        "li", "td", "th", "p", "tr", "h1", "h2", "h3", "caption", "dd", "dt", "ul", "ol", "div",
        "section", "table", "label",
    ];
    let mut rest = html;
    while let Some(start) = rest.find('<') {
        out.push_str(&rest[..start]);
        let Some(end) = rest[start..].find('>') else {
            break;
        };
        let tag = rest[start + 1..start + end].trim_start_matches('/');
        let name = tag.split([' ', '>']).next().unwrap_or_default();
        if BLOCKS.contains(&name) {
            out.push(' ');
        }
        rest = &rest[start + end + 1..];
    }
    out.push_str(rest);
    let out = out
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&amp;", "&");
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[tokio::test]
async fn check_access_explains_a_grant_a_deny_assignment_and_near_misses() {
    let server = start().await;
    let check = |principal: &str, action: &str, scope: &str| {
        iot_authz::server::console::link(
            "/console/check",
            &[
                ("principal", principal),
                ("action", action),
                ("scope", scope),
            ],
        )
    };
    // A grant through two group memberships.
    let (status, _, body) = get(
        &server,
        &check(
            "user:carol",
            "Microsoft.Edge/targets/read",
            "/subscriptions/s1/resourceGroups/other",
        ),
        Some("user:admin"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let t = text(&body);
    assert!(t.contains("Allowed"), "{t}");
    assert!(t.contains("Granted by role Target Reader, assigned at /subscriptions/s1 (assignment ra-staff) to group:plant-staff."), "{t}");
    assert!(
        t.contains(
            "user:carol (the principal) member of group:line-leads member of group:plant-staff"
        ),
        "{t}"
    );
    // A deny assignment, with the assignments it overrides or that do not grant anyway.
    let (_, _, body) = get(
        &server,
        &check(
            "user:carol",
            "Microsoft.Edge/targets/delete",
            "/subscriptions/s1/resourceGroups/factory",
        ),
        Some("user:admin"),
    )
    .await;
    let t = text(&body);
    assert!(t.contains("Denied"), "{t}");
    assert!(t.contains("reason denyAssignment"), "{t}");
    assert!(
        t.contains("Denied by deny assignment no-deletes-by-leads."),
        "{t}"
    );
    assert!(t.contains("the role's notActions pattern `Microsoft.Edge/targets/delete` removes `Microsoft.Edge/targets/delete`"), "{t}");
    // noGrant with near misses: the roles held and the action they lack.
    let (_, _, body) = get(
        &server,
        &check(
            "user:carol",
            "Microsoft.Edge/targets/write",
            "/subscriptions/s1/resourceGroups/other",
        ),
        Some("user:admin"),
    )
    .await;
    let t = text(&body);
    assert!(t.contains("reason noGrant"), "{t}");
    assert!(t.contains("No role assignment grants Microsoft.Edge/targets/write at /subscriptions/s1/resourceGroups/other"), "{t}");
    assert!(t.contains("ra-staff Target Reader /subscriptions/s1 group:plant-staff the role's actions do not include `Microsoft.Edge/targets/write`"), "{t}");
    // A method and path, mapped by the routes to an action and scope, then explained.
    let (_, _, body) = get(
        &server,
        "/console/check?principal=user:carol&method=DELETE&path=/targets/t1",
        Some("user:admin"),
    )
    .await;
    let t = text(&body);
    assert!(t.contains("DELETE /targets/t1 maps to action Microsoft.Edge/targets/delete at scope /subscriptions/s1/resourceGroups/factory/providers/Microsoft.Edge/targets/t1."), "{t}");
    assert!(
        t.contains("Denied by deny assignment no-deletes-by-leads."),
        "{t}"
    );
    let (_, _, body) = get(
        &server,
        "/console/check?method=DELETE&path=/targets/t1",
        Some("user:admin"),
    )
    .await;
    assert!(text(&body).contains("A request needs a principal, a method and a path."));
    // A path no route matches: said plainly.
    let (_, _, body) = get(
        &server,
        "/console/check?principal=user:carol&method=GET&path=/x",
        Some("user:admin"),
    )
    .await;
    assert!(text(&body).contains("No route matches GET /x"), "{body}");
    // A bad action is an error in words, not a panic.
    let (status, _, body) = get(
        &server,
        &check("user:carol", "Microsoft.Edge/*", "/"),
        Some("user:admin"),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("role=\"alert\""));
}

#[tokio::test]
async fn who_can_lists_the_principals_and_groups_allowed() {
    let server = start().await;
    // Reading targets in s1: plant-staff's grant, held by carol through line-leads.
    let (status, _, body) = get(&server, PAGES[5], Some("user:admin")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let t = text(&body);
    assert!(
        t.contains(
            "1 principals and 2 groups Principal or group Kind Explain user:carol principal \
             Check access group:line-leads group Check access group:plant-staff group Check access"
        ),
        "{t}"
    );
    // A deny assignment applies: line-leads (and carol through it) may not delete there.
    let path = iot_authz::server::console::link(
        "/console/who-can",
        &[
            ("action", "Microsoft.Edge/targets/delete"),
            ("scope", "/subscriptions/s1/resourceGroups/factory"),
        ],
    );
    let (_, _, body) = get(&server, &path, Some("user:admin")).await;
    let t = text(&body);
    assert!(t.contains("0 principals and 0 groups"), "{t}");
    // A bad question is answered in words, with 400.
    let (status, _, body) = get(
        &server,
        "/console/who-can?action=Microsoft.Edge%2Ftargets%2Fread&scope=%2Fa%2F..%2Fb",
        Some("user:admin"),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
}

#[tokio::test]
async fn markup_in_policy_values_is_shown_as_text() {
    let server = start().await;
    let pages = [
        "/console/assignments".to_owned(),
        "/console/roles".to_owned(),
        "/console/scopes?scope=/apps".to_owned(),
        iot_authz::server::console::link(
            "/console/check",
            &[
                ("principal", MARKUP[0]),
                ("action", "Microsoft.Edge/targets/restart"),
                ("scope", MARKUP[3]),
            ],
        ),
        iot_authz::server::console::link(
            "/console/who-can",
            &[
                ("action", "Microsoft.Edge/targets/restart"),
                ("scope", MARKUP[3]),
            ],
        ),
    ];
    for path in &pages {
        let (status, _, body) = get(&server, path, Some("user:admin")).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        for raw in ["<img", "<script>window", "<b>Bold", "<i>x", "<u>"] {
            assert!(!body.contains(raw), "{path} holds raw {raw}");
        }
        let t = text(&body);
        assert!(MARKUP.iter().any(|m| t.contains(m)), "{path}: {t}");
    }
    // The check of the principal with markup: allowed through its group with markup.
    let (_, _, body) = get(&server, &pages[3], Some("user:admin")).await;
    let t = text(&body);
    assert!(t.contains("Allowed"), "{t}");
    assert!(
        t.contains(MARKUP[1]) && t.contains(MARKUP[2]) && t.contains(MARKUP[4]),
        "{t}"
    );
}

#[tokio::test]
async fn writes_need_the_session_cookie_and_its_token() {
    let server = start().await;
    let url = format!("http://{}/console/assignments", server.http);
    let client = reqwest::Client::new();
    // No cookie, no token: refused before anything else.
    let resp = client
        .post(&url)
        .header(PRINCIPAL_HEADER, "user:admin")
        .header("content-type", FORM)
        .body("csrf=00")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert!(
        resp.text()
            .await
            .unwrap()
            .contains("session cookie is missing")
    );
    // A page sets the session cookie (same-site, HTTP-only, console path).
    let resp = client
        .get(&url)
        .header(PRINCIPAL_HEADER, "user:admin")
        .send()
        .await
        .unwrap();
    let cookie = resp
        .headers()
        .get("set-cookie")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        cookie.contains("SameSite=Strict")
            && cookie.contains("HttpOnly")
            && cookie.contains("Path=/console/"),
        "{cookie}"
    );
    let session = cookie.split(';').next().unwrap().to_owned();
    let console = server.app.console.as_ref().unwrap();
    let sid = session.split_once('=').unwrap().1;
    let token = console.csrf.token(sid, "user:admin");
    // A wrong token, a token for another caller, another site: refused.
    for (who, token, site) in [
        ("user:admin", "ab".repeat(32), "same-origin"),
        ("user:scoped", token.clone(), "same-origin"),
        ("user:admin", token.clone(), "cross-site"),
    ] {
        let resp = client
            .post(&url)
            .header(PRINCIPAL_HEADER, who)
            .header("cookie", &session)
            .header("sec-fetch-site", site)
            .header("content-type", FORM)
            .body(format!("csrf={token}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::FORBIDDEN, "{who} {site}");
        assert!(resp.headers().get("content-security-policy").is_some());
    }
    // The right token passes the check; the write itself needs the store, and says so.
    let resp = client
        .post(&url)
        .header(PRINCIPAL_HEADER, "user:admin")
        .header("cookie", &session)
        .header("sec-fetch-site", "same-origin")
        .header("content-type", FORM)
        .body(format!("csrf={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_IMPLEMENTED);
    assert!(
        resp.text()
            .await
            .unwrap()
            .contains("needs the role-assignment store")
    );
}

#[tokio::test]
async fn decisions_of_the_server_stream_live_denies_first() {
    let server = start().await;
    // A decision through the HTTP authorization mode (no route: a deny).
    let client = reqwest::Client::new();
    let authz = |path: &'static str| {
        client
            .delete(format!("http://{}/v1/authz/envoy{path}", server.http))
            .header(PRINCIPAL_HEADER, "user:carol")
            .send()
    };
    let before = authz("/nowhere").await.unwrap();
    assert_eq!(before.status(), StatusCode::FORBIDDEN);
    let (_, _, page) = get(&server, "/console/decisions", Some("user:admin")).await;
    let t = text(&page);
    assert!(t.contains("Denies (1, newest first)"), "{t}");
    assert!(t.contains("noRoute"), "{t}");
    // The stream: subscribe, cause a deny, read it.
    let mut events = client
        .get(format!("http://{}/console/decisions/events", server.http))
        .header(PRINCIPAL_HEADER, "user:admin")
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), StatusCode::OK);
    assert_eq!(
        events.headers().get("content-type").unwrap(),
        "text/event-stream"
    );
    assert!(events.headers().get("content-security-policy").is_some());
    // The subscription is live once the response head arrived.
    let after = authz("/targets/t9").await.unwrap();
    assert_eq!(after.status(), StatusCode::FORBIDDEN);
    let mut seen = String::new();
    while !seen.contains("\n\n") {
        let chunk = tokio::time::timeout(Duration::from_secs(10), events.chunk())
            .await
            .expect("an event within 10 s")
            .unwrap()
            .expect("the stream stays open");
        seen.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    assert!(seen.contains("event: decision"), "{seen}");
    assert!(seen.contains(r#""principal":"user:carol""#), "{seen}");
    assert!(seen.contains(r#""reason":"denyAssignment""#), "{seen}");
    assert!(seen.contains(r#""detail":"no-deletes-by-leads""#), "{seen}");
    // The stream needs read access too.
    let resp = client
        .get(format!("http://{}/console/decisions/events", server.http))
        .header(PRINCIPAL_HEADER, "user:nobody")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
}

/// A decision is explained only to a caller who may read at its scope: to a reader of
/// another scope its id is as unknown as a forgotten one, and the page names neither its
/// scope nor its principal.
#[tokio::test]
async fn a_decision_id_explains_nothing_outside_the_callers_scope() {
    let server = start().await;
    // A decision at /apps/secret (AuthZEN, over HTTP): a deny.
    let resp = reqwest::Client::new()
        .post(format!("http://{}/access/v1/evaluation", server.http))
        .json(&serde_json::json!({
            "subject": {"type": "user", "id": "mallory"},
            "action": {"name": "Microsoft.Edge/targets/read"},
            "resource": {"type": "scope", "id": "/apps/secret-project"},
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let (denies, _) = server.app.console.as_ref().unwrap().feed.recent();
    assert_eq!(denies.len(), 1);
    let path = format!("/console/check?decision={}", denies[0].decision_id);
    // A reader of the root sees it explained.
    let (status, _, body) = get(&server, &path, Some("user:admin")).await;
    assert_eq!(status, StatusCode::OK);
    let t = text(&body);
    assert!(
        t.contains("/apps/secret-project") && t.contains("user:mallory"),
        "{t}"
    );
    // A reader of /subscriptions/s1 learns nothing about it.
    let (status, _, body) = get(&server, &path, Some("user:scoped")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let t = text(&body);
    assert!(t.contains("is not one the console can show you"), "{t}");
    assert!(
        !t.contains("secret-project") && !t.contains("mallory"),
        "{t}"
    );
}

/// The live stream is bounded: at most `MAX_WATCHERS` streams at once; one more is refused
/// with 503 and `Retry-After` (a page in words, with the security headers) until one closes.
#[tokio::test]
async fn live_watchers_are_bounded() {
    use iot_authz::server::console::MAX_WATCHERS;
    let server = start().await;
    let client = reqwest::Client::new();
    let url = format!("http://{}/console/decisions/events", server.http);
    let watch = || {
        client
            .get(&url)
            .header(PRINCIPAL_HEADER, "user:admin")
            .send()
    };
    let mut open = Vec::new();
    for _ in 0..MAX_WATCHERS {
        let resp = watch().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        open.push(resp);
    }
    let resp = watch().await.unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(resp.headers()["retry-after"], "30");
    assert_secure("503", resp.headers());
    let t = text(&resp.text().await.unwrap());
    assert!(t.contains("Too many live watchers"), "{t}");
    // One watcher leaves: its place is given back once the server sees the connection go.
    drop(open.pop());
    let watchers = &server.app.console.as_ref().unwrap().watchers;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while watchers.available_permits() == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the place was never given back"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let resp = watch().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}

/// Check access at a consistency token authorizes first: a caller who may not read
/// neither waits for the token nor learns anything about the store (403, as without one).
#[tokio::test]
async fn a_consistency_token_is_not_waited_for_before_the_caller_is_authorized() {
    let server = start().await;
    for who in ["user:nobody", "user:scoped"] {
        let (status, _, body) = get(
            &server,
            "/console/check?at_least=r5&scope=%2Fapps",
            Some(who),
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{who}: {body}");
        assert!(!body.contains("store"), "{body}");
    }
    let (status, _, body) = get(&server, "/console/check?at_least=r5", Some("user:nobody")).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    // A reader gets the token judged: this server has no store.
    let (status, _, body) = get(&server, "/console/check?at_least=r5", Some("user:admin")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(text(&body).contains("has no store"), "{body}");
}

/// Reads a decision stream until the server ends it (within `within`), returning what it
/// sent; panics if the stream is still open then.
async fn read_to_end(events: &mut reqwest::Response, within: Duration) -> String {
    let deadline = tokio::time::Instant::now() + within;
    let mut seen = String::new();
    while let Some(chunk) = tokio::time::timeout_at(deadline, events.chunk())
        .await
        .unwrap_or_else(|_| panic!("the stream is still open; it sent: {seen}"))
        .unwrap()
    {
        seen.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    seen
}

/// A watcher of Recent decisions whose read access ends gets nothing more: the stream
/// ends when a new policy drops its assignment (before the next decision reaches it), and
/// when its assignment's `notAfter` passes with no policy change at all.
#[tokio::test]
async fn the_decision_stream_ends_when_the_callers_access_does() {
    let server = start().await;
    let client = reqwest::Client::new();
    let url = format!("http://{}/console/decisions/events", server.http);
    let authz = |target: &str| {
        client
            .delete(format!(
                "http://{}/v1/authz/envoy/targets/{target}",
                server.http
            ))
            .header(PRINCIPAL_HEADER, "user:carol")
            .send()
    };
    let watch = || {
        client
            .get(&url)
            .header(PRINCIPAL_HEADER, "user:admin")
            .send()
    };
    let mut events = watch().await.unwrap();
    assert_eq!(events.status(), StatusCode::OK);
    // A new policy: user:admin reads nowhere any more.
    let revoked = POLICY.replace(
        "{id: ra-admin, principal: user:admin,",
        "{id: ra-admin, principal: user:someone-else,",
    );
    assert_ne!(revoked, POLICY);
    server.app.install(policy(&revoked));
    assert_eq!(
        authz("after-revocation").await.unwrap().status(),
        StatusCode::FORBIDDEN
    );
    let seen = read_to_end(&mut events, Duration::from_secs(10)).await;
    assert!(!seen.contains("event: decision"), "{seen}");
    // Opening it again is refused.
    assert_eq!(watch().await.unwrap().status(), StatusCode::FORBIDDEN);

    // Access that runs out: read access until two seconds from now, nothing else changes.
    let until =
        iot_authz::policy::syntax::format_time(iot_authz::policy::syntax::now() + 2_000_000_000);
    let expiring = POLICY.replace(
        "{id: ra-admin, principal: user:admin, role: Console Reader, scope: /}",
        &format!(
            "{{id: ra-admin, principal: user:admin, role: Console Reader, scope: /, notAfter: '{until}'}}"
        ),
    );
    assert_ne!(expiring, POLICY);
    server.app.install(policy(&expiring));
    let mut events = watch().await.unwrap();
    assert_eq!(events.status(), StatusCode::OK);
    let seen = read_to_end(&mut events, Duration::from_secs(15)).await;
    assert!(!seen.contains("event: decision"), "{seen}");
    assert_eq!(watch().await.unwrap().status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn the_binary_serves_the_console_on_the_demo_policy_as_the_readme_says() {
    crypto();
    let (mut child, grpc, http) = crate::support::serve_binary(["--console"], &[]);
    let client = reqwest::Client::new();
    let get = |path: &str, who: Option<&str>| {
        let mut req = client.get(format!("http://{http}{path}"));
        if let Some(who) = who {
            req = req.header(PRINCIPAL_HEADER, who);
        }
        req.send()
    };
    let dave = Some("user:dave@contoso.com");
    // The README's command: the demo's Owner of /subscriptions/s1 reads its scopes.
    let resp = get("/console/scopes?scope=/subscriptions/s1", dave)
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        text(&resp.text().await.unwrap())
            .contains("demo-3 Owner user:dave@contoso.com /subscriptions/s1")
    );
    // docs/console.md's command: why alice may not delete a target.
    let resp = get("/console/check?principal=user:alice@contoso.com&action=Microsoft.Edge/targets/delete&scope=/subscriptions/s1/resourceGroups/factory", dave).await.unwrap();
    let t = text(&resp.text().await.unwrap());
    assert!(
        t.contains("Denied by deny assignment no-target-deletes-by-operators."),
        "{t}"
    );
    assert_eq!(
        get("/console/", None).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        get("/console/status", dave).await.unwrap().status(),
        StatusCode::FORBIDDEN
    );
    // A native API decision reaches Recent decisions too.
    let r = crate::support::grpcurl(
        grpc,
        "iotauthz.v1.Authorizer/Check",
        &serde_json::json!({"principal": "user:alice@contoso.com", "action": "Microsoft.Edge/targets/delete",
            "scope": "/subscriptions/s1/resourceGroups/factory"}),
    );
    assert_ne!(r["allowed"], serde_json::json!(true), "{r}");
    // The demo has no reader at the root: a reader is added by a policy of one's own; here the
    // page is read through the scoped home the index lists.
    let resp = get("/console/", dave).await.unwrap();
    assert!(
        text(&resp.text().await.unwrap())
            .contains("Where you may read /subscriptions/s1 and below")
    );
    child.kill().unwrap();
    child.wait().unwrap();
}

// grpcurl is a blocking process: the in-process server needs a worker of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_api_decisions_reach_recent_decisions() {
    let server = start().await;
    let r = crate::support::grpcurl(
        server.grpc,
        "iotauthz.v1.Authorizer/Check",
        &serde_json::json!({"principal": "user:carol", "action": "Microsoft.Edge/targets/write",
            "scope": "/subscriptions/s1/resourceGroups/other"}),
    );
    assert_ne!(r["allowed"], serde_json::json!(true), "{r}");
    let (_, _, page) = get(&server, "/console/decisions", Some("user:admin")).await;
    let t = text(&page);
    assert!(t.contains("Denies (1, newest first)"), "{t}");
    assert!(
        t.contains(
            "user:carol Microsoft.Edge/targets/write /subscriptions/s1/resourceGroups/other noGrant"
        ),
        "{t}"
    );
    // Its id opens its explanation.
    let console = server.app.console.as_ref().unwrap();
    let (denies, _) = console.feed.recent();
    let id = denies[0].decision_id.clone();
    let (_, _, page) = get(
        &server,
        &format!("/console/check?decision={id}"),
        Some("user:admin"),
    )
    .await;
    let t = text(&page);
    assert!(
        t.contains("explained against the policy serving now"),
        "{t}"
    );
    assert!(t.contains("reason noGrant"), "{t}");
}

/// Grants at two scopes and a deny below one of them, for Where can.
const PLAN_POLICY: &str = r#"
version: 1
roles:
  - name: Console Reader
    actions: ["Microsoft.Authorization/roleAssignments/read", "Microsoft.Authorization/roleDefinitions/read"]
  - name: Target Operator
    actions: ["Microsoft.Edge/targets/*"]
assignments:
  - {id: ra-admin, principal: user:admin, role: Console Reader, scope: /}
  - {id: ra-op-s1, principal: user:op, role: Target Operator, scope: /subscriptions/s1}
  - {id: ra-op-lab, principal: user:op, role: Target Operator, scope: /subscriptions/s2/resourceGroups/lab}
denyAssignments:
  - name: frozen
    principals: [user:op]
    actions: [Microsoft.Edge/targets/delete]
    scope: /subscriptions/s1/resourceGroups/frozen
"#;

#[tokio::test]
async fn where_can_shows_the_plan_of_the_policy() {
    crypto();
    let options = AppOptions {
        console: true,
        ..AppOptions::default()
    };
    let server = TestServer::start_options(policy(PLAN_POLICY), &options).await;
    let (status, _, page) = get(
        &server,
        "/console/where-can?principal=user%3Aop&action=Microsoft.Edge%2Ftargets%2Fdelete",
        Some("user:admin"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(!page.contains("not available"), "{page}");
    let t = text(&page);
    assert!(
        t.contains(
            "Allowed at these scopes and everything below them Scope /subscriptions/s1 \
             /subscriptions/s2/resourceGroups/lab Except at these scopes and everything below \
             them Scope /subscriptions/s1/resourceGroups/frozen"
        ),
        "{t}"
    );
    // Under a scope, only what lies there; read only: not a delete.
    let (_, _, page) = get(
        &server,
        "/console/where-can?principal=user%3Aop&action=Microsoft.Edge%2Ftargets%2Fread&under=%2Fsubscriptions%2Fs1",
        Some("user:admin"),
    )
    .await;
    let t = text(&page);
    assert!(
        t.contains(
            "Allowed at these scopes and everything below them Scope /subscriptions/s1 \
             Except at these scopes and everything below them Scope"
        ),
        "{t}"
    );
    assert!(!t.contains("frozen"), "{t}");
    // A bad question is answered in words.
    let (_, _, page) = get(
        &server,
        "/console/where-can?principal=nobody&action=Microsoft.Edge%2Ftargets%2Fread",
        Some("user:admin"),
    )
    .await;
    assert!(page.contains("role=\"alert\""), "{page}");
}

#[tokio::test]
async fn where_can_shows_markup_in_the_plan_as_text() {
    let server = start().await;
    // The markup principal holds the markup role through the markup group, at the markup
    // scope: the plan's one entry is that scope, as written.
    let path = iot_authz::server::console::link(
        "/console/where-can",
        &[
            ("principal", MARKUP[0]),
            ("action", "Microsoft.Edge/targets/restart"),
        ],
    );
    let (status, _, page) = get(&server, &path, Some("user:admin")).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let t = text(&page);
    assert!(
        t.contains(&format!(
            "Allowed at these scopes and everything below them Scope {} Except",
            MARKUP[3]
        )),
        "{t}"
    );
    assert!(!page.contains("<img") && !page.contains("<i>"), "{page}");
}

/// Who can, Where can, Role assignments and Scopes cost time in proportion to the policy:
/// they take a turn of the server's query pool, as the native API's queries do, never a
/// runtime worker.
#[tokio::test]
async fn pages_that_list_the_policy_wait_for_a_turn_of_the_query_pool() {
    crypto();
    let mut app = iot_authz::server::App::with_options(
        std::sync::Arc::new(iot_authz::live::PolicyState::with_snapshot(policy(POLICY))),
        &AppOptions {
            console: true,
            ..AppOptions::default()
        },
    )
    .unwrap();
    app.queries = iot_authz::server::query_pool::QueryPool::new(1);
    let server = TestServer::start_app(std::sync::Arc::new(app), Default::default()).await;
    // Another query holds the pool's only turn until `release` is sent.
    let (release, held) = std::sync::mpsc::channel::<()>();
    let (taken, turn) = tokio::sync::oneshot::channel();
    let app = server.app.clone();
    let holder = tokio::spawn(async move {
        app.queries
            .run(move |_| {
                let _ = taken.send(());
                let _ = held.recv();
            })
            .await
    });
    turn.await.unwrap();
    let pages = [
        PAGES[2],
        PAGES[4],
        PAGES[5],
        "/console/where-can?principal=user%3Acarol&action=Microsoft.Edge%2Ftargets%2Fwrite",
    ];
    for path in pages {
        let waiting = tokio::time::timeout(
            Duration::from_millis(300),
            get(&server, path, Some("user:admin")),
        )
        .await;
        assert!(waiting.is_err(), "{path} answered without a turn");
    }
    release.send(()).unwrap();
    holder.await.unwrap().unwrap();
    for path in pages {
        let (status, _, page) = get(&server, path, Some("user:admin")).await;
        assert_eq!(status, StatusCode::OK, "{path}: {page}");
    }
}

/// A console caller whose token names a key the server has not fetched yet (the issuer
/// rotated): the console asks for the keys once, as the HTTP modes do, and lets it in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_with_a_new_key_fetches_the_keys_and_opens_the_console() {
    use crate::support::jwt::{TestKey, claims, jwks, unix_now};
    use jsonwebtoken::Algorithm;
    use std::sync::{Arc, Mutex};
    crypto();
    let old = TestKey::ec("old", Algorithm::ES256);
    let new = TestKey::ec("new", Algorithm::ES256);
    // The issuer's JWKS over HTTP: refreshed by the server only when asked, in this test.
    let served = Arc::new(Mutex::new(jwks(&[&old])));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/jwks", listener.local_addr().unwrap());
    let keys = served.clone();
    let jwks_app = axum::Router::new().route(
        "/jwks",
        axum::routing::get(move || {
            let body = keys.lock().unwrap().clone();
            async move { body }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, jwks_app).await });
    let issuer = "https://login.example.com/";
    let policy_text = format!(
        "{POLICY}\nidentity:\n  sources:\n    - bearer: {{issuer: '{issuer}', audiences: [console], jwks: {{url: '{url}'}}, principalType: user}}\n"
    );
    let server = TestServer::start_options(
        policy(&policy_text),
        &AppOptions {
            console: true,
            ..AppOptions::default()
        },
    )
    .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while !server
        .app
        .keys
        .status()
        .iter()
        .any(|s| s.issuer == issuer && s.kids == ["old"])
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the keys were never read"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let page = |token: String| {
        let url = format!("http://{}/console/status", server.http);
        async move {
            let resp = reqwest::Client::new()
                .get(url)
                .header("authorization", format!("Bearer {token}"))
                .send()
                .await
                .unwrap();
            (resp.status(), resp.text().await.unwrap())
        }
    };
    let (status, body) = page(old.sign(&claims(issuer, "console", "admin", unix_now()))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // The issuer rotates to a new key; the first token signed with it opens the console.
    *served.lock().unwrap() = jwks(&[&new]);
    let (status, body) = page(new.sign(&claims(issuer, "console", "admin", unix_now()))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        body.contains("Signed in as <code>user:admin</code>"),
        "{body}"
    );
}

#[tokio::test]
async fn policy_status_shows_revision_sources_and_the_last_reload_error() {
    let server = start().await;
    let revision = server
        .app
        .policy
        .current()
        .unwrap()
        .snapshot
        .revision
        .clone();
    let (_, _, body) = get(&server, "/console/status", Some("user:admin")).await;
    let t = text(&body);
    assert!(t.contains(&format!("Revision {revision}")), "{t}");
    assert!(t.contains("Last reload error none"), "{t}");
    assert!(t.contains("Sources test.yaml"), "{t}");
    assert!(t.contains("Role assignments 5"), "{t}");
    server
        .app
        .reject("policy.yaml: roles[0].name: <b>bad</b> & \"worse\"".to_owned());
    let (_, _, body) = get(&server, "/console/status", Some("user:admin")).await;
    assert!(!body.contains("<b>bad"));
    let t = text(&body);
    assert!(t.contains("rejected at"), "{t}");
    assert!(
        t.contains(
            "policy.yaml: roles[0].name: <b>bad</b> & \"worse\" — the revision above keeps serving."
        ),
        "{t}"
    );
}
