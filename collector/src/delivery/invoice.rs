//! Proof of delivery → invoice trigger: once the ERP has booked a proof of
//! delivery for an order, a follow-up `invoice.ready` webhook tells the
//! billing side (`[erp] invoice_webhook_url`) that the order can be
//! invoiced.
//!
//! # Exactly once
//!
//! - **Never lost**: the follow-up row (with the exact body) is written by
//!   [`crate::inbox::Inbox::record_verdict`] in the same transaction that
//!   books the proof of delivery. A crash before that commit leaves the
//!   proof of delivery pending, and its redelivery queues the follow-up.
//! - **Never twice with effect**: the row's id, `invoice-{pod event id}`, is
//!   the `webhook-id` and `Idempotency-Key` of every attempt, and the body
//!   is the stored bytes. The row becomes `sent` after the receiver's 2xx. A
//!   crash between the receiver's commit and that update sends it once more
//!   with the same id, which a receiver that de-duplicates on it (as
//!   Standard Webhooks asks) drops. No process can do better without the
//!   receiver's help; this is the same contract as event delivery.
//! - **Retries like other deliveries**: every answer goes through
//!   [`policy::decide`] with the `[erp]` retry settings: transient failures
//!   and throttling are retried after the backoff or `Retry-After`, 401/403/
//!   404 are retried every `erp.halt_recheck_ms`, and a permanent refusal
//!   marks the follow-up `failed` (counted in `/v1/stats` `followups`).
//!
//! Only a proof of delivery that names an order queues one (the invoice is
//! per order). The body is a CloudEvents 1.0 structured JSON event, signed
//! per Standard Webhooks with `invoice_webhook_secret` (default: the `[erp]`
//! secret).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::Notify;
use tracing::{error, info, warn};

use crate::delivery::backoff::Jitter;
use crate::delivery::policy::RandomJitter;
use crate::delivery::policy::{self, Decision, EndpointView, History, Policy};
use crate::delivery::policy_of;
use crate::erp::ErpConfig;
use crate::erp::ErpSetupError;
use crate::erp::outcome::Credentials;
use crate::erp::webhook::cloudevents::{WebhookOptions, WebhookSigner};
use crate::erp::webhook::post_signed;
use crate::inbox::{FollowupResult, InboxHandle};
use crate::now_ms;
use crate::shutdown::Shutdown;

/// How many due follow-ups one pass sends at most.
const PASS: usize = 32;

/// Longest sleep between two looks at the follow-ups without being woken.
const RESCAN: Duration = Duration::from_secs(5);

/// Sends queued follow-ups to `invoice_webhook_url`.
pub struct InvoiceNotifier {
    inbox: InboxHandle,
    client: reqwest::Client,
    url: reqwest::Url,
    signer: WebhookSigner,
    policy: Policy,
    halt_recheck: Duration,
    jitter: Box<dyn Jitter>,
}

impl std::fmt::Debug for InvoiceNotifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InvoiceNotifier")
            .field("url", &self.url.as_str())
            .finish_non_exhaustive()
    }
}

impl InvoiceNotifier {
    /// The notifier `[erp]` configures, or `None` when no
    /// `invoice_webhook_url` is set.
    pub fn from_config(erp: &ErpConfig, inbox: InboxHandle) -> Result<Option<Self>, ErpSetupError> {
        let Some(url) = &erp.invoice_webhook_url else {
            return Ok(None);
        };
        let url = reqwest::Url::parse(url).map_err(|e| ErpSetupError::Url {
            url: url.clone(),
            problem: e.to_string(),
        })?;
        // `[erp.webhook]` applies here too: its quoting always, its previous
        // secrets only when the follow-ups share the `[erp]` secret.
        let signer = match erp.invoice_webhook_secret.as_deref() {
            Some(own) => WebhookSigner::new(
                own,
                &WebhookOptions {
                    previous_secrets: Vec::new(),
                    ..erp.webhook.clone()
                },
            )?,
            None => WebhookSigner::new(&erp.secret, &erp.webhook)?,
        };
        // The ERP's client: the same timeout and `erp.ca_file`.
        let client = crate::erp::http_client(erp)?;
        Ok(Some(Self {
            inbox,
            client,
            url,
            signer,
            policy: policy_of(erp),
            halt_recheck: Duration::from_millis(erp.halt_recheck_ms),
            jitter: Box::new(RandomJitter),
        }))
    }

    /// Sends due follow-ups until `shutdown`; `wake` is notified when a
    /// booked proof of delivery queued one.
    pub async fn run(mut self, wake: Arc<Notify>, mut shutdown: Shutdown) {
        loop {
            let mut sleep = RESCAN;
            let now = now_ms();
            match self
                .inbox
                .call(move |i| Ok((i.due_followups(now, PASS)?, i.next_followup_ms()?)))
                .await
            {
                Ok((due, next)) => {
                    let full = due.len() == PASS;
                    for f in due {
                        let result = self.send(&f).await;
                        let id = f.id.clone();
                        let r = result.clone();
                        if let Err(e) = self
                            .inbox
                            .call(move |i| i.record_followup(&id, &r, now_ms()))
                            .await
                        {
                            error!(followup = %f.id, "cannot record the follow-up's result: {e}; it is sent again later");
                        }
                        match result {
                            FollowupResult::Sent => {
                                info!(followup = %f.id, order = %f.order, "invoice.ready sent")
                            }
                            FollowupResult::Failed { reason } => {
                                error!(followup = %f.id, order = %f.order, "invoice.ready refused for good: {reason}")
                            }
                            FollowupResult::Retry { error, .. } => {
                                warn!(followup = %f.id, order = %f.order, "invoice.ready not sent: {error}; will retry")
                            }
                        }
                    }
                    if full {
                        sleep = Duration::ZERO;
                    } else if let Some(at) = next {
                        let ms = u64::try_from(at.saturating_sub(now_ms())).unwrap_or(0);
                        sleep = Duration::from_millis(ms).min(RESCAN);
                    }
                }
                Err(e) => error!("cannot read follow-ups from the inbox: {e}; retrying"),
            }
            tokio::select! {
                () = shutdown.wait() => return,
                () = wake.notified() => {}
                () = tokio::time::sleep(sleep) => {}
            }
        }
    }

    /// One attempt, and what the delivery policy makes of it.
    async fn send(&mut self, f: &crate::inbox::Followup) -> FollowupResult {
        let attempt =
            post_signed(&self.client, &self.url, &self.signer, &f.id, f.body.clone()).await;
        let history = History {
            attempts: f.attempts.saturating_add(1),
            bounded: f.bounded,
        };
        let decision = policy::decide(
            &attempt.outcome,
            history,
            EndpointView {
                credentials: Credentials::Fixed,
            },
            &self.policy,
            SystemTime::now(),
            self.jitter.as_mut(),
        );
        let retry = |after: Duration, error: String, bounded: u32| FollowupResult::Retry {
            next_ms: now_ms().saturating_add(i64::try_from(after.as_millis()).unwrap_or(i64::MAX)),
            error,
            bounded,
        };
        match decision {
            Decision::Booked { .. } => FollowupResult::Sent,
            Decision::DeadLetter { reason, .. } => FollowupResult::Failed { reason },
            Decision::Retry {
                after,
                error,
                bounded,
                ..
            } => retry(
                after,
                error,
                if bounded {
                    f.bounded.saturating_add(1)
                } else {
                    0
                },
            ),
            Decision::PauseEndpoint { delay, reason } => retry(delay, reason, 0),
            Decision::HaltEndpoint { reason } | Decision::RefreshCredentials { reason } => {
                retry(self.halt_recheck, reason, 0)
            }
        }
    }
}
