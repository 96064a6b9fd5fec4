//! The inbox's domain types: what its operations take and return, the same
//! for both backends. Plain data; no I/O.

use dockline_protocol::{DeviceId, Envelope, SiteId};
use serde::Serialize;

/// Longest response body excerpt kept per attempt, in bytes.
pub const MAX_BODY_EXCERPT: usize = 2048;

/// One ERP attempt, as kept for a dead letter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct AttemptLog {
    /// Attempt number of the event (1-based, across replays).
    pub n: u32,
    /// When it ended, ms since the Unix epoch.
    pub at_ms: i64,
    /// What was sent (method, URL, keys, size; never the signature).
    pub request: String,
    /// The HTTP status, when the ERP answered.
    pub status: Option<u16>,
    /// The transport error, when it did not.
    pub error: Option<String>,
    /// The start of the response body (at most [`MAX_BODY_EXCERPT`] bytes).
    pub body: String,
    /// What the delivery policy decided.
    pub decision: String,
}

/// A dead letter to store: the final attempt and why delivery gave up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDeadLetter {
    /// The final attempt (the others are already in `attempts`).
    pub last: AttemptLog,
    /// Why, for people.
    pub reason: String,
    /// The failure class name (`permanent`, `conflict`, …).
    pub class: String,
    /// The ERP refused the event itself: the event becomes `rejected`.
    pub erp_rejected: bool,
}

/// A dead letter in a list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeadLetterSummary {
    /// Its id (for `show`, `replay`, `discard`).
    pub id: i64,
    /// Device.
    pub device: String,
    /// Epoch.
    pub epoch: u64,
    /// Sequence.
    pub seq: u64,
    /// The event id (its idempotency key).
    pub event_id: String,
    /// Event kind (`picked`, …).
    pub kind: String,
    /// Failure class.
    pub class: String,
    /// Why delivery gave up.
    pub reason: String,
    /// True when the ERP refused the event (the device got `rejected`).
    pub erp_rejected: bool,
    /// `open` (the device's lane is blocked), `replayed` or `discarded`.
    pub state: String,
    /// When it was stored.
    pub created_ms: i64,
    /// When it was replayed or discarded.
    pub resolved_ms: Option<i64>,
    /// Attempts it holds.
    pub attempts: usize,
}

/// A dead letter with everything it keeps.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    /// The list fields.
    pub summary: DeadLetterSummary,
    /// The site the event came from.
    pub site: String,
    /// The original envelope, or why it cannot be decoded.
    pub envelope: Result<Envelope, String>,
    /// Every attempt, oldest first.
    pub attempts: Vec<AttemptLog>,
    /// How it was resolved (`replayed`, or the discard note).
    pub resolution: Option<String>,
}

/// What resolving (replaying or discarding) a dead letter did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// Done; the device's lane is unblocked unless another dead letter of it
    /// is still open.
    Done {
        /// The device whose event it was.
        device: DeviceId,
        /// The lane it blocked.
        lane: String,
        /// Still blocked by other open dead letters of the same lane.
        still_blocked: bool,
    },
    /// No dead letter has that id.
    NotFound,
    /// It was already replayed or discarded.
    AlreadyResolved {
        /// Its state.
        state: String,
    },
}

/// What storing one batch did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreOutcome {
    /// Envelopes newly stored.
    pub stored: usize,
    /// Envelopes skipped as already stored or already acknowledged.
    pub duplicates: usize,
    /// The `(device, epoch)` watermark after the commit; the value to ack.
    pub complete_up_to: u64,
    /// This batch's sequences above the watermark (stored behind a hole),
    /// as inclusive ranges for the ack's `also_stored`.
    pub also_stored: Vec<(u64, u64)>,
    /// Shed ranges this batch reported that were not known before.
    pub newly_shed: Vec<(u64, u64)>,
    /// Claims of the batch not believed ([`crate::inbox::watermark`]): `held N` or
    /// `shed LO..HI` above the highest stored sequence (`bad_watermark`).
    pub refused_claims: Vec<String>,
    /// Events kept in quarantine instead of stored: `far_ahead` (too far
    /// above the watermark, not acked) or `seq_conflict` (another event
    /// under a stored number).
    pub quarantined: Vec<(u64, &'static str)>,
}

/// A business event waiting for the ERP.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingEvent {
    /// The site it came from (its ack topic level).
    pub site: SiteId,
    /// The envelope as received.
    pub envelope: Envelope,
    /// Delivery attempts made so far.
    pub attempts: u32,
    /// Its business lane ([`crate::delivery::lane::lane_key`]).
    pub lane: String,
    /// Handed out after `erp.lane_park_max_ms` without its lane's previous
    /// stage: delivered out of business order.
    pub late: bool,
    /// With several collectors: until when this collector's claim on the
    /// lane holds (ms since the Unix epoch), taken when the event was handed
    /// out. An attempt that ends before then needs no renewal
    /// ([`crate::delivery::lane::must_renew`]). `None`: not known (renew).
    pub claimed_until_ms: Option<i64>,
}

/// A follow-up webhook waiting to be sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Followup {
    /// Its id: the `webhook-id` and `Idempotency-Key` of every attempt.
    pub id: String,
    /// `invoice.ready`.
    pub kind: String,
    /// The order it is about.
    pub order: String,
    /// The exact body to send (built once, when it was queued).
    pub body: Vec<u8>,
    /// Attempts so far.
    pub attempts: u32,
    /// Bounded-class failures in a row (see [`crate::policy::History`]).
    pub bounded: u32,
}

/// What became of an attempt to send a follow-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FollowupResult {
    /// The receiver accepted it.
    Sent,
    /// Given up for good (a permanent refusal).
    Failed {
        /// Why.
        reason: String,
    },
    /// Try again at `next_ms`.
    Retry {
        /// When.
        next_ms: i64,
        /// What went wrong.
        error: String,
        /// Bounded-class failures in a row.
        bounded: u32,
    },
}

/// A parked or blocked lane, for `GET /v1/lanes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LaneStatus {
    /// The lane key (`order:SO-1001`, `device:hh-01`, …).
    pub lane: String,
    /// `parked` (waits for a predecessor, a hole or its deadline) or
    /// `blocked` (an open dead letter).
    pub status: String,
    /// What it waits for, for people.
    pub reason: String,
    /// Since when, ms since the Unix epoch.
    pub since_ms: i64,
    /// When the collector looks at it again by itself (a park deadline),
    /// if it does.
    pub next_look_ms: Option<i64>,
    /// Its pending events.
    pub pending: u64,
}

/// A pending row whose stored envelope could not be read back.
#[derive(Debug, Clone, PartialEq)]
pub struct UnreadableRow {
    /// Device.
    pub device: DeviceId,
    /// Epoch.
    pub epoch: u64,
    /// Sequence.
    pub seq: u64,
    /// Why it could not be decoded.
    pub problem: String,
}

/// The next pending event of a device, or a row that must be set aside.
#[derive(Debug, Clone, PartialEq)]
pub enum NextPending {
    /// Deliver this.
    Event(Box<PendingEvent>),
    /// The stored bytes do not decode; the caller rejects it so the lane moves on.
    Unreadable(UnreadableRow),
}

/// One device in the stats.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeviceStats {
    /// Device id.
    pub device: String,
    /// Site id.
    pub site: String,
    /// Online per its latest status message.
    pub online: bool,
    /// When the collector last heard from it (status or batch), ms since the Unix epoch.
    pub last_seen_ms: Option<i64>,
    /// Watermark of its newest epoch.
    pub complete_up_to: Option<u64>,
    /// Open holes (sequences missing below a stored one), every epoch.
    pub holes: Vec<HoleStats>,
}

/// One open hole in the stats.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HoleStats {
    /// Its epoch.
    pub epoch: u64,
    /// First missing sequence.
    pub from: u64,
    /// Last missing sequence.
    pub to: u64,
}

/// The open holes of one `(device, epoch)`: sequences above the watermark
/// and below the highest stored sequence that are neither stored nor shed.
/// A tail the device has not sent yet is not a hole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceHoles {
    /// The device.
    pub device: DeviceId,
    /// Its site (the command topic's level).
    pub site: SiteId,
    /// The epoch.
    pub epoch: u64,
    /// Its watermark.
    pub complete_up_to: u64,
    /// Missing inclusive ranges, ascending, at most [`MAX_RANGES`].
    pub holes: Vec<(u64, u64)>,
}

/// The numbers behind `GET /v1/stats`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// Distinct envelopes stored.
    pub received: u64,
    /// Envelopes skipped as duplicates.
    pub duplicates: u64,
    /// Messages refused on the events topic (malformed, unknown device).
    pub refused: u64,
    /// The same by reason (`malformed`, `oversize`, `device_mismatch`,
    /// `unknown_device`, `rate_limited`, …); reasons never seen are absent.
    pub refused_by_reason: std::collections::BTreeMap<String, u64>,
    /// Resend requests the gap audit sent to devices.
    pub resend_requests: u64,
    /// Sequences of a hole the device then reported as gone (shed): lost at
    /// the device, no longer waited for.
    pub holes_lost: u64,
    /// Business events waiting for the ERP.
    pub pending: u64,
    /// Business events the ERP booked.
    pub booked: u64,
    /// Business events the ERP rejected.
    pub rejected: u64,
    /// Open dead letters.
    pub dead_letters: u64,
    /// Devices with an open dead letter (each blocks its event's lane).
    pub blocked_devices: Vec<String>,
    /// Lanes blocked by an open dead letter.
    pub blocked_lanes: u64,
    /// Lanes parked: their next event waits for an earlier business step,
    /// a hole, or its park deadline (`GET /v1/lanes` lists them).
    pub parked_lanes: u64,
    /// Events delivered after `erp.lane_park_max_ms` without their lane's
    /// previous stage (out of business order).
    pub delivered_out_of_order: u64,
    /// `invoice.ready` follow-ups by state (`pending`, `sent`, `failed`).
    pub followups: std::collections::BTreeMap<String, u64>,
    /// Every device known from config, status or batches.
    pub devices: Vec<DeviceStats>,
}

/// The longest prefix of `text` that fits `max` bytes on a char boundary.
pub fn excerpt(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// The one-line `last_error` of an attempt: the transport error, or the
/// status and the start of the body.
pub(crate) fn last_error_of(log: &AttemptLog) -> String {
    match (&log.error, log.status) {
        (Some(error), _) => error.clone(),
        (None, Some(status)) => {
            let body = excerpt(log.body.trim(), 200);
            if body.is_empty() {
                format!("HTTP {status}")
            } else {
                format!("HTTP {status}: {body}")
            }
        }
        (None, None) => log.decision.clone(),
    }
}

/// One operation of a *group*: the delivery lanes' frequent calls, which
/// the inbox runs many at a time in one transaction, so one commit (one
/// fsync) serves them all ([`super::InboxStore::run_group`],
/// [`super::InboxHandle::grouped`]).
#[derive(Debug, Clone, PartialEq)]
pub enum GroupOp {
    /// [`super::InboxStore::record_verdict`].
    Verdict {
        /// The event's device.
        device: DeviceId,
        /// Its epoch.
        epoch: u64,
        /// Its sequence.
        seq: u64,
        /// The ERP's final answer.
        outcome: dockline_protocol::Outcome,
        /// Now, ms since the Unix epoch.
        now_ms: i64,
    },
    /// [`super::InboxStore::hold_lane`].
    HoldLane {
        /// The lane.
        lane: String,
        /// Now, ms since the Unix epoch.
        now_ms: i64,
    },
    /// [`super::InboxStore::next_in_lane`].
    NextInLane {
        /// The lane.
        lane: String,
        /// Now, ms since the Unix epoch.
        now_ms: i64,
        /// `erp.lane_park_max_ms`.
        park_max_ms: i64,
    },
    /// A verdict, then a look at the event's lane, in this order and in one
    /// transaction (the look sees the verdict): a lane's step after a
    /// booking, one commit instead of two.
    VerdictThenNext {
        /// The event's device.
        device: DeviceId,
        /// Its epoch.
        epoch: u64,
        /// Its sequence.
        seq: u64,
        /// The ERP's final answer.
        outcome: dockline_protocol::Outcome,
        /// Its lane, looked at after the verdict.
        lane: String,
        /// Now, ms since the Unix epoch.
        now_ms: i64,
        /// `erp.lane_park_max_ms`.
        park_max_ms: i64,
    },
}

/// What one [`GroupOp`] answered.
#[derive(Debug, Clone, PartialEq)]
pub enum GroupAnswer {
    /// Whether the verdict was recorded (the row was still pending).
    Verdict(bool),
    /// The lane's next event, if one may go.
    Next(Option<NextPending>),
    /// Whether this collector still holds the lane.
    Held(bool),
    /// Whether the verdict was recorded, and the lane's next event.
    VerdictThenNext(bool, Option<NextPending>),
}
