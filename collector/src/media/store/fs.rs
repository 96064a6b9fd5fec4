//! Media as files (SQLite deployments): `sha256/ab/<hex>` complete and
//! verified, `partial/<hex>` the committed prefix of one being received
//! (append-only, fsynced before each ack), `index.db` (SQLite) what is
//! stored, when it was attached, which open events reference it, since when
//! an event waits for it, and the counters.
//!
//! A complete file is first the partial, hashed, then renamed into place
//! and its directory fsynced: a crash leaves either the partial or the
//! complete file, never half of one. A complete file without an index row
//! (a crash between the rename and the row) is adopted on first sight.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use dockline_protocol::media::{MediaHash, MediaType};
use rusqlite::{Connection, OptionalExtension, params};

use super::{MediaError, MediaStats, MediaStore, MediumInfo, StoredMedium};
use crate::media::MediaRef;

/// Files under one directory (`{data_dir}/media`).
#[derive(Debug)]
pub struct FsMediaStore {
    root: PathBuf,
    index: Connection,
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> MediaError {
    let path = path.display().to_string();
    move |source| MediaError::Io { what, path, source }
}

fn type_name(t: MediaType) -> &'static str {
    match t {
        MediaType::Png => "png",
        MediaType::Jpeg => "jpeg",
    }
}

fn type_of(name: &str) -> Option<MediaType> {
    match name {
        "png" => Some(MediaType::Png),
        "jpeg" => Some(MediaType::Jpeg),
        _ => None,
    }
}

fn sync_dir(dir: &Path) -> Result<(), MediaError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("fsync directory", dir))
}

impl FsMediaStore {
    /// Opens (creating) the store at `root`.
    pub fn open(root: &Path) -> Result<Self, MediaError> {
        for dir in [
            root.to_path_buf(),
            root.join("sha256"),
            root.join("partial"),
        ] {
            fs::create_dir_all(&dir).map_err(io("create directory", &dir))?;
        }
        let index = Connection::open(root.join("index.db"))?;
        index.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;
             CREATE TABLE IF NOT EXISTS media(hash TEXT PRIMARY KEY, media_type TEXT NOT NULL,
                 len INTEGER NOT NULL, stored_ms INTEGER NOT NULL, attached_ms INTEGER);
             CREATE TABLE IF NOT EXISTS refs(event TEXT NOT NULL, hash TEXT NOT NULL,
                 PRIMARY KEY(event, hash));
             CREATE INDEX IF NOT EXISTS refs_hash ON refs(hash);
             CREATE TABLE IF NOT EXISTS event_media(event TEXT NOT NULL, n INTEGER NOT NULL,
                 hash TEXT NOT NULL, role TEXT NOT NULL, PRIMARY KEY(event, n));
             CREATE TABLE IF NOT EXISTS waits(event TEXT PRIMARY KEY, since_ms INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS counters(name TEXT PRIMARY KEY, n INTEGER NOT NULL);",
        )?;
        Ok(Self {
            root: root.to_path_buf(),
            index,
        })
    }

    fn partial(&self, hash: &MediaHash) -> PathBuf {
        self.root.join("partial").join(hash.to_string())
    }

    fn complete_path(&self, hash: &MediaHash) -> PathBuf {
        let hex = hash.to_string();
        self.root.join("sha256").join(&hex[..2]).join(hex)
    }

    fn count(&self, name: &str, n: u64) -> Result<(), MediaError> {
        self.index.execute(
            "INSERT INTO counters(name, n) VALUES (?1, ?2)
             ON CONFLICT(name) DO UPDATE SET n = n + excluded.n",
            params![name, n as i64],
        )?;
        Ok(())
    }

    fn counter(&self, name: &str) -> Result<u64, MediaError> {
        let n: Option<i64> = self
            .index
            .query_row("SELECT n FROM counters WHERE name = ?1", [name], |r| {
                r.get(0)
            })
            .optional()?;
        Ok(n.unwrap_or(0).max(0) as u64)
    }

    /// Removes a damaged complete medium and counts it.
    fn forget_damaged(&mut self, hash: &MediaHash) -> Result<(), MediaError> {
        let path = self.complete_path(hash);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("remove damaged", &path)(e)),
        }
        self.index
            .execute("DELETE FROM media WHERE hash = ?1", [hash.to_string()])?;
        self.count("damaged", 1)?;
        tracing::error!(medium = %hash, "stored medium is damaged (missing, or its bytes do not hash to its name); removed, it is received again");
        Ok(())
    }
}

impl MediaStore for FsMediaStore {
    fn backend(&self) -> &'static str {
        "fs"
    }

    fn prefix(&mut self, hash: &MediaHash) -> Result<Vec<u8>, MediaError> {
        let path = self.partial(hash);
        match fs::read(&path) {
            Ok(b) => Ok(b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(io("read", &path)(e)),
        }
    }

    fn prefix_len(&mut self, hash: &MediaHash) -> Result<u64, MediaError> {
        let path = self.partial(hash);
        match fs::metadata(&path) {
            Ok(m) => Ok(m.len()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(io("stat", &path)(e)),
        }
    }

    fn append(
        &mut self,
        hash: &MediaHash,
        _media_type: MediaType,
        _len: u64,
        at: u64,
        bytes: &[u8],
    ) -> Result<(), MediaError> {
        if self.info(hash)?.is_some() {
            return Ok(());
        }
        let path = self.partial(hash);
        let fresh = at == 0;
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io("open", &path))?;
        let have = file.metadata().map_err(io("stat", &path))?.len();
        if have < at {
            drop(file);
            fs::remove_file(&path).map_err(io("remove damaged", &path))?;
            self.count("damaged", 1)?;
            return Err(MediaError::Damaged {
                hash: *hash,
                have,
                at,
            });
        }
        if have > at {
            // A tail written but never acked (killed before the ack): cut.
            file.set_len(at).map_err(io("truncate", &path))?;
        }
        use std::io::Seek;
        file.seek(std::io::SeekFrom::Start(at))
            .map_err(io("seek", &path))?;
        file.write_all(bytes).map_err(io("write", &path))?;
        file.sync_data().map_err(io("fsync", &path))?;
        if fresh {
            sync_dir(&self.root.join("partial"))?;
        }
        Ok(())
    }

    fn complete(
        &mut self,
        hash: &MediaHash,
        media_type: MediaType,
        now_ms: i64,
    ) -> Result<(), MediaError> {
        if self.info(hash)?.is_some() {
            self.discard(hash)?;
            return Ok(());
        }
        let partial = self.partial(hash);
        let bytes = fs::read(&partial).map_err(io("read", &partial))?;
        let got = MediaHash::of(&bytes);
        if got != *hash {
            fs::remove_file(&partial).map_err(io("remove", &partial))?;
            return Err(MediaError::HashMismatch {
                expected: *hash,
                got,
                len: bytes.len() as u64,
            });
        }
        let target = self.complete_path(hash);
        let dir = target.parent().map(Path::to_path_buf).unwrap_or_default();
        fs::create_dir_all(&dir).map_err(io("create directory", &dir))?;
        File::open(&partial)
            .and_then(|f| f.sync_all())
            .map_err(io("fsync", &partial))?;
        fs::rename(&partial, &target).map_err(io("rename into place", &target))?;
        sync_dir(&dir)?;
        sync_dir(&self.root.join("partial"))?;
        self.index.execute(
            "INSERT OR IGNORE INTO media(hash, media_type, len, stored_ms) VALUES (?1, ?2, ?3, ?4)",
            params![
                hash.to_string(),
                type_name(media_type),
                bytes.len() as i64,
                now_ms
            ],
        )?;
        Ok(())
    }

    fn discard(&mut self, hash: &MediaHash) -> Result<(), MediaError> {
        let path = self.partial(hash);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io("remove", &path)(e)),
        }
    }

    fn get(&mut self, hash: &MediaHash) -> Result<Option<StoredMedium>, MediaError> {
        let Some(info) = self.info(hash)? else {
            return Ok(None);
        };
        let path = self.complete_path(hash);
        let mut bytes = Vec::with_capacity(usize::try_from(info.len).unwrap_or(0));
        let read = File::open(&path).and_then(|mut f| f.read_to_end(&mut bytes));
        match read {
            Ok(_) if MediaHash::of(&bytes) == *hash => Ok(Some(StoredMedium {
                media_type: info.media_type,
                bytes: Arc::from(bytes),
            })),
            Ok(_) => {
                self.forget_damaged(hash)?;
                Ok(None)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.forget_damaged(hash)?;
                Ok(None)
            }
            Err(e) => Err(io("read", &path)(e)),
        }
    }

    fn info(&mut self, hash: &MediaHash) -> Result<Option<MediumInfo>, MediaError> {
        let row: Option<(String, i64, i64, Option<i64>)> = self
            .index
            .query_row(
                "SELECT media_type, len, stored_ms, attached_ms FROM media WHERE hash = ?1",
                [hash.to_string()],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()?;
        if let Some((t, len, stored_ms, attached_ms)) = row {
            let Some(media_type) = type_of(&t) else {
                return Err(MediaError::Db(format!(
                    "medium {hash} has unknown type {t:?} in index.db"
                )));
            };
            return Ok(Some(MediumInfo {
                media_type,
                len: len.max(0) as u64,
                stored_ms,
                attached_ms,
            }));
        }
        // Adopt a complete file whose index row a crash lost.
        let path = self.complete_path(hash);
        let Ok(bytes) = fs::read(&path) else {
            return Ok(None);
        };
        let media_type = match MediaType::from_magic(&bytes) {
            Some(t) if MediaHash::of(&bytes) == *hash => t,
            _ => {
                self.forget_damaged(hash)?;
                return Ok(None);
            }
        };
        let now = crate::now_ms();
        self.index.execute(
            "INSERT OR IGNORE INTO media(hash, media_type, len, stored_ms) VALUES (?1, ?2, ?3, ?4)",
            params![
                hash.to_string(),
                type_name(media_type),
                bytes.len() as i64,
                now
            ],
        )?;
        Ok(Some(MediumInfo {
            media_type,
            len: bytes.len() as u64,
            stored_ms: now,
            attached_ms: None,
        }))
    }

    fn mark_attached(&mut self, hash: &MediaHash, now_ms: i64) -> Result<(), MediaError> {
        self.index.execute(
            "UPDATE media SET attached_ms = ?2 WHERE hash = ?1",
            params![hash.to_string(), now_ms],
        )?;
        Ok(())
    }

    fn add_refs(&mut self, event: &str, refs: &[MediaRef]) -> Result<(), MediaError> {
        let tx = self.index.transaction()?;
        for (n, r) in refs.iter().enumerate() {
            tx.execute(
                "INSERT OR IGNORE INTO refs(event, hash) VALUES (?1, ?2)",
                params![event, r.hash.to_string()],
            )?;
            tx.execute(
                "INSERT OR IGNORE INTO event_media(event, n, hash, role) VALUES (?1, ?2, ?3, ?4)",
                params![
                    event,
                    n as i64,
                    r.hash.to_string(),
                    super::role_name(r.role)
                ],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    fn media_of_event(&mut self, event: &str) -> Result<Vec<MediaRef>, MediaError> {
        let mut stmt = self
            .index
            .prepare("SELECT hash, role FROM event_media WHERE event = ?1 ORDER BY n")?;
        let rows = stmt.query_map([event], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (hex, role) = row?;
            if let Some(hash) = MediaHash::parse_hex(&hex) {
                out.push(MediaRef {
                    hash,
                    role: super::role_of(&role),
                });
            }
        }
        Ok(out)
    }

    fn drop_refs(&mut self, event: &str) -> Result<(), MediaError> {
        self.index
            .execute("DELETE FROM refs WHERE event = ?1", [event])?;
        self.index
            .execute("DELETE FROM waits WHERE event = ?1", [event])?;
        Ok(())
    }

    fn wait_since(&mut self, event: &str, now_ms: i64) -> Result<i64, MediaError> {
        self.index.execute(
            "INSERT OR IGNORE INTO waits(event, since_ms) VALUES (?1, ?2)",
            params![event, now_ms],
        )?;
        Ok(self.index.query_row(
            "SELECT since_ms FROM waits WHERE event = ?1",
            [event],
            |r| r.get(0),
        )?)
    }

    fn sweep(&mut self, now_ms: i64, retain_ms: i64) -> Result<u64, MediaError> {
        let cutoff = now_ms.saturating_sub(retain_ms);
        let due: Vec<String> = {
            let mut stmt = self.index.prepare(
                "SELECT hash FROM media WHERE attached_ms IS NOT NULL AND attached_ms < ?1
                 AND NOT EXISTS (SELECT 1 FROM refs WHERE refs.hash = media.hash)",
            )?;
            let rows = stmt.query_map([cutoff], |r| r.get(0))?;
            rows.collect::<Result<_, _>>()?
        };
        let mut n = 0;
        for hex in due {
            let Some(hash) = MediaHash::parse_hex(&hex) else {
                continue;
            };
            let path = self.complete_path(&hash);
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io("remove expired", &path)(e)),
            }
            self.index
                .execute("DELETE FROM media WHERE hash = ?1", [&hex])?;
            n += 1;
        }
        if n > 0 {
            self.count("swept", n)?;
        }
        Ok(n)
    }

    fn stats(&mut self) -> Result<MediaStats, MediaError> {
        let (count, bytes): (i64, i64) = self.index.query_row(
            "SELECT COUNT(*), COALESCE(SUM(len), 0) FROM media",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let dir = self.root.join("partial");
        let partial = fs::read_dir(&dir)
            .map_err(io("list", &dir))?
            .filter(|e| e.is_ok())
            .count() as u64;
        Ok(MediaStats {
            count: count.max(0) as u64,
            bytes: bytes.max(0) as u64,
            partial,
            damaged: self.counter("damaged")?,
            swept: self.counter("swept")?,
        })
    }
}
