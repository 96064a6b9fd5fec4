//! The SQLite text of [`crate::inbox::resolve`]'s steps, each in the
//! resolution's transaction (a [`Connection`] in one: `&*tx`).

use rusqlite::{Connection, OptionalExtension, params};

use crate::inbox::InboxError;
use crate::inbox::resolve::{DeadLetterRow, ResolveTx};

impl ResolveTx for Connection {
    async fn dead_letter_row(&self, id: i64) -> Result<Option<DeadLetterRow>, InboxError> {
        Ok(self
            .query_row(
                "SELECT device, epoch, seq, state, reason, lane FROM dead_letters WHERE id = ?1",
                params![id],
                |r| {
                    Ok(DeadLetterRow {
                        device: r.get(0)?,
                        epoch: r.get(1)?,
                        seq: r.get(2)?,
                        state: r.get(3)?,
                        reason: r.get(4)?,
                        lane: r.get(5)?,
                    })
                },
            )
            .optional()?)
    }

    async fn mark_resolved(
        &self,
        id: i64,
        state: &str,
        now_ms: i64,
        resolution: &str,
    ) -> Result<(), InboxError> {
        self.execute(
            "UPDATE dead_letters SET state = ?2, resolved_ms = ?3, resolution = ?4 WHERE id = ?1",
            params![id, state, now_ms, resolution],
        )?;
        Ok(())
    }

    async fn replay_event(&self, row: &DeadLetterRow, now_ms: i64) -> Result<(), InboxError> {
        self.execute(
            "UPDATE events SET state = 'pending', reason = NULL, document = NULL, updated_ms = ?4
             WHERE device = ?1 AND epoch = ?2 AND seq = ?3 AND state IN ('pending', 'rejected')",
            params![row.device, row.epoch, row.seq, now_ms],
        )?;
        Ok(())
    }

    async fn reject_event(
        &self,
        row: &DeadLetterRow,
        now_ms: i64,
        reason: &str,
    ) -> Result<(), InboxError> {
        self.execute(
            "UPDATE events SET state = 'rejected', updated_ms = ?4, reason = ?5
             WHERE device = ?1 AND epoch = ?2 AND seq = ?3 AND state = 'pending'",
            params![row.device, row.epoch, row.seq, now_ms, reason],
        )?;
        Ok(())
    }

    async fn resolve_stage(&self, row: &DeadLetterRow) -> Result<(), InboxError> {
        self.execute(
            "UPDATE lanes SET top_stage = max(coalesce(top_stage, -1), coalesce(
               (SELECT stage FROM events WHERE device = ?2 AND epoch = ?3 AND seq = ?4), -1))
             WHERE lane = ?1",
            params![row.lane, row.device, row.epoch, row.seq],
        )?;
        Ok(())
    }

    async fn wake_lane(&self, lane: Option<&str>, now_ms: i64) -> Result<(), InboxError> {
        self.execute(
            "UPDATE lanes SET wake_ms = ?2 WHERE lane = ?1",
            params![lane, now_ms],
        )?;
        Ok(())
    }

    async fn lane_still_blocked(&self, lane: Option<&str>) -> Result<bool, InboxError> {
        Ok(self.query_row(
            "SELECT EXISTS (SELECT 1 FROM dead_letters WHERE state = 'open' AND lane IS ?1)",
            params![lane],
            |r| r.get(0),
        )?)
    }
}
