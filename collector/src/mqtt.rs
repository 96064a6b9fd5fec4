//! The MQTT edge: one task polls rumqttc's event loop (which also
//! reconnects), one task ingests received messages, one task publishes
//! verdict acks from delivery.
//!
//! Invariants and design:
//! - the session is persistent (`clean_session = false`) and acks to the
//!   broker are manual: a received batch is PUBACKed only after ingest has
//!   committed it and queued its ack, so a collector killed in between gets
//!   the batch again from the broker;
//! - the subscriptions are renewed on every CONNACK, in case the broker lost
//!   the session;
//! - broker loss never ends the process: the poll task logs one warning per
//!   outage and retries with capped exponential backoff and full jitter;
//! - received messages go to the ingest task over a bounded channel, so a
//!   slow disk slows the reads from the broker instead of growing memory;
//! - refused input (malformed, oversize, rate-limited, another device's
//!   topic) is PUBACKed and dropped, so the broker never holds it in flight
//!   for us; its log lines are throttled per reason (a few a second, with
//!   a count of the ones left out), so a flood cannot flood the log too;
//! - the largest packet rumqttc reads is [`INCOMING_PACKET_LIMIT`], above
//!   the protocol's message limit: a larger one breaks the connection and,
//!   with a persistent session, comes back on every reconnect, so the
//!   broker must stop such packets (Mosquitto `message_size_limit`, see
//!   the README's security section); between the two limits ingest refuses
//!   and counts them.

use std::time::Duration;

use dockline_protocol::codec::MAX_MESSAGE_BYTES;
use dockline_protocol::{Channel, Topic};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, Publish, QoS};
use tokio::sync::mpsc;
use tracing::{error, info, warn};

use crate::backoff::Backoff;
use crate::config::MqttConfig;
use crate::ingest::Ingest;
use crate::publication::Publication;
use crate::shutdown::Shutdown;

/// Messages buffered between the poll task and the ingest task.
const INCOMING_CAPACITY: usize = 64;
/// Requests (publishes, acks) buffered towards the event loop.
const REQUEST_CAPACITY: usize = 1024;
/// Headroom over the largest protocol message for MQTT framing.
const PACKET_HEADROOM: usize = 16 * 1024;
/// Largest packet read from the broker: four protocol messages, so an
/// oversize payload up to this size is refused and counted by ingest
/// instead of breaking the connection.
pub const INCOMING_PACKET_LIMIT: usize = 4 * MAX_MESSAGE_BYTES + PACKET_HEADROOM;

/// Runs the MQTT tasks until `shutdown`.
pub async fn run(
    cfg: &MqttConfig,
    ingest: Ingest,
    outbound: mpsc::Receiver<Publication>,
    shutdown: Shutdown,
) {
    let mut options = MqttOptions::new(cfg.client_id.clone(), cfg.host.clone(), cfg.port);
    options
        .set_keep_alive(Duration::from_secs(cfg.keep_alive_secs))
        .set_clean_session(false)
        .set_manual_acks(true)
        .set_max_packet_size(INCOMING_PACKET_LIMIT, MAX_MESSAGE_BYTES + PACKET_HEADROOM);
    if let Some(tls) = &cfg.tls {
        match tls.client_config() {
            Ok(c) => {
                options.set_transport(rumqttc::Transport::tls_with_config(
                    rumqttc::TlsConfiguration::Rustls(std::sync::Arc::new(c)),
                ));
            }
            Err(e) => {
                // Config::check refuses this at start; the files changed since.
                error!("cannot set up TLS to the MQTT broker, not connecting: {e}");
                return;
            }
        }
    }
    if let Some(user) = &cfg.username {
        let password = cfg.password.as_ref().map(|p| p.expose().to_owned());
        options.set_credentials(user.clone(), password.unwrap_or_default());
    }
    let (client, eventloop) = AsyncClient::new(options, REQUEST_CAPACITY);
    let (incoming_tx, incoming_rx) = mpsc::channel(INCOMING_CAPACITY);
    let broker = format!("{}:{}", cfg.host, cfg.port);
    let client_id = cfg.client_id.clone();

    let poll = tokio::spawn(poll_loop(
        eventloop,
        client.clone(),
        incoming_tx,
        broker,
        client_id,
        cfg.shared_group.clone(),
        shutdown.clone(),
    ));
    let ingest_task = tokio::spawn(ingest_loop(ingest, client.clone(), incoming_rx));
    let publish_task = tokio::spawn(publish_loop(client.clone(), outbound));

    let mut stop = shutdown;
    stop.wait().await;
    // Tell the broker we leave on purpose; the persistent session keeps
    // queueing device batches for us until we return.
    let _ = client.try_disconnect();
    for task in [poll, ingest_task, publish_task] {
        task.abort();
    }
}

/// The filter to subscribe: `filter` itself, or with `[mqtt] shared_group`
/// the shared subscription `$share/{group}/{filter}`, so the broker hands
/// each message to one collector of the group.
pub fn subscription(shared_group: Option<&str>, filter: &str) -> String {
    match shared_group {
        Some(group) => format!("$share/{group}/{filter}"),
        None => filter.to_owned(),
    }
}

async fn poll_loop(
    mut eventloop: rumqttc::EventLoop,
    client: AsyncClient,
    incoming: mpsc::Sender<Publish>,
    broker: String,
    client_id: String,
    shared_group: Option<String>,
    mut shutdown: Shutdown,
) {
    let backoff = Backoff {
        min: Duration::from_millis(250),
        max: Duration::from_secs(30),
    };
    let mut failures: u32 = 0;
    let mut in_outage = false;
    loop {
        let event = tokio::select! {
            () = shutdown.wait() => return,
            event = eventloop.poll() => event,
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                if in_outage {
                    info!(broker = %broker, "reconnected to MQTT broker");
                } else {
                    info!(broker = %broker, "connected to MQTT broker");
                }
                in_outage = false;
                failures = 0;
                let topics = [Channel::Events, Channel::Status].map(|c| rumqttc::SubscribeFilter {
                    path: subscription(shared_group.as_deref(), &Topic::all(c)),
                    qos: QoS::AtLeastOnce,
                });
                if let Err(e) = client.try_subscribe_many(topics) {
                    error!(broker = %broker, "cannot queue subscriptions: {e}");
                }
                if shared_group.is_some() {
                    // A persistent session from before shared_group was set
                    // still holds the plain subscriptions, which would hand
                    // this collector every message besides its share.
                    for c in [Channel::Events, Channel::Status] {
                        if let Err(e) = client.try_unsubscribe(Topic::all(c)) {
                            error!(broker = %broker, "cannot queue unsubscribe: {e}");
                        }
                    }
                }
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                if incoming.send(p).await.is_err() {
                    return;
                }
            }
            Ok(_) => {}
            Err(e) => {
                if !in_outage {
                    warn!(broker = %broker, client_id = %client_id,
                        "MQTT broker unreachable: {e}; retrying with backoff (agents keep events meanwhile; \
                         if this repeats every few seconds, another process uses the same client_id)");
                    in_outage = true;
                }
                let delay = backoff.delay(failures);
                failures = failures.saturating_add(1);
                tokio::select! {
                    () = shutdown.wait() => return,
                    () = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

/// At most [`REFUSAL_LINES_PER_SEC`] refusal log lines a second per reason;
/// the rest are counted and the count goes into the reason's next line
/// (every refusal is counted in the stats anyway).
#[derive(Debug, Default)]
struct RefusalLog {
    by_reason: std::collections::HashMap<&'static str, RefusalWindow>,
}

#[derive(Debug, Clone, Copy)]
struct RefusalWindow {
    start: std::time::Instant,
    logged: u32,
    left_out: u64,
}

/// Refusal lines logged per reason and second before the rest are left out.
const REFUSAL_LINES_PER_SEC: u32 = 5;

impl RefusalLog {
    fn log(&mut self, topic: &str, e: &crate::ingest::IngestError) {
        let now = std::time::Instant::now();
        let w = self.by_reason.entry(e.reason()).or_insert(RefusalWindow {
            start: now,
            logged: 0,
            left_out: 0,
        });
        if now.duration_since(w.start) >= Duration::from_secs(1) {
            w.start = now;
            w.logged = 0;
        }
        if w.logged >= REFUSAL_LINES_PER_SEC {
            w.left_out += 1;
            return;
        }
        w.logged += 1;
        let left_out = std::mem::take(&mut w.left_out);
        error!(topic = %topic, reason = e.reason(), refusals_not_logged = left_out, "{e}");
    }
}

async fn ingest_loop(ingest: Ingest, client: AsyncClient, mut incoming: mpsc::Receiver<Publish>) {
    let mut refusals = RefusalLog::default();
    while let Some(p) = incoming.recv().await {
        match ingest.handle(&p.topic, &p.payload).await {
            Ok(Some(ack)) => publish(&client, ack).await,
            Ok(None) => {}
            Err(e) if e.is_refusal() => refusals.log(&p.topic, &e),
            Err(e) => {
                // Not stored: do not PUBACK either, so the broker redelivers
                // after a reconnect; the agent resends in any case.
                error!(topic = %p.topic, "{e}");
                continue;
            }
        }
        if let Err(e) = client.ack(&p).await {
            warn!(topic = %p.topic, "cannot PUBACK message: {e}");
        }
    }
}

async fn publish_loop(client: AsyncClient, mut outbound: mpsc::Receiver<Publication>) {
    while let Some(p) = outbound.recv().await {
        publish(&client, p).await;
    }
}

async fn publish(client: &AsyncClient, p: Publication) {
    if let Err(e) = client
        .publish(p.topic.clone(), QoS::AtLeastOnce, false, p.payload)
        .await
    {
        warn!(topic = %p.topic, "cannot queue ack for publishing: {e}");
    }
}
