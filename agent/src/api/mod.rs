//! The local HTTP API on 127.0.0.1 for the handheld app.
//!
//! | method | path               | what                                            |
//! |--------|--------------------|-------------------------------------------------|
//! | POST   | `/v1/events`       | queue a business event; 201 only after commit (200 for a replayed `Idempotency-Key`) |
//! | GET    | `/v1/status`       | queue, link, device and station health          |
//! | POST   | `/v1/tasks`        | a pick list for the pick stations (see below)   |
//! | GET    | `/v1/tasks`        | pick lists waiting for a station                |
//! | GET    | `/v1/events`       | receipts, newest first (`?state=booked&limit=50&before=SEQ`) |
//! | GET    | `/v1/events/{id}`  | one receipt: queued, stored, booked, rejected (`?known=queued&wait_ms=25000`: a long poll that answers when the state is no longer `known`) |
//! | POST/PUT/GET | `/v1/media`, `/v1/media/{sha256}` | signatures and photos: kept sealed on the agent, sent to the collector after their event, each with its state ([`media`]) |
//! | GET    | `/v1/openapi.json` | the OpenAPI 3.1 description of all of this      |
//! | GET    | `/app/`            | the handheld app ([`crate::app`])               |
//!
//! A pick list is `{"order": "SO-1001", "lines": [{"item": "09506000134352",
//! "quantity": 2, "unit_weight_kg": 0.25}]}`: `order` is the text of the
//! list's barcode, `item` a GTIN, `unit_weight_kg` optional (no scale check
//! without it). Posting the same order again replaces it until a station
//! opens it; see [`crate::stations`] for what the stations do with it.
//!
//! Every error is JSON `{"error": "..."}` that says what was wrong and how to fix it.
//!
//! # Retries
//!
//! Both POSTs take an `Idempotency-Key` header ([`idempotency`]): every
//! retry of one request with the same key gets the first answer, and the
//! event is stored once, also when the agent died between its commit and
//! its answer.
//!
//! # Access
//!
//! [`guard`] checks every request, unknown routes included, before its body
//! is read: a loopback `Host`, no foreign `Origin`, the per-install token
//! ([`token`]) or the app's cookie, and JSON bodies. [`serve`] caps the
//! connections and closes those that are slow to send their headers.
//! Every request body is capped at [`MAX_BODY_BYTES`] (413 above it).

pub mod guard;
pub mod idempotency;
pub mod media;
pub mod openapi;
pub(crate) mod routes;
pub mod token;

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use dockline_protocol::TimeSource;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::devices::Presence;
use crate::outbox::Outbox;
use crate::stations::Stations;
use crate::uplink::LinkStatus;

pub use guard::{Guard, RefusalCounts};

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
    /// Pick-list idempotency keys (events keep theirs in the outbox).
    pub task_keys: Arc<Mutex<idempotency::TaskKeys>>,
    /// Proof-of-delivery media held on the agent.
    pub media: Arc<crate::outbox::media::MediaStore>,
    /// The disk budget events and media share (`[outbox] budget_bytes`).
    pub budget_bytes: u64,
}

/// Builds the router: the API, the app and the document, all behind the
/// [`guard`].
pub fn router(state: ApiState, guard: Arc<Guard>) -> Router {
    Router::new()
        .merge(routes::routes())
        .merge(media::routes(state.media.max_bytes()))
        .route("/v1/openapi.json", get(openapi::document))
        .merge(crate::app::routes())
        .merge(crate::ops_http::router())
        .fallback(|| async {
            error(
                StatusCode::NOT_FOUND,
                "no such route; see the agent's API at /v1/openapi.json (/v1/events, /v1/status, /v1/tasks, /app/)",
            )
        })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::Extension(guard.clone()))
        .with_state(state)
        // Outermost, so a refused request is refused before anything reads
        // its body.
        .layer(middleware::from_fn_with_state(guard, guard::check))
}

/// A JSON error answer.
pub(crate) fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

/// Connection limits for [`serve`].
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most connections served at once; more get 503 and are closed.
    pub max_connections: usize,
    /// A request's headers must arrive within this time.
    pub header_timeout: Duration,
}

/// Serves `router` on `listener` until `stop` resolves, then lets the open
/// connections finish their requests.
///
/// Each connection holds a permit of a semaphore of `max_connections`; a
/// connection over the cap gets a `503` with `Connection: close` at once,
/// without reading its request, so a local flood is told off cheaply and
/// the app's own connections keep theirs. hyper closes a connection whose
/// request headers do not arrive within `header_timeout` (a slowloris
/// holds no permit for long).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    refusals: Arc<guard::Refusals>,
    stop: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let permits = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let (closing_tx, closing_rx) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    tokio::pin!(stop);
    loop {
        let (mut stream, _) = tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait, do not spin.
                    tracing::warn!(error = %e, "local API cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            refusals.over_cap();
            tokio::spawn(async move {
                let answer = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: 91\r\n\r\n{\"error\":\"too many connections to the agent's API; retry in a moment ([api] max_connections)\"}";
                let _ =
                    tokio::time::timeout(Duration::from_secs(1), stream.write_all(answer)).await;
                let _ = stream.shutdown().await;
            });
            continue;
        };
        // Finished connections are reaped as new ones come.
        while tasks.try_join_next().is_some() {}
        let service = TowerToHyperService::new(router.clone());
        let mut closing = closing_rx.clone();
        let refusals = refusals.clone();
        let timeout = limits.header_timeout;
        tasks.spawn(async move {
            let _permit = permit;
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(timeout);
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            let result = tokio::select! {
                r = conn.as_mut() => r,
                _ = closing.changed() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = result
                && e.is_timeout()
            {
                refusals.slow();
            }
        });
    }
    let _ = closing_tx.send(true);
    while tasks.join_next().await.is_some() {}
    Ok(())
}
