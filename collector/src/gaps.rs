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
//!   collector's signature ([`crate::commands`]); a request that expires
//!   unanswered is simply asked again on the schedule above.
//! - The device answers by publishing what it holds and reporting the rest as
//!   shed (see [`dockline_protocol::Resend`]); either closes the hole in the
//!   inbox, and the next audit forgets it.
//! - Ages live in memory only: after a collector restart every hole waits
//!   `resend_after` again, which is harmless.
//! - With several collectors on one PostgreSQL inbox, one of them audits
//!   ([`crate::store::InboxStore::gap_audit_turn`]), so a device gets each
//!   request once; when it stops, another takes the turn.
//!
//! [`GapAudit`] is pure (time is passed in); [`run`] is the thin loop that
//! reads the inbox and publishes.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use dockline_protocol::{DeviceId, SiteId};
use tokio::sync::mpsc;
use tracing::{error, info};

use crate::commands::CommandSigner;
use crate::inbox::{DeviceHoles, InboxHandle};
use crate::publication::Publication;
use crate::shutdown::Shutdown;

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
        let requests = audit.observe(&holes, Instant::now());
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
