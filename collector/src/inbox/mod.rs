//! The inbox: every envelope the collector accepted, deduplicated, with its
//! ERP delivery state. [`InboxStore`] is everything the collector asks of
//! it, with two backends behind it that differ only in SQL text and
//! transactions:
//!
//! - [`Inbox`] (`sqlite/`), one SQLite file `{data_dir}/inbox.db` (the
//!   default, embedded; one collector per file);
//! - [`PgInbox`] (`postgres/`), PostgreSQL (`[inbox] url = "postgres://…"`),
//!   which several collectors may share at once (lane claims with a lease,
//!   per-device watermark locks; see its module docs).
//!
//! What only matters with several writers (claiming a lane, a follow-up)
//! is part of the contract too, so delivery is the same code for both: with
//! one writer the claims always succeed. The contract suite
//! (`store_tests.rs`) runs every test on both backends (PostgreSQL when
//! `DOCKLINE_TEST_PG_URL` is set). Storage imports nothing of the HTTP
//! layer: the dashboard's read model lives here ([`read_model`]).
//!
//! # Tables (both backends; PostgreSQL adds `lanes.owner`, `lanes.lease_until`)
//!
//! - `events(device, epoch, seq)` primary key; `site`, `id` (UUID text),
//!   `kind` (`picked` … or `reading`), `envelope` (the single envelope's
//!   protocol CBOR as the device sent it, cut from the batch payload by
//!   [`crate::ingest::received`], or encoded here when a batch comes
//!   without its bytes; enough to rebuild the ERP body), `state` (`pending`,
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
//! The schema version is `PRAGMA user_version` on SQLite
//! ([`SCHEMA_VERSION`]) and the row of `dockline_schema` on PostgreSQL
//! ([`postgres::PG_SCHEMA_VERSION`], its own count). One runner
//! (`migrate.rs`) applies either dialect's steps: all pending steps and
//! the new version in one transaction, so a crash mid-way leaves the
//! previous version intact, and a schema newer than this collector's is
//! refused untouched.
//!
//! # One logic, two dialects
//!
//! Every operation of the write and read-model side is written once, as
//! an `async fn` over a small trait of typed statements that each dialect
//! implements with its SQL text: [`InboxStore::store_batch`] in
//! `batch_write.rs` (trait `BatchTx`), devices, counters, watermarks,
//! holes, verdicts and stats in `bookkeeping.rs` (trait `InboxSql`),
//! replaying or discarding a dead letter in `resolve.rs` (trait
//! `ResolveTx`), migrations in `migrate.rs` (trait `SchemaTx`); a lane
//! look's decision in `lanes.rs` and a group commit's phases in
//! `group.rs`. What the operation
//! decides (which rows go in, which watermark moves, which lanes wake,
//! what the caller gets back) is never in a backend. PostgreSQL's client
//! is async; SQLite's statements never wait, so the SQLite backend runs
//! the same future to its end with a single poll (`ready`).
//!
//! # Invariants
//!
//! - An envelope is stored at most once per `(device, epoch, seq)`; a
//!   duplicate is a row that exists, not a number below the watermark, and
//!   another event under a stored number goes to `quarantine`
//!   ([`crate::inbox::watermark`]).
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
//!   than the device's newest is refused ([`crate::inbox::watermark`]).
//! - `quarantine(device, epoch, seq, id)`: events not trusted (`far_ahead`,
//!   `seq_conflict`), kept for the operator, never delivered from there.
//! - A batch is applied in one transaction: its rows, the watermark and the
//!   duplicate counter commit together or not at all (one fsync per batch).
//!   Callers publish the ack only after [`InboxStore::store_batch`] (or
//!   [`InboxStore::store_received`]) returned.
//! - The database runs in WAL mode with `synchronous=FULL`, so a committed
//!   batch survives a power cut. SQLite plans every statement from its
//!   text alone (`SQLITE_DBCONFIG_ENABLE_QPSG`): otherwise a parameter
//!   that meets a partial index's condition makes SQLite compile the
//!   statement again after every new binding.
//! - Readings are stored as `skipped` (never sent to the ERP); business events
//!   start `pending` and end `booked` or `rejected` exactly once, except that
//!   replaying a dead letter returns its event from `rejected` to `pending`
//!   (it keeps its id, so the ERP's idempotency key is unchanged).
//! - **Delivery order.** A device's business events go to the ERP in
//!   `(epoch, seq)` order and never past a hole: [`InboxStore::next_in_lane`]
//!   hands out the oldest pending event only when its sequence is at or
//!   below its epoch's `complete_up_to` (stored or shed sequences all the
//!   way down). Each epoch has its own watermark. A newer epoch (the device
//!   was reinstalled, or its outbox salvaged without counters) waits until
//!   every pending event of the older epochs is delivered: those events
//!   happened first. An older epoch's hole cannot be filled by a device that
//!   moved on, so it closes when the device answers the gap audit's resend
//!   request with the range as shed (gone); until then the newer epoch waits
//!   too, rather than post out of order.
//! - A device with an `open` dead letter is *blocked*: [`InboxStore::next_in_lane`]
//!   skips its lane, so none of its later events is
//!   posted over the failed one, until the dead letter is replayed or
//!   discarded. An ERP refusal marks the event `rejected` in the same
//!   transaction that stores the dead letter; a dead letter on our side
//!   leaves it `pending`.
//!
//! All methods are blocking; async code reaches them through [`InboxHandle`],
//! which runs them on tokio's blocking pool.
//!
//! # Files
//!
//! | file | role |
//! |---|---|
//! | `mod.rs` | the contract ([`InboxStore`]), `[inbox]` config, re-exports |
//! | `types.rs` | the domain types operations take and return |
//! | `error.rs` | [`InboxError`] |
//! | `handle.rs` | [`InboxHandle`]: the store shared by async tasks |
//! | `watermark.rs` | pure: which claims are believed, how far a watermark moves, holes |
//! | `batch_write.rs` | storing a batch, once for both dialects (`BatchTx`) |
//! | `bookkeeping.rs` | devices, counters, watermarks, holes, verdicts, stats, once (`InboxSql`) |
//! | `migrate.rs` | the one migration runner (`SchemaTx`) |
//! | `lanes.rs` | pure: a lane look's steps and decision, the chosen row as the event to deliver |
//! | `verdict.rs` | pure: what a verdict, a dead letter and its resolution write |
//! | `group.rs` | pure: the phases a group commit's ops run in, set-wise |
//! | `read_model.rs` | the dashboard's read model (plain SQL both dialects run) |
//! | `sqlite/` | SQLite: `schema.rs` (steps), `batch_sql.rs`, `bookkeeping_sql.rs` (statements), delivery's SQL and transactions |
//! | `postgres/` | PostgreSQL: the same three files, delivery's SQL and transactions, claims |

mod batch_write;
mod bookkeeping;
mod error;
mod group;
mod handle;
pub mod lanes;
mod migrate;
pub mod postgres;
pub mod read_model;
mod resolve;
pub mod sqlite;
mod types;
mod verdict;
pub mod watermark;

use dockline_protocol::{Batch, DeviceId, Outcome, SiteId, Status, Verdict};

use crate::ingest::registry::DeviceConfig;
use read_model::{
    DeviceRow, EventVerdict, ExceptionKindCount, ExceptionRow, OrderRow, TimelineEvent,
};

pub use error::InboxError;
pub use handle::{InboxHandle, VerdictCommit};
pub use postgres::PgInbox;
pub use sqlite::{Inbox, SCHEMA_VERSION};
pub use types::*;
pub use watermark::holes_above;

/// `[inbox]`: where the inbox lives.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct InboxConfig {
    /// `postgres://user:password@host:port/database` for a PostgreSQL inbox
    /// that several collectors share; absent: SQLite in
    /// `{data_dir}/inbox.db`. A schema other than `public`:
    /// `?options=-c%20search_path%3Dname`.
    #[serde(default)]
    pub url: Option<String>,
    /// PostgreSQL only: how long a collector's claim on a lane (and on a
    /// follow-up it sends) lasts without renewal, ms. A lane whose collector
    /// died is taken over by another after this long; it must exceed
    /// `erp.timeout_ms`, since a claim is renewed before each ERP attempt.
    #[serde(default = "default_lease_ms")]
    pub lease_ms: u64,
}

impl Default for InboxConfig {
    fn default() -> Self {
        Self {
            url: None,
            lease_ms: default_lease_ms(),
        }
    }
}

fn default_lease_ms() -> u64 {
    crate::inbox::postgres::DEFAULT_LEASE_MS
}

impl InboxConfig {
    /// Checks the rules serde cannot express; `erp_timeout_ms` is the ERP
    /// request timeout a lane claim must outlast.
    pub fn check(&self, erp_timeout_ms: u64) -> Result<(), crate::config_error::ConfigCheckError> {
        if let Some(url) = &self.url
            && !(url.starts_with("postgres://") || url.starts_with("postgresql://"))
        {
            return Err(crate::config_error::ConfigCheckError {
                key: "inbox.url",
                problem: format!(
                    "is {:?}; expected postgres://user:password@host:port/database, or no url for the SQLite inbox in data_dir",
                    crate::inbox::postgres::redact_url(url)
                ),
            });
        }
        if self.url.is_some() && self.lease_ms <= erp_timeout_ms {
            return Err(crate::config_error::ConfigCheckError {
                key: "inbox.lease_ms",
                problem: format!(
                    "is {} but erp.timeout_ms is {erp_timeout_ms}; a lane claim must outlast one ERP request, raise lease_ms above it",
                    self.lease_ms
                ),
            });
        }
        Ok(())
    }

    /// Opens the configured inbox: PostgreSQL when `url` is set, else the
    /// SQLite file `sqlite_path`. Blocking.
    pub fn open(&self, sqlite_path: &std::path::Path) -> Result<Box<dyn InboxStore>, InboxError> {
        Ok(match &self.url {
            Some(url) => Box::new(crate::inbox::postgres::PgInbox::open(url, self.lease_ms)?),
            None => Box::new(Inbox::open(sqlite_path)?),
        })
    }
}

/// Everything the collector asks of its inbox; see the module docs.
///
/// Each method is one transaction: it commits whole or not at all.
pub trait InboxStore: Send + std::fmt::Debug {
    /// `sqlite` or `postgres`, for logs.
    fn backend(&self) -> &'static str;

    /// From now on, booking a proof of delivery that names an order queues
    /// an `invoice.ready` follow-up webhook (see [`InboxStore::due_followups`]).
    fn enable_invoice_followups(&mut self);

    /// Events more than `n` above their device's watermark are quarantined,
    /// not stored ([`crate::inbox::watermark`], `[security] max_seq_ahead`).
    fn set_max_seq_ahead(&mut self, n: u64);

    /// Follow-ups due at `now_ms`, oldest first, at most `limit`. With
    /// several collectors the ones returned are claimed for a while, so
    /// another collector does not send them at the same time.
    fn due_followups(&mut self, now_ms: i64, limit: usize) -> Result<Vec<Followup>, InboxError>;

    /// The earliest time a pending follow-up is due, if any is pending.
    fn next_followup_ms(&self) -> Result<Option<i64>, InboxError>;

    /// Records what became of one attempt to send follow-up `id`; false when
    /// it was no longer pending.
    fn record_followup(
        &mut self,
        id: &str,
        result: &FollowupResult,
        now_ms: i64,
    ) -> Result<bool, InboxError>;

    /// Makes configured devices visible in the stats before they first speak.
    fn register_devices(&mut self, devices: &[DeviceConfig]) -> Result<(), InboxError>;

    /// Stores a batch in one transaction and returns the watermark to ack;
    /// each envelope is stored as its protocol encoding.
    fn store_batch(
        &mut self,
        site: &SiteId,
        batch: &Batch,
        now_ms: i64,
    ) -> Result<StoreOutcome, InboxError> {
        self.store_received(site, batch, None, now_ms)
    }

    /// [`InboxStore::store_batch`] for a batch as it arrived: `envelopes`,
    /// when given, holds each of `batch.events`' bytes as received
    /// ([`crate::ingest::received::ReceivedBatch`]), stored as they are
    /// instead of encoded again. A list of another length is ignored.
    fn store_received(
        &mut self,
        site: &SiteId,
        batch: &Batch,
        envelopes: Option<&[&[u8]]>,
        now_ms: i64,
    ) -> Result<StoreOutcome, InboxError>;

    /// The watermark of a `(device, epoch)`, 0 when nothing is stored.
    fn complete_up_to(&self, device: &DeviceId, epoch: u64) -> Result<u64, InboxError>;

    /// Counts one refused message, in total and under its `reason`.
    fn count_refused(&mut self, reason: &str) -> Result<(), InboxError>;

    /// Verdicts recorded for `device`'s events of `epoch` from `from_seq`
    /// on, in sequence order, at most `limit`.
    fn verdicts_from(
        &self,
        device: &DeviceId,
        epoch: u64,
        from_seq: u64,
        limit: usize,
    ) -> Result<Vec<Verdict>, InboxError>;

    /// Applies a status message; `false` when it was stale and ignored.
    fn record_status(
        &mut self,
        site: &SiteId,
        status: &Status,
        now_ms: i64,
    ) -> Result<bool, InboxError>;

    /// Lanes due for a look at `now_ms`, oldest wake first, at most `limit`.
    /// Lanes another collector is delivering (its claim not yet expired)
    /// are left out.
    fn due_lanes(&self, now_ms: i64, limit: usize) -> Result<Vec<String>, InboxError>;

    /// The earliest time any lane wants a look, if one does.
    fn next_lane_wake_ms(&self) -> Result<Option<i64>, InboxError>;

    /// The lane's next event to deliver, or `None` when none may go now
    /// (or, with several collectors, another one is delivering the lane).
    /// An event handed out claims the lane for this collector.
    fn next_in_lane(
        &mut self,
        lane_key: &str,
        now_ms: i64,
        park_max_ms: i64,
    ) -> Result<Option<NextPending>, InboxError>;

    /// True when lanes are claimed (several collectors may share the
    /// store) and [`InboxStore::hold_lane`] can say no.
    fn claims_lanes(&self) -> bool {
        false
    }

    /// Renews this collector's claim on `lane` before another ERP attempt;
    /// false when the claim was lost (it expired and another collector took
    /// the lane), and the caller must stop delivering it. Always true with
    /// one writer.
    fn hold_lane(&mut self, lane: &str, now_ms: i64) -> Result<bool, InboxError> {
        let _ = (lane, now_ms);
        Ok(true)
    }

    /// Whether this collector runs the gap audit now. With several
    /// collectors on one inbox, one of them does (the others would send the
    /// same resend requests again); it keeps the turn until it stops, and
    /// another takes over then. Always true with one writer.
    fn gap_audit_turn(&mut self) -> Result<bool, InboxError> {
        Ok(true)
    }

    /// Runs `ops` (verdicts and lane looks from many lanes) and answers
    /// each, in order. A backend runs them in one transaction, so one
    /// commit serves them all; if that transaction fails, each op runs
    /// again alone, so every answer is that op's own. No answer is given
    /// before the commit that holds it (a verdict is acked to the device
    /// only after it is durable). The default runs each op alone.
    fn run_group(&mut self, ops: &[GroupOp]) -> Vec<Result<GroupAnswer, InboxError>> {
        ops.iter().map(|op| run_alone(self, op)).collect()
    }

    /// [`InboxStore::run_group`], handing the look of every
    /// [`GroupOp::VerdictThenNext`] to `early` (with the op's index) as soon
    /// as the transaction has made it, before the commit. Only the look
    /// goes early: the verdict's own answer still waits for the commit, so
    /// no ack precedes durability. A lane may so post its next event while
    /// the previous verdict's commit is in flight; the ERP booked that
    /// previous event already, so the ERP still sees the lane in order, and
    /// a crash before the commit re-sends both (the adapters make a repeat
    /// take effect once). A backend with one writer (SQLite) answers early;
    /// the default answers nothing early (PostgreSQL, where the look also
    /// renews a claim other collectors respect, keeps claim and look
    /// behind the commit).
    ///
    /// A backend may also keep a transaction it fsyncs anyway open for the
    /// ops that arrive meanwhile: it calls `more` for them (empty: none, or
    /// the group held long enough) and answers `ops` followed by every op
    /// `more` gave, in that order. One lane's successive verdicts so share
    /// an fsync as separate lanes' verdicts do.
    fn run_group_early(
        &mut self,
        ops: &[GroupOp],
        early: &mut dyn FnMut(usize, Option<NextPending>),
        more: &mut dyn FnMut() -> Vec<GroupOp>,
    ) -> Vec<Result<GroupAnswer, InboxError>> {
        let _ = (early, more);
        self.run_group(ops)
    }

    /// Lanes that are parked or blocked, longest waiting first.
    fn waiting_lanes(&self, limit: usize) -> Result<Vec<LaneStatus>, InboxError>;

    /// Sets a pending row aside as `skipped` (not for the ERP).
    fn mark_skipped(
        &mut self,
        device: &DeviceId,
        epoch: u64,
        seq: u64,
        now_ms: i64,
    ) -> Result<(), InboxError>;

    /// Records a failed attempt that will be retried.
    fn record_attempt(
        &mut self,
        device: &DeviceId,
        epoch: u64,
        seq: u64,
        log: &AttemptLog,
    ) -> Result<(), InboxError>;

    /// Stores a dead letter for a pending event; `None` when it is no longer
    /// pending.
    fn store_dead_letter(
        &mut self,
        device: &DeviceId,
        epoch: u64,
        seq: u64,
        dead: &NewDeadLetter,
    ) -> Result<Option<(i64, bool)>, InboxError>;

    /// Dead letters, newest first; only `open` ones unless `all`.
    fn dead_letters(&self, all: bool, limit: usize) -> Result<Vec<DeadLetterSummary>, InboxError>;

    /// One dead letter with its attempts and envelope.
    fn dead_letter(&self, id: i64) -> Result<Option<DeadLetter>, InboxError>;

    /// Replays (`discard` is `None`) or discards one open dead letter, in
    /// one transaction; see [`InboxStore::replay_dead_letter`] and
    /// [`InboxStore::discard_dead_letter`].
    fn resolve_dead_letter(
        &mut self,
        id: i64,
        now_ms: i64,
        discard: Option<&str>,
    ) -> Result<Resolution, InboxError>;

    /// Replays an open dead letter: its event becomes `pending` again (same
    /// id, so the same idempotency key) and the lane unblocks.
    fn replay_dead_letter(&mut self, id: i64, now_ms: i64) -> Result<Resolution, InboxError> {
        self.resolve_dead_letter(id, now_ms, None)
    }

    /// Discards an open dead letter: a still-pending event becomes
    /// `rejected` with `note` (the device learns it when it next asks for
    /// verdicts) and the lane unblocks.
    fn discard_dead_letter(
        &mut self,
        id: i64,
        note: &str,
        now_ms: i64,
    ) -> Result<Resolution, InboxError> {
        self.resolve_dead_letter(id, now_ms, Some(note))
    }

    /// Records the ERP's final answer; at most once per event.
    fn record_verdict(
        &mut self,
        device: &DeviceId,
        epoch: u64,
        seq: u64,
        outcome: &Outcome,
        now_ms: i64,
    ) -> Result<bool, InboxError>;

    /// Every `(device, epoch)` with open holes.
    fn open_holes(&self) -> Result<Vec<DeviceHoles>, InboxError>;

    /// The newest epoch known for `device` (the highest with a watermark).
    fn newest_epoch(&self, device: &DeviceId) -> Result<Option<u64>, InboxError>;

    /// Counts resend requests the gap audit published.
    fn count_resend_requests(&mut self, n: u64) -> Result<(), InboxError>;

    /// The numbers behind `GET /v1/stats`.
    fn stats(&self) -> Result<Stats, InboxError>;

    /// The dashboard's devices, with their gaps from `holes`
    /// ([`read_model::devices`]).
    fn dashboard_devices(
        &self,
        holes: &[DeviceHoles],
        now_ms: i64,
        silent_after_ms: i64,
    ) -> Result<Vec<DeviceRow>, InboxError>;

    /// The dashboard's orders and shipments ([`read_model::orders`]).
    fn dashboard_orders(&self) -> Result<Vec<OrderRow>, InboxError>;

    /// Orders not delivered without progress since `before_ms`, longest
    /// stalled first ([`read_model::stalled_orders`], `read_model::STALLED_SQL`).
    /// The default filters [`InboxStore::dashboard_orders`], which holds only
    /// the newest orders: a backend should run the query itself.
    fn dashboard_stalled(&self, before_ms: i64) -> Result<Vec<OrderRow>, InboxError> {
        Ok(read_model::stalled(&self.dashboard_orders()?, before_ms, 0))
    }

    /// One lane's events for the dashboard ([`read_model::timeline`]).
    fn dashboard_timeline(&self, lane: &str) -> Result<Vec<TimelineEvent>, InboxError>;

    /// The dashboard's exceptions and their counts ([`read_model::exceptions`]).
    fn dashboard_exceptions(
        &self,
        now_ms: i64,
    ) -> Result<(Vec<ExceptionKindCount>, Vec<ExceptionRow>), InboxError>;

    /// The current verdict of one event ([`read_model::event_verdict`]).
    fn event_verdict(
        &self,
        device: &str,
        epoch: u64,
        seq: u64,
    ) -> Result<Option<EventVerdict>, InboxError>;

    /// The SQLite inbox behind this store, if it is one (tests read its
    /// tables directly).
    fn as_sqlite(&self) -> Option<&Inbox> {
        None
    }
}

/// Runs one [`GroupOp`] as its own transaction.
pub(crate) fn run_alone<S: InboxStore + ?Sized>(
    store: &mut S,
    op: &GroupOp,
) -> Result<GroupAnswer, InboxError> {
    match op {
        GroupOp::Verdict {
            device,
            epoch,
            seq,
            outcome,
            now_ms,
        } => store
            .record_verdict(device, *epoch, *seq, outcome, *now_ms)
            .map(GroupAnswer::Verdict),
        GroupOp::NextInLane {
            lane,
            now_ms,
            park_max_ms,
        } => store
            .next_in_lane(lane, *now_ms, *park_max_ms)
            .map(GroupAnswer::Next),
        GroupOp::HoldLane { lane, now_ms } => store.hold_lane(lane, *now_ms).map(GroupAnswer::Held),
        GroupOp::VerdictThenNext {
            device,
            epoch,
            seq,
            outcome,
            lane,
            now_ms,
            park_max_ms,
        } => {
            let recorded = store.record_verdict(device, *epoch, *seq, outcome, *now_ms)?;
            let next = store.next_in_lane(lane, *now_ms, *park_max_ms)?;
            Ok(GroupAnswer::VerdictThenNext(recorded, next))
        }
    }
}

/// A group's answers from the rows its transaction returned: a lane look's
/// chosen row becomes the event to deliver (decoded after the commit).
pub(crate) fn group_answers(
    ops: &[GroupOp],
    done: Vec<GroupDone>,
) -> Vec<Result<GroupAnswer, InboxError>> {
    ops.iter()
        .zip(done)
        .map(|(op, d)| match (op, d) {
            (_, GroupDone::Verdict(v)) => Ok(GroupAnswer::Verdict(v)),
            (_, GroupDone::Held(h)) => Ok(GroupAnswer::Held(h)),
            (GroupOp::NextInLane { lane, .. }, GroupDone::Next(row)) => row
                .map(|r| lanes::chosen_event(r, lane))
                .transpose()
                .map(GroupAnswer::Next),
            (GroupOp::VerdictThenNext { lane, .. }, GroupDone::VerdictThenNext(v, row)) => row
                .map(|r| lanes::chosen_event(r, lane))
                .transpose()
                .map(|next| GroupAnswer::VerdictThenNext(v, next)),
            (_, GroupDone::Next(_) | GroupDone::VerdictThenNext(..)) => Err(InboxError::Worker(
                "a group answered an op with another op's lane look".into(),
            )),
        })
        .collect()
}

/// What one op of a group did inside its transaction.
pub(crate) enum GroupDone {
    /// The verdict was recorded.
    Verdict(bool),
    /// The lane look's chosen row.
    Next(Option<lanes::ChosenRow>),
    /// The lane's claim was renewed.
    Held(bool),
    /// The verdict was recorded; the look's chosen row.
    VerdictThenNext(bool, Option<lanes::ChosenRow>),
}

/// Runs a future whose awaits never wait (the shared steps of
/// [`batch_write`] and [`migrate`] over a SQLite transaction) to its end
/// with one poll, on this thread.
pub(crate) fn ready<F: std::future::Future>(f: F) -> Result<F::Output, InboxError> {
    let mut f = std::pin::pin!(f);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match f.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(out) => Ok(out),
        std::task::Poll::Pending => Err(InboxError::Worker(
            "a blocking inbox step waited on I/O; it must not (SQLite steps are synchronous)"
                .into(),
        )),
    }
}

pub(crate) fn to_sql(what: &'static str, value: u64) -> Result<i64, InboxError> {
    i64::try_from(value).map_err(|_| InboxError::OutOfRange { what, value })
}

pub(crate) fn from_sql(value: i64) -> u64 {
    // Only values written through `to_sql` are read back, so they are >= 0.
    u64::try_from(value).unwrap_or(0)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use dockline_protocol::Envelope;

    use dockline_protocol::{
        BusinessEvent, EventDetail, EventId, Payload, Priority, References, TimeSource,
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

    #[test]
    fn ready_runs_a_future_that_never_waits() {
        assert_eq!(ready(async { 7 }).expect("ready"), 7);
    }

    #[test]
    fn ready_refuses_a_future_that_waits() {
        let err = ready(std::future::pending::<()>()).expect_err("pending");
        assert!(err.to_string().contains("must not"), "{err}");
    }

    #[test]
    fn inbox_config_is_checked_with_the_fix_named() {
        assert!(InboxConfig::default().check(10_000).is_ok(), "SQLite");
        let pg = |url: &str, lease_ms| InboxConfig {
            url: Some(url.into()),
            lease_ms,
        };
        assert!(pg("postgres://dock@db/inbox", 30_000).check(10_000).is_ok());
        let err = pg("mysql://dock:s3cret@db/inbox", 30_000)
            .check(10_000)
            .expect_err("not PostgreSQL");
        assert_eq!(err.key, "inbox.url");
        assert!(
            err.problem.contains("postgres://user:password@host"),
            "{err}"
        );
        assert!(!err.problem.contains("s3cret"), "{err}");
        let err = pg("postgres://dock@db/inbox", 5_000)
            .check(10_000)
            .expect_err("claim shorter than a request");
        assert_eq!(err.key, "inbox.lease_ms");
        assert!(err.problem.contains("raise lease_ms"), "{err}");
    }

    #[test]
    fn a_shared_group_needs_the_shared_inbox() {
        let example = include_str!("../../collector.example.toml");
        let parse =
            |text: &str| -> crate::config::Config { toml::from_str(text).expect("example parses") };
        let shared = example.replace("# shared_group = ", "shared_group = ");
        let err = parse(&shared)
            .check()
            .expect_err("SQLite is one collector's");
        assert_eq!(err.key, "mqtt.shared_group");
        assert!(err.problem.contains("inbox.url"), "{err}");
        let both = shared.replace("# url = \"postgres://", "url = \"postgres://");
        parse(&both)
            .check()
            .expect("PostgreSQL inbox and shared group");
        let bad = both.replace("shared_group = \"dockline\"", "shared_group = \"a/b\"");
        assert_eq!(
            parse(&bad).check().expect_err("not topic-safe").key,
            "mqtt.shared_group"
        );
    }
}

#[cfg(test)]
mod store_tests;
