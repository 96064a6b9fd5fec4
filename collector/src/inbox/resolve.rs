//! Resolving a dead letter: a replay or a discard
//! ([`InboxStore::resolve_dead_letter`](crate::inbox::InboxStore::resolve_dead_letter)),
//! written once for both backends, which say only how each step reads or
//! writes their tables by implementing [`ResolveTx`] on their transaction.
//!
//! # Invariants
//!
//! - Every step runs in the caller's one transaction; the dead letter's
//!   row is read first (locked where several collectors share the inbox),
//!   so two operators resolving the same one resolve it once: the second
//!   sees it resolved.
//! - A replay makes the event `pending` again (same id, so the same
//!   idempotency key at the ERP); a discard makes a still-pending event
//!   `rejected` with the operator's note and counts its stage as resolved
//!   for the lane's chain. Either way the lane is woken, and it stays
//!   blocked only while another dead letter of it is open.

use dockline_protocol::DeviceId;

use crate::inbox::{InboxError, Resolution, verdict};

/// The dead letter's row, as resolving it needs it.
#[derive(Debug, Clone)]
pub(crate) struct DeadLetterRow {
    /// Its event's device, epoch and sequence, as stored.
    pub device: String,
    pub epoch: i64,
    pub seq: i64,
    /// `open`, `replayed` or `discarded`.
    pub state: String,
    /// Why it was dead-lettered.
    pub reason: String,
    /// The lane it blocks.
    pub lane: Option<String>,
}

/// The statements [`resolve`] needs, each in the caller's transaction.
pub(crate) trait ResolveTx {
    /// The dead letter `id`, locked for this transaction where rows are
    /// locked.
    async fn dead_letter_row(&self, id: i64) -> Result<Option<DeadLetterRow>, InboxError>;

    /// Sets its `state`, `resolved_ms` and `resolution`.
    async fn mark_resolved(
        &self,
        id: i64,
        state: &str,
        now_ms: i64,
        resolution: &str,
    ) -> Result<(), InboxError>;

    /// Its event is `pending` again (from `pending` or `rejected`).
    async fn replay_event(&self, row: &DeadLetterRow, now_ms: i64) -> Result<(), InboxError>;

    /// Its still-pending event becomes `rejected` for `reason`.
    async fn reject_event(
        &self,
        row: &DeadLetterRow,
        now_ms: i64,
        reason: &str,
    ) -> Result<(), InboxError>;

    /// Its event's stage counts as resolved in its lane's chain.
    async fn resolve_stage(&self, row: &DeadLetterRow) -> Result<(), InboxError>;

    /// Its lane wants a look now.
    async fn wake_lane(&self, lane: Option<&str>, now_ms: i64) -> Result<(), InboxError>;

    /// Another dead letter of the lane is still open.
    async fn lane_still_blocked(&self, lane: Option<&str>) -> Result<bool, InboxError>;
}

/// Replays (`discard` is `None`) or discards the dead letter `id` through
/// `tx`; see the module docs. The caller commits.
pub(crate) async fn resolve<T: ResolveTx>(
    tx: &T,
    id: i64,
    now_ms: i64,
    discard: Option<&str>,
) -> Result<Resolution, InboxError> {
    let Some(row) = tx.dead_letter_row(id).await? else {
        return Ok(Resolution::NotFound);
    };
    if row.state != "open" {
        return Ok(Resolution::AlreadyResolved { state: row.state });
    }
    let (state, resolution) = verdict::resolution(discard);
    tx.mark_resolved(id, state, now_ms, &resolution).await?;
    match discard {
        None => tx.replay_event(&row, now_ms).await?,
        Some(note) => {
            tx.reject_event(&row, now_ms, &discarded_reason(note, &row.reason))
                .await?;
            tx.resolve_stage(&row).await?;
        }
    }
    let lane = row.lane.as_deref();
    tx.wake_lane(lane, now_ms).await?;
    let still_blocked = tx.lane_still_blocked(lane).await?;
    Ok(Resolution::Done {
        // Stored device ids passed the id rule on the way in.
        device: DeviceId::new(row.device.as_str()).map_err(|e| InboxError::DeadLetterData {
            id,
            problem: e.to_string(),
        })?,
        lane: row.lane.unwrap_or_default(),
        still_blocked,
    })
}

/// The `reason` of an event an operator discarded.
fn discarded_reason(note: &str, reason: &str) -> String {
    format!("discarded by an operator ({note}): {reason}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_discarded_events_reason_names_the_operators_note_and_the_cause() {
        assert_eq!(
            discarded_reason("wrong order", "unknown item"),
            "discarded by an operator (wrong order): unknown item"
        );
    }
}
