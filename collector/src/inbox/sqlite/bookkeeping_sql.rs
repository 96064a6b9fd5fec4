//! The SQLite text of [`crate::inbox::bookkeeping`]'s statements, on the
//! connection (reads) or in a transaction (`&*tx`, writes). Every
//! statement is cached.

use rusqlite::{Connection, OptionalExtension, Params, Row, params};

use crate::inbox::bookkeeping::{CountOf, InboxSql, StatusRow, VerdictRow};
use crate::inbox::{DeviceStats, InboxError, from_sql, to_sql};

/// The rows of a cached statement, each read by `read`.
fn rows<T>(
    db: &Connection,
    sql: &str,
    p: impl Params,
    read: impl FnMut(&Row<'_>) -> rusqlite::Result<T>,
) -> Result<Vec<T>, InboxError> {
    Ok(db
        .prepare_cached(sql)?
        .query_map(p, read)?
        .collect::<Result<_, _>>()?)
}

impl InboxSql for Connection {
    async fn watermark(&self, device: &str, epoch: i64) -> Result<Option<u64>, InboxError> {
        Ok(self
            .prepare_cached(
                "SELECT complete_up_to FROM watermarks WHERE device = ?1 AND epoch = ?2",
            )?
            .query_row(params![device, epoch], |r| r.get::<_, i64>(0))
            .optional()?
            .map(from_sql))
    }

    async fn newest_epoch(&self, device: &str) -> Result<Option<u64>, InboxError> {
        Ok(self
            .prepare_cached("SELECT MAX(epoch) FROM watermarks WHERE device = ?1")?
            .query_row(params![device], |r| r.get::<_, Option<i64>>(0))?
            .map(from_sql))
    }

    async fn stored_above(
        &self,
        device: &str,
        epoch: i64,
        after: i64,
        limit: i64,
    ) -> Result<Vec<u64>, InboxError> {
        rows(
            self,
            "SELECT seq FROM events WHERE device = ?1 AND epoch = ?2 AND seq > ?3
             ORDER BY seq LIMIT ?4",
            params![device, epoch, after, limit],
            |r| Ok(from_sql(r.get(0)?)),
        )
    }

    async fn shed_above(
        &self,
        device: &str,
        epoch: i64,
        after: i64,
    ) -> Result<Vec<(u64, u64)>, InboxError> {
        rows(
            self,
            "SELECT lo, hi FROM shed WHERE device = ?1 AND epoch = ?2 AND hi > ?3 ORDER BY lo",
            params![device, epoch, after],
            |r| Ok((from_sql(r.get(0)?), from_sql(r.get(1)?))),
        )
    }

    async fn add_to_counter(&self, name: &str, n: u64) -> Result<(), InboxError> {
        self.prepare_cached(
            "INSERT INTO counters (name, value) VALUES (?1, ?2)
             ON CONFLICT (name) DO UPDATE SET value = value + excluded.value",
        )?
        .execute(params![name, to_sql("counter increment", n)?])?;
        Ok(())
    }

    async fn counters(&self) -> Result<Vec<(String, i64)>, InboxError> {
        rows(self, "SELECT name, value FROM counters", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
    }

    async fn register_device(&self, device: &str, site: &str) -> Result<(), InboxError> {
        self.prepare_cached("INSERT OR IGNORE INTO devices (device, site) VALUES (?1, ?2)")?
            .execute(params![device, site])?;
        Ok(())
    }

    async fn apply_status(&self, s: &StatusRow<'_>) -> Result<bool, InboxError> {
        Ok(self
            .prepare_cached(
                "INSERT INTO devices (device, site, online, session, last_seen_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (device) DO UPDATE SET site = excluded.site, online = excluded.online,
                   session = excluded.session, last_seen_ms = excluded.last_seen_ms
                 WHERE devices.session <= excluded.session",
            )?
            .execute(params![s.device, s.site, s.online, s.session, s.now_ms])?
            == 1)
    }

    async fn set_online_since(&self, device: &str, now_ms: i64) -> Result<(), InboxError> {
        self.prepare_cached("UPDATE devices SET online_since_ms = ?2 WHERE device = ?1")?
            .execute(params![device, now_ms])?;
        Ok(())
    }

    async fn set_heartbeat(
        &self,
        device: &str,
        now_ms: i64,
        (queued, oldest, peripherals): &(i64, i64, Option<String>),
    ) -> Result<(), InboxError> {
        self.prepare_cached(
            "UPDATE devices SET backlog = ?2, oldest_unsent_ms = ?3, heartbeat_ms = ?4,
               peripherals = ?5, online_since_ms = coalesce(online_since_ms, ?4)
             WHERE device = ?1",
        )?
        .execute(params![device, queued, oldest, now_ms, peripherals])?;
        Ok(())
    }

    async fn verdict_rows(
        &self,
        device: &str,
        epoch: i64,
        from_seq: i64,
        limit: i64,
    ) -> Result<Vec<VerdictRow>, InboxError> {
        rows(
            self,
            "SELECT seq, id, state, document, reason FROM events
             WHERE device = ?1 AND epoch = ?2 AND seq >= ?3 AND state IN ('booked', 'rejected')
             ORDER BY seq LIMIT ?4",
            params![device, epoch, from_seq, limit],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
        )
    }

    async fn marks_with_rows_above(&self) -> Result<Vec<(String, i64, i64, String)>, InboxError> {
        rows(
            self,
            "SELECT w.device, w.epoch, w.complete_up_to, coalesce(d.site, '') FROM watermarks w
             LEFT JOIN devices d ON d.device = w.device
             WHERE EXISTS (SELECT 1 FROM events e WHERE e.device = w.device
                           AND e.epoch = w.epoch AND e.seq > w.complete_up_to)
             ORDER BY w.device, w.epoch",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
    }

    async fn counts(&self, of: CountOf) -> Result<Vec<(String, i64)>, InboxError> {
        let sql = match of {
            CountOf::FollowupsByState => "SELECT state, COUNT(*) FROM followups GROUP BY state",
            CountOf::LanesByStatus => {
                "SELECT status, COUNT(*) FROM lanes WHERE status IS NOT NULL GROUP BY status"
            }
            CountOf::OpenDeadLettersByDevice => {
                "SELECT device, COUNT(*) FROM dead_letters WHERE state = 'open'
                 GROUP BY device ORDER BY device"
            }
        };
        rows(self, sql, [], |r| Ok((r.get(0)?, r.get(1)?)))
    }

    async fn events_by_state(&self) -> Result<Vec<(String, i64, i64)>, InboxError> {
        rows(
            self,
            "SELECT state, COUNT(*), coalesce(SUM(late), 0) FROM events GROUP BY state",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
    }

    async fn device_stats(&self) -> Result<Vec<DeviceStats>, InboxError> {
        rows(
            self,
            "SELECT d.device, d.site, d.online, d.last_seen_ms,
               (SELECT w.complete_up_to FROM watermarks w WHERE w.device = d.device
                ORDER BY w.epoch DESC LIMIT 1)
             FROM devices d ORDER BY d.device",
            [],
            |r| {
                Ok(DeviceStats {
                    device: r.get(0)?,
                    site: r.get(1)?,
                    online: r.get(2)?,
                    last_seen_ms: r.get(3)?,
                    complete_up_to: r.get::<_, Option<i64>>(4)?.map(from_sql),
                    holes: Vec::new(),
                })
            },
        )
    }
}
