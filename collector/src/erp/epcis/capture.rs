//! A client for an EPCIS 2.0 repository's capture interface (REST binding).
//!
//! `POST {root}/capture` with the `EPCISDocument` as `application/ld+json`
//! and the `GS1-EPCIS-Version`, `GS1-CBV-Version` and
//! `GS1-Capture-Error-Behaviour` headers. The repository answers `202
//! Accepted` with a `Location` naming the capture job; the capture itself
//! runs after the answer, so `202` means "queued", and
//! [`CaptureClient::job`] reads the job (`running`, `success`, `errors`) to
//! learn whether the events were stored. Errors come as RFC 7807 problem
//! documents whose `type` names the EPCIS exception
//! (`epcisException:ValidationException`, …).
//!
//! Every failure is a [`CaptureError`] with a [`CaptureFailure`] class and a
//! hint that names the fix; [`CaptureError::attempt_outcome`] turns it into
//! the delivery policy's input ([`crate::erp::outcome::AttemptOutcome`]), so an
//! ERP adapter built on this client gets the collector's retry, pause, halt
//! and dead-letter behaviour unchanged. A `409` (the repository already
//! holds an event with this `eventID`) is reported as
//! [`CaptureFailure::Duplicate`], which the policy books as a duplicate.
//!
//! The client does no retrying of its own and holds no state but the HTTP
//! connection pool.

use std::time::Duration;

use reqwest::Url;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderValue, LOCATION, RETRY_AFTER};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::erp::outcome::{AttemptOutcome, BodyClass, FailureClass, Response, TransportError};

/// The media type of an EPCIS 2.0 JSON-LD document.
pub const MEDIA_TYPE: &str = "application/ld+json";
/// The EPCIS version this client speaks.
pub const EPCIS_VERSION: &str = "2.0.0";
/// The CBV version the exported vocabulary comes from.
pub const CBV_VERSION: &str = "2.0.0";
/// Longest response body kept (problem documents and capture jobs are small).
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// What the repository does when some events of a document fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorBehaviour {
    /// All events are stored, or none (the EPCIS 2.0 default).
    #[default]
    Rollback,
    /// Valid events are stored; the job lists the failed ones.
    Proceed,
}

impl ErrorBehaviour {
    /// The `GS1-Capture-Error-Behaviour` header value.
    pub fn header_value(self) -> &'static str {
        match self {
            Self::Rollback => "rollback",
            Self::Proceed => "proceed",
        }
    }
}

/// Where and how to capture.
#[derive(Clone, PartialEq, Eq)]
pub struct CaptureConfig {
    /// The repository's EPCIS REST root, the URL under which `capture`,
    /// `events`, … live (e.g. `https://epcis.example.com/epcis/`).
    pub root: String,
    /// `GS1-Capture-Error-Behaviour`.
    pub error_behaviour: ErrorBehaviour,
    /// Timeout of one request.
    pub timeout: Duration,
    /// The `Authorization` header value, when the repository wants one.
    pub authorization: Option<String>,
}

impl std::fmt::Debug for CaptureConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print credentials.
        f.debug_struct("CaptureConfig")
            .field("root", &self.root)
            .field("error_behaviour", &self.error_behaviour)
            .field("timeout", &self.timeout)
            .field("authorization", &self.authorization.as_ref().map(|_| ".."))
            .finish()
    }
}

/// The capture client could not be set up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CaptureConfigError {
    /// The root is not an http(s) URL.
    #[error(
        "EPCIS root {root:?} is not an http(s) URL ({problem}); give the repository's REST root, e.g. https://epcis.example.com/epcis/"
    )]
    Root {
        /// The configured root.
        root: String,
        /// Why.
        problem: String,
    },
    /// The authorization value cannot be a header.
    #[error(
        "the EPCIS authorization value is not a valid HTTP header value; remove line breaks and non-ASCII characters"
    )]
    Authorization,
    /// The HTTP client could not be built.
    #[error("cannot build the EPCIS HTTP client: {0}")]
    Client(String),
}

/// The repository queued the document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureAccepted {
    /// The capture job's absolute URL (`Location`), when the repository sent
    /// one as EPCIS 2.0 requires.
    pub job: Option<String>,
    /// The capture id: the last path segment of the job URL.
    pub capture_id: Option<String>,
    /// The status (202, or another 2xx from a repository that strays).
    pub status: u16,
}

/// A capture job as `GET /capture/{captureID}` describes it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct CaptureJob {
    /// The capture id.
    #[serde(rename = "captureID", default)]
    pub capture_id: Option<String>,
    /// Still being processed.
    pub running: bool,
    /// No error so far (with `running: false`: every event stored, or for
    /// `proceed` the valid ones).
    pub success: bool,
    /// The behaviour the job ran with.
    #[serde(rename = "captureErrorBehaviour", default)]
    pub error_behaviour: Option<String>,
    /// The problems met.
    #[serde(default)]
    pub errors: Vec<Problem>,
}

impl CaptureJob {
    /// True when the job ended with every event stored.
    pub fn stored(&self) -> bool {
        !self.running && self.success && self.errors.is_empty()
    }
}

/// An RFC 7807 problem document, as EPCIS errors are sent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Problem {
    /// `epcisException:ValidationException` or a URI ending in the name.
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    /// Short summary.
    #[serde(default)]
    pub title: Option<String>,
    /// The HTTP status the server meant.
    #[serde(default)]
    pub status: Option<u16>,
    /// Details.
    #[serde(default)]
    pub detail: Option<String>,
}

impl Problem {
    /// The exception's name (`ValidationException`), from `type`.
    pub fn exception(&self) -> Option<&str> {
        let kind = self.kind.as_deref()?;
        let name = kind.rsplit([':', '#', '/']).next().unwrap_or(kind);
        (!name.is_empty()).then_some(name)
    }

    /// `ValidationException: title: detail`, for messages.
    fn summary(&self) -> String {
        [
            self.exception(),
            self.title.as_deref(),
            self.detail.as_deref(),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(": ")
    }
}

/// What a failed capture means (see `classify`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaptureFailure {
    /// 409: the repository already holds these events; treat as done.
    Duplicate,
    /// 400, 422 and other 4xx: the repository refused the document.
    Invalid,
    /// 413: more events or bytes than the repository's capture limit.
    TooLarge,
    /// 401: credentials refused.
    Unauthorized,
    /// 403: the credentials may not capture.
    Forbidden,
    /// 404, 405, 410: no capture interface at this URL.
    NotFound,
    /// 406, 415, 501: the repository does not take JSON-LD capture.
    Unsupported,
    /// 429, 503: slow down (honour `Retry-After`).
    Throttled,
    /// 408, 425, 5xx: try again later.
    Transient,
    /// 1xx, 3xx, or a 2xx job that cannot be read.
    Unexpected,
}

impl CaptureFailure {
    /// The delivery policy's class for this failure.
    pub fn failure_class(self) -> FailureClass {
        match self {
            Self::Duplicate | Self::Invalid => FailureClass::Permanent,
            Self::TooLarge => FailureClass::Permanent,
            Self::Unauthorized => FailureClass::ReAuth,
            Self::Forbidden | Self::NotFound | Self::Unsupported | Self::Unexpected => {
                FailureClass::Config
            }
            Self::Throttled => FailureClass::Throttled,
            Self::Transient => FailureClass::Transient,
        }
    }

    /// What to do about it.
    pub fn hint(self) -> &'static str {
        match self {
            Self::Duplicate => {
                "the repository already holds an event with this eventID; nothing to resend"
            }
            Self::Invalid => {
                "the repository's validation refused the document; fix the event data or the export and replay"
            }
            Self::TooLarge => {
                "send fewer events per document (OPTIONS /capture advertises GS1-EPCIS-Capture-Limit and GS1-EPCIS-Capture-File-Size-Limit)"
            }
            Self::Unauthorized => "check the EPCIS authorization credentials",
            Self::Forbidden => {
                "the credentials are valid but may not capture; ask the repository's operator for capture rights"
            }
            Self::NotFound => {
                "check the EPCIS root URL: it must be the REST root that has /capture"
            }
            Self::Unsupported => {
                "the repository does not accept EPCIS 2.0 JSON-LD capture; check it implements the EPCIS 2.0 REST binding"
            }
            Self::Throttled => "the repository asked to slow down; wait for Retry-After",
            Self::Transient => "the repository failed for now; retry later",
            Self::Unexpected => {
                "the repository's answer is not what EPCIS 2.0 REST defines; check the URL points at an EPCIS 2.0 repository"
            }
        }
    }
}

/// Classifies a non-2xx capture status.
pub fn classify(status: u16) -> CaptureFailure {
    match status {
        409 => CaptureFailure::Duplicate,
        413 => CaptureFailure::TooLarge,
        401 => CaptureFailure::Unauthorized,
        403 => CaptureFailure::Forbidden,
        404 | 405 | 410 => CaptureFailure::NotFound,
        406 | 415 | 501 => CaptureFailure::Unsupported,
        429 | 503 => CaptureFailure::Throttled,
        408 | 425 | 500..=599 => CaptureFailure::Transient,
        400..=499 => CaptureFailure::Invalid,
        _ => CaptureFailure::Unexpected,
    }
}

/// A capture (or job read) failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CaptureError {
    /// No HTTP answer.
    #[error("EPCIS repository at {url}: {detail}")]
    Transport {
        /// The URL.
        url: String,
        /// How it failed (whether the request may have arrived).
        kind: TransportError,
        /// The error text.
        detail: String,
    },
    /// The repository answered with an error.
    #[error("EPCIS repository at {url} answered HTTP {status}{}; {}",
        .problem.as_ref().map(|p| format!(" ({})", p.summary())).unwrap_or_default(),
        .failure.hint())]
    Refused {
        /// The URL.
        url: String,
        /// The status.
        status: u16,
        /// What it means.
        failure: CaptureFailure,
        /// The problem document, when the body was one.
        problem: Option<Problem>,
        /// `Retry-After`, as sent.
        retry_after: Option<String>,
        /// The body (first `MAX_BODY_BYTES`).
        body: String,
    },
}

impl CaptureError {
    /// The failure's class for logs and the delivery policy.
    pub fn failure_class(&self) -> FailureClass {
        match self {
            Self::Transport { .. } => FailureClass::Transient,
            Self::Refused { failure, .. } => failure.failure_class(),
        }
    }

    /// The delivery policy's input for this failure, so
    /// [`crate::delivery::policy::decide`] treats a capture like any ERP answer.
    pub fn attempt_outcome(&self) -> AttemptOutcome {
        match self {
            Self::Transport { kind, detail, .. } => AttemptOutcome::Transport {
                kind: *kind,
                detail: detail.clone(),
            },
            Self::Refused {
                status,
                failure,
                problem,
                retry_after,
                body,
                ..
            } => AttemptOutcome::Response(Response {
                status: *status,
                retry_after: retry_after.clone(),
                location: None,
                body: body.clone(),
                class: match failure {
                    CaptureFailure::Duplicate => Some(BodyClass::AlreadyBooked { document: None }),
                    // A 2xx whose job could not be read is not a booking.
                    CaptureFailure::Unexpected if (200..300).contains(status) => {
                        Some(BodyClass::RpcError {
                            message: problem
                                .as_ref()
                                .map(Problem::summary)
                                .unwrap_or_else(|| "unreadable capture job".into()),
                        })
                    }
                    _ => None,
                },
            }),
        }
    }
}

/// The capture client.
#[derive(Debug, Clone)]
pub struct CaptureClient {
    http: reqwest::Client,
    root: Url,
    capture: Url,
    error_behaviour: ErrorBehaviour,
    authorization: Option<HeaderValue>,
}

impl CaptureClient {
    /// Checks the config and builds the HTTP client.
    pub fn new(config: &CaptureConfig) -> Result<Self, CaptureConfigError> {
        let root_err = |problem: String| CaptureConfigError::Root {
            root: config.root.clone(),
            problem,
        };
        // A root without a trailing slash would lose its last segment in
        // `join`, so add one.
        let mut text = config.root.clone();
        if !text.ends_with('/') {
            text.push('/');
        }
        let root = Url::parse(&text).map_err(|e| root_err(e.to_string()))?;
        if !matches!(root.scheme(), "http" | "https") {
            return Err(root_err(format!("scheme {:?}", root.scheme())));
        }
        let capture = root.join("capture").map_err(|e| root_err(e.to_string()))?;
        let authorization = match &config.authorization {
            Some(a) => {
                let mut v =
                    HeaderValue::from_str(a).map_err(|_| CaptureConfigError::Authorization)?;
                v.set_sensitive(true);
                Some(v)
            }
            None => None,
        };
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .build()
            .map_err(|e| CaptureConfigError::Client(e.to_string()))?;
        Ok(Self {
            http,
            root,
            capture,
            error_behaviour: config.error_behaviour,
            authorization,
        })
    }

    /// The capture endpoint's URL.
    pub fn capture_url(&self) -> &str {
        self.capture.as_str()
    }

    /// Sends one `EPCISDocument`.
    pub async fn capture(&self, document: &Value) -> Result<CaptureAccepted, CaptureError> {
        // Serialising a Value cannot fail (its keys are strings).
        let body = serde_json::to_vec(document).unwrap_or_default();
        let request = self
            .with_headers(self.http.post(self.capture.clone()))
            .header(CONTENT_TYPE, MEDIA_TYPE)
            .header(
                "GS1-Capture-Error-Behaviour",
                self.error_behaviour.header_value(),
            )
            .body(body);
        let url = self.capture.as_str();
        let mut resp = request.send().await.map_err(|e| transport(url, &e))?;
        let status = resp.status().as_u16();
        let location = header(&resp, LOCATION);
        if (200..300).contains(&status) {
            // Relative Locations (`/capture/42`) are resolved against the
            // capture URL, as RFC 9110 says.
            let job = location.and_then(|l| self.capture.join(&l).ok());
            let capture_id = job.as_ref().and_then(|u| {
                u.path_segments()
                    .and_then(|mut s| s.next_back())
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
            });
            return Ok(CaptureAccepted {
                job: job.map(String::from),
                capture_id,
                status,
            });
        }
        Err(refused(url, status, &mut resp).await)
    }

    /// The URL of one event, `{root}events/{eventID}` (the event id is one
    /// percent-encoded path segment).
    pub fn event_url(&self, event_id: &str) -> Url {
        let mut url = self.root.clone();
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.pop_if_empty().push("events").push(event_id);
        }
        url
    }

    /// True when the repository holds an event with `event_id`
    /// (`GET /events/{eventID}` answers 200), false on 404. The capture
    /// interface defines no answer for a repeated `eventID`, so this read is
    /// how a resend learns that an earlier capture was stored.
    pub async fn event_exists(&self, event_id: &str) -> Result<bool, CaptureError> {
        let url = self.event_url(event_id);
        let text = url.to_string();
        let mut resp = self
            .with_headers(self.http.get(url))
            .send()
            .await
            .map_err(|e| transport(&text, &e))?;
        match resp.status().as_u16() {
            200 => Ok(true),
            404 => Ok(false),
            status => Err(refused(&text, status, &mut resp).await),
        }
    }

    /// `OPTIONS /capture` (the capture interface's discovery): the status,
    /// for a cheap "is the repository back?" check.
    pub async fn discover(&self) -> Result<u16, CaptureError> {
        let url = self.capture.as_str();
        self.with_headers(
            self.http
                .request(reqwest::Method::OPTIONS, self.capture.clone()),
        )
        .send()
        .await
        .map(|r| r.status().as_u16())
        .map_err(|e| transport(url, &e))
    }

    /// Reads a capture job (`location` as [`CaptureAccepted::job`], or a
    /// capture id).
    pub async fn job(&self, location: &str) -> Result<CaptureJob, CaptureError> {
        let url = if location.contains('/') {
            self.capture.join(location)
        } else {
            self.root.join(&format!("capture/{location}"))
        }
        .map_err(|e| CaptureError::Transport {
            url: location.to_string(),
            kind: TransportError::Connect,
            detail: format!("not a capture job URL: {e}"),
        })?;
        let text = url.to_string();
        let mut resp = self
            .with_headers(self.http.get(url))
            .send()
            .await
            .map_err(|e| transport(&text, &e))?;
        let status = resp.status().as_u16();
        if status != 200 {
            return Err(refused(&text, status, &mut resp).await);
        }
        let body = read_body(&mut resp).await;
        serde_json::from_str(&body).map_err(|e| CaptureError::Refused {
            url: text,
            status,
            failure: CaptureFailure::Unexpected,
            problem: Some(Problem {
                detail: Some(format!("capture job is not readable JSON: {e}")),
                ..Problem::default()
            }),
            retry_after: None,
            body,
        })
    }

    fn with_headers(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        let request = request
            .header(ACCEPT, "application/json, application/problem+json")
            .header("GS1-EPCIS-Version", EPCIS_VERSION)
            .header("GS1-CBV-Version", CBV_VERSION);
        match &self.authorization {
            Some(a) => request.header(AUTHORIZATION, a.clone()),
            None => request,
        }
    }
}

async fn refused(url: &str, status: u16, resp: &mut reqwest::Response) -> CaptureError {
    let retry_after = header(resp, RETRY_AFTER);
    let body = read_body(resp).await;
    let problem = serde_json::from_str::<Problem>(&body)
        .ok()
        .filter(|p| p.kind.is_some() || p.title.is_some());
    CaptureError::Refused {
        url: url.to_string(),
        status,
        failure: classify(status),
        problem,
        retry_after,
        body,
    }
}

fn header(resp: &reqwest::Response, name: reqwest::header::HeaderName) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// Reads at most [`MAX_BODY_BYTES`]; a body cut by the connection is kept as
/// far as it came.
async fn read_body(resp: &mut reqwest::Response) -> String {
    let mut bytes = Vec::new();
    while let Ok(Some(chunk)) = resp.chunk().await {
        let room = MAX_BODY_BYTES.saturating_sub(bytes.len());
        bytes.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if room <= chunk.len() {
            break;
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// A transport error, with whether the request may have arrived.
fn transport(url: &str, e: &reqwest::Error) -> CaptureError {
    // reqwest marks connect-phase errors; anything else happened after the
    // request may have left, so the capture may have been queued.
    let kind = match (e.is_connect(), e.is_timeout()) {
        (true, true) => TransportError::TimeoutBeforeSend,
        (true, false) => TransportError::Connect,
        (false, true) => TransportError::TimeoutAfterSend,
        (false, false) => TransportError::ResetAfterSend,
    };
    let mut detail = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        detail.push_str(": ");
        detail.push_str(&s.to_string());
        source = s.source();
    }
    CaptureError::Transport {
        url: url.to_string(),
        kind,
        detail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_classified_per_the_epcis_rest_binding() {
        for (status, want) in [
            (400, CaptureFailure::Invalid),
            (422, CaptureFailure::Invalid),
            (401, CaptureFailure::Unauthorized),
            (403, CaptureFailure::Forbidden),
            (404, CaptureFailure::NotFound),
            (406, CaptureFailure::Unsupported),
            (409, CaptureFailure::Duplicate),
            (413, CaptureFailure::TooLarge),
            (415, CaptureFailure::Unsupported),
            (429, CaptureFailure::Throttled),
            (500, CaptureFailure::Transient),
            (501, CaptureFailure::Unsupported),
            (503, CaptureFailure::Throttled),
            (504, CaptureFailure::Transient),
            (302, CaptureFailure::Unexpected),
        ] {
            assert_eq!(classify(status), want, "HTTP {status}");
        }
    }

    #[test]
    fn problem_types_name_their_exception() {
        let p = |t: &str| Problem {
            kind: Some(t.into()),
            ..Problem::default()
        };
        assert_eq!(
            p("epcisException:ValidationException").exception(),
            Some("ValidationException")
        );
        assert_eq!(
            p("https://ref.gs1.org/standards/epcis/exceptions#CaptureLimitExceededException")
                .exception(),
            Some("CaptureLimitExceededException")
        );
    }

    #[test]
    fn refusals_feed_the_delivery_policy() {
        let refused = |status, failure| CaptureError::Refused {
            url: "http://x/capture".into(),
            status,
            failure,
            problem: None,
            retry_after: Some("7".into()),
            body: String::new(),
        };
        let AttemptOutcome::Response(r) = refused(409, CaptureFailure::Duplicate).attempt_outcome()
        else {
            panic!("a response")
        };
        assert_eq!(r.class, Some(BodyClass::AlreadyBooked { document: None }));
        let AttemptOutcome::Response(r) = refused(429, CaptureFailure::Throttled).attempt_outcome()
        else {
            panic!("a response")
        };
        assert_eq!(r.retry_after.as_deref(), Some("7"));
        assert_eq!(
            refused(413, CaptureFailure::TooLarge).to_string(),
            "EPCIS repository at http://x/capture answered HTTP 413; send fewer events per document (OPTIONS /capture advertises GS1-EPCIS-Capture-Limit and GS1-EPCIS-Capture-File-Size-Limit)"
        );
    }

    #[test]
    fn config_is_checked() {
        let cfg = |root: &str| CaptureConfig {
            root: root.into(),
            error_behaviour: ErrorBehaviour::Rollback,
            timeout: Duration::from_secs(5),
            authorization: Some("Bearer t".into()),
        };
        let c = CaptureClient::new(&cfg("https://epcis.example.com/epcis")).expect("valid");
        assert_eq!(c.capture_url(), "https://epcis.example.com/epcis/capture");
        assert!(CaptureClient::new(&cfg("ftp://x/")).is_err());
        assert!(CaptureClient::new(&cfg("not a url")).is_err());
        assert!(!format!("{:?}", cfg("https://x/")).contains("Bearer"));
        assert_eq!(
            c.event_url("urn:uuid:0170-x/y").as_str(),
            "https://epcis.example.com/epcis/events/urn:uuid:0170-x%2Fy"
        );
    }
}
