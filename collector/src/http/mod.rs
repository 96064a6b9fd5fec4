//! The HTTP API.
//!
//! | method | path | what |
//! |---|---|---|
//! | GET | `/healthz` | `ok` while the process serves HTTP (liveness; no auth) |
//! | GET | `/readyz` | `ready` when the inbox answers, delivery runs and MQTT ingest is not stalled (messages waiting, none handled for [`crate::ingest::mqtt::STALL_AFTER`]), else 503 naming what is not (no auth) |
//! | GET | `/metrics` | OpenMetrics text (`http/metrics.rs`) |
//! | POST | `/v1/login` | `{"username","password"}` → a session token ([`crate::http::auth`]), `Cache-Control: no-store`; 429 with `Retry-After` while the user or client address backs off after failures ([`crate::http::login_limit`]) |
//! | POST | `/v1/logout` | ends the session of the bearer token |
//! | GET | `/v1/whoami` | the caller and its role |
//! | GET | `/v1/stats` | counters (also `resend_requests`, `holes_lost`), devices with their watermark ("complete up to N") and open holes, open dead letters, devices with one, parked and blocked lane counts, `delivered_out_of_order` |
//! | GET | `/v1/lanes` | parked and blocked business lanes, longest waiting first: key, `parked`/`blocked`, what it waits for, `since_ms`, `waiting_ms`, pending events (see [`crate::delivery::lane`]) |
//! | GET | `/v1/endpoint` | the ERP endpoint's circuit breaker (closed, open: failures, throttled or halted with the reason) |
//! | GET | `/dlq` | open dead letters, newest first (`?all=true`: also resolved ones) |
//! | GET | `/dlq/{id}` | one dead letter: the original event, every attempt, the reason |
//! | POST | `/dlq/{id}/replay` | re-queue the event (same id and idempotency key), unblock its lane |
//! | POST | `/dlq/{id}/discard` | give up on the event (`?note=…`), unblock its lane |
//! | GET | `/v1/media/{hex}`, `/v1/events/{id}/media`, `/v1/media-lanes`, `/v1/media-stats` | proof-of-delivery media (see `http/media.rs`; a signed link opens one medium without a token) |
//! | GET | `/ui/…`, `/v1/devices`, `/v1/orders`, `/v1/stuck`, `/v1/exceptions`, `/v1/dead-letters` | the dashboard and the JSON it reads (see `http/dashboard`) |
//!
//! Access: every route but `/healthz`, `/readyz` and `/v1/login` needs a
//! `viewer` bearer token, and every changing one (`POST`) an `operator`
//! one, once `[[api.tokens]]` or `[[api.users]]` are configured; see
//! [`crate::http::auth`] (also for CSRF). Request bodies are limited to
//! [`MAX_BODY`] bytes.
//!
//! Everything is read from the inbox on every request (no cached copy), so
//! what the demo and tests display is what is committed. A replay or discard
//! wakes delivery at once. Errors are plain text naming the problem;
//! unknown ids are 404, already resolved dead letters 409.

pub mod auth;
pub(crate) mod dashboard;
pub mod login_limit;
pub mod media;
mod metrics;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tracing::{error, info};

use crate::delivery::Delivery;
use crate::delivery::dlq::{self, DlqError};
use crate::inbox::{InboxError, InboxHandle};
use auth::Auth;

/// `[api]`: the HTTP API.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Address to bind; port 0 picks a free port, written to `{data_dir}/api.addr`.
    #[serde(default = "default_api_listen")]
    pub listen: SocketAddr,
    /// `[[api.tokens]]`: bearer tokens and their roles (see [`crate::http::auth`]).
    /// Without tokens or users the API is open, and only a loopback
    /// `listen` is accepted.
    #[serde(default)]
    pub tokens: Vec<crate::http::auth::TokenConfig>,
    /// `[[api.users]]`: users who log in with a password (argon2 hash).
    #[serde(default)]
    pub users: Vec<crate::http::auth::UserConfig>,
    /// How long a login session lasts, seconds (at least 60).
    #[serde(default = "default_session_ttl_secs")]
    pub session_ttl_secs: u64,
}

fn default_session_ttl_secs() -> u64 {
    12 * 3600
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            listen: default_api_listen(),
            tokens: Vec::new(),
            users: Vec::new(),
            session_ttl_secs: default_session_ttl_secs(),
        }
    }
}

fn default_api_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// What the API serves from.
#[derive(Debug, Clone)]
pub struct ApiState {
    /// The inbox.
    pub inbox: InboxHandle,
    /// Notified after a replay or discard, so delivery looks again.
    pub wake: Arc<Notify>,
    /// Delivery, for the endpoint's state and the metrics (absent in tests
    /// without one).
    pub delivery: Option<Arc<Delivery>>,
    /// Who may do what.
    pub auth: Arc<Auth>,
    /// How far MQTT ingest has come (absent in tests without MQTT): `/readyz`
    /// is 503 while messages wait and none is handled.
    pub ingest: Option<Arc<crate::ingest::mqtt::IngestProgress>>,
}

/// Largest request body accepted, bytes (the API takes only small JSON).
pub const MAX_BODY: usize = 64 * 1024;

/// The API's routes.
pub fn router(state: ApiState) -> Router {
    let auth = Arc::clone(&state.auth);
    let sessions = Router::new()
        .route("/v1/login", post(auth::login))
        .route("/v1/logout", post(auth::logout))
        .with_state(Arc::clone(&auth));
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics::handler))
        .route("/v1/whoami", get(auth::whoami))
        .route("/v1/stats", get(stats))
        .route("/v1/endpoint", get(endpoint))
        .route("/v1/lanes", get(lanes))
        .route("/dlq", get(list))
        .route("/dlq/{id}", get(show))
        .route("/dlq/{id}/replay", post(replay))
        .route("/dlq/{id}/discard", post(discard))
        .merge(crate::http::dashboard::routes())
        .with_state(state)
        .merge(sessions)
        .layer(axum::middleware::from_fn_with_state(auth, auth::authorize))
        .layer(axum::middleware::from_fn(security_headers))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
}

/// Headers on every answer: the dashboard loads only its own script and
/// style and cannot be framed (no clickjacking of the Replay button), and
/// browsers do not sniff content types or leak the URL as a referrer.
pub(crate) async fn security_headers(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    use axum::http::{HeaderValue, header};
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
        ),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

/// Ready when the inbox answers a read and delivery is running.
async fn readyz(State(api): State<ApiState>) -> Response {
    if let Some(p) = &api.ingest
        && let Some(idle) = p.stalled_for(crate::ingest::mqtt::STALL_AFTER)
    {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "not ready: ingest stalled: {} messages from the broker wait and none was handled for {} s; see the collector's log (the inbox database may not answer)\n",
                p.waiting(),
                idle.as_secs()
            ),
        )
            .into_response();
    }
    let inbox = api.inbox.call(|i| i.stats().map(|_| ())).await;
    match (&inbox, &api.delivery) {
        (Ok(()), Some(_)) => "ready\n".into_response(),
        (Err(e), _) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: the inbox does not answer: {e}\n"),
        )
            .into_response(),
        (Ok(()), None) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: ERP delivery is not running\n",
        )
            .into_response(),
    }
}

fn inbox_failed(what: &str, e: &InboxError) -> Response {
    error!("cannot {what}: {e}");
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("cannot {what}: {e}\n"),
    )
        .into_response()
}

fn dlq_failed(what: &str, e: &DlqError) -> Response {
    let status = match e {
        DlqError::NotFound(_) => StatusCode::NOT_FOUND,
        DlqError::AlreadyResolved { .. } => StatusCode::CONFLICT,
        DlqError::Inbox(e) => return inbox_failed(what, e),
        DlqError::NoDatabase(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    (status, format!("{e}\n")).into_response()
}

async fn stats(State(api): State<ApiState>) -> Response {
    match api.inbox.call(|i| i.stats()).await {
        Ok(stats) => Json(stats).into_response(),
        Err(e) => inbox_failed("read stats", &e),
    }
}

/// Parked and blocked lanes, longest waiting first, with what each waits
/// for and for how long.
async fn lanes(State(api): State<ApiState>) -> Response {
    match api.inbox.call(|i| i.waiting_lanes(1000)).await {
        Ok(lanes) => {
            let now = crate::now_ms();
            let items: Vec<serde_json::Value> = lanes
                .into_iter()
                .map(|l| {
                    let waiting_ms = now.saturating_sub(l.since_ms).max(0);
                    let mut v = serde_json::to_value(&l).unwrap_or_default();
                    v["waiting_ms"] = serde_json::json!(waiting_ms);
                    v
                })
                .collect();
            Json(items).into_response()
        }
        Err(e) => inbox_failed("read lanes", &e),
    }
}

async fn endpoint(State(api): State<ApiState>) -> Response {
    match &api.delivery {
        Some(d) => Json(d.endpoint_status()).into_response(),
        None => (StatusCode::NOT_FOUND, "delivery is not running\n").into_response(),
    }
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    #[serde(default)]
    all: bool,
}

async fn list(State(api): State<ApiState>, Query(q): Query<ListQuery>) -> Response {
    match api
        .inbox
        .call(move |i| i.dead_letters(q.all, dlq::LIST_LIMIT))
        .await
    {
        Ok(items) => Json(items).into_response(),
        Err(e) => inbox_failed("list dead letters", &e),
    }
}

async fn show(State(api): State<ApiState>, Path(id): Path<i64>) -> Response {
    match api.inbox.call(move |i| i.dead_letter(id)).await {
        Ok(Some(dl)) => Json(dlq::show_json(&dl)).into_response(),
        Ok(None) => dlq_failed("show a dead letter", &DlqError::NotFound(id)),
        Err(e) => inbox_failed("read a dead letter", &e),
    }
}

async fn replay(State(api): State<ApiState>, Path(id): Path<i64>) -> Response {
    resolve(api, id, None).await
}

#[derive(Debug, Deserialize)]
struct DiscardQuery {
    note: Option<String>,
}

async fn discard(
    State(api): State<ApiState>,
    Path(id): Path<i64>,
    Query(q): Query<DiscardQuery>,
) -> Response {
    let note = q.note.unwrap_or_else(|| "discarded through the API".into());
    resolve(api, id, Some(note)).await
}

async fn resolve(api: ApiState, id: i64, discard: Option<String>) -> Response {
    let now = crate::now_ms();
    let result = api
        .inbox
        .call(move |i| Ok(dlq::resolve(i, id, discard.as_deref(), now)))
        .await;
    match result {
        Ok(Ok(done)) => {
            info!(dead_letter = id, result = %done, "dead letter resolved through the API");
            api.wake.notify_one();
            Json(done).into_response()
        }
        Ok(Err(e)) => dlq_failed("resolve a dead letter", &e),
        Err(e) => inbox_failed("resolve a dead letter", &e),
    }
}
