//! Filters over raw counts, in fixed-capacity windows (`[i32; N]`, no heap).
//!
//! A [`Filter`] takes one raw count and returns the filtered count. Until its
//! window has filled, a filter works over the samples it has (so the first
//! output is the first sample, not a value dragged towards zero). A median
//! removes single spikes (a knock on the platform, a bit error); a moving
//! average then smooths the noise; chain them as a tuple `(median, average)`.
//! A window of `N = 0` passes samples through unchanged.

use super::div_round;

/// A filter over raw counts.
pub trait Filter {
    /// Add one sample; returns the filtered value.
    fn push(&mut self, raw: i32) -> i32;

    /// Forget every sample (after a saturation, a gain change or a fault).
    fn reset(&mut self);
}

/// The last `N` samples, oldest overwritten first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Window<const N: usize> {
    samples: [i32; N],
    /// Where the next sample goes.
    next: usize,
    /// How many slots hold samples (≤ N).
    len: usize,
}

impl<const N: usize> Window<N> {
    const fn new() -> Self {
        Window {
            samples: [0; N],
            next: 0,
            len: 0,
        }
    }

    fn push(&mut self, raw: i32) {
        if let Some(slot) = self.samples.get_mut(self.next) {
            *slot = raw;
            self.next = (self.next + 1) % N;
            self.len = (self.len + 1).min(N);
        }
    }

    /// The samples held, in no particular order.
    fn filled(&self) -> &[i32] {
        self.samples.get(..self.len).unwrap_or_default()
    }

    fn clear(&mut self) {
        self.next = 0;
        self.len = 0;
    }
}

/// Mean of the last `N` samples (rounded half away from zero).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MovingAverage<const N: usize> {
    window: Window<N>,
}

impl<const N: usize> MovingAverage<N> {
    /// An empty window.
    pub const fn new() -> Self {
        MovingAverage {
            window: Window::new(),
        }
    }
}

impl<const N: usize> Default for MovingAverage<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> Filter for MovingAverage<N> {
    fn push(&mut self, raw: i32) -> i32 {
        self.window.push(raw);
        let samples = self.window.filled();
        let Ok(count) = i64::try_from(samples.len()) else {
            return raw;
        };
        if count == 0 {
            return raw;
        }
        // i64 holds the sum of any window of 24-bit (indeed 32-bit) counts.
        let sum: i64 = samples.iter().map(|&s| i64::from(s)).sum();
        i32::try_from(div_round(sum.into(), count.into())).unwrap_or(raw)
    }

    fn reset(&mut self) {
        self.window.clear();
    }
}

/// Median of the last `N` samples (for an even count, the mean of the two
/// middle ones, rounded half away from zero).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MedianFilter<const N: usize> {
    window: Window<N>,
}

impl<const N: usize> MedianFilter<N> {
    /// An empty window.
    pub const fn new() -> Self {
        MedianFilter {
            window: Window::new(),
        }
    }
}

impl<const N: usize> Default for MedianFilter<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> Filter for MedianFilter<N> {
    fn push(&mut self, raw: i32) -> i32 {
        self.window.push(raw);
        let mut sorted = self.window.samples;
        let Some(samples) = sorted.get_mut(..self.window.len) else {
            return raw;
        };
        samples.sort_unstable();
        let mid = samples.len() / 2;
        match (samples.get(mid.wrapping_sub(1)), samples.get(mid)) {
            (Some(&low), Some(&high)) if samples.len() % 2 == 0 => {
                i32::try_from(div_round(i128::from(low) + i128::from(high), 2)).unwrap_or(raw)
            }
            (_, Some(&middle)) => middle,
            _ => raw,
        }
    }

    fn reset(&mut self) {
        self.window.clear();
    }
}

/// Two filters in a row: the first's output is the second's input.
impl<A: Filter, B: Filter> Filter for (A, B) {
    fn push(&mut self, raw: i32) -> i32 {
        let first = self.0.push(raw);
        self.1.push(first)
    }

    fn reset(&mut self) {
        self.0.reset();
        self.1.reset();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run<F: Filter>(filter: &mut F, input: &[i32]) -> std::vec::Vec<i32> {
        input.iter().map(|&x| filter.push(x)).collect()
    }

    #[test]
    fn moving_average_fills_then_slides() {
        let mut f = MovingAverage::<4>::new();
        assert_eq!(run(&mut f, &[4, 8, 0, 4, 20, -20]), [4, 6, 4, 4, 8, 1]);
        f.reset();
        assert_eq!(f.push(-7), -7);
    }

    #[test]
    fn average_rounds_half_away_from_zero() {
        let mut f = MovingAverage::<2>::new();
        assert_eq!(run(&mut f, &[1, 2]), [1, 2]);
        let mut f = MovingAverage::<2>::new();
        assert_eq!(run(&mut f, &[-1, -2]), [-1, -2]);
    }

    #[test]
    fn median_removes_a_spike() {
        let mut f = MedianFilter::<3>::new();
        assert_eq!(
            run(&mut f, &[10, 12, 9_000_000, 11, 13]),
            [10, 11, 12, 12, 13]
        );
    }

    #[test]
    fn zero_windows_pass_through_and_chains_compose() {
        assert_eq!(run(&mut MovingAverage::<0>::new(), &[5, -5]), [5, -5]);
        assert_eq!(run(&mut MedianFilter::<0>::new(), &[5, -5]), [5, -5]);
        let mut chain = (MedianFilter::<3>::new(), MovingAverage::<2>::new());
        // medians 10, 10, 10, 20, 20 → averages of two 10, 10, 10, 15, 20
        assert_eq!(
            run(&mut chain, &[10, 10, 500, 20, 20]),
            [10, 10, 10, 15, 20]
        );
    }

    #[test]
    fn extremes_do_not_overflow() {
        let mut f = MovingAverage::<3>::new();
        assert_eq!(run(&mut f, &[i32::MAX, i32::MAX]), [i32::MAX, i32::MAX]);
        let mut f = MedianFilter::<2>::new();
        assert_eq!(run(&mut f, &[i32::MIN, i32::MIN]), [i32::MIN, i32::MIN]);
    }
}
