//! The dock door's rules (see the [module docs](super)): a vehicle barcode
//! says what is at the door, each SSCC scanned is `loaded` onto it once.

use std::collections::HashSet;

use dockline_protocol::{BusinessEvent, EventDetail, References};

use super::{Observation, Output};

/// A dock door's state.
#[derive(Debug, Clone)]
pub struct DockDoor {
    location: String,
    vehicle: Option<String>,
    /// SSCCs loaded onto the current vehicle.
    loaded: HashSet<String>,
}

impl DockDoor {
    /// A door at `location`, with the configured vehicle (if any) at it.
    pub fn new(location: String, vehicle: Option<String>) -> Self {
        DockDoor {
            location,
            vehicle,
            loaded: HashSet::new(),
        }
    }

    /// The vehicle at the door, for the status.
    pub fn describe(&self) -> String {
        match &self.vehicle {
            None => "no vehicle: scan the vehicle's barcode".into(),
            Some(v) => format!("loading {v}: {} units", self.loaded.len()),
        }
    }

    /// Applies one observation.
    pub fn observe(&mut self, obs: &Observation) -> Vec<Output> {
        match obs {
            Observation::Document(vehicle) => {
                if self.vehicle.as_ref() != Some(vehicle) {
                    self.vehicle = Some(vehicle.clone());
                    self.loaded.clear();
                }
                vec![]
            }
            Observation::Sscc { sscc, .. } => {
                let Some(vehicle) = &self.vehicle else {
                    return vec![Output::Notice(format!(
                        "SSCC {sscc} scanned with no vehicle at the door; scan the vehicle's barcode first"
                    ))];
                };
                if !self.loaded.insert(sscc.clone()) {
                    return vec![Output::Notice(format!(
                        "SSCC {sscc} is already loaded onto {vehicle}"
                    ))];
                }
                vec![Output::Event(BusinessEvent {
                    detail: EventDetail::Loaded {
                        vehicle: vehicle.clone(),
                    },
                    refs: References {
                        sscc: Some(sscc.clone()),
                        location: Some(self.location.clone()),
                        ..References::default()
                    },
                })]
            }
            Observation::Item { gtin, .. } => vec![Output::Notice(format!(
                "item {gtin} scanned at a dock door; scan the pallet's SSCC label"
            ))],
            Observation::Unusable(why) => vec![Output::Notice(why.clone())],
            Observation::Weight { .. } | Observation::Position(_) => vec![],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sscc(s: &str) -> Observation {
        Observation::Sscc {
            sscc: s.into(),
            count: None,
        }
    }

    fn run(configured: Option<&str>, steps: &[Observation]) -> Vec<String> {
        let mut door = DockDoor::new("door-3".into(), configured.map(str::to_owned));
        steps
            .iter()
            .flat_map(|o| door.observe(o))
            .map(|o| match o {
                Output::Notice(_) => "notice".into(),
                Output::ScaleCommand { .. } => "scale".into(),
                Output::Event(e) => match e.detail {
                    EventDetail::Loaded { vehicle } => {
                        format!("loaded {} {vehicle}", e.refs.sscc.unwrap_or_default())
                    }
                    other => format!("{other:?}"),
                },
            })
            .collect()
    }

    #[test]
    fn dock_rules_table() {
        let doc = |s: &str| Observation::Document(s.into());
        // (what, configured vehicle, observations, outputs)
        type Case<'a> = (&'a str, Option<&'a str>, Vec<Observation>, Vec<&'a str>);
        let cases: Vec<Case> = vec![
            (
                "vehicle scanned, then units",
                None,
                vec![doc("TRUCK-7"), sscc("1"), sscc("2")],
                vec!["loaded 1 TRUCK-7", "loaded 2 TRUCK-7"],
            ),
            (
                "configured vehicle until another is scanned",
                Some("TRAILER-1"),
                vec![sscc("1"), doc("TRUCK-7"), sscc("1")],
                vec!["loaded 1 TRAILER-1", "loaded 1 TRUCK-7"],
            ),
            (
                "the same unit twice is loaded once",
                Some("T"),
                vec![sscc("1"), sscc("1")],
                vec!["loaded 1 T", "notice"],
            ),
            (
                "no vehicle known: notice, no event",
                None,
                vec![sscc("1")],
                vec!["notice"],
            ),
        ];
        for (name, configured, steps, want) in cases {
            assert_eq!(run(configured, &steps), want, "{name}");
        }
    }
}
