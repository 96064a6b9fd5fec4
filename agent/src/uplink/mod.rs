//! The MQTT uplink: publishes outbox batches in sequence order and applies the
//! collector's acks and verdicts.
//!
//! Two tasks: `pump` polls rumqttc's event loop (which must be polled all the
//! time for anything to move, including our own publishes) and forwards what
//! happens; `run` owns the [`UplinkState`] and the outbox calls. Publishing
//! uses `try_publish`, so a full request channel during an outage never blocks
//! the loop that must notice the outage.
//!
//! The collector's gap audit may ask on the device's `cmd` topic for
//! sequences it is missing ([`dockline_protocol::Resend`]): the backlog lane
//! rewinds to the first of them (what the outbox holds goes out again in
//! order), and whatever the outbox no longer holds, or an epoch that is not
//! this outbox's, is reported gone in a batch with no events whose `shed`
//! lists it, so the collector stops waiting. A command is obeyed only when
//! [`command::CommandVerifier`] accepts it (signed by the collector's key,
//! for this device, not expired, its nonce not obeyed before); refusals are
//! logged and counted in [`LinkStatus::commands`].
//!
//! The agent answers only for sequences it assigned: a resend request
//! entirely above its next sequence is refused (counted as
//! `resend_beyond_assigned` in [`LinkStatus::acks`]), and ranges are clamped
//! to what it assigned before anything is reported gone. Sequences at or
//! below its ack floor are reported gone explicitly (they were acked and
//! deleted), since the collector believes a `held` claim only up to what it
//! stores. With a verify key, acks are acted on only when signed by the
//! collector ([`command::CommandVerifier::open_ack`]).

pub mod command;
pub mod media;
pub mod state;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dockline_protocol::batch::{MAX_RANGES, uncovered};
use dockline_protocol::codec::{self, MAX_MESSAGE_BYTES};
use dockline_protocol::status::MAX_HEARTBEAT_DEVICES;
use dockline_protocol::{
    Ack, Batch, Channel, ClassQueue, Command, DeviceHealth, DropCount, Envelope, MediaChannel,
    MediaHealth, PROTOCOL_VERSION, Priority, QueueHealth, Resend, Status, StatusKind, Topic,
    VerdictsWanted,
};
use rand::Rng;
use rumqttc::{AsyncClient, Event, EventLoop, LastWill, Packet, QoS};
use tokio::sync::mpsc;

use crate::config::Config;
use crate::outbox::media::{MediaStore, MediaTotals, Progress};
use crate::outbox::{Chunk, Outbox, QueueStatus};
use dockline_host::clock::now_ms;
use dockline_protocol::media::{MediaAck, MediaChunk, MediaHash, MediaState, MediaType};
pub use media::{AckEffect, MediaLane, media_allowed};
pub use state::{Lane, UplinkState};

/// Link health shared with the local API.
#[derive(Debug, Default)]
pub struct LinkStatus {
    /// Whether the broker connection is up.
    pub connected: AtomicBool,
    /// Successful connects since start.
    pub connects: AtomicU64,
    /// Resends forced by a missing application ack.
    pub ack_timeouts: AtomicU64,
    /// Commands from the collector obeyed and refused, per reason.
    pub commands: command::CommandCounters,
    /// Acks acted on and refused, per reason, and resend requests refused
    /// for asking beyond what this agent assigned.
    pub acks: command::AckCounters,
    /// Media bytes published (chunks' data).
    pub media_sent_bytes: AtomicU64,
    /// Of those, bytes published again after a loss, timeout or reconnect.
    pub media_resent_bytes: AtomicU64,
    /// Media acks from the collector that could not be read or were not
    /// for this device.
    pub media_acks_refused: AtomicU64,
    /// The handheld declared the link unmetered for now (`POST /v1/link`):
    /// a metered device sends media anyway.
    pub unmetered_now: AtomicBool,
}

enum LinkEvent {
    Connected,
    Disconnected(String),
    Message(String, Vec<u8>),
}

/// Capped exponential backoff with full jitter (AWS architecture blog's
/// "full jitter"): a random delay between 0 and min(max, base·2^attempt).
pub fn full_jitter(base: Duration, max: Duration, attempt: u32) -> Duration {
    let cap = base.saturating_mul(1u32 << attempt.min(16)).min(max);
    let ms = cap.as_millis() as u64;
    Duration::from_millis(if ms == 0 {
        0
    } else {
        rand::rng().random_range(0..=ms)
    })
}

/// Why a connection was dropped on purpose.
const ACK_TIMEOUT_DROP: &str =
    "no ack from the collector within the ack timeout; dropped the connection to start a fresh one";

async fn pump(
    mut eventloop: EventLoop,
    tx: mpsc::Sender<LinkEvent>,
    mut reconnect: mpsc::Receiver<()>,
    base: Duration,
    max: Duration,
) {
    let mut said_goodbye = false;
    let mut failures = 0u32;
    loop {
        let polled = tokio::select! {
            biased;
            Some(()) = reconnect.recv() => {
                // A silently dead TCP path looks healthy to rumqttc until the
                // keep-alive runs out; the missing application ack noticed it
                // first. Drop the socket (unacknowledged MQTT packets move to
                // rumqttc's pending list) so the next poll connects afresh.
                // With no connection up (connecting, backing off) there is
                // nothing to drop: the next ConnAck resends anyway.
                if eventloop.network.is_some() {
                    eventloop.clean();
                    if tx.send(LinkEvent::Disconnected(ACK_TIMEOUT_DROP.into())).await.is_err() {
                        return;
                    }
                }
                continue;
            }
            polled = eventloop.poll() => polled,
        };
        let event = match polled {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                failures = 0;
                LinkEvent::Connected
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                LinkEvent::Message(p.topic, p.payload.to_vec())
            }
            // The goodbye's DISCONNECT is flushed. Keep reading (the death's
            // PUBACK) until the broker closes the socket, then stop: closing
            // with unread bytes would send a TCP reset that can make the
            // broker drop the DISCONNECT unread, and polling on after the
            // close would reconnect; either way the exit that follows makes
            // the broker publish the last will ("link lost") after the goodbye.
            Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => {
                said_goodbye = true;
                continue;
            }
            Ok(_) => continue,
            Err(_) if said_goodbye => return,
            Err(e) => {
                failures = failures.saturating_add(1);
                let event = LinkEvent::Disconnected(e.to_string());
                if tx.send(event).await.is_err() {
                    return;
                }
                tokio::time::sleep(full_jitter(base, max, failures)).await;
                continue;
            }
        };
        if tx.send(event).await.is_err() {
            return;
        }
    }
}

fn status(config: &Config, session: u64, kind: StatusKind) -> Option<Vec<u8>> {
    let s = Status {
        v: PROTOCOL_VERSION,
        device: config.device.clone(),
        session,
        at_ms: now_ms(),
        kind,
    };
    codec::encode(&s).ok()
}

/// Runs the uplink until `shutdown` resolves.
pub async fn run(
    config: Config,
    outbox: Outbox,
    media_store: Arc<MediaStore>,
    link: Arc<LinkStatus>,
    devices: Arc<crate::devices::Presence>,
    shutdown: impl Future<Output = ()>,
) {
    let topic =
        |channel| Topic::new(config.site.clone(), config.device.clone(), channel).to_string();
    let (events_topic, ack_topic, status_topic, cmd_topic) = (
        topic(Channel::Events),
        topic(Channel::Ack),
        topic(Channel::Status),
        topic(Channel::Cmd),
    );
    let media_topic = |c| Topic::media(&config.site, &config.device, c);
    let (media_topic, media_ack_topic) = (
        media_topic(MediaChannel::Media),
        media_topic(MediaChannel::MediaAck),
    );
    let session = match outbox.next_session().await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot read the session counter; uplink not started");
            return;
        }
    };
    let mut options = match config.mqtt.broker().options(config.device.as_str()) {
        Ok(o) => o,
        Err(e) => {
            // Config::check refuses this at start; the files changed since.
            tracing::error!(error = %e, "cannot set up TLS to the broker; uplink not started, events stay in the outbox");
            return;
        }
    };
    // A persistent session lets the broker keep acks and verdicts for us while
    // the handheld is out of coverage.
    options.set_clean_session(false);
    options.set_max_packet_size(MAX_MESSAGE_BYTES + 1024, MAX_MESSAGE_BYTES + 1024);
    options.set_request_channel_capacity(config.uplink.max_inflight_batches * 2 + 16);
    options.set_inflight(config.uplink.max_inflight_batches.clamp(1, 100) as u16 + 8);
    if let Some(will) = status(&config, session, StatusKind::Death { graceful: false }) {
        options.set_last_will(LastWill::new(
            status_topic.clone(),
            will,
            QoS::AtLeastOnce,
            false,
        ));
    }
    let (client, eventloop) =
        AsyncClient::new(options, config.uplink.max_inflight_batches * 2 + 16);
    let (tx, mut rx) = mpsc::channel(64);
    let (reconnect_tx, reconnect_rx) = mpsc::channel(1);
    let pump = tokio::spawn(pump(
        eventloop,
        tx,
        reconnect_rx,
        Duration::from_millis(config.uplink.reconnect_min_ms),
        Duration::from_millis(config.uplink.reconnect_max_ms),
    ));

    let acked = match outbox.status().await {
        Ok(s) => s.acked_up_to,
        Err(e) => {
            tracing::error!(error = %e, "cannot read the outbox; uplink not started");
            pump.abort();
            return;
        }
    };
    let mut state = UplinkState::new(
        acked,
        config.uplink.max_inflight_batches,
        config.ack_timeout(),
    );
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut heartbeat_every =
        tokio::time::interval(Duration::from_secs(config.uplink.heartbeat_secs.max(1)));
    let mut outage_logged = false;
    let verifier = match command::CommandVerifier::from_config(&config.commands) {
        Ok(v) => v,
        Err(e) => {
            // Config::check refuses this at start; never obey on a bad key.
            tracing::error!(error = %e, "bad [commands] verify_key; refusing every command");
            command::CommandVerifier::refuse_all()
        }
    };
    let mut replays = command::ReplayGuard::default();
    let mut media = MediaSender {
        store: media_store,
        lane: MediaLane::new(
            config.uplink.media_chunk_bytes,
            config.uplink.media_bytes_per_sec,
            config.ack_timeout(),
        ),
        image: None,
        look: true,
        have_written: None,
    };
    tokio::pin!(shutdown);

    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            event = rx.recv() => match event {
                None => break,
                Some(LinkEvent::Connected) => {
                    state.on_connected();
                    link.connected.store(true, Ordering::Relaxed);
                    link.connects.fetch_add(1, Ordering::Relaxed);
                    outage_logged = false;
                    tracing::info!(broker = %format!("{}:{}", config.mqtt.host, config.mqtt.port), session, from_seq = state.acked_up_to() + 1, "connected to broker; sending from the ack floor");
                    media.look = true;
                    for t in [&ack_topic, &cmd_topic, &media_ack_topic] {
                        if let Err(e) = client.try_subscribe(t.clone(), QoS::AtLeastOnce) {
                            tracing::warn!(error = %e, topic = %t, "could not subscribe; will retry on reconnect");
                        }
                    }
                    let agent_version = crate::LONG_VERSION.into();
                    let verdicts_wanted = match outbox.status().await {
                        Ok(q) => verdicts_wanted(&q),
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot read the outbox for the birth message");
                            None
                        }
                    };
                    if let Some(birth) = status(&config, session, StatusKind::Birth { agent_version, verdicts_wanted }) {
                        let _ = client.try_publish(status_topic.clone(), QoS::AtLeastOnce, false, birth);
                    }
                }
                Some(LinkEvent::Disconnected(why)) => {
                    if state.connected() || !outage_logged {
                        tracing::warn!(error = %why, broker = %format!("{}:{}", config.mqtt.host, config.mqtt.port), "broker unreachable; events stay in the outbox and are sent when it is back");
                        outage_logged = true;
                    }
                    state.on_disconnected();
                    media.lane.on_disconnected();
                    link.connected.store(false, Ordering::Relaxed);
                }
                Some(LinkEvent::Message(topic, payload)) => {
                    if topic == ack_topic {
                        apply_ack(&outbox, &mut state, &verifier, &link, &payload).await;
                        media.look = true;
                    } else if topic == media_ack_topic {
                        media.apply_ack(&config, &link, &verifier, &payload).await;
                    } else if topic == cmd_topic {
                        let now = now_ms();
                        let checked = verifier
                            .check(&payload, outbox.device(), now)
                            .and_then(|c| replays.admit(&c, now).map(|()| c));
                        match checked {
                            Ok(command) => {
                                link.commands.accepted();
                                apply_command(&config, &outbox, &client, &events_topic, &mut state, &link, command).await;
                            }
                            Err(why) => {
                                link.commands.refused(&why);
                                tracing::warn!(reason = why.reason(), "{why}");
                            }
                        }
                    } else {
                        tracing::warn!(%topic, "message on an unexpected topic ignored");
                    }
                }
            },
            _ = outbox.appended() => {}
            _ = tick.tick() => {
                media.look = true;
                if media.lane.on_tick(Instant::now()) {
                    tracing::info!(media = ?media.lane.current(), "no media ack in time; resending from what the collector has");
                }
                if state.on_tick(Instant::now()) {
                    link.ack_timeouts.fetch_add(1, Ordering::Relaxed);
                    link.connected.store(false, Ordering::Relaxed);
                    tracing::warn!(from_seq = state.acked_up_to() + 1, timeout_ms = config.uplink.ack_timeout_ms, "no ack from the collector in time; reconnecting to resend everything unacknowledged on a fresh connection");
                    // Full means a reconnect is already asked for.
                    let _ = reconnect_tx.try_send(());
                }
            }
            _ = heartbeat_every.tick() => {
                if state.connected()
                    && let Ok(q) = outbox.status().await
                    && let Some(hb) = status(
                        &config,
                        session,
                        heartbeat(&q, &devices.snapshot(), media_totals(&media.store).await),
                    )
                {
                    let _ = client.try_publish(status_topic.clone(), QoS::AtLeastOnce, false, hb);
                }
            }
        }
        send_window(&config, &outbox, &client, &events_topic, &mut state).await;
        // Media after events, in every turn: they never hold an event back.
        media
            .send(&config, &outbox, &client, &media_topic, &state, &link)
            .await;
    }

    // Graceful goodbye: a death that says so, then a clean disconnect. Bounded,
    // so a dead broker cannot hold up shutdown.
    if state.connected()
        && let Some(death) = status(&config, session, StatusKind::Death { graceful: true })
    {
        let _ = client.try_publish(status_topic, QoS::AtLeastOnce, false, death);
        let _ = client.try_disconnect();
        let _ = tokio::time::timeout(Duration::from_millis(500), pump).await;
    } else {
        pump.abort();
    }
}

/// The media lane with its I/O: the store it reads images and records
/// from, and the image in hand.
struct MediaSender {
    store: Arc<MediaStore>,
    lane: MediaLane,
    image: Option<(MediaHash, MediaType, Arc<Vec<u8>>)>,
    /// Whether to look for a medium to send when the lane is idle (set on
    /// acks, connects and ticks, so an idle lane does not read the store on
    /// every appended event).
    look: bool,
    /// When the progress (`have`) of the medium in hand was last written to
    /// its record: see [`MediaSender::apply_ack`].
    have_written: Option<(MediaHash, Instant)>,
}

/// How often a medium's progress is written to its record while it is
/// being received. The record's `have` only saves chunks after a restart:
/// the collector's own prefix is the truth, and its first ack after a
/// restart moves the agent there (rule 4 of the media contract), so writing
/// it on every ack (two fsyncs per chunk) bought nothing but a slow link.
const HAVE_WRITE_EVERY: Duration = Duration::from_secs(1);

impl MediaSender {
    /// Applies a media ack from the collector: the record first (so a
    /// restart resumes from it), then the lane.
    async fn apply_ack(
        &mut self,
        config: &Config,
        link: &LinkStatus,
        verifier: &command::CommandVerifier,
        payload: &[u8],
    ) {
        let ack: MediaAck = match codec::decode(payload) {
            Ok(a) => a,
            Err(e) => {
                link.media_acks_refused.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "unreadable media ack from the collector ignored; the medium is resent after the ack timeout");
                return;
            }
        };
        // With a verify key, only the collector's signed bytes count: a
        // forged `stored` must not make the agent stop sending a medium.
        let ack = match verifier.open_media_ack(ack) {
            Ok(a) => a,
            Err(why) => {
                link.media_acks_refused.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    reason = why.reason(),
                    "{why}; media ack ignored, the medium is resent"
                );
                return;
            }
        };
        if ack.device != config.device {
            link.media_acks_refused.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(device = %ack.device, "media ack for another device ignored");
            return;
        }
        // A state change (stored, attached, refused) is written at once; a
        // new prefix of the medium in hand at most every HAVE_WRITE_EVERY.
        let receiving = matches!(ack.state, MediaState::Receiving);
        let now = Instant::now();
        let write = !receiving
            || !self
                .have_written
                .is_some_and(|(h, at)| h == ack.hash && now.duration_since(at) < HAVE_WRITE_EVERY);
        if write {
            self.write_ack(&ack).await;
            if receiving {
                self.have_written = Some((ack.hash, now));
            }
        }
        self.steer(ack);
    }

    /// Writes `ack` to the medium's record (so a restart resumes from it).
    async fn write_ack(&mut self, ack: &MediaAck) {
        let store = self.store.clone();
        let recorded = ack.clone();
        match tokio::task::spawn_blocking(move || store.apply_ack(&recorded)).await {
            Ok(Ok(Some(r))) => {
                tracing::debug!(media = %r.hash, state = r.progress.name(), have = r.have, "media ack")
            }
            Ok(Ok(None)) => {}
            Ok(Err(e)) => {
                tracing::error!(error = %e, media = %ack.hash, "cannot record a media ack; after a restart the chunks since the last record are offered again");
            }
            Err(_) => {}
        }
    }

    /// Moves the lane by `ack`.
    fn steer(&mut self, ack: MediaAck) {
        let done = !matches!(ack.state, MediaState::Receiving);
        if done {
            if self.lane.current() == Some(ack.hash) {
                self.lane.finish();
                self.image = None;
            }
            self.look = true;
            if let MediaState::Refused { reason } = &ack.state {
                tracing::warn!(media = %ack.hash, %reason, "the collector refuses this medium; it stays on the agent");
            }
            return;
        }
        if self.lane.on_ack(ack.hash, ack.have, ack.at) == AckEffect::Resumed {
            tracing::info!(media = %ack.hash, from = ack.have, "the collector did not take a chunk; resuming from what it has");
        }
    }

    /// Publishes the chunks the lane allows now; takes the next medium
    /// whose events are stored when the lane is idle.
    async fn send(
        &mut self,
        config: &Config,
        outbox: &Outbox,
        client: &AsyncClient,
        topic: &str,
        state: &UplinkState,
        link: &LinkStatus,
    ) {
        let u = &config.uplink;
        let hour = ((now_ms() / 3_600_000) % 24) as u8;
        let unmetered = link.unmetered_now.load(Ordering::Relaxed);
        if !state.connected() || !media_allowed(u.metered, unmetered, u.media_window_utc, hour) {
            return;
        }
        if self.lane.current().is_none() {
            if !std::mem::take(&mut self.look) {
                return;
            }
            if !self.take_next(outbox, state.acked_up_to()).await {
                return;
            }
        }
        let Some((hash, media_type, bytes)) = self.image.clone() else {
            return;
        };
        while let Some((off, n)) = self.lane.next_chunk(Instant::now()) {
            let start = off as usize;
            let chunk = MediaChunk {
                v: PROTOCOL_VERSION,
                device: config.device.clone(),
                hash,
                media_type,
                len: bytes.len() as u64,
                off,
                data: bytes[start..start + n].to_vec(),
            };
            let encoded = match codec::encode(&chunk) {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!(error = %e, "cannot encode a media chunk");
                    return;
                }
            };
            match client.try_publish(topic, QoS::AtLeastOnce, false, encoded) {
                Ok(()) => {
                    let resent = self.lane.resent_bytes();
                    self.lane.on_published(off, n, Instant::now());
                    link.media_sent_bytes.fetch_add(n as u64, Ordering::Relaxed);
                    link.media_resent_bytes
                        .fetch_add(self.lane.resent_bytes() - resent, Ordering::Relaxed);
                }
                // The request queue is full: the next turn tries again.
                Err(_) => return,
            }
        }
    }

    /// Puts the next due medium in hand; `false` when there is none.
    async fn take_next(&mut self, outbox: &Outbox, acked_up_to: u64) -> bool {
        let business_queued = match outbox.status().await {
            Ok(q) => q.classes[0].queued + q.classes[1].queued > 0,
            Err(_) => true,
        };
        let store = self.store.clone();
        let next = tokio::task::spawn_blocking(move || {
            let Some(r) = store.next_to_send(acked_up_to, business_queued)? else {
                return Ok(None);
            };
            let image = store
                .get(&r.hash)
                .map_err(crate::outbox::OutboxError::Invalid)?;
            Ok::<_, crate::outbox::OutboxError>(image.map(|(t, b)| (r, t, b)))
        })
        .await;
        match next {
            Ok(Ok(Some((r, t, b)))) => {
                let Some(hash) = r.media_hash() else {
                    return false;
                };
                debug_assert_eq!(r.progress, Progress::Queued);
                self.lane.begin(hash, b.len() as u64, r.have);
                self.image = Some((hash, t, Arc::new(b)));
                tracing::info!(media = %r.hash, bytes = r.bytes, from = r.have, "sending a medium");
                true
            }
            Ok(Ok(None)) => false,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "cannot read the next medium to send; `dockline-agent doctor check` tells what is wrong");
                false
            }
            Err(_) => false,
        }
    }
}

/// Which verdicts to ask the collector for again, if any are missing.
fn verdicts_wanted(q: &QueueStatus) -> Option<VerdictsWanted> {
    q.verdicts_wanted_from.map(|from_seq| VerdictsWanted {
        epoch: q.epoch,
        from_seq,
    })
}

/// The media store's counts for the heartbeat (none when they cannot be
/// read: the heartbeat goes without its media line rather than not at all).
async fn media_totals(store: &Arc<MediaStore>) -> Option<MediaTotals> {
    let store = Arc::clone(store);
    match tokio::task::spawn_blocking(move || store.totals()).await {
        Ok(Ok(totals)) => Some(totals),
        Ok(Err(e)) => {
            tracing::warn!("cannot count the media for the heartbeat: {e}");
            None
        }
        Err(_) => None,
    }
}

/// A heartbeat carrying the outbox's health, the serial devices' presence
/// and the media line.
pub fn heartbeat(
    q: &QueueStatus,
    devices: &[crate::devices::DevicePresence],
    media: Option<MediaTotals>,
) -> StatusKind {
    let classes = [Priority::MustDeliver, Priority::Normal, Priority::Telemetry]
        .into_iter()
        .zip(q.classes.iter())
        .map(|(priority, c)| ClassQueue {
            priority,
            queued: c.queued,
            bytes: c.bytes,
        })
        .collect();
    let drops = q
        .drops
        .iter()
        .map(|d| DropCount {
            class: d.class.clone(),
            reason: d.reason.clone(),
            count: d.count,
        })
        .collect();
    let salvage_lost = q.salvage.as_ref().filter(|r| r.lost > 0).map(|r| {
        let mut ranges = r.lost_ranges.clone();
        ranges.truncate(dockline_protocol::batch::MAX_RANGES);
        (r.lost, ranges)
    });
    StatusKind::Heartbeat {
        queued: q.queued,
        oldest_unacked_ms: q
            .oldest_queued_ms
            .map(|t| (now_ms() - t).max(0) as u64)
            .unwrap_or(0),
        health: Some(QueueHealth {
            queued_bytes: q.queued_bytes,
            classes,
            drops,
            disk_free: q.disk_free,
            last_fsync_us: q.last_fsync_us,
            salvage_lost,
            verdicts_wanted: verdicts_wanted(q),
            devices: device_health(devices),
            agent_version: Some(crate::LONG_VERSION.into()),
            media: media.map(|m| {
                Box::new(MediaHealth {
                    held: m.held,
                    bytes: m.bytes,
                    queued: m.queued,
                    queued_bytes: m.queued_bytes,
                    attached: m.attached,
                    refused: m.refused,
                })
            }),
        }),
    }
}

async fn apply_ack(
    outbox: &Outbox,
    state: &mut UplinkState,
    verifier: &command::CommandVerifier,
    link: &LinkStatus,
    payload: &[u8],
) {
    let ack: Ack = match codec::decode(payload) {
        Ok(a) => a,
        Err(e) => {
            link.acks.malformed();
            tracing::error!(error = %e, "unreadable ack from the collector ignored; events stay queued and are resent");
            return;
        }
    };
    let ack = match verifier.open_ack(ack) {
        Ok(a) => a,
        Err(why) => {
            link.acks.refused(&why);
            tracing::warn!(
                reason = why.reason(),
                "{why}; ack ignored, events stay queued and are resent"
            );
            return;
        }
    };
    if ack.device != *outbox.device() || ack.epoch != outbox.epoch() {
        tracing::warn!(device = %ack.device, epoch = ack.epoch, our_epoch = outbox.epoch(), "ack for another device or epoch ignored");
        return;
    }
    link.acks.accepted();
    if ack.stored_up_to.is_some() || !ack.also_stored.is_empty() {
        let mut up_to = ack.stored_up_to.unwrap_or(0);
        let mut also = ack.also_stored.clone();
        // Never past what this outbox assigned: a watermark beyond it means
        // the collector believed a forged claim, and taking it would mark
        // this device's next events acknowledged before they exist. Only an
        // ack beyond what this session sent needs the outbox's count.
        let beyond_sent =
            up_to > state.sent_up_to() || also.iter().any(|(_, hi)| *hi > state.sent_up_to());
        if beyond_sent && let Ok(q) = outbox.status().await {
            let assigned = q.next_seq.saturating_sub(1);
            let clamped = clamp_to_assigned(&also, assigned);
            if up_to > assigned || clamped != also {
                link.acks.beyond_assigned();
                tracing::warn!(
                    up_to,
                    assigned,
                    "ack beyond the sequences this agent assigned (the collector holds a forged claim); taken only up to {assigned}"
                );
                up_to = up_to.min(assigned);
                also = clamped;
            }
        }
        match outbox.apply_ack(up_to, also.clone()).await {
            Ok(floor) => {
                let floor = past_own_shed(outbox, floor).await;
                state.on_ack(floor, &also)
            }
            Err(e) => {
                tracing::error!(error = %e, up_to, "could not apply the collector's ack; the events will be resent")
            }
        }
    }
    if !ack.verdicts.is_empty() {
        let n = ack.verdicts.len();
        if let Err(e) = outbox.apply_verdicts(ack.verdicts).await {
            tracing::error!(error = %e, verdicts = n, "could not record ERP verdicts");
        }
    }
}

/// `floor` moved over the outbox's own shed ranges right above it: the
/// collector acks only up to what it stores, so a tail of sequences this
/// agent shed (never to be sent) would otherwise keep the batch that
/// reported them waiting for an ack until the ack timeout, again and again.
/// Only for the uplink's bookkeeping: the persisted floor stays the
/// collector's.
async fn past_own_shed(outbox: &Outbox, floor: u64) -> u64 {
    let Some(next) = floor.checked_add(1) else {
        return floor;
    };
    match outbox.read(next, 1, false).await {
        Ok(chunk) => {
            let first_held = chunk.events.first().map(|e| e.seq);
            let mut to = floor;
            for &(lo, hi) in &chunk.shed {
                if lo <= to.saturating_add(1) && first_held.is_none_or(|f| hi < f) {
                    to = to.max(hi);
                }
            }
            to
        }
        Err(_) => floor,
    }
}

/// Most sequences of one resend request checked against the outbox; the
/// collector asks again for anything beyond.
const MAX_RESEND_CHECK: u64 = 100_000;

/// Carries out a command [`command::CommandVerifier`] accepted.
async fn apply_command(
    config: &Config,
    outbox: &Outbox,
    client: &AsyncClient,
    events_topic: &str,
    state: &mut UplinkState,
    link: &LinkStatus,
    command: Command,
) {
    if let Some(resend) = command.resend {
        answer_resend(config, outbox, client, events_topic, state, link, resend).await;
    }
}

/// Rewinds the backlog lane to the first requested sequence and reports what
/// the outbox does not hold as shed.
async fn answer_resend(
    config: &Config,
    outbox: &Outbox,
    client: &AsyncClient,
    events_topic: &str,
    state: &mut UplinkState,
    link: &LinkStatus,
    mut resend: Resend,
) {
    let floor = state.acked_up_to();
    let ours = resend.epoch == outbox.epoch();
    if ours {
        let assigned = match outbox.status().await {
            Ok(q) => q.next_seq.saturating_sub(1),
            Err(e) => {
                tracing::error!(error = %e, "cannot read the outbox to answer a resend request; the collector will ask again");
                return;
            }
        };
        let asked = resend.ranges.clone();
        resend.ranges = clamp_to_assigned(&resend.ranges, assigned);
        if resend.ranges.len() != asked.len() || resend.ranges != asked {
            link.acks.resend_beyond_assigned();
            tracing::warn!(requested = ?asked, assigned,
                "resend request for sequences this agent has not assigned yet: refused beyond {assigned} (a forged batch at the collector opened a hole there; never reported gone)");
        }
        if resend.ranges.is_empty() {
            return;
        }
    }
    let (first_held, gone) = if ours {
        match not_held(config, outbox, floor, &resend.ranges).await {
            Ok(gone) => (floor + 1, gone),
            Err(e) => {
                tracing::error!(error = %e, "cannot read the outbox to answer a resend request; the collector will ask again");
                return;
            }
        }
    } else {
        // A reinstalled device: that epoch's outbox is gone with everything
        // in it. first_held 1 claims nothing about it.
        (1, resend.ranges.clone())
    };
    if ours && let Some(from) = resend.ranges.iter().map(|r| r.0).min() {
        state.resend_from(from);
    }
    tracing::info!(epoch = resend.epoch, requested = ?resend.ranges, gone = ?gone,
        "collector asked for missing sequences; sending again what the outbox holds");
    if gone.is_empty() {
        return;
    }
    let batch = Batch {
        v: PROTOCOL_VERSION,
        device: config.device.clone(),
        epoch: resend.epoch,
        first_held,
        events: Vec::new(),
        shed: gone,
    };
    match codec::encode(&batch) {
        Ok(bytes) => {
            if let Err(e) = client.try_publish(events_topic, QoS::AtLeastOnce, false, bytes) {
                tracing::warn!(error = %e, "could not report gone sequences; the collector will ask again");
            }
        }
        Err(e) => tracing::error!(error = %e, "cannot encode the gone report"),
    }
}

/// The requested sequences above the ack floor that the outbox neither holds
/// nor reports as shed (lost since, or unreadable rows); at most
/// [`MAX_RESEND_CHECK`] sequences are checked.
async fn not_held(
    config: &Config,
    outbox: &Outbox,
    floor: u64,
    ranges: &[(u64, u64)],
) -> Result<Vec<(u64, u64)>, crate::outbox::OutboxError> {
    let mut gone = Vec::new();
    let mut budget = MAX_RESEND_CHECK;
    let step = config.uplink.batch_max_events.max(1) as u64;
    for &(lo, hi) in ranges {
        // At or below the floor the collector confirmed it earlier and this
        // outbox deleted it: gone, said explicitly (the collector believes a
        // `held` claim only up to what it stores).
        if lo <= floor {
            gone.push((lo, hi.min(floor)));
        }
        let mut from = lo.max(floor.saturating_add(1));
        while from <= hi && budget > 0 && gone.len() < MAX_RANGES {
            let want = (hi - from).saturating_add(1).min(budget).min(step);
            let chunk = outbox.read(from, want as usize, false).await?;
            let held: Vec<u64> = chunk.events.iter().map(|e| e.seq).collect();
            // A full read answers up to its last row; a short one for the
            // whole rest of the range.
            let to = match held.last() {
                Some(&last) if held.len() as u64 == want => last.min(hi),
                _ => hi.min(from.saturating_add(budget - 1)),
            };
            gone.extend(uncovered(from, to, &held, &chunk.shed));
            budget = budget.saturating_sub(to - from + 1);
            match to.checked_add(1) {
                Some(n) => from = n,
                None => break,
            }
        }
    }
    gone.truncate(MAX_RANGES);
    Ok(gone)
}

/// `ranges` cut to sequences at most `assigned` (the highest this outbox
/// gave out); ranges wholly above it are dropped.
pub fn clamp_to_assigned(ranges: &[(u64, u64)], assigned: u64) -> Vec<(u64, u64)> {
    ranges
        .iter()
        .filter(|(lo, _)| *lo <= assigned)
        .map(|&(lo, hi)| (lo, hi.min(assigned)))
        .collect()
}

/// Fills both lanes' windows with batches read from the outbox. The backlog
/// lane leaves out the business events a live batch in flight carries
/// ([`UplinkState::sent_live`]), so an event crosses the link once.
async fn send_window(
    config: &Config,
    outbox: &Outbox,
    client: &AsyncClient,
    topic: &str,
    state: &mut UplinkState,
) {
    for lane in [Lane::Live, Lane::Backlog] {
        while let Some(from) = state.next_from(lane) {
            let chunk = match outbox
                .read(from, config.uplink.batch_max_events, lane == Lane::Live)
                .await
            {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the outbox; will retry");
                    return;
                }
            };
            let carried_live = |e: &Envelope| {
                lane == Lane::Backlog && e.priority != Priority::Telemetry && state.sent_live(e.seq)
            };
            let encoded = encode_batch(
                config,
                outbox.epoch(),
                state.acked_up_to() + 1,
                chunk,
                carried_live,
            );
            match encoded {
                Encoded::Nothing => break,
                Encoded::AllCarriedLive(last) => state.on_backlog_skipped(last),
                Encoded::Batch(bytes, last) => {
                    match client.try_publish(topic, QoS::AtLeastOnce, false, bytes) {
                        Ok(()) => state.on_published(lane, from, last, Instant::now()),
                        // The request queue is full (link slow or down): try again on the next tick.
                        Err(_) => return,
                    }
                }
            }
        }
    }
}

/// What [`encode_batch`] made of a chunk.
#[derive(Debug, PartialEq)]
enum Encoded {
    /// Nothing held from there on.
    Nothing,
    /// Every event read up to this sequence rides a live batch in flight
    /// and no shed range is due: nothing to publish, the lane moves on.
    AllCarriedLive(u64),
    /// The batch's bytes and the last sequence it answers for.
    Batch(Vec<u8>, u64),
}

/// Encodes a chunk as one batch no larger than the message cap (halving it
/// while it is too large; order is kept), leaving out the events `skip`
/// names (they are on their way already). The batch answers for every
/// sequence read, skipped ones included.
fn encode_batch(
    config: &Config,
    epoch: u64,
    first_held: u64,
    chunk: Chunk,
    skip: impl Fn(&Envelope) -> bool,
) -> Encoded {
    let Chunk { events, shed } = chunk;
    // The highest sequence this batch answers for: the last one read,
    // whether it is sent or rides a live batch.
    let mut answers_to = events.last().map(|e| e.seq);
    let mut events: Vec<Envelope> = events.into_iter().filter(|e| !skip(e)).collect();
    loop {
        let shed: Vec<(u64, u64)> = shed
            .iter()
            .copied()
            .filter(|(lo, _)| answers_to.is_none_or(|to| *lo <= to))
            .map(|(lo, hi)| (lo, answers_to.map_or(hi, |to| hi.min(to))))
            .collect();
        let last = answers_to
            .unwrap_or(0)
            .max(shed.last().map(|r| r.1).unwrap_or(0));
        if last == 0 {
            return Encoded::Nothing;
        }
        if events.is_empty() && shed.is_empty() {
            return Encoded::AllCarriedLive(last);
        }
        let batch = Batch {
            v: PROTOCOL_VERSION,
            device: config.device.clone(),
            epoch,
            first_held,
            events,
            shed,
        };
        match codec::encode(&batch) {
            Ok(b) if b.len() <= MAX_MESSAGE_BYTES || batch.events.len() <= 1 => {
                return Encoded::Batch(b, last);
            }
            Ok(_) => {
                events = batch.events;
                events.truncate(events.len() / 2);
                answers_to = events.last().map(|e| e.seq);
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot encode a batch");
                return Encoded::Nothing;
            }
        }
    }
}

/// The devices for a heartbeat: `None` without devices, else at most
/// [`MAX_HEARTBEAT_DEVICES`] (config order) so the heartbeat stays valid.
fn device_health(devices: &[crate::devices::DevicePresence]) -> Option<Vec<DeviceHealth>> {
    if devices.is_empty() {
        return None;
    }
    let listed = devices
        .iter()
        .take(MAX_HEARTBEAT_DEVICES)
        .map(|d| DeviceHealth {
            name: d.name.clone(),
            connected: d.connected,
            readings: d.readings,
            rejected: d.rejected,
            last_reading_ms: d.last_reading_ms,
        })
        .collect();
    Some(listed)
}

#[cfg(test)]
mod tests {
    use super::clamp_to_assigned;

    /// The agent answers only for what it assigned: a forged batch at seq
    /// 50 while the device is at 3 makes the collector ask for 3..=49; the
    /// agent has assigned only 1..=2, so nothing of it is reported gone.
    #[test]
    fn resend_ranges_are_clamped_to_the_assigned_sequences() {
        assert_eq!(clamp_to_assigned(&[(3, 49)], 2), vec![]);
        assert_eq!(
            clamp_to_assigned(&[(1, 1), (3, 49)], 10),
            vec![(1, 1), (3, 10)]
        );
        assert_eq!(clamp_to_assigned(&[(1, 5)], 5), vec![(1, 5)]);
    }
}
