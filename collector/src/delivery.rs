//! ERP delivery: pending business events from the inbox are POSTed to the
//! ERP webhook until it answers with a verdict, which is recorded and sent to
//! the device as an ack.
//!
//! # Ordering and concurrency
//!
//! Each device with pending events gets one *lane* task that delivers that
//! device's events strictly one at a time in inbox `(epoch, seq)` order, so
//! two events of one order can never overtake each other. A semaphore caps
//! HTTP requests in flight across all lanes at `erp.concurrency`; a lane
//! holds a permit only for the request itself, not while it sleeps between
//! retries. The scheduler re-reads the inbox whenever ingest wakes it, a lane
//! ends, or a periodic rescan fires, so no stored event can be stranded.
//!
//! # Exactly-once effect
//!
//! Every attempt of an event carries the same `webhook-id` and
//! `Idempotency-Key` (the event id), so an ERP that honours them books a
//! retried event once even if its first answer was lost. A verdict is
//! recorded only on a still-pending row, and only after that commit is the
//! verdict ack published. A collector restart re-reads pending rows.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dockline_protocol::{DeviceId, Envelope, Outcome, Verdict};
use tokio::sync::{Notify, Semaphore, mpsc};
use tokio::task::JoinSet;
use tracing::{debug, error, info, warn};

use crate::backoff::Backoff;
use crate::config::ErpConfig;
use crate::inbox::{InboxError, InboxHandle, NextPending, PendingEvent};
use crate::publication::Publication;
use crate::shutdown::Shutdown;
use crate::webhook::{self, SecretError, SigningKey};

/// Longest response body read from the ERP.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;
/// Longest rejection reason kept from the ERP's body.
const MAX_REASON_CHARS: usize = 300;
/// How often the scheduler re-reads the inbox without being woken.
const RESCAN: Duration = Duration::from_secs(5);

/// Delivery could not start.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// `erp.url` is not a usable URL.
    #[error("config key `erp.url` is {url:?}, which is not a valid URL: {problem}")]
    Url {
        /// The URL.
        url: String,
        /// Why.
        problem: String,
    },
    /// `erp.secret` is not usable.
    #[error("config key `erp.secret` {0}")]
    Secret(#[from] SecretError),
    /// The HTTP client could not be built.
    #[error("cannot build the ERP HTTP client: {0}")]
    Client(String),
}

/// What one HTTP attempt means for the event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptResult {
    /// A final answer from the ERP.
    Verdict(Outcome),
    /// A transient failure: try again, not before `retry_after` if given.
    Retry {
        /// What went wrong, for logs and the inbox.
        error: String,
        /// The server's `Retry-After`, when it sent a numeric one.
        retry_after: Option<Duration>,
    },
}

/// The parts of an HTTP response that decide an attempt's result.
#[derive(Debug, Clone, Default)]
pub struct ErpResponse<'a> {
    /// The status code.
    pub status: u16,
    /// The `Retry-After` header.
    pub retry_after: Option<&'a str>,
    /// The `Location` header.
    pub location: Option<&'a str>,
    /// The body (possibly cut).
    pub body: &'a str,
}

/// Classifies an ERP response (pure; see the table test).
///
/// - 2xx: booked; the document is the body's JSON `document` (or `id`) field,
///   else the `Location` header, else `HTTP <status>`.
/// - 408, 425, 429 and 5xx: retry (honouring a numeric `Retry-After`).
/// - 409 is retried too: the ERP saw a conflicting concurrent request (often
///   our own earlier attempt still in progress under the same key).
/// - any other status: rejected with the status and the start of the body.
pub fn classify(resp: &ErpResponse<'_>) -> AttemptResult {
    let status = resp.status;
    if (200..300).contains(&status) {
        let document = document_from_body(resp.body)
            .or_else(|| resp.location.map(str::to_owned))
            .unwrap_or_else(|| format!("HTTP {status}"));
        return AttemptResult::Verdict(Outcome::Booked { document });
    }
    let retryable = matches!(status, 408 | 409 | 425 | 429) || (500..600).contains(&status);
    if retryable {
        let retry_after = resp
            .retry_after
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let detail: String = resp.body.chars().take(MAX_REASON_CHARS).collect();
        return AttemptResult::Retry {
            error: format!("ERP answered HTTP {status}: {}", detail.trim()),
            retry_after,
        };
    }
    let detail: String = resp.body.chars().take(MAX_REASON_CHARS).collect();
    let reason = if detail.trim().is_empty() {
        format!("HTTP {status}")
    } else {
        format!("HTTP {status}: {}", detail.trim())
    };
    AttemptResult::Verdict(Outcome::Rejected { reason })
}

fn document_from_body(body: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(body).ok()?;
    ["document", "id"].iter().find_map(|k| match value.get(k)? {
        serde_json::Value::String(s) if !s.is_empty() => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    })
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The ERP delivery worker.
#[derive(Debug)]
pub struct Delivery {
    inbox: InboxHandle,
    client: reqwest::Client,
    url: reqwest::Url,
    key: SigningKey,
    backoff: Backoff,
    permits: Arc<Semaphore>,
    acks: mpsc::Sender<Publication>,
}

impl Delivery {
    /// Prepares delivery to the configured ERP; verdict acks go to `acks`.
    pub fn new(
        erp: &ErpConfig,
        inbox: InboxHandle,
        acks: mpsc::Sender<Publication>,
    ) -> Result<Self, DeliveryError> {
        let url = reqwest::Url::parse(&erp.url).map_err(|e| DeliveryError::Url {
            url: erp.url.clone(),
            problem: e.to_string(),
        })?;
        let key = SigningKey::from_secret(&erp.secret)?;
        let client = reqwest::Client::builder()
            .timeout(erp.timeout())
            .build()
            .map_err(|e| DeliveryError::Client(e.to_string()))?;
        Ok(Self {
            inbox,
            client,
            url,
            key,
            backoff: Backoff {
                min: Duration::from_millis(erp.retry_min_ms),
                max: Duration::from_millis(erp.retry_max_ms),
            },
            permits: Arc::new(Semaphore::new(erp.concurrency.max(1))),
            acks,
        })
    }

    /// Runs lanes until `shutdown`; `wake` is notified when ingest stored events.
    pub async fn run(self: Arc<Self>, wake: Arc<Notify>, mut shutdown: Shutdown) {
        let mut lanes: JoinSet<()> = JoinSet::new();
        let mut lane_of: HashMap<tokio::task::Id, DeviceId> = HashMap::new();
        let mut active: HashSet<DeviceId> = HashSet::new();
        loop {
            match self.inbox.call(|i| i.pending_devices()).await {
                Ok(devices) => {
                    for device in devices {
                        if active.insert(device.clone()) {
                            let me = Arc::clone(&self);
                            let d = device.clone();
                            let handle = lanes.spawn(async move { me.drain_lane(&d).await });
                            lane_of.insert(handle.id(), device);
                        }
                    }
                }
                Err(e) => error!("cannot read pending events from the inbox: {e}; retrying"),
            }
            tokio::select! {
                () = shutdown.wait() => break,
                () = wake.notified() => {}
                Some(done) = lanes.join_next_with_id() => {
                    let id = match done {
                        Ok((id, ())) => id,
                        Err(e) => {
                            error!("a delivery lane failed: {e}");
                            e.id()
                        }
                    };
                    if let Some(device) = lane_of.remove(&id) {
                        active.remove(&device);
                    }
                }
                () = tokio::time::sleep(RESCAN) => {}
            }
        }
        // Aborting mid-request is safe: the row stays pending and is retried
        // with the same idempotency key after restart.
        lanes.shutdown().await;
    }

    /// Delivers the device's pending events in order until none is left.
    pub async fn drain_lane(&self, device: &DeviceId) {
        loop {
            let d = device.clone();
            let next = match self.inbox.call(move |i| i.next_pending(&d)).await {
                Ok(Some(next)) => next,
                Ok(None) => return,
                Err(e) => {
                    error!(device = %device, "cannot read the next pending event: {e}; the lane pauses");
                    tokio::time::sleep(self.backoff.max.min(RESCAN)).await;
                    return;
                }
            };
            let result = match next {
                NextPending::Event(p) => self.deliver(*p).await,
                NextPending::Unreadable(row) => {
                    error!(device = %row.device, seq = row.seq, epoch = row.epoch,
                        "stored envelope cannot be decoded ({}); marking it rejected so later events can flow",
                        row.problem);
                    let outcome = Outcome::Rejected {
                        reason: format!(
                            "collector could not read the stored event: {}",
                            row.problem
                        ),
                    };
                    self.inbox
                        .call(move |i| {
                            i.record_verdict(&row.device, row.epoch, row.seq, &outcome, now_ms())
                        })
                        .await
                        .map(|_| ())
                }
            };
            if let Err(e) = result {
                error!(device = %device, "cannot record a delivery result: {e}; the lane pauses");
                tokio::time::sleep(self.backoff.max.min(RESCAN)).await;
                return;
            }
        }
    }

    /// Delivers one event until the ERP gives a verdict; records it and
    /// publishes the verdict ack.
    async fn deliver(&self, pending: PendingEvent) -> Result<(), InboxError> {
        let PendingEvent {
            site,
            envelope,
            attempts,
        } = pending;
        let id = envelope.id.to_string();
        let Some(event) = envelope.business_event() else {
            // Ingest stores readings as skipped; a pending one would block
            // the lane forever, so set it aside.
            let (dev, ep, seq) = (envelope.device.clone(), envelope.epoch, envelope.seq);
            return self
                .inbox
                .call(move |i| i.mark_skipped(&dev, ep, seq, now_ms()))
                .await;
        };
        let body = webhook::cloudevent_body(&site, &envelope, event);
        let mut attempt = attempts;
        let outcome = loop {
            match self.attempt(&envelope, &id, &body).await {
                AttemptResult::Verdict(outcome) => break outcome,
                AttemptResult::Retry { error, retry_after } => {
                    let delay = self
                        .backoff
                        .delay(attempt)
                        .max(retry_after.unwrap_or_default());
                    warn!(device = %envelope.device, seq = envelope.seq, event_id = %id,
                        attempt = attempt + 1, retry_in_ms = delay.as_millis() as u64,
                        "ERP delivery failed: {error}; will retry");
                    let (dev, ep, seq) = (envelope.device.clone(), envelope.epoch, envelope.seq);
                    self.inbox
                        .call(move |i| i.record_attempt(&dev, ep, seq, &error, now_ms()))
                        .await?;
                    attempt = attempt.saturating_add(1);
                    tokio::time::sleep(delay).await;
                }
            }
        };
        match &outcome {
            Outcome::Booked { document } => info!(device = %envelope.device, seq = envelope.seq,
                event_id = %id, document = %document, "ERP booked event"),
            Outcome::Rejected { reason } => warn!(device = %envelope.device, seq = envelope.seq,
                event_id = %id, reason = %reason, "ERP rejected event"),
        }
        let (dev, ep, seq, o) = (
            envelope.device.clone(),
            envelope.epoch,
            envelope.seq,
            outcome.clone(),
        );
        let recorded = self
            .inbox
            .call(move |i| i.record_verdict(&dev, ep, seq, &o, now_ms()))
            .await?;
        if recorded {
            self.publish_verdict(&site, &envelope, outcome).await;
        }
        Ok(())
    }

    async fn publish_verdict(
        &self,
        site: &dockline_protocol::SiteId,
        envelope: &Envelope,
        outcome: Outcome,
    ) {
        let verdict = Verdict {
            seq: envelope.seq,
            id: envelope.id,
            outcome,
        };
        match Publication::ack(
            site,
            &envelope.device,
            envelope.epoch,
            None,
            Vec::new(),
            vec![verdict],
        ) {
            Ok(p) => {
                // Closed only at shutdown; the verdict stays in the inbox either way.
                if self.acks.send(p).await.is_err() {
                    debug!(device = %envelope.device, seq = envelope.seq, event_id = %envelope.id,
                        "verdict ack not sent: shutting down");
                }
            }
            Err(e) => {
                error!(device = %envelope.device, seq = envelope.seq, event_id = %envelope.id,
                "cannot encode verdict ack: {e}")
            }
        }
    }

    /// One signed POST; never fails, transport errors become `Retry`.
    async fn attempt(&self, envelope: &Envelope, id: &str, body: &[u8]) -> AttemptResult {
        let Ok(_permit) = self.permits.acquire().await else {
            return AttemptResult::Retry {
                error: "delivery is shutting down".into(),
                retry_after: None,
            };
        };
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        let signature = self.key.sign(id, timestamp, body);
        debug!(device = %envelope.device, seq = envelope.seq, event_id = %id, "posting event to ERP");
        let sent = self
            .client
            .post(self.url.clone())
            .header("content-type", "application/cloudevents+json")
            .header("webhook-id", id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .header("idempotency-key", webhook::idempotency_key(id))
            .body(body.to_vec())
            .send()
            .await;
        let mut resp = match sent {
            Ok(r) => r,
            Err(e) => {
                return AttemptResult::Retry {
                    error: transport_error(&e),
                    retry_after: None,
                };
            }
        };
        let status = resp.status().as_u16();
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let retry_after = header("retry-after");
        let location = header("location");
        let mut bytes = Vec::new();
        loop {
            match resp.chunk().await {
                Ok(Some(chunk)) => {
                    let room = MAX_RESPONSE_BYTES.saturating_sub(bytes.len());
                    bytes.extend_from_slice(&chunk[..chunk.len().min(room)]);
                    if room <= chunk.len() {
                        break;
                    }
                }
                Ok(None) => break,
                // A 2xx whose body was cut still booked the event; anything
                // else is classified from what arrived.
                Err(e) => {
                    debug!(device = %envelope.device, seq = envelope.seq, event_id = %id,
                        "ERP response body ended early: {e}");
                    break;
                }
            }
        }
        let body = String::from_utf8_lossy(&bytes);
        classify(&ErpResponse {
            status,
            retry_after: retry_after.as_deref(),
            location: location.as_deref(),
            body: &body,
        })
    }
}

fn transport_error(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else {
        "request failed"
    };
    // The source chain holds the useful part (connection refused, DNS, …).
    let mut text = format!("ERP {kind}: {e}");
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resp(status: u16, body: &'static str) -> ErpResponse<'static> {
        ErpResponse {
            status,
            body,
            ..ErpResponse::default()
        }
    }

    fn booked(doc: &str) -> AttemptResult {
        AttemptResult::Verdict(Outcome::Booked {
            document: doc.into(),
        })
    }

    #[test]
    fn classification_table() {
        let retry = |r: &AttemptResult| matches!(r, AttemptResult::Retry { .. });
        let rejected =
            |r: &AttemptResult| matches!(r, AttemptResult::Verdict(Outcome::Rejected { .. }));
        assert_eq!(
            classify(&resp(200, r#"{"document":"WH/OUT/7"}"#)),
            booked("WH/OUT/7")
        );
        assert_eq!(classify(&resp(201, r#"{"id":42}"#)), booked("42"));
        assert_eq!(classify(&resp(204, "")), booked("HTTP 204"));
        let with_location = ErpResponse {
            location: Some("/moves/9"),
            ..resp(201, "not json")
        };
        assert_eq!(classify(&with_location), booked("/moves/9"));
        for s in [408, 409, 425, 429, 500, 502, 503, 504, 599] {
            assert!(retry(&classify(&resp(s, ""))), "{s} should be retried");
        }
        for s in [400, 401, 403, 404, 410, 413, 422, 301, 100] {
            assert!(
                rejected(&classify(&resp(s, "bad"))),
                "{s} should be rejected"
            );
        }
        assert_eq!(
            classify(&resp(422, "quantity exceeds order")),
            AttemptResult::Verdict(Outcome::Rejected {
                reason: "HTTP 422: quantity exceeds order".into()
            })
        );
        let long = "x".repeat(1000);
        let leaked: &'static str = Box::leak(long.into_boxed_str());
        match classify(&resp(400, leaked)) {
            AttemptResult::Verdict(Outcome::Rejected { reason }) => {
                assert_eq!(reason.len(), "HTTP 400: ".len() + 300)
            }
            other => panic!("{other:?}"),
        }
        let throttled = ErpResponse {
            retry_after: Some("7"),
            ..resp(429, "")
        };
        match classify(&throttled) {
            AttemptResult::Retry { retry_after, .. } => {
                assert_eq!(retry_after, Some(Duration::from_secs(7)))
            }
            other => panic!("{other:?}"),
        }
    }
}
