//! The media counters for `GET /metrics` (prometheus-client):
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `dockline_media_stored_total` | counter | media stored (verified) |
//! | `dockline_media_stored_bytes_total` | counter | their bytes |
//! | `dockline_media_refused_total` | counter | `reason` (fixed names from ingest) |
//! | `dockline_media_parked_lanes` | gauge | lanes waiting for media now |
//! | `dockline_media_delivered_without_total` | counter | events delivered after their media wait ran out |
//! | `dockline_media_swept_total` | counter | media deleted by retention |
//! | `dockline_media_served_total` | counter | `outcome` (`ok`, `unauthorized`, `forbidden`, `not_found`) |
//!
//! Label values are fixed names from this crate, never from the wire.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::metrics::{Labels, labels};

/// Shared counters; cloning shares them.
#[derive(Debug, Clone, Default)]
pub struct MediaMetrics {
    stored: Counter,
    stored_bytes: Counter,
    refused: Family<Labels, Counter>,
    parked: Gauge,
    without: Counter,
    swept: Counter,
    served: Family<Labels, Counter>,
}

impl MediaMetrics {
    /// A medium of `len` bytes stored.
    pub fn stored(&self, len: u64) {
        self.stored.inc();
        self.stored_bytes.inc_by(len);
    }
    /// A chunk refused for `reason`.
    pub fn refused(&self, reason: &'static str) {
        self.refused
            .get_or_create(&labels(&[("reason", reason)]))
            .inc();
    }
    /// Lanes parked for media now.
    pub fn parked(&self, n: usize) {
        self.parked.set(i64::try_from(n).unwrap_or(i64::MAX));
    }
    /// An event delivered without some of its media.
    pub fn delivered_without(&self) {
        self.without.inc();
    }
    /// Media swept.
    pub fn swept(&self, n: u64) {
        self.swept.inc_by(n);
    }
    /// A `GET /v1/media/…` answered with `outcome`.
    pub fn served(&self, outcome: &'static str) {
        self.served
            .get_or_create(&labels(&[("outcome", outcome)]))
            .inc();
    }
    /// Counts read back (tests, stats).
    pub fn snapshot(&self) -> (u64, u64, u64) {
        (self.stored.get(), self.without.get(), self.swept.get())
    }
    /// Refusals of `reason` so far.
    pub fn refused_count(&self, reason: &'static str) -> u64 {
        self.refused
            .get_or_create(&labels(&[("reason", reason)]))
            .get()
    }

    /// Registers every family in `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "dockline_media_stored",
            "Media stored (verified by hash) since start",
            self.stored.clone(),
        );
        registry.register(
            "dockline_media_stored_bytes",
            "Bytes of media stored since start",
            self.stored_bytes.clone(),
        );
        registry.register(
            "dockline_media_refused",
            "Media chunks refused, by reason",
            self.refused.clone(),
        );
        registry.register(
            "dockline_media_parked_lanes",
            "Delivery lanes waiting for media now",
            self.parked.clone(),
        );
        registry.register(
            "dockline_media_delivered_without",
            "Events delivered without media whose wait ran out",
            self.without.clone(),
        );
        registry.register(
            "dockline_media_swept",
            "Media deleted by the retention sweep",
            self.swept.clone(),
        );
        registry.register(
            "dockline_media_served",
            "GET /v1/media answers, by outcome",
            self.served.clone(),
        );
    }
}
