//! Proof-of-delivery media (signatures, photos) on the wire: chunks from the
//! agent on `dockline/v1/{site}/{device}/media`, the collector's progress on
//! `dockline/v1/{site}/{device}/media_ack`, and [`Reassembly`], the sans-I/O
//! state machine a collector runs per medium.
//!
//! # The contract
//!
//! 1. **Addressed by hash.** A medium is an image (PNG or JPEG, told by its
//!    magic bytes: [`MediaType::from_magic`]) named by the SHA-256 of its
//!    bytes ([`MediaHash`]). An event refers to it as `sha256:<hex>`
//!    ([`MediaHash::parse_ref`]) in `signature_ref` or `photo_ref`. The same
//!    bytes are the same medium, whoever sends them.
//! 2. **Chunks.** The agent publishes [`MediaChunk`]s, QoS 1, in offset
//!    order: each repeats the header (hash, type, total length `len`) and
//!    carries `data` (1 to [`MAX_CHUNK_BYTES`] bytes; the agent's default is
//!    [`DEFAULT_CHUNK_BYTES`]) at offset `off`, with `off + data.len() <=
//!    len <= MAX_MEDIA_BYTES`. A decoder refuses anything else (a counted,
//!    named refusal; the message is acknowledged at the MQTT level and
//!    dropped).
//! 3. **Contiguous prefix.** The collector keeps, per medium, the bytes
//!    `0..have` it has committed. [`Reassembly::offer`] takes a chunk only
//!    when it starts exactly at `have`; a chunk wholly inside the prefix is
//!    a duplicate, one that starts beyond it (a lost chunk before it) or
//!    straddles it (an overlap) is not stored. Nothing is ever written
//!    twice or out of place.
//! 4. **Every chunk is answered** with a [`MediaAck`] carrying `have` and
//!    the chunk's offset `at`, sent only after the bytes up to `have` are
//!    committed: a chunk not taken (`have` below its end) makes the agent
//!    rewind to `have` at once, without waiting for a timeout; the agent resumes
//!    from that offset after a lost chunk, a reconnect, or a kill of either
//!    side (the collector rebuilds its state with [`Reassembly::resume`]
//!    from the stored prefix). An agent without an answer resends from the
//!    last `have` it was told, so at most the chunks in flight cross twice.
//! 5. **Verified at the end.** When `have` reaches `len` the SHA-256 of the
//!    whole is checked: a match acks [`MediaState::Stored`]; a mismatch
//!    discards the bytes (the reassembly starts over at 0) and acks
//!    `Receiving` with `have: 0`, so the agent sends again from the start.
//! 6. **Signed like batch acks.** A collector with a signing key adds `sg`
//!    to every media ack: the ack's CBOR without `sg` and the Ed25519
//!    signature over [`MEDIA_ACK_SIGNING_CONTEXT`] and those bytes
//!    ([`MediaAck::seal`]; another context than batch acks and commands, so
//!    no signature is valid as another). An agent with a verify key acts
//!    only on the signed bytes ([`MediaAck::open`]), so a forged `Stored`
//!    cannot make it stop sending a medium the collector does not hold.
//! 7. **Later states** ride the same ack: [`MediaState::Attached`] once the
//!    ERP holds the medium (with its document), [`MediaState::Refused`] when
//!    the collector will never store it (too large for it, a type it does
//!    not take): the agent stops sending it and shows the reason.
//! 8. **Order with events.** The agent sends a medium only after the events
//!    that reference it are stored (acked), and media never hold events
//!    back: they have their own topic and their own pacing on the agent.
//!    A collector parks an event whose media have not all arrived.
//!
//! Both messages were added in v1 on new channels (old peers never
//! subscribe to them); the golden fixtures pin their bytes.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize, Serializer};
use sha2::{Digest, Sha256};

use crate::ack::AckRefusal;
use crate::codec::{EncodeError, WireMessage};
use crate::command::{SIGNATURE_BYTES, Signed};
use crate::ids::DeviceId;
use crate::validate::{self, MAX_TEXT_BYTES, ValidationError};

/// Largest medium the protocol carries (16 MiB); an agent's own cap is
/// lower (`[media] max_bytes`, 2 MiB by default), a collector may set one.
pub const MAX_MEDIA_BYTES: u64 = 16 << 20;

/// Largest `data` of one chunk (256 KiB), well inside the message cap.
pub const MAX_CHUNK_BYTES: usize = 256 << 10;

/// The agent's chunk size unless configured (64 KiB).
pub const DEFAULT_CHUNK_BYTES: usize = 64 << 10;

/// The SHA-256 of a medium's bytes: its name everywhere.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MediaHash(pub [u8; 32]);

impl MediaHash {
    /// The hash of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self(Sha256::digest(bytes).into())
    }

    /// Parses 64 lower-case hex digits.
    pub fn parse_hex(text: &str) -> Option<Self> {
        let bytes = text.as_bytes();
        if bytes.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, pair) in bytes.chunks_exact(2).enumerate() {
            let digit = |c: u8| match c {
                b'0'..=b'9' => Some(c - b'0'),
                b'a'..=b'f' => Some(c - b'a' + 10),
                _ => None,
            };
            out[i] = (digit(pair[0])? << 4) | digit(pair[1])?;
        }
        Some(Self(out))
    }

    /// Parses an event's reference `sha256:<64 lower-case hex digits>`.
    pub fn parse_ref(text: &str) -> Option<Self> {
        Self::parse_hex(text.strip_prefix("sha256:")?)
    }
}

impl fmt::Display for MediaHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for MediaHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MediaHash({self})")
    }
}

impl Serialize for MediaHash {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.collect_str(self)
        } else {
            s.serialize_bytes(&self.0)
        }
    }
}

impl<'de> Deserialize<'de> for MediaHash {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = MediaHash;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a 32-byte SHA-256 or its 64 hex digits")
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<MediaHash, E> {
                let arr: [u8; 32] = v.try_into().map_err(|_| {
                    E::custom(alloc::format!(
                        "media hash has {} bytes, a SHA-256 has 32",
                        v.len()
                    ))
                })?;
                Ok(MediaHash(arr))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<MediaHash, E> {
                MediaHash::parse_hex(v)
                    .ok_or_else(|| E::custom("media hash is not 64 lower-case hex digits"))
            }
        }
        if d.is_human_readable() {
            d.deserialize_str(V)
        } else {
            d.deserialize_bytes(V)
        }
    }
}

/// What kind of image a medium is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MediaType {
    /// A PNG (signatures).
    Png,
    /// A JPEG (photos).
    Jpeg,
}

impl MediaType {
    /// The type the first bytes show, if they are a PNG or JPEG signature.
    pub fn from_magic(bytes: &[u8]) -> Option<Self> {
        if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
            Some(Self::Png)
        } else if bytes.starts_with(&[0xff, 0xd8, 0xff]) {
            Some(Self::Jpeg)
        } else {
            None
        }
    }

    /// The HTTP content type.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Png => "image/png",
            Self::Jpeg => "image/jpeg",
        }
    }
}

/// One piece of a medium, agent → collector, on the `media` channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaChunk {
    /// Protocol version.
    pub v: u16,
    /// Sending device.
    #[serde(rename = "dev")]
    pub device: DeviceId,
    /// The medium's SHA-256.
    #[serde(rename = "h")]
    pub hash: MediaHash,
    /// Its type.
    #[serde(rename = "ct")]
    pub media_type: MediaType,
    /// Its total length in bytes.
    pub len: u64,
    /// Where `data` starts in the medium.
    pub off: u64,
    /// The bytes `off..off + data.len()`.
    #[serde(with = "chunk_bytes")]
    pub data: Vec<u8>,
}

impl MediaChunk {
    /// Checks sizes and bounds (see the module docs, rule 2).
    pub fn validate(&self) -> Result<(), ValidationError> {
        let err = |field: &str, problem: String| ValidationError {
            field: field.into(),
            problem,
        };
        if self.len == 0 || self.len > MAX_MEDIA_BYTES {
            return Err(err(
                "len",
                alloc::format!("is {}, a medium is 1 to {MAX_MEDIA_BYTES} bytes", self.len),
            ));
        }
        if self.data.is_empty() || self.data.len() > MAX_CHUNK_BYTES {
            return Err(err(
                "data",
                alloc::format!(
                    "is {} bytes, a chunk carries 1 to {MAX_CHUNK_BYTES}",
                    self.data.len()
                ),
            ));
        }
        match self.off.checked_add(self.data.len() as u64) {
            Some(end) if end <= self.len => Ok(()),
            _ => Err(err(
                "off",
                alloc::format!(
                    "is {} with {} bytes of data, past the medium's length {}",
                    self.off,
                    self.data.len(),
                    self.len
                ),
            )),
        }
    }

    /// Where the chunk's data ends.
    pub fn end(&self) -> u64 {
        self.off.saturating_add(self.data.len() as u64)
    }
}

/// A chunk's data as one CBOR byte string. Decoded with
/// `deserialize_byte_buf`: ciborium's `deserialize_bytes` only takes byte
/// strings that fit its 4 KiB scratch buffer. The message cap bounds the
/// size before this runs; [`MediaChunk::validate`] bounds it again.
mod chunk_bytes {
    use alloc::vec::Vec;
    use core::fmt;
    use serde::de::{Error, Visitor};
    use serde::{Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(bytes)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        d.deserialize_byte_buf(BytesVisitor)
    }

    struct BytesVisitor;

    impl<'de> Visitor<'de> for BytesVisitor {
        type Value = Vec<u8>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a byte string")
        }

        fn visit_bytes<E: Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
            Ok(v.to_vec())
        }

        fn visit_byte_buf<E: Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(v)
        }
    }
}

/// What the collector holds of a medium.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MediaState {
    /// `have` bytes are stored; send from there.
    Receiving,
    /// Every byte is stored and the hash matched.
    Stored,
    /// The ERP holds the medium.
    Attached {
        /// The ERP's document it is attached to, if it names one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        doc: Option<String>,
    },
    /// The collector will never store it; the agent stops sending it.
    Refused {
        /// Why, for people.
        reason: String,
    },
}

impl MediaState {
    /// A short, stable name (`receiving`, `stored`, `attached`, `refused`).
    pub fn name(&self) -> &'static str {
        match self {
            Self::Receiving => "receiving",
            Self::Stored => "stored",
            Self::Attached { .. } => "attached",
            Self::Refused { .. } => "refused",
        }
    }
}

/// The collector's progress on one medium, on the `media_ack` channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaAck {
    /// Protocol version.
    pub v: u16,
    /// The device the ack is for.
    #[serde(rename = "dev")]
    pub device: DeviceId,
    /// The medium.
    #[serde(rename = "h")]
    pub hash: MediaHash,
    /// Bytes `0..have` are committed at the collector.
    pub have: u64,
    /// The offset of the chunk this ack answers (absent on an ack that
    /// answers no chunk: `attached`, `refused` sent later). A sender tells
    /// by it that a chunk was not taken (`have` below its end) and resumes
    /// from `have`; an answer to a chunk it no longer has in flight is stale.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<u64>,
    /// What the collector holds.
    #[serde(rename = "st")]
    pub state: MediaState,
    /// The collector's signature over this ack (module docs, rule 6).
    #[serde(rename = "sg", default, skip_serializing_if = "Option::is_none")]
    pub signed: Option<Signed>,
}

/// Prefix of every signed media ack's message (distinct from batch acks'
/// and commands').
pub const MEDIA_ACK_SIGNING_CONTEXT: &[u8] = b"dockline/v1/media_ack\0";

/// The message a media ack signature covers.
pub fn media_ack_signing_message(body: &[u8]) -> Vec<u8> {
    crate::ack::signing_message(MEDIA_ACK_SIGNING_CONTEXT, body)
}

impl crate::ack::SelfSigned for MediaAck {
    const CONTEXT: &'static [u8] = MEDIA_ACK_SIGNING_CONTEXT;
    const WHAT: &'static str = "media ack";
    fn signed_mut(&mut self) -> &mut Option<Signed> {
        &mut self.signed
    }
    fn signed(&self) -> Option<&Signed> {
        self.signed.as_ref()
    }
    fn device(&self) -> &DeviceId {
        &self.device
    }
}

impl MediaAck {
    /// This ack with `sg` added: `sign` signs [`MEDIA_ACK_SIGNING_CONTEXT`]
    /// plus the ack's bytes without `sg`.
    pub fn seal(
        &self,
        sign: impl FnOnce(&[u8]) -> [u8; SIGNATURE_BYTES],
    ) -> Result<MediaAck, EncodeError> {
        crate::ack::seal(self, sign)
    }

    /// The signed ack inside, if `verify` accepts its signature; the plain
    /// fields outside are ignored.
    pub fn open(
        &self,
        verify: impl FnOnce(&[u8], &[u8; SIGNATURE_BYTES]) -> bool,
    ) -> Result<MediaAck, AckRefusal> {
        crate::ack::open(self, verify)
    }

    /// Checks sizes (see the module docs).
    pub fn validate(&self) -> Result<(), ValidationError> {
        if let Some(at) = self.at {
            validate::wire_number("at", at)?;
        }
        if self.have > MAX_MEDIA_BYTES {
            return Err(ValidationError {
                field: "have".into(),
                problem: alloc::format!(
                    "is {}, above the largest medium ({MAX_MEDIA_BYTES} bytes)",
                    self.have
                ),
            });
        }
        match &self.state {
            MediaState::Attached { doc } => {
                validate::opt_text("st.attached.doc", doc, MAX_TEXT_BYTES)
            }
            MediaState::Refused { reason } => {
                validate::text("st.refused.reason", reason, MAX_TEXT_BYTES)
            }
            MediaState::Receiving | MediaState::Stored => Ok(()),
        }
    }
}

impl WireMessage for MediaChunk {
    const NAME: &'static str = "media chunk";
    fn version(&self) -> u16 {
        self.v
    }
    fn validate(&self) -> Result<(), ValidationError> {
        MediaChunk::validate(self)
    }
}

impl WireMessage for MediaAck {
    const NAME: &'static str = "media ack";
    fn version(&self) -> u16 {
        self.v
    }
    fn validate(&self) -> Result<(), ValidationError> {
        MediaAck::validate(self)
    }
}

/// What to do with an offered chunk.
#[derive(Debug, PartialEq, Eq)]
pub enum Offer<'a> {
    /// Commit `bytes` at offset `at` (the prefix's old end), then ack
    /// [`Reassembly::have`].
    Append {
        /// Where they go: always the prefix's end.
        at: u64,
        /// The chunk's data.
        bytes: &'a [u8],
    },
    /// `bytes` at `at` complete the medium and its SHA-256 matched: commit
    /// them, mark the medium stored and ack [`MediaState::Stored`].
    Complete {
        /// Where they go: always the prefix's end.
        at: u64,
        /// The chunk's data.
        bytes: &'a [u8],
    },
    /// Nothing to store; ack `have` again so the sender resumes from there.
    Ignored(Ignored),
}

/// Why an offered chunk was not stored (not an error: the ack tells the
/// sender where to resume).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ignored {
    /// Wholly inside the stored prefix (a resend).
    Duplicate,
    /// Starts beyond the prefix: a chunk before it was lost.
    Ahead,
    /// Starts inside the prefix and ends beyond it.
    Overlap,
}

/// A chunk that can never belong to this reassembly, or a failed check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReassemblyError {
    /// The chunk is of another medium.
    #[error("chunk is of medium {got}, this reassembly is of {expected}")]
    OtherMedium {
        /// The reassembly's medium.
        expected: MediaHash,
        /// The chunk's.
        got: MediaHash,
    },
    /// The chunk's type or total length differs from the medium's first.
    #[error(
        "chunk of {hash} says {got_type:?} of {got_len} bytes, the medium began as {expected_type:?} of {expected_len} bytes; the sender must send one medium one way"
    )]
    HeaderChanged {
        /// The medium.
        hash: MediaHash,
        /// Its type.
        expected_type: MediaType,
        /// Its length.
        expected_len: u64,
        /// The chunk's type.
        got_type: MediaType,
        /// The chunk's length.
        got_len: u64,
    },
    /// Larger than this collector takes.
    #[error("medium {hash} is {len} bytes, this collector takes at most {max}")]
    TooLarge {
        /// The medium.
        hash: MediaHash,
        /// Its length.
        len: u64,
        /// The cap.
        max: u64,
    },
    /// A stored prefix longer than the medium (a damaged store).
    #[error("stored prefix of {hash} is {have} bytes, the medium is only {len}")]
    PrefixTooLong {
        /// The medium.
        hash: MediaHash,
        /// The prefix's length.
        have: u64,
        /// The medium's.
        len: u64,
    },
    /// All bytes arrived but they are not the named medium: they are
    /// discarded and the reassembly starts over at 0.
    #[error(
        "the {len} bytes received for {expected} hash to {got}; discarded, the sender starts again from 0"
    )]
    HashMismatch {
        /// The name.
        expected: MediaHash,
        /// What the bytes hash to.
        got: MediaHash,
        /// How many bytes.
        len: u64,
    },
}

/// One medium being received: its header, how many bytes of it are
/// committed (`have`), and the running SHA-256 of those bytes. Methods only
/// change state; the caller commits the bytes each [`Offer`] names, in the
/// order given, before it acks.
#[derive(Clone)]
pub struct Reassembly {
    hash: MediaHash,
    media_type: MediaType,
    len: u64,
    have: u64,
    hasher: Sha256,
}

impl fmt::Debug for Reassembly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reassembly")
            .field("hash", &self.hash)
            .field("media_type", &self.media_type)
            .field("len", &self.len)
            .field("have", &self.have)
            .finish()
    }
}

impl Reassembly {
    /// A new reassembly for the medium `chunk` is a piece of (any piece:
    /// the first to arrive need not be at offset 0), taking media of at
    /// most `max_len` bytes.
    pub fn start(chunk: &MediaChunk, max_len: u64) -> Result<Self, ReassemblyError> {
        Self::resume(chunk.hash, chunk.media_type, chunk.len, &[], max_len)
    }

    /// The reassembly of a medium whose first `prefix.len()` bytes are
    /// committed (a collector restarting). A complete prefix is checked
    /// against the hash.
    pub fn resume(
        hash: MediaHash,
        media_type: MediaType,
        len: u64,
        prefix: &[u8],
        max_len: u64,
    ) -> Result<Self, ReassemblyError> {
        let max = max_len.min(MAX_MEDIA_BYTES);
        if len > max {
            return Err(ReassemblyError::TooLarge { hash, len, max });
        }
        let have = prefix.len() as u64;
        if have > len {
            return Err(ReassemblyError::PrefixTooLong { hash, have, len });
        }
        let mut r = Self {
            hash,
            media_type,
            len,
            have,
            hasher: Sha256::new(),
        };
        r.hasher.update(prefix);
        if have == len {
            r.verify()?;
        }
        Ok(r)
    }

    /// Offers a (decoded, so validated) chunk; see the module docs, rule 3.
    pub fn offer<'a>(&mut self, chunk: &'a MediaChunk) -> Result<Offer<'a>, ReassemblyError> {
        if chunk.hash != self.hash {
            return Err(ReassemblyError::OtherMedium {
                expected: self.hash,
                got: chunk.hash,
            });
        }
        if chunk.media_type != self.media_type || chunk.len != self.len {
            return Err(ReassemblyError::HeaderChanged {
                hash: self.hash,
                expected_type: self.media_type,
                expected_len: self.len,
                got_type: chunk.media_type,
                got_len: chunk.len,
            });
        }
        let end = chunk.end();
        if end <= self.have {
            return Ok(Offer::Ignored(Ignored::Duplicate));
        }
        if chunk.off > self.have {
            return Ok(Offer::Ignored(Ignored::Ahead));
        }
        if chunk.off < self.have {
            return Ok(Offer::Ignored(Ignored::Overlap));
        }
        // `end <= len` holds for a validated chunk; a hand-built one is
        // bounded here so `have` never passes `len`.
        if end > self.len {
            return Ok(Offer::Ignored(Ignored::Overlap));
        }
        let at = self.have;
        self.hasher.update(&chunk.data);
        self.have = end;
        if self.have < self.len {
            return Ok(Offer::Append {
                at,
                bytes: &chunk.data,
            });
        }
        self.verify()?;
        Ok(Offer::Complete {
            at,
            bytes: &chunk.data,
        })
    }

    /// Checks the complete bytes' hash; on a mismatch starts over at 0.
    fn verify(&mut self) -> Result<(), ReassemblyError> {
        let got = MediaHash(self.hasher.clone().finalize().into());
        if got == self.hash {
            return Ok(());
        }
        self.have = 0;
        self.hasher = Sha256::new();
        Err(ReassemblyError::HashMismatch {
            expected: self.hash,
            got,
            len: self.len,
        })
    }

    /// Bytes committed (the contiguous prefix).
    pub fn have(&self) -> u64 {
        self.have
    }

    /// The medium's total length.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether nothing is committed yet.
    pub fn is_empty(&self) -> bool {
        self.have == 0
    }

    /// Whether every byte is committed and the hash matched.
    pub fn is_complete(&self) -> bool {
        self.have == self.len
    }

    /// The medium's hash.
    pub fn hash(&self) -> MediaHash {
        self.hash
    }

    /// The medium's type.
    pub fn media_type(&self) -> MediaType {
        self.media_type
    }

    /// The ack to send for the current state (`Stored` when complete,
    /// `Receiving` with `have` otherwise), answering the chunk at `at`.
    pub fn ack(&self, device: DeviceId, at: Option<u64>) -> MediaAck {
        MediaAck {
            v: crate::PROTOCOL_VERSION,
            device,
            hash: self.hash,
            have: self.have,
            at,
            state: if self.is_complete() {
                MediaState::Stored
            } else {
                MediaState::Receiving
            },
            signed: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;
    use alloc::vec;

    fn chunk(data: &[u8], off: usize, n: usize) -> MediaChunk {
        MediaChunk {
            v: crate::PROTOCOL_VERSION,
            device: DeviceId::new("hh-07").expect("id"),
            hash: MediaHash::of(data),
            media_type: MediaType::Png,
            len: data.len() as u64,
            off: off as u64,
            data: data[off..off + n].to_vec(),
        }
    }

    #[test]
    fn hashes_print_and_parse_as_hex_and_refs() {
        let h = MediaHash::of(b"abc");
        let hex = h.to_string();
        assert_eq!(
            hex,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(MediaHash::parse_hex(&hex), Some(h));
        assert_eq!(
            MediaHash::parse_ref(&alloc::format!("sha256:{hex}")),
            Some(h)
        );
        assert_eq!(MediaHash::parse_hex(&hex.to_uppercase()), None);
        assert_eq!(MediaHash::parse_hex(&hex[1..]), None);
        assert_eq!(MediaHash::parse_ref(&hex), None);
    }

    #[test]
    fn magic_bytes_tell_the_type() {
        assert_eq!(
            MediaType::from_magic(b"\x89PNG\r\n\x1a\nrest"),
            Some(MediaType::Png)
        );
        assert_eq!(
            MediaType::from_magic(&[0xff, 0xd8, 0xff, 0xe0]),
            Some(MediaType::Jpeg)
        );
        assert_eq!(MediaType::from_magic(b"GIF89a"), None);
        assert_eq!(MediaType::from_magic(b"\x89PN"), None);
    }

    #[test]
    fn only_the_chunk_at_the_prefix_end_is_taken() {
        let data: Vec<u8> = (0..100u8).collect();
        let mut r = Reassembly::start(&chunk(&data, 40, 10), 1000).expect("start");
        assert_eq!(
            r.offer(&chunk(&data, 40, 10)),
            Ok(Offer::Ignored(Ignored::Ahead))
        );
        assert!(matches!(
            r.offer(&chunk(&data, 0, 40)),
            Ok(Offer::Append { at: 0, .. })
        ));
        assert_eq!(
            r.offer(&chunk(&data, 0, 10)),
            Ok(Offer::Ignored(Ignored::Duplicate))
        );
        assert_eq!(
            r.offer(&chunk(&data, 30, 20)),
            Ok(Offer::Ignored(Ignored::Overlap))
        );
        assert_eq!(r.have(), 40);
        assert!(matches!(
            r.offer(&chunk(&data, 40, 60)),
            Ok(Offer::Complete { at: 40, .. })
        ));
        assert!(r.is_complete());
        assert_eq!(
            r.ack(DeviceId::new("d").expect("id"), None).state,
            MediaState::Stored
        );
    }

    #[test]
    fn wrong_bytes_are_discarded_at_the_end() {
        let data = vec![7u8; 64];
        let mut r = Reassembly::start(&chunk(&data, 0, 32), 1000).expect("start");
        let mut bad = chunk(&data, 32, 32);
        bad.data[5] ^= 1;
        assert!(r.offer(&chunk(&data, 0, 32)).is_ok());
        assert!(matches!(
            r.offer(&bad),
            Err(ReassemblyError::HashMismatch { .. })
        ));
        assert_eq!(r.have(), 0, "starts over");
        assert!(matches!(
            r.offer(&chunk(&data, 0, 64)),
            Ok(Offer::Complete { at: 0, .. })
        ));
    }

    #[test]
    fn headers_and_caps_are_enforced() {
        let data = vec![1u8; 50];
        let c = chunk(&data, 0, 10);
        assert!(matches!(
            Reassembly::start(&c, 49),
            Err(ReassemblyError::TooLarge { max: 49, .. })
        ));
        let mut r = Reassembly::start(&c, 50).expect("start");
        let mut other = c.clone();
        other.len = 60;
        assert!(matches!(
            r.offer(&other),
            Err(ReassemblyError::HeaderChanged { .. })
        ));
        let mut other = c.clone();
        other.hash = MediaHash([0; 32]);
        assert!(matches!(
            r.offer(&other),
            Err(ReassemblyError::OtherMedium { .. })
        ));
        assert!(matches!(
            Reassembly::resume(c.hash, c.media_type, 50, &[0; 51], 100),
            Err(ReassemblyError::PrefixTooLong { .. })
        ));
    }
}
