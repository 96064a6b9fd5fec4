//! The demo's warehouse shift and delivery route, as a deterministic list of
//! HTTP requests per order.
//!
//! Each order is picked (one to four lines, sometimes short) on a picker's
//! handheld, packed and weighed, loaded; then the driver's handheld departs,
//! arrives and delivers with proof of delivery, or reports the customer not
//! home or refusing. The same seed gives the same orders, in the same order.
//!
//! Pure: no I/O. The demo posts each [`Step`] to its device's agent.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

/// Which handheld records a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A picker's handheld, by index among the pickers.
    Picker(usize),
    /// The delivery driver's handheld.
    Driver,
}

/// One event to post to an agent's `POST /v1/events`.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// Who posts it.
    pub role: Role,
    /// The event kind (`picked`, …), as the ERP's type will name it.
    pub kind: &'static str,
    /// The request body.
    pub body: Value,
}

/// Items on the demo's pick lists (GTIN-14).
const ITEMS: [&str; 6] = [
    "09506000134352",
    "09506000134369",
    "09506000134376",
    "04012345000016",
    "04012345000023",
    "00012345600012",
];
const VEHICLE: &str = "VAN-7";
const RECEIVERS: [&str; 5] = [
    "J. Smith",
    "A. Müller",
    "K. Tanaka",
    "R. Okafor",
    "L. Rossi",
];

/// Makes orders one after another from a seed.
#[derive(Debug)]
pub struct Scenario {
    rng: StdRng,
    pickers: usize,
    next_order: u64,
}

impl Scenario {
    /// A scenario with `pickers` picker handhelds (at least one).
    pub fn new(seed: u64, pickers: usize) -> Self {
        Self {
            rng: StdRng::seed_from_u64(seed),
            pickers: pickers.max(1),
            next_order: 1001,
        }
    }

    /// The steps of the next order, in business order.
    pub fn next_order(&mut self) -> Vec<Step> {
        let number = self.next_order;
        self.next_order += 1;
        let order = format!("SO-{number}");
        let picker = Role::Picker((number as usize) % self.pickers);
        let refs = |loc: Option<String>| match loc {
            Some(l) => json!({ "order": order, "location": l }),
            None => json!({ "order": order }),
        };
        let mut steps = Vec::new();
        let lines = self.rng.random_range(1..=4);
        let mut pieces = 0u32;
        for _ in 0..lines {
            let item = ITEMS[self.rng.random_range(0..ITEMS.len())];
            let wanted: u32 = self.rng.random_range(1..=12);
            let location = format!(
                "{}-{:02}",
                ["A", "B", "C"][self.rng.random_range(0..3)],
                self.rng.random_range(1..=40)
            );
            let short = self.rng.random_bool(0.05);
            let quantity = if short { wanted / 2 } else { wanted };
            pieces += quantity;
            if quantity > 0 {
                steps.push(Step {
                    role: picker,
                    kind: "picked",
                    body: json!({
                        "priority": "must_deliver",
                        "detail": { "picked": { "item": item, "quantity": quantity,
                                                "lot": format!("L{}", self.rng.random_range(100..999)) } },
                        "refs": refs(Some(location.clone())),
                    }),
                });
            }
            if short {
                steps.push(Step {
                    role: picker,
                    kind: "exception",
                    body: json!({
                        "detail": { "exception": { "kind": "short_pick",
                                    "note": format!("{item}: {quantity} of {wanted} at {location}") } },
                        "refs": refs(Some(location)),
                    }),
                });
            }
        }
        let weight = f64::from(pieces) * 0.35 + 0.4;
        steps.push(Step {
            role: picker,
            kind: "packed",
            body: json!({
                "detail": { "packed": { "quantity": pieces,
                            "weight": { "value": (weight * 100.0).round() / 100.0, "unit": "kg" } } },
                "refs": refs(Some("PACK-1".into())),
            }),
        });
        steps.push(Step {
            role: picker,
            kind: "loaded",
            body: json!({
                "detail": { "loaded": { "vehicle": VEHICLE } },
                "refs": refs(Some("DOCK-3".into())),
            }),
        });
        let stop = json!({ "order": order, "stop": format!("STOP-{number}") });
        for kind in ["departed", "arrived"] {
            steps.push(Step {
                role: Role::Driver,
                kind,
                body: json!({ "detail": { (kind): { "vehicle": VEHICLE } }, "refs": stop }),
            });
        }
        let roll: f64 = self.rng.random();
        let last = if roll < 0.04 {
            Step {
                role: Role::Driver,
                kind: "exception",
                body: json!({
                    "priority": "must_deliver",
                    "detail": { "exception": { "kind": "not_home", "note": "card left" } },
                    "refs": stop,
                }),
            }
        } else if roll < 0.06 {
            Step {
                role: Role::Driver,
                kind: "exception",
                body: json!({
                    "priority": "must_deliver",
                    "detail": { "exception": { "kind": "delivery_refused", "note": "box damaged" } },
                    "refs": stop,
                }),
            }
        } else {
            let by = RECEIVERS[self.rng.random_range(0..RECEIVERS.len())];
            Step {
                role: Role::Driver,
                kind: "delivered",
                body: json!({
                    "priority": "must_deliver",
                    "detail": { "delivered": { "received_by": by, "pieces": pieces,
                                "signature_ref": format!("sig-{number}.png") } },
                    "refs": stop,
                }),
            }
        };
        steps.push(last);
        steps
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_orders() {
        let mut a = Scenario::new(7, 2);
        let mut b = Scenario::new(7, 2);
        for _ in 0..20 {
            assert_eq!(a.next_order(), b.next_order());
        }
    }

    #[test]
    fn every_order_runs_pick_to_delivery_in_business_order() {
        let rank = |k: &str| match k {
            "picked" | "exception" => 0,
            "packed" => 1,
            "loaded" => 2,
            "departed" => 3,
            "arrived" => 4,
            _ => 5,
        };
        let mut s = Scenario::new(1, 2);
        for _ in 0..200 {
            let steps = s.next_order();
            let kinds: Vec<&str> = steps.iter().map(|s| s.kind).collect();
            assert!(
                kinds.contains(&"packed") && kinds.contains(&"arrived"),
                "{kinds:?}"
            );
            let pick_side: Vec<_> = steps
                .iter()
                .take_while(|s| s.role != Role::Driver)
                .collect();
            assert!(pick_side.iter().all(|s| rank(s.kind) <= 2));
            let ranks: Vec<_> = steps
                .iter()
                .filter(|s| s.kind != "exception")
                .map(|s| rank(s.kind))
                .collect();
            assert!(ranks.windows(2).all(|w| w[0] <= w[1]), "{kinds:?}");
            assert!(steps.iter().all(|s| s.body["refs"]["order"].is_string()));
        }
    }
}
