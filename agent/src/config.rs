//! Agent configuration: `agent.toml`, then `DOCKLINE_*` overrides, then these
//! typed defaults. Unknown keys are errors, so a typo never silently falls back
//! to a default.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use dockline_protocol::{DeviceId, SiteId, TimeSource};
use serde::Deserialize;

use crate::devices::{DeviceKind, Protocol};

/// Everything one agent needs to run.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The site (warehouse, depot) this device belongs to.
    pub site: SiteId,
    /// This device's id, unique in the fleet.
    pub device: DeviceId,
    /// Folder for the outbox database and the `api.addr` file.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Where capture times come from on this device.
    #[serde(default = "default_clock")]
    pub clock: TimeSource,
    /// Local HTTP API.
    #[serde(default)]
    pub api: ApiConfig,
    /// MQTT connection.
    #[serde(default)]
    pub mqtt: MqttConfig,
    /// Upload behaviour.
    #[serde(default)]
    pub uplink: UplinkConfig,
    /// Outbox limits.
    #[serde(default)]
    pub outbox: crate::outbox::OutboxConfig,
    /// `[media]`: proof-of-delivery images taken from the handheld.
    #[serde(default)]
    pub media: crate::outbox::media::MediaConfig,
    /// Serial devices (`[[devices]]` tables); none by default.
    #[serde(default)]
    pub devices: Vec<DeviceConfig>,
    /// Stations (`[[stations]]` tables) whose rules turn the devices'
    /// readings into business events; none by default.
    #[serde(default)]
    pub stations: Vec<crate::stations::StationConfig>,
    /// Which commands from the collector are obeyed (`[commands]`).
    #[serde(default)]
    pub commands: CommandsConfig,
    /// `[log]`: log format and level (SIGHUP applies a new level).
    #[serde(default)]
    pub log: dockline_host::logging::LogConfig,
}

/// Where the agent looks for its config when `-c` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/dockline/agent.toml";

/// `[commands]`: how commands on the device's `cmd` topic are checked.
///
/// ```toml
/// [commands]
/// verify_key = "base64 public key from `dockline-collector keygen`"
/// ```
///
/// The default (no key, unsigned not allowed) refuses every command: the
/// collector's resend requests are then ignored and the agent relies on its
/// own ack timeout, which loses nothing but fills holes later. Configure
/// the collector's public key for production; `allow_unsigned_commands =
/// true` is for development against a collector without a key.
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct CommandsConfig {
    /// The collector's Ed25519 public key(s), base64 (32 bytes). A list
    /// accepts any of them, for rotating the collector's key: add the new
    /// one, switch the collector, then remove the old one.
    #[serde(default, skip_serializing_if = "KeyList::is_empty")]
    pub verify_key: KeyList,
    /// Obey commands without a signature (development only; device id and
    /// expiry are still checked).
    #[serde(default)]
    pub allow_unsigned_commands: bool,
}

/// One key or a list of keys.
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize)]
#[serde(untagged)]
pub enum KeyList {
    /// None configured.
    #[default]
    None,
    /// `verify_key = "…"`.
    One(String),
    /// `verify_key = ["…", "…"]`.
    Many(Vec<String>),
}

impl KeyList {
    /// No key configured (TOML has no way to write that, so it is left out).
    pub fn is_empty(&self) -> bool {
        self.keys().is_empty()
    }

    /// The keys as written.
    pub fn keys(&self) -> Vec<&str> {
        match self {
            KeyList::None => Vec::new(),
            KeyList::One(k) => vec![k.as_str()],
            KeyList::Many(ks) => ks.iter().map(String::as_str).collect(),
        }
    }
}

/// A secret from the config (the API token, the MQTT password): never shown
/// by `Debug`; written inline, or `{ file = "…" }` / `{ env = "…" }`
/// ([`dockline_host::secret`]).
pub use dockline_host::secret::Secret;

/// The short variable names for secrets: `DOCKLINE_API_TOKEN` means
/// `DOCKLINE_API__TOKEN` (`[api] token`). Without this the overlay would
/// read it as a top-level key and refuse it.
pub fn with_env_aliases(
    vars: impl IntoIterator<Item = (String, String)>,
) -> impl Iterator<Item = (String, String)> {
    vars.into_iter().map(|(k, v)| {
        if k == "DOCKLINE_API_TOKEN" {
            ("DOCKLINE_API__TOKEN".to_string(), v)
        } else {
            (k, v)
        }
    })
}

/// One device: a scanner, scale, GNSS receiver or peripheral bridge on a
/// serial port or USB-CDC (`/dev/ttyUSB0`, `/dev/ttyACM0`, or better a
/// stable `/dev/serial/by-id/…` link), or a NAU7802 load cell on an I2C bus
/// (`/dev/i2c-1`, with a `[devices.load_cell]` table).
///
/// ```toml
/// [[devices]]
/// name = "pack-scale"
/// kind = "scale"
/// protocol = "mtsics"
/// path = "/dev/serial/by-id/usb-Mettler_Toledo-if00"
/// baud = 9600
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceConfig {
    /// A name unique on this agent, shown in the status.
    pub name: String,
    /// What the device is: scanner, scale, gps or bridge.
    pub kind: DeviceKind,
    /// The protocol: scan (scanner); mtsics, toledo, sma, nci or nau7802
    /// (scale); nmea (gps); link (bridge).
    pub protocol: Protocol,
    /// The device path (a serial port, or the I2C bus for nau7802); a
    /// symlink is followed at every (re)open.
    pub path: PathBuf,
    /// Line speed; defaults to the protocol's usual one
    /// ([`Protocol::default_baud`]). Ignored by USB-CDC devices. 8N1 always:
    /// 7E1 scales are still read correctly, their parity bit is masked off.
    #[serde(default)]
    pub baud: Option<u32>,
    /// Toledo continuous only: the indicator sends a checksum byte after CR.
    #[serde(default)]
    pub toledo_checksum: bool,
    /// Scanners only: refuse scans without an AIM identifier (set when the
    /// scanner is configured to send them; a scan without one is then debris
    /// or a misconfigured scanner). Off: such scans are plain data.
    #[serde(default)]
    pub require_aim: bool,
    /// MT-SICS only: ask the scale for its weight (`SI`) every this many
    /// milliseconds, for scales in request/response mode. Unset: the scale
    /// streams (`SIR`, or its continuous mode) and is only sent operator
    /// actions (tare, zero).
    #[serde(default)]
    pub poll_ms: Option<u64>,
    /// wedge only: the scanner's keymap (`us`, `de`), the character it sends
    /// for GS (`gs_substitute`), and its suffix key (`enter`, `tab`, `none`).
    #[serde(default)]
    pub wedge: Option<crate::devices::wedge::WedgeOptions>,
    /// Longest wait between attempts to reopen a missing device.
    #[serde(default = "default_device_reconnect_max")]
    pub reconnect_max_ms: u64,
    /// nau7802 only (and required there): the chip's settings and the
    /// calibration.
    #[serde(default)]
    pub load_cell: Option<crate::devices::LoadCellConfig>,
}

impl DeviceConfig {
    /// The configured or the protocol's default baud rate.
    pub fn baud(&self) -> u32 {
        self.baud.unwrap_or_else(|| self.protocol.default_baud())
    }
}

/// The local HTTP API a handheld app posts events to.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Listen address; loopback only by default. Port 0 picks a free port, and
    /// the bound address is written to `{data_dir}/api.addr`.
    #[serde(default = "default_api_listen")]
    pub listen: SocketAddr,
    /// When set, every request must carry `Authorization: Bearer <token>`
    /// (401 otherwise). Better set by `DOCKLINE_API_TOKEN` than written in
    /// the file; never logged. Required when `listen` is not loopback.
    #[serde(default)]
    pub token: Option<Secret>,
    /// Require a token from clients other than the agent's own app pages
    /// (default true). Without `token`, the agent generates one at first
    /// start in `{data_dir}/api.token` (mode 0600; `dockline-agent token`
    /// prints it). `false` opens the API to every local process: for
    /// development only.
    #[serde(default = "default_true")]
    pub require_token: bool,
    /// Host names (or addresses) besides loopback ones that requests may
    /// address in `Host` (a non-loopback `listen` address is allowed too).
    /// Anything else is refused with 421, which stops DNS rebinding.
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    /// Web origins (`https://app.example`) of handheld apps served from
    /// elsewhere that may call this API from a browser: they get CORS
    /// answers and must send the token. Requests from any other foreign
    /// `Origin` are refused with 403.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// A connection that has not sent a request's headers within this
    /// time is closed (slow-header floods).
    #[serde(default = "default_header_timeout")]
    pub header_timeout_ms: u64,
    /// Most connections served at once; more are answered 503 and closed,
    /// so a local flood cannot starve the app.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
}

fn default_true() -> bool {
    true
}
fn default_header_timeout() -> u64 {
    5_000
}
fn default_max_connections() -> usize {
    64
}

/// The MQTT broker connection.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    /// Broker host name or address.
    #[serde(default = "default_host")]
    pub host: String,
    /// Broker port.
    #[serde(default = "default_port")]
    pub port: u16,
    /// MQTT keep-alive in seconds.
    #[serde(default = "default_keep_alive")]
    pub keep_alive_secs: u64,
    /// `[mqtt.tls]`: TLS to the broker, with this device's client
    /// certificate for mutual TLS (recommended; see
    /// [`dockline_host::tls`]). Absent: plain TCP.
    #[serde(default)]
    pub tls: Option<dockline_host::tls::MqttTls>,
    /// MQTT user name, for brokers that log devices in with a password
    /// instead of (or besides) a client certificate; use the device id, so
    /// the broker's per-device ACL (`%u`) matches the topics.
    #[serde(default)]
    pub username: Option<String>,
    /// The MQTT password: inline, `{ file = "…" }` or `{ env = "…" }`
    /// (or `DOCKLINE_MQTT__PASSWORD`); never logged. Needs `username`.
    #[serde(default)]
    pub password: Option<Secret>,
}

impl MqttConfig {
    /// The broker connection's shared keys ([`dockline_host::mqtt`]).
    pub fn broker(&self) -> dockline_host::mqtt::Broker<'_> {
        dockline_host::mqtt::Broker {
            host: &self.host,
            port: self.port,
            keep_alive_secs: self.keep_alive_secs,
            tls: self.tls.as_ref(),
            username: self.username.as_deref(),
            password: self.password.as_ref(),
        }
    }
}

/// How batches are uploaded.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct UplinkConfig {
    /// Most events in one batch.
    #[serde(default = "default_batch_max")]
    pub batch_max_events: usize,
    /// Batches published but not yet acknowledged by the collector.
    #[serde(default = "default_max_inflight")]
    pub max_inflight_batches: usize,
    /// How long to wait for the collector's application ack before resending
    /// everything unacknowledged. Shorter than the keep-alive, so a silently
    /// dead link is noticed by the ack, not only by MQTT.
    #[serde(default = "default_ack_timeout")]
    pub ack_timeout_ms: u64,
    /// First reconnect delay (full jitter below it).
    #[serde(default = "default_reconnect_min")]
    pub reconnect_min_ms: u64,
    /// Longest reconnect delay.
    #[serde(default = "default_reconnect_max")]
    pub reconnect_max_ms: u64,
    /// Seconds between heartbeats on the status topic.
    #[serde(default = "default_heartbeat")]
    pub heartbeat_secs: u64,
    /// Bytes of media data per chunk on the `media` topic (64 KiB; at most
    /// the protocol's 256 KiB).
    #[serde(default = "default_media_chunk")]
    pub media_chunk_bytes: usize,
    /// Media bytes per second this device may send (0: no limit): events
    /// never wait for media, media share what is left of this.
    #[serde(default)]
    pub media_bytes_per_sec: u64,
    /// The link costs per byte (cellular): media are held until an
    /// unmetered window (`media_window_utc`) or until the link is declared
    /// unmetered (`POST /v1/link`). Events are sent as always.
    #[serde(default)]
    pub metered: bool,
    /// On a metered link, the UTC hours `[from, to)` in which media go
    /// anyway (e.g. `[22, 6]`: overnight); none: only on an unmetered link.
    #[serde(default)]
    pub media_window_utc: Option<[u8; 2]>,
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("./agent-data")
}
fn default_clock() -> TimeSource {
    TimeSource::DeviceClock
}
fn default_api_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7878))
}
fn default_host() -> String {
    "127.0.0.1".into()
}
fn default_port() -> u16 {
    1883
}
fn default_keep_alive() -> u64 {
    30
}
fn default_batch_max() -> usize {
    256
}
fn default_max_inflight() -> usize {
    4
}
fn default_ack_timeout() -> u64 {
    10_000
}
fn default_reconnect_min() -> u64 {
    200
}
fn default_reconnect_max() -> u64 {
    30_000
}
fn default_media_chunk() -> usize {
    dockline_protocol::media::DEFAULT_CHUNK_BYTES
}
fn default_heartbeat() -> u64 {
    30
}
fn default_device_reconnect_max() -> u64 {
    5_000
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            listen: default_api_listen(),
            token: None,
            require_token: true,
            allowed_hosts: Vec::new(),
            allowed_origins: Vec::new(),
            header_timeout_ms: default_header_timeout(),
            max_connections: default_max_connections(),
        }
    }
}

impl Default for MqttConfig {
    fn default() -> Self {
        Self {
            host: default_host(),
            port: default_port(),
            keep_alive_secs: default_keep_alive(),
            tls: None,
            username: None,
            password: None,
        }
    }
}

impl Default for UplinkConfig {
    fn default() -> Self {
        Self {
            batch_max_events: default_batch_max(),
            max_inflight_batches: default_max_inflight(),
            ack_timeout_ms: default_ack_timeout(),
            reconnect_min_ms: default_reconnect_min(),
            reconnect_max_ms: default_reconnect_max(),
            heartbeat_secs: default_heartbeat(),
            media_chunk_bytes: default_media_chunk(),
            media_bytes_per_sec: 0,
            metered: false,
            media_window_utc: None,
        }
    }
}

impl Config {
    /// Checks relations between values that serde cannot express.
    pub fn check(&self) -> Result<(), String> {
        let u = &self.uplink;
        if u.batch_max_events == 0
            || u.batch_max_events > dockline_protocol::batch::MAX_BATCH_EVENTS
        {
            return Err(format!(
                "uplink.batch_max_events is {}, expected 1 to {}",
                u.batch_max_events,
                dockline_protocol::batch::MAX_BATCH_EVENTS
            ));
        }
        if u.max_inflight_batches == 0 {
            return Err("uplink.max_inflight_batches must be at least 1".into());
        }
        if u.reconnect_min_ms == 0 || u.reconnect_min_ms > u.reconnect_max_ms {
            return Err(
                "uplink.reconnect_min_ms must be > 0 and <= uplink.reconnect_max_ms".into(),
            );
        }
        if u.media_chunk_bytes == 0
            || u.media_chunk_bytes > dockline_protocol::media::MAX_CHUNK_BYTES
        {
            return Err(format!(
                "uplink.media_chunk_bytes is {}, expected 1 to {}",
                u.media_chunk_bytes,
                dockline_protocol::media::MAX_CHUNK_BYTES
            ));
        }
        if let Some([from, to]) = u.media_window_utc
            && (from > 23 || to > 24 || from == to)
        {
            return Err(format!(
                "uplink.media_window_utc is [{from}, {to}]; expected two different UTC hours 0 to 24, e.g. [22, 6]"
            ));
        }
        self.media.check()?;
        if self.mqtt.keep_alive_secs < 5 {
            return Err("mqtt.keep_alive_secs must be at least 5".into());
        }
        if let Some(tls) = &self.mqtt.tls {
            tls.client_config().map_err(|e| e.to_string())?;
        }
        if self.mqtt.password.is_some() && self.mqtt.username.is_none() {
            return Err(
                "mqtt.password is set but mqtt.username is not; set the user name (the device id) too"
                    .into(),
            );
        }
        self.log.check()?;
        self.check_devices()?;
        self.check_security()?;
        crate::stations::config::check(&self.stations, &self.devices)
    }

    fn check_security(&self) -> Result<(), String> {
        if let Some(token) = &self.api.token
            && token.expose().len() < 16
        {
            return Err(
                "api.token is shorter than 16 characters; use a long random one (e.g. `openssl rand -base64 32`)"
                    .into(),
            );
        }
        if !self.api.listen.ip().is_loopback() && self.api.token.is_none() {
            return Err(format!(
                "api.listen is {}, reachable from the network, but api.token is not set; set a token (DOCKLINE_API_TOKEN) or listen on 127.0.0.1",
                self.api.listen
            ));
        }
        if self.api.max_connections == 0 || self.api.header_timeout_ms == 0 {
            return Err(
                "api.max_connections and api.header_timeout_ms must be above 0 (defaults 64 and 5000)"
                    .into(),
            );
        }
        for origin in &self.api.allowed_origins {
            if !(origin.starts_with("http://") || origin.starts_with("https://"))
                || origin.trim_end_matches('/').matches('/').count() != 2
            {
                return Err(format!(
                    "api.allowed_origins has {origin:?}; an origin is scheme://host[:port] with no path, e.g. \"https://app.example\""
                ));
            }
        }
        crate::uplink::command::CommandVerifier::from_config(&self.commands).map(|_| ())
    }

    fn check_devices(&self) -> Result<(), String> {
        for (i, d) in self.devices.iter().enumerate() {
            if d.name.trim().is_empty() {
                return Err(format!(
                    "devices[{i}] has an empty name; give every device a name"
                ));
            }
            if d.name.len() > 64 {
                return Err(format!(
                    "device name {:?} is longer than 64 bytes; heartbeats carry it, shorten it",
                    d.name
                ));
            }
            if self.devices.iter().skip(i + 1).any(|o| o.name == d.name) {
                return Err(format!(
                    "two devices are named {:?}; device names must be unique",
                    d.name
                ));
            }
            if d.protocol.kind() != d.kind {
                return Err(format!(
                    "device {:?} is a {} but protocol {} is for a {}; fix kind or protocol",
                    d.name,
                    d.kind,
                    d.protocol,
                    d.protocol.kind()
                ));
            }
            if d.baud == Some(0) {
                return Err(format!(
                    "device {:?} has baud = 0; remove it for the default ({}) or set the scale's rate",
                    d.name,
                    d.protocol.default_baud()
                ));
            }
            let i2c = d.protocol == Protocol::Nau7802;
            match (&d.load_cell, i2c) {
                (Some(load_cell), true) => load_cell.check(&d.name)?,
                (None, true) => {
                    return Err(format!(
                        "device {:?} uses protocol nau7802 and needs a [devices.load_cell] table with at least counts_per_kg; see agent.example.toml",
                        d.name
                    ));
                }
                (Some(_), false) => {
                    return Err(format!(
                        "device {:?} has a load_cell table but protocol {}; it only applies to nau7802, remove it",
                        d.name, d.protocol
                    ));
                }
                (None, false) => {}
            }
            if i2c && (d.baud.is_some() || d.toledo_checksum) {
                return Err(format!(
                    "device {:?} is an I2C load cell (nau7802); baud and toledo_checksum do not apply, remove them",
                    d.name
                ));
            }
            if d.reconnect_max_ms == 0 {
                return Err(format!(
                    "device {:?} has reconnect_max_ms = 0; use at least 1 (default 5000)",
                    d.name
                ));
            }
        }
        Ok(())
    }

    /// The ack timeout as a duration.
    pub fn ack_timeout(&self) -> Duration {
        Duration::from_millis(self.uplink.ack_timeout_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(devices: &str) -> Result<Config, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let file = dir.path().join("agent.toml");
        let text = format!("site = \"dc\"\ndevice = \"gw\"\n{devices}");
        std::fs::write(&file, text).map_err(|e| e.to_string())?;
        let config: Config =
            dockline_host::config::load(Some(&file), Vec::<(String, String)>::new())
                .map_err(|e| e.to_string())?;
        config.check().map(|()| config)
    }

    #[test]
    fn devices_default_baud_and_kind_checks() {
        let c = config(
            "[[devices]]\nname = \"s\"\nkind = \"scale\"\nprotocol = \"toledo\"\npath = \"/dev/ttyUSB0\"\n",
        )
        .expect("valid");
        assert_eq!(c.devices[0].baud(), 9600);
        assert!(!c.devices[0].toledo_checksum);
        let err = config(
            "[[devices]]\nname = \"g\"\nkind = \"scale\"\nprotocol = \"nmea\"\npath = \"/dev/ttyACM0\"\n",
        )
        .expect_err("nmea is not a scale protocol");
        assert!(err.contains("fix kind or protocol"), "{err}");
        let twice =
            "[[devices]]\nname = \"a\"\nkind = \"gps\"\nprotocol = \"nmea\"\npath = \"/dev/x\"\n";
        let err = config(&format!("{twice}{twice}")).expect_err("duplicate");
        assert!(err.contains("unique"), "{err}");
    }

    #[test]
    fn nau7802_needs_its_load_cell_table() {
        let device = "[[devices]]\nname = \"s\"\nkind = \"scale\"\nprotocol = \"nau7802\"\npath = \"/dev/i2c-1\"\n";
        let c = config(&format!(
            "{device}[devices.load_cell]\naddress = 0x2A\ngain = 64\nzero_counts = -1200\ncounts_per_kg = 21500.5\n"
        ))
        .expect("valid");
        let load_cell = c.devices[0].load_cell.as_ref().expect("table");
        assert_eq!(
            (load_cell.address, load_cell.gain, load_cell.rate_sps),
            (0x2A, 64, 10)
        );
        for (text, why) in [
            (device.to_owned(), "needs a [devices.load_cell] table"),
            (
                format!("{device}[devices.load_cell]\ncounts_per_kg = 1.0\ngain = 100\n"),
                "not a NAU7802 gain",
            ),
            (
                format!("{device}baud = 9600\n[devices.load_cell]\ncounts_per_kg = 1.0\n"),
                "do not apply",
            ),
            (
                "[[devices]]\nname = \"m\"\nkind = \"scale\"\nprotocol = \"mtsics\"\npath = \"/dev/x\"\n\
                 [devices.load_cell]\ncounts_per_kg = 1.0\n"
                    .to_owned(),
                "only applies to nau7802",
            ),
        ] {
            let err = config(&text).expect_err(why);
            assert!(err.contains(why), "{why}: {err}");
        }
    }

    #[test]
    fn stations_name_their_devices_and_kinds() {
        let devices = "[[devices]]\nname = \"sc\"\nkind = \"scanner\"\nprotocol = \"scan\"\npath = \"/dev/a\"\n\
                       [[devices]]\nname = \"sk\"\nkind = \"scale\"\nprotocol = \"mtsics\"\npath = \"/dev/b\"\n\
                       [[devices]]\nname = \"gps\"\nkind = \"gps\"\nprotocol = \"nmea\"\npath = \"/dev/c\"\n";
        let c = config(&format!(
            "{devices}[[stations]]\nname = \"pick-1\"\nkind = \"pick\"\ndevices = [\"sc\", \"sk\"]\n\
             [[stations]]\nname = \"truck\"\nkind = \"vehicle\"\nvehicle = \"T-7\"\ndevices = [\"gps\"]\n\
             [[stations.geofences]]\nname = \"DEPOT\"\nrole = \"depot\"\nlat = 50.0\nlon = 8.0\nradius_m = 150\n"
        ))
        .expect("valid");
        assert_eq!(c.stations[0].weight_tolerance_kg, 0.02);
        assert_eq!(c.stations[1].confirm_fixes, 3);
        for (stations, why) in [
            (
                "[[stations]]\nname = \"p\"\nkind = \"pick\"\ndevices = [\"nope\"]\n",
                "no [[devices]] entry",
            ),
            (
                "[[stations]]\nname = \"p\"\nkind = \"pick\"\ndevices = [\"sk\"]\n",
                "needs a scanner",
            ),
            (
                "[[stations]]\nname = \"p\"\nkind = \"pack\"\ndevices = [\"sc\"]\n",
                "needs a scale",
            ),
            (
                "[[stations]]\nname = \"d\"\nkind = \"dock_door\"\ndevices = [\"sc\", \"gps\"]\n",
                "cannot use a gps",
            ),
            (
                "[[stations]]\nname = \"a\"\nkind = \"dock_door\"\ndevices = [\"sc\"]\n\
                 [[stations]]\nname = \"b\"\nkind = \"pick\"\ndevices = [\"sc\"]\n",
                "feeds both",
            ),
            (
                "[[stations]]\nname = \"v\"\nkind = \"vehicle\"\nvehicle = \"T\"\ndevices = [\"gps\"]\n",
                "no geofences",
            ),
        ] {
            let err = config(&format!("{devices}{stations}")).expect_err(why);
            assert!(err.contains(why), "{why}: {err}");
        }
    }
}
