//! What the bridge sends: one [`BridgeMessage`] per link frame.
//!
//! Fixed binary layout, big-endian, version first so a later layout can be
//! told apart. Every message starts with a 14-byte header:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 1 | version, [`MESSAGE_VERSION`] |
//! | 1 | 1 | kind: `b'W'` weight, `b'F'` fault |
//! | 2 | 4 | sequence number (u32, +1 per message, wraps) |
//! | 6 | 8 | bridge monotonic time in ms (u64) |
//!
//! A weight (`W`) follows with 31 bytes:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 14 | 1 | state: 0 motion, 1 stable, 2 overload, 3 underload |
//! | 15 | 4 | unit, ASCII, space padded (`kg  `) |
//! | 19 | 1 | decimals of net and tare |
//! | 20 | 8 | net weight mantissa (i64) |
//! | 28 | 1 | tare present: 0 or 1 |
//! | 29 | 8 | tare mantissa (i64; 0 when absent) |
//! | 37 | 4 | raw count (i32) |
//! | 41 | 4 | filtered count (i32) |
//!
//! A fault (`F`) follows with 1 byte: the [`Fault`] code. Unknown fault codes
//! decode as [`Fault::Other`] so an older agent still sees "a fault". Any
//! other deviation (short, long, unknown version, kind or state) is an error.

use crate::loadcell::{LoadCellReading, WeightState};
use crate::scale::{Decimal, Unit};

/// The layout version this module writes and reads.
pub const MESSAGE_VERSION: u8 = 1;

/// Largest encoded message (a weight).
pub const MAX_MESSAGE: usize = HEADER_LEN + WEIGHT_LEN;

const HEADER_LEN: usize = 14;
const WEIGHT_LEN: usize = 31;
const FAULT_LEN: usize = 1;
const KIND_WEIGHT: u8 = b'W';
const KIND_FAULT: u8 = b'F';

/// A condition the bridge reports instead of a weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fault {
    /// Reading the load cell failed (bus or pin error, chip not answering).
    SensorRead,
    /// The load cell gave no conversion for a whole heartbeat period.
    SensorStalled,
    /// A code this version does not know.
    Other(u8),
}

impl Fault {
    /// The code on the wire.
    pub const fn code(self) -> u8 {
        match self {
            Fault::SensorRead => 1,
            Fault::SensorStalled => 2,
            Fault::Other(code) => code,
        }
    }

    /// The fault for a wire code.
    pub const fn from_code(code: u8) -> Fault {
        match code {
            1 => Fault::SensorRead,
            2 => Fault::SensorStalled,
            other => Fault::Other(other),
        }
    }
}

/// What one message carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Payload {
    /// A weight reading.
    Weight(LoadCellReading),
    /// A fault.
    Fault(Fault),
}

/// One message from the bridge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BridgeMessage {
    /// Sequence number: +1 per message sent, so the receiver sees gaps.
    pub seq: u32,
    /// The bridge's monotonic clock when the message was made, in ms.
    pub at_ms: u64,
    /// The content.
    pub payload: Payload,
}

/// Why bytes are not a bridge message, or a message does not fit a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    /// The buffer is too small to encode into.
    #[error("buffer of {capacity} bytes cannot hold a bridge message of {needed}")]
    BufferTooSmall {
        /// Buffer length.
        capacity: usize,
        /// Bytes the message needs.
        needed: usize,
    },
    /// The message has the wrong length for its kind.
    #[error("bridge message of {len} bytes; a '{kind}' message has {expected}")]
    BadLength {
        /// Kind byte (as a char when ASCII).
        kind: char,
        /// Bytes received.
        len: usize,
        /// Bytes expected.
        expected: usize,
    },
    /// The message is shorter than the header.
    #[error("bridge message of {len} bytes is shorter than the 14-byte header")]
    Truncated {
        /// Bytes received.
        len: usize,
    },
    /// A layout version this code does not know.
    #[error(
        "bridge message version {0}, expected {MESSAGE_VERSION}; update the agent or the bridge firmware"
    )]
    UnknownVersion(u8),
    /// A kind byte this code does not know.
    #[error("bridge message kind 0x{0:02x} is unknown (expected 'W' or 'F')")]
    UnknownKind(u8),
    /// A weight state byte this code does not know.
    #[error("bridge weight state {0} is unknown (expected 0..=3)")]
    UnknownState(u8),
    /// A flag byte that is neither 0 nor 1.
    #[error("bridge tare flag {0} is not 0 or 1")]
    BadFlag(u8),
}

impl BridgeMessage {
    /// Write the message into `out`; returns the bytes written.
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, MessageError> {
        let (kind, body_len) = match self.payload {
            Payload::Weight(_) => (KIND_WEIGHT, WEIGHT_LEN),
            Payload::Fault(_) => (KIND_FAULT, FAULT_LEN),
        };
        let needed = HEADER_LEN + body_len;
        let capacity = out.len();
        let mut w = Writer {
            rest: out
                .get_mut(..needed)
                .ok_or(MessageError::BufferTooSmall { capacity, needed })?,
        };
        w.put(&[MESSAGE_VERSION, kind]);
        w.put(&self.seq.to_be_bytes());
        w.put(&self.at_ms.to_be_bytes());
        match self.payload {
            Payload::Weight(r) => {
                w.put(&[state_code(r.state)]);
                w.put(&unit_text(r.unit));
                w.put(&[r.net.scale]);
                w.put(&r.net.mantissa.to_be_bytes());
                w.put(&[u8::from(r.tare.is_some())]);
                w.put(&r.tare.map_or(0, |t| t.mantissa).to_be_bytes());
                w.put(&r.raw.to_be_bytes());
                w.put(&r.filtered.to_be_bytes());
            }
            Payload::Fault(fault) => w.put(&[fault.code()]),
        }
        Ok(needed)
    }

    /// Read a message (the payload of one link frame).
    pub fn decode(bytes: &[u8]) -> Result<BridgeMessage, MessageError> {
        let mut r = Reader { rest: bytes };
        let (Some([version, kind]), Some(seq), Some(at_ms)) = (r.take(), r.take(), r.take()) else {
            return Err(MessageError::Truncated { len: bytes.len() });
        };
        if version != MESSAGE_VERSION {
            return Err(MessageError::UnknownVersion(version));
        }
        let expected = match kind {
            KIND_WEIGHT => WEIGHT_LEN,
            KIND_FAULT => FAULT_LEN,
            other => return Err(MessageError::UnknownKind(other)),
        };
        if r.rest.len() != expected {
            return Err(MessageError::BadLength {
                kind: char::from(kind),
                len: bytes.len(),
                expected: HEADER_LEN + expected,
            });
        }
        let short = MessageError::Truncated { len: bytes.len() };
        let payload = if kind == KIND_FAULT {
            let [code] = r.take().ok_or(short)?;
            Payload::Fault(Fault::from_code(code))
        } else {
            let [state] = r.take().ok_or(short)?;
            let unit: [u8; 4] = r.take().ok_or(short)?;
            let [scale] = r.take().ok_or(short)?;
            let net = i64::from_be_bytes(r.take().ok_or(short)?);
            let [has_tare] = r.take().ok_or(short)?;
            let tare = i64::from_be_bytes(r.take().ok_or(short)?);
            let raw = i32::from_be_bytes(r.take().ok_or(short)?);
            let filtered = i32::from_be_bytes(r.take().ok_or(short)?);
            Payload::Weight(LoadCellReading {
                raw,
                filtered,
                net: Decimal {
                    mantissa: net,
                    scale,
                },
                tare: match has_tare {
                    0 => None,
                    1 => Some(Decimal {
                        mantissa: tare,
                        scale,
                    }),
                    other => return Err(MessageError::BadFlag(other)),
                },
                unit: Unit::parse(&unit),
                state: state_from_code(state)?,
            })
        };
        Ok(BridgeMessage {
            seq: u32::from_be_bytes(seq),
            at_ms: u64::from_be_bytes(at_ms),
            payload,
        })
    }

    /// The weight as the wire contract's reading; `None` for a fault, an
    /// overload/underload or a unit the contract has no name for.
    #[cfg(feature = "protocol")]
    pub fn to_protocol(&self) -> Option<dockline_protocol::WeightReading> {
        match self.payload {
            Payload::Weight(reading) => match reading.to_scale_event() {
                crate::scale::ScaleEvent::Weight(sample) => sample.to_protocol(),
                _ => None,
            },
            Payload::Fault(_) => None,
        }
    }
}

const fn state_code(state: WeightState) -> u8 {
    match state {
        WeightState::Motion => 0,
        WeightState::Stable => 1,
        WeightState::Overload => 2,
        WeightState::Underload => 3,
    }
}

const fn state_from_code(code: u8) -> Result<WeightState, MessageError> {
    Ok(match code {
        0 => WeightState::Motion,
        1 => WeightState::Stable,
        2 => WeightState::Overload,
        3 => WeightState::Underload,
        other => return Err(MessageError::UnknownState(other)),
    })
}

/// The unit as 4 space-padded ASCII bytes, as [`Unit::parse`] reads it back.
const fn unit_text(unit: Unit) -> [u8; 4] {
    match unit {
        Unit::Kg => *b"kg  ",
        Unit::G => *b"g   ",
        Unit::Lb => *b"lb  ",
        Unit::Oz => *b"oz  ",
        Unit::T => *b"t   ",
        Unit::Other(raw) => raw,
    }
}

/// Appends into a slice that was sized for the message beforehand.
struct Writer<'a> {
    rest: &'a mut [u8],
}

impl Writer<'_> {
    fn put(&mut self, bytes: &[u8]) {
        let rest = core::mem::take(&mut self.rest);
        // `encode` sized the slice for exactly this message; a short slice
        // would drop bytes rather than panic (and the unit tests catch it).
        let n = bytes.len().min(rest.len());
        let (head, tail) = rest.split_at_mut(n);
        head.copy_from_slice(bytes.get(..n).unwrap_or_default());
        self.rest = tail;
    }
}

/// Takes fixed-size fields off the front of a slice.
struct Reader<'a> {
    rest: &'a [u8],
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, tail) = self.rest.split_first_chunk::<N>()?;
        self.rest = tail;
        Some(*head)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weight() -> BridgeMessage {
        BridgeMessage {
            seq: 0x0102_0304,
            at_ms: 1_500,
            payload: Payload::Weight(LoadCellReading {
                raw: -5,
                filtered: -4,
                net: Decimal {
                    mantissa: -1_250,
                    scale: 3,
                },
                tare: Some(Decimal {
                    mantissa: 200,
                    scale: 3,
                }),
                unit: Unit::Kg,
                state: WeightState::Stable,
            }),
        }
    }

    #[test]
    fn weight_layout_is_as_documented() {
        let mut buf = [0u8; MAX_MESSAGE];
        let n = weight().encode(&mut buf).expect("fits");
        assert_eq!(n, 45);
        assert_eq!(&buf[..2], [1, b'W']);
        assert_eq!(&buf[2..6], [1, 2, 3, 4]);
        assert_eq!(&buf[6..14], 1_500u64.to_be_bytes());
        assert_eq!(buf[14], 1);
        assert_eq!(&buf[15..19], b"kg  ");
        assert_eq!(buf[19], 3);
        assert_eq!(&buf[20..28], (-1_250i64).to_be_bytes());
        assert_eq!(buf[28], 1);
        assert_eq!(&buf[37..41], (-5i32).to_be_bytes());
        assert_eq!(BridgeMessage::decode(&buf[..n]), Ok(weight()));
    }

    #[test]
    fn faults_round_trip_and_unknown_codes_survive() {
        for fault in [Fault::SensorRead, Fault::SensorStalled, Fault::Other(99)] {
            let m = BridgeMessage {
                seq: 7,
                at_ms: 9,
                payload: Payload::Fault(fault),
            };
            let mut buf = [0u8; 15];
            assert_eq!(m.encode(&mut buf), Ok(15));
            assert_eq!(BridgeMessage::decode(&buf), Ok(m));
        }
    }

    #[test]
    fn malformed_messages_are_errors() {
        let mut buf = [0u8; MAX_MESSAGE];
        let n = weight().encode(&mut buf).expect("fits");
        assert_eq!(
            BridgeMessage::decode(&buf[..3]),
            Err(MessageError::Truncated { len: 3 })
        );
        assert!(matches!(
            BridgeMessage::decode(&buf[..n - 1]),
            Err(MessageError::BadLength { .. })
        ));
        let mut bad = buf;
        bad[0] = 2;
        assert_eq!(
            BridgeMessage::decode(&bad[..n]),
            Err(MessageError::UnknownVersion(2))
        );
        let mut bad = buf;
        bad[14] = 4;
        assert_eq!(
            BridgeMessage::decode(&bad[..n]),
            Err(MessageError::UnknownState(4))
        );
        let mut bad = buf;
        bad[28] = 2;
        assert_eq!(
            BridgeMessage::decode(&bad[..n]),
            Err(MessageError::BadFlag(2))
        );
        assert_eq!(
            weight().encode(&mut [0u8; 44]),
            Err(MessageError::BufferTooSmall {
                capacity: 44,
                needed: 45
            })
        );
    }

    #[cfg(feature = "protocol")]
    #[test]
    fn stable_weights_convert_to_the_wire_contract() {
        let reading = weight().to_protocol().expect("a weight in kg");
        assert!(reading.stable);
        assert!((reading.net.value - -1.25).abs() < 1e-9);
        assert_eq!(reading.tare.map(|t| t.value), Some(0.2));
    }
}
