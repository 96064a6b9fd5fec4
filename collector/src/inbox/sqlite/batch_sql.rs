//! The SQLite text of [`crate::inbox::batch_write`]'s steps, each in the
//! batch's transaction (a [`Connection`] in one: `&*tx`). One writer per
//! file, so nothing is locked: the transaction itself is the lock. Every statement is cached: the profile
//! showed parsing per batch costing about as much as encoding the rows.

use rusqlite::{Connection, OptionalExtension, params};

use crate::inbox::batch_write::{BatchKey, BatchTx, EventRow};
use crate::inbox::{InboxError, from_sql};

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
        let mut insert = self.prepare_cached(
            "INSERT OR IGNORE INTO events
               (device, epoch, seq, site, id, kind, envelope, received_ms, state, lane, stage)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        )?;
        let mut inserted = Vec::with_capacity(rows.len());
        for r in rows {
            if insert.execute(params![
                key.device, key.epoch, r.seq_sql, key.site, r.id, r.kind, r.envelope, key.now_ms,
                r.state, r.lane, r.stage,
            ])? == 1
            {
                inserted.push(r.seq);
            }
        }
        Ok(inserted)
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
