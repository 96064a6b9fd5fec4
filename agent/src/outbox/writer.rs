//! The writer thread: owns the SQLite connection, groups appends into
//! transactions, applies acks and sheds by priority. See the invariants in
//! the module doc of [`super`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use dockline_protocol::{
    DeviceId, Envelope, EventId, Outcome, PROTOCOL_VERSION, Priority, Verdict, codec,
};
use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::Notify;

use super::budget::{self, Space, class_index};
use super::keys::{self, FolderLock, Keys};
use super::salvage::SalvageReport;
use super::{
    Appended, Chunk, ClassHealth, ClientKey, Command, DropCount, OutboxConfig, OutboxError,
    Prepared, QueueStatus, Receipt, Reply, class_name, now_ms, retention, schema,
};

/// Most appends in one transaction.
const MAX_GROUP: usize = 1024;
/// Longest a group waits for the producers of the previous group to append
/// again (see [`Writer::serve`]); about the cost of one fsync, paid at most
/// once when the load falls.
const GATHER: Duration = Duration::from_micros(250);
/// Most shed ranges reported in one batch.
const MAX_SHED_RANGES: usize = 256;

pub(super) struct Writer {
    conn: Connection,
    path: PathBuf,
    data_dir: PathBuf,
    epoch: u64,
    /// The envelope bytes before `seq`, the same for every event of this
    /// device and epoch ([`codec::envelope_prefix`]).
    prefix: Arc<[u8]>,
    config: OutboxConfig,
    /// Payload bytes and counts held per class, kept in step with the table
    /// so admission decisions need no scan.
    held_bytes: [u64; 3],
    held_count: [u64; 3],
    synchronous_full: bool,
    disk_free: Option<u64>,
    disk_checked: Option<Instant>,
    last_fsync_us: Option<u64>,
    /// The next sequence to assign; see [`next_seq_of`].
    next_seq: i64,
    /// The payload keys: every payload is sealed on insert, opened on read.
    keys: Keys,
    /// Held while the writer lives: one agent per outbox.
    _lock: FolderLock,
}

/// Writes zeros after the end of the WAL up to one auto-checkpoint's worth
/// of frames (`wal_autocheckpoint` pages, 1000 by default, each with its
/// 24-byte frame header), and fsyncs them once.
///
/// Why: every fsynced commit appends its frames (three pages for one
/// event: the row, the event-id index and the priority index) to the WAL.
/// Appending to a fresh WAL allocates blocks and moves the file's end, so
/// each commit's `fdatasync` also commits file-system metadata: strace
/// shows one `fdatasync` of the WAL per commit, no second sync, yet the
/// commit ran at 0.41–0.50 of the raw fsync rate, and 12 KiB appends with
/// `fdatasync` ran at about 0.6 of 100-byte ones on this disk, while 12 KiB
/// overwrites of written blocks ran as fast as the raw figure. SQLite
/// reuses the WAL from its start after each checkpoint without shrinking
/// it, so once the file has this size, commits only overwrite.
///
/// Why it is safe: SQLite reads a WAL frame by frame and stops at the first
/// whose salt and checksum do not match its header; zeros never match, so
/// they are not frames, whether the WAL is empty, holds frames a crash left
/// (they stay in front, untouched), or is recovered after a crash during
/// this very write. Only bytes past the current end are written, by the
/// thread that owns the only writing connection, between two of its
/// transactions, so SQLite is not writing at the same time; durability still rests on SQLite's own sync of each
/// commit (`synchronous = FULL`).
fn preallocate_wal(conn: &Connection, path: &Path) -> Result<(), String> {
    use std::os::unix::fs::FileExt;
    let pragma = |name: &str| {
        conn.pragma_query_value(None, name, |r| r.get::<_, i64>(0))
            .map_err(|e| format!("PRAGMA {name}: {e}"))
    };
    let (page, pages) = (pragma("page_size")?, pragma("wal_autocheckpoint")?);
    let target = (pages.max(0) as u64) * (page.max(0) as u64 + 24) + 32;
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    // SQLite made the WAL when the connection switched to it; a missing one
    // (a file system that refused it) is left for SQLite to make.
    let file = match std::fs::OpenOptions::new().write(true).open(&wal) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("open {}: {e}", PathBuf::from(wal).display())),
    };
    let io = |e: std::io::Error| format!("{}: {e}", PathBuf::from(&wal).display());
    let mut at = file.metadata().map_err(io)?.len();
    if at >= target {
        return Ok(());
    }
    let zeros = vec![0u8; 256 * 1024];
    while at < target {
        let n = (target - at).min(zeros.len() as u64) as usize;
        file.write_all_at(&zeros[..n], at).map_err(io)?;
        at += n as u64;
    }
    file.sync_data().map_err(io)
}

fn priority_code(p: Priority) -> i64 {
    class_index(p) as i64
}

fn sql(path: &Path) -> impl Fn(rusqlite::Error) -> OutboxError + '_ {
    move |source| OutboxError::Sqlite {
        path: path.into(),
        source,
    }
}

impl Writer {
    pub(super) fn open(
        path: &Path,
        data_dir: &Path,
        device: DeviceId,
        config: OutboxConfig,
        keys: Keys,
        lock: FolderLock,
    ) -> Result<Self, OutboxError> {
        let err = sql(path);
        let mut conn = Connection::open(path).map_err(&err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(&err)?;
        // Deleted payloads (acked, shed, pruned) are overwritten, not left
        // in free pages and the WAL.
        conn.pragma_update(None, "secure_delete", "ON")
            .map_err(&err)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(&err)?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(&err)?;
        schema::migrate(&mut conn, path, None)?;
        // After the migration: a new file's WAL exists from its first write.
        if let Err(e) = preallocate_wal(&conn, path) {
            // Only speed is lost: the WAL grows as it would have.
            tracing::warn!(error = %e, path = %path.display(), "could not write the outbox WAL ahead; fsynced commits will be slower");
        }
        let epoch: i64 = conn
            .query_row("SELECT value FROM meta WHERE key = 'epoch'", [], |r| {
                r.get(0)
            })
            .map_err(&err)?;
        let next_seq = next_seq_of(&conn).map_err(&err)?;
        let mut held_bytes = [0u64; 3];
        let mut held_count = [0u64; 3];
        {
            let mut stmt = conn
                .prepare("SELECT priority, count(*), coalesce(sum(length(payload)), 0) FROM outbox GROUP BY priority")
                .map_err(&err)?;
            let rows = stmt
                .query_map([], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, i64>(2)?,
                    ))
                })
                .map_err(&err)?;
            for row in rows {
                let (p, n, b) = row.map_err(&err)?;
                if let Some(i) = usize::try_from(p).ok().filter(|i| *i < 3) {
                    held_count[i] = n as u64;
                    held_bytes[i] = b as u64;
                }
            }
        }
        Ok(Self {
            conn,
            path: path.into(),
            data_dir: data_dir.into(),
            prefix: codec::envelope_prefix(PROTOCOL_VERSION, &device, epoch as u64)
                .map_err(|e| OutboxError::Invalid(e.to_string()))?
                .into(),
            epoch: epoch as u64,
            config,
            held_bytes,
            held_count,
            synchronous_full: true,
            disk_free: None,
            disk_checked: None,
            last_fsync_us: None,
            next_seq,
            keys,
            _lock: lock,
        })
    }

    pub(super) fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The answer for a client key stored earlier: the first event's
    /// (`replayed`) when the body matches, [`OutboxError::KeyReused`] when
    /// it does not; `None` for a new key.
    fn stored_key(
        &self,
        once: &ClientKey,
    ) -> rusqlite::Result<Option<Result<Appended, OutboxError>>> {
        let row = self
            .conn
            .prepare_cached("SELECT body_sha256, seq, event_id FROM idempotency WHERE key = ?1")?
            .query_row([&once.key], |r| {
                Ok((
                    r.get::<_, Vec<u8>>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, Vec<u8>>(2)?,
                ))
            })
            .optional()?;
        Ok(row.map(|(hash, seq, id)| {
            if hash[..] != once.body_sha256[..] {
                return Err(OutboxError::KeyReused {
                    key: once.key.clone(),
                });
            }
            let mut event_id = [0u8; 16];
            if id.len() == 16 {
                event_id.copy_from_slice(&id);
            }
            Ok(Appended {
                seq: seq as u64,
                epoch: self.epoch,
                event_id: EventId(event_id),
                replayed: true,
            })
        }))
    }

    /// Serves commands until every handle is dropped.
    ///
    /// Group commit: everything already waiting goes into one transaction.
    /// A group holding any must-deliver or normal event commits with fsync;
    /// a telemetry-only group commits at once without it, and the WAL is
    /// fsynced at most `telemetry_commit_ms` later (sooner if a durable group
    /// commits first), bounding what a power cut can take.
    pub(super) fn serve(mut self, rx: mpsc::Receiver<Command>, appended: Arc<Notify>) {
        let bound = Duration::from_millis(self.config.telemetry_commit_ms);
        let mut pending: Vec<(Box<Prepared>, Reply<Appended>)> = Vec::new();
        let mut sync_due: Option<Instant> = None;
        let mut last_group = 1;
        loop {
            let first = match sync_due {
                Some(d) => match rx.recv_timeout(d.saturating_duration_since(Instant::now())) {
                    Ok(c) => Some(c),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => break,
                },
                None => match rx.recv() {
                    Ok(c) => Some(c),
                    Err(_) => break,
                },
            };
            // Take everything already waiting: one transaction for all appends.
            let mut next = first;
            while let Some(cmd) = next.take() {
                match cmd {
                    Command::Append(e, r) => pending.push((e, r)),
                    other => self.handle(other),
                }
                if pending.len() < MAX_GROUP {
                    next = rx.try_recv().ok();
                }
            }
            // The producers answered by the last commit are usually about to
            // append again, woken one by one: give them a short moment to
            // join this group rather than paying one fsync each. A lone
            // producer (last group of one) never waits.
            if !pending.is_empty() && pending.len() < last_group {
                let deadline = Instant::now() + GATHER;
                while pending.len() < last_group {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    match rx.recv_timeout(left) {
                        Ok(Command::Append(e, r)) => pending.push((e, r)),
                        Ok(other) => self.handle(other),
                        Err(_) => break,
                    }
                }
            }
            if !pending.is_empty() {
                last_group = pending.len();
                let durable = pending
                    .iter()
                    .any(|(e, _)| e.priority != Priority::Telemetry);
                self.commit_appends(std::mem::take(&mut pending), durable, &appended);
                if durable {
                    sync_due = None;
                } else {
                    sync_due.get_or_insert_with(|| Instant::now() + bound);
                }
            }
            if sync_due.is_some_and(|d| Instant::now() >= d) {
                self.sync_wal();
                sync_due = None;
            }
        }
        if sync_due.is_some() {
            self.sync_wal();
        }
    }

    /// Fsyncs the WAL so telemetry committed without fsync becomes durable.
    fn sync_wal(&mut self) {
        let mut wal = self.path.clone().into_os_string();
        wal.push("-wal");
        let started = Instant::now();
        match std::fs::File::open(&wal).and_then(|f| f.sync_data()) {
            Ok(()) => self.last_fsync_us = Some(started.elapsed().as_micros() as u64),
            Err(e) => {
                tracing::warn!(error = %e, wal = %PathBuf::from(wal).display(), "could not fsync the outbox WAL")
            }
        }
    }

    fn set_synchronous(&mut self, full: bool) -> rusqlite::Result<()> {
        if self.synchronous_full != full {
            self.conn
                .pragma_update(None, "synchronous", if full { "FULL" } else { "NORMAL" })?;
            self.synchronous_full = full;
        }
        Ok(())
    }

    fn commit_appends(
        &mut self,
        group: Vec<(Box<Prepared>, Reply<Appended>)>,
        durable: bool,
        appended: &Notify,
    ) {
        let (events, replies): (Vec<_>, Vec<_>) = group.into_iter().unzip();
        if let Err(e) = self.set_synchronous(durable) {
            tracing::warn!(error = %e, "could not switch synchronous mode; committing with the current one");
        }
        let started = Instant::now();
        match self.insert_all(&events) {
            Ok(results) => {
                if durable {
                    self.last_fsync_us = Some(started.elapsed().as_micros() as u64);
                }
                for (reply, result) in replies.into_iter().zip(results) {
                    let _ = reply.send(result);
                }
                appended.notify_one();
            }
            Err(e) => {
                let text = e.to_string();
                tracing::error!(error = %text, "outbox commit failed; producers get an error and must retry");
                for reply in replies {
                    let _ = reply.send(Err(OutboxError::Invalid(format!(
                        "outbox commit failed, event NOT stored: {text}"
                    ))));
                }
            }
        }
    }

    fn refresh_disk_free(&mut self) {
        if self
            .disk_checked
            .is_some_and(|t| t.elapsed() < Duration::from_secs(1))
        {
            return;
        }
        self.disk_checked = Some(Instant::now());
        self.disk_free = rustix::fs::statvfs(&self.data_dir)
            .ok()
            .map(|s| s.f_bavail.saturating_mul(s.f_frsize));
    }

    /// Inserts a group in one transaction, shedding and refusing by priority
    /// as the budget requires. An event that breaks a rule or does not fit
    /// gets its own error without failing the others.
    fn insert_all(
        &mut self,
        events: &[Box<Prepared>],
    ) -> Result<Vec<Result<Appended, OutboxError>>, OutboxError> {
        let t0 = Instant::now();
        self.refresh_disk_free();
        let path = self.path.clone();
        let err = sql(&path);
        let mut next_seq = self.next_seq;

        // Give every event the sequence it gets if every event before it
        // is admitted (the usual case); an event whose sequence moves because
        // one before it was refused is joined again below. The producers
        // validated, identified and encoded the rest.
        let mut out: Vec<Option<Result<Appended, OutboxError>>> = Vec::with_capacity(events.len());
        let mut candidates = Vec::with_capacity(events.len());
        let mut encoded: Vec<(u64, EventId, Vec<u8>)> = Vec::with_capacity(events.len());
        // A keyed event whose key is stored already gets that event's
        // answer; one whose key came earlier in this group gets the earlier
        // one's (resolved after the inserts). Neither is a candidate.
        let mut first_with_key: HashMap<&str, usize> = HashMap::new();
        let mut same_key_as: Vec<(usize, usize)> = Vec::new();
        for (i, e) in events.iter().enumerate() {
            out.push(None);
            if let Some(once) = &e.once {
                if let Some(&first) = first_with_key.get(once.key.as_str()) {
                    same_key_as.push((i, first));
                    continue;
                }
                if let Some(earlier) = self.stored_key(once).map_err(&err)? {
                    out[i] = Some(earlier);
                    continue;
                }
                first_with_key.insert(once.key.as_str(), i);
            }
            let seq = next_seq as u64 + encoded.len() as u64;
            let b = codec::join_envelope(&self.prefix, seq, &e.tail);
            candidates.push((i, e.priority, (b.len() + keys::OVERHEAD) as u64 + 16));
            encoded.push((seq, e.id, b));
        }
        let t_enc = Instant::now();
        let space = Space {
            held_bytes: self.held_bytes.iter().sum(),
            held_by_class: self.held_bytes,
            budget_bytes: self.config.budget_bytes,
            disk_free: self.disk_free,
            min_free_bytes: self.config.min_free_bytes,
        };
        let plan = budget::plan(
            &space,
            &candidates
                .iter()
                .map(|(_, p, s)| (*p, *s))
                .collect::<Vec<_>>(),
        );

        let now = now_ms();
        let (prefix, epoch) = (self.prefix.clone(), self.epoch);
        let tx = self.conn.transaction().map_err(&err)?;
        let mut shed_delta = [(0u64, 0u64); 3];
        shed_oldest(&tx, 2, plan.shed_telemetry, now, &mut shed_delta).map_err(&err)?;
        shed_oldest(&tx, 1, plan.shed_normal, now, &mut shed_delta).map_err(&err)?;
        let mut added = [(0u64, 0u64); 3];
        {
            let mut put = tx
                .prepare_cached(
                    "INSERT INTO outbox (seq, event_id, priority, captured_ms, payload, kind) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )
                .map_err(&err)?;
            let mut keep_key = tx
                .prepare_cached(
                    "INSERT INTO idempotency (key, body_sha256, seq, event_id, at_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .map_err(&err)?;
            for (((i, priority, size), admitted), (provisional, id, bytes)) in
                candidates.iter().zip(&plan.admitted).zip(encoded)
            {
                let e = &events[*i];
                if !admitted {
                    count_drop(&tx, priority_code(*priority), "refused_full", 1).map_err(&err)?;
                    out[*i] = Some(Err(OutboxError::Full {
                        class: class_name(priority_code(*priority)),
                        needed: *size,
                        held: space.held_bytes,
                        budget: space.budget_bytes,
                        disk: match space.disk_free {
                            Some(f) => format!(
                                ", {f} bytes free on disk, watermark {}",
                                space.min_free_bytes
                            ),
                            None => String::new(),
                        },
                    }));
                    continue;
                }
                let plain = if provisional == next_seq as u64 {
                    bytes
                } else {
                    codec::join_envelope(&prefix, next_seq as u64, &e.tail)
                };
                let bytes = self.keys.seal(&id.0, &plain)?;
                put.execute(params![
                    next_seq,
                    &id.0[..],
                    priority_code(*priority),
                    e.captured_ms,
                    &bytes,
                    e.kind
                ])
                .map_err(&err)?;
                if let Some(once) = &e.once {
                    keep_key
                        .execute(params![
                            once.key,
                            &once.body_sha256[..],
                            next_seq,
                            &id.0[..],
                            now
                        ])
                        .map_err(&err)?;
                }
                let c = class_index(*priority);
                added[c].0 += 1;
                added[c].1 += bytes.len() as u64;
                out[*i] = Some(Ok(Appended {
                    seq: next_seq as u64,
                    epoch,
                    event_id: id,
                    replayed: false,
                }));
                next_seq += 1;
            }
        }
        // `meta.next_seq` is not written here (one page less per commit):
        // the rows just inserted carry their sequences until an ack
        // records it.
        let t_ins = Instant::now();
        tx.commit().map_err(&err)?;
        self.next_seq = next_seq;
        tracing::trace!(
            events = events.len(),
            encode_us = (t_enc - t0).as_micros() as u64,
            insert_us = (t_ins - t_enc).as_micros() as u64,
            commit_us = t_ins.elapsed().as_micros() as u64,
            "group committed"
        );
        for c in 0..3 {
            self.held_count[c] = (self.held_count[c] + added[c].0).saturating_sub(shed_delta[c].0);
            self.held_bytes[c] = (self.held_bytes[c] + added[c].1).saturating_sub(shed_delta[c].1);
        }
        if plan.shed_telemetry + plan.shed_normal > 0 {
            tracing::warn!(
                telemetry_bytes = plan.shed_telemetry,
                normal_bytes = plan.shed_normal,
                budget = self.config.budget_bytes,
                "outbox budget reached: shed the oldest sheddable events"
            );
        }
        for (i, first) in same_key_as {
            let same_body = events[i].once.as_ref().map(|k| k.body_sha256)
                == events[first].once.as_ref().map(|k| k.body_sha256);
            out[i] = Some(match &out[first] {
                Some(Ok(a)) if same_body => Ok(Appended {
                    replayed: true,
                    ..*a
                }),
                Some(Ok(_)) => Err(OutboxError::KeyReused {
                    key: events[i].once.as_ref().map(|k| k.key.clone()).unwrap_or_default(),
                }),
                _ => Err(OutboxError::Invalid(
                    "an event with the same Idempotency-Key arrived at the same moment and was not stored; retry".into(),
                )),
            });
        }
        Ok(out
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| Err(OutboxError::Invalid("event was not processed".into())))
            })
            .collect())
    }

    fn handle(&mut self, cmd: Command) {
        match cmd {
            Command::Append(..) => {}
            Command::Read {
                from,
                max,
                live_only,
                reply,
            } => {
                let _ = reply.send(self.read(from, max, live_only));
            }
            Command::ApplyAck { up_to, also, reply } => {
                let _ = reply.send(self.apply_ack(up_to, &also));
            }
            Command::ApplyVerdicts(v, reply) => {
                let _ = reply.send(self.apply_verdicts(&v));
            }
            Command::Status(reply) => {
                let _ = reply.send(self.status());
            }
            Command::Receipt(id, reply) => {
                let _ = reply.send(self.receipt(id));
            }
            Command::Receipts {
                state,
                limit,
                before,
                reply,
            } => {
                let _ = reply.send(read_receipts(
                    &self.conn,
                    &self.path,
                    state.as_deref(),
                    limit,
                    before,
                ));
            }
            Command::NextSession(reply) => {
                let _ = reply.send(self.next_session());
            }
            Command::PruneReceipts(reply) => {
                let cutoff = now_ms() - retention(&self.config).as_millis() as i64;
                // A client key lives as long as its event's receipt.
                let r = self
                    .conn
                    .execute(
                        "DELETE FROM receipts WHERE updated_ms < ?1 AND state != 'queued'",
                        [cutoff],
                    )
                    .and_then(|n| {
                        self.conn.execute(
                            "DELETE FROM idempotency WHERE seq NOT IN (SELECT seq FROM outbox) AND seq NOT IN (SELECT seq FROM receipts)",
                            [],
                        )?;
                        Ok(n)
                    })
                    .map_err(sql(&self.path));
                let _ = reply.send(r);
            }
        }
    }

    fn read(&self, from: u64, max: usize, live_only: bool) -> Result<Chunk, OutboxError> {
        let err = sql(&self.path);
        let query = if live_only {
            // Two ordered index range scans merged: cheap even with a million
            // telemetry rows queued.
            "SELECT seq, payload, event_id FROM outbox WHERE priority = 0 AND seq >= ?1
             UNION ALL SELECT seq, payload, event_id FROM outbox WHERE priority = 1 AND seq >= ?1
             ORDER BY seq LIMIT ?2"
        } else {
            "SELECT seq, payload, event_id FROM outbox WHERE seq >= ?1 ORDER BY seq LIMIT ?2"
        };
        let mut stmt = self.conn.prepare_cached(query).map_err(&err)?;
        let rows = stmt
            .query_map(params![from as i64, max as i64], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, Vec<u8>>(1)?,
                    r.get::<_, Vec<u8>>(2)?,
                ))
            })
            .map_err(&err)?;
        let mut chunk = Chunk::default();
        for row in rows {
            let (seq, stored, event_id) = row.map_err(&err)?;
            let opened = self
                .keys
                .open(&event_id, &stored)
                .map_err(|why| format!("cannot open: {why}"));
            match opened.and_then(|b| codec::decode::<Envelope>(&b).map_err(|e| e.to_string())) {
                Ok(e) => chunk.events.push(e),
                // A row we wrote ourselves no longer decodes: report and skip
                // it rather than block the queue. The next start's integrity
                // check salvages the file.
                Err(e) => {
                    tracing::error!(seq, error = %e, path = %self.path.display(), "outbox row is unreadable; skipping it")
                }
            }
        }
        if !live_only {
            // Shed sequences up to the last event (or all of them when
            // nothing is held, so the collector's gap closes anyway).
            let upper = chunk
                .events
                .last()
                .map(|e| e.seq as i64)
                .unwrap_or(i64::MAX);
            let mut stmt = self
                .conn
                .prepare_cached("SELECT seq FROM shed WHERE seq <= ?1 ORDER BY seq LIMIT 100000")
                .map_err(&err)?;
            let seqs: Vec<u64> = stmt
                .query_map([upper], |r| r.get::<_, i64>(0).map(|s| s as u64))
                .map_err(&err)?
                .collect::<Result<_, _>>()
                .map_err(&err)?;
            chunk.shed = super::salvage::ranges(&seqs);
            chunk.shed.truncate(MAX_SHED_RANGES);
        }
        Ok(chunk)
    }

    fn apply_ack(&mut self, up_to: u64, also: &[(u64, u64)]) -> Result<u64, OutboxError> {
        let path = self.path.clone();
        let err = sql(&path);
        let tx = self.conn.transaction().map_err(&err)?;
        let current: i64 = tx
            .query_row(
                "SELECT value FROM meta WHERE key = 'acked_up_to'",
                [],
                |r| r.get(0),
            )
            .map_err(&err)?;
        let next_seq = self.next_seq;
        // Never believe an ack beyond what was assigned: it would skip future sequences.
        let floor = (up_to as i64).min(next_seq - 1).max(current);
        let mut ranges: Vec<(i64, i64)> = vec![(current + 1, floor)];
        ranges.extend(
            also.iter()
                .map(|&(a, b)| (a as i64, (b as i64).min(next_seq - 1))),
        );
        let mut removed = [(0u64, 0u64); 3];
        let now = now_ms();
        for (lo, hi) in ranges.into_iter().filter(|(lo, hi)| lo <= hi) {
            {
                let mut stmt = tx
                    .prepare_cached(
                        "SELECT priority, count(*), coalesce(sum(length(payload)), 0) FROM outbox WHERE seq BETWEEN ?1 AND ?2 GROUP BY priority",
                    )
                    .map_err(&err)?;
                let rows = stmt
                    .query_map([lo, hi], |r| {
                        Ok((
                            r.get::<_, i64>(0)?,
                            r.get::<_, i64>(1)?,
                            r.get::<_, i64>(2)?,
                        ))
                    })
                    .map_err(&err)?;
                for row in rows {
                    let (p, n, b) = row.map_err(&err)?;
                    if let Some(i) = usize::try_from(p).ok().filter(|i| *i < 3) {
                        removed[i].0 += n as u64;
                        removed[i].1 += b as u64;
                    }
                }
            }
            // The receipt outlives the payload; a verdict that came first
            // already wrote it.
            tx.execute(
                "INSERT OR IGNORE INTO receipts (seq, event_id, kind, state, updated_ms)
                 SELECT seq, event_id, kind, 'stored', ?3 FROM outbox WHERE seq BETWEEN ?1 AND ?2",
                params![lo, hi, now],
            )
            .map_err(&err)?;
            tx.execute("DELETE FROM outbox WHERE seq BETWEEN ?1 AND ?2", [lo, hi])
                .map_err(&err)?;
        }
        // Shed sequences at or below the floor have been accounted for by the collector.
        tx.execute("DELETE FROM shed WHERE seq <= ?1", [floor])
            .map_err(&err)?;
        tx.execute(
            "UPDATE meta SET value = ?1 WHERE key = 'acked_up_to'",
            [floor],
        )
        .map_err(&err)?;
        // The rows deleted above carried sequences up to `next_seq - 1`:
        // record it before they go.
        tx.execute(
            "UPDATE meta SET value = ?1 WHERE key = 'next_seq'",
            [next_seq],
        )
        .map_err(&err)?;
        tx.commit().map_err(&err)?;
        for (c, (count, bytes)) in removed.iter().enumerate() {
            self.held_count[c] = self.held_count[c].saturating_sub(*count);
            self.held_bytes[c] = self.held_bytes[c].saturating_sub(*bytes);
        }
        Ok(floor as u64)
    }

    fn apply_verdicts(&mut self, verdicts: &[Verdict]) -> Result<usize, OutboxError> {
        let path = self.path.clone();
        let err = sql(&path);
        let tx = self.conn.transaction().map_err(&err)?;
        let mut n = 0;
        {
            let mut update = tx
                .prepare_cached(
                    "UPDATE receipts SET state = ?3, document = ?4, reason = ?5, updated_ms = ?6 WHERE seq = ?1 AND event_id = ?2",
                )
                .map_err(&err)?;
            // A verdict can overtake the ack of its event (the ack was lost):
            // the receipt then starts from the still-queued outbox row.
            let mut insert = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO receipts (seq, event_id, kind, state, document, reason, updated_ms)
                     SELECT seq, event_id, kind, ?3, ?4, ?5, ?6 FROM outbox WHERE seq = ?1 AND event_id = ?2",
                )
                .map_err(&err)?;
            let now = now_ms();
            for v in verdicts {
                let (state, doc, reason) = match &v.outcome {
                    Outcome::Booked { document } => ("booked", Some(document.as_str()), None),
                    Outcome::Rejected { reason } => ("rejected", None, Some(reason.as_str())),
                };
                let p = params![v.seq as i64, &v.id.0[..], state, doc, reason, now];
                let changed = update.execute(p).map_err(&err)?;
                n += if changed > 0 {
                    changed
                } else {
                    insert.execute(p).map_err(&err)?
                };
            }
        }
        tx.commit().map_err(&err)?;
        Ok(n)
    }

    fn meta(&self, key: &str) -> Result<i64, OutboxError> {
        self.conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .map_err(sql(&self.path))
    }

    fn status(&mut self) -> Result<QueueStatus, OutboxError> {
        self.refresh_disk_free();
        let held = std::array::from_fn(|i| (self.held_count[i], self.held_bytes[i]));
        read_status(&self.conn, &self.path, Some(held)).map(|mut s| {
            s.disk_free = self.disk_free;
            s.last_fsync_us = self.last_fsync_us;
            s
        })
    }

    fn receipt(&self, id: EventId) -> Result<Option<Receipt>, OutboxError> {
        let err = sql(&self.path);
        let kept = self
            .conn
            .query_row(
                "SELECT seq, event_id, kind, state, document, reason, updated_ms FROM receipts WHERE event_id = ?1",
                [&id.0[..]],
                receipt_row,
            )
            .optional()
            .map_err(&err)?;
        if kept.is_some() {
            return Ok(kept);
        }
        self.conn
            .query_row(
                &format!("{QUEUED_RECEIPT} AND event_id = ?1"),
                [&id.0[..]],
                receipt_row,
            )
            .optional()
            .map_err(&err)
    }

    fn next_session(&mut self) -> Result<u64, OutboxError> {
        self.conn
            .execute(
                "UPDATE meta SET value = value + 1 WHERE key = 'session'",
                [],
            )
            .map_err(sql(&self.path))?;
        Ok(self.meta("session")? as u64)
    }
}

/// The next sequence to assign. Appends do not write `meta.next_seq` (it is
/// written when the file is made and at every ack, before acked rows are
/// deleted); the sequences appended since are still in `outbox` (or `shed`,
/// or `receipts`), so the next one is past the highest any of them holds.
pub(crate) fn next_seq_of(conn: &Connection) -> rusqlite::Result<i64> {
    let mut next: i64 =
        conn.query_row("SELECT value FROM meta WHERE key = 'next_seq'", [], |r| {
            r.get(0)
        })?;
    for query in [
        "SELECT max(seq) FROM outbox",
        "SELECT max(seq) FROM shed",
        "SELECT max(seq) FROM receipts",
    ] {
        if let Some(max) = conn.query_row(query, [], |r| r.get::<_, Option<i64>>(0))? {
            next = next.max(max + 1);
        }
    }
    Ok(next)
}

/// Sheds the oldest events of class `priority` until `bytes` are freed.
fn shed_oldest(
    tx: &rusqlite::Transaction<'_>,
    priority: i64,
    bytes: u64,
    now: i64,
    delta: &mut [(u64, u64); 3],
) -> rusqlite::Result<()> {
    let mut freed = 0u64;
    let mut count = 0i64;
    while freed < bytes {
        let victims: Vec<(i64, i64)> = {
            let mut stmt = tx.prepare_cached(
                "SELECT seq, length(payload) + 16 FROM outbox WHERE priority = ?1 ORDER BY seq LIMIT 256",
            )?;
            stmt.query_map([priority], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<_, _>>()?
        };
        if victims.is_empty() {
            break;
        }
        for (seq, size) in victims {
            if freed >= bytes {
                break;
            }
            tx.execute(
                "INSERT OR REPLACE INTO receipts (seq, event_id, kind, state, reason, updated_ms)
                 SELECT seq, event_id, kind, 'shed', 'disk budget reached', ?2 FROM outbox WHERE seq = ?1",
                [seq, now],
            )?;
            tx.execute("DELETE FROM outbox WHERE seq = ?1", [seq])?;
            tx.execute("INSERT OR IGNORE INTO shed (seq, priority, reason, at_ms) VALUES (?1, ?2, 'budget', ?3)", [
                seq, priority, now,
            ])?;
            freed += size as u64;
            // `size` includes the 16-byte id the plan counted; held bytes
            // track payload only.
            delta[priority as usize].0 += 1;
            delta[priority as usize].1 += (size - 16).max(0) as u64;
            count += 1;
        }
    }
    if count > 0 {
        count_drop(tx, priority, "budget", count)?;
    }
    Ok(())
}

fn count_drop(
    tx: &rusqlite::Transaction<'_>,
    priority: i64,
    reason: &str,
    n: i64,
) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO drops (priority, reason, count) VALUES (?1, ?2, ?3)
         ON CONFLICT (priority, reason) DO UPDATE SET count = count + excluded.count",
        params![priority, reason, n],
    )?;
    Ok(())
}

/// A queued event's receipt, read from its outbox row; `updated_ms` is
/// filled in by [`receipt_row`] from the event id.
/// An event whose verdict overtook its ack has a `receipts` row already and
/// is not listed twice.
const QUEUED_RECEIPT: &str = "SELECT seq, event_id, kind, 'queued', NULL, NULL, NULL FROM outbox
     WHERE NOT EXISTS (SELECT 1 FROM receipts r WHERE r.seq = outbox.seq)";

pub(crate) fn receipt_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Receipt> {
    let id: Vec<u8> = r.get(1)?;
    let mut arr = [0u8; 16];
    if id.len() == 16 {
        arr.copy_from_slice(&id);
    }
    // A queued event has not changed state since it was appended, which is
    // when its UUIDv7 id was made: the id's first 48 bits are that time (ms).
    let appended_ms = || {
        let mut ms = [0u8; 8];
        ms[2..].copy_from_slice(&arr[..6]);
        i64::from_be_bytes(ms)
    };
    Ok(Receipt {
        seq: r.get::<_, i64>(0)? as u64,
        event_id: EventId(arr),
        kind: r.get(2)?,
        state: r.get(3)?,
        document: r.get(4)?,
        reason: r.get(5)?,
        updated_ms: r.get::<_, Option<i64>>(6)?.unwrap_or_else(appended_ms),
    })
}

/// Receipts, newest first, with `seq < before` when given (to page back
/// through them); shared by the writer and `doctor` (read-only).
pub(crate) fn read_receipts(
    conn: &Connection,
    path: &Path,
    state: Option<&str>,
    limit: usize,
    before: Option<u64>,
) -> Result<Vec<Receipt>, OutboxError> {
    let err = sql(path);
    const KEPT: &str = "SELECT seq, event_id, kind, state, document, reason, updated_ms FROM receipts WHERE seq < ?2";
    let query = match state {
        Some("queued") => format!("{QUEUED_RECEIPT} AND seq < ?2 ORDER BY seq DESC LIMIT ?1"),
        Some(_) => format!("{KEPT} AND state = ?3 ORDER BY seq DESC LIMIT ?1"),
        // Both ordered by their primary key, merged.
        None => {
            format!("{KEPT} UNION ALL {QUEUED_RECEIPT} AND seq < ?2 ORDER BY seq DESC LIMIT ?1")
        }
    };
    let before = before.map_or(i64::MAX, |b| b.min(i64::MAX as u64) as i64);
    let mut stmt = conn.prepare_cached(&query).map_err(&err)?;
    let rows = match state.filter(|s| *s != "queued") {
        Some(s) => stmt.query_map(params![limit as i64, before, s], receipt_row),
        None => stmt.query_map(params![limit as i64, before], receipt_row),
    }
    .map_err(&err)?;
    rows.collect::<Result<Vec<_>, _>>().map_err(&err)
}

/// Queue health from the tables; shared by the writer and `doctor`.
/// Reads the queue status. `held` (events and payload bytes per class) comes
/// from the writer's counters when it has them; without them (the doctor) the
/// table is scanned, which costs a pass over every held payload.
pub(crate) fn read_status(
    conn: &Connection,
    path: &Path,
    held: Option<[(u64, u64); 3]>,
) -> Result<QueueStatus, OutboxError> {
    let err = sql(path);
    let meta = |k: &str| {
        conn.query_row("SELECT value FROM meta WHERE key = ?1", [k], |r| {
            r.get::<_, i64>(0)
        })
    };
    let mut status = QueueStatus {
        epoch: meta("epoch").map_err(&err)? as u64,
        next_seq: next_seq_of(conn).map_err(&err)? as u64,
        acked_up_to: meta("acked_up_to").map_err(&err)? as u64,
        ..QueueStatus::default()
    };
    if let Some(held) = held {
        for (class, (queued, bytes)) in status.classes.iter_mut().zip(held) {
            *class = ClassHealth { queued, bytes };
        }
    } else {
        let mut stmt = conn
            .prepare_cached("SELECT priority, count(*), coalesce(sum(length(payload)), 0) FROM outbox GROUP BY priority")
            .map_err(&err)?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })
            .map_err(&err)?;
        for row in rows {
            let (p, n, b) = row.map_err(&err)?;
            if let Some(i) = usize::try_from(p).ok().filter(|i| *i < 3) {
                status.classes[i] = ClassHealth {
                    queued: n as u64,
                    bytes: b as u64,
                };
            }
        }
    }
    status.queued = status.classes.iter().map(|c| c.queued).sum();
    status.queued_bytes = status.classes.iter().map(|c| c.bytes).sum();
    status.oldest_queued_ms = conn
        .query_row(
            "SELECT captured_ms FROM outbox ORDER BY seq LIMIT 1",
            [],
            |r| r.get(0),
        )
        .optional()
        .map_err(&err)?;
    status.verdicts_wanted_from = conn
        .query_row(
            "SELECT min(seq) FROM receipts WHERE state = 'stored'",
            [],
            |r| r.get::<_, Option<i64>>(0),
        )
        .map_err(&err)?
        .map(|s| s as u64);
    {
        let mut stmt = conn
            .prepare_cached("SELECT state, count(*) FROM receipts GROUP BY state")
            .map_err(&err)?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
            .map_err(&err)?;
        for row in rows {
            let (state, n) = row.map_err(&err)?;
            match state.as_str() {
                "stored" => status.stored = n as u64,
                "booked" => status.booked = n as u64,
                "rejected" => status.rejected = n as u64,
                _ => {}
            }
        }
    }
    {
        let mut stmt = conn
            .prepare_cached("SELECT priority, reason, count FROM drops ORDER BY priority, reason")
            .map_err(&err)?;
        let rows = stmt
            .query_map([], |r| {
                Ok(DropCount {
                    class: class_name(r.get(0)?).into(),
                    reason: r.get(1)?,
                    count: r.get::<_, i64>(2)? as u64,
                })
            })
            .map_err(&err)?;
        status.drops = rows.collect::<Result<_, _>>().map_err(&err)?;
    }
    status.salvage = conn
        .query_row(
            "SELECT report FROM salvage ORDER BY id DESC LIMIT 1",
            [],
            |r| r.get::<_, String>(0),
        )
        .optional()
        .map_err(&err)?
        .and_then(|text| serde_json::from_str::<SalvageReport>(&text).ok());
    Ok(status)
}
