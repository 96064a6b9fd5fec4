//! A device that lies, through a real Mosquitto: one test per forgery of
//! issue 12, each refused and counted, with no good event of the same
//! device lost or stalled.
//!
//! One cluster (mock ERP, collector, one real agent `hh-a` with the
//! collector's verify key) and a rogue MQTT client that publishes on the
//! agent's topics as anyone on an anonymous broker, or a stolen handheld,
//! can:
//! - a batch at seq 50 while the device is at 2 (a future sequence): the
//!   collector's gap audit asks for 3..=49, the agent refuses what it has
//!   not assigned (`resend_beyond_assigned`), its real events 3.. land;
//! - the collector's own signed resend command, captured and replayed: the
//!   agent refuses it (`replayed`);
//! - a batch claiming `held = 2^40`: refused as `bad_watermark`, the next
//!   real events land;
//! - 20 batches with an epoch of 2^63: malformed, PUBACKed, the session
//!   goes on;
//! - a batch opening an older epoch: refused (`old_epoch`);
//! - a forged ack while the collector is down: the agent refuses it
//!   (`acks.unsigned`) and deletes nothing; everything lands after the
//!   collector's restart;
//! - a 5 MiB message: refused as `oversize`, no reconnect loop.
//!
//! At the end every event the agent took is booked at the mock ERP exactly
//! once.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use dockline_protocol::{Ack, DeviceId, PROTOCOL_VERSION, codec};
use dockline_simulator::stack::MqttAddr;
use dockline_tests::forge::{self, Lane};
use dockline_tests::{Cluster, ClusterSpec, effect_key, eventually, external_mqtt};
use rumqttc::{AsyncClient, Event, Packet, QoS};

/// The first message on `topic`, captured by a subscriber started now.
async fn capture_one(
    mqtt: &MqttAddr,
    id: &str,
    topic: &str,
) -> Result<tokio::task::JoinHandle<Option<Vec<u8>>>> {
    let (client, mut eventloop) = AsyncClient::new(mqtt.options(id), 16);
    client.subscribe(topic, QoS::AtLeastOnce).await?;
    loop {
        match tokio::time::timeout(Duration::from_secs(10), eventloop.poll()).await {
            Ok(Ok(Event::Incoming(Packet::SubAck(_)))) => break,
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(anyhow!("capture {topic}: {e}")),
            Err(_) => return Err(anyhow!("capture {topic}: no SUBACK")),
        }
    }
    Ok(tokio::spawn(async move {
        let _client = client;
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) => return Some(p.payload.to_vec()),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
    }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_forgery_is_refused_and_counted_and_no_real_event_is_lost() -> Result<()> {
    let Some(mqtt) = external_mqtt("forgeries")? else {
        return Ok(());
    };
    let pid = std::process::id();
    let site = format!("forge{pid}");
    let dev = "hh-a";
    let spec = ClusterSpec::new(Some(mqtt), &format!("forge-{pid}"));
    let mut c = Cluster::start_with(spec, &site, &[dev], |c| c.gaps.resend_after_ms = 500).await?;
    let agent = c.agent(dev).await?;
    let result = async {
        let addr = agent.api();
        let stats_url = format!("{}/v1/stats", c.collector_url());
        let status_url = format!("http://{addr}/v1/status");
        let topic = |ch: &str| format!("dockline/v1/{site}/{dev}/{ch}");
        let rogue = |n: &str| format!("rogue-{n}-{pid}");
        let mut posted = Vec::new();
        for i in 0..2 {
            posted.push(c.post_event(addr, i).await?);
        }
        let status = eventually("agent events acked", Duration::from_secs(30), || async {
            let s = c.get(&status_url).await?;
            (s["acked_up_to"] == 2).then_some(s)
        })
        .await?;
        let epoch = status["epoch"].as_u64().context("epoch in /v1/status")?;

        // 1. A future sequence, and the collector's resend request for the
        // hole it opens, captured on the way.
        let captured = capture_one(&c.mqtt(), &rogue("cap"), &topic("cmd")).await?;
        forge::publish_many(
            &c.mqtt(),
            &rogue("future"),
            vec![(topic("events"), forge::one_event_batch(dev, epoch, 1, 50)?)],
        )
        .await?;
        let s = eventually(
            "agent refuses to write off 3..=49",
            Duration::from_secs(30),
            || async {
                let s = c.get(&status_url).await?;
                (s["acks"]["resend_beyond_assigned"].as_u64()? >= 1).then_some(s)
            },
        )
        .await?;
        anyhow::ensure!(s["commands"]["accepted"].as_u64() == Some(1), "{s}");
        // 2. The captured signed command, replayed within its expiry.
        let command = tokio::time::timeout(Duration::from_secs(10), captured)
            .await
            .context("a resend command was published")??
            .context("captured a command")?;
        forge::publish_many(&c.mqtt(), &rogue("replay"), vec![(topic("cmd"), command)]).await?;
        eventually(
            "agent refuses the replay",
            Duration::from_secs(20),
            || async {
                let s = c.get(&status_url).await?;
                (s["commands"]["replayed"] == 1).then_some(())
            },
        )
        .await?;

        // 3. held = 2^40 with no events; 4. twenty batches in epoch 2^63;
        // 5. a batch opening an older epoch; 6. a 5 MiB message.
        let held = codec::encode(&forge::batch_in(
            &Lane::PerEvent,
            dev,
            epoch,
            1 << 40,
            &[],
            vec![],
        )?)?;
        let mut huge_epoch = forge::batch_in(&Lane::PerEvent, dev, 1, 1, &[1], vec![])?;
        huge_epoch.epoch = 1 << 63;
        huge_epoch.events[0].epoch = 1 << 63;
        // The encoder does not validate: this is what a forger can send.
        let huge_epoch = codec::encode(&huge_epoch)?;
        let mut messages = vec![(topic("events"), held)];
        messages.extend(std::iter::repeat_n((topic("events"), huge_epoch), 20));
        messages.push((
            topic("events"),
            forge::one_event_batch(dev, epoch - 1000, 1, 5)?,
        ));
        messages.push((topic("events"), vec![0xa0; 5 << 20]));
        forge::publish_many(&c.mqtt(), &rogue("lies"), messages).await?;
        let stats = eventually("every lie counted", Duration::from_secs(30), || async {
            let s = c.get(&stats_url).await?;
            let r = &s["refused_by_reason"];
            (r["bad_watermark"].as_u64()? >= 1
                && r["malformed"].as_u64()? >= 20
                && r["old_epoch"].as_u64()? >= 1
                && r["oversize"].as_u64()? >= 1)
                .then_some(s)
        })
        .await?;
        eprintln!("collector refusals: {}", stats["refused_by_reason"]);
        for i in 2..5 {
            posted.push(c.post_event(addr, i).await?);
        }
        eventually(
            "real events 3..=5 acked",
            Duration::from_secs(30),
            || async {
                let s = c.get(&status_url).await?;
                (s["acked_up_to"] == 5).then_some(())
            },
        )
        .await?;

        // 7. A forged ack while the collector is down.
        c.stack.collector.kill();
        for i in 5..8 {
            posted.push(c.post_event(addr, i).await?);
        }
        let forged = Ack {
            v: PROTOCOL_VERSION,
            device: DeviceId::new(dev)?,
            epoch,
            stored_up_to: Some(1_000_000),
            also_stored: vec![],
            verdicts: vec![],
            signed: None,
        };
        forge::publish_many(
            &c.mqtt(),
            &rogue("ack"),
            vec![(topic("ack"), codec::encode(&forged)?)],
        )
        .await?;
        let s = eventually(
            "agent refuses the forged ack",
            Duration::from_secs(20),
            || async {
                let s = c.get(&status_url).await?;
                (s["acks"]["unsigned"] == 1).then_some(s)
            },
        )
        .await?;
        anyhow::ensure!(
            s["acked_up_to"] == 5,
            "nothing deleted on a forged ack: {s}"
        );
        c.stack.collector.restart().await?;
        eventually(
            "everything acked after the restart",
            Duration::from_secs(60),
            || async {
                let s = c.get(&status_url).await?;
                (s["acked_up_to"] == 8).then_some(())
            },
        )
        .await?;

        // Every real event booked exactly once; the forged seq 50 waits
        // behind the hole it opened and is never booked.
        let effects = eventually(
            "all 8 real events booked",
            Duration::from_secs(60),
            || async {
                let e = c.erp_effects();
                (e.len() >= 8).then_some(e)
            },
        )
        .await?;
        let mut per_key: HashMap<String, usize> = HashMap::new();
        for e in &effects {
            *per_key.entry(effect_key(e)).or_default() += 1;
        }
        for id in &posted {
            assert_eq!(
                per_key.get(id),
                Some(&1),
                "event {id} booked once: {per_key:?}"
            );
        }
        assert_eq!(
            effects.len(),
            posted.len(),
            "nothing forged booked: {effects:?}"
        );
        let log = c.stack.collector.log_text();
        let reconnects = log.matches("MQTT broker unreachable").count();
        assert!(
            reconnects <= 1,
            "no reconnect loop on the oversize message: {reconnects}"
        );
        Ok::<_, anyhow::Error>(())
    }
    .await;
    c.judge(result)
}
