//! The collector's configuration: `collector.toml`, then `DOCKLINE_*`
//! environment overrides (see [`dockline_host::config::load`]), then this
//! typed struct with defaults.
//!
//! Invariants: every table denies unknown keys, so a typo is reported instead
//! of silently ignored; [`Config::check`] verifies what serde cannot (the
//! webhook secret decodes, the client id is topic-safe, retry bounds are
//! ordered) so that [`crate::run`] never starts with a half-valid config.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use crate::config_error::ConfigCheckError;
use crate::erp::ErpConfig;
use crate::http::ApiConfig;
use crate::ingest::gaps::GapsConfig;
use crate::ingest::mqtt::MqttConfig;
use crate::ingest::registry::DeviceConfig;

/// The whole collector configuration.
#[derive(Debug, Clone, Deserialize, Serialize)]
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
    pub commands: crate::ingest::commands::CommandsConfig,
    /// `[security]`: payload size and per-device rate limits on ingest.
    #[serde(default)]
    pub security: crate::ingest::limits::SecurityConfig,
    /// `[inbox]`: SQLite in data_dir (default) or a shared PostgreSQL
    /// database ([`crate::inbox::InboxConfig`]).
    #[serde(default)]
    pub inbox: crate::inbox::InboxConfig,
    /// `[log]`: log format and level (SIGHUP applies a new level).
    #[serde(default)]
    pub log: dockline_host::logging::LogConfig,
    /// `[media]`: proof-of-delivery media: size cap, how long events wait
    /// for them, retention, signed links ([`crate::media::config`]).
    #[serde(default)]
    pub media: crate::media::config::MediaConfig,
}

/// Where the collector looks for its config when `-c` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/dockline/collector.toml";

impl Config {
    /// Checks the rules serde cannot express: each section checks its own
    /// keys; the rules that span sections are here.
    pub fn check(&self) -> Result<(), ConfigCheckError> {
        if let Err(problem) = self.log.check() {
            return Err(ConfigCheckError {
                key: "log.level",
                problem,
            });
        }
        self.mqtt.check()?;
        self.inbox.check(self.erp.timeout_ms)?;
        if self.mqtt.shared_group.is_some() && self.inbox.url.is_none() {
            return Err(ConfigCheckError {
                key: "mqtt.shared_group",
                problem: "is set but [inbox] url is not: collectors sharing the device topics must share one PostgreSQL inbox; set inbox.url = \"postgres://…\" or remove shared_group".into(),
            });
        }
        self.erp.check()?;
        self.gaps.check()?;
        if let Err((key, problem)) = self.security.check() {
            return Err(ConfigCheckError { key, problem });
        }
        self.media.check()?;
        Ok(())
    }

    /// [`Config::check`], then the secrets the config names that are not
    /// secret ([`crate::secret_hygiene`]): what a start (or a reload)
    /// refuses.
    pub fn check_for_start(&self) -> Result<(), ConfigCheckError> {
        self.check()?;
        crate::secret_hygiene::check(&self.commands, &self.erp)
    }

    /// The effective config as a TOML table: every key with the value the
    /// collector runs with, defaults included (secrets too: never print it
    /// as is). A reload compares two of these, so a key written out with
    /// its default value changes nothing.
    pub fn effective_table(&self) -> Result<toml::Table, String> {
        toml::Table::try_from(self).map_err(|e| format!("cannot print the effective config: {e}"))
    }

    /// The effective config, every key with its value (defaults included),
    /// as TOML with every secret `<redacted>`: the keys that name one
    /// (`secret`, `password…`, `token…`), the command signing key, and the
    /// password inside the PostgreSQL URL.
    pub fn effective_toml(&self) -> Result<String, String> {
        let mut table = dockline_host::config::effective_table(self)?;
        if let Some(toml::Value::Table(commands)) = table.get_mut("commands")
            && let Some(key) = commands.get_mut("signing_key")
        {
            *key = toml::Value::String("<redacted>".into());
        }
        if let Some(toml::Value::Table(inbox)) = table.get_mut("inbox")
            && let Some(toml::Value::String(url)) = inbox.get_mut("url")
        {
            *url = crate::inbox::postgres::redact_url(url);
        }
        Ok(dockline_host::config::redacted_toml(&table))
    }

    /// `[media]` with `public_url` defaulted to the API's listen address.
    pub fn media(&self) -> crate::media::config::MediaConfig {
        self.media.clone().with_listen(self.api.listen)
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

fn default_data_dir() -> PathBuf {
    PathBuf::from("./collector-data")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::erp::ErpKind;

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
        assert_eq!(
            cfg.security,
            crate::ingest::limits::SecurityConfig::default()
        );
        assert_eq!(cfg.commands.ttl_secs, 300);
    }

    #[test]
    fn the_effective_config_shows_defaults_and_hides_every_secret() {
        let cfg = parse(&format!(
            "[erp]\nurl = \"http://127.0.0.1:9000/events\"\nsecret = \"{SECRET}\"\n\
             [commands]\nsigning_key = \"c2lnbmluZy1rZXktc2lnbmluZy1rZXktc2lnbmluZy0=\"\n\
             [inbox]\nurl = \"postgres://dockline:hunter22@db:5432/inbox\"\n\
             [[api.users]]\nname = \"ops\"\nrole = \"operator\"\npassword_hash = \"$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaA\"\n"
        ))
        .expect("parses");
        let text = cfg.effective_toml().expect("prints");
        for secret in ["MfKQ9r8G", "c2lnbmluZy1r", "hunter22", "aGFzaA"] {
            assert!(!text.contains(secret), "{secret} shown:\n{text}");
        }
        // Defaults the file never mentions are there, with their values.
        for line in [
            "concurrency = 4",
            "port = 1883",
            "client_id = \"dockline-collector\"",
            "resend_after_ms = 10000",
            "ttl_secs = 300",
            "url = \"postgres://dockline:***@db:5432/inbox\"",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in:\n{text}");
        }
        // Serialising a config and reading it back gives the same config: a
        // typed config written as TOML starts a collector as it says.
        let written = toml::to_string(&cfg).expect("serialises");
        let again: Config = toml::from_str(&written).expect("reads back");
        assert_eq!(
            toml::Table::try_from(&again).expect("table"),
            toml::Table::try_from(&cfg).expect("table")
        );
    }

    #[test]
    fn a_reload_sees_only_values_that_changed_not_keys_written_out() {
        let base =
            format!("[erp]\nurl = \"http://127.0.0.1:9000/events\"\nsecret = \"{SECRET}\"\n");
        let running = parse(&base)
            .expect("parses")
            .effective_table()
            .expect("table");
        let same = parse(&format!(
            "{base}[gaps]\nresend_after_ms = 10000\n[mqtt]\nport = 1883\n"
        ))
        .expect("parses")
        .effective_table()
        .expect("table");
        assert!(crate::reload::restart_needed(&running, &same).is_empty());
        let moved = parse(&format!("{base}[mqtt]\nport = 1884\n"))
            .expect("parses")
            .effective_table()
            .expect("table");
        assert_eq!(
            crate::reload::restart_needed(&running, &moved),
            ["mqtt.port"]
        );
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
