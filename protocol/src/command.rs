//! Commands from the collector on `dockline/v1/{site}/{device}/cmd`.
//!
//! A command message carries at most one request per kind, each an optional
//! field, so a new kind of command is a new optional field (no version bump,
//! see the versioning rule in the crate docs): an agent that does not know a
//! field ignores it, and an agent older than the `cmd` channel never
//! subscribes to it (its own ack timeout resends in the end).

use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

use crate::batch::check_ranges;
use crate::ids::DeviceId;
use crate::validate::ValidationError;

/// A command to one device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    /// Protocol version.
    pub v: u16,
    /// The device the command is for.
    #[serde(rename = "dev")]
    pub device: DeviceId,
    /// Send these sequences again (added in v1 as an optional field).
    #[serde(rename = "rs", default, skip_serializing_if = "Option::is_none")]
    pub resend: Option<Resend>,
}

/// "These sequences of yours are missing here": the device publishes the
/// ones it still holds again, and reports the rest as shed in a batch of
/// that epoch (an empty batch whose `shed` lists them), so the collector
/// stops waiting for them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resend {
    /// The sequence epoch the ranges belong to (it may be older than the
    /// device's current one, after a reinstall).
    #[serde(rename = "ep")]
    pub epoch: u64,
    /// Missing sequences, inclusive ranges, ascending, at most
    /// [`MAX_RANGES`](crate::batch::MAX_RANGES).
    #[serde(rename = "r")]
    pub ranges: Vec<(u64, u64)>,
}

impl Command {
    pub(crate) fn validate(&self) -> Result<(), ValidationError> {
        if let Some(resend) = &self.resend {
            check_ranges("rs.r", &resend.ranges)?;
        }
        Ok(())
    }
}
