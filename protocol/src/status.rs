//! Online status on `dockline/v1/{site}/{device}/status`: birth when an agent
//! connects, death (also registered as the MQTT last will, so the broker sends
//! it when the link dies), and periodic heartbeats.

use alloc::string::String;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

use crate::envelope::Priority;
use crate::ids::DeviceId;
use crate::validate::{self, ValidationError};

/// A status message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// Protocol version.
    pub v: u16,
    /// The device.
    #[serde(rename = "dev")]
    pub device: DeviceId,
    /// Connection session number, incremented on every connect, so a late
    /// death from an old session cannot mark a fresh session offline.
    #[serde(rename = "ses")]
    pub session: u64,
    /// When it was sent, milliseconds since the Unix epoch (for a death sent
    /// by the broker as last will: when the session started).
    #[serde(rename = "t")]
    pub at_ms: i64,
    /// What kind of status.
    #[serde(rename = "k")]
    pub kind: StatusKind,
}

/// Birth, death or heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StatusKind {
    /// The agent connected.
    Birth {
        /// The agent's version.
        #[serde(rename = "ver")]
        agent_version: String,
        /// Verdicts the agent has not seen (optional, added in v1): the
        /// collector answers with every verdict it recorded from there on.
        #[serde(rename = "vw", default, skip_serializing_if = "Option::is_none")]
        verdicts_wanted: Option<VerdictsWanted>,
    },
    /// The agent went away (graceful, or last will on a lost link).
    Death {
        /// `true` when the agent said goodbye itself.
        graceful: bool,
    },
    /// Queue health, sent periodically.
    Heartbeat {
        /// Events in the outbox not yet acknowledged by a collector.
        #[serde(rename = "q")]
        queued: u64,
        /// Age of the oldest unacknowledged event, milliseconds.
        #[serde(rename = "age", default)]
        oldest_unacked_ms: u64,
        /// Queue depth in more detail (optional, added in v1).
        #[serde(rename = "h", default, skip_serializing_if = "Option::is_none")]
        health: Option<QueueHealth>,
    },
}

/// Queue health details carried by a heartbeat.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueHealth {
    /// Payload bytes held.
    #[serde(rename = "qb", default)]
    pub queued_bytes: u64,
    /// Held events and bytes per priority class.
    #[serde(rename = "cls", default)]
    pub classes: Vec<ClassQueue>,
    /// Events dropped on the device, by class and reason.
    #[serde(rename = "drops", default)]
    pub drops: Vec<DropCount>,
    /// Free bytes on the outbox's file system.
    #[serde(rename = "free", default, skip_serializing_if = "Option::is_none")]
    pub disk_free: Option<u64>,
    /// Duration of the last fsynced commit, microseconds.
    #[serde(rename = "fsync", default, skip_serializing_if = "Option::is_none")]
    pub last_fsync_us: Option<u64>,
    /// Events lost to a damaged outbox file at the last salvage: count and
    /// sequence ranges.
    #[serde(rename = "lost", default, skip_serializing_if = "Option::is_none")]
    pub salvage_lost: Option<(u64, Vec<(u64, u64)>)>,
    /// Verdicts the agent has not seen (optional, added in v1).
    #[serde(rename = "vw", default, skip_serializing_if = "Option::is_none")]
    pub verdicts_wanted: Option<VerdictsWanted>,
    /// The agent's serial devices, at most [`MAX_HEARTBEAT_DEVICES`]
    /// (optional, added in v1; absent when none is configured).
    #[serde(rename = "dv", default, skip_serializing_if = "Option::is_none")]
    pub devices: Option<Vec<DeviceHealth>>,
    /// The agent's version and build, `0.1.0 (commit 1a2b3c4d5e6f)`
    /// (optional, added in v1), so a fleet view shows what runs where
    /// between births.
    #[serde(rename = "ver", default, skip_serializing_if = "Option::is_none")]
    pub agent_version: Option<String>,
    /// The agent's proof-of-delivery media (optional, added in v1; absent
    /// from agents without media).
    #[serde(rename = "md", default, skip_serializing_if = "Option::is_none")]
    pub media: Option<alloc::boxed::Box<MediaHealth>>,
}

/// The media an agent holds: its heartbeat's media line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaHealth {
    /// Media held (kept until the ERP holds them).
    #[serde(rename = "n", default)]
    pub held: u64,
    /// Their bytes.
    #[serde(rename = "b", default)]
    pub bytes: u64,
    /// Media not yet stored at the collector.
    #[serde(rename = "q", default)]
    pub queued: u64,
    /// Bytes of those.
    #[serde(rename = "qb", default)]
    pub queued_bytes: u64,
    /// Media the ERP holds.
    #[serde(rename = "at", default)]
    pub attached: u64,
    /// Media the collector refused.
    #[serde(rename = "rf", default)]
    pub refused: u64,
}

/// Most devices one heartbeat lists.
pub const MAX_HEARTBEAT_DEVICES: usize = 64;

/// One serial device of an agent (scanner, scale, GNSS receiver, bridge).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceHealth {
    /// The device's configured name.
    #[serde(rename = "n")]
    pub name: String,
    /// Its port is open and being read.
    #[serde(rename = "c")]
    pub connected: bool,
    /// Readings decoded since the agent started.
    #[serde(rename = "r", default)]
    pub readings: u64,
    /// Frames rejected or device error states since the agent started.
    #[serde(rename = "x", default)]
    pub rejected: u64,
    /// When the last reading was decoded, milliseconds since the Unix epoch.
    #[serde(rename = "t", default, skip_serializing_if = "Option::is_none")]
    pub last_reading_ms: Option<i64>,
}

/// The oldest event of the agent's current epoch that the collector acknowledged
/// but whose ERP verdict the agent never received (a verdict ack published
/// while the handheld was offline and its broker session was gone). The
/// collector re-sends the verdicts it recorded for `from_seq` and later, in
/// sequence order and bounded per answer; the agent asks again until it has
/// them all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerdictsWanted {
    /// The outbox epoch.
    #[serde(rename = "ep")]
    pub epoch: u64,
    /// The lowest sequence still waiting for its verdict.
    #[serde(rename = "from")]
    pub from_seq: u64,
}

/// Held events of one class.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassQueue {
    /// The class.
    #[serde(rename = "pri")]
    pub priority: Priority,
    /// Events held.
    #[serde(rename = "q")]
    pub queued: u64,
    /// Payload bytes held.
    #[serde(rename = "b")]
    pub bytes: u64,
}

/// Drops of one class for one reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DropCount {
    /// The class (`must_deliver`, `normal`, `telemetry`, `unknown`).
    #[serde(rename = "c")]
    pub class: String,
    /// Why (`budget`, `damaged`, `refused_full`).
    #[serde(rename = "r")]
    pub reason: String,
    /// How many.
    #[serde(rename = "n")]
    pub count: u64,
}

impl Status {
    pub(crate) fn validate(&self) -> Result<(), ValidationError> {
        match &self.kind {
            StatusKind::Birth { agent_version, .. } => {
                validate::text("k.birth.ver", agent_version, 64)
            }
            StatusKind::Heartbeat {
                health: Some(h), ..
            } => {
                if h.classes.len() > 8 || h.drops.len() > 64 {
                    return Err(ValidationError {
                        field: "k.heartbeat.h".into(),
                        problem: "lists too many classes or drop counters".into(),
                    });
                }
                for d in &h.drops {
                    validate::text("k.heartbeat.h.drops", &d.reason, 64)?;
                    validate::text("k.heartbeat.h.drops", &d.class, 64)?;
                }
                let devices = h.devices.as_deref().unwrap_or_default();
                if devices.len() > MAX_HEARTBEAT_DEVICES {
                    return Err(ValidationError {
                        field: "k.heartbeat.h.dv".into(),
                        problem: alloc::format!(
                            "lists {} devices, at most {MAX_HEARTBEAT_DEVICES}",
                            devices.len()
                        ),
                    });
                }
                for d in devices {
                    validate::text("k.heartbeat.h.dv.n", &d.name, 64)?;
                }
                match &h.salvage_lost {
                    Some((_, ranges)) => crate::batch::check_ranges("k.heartbeat.h.lost", ranges),
                    None => Ok(()),
                }
            }
            _ => Ok(()),
        }
    }
}
