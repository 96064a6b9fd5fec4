//! CBOR encoding and decoding of wire messages.
//!
//! Decoding takes bytes from the network, so it is defensive: the input size is
//! capped before parsing, nesting is capped by ciborium's recursion limit, the
//! protocol version is checked, and every message is validated (id rules, text
//! lengths, batch order) before it is returned. Nothing here panics on input.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::envelope::{EnvelopeHead, HEAD_FIELDS};
use crate::validate::ValidationError;
use crate::{Ack, Batch, Envelope, PROTOCOL_VERSION, Payload, Status};

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
}

impl WireMessage for Batch {
    const NAME: &'static str = "batch";
    fn version(&self) -> u16 {
        self.v
    }
    fn validate(&self) -> Result<(), ValidationError> {
        Batch::validate(self)
    }
}

impl WireMessage for Envelope {
    const NAME: &'static str = "envelope";
    fn version(&self) -> u16 {
        self.v
    }
    fn validate(&self) -> Result<(), ValidationError> {
        Envelope::validate(self, "envelope")
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

/// Encodes a payload on its own, for [`encode_envelope`].
pub fn encode_payload(payload: &Payload) -> Result<Vec<u8>, EncodeError> {
    let mut out = Vec::with_capacity(192);
    ciborium::into_writer(payload, &mut out).map_err(|e| EncodeError {
        what: "payload",
        message: format!("{e:?}"),
    })?;
    Ok(out)
}

/// The CBOR of the envelope made of `head` and the payload whose encoding
/// (from [`encode_payload`]) is `payload`: identical to [`encode`] of that
/// envelope, without encoding the payload again.
///
/// CBOR concatenates: the envelope is a map whose last entry is `"p"`, so it
/// is the head's map with one more entry declared and appended.
pub fn encode_envelope(head: &EnvelopeHead<'_>, payload: &[u8]) -> Result<Vec<u8>, EncodeError> {
    let mut out = Vec::with_capacity(96 + payload.len());
    ciborium::into_writer(head, &mut out).map_err(|e| EncodeError {
        what: "envelope",
        message: format!("{e:?}"),
    })?;
    // A map of fewer than 24 entries has its length in its first byte.
    const MAP: u8 = 0xa0;
    match out.first_mut() {
        Some(b) if *b == MAP + HEAD_FIELDS => *b = MAP + HEAD_FIELDS + 1,
        _ => {
            return Err(EncodeError {
                what: "envelope",
                message: String::from("the envelope head did not encode as a map of its fields"),
            });
        }
    }
    // The key "p": a text string of length 1.
    out.extend_from_slice(&[0x61, b'p']);
    out.extend_from_slice(payload);
    Ok(out)
}

/// Decodes and validates a message from untrusted bytes.
pub fn decode<T: WireMessage>(bytes: &[u8]) -> Result<T, DecodeError> {
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(DecodeError::TooLarge {
            what: T::NAME,
            len: bytes.len(),
            max: MAX_MESSAGE_BYTES,
        });
    }
    let message: T =
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
        })?;
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
