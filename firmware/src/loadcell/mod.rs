//! Load cells: 24-bit bridge ADCs read over embedded-hal 1.0, and the
//! weighing pipeline that turns their raw counts into weights.
//!
//! Two drivers, both generic over the bus and both implementing
//! [`LoadCell`]:
//!
//! * [`Hx711`]: the two-wire HX711, bit-banged on an [`OutputPin`] (PD_SCK)
//!   and an [`InputPin`] (DOUT) with a [`DelayNs`].
//! * [`Nau7802`]: the NAU7802 on [`I2c`] at address `0x2A`, with its PGA,
//!   internal LDO and internal offset calibration.
//!
//! The pipeline is shared by both: a [`Filter`] over raw counts
//! ([`MovingAverage`], [`MedianFilter`], or the two chained as a tuple), a
//! [`Calibration`] (zero offset and span → an exact [`Decimal`] weight), and a
//! [`StabilityDetector`] (N consecutive samples within a band → stable).
//! [`Weigher`] runs the three and yields a [`LoadCellReading`] with an
//! explicit [`WeightState`]; a [`ReportGate`] then decides which readings
//! are news for the receiver.
//!
//! Invariants: raw counts are always the ADC's 24-bit two's complement value
//! sign-extended into an `i32` (see [`sign_extend_24`]), so every count lies
//! in [`RAW_MIN`]`..=`[`RAW_MAX`]; the two extremes are the ADC's saturation
//! codes and are reported as overload/underload, never as a weight. Nothing
//! here allocates or waits without a bound: every wait for the chip is a
//! counted number of polls that ends in a timeout error.
//!
//! [`OutputPin`]: embedded_hal::digital::OutputPin
//! [`InputPin`]: embedded_hal::digital::InputPin
//! [`DelayNs`]: embedded_hal::delay::DelayNs
//! [`I2c`]: embedded_hal::i2c::I2c
//! [`Decimal`]: crate::scale::Decimal

mod calibration;
mod filter;
mod hx711;
mod nau7802;
mod report;
mod stability;
mod weigher;

pub use calibration::{Calibration, CalibrationError};
pub use filter::{Filter, MedianFilter, MovingAverage};
pub use hx711::{Gain as Hx711Gain, Hx711, Hx711Error};
pub use nau7802::{
    Config as Nau7802Config, Gain as Nau7802Gain, Ldo as Nau7802Ldo, NAU7802_ADDRESS, Nau7802,
    Nau7802Error, SampleRate as Nau7802SampleRate,
};
pub use report::{Report, ReportGate};
pub use stability::StabilityDetector;
pub use weigher::{LoadCellReading, Weigher, WeightState};

/// Largest raw count: the 24-bit ADC's positive saturation code `0x7FFFFF`.
pub const RAW_MAX: i32 = 0x7F_FFFF;

/// Smallest raw count: the 24-bit ADC's negative saturation code `0x800000`.
pub const RAW_MIN: i32 = -0x80_0000;

/// A source of raw load-cell conversions; what the bridge main loop samples.
pub trait LoadCell {
    /// What a failed read reports (the driver's error, wrapping the bus's).
    type Error;

    /// The next conversion if one is ready, without waiting for one:
    /// `Ok(None)` means "not yet, poll again".
    fn try_read(&mut self) -> Result<Option<i32>, Self::Error>;
}

/// Sign-extend a 24-bit two's complement value (the low 24 bits of `raw`;
/// the high byte is ignored) to an `i32` in [`RAW_MIN`]`..=`[`RAW_MAX`].
pub const fn sign_extend_24(raw: u32) -> i32 {
    // Shift the sign bit (bit 23) into bit 31, then shift back arithmetically.
    #[allow(clippy::cast_possible_wrap)] // the wrap is the point
    let shifted = (raw << 8) as i32;
    shifted >> 8
}

/// The 24-bit two's complement code of `value` (its low 24 bits); the inverse
/// of [`sign_extend_24`] for values in [`RAW_MIN`]`..=`[`RAW_MAX`].
pub const fn to_24_bit(value: i32) -> u32 {
    #[allow(clippy::cast_sign_loss)] // the reinterpretation is the point
    let bits = value as u32;
    bits & 0xFF_FFFF
}

/// Sign-extend three bytes, most significant first (NAU7802 `ADCO_B2..B0`).
pub const fn from_be_24(bytes: [u8; 3]) -> i32 {
    let [high, mid, low] = bytes;
    sign_extend_24(u32::from_be_bytes([0, high, mid, low]))
}

/// `num / den` rounded half away from zero; `0` when `den` is not positive.
/// `i128` so that a count times a reference mantissa never overflows.
pub(crate) fn div_round(num: i128, den: i128) -> i128 {
    if den <= 0 {
        return 0;
    }
    let half = den / 2;
    let adjusted = if num >= 0 {
        num.saturating_add(half)
    } else {
        num.saturating_sub(half)
    };
    adjusted / den
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn division_rounds_half_away_from_zero() {
        assert_eq!(div_round(7, 2), 4);
        assert_eq!(div_round(-7, 2), -4);
        assert_eq!(div_round(5, 3), 2);
        assert_eq!(div_round(-5, 3), -2);
        assert_eq!(div_round(5, 0), 0);
    }

    #[test]
    fn sign_extension_covers_the_extremes() {
        assert_eq!(sign_extend_24(0x00_0000), 0);
        assert_eq!(sign_extend_24(0x00_0001), 1);
        assert_eq!(sign_extend_24(0x7F_FFFF), RAW_MAX);
        assert_eq!(sign_extend_24(0x80_0000), RAW_MIN);
        assert_eq!(sign_extend_24(0xFF_FFFF), -1);
        assert_eq!(sign_extend_24(0xABFF_FFFF), -1, "high byte ignored");
        assert_eq!(from_be_24([0xFF, 0xFF, 0xFE]), -2);
        assert_eq!(from_be_24([0x01, 0x02, 0x03]), 0x01_0203);
        assert_eq!(to_24_bit(-1), 0xFF_FFFF);
        assert_eq!(to_24_bit(RAW_MIN), 0x80_0000);
    }
}
