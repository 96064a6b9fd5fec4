//! The `fleet_reconnect_burst` figure of `dockline-sim bench`: what a fleet
//! does after a broker outage, measured end to end.
//!
//! N devices each hold K new one-event batches (what agents with
//! `max_inflight_batches = K` send the moment they reconnect). All N × K
//! batches are published at once, QoS 1, from [`PUBLISHERS`] MQTT clients,
//! to the bench's broker (a child `dockline-sim broker`), and a real
//! collector child (SQLite inbox, those N devices configured) stores and
//! acks them. The figure is messages per second from the first publish
//! until every device's application ack (`dockline/v1/{site}/+/ack`,
//! decoded as [`dockline_protocol::Ack`]) says `stored_up_to >= K`: stored
//! *and* acked, not merely PUBACKed.
//!
//! Like agents, a device not acked up to K within the agent's ack timeout
//! ([`ACK_TIMEOUT`], the simulated agents' `ack_timeout_ms`) sends again
//! everything above its ack, claiming to hold from there: a broker may drop
//! part of a burst at a queue limit. Those resends are counted in the
//! figure's detail, and the time they cost is in the figure.
//!
//! Beside it, in the same run and against the same broker: the same N × K
//! messages published QoS 1 from as many clients to topics nobody reads,
//! until every PUBACK: the broker's raw rate, the ceiling (median of
//! `RAW_ROUNDS`, each lasting only hundredths of a second).
//!
//! Every event belongs to one order lane and the ERP address has no
//! listener, so the collector's delivery backs off on one lane and the
//! figure is ingest's (as in `agent_backlog_drain`).
//!
//! Before the clock starts, a probe device publishes until its own ack
//! comes back: the collector has subscribed and its ack path works, so no
//! burst message goes to a broker with no subscriber yet.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use dockline_protocol::{
    Ack, Batch, BusinessEvent, DeviceId, Envelope, EventDetail, EventId, PROTOCOL_VERSION, Payload,
    Priority, References, TimeSource,
};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

use crate::bench::Figure;
use crate::demo::{SITE, start_broker, start_collector};

/// MQTT clients the burst (and the raw baseline) is published from.
pub const PUBLISHERS: usize = 10;
/// How long a simulated device waits for its ack before sending again (the
/// simulated agents' `[uplink] ack_timeout_ms`).
pub const ACK_TIMEOUT: Duration = Duration::from_secs(3);
/// Rounds of the raw baseline (its median is reported).
const RAW_ROUNDS: usize = 3;
/// The webhook secret of this figure's collector (its ERP has no listener).
const SECRET: &str = "whsec_YmVuY2gtYnVyc3Qtc2VjcmV0LWJ1cnN0LXNlY3JldA==";
/// The epoch of the burst's sequences.
const EPOCH: u64 = 1_764_000_000_000;
/// The device that checks the collector listens before the clock starts.
const PROBE: &str = "burst-probe";

/// Devices and batches per device: (300, 4) quick, (1000, 4) full.
pub fn sizes(quick: bool) -> (usize, u64) {
    if quick { (300, 4) } else { (1_000, 4) }
}

/// Measures the figure with `devices` × `batches` one-event batches; child
/// processes are started from `exe`, their files and logs go under `dir`.
pub async fn fleet_reconnect_burst(
    exe: &Path,
    dir: &Path,
    devices: usize,
    batches: u64,
) -> Result<Figure> {
    let bdir = dir.join("burst");
    std::fs::create_dir_all(&bdir).with_context(|| format!("cannot create {}", bdir.display()))?;
    let ids: Vec<String> = (0..devices).map(|i| format!("fb-{i:04}")).collect();
    let (_broker, broker) = start_broker(exe, &bdir, "127.0.0.1:0".parse()?, 1).await?;
    let erp: SocketAddr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?
    };
    let mut configured = ids.clone();
    configured.push(PROBE.into());
    let (collector, _api) = start_collector(exe, &bdir, broker, &configured, erp, SECRET).await?;

    let acks = AckWatch::start(broker, "bench-burst-acks").await?;
    probe(broker, &acks).await.with_context(|| {
        format!(
            "the collector never acked the probe batch; its log is in {}",
            bdir.display()
        )
    })?;

    let topic = |d: &str| format!("dockline/v1/{SITE}/{d}/events");
    let mut burst = Vec::with_capacity(devices * batches as usize);
    for seq in 1..=batches {
        for d in &ids {
            burst.push((topic(d), one_event_batch(d, 1, seq)?));
        }
    }
    let messages = burst.len();
    let bound = Duration::from_secs(if devices > 500 { 300 } else { 120 });

    let started = Instant::now();
    publish_spread(broker, "bench-burst", burst).await?;
    let mut resent = 0usize;
    let mut rounds = 0usize;
    let elapsed = loop {
        let wait_until = Instant::now() + ACK_TIMEOUT;
        let mut done = None;
        while Instant::now() < wait_until {
            if ids.iter().all(|d| acks.mark(d) >= batches) {
                done = Some(started.elapsed());
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if let Some(elapsed) = done {
            break elapsed;
        }
        if started.elapsed() > bound {
            let behind: Vec<_> = ids
                .iter()
                .map(|d| (d, acks.mark(d)))
                .filter(|(_, m)| *m < batches)
                .collect();
            return Err(anyhow!(
                "{} of {devices} devices not acked up to {batches} within {}s ({resent} batches sent again), e.g. {:?}; logs in {}",
                behind.len(),
                bound.as_secs(),
                &behind[..behind.len().min(5)],
                bdir.display()
            ));
        }
        // As agents: everything above the ack, again.
        let mut again = Vec::new();
        for d in &ids {
            let floor = acks.mark(d);
            for seq in floor + 1..=batches {
                again.push((topic(d), one_event_batch(d, floor + 1, seq)?));
            }
        }
        resent += again.len();
        rounds += 1;
        publish_spread(broker, &format!("bench-burst-r{rounds}"), again).await?;
    };
    let rate = messages as f64 / elapsed.as_secs_f64();

    // The ceiling: the same messages to topics nobody reads.
    let raw_messages: Vec<_> = (1..=batches)
        .flat_map(|seq| ids.iter().map(move |d| (d, seq)))
        .map(|(d, seq)| Ok((format!("bench/raw-burst/{d}"), one_event_batch(d, 1, seq)?)))
        .collect::<Result<_>>()?;
    // A few hundredths of a second each: the median of three.
    let mut raw_times = Vec::with_capacity(RAW_ROUNDS);
    for round in 0..RAW_ROUNDS {
        let raw_started = Instant::now();
        publish_spread(
            broker,
            &format!("bench-raw-burst{round}"),
            raw_messages.clone(),
        )
        .await?;
        raw_times.push(raw_started.elapsed());
    }
    raw_times.sort();
    let raw_elapsed = raw_times[RAW_ROUNDS / 2];
    let raw = messages as f64 / raw_elapsed.as_secs_f64();
    drop(acks);
    collector.terminate(Duration::from_secs(5)).await;

    Ok(Figure {
        name: "fleet_reconnect_burst".into(),
        value: rate,
        unit: "messages/s".into(),
        baseline: Some(raw),
        ratio: Some(rate / raw),
        target: "every batch stored and acked, none stalled (before issue 12: 200 x 4 stalled)"
            .into(),
        detail: format!(
            "{devices} devices x {batches} one-event batches ({messages} messages) published at once from {PUBLISHERS} clients through the bench broker to a real collector (SQLite inbox); {:.2} s from the first publish to every device acked up to {batches}; {resent} batches sent again in {rounds} rounds after a {} s ack timeout, as agents do; baseline: the same {messages} messages QoS 1 from {PUBLISHERS} clients to topics nobody reads, median of {RAW_ROUNDS} rounds {:.3} s",
            elapsed.as_secs_f64(),
            ACK_TIMEOUT.as_secs(),
            raw_elapsed.as_secs_f64(),
        ),
    })
}

/// Publishes one batch of the probe device until its ack arrives (30 s).
async fn probe(broker: SocketAddr, acks: &AckWatch) -> Result<()> {
    let started = Instant::now();
    let message = (
        format!("dockline/v1/{SITE}/{PROBE}/events"),
        one_event_batch(PROBE, 1, 1)?,
    );
    while started.elapsed() < Duration::from_secs(30) {
        publish_spread(broker, "bench-burst-probe", vec![message.clone()]).await?;
        let asked = Instant::now();
        while asked.elapsed() < Duration::from_millis(500) {
            if acks.mark(PROBE) >= 1 {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    Err(anyhow!("no ack for {PROBE} within 30 s"))
}

/// A distinct, UUIDv7-shaped event id for `(device, seq)`.
fn event_id(device: &str, seq: u64) -> EventId {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in device.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&h.to_be_bytes());
    id[8..].copy_from_slice(&seq.to_be_bytes());
    id[6] = (id[6] & 0x0f) | 0x70;
    id[8] = (id[8] & 0x3f) | 0x80;
    EventId(id)
}

/// The CBOR of a one-event batch at `seq`, holding from `first_held`; every
/// event a pick of the one order `SO-BURST`.
fn one_event_batch(device: &str, first_held: u64, seq: u64) -> Result<Vec<u8>> {
    let id = DeviceId::new(device).map_err(|e| anyhow!("device id {device:?}: {e}"))?;
    let envelope = Envelope {
        v: PROTOCOL_VERSION,
        device: id.clone(),
        epoch: EPOCH,
        seq,
        id: event_id(device, seq),
        captured_ms: 1_764_000_000_000,
        time_source: TimeSource::Ntp,
        priority: Priority::MustDeliver,
        payload: Payload::Event(BusinessEvent {
            detail: EventDetail::Picked {
                item: "09506000134352".into(),
                quantity: 1,
                lot: None,
            },
            refs: References {
                order: Some("SO-BURST".into()),
                ..References::default()
            },
        }),
    };
    let batch = Batch {
        v: PROTOCOL_VERSION,
        device: id,
        epoch: EPOCH,
        first_held,
        events: vec![envelope],
        shed: Vec::new(),
    };
    Ok(dockline_protocol::encode(&batch)?)
}

fn options(broker: SocketAddr, id: &str) -> MqttOptions {
    let mut o = MqttOptions::new(id, broker.ip().to_string(), broker.port());
    o.set_keep_alive(Duration::from_secs(10));
    o.set_max_packet_size(1 << 20, 1 << 20);
    o.set_inflight(100);
    o
}

/// Publishes `messages` QoS 1 from [`PUBLISHERS`] clients at once
/// (`{tag}-{i}`), each in its order, until every PUBACK.
async fn publish_spread(
    broker: SocketAddr,
    tag: &str,
    messages: Vec<(String, Vec<u8>)>,
) -> Result<()> {
    let clients = PUBLISHERS.min(messages.len().max(1));
    let mut groups: Vec<Vec<(String, Vec<u8>)>> = vec![Vec::new(); clients];
    for (i, m) in messages.into_iter().enumerate() {
        groups[i % clients].push(m);
    }
    let tasks: Vec<_> = groups
        .into_iter()
        .enumerate()
        .map(|(i, group)| tokio::spawn(publish_all(broker, format!("{tag}-{i}"), group)))
        .collect();
    for t in tasks {
        t.await.map_err(|e| anyhow!("publisher task: {e}"))??;
    }
    Ok(())
}

/// One client: publishes `messages` (up to 100 in flight) and waits for
/// every PUBACK; 30 s without one is an error.
async fn publish_all(
    broker: SocketAddr,
    id: String,
    messages: Vec<(String, Vec<u8>)>,
) -> Result<()> {
    let (client, mut eventloop) = AsyncClient::new(options(broker, &id), 256);
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
    while acked < n {
        match tokio::time::timeout(Duration::from_secs(30), eventloop.poll()).await {
            Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => acked += 1,
            Ok(Ok(_)) => {}
            // A connection the broker reset under the burst: the next poll
            // reconnects and rumqttc sends the unacknowledged publishes
            // again, as an agent would (the collector drops repeats).
            Ok(Err(e)) if resets < 5 => {
                resets += 1;
                tracing::debug!(publisher = %id, error = %e, "publisher reconnects");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Ok(Err(e)) => return Err(anyhow!("publisher {id}: {e} after {acked} of {n} PUBACKs")),
            Err(_) => {
                return Err(anyhow!(
                    "publisher {id}: no PUBACK for 30 s ({acked} of {n})"
                ));
            }
        }
    }
    let client = feeder.await.map_err(|e| anyhow!("feeder of {id}: {e}"))??;
    client.disconnect().await.ok();
    // Let the DISCONNECT go out.
    let _ = tokio::time::timeout(Duration::from_millis(200), eventloop.poll()).await;
    Ok(())
}

/// The newest `stored_up_to` of every application ack on the site's ack
/// topics, per device; the subscriber stops when this is dropped.
struct AckWatch {
    marks: Arc<Mutex<HashMap<String, u64>>>,
    task: tokio::task::JoinHandle<()>,
}

impl AckWatch {
    /// Subscribes as client `id` and returns once the broker confirmed it.
    async fn start(broker: SocketAddr, id: &str) -> Result<Self> {
        let (client, mut eventloop) = AsyncClient::new(options(broker, id), 16);
        client
            .subscribe(format!("dockline/v1/{SITE}/+/ack"), QoS::AtLeastOnce)
            .await?;
        loop {
            match tokio::time::timeout(Duration::from_secs(10), eventloop.poll()).await {
                Ok(Ok(Event::Incoming(Packet::SubAck(_)))) => break,
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(anyhow!("ack watcher: {e}")),
                Err(_) => return Err(anyhow!("ack watcher: no SUBACK within 10 s")),
            }
        }
        let marks = Arc::new(Mutex::new(HashMap::new()));
        let seen = Arc::clone(&marks);
        let task = tokio::spawn(async move {
            // Keeps the client (and so the request channel) alive.
            let _client = client;
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let Ok(ack) = dockline_protocol::decode::<Ack>(&p.payload) else {
                            continue;
                        };
                        if let Some(up_to) = ack.stored_up_to
                            && let Ok(mut m) = seen.lock()
                        {
                            let e = m.entry(ack.device.as_str().to_owned()).or_insert(0);
                            *e = (*e).max(up_to);
                        }
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        Ok(Self { marks, task })
    }

    /// The newest `stored_up_to` acked to `device` (0 if none).
    fn mark(&self, device: &str) -> u64 {
        self.marks
            .lock()
            .map(|m| m.get(device).copied().unwrap_or(0))
            .unwrap_or(0)
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
    fn burst_batches_decode_with_distinct_ids_and_the_claimed_hold() {
        let a = one_event_batch("fb-0001", 1, 1).expect("encode");
        let b = one_event_batch("fb-0001", 2, 2).expect("encode");
        let c = one_event_batch("fb-0002", 1, 1).expect("encode");
        let decode = |bytes: &[u8]| dockline_protocol::decode::<Batch>(bytes).expect("decode");
        let (a, b, c) = (decode(&a), decode(&b), decode(&c));
        assert_eq!((a.first_held, a.events[0].seq), (1, 1));
        assert_eq!((b.first_held, b.events[0].seq), (2, 2));
        let ids = [a.events[0].id, b.events[0].id, c.events[0].id];
        assert!(ids[0] != ids[1] && ids[0] != ids[2] && ids[1] != ids[2]);
        assert_eq!(sizes(true), (300, 4));
        assert_eq!(sizes(false), (1_000, 4));
    }
}
