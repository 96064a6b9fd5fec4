//! The invariant checker: compares what the agents accepted with what the
//! mock ERP booked, for the demo and the chaos trials.
//!
//! # What is checked
//!
//! - **lost**: an event an agent answered 201 has no effect at the ERP.
//! - **duplicated**: effects beyond the first for one event. An effect is one
//!   event's when its CloudEvents id (or failing that its idempotency key) is
//!   that event's id, *or* when it names the same device, epoch and sequence:
//!   the ERP books once per idempotency key, so a second effect can only come
//!   from the same event sent under another id, and the sequence catches that.
//! - **out of lane order**: the collector delivers in business lanes (the
//!   order, else the shipment, else the stop, else the device: see
//!   [`business_lane`]) and keeps each device's events of one lane in
//!   `(epoch, seq)` order, so within one device and lane the ERP's booking
//!   order must follow the sequence. Each effect booked after one with a
//!   later sequence of the same device and lane counts once.
//! - **order inversions**: within one order (or shipment) lane, an effect
//!   booked after one of a later business step (pick → pack → load →
//!   depart → arrive → deliver). The collector parks an event until its
//!   lane's previous step is booked, for at most its `lane_park_max_ms`, so
//!   an inversion means that wait ran out (or a bug). Stop and device lanes
//!   have no fixed chain (a stop is arrived at, then departed from) and are
//!   not counted.
//! - **unexpected**: effects that match no accepted event (for instance an
//!   event stored by an agent whose 201 never reached the producer).
//!
//! # Latency
//!
//! Each booked event's first effect gives one made-to-booked sample per
//! source ([`Tally::latency`]): `booked_ms` of the effect minus the event's
//! `made_ms` (see [`latency`](crate::latency) for where both are read).
//! Expected events whose triggering bytes are unknown give none.
//!
//! Pure: no I/O.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use serde_json::Value;

use crate::latency::{self, Latency};
use crate::mock_erp::Effect;

/// Generated and booked counts of one event kind.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct KindCount {
    /// Accepted by an agent (201).
    pub generated: u64,
    /// Booked at the ERP.
    pub booked: u64,
}

/// One event an agent accepted, from its 201 answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generated {
    /// The event id from the 201.
    pub event_id: String,
    /// Its kind (`picked`, …).
    pub kind: String,
    /// The device that accepted it.
    pub device: String,
    /// The device's epoch from the 201.
    pub epoch: u64,
    /// The device's sequence number from the 201.
    pub seq: u64,
    /// What made it: the HTTP orders or a scenario's name (report label).
    pub source: String,
    /// When it was made: just before its POST, Unix milliseconds.
    pub made_ms: u64,
}

/// What identifies a business event made by station rules, whose event id
/// nobody outside the agent knows: its kind, references and key fields, as
/// the ERP's effect data carries them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Signature {
    /// `picked`, `packed`, `loaded`, `departed`, `arrived`, `exception`, …
    pub kind: String,
    /// `refs.order`.
    pub order: Option<String>,
    /// `refs.sscc`.
    pub sscc: Option<String>,
    /// `refs.stop`.
    pub stop: Option<String>,
    /// `refs.location`.
    pub location: Option<String>,
    /// `item` (picked).
    pub item: Option<String>,
    /// `quantity` (picked, packed).
    pub quantity: Option<u64>,
    /// `exception` (the exception's kind).
    pub exception: Option<String>,
}

impl Signature {
    /// The signature of an effect's CloudEvents `data`.
    pub fn of_effect_data(data: &Value) -> Signature {
        let text = |v: &Value| v.as_str().map(str::to_owned);
        let refs = &data["refs"];
        Signature {
            kind: data["kind"].as_str().unwrap_or_default().to_owned(),
            order: text(&refs["order"]),
            sscc: text(&refs["sscc"]),
            stop: text(&refs["stop"]),
            location: text(&refs["location"]),
            item: text(&data["item"]),
            quantity: data["quantity"].as_u64(),
            exception: text(&data["exception"]),
        }
    }

    /// A signature of `kind` with nothing else set.
    pub fn kind(kind: &str) -> Signature {
        Signature {
            kind: kind.into(),
            ..Signature::default()
        }
    }
}

/// A business event that device bytes must produce at an agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Expected {
    /// The scenario that made it (report label).
    pub source: String,
    /// The agent (device id) whose station rules make it.
    pub device: String,
    /// What it must look like at the ERP.
    pub what: Signature,
    /// The timeline chunk whose device bytes make it, when known
    /// ([`scenario::trigger`](crate::scenario::trigger)).
    pub trigger: Option<usize>,
    /// When those bytes were written, Unix milliseconds, once played.
    pub made_ms: Option<u64>,
}

impl Expected {
    /// An expected event of `device`, its trigger not yet known.
    pub fn new(source: impl Into<String>, device: impl Into<String>, what: Signature) -> Self {
        Self {
            source: source.into(),
            device: device.into(),
            what,
            trigger: None,
            made_ms: None,
        }
    }
}

/// What the ERP's effects say about the generated events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    /// Generated events with at least one effect.
    pub booked: u64,
    /// Generated events with none.
    pub lost: u64,
    /// Effects beyond one per event.
    pub duplicated: u64,
    /// Effects for no generated event.
    pub unexpected: u64,
    /// Effects booked after a later sequence of the same device in the same
    /// business lane.
    pub out_of_lane_order: u64,
    /// Effects booked after a later business step of the same order (or
    /// shipment) lane.
    pub order_inversions: u64,
    /// Per kind.
    pub by_kind: BTreeMap<String, KindCount>,
    /// Per source (HTTP orders, each scenario), then per kind.
    pub by_source: BTreeMap<String, BTreeMap<String, KindCount>>,
    /// Per source, each booked event's made-to-booked time in milliseconds
    /// (from its first effect), in booking order.
    pub latency_ms: BTreeMap<String, Vec<u64>>,
}

/// A lane position: device, epoch, sequence.
type LanePos = (String, u64, u64);

/// The device, epoch and sequence an effect names, from its CloudEvents
/// extensions, or failing that from the generated event it belongs to.
fn lane_pos(effect: &Effect, event: Option<&Generated>) -> Option<LanePos> {
    match (&effect.device, effect.epoch, effect.seq) {
        (Some(d), Some(e), Some(s)) => Some((d.clone(), e, s)),
        _ => event.map(|g| (g.device.clone(), g.epoch, g.seq)),
    }
}

/// The business lane of an effect, as the collector keys it: `order:…`,
/// `shipment:…`, `stop:…` from the event's references (in that
/// precedence), else `device:…`. Effects without `data.refs` fall back to
/// the CloudEvents subject, taken as an order.
pub fn business_lane(effect: &Effect, device: Option<&str>) -> String {
    let refs = &effect.data["refs"];
    for name in ["order", "shipment", "stop"] {
        if let Some(v) = refs[name].as_str() {
            return format!("{name}:{v}");
        }
    }
    match (&effect.subject, refs.is_object()) {
        (Some(s), false) => format!("order:{s}"),
        _ => format!("device:{}", device.unwrap_or("")),
    }
}

/// Rank of a business step within an order; `None` for kinds without a
/// fixed place (exceptions happen at any step).
pub fn business_rank(kind: &str) -> Option<u8> {
    let kind = kind.strip_prefix("io.dockline.").unwrap_or(kind);
    match kind {
        "picked" => Some(0),
        "packed" => Some(1),
        "loaded" => Some(2),
        "departed" => Some(3),
        "arrived" => Some(4),
        "delivered" => Some(5),
        _ => None,
    }
}

/// Matches effects (in booking order) to generated events and checks the
/// invariants listed in the module doc.
pub fn tally(generated: &[Generated], effects: &[Effect]) -> Tally {
    tally_with(generated, &[], effects)
}

/// [`tally`], with events that device bytes must produce: an effect no
/// generated event claims is matched to an expected one of its device with
/// the same [`Signature`], each expected event taking one effect. A second
/// effect at the same device position is a duplicate, never a second match.
pub fn tally_with(generated: &[Generated], expected: &[Expected], effects: &[Effect]) -> Tally {
    let by_id: HashMap<&str, usize> = generated
        .iter()
        .enumerate()
        .map(|(i, g)| (g.event_id.as_str(), i))
        .collect();
    let by_pos: HashMap<LanePos, usize> = generated
        .iter()
        .enumerate()
        .map(|(i, g)| ((g.device.clone(), g.epoch, g.seq), i))
        .collect();
    let mut t = Tally::default();
    // Effects per generated event, and per lane position for the others.
    let mut hits = vec![0u64; generated.len()];
    let mut stray: HashMap<LanePos, bool> = HashMap::new();
    let mut lane_max: HashMap<(String, String), (u64, u64)> = HashMap::new();
    let mut order_max: HashMap<String, u8> = HashMap::new();
    let mut expected_hit = vec![false; expected.len()];
    for e in effects {
        let index = by_id
            .get(e.id.as_str())
            .or_else(|| by_id.get(e.key.as_str()))
            .copied();
        let pos = lane_pos(e, index.map(|i| &generated[i]));
        let index = index.or_else(|| pos.as_ref().and_then(|p| by_pos.get(p).copied()));
        match index {
            Some(i) => {
                if hits[i] == 0 {
                    t.sample(&generated[i].source, generated[i].made_ms, e.booked_ms);
                }
                hits[i] += 1;
            }
            None => {
                // The first effect at a device position claims an expected
                // event if one fits; later ones there are duplicates, and
                // unexpected too when the first was.
                let first = pos.as_ref().and_then(|p| stray.get(p).copied());
                match first {
                    Some(claimed) => {
                        t.duplicated += 1;
                        t.unexpected += u64::from(!claimed);
                    }
                    None => {
                        let claimed = claim_expected(e, expected, &expected_hit);
                        match claimed {
                            Some(j) => {
                                expected_hit[j] = true;
                                if let Some(made_ms) = expected[j].made_ms {
                                    t.sample(&expected[j].source, made_ms, e.booked_ms);
                                }
                            }
                            None => t.unexpected += 1,
                        }
                        if let Some(p) = &pos {
                            stray.insert(p.clone(), claimed.is_some());
                        }
                    }
                }
            }
        }
        let lane = business_lane(e, pos.as_ref().map(|p| p.0.as_str()));
        if let Some((device, epoch, seq)) = pos {
            let max = lane_max
                .entry((device, lane.clone()))
                .or_insert((epoch, seq));
            if (epoch, seq) < *max {
                t.out_of_lane_order += 1;
            } else {
                *max = (epoch, seq);
            }
        }
        let chained = lane.starts_with("order:") || lane.starts_with("shipment:");
        if let (true, Some(rank)) = (chained, business_rank(&e.kind)) {
            let max = order_max.entry(lane).or_insert(rank);
            if rank < *max {
                t.order_inversions += 1;
            } else {
                *max = rank;
            }
        }
    }
    for (g, &n) in generated.iter().zip(&hits) {
        t.count(&g.source, &g.kind, n > 0);
        t.duplicated += n.saturating_sub(1);
    }
    for (x, &hit) in expected.iter().zip(&expected_hit) {
        t.count(&x.source, &x.what.kind, hit);
    }
    t
}

impl Tally {
    /// Made-to-booked percentiles per source (sources with no sample left out).
    pub fn latency(&self) -> BTreeMap<String, Latency> {
        self.latency_ms
            .iter()
            .filter_map(|(source, samples)| Some((source.clone(), Latency::of(samples)?)))
            .collect()
    }

    /// Records one event's first booking.
    fn sample(&mut self, source: &str, made_ms: u64, booked_ms: u64) {
        self.latency_ms
            .entry(source.to_owned())
            .or_default()
            .push(latency::sample(made_ms, booked_ms));
    }

    /// Counts one generated or expected event, booked or not.
    fn count(&mut self, source: &str, kind: &str, booked: bool) {
        let per_source = self.by_source.entry(source.to_owned()).or_default();
        for k in [
            self.by_kind.entry(kind.to_owned()).or_default(),
            per_source.entry(kind.to_owned()).or_default(),
        ] {
            k.generated += 1;
            k.booked += u64::from(booked);
        }
        if booked {
            self.booked += 1;
        } else {
            self.lost += 1;
        }
    }
}

/// The first unclaimed expected event of the effect's device whose
/// signature the effect has.
fn claim_expected(effect: &Effect, expected: &[Expected], hit: &[bool]) -> Option<usize> {
    if expected.is_empty() {
        return None;
    }
    let device = effect.device.as_deref()?;
    let signature = Signature::of_effect_data(&effect.data);
    expected
        .iter()
        .zip(hit.iter())
        .position(|(x, taken)| !*taken && x.device == device && x.what == signature)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn effect(index: usize, id: &str, key: &str, kind: &str) -> Effect {
        Effect {
            index,
            document: format!("DOC-{index}"),
            key: key.into(),
            id: id.into(),
            kind: format!("io.dockline.{kind}"),
            source: "/dockline/dc-north/hh-01".into(),
            subject: None,
            device: None,
            epoch: None,
            seq: None,
            data: Value::Null,
            booked_ms: 0,
        }
    }

    fn at(mut e: Effect, device: &str, seq: u64, order: &str) -> Effect {
        e.device = Some(device.into());
        e.epoch = Some(1);
        e.seq = Some(seq);
        e.subject = Some(order.into());
        e
    }

    fn made(id: &str, kind: &str) -> Generated {
        made_at(id, kind, "hh-01", 0)
    }

    fn made_at(id: &str, kind: &str, device: &str, seq: u64) -> Generated {
        Generated {
            event_id: id.into(),
            kind: kind.into(),
            device: device.into(),
            epoch: 1,
            seq,
            source: "orders".into(),
            made_ms: 0,
        }
    }

    #[test]
    fn tally_finds_lost_duplicated_and_unexpected() {
        let generated = [
            made_at("a", "picked", "hh-01", 1),
            made_at("b", "packed", "hh-01", 2),
            made_at("c", "picked", "hh-01", 3),
        ];
        let effects = [
            effect(0, "a", "a", "picked"),
            // Same event under another idempotency key: a duplicate effect.
            effect(1, "a", "a-retry", "picked"),
            effect(2, "b", "b", "packed"),
            effect(3, "zzz", "zzz", "picked"),
        ];
        let t = tally(&generated, &effects);
        assert_eq!((t.booked, t.lost, t.duplicated, t.unexpected), (2, 1, 1, 1));
        assert_eq!(t.out_of_lane_order, 0);
        assert_eq!(
            t.by_kind.get("picked"),
            Some(&KindCount {
                generated: 2,
                booked: 1
            })
        );
    }

    #[test]
    fn tally_matches_by_key_when_the_id_differs() {
        let t = tally(&[made("a", "picked")], &[effect(0, "other", "a", "picked")]);
        assert_eq!((t.booked, t.lost, t.unexpected), (1, 0, 0));
    }

    #[test]
    fn same_sequence_under_a_new_id_is_a_duplicate() {
        let generated = [made_at("a", "picked", "hh-01", 7)];
        let effects = [
            at(effect(0, "a", "a", "picked"), "hh-01", 7, "SO-1"),
            at(effect(1, "b", "b", "picked"), "hh-01", 7, "SO-1"),
        ];
        let t = tally(&generated, &effects);
        assert_eq!((t.booked, t.lost, t.duplicated, t.unexpected), (1, 0, 1, 0));
    }

    #[test]
    fn stray_effects_twice_at_one_sequence_are_a_duplicate() {
        let effects = [
            at(effect(0, "x", "x", "picked"), "hh-01", 3, "SO-1"),
            at(effect(1, "y", "y", "picked"), "hh-01", 3, "SO-1"),
        ];
        let t = tally(&[], &effects);
        assert_eq!((t.unexpected, t.duplicated), (2, 1));
    }

    #[test]
    fn lane_order_is_per_device_and_business_order_per_order() {
        let generated = [
            made_at("p1", "picked", "hh-01", 1),
            made_at("k1", "packed", "hh-01", 2),
            made_at("d1", "departed", "van-01", 1),
            made_at("a1", "arrived", "van-01", 2),
        ];
        let effects = [
            at(effect(0, "d1", "d1", "departed"), "van-01", 1, "SO-1"),
            // hh-01 seq 2 before seq 1: a lane violation, and an inversion.
            at(effect(1, "k1", "k1", "packed"), "hh-01", 2, "SO-1"),
            at(effect(2, "p1", "p1", "picked"), "hh-01", 1, "SO-1"),
            at(effect(3, "a1", "a1", "arrived"), "van-01", 2, "SO-1"),
        ];
        let t = tally(&generated, &effects);
        assert_eq!((t.booked, t.lost, t.duplicated), (4, 0, 0));
        assert_eq!(t.out_of_lane_order, 1);
        // packed and picked both after departed.
        assert_eq!(t.order_inversions, 2);
    }

    #[test]
    fn lanes_are_business_documents_and_stops_have_no_chain() {
        let with_refs = |mut e: Effect, refs: Value| {
            e.data = serde_json::json!({ "refs": refs });
            e
        };
        let effects = [
            // hh-01's two orders are two lanes: seq 2 before seq 1 is fine.
            with_refs(
                at(effect(0, "x2", "x2", "picked"), "hh-01", 2, "SO-2"),
                serde_json::json!({"order": "SO-2"}),
            ),
            with_refs(
                at(effect(1, "x1", "x1", "picked"), "hh-01", 1, "SO-1"),
                serde_json::json!({"order": "SO-1"}),
            ),
            // A stop is arrived at, then departed from: not an inversion.
            with_refs(
                at(effect(2, "s1", "s1", "arrived"), "van-01", 1, "ST-1"),
                serde_json::json!({"stop": "ST-1"}),
            ),
            with_refs(
                at(effect(3, "s2", "s2", "departed"), "van-01", 2, "ST-1"),
                serde_json::json!({"stop": "ST-1"}),
            ),
            // The order's POD before its load: an inversion.
            with_refs(
                at(effect(4, "p", "p", "delivered"), "van-01", 3, "SO-1"),
                serde_json::json!({"order": "SO-1", "stop": "ST-1"}),
            ),
            with_refs(
                at(effect(5, "l", "l", "loaded"), "hh-01", 3, "SO-1"),
                serde_json::json!({"order": "SO-1"}),
            ),
        ];
        assert_eq!(business_lane(&effects[3], Some("van-01")), "stop:ST-1");
        assert_eq!(business_lane(&effects[4], Some("van-01")), "order:SO-1");
        let t = tally(&[], &effects);
        assert_eq!((t.out_of_lane_order, t.order_inversions), (0, 1));
    }

    #[test]
    fn expected_events_match_by_device_and_signature_once_each() {
        let data = |order: &str| {
            serde_json::json!({"kind": "picked", "item": "09506000134352", "quantity": 2,
                               "refs": {"order": order, "location": "pick-1"}, "lot": "L1"})
        };
        let with_data = |mut e: Effect, d: Value| {
            e.data = d;
            e
        };
        let expect = |order: &str| Expected {
            source: "shift".into(),
            device: "gw-01".into(),
            what: Signature::of_effect_data(&data(order)),
            trigger: None,
            made_ms: None,
        };
        let expected = [expect("SO-1"), expect("SO-2"), expect("SO-3")];
        let effects = [
            at(
                with_data(effect(0, "x", "x", "picked"), data("SO-1")),
                "gw-01",
                4,
                "SO-1",
            ),
            // The same device event again under another id: a duplicate.
            at(
                with_data(effect(1, "y", "y", "picked"), data("SO-1")),
                "gw-01",
                4,
                "SO-1",
            ),
            at(
                with_data(effect(2, "z", "z", "picked"), data("SO-2")),
                "gw-01",
                9,
                "SO-2",
            ),
            // Right signature, wrong device: unexpected.
            at(
                with_data(effect(3, "w", "w", "picked"), data("SO-3")),
                "gw-02",
                1,
                "SO-3",
            ),
        ];
        let t = tally_with(&[], &expected, &effects);
        assert_eq!((t.booked, t.lost, t.duplicated, t.unexpected), (2, 1, 1, 1));
        assert_eq!(
            t.by_source["shift"]["picked"],
            KindCount {
                generated: 3,
                booked: 2
            }
        );
    }

    #[test]
    fn latency_is_taken_from_each_event_s_first_effect() {
        let mut a = made_at("a", "picked", "hh-01", 1);
        a.made_ms = 1_000;
        let mut b = made_at("b", "packed", "hh-01", 2);
        b.made_ms = 1_100;
        let booked = |mut e: Effect, ms: u64| {
            e.booked_ms = ms;
            e
        };
        let data = serde_json::json!({"kind": "loaded", "refs": {"sscc": "1"}});
        let mut station_made = effect(3, "x", "x", "loaded");
        station_made.data = data.clone();
        station_made.device = Some("gw-01".into());
        let expected = [Expected {
            source: "shift".into(),
            device: "gw-01".into(),
            what: Signature::of_effect_data(&data),
            trigger: Some(4),
            made_ms: Some(2_000),
        }];
        let effects = [
            booked(effect(0, "a", "a", "picked"), 1_040),
            // A second effect for `a` is a duplicate, not a second sample.
            booked(effect(1, "a", "a-again", "picked"), 9_000),
            booked(effect(2, "b", "b", "packed"), 1_400),
            booked(station_made, 2_250),
        ];
        let t = tally_with(&[a, b], &expected, &effects);
        assert_eq!(t.duplicated, 1);
        assert_eq!(t.latency_ms["orders"], vec![40, 300]);
        assert_eq!(t.latency_ms["shift"], vec![250]);
        let l = t.latency();
        assert_eq!((l["orders"].events, l["orders"].max_ms), (2, 300));
        assert_eq!(l["shift"].p50_ms, 250);
    }

    #[test]
    fn ranks_follow_the_journey() {
        let kinds = [
            "picked",
            "io.dockline.packed",
            "loaded",
            "departed",
            "arrived",
            "delivered",
        ];
        let ranks: Vec<_> = kinds.iter().filter_map(|k| business_rank(k)).collect();
        assert_eq!(ranks, vec![0, 1, 2, 3, 4, 5]);
        assert_eq!(business_rank("exception"), None);
    }
}
