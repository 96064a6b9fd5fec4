//! `[erp]`: which adapter delivers events, where, and the delivery
//! tunables ([`ErpConfig`]); each adapter's own table (`[erp.tryton]`,
//! `[erp.odoo]`, `[erp.epcis]`, `[erp.webhook]`) lives with its adapter.
//!
//! Invariants: every table denies unknown keys; [`ErpConfig::check`]
//! refuses what cannot work (a URL that is not http(s), retry bounds out of
//! order, a zero tunable, the chosen adapter's table missing or its secret
//! not decoding); `Debug` never prints a secret.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::webhook::cloudevents::{SigningKey, WebhookOptions, WebhookSigner};
use crate::config_error::ConfigCheckError;

/// Which ERP adapter delivers events (`[erp] kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ErpKind {
    /// Signed CloudEvents POSTed to `erp.url` ([`crate::erp::webhook`]).
    #[default]
    Webhook,
    /// Tryton's JSON-RPC at `erp.url`, settings in `[erp.tryton]`
    /// ([`crate::erp::tryton`]).
    Tryton,
    /// Odoo 17/18/19 (`/jsonrpc`, web session or JSON-2) at `erp.url`,
    /// settings in `[erp.odoo]` ([`crate::erp::odoo`]).
    Odoo,
    /// An EPCIS 2.0 repository's capture interface under `erp.url` (its
    /// REST root), settings in `[erp.epcis]` ([`crate::erp::epcis`]).
    Epcis,
}

impl ErpKind {
    /// The name as written in the config.
    pub fn name(self) -> &'static str {
        match self {
            Self::Webhook => "webhook",
            Self::Tryton => "tryton",
            Self::Odoo => "odoo",
            Self::Epcis => "epcis",
        }
    }
}

/// `[erp]`: the ERP events are delivered to, and how. Its `Debug` never
/// prints the secrets.
#[derive(Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ErpConfig {
    /// The adapter: `webhook` (the default) or `tryton`.
    #[serde(default)]
    pub kind: ErpKind,
    /// `webhook`: the URL every event is POSTed to. `tryton`: the server's
    /// base URL (`http://erp:8000/`; the database name is appended).
    pub url: String,
    /// `webhook`: Standard Webhooks secret, `whsec_` followed by base64:
    /// inline, `{ file = "…" }` or `{ env = "…" }`
    /// ([`dockline_host::secret`]).
    #[serde(default, deserialize_with = "dockline_host::secret::deserialize")]
    pub secret: String,
    /// PEM file with the CA certificate(s) an `https://` ERP (and the
    /// invoice webhook) must chain to, for an ERP behind a private CA: then
    /// only that CA is trusted. Without it the system's trust store is used.
    /// Certificates are always verified.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Timeout of one HTTP attempt, milliseconds.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// First retry delay ceiling, milliseconds.
    #[serde(default = "default_retry_min_ms")]
    pub retry_min_ms: u64,
    /// Largest retry delay, milliseconds.
    #[serde(default = "default_retry_max_ms")]
    pub retry_max_ms: u64,
    /// Most HTTP requests in flight at once.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Attempts in a row allowed for the bounded failure classes (conflict,
    /// request still in flight, referenced document missing) before the
    /// event is dead-lettered. Transient failures retry without limit.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Longest pause of the endpoint on 429/503, whatever `Retry-After` asks,
    /// milliseconds.
    #[serde(default = "default_pause_max_ms")]
    pub pause_max_ms: u64,
    /// Transient failures in a row that open the circuit breaker.
    #[serde(default = "default_breaker_failures")]
    pub breaker_failures: u32,
    /// First time the breaker stays open before a probe, milliseconds; it
    /// doubles after each failed probe up to `max(breaker_open_ms,
    /// retry_max_ms)`.
    #[serde(default = "default_breaker_open_ms")]
    pub breaker_open_ms: u64,
    /// How often a halted endpoint (401, 403, 404, …) is tried again,
    /// milliseconds.
    #[serde(default = "default_halt_recheck_ms")]
    pub halt_recheck_ms: u64,
    /// Longest a business event waits for its lane's previous stage that
    /// the collector has not seen yet (a proof of delivery for the order's
    /// `arrived`, …), counted from when it was stored; then it is delivered
    /// and counted as out of order. See [`crate::delivery::lane`]. Milliseconds.
    #[serde(default = "default_lane_park_max_ms")]
    pub lane_park_max_ms: u64,
    /// Most lanes delivering (or waiting on the endpoint) at once; HTTP
    /// requests in flight stay capped by `concurrency`.
    #[serde(default = "default_max_active_lanes")]
    pub max_active_lanes: usize,
    /// Where a booked proof of delivery that names an order sends an
    /// `invoice.ready` follow-up webhook (CloudEvents, signed like the
    /// events; see [`crate::delivery::invoice`]). None: no follow-ups.
    #[serde(default)]
    pub invoice_webhook_url: Option<String>,
    /// The Standard Webhooks secret of the follow-ups; default: `secret`.
    /// Inline, `{ file = "…" }` or `{ env = "…" }`.
    #[serde(
        default,
        deserialize_with = "dockline_host::secret::deserialize_option"
    )]
    pub invoice_webhook_secret: Option<String>,
    /// `[erp.tryton]`: required when `kind = "tryton"`.
    #[serde(default)]
    pub tryton: Option<super::tryton::TrytonConfig>,
    /// `[erp.odoo]`: required when `kind = "odoo"`.
    #[serde(default)]
    pub odoo: Option<super::odoo::OdooConfig>,
    /// `[erp.epcis]`: required when `kind = "epcis"`.
    #[serde(default)]
    pub epcis: Option<super::epcis::EpcisOptions>,
    /// `[erp.webhook]`: previous secrets still signed with during a
    /// rotation, and the `Idempotency-Key` quoting (webhook adapter only).
    #[serde(default)]
    pub webhook: WebhookOptions,
}

impl std::fmt::Debug for ErpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let redacted = |set: bool| if set { "(set)" } else { "(none)" };
        f.debug_struct("ErpConfig")
            .field("kind", &self.kind)
            .field("url", &self.url)
            .field("secret", &redacted(!self.secret.is_empty()))
            .field("ca_file", &self.ca_file)
            .field("timeout_ms", &self.timeout_ms)
            .field("retry_min_ms", &self.retry_min_ms)
            .field("retry_max_ms", &self.retry_max_ms)
            .field("concurrency", &self.concurrency)
            .field("max_attempts", &self.max_attempts)
            .field("pause_max_ms", &self.pause_max_ms)
            .field("breaker_failures", &self.breaker_failures)
            .field("breaker_open_ms", &self.breaker_open_ms)
            .field("halt_recheck_ms", &self.halt_recheck_ms)
            .field("lane_park_max_ms", &self.lane_park_max_ms)
            .field("max_active_lanes", &self.max_active_lanes)
            .field("invoice_webhook_url", &self.invoice_webhook_url)
            .field(
                "invoice_webhook_secret",
                &redacted(self.invoice_webhook_secret.is_some()),
            )
            .field("tryton", &self.tryton)
            .field("odoo", &self.odoo)
            .field("epcis", &self.epcis)
            .field("webhook", &self.webhook)
            .finish()
    }
}

impl ErpConfig {
    /// A webhook endpoint with the defaults for everything but the URL and
    /// the secret.
    pub fn new(url: impl Into<String>, secret: impl Into<String>) -> Self {
        Self {
            kind: ErpKind::Webhook,
            url: url.into(),
            secret: secret.into(),
            ca_file: None,
            timeout_ms: default_timeout_ms(),
            retry_min_ms: default_retry_min_ms(),
            retry_max_ms: default_retry_max_ms(),
            concurrency: default_concurrency(),
            max_attempts: default_max_attempts(),
            pause_max_ms: default_pause_max_ms(),
            breaker_failures: default_breaker_failures(),
            breaker_open_ms: default_breaker_open_ms(),
            halt_recheck_ms: default_halt_recheck_ms(),
            lane_park_max_ms: default_lane_park_max_ms(),
            max_active_lanes: default_max_active_lanes(),
            invoice_webhook_url: None,
            invoice_webhook_secret: None,
            tryton: None,
            odoo: None,
            epcis: None,
            webhook: WebhookOptions::default(),
        }
    }

    /// A Tryton server at `url` (its base URL) with the defaults for the
    /// delivery tunables.
    pub fn tryton(url: impl Into<String>, tryton: super::tryton::TrytonConfig) -> Self {
        Self {
            kind: ErpKind::Tryton,
            tryton: Some(tryton),
            ..Self::new(url, "")
        }
    }

    /// Timeout of one attempt.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// Checks what serde cannot: the URL, the retry bounds and tunables,
    /// the CA file, and the keys the chosen adapter needs.
    pub fn check(&self) -> Result<(), ConfigCheckError> {
        if let Some(ca) = &self.ca_file {
            super::root_certificates(ca).map_err(|e| ConfigCheckError {
                key: "erp.ca_file",
                problem: e.to_string(),
            })?;
        }
        if !(self.url.starts_with("http://") || self.url.starts_with("https://")) {
            return Err(ConfigCheckError {
                key: "erp.url",
                problem: format!("is {:?}; expected an http:// or https:// URL", self.url),
            });
        }
        self.check_adapter()?;
        if self.retry_min_ms == 0 || self.retry_min_ms > self.retry_max_ms {
            return Err(ConfigCheckError {
                key: "erp.retry_min_ms",
                problem: format!(
                    "is {} with retry_max_ms {}; need 0 < retry_min_ms <= retry_max_ms",
                    self.retry_min_ms, self.retry_max_ms
                ),
            });
        }
        if self.concurrency == 0 {
            return Err(ConfigCheckError {
                key: "erp.concurrency",
                problem: "is 0; use at least 1".into(),
            });
        }
        for (key, value) in [
            ("erp.max_attempts", u64::from(self.max_attempts)),
            ("erp.breaker_failures", u64::from(self.breaker_failures)),
            ("erp.breaker_open_ms", self.breaker_open_ms),
            ("erp.halt_recheck_ms", self.halt_recheck_ms),
            ("erp.pause_max_ms", self.pause_max_ms),
        ] {
            if value == 0 {
                return Err(ConfigCheckError {
                    key,
                    problem: "is 0; use at least 1".into(),
                });
            }
        }
        if self.timeout_ms == 0 {
            return Err(ConfigCheckError {
                key: "erp.timeout_ms",
                problem: "is 0; use the longest time the ERP may take to answer".into(),
            });
        }
        Ok(())
    }

    /// Checks the keys the chosen adapter needs.
    fn check_adapter(&self) -> Result<(), ConfigCheckError> {
        match self.kind {
            ErpKind::Webhook => {
                SigningKey::from_secret(&self.secret).map_err(|e| ConfigCheckError {
                    key: "erp.secret",
                    problem: e.to_string(),
                })?;
                WebhookSigner::new(&self.secret, &self.webhook).map_err(|e| ConfigCheckError {
                    key: "erp.webhook.previous_secrets",
                    problem: e.to_string(),
                })?;
                self.webhook
                    .check_batch()
                    .map_err(|problem| ConfigCheckError {
                        key: "erp.webhook.batch_max",
                        problem,
                    })?;
            }
            ErpKind::Epcis => {
                let Some(e) = &self.epcis else {
                    return Err(ConfigCheckError {
                        key: "erp.epcis",
                        problem: "is missing; kind = \"epcis\" needs an [erp.epcis] table with at least private_base (url is the repository's REST root)".into(),
                    });
                };
                e.check(self)
                    .map_err(|(key, problem)| ConfigCheckError { key, problem })?;
            }
            ErpKind::Odoo => match &self.odoo {
                Some(odoo) => odoo.check()?,
                None => {
                    return Err(ConfigCheckError {
                        key: "erp.odoo",
                        problem: "is missing; kind = \"odoo\" needs an [erp.odoo] table with version, database, login and a password or api_key".into(),
                    });
                }
            },
            ErpKind::Tryton => {
                let Some(t) = &self.tryton else {
                    return Err(ConfigCheckError {
                        key: "erp.tryton",
                        problem: "is missing; kind = \"tryton\" needs an [erp.tryton] table with database, user and password".into(),
                    });
                };
                for (key, value) in [
                    ("erp.tryton.database", &t.database),
                    ("erp.tryton.user", &t.user),
                    ("erp.tryton.password", &t.password),
                ] {
                    if value.trim().is_empty() {
                        return Err(ConfigCheckError {
                            key,
                            problem: "is empty; the Tryton adapter logs in with database, user and password".into(),
                        });
                    }
                }
                if t.database.contains(['/', '?', '#']) {
                    return Err(ConfigCheckError {
                        key: "erp.tryton.database",
                        problem: format!(
                            "is {:?}; a database name cannot hold '/', '?' or '#'",
                            t.database
                        ),
                    });
                }
            }
        }
        Ok(())
    }
}

fn default_lane_park_max_ms() -> u64 {
    10_000
}
fn default_max_active_lanes() -> usize {
    256
}
fn default_timeout_ms() -> u64 {
    10_000
}
fn default_retry_min_ms() -> u64 {
    200
}
fn default_retry_max_ms() -> u64 {
    30_000
}
fn default_concurrency() -> usize {
    4
}
fn default_max_attempts() -> u32 {
    5
}
fn default_pause_max_ms() -> u64 {
    15 * 60 * 1000
}
fn default_breaker_failures() -> u32 {
    5
}
fn default_breaker_open_ms() -> u64 {
    5_000
}
fn default_halt_recheck_ms() -> u64 {
    60_000
}
