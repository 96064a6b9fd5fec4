//! Mettler Toledo continuous output ("Toledo format"), also emitted by
//! Fairbanks, Cardinal, Kern and many indicators.
//!
//! Frame: `STX SWA SWB SWC dddddd tttttt CR [CHK]` (17 bytes, 18 with the
//! checksum). Bit 7 of every byte is masked off first, because 7E1 lines read
//! as 8N1 carry parity there. The decoder starts a frame at STX, so a stream
//! joined mid-frame resynchronises at the next frame; any frame of the wrong
//! length is dropped. The "always 1/0" status bits are not validated: vendors
//! disagree about them.

use super::{Decimal, ScaleError, ScaleEvent, Unit, WeightKind, WeightSample};

const STX: u8 = 0x02;
const CR: u8 = 0x0D;
const PROTOCOL: &str = "Toledo continuous";

/// Length of a frame from STX to CR inclusive (without the checksum byte).
pub const TOLEDO_FRAME_LEN: usize = 17;

/// The Toledo checksum: two's complement of the 7-bit sum, in 7 bits.
pub fn toledo_checksum(bytes: &[u8]) -> u8 {
    let sum = bytes.iter().fold(0u8, |acc, b| acc.wrapping_add(b & 0x7F));
    sum.wrapping_neg() & 0x7F
}

/// Decode one frame from STX to CR inclusive (17 bytes; parity bits ignored).
pub fn parse_toledo_frame(frame: &[u8]) -> Result<ScaleEvent, ScaleError> {
    let mut b = [0u8; TOLEDO_FRAME_LEN];
    if frame.len() != TOLEDO_FRAME_LEN {
        return Err(ScaleError::NotRecognised { protocol: PROTOCOL });
    }
    for (dst, src) in b.iter_mut().zip(frame) {
        *dst = src & 0x7F;
    }
    let [STX, swa, swb, swc, weight @ .., CR] = b else {
        return Err(ScaleError::NotRecognised { protocol: PROTOCOL });
    };
    let (shown, tare) = weight.split_at(6);
    let net = swb & 0x01 != 0;
    let negative = swb & 0x02 != 0;
    let out_of_range = swb & 0x04 != 0;
    let motion = swb & 0x08 != 0;
    if out_of_range {
        return Ok(if negative {
            ScaleEvent::Underload
        } else {
            ScaleEvent::Overload
        });
    }
    let decimal_code = swa & 0x07;
    let decode = |digits: &[u8]| -> Option<Decimal> {
        let mut raw = Decimal::parse(digits)?;
        if raw.scale != 0 || raw.mantissa < 0 {
            return None;
        }
        match decimal_code {
            0 => raw.mantissa *= 100,
            1 => raw.mantissa *= 10,
            2 => {}
            code => raw.scale = code - 2,
        }
        Some(raw)
    };
    let mut value = decode(shown).ok_or(ScaleError::BadWeight { protocol: PROTOCOL })?;
    let tare = decode(tare).ok_or(ScaleError::BadWeight { protocol: PROTOCOL })?;
    if negative {
        value.mantissa = -value.mantissa;
    }
    let unit = match swc & 0x07 {
        0 if swb & 0x10 != 0 => Unit::Kg,
        0 => Unit::Lb,
        1 => Unit::G,
        2 => Unit::T,
        3 => Unit::Oz,
        _ => Unit::Other(*b"?   "),
    };
    Ok(ScaleEvent::Weight(WeightSample {
        value,
        unit,
        kind: if net {
            WeightKind::Net
        } else {
            WeightKind::Gross
        },
        stable: !motion,
        at_zero: value.mantissa == 0,
        tare: Some(tare),
    }))
}

/// Byte-at-a-time decoder of a continuous Toledo stream.
#[derive(Debug, Clone)]
pub struct ToledoDecoder {
    frame: [u8; TOLEDO_FRAME_LEN],
    len: usize,
    with_checksum: bool,
    awaiting_checksum: bool,
}

impl ToledoDecoder {
    /// A decoder; `with_checksum` when the indicator appends the checksum byte.
    pub fn new(with_checksum: bool) -> Self {
        ToledoDecoder {
            frame: [0; TOLEDO_FRAME_LEN],
            len: 0,
            with_checksum,
            awaiting_checksum: false,
        }
    }

    /// Feed one byte; returns a decoded frame when `byte` completes one.
    pub fn push(&mut self, byte: u8) -> Option<Result<ScaleEvent, ScaleError>> {
        let byte7 = byte & 0x7F;
        if self.awaiting_checksum {
            self.awaiting_checksum = false;
            self.len = 0;
            let expected = toledo_checksum(&self.frame);
            if expected != byte7 {
                return Some(Err(ScaleError::BadChecksum {
                    expected,
                    found: byte7,
                }));
            }
            return Some(parse_toledo_frame(&self.frame));
        }
        if byte7 == STX {
            self.len = 0;
        } else if self.len == 0 {
            // Not inside a frame: wait for STX.
            return None;
        }
        let slot = self.frame.get_mut(self.len)?;
        *slot = byte7;
        self.len += 1;
        if self.len == TOLEDO_FRAME_LEN {
            if byte7 != CR {
                self.len = 0;
                return Some(Err(ScaleError::Overflow { protocol: PROTOCOL }));
            }
            if self.with_checksum {
                self.awaiting_checksum = true;
                return None;
            }
            self.len = 0;
            return Some(parse_toledo_frame(&self.frame));
        }
        if byte7 == CR {
            // CR before the frame is complete: a short frame, drop it.
            self.len = 0;
            return Some(Err(ScaleError::NotRecognised { protocol: PROTOCOL }));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WORKED: [u8; 18] = [
        0x02, 0x2C, 0x30, 0x20, 0x30, 0x30, 0x31, 0x32, 0x33, 0x34, 0x30, 0x30, 0x30, 0x30, 0x30,
        0x30, 0x0D, 0x2B,
    ];

    #[test]
    fn worked_frame_from_the_manual() {
        assert_eq!(toledo_checksum(&WORKED[..17]), 0x2B);
        let mut d = ToledoDecoder::new(true);
        let out: std::vec::Vec<_> = WORKED.iter().filter_map(|b| d.push(*b)).collect();
        let [Ok(ScaleEvent::Weight(w))] = out.as_slice() else {
            panic!("{out:?}")
        };
        assert_eq!(
            w.value,
            Decimal {
                mantissa: 1234,
                scale: 2
            }
        );
        assert_eq!(w.unit, Unit::Kg);
        assert_eq!(w.kind, WeightKind::Gross);
        assert!(w.stable);
    }

    #[test]
    fn net_negative_motion_and_parity() {
        let mut frame = WORKED;
        frame[2] = b';';
        let with_parity: std::vec::Vec<u8> = frame[..17].iter().map(|b| b | 0x80).collect();
        let Ok(ScaleEvent::Weight(w)) = parse_toledo_frame(&with_parity) else {
            panic!("not a weight")
        };
        assert_eq!(w.kind, WeightKind::Net);
        assert_eq!(w.value.mantissa, -1234);
        assert!(!w.stable);
    }

    #[test]
    fn resynchronises_mid_stream_and_rejects_bad_checksums() {
        let mut d = ToledoDecoder::new(true);
        let mut stream = std::vec::Vec::from(&WORKED[5..]);
        stream.extend_from_slice(&WORKED);
        let mut bad = WORKED;
        bad[17] = 0x2C;
        stream.extend_from_slice(&bad);
        let out: std::vec::Vec<_> = stream.iter().filter_map(|b| d.push(*b)).collect();
        assert!(matches!(out[0], Ok(ScaleEvent::Weight(_))));
        assert_eq!(
            out[1],
            Err(ScaleError::BadChecksum {
                expected: 0x2B,
                found: 0x2C
            })
        );
        assert_eq!(out.len(), 2);
    }

    #[test]
    fn out_of_range_is_overload_or_underload() {
        let mut frame = WORKED;
        frame[2] = 0x30 | 0x04;
        assert_eq!(parse_toledo_frame(&frame[..17]), Ok(ScaleEvent::Overload));
        frame[2] = 0x30 | 0x04 | 0x02;
        assert_eq!(parse_toledo_frame(&frame[..17]), Ok(ScaleEvent::Underload));
    }
}
