//! Capped exponential backoff: the delay schedule of every retry loop in
//! the binaries (device reconnects, MQTT reconnects, ERP delivery retries).
//!
//! Retry `n` (0-based) has the ceiling `min(max, min * 2^n)`, never below
//! `min`. A caller that wants no jitter waits the ceiling (a device on its
//! own port has no crowd to spread out); one that does draws uniformly from
//! `[min, ceiling]` ([`Backoff::delay_with`], AWS's "full jitter" with the
//! floor raised from 0 to `min`, so a broken peer is never hammered). The
//! draw is the caller's, so schedules test without randomness: a retry
//! loop takes a [`Jitter`] (its random source, or [`FixedJitter`] in tests).

use std::time::Duration;

/// A backoff schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Smallest delay, and the ceiling of the first retry.
    pub min: Duration,
    /// Largest delay.
    pub max: Duration,
}

impl Backoff {
    /// The ceiling of retry `attempt` (0-based): `min * 2^attempt`, capped
    /// at `max`, never below `min`.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
        self.min
            .checked_mul(factor)
            .map_or(self.max, |d| d.min(self.max))
            .max(self.min)
    }

    /// The delay for retry `attempt` given `unit`, a draw in `[0, 1)`
    /// (clamped): `min + unit * (ceiling - min)`.
    pub fn delay_with(&self, attempt: u32, unit: f64) -> Duration {
        let ceiling = self.ceiling(attempt);
        let span = ceiling.saturating_sub(self.min);
        self.min + span.mul_f64(unit.clamp(0.0, 1.0))
    }
}

/// A source of jitter: draws in `[0, 1)` (values outside are clamped by
/// [`Backoff::delay_with`]). The binaries implement it over their random
/// generator; tests use [`FixedJitter`].
pub trait Jitter: Send {
    /// The next draw.
    fn unit(&mut self) -> f64;
}

/// The same draw every time: deterministic schedules in tests.
#[derive(Debug, Clone, Copy)]
pub struct FixedJitter(pub f64);

impl Jitter for FixedJitter {
    fn unit(&mut self) -> f64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_and_jitter_stays_in_range() {
        let ms = Duration::from_millis;
        let b = Backoff {
            min: ms(100),
            max: ms(500),
        };
        let ceilings: Vec<_> = (0..5).map(|n| b.ceiling(n)).collect();
        assert_eq!(ceilings, [ms(100), ms(200), ms(400), ms(500), ms(500)]);
        assert_eq!(b.ceiling(u32::MAX), ms(500));
        assert_eq!(b.delay_with(2, 0.0), ms(100));
        assert_eq!(b.delay_with(2, 0.5), ms(250));
        assert_eq!(b.delay_with(2, 7.0), ms(400));
        // A cap below the floor: the floor wins.
        let inverted = Backoff {
            min: ms(900),
            max: ms(300),
        };
        assert_eq!(inverted.ceiling(3), ms(900));
    }

    #[test]
    fn a_fixed_jitter_gives_a_repeatable_schedule() {
        let ms = Duration::from_millis;
        let b = Backoff {
            min: ms(200),
            max: ms(30_000),
        };
        let mut j = FixedJitter(1.0);
        let delays: Vec<_> = (0..3).map(|n| b.delay_with(n, j.unit())).collect();
        assert_eq!(delays, [ms(200), ms(400), ms(800)]);
    }
}
