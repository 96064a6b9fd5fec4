//! The inbox's storage contract: [`InboxStore`] is everything the collector
//! asks of its inbox, with two backends behind it:
//!
//! - [`crate::inbox::Inbox`], SQLite in `{data_dir}/inbox.db` (the default,
//!   embedded; one collector per file);
//! - [`crate::pg_inbox::PgInbox`], PostgreSQL (`[inbox] url =
//!   "postgres://…"`), which several collectors may share at once.
//!
//! Both keep the invariants stated in [`crate::inbox`]'s module docs; the
//! unit tests in `inbox.rs` run against both (PostgreSQL when
//! `DOCKLINE_TEST_PG_URL` is set). What only matters with several writers
//! (claiming a lane, claiming a follow-up) is part of the contract too, so
//! the delivery code is the same for both: with one writer the claims
//! always succeed.
//!
//! The methods are blocking; async code reaches them through
//! [`crate::inbox::InboxHandle`], which runs them off the async runtime.

use dockline_protocol::{Batch, DeviceId, Outcome, SiteId, Status, Verdict};

use crate::http::dashboard::queries::{
    self, DeviceRow, EventVerdict, ExceptionKindCount, ExceptionRow, OrderRow, TimelineEvent,
};
use crate::inbox::{
    AttemptLog, DeadLetter, DeadLetterSummary, DeviceHoles, Followup, FollowupResult, Inbox,
    InboxError, LaneStatus, NewDeadLetter, NextPending, Resolution, Stats, StoreOutcome,
};
use crate::ingest::registry::DeviceConfig;

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
    crate::pg_inbox::DEFAULT_LEASE_MS
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
                    crate::pg_inbox::redact_url(url)
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
            Some(url) => Box::new(crate::pg_inbox::PgInbox::open(url, self.lease_ms)?),
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
    /// not stored ([`crate::watermark`], `[security] max_seq_ahead`).
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

    /// Stores a batch in one transaction and returns the watermark to ack.
    fn store_batch(
        &mut self,
        site: &SiteId,
        batch: &Batch,
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

    /// Replays an open dead letter.
    fn replay_dead_letter(&mut self, id: i64, now_ms: i64) -> Result<Resolution, InboxError>;

    /// Discards an open dead letter.
    fn discard_dead_letter(
        &mut self,
        id: i64,
        note: &str,
        now_ms: i64,
    ) -> Result<Resolution, InboxError>;

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
    /// ([`queries::devices`]).
    fn dashboard_devices(
        &self,
        holes: &[DeviceHoles],
        now_ms: i64,
        silent_after_ms: i64,
    ) -> Result<Vec<DeviceRow>, InboxError>;

    /// The dashboard's orders and shipments ([`queries::orders`]).
    fn dashboard_orders(&self) -> Result<Vec<OrderRow>, InboxError>;

    /// Orders not delivered without progress since `before_ms`, longest
    /// stalled first ([`queries::stalled_orders`], `queries::STALLED_SQL`).
    /// The default filters [`InboxStore::dashboard_orders`], which holds only
    /// the newest orders: a backend should run the query itself.
    fn dashboard_stalled(&self, before_ms: i64) -> Result<Vec<OrderRow>, InboxError> {
        Ok(queries::stalled(&self.dashboard_orders()?, before_ms, 0))
    }

    /// One lane's events for the dashboard ([`queries::timeline`]).
    fn dashboard_timeline(&self, lane: &str) -> Result<Vec<TimelineEvent>, InboxError>;

    /// The dashboard's exceptions and their counts ([`queries::exceptions`]).
    fn dashboard_exceptions(
        &self,
        now_ms: i64,
    ) -> Result<(Vec<ExceptionKindCount>, Vec<ExceptionRow>), InboxError>;

    /// The current verdict of one event ([`queries::event_verdict`]).
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

/// The SQLite inbox: each method is the inherent one of the same name.
impl InboxStore for Inbox {
    fn backend(&self) -> &'static str {
        "sqlite"
    }
    fn enable_invoice_followups(&mut self) {
        Inbox::enable_invoice_followups(self);
    }
    fn set_max_seq_ahead(&mut self, n: u64) {
        Inbox::set_max_seq_ahead(self, n);
    }
    fn due_followups(&mut self, now_ms: i64, limit: usize) -> Result<Vec<Followup>, InboxError> {
        Inbox::due_followups(self, now_ms, limit)
    }
    fn next_followup_ms(&self) -> Result<Option<i64>, InboxError> {
        Inbox::next_followup_ms(self)
    }
    fn record_followup(
        &mut self,
        id: &str,
        result: &FollowupResult,
        now_ms: i64,
    ) -> Result<bool, InboxError> {
        Inbox::record_followup(self, id, result, now_ms)
    }
    fn register_devices(&mut self, devices: &[DeviceConfig]) -> Result<(), InboxError> {
        Inbox::register_devices(self, devices)
    }
    fn store_batch(
        &mut self,
        site: &SiteId,
        batch: &Batch,
        now_ms: i64,
    ) -> Result<StoreOutcome, InboxError> {
        Inbox::store_batch(self, site, batch, now_ms)
    }
    fn complete_up_to(&self, device: &DeviceId, epoch: u64) -> Result<u64, InboxError> {
        Inbox::complete_up_to(self, device, epoch)
    }
    fn count_refused(&mut self, reason: &str) -> Result<(), InboxError> {
        Inbox::count_refused(self, reason)
    }
    fn verdicts_from(
        &self,
        device: &DeviceId,
        epoch: u64,
        from_seq: u64,
        limit: usize,
    ) -> Result<Vec<Verdict>, InboxError> {
        Inbox::verdicts_from(self, device, epoch, from_seq, limit)
    }
    fn record_status(
        &mut self,
        site: &SiteId,
        status: &Status,
        now_ms: i64,
    ) -> Result<bool, InboxError> {
        Inbox::record_status(self, site, status, now_ms)
    }
    fn due_lanes(&self, now_ms: i64, limit: usize) -> Result<Vec<String>, InboxError> {
        Inbox::due_lanes(self, now_ms, limit)
    }
    fn next_lane_wake_ms(&self) -> Result<Option<i64>, InboxError> {
        Inbox::next_lane_wake_ms(self)
    }
    fn next_in_lane(
        &mut self,
        lane_key: &str,
        now_ms: i64,
        park_max_ms: i64,
    ) -> Result<Option<NextPending>, InboxError> {
        Inbox::next_in_lane(self, lane_key, now_ms, park_max_ms)
    }
    fn waiting_lanes(&self, limit: usize) -> Result<Vec<LaneStatus>, InboxError> {
        Inbox::waiting_lanes(self, limit)
    }
    fn mark_skipped(
        &mut self,
        device: &DeviceId,
        epoch: u64,
        seq: u64,
        now_ms: i64,
    ) -> Result<(), InboxError> {
        Inbox::mark_skipped(self, device, epoch, seq, now_ms)
    }
    fn record_attempt(
        &mut self,
        device: &DeviceId,
        epoch: u64,
        seq: u64,
        log: &AttemptLog,
    ) -> Result<(), InboxError> {
        Inbox::record_attempt(self, device, epoch, seq, log)
    }
    fn store_dead_letter(
        &mut self,
        device: &DeviceId,
        epoch: u64,
        seq: u64,
        dead: &NewDeadLetter,
    ) -> Result<Option<(i64, bool)>, InboxError> {
        Inbox::store_dead_letter(self, device, epoch, seq, dead)
    }
    fn dead_letters(&self, all: bool, limit: usize) -> Result<Vec<DeadLetterSummary>, InboxError> {
        Inbox::dead_letters(self, all, limit)
    }
    fn dead_letter(&self, id: i64) -> Result<Option<DeadLetter>, InboxError> {
        Inbox::dead_letter(self, id)
    }
    fn replay_dead_letter(&mut self, id: i64, now_ms: i64) -> Result<Resolution, InboxError> {
        Inbox::replay_dead_letter(self, id, now_ms)
    }
    fn discard_dead_letter(
        &mut self,
        id: i64,
        note: &str,
        now_ms: i64,
    ) -> Result<Resolution, InboxError> {
        Inbox::discard_dead_letter(self, id, note, now_ms)
    }
    fn record_verdict(
        &mut self,
        device: &DeviceId,
        epoch: u64,
        seq: u64,
        outcome: &Outcome,
        now_ms: i64,
    ) -> Result<bool, InboxError> {
        Inbox::record_verdict(self, device, epoch, seq, outcome, now_ms)
    }
    fn open_holes(&self) -> Result<Vec<DeviceHoles>, InboxError> {
        Inbox::open_holes(self)
    }
    fn newest_epoch(&self, device: &DeviceId) -> Result<Option<u64>, InboxError> {
        Inbox::newest_epoch(self, device)
    }
    fn count_resend_requests(&mut self, n: u64) -> Result<(), InboxError> {
        Inbox::count_resend_requests(self, n)
    }
    fn stats(&self) -> Result<Stats, InboxError> {
        Inbox::stats(self)
    }
    fn dashboard_devices(
        &self,
        holes: &[DeviceHoles],
        now_ms: i64,
        silent_after_ms: i64,
    ) -> Result<Vec<DeviceRow>, InboxError> {
        self.read(|c| queries::devices(c, holes, now_ms, silent_after_ms))
    }
    fn dashboard_orders(&self) -> Result<Vec<OrderRow>, InboxError> {
        self.read(queries::orders)
    }
    fn dashboard_stalled(&self, before_ms: i64) -> Result<Vec<OrderRow>, InboxError> {
        self.read(|c| queries::stalled_orders(c, before_ms))
    }
    fn dashboard_timeline(&self, lane: &str) -> Result<Vec<TimelineEvent>, InboxError> {
        self.read(|c| queries::timeline(c, lane))
    }
    fn dashboard_exceptions(
        &self,
        now_ms: i64,
    ) -> Result<(Vec<ExceptionKindCount>, Vec<ExceptionRow>), InboxError> {
        self.read(|c| queries::exceptions(c, now_ms))
    }
    fn event_verdict(
        &self,
        device: &str,
        epoch: u64,
        seq: u64,
    ) -> Result<Option<EventVerdict>, InboxError> {
        self.read(|c| queries::event_verdict(c, device, epoch, seq))
    }
    fn as_sqlite(&self) -> Option<&Inbox> {
        Some(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let example = include_str!("../collector.example.toml");
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
