//! The HTTP API: `GET /healthz` and `GET /v1/stats`.
//!
//! Stats are read from the inbox on every request (no cached copy), so what
//! the demo and tests display is what is committed.

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tracing::error;

use crate::inbox::InboxHandle;

/// The API's routes over `inbox`.
pub fn router(inbox: InboxHandle) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/v1/stats", get(stats))
        .with_state(inbox)
}

async fn stats(State(inbox): State<InboxHandle>) -> Response {
    match inbox.call(|i| i.stats()).await {
        Ok(stats) => Json(stats).into_response(),
        Err(e) => {
            error!("cannot read stats: {e}");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot read stats: {e}\n"),
            )
                .into_response()
        }
    }
}
