//! Stability (no-motion) detection.
//!
//! A value is stable once `required` consecutive samples all lie within a
//! band: the spread (largest minus smallest) of the current run is at most
//! `band`. A sample that would widen the spread past the band ends the run
//! and starts a new one with that sample alone, so after any motion it takes
//! `required` fresh samples to be stable again. This is the "no motion over
//! a period" rule of weighing indicators, with the period expressed in
//! samples (`required` / sample rate) and the band in weight steps.
//!
//! The detector only sees numbers; callers choose the unit (the weigher
//! feeds it calibrated weight mantissas, so the band is in display steps).

/// Counts consecutive samples that stay within a tolerance band.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StabilityDetector {
    band: u64,
    required: u16,
    run_min: i64,
    run_max: i64,
    run_len: u16,
}

impl StabilityDetector {
    /// Stable after `required` consecutive samples (at least 1) whose spread
    /// is at most `band`.
    pub const fn new(band: u64, required: u16) -> Self {
        StabilityDetector {
            band,
            required: if required == 0 { 1 } else { required },
            run_min: 0,
            run_max: 0,
            run_len: 0,
        }
    }

    /// Add one sample; returns whether the value is now stable.
    pub fn push(&mut self, value: i64) -> bool {
        let low = self.run_min.min(value);
        let high = self.run_max.max(value);
        if self.run_len > 0 && high.abs_diff(low) <= self.band {
            self.run_min = low;
            self.run_max = high;
            // Saturate: a platform can sit still for longer than u16 samples.
            self.run_len = self.run_len.saturating_add(1);
        } else {
            self.run_min = value;
            self.run_max = value;
            self.run_len = 1;
        }
        self.is_stable()
    }

    /// Whether the current run is long enough.
    pub fn is_stable(&self) -> bool {
        self.run_len >= self.required
    }

    /// Forget the current run (the next sample starts a new one).
    pub fn reset(&mut self) {
        self.run_len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(d: &mut StabilityDetector, input: &[i64]) -> std::vec::Vec<bool> {
        input.iter().map(|&v| d.push(v)).collect()
    }

    #[test]
    fn stable_after_n_samples_within_the_band() {
        let mut d = StabilityDetector::new(2, 3);
        assert_eq!(
            run(&mut d, &[0, 100, 101, 99, 101, 104, 104, 103]),
            [false, false, false, true, true, false, false, true]
        );
    }

    #[test]
    fn drift_wider_than_the_band_is_motion() {
        // Each step is within 2 of the last, but the run's spread is not.
        let mut d = StabilityDetector::new(2, 3);
        assert_eq!(
            run(&mut d, &[0, 1, 2, 3, 4]),
            [false, false, true, false, false]
        );
    }

    #[test]
    fn reset_and_degenerate_settings() {
        let mut d = StabilityDetector::new(0, 0);
        assert!(d.push(5), "required 0 behaves as 1");
        d.reset();
        assert!(!d.is_stable());
        let mut d = StabilityDetector::new(u64::MAX, 2);
        assert_eq!(run(&mut d, &[i64::MIN, i64::MAX]), [false, true]);
    }
}
