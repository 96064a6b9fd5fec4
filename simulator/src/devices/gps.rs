//! A GNSS receiver's bytes: one NMEA 0183 burst per second, shaped like a
//! u-blox M8 in its default message set.
//!
//! Per epoch, in this order: `$GNRMC`, `$GNVTG`, `$GNGGA`, one `$GNGSA` per
//! constellation (GPS, then GLONASS), `$GPGSV` and `$GLGSV` sentences for the
//! satellites in view, `$GNGLL`. Every sentence ends CR LF and carries the
//! XOR checksum (the firmware crate's, the same the agent verifies).
//!
//! Without a fix (a tunnel, a parking garage) the receiver keeps talking:
//! RMC and GLL say `V` with FAA mode `N` and empty position fields, GGA has
//! quality 0, GSA fix type 1, and the GSV sentences list satellites without
//! signal-to-noise values. Satellites in view, their elevations and SNRs
//! drift from a seeded random source: the GSV noise a real log has.
//!
//! Pure apart from the seeded random source.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use dockline_firmware::nmea::checksum;

/// What the receiver knows at one epoch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FixState {
    /// Seconds since the route's UTC midnight (may run past one day).
    pub utc_s: u64,
    /// Latitude, degrees north.
    pub lat: f64,
    /// Longitude, degrees east.
    pub lon: f64,
    /// Speed over ground, m/s.
    pub speed_mps: f64,
    /// Course over ground, degrees true.
    pub course_deg: f64,
    /// Whether the receiver has a fix.
    pub fix: bool,
}

/// One satellite in view.
#[derive(Debug, Clone, Copy)]
struct Satellite {
    prn: u16,
    elevation: u8,
    azimuth: u16,
    snr: u8,
}

/// A receiver with its constellations' satellites; see the module docs.
#[derive(Debug)]
pub struct GpsReceiver {
    rng: StdRng,
    /// UTC date of day 0: day, month, year (two digits).
    date: (u8, u8, u8),
    gps: Vec<Satellite>,
    glonass: Vec<Satellite>,
}

/// Knots per m/s.
const KNOTS_PER_MPS: f64 = 1.943_844_5;

impl GpsReceiver {
    /// A receiver whose satellites come from `seed`; `date` is (day, month,
    /// two-digit year) of the route's first day.
    pub fn new(seed: u64, date: (u8, u8, u8)) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let sky = |first: u16, count: usize, rng: &mut StdRng| -> Vec<Satellite> {
            let mut prns: Vec<u16> = (first..first + 24).collect();
            let mut out = Vec::new();
            for _ in 0..count {
                let i = rng.random_range(0..prns.len());
                out.push(Satellite {
                    prn: prns.swap_remove(i),
                    elevation: rng.random_range(5..85),
                    azimuth: rng.random_range(0..360),
                    snr: rng.random_range(18..46),
                });
            }
            out.sort_by_key(|s| s.prn);
            out
        };
        let gps = sky(1, 11, &mut rng);
        let glonass = sky(65, 7, &mut rng);
        GpsReceiver {
            rng,
            date,
            gps,
            glonass,
        }
    }

    /// The burst of one epoch.
    pub fn epoch(&mut self, fix: &FixState) -> Vec<u8> {
        self.drift();
        let time = utc(fix.utc_s);
        let date = self.date_of(fix.utc_s);
        let mut out = Vec::with_capacity(1024);
        let mut put = |body: String| {
            out.extend(format!("${body}*{:02X}\r\n", checksum(body.as_bytes())).bytes());
        };
        if fix.fix {
            let (lat, ns) = latitude(fix.lat);
            let (lon, ew) = longitude(fix.lon);
            let knots = fix.speed_mps * KNOTS_PER_MPS;
            let course = fix.course_deg.rem_euclid(360.0);
            let used_gps: Vec<u16> = self.used(true);
            let used_glo: Vec<u16> = self.used(false);
            let used = used_gps.len() + used_glo.len();
            let hdop = 0.6 + 6.0 / used.max(1) as f64;
            put(format!(
                "GNRMC,{time},A,{lat},{ns},{lon},{ew},{knots:.3},{course:.2},{date},,,A"
            ));
            put(format!(
                "GNVTG,{course:.2},T,,M,{knots:.3},N,{:.3},K,A",
                fix.speed_mps * 3.6
            ));
            put(format!(
                "GNGGA,{time},{lat},{ns},{lon},{ew},1,{used:02},{hdop:.2},{:.1},M,47.1,M,,",
                35.0 + self.rng.random_range(-1.5..1.5)
            ));
            for prns in [&used_gps, &used_glo] {
                let mut fields: Vec<String> = prns.iter().map(|p| format!("{p:02}")).collect();
                fields.resize(12, String::new());
                put(format!(
                    "GNGSA,A,3,{},{:.2},{hdop:.2},{:.2}",
                    fields.join(","),
                    hdop * 1.6,
                    hdop * 1.3
                ));
            }
        } else {
            put(format!("GNRMC,{time},V,,,,,,,{date},,,N"));
            put("GNVTG,,,,,,,,,N".into());
            put(format!("GNGGA,{time},,,,,0,00,99.99,,,,,,"));
            for _ in 0..2 {
                put("GNGSA,A,1,,,,,,,,,,,,,99.99,99.99,99.99".into());
            }
        }
        for (talker, sats) in [("GP", &self.gps), ("GL", &self.glonass)] {
            for body in gsv(talker, sats, fix.fix) {
                put(body);
            }
        }
        if fix.fix {
            let (lat, ns) = latitude(fix.lat);
            let (lon, ew) = longitude(fix.lon);
            put(format!("GNGLL,{lat},{ns},{lon},{ew},{time},A,A"));
        } else {
            put(format!("GNGLL,,,,,{time},V,N"));
        }
        out
    }

    /// Satellites used in the solution: those with a usable signal.
    fn used(&self, gps: bool) -> Vec<u16> {
        let sats = if gps { &self.gps } else { &self.glonass };
        sats.iter()
            .filter(|s| s.snr >= 22 && s.elevation >= 10)
            .map(|s| s.prn)
            .take(12)
            .collect()
    }

    /// Signals wander a little every second; elevations creep.
    fn drift(&mut self) {
        for s in self.gps.iter_mut().chain(self.glonass.iter_mut()) {
            let step: i16 = self.rng.random_range(-2..=2);
            s.snr = (i16::from(s.snr) + step).clamp(12, 50) as u8;
            if self.rng.random_bool(0.02) {
                let e: i16 = self.rng.random_range(-1..=1);
                s.elevation = (i16::from(s.elevation) + e).clamp(3, 89) as u8;
            }
        }
    }

    fn date_of(&self, utc_s: u64) -> String {
        let (d, m, y) = self.date;
        // Routes last hours, not months: a day past the start stays in its month
        // (the simulator picks start dates early in a month).
        let day = u64::from(d) + utc_s / 86_400;
        format!("{day:02}{m:02}{y:02}")
    }
}

/// `$xxGSV` bodies for `sats`, four per sentence; SNR empty without a fix.
fn gsv(talker: &str, sats: &[Satellite], fix: bool) -> Vec<String> {
    let total = sats.len().div_ceil(4).max(1);
    sats.chunks(4)
        .enumerate()
        .map(|(i, chunk)| {
            let mut body = format!("{talker}GSV,{total},{},{:02}", i + 1, sats.len());
            for s in chunk {
                let snr = if fix {
                    format!("{:02}", s.snr)
                } else {
                    String::new()
                };
                body.push_str(&format!(
                    ",{:02},{:02},{:03},{snr}",
                    s.prn, s.elevation, s.azimuth
                ));
            }
            body
        })
        .collect()
}

fn utc(utc_s: u64) -> String {
    let s = utc_s % 86_400;
    format!("{:02}{:02}{:02}.00", s / 3600, (s / 60) % 60, s % 60)
}

/// `ddmm.mmmmm` and the hemisphere.
fn latitude(lat: f64) -> (String, char) {
    let a = lat.abs();
    let deg = a.trunc();
    (
        format!("{:02}{:08.5}", deg as u32, (a - deg) * 60.0),
        if lat < 0.0 { 'S' } else { 'N' },
    )
}

/// `dddmm.mmmmm` and the hemisphere.
fn longitude(lon: f64) -> (String, char) {
    let a = lon.abs();
    let deg = a.trunc();
    (
        format!("{:03}{:08.5}", deg as u32, (a - deg) * 60.0),
        if lon < 0.0 { 'W' } else { 'E' },
    )
}

#[cfg(test)]
mod tests {
    use dockline_firmware::nmea::{EpochAssembler, Sentence, parse_sentence};

    use super::*;

    fn epochs(bytes: &[u8]) -> Vec<dockline_firmware::nmea::Epoch> {
        let mut asm = EpochAssembler::new();
        let mut out = Vec::new();
        for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            assert!(line.len() <= 83, "{}", String::from_utf8_lossy(line));
            let sentence = parse_sentence(line)
                .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(line)));
            out.extend(asm.push(&sentence));
        }
        out.extend(asm.flush());
        out
    }

    #[test]
    fn epochs_decode_to_the_intended_position_speed_and_time() {
        let mut rx = GpsReceiver::new(3, (2, 3, 26));
        let mut bytes = Vec::new();
        let states = [
            (53.349_8, -6.260_3, 0.0, 0.0),
            (53.344_012, -6.267_21, 12.5, 215.0),
            (-33.868_8, 151.209_3, 3.0, 359.9),
        ];
        for (i, (lat, lon, speed, course)) in states.iter().enumerate() {
            bytes.extend(rx.epoch(&FixState {
                utc_s: 8 * 3600 + i as u64,
                lat: *lat,
                lon: *lon,
                speed_mps: *speed,
                course_deg: *course,
                fix: true,
            }));
        }
        let got = epochs(&bytes);
        assert_eq!(got.len(), 3);
        for (e, (lat, lon, speed, course)) in got.iter().zip(states) {
            let p = e.position.expect("position");
            assert!(
                (p.lat - lat).abs() < 1e-6 && (p.lon - lon).abs() < 1e-6,
                "{p:?}"
            );
            assert!((e.speed_mps.unwrap_or(-1.0) - speed).abs() < 0.01);
            assert!((e.course_deg.unwrap_or(-1.0) - course).abs() < 0.01);
            assert_eq!(e.valid, Some(true));
            assert_eq!(e.fix_type, Some(3));
            assert!(e.satellites.unwrap_or(0) >= 4);
        }
        let t = got[1].time.expect("time");
        assert_eq!((t.hour, t.minute), (8, 0));
        assert_eq!(got[1].date.map(|d| (d.day, d.month)), Some((2, 3)));
    }

    #[test]
    fn a_tunnel_gives_epochs_without_a_fix() {
        let mut rx = GpsReceiver::new(9, (2, 3, 26));
        let bytes = rx.epoch(&FixState {
            utc_s: 100,
            lat: 53.0,
            lon: -6.0,
            speed_mps: 10.0,
            course_deg: 90.0,
            fix: false,
        });
        let got = epochs(&bytes);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].position, None);
        assert_eq!(got[0].valid, Some(false));
        assert_eq!(got[0].quality, Some(0));
        // The GSV noise is still there, from two talkers.
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            text.contains("$GPGSV,3,1,11,") && text.contains("$GLGSV,2,2,07,"),
            "{text}"
        );
        let gsv = text
            .lines()
            .filter(|l| l.contains("GSV"))
            .map(|l| parse_sentence(l.as_bytes()))
            .all(|s| matches!(s, Ok(Sentence::Unsupported { .. })));
        assert!(gsv);
    }
}
