//! A scripted fake collector on a real MQTT broker: it subscribes to one
//! device's `events` topic, counts every event each time it crosses the
//! link, stores it (a set of sequences) and answers with the collector's
//! ack (contiguous floor plus `also` ranges), as the real collector does.
//! It also receives media on the `media` channel with the protocol's
//! [`Reassembly`] (as the collector will), answers every chunk with a
//! [`MediaAck`], can drop chosen chunks (a cut link), and records when each
//! medium's first chunk came relative to the events it had stored.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dockline_protocol::media::{MediaAck, MediaChunk, MediaHash, MediaState, Offer, Reassembly};
use dockline_protocol::{
    Ack, Batch, Channel, DeviceId, MediaChannel, PROTOCOL_VERSION, SiteId, Topic, codec,
};
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
    /// Media being received or stored, with their committed bytes.
    pub media: BTreeMap<MediaHash, (Reassembly, Vec<u8>)>,
    /// Chunk data bytes received per medium (taken or not).
    pub media_bytes_in: BTreeMap<MediaHash, u64>,
    /// Chunks received in all (taken or not), dropped ones included.
    pub media_chunks_in: u64,
    /// Chunk numbers (counting from 1 over all media) to drop unanswered.
    pub drop_chunks: BTreeSet<u64>,
    /// The highest stored sequence when a medium's first chunk arrived.
    pub stored_when_media_began: BTreeMap<MediaHash, u64>,
}

impl Seen {
    /// The stored bytes of a complete medium.
    pub fn medium(&self, hash: &MediaHash) -> Option<&[u8]> {
        self.media
            .get(hash)
            .filter(|(r, _)| r.is_complete())
            .map(|(_, b)| b.as_slice())
    }
}

/// The fake collector; stops when dropped.
pub struct FakeCollector {
    /// What it saw so far.
    pub seen: Arc<Mutex<Seen>>,
    task: tokio::task::JoinHandle<()>,
    attach: (AsyncClient, String),
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
        let dev = DeviceId::new(device).expect("device id");
        let site_id = SiteId::new(site).expect("site id");
        let (media, media_ack) = (
            Topic::media(&site_id, &dev, MediaChannel::Media),
            Topic::media(&site_id, &dev, MediaChannel::MediaAck),
        );
        let mut options = MqttOptions::new(format!("fake-collector-{device}"), host, port);
        options.set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut eventloop) = AsyncClient::new(options, 1024);
        let seen = Arc::new(Mutex::new(Seen::default()));
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let state = seen.clone();
        let task = tokio::spawn(async move {
            let mut ready = Some(ready_tx);
            let mut subacks = 0;
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        for t in [&events, &media] {
                            client
                                .try_subscribe(t.clone(), QoS::AtLeastOnce)
                                .expect("subscribe");
                        }
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        subacks += 1;
                        if subacks == 2
                            && let Some(tx) = ready.take()
                        {
                            let _ = tx.send(());
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) if p.topic == media => {
                        let chunk: MediaChunk = codec::decode(&p.payload).expect("a valid chunk");
                        let answer = receive_chunk(&mut state.lock().expect("lock"), &dev, &chunk);
                        if let Some(a) = answer {
                            let bytes = codec::encode(&a).expect("encode media ack");
                            client
                                .try_publish(media_ack.clone(), QoS::AtLeastOnce, false, bytes)
                                .expect("publish media ack");
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
        let attach = client_for_attach(host, port, device, media_ack_topic(site, device));
        FakeCollector { seen, task, attach }
    }

    /// Tells the agent the ERP attached `hash` to `doc` (as the collector
    /// will once its adapter did).
    pub async fn attach(&self, device: &str, hash: MediaHash, doc: &str) {
        let len = self
            .seen
            .lock()
            .expect("lock")
            .media
            .get(&hash)
            .map(|(r, _)| r.len())
            .expect("a medium this collector has");
        let ack = MediaAck {
            v: PROTOCOL_VERSION,
            device: DeviceId::new(device).expect("id"),
            hash,
            have: len,
            at: None,
            state: MediaState::Attached {
                doc: Some(doc.into()),
            },
            signed: None,
        };
        let (client, topic) = &self.attach;
        client
            .publish(
                topic.clone(),
                QoS::AtLeastOnce,
                false,
                codec::encode(&ack).expect("encode"),
            )
            .await
            .expect("publish attached");
    }
}

fn media_ack_topic(site: &str, device: &str) -> String {
    Topic::media(
        &SiteId::new(site).expect("site id"),
        &DeviceId::new(device).expect("device id"),
        MediaChannel::MediaAck,
    )
}

/// A second connection for acks sent outside the chunk flow.
fn client_for_attach(host: &str, port: u16, device: &str, topic: String) -> (AsyncClient, String) {
    let options = MqttOptions::new(format!("fake-erp-{device}"), host, port);
    let (client, mut eventloop) = AsyncClient::new(options, 16);
    // Polled until the test's runtime ends.
    tokio::spawn(async move {
        loop {
            if eventloop.poll().await.is_err() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });
    (client, topic)
}

/// A chunk the way a collector takes it: offer it to the medium's
/// reassembly, commit what it says, answer with `have`. `None`: dropped.
fn receive_chunk(s: &mut Seen, device: &DeviceId, chunk: &MediaChunk) -> Option<MediaAck> {
    s.media_chunks_in += 1;
    if s.drop_chunks.contains(&s.media_chunks_in) {
        return None;
    }
    *s.media_bytes_in.entry(chunk.hash).or_default() += chunk.data.len() as u64;
    let stored_up_to = s.stored.iter().next_back().copied().unwrap_or(0);
    s.stored_when_media_began
        .entry(chunk.hash)
        .or_insert(stored_up_to);
    let (r, bytes) = s.media.entry(chunk.hash).or_insert_with(|| {
        (
            Reassembly::start(chunk, u64::MAX).expect("a medium within the caps"),
            Vec::new(),
        )
    });
    match r.offer(chunk) {
        Ok(Offer::Append { at, bytes: b }) | Ok(Offer::Complete { at, bytes: b }) => {
            assert_eq!(at, bytes.len() as u64, "written at the prefix end");
            bytes.extend_from_slice(b);
        }
        Ok(Offer::Ignored(_)) => {}
        Err(e) => panic!("fake collector: {e}"),
    }
    Some(r.ack(device.clone(), Some(chunk.off)))
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
