//! A hole filled through the collector's resend request.
//!
//! The collector is killed and comes back under a new MQTT client id, the
//! way a broker restart without persistence loses its session: the batch the
//! agent published meanwhile is queued for a session nobody will resume, so
//! it never arrives. Later events are stored behind the hole. The agent's own
//! ack timeout is two minutes, so only the collector's gap audit (1 s here)
//! can fill the hole: it asks on the device's cmd topic, the agent sends the
//! range again, and the ERP books every event once, in the device's order
//! within each order, the collector's business lane (nothing is posted past
//! the hole meanwhile). The request is signed by the
//! collector's key and verified by the agent, as in production.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Context, Result};
use dockline_tests::{Cluster, Proc, bin, effect_key, eventually, external_mqtt, read_addr};
use serde_json::Value;

async fn get(http: &reqwest::Client, url: String) -> Option<Value> {
    http.get(url).send().await.ok()?.json().await.ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hole_is_filled_through_the_resend_request_in_order() -> Result<()> {
    let pid = std::process::id();
    let site = "gaps";
    let device = format!("hh-gap-{pid}");
    let mut c = Cluster::start(
        external_mqtt("gaps")?,
        site,
        &[&device],
        &format!("gaps-{pid}"),
    )?;
    // The agent, with an ack timeout far beyond the test's budget, and a
    // backlog window wide enough that it keeps publishing past the lost
    // batches (with a full window nothing arrives above them, the collector
    // sees no hole, and only the agent's ack timeout can help).
    let adir = c.dir.path().join(&device);
    std::fs::create_dir_all(&adir)?;
    let cfg = adir.join("agent.toml");
    std::fs::write(
        &cfg,
        format!(
            "site = \"{site}\"\ndevice = \"{device}\"\ndata_dir = {:?}\n[api]\nlisten = \"127.0.0.1:0\"\nrequire_token = false\n[mqtt]\nhost = {:?}\nport = {}\nkeep_alive_secs = 30\n[uplink]\nbatch_max_events = 4\nmax_inflight_batches = 16\nack_timeout_ms = 120000\nreconnect_min_ms = 50\nreconnect_max_ms = 1000\nheartbeat_secs = 2\n[commands]\nverify_key = \"{}\"\n",
            adir.display().to_string(),
            c.mqtt.0,
            c.mqtt.1,
            c.verify_key
        ),
    )?;
    let agent = Proc::start(
        &device,
        &bin("dockline-agent")?,
        &["--config", &cfg.display().to_string()],
        &[],
        c.dir.path(),
    )?;
    let result = async {
        let addr = read_addr(&adir.join("api.addr"))?;
        let http = c.http.clone();
        let status = || get(&http, format!("http://{addr}/v1/status"));
        let mut ids = Vec::new();
        for i in 0..5 {
            ids.push(c.post_event(&addr, i).await?);
        }
        eventually(
            "first events acknowledged",
            Duration::from_secs(30),
            || async {
                let s = status().await?;
                (s["queued"] == 0).then_some(())
            },
        )
        .await?;

        // The collector goes away; what the agent publishes now is lost.
        c.collector.kill9();
        for i in 5..10 {
            ids.push(c.post_event(&addr, i).await?);
        }
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let ccfg = c.dir.path().join("collector.toml");
        let text = std::fs::read_to_string(&ccfg)?;
        let text = text.replace(
            &format!("client_id = \"dockline-collector-gaps-{pid}\""),
            &format!("client_id = \"dockline-collector-gaps-{pid}-new\""),
        ) + "[gaps]\nresend_after_ms = 1000\n";
        std::fs::write(&ccfg, text)?;
        let api_file = c.dir.path().join("collector").join("api.addr");
        std::fs::remove_file(&api_file)?;
        c.collector.restart()?;
        c.collector_url = format!("http://{}", read_addr(&api_file)?);

        // Later events arrive and are stored behind the hole.
        for i in 10..15 {
            ids.push(c.post_event(&addr, i).await?);
        }
        let stats_url = format!("{}/v1/stats", c.collector_url);
        let hole = eventually(
            "the hole shows in the stats",
            Duration::from_secs(20),
            || async {
                let s = get(&http, stats_url.clone()).await?;
                let d = s["devices"]
                    .as_array()?
                    .iter()
                    .find(|d| d["device"] == device.as_str())?
                    .clone();
                (!d["holes"].as_array()?.is_empty()).then_some(d)
            },
        )
        .await;
        // A proof of delivery whose order has no `arrived` waits up to the
        // collector's lane_park_max_ms (10 s) for it.
        let effects = eventually("every event booked", Duration::from_secs(45), || async {
            let effects = c.erp_effects().await.ok()?;
            let keys: Vec<String> = effects.iter().filter_map(effect_key).collect();
            ids.iter().all(|id| keys.contains(id)).then_some(keys)
        })
        .await?;
        let stats = get(&http, stats_url.clone()).await.context("stats")?;
        let end = status().await.context("agent status")?;
        println!(
            "gaps: hole seen {hole:?}; resend_requests {}, holes_lost {}, agent ack timeouts {}",
            stats["resend_requests"], stats["holes_lost"], end["ack_timeouts"]
        );
        let hole = hole?;
        assert_eq!(hole["complete_up_to"], 5, "{hole}");
        assert!(
            stats["resend_requests"].as_u64().unwrap_or(0) >= 1,
            "{stats}"
        );
        assert_eq!(stats["holes_lost"], 0, "{stats}");
        assert_eq!(
            end["ack_timeouts"], 0,
            "the hole must be filled by the resend request, not the agent's ack timeout"
        );
        // The request was signed by the collector and checked by the agent.
        assert!(
            end["commands"]["accepted"].as_u64().unwrap_or(0) >= 1,
            "{end}"
        );
        assert_eq!(end["commands"]["refused"], 0, "{end}");
        // Once each, and within each order (the collector's business lane)
        // in the device's order; different orders may interleave.
        let mut count: HashMap<&String, usize> = HashMap::new();
        for k in &effects {
            *count.entry(k).or_default() += 1;
        }
        assert!(count.values().all(|n| *n == 1), "booked twice: {count:?}");
        let booked: Vec<usize> = effects
            .iter()
            .filter_map(|k| ids.iter().position(|id| id == k))
            .collect();
        for order in 0..ids.len().div_ceil(3) {
            let in_lane: Vec<usize> = booked.iter().copied().filter(|i| i / 3 == order).collect();
            let expected: Vec<usize> = (order * 3..(order * 3 + 3).min(ids.len())).collect();
            assert_eq!(in_lane, expected, "ERP order within SO-{}", 1000 + order);
        }
        Ok::<_, anyhow::Error>(())
    }
    .await;
    if result.is_err() {
        c.dump_logs();
    }
    drop(agent);
    result
}
