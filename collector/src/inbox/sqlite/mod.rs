//! The SQLite inbox: one file, `{data_dir}/inbox.db`, one collector.
//! The contract and its invariants are [`crate::inbox`]'s; this module holds
//! only the SQLite text and transactions.
//!
//! The database runs in WAL mode with `synchronous=FULL`, so a committed
//! batch survives a power cut. The tables are those of the module docs of
//! [`crate::inbox`]; their history is in [`schema`].

mod batch_sql;
mod bookkeeping_sql;
mod resolve_sql;
pub(crate) mod schema;

use std::path::Path;

use dockline_protocol::{Batch, DeviceId, Envelope, Outcome, SiteId, Status, Verdict, codec};
use rusqlite::config::DbConfig;
use rusqlite::{Connection, OptionalExtension, params};

use crate::delivery::lane::LaneEvent;
use crate::inbox::batch_write;
use crate::inbox::bookkeeping::{self, InboxSql};
use crate::inbox::lanes::{self, ChosenRow, HeadRow, LaneNow, chosen_event};
use crate::inbox::read_model::{
    self as queries, DeviceRow, EventVerdict, ExceptionKindCount, ExceptionRow, OrderRow,
    TimelineEvent,
};
use crate::inbox::resolve;
use crate::inbox::verdict;
use crate::inbox::watermark;
use crate::inbox::{
    AttemptLog, DeadLetter, DeadLetterSummary, DeviceHoles, Followup, FollowupResult, InboxError,
    InboxStore, LaneStatus, MAX_BODY_EXCERPT, NewDeadLetter, NextPending, Resolution, Stats,
    StoreOutcome, excerpt, from_sql, last_error_of, to_sql,
};
use crate::inbox::{GroupAnswer, GroupDone, GroupOp, group_answers, run_alone};
use crate::ingest::registry::DeviceConfig;

pub use schema::SCHEMA_VERSION;

/// Prepared statements the connection keeps (see [`Inbox::open`]).
const STATEMENT_CACHE: usize = 64;

/// The SQLite inbox. Blocking; see the module docs for its invariants.
#[derive(Debug)]
pub struct Inbox {
    pub(in crate::inbox) conn: Connection,
    /// Booking a proof of delivery queues an `invoice.ready` follow-up.
    pub(in crate::inbox) invoice_followups: bool,
    /// `[security] max_seq_ahead` ([`crate::inbox::watermark::far_ahead`]).
    pub(in crate::inbox) max_seq_ahead: u64,
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
        // Plans from the SQL text alone. Without this, SQLite marks a
        // parameter that meets a partial index's condition (`lane = ?1`
        // beside `WHERE state = 'open'`) as plan-relevant and compiles the
        // statement again after every new binding: the delivery profile
        // showed that re-preparing costing more than the rest of the
        // inbox's delivery work. Every partial-index condition here is a
        // literal in the SQL, so the plans stay the ones meant.
        conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)
            .map_err(open_err)?;
        // The inbox caches about 40 distinct statements; rusqlite keeps 16
        // by default, so ingest and delivery would evict each other's and
        // compile them again.
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        schema::migrate(&mut conn, path)?;
        Ok(Self {
            conn,
            invoice_followups: false,
            max_seq_ahead: watermark::DEFAULT_MAX_SEQ_AHEAD,
        })
    }

    /// Runs `op` (shared steps over [`bookkeeping::InboxSql`]) in one
    /// transaction, committed when it returns `Ok`.
    fn write<R>(
        &mut self,
        op: impl AsyncFnOnce(&Connection) -> Result<R, InboxError>,
    ) -> Result<R, InboxError> {
        let tx = self.conn.transaction()?;
        let out = crate::inbox::ready(op(&tx))??;
        tx.commit()?;
        Ok(out)
    }

    /// Runs read-only queries on the inbox's connection (the dashboard's,
    /// [`crate::inbox::read_model`]); they see only committed data.
    pub(crate) fn read<R>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<R>,
    ) -> Result<R, InboxError> {
        Ok(f(&self.conn)?)
    }

    fn next_in_lane_tx(
        &mut self,
        lane_key: &str,
        now_ms: i64,
        park_max_ms: i64,
    ) -> Result<Option<NextPending>, InboxError> {
        let tx = self.conn.transaction()?;
        let next = next_in_lane_in(&tx, lane_key, now_ms, park_max_ms)?;
        tx.commit()?;
        next.map(|row| chosen_event(row, lane_key)).transpose()
    }
}

/// The SQLite inbox; see [`InboxStore`] for what each method promises.
impl InboxStore for Inbox {
    fn backend(&self) -> &'static str {
        "sqlite"
    }
    /// From now on, booking a proof of delivery that names an order queues
    /// an `invoice.ready` follow-up webhook (see [`InboxStore::due_followups`]).
    fn enable_invoice_followups(&mut self) {
        self.invoice_followups = true;
    }

    /// Events more than `n` above their device's watermark are quarantined
    /// ([`crate::inbox::watermark`]).
    fn set_max_seq_ahead(&mut self, n: u64) {
        self.max_seq_ahead = n;
    }

    /// Follow-ups due at `now_ms`, oldest first, at most `limit`.
    fn due_followups(&mut self, now_ms: i64, limit: usize) -> Result<Vec<Followup>, InboxError> {
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
    fn next_followup_ms(&self) -> Result<Option<i64>, InboxError> {
        Ok(self.conn.query_row(
            "SELECT min(next_ms) FROM followups WHERE state = 'pending'",
            [],
            |r| r.get::<_, Option<i64>>(0),
        )?)
    }

    /// Records what became of one attempt to send follow-up `id`: `sent`,
    /// `failed` for good (with the reason), or still pending and tried
    /// again at `next_ms`. Returns false when it was no longer pending.
    fn record_followup(
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
    fn register_devices(&mut self, devices: &[DeviceConfig]) -> Result<(), InboxError> {
        let pairs: Vec<(&str, &str)> = devices
            .iter()
            .map(|d| (d.id.as_str(), d.site.as_str()))
            .collect();
        self.write(async |db| bookkeeping::register_devices(db, &pairs).await)
    }

    /// Stores a batch in one transaction and returns the watermark to ack.
    ///
    /// The batch must come from a decoded, validated message (ascending
    /// sequences, one device and epoch), which [`codec::decode`] guarantees.
    fn store_received(
        &mut self,
        site: &SiteId,
        batch: &Batch,
        envelopes: Option<&[&[u8]]>,
        now_ms: i64,
    ) -> Result<StoreOutcome, InboxError> {
        let rows = batch_write::event_rows(batch, envelopes)?;
        let tx = self.conn.transaction()?;
        let outcome = crate::inbox::ready(batch_write::store_batch(
            &*tx,
            site,
            batch,
            &rows,
            now_ms,
            self.max_seq_ahead,
        ))??;
        tx.commit()?;
        Ok(outcome)
    }

    /// The watermark of a `(device, epoch)`, 0 when nothing is stored.
    fn complete_up_to(&self, device: &DeviceId, epoch: u64) -> Result<u64, InboxError> {
        crate::inbox::ready(bookkeeping::complete_up_to(&self.conn, device, epoch))?
    }

    /// Counts one refused message, in total and under its `reason`.
    fn count_refused(&mut self, reason: &str) -> Result<(), InboxError> {
        self.write(async |db| bookkeeping::count_refused(db, reason).await)
    }

    /// Verdicts recorded for `device`'s events of `epoch` from `from_seq` on.
    fn verdicts_from(
        &self,
        device: &DeviceId,
        epoch: u64,
        from_seq: u64,
        limit: usize,
    ) -> Result<Vec<Verdict>, InboxError> {
        crate::inbox::ready(bookkeeping::verdicts_from(
            &self.conn, device, epoch, from_seq, limit,
        ))?
    }

    /// Applies a status message; `false` when it was stale and ignored.
    fn record_status(
        &mut self,
        site: &SiteId,
        status: &Status,
        now_ms: i64,
    ) -> Result<bool, InboxError> {
        let row = bookkeeping::status_row(site, status, now_ms)?;
        self.write(async |db| bookkeeping::record_status(db, &row).await)
    }

    /// Lanes due for a look at `now_ms` (woken by ingest, a replay, a
    /// watermark move, or a park deadline that passed), oldest wake first,
    /// at most `limit`. One index range scan on `lanes_wake`, whatever the
    /// backlog.
    fn due_lanes(&self, now_ms: i64, limit: usize) -> Result<Vec<String>, InboxError> {
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
    fn next_lane_wake_ms(&self) -> Result<Option<i64>, InboxError> {
        Ok(self.conn.query_row(
            "SELECT min(wake_ms) FROM lanes WHERE wake_ms IS NOT NULL",
            [],
            |r| r.get::<_, Option<i64>>(0),
        )?)
    }

    /// The lane's next event to deliver, per the rules of [`crate::lane`],
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
    fn next_in_lane(
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

    /// Lanes that are parked or blocked, longest waiting first, at most
    /// `limit` (`GET /v1/lanes`).
    fn waiting_lanes(&self, limit: usize) -> Result<Vec<LaneStatus>, InboxError> {
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
    fn mark_skipped(
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
    fn record_attempt(
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
    fn store_dead_letter(
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
        let (state, reason) = verdict::dead_letter_state(dead.erp_rejected, &dead.reason);
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
    fn dead_letters(&self, all: bool, limit: usize) -> Result<Vec<DeadLetterSummary>, InboxError> {
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
    fn dead_letter(&self, id: i64) -> Result<Option<DeadLetter>, InboxError> {
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

    fn resolve_dead_letter(
        &mut self,
        id: i64,
        now_ms: i64,
        discard: Option<&str>,
    ) -> Result<Resolution, InboxError> {
        let tx = self.conn.transaction()?;
        let resolution = crate::inbox::ready(resolve::resolve(&*tx, id, now_ms, discard))??;
        tx.commit()?;
        Ok(resolution)
    }

    /// Records the ERP's final answer (counts as an attempt). Only a pending
    /// row changes, so a verdict is recorded at most once.
    fn record_verdict(
        &mut self,
        device: &DeviceId,
        epoch: u64,
        seq: u64,
        outcome: &Outcome,
        now_ms: i64,
    ) -> Result<bool, InboxError> {
        let invoices = self.invoice_followups;
        let tx = self.conn.transaction()?;
        let changed = record_verdict_in(&tx, invoices, device, epoch, seq, outcome, now_ms)?;
        tx.commit()?;
        Ok(changed)
    }

    fn newest_epoch(&self, device: &DeviceId) -> Result<Option<u64>, InboxError> {
        crate::inbox::ready(self.conn.newest_epoch(device.as_str()))?
    }

    /// Every `(device, epoch)` with open holes.
    fn open_holes(&self) -> Result<Vec<DeviceHoles>, InboxError> {
        crate::inbox::ready(bookkeeping::open_holes(&self.conn))?
    }

    /// Counts resend requests the gap audit published.
    fn count_resend_requests(&mut self, n: u64) -> Result<(), InboxError> {
        self.write(async |db| db.add_to_counter("resend_requests", n).await)
    }

    /// The numbers behind `GET /v1/stats`.
    fn stats(&self) -> Result<Stats, InboxError> {
        crate::inbox::ready(bookkeeping::stats(&self.conn))?
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
    /// One transaction for the whole group. It is fsynced only when it
    /// holds a verdict: lane looks alone write scheduling hints that the
    /// next look recomputes (a lane's wake time and why it waits, an
    /// event's `late` mark), and the next fsynced commit makes them durable
    /// anyway, because the WAL is synced as a whole.
    fn run_group(&mut self, ops: &[GroupOp]) -> Vec<Result<GroupAnswer, InboxError>> {
        self.run_group_early(ops, &mut |_, _| {}, &mut Vec::new)
    }

    /// One writer, so a look made in the group's transaction stays true
    /// whether or not the commit succeeds: nobody else can hand the lane's
    /// next event out meanwhile. The looks after bookings are answered
    /// before the commit's fsync, and a transaction that will be fsynced
    /// anyway takes the ops that arrive meanwhile (see
    /// [`InboxStore::run_group_early`]).
    fn run_group_early(
        &mut self,
        ops: &[GroupOp],
        early: &mut dyn FnMut(usize, Option<NextPending>),
        more: &mut dyn FnMut() -> Vec<GroupOp>,
    ) -> Vec<Result<GroupAnswer, InboxError>> {
        let is_verdict = |op: &GroupOp| {
            matches!(
                op,
                GroupOp::Verdict { .. } | GroupOp::VerdictThenNext { .. }
            )
        };
        let durable = ops.iter().any(is_verdict);
        let invoices = self.invoice_followups;
        // Copied only when ops arrive while the transaction is open.
        let mut all = std::borrow::Cow::Borrowed(ops);
        let together = (|| -> Result<Vec<GroupDone>, InboxError> {
            if !durable {
                self.conn.pragma_update(None, "synchronous", "NORMAL")?;
            }
            let tx = self.conn.transaction()?;
            let mut done = Vec::with_capacity(all.len());
            loop {
                for (i, op) in all.iter().enumerate().skip(done.len()) {
                    let d = apply_group_op(&tx, invoices, op)?;
                    if let (
                        GroupOp::VerdictThenNext { lane, .. },
                        GroupDone::VerdictThenNext(_, row),
                    ) = (op, &d)
                        && let Ok(next) = row.clone().map(|r| chosen_event(r, lane)).transpose()
                    {
                        early(i, next);
                    }
                    done.push(d);
                }
                // Only a transaction fsynced anyway takes more: a look-only
                // group commits without an fsync and cannot take a verdict.
                if !durable {
                    break;
                }
                let extra = more();
                if extra.is_empty() {
                    break;
                }
                all.to_mut().extend(extra);
            }
            tx.commit()?;
            Ok(done)
        })();
        let restored = if durable {
            Ok(())
        } else {
            self.conn.pragma_update(None, "synchronous", "FULL")
        };
        match (together, restored) {
            (Ok(done), Ok(())) => group_answers(&all, done),
            // Rolled back whole (or the connection's mode is unknown): each
            // op alone, so each gets its own answer.
            _ => all.iter().map(|op| run_alone(self, op)).collect(),
        }
    }

    fn as_sqlite(&self) -> Option<&Inbox> {
        Some(self)
    }
}

/// One op of a group in the group's transaction.
fn apply_group_op(tx: &Connection, invoices: bool, op: &GroupOp) -> Result<GroupDone, InboxError> {
    Ok(match op {
        GroupOp::Verdict {
            device,
            epoch,
            seq,
            outcome,
            now_ms,
        } => GroupDone::Verdict(record_verdict_in(
            tx, invoices, device, *epoch, *seq, outcome, *now_ms,
        )?),
        GroupOp::NextInLane {
            lane,
            now_ms,
            park_max_ms,
        } => GroupDone::Next(next_in_lane_in(tx, lane, *now_ms, *park_max_ms)?),
        // One writer: the lane is always held.
        GroupOp::HoldLane { .. } => GroupDone::Held(true),
        GroupOp::VerdictThenNext {
            device,
            epoch,
            seq,
            outcome,
            lane,
            now_ms,
            park_max_ms,
        } => GroupDone::VerdictThenNext(
            record_verdict_in(tx, invoices, device, *epoch, *seq, outcome, *now_ms)?,
            next_in_lane_in(tx, lane, *now_ms, *park_max_ms)?,
        ),
    })
}

/// Records a verdict in `tx` (see [`InboxStore::record_verdict`]); with
/// `invoices`, a booked proof of delivery queues its follow-up.
fn record_verdict_in(
    tx: &Connection,
    invoices: bool,
    device: &DeviceId,
    epoch: u64,
    seq: u64,
    outcome: &Outcome,
    now_ms: i64,
) -> Result<bool, InboxError> {
    let (state, document, reason) = verdict::verdict_columns(outcome);
    let (ep, sq) = (to_sql("epoch", epoch)?, to_sql("seq", seq)?);
    let changed = tx
        .prepare_cached(
            "UPDATE events SET state = ?4, document = ?5, reason = ?6,
               attempts = attempts + 1, updated_ms = ?7
             WHERE device = ?1 AND epoch = ?2 AND seq = ?3 AND state = 'pending'",
        )?
        .execute(params![
            device.as_str(),
            ep,
            sq,
            state,
            document,
            reason,
            now_ms
        ])?;
    if changed == 1 && verdict::may_queue_invoice(invoices, outcome) {
        queue_invoice(tx, device, ep, sq, document.unwrap_or_default(), now_ms)?;
    }
    if changed == 1 {
        // The lane's chain moves on (rule 4 of `crate::lane`).
        tx.prepare_cached(
            "UPDATE lanes SET top_stage = max(coalesce(top_stage, -1), e.stage)
             FROM (SELECT lane, stage FROM events WHERE device = ?1 AND epoch = ?2 AND seq = ?3
                   AND stage IS NOT NULL) AS e
             WHERE lanes.lane = e.lane",
        )?
        .execute(params![device.as_str(), ep, sq])?;
    }
    // The failed attempts before a verdict are no longer needed.
    tx.prepare_cached("DELETE FROM attempts WHERE device = ?1 AND epoch = ?2 AND seq = ?3")?
        .execute(params![device.as_str(), ep, sq])?;
    Ok(changed == 1)
}

/// A lane's row and its oldest open dead letter, if any.
const LANE_NOW: &str = "SELECT l.top_stage, l.wake_ms, l.status, d.id, d.created_ms, d.what
             FROM (SELECT 1) AS one
             LEFT JOIN lanes l ON l.lane = ?1
             LEFT JOIN (SELECT id, created_ms,
                          device || ' seq ' || seq || ' (' || kind || '): ' || reason AS what
                        FROM dead_letters WHERE state = 'open' AND lane = ?1
                        ORDER BY id LIMIT 1) d ON 1";

/// The device's oldest pending event of the lane after `?2`, in device
/// order (`''` sorts before every device id); held when it is above its
/// watermark or an older epoch of its device has a hole.
const LANE_HEAD: &str = "SELECT e.device, e.epoch, e.seq, e.stage, e.received_ms,
               e.seq > coalesce(w.complete_up_to, 0)
               OR EXISTS (SELECT 1 FROM watermarks w2 WHERE w2.device = e.device
                          AND w2.epoch < e.epoch
                          AND EXISTS (SELECT 1 FROM events e2 WHERE e2.device = w2.device
                                      AND e2.epoch = w2.epoch
                                      AND e2.seq > w2.complete_up_to)),
               e.site, e.envelope, e.attempts,
               EXISTS (SELECT 1 FROM events m WHERE m.lane = ?1 AND m.state = 'pending'
                       AND m.device > e.device)
             FROM events e
             LEFT JOIN watermarks w ON w.device = e.device AND w.epoch = e.epoch
             WHERE e.lane = ?1 AND e.state = 'pending' AND e.device > ?2
             ORDER BY e.device, e.epoch, e.seq LIMIT 1";

/// One lane look in `tx` (see [`InboxStore::next_in_lane`] and the steps
/// of [`crate::inbox::lanes`]): the lane's row, its heads (one index seek
/// per device), the shared decision, and the lane's row written only when
/// it changes. Returns the chosen row, if an event may go.
fn next_in_lane_in(
    tx: &Connection,
    lane_key: &str,
    now_ms: i64,
    park_max_ms: i64,
) -> Result<Option<ChosenRow>, InboxError> {
    let lane_now: LaneNow = tx
        .prepare_cached(LANE_NOW)?
        .query_row(params![lane_key], |r| {
            let dead: Option<i64> = r.get(3)?;
            Ok(LaneNow {
                top_stage: r.get(0)?,
                wake_ms: r.get(1)?,
                status: r.get(2)?,
                dead_letter: match dead {
                    Some(id) => Some((id, r.get(4)?, r.get(5)?)),
                    None => None,
                },
            })
        })?;
    let mut heads: Vec<HeadRow> = Vec::new();
    {
        let mut head = tx.prepare_cached(LANE_HEAD)?;
        let mut after = String::new();
        while let Some(h) = head
            .query_row(params![lane_key, after], |r| {
                Ok(HeadRow {
                    event: LaneEvent {
                        device: r.get(0)?,
                        epoch: from_sql(r.get(1)?),
                        seq: from_sql(r.get(2)?),
                        stage: r
                            .get::<_, Option<i64>>(3)?
                            .and_then(|s| u8::try_from(s).ok()),
                        received_ms: r.get(4)?,
                        held: r.get(5)?,
                    },
                    site: r.get(6)?,
                    envelope: r.get(7)?,
                    attempts: r.get(8)?,
                    more: r.get(9)?,
                })
            })
            .optional()?
        {
            let more = h.more;
            after.clone_from(&h.event.device);
            heads.push(h);
            if !more {
                break;
            }
        }
    }
    let look = lanes::decide(lane_key, heads, lane_now, now_ms, park_max_ms, None)?;
    if look.write {
        let row = &look.row;
        tx.prepare_cached(
            "INSERT INTO lanes (lane, wake_ms, status, reason, since_ms) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (lane) DO UPDATE SET wake_ms = excluded.wake_ms, status = excluded.status,
               reason = excluded.reason,
               since_ms = CASE WHEN lanes.status IS excluded.status AND lanes.since_ms IS NOT NULL
                               THEN lanes.since_ms ELSE excluded.since_ms END",
        )?
        .execute(params![
            lane_key,
            row.wake_ms,
            row.status,
            row.reason,
            row.since_ms
        ])?;
    }
    if let Some(chosen) = &look.chosen
        && chosen.late
    {
        tx.execute(
            "UPDATE events SET late = 1 WHERE device = ?1 AND epoch = ?2 AND seq = ?3",
            params![chosen.device, chosen.epoch, chosen.seq],
        )?;
    }
    Ok(look.chosen)
}

/// Queues the `invoice.ready` follow-up of a just-booked event, in the
/// booking's transaction, if it is a proof of delivery naming an order
/// ([`verdict::invoice_of`]).
fn queue_invoice(
    tx: &Connection,
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
    let Some(ready) = verdict::invoice_of(&site, &kind, &bytes, document) else {
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

/// Adds `n` to a counter, creating it at 0 first if it is new.
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inbox::tests::{batch, site};
    use rusqlite::StatementStatus;

    /// A lane's looks and verdicts run their cached statements again
    /// without compiling them again (a re-prepare per step once cost more
    /// than the rest of delivery's inbox work together).
    #[test]
    fn delivery_steps_never_recompile_their_statements() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut inbox = Inbox::open(&dir.path().join("inbox.db")).expect("inbox");
        let seqs: Vec<u64> = (1..=12).collect();
        inbox
            .store_batch(&site(), &batch("hh-01", 1, 1, &seqs), 1)
            .expect("store");
        let lane: String = inbox
            .conn
            .query_row("SELECT lane FROM lanes", [], |r| r.get(0))
            .expect("one lane");
        let device = DeviceId::new("hh-01").expect("device");
        for (k, seq) in seqs.iter().enumerate() {
            let now_ms = 10 + k as i64;
            let look = inbox.run_group(&[GroupOp::NextInLane {
                lane: lane.clone(),
                now_ms,
                park_max_ms: 60_000,
            }]);
            assert!(
                matches!(look.as_slice(), [Ok(GroupAnswer::Next(Some(_)))]),
                "{look:?}"
            );
            let verdict = inbox.run_group(&[GroupOp::Verdict {
                device: device.clone(),
                epoch: 1,
                seq: *seq,
                outcome: Outcome::Booked {
                    document: format!("DOC-{seq}"),
                },
                now_ms,
            }]);
            assert!(verdict.iter().all(Result::is_ok), "{verdict:?}");
        }
        for sql in [LANE_NOW, LANE_HEAD] {
            let stmt = inbox.conn.prepare_cached(sql).expect("cached");
            assert_eq!(
                stmt.get_status(StatementStatus::RePrepare),
                0,
                "re-prepared: {sql}"
            );
        }
    }

    /// After a booking the lane's next event is handed out from inside the
    /// group's transaction, before its commit (another connection does not
    /// see the verdict yet), and the verdict's own answer comes after it.
    #[test]
    fn a_bookings_next_event_comes_before_its_commit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("inbox.db");
        let mut inbox = Inbox::open(&path).expect("inbox");
        inbox
            .store_batch(&site(), &batch("hh-01", 1, 1, &[1, 2]), 1)
            .expect("store");
        let lane: String = inbox
            .conn
            .query_row("SELECT lane FROM lanes", [], |r| r.get(0))
            .expect("one lane");
        let first = inbox.run_group(&[GroupOp::NextInLane {
            lane: lane.clone(),
            now_ms: 2,
            park_max_ms: 60_000,
        }]);
        assert!(
            matches!(first.as_slice(), [Ok(GroupAnswer::Next(Some(_)))]),
            "{first:?}"
        );
        let other = Connection::open(&path).expect("second connection");
        let state_of_1 = |c: &Connection| -> String {
            c.query_row("SELECT state FROM events WHERE seq = 1", [], |r| r.get(0))
                .expect("row 1")
        };
        let mut early = Vec::new();
        let answers = inbox.run_group_early(
            &[GroupOp::VerdictThenNext {
                device: DeviceId::new("hh-01").expect("device"),
                epoch: 1,
                seq: 1,
                outcome: Outcome::Booked {
                    document: "DOC-1".into(),
                },
                lane,
                now_ms: 3,
                park_max_ms: 60_000,
            }],
            &mut |i, next| early.push((i, next, state_of_1(&other))),
            &mut Vec::new,
        );
        match early.as_slice() {
            [(0, Some(NextPending::Event(p)), state)] => {
                assert_eq!(p.envelope.seq, 2, "the lane's next event");
                assert_eq!(state, "pending", "handed out before the commit");
            }
            other => panic!("one early look expected: {other:?}"),
        }
        assert!(
            matches!(
                answers.as_slice(),
                [Ok(GroupAnswer::VerdictThenNext(true, _))]
            ),
            "{answers:?}"
        );
        assert_eq!(state_of_1(&other), "booked", "committed after");
    }

    /// A transaction that is fsynced anyway takes the ops that arrive while
    /// it is open: their answers follow the group's own, in order, and the
    /// lane's look after each booking sees the bookings before it.
    #[test]
    fn a_durable_group_takes_the_ops_that_arrive_meanwhile() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut inbox = Inbox::open(&dir.path().join("inbox.db")).expect("inbox");
        inbox
            .store_batch(&site(), &batch("hh-01", 1, 1, &[1, 2, 3]), 1)
            .expect("store");
        let lane: String = inbox
            .conn
            .query_row("SELECT lane FROM lanes", [], |r| r.get(0))
            .expect("one lane");
        let booking = |seq: u64| GroupOp::VerdictThenNext {
            device: DeviceId::new("hh-01").expect("device"),
            epoch: 1,
            seq,
            outcome: Outcome::Booked {
                document: format!("DOC-{seq}"),
            },
            lane: lane.clone(),
            now_ms: 5,
            park_max_ms: 60_000,
        };
        let mut arriving = vec![vec![booking(2)], vec![booking(3)]];
        let mut early = Vec::new();
        let answers = inbox.run_group_early(
            &[booking(1)],
            &mut |i, next| {
                early.push((
                    i,
                    next.and_then(|n| match n {
                        NextPending::Event(p) => Some(p.envelope.seq),
                        NextPending::Unreadable(_) => None,
                    }),
                ))
            },
            &mut || {
                if arriving.is_empty() {
                    Vec::new()
                } else {
                    arriving.remove(0)
                }
            },
        );
        assert_eq!(early, vec![(0, Some(2)), (1, Some(3)), (2, None)]);
        assert_eq!(answers.len(), 3, "{answers:?}");
        assert!(
            answers
                .iter()
                .all(|a| matches!(a, Ok(GroupAnswer::VerdictThenNext(true, _)))),
            "{answers:?}"
        );
        let booked: i64 = inbox
            .conn
            .query_row(
                "SELECT count(*) FROM events WHERE state = 'booked'",
                [],
                |r| r.get(0),
            )
            .expect("count");
        assert_eq!(booked, 3);
    }
}
