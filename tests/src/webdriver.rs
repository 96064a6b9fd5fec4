//! A small WebDriver client for the browser tests: chromedriver as a child
//! on a free loopback port and one headless Chromium session, ended (and
//! the driver killed) on drop, also when the test failed midway.
//!
//! Test support: a WebDriver error or a wait in vain panics with what the
//! page showed, which fails the test that asked.
//! (`collector/tests/dashboard.rs` keeps its own copy: the collector's
//! tests cannot depend on this crate, which depends on the collector.)

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};

/// Whether `program` is a file in a folder of `PATH`.
pub fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

/// A `chromedriver` child on a free loopback port, killed on drop.
struct ChromeDriver {
    child: Child,
    url: String,
    _profile: tempfile::TempDir,
}

impl ChromeDriver {
    fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
            _profile: tempfile::tempdir().expect("profile dir"),
        }
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A headless Chromium session; ending it (on drop, also after a failed
/// assertion) closes the browser.
pub struct Browser {
    http: reqwest::Client,
    session: String,
    driver: ChromeDriver,
}

impl Browser {
    /// Starts chromedriver and a session with a `width` × `height` mobile
    /// viewport (touch, pixel ratio 1).
    pub async fn start(width: u32, height: u32) -> Self {
        let driver = ChromeDriver::start();
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ready = match http.get(format!("{}/status", driver.url)).send().await {
                Ok(r) => r
                    .json::<Value>()
                    .await
                    .is_ok_and(|v| v["value"]["ready"] == json!(true)),
                Err(_) => false,
            };
            if ready {
                break;
            }
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile = driver._profile.path().display().to_string();
        let caps = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         format!("--window-size={width},{height}"), "--disable-dev-shm-usage",
                         "--hide-scrollbars", format!("--user-data-dir={profile}")],
                "mobileEmulation": {"deviceMetrics": {"width": width, "height": height, "pixelRatio": 1.0, "touch": true}},
            },
        }}});
        let v: Value = http
            .post(format!("{}/session", driver.url))
            .json(&caps)
            .send()
            .await
            .expect("new session")
            .json()
            .await
            .expect("session JSON");
        let session = v["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {v}"))
            .to_string();
        Self {
            http,
            session,
            driver,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}/session/{}{path}", self.driver.url, self.session)
    }

    /// The `value` of a WebDriver command of this session (`path` below
    /// `/session/{id}`), a WebDriver error included.
    async fn command(&self, path: &str, body: Value) -> Value {
        let v: Value = self
            .http
            .post(self.url(path))
            .json(&body)
            .send()
            .await
            .expect("webdriver")
            .json()
            .await
            .expect("webdriver JSON");
        v["value"].clone()
    }

    /// A WebDriver command of this session (`path` below
    /// `/session/{id}`); panics on a WebDriver error.
    pub async fn post(&self, path: &str, body: Value) -> Value {
        let v = self.command(path, body).await;
        if v["error"].is_string() {
            panic!("webdriver {path}: {v}");
        }
        v
    }

    /// Opens `url`.
    pub async fn goto(&self, url: &str) {
        self.post("/url", json!({ "url": url })).await;
    }

    /// Runs `script` with `args`; its return value.
    pub async fn js(&self, script: &str, args: Value) -> Value {
        self.post("/execute/sync", json!({ "script": script, "args": args }))
            .await
    }

    /// Waits (60 s) until `script` returns true; `what` names it on failure.
    pub async fn wait_js(&self, script: &str, args: Value, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.js(script, args.clone()).await != json!(true) {
            if Instant::now() > deadline {
                let body = self.js("return document.body.innerText;", json!([])).await;
                panic!(
                    "waited in vain for {what}; page:\n{}",
                    body.as_str().unwrap_or("")
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits (60 s) until the element with id `id` holds the value `value`.
    pub async fn wait_value(&self, id: &str, value: &str, what: &str) {
        self.wait_js(
            "return document.getElementById(arguments[0]).value === arguments[1];",
            json!([id, value]),
            what,
        )
        .await;
    }

    /// The id of the element `css` selects, waiting up to 20 s for it.
    pub async fn element(&self, css: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let v = self
                .command("/element", json!({ "using": "css selector", "value": css }))
                .await;
            if let Some(id) = v
                .as_object()
                .filter(|o| !o.contains_key("error"))
                .and_then(|o| o.values().next())
                .and_then(Value::as_str)
            {
                return id.to_string();
            }
            assert!(Instant::now() < deadline, "no element {css}: {v}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Clicks the element `css` selects.
    pub async fn click(&self, css: &str) {
        let id = self.element(css).await;
        self.post(&format!("/element/{id}/click"), json!({})).await;
    }

    /// Types `text` into the element, as a keyboard-wedge scanner does
    /// (`\u{E007}` is Enter).
    pub async fn type_into(&self, css: &str, text: &str) {
        let id = self.element(css).await;
        self.post(&format!("/element/{id}/value"), json!({ "text": text }))
            .await;
    }

    /// Saves a PNG of the viewport as `{dir}/{name}.png`.
    pub async fn screenshot(&self, dir: &Path, name: &str) -> PathBuf {
        let v: Value = self
            .http
            .get(self.url("/screenshot"))
            .send()
            .await
            .expect("screenshot")
            .json()
            .await
            .expect("screenshot JSON");
        let png = base64::engine::general_purpose::STANDARD
            .decode(v["value"].as_str().expect("base64 PNG"))
            .expect("PNG base64");
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("write screenshot");
        println!("screenshot: {}", path.display());
        path
    }
}

impl Drop for Browser {
    /// Ends the session (Chromium closes) also when the test failed midway.
    fn drop(&mut self) {
        use std::io::{Read, Write};
        let Some(addr) = self.driver.url.strip_prefix("http://") else {
            return;
        };
        if let Ok(mut stream) = std::net::TcpStream::connect(addr) {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let request = format!(
                "DELETE /session/{} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n",
                self.session
            );
            if stream.write_all(request.as_bytes()).is_ok() {
                let mut answer = Vec::new();
                let _ = stream.read_to_end(&mut answer);
            }
        }
    }
}
