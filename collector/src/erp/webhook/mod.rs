//! The generic signed webhook adapter (`erp.kind = "webhook"`, the default):
//! every business event is POSTed to `erp.url` as a CloudEvents 1.0
//! structured JSON body signed per Standard Webhooks ([`crate::erp::webhook::cloudevents`]
//! builds the exact bytes; this module only sends them). `webhook-signature`
//! carries one `v1,` signature for `[erp] secret` and one for each of
//! `[erp.webhook] previous_secrets` (a rotation in progress).
//!
//! Exactly-once effect: every attempt of an event carries the same
//! `webhook-id` and `Idempotency-Key` (the event id), also after a replay,
//! so an ERP that honours them books a retried event once even if its first
//! answer was lost. The body is rebuilt from the stored envelope on every
//! attempt; it is a pure function of it, so the bytes are the same.
//!
//! With `[erp.webhook] batch_max` above 1, ready events of distinct lanes share
//! one `application/cloudevents-batch+json` request (`batch`).
//!
//! # Media
//!
//! Each medium of an event (`ErpEvent::media`: its signature, its photo) is
//! its own CloudEvent (`io.dockline.media`, [`cloudevents::media_cloudevent_body`]),
//! POSTed alone, in order, *before* the event's own: an ERP that books the
//! event can rely on holding its media. Its `webhook-id` and
//! `Idempotency-Key` are [`cloudevents::media_event_id`] (event id, role,
//! hash), the same on every attempt, so a medium is attached once however
//! often the event is retried. The bytes go by `dataref` (a signed,
//! expiring link to the collector's `GET /v1/media/{hex}`) and also inline
//! (`data_base64`) when the medium is at most `[media] inline_max_bytes`,
//! or always when no link key is configured. A medium the ERP does not take
//! (any answer but a 2xx or "already booked") ends the attempt with that
//! answer, before the event is sent; the policy retries the whole event.
//! The event's own CloudEvent lists its media in `data.media` and the ones
//! whose wait ran out in `data.media_missing` (with `data.media_note`).

mod batch;
pub mod cloudevents;

use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::{debug, info};

use super::{AdapterFuture, Attempt, ErpAdapter, ErpEvent};
use crate::erp::ErpConfig;
use crate::erp::ErpMediaOptions;
use crate::erp::ErpSetupError;
use crate::erp::outcome::{AttemptOutcome, BodyClass, Credentials, Response};
use batch::Batcher;
use cloudevents::{MediaEntry, WebhookSigner};

/// The content type of one structured-mode CloudEvent.
pub const STRUCTURED_CONTENT_TYPE: &str = "application/cloudevents+json";
/// The content type of a CloudEvents JSON batch.
pub const BATCH_CONTENT_TYPE: &str = "application/cloudevents-batch+json";

/// Where and how requests go: the client, the URL and the signer.
#[derive(Debug)]
pub(crate) struct Target {
    client: reqwest::Client,
    url: reqwest::Url,
    signer: WebhookSigner,
}

impl Target {
    /// POSTs `body` signed, with `id` as `webhook-id` and `Idempotency-Key`.
    pub(crate) async fn post(&self, id: &str, body: Vec<u8>, content_type: &str) -> Attempt {
        post_signed_as(
            &self.client,
            &self.url,
            &self.signer,
            id,
            body,
            content_type,
        )
        .await
    }
}

/// Posts signed CloudEvents to one URL.
#[derive(Debug)]
pub struct WebhookAdapter {
    target: Arc<Target>,
    /// `[erp.webhook] batch_max`.
    batch_max: usize,
    /// `erp.concurrency`: requests in flight when batching.
    concurrency: usize,
    /// Started on the first delivery when `batch_max` > 1 (it needs the
    /// runtime, which `new` may not run on).
    batcher: OnceLock<Batcher>,
    /// Links and inlining of media (`[media]`).
    media: ErpMediaOptions,
}

/// Whether the ERP took a medium's CloudEvent: any 2xx, or its answer that
/// it holds it already (a repeat after a lost answer).
fn medium_taken(outcome: &AttemptOutcome) -> bool {
    match outcome {
        AttemptOutcome::Response(r) => {
            (200..300).contains(&r.status) && r.class.is_none()
                || matches!(r.class, Some(BodyClass::AlreadyBooked { .. }))
        }
        _ => false,
    }
}

impl WebhookAdapter {
    /// Prepares the adapter from `[erp]` (`url`, `secret`, `timeout_ms`,
    /// `concurrency`, `[erp.webhook]`).
    pub fn new(erp: &ErpConfig) -> Result<Self, ErpSetupError> {
        Ok(Self {
            target: Arc::new(Target {
                url: super::parse_url(erp)?,
                signer: WebhookSigner::new(&erp.secret, &erp.webhook)?,
                client: super::http_client(erp)?,
            }),
            batch_max: erp.webhook.batch_max.clamp(1, cloudevents::MAX_BATCH),
            concurrency: erp.concurrency.max(1),
            batcher: OnceLock::new(),
            media: ErpMediaOptions::default(),
        })
    }

    /// Hands the event's media to the adapter (`erp::from_config`).
    pub fn with_media(mut self, media: ErpMediaOptions) -> Self {
        self.media = media;
        self
    }

    /// POSTs one medium's CloudEvent; `None` when the ERP took it (a 2xx,
    /// or an "already booked" answer to a repeat), else the attempt that
    /// ends the event's attempt (it is retried as a whole; the same
    /// `webhook-id` makes the repeat harmless).
    async fn post_medium(&self, event: ErpEvent<'_>, entry: &MediaEntry<'_>) -> Option<Attempt> {
        let id = cloudevents::media_event_id(event.envelope, entry.medium);
        let inline = self.media.inline(entry.medium);
        let body = cloudevents::media_cloudevent_body(
            event.site,
            event.envelope,
            event.event,
            entry,
            inline,
        );
        debug!(event_id = %event.envelope.id, media_id = %id, inline, "posting medium to ERP");
        let attempt = self.target.post(&id, body, STRUCTURED_CONTENT_TYPE).await;
        if medium_taken(&attempt.outcome) {
            return None;
        }
        Some(Attempt {
            outcome: attempt.outcome,
            request: format!(
                "{} (the {} of event {}, before the event)",
                attempt.request,
                entry.medium.role.name(),
                event.envelope.id
            ),
        })
    }

    async fn post(&self, event: ErpEvent<'_>) -> Attempt {
        let envelope = event.envelope;
        let id = envelope.id.to_string();
        let entries: Vec<MediaEntry<'_>> = event
            .media
            .iter()
            .map(|medium| MediaEntry {
                medium,
                dataref: self.media.link(&medium.hash),
            })
            .collect();
        for entry in &entries {
            if let Some(failed) = self.post_medium(event, entry).await {
                return failed;
            }
        }
        let body = cloudevents::cloudevent_body_with_media(
            event.site,
            envelope,
            event.event,
            &entries,
            event.media_missing,
        );
        debug!(device = %envelope.device, seq = envelope.seq, event_id = %id, "posting event to ERP");
        if self.batch_max > 1 {
            let lane = event.lane.to_owned();
            let batcher = self.batcher.get_or_init(|| {
                Batcher::start(Arc::clone(&self.target), self.batch_max, self.concurrency)
            });
            return batcher.deliver(lane, id, body).await;
        }
        self.target.post(&id, body, STRUCTURED_CONTENT_TYPE).await
    }

    /// `HEAD` on the endpoint: true when it answers with anything but a 5xx
    /// or 429 (a 405 still shows the server is back).
    async fn head(&self) -> bool {
        let target = &self.target;
        match target.client.head(target.url.clone()).send().await {
            Ok(r) => {
                let s = r.status().as_u16();
                let up = !(s >= 500 || s == 429);
                info!(status = s, up, "ERP endpoint probed");
                up
            }
            Err(e) => {
                info!(
                    "ERP endpoint probe failed: {}",
                    super::transport_error(&e).1
                );
                false
            }
        }
    }
}

/// POSTs a CloudEvents `body` to `url`, signed by `signer` (one signature
/// per secret), with `id` as its `webhook-id` and `Idempotency-Key` (quoted
/// as `signer` is configured); the answer, classified as
/// [`crate::delivery::policy::decide`] expects it. Shared by this adapter and the
/// follow-up webhooks ([`crate::delivery::invoice`]).
pub(crate) async fn post_signed(
    client: &reqwest::Client,
    url: &reqwest::Url,
    signer: &WebhookSigner,
    id: &str,
    body: Vec<u8>,
) -> Attempt {
    post_signed_as(client, url, signer, id, body, STRUCTURED_CONTENT_TYPE).await
}

/// [`post_signed`] with another content type (a batch).
async fn post_signed_as(
    client: &reqwest::Client,
    url: &reqwest::Url,
    signer: &WebhookSigner,
    id: &str,
    body: Vec<u8>,
    content_type: &str,
) -> Attempt {
    let idempotency = signer.idempotency_key(id);
    let request = format!(
        "POST {url} webhook-id={id} idempotency-key={idempotency} {} bytes",
        body.len()
    );
    let timestamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    let signature = signer.signature(id, timestamp, &body);
    let sent = client
        .post(url.clone())
        .header("content-type", content_type)
        .header("webhook-id", id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .header("idempotency-key", idempotency)
        .body(body)
        .send()
        .await;
    let mut resp = match sent {
        Ok(r) => r,
        Err(e) => {
            let (kind, detail) = super::transport_error(&e);
            return Attempt {
                outcome: AttemptOutcome::Transport { kind, detail },
                request,
            };
        }
    };
    let status = resp.status().as_u16();
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let retry_after = header("retry-after");
    let location = header("location");
    let body = super::read_body(&mut resp).await;
    let class = cloudevents::body_class(status, &body);
    Attempt {
        outcome: AttemptOutcome::Response(Response {
            status,
            retry_after,
            location,
            body,
            class,
        }),
        request,
    }
}

impl ErpAdapter for WebhookAdapter {
    fn kind(&self) -> &'static str {
        "webhook"
    }

    fn deliver<'a>(&'a self, event: ErpEvent<'a>) -> AdapterFuture<'a, Attempt> {
        Box::pin(self.post(event))
    }

    fn probe(&self) -> AdapterFuture<'_, bool> {
        Box::pin(self.head())
    }

    fn credentials(&self) -> Credentials {
        // A webhook secret cannot be refreshed.
        Credentials::Fixed
    }

    fn events_per_request(&self) -> usize {
        self.batch_max
    }
}
