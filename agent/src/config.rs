//! Agent configuration: `agent.toml`, then `DOCKLINE_*` overrides, then these
//! typed defaults. Unknown keys are errors, so a typo never silently falls back
//! to a default.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use dockline_protocol::{DeviceId, SiteId, TimeSource};
use serde::Deserialize;

/// Everything one agent needs to run.
#[derive(Debug, Clone, Deserialize)]
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
}

/// The local HTTP API a handheld app posts events to.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Listen address; loopback only by default. Port 0 picks a free port, and
    /// the bound address is written to `{data_dir}/api.addr`.
    #[serde(default = "default_api_listen")]
    pub listen: SocketAddr,
}

/// The MQTT broker connection.
#[derive(Debug, Clone, Deserialize)]
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
}

/// How batches are uploaded.
#[derive(Debug, Clone, Deserialize)]
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
fn default_heartbeat() -> u64 {
    30
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            listen: default_api_listen(),
        }
    }
}

impl Default for MqttConfig {
    fn default() -> Self {
        Self {
            host: default_host(),
            port: default_port(),
            keep_alive_secs: default_keep_alive(),
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
        if self.mqtt.keep_alive_secs < 5 {
            return Err("mqtt.keep_alive_secs must be at least 5".into());
        }
        Ok(())
    }

    /// The ack timeout as a duration.
    pub fn ack_timeout(&self) -> Duration {
        Duration::from_millis(self.uplink.ack_timeout_ms)
    }
}
