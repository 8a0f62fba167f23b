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
    ("where-can", "/console/where-can", "Where can"),
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
    let shots = std::env::var_os("IOT_AUTHZ_SCREENSHOTS").map(|d| root().join(PathBuf::from(d)));
    for (name, path, title) in PAGES {
        signed_in(&mut browser, Some("user:admin")).await;
        browser.goto(&format!("{base}{path}")).await;
        assert_eq!(browser.text("h1").await, title, "{name} as admin");
        assert!(browser.text("header .who").await.contains("user:admin"));
        let png = browser.screenshot().await;
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "{name}: a PNG");
        if let Some(dir) = &shots {
            std::fs::create_dir_all(dir).unwrap();
            std::fs::write(dir.join(format!("{name}.png")), &png).unwrap();
        }
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

    // Check access through its form, by keyboard: a grant through two groups.
    browser.goto(&format!("{base}/console/check")).await;
    browser.fill("input[name=principal]", "user:carol").await;
    browser
        .fill("input[name=action]", "Microsoft.Edge/targets/read")
        .await;
    browser
        .fill(
            "input[name=scope]",
            "/subscriptions/s1/resourceGroups/other",
        )
        .await;
    browser.keys(&[ENTER]).await;
    assert!(
        browser
            .wait_for(
                "return !!document.querySelector('#result');",
                Duration::from_secs(10)
            )
            .await
    );
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
    browser
        .fill("input[name=action]", "Microsoft.Edge/targets/delete")
        .await;
    browser
        .fill(
            "input[name=scope]",
            "/subscriptions/s1/resourceGroups/factory",
        )
        .await;
    browser.keys(&[ENTER]).await;
    assert!(
        browser
            .wait_for(
                "return document.querySelector('#reason')?.innerText === 'denyAssignment';",
                Duration::from_secs(10)
            )
            .await
    );
    assert_eq!(browser.text(".verdict").await, "Denied");
    assert!(
        browser
            .text("#deny")
            .await
            .starts_with("Denied by deny assignment no-deletes-by-leads.")
    );
    // noGrant, with the near misses: the role held and the action it lacks.
    browser
        .fill("input[name=action]", "Microsoft.Edge/targets/write")
        .await;
    browser
        .fill(
            "input[name=scope]",
            "/subscriptions/s1/resourceGroups/other",
        )
        .await;
    browser.keys(&[ENTER]).await;
    assert!(
        browser
            .wait_for(
                "return document.querySelector('#reason')?.innerText === 'noGrant';",
                Duration::from_secs(10)
            )
            .await
    );
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
        iot_authz::console::link("/console/scopes", &[("scope", MARKUP[3])]),
        iot_authz::console::link(
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
    let run = "const done = arguments[arguments.length - 1];
        axe.run(document, {runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'best-practice']}})
          .then(r => done({passes: r.passes.length, bad: r.violations
            .filter(v => v.impact === 'serious' || v.impact === 'critical')
            .map(v => v.id + ' (' + v.impact + '): ' + v.help + ' at ' + v.nodes.map(n => n.target.join(' ')).join(', '))}))
          .catch(e => done({passes: 0, bad: ['axe failed: ' + e]}));";
    let mut pages: Vec<String> = PAGES.iter().map(|(_, p, _)| (*p).to_owned()).collect();
    // The refusal pages and an explained deny are pages too.
    pages.push("/console/check?principal=user%3Acarol&action=Microsoft.Edge%2Ftargets%2Fdelete&scope=%2Fsubscriptions%2Fs1%2FresourceGroups%2Ffactory".to_owned());
    for path in &pages {
        browser.goto(&format!("{base}{path}")).await;
        // Evaluated through WebDriver, not as a page script: the console's CSP stays as is.
        browser.js(&format!("{axe}\n;return typeof axe;")).await;
        let result = browser.js_async(run).await;
        assert!(
            result["passes"].as_u64().unwrap_or(0) > 5,
            "{path}: axe ran: {result}"
        );
        assert_eq!(result["bad"], json!([]), "{path}");
    }
    signed_in(&mut browser, Some("user:nobody")).await;
    browser.goto(&format!("{base}/console/roles")).await;
    browser.js(&format!("{axe}\n;return typeof axe;")).await;
    let result = browser.js_async(run).await;
    assert_eq!(result["bad"], json!([]), "the refusal page");
}
