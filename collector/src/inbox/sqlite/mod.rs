//! The SQLite inbox: one file, `{data_dir}/inbox.db`, one collector.
//! The contract and its invariants are [`crate::inbox`]'s; this module holds
//! only the SQLite text and transactions.
//!
//! The database runs in WAL mode with `synchronous=FULL`, so a committed
//! batch survives a power cut. The tables are those of the module docs of
//! [`crate::inbox`]; their history is in [`schema`].

pub(crate) mod schema;

use std::path::Path;

use dockline_protocol::{
    Batch, DeviceId, Envelope, EventId, Outcome, Payload, SiteId, Status, StatusKind, Verdict,
    codec,
};
use rusqlite::{Connection, OptionalExtension, params};

use crate::delivery::lane::{self, LaneEvent};
use crate::inbox::lanes::{self, ChosenRow, HeadRow, LaneNow, chosen_event};
use crate::inbox::read_model::{
    self as queries, DeviceRow, EventVerdict, ExceptionKindCount, ExceptionRow, OrderRow,
    TimelineEvent,
};
use crate::inbox::verdict;
use crate::inbox::watermark::{self, guard_reasons, holes_above, ranges};
use crate::inbox::{
    AttemptLog, DeadLetter, DeadLetterSummary, DeviceHoles, DeviceStats, Followup, FollowupResult,
    HoleStats, InboxError, InboxStore, LaneStatus, MAX_BODY_EXCERPT, NewDeadLetter, NextPending,
    Resolution, Stats, StoreOutcome, excerpt, from_sql, last_error_of, to_sql,
};
use crate::inbox::{GroupAnswer, GroupDone, GroupOp, group_answers, run_alone};
use crate::ingest::registry::DeviceConfig;

pub use schema::SCHEMA_VERSION;

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
        schema::migrate(&mut conn, path)?;
        Ok(Self {
            conn,
            invoice_followups: false,
            max_seq_ahead: watermark::DEFAULT_MAX_SEQ_AHEAD,
        })
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
        let (new_state, resolution) = verdict::resolution(discard);
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
    fn store_batch(
        &mut self,
        site: &SiteId,
        batch: &Batch,
        now_ms: i64,
    ) -> Result<StoreOutcome, InboxError> {
        let device = batch.device.as_str();
        let epoch = to_sql("epoch", batch.epoch)?;
        let max_ahead = self.max_seq_ahead;
        let tx = self.conn.transaction()?;
        // Every statement of a batch is cached: the profile showed parsing
        // the per-batch ones costing about as much as encoding the rows.
        let known: Option<i64> = tx
            .prepare_cached(
                "SELECT complete_up_to FROM watermarks WHERE device = ?1 AND epoch = ?2",
            )?
            .query_row(params![device, epoch], |r| r.get::<_, i64>(0))
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
            .prepare_cached("SELECT MAX(seq) FROM events WHERE device = ?1 AND epoch = ?2")?
            .query_row(params![device, epoch], |r| r.get::<_, Option<i64>>(0))?
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
            // the highest stored one, a chunk of rows per range scan.
            let mut above = tx.prepare_cached(
                "SELECT seq FROM events WHERE device = ?1 AND epoch = ?2 AND seq > ?3
                 ORDER BY seq LIMIT ?4",
            )?;
            let mut shed_above = tx.prepare_cached(
                "SELECT lo, hi FROM shed WHERE device = ?1 AND epoch = ?2 AND hi > ?3",
            )?;
            let mut walk = watermark::Walk::new(mark, top_after, watermark::WALK_CHUNK);
            while let Some(after) = walk.next_read() {
                let after = to_sql("watermark", after)?;
                let stored = above
                    .query_map(
                        params![device, epoch, after, watermark::WALK_CHUNK as i64],
                        |r| r.get::<_, i64>(0),
                    )?
                    .map(|r| r.map(from_sql))
                    .collect::<Result<Vec<u64>, _>>()?;
                let shed = shed_above
                    .query_map(params![device, epoch, after], |r| {
                        Ok((from_sql(r.get(0)?), from_sql(r.get(1)?)))
                    })?
                    .collect::<Result<Vec<(u64, u64)>, _>>()?;
                walk.feed(&stored, &shed);
            }
            mark = walk.mark();
        }
        // The watermark passed sequences this batch did not store (stored
        // earlier behind a hole, possibly repeated in this batch as
        // duplicates, as the agent's backlog repeats what its live lane sent
        // ahead; or shed): their lanes, and the lanes of the device's newer
        // epochs (rule 2 of `crate::lane`), may go on now.
        let from_batch = inserted
            .iter()
            .filter(|&&seq| seq > mark_before && seq <= mark)
            .count() as u64;
        if mark - mark_before > from_batch {
            tx.execute(
                // Two primary-key ranges: the sequences the watermark
                // passed, and the device's newer epochs.
                "UPDATE lanes SET wake_ms = ?5 WHERE lane IN
                   (SELECT lane FROM events WHERE device = ?1 AND epoch = ?2 AND seq > ?3
                      AND seq <= ?4 AND state = 'pending' AND lane IS NOT NULL
                    UNION
                    SELECT lane FROM events WHERE device = ?1 AND epoch > ?2
                      AND state = 'pending' AND lane IS NOT NULL)",
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
        tx.prepare_cached(
            "INSERT INTO watermarks (device, epoch, complete_up_to) VALUES (?1, ?2, ?3)
             ON CONFLICT (device, epoch) DO UPDATE SET complete_up_to = excluded.complete_up_to",
        )?
        .execute(params![device, epoch, to_sql("watermark", mark)?])?;
        tx.prepare_cached(
            "INSERT INTO devices (device, site, last_seen_ms) VALUES (?1, ?2, ?3)
             ON CONFLICT (device) DO UPDATE SET site = excluded.site, last_seen_ms = excluded.last_seen_ms",
        )?
        .execute(params![device, site.as_str(), now_ms])?;
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
    fn complete_up_to(&self, device: &DeviceId, epoch: u64) -> Result<u64, InboxError> {
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
    fn count_refused(&mut self, reason: &str) -> Result<(), InboxError> {
        let tx = self.conn.transaction()?;
        add_to_counter(&tx, "refused", 1)?;
        add_to_counter(&tx, &format!("refused.{reason}"), 1)?;
        tx.commit()?;
        Ok(())
    }

    /// Verdicts recorded for `device`'s events of `epoch` from `from_seq` on,
    /// in sequence order, at most `limit`: the answer to an agent that
    /// missed verdict acks while it was offline.
    fn verdicts_from(
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
    fn record_status(
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

    /// Replays an open dead letter: its event becomes `pending` again (same
    /// id, so the same idempotency key) and the lane unblocks.
    fn replay_dead_letter(&mut self, id: i64, now_ms: i64) -> Result<Resolution, InboxError> {
        self.resolve(id, now_ms, None)
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
        self.resolve(id, now_ms, Some(note))
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

    /// The newest epoch known for `device` (the highest with a watermark).
    fn newest_epoch(&self, device: &DeviceId) -> Result<Option<u64>, InboxError> {
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
    fn open_holes(&self) -> Result<Vec<DeviceHoles>, InboxError> {
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
    fn count_resend_requests(&mut self, n: u64) -> Result<(), InboxError> {
        let tx = self.conn.transaction()?;
        add_to_counter(&tx, "resend_requests", n)?;
        tx.commit()?;
        Ok(())
    }

    /// The numbers behind `GET /v1/stats`, read from the database.
    fn stats(&self) -> Result<Stats, InboxError> {
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
        let durable = ops.iter().any(|op| {
            matches!(
                op,
                GroupOp::Verdict { .. } | GroupOp::VerdictThenNext { .. }
            )
        });
        let invoices = self.invoice_followups;
        let together = (|| -> Result<Vec<GroupDone>, InboxError> {
            if !durable {
                self.conn.pragma_update(None, "synchronous", "NORMAL")?;
            }
            let tx = self.conn.transaction()?;
            let mut done = Vec::with_capacity(ops.len());
            for op in ops {
                done.push(match op {
                    GroupOp::Verdict {
                        device,
                        epoch,
                        seq,
                        outcome,
                        now_ms,
                    } => GroupDone::Verdict(record_verdict_in(
                        &tx, invoices, device, *epoch, *seq, outcome, *now_ms,
                    )?),
                    GroupOp::NextInLane {
                        lane,
                        now_ms,
                        park_max_ms,
                    } => GroupDone::Next(next_in_lane_in(&tx, lane, *now_ms, *park_max_ms)?),
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
                        record_verdict_in(&tx, invoices, device, *epoch, *seq, outcome, *now_ms)?,
                        next_in_lane_in(&tx, lane, *now_ms, *park_max_ms)?,
                    ),
                });
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
            (Ok(done), Ok(())) => group_answers(ops, done),
            // Rolled back whole (or the connection's mode is unknown): each
            // op alone, so each gets its own answer.
            _ => ops.iter().map(|op| run_alone(self, op)).collect(),
        }
    }

    fn as_sqlite(&self) -> Option<&Inbox> {
        Some(self)
    }
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
        .prepare_cached(
            "SELECT l.top_stage, l.wake_ms, l.status, d.id, d.created_ms, d.what
             FROM (SELECT 1) AS one
             LEFT JOIN lanes l ON l.lane = ?1
             LEFT JOIN (SELECT id, created_ms,
                          device || ' seq ' || seq || ' (' || kind || '): ' || reason AS what
                        FROM dead_letters WHERE state = 'open' AND lane = ?1
                        ORDER BY id LIMIT 1) d ON 1",
        )?
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
        // The device's oldest pending event of the lane after `?2`, in
        // device order (`''` sorts before every device id); held when it is
        // above its watermark or an older epoch of its device has a hole.
        let mut head = tx.prepare_cached(
            "SELECT e.device, e.epoch, e.seq, e.stage, e.received_ms,
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
             ORDER BY e.device, e.epoch, e.seq LIMIT 1",
        )?;
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
fn add_to_counter(tx: &rusqlite::Transaction<'_>, name: &str, n: u64) -> Result<(), InboxError> {
    tx.prepare_cached(
        "INSERT INTO counters (name, value) VALUES (?1, ?2)
         ON CONFLICT (name) DO UPDATE SET value = value + excluded.value",
    )?
    .execute(params![name, to_sql("counter increment", n)?])?;
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
