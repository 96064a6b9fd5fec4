//! A scripted fake collector on a real MQTT broker: it subscribes to one
//! device's `events` topic, counts every event each time it crosses the
//! link, stores it (a set of sequences) and answers with the collector's
//! ack (contiguous floor plus `also` ranges), as the real collector does.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dockline_protocol::{Ack, Batch, Channel, DeviceId, PROTOCOL_VERSION, SiteId, Topic, codec};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

/// The broker named by `DOCKLINE_TEST_MQTT_URL` (`mqtt://host:port`), or
/// `None` after printing why `test` is skipped.
pub fn broker(test: &str) -> Option<(String, u16)> {
    let Ok(url) = std::env::var("DOCKLINE_TEST_MQTT_URL") else {
        eprintln!(
            "SKIP {test}: set DOCKLINE_TEST_MQTT_URL=mqtt://127.0.0.1:1883 to run against a real Mosquitto"
        );
        return None;
    };
    let rest = url.strip_prefix("mqtt://").unwrap_or(&url);
    let (host, port) = rest
        .trim_end_matches('/')
        .rsplit_once(':')
        .expect("DOCKLINE_TEST_MQTT_URL is mqtt://host:port");
    Some((host.to_string(), port.parse().expect("port")))
}

/// A site and device id no other test run uses.
pub fn unique_ids(prefix: &str) -> (String, String) {
    let n: u64 = rand::random();
    (format!("{prefix}-site-{n:x}"), format!("{prefix}-{n:x}"))
}

/// What the fake collector saw.
#[derive(Debug, Default)]
pub struct Seen {
    /// Times each sequence crossed the link (in a batch's events).
    pub crossings: BTreeMap<u64, u32>,
    /// Sequences stored (events and shed).
    pub stored: BTreeSet<u64>,
    /// Batches received.
    pub batches: u64,
    /// Bytes of every batch received.
    pub bytes: u64,
}

/// The fake collector; stops when dropped.
pub struct FakeCollector {
    /// What it saw so far.
    pub seen: Arc<Mutex<Seen>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeCollector {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeCollector {
    /// Connects to `host:port` and listens for `device` of `site`; returns
    /// once the subscription is granted.
    pub async fn start(host: &str, port: u16, site: &str, device: &str) -> FakeCollector {
        let topic = |c| {
            Topic::new(
                SiteId::new(site).expect("site id"),
                DeviceId::new(device).expect("device id"),
                c,
            )
            .to_string()
        };
        let (events, ack) = (topic(Channel::Events), topic(Channel::Ack));
        let mut options = MqttOptions::new(format!("fake-collector-{device}"), host, port);
        options.set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut eventloop) = AsyncClient::new(options, 1024);
        let seen = Arc::new(Mutex::new(Seen::default()));
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let state = seen.clone();
        let task = tokio::spawn(async move {
            let mut ready = Some(ready_tx);
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        client
                            .try_subscribe(events.clone(), QoS::AtLeastOnce)
                            .expect("subscribe");
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        if let Some(tx) = ready.take() {
                            let _ = tx.send(());
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) if p.topic == events => {
                        let batch: Batch = codec::decode(&p.payload).expect("a valid batch");
                        let answer = {
                            let mut s = state.lock().expect("lock");
                            s.batches += 1;
                            s.bytes += p.payload.len() as u64;
                            for e in &batch.events {
                                *s.crossings.entry(e.seq).or_default() += 1;
                                s.stored.insert(e.seq);
                            }
                            for &(lo, hi) in &batch.shed {
                                s.stored.extend(lo..=hi);
                            }
                            ack_for(&batch, &s.stored)
                        };
                        let bytes = codec::encode(&answer).expect("encode ack");
                        client
                            .try_publish(ack.clone(), QoS::AtLeastOnce, false, bytes)
                            .expect("publish ack");
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), ready_rx)
            .await
            .expect("fake collector subscribed in time")
            .expect("fake collector task");
        FakeCollector { seen, task }
    }
}

/// The ack a collector holding `stored` sends: the contiguous floor from 1
/// and the stored ranges above it.
fn ack_for(batch: &Batch, stored: &BTreeSet<u64>) -> Ack {
    let mut up_to = 0;
    while stored.contains(&(up_to + 1)) {
        up_to += 1;
    }
    let mut also: Vec<(u64, u64)> = Vec::new();
    for &seq in stored.range(up_to + 1..) {
        match also.last_mut() {
            Some((_, hi)) if *hi + 1 == seq => *hi = seq,
            _ => also.push((seq, seq)),
        }
    }
    Ack {
        v: PROTOCOL_VERSION,
        device: batch.device.clone(),
        epoch: batch.epoch,
        stored_up_to: Some(up_to),
        also_stored: also,
        verdicts: Vec::new(),
        signed: None,
    }
}
