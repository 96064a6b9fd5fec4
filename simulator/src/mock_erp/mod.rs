//! A mock ERP that receives dockline's CloudEvents webhooks, books each
//! idempotency key once, and misbehaves on request.
//!
//! # HTTP
//!
//! | method | path       | what                                                        |
//! |--------|------------|-------------------------------------------------------------|
//! | POST   | `/events`  | a signed CloudEvents webhook; 201 new booking, 200 replay   |
//! | GET    | `/stats`   | counters ([`Stats`])                                        |
//! | GET    | `/effects` | every booking in order ([`Effect`], with its `booked_ms`)   |
//! | GET    | `/media`   | every medium attached in order ([`MediaEffect`])            |
//!
//! # Order of checks on `POST /events`
//!
//! 1. `delay_ms` (slow ERP).
//! 2. Webhook signature and timestamp ([`signature`]) → 401, counted as
//!    `bad_signatures`.
//! 3. `Idempotency-Key` and the CloudEvents body → 400 with a message, counted
//!    as `rejected_requests`.
//! 4. An expired session ([`session`]): after every `session_expiry_every`
//!    new bookings, every request is answered 401
//!    `{"code": "session_expired"}` for `session_expiry_ms`, then accepted
//!    again. Nothing is booked meanwhile.
//! 5. Injected faults drawn from a seeded generator: `fail_rate` → 503,
//!    `throttle_rate` → 429 with `Retry-After: 1`. Nothing is booked.
//! 6. Booking by idempotency key ([`ledger`]): a new key → 201
//!    `{"document": "DOC-…"}`; a known key → 200 with the same document.
//! 7. `lose_after_commit_rate`, drawn only for new bookings: the booking
//!    stands but the connection is dropped without a response. The sender
//!    must retry and get the replay; a second effect would be a bug.
//!
//! A CloudEvent carrying a medium (`dataref` or `data_base64`, see
//! [`media`]) goes through the same checks, then its bytes are fetched and
//! checked against its SHA-256 before it is attached (step 6 with
//! [`Ledger::attach`] instead of [`Ledger::book`]): 502 when the fetch
//! fails, 422 when the bytes are not the ones named.
//!
//! The fault knobs start from [`ErpConfig`] and can be changed while the ERP
//! runs ([`MockErpHandle::set_faults`]), which is how the chaos trials turn
//! faults on and off; each request reads them once, when it arrives.

pub mod ledger;
pub mod media;
pub mod session;
pub mod sever;
pub mod signature;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use ledger::{Booked, Booking, Effect, Ledger, Stats};
use media::{Fetch, MediumSource};
pub use media::{MediaEffect, Via};
use session::{Expiry, Session};
use sever::{Connection, SeveringListener};

/// Fault injection and verification settings.
#[derive(Debug, Clone)]
pub struct ErpConfig {
    /// The webhook secret, `whsec_<base64>`.
    pub secret: String,
    /// Share of valid requests answered 503 without booking (0.0 to 1.0).
    pub fail_rate: f64,
    /// Share of valid requests answered 429 with `Retry-After: 1`.
    pub throttle_rate: f64,
    /// Share of new bookings whose response is dropped after the commit.
    pub lose_after_commit_rate: f64,
    /// Delay before handling each request, in milliseconds.
    pub delay_ms: u64,
    /// The session expires after this many new bookings (0: never).
    pub session_expiry_every: u64,
    /// How long an expired session refuses requests, in milliseconds.
    pub session_expiry_ms: u64,
    /// Seed of the fault generator, so a run can be repeated.
    pub seed: u64,
}

impl ErpConfig {
    /// A well-behaved ERP with this secret.
    pub fn new(secret: impl Into<String>) -> Self {
        Self {
            secret: secret.into(),
            fail_rate: 0.0,
            throttle_rate: 0.0,
            lose_after_commit_rate: 0.0,
            delay_ms: 0,
            session_expiry_every: 0,
            session_expiry_ms: 0,
            seed: 0,
        }
    }
}

/// The mock ERP could not start.
#[derive(Debug, thiserror::Error)]
pub enum ErpError {
    /// The secret cannot be decoded.
    #[error(transparent)]
    Secret(#[from] signature::SignatureError),
    /// A fault rate is outside 0..=1.
    #[error("{name} is {value}; give a share between 0.0 and 1.0")]
    Rate {
        /// The setting.
        name: &'static str,
        /// Its value.
        value: f64,
    },
    /// The listen address could not be bound.
    #[error("mock ERP cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// The fault knobs of a running mock ERP (see [`ErpConfig`] for each).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ErpFaults {
    /// Share of valid requests answered 503.
    pub fail_rate: f64,
    /// Share of valid requests answered 429 with `Retry-After: 1`.
    pub throttle_rate: f64,
    /// Share of new bookings whose response is dropped after the commit.
    pub lose_after_commit_rate: f64,
    /// Delay before handling each request, in milliseconds.
    pub delay_ms: u64,
    /// The session expires after this many new bookings (0: never).
    pub session_expiry_every: u64,
    /// How long an expired session refuses requests, in milliseconds.
    pub session_expiry_ms: u64,
}

impl ErpFaults {
    /// The knobs of `config`.
    pub fn of(config: &ErpConfig) -> Self {
        Self {
            fail_rate: config.fail_rate,
            throttle_rate: config.throttle_rate,
            lose_after_commit_rate: config.lose_after_commit_rate,
            delay_ms: config.delay_ms,
            session_expiry_every: config.session_expiry_every,
            session_expiry_ms: config.session_expiry_ms,
        }
    }

    fn expiry(&self) -> Expiry {
        Expiry {
            every: self.session_expiry_every,
            hold: Duration::from_millis(self.session_expiry_ms),
        }
    }

    /// Every rate within 0..=1.
    pub fn check(&self) -> Result<(), ErpError> {
        for (name, value) in [
            ("fail_rate", self.fail_rate),
            ("throttle_rate", self.throttle_rate),
            ("lose_after_commit_rate", self.lose_after_commit_rate),
        ] {
            if !(0.0..=1.0).contains(&value) {
                return Err(ErpError::Rate { name, value });
            }
        }
        Ok(())
    }
}

struct Shared {
    key: Vec<u8>,
    /// Fetches media by their `dataref`.
    http: reqwest::Client,
    knobs: Mutex<ErpFaults>,
    ledger: Mutex<Ledger>,
    faults: Mutex<StdRng>,
    session: Mutex<Session>,
}

impl Shared {
    fn ledger(&self) -> MutexGuard<'_, Ledger> {
        // A panic while holding the lock cannot leave the ledger half-updated
        // (each update is a few plain assignments), so a poisoned lock is usable.
        self.ledger.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn knobs(&self) -> ErpFaults {
        *self.knobs.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn session(&self) -> MutexGuard<'_, Session> {
        // Plain assignments only, as for the ledger.
        self.session.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// True with probability `rate`, from the seeded generator.
    fn draw(&self, rate: f64) -> bool {
        if rate <= 0.0 {
            return false;
        }
        let mut rng = self.faults.lock().unwrap_or_else(|p| p.into_inner());
        rng.random::<f64>() < rate
    }
}

/// Entry point: `MockErp::start`.
#[derive(Debug)]
pub struct MockErp;

/// A running mock ERP: read its books, then shut it down.
pub struct MockErpHandle {
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for MockErpHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockErpHandle").finish_non_exhaustive()
    }
}

impl MockErp {
    /// Starts the server on `listen` (port 0 picks one) on the current tokio
    /// runtime; returns its handle and the bound address.
    pub async fn start(
        listen: SocketAddr,
        config: ErpConfig,
    ) -> Result<(MockErpHandle, SocketAddr), ErpError> {
        let key = signature::decode_secret(&config.secret)?;
        let knobs = ErpFaults::of(&config);
        knobs.check()?;
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|source| ErpError::Listen {
                addr: listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| ErpError::Listen {
            addr: listen,
            source,
        })?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| ErpError::Listen {
                addr,
                source: std::io::Error::other(e),
            })?;
        let shared = Arc::new(Shared {
            key,
            http,
            faults: Mutex::new(StdRng::seed_from_u64(config.seed)),
            knobs: Mutex::new(knobs),
            ledger: Mutex::new(Ledger::default()),
            session: Mutex::new(Session::default()),
        });
        let app = axum::Router::new()
            .route("/events", post(receive))
            .route("/stats", get(stats))
            .route("/effects", get(effects))
            .route("/media", get(media_effects))
            .with_state(shared.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let served = axum::serve(
                SeveringListener(listener),
                app.into_make_service_with_connect_info::<Connection>(),
            )
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .await;
            if let Err(e) = served {
                tracing::warn!(error = %e, "mock ERP stopped with an error");
            }
        });
        tracing::info!(url = %format!("http://{addr}/events"), "mock ERP listening");
        Ok((
            MockErpHandle {
                shared,
                stop: Some(stop),
                task: Some(task),
            },
            addr,
        ))
    }
}

impl MockErpHandle {
    /// The counters now.
    pub fn stats(&self) -> Stats {
        self.shared.ledger().stats().clone()
    }

    /// Changes the fault knobs; requests that arrive from now on use them.
    pub fn set_faults(&self, faults: ErpFaults) -> Result<(), ErpError> {
        faults.check()?;
        *self.shared.knobs.lock().unwrap_or_else(|p| p.into_inner()) = faults;
        Ok(())
    }

    /// The fault knobs now.
    pub fn faults(&self) -> ErpFaults {
        self.shared.knobs()
    }

    /// Every booking so far, in order.
    pub fn effects(&self) -> Vec<Effect> {
        self.shared.ledger().effects().to_vec()
    }

    /// Every medium attached so far, in order.
    pub fn media(&self) -> Vec<MediaEffect> {
        self.shared.ledger().media().to_vec()
    }

    /// Stops accepting, finishes requests in progress and waits for the server.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for MockErpHandle {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A structured-mode CloudEvent as dockline sends it.
#[derive(Debug, Deserialize)]
struct CloudEvent {
    specversion: String,
    id: String,
    source: String,
    #[serde(rename = "type")]
    kind: String,
    time: String,
    #[serde(default)]
    subject: Option<String>,
    #[serde(default)]
    docklinedevice: Option<String>,
    #[serde(default)]
    docklineepoch: Option<u64>,
    #[serde(default)]
    docklineseq: Option<u64>,
    /// Absent on a medium sent by reference (`dataref`).
    #[serde(default)]
    data: serde_json::Value,
}

fn problem(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

fn header_text<'a>(headers: &'a HeaderMap, name: &'static str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Checks the webhook headers against the raw body.
fn verify_request(
    shared: &Shared,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), signature::SignatureError> {
    use signature::SignatureError::MissingHeader;
    let id = header_text(headers, "webhook-id").ok_or(MissingHeader("webhook-id"))?;
    let ts = header_text(headers, "webhook-timestamp").ok_or(MissingHeader("webhook-timestamp"))?;
    let sigs =
        header_text(headers, "webhook-signature").ok_or(MissingHeader("webhook-signature"))?;
    signature::verify(&shared.key, id, ts, sigs, body, now_secs())
}

/// Reads the `Idempotency-Key` header, quoted (RFC draft, structured field
/// string) or bare.
pub fn idempotency_key(headers: &HeaderMap) -> Result<String, String> {
    let raw = headers
        .get("idempotency-key")
        .ok_or("Idempotency-Key header is missing; every webhook must carry one")?
        .to_str()
        .map_err(|_| "Idempotency-Key is not ASCII text".to_string())?
        .trim();
    let key = match raw.strip_prefix('"') {
        Some(rest) => rest
            .strip_suffix('"')
            .ok_or_else(|| format!("Idempotency-Key {raw:?} opens a quote it does not close"))?,
        None => raw,
    };
    if key.is_empty() {
        return Err("Idempotency-Key is empty".into());
    }
    Ok(key.to_string())
}

/// Parses and checks a CloudEvents body into what gets booked.
fn parse_event(key: String, body: &[u8]) -> Result<Booking, String> {
    let ce: CloudEvent = serde_json::from_slice(body)
        .map_err(|e| format!("body is not a CloudEvents JSON event: {e}"))?;
    if ce.specversion != "1.0" {
        return Err(format!(
            "specversion is {:?}; this ERP takes \"1.0\"",
            ce.specversion
        ));
    }
    if ce.id.is_empty() || ce.source.is_empty() {
        return Err("CloudEvents id and source must not be empty".into());
    }
    let Some(kind) = ce.kind.strip_prefix("io.dockline.") else {
        return Err(format!(
            "type {:?} is not a dockline event (io.dockline.<kind>)",
            ce.kind
        ));
    };
    if kind.is_empty() {
        return Err("type io.dockline. names no kind".into());
    }
    if ce.time.is_empty() {
        return Err("CloudEvents time must not be empty".into());
    }
    Ok(Booking {
        key,
        id: ce.id,
        kind: ce.kind,
        source: ce.source,
        subject: ce.subject,
        device: ce.docklinedevice,
        epoch: ce.docklineepoch,
        seq: ce.docklineseq,
        data: ce.data,
    })
}

async fn receive(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(conn): ConnectInfo<Connection>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let knobs = shared.knobs();
    if knobs.delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(knobs.delay_ms)).await;
    }
    if let Err(e) = verify_request(&shared, &headers, &body) {
        shared.ledger().count_bad_signature();
        tracing::warn!(peer = %conn.peer, error = %e, "webhook failed verification");
        return problem(StatusCode::UNAUTHORIZED, e.to_string());
    }
    let medium = serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&body)
        .ok()
        .and_then(|ce| MediumSource::of(&ce))
        .transpose();
    let booking = match medium.and_then(|m| {
        let key = idempotency_key(&headers)?;
        Ok((parse_event(key, &body)?, m))
    }) {
        Ok(b) => b,
        Err(message) => {
            shared.ledger().count_rejected();
            tracing::warn!(peer = %conn.peer, %message, "webhook refused");
            return problem(StatusCode::BAD_REQUEST, message);
        }
    };
    if shared.session().refuses(Instant::now(), knobs.expiry()) {
        shared.ledger().count_session_refusal();
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({
                "code": "session_expired",
                "error": "injected fault: the session expired; log in again",
            })),
        )
            .into_response();
    }
    if shared.draw(knobs.fail_rate) {
        shared.ledger().count_fault();
        return problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "injected fault: ERP unavailable",
        );
    }
    if shared.draw(knobs.throttle_rate) {
        shared.ledger().count_fault();
        let mut resp = problem(StatusCode::TOO_MANY_REQUESTS, "injected fault: slow down");
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return resp;
    }
    let (booking, medium) = booking;
    let booked = match medium {
        Some(source) => match checked_medium(&shared, booking, source).await {
            Ok(effect) => shared.ledger().attach(effect),
            Err(refusal) => return refusal,
        },
        None => shared.ledger().book(booking, crate::latency::unix_ms()),
    };
    match booked {
        Booked::New(document) => {
            if shared.session().booked(Instant::now(), knobs.expiry()) {
                shared.ledger().count_session_expiry();
            }
            if shared.draw(knobs.lose_after_commit_rate) {
                shared.ledger().count_fault();
                conn.sever();
                tracing::debug!(%document, "booked, dropping the response (injected fault)");
            }
            (StatusCode::CREATED, Json(json!({ "document": document }))).into_response()
        }
        Booked::Replay(document) => {
            (StatusCode::OK, Json(json!({ "document": document }))).into_response()
        }
    }
}

/// The medium's bytes, fetched or decoded and checked against its name;
/// the refusal to answer otherwise (counted).
async fn checked_medium(
    shared: &Shared,
    booking: Booking,
    source: MediumSource,
) -> Result<MediaEffect, Response> {
    let (bytes, via) = match source.fetch {
        Fetch::Inline(bytes) => (bytes, Via::Inline),
        Fetch::Url(url) => match fetch(&shared.http, &url).await {
            Ok(bytes) => (bytes, Via::Link),
            Err(message) => {
                shared.ledger().count_media_fetch_failure();
                tracing::warn!(%url, %message, "medium not fetched");
                return Err(problem(StatusCode::BAD_GATEWAY, message));
            }
        },
    };
    let got = dockline_protocol::media::MediaHash::of(&bytes);
    if got != source.hash {
        shared.ledger().count_media_bad_hash();
        return Err(problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "the medium's {} bytes hash to sha256:{got}, not the sha256:{} it names; send the stored bytes",
                bytes.len(),
                source.hash
            ),
        ));
    }
    Ok(MediaEffect {
        hash: source.hash,
        key: booking.key,
        event: booking.subject,
        bytes: bytes.len() as u64,
        via,
        booked_ms: crate::latency::unix_ms(),
    })
}

/// GETs a medium's `dataref`: its bytes, or why not.
async fn fetch(http: &reqwest::Client, url: &str) -> Result<Vec<u8>, String> {
    let cap = dockline_protocol::media::MAX_MEDIA_BYTES;
    let resp = http
        .get(url)
        .send()
        .await
        .map_err(|e| format!("cannot fetch the medium at {url}: {e}"))?;
    let status = resp.status();
    if !status.is_success() {
        return Err(format!("the medium at {url} answered {status}"));
    }
    if resp.content_length().is_some_and(|n| n > cap) {
        return Err(format!("the medium at {url} is larger than {cap} bytes"));
    }
    let bytes = resp
        .bytes()
        .await
        .map_err(|e| format!("the medium at {url} broke off: {e}"))?;
    if bytes.len() as u64 > cap {
        return Err(format!("the medium at {url} is larger than {cap} bytes"));
    }
    Ok(bytes.to_vec())
}

async fn media_effects(State(shared): State<Arc<Shared>>) -> Json<Vec<MediaEffect>> {
    Json(shared.ledger().media().to_vec())
}

async fn stats(State(shared): State<Arc<Shared>>) -> Json<Stats> {
    Json(shared.ledger().stats().clone())
}

async fn effects(State(shared): State<Arc<Shared>>) -> Json<Vec<Effect>> {
    Json(shared.ledger().effects().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    fn body(id: &str) -> String {
        json!({
            "specversion": "1.0",
            "id": id,
            "source": "dockline/dc-north/hh-01",
            "type": "io.dockline.picked",
            "time": "2026-11-24T10:00:00Z",
            "subject": "SO-1001",
            "datacontenttype": "application/json",
            "data": {"item": "09506000134352", "quantity": 3}
        })
        .to_string()
    }

    async fn post(
        addr: SocketAddr,
        key: &str,
        body: &str,
        signed_body: &str,
    ) -> Result<reqwest::Response, reqwest::Error> {
        let secret = signature::decode_secret(SECRET).expect("secret");
        let ts = now_secs().to_string();
        let sig = signature::sign(&secret, "msg-1", &ts, signed_body.as_bytes());
        reqwest::Client::new()
            .post(format!("http://{addr}/events"))
            .header("webhook-id", "msg-1")
            .header("webhook-timestamp", ts)
            .header("webhook-signature", sig)
            .header("idempotency-key", format!("\"{key}\""))
            .header("content-type", "application/cloudevents+json")
            .body(body.to_string())
            .send()
            .await
    }

    async fn start(config: ErpConfig) -> (MockErpHandle, SocketAddr) {
        MockErp::start(SocketAddr::from(([127, 0, 0, 1], 0)), config)
            .await
            .expect("mock ERP starts")
    }

    #[tokio::test]
    async fn valid_signature_is_booked() {
        let (erp, addr) = start(ErpConfig::new(SECRET)).await;
        let b = body("e1");
        let resp = post(addr, "e1", &b, &b).await.expect("response");
        assert_eq!(resp.status(), StatusCode::CREATED);
        let v: serde_json::Value = resp.json().await.expect("json");
        assert_eq!(v["document"], "DOC-000001");
        let effects = erp.effects();
        assert_eq!(effects.len(), 1);
        assert_eq!(effects[0].key, "e1");
        assert_eq!(effects[0].subject.as_deref(), Some("SO-1001"));
        assert_eq!(erp.stats().by_type.get("io.dockline.picked"), Some(&1));
        erp.shutdown().await;
    }

    #[tokio::test]
    async fn tampered_body_is_rejected_and_counted() {
        let (erp, addr) = start(ErpConfig::new(SECRET)).await;
        let signed = body("e1");
        let tampered = signed.replace("\"quantity\":3", "\"quantity\":30");
        assert_ne!(signed, tampered);
        let resp = post(addr, "e1", &tampered, &signed)
            .await
            .expect("response");
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
        let stats = erp.stats();
        assert_eq!(stats.bad_signatures, 1);
        assert_eq!(stats.effects, 0);
        erp.shutdown().await;
    }

    #[tokio::test]
    async fn malformed_body_is_a_400_with_a_message() {
        let (erp, addr) = start(ErpConfig::new(SECRET)).await;
        let b = body("e1").replace("\"1.0\"", "\"0.3\"");
        let resp = post(addr, "e1", &b, &b).await.expect("response");
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
        let v: serde_json::Value = resp.json().await.expect("json");
        assert!(
            v["error"].as_str().unwrap_or("").contains("specversion"),
            "{v}"
        );
        assert_eq!(erp.stats().rejected_requests, 1);
        erp.shutdown().await;
    }

    #[tokio::test]
    async fn replay_books_once_and_is_counted() {
        let (erp, addr) = start(ErpConfig::new(SECRET)).await;
        let b = body("e1");
        let first = post(addr, "e1", &b, &b).await.expect("response");
        assert_eq!(first.status(), StatusCode::CREATED);
        let again = post(addr, "e1", &b, &b).await.expect("response");
        assert_eq!(again.status(), StatusCode::OK);
        let v: serde_json::Value = again.json().await.expect("json");
        assert_eq!(v["document"], "DOC-000001");
        let stats = erp.stats();
        assert_eq!((stats.effects, stats.replays), (1, 1));
        erp.shutdown().await;
    }

    #[tokio::test]
    async fn lost_response_after_commit_books_once() {
        let mut config = ErpConfig::new(SECRET);
        config.lose_after_commit_rate = 1.0;
        let (erp, addr) = start(config).await;
        let b = body("e1");
        let first = post(addr, "e1", &b, &b).await;
        assert!(first.is_err(), "response should be lost: {first:?}");
        let retry = post(addr, "e1", &b, &b).await.expect("replay answered");
        assert_eq!(retry.status(), StatusCode::OK);
        let stats = erp.stats();
        assert_eq!((stats.effects, stats.replays), (1, 1));
        assert_eq!(stats.faults_injected, 1);
        assert_eq!(erp.effects().len(), 1);
        erp.shutdown().await;
    }

    #[tokio::test]
    async fn faults_are_injected_without_booking() {
        let mut config = ErpConfig::new(SECRET);
        config.throttle_rate = 1.0;
        let (erp, addr) = start(config).await;
        let b = body("e1");
        let resp = post(addr, "e1", &b, &b).await.expect("response");
        assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(
            resp.headers()
                .get(header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok()),
            Some("1")
        );
        assert_eq!((erp.stats().effects, erp.stats().faults_injected), (0, 1));
        erp.shutdown().await;
    }

    #[tokio::test]
    async fn faults_change_while_running_and_extensions_are_kept() {
        let (erp, addr) = start(ErpConfig::new(SECRET)).await;
        erp.set_faults(ErpFaults {
            fail_rate: 1.0,
            ..ErpFaults::default()
        })
        .expect("valid rates");
        let b = body("e1").replace(
            "\"data\"",
            "\"docklinedevice\":\"hh-01\",\"docklineepoch\":2,\"docklineseq\":9,\"data\"",
        );
        let resp = post(addr, "e1", &b, &b).await.expect("response");
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        erp.set_faults(ErpFaults::default()).expect("valid rates");
        let resp = post(addr, "e1", &b, &b).await.expect("response");
        assert_eq!(resp.status(), StatusCode::CREATED);
        let e = &erp.effects()[0];
        assert_eq!(
            (e.device.as_deref(), e.epoch, e.seq),
            (Some("hh-01"), Some(2), Some(9))
        );
        assert!(
            erp.set_faults(ErpFaults {
                throttle_rate: 1.5,
                ..ErpFaults::default()
            })
            .is_err()
        );
        erp.shutdown().await;
    }

    #[tokio::test]
    async fn an_expired_session_answers_401_for_a_while_then_books() {
        let mut config = ErpConfig::new(SECRET);
        config.session_expiry_every = 2;
        config.session_expiry_ms = 300;
        let (erp, addr) = start(config).await;
        for id in ["e1", "e2"] {
            let b = body(id);
            let resp = post(addr, id, &b, &b).await.expect("response");
            assert_eq!(resp.status(), StatusCode::CREATED);
        }
        let b = body("e3");
        let refused = post(addr, "e3", &b, &b).await.expect("response");
        assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
        let text = refused.text().await.expect("body");
        // The collector reads this body as an expired session.
        assert_eq!(
            dockline_collector::erp::webhook::cloudevents::body_class(401, &text),
            Some(dockline_collector::erp::outcome::BodyClass::SessionExpired),
            "{text}"
        );
        tokio::time::sleep(Duration::from_millis(350)).await;
        let again = post(addr, "e3", &b, &b).await.expect("response");
        assert_eq!(again.status(), StatusCode::CREATED);
        let stats = erp.stats();
        assert_eq!(
            (
                stats.effects,
                stats.session_expiries,
                stats.session_refusals
            ),
            (3, 1, 1)
        );
        assert_eq!(stats.faults_injected, 1);
        erp.shutdown().await;
    }

    fn medium_body(id: &str, attrs: serde_json::Value) -> String {
        let mut ce = json!({
            "specversion": "1.0",
            "id": id,
            "source": "dockline/dc-north/truck-01",
            "type": "io.dockline.delivered.photo",
            "time": "2026-11-24T10:00:00Z",
            "subject": "DN-5001",
            "datacontenttype": "image/jpeg",
        });
        if let (Some(ce), Some(extra)) = (ce.as_object_mut(), attrs.as_object()) {
            ce.extend(extra.clone());
        }
        ce.to_string()
    }

    #[tokio::test]
    async fn a_medium_by_link_is_fetched_checked_and_attached_once() {
        use dockline_protocol::media::MediaHash;
        let photo = crate::media::Medium::photo(5, 1);
        let bytes = photo.bytes.clone();
        let hex = photo.hash.to_string();
        // The collector's media route, as far as the ERP sees it.
        let served = axum::Router::new().route(
            "/v1/media/{hex}",
            get(move || {
                let bytes = bytes.clone();
                async move { bytes.to_vec() }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let at = listener.local_addr().expect("addr");
        let server = tokio::spawn(async move { axum::serve(listener, served).await });
        let (erp, addr) = start(ErpConfig::new(SECRET)).await;
        let b = medium_body(
            "m1",
            json!({"dataref": format!("http://{at}/v1/media/{hex}?exp=9&sig=s")}),
        );
        let first = post(addr, "m1", &b, &b).await.expect("response");
        assert_eq!(first.status(), StatusCode::CREATED);
        let again = post(addr, "m1", &b, &b).await.expect("response");
        assert_eq!(again.status(), StatusCode::OK);
        let media = erp.media();
        assert_eq!(media.len(), 1);
        assert_eq!(media[0].hash, photo.hash);
        assert_eq!(media[0].via, Via::Link);
        assert_eq!(media[0].event.as_deref(), Some("DN-5001"));
        assert!(erp.effects().is_empty(), "a medium is not an event effect");
        // Named one thing, serving another: refused, counted, not attached.
        let wrong = MediaHash::of(b"something else");
        let b = medium_body(
            "m2",
            json!({"dataref": format!("http://{at}/v1/media/{hex}"), "docklinemedia": format!("sha256:{wrong}")}),
        );
        let resp = post(addr, "m2", &b, &b).await.expect("response");
        assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
        // Nothing at the link: 502, the sender retries later.
        let b = medium_body(
            "m3",
            json!({"dataref": format!("http://{at}/nothing/{hex}")}),
        );
        let resp = post(addr, "m3", &b, &b).await.expect("response");
        assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
        let s = erp.stats();
        assert_eq!(
            (
                s.media_attached,
                s.media_replays,
                s.media_bad_hash,
                s.media_fetch_failures
            ),
            (1, 1, 1, 1)
        );
        server.abort();
        erp.shutdown().await;
    }

    #[tokio::test]
    async fn an_inline_medium_is_checked_and_attached() {
        use base64::Engine;
        let sig = crate::media::Medium::signature(5, 1);
        let b = medium_body(
            "s1",
            json!({"data_base64": base64::engine::general_purpose::STANDARD.encode(&sig.bytes),
                   "docklinemedia": sig.reference()}),
        );
        let (erp, addr) = start(ErpConfig::new(SECRET)).await;
        let resp = post(addr, "s1", &b, &b).await.expect("response");
        assert_eq!(resp.status(), StatusCode::CREATED);
        assert_eq!(erp.media()[0].via, Via::Inline);
        assert_eq!(erp.media()[0].bytes, sig.bytes.len() as u64);
        erp.shutdown().await;
    }

    #[test]
    fn idempotency_key_quoted_or_bare() {
        let mut h = HeaderMap::new();
        h.insert("idempotency-key", HeaderValue::from_static("\"abc\""));
        assert_eq!(idempotency_key(&h), Ok("abc".to_string()));
        h.insert("idempotency-key", HeaderValue::from_static("abc"));
        assert_eq!(idempotency_key(&h), Ok("abc".to_string()));
        h.insert("idempotency-key", HeaderValue::from_static("\"abc"));
        assert!(idempotency_key(&h).is_err());
        assert!(idempotency_key(&HeaderMap::new()).is_err());
    }
}
