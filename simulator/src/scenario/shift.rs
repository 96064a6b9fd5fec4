//! A warehouse shift as a scenario file (`kind = "shift"`) and the timeline
//! it makes.
//!
//! # What the operators do
//!
//! Pick lists go round-robin to the pick stations, each worked by one
//! operator at the scan and think pace of the file. Per pick list:
//!
//! 1. The list is posted to the gateway (`POST /v1/tasks`); a tote goes on
//!    the station's scale and is tared.
//! 2. The list's barcode (Code 128, the order number) is scanned.
//! 3. Per line: sometimes a wrong item first (→ `exception wrong_item`);
//!    then each unit's label (GS1-128, GS1 DataMatrix or EAN-13 by item),
//!    a GS1 label sometimes misread once and scanned again; then the units
//!    go into the tote and the scale settles (→ `picked`). A short line
//!    stops early and is not weighed.
//! 4. With a short line, the list's barcode is scanned again to close it
//!    (→ `picked` for the partial quantity if any, `exception short_pick`).
//! 5. The tote comes off the scale; the tare is cleared. Sometimes someone
//!    leans on the empty scale (overload).
//!
//! The pack station then scans the order's barcode and a new SSCC label
//! (AI 00 + AI 37 with the piece count) and weighs the package (→ `packed`);
//! the dock door scans each packed SSCC onto the vehicle whose barcode it
//! scanned at the start of the shift (→ `loaded`). An order whose every
//! line is short with nothing picked is neither packed nor loaded.
//!
//! # Why these rules keep the expected set exact
//!
//! The station rules (agent `stations` module) decide by stable weights and
//! by the order of scans; the generator only ever does what those rules read
//! unambiguously: each line is weighed before the next line's first scan,
//! a misread is a GS1 label whose check digit fails (rejected, no event),
//! wrong items are never on the list, and overloads happen with no pick
//! list open. Gaps between steps are at least `think_ms` so a stable weight
//! and the next scan, read by two reader threads, cannot swap.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Deserialize;
use serde_json::json;

use dockline_agent::devices::{DeviceKind, Protocol};
use dockline_agent::stations::config::StationKind;

use super::{Act, Chunk, DeviceSpec, Expected, ScenarioError, Signature, Timeline};
use crate::devices::scale::{ScaleModel, ScaleProtocol};
use crate::devices::scanner::{Suffix, Symbol, misread_bytes, scan_bytes, with_check_digit};
use crate::stack;

/// A warehouse shift file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShiftScenario {
    /// The scenario's name.
    pub name: String,
    /// Seed of every random choice.
    pub seed: u64,
    /// The gateway agent the stations are on (its device id).
    pub agent: String,
    /// Pace and mistakes.
    pub shift: ShiftPace,
    /// What can be on a pick list.
    pub items: Vec<ItemSpec>,
    /// Pick stations, worked in parallel.
    pub pick_stations: Vec<StationSpec>,
    /// The pack station.
    pub pack_station: StationSpec,
    /// The dock door.
    pub dock_door: DockSpec,
}

/// Pace and mistakes of a shift.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShiftPace {
    /// Most pick lists (fewer when the time budget ends first).
    pub orders: u32,
    /// First order number (`SO-<n>`).
    pub first_order: u32,
    /// Lines per pick list, inclusive range.
    pub lines: [u32; 2],
    /// Units per line, inclusive range.
    pub quantity: [u32; 2],
    /// Between two scans by one operator, ms.
    pub scan_interval_ms: u64,
    /// Between one step and the next (scale settled → next scan), ms.
    pub think_ms: u64,
    /// How long a load moves on the scale before it is stable, ms.
    pub settle_ms: u64,
    /// The tote's weight, kg (tared at the pick station).
    pub tote_kg: f64,
    /// The empty package's weight, kg (not tared at the pack station).
    pub box_kg: f64,
    /// Share of lines that start with a wrong item.
    pub wrong_item_rate: f64,
    /// Share of lines left short.
    pub short_pick_rate: f64,
    /// Share of GS1 scans misread once first.
    pub misread_rate: f64,
    /// Share of pick lists after which a scale is overloaded for a moment.
    pub overload_rate: f64,
}

/// One article.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ItemSpec {
    /// GTIN-14 (with its check digit).
    pub gtin: String,
    /// What it is (for people reading the file).
    pub name: String,
    /// Weight of one unit, kg.
    pub unit_weight_kg: f64,
    /// The label's symbology.
    pub symbol: ItemSymbol,
}

/// The symbology of an item's label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ItemSymbol {
    /// GS1-128 with GTIN and lot.
    Gs1_128,
    /// GS1 DataMatrix with GTIN, lot and serial.
    Datamatrix,
    /// EAN-13 (the GTIN must start with 0).
    Ean13,
}

/// A station with a scanner and a scale.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StationSpec {
    /// The station's name (its events' location).
    pub name: String,
    /// The scanner's suffix.
    #[serde(default)]
    pub scanner_suffix: Suffix,
    /// The scale's protocol.
    pub scale: ScaleProtocol,
    /// Toledo: the indicator sends a checksum byte.
    #[serde(default)]
    pub toledo_checksum: bool,
    /// The scale's capacity, kg.
    #[serde(default = "default_capacity")]
    pub capacity_kg: f64,
}

fn default_capacity() -> f64 {
    30.0
}

/// The dock door.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DockSpec {
    /// The door's name (its events' location).
    pub name: String,
    /// The vehicle at the door (its barcode is scanned first).
    pub vehicle: String,
    /// The scanner's suffix.
    #[serde(default)]
    pub scanner_suffix: Suffix,
    /// Extension digit and GS1 company prefix of the SSCCs, 7 to 10 digits.
    pub sscc_prefix: String,
}

/// Period of a scale's output while it streams, ms.
const SCALE_PERIOD_MS: u64 = 100;
/// Resolution of the scale simulation, ms.
const SCALE_TICK_MS: u64 = 20;

/// A station's devices and when its operator is free.
struct Desk {
    scanner: String,
    suffix: Suffix,
    scale: String,
    free_at: u64,
}

/// Everything generated so far; an order is added only when it fits.
struct Draft {
    chunks: Vec<Chunk>,
    /// Scale operations per scale, applied when rendering.
    scale_ops: Vec<(u64, String, ScaleOp)>,
    expected: Vec<Signature>,
    posts: usize,
}

#[derive(Debug, Clone, Copy)]
enum ScaleOp {
    Add(f64),
    Empty,
    Tare,
    ClearTare,
    Overload(u64),
}

impl ShiftScenario {
    fn invalid(&self, message: String) -> ScenarioError {
        ScenarioError::Invalid {
            name: self.name.clone(),
            message,
        }
    }

    fn check(&self) -> Result<(), ScenarioError> {
        if self.pick_stations.is_empty() {
            return Err(self.invalid("no [[pick_stations]]; add at least one".into()));
        }
        if self.items.len() < 2 {
            return Err(self
                .invalid("fewer than 2 [[items]]: a wrong item needs one not on the list".into()));
        }
        let [lo, hi] = self.shift.lines;
        let [qlo, qhi] = self.shift.quantity;
        if lo == 0 || hi < lo || qlo == 0 || qhi < qlo {
            return Err(self.invalid(format!(
                "lines {:?} and quantity {:?} must be ranges [low, high] with 1 <= low <= high",
                self.shift.lines, self.shift.quantity
            )));
        }
        if hi as usize >= self.items.len() {
            return Err(self.invalid(format!(
                "up to {hi} lines need at least {} items (one left over for wrong picks)",
                hi + 1
            )));
        }
        for item in &self.items {
            let ok = item.gtin.len() == 14
                && item.gtin.get(..13).and_then(with_check_digit).as_deref()
                    == Some(item.gtin.as_str());
            if !ok || (item.symbol == ItemSymbol::Ean13 && !item.gtin.starts_with('0')) {
                return Err(self.invalid(format!(
                    "item {} has GTIN {:?}: give 14 digits with a valid check digit (starting with 0 for EAN-13)",
                    item.name, item.gtin
                )));
            }
        }
        let digits = self.dock_door.sscc_prefix.len();
        if !(7..=10).contains(&digits)
            || !self
                .dock_door
                .sscc_prefix
                .bytes()
                .all(|b| b.is_ascii_digit())
        {
            return Err(self.invalid(format!(
                "sscc_prefix {:?} must be 7 to 10 digits (extension digit + company prefix)",
                self.dock_door.sscc_prefix
            )));
        }
        Ok(())
    }

    /// The timeline of the orders that finish within `budget_ms`.
    pub fn timeline(&self, budget_ms: u64, seed: Option<u64>) -> Result<Timeline, ScenarioError> {
        self.check()?;
        let pace = &self.shift;
        let mut rng = StdRng::seed_from_u64(seed.unwrap_or(self.seed));
        let mut desks: Vec<Desk> = self
            .pick_stations
            .iter()
            .enumerate()
            .map(|(i, s)| Desk {
                scanner: format!("{}-scanner", s.name),
                suffix: s.scanner_suffix,
                scale: format!("{}-scale", s.name),
                // Operators start a little apart.
                free_at: 1_000 + i as u64 * 1_700,
            })
            .collect();
        let pack = Desk {
            scanner: format!("{}-scanner", self.pack_station.name),
            suffix: self.pack_station.scanner_suffix,
            scale: format!("{}-scale", self.pack_station.name),
            free_at: 0,
        };
        let door_scanner = format!("{}-scanner", self.dock_door.name);
        let mut pack_free = 0u64;
        let mut door_free = 500u64;
        let mut draft = Draft {
            chunks: Vec::new(),
            scale_ops: Vec::new(),
            expected: Vec::new(),
            posts: 0,
        };
        // The vehicle arrives at the door first.
        draft.chunks.push(Chunk {
            at_ms: 200,
            act: Act::Bytes {
                device: door_scanner.clone(),
                bytes: scan_bytes(
                    &Symbol::Code128(self.dock_door.vehicle.clone()),
                    self.dock_door.scanner_suffix,
                ),
            },
        });
        let mut orders = 0u32;
        let mut wrong = 0u32;
        let mut short = 0u32;
        let mut misreads = 0u32;
        for n in 0..pace.orders {
            let number = pace.first_order + n;
            let order = format!("SO-{number}");
            let desk_index = n as usize % desks.len();
            let mut trial = Draft {
                chunks: Vec::new(),
                scale_ops: Vec::new(),
                expected: Vec::new(),
                posts: 0,
            };
            let station = &self.pick_stations[desk_index];
            let desk = &desks[desk_index];
            let picked = self.pick_order(&mut rng, &order, station, desk, &mut trial);
            let pieces = picked.pieces;
            let mut pack_done = picked.done_at;
            let mut door_done = picked.done_at;
            if pieces > 0 {
                let sscc = self.sscc(number)?;
                let start = (picked.done_at + 2_000).max(pack_free);
                pack_done =
                    self.pack_order(&order, &sscc, pieces, picked.kg, start, &pack, &mut trial);
                let load_at = (pack_done + 1_500).max(door_free);
                trial.chunks.push(Chunk {
                    at_ms: load_at,
                    act: Act::Bytes {
                        device: door_scanner.clone(),
                        bytes: scan_bytes(
                            &Symbol::sscc(&sscc, None),
                            self.dock_door.scanner_suffix,
                        ),
                    },
                });
                trial.expected.push(Signature {
                    sscc: Some(sscc.clone()),
                    location: Some(self.dock_door.name.clone()),
                    ..Signature::kind("loaded")
                });
                door_done = load_at + pace.think_ms;
            }
            if pack_done.max(door_done) > budget_ms {
                break;
            }
            // The order fits: keep it.
            orders += 1;
            wrong += picked.wrong;
            short += picked.short;
            misreads += picked.misreads;
            desks[desk_index].free_at = picked.done_at + pace.think_ms;
            if pieces > 0 {
                pack_free = pack_done;
                door_free = door_done;
            }
            draft.chunks.append(&mut trial.chunks);
            draft.scale_ops.append(&mut trial.scale_ops);
            draft.expected.append(&mut trial.expected);
            draft.posts += trial.posts;
        }
        let end = draft
            .chunks
            .iter()
            .map(|c| c.at_ms)
            .chain(draft.scale_ops.iter().map(|o| o.0 + pace.settle_ms))
            .max()
            .unwrap_or(0)
            .saturating_add(1_000)
            // Every kept order is done by the budget; the streams stop there.
            .min(budget_ms);
        let mut devices = Vec::new();
        let mut stations = Vec::new();
        for (station, kind) in self
            .pick_stations
            .iter()
            .map(|s| (s, StationKind::Pick))
            .chain(std::iter::once((&self.pack_station, StationKind::Pack)))
        {
            let scanner = format!("{}-scanner", station.name);
            let scale = format!("{}-scale", station.name);
            devices.push(DeviceSpec {
                name: scanner.clone(),
                kind: DeviceKind::Scanner,
                protocol: Protocol::Scan,
                toledo_checksum: false,
            });
            devices.push(DeviceSpec {
                name: scale.clone(),
                kind: DeviceKind::Scale,
                protocol: station.scale.agent_protocol(),
                toledo_checksum: station.scale == ScaleProtocol::Toledo && station.toledo_checksum,
            });
            let mut config = stack::config::station(&station.name, kind, &[&scanner, &scale])
                .map_err(|e| self.invalid(e.to_string()))?;
            config.weight_tolerance_kg = 0.02;
            config.weight_tolerance_percent = 2.0;
            stations.push(config);
            let model = ScaleModel::new(station.scale, station.capacity_kg, SCALE_PERIOD_MS)
                .with_toledo_checksum(station.toledo_checksum);
            render_scale(
                &scale,
                model,
                &draft.scale_ops,
                pace.settle_ms,
                end,
                &mut draft.chunks,
            );
        }
        devices.push(DeviceSpec {
            name: door_scanner.clone(),
            kind: DeviceKind::Scanner,
            protocol: Protocol::Scan,
            toledo_checksum: false,
        });
        stations.push(
            stack::config::station(
                &self.dock_door.name,
                StationKind::DockDoor,
                &[&door_scanner],
            )
            .map_err(|e| self.invalid(e.to_string()))?,
        );
        let expected = draft
            .expected
            .into_iter()
            .map(|what| Expected::new(&self.name, &self.agent, what))
            .collect::<Vec<_>>();
        let description = format!(
            "{} pick lists on {} pick stations, {} business events expected ({wrong} wrong items, {short} short lines, {misreads} misreads)",
            orders,
            self.pick_stations.len(),
            expected.len()
        );
        let mut t = Timeline {
            source: self.name.clone(),
            agent: self.agent.clone(),
            devices,
            stations,
            chunks: draft.chunks,
            expected,
            posts: draft.posts,
            end_ms: 0,
            description,
        };
        t.finish();
        Ok(t)
    }

    fn sscc(&self, number: u32) -> Result<String, ScenarioError> {
        let prefix = &self.dock_door.sscc_prefix;
        let serial_digits = 17 - prefix.len();
        let serial = u64::from(number) % 10u64.pow(serial_digits as u32);
        with_check_digit(&format!("{prefix}{serial:0serial_digits$}"))
            .ok_or_else(|| self.invalid(format!("sscc_prefix {prefix:?} is not digits")))
    }

    /// One pick list at one station, from when its operator is free.
    fn pick_order(
        &self,
        rng: &mut StdRng,
        order: &str,
        station: &StationSpec,
        desk: &Desk,
        out: &mut Draft,
    ) -> PickOutcome {
        let pace = &self.shift;
        let mut t = desk.free_at;
        let mut outcome = PickOutcome::default();
        // Choose the lines: distinct items.
        let count = rng.random_range(pace.lines[0]..=pace.lines[1]) as usize;
        let mut pool: Vec<usize> = (0..self.items.len()).collect();
        let mut lines = Vec::new();
        for _ in 0..count {
            let i = pool.swap_remove(rng.random_range(0..pool.len()));
            let quantity = rng.random_range(pace.quantity[0]..=pace.quantity[1]);
            lines.push((i, quantity));
        }
        let task_lines: Vec<_> = lines
            .iter()
            .map(|(i, q)| {
                json!({"item": self.items[*i].gtin, "quantity": q,
                       "unit_weight_kg": self.items[*i].unit_weight_kg})
            })
            .collect();
        out.chunks.push(Chunk {
            at_ms: t,
            act: Act::PostTask(json!({"order": order, "lines": task_lines})),
        });
        out.posts += 1;
        // The tote goes on and is tared.
        t += 300;
        out.scale_ops
            .push((t, desk.scale.clone(), ScaleOp::Add(pace.tote_kg)));
        t += pace.settle_ms + 200;
        out.scale_ops.push((t, desk.scale.clone(), ScaleOp::Tare));
        t += pace.think_ms;
        let scan = |t: u64, symbol: &Symbol, out: &mut Draft| {
            out.chunks.push(Chunk {
                at_ms: t,
                act: Act::Bytes {
                    device: desk.scanner.clone(),
                    bytes: scan_bytes(symbol, desk.suffix),
                },
            });
        };
        let list = Symbol::Code128(order.to_owned());
        scan(t, &list, out);
        t += pace.think_ms;
        let refs = |kind: &str| Signature {
            order: Some(order.to_owned()),
            location: Some(station.name.clone()),
            ..Signature::kind(kind)
        };
        let mut any_short = false;
        for (i, quantity) in &lines {
            let item = &self.items[*i];
            if rng.random_bool(pace.wrong_item_rate) {
                let others: Vec<usize> = pool.clone();
                if let Some(&w) = others.get(rng.random_range(0..others.len().max(1))) {
                    scan(t, &self.label(&self.items[w], rng, 0), out);
                    t += pace.scan_interval_ms;
                    out.expected.push(Signature {
                        exception: Some("wrong_item".into()),
                        ..refs("exception")
                    });
                    outcome.wrong += 1;
                    t += pace.think_ms;
                }
            }
            let is_short = rng.random_bool(pace.short_pick_rate);
            let units = if is_short {
                rng.random_range(0..*quantity)
            } else {
                *quantity
            };
            for unit in 0..units {
                let symbol = self.label(item, rng, unit);
                if symbol.can_misread() && rng.random_bool(pace.misread_rate) {
                    let digit = rng.random_range(0..10u8);
                    if let Some(bytes) = misread_bytes(&symbol, desk.suffix, digit) {
                        out.chunks.push(Chunk {
                            at_ms: t,
                            act: Act::Bytes {
                                device: desk.scanner.clone(),
                                bytes,
                            },
                        });
                        t += pace.scan_interval_ms;
                        outcome.misreads += 1;
                    }
                }
                scan(t, &symbol, out);
                t += pace.scan_interval_ms;
            }
            let kg = f64::from(units) * item.unit_weight_kg;
            if units > 0 {
                out.scale_ops
                    .push((t, desk.scale.clone(), ScaleOp::Add(kg)));
                t += pace.settle_ms + pace.think_ms;
                outcome.kg += kg;
                outcome.pieces += units;
            }
            if is_short {
                any_short = true;
                outcome.short += 1;
                if units > 0 {
                    out.expected.push(Signature {
                        item: Some(item.gtin.clone()),
                        quantity: Some(u64::from(units)),
                        ..refs("picked")
                    });
                }
                out.expected.push(Signature {
                    exception: Some("short_pick".into()),
                    ..refs("exception")
                });
            } else {
                out.expected.push(Signature {
                    item: Some(item.gtin.clone()),
                    quantity: Some(u64::from(units)),
                    ..refs("picked")
                });
            }
        }
        if any_short {
            // Close the list early by scanning it again.
            scan(t, &list, out);
            t += pace.think_ms;
        }
        // The tote goes to packing; the tare is cleared.
        out.scale_ops.push((t, desk.scale.clone(), ScaleOp::Empty));
        t += pace.settle_ms + 200;
        out.scale_ops
            .push((t, desk.scale.clone(), ScaleOp::ClearTare));
        t += 200;
        if rng.random_bool(pace.overload_rate) {
            out.scale_ops
                .push((t, desk.scale.clone(), ScaleOp::Overload(600)));
            t += 800;
        }
        outcome.done_at = t;
        outcome
    }

    /// Packs one order at the pack station from `start`; returns when done.
    #[allow(clippy::too_many_arguments)]
    fn pack_order(
        &self,
        order: &str,
        sscc: &str,
        pieces: u32,
        goods_kg: f64,
        start: u64,
        desk: &Desk,
        out: &mut Draft,
    ) -> u64 {
        let pace = &self.shift;
        let mut t = start;
        for symbol in [
            Symbol::Code128(order.to_owned()),
            Symbol::sscc(sscc, Some(pieces)),
        ] {
            out.chunks.push(Chunk {
                at_ms: t,
                act: Act::Bytes {
                    device: desk.scanner.clone(),
                    bytes: scan_bytes(&symbol, desk.suffix),
                },
            });
            t += pace.think_ms;
        }
        out.scale_ops
            .push((t, desk.scale.clone(), ScaleOp::Add(goods_kg + pace.box_kg)));
        out.expected.push(Signature {
            order: Some(order.to_owned()),
            sscc: Some(sscc.to_owned()),
            location: Some(self.pack_station.name.clone()),
            quantity: Some(u64::from(pieces)),
            ..Signature::kind("packed")
        });
        t += pace.settle_ms + pace.think_ms;
        out.scale_ops.push((t, desk.scale.clone(), ScaleOp::Empty));
        t + pace.settle_ms + pace.think_ms
    }

    /// The label of one unit of `item`.
    fn label(&self, item: &ItemSpec, rng: &mut StdRng, unit: u32) -> Symbol {
        let lot = format!("L{}", rng.random_range(100..999));
        match item.symbol {
            ItemSymbol::Gs1_128 => Symbol::item(&item.gtin, Some(&lot)),
            ItemSymbol::Datamatrix => Symbol::Gs1DataMatrix(vec![
                ("01".into(), item.gtin.clone()),
                ("10".into(), lot),
                (
                    "21".into(),
                    format!("S{}{unit:03}", rng.random_range(10_000..99_999)),
                ),
            ]),
            ItemSymbol::Ean13 => Symbol::Ean13(item.gtin.get(1..).unwrap_or_default().to_owned()),
        }
    }
}

#[derive(Debug, Default)]
struct PickOutcome {
    done_at: u64,
    pieces: u32,
    kg: f64,
    wrong: u32,
    short: u32,
    misreads: u32,
}

/// Runs one scale's model over the shift and adds its output as chunks.
fn render_scale(
    name: &str,
    mut model: ScaleModel,
    ops: &[(u64, String, ScaleOp)],
    settle: u64,
    end_ms: u64,
    chunks: &mut Vec<Chunk>,
) {
    let mut mine: Vec<(u64, ScaleOp)> = ops
        .iter()
        .filter(|(_, d, _)| d == name)
        .map(|(t, _, op)| (*t, *op))
        .collect();
    mine.sort_by_key(|(t, _)| *t);
    let mut next = mine.into_iter().peekable();
    let mut now = 0;
    while now <= end_ms {
        while let Some((_, op)) = next.next_if(|(t, _)| *t <= now) {
            match op {
                ScaleOp::Add(kg) => model.add(now, kg, settle),
                ScaleOp::Empty => model.place(now, 0.0, settle),
                ScaleOp::Tare => model.tare(),
                ScaleOp::ClearTare => model.clear_tare(),
                ScaleOp::Overload(ms) => model.overload(now, ms),
            }
        }
        let bytes = model.poll(now);
        if !bytes.is_empty() {
            chunks.push(Chunk {
                at_ms: now,
                act: Act::Bytes {
                    device: name.to_owned(),
                    bytes,
                },
            });
        }
        now += SCALE_TICK_MS;
    }
}
