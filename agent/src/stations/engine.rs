//! The station engine: routes each device's readings to the station it
//! feeds, and [`Stations`], the engine shared with the local API (task book,
//! status).
//!
//! Reload ([`StationEngine::reload`], on SIGHUP): a station whose table and
//! device facts (does it have a scale, which MT-SICS scales it commands) are
//! unchanged keeps its state, an open pick list or package included; a
//! changed station starts afresh (what it was doing is named in the
//! report, since the person at it must scan again); the task book is kept.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use dockline_protocol::Reading;
use serde::Serialize;

use super::config::{StationConfig, StationKind};
use super::dock::DockDoor;
use super::pack::PackStation;
use super::pick::PickStation;
use super::task::TaskBook;
use super::vehicle::VehicleStation;
use super::{Observation, Output};
use crate::config::DeviceConfig;
use crate::devices::{DeviceKind, Protocol};
use dockline_firmware::scale::MtSicsCommand;

#[derive(Debug, Clone)]
enum Rules {
    Pick(PickStation),
    Pack(PackStation),
    Dock(DockDoor),
    Vehicle(VehicleStation),
}

#[derive(Debug, Clone)]
struct Station {
    /// Its table, kept to tell on reload whether it changed.
    config: StationConfig,
    /// Whether a scale or bridge feeds it (from the device list).
    has_scale: bool,
    name: String,
    kind: StationKind,
    rules: Rules,
    events: u64,
    last_notice: Option<String>,
    /// Configured barcode texts that command the station's MT-SICS scales.
    scale_barcodes: Vec<(String, MtSicsCommand)>,
    /// The station's MT-SICS scales (the ones that take commands).
    commandable_scales: Vec<String>,
}

/// Every configured station and which device feeds which. Pure: no I/O.
#[derive(Debug, Clone, Default)]
pub struct StationEngine {
    stations: Vec<Station>,
    by_device: HashMap<String, usize>,
}

/// One station as `GET /v1/status` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StationStatus {
    /// Its name.
    pub name: String,
    /// Its kind.
    pub kind: StationKind,
    /// What it is doing (`picking SO-1001: 1 of 3 lines done`).
    pub state: String,
    /// Business events it produced since the agent started.
    pub events: u64,
    /// The last notice for the person at the station.
    pub last_notice: Option<String>,
    /// The last stable weight its scale reported, kg (pick and pack
    /// stations with a scale; the handheld app shows it on the pick screen).
    pub weight_kg: Option<f64>,
}

impl StationEngine {
    /// Builds the stations; `stations` must have passed [`super::config::check`].
    pub fn new(stations: &[StationConfig], devices: &[DeviceConfig]) -> Self {
        let mut engine = StationEngine::default();
        for (index, s) in stations.iter().enumerate() {
            let has_scale = s.devices.iter().any(|name| {
                devices.iter().any(|d| {
                    &d.name == name && matches!(d.kind, DeviceKind::Scale | DeviceKind::Bridge)
                })
            });
            let rules = match s.kind {
                StationKind::Pick => {
                    Rules::Pick(PickStation::new(s.location(), has_scale, s.tolerance()))
                }
                StationKind::Pack => Rules::Pack(PackStation::new(s.location(), s.tolerance())),
                StationKind::DockDoor => {
                    Rules::Dock(DockDoor::new(s.location(), s.vehicle.clone()))
                }
                StationKind::Vehicle => Rules::Vehicle(VehicleStation::new(
                    s.vehicle.clone().unwrap_or_default(),
                    &s.geofences,
                    s.hysteresis_m,
                    s.confirm_fixes,
                )),
            };
            for d in &s.devices {
                engine.by_device.insert(d.clone(), index);
            }
            let commandable_scales = s
                .devices
                .iter()
                .filter(|name| {
                    devices
                        .iter()
                        .any(|d| &d.name == *name && d.protocol == Protocol::Mtsics)
                })
                .cloned()
                .collect();
            let scale_barcodes = [
                (&s.tare_barcode, MtSicsCommand::Tare),
                (&s.zero_barcode, MtSicsCommand::Zero),
            ]
            .into_iter()
            .filter_map(|(code, command)| code.clone().map(|c| (c, command)))
            .collect();
            engine.stations.push(Station {
                config: s.clone(),
                has_scale,
                name: s.name.clone(),
                kind: s.kind,
                rules,
                events: 0,
                last_notice: None,
                scale_barcodes,
                commandable_scales,
            });
        }
        engine
    }

    /// Replaces the stations with those of a new config, keeping the state
    /// of every unchanged one (see the module doc).
    pub fn reload(
        &mut self,
        stations: &[StationConfig],
        devices: &[DeviceConfig],
    ) -> StationsReloaded {
        let mut next = StationEngine::new(stations, devices);
        let mut done = StationsReloaded::default();
        let mut old = std::mem::take(&mut self.stations);
        for station in &mut next.stations {
            let same = old.iter().position(|o| {
                o.config == station.config
                    && o.has_scale == station.has_scale
                    && o.commandable_scales == station.commandable_scales
            });
            match (same, old.iter().position(|o| o.name == station.name)) {
                (Some(i), _) => {
                    *station = old.swap_remove(i);
                    done.unchanged.push(station.name.clone());
                }
                (None, Some(i)) => {
                    let was = old.swap_remove(i);
                    done.restarted
                        .push(format!("{} (was: {})", was.name, describe(&was.rules)));
                }
                (None, None) => done.added.push(station.name.clone()),
            }
        }
        done.removed = old
            .into_iter()
            .map(|o| format!("{} (was: {})", o.name, describe(&o.rules)))
            .collect();
        *self = next;
        done
    }

    /// Whether no station is configured.
    pub fn is_empty(&self) -> bool {
        self.stations.is_empty()
    }

    /// Feeds one reading from `device` to its station (if it feeds one);
    /// returns the station's name and its outputs.
    pub fn on_reading(
        &mut self,
        device: &str,
        reading: &Reading,
        tasks: &mut TaskBook,
    ) -> Option<(&str, Vec<Output>)> {
        let index = *self.by_device.get(device)?;
        let station = self.stations.get_mut(index)?;
        let obs = Observation::of(reading);
        if let Observation::Document(text) = &obs
            && let Some((_, command)) = station.scale_barcodes.iter().find(|(c, _)| c == text)
        {
            let mut out: Vec<Output> = station
                .commandable_scales
                .iter()
                .map(|device| Output::ScaleCommand {
                    device: device.clone(),
                    command: *command,
                })
                .collect();
            let what = match command {
                MtSicsCommand::Zero => "zero",
                _ => "tare",
            };
            out.push(Output::Notice(format!(
                "{what} sent to {}; wait for the scale to settle",
                station.commandable_scales.join(", ")
            )));
            if let Some(Output::Notice(n)) = out.last() {
                station.last_notice = Some(n.clone());
            }
            return Some((station.name.as_str(), out));
        }
        let out = match &mut station.rules {
            Rules::Pick(p) => p.observe(&obs, tasks),
            Rules::Pack(p) => p.observe(&obs),
            Rules::Dock(d) => d.observe(&obs),
            Rules::Vehicle(v) => v.observe(&obs),
        };
        for o in &out {
            match o {
                Output::Event(_) => station.events += 1,
                Output::Notice(n) => station.last_notice = Some(n.clone()),
                Output::ScaleCommand { .. } => {}
            }
        }
        Some((station.name.as_str(), out))
    }

    /// Shows `text` as the last notice of `station` (e.g. an event the
    /// outbox refused, so the person at the station sees it).
    pub fn notice(&mut self, station: &str, text: String) {
        if let Some(s) = self.stations.iter_mut().find(|s| s.name == station) {
            s.last_notice = Some(text);
        }
    }

    /// Every station's status, in config order.
    pub fn status(&self) -> Vec<StationStatus> {
        self.stations
            .iter()
            .map(|s| StationStatus {
                name: s.name.clone(),
                kind: s.kind,
                state: describe(&s.rules),
                events: s.events,
                last_notice: s.last_notice.clone(),
                weight_kg: match &s.rules {
                    Rules::Pick(p) => p.last_stable_kg(),
                    Rules::Pack(p) => p.last_stable_kg(),
                    Rules::Dock(_) | Rules::Vehicle(_) => None,
                },
            })
            .collect()
    }
}

/// What a station is doing, in words.
fn describe(rules: &Rules) -> String {
    match rules {
        Rules::Pick(p) => p.describe(),
        Rules::Pack(p) => p.describe(),
        Rules::Dock(d) => d.describe(),
        Rules::Vehicle(v) => v.describe(),
    }
}

/// What [`StationEngine::reload`] did, by station name.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct StationsReloaded {
    /// New stations.
    pub added: Vec<String>,
    /// Stations gone, each with what it was doing.
    pub removed: Vec<String>,
    /// Changed stations started afresh, each with what it was doing.
    pub restarted: Vec<String>,
    /// Stations that kept their state.
    pub unchanged: Vec<String>,
}

/// The engine and the task book, shared by the reading feed and the local API.
#[derive(Debug, Default)]
pub struct Stations {
    inner: Mutex<Shared>,
}

/// What the lock guards.
#[derive(Debug, Default)]
pub struct Shared {
    /// The stations.
    pub engine: StationEngine,
    /// Pick lists waiting to be opened.
    pub tasks: TaskBook,
}

impl Stations {
    /// Shares `engine` with an empty task book.
    pub fn new(engine: StationEngine) -> Arc<Self> {
        Arc::new(Stations {
            inner: Mutex::new(Shared {
                engine,
                tasks: TaskBook::default(),
            }),
        })
    }

    /// Locks engine and task book. Held for one reading or one request,
    /// never across an await.
    pub fn lock(&self) -> MutexGuard<'_, Shared> {
        // A panic mid-step may have left one station half-updated; going on
        // with it beats stopping every station of the agent.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Shows `text` as the last notice of `station`.
    pub fn notice(&self, station: &str, text: String) {
        self.lock().engine.notice(station, text);
    }

    /// Applies a new config's stations ([`StationEngine::reload`]); the task
    /// book stays.
    pub fn reload(&self, stations: &[StationConfig], devices: &[DeviceConfig]) -> StationsReloaded {
        self.lock().engine.reload(stations, devices)
    }

    /// Feeds one reading; the station's name and outputs.
    pub fn on_reading(&self, device: &str, reading: &Reading) -> Option<(String, Vec<Output>)> {
        let mut shared = self.lock();
        let Shared { engine, tasks } = &mut *shared;
        engine
            .on_reading(device, reading, tasks)
            .map(|(name, out)| (name.to_owned(), out))
    }
}

#[cfg(test)]
mod tests {
    use dockline_protocol::{Scan, Weight, WeightReading, WeightUnit};

    use super::*;
    use crate::stations::{PickTask, TaskLine};

    fn device(name: &str, kind: &str, protocol: &str) -> DeviceConfig {
        serde_json::from_value(serde_json::json!({
            "name": name, "kind": kind, "protocol": protocol, "path": "/dev/x"
        }))
        .expect("device config")
    }

    fn scan(data: &str) -> Reading {
        Reading::Scan(Scan {
            symbology: Some("]C1".into()),
            data: data.into(),
        })
    }

    #[test]
    fn tare_and_zero_barcodes_command_the_mtsics_scale_not_the_order() {
        let devices = [
            device("sc", "scanner", "scan"),
            device("sk", "scale", "mtsics"),
        ];
        let station: StationConfig = serde_json::from_value(serde_json::json!({
            "name": "pack-1", "kind": "pack", "devices": ["sc", "sk"],
            "tare_barcode": "TARE-PACK-1", "zero_barcode": "ZERO-PACK-1"
        }))
        .expect("station config");
        crate::stations::config::check(std::slice::from_ref(&station), &devices)
            .expect("a valid station");
        let stations = Stations::new(StationEngine::new(&[station], &devices));
        let plain = |text: &str| {
            Reading::Scan(Scan {
                symbology: Some("]C0".into()),
                data: text.into(),
            })
        };
        let (_, out) = stations
            .on_reading("sc", &plain("TARE-PACK-1"))
            .expect("routed");
        assert_eq!(
            out[0],
            Output::ScaleCommand {
                device: "sk".into(),
                command: MtSicsCommand::Tare
            }
        );
        assert!(matches!(&out[1], Output::Notice(n) if n.starts_with("tare sent to sk")));
        let (_, out) = stations
            .on_reading("sc", &plain("ZERO-PACK-1"))
            .expect("routed");
        assert_eq!(
            out[0],
            Output::ScaleCommand {
                device: "sk".into(),
                command: MtSicsCommand::Zero
            }
        );
        // Any other plain scan is still a document, and commands nothing.
        let (_, out) = stations.on_reading("sc", &plain("SO-1")).expect("routed");
        assert!(
            out.iter()
                .all(|o| !matches!(o, Output::ScaleCommand { .. }))
        );
        let status = stations.lock().engine.status();
        assert_eq!(
            status[0].last_notice.as_deref(),
            Some("zero sent to sk; wait for the scale to settle")
        );
    }

    #[test]
    fn scale_barcodes_need_an_mtsics_scale_and_distinct_texts() {
        let devices = [
            device("sc", "scanner", "scan"),
            device("toledo", "scale", "toledo"),
            device("sk", "scale", "mtsics"),
        ];
        let station = |devices: &[&str], tare: &str, zero: Option<&str>| -> StationConfig {
            serde_json::from_value(serde_json::json!({
                "name": "pack-1", "kind": "pack", "devices": devices,
                "tare_barcode": tare, "zero_barcode": zero
            }))
            .expect("station config")
        };
        let check = |s: StationConfig| crate::stations::config::check(&[s], &devices);
        let err = check(station(&["sc", "toledo"], "TARE", None)).expect_err("streaming scale");
        assert!(err.contains("no MT-SICS scale"), "{err}");
        let err = check(station(&["sc", "sk"], "T", Some("T"))).expect_err("same text");
        assert!(err.contains("are the same"), "{err}");
        let err = check(station(&["sc", "sk"], " TARE", None)).expect_err("spaces");
        assert!(err.contains("surrounding spaces"), "{err}");
        check(station(&["sc", "sk"], "TARE", Some("ZERO"))).expect("valid");
    }

    #[test]
    fn a_refused_event_shows_as_the_station_notice() {
        let devices = [device("sc", "scanner", "scan")];
        let station: StationConfig = serde_json::from_value(serde_json::json!({
            "name": "dock-3", "kind": "dock_door", "devices": ["sc"]
        }))
        .expect("station config");
        let stations = Stations::new(StationEngine::new(&[station], &devices));
        stations.notice("dock-3", "loaded NOT stored (outbox full)".into());
        stations.notice("no-such-station", "ignored".into());
        let status = stations.lock().engine.status();
        assert_eq!(
            status[0].last_notice.as_deref(),
            Some("loaded NOT stored (outbox full)")
        );
    }

    #[test]
    fn readings_reach_the_station_their_device_feeds() {
        let devices = [
            device("sc", "scanner", "scan"),
            device("sk", "scale", "mtsics"),
            device("loose", "scanner", "scan"),
        ];
        let station: StationConfig = serde_json::from_value(serde_json::json!({
            "name": "pick-1", "kind": "pick", "devices": ["sc", "sk"]
        }))
        .expect("station config");
        let stations = Stations::new(StationEngine::new(&[station], &devices));
        let task = PickTask {
            order: "SO-7".into(),
            lines: vec![TaskLine {
                item: "09521234543213".into(),
                quantity: 1,
                unit_weight_kg: Some(2.0),
            }],
        };
        stations.lock().tasks.post(task).expect("room");

        assert!(stations.on_reading("loose", &scan("SO-7")).is_none());
        let doc = Reading::Scan(Scan {
            symbology: Some("]C0".into()),
            data: "SO-7".into(),
        });
        let (name, out) = stations.on_reading("sc", &doc).expect("routed");
        assert_eq!((name.as_str(), out.len()), ("pick-1", 0));
        stations.on_reading("sc", &scan("0109521234543213"));
        let weight = Reading::Weight(WeightReading {
            net: Weight {
                value: 2000.0,
                unit: WeightUnit::G,
            },
            tare: None,
            stable: true,
        });
        let (_, out) = stations.on_reading("sk", &weight).expect("routed");
        let kinds: Vec<&str> = out
            .iter()
            .filter_map(|o| o.event())
            .map(|e| e.detail.kind_name())
            .collect();
        assert_eq!(kinds, ["picked"]);
        let status = stations.lock().engine.status();
        assert_eq!(status[0].events, 1);
        assert_eq!(status[0].state, "idle: scan a pick list");
        // The scale's last stable weight, for the handheld app's pick screen.
        assert_eq!(status[0].weight_kg, Some(2.0));
    }

    #[test]
    fn reload_keeps_unchanged_stations_and_restarts_changed_ones() {
        let station = |name: &str, kind: &str, devices: &[&str]| -> StationConfig {
            serde_json::from_value(serde_json::json!({
                "name": name, "kind": kind, "devices": devices
            }))
            .expect("station config")
        };
        let devices = [
            device("sc", "scanner", "scan"),
            device("door", "scanner", "scan"),
            device("sk", "scale", "mtsics"),
        ];
        let stations = Stations::new(StationEngine::new(
            &[
                station("pick-1", "pick", &["sc"]),
                station("dock-1", "dock_door", &["door"]),
            ],
            &devices,
        ));
        stations
            .lock()
            .tasks
            .post(PickTask {
                order: "SO-9".into(),
                lines: vec![TaskLine {
                    item: "09521234543213".into(),
                    quantity: 2,
                    unit_weight_kg: None,
                }],
            })
            .expect("room");
        let doc = |text: &str| {
            Reading::Scan(Scan {
                symbology: Some("]C0".into()),
                data: text.into(),
            })
        };
        stations.on_reading("sc", &doc("SO-9"));
        stations.on_reading("door", &doc("TRUCK-7"));

        // pick-1 gains a scale (a changed station), dock-1 is unchanged,
        // pack-1 is new.
        let report = stations.reload(
            &[
                station("pick-1", "pick", &["sc", "sk"]),
                station("dock-1", "dock_door", &["door"]),
                station("pack-1", "pack", &[]),
            ],
            &devices,
        );
        assert_eq!(report.unchanged, ["dock-1"]);
        assert_eq!(report.added, ["pack-1"]);
        assert_eq!(report.restarted.len(), 1);
        assert!(
            report.restarted[0].starts_with("pick-1 (was: picking SO-9"),
            "{report:?}"
        );
        let status = stations.lock().engine.status();
        assert_eq!(
            status[0].state, "idle: scan a pick list",
            "pick-1 starts afresh"
        );
        assert!(
            status[1].state.contains("TRUCK-7"),
            "dock-1 kept its vehicle"
        );

        // Removing a station names what it was doing.
        let report = stations.reload(&[station("pack-1", "pack", &[])], &devices);
        assert_eq!(report.unchanged, ["pack-1"]);
        assert_eq!(report.removed.len(), 2);
        assert!(stations.on_reading("door", &doc("TRUCK-8")).is_none());
    }
}
