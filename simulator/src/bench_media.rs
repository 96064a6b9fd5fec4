//! Bytes on the link (issue 14): how often an event crosses MQTT, and
//! proof-of-delivery media from a real agent process through a real broker
//! to a reference receiver and to the real collector.
//!
//! | name | what | baseline |
//! |---|---|---|
//! | `wire_duplicate_ratio` | extra crossings per event (0: each event crossed once) for events posted one at a time to a real agent with no fault | — (0.40–0.65 before issue 14) |
//! | `wire_link_bytes_per_event` | batch bytes on the link per event in the same run | the CBOR envelope bytes of those events (1.0: no overhead, no repeats) |
//! | `wire_link_bytes_per_medium` | media-topic bytes on the link per photo (chunk framing included) | the photo's own bytes |
//! | `media_throughput` | MB/s of a backlog of photos from the agent's media lane to stored and verified by hash at a reference receiver | raw QoS 1 publishes of the same bytes in the same chunk size from one client, same run |
//! | `media_throughput_collector` | the same backlog to the real collector (stored, verified, acked), same broker | the same raw publishes |
//! | `media_resume_bytes` | bytes sent again for a photo whose 5th chunk the link cuts | — (the chunk size and window bound it) |
//!
//! # What is timed
//!
//! The photos and their delivery events are posted first with the agent's
//! link `metered` (media held, events sent), and the clock starts when
//! `POST /v1/link {"metered": false}` releases the media: the figure is the
//! media lane's, not the agent's HTTP intake and fsyncs nor the wait for
//! each event's ack, which the first version of this bench timed too (its
//! 0.01 of raw mixed all of them).
//!
//! The reference receiver is in this process: it acks batches as the
//! collector does and reassembles media with the protocol's [`Reassembly`]
//! (hash checked at the end), answering each chunk with a [`MediaAck`],
//! at once and without storing: the ceiling of the agent's side alone.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};
use dockline_protocol::media::{MediaAck, MediaChunk, MediaHash, Offer, Reassembly};
use dockline_protocol::{
    Ack, Batch, Channel, DeviceId, MediaChannel, PROTOCOL_VERSION, SiteId, Topic, codec,
};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::json;

use crate::bench::{BenchOptions, Figure, agent_status};
use crate::demo::SITE;
use crate::mock_erp::ErpConfig;
use crate::stack::{self, AgentNode, Broker, MqttAddr, Programs, Services, StackSpec};

const DEVICE: &str = "bench-media";
/// The agent of the real-collector figure.
const DEVICE_COLLECTOR: &str = "bench-media-c";
const CHUNK: usize = 64 * 1024;

/// What the reference receiver saw.
#[derive(Default)]
struct Seen {
    crossings: BTreeMap<u64, u32>,
    envelope_bytes: BTreeMap<u64, u64>,
    stored: BTreeSet<u64>,
    batch_bytes: u64,
    media: BTreeMap<MediaHash, Reassembly>,
    media_bytes_in: BTreeMap<MediaHash, u64>,
    media_wire_bytes: u64,
    chunks_in: u64,
    drop_chunk: Option<u64>,
}

/// Connects the reference receiver; returns once it is subscribed.
async fn receiver(broker: SocketAddr) -> Result<Arc<Mutex<Seen>>> {
    let topic = |c| -> Result<String> {
        Ok(Topic::new(SiteId::new(SITE)?, DeviceId::new(DEVICE)?, c).to_string())
    };
    let (site, device) = (SiteId::new(SITE)?, DeviceId::new(DEVICE)?);
    let (events, ack, media, media_ack) = (
        topic(Channel::Events)?,
        topic(Channel::Ack)?,
        Topic::media(&site, &device, MediaChannel::Media),
        Topic::media(&site, &device, MediaChannel::MediaAck),
    );
    let mut options = MqttOptions::new(
        "bench-media-receiver",
        broker.ip().to_string(),
        broker.port(),
    );
    options.set_max_packet_size(1 << 21, 1 << 21);
    let (client, mut eventloop) = AsyncClient::new(options, 4096);
    let seen = Arc::new(Mutex::new(Seen::default()));
    let state = seen.clone();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let mut ready = Some(ready_tx);
        let mut subacks = 0;
        loop {
            let answer = match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    for t in [&events, &media] {
                        let _ = client.try_subscribe(t.clone(), QoS::AtLeastOnce);
                    }
                    None
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    subacks += 1;
                    if subacks == 2
                        && let Some(tx) = ready.take()
                    {
                        let _ = tx.send(());
                    }
                    None
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
                    if p.topic == events {
                        codec::decode::<Batch>(&p.payload)
                            .ok()
                            .and_then(|b| take_batch(&mut s, &b, p.payload.len()))
                            .map(|a| (ack.clone(), codec::encode(&a)))
                    } else {
                        s.media_wire_bytes += p.payload.len() as u64;
                        codec::decode::<MediaChunk>(&p.payload)
                            .ok()
                            .and_then(|c| take_chunk(&mut s, &device, &c))
                            .map(|a| (media_ack.clone(), codec::encode(&a)))
                    }
                }
                Ok(_) => None,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    None
                }
            };
            if let Some((topic, Ok(bytes))) = answer {
                let _ = client.try_publish(topic, QoS::AtLeastOnce, false, bytes);
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(10), ready_rx)
        .await
        .map_err(|_| anyhow!("the reference receiver did not subscribe within 10 s"))??;
    Ok(seen)
}

/// Stores a batch's events; the collector's ack for it.
fn take_batch(s: &mut Seen, batch: &Batch, bytes: usize) -> Option<Ack> {
    s.batch_bytes += bytes as u64;
    for e in &batch.events {
        *s.crossings.entry(e.seq).or_default() += 1;
        if let Ok(b) = codec::encode(e) {
            s.envelope_bytes.insert(e.seq, b.len() as u64);
        }
        s.stored.insert(e.seq);
    }
    for &(lo, hi) in &batch.shed {
        s.stored.extend(lo..=hi);
    }
    let mut up_to = 0;
    while s.stored.contains(&(up_to + 1)) {
        up_to += 1;
    }
    Some(Ack {
        v: PROTOCOL_VERSION,
        device: batch.device.clone(),
        epoch: batch.epoch,
        stored_up_to: Some(up_to),
        also_stored: Vec::new(),
        verdicts: Vec::new(),
        signed: None,
    })
}

/// Offers a chunk to its medium's reassembly; the answer (none: cut).
fn take_chunk(s: &mut Seen, device: &DeviceId, chunk: &MediaChunk) -> Option<MediaAck> {
    s.chunks_in += 1;
    if s.drop_chunk == Some(s.chunks_in) {
        return None;
    }
    *s.media_bytes_in.entry(chunk.hash).or_default() += chunk.data.len() as u64;
    let r = match s.media.entry(chunk.hash) {
        std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
        std::collections::btree_map::Entry::Vacant(e) => {
            e.insert(Reassembly::start(chunk, u64::MAX).ok()?)
        }
    };
    // The bytes themselves are not kept: the reassembly's hash check at the
    // end is what a stored medium proves. A refused chunk is answered too.
    let _taken: Result<Offer<'_>, _> = r.offer(chunk);
    Some(r.ack(device.clone(), Some(chunk.off)))
}

fn lock(s: &Mutex<Seen>) -> std::sync::MutexGuard<'_, Seen> {
    // The receiver task never panics while holding it; take it anyway.
    s.lock().unwrap_or_else(|e| e.into_inner())
}

/// A JPEG-looking photo of `len` bytes that does not compress.
fn photo(len: usize, seed: u64) -> Vec<u8> {
    let mut b = vec![0xff, 0xd8, 0xff, 0xe0];
    let mut x = seed.wrapping_mul(2).wrapping_add(1);
    while b.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        b.extend_from_slice(&x.to_le_bytes());
    }
    b.truncate(len);
    b
}

async fn post_photo(http: &reqwest::Client, api: SocketAddr, img: &[u8], n: usize) -> Result<()> {
    let res = http
        .post(format!("http://{api}/v1/media"))
        .header("content-type", "image/jpeg")
        .body(img.to_vec())
        .send()
        .await?;
    if res.status() != reqwest::StatusCode::CREATED {
        return Err(anyhow!("POST /v1/media answered {}", res.status()));
    }
    let body = json!({"detail": {"delivered": {"received_by": format!("Consignee {n}"), "pieces": 1,
        "photo_ref": format!("sha256:{}", MediaHash::of(img))}}, "refs": {"order": format!("SO-M{n}")}});
    http.post(format!("http://{api}/v1/events"))
        .json(&body)
        .send()
        .await?
        .error_for_status()?;
    Ok(())
}

/// Posts `photos` photos (seeds from `seed`) and their delivery events to
/// a metered agent, waits for the events to be stored, then releases the
/// media and times them until the agent shows them all stored (or
/// attached).
async fn media_backlog(
    http: &reqwest::Client,
    api: SocketAddr,
    photos: usize,
    size: usize,
    seed: u64,
) -> Result<Duration> {
    let held = |s: &serde_json::Value| {
        s["media"]["stored"].as_u64().unwrap_or(0) + s["media"]["attached"].as_u64().unwrap_or(0)
    };
    let before = held(&agent_status(http, api).await?);
    set_metered(http, api, true).await?;
    for n in 0..photos {
        post_photo(http, api, &photo(size, seed + n as u64), n).await?;
    }
    wait_until(
        "the delivery events stored",
        Duration::from_secs(60),
        async || Ok(agent_status(http, api).await?["queued"].as_u64() == Some(0)),
    )
    .await?;
    let want = before + photos as u64;
    set_metered(http, api, false).await?;
    let started = Instant::now();
    wait_until("the photos stored", Duration::from_secs(300), async || {
        Ok(held(&agent_status(http, api).await?) >= want)
    })
    .await?;
    Ok(started.elapsed())
}

/// The backlog of [`media_backlog`] from a fresh agent to a real collector
/// (with the mock ERP its deliveries go to) on `broker`.
async fn collector_backlog(
    programs: &Programs,
    dir: &Path,
    broker: SocketAddr,
    http: &reqwest::Client,
    photos: usize,
    size: usize,
) -> Result<Duration> {
    let services = Services::start(StackSpec {
        programs: programs.clone(),
        dir: dir.join("collector-run"),
        site: SITE.into(),
        broker: Some(MqttAddr::from(broker)),
        erp: ErpConfig::new(stack::webhook_secret(14)),
    })
    .await?;
    let mut config = services.collector_config(&[DEVICE_COLLECTOR.to_string()])?;
    stack::config::simulated_collector(&mut config);
    stack::config::simulated_collector_media(&mut config, &dir.join("collector-run").join("keys"))?;
    let mut stack = services.start_collector(config).await?;
    let mut agent = stack.agent_config(DEVICE_COLLECTOR)?;
    stack::config::simulated_agent(&mut agent);
    agent.uplink.heartbeat_secs = 3600;
    agent.outbox.budget_bytes = 2_000_000_000;
    agent.uplink.metered = true;
    agent.uplink.media_chunk_bytes = CHUNK;
    let api = stack.start_agent(agent).await?.api();
    let took = media_backlog(http, api, photos, size, 5_000).await;
    stack.shutdown(Duration::from_secs(5)).await;
    took
}

/// `POST /v1/link`: hold media (`true`) or let them go.
async fn set_metered(http: &reqwest::Client, api: SocketAddr, metered: bool) -> Result<()> {
    http.post(format!("http://{api}/v1/link"))
        .json(&json!({ "metered": metered }))
        .send()
        .await?
        .error_for_status()?;
    Ok(())
}

async fn wait_until(
    what: &str,
    limit: Duration,
    mut done: impl AsyncFnMut() -> Result<bool>,
) -> Result<Duration> {
    let started = Instant::now();
    while !done().await? {
        if started.elapsed() > limit {
            return Err(anyhow!("{what} not done within {} s", limit.as_secs()));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(started.elapsed())
}

/// Raw QoS 1 publishes of `bytes` in chunks of [`CHUNK`] from one client;
/// bytes per second.
async fn raw_chunk_rate(broker: SocketAddr, bytes: usize) -> Result<f64> {
    let mut options = MqttOptions::new("bench-media-raw", broker.ip().to_string(), broker.port());
    options.set_max_packet_size(CHUNK + 1024, CHUNK + 1024);
    options.set_inflight(24);
    let (client, mut eventloop) = AsyncClient::new(options, 64);
    let messages = bytes.div_ceil(CHUNK);
    let payload = photo(CHUNK, 3);
    let started = Instant::now();
    let publisher = tokio::spawn(async move {
        for _ in 0..messages {
            client
                .publish("bench/raw-media", QoS::AtLeastOnce, false, payload.clone())
                .await?;
        }
        Ok::<_, rumqttc::ClientError>(client)
    });
    let mut acked = 0;
    while acked < messages {
        match tokio::time::timeout(Duration::from_secs(30), eventloop.poll()).await {
            Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => acked += 1,
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(anyhow!("raw media baseline: {e}")),
            Err(_) => return Err(anyhow!("raw media baseline: no progress for 30 s")),
        }
    }
    let rate = (messages * CHUNK) as f64 / started.elapsed().as_secs_f64();
    publisher.await??;
    Ok(rate)
}

/// The figures of this module that `opts` wants (none: nothing is started).
pub async fn figures(opts: &BenchOptions, dir: &Path) -> Result<Vec<Figure>> {
    let names = [
        "wire_duplicate_ratio",
        "wire_link_bytes_per_event",
        "wire_link_bytes_per_medium",
        "media_throughput",
        "media_throughput_collector",
        "media_resume_bytes",
    ];
    if !names.iter().any(|n| opts.wants(n)) {
        return Ok(Vec::new());
    }
    let mdir = dir.join("media");
    let adir = mdir.join("agent");
    std::fs::create_dir_all(&adir)?;
    let programs = Programs::simulator(&opts.exe).with_agent_binary_beside();
    let _broker_child = Broker::embedded(&programs, &mdir).await?;
    let broker = _broker_child
        .addr()
        .socket_addr()
        .ok_or_else(|| anyhow::anyhow!("the embedded broker has no IP address"))?;
    let seen = receiver(broker).await?;
    // The reference receiver does not sign its acks: the agent runs without
    // the simulation's verify key (one with it would rightly ignore them).
    let mut config = stack::config::agent(SITE, DEVICE, &adir, &MqttAddr::from(broker))?;
    stack::config::simulated_agent(&mut config);
    config.uplink.heartbeat_secs = 3600;
    config.outbox.budget_bytes = 2_000_000_000;
    // Media are held until a backlog is queued, then released at once.
    config.uplink.metered = true;
    config.uplink.media_chunk_bytes = CHUNK;
    let mut agent = AgentNode::new("media-agent", config, &programs, &mdir);
    let api = agent.start().await?;
    let http = reqwest::Client::new();
    let mut out = Vec::new();

    // One event at a time, as a handheld posts them, no fault.
    let events = if opts.quick { 500 } else { 5_000 };
    for i in 0..events {
        let body = json!({"detail": {"picked": {"item": "09506000134352", "quantity": 1}},
            "refs": {"order": format!("SO-{}", i / 10)}});
        http.post(format!("http://{api}/v1/events"))
            .json(&body)
            .send()
            .await?
            .error_for_status()?;
    }
    wait_until("the events stored", Duration::from_secs(60), async || {
        Ok(agent_status(&http, api).await?["queued"].as_u64() == Some(0))
    })
    .await?;
    {
        let s = lock(&seen);
        let crossings: u64 = s.crossings.values().map(|n| *n as u64).sum();
        let twice = s.crossings.values().filter(|n| **n > 1).count();
        let envelope: u64 = s.envelope_bytes.values().sum();
        let n = s.crossings.len() as f64;
        out.push(Figure {
            name: "wire_duplicate_ratio".into(),
            value: (crossings as f64 - n) / n,
            unit: "extra crossings/event".into(),
            baseline: None,
            ratio: None,
            target: "0 with no fault (issue 14: 0.40-0.65 before)".into(),
            detail: format!(
                "{events} picks posted one at a time to a real agent, counted at a reference receiver on the same broker: {crossings} crossings, {twice} events more than once"
            ),
        });
        let per_event = s.batch_bytes as f64 / n;
        let envelope_per_event = envelope as f64 / n;
        out.push(Figure {
            name: "wire_link_bytes_per_event".into(),
            value: per_event,
            unit: "bytes/event".into(),
            baseline: Some(envelope_per_event),
            ratio: Some(envelope_per_event / per_event),
            target: "reported (batch framing and repeats over the bare CBOR envelopes)".into(),
            detail: format!(
                "{} batch bytes for {events} events (live lane, mostly one event per batch), envelopes alone {envelope_per_event:.0} bytes",
                s.batch_bytes
            ),
        });
    }

    // A backlog of photos with their delivery events, released at once.
    let photos = if opts.quick { 8 } else { 32 };
    let size = 600_000;
    let total = photos * size;
    let (took, wire) = {
        let before = lock(&seen).media_wire_bytes;
        let took = media_backlog(&http, api, photos, size, 100).await?;
        (took, lock(&seen).media_wire_bytes - before)
    };
    let complete = lock(&seen)
        .media
        .values()
        .filter(|r| r.is_complete())
        .count();
    if complete != photos {
        return Err(anyhow!(
            "{complete} of {photos} photos complete at the receiver"
        ));
    }
    let rate = total as f64 / took.as_secs_f64();
    let raw = raw_chunk_rate(broker, total).await?;
    out.push(Figure {
        name: "media_throughput".into(),
        value: rate / 1e6,
        unit: "MB/s".into(),
        baseline: Some(raw / 1e6),
        ratio: Some(rate / raw),
        target: "reported beside raw publishes of the same bytes (issue 14)".into(),
        detail: format!(
            "{photos} photos of {size} bytes queued with their delivery events on a real agent ([uplink] media_chunk_bytes = {CHUNK}, unpaced, held by `metered` until released), from the release until every one is stored and hash-checked at a reference receiver that acks at once ({:.2} s); baseline: one client publishing the same bytes in {CHUNK}-byte QoS 1 messages, up to 24 in flight",
            took.as_secs_f64()
        ),
    });
    out.push(Figure {
        name: "wire_link_bytes_per_medium".into(),
        value: wire as f64 / photos as f64,
        unit: "bytes/photo".into(),
        baseline: Some(size as f64),
        ratio: Some(size as f64 * photos as f64 / wire as f64),
        target: "reported (chunk framing and re-sends over the photo's bytes)".into(),
        detail: format!(
            "{wire} media-topic bytes for {photos} photos of {size} bytes with no fault ({CHUNK}-byte chunks)"
        ),
    });

    // A cut mid-upload: the link loses the 5th chunk of the next photo.
    {
        let mut s = lock(&seen);
        s.drop_chunk = Some(s.chunks_in + 5);
    }
    let img = photo(size, 999);
    post_photo(&http, api, &img, photos).await?;
    wait_until(
        "the cut photo stored",
        Duration::from_secs(60),
        async || {
            Ok(agent_status(&http, api).await?["media"]["stored"].as_u64()
                == Some(photos as u64 + 1))
        },
    )
    .await?;
    let resent = lock(&seen)
        .media_bytes_in
        .get(&MediaHash::of(&img))
        .copied()
        .unwrap_or(0)
        .saturating_sub(size as u64);
    out.push(Figure {
        name: "media_resume_bytes".into(),
        value: resent as f64,
        unit: "bytes".into(),
        baseline: None,
        ratio: None,
        target: "at most the chunks in flight after the cut (window 4 x chunk)".into(),
        detail: format!(
            "a {size}-byte photo whose 5th {CHUNK}-byte chunk the link lost; the agent resumed from the receiver's answer to the next chunk"
        ),
    });
    agent.terminate(Duration::from_secs(5)).await;
    if opts.wants("media_throughput_collector") {
        let took = collector_backlog(&programs, &mdir, broker, &http, photos, size).await?;
        let rate = total as f64 / took.as_secs_f64();
        out.push(Figure {
            name: "media_throughput_collector".into(),
            value: rate / 1e6,
            unit: "MB/s".into(),
            baseline: Some(raw / 1e6),
            ratio: Some(rate / raw),
            target: "reported beside raw publishes of the same bytes (issue 14)".into(),
            detail: format!(
                "the same backlog ({photos} photos of {size} bytes, released at once) from a real agent to the real collector (SQLite, media stored as files, acked after the store), until the agent shows every one stored ({:.2} s); baseline: the raw publishes of media_throughput",
                took.as_secs_f64()
            ),
        });
    }
    Ok(out.into_iter().filter(|f| opts.wants(&f.name)).collect())
}
