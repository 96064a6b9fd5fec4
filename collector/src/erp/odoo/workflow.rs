//! What a dockline event does to an Odoo delivery (`stock.picking`, type
//! outgoing): pure functions of the event and of what was just read.
//!
//! # The mapping (Odoo 17–19; research §1.1)
//!
//! | event | effect in Odoo |
//! |---|---|
//! | `Picked` (item, quantity) | the item's move line gets `quantity` = the sum of every booked pick of that item, and `picked = true` |
//! | `Packed` | a package (`stock.quant.package`, 19: `stock.package`) named by the SSCC is created once, and the picked lines not yet in a package go into it (`result_package_id`) |
//! | `Departed` | `button_validate` (with `validate_on = "departed"`, the default) |
//! | `Delivered` (proof of delivery) | the event is attached (`ir.attachment`), then `button_validate` if the delivery is still open |
//! | `Loaded`, `Arrived`, `Exception` | nothing: a picking has no such state |
//!
//! `validate_on = "packed"` validates at the pack instead; `"delivered"` at
//! the proof of delivery only.
//!
//! # Invariants
//!
//! - **Absolute writes from a ledger.** Every pick event is recorded on the
//!   picking as an attachment (`dockline-pick-<event id>.json`, searched
//!   before it is created), and the line's quantity is then *set* to the sum
//!   over those records: a retry after any lost answer recomputes the same
//!   value, and two picks of one item add up instead of overwriting.
//! - **Already done is success.** A done picking needs nothing (a proof of
//!   delivery still gets its attachment).
//! - **Never the auto-pick hook.** Odoo's `_pre_action_done_hook` marks
//!   *every* move picked when none is, shipping reserved quantities nobody
//!   scanned: the adapter validates only when at least one line is picked
//!   ([`validate_gate`]), otherwise the event waits for its picks.
//! - **Behind is parked, not forced**: a draft or unreserved picking parks
//!   the event; a cancelled one refuses it.

use std::fmt;

use dockline_protocol::EventDetail;

use super::config::ValidateOn;

/// A `stock.picking` state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PickingState {
    /// Being prepared.
    Draft,
    /// Waiting for another operation.
    Waiting,
    /// Confirmed, not (fully) reserved.
    Confirmed,
    /// Ready: stock reserved.
    Assigned,
    /// Validated: the goods left the stock.
    Done,
    /// Cancelled.
    Cancel,
}

impl PickingState {
    /// Parses Odoo's state name.
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "draft" => Self::Draft,
            "waiting" => Self::Waiting,
            "confirmed" => Self::Confirmed,
            "assigned" => Self::Assigned,
            "done" => Self::Done,
            "cancel" => Self::Cancel,
            _ => return None,
        })
    }

    /// Odoo's name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Draft => "draft",
            Self::Waiting => "waiting",
            Self::Confirmed => "confirmed",
            Self::Assigned => "assigned",
            Self::Done => "done",
            Self::Cancel => "cancel",
        }
    }
}

impl fmt::Display for PickingState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What one event does, in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Plan {
    /// Record a pick and set the item's line.
    pub record_pick: bool,
    /// Put the picked lines into a package.
    pub pack: bool,
    /// Attach the proof of delivery.
    pub attach_pod: bool,
    /// Validate the picking.
    pub validate: bool,
}

impl Plan {
    /// True when the event changes nothing in Odoo.
    pub fn is_empty(self) -> bool {
        self == Self::default()
    }
}

/// The plan of a business event.
pub fn plan(detail: &EventDetail, validate_on: ValidateOn) -> Plan {
    match detail {
        EventDetail::Picked { .. } => Plan {
            record_pick: true,
            ..Plan::default()
        },
        EventDetail::Packed { .. } => Plan {
            pack: true,
            validate: validate_on == ValidateOn::Packed,
            ..Plan::default()
        },
        EventDetail::Departed { .. } => Plan {
            validate: validate_on <= ValidateOn::Departed,
            ..Plan::default()
        },
        EventDetail::Delivered(_) => Plan {
            attach_pod: true,
            validate: true,
            ..Plan::default()
        },
        EventDetail::Loaded { .. }
        | EventDetail::Arrived { .. }
        | EventDetail::Exception { .. } => Plan::default(),
    }
}

/// Whether an event may act on the picking as just read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gate {
    /// Go ahead.
    Go,
    /// Nothing left to do: the picking is done (booked as a duplicate).
    AlreadyDone,
    /// Not yet: park the event (why).
    NotReady(String),
    /// Never: dead-letter the event (why).
    Refused(String),
}

/// The gate for `plan` on a picking in `state`.
pub fn gate(plan: Plan, state: PickingState) -> Gate {
    use PickingState::*;
    match state {
        _ if plan.is_empty() => Gate::Go,
        // The proof of delivery is still attached to a done picking.
        Done if plan.attach_pod => Gate::Go,
        Done => Gate::AlreadyDone,
        Cancel => Gate::Refused("the picking is cancelled in Odoo".into()),
        Draft => Gate::NotReady(
            "the picking is still a draft in Odoo; it must be marked as To Do first".into(),
        ),
        Waiting | Confirmed => Gate::NotReady(format!(
            "the picking is {state} in Odoo: its stock is not reserved yet (Check Availability)"
        )),
        Assigned => Gate::Go,
    }
}

/// A `stock.move.line` as read.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    /// Its id.
    pub id: i64,
    /// `product_id`.
    pub product: Option<i64>,
    /// `quantity` (17+: reserved and done merged).
    pub quantity: f64,
    /// `picked`.
    pub picked: bool,
    /// `result_package_id`.
    pub package: Option<i64>,
}

/// Whether the picking may be validated with these lines: at least one
/// picked line with a quantity, so that Odoo's auto-pick hook never ships
/// the reserved quantities of lines nobody scanned.
pub fn validate_gate(picking: &str, lines: &[Line]) -> Result<(), String> {
    if lines.iter().any(|l| l.picked && l.quantity > 0.0) {
        Ok(())
    } else {
        Err(format!(
            "nothing on {picking} is recorded as picked yet; validating now would let Odoo mark every reserved quantity as picked (its auto-pick hook) and ship goods nobody scanned, so the event waits for its picks"
        ))
    }
}

/// A pick recorded on the picking (the ledger's entry, kept in the
/// attachment's description as JSON).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PickRecord {
    /// The item (GTIN, barcode or internal reference).
    pub item: String,
    /// Units picked by this event.
    pub quantity: u32,
}

/// The quantity the item's line must carry: the sum over the ledger.
pub fn picked_total(records: &[PickRecord], item: &str) -> f64 {
    records
        .iter()
        .filter(|r| r.item == item)
        .map(|r| f64::from(r.quantity))
        .sum()
}

/// The line a pick of `products` goes on: the first line (by id) of one of
/// them.
pub fn line_for<'a>(lines: &'a [Line], products: &[i64]) -> Option<&'a Line> {
    lines
        .iter()
        .filter(|l| l.product.is_some_and(|p| products.contains(&p)))
        .min_by_key(|l| l.id)
}

/// Picked lines with a quantity not yet in a package.
pub fn unpacked(lines: &[Line]) -> Vec<i64> {
    lines
        .iter()
        .filter(|l| l.picked && l.quantity > 0.0 && l.package.is_none())
        .map(|l| l.id)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use dockline_protocol::ProofOfDelivery;

    fn line(id: i64, product: i64, quantity: f64, picked: bool) -> Line {
        Line {
            id,
            product: Some(product),
            quantity,
            picked,
            package: None,
        }
    }

    #[test]
    fn plans_per_event_and_validate_on() {
        let depart = EventDetail::Departed {
            vehicle: "v".into(),
            position: None,
        };
        let pack = EventDetail::Packed {
            quantity: 1,
            weight: None,
        };
        let pod = EventDetail::Delivered(ProofOfDelivery {
            received_by: "R".into(),
            pieces: 1,
            signature_ref: None,
            photo_ref: None,
            position: None,
        });
        assert!(plan(&depart, ValidateOn::Departed).validate);
        assert!(
            plan(&depart, ValidateOn::Packed).validate,
            "a later event validates too"
        );
        assert!(!plan(&depart, ValidateOn::Delivered).validate);
        assert_eq!(
            plan(&pack, ValidateOn::Packed),
            Plan {
                pack: true,
                validate: true,
                ..Plan::default()
            }
        );
        assert!(!plan(&pack, ValidateOn::Departed).validate);
        let p = plan(&pod, ValidateOn::Delivered);
        assert!(p.attach_pod && p.validate);
        assert!(
            plan(
                &EventDetail::Loaded {
                    vehicle: "v".into()
                },
                ValidateOn::Packed
            )
            .is_empty()
        );
    }

    #[test]
    fn gates_per_state() {
        let pick = Plan {
            record_pick: true,
            ..Plan::default()
        };
        let pod = Plan {
            attach_pod: true,
            validate: true,
            ..Plan::default()
        };
        assert_eq!(gate(pick, PickingState::Assigned), Gate::Go);
        assert_eq!(gate(pick, PickingState::Done), Gate::AlreadyDone);
        assert_eq!(gate(pod, PickingState::Done), Gate::Go);
        assert!(
            matches!(gate(pick, PickingState::Confirmed), Gate::NotReady(m) if m.contains("reserved"))
        );
        assert!(matches!(gate(pick, PickingState::Draft), Gate::NotReady(_)));
        assert!(matches!(gate(pod, PickingState::Cancel), Gate::Refused(_)));
        assert_eq!(gate(Plan::default(), PickingState::Cancel), Gate::Go);
        for s in [
            "draft",
            "waiting",
            "confirmed",
            "assigned",
            "done",
            "cancel",
        ] {
            assert_eq!(PickingState::parse(s).map(PickingState::name), Some(s));
        }
        assert_eq!(PickingState::parse("packed"), None);
    }

    #[test]
    fn the_auto_pick_hook_is_never_triggered() {
        // Reserved but not picked: Odoo would ship all of it.
        let reserved = [line(1, 10, 5.0, false), line(2, 11, 3.0, false)];
        assert!(validate_gate("WH/OUT/00001", &reserved).is_err());
        let scanned = [line(1, 10, 5.0, true), line(2, 11, 3.0, false)];
        assert!(validate_gate("WH/OUT/00001", &scanned).is_ok());
        assert!(validate_gate("WH/OUT/00001", &[line(1, 10, 0.0, true)]).is_err());
    }

    #[test]
    fn ledger_sums_and_line_choice() {
        let records = [
            PickRecord {
                item: "A".into(),
                quantity: 2,
            },
            PickRecord {
                item: "B".into(),
                quantity: 1,
            },
            PickRecord {
                item: "A".into(),
                quantity: 3,
            },
        ];
        assert_eq!(picked_total(&records, "A"), 5.0);
        assert_eq!(picked_total(&records, "C"), 0.0);
        let lines = [
            line(9, 10, 1.0, false),
            line(4, 10, 1.0, false),
            line(5, 11, 1.0, true),
        ];
        assert_eq!(line_for(&lines, &[10]).map(|l| l.id), Some(4));
        assert_eq!(line_for(&lines, &[12]), None);
        assert_eq!(unpacked(&lines), vec![5]);
    }
}
