//! The outbox schema and its migrations, keyed on `PRAGMA user_version`.
//!
//! Each step moves the file from version N-1 to N inside one transaction, so
//! a crash mid-migration leaves the old version intact.

use std::path::Path;

use rusqlite::Connection;

use super::{OutboxError, now_ms};

/// Current schema version.
pub const SCHEMA_VERSION: i64 = 4;

/// Version 1: meta, outbox, receipts.
const V1: &str = "
CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE outbox (
    seq INTEGER PRIMARY KEY,
    event_id BLOB NOT NULL UNIQUE,
    priority INTEGER NOT NULL,
    captured_ms INTEGER NOT NULL,
    payload BLOB NOT NULL);
CREATE TABLE receipts (
    seq INTEGER PRIMARY KEY,
    event_id BLOB NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    state TEXT NOT NULL,
    document TEXT,
    reason TEXT,
    updated_ms INTEGER NOT NULL);
CREATE INDEX receipts_state ON receipts(state);
";

/// Version 2: shed sequences, drop counters, salvage reports, and an index
/// to find the oldest events of a class quickly when shedding.
const V2: &str = "
CREATE TABLE shed (seq INTEGER PRIMARY KEY, priority INTEGER NOT NULL, reason TEXT NOT NULL, at_ms INTEGER NOT NULL);
CREATE TABLE drops (priority INTEGER NOT NULL, reason TEXT NOT NULL, count INTEGER NOT NULL, PRIMARY KEY (priority, reason));
CREATE TABLE salvage (id INTEGER PRIMARY KEY, at_ms INTEGER NOT NULL, report TEXT NOT NULL);
CREATE INDEX outbox_priority ON outbox(priority, seq);
CREATE INDEX receipts_updated ON receipts(updated_ms);
";

/// Version 3: a queued event's receipt is its `outbox` row (which now
/// carries the event kind); `receipts` rows are written from the
/// collector's ack on. One row per event instead of two makes each group
/// commit write fewer pages.
const V3: &str = "
ALTER TABLE outbox ADD COLUMN kind TEXT NOT NULL DEFAULT '';
UPDATE outbox SET kind = coalesce((SELECT r.kind FROM receipts r WHERE r.seq = outbox.seq), '');
DELETE FROM receipts WHERE state = 'queued';
";

/// Version 4: client idempotency keys (`Idempotency-Key` on `POST
/// /v1/events`), written in the transaction that inserts their event, so a
/// key is never stored without its event nor an event without its key.
const V4: &str = "
CREATE TABLE idempotency (
    key TEXT PRIMARY KEY,
    body_sha256 BLOB NOT NULL,
    seq INTEGER NOT NULL,
    event_id BLOB NOT NULL,
    at_ms INTEGER NOT NULL);
CREATE INDEX idempotency_seq ON idempotency(seq);
";

/// Brings the schema to [`SCHEMA_VERSION`], one step per version. `epoch` is
/// used when the file is new.
pub fn migrate(conn: &mut Connection, path: &Path, epoch: Option<i64>) -> Result<(), OutboxError> {
    let err = |source| OutboxError::Sqlite {
        path: path.into(),
        source,
    };
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(err)?;
    if version > SCHEMA_VERSION {
        return Err(OutboxError::SchemaTooNew {
            path: path.into(),
            found: version,
        });
    }
    if version < 1 {
        let tx = conn.transaction().map_err(err)?;
        tx.execute_batch(V1).map_err(err)?;
        tx.execute(
            "INSERT INTO meta (key, value) VALUES ('epoch', ?1), ('next_seq', 1), ('acked_up_to', 0), ('session', 0)",
            [epoch.unwrap_or_else(now_ms)],
        )
        .map_err(err)?;
        tx.pragma_update(None, "user_version", 1).map_err(err)?;
        tx.commit().map_err(err)?;
    }
    if version < 2 {
        let tx = conn.transaction().map_err(err)?;
        tx.execute_batch(V2).map_err(err)?;
        tx.pragma_update(None, "user_version", 2).map_err(err)?;
        tx.commit().map_err(err)?;
    }
    if version < 3 {
        let tx = conn.transaction().map_err(err)?;
        tx.execute_batch(V3).map_err(err)?;
        tx.pragma_update(None, "user_version", 3).map_err(err)?;
        tx.commit().map_err(err)?;
    }
    if version < 4 {
        let tx = conn.transaction().map_err(err)?;
        tx.execute_batch(V4).map_err(err)?;
        tx.pragma_update(None, "user_version", 4).map_err(err)?;
        tx.commit().map_err(err)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A version-2 file (receipts written at append) migrates to version 3
    /// without losing a queued event's kind or any later receipt.
    #[test]
    fn version_2_files_move_queued_receipts_into_the_outbox() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("outbox.db");
        let mut conn = Connection::open(&path).expect("open");
        conn.execute_batch(V1).expect("v1");
        conn.execute_batch(V2).expect("v2");
        conn.execute_batch(
            "INSERT INTO meta (key, value) VALUES ('epoch', 7), ('next_seq', 3), ('acked_up_to', 1), ('session', 0);
             INSERT INTO outbox (seq, event_id, priority, captured_ms, payload) VALUES (2, x'02', 0, 5, x'00');
             INSERT INTO receipts (seq, event_id, kind, state, updated_ms) VALUES (1, x'01', 'packed', 'booked', 9), (2, x'02', 'picked', 'queued', 9);
             PRAGMA user_version = 2;",
        )
        .expect("v2 rows");
        migrate(&mut conn, &path, None).expect("migrate");
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .expect("version");
        assert_eq!(version, SCHEMA_VERSION);
        let kind: String = conn
            .query_row("SELECT kind FROM outbox WHERE seq = 2", [], |r| r.get(0))
            .expect("kind");
        assert_eq!(kind, "picked");
        let states: Vec<(i64, String)> = conn
            .prepare("SELECT seq, state FROM receipts ORDER BY seq")
            .expect("prepare")
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows");
        assert_eq!(states, vec![(1, "booked".to_string())]);
    }
}
