//! A real headless Chromium driven by chromedriver over the W3C WebDriver protocol. The
//! few commands the console tests need are plain JSON over HTTP (reqwest is already here);
//! Chrome DevTools commands go through chromedriver's `goog/cdp/execute`.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::tool;

/// chromedriver and one browser session.
pub struct Browser {
    driver: Child,
    base: String,
    client: reqwest::Client,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver on a free port (it reports the port) and a headless Chromium.
    pub async fn start() -> Self {
        super::crypto();
        let mut driver = Command::new(tool("chromedriver"))
            .arg("--port=0")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let stdout = driver.stdout.take().expect("stdout");
        let port = BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find_map(|line| {
                line.split("started successfully on port ")
                    .nth(1)
                    .map(|p| p.trim_end_matches('.').trim().to_owned())
            })
            .expect("chromedriver reports its port");
        let profile = tempfile::tempdir().unwrap();
        let client = reqwest::Client::new();
        let base = format!("http://127.0.0.1:{port}");
        let args = [
            "--headless=new".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--no-first-run".to_owned(),
            "--window-size=1200,900".to_owned(),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": tool("chromium"), "args": args},
        }}});
        let session: Value = client
            .post(format!("{base}/session"))
            .json(&caps)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let id = session["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no browser session: {session}"))
            .to_owned();
        let mut browser = Self {
            driver,
            base: format!("{base}/session/{id}"),
            client,
            _profile: profile,
        };
        browser.cdp("Network.enable", json!({})).await;
        browser
    }

    async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            req = req.json(&body);
        }
        let answer: Value = req.send().await.unwrap().json().await.unwrap();
        if let Some(error) = answer["value"].get("error") {
            panic!("WebDriver {path}: {error}: {}", answer["value"]["message"]);
        }
        answer["value"].clone()
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        self.send(reqwest::Method::POST, path, Some(body)).await
    }

    /// A Chrome DevTools Protocol command.
    pub async fn cdp(&mut self, cmd: &str, params: Value) -> Value {
        self.post("/goog/cdp/execute", json!({"cmd": cmd, "params": params}))
            .await
    }

    /// Every request the browser sends from now on carries these headers (how the tests
    /// sign in: the console's identity source reads a header).
    pub async fn set_headers(&mut self, headers: Value) {
        self.cdp("Network.setExtraHTTPHeaders", json!({"headers": headers}))
            .await;
    }

    pub async fn goto(&self, url: &str) {
        self.post("/url", json!({"url": url})).await;
    }

    /// Runs `body` as a function in the page and returns its value.
    pub async fn js(&self, body: &str) -> Value {
        self.post("/execute/sync", json!({"script": body, "args": []}))
            .await
    }

    /// Runs `body`, which must call `arguments[arguments.length - 1]` with its result.
    pub async fn js_async(&self, body: &str) -> Value {
        self.post("/execute/async", json!({"script": body, "args": []}))
            .await
    }

    /// The visible text of the first element matching `css` ("" when there is none).
    pub async fn text(&self, css: &str) -> String {
        let script = format!(
            "const e = document.querySelector({}); return e ? e.innerText : '';",
            json!(css)
        );
        self.js(&script)
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Waits until `condition` (a script returning a boolean) holds, polling the page.
    pub async fn wait_for(&self, condition: &str, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if self.js(condition).await.as_bool() == Some(true) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    /// Types into the element matching `css` (after clearing it).
    pub async fn fill(&self, css: &str, text: &str) {
        let element = self
            .post("/element", json!({"using": "css selector", "value": css}))
            .await;
        let id = element
            .as_object()
            .and_then(|o| o.values().next())
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("no element {css}"))
            .to_owned();
        self.post(&format!("/element/{id}/clear"), json!({})).await;
        self.post(&format!("/element/{id}/value"), json!({"text": text}))
            .await;
    }

    /// Presses keys (WebDriver key codes, e.g. `\u{E004}` for Tab, `\u{E007}` for Enter).
    pub async fn keys(&self, keys: &[&str]) {
        let actions: Vec<Value> = keys
            .iter()
            .flat_map(|k| {
                [
                    json!({"type": "keyDown", "value": k}),
                    json!({"type": "keyUp", "value": k}),
                ]
            })
            .collect();
        self.post(
            "/actions",
            json!({"actions": [{"type": "key", "id": "keyboard", "actions": actions}]}),
        )
        .await;
        self.send(reqwest::Method::DELETE, "/actions", None).await;
    }

    /// A PNG of the whole page (beyond the viewport).
    pub async fn screenshot(&mut self) -> Vec<u8> {
        use base64::Engine as _;
        let shot = self
            .cdp(
                "Page.captureScreenshot",
                json!({"format": "png", "captureBeyondViewport": true}),
            )
            .await;
        base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap_or_default())
            .unwrap()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ends the session (the browser exits with it), then chromedriver.
        let url = self.base.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async {
                reqwest::Client::new()
                    .delete(url)
                    .timeout(Duration::from_secs(10))
                    .send()
                    .await
                    .ok()
            })
        })
        .join();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
