//! What a fleet (or an attacker with a device's credentials) puts on the
//! broker, made by hand: one-event batches, bursts from many publishers at
//! once, floods, and a watcher that records every application ack the
//! collector publishes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Result, anyhow, bail};
use dockline_protocol::{
    Ack, Batch, BusinessEvent, DeviceId, Envelope, EventDetail, EventId, PROTOCOL_VERSION, Payload,
    Priority, References, TimeSource, codec,
};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

/// A stable, distinct event id for `(device, epoch, seq)`.
pub fn event_id(device: &str, epoch: u64, seq: u64) -> EventId {
    let mut id = [0u8; 16];
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in device.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    id[..8].copy_from_slice(&h.to_be_bytes());
    id[8..12].copy_from_slice(&(epoch as u32).to_be_bytes());
    id[12..].copy_from_slice(&(seq as u32).to_be_bytes());
    // UUIDv7-shaped (version and variant bits), as the agent makes them.
    id[6] = (id[6] & 0x0f) | 0x70;
    id[8] = (id[8] & 0x3f) | 0x80;
    EventId(id)
}

/// One envelope: a pick of order `SO-{device}-{seq}` (its own lane).
pub fn envelope(device: &str, epoch: u64, seq: u64) -> Result<Envelope> {
    Ok(Envelope {
        v: PROTOCOL_VERSION,
        device: DeviceId::new(device)?,
        epoch,
        seq,
        id: event_id(device, epoch, seq),
        captured_ms: 1_764_050_000_000,
        time_source: TimeSource::Ntp,
        priority: Priority::MustDeliver,
        payload: Payload::Event(BusinessEvent {
            detail: EventDetail::Picked {
                item: "09506000134352".into(),
                quantity: 1,
                lot: None,
            },
            refs: References {
                order: Some(format!("SO-{device}-{seq}")),
                ..References::default()
            },
        }),
    })
}

/// A batch as the agent sends it: `seqs` in `epoch`, claiming it still holds
/// everything from `first_held`, with `shed` ranges.
pub fn batch(
    device: &str,
    epoch: u64,
    first_held: u64,
    seqs: &[u64],
    shed: Vec<(u64, u64)>,
) -> Result<Batch> {
    Ok(Batch {
        v: PROTOCOL_VERSION,
        device: DeviceId::new(device)?,
        epoch,
        first_held,
        events: seqs
            .iter()
            .map(|&s| envelope(device, epoch, s))
            .collect::<Result<_>>()?,
        shed,
    })
}

/// The CBOR of a one-event batch at `seq` (holding from `first_held`).
pub fn one_event_batch(device: &str, epoch: u64, first_held: u64, seq: u64) -> Result<Vec<u8>> {
    Ok(codec::encode(&batch(
        device,
        epoch,
        first_held,
        &[seq],
        vec![],
    )?)?)
}

fn options(mqtt: &(String, u16), id: &str) -> MqttOptions {
    let mut o = MqttOptions::new(id, mqtt.0.clone(), mqtt.1);
    o.set_keep_alive(Duration::from_secs(10));
    o.set_max_packet_size(16 << 20, 16 << 20);
    o.set_inflight(100);
    o
}

/// Publishes every message QoS 1 as client `id`, as fast as the broker takes
/// them (up to 100 in flight), and waits for every PUBACK.
pub async fn publish_many(
    mqtt: &(String, u16),
    id: &str,
    messages: Vec<(String, Vec<u8>)>,
) -> Result<()> {
    let (client, mut eventloop) = AsyncClient::new(options(mqtt, id), 256);
    let n = messages.len();
    let feeder = tokio::spawn(async move {
        for (topic, payload) in messages {
            if client
                .publish(topic, QoS::AtLeastOnce, false, payload)
                .await
                .is_err()
            {
                return None;
            }
        }
        Some(client)
    });
    let mut acked = 0;
    while acked < n {
        match tokio::time::timeout(Duration::from_secs(20), eventloop.poll()).await {
            Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => acked += 1,
            Ok(Ok(_)) => {}
            Ok(Err(e)) => bail!("publisher {id}: {e} after {acked} of {n} PUBACKs"),
            Err(_) => bail!("publisher {id}: no PUBACK within 20 s ({acked} of {n})"),
        }
    }
    if let Ok(Some(client)) = feeder.await {
        let _ = client.disconnect().await;
        let _ = tokio::time::timeout(Duration::from_millis(300), eventloop.poll()).await;
    }
    Ok(())
}

/// A fleet reconnect: every device of `devices` publishes one one-event
/// batch per sequence of `seqs` (`first_held` the range's start, as an agent
/// with that backlog sends), from 10 publishers at once. Returns the number
/// of batches published.
pub async fn burst(
    mqtt: &(String, u16),
    tag: &str,
    site: &str,
    devices: &[String],
    seqs: std::ops::RangeInclusive<u64>,
) -> Result<usize> {
    let mut messages = Vec::new();
    for seq in seqs.clone() {
        for d in devices {
            let bytes = one_event_batch(d, 1, *seqs.start(), seq)?;
            messages.push((format!("dockline/v1/{site}/{d}/events"), bytes));
        }
    }
    let n = messages.len();
    publish_spread(mqtt, tag, messages).await?;
    Ok(n)
}

/// Publishes `messages` from 10 clients at once (`{tag}-pub{i}`), in their
/// order within each client.
pub async fn publish_spread(
    mqtt: &(String, u16),
    tag: &str,
    messages: Vec<(String, Vec<u8>)>,
) -> Result<()> {
    let publishers = 10.min(messages.len().max(1));
    let mut groups: Vec<Vec<(String, Vec<u8>)>> = vec![Vec::new(); publishers];
    for (i, m) in messages.into_iter().enumerate() {
        groups[i % publishers].push(m);
    }
    let mut tasks = Vec::new();
    for (i, msgs) in groups.into_iter().enumerate() {
        let mqtt = mqtt.clone();
        let id = format!("{tag}-pub{i}");
        tasks.push(tokio::spawn(
            async move { publish_many(&mqtt, &id, msgs).await },
        ));
    }
    for t in tasks {
        t.await.map_err(|e| anyhow!("publisher task: {e}"))??;
    }
    Ok(())
}

/// How long devices wait for an ack before they resend, and how long in all.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// The devices' ack timeout.
    pub ack_timeout: Duration,
    /// Fail after this long.
    pub bound: Duration,
}

/// What agents do after a burst: every `ack_timeout`, each device not yet
/// acked up to `last` sends again what the collector has not acked (its
/// ack floor + 1 onwards, claiming to hold from there), until all are acked
/// or `bound` passes. The broker may drop part of a burst (Mosquitto's
/// `max_queued_messages`, 1,000 by default, per subscriber), so real agents
/// resend on their ack timeout too. Returns the batches sent again.
pub async fn resend_until_acked(
    mqtt: &(String, u16),
    tag: &str,
    acks: &AckWatch,
    site: &str,
    devices: &[String],
    last: u64,
    timing: Timing,
) -> Result<usize> {
    let Timing { ack_timeout, bound } = timing;
    let start = std::time::Instant::now();
    let mut resent = 0;
    let mut round = 0;
    loop {
        let wait_until = std::time::Instant::now() + ack_timeout;
        while std::time::Instant::now() < wait_until {
            if devices.iter().all(|d| acks.mark(d) >= last) {
                return Ok(resent);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if start.elapsed() > bound {
            let behind: Vec<_> = devices
                .iter()
                .filter(|d| acks.mark(d) < last)
                .take(5)
                .map(|d| (d.clone(), acks.mark(d)))
                .collect();
            bail!(
                "devices still not acked up to {last} after {bound:?} and {resent} batches sent again, e.g. {behind:?}"
            );
        }
        let mut messages = Vec::new();
        for d in devices {
            let floor = acks.mark(d);
            for seq in floor + 1..=last {
                messages.push((
                    format!("dockline/v1/{site}/{d}/events"),
                    one_event_batch(d, 1, floor + 1, seq)?,
                ));
            }
        }
        resent += messages.len();
        round += 1;
        publish_spread(mqtt, &format!("{tag}-resend{round}"), messages).await?;
    }
}

/// Every application ack the collector published on a site's ack topics,
/// newest `stored_up_to` per device (and every ack, for the forgery tests).
pub struct AckWatch {
    marks: Arc<Mutex<HashMap<String, u64>>>,
    all: Arc<Mutex<Vec<Ack>>>,
    task: tokio::task::JoinHandle<()>,
}

impl AckWatch {
    /// Subscribes to `dockline/v1/{site}/+/ack` as client `id` and returns
    /// once the subscription is confirmed.
    pub async fn start(mqtt: &(String, u16), id: &str, site: &str) -> Result<Self> {
        let (client, mut eventloop) = AsyncClient::new(options(mqtt, id), 16);
        client
            .subscribe(format!("dockline/v1/{site}/+/ack"), QoS::AtLeastOnce)
            .await?;
        loop {
            match tokio::time::timeout(Duration::from_secs(10), eventloop.poll()).await {
                Ok(Ok(Event::Incoming(Packet::SubAck(_)))) => break,
                Ok(Ok(_)) => {}
                Ok(Err(e)) => bail!("ack watcher: {e}"),
                Err(_) => bail!("ack watcher: no SUBACK within 10 s"),
            }
        }
        let marks = Arc::new(Mutex::new(HashMap::new()));
        let all = Arc::new(Mutex::new(Vec::new()));
        let (m, a) = (marks.clone(), all.clone());
        let task = tokio::spawn(async move {
            let _client = client;
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let Ok(ack) = codec::decode::<Ack>(&p.payload) else {
                            continue;
                        };
                        if let Some(up_to) = ack.stored_up_to
                            && let Ok(mut m) = m.lock()
                        {
                            let e = m.entry(ack.device.as_str().to_owned()).or_insert(0);
                            *e = (*e).max(up_to);
                        }
                        if let Ok(mut a) = a.lock() {
                            a.push(ack);
                        }
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        });
        Ok(Self { marks, all, task })
    }

    /// The newest `stored_up_to` acked to `device` (0 if none).
    pub fn mark(&self, device: &str) -> u64 {
        self.marks
            .lock()
            .map(|m| m.get(device).copied().unwrap_or(0))
            .unwrap_or(0)
    }

    /// Every ack seen so far.
    pub fn acks(&self) -> Vec<Ack> {
        self.all.lock().map(|a| a.clone()).unwrap_or_default()
    }

    /// Waits until every device of `devices` was acked up to `up_to`.
    pub async fn wait_all(&self, devices: &[String], up_to: u64, bound: Duration) -> Result<()> {
        let start = std::time::Instant::now();
        loop {
            let behind: Vec<(String, u64)> = devices
                .iter()
                .map(|d| (d.clone(), self.mark(d)))
                .filter(|(_, m)| *m < up_to)
                .collect();
            if behind.is_empty() {
                return Ok(());
            }
            if start.elapsed() > bound {
                let show: Vec<_> = behind.iter().take(5).collect();
                bail!(
                    "{} of {} devices not acked up to {up_to} within {bound:?}, e.g. {show:?}",
                    behind.len(),
                    devices.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for AckWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}
