//! The whole journey across real processes: handheld app → agent (HTTP) →
//! broker (MQTT) → collector → mock ERP (signed webhook), with the agent
//! killed by SIGKILL in the middle. Every event the agent acknowledged with
//! 201 must be booked at the ERP exactly once.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use anyhow::{Context, Result};
use dockline_simulator::stack::{AgentNode, MqttAddr};
use dockline_tests::{Cluster, effect_key, event_body, eventually, external_mqtt};
use serde_json::Value;

/// Posts `count` events, SIGKILLs the agent after `kill_after` of them,
/// restarts it, and returns the ids of every event answered with 201.
async fn post_with_kill(
    c: &Cluster,
    agent: &mut AgentNode,
    count: usize,
    kill_after: usize,
) -> Result<Vec<String>> {
    let mut addr = agent.api();
    let mut ids = Vec::new();
    for i in 0..count {
        if i == kill_after {
            agent.kill();
            addr = agent.restart().await?;
        }
        let res = c
            .http
            .post(format!("http://{addr}/v1/events"))
            .json(&event_body(i))
            .send()
            .await;
        match res {
            Ok(r) if r.status() == 201 => {
                let v: Value = r.json().await?;
                ids.push(
                    v["event_id"]
                        .as_str()
                        .context("event_id in 201")?
                        .to_string(),
                );
            }
            Ok(r) => anyhow::bail!(
                "agent answered {} to event {i}: {}",
                r.status(),
                r.text().await.unwrap_or_default()
            ),
            Err(e) => anyhow::bail!("agent unreachable for event {i}: {e}"),
        }
        // Give the uplink time to have batches in flight when the kill lands.
        if i % 4 == 0 {
            tokio::time::sleep(Duration::from_millis(15)).await;
        }
    }
    Ok(ids)
}

async fn journey(external_mqtt: Option<MqttAddr>, tag: &str) -> Result<()> {
    let site = format!("e2e-{tag}");
    let device = format!("hh-{tag}-{}", std::process::id());
    let c = Cluster::start(external_mqtt, &site, &[&device], tag).await?;
    let result = async {
        let mut agent = c.agent(&device).await?;
        let ids = post_with_kill(&c, &mut agent, 60, 23).await?;
        let wanted: HashSet<String> = ids.iter().cloned().collect();
        assert_eq!(wanted.len(), ids.len(), "event ids are unique");

        let effects = eventually(
            "every acknowledged event booked at the ERP",
            Duration::from_secs(90),
            || async {
                let effects = c.erp_effects();
                let keys: HashSet<String> = effects.iter().map(effect_key).collect();
                wanted.is_subset(&keys).then_some(effects)
            },
        )
        .await?;
        let mut per_key: HashMap<String, usize> = HashMap::new();
        for e in &effects {
            *per_key.entry(effect_key(e)).or_default() += 1;
        }
        let lost: Vec<_> = wanted
            .iter()
            .filter(|id| !per_key.contains_key(*id))
            .collect();
        let duplicated: Vec<_> = per_key.iter().filter(|(_, n)| **n > 1).collect();
        let strangers: Vec<_> = per_key.keys().filter(|k| !wanted.contains(*k)).collect();
        assert!(lost.is_empty(), "lost: {lost:?}");
        assert!(
            duplicated.is_empty(),
            "duplicated at the ERP: {duplicated:?}"
        );
        assert!(
            strangers.is_empty(),
            "ERP booked events nobody acknowledged: {strangers:?}"
        );

        // The collector stored each event once, and the agent learns the verdicts.
        let stats: Value = c
            .http
            .get(format!("{}/v1/stats", c.collector_url()))
            .send()
            .await?
            .json()
            .await?;
        assert_eq!(
            stats["received"].as_u64(),
            Some(ids.len() as u64),
            "collector stats: {stats}"
        );
        let addr = agent.api();
        eventually(
            "agent outbox drained and verdicts recorded",
            Duration::from_secs(30),
            || async {
                let s: Value = c
                    .http
                    .get(format!("http://{addr}/v1/status"))
                    .send()
                    .await
                    .ok()?
                    .json()
                    .await
                    .ok()?;
                (s["queued"] == 0 && s["booked"].as_u64() == Some(ids.len() as u64)).then_some(())
            },
        )
        .await?;
        Ok::<_, anyhow::Error>(())
    }
    .await;
    c.judge(result)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_agent_loses_and_doubles_nothing_embedded_broker() -> Result<()> {
    journey(None, "emb").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_agent_loses_and_doubles_nothing_mosquitto() -> Result<()> {
    match external_mqtt("sigkilled_agent_loses_and_doubles_nothing_mosquitto")? {
        Some(broker) => journey(Some(broker), "mosq").await,
        None => Ok(()),
    }
}

/// Hostile input on the events topic: the collector names the problem and
/// keeps going; a valid event afterwards is still booked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collector_survives_malformed_cbor_and_unknown_devices() -> Result<()> {
    let site = "e2e-bad";
    let device = format!("hh-ok-{}", std::process::id());
    let mut c = Cluster::start(None, site, &[&device], "bad").await?;
    let result = async {
        // A publish before the collector subscribed would reach no one.
        eventually(
            "the collector subscribed",
            Duration::from_secs(20),
            || async {
                c.stack
                    .collector
                    .log_text()
                    .contains("subscribed to the devices' topics")
                    .then_some(())
            },
        )
        .await?;
        let mut opts = c.mqtt().options("hostile-client");
        opts.set_keep_alive(Duration::from_secs(5));
        let (client, mut eventloop) = rumqttc::AsyncClient::new(opts, 10);
        let pump = tokio::spawn(async move { while eventloop.poll().await.is_ok() {} });
        let garbage_topic = format!("dockline/v1/{site}/{device}/events");
        client
            .publish(
                &garbage_topic,
                rumqttc::QoS::AtLeastOnce,
                false,
                b"\xff\x00not cbor".to_vec(),
            )
            .await?;
        // A well-formed batch from a device the collector does not know.
        let stranger = dockline_protocol::DeviceId::new("stranger-1")?;
        let batch = dockline_protocol::Batch {
            v: 1,
            device: stranger,
            epoch: 1,
            first_held: 1,
            events: vec![],
            shed: vec![],
        };
        client
            .publish(
                format!("dockline/v1/{site}/stranger-1/events"),
                rumqttc::QoS::AtLeastOnce,
                false,
                dockline_protocol::encode(&batch)?,
            )
            .await?;
        eventually(
            "collector logs both refusals",
            Duration::from_secs(20),
            || async {
                let log = c.stack.collector.log_text();
                (log.contains("not valid dockline CBOR") && log.contains("stranger-1"))
                    .then_some(())
            },
        )
        .await?;
        assert!(
            c.stack.collector.is_running(),
            "collector must keep running"
        );
        pump.abort();

        let agent = c.agent(&device).await?;
        let id = c.post_event(agent.api(), 0).await?;
        eventually(
            "the valid event is booked",
            Duration::from_secs(30),
            || async {
                c.erp_effects()
                    .iter()
                    .any(|e| effect_key(e) == id)
                    .then_some(())
            },
        )
        .await?;
        Ok::<_, anyhow::Error>(())
    }
    .await;
    c.judge(result)
}
