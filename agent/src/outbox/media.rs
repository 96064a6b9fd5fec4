//! Proof-of-delivery media (signatures, photos) as must-deliver outbox data.
//!
//! # Invariants
//!
//! 1. **Addressed by hash, committed before the answer.** A medium is stored
//!    at the SHA-256 of its bytes; the sealed file and its record are
//!    written to a temporary file, fsynced and renamed (the folder fsynced
//!    too) before [`MediaStore::put`] returns, so a 201 survives a power cut.
//! 2. **Checked.** Only PNG and JPEG, told by their magic bytes (a declared
//!    content type must agree), at most `[media] max_bytes` (2 MiB by
//!    default); anything else is refused naming the problem and the fix.
//! 3. **Client idempotency as for events.** An `Idempotency-Key` is kept
//!    with the hash of the bytes it stored: the same key with the same bytes
//!    answers the first medium (`replayed`), with other bytes it is refused
//!    ([`MediaError::KeyReused`]). The hash address makes a retry without a
//!    key idempotent too.
//! 4. **Never shed.** Media are not evicted under the disk budget: a medium
//!    that does not fit in the budget beside the queued events is refused
//!    (507) instead. A medium leaves the agent only once the collector
//!    acked it `stored` (and then only by an operator's `doctor`, since the
//!    receipt shows it): this store never deletes.
//! 5. **Sent after its events.** A medium is offered to the uplink only once
//!    the events that reference it are stored at the collector: its record
//!    keeps the highest sequence that named it (`ref_seq`, noted when the
//!    event is appended); one that no event named is sent once no business
//!    event is queued.
//! 6. **State from the collector's acks.** `have` (the contiguous prefix the
//!    collector committed, where a resumed upload starts) and the state
//!    (`queued`, `stored`, `attached` with the ERP's document, `refused`
//!    with the reason) change only on a [`MediaAck`] for a medium held here.
//!
//! # On-disk layout (`{data_dir}/media/`, folder 0700, files 0600)
//!
//! | file | content |
//! |---|---|
//! | `<sha256 hex>` | the image, sealed with the outbox's payload key ([`keys`], the hex as associated data); plaintext: one type byte (1 PNG, 2 JPEG), then the image |
//! | `<sha256 hex>.json` | its [`MediaRecord`] (type, size, state, `have`, `ref_seq`, stored time) |
//! | `key-<sha256 of the key>` | an idempotency key: the hex of the medium it stored |
//!
//! A sealed file without a record (a crash between the two writes) is
//! adopted at open as a queued medium. [`check_dir`] opens every file and
//! checks it against its name (the hash) and its record: `doctor check`
//! reports what it finds without changing anything; the agent, at open,
//! moves a damaged file to `media/damaged/` (its record with it) and logs
//! it, as the outbox salvages a damaged database: the rest go on.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use dockline_protocol::media::{MediaAck, MediaHash, MediaState, MediaType};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::OutboxError;
use super::keys::{self, Keys, is_hex_digest};

/// The default size cap of one medium (`[media] max_bytes`).
pub const DEFAULT_MAX_MEDIA_BYTES: usize = 2 * 1024 * 1024;

/// `[media]`: what the agent takes from the handheld.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct MediaConfig {
    /// Largest image accepted, bytes (at most the protocol's
    /// [`dockline_protocol::media::MAX_MEDIA_BYTES`]).
    #[serde(default = "default_max_bytes")]
    pub max_bytes: usize,
}

fn default_max_bytes() -> usize {
    DEFAULT_MAX_MEDIA_BYTES
}

impl Default for MediaConfig {
    fn default() -> Self {
        Self {
            max_bytes: default_max_bytes(),
        }
    }
}

impl MediaConfig {
    /// Checks the cap against the protocol's.
    pub fn check(&self) -> Result<(), String> {
        let max = dockline_protocol::media::MAX_MEDIA_BYTES as usize;
        if self.max_bytes == 0 || self.max_bytes > max {
            return Err(format!(
                "media.max_bytes is {}, expected 1 to {max} (the protocol's limit)",
                self.max_bytes
            ));
        }
        Ok(())
    }
}

/// Where a medium stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Progress {
    /// On the agent, to be sent (or being sent: see `have`).
    Queued,
    /// Every byte is at the collector, hash checked.
    Stored,
    /// The ERP holds it.
    Attached {
        /// The ERP's document, if named.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        doc: Option<String>,
    },
    /// The collector will never store it.
    Refused {
        /// Why.
        reason: String,
    },
}

impl Progress {
    /// The state's name as the API shows it.
    pub fn name(&self) -> &'static str {
        match self {
            Progress::Queued => "queued",
            Progress::Stored => "stored",
            Progress::Attached { .. } => "attached",
            Progress::Refused { .. } => "refused",
        }
    }
}

/// What the agent knows of one medium.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaRecord {
    /// Its SHA-256, hex.
    pub hash: String,
    /// PNG or JPEG.
    pub media_type: MediaType,
    /// The image's size.
    pub bytes: u64,
    /// Where it stands.
    #[serde(flatten)]
    pub progress: Progress,
    /// Bytes the collector committed (the next upload starts there).
    #[serde(default)]
    pub have: u64,
    /// The highest sequence of an event that names it, once one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ref_seq: Option<u64>,
    /// When it was stored here (Unix ms).
    pub stored_ms: i64,
}

impl MediaRecord {
    /// The hash, parsed.
    pub fn media_hash(&self) -> Option<MediaHash> {
        MediaHash::parse_hex(&self.hash)
    }
}

/// Counts for `/v1/status` and the heartbeat.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct MediaTotals {
    /// Media held.
    pub held: u64,
    /// Their bytes (images, not sealed files).
    pub bytes: u64,
    /// Not yet at the collector.
    pub queued: u64,
    /// Bytes of those.
    pub queued_bytes: u64,
    /// At the collector.
    pub stored: u64,
    /// At the ERP.
    pub attached: u64,
    /// Refused by the collector.
    pub refused: u64,
}

/// Why a medium was not taken.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    /// Not a PNG or JPEG.
    #[error(
        "the body is not a PNG or JPEG image (its first bytes are neither signature); send the image file itself"
    )]
    NotAnImage,
    /// The declared type is not the one the bytes show.
    #[error("Content-Type says {declared} but the bytes are {found}; send the right type")]
    TypeMismatch {
        /// The header's type.
        declared: &'static str,
        /// The magic bytes' type.
        found: &'static str,
    },
    /// Larger than `[media] max_bytes`.
    #[error(
        "the image is {bytes} bytes, this agent takes at most {max} ([media] max_bytes); scale it down (a photo at 1600 px is ~300 KB)"
    )]
    TooLarge {
        /// Its size.
        bytes: usize,
        /// The cap.
        max: usize,
    },
    /// The path's hash is not the body's.
    #[error("the body's SHA-256 is {actual}, not {claimed}; PUT the image at its own hash")]
    HashMismatch {
        /// The path's hash.
        claimed: String,
        /// The body's.
        actual: String,
    },
    /// The idempotency key stored other bytes.
    #[error(
        "Idempotency-Key {key:?} was already used for another image ({first}); a retry must send the same bytes, a new image needs a new key"
    )]
    KeyReused {
        /// The key.
        key: String,
        /// The medium it stored.
        first: String,
    },
    /// The disk budget has no room.
    #[error(
        "no room for an image of {bytes} bytes: {held} bytes of events and media are held, the budget is {budget} bytes; media are never shed. Reconnect so the backlog drains, or raise [outbox] budget_bytes"
    )]
    Full {
        /// The image's size.
        bytes: u64,
        /// Bytes held.
        held: u64,
        /// The budget.
        budget: u64,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] OutboxError),
}

/// What [`check_dir`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MediaCheck {
    /// Media files that open, match their hash and have a record.
    pub ok: u64,
    /// Of those, not yet at the collector.
    pub queued: u64,
    /// Their bytes.
    pub queued_bytes: u64,
    /// Files that do not: `(hex, problem)`.
    pub damaged: Vec<(String, String)>,
    /// Sealed files without a record (adopted as queued at the next start).
    pub without_record: Vec<String>,
}

/// Checks every media file of `data_dir` with `keys` (none: the key file is
/// missing, so sealed files count as damaged), changing nothing.
pub fn check_dir(data_dir: &Path, keys: Option<&Keys>) -> Result<MediaCheck, OutboxError> {
    let dir = dir_in(data_dir);
    let mut report = MediaCheck::default();
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(report),
        Err(e) => return Err(io(&dir)(e)),
    };
    let mut names: Vec<String> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| is_hex_digest(n))
        .collect();
    names.sort();
    for hex in names {
        match check_file(&dir, &hex, keys) {
            Ok(Some(record)) => {
                report.ok += 1;
                if record.progress == Progress::Queued {
                    report.queued += 1;
                    report.queued_bytes += record.bytes;
                }
            }
            Ok(None) => report.without_record.push(hex),
            Err(problem) => report.damaged.push((hex, problem)),
        }
    }
    Ok(report)
}

/// One file: its record when it is whole (`None`: whole, no record).
fn check_file(dir: &Path, hex: &str, keys: Option<&Keys>) -> Result<Option<MediaRecord>, String> {
    let stored = std::fs::read(dir.join(hex)).map_err(|e| format!("cannot read: {e}"))?;
    let plain = keys::open_with(keys, hex.as_bytes(), &stored)?;
    let (code, image) = plain
        .split_first()
        .ok_or_else(|| "empty file".to_string())?;
    let media_type = match code {
        1 => MediaType::Png,
        2 => MediaType::Jpeg,
        other => return Err(format!("unknown type byte {other}")),
    };
    let actual = hex_of(&Sha256::digest(image));
    if actual != hex {
        return Err(format!("the image hashes to {actual}, not its name"));
    }
    let record_path = dir.join(format!("{hex}.json"));
    let text = match std::fs::read(&record_path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read its record: {e}")),
    };
    let record: MediaRecord =
        serde_json::from_slice(&text).map_err(|e| format!("its record is damaged: {e}"))?;
    if record.hash != hex || record.bytes != image.len() as u64 || record.media_type != media_type {
        return Err("its record names another image".into());
    }
    Ok(Some(record))
}

/// The answer to a stored medium.
#[derive(Debug, Clone)]
pub struct Put {
    /// Stored by this call (false: held already, or a replayed key).
    pub new: bool,
    /// Answered from an earlier request with the same key.
    pub replayed: bool,
    /// The record.
    pub record: MediaRecord,
}

/// The media folder and the key that seals its files.
pub struct MediaStore {
    dir: PathBuf,
    keys: Keys,
    max_bytes: usize,
    // Record read-modify-writes (acks, references, puts) one at a time.
    lock: Mutex<()>,
}

impl std::fmt::Debug for MediaStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MediaStore")
            .field("dir", &self.dir)
            .field("max_bytes", &self.max_bytes)
            .finish()
    }
}

/// The media folder of a data folder.
pub fn dir_in(data_dir: &Path) -> PathBuf {
    data_dir.join(keys::MEDIA_DIR)
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn type_code(t: MediaType) -> u8 {
    match t {
        MediaType::Png => 1,
        MediaType::Jpeg => 2,
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> OutboxError + '_ {
    move |source| OutboxError::DataDir {
        path: path.to_path_buf(),
        source,
    }
}

impl MediaStore {
    /// Opens (making it 0700) the media folder of `data_dir`, sealing with
    /// the outbox's key file there, and adopts sealed files that lost their
    /// record.
    pub fn open(data_dir: &Path, config: &MediaConfig) -> Result<Self, OutboxError> {
        let dir = dir_in(data_dir);
        keys::private_dir(&dir)?;
        let store = Self {
            dir,
            keys: Keys::load_or_create(data_dir)?,
            max_bytes: config.max_bytes,
            lock: Mutex::new(()),
        };
        store.quarantine_damaged(data_dir)?;
        store.adopt_orphans()?;
        Ok(store)
    }

    /// Moves damaged media files (and their records) to `media/damaged/`,
    /// logging each: the others go on being sent.
    fn quarantine_damaged(&self, data_dir: &Path) -> Result<(), OutboxError> {
        let report = check_dir(data_dir, Some(&self.keys))?;
        if report.damaged.is_empty() {
            return Ok(());
        }
        let aside = self.dir.join("damaged");
        keys::private_dir(&aside)?;
        for (hex, problem) in &report.damaged {
            for name in [hex.clone(), format!("{hex}.json")] {
                let from = self.dir.join(&name);
                if from.exists() {
                    std::fs::rename(&from, aside.join(&name)).map_err(io(&from))?;
                }
            }
            tracing::error!(media = %hex, %problem, moved_to = %aside.display(), "a damaged medium was moved aside; it will not be sent");
        }
        Ok(())
    }

    /// The size cap.
    pub fn max_bytes(&self) -> usize {
        self.max_bytes
    }

    fn record_path(&self, hex: &str) -> PathBuf {
        self.dir.join(format!("{hex}.json"))
    }

    fn guard(&self) -> std::sync::MutexGuard<'_, ()> {
        // A poisoned lock only means another thread panicked mid-write; the
        // files are replaced atomically, so they are whole either way.
        self.lock.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Checks `bytes` (type, cap, the claimed hash) and stores them; see
    /// the module docs. `held` is the bytes the outbox and the queued media
    /// hold, `budget` the disk budget they share.
    pub fn put(
        &self,
        bytes: &[u8],
        declared: Option<MediaType>,
        claimed: Option<&str>,
        key: Option<&str>,
        (held, budget): (u64, u64),
    ) -> Result<Put, MediaError> {
        let found = MediaType::from_magic(bytes).ok_or(MediaError::NotAnImage)?;
        if let Some(d) = declared
            && d != found
        {
            return Err(MediaError::TypeMismatch {
                declared: d.content_type(),
                found: found.content_type(),
            });
        }
        if bytes.len() > self.max_bytes {
            return Err(MediaError::TooLarge {
                bytes: bytes.len(),
                max: self.max_bytes,
            });
        }
        let digest = hex_of(&Sha256::digest(bytes));
        if let Some(claimed) = claimed
            && claimed != digest
        {
            return Err(MediaError::HashMismatch {
                claimed: claimed.into(),
                actual: digest,
            });
        }
        let _g = self.guard();
        let key_path = key.map(|k| self.dir.join(format!("key-{}", hex_of(&Sha256::digest(k)))));
        if let (Some(k), Some(path)) = (key, &key_path)
            && let Ok(first) = std::fs::read_to_string(path)
        {
            let first = first.trim().to_string();
            if first != digest {
                return Err(MediaError::KeyReused {
                    key: k.into(),
                    first,
                });
            }
            if let Some(record) = self.record(&first)? {
                return Ok(Put {
                    new: false,
                    replayed: true,
                    record,
                });
            }
        }
        if let Some(record) = self.record(&digest)? {
            return Ok(Put {
                new: false,
                replayed: false,
                record,
            });
        }
        if held.saturating_add(bytes.len() as u64) > budget {
            return Err(MediaError::Full {
                bytes: bytes.len() as u64,
                held,
                budget,
            });
        }
        let mut plain = Vec::with_capacity(bytes.len() + 1);
        plain.push(type_code(found));
        plain.extend_from_slice(bytes);
        let sealed = self.keys.seal(digest.as_bytes(), &plain)?;
        keys::write_private(&self.dir.join(&digest), &sealed)?;
        let record = MediaRecord {
            hash: digest.clone(),
            media_type: found,
            bytes: bytes.len() as u64,
            progress: Progress::Queued,
            have: 0,
            ref_seq: None,
            stored_ms: now_ms(),
        };
        self.write_record(&record)?;
        if let Some(path) = &key_path {
            keys::write_private(path, digest.as_bytes())?;
        }
        Ok(Put {
            new: true,
            replayed: false,
            record,
        })
    }

    fn write_record(&self, record: &MediaRecord) -> Result<(), OutboxError> {
        let json = serde_json::to_vec(record)
            .map_err(|e| OutboxError::Invalid(format!("cannot encode a media record: {e}")))?;
        keys::write_private(&self.record_path(&record.hash), &json)
    }

    /// The record of `hex`, if held.
    pub fn record(&self, hex: &str) -> Result<Option<MediaRecord>, OutboxError> {
        if !is_hex_digest(hex) {
            return Ok(None);
        }
        let path = self.record_path(hex);
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(&path)(e)),
        };
        serde_json::from_slice(&text).map(Some).map_err(|e| {
            OutboxError::Invalid(format!(
                "media record {} is damaged ({e}); run `dockline-agent doctor check`",
                path.display()
            ))
        })
    }

    /// The image and its type.
    pub fn get(&self, hex: &str) -> Result<Option<(MediaType, Vec<u8>)>, String> {
        if !is_hex_digest(hex) {
            return Ok(None);
        }
        let stored = match std::fs::read(self.dir.join(hex)) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.to_string()),
        };
        let plain = self.keys.open(hex.as_bytes(), &stored)?;
        match plain.split_first() {
            Some((1, body)) => Ok(Some((MediaType::Png, body.to_vec()))),
            Some((2, body)) => Ok(Some((MediaType::Jpeg, body.to_vec()))),
            _ => Err("unknown media type byte".into()),
        }
    }

    /// Every record, oldest first.
    pub fn list(&self) -> Result<Vec<MediaRecord>, OutboxError> {
        let mut out = Vec::new();
        for hex in self.names()? {
            if let Some(r) = self.record(&hex)? {
                out.push(r);
            }
        }
        out.sort_by(|a, b| (a.stored_ms, &a.hash).cmp(&(b.stored_ms, &b.hash)));
        Ok(out)
    }

    /// The names of the sealed files.
    fn names(&self) -> Result<Vec<String>, OutboxError> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.dir).map_err(io(&self.dir))? {
            let entry = entry.map_err(io(&self.dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if is_hex_digest(&name) {
                out.push(name);
            }
        }
        Ok(out)
    }

    /// A sealed file whose record is missing (crash between the writes, or
    /// a folder from before records) becomes a queued medium again.
    fn adopt_orphans(&self) -> Result<(), OutboxError> {
        for hex in self.names()? {
            if self.record_path(&hex).exists() {
                continue;
            }
            match self.get(&hex) {
                Ok(Some((media_type, bytes))) => self.write_record(&MediaRecord {
                    hash: hex.clone(),
                    media_type,
                    bytes: bytes.len() as u64,
                    progress: Progress::Queued,
                    have: 0,
                    ref_seq: None,
                    stored_ms: now_ms(),
                })?,
                Ok(None) => {}
                Err(why) => {
                    tracing::error!(media = %hex, error = %why, "media file cannot be opened; left for `doctor`")
                }
            }
        }
        Ok(())
    }

    /// An event with sequence `seq` names `hex`: the medium waits for that
    /// event to be stored before it is sent. Unknown media are ignored (the
    /// app may post the event first; the medium is then sent once no
    /// business event is queued).
    pub fn note_reference(&self, hex: &str, seq: u64) -> Result<(), OutboxError> {
        let _g = self.guard();
        if let Some(mut r) = self.record(hex)?
            && r.ref_seq.is_none_or(|s| s < seq)
        {
            r.ref_seq = Some(seq);
            self.write_record(&r)?;
        }
        Ok(())
    }

    /// Applies the collector's ack; returns the record when it changed.
    pub fn apply_ack(&self, ack: &MediaAck) -> Result<Option<MediaRecord>, OutboxError> {
        let _g = self.guard();
        let hex = ack.hash.to_string();
        let Some(mut r) = self.record(&hex)? else {
            return Ok(None);
        };
        let progress = match &ack.state {
            MediaState::Receiving => Progress::Queued,
            MediaState::Stored => Progress::Stored,
            MediaState::Attached { doc } => Progress::Attached { doc: doc.clone() },
            MediaState::Refused { reason } => Progress::Refused {
                reason: reason.clone(),
            },
        };
        // A state never goes back from the ERP's to the collector's (a late
        // `receiving` after `stored` is a stale ack).
        let rank = |p: &Progress| match p {
            Progress::Queued => 0,
            Progress::Stored => 1,
            Progress::Attached { .. } | Progress::Refused { .. } => 2,
        };
        if rank(&progress) < rank(&r.progress) {
            return Ok(None);
        }
        let have = ack.have.min(r.bytes);
        if progress == r.progress && have == r.have {
            return Ok(None);
        }
        r.progress = progress;
        r.have = have;
        self.write_record(&r)?;
        Ok(Some(r))
    }

    /// The oldest queued medium whose events are stored: every referencing
    /// sequence at or below `acked_up_to`, or none referencing it and
    /// `business_queued` false.
    pub fn next_to_send(
        &self,
        acked_up_to: u64,
        business_queued: bool,
    ) -> Result<Option<MediaRecord>, OutboxError> {
        Ok(self.list()?.into_iter().find(|r| {
            r.progress == Progress::Queued
                && match r.ref_seq {
                    Some(seq) => seq <= acked_up_to,
                    None => !business_queued,
                }
        }))
    }

    /// Counts and bytes per state.
    pub fn totals(&self) -> Result<MediaTotals, OutboxError> {
        let mut t = MediaTotals::default();
        for r in self.list()? {
            t.held += 1;
            t.bytes += r.bytes;
            match r.progress {
                Progress::Queued => {
                    t.queued += 1;
                    t.queued_bytes += r.bytes;
                }
                Progress::Stored => t.stored += 1,
                Progress::Attached { .. } => t.attached += 1,
                Progress::Refused { .. } => t.refused += 1,
            }
        }
        Ok(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOM: (u64, u64) = (0, u64::MAX);

    fn png(marker: &[u8]) -> Vec<u8> {
        let mut b = b"\x89PNG\r\n\x1a\n".to_vec();
        b.extend_from_slice(marker);
        b
    }

    fn store(dir: &Path) -> MediaStore {
        MediaStore::open(dir, &MediaConfig { max_bytes: 1000 }).expect("open")
    }

    #[test]
    fn put_checks_type_size_hash_and_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = store(dir.path());
        let img = png(b"sig");
        assert!(matches!(
            s.put(b"GIF89a", None, None, None, ROOM),
            Err(MediaError::NotAnImage)
        ));
        assert!(matches!(
            s.put(&img, Some(MediaType::Jpeg), None, None, ROOM),
            Err(MediaError::TypeMismatch { .. })
        ));
        assert!(matches!(
            s.put(&png(&[0; 1000]), None, None, None, ROOM),
            Err(MediaError::TooLarge { max: 1000, .. })
        ));
        assert!(matches!(
            s.put(&img, None, Some(&"0".repeat(64)), None, ROOM),
            Err(MediaError::HashMismatch { .. })
        ));
        assert!(matches!(
            s.put(&img, None, None, None, (0, 3)),
            Err(MediaError::Full { .. })
        ));
        let first = s.put(&img, None, None, Some("k1"), ROOM).expect("put");
        assert!(first.new && !first.replayed);
        let again = s.put(&img, None, None, Some("k1"), (0, 0)).expect("replay");
        assert!(!again.new && again.replayed, "replays need no room");
        assert_eq!(again.record, first.record);
        assert!(matches!(
            s.put(&png(b"other"), None, None, Some("k1"), ROOM),
            Err(MediaError::KeyReused { .. })
        ));
        let held = s.put(&img, None, None, None, (0, 0)).expect("held");
        assert!(!held.new && !held.replayed);
        assert_eq!(s.totals().expect("totals").queued, 1);
    }

    #[test]
    fn media_wait_for_their_events_and_follow_the_collectors_acks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = store(dir.path());
        let a = s.put(&png(b"a"), None, None, None, ROOM).expect("a").record;
        let b = s.put(&png(b"b"), None, None, None, ROOM).expect("b").record;
        s.note_reference(&a.hash, 7).expect("ref");
        s.note_reference(&b.hash, 3).expect("ref");
        assert_eq!(s.next_to_send(2, true).expect("next"), None);
        let next = s.next_to_send(3, true).expect("next").expect("b is due");
        assert_eq!(next.hash, b.hash);
        let hash = b.media_hash().expect("hash");
        let ack = |have, state| MediaAck {
            v: 1,
            device: dockline_protocol::DeviceId::new("d").expect("id"),
            hash,
            have,
            at: None,
            state,
            signed: None,
        };
        let r = s
            .apply_ack(&ack(4, MediaState::Receiving))
            .expect("ack")
            .expect("changed");
        assert_eq!((r.have, r.progress.name()), (4, "queued"));
        s.apply_ack(&ack(b.bytes, MediaState::Stored)).expect("ack");
        assert_eq!(
            s.apply_ack(&ack(0, MediaState::Receiving)).expect("ack"),
            None,
            "a stale ack does not move a stored medium back"
        );
        s.apply_ack(&ack(
            b.bytes,
            MediaState::Attached {
                doc: Some("SHP-1".into()),
            },
        ))
        .expect("ack");
        let t = s.totals().expect("totals");
        assert_eq!((t.queued, t.attached), (1, 1));
        assert_eq!(
            s.next_to_send(10, true).expect("next").map(|r| r.hash),
            Some(a.hash)
        );
    }

    #[test]
    fn damaged_media_are_reported_and_moved_aside_at_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (good, bad) = {
            let s = store(dir.path());
            let good = s
                .put(&png(b"good"), None, None, None, ROOM)
                .expect("put")
                .record;
            let bad = s
                .put(&png(b"bad"), None, None, None, ROOM)
                .expect("put")
                .record;
            (good.hash, bad.hash)
        };
        let file = dir_in(dir.path()).join(&bad);
        let mut bytes = std::fs::read(&file).expect("read");
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&file, bytes).expect("write");
        let keys = Keys::load_or_create(dir.path()).expect("keys");
        let report = check_dir(dir.path(), Some(&keys)).expect("check");
        assert_eq!(report.ok, 1);
        assert_eq!(report.damaged.len(), 1);
        assert_eq!(report.damaged[0].0, bad);
        assert!(file.exists(), "the check changes nothing");
        let s = store(dir.path());
        assert!(!file.exists());
        assert!(dir_in(dir.path()).join("damaged").join(&bad).exists());
        assert_eq!(s.list().expect("list").len(), 1);
        assert_eq!(s.list().expect("list")[0].hash, good);
        assert!(
            check_dir(dir.path(), None).expect("check").damaged.len() == 1,
            "sealed without the key"
        );
    }

    #[test]
    fn a_sealed_file_without_its_record_is_adopted_at_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let hex = {
            let s = store(dir.path());
            let r = s
                .put(&png(b"x"), None, None, None, ROOM)
                .expect("put")
                .record;
            std::fs::remove_file(s.record_path(&r.hash)).expect("rm");
            r.hash
        };
        let s = store(dir.path());
        let r = s.record(&hex).expect("record").expect("adopted");
        assert_eq!((r.progress, r.bytes), (Progress::Queued, 9));
        // With no event naming it, it goes once the business queue is empty.
        assert!(s.next_to_send(0, true).expect("next").is_none());
        assert!(s.next_to_send(0, false).expect("next").is_some());
    }
}
