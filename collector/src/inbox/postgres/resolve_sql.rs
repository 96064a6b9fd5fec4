//! The PostgreSQL text of [`crate::inbox::resolve`]'s steps, each in the
//! resolution's transaction. The dead letter's row is locked (`FOR
//! UPDATE`): collectors sharing the inbox resolve it once.

use crate::inbox::InboxError;
use crate::inbox::resolve::{DeadLetterRow, ResolveTx};

use super::Db;

impl ResolveTx for Db<'_> {
    async fn dead_letter_row(&self, id: i64) -> Result<Option<DeadLetterRow>, InboxError> {
        Ok(self
            .opt(
                "SELECT device, epoch, seq, state, reason, lane FROM dead_letters
                 WHERE id = $1 FOR UPDATE",
                &[&id],
            )
            .await?
            .map(|r| DeadLetterRow {
                device: r.get(0),
                epoch: r.get(1),
                seq: r.get(2),
                state: r.get(3),
                reason: r.get(4),
                lane: r.get(5),
            }))
    }

    async fn mark_resolved(
        &self,
        id: i64,
        state: &str,
        now_ms: i64,
        resolution: &str,
    ) -> Result<(), InboxError> {
        self.exec(
            "UPDATE dead_letters SET state = $2, resolved_ms = $3, resolution = $4 WHERE id = $1",
            &[&id, &state, &now_ms, &resolution],
        )
        .await?;
        Ok(())
    }

    async fn replay_event(&self, row: &DeadLetterRow, now_ms: i64) -> Result<(), InboxError> {
        self.exec(
            "UPDATE events SET state = 'pending', reason = NULL, document = NULL, updated_ms = $4
             WHERE device = $1 AND epoch = $2 AND seq = $3 AND state IN ('pending', 'rejected')",
            &[&row.device, &row.epoch, &row.seq, &now_ms],
        )
        .await?;
        Ok(())
    }

    async fn reject_event(
        &self,
        row: &DeadLetterRow,
        now_ms: i64,
        reason: &str,
    ) -> Result<(), InboxError> {
        self.exec(
            "UPDATE events SET state = 'rejected', updated_ms = $4, reason = $5
             WHERE device = $1 AND epoch = $2 AND seq = $3 AND state = 'pending'",
            &[&row.device, &row.epoch, &row.seq, &now_ms, &reason],
        )
        .await?;
        Ok(())
    }

    async fn resolve_stage(&self, row: &DeadLetterRow) -> Result<(), InboxError> {
        self.exec(
            "UPDATE lanes SET top_stage = GREATEST(coalesce(top_stage, -1), coalesce(
               (SELECT stage FROM events WHERE device = $2 AND epoch = $3 AND seq = $4), -1))
             WHERE lane = $1",
            &[&row.lane, &row.device, &row.epoch, &row.seq],
        )
        .await?;
        Ok(())
    }

    async fn wake_lane(&self, lane: Option<&str>, now_ms: i64) -> Result<(), InboxError> {
        self.exec(
            "UPDATE lanes SET wake_ms = $2 WHERE lane = $1",
            &[&lane, &now_ms],
        )
        .await?;
        Ok(())
    }

    async fn lane_still_blocked(&self, lane: Option<&str>) -> Result<bool, InboxError> {
        Ok(self
            .one(
                "SELECT EXISTS (SELECT 1 FROM dead_letters WHERE state = 'open'
                   AND lane IS NOT DISTINCT FROM $1)",
                &[&lane],
            )
            .await?
            .get(0))
    }
}
