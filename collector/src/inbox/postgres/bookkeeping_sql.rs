//! The PostgreSQL text of [`crate::inbox::bookkeeping`]'s statements,
//! through the connection's statement cache ([`Db`]). Counters and device
//! status are single-statement upserts, so two collectors never lose an
//! increment or apply a stale status.

use tokio_postgres::Row;

use crate::inbox::bookkeeping::{CountOf, InboxSql, StatusRow, VerdictRow};
use crate::inbox::{DeviceStats, InboxError, from_sql, to_sql};

use super::{Db, Params};

impl Db<'_> {
    /// The rows of `sql`, each read by `read`.
    async fn rows<T>(
        &self,
        sql: &'static str,
        p: &Params<'_>,
        read: impl FnMut(&Row) -> T,
    ) -> Result<Vec<T>, InboxError> {
        Ok(self.query(sql, p).await?.iter().map(read).collect())
    }
}

impl InboxSql for Db<'_> {
    async fn watermark(&self, device: &str, epoch: i64) -> Result<Option<u64>, InboxError> {
        Ok(self
            .opt(
                "SELECT complete_up_to FROM watermarks WHERE device = $1 AND epoch = $2",
                &[&device, &epoch],
            )
            .await?
            .map(|r| from_sql(r.get(0))))
    }

    async fn newest_epoch(&self, device: &str) -> Result<Option<u64>, InboxError> {
        Ok(self
            .one(
                "SELECT max(epoch) FROM watermarks WHERE device = $1",
                &[&device],
            )
            .await?
            .get::<_, Option<i64>>(0)
            .map(from_sql))
    }

    async fn stored_above(
        &self,
        device: &str,
        epoch: i64,
        after: i64,
        limit: i64,
    ) -> Result<Vec<u64>, InboxError> {
        self.rows(
            "SELECT seq FROM events WHERE device = $1 AND epoch = $2 AND seq > $3
             ORDER BY seq LIMIT $4",
            &[&device, &epoch, &after, &limit],
            |r| from_sql(r.get(0)),
        )
        .await
    }

    async fn shed_above(
        &self,
        device: &str,
        epoch: i64,
        after: i64,
    ) -> Result<Vec<(u64, u64)>, InboxError> {
        self.rows(
            "SELECT lo, hi FROM shed WHERE device = $1 AND epoch = $2 AND hi > $3 ORDER BY lo",
            &[&device, &epoch, &after],
            |r| (from_sql(r.get(0)), from_sql(r.get(1))),
        )
        .await
    }

    async fn add_to_counter(&self, name: &str, n: u64) -> Result<(), InboxError> {
        self.exec(
            "INSERT INTO counters (name, value) VALUES ($1, $2)
             ON CONFLICT (name) DO UPDATE SET value = counters.value + excluded.value",
            &[&name, &to_sql("counter increment", n)?],
        )
        .await?;
        Ok(())
    }

    async fn counters(&self) -> Result<Vec<(String, i64)>, InboxError> {
        self.rows("SELECT name, value FROM counters", &[], |r| {
            (r.get(0), r.get(1))
        })
        .await
    }

    async fn register_device(&self, device: &str, site: &str) -> Result<(), InboxError> {
        self.exec(
            "INSERT INTO devices (device, site) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            &[&device, &site],
        )
        .await?;
        Ok(())
    }

    async fn apply_status(&self, s: &StatusRow<'_>) -> Result<bool, InboxError> {
        Ok(self
            .exec(
                "INSERT INTO devices (device, site, online, session, last_seen_ms)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (device) DO UPDATE SET site = excluded.site,
                   online = excluded.online, session = excluded.session,
                   last_seen_ms = excluded.last_seen_ms
                 WHERE devices.session <= excluded.session",
                &[&s.device, &s.site, &s.online, &s.session, &s.now_ms],
            )
            .await?
            == 1)
    }

    async fn set_online_since(&self, device: &str, now_ms: i64) -> Result<(), InboxError> {
        self.exec(
            "UPDATE devices SET online_since_ms = $2 WHERE device = $1",
            &[&device, &now_ms],
        )
        .await?;
        Ok(())
    }

    async fn set_heartbeat(
        &self,
        device: &str,
        now_ms: i64,
        (queued, oldest, peripherals): &(i64, i64, Option<String>),
    ) -> Result<(), InboxError> {
        self.exec(
            "UPDATE devices SET backlog = $2, oldest_unsent_ms = $3, heartbeat_ms = $4,
               peripherals = $5, online_since_ms = coalesce(online_since_ms, $4)
             WHERE device = $1",
            &[&device, queued, oldest, &now_ms, peripherals],
        )
        .await?;
        Ok(())
    }

    async fn verdict_rows(
        &self,
        device: &str,
        epoch: i64,
        from_seq: i64,
        limit: i64,
    ) -> Result<Vec<VerdictRow>, InboxError> {
        self.rows(
            "SELECT seq, id, state, document, reason FROM events
             WHERE device = $1 AND epoch = $2 AND seq >= $3 AND state IN ('booked', 'rejected')
             ORDER BY seq LIMIT $4",
            &[&device, &epoch, &from_seq, &limit],
            |r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)),
        )
        .await
    }

    async fn marks_with_rows_above(&self) -> Result<Vec<(String, i64, i64, String)>, InboxError> {
        self.rows(
            "SELECT w.device, w.epoch, w.complete_up_to, coalesce(d.site, '')
             FROM watermarks w LEFT JOIN devices d ON d.device = w.device
             WHERE EXISTS (SELECT 1 FROM events e WHERE e.device = w.device
                           AND e.epoch = w.epoch AND e.seq > w.complete_up_to)
             ORDER BY w.device, w.epoch",
            &[],
            |r| (r.get(0), r.get(1), r.get(2), r.get(3)),
        )
        .await
    }

    async fn counts(&self, of: CountOf) -> Result<Vec<(String, i64)>, InboxError> {
        let sql = match of {
            CountOf::FollowupsByState => "SELECT state, count(*) FROM followups GROUP BY state",
            CountOf::LanesByStatus => {
                "SELECT status, count(*) FROM lanes WHERE status IS NOT NULL GROUP BY status"
            }
            CountOf::OpenDeadLettersByDevice => {
                "SELECT device, count(*) FROM dead_letters WHERE state = 'open'
                 GROUP BY device ORDER BY device"
            }
        };
        self.rows(sql, &[], |r| (r.get(0), r.get(1))).await
    }

    async fn events_by_state(&self) -> Result<Vec<(String, i64, i64)>, InboxError> {
        self.rows(
            "SELECT state, count(*), count(*) FILTER (WHERE late) FROM events GROUP BY state",
            &[],
            |r| (r.get(0), r.get(1), r.get(2)),
        )
        .await
    }

    async fn device_stats(&self) -> Result<Vec<DeviceStats>, InboxError> {
        self.rows(
            "SELECT d.device, d.site, d.online, d.last_seen_ms,
               (SELECT w.complete_up_to FROM watermarks w WHERE w.device = d.device
                ORDER BY w.epoch DESC LIMIT 1)
             FROM devices d ORDER BY d.device",
            &[],
            |r| DeviceStats {
                device: r.get(0),
                site: r.get(1),
                online: r.get(2),
                last_seen_ms: r.get(3),
                complete_up_to: r.get::<_, Option<i64>>(4).map(from_sql),
                holes: Vec::new(),
            },
        )
        .await
    }
}
