//! The inbox's one error type, shared by both backends and the handle.

use std::path::PathBuf;

use dockline_protocol::{DeviceId, EncodeError};

/// An inbox operation failed.
#[derive(Debug, thiserror::Error)]
pub enum InboxError {
    /// The database file could not be opened or prepared.
    #[error(
        "cannot open inbox database {path}: {source}; check that data_dir is writable and not used by another collector"
    )]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        source: rusqlite::Error,
    },
    /// A query failed.
    #[error("inbox database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A number does not fit SQLite's signed 64-bit integers.
    #[error("{what} {value} is larger than the inbox can store (at most {max})", max = i64::MAX)]
    OutOfRange {
        /// Which number.
        what: &'static str,
        /// Its value.
        value: u64,
    },
    /// An envelope could not be re-encoded for storage.
    #[error("cannot encode envelope for the inbox: {0}")]
    Encode(#[from] EncodeError),
    /// The blocking worker died (a panic in a query).
    #[error("inbox worker failed: {0}")]
    Worker(String),
    /// The file was written by a newer collector.
    #[error(
        "inbox database {path} has schema version {found}, newer than this collector's {supported}; run the newer dockline-collector or restore a backup"
    )]
    SchemaTooNew {
        /// The file (or the PostgreSQL URL without its password).
        path: PathBuf,
        /// Its stored version.
        found: i64,
        /// The newest version this collector knows for that backend.
        supported: i64,
    },
    /// The PostgreSQL inbox could not be reached or opened.
    #[error(
        "cannot open the inbox database {url}: {problem}; check [inbox] url (postgres://user:password@host:port/database) and that the PostgreSQL server is running and reachable from here"
    )]
    PgOpen {
        /// The URL, without its password.
        url: String,
        /// Why.
        problem: String,
    },
    /// A PostgreSQL query failed.
    #[error("inbox database error (PostgreSQL): {}", super::postgres::with_causes(.0))]
    Postgres(#[from] tokio_postgres::Error),
    /// A batch opens an epoch older than the device's newest known one.
    #[error(
        "refusing batch of device '{device}' in epoch {epoch}: the device already has the newer epoch {newest} (an epoch is the creation time of the device's outbox, so a new one is never older); a forged or replayed batch, or a device whose outbox was restored from an old backup"
    )]
    OldEpoch {
        /// The device.
        device: DeviceId,
        /// The batch's epoch.
        epoch: u64,
        /// The newest epoch known for the device.
        newest: u64,
    },
    /// A dead letter's stored attempts are not readable JSON.
    #[error("dead letter {id} has unreadable attempts: {problem}")]
    DeadLetterData {
        /// The dead letter.
        id: i64,
        /// Why.
        problem: String,
    },
}

impl InboxError {
    /// Whether the same call would fail the same way again, whatever the
    /// database does: a value the inbox cannot hold or encode. The MQTT edge
    /// refuses (and acknowledges) such a message instead of retrying it.
    pub fn is_deterministic(&self) -> bool {
        matches!(
            self,
            InboxError::OutOfRange { .. } | InboxError::Encode(_) | InboxError::OldEpoch { .. }
        )
    }
}
