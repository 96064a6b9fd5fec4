//! The PostgreSQL text of [`crate::inbox::batch_write`]'s steps, each in
//! the batch's transaction. Several collectors write at once: the
//! `(device, epoch)` watermark row is locked first (`FOR UPDATE`), so
//! batches of one device apply one after the other; rows go in with one
//! `unnest` insert; the watermark only grows (`GREATEST`).

use crate::inbox::batch_write::{BatchKey, BatchTx, EventRow};
use crate::inbox::{InboxError, from_sql};

use super::Db;

impl BatchTx for Db<'_> {
    async fn lock_watermark(
        &self,
        key: &BatchKey<'_>,
        _known: Option<u64>,
    ) -> Result<u64, InboxError> {
        self.exec(
            "INSERT INTO watermarks (device, epoch, complete_up_to) VALUES ($1, $2, 0)
             ON CONFLICT DO NOTHING",
            &[&key.device, &key.epoch],
        )
        .await?;
        // Read again under the lock: another collector may have moved it
        // since `watermark` looked.
        Ok(from_sql(
            self.one(
                "SELECT complete_up_to FROM watermarks WHERE device = $1 AND epoch = $2 FOR UPDATE",
                &[&key.device, &key.epoch],
            )
            .await?
            .get(0),
        ))
    }

    async fn top_seq(&self, key: &BatchKey<'_>) -> Result<u64, InboxError> {
        Ok(self
            .one(
                "SELECT max(seq) FROM events WHERE device = $1 AND epoch = $2",
                &[&key.device, &key.epoch],
            )
            .await?
            .get::<_, Option<i64>>(0)
            .map_or(0, from_sql))
    }

    async fn insert_events(
        &self,
        key: &BatchKey<'_>,
        rows: &[&EventRow<'_>],
    ) -> Result<Vec<u64>, InboxError> {
        let seq: Vec<i64> = rows.iter().map(|r| r.seq_sql).collect();
        let id: Vec<&str> = rows.iter().map(|r| r.id.as_str()).collect();
        let kind: Vec<&str> = rows.iter().map(|r| r.kind).collect();
        let envelope: Vec<&[u8]> = rows.iter().map(|r| &*r.envelope).collect();
        let state: Vec<&str> = rows.iter().map(|r| r.state).collect();
        let lane: Vec<Option<&str>> = rows.iter().map(|r| r.lane.as_deref()).collect();
        let stage: Vec<Option<i64>> = rows.iter().map(|r| r.stage).collect();
        Ok(self
            .query(
                "INSERT INTO events
                   (device, epoch, seq, site, id, kind, envelope, received_ms, state, lane, stage)
                 SELECT $1, $2, s, $3, i, k, e, $4, st, l, sg
                 FROM unnest($5::bigint[], $6::text[], $7::text[], $8::bytea[], $9::text[],
                             $10::text[], $11::bigint[]) AS x(s, i, k, e, st, l, sg)
                 ON CONFLICT DO NOTHING
                 RETURNING seq",
                &[
                    &key.device,
                    &key.epoch,
                    &key.site,
                    &key.now_ms,
                    &seq,
                    &id,
                    &kind,
                    &envelope,
                    &state,
                    &lane,
                    &stage,
                ],
            )
            .await?
            .iter()
            .map(|r| from_sql(r.get(0)))
            .collect())
    }

    async fn stored_ids(
        &self,
        key: &BatchKey<'_>,
        seqs: &[i64],
    ) -> Result<Vec<(i64, String)>, InboxError> {
        Ok(self
            .query(
                "SELECT seq, id FROM events WHERE device = $1 AND epoch = $2 AND seq = ANY($3)",
                &[&key.device, &key.epoch, &seqs],
            )
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect())
    }

    async fn quarantine(
        &self,
        key: &BatchKey<'_>,
        row: &EventRow<'_>,
        reason: &'static str,
    ) -> Result<(), InboxError> {
        self.exec(
            "INSERT INTO quarantine (device, epoch, seq, id, reason, envelope, received_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
            &[
                &key.device,
                &key.epoch,
                &row.seq_sql,
                &row.id,
                &reason,
                &&*row.envelope,
                &key.now_ms,
            ],
        )
        .await?;
        Ok(())
    }

    async fn wake_lanes(&self, key: &BatchKey<'_>, lanes: &[&str]) -> Result<(), InboxError> {
        self.exec(
            "INSERT INTO lanes (lane, wake_ms) SELECT unnest($1::text[]), $2
             ON CONFLICT (lane) DO UPDATE SET wake_ms = excluded.wake_ms",
            &[&lanes, &key.now_ms],
        )
        .await?;
        Ok(())
    }

    async fn insert_shed(&self, key: &BatchKey<'_>, lo: i64, hi: i64) -> Result<bool, InboxError> {
        Ok(self
            .exec(
                "INSERT INTO shed (device, epoch, lo, hi) VALUES ($1, $2, $3, $4)
                 ON CONFLICT DO NOTHING",
                &[&key.device, &key.epoch, &lo, &hi],
            )
            .await?
            == 1)
    }

    async fn wake_passed(&self, key: &BatchKey<'_>, from: i64, to: i64) -> Result<(), InboxError> {
        self.exec(
            "UPDATE lanes SET wake_ms = $5 WHERE lane IN
               (SELECT lane FROM events WHERE device = $1 AND state = 'pending'
                AND lane IS NOT NULL
                AND ((epoch = $2 AND seq > $3 AND seq <= $4) OR epoch > $2))",
            &[&key.device, &key.epoch, &from, &to, &key.now_ms],
        )
        .await?;
        Ok(())
    }

    async fn set_watermark(&self, key: &BatchKey<'_>, mark: i64) -> Result<(), InboxError> {
        self.exec(
            "UPDATE watermarks SET complete_up_to = GREATEST(complete_up_to, $3)
             WHERE device = $1 AND epoch = $2",
            &[&key.device, &key.epoch, &mark],
        )
        .await?;
        Ok(())
    }

    async fn seen_device(&self, key: &BatchKey<'_>) -> Result<(), InboxError> {
        self.exec(
            "INSERT INTO devices (device, site, last_seen_ms) VALUES ($1, $2, $3)
             ON CONFLICT (device) DO UPDATE SET site = excluded.site,
               last_seen_ms = excluded.last_seen_ms",
            &[&key.device, &key.site, &key.now_ms],
        )
        .await?;
        Ok(())
    }
}
