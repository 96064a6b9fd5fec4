//! ERP delivery: pending business events from the inbox go to the ERP
//! through the configured [`ErpAdapter`] until it gives a verdict, which is
//! recorded and sent to the device as an ack.
//!
//! # Ordering and concurrency
//!
//! Events are delivered in *business lanes* keyed by the order (else the
//! shipment, else the stop, else the device); the rules that decide which
//! pending event of a lane may go next are in [`crate::delivery::lane`]: a device's
//! own sequence order within the lane, never past a hole, stored earlier
//! business steps first, and a bounded wait for a previous step not yet
//! received. Each lane with work gets one task that delivers strictly one
//! event at a time; lanes run concurrently, at most `erp.max_active_lanes`
//! of them. A semaphore caps HTTP requests in flight across all lanes at
//! `erp.concurrency`; a lane holds a permit only for the request itself,
//! not while it sleeps between retries.
//!
//! The scheduler never scans pending events: the inbox keeps one row per
//! lane with the time it wants a look (`wake_ms`). Ingest sets it for the
//! lanes of new events and of events a moved watermark released; a replay
//! or discard sets it for its lane; a parked lane sets its own deadline.
//! The scheduler starts a task for each due lane when ingest wakes it, a
//! lane ends, the earliest deadline comes, or a periodic rescan fires. A
//! lane's decision and its row's update happen in one inbox call, so a
//! wake-up cannot be lost between them; a lane at work stays due, so one
//! interrupted by a crash is found again after a restart.
//!
//! # What an answer means
//!
//! Every attempt's outcome goes through the pure [`policy::decide`] (the
//! §2.4 table of `research/erp-and-events.md`) and the endpoint's
//! [`CircuitBreaker`]:
//! - booked → the verdict is recorded, then acked to the device;
//! - transient → this lane retries after a jittered backoff; enough of them
//!   in a row open the breaker, which stops *every* lane until the
//!   adapter's cheap probe shows the endpoint answers again;
//! - 429/503 → the whole endpoint pauses for `Retry-After` (either form);
//! - 401/403/404/… on the endpoint → the endpoint halts with an error log
//!   naming the fix; one real request is retried every
//!   `erp.halt_recheck_ms`, and delivery resumes when it is accepted. No
//!   event is failed for a systemic problem;
//! - permanent (or bounded retries used up) → a dead letter in the inbox,
//!   which blocks the event's business lane (not the device's other lanes)
//!   until it is replayed or discarded
//!   (`dockline-collector dlq …`, `POST /dlq/{id}/replay`). Only when the ERP
//!   refused the event itself does the device get a `rejected` verdict.
//!
//! # Exactly-once effect
//!
//! Each adapter makes a retried event take effect once (the webhook by the
//! same `webhook-id` and `Idempotency-Key` on every attempt, Tryton by a
//! state read before every transition; see [`crate::erp`]), so a timeout
//! after the request was sent can be retried. A verdict is recorded only on
//! a still-pending row, and only after that commit is the verdict ack
//! published. A collector restart re-reads pending rows. A booking's verdict
//! and the look for the lane's next event go in one group op. The lane
//! posts that next event only after the ERP booked the previous one, so a
//! lane's events reach the ERP strictly in order; with one writer (SQLite)
//! it does not wait for the previous verdict's commit, which runs beside
//! the next request as separate lanes already overlap ([`InboxHandle::record_verdict_then_look_ahead`]).
//! A crash before that commit re-sends both events, in order, and the
//! adapters make each repeat take effect once.

pub mod breaker;
pub mod dlq;
pub mod invoice;
pub(crate) mod invoice_ready;
pub mod lane;
pub mod policy;

/// The retry schedule and its jitter are the host's, shared with the agent.
pub use dockline_host::backoff;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use dockline_protocol::{DeviceId, Envelope, Outcome, Verdict};
use tokio::sync::{Notify, Semaphore, mpsc};
use tokio::task::JoinSet;
use tracing::{Instrument, debug, error, info, warn};

use crate::delivery::backoff::{Backoff, Jitter};
use crate::delivery::breaker::{
    Admission, BreakerConfig, BreakerStatus, CircuitBreaker, ProbeKind,
};
use crate::delivery::policy::RandomJitter;
use crate::erp::ErpConfig;
use crate::erp::outcome::{AttemptOutcome, FailureClass};
use crate::erp::{self, Attempt, ErpAdapter, ErpEvent, ErpSetupError};
use crate::inbox::{
    AttemptLog, InboxError, InboxHandle, MAX_BODY_EXCERPT, NewDeadLetter, NextPending,
    PendingEvent, excerpt,
};
use crate::media::wait::MediaDecision;
use crate::media::{ErpMedium, MediaRef, ParkedLane};
use crate::metrics::Metrics;
use crate::now_ms;
use crate::publication::Publication;
use crate::shutdown::Shutdown;
use policy::{Decision, EndpointView, History, Policy};
/// How often the scheduler re-reads the inbox without being woken.
const RESCAN: Duration = Duration::from_secs(5);
/// Shortest sleep between two looks at the due lanes, so a lane that stays
/// due while it works does not make the scheduler spin.
const MIN_LOOK_MS: u64 = 20;
/// With lanes at work, the scheduler looks for new ones once this share of
/// `erp.max_active_lanes` (1/16) is free, or after `MIN_LOOK_MS`.
const LOOK_BATCH_DIVISOR: usize = 16;

/// The endpoint's shared state: its breaker and the jitter source.
struct Endpoint {
    breaker: CircuitBreaker,
    jitter: Box<dyn Jitter>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("breaker", &self.breaker)
            .finish_non_exhaustive()
    }
}

/// The ERP delivery worker.
#[derive(Debug)]
pub struct Delivery {
    inbox: InboxHandle,
    adapter: Box<dyn ErpAdapter>,
    policy: Policy,
    permits: Arc<Semaphore>,
    acks: mpsc::Sender<Publication>,
    endpoint: Mutex<Endpoint>,
    /// Notified whenever the breaker changes, so waiting lanes look again.
    endpoint_changed: Notify,
    /// `erp.lane_park_max_ms`.
    lane_park_max_ms: u64,
    /// `erp.max_active_lanes`.
    max_active_lanes: usize,
    /// `erp.timeout_ms`: how long one attempt may take.
    request_timeout_ms: u64,
    /// Notified when a booked proof of delivery may have queued a
    /// follow-up webhook ([`crate::delivery::invoice`]).
    followups: Arc<Notify>,
    /// Counters for `/metrics`.
    metrics: Arc<Metrics>,
    /// Media for events that reference them (absent: events go without).
    media: Option<crate::media::MediaHub>,
}

impl Delivery {
    /// Prepares delivery to the ERP `erp.kind` names; verdict acks go to
    /// `acks`.
    pub fn new(
        erp: &ErpConfig,
        inbox: InboxHandle,
        acks: mpsc::Sender<Publication>,
    ) -> Result<Self, ErpSetupError> {
        Ok(Self::with_adapter(
            erp,
            erp::from_config(erp, erp::ErpMediaOptions::default())?,
            inbox,
            acks,
        ))
    }

    /// Prepares delivery through `adapter`, with the retry, breaker and
    /// concurrency settings of `erp`.
    pub fn with_adapter(
        erp: &ErpConfig,
        adapter: Box<dyn ErpAdapter>,
        inbox: InboxHandle,
        acks: mpsc::Sender<Publication>,
    ) -> Self {
        let policy = policy_of(erp);
        let per_request = adapter.events_per_request().max(1);
        let adapter_kind = adapter.kind();
        let breaker = CircuitBreaker::new(BreakerConfig {
            failure_threshold: erp.breaker_failures,
            open_for: Duration::from_millis(erp.breaker_open_ms),
            open_max: Duration::from_millis(erp.breaker_open_ms.max(erp.retry_max_ms)),
            halt_recheck: Duration::from_millis(erp.halt_recheck_ms),
        });
        Self {
            inbox,
            adapter,
            policy,
            // A batching adapter sends `events_per_request` events per
            // request and caps its own requests at `concurrency`.
            permits: Arc::new(Semaphore::new(
                erp.concurrency.max(1).saturating_mul(per_request),
            )),
            acks,
            endpoint: Mutex::new(Endpoint {
                breaker,
                jitter: Box::new(RandomJitter),
            }),
            endpoint_changed: Notify::new(),
            lane_park_max_ms: erp.lane_park_max_ms,
            max_active_lanes: erp.max_active_lanes.max(1),
            request_timeout_ms: erp.timeout_ms,
            followups: Arc::new(Notify::new()),
            metrics: Arc::new(Metrics::new(adapter_kind)),
            media: None,
        }
    }

    /// The media counters, when delivery handles media.
    pub fn media_metrics(&self) -> Option<crate::media::metrics::MediaMetrics> {
        self.media.as_ref().map(|m| m.metrics.clone())
    }

    /// Delivers events with their media from `hub`: a lane whose event
    /// lacks a medium waits for it (see [`Delivery::media_of`]).
    pub fn with_media(mut self, hub: crate::media::MediaHub) -> Self {
        self.media = Some(hub);
        self
    }

    /// The counters `/metrics` shows (ingest adds to them too).
    pub fn metrics(&self) -> Arc<Metrics> {
        Arc::clone(&self.metrics)
    }

    /// Notified when a proof of delivery was booked (its follow-up, if
    /// configured, is queued in the inbox by then).
    pub fn followup_wake(&self) -> Arc<Notify> {
        Arc::clone(&self.followups)
    }

    /// Replaces the random jitter (tests use [`crate::delivery::backoff::FixedJitter`]).
    pub fn with_jitter(self, jitter: Box<dyn Jitter>) -> Self {
        let mut endpoint = self
            .endpoint
            .into_inner()
            .unwrap_or_else(|p| p.into_inner());
        endpoint.jitter = jitter;
        Self {
            endpoint: Mutex::new(endpoint),
            ..self
        }
    }

    /// The endpoint's circuit breaker, for the API.
    pub fn endpoint_status(&self) -> BreakerStatus {
        self.lock_endpoint().breaker.status(Instant::now())
    }

    fn lock_endpoint(&self) -> MutexGuard<'_, Endpoint> {
        // Every update is a few assignments that cannot panic half-way.
        self.endpoint.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs lanes until `shutdown`; `wake` is notified when ingest stored
    /// events or an operator replayed a dead letter.
    pub async fn run(self: Arc<Self>, wake: Arc<Notify>, mut shutdown: Shutdown) {
        let mut lanes: JoinSet<()> = JoinSet::new();
        let mut lane_of: HashMap<tokio::task::Id, String> = HashMap::new();
        let mut active: HashSet<String> = HashSet::new();
        // When the inbox was last asked for due lanes.
        let mut looked: Option<Instant> = None;
        loop {
            let free = self.max_active_lanes.saturating_sub(active.len());
            let mut next_look = RESCAN;
            // Under load lanes end one after another, and each look reads a
            // page of every active lane's row: wait for a few free places
            // (or `MIN_LOOK_MS`) instead of looking after every single end.
            let since = looked.map_or(Duration::MAX, |at| at.elapsed());
            let batch = (self.max_active_lanes / LOOK_BATCH_DIVISOR).max(1);
            let min_look = Duration::from_millis(MIN_LOOK_MS);
            if free > 0 && free < batch && !active.is_empty() && since < min_look {
                next_look = min_look - since;
            } else if free > 0 {
                looked = Some(Instant::now());
                // Active lanes stay due while they work, so ask for enough
                // rows to find `free` idle ones behind them.
                let now = now_ms();
                let parked = self.media.as_ref().map_or(0, |m| m.parked_lanes().len());
                let limit = free.saturating_add(active.len()).saturating_add(parked);
                match self
                    .inbox
                    .call(move |i| {
                        let due = i.due_lanes(now, limit)?;
                        // A full page means lanes are due now; the earliest
                        // wake time, a second query, can wait until the
                        // page is not full.
                        let next = if due.len() < limit {
                            i.next_lane_wake_ms()?
                        } else {
                            Some(now)
                        };
                        Ok((due, next))
                    })
                    .await
                {
                    Ok((due, next)) => {
                        let idle: Vec<String> = due
                            .into_iter()
                            .filter(|l| !active.contains(l))
                            .filter(|l| !self.media.as_ref().is_some_and(|m| m.is_parked(l, now)))
                            .take(free)
                            .collect();
                        for lane in idle {
                            active.insert(lane.clone());
                            let me = Arc::clone(&self);
                            let l = lane.clone();
                            let handle = lanes.spawn(async move { me.drain_lane(&l).await });
                            lane_of.insert(handle.id(), lane);
                        }
                        let media_at = self.media.as_ref().and_then(|m| m.next_deadline_ms());
                        let next = match (next, media_at) {
                            (Some(a), Some(b)) => Some(a.max(now).min(b)),
                            (a, b) => a.or(b),
                        };
                        if let Some(at) = next {
                            let ms = u64::try_from(at.saturating_sub(now_ms())).unwrap_or(0);
                            // A due lane that is active looks again when it ends.
                            next_look = Duration::from_millis(ms.max(MIN_LOOK_MS)).min(RESCAN);
                        }
                    }
                    Err(e) => error!("cannot read due lanes from the inbox: {e}; retrying"),
                }
            }
            tokio::select! {
                () = shutdown.wait() => break,
                () = wake.notified() => {}
                Some(done) = lanes.join_next_with_id() => {
                    let id = match done {
                        Ok((id, ())) => id,
                        Err(e) => {
                            error!("a delivery lane failed: {e}");
                            e.id()
                        }
                    };
                    if let Some(lane) = lane_of.remove(&id) {
                        active.remove(&lane);
                    }
                }
                () = tokio::time::sleep(next_look) => {}
            }
        }
        // Aborting mid-request is safe: the row stays pending and is retried
        // after restart (the adapter makes the retry take effect once).
        lanes.shutdown().await;
    }

    /// Delivers the lane's events, one at a time in the order
    /// [`crate::delivery::lane`] allows, until none may go now (idle, parked or
    /// blocked; the inbox records which and when to look again).
    pub async fn drain_lane(&self, lane: &str) {
        let mut finishing = Vec::new();
        self.lane_steps(lane, &mut finishing).await;
        // The last bookings' acks, after their verdicts' commits.
        for finish in finishing {
            finish.await;
        }
    }

    /// [`Delivery::drain_lane`]'s steps. The rest of each booking
    /// (`finishing`: its commit, then its ack) runs beside the lane's next
    /// deliveries: the commit may wait for them to share its fsync.
    async fn lane_steps<'a>(&'a self, lane: &str, finishing: &mut Vec<Finish<'a>>) {
        let park_max = i64::try_from(self.lane_park_max_ms).unwrap_or(i64::MAX);
        let mut then = Then::Look;
        loop {
            let next = match then {
                Then::Booked(next, finish) => {
                    finishing.push(finish);
                    next
                }
                Then::Look => {
                    let l = lane.to_owned();
                    match self.inbox.next_in_lane_grouped(l, now_ms(), park_max).await {
                        Ok(next) => next,
                        Err(e) => {
                            error!(
                                lane,
                                "cannot read the lane's next event: {e}; the lane pauses"
                            );
                            tokio::time::sleep(self.policy.backoff.max.min(RESCAN)).await;
                            return;
                        }
                    }
                }
            };
            let Some(next) = next else {
                return;
            };
            let result = match next {
                NextPending::Event(p) => {
                    if p.late {
                        warn!(lane, device = %p.envelope.device, seq = p.envelope.seq,
                            "lane_park_max_ms passed without the lane's previous step; delivering out of business order");
                    }
                    let result = beside(self.deliver(*p), finishing).await;
                    if result.is_ok()
                        && self
                            .media
                            .as_ref()
                            .is_some_and(|m| m.is_parked(lane, now_ms()))
                    {
                        // Waits for media: the scheduler wakes it.
                        if let Ok(Then::Booked(_, finish)) = result {
                            finishing.push(finish);
                        }
                        return;
                    }
                    result
                }
                NextPending::Unreadable(row) => {
                    error!(device = %row.device, seq = row.seq, epoch = row.epoch,
                        "stored envelope cannot be decoded ({}); marking it rejected so later events can flow",
                        row.problem);
                    let outcome = Outcome::Rejected {
                        reason: format!(
                            "collector could not read the stored event: {}",
                            row.problem
                        ),
                    };
                    self.inbox
                        .call(move |i| {
                            i.record_verdict(&row.device, row.epoch, row.seq, &outcome, now_ms())
                        })
                        .await
                        .map(|_| Then::Look)
                }
            };
            then = match result {
                Ok(then) => then,
                Err(e) => {
                    error!(
                        lane,
                        "cannot record a delivery result: {e}; the lane pauses"
                    );
                    tokio::time::sleep(self.policy.backoff.max.min(RESCAN)).await;
                    return;
                }
            };
        }
    }

    /// Delivers one event until the policy ends it (booked or dead letter);
    /// records the result and publishes the verdict ack.
    async fn deliver(&self, pending: PendingEvent) -> Result<Then<'_>, InboxError> {
        // Every line logged while this event is delivered (here, in the
        // adapter, in the policy) carries its id, device, sequence and lane.
        let span = tracing::info_span!("event",
            event_id = %pending.envelope.id,
            device = %pending.envelope.device,
            seq = pending.envelope.seq,
            lane = %pending.lane,
        );
        self.deliver_in_span(pending).instrument(span).await
    }

    async fn deliver_in_span(&self, pending: PendingEvent) -> Result<Then<'_>, InboxError> {
        let PendingEvent {
            site,
            envelope,
            attempts,
            lane,
            mut claimed_until_ms,
            ..
        } = pending;
        let Some(event) = envelope.business_event() else {
            // Ingest stores readings as skipped; a pending one would block
            // the lane forever, so set it aside.
            let (dev, ep, seq) = (envelope.device.clone(), envelope.epoch, envelope.seq);
            return self
                .inbox
                .call(move |i| i.mark_skipped(&dev, ep, seq, now_ms()))
                .await
                .map(|()| Then::Look);
        };
        let mut history = History {
            attempts,
            bounded: 0,
        };
        let (dev, ep, seq) = (envelope.device.clone(), envelope.epoch, envelope.seq);
        let Some((media, media_missing)) = self.media_of(&lane, &envelope, event).await else {
            // The lane waits for media (or for the media store).
            return Ok(Then::Look);
        };
        loop {
            let Some(permit) = self.admitted().await else {
                // Only at shutdown; the row stays pending.
                return Ok(Then::Look);
            };
            if self.inbox.has_claims()
                && lane::must_renew(claimed_until_ms, now_ms(), self.request_timeout_ms)
            {
                // Several collectors share the inbox: renew this one's claim
                // on the lane before an attempt it could lapse during, and
                // leave the event to the collector that took the lane over
                // if it expired.
                let l = lane.clone();
                if !self.inbox.hold_lane_grouped(l, now_ms()).await? {
                    warn!(
                        "another collector took this lane over (this one's claim expired); leaving the event to it"
                    );
                    return Ok(Then::Look);
                }
                claimed_until_ms = None;
            }
            let attempted = self
                .adapter
                .deliver(ErpEvent {
                    site: &site,
                    envelope: &envelope,
                    event,
                    lane: &lane,
                    media: &media,
                    media_missing: &media_missing,
                })
                .await;
            drop(permit);
            history.attempts = history.attempts.saturating_add(1);
            let decision = {
                let mut endpoint = self.lock_endpoint();
                let decision = policy::decide(
                    &attempted.outcome,
                    history,
                    EndpointView {
                        credentials: self.adapter.credentials(),
                    },
                    &self.policy,
                    SystemTime::now(),
                    endpoint.jitter.as_mut(),
                );
                update_breaker(&mut endpoint.breaker, &decision, Instant::now());
                decision
            };
            self.endpoint_changed.notify_waiters();
            self.metrics.response(decision_class(&decision));
            let log = attempt_log(&attempted, &decision);
            match decision {
                Decision::Booked {
                    document,
                    duplicate,
                } => {
                    info!(document = %document, duplicate,
                        attempts = history.attempts, "ERP booked event");
                    let outcome = Outcome::Booked { document };
                    // Committed in a group with other lanes' verdicts, with
                    // the look for the lane's next event, which comes back
                    // before the commit where the inbox allows it: the
                    // lane posts its next event (the ERP has booked this
                    // one) while this verdict's commit runs. The ack goes
                    // out only after that commit, in `finish`.
                    let park_max = i64::try_from(self.lane_park_max_ms).unwrap_or(i64::MAX);
                    let (next, commit) = self
                        .inbox
                        .record_verdict_then_look_ahead(
                            dev.clone(),
                            ep,
                            seq,
                            outcome.clone(),
                            lane.clone(),
                            now_ms(),
                            park_max,
                        )
                        .await?;
                    let delivered =
                        matches!(event.detail, dockline_protocol::EventDetail::Delivered(_));
                    let finish = async move {
                        match commit.recorded().await {
                            Ok(true) => {}
                            Ok(false) => return,
                            Err(e) => {
                                error!(
                                    "cannot record the ERP's booking: {e}; the event stays pending and is delivered again (the ERP de-duplicates it)"
                                );
                                return;
                            }
                        }
                        let latency = (now_ms() - envelope.captured_ms) as f64 / 1000.0;
                        self.metrics.outcome(site.as_str(), "booked", Some(latency));
                        if delivered {
                            self.followups.notify_one();
                        }
                        let document = match &outcome {
                            Outcome::Booked { document } => document.clone(),
                            _ => String::new(),
                        };
                        self.publish_verdict(&site, &envelope, outcome).await;
                        self.media_attached(&site, &envelope, &media, document)
                            .await;
                    }
                    .instrument(tracing::Span::current());
                    return Ok(Then::Booked(next, Box::pin(finish)));
                }
                Decision::DeadLetter {
                    reason,
                    class,
                    erp_rejected,
                } => {
                    let dead = NewDeadLetter {
                        last: log,
                        reason: reason.clone(),
                        class: class.name().into(),
                        erp_rejected,
                    };
                    let d = dev.clone();
                    let stored = self
                        .inbox
                        .call(move |i| i.store_dead_letter(&d, ep, seq, &dead))
                        .await?;
                    if let Some((dl, verdict)) = stored {
                        self.metrics.outcome(
                            site.as_str(),
                            if erp_rejected {
                                "rejected"
                            } else {
                                "dead_lettered"
                            },
                            None,
                        );
                        warn!(dead_letter = dl,
                            class = class.name(), erp_rejected, reason = %reason,
                            "event dead-lettered; lane {lane} is blocked until `dockline-collector dlq replay {dl}` (after fixing the data) or `dlq discard {dl}`");
                        if verdict {
                            self.publish_verdict(&site, &envelope, Outcome::Rejected { reason })
                                .await;
                        }
                    }
                    return Ok(Then::Look);
                }
                Decision::Retry {
                    after,
                    class,
                    same_key_only,
                    bounded,
                    error,
                } => {
                    warn!(
                        attempt = history.attempts,
                        class = class.name(),
                        same_key_only,
                        retry_in_ms = after.as_millis() as u64,
                        "ERP delivery failed: {error}; will retry (same idempotency key, or a state read first)"
                    );
                    history.bounded = if bounded {
                        history.bounded.saturating_add(1)
                    } else {
                        0
                    };
                    self.record_attempt(&dev, ep, seq, log).await?;
                    tokio::time::sleep(after).await;
                }
                Decision::PauseEndpoint { delay, reason } => {
                    warn!(
                        pause_ms = delay.as_millis() as u64,
                        "ERP is throttling ({reason}); every lane pauses"
                    );
                    history.bounded = 0;
                    self.record_attempt(&dev, ep, seq, log).await?;
                }
                Decision::HaltEndpoint { reason } | Decision::RefreshCredentials { reason } => {
                    error!(
                        "ERP endpoint halted: {reason}; no event is failed, the next try is in {} ms",
                        self.endpoint_status().retry_in_ms.unwrap_or(0)
                    );
                    history.bounded = 0;
                    self.record_attempt(&dev, ep, seq, log).await?;
                }
            }
        }
    }

    /// The event's media for the adapter, or `None` when the lane must
    /// wait (parked in the hub with a reason, until a medium is stored or
    /// the wait runs out). After `[media] wait_ms` the event goes with the
    /// media present and the rest in `media_missing` (counted, flagged).
    async fn media_of(
        &self,
        lane: &str,
        envelope: &Envelope,
        event: &dockline_protocol::BusinessEvent,
    ) -> Option<(Vec<ErpMedium>, Vec<MediaRef>)> {
        let refs = crate::media::refs_of(event);
        let Some(hub) = &self.media else {
            return Some((Vec::new(), Vec::new()));
        };
        if refs.is_empty() {
            return Some((Vec::new(), Vec::new()));
        }
        let hashes: Vec<_> = refs.iter().map(|r| r.hash).collect();
        let event_id = envelope.id.to_string();
        let now = now_ms();
        let loaded = hub
            .store
            .call(move |s| {
                let mut got = Vec::with_capacity(hashes.len());
                for h in &hashes {
                    got.push(s.get(h)?);
                }
                let since = if got.iter().any(Option::is_none) {
                    s.wait_since(&event_id, now)?
                } else {
                    now
                };
                Ok((got, since))
            })
            .await;
        let (got, since) = match loaded {
            Ok(x) => x,
            Err(e) => {
                error!("cannot read the event's media: {e}; the lane waits and tries again");
                hub.park(ParkedLane {
                    lane: lane.to_owned(),
                    reason: format!("media store unavailable: {e}"),
                    since_ms: now,
                    until_ms: now + 5_000,
                    waits_for: Vec::new(),
                });
                return None;
            }
        };
        let present: Vec<bool> = got.iter().map(Option::is_some).collect();
        let media: Vec<ErpMedium> = refs
            .iter()
            .zip(got)
            .filter_map(|(r, m)| {
                m.map(|m| ErpMedium {
                    hash: r.hash,
                    media_type: m.media_type,
                    role: r.role,
                    bytes: m.bytes,
                })
            })
            .collect();
        match crate::media::wait::decide(&refs, &present, since, hub.config.wait_ms, now) {
            MediaDecision::Go => {
                hub.unpark(lane);
                Some((media, Vec::new()))
            }
            MediaDecision::Wait { missing, until_ms } => {
                let reason = crate::media::wait::reason(&missing, &envelope.device, until_ms);
                debug!("{reason}");
                hub.park(ParkedLane {
                    lane: lane.to_owned(),
                    reason,
                    since_ms: since,
                    until_ms,
                    waits_for: missing.iter().map(|m| m.hash).collect(),
                });
                None
            }
            MediaDecision::GoWithout { missing } => {
                hub.unpark(lane);
                hub.metrics.delivered_without();
                let names: Vec<String> = missing
                    .iter()
                    .map(|m| format!("{} sha256:{}", m.role.name(), m.hash))
                    .collect();
                warn!(missing = %names.join(", "), wait_ms = hub.config.wait_ms,
                    "the event's media did not arrive within [media] wait_ms; delivering without them (flagged to the ERP)");
                Some((media, missing))
            }
        }
    }

    /// The ERP booked an event carrying `media`: mark them attached (the
    /// retention clock starts), release the event's references, and tell
    /// the device (`Attached` on its media_ack topic).
    async fn media_attached(
        &self,
        site: &dockline_protocol::SiteId,
        envelope: &Envelope,
        media: &[ErpMedium],
        document: String,
    ) {
        let Some(hub) = &self.media else {
            return;
        };
        let hashes: Vec<_> = media
            .iter()
            .map(|m| (m.hash, m.bytes.len() as u64))
            .collect();
        let event_id = envelope.id.to_string();
        let now = now_ms();
        let marks = hashes.clone();
        if let Err(e) = hub
            .store
            .call(move |s| {
                for (h, _) in &marks {
                    s.mark_attached(h, now)?;
                }
                s.drop_refs(&event_id)
            })
            .await
        {
            error!("cannot record the event's media as attached: {e}; retention keeps them longer");
        }
        let doc = (!document.is_empty()).then_some(document);
        for (hash, len) in hashes {
            let state = dockline_protocol::MediaState::Attached { doc: doc.clone() };
            match crate::media::ingest::later_ack(site, &envelope.device, hash, len, state) {
                Ok(p) => {
                    if self.acks.send(p).await.is_err() {
                        debug!("media ack not sent: shutting down");
                    }
                }
                Err(e) => error!(medium = %hash, "cannot encode the attached media ack: {e}"),
            }
        }
    }

    async fn record_attempt(
        &self,
        device: &DeviceId,
        epoch: u64,
        seq: u64,
        log: AttemptLog,
    ) -> Result<(), InboxError> {
        let d = device.clone();
        self.inbox
            .call(move |i| i.record_attempt(&d, epoch, seq, &log))
            .await
    }

    /// Waits for a request permit *and* the breaker's admission, in that
    /// order: a lane queued for a permit when the endpoint paused must not
    /// send into the pause. Cheap probes, when the breaker asks for one, are
    /// sent here with the same permit. `None` only at shutdown.
    async fn admitted(&self) -> Option<tokio::sync::SemaphorePermit<'_>> {
        loop {
            let permit = self.permits.acquire().await.ok()?;
            // Registered before the check, so a change made between the
            // check and the wait still wakes this lane.
            let changed = self.endpoint_changed.notified();
            let admission = self.lock_endpoint().breaker.admit(Instant::now());
            match admission {
                Admission::Go | Admission::Probe(ProbeKind::Real) => return Some(permit),
                Admission::Probe(ProbeKind::Cheap) => {
                    let answered = self.adapter.probe().await;
                    {
                        let mut endpoint = self.lock_endpoint();
                        if answered {
                            endpoint.breaker.on_success();
                        } else {
                            endpoint.breaker.on_failure(Instant::now());
                        }
                    }
                    self.endpoint_changed.notify_waiters();
                }
                Admission::WaitUntil(until) => {
                    // Waiting lanes hold no permit.
                    drop(permit);
                    tokio::select! {
                        () = tokio::time::sleep_until(until.into()) => {}
                        () = changed => {}
                    }
                }
            }
        }
    }

    async fn publish_verdict(
        &self,
        site: &dockline_protocol::SiteId,
        envelope: &Envelope,
        outcome: Outcome,
    ) {
        let verdict = Verdict {
            seq: envelope.seq,
            id: envelope.id,
            outcome,
        };
        match Publication::ack(
            site,
            &envelope.device,
            envelope.epoch,
            None,
            Vec::new(),
            vec![verdict],
        ) {
            Ok(p) => {
                // Closed only at shutdown; the verdict stays in the inbox either way.
                if self.acks.send(p).await.is_err() {
                    debug!(device = %envelope.device, seq = envelope.seq, event_id = %envelope.id,
                        "verdict ack not sent: shutting down");
                }
            }
            Err(e) => {
                error!(device = %envelope.device, seq = envelope.seq, event_id = %envelope.id,
                "cannot encode verdict ack: {e}")
            }
        }
    }
}

/// What a lane does after one event.
enum Then<'a> {
    /// Look for its next event.
    Look,
    /// After a booking: take this one (the verdict's transaction looked),
    /// while `Finish` waits for the verdict's commit and then acks it.
    Booked(Option<NextPending>, Finish<'a>),
}

/// The rest of a booking once its verdict is committed: the ack, the
/// counters, the media marks. It runs beside the lane's next deliveries.
type Finish<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>>;

/// Runs `work` to its end while driving `finishing` (earlier bookings'
/// rests) beside it; those done are dropped, the others stay for later.
async fn beside<'a, T>(
    work: impl std::future::Future<Output = T>,
    finishing: &mut Vec<Finish<'a>>,
) -> T {
    let mut work = std::pin::pin!(work);
    std::future::poll_fn(|cx| {
        finishing.retain_mut(|f| f.as_mut().poll(cx).is_pending());
        work.as_mut().poll(cx)
    })
    .await
}

/// The retry policy `[erp]` configures, shared by event delivery and the
/// follow-up webhooks.
pub(crate) fn policy_of(erp: &ErpConfig) -> Policy {
    let backoff = Backoff {
        min: Duration::from_millis(erp.retry_min_ms),
        max: Duration::from_millis(erp.retry_max_ms),
    };
    Policy {
        backoff,
        pause_max: Duration::from_millis(erp.pause_max_ms),
        max_bounded_attempts: erp.max_attempts,
        parked_min: backoff.max,
    }
}

/// Feeds a decision to the breaker: transient failures count against the
/// endpoint; any other answer shows that it works (or pauses/halts it).
/// The class `/metrics` counts an attempt under.
fn decision_class(decision: &Decision) -> &'static str {
    match decision {
        Decision::Booked { .. } => "booked",
        Decision::DeadLetter { class, .. } | Decision::Retry { class, .. } => class.name(),
        Decision::PauseEndpoint { .. } => "throttled",
        Decision::HaltEndpoint { .. } => "halted",
        Decision::RefreshCredentials { .. } => "re_auth",
    }
}

fn update_breaker(breaker: &mut CircuitBreaker, decision: &Decision, now: Instant) {
    match decision {
        Decision::Retry {
            class: FailureClass::Transient,
            ..
        } => breaker.on_failure(now),
        Decision::PauseEndpoint { delay, .. } => breaker.pause(now, *delay),
        Decision::HaltEndpoint { reason } | Decision::RefreshCredentials { reason } => {
            breaker.halt(now, reason.clone())
        }
        Decision::Booked { .. } | Decision::DeadLetter { .. } | Decision::Retry { .. } => {
            breaker.on_success()
        }
    }
}

/// The attempt as the inbox keeps it.
fn attempt_log(attempted: &Attempt, decision: &Decision) -> AttemptLog {
    let (status, error, body) = match &attempted.outcome {
        AttemptOutcome::Response(r) => (
            Some(r.status),
            None,
            excerpt(&r.body, MAX_BODY_EXCERPT).to_owned(),
        ),
        AttemptOutcome::Transport { detail, .. } => (None, Some(detail.clone()), String::new()),
        AttemptOutcome::Rpc(rpc) => (
            None,
            None,
            excerpt(&format!("{rpc:?}"), MAX_BODY_EXCERPT).to_owned(),
        ),
    };
    let decision = match decision {
        Decision::Booked { document, .. } => format!("booked {document}"),
        Decision::DeadLetter { class, .. } => format!("dead letter ({})", class.name()),
        Decision::Retry {
            after,
            class,
            same_key_only,
            ..
        } => format!(
            "retry in {} ms ({}{})",
            after.as_millis(),
            class.name(),
            if *same_key_only {
                ", same key only"
            } else {
                ""
            }
        ),
        Decision::PauseEndpoint { delay, .. } => {
            format!(
                "pause the endpoint for {} ms (throttled)",
                delay.as_millis()
            )
        }
        Decision::HaltEndpoint { .. } => "halt the endpoint".into(),
        Decision::RefreshCredentials { .. } => "refresh credentials".into(),
    };
    AttemptLog {
        n: 0,
        at_ms: now_ms(),
        request: attempted.request.clone(),
        status,
        error,
        body,
        decision,
    }
}
