//! Storing one batch ([`InboxStore::store_batch`](crate::inbox::InboxStore::store_batch)),
//! written once for both backends.
//!
//! [`store_batch`] is the whole operation: which rows go in, which events
//! go to quarantine, how far the watermark moves (the rules of
//! [`crate::inbox::watermark`]), which lanes wake and which counters grow.
//! A backend only says how each step reads or writes its tables, by
//! implementing [`BatchTx`] on its transaction: SQL text and nothing else.
//!
//! # Invariants
//!
//! - Every step runs in the caller's one transaction; the caller commits
//!   after [`store_batch`] returned `Ok` and acks only after the commit.
//! - Rows are offered in ascending sequence order; a row that exists is a
//!   duplicate when its event id is the stored one and a conflict (kept in
//!   quarantine) otherwise. Nothing here ever replaces a stored row.
//! - The watermark moves only over sequences known to be rows (this batch's
//!   and those read back) and recorded shed ranges, never past the highest
//!   stored sequence ([`crate::inbox::watermark::Walk`]). The sequences this
//!   batch found stored (inserted, duplicate or conflicting) are walked
//!   without a read; the table is read only from the first one missing.
//! - Every lane that received a new event is woken once per batch, in
//!   sorted order (two writers lock lanes in one order).
//!
//! # Why `async`
//!
//! PostgreSQL's client is async and SQLite's is not. The steps are written
//! once as an `async fn` over [`BatchTx`]; the SQLite transaction's methods
//! never wait, so [`crate::inbox::ready`] runs the whole operation with a single poll,
//! without a runtime.

use std::borrow::Cow;

use dockline_protocol::{Batch, EventId, Payload, SiteId, codec};

use crate::delivery::lane;
use crate::inbox::bookkeeping::InboxSql;
use crate::inbox::watermark::{self, guard_reasons, ranges};
use crate::inbox::{InboxError, StoreOutcome, to_sql};

/// One `events` row a batch offers, computed before the transaction (and
/// outside PostgreSQL's retry loop).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct EventRow<'a> {
    /// Its sequence.
    pub seq: u64,
    /// Its sequence as stored.
    pub seq_sql: i64,
    /// Its event id as text.
    pub id: String,
    /// `picked` … or `reading`.
    pub kind: &'static str,
    /// The envelope's CBOR, as received or encoded here.
    pub envelope: Cow<'a, [u8]>,
    /// `pending` (business events) or `skipped` (readings).
    pub state: &'static str,
    /// Its business lane ([`crate::delivery::lane::lane_key`]); readings have none.
    pub lane: Option<String>,
    /// Its stage in the lane ([`crate::delivery::lane::stage`]).
    pub stage: Option<i64>,
}

/// The rows of `batch`, in its (ascending) order. `received`, when it
/// holds one entry per envelope, is each envelope's bytes as they arrived
/// (stored as they are); otherwise the envelopes are encoded.
pub(crate) fn event_rows<'a>(
    batch: &Batch,
    received: Option<&[&'a [u8]]>,
) -> Result<Vec<EventRow<'a>>, InboxError> {
    let received = received.filter(|r| r.len() == batch.events.len());
    batch
        .events
        .iter()
        .enumerate()
        .map(|(i, env)| {
            let (kind, state, lane, stage) = match &env.payload {
                Payload::Event(e) => (
                    e.detail.kind_name(),
                    "pending",
                    Some(lane::lane_key(&batch.device, e)),
                    lane::stage(&e.detail).map(i64::from),
                ),
                Payload::Reading(_) => ("reading", "skipped", None, None),
            };
            Ok(EventRow {
                seq: env.seq,
                seq_sql: to_sql("seq", env.seq)?,
                id: id_text(&env.id),
                kind,
                envelope: match received.and_then(|r| r.get(i)) {
                    Some(bytes) => Cow::Borrowed(*bytes),
                    None => Cow::Owned(codec::encode(env)?),
                },
                state,
                lane,
                stage,
            })
        })
        .collect()
}

/// `id` as the stored text, the same as its `Display` (hyphenated
/// lowercase UUID form) without the formatter's per-byte cost, which the
/// ingest profile showed.
fn id_text(id: &EventId) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(36);
    for (i, b) in id.0.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out.push('-');
        }
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
    out
}

/// What every step of one batch names: its device and epoch, its site and
/// the time it arrived.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BatchKey<'a> {
    /// The sending device.
    pub device: &'a str,
    /// The batch's epoch as stored.
    pub epoch: i64,
    /// The site it came from.
    pub site: &'a str,
    /// When it arrived, ms.
    pub now_ms: i64,
}

/// The statements [`store_batch`] needs besides [`InboxSql`]'s, each in
/// the caller's transaction. Sequences and epochs cross as the `i64` the
/// tables hold.
pub(crate) trait BatchTx: InboxSql {
    /// Takes the `(device, epoch)` watermark for this transaction (with
    /// several writers: creates and locks its row, so batches of one device
    /// apply one after the other) and returns it; `known` is what
    /// [`BatchTx::watermark`] returned.
    async fn lock_watermark(
        &self,
        key: &BatchKey<'_>,
        known: Option<u64>,
    ) -> Result<u64, InboxError>;

    /// The highest stored sequence of `(device, epoch)`, 0 when none.
    async fn top_seq(&self, key: &BatchKey<'_>) -> Result<u64, InboxError>;

    /// Inserts the rows that do not exist yet; returns the sequences
    /// inserted, in any order.
    async fn insert_events(
        &self,
        key: &BatchKey<'_>,
        rows: &[&EventRow<'_>],
    ) -> Result<Vec<u64>, InboxError>;

    /// The stored event ids of `seqs`, as `(seq, id)` in any order.
    async fn stored_ids(
        &self,
        key: &BatchKey<'_>,
        seqs: &[i64],
    ) -> Result<Vec<(i64, String)>, InboxError>;

    /// Keeps `row` in quarantine for `reason` (once per event id).
    async fn quarantine(
        &self,
        key: &BatchKey<'_>,
        row: &EventRow<'_>,
        reason: &'static str,
    ) -> Result<(), InboxError>;

    /// Sets the wake time of `lanes` (sorted, distinct) to now, creating
    /// the lane rows that do not exist.
    async fn wake_lanes(&self, key: &BatchKey<'_>, lanes: &[&str]) -> Result<(), InboxError>;

    /// Records the shed range `lo..=hi`; true when it was not known.
    async fn insert_shed(&self, key: &BatchKey<'_>, lo: i64, hi: i64) -> Result<bool, InboxError>;

    /// Wakes the lanes of pending events in `(from, to]` of this epoch and
    /// of every newer epoch of the device: the watermark passed them.
    async fn wake_passed(&self, key: &BatchKey<'_>, from: i64, to: i64) -> Result<(), InboxError>;

    /// Stores the new watermark (it only grows).
    async fn set_watermark(&self, key: &BatchKey<'_>, mark: i64) -> Result<(), InboxError>;

    /// The device was seen now, at this site.
    async fn seen_device(&self, key: &BatchKey<'_>) -> Result<(), InboxError>;
}

/// Stores `batch` (its `rows` from [`event_rows`]) through `tx` and returns
/// the watermark to ack; see the module docs. `max_seq_ahead` is `[security]
/// max_seq_ahead`.
pub(crate) async fn store_batch<T: BatchTx>(
    tx: &T,
    site: &SiteId,
    batch: &Batch,
    rows: &[EventRow<'_>],
    now_ms: i64,
    max_seq_ahead: u64,
) -> Result<StoreOutcome, InboxError> {
    let key = BatchKey {
        device: batch.device.as_str(),
        epoch: to_sql("epoch", batch.epoch)?,
        site: site.as_str(),
        now_ms,
    };
    let known = tx.watermark(key.device, key.epoch).await?;
    if known.is_none() {
        let newest = tx.newest_epoch(key.device).await?;
        if watermark::epoch_too_old(batch.epoch, newest) {
            return Err(InboxError::OldEpoch {
                device: batch.device.clone(),
                epoch: batch.epoch,
                newest: newest.unwrap_or(0),
            });
        }
    }
    let mark_before = tx.lock_watermark(&key, known).await?;
    // The highest sequence stored before this batch: shed sequences below
    // it were a visible hole, now lost at the device.
    let top_before = tx.top_seq(&key).await?;

    // Far ahead of the watermark: not trusted, not offered to the table.
    let (keep, far): (Vec<&EventRow<'_>>, Vec<&EventRow<'_>>) = rows
        .iter()
        .partition(|r| !watermark::far_ahead(r.seq, mark_before, max_seq_ahead));
    let mut quarantined: Vec<(u64, &'static str)> = Vec::new();
    for row in &far {
        tx.quarantine(&key, row, "far_ahead").await?;
        quarantined.push((row.seq, "far_ahead"));
    }
    let mut inserted = tx.insert_events(&key, &keep).await?;
    inserted.sort_unstable();
    let is_inserted = |seq: u64| inserted.binary_search(&seq).is_ok();
    // Offered but not inserted: the row exists. The same event is a
    // duplicate; another one under its number goes to quarantine, never in
    // place of the stored one.
    let repeated: Vec<&EventRow<'_>> = keep
        .iter()
        .copied()
        .filter(|r| !is_inserted(r.seq))
        .collect();
    let mut duplicates = 0usize;
    if !repeated.is_empty() {
        let seqs: Vec<i64> = repeated.iter().map(|r| r.seq_sql).collect();
        let existing = tx.stored_ids(&key, &seqs).await?;
        for row in repeated {
            if existing
                .iter()
                .any(|(seq, id)| *seq == row.seq_sql && *id == row.id)
            {
                duplicates += 1;
            } else {
                tx.quarantine(&key, row, "seq_conflict").await?;
                quarantined.push((row.seq, "seq_conflict"));
            }
        }
    }
    quarantined.sort_unstable();

    // A new event may be the one a parked lane waits for.
    let mut touched: Vec<&str> = keep
        .iter()
        .filter(|r| is_inserted(r.seq))
        .filter_map(|r| r.lane.as_deref())
        .collect();
    touched.sort_unstable();
    touched.dedup();
    if !touched.is_empty() {
        tx.wake_lanes(&key, &touched).await?;
    }

    let top_after = inserted.last().copied().unwrap_or(0).max(top_before);
    let mut newly_shed = Vec::new();
    let mut refused_claims: Vec<String> = Vec::new();
    for &(lo, hi) in &batch.shed {
        if hi <= mark_before {
            continue;
        }
        if !watermark::shed_recordable(hi, top_after) {
            refused_claims.push(format!("shed {lo}..{hi}"));
            continue;
        }
        let (lo_sql, hi_sql) = (
            to_sql("shed range start", lo)?,
            to_sql("shed range end", hi)?,
        );
        if tx.insert_shed(&key, lo_sql, hi_sql).await? {
            newly_shed.push((lo, hi));
        }
    }
    let claim = watermark::claim_held(mark_before, batch.first_held, top_after);
    if let Some(claimed) = claim.refused {
        refused_claims.push(format!("held {}", claimed.saturating_add(1)));
    }
    let mark = walk(tx, &key, claim.mark, top_after, rows, &quarantined).await?;

    // The watermark passed sequences this batch did not store (stored
    // earlier behind a hole, possibly repeated in this batch as duplicates,
    // as the agent's backlog repeats what its live lane sent ahead; or
    // shed): their lanes, and the lanes of the device's newer epochs (rule 2
    // of `crate::delivery::lane`), may go on now.
    let from_batch = inserted
        .iter()
        .filter(|&&seq| seq > mark_before && seq <= mark)
        .count() as u64;
    if mark - mark_before > from_batch {
        tx.wake_passed(
            &key,
            to_sql("watermark", mark_before)?,
            to_sql("watermark", mark)?,
        )
        .await?;
    }
    let also_stored = ranges(
        rows.iter()
            .map(|r| r.seq)
            .filter(|s| *s > mark && !quarantined.iter().any(|(q, _)| q == s)),
    );
    tx.set_watermark(&key, to_sql("watermark", mark)?).await?;
    tx.seen_device(&key).await?;
    if duplicates > 0 {
        tx.add_to_counter("duplicates", duplicates as u64).await?;
    }
    let lost: u64 = newly_shed
        .iter()
        .filter(|(lo, _)| *lo <= top_before)
        .map(|(lo, hi)| (*hi).min(top_before) - lo + 1)
        .sum();
    if lost > 0 {
        tx.add_to_counter("holes_lost", lost).await?;
    }
    for reason in guard_reasons(&refused_claims, &quarantined) {
        tx.add_to_counter("refused", 1).await?;
        tx.add_to_counter(&format!("refused.{reason}"), 1).await?;
    }
    Ok(StoreOutcome {
        stored: inserted.len(),
        duplicates,
        complete_up_to: mark,
        also_stored,
        newly_shed,
        refused_claims,
        quarantined,
    })
}

/// How far the watermark moves from `mark`: first over this batch's rows
/// (every offered sequence not far ahead is a row now), then, from the
/// first one missing, over the table a chunk at a time.
async fn walk<T: BatchTx>(
    tx: &T,
    key: &BatchKey<'_>,
    mark: u64,
    top_after: u64,
    rows: &[EventRow<'_>],
    quarantined: &[(u64, &'static str)],
) -> Result<u64, InboxError> {
    // Conflicts are rows too (another event's); far-ahead ones are not.
    let here: Vec<u64> = rows
        .iter()
        .map(|r| r.seq)
        .filter(|s| {
            !quarantined
                .iter()
                .any(|(q, reason)| q == s && *reason == "far_ahead")
        })
        .collect();
    let mark = watermark::advance(mark, top_after, &here, &[]);
    let mut walk = watermark::Walk::new(mark, top_after, watermark::WALK_CHUNK);
    while let Some(after) = walk.next_read() {
        let after = to_sql("watermark", after)?;
        let stored = tx
            .stored_above(key.device, key.epoch, after, watermark::WALK_CHUNK as i64)
            .await?;
        let shed = tx.shed_above(key.device, key.epoch, after).await?;
        walk.feed(&stored, &shed);
    }
    Ok(walk.mark())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The stored id text is the id's `Display`, which every reader of
        /// the `id` column compares against.
        #[test]
        fn id_text_is_the_ids_display(bytes in proptest::array::uniform16(any::<u8>())) {
            let id = EventId(bytes);
            prop_assert_eq!(id_text(&id), id.to_string());
        }
    }
}
