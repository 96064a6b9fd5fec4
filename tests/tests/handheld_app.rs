//! The handheld app in headless Chromium at 360 × 640, against the whole
//! system (agent, broker, collector, mock ERP as processes): a picker
//! signs in and completes a pick list by typing scans (a keyboard-wedge
//! scanner types into the focused field), one of them the wrong item; a
//! driver captures a delivery with a drawn signature and a photo (which go
//! to the agent's media store before the event), and an exception. The agent is SIGKILLed while the delivery waits to be sent
//! and restarted, and the first attempt of the delivery is replayed with
//! the app's own Idempotency-Key (as when an answer is lost after the
//! commit): every event is booked at the ERP exactly once.
//!
//! Screenshots of every screen go to `$DOCKLINE_TEST_SCREENSHOT_DIR/app`
//! (else `target/app-screenshots`). Runs when `chromium` and
//! `chromedriver` are on PATH; otherwise prints SKIP.
//!
//! The browser is driven by the harness's WebDriver client
//! ([`dockline_tests::webdriver`]).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use base64::Engine;
use dockline_tests::webdriver::{Browser, on_path};
use dockline_tests::{Cluster, effect_key, eventually, external_mqtt};
use serde_json::{Value, json};

const DEVICE: &str = "hh-app";
const SITE: &str = "dc-app";
const ITEM_A: &str = "09506000134352";
const ITEM_B: &str = "04012345678901";
/// An 8 × 8 PNG for the delivery photo.
const PHOTO_PNG: &str = "iVBORw0KGgoAAAANSUhEUgAAAAgAAAAICAIAAABLbSncAAAAEUlEQVR4nGM4UaGBFTEMLQkAUtVaAV8W4QQAAAAASUVORK5CYII=";

fn screenshot_dir() -> PathBuf {
    let dir = match std::env::var_os("DOCKLINE_TEST_SCREENSHOT_DIR") {
        Some(d) => PathBuf::from(d).join("app"),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/app-screenshots"),
    };
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    dir
}

// ----------------------------------------------------------------- the test

/// The screen the app shows.
async fn wait_screen(b: &Browser, name: &str) {
    b.wait_js(
        "return document.body.dataset.screen === arguments[0];",
        json!([name]),
        &format!("screen {name}"),
    )
    .await;
}

/// The app's receipts (`dockline.sent`) and queue from its localStorage.
async fn app_store(b: &Browser, key: &str) -> Value {
    let text = b
        .js("return localStorage.getItem(arguments[0]);", json!([key]))
        .await;
    text.as_str()
        .and_then(|t| serde_json::from_str(t).ok())
        .unwrap_or(json!([]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn picker_and_driver_use_the_app_and_every_event_is_booked_once() -> Result<()> {
    if !(on_path("chromium") && on_path("chromedriver")) {
        println!(
            "SKIP picker_and_driver_use_the_app_and_every_event_is_booked_once: install Debian's chromium and chromium-driver (chromium and chromedriver on PATH) to run"
        );
        return Ok(());
    }
    let c = Cluster::start(external_mqtt("handheld_app")?, SITE, &[DEVICE], "app").await?;
    let result = journey(&c).await;
    c.judge(result)
}

async fn journey(c: &Cluster) -> Result<()> {
    let shots = screenshot_dir();
    // The agent with the default (token-protected) API on a fixed port, so
    // the page's origin stays the same across the restart.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut config = c.agent_config(DEVICE)?;
    config.api.listen = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    config.api.require_token = true;
    let adir = config.data_dir.clone();
    let mut agent = c.start_agent(config).await?;
    let addr = agent.api();
    let token = std::fs::read_to_string(adir.join("api.token"))?
        .trim()
        .to_string();
    let api = reqwest::Client::new();
    // The office posts a pick list (a local client: with the token).
    let res = api
        .post(format!("http://{addr}/v1/tasks"))
        .bearer_auth(&token)
        .json(&json!({"order": "SO-APP-1", "lines": [
            {"item": ITEM_A, "quantity": 2},
            {"item": ITEM_B, "quantity": 1}
        ]}))
        .send()
        .await?;
    anyhow::ensure!(res.status() == 201, "pick list: {}", res.status());

    let b = Browser::start(360, 640).await;
    let app = format!("http://{addr}/app/");
    b.goto(&app).await;
    wait_screen(&b, "signin").await;
    let size = b
        .js("return [window.innerWidth, window.innerHeight];", json!([]))
        .await;
    anyhow::ensure!(size == json!([360, 640]), "viewport {size}");
    b.screenshot(&shots, "01-signin").await;
    b.type_into("#signin-id", "BADGE-0042\u{E007}").await;
    wait_screen(&b, "home").await;
    b.screenshot(&shots, "02-home").await;
    // Every screen has its screenshot: pack, load, depart and arrive are
    // opened from home and left with the back button.
    for screen in ["pack", "load", "depart", "arrive"] {
        b.click(&format!("[data-go={screen}]")).await;
        wait_screen(&b, screen).await;
        b.screenshot(&shots, &format!("02-{screen}")).await;
        b.click("#back").await;
        wait_screen(&b, "home").await;
    }

    // Picker: the list, two scans of A, a wrong scan, then B.
    b.click("[data-go=tasks]").await;
    b.element("li[data-order='SO-APP-1']").await;
    b.screenshot(&shots, "03-pick-lists").await;
    b.click("li[data-order='SO-APP-1']").await;
    wait_screen(&b, "pick").await;
    for _ in 0..2 {
        b.type_into("#pick-scan", &format!("{ITEM_A}\u{E007}"))
            .await;
    }
    b.wait_value("pick-qty", "2", "two scans counted").await;
    b.screenshot(&shots, "04-pick-scanned").await;
    b.click("#pick-ok").await;
    b.wait_js(
        "return document.getElementById('pick-item').textContent === arguments[0];",
        json!([ITEM_B]),
        "second line",
    )
    .await;
    b.type_into("#pick-scan", &format!("{ITEM_A}\u{E007}"))
        .await;
    b.wait_js(
        "return !document.getElementById('pick-wrong').hidden;",
        json!([]),
        "wrong item offered",
    )
    .await;
    b.screenshot(&shots, "05-pick-wrong-item").await;
    b.click("#pick-wrong").await;
    b.type_into("#pick-scan", &format!("(01){ITEM_B}\u{E007}"))
        .await;
    b.wait_value("pick-qty", "1", "scan of B counted (GS1 element string)")
        .await;
    b.click("#pick-ok").await;
    wait_screen(&b, "tasks").await;

    // Driver: a delivery with a drawn signature and a photo.
    b.click("#back").await;
    b.click("#back").await;
    wait_screen(&b, "home").await;
    b.click("[data-go=deliver]").await;
    wait_screen(&b, "deliver").await;
    b.type_into("#pod-order", "SO-APP-1").await;
    b.type_into("#pod-stop", "STOP-9").await;
    b.type_into("#pod-name", "Hedwig Ostermann").await;
    let pieces = b.element("#pod-pieces").await;
    b.post(&format!("/element/{pieces}/clear"), json!({})).await;
    b.type_into("#pod-pieces", "3").await;
    // A signature stroke through the canvas's own pointer handlers.
    b.js(
        "const c = document.getElementById('pod-sig'); const r = c.getBoundingClientRect();
         const ev = (t, x, y) => c.dispatchEvent(new PointerEvent(t, {pointerId: 1, bubbles: true,
           clientX: r.left + x, clientY: r.top + y, isPrimary: true}));
         ev('pointerdown', 20, 100);
         for (let i = 0; i <= 40; i++) ev('pointermove', 20 + i * 6, 100 - 50 * Math.sin(i / 4));
         ev('pointerup', 260, 80); return true;",
        json!([]),
    )
    .await;
    let photo = c.dir().join("doorstep.png");
    std::fs::write(
        &photo,
        base64::engine::general_purpose::STANDARD.decode(PHOTO_PNG)?,
    )?;
    b.type_into("#pod-photo", &photo.display().to_string())
        .await;
    b.wait_js(
        "return !document.getElementById('pod-photo-preview').hidden;",
        json!([]),
        "photo preview",
    )
    .await;
    b.screenshot(&shots, "06-deliver").await;

    // The agent dies; the driver taps Delivered; the app keeps retrying.
    agent.kill();
    b.click("#pod-ok").await;
    wait_screen(&b, "receipts").await;
    b.wait_js(
        "return (JSON.parse(localStorage.getItem('dockline.queue') || '[]')).some(q => q.label.startsWith('Delivered'));",
        json!([]),
        "the delivery waiting in the app",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(4500)).await;
    b.screenshot(&shots, "07-receipts-agent-down").await;
    let queue = app_store(&b, "dockline.queue").await;
    let pod = queue
        .as_array()
        .and_then(|q| {
            q.iter().find(|i| {
                i["label"]
                    .as_str()
                    .is_some_and(|l| l.starts_with("Delivered"))
            })
        })
        .cloned()
        .context("the delivery is queued in the app while the agent is down")?;
    agent.restart().await?;
    // The first attempt reached the agent but its answer was lost: the
    // same key and body, sent by us; the app's retry must get that event.
    let first = api
        .post(format!("http://{addr}/v1/events"))
        .bearer_auth(&token)
        .header("idempotency-key", pod["key"].as_str().context("key")?)
        .json(&pod["body"])
        .send()
        .await?;
    anyhow::ensure!(
        first.status() == 201 || first.status() == 200,
        "replayed first attempt: {}",
        first.status()
    );
    let first: Value = first.json().await?;
    b.wait_js(
        "return (JSON.parse(localStorage.getItem('dockline.queue') || '[]')).length === 0;",
        json!([]),
        "the app's queue drained after the restart",
    )
    .await;
    let sent = app_store(&b, "dockline.sent").await;
    let pod_sent = sent
        .as_array()
        .and_then(|s| s.iter().find(|e| e["key"] == pod["key"]))
        .cloned()
        .context("delivery receipt")?;
    anyhow::ensure!(
        pod_sent["event_id"] == first["event_id"],
        "the app's retry got another event: {pod_sent} vs {first}"
    );
    // The signature and the photo went to the agent before the event, and
    // left the browser's storage.
    let media: Value = api
        .get(format!("http://{addr}/v1/media"))
        .bearer_auth(&token)
        .send()
        .await?
        .json()
        .await?;
    let held: HashSet<&str> = media["media"]
        .as_array()
        .context("media list")?
        .iter()
        .filter_map(|m| m["ref"].as_str())
        .collect();
    let refs: HashSet<&str> = pod["media"]
        .as_array()
        .context("the delivery's media")?
        .iter()
        .filter_map(Value::as_str)
        .collect();
    anyhow::ensure!(
        refs.len() == 2 && held == refs,
        "media on the agent {held:?}, the delivery's {refs:?}"
    );
    let left = b
        .js(
            "return Object.keys(localStorage).filter(k => k.startsWith('dockline.media.')).length;",
            json!([]),
        )
        .await;
    anyhow::ensure!(left == json!(0), "{left} media left in the browser");
    let delivered = &pod["body"]["detail"]["delivered"];
    anyhow::ensure!(
        refs.contains(delivered["signature_ref"].as_str().unwrap_or_default())
            && refs.contains(delivered["photo_ref"].as_str().unwrap_or_default()),
        "the event refers to its media: {delivered}"
    );

    // An exception: not home, with a note.
    b.click("#back").await;
    wait_screen(&b, "deliver").await;
    b.click("#pod-exception").await;
    wait_screen(&b, "exception").await;
    b.click("[data-kind=not_home]").await;
    b.type_into("#exc-note", "Left a card").await;
    b.screenshot(&shots, "08-exception").await;
    b.click("#exc-ok").await;
    wait_screen(&b, "receipts").await;

    // Every event the app made: booked once at the ERP, shown as booked.
    let expected = 5; // picked A, picked B, wrong item, delivered, not home
    b.wait_js(
        "const s = JSON.parse(localStorage.getItem('dockline.sent') || '[]');
         return s.length === arguments[0] && s.every(e => e.state === 'booked');",
        json!([expected]),
        "every receipt booked",
    )
    .await;
    b.screenshot(&shots, "09-receipts-booked").await;
    let sent = app_store(&b, "dockline.sent").await;
    let ids: HashSet<String> = sent
        .as_array()
        .context("sent")?
        .iter()
        .filter_map(|e| e["event_id"].as_str().map(str::to_owned))
        .collect();
    anyhow::ensure!(ids.len() == expected, "distinct events in the app: {ids:?}");
    let effects = eventually("ERP bookings", Duration::from_secs(60), || async {
        let mut counts: HashMap<String, usize> = HashMap::new();
        for k in c.erp_effects().iter().map(effect_key) {
            if ids.contains(&k) {
                *counts.entry(k).or_default() += 1;
            }
        }
        (counts.len() == ids.len()).then_some(counts)
    })
    .await?;
    for (id, n) in &effects {
        anyhow::ensure!(*n == 1, "event {id} booked {n} times at the ERP");
    }
    // The operator signed in travels in every event to the ERP.
    for e in c.erp_effects() {
        if ids.contains(&effect_key(&e)) {
            anyhow::ensure!(
                e.data["refs"]["operator"] == "BADGE-0042",
                "the operator in the ERP's event: {}",
                e.data
            );
        }
    }
    let status: Value = api
        .get(format!("http://{addr}/v1/status"))
        .bearer_auth(&token)
        .send()
        .await?
        .json()
        .await?;
    anyhow::ensure!(
        status["next_seq"].as_u64() == Some(expected as u64 + 1),
        "the agent assigned {} sequences for {expected} events",
        status["next_seq"]
    );
    drop(b);
    agent.kill();
    Ok(())
}
