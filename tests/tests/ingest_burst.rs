//! Ingest under a fleet reconnect, through a real Mosquitto.
//!
//! After a broker outage every agent of a fleet reconnects at once and sends
//! its backlog (`max_inflight_batches` batches each, as fast as the broker
//! takes them). The collector must store and ack every batch within a bound
//! and never stall: before this test existed, 300 devices × 4 batches stalled
//! ingest for good at about 400 stored (the ingest task waited on rumqttc's
//! request channel, which only the poll task drains, while the poll task
//! waited on the ingest channel). The same burst queued while the collector
//! is down must land after its restart, and a flood of copies of one batch on
//! one device's topic must not stall the others.
//!
//! Runs when `DOCKLINE_TEST_MQTT_URL` names a broker (CI starts Mosquitto);
//! prints a SKIP line otherwise.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};
use dockline_tests::forge::{self, Fleet, Lane};
use dockline_tests::{Cluster, eventually, external_mqtt};
use serde_json::Value;

/// Largest time a burst may take to be stored and acked in full (the
/// collector stores ~1,000 one-event batches in well under 10 s on 2 cores).
const BOUND: Duration = Duration::from_secs(90);

async fn stats(c: &Cluster) -> Option<Value> {
    c.get(&format!("{}/v1/stats", c.collector_url())).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_reconnecting_at_once_is_stored_and_acked_in_full() -> Result<()> {
    let Some(mqtt) = external_mqtt("ingest_burst")? else {
        return Ok(());
    };
    let pid = std::process::id();
    let site = format!("burst{pid}");
    let names: Vec<String> = (0..300).map(|i| format!("hh-{i:03}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut c = Cluster::start(Some(mqtt), &site, &refs, &format!("burst-{pid}")).await?;
    let fleet = Fleet {
        site: site.clone(),
        epoch: 1,
        lane: Lane::PerEvent,
        reconnects: 0,
    };
    let result = async {
        let mqtt = c.mqtt();
        let acks = forge::AckWatch::start(&mqtt, &format!("burst-acks-{pid}"), &site).await?;

        // 300 devices × 4 one-event batches, from 10 publishers at once.
        let started = Instant::now();
        let sent = fleet.burst(&mqtt, &format!("burst-{pid}"), &names, 1..=4).await?;
        let publish_secs = started.elapsed().as_secs_f64();
        let resent = agents_resend(&c, &fleet, &acks, &names, 4, "r1").await?;
        let s = wait_stored(&c, 1200).await?;
        eprintln!(
            "fleet burst: {sent} batches published in {publish_secs:.2} s, all stored and acked after {:.2} s; {resent} sent again after an ack timeout (dropped by the broker's queue limit), {} duplicates",
            started.elapsed().as_secs_f64(), s["duplicates"]
        );

        // The same burst queued while the collector is down (the broker keeps
        // its persistent session's messages, up to Mosquitto's default
        // max_queued_messages of 1,000), then a restart.
        c.stack.collector.kill();
        let later: Vec<String> = names[..200].to_vec();
        fleet.burst(&mqtt, &format!("burst2-{pid}"), &later, 5..=8).await?;
        c.stack.collector.restart().await?;
        agents_resend(&c, &fleet, &acks, &later, 8, "r2").await?;
        wait_stored(&c, 1200 + 800).await?;

        // A flood: 2,000 copies of one valid batch on one device's topic. Each
        // is refused as rate-limited or re-acked as a duplicate, none stalls
        // the session: a good batch of another device sent after it lands.
        let before = stats(&c).await.ok_or_else(|| anyhow!("no stats"))?;
        let count = |s: &Value, reason: Option<&str>| match reason {
            Some(r) => s["refused_by_reason"][r].as_u64().unwrap_or(0),
            None => s["duplicates"].as_u64().unwrap_or(0),
        };
        let flood_dev = &names[250];
        let one = forge::one_event_batch(flood_dev, 1, 5, 5)?;
        let topic = format!("dockline/v1/{site}/{flood_dev}/events");
        let msgs = vec![(topic, one); 2000];
        forge::publish_many(&mqtt, &format!("flood-{pid}"), msgs).await?;
        let other = &names[251];
        let good = forge::one_event_batch(other, 1, 5, 5)?;
        forge::publish_many(
            &mqtt,
            &format!("after-flood-{pid}"),
            vec![(format!("dockline/v1/{site}/{other}/events"), good)],
        )
        .await?;
        acks.wait_all(std::slice::from_ref(other), 5, BOUND).await?;
        acks.wait_all(std::slice::from_ref(flood_dev), 5, BOUND).await?;
        let s = wait_stored(&c, 1200 + 800 + 2).await?;
        assert_eq!(s["received"], 2002, "nothing stored twice: {s}");
        let full = stats(&c).await.ok_or_else(|| anyhow!("no stats"))?;
        // The flood's own: the counters also hold the bursts' resends.
        let limited =
            count(&full, Some("rate_limited")).saturating_sub(count(&before, Some("rate_limited")));
        let dups = count(&full, None).saturating_sub(count(&before, None));
        // Mosquitto drops what exceeds its queue for us (max_queued_messages),
        // so fewer than 2,000 may reach the collector; those that do are
        // refused or re-acked, and nothing is stored twice (checked above).
        eprintln!("flood: 2,000 copies: {limited} refused as rate_limited, {dups} re-acked as duplicates, the rest dropped by the broker's queue limit");
        assert!(limited + dups > 0 && limited + dups < 2000, "{limited} + {dups}");
        Ok::<_, anyhow::Error>(())
    }
    .await;
    c.judge(result)
}

/// The devices' ack timeout: each resends what is not acked (see
/// [`Fleet::resend_until_acked`]), until all are acked up to `last`.
/// Returns the batches sent again.
async fn agents_resend(
    c: &Cluster,
    fleet: &Fleet,
    acks: &forge::AckWatch,
    devices: &[String],
    last: u64,
    round: &str,
) -> Result<usize> {
    let tag = format!("{round}-{}", std::process::id());
    let timing = forge::Timing {
        ack_timeout: Duration::from_secs(5),
        bound: BOUND,
    };
    let resent = fleet
        .resend_until_acked(&c.mqtt(), &tag, acks, devices, last, timing)
        .await?;
    Ok(resent.batches)
}

async fn wait_stored(c: &Cluster, n: u64) -> Result<Value> {
    let last = Arc::new(Mutex::new(Value::Null));
    let seen = last.clone();
    eventually(&format!("{n} events stored"), BOUND, || {
        let seen = seen.clone();
        async move {
            let s = stats(c).await?;
            let done = s["received"].as_u64() == Some(n);
            *seen.lock().ok()? = serde_json::json!({
                "received": s["received"], "refused": s["refused"],
                "refused_by_reason": s["refused_by_reason"], "duplicates": s["duplicates"],
            });
            done.then_some(s)
        }
    })
    .await
    .map_err(|e| {
        let s = last.lock().map(|v| v.to_string()).unwrap_or_default();
        anyhow!("{e}; last stats: {s}")
    })
}
