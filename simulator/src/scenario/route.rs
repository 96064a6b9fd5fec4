//! A delivery route as a scenario file (`kind = "route"`) and the timeline
//! it makes.
//!
//! # The drive
//!
//! The truck waits at the depot, drives straight to each stop in turn at a
//! constant speed, stands at each stop for `dwell_s`, and returns to the
//! depot. Its receiver sends one NMEA burst per simulated second
//! ([`GpsReceiver`]); on the dead-zone leg the fix is lost for `seconds`
//! around the leg's middle (a tunnel) and the receiver reports no fix.
//! Halfway through each stop's dwell the driver posts the proof of delivery
//! to the agent's `POST /v1/events`, after its signature (a PNG) and a photo
//! (a JPEG of 200–800 KB) to `POST /v1/media` ([`crate::media`], seeded by
//! the stop's index), which the event then names by hash.
//!
//! The vehicle station's geofences (the depot and the stops) make the
//! expected events: `departed` from the depot, `arrived` and `departed` at
//! each stop, `arrived` back at the depot. [`RouteScenario::timeline`]
//! refuses routes where that would not hold: a leg passing through a third
//! fence, a dead zone reaching into a fence, a dwell too short to confirm.
//!
//! # Time
//!
//! The simulated clock runs one second per epoch. A time budget shorter
//! than the drive compresses it: epochs are played faster (up to 200 a
//! second) while the receiver's UTC still advances one second per epoch, so
//! a dead zone of several minutes stays several minutes of receiver time.

use serde::Deserialize;
use serde_json::json;

use dockline_agent::devices::{DeviceKind, Protocol};
use dockline_agent::stations::config::{GeofenceConfig, GeofenceRole, StationKind};

use super::{Act, Chunk, DeviceSpec, Expected, ScenarioError, Signature, Timeline};
use crate::devices::gps::{FixState, GpsReceiver};
use crate::media;
use crate::stack;

/// A delivery route file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteScenario {
    /// The scenario's name.
    pub name: String,
    /// Seed of the receiver's satellite noise.
    pub seed: u64,
    /// The truck's agent (its device id).
    pub agent: String,
    /// The vehicle's id on its events.
    pub vehicle: String,
    /// The receiver's device name in the agent's config.
    pub gps_device: String,
    /// UTC date of the drive: day, month, two-digit year.
    pub date: [u8; 3],
    /// UTC time of the first epoch, seconds after midnight.
    pub start_utc_s: u64,
    /// Driving speed, km/h.
    pub speed_kmh: f64,
    /// Seconds at each stop.
    pub dwell_s: u64,
    /// Seconds at the depot before leaving and after returning.
    pub depot_dwell_s: u64,
    /// The vehicle station's hysteresis band, m.
    pub hysteresis_m: f64,
    /// The vehicle station's consecutive fixes to confirm a crossing.
    pub confirm_fixes: u32,
    /// The depot.
    pub depot: Place,
    /// The stops, in driving order.
    pub stops: Vec<Stop>,
    /// Where the fix is lost.
    pub dead_zone: Option<DeadZone>,
}

/// A fenced place.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Place {
    /// The fence's name (depot location or stop reference).
    pub name: String,
    /// Latitude, degrees.
    pub lat: f64,
    /// Longitude, degrees.
    pub lon: f64,
    /// Fence radius, m.
    pub radius_m: f64,
}

/// A stop and its delivery.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stop {
    /// The fenced place.
    #[serde(flatten)]
    pub place: Place,
    /// The order delivered here.
    pub order: String,
    /// Who signs for it.
    pub received_by: String,
    /// Pieces handed over.
    pub pieces: u32,
}

/// A stretch without a fix.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeadZone {
    /// The leg it is on: 1 = depot → first stop, …, stops + 1 = back to the depot.
    pub leg: usize,
    /// How long the fix is lost, simulated seconds.
    pub seconds: u64,
}

/// Metres per degree of latitude.
const M_PER_DEG: f64 = 111_320.0;
/// Margin beyond a fence's hysteresis band that a leg or dead zone keeps, m.
const MARGIN_M: f64 = 50.0;
/// Fastest playback: one epoch per this many ms.
const MIN_EPOCH_MS: f64 = 5.0;

/// A point in local metres (east, north) around the depot.
fn local(depot: &Place, lat: f64, lon: f64) -> (f64, f64) {
    let k = depot.lat.to_radians().cos();
    (
        (lon - depot.lon) * M_PER_DEG * k,
        (lat - depot.lat) * M_PER_DEG,
    )
}

fn distance(a: (f64, f64), b: (f64, f64)) -> f64 {
    (a.0 - b.0).hypot(a.1 - b.1)
}

/// Distance from `p` to the segment `a`–`b`.
fn to_segment(p: (f64, f64), a: (f64, f64), b: (f64, f64)) -> f64 {
    let (dx, dy) = (b.0 - a.0, b.1 - a.1);
    let len2 = dx * dx + dy * dy;
    let t = if len2 == 0.0 {
        0.0
    } else {
        (((p.0 - a.0) * dx + (p.1 - a.1) * dy) / len2).clamp(0.0, 1.0)
    };
    distance(p, (a.0 + t * dx, a.1 + t * dy))
}

/// One simulated second of the drive.
#[derive(Debug, Clone, Copy)]
struct Second {
    lat: f64,
    lon: f64,
    speed_mps: f64,
    course_deg: f64,
    fix: bool,
}

impl RouteScenario {
    fn invalid(&self, message: String) -> ScenarioError {
        ScenarioError::Invalid {
            name: self.name.clone(),
            message,
        }
    }

    /// The fences in visiting order: depot, stops, depot.
    fn places(&self) -> Vec<&Place> {
        let mut p = vec![&self.depot];
        p.extend(self.stops.iter().map(|s| &s.place));
        p.push(&self.depot);
        p
    }

    fn keep_out(&self, place: &Place) -> f64 {
        place.radius_m + self.hysteresis_m + MARGIN_M
    }

    /// The drive, second by second, and the second each stop's POD is posted.
    fn drive(&self) -> Result<(Vec<Second>, Vec<usize>), ScenarioError> {
        if self.stops.is_empty() {
            return Err(self.invalid("no [[stops]]".into()));
        }
        if !(self.speed_kmh > 0.0 && self.speed_kmh <= 130.0) {
            return Err(self.invalid(format!("speed_kmh {} must be in (0, 130]", self.speed_kmh)));
        }
        let confirm = u64::from(self.confirm_fixes.max(1));
        if self.dwell_s < 2 * confirm + 4 || self.depot_dwell_s < confirm + 2 {
            return Err(self.invalid(format!(
                "dwell_s {} and depot_dwell_s {} are too short to confirm a crossing with confirm_fixes {}",
                self.dwell_s, self.depot_dwell_s, self.confirm_fixes
            )));
        }
        let v = self.speed_kmh / 3.6;
        let places = self.places();
        let stand = |p: &Place, n: u64, out: &mut Vec<Second>| {
            for _ in 0..n {
                out.push(Second {
                    lat: p.lat,
                    lon: p.lon,
                    speed_mps: 0.0,
                    course_deg: 0.0,
                    fix: true,
                });
            }
        };
        let mut seconds = Vec::new();
        let mut pods = Vec::new();
        stand(&self.depot, self.depot_dwell_s, &mut seconds);
        for (leg, pair) in places.windows(2).enumerate() {
            let (from, to) = (pair[0], pair[1]);
            let a = local(&self.depot, from.lat, from.lon);
            let b = local(&self.depot, to.lat, to.lon);
            let length = distance(a, b);
            if length < self.keep_out(from) + self.keep_out(to) {
                return Err(self.invalid(format!(
                    "{} and {} are {length:.0} m apart: too close for their fences to be left and entered",
                    from.name, to.name
                )));
            }
            for other in &places {
                let p = local(&self.depot, other.lat, other.lon);
                let endpoint = std::ptr::eq(*other, from) || std::ptr::eq(*other, to);
                if !endpoint && to_segment(p, a, b) < self.keep_out(other) {
                    return Err(self.invalid(format!(
                        "the leg {} → {} passes through the fence of {}; move a stop",
                        from.name, to.name, other.name
                    )));
                }
            }
            let steps = (length / v).ceil().max(1.0) as u64;
            let course = (b.0 - a.0).atan2(b.1 - a.1).to_degrees().rem_euclid(360.0);
            let dead = self
                .dead_zone
                .as_ref()
                .filter(|d| d.leg == leg + 1)
                .map(|d| {
                    let start = steps.saturating_sub(d.seconds) / 2;
                    (start, start + d.seconds)
                });
            if let Some((start, end)) = dead {
                let start_m = start as f64 * v;
                let end_m = end as f64 * v;
                if start_m < self.keep_out(from) || length - end_m < self.keep_out(to) {
                    return Err(self.invalid(format!(
                        "the dead zone of {} s on the leg {} → {} ({length:.0} m) reaches into a fence; shorten it or pick a longer leg",
                        end - start,
                        from.name,
                        to.name
                    )));
                }
            }
            for i in 1..=steps {
                let f = i as f64 / steps as f64;
                let (e, n) = (a.0 + (b.0 - a.0) * f, a.1 + (b.1 - a.1) * f);
                let k = self.depot.lat.to_radians().cos();
                seconds.push(Second {
                    lat: self.depot.lat + n / M_PER_DEG,
                    lon: self.depot.lon + e / (M_PER_DEG * k),
                    speed_mps: if i == steps { 0.0 } else { v },
                    course_deg: course,
                    fix: !dead.is_some_and(|(s, e)| (s..e).contains(&i)),
                });
            }
            let at_stop = leg < self.stops.len();
            let dwell = if at_stop {
                self.dwell_s
            } else {
                self.depot_dwell_s
            };
            if at_stop {
                pods.push(seconds.len() + (dwell / 2) as usize);
            }
            stand(to, dwell, &mut seconds);
        }
        if let Some(d) = &self.dead_zone
            && !(1..=self.stops.len() + 1).contains(&d.leg)
        {
            return Err(self.invalid(format!(
                "dead_zone.leg {} must be 1 to {}",
                d.leg,
                self.stops.len() + 1
            )));
        }
        Ok((seconds, pods))
    }

    /// The timeline of the whole drive, compressed to fit `budget_ms`.
    pub fn timeline(&self, budget_ms: u64, seed: Option<u64>) -> Result<Timeline, ScenarioError> {
        let (seconds, pods) = self.drive()?;
        let start_ms = 500.0;
        let available = (budget_ms as f64 - start_ms).max(0.0);
        let epoch_ms = (available / seconds.len() as f64).min(1000.0);
        if epoch_ms < MIN_EPOCH_MS {
            return Err(self.invalid(format!(
                "the drive takes {} s; it cannot be played in {} ms (at most {} epochs a second)",
                seconds.len(),
                budget_ms,
                1000.0 / MIN_EPOCH_MS
            )));
        }
        let at = |i: usize| (start_ms + i as f64 * epoch_ms).round() as u64;
        let mut rx = GpsReceiver::new(
            seed.unwrap_or(self.seed),
            (self.date[0], self.date[1], self.date[2]),
        );
        let mut chunks = Vec::with_capacity(seconds.len() + pods.len());
        let mut lost = 0;
        for (i, s) in seconds.iter().enumerate() {
            lost += usize::from(!s.fix);
            let bytes = rx.epoch(&FixState {
                utc_s: self.start_utc_s + i as u64,
                lat: s.lat,
                lon: s.lon,
                speed_mps: s.speed_mps,
                course_deg: s.course_deg,
                fix: s.fix,
            });
            chunks.push(Chunk {
                at_ms: at(i),
                act: Act::Bytes {
                    device: self.gps_device.clone(),
                    bytes,
                },
            });
        }
        let seed = seed.unwrap_or(self.seed);
        for (index, (stop, second)) in self.stops.iter().zip(&pods).enumerate() {
            chunks.push(Chunk {
                at_ms: at(*second),
                act: Act::PostEvent {
                    // The driver's signature pad and camera at this stop.
                    media: media::proof_of_delivery(seed, index as u64),
                    kind: "delivered".into(),
                    body: json!({
                        "priority": "must_deliver",
                        "detail": { "delivered": {
                            "received_by": stop.received_by,
                            "pieces": stop.pieces,
                            "signature_ref": format!("sig-{}.png", stop.order),
                        } },
                        "refs": { "order": stop.order, "stop": stop.place.name },
                    }),
                },
            });
        }
        let depot = |kind: &str| Signature {
            location: Some(self.depot.name.clone()),
            ..Signature::kind(kind)
        };
        let mut expected = vec![depot("departed")];
        for stop in &self.stops {
            for kind in ["arrived", "departed"] {
                expected.push(Signature {
                    stop: Some(stop.place.name.clone()),
                    ..Signature::kind(kind)
                });
            }
        }
        expected.push(depot("arrived"));
        let expected: Vec<Expected> = expected
            .into_iter()
            .map(|what| Expected::new(&self.name, &self.agent, what))
            .collect();
        let mut vehicle =
            stack::config::station("vehicle", StationKind::Vehicle, &[&self.gps_device])
                .map_err(|e| self.invalid(e.to_string()))?;
        vehicle.vehicle = Some(self.vehicle.clone());
        vehicle.hysteresis_m = self.hysteresis_m;
        vehicle.confirm_fixes = self.confirm_fixes;
        vehicle.geofences = std::iter::once((&self.depot, GeofenceRole::Depot))
            .chain(self.stops.iter().map(|s| (&s.place, GeofenceRole::Stop)))
            .map(|(place, role)| GeofenceConfig {
                name: place.name.clone(),
                role,
                lat: place.lat,
                lon: place.lon,
                radius_m: place.radius_m,
            })
            .collect();
        let description = format!(
            "{} s of driving ({} stops, {lost} s without fix) played at {:.0}x, {} geofence events and {} PODs expected",
            seconds.len(),
            self.stops.len(),
            1000.0 / epoch_ms,
            expected.len(),
            pods.len()
        );
        let mut t = Timeline {
            source: self.name.clone(),
            agent: self.agent.clone(),
            devices: vec![DeviceSpec {
                name: self.gps_device.clone(),
                kind: DeviceKind::Gps,
                protocol: Protocol::Nmea,
                toledo_checksum: false,
            }],
            stations: vec![vehicle],
            chunks,
            expected,
            posts: pods.len(),
            end_ms: 0,
            description,
        };
        t.finish();
        Ok(t)
    }
}
