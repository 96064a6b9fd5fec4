//! Business lanes: which events must reach the ERP in which order.
//!
//! Pure: no I/O. The inbox stores each business event's lane key and stage
//! ([`lane_key`], [`stage`]) and asks [`next_step`] which pending event of a
//! lane may go next; [`crate::delivery`] runs one task per lane.
//!
//! # The lane key
//!
//! An event's lane is the first business reference it carries, in this
//! precedence: **order** (`order:{ref}`), **shipment** (`shipment:{ref}`),
//! **stop** (`stop:{ref}`). An event with none of them falls back to a lane
//! of its own device (`device:{id}`), where the device's sequence order is
//! the only rule. The precedence follows the ERP research (§2.6): the order
//! is the document the ERP books against; the driver's `departed`,
//! `arrived` and proof of delivery carry the order *and* the stop, so they
//! meet the picker's events of the same order in one lane.
//!
//! # The stages
//!
//! pick (0) → pack (1) → load (2) → depart (3) → arrive (4) → deliver (5).
//! Exceptions have no stage of their own.
//!
//! A pending event's *effective stage* is the highest stage among its own
//! device's pending events of the lane up to and including it (exceptions
//! start at 0). A device's own sequence is the order it recorded things in,
//! so its later events never count as earlier than its earlier ones; this is
//! what makes the rules below free of cycles (see "Why it cannot deadlock").
//!
//! # When a pending event may go (all must hold)
//!
//! 1. **Device order**: it is its device's oldest pending event in the lane
//!    (`(epoch, seq)` order); a device's seq N+1 is never posted before N
//!    of the same lane.
//! 2. **No hole**: its sequence is at or below its epoch's watermark and no
//!    older epoch of its device holds events above its own watermark (the
//!    missing sequences could belong to this lane).
//! 3. **Stored predecessors first**: no other pending event of the lane has
//!    a lower effective stage. A stored pick is always booked before a
//!    stored pack, load, … of the same order, whichever device sent it and
//!    whenever it arrived.
//! 4. **Expected predecessor** (order and shipment lanes only, events with a
//!    stage above pick): the lane's highest *resolved* stage (booked, or
//!    rejected and discarded) is at least the stage just before this one.
//!    A proof of delivery waits for the order's `arrived`, a `departed` for
//!    its `loaded`, and so on, even when that event has not reached the
//!    collector yet (the driver's phone synced before the picker's
//!    handheld). This rule alone could wait forever for a step that will
//!    never come (a route without a pack step), so it holds an event at most
//!    `erp.lane_park_max_ms` after the collector stored it; then the event
//!    goes and is counted as *delivered out of order*
//!    (`delivered_out_of_order` in `/v1/stats`). Stop and device lanes have
//!    no fixed chain (a stop is arrived at, delivered to, departed from), so
//!    only rules 1–3 apply there.
//!
//! An event that may not go is *parked*. A lane whose event (pending or
//! ERP-rejected) has an **open dead letter** is *blocked*: nothing of it is
//! posted until the dead letter is replayed or discarded; other lanes,
//! including the same device's other orders, go on.
//!
//! # Why it cannot deadlock
//!
//! Rule 1 makes an event wait only for earlier events of its own device
//! with an effective stage no higher than its own; rule 3 only for events
//! with a strictly lower effective stage. Along any chain of waits the pair
//! (effective stage, position in the device's sequence) strictly decreases,
//! so no chain returns to where it started. Rule 4 waits on time, not on an
//! event, and ends after `lane_park_max_ms`. What is left are waits on the
//! outside world, each visible: a hole (the gap audit asks the device to
//! resend, or it reports the range gone), a dead letter (an operator), the
//! ERP itself.

use dockline_protocol::{BusinessEvent, DeviceId, EventDetail};

/// Stage names, by stage number.
pub const STAGES: [&str; 6] = [
    "picked",
    "packed",
    "loaded",
    "departed",
    "arrived",
    "delivered",
];

/// The lane an event belongs to (see the module docs for the precedence).
pub fn lane_key(device: &DeviceId, event: &BusinessEvent) -> String {
    let r = &event.refs;
    if let Some(o) = &r.order {
        format!("order:{o}")
    } else if let Some(s) = &r.shipment {
        format!("shipment:{s}")
    } else if let Some(s) = &r.stop {
        format!("stop:{s}")
    } else {
        format!("device:{device}")
    }
}

/// The business stage of an event; `None` for exceptions.
pub fn stage(detail: &EventDetail) -> Option<u8> {
    match detail {
        EventDetail::Picked { .. } => Some(0),
        EventDetail::Packed { .. } => Some(1),
        EventDetail::Loaded { .. } => Some(2),
        EventDetail::Departed { .. } => Some(3),
        EventDetail::Arrived { .. } => Some(4),
        EventDetail::Delivered(_) => Some(5),
        EventDetail::Exception { .. } => None,
    }
}

/// Whether a lane follows the fixed pick → … → deliver chain (rule 4).
pub fn has_chain(lane: &str) -> bool {
    lane.starts_with("order:") || lane.starts_with("shipment:")
}

/// The name of a stage number, for people.
pub fn stage_name(stage: u8) -> &'static str {
    STAGES.get(usize::from(stage)).copied().unwrap_or("?")
}

/// One pending event of a lane, as the scheduler sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaneEvent {
    /// Its device.
    pub device: String,
    /// Its epoch.
    pub epoch: u64,
    /// Its sequence.
    pub seq: u64,
    /// Its stage (`None`: exception).
    pub stage: Option<u8>,
    /// When the collector stored it, ms since the Unix epoch.
    pub received_ms: i64,
    /// Held by a hole in its device's sequence (rule 2).
    pub held: bool,
}

/// What the lane knows besides its pending events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LaneFacts {
    /// Rule 4 applies (order and shipment lanes).
    pub chain: bool,
    /// The highest stage of the lane's booked (or rejected) events.
    pub top_resolved: Option<u8>,
    /// An open dead letter of the lane, by id.
    pub dead_letter: Option<i64>,
    /// `erp.lane_park_max_ms`.
    pub park_max_ms: i64,
}

/// Why a lane's next event waits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parked {
    /// Rule 2: the event's device has a hole below it.
    Hole {
        /// Device.
        device: String,
        /// The held sequence.
        seq: u64,
    },
    /// Rule 4: waiting for the lane's previous stage to be booked.
    Expecting {
        /// The waiting event's stage.
        stage: u8,
        /// The stage it waits for.
        wants: u8,
    },
}

impl std::fmt::Display for Parked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Parked::Hole { device, seq } => write!(
                f,
                "{device} seq {seq} waits for missing earlier sequences of {device} (gap audit)"
            ),
            Parked::Expecting { stage, wants } => write!(
                f,
                "`{}` waits for the lane's `{}` to be booked",
                stage_name(*stage),
                stage_name(*wants)
            ),
        }
    }
}

/// What a lane does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LaneStep {
    /// Deliver `events[index]`; `late` when rule 4 gave up waiting.
    Deliver {
        /// Index into the events given to [`next_step`].
        index: usize,
        /// Delivered out of business order after `lane_park_max_ms`.
        late: bool,
    },
    /// Nothing may go now.
    Park {
        /// Why the lowest-stage candidate waits.
        reason: Parked,
        /// When to look again without being woken (rule 4's deadline).
        until_ms: Option<i64>,
    },
    /// An open dead letter blocks the lane.
    Blocked {
        /// Its id.
        dead_letter: i64,
    },
    /// No pending event.
    Idle,
}

/// Decides a lane's next step from its pending `events` (any order) at
/// `now_ms`, per the rules in the module docs.
pub fn next_step(events: &[LaneEvent], facts: LaneFacts, now_ms: i64) -> LaneStep {
    if let Some(dead_letter) = facts.dead_letter {
        return LaneStep::Blocked { dead_letter };
    }
    if events.is_empty() {
        return LaneStep::Idle;
    }
    // Device order, then the running maximum of stages per device.
    let mut order: Vec<usize> = (0..events.len()).collect();
    order.sort_by(|&a, &b| {
        let (x, y) = (&events[a], &events[b]);
        (&x.device, x.epoch, x.seq).cmp(&(&y.device, y.epoch, y.seq))
    });
    let mut effective = vec![0u8; events.len()];
    let mut heads: Vec<usize> = Vec::new();
    let mut running = 0u8;
    let mut previous: Option<&str> = None;
    for &i in &order {
        let e = &events[i];
        if previous != Some(e.device.as_str()) {
            running = 0;
            heads.push(i);
            previous = Some(e.device.as_str());
        }
        running = running.max(e.stage.unwrap_or(0));
        effective[i] = running;
    }
    let lowest = effective.iter().copied().min().unwrap_or(0);
    // Rule 3: only heads at the lowest effective stage are candidates;
    // earliest stored first.
    let mut candidates: Vec<usize> = heads
        .into_iter()
        .filter(|&i| effective[i] == lowest)
        .collect();
    candidates.sort_by_key(|&i| (events[i].received_ms, i));
    let mut first_reason: Option<Parked> = None;
    let mut until: Option<i64> = None;
    for i in candidates {
        let e = &events[i];
        if e.held {
            first_reason.get_or_insert(Parked::Hole {
                device: e.device.clone(),
                seq: e.seq,
            });
            continue;
        }
        match (facts.chain, e.stage) {
            (true, Some(s)) if s > 0 => {
                let wants = s - 1;
                if facts.top_resolved.is_some_and(|t| t >= wants) {
                    return LaneStep::Deliver {
                        index: i,
                        late: false,
                    };
                }
                let deadline = e.received_ms.saturating_add(facts.park_max_ms);
                if now_ms >= deadline {
                    return LaneStep::Deliver {
                        index: i,
                        late: true,
                    };
                }
                until = Some(until.map_or(deadline, |u: i64| u.min(deadline)));
                first_reason.get_or_insert(Parked::Expecting { stage: s, wants });
            }
            _ => {
                return LaneStep::Deliver {
                    index: i,
                    late: false,
                };
            }
        }
    }
    LaneStep::Park {
        // Candidates are never empty: some head holds the lowest stage.
        reason: first_reason.unwrap_or(Parked::Expecting { stage: 0, wants: 0 }),
        until_ms: until,
    }
}

/// Whether a lane's claim must be renewed before an ERP attempt that
/// starts at `now_ms` and may take up to `request_timeout_ms`: unless the
/// claim is known to hold past the attempt's end (`claimed_until_ms`, from
/// the look that handed the event out), another collector could take the
/// lane over mid-request. `None` (not known): renew.
pub fn must_renew(claimed_until_ms: Option<i64>, now_ms: i64, request_timeout_ms: u64) -> bool {
    let timeout = i64::try_from(request_timeout_ms).unwrap_or(i64::MAX);
    claimed_until_ms.is_none_or(|until| now_ms.saturating_add(timeout) >= until)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(device: &str, seq: u64, stage: Option<u8>, received_ms: i64) -> LaneEvent {
        LaneEvent {
            device: device.into(),
            epoch: 1,
            seq,
            stage,
            received_ms,
            held: false,
        }
    }

    fn facts(top: Option<u8>) -> LaneFacts {
        LaneFacts {
            chain: true,
            top_resolved: top,
            dead_letter: None,
            park_max_ms: 1_000,
        }
    }

    #[test]
    fn a_fresh_claim_needs_no_renewal_but_one_that_could_lapse_mid_request_does() {
        // Claimed until 40 s; a 10 s request starting at 1 s ends well before.
        assert!(!must_renew(Some(40_000), 1_000, 10_000));
        // Starting at 30 s it could still run at 40 s: renew.
        assert!(must_renew(Some(40_000), 30_000, 10_000));
        assert!(must_renew(Some(40_000), 31_000, 10_000));
        // Not known: renew.
        assert!(must_renew(None, 1_000, 10_000));
        assert!(must_renew(Some(i64::MAX), 1, u64::MAX));
    }

    #[test]
    fn keys_follow_order_shipment_stop_device() {
        use dockline_protocol::References;
        let dev = DeviceId::new("van-01").expect("id");
        let mut e = BusinessEvent {
            detail: EventDetail::Loaded {
                vehicle: "VAN-7".into(),
            },
            refs: References {
                order: Some("SO-1".into()),
                shipment: Some("SH-1".into()),
                stop: Some("ST-1".into()),
                ..References::default()
            },
        };
        assert_eq!(lane_key(&dev, &e), "order:SO-1");
        e.refs.order = None;
        assert_eq!(lane_key(&dev, &e), "shipment:SH-1");
        e.refs.shipment = None;
        assert_eq!(lane_key(&dev, &e), "stop:ST-1");
        e.refs.stop = None;
        assert_eq!(lane_key(&dev, &e), "device:van-01");
        assert!(has_chain("order:SO-1") && has_chain("shipment:x"));
        assert!(!has_chain("stop:ST-1") && !has_chain("device:van-01"));
    }

    #[test]
    fn a_pod_before_its_pick_parks_until_the_deadline() {
        let pod = [ev("van-01", 1, Some(5), 100)];
        assert_eq!(
            next_step(&pod, facts(None), 500),
            LaneStep::Park {
                reason: Parked::Expecting { stage: 5, wants: 4 },
                until_ms: Some(1_100)
            }
        );
        assert_eq!(
            next_step(&pod, facts(None), 1_100),
            LaneStep::Deliver {
                index: 0,
                late: true
            }
        );
        assert_eq!(
            next_step(&pod, facts(Some(4)), 500),
            LaneStep::Deliver {
                index: 0,
                late: false
            }
        );
    }

    #[test]
    fn stored_earlier_stages_go_first_whatever_arrived_first() {
        // The driver's events were stored first, the picker's later.
        let events = [
            ev("van-01", 1, Some(3), 10),
            ev("van-01", 2, Some(4), 10),
            ev("hh-02", 7, Some(0), 20),
            ev("hh-02", 8, Some(1), 20),
            ev("hh-02", 9, Some(2), 20),
        ];
        assert_eq!(
            next_step(&events, facts(None), 30),
            LaneStep::Deliver {
                index: 2,
                late: false
            }
        );
        // Once the pick is booked (gone from pending), the pack is next.
        assert_eq!(
            next_step(&events[..2], facts(Some(2)), 30),
            LaneStep::Deliver {
                index: 0,
                late: false
            }
        );
    }

    #[test]
    fn a_device_that_recorded_steps_backwards_keeps_its_own_order() {
        // Each device recorded a later stage first: the effective stages
        // keep this from waiting in a circle.
        let events = [
            ev("a", 1, Some(5), 1),
            ev("a", 2, Some(3), 1),
            ev("b", 1, Some(5), 1),
            ev("b", 2, Some(0), 1),
        ];
        let mut f = facts(Some(4));
        f.chain = false;
        assert_eq!(
            next_step(&events, f, 2),
            LaneStep::Deliver {
                index: 0,
                late: false
            }
        );
    }

    #[test]
    fn a_hole_parks_and_a_dead_letter_blocks() {
        let mut events = [ev("hh-01", 3, Some(0), 1)];
        events[0].held = true;
        assert_eq!(
            next_step(&events, facts(None), 2),
            LaneStep::Park {
                reason: Parked::Hole {
                    device: "hh-01".into(),
                    seq: 3
                },
                until_ms: None
            }
        );
        let mut f = facts(None);
        f.dead_letter = Some(9);
        assert_eq!(
            next_step(&events, f, 2),
            LaneStep::Blocked { dead_letter: 9 }
        );
        assert_eq!(next_step(&[], facts(None), 2), LaneStep::Idle);
    }

    #[test]
    fn exceptions_and_stop_lanes_have_no_expected_step() {
        let mut f = facts(None);
        let exception = [ev("van-01", 4, None, 1)];
        assert_eq!(
            next_step(&exception, f, 2),
            LaneStep::Deliver {
                index: 0,
                late: false
            }
        );
        f.chain = false;
        let arrived = [ev("van-01", 5, Some(4), 1)];
        assert_eq!(
            next_step(&arrived, f, 2),
            LaneStep::Deliver {
                index: 0,
                late: false
            }
        );
    }
}
