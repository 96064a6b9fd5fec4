//! ERP adapters: one module per ERP integration, all behind [`ErpAdapter`].
//!
//! An adapter turns one business event into whatever requests its ERP needs
//! and reports a single [`Attempt`]: the outcome the pure
//! [`crate::delivery::policy::decide`] classifies (booked, retry, pause, halt, dead
//! letter) plus a one-line description of what was sent, for the attempt log
//! and the dead letter. [`crate::delivery`] owns everything around it (lanes,
//! ordering, retries, the circuit breaker, verdicts); an adapter owns only the
//! ERP's wire protocol and how it makes a retried event take effect once.
//!
//! | `erp.kind` | module | exactly-once by |
//! |---|---|---|
//! | `webhook` (default) | [`webhook`] | the same `webhook-id` and `Idempotency-Key` on every attempt |
//! | `tryton` | [`tryton`] | search by order reference, a state read before every transition, "already there" is success |
//! | `odoo` | [`odoo`] | search by order reference (`origin`), a state read before every transition, absolute writes from an event ledger of attachments, "already done" is success |
//! | `epcis` | [`epcis`] | `eventID` = `urn:uuid:{event id}` on every attempt, `GET /events/{eventID}` before each capture |
//!
//! Invariants every adapter keeps:
//! - `deliver` never fails: transport errors, HTTP statuses and RPC errors
//!   all become an [`AttemptOutcome`];
//! - a retry of the same event (after a lost response, a crash, a replay)
//!   has the same effect in the ERP as one successful attempt;
//! - `probe` is cheap and read-only: it only answers "is the ERP back?" for
//!   the breaker's half-open state.

mod config;
pub mod epcis;
pub mod odoo;
pub mod outcome;
pub mod tryton;
pub mod webhook;

use std::fmt::Debug;
use std::future::Future;
use std::pin::Pin;

use dockline_protocol::{BusinessEvent, Envelope, SiteId};

use crate::erp::outcome::{AttemptOutcome, Credentials, TransportError};
use crate::erp::webhook::cloudevents::SecretError;
use crate::media::link::MediaLinks;
use crate::media::{ErpMedium, MediaRef, MediaRole};
pub use config::{ErpConfig, ErpKind};
use dockline_protocol::media::{MediaHash, MediaType};

/// An ERP adapter (or the invoice follow-up client) could not be set up
/// from `[erp]`.
#[derive(Debug, thiserror::Error)]
pub enum ErpSetupError {
    /// `erp.url` is not a usable URL.
    #[error("config key `erp.url` is {url:?}, which is not a valid URL: {problem}")]
    Url {
        /// The URL.
        url: String,
        /// Why.
        problem: String,
    },
    /// `erp.secret` is not usable.
    #[error("config key `erp.secret` {0}")]
    Secret(#[from] SecretError),
    /// The HTTP client could not be built.
    #[error("cannot build the ERP HTTP client: {0}")]
    Client(String),
}

/// Longest response body read from the ERP.
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// A boxed future, so adapters can be chosen at run time (`dyn ErpAdapter`).
pub type AdapterFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One business event as an adapter sees it.
#[derive(Debug, Clone, Copy)]
pub struct ErpEvent<'a> {
    /// The site the device belongs to.
    pub site: &'a SiteId,
    /// The envelope as received (device, sequence, event id, capture time).
    pub envelope: &'a Envelope,
    /// The business event inside it.
    pub event: &'a BusinessEvent,
    /// Its business lane (delivery's key, `crate::delivery::lane::lane_key`):
    /// a batching adapter never puts two events of one lane in a request.
    pub lane: &'a str,
    /// The stored media the event references (signature, photo), verified
    /// by hash; empty for events without media.
    pub media: &'a [ErpMedium],
    /// Media the event references that had not arrived when its wait ran
    /// out: the event is delivered without them and flagged.
    pub media_missing: &'a [MediaRef],
}

/// One attempt as the adapter saw it: the policy's input plus what the
/// dead letter keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// What happened, for [`crate::delivery::policy::decide`].
    pub outcome: AttemptOutcome,
    /// What was sent, one line (kept in the attempt log and dead letters).
    pub request: String,
}

/// An ERP integration.
pub trait ErpAdapter: Send + Sync + Debug {
    /// The adapter's kind, as written in `erp.kind`.
    fn kind(&self) -> &'static str;

    /// Delivers one event (the caller holds a request permit). Never fails:
    /// every problem is an outcome the policy classifies.
    fn deliver<'a>(&'a self, event: ErpEvent<'a>) -> AdapterFuture<'a, Attempt>;

    /// A cheap read-only request: true when the ERP answers again (used by
    /// the breaker's half-open probe).
    fn probe(&self) -> AdapterFuture<'_, bool>;

    /// What a 401 can lead to with this adapter's credentials.
    fn credentials(&self) -> Credentials;

    /// Most events one request can carry (a batching adapter: its batch
    /// size). Delivery lets this many times `erp.concurrency` lanes wait at
    /// the adapter, so full batches can form; the adapter itself keeps
    /// requests in flight at `erp.concurrency`.
    fn events_per_request(&self) -> usize {
        1
    }
}

/// How the adapters hand an event's media to the ERP (from the collector's
/// `[media]`): signed links the ERP fetches the bytes through, and the
/// largest medium the webhook also sends inline.
///
/// The default (no links, `inline_max_bytes` 0) is what a collector without
/// a `[media] link_key_file` gets: Tryton and Odoo still attach the bytes
/// (they receive them in the call), the webhook sends every medium inline
/// (without a link there is no other way to the bytes), EPCIS names each
/// medium by its hash only.
#[derive(Debug, Clone, Default)]
pub struct ErpMediaOptions {
    /// Signs the links to stored media; `None` without a link key.
    pub links: Option<MediaLinks>,
    /// Media up to this size (bytes) also travel inline in the webhook's
    /// media CloudEvent (`data_base64`); 0: never, unless there are no links.
    pub inline_max_bytes: u64,
}

impl ErpMediaOptions {
    /// The signed link to `hash` as of now, if links are configured.
    pub fn link(&self, hash: &MediaHash) -> Option<String> {
        self.links.as_ref().map(|l| l.url(hash, now_secs()))
    }

    /// Whether `medium` travels inline: it fits `inline_max_bytes`, or there
    /// is no link the ERP could fetch it by.
    pub fn inline(&self, medium: &ErpMedium) -> bool {
        self.links.is_none()
            || u64::try_from(medium.bytes.len()).is_ok_and(|n| n <= self.inline_max_bytes)
    }
}

/// Unix seconds now (0 before 1970: a link then expires at once).
fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The file name of a medium at the ERP: `<role>-<hex>.<png|jpg>`. The
/// same for every attempt, so an adapter finds an attachment an earlier
/// attempt created by it.
pub fn media_file_name(role: MediaRole, hash: &MediaHash, media_type: MediaType) -> String {
    let ext = match media_type {
        MediaType::Png => "png",
        MediaType::Jpeg => "jpg",
    };
    format!("{}-{hash}.{ext}", role.name())
}

/// The one-line note an ERP document carries when media of its event never
/// arrived (`ErpEvent::media_missing`): which ones, by role and hash, and
/// what to do. Empty when nothing is missing.
pub fn media_missing_note(missing: &[MediaRef]) -> String {
    if missing.is_empty() {
        return String::new();
    }
    let names: Vec<String> = missing
        .iter()
        .map(|m| format!("{} sha256:{}", m.role.name(), m.hash))
        .collect();
    format!(
        "MEDIA MISSING: {} did not reach the collector before the event's wait ran out; the event was booked without them (check the handheld's media outbox)",
        names.join(", ")
    )
}

/// Builds the adapter `erp.kind` names; `media` says how it hands an event's
/// media to the ERP.
pub fn from_config(
    erp: &ErpConfig,
    media: ErpMediaOptions,
) -> Result<Box<dyn ErpAdapter>, ErpSetupError> {
    Ok(match erp.kind {
        ErpKind::Webhook => Box::new(webhook::WebhookAdapter::new(erp)?.with_media(media)),
        ErpKind::Tryton => Box::new(tryton::TrytonAdapter::new(erp)?),
        ErpKind::Odoo => Box::new(odoo::OdooAdapter::new(erp)?),
        ErpKind::Epcis => Box::new(epcis::EpcisAdapter::new(erp)?.with_media(media)),
    })
}

/// Parses `erp.url`.
fn parse_url(erp: &ErpConfig) -> Result<reqwest::Url, ErpSetupError> {
    reqwest::Url::parse(&erp.url).map_err(|e| ErpSetupError::Url {
        url: erp.url.clone(),
        problem: e.to_string(),
    })
}

/// The HTTP client every adapter (and the invoice follow-ups) uses: one
/// attempt's timeout from `erp`, and HTTPS through rustls.
///
/// Certificates are always verified. Without `erp.ca_file` the trust
/// anchors are the system's (rustls-platform-verifier: on Linux the
/// distribution's CA bundle, which the operator already keeps current and
/// may extend for a company CA; a compiled-in list such as webpki-roots
/// would age with the binary and ignore that). With `erp.ca_file` only the
/// CA(s) in that file are trusted: an ERP behind a private CA.
pub(crate) fn http_client(erp: &ErpConfig) -> Result<reqwest::Client, ErpSetupError> {
    let mut builder = reqwest::Client::builder().timeout(erp.timeout());
    if let Some(path) = &erp.ca_file {
        let roots = root_certificates(path).map_err(|e| ErpSetupError::Client(e.to_string()))?;
        builder = builder.tls_certs_only(roots);
    }
    builder
        .build()
        .map_err(|e| ErpSetupError::Client(e.to_string()))
}

/// `erp.ca_file` could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CaFileError {
    /// The file could not be read.
    #[error(
        "[erp] ca_file {path}: cannot read it ({source}); check the path and that the collector's user may read it"
    )]
    Read {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file holds no PEM certificate.
    #[error(
        "[erp] ca_file {path}: {problem}; give the PEM certificate of the CA that signed the ERP's certificate (-----BEGIN CERTIFICATE-----)"
    )]
    Pem {
        /// The file.
        path: std::path::PathBuf,
        /// What was wrong.
        problem: String,
    },
}

/// The certificates of `erp.ca_file` (PEM, one or more).
pub(crate) fn root_certificates(
    path: &std::path::Path,
) -> Result<Vec<reqwest::Certificate>, CaFileError> {
    let bytes = std::fs::read(path).map_err(|source| CaFileError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let pem = |problem: String| CaFileError::Pem {
        path: path.to_path_buf(),
        problem,
    };
    if !bytes
        .windows(b"-----BEGIN CERTIFICATE-----".len())
        .any(|w| w == b"-----BEGIN CERTIFICATE-----")
    {
        return Err(pem("it holds no PEM certificate".into()));
    }
    let certs = reqwest::Certificate::from_pem_bundle(&bytes)
        .map_err(|e| pem(format!("it is not a valid PEM bundle ({e})")))?;
    if certs.is_empty() {
        return Err(pem("it holds no PEM certificate".into()));
    }
    Ok(certs)
}

/// Reads at most [`MAX_RESPONSE_BYTES`] of a response body. A body cut by
/// the connection is returned as far as it arrived: a 2xx whose body was cut
/// still happened, anything else is classified from what arrived.
async fn read_body(resp: &mut reqwest::Response) -> String {
    let mut bytes = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                let room = MAX_RESPONSE_BYTES.saturating_sub(bytes.len());
                bytes.extend_from_slice(&chunk[..chunk.len().min(room)]);
                if room <= chunk.len() {
                    break;
                }
            }
            Ok(None) => break,
            Err(e) => {
                tracing::debug!("ERP response body ended early: {e}");
                break;
            }
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The kind of a transport error and its text with the source chain.
fn transport_error(e: &reqwest::Error) -> (TransportError, String) {
    // reqwest marks connect-phase errors (refused, DNS, TLS, connect
    // timeout); any other failure happened after the request may have left.
    let (kind, what) = match (e.is_connect(), e.is_timeout()) {
        (true, true) => (TransportError::TimeoutBeforeSend, "timed out connecting"),
        (true, false) => (TransportError::Connect, "could not connect"),
        (false, true) => (
            TransportError::TimeoutAfterSend,
            "timed out after the request was sent",
        ),
        (false, false) => (
            TransportError::ResetAfterSend,
            "failed after the request was sent",
        ),
    };
    // The source chain holds the useful part (connection refused, DNS, …).
    let mut text = format!("ERP {what}: {e}");
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    (kind, text)
}

/// The one document of an order that an event applies to, out of those the
/// ERP found for it: the only one not cancelled; a cancelled one when that is
/// all there is (the adapter then answers by its state); none yet is
/// [`RpcOutcome::NotReady`] with `missing`; several open ones are
/// [`RpcOutcome::Refused`] with `several(count, their names)`, since dockline
/// books one document per order.
pub(crate) fn single_open<T: Clone>(
    found: &[T],
    cancelled: impl Fn(&T) -> bool,
    name: impl Fn(&T) -> &str,
    missing: impl FnOnce() -> String,
    several: impl FnOnce(usize, &str) -> String,
) -> Result<T, crate::erp::outcome::RpcOutcome> {
    use crate::erp::outcome::RpcOutcome;
    let open: Vec<&T> = found.iter().filter(|d| !cancelled(d)).collect();
    match (open.as_slice(), found.first()) {
        ([one], _) => Ok((*one).clone()),
        ([], Some(cancelled)) => Ok(cancelled.clone()),
        ([], None) => Err(RpcOutcome::NotReady { message: missing() }),
        (many, _) => {
            let names = many.iter().map(|d| name(d)).collect::<Vec<_>>().join(", ");
            Err(RpcOutcome::Refused {
                message: several(many.len(), &names),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn medium(len: usize) -> ErpMedium {
        let bytes = vec![0xff; len];
        ErpMedium {
            hash: MediaHash::of(&bytes),
            media_type: MediaType::Jpeg,
            role: MediaRole::Photo,
            bytes: Arc::from(bytes),
        }
    }

    #[test]
    fn media_names_and_notes() {
        let m = medium(3);
        assert_eq!(
            media_file_name(m.role, &m.hash, m.media_type),
            format!("photo-{}.jpg", m.hash)
        );
        assert_eq!(
            media_file_name(MediaRole::Signature, &m.hash, MediaType::Png),
            format!("signature-{}.png", m.hash)
        );
        assert_eq!(media_missing_note(&[]), "");
        let note = media_missing_note(&[MediaRef {
            hash: m.hash,
            role: MediaRole::Signature,
        }]);
        assert!(
            note.starts_with(&format!("MEDIA MISSING: signature sha256:{}", m.hash)),
            "{note}"
        );
    }

    #[test]
    fn inline_when_small_enough_or_when_there_is_no_link() {
        let none = ErpMediaOptions::default();
        assert!(none.inline(&medium(10_000_000)), "no link: always inline");
        assert_eq!(none.link(&medium(1).hash), None);
        let links = MediaLinks::new(&[1; 32], "http://c", 60).ok();
        let opts = ErpMediaOptions {
            links,
            inline_max_bytes: 100,
        };
        assert!(opts.inline(&medium(100)));
        assert!(!opts.inline(&medium(101)));
        let never = ErpMediaOptions {
            inline_max_bytes: 0,
            ..opts.clone()
        };
        assert!(!never.inline(&medium(1)));
        let m = medium(1);
        let link = opts.link(&m.hash).unwrap_or_default();
        assert!(
            link.starts_with(&format!("http://c/v1/media/{}?exp=", m.hash)),
            "{link}"
        );
    }
}
