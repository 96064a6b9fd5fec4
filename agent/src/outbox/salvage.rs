//! Damaged outbox files: detect at start, move aside, copy out every readable
//! event into a fresh outbox, and report exactly what could not be read.
//!
//! Reading a damaged SQLite file: a query that touches a broken page fails
//! with `SQLITE_CORRUPT`. Rows are read by sequence ranges; a failing range is
//! split in halves down to single sequences, so one broken page costs only
//! the rows stored on it. A row whose payload no longer decodes as an
//! [`Envelope`] counts as lost too.
//!
//! What is lost is reported (count and sequence ranges) in the log, in the
//! `salvage` table (read by the heartbeat and `doctor`), and as *shed*
//! sequences with reason `damaged`, so the collector learns that those
//! sequences will never arrive instead of waiting for them forever.

use std::path::{Path, PathBuf};

use dockline_protocol::{Envelope, codec};
use rusqlite::{Connection, ErrorCode, OpenFlags, params};
use serde::{Deserialize, Serialize};

use super::keys::{self, Keys};
use super::{OutboxError, now_ms, schema};

/// What a salvage did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SalvageReport {
    /// When (Unix ms).
    pub at_ms: i64,
    /// Where the damaged file was moved.
    pub damaged_file: String,
    /// What the integrity check said.
    pub problem: String,
    /// Events copied into the fresh outbox.
    pub recovered: u64,
    /// Held events that could not be read.
    pub lost: u64,
    /// Their sequences, as inclusive ranges.
    pub lost_ranges: Vec<(u64, u64)>,
    /// Whether the sequence epoch and counters could be kept (if not, the
    /// recovered events were given new sequences in a new epoch).
    pub epoch_kept: bool,
}

/// Counters read from `meta`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    /// Sequence epoch.
    pub epoch: i64,
    /// Next sequence.
    pub next_seq: i64,
    /// Collector's ack floor.
    pub acked_up_to: i64,
    /// Session counter.
    pub session: i64,
}

/// One readable outbox row.
#[derive(Debug, Clone)]
pub struct Row {
    /// Sequence.
    pub seq: i64,
    /// The decoded envelope.
    pub envelope: Envelope,
    /// Its payload as stored (sealed, or plain CBOR from before encryption).
    pub payload: Vec<u8>,
    /// Priority code.
    pub priority: i64,
}

/// Everything readable in a (possibly damaged) outbox file.
#[derive(Debug, Clone, Default)]
pub struct Scan {
    /// Counters, when readable.
    pub meta: Option<Meta>,
    /// Readable held events.
    pub rows: Vec<Row>,
    /// Sequences of held events that could not be read.
    pub lost: Vec<u64>,
    /// Whether the held range itself could be determined.
    pub range_known: bool,
}

fn is_damage(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if matches!(f.code, ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase))
}

/// `None` when the file is healthy (or absent); otherwise what is wrong.
/// Errors that are not damage (a locked file, no permission) are returned.
pub fn integrity_problem(path: &Path) -> Result<Option<String>, OutboxError> {
    if !path.exists() {
        return Ok(None);
    }
    let check = || -> rusqlite::Result<String> {
        let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE)?;
        let mut stmt = conn.prepare("PRAGMA quick_check")?;
        let rows: Vec<String> = stmt
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        Ok(rows.join("; "))
    };
    match check() {
        Ok(result) if result == "ok" => Ok(None),
        Ok(result) => Ok(Some(result)),
        Err(e) if is_damage(&e) => Ok(Some(e.to_string())),
        Err(source) => Err(OutboxError::Sqlite {
            path: path.into(),
            source,
        }),
    }
}

/// Compresses sorted sequences into inclusive ranges.
pub fn ranges(seqs: &[u64]) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for &s in seqs {
        match out.last_mut() {
            Some((_, hi)) if *hi + 1 == s => *hi = s,
            _ => out.push((s, s)),
        }
    }
    out
}

fn read_meta(conn: &Connection) -> Option<Meta> {
    let get = |k: &str| {
        conn.query_row("SELECT value FROM meta WHERE key = ?1", [k], |r| {
            r.get::<_, i64>(0)
        })
        .ok()
    };
    Some(Meta {
        epoch: get("epoch")?,
        // Appends since the last ack are in the tables, not in `meta`; if
        // those cannot be read, `meta` is what is known.
        next_seq: super::writer::next_seq_of(conn)
            .ok()
            .or_else(|| get("next_seq"))?,
        acked_up_to: get("acked_up_to")?,
        session: get("session")?,
    })
}

type RawRow = (i64, i64, Vec<u8>, Vec<u8>);

fn read_range(conn: &Connection, lo: i64, hi: i64) -> rusqlite::Result<Vec<RawRow>> {
    let mut stmt = conn.prepare_cached(
        "SELECT seq, priority, payload, event_id FROM outbox WHERE seq BETWEEN ?1 AND ?2 ORDER BY seq",
    )?;
    let rows = stmt.query_map(params![lo, hi], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
    })?;
    rows.collect()
}

/// Reads `lo..=hi`, splitting failing ranges down to single rows.
fn read_bisect(
    conn: &Connection,
    lo: i64,
    hi: i64,
    out: &mut Vec<RawRow>,
    unreadable: &mut Vec<u64>,
) {
    match read_range(conn, lo, hi) {
        Ok(rows) => out.extend(rows),
        Err(_) if lo >= hi => unreadable.push(lo as u64),
        Err(_) => {
            let mid = lo + (hi - lo) / 2;
            read_bisect(conn, lo, mid, out, unreadable);
            read_bisect(conn, mid + 1, hi, out, unreadable);
        }
    }
}

/// Reads everything readable from an outbox file, without changing it;
/// sealed payloads are opened with `keys` (a payload that does not open is
/// unreadable, like one that does not decode).
pub fn scan(path: &Path, keys: Option<&Keys>) -> Result<Scan, OutboxError> {
    let conn =
        Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(|source| {
            OutboxError::Sqlite {
                path: path.into(),
                source,
            }
        })?;
    let meta = read_meta(&conn);
    let shed: Vec<i64> = conn
        .prepare("SELECT seq FROM shed")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .unwrap_or_default();
    let range = match meta {
        Some(m) => Some((m.acked_up_to + 1, m.next_seq - 1)),
        None => conn
            .query_row("SELECT min(seq), max(seq) FROM outbox", [], |r| {
                Ok((r.get::<_, Option<i64>>(0)?, r.get::<_, Option<i64>>(1)?))
            })
            .ok()
            .map(|(lo, hi)| (lo.unwrap_or(1), hi.unwrap_or(0)))
            .or_else(|| {
                conn.query_row("SELECT max(seq) FROM receipts", [], |r| {
                    r.get::<_, Option<i64>>(0)
                })
                .ok()
                .map(|hi| (1, hi.unwrap_or(0)))
            }),
    };
    let Some((lo, hi)) = range else {
        return Ok(Scan {
            meta,
            rows: Vec::new(),
            lost: Vec::new(),
            range_known: false,
        });
    };
    let mut raw = Vec::new();
    let mut unreadable = Vec::new();
    if lo <= hi {
        read_bisect(&conn, lo, hi, &mut raw, &mut unreadable);
    }
    let mut rows = Vec::with_capacity(raw.len());
    let mut found = std::collections::HashSet::new();
    for (seq, priority, payload, event_id) in raw {
        let Ok(plain) = keys::open_with(keys, &event_id, &payload) else {
            continue;
        };
        match codec::decode::<Envelope>(&plain) {
            Ok(envelope) if envelope.seq == seq as u64 => {
                found.insert(seq);
                rows.push(Row {
                    seq,
                    envelope,
                    payload,
                    priority,
                });
            }
            _ => {}
        }
    }
    // Lost: every expected sequence (dense between the ack floor and the next
    // sequence, minus the ones shed on purpose) that did not come back intact.
    let shed: std::collections::HashSet<i64> = shed.into_iter().collect();
    let mut lost: Vec<u64> = (lo..=hi)
        .filter(|s| !found.contains(s) && !shed.contains(s))
        .map(|s| s as u64)
        .collect();
    lost.sort_unstable();
    Ok(Scan {
        meta,
        rows,
        lost,
        range_known: true,
    })
}

fn aside_name(path: &Path, at: i64) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".damaged-{at}"));
    PathBuf::from(name)
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Checks the outbox at `path`; if damaged, salvages it into a fresh file at
/// the same path and returns the report.
pub fn check_and_salvage(
    path: &Path,
    keys: Option<&Keys>,
) -> Result<Option<SalvageReport>, OutboxError> {
    let Some(problem) = integrity_problem(path)? else {
        return Ok(None);
    };
    let at = now_ms();
    let aside = aside_name(path, at);
    let io = |source| OutboxError::DataDir {
        path: aside.clone(),
        source,
    };
    std::fs::rename(path, &aside).map_err(io)?;
    for suffix in ["-wal", "-shm"] {
        let from = with_suffix(path, suffix);
        if from.exists() {
            std::fs::rename(&from, with_suffix(&aside, suffix)).map_err(io)?;
        }
    }
    tracing::error!(file = %path.display(), moved_to = %aside.display(), %problem, "outbox database is damaged; salvaging what can be read");
    // A file too broken to even scan still gives a fresh outbox: the agent must start.
    let scan = scan(&aside, keys).unwrap_or_default();
    let report = rebuild(path, &scan, &aside, problem, at, keys)?;
    if report.lost > 0 {
        tracing::error!(lost = report.lost, ranges = ?report.lost_ranges, recovered = report.recovered, "events LOST to the damaged outbox file; they are reported to the collector as shed (damaged)");
    } else {
        tracing::warn!(
            recovered = report.recovered,
            "damaged outbox salvaged without losing a held event"
        );
    }
    Ok(Some(report))
}

fn rebuild(
    path: &Path,
    scan: &Scan,
    aside: &Path,
    problem: String,
    at: i64,
    keys: Option<&Keys>,
) -> Result<SalvageReport, OutboxError> {
    let err = |source| OutboxError::Sqlite {
        path: path.into(),
        source,
    };
    keys::private_file(path)?;
    let mut conn = Connection::open(path).map_err(err)?;
    conn.pragma_update(None, "secure_delete", "ON")
        .map_err(err)?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(err)?;
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(err)?;
    // Without readable counters the old epoch's sequences cannot be continued
    // safely: start a new epoch later than any event we salvaged.
    let newest = scan
        .rows
        .iter()
        .map(|r| r.envelope.epoch as i64)
        .max()
        .unwrap_or(0);
    let epoch = match scan.meta {
        Some(m) => m.epoch,
        None => at.max(newest + 1),
    };
    schema::migrate(&mut conn, path, Some(epoch))?;
    let tx = conn.transaction().map_err(err)?;
    let mut recovered = 0u64;
    {
        let mut put = tx
            .prepare("INSERT INTO outbox (seq, event_id, priority, captured_ms, payload, kind) VALUES (?1, ?2, ?3, ?4, ?5, ?6)")
            .map_err(err)?;
        let mut next = 1i64;
        for row in &scan.rows {
            let (seq, payload) = match scan.meta {
                Some(_) => (row.seq, row.payload.clone()),
                None => {
                    let mut e = row.envelope.clone();
                    e.epoch = epoch as u64;
                    e.seq = next as u64;
                    match codec::encode(&e) {
                        Ok(b) => (next, b),
                        Err(_) => continue,
                    }
                }
            };
            next = seq + 1;
            let e = &row.envelope;
            // Kept payloads stay sealed (or are sealed now); re-encoded ones
            // are sealed for the first time.
            let payload = match keys {
                Some(k) if !keys::is_sealed(&payload) => k.seal(&e.id.0, &payload)?,
                _ => payload,
            };
            put.execute(params![
                seq,
                &e.id.0[..],
                row.priority,
                e.captured_ms,
                payload,
                super::kind_of(&e.payload)
            ])
            .map_err(err)?;
            recovered += 1;
        }
        let (next_seq, acked, session) = match scan.meta {
            Some(m) => (m.next_seq, m.acked_up_to, m.session),
            None => (next, 0, 0),
        };
        tx.execute(
            "UPDATE meta SET value = ?1 WHERE key = 'next_seq'",
            [next_seq],
        )
        .map_err(err)?;
        tx.execute(
            "UPDATE meta SET value = ?1 WHERE key = 'acked_up_to'",
            [acked],
        )
        .map_err(err)?;
        tx.execute(
            "UPDATE meta SET value = ?1 WHERE key = 'session'",
            [session],
        )
        .map_err(err)?;
        if scan.meta.is_some() {
            let mut shed = tx
                .prepare("INSERT OR IGNORE INTO shed (seq, priority, reason, at_ms) VALUES (?1, -1, 'damaged', ?2)")
                .map_err(err)?;
            for s in &scan.lost {
                shed.execute(params![*s as i64, at]).map_err(err)?;
            }
        }
        if !scan.lost.is_empty() {
            tx.execute(
                "INSERT INTO drops (priority, reason, count) VALUES (-1, 'damaged', ?1)
                 ON CONFLICT (priority, reason) DO UPDATE SET count = count + excluded.count",
                [scan.lost.len() as i64],
            )
            .map_err(err)?;
        }
    }
    let report = SalvageReport {
        at_ms: at,
        damaged_file: aside.display().to_string(),
        problem: if scan.range_known {
            problem
        } else {
            format!("{problem}; the held sequence range could not be read")
        },
        recovered,
        lost: scan.lost.len() as u64,
        lost_ranges: ranges(&scan.lost),
        epoch_kept: scan.meta.is_some(),
    };
    let text = serde_json::to_string(&report).unwrap_or_default();
    tx.execute(
        "INSERT INTO salvage (at_ms, report) VALUES (?1, ?2)",
        params![at, text],
    )
    .map_err(err)?;
    tx.commit().map_err(err)?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_compress_runs() {
        assert_eq!(ranges(&[1, 2, 3, 7, 9, 10]), vec![(1, 3), (7, 7), (9, 10)]);
        assert!(ranges(&[]).is_empty());
    }
}
