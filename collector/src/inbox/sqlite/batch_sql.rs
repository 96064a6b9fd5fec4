//! The SQLite text of [`crate::inbox::batch_write`]'s steps, each in the
//! batch's transaction (a [`Connection`] in one: `&*tx`). One writer per
//! file, so nothing is locked: the transaction itself is the lock. Every statement is cached: the profile
//! showed parsing per batch costing about as much as encoding the rows.

use std::sync::LazyLock;

use rusqlite::{Connection, OptionalExtension, Statement, params};

use crate::inbox::batch_write::{BatchKey, BatchTx, EventRow};
use crate::inbox::{InboxError, from_sql};

/// Rows per multi-row INSERT. Per statement execution SQLite opens its
/// cursors, resets and halts; per row it only inserts. 32 rows of 7
/// parameters stay far below SQLite's parameter limit.
const ROWS_PER_INSERT: usize = 32;

/// Parameters every row of one INSERT shares (device, epoch, site, time).
const SHARED: usize = 4;
/// Parameters of each row.
const PER_ROW: usize = 7;

// The statements' text, made once: the cache finds a statement by its
// text, and writing it per batch showed in the profile.
static INSERT_MANY: LazyLock<String> = LazyLock::new(|| insert_sql(ROWS_PER_INSERT));
static INSERT_ONE: LazyLock<String> = LazyLock::new(|| insert_sql(1));

/// `INSERT OR FAIL INTO events` of `n` rows: the shared parameters `?1..?4`, then
/// [`PER_ROW`] of each row, in [`bind_rows`]' order.
fn insert_sql(n: usize) -> String {
    let mut sql = String::from(
        "INSERT OR FAIL INTO events
           (device, epoch, site, received_ms, seq, id, kind, envelope, state, lane, stage)
         VALUES ",
    );
    for i in 0..n {
        let p = SHARED + i * PER_ROW;
        if i > 0 {
            sql.push(',');
        }
        sql.push_str(&format!(
            "(?1, ?2, ?3, ?4, ?{}, ?{}, ?{}, ?{}, ?{}, ?{}, ?{})",
            p + 1,
            p + 2,
            p + 3,
            p + 4,
            p + 5,
            p + 6,
            p + 7
        ));
    }
    sql
}

/// Binds `rows` to a statement from [`insert_sql`] of as many rows.
fn bind_rows(
    stmt: &mut Statement<'_>,
    key: &BatchKey<'_>,
    rows: &[&EventRow<'_>],
) -> Result<(), InboxError> {
    stmt.raw_bind_parameter(1, key.device)?;
    stmt.raw_bind_parameter(2, key.epoch)?;
    stmt.raw_bind_parameter(3, key.site)?;
    stmt.raw_bind_parameter(4, key.now_ms)?;
    for (i, r) in rows.iter().enumerate() {
        let p = SHARED + i * PER_ROW;
        stmt.raw_bind_parameter(p + 1, r.seq_sql)?;
        stmt.raw_bind_parameter(p + 2, r.id.as_str())?;
        stmt.raw_bind_parameter(p + 3, r.kind)?;
        stmt.raw_bind_parameter(p + 4, &*r.envelope)?;
        stmt.raw_bind_parameter(p + 5, r.state)?;
        stmt.raw_bind_parameter(p + 6, r.lane.as_deref())?;
        stmt.raw_bind_parameter(p + 7, r.stage)?;
    }
    Ok(())
}

impl BatchTx for Connection {
    async fn lock_watermark(
        &self,
        _key: &BatchKey<'_>,
        known: Option<u64>,
    ) -> Result<u64, InboxError> {
        Ok(known.unwrap_or(0))
    }

    async fn top_seq(&self, key: &BatchKey<'_>) -> Result<u64, InboxError> {
        Ok(self
            .prepare_cached("SELECT MAX(seq) FROM events WHERE device = ?1 AND epoch = ?2")?
            .query_row(params![key.device, key.epoch], |r| {
                r.get::<_, Option<i64>>(0)
            })?
            .map_or(0, from_sql))
    }

    async fn insert_events(
        &self,
        key: &BatchKey<'_>,
        rows: &[&EventRow<'_>],
    ) -> Result<Vec<u64>, InboxError> {
        let (Some(lo), Some(hi)) = (
            rows.iter().map(|r| r.seq_sql).min(),
            rows.iter().map(|r| r.seq_sql).max(),
        ) else {
            return Ok(Vec::new());
        };
        // Which of them exist already: one range read, so
        // the rest can go in many to a statement, knowing which went in.
        // One writer per file and this transaction: nothing else inserts
        // between the read and the inserts; were a row there after all,
        // the INSERT fails the batch instead of miscounting it (`OR FAIL`:
        // the error alone, without the statement journal `ABORT` keeps to
        // undo the statement's earlier rows, as the caller rolls the whole
        // transaction back on any error).
        let mut existing: Vec<i64> = Vec::new();
        {
            let mut stmt = self.prepare_cached(
                "SELECT seq FROM events WHERE device = ?1 AND epoch = ?2 AND seq BETWEEN ?3 AND ?4",
            )?;
            let mut q = stmt.query(params![key.device, key.epoch, lo, hi])?;
            while let Some(r) = q.next()? {
                existing.push(r.get(0)?);
            }
        }
        existing.sort_unstable();
        let new: Vec<&EventRow<'_>> = rows
            .iter()
            .copied()
            .filter(|r| existing.binary_search(&r.seq_sql).is_err())
            .collect();
        let mut chunks = new.chunks_exact(ROWS_PER_INSERT);
        if chunks.len() > 0 {
            let mut insert = self.prepare_cached(&INSERT_MANY)?;
            for chunk in chunks.by_ref() {
                bind_rows(&mut insert, key, chunk)?;
                insert.raw_execute()?;
            }
        }
        if !chunks.remainder().is_empty() {
            let mut insert = self.prepare_cached(&INSERT_ONE)?;
            for row in chunks.remainder() {
                bind_rows(&mut insert, key, std::slice::from_ref(row))?;
                insert.raw_execute()?;
            }
        }
        Ok(new.iter().map(|r| r.seq).collect())
    }

    async fn stored_ids(
        &self,
        key: &BatchKey<'_>,
        seqs: &[i64],
    ) -> Result<Vec<(i64, String)>, InboxError> {
        let mut stmt = self.prepare_cached(
            "SELECT id FROM events WHERE device = ?1 AND epoch = ?2 AND seq = ?3",
        )?;
        let mut out = Vec::with_capacity(seqs.len());
        for &seq in seqs {
            if let Some(id) = stmt
                .query_row(params![key.device, key.epoch, seq], |r| r.get(0))
                .optional()?
            {
                out.push((seq, id));
            }
        }
        Ok(out)
    }

    async fn quarantine(
        &self,
        key: &BatchKey<'_>,
        row: &EventRow<'_>,
        reason: &'static str,
    ) -> Result<(), InboxError> {
        self.prepare_cached(
            "INSERT OR IGNORE INTO quarantine (device, epoch, seq, id, reason, envelope, received_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?
        .execute(params![
            key.device,
            key.epoch,
            row.seq_sql,
            row.id,
            reason,
            &*row.envelope,
            key.now_ms
        ])?;
        Ok(())
    }

    async fn wake_lanes(&self, key: &BatchKey<'_>, lanes: &[&str]) -> Result<(), InboxError> {
        let mut wake = self.prepare_cached(
            "INSERT INTO lanes (lane, wake_ms) VALUES (?1, ?2)
             ON CONFLICT (lane) DO UPDATE SET wake_ms = excluded.wake_ms",
        )?;
        for lane in lanes {
            wake.execute(params![lane, key.now_ms])?;
        }
        Ok(())
    }

    async fn insert_shed(&self, key: &BatchKey<'_>, lo: i64, hi: i64) -> Result<bool, InboxError> {
        Ok(self
            .prepare_cached(
                "INSERT OR IGNORE INTO shed (device, epoch, lo, hi) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![key.device, key.epoch, lo, hi])?
            == 1)
    }

    async fn wake_passed(&self, key: &BatchKey<'_>, from: i64, to: i64) -> Result<(), InboxError> {
        // Two primary-key ranges: the sequences the watermark passed, and
        // the device's newer epochs.
        self.prepare_cached(
            "UPDATE lanes SET wake_ms = ?5 WHERE lane IN
               (SELECT lane FROM events WHERE device = ?1 AND epoch = ?2 AND seq > ?3
                  AND seq <= ?4 AND state = 'pending' AND lane IS NOT NULL
                UNION
                SELECT lane FROM events WHERE device = ?1 AND epoch > ?2
                  AND state = 'pending' AND lane IS NOT NULL)",
        )?
        .execute(params![key.device, key.epoch, from, to, key.now_ms])?;
        Ok(())
    }

    async fn set_watermark(&self, key: &BatchKey<'_>, mark: i64) -> Result<(), InboxError> {
        self.prepare_cached(
            "INSERT INTO watermarks (device, epoch, complete_up_to) VALUES (?1, ?2, ?3)
             ON CONFLICT (device, epoch) DO UPDATE SET complete_up_to = excluded.complete_up_to",
        )?
        .execute(params![key.device, key.epoch, mark])?;
        Ok(())
    }

    async fn seen_device(&self, key: &BatchKey<'_>) -> Result<(), InboxError> {
        self.prepare_cached(
            "INSERT INTO devices (device, site, last_seen_ms) VALUES (?1, ?2, ?3)
             ON CONFLICT (device) DO UPDATE SET site = excluded.site, last_seen_ms = excluded.last_seen_ms",
        )?
        .execute(params![key.device, key.site, key.now_ms])?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::inbox::tests::{batch, site};
    use crate::inbox::{Inbox, InboxStore};
    use dockline_protocol::EventId;

    /// A batch longer than one multi-row INSERT, with stored events
    /// (the same ones and another one) among those of its chunks: the new
    /// ones all go in, the others are told apart as before.
    #[test]
    fn many_rows_to_a_statement_keep_dedup_and_conflicts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut inbox = Inbox::open(&dir.path().join("inbox.db")).expect("open");
        let first = batch("hh-01", 1, 1, &[5, 40, 50, 77]);
        inbox.store_batch(&site(), &first, 1).expect("store");
        let seqs: Vec<u64> = (1..=100).collect();
        let mut second = batch("hh-01", 1, 1, &seqs);
        second.events[49].id = EventId([0xee; 16]);
        let out = inbox.store_batch(&site(), &second, 2).expect("store");
        assert_eq!(out.stored, 96);
        assert_eq!(out.duplicates, 3);
        assert_eq!(out.quarantined, vec![(50, "seq_conflict")]);
        assert_eq!(out.complete_up_to, 100);
        // Again: every one is there now.
        let out = inbox.store_batch(&site(), &second, 3).expect("store");
        assert_eq!((out.stored, out.duplicates), (0, 99));
    }
}
