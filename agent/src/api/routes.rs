//! The `/v1` handlers: events, receipts, pick lists and status.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Extension;
use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use dockline_protocol::{BusinessEvent, EventDetail, EventId, Payload, Priority, References};
use serde::Deserialize;
use serde_json::{Value, json};

use super::idempotency::{self, Remembered};
use super::{ApiState, Guard, error};
use crate::outbox::{Appended, NewEvent, OutboxError};
use crate::stations::PickTask;
use dockline_host::clock::now_ms;

/// Longest a receipt long poll waits.
pub const MAX_WAIT_MS: u64 = 30_000;

/// The `/v1` routes (state applied by [`super::router`]).
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v1/events", post(post_event).get(list_events))
        .route("/v1/events/{id}", get(get_event))
        .route("/v1/status", get(status))
        .route("/v1/tasks", post(post_task).get(list_tasks))
}

/// A business event as the handheld app posts it (long field names).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PostedEvent {
    #[serde(default)]
    priority: Option<Priority>,
    detail: EventDetail,
    #[serde(default)]
    refs: References,
    /// Capture time (Unix ms); now when absent.
    #[serde(default)]
    captured_ms: Option<i64>,
}

pub(crate) fn outbox_error(e: OutboxError) -> Response {
    match e {
        OutboxError::Invalid(m) => error(StatusCode::UNPROCESSABLE_ENTITY, m),
        OutboxError::KeyReused { .. } => error(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()),
        OutboxError::Closed => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        // The outbox is full of events that must not be shed: the handheld
        // must keep this one itself (and show it) until space returns.
        OutboxError::Full { .. } => error(
            StatusCode::INSUFFICIENT_STORAGE,
            format!("{e}; the event was NOT stored, keep it on the handheld and retry"),
        ),
        other => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("{other}; the event was NOT stored, retry it"),
        ),
    }
}

/// Parses a JSON body, or answers 400 with `expected` as the example.
fn json_body(body: &[u8], what: &str, expected: &str) -> Result<Value, Box<Response>> {
    serde_json::from_slice(body).map_err(|e| {
        Box::new(error(
            StatusCode::BAD_REQUEST,
            format!("invalid {what} JSON: {e}; expected {expected}"),
        ))
    })
}

const EVENT_EXAMPLE: &str =
    r#"{"detail": {"picked": {"item": "…", "quantity": 1}}, "refs": {"order": "…"}}"#;

async fn post_event(State(s): State<ApiState>, headers: HeaderMap, body: Bytes) -> Response {
    let key = match idempotency::key_of(&headers) {
        Ok(k) => k,
        Err(m) => return error(StatusCode::BAD_REQUEST, m),
    };
    let value = match json_body(&body, "event", EVENT_EXAMPLE) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    let once = key.map(|k| idempotency::client_key(k, &value));
    let posted: PostedEvent = match serde_json::from_value(value) {
        Ok(p) => p,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("invalid event JSON: {e}; expected {EVENT_EXAMPLE}"),
            );
        }
    };
    let priority = posted
        .priority
        .unwrap_or_else(|| crate::priority::for_event(&posted.detail));
    let event = NewEvent {
        priority,
        captured_ms: posted.captured_ms.unwrap_or_else(now_ms),
        time_source: s.clock,
        payload: Payload::Event(BusinessEvent {
            detail: posted.detail,
            refs: posted.refs,
        }),
    };
    let media_refs = media_refs(&event.payload);
    let appended = match once {
        Some(once) => s.outbox.append_once(event, once).await,
        None => s.outbox.append(event).await,
    };
    if let Ok(a) = &appended
        && !media_refs.is_empty()
    {
        // The media wait until this event is stored at the collector. A
        // failure here only means they go once no business event is queued.
        let (media, seq) = (s.media.clone(), a.seq);
        let noted = tokio::task::spawn_blocking(move || {
            media_refs
                .iter()
                .try_for_each(|hex| media.note_reference(hex, seq))
        })
        .await;
        if !matches!(noted, Ok(Ok(()))) {
            tracing::warn!(seq, "could not note the event's media references");
        }
    }
    match appended {
        Ok(a) if a.replayed => {
            // The first answer again, with the receipt's state now.
            let state = match s.outbox.receipt(a.event_id).await {
                Ok(Some(r)) => r.state,
                _ => "queued".into(),
            };
            (StatusCode::OK, Json(event_answer(&a, &state))).into_response()
        }
        Ok(a) => (StatusCode::CREATED, Json(event_answer(&a, "queued"))).into_response(),
        Err(e) => outbox_error(e),
    }
}

/// The media a proof of delivery names (`sha256:<hex>` references), as hex.
fn media_refs(payload: &Payload) -> Vec<String> {
    let Payload::Event(BusinessEvent {
        detail: dockline_protocol::EventDetail::Delivered(pod),
        ..
    }) = payload
    else {
        return Vec::new();
    };
    [&pod.signature_ref, &pod.photo_ref]
        .into_iter()
        .flatten()
        .filter_map(|r| dockline_protocol::MediaHash::parse_ref(r))
        .map(|h| h.to_string())
        .collect()
}

fn event_answer(a: &Appended, state: &str) -> Value {
    json!({
        "seq": a.seq,
        "epoch": a.epoch,
        "event_id": a.event_id.to_string(),
        "state": state,
        "replayed": a.replayed,
    })
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    state: Option<String>,
    limit: Option<usize>,
    /// Only sequences below this one: pass the last `seq` of a page to get
    /// the next (older) page.
    before: Option<u64>,
}

const STATES: [&str; 5] = ["queued", "stored", "booked", "rejected", "shed"];

async fn list_events(State(s): State<ApiState>, Query(q): Query<ListQuery>) -> Response {
    if let Some(state) = &q.state
        && !STATES.contains(&state.as_str())
    {
        return error(
            StatusCode::BAD_REQUEST,
            format!("unknown state {state:?}; use queued, stored, booked, rejected or shed"),
        );
    }
    match s
        .outbox
        .receipts(q.state, q.limit.unwrap_or(100).min(1000), q.before)
        .await
    {
        Ok(r) => Json(json!({ "events": r })).into_response(),
        Err(e) => outbox_error(e),
    }
}

#[derive(Debug, Deserialize)]
struct ReceiptQuery {
    /// The state the caller knows: with `wait_ms`, answer once it changed.
    known: Option<String>,
    /// Longest wait for a change, at most [`MAX_WAIT_MS`].
    wait_ms: Option<u64>,
}

async fn get_event(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    Query(q): Query<ReceiptQuery>,
) -> Response {
    let Some(id) = EventId::parse(&id) else {
        return error(
            StatusCode::BAD_REQUEST,
            format!("{id:?} is not an event id; use the event_id returned by POST /v1/events"),
        );
    };
    // Subscribed before the first read, so a change between the read and
    // the wait is not missed.
    let mut changes = s.outbox.changes();
    let deadline = tokio::time::Instant::now()
        + Duration::from_millis(q.wait_ms.unwrap_or(0).min(MAX_WAIT_MS));
    loop {
        let receipt = match s.outbox.receipt(id).await {
            Ok(Some(r)) => r,
            Ok(None) => {
                return error(
                    StatusCode::NOT_FOUND,
                    format!("no event {id} on this device"),
                );
            }
            Err(e) => return outbox_error(e),
        };
        let unchanged = q.known.as_deref() == Some(receipt.state.as_str());
        if !unchanged {
            return Json(receipt).into_response();
        }
        match tokio::time::timeout_at(deadline, changes.changed()).await {
            Ok(Ok(())) => continue,
            // Timed out (or the outbox is gone): the state as it is.
            _ => return Json(receipt).into_response(),
        }
    }
}

async fn status(State(s): State<ApiState>, Extension(guard): Extension<Arc<Guard>>) -> Response {
    let media = s.media.clone();
    let media = match tokio::task::spawn_blocking(move || media.totals()).await {
        Ok(Ok(t)) => json!({
            "held": t.held, "bytes": t.bytes, "queued": t.queued, "queued_bytes": t.queued_bytes,
            "stored": t.stored, "attached": t.attached, "refused": t.refused,
            "sent_bytes": s.link.media_sent_bytes.load(Ordering::Relaxed),
            "resent_bytes": s.link.media_resent_bytes.load(Ordering::Relaxed),
            "acks_refused": s.link.media_acks_refused.load(Ordering::Relaxed),
        }),
        Ok(Err(e)) => json!({"error": e.to_string()}),
        Err(_) => json!({"error": "media count task failed"}),
    };
    match s.outbox.status().await {
        Ok(q) => {
            let oldest_unacked_ms = q
                .oldest_queued_ms
                .map(|t| (now_ms() - t).max(0))
                .unwrap_or(0);
            Json(json!({
                "version": crate::VERSION,
                "commit": crate::BUILD_COMMIT,
                "device": s.outbox.device().as_str(),
                "site": s.site,
                "epoch": q.epoch,
                "next_seq": q.next_seq,
                "acked_up_to": q.acked_up_to,
                "queued": q.queued,
                "queued_bytes": q.queued_bytes,
                "oldest_unacked_ms": oldest_unacked_ms,
                "stored": q.stored,
                "booked": q.booked,
                "rejected": q.rejected,
                "mqtt_connected": s.link.connected.load(Ordering::Relaxed),
                "mqtt_connects": s.link.connects.load(Ordering::Relaxed),
                "ack_timeouts": s.link.ack_timeouts.load(Ordering::Relaxed),
                "commands": s.link.commands.snapshot(),
                "acks": s.link.acks.snapshot(),
                "devices": s.devices.snapshot(),
                "media": media,
                "stations": s.stations.lock().engine.status(),
                "api_refusals": guard.refusals.snapshot(),
            }))
            .into_response()
        }
        Err(e) => outbox_error(e),
    }
}

const TASK_EXAMPLE: &str = r#"{"order": "SO-1001", "lines": [{"item": "09506000134352", "quantity": 2, "unit_weight_kg": 0.25}]}"#;

async fn post_task(State(s): State<ApiState>, headers: HeaderMap, body: Bytes) -> Response {
    let key = match idempotency::key_of(&headers) {
        Ok(k) => k,
        Err(m) => return error(StatusCode::BAD_REQUEST, m),
    };
    let value = match json_body(&body, "pick list", TASK_EXAMPLE) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    let once = key.map(|k| idempotency::client_key(k, &value));
    if let Some(once) = &once {
        let seen = s
            .task_keys
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .lookup(once);
        match seen {
            Some(Remembered::Same(answer)) => {
                return (StatusCode::OK, Json(answer)).into_response();
            }
            Some(Remembered::Conflict) => {
                return error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    format!(
                        "Idempotency-Key {:?} was already used for a different pick list; a retry must send the same body, a new list needs a new key",
                        once.key
                    ),
                );
            }
            None => {}
        }
    }
    let task: PickTask = match serde_json::from_value(value) {
        Ok(t) => t,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("invalid pick list JSON: {e}; expected {TASK_EXAMPLE}"),
            );
        }
    };
    let task = match task.normalised() {
        Ok(t) => t,
        Err(m) => return error(StatusCode::UNPROCESSABLE_ENTITY, m),
    };
    let (order, lines) = (task.order.clone(), task.lines.len());
    let posted = s.stations.lock().tasks.post(task);
    match posted {
        Ok(replaced) => {
            let answer =
                json!({ "order": order, "lines": lines, "replaced": replaced, "state": "waiting" });
            if let Some(once) = &once {
                s.task_keys
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remember(once, answer.clone());
            }
            (StatusCode::CREATED, Json(answer)).into_response()
        }
        Err(m) => error(StatusCode::INSUFFICIENT_STORAGE, m),
    }
}

async fn list_tasks(State(s): State<ApiState>) -> Response {
    let tasks: Vec<PickTask> = s.stations.lock().tasks.waiting().cloned().collect();
    Json(json!({ "tasks": tasks })).into_response()
}
