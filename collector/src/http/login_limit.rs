//! Backoff after failed password logins, per user and per client address.
//!
//! Argon2 makes one guess cost about 50 ms of a core, so without a limit a
//! client guesses about 20 passwords a second, forever. [`LoginLimiter`]
//! remembers failures per configured user name and per client address (an
//! IPv6 address counts as its /64, which one client usually holds whole):
//! the first [`FREE_FAILURES`] cost nothing, then each further failure
//! blocks that user and that address for twice as long as the one before,
//! from [`FIRST_BLOCK`] up to [`LONGEST_BLOCK`]. While either is blocked a
//! login is refused before any password check (HTTP 429 with
//! `Retry-After`), so a blocked guesser costs no argon2 time at all.
//!
//! Invariants:
//! - A success clears its user's failures, never an address's: a guesser
//!   who holds one valid account cannot reset its own address by logging
//!   in between guesses at another.
//! - Failures older than [`FORGET_AFTER`] (counted from the last one) are
//!   forgotten.
//! - Memory is bounded: user entries exist only for configured users (the
//!   caller passes `None` for unknown names, which then count against the
//!   address only), and at most [`MAX_ADDRESSES`] addresses are remembered;
//!   beyond that the one whose last failure is oldest goes first.
//!
//! Pure state: the caller passes the time, so tests need no clock.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Failures allowed before the first block (per user and per address).
pub const FREE_FAILURES: u32 = 5;
/// The first block, after failure `FREE_FAILURES + 1`; each later failure doubles it.
pub const FIRST_BLOCK: Duration = Duration::from_secs(1);
/// The longest block.
pub const LONGEST_BLOCK: Duration = Duration::from_secs(15 * 60);
/// A user's or address's failures are forgotten this long after its last one.
pub const FORGET_AFTER: Duration = Duration::from_secs(60 * 60);
/// Most client addresses remembered at once.
pub const MAX_ADDRESSES: usize = 10_000;

/// Failures of one user or one address.
#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
    blocked_until: Option<Instant>,
}

impl Failures {
    fn blocked(&self, now: Instant) -> Option<Duration> {
        self.blocked_until
            .filter(|until| *until > now)
            .map(|until| until - now)
    }

    fn stale(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.last) >= FORGET_AFTER && self.blocked(now).is_none()
    }

    /// One more failure at `now`.
    fn add(&mut self, now: Instant) {
        if self.stale(now) {
            self.count = 0;
        }
        self.count = self.count.saturating_add(1);
        self.last = now;
        self.blocked_until = block_after(self.count).map(|d| now + d);
    }
}

/// How long `count` failures block: nothing up to [`FREE_FAILURES`], then
/// [`FIRST_BLOCK`] doubling per failure up to [`LONGEST_BLOCK`].
pub fn block_after(count: u32) -> Option<Duration> {
    let over = count.checked_sub(FREE_FAILURES + 1)?;
    let factor = 1u32.checked_shl(over.min(31)).unwrap_or(u32::MAX);
    Some(FIRST_BLOCK.saturating_mul(factor).min(LONGEST_BLOCK))
}

/// The key a client address counts under: IPv4 whole, IPv6 by its /64.
fn address_key(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V4(_) => addr,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut segments = v6.segments();
                segments[4..].fill(0);
                IpAddr::V6(segments.into())
            }
        },
    }
}

/// Why a login is refused before its password is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blocked {
    /// Too many failures for this user name.
    User(Duration),
    /// Too many failures from this client address.
    Address(Duration),
}

impl Blocked {
    /// How long until a login may be tried again (rounded up to a second,
    /// for `Retry-After`).
    pub fn retry_after_secs(self) -> u64 {
        let d = match self {
            Self::User(d) | Self::Address(d) => d,
        };
        d.as_secs() + u64::from(d.subsec_nanos() > 0)
    }
}

/// Failed logins per user and per address, and the blocks they earn.
#[derive(Debug, Default)]
pub struct LoginLimiter {
    users: HashMap<String, Failures>,
    addresses: HashMap<IpAddr, Failures>,
}

impl LoginLimiter {
    /// An empty limiter.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether a login for `user` (a configured user, or `None`) from
    /// `addr` (if known) may be checked now.
    pub fn check(
        &self,
        user: Option<&str>,
        addr: Option<IpAddr>,
        now: Instant,
    ) -> Result<(), Blocked> {
        if let Some(d) = user
            .and_then(|u| self.users.get(u))
            .and_then(|f| f.blocked(now))
        {
            return Err(Blocked::User(d));
        }
        if let Some(d) = addr
            .and_then(|a| self.addresses.get(&address_key(a)))
            .and_then(|f| f.blocked(now))
        {
            return Err(Blocked::Address(d));
        }
        Ok(())
    }

    /// Records a failed login.
    pub fn failed(&mut self, user: Option<&str>, addr: Option<IpAddr>, now: Instant) {
        let fresh = Failures {
            count: 0,
            last: now,
            blocked_until: None,
        };
        if let Some(u) = user {
            self.users.entry(u.to_string()).or_insert(fresh).add(now);
        }
        if let Some(a) = addr {
            let key = address_key(a);
            if !self.addresses.contains_key(&key) && self.addresses.len() >= MAX_ADDRESSES {
                self.addresses.retain(|_, f| !f.stale(now));
                if self.addresses.len() >= MAX_ADDRESSES
                    && let Some(oldest) = self
                        .addresses
                        .iter()
                        .min_by_key(|(_, f)| f.last)
                        .map(|(k, _)| *k)
                {
                    self.addresses.remove(&oldest);
                }
            }
            self.addresses.entry(key).or_insert(fresh).add(now);
        }
    }

    /// Records a successful login of `user`: its failures are cleared (the
    /// address's stay, see the module doc).
    pub fn succeeded(&mut self, user: &str) {
        self.users.remove(user);
    }

    /// Addresses remembered now (tests and metrics).
    pub fn addresses(&self) -> usize {
        self.addresses.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().expect("ip"))
    }

    #[test]
    fn blocks_double_from_the_sixth_failure_up_to_the_longest() {
        assert_eq!(block_after(0), None);
        assert_eq!(block_after(FREE_FAILURES), None);
        assert_eq!(block_after(FREE_FAILURES + 1), Some(FIRST_BLOCK));
        assert_eq!(block_after(FREE_FAILURES + 2), Some(FIRST_BLOCK * 2));
        assert_eq!(block_after(FREE_FAILURES + 4), Some(FIRST_BLOCK * 8));
        assert_eq!(block_after(FREE_FAILURES + 20), Some(LONGEST_BLOCK));
        assert_eq!(block_after(u32::MAX), Some(LONGEST_BLOCK));
    }

    #[test]
    fn a_user_is_blocked_from_every_address_and_cleared_by_success() {
        let mut l = LoginLimiter::new();
        let t0 = Instant::now();
        for i in 0..FREE_FAILURES {
            assert_eq!(l.check(Some("alice"), ip("10.0.0.1"), t0), Ok(()));
            // A different address each time: only the user counts up.
            l.failed(Some("alice"), ip(&format!("10.0.1.{i}")), t0);
        }
        assert_eq!(l.check(Some("alice"), ip("10.0.0.1"), t0), Ok(()));
        l.failed(Some("alice"), ip("10.0.2.1"), t0);
        assert_eq!(
            l.check(Some("alice"), ip("10.0.0.9"), t0),
            Err(Blocked::User(FIRST_BLOCK))
        );
        assert_eq!(l.check(Some("bob"), ip("10.0.0.9"), t0), Ok(()));
        let t1 = t0 + FIRST_BLOCK;
        assert_eq!(l.check(Some("alice"), ip("10.0.0.9"), t1), Ok(()));
        l.failed(Some("alice"), ip("10.0.3.1"), t1);
        let blocked = l.check(Some("alice"), None, t1).expect_err("blocked");
        assert_eq!(blocked, Blocked::User(FIRST_BLOCK * 2));
        assert_eq!(blocked.retry_after_secs(), 2);
        l.succeeded("alice");
        assert_eq!(l.check(Some("alice"), None, t1), Ok(()));
    }

    #[test]
    fn an_address_is_blocked_for_every_user_name_and_success_does_not_clear_it() {
        let mut l = LoginLimiter::new();
        let t0 = Instant::now();
        for i in 0..=FREE_FAILURES {
            l.failed(
                (i % 2 == 0).then_some("alice"),
                ip("2001:db8::1"),
                t0 + Duration::from_millis(u64::from(i)),
            );
        }
        let now = t0 + Duration::from_millis(10);
        // The same /64, another user name: still blocked.
        assert!(matches!(
            l.check(Some("bob"), ip("2001:db8::ffff:1"), now),
            Err(Blocked::Address(_))
        ));
        assert_eq!(l.check(Some("bob"), ip("2001:db8:0:1::1"), now), Ok(()));
        l.succeeded("alice");
        assert!(l.check(None, ip("2001:db8::1"), now).is_err());
        // IPv4-mapped IPv6 counts as the IPv4 address.
        for _ in 0..=FREE_FAILURES {
            l.failed(None, ip("192.0.2.7"), now);
        }
        assert!(l.check(None, ip("::ffff:192.0.2.7"), now).is_err());
    }

    #[test]
    fn failures_are_forgotten_and_addresses_are_bounded() {
        let mut l = LoginLimiter::new();
        let t0 = Instant::now();
        for _ in 0..FREE_FAILURES {
            l.failed(Some("alice"), None, t0);
        }
        // An hour later the count starts again: one more failure does not block.
        let later = t0 + FORGET_AFTER;
        l.failed(Some("alice"), None, later);
        assert_eq!(l.check(Some("alice"), None, later), Ok(()));

        for i in 0..MAX_ADDRESSES as u32 + 10 {
            let a = IpAddr::V4(std::net::Ipv4Addr::from(i));
            l.failed(None, Some(a), t0 + Duration::from_micros(u64::from(i)));
        }
        assert_eq!(l.addresses(), MAX_ADDRESSES);
        // The oldest went first.
        assert!(
            !l.addresses
                .contains_key(&IpAddr::V4(std::net::Ipv4Addr::from(0)))
        );
    }
}
