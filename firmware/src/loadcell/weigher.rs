//! The weighing pipeline: raw counts → filter → calibration → stability.
//!
//! [`Weigher::push`] takes one raw conversion and returns a
//! [`LoadCellReading`] whose [`WeightState`] is always explicit: `Stable`,
//! `Motion`, or `Overload`/`Underload` when the ADC sat at a saturation code
//! (then no weight is given and the filter and the stability run restart, so
//! a clipped value never averages into a later "stable" weight).
//!
//! Here the detector *is* the device's stability flag: a bridge built on a
//! bare load cell has no indicator to ask. Tare and re-zero are only taken
//! from a stable reading, as an indicator would.

use crate::scale::{Decimal, ScaleEvent, Unit, WeightKind, WeightSample};

use super::{Calibration, Filter, RAW_MAX, RAW_MIN, StabilityDetector};

/// What a reading is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WeightState {
    /// The weight is still moving (or the stability run is not long enough yet).
    Motion,
    /// No motion: the weight may be used for a transaction.
    Stable,
    /// The ADC saturated on the heavy side: no weight can be given.
    Overload,
    /// The ADC saturated on the light side: no weight can be given.
    Underload,
}

/// One reading of a load cell, after the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LoadCellReading {
    /// The conversion as the ADC gave it.
    pub raw: i32,
    /// The count after the filter (equal to `raw` on overload/underload).
    pub filtered: i32,
    /// Net weight (gross when no tare is set); zero on overload/underload.
    pub net: Decimal,
    /// The tare, when one is set.
    pub tare: Option<Decimal>,
    /// Unit of `net` and `tare`.
    pub unit: Unit,
    /// Stable, motion, overload or underload.
    pub state: WeightState,
}

impl LoadCellReading {
    /// Whether the weight is stable.
    pub fn is_stable(&self) -> bool {
        self.state == WeightState::Stable
    }

    /// The same reading in the shape every scale protocol decodes to.
    pub fn to_scale_event(&self) -> ScaleEvent {
        match self.state {
            WeightState::Overload => ScaleEvent::Overload,
            WeightState::Underload => ScaleEvent::Underload,
            WeightState::Motion | WeightState::Stable => ScaleEvent::Weight(WeightSample {
                value: self.net,
                unit: self.unit,
                kind: if self.tare.is_some() {
                    WeightKind::Net
                } else {
                    WeightKind::Gross
                },
                stable: self.is_stable(),
                at_zero: false,
                tare: self.tare,
            }),
        }
    }
}

/// Filter, calibration, tare and stability for one load cell.
#[derive(Debug, Clone)]
pub struct Weigher<F> {
    filter: F,
    calibration: Calibration,
    stability: StabilityDetector,
    /// Tare in counts above the calibrated zero.
    tare: Option<i64>,
    /// Filtered count of the last reading, if it was stable.
    last_stable: Option<i32>,
}

impl<F: Filter> Weigher<F> {
    /// A pipeline with no tare set.
    pub fn new(filter: F, calibration: Calibration, stability: StabilityDetector) -> Self {
        Weigher {
            filter,
            calibration,
            stability,
            tare: None,
            last_stable: None,
        }
    }

    /// Run one raw conversion through the pipeline.
    pub fn push(&mut self, raw: i32) -> LoadCellReading {
        let unit = self.calibration.unit();
        let tare = self.tare.map(|t| self.calibration.weight_of(t));
        if raw >= RAW_MAX || raw <= RAW_MIN {
            self.reset();
            // Which side is "heavy" depends on how the cell is wired.
            let heavy = self.calibration.weight(raw).mantissa > 0;
            return LoadCellReading {
                raw,
                filtered: raw,
                net: Decimal::default(),
                tare,
                unit,
                state: if heavy {
                    WeightState::Overload
                } else {
                    WeightState::Underload
                },
            };
        }
        let filtered = self.filter.push(raw);
        let above_zero = i64::from(filtered) - i64::from(self.calibration.zero());
        let net = self
            .calibration
            .weight_of(above_zero.saturating_sub(self.tare.unwrap_or(0)));
        let stable = self.stability.push(net.mantissa);
        self.last_stable = stable.then_some(filtered);
        LoadCellReading {
            raw,
            filtered,
            net,
            tare,
            unit,
            state: if stable {
                WeightState::Stable
            } else {
                WeightState::Motion
            },
        }
    }

    /// Take the current stable load as tare; returns the tare weight, or
    /// `None` (nothing changed) when the last reading was not stable.
    pub fn tare(&mut self) -> Option<Decimal> {
        let filtered = self.last_stable?;
        let counts = i64::from(filtered) - i64::from(self.calibration.zero());
        self.tare = Some(counts);
        self.stability.reset();
        Some(self.calibration.weight_of(counts))
    }

    /// Remove the tare: readings are gross again.
    pub fn clear_tare(&mut self) {
        self.tare = None;
        self.stability.reset();
    }

    /// Take the current stable load as the new zero (empty platform);
    /// returns whether it did (only from a stable reading).
    pub fn zero(&mut self) -> bool {
        let Some(filtered) = self.last_stable else {
            return false;
        };
        self.calibration.set_zero(filtered);
        self.stability.reset();
        true
    }

    /// Forget the filter window and the stability run (after a fault or a
    /// gain change); the next readings are motion until stable again.
    pub fn reset(&mut self) {
        self.filter.reset();
        self.stability.reset();
        self.last_stable = None;
    }

    /// The calibration in use (its zero moves with [`Weigher::zero`]).
    pub fn calibration(&self) -> &Calibration {
        &self.calibration
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loadcell::MovingAverage;

    fn g(mantissa: i64) -> Decimal {
        Decimal { mantissa, scale: 0 }
    }

    /// 10 counts per gram, zero at 1 000 counts, 2 samples averaged,
    /// stable after 3 within ±1 g.
    fn weigher() -> Weigher<MovingAverage<2>> {
        let cal = Calibration::from_reference(1_000, 11_000, g(1_000), Unit::G).expect("span");
        Weigher::new(MovingAverage::new(), cal, StabilityDetector::new(1, 3))
    }

    fn states(
        w: &mut Weigher<MovingAverage<2>>,
        raws: &[i32],
    ) -> std::vec::Vec<(i64, WeightState)> {
        raws.iter()
            .map(|&r| {
                let reading = w.push(r);
                (reading.net.mantissa, reading.state)
            })
            .collect()
    }

    #[test]
    fn motion_then_stable() {
        use WeightState::{Motion, Stable};
        let mut w = weigher();
        assert_eq!(
            states(&mut w, &[1_000, 3_000, 6_000, 6_000, 6_000, 6_010]),
            [
                (0, Motion),
                (100, Motion),
                (350, Motion),
                (500, Motion),
                (500, Motion),
                (501, Stable)
            ]
        );
    }

    #[test]
    fn tare_only_when_stable_then_net() {
        let mut w = weigher();
        w.push(3_000);
        assert_eq!(w.tare(), None, "motion: no tare");
        for _ in 0..3 {
            w.push(3_000);
        }
        assert_eq!(w.tare(), Some(g(200)));
        let r = w.push(5_000);
        assert_eq!(
            (r.net, r.tare),
            (g(100), Some(g(200))),
            "avg 4 000 counts = 300 g gross"
        );
        match r.to_scale_event() {
            ScaleEvent::Weight(s) => {
                assert_eq!(s.kind, WeightKind::Net);
                assert!(!s.stable);
            }
            other => panic!("{other:?}"),
        }
        w.clear_tare();
        assert_eq!(w.push(5_000).tare, None);
    }

    #[test]
    fn zero_moves_the_calibration() {
        let mut w = weigher();
        for _ in 0..3 {
            w.push(1_050);
        }
        assert!(w.zero());
        assert_eq!(w.calibration().zero(), 1_050);
        assert_eq!(w.push(1_050).net, g(0));
    }

    #[test]
    fn saturation_is_overload_and_restarts_the_pipeline() {
        let mut w = weigher();
        for _ in 0..3 {
            w.push(2_000);
        }
        let r = w.push(RAW_MAX);
        assert_eq!(r.state, WeightState::Overload);
        assert_eq!(r.to_scale_event(), ScaleEvent::Overload);
        assert_eq!(w.push(RAW_MIN).state, WeightState::Underload);
        assert_eq!(w.tare(), None, "no stable reading since");
        assert_eq!(w.push(2_000).state, WeightState::Motion, "filter restarted");
    }
}
