//! CBOR encoding and decoding of wire messages.
//!
//! Decoding takes bytes from the network, so it is defensive: the input size is
//! capped before parsing, nesting is capped by ciborium's recursion limit, the
//! protocol version is checked, and every message is validated (id rules, text
//! lengths, batch order) before it is returned. Nothing here panics on input.
//!
//! Batches, the one message a collector decodes by the thousand, are read
//! first by a direct decoder of the subset agents send ([`fast`]); whatever
//! it does not read goes to the serde decoder, which alone refuses. Both
//! give the same value for the bytes the direct one reads, and validation
//! runs after either.

mod fast;

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::ops::Range;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::envelope::{ENVELOPE_FIELDS, PREFIX_FIELDS, Prefix, TAIL_FIELDS, Tail};
use crate::validate::ValidationError;
use crate::{
    Ack, Batch, DeviceId, Envelope, EventId, PROTOCOL_VERSION, Payload, Priority, Status,
    TimeSource,
};

/// Largest message accepted from the wire (1 MiB).
pub const MAX_MESSAGE_BYTES: usize = 1 << 20;

/// Deepest nesting accepted; the deepest real message nests about 8 levels.
const MAX_NESTING: usize = 32;

/// A message type that travels on a dockline topic.
pub trait WireMessage: Serialize + DeserializeOwned {
    /// Name used in error messages ("batch", "ack", "status").
    const NAME: &'static str;
    /// The protocol version carried by the message.
    fn version(&self) -> u16;
    /// Checks the protocol's rules beyond the CBOR shape.
    fn validate(&self) -> Result<(), ValidationError>;
    /// A direct decoding of `bytes`, or `None` to use the serde decoder
    /// (see the module docs): never a value serde would not give.
    fn decode_direct(_bytes: &[u8]) -> Option<Self> {
        None
    }
}

impl WireMessage for Batch {
    const NAME: &'static str = "batch";
    fn version(&self) -> u16 {
        self.v
    }
    fn validate(&self) -> Result<(), ValidationError> {
        Batch::validate(self)
    }
    fn decode_direct(bytes: &[u8]) -> Option<Self> {
        fast::batch(bytes).map(|(batch, _)| batch)
    }
}

impl WireMessage for Envelope {
    const NAME: &'static str = "envelope";
    fn version(&self) -> u16 {
        self.v
    }
    fn validate(&self) -> Result<(), ValidationError> {
        Envelope::validate(self).map_err(|err| err.under("envelope"))
    }
}

impl WireMessage for Ack {
    const NAME: &'static str = "ack";
    fn version(&self) -> u16 {
        self.v
    }
    fn validate(&self) -> Result<(), ValidationError> {
        Ack::validate(self)
    }
}

impl WireMessage for crate::Command {
    const NAME: &'static str = "command";
    fn version(&self) -> u16 {
        self.v
    }
    fn validate(&self) -> Result<(), ValidationError> {
        crate::Command::validate(self)
    }
}

impl WireMessage for Status {
    const NAME: &'static str = "status";
    fn version(&self) -> u16 {
        self.v
    }
    fn validate(&self) -> Result<(), ValidationError> {
        Status::validate(self)
    }
}

/// Encoding failed (only possible for a writer error, which `Vec` never gives,
/// or a value serde cannot express).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("could not encode {what} as CBOR: {message}")]
pub struct EncodeError {
    what: &'static str,
    message: String,
}

/// Bytes from the wire could not be turned into a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Larger than [`MAX_MESSAGE_BYTES`].
    #[error(
        "{what} of {len} bytes is larger than the {max}-byte limit; split it into smaller batches"
    )]
    TooLarge {
        /// Message type.
        what: &'static str,
        /// Its size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Not CBOR of the expected shape.
    #[error(
        "{what} is not valid dockline CBOR ({message}); is the sender speaking protocol v{PROTOCOL_VERSION}?"
    )]
    Cbor {
        /// Message type.
        what: &'static str,
        /// The decoder's complaint.
        message: String,
    },
    /// A protocol version this build does not speak.
    #[error(
        "{what} has protocol version {got}, this build speaks v{PROTOCOL_VERSION}; upgrade the older side"
    )]
    Version {
        /// Message type.
        what: &'static str,
        /// The version it carried.
        got: u16,
    },
    /// Well-formed but breaks a protocol rule.
    #[error("{what} is invalid: {error}")]
    Invalid {
        /// Message type.
        what: &'static str,
        /// The broken rule.
        error: ValidationError,
    },
}

/// Encodes a message as CBOR.
pub fn encode<T: WireMessage>(message: &T) -> Result<Vec<u8>, EncodeError> {
    let mut out = Vec::with_capacity(256);
    ciborium::into_writer(message, &mut out).map_err(|e| EncodeError {
        what: T::NAME,
        message: format!("{e:?}"),
    })?;
    Ok(out)
}

// An envelope in three parts, so an outbox can encode everything but the
// sequence number before it knows it, and join the parts with a copy.
//
// CBOR concatenates: the envelope is a map of nine entries in field order.
// Its encoding is the map header, the entries before `seq` (the same for
// every event of a device and epoch), the `seq` entry, then the entries
// after it. The tests check the joined bytes against [`encode`].

/// A map of fewer than 24 entries: its length is in its first byte.
const MAP: u8 = 0xa0;

fn cbor<T: Serialize>(what: &'static str, value: &T) -> Result<Vec<u8>, EncodeError> {
    let mut out = Vec::with_capacity(192);
    ciborium::into_writer(value, &mut out).map_err(|e| EncodeError {
        what,
        message: format!("{e:?}"),
    })?;
    Ok(out)
}

fn shape_error(what: &'static str) -> EncodeError {
    EncodeError {
        what,
        message: String::from("did not encode as a map of its fields"),
    }
}

/// The envelope's map header and entries before `seq`, ending with the key
/// `"seq"`: the same for every envelope of one device and epoch.
pub fn envelope_prefix(v: u16, device: &DeviceId, epoch: u64) -> Result<Vec<u8>, EncodeError> {
    let mut out = cbor("envelope prefix", &Prefix { v, device, epoch })?;
    match out.first_mut() {
        Some(b) if *b == MAP + PREFIX_FIELDS => *b = MAP + ENVELOPE_FIELDS,
        _ => return Err(shape_error("envelope prefix")),
    }
    out.extend_from_slice(&[0x63, b's', b'e', b'q']);
    Ok(out)
}

/// The envelope's entries after `seq`.
pub fn envelope_tail(
    id: EventId,
    captured_ms: i64,
    time_source: TimeSource,
    priority: Priority,
    payload: &Payload,
) -> Result<Vec<u8>, EncodeError> {
    let mut out = cbor(
        "envelope",
        &Tail {
            id,
            captured_ms,
            time_source,
            priority,
            payload,
        },
    )?;
    if out.first() != Some(&(MAP + TAIL_FIELDS)) {
        return Err(shape_error("envelope"));
    }
    out.remove(0);
    Ok(out)
}

/// The envelope made of a prefix ([`envelope_prefix`]), its sequence
/// number and a tail ([`envelope_tail`]): the bytes [`encode`] gives for it.
pub fn join_envelope(prefix: &[u8], seq: u64, tail: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(prefix.len() + 9 + tail.len());
    out.extend_from_slice(prefix);
    // An unsigned integer, shortest form (major type 0).
    match seq {
        0..=23 => out.push(seq as u8),
        24..=0xff => out.extend_from_slice(&[0x18, seq as u8]),
        0x100..=0xffff => {
            out.push(0x19);
            out.extend_from_slice(&(seq as u16).to_be_bytes());
        }
        0x1_0000..=0xffff_ffff => {
            out.push(0x1a);
            out.extend_from_slice(&(seq as u32).to_be_bytes());
        }
        _ => {
            out.push(0x1b);
            out.extend_from_slice(&seq.to_be_bytes());
        }
    }
    out.extend_from_slice(tail);
    out
}

/// Decodes and validates a message from untrusted bytes.
pub fn decode<T: WireMessage>(bytes: &[u8]) -> Result<T, DecodeError> {
    check_size::<T>(bytes)?;
    let message = match T::decode_direct(bytes) {
        Some(message) => message,
        None => serde_decode(bytes)?,
    };
    checked(message)
}

/// Decodes and validates a batch from untrusted bytes, as [`decode`], and
/// also returns where each envelope lies in `bytes` when the direct decoder
/// read it (`None` otherwise: then find them some other way or encode).
#[allow(clippy::type_complexity)]
pub fn decode_batch(bytes: &[u8]) -> Result<(Batch, Option<Vec<Range<usize>>>), DecodeError> {
    check_size::<Batch>(bytes)?;
    let (batch, spans) = match fast::batch(bytes) {
        Some((batch, spans)) => (batch, Some(spans)),
        None => (serde_decode(bytes)?, None),
    };
    Ok((checked(batch)?, spans))
}

fn check_size<T: WireMessage>(bytes: &[u8]) -> Result<(), DecodeError> {
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(DecodeError::TooLarge {
            what: T::NAME,
            len: bytes.len(),
            max: MAX_MESSAGE_BYTES,
        });
    }
    Ok(())
}

/// The serde decoder: the one that decides what is refused.
fn serde_decode<T: WireMessage>(bytes: &[u8]) -> Result<T, DecodeError> {
    ciborium::de::from_reader_with_recursion_limit(bytes, MAX_NESTING).map_err(|e| {
        let message = match e {
            ciborium::de::Error::Io(_) => String::from("the message ends too early"),
            ciborium::de::Error::Syntax(at) => format!("syntax error at byte {at}"),
            ciborium::de::Error::Semantic(at, msg) => match at {
                Some(at) => format!("{msg} at byte {at}"),
                None => msg,
            },
            ciborium::de::Error::RecursionLimitExceeded => {
                format!("nested deeper than {MAX_NESTING} levels")
            }
        };
        DecodeError::Cbor {
            what: T::NAME,
            message,
        }
    })
}

/// The version and the protocol's rules.
fn checked<T: WireMessage>(message: T) -> Result<T, DecodeError> {
    if message.version() != PROTOCOL_VERSION {
        return Err(DecodeError::Version {
            what: T::NAME,
            got: message.version(),
        });
    }
    message.validate().map_err(|error| DecodeError::Invalid {
        what: T::NAME,
        error,
    })?;
    Ok(message)
}
