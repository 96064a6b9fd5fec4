//! The collector's answer on `dockline/v1/{site}/{device}/ack`.
//!
//! One message may say two things: how far the device's events are safely
//! stored at the collector (the agent may then drop those payloads), and the
//! ERP's verdict on individual events (the agent updates its receipts).

use alloc::string::String;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

use crate::ids::{DeviceId, EventId};
use crate::validate::{self, MAX_TEXT_BYTES, ValidationError};

/// Most verdicts one ack may carry.
pub const MAX_VERDICTS: usize = 1000;

/// An application-level acknowledgement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    /// Protocol version.
    pub v: u16,
    /// The device the ack is for.
    #[serde(rename = "dev")]
    pub device: DeviceId,
    /// The sequence epoch it refers to.
    #[serde(rename = "ep")]
    pub epoch: u64,
    /// Every sequence up to and including this one is committed in the
    /// collector's store (absent when the ack carries only verdicts).
    #[serde(rename = "upto", default, skip_serializing_if = "Option::is_none")]
    pub stored_up_to: Option<u64>,
    /// Ranges above `stored_up_to` that are stored too (events that jumped
    /// the queue on the live lane); the agent may drop those payloads.
    #[serde(rename = "also", default, skip_serializing_if = "Vec::is_empty")]
    pub also_stored: Vec<(u64, u64)>,
    /// ERP verdicts on individual events.
    #[serde(rename = "vd", default, skip_serializing_if = "Vec::is_empty")]
    pub verdicts: Vec<Verdict>,
}

/// The ERP's verdict on one event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    /// The event's sequence.
    pub seq: u64,
    /// The event's id.
    pub id: EventId,
    /// What the ERP did.
    #[serde(rename = "o")]
    pub outcome: Outcome,
}

/// Booked or rejected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The ERP booked it; `document` is its reference (delivery note, move id).
    Booked {
        /// The ERP's document reference.
        #[serde(rename = "doc")]
        document: String,
    },
    /// The ERP refused it for good.
    Rejected {
        /// Why, in the ERP's words.
        reason: String,
    },
}

impl Ack {
    pub(crate) fn validate(&self) -> Result<(), ValidationError> {
        if self.verdicts.len() > MAX_VERDICTS {
            return Err(ValidationError {
                field: "vd".into(),
                problem: alloc::format!(
                    "holds {} verdicts, the limit is {MAX_VERDICTS}",
                    self.verdicts.len()
                ),
            });
        }
        crate::batch::check_ranges("also", &self.also_stored)?;
        crate::validate::wire_number("ep", self.epoch)?;
        if let Some(up_to) = self.stored_up_to {
            crate::validate::wire_number("upto", up_to)?;
        }
        for (i, v) in self.verdicts.iter().enumerate() {
            let text = match &v.outcome {
                Outcome::Booked { document } => document,
                Outcome::Rejected { reason } => reason,
            };
            validate::text(&alloc::format!("vd[{i}].o"), text, MAX_TEXT_BYTES)?;
        }
        Ok(())
    }
}
