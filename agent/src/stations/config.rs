//! `[[stations]]` in agent.toml: which devices feed which station, and the
//! numbers its rules use.

use serde::Deserialize;

use super::Tolerance;
use crate::config::DeviceConfig;
use crate::devices::DeviceKind;

/// What a station is; fixes its rules (see the [module docs](super)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StationKind {
    /// Pick station: scanner, optional scale.
    Pick,
    /// Pack station: scanner and scale.
    Pack,
    /// Dock door: scanner.
    DockDoor,
    /// Vehicle: GNSS receiver.
    Vehicle,
}

impl StationKind {
    /// The name used in config files.
    pub fn name(self) -> &'static str {
        match self {
            StationKind::Pick => "pick",
            StationKind::Pack => "pack",
            StationKind::DockDoor => "dock_door",
            StationKind::Vehicle => "vehicle",
        }
    }

    /// Device kinds this station needs (each at least once) and may have.
    fn devices(self) -> (&'static [DeviceKind], &'static [DeviceKind]) {
        use DeviceKind::{Bridge, Gps, Scale, Scanner};
        match self {
            StationKind::Pick => (&[Scanner], &[Scanner, Scale, Bridge]),
            // A load cell behind a peripheral bridge is a scale too.
            StationKind::Pack => (&[Scanner], &[Scanner, Scale, Bridge]),
            StationKind::DockDoor => (&[Scanner], &[Scanner]),
            StationKind::Vehicle => (&[Gps], &[Gps]),
        }
    }
}

/// One station.
///
/// ```toml
/// [[stations]]
/// name = "pick-1"
/// kind = "pick"
/// devices = ["pick-scanner", "pick-scale"]
/// weight_tolerance_kg = 0.02
/// weight_tolerance_percent = 2.0
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct StationConfig {
    /// A name unique on this agent.
    pub name: String,
    /// pick, pack, dock_door or vehicle.
    pub kind: StationKind,
    /// Names of the `[[devices]]` that feed it; a device feeds one station.
    pub devices: Vec<String>,
    /// Location reference on its events (bin, GLN, door code); its name when absent.
    #[serde(default)]
    pub location: Option<String>,
    /// Absolute weight tolerance, kg.
    #[serde(default = "default_tolerance_kg")]
    pub weight_tolerance_kg: f64,
    /// Relative weight tolerance, percent of the expected weight; the larger
    /// of the two applies.
    #[serde(default = "default_tolerance_percent")]
    pub weight_tolerance_percent: f64,
    /// Dock door: the vehicle at the door until a vehicle barcode is scanned.
    /// Vehicle: the vehicle's id (required).
    #[serde(default)]
    pub vehicle: Option<String>,
    /// Vehicle: the depot and stop fences.
    #[serde(default)]
    pub geofences: Vec<GeofenceConfig>,
    /// Vehicle: the band beyond a fence's radius that counts as neither inside
    /// nor outside, metres.
    #[serde(default = "default_hysteresis")]
    pub hysteresis_m: f64,
    /// Vehicle: consecutive fixes on the new side before arrived/departed.
    #[serde(default = "default_confirm_fixes")]
    pub confirm_fixes: u32,
    /// Pick or pack station with an MT-SICS scale: a plain barcode (e.g.
    /// printed on the bench) whose scan tares the station's scale (`T`),
    /// instead of being read as a document.
    #[serde(default)]
    pub tare_barcode: Option<String>,
    /// Like `tare_barcode`, for zeroing the empty scale (`Z`).
    #[serde(default)]
    pub zero_barcode: Option<String>,
}

/// Whether a fence is the depot or a stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GeofenceRole {
    /// Its events carry the fence's name as location.
    Depot,
    /// Its events carry the fence's name as stop.
    Stop,
}

/// A circular geofence.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct GeofenceConfig {
    /// The depot's location code or the stop's reference.
    pub name: String,
    /// Depot or stop.
    pub role: GeofenceRole,
    /// Centre latitude, degrees north.
    pub lat: f64,
    /// Centre longitude, degrees east.
    pub lon: f64,
    /// Radius, metres.
    pub radius_m: f64,
}

fn default_tolerance_kg() -> f64 {
    0.02
}
fn default_tolerance_percent() -> f64 {
    2.0
}
fn default_hysteresis() -> f64 {
    30.0
}
fn default_confirm_fixes() -> u32 {
    3
}

impl StationConfig {
    /// The location reference on this station's events.
    pub fn location(&self) -> String {
        self.location.clone().unwrap_or_else(|| self.name.clone())
    }

    /// The weight tolerance.
    pub fn tolerance(&self) -> Tolerance {
        Tolerance {
            kg: self.weight_tolerance_kg,
            percent: self.weight_tolerance_percent,
        }
    }
}

/// Checks every station against itself, the others and the devices.
pub fn check(stations: &[StationConfig], devices: &[DeviceConfig]) -> Result<(), String> {
    for (i, s) in stations.iter().enumerate() {
        let name = &s.name;
        if name.trim().is_empty() {
            return Err(format!(
                "stations[{i}] has an empty name; give every station a name"
            ));
        }
        if stations.iter().skip(i + 1).any(|o| &o.name == name) {
            return Err(format!(
                "two stations are named {name:?}; station names must be unique"
            ));
        }
        let mut kinds = Vec::new();
        for d in &s.devices {
            let Some(device) = devices.iter().find(|x| &x.name == d) else {
                return Err(format!(
                    "station {name:?} lists device {d:?}, which no [[devices]] entry names; add it or fix the name"
                ));
            };
            if let Some(other) = stations[..i].iter().find(|o| o.devices.contains(d)) {
                return Err(format!(
                    "device {d:?} feeds both station {:?} and {name:?}; a device feeds one station",
                    other.name
                ));
            }
            kinds.push(device.kind);
        }
        let (needs, allows) = s.kind.devices();
        if let Some(k) = kinds.iter().find(|k| !allows.contains(k)) {
            return Err(format!(
                "station {name:?} is a {} station and cannot use a {k}; it takes {}",
                s.kind.name(),
                list(allows)
            ));
        }
        if let Some(k) = needs.iter().find(|k| !kinds.contains(k)) {
            return Err(format!(
                "station {name:?} is a {} station and needs a {k} among its devices",
                s.kind.name()
            ));
        }
        if s.kind == StationKind::Pack
            && !kinds
                .iter()
                .any(|k| matches!(k, DeviceKind::Scale | DeviceKind::Bridge))
        {
            return Err(format!(
                "pack station {name:?} needs a scale (or a bridge with a load cell) among its devices"
            ));
        }
        let actions = [
            ("tare_barcode", &s.tare_barcode),
            ("zero_barcode", &s.zero_barcode),
        ];
        for (field, code) in actions {
            let Some(code) = code else { continue };
            if code.trim().is_empty() || code.trim() != code {
                return Err(format!(
                    "station {name:?}: {field} {code:?} is empty or has surrounding spaces; give the barcode's text exactly"
                ));
            }
            let commandable = s.devices.iter().any(|d| {
                devices
                    .iter()
                    .any(|x| &x.name == d && x.protocol == crate::devices::Protocol::Mtsics)
            });
            if !commandable {
                return Err(format!(
                    "station {name:?} has a {field} but no MT-SICS scale (protocol \"mtsics\") among its devices; only those take tare and zero commands"
                ));
            }
        }
        if s.tare_barcode.is_some() && s.tare_barcode == s.zero_barcode {
            return Err(format!(
                "station {name:?}: tare_barcode and zero_barcode are the same; give them different texts"
            ));
        }
        let tolerance_ok = |v: f64| v.is_finite() && v >= 0.0;
        if !tolerance_ok(s.weight_tolerance_kg) || !tolerance_ok(s.weight_tolerance_percent) {
            return Err(format!(
                "station {name:?}: weight tolerances must be numbers >= 0"
            ));
        }
        if s.kind == StationKind::Vehicle {
            check_vehicle(s)?;
        } else if !s.geofences.is_empty() {
            return Err(format!(
                "station {name:?} has geofences but is not a vehicle; remove them or set kind = \"vehicle\""
            ));
        }
    }
    Ok(())
}

fn check_vehicle(s: &StationConfig) -> Result<(), String> {
    let name = &s.name;
    if s.vehicle.as_deref().is_none_or(|v| v.trim().is_empty()) {
        return Err(format!(
            "vehicle station {name:?} needs vehicle = \"<vehicle id>\" for its events"
        ));
    }
    if s.geofences.is_empty() {
        return Err(format!(
            "vehicle station {name:?} has no geofences; add [[stations.geofences]] for the depot and the stops"
        ));
    }
    if s.confirm_fixes == 0 {
        return Err(format!(
            "vehicle station {name:?}: confirm_fixes must be at least 1 (default 3)"
        ));
    }
    if !(s.hysteresis_m.is_finite() && s.hysteresis_m >= 0.0) {
        return Err(format!(
            "vehicle station {name:?}: hysteresis_m must be a number >= 0 (default 30)"
        ));
    }
    for f in &s.geofences {
        let valid = (-90.0..=90.0).contains(&f.lat)
            && (-180.0..=180.0).contains(&f.lon)
            && f.radius_m.is_finite()
            && f.radius_m > 0.0;
        if !valid {
            return Err(format!(
                "vehicle station {name:?}: geofence {:?} needs lat in -90..90, lon in -180..180 and radius_m > 0",
                f.name
            ));
        }
    }
    Ok(())
}

fn list(kinds: &[DeviceKind]) -> String {
    let names: Vec<&str> = kinds.iter().map(|k| k.name()).collect();
    names.join(", ")
}
