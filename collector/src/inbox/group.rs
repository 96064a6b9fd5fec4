//! Pure: how a backend that runs a group's ops as a few set-wise statements
//! orders them (see [`super::InboxStore::run_group`]).
//!
//! A group runs in phases: every verdict first (of [`GroupOp::Verdict`] and
//! [`GroupOp::VerdictThenNext`]), then every claim renewal, then every lane
//! look (of [`GroupOp::NextInLane`] and [`GroupOp::VerdictThenNext`]), so
//! a look sees its own lane's verdict, as if the ops ran one by one.
//!
//! Invariants: an event's verdict is applied once per group, by the first
//! op that names it (a later one answers "not recorded", as it would alone,
//! after the first); phases are only used when no lane is looked at or
//! held twice in the group (one lane has one op in flight, so this is the
//! normal case); otherwise the group runs its ops one by one.

use super::GroupOp;

/// The phases of a group: indices into its ops, in order.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Phases {
    /// Ops whose verdict is applied (the first per event).
    pub(crate) verdicts: Vec<usize>,
    /// Ops whose verdict names an event an earlier op of the group decided.
    pub(crate) repeated_verdicts: Vec<usize>,
    /// Claim renewals.
    pub(crate) holds: Vec<usize>,
    /// Lane looks.
    pub(crate) looks: Vec<usize>,
}

/// The phases of `ops`, or `None` when a lane appears twice among the
/// looks and holds (then the group runs one op at a time).
pub(crate) fn phases(ops: &[GroupOp]) -> Option<Phases> {
    let mut p = Phases::default();
    let mut events: std::collections::HashSet<(&str, u64, u64)> = Default::default();
    let mut lanes: std::collections::HashSet<&str> = Default::default();
    for (i, op) in ops.iter().enumerate() {
        let (verdict, lane) = match op {
            GroupOp::Verdict {
                device, epoch, seq, ..
            } => (Some((device.as_str(), *epoch, *seq)), None),
            GroupOp::HoldLane { lane, .. } => {
                p.holds.push(i);
                (None, Some(lane.as_str()))
            }
            GroupOp::NextInLane { lane, .. } => {
                p.looks.push(i);
                (None, Some(lane.as_str()))
            }
            GroupOp::VerdictThenNext {
                device,
                epoch,
                seq,
                lane,
                ..
            } => {
                p.looks.push(i);
                (Some((device.as_str(), *epoch, *seq)), Some(lane.as_str()))
            }
        };
        if let Some(event) = verdict {
            if events.insert(event) {
                p.verdicts.push(i);
            } else {
                p.repeated_verdicts.push(i);
            }
        }
        if let Some(lane) = lane
            && !lanes.insert(lane)
        {
            return None;
        }
    }
    Some(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use dockline_protocol::{DeviceId, Outcome};

    fn verdict(seq: u64) -> GroupOp {
        GroupOp::Verdict {
            device: DeviceId::new("hh-01").expect("id"),
            epoch: 1,
            seq,
            outcome: Outcome::Booked {
                document: format!("D-{seq}"),
            },
            now_ms: 1,
        }
    }

    fn then_next(seq: u64, lane: &str) -> GroupOp {
        GroupOp::VerdictThenNext {
            device: DeviceId::new("hh-02").expect("id"),
            epoch: 1,
            seq,
            outcome: Outcome::Booked {
                document: format!("D-{seq}"),
            },
            lane: lane.into(),
            now_ms: 1,
            park_max_ms: 10,
        }
    }

    fn look(lane: &str) -> GroupOp {
        GroupOp::NextInLane {
            lane: lane.into(),
            now_ms: 1,
            park_max_ms: 10,
        }
    }

    #[test]
    fn verdicts_come_first_once_per_event_then_holds_then_looks() {
        let ops = [
            look("order:A"),
            verdict(1),
            then_next(5, "order:B"),
            verdict(1),
            GroupOp::HoldLane {
                lane: "order:C".into(),
                now_ms: 1,
            },
        ];
        assert_eq!(
            phases(&ops),
            Some(Phases {
                verdicts: vec![1, 2],
                repeated_verdicts: vec![3],
                holds: vec![4],
                looks: vec![0, 2],
            })
        );
    }

    #[test]
    fn a_lane_looked_at_twice_runs_the_group_one_op_at_a_time() {
        assert_eq!(phases(&[look("order:A"), then_next(2, "order:A")]), None);
    }
}
