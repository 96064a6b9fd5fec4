//! The circuit breaker of one ERP endpoint: closed, open, half-open. A state
//! machine without I/O or a clock of its own (`now` is passed in), shared by
//! every lane that posts to the endpoint.
//!
//! # States
//!
//! - **Closed**: requests flow. `failure_threshold` transient failures in a
//!   row (no success between them) open it.
//! - **Open** until a deadline, for one of three causes:
//!   - *failures*: the cool-down doubles with each trip that follows without
//!     a success, from `open_for` up to `open_max`;
//!   - *throttled*: the ERP asked for a pause (429/503 `Retry-After`,
//!     `research/erp-and-events.md` §2.3); a later pause never shortens an
//!     earlier one;
//!   - *halted*: authentication or configuration is wrong (§2.4 re-auth and
//!     config rows); rechecked every `halt_recheck`.
//! - **Half-open**: the deadline passed; exactly one caller gets a probe
//!   ([`Admission::Probe`]) and everyone else waits for its result. After
//!   failures the probe is *cheap* (a `HEAD` on the endpoint, §2.5); after a
//!   pause or a halt it must be a real request, because only a real (signed,
//!   idempotent) request shows that the throttle or the credential problem
//!   is over.
//!
//! # Invariants
//!
//! - While open, nobody is admitted, so lanes stop draining and no event's
//!   retry budget is spent (§2.5): attempts count only what was sent.
//! - At most one probe is out at a time; its result (success, failure,
//!   pause or halt) is always reported, which ends the half-open state.

use std::time::{Duration, Instant};

/// How long a caller waits before asking again while another probes.
pub const PROBE_POLL: Duration = Duration::from_millis(100);

/// The breaker's tunables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Transient failures in a row that open the breaker.
    pub failure_threshold: u32,
    /// First cool-down after failures.
    pub open_for: Duration,
    /// Longest cool-down after failures.
    pub open_max: Duration,
    /// How often a halted endpoint is tried again.
    pub halt_recheck: Duration,
}

/// Why the breaker is open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpenCause {
    /// Too many transient failures in a row.
    Failures,
    /// The ERP asked for a pause.
    Throttled,
    /// Authentication or configuration must be fixed.
    Halted {
        /// What is wrong and what to check.
        reason: String,
    },
}

/// What a probe must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeKind {
    /// A cheap request that shows the endpoint answers (`HEAD`).
    Cheap,
    /// The caller's real request, sent as the probe.
    Real,
}

/// The answer to "may I send now?".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Send.
    Go,
    /// Send a probe of this kind and report its result.
    Probe(ProbeKind),
    /// Ask again at this instant (or when woken).
    WaitUntil(Instant),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Closed,
    Open { until: Instant, cause: OpenCause },
    HalfOpen { cause: OpenCause, probing: bool },
}

/// A snapshot for the API and logs.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BreakerStatus {
    /// `closed`, `open` or `half_open`.
    pub state: &'static str,
    /// `failures`, `throttled` or `halted` when not closed.
    pub cause: Option<&'static str>,
    /// For a halt: what is wrong.
    pub reason: Option<String>,
    /// Milliseconds until the next probe, when open.
    pub retry_in_ms: Option<u64>,
    /// Transient failures in a row.
    pub consecutive_failures: u32,
}

/// The circuit breaker (see the module docs).
#[derive(Debug, Clone)]
pub struct CircuitBreaker {
    config: BreakerConfig,
    state: State,
    consecutive_failures: u32,
    /// Trips after failures since the last success (doubles the cool-down).
    trips: u32,
}

impl CircuitBreaker {
    /// A closed breaker.
    pub fn new(config: BreakerConfig) -> Self {
        Self {
            config,
            state: State::Closed,
            consecutive_failures: 0,
            trips: 0,
        }
    }

    /// May a request be sent at `now`?
    pub fn admit(&mut self, now: Instant) -> Admission {
        match &mut self.state {
            State::Closed => Admission::Go,
            State::Open { until, .. } if now < *until => Admission::WaitUntil(*until),
            State::Open { cause, .. } => {
                let kind = probe_kind(cause);
                self.state = State::HalfOpen {
                    cause: cause.clone(),
                    probing: true,
                };
                Admission::Probe(kind)
            }
            State::HalfOpen { probing: true, .. } => Admission::WaitUntil(now + PROBE_POLL),
            State::HalfOpen { cause, probing } => {
                *probing = true;
                Admission::Probe(probe_kind(cause))
            }
        }
    }

    /// A request (or probe) got an answer that shows the endpoint works.
    pub fn on_success(&mut self) {
        self.state = State::Closed;
        self.consecutive_failures = 0;
        self.trips = 0;
    }

    /// A request (or probe) failed transiently.
    pub fn on_failure(&mut self, now: Instant) {
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        let trip = match &self.state {
            State::Closed => self.consecutive_failures >= self.config.failure_threshold.max(1),
            // A failed probe reopens.
            State::HalfOpen { .. } => true,
            // A late answer from a request sent before it opened changes
            // nothing: the breaker is already open for a reason.
            State::Open { .. } => false,
        };
        if !trip {
            return;
        }
        let factor = 1u32.checked_shl(self.trips.min(31)).unwrap_or(u32::MAX);
        let cool_down = self
            .config
            .open_for
            .checked_mul(factor)
            .unwrap_or(self.config.open_max)
            .min(self.config.open_max);
        self.trips = self.trips.saturating_add(1);
        self.open(now + cool_down, OpenCause::Failures);
    }

    /// The ERP asked every caller to wait `delay`.
    pub fn pause(&mut self, now: Instant, delay: Duration) {
        self.open(now + delay, OpenCause::Throttled);
    }

    /// Authentication or configuration is wrong: stop until a recheck.
    pub fn halt(&mut self, now: Instant, reason: String) {
        self.state = State::Open {
            until: now + self.config.halt_recheck,
            cause: OpenCause::Halted { reason },
        };
    }

    /// A probe was given up without an answer (the caller was cancelled):
    /// let the next caller probe instead.
    pub fn probe_abandoned(&mut self) {
        if let State::HalfOpen { probing, .. } = &mut self.state {
            *probing = false;
        }
    }

    /// Opens until `until`; an open breaker's deadline only moves later.
    fn open(&mut self, until: Instant, cause: OpenCause) {
        if let State::Open { until: current, .. } = &self.state
            && *current > until
        {
            return;
        }
        self.state = State::Open { until, cause };
    }

    /// The state, for the API and logs.
    pub fn status(&self, now: Instant) -> BreakerStatus {
        let (state, cause, retry_in_ms) = match &self.state {
            State::Closed => ("closed", None, None),
            State::Open { until, cause } => (
                "open",
                Some(cause),
                Some(
                    u64::try_from(until.saturating_duration_since(now).as_millis())
                        .unwrap_or(u64::MAX),
                ),
            ),
            State::HalfOpen { cause, .. } => ("half_open", Some(cause), None),
        };
        BreakerStatus {
            state,
            cause: cause.map(|c| match c {
                OpenCause::Failures => "failures",
                OpenCause::Throttled => "throttled",
                OpenCause::Halted { .. } => "halted",
            }),
            reason: match cause {
                Some(OpenCause::Halted { reason }) => Some(reason.clone()),
                _ => None,
            },
            retry_in_ms,
            consecutive_failures: self.consecutive_failures,
        }
    }
}

fn probe_kind(cause: &OpenCause) -> ProbeKind {
    match cause {
        OpenCause::Failures => ProbeKind::Cheap,
        OpenCause::Throttled | OpenCause::Halted { .. } => ProbeKind::Real,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> BreakerConfig {
        BreakerConfig {
            failure_threshold: 3,
            open_for: Duration::from_secs(1),
            open_max: Duration::from_secs(5),
            halt_recheck: Duration::from_secs(30),
        }
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn opens_after_consecutive_failures_and_probes_cheaply() {
        let t0 = Instant::now();
        let mut b = CircuitBreaker::new(config());
        b.on_failure(t0);
        b.on_failure(t0);
        assert_eq!(b.admit(t0), Admission::Go, "two failures keep it closed");
        b.on_success();
        b.on_failure(t0);
        b.on_failure(t0);
        assert_eq!(b.admit(t0), Admission::Go, "a success resets the count");
        b.on_failure(t0);
        assert_eq!(b.admit(t0), Admission::WaitUntil(t0 + secs(1)));
        assert_eq!(b.status(t0).state, "open");
        assert_eq!(b.status(t0).cause, Some("failures"));
        // Half-open: exactly one cheap probe; others wait.
        let t1 = t0 + secs(1);
        assert_eq!(b.admit(t1), Admission::Probe(ProbeKind::Cheap));
        assert_eq!(b.admit(t1), Admission::WaitUntil(t1 + PROBE_POLL));
        assert_eq!(b.status(t1).state, "half_open");
        b.on_success();
        assert_eq!(b.admit(t1), Admission::Go);
        assert_eq!(b.status(t1).consecutive_failures, 0);
    }

    #[test]
    fn failed_probes_double_the_cool_down_up_to_the_cap() {
        let t0 = Instant::now();
        let mut b = CircuitBreaker::new(config());
        for _ in 0..3 {
            b.on_failure(t0);
        }
        let mut now = t0;
        let mut waits = Vec::new();
        for _ in 0..5 {
            let Admission::WaitUntil(until) = b.admit(now) else {
                panic!("expected open");
            };
            waits.push((until - now).as_secs());
            now = until;
            assert_eq!(b.admit(now), Admission::Probe(ProbeKind::Cheap));
            b.on_failure(now);
        }
        assert_eq!(waits, vec![1, 2, 4, 5, 5]);
        b.on_success();
        for _ in 0..3 {
            b.on_failure(now);
        }
        assert_eq!(
            b.admit(now),
            Admission::WaitUntil(now + secs(1)),
            "a success resets the doubling"
        );
    }

    #[test]
    fn pause_is_honoured_and_probed_with_a_real_request() {
        let t0 = Instant::now();
        let mut b = CircuitBreaker::new(config());
        b.pause(t0, secs(10));
        b.pause(t0, secs(2));
        assert_eq!(
            b.admit(t0),
            Admission::WaitUntil(t0 + secs(10)),
            "a shorter pause never cuts a longer one"
        );
        assert_eq!(b.status(t0).retry_in_ms, Some(10_000));
        assert_eq!(b.status(t0).cause, Some("throttled"));
        let t1 = t0 + secs(10);
        assert_eq!(b.admit(t1), Admission::Probe(ProbeKind::Real));
        // Throttled again by the probe: pause again.
        b.pause(t1, secs(3));
        assert_eq!(b.admit(t1), Admission::WaitUntil(t1 + secs(3)));
        let t2 = t1 + secs(3);
        assert_eq!(b.admit(t2), Admission::Probe(ProbeKind::Real));
        b.on_success();
        assert_eq!(b.admit(t2), Admission::Go);
    }

    #[test]
    fn halt_waits_for_a_recheck_and_names_the_problem() {
        let t0 = Instant::now();
        let mut b = CircuitBreaker::new(config());
        b.halt(t0, "HTTP 401; check erp.secret".into());
        let s = b.status(t0);
        assert_eq!((s.state, s.cause), ("open", Some("halted")));
        assert_eq!(s.reason.as_deref(), Some("HTTP 401; check erp.secret"));
        assert_eq!(b.admit(t0 + secs(29)), Admission::WaitUntil(t0 + secs(30)));
        let t1 = t0 + secs(30);
        assert_eq!(b.admit(t1), Admission::Probe(ProbeKind::Real));
        b.halt(t1, "still 401".into());
        assert_eq!(b.admit(t1), Admission::WaitUntil(t1 + secs(30)));
        // A probe whose caller vanished lets the next caller probe.
        let t2 = t1 + secs(30);
        assert_eq!(b.admit(t2), Admission::Probe(ProbeKind::Real));
        b.probe_abandoned();
        assert_eq!(b.admit(t2), Admission::Probe(ProbeKind::Real));
        b.on_success();
        assert_eq!(b.status(t2).state, "closed");
    }
}
