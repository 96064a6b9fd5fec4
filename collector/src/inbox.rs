//! The inbox: every envelope the collector accepted, deduplicated, with its
//! ERP delivery state, in one SQLite file (`{data_dir}/inbox.db`).
//!
//! # Layout
//!
//! - `events(device, epoch, seq)` primary key; `site`, `id` (UUID text),
//!   `kind` (`picked` … or `reading`), `envelope` (the single envelope as
//!   protocol CBOR, enough to rebuild the ERP body), `state` (`pending`,
//!   `booked`, `rejected`, `skipped`), `attempts`, `document`, `reason`,
//!   `last_error`, timestamps.
//! - `watermarks(device, epoch)` → `complete_up_to`.
//! - `shed(device, epoch, lo, hi)`: sequence ranges the device reported as
//!   dropped or lost (`Batch::shed`); they will never arrive, so the
//!   watermark passes over them.
//! - `devices(device)` → site, online, session, last seen; since when online
//!   or offline, and the latest heartbeat's backlog, oldest unsent age and
//!   peripherals (for the dashboard).
//! - `counters(name)` → `duplicates`, `refused`, and (created on first use)
//!   `refused.{reason}` (refusals by reason, see [`crate::ingest`]),
//!   `resend_requests` (gap audit requests sent) and `holes_lost` (sequences
//!   of a visible hole that the device then reported shed: lost at the
//!   device).
//! - `attempts(device, epoch, seq, n)`: failed ERP attempts of events not yet
//!   booked or dead-lettered (time, request summary, status or transport
//!   error, body excerpt of at most [`MAX_BODY_EXCERPT`] bytes, decision).
//!   Deleted when the event is booked; moved into the dead letter when it is
//!   dead-lettered.
//! - `dead_letters(id)`: events delivery gave up on: a copy of the original
//!   envelope (not the rendered ERP request, so a replay after a data fix
//!   renders it afresh), every attempt as JSON, the reason and class,
//!   whether the ERP itself refused the event, and `state` (`open`,
//!   `replayed`, `discarded`).
//!
//! The schema version is `PRAGMA user_version` ([`SCHEMA_VERSION`]); each
//! migration step runs in one transaction, so a crash mid-way leaves the
//! previous version intact.
//!
//! # Invariants
//!
//! - An envelope is stored at most once per `(device, epoch, seq)`; a
//!   duplicate is a row that exists, not a number below the watermark, and
//!   another event under a stored number goes to `quarantine`
//!   ([`crate::watermark`]).
//! - `complete_up_to` for a `(device, epoch)` only grows, and every sequence
//!   in `(first_held - 1, complete_up_to]` is present in `events`: the agent
//!   deletes everything up to the acked value, so it must never pass a hole.
//!   The only sequences it passes without a row are the device's own shed
//!   ranges.
//!   Sequences at or below a batch's `first_held - 1` were acknowledged to the
//!   agent earlier (by this or another collector) and count as complete, but
//!   only up to the highest sequence stored: `held` and shed claims above it
//!   are refused and counted (`bad_watermark`), so no device can move its
//!   watermark past what was stored. Events far above the watermark
//!   (`[security] max_seq_ahead`) are quarantined, and a new epoch older
//!   than the device's newest is refused ([`crate::watermark`]).
//! - `quarantine(device, epoch, seq, id)`: events not trusted (`far_ahead`,
//!   `seq_conflict`), kept for the operator, never delivered from there.
//! - A batch is applied in one transaction: its rows, the watermark and the
//!   duplicate counter commit together or not at all. Callers publish the ack
//!   only after [`Inbox::store_batch`] returned.
//! - The database runs in WAL mode with `synchronous=FULL`, so a committed
//!   batch survives a power cut.
//! - Readings are stored as `skipped` (never sent to the ERP); business events
//!   start `pending` and end `booked` or `rejected` exactly once, except that
//!   replaying a dead letter returns its event from `rejected` to `pending`
//!   (it keeps its id, so the ERP's idempotency key is unchanged).
//! - **Delivery order.** A device's business events go to the ERP in
//!   `(epoch, seq)` order and never past a hole: [`Inbox::next_pending`]
//!   hands out the oldest pending event only when its sequence is at or
//!   below its epoch's `complete_up_to` (stored or shed sequences all the
//!   way down). Each epoch has its own watermark. A newer epoch (the device
//!   was reinstalled, or its outbox salvaged without counters) waits until
//!   every pending event of the older epochs is delivered: those events
//!   happened first. An older epoch's hole cannot be filled by a device that
//!   moved on, so it closes when the device answers the gap audit's resend
//!   request with the range as shed (gone); until then the newer epoch waits
//!   too, rather than post out of order.
//! - A device with an `open` dead letter is *blocked*: [`Inbox::next_pending`]
//!   and [`Inbox::pending_devices`] skip it, so none of its later events is
//!   posted over the failed one, until the dead letter is replayed or
//!   discarded. An ERP refusal marks the event `rejected` in the same
//!   transaction that stores the dead letter; a dead letter on our side
//!   leaves it `pending`.
//!
//! All methods are blocking; async code reaches them through [`InboxHandle`],
//! which runs them on tokio's blocking pool.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use dockline_protocol::batch::{MAX_RANGES, uncovered};
use dockline_protocol::{
    Batch, DeviceId, EncodeError, Envelope, EventId, Outcome, Payload, SiteId, Status, StatusKind,
    Verdict, codec,
};
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use crate::delivery::lane::{self, LaneEvent, LaneFacts, LaneStep};
use crate::ingest::registry::DeviceConfig;
pub use crate::store::InboxStore;
use crate::watermark;

/// An inbox operation failed.
#[derive(Debug, thiserror::Error)]
pub enum InboxError {
    /// The database file could not be opened or prepared.
    #[error(
        "cannot open inbox database {path}: {source}; check that data_dir is writable and not used by another collector"
    )]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        source: rusqlite::Error,
    },
    /// A query failed.
    #[error("inbox database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A number does not fit SQLite's signed 64-bit integers.
    #[error("{what} {value} is larger than the inbox can store (at most {max})", max = i64::MAX)]
    OutOfRange {
        /// Which number.
        what: &'static str,
        /// Its value.
        value: u64,
    },
    /// An envelope could not be re-encoded for storage.
    #[error("cannot encode envelope for the inbox: {0}")]
    Encode(#[from] EncodeError),
    /// The blocking worker died (a panic in a query).
    #[error("inbox worker failed: {0}")]
    Worker(String),
    /// The file was written by a newer collector.
    #[error(
        "inbox database {path} has schema version {found}, newer than this collector's {SCHEMA_VERSION}; run the newer dockline-collector or restore a backup"
    )]
    SchemaTooNew {
        /// The file.
        path: PathBuf,
        /// Its `user_version`.
        found: i64,
    },
    /// The PostgreSQL inbox could not be reached or opened.
    #[error(
        "cannot open the inbox database {url}: {problem}; check [inbox] url (postgres://user:password@host:port/database) and that the PostgreSQL server is running and reachable from here"
    )]
    PgOpen {
        /// The URL, without its password.
        url: String,
        /// Why.
        problem: String,
    },
    /// A PostgreSQL query failed.
    #[error("inbox database error (PostgreSQL): {}", crate::pg_inbox::with_causes(.0))]
    Postgres(#[from] tokio_postgres::Error),
    /// A batch opens an epoch older than the device's newest known one.
    #[error(
        "refusing batch of device '{device}' in epoch {epoch}: the device already has the newer epoch {newest} (an epoch is the creation time of the device's outbox, so a new one is never older); a forged or replayed batch, or a device whose outbox was restored from an old backup"
    )]
    OldEpoch {
        /// The device.
        device: DeviceId,
        /// The batch's epoch.
        epoch: u64,
        /// The newest epoch known for the device.
        newest: u64,
    },
    /// A dead letter's stored attempts are not readable JSON.
    #[error("dead letter {id} has unreadable attempts: {problem}")]
    DeadLetterData {
        /// The dead letter.
        id: i64,
        /// Why.
        problem: String,
    },
}

impl InboxError {
    /// Whether the same call would fail the same way again, whatever the
    /// database does: a value the inbox cannot hold or encode. The MQTT edge
    /// refuses (and acknowledges) such a message instead of retrying it.
    pub fn is_deterministic(&self) -> bool {
        matches!(
            self,
            InboxError::OutOfRange { .. } | InboxError::Encode(_) | InboxError::OldEpoch { .. }
        )
    }
}

/// Current inbox schema version.
pub const SCHEMA_VERSION: i64 = 6;

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
    /// Claims of the batch not believed ([`crate::watermark`]): `held N` or
    /// `shed LO..HI` above the highest stored sequence (`bad_watermark`).
    pub refused_claims: Vec<String>,
    /// Events kept in quarantine instead of stored: `far_ahead` (too far
    /// above the watermark, not acked) or `seq_conflict` (another event
    /// under a stored number).
    pub quarantined: Vec<(u64, &'static str)>,
}

/// The refusal reasons one batch's guard decisions count: `bad_watermark`
/// once for any refused claim, and each quarantine reason once.
pub(crate) fn guard_reasons(
    refused_claims: &[String],
    quarantined: &[(u64, &'static str)],
) -> Vec<&'static str> {
    let mut reasons = Vec::new();
    if !refused_claims.is_empty() {
        reasons.push("bad_watermark");
    }
    for (_, r) in quarantined {
        if !reasons.contains(r) {
            reasons.push(r);
        }
    }
    reasons
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
    /// Bounded-class failures in a row (see [`crate::delivery::policy::History`]).
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

/// How long a lane parked on something only the outside world can release
/// (a hole, a predecessor held at one) waits before it is looked at again
/// anyway. Watermark moves wake such lanes at once; this is a safety net.
pub const PARK_RECHECK_MS: i64 = 60_000;

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

/// Version 1: events, watermarks, shed ranges, devices, counters. `IF NOT
/// EXISTS` because files from before `user_version` was kept hold it already.
const V1: &str = "
CREATE TABLE IF NOT EXISTS events (
    device      TEXT    NOT NULL,
    epoch       INTEGER NOT NULL,
    seq         INTEGER NOT NULL,
    site        TEXT    NOT NULL,
    id          TEXT    NOT NULL,
    kind        TEXT    NOT NULL,
    envelope    BLOB    NOT NULL,
    received_ms INTEGER NOT NULL,
    state       TEXT    NOT NULL CHECK (state IN ('pending','booked','rejected','skipped')),
    attempts    INTEGER NOT NULL DEFAULT 0,
    document    TEXT,
    reason      TEXT,
    last_error  TEXT,
    updated_ms  INTEGER,
    PRIMARY KEY (device, epoch, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS events_pending ON events (device, epoch, seq) WHERE state = 'pending';
CREATE TABLE IF NOT EXISTS watermarks (
    device         TEXT    NOT NULL,
    epoch          INTEGER NOT NULL,
    complete_up_to INTEGER NOT NULL,
    PRIMARY KEY (device, epoch)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS shed (
    device TEXT    NOT NULL,
    epoch  INTEGER NOT NULL,
    lo     INTEGER NOT NULL,
    hi     INTEGER NOT NULL,
    PRIMARY KEY (device, epoch, lo, hi)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS devices (
    device       TEXT PRIMARY KEY,
    site         TEXT    NOT NULL,
    online       INTEGER NOT NULL DEFAULT 0,
    session      INTEGER NOT NULL DEFAULT 0,
    last_seen_ms INTEGER
);
CREATE TABLE IF NOT EXISTS counters (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
INSERT OR IGNORE INTO counters (name, value) VALUES ('duplicates', 0), ('refused', 0);
";

/// Version 2: attempts and dead letters.
const V2: &str = "
CREATE TABLE attempts (
    device   TEXT    NOT NULL,
    epoch    INTEGER NOT NULL,
    seq      INTEGER NOT NULL,
    n        INTEGER NOT NULL,
    at_ms    INTEGER NOT NULL,
    request  TEXT    NOT NULL,
    status   INTEGER,
    error    TEXT,
    body     TEXT    NOT NULL,
    decision TEXT    NOT NULL,
    PRIMARY KEY (device, epoch, seq, n)
) WITHOUT ROWID;
CREATE TABLE dead_letters (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    device       TEXT    NOT NULL,
    epoch        INTEGER NOT NULL,
    seq          INTEGER NOT NULL,
    site         TEXT    NOT NULL,
    event_id     TEXT    NOT NULL,
    kind         TEXT    NOT NULL,
    envelope     BLOB    NOT NULL,
    class        TEXT    NOT NULL,
    reason       TEXT    NOT NULL,
    erp_rejected INTEGER NOT NULL,
    attempts     TEXT    NOT NULL,
    state        TEXT    NOT NULL CHECK (state IN ('open','replayed','discarded')),
    created_ms   INTEGER NOT NULL,
    resolved_ms  INTEGER,
    resolution   TEXT
);
CREATE INDEX dead_letters_open ON dead_letters (device) WHERE state = 'open';
";

/// Version 3: business lanes. Every business event gets its lane key and
/// stage ([`crate::delivery::lane`]); `lanes` keeps per lane what the scheduler needs
/// without reading the lane's events: the highest resolved stage, when to
/// look at it next, and why it waits (for `/v1/lanes`). Dead letters name
/// their lane. Existing rows are filled in by [`backfill_lanes`].
const V3: &str = "
ALTER TABLE events ADD COLUMN lane TEXT;
ALTER TABLE events ADD COLUMN stage INTEGER;
ALTER TABLE events ADD COLUMN late INTEGER NOT NULL DEFAULT 0;
CREATE INDEX events_lane_pending ON events (lane, device, epoch, seq) WHERE state = 'pending';
CREATE TABLE lanes (
    lane       TEXT PRIMARY KEY,
    top_stage  INTEGER,
    wake_ms    INTEGER,
    status     TEXT CHECK (status IN ('parked','blocked')),
    reason     TEXT,
    since_ms   INTEGER
) WITHOUT ROWID;
CREATE INDEX lanes_wake ON lanes (wake_ms) WHERE wake_ms IS NOT NULL;
CREATE INDEX lanes_status ON lanes (status) WHERE status IS NOT NULL;
ALTER TABLE dead_letters ADD COLUMN lane TEXT;
CREATE INDEX dead_letters_open_lane ON dead_letters (lane) WHERE state = 'open';
";

/// Version 4: follow-up webhooks (`invoice.ready` after a booked proof of
/// delivery). A row is written in the transaction that books the proof of
/// delivery, with the exact body to send, so a crash can neither lose it
/// nor change it; it is marked `sent` after the receiver's 2xx. A crash
/// between the two sends it again with the same `webhook-id` and
/// `Idempotency-Key`, which a receiver that de-duplicates drops.
const V4: &str = "
CREATE TABLE followups (
    id          TEXT PRIMARY KEY,
    kind        TEXT    NOT NULL,
    device      TEXT    NOT NULL,
    epoch       INTEGER NOT NULL,
    seq         INTEGER NOT NULL,
    order_ref   TEXT    NOT NULL,
    body        BLOB    NOT NULL,
    state       TEXT    NOT NULL CHECK (state IN ('pending','sent','failed')),
    attempts    INTEGER NOT NULL DEFAULT 0,
    bounded     INTEGER NOT NULL DEFAULT 0,
    next_ms     INTEGER NOT NULL,
    last_error  TEXT,
    created_ms  INTEGER NOT NULL,
    sent_ms     INTEGER
) WITHOUT ROWID;
CREATE INDEX followups_due ON followups (next_ms) WHERE state = 'pending';
";

/// Version 5: what the dashboard shows of each device (see
/// [`crate::http::dashboard`]): when it last went online or offline (birth or
/// death), and from its latest heartbeat the outbox backlog, the age of its
/// oldest unsent event, when that heartbeat came, and its peripherals as
/// the heartbeat's `dv` list in JSON.
const V5: &str = "
ALTER TABLE devices ADD COLUMN online_since_ms INTEGER;
ALTER TABLE devices ADD COLUMN backlog INTEGER;
ALTER TABLE devices ADD COLUMN oldest_unsent_ms INTEGER;
ALTER TABLE devices ADD COLUMN heartbeat_ms INTEGER;
ALTER TABLE devices ADD COLUMN peripherals TEXT;
";

/// Version 6: events a device sent that were not trusted
/// ([`crate::watermark`]): too far above its watermark (`far_ahead`), or
/// another event under a number already stored (`seq_conflict`). Kept for
/// the operator; never delivered from here.
const V6: &str = "
CREATE TABLE quarantine (
    device      TEXT    NOT NULL,
    epoch       INTEGER NOT NULL,
    seq         INTEGER NOT NULL,
    id          TEXT    NOT NULL,
    reason      TEXT    NOT NULL,
    envelope    BLOB    NOT NULL,
    received_ms INTEGER NOT NULL,
    PRIMARY KEY (device, epoch, seq, id)
) WITHOUT ROWID;
";

/// Fills in the lane columns of rows stored before version 3, in the
/// migration's transaction: decodes each business event once.
fn backfill_lanes(tx: &rusqlite::Transaction<'_>) -> rusqlite::Result<()> {
    let mut rows = Vec::new();
    {
        let mut stmt = tx.prepare(
            "SELECT device, epoch, seq, envelope FROM events
             WHERE lane IS NULL AND state IN ('pending', 'booked', 'rejected')",
        )?;
        let mut q = stmt.query([])?;
        while let Some(r) = q.next()? {
            rows.push((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, Vec<u8>>(3)?,
            ));
        }
    }
    for (device, epoch, seq, bytes) in rows {
        // An unreadable row gets its device's lane; delivery rejects it.
        let (lane, stage) = match (
            DeviceId::new(device.as_str()),
            codec::decode::<Envelope>(&bytes),
        ) {
            (Ok(dev), Ok(env)) => match env.business_event() {
                Some(e) => (lane::lane_key(&dev, e), lane::stage(&e.detail)),
                None => (format!("device:{device}"), None),
            },
            _ => (format!("device:{device}"), None),
        };
        tx.execute(
            "UPDATE events SET lane = ?4, stage = ?5 WHERE device = ?1 AND epoch = ?2 AND seq = ?3",
            params![device, epoch, seq, lane, stage],
        )?;
    }
    tx.execute_batch(
        "INSERT OR IGNORE INTO lanes (lane, top_stage, wake_ms)
           SELECT lane, max(CASE WHEN state IN ('booked','rejected') THEN stage END),
                  CASE WHEN max(state = 'pending') THEN 0 END
           FROM events WHERE lane IS NOT NULL GROUP BY lane;
         UPDATE dead_letters SET lane = (SELECT e.lane FROM events e WHERE e.device = dead_letters.device
           AND e.epoch = dead_letters.epoch AND e.seq = dead_letters.seq) WHERE lane IS NULL;",
    )
}

/// Brings the schema to [`SCHEMA_VERSION`], one transaction per step.
fn migrate(conn: &mut Connection, path: &Path) -> Result<(), InboxError> {
    let err = |source| InboxError::Open {
        path: path.into(),
        source,
    };
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(err)?;
    if version > SCHEMA_VERSION {
        return Err(InboxError::SchemaTooNew {
            path: path.into(),
            found: version,
        });
    }
    for (to, step) in [(1, V1), (2, V2), (3, V3), (4, V4), (5, V5), (6, V6)] {
        if version < to {
            let tx = conn.transaction().map_err(err)?;
            tx.execute_batch(step).map_err(err)?;
            if to == 3 {
                backfill_lanes(&tx).map_err(err)?;
            }
            tx.pragma_update(None, "user_version", to).map_err(err)?;
            tx.commit().map_err(err)?;
        }
    }
    Ok(())
}

/// The row [`InboxStore::next_in_lane`] chose, as read from either backend.
pub(crate) struct ChosenRow {
    pub(crate) device: String,
    pub(crate) epoch: i64,
    pub(crate) seq: i64,
    pub(crate) site: String,
    pub(crate) envelope: Vec<u8>,
    pub(crate) attempts: i64,
    pub(crate) late: bool,
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
        }))),
        Err(e) => Ok(unreadable(e.to_string())),
    }
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

pub(crate) fn to_sql(what: &'static str, value: u64) -> Result<i64, InboxError> {
    i64::try_from(value).map_err(|_| InboxError::OutOfRange { what, value })
}

pub(crate) fn from_sql(value: i64) -> u64 {
    // Only values written through `to_sql` are read back, so they are >= 0.
    u64::try_from(value).unwrap_or(0)
}

/// Groups ascending sequences into inclusive ranges, at most
/// [`MAX_RANGES`] of them (the protocol's cap; the rest is acked later).
pub(crate) fn ranges(seqs: impl Iterator<Item = u64>) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for seq in seqs {
        if let Some((_, hi)) = out.last_mut()
            && hi.checked_add(1) == Some(seq)
        {
            *hi = seq;
        } else if out.len() == MAX_RANGES {
            break;
        } else {
            out.push((seq, seq));
        }
    }
    out
}

/// The holes above `mark`: sequences below the highest of `stored` (the
/// stored sequences above `mark`, ascending) that are neither stored nor in
/// a `shed` range; at most [`MAX_RANGES`] of them, lowest first.
pub fn holes_above(mark: u64, stored: &[u64], shed: &[(u64, u64)]) -> Vec<(u64, u64)> {
    match stored.last() {
        Some(top) => uncovered(mark.saturating_add(1), top.saturating_sub(1), stored, shed),
        None => Vec::new(),
    }
}

/// The SQLite inbox. Blocking; see the module docs for its invariants.
#[derive(Debug)]
pub struct Inbox {
    conn: Connection,
    /// Booking a proof of delivery queues an `invoice.ready` follow-up.
    invoice_followups: bool,
    /// `[security] max_seq_ahead` ([`crate::watermark::far_ahead`]).
    max_seq_ahead: u64,
}

impl Inbox {
    /// Opens (creating if needed) the inbox at `path`.
    pub fn open(path: &Path) -> Result<Self, InboxError> {
        let open_err = |source| InboxError::Open {
            path: path.into(),
            source,
        };
        let mut conn = Connection::open(path).map_err(open_err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(open_err)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(open_err)?;
        // Another process (a second collector, a doctor command) may hold the
        // write lock briefly; wait instead of failing the batch.
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(open_err)?;
        migrate(&mut conn, path)?;
        Ok(Self {
            conn,
            invoice_followups: false,
            max_seq_ahead: watermark::DEFAULT_MAX_SEQ_AHEAD,
        })
    }

    /// Runs read-only queries on the inbox's connection (the dashboard's,
    /// [`crate::http::dashboard::queries`]); they see only committed data.
    pub(crate) fn read<R>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<R>,
    ) -> Result<R, InboxError> {
        Ok(f(&self.conn)?)
    }

    /// From now on, booking a proof of delivery that names an order queues
    /// an `invoice.ready` follow-up webhook (see [`Inbox::due_followups`]).
    pub fn enable_invoice_followups(&mut self) {
        self.invoice_followups = true;
    }

    /// Events more than `n` above their device's watermark are quarantined
    /// ([`crate::watermark`]).
    pub fn set_max_seq_ahead(&mut self, n: u64) {
        self.max_seq_ahead = n;
    }

    /// Follow-ups due at `now_ms`, oldest first, at most `limit`.
    pub fn due_followups(&self, now_ms: i64, limit: usize) -> Result<Vec<Followup>, InboxError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, kind, order_ref, body, attempts, bounded FROM followups
             WHERE state = 'pending' AND next_ms <= ?1 ORDER BY next_ms LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![now_ms, to_sql("limit", limit as u64)?], |r| {
            Ok(Followup {
                id: r.get(0)?,
                kind: r.get(1)?,
                order: r.get(2)?,
                body: r.get(3)?,
                attempts: r.get(4)?,
                bounded: r.get(5)?,
            })
        })?;
        let mut out = Vec::new();
        for row in rows {
            out.push(row?);
        }
        Ok(out)
    }

    /// The earliest time a pending follow-up is due, if any is pending.
    pub fn next_followup_ms(&self) -> Result<Option<i64>, InboxError> {
        Ok(self.conn.query_row(
            "SELECT min(next_ms) FROM followups WHERE state = 'pending'",
            [],
            |r| r.get::<_, Option<i64>>(0),
        )?)
    }

    /// Records what became of one attempt to send follow-up `id`: `sent`,
    /// `failed` for good (with the reason), or still pending and tried
    /// again at `next_ms`. Returns false when it was no longer pending.
    pub fn record_followup(
        &mut self,
        id: &str,
        result: &FollowupResult,
        now_ms: i64,
    ) -> Result<bool, InboxError> {
        let changed = match result {
            FollowupResult::Sent => self.conn.execute(
                "UPDATE followups SET state = 'sent', sent_ms = ?2, attempts = attempts + 1
                 WHERE id = ?1 AND state = 'pending'",
                params![id, now_ms],
            )?,
            FollowupResult::Failed { reason } => self.conn.execute(
                "UPDATE followups SET state = 'failed', last_error = ?2, attempts = attempts + 1
                 WHERE id = ?1 AND state = 'pending'",
                params![id, reason],
            )?,
            FollowupResult::Retry {
                next_ms,
                error,
                bounded,
            } => self.conn.execute(
                "UPDATE followups SET next_ms = ?2, last_error = ?3, attempts = attempts + 1,
                   bounded = ?4
                 WHERE id = ?1 AND state = 'pending'",
                params![id, next_ms, error, bounded],
            )?,
        };
        Ok(changed == 1)
    }

    /// Makes configured devices visible in the stats before they first speak.
    pub fn register_devices(&mut self, devices: &[DeviceConfig]) -> Result<(), InboxError> {
        let tx = self.conn.transaction()?;
        {
            let mut stmt =
                tx.prepare_cached("INSERT OR IGNORE INTO devices (device, site) VALUES (?1, ?2)")?;
            for d in devices {
                stmt.execute(params![d.id.as_str(), d.site.as_str()])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Stores a batch in one transaction and returns the watermark to ack.
    ///
    /// The batch must come from a decoded, validated message (ascending
    /// sequences, one device and epoch), which [`codec::decode`] guarantees.
    pub fn store_batch(
        &mut self,
        site: &SiteId,
        batch: &Batch,
        now_ms: i64,
    ) -> Result<StoreOutcome, InboxError> {
        let device = batch.device.as_str();
        let epoch = to_sql("epoch", batch.epoch)?;
        let max_ahead = self.max_seq_ahead;
        let tx = self.conn.transaction()?;
        let known: Option<i64> = tx
            .query_row(
                "SELECT complete_up_to FROM watermarks WHERE device = ?1 AND epoch = ?2",
                params![device, epoch],
                |r| r.get::<_, i64>(0),
            )
            .optional()?;
        if known.is_none() {
            let newest: Option<i64> = tx.query_row(
                "SELECT MAX(epoch) FROM watermarks WHERE device = ?1",
                params![device],
                |r| r.get(0),
            )?;
            let newest = newest.map(from_sql);
            if watermark::epoch_too_old(batch.epoch, newest) {
                return Err(InboxError::OldEpoch {
                    device: batch.device.clone(),
                    epoch: batch.epoch,
                    newest: newest.unwrap_or(0),
                });
            }
        }
        let mut mark: u64 = known.map_or(0, from_sql);
        // The highest sequence stored before this batch: shed sequences below
        // it were a visible hole, now lost at the device.
        let top_before: u64 = tx
            .query_row(
                "SELECT MAX(seq) FROM events WHERE device = ?1 AND epoch = ?2",
                params![device, epoch],
                |r| r.get::<_, Option<i64>>(0),
            )?
            .map_or(0, from_sql);
        let mut stored = 0usize;
        let mut duplicates = 0usize;
        let mut quarantined: Vec<(u64, &'static str)> = Vec::new();
        // Sequences this batch stored (not its duplicates).
        let mut inserted: Vec<u64> = Vec::with_capacity(batch.events.len());
        // Lanes of the newly stored events, in first-seen order.
        let mut touched: Vec<String> = Vec::new();
        let mark_before = mark;
        {
            let mut insert = tx.prepare_cached(
                "INSERT OR IGNORE INTO events
                   (device, epoch, seq, site, id, kind, envelope, received_ms, state, lane, stage)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            )?;
            let mut stored_id = tx.prepare_cached(
                "SELECT id FROM events WHERE device = ?1 AND epoch = ?2 AND seq = ?3",
            )?;
            let mut quarantine = tx.prepare_cached(
                "INSERT OR IGNORE INTO quarantine (device, epoch, seq, id, reason, envelope, received_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            for env in &batch.events {
                let seq_sql = to_sql("seq", env.seq)?;
                let id = env.id.to_string();
                if watermark::far_ahead(env.seq, mark, max_ahead) {
                    quarantine.execute(params![
                        device,
                        epoch,
                        seq_sql,
                        id,
                        "far_ahead",
                        codec::encode(env)?,
                        now_ms
                    ])?;
                    quarantined.push((env.seq, "far_ahead"));
                    continue;
                }
                let (kind, state, lane, stage) = match &env.payload {
                    Payload::Event(e) => (
                        e.detail.kind_name(),
                        "pending",
                        Some(lane::lane_key(&batch.device, e)),
                        lane::stage(&e.detail),
                    ),
                    Payload::Reading(_) => ("reading", "skipped", None, None),
                };
                let bytes = codec::encode(env)?;
                let changed = insert.execute(params![
                    device,
                    epoch,
                    seq_sql,
                    site.as_str(),
                    id,
                    kind,
                    bytes,
                    now_ms,
                    state,
                    lane,
                    stage,
                ])?;
                if changed == 0 {
                    let existing: String =
                        stored_id.query_row(params![device, epoch, seq_sql], |r| r.get(0))?;
                    if existing == id {
                        duplicates += 1;
                    } else {
                        // Another event under the same number: keep it for
                        // the operator, never in place of the stored one.
                        quarantine.execute(params![
                            device,
                            epoch,
                            seq_sql,
                            id,
                            "seq_conflict",
                            bytes,
                            now_ms
                        ])?;
                        quarantined.push((env.seq, "seq_conflict"));
                    }
                } else {
                    stored += 1;
                    inserted.push(env.seq);
                    if let Some(l) = lane
                        && !touched.contains(&l)
                    {
                        touched.push(l);
                    }
                }
            }
        }
        {
            // A new event may be the one a parked lane waits for: look at
            // its lane again now.
            let mut wake = tx.prepare_cached(
                "INSERT INTO lanes (lane, wake_ms) VALUES (?1, ?2)
                 ON CONFLICT (lane) DO UPDATE SET wake_ms = excluded.wake_ms",
            )?;
            for l in &touched {
                wake.execute(params![l, now_ms])?;
            }
        }
        let top_after = inserted.iter().copied().max().unwrap_or(0).max(top_before);
        let mut newly_shed = Vec::new();
        let mut refused_claims: Vec<String> = Vec::new();
        {
            let mut insert = tx.prepare_cached(
                "INSERT OR IGNORE INTO shed (device, epoch, lo, hi) VALUES (?1, ?2, ?3, ?4)",
            )?;
            for &(lo, hi) in &batch.shed {
                if hi <= mark {
                    continue;
                }
                if !watermark::shed_recordable(hi, top_after) {
                    refused_claims.push(format!("shed {lo}..{hi}"));
                    continue;
                }
                if insert.execute(params![
                    device,
                    epoch,
                    to_sql("shed range start", lo)?,
                    to_sql("shed range end", hi)?
                ])? == 1
                {
                    newly_shed.push((lo, hi));
                }
            }
        }
        let claim = watermark::claim_held(mark, batch.first_held, top_after);
        if let Some(claimed) = claim.refused {
            refused_claims.push(format!("held {}", claimed.saturating_add(1)));
        }
        mark = claim.mark;
        {
            // Walk forward over stored sequences and shed ranges, never past
            // the highest stored one. Each step is a primary-key lookup, so a
            // batch costs O(its size) lookups.
            let mut shed_at = tx.prepare_cached(
                "SELECT MAX(hi) FROM shed WHERE device = ?1 AND epoch = ?2 AND lo <= ?3 AND hi >= ?3",
            )?;
            let mut present = tx.prepare_cached(
                "SELECT 1 FROM events WHERE device = ?1 AND epoch = ?2 AND seq = ?3",
            )?;
            while mark < top_after {
                let next = mark + 1;
                let next_sql = to_sql("sequence", next)?;
                let shed_hi: Option<i64> =
                    shed_at.query_row(params![device, epoch, next_sql], |r| r.get(0))?;
                if let Some(hi) = shed_hi {
                    mark = from_sql(hi).min(top_after);
                } else if present.exists(params![device, epoch, next_sql])? {
                    mark = next;
                } else {
                    break;
                }
            }
        }
        // The watermark passed sequences this batch did not store (stored
        // earlier behind a hole, possibly repeated in this batch as
        // duplicates, as the agent's backlog repeats what its live lane sent
        // ahead; or shed): their lanes, and the lanes of the device's newer
        // epochs (rule 2 of `crate::delivery::lane`), may go on now.
        let from_batch = inserted
            .iter()
            .filter(|&&seq| seq > mark_before && seq <= mark)
            .count() as u64;
        if mark - mark_before > from_batch {
            tx.execute(
                "UPDATE lanes SET wake_ms = ?5 WHERE lane IN
                   (SELECT lane FROM events WHERE device = ?1 AND state = 'pending' AND lane IS NOT NULL
                    AND ((epoch = ?2 AND seq > ?3 AND seq <= ?4) OR epoch > ?2))",
                params![
                    device,
                    epoch,
                    to_sql("watermark", mark_before)?,
                    to_sql("watermark", mark)?,
                    now_ms
                ],
            )?;
        }
        let also_stored = ranges(
            batch
                .events
                .iter()
                .map(|e| e.seq)
                .filter(|s| *s > mark && !quarantined.iter().any(|(q, _)| q == s)),
        );
        tx.execute(
            "INSERT INTO watermarks (device, epoch, complete_up_to) VALUES (?1, ?2, ?3)
             ON CONFLICT (device, epoch) DO UPDATE SET complete_up_to = excluded.complete_up_to",
            params![device, epoch, to_sql("watermark", mark)?],
        )?;
        tx.execute(
            "INSERT INTO devices (device, site, last_seen_ms) VALUES (?1, ?2, ?3)
             ON CONFLICT (device) DO UPDATE SET site = excluded.site, last_seen_ms = excluded.last_seen_ms",
            params![device, site.as_str(), now_ms],
        )?;
        if duplicates > 0 {
            add_to_counter(&tx, "duplicates", duplicates as u64)?;
        }
        let lost: u64 = newly_shed
            .iter()
            .filter(|(lo, _)| *lo <= top_before)
            .map(|(lo, hi)| (*hi).min(top_before) - lo + 1)
            .sum();
        if lost > 0 {
            add_to_counter(&tx, "holes_lost", lost)?;
        }
        for reason in guard_reasons(&refused_claims, &quarantined) {
            add_to_counter(&tx, "refused", 1)?;
            add_to_counter(&tx, &format!("refused.{reason}"), 1)?;
        }
        tx.commit()?;
        Ok(StoreOutcome {
            stored,
            duplicates,
            complete_up_to: mark,
            also_stored,
            newly_shed,
            refused_claims,
            quarantined,
        })
    }

    /// The watermark of a `(device, epoch)`, 0 when nothing is stored.
    pub fn complete_up_to(&self, device: &DeviceId, epoch: u64) -> Result<u64, InboxError> {
        Ok(self
            .conn
            .query_row(
                "SELECT complete_up_to FROM watermarks WHERE device = ?1 AND epoch = ?2",
                params![device.as_str(), to_sql("epoch", epoch)?],
                |r| r.get::<_, i64>(0),
            )
            .optional()?
            .map_or(0, from_sql))
    }

    /// Counts one refused message, in total and under its `reason` (a
    /// short key such as `malformed` or `rate_limited`).
    pub fn count_refused(&mut self, reason: &str) -> Result<(), InboxError> {
        let tx = self.conn.transaction()?;
        add_to_counter(&tx, "refused", 1)?;
        add_to_counter(&tx, &format!("refused.{reason}"), 1)?;
        tx.commit()?;
        Ok(())
    }

    /// Verdicts recorded for `device`'s events of `epoch` from `from_seq` on,
    /// in sequence order, at most `limit`: the answer to an agent that
    /// missed verdict acks while it was offline.
    pub fn verdicts_from(
        &self,
        device: &DeviceId,
        epoch: u64,
        from_seq: u64,
        limit: usize,
    ) -> Result<Vec<Verdict>, InboxError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT seq, id, state, document, reason FROM events
             WHERE device = ?1 AND epoch = ?2 AND seq >= ?3 AND state IN ('booked', 'rejected')
             ORDER BY seq LIMIT ?4",
        )?;
        let rows = stmt.query_map(
            params![
                device.as_str(),
                to_sql("epoch", epoch)?,
                to_sql("seq", from_seq)?,
                to_sql("limit", limit as u64)?
            ],
            |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, Option<String>>(3)?,
                    r.get::<_, Option<String>>(4)?,
                ))
            },
        )?;
        let mut out = Vec::new();
        for row in rows {
            let (seq, id, state, document, reason) = row?;
            // Ids were written from parsed envelopes, so they parse back.
            let Some(id) = EventId::parse(&id) else {
                continue;
            };
            let outcome = if state == "booked" {
                Outcome::Booked {
                    document: document.unwrap_or_default(),
                }
            } else {
                Outcome::Rejected {
                    reason: reason.unwrap_or_default(),
                }
            };
            out.push(Verdict {
                seq: from_sql(seq),
                id,
                outcome,
            });
        }
        Ok(out)
    }

    /// Applies a status message; returns `false` when it was stale (from an
    /// older session than one already seen) and was ignored.
    pub fn record_status(
        &mut self,
        site: &SiteId,
        status: &Status,
        now_ms: i64,
    ) -> Result<bool, InboxError> {
        let session = to_sql("session", status.session)?;
        let online = !matches!(status.kind, StatusKind::Death { .. });
        let tx = self.conn.transaction()?;
        let known: Option<i64> = tx
            .query_row(
                "SELECT session FROM devices WHERE device = ?1",
                params![status.device.as_str()],
                |r| r.get(0),
            )
            .optional()?;
        if known.is_some_and(|k| session < k) {
            return Ok(false);
        }
        tx.execute(
            "INSERT INTO devices (device, site, online, session, last_seen_ms)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (device) DO UPDATE SET site = excluded.site, online = excluded.online,
               session = excluded.session, last_seen_ms = excluded.last_seen_ms",
            params![
                status.device.as_str(),
                site.as_str(),
                online,
                session,
                now_ms
            ],
        )?;
        // For the dashboard: when it went online or offline, and the
        // latest heartbeat's backlog and peripherals.
        match &status.kind {
            StatusKind::Birth { .. } | StatusKind::Death { .. } => {
                tx.execute(
                    "UPDATE devices SET online_since_ms = ?2 WHERE device = ?1",
                    params![status.device.as_str(), now_ms],
                )?;
            }
            StatusKind::Heartbeat {
                queued,
                oldest_unacked_ms,
                health,
            } => {
                // Plain structs of strings and numbers: encoding cannot fail.
                let peripherals = health
                    .as_ref()
                    .and_then(|h| h.devices.as_ref())
                    .and_then(|list| serde_json::to_string(list).ok());
                tx.execute(
                    "UPDATE devices SET backlog = ?2, oldest_unsent_ms = ?3, heartbeat_ms = ?4,
                       peripherals = ?5,
                       online_since_ms = coalesce(online_since_ms, ?4)
                     WHERE device = ?1",
                    params![
                        status.device.as_str(),
                        to_sql("queued", *queued)?,
                        to_sql("oldest_unacked_ms", *oldest_unacked_ms)?,
                        now_ms,
                        peripherals
                    ],
                )?;
            }
        }
        tx.commit()?;
        Ok(true)
    }

    /// Lanes due for a look at `now_ms` (woken by ingest, a replay, a
    /// watermark move, or a park deadline that passed), oldest wake first,
    /// at most `limit`. One index range scan on `lanes_wake`, whatever the
    /// backlog.
    pub fn due_lanes(&self, now_ms: i64, limit: usize) -> Result<Vec<String>, InboxError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT lane FROM lanes WHERE wake_ms IS NOT NULL AND wake_ms <= ?1
             ORDER BY wake_ms LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![now_ms, to_sql("limit", limit as u64)?], |r| {
            r.get::<_, String>(0)
        })?;
        let mut out = Vec::new();
        for row in rows {
            out.push(row?);
        }
        Ok(out)
    }

    /// The earliest time any lane wants a look, if one does.
    pub fn next_lane_wake_ms(&self) -> Result<Option<i64>, InboxError> {
        Ok(self.conn.query_row(
            "SELECT min(wake_ms) FROM lanes WHERE wake_ms IS NOT NULL",
            [],
            |r| r.get::<_, Option<i64>>(0),
        )?)
    }

    /// The lane's next event to deliver, per the rules of [`crate::delivery::lane`],
    /// or `None` when it has none that may go now. In the same call (so no
    /// ingest can slip in between) the lane's row records what it waits for
    /// and when to look again: parked lanes until their deadline (or a
    /// minute, as a safety net, when only an outside event can release
    /// them), blocked lanes until a replay or discard wakes them.
    ///
    /// An event handed out keeps its lane due, so a collector that dies
    /// mid-delivery finds the lane again after a restart.
    ///
    /// Its commit is not fsynced (`synchronous=NORMAL` for this one
    /// transaction): everything it writes is a scheduling hint that the next
    /// look recomputes (a lane's wake time and why it waits, an event's
    /// `late` mark), and the next fsynced commit (a verdict, a batch) makes
    /// it durable anyway, because the WAL is synced as a whole. That halves
    /// the fsyncs per delivered event.
    pub fn next_in_lane(
        &mut self,
        lane_key: &str,
        now_ms: i64,
        park_max_ms: i64,
    ) -> Result<Option<NextPending>, InboxError> {
        self.conn.pragma_update(None, "synchronous", "NORMAL")?;
        let next = self.next_in_lane_tx(lane_key, now_ms, park_max_ms);
        let restored = self.conn.pragma_update(None, "synchronous", "FULL");
        let next = next?;
        restored?;
        Ok(next)
    }

    fn next_in_lane_tx(
        &mut self,
        lane_key: &str,
        now_ms: i64,
        park_max_ms: i64,
    ) -> Result<Option<NextPending>, InboxError> {
        let tx = self.conn.transaction()?;
        let mut events: Vec<LaneEvent> = Vec::new();
        {
            let mut stmt = tx.prepare_cached(
                "SELECT e.device, e.epoch, e.seq, e.stage, e.received_ms,
                   e.seq > coalesce(w.complete_up_to, 0)
                 FROM events e
                 LEFT JOIN watermarks w ON w.device = e.device AND w.epoch = e.epoch
                 WHERE e.lane = ?1 AND e.state = 'pending'
                 ORDER BY e.device, e.epoch, e.seq",
            )?;
            let mut older_hole = tx.prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM watermarks w WHERE w.device = ?1 AND w.epoch < ?2
                   AND EXISTS (SELECT 1 FROM events e WHERE e.device = w.device
                               AND e.epoch = w.epoch AND e.seq > w.complete_up_to))",
            )?;
            let mut q = stmt.query(params![lane_key])?;
            while let Some(r) = q.next()? {
                let device: String = r.get(0)?;
                let epoch: i64 = r.get(1)?;
                let held: bool = r.get(5)?;
                let held = held
                    || older_hole.query_row(params![device, epoch], |r| r.get::<_, bool>(0))?;
                events.push(LaneEvent {
                    device,
                    epoch: from_sql(epoch),
                    seq: from_sql(r.get(2)?),
                    stage: r
                        .get::<_, Option<i64>>(3)?
                        .and_then(|s| u8::try_from(s).ok()),
                    received_ms: r.get(4)?,
                    held,
                });
            }
        }
        let top_resolved: Option<i64> = tx
            .query_row(
                "SELECT top_stage FROM lanes WHERE lane = ?1",
                params![lane_key],
                |r| r.get(0),
            )
            .optional()?
            .flatten();
        let dead_letter: Option<(i64, i64, String)> = tx
            .query_row(
                "SELECT id, created_ms, device || ' seq ' || seq || ' (' || kind || '): ' || reason
                 FROM dead_letters WHERE state = 'open' AND lane = ?1 ORDER BY id LIMIT 1",
                params![lane_key],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        let facts = LaneFacts {
            chain: lane::has_chain(lane_key),
            top_resolved: top_resolved.and_then(|s| u8::try_from(s).ok()),
            dead_letter: dead_letter.as_ref().map(|d| d.0),
            park_max_ms,
        };
        let step = lane::next_step(&events, facts, now_ms);
        let set_lane = |wake: Option<i64>,
                        status: Option<&str>,
                        reason: Option<String>,
                        since: Option<i64>|
         -> Result<(), InboxError> {
            tx.execute(
                "INSERT INTO lanes (lane, wake_ms, status, reason, since_ms) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (lane) DO UPDATE SET wake_ms = excluded.wake_ms, status = excluded.status,
                   reason = excluded.reason,
                   since_ms = CASE WHEN lanes.status IS excluded.status AND lanes.since_ms IS NOT NULL
                                   THEN lanes.since_ms ELSE excluded.since_ms END",
                params![lane_key, wake, status, reason, since],
            )?;
            Ok(())
        };
        let (index, late) = match step {
            LaneStep::Idle => {
                set_lane(None, None, None, None)?;
                tx.commit()?;
                return Ok(None);
            }
            LaneStep::Blocked { .. } => {
                let (id, since, what) = dead_letter.unwrap_or((0, now_ms, String::new()));
                set_lane(
                    None,
                    Some("blocked"),
                    Some(format!("dead letter {id}: {what}")),
                    Some(since),
                )?;
                tx.commit()?;
                return Ok(None);
            }
            LaneStep::Park { reason, until_ms } => {
                let wake = until_ms.unwrap_or(now_ms.saturating_add(PARK_RECHECK_MS));
                set_lane(
                    Some(wake),
                    Some("parked"),
                    Some(reason.to_string()),
                    Some(now_ms),
                )?;
                tx.commit()?;
                return Ok(None);
            }
            LaneStep::Deliver { index, late } => (index, late),
        };
        let chosen = &events[index];
        let (dev, ep, sq) = (
            chosen.device.clone(),
            to_sql("epoch", chosen.epoch)?,
            to_sql("seq", chosen.seq)?,
        );
        set_lane(Some(now_ms), None, None, None)?;
        if late {
            tx.execute(
                "UPDATE events SET late = 1 WHERE device = ?1 AND epoch = ?2 AND seq = ?3",
                params![dev, ep, sq],
            )?;
        }
        let (site, bytes, attempts): (String, Vec<u8>, i64) = tx.query_row(
            "SELECT site, envelope, attempts FROM events WHERE device = ?1 AND epoch = ?2 AND seq = ?3",
            params![dev, ep, sq],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?;
        tx.commit()?;
        chosen_event(
            ChosenRow {
                device: dev,
                epoch: ep,
                seq: sq,
                site,
                envelope: bytes,
                attempts,
                late,
            },
            lane_key,
        )
        .map(Some)
    }

    /// Lanes that are parked or blocked, longest waiting first, at most
    /// `limit` (`GET /v1/lanes`).
    pub fn waiting_lanes(&self, limit: usize) -> Result<Vec<LaneStatus>, InboxError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT l.lane, l.status, coalesce(l.reason, ''), coalesce(l.since_ms, 0), l.wake_ms,
               (SELECT count(*) FROM events e WHERE e.lane = l.lane AND e.state = 'pending')
             FROM lanes l WHERE l.status IS NOT NULL ORDER BY l.since_ms LIMIT ?1",
        )?;
        let rows = stmt.query_map(params![to_sql("limit", limit as u64)?], |r| {
            Ok(LaneStatus {
                lane: r.get(0)?,
                status: r.get(1)?,
                reason: r.get(2)?,
                since_ms: r.get(3)?,
                next_look_ms: r.get(4)?,
                pending: from_sql(r.get(5)?),
            })
        })?;
        let mut out = Vec::new();
        for row in rows {
            out.push(row?);
        }
        Ok(out)
    }

    /// Sets a pending row aside as `skipped` (not for the ERP).
    pub fn mark_skipped(
        &mut self,
        device: &DeviceId,
        epoch: u64,
        seq: u64,
        now_ms: i64,
    ) -> Result<(), InboxError> {
        self.conn.execute(
            "UPDATE events SET state = 'skipped', updated_ms = ?4
             WHERE device = ?1 AND epoch = ?2 AND seq = ?3 AND state = 'pending'",
            params![
                device.as_str(),
                to_sql("epoch", epoch)?,
                to_sql("seq", seq)?,
                now_ms
            ],
        )?;
        Ok(())
    }

    /// Records a failed attempt that will be retried (or that halted or
    /// paused the endpoint): counts it on the event and keeps its log.
    /// `log.n` is ignored; the attempt is numbered from the event's count.
    pub fn record_attempt(
        &mut self,
        device: &DeviceId,
        epoch: u64,
        seq: u64,
        log: &AttemptLog,
    ) -> Result<(), InboxError> {
        let tx = self.conn.transaction()?;
        insert_attempt(&tx, device, epoch, seq, log)?;
        tx.execute(
            "UPDATE events SET attempts = attempts + 1, last_error = ?4, updated_ms = ?5
             WHERE device = ?1 AND epoch = ?2 AND seq = ?3",
            params![
                device.as_str(),
                to_sql("epoch", epoch)?,
                to_sql("seq", seq)?,
                last_error_of(log),
                log.at_ms
            ],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Stores a dead letter for a pending event: its final attempt, a copy of
    /// the envelope, every attempt logged so far, in one transaction that
    /// also blocks the device's lane. When the ERP refused the event, the
    /// event becomes `rejected`; returns whether that verdict was recorded
    /// (so the caller publishes it). Returns `Ok(None)` when the event is no
    /// longer pending (someone else decided it).
    pub fn store_dead_letter(
        &mut self,
        device: &DeviceId,
        epoch: u64,
        seq: u64,
        dead: &NewDeadLetter,
    ) -> Result<Option<(i64, bool)>, InboxError> {
        let (dev, ep, sq) = (
            device.as_str(),
            to_sql("epoch", epoch)?,
            to_sql("seq", seq)?,
        );
        let tx = self.conn.transaction()?;
        // site, id, kind, envelope, lane
        type Row = (String, String, String, Vec<u8>, Option<String>);
        let row: Option<Row> = tx
            .query_row(
                "SELECT site, id, kind, envelope, lane FROM events
                 WHERE device = ?1 AND epoch = ?2 AND seq = ?3 AND state = 'pending'",
                params![dev, ep, sq],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
            .optional()?;
        let Some((site, event_id, kind, envelope, lane)) = row else {
            return Ok(None);
        };
        insert_attempt(&tx, device, epoch, seq, &dead.last)?;
        let attempts = attempts_of(&tx, device, epoch, seq)?;
        let attempts_json =
            serde_json::to_string(&attempts).map_err(|e| InboxError::DeadLetterData {
                id: 0,
                problem: e.to_string(),
            })?;
        tx.execute(
            "INSERT INTO dead_letters (device, epoch, seq, site, event_id, kind, envelope, class,
               reason, erp_rejected, attempts, state, created_ms, lane)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, 'open', ?12, ?13)",
            params![
                dev,
                ep,
                sq,
                site,
                event_id,
                kind,
                envelope,
                dead.class,
                dead.reason,
                dead.erp_rejected,
                attempts_json,
                dead.last.at_ms,
                lane
            ],
        )?;
        let id = tx.last_insert_rowid();
        tx.execute(
            "DELETE FROM attempts WHERE device = ?1 AND epoch = ?2 AND seq = ?3",
            params![dev, ep, sq],
        )?;
        let (state, reason) = if dead.erp_rejected {
            ("rejected", Some(dead.reason.as_str()))
        } else {
            ("pending", None)
        };
        tx.execute(
            "UPDATE events SET state = ?4, reason = ?5, last_error = ?6,
               attempts = attempts + 1, updated_ms = ?7
             WHERE device = ?1 AND epoch = ?2 AND seq = ?3",
            params![dev, ep, sq, state, reason, dead.reason, dead.last.at_ms],
        )?;
        tx.commit()?;
        Ok(Some((id, dead.erp_rejected)))
    }

    /// Dead letters, newest first; only `open` ones unless `all`.
    pub fn dead_letters(
        &self,
        all: bool,
        limit: usize,
    ) -> Result<Vec<DeadLetterSummary>, InboxError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, device, epoch, seq, event_id, kind, class, reason, erp_rejected, state,
               created_ms, resolved_ms, json_array_length(attempts)
             FROM dead_letters WHERE ?1 OR state = 'open' ORDER BY id DESC LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![all, to_sql("limit", limit as u64)?], summary_row)?;
        let mut out = Vec::new();
        for row in rows {
            out.push(row?);
        }
        Ok(out)
    }

    /// One dead letter with its attempts and envelope.
    pub fn dead_letter(&self, id: i64) -> Result<Option<DeadLetter>, InboxError> {
        let row = self
            .conn
            .query_row(
                "SELECT id, device, epoch, seq, event_id, kind, class, reason, erp_rejected, state,
                   created_ms, resolved_ms, json_array_length(attempts),
                   site, envelope, attempts, resolution
                 FROM dead_letters WHERE id = ?1",
                params![id],
                |r| {
                    Ok((
                        summary_row(r)?,
                        r.get::<_, String>(13)?,
                        r.get::<_, Vec<u8>>(14)?,
                        r.get::<_, String>(15)?,
                        r.get::<_, Option<String>>(16)?,
                    ))
                },
            )
            .optional()?;
        let Some((summary, site, bytes, attempts, resolution)) = row else {
            return Ok(None);
        };
        let attempts: Vec<AttemptLog> =
            serde_json::from_str(&attempts).map_err(|e| InboxError::DeadLetterData {
                id,
                problem: e.to_string(),
            })?;
        Ok(Some(DeadLetter {
            summary,
            site,
            envelope: codec::decode::<Envelope>(&bytes).map_err(|e| e.to_string()),
            attempts,
            resolution,
        }))
    }

    /// Replays an open dead letter: its event becomes `pending` again (same
    /// id, so the same idempotency key) and the lane unblocks.
    pub fn replay_dead_letter(&mut self, id: i64, now_ms: i64) -> Result<Resolution, InboxError> {
        self.resolve(id, now_ms, None)
    }

    /// Discards an open dead letter: a still-pending event becomes
    /// `rejected` with `note` (the device learns it when it next asks for
    /// verdicts) and the lane unblocks.
    pub fn discard_dead_letter(
        &mut self,
        id: i64,
        note: &str,
        now_ms: i64,
    ) -> Result<Resolution, InboxError> {
        self.resolve(id, now_ms, Some(note))
    }

    /// Replay (`discard` is `None`) or discard one open dead letter.
    fn resolve(
        &mut self,
        id: i64,
        now_ms: i64,
        discard: Option<&str>,
    ) -> Result<Resolution, InboxError> {
        let tx = self.conn.transaction()?;
        let row: Option<(String, i64, i64, String, String, Option<String>)> = tx
            .query_row(
                "SELECT device, epoch, seq, state, reason, lane FROM dead_letters WHERE id = ?1",
                params![id],
                |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                    ))
                },
            )
            .optional()?;
        let Some((device, epoch, seq, state, reason, lane)) = row else {
            return Ok(Resolution::NotFound);
        };
        if state != "open" {
            return Ok(Resolution::AlreadyResolved { state });
        }
        let (new_state, resolution) = match discard {
            None => ("replayed", "replayed".to_string()),
            Some(note) => ("discarded", format!("discarded: {note}")),
        };
        tx.execute(
            "UPDATE dead_letters SET state = ?2, resolved_ms = ?3, resolution = ?4 WHERE id = ?1",
            params![id, new_state, now_ms, resolution],
        )?;
        match discard {
            None => tx.execute(
                "UPDATE events SET state = 'pending', reason = NULL, document = NULL, updated_ms = ?4
                 WHERE device = ?1 AND epoch = ?2 AND seq = ?3 AND state IN ('pending', 'rejected')",
                params![device, epoch, seq, now_ms],
            )?,
            Some(note) => tx.execute(
                "UPDATE events SET state = 'rejected', updated_ms = ?4,
                   reason = 'discarded by an operator (' || ?5 || '): ' || ?6
                 WHERE device = ?1 AND epoch = ?2 AND seq = ?3 AND state = 'pending'",
                params![device, epoch, seq, now_ms, note, reason],
            )?,
        };
        if discard.is_some() {
            // A discarded event counts as resolved for its lane's chain.
            tx.execute(
                "UPDATE lanes SET top_stage = max(coalesce(top_stage, -1), coalesce(
                   (SELECT stage FROM events WHERE device = ?2 AND epoch = ?3 AND seq = ?4), -1))
                 WHERE lane = ?1",
                params![lane, device, epoch, seq],
            )?;
        }
        // Look at the lane again now.
        tx.execute(
            "UPDATE lanes SET wake_ms = ?2 WHERE lane = ?1",
            params![lane, now_ms],
        )?;
        let still_blocked: bool = tx.query_row(
            "SELECT EXISTS (SELECT 1 FROM dead_letters WHERE state = 'open' AND lane IS ?1)",
            params![lane],
            |r| r.get(0),
        )?;
        tx.commit()?;
        Ok(Resolution::Done {
            lane: lane.unwrap_or_default(),
            // Stored device ids passed the id rule on the way in.
            device: DeviceId::new(device).map_err(|e| InboxError::DeadLetterData {
                id,
                problem: e.to_string(),
            })?,
            still_blocked,
        })
    }

    /// Records the ERP's final answer (counts as an attempt). Only a pending
    /// row changes, so a verdict is recorded at most once.
    pub fn record_verdict(
        &mut self,
        device: &DeviceId,
        epoch: u64,
        seq: u64,
        outcome: &Outcome,
        now_ms: i64,
    ) -> Result<bool, InboxError> {
        let (state, document, reason) = match outcome {
            Outcome::Booked { document } => ("booked", Some(document.as_str()), None),
            Outcome::Rejected { reason } => ("rejected", None, Some(reason.as_str())),
        };
        let (ep, sq) = (to_sql("epoch", epoch)?, to_sql("seq", seq)?);
        let tx = self.conn.transaction()?;
        let changed = tx.execute(
            "UPDATE events SET state = ?4, document = ?5, reason = ?6,
               attempts = attempts + 1, updated_ms = ?7
             WHERE device = ?1 AND epoch = ?2 AND seq = ?3 AND state = 'pending'",
            params![device.as_str(), ep, sq, state, document, reason, now_ms],
        )?;
        if changed == 1 && self.invoice_followups && state == "booked" {
            queue_invoice(&tx, device, ep, sq, document.unwrap_or_default(), now_ms)?;
        }
        if changed == 1 {
            // The lane's chain moves on (rule 4 of `crate::delivery::lane`).
            tx.execute(
                "UPDATE lanes SET top_stage = max(coalesce(top_stage, -1), e.stage)
                 FROM (SELECT lane, stage FROM events WHERE device = ?1 AND epoch = ?2 AND seq = ?3
                       AND stage IS NOT NULL) AS e
                 WHERE lanes.lane = e.lane",
                params![device.as_str(), ep, sq],
            )?;
        }
        // The failed attempts before a verdict are no longer needed.
        tx.execute(
            "DELETE FROM attempts WHERE device = ?1 AND epoch = ?2 AND seq = ?3",
            params![device.as_str(), ep, sq],
        )?;
        tx.commit()?;
        Ok(changed == 1)
    }

    /// The newest epoch known for `device` (the highest with a watermark).
    pub fn newest_epoch(&self, device: &DeviceId) -> Result<Option<u64>, InboxError> {
        let newest: Option<i64> = self.conn.query_row(
            "SELECT MAX(epoch) FROM watermarks WHERE device = ?1",
            params![device.as_str()],
            |r| r.get(0),
        )?;
        Ok(newest.map(from_sql))
    }

    /// Every `(device, epoch)` with open holes (see [`DeviceHoles`]).
    ///
    /// One seek per watermark row finds the epochs with anything stored
    /// above the watermark; only those read their rows above it (few: only
    /// what arrived behind a hole).
    pub fn open_holes(&self) -> Result<Vec<DeviceHoles>, InboxError> {
        let mut marks = self.conn.prepare_cached(
            "SELECT w.device, w.epoch, w.complete_up_to, coalesce(d.site, '') FROM watermarks w
             LEFT JOIN devices d ON d.device = w.device
             WHERE EXISTS (SELECT 1 FROM events e WHERE e.device = w.device
                           AND e.epoch = w.epoch AND e.seq > w.complete_up_to)
             ORDER BY w.device, w.epoch",
        )?;
        let rows = marks.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, String>(3)?,
            ))
        })?;
        let mut found = Vec::new();
        for row in rows {
            found.push(row?);
        }
        let mut above = self.conn.prepare_cached(
            "SELECT seq FROM events WHERE device = ?1 AND epoch = ?2 AND seq > ?3
             ORDER BY seq LIMIT 100000",
        )?;
        let mut shed = self.conn.prepare_cached(
            "SELECT lo, hi FROM shed WHERE device = ?1 AND epoch = ?2 AND hi > ?3 ORDER BY lo",
        )?;
        let mut out = Vec::new();
        for (device, epoch, mark, site) in found {
            // Stored ids passed the id rules on the way in.
            let (Ok(dev), Ok(site)) = (DeviceId::new(device.as_str()), SiteId::new(site)) else {
                continue;
            };
            let stored = above
                .query_map(params![device, epoch, mark], |r| r.get::<_, i64>(0))?
                .map(|r| r.map(from_sql))
                .collect::<Result<Vec<u64>, _>>()?;
            let shed_ranges = shed
                .query_map(params![device, epoch, mark], |r| {
                    Ok((from_sql(r.get(0)?), from_sql(r.get(1)?)))
                })?
                .collect::<Result<Vec<(u64, u64)>, _>>()?;
            let holes = holes_above(from_sql(mark), &stored, &shed_ranges);
            if !holes.is_empty() {
                out.push(DeviceHoles {
                    device: dev,
                    site,
                    epoch: from_sql(epoch),
                    complete_up_to: from_sql(mark),
                    holes,
                });
            }
        }
        Ok(out)
    }

    /// Counts resend requests the gap audit published.
    pub fn count_resend_requests(&mut self, n: u64) -> Result<(), InboxError> {
        let tx = self.conn.transaction()?;
        add_to_counter(&tx, "resend_requests", n)?;
        tx.commit()?;
        Ok(())
    }

    /// The numbers behind `GET /v1/stats`, read from the database.
    pub fn stats(&self) -> Result<Stats, InboxError> {
        let counter = |name: &str| -> Result<u64, InboxError> {
            Ok(self
                .conn
                .query_row(
                    "SELECT value FROM counters WHERE name = ?1",
                    params![name],
                    |r| r.get::<_, i64>(0),
                )
                .optional()?
                .map_or(0, from_sql))
        };
        let mut stats = Stats {
            received: 0,
            duplicates: counter("duplicates")?,
            refused: counter("refused")?,
            refused_by_reason: std::collections::BTreeMap::new(),
            resend_requests: counter("resend_requests")?,
            holes_lost: counter("holes_lost")?,
            pending: 0,
            booked: 0,
            rejected: 0,
            dead_letters: 0,
            blocked_devices: Vec::new(),
            blocked_lanes: 0,
            parked_lanes: 0,
            delivered_out_of_order: 0,
            followups: std::collections::BTreeMap::new(),
            devices: Vec::new(),
        };
        let mut followups = self
            .conn
            .prepare_cached("SELECT state, COUNT(*) FROM followups GROUP BY state")?;
        let rows =
            followups.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
        for row in rows {
            let (state, n) = row?;
            stats.followups.insert(state, from_sql(n));
        }
        let mut by_status = self.conn.prepare_cached(
            "SELECT status, COUNT(*) FROM lanes WHERE status IS NOT NULL GROUP BY status",
        )?;
        let rows =
            by_status.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
        for row in rows {
            let (status, n) = row?;
            match status.as_str() {
                "parked" => stats.parked_lanes = from_sql(n),
                "blocked" => stats.blocked_lanes = from_sql(n),
                _ => {}
            }
        }
        let mut reasons = self
            .conn
            .prepare_cached("SELECT name, value FROM counters WHERE name LIKE 'refused.%'")?;
        let rows = reasons.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
        for row in rows {
            let (name, n) = row?;
            if let Some(reason) = name.strip_prefix("refused.") {
                stats
                    .refused_by_reason
                    .insert(reason.to_string(), from_sql(n));
            }
        }
        let mut open = self.conn.prepare_cached(
            "SELECT device, COUNT(*) FROM dead_letters WHERE state = 'open' GROUP BY device ORDER BY device",
        )?;
        let rows = open.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
        for row in rows {
            let (device, n) = row?;
            stats.dead_letters += from_sql(n);
            stats.blocked_devices.push(device);
        }
        let mut by_state = self
            .conn
            .prepare_cached("SELECT state, COUNT(*), SUM(late) FROM events GROUP BY state")?;
        let rows = by_state.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, Option<i64>>(2)?,
            ))
        })?;
        for row in rows {
            let (state, n, late) = row?;
            if state == "booked" {
                stats.delivered_out_of_order = late.map_or(0, from_sql);
            }
            let n = from_sql(n);
            stats.received += n;
            match state.as_str() {
                "pending" => stats.pending = n,
                "booked" => stats.booked = n,
                "rejected" => stats.rejected = n,
                _ => {}
            }
        }
        let mut devices = self.conn.prepare_cached(
            "SELECT d.device, d.site, d.online, d.last_seen_ms,
               (SELECT w.complete_up_to FROM watermarks w WHERE w.device = d.device
                ORDER BY w.epoch DESC LIMIT 1)
             FROM devices d ORDER BY d.device",
        )?;
        let rows = devices.query_map([], |r| {
            Ok(DeviceStats {
                device: r.get(0)?,
                site: r.get(1)?,
                online: r.get(2)?,
                last_seen_ms: r.get(3)?,
                complete_up_to: r.get::<_, Option<i64>>(4)?.map(from_sql),
                holes: Vec::new(),
            })
        })?;
        for row in rows {
            stats.devices.push(row?);
        }
        for h in self.open_holes()? {
            if let Some(d) = stats
                .devices
                .iter_mut()
                .find(|d| d.device == h.device.as_str())
            {
                d.holes.extend(h.holes.iter().map(|&(from, to)| HoleStats {
                    epoch: h.epoch,
                    from,
                    to,
                }));
            }
        }
        Ok(stats)
    }
}

/// Queues the `invoice.ready` follow-up of a just-booked event, in the
/// booking's transaction, if it is a proof of delivery naming an order.
fn queue_invoice(
    tx: &rusqlite::Transaction<'_>,
    device: &DeviceId,
    epoch: i64,
    seq: i64,
    document: &str,
    now_ms: i64,
) -> Result<(), InboxError> {
    let (site, bytes, kind): (String, Vec<u8>, String) = tx.query_row(
        "SELECT site, envelope, kind FROM events WHERE device = ?1 AND epoch = ?2 AND seq = ?3",
        params![device.as_str(), epoch, seq],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?;
    if kind != "delivered" {
        return Ok(());
    }
    let Ok(envelope) = codec::decode::<Envelope>(&bytes) else {
        return Ok(());
    };
    let Some(ready) = crate::delivery::invoice_ready::InvoiceReady::of(&site, &envelope, document)
    else {
        return Ok(());
    };
    tx.execute(
        "INSERT OR IGNORE INTO followups (id, kind, device, epoch, seq, order_ref, body, state,
           next_ms, created_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'pending', ?8, ?8)",
        params![
            ready.id,
            crate::delivery::invoice_ready::KIND,
            device.as_str(),
            epoch,
            seq,
            ready.order,
            ready.body,
            now_ms
        ],
    )?;
    Ok(())
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

/// Adds `n` to a counter, creating it at 0 first if it is new.
fn add_to_counter(tx: &rusqlite::Transaction<'_>, name: &str, n: u64) -> Result<(), InboxError> {
    tx.execute(
        "INSERT INTO counters (name, value) VALUES (?1, ?2)
         ON CONFLICT (name) DO UPDATE SET value = value + excluded.value",
        params![name, to_sql("counter increment", n)?],
    )?;
    Ok(())
}

fn insert_attempt(
    tx: &rusqlite::Transaction<'_>,
    device: &DeviceId,
    epoch: u64,
    seq: u64,
    log: &AttemptLog,
) -> Result<(), InboxError> {
    tx.execute(
        "INSERT OR REPLACE INTO attempts (device, epoch, seq, n, at_ms, request, status, error, body, decision)
         SELECT device, epoch, seq, attempts + 1, ?4, ?5, ?6, ?7, ?8, ?9 FROM events
         WHERE device = ?1 AND epoch = ?2 AND seq = ?3",
        params![
            device.as_str(),
            to_sql("epoch", epoch)?,
            to_sql("seq", seq)?,
            log.at_ms,
            log.request,
            log.status,
            log.error,
            excerpt(&log.body, MAX_BODY_EXCERPT),
            log.decision
        ],
    )?;
    Ok(())
}

fn attempts_of(
    tx: &rusqlite::Transaction<'_>,
    device: &DeviceId,
    epoch: u64,
    seq: u64,
) -> Result<Vec<AttemptLog>, InboxError> {
    let mut stmt = tx.prepare_cached(
        "SELECT n, at_ms, request, status, error, body, decision FROM attempts
         WHERE device = ?1 AND epoch = ?2 AND seq = ?3 ORDER BY n",
    )?;
    let rows = stmt.query_map(
        params![
            device.as_str(),
            to_sql("epoch", epoch)?,
            to_sql("seq", seq)?
        ],
        |r| {
            Ok(AttemptLog {
                n: r.get(0)?,
                at_ms: r.get(1)?,
                request: r.get(2)?,
                status: r.get(3)?,
                error: r.get(4)?,
                body: r.get(5)?,
                decision: r.get(6)?,
            })
        },
    )?;
    let mut out = Vec::new();
    for row in rows {
        out.push(row?);
    }
    Ok(out)
}

fn summary_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<DeadLetterSummary> {
    Ok(DeadLetterSummary {
        id: r.get(0)?,
        device: r.get(1)?,
        epoch: from_sql(r.get(2)?),
        seq: from_sql(r.get(3)?),
        event_id: r.get(4)?,
        kind: r.get(5)?,
        class: r.get(6)?,
        reason: r.get(7)?,
        erp_rejected: r.get(8)?,
        state: r.get(9)?,
        created_ms: r.get(10)?,
        resolved_ms: r.get(11)?,
        attempts: usize::try_from(r.get::<_, i64>(12)?).unwrap_or(0),
    })
}

/// Shares one inbox store (SQLite [`Inbox`] or PostgreSQL
/// [`crate::pg_inbox::PgInbox`], see [`InboxStore`]) between async tasks,
/// running every call on tokio's blocking pool so the database never stalls
/// the runtime threads.
#[derive(Debug, Clone)]
pub struct InboxHandle {
    inner: Arc<Mutex<Box<dyn InboxStore>>>,
    /// The backend claims lanes ([`InboxStore::hold_lane`] can say no).
    claims: bool,
}

impl InboxHandle {
    /// Wraps an open inbox store.
    pub fn new(store: impl InboxStore + 'static) -> Self {
        Self::from_box(Box::new(store))
    }

    /// Wraps an open inbox store chosen at run time.
    pub fn from_box(store: Box<dyn InboxStore>) -> Self {
        Self {
            claims: store.claims_lanes(),
            inner: Arc::new(Mutex::new(store)),
        }
    }

    /// True when several collectors may share the store, so delivery must
    /// renew its lane claims ([`InboxStore::hold_lane`]).
    pub fn has_claims(&self) -> bool {
        self.claims
    }

    /// Runs `f` with exclusive access to the inbox on the blocking pool.
    pub async fn call<R, F>(&self, f: F) -> Result<R, InboxError>
    where
        R: Send + 'static,
        F: FnOnce(&mut dyn InboxStore) -> Result<R, InboxError> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            // A poisoned lock means an earlier call panicked mid-way; the
            // database rolled back its open transaction, so the connection
            // is still consistent and can be used.
            let mut inbox = inner.lock().unwrap_or_else(|p| p.into_inner());
            f(inbox.as_mut())
        })
        .await
        .map_err(|e| InboxError::Worker(e.to_string()))?
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use dockline_protocol::{
        BusinessEvent, EventDetail, EventId, Priority, References, TimeSource,
    };

    pub(crate) fn site() -> SiteId {
        SiteId::new("dc-north").expect("site")
    }

    pub(crate) fn envelope(device: &str, epoch: u64, seq: u64) -> Envelope {
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&seq.to_be_bytes());
        id[8..].copy_from_slice(&epoch.to_be_bytes());
        Envelope {
            v: 1,
            device: DeviceId::new(device).expect("device"),
            epoch,
            seq,
            id: EventId(id),
            captured_ms: 1_700_000_000_000,
            time_source: TimeSource::Ntp,
            priority: Priority::MustDeliver,
            payload: Payload::Event(BusinessEvent {
                detail: EventDetail::Picked {
                    item: "04012345678901".into(),
                    quantity: 1,
                    lot: None,
                },
                // No business reference: the device's own lane, so these
                // tests see one lane per device.
                refs: References::default(),
            }),
        }
    }

    pub(crate) fn batch(device: &str, epoch: u64, first_held: u64, seqs: &[u64]) -> Batch {
        Batch {
            v: 1,
            device: DeviceId::new(device).expect("device"),
            epoch,
            first_held,
            events: seqs.iter().map(|s| envelope(device, epoch, *s)).collect(),
            shed: Vec::new(),
        }
    }
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod store_tests;
