//! A batch: what an agent publishes on `dockline/v1/{site}/{device}/events`.

use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

use crate::envelope::Envelope;
use crate::ids::DeviceId;
use crate::validate::ValidationError;

/// Most envelopes one batch may carry.
pub const MAX_BATCH_EVENTS: usize = 1000;

/// Envelopes of one device and epoch, in ascending sequence order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Batch {
    /// Protocol version.
    pub v: u16,
    /// Sending device; every envelope must carry the same.
    #[serde(rename = "dev")]
    pub device: DeviceId,
    /// Sequence epoch of every envelope in the batch.
    #[serde(rename = "ep")]
    pub epoch: u64,
    /// The lowest sequence the sender still holds: every sequence below it was
    /// acknowledged by a collector earlier. Lets a collector whose store is
    /// newer than the device's history compute "complete up to N".
    #[serde(rename = "held")]
    pub first_held: u64,
    /// The envelopes, ascending by `seq`.
    #[serde(rename = "evs")]
    pub events: Vec<Envelope>,
    /// Sequences (inclusive ranges) the device dropped on purpose (disk budget)
    /// or lost (damaged storage): they will never be sent, so the collector
    /// must not wait for them. Added in v1 as an optional field.
    #[serde(rename = "shed", default, skip_serializing_if = "Vec::is_empty")]
    pub shed: Vec<(u64, u64)>,
}

/// Most ranges one message may list.
pub const MAX_RANGES: usize = 1024;

/// Checks a list of inclusive sequence ranges.
pub(crate) fn check_ranges(field: &str, ranges: &[(u64, u64)]) -> Result<(), ValidationError> {
    if ranges.len() > MAX_RANGES {
        return Err(ValidationError {
            field: field.into(),
            problem: alloc::format!("lists {} ranges, the limit is {MAX_RANGES}", ranges.len()),
        });
    }
    for (i, (lo, hi)) in ranges.iter().enumerate() {
        if *lo == 0 || lo > hi {
            return Err(ValidationError {
                field: alloc::format!("{field}[{i}]"),
                problem: alloc::format!("is {lo}..{hi}; expected 1 <= start <= end"),
            });
        }
    }
    Ok(())
}

impl Batch {
    pub(crate) fn validate(&self) -> Result<(), ValidationError> {
        if self.events.len() > MAX_BATCH_EVENTS {
            return Err(ValidationError {
                field: "evs".into(),
                problem: alloc::format!(
                    "holds {} events, the limit is {MAX_BATCH_EVENTS}",
                    self.events.len()
                ),
            });
        }
        check_ranges("shed", &self.shed)?;
        let mut last = 0u64;
        for (i, e) in self.events.iter().enumerate() {
            let at = || alloc::format!("evs[{i}]");
            if e.device != self.device || e.epoch != self.epoch {
                return Err(ValidationError {
                    field: at(),
                    problem: alloc::format!(
                        "belongs to device {} epoch {}, but the batch is from device {} epoch {}",
                        e.device,
                        e.epoch,
                        self.device,
                        self.epoch
                    ),
                });
            }
            if e.seq <= last {
                return Err(ValidationError {
                    field: alloc::format!("{}.seq", at()),
                    problem: alloc::format!(
                        "is {} after {last}; a batch must be in ascending sequence order",
                        e.seq
                    ),
                });
            }
            last = e.seq;
            if self
                .shed
                .iter()
                .any(|(lo, hi)| (*lo..=*hi).contains(&e.seq))
            {
                return Err(ValidationError {
                    field: alloc::format!("{}.seq", at()),
                    problem: alloc::format!("{} is both sent and listed as shed", e.seq),
                });
            }
            e.validate().map_err(|err| err.under(&at()))?;
        }
        Ok(())
    }
}
