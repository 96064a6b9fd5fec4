//! End to end on a real Mosquitto (`DOCKLINE_TEST_MQTT_URL`): the real
//! agent binary and the real collector binary, a webhook mock ERP. A
//! 600 KB photo POSTed to the agent's `/v1/media` and a `delivered` event
//! naming it: the collector is killed with SIGKILL mid-upload (the agent
//! paces media at 128 KB/s) and restarted; the upload resumes from the
//! stored prefix, the photo is stored once, byte-identical, the ERP books
//! the event once, and the agent's receipt says the photo is attached.
//! The collector signs its acks (`[commands] signing_key_file`) and the
//! agent holds the verify key: it acts only on signed batch and media acks.
//!
//! Needs the agent binary: `cargo build --bins -p dockline-agent` first.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use dockline_protocol::MediaHash;
use serde_json::{Value, json};
use support::{Recorder, Running, serve, wait_api_addr};

fn broker(test: &str) -> Option<(String, u16)> {
    let Ok(url) = std::env::var("DOCKLINE_TEST_MQTT_URL") else {
        eprintln!(
            "SKIP {test}: set DOCKLINE_TEST_MQTT_URL=mqtt://127.0.0.1:1883 to run against a real Mosquitto"
        );
        return None;
    };
    let rest = url.strip_prefix("mqtt://").unwrap_or(&url);
    let (host, port) = rest.trim_end_matches('/').rsplit_once(':')?;
    Some((host.to_string(), port.parse().ok()?))
}

fn agent_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("own path");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps")
        .join("dockline-agent");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build --bins -p dockline-agent` before this test",
        bin.display()
    );
    bin
}

fn photo(len: usize, seed: u64) -> Vec<u8> {
    let mut b = vec![0xff, 0xd8, 0xff, 0xe0];
    let mut x = seed | 1;
    while b.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        b.extend_from_slice(&x.to_le_bytes());
    }
    b.truncate(len);
    b
}

fn spawn(bin: &Path, config: &Path, log: &Path) -> Running {
    let out = std::fs::File::create(log).expect("log file");
    Running(
        Command::new(bin)
            .arg("-c")
            .arg(config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()
            .expect("spawn"),
    )
}

async fn wait_for(what: &str, secs: u64, logs: &[&Path], mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !check().await {
        if Instant::now() > deadline {
            for l in logs {
                let text = std::fs::read_to_string(l).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(30).collect();
                eprintln!("----- {} -----", l.display());
                for line in tail.into_iter().rev() {
                    eprintln!("{line}");
                }
            }
            panic!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn agent_api(dir: &Path) -> (String, reqwest::Client) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(a) = std::fs::read_to_string(dir.join("api.addr"))
            && !a.is_empty()
            && let Ok(token) = std::fs::read_to_string(dir.join("api.token"))
        {
            let mut headers = reqwest::header::HeaderMap::new();
            headers.insert(
                reqwest::header::AUTHORIZATION,
                format!("Bearer {}", token.trim()).parse().expect("header"),
            );
            let http = reqwest::Client::builder()
                .default_headers(headers)
                .timeout(Duration::from_secs(5))
                .build()
                .expect("client");
            return (format!("http://{a}"), http);
        }
        assert!(Instant::now() < deadline, "agent api.addr not written");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_photo_crosses_a_collector_kill_once_and_byte_identical() {
    let test = "a_photo_crosses_a_collector_kill_once_and_byte_identical";
    let Some((host, port)) = broker(test) else {
        return;
    };
    let agent_bin = agent_bin();
    let tag = format!("{:08x}", rand::random::<u32>());
    let (site, device) = (format!("mde2e-{tag}"), format!("hh-{tag}"));
    let root = tempfile::tempdir().expect("dir");

    // The mock ERP: books every event, records every request.
    let erp = Recorder::default();
    let rec = erp.clone();
    let app = Router::new().route(
        "/events",
        post(move |headers: HeaderMap, body: Bytes| {
            let rec = rec.clone();
            async move {
                rec.record(&headers, &body);
                let n = rec.seen().len();
                (StatusCode::CREATED, format!(r#"{{"document":"SHP-{n}"}}"#))
            }
        }),
    );
    let erp_addr = serve(app).await;

    // The command key signs acks; the agent gets its public half.
    let key = ed25519_dalek::SigningKey::from_bytes(&[0x5a; 32]);
    let b64 = |b: &[u8]| base64::Engine::encode(&base64::engine::general_purpose::STANDARD, b);
    let key_file = root.path().join("command-signing.key");
    std::fs::write(&key_file, b64(key.as_bytes())).expect("key file");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    }
    let verify_key = b64(key.verifying_key().as_bytes());
    let cdata = root.path().join("collector");
    let ctoml = root.path().join("collector.toml");
    std::fs::write(
        &ctoml,
        format!(
            "data_dir = {:?}\n[api]\nlisten = \"127.0.0.1:0\"\n[mqtt]\nhost = {host:?}\nport = {port}\nclient_id = \"dockline-collector-{tag}\"\n\
             [[devices]]\nid = {device:?}\nsite = {site:?}\n\
             [erp]\nurl = \"http://{erp_addr}/events\"\nsecret = \"whsec_ZG9ja2xpbmUtbWVkaWEtZTJlLXNlY3JldC0zMmJ5dGVz\"\nretry_min_ms = 50\nretry_max_ms = 500\nlane_park_max_ms = 100\n\
             [media]\nwait_ms = 600000\n[commands]\nsigning_key_file = {:?}\n",
            cdata.display().to_string(),
            key_file.display().to_string()
        ),
    )
    .expect("collector config");
    let clog = root.path().join("collector.log");
    let clog2 = root.path().join("collector-2.log");
    let alog = root.path().join("agent.log");
    let mut collector = spawn(Path::new(support::BIN), &ctoml, &clog);
    wait_api_addr(&cdata);

    let adata = root.path().join("agent");
    std::fs::create_dir_all(&adata).expect("agent dir");
    let atoml = root.path().join("agent.toml");
    std::fs::write(
        &atoml,
        format!(
            "site = {site:?}\ndevice = {device:?}\ndata_dir = {:?}\n[api]\nlisten = \"127.0.0.1:0\"\n[mqtt]\nhost = {host:?}\nport = {port}\n\
             [commands]\nverify_key = {verify_key:?}\n\
             [uplink]\nack_timeout_ms = 2000\nreconnect_min_ms = 50\nreconnect_max_ms = 1000\nheartbeat_secs = 2\nmedia_chunk_bytes = 16384\nmedia_bytes_per_sec = 131072\n",
            adata.display().to_string()
        ),
    )
    .expect("agent config");
    let _agent = spawn(&agent_bin, &atoml, &alog);
    let (base, http) = agent_api(&adata).await;

    let img = photo(600_000, 23);
    let hash = MediaHash::of(&img);
    let r = http
        .post(format!("{base}/v1/media"))
        .header("content-type", "image/jpeg")
        .header("idempotency-key", "photo-e2e")
        .body(img.clone())
        .send()
        .await
        .expect("post media");
    assert_eq!(r.status(), 201);
    let r = http
        .post(format!("{base}/v1/events"))
        .json(
            &json!({"detail": {"delivered": {"received_by": "H. Ostermann", "pieces": 2,
            "photo_ref": format!("sha256:{hash}")}}, "refs": {"order": format!("SO-{tag}")}}),
        )
        .send()
        .await
        .expect("post event");
    assert_eq!(r.status(), 201);
    let event_id = r.json::<Value>().await.expect("json")["event_id"]
        .as_str()
        .expect("event id")
        .to_string();

    // Kill the collector once a third of the photo is stored.
    let partial = cdata.join("media").join("partial").join(hash.to_string());
    wait_for(
        "a third of the photo at the collector",
        30,
        &[&clog, &alog],
        async || std::fs::metadata(&partial).is_ok_and(|m| m.len() >= 200_000),
    )
    .await;
    collector.0.kill().expect("kill -9");
    collector.0.wait().expect("reap");
    let at_kill = std::fs::metadata(&partial).map(|m| m.len()).unwrap_or(0);
    assert!(
        at_kill < img.len() as u64,
        "killed mid-upload ({at_kill} bytes)"
    );
    assert!(
        erp.seen().is_empty(),
        "the event waited for its photo: {} ERP requests",
        erp.seen().len()
    );
    std::fs::remove_file(cdata.join("api.addr")).expect("rm api.addr");
    let _collector = spawn(Path::new(support::BIN), &ctoml, &clog2);
    let api = wait_api_addr(&cdata);

    wait_for(
        "the photo attached (agent receipt)",
        60,
        &[&clog, &clog2, &alog],
        async || {
            let Ok(r) = http.get(format!("{base}/v1/media")).send().await else {
                return false;
            };
            let list: Value = r.json().await.unwrap_or_default();
            list["media"][0]["state"] == "attached"
        },
    )
    .await;

    // Once at the ERP, with the event; once in the store, byte-identical.
    // The webhook sends the medium as its own CloudEvent (inline here: this
    // collector has no link key) before the event's.
    let seen = erp.seen();
    let is_medium = |body: &[u8]| {
        serde_json::from_slice::<Value>(body).is_ok_and(|v| v["type"] == "io.dockline.media")
    };
    let bookings: Vec<_> = seen
        .iter()
        .filter(|r| String::from_utf8_lossy(&r.body).contains(&event_id) && !is_medium(&r.body))
        .collect();
    assert_eq!(bookings.len(), 1, "the event booked once");
    let media: Vec<Value> = seen
        .iter()
        .filter(|r| is_medium(&r.body))
        .filter_map(|r| serde_json::from_slice(&r.body).ok())
        .collect();
    assert_eq!(media.len(), 1, "the photo sent to the ERP once: {media:?}");
    let inline = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD
            .decode(media[0]["data_base64"].as_str().expect("inline photo"))
            .expect("base64")
    };
    assert!(inline == img[..], "the ERP got the photo byte-identical");
    let client = reqwest::Client::new();
    let got = client
        .get(format!("http://{api}/v1/media/{hash}"))
        .send()
        .await
        .expect("get medium");
    assert_eq!(got.status(), 200);
    assert_eq!(
        &got.bytes().await.expect("bytes")[..],
        &img[..],
        "byte-identical"
    );
    let stats: Value = client
        .get(format!("http://{api}/v1/media-stats"))
        .send()
        .await
        .expect("stats")
        .json()
        .await
        .expect("json");
    assert_eq!(stats["count"], 1, "{stats}");
    assert_eq!(stats["bytes"], 600_000, "{stats}");
    assert_eq!(stats["partial"], 0, "{stats}");
    // The handheld's heartbeat (every 2 s here) carries its media line:
    // the collector shows the photo as attached on the device.
    let mut line = Value::Null;
    for _ in 0..100 {
        let stats: Value = client
            .get(format!("http://{api}/v1/media-stats"))
            .send()
            .await
            .expect("stats")
            .json()
            .await
            .expect("json");
        line = stats["devices"][0].clone();
        if line["attached"] == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(line["held"], 1, "the device's media line: {line}");
    assert_eq!(line["queued"], 0, "{line}");
    assert_eq!(line["attached"], 1, "{line}");
    eprintln!(
        "media e2e: 600000-byte photo, collector killed at {at_kill} stored bytes; stored once, booked once, lost 0, duplicated 0"
    );
}
