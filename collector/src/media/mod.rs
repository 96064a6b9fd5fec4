//! Proof-of-delivery media at the collector: the signatures and photos an
//! agent uploads in chunks (`dockline_protocol::media`), stored by their
//! SHA-256, handed to the ERP adapters with the event that references them.
//!
//! This module names what the rest of the collector sees of a medium and
//! holds [`MediaHub`], the media state ingest, delivery and HTTP share.
//!
//! | file | role |
//! |---|---|
//! | `config.rs` | `[media]` ([`config::MediaConfig`]) |
//! | `store/` | the content-addressed store, files or PostgreSQL ([`store::MediaStore`]) |
//! | `ingest.rs` | chunks in, acks out, reassembly per medium |
//! | `wait.rs` | pure: may an event go, wait, or go without its media |
//! | `sweep.rs` | the retention timer |
//! | `metrics.rs` | the media counters |
//! | `link.rs` | signed, expiring links for the ERP |

pub mod config;
pub mod ingest;
pub mod link;
pub mod metrics;
pub mod store;
pub mod sweep;
pub mod wait;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use dockline_protocol::media::{MediaHash, MediaType};
use dockline_protocol::{BusinessEvent, EventDetail, Payload};

/// What a medium is to its event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MediaRole {
    /// The receiver's signature (`delivered.sig`).
    Signature,
    /// A photo of the handover (`delivered.photo`).
    Photo,
}

impl MediaRole {
    /// Its name in documents, file names and logs.
    pub fn name(self) -> &'static str {
        match self {
            Self::Signature => "signature",
            Self::Photo => "photo",
        }
    }
}

/// A reference from an event to a medium.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MediaRef {
    /// The medium's name.
    pub hash: MediaHash,
    /// What it is to the event.
    pub role: MediaRole,
}

/// The media an event references by hash (`sha256:<hex>` in `delivered`'s
/// `sig` and `photo`). A reference that is not a hash (a file name from an
/// older agent) names no medium the collector can wait for: it is skipped.
pub fn refs_of(event: &BusinessEvent) -> Vec<MediaRef> {
    let EventDetail::Delivered(pod) = &event.detail else {
        return Vec::new();
    };
    let mut refs = Vec::new();
    for (text, role) in [
        (&pod.signature_ref, MediaRole::Signature),
        (&pod.photo_ref, MediaRole::Photo),
    ] {
        if let Some(hash) = text.as_deref().and_then(MediaHash::parse_ref) {
            refs.push(MediaRef { hash, role });
        }
    }
    refs
}

/// The media of an envelope's business event (none for other payloads).
pub fn refs_of_payload(payload: &Payload) -> Vec<MediaRef> {
    match payload {
        Payload::Event(event) => refs_of(event),
        _ => Vec::new(),
    }
}

/// A stored medium as an ERP adapter receives it with its event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErpMedium {
    /// Its name.
    pub hash: MediaHash,
    /// PNG or JPEG.
    pub media_type: MediaType,
    /// What it is to the event.
    pub role: MediaRole,
    /// Its bytes, verified against `hash` when they were stored.
    pub bytes: Arc<[u8]>,
}

/// A lane waiting for media, for the dashboard and the scheduler.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ParkedLane {
    /// The lane key.
    pub lane: String,
    /// For people: which medium, from which device, until when.
    pub reason: String,
    /// When the wait began (ms since the Unix epoch).
    pub since_ms: i64,
    /// When the event goes without its media.
    pub until_ms: i64,
    /// What it waits for.
    #[serde(skip)]
    pub waits_for: Vec<MediaHash>,
}

/// The media state ingest, delivery and HTTP share (cloning shares it).
#[derive(Clone)]
pub struct MediaHub {
    /// The store.
    pub store: store::MediaHandle,
    /// `[media]`.
    pub config: config::MediaConfig,
    /// Counters.
    pub metrics: metrics::MediaMetrics,
    /// Notified (`notify_one`) when a medium is stored: delivery's wake.
    pub stored: Arc<Notify>,
    pub(crate) table: Arc<tokio::sync::Mutex<ingest::Table>>,
    parked: Arc<Mutex<BTreeMap<String, ParkedLane>>>,
}

impl std::fmt::Debug for MediaHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MediaHub")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl MediaHub {
    /// A hub over `store`; `stored` is notified when a medium is stored.
    pub fn new(
        store: Box<dyn store::MediaStore>,
        config: config::MediaConfig,
        stored: Arc<Notify>,
    ) -> Self {
        Self {
            store: store::MediaHandle::new(store),
            config,
            metrics: metrics::MediaMetrics::default(),
            stored,
            table: Arc::default(),
            parked: Arc::default(),
        }
    }

    fn lock_parked(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, ParkedLane>> {
        self.parked.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records that `lane` waits for media.
    pub fn park(&self, lane: ParkedLane) {
        let mut p = self.lock_parked();
        p.insert(lane.lane.clone(), lane);
        self.metrics.parked(p.len());
    }

    /// The lane no longer waits.
    pub fn unpark(&self, lane: &str) {
        let mut p = self.lock_parked();
        p.remove(lane);
        self.metrics.parked(p.len());
    }

    /// Lanes waiting for media, longest first.
    pub fn parked_lanes(&self) -> Vec<ParkedLane> {
        let mut v: Vec<ParkedLane> = self.lock_parked().values().cloned().collect();
        v.sort_by_key(|l| l.since_ms);
        v
    }

    /// Whether `lane` is parked and not yet due at `now_ms`.
    pub fn is_parked(&self, lane: &str, now_ms: i64) -> bool {
        self.lock_parked()
            .get(lane)
            .is_some_and(|l| l.until_ms > now_ms)
    }

    /// The earliest deadline of a parked lane.
    pub fn next_deadline_ms(&self) -> Option<i64> {
        self.lock_parked().values().map(|l| l.until_ms).min()
    }

    /// A medium was stored: lanes waiting for it may look again.
    pub(crate) fn release(&self, hash: &MediaHash) {
        let mut p = self.lock_parked();
        p.retain(|_, l| !l.waits_for.contains(hash));
        self.metrics.parked(p.len());
    }
}
