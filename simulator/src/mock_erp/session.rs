//! The mock ERP's login session, made to expire on request: after every
//! `every` new bookings the session lapses, and for the next `hold` each
//! request is answered 401 with `{"code": "session_expired"}` (the body
//! class the collector's webhook adapter recognises); then the ERP takes
//! requests again, as if the integration user had logged in anew.
//!
//! # Invariants
//!
//! - With `every = 0` the session never lapses, and turning the fault off
//!   ends a lapse in progress at once.
//! - A lapse starts with the booking that used the session up; that
//!   booking itself succeeds (it was answered before the session lapsed).
//! - Requests already past the check when the session lapses still book:
//!   a real ERP's in-flight requests race its session timeout the same way.
//!
//! Pure: the caller passes the clock and the knobs.

use std::time::{Duration, Instant};

/// When the session lapses and for how long.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Expiry {
    /// Lapse after this many new bookings; 0 for never.
    pub every: u64,
    /// How long each lapse lasts.
    pub hold: Duration,
}

/// The session's state.
#[derive(Debug, Clone, Default)]
pub struct Session {
    booked_since_login: u64,
    expired_until: Option<Instant>,
}

impl Session {
    /// Whether a request arriving at `now` is refused as from an expired
    /// session; logs in again once the lapse is over.
    pub fn refuses(&mut self, now: Instant, expiry: Expiry) -> bool {
        if expiry.every == 0 {
            *self = Session::default();
            return false;
        }
        match self.expired_until {
            Some(until) if now < until => true,
            Some(_) => {
                *self = Session::default();
                false
            }
            None => false,
        }
    }

    /// Counts a new booking at `now`; returns true when it used the session
    /// up (a lapse starts).
    pub fn booked(&mut self, now: Instant, expiry: Expiry) -> bool {
        if expiry.every == 0 {
            return false;
        }
        self.booked_since_login += 1;
        if self.booked_since_login < expiry.every || self.expired_until.is_some() {
            return false;
        }
        self.booked_since_login = 0;
        self.expired_until = Some(now + expiry.hold);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lapses_after_every_nth_booking_for_the_hold_then_accepts() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let expiry = Expiry {
            every: 2,
            hold: Duration::from_millis(100),
        };
        let mut s = Session::default();
        assert!(!s.refuses(ms(0), expiry));
        assert!(!s.booked(ms(0), expiry));
        assert!(!s.refuses(ms(10), expiry));
        assert!(s.booked(ms(10), expiry), "the second booking uses it up");
        assert!(s.refuses(ms(11), expiry));
        assert!(s.refuses(ms(109), expiry));
        assert!(!s.refuses(ms(110), expiry), "logged in again");
        assert!(!s.booked(ms(111), expiry));
        assert!(s.booked(ms(112), expiry));
        assert!(s.refuses(ms(113), expiry));
    }

    #[test]
    fn turning_the_fault_off_ends_a_lapse() {
        let t0 = Instant::now();
        let on = Expiry {
            every: 1,
            hold: Duration::from_secs(60),
        };
        let mut s = Session::default();
        assert!(s.booked(t0, on));
        assert!(s.refuses(t0, on));
        assert!(!s.refuses(t0, Expiry::default()));
        assert!(!s.booked(t0, Expiry::default()));
        assert!(!s.refuses(t0, on));
    }
}
