//! Media over HTTP.
//!
//! | method | path | what |
//! |---|---|---|
//! | GET | `/v1/media/{hex}` | the medium's bytes with its content type, `ETag` of its hash, `X-Content-Type-Options: nosniff`; with a token (or session) **or** a signed link `?exp=&sig=` ([`crate::media::link`]) |
//! | GET | `/v1/events/{id}/media` | an event's media: role, hash, stored or not, and a short-lived signed URL for `<img>` tags (token) |
//! | GET | `/v1/media-lanes` | lanes waiting for media: lane, reason, since, until (token) |
//! | GET | `/v1/media-stats` | the store's counts (token) |
//!
//! `/v1/media/{hex}` checks its own access: the auth layer lets the path
//! through (a signed link carries no token), and the handler wants either
//! a link that verifies (403 when altered, expired or malformed) or a
//! caller the auth layer or its bearer token names (401 otherwise). An
//! unknown or damaged medium is 404. Every answer is counted
//! (`dockline_media_served_total{outcome}`).
//!
//! The dashboard's images use links signed by a per-process key
//! ([`DashboardLinks`]) that expire in [`DASHBOARD_LINK_TTL_SECS`]: an
//! `<img>` tag cannot send the bearer token, and the links are handed only
//! to callers with one.

use std::sync::Arc;

use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use dockline_protocol::media::MediaHash;
use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::http::auth::{Auth, Caller};
use crate::media::MediaHub;
use crate::media::link::{LinkError, MediaLinks};

/// How long a dashboard image link lasts (seconds).
pub const DASHBOARD_LINK_TTL_SECS: u64 = 600;

/// Links for the dashboard's `<img>` tags: relative, signed by a random key
/// this process holds only in memory.
#[derive(Debug, Clone)]
pub struct DashboardLinks(MediaLinks);

impl DashboardLinks {
    /// A fresh key.
    pub fn new() -> Option<Self> {
        let mut key = [0u8; 32];
        rand::rng().fill_bytes(&mut key);
        MediaLinks::new(&key, "", DASHBOARD_LINK_TTL_SECS)
            .ok()
            .map(Self)
    }
}

#[derive(Clone)]
struct MediaApi {
    hub: MediaHub,
    links: Option<MediaLinks>,
    dashboard: Option<DashboardLinks>,
    auth: Arc<Auth>,
}

/// The media routes, with the same auth and security headers as the rest
/// of the API. `links`: the ERP's links (`[media] link_key_file`).
pub fn routes(hub: MediaHub, links: Option<MediaLinks>, auth: Arc<Auth>) -> Router {
    let state = MediaApi {
        hub,
        links,
        dashboard: DashboardLinks::new(),
        auth: Arc::clone(&auth),
    };
    Router::new()
        .route("/v1/media/{hex}", get(serve))
        .route("/v1/events/{id}/media", get(event_media))
        .route("/v1/media-lanes", get(lanes))
        .route("/v1/media-stats", get(stats))
        .with_state(state)
        .layer(axum::middleware::from_fn_with_state(
            auth,
            crate::http::auth::authorize,
        ))
        .layer(axum::middleware::from_fn(crate::http::security_headers))
}

#[derive(Debug, Deserialize)]
struct LinkQuery {
    exp: Option<u64>,
    sig: Option<String>,
}

fn now_secs() -> u64 {
    u64::try_from(crate::now_ms() / 1000).unwrap_or(0)
}

fn text(status: StatusCode, body: String) -> Response {
    (status, format!("{body}\n")).into_response()
}

/// Whether the request carries a caller: put there by the auth layer (an
/// open API), or a valid bearer token.
fn has_caller(api: &MediaApi, caller: Option<&Caller>, headers: &HeaderMap) -> bool {
    caller.is_some()
        || headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|t| api.auth.caller(t.trim()).is_some())
}

async fn serve(
    State(api): State<MediaApi>,
    Path(hex): Path<String>,
    Query(q): Query<LinkQuery>,
    caller: Option<Extension<Caller>>,
    request: Request,
) -> Response {
    let m = &api.hub.metrics;
    let Some(hash) = MediaHash::parse_hex(&hex) else {
        m.served("not_found");
        return text(
            StatusCode::NOT_FOUND,
            "not a medium: the path ends in its SHA-256 as 64 lower-case hex digits".into(),
        );
    };
    if q.exp.is_some() || q.sig.is_some() {
        let (Some(exp), Some(sig)) = (q.exp, q.sig.as_deref()) else {
            m.served("forbidden");
            return text(
                StatusCode::FORBIDDEN,
                "a media link needs both exp and sig; ask the collector for a new link".into(),
            );
        };
        let now = now_secs();
        let mut last = None;
        let signers = api.links.iter().chain(api.dashboard.as_ref().map(|d| &d.0));
        let mut ok = false;
        for l in signers {
            match l.verify(&hash, exp, sig, now) {
                Ok(()) => {
                    ok = true;
                    break;
                }
                // A signer whose signature matched says more (expired).
                Err(e) if last.is_none() || e != LinkError::BadSignature => last = Some(e),
                Err(_) => {}
            }
        }
        if !ok {
            m.served("forbidden");
            let why = last.map_or_else(
                || "this collector signs no media links ([media] link_key_file)".to_string(),
                |e| e.to_string(),
            );
            return text(StatusCode::FORBIDDEN, why);
        }
    } else if !has_caller(&api, caller.as_deref(), request.headers()) {
        m.served("unauthorized");
        let mut r = text(
            StatusCode::UNAUTHORIZED,
            "this medium needs a token (Authorization: Bearer …) or a signed link (?exp=…&sig=…)"
                .into(),
        );
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return r;
    }
    let etag = format!("\"{hex}\"");
    let got = api.hub.store.call(move |s| s.get(&hash)).await;
    match got {
        Ok(Some(medium)) => {
            m.served("ok");
            let not_modified = request
                .headers()
                .get(header::IF_NONE_MATCH)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
            let mut r = if not_modified {
                StatusCode::NOT_MODIFIED.into_response()
            } else {
                medium.bytes.to_vec().into_response()
            };
            let h = r.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(medium.media_type.content_type()),
            );
            if let Ok(v) = HeaderValue::from_str(&etag) {
                h.insert(header::ETAG, v);
            }
            h.insert(
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            );
            h.insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("private, max-age=3600, immutable"),
            );
            r
        }
        Ok(None) => {
            m.served("not_found");
            text(
                StatusCode::NOT_FOUND,
                format!(
                    "medium {hex} is not stored here (not received yet, or deleted by retention)"
                ),
            )
        }
        Err(e) => {
            tracing::error!("cannot read medium {hex}: {e}");
            text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot read the medium: {e}"),
            )
        }
    }
}

/// One medium of an event, for the timeline.
#[derive(Debug, Serialize)]
struct EventMedium {
    role: &'static str,
    hash: String,
    stored: bool,
    bytes: Option<u64>,
    content_type: Option<&'static str>,
    attached: bool,
    url: Option<String>,
}

async fn event_media(State(api): State<MediaApi>, Path(id): Path<String>) -> Response {
    let listed = api
        .hub
        .store
        .call(move |s| {
            let refs = s.media_of_event(&id)?;
            let mut out = Vec::with_capacity(refs.len());
            for r in refs {
                let info = s.info(&r.hash)?;
                out.push((r, info));
            }
            Ok(out)
        })
        .await;
    match listed {
        Ok(list) => {
            let now = now_secs();
            let items: Vec<EventMedium> = list
                .into_iter()
                .map(|(r, info)| EventMedium {
                    role: r.role.name(),
                    hash: r.hash.to_string(),
                    stored: info.is_some(),
                    bytes: info.map(|i| i.len),
                    content_type: info.map(|i| i.media_type.content_type()),
                    attached: info.is_some_and(|i| i.attached_ms.is_some()),
                    url: info
                        .and(api.dashboard.as_ref())
                        .map(|d| d.0.url(&r.hash, now)),
                })
                .collect();
            Json(items).into_response()
        }
        Err(e) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot read the event's media: {e}"),
        ),
    }
}

async fn lanes(State(api): State<MediaApi>) -> Response {
    Json(api.hub.parked_lanes()).into_response()
}

async fn stats(State(api): State<MediaApi>) -> Response {
    match api.hub.store.call(|s| s.stats()).await {
        Ok(s) => Json(s).into_response(),
        Err(e) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot read media stats: {e}"),
        ),
    }
}
