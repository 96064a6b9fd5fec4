//! The delivery policy: what one ERP attempt's outcome means for the event
//! and for the endpoint. A pure function ([`decide`]) with no I/O and no
//! clock of its own; [`crate::delivery`] runs the requests and obeys it.
//!
//! # The table
//!
//! It follows the collector's default classification table in
//! `research/erp-and-events.md` §2.4 (with §2.3 for timing):
//!
//! | outcome | class | decision |
//! |---|---|---|
//! | 2xx (no RPC error in the body) | success | [`Decision::Booked`] |
//! | connect refused / DNS / connect timeout | transient | [`Decision::Retry`], any path (the request never left) |
//! | timeout or reset *after* the request was sent | transient | [`Decision::Retry`] with `same_key_only`: the ERP may have committed |
//! | 408, 425, 500, 502, 504, other 5xx | transient | [`Decision::Retry`] with `same_key_only` |
//! | 429, 503 | throttled | [`Decision::PauseEndpoint`] for `max(Retry-After, backoff)`, capped |
//! | 423, 412, body class `conflict` | conflict-retryable | bounded [`Decision::Retry`], then dead letter |
//! | 409 with body class `already_booked` | duplicate | [`Decision::Booked`] (`duplicate`) |
//! | 409 otherwise (IETF: original still in flight) | in flight | bounded [`Decision::Retry`], then dead letter |
//! | 401, body class `session_expired` | re-auth | refresh the credential once if the endpoint can, else [`Decision::HaltEndpoint`] |
//! | 403, 405, 410, 428, 404 on the endpoint itself, 1xx/3xx | config/bug | [`Decision::HaltEndpoint`]: the endpoint stops, no event is failed |
//! | 404 with body class `reference_missing` | parked | bounded long [`Decision::Retry`], then dead letter |
//! | 413, 414, 415, 431 | our request is unacceptable | [`Decision::DeadLetter`], not the ERP's verdict |
//! | 400, 417, 422, other 4xx | permanent | [`Decision::DeadLetter`] with the ERP's rejection, unless the body says `already_booked` |
//!
//! RPC adapters (Tryton JSON-RPC answers 200 with an `error` member) read
//! the answer themselves and report an [`RpcOutcome`]:
//!
//! | RPC outcome | class | decision |
//! |---|---|---|
//! | applied / already in the target state | success | [`Decision::Booked`] (`duplicate` for the latter) |
//! | refused (`UserError`) | permanent | [`Decision::DeadLetter`] with the ERP's rejection |
//! | conflict (`ConcurrencyException`) | conflict-retryable | bounded [`Decision::Retry`], then dead letter |
//! | not ready (document missing, predecessor not booked) | parked | bounded long [`Decision::Retry`], then dead letter |
//! | fault (any other server exception) | transient | [`Decision::Retry`] with `same_key_only` |
//!
//! # Invariants
//!
//! - Only an answer from the ERP about *this event* becomes a rejection the
//!   device sees ([`Decision::DeadLetter::erp_rejected`]); a dead letter for
//!   anything on our side (bounded retries used up, a request we built badly)
//!   keeps the event replayable without telling the device it was refused.
//! - Nothing systemic (authentication, configuration, throttling) fails an
//!   event: those halt or pause the whole endpoint instead.
//! - A retry after an attempt that may have reached the ERP is marked
//!   `same_key_only`: it must carry the same `Idempotency-Key` (or read the
//!   ERP's state first), never a fresh request.
//! - Delays come from the [`Backoff`] and an injected [`Jitter`], so the
//!   table test is deterministic; `Retry-After` is honoured in both RFC 9110
//!   forms (delta-seconds and an HTTP-date, read with `httpdate`), against the
//!   `now` passed in.

use std::time::{Duration, SystemTime};

use crate::delivery::backoff::{Backoff, Jitter};
use crate::erp::outcome::{
    AttemptOutcome, BodyClass, Credentials, FailureClass, Response, RpcOutcome, document_from_body,
};

/// Jitter from the thread-local random generator: the collector's source
/// for the host's [`Jitter`].
#[derive(Debug, Clone, Copy, Default)]
pub struct RandomJitter;

impl Jitter for RandomJitter {
    fn unit(&mut self) -> f64 {
        rand::random::<f64>()
    }
}

/// The event's delivery history so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct History {
    /// Attempts made for this event, including the one being decided (≥ 1).
    pub attempts: u32,
    /// Consecutive earlier attempts that ended in a bounded class
    /// (conflict, in flight, parked); reset by any other outcome.
    pub bounded: u32,
}

/// The endpoint's state as far as the policy cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndpointView {
    /// What a 401 can lead to.
    pub credentials: Credentials,
}

/// The policy's tunables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Retry schedule.
    pub backoff: Backoff,
    /// Longest endpoint pause, whatever `Retry-After` says.
    pub pause_max: Duration,
    /// Attempts allowed in a row for bounded classes before the event is
    /// dead-lettered.
    pub max_bounded_attempts: u32,
    /// Shortest wait for a parked event (its referenced document is missing).
    pub parked_min: Duration,
}

/// What to do after an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The ERP booked the event.
    Booked {
        /// The ERP's document reference.
        document: String,
        /// The ERP said it had booked this event before.
        duplicate: bool,
    },
    /// Stop trying: store a dead letter and block the device's lane.
    DeadLetter {
        /// Why, for people.
        reason: String,
        /// The class that ended it.
        class: FailureClass,
        /// The ERP refused the event itself: the device gets a `rejected`
        /// verdict. False when the cause is on our side.
        erp_rejected: bool,
    },
    /// Try this event again after `after`.
    Retry {
        /// The delay.
        after: Duration,
        /// Why.
        class: FailureClass,
        /// The ERP may have committed: retry only with the same
        /// idempotency key (or after reading the ERP's state).
        same_key_only: bool,
        /// The class has a bounded number of attempts.
        bounded: bool,
        /// What went wrong.
        error: String,
    },
    /// Stop every lane of the endpoint for `delay`, then resume.
    PauseEndpoint {
        /// How long.
        delay: Duration,
        /// What the ERP said.
        reason: String,
    },
    /// Refresh the credential, then retry at once.
    RefreshCredentials {
        /// What the ERP said.
        reason: String,
    },
    /// Halt the endpoint until someone fixes the configuration or the ERP
    /// accepts us again; the event stays pending.
    HaltEndpoint {
        /// What is wrong and what to check.
        reason: String,
    },
}

/// Longest piece of the ERP's body quoted in a reason.
const MAX_REASON_CHARS: usize = 300;

/// Decides what an attempt's outcome means (see the module table).
pub fn decide(
    outcome: &AttemptOutcome,
    history: History,
    endpoint: EndpointView,
    policy: &Policy,
    now: SystemTime,
    jitter: &mut dyn Jitter,
) -> Decision {
    let backoff = |jitter: &mut dyn Jitter| {
        policy
            .backoff
            .delay_with(history.attempts.saturating_sub(1), jitter.unit())
    };
    let retry = |jitter: &mut dyn Jitter, class, same_key_only, error: String| Decision::Retry {
        after: backoff(jitter),
        class,
        same_key_only,
        bounded: false,
        error,
    };
    let bounded_retry = |jitter: &mut dyn Jitter, said: &str, class: FailureClass, floor| {
        if history.bounded.saturating_add(1) >= policy.max_bounded_attempts {
            Decision::DeadLetter {
                reason: format!(
                    "{said}; gave up after {} attempts in a row ({}); replay once the ERP side is resolved",
                    history.bounded.saturating_add(1),
                    class.name()
                ),
                class,
                erp_rejected: false,
            }
        } else {
            Decision::Retry {
                after: backoff(jitter).max(floor),
                class,
                same_key_only: true,
                bounded: true,
                error: said.to_owned(),
            }
        }
    };
    let resp = match outcome {
        AttemptOutcome::Transport { kind, detail } => {
            return retry(
                jitter,
                FailureClass::Transient,
                kind.maybe_committed(),
                detail.clone(),
            );
        }
        AttemptOutcome::Rpc(rpc) => {
            return match rpc {
                RpcOutcome::Applied { document } => Decision::Booked {
                    document: document.clone(),
                    duplicate: false,
                },
                RpcOutcome::AlreadyThere { document } => Decision::Booked {
                    document: document.clone(),
                    duplicate: true,
                },
                RpcOutcome::Refused { message } => Decision::DeadLetter {
                    reason: message.clone(),
                    class: FailureClass::Permanent,
                    erp_rejected: true,
                },
                RpcOutcome::Conflict { message } => {
                    bounded_retry(jitter, message, FailureClass::Conflict, Duration::ZERO)
                }
                RpcOutcome::NotReady { message } => {
                    bounded_retry(jitter, message, FailureClass::Parked, policy.parked_min)
                }
                RpcOutcome::Fault { message } => {
                    retry(jitter, FailureClass::Transient, true, message.clone())
                }
            };
        }
        AttemptOutcome::Response(r) => r,
    };
    let status = resp.status;
    let said = describe(resp);
    let bounded = |jitter: &mut dyn Jitter, class: FailureClass, floor: Duration| {
        bounded_retry(jitter, &said, class, floor)
    };
    match &resp.class {
        Some(BodyClass::AlreadyBooked { document }) if !(300..400).contains(&status) => {
            let document = document
                .clone()
                .or_else(|| document_from_body(&resp.body))
                .unwrap_or_else(|| format!("HTTP {status} (already booked)"));
            return Decision::Booked {
                document,
                duplicate: true,
            };
        }
        Some(BodyClass::InFlight) => {
            return bounded(jitter, FailureClass::InFlight, Duration::ZERO);
        }
        Some(BodyClass::Conflict) => {
            return bounded(jitter, FailureClass::Conflict, Duration::ZERO);
        }
        Some(BodyClass::SessionExpired) => return reauth(endpoint, said),
        Some(BodyClass::RpcError { message }) if (200..300).contains(&status) => {
            return Decision::DeadLetter {
                reason: format!("ERP answered HTTP {status} with an error: {message}"),
                class: FailureClass::Permanent,
                erp_rejected: true,
            };
        }
        _ => {}
    }
    match status {
        200..=299 => Decision::Booked {
            document: document_from_body(&resp.body)
                .or_else(|| resp.location.clone())
                .unwrap_or_else(|| format!("HTTP {status}")),
            duplicate: false,
        },
        429 | 503 => {
            let asked = resp
                .retry_after
                .as_deref()
                .and_then(|v| parse_retry_after(v, now));
            let delay = backoff(jitter)
                .max(asked.unwrap_or_default())
                .min(policy.pause_max);
            Decision::PauseEndpoint {
                delay,
                reason: said,
            }
        }
        408 | 425 => retry(jitter, FailureClass::Transient, true, said),
        423 | 412 => bounded(jitter, FailureClass::Conflict, Duration::ZERO),
        409 => bounded(jitter, FailureClass::InFlight, Duration::ZERO),
        404 if resp.class == Some(BodyClass::ReferenceMissing) => {
            bounded(jitter, FailureClass::Parked, policy.parked_min)
        }
        401 => reauth(endpoint, said),
        403 | 404 | 405 | 410 | 428 => Decision::HaltEndpoint {
            reason: format!(
                "{said}; the endpoint refuses every request like this: check erp.url, the ERP user's permissions and the adapter version, then the endpoint resumes on its own"
            ),
        },
        413 | 414 | 415 | 431 => Decision::DeadLetter {
            reason: format!(
                "{said}; the ERP cannot take the request as dockline built it (size or format): raise the ERP's limit or fix the adapter, then replay"
            ),
            class: FailureClass::Config,
            erp_rejected: false,
        },
        400..=499 => Decision::DeadLetter {
            reason: said,
            class: FailureClass::Permanent,
            erp_rejected: true,
        },
        500..=599 => retry(jitter, FailureClass::Transient, true, said),
        _ => Decision::HaltEndpoint {
            reason: format!(
                "{said}; expected a 2xx, 4xx or 5xx answer: erp.url may point at a redirect or a proxy, use the final URL"
            ),
        },
    }
}

fn reauth(endpoint: EndpointView, said: String) -> Decision {
    match endpoint.credentials {
        Credentials::Refreshable => Decision::RefreshCredentials { reason: said },
        Credentials::Fixed => Decision::HaltEndpoint {
            reason: format!(
                "{said}; the ERP refuses our credentials: check erp.secret (and the ERP's copy of it); delivery resumes once the ERP accepts a request again"
            ),
        },
        Credentials::AlreadyRefreshed => Decision::HaltEndpoint {
            reason: format!(
                "{said} even after refreshing the credential: check the ERP user and its key; delivery resumes once the ERP accepts a request again"
            ),
        },
    }
}

/// `HTTP 422: quantity exceeds order`, or `HTTP 422` for an empty body.
fn describe(resp: &Response) -> String {
    let detail: String = resp.body.chars().take(MAX_REASON_CHARS).collect();
    let detail = detail.trim();
    if detail.is_empty() {
        format!("HTTP {}", resp.status)
    } else {
        format!("HTTP {}: {detail}", resp.status)
    }
}

/// Parses a `Retry-After` value (RFC 9110 §10.2.3): delta-seconds, or an
/// HTTP-date in any of the three forms a recipient must accept
/// (IMF-fixdate, RFC 850, asctime; `httpdate`), measured from `now`. A date
/// in the past gives zero; anything else unreadable gives `None` (the
/// backoff applies).
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // More digits than a u64 holds is still "a very long time".
        return Some(Duration::from_secs(value.parse().unwrap_or(u64::MAX)));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    use crate::delivery::backoff::FixedJitter;
    use crate::erp::outcome::TransportError;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    fn policy() -> Policy {
        Policy {
            backoff: Backoff {
                min: MS(100),
                max: MS(10_000),
            },
            pause_max: Duration::from_secs(900),
            max_bounded_attempts: 3,
            parked_min: Duration::from_secs(60),
        }
    }

    fn fixed() -> EndpointView {
        EndpointView {
            credentials: Credentials::Fixed,
        }
    }

    /// 1994-11-06 08:49:37 UTC, the RFC's example date.
    fn rfc_now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(784_111_777)
    }

    fn http(status: u16, body: &str) -> AttemptOutcome {
        AttemptOutcome::Response(Response {
            status,
            body: body.into(),
            ..Response::default()
        })
    }

    fn with(status: u16, f: impl FnOnce(&mut Response)) -> AttemptOutcome {
        let mut r = Response {
            status,
            ..Response::default()
        };
        f(&mut r);
        AttemptOutcome::Response(r)
    }

    fn transport(kind: TransportError) -> AttemptOutcome {
        AttemptOutcome::Transport {
            kind,
            detail: "ERP could not connect".into(),
        }
    }

    fn first() -> History {
        History {
            attempts: 1,
            bounded: 0,
        }
    }

    /// A compact view of a decision, so the table stays readable.
    #[derive(Debug, PartialEq)]
    enum D {
        Booked(&'static str, bool),
        Dead(FailureClass, bool),
        Retry(u64, FailureClass, bool),
        Pause(u64),
        Refresh,
        Halt,
    }

    fn short(d: &Decision) -> D {
        let leak = |s: &str| -> &'static str { Box::leak(s.to_string().into_boxed_str()) };
        match d {
            Decision::Booked {
                document,
                duplicate,
            } => D::Booked(leak(document), *duplicate),
            Decision::DeadLetter {
                class,
                erp_rejected,
                ..
            } => D::Dead(*class, *erp_rejected),
            Decision::Retry {
                after,
                class,
                same_key_only,
                ..
            } => D::Retry(after.as_millis() as u64, *class, *same_key_only),
            Decision::PauseEndpoint { delay, .. } => D::Pause(delay.as_millis() as u64),
            Decision::RefreshCredentials { .. } => D::Refresh,
            Decision::HaltEndpoint { .. } => D::Halt,
        }
    }

    #[test]
    fn classification_table() {
        use FailureClass::*;
        use TransportError::*;
        let third = History {
            attempts: 3,
            bounded: 0,
        };
        let bounded_last = History {
            attempts: 9,
            bounded: 2,
        };
        let refreshable = EndpointView {
            credentials: Credentials::Refreshable,
        };
        let refreshed = EndpointView {
            credentials: Credentials::AlreadyRefreshed,
        };
        let already = |doc: Option<&str>| {
            Some(BodyClass::AlreadyBooked {
                document: doc.map(str::to_owned),
            })
        };
        // (outcome, history, endpoint, jitter, expected)
        let table: Vec<(AttemptOutcome, History, EndpointView, f64, D)> = vec![
            // success
            (
                http(200, r#"{"document":"WH/OUT/7"}"#),
                first(),
                fixed(),
                0.5,
                D::Booked("WH/OUT/7", false),
            ),
            (
                http(201, r#"{"id":42}"#),
                first(),
                fixed(),
                0.5,
                D::Booked("42", false),
            ),
            (
                http(204, ""),
                first(),
                fixed(),
                0.5,
                D::Booked("HTTP 204", false),
            ),
            (
                with(201, |r| {
                    r.location = Some("/moves/9".into());
                    r.body = "not json".into()
                }),
                first(),
                fixed(),
                0.5,
                D::Booked("/moves/9", false),
            ),
            (
                with(200, |r| {
                    r.class = Some(BodyClass::RpcError {
                        message: "UserError".into(),
                    })
                }),
                first(),
                fixed(),
                0.5,
                D::Dead(Permanent, true),
            ),
            // transient: backoff ceiling 100 · 2^(attempts-1), floor 100, jitter 0.5
            (
                transport(Connect),
                first(),
                fixed(),
                0.5,
                D::Retry(100, Transient, false),
            ),
            (
                transport(TimeoutBeforeSend),
                third,
                fixed(),
                0.5,
                D::Retry(250, Transient, false),
            ),
            (
                transport(TimeoutAfterSend),
                third,
                fixed(),
                1.0,
                D::Retry(400, Transient, true),
            ),
            (
                transport(ResetAfterSend),
                first(),
                fixed(),
                0.0,
                D::Retry(100, Transient, true),
            ),
            (
                http(500, "boom"),
                third,
                fixed(),
                0.0,
                D::Retry(100, Transient, true),
            ),
            (
                http(502, ""),
                first(),
                fixed(),
                0.5,
                D::Retry(100, Transient, true),
            ),
            (
                http(504, ""),
                first(),
                fixed(),
                0.5,
                D::Retry(100, Transient, true),
            ),
            (
                http(408, ""),
                first(),
                fixed(),
                0.5,
                D::Retry(100, Transient, true),
            ),
            (
                http(425, ""),
                first(),
                fixed(),
                0.5,
                D::Retry(100, Transient, true),
            ),
            (
                http(599, ""),
                first(),
                fixed(),
                0.5,
                D::Retry(100, Transient, true),
            ),
            // throttled: max(Retry-After, backoff), capped at pause_max
            (http(429, ""), third, fixed(), 1.0, D::Pause(400)),
            (
                with(429, |r| r.retry_after = Some("7".into())),
                first(),
                fixed(),
                0.5,
                D::Pause(7_000),
            ),
            (
                with(503, |r| r.retry_after = Some(" 2 ".into())),
                first(),
                fixed(),
                0.5,
                D::Pause(2_000),
            ),
            (
                with(503, |r| {
                    r.retry_after = Some("Sun, 06 Nov 1994 08:49:47 GMT".into())
                }),
                first(),
                fixed(),
                0.5,
                D::Pause(10_000),
            ),
            (
                with(429, |r| {
                    r.retry_after = Some("Sun, 06 Nov 1994 08:00:00 GMT".into())
                }),
                first(),
                fixed(),
                0.0,
                D::Pause(100),
            ),
            (
                with(429, |r| r.retry_after = Some("86400".into())),
                first(),
                fixed(),
                0.5,
                D::Pause(900_000),
            ),
            (
                with(429, |r| r.retry_after = Some("soon".into())),
                third,
                fixed(),
                0.0,
                D::Pause(100),
            ),
            // conflict-retryable, bounded
            (
                http(423, ""),
                first(),
                fixed(),
                0.0,
                D::Retry(100, Conflict, true),
            ),
            (
                http(412, ""),
                first(),
                fixed(),
                0.0,
                D::Retry(100, Conflict, true),
            ),
            (
                with(417, |r| r.class = Some(BodyClass::Conflict)),
                first(),
                fixed(),
                0.0,
                D::Retry(100, Conflict, true),
            ),
            (
                http(423, ""),
                bounded_last,
                fixed(),
                0.0,
                D::Dead(Conflict, false),
            ),
            // 409: duplicate → success; otherwise in flight, bounded
            (
                with(409, |r| r.class = already(Some("DOC-1"))),
                first(),
                fixed(),
                0.5,
                D::Booked("DOC-1", true),
            ),
            (
                with(409, |r| {
                    r.class = already(None);
                    r.body = r#"{"document":"DOC-2"}"#.into()
                }),
                first(),
                fixed(),
                0.5,
                D::Booked("DOC-2", true),
            ),
            (
                http(409, ""),
                first(),
                fixed(),
                0.0,
                D::Retry(100, InFlight, true),
            ),
            (
                with(409, |r| r.class = Some(BodyClass::InFlight)),
                bounded_last,
                fixed(),
                0.0,
                D::Dead(InFlight, false),
            ),
            // re-auth: refresh once if possible, else halt the endpoint
            (http(401, ""), first(), fixed(), 0.5, D::Halt),
            (http(401, ""), first(), refreshable, 0.5, D::Refresh),
            (http(401, ""), first(), refreshed, 0.5, D::Halt),
            (
                with(200, |r| r.class = Some(BodyClass::SessionExpired)),
                first(),
                refreshable,
                0.5,
                D::Refresh,
            ),
            // config / bug: halt, never fail the event
            (http(403, ""), first(), fixed(), 0.5, D::Halt),
            (http(404, ""), first(), fixed(), 0.5, D::Halt),
            (http(405, ""), first(), fixed(), 0.5, D::Halt),
            (http(410, ""), first(), fixed(), 0.5, D::Halt),
            (http(428, ""), first(), fixed(), 0.5, D::Halt),
            (http(301, ""), first(), fixed(), 0.5, D::Halt),
            (http(100, ""), first(), fixed(), 0.5, D::Halt),
            // parked: 404 on a referenced document, long bounded retry
            (
                with(404, |r| r.class = Some(BodyClass::ReferenceMissing)),
                first(),
                fixed(),
                0.5,
                D::Retry(60_000, Parked, true),
            ),
            (
                with(404, |r| r.class = Some(BodyClass::ReferenceMissing)),
                bounded_last,
                fixed(),
                0.5,
                D::Dead(Parked, false),
            ),
            // our request is unacceptable: dead letter, not the ERP's verdict
            (http(413, ""), first(), fixed(), 0.5, D::Dead(Config, false)),
            (http(415, ""), first(), fixed(), 0.5, D::Dead(Config, false)),
            // permanent, unless the ERP says it is already booked
            (
                http(400, "bad"),
                first(),
                fixed(),
                0.5,
                D::Dead(Permanent, true),
            ),
            (
                http(417, ""),
                first(),
                fixed(),
                0.5,
                D::Dead(Permanent, true),
            ),
            (
                http(422, ""),
                first(),
                fixed(),
                0.5,
                D::Dead(Permanent, true),
            ),
            (
                http(451, ""),
                first(),
                fixed(),
                0.5,
                D::Dead(Permanent, true),
            ),
            (
                with(422, |r| r.class = already(Some("SO-42/OUT"))),
                first(),
                fixed(),
                0.5,
                D::Booked("SO-42/OUT", true),
            ),
        ];
        for (i, (outcome, history, endpoint, unit, want)) in table.into_iter().enumerate() {
            let got = decide(
                &outcome,
                history,
                endpoint,
                &policy(),
                rfc_now(),
                &mut FixedJitter(unit),
            );
            assert_eq!(short(&got), want, "row {i}: {outcome:?} gave {got:?}");
        }
    }

    #[test]
    fn rpc_outcomes_table() {
        use FailureClass::*;
        let msg = || "m".to_string();
        let bounded_last = History {
            attempts: 9,
            bounded: 2,
        };
        let decide_rpc = |rpc: RpcOutcome, history| {
            short(&decide(
                &AttemptOutcome::Rpc(rpc),
                history,
                fixed(),
                &policy(),
                rfc_now(),
                &mut FixedJitter(0.0),
            ))
        };
        let doc = || "3 [SO-42]".to_string();
        assert_eq!(
            decide_rpc(RpcOutcome::Applied { document: doc() }, first()),
            D::Booked("3 [SO-42]", false)
        );
        assert_eq!(
            decide_rpc(RpcOutcome::AlreadyThere { document: doc() }, first()),
            D::Booked("3 [SO-42]", true)
        );
        assert_eq!(
            decide_rpc(RpcOutcome::Refused { message: msg() }, first()),
            D::Dead(Permanent, true)
        );
        assert!(matches!(
            decide_rpc(RpcOutcome::Conflict { message: msg() }, first()),
            D::Retry(_, Conflict, true)
        ));
        assert_eq!(
            decide_rpc(RpcOutcome::Conflict { message: msg() }, bounded_last),
            D::Dead(Conflict, false)
        );
        assert!(matches!(
            decide_rpc(RpcOutcome::NotReady { message: msg() }, first()),
            D::Retry(ms, Parked, true) if ms >= 60_000
        ));
        assert_eq!(
            decide_rpc(RpcOutcome::NotReady { message: msg() }, bounded_last),
            D::Dead(Parked, false)
        );
        assert!(matches!(
            decide_rpc(RpcOutcome::Fault { message: msg() }, bounded_last),
            D::Retry(_, Transient, true)
        ));
    }

    #[test]
    fn reasons_name_the_status_and_the_fix() {
        let d = decide(
            &http(422, "quantity exceeds order"),
            first(),
            fixed(),
            &policy(),
            rfc_now(),
            &mut FixedJitter(0.0),
        );
        assert_eq!(
            d,
            Decision::DeadLetter {
                reason: "HTTP 422: quantity exceeds order".into(),
                class: FailureClass::Permanent,
                erp_rejected: true
            }
        );
        let long = "x".repeat(1000);
        match decide(
            &http(400, &long),
            first(),
            fixed(),
            &policy(),
            rfc_now(),
            &mut FixedJitter(0.0),
        ) {
            Decision::DeadLetter { reason, .. } => {
                assert_eq!(reason.len(), "HTTP 400: ".len() + 300)
            }
            other => panic!("{other:?}"),
        }
        match decide(
            &http(401, "bad signature"),
            first(),
            fixed(),
            &policy(),
            rfc_now(),
            &mut FixedJitter(0.0),
        ) {
            Decision::HaltEndpoint { reason } => {
                assert!(reason.starts_with("HTTP 401: bad signature"), "{reason}");
                assert!(reason.contains("erp.secret"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        let bounded_last = History {
            attempts: 5,
            bounded: 2,
        };
        match decide(
            &http(423, ""),
            bounded_last,
            fixed(),
            &policy(),
            rfc_now(),
            &mut FixedJitter(0.0),
        ) {
            Decision::DeadLetter { reason, .. } => {
                assert!(
                    reason.contains("3 attempts in a row (conflict)"),
                    "{reason}"
                )
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn retry_after_both_forms() {
        let now = rfc_now();
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(parse_retry_after("0", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("99999999999999999999999", now),
            Some(Duration::from_secs(u64::MAX))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:50:37 GMT", now),
            Some(Duration::from_secs(60))
        );
        // Sub-second precision of `now` is kept.
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:38 GMT", now + MS(250)),
            Some(MS(750))
        );
        assert_eq!(
            parse_retry_after("Sat, 05 Nov 1994 08:49:37 GMT", now),
            Some(Duration::ZERO),
            "a past date means now"
        );
        // The obsolete forms RFC 9110 still makes recipients accept.
        for obsolete in ["Sunday, 06-Nov-94 08:50:37 GMT", "Sun Nov  6 08:50:37 1994"] {
            assert_eq!(
                parse_retry_after(obsolete, now),
                Some(Duration::from_secs(60)),
                "{obsolete:?}"
            );
        }
        for bad in [
            "",
            "-5",
            "1.5",
            "Sun, 06 Nov 1994 08:49:37 UTC",
            "Sun, 31 Nov 1994 08:49:37 GMT",
            "Sun, 06 Foo 1994 08:49:37 GMT",
            "Xyz, 06 Nov 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 24:49:37 GMT",
            "Sun, +6 Nov 1994 08:49:37 GMT",
        ] {
            assert_eq!(parse_retry_after(bad, now), None, "{bad:?}");
        }
        assert_eq!(
            parse_retry_after("Thu, 01 Jan 1970 00:00:00 GMT", UNIX_EPOCH),
            Some(Duration::ZERO)
        );
        assert_eq!(
            parse_retry_after(" Sun, 06 Nov 1994 08:49:38 GMT ", now),
            Some(Duration::from_secs(1)),
            "surrounding whitespace is not part of the value"
        );
        assert_eq!(
            parse_retry_after("Tue, 29 Feb 2028 12:00:00 GMT", UNIX_EPOCH),
            Some(Duration::from_secs(1_835_438_400))
        );
    }
}
