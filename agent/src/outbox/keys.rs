//! Payload encryption at rest: every outbox payload is sealed with
//! ChaCha20-Poly1305 under the device's key, so a copied `outbox.db` (or its
//! WAL, or a free page) shows no recipient, signature or position.
//!
//! # Files (in the data folder, mode 0600, the folder 0700)
//!
//! - `outbox.key`: one key per line, `<id> <64 hex digits>`; the first line
//!   is the key new payloads are sealed with, later lines are older keys
//!   still needed to open rows sealed before a rotation. Made at first
//!   start; written to a temporary file and renamed, so it is never half
//!   written.
//! - `outbox.lock`: held (`flock`) by the agent while it runs, so
//!   `rotate-key` never re-seals under a running writer.
//!
//! # Sealed payload layout
//!
//! `"dlk1"` ‖ key id (u32, big endian) ‖ nonce (12 random bytes) ‖
//! ciphertext ‖ tag (16). The event id is the associated data: a payload
//! moved to another row does not open. A payload without the magic is a
//! plain CBOR envelope from before encryption (a CBOR envelope never starts
//! with a 4-byte string) and is read as it is; `rotate-key` seals such rows.
//!
//! # Invariants
//!
//! 1. A key is removed from `outbox.key` only after every row sealed with it
//!    was re-sealed with the new key and that commit is durable.
//! 2. Opening never guesses: a payload sealed with an unknown key id, or
//!    whose tag does not verify, is an error that names the key id and the
//!    file, never garbage handed to the CBOR decoder.
//!
//! The key sits beside the database by default, which protects a copied or
//! backed-up database file and the data of other users; against the theft
//! of the whole disk it protects only when `outbox.key` lives on storage the
//! thief cannot read (a platform keystore is not wired in yet).

use std::borrow::Cow;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use rusqlite::{Connection, params};

use super::OutboxError;

/// The key file's name in the data folder.
pub const KEY_FILE: &str = "outbox.key";
/// The lock file's name in the data folder.
pub const LOCK_FILE: &str = "outbox.lock";
const MAGIC: &[u8; 4] = b"dlk1";
const TAG_LEN: usize = 16;
/// Bytes a sealed payload has beyond its plaintext.
pub const OVERHEAD: usize = MAGIC.len() + 4 + NONCE_LEN + TAG_LEN;

/// The device's payload keys: the current one seals, all of them open.
pub struct Keys {
    /// Where they were read from.
    path: PathBuf,
    /// `(id, key)`, the current key first.
    keys: Vec<(u32, LessSafeKey, [u8; 32])>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key bytes.
        let ids: Vec<u32> = self.keys.iter().map(|k| k.0).collect();
        f.debug_struct("Keys")
            .field("path", &self.path)
            .field("ids", &ids)
            .finish()
    }
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> OutboxError + '_ {
    move |source| OutboxError::DataDir {
        path: path.into(),
        source,
    }
}

fn bad_file(path: &Path, why: &str) -> OutboxError {
    OutboxError::DataDir {
        path: path.into(),
        source: std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "{why}; restore the key file from its backup (without it the queued payloads cannot be read)"
            ),
        ),
    }
}

fn make_key(bytes: &[u8; 32]) -> Option<LessSafeKey> {
    UnboundKey::new(&CHACHA20_POLY1305, bytes)
        .ok()
        .map(LessSafeKey::new)
}

impl Keys {
    /// The key file of a data folder.
    pub fn path_in(data_dir: &Path) -> PathBuf {
        data_dir.join(KEY_FILE)
    }

    /// Reads the key file of `data_dir`, making it (with one new key) when
    /// it does not exist.
    pub fn load_or_create(data_dir: &Path) -> Result<Self, OutboxError> {
        if let Some(keys) = Self::load(data_dir)? {
            return Ok(keys);
        }
        let keys = Self::from_entries(Self::path_in(data_dir), vec![(1, rand::random())])?;
        keys.write()?;
        Ok(keys)
    }

    /// Reads the key file of `data_dir`; `None` when there is none.
    pub fn load(data_dir: &Path) -> Result<Option<Self>, OutboxError> {
        let path = Self::path_in(data_dir);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(&path)(e)),
        };
        let mut entries = Vec::new();
        for (n, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let parsed = line.split_once(' ').and_then(|(id, hex)| {
                let id: u32 = id.trim().parse().ok()?;
                let hex = hex.trim();
                if hex.len() != 64 {
                    return None;
                }
                let mut key = [0u8; 32];
                for (i, b) in key.iter_mut().enumerate() {
                    *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
                }
                Some((id, key))
            });
            match parsed {
                Some(entry) => entries.push(entry),
                None => {
                    return Err(bad_file(
                        &path,
                        &format!("line {} is not `<id> <64 hex digits>`", n + 1),
                    ));
                }
            }
        }
        if entries.is_empty() {
            return Err(bad_file(&path, "the key file holds no key"));
        }
        Self::from_entries(path, entries).map(Some)
    }

    /// The keys of the outbox database at `db` (its folder's key file).
    pub fn for_database(db: &Path) -> Result<Option<Self>, OutboxError> {
        Self::load(db.parent().unwrap_or(Path::new(".")))
    }

    fn from_entries(path: PathBuf, entries: Vec<(u32, [u8; 32])>) -> Result<Self, OutboxError> {
        let mut keys = Vec::with_capacity(entries.len());
        for (id, bytes) in entries {
            let key = make_key(&bytes).ok_or_else(|| bad_file(&path, "a key is not usable"))?;
            keys.push((id, key, bytes));
        }
        Ok(Self { path, keys })
    }

    /// The current key's id.
    pub fn current_id(&self) -> u32 {
        self.keys.first().map_or(0, |k| k.0)
    }

    /// Ids of every key held, the current one first.
    pub fn ids(&self) -> Vec<u32> {
        self.keys.iter().map(|k| k.0).collect()
    }

    /// Writes the key file (mode 0600) atomically.
    fn write(&self) -> Result<(), OutboxError> {
        let mut text = String::new();
        for (id, _, bytes) in &self.keys {
            let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            text.push_str(&format!("{id} {hex}\n"));
        }
        write_private(&self.path, text.as_bytes())
    }

    /// Seals `plain` (an encoded envelope) for the row of `event_id`.
    pub fn seal(&self, event_id: &[u8], plain: &[u8]) -> Result<Vec<u8>, OutboxError> {
        let Some((id, key, _)) = self.keys.first() else {
            return Err(OutboxError::Invalid("no payload key loaded".into()));
        };
        // One allocation: header, then the plaintext sealed in place, then
        // the tag (this runs on the writer thread for every event).
        let nonce: [u8; NONCE_LEN] = rand::random();
        let header = MAGIC.len() + 4 + NONCE_LEN;
        let mut out = Vec::with_capacity(plain.len() + OVERHEAD);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&id.to_be_bytes());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plain);
        let tag = key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(event_id),
                &mut out[header..],
            )
            .map_err(|_| OutboxError::Invalid("sealing a payload failed".into()))?;
        out.extend_from_slice(tag.as_ref());
        Ok(out)
    }

    /// Opens a stored payload of the row of `event_id`: a sealed one is
    /// decrypted, a plain one (from before encryption) returned as it is.
    pub fn open<'a>(&self, event_id: &[u8], stored: &'a [u8]) -> Result<Cow<'a, [u8]>, String> {
        open_with(Some(self), event_id, stored)
    }
}

/// [`Keys::open`] for a reader that may have no key file: plain payloads
/// are read as they are, a sealed one without its key is an error that
/// says so.
pub fn open_with<'a>(
    keys: Option<&Keys>,
    event_id: &[u8],
    stored: &'a [u8],
) -> Result<Cow<'a, [u8]>, String> {
    if !is_sealed(stored) {
        return Ok(Cow::Borrowed(stored));
    }
    if stored.len() < OVERHEAD {
        return Err("sealed payload is truncated".into());
    }
    let mut id = [0u8; 4];
    id.copy_from_slice(&stored[4..8]);
    let id = u32::from_be_bytes(id);
    let Some(keys) = keys else {
        return Err(format!(
            "payload is sealed with key {id} and no {KEY_FILE} is beside the database; copy the device's key file there"
        ));
    };
    let Some((_, key, _)) = keys.keys.iter().find(|k| k.0 == id) else {
        return Err(format!(
            "payload is sealed with key {id}, which {} does not hold (keys {:?})",
            keys.path.display(),
            keys.ids()
        ));
    };
    let mut nonce = [0u8; NONCE_LEN];
    nonce.copy_from_slice(&stored[8..8 + NONCE_LEN]);
    let mut body = stored[8 + NONCE_LEN..].to_vec();
    let plain = key
        .open_in_place(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(event_id),
            &mut body,
        )
        .map_err(|_| {
            format!(
                "payload sealed with key {id} does not verify (damaged, or moved from another row)"
            )
        })?;
    let n = plain.len();
    body.truncate(n);
    Ok(Cow::Owned(body))
}

/// Whether a stored payload is sealed.
pub fn is_sealed(stored: &[u8]) -> bool {
    stored.starts_with(MAGIC)
}

/// Writes `bytes` to `path` with mode 0600 through a temporary file and a
/// rename (and fsyncs both), so a reader sees the old or the new content.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), OutboxError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp.{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let io = io_err(path);
    {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(&io)?;
        f.write_all(bytes).map_err(&io)?;
        f.sync_all().map_err(&io)?;
    }
    std::fs::rename(&tmp, path).map_err(&io)?;
    if let Some(dir) = path.parent()
        && let Ok(d) = File::open(dir)
    {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Makes `dir` (and its parents) and gives it mode 0700.
pub fn private_dir(dir: &Path) -> Result<(), OutboxError> {
    let io = io_err(dir);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(&io)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(&io)
}

/// Creates `file` empty with mode 0600 if it does not exist, and gives an
/// existing one mode 0600. SQLite creates a database's `-wal` and `-shm`
/// with the database file's mode, so they follow.
pub fn private_file(file: &Path) -> Result<(), OutboxError> {
    let io = io_err(file);
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(file)
        .map_err(&io)?;
    std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o600)).map_err(&io)
}

/// The agent's hold on a data folder (`outbox.lock`, `flock`): one writer
/// per outbox, and no key rotation under a running agent.
#[derive(Debug)]
pub struct FolderLock {
    _file: File,
}

impl FolderLock {
    /// Takes the lock, waiting up to `wait` for a previous holder (an agent
    /// still shutting down) to let go.
    pub fn acquire(data_dir: &Path, wait: Duration) -> Result<Self, OutboxError> {
        let path = data_dir.join(LOCK_FILE);
        let io = io_err(&path);
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(&io)?;
        let deadline = Instant::now() + wait;
        loop {
            match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => return Ok(Self { _file: file }),
                Err(e) if e == rustix::io::Errno::WOULDBLOCK && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) if e == rustix::io::Errno::WOULDBLOCK => {
                    return Err(OutboxError::DataDir {
                        path: path.clone(),
                        source: std::io::Error::new(
                            std::io::ErrorKind::WouldBlock,
                            "another dockline-agent uses this data folder; stop it first (one agent per outbox)",
                        ),
                    });
                }
                Err(e) => return Err(io(e.into())),
            }
        }
    }
}

/// The folder of sealed media files (named by the SHA-256 of their
/// content, which is their associated data) in the data folder; see
/// `crate::api::media`.
pub const MEDIA_DIR: &str = "media";

/// Whether `s` is a SHA-256 in lower-case hex (a media file's name).
pub fn is_hex_digest(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Re-seals every media file of `data_dir` with `keys`' current key;
/// returns how many.
fn reseal_media(data_dir: &Path, keys: &Keys) -> Result<u64, OutboxError> {
    let Ok(entries) = std::fs::read_dir(data_dir.join(MEDIA_DIR)) else {
        return Ok(0);
    };
    let mut n = 0;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !is_hex_digest(&name) {
            continue;
        }
        let path = entry.path();
        let stored = std::fs::read(&path).map_err(io_err(&path))?;
        let plain = keys.open(name.as_bytes(), &stored).map_err(|why| {
            OutboxError::Invalid(format!(
                "media {name} cannot be opened ({why}); the old key was kept"
            ))
        })?;
        write_private(&path, &keys.seal(name.as_bytes(), &plain)?)?;
        n += 1;
    }
    Ok(n)
}

/// What `rotate-key` did.
#[derive(Debug, Clone, serde::Serialize, PartialEq, Eq)]
pub struct Rotation {
    /// The new current key.
    pub key_id: u32,
    /// Held payloads re-sealed under it.
    pub resealed: u64,
    /// Plain payloads (from before encryption) sealed for the first time.
    pub sealed_plain: u64,
    /// Media files (signatures, photos) re-sealed under the new key.
    pub media: u64,
    /// Keys removed from the key file.
    pub retired: Vec<u32>,
}

/// Rotates the payload key of the outbox in `data_dir` (the agent must be
/// stopped): a new key becomes current, every held payload is re-sealed
/// with it in one transaction, the WAL is checkpointed and truncated (with
/// `secure_delete` the old ciphertexts are overwritten), and only then are
/// the old keys removed from the key file.
pub fn rotate(data_dir: &Path) -> Result<Rotation, OutboxError> {
    // An agent that is just stopping gets a moment to let go.
    let _lock = FolderLock::acquire(data_dir, Duration::from_secs(2))?;
    let db = data_dir.join("outbox.db");
    if !db.exists() {
        return Err(OutboxError::DataDir {
            path: db,
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no outbox here; point --data-dir (or --config) at the agent's data folder",
            ),
        });
    }
    let old = Keys::load_or_create(data_dir)?;
    let new_id = old
        .ids()
        .into_iter()
        .max()
        .unwrap_or(0)
        .wrapping_add(1)
        .max(1);
    let mut entries: Vec<(u32, [u8; 32])> = vec![(new_id, rand::random())];
    entries.extend(old.keys.iter().map(|k| (k.0, k.2)));
    // Step 1: the new key first, the old ones still there (a crash now
    // leaves rows readable either way).
    let both = Keys::from_entries(Keys::path_in(data_dir), entries)?;
    both.write()?;
    let err = |source| OutboxError::Sqlite {
        path: db.clone(),
        source,
    };
    let mut conn = Connection::open(&db).map_err(err)?;
    conn.pragma_update(None, "secure_delete", "ON")
        .map_err(err)?;
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(err)?;
    let (mut resealed, mut sealed_plain) = (0u64, 0u64);
    {
        let tx = conn.transaction().map_err(err)?;
        let rows: Vec<(i64, Vec<u8>, Vec<u8>)> = tx
            .prepare("SELECT seq, event_id, payload FROM outbox ORDER BY seq")
            .and_then(|mut s| {
                s.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                    .collect()
            })
            .map_err(err)?;
        let mut put = tx
            .prepare("UPDATE outbox SET payload = ?2 WHERE seq = ?1")
            .map_err(err)?;
        for (seq, event_id, stored) in rows {
            let plain = both.open(&event_id, &stored).map_err(|why| {
                OutboxError::Invalid(format!(
                    "row {seq} cannot be opened ({why}); nothing was changed, run `dockline-agent doctor check`"
                ))
            })?;
            if is_sealed(&stored) {
                resealed += 1;
            } else {
                sealed_plain += 1;
            }
            let sealed = both.seal(&event_id, &plain)?;
            put.execute(params![seq, sealed]).map_err(err)?;
        }
        drop(put);
        tx.commit().map_err(err)?;
    }
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .map_err(err)?;
    drop(conn);
    let media = reseal_media(data_dir, &both)?;
    // Step 2: only the new key remains.
    let retired = old.ids();
    let only_new = Keys::from_entries(Keys::path_in(data_dir), vec![(new_id, both.keys[0].2)])?;
    only_new.write()?;
    Ok(Rotation {
        key_id: new_id,
        resealed,
        sealed_plain,
        media,
        retired,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_payloads_open_only_with_their_key_and_row() {
        let dir = tempfile::tempdir().expect("tempdir");
        let keys = Keys::load_or_create(dir.path()).expect("keys");
        let mode = std::fs::metadata(Keys::path_in(dir.path()))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let sealed = keys.seal(b"event-1", b"R. Receiver").expect("seal");
        assert!(is_sealed(&sealed));
        assert_eq!(sealed.len(), b"R. Receiver".len() + OVERHEAD);
        assert!(
            !sealed.windows(8).any(|w| w == b"Receiver"),
            "the plaintext is not in the sealed bytes"
        );
        assert_eq!(
            keys.open(b"event-1", &sealed).expect("open").as_ref(),
            b"R. Receiver"
        );
        assert!(keys.open(b"event-2", &sealed).is_err(), "bound to its row");
        let mut flipped = sealed.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(keys.open(b"event-1", &flipped).is_err());
        // Plain payloads from before encryption pass through.
        assert_eq!(
            keys.open(b"e", &[0xa5, 1, 2]).expect("plain").as_ref(),
            &[0xa5, 1, 2]
        );
        // Without the key file: a clear error, not garbage.
        let err = open_with(None, b"event-1", &sealed).expect_err("no key");
        assert!(err.contains(KEY_FILE), "{err}");
        // Reloaded from the file: same key.
        let again = Keys::load_or_create(dir.path()).expect("keys");
        assert_eq!(again.current_id(), 1);
        assert!(again.open(b"event-1", &sealed).is_ok());
    }

    #[test]
    fn a_damaged_key_file_is_refused_with_a_reason() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(Keys::path_in(dir.path()), "1 abc\n").expect("write");
        let err = Keys::load(dir.path()).expect_err("bad file").to_string();
        assert!(err.contains("line 1"), "{err}");
    }

    #[test]
    fn the_folder_lock_admits_one_holder() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = FolderLock::acquire(dir.path(), Duration::ZERO).expect("first");
        let err = FolderLock::acquire(dir.path(), Duration::from_millis(50))
            .expect_err("second")
            .to_string();
        assert!(err.contains("another dockline-agent"), "{err}");
        drop(first);
        FolderLock::acquire(dir.path(), Duration::ZERO).expect("free again");
    }
}
