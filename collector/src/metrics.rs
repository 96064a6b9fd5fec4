//! `GET /metrics`: the collector in Prometheus text format (version 0.0.4).
//!
//! Two sources. Counters of what happened since the process started are
//! kept here in memory ([`Metrics`], fed by ingest and delivery): events
//! received per site, ERP outcomes per site and adapter, ERP response
//! classes, the delivery latency histogram, and the backlog each device
//! reported in its latest heartbeat. Levels are read from the inbox on each
//! scrape ([`crate::inbox::Stats`]): inbox depth, parked and blocked lanes,
//! open dead letters, devices online, totals since the inbox was created.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `dockline_events_received_total` | counter | `site` |
//! | `dockline_events_outcome_total` | counter | `site`, `adapter`, `outcome` (`booked`, `rejected`, `dead_lettered`) |
//! | `dockline_erp_responses_total` | counter | `adapter`, `class` (`booked`, `transient`, `throttled`, …) |
//! | `dockline_delivery_latency_seconds` | histogram | `adapter` (capture on the device → booked) |
//! | `dockline_device_backlog_events` | gauge | `site`, `device` (latest heartbeat) |
//! | `dockline_device_backlog_oldest_seconds` | gauge | `site`, `device` |
//! | `dockline_inbox_pending_events` | gauge | |
//! | `dockline_lanes` | gauge | `state` (`parked`, `blocked`) |
//! | `dockline_dead_letters_open` | gauge | |
//! | `dockline_devices_online` | gauge | |
//! | `dockline_devices_known` | gauge | |
//! | `dockline_inbox_events_total` | counter | `state` (`received`, `booked`, `rejected`, `duplicates`) |
//! | `dockline_refused_total` | counter | `reason` |

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;

use crate::inbox::Stats;

/// Upper bounds of the latency histogram's buckets, seconds.
const LATENCY_BUCKETS: [f64; 14] = [
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0,
];

/// Most devices whose heartbeat backlog is kept (a bound on label count).
const MAX_DEVICES: usize = 10_000;

#[derive(Debug, Default)]
struct Histogram {
    /// Per bucket (not cumulative), then +Inf.
    counts: [u64; LATENCY_BUCKETS.len() + 1],
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        let seconds = seconds.max(0.0);
        let i = LATENCY_BUCKETS
            .iter()
            .position(|b| seconds <= *b)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.counts[i] += 1;
        self.sum += seconds;
        self.count += 1;
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Backlog {
    events: u64,
    oldest_ms: u64,
}

#[derive(Debug, Default)]
struct Inner {
    received: BTreeMap<String, u64>,
    outcomes: BTreeMap<(String, &'static str), u64>,
    responses: BTreeMap<&'static str, u64>,
    latency: Histogram,
    backlog: BTreeMap<(String, String), Backlog>,
}

/// The in-memory counters (one per collector process).
#[derive(Debug)]
pub struct Metrics {
    adapter: &'static str,
    inner: Mutex<Inner>,
}

impl Metrics {
    /// Counters for a collector delivering through `adapter` (its kind).
    pub fn new(adapter: &'static str) -> Self {
        Self {
            adapter,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `n` new events stored from `site`.
    pub fn received(&self, site: &str, n: u64) {
        if n == 0 {
            return;
        }
        let mut inner = self.lock();
        match inner.received.get_mut(site) {
            Some(c) => *c += n,
            None => {
                inner.received.insert(site.to_string(), n);
            }
        }
    }

    /// One ERP attempt ended in `class` (`booked` or a failure class).
    pub fn response(&self, class: &'static str) {
        *self.lock().responses.entry(class).or_default() += 1;
    }

    /// An event of `site` ended as `outcome`; `latency_s` from capture to
    /// booking for booked ones.
    pub fn outcome(&self, site: &str, outcome: &'static str, latency_s: Option<f64>) {
        let mut inner = self.lock();
        *inner
            .outcomes
            .entry((site.to_string(), outcome))
            .or_default() += 1;
        if let Some(s) = latency_s {
            inner.latency.observe(s);
        }
    }

    /// A device's heartbeat reported `events` unsent, the oldest `oldest_ms` old.
    pub fn backlog(&self, site: &str, device: &str, events: u64, oldest_ms: u64) {
        let mut inner = self.lock();
        let key = (site.to_string(), device.to_string());
        if inner.backlog.len() >= MAX_DEVICES && !inner.backlog.contains_key(&key) {
            return;
        }
        inner.backlog.insert(key, Backlog { events, oldest_ms });
    }

    /// The whole text exposition, with the inbox's levels from `stats`.
    pub fn render(&self, stats: &Stats) -> String {
        let inner = self.lock();
        let mut out = String::with_capacity(4096);
        let adapter = self.adapter;

        family(
            &mut out,
            "dockline_events_received_total",
            "counter",
            "Events stored in the inbox since the collector started, per site.",
        );
        for (site, n) in &inner.received {
            sample(
                &mut out,
                "dockline_events_received_total",
                &[("site", site)],
                *n,
            );
        }

        family(
            &mut out,
            "dockline_events_outcome_total",
            "counter",
            "Events the ERP delivery finished since the collector started: booked, rejected by the ERP, or dead-lettered.",
        );
        for ((site, outcome), n) in &inner.outcomes {
            sample(
                &mut out,
                "dockline_events_outcome_total",
                &[("site", site), ("adapter", adapter), ("outcome", outcome)],
                *n,
            );
        }

        family(
            &mut out,
            "dockline_erp_responses_total",
            "counter",
            "ERP attempts by how the delivery policy classified the answer.",
        );
        for (class, n) in &inner.responses {
            sample(
                &mut out,
                "dockline_erp_responses_total",
                &[("adapter", adapter), ("class", class)],
                *n,
            );
        }

        family(
            &mut out,
            "dockline_delivery_latency_seconds",
            "histogram",
            "From capture on the device to booked in the ERP (device clock).",
        );
        let mut cumulative = 0;
        for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
            cumulative += inner.latency.counts[i];
            let le = bound.to_string();
            sample(
                &mut out,
                "dockline_delivery_latency_seconds_bucket",
                &[("adapter", adapter), ("le", &le)],
                cumulative,
            );
        }
        sample(
            &mut out,
            "dockline_delivery_latency_seconds_bucket",
            &[("adapter", adapter), ("le", "+Inf")],
            inner.latency.count,
        );
        let _ = writeln!(
            out,
            "dockline_delivery_latency_seconds_sum{{adapter=\"{adapter}\"}} {}",
            inner.latency.sum
        );
        sample(
            &mut out,
            "dockline_delivery_latency_seconds_count",
            &[("adapter", adapter)],
            inner.latency.count,
        );

        family(
            &mut out,
            "dockline_device_backlog_events",
            "gauge",
            "Events a device holds unacknowledged, from its latest heartbeat.",
        );
        for ((site, device), b) in &inner.backlog {
            sample(
                &mut out,
                "dockline_device_backlog_events",
                &[("site", site), ("device", device)],
                b.events,
            );
        }
        family(
            &mut out,
            "dockline_device_backlog_oldest_seconds",
            "gauge",
            "Age of a device's oldest unacknowledged event, from its latest heartbeat.",
        );
        for ((site, device), b) in &inner.backlog {
            let _ = writeln!(
                out,
                "dockline_device_backlog_oldest_seconds{{site=\"{}\",device=\"{}\"}} {}",
                escape(site),
                escape(device),
                b.oldest_ms as f64 / 1000.0
            );
        }
        drop(inner);

        family(
            &mut out,
            "dockline_inbox_pending_events",
            "gauge",
            "Business events in the inbox waiting for the ERP.",
        );
        sample(
            &mut out,
            "dockline_inbox_pending_events",
            &[],
            stats.pending,
        );
        family(
            &mut out,
            "dockline_lanes",
            "gauge",
            "Business lanes waiting: parked (for an earlier step or a hole) or blocked (by a dead letter).",
        );
        sample(
            &mut out,
            "dockline_lanes",
            &[("state", "parked")],
            stats.parked_lanes,
        );
        sample(
            &mut out,
            "dockline_lanes",
            &[("state", "blocked")],
            stats.blocked_lanes,
        );
        family(
            &mut out,
            "dockline_dead_letters_open",
            "gauge",
            "Dead letters not yet replayed or discarded.",
        );
        sample(
            &mut out,
            "dockline_dead_letters_open",
            &[],
            stats.dead_letters,
        );
        family(
            &mut out,
            "dockline_devices_online",
            "gauge",
            "Devices online per their latest birth, heartbeat or death message.",
        );
        let online = stats.devices.iter().filter(|d| d.online).count() as u64;
        sample(&mut out, "dockline_devices_online", &[], online);
        family(
            &mut out,
            "dockline_devices_known",
            "gauge",
            "Devices known from config, status or batches.",
        );
        sample(
            &mut out,
            "dockline_devices_known",
            &[],
            stats.devices.len() as u64,
        );
        family(
            &mut out,
            "dockline_inbox_events_total",
            "counter",
            "Totals since the inbox was created.",
        );
        for (state, n) in [
            ("received", stats.received),
            ("booked", stats.booked),
            ("rejected", stats.rejected),
            ("duplicates", stats.duplicates),
        ] {
            sample(
                &mut out,
                "dockline_inbox_events_total",
                &[("state", state)],
                n,
            );
        }
        family(
            &mut out,
            "dockline_refused_total",
            "counter",
            "Messages refused on ingest, by reason (malformed, oversize, device_mismatch, unknown_device, rate_limited, …).",
        );
        for (reason, n) in &stats.refused_by_reason {
            sample(
                &mut out,
                "dockline_refused_total",
                &[("reason", reason)],
                *n,
            );
        }
        out
    }
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: u64) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (k, v)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "{k}=\"{}\"", escape(v));
        }
        out.push('}');
    }
    let _ = writeln!(out, " {value}");
}

/// A label value escaped per the text format (backslash, quote, newline).
fn escape(v: &str) -> std::borrow::Cow<'_, str> {
    if v.contains(['\\', '"', '\n']) {
        v.replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n")
            .into()
    } else {
        v.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn empty_stats() -> Stats {
        Stats {
            received: 7,
            duplicates: 1,
            refused: 2,
            refused_by_reason: [("device_mismatch".to_string(), 2)].into(),
            resend_requests: 0,
            holes_lost: 0,
            pending: 3,
            booked: 4,
            rejected: 0,
            dead_letters: 1,
            blocked_devices: Vec::new(),
            blocked_lanes: 1,
            parked_lanes: 2,
            delivered_out_of_order: 0,
            followups: BTreeMap::new(),
            devices: Vec::new(),
        }
    }

    #[test]
    fn renders_counters_histogram_and_levels() {
        let m = Metrics::new("webhook");
        m.received("s1", 5);
        m.response("booked");
        m.response("transient");
        m.outcome("s1", "booked", Some(0.03));
        m.outcome("s1", "booked", Some(12.0));
        m.backlog("s1", "dev\"1", 9, 1500);
        let text = m.render(&empty_stats());
        for line in [
            "dockline_events_received_total{site=\"s1\"} 5",
            "dockline_events_outcome_total{site=\"s1\",adapter=\"webhook\",outcome=\"booked\"} 2",
            "dockline_erp_responses_total{adapter=\"webhook\",class=\"transient\"} 1",
            "dockline_delivery_latency_seconds_bucket{adapter=\"webhook\",le=\"0.025\"} 0",
            "dockline_delivery_latency_seconds_bucket{adapter=\"webhook\",le=\"0.05\"} 1",
            "dockline_delivery_latency_seconds_bucket{adapter=\"webhook\",le=\"30\"} 2",
            "dockline_delivery_latency_seconds_bucket{adapter=\"webhook\",le=\"+Inf\"} 2",
            "dockline_delivery_latency_seconds_count{adapter=\"webhook\"} 2",
            "dockline_device_backlog_events{site=\"s1\",device=\"dev\\\"1\"} 9",
            "dockline_device_backlog_oldest_seconds{site=\"s1\",device=\"dev\\\"1\"} 1.5",
            "dockline_inbox_pending_events 3",
            "dockline_lanes{state=\"parked\"} 2",
            "dockline_dead_letters_open 1",
            "dockline_refused_total{reason=\"device_mismatch\"} 2",
            "# TYPE dockline_delivery_latency_seconds histogram",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
    }
}
