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
//! - **the poll task never waits on anything but the broker.** rumqttc's
//!   event loop serves our requests (PUBACKs, ack publishes) only inside
//!   `poll()`, and hands out the packets it has buffered before it serves a
//!   request. So the poll task hands received messages to the ingest task
//!   over an unbounded channel and goes straight back to `poll()`; the
//!   ingest task may then wait on the request channel, which the poll task
//!   is sure to drain. (Before, the poll task waited on a bounded ingest
//!   channel while the ingest task waited on the request channel: a fleet
//!   reconnecting at once stalled ingest for good.)
//! - back-pressure is what the broker sees: a message is PUBACKed only after
//!   ingest handled it, and the broker sends no more than its in-flight
//!   window of unacknowledged messages (Mosquitto `max_inflight_messages`,
//!   20 by default), so the handoff holds at most that many;
//!   [`IngestProgress`] counts them and `/readyz` answers 503 when messages
//!   wait and none was handled for [`STALL_AFTER`];
//! - **every deterministic failure is PUBACKed**: refused input (malformed,
//!   oversize, rate-limited, another device's topic, values the inbox
//!   cannot hold, a forged watermark) is PUBACKed and dropped, so the broker
//!   never holds it in flight for us; its log lines are throttled per reason
//!   (a few a second, with a count of the ones left out), so a flood cannot
//!   flood the log too. Only a transient inbox failure (the database does not
//!   answer) holds a message: ingest retries it with backoff, in order,
//!   until the database answers again; a message that fails while the
//!   database answers other calls is refused as `store_failed` after
//!   [`MAX_STORE_ATTEMPTS`] attempts, so one bad message cannot stall the
//!   session;
//! - the largest packet rumqttc reads is [`INCOMING_PACKET_LIMIT`], MQTT's
//!   own maximum: rumqttc breaks the connection on a larger packet, and with
//!   a persistent session that packet would come back on every reconnect (an
//!   endless reconnect loop). Read in full, an oversize message is refused
//!   and counted by ingest (`oversize`) like any other. The broker should
//!   still stop such packets first (Mosquitto `message_size_limit`, see the
//!   README's security section), since each is held in memory once.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use dockline_protocol::codec::MAX_MESSAGE_BYTES;
use dockline_protocol::{Channel, Topic};
use rumqttc::{AsyncClient, Event, Packet, Publish, QoS};
use tokio::sync::mpsc;
use tracing::{error, info, warn};

use crate::config_error::ConfigCheckError;
use crate::ingest::Ingest;
use crate::ingest::commands::CommandSigner;
use crate::publication::Publication;
use crate::shutdown::Shutdown;
use dockline_host::backoff::Backoff;

/// `[mqtt]`: the broker connection.
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    /// Broker host name or address.
    #[serde(default = "default_mqtt_host")]
    pub host: String,
    /// Broker port.
    #[serde(default = "default_mqtt_port")]
    pub port: u16,
    /// MQTT client id; only `[A-Za-z0-9_-]`. With a persistent session the
    /// broker keeps queued events for this id while the collector is away.
    #[serde(default = "default_client_id")]
    pub client_id: String,
    /// MQTT keep-alive interval in seconds.
    #[serde(default = "default_keep_alive")]
    pub keep_alive_secs: u64,
    /// `[mqtt.tls]`: TLS to the broker, with the collector's own client
    /// certificate for mutual TLS ([`dockline_host::tls`]). Absent:
    /// plain TCP.
    #[serde(default)]
    pub tls: Option<dockline_host::tls::MqttTls>,
    /// MQTT user name, for brokers that log clients in with a password.
    #[serde(default)]
    pub username: Option<String>,
    /// The MQTT password: inline, `{ file = "…" }` or `{ env = "…" }`;
    /// never logged. Needs `username`.
    #[serde(default)]
    pub password: Option<dockline_host::secret::Secret>,
    /// Share the device topics with the other collectors of this group
    /// (MQTT 5 / Mosquitto shared subscription `$share/{group}/…`): each
    /// batch goes to one of them. Only with a PostgreSQL `[inbox] url`.
    #[serde(default)]
    pub shared_group: Option<String>,
}

impl Default for MqttConfig {
    fn default() -> Self {
        Self {
            host: default_mqtt_host(),
            port: default_mqtt_port(),
            client_id: default_client_id(),
            keep_alive_secs: default_keep_alive(),
            tls: None,
            username: None,
            password: None,
            shared_group: None,
        }
    }
}

fn default_mqtt_host() -> String {
    "127.0.0.1".into()
}
fn default_mqtt_port() -> u16 {
    1883
}
fn default_client_id() -> String {
    "dockline-collector".into()
}
fn default_keep_alive() -> u64 {
    15
}

impl MqttConfig {
    /// Checks what serde cannot: a topic-safe client id, a sane keep-alive,
    /// usable TLS files, a shared group name, a password only with a user.
    pub fn check(&self) -> Result<(), ConfigCheckError> {
        let cid = &self.client_id;
        let cid_ok = !cid.is_empty()
            && cid.len() <= 64
            && cid
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !cid_ok {
            return Err(ConfigCheckError {
                key: "mqtt.client_id",
                problem: format!(
                    "is {cid:?}; use 1 to 64 characters from A-Z a-z 0-9 _ - (some brokers reject others)"
                ),
            });
        }
        if self.keep_alive_secs < 5 {
            return Err(ConfigCheckError {
                key: "mqtt.keep_alive_secs",
                problem: format!("is {}; use at least 5", self.keep_alive_secs),
            });
        }
        if let Some(tls) = &self.tls {
            tls.client_config().map_err(|e| ConfigCheckError {
                key: "mqtt.tls",
                problem: e.to_string(),
            })?;
        }
        if let Some(group) = &self.shared_group {
            let ok = !group.is_empty()
                && group.len() <= 64
                && group
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            if !ok {
                return Err(ConfigCheckError {
                    key: "mqtt.shared_group",
                    problem: format!("is {group:?}; use 1 to 64 characters from A-Z a-z 0-9 _ -"),
                });
            }
        }
        if self.password.is_some() && self.username.is_none() {
            return Err(ConfigCheckError {
                key: "mqtt.password",
                problem: "is set but mqtt.username is not; set the user name too".into(),
            });
        }
        Ok(())
    }
}

/// Requests (publishes, acks) buffered towards the event loop.
const REQUEST_CAPACITY: usize = 1024;
/// Headroom over the largest protocol message for MQTT framing.
const PACKET_HEADROOM: usize = 16 * 1024;
/// Largest packet read from the broker: MQTT's own limit (a 268,435,455-byte
/// remaining length plus its 5-byte fixed header), so no packet the broker
/// can send breaks the connection; ingest refuses what is over
/// `[security] max_payload_bytes`.
pub const INCOMING_PACKET_LIMIT: usize = 268_435_455 + 5;
/// `/readyz` answers 503 once messages wait and none was handled for this long.
pub const STALL_AFTER: Duration = Duration::from_secs(30);
/// Attempts to store one message while the inbox answers other calls before
/// it is refused as `store_failed`.
pub const MAX_STORE_ATTEMPTS: u32 = 5;

/// How far ingest has come, for `/readyz` and `/metrics`: messages received
/// from the broker, messages handled (stored, refused or dropped), and when
/// the last one was handled.
#[derive(Debug, Default)]
pub struct IngestProgress {
    received: AtomicU64,
    handled: AtomicU64,
    last_handled_ms: AtomicI64,
    started_ms: AtomicI64,
}

impl IngestProgress {
    /// A fresh tracker (nothing received, the clock starting now).
    pub fn new() -> Self {
        let p = Self::default();
        p.started_ms.store(crate::now_ms(), Ordering::Relaxed);
        p
    }

    fn on_received(&self) {
        self.received.fetch_add(1, Ordering::Relaxed);
    }

    fn on_handled(&self) {
        self.handled.fetch_add(1, Ordering::Relaxed);
        self.last_handled_ms
            .store(crate::now_ms(), Ordering::Relaxed);
    }

    /// Messages received from the broker and not yet handled.
    pub fn waiting(&self) -> u64 {
        let handled = self.handled.load(Ordering::Relaxed);
        self.received
            .load(Ordering::Relaxed)
            .saturating_sub(handled)
    }

    /// Messages handled since start.
    pub fn handled(&self) -> u64 {
        self.handled.load(Ordering::Relaxed)
    }

    /// `Some(how long)` when messages wait and none was handled for at least
    /// `after`: ingest is stalled.
    pub fn stalled_for(&self, after: Duration) -> Option<Duration> {
        if self.waiting() == 0 {
            return None;
        }
        let last = self
            .last_handled_ms
            .load(Ordering::Relaxed)
            .max(self.started_ms.load(Ordering::Relaxed));
        let idle = Duration::from_millis(u64::try_from(crate::now_ms() - last).unwrap_or(0));
        (idle >= after).then_some(idle)
    }
}

/// Runs the MQTT tasks until `shutdown`.
pub async fn run(
    cfg: &MqttConfig,
    ingest: Ingest,
    outbound: mpsc::Receiver<Publication>,
    progress: Arc<IngestProgress>,
    signer: CommandSigner,
    shutdown: Shutdown,
) {
    let broker = dockline_host::mqtt::Broker {
        host: &cfg.host,
        port: cfg.port,
        keep_alive_secs: cfg.keep_alive_secs,
        tls: cfg.tls.as_ref(),
        username: cfg.username.as_deref(),
        password: cfg.password.as_ref(),
    };
    let mut options = match broker.options(&cfg.client_id) {
        Ok(o) => o,
        Err(e) => {
            // Config::check refuses this at start; the files changed since.
            error!("cannot set up TLS to the MQTT broker, not connecting: {e}");
            return;
        }
    };
    options
        .set_clean_session(false)
        .set_manual_acks(true)
        .set_max_packet_size(INCOMING_PACKET_LIMIT, MAX_MESSAGE_BYTES + PACKET_HEADROOM);
    let (client, eventloop) = AsyncClient::new(options, REQUEST_CAPACITY);
    // Unbounded on purpose (see the module docs): the broker's in-flight
    // window bounds it, and the poll task must never wait on it.
    let (incoming_tx, incoming_rx) = mpsc::unbounded_channel();
    let broker = format!("{}:{}", cfg.host, cfg.port);
    let client_id = cfg.client_id.clone();

    let session = Session {
        broker,
        client_id,
        shared_group: cfg.shared_group.clone(),
    };
    let poll = tokio::spawn(poll_loop(
        eventloop,
        client.clone(),
        incoming_tx,
        session,
        Arc::clone(&progress),
        shutdown.clone(),
    ));
    let signer = Arc::new(signer);
    let ingest_task = tokio::spawn(ingest_loop(
        ingest,
        client.clone(),
        incoming_rx,
        progress,
        Arc::clone(&signer),
        shutdown.clone(),
    ));
    let publish_task = tokio::spawn(publish_loop(client.clone(), outbound, signer));

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

/// The topic filters of what devices publish: events, status, media chunks.
pub fn device_filters() -> [String; 3] {
    [
        Topic::all(Channel::Events),
        Topic::all(Channel::Status),
        Topic::all_media(dockline_protocol::MediaChannel::Media),
    ]
}

/// Who the poll task is, for its subscriptions and log lines.
struct Session {
    broker: String,
    client_id: String,
    shared_group: Option<String>,
}

async fn poll_loop(
    mut eventloop: rumqttc::EventLoop,
    client: AsyncClient,
    incoming: mpsc::UnboundedSender<Publish>,
    session: Session,
    progress: Arc<IngestProgress>,
    mut shutdown: Shutdown,
) {
    let Session {
        broker,
        client_id,
        shared_group,
    } = session;
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
                let topics = device_filters().map(|f| rumqttc::SubscribeFilter {
                    path: subscription(shared_group.as_deref(), &f),
                    qos: QoS::AtLeastOnce,
                });
                if let Err(e) = client.try_subscribe_many(topics) {
                    error!(broker = %broker, "cannot queue subscriptions: {e}");
                }
                if shared_group.is_some() {
                    // A persistent session from before shared_group was set
                    // still holds the plain subscriptions, which would hand
                    // this collector every message besides its share.
                    for f in device_filters() {
                        if let Err(e) = client.try_unsubscribe(f) {
                            error!(broker = %broker, "cannot queue unsubscribe: {e}");
                        }
                    }
                }
            }
            Ok(Event::Incoming(Packet::SubAck(_))) => {
                // From here on the broker hands over what devices publish;
                // before it, a publish with no other subscriber is dropped.
                info!(broker = %broker, "subscribed to the devices' topics");
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                progress.on_received();
                if incoming.send(p).is_err() {
                    return;
                }
            }
            Ok(_) => {}
            Err(e) => {
                if !in_outage {
                    warn!(broker = %broker, client_id = %client_id,
                        "MQTT broker unreachable: {e}; retrying with backoff (agents keep events meanwhile; \
                         if this repeats every few seconds, check the broker's log for why it closed the connection, \
                         e.g. another process with the same client_id)");
                    in_outage = true;
                }
                let delay = backoff.delay_with(failures, rand::random::<f64>());
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

async fn ingest_loop(
    ingest: Ingest,
    client: AsyncClient,
    mut incoming: mpsc::UnboundedReceiver<Publish>,
    progress: Arc<IngestProgress>,
    signer: Arc<CommandSigner>,
    mut shutdown: Shutdown,
) {
    let mut refusals = RefusalLog::default();
    while let Some(p) = incoming.recv().await {
        let Some(outcome) = handle_until_settled(&ingest, &p, &mut shutdown).await else {
            return;
        };
        match outcome {
            Ok(Some(ack)) => publish(&client, ack, &signer).await,
            Ok(None) => {}
            Err(e) => refusals.log(&p.topic, &e),
        }
        progress.on_handled();
        if let Err(e) = client.ack(&p).await {
            warn!(topic = %p.topic, "cannot PUBACK message: {e}");
        }
    }
}

/// Handles one message until it is stored or refused: a transient inbox
/// failure is retried with backoff, in order (the next message waits), for
/// as long as the inbox does not answer; a failure while the inbox answers
/// other calls is retried [`MAX_STORE_ATTEMPTS`] times, then refused as
/// `store_failed`. `None` when shut down meanwhile (the message stays
/// unacknowledged and the broker sends it again).
async fn handle_until_settled(
    ingest: &Ingest,
    p: &Publish,
    shutdown: &mut Shutdown,
) -> Option<Result<Option<Publication>, crate::ingest::IngestError>> {
    let backoff = Backoff {
        min: Duration::from_millis(100),
        max: Duration::from_secs(5),
    };
    let mut failures: u32 = 0;
    let mut attempts_while_answering: u32 = 0;
    loop {
        let e = match ingest.handle(&p.topic, &p.payload).await {
            Err(e) if !e.is_refusal() => e,
            settled => return Some(settled),
        };
        failures = failures.saturating_add(1);
        if ingest.inbox_answers().await {
            attempts_while_answering += 1;
            if attempts_while_answering >= MAX_STORE_ATTEMPTS {
                return Some(Err(ingest.give_up(&p.topic, e).await));
            }
        }
        if failures == 1 || failures.is_power_of_two() {
            error!(topic = %p.topic, attempt = failures,
                "{e}; retrying this message (later ones wait behind it)");
        }
        tokio::select! {
            () = shutdown.wait() => return None,
            () = tokio::time::sleep(backoff.delay_with(failures, rand::random::<f64>())) => {}
        }
    }
}

async fn publish_loop(
    client: AsyncClient,
    mut outbound: mpsc::Receiver<Publication>,
    signer: Arc<CommandSigner>,
) {
    while let Some(p) = outbound.recv().await {
        publish(&client, p, &signer).await;
    }
}

/// Publishes `p` QoS 1, an ack signed by `signer` (see
/// [`Publication::signed_by`]).
async fn publish(client: &AsyncClient, p: Publication, signer: &CommandSigner) {
    let topic = p.topic.clone();
    let p = match p.signed_by(signer) {
        Ok(p) => p,
        Err(e) => {
            error!(topic = %topic, "cannot sign an ack, not publishing it (the agent resends): {e}");
            return;
        }
    };
    if let Err(e) = client
        .publish(p.topic.clone(), QoS::AtLeastOnce, false, p.payload)
        .await
    {
        warn!(topic = %p.topic, "cannot queue ack for publishing: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `/readyz`'s rule: stalled only while messages wait and none was
    /// handled for the whole period.
    #[test]
    fn ingest_is_stalled_only_while_messages_wait_unhandled() {
        let p = IngestProgress::new();
        assert_eq!(p.stalled_for(Duration::ZERO), None, "nothing waits");
        p.on_received();
        p.on_received();
        assert_eq!(p.waiting(), 2);
        assert!(p.stalled_for(Duration::ZERO).is_some());
        assert_eq!(
            p.stalled_for(Duration::from_secs(3600)),
            None,
            "not for that long"
        );
        p.on_handled();
        p.on_handled();
        assert_eq!((p.waiting(), p.handled()), (0, 2));
        assert_eq!(p.stalled_for(Duration::ZERO), None);
    }
}
