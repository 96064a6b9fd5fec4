//! Calibration: raw counts → an exact weight.
//!
//! A load cell is linear over its range, so two points define it: the counts
//! with the platform empty (`zero`) and the counts with a known reference
//! weight on it. The weight of `c` counts is then
//! `(c − zero) × reference / (loaded − zero)`, computed in integers and
//! rounded half away from zero, with as many decimals as the reference was
//! given with (a reference of `5.000` kg gives grams resolution). No floats:
//! the result is a [`Decimal`] like every other scale reading.

use crate::scale::{Decimal, Unit};

use super::div_round;

/// Why a calibration cannot be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CalibrationError {
    /// The reference load read the same counts as the empty platform.
    #[error(
        "the reference load read the same counts as the empty platform; put the reference weight on and read again"
    )]
    NoSpan,
    /// The reference weight is zero.
    #[error("the reference weight is zero; calibrate with a known non-zero weight")]
    ZeroReference,
}

/// A two-point calibration of one load cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Calibration {
    /// Counts with the platform empty.
    zero: i32,
    /// Counts the reference added (non-zero).
    span: i64,
    /// The reference weight (non-zero mantissa).
    reference: Decimal,
    /// Unit of `reference` and of every weight.
    unit: Unit,
}

impl Calibration {
    /// Calibrate from the counts with the platform empty (`zero`) and with
    /// `reference` on it (`loaded`).
    pub fn from_reference(
        zero: i32,
        loaded: i32,
        reference: Decimal,
        unit: Unit,
    ) -> Result<Calibration, CalibrationError> {
        let span = i64::from(loaded) - i64::from(zero);
        if span == 0 {
            return Err(CalibrationError::NoSpan);
        }
        if reference.mantissa == 0 {
            return Err(CalibrationError::ZeroReference);
        }
        Ok(Calibration {
            zero,
            span,
            reference,
            unit,
        })
    }

    /// Counts with the platform empty.
    pub fn zero(&self) -> i32 {
        self.zero
    }

    /// Move the zero point (re-zero an empty platform) keeping the slope.
    pub fn set_zero(&mut self, zero: i32) {
        self.zero = zero;
    }

    /// The unit of every weight.
    pub fn unit(&self) -> Unit {
        self.unit
    }

    /// Weight of `counts` counts above zero (a difference of raw counts).
    pub fn weight_of(&self, counts: i64) -> Decimal {
        // Keep the sign in the numerator so the denominator is positive.
        let (num, den) = if self.span < 0 {
            (-i128::from(counts), -i128::from(self.span))
        } else {
            (i128::from(counts), i128::from(self.span))
        };
        let mantissa = div_round(num.saturating_mul(i128::from(self.reference.mantissa)), den);
        Decimal {
            mantissa: i64::try_from(mantissa).unwrap_or(if mantissa < 0 {
                i64::MIN
            } else {
                i64::MAX
            }),
            scale: self.reference.scale,
        }
    }

    /// Weight of the raw count `raw` (relative to the calibrated zero).
    pub fn weight(&self, raw: i32) -> Decimal {
        self.weight_of(i64::from(raw) - i64::from(self.zero))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kg(mantissa: i64) -> Decimal {
        Decimal { mantissa, scale: 3 }
    }

    #[test]
    fn two_points_define_the_line() {
        // 5.000 kg adds 100 000 counts: 20 counts per gram.
        let cal = Calibration::from_reference(1_000, 101_000, kg(5_000), Unit::Kg).expect("span");
        assert_eq!(cal.weight(1_000), kg(0));
        assert_eq!(cal.weight(101_000), kg(5_000));
        assert_eq!(cal.weight(21_000), kg(1_000));
        assert_eq!(cal.weight(1_029), kg(1), "29 counts = 1.45 g rounds to 1 g");
        assert_eq!(cal.weight(1_030), kg(2), "1.5 g rounds away from zero");
        assert_eq!(cal.weight(-19_000), kg(-1_000));
        assert_eq!(cal.unit(), Unit::Kg);
    }

    #[test]
    fn an_inverted_cell_still_reads_positive() {
        let cal = Calibration::from_reference(0, -50_000, kg(2_500), Unit::Kg).expect("span");
        assert_eq!(cal.weight(-20_000), kg(1_000));
    }

    #[test]
    fn rezeroing_keeps_the_slope() {
        let mut cal = Calibration::from_reference(0, 10, kg(1), Unit::G).expect("span");
        cal.set_zero(100);
        assert_eq!(cal.zero(), 100);
        assert_eq!(cal.weight(110), kg(1));
    }

    #[test]
    fn degenerate_calibrations_are_refused() {
        assert_eq!(
            Calibration::from_reference(7, 7, kg(1), Unit::Kg),
            Err(CalibrationError::NoSpan)
        );
        assert_eq!(
            Calibration::from_reference(0, 7, kg(0), Unit::Kg),
            Err(CalibrationError::ZeroReference)
        );
    }

    #[test]
    fn extremes_saturate() {
        let cal = Calibration::from_reference(
            0,
            1,
            Decimal {
                mantissa: i64::MAX,
                scale: 0,
            },
            Unit::G,
        )
        .expect("span");
        assert_eq!(cal.weight_of(i64::MAX).mantissa, i64::MAX);
        assert_eq!(cal.weight_of(i64::MIN).mantissa, i64::MIN);
    }
}
