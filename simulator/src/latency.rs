//! Latency figures: how long an event took from the moment it was made to
//! its booking at the mock ERP, summarised as nearest-rank percentiles.
//!
//! # Where the two ends are read
//!
//! - *Made*: for an event posted over HTTP, just before the POST is sent;
//!   for an event the agent's station rules make from device bytes, just
//!   after the bytes that trigger it were written to the pseudo-terminal
//!   (which chunk triggers which event is found by
//!   [`scenario::trigger`](crate::scenario::trigger)).
//! - *Booked*: when the mock ERP committed the effect
//!   ([`Effect::booked_ms`](crate::mock_erp::Effect::booked_ms)). Retries
//!   answered as replays do not move it.
//!
//! Both ends read [`unix_ms`] in the same process (the demo runs the mock
//! ERP in-process), so the clocks agree; a step of the wall clock during a
//! run would show as one odd sample, and a negative one is clamped to 0.
//!
//! Pure apart from [`unix_ms`].

use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// Milliseconds since the Unix epoch now (0 if the clock is before it).
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Made-to-booked latency of a set of events, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Latency {
    /// Events measured (booked, with a known moment of making).
    pub events: u64,
    /// Median.
    pub p50_ms: u64,
    /// 90th percentile.
    pub p90_ms: u64,
    /// 99th percentile.
    pub p99_ms: u64,
    /// Slowest.
    pub max_ms: u64,
}

impl Latency {
    /// The percentiles of `samples` (milliseconds, any order); `None` when
    /// there are none.
    pub fn of(samples: &[u64]) -> Option<Latency> {
        let mut sorted = samples.to_vec();
        sorted.sort_unstable();
        let max_ms = *sorted.last()?;
        Some(Latency {
            events: sorted.len() as u64,
            p50_ms: nearest_rank(&sorted, 50),
            p90_ms: nearest_rank(&sorted, 90),
            p99_ms: nearest_rank(&sorted, 99),
            max_ms,
        })
    }
}

/// The nearest-rank `pct`th percentile of non-empty sorted samples: the
/// smallest sample with at least `pct`% of the samples at or below it.
fn nearest_rank(sorted: &[u64], pct: usize) -> u64 {
    let rank = (sorted.len() * pct).div_ceil(100).max(1);
    sorted.get(rank - 1).copied().unwrap_or_default()
}

/// The latency of one event: booked minus made, clamped at 0.
pub fn sample(made_ms: u64, booked_ms: u64) -> u64 {
    booked_ms.saturating_sub(made_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let samples: Vec<u64> = (1..=100).rev().collect();
        assert_eq!(
            Latency::of(&samples),
            Some(Latency {
                events: 100,
                p50_ms: 50,
                p90_ms: 90,
                p99_ms: 99,
                max_ms: 100
            })
        );
        let one = Latency::of(&[7]).expect("one sample");
        assert_eq!((one.p50_ms, one.p99_ms, one.max_ms), (7, 7, 7));
        // Three samples: the median is the second, p90 and p99 the third.
        let three = Latency::of(&[30, 10, 20]).expect("three samples");
        assert_eq!((three.p50_ms, three.p90_ms, three.p99_ms), (20, 30, 30));
        assert_eq!(Latency::of(&[]), None);
    }

    #[test]
    fn a_clock_step_backwards_is_clamped() {
        assert_eq!(sample(1_000, 1_250), 250);
        assert_eq!(sample(1_000, 990), 0);
    }
}
