//! The outbox: every event the device captured, from the commit that
//! acknowledged it to its producer until the collector confirms it is stored.
//!
//! # Invariants
//!
//! 1. **Commit before ack.** A producer (HTTP 201, scanner beep) is answered
//!    only after the SQLite transaction holding its event committed. Must-
//!    deliver and normal events commit with `synchronous = FULL` (fsync: they
//!    survive a power cut). Telemetry-only groups commit at once with
//!    `synchronous = NORMAL` (they survive a crash of the agent); the WAL is
//!    fsynced at most `telemetry_commit_ms` later, so a power cut loses at
//!    most that window of telemetry.
//! 2. **Sequences never repeat.** They are assigned in the inserting
//!    transaction, start at 1, and are dense within an epoch. The next one
//!    is past the highest any table holds and past `meta.next_seq`, which
//!    every ack records before it deletes rows. The epoch is the creation time (Unix ms) of this database file,
//!    so a device whose outbox was deleted (or salvaged without readable
//!    counters) starts a new epoch and the collector tells a reset from a gap.
//! 3. **Only the collector deletes.** A payload is deleted when a collector's
//!    application ack says it is stored, never on an MQTT PUBACK. A small
//!    receipt (written in the same transaction) stays and later records the ERP's verdict; receipts in a final
//!    state (or stored without a verdict) are pruned after
//!    `receipt_retention_hours`.
//! 4. **Shedding is explicit.** Under the disk budget, telemetry is shed first
//!    (oldest first), then normal events, never must-deliver events; a new
//!    must-deliver event that does not fit is refused (`OutboxError::Full`,
//!    HTTP 507). Every shed sequence is recorded in `shed` and told to the
//!    collector with the next batch, so it never waits for it; every drop is
//!    counted by class and reason in `drops`.
//! 5. **One writer.** All writes go through one thread that owns the
//!    connection. Appends waiting in its queue are committed together in one
//!    transaction (group commit): many producers share one fsync.
//! 6. **A client key books once.** An event appended with a client
//!    idempotency key ([`ClientKey`], the API's `Idempotency-Key`) stores the
//!    key, the SHA-256 of the request body, the sequence and the event id in
//!    `idempotency`, in the same transaction as the event. The same key again
//!    answers the first event (`replayed`), whether it comes in the same
//!    group, later, or after a crash between commit and answer; the same key
//!    with another body is refused ([`OutboxError::KeyReused`]). A key lives
//!    as long as its event's receipt: it is pruned with it.
//! 7. **Private at rest.** The data folder is 0700, the database, its WAL
//!    and every file beside it 0600; payloads are sealed with the device's
//!    key ([`keys`]: ChaCha20-Poly1305, the event id as associated data) and
//!    `secure_delete` overwrites what acks and pruning delete, so neither
//!    the file, nor its WAL, nor a free page shows a recipient, signature or
//!    position. Kinds, sequences, receipts' ERP documents and reasons stay
//!    readable (the doctor needs them without the key).
//! 8. **Damage is survived.** At open the file is checked (`quick_check`); a
//!    damaged file is moved aside and every readable event copied into a
//!    fresh file ([`salvage`]). The agent starts either way.
//!
//! # On-disk layout (`{data_dir}/outbox.db`, SQLite, WAL)
//!
//! | table      | row                                                            |
//! |------------|----------------------------------------------------------------|
//! | `meta`     | `key` → `value`: `epoch`, `next_seq`, `acked_up_to`, `session` |
//! | `outbox`   | `seq` (PK), `event_id`, `priority` (0 must-deliver, 1 normal, 2 telemetry), `captured_ms`, `payload` (CBOR [`Envelope`], sealed by [`keys`]), `kind`; a queued event's receipt is this row |
//! | `receipts` | `seq` (PK), `event_id`, `kind`, `state` (`stored`, `booked`, `rejected`, `shed`), `document`, `reason`, `updated_ms`: written from the collector's ack (or a verdict that overtook it) on |
//! | `shed`     | `seq` (PK), `priority`, `reason` (`budget`, `damaged`), `at_ms`: shed and not yet acknowledged |
//! | `drops`    | (`priority`, `reason`) → `count`                               |
//! | `salvage`  | one JSON [`salvage::SalvageReport`] per salvage                 |
//! | `idempotency` | `key` (PK), `body_sha256`, `seq`, `event_id`, `at_ms`: client keys of appended events (not carried over by a salvage) |
//!
//! The schema version is `PRAGMA user_version` ([`schema::SCHEMA_VERSION`]).

pub mod budget;
pub mod keys;
pub mod media;
pub mod salvage;
pub mod schema;
pub(crate) mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use dockline_protocol::{DeviceId, Envelope, EventId, Payload, Priority, TimeSource, Verdict};
use serde::Serialize;
use tokio::sync::{Notify, oneshot};

pub(crate) use dockline_host::clock::now_ms;
pub use salvage::SalvageReport;
pub use schema::SCHEMA_VERSION;

/// Outbox failures.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    /// SQLite refused an operation.
    #[error("outbox database {path}: {source}")]
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// SQLite's error.
        source: rusqlite::Error,
    },
    /// The database was written by a newer agent.
    #[error(
        "outbox database {path} has schema version {found}, this agent knows up to {SCHEMA_VERSION}; run the newer agent or move the file aside"
    )]
    SchemaTooNew {
        /// The database file.
        path: PathBuf,
        /// Its version.
        found: i64,
    },
    /// The event broke a protocol rule.
    #[error("{0}")]
    Invalid(String),
    /// No room for a must-deliver (or normal) event even after shedding.
    #[error(
        "outbox is full: no room for a {class} event of {needed} bytes ({held} bytes held, budget {budget} bytes{disk}); \
         nothing sheddable is left. Reconnect the device so the backlog drains, or raise [outbox] budget_bytes"
    )]
    Full {
        /// The refused event's class.
        class: &'static str,
        /// Its size.
        needed: u64,
        /// Bytes held.
        held: u64,
        /// The budget.
        budget: u64,
        /// Disk free note.
        disk: String,
    },
    /// The client idempotency key was used before with a different request.
    #[error(
        "Idempotency-Key {key:?} was already used for a different event; a retry must send the same body, a new event needs a new key"
    )]
    KeyReused {
        /// The key.
        key: String,
    },
    /// The writer thread is gone (the agent is shutting down).
    #[error("the outbox writer has stopped; the agent is shutting down")]
    Closed,
    /// The data folder could not be created or a file moved.
    #[error("cannot use {path}: {source}")]
    DataDir {
        /// The folder or file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Outbox limits and timings (`[outbox]` in agent.toml).
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct OutboxConfig {
    /// Most payload bytes held before shedding starts.
    #[serde(default = "default_budget")]
    pub budget_bytes: u64,
    /// Free disk space never to go below.
    #[serde(default = "default_min_free")]
    pub min_free_bytes: u64,
    /// Longest committed telemetry waits for its fsync (the power-cut window).
    #[serde(default = "default_telemetry_commit")]
    pub telemetry_commit_ms: u64,
    /// Receipts are deleted this long after their last change: booked and
    /// rejected ones, and stored ones whose verdict never came (the
    /// collector's dead letters are the place to follow those up).
    #[serde(default = "default_retention")]
    pub receipt_retention_hours: u64,
}

fn default_budget() -> u64 {
    256 * 1024 * 1024
}
fn default_min_free() -> u64 {
    32 * 1024 * 1024
}
fn default_telemetry_commit() -> u64 {
    200
}
fn default_retention() -> u64 {
    72
}

impl Default for OutboxConfig {
    fn default() -> Self {
        Self {
            budget_bytes: default_budget(),
            min_free_bytes: default_min_free(),
            telemetry_commit_ms: default_telemetry_commit(),
            receipt_retention_hours: default_retention(),
        }
    }
}

/// An event to append.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// Priority class.
    pub priority: Priority,
    /// Capture time (Unix ms).
    pub captured_ms: i64,
    /// Where the capture time came from.
    pub time_source: TimeSource,
    /// The event or reading.
    pub payload: Payload,
}

/// A client's idempotency key for one append: the key and the SHA-256 of
/// the request it came with (so a different request under the same key is
/// told apart from a retry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientKey {
    /// The key as the client sent it.
    pub key: String,
    /// SHA-256 of the request's canonical body.
    pub body_sha256: [u8; 32],
}

/// A [`NewEvent`] ready for the writer: validated, identified, and encoded
/// but for its sequence number.
pub(crate) struct Prepared {
    pub(crate) priority: Priority,
    pub(crate) captured_ms: i64,
    pub(crate) kind: &'static str,
    pub(crate) id: EventId,
    /// The envelope's entries after `seq`
    /// ([`dockline_protocol::codec::envelope_tail`]).
    pub(crate) tail: Vec<u8>,
    /// The client's idempotency key, if it sent one.
    pub(crate) once: Option<ClientKey>,
}

impl Prepared {
    fn new(e: NewEvent, once: Option<ClientKey>) -> Result<Self, OutboxError> {
        e.payload
            .validate()
            .map_err(|v| OutboxError::Invalid(format!("event refused: {v}")))?;
        // A UUIDv7: its first 48 bits are this moment in Unix ms.
        let id = EventId(*uuid::Uuid::now_v7().as_bytes());
        let tail = dockline_protocol::codec::envelope_tail(
            id,
            e.captured_ms,
            e.time_source,
            e.priority,
            &e.payload,
        )
        .map_err(|err| OutboxError::Invalid(err.to_string()))?;
        Ok(Self {
            priority: e.priority,
            captured_ms: e.captured_ms,
            kind: kind_of(&e.payload),
            id,
            tail,
            once,
        })
    }
}

/// What the producer learns once its event is committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Appended {
    /// Sequence number.
    pub seq: u64,
    /// Epoch of the sequence.
    pub epoch: u64,
    /// Stable event id.
    #[serde(serialize_with = "event_id_text")]
    pub event_id: EventId,
    /// The answer is an earlier append's: the client key was seen before
    /// with the same request, and nothing new was stored.
    pub replayed: bool,
}

fn event_id_text<S: serde::Serializer>(id: &EventId, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(id)
}

/// A receipt: where an event stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Receipt {
    /// Sequence number.
    pub seq: u64,
    /// Event id.
    #[serde(serialize_with = "event_id_text")]
    pub event_id: EventId,
    /// Event kind (`picked`, …, or `reading`).
    pub kind: String,
    /// `queued`, `stored`, `booked`, `rejected` or `shed`.
    pub state: String,
    /// The ERP's document reference when booked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub document: Option<String>,
    /// The ERP's reason when rejected, or why it was shed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Last change (Unix ms).
    pub updated_ms: i64,
}

/// Held events of one class.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ClassHealth {
    /// Events held.
    pub queued: u64,
    /// Payload bytes held.
    pub bytes: u64,
}

/// Drops of one class for one reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DropCount {
    /// `must_deliver`, `normal`, `telemetry` or `unknown`.
    pub class: String,
    /// `budget`, `damaged`, `refused_full`.
    pub reason: String,
    /// How many.
    pub count: u64,
}

/// Queue health.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct QueueStatus {
    /// Sequence epoch.
    pub epoch: u64,
    /// Next sequence to be assigned.
    pub next_seq: u64,
    /// Highest sequence the collector confirmed as stored.
    pub acked_up_to: u64,
    /// Events held, not yet confirmed by the collector.
    pub queued: u64,
    /// Payload bytes held.
    pub queued_bytes: u64,
    /// Held events and bytes per class: must-deliver, normal, telemetry.
    pub classes: [ClassHealth; 3],
    /// Capture time of the lowest held sequence (Unix ms).
    pub oldest_queued_ms: Option<i64>,
    /// Receipts stored at the collector, awaiting the ERP.
    pub stored: u64,
    /// Receipts booked at the ERP.
    pub booked: u64,
    /// Receipts rejected by the ERP.
    pub rejected: u64,
    /// Lowest sequence stored at the collector whose ERP verdict has not
    /// arrived (asked for again in birth and heartbeat messages).
    pub verdicts_wanted_from: Option<u64>,
    /// Drops by class and reason.
    pub drops: Vec<DropCount>,
    /// Free bytes on the data folder's file system.
    pub disk_free: Option<u64>,
    /// Duration of the last fsynced commit, microseconds.
    pub last_fsync_us: Option<u64>,
    /// The most recent salvage of a damaged file.
    pub salvage: Option<SalvageReport>,
}

/// A batch's worth of held events plus the shed sequences it must report.
#[derive(Debug, Clone, Default)]
pub struct Chunk {
    /// Envelopes, ascending.
    pub events: Vec<Envelope>,
    /// Shed sequence ranges (inclusive) at or below the last event.
    pub shed: Vec<(u64, u64)>,
}

type Reply<T> = oneshot::Sender<Result<T, OutboxError>>;

enum Command {
    Append(Box<Prepared>, Reply<Appended>),
    Read {
        from: u64,
        max: usize,
        live_only: bool,
        reply: Reply<Chunk>,
    },
    ApplyAck {
        up_to: u64,
        also: Vec<(u64, u64)>,
        reply: Reply<u64>,
    },
    ApplyVerdicts(Vec<Verdict>, Reply<usize>),
    Status(Reply<QueueStatus>),
    Receipt(EventId, Reply<Option<Receipt>>),
    Receipts {
        state: Option<String>,
        limit: usize,
        before: Option<u64>,
        reply: Reply<Vec<Receipt>>,
    },
    NextSession(Reply<u64>),
    PruneReceipts(Reply<usize>),
}

/// Handle to the outbox; cheap to clone, usable from async code.
#[derive(Clone)]
pub struct Outbox {
    tx: mpsc::SyncSender<Command>,
    appended: Arc<Notify>,
    /// Bumped after every commit that can change a receipt (append, ack,
    /// verdicts), for long polls of receipts.
    changes: Arc<tokio::sync::watch::Sender<u64>>,
    device: DeviceId,
    epoch: u64,
}

impl Outbox {
    /// Opens (or creates, or salvages) `{data_dir}/outbox.db` and starts the
    /// writer thread.
    pub fn open(
        data_dir: &Path,
        device: DeviceId,
        config: OutboxConfig,
    ) -> Result<Self, OutboxError> {
        keys::private_dir(data_dir)?;
        // One agent per outbox; a previous one still shutting down gets a
        // moment to let go.
        let lock = keys::FolderLock::acquire(data_dir, Duration::from_secs(5))?;
        let path = data_dir.join("outbox.db");
        for suffix in ["", "-wal", "-shm"] {
            let mut file = path.clone().into_os_string();
            file.push(suffix);
            let file = PathBuf::from(file);
            if suffix.is_empty() || file.exists() {
                keys::private_file(&file)?;
            }
        }
        let keys = keys::Keys::load_or_create(data_dir)?;
        salvage::check_and_salvage(&path, Some(&keys))?;
        let writer = writer::Writer::open(&path, data_dir, device.clone(), config, keys, lock)?;
        let epoch = writer.epoch();
        // Bounded: when the disk is slow, producers wait rather than pile up memory.
        let (tx, rx) = mpsc::sync_channel(4096);
        let appended = Arc::new(Notify::new());
        let notify = appended.clone();
        std::thread::Builder::new()
            .name("outbox-writer".into())
            .spawn(move || writer.serve(rx, notify))
            .map_err(|source| OutboxError::DataDir {
                path: data_dir.into(),
                source,
            })?;
        Ok(Self {
            tx,
            appended,
            changes: Arc::new(tokio::sync::watch::Sender::new(0)),
            device,
            epoch,
        })
    }

    /// The sequence epoch of this outbox.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The device id.
    pub fn device(&self) -> &DeviceId {
        &self.device
    }

    /// A receiver that sees a new value after every commit that can change
    /// a receipt (append, ack, verdicts).
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn changed(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Resolves when events were committed since the last call.
    pub async fn appended(&self) {
        self.appended.notified().await
    }

    async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, OutboxError> {
        let (reply, rx) = oneshot::channel();
        match self.tx.try_send(make(reply)) {
            Ok(()) => {}
            Err(mpsc::TrySendError::Disconnected(_)) => return Err(OutboxError::Closed),
            // The queue is full (slow disk): wait for room off the runtime threads.
            Err(mpsc::TrySendError::Full(command)) => {
                let tx = self.tx.clone();
                let sent = tokio::task::spawn_blocking(move || tx.send(command).is_ok()).await;
                if !matches!(sent, Ok(true)) {
                    return Err(OutboxError::Closed);
                }
            }
        }
        rx.await.map_err(|_| OutboxError::Closed)?
    }

    /// Appends an event; resolves after the commit that holds it.
    ///
    /// The event is validated, identified and encoded here, on the
    /// producer's task, so the one writer thread only adds the sequence
    /// number and inserts.
    pub async fn append(&self, event: NewEvent) -> Result<Appended, OutboxError> {
        let prepared = Prepared::new(event, None)?;
        let appended = self.call(|r| Command::Append(Box::new(prepared), r)).await;
        self.changed();
        appended
    }

    /// Appends an event under a client idempotency key: the first append
    /// with `key` stores the event; a later one with the same key and body
    /// answers that event (`replayed`) and stores nothing; the same key
    /// with another body is [`OutboxError::KeyReused`].
    pub async fn append_once(
        &self,
        event: NewEvent,
        key: ClientKey,
    ) -> Result<Appended, OutboxError> {
        let prepared = Prepared::new(event, Some(key))?;
        let appended = self.call(|r| Command::Append(Box::new(prepared), r)).await;
        self.changed();
        appended
    }

    /// Up to `max` held envelopes with `seq >= from`, ascending, with the shed
    /// ranges to report alongside. `live_only` skips telemetry (the live lane).
    pub async fn read(&self, from: u64, max: usize, live_only: bool) -> Result<Chunk, OutboxError> {
        self.call(|reply| Command::Read {
            from,
            max,
            live_only,
            reply,
        })
        .await
    }

    /// The collector stored everything up to `up_to`, plus the ranges in
    /// `also`: drop those payloads, keep receipts. Returns the ack floor.
    pub async fn apply_ack(&self, up_to: u64, also: Vec<(u64, u64)>) -> Result<u64, OutboxError> {
        let floor = self
            .call(|reply| Command::ApplyAck { up_to, also, reply })
            .await;
        self.changed();
        floor
    }

    /// Records ERP verdicts in the receipts; returns how many matched.
    pub async fn apply_verdicts(&self, verdicts: Vec<Verdict>) -> Result<usize, OutboxError> {
        let matched = self.call(|r| Command::ApplyVerdicts(verdicts, r)).await;
        self.changed();
        matched
    }

    /// Queue health.
    pub async fn status(&self) -> Result<QueueStatus, OutboxError> {
        self.call(Command::Status).await
    }

    /// The receipt of one event.
    pub async fn receipt(&self, id: EventId) -> Result<Option<Receipt>, OutboxError> {
        self.call(|r| Command::Receipt(id, r)).await
    }

    /// Receipts, newest first, optionally filtered by state.
    pub async fn receipts(
        &self,
        state: Option<String>,
        limit: usize,
        before: Option<u64>,
    ) -> Result<Vec<Receipt>, OutboxError> {
        self.call(|reply| Command::Receipts {
            state,
            limit,
            before,
            reply,
        })
        .await
    }

    /// Increments and returns the persisted connection-session counter.
    pub async fn next_session(&self) -> Result<u64, OutboxError> {
        self.call(Command::NextSession).await
    }

    /// Deletes receipts in a final state older than the retention.
    pub async fn prune_receipts(&self) -> Result<usize, OutboxError> {
        self.call(Command::PruneReceipts).await
    }
}

pub(crate) fn kind_of(payload: &Payload) -> &'static str {
    match payload {
        Payload::Event(e) => e.detail.kind_name(),
        Payload::Reading(_) => "reading",
    }
}

/// Name of a priority code as stored in the tables.
pub fn class_name(code: i64) -> &'static str {
    match code {
        0 => "must_deliver",
        1 => "normal",
        2 => "telemetry",
        _ => "unknown",
    }
}

fn retention(config: &OutboxConfig) -> Duration {
    Duration::from_secs(config.receipt_retention_hours.saturating_mul(3600))
}

#[cfg(test)]
mod tests;
