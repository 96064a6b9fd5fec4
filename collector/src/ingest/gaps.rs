//! The gap audit: holes in a device's sequence (missing below a stored
//! sequence) hold that device's ERP delivery, so the collector asks the
//! device to send them again rather than wait for its ack timeout.
//!
//! # Rules
//!
//! - A hole is tracked from the first audit that sees it, keyed by `(device,
//!   epoch, first missing sequence)`. A hole that shrinks from the top keeps
//!   its age; one whose start moved (the device is sending it) is a new hole
//!   and starts a new wait.
//! - A hole open for `resend_after` gets a resend request; one still open is
//!   asked again after 2×, 4×, then every 8× `resend_after`, so an offline
//!   device does not find a pile of requests queued for it.
//! - The requests of one `(device, epoch)` are one command listing every due
//!   range. Each carries an expiry and, with a key configured, the
//!   collector's signature ([`crate::ingest::commands`]); a request that expires
//!   unanswered is simply asked again on the schedule above.
//! - The device answers by publishing what it holds and reporting the rest as
//!   shed (see [`dockline_protocol::Resend`]); either closes the hole in the
//!   inbox, and the next audit forgets it.
//! - Ages live in memory only: after a collector restart every hole waits
//!   `resend_after` again, which is harmless.
//! - A hole in an epoch older than the device's newest has a time limit
//!   (`[gaps] old_epoch_hole_limit_secs`): a reinstalled device cannot send
//!   it any more, and without a verify key it never answers, so the newer
//!   epoch would wait behind it forever. Past the limit the hole is closed as
//!   lost ([`close`]: recorded as shed, counted in `holes_lost`, the lost
//!   ranges logged at WARN); `dockline-collector holes close` does the same
//!   at once for any epoch.
//! - With several collectors on one PostgreSQL inbox, one of them audits
//!   ([`crate::inbox::InboxStore::gap_audit_turn`]), so a device gets each
//!   request once; when it stops, another takes the turn.
//!
//! [`GapAudit`] is pure (time is passed in); [`run`] is the thin loop that
//! reads the inbox and publishes.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use dockline_protocol::{DeviceId, SiteId};
use tokio::sync::mpsc;
use tracing::{error, info};

use crate::inbox::InboxStore;
use crate::inbox::{DeviceHoles, InboxError, InboxHandle};
use crate::ingest::commands::CommandSigner;
use crate::publication::Publication;
use crate::shutdown::Shutdown;

/// `[gaps]`: the gap audit.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct GapsConfig {
    /// A hole (sequences missing below a stored one) open this long gets a
    /// resend request on the device's `cmd` topic, milliseconds; unanswered
    /// requests are repeated at growing intervals (2×, 4×, then every 8×).
    #[serde(default = "default_resend_after_ms")]
    pub resend_after_ms: u64,
    /// A hole in an epoch older than the device's newest (the device was
    /// reinstalled and cannot send it any more, or the batch that opened it
    /// was forged) is closed as lost after this many seconds open, and the
    /// lost ranges are logged; `dockline-collector holes close` closes one
    /// at once. 0 never closes one by time.
    #[serde(default = "default_old_epoch_hole_limit_secs")]
    pub old_epoch_hole_limit_secs: u64,
}

impl GapsConfig {
    /// Checks what serde cannot.
    pub fn check(&self) -> Result<(), crate::config_error::ConfigCheckError> {
        if self.resend_after_ms < 100 {
            return Err(crate::config_error::ConfigCheckError {
                key: "gaps.resend_after_ms",
                problem: format!(
                    "is {}; use at least 100 (an agent needs time to send what is in flight)",
                    self.resend_after_ms
                ),
            });
        }
        Ok(())
    }

    /// How long a hole may stay open before a resend request.
    pub fn resend_after(&self) -> Duration {
        Duration::from_millis(self.resend_after_ms)
    }

    /// How long a hole in an old epoch may stay open (`None`: forever).
    pub fn old_epoch_hole_limit(&self) -> Option<Duration> {
        (self.old_epoch_hole_limit_secs > 0)
            .then(|| Duration::from_secs(self.old_epoch_hole_limit_secs))
    }
}

impl Default for GapsConfig {
    fn default() -> Self {
        Self {
            resend_after_ms: default_resend_after_ms(),
            old_epoch_hole_limit_secs: default_old_epoch_hole_limit_secs(),
        }
    }
}

fn default_old_epoch_hole_limit_secs() -> u64 {
    3600
}

fn default_resend_after_ms() -> u64 {
    10_000
}

/// Repeated requests wait at most this many times `resend_after`.
const MAX_BACKOFF_FACTOR: u32 = 8;

/// A resend request to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResendRequest {
    /// The device.
    pub device: DeviceId,
    /// Its site.
    pub site: SiteId,
    /// The epoch of the ranges.
    pub epoch: u64,
    /// The missing ranges due for a request.
    pub ranges: Vec<(u64, u64)>,
}

#[derive(Debug, Clone, Copy)]
struct Tracked {
    seen: Instant,
    last_request: Option<Instant>,
    requests: u32,
}

/// Hole ages and request times.
#[derive(Debug)]
pub struct GapAudit {
    resend_after: Duration,
    tracked: HashMap<(DeviceId, u64, u64), Tracked>,
}

impl GapAudit {
    /// An audit that asks for a hole after it was open `resend_after`.
    pub fn new(resend_after: Duration) -> Self {
        Self {
            resend_after,
            tracked: HashMap::new(),
        }
    }

    /// Takes the inbox's current holes at `now`; returns the requests due.
    pub fn observe(&mut self, holes: &[DeviceHoles], now: Instant) -> Vec<ResendRequest> {
        let mut still_open = HashMap::with_capacity(self.tracked.len());
        let mut due = Vec::new();
        for dh in holes {
            let mut ranges = Vec::new();
            for &(from, to) in &dh.holes {
                let key = (dh.device.clone(), dh.epoch, from);
                let mut t = self.tracked.get(&key).copied().unwrap_or(Tracked {
                    seen: now,
                    last_request: None,
                    requests: 0,
                });
                let wait = match t.last_request {
                    None => now.saturating_duration_since(t.seen) >= self.resend_after,
                    Some(last) => {
                        let factor = 1u32
                            .checked_shl(t.requests)
                            .unwrap_or(u32::MAX)
                            .min(MAX_BACKOFF_FACTOR);
                        now.saturating_duration_since(last) >= self.resend_after * factor
                    }
                };
                if wait {
                    ranges.push((from, to));
                    t.last_request = Some(now);
                    t.requests = t.requests.saturating_add(1);
                }
                still_open.insert(key, t);
            }
            if !ranges.is_empty() {
                due.push(ResendRequest {
                    device: dh.device.clone(),
                    site: dh.site.clone(),
                    epoch: dh.epoch,
                    ranges,
                });
            }
        }
        // Closed holes are forgotten.
        self.tracked = still_open;
        due
    }
}

impl GapAudit {
    /// The holes of `holes` open at least `limit` (by this audit's clock)
    /// whose epoch is older than the device's newest (`newest`).
    pub fn expired_old_epochs(
        &self,
        holes: &[DeviceHoles],
        newest: &HashMap<DeviceId, u64>,
        limit: Duration,
        now: Instant,
    ) -> Vec<ResendRequest> {
        let mut out = Vec::new();
        for dh in holes {
            if newest.get(&dh.device).is_none_or(|n| dh.epoch >= *n) {
                continue;
            }
            let ranges: Vec<(u64, u64)> = dh
                .holes
                .iter()
                .copied()
                .filter(|(from, _)| {
                    self.tracked
                        .get(&(dh.device.clone(), dh.epoch, *from))
                        .is_some_and(|t| now.saturating_duration_since(t.seen) >= limit)
                })
                .collect();
            if !ranges.is_empty() {
                out.push(ResendRequest {
                    device: dh.device.clone(),
                    site: dh.site.clone(),
                    epoch: dh.epoch,
                    ranges,
                });
            }
        }
        out
    }
}

/// Closes `ranges` (holes) of `device`'s `epoch` as lost: records them as
/// shed, so the watermark passes them and the lanes behind them go on, and
/// counts them in `holes_lost`. Only ranges below the highest stored
/// sequence close (the watermark rules, [`crate::watermark`]). Returns the
/// ranges closed.
pub fn close(
    inbox: &mut dyn InboxStore,
    site: &SiteId,
    device: &DeviceId,
    epoch: u64,
    ranges: Vec<(u64, u64)>,
    now_ms: i64,
) -> Result<Vec<(u64, u64)>, InboxError> {
    if ranges.is_empty() {
        return Ok(Vec::new());
    }
    let batch = dockline_protocol::Batch {
        v: dockline_protocol::PROTOCOL_VERSION,
        device: device.clone(),
        epoch,
        first_held: 1,
        events: Vec::new(),
        shed: ranges,
    };
    Ok(inbox.store_batch(site, &batch, now_ms)?.newly_shed)
}

/// Ranges closed as lost, per epoch.
pub type ClosedHoles = Vec<(u64, Vec<(u64, u64)>)>;

/// Every open hole of `device`'s `epoch` (all its epochs when `None`),
/// closed as lost ([`close`]); returns `(epoch, ranges closed)`.
pub fn close_all(
    inbox: &mut dyn InboxStore,
    device: &DeviceId,
    epoch: Option<u64>,
    now_ms: i64,
) -> Result<ClosedHoles, InboxError> {
    let mut closed = Vec::new();
    for dh in inbox.open_holes()? {
        if &dh.device != device || epoch.is_some_and(|e| e != dh.epoch) {
            continue;
        }
        let ranges = close(inbox, &dh.site, device, dh.epoch, dh.holes.clone(), now_ms)?;
        closed.push((dh.epoch, ranges));
    }
    Ok(closed)
}

/// How often the audit reads the inbox: often enough that a hole is asked
/// for close to `resend_after`, at most once a second.
pub fn audit_interval(resend_after: Duration) -> Duration {
    (resend_after / 4).clamp(Duration::from_millis(50), Duration::from_secs(1))
}

/// Audits the inbox until `shutdown`, publishing resend requests (signed by
/// `signer`) on `out`.
pub async fn run(
    inbox: InboxHandle,
    resend_after: Duration,
    old_epoch_limit: Option<Duration>,
    signer: CommandSigner,
    out: mpsc::Sender<Publication>,
    mut shutdown: Shutdown,
) {
    let mut audit = GapAudit::new(resend_after);
    let mut every = tokio::time::interval(audit_interval(resend_after));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.wait() => return,
            _ = every.tick() => {}
        }
        match inbox.call(|i| i.gap_audit_turn()).await {
            Ok(true) => {}
            // Another collector on the shared inbox audits it.
            Ok(false) => continue,
            Err(e) => {
                error!("gap audit cannot read the inbox: {e}; trying again");
                continue;
            }
        }
        let holes = match inbox.call(|i| i.open_holes()).await {
            Ok(h) => h,
            Err(e) => {
                error!("gap audit cannot read the inbox: {e}; trying again");
                continue;
            }
        };
        let now = Instant::now();
        let requests = audit.observe(&holes, now);
        if let Some(limit) = old_epoch_limit {
            close_expired(&inbox, &audit, &holes, limit, now).await;
        }
        let mut sent = 0u64;
        for r in requests {
            let mark = holes
                .iter()
                .find(|h| h.device == r.device && h.epoch == r.epoch)
                .map_or(0, |h| h.complete_up_to);
            info!(device = %r.device, epoch = r.epoch, complete_up_to = mark, missing = ?r.ranges,
                "hole open for {resend_after:?}; asking the device to resend");
            match Publication::resend(
                &r.site,
                &r.device,
                r.epoch,
                r.ranges,
                &signer,
                crate::now_ms(),
            ) {
                Ok(p) => {
                    if out.send(p).await.is_err() {
                        return;
                    }
                    sent += 1;
                }
                Err(e) => error!(device = %r.device, "cannot encode a resend request: {e}"),
            }
        }
        if sent > 0
            && let Err(e) = inbox.call(move |i| i.count_resend_requests(sent)).await
        {
            error!("cannot count resend requests: {e}");
        }
    }
}

/// Closes the holes of old epochs open longer than `limit`, logging what
/// was lost.
async fn close_expired(
    inbox: &InboxHandle,
    audit: &GapAudit,
    holes: &[DeviceHoles],
    limit: Duration,
    now: Instant,
) {
    let mut newest = HashMap::new();
    for dh in holes {
        if newest.contains_key(&dh.device) {
            continue;
        }
        let device = dh.device.clone();
        match inbox.call(move |i| i.newest_epoch(&device)).await {
            Ok(Some(n)) => {
                newest.insert(dh.device.clone(), n);
            }
            Ok(None) => {}
            Err(e) => error!("gap audit cannot read the inbox: {e}; trying again"),
        }
    }
    for r in audit.expired_old_epochs(holes, &newest, limit, now) {
        let (site, device, epoch, ranges) = (r.site, r.device.clone(), r.epoch, r.ranges);
        let closed = inbox
            .call(move |i| close(i, &site, &device, epoch, ranges, crate::now_ms()))
            .await;
        match closed {
            Ok(lost) if !lost.is_empty() => tracing::warn!(device = %r.device, epoch, lost = ?lost,
                "closing holes of an old epoch open longer than {limit:?} ([gaps] old_epoch_hole_limit_secs) as lost: \
                 the device moved to a newer epoch and will not send them; the events after them go on"),
            Ok(_) => {}
            Err(e) => error!(device = %r.device, epoch, "cannot close an old epoch's holes: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holes(device: &str, epoch: u64, ranges: &[(u64, u64)]) -> DeviceHoles {
        DeviceHoles {
            device: DeviceId::new(device).expect("id"),
            site: SiteId::new("dc-north").expect("site"),
            epoch,
            complete_up_to: ranges.first().map_or(0, |r| r.0 - 1),
            holes: ranges.to_vec(),
        }
    }

    const AFTER: Duration = Duration::from_secs(10);

    fn at(t0: Instant, secs: u64) -> Instant {
        t0 + Duration::from_secs(secs)
    }

    /// Device, epoch and ranges of each request.
    type Asked = (String, u64, Vec<(u64, u64)>);

    fn ranges(r: &[ResendRequest]) -> Vec<Asked> {
        r.iter()
            .map(|r| (r.device.to_string(), r.epoch, r.ranges.clone()))
            .collect()
    }

    #[test]
    fn a_hole_is_asked_for_after_the_wait_then_at_growing_intervals() {
        let t0 = Instant::now();
        let mut a = GapAudit::new(AFTER);
        let h = [holes("van-01", 1, &[(67, 111)])];
        assert!(a.observe(&h, t0).is_empty(), "just seen");
        assert!(a.observe(&h, at(t0, 9)).is_empty());
        assert_eq!(
            ranges(&a.observe(&h, at(t0, 10))),
            vec![("van-01".into(), 1, vec![(67, 111)])]
        );
        assert!(a.observe(&h, at(t0, 11)).is_empty(), "asked already");
        // Second request after 2x, third after 4x, then every 8x.
        assert!(a.observe(&h, at(t0, 29)).is_empty());
        assert_eq!(a.observe(&h, at(t0, 30)).len(), 1);
        assert!(a.observe(&h, at(t0, 69)).is_empty());
        assert_eq!(a.observe(&h, at(t0, 70)).len(), 1);
        assert!(a.observe(&h, at(t0, 149)).is_empty());
        assert_eq!(a.observe(&h, at(t0, 150)).len(), 1);
        assert!(a.observe(&h, at(t0, 229)).is_empty());
        assert_eq!(a.observe(&h, at(t0, 230)).len(), 1, "capped at 8x");
    }

    #[test]
    fn closed_holes_are_forgotten_and_a_moved_start_waits_afresh() {
        let t0 = Instant::now();
        let mut a = GapAudit::new(AFTER);
        a.observe(&[holes("van-01", 1, &[(67, 111)])], t0);
        // The top shrank: same hole, same age.
        assert_eq!(
            a.observe(&[holes("van-01", 1, &[(67, 100)])], at(t0, 10))
                .len(),
            1
        );
        // The device is sending it: the start moved, a new wait begins.
        assert!(
            a.observe(&[holes("van-01", 1, &[(90, 100)])], at(t0, 15))
                .is_empty()
        );
        assert_eq!(
            a.observe(&[holes("van-01", 1, &[(90, 100)])], at(t0, 25))
                .len(),
            1
        );
        // Closed, then the same start opens again later: a fresh wait.
        assert!(a.observe(&[], at(t0, 26)).is_empty());
        assert!(
            a.observe(&[holes("van-01", 1, &[(90, 100)])], at(t0, 27))
                .is_empty()
        );
        assert_eq!(a.tracked.len(), 1);
    }

    #[test]
    fn due_ranges_of_one_epoch_go_in_one_request_and_epochs_apart() {
        let t0 = Instant::now();
        let mut a = GapAudit::new(AFTER);
        let first = [holes("van-01", 1, &[(3, 4)]), holes("van-01", 2, &[(7, 7)])];
        a.observe(&first, t0);
        let later = [
            holes("van-01", 1, &[(3, 4), (9, 9)]),
            holes("van-01", 2, &[(7, 7)]),
            holes("hh-02", 5, &[(1, 1)]),
        ];
        assert_eq!(
            ranges(&a.observe(&later, at(t0, 10))),
            vec![
                ("van-01".into(), 1, vec![(3, 4)]),
                ("van-01".into(), 2, vec![(7, 7)]),
            ],
            "9 and hh-02 were seen only now"
        );
        assert_eq!(
            ranges(&a.observe(&later, at(t0, 20))),
            vec![
                ("van-01".into(), 1, vec![(9, 9)]),
                ("hh-02".into(), 5, vec![(1, 1)]),
            ]
        );
    }

    #[test]
    fn only_holes_of_an_older_epoch_expire_and_only_after_the_limit() {
        let t0 = Instant::now();
        let mut a = GapAudit::new(AFTER);
        let h = [holes("van-01", 1, &[(3, 4)]), holes("van-01", 2, &[(9, 9)])];
        a.observe(&h, t0);
        let newest: HashMap<DeviceId, u64> = [(DeviceId::new("van-01").expect("id"), 2)]
            .into_iter()
            .collect();
        let limit = Duration::from_secs(3600);
        assert!(
            a.expired_old_epochs(&h, &newest, limit, at(t0, 3599))
                .is_empty()
        );
        a.observe(&h, at(t0, 3600));
        assert_eq!(
            ranges(&a.expired_old_epochs(&h, &newest, limit, at(t0, 3600))),
            vec![("van-01".into(), 1, vec![(3, 4)])],
            "the newest epoch's hole never expires by time"
        );
    }

    /// `holes close`: a hole closed by the operator is recorded as shed,
    /// counted as lost, and the watermark passes it.
    #[test]
    fn closing_a_hole_passes_the_watermark_and_counts_it_lost() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut inbox = crate::inbox::Inbox::open(&dir.path().join("inbox.db")).expect("inbox");
        let site = SiteId::new("dc-north").expect("site");
        let dev = DeviceId::new("hh-01").expect("id");
        inbox
            .store_batch(
                &site,
                &crate::inbox::tests::batch("hh-01", 1, 1, &[1, 2, 5]),
                0,
            )
            .expect("store");
        let closed = close_all(&mut inbox, &dev, Some(1), 0).expect("close");
        assert_eq!(closed, vec![(1, vec![(3, 4)])]);
        assert_eq!(inbox.complete_up_to(&dev, 1).expect("mark"), 5);
        assert_eq!(inbox.stats().expect("stats").holes_lost, 2);
        assert!(
            close_all(&mut inbox, &dev, None, 0)
                .expect("again")
                .is_empty()
        );
    }

    #[test]
    fn the_audit_runs_often_enough_but_not_too_often() {
        assert_eq!(audit_interval(AFTER), Duration::from_secs(1));
        assert_eq!(
            audit_interval(Duration::from_millis(1000)),
            Duration::from_millis(250)
        );
        assert_eq!(
            audit_interval(Duration::from_millis(100)),
            Duration::from_millis(50)
        );
    }
}
