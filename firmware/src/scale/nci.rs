//! NCI / Avery Weigh-Tronix (SCP-01 "NCI standard") responses, also spoken
//! by Salter Brecknell, Ohaus Aviator and Adam indicators.
//!
//! `W<CR>` → `<LF>0012.34LB<CR><LF>hh<CR><ETX>`; `S<CR>` → `<LF>hh<CR><ETX>`;
//! unknown command → `<LF>?<CR><ETX>`. A response ends at ETX; its last
//! line holds the status bytes (`0x3_`, bit 6 = "another status byte
//! follows"), the line before it, if any, the weight and unit. Byte 1: bit 0
//! motion, bit 1 at zero, bits 2–3 RAM/EEPROM error. Byte 2: bit 0 under,
//! bit 1 over capacity, bit 2 ROM error, bit 3 calibration. Byte 3: bit 2
//! net, bit 3 initial zero error. Parity bits are masked off.

use heapless::Vec;

use super::{
    Decimal, DeviceError, ScaleError, ScaleEvent, Unit, WeightKind, WeightSample, unit_start,
};

const PROTOCOL: &str = "NCI";
const ETX: u8 = 0x03;
const MAX_RESPONSE: usize = 48;

/// Decode one complete response (ETX optional, parity bits allowed).
pub fn parse_nci_response(response: &[u8]) -> Result<ScaleEvent, ScaleError> {
    let mut buf: Vec<u8, MAX_RESPONSE> = Vec::new();
    for b in response {
        let b = b & 0x7F;
        if b == ETX {
            break;
        }
        buf.push(b)
            .map_err(|_| ScaleError::Overflow { protocol: PROTOCOL })?;
    }
    let mut lines = buf
        .split(|b| *b == b'\r' || *b == b'\n')
        .filter(|l| !l.trim_ascii().is_empty());
    let first = lines
        .next()
        .ok_or(ScaleError::NotRecognised { protocol: PROTOCOL })?;
    let second = lines.next();
    if lines.next().is_some() {
        return Err(ScaleError::NotRecognised { protocol: PROTOCOL });
    }
    let (weight, status) = match second {
        Some(status) => (Some(first), status),
        None if first.trim_ascii() == b"?" => {
            return Ok(ScaleEvent::Device(DeviceError::UnknownCommand));
        }
        None => (None, first),
    };
    let status = status.trim_ascii();
    if status.is_empty()
        || status.len() > 4
        || !status.iter().all(|b| b & 0xF0 == 0x30 || b & 0xF0 == 0x70)
    {
        return Err(ScaleError::NotRecognised { protocol: PROTOCOL });
    }
    let bit = |byte: usize, bit: u8| status.get(byte).is_some_and(|b| b & (1 << bit) != 0);
    if bit(0, 2) || bit(0, 3) || bit(1, 2) {
        return Ok(ScaleEvent::Device(DeviceError::MemoryError));
    }
    if bit(1, 3) {
        return Ok(ScaleEvent::Device(DeviceError::CalibrationError));
    }
    if bit(2, 3) {
        return Ok(ScaleEvent::Device(DeviceError::InitialZeroError));
    }
    if bit(1, 1) {
        return Ok(ScaleEvent::Overload);
    }
    if bit(1, 0) {
        return Ok(ScaleEvent::Underload);
    }
    let Some(weight) = weight else {
        // A status-only answer (`S`, `Z`): nothing to weigh, but it was accepted.
        return Ok(ScaleEvent::Acknowledged);
    };
    let weight = weight.trim_ascii();
    let unit_start = unit_start(weight).ok_or(ScaleError::NotRecognised { protocol: PROTOCOL })?;
    let (value, unit) = weight.split_at(unit_start);
    let value = Decimal::parse(value).ok_or(ScaleError::BadWeight { protocol: PROTOCOL })?;
    Ok(ScaleEvent::Weight(WeightSample {
        value,
        unit: Unit::parse(unit),
        kind: if bit(2, 2) {
            WeightKind::Net
        } else {
            WeightKind::Gross
        },
        stable: !bit(0, 0),
        at_zero: bit(0, 1),
        tare: None,
    }))
}

/// Byte-at-a-time decoder: collects a response up to ETX.
#[derive(Debug, Default)]
pub struct NciDecoder {
    buf: Vec<u8, MAX_RESPONSE>,
    overflowed: bool,
}

impl NciDecoder {
    /// An empty decoder.
    pub const fn new() -> Self {
        NciDecoder {
            buf: Vec::new(),
            overflowed: false,
        }
    }

    /// Feed one byte; returns the decoded response when `byte` is its ETX.
    pub fn push(&mut self, byte: u8) -> Option<Result<ScaleEvent, ScaleError>> {
        if byte & 0x7F == ETX {
            let result = if self.overflowed {
                Err(ScaleError::Overflow { protocol: PROTOCOL })
            } else {
                parse_nci_response(&self.buf)
            };
            self.buf.clear();
            self.overflowed = false;
            return Some(result);
        }
        if !self.overflowed && self.buf.push(byte).is_err() {
            self.overflowed = true;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weight_response() {
        let mut d = NciDecoder::new();
        let out: std::vec::Vec<_> = b"\n0012.34LB\r\n00\r\x03"
            .iter()
            .filter_map(|b| d.push(*b))
            .collect();
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
        assert_eq!(w.unit, Unit::Lb);
        assert!(w.stable && !w.at_zero);
    }

    #[test]
    fn status_bits() {
        let Ok(ScaleEvent::Weight(w)) = parse_nci_response(b"\n0000.00lb\r\n30\r\x03") else {
            panic!("not a weight")
        };
        assert!(!w.stable && w.at_zero, "{w:?}");
        assert_eq!(
            parse_nci_response(b"\n^^^^^^lb\r\n02\r\x03"),
            Ok(ScaleEvent::Overload)
        );
        assert_eq!(
            parse_nci_response(b"\n0000.00lb\r\n01\r\x03"),
            Ok(ScaleEvent::Underload)
        );
        assert_eq!(
            parse_nci_response(b"\n?\r\x03"),
            Ok(ScaleEvent::Device(DeviceError::UnknownCommand))
        );
        assert_eq!(
            parse_nci_response(b"\n00\r\x03"),
            Ok(ScaleEvent::Acknowledged)
        );
    }
}
