//! `dockline-agent doctor`: look inside an outbox file without changing it.
//!
//! Every function here opens `{data_dir}/outbox.db` **read-only**
//! (`SQLITE_OPEN_READ_ONLY` plus `PRAGMA query_only`): it never creates,
//! migrates or repairs a file, and it can run while the agent is running
//! (the file is in WAL mode, so readers do not block the writer).
//! On a file no agent has open, SQLite may leave an empty `outbox.db-wal`
//! and `outbox.db-shm` behind (a read-only connection cannot remove them);
//! they are harmless, the agent reuses them when it starts.
//!
//! - [`check`]: integrity (`PRAGMA quick_check`), schema version, counters,
//!   the last salvage; on a damaged file, what can still be read.
//! - [`stats`]: queue depth and bytes per class, receipts by state, drops,
//!   shed sequences.
//! - [`list`]: receipts by state.
//! - [`export`]: held events as JSON lines.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use dockline_protocol::{Envelope, codec};
use rusqlite::{Connection, ErrorCode, OpenFlags, params};
use serde::Serialize;

use crate::outbox::keys::{self, Keys};
use crate::outbox::salvage::{self, SalvageReport};
use crate::outbox::writer::{read_receipts, read_status};
use crate::outbox::{DropCount, OutboxError, Receipt, SCHEMA_VERSION, class_name};

/// Why the doctor could not examine the outbox, or what it found broken.
#[derive(Debug, thiserror::Error)]
pub enum DoctorError {
    /// There is no outbox file.
    #[error(
        "no outbox database at {path}; check --data-dir (or data_dir in the --config file): \
         the agent creates {file} there when it first starts",
        file = "outbox.db"
    )]
    Missing {
        /// The expected file.
        path: PathBuf,
    },
    /// The file could not be opened read-only.
    #[error(
        "cannot open {path} read-only: {source}; check that this user may read the file and its folder \
         (the -wal and -shm files next to it too)"
    )]
    Open {
        /// The file.
        path: PathBuf,
        /// SQLite's error.
        source: rusqlite::Error,
    },
    /// The file is damaged; reading it failed.
    #[error(
        "outbox database {path} is damaged ({problem}); run `dockline-agent doctor check` for a report, \
         then start the agent, which moves the file aside and salvages every readable event"
    )]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What SQLite said.
        problem: String,
    },
    /// The file is not an outbox this agent can read.
    #[error(
        "{path} is not an outbox this agent can read: {problem}; check --data-dir, or use the agent version that wrote it"
    )]
    NotAnOutbox {
        /// The file.
        path: PathBuf,
        /// Why.
        problem: String,
    },
    /// A query failed for another reason (a locked file, no permission).
    #[error("outbox database {path}: {source}; if the agent is running, retry in a moment")]
    Sqlite {
        /// The file.
        path: PathBuf,
        /// SQLite's error.
        source: rusqlite::Error,
    },
    /// An outbox read failed.
    #[error(transparent)]
    Outbox(#[from] OutboxError),
    /// Writing the output failed (a closed pipe).
    #[error("cannot write the output: {0}")]
    Output(#[from] std::io::Error),
    /// The arguments or the config are unusable.
    #[error("{0}")]
    Usage(String),
}

impl DoctorError {
    /// Process exit code: 1 when the file is damaged or not readable as an
    /// outbox, 2 when it could not be examined (usage, config, missing file).
    pub fn exit_code(&self) -> u8 {
        match self {
            DoctorError::Damaged { .. } | DoctorError::NotAnOutbox { .. } => 1,
            DoctorError::Outbox(OutboxError::Sqlite { source, .. }) if is_damage(source) => 1,
            _ => 2,
        }
    }
}

fn is_damage(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _)
        if matches!(f.code, ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase))
}

/// Classifies a query error on `path`: damage or something else.
fn query_error(path: &Path, source: rusqlite::Error) -> DoctorError {
    if is_damage(&source) {
        DoctorError::Damaged {
            path: path.into(),
            problem: source.to_string(),
        }
    } else {
        DoctorError::Sqlite {
            path: path.into(),
            source,
        }
    }
}

/// An outbox read error, with damage told apart from the rest.
fn outbox_error(e: OutboxError) -> DoctorError {
    match e {
        OutboxError::Sqlite { path, source } => query_error(&path, source),
        other => DoctorError::Outbox(other),
    }
}

/// Unix ms as UTC text (`2024-03-01T12:00:00.000Z`), for people reading reports.
pub fn utc(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        ms.rem_euclid(1000)
    )
}

/// The outbox file in a data folder.
pub fn outbox_path(data_dir: &Path) -> PathBuf {
    data_dir.join("outbox.db")
}

/// Opens the outbox read-only; a missing file is an error, never created.
pub fn open_read_only(path: &Path) -> Result<Connection, DoctorError> {
    if !path.is_file() {
        return Err(DoctorError::Missing { path: path.into() });
    }
    let open = || -> rusqlite::Result<Connection> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY
                | OpenFlags::SQLITE_OPEN_URI
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.pragma_update(None, "query_only", true)?;
        // Readers only wait for a WAL recovery or a checkpoint restart.
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        Ok(conn)
    };
    open().map_err(|source| {
        if is_damage(&source) {
            DoctorError::Damaged {
                path: path.into(),
                problem: source.to_string(),
            }
        } else {
            DoctorError::Open {
                path: path.into(),
                source,
            }
        }
    })
}

fn schema_version(conn: &Connection, path: &Path) -> Result<i64, DoctorError> {
    conn.pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(|e| query_error(path, e))
}

/// Fails unless the file has exactly the schema this agent knows.
fn require_schema(conn: &Connection, path: &Path) -> Result<(), DoctorError> {
    let found = schema_version(conn, path)?;
    if found == SCHEMA_VERSION {
        return Ok(());
    }
    Err(DoctorError::NotAnOutbox {
        path: path.into(),
        problem: schema_note(found),
    })
}

fn schema_note(found: i64) -> String {
    match found {
        0 => "schema version 0: no outbox tables (an empty or foreign SQLite file)".into(),
        v if v < SCHEMA_VERSION => format!(
            "schema version {v}, older than this agent's {SCHEMA_VERSION}; the agent migrates it when it starts"
        ),
        v => format!(
            "schema version {v}, newer than this agent's {SCHEMA_VERSION}; use the newer agent's doctor"
        ),
    }
}

/// What is readable in a damaged file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Readable {
    /// Held events that can be read and decoded.
    pub readable: u64,
    /// Held events that cannot.
    pub unreadable: u64,
    /// Their sequences, as inclusive ranges.
    pub unreadable_ranges: Vec<(u64, u64)>,
    /// Whether the held sequence range could be determined at all.
    pub range_known: bool,
}

/// The result of `doctor check`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CheckReport {
    /// The file examined.
    pub path: String,
    /// No damage found and the schema is the current one.
    pub healthy: bool,
    /// `ok`, or what `PRAGMA quick_check` (or opening the file) said.
    pub integrity: String,
    /// `PRAGMA user_version`, when readable.
    pub schema_version: Option<i64>,
    /// The version this agent writes.
    pub schema_expected: i64,
    /// A note when the schema is not the expected one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schema_problem: Option<String>,
    /// Sequence epoch, when readable.
    pub epoch: Option<u64>,
    /// Next sequence to be assigned, when readable.
    pub next_seq: Option<u64>,
    /// The collector's ack floor, when readable.
    pub acked_up_to: Option<u64>,
    /// Held events, when readable.
    pub held: Option<u64>,
    /// How many salvages this file records.
    pub salvages: u64,
    /// The most recent salvage.
    pub last_salvage: Option<SalvageReport>,
    /// On a damaged file: what can still be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub readable: Option<Readable>,
    /// The media folder beside the outbox (signatures, photos).
    pub media: crate::outbox::media::MediaCheck,
}

/// Checks the outbox at `path` without changing it. A damaged file gives a
/// report with `healthy == false`, not an error; errors are for files that
/// cannot be examined at all (missing, no permission).
pub fn check(path: &Path) -> Result<CheckReport, DoctorError> {
    let mut report = CheckReport {
        path: path.display().to_string(),
        schema_expected: SCHEMA_VERSION,
        ..CheckReport::default()
    };
    let conn = match open_read_only(path) {
        Ok(c) => Some(c),
        Err(DoctorError::Damaged { problem, .. }) => {
            report.integrity = problem;
            None
        }
        Err(e) => return Err(e),
    };
    if let Some(conn) = &conn {
        report.integrity = match quick_check(conn) {
            Ok(text) => text,
            Err(e) if is_damage(&e) => e.to_string(),
            Err(source) => {
                return Err(DoctorError::Sqlite {
                    path: path.into(),
                    source,
                });
            }
        };
    }
    let keys = Keys::for_database(path).ok().flatten();
    if let Some(dir) = path.parent() {
        report.media = crate::outbox::media::check_dir(dir, keys.as_ref()).map_err(outbox_error)?;
    }
    let media_ok = report.media.damaged.is_empty();
    let intact = report.integrity == "ok";
    if let Some(conn) = &conn {
        report.schema_version = schema_version(conn, path).ok();
        if let Some(v) = report.schema_version.filter(|v| *v != SCHEMA_VERSION) {
            report.schema_problem = Some(schema_note(v));
        }
        read_counters(conn, &mut report);
    }
    if intact {
        report.healthy = report.schema_problem.is_none();
        // Same queries the agent's status uses: a failure here is damage
        // quick_check did not see.
        let status = match (&conn, report.healthy) {
            (Some(conn), true) => read_status(conn, path, None).err(),
            _ => None,
        };
        if let Some(e) = status {
            report.healthy = false;
            report.integrity = format!("reading the queue failed: {e}");
        }
        report.healthy &= media_ok;
        return Ok(report);
    }
    // Damaged: find out what is still readable, read-only.
    drop(conn);
    // Without the key file the rows still count as unreadable here; the
    // check says so rather than failing.
    match salvage::scan(path, keys.as_ref()) {
        Ok(scan) => {
            if let Some(m) = scan.meta {
                report.epoch = report.epoch.or(Some(m.epoch as u64));
                report.next_seq = report.next_seq.or(Some(m.next_seq as u64));
                report.acked_up_to = report.acked_up_to.or(Some(m.acked_up_to as u64));
            }
            report.readable = Some(Readable {
                readable: scan.rows.len() as u64,
                unreadable: scan.lost.len() as u64,
                unreadable_ranges: salvage::ranges(&scan.lost),
                range_known: scan.range_known,
            });
        }
        Err(_) => {
            report.readable = Some(Readable::default());
        }
    }
    Ok(report)
}

fn quick_check(conn: &Connection) -> rusqlite::Result<String> {
    let mut stmt = conn.prepare("PRAGMA quick_check")?;
    let rows: Vec<String> = stmt
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    Ok(rows.join("; "))
}

/// Best effort: counters, held count and salvages, each on its own so one
/// unreadable table does not hide the others.
fn read_counters(conn: &Connection, report: &mut CheckReport) {
    let meta = |k: &str| {
        conn.query_row("SELECT value FROM meta WHERE key = ?1", [k], |r| {
            r.get::<_, i64>(0)
        })
        .ok()
        .map(|v| v as u64)
    };
    report.epoch = meta("epoch");
    report.next_seq = crate::outbox::writer::next_seq_of(conn)
        .ok()
        .map(|v| v as u64)
        .or_else(|| meta("next_seq"));
    report.acked_up_to = meta("acked_up_to");
    report.held = conn
        .query_row("SELECT count(*) FROM outbox", [], |r| r.get::<_, i64>(0))
        .ok()
        .map(|n| n as u64);
    report.salvages = conn
        .query_row("SELECT count(*) FROM salvage", [], |r| r.get::<_, i64>(0))
        .ok()
        .map_or(0, |n| n as u64);
    report.last_salvage = conn
        .query_row(
            "SELECT report FROM salvage ORDER BY id DESC LIMIT 1",
            [],
            |r| r.get::<_, String>(0),
        )
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok());
}

fn ranges_text(ranges: &[(u64, u64)]) -> String {
    const SHOWN: usize = 20;
    let mut parts: Vec<String> = ranges
        .iter()
        .take(SHOWN)
        .map(|(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}-{b}")
            }
        })
        .collect();
    if ranges.len() > SHOWN {
        parts.push(format!("… ({} ranges in all)", ranges.len()));
    }
    parts.join(", ")
}

fn opt(v: Option<u64>) -> String {
    v.map_or_else(|| "unreadable".into(), |v| v.to_string())
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "outbox        {}", self.path)?;
        if self.integrity == "ok" {
            writeln!(f, "integrity     ok (PRAGMA quick_check)")?;
        } else {
            writeln!(f, "integrity     DAMAGED: {}", self.integrity)?;
        }
        match self.schema_version {
            Some(v) => writeln!(
                f,
                "schema        version {v} (this agent: {})",
                self.schema_expected
            )?,
            None => writeln!(f, "schema        unreadable")?,
        }
        if let Some(p) = &self.schema_problem {
            writeln!(f, "              {p}")?;
        }
        writeln!(f, "epoch         {}", opt(self.epoch))?;
        writeln!(f, "next_seq      {}", opt(self.next_seq))?;
        writeln!(f, "acked_up_to   {}", opt(self.acked_up_to))?;
        writeln!(f, "held events   {}", opt(self.held))?;
        match &self.last_salvage {
            None => writeln!(f, "last salvage  none")?,
            Some(s) => {
                writeln!(
                    f,
                    "last salvage  at {} ({} salvage(s) recorded): {} recovered, {} LOST{}",
                    utc(s.at_ms),
                    self.salvages,
                    s.recovered,
                    s.lost,
                    if s.lost_ranges.is_empty() {
                        String::new()
                    } else {
                        format!(" (seq {})", ranges_text(&s.lost_ranges))
                    }
                )?;
                writeln!(f, "              damaged file moved to {}", s.damaged_file)?;
                writeln!(f, "              problem: {}", s.problem)?;
                writeln!(
                    f,
                    "              {}",
                    if s.epoch_kept {
                        "sequence epoch kept"
                    } else {
                        "counters unreadable: a new sequence epoch was started"
                    }
                )?;
            }
        }
        if let Some(r) = &self.readable {
            if r.range_known {
                writeln!(f, "readable      {} held events", r.readable)?;
                if r.unreadable > 0 {
                    writeln!(
                        f,
                        "unreadable    {} held events: seq {}",
                        r.unreadable,
                        ranges_text(&r.unreadable_ranges)
                    )?;
                } else {
                    writeln!(f, "unreadable    none of the held events")?;
                }
            } else {
                writeln!(
                    f,
                    "readable      {} events; the held sequence range itself is unreadable",
                    r.readable
                )?;
            }
            writeln!(
                f,
                "next step     start the agent: it moves this file aside, copies every readable \
                 event into a fresh outbox and reports the unreadable ones to the collector as lost"
            )?;
        }
        let m = &self.media;
        writeln!(
            f,
            "media         {} whole ({} queued, {} bytes), {} damaged, {} without a record",
            m.ok,
            m.queued,
            m.queued_bytes,
            m.damaged.len(),
            m.without_record.len()
        )?;
        for (hex, problem) in &m.damaged {
            writeln!(f, "              DAMAGED {hex}: {problem}")?;
        }
        if !m.damaged.is_empty() {
            writeln!(
                f,
                "next step     start the agent: it moves damaged media to media/damaged/ and sends the rest"
            )?;
        }
        if self.healthy {
            writeln!(f, "result        healthy")
        } else if self.readable.is_some() {
            writeln!(f, "result        DAMAGED")
        } else {
            writeln!(f, "result        NOT HEALTHY")
        }
    }
}

/// Held events of one class.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClassStats {
    /// `must_deliver`, `normal` or `telemetry`.
    pub class: String,
    /// Events held.
    pub queued: u64,
    /// Payload bytes held.
    pub bytes: u64,
}

/// The result of `doctor stats`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// Sequence epoch.
    pub epoch: u64,
    /// Next sequence to be assigned.
    pub next_seq: u64,
    /// The collector's ack floor.
    pub acked_up_to: u64,
    /// Held events.
    pub queued: u64,
    /// Held payload bytes.
    pub queued_bytes: u64,
    /// Per class.
    pub classes: Vec<ClassStats>,
    /// Capture time of the oldest held event (Unix ms).
    pub oldest_queued_ms: Option<i64>,
    /// Its age in seconds, now.
    pub oldest_queued_age_secs: Option<i64>,
    /// Receipts by state (`queued`, `stored`, `booked`, `rejected`, `shed`).
    pub receipts: BTreeMap<String, u64>,
    /// Drops by class and reason.
    pub drops: Vec<DropCount>,
    /// Shed sequences not yet acknowledged by the collector.
    pub shed: u64,
    /// The same as inclusive ranges.
    pub shed_ranges: Vec<(u64, u64)>,
    /// The last salvage.
    pub last_salvage: Option<SalvageReport>,
}

/// Queue statistics.
pub fn stats(path: &Path) -> Result<Stats, DoctorError> {
    let conn = open_read_only(path)?;
    require_schema(&conn, path)?;
    let status = read_status(&conn, path, None).map_err(outbox_error)?;
    let q = |e| query_error(path, e);
    let mut receipts = BTreeMap::new();
    {
        let mut stmt = conn
            // A queued event's receipt is its outbox row (schema 3).
            .prepare(
                "SELECT state, count(*) FROM receipts GROUP BY state
                 UNION ALL SELECT 'queued', count(*) FROM outbox
                   WHERE NOT EXISTS (SELECT 1 FROM receipts r WHERE r.seq = outbox.seq)
                   HAVING count(*) > 0",
            )
            .map_err(q)?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
            .map_err(q)?;
        for row in rows {
            let (state, n) = row.map_err(q)?;
            receipts.insert(state, n as u64);
        }
    }
    let shed: Vec<u64> = {
        let mut stmt = conn
            .prepare("SELECT seq FROM shed ORDER BY seq")
            .map_err(q)?;
        let rows = stmt
            .query_map([], |r| r.get::<_, i64>(0))
            .map_err(q)?
            .map(|r| r.map(|s| s as u64));
        rows.collect::<Result<_, _>>().map_err(q)?
    };
    let now = crate::outbox::now_ms();
    Ok(Stats {
        epoch: status.epoch,
        next_seq: status.next_seq,
        acked_up_to: status.acked_up_to,
        queued: status.queued,
        queued_bytes: status.queued_bytes,
        classes: status
            .classes
            .iter()
            .enumerate()
            .map(|(i, c)| ClassStats {
                class: class_name(i as i64).into(),
                queued: c.queued,
                bytes: c.bytes,
            })
            .collect(),
        oldest_queued_ms: status.oldest_queued_ms,
        oldest_queued_age_secs: status.oldest_queued_ms.map(|t| (now - t).max(0) / 1000),
        receipts,
        drops: status.drops,
        shed: shed.len() as u64,
        shed_ranges: salvage::ranges(&shed),
        last_salvage: status.salvage,
    })
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "epoch {}  next_seq {}  acked_up_to {}",
            self.epoch, self.next_seq, self.acked_up_to
        )?;
        writeln!(
            f,
            "held          {} events, {} bytes",
            self.queued, self.queued_bytes
        )?;
        for c in &self.classes {
            writeln!(
                f,
                "  {:<12}  {} events, {} bytes",
                c.class, c.queued, c.bytes
            )?;
        }
        match (self.oldest_queued_ms, self.oldest_queued_age_secs) {
            (Some(t), Some(age)) => {
                writeln!(f, "oldest held   captured at {} ({age} s ago)", utc(t))?
            }
            _ => writeln!(f, "oldest held   none")?,
        }
        let receipts: Vec<String> = self
            .receipts
            .iter()
            .map(|(s, n)| format!("{s} {n}"))
            .collect();
        writeln!(
            f,
            "receipts      {}",
            if receipts.is_empty() {
                "none".into()
            } else {
                receipts.join(", ")
            }
        )?;
        if self.drops.is_empty() {
            writeln!(f, "drops         none")?;
        } else {
            writeln!(f, "drops")?;
            for d in &self.drops {
                writeln!(f, "  {:<12}  {:<12}  {}", d.class, d.reason, d.count)?;
            }
        }
        writeln!(
            f,
            "shed          {} sequences not yet acknowledged, {} ranges{}",
            self.shed,
            self.shed_ranges.len(),
            if self.shed_ranges.is_empty() {
                String::new()
            } else {
                format!(": {}", ranges_text(&self.shed_ranges))
            }
        )?;
        match &self.last_salvage {
            None => writeln!(f, "last salvage  none"),
            Some(s) => writeln!(
                f,
                "last salvage  at {}: {} recovered, {} lost, damaged file {}",
                utc(s.at_ms),
                s.recovered,
                s.lost,
                s.damaged_file
            ),
        }
    }
}

/// Receipts in `state` (all when `None`), newest first, at most `limit`.
pub fn list(path: &Path, state: Option<&str>, limit: usize) -> Result<Vec<Receipt>, DoctorError> {
    let conn = open_read_only(path)?;
    require_schema(&conn, path)?;
    read_receipts(&conn, path, state, limit, None).map_err(outbox_error)
}

/// Writes receipts as a table.
pub fn write_receipts(out: &mut impl Write, receipts: &[Receipt]) -> std::io::Result<()> {
    writeln!(
        out,
        "{:>8}  {:<36}  {:<10}  {:<8}  {:<24}  document / reason",
        "seq", "event id", "kind", "state", "updated (UTC)"
    )?;
    for r in receipts {
        let note = r.document.as_deref().or(r.reason.as_deref()).unwrap_or("");
        writeln!(
            out,
            "{:>8}  {:<36}  {:<10}  {:<8}  {:<24}  {}",
            r.seq,
            r.event_id,
            r.kind,
            r.state,
            utc(r.updated_ms),
            note
        )?;
    }
    Ok(())
}

/// What an export wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Exported {
    /// Lines with an event.
    pub events: u64,
    /// Lines with an `error` (undecodable rows).
    pub errors: u64,
}

#[derive(Serialize)]
struct ErrorLine<'a> {
    seq: i64,
    error: &'a str,
}

/// Writes every held event with `from <= seq <= to` as one JSON line (the
/// envelope as JSON). A row whose payload does not decode becomes a line
/// `{"seq": N, "error": "..."}`; the export carries on.
pub fn export(
    path: &Path,
    from: Option<u64>,
    to: Option<u64>,
    out: &mut impl Write,
) -> Result<Exported, DoctorError> {
    let conn = open_read_only(path)?;
    require_schema(&conn, path)?;
    // Sealed payloads need the device's key file beside the database; a row
    // that cannot be opened becomes an error line naming the key.
    let keys = Keys::for_database(path).map_err(outbox_error)?;
    let q = |e| query_error(path, e);
    let lo = from.map_or(i64::MIN, |v| i64::try_from(v).unwrap_or(i64::MAX));
    let hi = to.map_or(i64::MAX, |v| i64::try_from(v).unwrap_or(i64::MAX));
    let mut stmt = conn
        .prepare(
            "SELECT seq, payload, event_id FROM outbox WHERE seq BETWEEN ?1 AND ?2 ORDER BY seq",
        )
        .map_err(q)?;
    let mut rows = stmt.query(params![lo, hi]).map_err(q)?;
    let mut done = Exported::default();
    while let Some(row) = rows.next().map_err(q)? {
        let seq: i64 = row.get(0).map_err(q)?;
        let stored = row
            .get::<_, Vec<u8>>(1)
            .and_then(|p| Ok((p, row.get::<_, Vec<u8>>(2)?)));
        let opened = match &stored {
            Err(e) => Err(format!("payload unreadable: {e}")),
            Ok((payload, event_id)) => keys::open_with(keys.as_ref(), event_id, payload),
        };
        let line = match opened {
            Err(e) => Err(e),
            Ok(bytes) => match codec::decode::<Envelope>(&bytes) {
                Err(e) => Err(format!("payload does not decode: {e}")),
                Ok(envelope) => serde_json::to_string(&envelope)
                    .map_err(|e| format!("envelope does not serialize as JSON: {e}")),
            },
        };
        match line {
            Ok(text) => {
                writeln!(out, "{text}")?;
                done.events += 1;
            }
            Err(error) => {
                let text = serde_json::to_string(&ErrorLine { seq, error: &error })
                    .unwrap_or_else(|_| format!("{{\"seq\":{seq},\"error\":\"unprintable\"}}"));
                writeln!(out, "{text}")?;
                done.errors += 1;
            }
        }
    }
    out.flush()?;
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::utc;

    #[test]
    fn utc_text() {
        assert_eq!(utc(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(utc(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(utc(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }
}
