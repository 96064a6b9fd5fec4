//! The collector's media store: content-addressed, one copy per SHA-256,
//! whoever sent it. [`MediaStore`] is the contract; two backends keep it:
//!
//! - [`FsMediaStore`] (`fs.rs`), for SQLite deployments: files under
//!   `{data_dir}/media/` (complete media at `sha256/ab/<hex>`, partial
//!   prefixes at `partial/<hex>`) and a small index (`media/index.db`) of
//!   what is stored, attached, referenced and waited for;
//! - [`PgMediaStore`] (`pg.rs`), for PostgreSQL deployments: tables of its
//!   own (`dockline_media*`, created with `CREATE TABLE IF NOT EXISTS`) in
//!   the inbox's database, so every collector of a group sees every medium.
//!
//! # Invariants (both backends; `tests.rs` runs one suite on both)
//!
//! - **Bytes are committed before they are acked.** [`MediaStore::append`]
//!   returns only after the bytes are durable (file fsynced, or the row
//!   committed), and it takes bytes only at the end of the stored prefix
//!   (`at == have`): nothing is written twice or out of place. A stored
//!   prefix longer than `at` is a tail never acked (a crash between write
//!   and ack): it is cut back. One shorter than `at` is damage
//!   ([`MediaError::Damaged`]): counted; the caller starts the medium over.
//! - **A medium is stored only verified.** [`MediaStore::complete`] hashes
//!   the whole prefix; a match moves it into place atomically (file rename
//!   plus directory fsync, or one transaction), a mismatch discards it.
//! - **Never serve damage.** [`MediaStore::get`] checks the hash of what it
//!   reads; a complete medium whose bytes are wrong or gone is removed and
//!   counted (`damaged`), and reads as absent, so it is received again.
//! - **Retention never takes a medium an unbooked event needs.** Ingest
//!   records each event's references ([`MediaStore::add_refs`]); delivery
//!   drops them when the event is settled. [`MediaStore::sweep`] deletes
//!   only media attached at the ERP more than the retention ago and
//!   referenced by no open event.
//!
//! All methods block; async code goes through [`MediaHandle`], which runs
//! them on tokio's blocking pool.

mod fs;
mod pg;
#[cfg(test)]
mod tests;

use std::sync::{Arc, Mutex, MutexGuard};

use dockline_protocol::media::{MediaHash, MediaType};

use crate::media::{MediaRef, MediaRole};

pub use fs::FsMediaStore;
pub use pg::PgMediaStore;

/// A stored, verified medium.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMedium {
    /// PNG or JPEG.
    pub media_type: MediaType,
    /// Its bytes (their SHA-256 is the name they were asked by).
    pub bytes: Arc<[u8]>,
}

/// What the store knows of a complete medium, without its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MediumInfo {
    /// PNG or JPEG.
    pub media_type: MediaType,
    /// Its length.
    pub len: u64,
    /// When it was stored (ms since the Unix epoch).
    pub stored_ms: i64,
    /// When the ERP last attached it, if it did.
    pub attached_ms: Option<i64>,
}

/// Counts for `/metrics`, `/v1/stats` and the dashboard.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct MediaStats {
    /// Complete media stored.
    pub count: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Media being received (partial prefixes).
    pub partial: u64,
    /// Damaged stored bytes found and removed since the store was made.
    pub damaged: u64,
    /// Media deleted by the retention sweep since the store was made.
    pub swept: u64,
}

/// A store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    /// A file operation failed.
    #[error(
        "media store: cannot {what} {path}: {source}; check the disk and the permissions of data_dir/media"
    )]
    Io {
        /// What was tried.
        what: &'static str,
        /// On which path.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The index or database failed.
    #[error("media store database: {0}")]
    Db(String),
    /// Stored bytes do not fit what was acked (a truncated partial).
    #[error(
        "stored prefix of medium {hash} is {have} bytes, {at} were acked: damaged; it is received again from 0"
    )]
    Damaged {
        /// The medium.
        hash: MediaHash,
        /// What is stored.
        have: u64,
        /// What the caller expected.
        at: u64,
    },
    /// The stored prefix moved on without this caller (another collector
    /// sharing the database appended meanwhile).
    #[error(
        "stored prefix of medium {hash} is {have} bytes, not {at}: another writer appended; resume from the store"
    )]
    Moved {
        /// The medium.
        hash: MediaHash,
        /// What is stored.
        have: u64,
        /// What the caller expected.
        at: u64,
    },
    /// The complete bytes are not the named medium; they were discarded.
    #[error(
        "the {len} bytes stored for medium {expected} hash to {got}; discarded, received again from 0"
    )]
    HashMismatch {
        /// The name.
        expected: MediaHash,
        /// What the bytes hash to.
        got: MediaHash,
        /// How many.
        len: u64,
    },
}

impl MediaError {
    /// Whether the error is about the medium's bytes (the caller starts the
    /// medium over), not the store failing.
    pub fn restarts_medium(&self) -> bool {
        matches!(
            self,
            MediaError::Damaged { .. } | MediaError::HashMismatch { .. }
        )
    }
}

impl From<rusqlite::Error> for MediaError {
    fn from(e: rusqlite::Error) -> Self {
        MediaError::Db(e.to_string())
    }
}

impl From<tokio_postgres::Error> for MediaError {
    fn from(e: tokio_postgres::Error) -> Self {
        let mut text = e.to_string();
        let mut cause = std::error::Error::source(&e);
        while let Some(c) = cause {
            text.push_str(": ");
            text.push_str(&c.to_string());
            cause = c.source();
        }
        MediaError::Db(text)
    }
}

/// Everything the collector asks of its media store (see the module docs).
pub trait MediaStore: Send {
    /// `fs` or `postgres`, for logs.
    fn backend(&self) -> &'static str;
    /// The committed prefix of a medium being received (empty when none).
    fn prefix(&mut self, hash: &MediaHash) -> Result<Vec<u8>, MediaError>;
    /// The committed prefix's length (cheap; no bytes read).
    fn prefix_len(&mut self, hash: &MediaHash) -> Result<u64, MediaError>;
    /// Commits `bytes` at `at`, the prefix's end, durably (nothing to do
    /// for a medium already complete).
    fn append(
        &mut self,
        hash: &MediaHash,
        media_type: MediaType,
        len: u64,
        at: u64,
        bytes: &[u8],
    ) -> Result<(), MediaError>;
    /// Verifies the whole prefix against `hash` and stores it as complete.
    /// Storing a medium already complete is a no-op.
    fn complete(
        &mut self,
        hash: &MediaHash,
        media_type: MediaType,
        now_ms: i64,
    ) -> Result<(), MediaError>;
    /// Forgets a partial prefix.
    fn discard(&mut self, hash: &MediaHash) -> Result<(), MediaError>;
    /// The complete medium, verified; `None` when absent or found damaged
    /// (then removed and counted).
    fn get(&mut self, hash: &MediaHash) -> Result<Option<StoredMedium>, MediaError>;
    /// What is known of a complete medium (not verified: [`Self::get`] does).
    fn info(&mut self, hash: &MediaHash) -> Result<Option<MediumInfo>, MediaError>;
    /// Whether a medium is complete.
    fn has(&mut self, hash: &MediaHash) -> Result<bool, MediaError> {
        Ok(self.info(hash)?.is_some())
    }
    /// Records that the ERP attached the medium at `now_ms`.
    fn mark_attached(&mut self, hash: &MediaHash, now_ms: i64) -> Result<(), MediaError>;
    /// Records that the open event `event` references `refs` (kept for
    /// retention until [`Self::drop_refs`], and for good as the event's
    /// media list, [`Self::media_of_event`]).
    fn add_refs(&mut self, event: &str, refs: &[MediaRef]) -> Result<(), MediaError>;
    /// The media an event referenced (for the dashboard), in its order.
    fn media_of_event(&mut self, event: &str) -> Result<Vec<MediaRef>, MediaError>;
    /// The event is settled: it no longer holds its media.
    fn drop_refs(&mut self, event: &str) -> Result<(), MediaError>;
    /// When `event` first waited for its media (recorded at `now_ms` on the
    /// first call, the same answer after a restart).
    fn wait_since(&mut self, event: &str, now_ms: i64) -> Result<i64, MediaError>;
    /// Deletes media attached before `now_ms - retain_ms` that no open event
    /// references; returns how many.
    fn sweep(&mut self, now_ms: i64, retain_ms: i64) -> Result<u64, MediaError>;
    /// Counts.
    fn stats(&mut self) -> Result<MediaStats, MediaError>;
}

/// The media store shared by async tasks: each call runs on the blocking
/// pool with the store locked.
#[derive(Clone)]
pub struct MediaHandle {
    inner: Arc<Mutex<Box<dyn MediaStore>>>,
}

impl std::fmt::Debug for MediaHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MediaHandle").finish_non_exhaustive()
    }
}

fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl MediaHandle {
    /// Shares `store`.
    pub fn new(store: Box<dyn MediaStore>) -> Self {
        Self {
            inner: Arc::new(Mutex::new(store)),
        }
    }

    /// Runs `f` on the store, on the blocking pool.
    pub async fn call<R, F>(&self, f: F) -> Result<R, MediaError>
    where
        R: Send + 'static,
        F: FnOnce(&mut dyn MediaStore) -> Result<R, MediaError> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || f(lock(&inner).as_mut()))
            .await
            .map_err(|e| MediaError::Db(format!("media store worker failed: {e}")))?
    }

    /// Runs `f` on the store on this thread (blocking code, tests).
    pub fn blocking<R>(
        &self,
        f: impl FnOnce(&mut dyn MediaStore) -> Result<R, MediaError>,
    ) -> Result<R, MediaError> {
        f(lock(&self.inner).as_mut())
    }
}

/// A role's name in the store.
pub(crate) fn role_name(r: MediaRole) -> &'static str {
    r.name()
}

/// A role from its stored name.
pub(crate) fn role_of(name: &str) -> MediaRole {
    if name == "signature" {
        MediaRole::Signature
    } else {
        MediaRole::Photo
    }
}

/// Opens the store that goes with the inbox: PostgreSQL tables when the
/// inbox is at `pg_url`, else files under `data_dir/media`.
pub fn open(
    data_dir: &std::path::Path,
    pg_url: Option<&str>,
) -> Result<Box<dyn MediaStore>, MediaError> {
    Ok(match pg_url {
        Some(url) => Box::new(PgMediaStore::open(url)?),
        None => Box::new(FsMediaStore::open(&data_dir.join("media"))?),
    })
}
