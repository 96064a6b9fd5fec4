//! The vehicle's rules (see the [module docs](super)): positions crossing
//! the depot's and the stops' geofences become `departed` and `arrived`.

use dockline_protocol::{BusinessEvent, EventDetail, Fix, References};

use super::config::{GeofenceConfig, GeofenceRole};
use super::geofence::{Crossing, Fence};
use super::{Observation, Output};

/// A vehicle's state: one fence per configured geofence.
#[derive(Debug, Clone)]
pub struct VehicleStation {
    vehicle: String,
    fences: Vec<(GeofenceConfig, Fence)>,
}

impl VehicleStation {
    /// A vehicle with its fences; see [`Fence`] for `hysteresis_m` and `confirm`.
    pub fn new(
        vehicle: String,
        geofences: &[GeofenceConfig],
        hysteresis_m: f64,
        confirm: u32,
    ) -> Self {
        let fences = geofences
            .iter()
            .map(|g| {
                let fence = Fence::new(g.lat, g.lon, g.radius_m, hysteresis_m, confirm);
                (g.clone(), fence)
            })
            .collect();
        VehicleStation { vehicle, fences }
    }

    /// Where the vehicle is, for the status.
    pub fn describe(&self) -> String {
        let inside: Vec<&str> = self
            .fences
            .iter()
            .filter(|(_, f)| f.inside() == Some(true))
            .map(|(g, _)| g.name.as_str())
            .collect();
        if inside.is_empty() {
            format!("{} on the road", self.vehicle)
        } else {
            format!("{} at {}", self.vehicle, inside.join(", "))
        }
    }

    /// Applies one observation.
    pub fn observe(&mut self, obs: &Observation) -> Vec<Output> {
        let Observation::Position(fix) = obs else {
            return vec![];
        };
        let mut out = Vec::new();
        for (geofence, fence) in &mut self.fences {
            if let Some(crossing) = fence.observe(fix.lat, fix.lon) {
                out.push(Output::Event(crossing_event(
                    &self.vehicle,
                    geofence,
                    crossing,
                    *fix,
                )));
            }
        }
        out
    }
}

fn crossing_event(
    vehicle: &str,
    geofence: &GeofenceConfig,
    crossing: Crossing,
    fix: Fix,
) -> BusinessEvent {
    let vehicle = vehicle.to_owned();
    let position = Some(fix);
    let detail = match crossing {
        Crossing::Entered => EventDetail::Arrived { vehicle, position },
        Crossing::Left => EventDetail::Departed { vehicle, position },
    };
    let mut refs = References::default();
    match geofence.role {
        GeofenceRole::Depot => refs.location = Some(geofence.name.clone()),
        GeofenceRole::Stop => refs.stop = Some(geofence.name.clone()),
    }
    BusinessEvent { detail, refs }
}

#[cfg(test)]
mod tests {
    use dockline_protocol::FixMode;

    use super::*;

    fn fix(lat: f64, lon: f64) -> Observation {
        Observation::Position(Fix {
            lat,
            lon,
            speed_mps: None,
            course_deg: None,
            mode: FixMode::Fix3d,
            satellites: Some(8),
            hdop: Some(0.9),
        })
    }

    #[test]
    fn a_route_from_the_depot_to_a_stop() {
        let fences = [
            GeofenceConfig {
                name: "DEPOT-N".into(),
                role: GeofenceRole::Depot,
                lat: 50.0,
                lon: 8.0,
                radius_m: 150.0,
            },
            GeofenceConfig {
                name: "STOP-1".into(),
                role: GeofenceRole::Stop,
                lat: 50.1,
                lon: 8.0,
                radius_m: 80.0,
            },
        ];
        let mut truck = VehicleStation::new("TRUCK-7".into(), &fences, 30.0, 2);
        // At the depot, jitter at its edge, out on the road, at the stop.
        let route = [
            (50.0, 8.0),
            (50.0, 8.0),
            (50.001_4, 8.0), // ≈ 156 m: in the band
            (50.001_2, 8.0),
            (50.01, 8.0),
            (50.02, 8.0),
            (50.1, 8.0),
            (50.100_1, 8.0),
        ];
        let events: Vec<String> = route
            .iter()
            .flat_map(|(lat, lon)| truck.observe(&fix(*lat, *lon)))
            .filter_map(|o| o.event().cloned())
            .map(|e| {
                let place = e.refs.location.or(e.refs.stop).unwrap_or_default();
                format!("{} {place}", e.detail.kind_name())
            })
            .collect();
        assert_eq!(events, ["departed DEPOT-N", "arrived STOP-1"]);
        assert_eq!(truck.describe(), "TRUCK-7 at STOP-1");
    }
}
