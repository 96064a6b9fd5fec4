//! The handheld app: what pickers and drivers tap, served by the agent at
//! `/app/`.
//!
//! | method | path | what |
//! |---|---|---|
//! | GET | `/app` | redirects to `/app/` |
//! | GET | `/app/` | the app's one page; sets the app cookie ([`crate::api::guard`]) |
//! | GET | `/app/app.css`, `/app/app.js` | its style and script |
//!
//! # Design
//!
//! Static HTML, CSS and vanilla JavaScript compiled into the binary
//! (`include_str!`): no build step, no CDN, nothing outside the agent, so
//! the app works with the network down. One page, one task per screen:
//! sign-in, pick lists (`GET /v1/tasks`), picking by scan, pack, load,
//! depart, arrive, proof of delivery and exceptions, receipts. Made for
//! 360 × 640 portrait and a gloved hand: targets at least 56 px high, high
//! contrast, large type.
//!
//! What the script keeps (in the browser's `localStorage` on the handheld):
//! the operator signed in, events not yet stored by the agent (each with
//! its `Idempotency-Key`, so every retry, after a reload or an agent
//! restart too, books the event once), the session's receipts, and the
//! signature and photos of a delivery until they are on the agent. Before
//! an event is sent, its media are PUT to `/v1/media/{sha256}`
//! ([`crate::api::media`]: kept sealed on the agent) and removed from the
//! browser; the event carries their `sha256:` references. The receipts show
//! each medium's state from `GET /v1/media` (refreshed every 3 s while they
//! show): queued on the agent (with the bytes the collector has), stored at
//! the collector, attached at the ERP with its document, or refused.
//!
//! Every answer carries a Content-Security-Policy that allows only the
//! page's own script and style (and `data:`/`blob:` images for the
//! signature and photo previews), and forbids framing.

use std::sync::Arc;

use axum::Extension;
use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

use crate::api::{ApiState, Guard};

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_CSS: &str = include_str!("assets/app.css");
const APP_JS: &str = include_str!("assets/app.js");

/// The policy every app answer carries.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// The app's routes (state applied by [`crate::api::router`]).
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/app", get(|| async { Redirect::to("/app/") }))
        .route("/app/", get(index))
        .route(
            "/app/app.css",
            get(|| async { asset("text/css; charset=utf-8", APP_CSS) }),
        )
        .route(
            "/app/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
}

fn secured(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    secured(([(header::CONTENT_TYPE, content_type)], body).into_response())
}

/// The page, with the app cookie that authorises its requests.
async fn index(Extension(guard): Extension<Arc<Guard>>) -> Response {
    let mut response = asset("text/html; charset=utf-8", INDEX_HTML);
    if let Some(cookie) = guard.set_cookie() {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    response
}
