//! Proof-of-delivery media from the agent to a collector over a real
//! Mosquitto (`DOCKLINE_TEST_MQTT_URL`), against a scripted fake collector
//! that reassembles them with the protocol's state machine: a photo goes
//! after the event naming it is stored, in chunks, byte-identical, resumes
//! after a cut chunk and after the agent is killed mid-upload, and its
//! receipt follows the collector's acks (queued, stored, attached).

mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dockline_protocol::MediaHash;
use serde_json::{Value, json};
use support::fake_collector::{FakeCollector, broker, unique_ids};
use support::start_agent_toml;

/// A JPEG-looking image of `len` bytes that does not compress.
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

fn config(
    site: &str,
    device: &str,
    dir: &std::path::Path,
    host: &str,
    port: u16,
    uplink: &str,
) -> String {
    format!(
        "site = {site:?}\ndevice = {device:?}\ndata_dir = {:?}\n[api]\nlisten = \"127.0.0.1:0\"\n[mqtt]\nhost = {host:?}\nport = {port}\n[uplink]\n{uplink}\n",
        dir.display().to_string()
    )
}

async fn media_state(http: &reqwest::Client, url: String) -> Value {
    let list: Value = http
        .get(url)
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    list["media"][0].clone()
}

async fn wait_for(what: &str, secs: u64, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn post_photo_and_delivery(http: &reqwest::Client, base: &str, img: &[u8]) -> MediaHash {
    let res = http
        .post(format!("{base}/v1/media"))
        .header("content-type", "image/jpeg")
        .header("idempotency-key", "photo-1")
        .body(img.to_vec())
        .send()
        .await
        .expect("post media");
    assert_eq!(res.status(), 201);
    let v: Value = res.json().await.expect("json");
    assert_eq!(v["state"], "queued");
    let hash = MediaHash::of(img);
    assert_eq!(v["ref"], format!("sha256:{hash}"));
    let res = http
        .post(format!("{base}/v1/events"))
        .json(
            &json!({"detail": {"delivered": {"received_by": "H. Ostermann", "pieces": 2,
            "photo_ref": format!("sha256:{hash}")}}, "refs": {"order": "SO-14", "stop": "STOP-3"}}),
        )
        .send()
        .await
        .expect("post event");
    assert_eq!(res.status(), 201);
    hash
}

#[tokio::test]
async fn a_photo_follows_its_event_whole_once_and_resumes_after_a_cut_chunk() {
    let Some((host, port)) =
        broker("a_photo_follows_its_event_whole_once_and_resumes_after_a_cut_chunk")
    else {
        return;
    };
    let (site, device) = unique_ids("media");
    let collector = FakeCollector::start(&host, port, &site, &device).await;
    // The link cuts the 3rd chunk: the collector never sees it.
    collector.seen.lock().expect("lock").drop_chunks.insert(3);
    let root = tempfile::tempdir().expect("tempdir");
    let dir = root.path();
    // A long ack timeout: the resume must come from the collector's answer
    // to the next chunk, not from a timeout.
    let toml = config(
        &site,
        &device,
        dir,
        &host,
        port,
        "ack_timeout_ms = 30000\nmedia_chunk_bytes = 16384",
    );
    let agent = start_agent_toml(dir, &toml).await;
    let http = agent.http();
    let img = photo(300_000, 7);
    let hash = post_photo_and_delivery(&http, &agent.url(""), &img).await;
    wait_for("the photo stored at the collector", 20, async || {
        media_state(&http, agent.url("/v1/media")).await["state"] == "stored"
    })
    .await;
    {
        let seen = collector.seen.lock().expect("lock");
        assert_eq!(seen.medium(&hash), Some(&img[..]), "byte-identical");
        assert!(
            seen.stored_when_media_began[&hash] >= 1,
            "the photo went only after its event was stored"
        );
        let resent = seen.media_bytes_in[&hash] - img.len() as u64;
        eprintln!(
            "300000-byte photo in 16 KiB chunks, one chunk cut: {} chunks seen, {resent} bytes re-sent",
            seen.media_chunks_in
        );
        // At most the window behind the cut chunk is sent again.
        assert!(resent <= 4 * 16384, "{resent} bytes re-sent");
    }
    let status: Value = http
        .get(agent.url("/v1/status"))
        .send()
        .await
        .expect("status")
        .json()
        .await
        .expect("json");
    assert_eq!(status["media"]["stored"], 1, "{status}");
    assert_eq!(status["media"]["queued"], 0, "{status}");
    // The ERP attached it: the receipt says where.
    collector
        .attach(&device, hash, "stock.shipment.out,77")
        .await;
    wait_for("the photo attached", 10, async || {
        let m = media_state(&http, agent.url("/v1/media")).await;
        m["state"] == "attached" && m["document"] == "stock.shipment.out,77"
    })
    .await;
    agent.stop().await;
}

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_agent(config: &std::path::Path) -> Running {
    Running(
        Command::new(env!("CARGO_BIN_EXE_dockline-agent"))
            .arg("-c")
            .arg(config)
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn the agent"),
    )
}

async fn api_of(dir: &std::path::Path, old: Option<&str>) -> (String, reqwest::Client) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(a) = std::fs::read_to_string(dir.join("api.addr"))
            && !a.is_empty()
            && Some(a.as_str()) != old
            && let Ok(token) = std::fs::read_to_string(dir.join("api.token"))
        {
            let mut headers = reqwest::header::HeaderMap::new();
            headers.insert(
                reqwest::header::AUTHORIZATION,
                format!("Bearer {}", token.trim()).parse().expect("header"),
            );
            let http = reqwest::Client::builder()
                .default_headers(headers)
                .build()
                .expect("client");
            return (format!("http://{a}"), http);
        }
        assert!(Instant::now() < deadline, "api.addr not written");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn an_upload_resumes_where_the_collector_is_after_the_agent_is_killed() {
    let Some((host, port)) =
        broker("an_upload_resumes_where_the_collector_is_after_the_agent_is_killed")
    else {
        return;
    };
    let (site, device) = unique_ids("mkill");
    let collector = FakeCollector::start(&host, port, &site, &device).await;
    let root = tempfile::tempdir().expect("tempdir");
    let dir = root.path().join("data");
    std::fs::create_dir_all(&dir).expect("dir");
    // Paced at 128 KB/s, so the kill lands mid-upload.
    let path = root.path().join("agent.toml");
    std::fs::write(
        &path,
        config(
            &site,
            &device,
            &dir,
            &host,
            port,
            "media_chunk_bytes = 16384\nmedia_bytes_per_sec = 131072",
        ),
    )
    .expect("config");
    let img = photo(600_000, 11);
    let mut agent = spawn_agent(&path);
    let (base, http) = api_of(&dir, None).await;
    let hash = post_photo_and_delivery(&http, &base, &img).await;
    wait_for("a third of the photo at the collector", 20, async || {
        collector
            .seen
            .lock()
            .expect("lock")
            .media
            .get(&hash)
            .is_some_and(|(r, _)| r.have() >= 200_000)
    })
    .await;
    // SIGKILL: no goodbye, whatever was in flight is lost with it.
    agent.0.kill().expect("kill");
    agent.0.wait().expect("wait");
    let before = collector.seen.lock().expect("lock").media[&hash].0.have();
    assert!(before < img.len() as u64, "killed mid-upload");
    let addr = std::fs::read_to_string(dir.join("api.addr")).expect("addr");
    std::fs::remove_file(dir.join("api.addr")).expect("rm addr");
    let _agent = spawn_agent(&path);
    let (base, http) = api_of(&dir, Some(&addr)).await;
    wait_for("the photo stored after the restart", 30, async || {
        media_state(&http, format!("{base}/v1/media")).await["state"] == "stored"
    })
    .await;
    let seen = collector.seen.lock().expect("lock");
    assert_eq!(seen.medium(&hash), Some(&img[..]), "byte-identical");
    let resent = seen.media_bytes_in[&hash] - img.len() as u64;
    eprintln!("600000-byte photo killed at {before} bytes stored: {resent} bytes re-sent");
    // The restarted agent resumes from the last `have` it recorded: at most
    // the chunks in flight at the kill (the window) cross again.
    assert!(resent <= 4 * 16384, "{resent} bytes re-sent after the kill");
}
