//! Operations endpoints on the agent's local API: `/healthz`, `/readyz`,
//! `/metrics` (Prometheus text format) and `/v1/version`.
//!
//! | path          | answers                                                              |
//! |---------------|----------------------------------------------------------------------|
//! | `/healthz`    | 200 `ok` while the process serves HTTP (liveness)                    |
//! | `/readyz`     | 200 when the outbox answers and its folder takes a write, else 503; the JSON body also says whether the uplink is connected |
//! | `/metrics`    | queue depth and bytes by class, oldest unacknowledged age, ack floor, resends, connects, receipts, drops, device readings and errors, HTTP requests by route and status, build info |
//! | `/v1/version` | `{"version": "0.1.0", "commit": "…"}`                                |
//!
//! Design: [`router`] is generic over the API's state and reads what it
//! needs from an [`Ops`] request extension, so `api.rs` merges it with one
//! line and its Host/token guards cover these routes too. Readiness does not
//! require the broker: the agent's job while the link is down is to keep
//! taking events into the outbox, so a dead uplink is reported, not failed.
//! Queue figures are read from the outbox at scrape time (one status
//! query), never kept in a second copy that could drift.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::{MatchedPath, Request};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use serde_json::json;

use crate::devices::{DevicePresence, Presence};
use crate::outbox::{Outbox, QueueStatus};
use crate::uplink::LinkStatus;
use dockline_host::clock::now_ms;

/// Labels of one metric sample.
type Labels = Vec<(String, String)>;

/// What the operations endpoints read; shared by every request.
#[derive(Clone)]
pub struct Ops {
    inner: Arc<OpsInner>,
}

impl std::fmt::Debug for Ops {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ops")
            .field("data_dir", &self.inner.data_dir)
            .finish_non_exhaustive()
    }
}

struct OpsInner {
    outbox: Outbox,
    link: Arc<LinkStatus>,
    devices: Arc<Presence>,
    data_dir: PathBuf,
    http: Family<Labels, Counter>,
}

impl Ops {
    /// Operations state over the agent's outbox, link and devices.
    pub fn new(
        outbox: Outbox,
        link: Arc<LinkStatus>,
        devices: Arc<Presence>,
        data_dir: PathBuf,
    ) -> Self {
        Self {
            inner: Arc::new(OpsInner {
                outbox,
                link,
                devices,
                data_dir,
                http: Family::default(),
            }),
        }
    }
}

/// The routes; merge into the API router (`.merge(ops_http::router())`) and
/// add [`Ops`] as an extension and [`count_requests`] as a layer outside it.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/v1/version", get(version))
}

/// Middleware counting every answer by route template (not the raw path,
/// so ids do not explode the label set) and status code.
pub async fn count_requests(
    Extension(ops): Extension<Ops>,
    matched: Option<MatchedPath>,
    request: Request,
    next: Next,
) -> Response {
    let route = matched.map_or_else(|| "unmatched".to_string(), |m| m.as_str().to_string());
    let method = request.method().as_str().to_string();
    let response = next.run(request).await;
    let labels = vec![
        ("method".to_string(), method),
        ("route".to_string(), route),
        ("status".to_string(), response.status().as_u16().to_string()),
    ];
    ops.inner.http.get_or_create(&labels).inc();
    response
}

async fn version() -> Json<serde_json::Value> {
    Json(json!({ "version": crate::VERSION, "commit": crate::BUILD_COMMIT }))
}

async fn readyz(Extension(ops): Extension<Ops>) -> Response {
    let uplink = if ops.inner.link.connected.load(Ordering::Relaxed) {
        "connected"
    } else {
        "down"
    };
    let outbox = match ops.inner.outbox.status().await {
        Ok(_) => match crate::check_writable(&ops.inner.data_dir) {
            Ok(()) => Ok(()),
            Err(e) => Err(e.to_string()),
        },
        Err(e) => Err(format!("the outbox does not answer: {e}")),
    };
    match outbox {
        Ok(()) => (
            StatusCode::OK,
            Json(json!({ "ready": true, "outbox": "writable", "uplink": uplink })),
        )
            .into_response(),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "ready": false, "outbox": why, "uplink": uplink })),
        )
            .into_response(),
    }
}

async fn metrics(Extension(ops): Extension<Ops>) -> Response {
    let queue = match ops.inner.outbox.status().await {
        Ok(q) => Some(q),
        Err(e) => {
            tracing::warn!(error = %e, "metrics: cannot read the outbox; queue figures left out");
            None
        }
    };
    let snapshot = Snapshot {
        queue,
        connected: ops.inner.link.connected.load(Ordering::Relaxed),
        connects: ops.inner.link.connects.load(Ordering::Relaxed),
        resends: ops.inner.link.ack_timeouts.load(Ordering::Relaxed),
        devices: ops.inner.devices.snapshot(),
        now_ms: now_ms(),
    };
    // A registry per scrape: cheap, and nothing outlives the figures read.
    let mut registry = Registry::default();
    registry.register(
        "dockline_agent_http_requests",
        "HTTP requests answered by the local API, by method, route and status",
        ops.inner.http.clone(),
    );
    registry.register_collector(Box::new(snapshot));
    let mut text = String::new();
    match prometheus_client::encoding::text::encode(&mut text, &registry) {
        Ok(()) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode the metrics: {e}"),
        )
            .into_response(),
    }
}

/// The figures of one scrape, encoded as constant metrics.
#[derive(Debug)]
struct Snapshot {
    queue: Option<QueueStatus>,
    connected: bool,
    connects: u64,
    resends: u64,
    devices: Vec<DevicePresence>,
    now_ms: i64,
}

/// The outbox's class order (`QueueStatus::classes`).
const CLASSES: [&str; 3] = ["must_deliver", "normal", "telemetry"];

fn label(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Writes one metric family: a descriptor, then one sample per label set.
fn family<M: EncodeMetric>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    samples: Vec<(Labels, M)>,
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, None, kind)?;
    for (labels, value) in &samples {
        value.encode(metric.encode_family(labels)?)?;
    }
    Ok(())
}

impl Collector for Snapshot {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        use MetricType::{Counter as C, Gauge as G};
        family(
            &mut e,
            "dockline_agent_build_info",
            "The agent's version and the git commit it was built from",
            G,
            vec![(
                label(&[("version", crate::VERSION), ("commit", crate::BUILD_COMMIT)]),
                ConstGauge::new(1i64),
            )],
        )?;
        family(
            &mut e,
            "dockline_agent_mqtt_connected",
            "1 while the broker connection is up",
            G,
            vec![(Labels::new(), ConstGauge::new(i64::from(self.connected)))],
        )?;
        family(
            &mut e,
            "dockline_agent_mqtt_connects",
            "Successful broker connects since start",
            C,
            vec![(Labels::new(), ConstCounter::new(self.connects))],
        )?;
        family(
            &mut e,
            "dockline_agent_resends",
            "Resends of everything unacknowledged after a missing collector ack",
            C,
            vec![(Labels::new(), ConstCounter::new(self.resends))],
        )?;
        if let Some(q) = &self.queue {
            let per_class = |f: fn(&crate::outbox::ClassHealth) -> u64| {
                CLASSES
                    .iter()
                    .zip(q.classes.iter())
                    .map(|(name, c)| (label(&[("class", name)]), ConstGauge::new(f(c) as i64)))
                    .collect::<Vec<_>>()
            };
            family(
                &mut e,
                "dockline_agent_queue_events",
                "Events held in the outbox, not yet acknowledged by a collector, by class",
                G,
                per_class(|c| c.queued),
            )?;
            family(
                &mut e,
                "dockline_agent_queue_bytes",
                "Payload bytes held in the outbox, by class",
                G,
                per_class(|c| c.bytes),
            )?;
            let oldest = q
                .oldest_queued_ms
                .map_or(0.0, |t| (self.now_ms - t).max(0) as f64 / 1000.0);
            family(
                &mut e,
                "dockline_agent_oldest_unacked_age_seconds",
                "Age of the oldest event not yet acknowledged by a collector (0 when none)",
                G,
                vec![(Labels::new(), ConstGauge::new(oldest))],
            )?;
            family(
                &mut e,
                "dockline_agent_acked_up_to",
                "Highest sequence the collector acknowledged as stored (the ack floor)",
                G,
                vec![(Labels::new(), ConstGauge::new(q.acked_up_to as i64))],
            )?;
            family(
                &mut e,
                "dockline_agent_next_seq",
                "The next sequence number the outbox will assign",
                G,
                vec![(Labels::new(), ConstGauge::new(q.next_seq as i64))],
            )?;
            family(
                &mut e,
                "dockline_agent_receipts",
                "Receipts of acknowledged events by ERP state",
                G,
                [
                    ("stored", q.stored),
                    ("booked", q.booked),
                    ("rejected", q.rejected),
                ]
                .into_iter()
                .map(|(s, n)| (label(&[("state", s)]), ConstGauge::new(n as i64)))
                .collect(),
            )?;
            family(
                &mut e,
                "dockline_agent_dropped_events",
                "Events dropped on the device, by class and reason",
                C,
                q.drops
                    .iter()
                    .map(|d| {
                        (
                            label(&[("class", &d.class), ("reason", &d.reason)]),
                            ConstCounter::new(d.count),
                        )
                    })
                    .collect(),
            )?;
        }
        let devices = |f: fn(&DevicePresence) -> u64| {
            self.devices
                .iter()
                .map(|d| (label(&[("device", &d.name)]), ConstCounter::new(f(d))))
                .collect::<Vec<_>>()
        };
        family(
            &mut e,
            "dockline_agent_device_readings",
            "Readings decoded per device since start",
            C,
            devices(|d| d.readings),
        )?;
        family(
            &mut e,
            "dockline_agent_device_errors",
            "Rejected frames and device error states per device since start",
            C,
            devices(|d| d.rejected),
        )?;
        family(
            &mut e,
            "dockline_agent_device_reconnects",
            "Reopens of each device's port since start",
            C,
            devices(|d| d.reconnects),
        )?;
        family(
            &mut e,
            "dockline_agent_device_connected",
            "1 while the device's port is open and read",
            G,
            self.devices
                .iter()
                .map(|d| {
                    (
                        label(&[("device", &d.name)]),
                        ConstGauge::new(i64::from(d.connected)),
                    )
                })
                .collect(),
        )
    }
}
