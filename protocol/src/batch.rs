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

/// The sequences of `from..=to` that are neither in `present` (ascending)
/// nor inside a `covered` range, as inclusive ranges, ascending, at most
/// [`MAX_RANGES`] of them (lowest first). A collector finds its holes this
/// way (stored and shed sequences cover), an agent the part of a resend
/// request it no longer holds.
pub fn uncovered(from: u64, to: u64, present: &[u64], covered: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut next = from;
    while next <= to && out.len() < MAX_RANGES {
        if let Some(&(_, hi)) = covered.iter().find(|(lo, hi)| *lo <= next && next <= *hi) {
            match hi.checked_add(1) {
                Some(n) => next = n,
                None => break,
            }
            continue;
        }
        let at = present.partition_point(|p| *p < next);
        if present.get(at) == Some(&next) {
            match next.checked_add(1) {
                Some(n) => next = n,
                None => break,
            }
            continue;
        }
        // Missing from `next` up to the next present or covered sequence.
        let mut end = to;
        if let Some(p) = present.get(at) {
            end = end.min(p - 1);
        }
        if let Some(lo) = covered.iter().map(|r| r.0).filter(|lo| *lo > next).min() {
            end = end.min(lo - 1);
        }
        out.push((next, end));
        match end.checked_add(1) {
            Some(n) => next = n,
            None => break,
        }
    }
    out
}

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
        crate::validate::wire_number(&alloc::format!("{field}[{i}]"), *hi)?;
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
        crate::validate::wire_number("ep", self.epoch)?;
        crate::validate::wire_number("held", self.first_held)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    #[test]
    fn uncovered_lists_what_is_neither_present_nor_covered() {
        assert_eq!(uncovered(3, 9, &[5, 6], &[(8, 20)]), vec![(3, 4), (7, 7)]);
        assert_eq!(uncovered(1, 3, &[1, 2, 3], &[]), vec![]);
        assert_eq!(uncovered(1, 3, &[], &[]), vec![(1, 3)]);
        assert_eq!(uncovered(5, 4, &[], &[]), vec![], "empty span");
        assert_eq!(
            uncovered(u64::MAX - 1, u64::MAX, &[], &[(u64::MAX, u64::MAX)]),
            vec![(u64::MAX - 1, u64::MAX - 1)]
        );
        let every_other: Vec<u64> = (1..=5000).map(|i| i * 2).collect();
        assert_eq!(uncovered(1, 10_000, &every_other, &[]).len(), MAX_RANGES);
    }
}
