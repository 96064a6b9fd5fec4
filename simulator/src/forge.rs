//! What a fleet (or an attacker with a device's credentials) puts on the
//! broker, made by hand: one-event batches, bursts from many publishers at
//! once, floods, the resends of agents whose acks do not come, and a
//! watcher that records every application ack the collector publishes.
//! The `fleet_reconnect_burst` bench figure and the end-to-end tests of
//! ingest and forgeries use it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, bail};
use dockline_protocol::{
    Ack, Batch, BusinessEvent, DeviceId, Envelope, EventDetail, EventId, PROTOCOL_VERSION, Payload,
    Priority, References, TimeSource, codec,
};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

use crate::stack::MqttAddr;

/// Publishers a burst is spread over.
pub const PUBLISHERS: usize = 10;
/// A publisher that got no PUBACK (and no new connection) for this long
/// gives up. Generous: under a burst on two cores a broker can take tens of
/// seconds to answer one of ten publishers (seen once with 30 s).
const NO_PUBACK_LIMIT: Duration = Duration::from_secs(90);
/// Largest packet the forging clients send or take.
const MAX_PACKET: usize = 16 << 20;

/// A stable, distinct, UUIDv7-shaped event id for `(device, epoch, seq)`.
pub fn event_id(device: &str, epoch: u64, seq: u64) -> EventId {
    let mut id = [0u8; 16];
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in device.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    id[..8].copy_from_slice(&h.to_be_bytes());
    id[8..12].copy_from_slice(&(epoch as u32).to_be_bytes());
    id[12..].copy_from_slice(&(seq as u32).to_be_bytes());
    // Version and variant bits, as the agent makes them.
    id[6] = (id[6] & 0x0f) | 0x70;
    id[8] = (id[8] & 0x3f) | 0x80;
    EventId(id)
}

/// Which business lane (order) the forged picks belong to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lane {
    /// `SO-{device}-{seq}`: every event its own lane.
    PerEvent,
    /// One order for every event.
    Order(String),
}

impl Lane {
    fn order(&self, device: &str, seq: u64) -> String {
        match self {
            Self::PerEvent => format!("SO-{device}-{seq}"),
            Self::Order(o) => o.clone(),
        }
    }
}

/// One envelope: a pick in `lane`.
pub fn envelope(lane: &Lane, device: &str, epoch: u64, seq: u64) -> Result<Envelope> {
    Ok(Envelope {
        v: PROTOCOL_VERSION,
        device: DeviceId::new(device).map_err(|e| anyhow!("device id {device:?}: {e}"))?,
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
                order: Some(lane.order(device, seq)),
                ..References::default()
            },
        }),
    })
}

/// A batch as the agent sends it: picks in `lane` at `seqs` in `epoch`,
/// claiming it still holds everything from `first_held`, with `shed`
/// ranges.
pub fn batch_in(
    lane: &Lane,
    device: &str,
    epoch: u64,
    first_held: u64,
    seqs: &[u64],
    shed: Vec<(u64, u64)>,
) -> Result<Batch> {
    Ok(Batch {
        v: PROTOCOL_VERSION,
        device: DeviceId::new(device).map_err(|e| anyhow!("device id {device:?}: {e}"))?,
        epoch,
        first_held,
        events: seqs
            .iter()
            .map(|&s| envelope(lane, device, epoch, s))
            .collect::<Result<_>>()?,
        shed,
    })
}

/// The CBOR of a one-event batch at `seq` (holding from `first_held`), its
/// event in its own lane.
pub fn one_event_batch(device: &str, epoch: u64, first_held: u64, seq: u64) -> Result<Vec<u8>> {
    one_event_batch_in(&Lane::PerEvent, device, epoch, first_held, seq)
}

/// [`one_event_batch`] with its event in `lane`.
pub fn one_event_batch_in(
    lane: &Lane,
    device: &str,
    epoch: u64,
    first_held: u64,
    seq: u64,
) -> Result<Vec<u8>> {
    Ok(codec::encode(&batch_in(
        lane,
        device,
        epoch,
        first_held,
        &[seq],
        vec![],
    )?)?)
}

/// MQTT options of a forging client `id`: keep-alive 10 s, 16 MiB packets,
/// up to 100 publishes in flight.
pub fn options(mqtt: &MqttAddr, id: &str) -> MqttOptions {
    let mut o = mqtt.options(id);
    o.set_max_packet_size(MAX_PACKET, MAX_PACKET);
    o.set_inflight(100);
    o
}

/// Publishes each `(topic, payload)` QoS 1 through a client made from
/// `options`, as fast as the broker takes them, and waits for every PUBACK
/// (Mosquitto PUBACKs a publish its ACL denies, too, and drops it); `who`
/// names the client in errors. A connection the broker resets is taken up
/// again up to `reconnects` times (else it is an error): the next poll
/// reconnects and rumqttc sends the unacknowledged publishes again, as an
/// agent would (the collector drops repeats), so a message may arrive twice.
/// [`NO_PUBACK_LIMIT`] without a PUBACK or a new connection is an error.
pub async fn publish_with(
    options: MqttOptions,
    who: &str,
    messages: Vec<(String, Vec<u8>)>,
    reconnects: usize,
) -> Result<()> {
    let (client, mut eventloop) = AsyncClient::new(options, 256);
    let n = messages.len();
    let feeder = tokio::spawn(async move {
        for (topic, payload) in messages {
            client
                .publish(topic, QoS::AtLeastOnce, false, payload)
                .await?;
        }
        Ok::<_, rumqttc::ClientError>(client)
    });
    let mut acked = 0;
    let mut resets = 0;
    // Counted from the last PUBACK or CONNACK, not from the last event:
    // keep-alive pings alone must not keep a publisher waiting for ever, but
    // a connection taken up again is progress (it resends what was unacked).
    let mut last_ack = Instant::now();
    while acked < n {
        let left = NO_PUBACK_LIMIT.saturating_sub(last_ack.elapsed());
        match tokio::time::timeout(left, eventloop.poll()).await {
            Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => {
                acked += 1;
                last_ack = Instant::now();
            }
            Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => last_ack = Instant::now(),
            Ok(Ok(_)) => {}
            Ok(Err(e)) if resets < reconnects => {
                resets += 1;
                tracing::debug!(publisher = %who, error = %e, "publisher reconnects");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Ok(Err(e)) => bail!("{who}: {e} after {acked} of {n} PUBACKs"),
            Err(_) => bail!(
                "{who}: no PUBACK for {} s ({acked} of {n})",
                NO_PUBACK_LIMIT.as_secs()
            ),
        }
    }
    let client = feeder
        .await
        .map_err(|e| anyhow!("feeder of {who}: {e}"))??;
    let _ = client.disconnect().await;
    // Let the DISCONNECT go out before the event loop is dropped.
    let _ = tokio::time::timeout(Duration::from_millis(300), eventloop.poll()).await;
    Ok(())
}

/// [`publish_with`] as forging client `id` of `mqtt` ([`options`]); a
/// reset connection is an error.
pub async fn publish_many(
    mqtt: &MqttAddr,
    id: &str,
    messages: Vec<(String, Vec<u8>)>,
) -> Result<()> {
    publish_with(options(mqtt, id), &format!("publisher {id}"), messages, 0).await
}

/// Publishes `messages` from [`PUBLISHERS`] clients at once (`{tag}-{i}`),
/// each in its order, each taking up `reconnects` reset connections (see
/// [`publish_with`]).
pub async fn publish_spread(
    mqtt: &MqttAddr,
    tag: &str,
    messages: Vec<(String, Vec<u8>)>,
    reconnects: usize,
) -> Result<()> {
    let publishers = PUBLISHERS.min(messages.len().max(1));
    let mut groups: Vec<Vec<(String, Vec<u8>)>> = vec![Vec::new(); publishers];
    for (i, m) in messages.into_iter().enumerate() {
        groups[i % publishers].push(m);
    }
    let tasks: Vec<_> = groups
        .into_iter()
        .enumerate()
        .map(|(i, msgs)| {
            let mqtt = mqtt.clone();
            let id = format!("{tag}-{i}");
            tokio::spawn(async move {
                let who = format!("publisher {id}");
                publish_with(options(&mqtt, &id), &who, msgs, reconnects).await
            })
        })
        .collect();
    for t in tasks {
        t.await.map_err(|e| anyhow!("publisher task: {e}"))??;
    }
    Ok(())
}

/// Simulated devices of one site that publish one-event batches, all in
/// one epoch and lane, as agents with a backlog do after a reconnect.
#[derive(Debug, Clone)]
pub struct Fleet {
    /// The site.
    pub site: String,
    /// The epoch of every batch.
    pub epoch: u64,
    /// The lane of every event.
    pub lane: Lane,
    /// Reset connections each publisher takes up ([`publish_with`]).
    pub reconnects: usize,
}

impl Fleet {
    /// `device`'s events topic.
    pub fn topic(&self, device: &str) -> String {
        format!("dockline/v1/{}/{device}/events", self.site)
    }

    /// One one-event batch per sequence of `seqs` for each of `devices`,
    /// each claiming to hold from `seqs`' start.
    pub fn batches(
        &self,
        devices: &[String],
        seqs: std::ops::RangeInclusive<u64>,
    ) -> Result<Vec<(String, Vec<u8>)>> {
        let mut messages = Vec::new();
        for seq in seqs.clone() {
            for d in devices {
                let bytes = one_event_batch_in(&self.lane, d, self.epoch, *seqs.start(), seq)?;
                messages.push((self.topic(d), bytes));
            }
        }
        Ok(messages)
    }

    /// A reconnect burst: [`Fleet::batches`] of `devices` published at
    /// once ([`publish_spread`]). Returns the number of batches.
    pub async fn burst(
        &self,
        mqtt: &MqttAddr,
        tag: &str,
        devices: &[String],
        seqs: std::ops::RangeInclusive<u64>,
    ) -> Result<usize> {
        let messages = self.batches(devices, seqs)?;
        let n = messages.len();
        publish_spread(mqtt, tag, messages, self.reconnects).await?;
        Ok(n)
    }

    /// What agents do after a burst: every `timing.ack_timeout`, each of
    /// `devices` not yet acked up to `last` sends again what the collector
    /// has not acked (its ack floor + 1 onwards, claiming to hold from
    /// there), until all are acked or `timing.bound` passes. A broker may
    /// drop part of a burst (Mosquitto's `max_queued_messages`, 1,000 by
    /// default, per subscriber), so real agents resend on their ack timeout
    /// too.
    pub async fn resend_until_acked(
        &self,
        mqtt: &MqttAddr,
        tag: &str,
        acks: &AckWatch,
        devices: &[String],
        last: u64,
        timing: Timing,
    ) -> Result<Resent> {
        let Timing { ack_timeout, bound } = timing;
        let start = Instant::now();
        let mut resent = Resent::default();
        loop {
            let wait_until = Instant::now() + ack_timeout;
            while Instant::now() < wait_until {
                if devices.iter().all(|d| acks.mark(d) >= last) {
                    resent.acked_after = start.elapsed();
                    return Ok(resent);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            if start.elapsed() > bound {
                let behind: Vec<_> = devices
                    .iter()
                    .map(|d| (d, acks.mark(d)))
                    .filter(|(_, m)| *m < last)
                    .collect();
                bail!(
                    "{} of {} devices not acked up to {last} within {bound:?} ({} batches sent again), e.g. {:?}",
                    behind.len(),
                    devices.len(),
                    resent.batches,
                    &behind[..behind.len().min(5)]
                );
            }
            let mut messages = Vec::new();
            for d in devices {
                let floor = acks.mark(d);
                for seq in floor + 1..=last {
                    messages.push((
                        self.topic(d),
                        one_event_batch_in(&self.lane, d, self.epoch, floor + 1, seq)?,
                    ));
                }
            }
            resent.batches += messages.len();
            resent.rounds += 1;
            let tag = format!("{tag}-resend{}", resent.rounds);
            publish_spread(mqtt, &tag, messages, self.reconnects).await?;
        }
    }
}

/// How long devices wait for an ack before they resend, and how long in all.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// The devices' ack timeout.
    pub ack_timeout: Duration,
    /// Fail after this long.
    pub bound: Duration,
}

/// What [`Fleet::resend_until_acked`] did.
#[derive(Debug, Clone, Copy, Default)]
pub struct Resent {
    /// Batches sent again.
    pub batches: usize,
    /// Rounds of resends.
    pub rounds: usize,
    /// From the call until every device was acked.
    pub acked_after: Duration,
}

/// Every application ack the collector published on a site's ack topics:
/// the newest `stored_up_to` per device, and every ack. The subscriber
/// stops when this is dropped.
pub struct AckWatch {
    marks: Arc<Mutex<HashMap<String, u64>>>,
    all: Arc<Mutex<Vec<Ack>>>,
    task: tokio::task::JoinHandle<()>,
}

impl AckWatch {
    /// Subscribes to `dockline/v1/{site}/+/ack` as client `id` and returns
    /// once the broker confirmed the subscription.
    pub async fn start(mqtt: &MqttAddr, id: &str, site: &str) -> Result<Self> {
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
            // Keeps the client (and so the request channel) alive.
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
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
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
        let start = Instant::now();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forged_batches_decode_with_distinct_ids_lanes_and_the_claimed_hold() {
        let one = Lane::Order("SO-BURST".into());
        let a = one_event_batch_in(&one, "fb-0001", 7, 1, 1).expect("encode");
        let b = one_event_batch_in(&one, "fb-0001", 7, 2, 2).expect("encode");
        let c = one_event_batch("fb-0002", 7, 1, 1).expect("encode");
        let decode = |bytes: &[u8]| codec::decode::<Batch>(bytes).expect("decode");
        let (a, b, c) = (decode(&a), decode(&b), decode(&c));
        assert_eq!((a.first_held, a.events[0].seq), (1, 1));
        assert_eq!((b.first_held, b.events[0].seq), (2, 2));
        let ids = [a.events[0].id, b.events[0].id, c.events[0].id];
        assert!(ids[0] != ids[1] && ids[0] != ids[2] && ids[1] != ids[2]);
        let order = |batch: &Batch| match &batch.events[0].payload {
            Payload::Event(e) => e.refs.order.clone(),
            _ => None,
        };
        assert_eq!(order(&a).as_deref(), Some("SO-BURST"));
        assert_eq!(order(&c).as_deref(), Some("SO-fb-0002-1"));
    }

    #[test]
    fn a_fleet_burst_holds_from_the_range_start() {
        let fleet = Fleet {
            site: "s".into(),
            epoch: 1,
            lane: Lane::PerEvent,
            reconnects: 0,
        };
        let msgs = fleet
            .batches(&["d1".into(), "d2".into()], 3..=4)
            .expect("batches");
        assert_eq!(msgs.len(), 4);
        assert_eq!(msgs[0].0, "dockline/v1/s/d1/events");
        let b = codec::decode::<Batch>(&msgs[3].1).expect("decode");
        assert_eq!((b.first_held, b.events[0].seq), (3, 4));
    }
}
