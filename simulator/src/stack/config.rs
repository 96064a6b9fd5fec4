//! The children's configs, built from the real config types of the agent and
//! the collector and written with `toml`: a key the agent or the collector
//! renames is a compile error here, not a child that refuses its file.
//!
//! # Invariants
//!
//! - Every value not set here is the config type's own default: a builder
//!   deserializes the type from its required keys only (so the defaults come
//!   from the type's serde attributes, never from a copy of them), then sets
//!   typed fields.
//! - What [`write`] writes reads back as the same config (unit-tested for
//!   every builder), every key spelled out: the file in a work directory is
//!   the effective config of that child.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use dockline_agent::config::DeviceConfig;
use dockline_agent::devices::{DeviceKind, Protocol};
use dockline_agent::stations::config::{StationConfig, StationKind};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::StackError;

/// An agent's config (`agent.toml`).
pub type AgentConfig = dockline_agent::Config;
/// A collector's config (`collector.toml`).
pub type CollectorConfig = dockline_collector::Config;

/// Where the MQTT broker of the system under test accepts connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttAddr {
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
}

impl MqttAddr {
    /// MQTT client options for `client_id` to this broker (keep-alive 10 s).
    pub fn options(&self, client_id: &str) -> rumqttc::MqttOptions {
        let mut o = rumqttc::MqttOptions::new(client_id, self.host.clone(), self.port);
        o.set_keep_alive(std::time::Duration::from_secs(10));
        o
    }
}

impl MqttAddr {
    /// The address, when the host is an IP address.
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        let ip: std::net::IpAddr = self.host.parse().ok()?;
        Some(SocketAddr::new(ip, self.port))
    }
}

impl From<SocketAddr> for MqttAddr {
    fn from(addr: SocketAddr) -> Self {
        Self {
            host: addr.ip().to_string(),
            port: addr.port(),
        }
    }
}

impl std::fmt::Display for MqttAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "mqtt://{}:{}", self.host, self.port)
    }
}

/// `T` with its own defaults everywhere but `required`.
fn with_defaults<T: DeserializeOwned>(what: &str, required: toml::Table) -> Result<T, StackError> {
    toml::Value::Table(required)
        .try_into()
        .map_err(|e| StackError::Config {
            what: what.to_string(),
            problem: e.to_string(),
        })
}

fn table<const N: usize>(pairs: [(&str, toml::Value); N]) -> toml::Table {
    pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

fn text(s: impl Into<String>) -> toml::Value {
    toml::Value::String(s.into())
}

/// Agent `device` of `site` with its data in `data_dir`, talking to `mqtt`:
/// its API on a free loopback port without a token (the simulator and the
/// tests are the only clients), keep-alive 5 s; everything else the
/// agent's defaults.
pub fn agent(
    site: &str,
    device: &str,
    data_dir: &Path,
    mqtt: &MqttAddr,
) -> Result<AgentConfig, StackError> {
    let mut c: AgentConfig = with_defaults(
        &format!("agent {device}"),
        table([("site", text(site)), ("device", text(device))]),
    )?;
    c.data_dir = data_dir.into();
    c.api.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    c.api.require_token = false;
    c.mqtt.host = mqtt.host.clone();
    c.mqtt.port = mqtt.port;
    c.mqtt.keep_alive_secs = 5;
    Ok(c)
}

/// A collector with its data in `data_dir`, talking to `mqtt` (keep-alive
/// 5 s) and posting to the webhook `erp_url` signed with `secret`, its API
/// on a free loopback port; no devices yet; everything else the
/// collector's defaults.
pub fn collector(
    data_dir: &Path,
    mqtt: &MqttAddr,
    erp_url: &str,
    secret: &str,
) -> Result<CollectorConfig, StackError> {
    let erp = table([("url", text(erp_url))]);
    let mut c: CollectorConfig =
        with_defaults("collector", table([("erp", toml::Value::Table(erp))]))?;
    c.data_dir = data_dir.into();
    c.api.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    c.mqtt.host = mqtt.host.clone();
    c.mqtt.port = mqtt.port;
    c.mqtt.keep_alive_secs = 5;
    c.erp.secret = secret.to_string();
    Ok(c)
}

/// The agent settings of the simulator's own runs (demo, chaos, fleet,
/// bench): a 3 s ack timeout, so a lost batch is resent within a run.
pub fn simulated_agent(c: &mut AgentConfig) {
    c.uplink.ack_timeout_ms = 3_000;
}

/// The collector settings of the simulator's own runs: short ERP timeouts
/// and retries, and a halted endpoint (the mock ERP's expired session, a
/// 401) rechecked every 500 ms instead of the default minute, which would
/// stall a run of a minute on every expiry.
pub fn simulated_collector(c: &mut CollectorConfig) {
    c.erp.timeout_ms = 3_000;
    c.erp.retry_min_ms = 100;
    c.erp.retry_max_ms = 2_000;
    c.erp.halt_recheck_ms = 500;
}

/// The file name of the collector's media link key in its key folder.
pub const MEDIA_LINK_KEY_FILE: &str = "media-link.key";

/// Media the simulated ERP receives inline rather than by link: signatures
/// (a few KB) inline, photos by their signed link, so both paths run.
pub const SIMULATED_INLINE_MAX_BYTES: u64 = 16 * 1024;

/// The collector's `[media]` for the simulator's runs: a fresh 32-byte link
/// key in `keys`, links to `http://127.0.0.1:{port}` on a port picked now
/// and kept (its API listens there, so a restarted collector still serves
/// the links it signed before), signatures inline.
pub fn simulated_collector_media(c: &mut CollectorConfig, keys: &Path) -> Result<(), StackError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| StackError::Io { path, source }
    };
    std::fs::create_dir_all(keys).map_err(io(keys))?;
    let key_file = keys.join(MEDIA_LINK_KEY_FILE);
    let mut key = [0u8; 32];
    rand::Rng::fill(&mut rand::rng(), &mut key);
    std::fs::write(&key_file, key).map_err(io(&key_file))?;
    // A port the kernel hands out now; the listener is dropped so the
    // collector can bind it (a race with another process is possible but
    // unlikely on loopback, and its start would then fail loudly).
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(io(Path::new("127.0.0.1:0")))?;
    c.api.listen = free;
    c.media.public_url = Some(format!("http://{free}"));
    c.media.link_key_file = Some(key_file);
    c.media.inline_max_bytes = SIMULATED_INLINE_MAX_BYTES;
    Ok(())
}

/// `[[devices]]` of a collector: `ids` of `site`.
pub fn known_devices(
    site: &str,
    ids: &[String],
) -> Result<Vec<dockline_collector::ingest::registry::DeviceConfig>, StackError> {
    ids.iter()
        .map(|id| {
            with_defaults(
                &format!("collector device {id}"),
                table([("id", text(id.as_str())), ("site", text(site))]),
            )
        })
        .collect()
}

/// A serial device of an agent (`[[devices]]`) at `path`, with the agent's
/// defaults for everything else.
pub fn serial_device(
    name: &str,
    kind: DeviceKind,
    protocol: Protocol,
    path: &Path,
) -> Result<DeviceConfig, StackError> {
    let mut d: DeviceConfig = with_defaults(
        &format!("device {name}"),
        table([
            ("name", text(name)),
            (
                "kind",
                toml::Value::try_from(kind).map_err(|e| bad(name, e))?,
            ),
            (
                "protocol",
                toml::Value::try_from(protocol).map_err(|e| bad(name, e))?,
            ),
            ("path", text(path.display().to_string())),
        ]),
    )?;
    d.path = PathBuf::from(path);
    Ok(d)
}

/// A station (`[[stations]]`) of `kind` fed by `devices`, with the agent's
/// defaults for everything else.
pub fn station(
    name: &str,
    kind: StationKind,
    devices: &[&str],
) -> Result<StationConfig, StackError> {
    let devices = devices.iter().map(|d| text(*d)).collect();
    with_defaults(
        &format!("station {name}"),
        table([
            ("name", text(name)),
            (
                "kind",
                toml::Value::try_from(kind).map_err(|e| bad(name, e))?,
            ),
            ("devices", toml::Value::Array(devices)),
        ]),
    )
}

fn bad(what: &str, e: toml::ser::Error) -> StackError {
    StackError::Config {
        what: what.to_string(),
        problem: e.to_string(),
    }
}

/// `config` as TOML.
pub fn to_toml(config: &impl Serialize) -> Result<String, StackError> {
    toml::to_string(config).map_err(|e| bad("a config", e))
}

/// Writes `config` to `path` as TOML.
pub fn write(path: &Path, config: &impl Serialize) -> Result<(), StackError> {
    let text = to_toml(config)?;
    std::fs::write(path, text).map_err(|source| StackError::Io {
        path: path.into(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reads_back<T: Serialize + DeserializeOwned>(config: &T) -> String {
        let written = to_toml(config).expect("serializes");
        let again: T = toml::from_str(&written).unwrap_or_else(|e| panic!("{e}\n{written}"));
        assert_eq!(to_toml(&again).expect("serializes"), written);
        written
    }

    fn mqtt() -> MqttAddr {
        MqttAddr::from(SocketAddr::from(([127, 0, 0, 1], 1883)))
    }

    #[test]
    fn the_simulated_collector_signs_media_links_to_its_own_fixed_port() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut c = collector(
            &dir.path().join("c"),
            &mqtt(),
            "http://127.0.0.1:9/events",
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        )
        .expect("collector");
        simulated_collector_media(&mut c, &dir.path().join("keys")).expect("media");
        assert_ne!(
            c.api.listen.port(),
            0,
            "a restart must find the same address"
        );
        let links = c.media.links().expect("valid key").expect("links made");
        let hash = dockline_protocol::media::MediaHash::of(b"photo");
        let url = links.url(&hash, 1_000);
        assert!(
            url.starts_with(&format!("http://{}/v1/media/{hash}?", c.api.listen)),
            "{url}"
        );
        assert_eq!(c.media.inline_max_bytes, SIMULATED_INLINE_MAX_BYTES);
        let text = reads_back(&c);
        assert!(text.contains("link_key_file"), "{text}");
    }

    #[test]
    fn an_agent_config_reads_back_with_its_devices_and_stations() {
        let mut c = agent("dc-north", "hh-01", Path::new("/tmp/a \"b\""), &mqtt()).expect("agent");
        c.devices.push(
            serial_device(
                "scanner-0",
                DeviceKind::Scanner,
                Protocol::Scan,
                Path::new("/tmp/dev/scanner-0"),
            )
            .expect("device"),
        );
        let mut door = station("door-0", StationKind::DockDoor, &["scanner-0"]).expect("station");
        door.vehicle = Some("TRUCK-1".into());
        c.stations.push(door);
        c.commands.verify_key = dockline_agent::config::KeyList::One(
            "mPmi1VBn7XEz/qGDvF23/yBXRGmFg7Gd8tsnB3hh4HY=".into(),
        );
        c.check().expect("a valid agent config");
        let text = reads_back(&c);
        let t: toml::Table = text.parse().expect("toml");
        assert_eq!(t["data_dir"].as_str(), Some("/tmp/a \"b\""));
        assert_eq!(t["mqtt"]["port"].as_integer(), Some(1883));
        assert_eq!(t["api"]["require_token"].as_bool(), Some(false));
        assert_eq!(t["stations"][0]["vehicle"].as_str(), Some("TRUCK-1"));
        assert_eq!(
            c.devices[0].reconnect_max_ms, 5_000,
            "the agent's own default"
        );
    }

    #[test]
    fn a_collector_config_reads_back_with_its_secret_and_devices() {
        let mut c = collector(
            Path::new("/tmp/c"),
            &mqtt(),
            "http://127.0.0.1:9/events",
            "whsec_AAAA",
        )
        .expect("collector");
        c.devices = known_devices("dc-north", &["hh-01".into(), "van-01".into()]).expect("ids");
        let text = reads_back(&c);
        let t: toml::Table = text.parse().expect("toml");
        assert_eq!(t["devices"].as_array().map(Vec::len), Some(2));
        assert_eq!(t["erp"]["secret"].as_str(), Some("whsec_AAAA"));
        assert_eq!(t["erp"]["url"].as_str(), Some("http://127.0.0.1:9/events"));
    }

    #[test]
    fn a_bad_device_id_is_an_error_not_a_panic() {
        let err = agent("s", "no/slash", Path::new("/tmp"), &mqtt()).expect_err("refused");
        assert!(err.to_string().contains("agent no/slash"), "{err}");
    }
}
