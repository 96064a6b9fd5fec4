//! Wall-clock time as the binaries record it: Unix milliseconds.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch; 0 for a clock set before 1970, and
/// `i64::MAX` past the year 292 million (neither panics).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    #[test]
    fn is_after_2025() {
        assert!(super::now_ms() > 1_735_689_600_000);
    }
}
