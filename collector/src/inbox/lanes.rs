//! A lane look, as both backends make it: which rows to read, what the
//! decision writes back to the lane's row, and the chosen row turned into
//! the event to deliver (or a row to set aside). Pure: the SQL lives in
//! `sqlite/` and `postgres/`.
//!
//! # Reading a lane costs O(devices · log n), not O(n)
//!
//! [`crate::delivery::lane::next_step`] decides from a lane's pending events, but only
//! each device's oldest pending event of the lane (its *head*) can matter:
//! rule 1 makes only heads candidates, and since a device's effective stage
//! only grows along its sequence, the lowest effective stage of the lane is
//! the lowest stage among the heads. So a backend reads only the heads
//! ([`heads`] states which rows; the SQL finds them by one index seek per
//! device on `events_lane_pending (lane, device, epoch, seq)`), and a lane
//! with a backlog of n events drains in O(n log n), not O(n²). The property
//! test below checks that the decision on the heads is the decision on all.
//!
//! # One look, the same in both dialects
//!
//! A backend makes a look in three steps, and only their SQL differs:
//!
//! 1. the lane's row ([`LaneNow`]: resolved stage, wake time, status, the
//!    open dead letter blocking it), claimed first where lanes are claimed;
//! 2. the heads ([`HeadRow`]), each read with what delivering it needs
//!    (site, envelope, attempts) and whether a later device of the lane has
//!    pending events, so a lane of one device costs one read, not two, and
//!    the chosen event needs no read of its own;
//! 3. [`decide`], then the lane's row written only when [`Look::write`]
//!    says so (a lane handing out event after event changes nothing).
//!
//! Invariant: a look never hands out an event [`crate::delivery::lane::next_step`]
//! would not pick from the whole lane, and every decision that is not a
//! delivery is written to the lane's row in the look's own transaction
//! (so a wake-up cannot be lost between the decision and its record).

use dockline_protocol::{DeviceId, Envelope, SiteId, codec};

use super::{InboxError, NextPending, PendingEvent, UnreadableRow, from_sql, to_sql};
use crate::delivery::lane::{self, LaneEvent, LaneFacts, LaneStep};

/// Each device's oldest pending event (in `(epoch, seq)` order) among
/// `events`, ordered by device: the rows a lane look reads.
pub fn heads(events: &[LaneEvent]) -> Vec<LaneEvent> {
    let mut sorted: Vec<&LaneEvent> = events.iter().collect();
    sorted.sort_by(|x, y| (&x.device, x.epoch, x.seq).cmp(&(&y.device, y.epoch, y.seq)));
    let mut out: Vec<LaneEvent> = Vec::new();
    for e in sorted {
        if out.last().is_none_or(|h| h.device != e.device) {
            out.push(e.clone());
        }
    }
    out
}

/// An open dead letter blocking a lane: id, since when, and what it is.
pub(crate) type BlockingDeadLetter = (i64, i64, String);

/// What one lane look writes to the lane's row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LaneRow {
    /// When to look again (`None`: only when woken).
    pub(crate) wake_ms: Option<i64>,
    /// `parked`, `blocked`, or `None` (idle or delivering).
    pub(crate) status: Option<&'static str>,
    /// Why it waits, for people.
    pub(crate) reason: Option<String>,
    /// Since when it waits (kept when the status stays the same).
    pub(crate) since_ms: Option<i64>,
    /// An event is handed out: the lane stays due (a collector that dies
    /// mid-delivery finds it again) and, with several collectors, is claimed.
    pub(crate) claim: bool,
}

/// The lane row a decision leaves behind: parked lanes wake at their
/// deadline (or after [`PARK_RECHECK_MS`] when only the outside world can
/// release them), blocked lanes when a replay or discard wakes them.
pub(crate) fn lane_row(
    step: &LaneStep,
    dead_letter: Option<&BlockingDeadLetter>,
    now_ms: i64,
) -> LaneRow {
    let idle = LaneRow {
        wake_ms: None,
        status: None,
        reason: None,
        since_ms: None,
        claim: false,
    };
    match step {
        LaneStep::Idle => idle,
        LaneStep::Blocked { .. } => {
            let (id, since, what) = dead_letter.cloned().unwrap_or((0, now_ms, String::new()));
            LaneRow {
                status: Some("blocked"),
                reason: Some(format!("dead letter {id}: {what}")),
                since_ms: Some(since),
                ..idle
            }
        }
        LaneStep::Park { reason, until_ms } => LaneRow {
            wake_ms: Some(until_ms.unwrap_or(now_ms.saturating_add(PARK_RECHECK_MS))),
            status: Some("parked"),
            reason: Some(reason.to_string()),
            since_ms: Some(now_ms),
            claim: false,
        },
        LaneStep::Deliver { .. } => LaneRow {
            wake_ms: Some(now_ms),
            claim: true,
            ..idle
        },
    }
}

/// How long a lane parked on something only the outside world can release
/// (a hole, a predecessor held at one) waits before it is looked at again
/// anyway. Watermark moves wake such lanes at once; this is a safety net.
pub const PARK_RECHECK_MS: i64 = 60_000;

/// A lane's head as both backends read it (one row per device of the lane).
pub(crate) struct HeadRow {
    /// What the lane rules see of it.
    pub(crate) event: LaneEvent,
    /// Its site, envelope and attempts so far: what delivering it needs.
    pub(crate) site: String,
    pub(crate) envelope: Vec<u8>,
    pub(crate) attempts: i64,
    /// A device after this one (in id order) has pending events in the
    /// lane: read the next head.
    pub(crate) more: bool,
}

/// The lane's row as a look finds it, with the dead letter blocking it.
#[derive(Debug, Default)]
pub(crate) struct LaneNow {
    /// The highest stage booked or rejected in the lane.
    pub(crate) top_stage: Option<i64>,
    /// When it wants its next look.
    pub(crate) wake_ms: Option<i64>,
    /// `parked`, `blocked` or none.
    pub(crate) status: Option<String>,
    /// The lane's oldest open dead letter.
    pub(crate) dead_letter: Option<BlockingDeadLetter>,
}

/// What a look decided.
pub(crate) struct Look {
    /// What the lane's row should say now.
    pub(crate) row: LaneRow,
    /// The row must be written: it changes, or (with claims) the claim the
    /// look took is to be released because no event goes.
    pub(crate) write: bool,
    /// The event handed out, if one may go.
    pub(crate) chosen: Option<ChosenRow>,
}

/// Decides a look from the lane's heads and row (see the module docs).
/// `claimed_until_ms` is the claim the look took (backends with claims),
/// handed on with the chosen event.
pub(crate) fn decide(
    lane_key: &str,
    mut heads: Vec<HeadRow>,
    lane_now: LaneNow,
    now_ms: i64,
    park_max_ms: i64,
    claimed_until_ms: Option<i64>,
) -> Result<Look, InboxError> {
    let events: Vec<LaneEvent> = heads.iter().map(|h| h.event.clone()).collect();
    let facts = LaneFacts {
        chain: lane::has_chain(lane_key),
        top_resolved: lane_now.top_stage.and_then(|s| u8::try_from(s).ok()),
        dead_letter: lane_now.dead_letter.as_ref().map(|d| d.0),
        park_max_ms,
    };
    let step = lane::next_step(&events, facts, now_ms);
    let row = lane_row(&step, lane_now.dead_letter.as_ref(), now_ms);
    let unchanged = lane_row_unchanged(lane_now.wake_ms, lane_now.status.as_deref(), &row, now_ms);
    let write = !unchanged || (claimed_until_ms.is_some() && !row.claim);
    let chosen = match step {
        LaneStep::Deliver { index, late } if index < heads.len() => {
            let head = heads.swap_remove(index);
            Some(ChosenRow {
                epoch: to_sql("epoch", head.event.epoch)?,
                seq: to_sql("seq", head.event.seq)?,
                device: head.event.device,
                site: head.site,
                envelope: head.envelope,
                attempts: head.attempts,
                late,
                claimed_until_ms,
            })
        }
        _ => None,
    };
    Ok(Look { row, write, chosen })
}

/// The row [`InboxStore::next_in_lane`] chose, as read from either backend.
#[derive(Clone)]
pub(crate) struct ChosenRow {
    pub(crate) device: String,
    pub(crate) epoch: i64,
    pub(crate) seq: i64,
    pub(crate) site: String,
    pub(crate) envelope: Vec<u8>,
    pub(crate) attempts: i64,
    pub(crate) late: bool,
    /// Until when this collector's claim on the lane holds (backends with
    /// claims).
    pub(crate) claimed_until_ms: Option<i64>,
}

/// The chosen row as the event to deliver, or, when its stored site or
/// envelope cannot be read, as an [`UnreadableRow`] for the caller to reject
/// so the lane moves on. A stored device id that is not valid is an error.
pub(crate) fn chosen_event(row: ChosenRow, lane_key: &str) -> Result<NextPending, InboxError> {
    let device = DeviceId::new(row.device.as_str()).map_err(|e| {
        InboxError::Worker(format!(
            "stored device id {:?} is not valid: {e}",
            row.device
        ))
    })?;
    let unreadable = |problem: String| {
        NextPending::Unreadable(UnreadableRow {
            device: device.clone(),
            epoch: from_sql(row.epoch),
            seq: from_sql(row.seq),
            problem,
        })
    };
    let site = match SiteId::new(row.site) {
        Ok(s) => s,
        Err(e) => return Ok(unreadable(e.to_string())),
    };
    match codec::decode::<Envelope>(&row.envelope) {
        Ok(envelope) => Ok(NextPending::Event(Box::new(PendingEvent {
            site,
            envelope,
            attempts: u32::try_from(row.attempts).unwrap_or(u32::MAX),
            lane: lane_key.to_owned(),
            late: row.late,
            claimed_until_ms: row.claimed_until_ms,
        }))),
        Err(e) => Ok(unreadable(e.to_string())),
    }
}

/// Whether a look's [`LaneRow`] would leave the lane's row as it is: an
/// idle lane stays idle, or a lane handing out an event is already due
/// (`wake_ms` at or before now) and not waiting. Then a backend without
/// claims skips the write, so a run of lane looks commits nothing.
pub(crate) fn lane_row_unchanged(
    current_wake_ms: Option<i64>,
    current_status: Option<&str>,
    new: &LaneRow,
    now_ms: i64,
) -> bool {
    if current_status.is_some() || new.status.is_some() {
        return false;
    }
    match (current_wake_ms, new.wake_ms) {
        (None, None) => true,
        (Some(was), Some(_)) => new.claim && was <= now_ms,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::lane::next_step;
    use proptest::prelude::*;

    fn event() -> impl Strategy<Value = LaneEvent> {
        (
            0..3u8,
            1..3u64,
            1..40u64,
            proptest::option::of(0..6u8),
            0..50i64,
            any::<bool>(),
        )
            .prop_map(|(d, epoch, seq, stage, received_ms, held)| LaneEvent {
                device: format!("d{d}"),
                epoch,
                seq,
                stage,
                received_ms,
                held,
            })
    }

    /// The event a step picks, by identity (indices differ between the
    /// full list and the heads).
    fn picked(events: &[LaneEvent], step: &LaneStep) -> Option<(String, u64, u64, bool)> {
        match step {
            LaneStep::Deliver { index, late } => {
                let e = &events[*index];
                Some((e.device.clone(), e.epoch, e.seq, *late))
            }
            _ => None,
        }
    }

    proptest! {
        #[test]
        fn deciding_on_the_heads_is_deciding_on_the_whole_lane(
            raw in proptest::collection::vec(event(), 0..30),
            chain in any::<bool>(),
            top in proptest::option::of(0..6u8),
            dead in proptest::option::of(1..5i64),
            now in 0..100i64,
        ) {
            // One row per (device, epoch, seq), as in the table.
            let mut events: Vec<LaneEvent> = Vec::new();
            for e in raw {
                if !events.iter().any(|x| (&x.device, x.epoch, x.seq) == (&e.device, e.epoch, e.seq)) {
                    events.push(e);
                }
            }
            // In the order the lane's rows were read before (by device,
            // epoch, seq): ties on `received_ms` go to the lower device.
            events.sort_by(|x, y| (&x.device, x.epoch, x.seq).cmp(&(&y.device, y.epoch, y.seq)));
            let facts = LaneFacts { chain, top_resolved: top, dead_letter: dead, park_max_ms: 20 };
            let whole = next_step(&events, facts, now);
            let h = heads(&events);
            let on_heads = next_step(&h, facts, now);
            prop_assert_eq!(picked(&events, &whole), picked(&h, &on_heads));
            if picked(&events, &whole).is_none() {
                prop_assert_eq!(whole, on_heads);
            }
        }
    }

    #[test]
    fn a_lane_row_says_why_it_waits_and_when_it_looks_again() {
        let parked = lane_row(
            &LaneStep::Park {
                reason: crate::delivery::lane::Parked::Expecting { stage: 2, wants: 1 },
                until_ms: None,
            },
            None,
            1_000,
        );
        assert_eq!(parked.wake_ms, Some(1_000 + PARK_RECHECK_MS));
        assert_eq!(parked.status, Some("parked"));
        let blocked = lane_row(
            &LaneStep::Blocked { dead_letter: 7 },
            Some(&(7, 500, "hh-01 seq 3 (picked): refused".into())),
            1_000,
        );
        assert_eq!(blocked.since_ms, Some(500));
        assert_eq!(blocked.wake_ms, None);
        assert!(
            blocked
                .reason
                .is_some_and(|r| r.starts_with("dead letter 7: hh-01"))
        );
        let go = lane_row(
            &LaneStep::Deliver {
                index: 0,
                late: false,
            },
            None,
            1_000,
        );
        assert!(go.claim);
        assert_eq!(go.wake_ms, Some(1_000));
    }
}
