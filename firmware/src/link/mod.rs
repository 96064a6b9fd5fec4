//! The framed serial link of a peripheral bridge: a microcontroller sends
//! readings to the agent as frames of opaque bytes.
//!
//! Wire format of one frame: `0x00, COBS(payload ‖ CRC-16), 0x00`. COBS
//! removes every zero byte from the body, so `0x00` only ever delimits frames;
//! the CRC (CRC-16/IBM-3740, also called CCITT-FALSE, big-endian) catches
//! corrupted bodies. The sender puts a delimiter before each frame too, so
//! whatever garbage came before (a reset mid-frame, line noise) is closed off
//! and reported once, and the frame itself decodes clean. The receiver
//! ignores empty frames (consecutive delimiters). A body longer than the
//! buffer is dropped up to the next delimiter.

use crc::{CRC_16_IBM_3740, Crc};
use heapless::Vec;

/// Largest payload of one frame.
pub const MAX_PAYLOAD: usize = 256;

/// Largest COBS body: payload + 2 CRC bytes + COBS overhead (1 per 254 bytes + 1).
pub const MAX_ENCODED: usize = MAX_PAYLOAD + 2 + (MAX_PAYLOAD + 2) / 254 + 1;

/// Largest complete frame on the wire, both delimiters included.
pub const MAX_FRAME: usize = MAX_ENCODED + 2;

const CRC16: Crc<u16> = Crc::<u16>::new(&CRC_16_IBM_3740);

/// Why a frame could not be built or was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// The payload is larger than [`MAX_PAYLOAD`].
    #[error("payload of {len} bytes exceeds the link maximum of {MAX_PAYLOAD}")]
    PayloadTooLarge {
        /// The payload length.
        len: usize,
    },
    /// The output buffer cannot hold the frame.
    #[error("output buffer of {capacity} bytes cannot hold a frame of up to {MAX_FRAME} bytes")]
    BufferTooSmall {
        /// The buffer length given.
        capacity: usize,
    },
    /// Bytes between delimiters were longer than any valid frame.
    #[error("frame longer than {MAX_ENCODED} bytes dropped; resynchronised at the next delimiter")]
    Overflow,
    /// The body is not valid COBS (a corrupted or partial frame).
    #[error("frame body is not valid COBS; dropped (partial frame or line noise)")]
    Cobs,
    /// The decoded body cannot even hold the CRC.
    #[error("frame of {len} bytes is too short to carry a CRC")]
    TooShort {
        /// Decoded length.
        len: usize,
    },
    /// The CRC does not match the payload.
    #[error("frame CRC is 0x{found:04x}, computed 0x{expected:04x}; dropped")]
    Crc {
        /// CRC computed over the payload.
        expected: u16,
        /// CRC carried by the frame.
        found: u16,
    },
}

/// Write one frame carrying `payload` into `out`; returns the bytes written.
pub fn encode_frame(payload: &[u8], out: &mut [u8]) -> Result<usize, LinkError> {
    let mut body: Vec<u8, { MAX_PAYLOAD + 2 }> = Vec::new();
    body.extend_from_slice(payload)
        .map_err(|_| LinkError::PayloadTooLarge { len: payload.len() })?;
    body.extend_from_slice(&CRC16.checksum(payload).to_be_bytes())
        .map_err(|_| LinkError::PayloadTooLarge { len: payload.len() })?;
    let too_small = LinkError::BufferTooSmall {
        capacity: out.len(),
    };
    let (first, rest) = out.split_first_mut().ok_or(too_small)?;
    *first = 0;
    let written = cobs::try_encode(&body, rest).map_err(|_| too_small)?;
    let last = rest.get_mut(written).ok_or(too_small)?;
    *last = 0;
    Ok(written + 2)
}

/// Streaming receiver: bytes in, payloads out.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: Vec<u8, MAX_ENCODED>,
    overflowed: bool,
    handed_out: bool,
}

impl FrameDecoder {
    /// A decoder waiting for the first delimiter-terminated frame.
    pub const fn new() -> Self {
        FrameDecoder {
            buf: Vec::new(),
            overflowed: false,
            handed_out: false,
        }
    }

    /// Feed one byte; at a delimiter returns the payload of the frame it ends
    /// (valid until the next call) or why that frame was dropped.
    pub fn push(&mut self, byte: u8) -> Option<Result<&[u8], LinkError>> {
        if self.handed_out {
            self.buf.clear();
            self.handed_out = false;
        }
        if byte != 0 {
            if !self.overflowed && self.buf.push(byte).is_err() {
                self.overflowed = true;
            }
            return None;
        }
        if self.overflowed {
            self.overflowed = false;
            self.buf.clear();
            return Some(Err(LinkError::Overflow));
        }
        if self.buf.is_empty() {
            return None;
        }
        self.handed_out = true;
        let decoded = match cobs::decode_in_place(&mut self.buf) {
            Ok(len) => len,
            Err(_) => return Some(Err(LinkError::Cobs)),
        };
        let body = self.buf.get(..decoded).unwrap_or_default();
        let Some(split) = decoded.checked_sub(2) else {
            return Some(Err(LinkError::TooShort { len: decoded }));
        };
        let (payload, crc) = body.split_at(split);
        let found = match crc {
            [hi, lo] => u16::from_be_bytes([*hi, *lo]),
            _ => return Some(Err(LinkError::TooShort { len: decoded })),
        };
        let expected = CRC16.checksum(payload);
        if expected != found {
            return Some(Err(LinkError::Crc { expected, found }));
        }
        Some(Ok(payload))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(stream: &[u8]) -> std::vec::Vec<Result<std::vec::Vec<u8>, LinkError>> {
        let mut d = FrameDecoder::new();
        stream
            .iter()
            .filter_map(|b| d.push(*b).map(|r| r.map(<[u8]>::to_vec)))
            .collect()
    }

    fn frame(payload: &[u8]) -> std::vec::Vec<u8> {
        let mut out = [0u8; MAX_FRAME];
        let n = encode_frame(payload, &mut out).expect("fits");
        out[..n].to_vec()
    }

    #[test]
    fn crc_is_ccitt_false() {
        assert_eq!(CRC16.checksum(b"123456789"), 0x29B1);
    }

    #[test]
    fn frames_round_trip() {
        let mut stream = frame(b"\x00hello\x00");
        stream.extend(frame(b""));
        stream.extend(frame(&[0u8; MAX_PAYLOAD]));
        let out = decode_all(&stream);
        assert_eq!(
            out,
            [
                Ok(b"\x00hello\x00".to_vec()),
                Ok(std::vec::Vec::new()),
                Ok(std::vec![0u8; MAX_PAYLOAD])
            ]
        );
    }

    #[test]
    fn resynchronises_after_garbage_and_corruption() {
        let mut stream = std::vec::Vec::from(&b"garbage \xff\x13"[..]);
        stream.extend(frame(b"one"));
        let mut corrupt = frame(b"two");
        corrupt[3] ^= 0x01;
        stream.extend(corrupt);
        stream.extend(frame(b"three"));
        let out = decode_all(&stream);
        assert_eq!(out.len(), 4, "{out:?}");
        assert!(out[0].is_err());
        assert_eq!(out[1], Ok(b"one".to_vec()));
        assert!(out[2].is_err());
        assert_eq!(out[3], Ok(b"three".to_vec()));
    }

    #[test]
    fn oversized_inputs_are_errors() {
        let mut out = [0u8; MAX_FRAME];
        assert_eq!(
            encode_frame(&[1u8; MAX_PAYLOAD + 1], &mut out),
            Err(LinkError::PayloadTooLarge {
                len: MAX_PAYLOAD + 1
            })
        );
        assert_eq!(
            encode_frame(b"abc", &mut [0u8; 4]),
            Err(LinkError::BufferTooSmall { capacity: 4 })
        );
        let mut stream = std::vec![1u8; MAX_ENCODED + 10];
        stream.push(0);
        stream.extend(frame(b"ok"));
        assert_eq!(
            decode_all(&stream),
            [Err(LinkError::Overflow), Ok(b"ok".to_vec())]
        );
    }
}
