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
use dockline_tests::{Cluster, effect_key, eventually, external_mqtt};

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
    )
    .await?;
    // The agent, with an ack timeout far beyond the test's budget, and a
    // backlog window wide enough that it keeps publishing past the lost
    // batches (with a full window nothing arrives above them, the collector
    // sees no hole, and only the agent's ack timeout can help).
    let mut config = c.agent_config(&device)?;
    config.mqtt.keep_alive_secs = 30;
    config.uplink.batch_max_events = 4;
    config.uplink.max_inflight_batches = 16;
    config.uplink.ack_timeout_ms = 120_000;
    let agent = c.start_agent(config).await?;
    let result = async {
        let addr = agent.api();
        let status_url = format!("http://{addr}/v1/status");
        let mut ids = Vec::new();
        for i in 0..5 {
            ids.push(c.post_event(addr, i).await?);
        }
        eventually(
            "first events acknowledged",
            Duration::from_secs(30),
            || async {
                let s = c.get(&status_url).await?;
                (s["queued"] == 0).then_some(())
            },
        )
        .await?;

        // The collector goes away; what the agent publishes now is lost.
        c.stack.collector.kill();
        for i in 5..10 {
            ids.push(c.post_event(addr, i).await?);
        }
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let collector = &mut c.stack.collector.config;
        collector.mqtt.client_id = format!("dockline-collector-gaps-{pid}-new");
        collector.gaps.resend_after_ms = 1000;
        c.stack.collector.restart().await?;
        // The agent's next batches must find the collector subscribed: a
        // batch the broker gets before that is dropped (no subscriber), and
        // with no batch above the hole the collector sees none.
        eventually(
            "the restarted collector subscribed",
            Duration::from_secs(20),
            || async {
                let log = c.stack.collector.log_text();
                (log.matches("subscribed to the devices' topics").count() >= 2).then_some(())
            },
        )
        .await?;

        // Later events arrive and are stored behind the hole.
        for i in 10..15 {
            ids.push(c.post_event(addr, i).await?);
        }
        let stats_url = format!("{}/v1/stats", c.collector_url());
        let hole = eventually(
            "the hole shows in the stats",
            Duration::from_secs(20),
            || async {
                let s = c.get(&stats_url).await?;
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
            let keys: Vec<String> = c.erp_effects().iter().map(effect_key).collect();
            ids.iter().all(|id| keys.contains(id)).then_some(keys)
        })
        .await?;
        let stats = c.get(&stats_url).await.context("stats")?;
        let end = c.get(&status_url).await.context("agent status")?;
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
    c.judge(result)
}
