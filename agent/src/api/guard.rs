//! Who may talk to the local API, checked in front of every route (the
//! whole router, so routes added later get the same checks).
//!
//! In this order, each refusal a JSON `{"error"}` that names the fix and is
//! counted in `/v1/status` (`api_refusals`):
//!
//! 1. **Host** (421): a `Host` that is not a loopback name (`localhost`,
//!    `127.0.0.0/8`, `::1`), the `listen` address or in `[api]
//!    allowed_hosts` is refused. A page on `attacker.example` that re-binds
//!    its DNS name to 127.0.0.1 sends `Host: attacker.example` and is
//!    refused before any data is read.
//! 2. **Origin** (403): an `Origin` other than the agent itself
//!    (`http://{Host}`) or one of `[api] allowed_origins` is refused, as is
//!    a request for a data route whose `Sec-Fetch-Site` says it is
//!    cross-site (or same-site: another port) and that names no allowed
//!    origin. Allowed origins get CORS answers (preflight
//!    included, no credentials: they send the token).
//! 3. **Token** (401): with `[api] require_token` (the default) every route
//!    but the public ones ([`PUBLIC_PATHS`]: the app's static files, the
//!    OpenAPI document, health probes) needs `Authorization: Bearer <token>`
//!    or the app's cookie. The token is `[api] token` or the one generated
//!    in `{data_dir}/api.token` ([`super::token`]).
//! 4. **Content type** (415): a `POST`, `PUT` or `PATCH` must say
//!    `Content-Type: application/json` (a `PUT` of media under
//!    `/v1/media/` or a `POST` to `/v1/media`: `image/png` or `image/jpeg`). A cross-site form or a `no-cors`
//!    fetch can only send `text/plain`, form or multipart bodies, so this
//!    check alone stops them even where `Origin` is missing.
//!
//! # How the agent's own app is authorised
//!
//! Pages under `/app/` set a cookie `dockline_app` whose value is derived
//! from the token (SHA-256 of a label and the token: it reveals nothing of
//! the token, and stays valid across restarts while the token does). It is
//! `HttpOnly` and `SameSite=Strict`: the browser sends it only on requests
//! from the agent's own pages, never on a cross-site request, and the
//! cookie is honoured only on requests that carry no foreign `Origin`. The
//! limit, said plainly: any local process that can read `/app/` can get the
//! cookie the way the browser does, so the cookie guards against web pages,
//! not against code already running on the handheld as a local user.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::error;
use crate::config::{ApiConfig, Secret};

/// Paths that need no token: they hold no data.
pub const PUBLIC_PATHS: [&str; 4] = ["/v1/openapi.json", "/healthz", "/readyz", "/app"];

/// The app's cookie.
pub const APP_COOKIE: &str = "dockline_app";

/// Refusals by reason, shown in `/v1/status`.
#[derive(Debug, Default)]
pub struct Refusals {
    host: AtomicU64,
    origin: AtomicU64,
    token: AtomicU64,
    content_type: AtomicU64,
    connections: AtomicU64,
    slow_headers: AtomicU64,
}

/// A snapshot of [`Refusals`].
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct RefusalCounts {
    /// Foreign `Host` (421).
    pub host: u64,
    /// Foreign `Origin` or cross-site fetch (403).
    pub origin: u64,
    /// Missing or wrong token (401).
    pub token: u64,
    /// Not `application/json` (415).
    pub content_type: u64,
    /// Over `max_connections` (503).
    pub connections: u64,
    /// Headers not sent within `header_timeout_ms` (connection closed).
    pub slow_headers: u64,
}

impl Refusals {
    /// The counts now.
    pub fn snapshot(&self) -> RefusalCounts {
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        RefusalCounts {
            host: n(&self.host),
            origin: n(&self.origin),
            token: n(&self.token),
            content_type: n(&self.content_type),
            connections: n(&self.connections),
            slow_headers: n(&self.slow_headers),
        }
    }

    /// Counts a connection refused over the cap.
    pub(super) fn over_cap(&self) {
        self.connections.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a connection closed for slow headers.
    pub(super) fn slow(&self) {
        self.slow_headers.fetch_add(1, Ordering::Relaxed);
    }
}

/// The checks' configuration and counters.
#[derive(Debug)]
pub struct Guard {
    /// `None`: `require_token = false` (development).
    token: Option<Secret>,
    /// The app cookie's value, derived from the token.
    app_cookie: Option<String>,
    allowed_hosts: Vec<String>,
    allowed_origins: Vec<String>,
    listen_host: Option<String>,
    /// Counters, shared with the status route and the connection loop.
    pub refusals: Arc<Refusals>,
}

impl Guard {
    /// From `[api]` and the token in force (`None` when not required).
    pub fn new(config: &ApiConfig, token: Option<Secret>) -> Self {
        let app_cookie = token.as_ref().map(|t| app_cookie_value(t.expose()));
        let ip = config.listen.ip();
        Self {
            token,
            app_cookie,
            allowed_hosts: config
                .allowed_hosts
                .iter()
                .map(|h| h.trim().to_ascii_lowercase())
                .collect(),
            allowed_origins: config
                .allowed_origins
                .iter()
                .map(|o| o.trim().trim_end_matches('/').to_ascii_lowercase())
                .collect(),
            listen_host: (!ip.is_loopback() && !ip.is_unspecified()).then(|| ip.to_string()),
            refusals: Arc::default(),
        }
    }

    /// The `Set-Cookie` value the app's pages carry, when a token is in force.
    pub fn set_cookie(&self) -> Option<HeaderValue> {
        let value = self.app_cookie.as_ref()?;
        HeaderValue::from_str(&format!(
            "{APP_COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict"
        ))
        .ok()
    }

    fn host_allowed(&self, host: &str) -> bool {
        let name = host_name(host).to_ascii_lowercase();
        loopback_name(&name)
            || self.allowed_hosts.contains(&name)
            || self.listen_host.as_deref() == Some(name.as_str())
    }

    fn has_token(&self, headers: &HeaderMap) -> bool {
        let Some(token) = &self.token else {
            return true;
        };
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|p| secret_matches(p.trim(), token.expose()))
    }

    fn has_app_cookie(&self, headers: &HeaderMap) -> bool {
        let Some(expected) = &self.app_cookie else {
            return false;
        };
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .any(|(name, value)| name == APP_COOKIE && secret_matches(value, expected))
    }
}

/// The app cookie's value for `token`.
fn app_cookie_value(token: &str) -> String {
    let digest = Sha256::digest(format!("dockline-app-cookie\n{token}").as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Compares in time independent of where the two differ (only a length
/// difference returns early, which tells an attacker nothing useful about a
/// random token).
pub(super) fn secret_matches(presented: &str, expected: &str) -> bool {
    use subtle::ConstantTimeEq;
    presented.as_bytes().ct_eq(expected.as_bytes()).into()
}

/// The name part of a `Host` header (`[::1]:7878` → `::1`).
fn host_name(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or_default();
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

/// Whether a host name is a loopback name or address.
fn loopback_name(name: &str) -> bool {
    name == "localhost"
        || name.ends_with(".localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn is_public(path: &str) -> bool {
    PUBLIC_PATHS
        .iter()
        .any(|p| path == *p || (*p == "/app" && path.starts_with("/app/")))
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"))
}

fn is_image(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            let v = v.trim();
            v.eq_ignore_ascii_case("image/png") || v.eq_ignore_ascii_case("image/jpeg")
        })
}

fn count(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// The CORS headers for an allowed foreign origin.
fn add_cors(headers: &mut HeaderMap, origin: &HeaderValue) {
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
    headers.insert(header::VARY, HeaderValue::from_static("Origin"));
    headers.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("Idempotency-Key"),
    );
}

/// The middleware; see the module doc for the order of the checks.
pub async fn check(State(guard): State<Arc<Guard>>, request: Request, next: Next) -> Response {
    let headers = request.headers();
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    if let Some(host) = host
        && !guard.host_allowed(host)
    {
        count(&guard.refusals.host);
        tracing::warn!(host, path = %request.uri().path(), "refused a request for a foreign Host");
        return error(
            StatusCode::MISDIRECTED_REQUEST,
            format!(
                "Host {host:?} is not this agent; address it as 127.0.0.1 or localhost, or add the name to [api] allowed_hosts"
            ),
        );
    }
    // `Some(origin)`: an allowed foreign origin, answered with CORS headers.
    let mut cors: Option<HeaderValue> = None;
    if let Some(origin) = headers.get(header::ORIGIN) {
        let text = origin.to_str().unwrap_or_default().to_ascii_lowercase();
        let own = host.is_some_and(|h| text == format!("http://{}", h.to_ascii_lowercase()));
        if !own {
            if guard.allowed_origins.contains(&text) {
                cors = Some(origin.clone());
            } else {
                count(&guard.refusals.origin);
                tracing::warn!(origin = %text, path = %request.uri().path(), "refused a cross-origin request");
                return error(
                    StatusCode::FORBIDDEN,
                    format!(
                        "cross-origin request from {text:?} refused: only the agent's own pages (/app/) and the origins in [api] allowed_origins may call this API"
                    ),
                );
            }
        }
    } else if headers
        .get("sec-fetch-site")
        .is_some_and(|v| v == "cross-site" || v == "same-site")
        // A link from elsewhere may open the app's pages (they hold no
        // data, and cannot be framed); data routes it may not touch.
        && !is_public(request.uri().path())
    {
        count(&guard.refusals.origin);
        return error(
            StatusCode::FORBIDDEN,
            "cross-site request refused: only the agent's own pages (/app/) and the origins in [api] allowed_origins may call this API",
        );
    }
    if request.method() == Method::OPTIONS {
        let Some(origin) = cors else {
            return error(
                StatusCode::METHOD_NOT_ALLOWED,
                "OPTIONS answers CORS preflights from the origins in [api] allowed_origins only",
            );
        };
        let mut response = StatusCode::NO_CONTENT.into_response();
        let h = response.headers_mut();
        add_cors(h, &origin);
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST"),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("authorization, content-type, idempotency-key"),
        );
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("600"),
        );
        return response;
    }
    let path = request.uri().path();
    // The app's cookie counts only without a foreign origin.
    let allowed = is_public(path)
        || guard.has_token(headers)
        || (cors.is_none() && guard.has_app_cookie(headers));
    if !allowed {
        count(&guard.refusals.token);
        let message = if headers.contains_key(header::AUTHORIZATION) {
            "wrong API token; send the agent's token (`dockline-agent token` prints it) as Authorization: Bearer <token>"
        } else {
            "this agent's API needs a token; send Authorization: Bearer <token> with the agent's token (`dockline-agent token` prints it), or use the agent's own app at /app/"
        };
        let mut response = error(StatusCode::UNAUTHORIZED, message);
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        if let Some(origin) = &cors {
            add_cors(response.headers_mut(), origin);
        }
        return response;
    }
    let changing = matches!(
        *request.method(),
        Method::POST | Method::PUT | Method::PATCH
    );
    // Media are images; a cross-site page cannot send those types without
    // a preflight, which the Origin check refuses.
    let media = ((*request.method() == Method::PUT && path.starts_with("/v1/media/"))
        || (*request.method() == Method::POST && path == "/v1/media"))
        && is_image(headers);
    if changing && !media && !is_json(headers) {
        count(&guard.refusals.content_type);
        let came = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("none");
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "this API takes JSON: send Content-Type: application/json (the request said {came:?})"
            ),
        );
    }
    let mut response = next.run(request).await;
    if let Some(origin) = &cors {
        add_cors(response.headers_mut(), origin);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_match_only_when_equal() {
        assert!(secret_matches("s3cret-token-0123", "s3cret-token-0123"));
        assert!(!secret_matches("s3cret-token-0124", "s3cret-token-0123"));
        assert!(!secret_matches("s3cret", "s3cret-token-0123"));
        assert!(!secret_matches("", "s3cret-token-0123"));
    }

    #[test]
    fn host_names_are_parsed_and_only_loopback_passes() {
        assert_eq!(host_name("127.0.0.1:7878"), "127.0.0.1");
        assert_eq!(host_name("[::1]:7878"), "::1");
        assert_eq!(host_name("localhost"), "localhost");
        for ok in [
            "localhost",
            "127.0.0.1",
            "127.9.9.9",
            "::1",
            "app.localhost",
        ] {
            assert!(loopback_name(ok), "{ok}");
        }
        for bad in ["attacker.example", "10.0.0.1", "localhost.attacker.example"] {
            assert!(!loopback_name(bad), "{bad}");
        }
    }

    #[test]
    fn public_paths_are_the_app_and_the_document_only() {
        assert!(is_public("/app/"));
        assert!(is_public("/app/app.js"));
        assert!(is_public("/v1/openapi.json"));
        assert!(!is_public("/application"));
        assert!(!is_public("/v1/events"));
    }

    #[test]
    fn json_content_types() {
        let mut h = HeaderMap::new();
        assert!(!is_json(&h));
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        assert!(!is_json(&h));
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        assert!(is_json(&h));
    }
}
