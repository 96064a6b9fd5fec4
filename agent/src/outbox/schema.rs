//! The outbox schema and its migrations, keyed on `PRAGMA user_version`.
//!
//! Each step moves the file from version N-1 to N inside one transaction, so
//! a crash mid-migration leaves the old version intact.

use std::path::Path;

use rusqlite::Connection;

use super::{OutboxError, now_ms};

/// Current schema version.
pub const SCHEMA_VERSION: i64 = 2;

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
    Ok(())
}
