//! When to try opening a device again after it disappeared.
//!
//! Doubling from a short first delay, capped: a replugged scanner is back
//! within a fraction of a second, and a device that stays away costs one
//! `open` per cap interval. No jitter: each device has its own port, so there
//! is no crowd of clients to spread out (unlike the MQTT uplink).

use std::time::Duration;

/// A capped doubling delay schedule.
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    cap: Duration,
    next: Duration,
}

impl Backoff {
    /// Starts at `first`, doubles after every attempt, never exceeds `cap`.
    pub fn new(first: Duration, cap: Duration) -> Self {
        let first = first.min(cap);
        Backoff {
            first,
            cap,
            next: first,
        }
    }

    /// The delay before the next attempt; later calls return longer ones.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = self.next.saturating_mul(2).min(self.cap);
        delay
    }

    /// The device is back: the next outage starts from the first delay again.
    pub fn reset(&mut self) {
        self.next = self.first;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_and_resets() {
        let ms = Duration::from_millis;
        let mut b = Backoff::new(ms(100), ms(500));
        let delays: Vec<_> = (0..5).map(|_| b.next_delay()).collect();
        assert_eq!(delays, [ms(100), ms(200), ms(400), ms(500), ms(500)]);
        b.reset();
        assert_eq!(b.next_delay(), ms(100));
        assert_eq!(Backoff::new(ms(900), ms(300)).next_delay(), ms(300));
    }
}
