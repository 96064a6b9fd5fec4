//! Which `stock.shipment.out` button an event needs next: a pure function of
//! the event's goal and the shipment's state as just read from Tryton.
//!
//! # The mapping (trytond-stock 8.2, `ShipmentOut`)
//!
//! | dockline event | target state | buttons, from the states that allow them |
//! |---|---|---|
//! | `Picked` | `picked` | `waiting` → `assign_try` (then `assign_force` if allowed) → `assigned` → `pick` |
//! | `Packed` | `packed` | `picked` → `pack` |
//! | `Departed` | `shipped` | `packed` → `ship` |
//! | `Delivered` (proof of delivery) | `done` | `packed` or `shipped` → `do` (Tryton's `do` skips `shipped`) |
//! | `Loaded`, `Arrived`, `Exception` | none | nothing to book: the shipment has no such state |
//!
//! A shipment whose warehouse storage and output locations are the same has
//! no picking step in Tryton (`pick` is hidden, `assigned` → `pack`): there a
//! pick's target is `assigned`, and a pack goes from `assigned`.
//!
//! # Invariants
//!
//! - **Already there is success.** A shipment at or past the target state
//!   (in the order draft < waiting < assigned < picked < packed < shipped <
//!   done) needs nothing: that is how a retry after a lost response, or a
//!   second pick of the same order, books once. Never call a button "to be
//!   sure": Tryton's `pick` on a packed shipment moves it *back* to
//!   `picked`, and `wait` on an assigned one drops the reservation, both
//!   without an error.
//! - **Behind is parked, not forced.** A shipment not yet in a state the
//!   button accepts (a pack while it is still `waiting`, a proof of delivery
//!   before the pack) means an earlier event is not booked yet (or the ERP
//!   user has not confirmed the shipment): [`Step::NotReady`], never a
//!   chain of buttons the devices did not report.
//! - A button that left the state where it was is not pressed twice in one
//!   attempt (except `assign_try` → `assign_force`), so a step loop ends.

use std::fmt;

use dockline_protocol::EventDetail;

/// A `stock.shipment.out` state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ShipmentState {
    /// Being prepared in the ERP.
    Draft,
    /// Confirmed, stock not reserved.
    Waiting,
    /// Stock reserved.
    Assigned,
    /// Goods moved to the output location.
    Picked,
    /// Packed.
    Packed,
    /// Left the warehouse (8.x).
    Shipped,
    /// Delivered; stock moves done.
    Done,
    /// Cancelled (outside the forward order).
    Cancelled,
}

impl ShipmentState {
    /// Parses Tryton's state name.
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "draft" => Self::Draft,
            "waiting" => Self::Waiting,
            "assigned" => Self::Assigned,
            "picked" => Self::Picked,
            "packed" => Self::Packed,
            "shipped" => Self::Shipped,
            "done" => Self::Done,
            "cancelled" => Self::Cancelled,
            _ => return None,
        })
    }

    /// Tryton's name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Draft => "draft",
            Self::Waiting => "waiting",
            Self::Assigned => "assigned",
            Self::Picked => "picked",
            Self::Packed => "packed",
            Self::Shipped => "shipped",
            Self::Done => "done",
            Self::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for ShipmentState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A `stock.shipment.out` button (an RPC method of the model).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Button {
    /// Reserve the stock if it is there (`waiting` → `assigned`, or no change).
    AssignTry,
    /// Reserve whatever the stock says (`waiting` → `assigned`).
    AssignForce,
    /// `assigned` → `picked`.
    Pick,
    /// `picked` (or `assigned` without a picking step) → `packed`.
    Pack,
    /// `packed` → `shipped`.
    Ship,
    /// `packed` or `shipped` → `done`.
    Do,
}

impl Button {
    /// The RPC method name.
    pub fn method(self) -> &'static str {
        match self {
            Self::AssignTry => "assign_try",
            Self::AssignForce => "assign_force",
            Self::Pick => "pick",
            Self::Pack => "pack",
            Self::Ship => "ship",
            Self::Do => "do",
        }
    }
}

/// What an event asks of the shipment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Goal {
    /// Reach this state.
    Reach(ShipmentState),
    /// The event has no counterpart in the shipment (the name of the kind).
    Nothing(&'static str),
}

/// The goal of a business event.
pub fn goal(detail: &EventDetail) -> Goal {
    match detail {
        EventDetail::Picked { .. } => Goal::Reach(ShipmentState::Picked),
        EventDetail::Packed { .. } => Goal::Reach(ShipmentState::Packed),
        EventDetail::Departed { .. } => Goal::Reach(ShipmentState::Shipped),
        EventDetail::Delivered(_) => Goal::Reach(ShipmentState::Done),
        EventDetail::Loaded { .. } => Goal::Nothing("loaded"),
        EventDetail::Arrived { .. } => Goal::Nothing("arrived"),
        EventDetail::Exception { .. } => Goal::Nothing("exception"),
    }
}

/// The shipment as just read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shipment {
    /// Its state.
    pub state: ShipmentState,
    /// Storage and output locations are the same: no picking step.
    pub single_step: bool,
}

/// What to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// The shipment is at or past the target: booked.
    Reached,
    /// Press this button, then read the state again.
    Press(Button),
    /// Not yet possible: park the event (the message says why).
    NotReady(String),
    /// Never possible: dead-letter the event (the message says why).
    Refused(String),
}

/// The next step towards `target` for `shipment`, given the buttons already
/// pressed in this attempt.
pub fn next_step(
    target: ShipmentState,
    shipment: Shipment,
    pressed: &[Button],
    assign_force: bool,
) -> Step {
    use ShipmentState::*;
    let state = shipment.state;
    // Without a picking step Tryton never enters `picked`.
    let target = if target == Picked && shipment.single_step {
        Assigned
    } else {
        target
    };
    if state == Cancelled {
        return Step::Refused(format!(
            "the shipment is cancelled in Tryton; it cannot become {target}"
        ));
    }
    if state >= target {
        return Step::Reached;
    }
    let wanted = match (target, state) {
        (Draft | Waiting | Cancelled, _) => return Step::Reached,
        (_, Draft) => {
            return Step::NotReady(format!(
                "the shipment is still a draft in Tryton; it needs to be confirmed (waiting) before it can become {target}"
            ));
        }
        (Assigned | Picked, Waiting) => {
            if !pressed.contains(&Button::AssignTry) {
                Button::AssignTry
            } else if assign_force && !pressed.contains(&Button::AssignForce) {
                Button::AssignForce
            } else {
                return Step::NotReady(
                    "Tryton could not reserve the stock (assign_try left the shipment waiting); book the stock in Tryton, or set erp.tryton.assign_force = true to force the reservation".into(),
                );
            }
        }
        (Picked, Assigned) => Button::Pick,
        (Packed, Picked) => Button::Pack,
        (Packed, Assigned) if shipment.single_step => Button::Pack,
        (Shipped, Packed) => Button::Ship,
        (Done, Packed | Shipped) => Button::Do,
        (_, _) => {
            return Step::NotReady(format!(
                "the shipment is {state} in Tryton; becoming {target} needs an earlier event booked first ({})",
                needs(target, shipment.single_step)
            ));
        }
    };
    if pressed.contains(&wanted) {
        return Step::Refused(format!(
            "Tryton accepted `{}` but the shipment stayed {state}; check the shipment in Tryton",
            wanted.method()
        ));
    }
    Step::Press(wanted)
}

/// The state a target needs first, for messages.
fn needs(target: ShipmentState, single_step: bool) -> &'static str {
    match target {
        ShipmentState::Packed if single_step => "a pick: the shipment must be assigned",
        ShipmentState::Packed => "a pick: the shipment must be picked",
        ShipmentState::Shipped => "a pack: the shipment must be packed",
        ShipmentState::Done => "a pack: the shipment must be packed or shipped",
        _ => "its predecessor",
    }
}

#[cfg(test)]
mod tests {
    use super::ShipmentState::*;
    use super::*;

    fn two_step(state: ShipmentState) -> Shipment {
        Shipment {
            state,
            single_step: false,
        }
    }

    fn press(b: Button) -> Step {
        Step::Press(b)
    }

    #[test]
    fn each_goal_from_each_state() {
        use Button::*;
        let not_ready = |s: &Step| matches!(s, Step::NotReady(_));
        let refused = |s: &Step| matches!(s, Step::Refused(_));
        // (target, state, expected) with nothing pressed yet.
        let table: &[(ShipmentState, ShipmentState, Option<Step>)] = &[
            (Picked, Waiting, Some(press(AssignTry))),
            (Picked, Assigned, Some(press(Pick))),
            (Picked, Picked, Some(Step::Reached)),
            (Picked, Packed, Some(Step::Reached)),
            (Picked, Done, Some(Step::Reached)),
            (Packed, Picked, Some(press(Pack))),
            (Packed, Packed, Some(Step::Reached)),
            (Packed, Shipped, Some(Step::Reached)),
            (Shipped, Packed, Some(press(Ship))),
            (Shipped, Done, Some(Step::Reached)),
            (Done, Packed, Some(press(Do))),
            (Done, Shipped, Some(press(Do))),
            (Done, Done, Some(Step::Reached)),
        ];
        for (target, state, want) in table {
            let got = next_step(*target, two_step(*state), &[], false);
            assert_eq!(Some(&got), want.as_ref(), "{target} from {state}");
        }
        for (target, state) in [
            (Picked, Draft),
            (Packed, Waiting),
            (Packed, Assigned),
            (Shipped, Picked),
            (Done, Picked),
            (Done, Waiting),
        ] {
            let got = next_step(target, two_step(state), &[], false);
            assert!(not_ready(&got), "{target} from {state}: {got:?}");
        }
        for target in [Picked, Packed, Shipped, Done] {
            let got = next_step(target, two_step(Cancelled), &[], false);
            assert!(refused(&got), "{target} from cancelled: {got:?}");
        }
    }

    #[test]
    fn assign_try_then_force_only_when_allowed() {
        let waiting = two_step(Waiting);
        let tried = [Button::AssignTry];
        assert!(matches!(
            next_step(Picked, waiting, &tried, false),
            Step::NotReady(m) if m.contains("assign_force")
        ));
        assert_eq!(
            next_step(Picked, waiting, &tried, true),
            Step::Press(Button::AssignForce)
        );
        assert!(matches!(
            next_step(
                Picked,
                waiting,
                &[Button::AssignTry, Button::AssignForce],
                true
            ),
            Step::NotReady(_)
        ));
    }

    #[test]
    fn without_a_picking_step_a_pick_ends_at_assigned() {
        let single = |state| Shipment {
            state,
            single_step: true,
        };
        assert_eq!(
            next_step(Picked, single(Assigned), &[], false),
            Step::Reached
        );
        assert_eq!(
            next_step(Picked, single(Waiting), &[], false),
            Step::Press(Button::AssignTry)
        );
        assert_eq!(
            next_step(Packed, single(Assigned), &[], false),
            Step::Press(Button::Pack)
        );
    }

    #[test]
    fn a_button_that_changed_nothing_is_not_pressed_again() {
        assert!(matches!(
            next_step(Packed, two_step(Picked), &[Button::Pack], false),
            Step::Refused(m) if m.contains("`pack`")
        ));
    }

    #[test]
    fn goals_of_events() {
        assert_eq!(
            goal(&EventDetail::Loaded {
                vehicle: "v".into()
            }),
            Goal::Nothing("loaded")
        );
        assert_eq!(
            goal(&EventDetail::Packed {
                quantity: 1,
                weight: None
            }),
            Goal::Reach(Packed)
        );
        for s in [
            Draft, Waiting, Assigned, Picked, Packed, Shipped, Done, Cancelled,
        ] {
            assert_eq!(ShipmentState::parse(s.name()), Some(s));
        }
        assert_eq!(ShipmentState::parse("request"), None);
    }
}
