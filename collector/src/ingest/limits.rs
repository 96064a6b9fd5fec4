//! Input limits on what devices publish (`[security]`): the largest payload
//! ingest reads, and a per-device rate limit.
//!
//! The rate limit is a token bucket per device (keyed by the topic's device
//! level): `device_burst` messages at once, refilled at
//! `device_messages_per_sec`. A batch over the limit is not stored and not
//! acked (MQTT still gets its PUBACK, so the broker does not hold it in
//! flight); the agent's ack timeout sends it again later, when the bucket
//! has refilled. The defaults are far above what a healthy device sends
//! (a backlog drain of 1000-event batches stays below them), so the limit
//! only bites on a runaway or hostile client.
//!
//! [`DeviceRateLimiter`] is pure: time is passed in. It remembers at most
//! [`MAX_TRACKED_DEVICES`] devices; past that, the devices whose buckets
//! are full again (idle ones) are forgotten, so random device names cannot
//! grow it without bound.

use std::collections::HashMap;
use std::time::Instant;

use dockline_protocol::DeviceId;
use dockline_protocol::codec::MAX_MESSAGE_BYTES;
use serde::{Deserialize, Serialize};

/// Most devices with a bucket at once.
pub const MAX_TRACKED_DEVICES: usize = 100_000;

/// `[security]`: limits on device input.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SecurityConfig {
    /// Largest MQTT payload ingest reads, bytes; larger ones are refused
    /// unread and counted as `oversize`. At most the protocol's 1 MiB.
    /// Set the broker's own limit (Mosquitto `message_size_limit`) at or
    /// below this so oversize messages are stopped before they reach us.
    #[serde(default = "default_max_payload_bytes")]
    pub max_payload_bytes: usize,
    /// Sustained messages per second one device may publish (events and
    /// status together); 0 turns the rate limit off.
    #[serde(default = "default_rate")]
    pub device_messages_per_sec: f64,
    /// Messages one device may publish in a burst above the sustained rate.
    #[serde(default = "default_burst")]
    pub device_burst: u32,
    /// Events more than this many sequence numbers above their device's
    /// watermark are quarantined, not trusted ([`crate::inbox::watermark`]); a real
    /// device sends them again once its backlog below is stored.
    #[serde(default = "default_max_seq_ahead")]
    pub max_seq_ahead: u64,
}

impl Default for SecurityConfig {
    fn default() -> Self {
        Self {
            max_payload_bytes: default_max_payload_bytes(),
            device_messages_per_sec: default_rate(),
            device_burst: default_burst(),
            max_seq_ahead: default_max_seq_ahead(),
        }
    }
}

fn default_max_payload_bytes() -> usize {
    MAX_MESSAGE_BYTES
}
fn default_rate() -> f64 {
    500.0
}
fn default_burst() -> u32 {
    1000
}
fn default_max_seq_ahead() -> u64 {
    crate::inbox::watermark::DEFAULT_MAX_SEQ_AHEAD
}

impl SecurityConfig {
    /// Checks the values; the error names the key and the fix.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if self.max_seq_ahead == 0 {
            return Err((
                "security.max_seq_ahead",
                "is 0; use at least the largest backlog a device may hold (default 1000000)"
                    .to_owned(),
            ));
        }
        if self.max_payload_bytes == 0 || self.max_payload_bytes > MAX_MESSAGE_BYTES {
            return Err((
                "security.max_payload_bytes",
                format!(
                    "is {}; use 1 to {MAX_MESSAGE_BYTES} (the protocol's message limit)",
                    self.max_payload_bytes
                ),
            ));
        }
        if !self.device_messages_per_sec.is_finite() || self.device_messages_per_sec < 0.0 {
            return Err((
                "security.device_messages_per_sec",
                format!(
                    "is {}; use a number >= 0 (0 turns the rate limit off)",
                    self.device_messages_per_sec
                ),
            ));
        }
        if self.device_messages_per_sec > 0.0 && self.device_burst == 0 {
            return Err((
                "security.device_burst",
                "is 0, so every message would be refused; use at least 1".into(),
            ));
        }
        Ok(())
    }
}

/// One device's bucket.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Token buckets per device.
#[derive(Debug)]
pub struct DeviceRateLimiter {
    rate: f64,
    burst: f64,
    buckets: HashMap<DeviceId, Bucket>,
}

impl DeviceRateLimiter {
    /// A limiter for `config` (`None` when the rate limit is off).
    pub fn new(config: &SecurityConfig) -> Option<Self> {
        (config.device_messages_per_sec > 0.0).then(|| Self {
            rate: config.device_messages_per_sec,
            burst: f64::from(config.device_burst.max(1)),
            buckets: HashMap::new(),
        })
    }

    /// Takes one token of `device`'s bucket at `now`; false when it is empty.
    pub fn allow(&mut self, device: &DeviceId, now: Instant) -> bool {
        if !self.buckets.contains_key(device) && self.buckets.len() >= MAX_TRACKED_DEVICES {
            self.forget_idle(now);
        }
        let (rate, burst) = (self.rate, self.burst);
        let bucket = self.buckets.entry(device.clone()).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Drops the buckets that have refilled (their devices were idle long
    /// enough that a fresh bucket is the same); if none has, the oldest.
    fn forget_idle(&mut self, now: Instant) {
        let (rate, burst) = (self.rate, self.burst);
        self.buckets.retain(|_, b| {
            b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * rate < burst
        });
        if self.buckets.len() >= MAX_TRACKED_DEVICES
            && let Some(oldest) = self
                .buckets
                .iter()
                .min_by_key(|(_, b)| b.at)
                .map(|(d, _)| d.clone())
        {
            self.buckets.remove(&oldest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn limiter(rate: f64, burst: u32) -> DeviceRateLimiter {
        DeviceRateLimiter::new(&SecurityConfig {
            device_messages_per_sec: rate,
            device_burst: burst,
            ..SecurityConfig::default()
        })
        .expect("on")
    }

    #[test]
    fn a_burst_then_the_sustained_rate_per_device() {
        let t0 = Instant::now();
        let mut l = limiter(2.0, 3);
        let a = DeviceId::new("a").expect("id");
        let b = DeviceId::new("b").expect("id");
        assert!((0..3).all(|_| l.allow(&a, t0)), "the burst");
        assert!(!l.allow(&a, t0), "empty");
        assert!(l.allow(&b, t0), "another device has its own bucket");
        assert!(!l.allow(&a, t0 + Duration::from_millis(400)));
        assert!(l.allow(&a, t0 + Duration::from_millis(500)), "refilled one");
        // Idle for long: back to the burst, never above it.
        let later = t0 + Duration::from_secs(60);
        assert!((0..3).all(|_| l.allow(&a, later)));
        assert!(!l.allow(&a, later));
    }

    #[test]
    fn off_when_rate_is_zero_and_bad_values_are_named() {
        let off = SecurityConfig {
            device_messages_per_sec: 0.0,
            ..SecurityConfig::default()
        };
        assert!(DeviceRateLimiter::new(&off).is_none());
        off.check().expect("0 is allowed");
        SecurityConfig::default().check().expect("defaults valid");
        for (c, key) in [
            (
                SecurityConfig {
                    max_payload_bytes: MAX_MESSAGE_BYTES + 1,
                    ..SecurityConfig::default()
                },
                "security.max_payload_bytes",
            ),
            (
                SecurityConfig {
                    device_messages_per_sec: -1.0,
                    ..SecurityConfig::default()
                },
                "security.device_messages_per_sec",
            ),
            (
                SecurityConfig {
                    device_burst: 0,
                    ..SecurityConfig::default()
                },
                "security.device_burst",
            ),
        ] {
            assert_eq!(c.check().expect_err(key).0, key);
        }
    }

    #[test]
    fn the_table_stays_bounded_by_forgetting_idle_devices() {
        let t0 = Instant::now();
        let mut l = limiter(1000.0, 1);
        for i in 0..MAX_TRACKED_DEVICES {
            let d = DeviceId::new(format!("d{i}")).expect("id");
            assert!(l.allow(&d, t0));
        }
        let later = t0 + Duration::from_secs(1);
        assert!(l.allow(&DeviceId::new("new").expect("id"), later));
        assert!(l.buckets.len() <= MAX_TRACKED_DEVICES);
    }
}
