//! The local HTTP API on 127.0.0.1 for the handheld app.
//!
//! | method | path               | what                                            |
//! |--------|--------------------|-------------------------------------------------|
//! | POST   | `/v1/events`       | queue a business event; 201 only after commit   |
//! | GET    | `/v1/status`       | queue, link, device and station health          |
//! | POST   | `/v1/tasks`        | a pick list for the pick stations (see below)   |
//! | GET    | `/v1/tasks`        | pick lists waiting for a station                |
//! | GET    | `/v1/events`       | receipts, newest first (`?state=booked&limit=50&before=SEQ`) |
//! | GET    | `/v1/events/{id}`  | one receipt: queued, stored, booked, rejected   |
//!
//! A pick list is `{"order": "SO-1001", "lines": [{"item": "09506000134352",
//! "quantity": 2, "unit_weight_kg": 0.25}]}`: `order` is the text of the
//! list's barcode, `item` a GTIN, `unit_weight_kg` optional (no scale check
//! without it). Posting the same order again replaces it until a station
//! opens it; see [`crate::stations`] for what the stations do with it.
//!
//! Every error is JSON `{"error": "..."}` that says what was wrong and how to fix it.
//!
//! # Access
//!
//! The API listens on loopback unless configured otherwise (and a
//! non-loopback address needs a token, see [`crate::config::ApiConfig`]).
//! With `[api] token` (or `DOCKLINE_API_TOKEN`) set, every route, unknown
//! ones included, needs `Authorization: Bearer <token>`; anything else gets
//! 401 with a JSON error before the body is read. The comparison takes the
//! same time wherever the tokens differ, and the token is never logged.
//! Every request body is capped at [`MAX_BODY_BYTES`] (413 above it).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use dockline_protocol::{
    BusinessEvent, EventDetail, EventId, Payload, Priority, References, TimeSource,
};
use serde::Deserialize;
use serde_json::json;

use crate::config::Secret;
use crate::devices::Presence;
use crate::outbox::{NewEvent, Outbox, OutboxError};
use crate::stations::{PickTask, Stations};
use crate::uplink::LinkStatus;

/// Largest request body accepted; a business event is a few hundred bytes.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// What the handlers share.
#[derive(Clone)]
pub struct ApiState {
    /// The outbox.
    pub outbox: Outbox,
    /// Broker link health.
    pub link: Arc<LinkStatus>,
    /// Serial device health.
    pub devices: Arc<Presence>,
    /// Station rules and the pick lists waiting for them.
    pub stations: Arc<Stations>,
    /// The site, for status output.
    pub site: String,
    /// The device clock's trust level.
    pub clock: TimeSource,
}

/// Builds the router; with `token`, every request must carry it as a
/// bearer token.
pub fn router(state: ApiState, token: Option<Secret>) -> Router {
    let router = Router::new()
        .route("/v1/events", post(post_event).get(list_events))
        .route("/v1/events/{id}", get(get_event))
        .route("/v1/status", get(status))
        .route("/v1/tasks", post(post_task).get(list_tasks))
        .merge(crate::ops_http::router())
        .fallback(|| async {
            error(
                StatusCode::NOT_FOUND,
                "no such route; see the agent's API table (/v1/events, /v1/status, /v1/tasks)",
            )
        })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state);
    match token {
        // Outermost, so a request without the token is refused before
        // anything reads its body.
        Some(token) => router.layer(middleware::from_fn_with_state(
            Arc::new(token),
            require_token,
        )),
        None => router,
    }
}

/// Lets a request through only with `Authorization: Bearer <token>`.
async fn require_token(State(token): State<Arc<Secret>>, request: Request, next: Next) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let ok = presented.is_some_and(|p| token_matches(p, token.expose()));
    if ok {
        return next.run(request).await;
    }
    let message = if presented.is_some() {
        "wrong API token; send the agent's [api] token (DOCKLINE_API_TOKEN) as Authorization: Bearer <token>"
    } else {
        "this agent's API needs a token; send Authorization: Bearer <token> with the agent's [api] token (DOCKLINE_API_TOKEN)"
    };
    let mut response = error(StatusCode::UNAUTHORIZED, message);
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

/// Compares in time independent of where the two differ (only a length
/// difference returns early, which tells an attacker nothing useful about a
/// random token).
fn token_matches(presented: &str, expected: &str) -> bool {
    use subtle::ConstantTimeEq;
    presented.as_bytes().ct_eq(expected.as_bytes()).into()
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

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn outbox_error(e: OutboxError) -> Response {
    match e {
        OutboxError::Invalid(m) => error(StatusCode::UNPROCESSABLE_ENTITY, m),
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

async fn post_event(State(s): State<ApiState>, body: Bytes) -> Response {
    let posted: PostedEvent = match serde_json::from_slice(&body) {
        Ok(p) => p,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                    "invalid event JSON: {e}; expected {{\"detail\": {{\"picked\": {{\"item\": \"…\", \"quantity\": 1}}}}, \"refs\": {{\"order\": \"…\"}}}}"
                ),
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
    match s.outbox.append(event).await {
        Ok(a) => (
            StatusCode::CREATED,
            Json(json!({ "seq": a.seq, "epoch": a.epoch, "event_id": a.event_id.to_string(), "state": "queued" })),
        )
            .into_response(),
        Err(e) => outbox_error(e),
    }
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    state: Option<String>,
    limit: Option<usize>,
    /// Only sequences below this one: pass the last `seq` of a page to get
    /// the next (older) page.
    before: Option<u64>,
}

async fn list_events(State(s): State<ApiState>, Query(q): Query<ListQuery>) -> Response {
    if let Some(state) = &q.state
        && !["queued", "stored", "booked", "rejected"].contains(&state.as_str())
    {
        return error(
            StatusCode::BAD_REQUEST,
            format!("unknown state {state:?}; use queued, stored, booked or rejected"),
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

async fn get_event(State(s): State<ApiState>, Path(id): Path<String>) -> Response {
    let Some(id) = EventId::parse(&id) else {
        return error(
            StatusCode::BAD_REQUEST,
            format!("{id:?} is not an event id; use the event_id returned by POST /v1/events"),
        );
    };
    match s.outbox.receipt(id).await {
        Ok(Some(r)) => Json(r).into_response(),
        Ok(None) => error(
            StatusCode::NOT_FOUND,
            format!("no event {id} on this device"),
        ),
        Err(e) => outbox_error(e),
    }
}

async fn status(State(s): State<ApiState>) -> Response {
    match s.outbox.status().await {
        Ok(q) => {
            let oldest_unacked_ms = q
                .oldest_queued_ms
                .map(|t| (now_ms() - t).max(0))
                .unwrap_or(0);
            Json(json!({
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
                "devices": s.devices.snapshot(),
                "stations": s.stations.lock().engine.status(),
            }))
            .into_response()
        }
        Err(e) => outbox_error(e),
    }
}

async fn post_task(State(s): State<ApiState>, body: Bytes) -> Response {
    let task: PickTask = match serde_json::from_slice(&body) {
        Ok(t) => t,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                    "invalid pick list JSON: {e}; expected {{\"order\": \"SO-1001\", \"lines\": [{{\"item\": \"09506000134352\", \"quantity\": 2, \"unit_weight_kg\": 0.25}}]}}"
                ),
            );
        }
    };
    let task = match task.normalised() {
        Ok(t) => t,
        Err(m) => return error(StatusCode::UNPROCESSABLE_ENTITY, m),
    };
    let (order, lines) = (task.order.clone(), task.lines.len());
    match s.stations.lock().tasks.post(task) {
        Ok(replaced) => (
            StatusCode::CREATED,
            Json(
                json!({ "order": order, "lines": lines, "replaced": replaced, "state": "waiting" }),
            ),
        )
            .into_response(),
        Err(m) => error(StatusCode::INSUFFICIENT_STORAGE, m),
    }
}

async fn list_tasks(State(s): State<ApiState>) -> Response {
    let tasks: Vec<PickTask> = s.stations.lock().tasks.waiting().cloned().collect();
    Json(json!({ "tasks": tasks })).into_response()
}

#[cfg(test)]
mod tests {
    use super::token_matches;

    #[test]
    fn tokens_match_only_when_equal() {
        assert!(token_matches("s3cret-token-0123", "s3cret-token-0123"));
        assert!(!token_matches("s3cret-token-0124", "s3cret-token-0123"));
        assert!(!token_matches("s3cret", "s3cret-token-0123"));
        assert!(!token_matches("", "s3cret-token-0123"));
    }
}
