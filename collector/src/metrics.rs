//! The collector's own counters, kept with `prometheus-client`: events
//! received per site, ERP outcomes per site and adapter, ERP response
//! classes, the delivery latency histogram, and the backlog each device
//! reported in its latest heartbeat. Ingest and delivery feed them; the
//! HTTP layer's `GET /metrics` (`http/metrics.rs`) registers them
//! beside the inbox's levels and encodes the lot. This module sits below
//! both: it imports neither.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `dockline_events_received_total` | counter | `site` |
//! | `dockline_events_outcome_total` | counter | `site`, `adapter`, `outcome` (`booked`, `rejected`, `dead_lettered`) |
//! | `dockline_erp_responses_total` | counter | `adapter`, `class` (`booked`, `transient`, `throttled`, …) |
//! | `dockline_delivery_latency_seconds` | histogram | `adapter` (capture on the device → booked) |
//! | `dockline_device_backlog_events` | gauge | `site`, `device` (latest heartbeat) |
//! | `dockline_device_backlog_oldest_seconds` | gauge | `site`, `device` |
//!
//! Invariants: label values come from the config (sites, the adapter) or
//! from devices that passed ingest's checks, and the backlog keeps at most
//! [`MAX_DEVICES`] devices, so a flood of device names cannot grow the
//! exposition without bound; counters only go up for the process's life.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Upper bounds of the latency histogram's buckets, seconds.
const LATENCY_BUCKETS: [f64; 14] = [
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0,
];

/// Most devices whose heartbeat backlog is kept (a bound on label count).
pub const MAX_DEVICES: usize = 10_000;

/// A label set: names fixed here, values from the config or the devices.
pub type Labels = Vec<(&'static str, String)>;

/// `[(name, value), …]` as [`Labels`].
pub fn labels(pairs: &[(&'static str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| (*k, (*v).to_string())).collect()
}

/// Writes one metric family of constant samples (figures read at scrape
/// time): a descriptor, then one sample per label set.
pub fn const_family<M: EncodeMetric>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    samples: Vec<(Labels, M)>,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, kind)?;
    for (labels, value) in &samples {
        value.encode(family.encode_family(labels)?)?;
    }
    Ok(())
}

/// What a device's latest heartbeat reported.
#[derive(Debug, Clone, Copy, Default)]
struct Backlog {
    events: u64,
    oldest_ms: u64,
}

/// The heartbeat backlogs, bounded, encoded at scrape time.
#[derive(Debug, Clone, Default)]
struct Backlogs(Arc<Mutex<BTreeMap<(String, String), Backlog>>>);

impl Collector for Backlogs {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let backlog = self.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let per_device = |b: &(&(String, String), &Backlog)| {
            let ((site, device), _) = b;
            labels(&[("site", site), ("device", device)])
        };
        const_family(
            &mut e,
            "dockline_device_backlog_events",
            "Events a device holds unacknowledged, from its latest heartbeat.",
            MetricType::Gauge,
            backlog
                .iter()
                .map(|b| (per_device(&b), ConstGauge::new(b.1.events as i64)))
                .collect(),
        )?;
        const_family(
            &mut e,
            "dockline_device_backlog_oldest_seconds",
            "Age of a device's oldest unacknowledged event, from its latest heartbeat.",
            MetricType::Gauge,
            backlog
                .iter()
                .map(|b| {
                    (
                        per_device(&b),
                        ConstGauge::new(b.1.oldest_ms as f64 / 1000.0),
                    )
                })
                .collect(),
        )
    }
}

/// The in-memory counters (one per collector process). Cloning shares them.
#[derive(Debug, Clone)]
pub struct Metrics {
    adapter: &'static str,
    received: Family<Labels, Counter>,
    outcomes: Family<Labels, Counter>,
    responses: Family<Labels, Counter>,
    latency: Family<Labels, Histogram>,
    backlog: Backlogs,
}

impl Metrics {
    /// Counters for a collector delivering through `adapter` (its kind).
    pub fn new(adapter: &'static str) -> Self {
        Self {
            adapter,
            received: Family::default(),
            outcomes: Family::default(),
            responses: Family::default(),
            latency: Family::new_with_constructor(|| Histogram::new(LATENCY_BUCKETS)),
            backlog: Backlogs::default(),
        }
    }

    /// `n` new events stored from `site`.
    pub fn received(&self, site: &str, n: u64) {
        if n == 0 {
            return;
        }
        self.received
            .get_or_create(&labels(&[("site", site)]))
            .inc_by(n);
    }

    /// One ERP attempt ended in `class` (`booked` or a failure class).
    pub fn response(&self, class: &'static str) {
        self.responses
            .get_or_create(&labels(&[("adapter", self.adapter), ("class", class)]))
            .inc();
    }

    /// An event of `site` ended as `outcome`; `latency_s` from capture to
    /// booking for booked ones.
    pub fn outcome(&self, site: &str, outcome: &'static str, latency_s: Option<f64>) {
        self.outcomes
            .get_or_create(&labels(&[
                ("site", site),
                ("adapter", self.adapter),
                ("outcome", outcome),
            ]))
            .inc();
        if let Some(s) = latency_s {
            self.latency
                .get_or_create(&labels(&[("adapter", self.adapter)]))
                .observe(s.max(0.0));
        }
    }

    /// A device's heartbeat reported `events` unsent, the oldest `oldest_ms` old.
    pub fn backlog(&self, site: &str, device: &str, events: u64, oldest_ms: u64) {
        let mut backlog = self.backlog.0.lock().unwrap_or_else(|p| p.into_inner());
        let key = (site.to_string(), device.to_string());
        if backlog.len() >= MAX_DEVICES && !backlog.contains_key(&key) {
            return;
        }
        backlog.insert(key, Backlog { events, oldest_ms });
    }

    /// Registers every family in `registry` (they stay shared with `self`).
    pub fn register(&self, registry: &mut Registry) {
        // The latency histogram is always shown for the adapter, even
        // before the first booking.
        let _ = self
            .latency
            .get_or_create(&labels(&[("adapter", self.adapter)]));
        registry.register(
            "dockline_events_received",
            "Events stored in the inbox since the collector started, per site",
            self.received.clone(),
        );
        registry.register(
            "dockline_events_outcome",
            "Events the ERP delivery finished since the collector started: booked, rejected by the ERP, or dead-lettered",
            self.outcomes.clone(),
        );
        registry.register(
            "dockline_erp_responses",
            "ERP attempts by how the delivery policy classified the answer",
            self.responses.clone(),
        );
        registry.register(
            "dockline_delivery_latency_seconds",
            "From capture on the device to booked in the ERP (device clock)",
            self.latency.clone(),
        );
        registry.register_collector(Box::new(self.backlog.clone()));
    }
}
