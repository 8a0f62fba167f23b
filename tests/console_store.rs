//! The console's writes against a real etcd: adding and removing role assignments through
//! the Admin API's write path, each refusal shown in words (an escalation's missing
//! actions, an unknown role, a scope the role may not be assigned at, the constraint that
//! keeps the last App Administrator), the consistency token of a write and Check access at
//! that token, and the store on Policy status.

use reqwest::StatusCode;

use crate::console::{PRINCIPAL_HEADER, text};
use crate::store::{PREFIX, assignment};
use crate::support::TestServer;
use crate::support::etcd::{Etcd, serve_with_store_options};
use iot_authz::server::AppOptions;
use iot_authz::server::decision_log::LogTarget;

/// Roles in the files; one App Administrator in the store, which must stay.
pub const FILES: &str = r#"
version: 1
actions:
  - name: Devices/read
  - name: Devices/write
roles:
  - name: Reader
    actions: ["Devices/read"]
  - name: Device Writer
    actions: ["Devices/read", "Devices/write"]
  - name: App Administrator
    actions: ["*"]
    assignableScopes: ["/apps"]
  - name: User Administrator
    actions: ["Microsoft.Authorization/*", "Devices/read"]
  - name: Owner
    actions: ["*"]
assignments:
  - {principal: "user:helpdesk", role: User Administrator, scope: /, id: f-helpdesk}
  - {principal: "user:owner", role: Owner, scope: /, id: f-owner}
constraints:
  - minAssignments: {role: App Administrator, scope: /apps/fleet, count: 1}
"#;

pub struct Fixture {
    pub etcd: Etcd,
    pub server: TestServer,
    /// The decision log, where the Admin API writes its audit lines.
    pub log: tempfile::NamedTempFile,
}

/// etcd holding `admin-1` (user:root1, App Administrator at /apps), and a console server
/// following it.
pub async fn fixture() -> Fixture {
    crate::support::crypto();
    let etcd = Etcd::start().await;
    etcd.put(
        "/t/assignments/admin-1",
        assignment("admin-1", "user:root1", "App Administrator", "/apps").as_bytes(),
    );
    let log = tempfile::NamedTempFile::new().unwrap();
    let options = AppOptions {
        console: true,
        decision_log: Some((LogTarget::File(log.path().to_owned()), 1.0)),
        ..AppOptions::default()
    };
    let (server, _) = serve_with_store_options(
        etcd.endpoints(),
        PREFIX,
        &[("roles.yaml", FILES)],
        |_| {},
        &options,
        true,
    )
    .await;
    Fixture { etcd, server, log }
}

/// A console session of `who`: its cookie and the form token its pages carry.
struct Session {
    who: &'static str,
    cookie: String,
    csrf: String,
    base: String,
    client: reqwest::Client,
}

impl Session {
    async fn open(server: &TestServer, who: &'static str) -> Self {
        let client = reqwest::Client::new();
        let base = format!("http://{}", server.http);
        let resp = client
            .get(format!("{base}/console/assignments"))
            .header(PRINCIPAL_HEADER, who)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let cookie = resp.headers()["set-cookie"].to_str().unwrap();
        let cookie = cookie.split(';').next().unwrap().to_owned();
        let page = resp.text().await.unwrap();
        let at = page.find(r#"name="csrf" value=""#).expect("a form token") + 19;
        let csrf = page[at..at + 64].to_owned();
        Self {
            who,
            cookie,
            csrf,
            base,
            client,
        }
    }

    async fn post(&self, fields: &[(&str, &str)]) -> (StatusCode, String) {
        let mut form = vec![("csrf", self.csrf.as_str())];
        form.extend_from_slice(fields);
        let resp = self
            .client
            .post(format!("{}/console/assignments", self.base))
            .header(PRINCIPAL_HEADER, self.who)
            .header("cookie", &self.cookie)
            .header("sec-fetch-site", "same-origin")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(
                iot_authz::server::console::link("", &form)
                    .trim_start_matches('?')
                    .to_owned(),
            )
            .send()
            .await
            .unwrap();
        (resp.status(), text(&resp.text().await.unwrap()))
    }

    async fn get(&self, path: &str) -> (StatusCode, String) {
        let resp = self
            .client
            .get(format!("{}{path}", self.base))
            .header(PRINCIPAL_HEADER, self.who)
            .send()
            .await
            .unwrap();
        (resp.status(), text(&resp.text().await.unwrap()))
    }
}

fn add<'a>(principal: &'a str, role: &'a str, scope: &'a str) -> [(&'a str, &'a str); 4] {
    [
        ("op", "add"),
        ("principal", principal),
        ("role", role),
        ("scope", scope),
    ]
}

/// The consistency token a write's page shows.
fn token_in(page: &str) -> String {
    let after = page.split("Consistency token: ").nth(1);
    let token = after.and_then(|t| t.split_whitespace().next());
    token
        .unwrap_or_else(|| panic!("no token: {page}"))
        .to_owned()
}

#[tokio::test]
async fn writes_go_through_the_admin_api_and_refusals_are_in_words() {
    let f = fixture().await;
    let helpdesk = Session::open(&f.server, "user:helpdesk").await;

    // The page offers the forms: add, and remove for what the store holds only.
    let resp = helpdesk
        .client
        .get(format!("{}/console/assignments", helpdesk.base))
        .header(PRINCIPAL_HEADER, "user:helpdesk")
        .send()
        .await
        .unwrap();
    let page = resp.text().await.unwrap();
    assert!(page.contains(r#"id="add-assignment""#), "{page}");
    assert!(page.contains(r#"name="id" value="admin-1""#), "{page}");
    assert!(!page.contains(r#"name="id" value="f-helpdesk""#), "{page}");

    // An escalation: the helpdesk may not grant Devices/write, which it does not hold.
    let (status, t) = helpdesk
        .post(&add("user:bob", "Device Writer", "/apps/fleet"))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{t}");
    assert!(t.contains("Not changed:"), "{t}");
    assert!(t.contains("no escalation"), "{t}");
    assert!(t.contains("missing actions: Devices/write"), "{t}");
    assert!(f.etcd.get("/t/assignments/x").is_none());

    // An unknown role.
    let (status, t) = helpdesk
        .post(&add("user:bob", "No Such Role", "/apps/fleet"))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{t}");
    assert!(t.contains("unknown role"), "{t}");

    // A scope the role may not be assigned at (the owner holds everything).
    let owner = Session::open(&f.server, "user:owner").await;
    let (status, t) = owner
        .post(&add("user:bob", "App Administrator", "/other"))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{t}");
    assert!(t.contains("would make the policy invalid"), "{t}");
    assert!(t.contains("assignable"), "{t}");

    // The last App Administrator stays.
    let (status, t) = owner.post(&[("op", "remove"), ("id", "admin-1")]).await;
    assert_eq!(status, StatusCode::CONFLICT, "{t}");
    assert!(t.contains("App Administrator"), "{t}");
    assert!(f.etcd.get("/t/assignments/admin-1").is_some());

    // An assignment from the files is not the store's to remove.
    let (status, t) = owner.post(&[("op", "remove"), ("id", "f-helpdesk")]).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{t}");
    assert!(t.contains("is not in the store"), "{t}");

    // A valid grant: written, with its token; Check access at that token sees it.
    let check = "/console/check?principal=user%3Abob&action=Devices%2Fread&scope=%2Fapps%2Ffleet";
    let (_, t) = helpdesk.get(check).await;
    assert!(t.contains("Denied"), "{t}");
    let (status, t) = helpdesk
        .post(&[
            ("op", "add"),
            ("id", "g-bob"),
            ("principal", "user:bob"),
            ("role", "Reader"),
            ("scope", "/apps/fleet"),
        ])
        .await;
    assert_eq!(status, StatusCode::OK, "{t}");
    assert!(
        t.contains("Added role assignment g-bob: user:bob has role Reader at /apps/fleet."),
        "{t}"
    );
    let token = token_in(&t);
    assert!(token.starts_with('r'), "{t}");
    assert!(f.etcd.get("/t/assignments/g-bob").is_some());
    let (status, t) = helpdesk.get(&format!("{check}&at_least={token}")).await;
    assert_eq!(status, StatusCode::OK, "{t}");
    assert!(t.contains("Allowed"), "{t}");
    assert!(
        t.contains(&format!("Answered at consistency token {token} or later")),
        "{t}"
    );
    assert!(
        t.contains("Granted by role Reader, assigned at /apps/fleet (assignment g-bob)"),
        "{t}"
    );

    // Removing it: a new token, and Check access at it no longer allows.
    let (status, t) = helpdesk.post(&[("op", "remove"), ("id", "g-bob")]).await;
    assert_eq!(status, StatusCode::OK, "{t}");
    assert!(t.contains("Removed role assignment g-bob."), "{t}");
    let token = token_in(&t);
    let (_, t) = helpdesk.get(&format!("{check}&at_least={token}")).await;
    assert!(t.contains("Denied"), "{t}");
    assert!(f.etcd.get("/t/assignments/g-bob").is_none());

    // A token that is not one of ours is refused in words.
    let (status, t) = helpdesk.get(&format!("{check}&at_least=%3Cb%3E")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{t}");
    assert!(t.contains("is not one this service issued"), "{t}");

    // Each write is the Admin API's, audit line included: refused ones too.
    let audit: Vec<serde_json::Value> = crate::admin::read_audit(&f.log, 7)
        .await
        .into_iter()
        .filter(|l| l["api"] == "admin")
        .collect();
    let summary: Vec<String> = audit
        .iter()
        .map(|l| {
            format!(
                "{} {} {} {}",
                l["operation"], l["actor"], l["object"], l["result"]
            )
        })
        .collect();
    assert_eq!(audit.len(), 7, "{summary:?}");
    let results: Vec<&str> = audit
        .iter()
        .map(|l| l["result"].as_str().unwrap())
        .collect();
    assert_eq!(
        results,
        [
            "permissionDenied",
            "failedPrecondition",
            "failedPrecondition",
            "failedPrecondition",
            "notFound",
            "accepted",
            "accepted"
        ]
    );
    assert_eq!(audit[0]["operation"], "createRoleAssignment");
    assert_eq!(audit[0]["actor"], "user:helpdesk");
    assert_eq!(audit[3]["operation"], "deleteRoleAssignment");
    assert_eq!(audit[3]["actor"], "user:owner");
    assert_eq!(audit[3]["object"], "assignments/admin-1");
    assert_eq!(audit[6]["object"], "assignments/g-bob");
    assert_eq!(audit[6]["token"], token.as_str());

    // Policy status shows the store.
    let (_, t) = helpdesk.get("/console/status").await;
    assert!(t.contains("etcd, prefix /t/"), "{t}");
    assert!(t.contains("Up to date with what was read."), "{t}");
    assert!(t.contains("etcd answers; last contact"), "{t}");
}

/// The add form's optional time window: passed to the Admin API in UTC (RFC 3339 as
/// written, or a date and time without an offset, as a `datetime-local` control sends it,
/// taken as UTC); a window that has not begun makes Check access say the assignment is
/// not active; a time that is not one, or a window that ends before it begins, is refused
/// in words with nothing written.
#[tokio::test]
async fn the_add_form_takes_a_time_window() {
    use iot_authz::policy::syntax;
    let f = fixture().await;
    let owner = Session::open(&f.server, "user:owner").await;
    let (_, page) = owner.get("/console/assignments").await;
    assert!(
        page.contains("Not before") && page.contains("Not after"),
        "{page}"
    );

    // Not before: a month from now, written with an offset; stored in UTC.
    let day = 86_400 * 1_000_000_000_i128;
    let from = syntax::now() + 30 * day;
    let from_utc = syntax::format_time(from - from % 1_000_000_000);
    let written = {
        let t =
            time::OffsetDateTime::parse(&from_utc, &time::format_description::well_known::Rfc3339)
                .unwrap()
                .to_offset(time::UtcOffset::from_hms(2, 0, 0).unwrap());
        t.format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    };
    assert!(written.ends_with("+02:00"), "{written}");
    let (status, t) = owner
        .post(&[
            ("op", "add"),
            ("id", "later"),
            ("principal", "user:bob"),
            ("role", "Reader"),
            ("scope", "/apps/fleet"),
            ("not_before", &written),
        ])
        .await;
    assert_eq!(status, StatusCode::OK, "{t}");
    assert!(
        t.contains(&format!(
            "Added role assignment later: user:bob has role Reader at /apps/fleet, active from {from_utc} until no end."
        )),
        "{t}"
    );
    let stored: serde_json::Value =
        serde_json::from_str(&f.etcd.get("/t/assignments/later").unwrap()).unwrap();
    assert_eq!(stored["notBefore"], from_utc.as_str(), "{stored}");
    assert!(
        stored.get("notAfter").is_none_or(|v| v.is_null()),
        "{stored}"
    );
    // Check access at the write's token: denied, the assignment not active yet.
    let token = token_in(&t);
    let (status, t) = owner
        .get(&format!(
            "/console/check?principal=user%3Abob&action=Devices%2Fread&scope=%2Fapps%2Ffleet&at_least={token}"
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{t}");
    assert!(t.contains("Denied"), "{t}");
    assert!(
        t.contains(&format!(
            "the assignment is not active at the time asked (notBefore {from_utc}, notAfter none)"
        )),
        "{t}"
    );
    // The list shows the window.
    let (_, t) = owner.get("/console/assignments?principal=user%3Abob").await;
    assert!(
        t.contains(&format!(
            "later Reader user:bob /apps/fleet below from {from_utc} until no end"
        )),
        "{t}"
    );

    // A datetime-local value (no offset, no seconds) is UTC.
    let (status, t) = owner
        .post(&[
            ("op", "add"),
            ("id", "local"),
            ("principal", "user:bob"),
            ("role", "Reader"),
            ("scope", "/apps/fleet"),
            ("not_after", "2031-03-01T08:30"),
        ])
        .await;
    assert_eq!(status, StatusCode::OK, "{t}");
    let stored: serde_json::Value =
        serde_json::from_str(&f.etcd.get("/t/assignments/local").unwrap()).unwrap();
    assert_eq!(stored["notAfter"], "2031-03-01T08:30:00Z", "{stored}");

    // Not times: refused in words, naming the field; nothing written.
    for (field, value, words) in [
        (
            "not_before",
            "tomorrow",
            "Not before `tomorrow` is not a time",
        ),
        (
            "not_after",
            "2031-02-30T00:00:00Z",
            "Not after `2031-02-30T00:00:00Z` is not a time",
        ),
        (
            "not_after",
            "2031-01-01T00:00:00+25:00",
            "Not after `2031-01-01T00:00:00+25:00` is not a time",
        ),
        (
            "not_before",
            "<b>1</b>",
            "Not before `<b>1</b>` is not a time",
        ),
    ] {
        let (status, t) = owner
            .post(&[
                ("op", "add"),
                ("id", "bad-time"),
                ("principal", "user:bob"),
                ("role", "Reader"),
                ("scope", "/apps/fleet"),
                (field, value),
            ])
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{value}: {t}");
        assert!(t.contains(&format!("Not changed: {words}")), "{t}");
        assert!(t.contains("RFC 3339"), "{t}");
        assert!(f.etcd.get("/t/assignments/bad-time").is_none());
    }
    // A window that ends before it begins: the Admin API's refusal, nothing written.
    let (status, t) = owner
        .post(&[
            ("op", "add"),
            ("id", "bad-time"),
            ("principal", "user:bob"),
            ("role", "Reader"),
            ("scope", "/apps/fleet"),
            ("not_before", "2031-01-02T00:00:00Z"),
            ("not_after", "2031-01-01T00:00:00Z"),
        ])
        .await;
    assert!(status.is_client_error(), "{status}: {t}");
    assert!(t.contains("Not changed:") && t.contains("notAfter"), "{t}");
    assert!(f.etcd.get("/t/assignments/bad-time").is_none());
}
