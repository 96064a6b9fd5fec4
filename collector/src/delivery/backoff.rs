//! Capped exponential backoff with full jitter, shared by the MQTT reconnect
//! loop and ERP delivery retries.
//!
//! The delay before retry `n` (0-based) is drawn uniformly from
//! `[min, min(max, min * 2^n)]`. Jitter spreads the retries of many lanes or
//! many collectors so that a recovering ERP or broker is not hit by a
//! synchronised wave; the `min` floor keeps a broken peer from being hammered.
//! (This is AWS's "full jitter", `rand(0, min(cap, base * 2^n))`, with the
//! lower bound raised from 0 to `min`.)
//!
//! The random source is a [`Jitter`], so the ERP delivery policy can be
//! tested with a fixed draw ([`FixedJitter`]) and run with [`RandomJitter`].

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
    /// The ceiling of retry `attempt` (0-based): `min * 2^attempt`, capped at `max`.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
        self.min
            .checked_mul(factor)
            .map_or(self.max, |d| d.min(self.max))
            .max(self.min)
    }

    /// The delay for retry `attempt` given `unit`, a number in `[0, 1)`.
    pub fn delay_with(&self, attempt: u32, unit: f64) -> Duration {
        let ceiling = self.ceiling(attempt);
        let span = ceiling.saturating_sub(self.min);
        self.min + span.mul_f64(unit.clamp(0.0, 1.0))
    }

    /// The delay for retry `attempt` with a random jitter.
    pub fn delay(&self, attempt: u32) -> Duration {
        self.delay_with(attempt, rand::random::<f64>())
    }
}

/// A source of jitter: numbers in `[0, 1)`.
pub trait Jitter: Send {
    /// The next draw, in `[0, 1)` (values outside are clamped by the user).
    fn unit(&mut self) -> f64;
}

/// Jitter from the thread-local random generator.
#[derive(Debug, Clone, Copy, Default)]
pub struct RandomJitter;

impl Jitter for RandomJitter {
    fn unit(&mut self) -> f64 {
        rand::random::<f64>()
    }
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
    fn grows_then_caps_and_jitter_stays_in_range() {
        let b = Backoff {
            min: Duration::from_millis(200),
            max: Duration::from_millis(30_000),
        };
        assert_eq!(b.ceiling(0), Duration::from_millis(200));
        assert_eq!(b.ceiling(1), Duration::from_millis(400));
        assert_eq!(b.ceiling(3), Duration::from_millis(1600));
        assert_eq!(b.ceiling(20), Duration::from_millis(30_000));
        assert_eq!(b.ceiling(u32::MAX), Duration::from_millis(30_000));
        assert_eq!(b.delay_with(3, 0.0), Duration::from_millis(200));
        assert_eq!(b.delay_with(3, 1.0), Duration::from_millis(1600));
        assert_eq!(b.delay_with(3, 0.5), Duration::from_millis(900));
        for n in 0..40 {
            let d = b.delay(n);
            assert!(d >= b.min && d <= b.max, "{d:?}");
        }
    }
}
