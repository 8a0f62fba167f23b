//! The web console in a real headless Chromium (Debian's `chromium` and `chromium-driver`):
//! every page as an allowed, a forbidden and an anonymous user; Check access through its
//! form for a grant, a deny assignment and a noGrant with near misses; a deny appearing live
//! in Recent decisions and explained from its decision id; the XSS corpus shown as text with
//! no script run; keyboard focus; axe-core on every page; screenshots.
//!
//! Screenshots are written to `$IOT_AUTHZ_SCREENSHOTS` when it is set (the README's images
//! come from `IOT_AUTHZ_SCREENSHOTS=docs/console cargo test --test main console_browser`).

use std::path::PathBuf;
use std::time::Duration;

use serde_json::json;

use crate::console::{MARKUP, PRINCIPAL_HEADER, start};
use crate::support::root;
use crate::support::webdriver::Browser;

const TAB: &str = "\u{E004}";
const ENTER: &str = "\u{E007}";

/// (name, path, title) of each page, with a query that makes it show something.
const PAGES: [(&str, &str, &str); 9] = [
    ("index", "/console/", "Console"),
    (
        "check",
        "/console/check?principal=user%3Acarol&action=Microsoft.Edge%2Ftargets%2Fwrite&scope=%2Fsubscriptions%2Fs1%2FresourceGroups%2Fother",
        "Check access",
    ),
    ("assignments", "/console/assignments", "Role assignments"),
    ("roles", "/console/roles", "Roles"),
    (
        "scopes",
        "/console/scopes?scope=%2Fsubscriptions%2Fs1%2FresourceGroups%2Ffactory",
        "Scopes",
    ),
    (
        "who-can",
        "/console/who-can?action=Microsoft.Edge%2Ftargets%2Fread&scope=%2Fsubscriptions%2Fs1",
        "Who can",
    ),
    (
        "where-can",
        "/console/where-can?principal=user%3Acarol&action=Microsoft.Edge%2Ftargets%2Fwrite",
        "Where can",
    ),
    ("decisions", "/console/decisions", "Recent decisions"),
    ("status", "/console/status", "Policy status"),
];

async fn signed_in(browser: &mut Browser, who: Option<&str>) {
    let headers = match who {
        Some(who) => json!({ PRINCIPAL_HEADER: who }),
        None => json!({}),
    };
    browser.set_headers(headers).await;
}

/// Types an action and a scope into Check access (the principal as it stands), submits
/// with Enter and waits for the answer's reason to be `reason`.
async fn ask(browser: &mut Browser, action: &str, scope: &str, reason: &str) {
    browser.fill("input[name=action]", action).await;
    browser.fill("input[name=scope]", scope).await;
    browser.keys(&[ENTER]).await;
    let shown = format!(
        "return document.querySelector('#reason')?.innerText === {};",
        json!(reason)
    );
    assert!(
        browser.wait_for(&shown, Duration::from_secs(10)).await,
        "{action} at {scope}: {}",
        browser.text("main").await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_pages_in_a_real_browser() {
    let server = start().await;
    let base = format!("http://{}", server.http);
    let mut browser = Browser::start().await;
    // Decisions for Recent decisions to show: an allow, a deny assignment, no route, noGrant.
    let client = reqwest::Client::new();
    for (method, path, who, status) in [
        (reqwest::Method::GET, "/targets/t1", "user:carol", 200),
        (reqwest::Method::DELETE, "/targets/t1", "user:carol", 403),
        (reqwest::Method::GET, "/unknown", "user:carol", 403),
        (reqwest::Method::DELETE, "/targets/t2", "user:admin", 403),
    ] {
        let resp = client
            .request(method, format!("{base}/v1/authz/envoy{path}"))
            .header(PRINCIPAL_HEADER, who)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), status, "{path}");
    }

    // Each page: allowed, forbidden, anonymous.
    for (name, path, title) in PAGES {
        signed_in(&mut browser, Some("user:admin")).await;
        browser.goto(&format!("{base}{path}")).await;
        assert_eq!(browser.text("h1").await, title, "{name} as admin");
        assert!(browser.text("header .who").await.contains("user:admin"));
        shot(&mut browser, name).await;
        signed_in(&mut browser, Some("user:nobody")).await;
        browser.goto(&format!("{base}{path}")).await;
        assert_eq!(browser.text("h1").await, "Not allowed", "{name} as nobody");
        assert!(browser.text("main").await.contains("may not read at scope"));
        signed_in(&mut browser, None).await;
        browser.goto(&format!("{base}{path}")).await;
        assert_eq!(
            browser.text("h1").await,
            "Sign-in needed",
            "{name} anonymous"
        );
    }
    signed_in(&mut browser, Some("user:admin")).await;

    // Where can: the plan of the serving policy.
    browser.goto(&format!("{base}{}", PAGES[6].1)).await;
    assert_eq!(
        browser.text("#plan-include tbody").await,
        "/subscriptions/s1/resourceGroups/factory"
    );
    assert_eq!(browser.text("#plan-exclude tbody").await, "");

    // Check access through its form, by keyboard: a grant through two groups.
    browser.goto(&format!("{base}/console/check")).await;
    browser.fill("input[name=principal]", "user:carol").await;
    ask(
        &mut browser,
        "Microsoft.Edge/targets/read",
        "/subscriptions/s1/resourceGroups/other",
        "roleAssignment",
    )
    .await;
    assert_eq!(browser.text(".verdict").await, "Allowed");
    assert_eq!(
        browser.text("#grant").await,
        "Granted by role Target Reader, assigned at /subscriptions/s1 (assignment ra-staff) to group:plant-staff."
    );
    assert_eq!(
        browser.text("#chain").await,
        "user:carol (the principal)\nmember of group:line-leads\nmember of group:plant-staff"
    );
    // A deny assignment.
    ask(
        &mut browser,
        "Microsoft.Edge/targets/delete",
        "/subscriptions/s1/resourceGroups/factory",
        "denyAssignment",
    )
    .await;
    assert_eq!(browser.text(".verdict").await, "Denied");
    assert!(
        browser
            .text("#deny")
            .await
            .starts_with("Denied by deny assignment no-deletes-by-leads.")
    );
    // noGrant, with the near misses: the role held and the action it lacks.
    ask(
        &mut browser,
        "Microsoft.Edge/targets/write",
        "/subscriptions/s1/resourceGroups/other",
        "noGrant",
    )
    .await;
    let misses = browser.text("#near-misses tbody").await;
    assert_eq!(
        misses,
        "ra-staff\tTarget Reader\t/subscriptions/s1\tgroup:plant-staff\tthe role's actions do not include `Microsoft.Edge/targets/write`"
    );

    // Keyboard: the first Tab reaches the skip link, and its focus is visible.
    browser.goto(&format!("{base}/console/roles")).await;
    browser.keys(&[TAB]).await;
    let focus = browser
        .js("const e = document.activeElement; return [e.className, getComputedStyle(e).outlineStyle, getComputedStyle(e).outlineWidth];")
        .await;
    assert_eq!(focus, json!(["skip", "solid", "3px"]));
    browser.keys(&[ENTER]).await;
    assert!(
        browser
            .wait_for("return location.hash === '#main';", Duration::from_secs(5))
            .await
    );

    // A deny appears live in Recent decisions, and its id opens its explanation.
    browser.goto(&format!("{base}/console/decisions")).await;
    assert!(
        browser
            .wait_for(
                "return document.getElementById('live-status').innerText.startsWith('Live:');",
                Duration::from_secs(10)
            )
            .await,
        "the event stream opens"
    );
    let denied = reqwest::Client::new()
        .delete(format!("{base}/v1/authz/envoy/targets/t9"))
        .header(PRINCIPAL_HEADER, "user:carol")
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), reqwest::StatusCode::FORBIDDEN);
    assert!(
        browser
            .wait_for("const r = document.querySelector('#denies-body tr.live'); return !!r && r.innerText.includes('no-deletes-by-leads');", Duration::from_secs(10))
            .await,
        "the deny shows up live"
    );
    let row = browser.text("#denies-body tr.live").await;
    assert!(
        row.contains("user:carol") && row.contains("denyAssignment"),
        "{row}"
    );
    assert_eq!(browser.text("#denies-count").await, "4");
    browser
        .js("document.querySelector('#denies-body tr.live a').click(); return true;")
        .await;
    assert!(
        browser
            .wait_for(
                "return !!document.querySelector('#deny');",
                Duration::from_secs(10)
            )
            .await
    );
    assert!(
        browser
            .text("main")
            .await
            .contains("explained against the policy serving now")
    );
    assert!(
        browser
            .text("#deny")
            .await
            .starts_with("Denied by deny assignment no-deletes-by-leads.")
    );

    // The XSS corpus: shown as text, never run or rendered as markup.
    let corpus_pages = [
        "/console/assignments".to_owned(),
        "/console/roles".to_owned(),
        iot_authz::server::console::link("/console/scopes", &[("scope", MARKUP[3])]),
        iot_authz::server::console::link(
            "/console/check",
            &[
                ("principal", MARKUP[0]),
                ("action", "Microsoft.Edge/targets/restart"),
                ("scope", MARKUP[3]),
            ],
        ),
    ];
    for path in &corpus_pages {
        browser.goto(&format!("{base}{path}")).await;
        let injected = browser
            .js("return [typeof window.__xss, document.querySelectorAll('main img, main b, main i, main u, main script').length];")
            .await;
        assert_eq!(injected, json!(["undefined", 0]), "{path}");
        let text = browser.text("main").await;
        assert!(MARKUP.iter().any(|m| text.contains(m)), "{path}: {text}");
    }
    let text = browser.text("main").await;
    for m in MARKUP {
        assert!(text.contains(m), "Check access shows {m} as text: {text}");
    }
    drop(browser);
}

/// The axe-core script the test script installs (npm), never part of the binary.
fn axe_source() -> String {
    let path = std::env::var_os("IOT_AUTHZ_AXE_CORE")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".tools/axe/node_modules/axe-core/axe.min.js"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "axe-core not found at {} ({e}): run scripts/test.sh, which installs it",
            path.display()
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_pages_have_no_serious_accessibility_violations() {
    let server = start().await;
    let base = format!("http://{}", server.http);
    let axe = axe_source();
    let mut browser = Browser::start().await;
    signed_in(&mut browser, Some("user:admin")).await;
    let mut pages: Vec<String> = PAGES.iter().map(|(_, p, _)| (*p).to_owned()).collect();
    // The refusal pages and an explained deny are pages too.
    pages.push("/console/check?principal=user%3Acarol&action=Microsoft.Edge%2Ftargets%2Fdelete&scope=%2Fsubscriptions%2Fs1%2FresourceGroups%2Ffactory".to_owned());
    for path in &pages {
        browser.goto(&format!("{base}{path}")).await;
        assert_eq!(axe_violations(&browser, &axe).await, json!([]), "{path}");
    }
    signed_in(&mut browser, Some("user:nobody")).await;
    browser.goto(&format!("{base}/console/roles")).await;
    assert_eq!(
        axe_violations(&browser, &axe).await,
        json!([]),
        "the refusal page"
    );
}

/// Writes [`shot`] as `name.png` under `$IOT_AUTHZ_SCREENSHOTS`, when set.
async fn shot(browser: &mut Browser, name: &str) {
    let png = browser.screenshot().await;
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "{name}: a PNG");
    if let Some(dir) =
        std::env::var_os("IOT_AUTHZ_SCREENSHOTS").map(|d| root().join(PathBuf::from(d)))
    {
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), &png).unwrap();
    }
}

/// Runs axe-core on the page shown and returns its serious and critical violations.
/// Evaluated through WebDriver, not as a page script: the console's CSP stays as is.
async fn axe_violations(browser: &Browser, axe: &str) -> serde_json::Value {
    let run = "const done = arguments[arguments.length - 1];
        axe.run(document, {runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'best-practice']}})
          .then(r => done({passes: r.passes.length, bad: r.violations
            .filter(v => v.impact === 'serious' || v.impact === 'critical')
            .map(v => v.id + ' (' + v.impact + '): ' + v.help + ' at ' + v.nodes.map(n => n.target.join(' ')).join(', '))}))
          .catch(e => done({passes: 0, bad: ['axe failed: ' + e]}));";
    browser.js(&format!("{axe}\n;return typeof axe;")).await;
    let result = browser.js_async(run).await;
    assert!(
        result["passes"].as_u64().unwrap_or(0) > 5,
        "axe ran: {result}"
    );
    result["bad"].clone()
}

/// Waits for the page after a form submission to show `css`.
async fn shown(browser: &Browser, css: &str) -> String {
    let found = browser
        .wait_for(
            &format!("return !!document.querySelector({});", json!(css)),
            Duration::from_secs(15),
        )
        .await;
    assert!(found, "{css} shown: {}", browser.text("main").await);
    browser.text(css).await
}

/// Adding and removing role assignments with the console's forms against a real etcd: an
/// escalation refused with its missing actions, a valid grant whose consistency token makes
/// Check access answer with it, the last App Administrator kept; axe-core on the forms and
/// the results; the keyboard submits the add form.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_writes_in_a_real_browser() {
    let f = crate::console_store::fixture().await;
    let base = format!("http://{}", f.server.http);
    let axe = axe_source();
    let mut browser = Browser::start().await;
    signed_in(&mut browser, Some("user:helpdesk")).await;

    // An escalation: typed and submitted by keyboard.
    browser.goto(&format!("{base}/console/assignments")).await;
    assert_eq!(
        axe_violations(&browser, &axe).await,
        json!([]),
        "the add form"
    );
    browser.fill("#add-principal", "user:bob").await;
    browser.fill("#add-role", "Device Writer").await;
    browser.fill("#add-scope", "/apps/fleet").await;
    browser.keys(&[ENTER]).await;
    let refused = shown(&browser, "#write-refused").await;
    assert!(refused.starts_with("Not changed: "), "{refused}");
    assert!(
        refused.contains("may not assign role `Device Writer` at `/apps/fleet` (no escalation); missing actions: Devices/write"),
        "{refused}"
    );
    assert_eq!(axe_violations(&browser, &axe).await, json!([]), "a refusal");
    shot(&mut browser, "write-refused").await;
    assert!(f.etcd.get("/t/assignments/g-bob").is_none());

    // Before the grant, bob may not read devices.
    browser
        .goto(&format!(
            "{base}/console/check?principal=user%3Abob&action=Devices%2Fread&scope=%2Fapps%2Ffleet"
        ))
        .await;
    assert_eq!(shown(&browser, ".verdict").await, "Denied");

    // A valid grant: its token, and Check access at that token.
    browser.goto(&format!("{base}/console/assignments")).await;
    browser.fill("#add-principal", "user:bob").await;
    browser.fill("#add-role", "Reader").await;
    browser.fill("#add-scope", "/apps/fleet").await;
    browser.fill("#add-id", "g-bob").await;
    browser
        .js("document.querySelector('#add-assignment button').click(); return true;")
        .await;
    let done = shown(&browser, "#write-result").await;
    assert_eq!(
        done,
        "Added role assignment g-bob: user:bob has role Reader at /apps/fleet."
    );
    let token = browser.text("#write-token").await;
    assert!(token.starts_with('r'), "{token}");
    assert!(f.etcd.get("/t/assignments/g-bob").is_some());
    assert_eq!(
        axe_violations(&browser, &axe).await,
        json!([]),
        "a write done"
    );
    shot(&mut browser, "write-done").await;
    browser
        .js("document.querySelector('#check-at-token').click(); return true;")
        .await;
    assert!(
        browser
            .wait_for(
                "return location.pathname === '/console/check';",
                Duration::from_secs(10)
            )
            .await
    );
    assert_eq!(
        browser
            .js("return document.querySelector('input[name=at_least]').value;")
            .await,
        json!(token)
    );
    browser.fill("input[name=action]", "Devices/read").await;
    browser.keys(&[ENTER]).await;
    assert_eq!(shown(&browser, ".verdict").await, "Allowed");
    assert!(
        browser
            .text("main")
            .await
            .contains(&format!("Answered at consistency token {token} or later")),
    );
    assert!(
        browser
            .text("#grant")
            .await
            .starts_with("Granted by role Reader, assigned at /apps/fleet (assignment g-bob)")
    );
    shot(&mut browser, "check-at-token").await;

    // The last App Administrator: its Remove button, refused with the constraint.
    signed_in(&mut browser, Some("user:owner")).await;
    browser.goto(&format!("{base}/console/assignments")).await;
    browser
        .js("document.querySelector('input[name=id][value=\"admin-1\"]').form.querySelector('button').click(); return true;")
        .await;
    let refused = shown(&browser, "#write-refused").await;
    assert!(refused.contains("App Administrator"), "{refused}");
    assert!(refused.contains("nothing was written"), "{refused}");
    assert!(f.etcd.get("/t/assignments/admin-1").is_some());
    shot(&mut browser, "write-last-admin").await;

    // A time-bound grant: its window typed into the form's labelled fields, taken in UTC.
    browser.goto(&format!("{base}/console/assignments")).await;
    browser.fill("#add-principal", "user:carol").await;
    browser.fill("#add-role", "Reader").await;
    browser.fill("#add-scope", "/apps/fleet").await;
    browser.fill("#add-id", "g-carol").await;
    browser
        .fill("#add-not-before", "2031-01-01T09:00:00+01:00")
        .await;
    browser.fill("#add-not-after", "2031-02-01T08:00").await;
    browser.keys(&[ENTER]).await;
    assert_eq!(
        shown(&browser, "#write-result").await,
        "Added role assignment g-carol: user:carol has role Reader at /apps/fleet, active from \
         2031-01-01T08:00:00Z until 2031-02-01T08:00:00Z."
    );
    assert_eq!(
        axe_violations(&browser, &axe).await,
        json!([]),
        "a time-bound write"
    );

    // Policy status with the store.
    browser.goto(&format!("{base}/console/status")).await;
    assert!(browser.text("#store").await.contains("etcd, prefix /t/"));
    assert_eq!(axe_violations(&browser, &axe).await, json!([]), "status");
    shot(&mut browser, "status-store").await;
}

/// A console caller identified by a bearer token the server verifies itself (a JWKS file):
/// a valid token opens the pages; an invalid one is refused with 401, never falling back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_callers_with_bearer_tokens() {
    use crate::support::jwt::{TestKey, claims, jwks, unix_now};
    use jsonwebtoken::Algorithm;
    crate::support::crypto();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    let key = TestKey::ec("k1", Algorithm::ES256);
    std::fs::write(&path, jwks(&[&key])).unwrap();
    let issuer = "https://login.example.com/";
    let policy = format!(
        "{}\nidentity:\n  sources:\n    - bearer: {{issuer: '{issuer}', audiences: [console], jwks: {{file: '{}'}}, principalType: user}}\n    - header: {PRINCIPAL_HEADER}\n",
        crate::console::POLICY,
        path.display()
    );
    let options = iot_authz::server::AppOptions {
        console: true,
        ..Default::default()
    };
    let server =
        crate::support::TestServer::start_options(crate::support::policy(&policy), &options).await;
    let base = format!("http://{}", server.http);
    let good = format!(
        "Bearer {}",
        key.sign(&claims(issuer, "console", "admin", unix_now()))
    );
    // The key set is read in the background: wait for the first page the token opens.
    let client = reqwest::Client::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let status = client
            .get(format!("{base}/console/status"))
            .header("authorization", &good)
            .send()
            .await
            .unwrap()
            .status();
        if status == reqwest::StatusCode::OK {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the token never opened the console: {status}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut browser = Browser::start().await;
    browser.set_headers(json!({ "authorization": good })).await;
    for (name, path, title) in PAGES {
        browser.goto(&format!("{base}{path}")).await;
        assert_eq!(browser.text("h1").await, title, "{name} with a token");
        assert!(browser.text("header .who").await.contains("user:admin"));
    }
    // A token signed by another key, an expired one, garbage: 401, even with the header
    // another source would accept.
    let other = TestKey::ec("k1", Algorithm::ES256);
    let mut expired = claims(issuer, "console", "admin", unix_now() - 7200);
    expired["exp"] = json!(unix_now() - 3600);
    for bad in [
        other.sign(&claims(issuer, "console", "admin", unix_now())),
        key.sign(&expired),
        "not.a.token".to_owned(),
    ] {
        browser
            .set_headers(
                json!({ "authorization": format!("Bearer {bad}"), PRINCIPAL_HEADER: "user:admin" }),
            )
            .await;
        browser.goto(&format!("{base}/console/assignments")).await;
        assert_eq!(browser.text("h1").await, "Sign-in needed");
        assert!(
            browser
                .text("main")
                .await
                .contains("Your bearer token was refused")
        );
        let status = client
            .get(format!("{base}/console/assignments"))
            .header("authorization", format!("Bearer {bad}"))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, reqwest::StatusCode::UNAUTHORIZED);
    }
}
