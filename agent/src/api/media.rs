//! The media routes: proof-of-delivery images into the outbox's media store
//! ([`crate::outbox::media`], which states the invariants).
//!
//! | method | path | what |
//! |---|---|---|
//! | POST | `/v1/media` | store an image (`Content-Type: image/png` or `image/jpeg`, which its magic bytes must confirm); the agent names it by its SHA-256; `Idempotency-Key` as for events; 201 new, 200 held already or replayed |
//! | PUT | `/v1/media/{sha256}` | the same at a hash the client computed (checked, 422 otherwise) |
//! | GET | `/v1/media` | what is held, each with its state: `queued` (with `have`, the bytes the collector has), `stored` (at the collector), `attached` (at the ERP, with its document) or `refused` (with the reason) |
//! | GET | `/v1/media/{sha256}` | the image back |
//! | POST | `/v1/link` | `{"metered": false}`: the handheld is on Wi-Fi now, a `[uplink] metered` device sends media anyway; `{"metered": true}` holds them again (until the configured window) |
//!
//! Events refer to media as `sha256:<hex>` (`signature_ref`, `photo_ref`).
//! Bodies above `[media] max_bytes` are refused with 413 before they are
//! read whole; a medium that does not fit in the disk budget beside the
//! queued events is refused with 507 (media are never shed).

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use dockline_protocol::media::MediaType;
use serde_json::{Value, json};

use super::{ApiState, error, idempotency};
use crate::outbox::keys::is_hex_digest;
use crate::outbox::media::{MediaError, MediaRecord, Progress, Put};

/// The media routes (state applied by [`super::router`]); their bodies may
/// be up to `max_bytes` (a larger body is 413 with the cap named).
pub fn routes(max_bytes: usize) -> Router<ApiState> {
    // One byte more than the cap reaches the store, which names the cap.
    let limit = DefaultBodyLimit::max(max_bytes.saturating_add(1));
    Router::new()
        .route("/v1/media", post(post_media).get(list).layer(limit))
        .route("/v1/media/{hex}", get(fetch).put(put).layer(limit))
        .route("/v1/link", post(post_link))
}

async fn post_link(State(s): State<ApiState>, body: Bytes) -> Response {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Link {
        metered: bool,
    }
    let Ok(link) = serde_json::from_slice::<Link>(&body) else {
        return error(
            StatusCode::BAD_REQUEST,
            r#"expected {"metered": false} (on Wi-Fi now: media may go) or {"metered": true}"#,
        );
    };
    s.link
        .unmetered_now
        .store(!link.metered, std::sync::atomic::Ordering::Relaxed);
    Json(json!({ "metered": link.metered })).into_response()
}

/// The API's view of a record.
pub fn record_json(r: &MediaRecord) -> Value {
    let mut v = json!({
        "ref": format!("sha256:{}", r.hash),
        "hash": r.hash,
        "type": r.media_type.content_type(),
        "bytes": r.bytes,
        "state": r.progress.name(),
        "have": r.have,
    });
    match &r.progress {
        Progress::Attached { doc: Some(doc) } => v["document"] = json!(doc),
        Progress::Refused { reason } => v["reason"] = json!(reason),
        _ => {}
    }
    v
}

fn declared_type(headers: &HeaderMap) -> Result<Option<MediaType>, Box<Response>> {
    let Some(ct) = headers.get(header::CONTENT_TYPE) else {
        return Ok(None);
    };
    let t = ct.to_str().unwrap_or_default();
    match t.split(';').next().map(str::trim) {
        Some(t) if t.eq_ignore_ascii_case("image/png") => Ok(Some(MediaType::Png)),
        Some(t) if t.eq_ignore_ascii_case("image/jpeg") => Ok(Some(MediaType::Jpeg)),
        _ => Err(Box::new(error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "media must be Content-Type: image/png or image/jpeg",
        ))),
    }
}

async fn store(s: ApiState, headers: HeaderMap, claimed: Option<String>, body: Bytes) -> Response {
    let declared = match declared_type(&headers) {
        Ok(d) => d,
        Err(r) => return *r,
    };
    let key = match idempotency::key_of(&headers) {
        Ok(k) => k,
        Err(m) => return error(StatusCode::BAD_REQUEST, m),
    };
    // Events and media share the disk budget.
    let held = match s.outbox.status().await {
        Ok(q) => q.queued_bytes,
        Err(e) => return super::routes::outbox_error(e),
    };
    let media = s.media.clone();
    let budget = s.budget_bytes;
    let stored = tokio::task::spawn_blocking(move || {
        let queued_media = media.totals().map(|t| t.queued_bytes).unwrap_or(0);
        media.put(
            &body,
            declared,
            claimed.as_deref(),
            key.as_deref(),
            (held.saturating_add(queued_media), budget),
        )
    })
    .await;
    match stored {
        Ok(Ok(Put {
            new,
            replayed,
            record,
        })) => {
            let mut answer = record_json(&record);
            answer["replayed"] = json!(replayed);
            let status = if new {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            (status, Json(answer)).into_response()
        }
        Ok(Err(e)) => {
            let status = match &e {
                MediaError::NotAnImage | MediaError::TypeMismatch { .. } => {
                    StatusCode::UNSUPPORTED_MEDIA_TYPE
                }
                MediaError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
                MediaError::HashMismatch { .. } | MediaError::KeyReused { .. } => {
                    StatusCode::UNPROCESSABLE_ENTITY
                }
                MediaError::Full { .. } => StatusCode::INSUFFICIENT_STORAGE,
                MediaError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
            };
            let text = match status {
                StatusCode::INTERNAL_SERVER_ERROR => {
                    format!("{e}; the image was NOT stored, retry")
                }
                _ => e.to_string(),
            };
            error(status, text)
        }
        Err(_) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "media store task failed; the image was NOT stored, retry",
        ),
    }
}

async fn post_media(State(s): State<ApiState>, headers: HeaderMap, body: Bytes) -> Response {
    store(s, headers, None, body).await
}

async fn put(
    State(s): State<ApiState>,
    UrlPath(hex): UrlPath<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !is_hex_digest(&hex) {
        return error(
            StatusCode::BAD_REQUEST,
            format!(
                "{hex:?} is not a SHA-256 in lower-case hex; PUT the image at /v1/media/<sha256 of its bytes>, or POST it to /v1/media"
            ),
        );
    }
    store(s, headers, Some(hex), body).await
}

async fn fetch(State(s): State<ApiState>, UrlPath(hex): UrlPath<String>) -> Response {
    let store = s.media.clone();
    if !is_hex_digest(&hex) {
        return error(
            StatusCode::BAD_REQUEST,
            format!("{hex:?} is not a SHA-256 in lower-case hex"),
        );
    }
    let shown = hex.clone();
    match tokio::task::spawn_blocking(move || store.get(&hex)).await {
        Ok(Ok(Some((t, bytes)))) => {
            ([(header::CONTENT_TYPE, t.content_type())], bytes).into_response()
        }
        Ok(Ok(None)) => error(
            StatusCode::NOT_FOUND,
            format!("no media {shown} on this agent"),
        ),
        Ok(Err(why)) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("media {shown}: {why}"),
        ),
        Err(_) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "media read task failed; retry",
        ),
    }
}

async fn list(State(s): State<ApiState>) -> Response {
    let store = s.media.clone();
    match tokio::task::spawn_blocking(move || store.list()).await {
        Ok(Ok(items)) => Json(json!({
            "media": items.iter().map(record_json).collect::<Vec<_>>()
        }))
        .into_response(),
        Ok(Err(e)) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot list media: {e}"),
        ),
        Err(_) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "media list task failed; retry",
        ),
    }
}
