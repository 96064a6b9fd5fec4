//! Issue 14's "done when": a photo taken on the handheld (the agent's
//! `POST /v1/media`, then a `delivered` event naming it) ends up on the
//! Tryton shipment once, byte-identical, through an agent kill, a cut link
//! and a collector kill, all landing while the photo is on its way.
//!
//! The stack is the real one: `dockline-agent` → chaos proxy → broker →
//! `dockline-collector` (SQLite inbox and media store) → a real trytond 8.2
//! (+ trytond-stock, SQLite; `collector/tests/support/tryton_server.rs`).
//! The agent's media go at 40 kB/s in 16 KiB chunks, so the 400 kB photo
//! takes about ten seconds and every fault hits it mid-upload. What is
//! checked is read back from Tryton itself: exactly one attachment
//! `photo-<hex>.jpg` on the shipment whose stored bytes hash to the photo's
//! SHA-256, the shipment `done`, entered once; and the agent's receipt of
//! the photo says `attached`.
//!
//! Runs with `DOCKLINE_TEST_TRYTON=1` (and `DOCKLINE_TEST_TRYTON_VENV`, as
//! `.ci/run` sets them); prints a SKIP line otherwise.

#[path = "../../collector/tests/support/tryton_server.rs"]
mod tryton_server;

use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use dockline_collector::erp::ErpConfig as CollectorErp;
use dockline_collector::erp::tryton::TrytonConfig;
use dockline_protocol::MediaHash;
use dockline_tests::{ChaosProxy, Cluster, ClusterSpec, eventually};
use serde_json::{Value, json};
use tryton_server::{ADMIN_PASSWORD, DATABASE, TrytonServer};

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

/// The shipment's attachments: (name, stored bytes).
async fn attachments(server: &TrytonServer, reference: &str) -> Result<Vec<(String, Vec<u8>)>> {
    let id = server.shipments[reference];
    let rows = server
        .call(
            "model.ir.attachment.search_read",
            json!([
                [["resource", "=", format!("stock.shipment.out,{id}")]],
                0,
                100,
                [["id", "ASC"]],
                ["name", "data"],
                {}
            ]),
        )
        .await?;
    rows.as_array()
        .ok_or_else(|| anyhow!("not a list: {rows}"))?
        .iter()
        .map(|r| {
            // Tryton's encoder breaks base64 into lines.
            let text: String = r["data"]["base64"]
                .as_str()
                .unwrap_or_default()
                .chars()
                .filter(|c| !c.is_whitespace())
                .collect();
            Ok((
                r["name"].as_str().unwrap_or_default().to_owned(),
                BASE64.decode(text)?,
            ))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handheld_photo_lands_once_on_the_tryton_shipment_through_kills_and_a_cut_link()
-> Result<()> {
    let test = "a_handheld_photo_lands_once_on_the_tryton_shipment_through_kills_and_a_cut_link";
    let Some(venv) = tryton_server::venv_or_skip(test) else {
        return Ok(());
    };
    let order = format!("SO-PHOTO-{}", std::process::id());
    let refs = [order.clone()];
    let server = tokio::task::spawn_blocking(move || {
        let refs: Vec<&str> = refs.iter().map(String::as_str).collect();
        TrytonServer::start(&venv, &refs)
    })
    .await??;
    let result = scenario(&server, &order).await;
    if result.is_err() {
        eprintln!("----- trytond log -----\n{}", server.log_text());
    }
    result
}

async fn scenario(server: &TrytonServer, order: &str) -> Result<()> {
    let site = "media-tryton";
    let device = format!("hh-photo-{}", std::process::id());
    let tryton_url = format!("http://{}/", server.addr);
    let mut c = Cluster::start_with(
        ClusterSpec::new(None, "media-tryton"),
        site,
        &[&device],
        |config| {
            let retry = (config.erp.retry_min_ms, config.erp.retry_max_ms);
            config.erp = CollectorErp {
                timeout_ms: 20_000,
                retry_min_ms: retry.0,
                retry_max_ms: retry.1,
                ..CollectorErp::tryton(
                    tryton_url,
                    TrytonConfig {
                        database: DATABASE.into(),
                        user: "admin".into(),
                        password: ADMIN_PASSWORD.into(),
                        assign_force: false,
                        language: "en".into(),
                    },
                )
            };
            // The event waits for its photo as long as the test may take.
            config.media.wait_ms = 600_000;
        },
    )
    .await?;
    let broker = c.mqtt().socket_addr().context("the broker's address")?;
    let proxy = ChaosProxy::start(broker).await?;
    let mut config = c.agent_config(&device)?;
    config.mqtt.port = proxy.addr().port();
    config.uplink.media_chunk_bytes = 16_384;
    config.uplink.media_bytes_per_sec = 40_000;
    let mut agent = c.start_agent(config).await?;

    let result = async {
        let http = c.http.clone();
        let post = |api: std::net::SocketAddr, body: Value| {
            let http = http.clone();
            async move {
                let r = http
                    .post(format!("http://{api}/v1/events"))
                    .json(&body)
                    .send()
                    .await?;
                anyhow::ensure!(r.status() == 201, "agent answered {}", r.status());
                Ok::<(), anyhow::Error>(())
            }
        };
        // Pick and pack: the shipment is packed before the photo is taken.
        post(
            agent.api(),
            json!({"detail": {"picked": {"item": "09506000134352", "quantity": 1}}, "refs": {"order": order}}),
        )
        .await?;
        post(
            agent.api(),
            json!({"detail": {"packed": {"quantity": 1}}, "refs": {"order": order}}),
        )
        .await?;
        eventually("the shipment packed in Tryton", Duration::from_secs(60), || async {
            (server.state(order).await.ok()? == "packed").then_some(())
        })
        .await?;

        // The photo, then the proof of delivery naming it.
        let img = photo(400_000, 14);
        let posted = std::time::Instant::now();
        let hash = MediaHash::of(&img);
        let r = http
            .post(format!("http://{}/v1/media", agent.api()))
            .header("content-type", "image/jpeg")
            .header("idempotency-key", "pod-photo-1")
            .body(img.clone())
            .send()
            .await?;
        anyhow::ensure!(r.status() == 201, "POST /v1/media answered {}", r.status());
        post(
            agent.api(),
            json!({"detail": {"delivered": {"received_by": "H. Ostermann", "pieces": 1,
                "photo_ref": format!("sha256:{hash}")}}, "refs": {"order": order}}),
        )
        .await?;

        // Faults while the photo is on its way (about 10 s at 40 kB/s).
        let state = |api: std::net::SocketAddr| {
            let c = &c;
            async move {
                c.get(&format!("http://{api}/v1/media"))
                    .await
                    .map(|l| {
                        let m = &l["media"][0];
                        format!("{} have={}", m["state"], m["have"])
                    })
                    .unwrap_or_default()
            }
        };
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let before_kill = state(agent.api()).await;
        anyhow::ensure!(
            !before_kill.contains("stored") && !before_kill.contains("attached"),
            "the agent kill must land mid-upload; the photo is {before_kill} already"
        );
        agent.kill();
        eprintln!("agent killed mid-upload (photo {before_kill})");
        tokio::time::sleep(Duration::from_millis(300)).await;
        agent.restart().await?;
        tokio::time::sleep(Duration::from_millis(2000)).await;
        let before_cut = state(agent.api()).await;
        proxy.black_hole();
        eprintln!("link cut (photo {before_cut})");
        tokio::time::sleep(Duration::from_secs(3)).await;
        proxy.heal();
        eprintln!("link back");
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let before_collector_kill = state(agent.api()).await;
        c.stack.collector.kill();
        eprintln!("collector killed (photo {before_collector_kill})");
        tokio::time::sleep(Duration::from_millis(300)).await;
        c.stack.collector.restart().await?;
        eprintln!("collector back");

        // At least one fault hit the photo part-way: the collector had some
        // of its bytes, not all.
        let have = |seen: &str| -> u64 {
            seen.rsplit("have=")
                .next()
                .and_then(|h| h.parse().ok())
                .unwrap_or(0)
        };
        let part_way = [&before_kill, &before_cut, &before_collector_kill]
            .iter()
            .filter(|s| s.contains("queued") && (1..img.len() as u64).contains(&have(s)))
            .count();
        anyhow::ensure!(
            part_way >= 1,
            "no fault landed mid-upload: {before_kill}; {before_cut}; {before_collector_kill}"
        );
        let name = format!("photo-{hash}.jpg");
        eventually("the photo attached and the shipment done in Tryton", Duration::from_secs(180), || async {
            let done = server.state(order).await.ok()? == "done";
            let found = attachments(server, order).await.ok()?;
            (done && found.iter().any(|(n, _)| *n == name)).then_some(())
        })
        .await?;
        let landed = posted.elapsed();
        let found = attachments(server, order).await?;
        let photos: Vec<&(String, Vec<u8>)> = found.iter().filter(|(n, _)| *n == name).collect();
        anyhow::ensure!(photos.len() == 1, "one {name}, found {:?}", found.iter().map(|f| &f.0).collect::<Vec<_>>());
        anyhow::ensure!(
            MediaHash::of(&photos[0].1) == hash && photos[0].1 == img,
            "the stored photo is byte-identical ({} bytes stored)",
            photos[0].1.len()
        );
        let done = server
            .transitions(order)
            .await?
            .iter()
            .filter(|t| *t == "state:done")
            .count();
        anyhow::ensure!(done == 1, "done entered {done} times");
        // The handheld hears that the ERP holds it.
        eventually("the agent's receipt says attached", Duration::from_secs(60), || async {
            let list = c
                .get(&format!("http://{}/v1/media", agent.api()))
                .await?;
            (list["media"][0]["state"] == "attached").then_some(())
        })
        .await?;
        eprintln!(
            "media_tryton: {} kB photo attached once, byte-identical, through an agent kill, a cut link and a collector kill; on the shipment {:.1} s after it was posted (unfaulted upload at 40 kB/s: {:.1} s)",
            img.len() / 1000,
            landed.as_secs_f64(),
            img.len() as f64 / 40_000.0
        );
        Ok(())
    }
    .await;
    c.judge(result)
}
