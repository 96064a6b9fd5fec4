//! The pack station's rules (see the [module docs](super)): an SSCC scan
//! opens a package, a stable weight closes it as `packed`.

use dockline_protocol::{
    BusinessEvent, EventDetail, ExceptionKind, References, Weight, WeightUnit,
};

use super::{Observation, Output, Tolerance, exception};

/// A pack station's state.
#[derive(Debug, Clone)]
pub struct PackStation {
    location: String,
    tolerance: Tolerance,
    /// The order of the packages being packed (last document scanned).
    order: Option<String>,
    package: Option<Package>,
    last_stable_kg: Option<f64>,
}

#[derive(Debug, Clone)]
struct Package {
    sscc: String,
    label_count: Option<u32>,
    items: u32,
    /// The stable weight when the SSCC was scanned.
    baseline_kg: f64,
}

impl PackStation {
    /// A station at `location`.
    pub fn new(location: String, tolerance: Tolerance) -> Self {
        PackStation {
            location,
            tolerance,
            order: None,
            package: None,
            last_stable_kg: None,
        }
    }

    /// The last stable weight its scale reported, kg.
    pub fn last_stable_kg(&self) -> Option<f64> {
        self.last_stable_kg
    }

    /// The package in hand, for the status.
    pub fn describe(&self) -> String {
        match &self.package {
            None => "idle: scan a package's SSCC".into(),
            Some(p) => format!(
                "package {} ({} items) waits for its weight",
                p.sscc, p.items
            ),
        }
    }

    fn refs(&self, sscc: &str) -> References {
        References {
            order: self.order.clone(),
            sscc: Some(sscc.to_owned()),
            location: Some(self.location.clone()),
            ..References::default()
        }
    }

    /// Applies one observation.
    pub fn observe(&mut self, obs: &Observation) -> Vec<Output> {
        let mut out = Vec::new();
        match obs {
            Observation::Document(text) => self.order = Some(text.clone()),
            Observation::Sscc { sscc, count } => {
                if self.package.as_ref().is_some_and(|p| &p.sscc == sscc) {
                    return out; // the same label scanned again
                }
                if let Some(old) = self.package.take() {
                    out.push(exception(
                        ExceptionKind::Other,
                        format!(
                            "package {} was not weighed before package {sscc} was scanned; scan it again and weigh it",
                            old.sscc
                        ),
                        self.refs(&old.sscc),
                    ));
                }
                self.package = Some(Package {
                    sscc: sscc.clone(),
                    label_count: *count,
                    items: 0,
                    baseline_kg: self.last_stable_kg.unwrap_or(0.0),
                });
            }
            Observation::Item { gtin, count, .. } => match self.package.as_mut() {
                Some(p) => p.items = p.items.saturating_add(*count),
                None => out.push(Output::Notice(format!(
                    "item {gtin} scanned with no package open; scan the package's SSCC first"
                ))),
            },
            Observation::Weight { kg, stable: true } => {
                let kg = *kg;
                self.last_stable_kg = Some(kg);
                let threshold = self.tolerance.kg;
                let placed = self
                    .package
                    .as_ref()
                    .is_some_and(|p| kg > threshold && (kg - p.baseline_kg).abs() > threshold);
                if placed && let Some(p) = self.package.take() {
                    let quantity = if p.items > 0 {
                        p.items
                    } else {
                        p.label_count.unwrap_or(1)
                    };
                    out.push(Output::Event(BusinessEvent {
                        detail: EventDetail::Packed {
                            quantity,
                            weight: Some(Weight {
                                value: (kg * 1000.0).round() / 1000.0,
                                unit: WeightUnit::Kg,
                            }),
                        },
                        refs: self.refs(&p.sscc),
                    }));
                }
            }
            Observation::Unusable(why) => out.push(Output::Notice(why.clone())),
            Observation::Weight { stable: false, .. } | Observation::Position(_) => {}
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S1: &str = "106141412345678908";
    const S2: &str = "006141411234567890";

    fn sscc(s: &str, count: Option<u32>) -> Observation {
        Observation::Sscc {
            sscc: s.into(),
            count,
        }
    }
    fn item() -> Observation {
        Observation::Item {
            gtin: "09521234543213".into(),
            lot: None,
            count: 1,
        }
    }
    fn stable(kg: f64) -> Observation {
        Observation::Weight { kg, stable: true }
    }

    fn run(steps: &[Observation]) -> Vec<String> {
        let mut station = PackStation::new(
            "pack-1".into(),
            Tolerance {
                kg: 0.02,
                percent: 0.0,
            },
        );
        let mut seen = Vec::new();
        for obs in steps {
            for o in station.observe(obs) {
                seen.push(match o {
                    Output::Notice(_) => "notice".into(),
                    Output::ScaleCommand { .. } => "scale".into(),
                    Output::Event(e) => match e.detail {
                        EventDetail::Packed { quantity, weight } => format!(
                            "packed {} {quantity} {:?} {}",
                            e.refs.sscc.unwrap_or_default(),
                            weight.map(|w| w.value),
                            e.refs.order.unwrap_or_default()
                        ),
                        other => format!("{other:?}"),
                    },
                });
            }
        }
        seen
    }

    #[test]
    fn pack_rules_table() {
        let packed = |s: &str, q: u32, kg: f64, order: &str| {
            format!("packed {s} {q} {:?} {order}", Some(kg))
        };
        // (what, observations, outputs)
        type Case<'a> = (&'a str, Vec<Observation>, Vec<String>);
        let cases: Vec<Case> = vec![
            (
                "SSCC, two items, stable weight",
                vec![
                    Observation::Document("SO-1".into()),
                    stable(0.0),
                    sscc(S1, None),
                    item(),
                    item(),
                    Observation::Weight {
                        kg: 2.0,
                        stable: false,
                    },
                    stable(2.5),
                ],
                vec![packed(S1, 2, 2.5, "SO-1")],
            ),
            (
                "the label's AI 37 when no item is scanned",
                vec![sscc(S1, Some(24)), stable(12.0)],
                vec![packed(S1, 24, 12.0, "")],
            ),
            (
                "the old package still on the scale is not the new one's weight",
                vec![
                    sscc(S1, None),
                    stable(3.0),
                    sscc(S2, None),
                    stable(3.0),
                    stable(0.0),
                    stable(4.0),
                ],
                vec![packed(S1, 1, 3.0, ""), packed(S2, 1, 4.0, "")],
            ),
            (
                "a new SSCC before weighing is an exception for the old one",
                vec![sscc(S1, None), sscc(S1, None), sscc(S2, None), stable(1.0)],
                vec![
                    "Exception { kind: Other, note: \"package 106141412345678908 was not weighed before package 006141411234567890 was scanned; scan it again and weigh it\" }".into(),
                    packed(S2, 1, 1.0, ""),
                ],
            ),
            (
                "items without a package are notices",
                vec![item(), stable(1.0)],
                vec!["notice".into()],
            ),
        ];
        for (name, steps, want) in cases {
            assert_eq!(run(&steps), want, "{name}");
        }
    }
}
