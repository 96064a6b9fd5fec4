//! `GET /metrics`: the collector in the OpenMetrics text format
//! (`prometheus-client`), which Prometheus scrapes like its own.
//!
//! Three sources, one registry per scrape (nothing outlives the figures
//! read): the counters ingest and delivery keep ([`crate::metrics`]), the
//! login counters ([`crate::http::auth`]), and the inbox's levels read on
//! each scrape ([`crate::inbox::Stats`]):
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `dockline_inbox_pending_events` | gauge | |
//! | `dockline_lanes` | gauge | `state` (`parked`, `blocked`) |
//! | `dockline_dead_letters_open` | gauge | |
//! | `dockline_devices_online` | gauge | |
//! | `dockline_devices_known` | gauge | |
//! | `dockline_inbox_events_total` | counter | `state` (`received`, `booked`, `rejected`, `duplicates`) |
//! | `dockline_refused_total` | counter | `reason` |
//! | `dockline_login_failed_total` | counter | |
//! | `dockline_login_blocked_total` | counter | `by` (`user`, `address`) |
//! | `dockline_sessions_ended_by_cap_total` | counter | |
//! | `dockline_collector_build_info` | gauge (1) | `version`, `commit` |
//!
//! The names are those of the hand-written exposition this replaced, so
//! dashboards and alerts keep working; the text differs in what OpenMetrics
//! prescribes (`# TYPE` names a counter without `_total`, bucket bounds are
//! written as floats, `le="30.0"`, `le` comes first in a bucket's labels, and the
//! body ends with `# EOF`).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use super::ApiState;
use crate::inbox::Stats;
use crate::metrics::{Labels, Metrics, const_family, labels};

/// The content type of the OpenMetrics text format.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The inbox's levels and totals of one scrape.
#[derive(Debug)]
struct InboxLevels(Stats);

impl Collector for InboxLevels {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        use MetricType::{Counter as C, Gauge as G};
        let s = &self.0;
        let one = |n: u64| vec![(Labels::new(), ConstGauge::new(n as i64))];
        const_family(
            &mut e,
            "dockline_inbox_pending_events",
            "Business events in the inbox waiting for the ERP.",
            G,
            one(s.pending),
        )?;
        const_family(
            &mut e,
            "dockline_lanes",
            "Business lanes waiting: parked (for an earlier step or a hole) or blocked (by a dead letter).",
            G,
            [("parked", s.parked_lanes), ("blocked", s.blocked_lanes)]
                .into_iter()
                .map(|(state, n)| (labels(&[("state", state)]), ConstGauge::new(n as i64)))
                .collect(),
        )?;
        const_family(
            &mut e,
            "dockline_dead_letters_open",
            "Dead letters not yet replayed or discarded.",
            G,
            one(s.dead_letters),
        )?;
        const_family(
            &mut e,
            "dockline_devices_online",
            "Devices online per their latest birth, heartbeat or death message.",
            G,
            one(s.devices.iter().filter(|d| d.online).count() as u64),
        )?;
        const_family(
            &mut e,
            "dockline_devices_known",
            "Devices known from config, status or batches.",
            G,
            one(s.devices.len() as u64),
        )?;
        const_family(
            &mut e,
            "dockline_inbox_events",
            "Totals since the inbox was created.",
            C,
            [
                ("received", s.received),
                ("booked", s.booked),
                ("rejected", s.rejected),
                ("duplicates", s.duplicates),
            ]
            .into_iter()
            .map(|(state, n)| (labels(&[("state", state)]), ConstCounter::new(n)))
            .collect(),
        )?;
        const_family(
            &mut e,
            "dockline_refused",
            "Messages refused on ingest, by reason (malformed, oversize, device_mismatch, unknown_device, rate_limited, …).",
            C,
            s.refused_by_reason
                .iter()
                .map(|(reason, n)| (labels(&[("reason", reason)]), ConstCounter::new(*n)))
                .collect(),
        )?;
        const_family(
            &mut e,
            "dockline_collector_build_info",
            "The collector's version and the git commit it was built from.",
            G,
            vec![(
                labels(&[("version", crate::VERSION), ("commit", crate::BUILD_COMMIT)]),
                ConstGauge::new(1i64),
            )],
        )
    }
}

/// The whole exposition: `metrics` (the delivery's counters), `stats`
/// (the inbox's levels) and what `register_more` adds.
pub fn render(
    metrics: &Metrics,
    stats: Stats,
    register_more: impl FnOnce(&mut Registry),
) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    register_more(&mut registry);
    registry.register_collector(Box::new(InboxLevels(stats)));
    let mut text = String::with_capacity(4096);
    prometheus_client::encoding::text::encode(&mut text, &registry)?;
    Ok(text)
}

/// `GET /metrics`.
pub(super) async fn handler(State(api): State<ApiState>) -> Response {
    let stats = match api.inbox.call(|i| i.stats()).await {
        Ok(s) => s,
        Err(e) => return super::inbox_failed("read stats for /metrics", &e),
    };
    let metrics = api
        .delivery
        .as_ref()
        .map_or_else(|| Arc::new(Metrics::new("none")), |d| d.metrics());
    let media = api.delivery.as_ref().and_then(|d| d.media_metrics());
    match render(&metrics, stats, |r| {
        api.auth.register_metrics(r);
        if let Some(m) = &media {
            m.register(r);
        }
    }) {
        Ok(text) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode the metrics: {e}\n"),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

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
        let text = render(&m, empty_stats(), |_| {}).expect("encodes");
        for line in [
            "dockline_events_received_total{site=\"s1\"} 5",
            "dockline_events_outcome_total{site=\"s1\",adapter=\"webhook\",outcome=\"booked\"} 2",
            "dockline_erp_responses_total{adapter=\"webhook\",class=\"transient\"} 1",
            "dockline_delivery_latency_seconds_bucket{le=\"0.025\",adapter=\"webhook\"} 0",
            "dockline_delivery_latency_seconds_bucket{le=\"0.05\",adapter=\"webhook\"} 1",
            "dockline_delivery_latency_seconds_bucket{le=\"30.0\",adapter=\"webhook\"} 2",
            "dockline_delivery_latency_seconds_bucket{le=\"+Inf\",adapter=\"webhook\"} 2",
            "dockline_delivery_latency_seconds_count{adapter=\"webhook\"} 2",
            "dockline_device_backlog_events{site=\"s1\",device=\"dev\\\"1\"} 9",
            "dockline_device_backlog_oldest_seconds{site=\"s1\",device=\"dev\\\"1\"} 1.5",
            "dockline_inbox_pending_events 3",
            "dockline_lanes{state=\"parked\"} 2",
            "dockline_dead_letters_open 1",
            "dockline_refused_total{reason=\"device_mismatch\"} 2",
            "dockline_inbox_events_total{state=\"received\"} 7",
            "# TYPE dockline_delivery_latency_seconds histogram",
            "# EOF",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
    }
}
