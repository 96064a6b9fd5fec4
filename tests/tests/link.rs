//! Silent link death: a proxy between the agent and the broker stops
//! forwarding without closing anything (no FIN, no RST), for longer than the
//! collector's ack timeout but well inside the MQTT keep-alive. The agent must
//! notice through the missing application ack, get a fresh connection once
//! the path is back, and every event it acknowledged must be booked at the
//! ERP exactly once, long before keep-alive would have noticed anything.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use dockline_tests::{ChaosProxy, Cluster, effect_key, eventually};
use serde_json::Value;

const KEEP_ALIVE_SECS: u64 = 30;
const ACK_TIMEOUT: Duration = Duration::from_millis(2000);
const HOLE: Duration = Duration::from_secs(6);

async fn status(c: &Cluster, addr: SocketAddr) -> Option<Value> {
    c.get(&format!("http://{addr}/v1/status")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silently_dead_link_is_noticed_by_the_ack_timeout_and_recovered() -> Result<()> {
    let site = "link";
    let device = format!("hh-link-{}", std::process::id());
    let c = Cluster::start(None, site, &[&device], "link").await?;
    let broker = c
        .mqtt()
        .socket_addr()
        .context("the embedded broker's address")?;
    let proxy = ChaosProxy::start(broker).await?;
    let mut config = c.agent_config(&device)?;
    config.mqtt.port = proxy.addr().port();
    config.mqtt.keep_alive_secs = KEEP_ALIVE_SECS;
    let agent = c.start_agent(config).await?;
    let result = async {
        let addr = agent.api();
        let mut ids = Vec::new();
        let mut i = 0;

        // The path works: a first lot goes through and is acknowledged.
        for _ in 0..10 {
            ids.push(c.post_event(addr, i).await?);
            i += 1;
        }
        eventually("first events acknowledged through the proxy", Duration::from_secs(30), || async {
            let s = status(&c, addr).await?;
            (s["queued"] == 0 && s["mqtt_connected"] == true).then_some(())
        })
        .await?;
        let before = status(&c, addr).await.context("status")?;
        let timeouts_before = before["ack_timeouts"].as_u64().unwrap_or(0);
        let connects_before = before["mqtt_connects"].as_u64().unwrap_or(0);
        let log_before = agent.log_text().len();

        // The link dies silently; the handheld keeps posting.
        proxy.black_hole();
        let holed_at = Instant::now();
        let mut detected: Option<Duration> = None;
        let mut next_post = Instant::now();
        while holed_at.elapsed() < HOLE {
            if Instant::now() >= next_post {
                ids.push(c.post_event(addr, i).await?);
                i += 1;
                next_post += Duration::from_millis(300);
            }
            if detected.is_none() {
                let by_status = status(&c, addr)
                    .await
                    .is_some_and(|s| s["ack_timeouts"].as_u64().unwrap_or(0) > timeouts_before);
                let by_log = agent.log_text()[log_before..].contains("no ack from the collector in time");
                if by_status || by_log {
                    detected = Some(holed_at.elapsed());
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let during = status(&c, addr).await.context("status")?;
        let detected = detected.context("the agent never noticed the dead link while it was dead")?;
        println!(
            "link: black hole for {HOLE:?}; ack timeout noticed after {detected:?} (ack_timeout {ACK_TIMEOUT:?}, keep-alive {KEEP_ALIVE_SECS} s); {} events posted, {} queued at the end of the hole; status {during}",
            ids.len(),
            during["queued"]
        );
        assert_eq!(
            during["mqtt_connected"], false,
            "the agent still reports a link that has been dead for {HOLE:?}: {during}"
        );
        assert!(
            detected <= ACK_TIMEOUT + Duration::from_millis(1500),
            "dead link noticed only after {detected:?}; the ack timeout is {ACK_TIMEOUT:?}"
        );

        // The path is back: the agent must get through well before keep-alive.
        proxy.resume();
        let resumed_at = Instant::now();
        for _ in 0..3 {
            ids.push(c.post_event(addr, i).await?);
            i += 1;
        }
        let wanted: HashSet<String> = ids.iter().cloned().collect();
        // Through the link well before keep-alive: everything acked by the
        // collector (stored in its inbox).
        let recovery_budget = Duration::from_secs(KEEP_ALIVE_SECS / 2);
        eventually(
            "every event acknowledged by the collector after the link came back",
            recovery_budget,
            || async {
                let s = status(&c, addr).await?;
                (s["queued"] == 0).then_some(())
            },
        )
        .await?;
        let acked_after = resumed_at.elapsed();
        // Then booked: a proof of delivery whose order has no `arrived` (these
        // test orders have none) waits up to the collector's
        // lane_park_max_ms (10 s) for it before it goes.
        let effects = eventually(
            "every acknowledged event booked at the ERP after the link came back",
            Duration::from_secs(20),
            || async {
                let effects = c.erp_effects();
                let keys: HashSet<String> = effects.iter().map(effect_key).collect();
                wanted.is_subset(&keys).then_some(effects)
            },
        )
        .await?;
        let booked_after = resumed_at.elapsed();
        let mut per_key: HashMap<String, usize> = HashMap::new();
        for e in &effects {
            *per_key.entry(effect_key(e)).or_default() += 1;
        }
        let duplicated: Vec<_> = per_key.iter().filter(|(_, n)| **n > 1).collect();
        let strangers: Vec<_> = per_key.keys().filter(|k| !wanted.contains(*k)).collect();
        assert!(duplicated.is_empty(), "booked more than once: {duplicated:?}");
        assert!(strangers.is_empty(), "booked but never acknowledged: {strangers:?}");
        let end = eventually("agent queue empty", Duration::from_secs(10), || async {
            let s = status(&c, addr).await?;
            (s["queued"] == 0).then_some(s)
        })
        .await?;
        println!(
            "link: after resume all {} events acked in {acked_after:?}, booked once in {booked_after:?}, queue empty after {:?}; connects {} -> {}, ack timeouts {} -> {}, proxy accepted {} connections",
            wanted.len(),
            resumed_at.elapsed(),
            connects_before,
            end["mqtt_connects"],
            timeouts_before,
            end["ack_timeouts"],
            proxy.accepted()
        );
        Ok::<_, anyhow::Error>(())
    }
    .await;
    c.judge(result)
}
