//! Disk budget and priority eviction, as a pure decision.
//!
//! Room for new events is the smaller of what the byte budget allows and
//! what the disk has above its free-space watermark. When a group of new
//! events does not fit, older sheddable events make room: telemetry first
//! (oldest first), then normal events, **never** must-deliver events. A new
//! telemetry reading may only displace older telemetry. What still does not
//! fit is refused, and the producer is told.

use dockline_protocol::Priority;

/// Space accounting at the moment of a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Space {
    /// Payload bytes held, all classes.
    pub held_bytes: u64,
    /// Payload bytes held per class: must-deliver, normal, telemetry.
    pub held_by_class: [u64; 3],
    /// The configured byte budget.
    pub budget_bytes: u64,
    /// Free bytes on the data folder's file system, when known.
    pub disk_free: Option<u64>,
    /// The free-space watermark never to go below.
    pub min_free_bytes: u64,
}

impl Space {
    /// Bytes that can be added without shedding.
    pub fn room(&self) -> u64 {
        let by_budget = self.budget_bytes.saturating_sub(self.held_bytes);
        match self.disk_free {
            Some(free) => by_budget.min(free.saturating_sub(self.min_free_bytes)),
            None => by_budget,
        }
    }
}

/// The decision for a group of incoming events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Per incoming event: admitted or refused.
    pub admitted: Vec<bool>,
    /// Bytes of old telemetry to shed (oldest first).
    pub shed_telemetry: u64,
    /// Bytes of old normal events to shed (oldest first).
    pub shed_normal: u64,
}

/// Index of a priority in per-class arrays.
pub fn class_index(p: Priority) -> usize {
    match p {
        Priority::MustDeliver => 0,
        Priority::Normal => 1,
        Priority::Telemetry => 2,
    }
}

/// Decides which incoming events (priority, payload bytes) fit and what to shed.
pub fn plan(space: &Space, incoming: &[(Priority, u64)]) -> Plan {
    let mut room = space.room();
    let mut sheddable_tel = space.held_by_class[2];
    let mut sheddable_norm = space.held_by_class[1];
    let mut plan = Plan {
        admitted: Vec::with_capacity(incoming.len()),
        shed_telemetry: 0,
        shed_normal: 0,
    };
    for &(priority, size) in incoming {
        if size <= room {
            room -= size;
            plan.admitted.push(true);
            continue;
        }
        let need = size - room;
        let may_shed_normal = priority != Priority::Telemetry;
        let available = sheddable_tel + if may_shed_normal { sheddable_norm } else { 0 };
        if available < need {
            plan.admitted.push(false);
            continue;
        }
        let from_tel = need.min(sheddable_tel);
        sheddable_tel -= from_tel;
        plan.shed_telemetry += from_tel;
        let from_norm = need - from_tel;
        sheddable_norm -= from_norm;
        plan.shed_normal += from_norm;
        room = 0;
        plan.admitted.push(true);
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use Priority::*;

    fn space(held: [u64; 3], budget: u64) -> Space {
        Space {
            held_bytes: held.iter().sum(),
            held_by_class: held,
            budget_bytes: budget,
            disk_free: None,
            min_free_bytes: 0,
        }
    }

    #[test]
    fn fits_without_shedding() {
        let p = plan(
            &space([10, 10, 10], 100),
            &[(MustDeliver, 50), (Telemetry, 20)],
        );
        assert_eq!(
            p,
            Plan {
                admitted: vec![true, true],
                shed_telemetry: 0,
                shed_normal: 0
            }
        );
    }

    #[test]
    fn telemetry_is_shed_before_normal_and_must_deliver_never() {
        let p = plan(&space([50, 30, 20], 100), &[(MustDeliver, 30)]);
        assert_eq!(
            p,
            Plan {
                admitted: vec![true],
                shed_telemetry: 20,
                shed_normal: 10
            }
        );
    }

    #[test]
    fn must_deliver_is_refused_when_only_must_deliver_is_held() {
        let p = plan(&space([100, 0, 0], 100), &[(MustDeliver, 1)]);
        assert_eq!(p.admitted, vec![false]);
    }

    #[test]
    fn new_telemetry_only_displaces_old_telemetry() {
        let p = plan(&space([50, 50, 0], 100), &[(Telemetry, 5)]);
        assert_eq!(p.admitted, vec![false]);
        let p = plan(&space([50, 40, 10], 100), &[(Telemetry, 5)]);
        assert_eq!(
            p,
            Plan {
                admitted: vec![true],
                shed_telemetry: 5,
                shed_normal: 0
            }
        );
    }

    #[test]
    fn disk_watermark_limits_room_below_the_budget() {
        let mut s = space([0, 0, 40], 1_000);
        s.disk_free = Some(110);
        s.min_free_bytes = 100;
        assert_eq!(s.room(), 10);
        let p = plan(&s, &[(MustDeliver, 30)]);
        assert_eq!(
            p,
            Plan {
                admitted: vec![true],
                shed_telemetry: 20,
                shed_normal: 0
            }
        );
    }

    #[test]
    fn a_group_shares_the_room() {
        let p = plan(
            &space([0, 0, 10], 30),
            &[(MustDeliver, 15), (MustDeliver, 15), (MustDeliver, 15)],
        );
        assert_eq!(p.admitted, vec![true, true, false]);
        assert_eq!(p.shed_telemetry, 10);
    }
}
