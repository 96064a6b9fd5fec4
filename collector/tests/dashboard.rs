//! The dashboard in headless Chromium, driven through chromedriver's
//! WebDriver HTTP protocol (reqwest + serde_json, no WebDriver crate).
//!
//! A real inbox is seeded with what a site looks like mid-shift: devices
//! online, offline and silent with backlogs and peripherals, a gap, orders
//! at every stage with ERP verdicts and document references, an order
//! stalled for two hours, a parked proof of delivery, exceptions of three
//! kinds and ages, and a pick the ERP refuses (a 500, then a 422) so it
//! becomes a dead letter blocking its lane. Real delivery runs against an
//! ERP on 127.0.0.1:0 and the real API router serves the pages.
//!
//! The test loads each page, checks the key numbers on it, opens an
//! order's timeline, filters orders by state, then fixes the ERP, clicks
//! Replay on the dead letter and waits until the page shows the event
//! booked with its document, and checks the ERP booked it once. Screenshots
//! of every page go to `$DOCKLINE_TEST_SCREENSHOT_DIR` or
//! `target/dashboard-screenshots/`.
//!
//! SO-1001's proof of delivery carries a signature (a real PNG in the media
//! store): its timeline shows the image, loaded through a signed link.
//!
//! Runs when `chromium` and `chromedriver` are on PATH (Debian packages
//! `chromium` and `chromium-driver`); otherwise prints SKIP.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine;
use dockline_collector::delivery::Delivery;
use dockline_collector::erp::ErpConfig;
use dockline_collector::http::ApiConfig;
use dockline_collector::http::auth::Auth;
use dockline_collector::http::{self as api, ApiState};
use dockline_collector::inbox::{Inbox, InboxHandle, InboxStore};
use dockline_collector::media::config::MediaConfig;
use dockline_collector::media::store::FsMediaStore;
use dockline_collector::media::{MediaHub, MediaRef, MediaRole};
use dockline_collector::now_ms;
use dockline_collector::shutdown::ShutdownTrigger;
use dockline_protocol::media::{MediaHash, MediaType};
use dockline_protocol::status::{DeviceHealth, QueueHealth};
use dockline_protocol::{
    Batch, BusinessEvent, DeviceId, Envelope, EventDetail, EventId, ExceptionKind, Outcome,
    Payload, Priority, ProofOfDelivery, References, SiteId, Status, StatusKind, TimeSource,
};
use serde_json::{Value, json};
use tokio::sync::{Notify, mpsc};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const VIEWER_TOKEN: &str = "viewer-7f3c2a9e4b1d8c6f";
const OPERATOR_TOKEN: &str = "operator-2b8e5d1a9c4f7e3b";
const MIN: i64 = 60_000;

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

// ---------------------------------------------------------------- the ERP

/// An ERP that books each idempotency key once, and refuses the pick of
/// SO-1004 (a 500, then 422s) until the test fixes the data.
#[derive(Default)]
struct Erp {
    fixed: AtomicBool,
    /// (device, seq, status answered).
    calls: Mutex<Vec<(String, u64, u16)>>,
    /// (idempotency key, device, seq, document).
    ledger: Mutex<Vec<(String, String, u64, String)>>,
}

impl Erp {
    fn booked(&self, device: &str, seq: u64) -> Vec<String> {
        self.ledger
            .lock()
            .expect("lock")
            .iter()
            .filter(|(_, d, s, _)| d == device && *s == seq)
            .map(|(_, _, _, doc)| doc.clone())
            .collect()
    }
}

async fn erp_handler(State(erp): State<Arc<Erp>>, headers: HeaderMap, body: Bytes) -> Response {
    let json: Value = serde_json::from_slice(&body).expect("body is JSON");
    let device = json["docklinedevice"].as_str().expect("device").to_string();
    let seq = json["docklineseq"].as_u64().expect("seq");
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .expect("idempotency-key")
        .to_string();
    let document = format!("DOC-{device}-{seq}");
    let refused = device == "hh-02" && seq == 4 && !erp.fixed.load(Ordering::SeqCst);
    let status = if refused {
        let earlier = erp
            .calls
            .lock()
            .expect("lock")
            .iter()
            .filter(|(d, s, _)| *d == device && *s == seq)
            .count();
        if earlier == 0 { 500 } else { 422 }
    } else {
        let mut ledger = erp.ledger.lock().expect("lock");
        if !ledger.iter().any(|(k, ..)| *k == key) {
            ledger.push((key, device.clone(), seq, document.clone()));
        }
        201
    };
    erp.calls.lock().expect("lock").push((device, seq, status));
    let body = match status {
        201 => format!(r#"{{"document":"{document}"}}"#),
        500 => "database is locked".into(),
        _ => r#"{"message":"item 04012345678901 is not on order SO-1004"}"#.into(),
    };
    (StatusCode::from_u16(status).expect("status"), body).into_response()
}

async fn start_erp() -> (Arc<Erp>, SocketAddr) {
    let erp = Arc::new(Erp::default());
    let app = Router::new()
        .route("/events", post(erp_handler))
        .with_state(Arc::clone(&erp));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (erp, addr)
}

// ------------------------------------------------------------ seeded data

fn detail(kind: &str) -> EventDetail {
    let van = || "VAN-7".to_string();
    match kind {
        "pick" => EventDetail::Picked {
            item: "04012345678901".into(),
            quantity: 2,
            lot: None,
        },
        "pack" => EventDetail::Packed {
            quantity: 2,
            weight: None,
        },
        "load" => EventDetail::Loaded { vehicle: van() },
        "depart" => EventDetail::Departed {
            vehicle: van(),
            position: None,
        },
        "arrive" => EventDetail::Arrived {
            vehicle: van(),
            position: None,
        },
        "deliver" => EventDetail::Delivered(ProofOfDelivery {
            received_by: "J. Smith".into(),
            pieces: 2,
            signature_ref: Some(format!("sha256:{}", MediaHash::of(&signature_png()))),
            photo_ref: None,
            position: None,
        }),
        "short_pick" => EventDetail::Exception {
            kind: ExceptionKind::ShortPick,
            note: "bin A-12 had 1 of 2".into(),
        },
        "weight_mismatch" => EventDetail::Exception {
            kind: ExceptionKind::WeightMismatch,
            note: "3.4 kg, expected 2.9 kg".into(),
        },
        "delivery_refused" => EventDetail::Exception {
            kind: ExceptionKind::DeliveryRefused,
            note: "carton crushed".into(),
        },
        other => panic!("no event kind {other}"),
    }
}

/// A real 48×16 grayscale PNG (a stroke on white): stored zlib blocks, so
/// no compressor is needed, and browsers decode it.
fn signature_png() -> Vec<u8> {
    fn crc(bytes: &[u8]) -> u32 {
        let mut c = 0xffff_ffffu32;
        for &b in bytes {
            c ^= u32::from(b);
            for _ in 0..8 {
                c = if c & 1 == 1 {
                    0xedb8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
        }
        !c
    }
    fn chunk(out: &mut Vec<u8>, kind: &[u8], data: &[u8]) {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let mut body = kind.to_vec();
        body.extend_from_slice(data);
        out.extend_from_slice(&body);
        out.extend_from_slice(&crc(&body).to_be_bytes());
    }
    let (w, h) = (48u32, 16u32);
    let mut raw = Vec::new();
    for y in 0..h {
        raw.push(0); // filter: none
        for x in 0..w {
            let on_stroke = (x / 3 + y) % 8 == 0 || y == h / 2;
            raw.push(if on_stroke { 20 } else { 255 });
        }
    }
    let (mut a, mut b) = (1u32, 0u32);
    for &byte in &raw {
        a = (a + u32::from(byte)) % 65_521;
        b = (b + a) % 65_521;
    }
    let mut z = vec![0x78, 0x01, 0x01];
    let len = raw.len() as u16;
    z.extend_from_slice(&len.to_le_bytes());
    z.extend_from_slice(&(!len).to_le_bytes());
    z.extend_from_slice(&raw);
    z.extend_from_slice(&((b << 16) | a).to_be_bytes());
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 0, 0, 0, 0]);
    chunk(&mut png, b"IHDR", &ihdr);
    chunk(&mut png, b"IDAT", &z);
    chunk(&mut png, b"IEND", &[]);
    png
}

/// One event a device recorded: (kind, order, minutes ago).
type Planned = (&'static str, Option<&'static str>, i64);

fn envelope(device: &str, seq: u64, (kind, order, ago): Planned, now: i64) -> Envelope {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&seq.to_be_bytes());
    id[8..8 + device.len().min(8)].copy_from_slice(&device.as_bytes()[..device.len().min(8)]);
    Envelope {
        v: 1,
        device: DeviceId::new(device).expect("id"),
        epoch: 1,
        seq,
        id: EventId(id),
        captured_ms: now - ago * MIN,
        time_source: TimeSource::Ntp,
        priority: Priority::MustDeliver,
        payload: Payload::Event(BusinessEvent {
            detail: detail(kind),
            refs: References {
                order: order.map(str::to_owned),
                ..References::default()
            },
        }),
    }
}

fn status(device: &str, session: u64, kind: StatusKind) -> Status {
    Status {
        v: 1,
        device: DeviceId::new(device).expect("id"),
        session,
        at_ms: now_ms(),
        kind,
    }
}

fn heartbeat(queued: u64, oldest_ms: u64, devices: Option<Vec<DeviceHealth>>) -> StatusKind {
    StatusKind::Heartbeat {
        queued,
        oldest_unacked_ms: oldest_ms,
        health: Some(QueueHealth {
            devices,
            ..QueueHealth::default()
        }),
    }
}

fn birth() -> StatusKind {
    StatusKind::Birth {
        agent_version: "0.1.0".into(),
        verdicts_wanted: None,
    }
}

/// Seeds the inbox; returns nothing pending but what the live part needs:
/// SO-1004's pick (refused), SO-1003's proof of delivery (parked), fresh
/// exceptions, and hh-03's event behind a gap.
fn seed(inbox: &mut Inbox, now: i64) {
    let site = SiteId::new("dc-north").expect("site");
    // Events per device, in sequence order: (kind, order, minutes ago),
    // and whether the ERP booked it already.
    let plan: [(&str, Vec<(Planned, bool)>); 4] = [
        (
            "hh-01",
            vec![
                (("pick", Some("SO-1001"), 200), true),
                (("pack", Some("SO-1001"), 190), true),
                (("load", Some("SO-1001"), 185), true),
                (("weight_mismatch", Some("SO-1006"), 30), false),
                (("short_pick", Some("SO-1006"), 3), false),
            ],
        ),
        (
            "van-01",
            vec![
                (("depart", Some("SO-1001"), 180), true),
                (("arrive", Some("SO-1001"), 150), true),
                (("deliver", Some("SO-1001"), 148), true),
                (("deliver", Some("SO-1003"), 4), false),
                (("delivery_refused", Some("SO-1007"), 4), false),
            ],
        ),
        (
            "hh-02",
            vec![
                (("pick", Some("SO-1002"), 125), true),
                (("short_pick", Some("SO-1002"), 124), true),
                (("pack", Some("SO-1002"), 120), true),
                (("pick", Some("SO-1004"), 2), false),
            ],
        ),
        ("hh-03", vec![(("pick", None, 9), false)]),
    ];
    for (device, events) in &plan {
        for (i, (planned, booked)) in events.iter().enumerate() {
            let seq = i as u64 + 1;
            let at = now - planned.2 * MIN + 30_000;
            let batch = Batch {
                v: 1,
                device: DeviceId::new(*device).expect("id"),
                epoch: 1,
                first_held: 1,
                events: vec![envelope(device, seq, *planned, now)],
                shed: Vec::new(),
            };
            inbox.store_batch(&site, &batch, at).expect("store");
            if *booked {
                let outcome = Outcome::Booked {
                    document: format!("DOC-{device}-{seq}"),
                };
                let device = DeviceId::new(*device).expect("id");
                assert!(
                    inbox
                        .record_verdict(&device, 1, seq, &outcome, at + 1_000)
                        .expect("verdict")
                );
            }
        }
    }
    // hh-03's sequence 3 arrives; 2 never did: a gap.
    let batch = Batch {
        v: 1,
        device: DeviceId::new("hh-03").expect("id"),
        epoch: 1,
        first_held: 1,
        events: vec![envelope("hh-03", 3, ("pick", None, 8), now)],
        shed: Vec::new(),
    };
    inbox
        .store_batch(&site, &batch, now - 8 * MIN)
        .expect("store");
    // Status last: a stored batch counts as hearing from the device too.
    // Devices: hh-01 and hh-02 online, van-01 gone (last will), hh-03 born
    // 10 minutes ago and silent since.
    let scanner = |connected: bool, ago: i64| DeviceHealth {
        name: "scanner".into(),
        connected,
        readings: 412,
        rejected: 1,
        last_reading_ms: Some(now - ago * 1000),
    };
    let scale = DeviceHealth {
        name: "scale".into(),
        connected: false,
        readings: 96,
        rejected: 4,
        last_reading_ms: Some(now - 25 * MIN),
    };
    let hh01 = [
        status("hh-01", 3, birth()),
        status(
            "hh-01",
            3,
            heartbeat(1250, 7 * 60_000, Some(vec![scanner(true, 20), scale])),
        ),
    ];
    for s in &hh01 {
        inbox.record_status(&site, s, now - 5_000).expect("status");
    }
    inbox
        .record_status(&site, &status("hh-02", 1, birth()), now - 60 * MIN)
        .expect("status");
    inbox
        .record_status(
            &site,
            &status("hh-02", 1, heartbeat(0, 0, Some(vec![scanner(true, 50)]))),
            now - 2_000,
        )
        .expect("status");
    inbox
        .record_status(&site, &status("van-01", 7, birth()), now - 90 * MIN)
        .expect("status");
    inbox
        .record_status(
            &site,
            &status("van-01", 7, heartbeat(37, 15 * 60_000, None)),
            now - 4 * MIN,
        )
        .expect("status");
    inbox
        .record_status(
            &site,
            &status("van-01", 7, StatusKind::Death { graceful: false }),
            now - 3 * MIN,
        )
        .expect("status");
    inbox
        .record_status(&site, &status("hh-03", 2, birth()), now - 10 * MIN)
        .expect("status");
}

// ------------------------------------------------------------- WebDriver

/// chromedriver on a free port, ended on drop (also when a test fails;
/// the browser's session is ended first, see `Browser`'s drop).
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
        // The browser was closed by ending its session (Browser's drop).
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A WebDriver session.
struct Browser {
    http: reqwest::Client,
    session: String,
    driver: ChromeDriver,
}

impl Browser {
    async fn start() -> Self {
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
                         "--window-size=1024,768", "--disable-dev-shm-usage",
                         "--hide-scrollbars", format!("--user-data-dir={profile}")],
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

    async fn post(&self, path: &str, body: Value) -> Value {
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
        if v["value"]["error"].is_string() {
            panic!("webdriver {path}: {}", v["value"]);
        }
        v["value"].clone()
    }

    async fn goto(&self, url: &str) {
        self.post("/url", json!({ "url": url })).await;
    }

    /// Runs `script` (a function body; `arguments` as given) in the page.
    async fn js(&self, script: &str, args: Value) -> Value {
        self.post("/execute/sync", json!({ "script": script, "args": args }))
            .await
    }

    /// The visible text of the first element matching `css`, if any.
    async fn text(&self, css: &str) -> Option<String> {
        self.js(
            "const e = document.querySelector(arguments[0]); return e ? e.innerText : null;",
            json!([css]),
        )
        .await
        .as_str()
        .map(str::to_owned)
    }

    /// Waits until the element `css` exists and its text satisfies `ok`.
    async fn wait_text(&self, css: &str, what: &str, ok: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let text = self.text(css).await;
            if let Some(t) = &text
                && ok(t)
            {
                return t.clone();
            }
            if Instant::now() > deadline {
                let body = self.text("body").await.unwrap_or_default();
                panic!("{css}: expected {what}, found {text:?}\npage:\n{body}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until `script` returns true.
    async fn wait_js(&self, script: &str, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.js(script, json!([])).await != json!(true) {
            assert!(Instant::now() < deadline, "waited in vain for {what}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits for a summary card's value.
    async fn card(&self, id: &str, expected: &str) {
        let css = format!("[data-testid={id}] .value");
        self.wait_text(&css, expected, |t| t.trim() == expected)
            .await;
    }

    /// Signs in with an access token through the page header's form.
    async fn sign_in(&self, token: &str) {
        let id = self.element("#token").await;
        self.post(&format!("/element/{id}/value"), json!({ "text": token }))
            .await;
        self.click("#token-save").await;
    }

    async fn click(&self, css: &str) {
        let id = self.element(css).await;
        self.post(&format!("/element/{id}/click"), json!({})).await;
    }

    /// The WebDriver id of the first element matching `css`, waiting for
    /// it to appear (the pages draw after their data arrives).
    async fn element(&self, css: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let v: Value = self
                .http
                .post(self.url("/element"))
                .json(&json!({ "using": "css selector", "value": css }))
                .send()
                .await
                .expect("webdriver")
                .json()
                .await
                .expect("webdriver JSON");
            if let Some(id) = v["value"]
                .as_object()
                .filter(|o| !o.contains_key("error"))
                .and_then(|o| o.values().next())
                .and_then(Value::as_str)
            {
                return id.to_string();
            }
            if Instant::now() > deadline {
                let body = self.text("body").await.unwrap_or_default();
                panic!("no element {css}: {}\npage:\n{body}", v["value"]);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Sets the window size (CSS pixels of the page in headless mode).
    async fn resize(&self, width: i64, height: i64) {
        self.post("/window/rect", json!({ "width": width, "height": height }))
            .await;
    }

    /// Saves the whole page as `{dir}/{name}.png`: the window grows to the
    /// page's height for the shot, then returns to `width` × 768.
    async fn screenshot(&self, dir: &Path, name: &str) -> PathBuf {
        let width = self
            .js("return window.innerWidth;", json!([]))
            .await
            .as_i64()
            .unwrap_or(1024);
        let height = self
            .js("return document.documentElement.scrollHeight;", json!([]))
            .await
            .as_i64()
            .unwrap_or(768);
        // The window's frame (if any) on top of the page's height.
        let frame = self
            .js("return window.outerHeight - window.innerHeight;", json!([]))
            .await
            .as_i64()
            .unwrap_or(0)
            .max(0);
        self.resize(width, (height + frame).clamp(768, 4000)).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let path = self.save_screenshot(dir, name).await;
        self.resize(width, 768).await;
        path
    }

    async fn save_screenshot(&self, dir: &Path, name: &str) -> PathBuf {
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

    async fn quit(self) {
        let _ = self.http.delete(self.url("")).send().await;
    }
}

impl Drop for Browser {
    /// Ends the session (Chromium closes) also when the test failed midway;
    /// blocking and raw, as a drop cannot await. Then chromedriver's drop
    /// ends whatever is left.
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

fn screenshot_dir() -> PathBuf {
    let dir = match std::env::var_os("DOCKLINE_TEST_SCREENSHOT_DIR") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/dashboard-screenshots"),
    };
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    dir
}

// ----------------------------------------------------------------- the test

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_pages_show_the_seeded_site_and_replay_books_a_dead_letter() {
    if !(on_path("chromium") && on_path("chromedriver")) {
        println!(
            "SKIP dashboard_pages_show_the_seeded_site_and_replay_books_a_dead_letter: install Debian's chromium and chromium-driver (chromium and chromedriver on PATH) to run"
        );
        return;
    }
    let (erp, erp_addr) = start_erp().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let now = now_ms();
    let mut inbox = Inbox::open(&dir.path().join("inbox.db")).expect("inbox");
    seed(&mut inbox, now);
    let inbox = InboxHandle::new(inbox);
    // SO-1001's signature in the media store, named by its event (as
    // ingest records it).
    let media = MediaHub::new(
        Box::new(FsMediaStore::open(&dir.path().join("media")).expect("media store")),
        MediaConfig::default(),
        Arc::new(Notify::new()),
    );
    let png = signature_png();
    let sig = MediaHash::of(&png);
    let pod_id = envelope("van-01", 3, ("deliver", Some("SO-1001"), 148), now).id;
    media
        .store
        .call(move |s| {
            s.append(&sig, MediaType::Png, png.len() as u64, 0, &png)?;
            s.complete(&sig, MediaType::Png, 1)?;
            s.add_refs(
                &pod_id.to_string(),
                &[MediaRef {
                    hash: sig,
                    role: MediaRole::Signature,
                }],
            )
        })
        .await
        .expect("signature stored");

    let cfg = ErpConfig {
        timeout_ms: 2000,
        retry_min_ms: 10,
        retry_max_ms: 50,
        concurrency: 2,
        // SO-1003's proof of delivery waits for its arrival for an hour.
        lane_park_max_ms: 3_600_000,
        ..ErpConfig::new(format!("http://{erp_addr}/events"), SECRET)
    };
    let (tx, mut acks) = mpsc::channel(64);
    tokio::spawn(async move { while acks.recv().await.is_some() {} });
    let delivery = Arc::new(Delivery::new(&cfg, inbox.clone(), tx).expect("delivery"));
    let wake = Arc::new(Notify::new());
    let trigger = ShutdownTrigger::new();
    let delivery_task =
        tokio::spawn(Arc::clone(&delivery).run(Arc::clone(&wake), trigger.subscribe()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let api_addr = listener.local_addr().expect("addr");
    let router = api::router(ApiState {
        inbox: inbox.clone(),
        wake: Arc::clone(&wake),
        delivery: Some(Arc::clone(&delivery)),
        auth: Arc::new(Auth::open()),
        ingest: None,
    })
    .merge(api::media::routes(
        media.clone(),
        None,
        Arc::new(Auth::open()),
    ));
    tokio::spawn(async move { axum::serve(listener, router).await });
    // The same collector behind access control: a viewer and an operator.
    let api_config: ApiConfig = toml::from_str(&format!(
        r#"
        listen = "127.0.0.1:0"
        [[tokens]]
        role = "viewer"
        token = "{VIEWER_TOKEN}"
        [[tokens]]
        role = "operator"
        token = "{OPERATOR_TOKEN}"
        "#
    ))
    .expect("[api] config");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let guarded_addr = listener.local_addr().expect("addr");
    let guarded = api::router(ApiState {
        inbox: inbox.clone(),
        wake: Arc::clone(&wake),
        delivery: Some(Arc::clone(&delivery)),
        auth: Arc::new(Auth::from_config(&api_config, guarded_addr).expect("auth")),
        ingest: None,
    });
    tokio::spawn(async move { axum::serve(listener, guarded).await });

    // Delivery settles: the fresh exceptions and hh-03's first pick booked,
    // SO-1004's pick dead-lettered after a 500 and a 422.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let stats = inbox.call(|i| i.stats()).await.expect("stats");
        // Parked: SO-1003's proof of delivery and hh-03's event behind its gap.
        if stats.dead_letters == 1
            && stats.blocked_lanes == 1
            && stats.parked_lanes == 2
            && erp.booked("van-01", 5).len() == 1
            && erp.booked("hh-01", 5).len() == 1
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "delivery did not settle: {stats:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let shots = screenshot_dir();
    let base = format!("http://127.0.0.1:{}", api_addr.port());
    let browser = Browser::start().await;

    // Devices.
    browser.goto(&format!("{base}/ui/devices")).await;
    browser.card("card-online", "2").await;
    browser.card("card-offline", "1").await;
    browser.card("card-silent", "1").await;
    browser.card("card-backlog", "1287").await;
    browser.card("card-gaps", "1").await;
    let hh01 = browser
        .wait_text(
            "tr[data-device=hh-01]",
            "hh-01's backlog and peripherals",
            |t| t.contains("1250") && t.contains("scanner ✓") && t.contains("scale ✗"),
        )
        .await;
    assert!(hh01.contains("7 min"), "oldest unsent of hh-01: {hh01}");
    let van = browser
        .text("tr[data-device=van-01]")
        .await
        .expect("van-01 row");
    // 15 min at its last heartbeat 4 min ago; nothing left it since.
    assert!(
        van.contains("offline") && van.contains("37") && van.contains("19 min"),
        "van-01: {van}"
    );
    let hh03 = browser
        .text("tr[data-device=hh-03]")
        .await
        .expect("hh-03 row");
    assert!(
        hh03.contains("silent") && hh03.contains("#2"),
        "hh-03: {hh03}"
    );
    browser.screenshot(&shots, "devices").await;
    // A tablet held upright: the rows become cards.
    browser.resize(768, 1024).await;
    browser
        .wait_js(
            "const t = document.querySelector('thead'); \
             return window.innerWidth <= 800 && t !== null && getComputedStyle(t).display === 'none';",
            "the table stacked as cards",
        )
        .await;
    browser.screenshot(&shots, "devices-tablet-portrait").await;
    browser.resize(1024, 768).await;

    // Orders: counts per state, a timeline, a filter.
    browser.goto(&format!("{base}/ui/orders")).await;
    for (state, n) in [
        ("delivered", "1"),
        ("parked", "1"),
        ("blocked", "1"),
        ("in_progress", "3"),
        ("rejected", "0"),
        ("all", "6"),
    ] {
        let css = format!("[data-filter={state}] .n");
        browser.wait_text(&css, n, |t| t == n).await;
    }
    browser.click("tr[data-order=SO-1001]").await;
    let timeline = browser
        .wait_text(
            "[data-timeline='order:SO-1001']",
            "SO-1001's timeline",
            |t| t.contains("DOC-van-01-3"),
        )
        .await;
    for expected in [
        "picked",
        "packed",
        "loaded",
        "departed",
        "arrived",
        "delivered",
        "DOC-hh-01-1",
        "hh-01",
        "van-01",
        "received by J. Smith",
    ] {
        assert!(timeline.contains(expected), "{expected} in {timeline}");
    }
    let steps: Vec<&str> = timeline
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| {
            [
                "picked",
                "packed",
                "loaded",
                "departed",
                "arrived",
                "delivered",
            ]
            .contains(w)
        })
        .collect();
    assert_eq!(
        steps,
        [
            "picked",
            "packed",
            "loaded",
            "departed",
            "arrived",
            "delivered"
        ],
        "pick to proof of delivery, in order"
    );
    // The proof of delivery shows its signature, loaded by the browser.
    browser
        .wait_js(
            "const i = document.querySelector(\"[data-timeline='order:SO-1001'] [data-media=signature] img\"); \
             return !!i && i.complete && i.naturalWidth === 48;",
            "SO-1001's signature image in its timeline",
        )
        .await;
    browser.screenshot(&shots, "orders").await;
    browser.click("[data-filter=parked]").await;
    browser
        .wait_text("tbody", "only SO-1003", |t| {
            t.contains("SO-1003") && !t.contains("SO-1001")
        })
        .await;
    browser.screenshot(&shots, "orders-parked").await;

    // Stuck work.
    browser.goto(&format!("{base}/ui/stuck")).await;
    browser.card("card-blocked", "1").await;
    browser.card("card-stalled", "1").await;
    // SO-1003 waits for its arrival, hh-03 for its gap.
    browser.card("card-parked", "2").await;
    let lanes = browser
        .wait_text("tr[data-lane='order:SO-1004']", "the blocked lane", |t| {
            t.contains("blocked")
        })
        .await;
    assert!(lanes.contains("blocked"), "{lanes}");
    browser
        .wait_text("tr[data-lane='order:SO-1003']", "the parked lane", |t| {
            t.contains("parked")
        })
        .await;
    let stalled = browser
        .wait_text("tr[data-order=SO-1002]", "SO-1002 stalled", |t| {
            t.contains("1 h 59 min") || t.contains("2 h 00 min")
        })
        .await;
    assert!(stalled.contains("packed"), "{stalled}");
    browser.screenshot(&shots, "stuck").await;

    // Exceptions by kind and age.
    browser.goto(&format!("{base}/ui/exceptions")).await;
    browser.card("card-short_pick", "2").await;
    browser.card("card-weight_mismatch", "1").await;
    browser.card("card-delivery_refused", "1").await;
    let short = browser
        .text("[data-testid=card-short_pick] .sub")
        .await
        .unwrap_or_default();
    assert!(
        short.contains("1 in the last hour") && short.contains("1 earlier today"),
        "{short}"
    );
    browser.screenshot(&shots, "exceptions").await;

    // Dead letters, on the collector with access control: nothing without
    // a token; a viewer sees the dead letter but no replay button.
    let guarded_base = format!("http://127.0.0.1:{}", guarded_addr.port());
    browser
        .goto(&format!("{guarded_base}/ui/dead-letters"))
        .await;
    browser
        .wait_text("#error", "a request to sign in", |t| t.contains("401"))
        .await;
    browser.sign_in(VIEWER_TOKEN).await;
    browser.card("card-open", "1").await;
    browser
        .wait_text("tr[data-dead-letter]", "no replay for a viewer", |t| {
            t.contains("operator only")
        })
        .await;
    assert_eq!(browser.text("button[data-replay]").await, None);
    assert_eq!(browser.text("#role").await.as_deref(), Some("role: viewer"));
    browser.screenshot(&shots, "dead-letters-viewer").await;
    browser.click("#token-clear").await;
    browser
        .wait_text("#role", "signed out", |t| t.is_empty())
        .await;

    // The operator: the refused pick, its attempts; fix the ERP, replay.
    browser.sign_in(OPERATOR_TOKEN).await;
    browser
        .wait_text("#role", "the operator role", |t| t == "role: operator")
        .await;
    browser.card("card-open", "1").await;
    let row = browser
        .wait_text("tr[data-dead-letter]", "the dead letter", |t| {
            t.contains("2 attempts")
        })
        .await;
    assert!(
        row.contains("hh-02 #4") && row.contains("order:SO-1004") && row.contains("rejected"),
        "{row}"
    );
    browser.click("tr[data-dead-letter] details summary").await;
    browser
        .wait_text("tr[data-dead-letter] .attempts", "both attempts", |t| {
            t.contains("HTTP 500") && t.contains("HTTP 422")
        })
        .await;
    browser.screenshot(&shots, "dead-letters").await;
    assert!(erp.booked("hh-02", 4).is_empty());
    erp.fixed.store(true, Ordering::SeqCst);
    browser.click("button[data-replay]").await;
    // The replay went through access control with the operator's token.
    browser
        .wait_text("#notice", "the replay notice", |t| t.contains("replayed"))
        .await;
    browser.card("card-open", "0").await;
    browser.click("#show-resolved").await;
    let booked = browser
        .wait_text("tr[data-dead-letter]", "the event booked", |t| {
            t.contains("DOC-hh-02-4")
        })
        .await;
    assert!(
        booked.contains("replayed") && booked.contains("booked"),
        "{booked}"
    );
    browser.screenshot(&shots, "dead-letters-replayed").await;
    assert_eq!(
        erp.booked("hh-02", 4),
        ["DOC-hh-02-4"],
        "the ERP booked the replayed pick once"
    );
    let stats = inbox.call(|i| i.stats()).await.expect("stats");
    assert_eq!((stats.dead_letters, stats.blocked_lanes), (0, 0));

    // The order's timeline shows it too.
    browser.goto(&format!("{base}/ui/orders")).await;
    browser.click("tr[data-order=SO-1004]").await;
    browser
        .wait_text("[data-timeline='order:SO-1004']", "the booked pick", |t| {
            t.contains("booked") && t.contains("DOC-hh-02-4")
        })
        .await;

    browser.quit().await;
    trigger.trigger();
    let _ = delivery_task.await;
}
