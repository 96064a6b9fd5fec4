//! Signing the commands the collector sends to devices (`[commands]`).
//!
//! Every command (today: the gap audit's resend request) gets an expiry
//! `ttl_secs` from now and, when a signing key is configured, an Ed25519
//! signature over its exact CBOR bytes (see [`dockline_protocol::command`]).
//! Agents hold the matching public key (`[commands] verify_key` in
//! `agent.toml`) and refuse unsigned, tampered, expired or misaddressed
//! commands.
//!
//! # Keys
//!
//! The signing key is the 32-byte Ed25519 seed, standard base64, from
//! `signing_key_file` (a file holding only that line; keep it `0600`) or
//! `signing_key` (better set by `DOCKLINE_COMMANDS_SIGNING_KEY` than written
//! in the config). The public key is 32 bytes, base64, and is what every
//! agent is configured with. `dockline-collector keygen --out DIR` writes
//! both ([`generate`]). Neither the key nor its file's contents are ever
//! logged or printed by `Debug`.
//!
//! Without a key the collector still sends commands, with their expiry but
//! unsigned, and warns at start: agents refuse them unless they are set to
//! `allow_unsigned_commands = true` (development only), and fall back on
//! their own ack timeout to resend.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use dockline_protocol::Command;
use dockline_protocol::command::SIGNATURE_BYTES;
use ed25519_dalek::{Signer, SigningKey};
use rand::RngCore;
use serde::{Deserialize, Serialize};

/// Name of the signing key file [`generate`] writes.
pub const SIGNING_KEY_FILE: &str = "command-signing.key";
/// Name of the public key file [`generate`] writes.
pub const VERIFY_KEY_FILE: &str = "command-verify.pub";

/// `[commands]`: how commands to devices are signed.
#[derive(Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CommandsConfig {
    /// File holding the base64 Ed25519 signing key (from `dockline-collector
    /// keygen`).
    #[serde(default)]
    pub signing_key_file: Option<PathBuf>,
    /// The base64 signing key itself; set it by the environment
    /// (`DOCKLINE_COMMANDS_SIGNING_KEY`), not in the file. Takes precedence
    /// over `signing_key_file`.
    #[serde(default)]
    pub signing_key: Option<String>,
    /// A command expires this many seconds after it is sent. Long enough
    /// for a broker to hand it to a device that reconnects soon, short
    /// enough that a recorded command is soon useless; the gap audit asks
    /// again for a hole still open.
    #[serde(default = "default_ttl_secs")]
    pub ttl_secs: u64,
}

impl fmt::Debug for CommandsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the key.
        f.debug_struct("CommandsConfig")
            .field("signing_key_file", &self.signing_key_file)
            .field("signing_key", &self.signing_key.as_ref().map(|_| "(set)"))
            .field("ttl_secs", &self.ttl_secs)
            .finish()
    }
}

impl Default for CommandsConfig {
    fn default() -> Self {
        Self {
            signing_key_file: None,
            signing_key: None,
            ttl_secs: default_ttl_secs(),
        }
    }
}

fn default_ttl_secs() -> u64 {
    300
}

/// The signing key could not be loaded or written.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The key file could not be read.
    #[error(
        "cannot read the command signing key {path}: {source}; check [commands] signing_key_file (make one with `dockline-collector keygen --out DIR`)"
    )]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The key is not 32 bytes of base64.
    #[error(
        "the command signing key from {origin} is not a base64 Ed25519 key of 32 bytes ({problem}); use the {SIGNING_KEY_FILE} file `dockline-collector keygen` writes"
    )]
    Format {
        /// Where it came from (a file name or the config key), never the key.
        origin: String,
        /// What is wrong.
        problem: String,
    },
    /// `ttl_secs` is zero.
    #[error("[commands] ttl_secs is 0; commands would expire as they are sent, use at least 1")]
    Ttl,
    /// A key file could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// `keygen` would overwrite a key.
    #[error(
        "{0} exists; move it away first (devices configured with its public key would refuse the new one's commands)"
    )]
    Exists(PathBuf),
}

/// The short variable names for secrets: `DOCKLINE_COMMANDS_SIGNING_KEY`
/// means `DOCKLINE_COMMANDS__SIGNING_KEY` (`[commands] signing_key`).
/// Without this the overlay would read it as a top-level key and refuse it.
pub fn with_env_aliases(
    vars: impl IntoIterator<Item = (String, String)>,
) -> impl Iterator<Item = (String, String)> {
    vars.into_iter().map(|(k, v)| {
        if k == "DOCKLINE_COMMANDS_SIGNING_KEY" {
            ("DOCKLINE_COMMANDS__SIGNING_KEY".to_string(), v)
        } else {
            (k, v)
        }
    })
}

/// Signs commands with the configured key (or leaves them unsigned).
#[derive(Clone)]
pub struct CommandSigner {
    key: Option<SigningKey>,
    ttl: Duration,
}

impl fmt::Debug for CommandSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CommandSigner")
            .field("signs", &self.key.is_some())
            .field("ttl", &self.ttl)
            .finish()
    }
}

fn parse_key(text: &str, origin: &str) -> Result<SigningKey, KeyError> {
    let format = |problem: String| KeyError::Format {
        origin: origin.to_string(),
        problem,
    };
    let bytes = STANDARD
        .decode(text.trim())
        .map_err(|e| format(format!("not base64: {e}")))?;
    let seed: [u8; 32] = bytes
        .as_slice()
        .try_into()
        .map_err(|_| format(format!("{} bytes", bytes.len())))?;
    Ok(SigningKey::from_bytes(&seed))
}

impl CommandSigner {
    /// Loads the key named by `config` (none configured: unsigned commands).
    pub fn from_config(config: &CommandsConfig) -> Result<Self, KeyError> {
        if config.ttl_secs == 0 {
            return Err(KeyError::Ttl);
        }
        let key = match (&config.signing_key, &config.signing_key_file) {
            (Some(text), _) => Some(parse_key(text, "[commands] signing_key")?),
            (None, Some(path)) => {
                let text = std::fs::read_to_string(path).map_err(|source| KeyError::Read {
                    path: path.clone(),
                    source,
                })?;
                Some(parse_key(&text, &path.display().to_string())?)
            }
            (None, None) => None,
        };
        Ok(Self {
            key,
            ttl: Duration::from_secs(config.ttl_secs),
        })
    }

    /// A signer with `key` (tests and tools).
    pub fn new(key: Option<SigningKey>, ttl: Duration) -> Self {
        Self { key, ttl }
    }

    /// Whether commands are signed.
    pub fn signs(&self) -> bool {
        self.key.is_some()
    }

    /// The public key agents must be configured with (base64), if signing.
    pub fn verify_key_base64(&self) -> Option<String> {
        self.key
            .as_ref()
            .map(|k| STANDARD.encode(k.verifying_key().as_bytes()))
    }

    /// `ack` with its signature (`sg`, see [`dockline_protocol::ack`]) when
    /// a key is configured, else unchanged. The same key signs commands and
    /// acks; the protocol's contexts keep the two apart.
    pub fn sign_ack(
        &self,
        ack: &dockline_protocol::Ack,
    ) -> Result<dockline_protocol::Ack, dockline_protocol::EncodeError> {
        match &self.key {
            Some(key) => {
                ack.seal(|message| -> [u8; SIGNATURE_BYTES] { key.sign(message).to_bytes() })
            }
            None => Ok(ack.clone()),
        }
    }

    /// A media ack with its signature when a key is configured (the media
    /// twin of [`Self::sign_ack`], see [`dockline_protocol::media`]).
    pub fn sign_media_ack(
        &self,
        ack: &dockline_protocol::MediaAck,
    ) -> Result<dockline_protocol::MediaAck, dockline_protocol::EncodeError> {
        match &self.key {
            Some(key) => {
                ack.seal(|message| -> [u8; SIGNATURE_BYTES] { key.sign(message).to_bytes() })
            }
            None => Ok(ack.clone()),
        }
    }

    /// The command to publish for `inner`: its expiry set to `now_ms` plus
    /// the ttl, then sealed with the signature when a key is configured.
    pub fn prepare(
        &self,
        inner: Command,
        now_ms: i64,
    ) -> Result<Command, dockline_protocol::EncodeError> {
        let ttl_ms = i64::try_from(self.ttl.as_millis()).unwrap_or(i64::MAX);
        let inner = Command {
            expires_ms: Some(now_ms.saturating_add(ttl_ms)),
            signed: None,
            // Drawn for every command, so the agent can refuse a replay of it
            // within its expiry.
            nonce: Some(rand::random()),
            ..inner
        };
        match &self.key {
            Some(key) => Command::seal(&inner, |message| -> [u8; SIGNATURE_BYTES] {
                key.sign(message).to_bytes()
            }),
            None => Ok(inner),
        }
    }
}

/// Writes a new key pair into `dir`: [`SIGNING_KEY_FILE`] (mode 0600) and
/// [`VERIFY_KEY_FILE`]; returns the public key (base64). Refuses to
/// overwrite either file.
pub fn generate(dir: &Path) -> Result<String, KeyError> {
    let key_path = dir.join(SIGNING_KEY_FILE);
    let pub_path = dir.join(VERIFY_KEY_FILE);
    for p in [&key_path, &pub_path] {
        if p.exists() {
            return Err(KeyError::Exists(p.clone()));
        }
    }
    std::fs::create_dir_all(dir).map_err(|source| KeyError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut seed = [0u8; 32];
    rand::rng().fill_bytes(&mut seed);
    let key = SigningKey::from_bytes(&seed);
    seed.fill(0);
    let public = STANDARD.encode(key.verifying_key().as_bytes());
    write_private(&key_path, &format!("{}\n", STANDARD.encode(key.as_bytes())))?;
    std::fs::write(&pub_path, format!("{public}\n")).map_err(|source| KeyError::Write {
        path: pub_path,
        source,
    })?;
    Ok(public)
}

/// Creates `path` readable by its owner only, then writes `text`.
fn write_private(path: &Path, text: &str) -> Result<(), KeyError> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let write = |source| KeyError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut f = options.open(path).map_err(write)?;
    f.write_all(text.as_bytes()).map_err(write)?;
    f.sync_all().map_err(write)
}

#[cfg(test)]
mod tests {
    use super::*;
    use dockline_protocol::{DeviceId, PROTOCOL_VERSION, Resend, codec};
    use ed25519_dalek::{Signature, VerifyingKey};

    fn resend() -> Command {
        Command {
            v: PROTOCOL_VERSION,
            device: DeviceId::new("hh-1").expect("id"),
            resend: Some(Resend {
                epoch: 1,
                ranges: vec![(2, 3)],
            }),
            expires_ms: None,
            signed: None,
            nonce: None,
        }
    }

    #[test]
    fn keygen_writes_a_pair_the_signer_loads_and_agents_can_verify() {
        let dir = tempfile::tempdir().expect("tempdir");
        let public = generate(dir.path()).expect("keygen");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(SIGNING_KEY_FILE))
                .expect("meta")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(matches!(generate(dir.path()), Err(KeyError::Exists(_))));
        let config = CommandsConfig {
            signing_key_file: Some(dir.path().join(SIGNING_KEY_FILE)),
            ..CommandsConfig::default()
        };
        let signer = CommandSigner::from_config(&config).expect("loads");
        assert_eq!(signer.verify_key_base64().as_deref(), Some(public.as_str()));
        let sent = signer.prepare(resend(), 1_000).expect("signs");
        let sent: Command = codec::decode(&codec::encode(&sent).expect("enc")).expect("dec");
        let raw: [u8; 32] = STANDARD
            .decode(&public)
            .expect("b64")
            .try_into()
            .expect("32");
        let vk = VerifyingKey::from_bytes(&raw).expect("key");
        let inner = sent
            .open(&resend().device, 2_000, |m, s| {
                vk.verify_strict(m, &Signature::from_bytes(s)).is_ok()
            })
            .expect("verifies");
        assert_eq!(inner.expires_ms, Some(1_000 + 300_000));
        assert_eq!(inner.resend, resend().resend);
        assert!(!format!("{config:?} {signer:?}").contains(&public));
    }

    #[test]
    fn bad_keys_are_named_without_printing_them_and_no_key_means_unsigned() {
        let config = CommandsConfig {
            signing_key: Some("c2VjcmV0LXRvby1zaG9ydA==".into()),
            ..CommandsConfig::default()
        };
        let err = CommandSigner::from_config(&config).expect_err("short key");
        let text = err.to_string();
        assert!(
            text.contains("(16 bytes)") && text.contains("keygen"),
            "{text}"
        );
        assert!(!text.contains("c2VjcmV0"), "{text}");
        let missing = CommandsConfig {
            signing_key_file: Some("/nonexistent/dockline.key".into()),
            ..CommandsConfig::default()
        };
        assert!(matches!(
            CommandSigner::from_config(&missing),
            Err(KeyError::Read { .. })
        ));
        let unsigned = CommandSigner::from_config(&CommandsConfig::default()).expect("ok");
        assert!(!unsigned.signs());
        let sent = unsigned.prepare(resend(), 5).expect("prepares");
        assert!(sent.signed.is_none());
        assert_eq!(sent.expires_ms, Some(300_005));
    }
}
