//! The inbox's bookkeeping besides batches, written once for both
//! backends: devices (registered, status and heartbeats), counters,
//! watermarks and their holes, the verdicts re-sent to a device, and the
//! numbers behind `GET /v1/stats`.
//!
//! Each operation here decides what to read and write and shapes what it
//! returns; a backend only runs the statements ([`InboxSql`], SQL text
//! per dialect) in its transaction or on its connection. The batch path
//! ([`crate::inbox::batch_write`]) builds on the same statements.
//!
//! # Invariants
//!
//! - A status message of an older session than the device's stored one
//!   changes nothing (a stale death must not mark a new session offline),
//!   decided by the statement itself, so two collectors agree.
//! - Counters only grow, each increment in the caller's transaction.
//! - Holes are computed from the table, never from memory: every sequence
//!   above the watermark and below the highest stored one that is neither
//!   stored nor shed ([`crate::inbox::watermark::holes_above`]).

use std::collections::BTreeMap;

use dockline_protocol::{DeviceId, EventId, Outcome, SiteId, Status, StatusKind, Verdict};

use crate::inbox::watermark::holes_above;
use crate::inbox::{DeviceHoles, DeviceStats, HoleStats, InboxError, Stats, from_sql, to_sql};

/// Most stored sequences above a watermark that one device's holes are
/// computed from.
const HOLE_SCAN: i64 = 100_000;

/// One verdict row: `(seq, id, state, document, reason)`.
pub(crate) type VerdictRow = (i64, String, String, Option<String>, Option<String>);

/// A device's status as stored.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StatusRow<'a> {
    /// The device.
    pub device: &'a str,
    /// Its site.
    pub site: &'a str,
    /// False only after a death.
    pub online: bool,
    /// Its session (births count up).
    pub session: i64,
    /// When it came, ms.
    pub now_ms: i64,
    /// What a heartbeat adds: backlog, oldest unsent age, peripherals as
    /// JSON; `None` for a birth or a death (which set `online_since_ms`).
    pub heartbeat: Option<(i64, i64, Option<String>)>,
}

/// Which small table a [`InboxSql::counts`] groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CountOf {
    /// Follow-ups by state.
    FollowupsByState,
    /// Waiting lanes by status (`parked`, `blocked`).
    LanesByStatus,
    /// Open dead letters by device, ordered by device.
    OpenDeadLettersByDevice,
}

/// The statements of this module and of [`crate::inbox::batch_write`],
/// per dialect. Sequences and epochs cross as the `i64` the tables hold.
pub(crate) trait InboxSql {
    /// The `(device, epoch)` watermark, `None` when the epoch is new.
    async fn watermark(&self, device: &str, epoch: i64) -> Result<Option<u64>, InboxError>;

    /// The device's newest epoch with a watermark.
    async fn newest_epoch(&self, device: &str) -> Result<Option<u64>, InboxError>;

    /// Stored sequences above `after`, ascending, at most `limit`.
    async fn stored_above(
        &self,
        device: &str,
        epoch: i64,
        after: i64,
        limit: i64,
    ) -> Result<Vec<u64>, InboxError>;

    /// Shed ranges with `hi` above `after`, by `lo`.
    async fn shed_above(
        &self,
        device: &str,
        epoch: i64,
        after: i64,
    ) -> Result<Vec<(u64, u64)>, InboxError>;

    /// Adds `n` to the counter `name` (created at 0 when absent).
    async fn add_to_counter(&self, name: &str, n: u64) -> Result<(), InboxError>;

    /// Every counter, `(name, value)`.
    async fn counters(&self) -> Result<Vec<(String, i64)>, InboxError>;

    /// Adds a device that is not known yet.
    async fn register_device(&self, device: &str, site: &str) -> Result<(), InboxError>;

    /// Upserts the device's online state, session and last-seen time
    /// unless its stored session is newer; true when applied.
    async fn apply_status(&self, s: &StatusRow<'_>) -> Result<bool, InboxError>;

    /// Sets when the device went online or offline.
    async fn set_online_since(&self, device: &str, now_ms: i64) -> Result<(), InboxError>;

    /// Stores a heartbeat's backlog, oldest unsent age and peripherals.
    async fn set_heartbeat(
        &self,
        device: &str,
        now_ms: i64,
        heartbeat: &(i64, i64, Option<String>),
    ) -> Result<(), InboxError>;

    /// Verdicts of `(device, epoch)` from `from_seq` on, by sequence, at
    /// most `limit`.
    async fn verdict_rows(
        &self,
        device: &str,
        epoch: i64,
        from_seq: i64,
        limit: i64,
    ) -> Result<Vec<VerdictRow>, InboxError>;

    /// Watermarks with rows stored above them: `(device, epoch, mark,
    /// site)`, by device and epoch.
    async fn marks_with_rows_above(&self) -> Result<Vec<(String, i64, i64, String)>, InboxError>;

    /// `(key, count)` of one small table ([`CountOf`]).
    async fn counts(&self, of: CountOf) -> Result<Vec<(String, i64)>, InboxError>;

    /// Events by state: `(state, count, late count)`.
    async fn events_by_state(&self) -> Result<Vec<(String, i64, i64)>, InboxError>;

    /// Every device with its newest epoch's watermark, by device (holes
    /// empty).
    async fn device_stats(&self) -> Result<Vec<DeviceStats>, InboxError>;
}

/// Makes configured devices visible before they first speak.
pub(crate) async fn register_devices<T: InboxSql>(
    db: &T,
    devices: &[(&str, &str)],
) -> Result<(), InboxError> {
    for (device, site) in devices {
        db.register_device(device, site).await?;
    }
    Ok(())
}

/// The stored form of `status` arriving from `site` at `now_ms`.
pub(crate) fn status_row<'a>(
    site: &'a SiteId,
    status: &'a Status,
    now_ms: i64,
) -> Result<StatusRow<'a>, InboxError> {
    let heartbeat = match &status.kind {
        StatusKind::Heartbeat {
            queued,
            oldest_unacked_ms,
            health,
        } => Some((
            to_sql("queued", *queued)?,
            to_sql("oldest_unacked_ms", *oldest_unacked_ms)?,
            // Plain structs of strings and numbers: encoding cannot fail.
            health
                .as_ref()
                .and_then(|h| h.devices.as_ref())
                .and_then(|list| serde_json::to_string(list).ok()),
        )),
        StatusKind::Birth { .. } | StatusKind::Death { .. } => None,
    };
    Ok(StatusRow {
        device: status.device.as_str(),
        site: site.as_str(),
        online: !matches!(status.kind, StatusKind::Death { .. }),
        session: to_sql("session", status.session)?,
        now_ms,
        heartbeat,
    })
}

/// Applies a status message; false when it was stale and ignored.
pub(crate) async fn record_status<T: InboxSql>(
    db: &T,
    row: &StatusRow<'_>,
) -> Result<bool, InboxError> {
    if !db.apply_status(row).await? {
        return Ok(false);
    }
    // For the dashboard: when it went online or offline, and the latest
    // heartbeat's backlog and peripherals.
    match &row.heartbeat {
        None => db.set_online_since(row.device, row.now_ms).await?,
        Some(h) => db.set_heartbeat(row.device, row.now_ms, h).await?,
    }
    Ok(true)
}

/// Counts one refused message, in total and under its reason.
pub(crate) async fn count_refused<T: InboxSql>(db: &T, reason: &str) -> Result<(), InboxError> {
    db.add_to_counter("refused", 1).await?;
    db.add_to_counter(&format!("refused.{reason}"), 1).await
}

/// The watermark of a `(device, epoch)`, 0 when nothing is stored.
pub(crate) async fn complete_up_to<T: InboxSql>(
    db: &T,
    device: &DeviceId,
    epoch: u64,
) -> Result<u64, InboxError> {
    Ok(db
        .watermark(device.as_str(), to_sql("epoch", epoch)?)
        .await?
        .unwrap_or(0))
}

/// Verdicts of `device`'s events of `epoch` from `from_seq` on.
pub(crate) async fn verdicts_from<T: InboxSql>(
    db: &T,
    device: &DeviceId,
    epoch: u64,
    from_seq: u64,
    limit: usize,
) -> Result<Vec<Verdict>, InboxError> {
    let rows = db
        .verdict_rows(
            device.as_str(),
            to_sql("epoch", epoch)?,
            to_sql("seq", from_seq)?,
            to_sql("limit", limit as u64)?,
        )
        .await?;
    Ok(rows.into_iter().filter_map(verdict_of).collect())
}

/// One verdict row as the protocol's verdict; `None` for an id that does
/// not parse (ids were written from parsed envelopes, so none should).
fn verdict_of((seq, id, state, document, reason): VerdictRow) -> Option<Verdict> {
    let id = EventId::parse(&id)?;
    let outcome = if state == "booked" {
        Outcome::Booked {
            document: document.unwrap_or_default(),
        }
    } else {
        Outcome::Rejected {
            reason: reason.unwrap_or_default(),
        }
    };
    Some(Verdict {
        seq: from_sql(seq),
        id,
        outcome,
    })
}

/// Every `(device, epoch)` with open holes.
pub(crate) async fn open_holes<T: InboxSql>(db: &T) -> Result<Vec<DeviceHoles>, InboxError> {
    let mut out = Vec::new();
    for (device, epoch, mark, site) in db.marks_with_rows_above().await? {
        // Stored ids passed the id rules on the way in.
        let (Ok(dev), Ok(site)) = (DeviceId::new(device.as_str()), SiteId::new(site)) else {
            continue;
        };
        let stored = db.stored_above(&device, epoch, mark, HOLE_SCAN).await?;
        let shed = db.shed_above(&device, epoch, mark).await?;
        let holes = holes_above(from_sql(mark), &stored, &shed);
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

/// The numbers behind `GET /v1/stats`.
pub(crate) async fn stats<T: InboxSql>(db: &T) -> Result<Stats, InboxError> {
    let mut stats = Stats {
        received: 0,
        duplicates: 0,
        refused: 0,
        refused_by_reason: BTreeMap::new(),
        resend_requests: 0,
        holes_lost: 0,
        pending: 0,
        booked: 0,
        rejected: 0,
        dead_letters: 0,
        blocked_devices: Vec::new(),
        blocked_lanes: 0,
        parked_lanes: 0,
        delivered_out_of_order: 0,
        followups: BTreeMap::new(),
        devices: Vec::new(),
    };
    for (name, n) in db.counters().await? {
        let n = from_sql(n);
        match name.as_str() {
            "duplicates" => stats.duplicates = n,
            "refused" => stats.refused = n,
            "resend_requests" => stats.resend_requests = n,
            "holes_lost" => stats.holes_lost = n,
            other => {
                if let Some(reason) = other.strip_prefix("refused.") {
                    stats.refused_by_reason.insert(reason.to_string(), n);
                }
            }
        }
    }
    for (state, n) in db.counts(CountOf::FollowupsByState).await? {
        stats.followups.insert(state, from_sql(n));
    }
    for (status, n) in db.counts(CountOf::LanesByStatus).await? {
        match status.as_str() {
            "parked" => stats.parked_lanes = from_sql(n),
            "blocked" => stats.blocked_lanes = from_sql(n),
            _ => {}
        }
    }
    for (device, n) in db.counts(CountOf::OpenDeadLettersByDevice).await? {
        stats.dead_letters += from_sql(n);
        stats.blocked_devices.push(device);
    }
    for (state, n, late) in db.events_by_state().await? {
        let n = from_sql(n);
        stats.received += n;
        match state.as_str() {
            "pending" => stats.pending = n,
            "booked" => {
                stats.booked = n;
                stats.delivered_out_of_order = from_sql(late);
            }
            "rejected" => stats.rejected = n,
            _ => {}
        }
    }
    stats.devices = db.device_stats().await?;
    for h in open_holes(db).await? {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_verdict_row_becomes_the_protocols_verdict() {
        let id = EventId([7; 16]);
        let booked = verdict_of((3, id.to_string(), "booked".into(), Some("D-1".into()), None));
        assert_eq!(
            booked,
            Some(Verdict {
                seq: 3,
                id,
                outcome: Outcome::Booked {
                    document: "D-1".into()
                }
            })
        );
        let rejected = verdict_of((
            4,
            id.to_string(),
            "rejected".into(),
            None,
            Some("no".into()),
        ));
        assert!(matches!(
            rejected.map(|v| v.outcome),
            Some(Outcome::Rejected { reason }) if reason == "no"
        ));
        assert_eq!(
            verdict_of((5, "not-an-id".into(), "booked".into(), None, None)),
            None
        );
    }
}
