//! Weighing scales over serial: Mettler Toledo MT-SICS, Toledo continuous
//! output, SMA (SCP-01) and the NCI / Avery Weigh-Tronix `W` response.
//!
//! Every protocol decodes to the same [`ScaleEvent`]: a [`WeightSample`] with
//! value, unit, gross/net/tare and stability, or an explicit overload,
//! underload, busy or device-error state. Stability is only ever taken from
//! the device's own flag, never inferred from repeated values (legal for
//! trade). Values are exact decimals ([`Decimal`]), not floats.
//!
//! Line protocols (MT-SICS, SMA) take one line as framed by
//! [`LineAssembler`](crate::line::LineAssembler); the frame protocols (Toledo
//! continuous, NCI) have their own byte-at-a-time decoders that resynchronise
//! on their start/end bytes.

mod mtsics;
mod mtsics_poll;
mod nci;
mod sma;
mod toledo;

use core::fmt;

#[cfg(feature = "protocol")]
use dockline_protocol::{Weight, WeightReading, WeightUnit};

pub use mtsics::parse_mtsics_line;
pub use mtsics_poll::{MAX_PENDING, MtSicsCommand, MtSicsPoller, TooManyPending};
pub use nci::{NciDecoder, parse_nci_response};
pub use sma::parse_sma_line;
pub use toledo::{TOLEDO_FRAME_LEN, ToledoDecoder, parse_toledo_frame};

/// An exact decimal: `mantissa / 10^scale`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Decimal {
    /// The digits as an integer, with sign.
    pub mantissa: i64,
    /// Number of digits after the decimal point.
    pub scale: u8,
}

impl Decimal {
    /// Parse `[+|-]digits[.digits]` (surrounding spaces allowed, at most 18 digits).
    pub fn parse(text: &[u8]) -> Option<Decimal> {
        let text = text.trim_ascii();
        let (negative, digits) = match text {
            [b'-', rest @ ..] => (true, rest.trim_ascii_start()),
            [b'+', rest @ ..] => (false, rest.trim_ascii_start()),
            _ => (false, text),
        };
        if digits.is_empty() || digits.len() > 19 {
            return None;
        }
        let mut mantissa: i64 = 0;
        let mut scale: Option<u8> = None;
        let mut seen_digit = false;
        for &b in digits {
            match b {
                b'0'..=b'9' => {
                    mantissa = mantissa.checked_mul(10)?.checked_add(i64::from(b - b'0'))?;
                    seen_digit = true;
                    if let Some(s) = scale.as_mut() {
                        *s += 1;
                    }
                }
                b'.' if scale.is_none() => scale = Some(0),
                _ => return None,
            }
        }
        if !seen_digit {
            return None;
        }
        Some(Decimal {
            mantissa: if negative { -mantissa } else { mantissa },
            scale: scale.unwrap_or(0),
        })
    }

    /// The value as a float (for the wire contract).
    #[allow(clippy::cast_precision_loss)] // weights have far fewer than 53 bits
    pub fn to_f64(self) -> f64 {
        let mut v = self.mantissa as f64;
        for _ in 0..self.scale {
            v /= 10.0;
        }
        v
    }
}

impl fmt::Display for Decimal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.mantissa < 0 { "-" } else { "" };
        let abs = self.mantissa.unsigned_abs();
        let pow = 10u64.checked_pow(u32::from(self.scale)).unwrap_or(1);
        if self.scale == 0 || pow == 1 {
            write!(f, "{sign}{abs}")
        } else {
            let width = usize::from(self.scale);
            write!(f, "{sign}{}.{:0width$}", abs / pow, abs % pow)
        }
    }
}

/// The unit a scale reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Unit {
    /// Kilograms.
    Kg,
    /// Grams.
    G,
    /// Pounds.
    Lb,
    /// Ounces.
    Oz,
    /// Metric tonnes.
    T,
    /// Anything else, as sent (up to 4 ASCII bytes, space padded).
    Other([u8; 4]),
}

impl Unit {
    /// The unit from its text (`kg`, `KG`, `lb`, `g`, …).
    pub fn parse(text: &[u8]) -> Unit {
        let text = text.trim_ascii();
        let lower = |i: usize| text.get(i).map(u8::to_ascii_lowercase);
        match (text.len(), lower(0), lower(1)) {
            (2, Some(b'k'), Some(b'g')) => Unit::Kg,
            (1, Some(b'g'), _) => Unit::G,
            (2, Some(b'l'), Some(b'b')) => Unit::Lb,
            (2, Some(b'o'), Some(b'z')) => Unit::Oz,
            (1, Some(b't'), _) => Unit::T,
            _ => {
                let mut raw = [b' '; 4];
                for (dst, src) in raw.iter_mut().zip(text) {
                    *dst = *src;
                }
                Unit::Other(raw)
            }
        }
    }

    /// The wire-contract unit, when there is one.
    #[cfg(feature = "protocol")]
    pub fn to_protocol(self) -> Option<WeightUnit> {
        match self {
            Unit::Kg => Some(WeightUnit::Kg),
            Unit::G => Some(WeightUnit::G),
            Unit::Lb => Some(WeightUnit::Lb),
            Unit::Oz => Some(WeightUnit::Oz),
            Unit::T | Unit::Other(_) => None,
        }
    }
}

/// What the displayed weight is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WeightKind {
    /// Gross weight (no tare applied).
    Gross,
    /// Net weight (gross minus tare).
    Net,
    /// The tare value itself.
    Tare,
}

/// One weight as the device reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WeightSample {
    /// The weight.
    pub value: Decimal,
    /// Its unit.
    pub unit: Unit,
    /// Gross, net or tare.
    pub kind: WeightKind,
    /// The device's own stability flag (no motion).
    pub stable: bool,
    /// The device says it is at centre of zero.
    pub at_zero: bool,
    /// The tare, when the protocol sends it.
    pub tare: Option<Decimal>,
}

impl WeightSample {
    #[cfg(feature = "protocol")]
    /// The wire-contract reading; `None` for a tare value or a unit the
    /// contract has no name for.
    pub fn to_protocol(&self) -> Option<WeightReading> {
        let unit = self.unit.to_protocol()?;
        if self.kind == WeightKind::Tare {
            return None;
        }
        Some(WeightReading {
            net: Weight {
                value: self.value.to_f64(),
                unit,
            },
            tare: self.tare.map(|t| Weight {
                value: t.to_f64(),
                unit,
            }),
            stable: self.stable,
        })
    }
}

/// A condition the device reports instead of a weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeviceError {
    /// MT-SICS `ES`: the command was not understood.
    SyntaxError,
    /// MT-SICS `ET`: parity or overrun error on the line.
    TransmissionError,
    /// MT-SICS `EL`: the command cannot be executed.
    LogicalError,
    /// SMA / NCI `?`: unknown command.
    UnknownCommand,
    /// SMA `!`: communication error.
    CommunicationError,
    /// SMA `E`: zero error.
    ZeroError,
    /// SMA `I` / NCI: initial zero error.
    InitialZeroError,
    /// SMA `T`: tare error.
    TareError,
    /// NCI: RAM, ROM or EEPROM error.
    MemoryError,
    /// NCI: faulty calibration.
    CalibrationError,
}

/// One decoded message from a scale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScaleEvent {
    /// A weight.
    Weight(WeightSample),
    /// Over capacity: no weight can be given.
    Overload,
    /// Under capacity (below zero range): no weight can be given.
    Underload,
    /// MT-SICS `S I`: not executable now (busy or no stability in time).
    Busy,
    /// An acknowledgement line (`Z A`, Radwag `T A`) before the final answer.
    Acknowledged,
    /// The device reports an error.
    Device(DeviceError),
}

/// Why bytes from a scale could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ScaleError {
    /// The line is not a message of the expected protocol.
    #[error("not a {protocol} message; check the scale's interface mode and line settings")]
    NotRecognised {
        /// The protocol that was expected.
        protocol: &'static str,
    },
    /// The weight field is not a number.
    #[error("{protocol} weight field is not a number")]
    BadWeight {
        /// The protocol.
        protocol: &'static str,
    },
    /// A frame checksum does not match.
    #[error(
        "Toledo frame checksum is 0x{found:02x}, computed 0x{expected:02x}; line noise or wrong parity setting"
    )]
    BadChecksum {
        /// Computed checksum.
        expected: u8,
        /// Received checksum.
        found: u8,
    },
    /// A frame was longer than the protocol allows and was dropped.
    #[error("{protocol} frame too long; dropped and resynchronised")]
    Overflow {
        /// The protocol.
        protocol: &'static str,
    },
}

/// Where the unit starts in `weight + unit`: after the last byte that is not
/// a letter or a space; `None` when there are no unit letters.
fn unit_start(field: &[u8]) -> Option<usize> {
    let start = field
        .iter()
        .rposition(|b| !(b.is_ascii_alphabetic() || *b == b' '))
        .map_or(0, |i| i + 1);
    field
        .get(start..)
        .is_some_and(|u| u.iter().any(u8::is_ascii_alphabetic))
        .then_some(start)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_parse_and_print() {
        let d = Decimal::parse(b"   -12.340 ").expect("number");
        assert_eq!(
            d,
            Decimal {
                mantissa: -12340,
                scale: 3
            }
        );
        let mut s: heapless::String<16> = heapless::String::new();
        core::fmt::write(&mut s, format_args!("{d}")).expect("fits");
        assert_eq!(s, "-12.340");
        assert_eq!(Decimal::parse(b"1.2.3"), None);
        assert_eq!(Decimal::parse(b"-"), None);
        assert_eq!(Decimal::parse(b"."), None);
    }

    #[test]
    fn units_ignore_case() {
        assert_eq!(Unit::parse(b"KG"), Unit::Kg);
        assert_eq!(Unit::parse(b"lb "), Unit::Lb);
        assert_eq!(Unit::parse(b"ct"), Unit::Other(*b"ct  "));
    }
}
