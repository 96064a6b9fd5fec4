//! The collector's configuration: `collector.toml`, then `DOCKLINE_*`
//! environment overrides (see [`dockline_host::config::load`]), then this
//! typed struct with defaults.
//!
//! Invariants: every table denies unknown keys, so a typo is reported instead
//! of silently ignored; [`Config::check`] verifies what serde cannot (the
//! webhook secret decodes, the client id is topic-safe, retry bounds are
//! ordered) so that [`crate::run`] never starts with a half-valid config.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use dockline_protocol::{DeviceId, SiteId};
use serde::Deserialize;

use crate::webhook::SigningKey;

/// The whole collector configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Directory holding `inbox.db` and `api.addr`; created if missing.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Accept batches from devices not listed under `[[devices]]`.
    #[serde(default)]
    pub allow_unknown_devices: bool,
    /// The HTTP API (health and stats).
    #[serde(default)]
    pub api: ApiConfig,
    /// The MQTT broker.
    #[serde(default)]
    pub mqtt: MqttConfig,
    /// Devices allowed to send events.
    #[serde(default)]
    pub devices: Vec<DeviceConfig>,
    /// The ERP: which adapter, where, and the delivery tunables.
    pub erp: ErpConfig,
    /// The gap audit (resend requests for missing sequences).
    #[serde(default)]
    pub gaps: GapsConfig,
    /// `[commands]`: the key that signs commands to devices, and their expiry.
    #[serde(default)]
    pub commands: crate::commands::CommandsConfig,
    /// `[security]`: payload size and per-device rate limits on ingest.
    #[serde(default)]
    pub security: crate::limits::SecurityConfig,
    /// `[inbox]`: SQLite in data_dir (default) or a shared PostgreSQL
    /// database ([`crate::store::InboxConfig`]).
    #[serde(default)]
    pub inbox: crate::store::InboxConfig,
    /// `[log]`: log format and level (SIGHUP applies a new level).
    #[serde(default)]
    pub log: dockline_host::logging::LogConfig,
}

/// Where the collector looks for its config when `-c` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/dockline/collector.toml";

/// `[gaps]`: the gap audit.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GapsConfig {
    /// A hole (sequences missing below a stored one) open this long gets a
    /// resend request on the device's `cmd` topic, milliseconds; unanswered
    /// requests are repeated at growing intervals (2×, 4×, then every 8×).
    #[serde(default = "default_resend_after_ms")]
    pub resend_after_ms: u64,
    /// A hole in an epoch older than the device's newest (the device was
    /// reinstalled and cannot send it any more, or the batch that opened it
    /// was forged) is closed as lost after this many seconds open, and the
    /// lost ranges are logged; `dockline-collector holes close` closes one
    /// at once. 0 never closes one by time.
    #[serde(default = "default_old_epoch_hole_limit_secs")]
    pub old_epoch_hole_limit_secs: u64,
}

impl GapsConfig {
    /// How long a hole may stay open before a resend request.
    pub fn resend_after(&self) -> Duration {
        Duration::from_millis(self.resend_after_ms)
    }

    /// How long a hole in an old epoch may stay open (`None`: forever).
    pub fn old_epoch_hole_limit(&self) -> Option<Duration> {
        (self.old_epoch_hole_limit_secs > 0)
            .then(|| Duration::from_secs(self.old_epoch_hole_limit_secs))
    }
}

impl Default for GapsConfig {
    fn default() -> Self {
        Self {
            resend_after_ms: default_resend_after_ms(),
            old_epoch_hole_limit_secs: default_old_epoch_hole_limit_secs(),
        }
    }
}

fn default_old_epoch_hole_limit_secs() -> u64 {
    3600
}

fn default_resend_after_ms() -> u64 {
    10_000
}

/// `[api]`: the HTTP API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Address to bind; port 0 picks a free port, written to `{data_dir}/api.addr`.
    #[serde(default = "default_api_listen")]
    pub listen: SocketAddr,
    /// `[[api.tokens]]`: bearer tokens and their roles (see [`crate::auth`]).
    /// Without tokens or users the API is open, and only a loopback
    /// `listen` is accepted.
    #[serde(default)]
    pub tokens: Vec<crate::auth::TokenConfig>,
    /// `[[api.users]]`: users who log in with a password (argon2 hash).
    #[serde(default)]
    pub users: Vec<crate::auth::UserConfig>,
    /// How long a login session lasts, seconds (at least 60).
    #[serde(default = "default_session_ttl_secs")]
    pub session_ttl_secs: u64,
}

fn default_session_ttl_secs() -> u64 {
    12 * 3600
}

/// `[mqtt]`: the broker connection.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    /// Broker host name or address.
    #[serde(default = "default_mqtt_host")]
    pub host: String,
    /// Broker port.
    #[serde(default = "default_mqtt_port")]
    pub port: u16,
    /// MQTT client id; only `[A-Za-z0-9_-]`. With a persistent session the
    /// broker keeps queued events for this id while the collector is away.
    #[serde(default = "default_client_id")]
    pub client_id: String,
    /// MQTT keep-alive interval in seconds.
    #[serde(default = "default_keep_alive")]
    pub keep_alive_secs: u64,
    /// `[mqtt.tls]`: TLS to the broker, with the collector's own client
    /// certificate for mutual TLS ([`dockline_host::tls`]). Absent:
    /// plain TCP.
    #[serde(default)]
    pub tls: Option<dockline_host::tls::MqttTls>,
    /// MQTT user name, for brokers that log clients in with a password.
    #[serde(default)]
    pub username: Option<String>,
    /// The MQTT password: inline, `{ file = "…" }` or `{ env = "…" }`;
    /// never logged. Needs `username`.
    #[serde(default)]
    pub password: Option<dockline_host::secret::Secret>,
    /// Share the device topics with the other collectors of this group
    /// (MQTT 5 / Mosquitto shared subscription `$share/{group}/…`): each
    /// batch goes to one of them. Only with a PostgreSQL `[inbox] url`.
    #[serde(default)]
    pub shared_group: Option<String>,
}

/// `[[devices]]`: one known device.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceConfig {
    /// The device id (its topic level).
    pub id: DeviceId,
    /// The site it belongs to (its topic level).
    pub site: SiteId,
}

/// Which ERP adapter delivers events (`[erp] kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
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
#[derive(Clone, Deserialize)]
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
    /// and counted as out of order. See [`crate::lane`]. Milliseconds.
    #[serde(default = "default_lane_park_max_ms")]
    pub lane_park_max_ms: u64,
    /// Most lanes delivering (or waiting on the endpoint) at once; HTTP
    /// requests in flight stay capped by `concurrency`.
    #[serde(default = "default_max_active_lanes")]
    pub max_active_lanes: usize,
    /// Where a booked proof of delivery that names an order sends an
    /// `invoice.ready` follow-up webhook (CloudEvents, signed like the
    /// events; see [`crate::invoice`]). None: no follow-ups.
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
    pub tryton: Option<TrytonConfig>,
    /// `[erp.odoo]`: required when `kind = "odoo"`.
    #[serde(default)]
    pub odoo: Option<crate::erp::odoo::OdooConfig>,
    /// `[erp.epcis]`: required when `kind = "epcis"`.
    #[serde(default)]
    pub epcis: Option<crate::erp::epcis::EpcisOptions>,
    /// `[erp.webhook]`: previous secrets still signed with during a
    /// rotation, and the `Idempotency-Key` quoting (webhook adapter only).
    #[serde(default)]
    pub webhook: crate::webhook::WebhookOptions,
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

/// `[erp.tryton]`: the Tryton database and user the adapter logs in as.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrytonConfig {
    /// The database name (the first path segment of Tryton's URLs).
    pub database: String,
    /// The login of the Tryton user events are booked as. It needs read
    /// access to `stock.shipment.out` and the rights of a stock user to
    /// press its buttons (and to create `ir.attachment` for proof of
    /// delivery).
    pub user: String,
    /// That user's password (better set by `DOCKLINE_ERP__TRYTON__PASSWORD`
    /// than written in the file, or `{ file = "…" }` / `{ env = "…" }`).
    #[serde(deserialize_with = "dockline_host::secret::deserialize")]
    pub password: String,
    /// When Tryton cannot reserve the stock for a picked shipment
    /// (`assign_try` leaves it `waiting`), force the reservation
    /// (`assign_force`) instead of parking the pick until stock arrives.
    /// The goods were physically picked, but forcing can book negative
    /// stock, so it is off by default.
    #[serde(default)]
    pub assign_force: bool,
    /// Language of Tryton's messages (the login's language code).
    #[serde(default = "default_tryton_language")]
    pub language: String,
}

impl std::fmt::Debug for TrytonConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the password.
        f.debug_struct("TrytonConfig")
            .field("database", &self.database)
            .field("user", &self.user)
            .field("assign_force", &self.assign_force)
            .field("language", &self.language)
            .finish_non_exhaustive()
    }
}

fn default_tryton_language() -> String {
    "en".into()
}

/// A config value that parsed but cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("config key `{key}` {problem}")]
pub struct ConfigCheckError {
    /// The dotted key path.
    pub key: &'static str,
    /// What is wrong and how to fix it.
    pub problem: String,
}

impl Config {
    /// Checks the rules serde cannot express.
    pub fn check(&self) -> Result<(), ConfigCheckError> {
        if let Err(problem) = self.log.check() {
            return Err(ConfigCheckError {
                key: "log.level",
                problem,
            });
        }
        let cid = &self.mqtt.client_id;
        let cid_ok = !cid.is_empty()
            && cid.len() <= 64
            && cid
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !cid_ok {
            return Err(ConfigCheckError {
                key: "mqtt.client_id",
                problem: format!(
                    "is {cid:?}; use 1 to 64 characters from A-Z a-z 0-9 _ - (some brokers reject others)"
                ),
            });
        }
        if self.mqtt.keep_alive_secs < 5 {
            return Err(ConfigCheckError {
                key: "mqtt.keep_alive_secs",
                problem: format!("is {}; use at least 5", self.mqtt.keep_alive_secs),
            });
        }
        if let Some(tls) = &self.mqtt.tls {
            tls.client_config().map_err(|e| ConfigCheckError {
                key: "mqtt.tls",
                problem: e.to_string(),
            })?;
        }
        self.inbox.check(self.erp.timeout_ms)?;
        if let Some(group) = &self.mqtt.shared_group {
            let ok = !group.is_empty()
                && group.len() <= 64
                && group
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            if !ok {
                return Err(ConfigCheckError {
                    key: "mqtt.shared_group",
                    problem: format!("is {group:?}; use 1 to 64 characters from A-Z a-z 0-9 _ -"),
                });
            }
            if self.inbox.url.is_none() {
                return Err(ConfigCheckError {
                    key: "mqtt.shared_group",
                    problem: "is set but [inbox] url is not: collectors sharing the device topics must share one PostgreSQL inbox; set inbox.url = \"postgres://…\" or remove shared_group".into(),
                });
            }
        }
        if self.mqtt.password.is_some() && self.mqtt.username.is_none() {
            return Err(ConfigCheckError {
                key: "mqtt.password",
                problem: "is set but mqtt.username is not; set the user name too".into(),
            });
        }
        if let Some(ca) = &self.erp.ca_file {
            crate::erp::root_certificates(ca).map_err(|e| ConfigCheckError {
                key: "erp.ca_file",
                problem: e.to_string(),
            })?;
        }
        if !(self.erp.url.starts_with("http://") || self.erp.url.starts_with("https://")) {
            return Err(ConfigCheckError {
                key: "erp.url",
                problem: format!("is {:?}; expected an http:// or https:// URL", self.erp.url),
            });
        }
        self.erp.check_adapter()?;
        if self.erp.retry_min_ms == 0 || self.erp.retry_min_ms > self.erp.retry_max_ms {
            return Err(ConfigCheckError {
                key: "erp.retry_min_ms",
                problem: format!(
                    "is {} with retry_max_ms {}; need 0 < retry_min_ms <= retry_max_ms",
                    self.erp.retry_min_ms, self.erp.retry_max_ms
                ),
            });
        }
        if self.erp.concurrency == 0 {
            return Err(ConfigCheckError {
                key: "erp.concurrency",
                problem: "is 0; use at least 1".into(),
            });
        }
        for (key, value) in [
            ("erp.max_attempts", u64::from(self.erp.max_attempts)),
            ("erp.breaker_failures", u64::from(self.erp.breaker_failures)),
            ("erp.breaker_open_ms", self.erp.breaker_open_ms),
            ("erp.halt_recheck_ms", self.erp.halt_recheck_ms),
            ("erp.pause_max_ms", self.erp.pause_max_ms),
        ] {
            if value == 0 {
                return Err(ConfigCheckError {
                    key,
                    problem: "is 0; use at least 1".into(),
                });
            }
        }
        if self.gaps.resend_after_ms < 100 {
            return Err(ConfigCheckError {
                key: "gaps.resend_after_ms",
                problem: format!(
                    "is {}; use at least 100 (an agent needs time to send what is in flight)",
                    self.gaps.resend_after_ms
                ),
            });
        }
        if let Err((key, problem)) = self.security.check() {
            return Err(ConfigCheckError { key, problem });
        }
        if self.erp.timeout_ms == 0 {
            return Err(ConfigCheckError {
                key: "erp.timeout_ms",
                problem: "is 0; use the longest time the ERP may take to answer".into(),
            });
        }
        Ok(())
    }

    /// Path of the inbox database.
    pub fn inbox_path(&self) -> PathBuf {
        self.data_dir.join("inbox.db")
    }

    /// Path of the file the bound API address is written to.
    pub fn api_addr_path(&self) -> PathBuf {
        self.data_dir.join("api.addr")
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
            webhook: crate::webhook::WebhookOptions::default(),
        }
    }

    /// A Tryton server at `url` (its base URL) with the defaults for the
    /// delivery tunables.
    pub fn tryton(url: impl Into<String>, tryton: TrytonConfig) -> Self {
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

    /// Checks the keys the chosen adapter needs.
    fn check_adapter(&self) -> Result<(), ConfigCheckError> {
        match self.kind {
            ErpKind::Webhook => {
                SigningKey::from_secret(&self.secret).map_err(|e| ConfigCheckError {
                    key: "erp.secret",
                    problem: e.to_string(),
                })?;
                crate::webhook::WebhookSigner::new(&self.secret, &self.webhook).map_err(|e| {
                    ConfigCheckError {
                        key: "erp.webhook.previous_secrets",
                        problem: e.to_string(),
                    }
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

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            listen: default_api_listen(),
            tokens: Vec::new(),
            users: Vec::new(),
            session_ttl_secs: default_session_ttl_secs(),
        }
    }
}

impl Default for MqttConfig {
    fn default() -> Self {
        Self {
            host: default_mqtt_host(),
            port: default_mqtt_port(),
            client_id: default_client_id(),
            keep_alive_secs: default_keep_alive(),
            tls: None,
            username: None,
            password: None,
            shared_group: None,
        }
    }
}

fn default_lane_park_max_ms() -> u64 {
    10_000
}
fn default_max_active_lanes() -> usize {
    256
}
fn default_data_dir() -> PathBuf {
    PathBuf::from("./collector-data")
}
fn default_api_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}
fn default_mqtt_host() -> String {
    "127.0.0.1".into()
}
fn default_mqtt_port() -> u16 {
    1883
}
fn default_client_id() -> String {
    "dockline-collector".into()
}
fn default_keep_alive() -> u64 {
    15
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

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    fn parse(text: &str) -> Result<Config, toml::de::Error> {
        toml::from_str(text)
    }

    #[test]
    fn defaults_fill_everything_but_erp() {
        let cfg = parse(&format!(
            "[erp]\nurl = \"http://127.0.0.1:9000/events\"\nsecret = \"{SECRET}\"\n"
        ))
        .expect("minimal config parses");
        assert_eq!(cfg.mqtt.port, 1883);
        assert_eq!(cfg.mqtt.client_id, "dockline-collector");
        assert_eq!(cfg.erp.concurrency, 4);
        assert!(!cfg.allow_unknown_devices);
        cfg.check().expect("defaults are valid");
    }

    #[test]
    fn debug_output_never_shows_the_secrets() {
        let cfg = parse(&format!(
            "[erp]\nurl = \"http://x\"\nsecret = \"{SECRET}\"\ninvoice_webhook_url = \"http://y\"\ninvoice_webhook_secret = \"whsec_c2Vjb25kLXNlY3JldC1zZWNvbmQtc2VjcmV0\"\n"
        ))
        .expect("parses");
        let text = format!("{cfg:?}");
        assert!(!text.contains("MfKQ9r8G"), "{text}");
        assert!(!text.contains("c2Vjb25k"), "{text}");
        assert!(text.contains("secret: \"(set)\""), "{text}");
    }

    #[test]
    fn the_adapter_defaults_to_webhook_and_unknown_kinds_are_named() {
        let cfg = parse(&format!(
            "[erp]\nurl = \"http://x\"\nsecret = \"{SECRET}\"\n"
        ))
        .expect("parses");
        assert_eq!(cfg.erp.kind, ErpKind::Webhook);
        let cfg = parse(&format!(
            "[erp]\nkind = \"webhook\"\nurl = \"http://x\"\nsecret = \"{SECRET}\"\n"
        ))
        .expect("parses");
        assert_eq!(cfg.erp.kind, ErpKind::Webhook);
        let err = parse("[erp]\nkind = \"sap\"\nurl = \"http://x\"\n").expect_err("unknown kind");
        assert!(err.to_string().contains("webhook"), "{err}");
        let cfg = parse(
            "[erp]\nkind = \"tryton\"\nurl = \"http://x:8000/\"\n[erp.tryton]\ndatabase = \"logi\"\nuser = \"dockline\"\npassword = \"pw\"\n",
        )
        .expect("parses");
        assert_eq!(cfg.erp.kind, ErpKind::Tryton);
        cfg.check().expect("a Tryton site needs no webhook secret");
        let t = cfg.erp.tryton.as_ref().expect("tryton table");
        assert_eq!((t.language.as_str(), t.assign_force), ("en", false));
        assert!(
            !format!("{t:?}").contains("pw"),
            "the password is never printed"
        );
        let cfg = parse("[erp]\nkind = \"tryton\"\nurl = \"http://x:8000/\"\n").expect("parses");
        assert_eq!(cfg.check().expect_err("no [erp.tryton]").key, "erp.tryton");
        let cfg = parse("[erp]\nurl = \"http://x\"\n").expect("parses");
        let err = cfg.check().expect_err("a webhook needs its secret");
        assert_eq!(err.key, "erp.secret");
    }

    #[test]
    fn example_file_parses_and_passes_the_checks() {
        let cfg = parse(include_str!("../collector.example.toml")).expect("example parses");
        cfg.check().expect("example is valid");
        let defaults = ErpConfig::new(cfg.erp.url.clone(), cfg.erp.secret.clone());
        assert_eq!(
            (
                cfg.erp.max_attempts,
                cfg.erp.pause_max_ms,
                cfg.erp.breaker_failures
            ),
            (
                defaults.max_attempts,
                defaults.pause_max_ms,
                defaults.breaker_failures
            ),
            "the example shows the defaults"
        );
        assert_eq!(
            (cfg.erp.breaker_open_ms, cfg.erp.halt_recheck_ms),
            (defaults.breaker_open_ms, defaults.halt_recheck_ms)
        );
        assert_eq!(cfg.security, crate::limits::SecurityConfig::default());
        assert_eq!(cfg.commands.ttl_secs, 300);
    }

    #[test]
    fn environment_overrides_apply() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("collector.toml");
        std::fs::write(
            &path,
            format!("[erp]\nurl = \"http://127.0.0.1:9000/events\"\nsecret = \"{SECRET}\"\n"),
        )
        .expect("write");
        let env = [
            ("DOCKLINE_MQTT__PORT", "1884"),
            ("DOCKLINE_ERP__CONCURRENCY", "8"),
            ("DOCKLINE_ALLOW_UNKNOWN_DEVICES", "true"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()));
        let cfg: Config = dockline_host::config::load(Some(&path), env).expect("loads");
        assert_eq!(cfg.mqtt.port, 1884);
        assert_eq!(cfg.erp.concurrency, 8);
        assert!(cfg.allow_unknown_devices);
    }

    #[test]
    fn typos_and_bad_values_are_reported() {
        let err = parse(&format!(
            "[erp]\nurl = \"http://x\"\nsecret = \"{SECRET}\"\nretry_mni_ms = 3\n"
        ))
        .expect_err("unknown key");
        assert!(err.to_string().contains("retry_mni_ms"), "{err}");

        let mut cfg = parse(&format!(
            "[erp]\nurl = \"http://x\"\nsecret = \"{SECRET}\"\n[mqtt]\nclient_id = \"a b\"\n"
        ))
        .expect("parses");
        let err = cfg.check().expect_err("bad client id");
        assert_eq!(err.key, "mqtt.client_id");
        cfg.mqtt.client_id = "ok".into();
        cfg.erp.secret = "nope".into();
        let err = cfg.check().expect_err("bad secret");
        assert_eq!(err.key, "erp.secret");
        assert!(err.to_string().contains("whsec_"), "{err}");
    }
}
