//! Ingest: turns one MQTT message (topic + bytes) into inbox writes and, for
//! event batches, the ack to publish.
//!
//! Invariants:
//! - nothing from the wire is trusted: the topic is parsed, a payload over
//!   `[security] max_payload_bytes` is refused unread, a device over its
//!   rate limit ([`crate::ingest::limits`]) is refused before decoding, the payload
//!   is decoded with the protocol's size-capped, validating decoder, and the
//!   topic's device must be the payload's device (device A publishing on
//!   device B's topic is refused; the broker's ACL binds each client to its
//!   own topic, see the README's security section);
//! - a batch from a device not configured under `[[devices]]` (or configured
//!   for another site) is refused unless `allow_unknown_devices` is set:
//!   nothing is stored and no ack is sent;
//! - the ack is returned only after the inbox committed the batch, and a
//!   duplicate batch is acked again (the agent resends when an ack was lost);
//! - a refused message returns an [`IngestError`] whose text names the
//!   problem and the fix, and is counted under its [`IngestError::reason`]
//!   (`refused_by_reason` in `/v1/stats`); the caller logs it and carries
//!   on. A rate-limited batch is not acked, so the agent resends it later.
//!
//! No MQTT here: [`Ingest::handle`] takes the topic and payload and returns
//! the [`Publication`] to send, so tests drive it directly.

pub mod commands;
pub mod gaps;
pub mod limits;
pub mod mqtt;
pub mod registry;

use std::sync::{Arc, Mutex};
use std::time::Instant;

use dockline_protocol::{
    Batch, Channel, DecodeError, DeviceId, EncodeError, SiteId, Status, StatusKind, Topic,
    TopicError, VerdictsWanted, codec,
};
use tokio::sync::Notify;
use tracing::{debug, error, info, warn};

use crate::inbox::{InboxError, InboxHandle};
use crate::ingest::limits::{DeviceRateLimiter, SecurityConfig};
use crate::ingest::registry::{DeviceConfig, DeviceRegistry, DeviceSet};
use crate::publication::Publication;

/// Most verdicts re-sent in answer to one birth or heartbeat; the agent asks
/// again with its next heartbeat for the rest.
const MAX_RESENT_VERDICTS: usize = 256;

/// A message was refused or could not be stored.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The topic does not follow the grammar.
    #[error("ignoring message: {0}")]
    Topic(#[from] TopicError),
    /// A channel the collector does not consume.
    #[error(
        "ignoring message on {topic}: the collector consumes only the events and status channels"
    )]
    Channel {
        /// The topic.
        topic: String,
    },
    /// The payload is larger than `[security] max_payload_bytes`.
    #[error(
        "refusing {len}-byte message on {topic} unread: the limit is {max} bytes ([security] max_payload_bytes); the sender must send smaller batches"
    )]
    Oversize {
        /// The topic.
        topic: String,
        /// The payload's size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The device publishes faster than its rate limit.
    #[error(
        "not storing or acking message on {topic}: device '{device}' is over its rate limit ({rate}/s, burst {burst}; [security] device_messages_per_sec and device_burst); the agent sends it again after its ack timeout"
    )]
    RateLimited {
        /// The topic.
        topic: String,
        /// The topic's device.
        device: DeviceId,
        /// Sustained messages per second allowed.
        rate: f64,
        /// Burst allowed.
        burst: u32,
    },
    /// The payload is not a valid protocol message.
    #[error("dropping malformed {what} on {topic} (not stored, not acked): {source}")]
    Decode {
        /// "batch" or "status".
        what: &'static str,
        /// The topic.
        topic: String,
        /// The decoder's complaint.
        source: DecodeError,
    },
    /// The payload names another device than the topic.
    #[error(
        "refusing {what} on {topic}: it claims device '{claimed}', the topic says '{topic_device}'; fix the agent's device id or its topic"
    )]
    DeviceMismatch {
        /// "batch" or "status".
        what: &'static str,
        /// The topic.
        topic: String,
        /// The device in the payload.
        claimed: DeviceId,
        /// The device in the topic.
        topic_device: DeviceId,
    },
    /// The device is not configured (or belongs to another site).
    #[error(
        "refusing {what} from unknown device '{device}' on site '{site}' (topic {topic}): add it under [[devices]] in collector.toml or set allow_unknown_devices = true"
    )]
    UnknownDevice {
        /// "batch" or "status".
        what: &'static str,
        /// The device.
        device: DeviceId,
        /// The site from the topic.
        site: SiteId,
        /// The topic.
        topic: String,
    },
    /// The inbox failed. A transient failure (the database does not answer)
    /// is retried by the MQTT edge; a deterministic one (a value the inbox
    /// cannot hold) is a refusal.
    #[error("cannot store message from {topic}: {source}")]
    Inbox {
        /// The topic.
        topic: String,
        /// What failed.
        source: InboxError,
    },
    /// Storing failed again and again while the inbox answered other calls:
    /// something in this message makes it fail. Refused, so one message
    /// cannot stall the session.
    #[error(
        "refusing message on {topic} after {attempts} failed attempts to store it while the inbox works (not acked to the agent, which sends it again after its ack timeout; if this repeats, report it with the collector's log): {source}"
    )]
    StoreFailed {
        /// The topic.
        topic: String,
        /// Attempts made.
        attempts: u32,
        /// The last failure.
        source: InboxError,
    },
    /// A media chunk was refused, or could not be stored
    /// ([`crate::media::ingest`]).
    #[error("media chunk on {topic}: {source}")]
    Media {
        /// The topic.
        topic: String,
        /// Why.
        source: crate::media::ingest::ChunkRefusal,
    },
    /// The ack could not be encoded.
    #[error("cannot encode ack for {topic}: {source}")]
    Encode {
        /// The topic.
        topic: String,
        /// What failed.
        source: EncodeError,
    },
}

impl IngestError {
    /// Whether the message was refused as bad input (counted in `refused`),
    /// rather than failing on our side.
    pub fn is_refusal(&self) -> bool {
        match self {
            IngestError::Inbox { source, .. } => source.is_deterministic(),
            IngestError::Encode { .. } => false,
            IngestError::Media { source, .. } => source.is_refusal(),
            _ => true,
        }
    }

    /// A short, stable name for the refusal counters
    /// (`refused_by_reason` in `/v1/stats`).
    pub fn reason(&self) -> &'static str {
        match self {
            IngestError::Topic(_) => "bad_topic",
            IngestError::Channel { .. } => "wrong_channel",
            IngestError::Oversize { .. }
            | IngestError::Decode {
                source: DecodeError::TooLarge { .. },
                ..
            } => "oversize",
            IngestError::Decode { .. } => "malformed",
            IngestError::DeviceMismatch { .. } => "device_mismatch",
            IngestError::UnknownDevice { .. } => "unknown_device",
            IngestError::RateLimited { .. } => "rate_limited",
            IngestError::Inbox {
                source: InboxError::OldEpoch { .. },
                ..
            } => "old_epoch",
            IngestError::Inbox { source, .. } if source.is_deterministic() => "bad_value",
            IngestError::StoreFailed { .. } => "store_failed",
            IngestError::Inbox { .. } => "inbox",
            IngestError::Encode { .. } => "encode",
            IngestError::Media { source, .. } => source.reason(),
        }
    }
}

/// The ingest stage.
#[derive(Debug, Clone)]
pub struct Ingest {
    inbox: InboxHandle,
    devices: Arc<DeviceRegistry>,
    stored: Arc<Notify>,
    limits: SecurityConfig,
    rate: Option<Arc<Mutex<DeviceRateLimiter>>>,
    metrics: Option<Arc<crate::metrics::Metrics>>,
    media: Option<crate::media::MediaHub>,
}

impl Ingest {
    /// Ingest into `inbox`, accepting `devices` (or anyone when
    /// `allow_unknown`); `stored` is notified after each batch with new events.
    pub fn new(
        inbox: InboxHandle,
        devices: &[DeviceConfig],
        allow_unknown: bool,
        stored: Arc<Notify>,
    ) -> Self {
        let limits = SecurityConfig::default();
        Self {
            inbox,
            devices: Arc::new(DeviceRegistry::new(DeviceSet::new(devices, allow_unknown))),
            stored,
            rate: DeviceRateLimiter::new(&limits).map(|l| Arc::new(Mutex::new(l))),
            limits,
            metrics: None,
            media: None,
        }
    }

    /// Takes media chunks into `hub` (without it, chunks are refused as
    /// `wrong_channel`), and records the media each stored event references.
    pub fn with_media(mut self, hub: crate::media::MediaHub) -> Self {
        self.media = Some(hub);
        self
    }

    /// The device registry this ingest (and every clone of it) checks
    /// senders against; a reload replaces its set.
    pub fn registry(&self) -> Arc<DeviceRegistry> {
        Arc::clone(&self.devices)
    }

    /// Counts stored events and heartbeat backlogs into `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<crate::metrics::Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// The same ingest with `limits` instead of the defaults.
    pub fn with_limits(mut self, limits: &SecurityConfig) -> Self {
        self.rate = DeviceRateLimiter::new(limits).map(|l| Arc::new(Mutex::new(l)));
        self.limits = limits.clone();
        self
    }

    /// Whether the inbox answers a trivial query now (tells a database that is
    /// down from a message that fails on its own).
    pub async fn inbox_answers(&self) -> bool {
        let Ok(probe) = DeviceId::new("probe") else {
            return false;
        };
        self.inbox
            .call(move |i| i.complete_up_to(&probe, 1).map(|_| ()))
            .await
            .is_ok()
    }

    /// Turns a message that keeps failing while the inbox answers into a
    /// counted `store_failed` refusal.
    pub async fn give_up(&self, topic: &str, e: IngestError) -> IngestError {
        let source = match e {
            IngestError::Inbox { source, .. } => source,
            IngestError::Encode { source, .. } => InboxError::Encode(source),
            other => return other,
        };
        let refused = IngestError::StoreFailed {
            topic: topic.into(),
            attempts: crate::ingest::mqtt::MAX_STORE_ATTEMPTS,
            source,
        };
        let reason = refused.reason();
        if let Err(count_err) = self.inbox.call(move |i| i.count_refused(reason)).await {
            error!("cannot count a refused message: {count_err}");
        }
        refused
    }

    /// Takes a token from the topic device's bucket; false when over the limit.
    fn within_rate(&self, device: &DeviceId) -> bool {
        let Some(rate) = &self.rate else {
            return true;
        };
        // A poisoned lock only means another thread panicked mid-update of
        // a counter; the buckets are still usable.
        let mut limiter = rate.lock().unwrap_or_else(|p| p.into_inner());
        limiter.allow(device, Instant::now())
    }

    /// Handles one message; returns the ack to publish, if any. Refusals are
    /// counted in the inbox's `refused` counter, and under their reason,
    /// before the error is returned.
    pub async fn handle(
        &self,
        topic: &str,
        payload: &[u8],
    ) -> Result<Option<Publication>, IngestError> {
        let result = self.dispatch(topic, payload).await;
        if let Err(e) = &result
            && e.is_refusal()
        {
            let reason = e.reason();
            if let Err(count_err) = self.inbox.call(move |i| i.count_refused(reason)).await {
                error!("cannot count a refused message: {count_err}");
            }
        }
        result
    }

    async fn dispatch(
        &self,
        topic: &str,
        payload: &[u8],
    ) -> Result<Option<Publication>, IngestError> {
        if topic.ends_with("/media") {
            return self.ingest_media(topic, payload).await.map(Some);
        }
        let parsed = Topic::parse(topic)?;
        // Cheap checks before any decoding work.
        if payload.len() > self.limits.max_payload_bytes {
            return Err(IngestError::Oversize {
                topic: topic.into(),
                len: payload.len(),
                max: self.limits.max_payload_bytes,
            });
        }
        if !self.within_rate(&parsed.device) {
            return Err(IngestError::RateLimited {
                topic: topic.into(),
                device: parsed.device.clone(),
                rate: self.limits.device_messages_per_sec,
                burst: self.limits.device_burst,
            });
        }
        match parsed.channel {
            Channel::Events => self.ingest_batch(topic, parsed, payload).await.map(Some),
            Channel::Status => self.ingest_status(topic, parsed, payload).await,
            Channel::Ack | Channel::Cmd => Err(IngestError::Channel {
                topic: topic.into(),
            }),
        }
    }

    /// A media chunk: the topic's device admitted, the payload capped, then
    /// [`crate::media::MediaHub::chunk`] (not rate-limited: the agent paces
    /// media by bytes, `[uplink] media_bytes_per_sec`).
    async fn ingest_media(&self, topic: &str, payload: &[u8]) -> Result<Publication, IngestError> {
        let (site, device, _) = Topic::parse_media(topic)?;
        let Some(hub) = &self.media else {
            return Err(IngestError::Channel {
                topic: topic.into(),
            });
        };
        if payload.len() > self.limits.max_payload_bytes {
            return Err(IngestError::Oversize {
                topic: topic.into(),
                len: payload.len(),
                max: self.limits.max_payload_bytes,
            });
        }
        if !self.devices.current().admits(&device, &site) {
            return Err(IngestError::UnknownDevice {
                what: "media chunk",
                device,
                site,
                topic: topic.into(),
            });
        }
        hub.chunk(&site, &device, payload)
            .await
            .map_err(|source| IngestError::Media {
                topic: topic.into(),
                source,
            })
    }

    /// Records which media the batch's events reference, so retention
    /// keeps them until the events are settled.
    async fn record_media_refs(&self, batch: &Batch) {
        let Some(hub) = &self.media else {
            return;
        };
        let refs: Vec<(String, Vec<crate::media::MediaRef>)> = batch
            .events
            .iter()
            .filter_map(|e| {
                let refs = crate::media::refs_of_payload(&e.payload);
                (!refs.is_empty()).then(|| (e.id.to_string(), refs))
            })
            .collect();
        if refs.is_empty() {
            return;
        }
        let recorded = hub
            .store
            .call(move |s| {
                for (event, hashes) in &refs {
                    s.add_refs(event, hashes)?;
                }
                Ok(())
            })
            .await;
        if let Err(e) = recorded {
            // Retention then may not see these references: it only ever
            // deletes media attached long ago, so this is logged, not fatal.
            error!("cannot record the media references of a batch: {e}");
        }
    }

    fn check_device(
        &self,
        what: &'static str,
        topic: &str,
        parsed: &Topic,
        claimed: &DeviceId,
    ) -> Result<(), IngestError> {
        if claimed != &parsed.device {
            return Err(IngestError::DeviceMismatch {
                what,
                topic: topic.into(),
                claimed: claimed.clone(),
                topic_device: parsed.device.clone(),
            });
        }
        if !self.devices.current().admits(&parsed.device, &parsed.site) {
            return Err(IngestError::UnknownDevice {
                what,
                device: parsed.device.clone(),
                site: parsed.site.clone(),
                topic: topic.into(),
            });
        }
        Ok(())
    }

    async fn ingest_batch(
        &self,
        topic: &str,
        parsed: Topic,
        payload: &[u8],
    ) -> Result<Publication, IngestError> {
        let batch: Batch = codec::decode(payload).map_err(|source| IngestError::Decode {
            what: "batch",
            topic: topic.into(),
            source,
        })?;
        self.check_device("batch", topic, &parsed, &batch.device)?;
        let site = parsed.site.clone();
        let (device, epoch, count) = (batch.device.clone(), batch.epoch, batch.events.len());
        self.record_media_refs(&batch).await;
        let first_seq = batch.events.first().map(|e| e.seq);
        let last_seq = batch.events.last().map(|e| e.seq);
        let now = crate::now_ms();
        let outcome = self
            .inbox
            .call(move |i| i.store_batch(&site, &batch, now))
            .await
            .map_err(|source| IngestError::Inbox {
                topic: topic.into(),
                source,
            })?;
        if outcome.stored > 0 {
            self.stored.notify_one();
            if let Some(m) = &self.metrics {
                m.received(parsed.site.as_str(), outcome.stored as u64);
            }
        }
        if !outcome.refused_claims.is_empty() {
            warn!(device = %device, epoch, claims = ?outcome.refused_claims,
                complete_up_to = outcome.complete_up_to,
                "refusing watermark claims above the highest sequence stored for this device (counted as bad_watermark): \
                 only stored events move a device's watermark; a forged batch, or a device whose stored events this collector lost \
                 (then close the hole with `dockline-collector holes close`)");
        }
        for (seq, reason) in &outcome.quarantined {
            warn!(device = %device, epoch, seq, reason,
                "event kept in quarantine, not stored (counted under its reason): far_ahead = too far above the device's \
                 watermark ([security] max_seq_ahead), the device sends it again once its backlog is stored; \
                 seq_conflict = another event under a sequence already stored, kept for the operator");
        }
        for (lo, hi) in &outcome.newly_shed {
            warn!(device = %device, epoch, first_seq = lo, last_seq = hi,
                "device reports these events dropped or lost on the device; they will never arrive");
        }
        let level_dup = outcome.duplicates > 0 && outcome.stored == 0;
        if level_dup {
            info!(device = %device, epoch, first_seq, last_seq, duplicates = outcome.duplicates,
                complete_up_to = outcome.complete_up_to, "duplicate batch re-acked");
        } else {
            debug!(device = %device, epoch, first_seq, last_seq, events = count,
                stored = outcome.stored, duplicates = outcome.duplicates,
                complete_up_to = outcome.complete_up_to, "batch committed");
        }
        Publication::ack(
            &parsed.site,
            &device,
            epoch,
            Some(outcome.complete_up_to),
            outcome.also_stored,
            Vec::new(),
        )
        .map_err(|source| IngestError::Encode {
            topic: topic.into(),
            source,
        })
    }

    async fn ingest_status(
        &self,
        topic: &str,
        parsed: Topic,
        payload: &[u8],
    ) -> Result<Option<Publication>, IngestError> {
        let status: Status = codec::decode(payload).map_err(|source| IngestError::Decode {
            what: "status",
            topic: topic.into(),
            source,
        })?;
        self.check_device("status", topic, &parsed, &status.device)?;
        let site = parsed.site.clone();
        let s = status.clone();
        let applied = self
            .inbox
            .call(move |i| i.record_status(&site, &s, crate::now_ms()))
            .await
            .map_err(|source| IngestError::Inbox {
                topic: topic.into(),
                source,
            })?;
        let device = &status.device;
        if let (
            Some(m),
            true,
            StatusKind::Heartbeat {
                queued,
                oldest_unacked_ms,
                ..
            },
        ) = (&self.metrics, applied, &status.kind)
        {
            m.backlog(
                parsed.site.as_str(),
                device.as_str(),
                *queued,
                *oldest_unacked_ms,
            );
        }
        match (&status.kind, applied) {
            (_, false) => debug!(device = %device, session = status.session,
                "ignoring status from an older session"),
            (StatusKind::Birth { agent_version, .. }, true) => info!(device = %device,
                site = %parsed.site, session = status.session, agent_version = %agent_version,
                "device online"),
            (StatusKind::Death { graceful }, true) => {
                if *graceful {
                    info!(device = %device, site = %parsed.site, session = status.session,
                        "device offline (said goodbye)");
                } else {
                    warn!(device = %device, site = %parsed.site, session = status.session,
                        "device offline (link lost, last will)");
                }
            }
            (
                StatusKind::Heartbeat {
                    queued,
                    oldest_unacked_ms,
                    ..
                },
                true,
            ) => debug!(
                device = %device, queued, oldest_unacked_ms, "heartbeat"),
        }
        let wanted = match &status.kind {
            StatusKind::Birth {
                verdicts_wanted, ..
            } => *verdicts_wanted,
            StatusKind::Heartbeat {
                health: Some(h), ..
            } => h.verdicts_wanted,
            _ => None,
        };
        match wanted {
            Some(w) if applied => self.resend_verdicts(topic, &parsed, w).await,
            _ => Ok(None),
        }
    }

    /// Answers an agent that missed verdicts (published while it was offline
    /// and its broker session was gone) with those recorded since `wanted`.
    async fn resend_verdicts(
        &self,
        topic: &str,
        parsed: &Topic,
        wanted: VerdictsWanted,
    ) -> Result<Option<Publication>, IngestError> {
        let device = parsed.device.clone();
        let verdicts = self
            .inbox
            .call(move |i| {
                i.verdicts_from(&device, wanted.epoch, wanted.from_seq, MAX_RESENT_VERDICTS)
            })
            .await
            .map_err(|source| IngestError::Inbox {
                topic: topic.into(),
                source,
            })?;
        if verdicts.is_empty() {
            return Ok(None);
        }
        debug!(device = %parsed.device, epoch = wanted.epoch, from_seq = wanted.from_seq,
            verdicts = verdicts.len(), "re-sending verdicts the device missed");
        Publication::ack(
            &parsed.site,
            &parsed.device,
            wanted.epoch,
            None,
            Vec::new(),
            verdicts,
        )
        .map(Some)
        .map_err(|source| IngestError::Encode {
            topic: topic.into(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inbox::Inbox;
    use crate::inbox::tests::batch;
    use dockline_protocol::{Ack, Outcome, PROTOCOL_VERSION};

    fn setup(dir: &tempfile::TempDir, allow_unknown: bool) -> (Ingest, InboxHandle) {
        let inbox = InboxHandle::new(Inbox::open(&dir.path().join("inbox.db")).expect("inbox"));
        let devices = vec![DeviceConfig {
            id: DeviceId::new("hh-01").expect("id"),
            site: SiteId::new("dc-north").expect("site"),
        }];
        let ingest = Ingest::new(
            inbox.clone(),
            &devices,
            allow_unknown,
            Arc::new(Notify::new()),
        );
        (ingest, inbox)
    }

    const TOPIC: &str = "dockline/v1/dc-north/hh-01/events";

    fn decode_ack(p: &Publication) -> Ack {
        codec::decode(&p.payload).expect("ack decodes")
    }

    #[tokio::test]
    async fn malformed_cbor_is_refused_and_the_next_batch_still_lands() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (ingest, inbox) = setup(&dir, false);
        let err = ingest
            .handle(TOPIC, b"\xff\x00 not cbor")
            .await
            .expect_err("garbage is refused");
        let text = err.to_string();
        assert!(
            text.contains("dropping malformed batch on dockline/v1/dc-north/hh-01/events"),
            "{text}"
        );
        assert!(text.contains("not valid dockline CBOR"), "{text}");
        assert!(
            text.contains("is the sender speaking protocol v1?"),
            "{text}"
        );

        let good = codec::encode(&batch("hh-01", 1, 1, &[1, 2])).expect("encode");
        let ack = ingest
            .handle(TOPIC, &good)
            .await
            .expect("valid batch accepted")
            .expect("ack");
        assert_eq!(ack.topic, "dockline/v1/dc-north/hh-01/ack");
        let ack = decode_ack(&ack);
        assert_eq!(ack.v, PROTOCOL_VERSION);
        assert_eq!(ack.stored_up_to, Some(2));
        assert!(ack.verdicts.is_empty());
        let stats = inbox.call(|i| i.stats()).await.expect("stats");
        assert_eq!((stats.received, stats.refused), (2, 1));
    }

    #[tokio::test]
    async fn unknown_device_is_refused_without_ack_then_known_device_accepted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (ingest, inbox) = setup(&dir, false);
        let stranger = codec::encode(&batch("hh-99", 1, 1, &[1])).expect("encode");
        let err = ingest
            .handle("dockline/v1/dc-north/hh-99/events", &stranger)
            .await
            .expect_err("unknown device refused");
        assert_eq!(
            err.to_string(),
            "refusing batch from unknown device 'hh-99' on site 'dc-north' \
             (topic dockline/v1/dc-north/hh-99/events): add it under [[devices]] in \
             collector.toml or set allow_unknown_devices = true"
        );
        // Known device on the wrong site is refused too.
        let wrong_site = codec::encode(&batch("hh-01", 1, 1, &[1])).expect("encode");
        let err = ingest
            .handle("dockline/v1/dc-south/hh-01/events", &wrong_site)
            .await
            .expect_err("site mismatch refused");
        assert!(matches!(err, IngestError::UnknownDevice { .. }), "{err}");
        // Topic and payload disagree on the device.
        let err = ingest
            .handle(TOPIC, &stranger)
            .await
            .expect_err("mismatch refused");
        assert!(err.to_string().contains("claims device 'hh-99'"), "{err}");

        let good = codec::encode(&batch("hh-01", 1, 1, &[1])).expect("encode");
        let ack = ingest
            .handle(TOPIC, &good)
            .await
            .expect("accepted")
            .expect("ack");
        assert_eq!(decode_ack(&ack).stored_up_to, Some(1));
        let stats = inbox.call(|i| i.stats()).await.expect("stats");
        assert_eq!((stats.received, stats.refused), (1, 3));
        assert!(stats.devices.iter().all(|d| d.device != "hh-99"));
    }

    #[tokio::test]
    async fn unknown_devices_allowed_when_configured_and_duplicates_re_acked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (ingest, _inbox) = setup(&dir, true);
        let topic = "dockline/v1/dc-east/van-3/events";
        let b = codec::encode(&batch("van-3", 1, 1, &[1, 2, 3])).expect("encode");
        let first = ingest.handle(topic, &b).await.expect("ok").expect("ack");
        let again = ingest.handle(topic, &b).await.expect("ok").expect("ack");
        assert_eq!(first, again, "a duplicate is acked with the same watermark");
        assert_eq!(decode_ack(&again).stored_up_to, Some(3));
    }

    /// A device that was offline when its verdicts were published asks for
    /// them in its birth message and gets every recorded one, in order.
    #[tokio::test]
    async fn birth_asking_for_missed_verdicts_gets_them_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (ingest, inbox) = setup(&dir, false);
        let b = codec::encode(&batch("hh-01", 7, 1, &[1, 2, 3, 4])).expect("encode");
        ingest
            .handle("dockline/v1/dc-north/hh-01/events", &b)
            .await
            .expect("stored");
        let dev = DeviceId::new("hh-01").expect("id");
        for (seq, outcome) in [
            (
                2,
                Outcome::Booked {
                    document: "D-2".into(),
                },
            ),
            (
                3,
                Outcome::Rejected {
                    reason: "closed period".into(),
                },
            ),
        ] {
            let d = dev.clone();
            inbox
                .call(move |i| i.record_verdict(&d, 7, seq, &outcome, 1))
                .await
                .expect("verdict");
        }
        let birth = |epoch, from_seq| Status {
            v: 1,
            device: dev.clone(),
            session: 2,
            at_ms: 0,
            kind: StatusKind::Birth {
                agent_version: "0.1.0".into(),
                verdicts_wanted: Some(VerdictsWanted { epoch, from_seq }),
            },
        };
        let topic = "dockline/v1/dc-north/hh-01/status";
        let bytes = codec::encode(&birth(7, 2)).expect("encode");
        let ack = ingest
            .handle(topic, &bytes)
            .await
            .expect("ok")
            .expect("verdict ack");
        let ack = decode_ack(&ack);
        assert_eq!((ack.epoch, ack.stored_up_to), (7, None));
        let seqs: Vec<_> = ack.verdicts.iter().map(|v| v.seq).collect();
        assert_eq!(seqs, vec![2, 3]);
        assert_eq!(
            ack.verdicts[0].outcome,
            Outcome::Booked {
                document: "D-2".into()
            }
        );
        // Nothing recorded from there on, or another epoch: no answer.
        let bytes = codec::encode(&birth(7, 4)).expect("encode");
        assert!(ingest.handle(topic, &bytes).await.expect("ok").is_none());
        let bytes = codec::encode(&birth(8, 1)).expect("encode");
        assert!(ingest.handle(topic, &bytes).await.expect("ok").is_none());
    }

    #[tokio::test]
    async fn status_updates_online_state() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (ingest, inbox) = setup(&dir, false);
        let status = Status {
            v: 1,
            device: DeviceId::new("hh-01").expect("id"),
            session: 1,
            at_ms: 0,
            kind: StatusKind::Birth {
                agent_version: "0.1.0".into(),
                verdicts_wanted: None,
            },
        };
        let bytes = codec::encode(&status).expect("encode");
        let none = ingest
            .handle("dockline/v1/dc-north/hh-01/status", &bytes)
            .await
            .expect("status accepted");
        assert!(none.is_none());
        let stats = inbox.call(|i| i.stats()).await.expect("stats");
        assert!(stats.devices[0].online);
        let err = ingest
            .handle("dockline/v1/dc-north/hh-01/status", b"junk")
            .await
            .expect_err("bad status");
        assert!(err.to_string().contains("malformed status"), "{err}");
    }

    fn two_devices(dir: &tempfile::TempDir, limits: &SecurityConfig) -> (Ingest, InboxHandle) {
        let inbox = InboxHandle::new(Inbox::open(&dir.path().join("inbox.db")).expect("inbox"));
        let devices = ["hh-a", "hh-b"]
            .map(|d| DeviceConfig {
                id: DeviceId::new(d).expect("id"),
                site: SiteId::new("dc-north").expect("site"),
            })
            .to_vec();
        let ingest = Ingest::new(inbox.clone(), &devices, false, Arc::new(Notify::new()))
            .with_limits(limits);
        (ingest, inbox)
    }

    fn reasons(stats: &crate::inbox::Stats) -> Vec<(&str, u64)> {
        stats
            .refused_by_reason
            .iter()
            .map(|(k, v)| (k.as_str(), *v))
            .collect()
    }

    /// Device A's batch on device B's topic: refused, counted, nothing
    /// stored for either device, no ack.
    #[tokio::test]
    async fn device_a_publishing_as_device_b_is_rejected_and_counted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (ingest, inbox) = two_devices(&dir, &SecurityConfig::default());
        let as_a = codec::encode(&batch("hh-a", 1, 1, &[1, 2])).expect("encode");
        let err = ingest
            .handle("dockline/v1/dc-north/hh-b/events", &as_a)
            .await
            .expect_err("A on B's topic");
        assert_eq!(err.reason(), "device_mismatch");
        assert!(
            err.to_string()
                .contains("claims device 'hh-a', the topic says 'hh-b'"),
            "{err}"
        );
        // The same for a status message.
        let status = Status {
            v: 1,
            device: DeviceId::new("hh-a").expect("id"),
            session: 1,
            at_ms: 0,
            kind: StatusKind::Death { graceful: true },
        };
        let err = ingest
            .handle(
                "dockline/v1/dc-north/hh-b/status",
                &codec::encode(&status).expect("encode"),
            )
            .await
            .expect_err("A's status on B's topic");
        assert_eq!(err.reason(), "device_mismatch");
        let stats = inbox.call(|i| i.stats()).await.expect("stats");
        assert_eq!(stats.received, 0, "nothing stored");
        assert_eq!(stats.refused, 2);
        assert_eq!(reasons(&stats), vec![("device_mismatch", 2)]);
        // A on its own topic is fine.
        ingest
            .handle("dockline/v1/dc-north/hh-a/events", &as_a)
            .await
            .expect("own topic")
            .expect("ack");
    }

    #[tokio::test]
    async fn oversize_and_malformed_payloads_are_rejected_and_counted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let limits = SecurityConfig {
            max_payload_bytes: 4096,
            ..SecurityConfig::default()
        };
        let (ingest, inbox) = two_devices(&dir, &limits);
        let topic = "dockline/v1/dc-north/hh-a/events";
        let err = ingest
            .handle(topic, &vec![0u8; 4097])
            .await
            .expect_err("oversize");
        assert_eq!(err.reason(), "oversize");
        assert!(
            err.to_string().contains("4097-byte") && err.to_string().contains("4096"),
            "{err}"
        );
        for junk in [&b"\xff\x00 junk"[..], &b""[..], &[0xa1, 0x61, 0x76][..]] {
            let err = ingest.handle(topic, junk).await.expect_err("malformed");
            assert_eq!(err.reason(), "malformed", "{err}");
        }
        let err = ingest
            .handle("dockline/v1/dc-north/hh-a/nope", b"x")
            .await
            .expect_err("bad topic");
        assert_eq!(err.reason(), "bad_topic");
        // Still serving: a good batch lands.
        let good = codec::encode(&batch("hh-a", 1, 1, &[1])).expect("encode");
        ingest.handle(topic, &good).await.expect("ok").expect("ack");
        let stats = inbox.call(|i| i.stats()).await.expect("stats");
        assert_eq!(stats.refused, 5);
        assert_eq!(
            reasons(&stats),
            vec![("bad_topic", 1), ("malformed", 3), ("oversize", 1)]
        );
        assert_eq!(stats.received, 1);
    }

    /// Over the rate limit a batch is neither stored nor acked (the agent
    /// resends it after its ack timeout); other devices are not affected;
    /// once the bucket refills the device is served again.
    #[tokio::test]
    async fn a_device_over_its_rate_limit_is_not_acked_and_is_counted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let limits = SecurityConfig {
            device_messages_per_sec: 10.0,
            device_burst: 2,
            ..SecurityConfig::default()
        };
        let (ingest, inbox) = two_devices(&dir, &limits);
        let topic = "dockline/v1/dc-north/hh-a/events";
        for seq in 1..=2 {
            let b = codec::encode(&batch("hh-a", 1, 1, &[seq])).expect("encode");
            ingest.handle(topic, &b).await.expect("within burst");
        }
        let third = codec::encode(&batch("hh-a", 1, 1, &[3])).expect("encode");
        let err = ingest.handle(topic, &third).await.expect_err("over");
        assert_eq!(err.reason(), "rate_limited");
        assert!(err.is_refusal());
        assert!(err.to_string().contains("hh-a"), "{err}");
        let b = codec::encode(&batch("hh-b", 1, 1, &[1])).expect("encode");
        ingest
            .handle("dockline/v1/dc-north/hh-b/events", &b)
            .await
            .expect("B has its own bucket");
        let stats = inbox.call(|i| i.stats()).await.expect("stats");
        assert_eq!(reasons(&stats), vec![("rate_limited", 1)]);
        assert_eq!(stats.received, 3, "the refused batch is not stored");
        tokio::time::sleep(std::time::Duration::from_millis(150)).await;
        let ack = ingest
            .handle(topic, &third)
            .await
            .expect("refilled")
            .expect("ack");
        assert_eq!(decode_ack(&ack).stored_up_to, Some(3));
    }
}
