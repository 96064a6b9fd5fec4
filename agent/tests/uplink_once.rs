//! Bytes on the link: with no fault at all, every event crosses MQTT once.
//! A real Mosquitto (`DOCKLINE_TEST_MQTT_URL`) and a scripted fake collector
//! that counts how often each sequence arrives and acks like the real one.

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::fake_collector::{FakeCollector, broker, unique_ids};
use support::start_agent_toml;

#[tokio::test]
async fn with_no_fault_every_event_crosses_the_link_once() {
    let Some((host, port)) = broker("with_no_fault_every_event_crosses_the_link_once") else {
        return;
    };
    let (site, device) = unique_ids("once");
    let collector = FakeCollector::start(&host, port, &site, &device).await;
    let root = tempfile::tempdir().expect("tempdir");
    let dir = root.path();
    let toml = format!(
        "site = {site:?}\ndevice = {device:?}\ndata_dir = {:?}\n[api]\nlisten = \"127.0.0.1:0\"\n[mqtt]\nhost = {host:?}\nport = {port}\n[uplink]\nack_timeout_ms = 20000\n",
        dir.display().to_string()
    );
    let agent = start_agent_toml(dir, &toml).await;
    let http = agent.http();
    const EVENTS: u64 = 300;
    // Events arrive one by one, as from a handheld in a busy shift, with a
    // few bursts so that both lanes have work at the same time.
    for i in 0..EVENTS {
        let detail = if i % 3 == 0 {
            json!({"picked": {"item": "09506000134352", "quantity": 1}})
        } else {
            json!({"loaded": {"vehicle": "VAN-7"}})
        };
        let res = http
            .post(agent.url("/v1/events"))
            .json(&json!({"detail": detail, "refs": {"order": format!("SO-{i}")}}))
            .send()
            .await
            .expect("post");
        assert_eq!(res.status(), 201);
        if i % 50 != 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status: Value = http
            .get(agent.url("/v1/status"))
            .send()
            .await
            .expect("status")
            .json()
            .await
            .expect("json");
        if status["queued"] == 0 && status["acked_up_to"] == EVENTS {
            assert_eq!(status["ack_timeouts"], 0, "no fault, no timeout: {status}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the collector did not store every event in time: {status}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    agent.stop().await;
    let seen = collector.seen.lock().expect("lock");
    let twice: Vec<(u64, u32)> = seen
        .crossings
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(s, n)| (*s, *n))
        .collect();
    assert_eq!(seen.crossings.len() as u64, EVENTS, "every event arrived");
    assert!(
        twice.is_empty(),
        "{} of {EVENTS} events crossed the link more than once (sequence, times): {twice:?}",
        twice.len()
    );
    eprintln!(
        "{EVENTS} events in {} batches, {} bytes on the link ({:.0} per event)",
        seen.batches,
        seen.bytes,
        seen.bytes as f64 / EVENTS as f64
    );
}
