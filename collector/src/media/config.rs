//! `[media]`: how the collector takes, keeps and links proof-of-delivery
//! media. Every key has a default; [`MediaConfig::check`] refuses values
//! that cannot work, naming the key and the fix.

use std::path::PathBuf;

use dockline_protocol::media::MAX_MEDIA_BYTES;
use serde::{Deserialize, Serialize};

use crate::config_error::ConfigCheckError;
use crate::media::link::{MIN_KEY_BYTES, MediaLinks};

/// `[media]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MediaConfig {
    /// Largest medium taken (bytes); larger ones are refused (`Refused` to
    /// the agent). At most the protocol's 16 MiB.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u64,
    /// How long an event waits for its media (ms from when delivery first
    /// found one missing) before it is delivered without them and flagged.
    #[serde(default = "default_wait_ms")]
    pub wait_ms: u64,
    /// Stored media are deleted this many days after the ERP attached them.
    #[serde(default = "default_retain_days")]
    pub retain_days: u64,
    /// The collector's URL as the ERP reaches it, for signed links
    /// (default: `http://` and the `[api] listen` address).
    #[serde(default)]
    pub public_url: Option<String>,
    /// File of at least 32 random bytes signing media links; without it no
    /// links are made (the webhook sends media inline only).
    #[serde(default)]
    pub link_key_file: Option<PathBuf>,
    /// How long a signed link opens its medium (seconds).
    #[serde(default = "default_link_ttl_secs")]
    pub link_ttl_secs: u64,
    /// Media up to this size go inline (base64) to the webhook; 0: never.
    #[serde(default)]
    pub inline_max_bytes: u64,
    /// Media received at once from one device; chunks of more are refused
    /// (counted) until one completes.
    #[serde(default = "default_per_device")]
    pub max_receiving_per_device: usize,
    /// Media received at once in total.
    #[serde(default = "default_total")]
    pub max_receiving: usize,
    /// How often the retention sweep runs (seconds).
    #[serde(default = "default_sweep_secs")]
    pub sweep_every_secs: u64,
}

impl Default for MediaConfig {
    fn default() -> Self {
        Self {
            max_bytes: default_max_bytes(),
            wait_ms: default_wait_ms(),
            retain_days: default_retain_days(),
            public_url: None,
            link_key_file: None,
            link_ttl_secs: default_link_ttl_secs(),
            inline_max_bytes: 0,
            max_receiving_per_device: default_per_device(),
            max_receiving: default_total(),
            sweep_every_secs: default_sweep_secs(),
        }
    }
}

fn default_max_bytes() -> u64 {
    MAX_MEDIA_BYTES
}
fn default_wait_ms() -> u64 {
    6 * 3600 * 1000
}
fn default_retain_days() -> u64 {
    30
}
fn default_link_ttl_secs() -> u64 {
    7 * 86_400
}
fn default_per_device() -> usize {
    4
}
fn default_total() -> usize {
    256
}
fn default_sweep_secs() -> u64 {
    3600
}

/// A `[media]` value that cannot work, or a link key that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("config key `{key}` {problem}")]
pub struct MediaConfigError {
    /// The dotted key.
    pub key: &'static str,
    /// What is wrong and the fix.
    pub problem: String,
}

impl From<MediaConfigError> for ConfigCheckError {
    fn from(e: MediaConfigError) -> Self {
        ConfigCheckError {
            key: e.key,
            problem: e.problem,
        }
    }
}

impl MediaConfig {
    /// Checks what serde cannot (the key file is read too).
    pub fn check(&self) -> Result<(), MediaConfigError> {
        let err = |key, problem: String| Err(MediaConfigError { key, problem });
        if self.max_bytes == 0 || self.max_bytes > MAX_MEDIA_BYTES {
            return err(
                "media.max_bytes",
                format!(
                    "is {}; use 1 to {MAX_MEDIA_BYTES} (the protocol's cap)",
                    self.max_bytes
                ),
            );
        }
        if self.wait_ms == 0 {
            return err(
                "media.wait_ms",
                "is 0; events would never wait for their media, use e.g. 21600000 (6 h)".into(),
            );
        }
        if self.retain_days == 0 {
            return err(
                "media.retain_days",
                "is 0; media would be deleted as the ERP attaches them, use at least 1".into(),
            );
        }
        if self.link_ttl_secs < 60 {
            return err(
                "media.link_ttl_secs",
                format!(
                    "is {}; the ERP could not fetch a link in time, use at least 60",
                    self.link_ttl_secs
                ),
            );
        }
        if self.inline_max_bytes > self.max_bytes {
            return err(
                "media.inline_max_bytes",
                format!(
                    "is {}, above media.max_bytes ({}); lower it",
                    self.inline_max_bytes, self.max_bytes
                ),
            );
        }
        if self.max_receiving_per_device == 0 || self.max_receiving < self.max_receiving_per_device
        {
            return err(
                "media.max_receiving",
                format!(
                    "is {} with max_receiving_per_device {}; use per device at least 1 and a total at least as large",
                    self.max_receiving, self.max_receiving_per_device
                ),
            );
        }
        if self.sweep_every_secs == 0 {
            return err(
                "media.sweep_every_secs",
                "is 0; use at least 1 (3600 is plenty)".into(),
            );
        }
        if let Some(url) = &self.public_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return err(
                "media.public_url",
                format!(
                    "is {url:?}; use the http:// or https:// URL the ERP reaches this collector at"
                ),
            );
        }
        self.links().map(|_| ())
    }

    /// This config with `public_url` defaulted to the API's listen address.
    pub fn with_listen(mut self, listen: std::net::SocketAddr) -> Self {
        if self.public_url.is_none() {
            self.public_url = Some(format!("http://{listen}"));
        }
        self
    }

    /// The link signer, when `link_key_file` is set.
    pub fn links(&self) -> Result<Option<MediaLinks>, MediaConfigError> {
        let Some(path) = &self.link_key_file else {
            return Ok(None);
        };
        let key = std::fs::read(path).map_err(|e| MediaConfigError {
            key: "media.link_key_file",
            problem: format!(
                "names {}, which cannot be read ({e}); write {MIN_KEY_BYTES} or more random bytes there (e.g. `head -c 32 /dev/urandom > FILE`)",
                path.display()
            ),
        })?;
        let base = self
            .public_url
            .clone()
            .unwrap_or_else(|| "http://127.0.0.1:8080".into());
        MediaLinks::new(&key, base.trim_end_matches('/'), self.link_ttl_secs)
            .map(Some)
            .map_err(|e| MediaConfigError {
                key: "media.link_key_file",
                problem: format!(
                    "names {}: {e} (e.g. `head -c 32 /dev/urandom > FILE`)",
                    path.display()
                ),
            })
    }

    /// The retention in ms.
    pub fn retain_ms(&self) -> i64 {
        i64::try_from(self.retain_days.saturating_mul(86_400_000)).unwrap_or(i64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_contract_and_pass() {
        let c: MediaConfig = toml::from_str("").expect("empty table");
        assert_eq!(c.max_bytes, 16 << 20);
        assert_eq!(c.wait_ms, 6 * 3600 * 1000);
        assert_eq!(
            (c.retain_days, c.link_ttl_secs, c.inline_max_bytes),
            (30, 604_800, 0)
        );
        c.check().expect("defaults pass");
        assert!(c.links().expect("no key").is_none());
        let addr: std::net::SocketAddr = "10.0.0.5:8080".parse().expect("addr");
        assert_eq!(
            c.with_listen(addr).public_url.as_deref(),
            Some("http://10.0.0.5:8080")
        );
    }

    #[test]
    fn bad_values_name_their_key_and_the_fix() {
        let bad = |text: &str| {
            toml::from_str::<MediaConfig>(text)
                .expect("parses")
                .check()
                .expect_err("refused")
        };
        let e = bad("max_bytes = 17000000");
        assert_eq!(e.key, "media.max_bytes");
        assert!(e.problem.contains("16777216"), "{e}");
        assert_eq!(bad("wait_ms = 0").key, "media.wait_ms");
        assert_eq!(bad("retain_days = 0").key, "media.retain_days");
        assert_eq!(bad("link_ttl_secs = 5").key, "media.link_ttl_secs");
        assert_eq!(bad("public_url = \"ftp://x\"").key, "media.public_url");
        assert_eq!(
            bad("inline_max_bytes = 99\nmax_bytes = 10").key,
            "media.inline_max_bytes"
        );
        let e = bad("link_key_file = \"/nonexistent/media.key\"");
        assert_eq!(e.key, "media.link_key_file");
        assert!(e.problem.contains("/dev/urandom"), "{e}");
        let dir = tempfile::tempdir().expect("dir");
        let short = dir.path().join("short.key");
        std::fs::write(&short, b"too short").expect("write");
        let e = bad(&format!(
            "link_key_file = {:?}",
            short.display().to_string()
        ));
        assert!(e.problem.contains("at least 32"), "{e}");
        assert!(
            toml::from_str::<MediaConfig>("max_byte = 1").is_err(),
            "typos refused"
        );
    }

    #[test]
    fn a_key_file_makes_links_to_the_public_url() {
        let dir = tempfile::tempdir().expect("dir");
        let key = dir.path().join("media.key");
        std::fs::write(&key, [7u8; 32]).expect("write");
        let c = MediaConfig {
            link_key_file: Some(key),
            public_url: Some("https://collector.example/".into()),
            ..MediaConfig::default()
        };
        let links = c.links().expect("ok").expect("links");
        let h = dockline_protocol::MediaHash::of(b"x");
        assert!(
            links
                .url(&h, 1000)
                .starts_with(&format!("https://collector.example/v1/media/{h}?exp=")),
            "{}",
            links.url(&h, 1000)
        );
    }
}
