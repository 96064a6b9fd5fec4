//! Circular geofences with a hysteresis band and a confirmation count, so a
//! receiver jittering at the boundary does not flap between inside and
//! outside.
//!
//! A fix is *inside* within `radius_m` of the centre, *outside* beyond
//! `radius_m + hysteresis_m`, and in the band between it says nothing. The
//! fence's state changes after `confirm` consecutive fixes on the other side;
//! a fix on the current side, or a fix in the band, resets or pauses the
//! count respectively.

/// Mean Earth radius, metres (IUGG).
const EARTH_RADIUS_M: f64 = 6_371_008.8;

/// Great-circle distance between two points in degrees, metres (haversine).
pub fn distance_m(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
    let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
    let dp = p2 - p1;
    let dl = (lon2 - lon1).to_radians();
    let a = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_M * a.sqrt().min(1.0).asin()
}

/// A crossing the fence confirmed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Crossing {
    /// From outside to inside.
    Entered,
    /// From inside to outside.
    Left,
}

/// One fence's state.
#[derive(Debug, Clone, PartialEq)]
pub struct Fence {
    lat: f64,
    lon: f64,
    radius_m: f64,
    hysteresis_m: f64,
    confirm: u32,
    /// `None` until the first side is confirmed.
    inside: Option<bool>,
    /// The side the last fixes were on, if not the current one, and how many.
    candidate: Option<(bool, u32)>,
}

impl Fence {
    /// A fence whose state is not known yet.
    pub fn new(lat: f64, lon: f64, radius_m: f64, hysteresis_m: f64, confirm: u32) -> Self {
        Fence {
            lat,
            lon,
            radius_m,
            hysteresis_m,
            confirm: confirm.max(1),
            inside: None,
            candidate: None,
        }
    }

    /// Whether the vehicle is inside, once known.
    pub fn inside(&self) -> Option<bool> {
        self.inside
    }

    /// Takes one fix; a crossing when it confirms one. Establishing the first
    /// state is not a crossing.
    pub fn observe(&mut self, lat: f64, lon: f64) -> Option<Crossing> {
        let d = distance_m(self.lat, self.lon, lat, lon);
        let side = if d <= self.radius_m {
            true
        } else if d > self.radius_m + self.hysteresis_m {
            false
        } else {
            return None; // in the band: neither side
        };
        if self.inside == Some(side) {
            self.candidate = None;
            return None;
        }
        let count = match self.candidate {
            Some((s, n)) if s == side => n + 1,
            _ => 1,
        };
        if count < self.confirm {
            self.candidate = Some((side, count));
            return None;
        }
        self.candidate = None;
        let before = self.inside.replace(side);
        before.map(|_| {
            if side {
                Crossing::Entered
            } else {
                Crossing::Left
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Metres north of the centre as a latitude (1° ≈ 111.2 km).
    fn north(m: f64) -> f64 {
        50.0 + m / 111_195.0
    }

    #[test]
    fn distance_is_haversine() {
        // One degree of latitude along a meridian.
        let d = distance_m(0.0, 0.0, 1.0, 0.0);
        assert!((d - 111_195.0).abs() < 1.0, "{d}");
        assert_eq!(distance_m(50.0, 8.0, 50.0, 8.0), 0.0);
    }

    #[test]
    fn fence_table() {
        // Fence: radius 100 m, band 30 m, 3 fixes to confirm. Distances in metres.
        // (what, distances from the centre, crossings)
        type Case<'a> = (&'a str, &'a [f64], &'a [Option<Crossing>]);
        let cases: &[Case] = &[
            (
                "first state is established silently",
                &[10.0, 10.0, 10.0],
                &[None, None, None],
            ),
            (
                "leaving needs three fixes beyond the band",
                &[10.0, 10.0, 10.0, 200.0, 200.0, 200.0],
                &[None, None, None, None, None, Some(Crossing::Left)],
            ),
            (
                "jitter across the radius never leaves the band",
                &[
                    10.0, 10.0, 10.0, 99.0, 101.0, 125.0, 95.0, 129.0, 101.0, 99.0,
                ],
                &[None; 10],
            ),
            (
                "one stray fix outside is forgiven",
                &[10.0, 10.0, 10.0, 300.0, 300.0, 10.0, 300.0, 300.0],
                &[None; 8],
            ),
            (
                "arriving after being outside",
                &[500.0, 500.0, 500.0, 50.0, 115.0, 50.0, 50.0],
                &[None, None, None, None, None, None, Some(Crossing::Entered)],
            ),
        ];
        for (name, distances, want) in cases {
            let mut fence = Fence::new(50.0, 8.0, 100.0, 30.0, 3);
            let got: Vec<_> = distances
                .iter()
                .map(|d| fence.observe(north(*d), 8.0))
                .collect();
            assert_eq!(&got, want, "{name}");
        }
    }
}
