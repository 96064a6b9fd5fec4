//! Decoding of the NMEA 0183 sentence types the agent uses.
//!
//! Field layouts follow gpsd's `www/NMEA.adoc`. Every field accessor treats a
//! missing field like an empty one, so short sentences from old receivers and
//! long ones from NMEA 4.1x receivers decode alike.

use core::fmt;

use heapless::Vec;

use super::NmeaError;

/// Most comma-separated fields looked at; later ones are ignored.
const MAX_FIELDS: usize = 48;

/// Knots to metres per second.
const KNOT_MPS: f64 = 0.514_444;

/// The two-letter talker ID (`GP`, `GN`, `GL`, `GA`, `GB`, `BD`, `QZ`, …).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Talker(pub [u8; 2]);

impl Talker {
    /// The talker as text.
    pub fn as_str(&self) -> &str {
        core::str::from_utf8(&self.0).unwrap_or("??")
    }
}

impl fmt::Debug for Talker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Talker({})", self.as_str())
    }
}

/// Sentence types this module decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SentenceKind {
    /// Recommended minimum data.
    Rmc,
    /// Fix data.
    Gga,
    /// Geographic position.
    Gll,
    /// Course and speed over ground.
    Vtg,
    /// DOP and active satellites.
    Gsa,
    /// GNSS fix data.
    Gns,
    /// Time and date.
    Zda,
}

/// UTC time of day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Time {
    /// Hour 0–23.
    pub hour: u8,
    /// Minute 0–59.
    pub minute: u8,
    /// Second 0–60 (leap second).
    pub second: u8,
    /// Milliseconds.
    pub millis: u16,
}

/// UTC calendar date.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Date {
    /// Four-digit year (two-digit years map to 1980–2079).
    pub year: u16,
    /// Month 1–12.
    pub month: u8,
    /// Day 1–31.
    pub day: u8,
}

/// Latitude and longitude in degrees (north and east positive).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Position {
    /// Latitude in degrees.
    pub lat: f64,
    /// Longitude in degrees.
    pub lon: f64,
}

/// FAA mode indicator (NMEA 2.3+).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaaMode {
    /// `A`: autonomous.
    Autonomous,
    /// `D`: differential.
    Differential,
    /// `E`: estimated (dead reckoning).
    Estimated,
    /// `F`: RTK float.
    RtkFloat,
    /// `M`: manual input.
    Manual,
    /// `N`: not valid.
    NotValid,
    /// `P`: precise.
    Precise,
    /// `R`: RTK integer.
    RtkInteger,
    /// `S`: simulator.
    Simulator,
    /// Any other letter (Quectel `C`, `U`, …).
    Other(u8),
}

impl FaaMode {
    fn from_byte(b: u8) -> FaaMode {
        match b {
            b'A' => FaaMode::Autonomous,
            b'D' => FaaMode::Differential,
            b'E' => FaaMode::Estimated,
            b'F' => FaaMode::RtkFloat,
            b'M' => FaaMode::Manual,
            b'N' => FaaMode::NotValid,
            b'P' => FaaMode::Precise,
            b'R' => FaaMode::RtkInteger,
            b'S' => FaaMode::Simulator,
            other => FaaMode::Other(other),
        }
    }

    /// Whether the mode stands for a usable fix.
    pub fn is_valid(self) -> bool {
        !matches!(self, FaaMode::NotValid)
    }
}

/// RMC: recommended minimum data.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rmc {
    /// Talker.
    pub talker: Talker,
    /// UTC time.
    pub time: Option<Time>,
    /// Status `A` (valid) or `V` (warning).
    pub valid: bool,
    /// Position.
    pub position: Option<Position>,
    /// Speed over ground in knots.
    pub speed_knots: Option<f64>,
    /// Course over ground, degrees true.
    pub course_deg: Option<f64>,
    /// UTC date.
    pub date: Option<Date>,
    /// FAA mode.
    pub mode: Option<FaaMode>,
}

/// GGA: fix data.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Gga {
    /// Talker.
    pub talker: Talker,
    /// UTC time.
    pub time: Option<Time>,
    /// Position.
    pub position: Option<Position>,
    /// Quality: 0 none, 1 GPS, 2 DGPS, 3 PPS, 4 RTK fixed, 5 RTK float, 6 dead reckoning, 7 manual, 8 simulation.
    pub quality: Option<u8>,
    /// Satellites used.
    pub satellites: Option<u8>,
    /// Horizontal dilution of precision.
    pub hdop: Option<f64>,
    /// Altitude above mean sea level in metres.
    pub altitude_m: Option<f64>,
}

/// GLL: geographic position.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Gll {
    /// Talker.
    pub talker: Talker,
    /// Position.
    pub position: Option<Position>,
    /// UTC time.
    pub time: Option<Time>,
    /// Status `A` (valid) or `V`.
    pub valid: bool,
    /// FAA mode.
    pub mode: Option<FaaMode>,
}

/// VTG: course and speed over ground.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Vtg {
    /// Talker.
    pub talker: Talker,
    /// Course over ground, degrees true.
    pub course_deg: Option<f64>,
    /// Speed in knots.
    pub speed_knots: Option<f64>,
    /// Speed in km/h.
    pub speed_kmh: Option<f64>,
    /// FAA mode.
    pub mode: Option<FaaMode>,
}

/// GSA: dilution of precision and satellites used (one per constellation on
/// multi-GNSS receivers).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Gsa {
    /// Talker.
    pub talker: Talker,
    /// Fix type: 1 none, 2 2D, 3 3D.
    pub fix_type: Option<u8>,
    /// Satellites listed as used.
    pub satellites_used: u8,
    /// Position DOP.
    pub pdop: Option<f64>,
    /// Horizontal DOP.
    pub hdop: Option<f64>,
    /// Vertical DOP.
    pub vdop: Option<f64>,
    /// NMEA 4.11 system ID (1 GPS, 2 GLONASS, 3 Galileo, 4 BeiDou, 5 QZSS, 6 NavIC).
    pub system_id: Option<u8>,
}

/// GNS: GNSS fix data.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Gns {
    /// Talker.
    pub talker: Talker,
    /// UTC time.
    pub time: Option<Time>,
    /// Position.
    pub position: Option<Position>,
    /// First mode letter that is not `N`, if any (one letter per constellation).
    pub mode: Option<FaaMode>,
    /// Satellites used.
    pub satellites: Option<u8>,
    /// Horizontal DOP.
    pub hdop: Option<f64>,
    /// Altitude above mean sea level in metres.
    pub altitude_m: Option<f64>,
}

/// ZDA: UTC time and date.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Zda {
    /// Talker.
    pub talker: Talker,
    /// UTC time.
    pub time: Option<Time>,
    /// UTC date.
    pub date: Option<Date>,
}

/// One decoded sentence.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sentence {
    /// RMC.
    Rmc(Rmc),
    /// GGA.
    Gga(Gga),
    /// GLL.
    Gll(Gll),
    /// VTG.
    Vtg(Vtg),
    /// GSA.
    Gsa(Gsa),
    /// GNS.
    Gns(Gns),
    /// ZDA.
    Zda(Zda),
    /// A proprietary sentence (`$P…`), skipped.
    Proprietary,
    /// A standard sentence of a type not decoded here (GSV, TXT, …), skipped.
    Unsupported {
        /// Talker.
        talker: Talker,
        /// The three-letter type.
        kind: [u8; 3],
    },
}

impl Sentence {
    /// The sentence's UTC time, when it carries one.
    pub fn time(&self) -> Option<Time> {
        match self {
            Sentence::Rmc(s) => s.time,
            Sentence::Gga(s) => s.time,
            Sentence::Gll(s) => s.time,
            Sentence::Gns(s) => s.time,
            Sentence::Zda(s) => s.time,
            _ => None,
        }
    }
}

/// The fields of one sentence with typed accessors.
struct Fields<'a> {
    kind: SentenceKind,
    parts: Vec<&'a str, MAX_FIELDS>,
}

impl<'a> Fields<'a> {
    fn new(kind: SentenceKind, rest: &'a str) -> Self {
        let mut parts = Vec::new();
        for part in rest.split(',') {
            if parts.push(part.trim()).is_err() {
                break;
            }
        }
        Fields { kind, parts }
    }

    fn raw(&self, i: usize) -> &'a str {
        self.parts.get(i).copied().unwrap_or_default()
    }

    fn bad(&self, i: usize, expected: &'static str) -> NmeaError {
        NmeaError::BadField {
            kind: self.kind,
            index: u8::try_from(i).unwrap_or(u8::MAX),
            expected,
        }
    }

    fn f64(&self, i: usize) -> Result<Option<f64>, NmeaError> {
        let raw = self.raw(i);
        if raw.is_empty() {
            return Ok(None);
        }
        match raw.parse::<f64>() {
            Ok(v)
                if v.is_finite()
                    && raw
                        .bytes()
                        .all(|b| b.is_ascii_digit() || b == b'.' || b == b'-' || b == b'+') =>
            {
                Ok(Some(v))
            }
            _ => Err(self.bad(i, "a decimal number")),
        }
    }

    fn u8(&self, i: usize) -> Result<Option<u8>, NmeaError> {
        let raw = self.raw(i);
        if raw.is_empty() {
            return Ok(None);
        }
        raw.parse::<u8>()
            .map(Some)
            .map_err(|_| self.bad(i, "a small whole number"))
    }

    fn letter(&self, i: usize) -> Option<u8> {
        self.raw(i).bytes().next()
    }

    fn mode(&self, i: usize) -> Option<FaaMode> {
        self.letter(i).map(FaaMode::from_byte)
    }

    fn time(&self, i: usize) -> Result<Option<Time>, NmeaError> {
        let raw = self.raw(i);
        if raw.is_empty() {
            return Ok(None);
        }
        let bad = || self.bad(i, "a time hhmmss[.sss]");
        let (whole, frac) = raw.split_once('.').unwrap_or((raw, ""));
        let b = whole.as_bytes();
        if b.len() != 6 || !frac.bytes().all(|c| c.is_ascii_digit()) {
            return Err(bad());
        }
        let hour = two_digits(b.get(0..2)).ok_or_else(bad)?;
        let minute = two_digits(b.get(2..4)).ok_or_else(bad)?;
        let second = two_digits(b.get(4..6)).ok_or_else(bad)?;
        if hour > 23 || minute > 59 || second > 60 {
            return Err(bad());
        }
        let mut millis: u16 = 0;
        let mut scale: u16 = 100;
        for d in frac.bytes().take(3) {
            millis += u16::from(d - b'0') * scale;
            scale /= 10;
        }
        Ok(Some(Time {
            hour,
            minute,
            second,
            millis,
        }))
    }

    /// `ddmmyy` date.
    fn date(&self, i: usize) -> Result<Option<Date>, NmeaError> {
        let raw = self.raw(i);
        if raw.is_empty() {
            return Ok(None);
        }
        let bad = || self.bad(i, "a date ddmmyy");
        let b = raw.as_bytes();
        if b.len() != 6 {
            return Err(bad());
        }
        let day = two_digits(b.get(0..2)).ok_or_else(bad)?;
        let month = two_digits(b.get(2..4)).ok_or_else(bad)?;
        let yy = two_digits(b.get(4..6)).ok_or_else(bad)?;
        let year = if yy < 80 { 2000 } else { 1900 } + u16::from(yy);
        checked_date(year, month, day).map(Some).ok_or_else(bad)
    }

    /// Latitude at `i`, its hemisphere at `i + 1`, longitude at `i + 2`, hemisphere at `i + 3`.
    fn position(&self, i: usize) -> Result<Option<Position>, NmeaError> {
        let lat = self.coordinate(i, 2, 90.0, b'N', b'S')?;
        let lon = self.coordinate(i + 2, 3, 180.0, b'E', b'W')?;
        Ok(lat.zip(lon).map(|(lat, lon)| Position { lat, lon }))
    }

    fn coordinate(
        &self,
        i: usize,
        degree_digits: usize,
        limit: f64,
        positive: u8,
        negative: u8,
    ) -> Result<Option<f64>, NmeaError> {
        let raw = self.raw(i);
        if raw.is_empty() {
            return Ok(None);
        }
        let bad = || self.bad(i, "a coordinate (d)ddmm.mmmm with its hemisphere");
        let whole = raw.split('.').next().unwrap_or_default();
        if whole.len() < degree_digits + 2 || whole.len() > degree_digits + 2 {
            return Err(bad());
        }
        let degrees: u16 = whole
            .get(..degree_digits)
            .and_then(|d| d.parse().ok())
            .ok_or_else(bad)?;
        let minutes: f64 = raw
            .get(degree_digits..)
            .filter(|m| m.bytes().all(|b| b.is_ascii_digit() || b == b'.'))
            .and_then(|m| m.parse().ok())
            .ok_or_else(bad)?;
        if minutes >= 60.0 {
            return Err(bad());
        }
        let value = f64::from(degrees) + minutes / 60.0;
        if value > limit {
            return Err(bad());
        }
        match self.letter(i + 1) {
            Some(h) if h == positive => Ok(Some(value)),
            Some(h) if h == negative => Ok(Some(-value)),
            _ => Err(self.bad(i + 1, "a hemisphere letter")),
        }
    }
}

fn two_digits(b: Option<&[u8]>) -> Option<u8> {
    match b? {
        [h @ b'0'..=b'9', l @ b'0'..=b'9'] => Some((h - b'0') * 10 + (l - b'0')),
        _ => None,
    }
}

fn checked_date(year: u16, month: u8, day: u8) -> Option<Date> {
    let leap = (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400);
    let days = match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        1..=12 => 31,
        _ => return None,
    };
    (1..=days)
        .contains(&day)
        .then_some(Date { year, month, day })
}

/// Decode the payload between `$` and `*`.
pub(super) fn decode(payload: &str) -> Result<Sentence, NmeaError> {
    let (address, rest) = payload.split_once(',').unwrap_or((payload, ""));
    let a = address.as_bytes();
    if a.first() == Some(&b'P') {
        return Ok(Sentence::Proprietary);
    }
    let (talker, kind) = match a {
        [t1, t2, k1, k2, k3] if a.iter().all(u8::is_ascii_alphanumeric) => {
            (Talker([*t1, *t2]), [*k1, *k2, *k3])
        }
        // Non-standard addresses (`$STI,…`, 6-letter query sentences, vendor
        // extensions) are other sentences, skipped like unknown types.
        [t1, t2, rest @ ..]
            if (1..=8).contains(&rest.len()) && a.iter().all(u8::is_ascii_alphanumeric) =>
        {
            let mut kind = [b'?'; 3];
            for (slot, b) in kind.iter_mut().zip(rest) {
                *slot = *b;
            }
            return Ok(Sentence::Unsupported {
                talker: Talker([*t1, *t2]),
                kind,
            });
        }
        _ => return Err(NmeaError::BadAddress),
    };
    let kind_of = match &kind {
        b"RMC" => SentenceKind::Rmc,
        b"GGA" => SentenceKind::Gga,
        b"GLL" => SentenceKind::Gll,
        b"VTG" => SentenceKind::Vtg,
        b"GSA" => SentenceKind::Gsa,
        b"GNS" => SentenceKind::Gns,
        b"ZDA" => SentenceKind::Zda,
        _ => return Ok(Sentence::Unsupported { talker, kind }),
    };
    let f = Fields::new(kind_of, rest);
    Ok(match kind_of {
        SentenceKind::Rmc => Sentence::Rmc(Rmc {
            talker,
            time: f.time(0)?,
            valid: f.letter(1) == Some(b'A'),
            position: f.position(2)?,
            speed_knots: f.f64(6)?,
            course_deg: f.f64(7)?,
            date: f.date(8)?,
            mode: f.mode(11),
        }),
        SentenceKind::Gga => Sentence::Gga(Gga {
            talker,
            time: f.time(0)?,
            position: f.position(1)?,
            quality: f.u8(5)?,
            satellites: f.u8(6)?,
            hdop: f.f64(7)?,
            altitude_m: f.f64(8)?,
        }),
        SentenceKind::Gll => Sentence::Gll(Gll {
            talker,
            position: f.position(0)?,
            time: f.time(4)?,
            valid: f.letter(5) == Some(b'A'),
            mode: f.mode(6),
        }),
        SentenceKind::Vtg => {
            // NMEA 2.x: `cog,T,cogm,M,knots,N,kmh,K[,mode]`; older receivers
            // omit the unit letters: `cog,cogm,knots,kmh`.
            if f.letter(1) == Some(b'T') || f.raw(1).is_empty() && f.raw(3) == "M" {
                Sentence::Vtg(Vtg {
                    talker,
                    course_deg: f.f64(0)?,
                    speed_knots: f.f64(4)?,
                    speed_kmh: f.f64(6)?,
                    mode: f.mode(8),
                })
            } else {
                Sentence::Vtg(Vtg {
                    talker,
                    course_deg: f.f64(0)?,
                    speed_knots: f.f64(2)?,
                    speed_kmh: f.f64(3)?,
                    mode: None,
                })
            }
        }
        SentenceKind::Gsa => {
            let used = (2..14).filter(|i| !f.raw(*i).is_empty()).count();
            Sentence::Gsa(Gsa {
                talker,
                fix_type: f.u8(1)?,
                satellites_used: u8::try_from(used).unwrap_or(u8::MAX),
                pdop: f.f64(14)?,
                hdop: f.f64(15)?,
                vdop: f.f64(16)?,
                system_id: f.u8(17).ok().flatten(),
            })
        }
        SentenceKind::Gns => Sentence::Gns(Gns {
            talker,
            time: f.time(0)?,
            position: f.position(1)?,
            mode: f
                .raw(5)
                .bytes()
                .map(FaaMode::from_byte)
                .find(|m| m.is_valid())
                .or_else(|| f.mode(5)),
            satellites: f.u8(6)?,
            hdop: f.f64(7)?,
            altitude_m: f.f64(8)?,
        }),
        SentenceKind::Zda => {
            let day = f.u8(1)?;
            let month = f.u8(2)?;
            let year = f.raw(3);
            let date = match (day, month, year.is_empty()) {
                (None, None, true) => None,
                (Some(d), Some(m), false) => {
                    let y: u16 = year.parse().map_err(|_| f.bad(3, "a four-digit year"))?;
                    Some(checked_date(y, m, d).ok_or(f.bad(1, "a valid day and month"))?)
                }
                _ => return Err(f.bad(1, "day, month and year together")),
            };
            Sentence::Zda(Zda {
                talker,
                time: f.time(0)?,
                date,
            })
        }
    })
}

/// Speed in m/s from knots.
pub(super) fn knots_to_mps(knots: f64) -> f64 {
    knots * KNOT_MPS
}

#[cfg(test)]
mod tests {
    use super::super::parse_sentence;
    use super::*;

    #[test]
    fn rmc_from_a_u_blox_m8() {
        let s = parse_sentence(
            b"$GNRMC,001031.00,A,4404.13993,N,12118.86023,W,0.146,,100117,,,A*7B\r\n",
        )
        .expect("valid");
        let Sentence::Rmc(rmc) = s else {
            panic!("not RMC: {s:?}")
        };
        assert_eq!(rmc.talker.as_str(), "GN");
        assert!(rmc.valid);
        assert_eq!(
            rmc.date,
            Some(Date {
                year: 2017,
                month: 1,
                day: 10
            })
        );
        let p = rmc.position.expect("position");
        assert!((p.lat - 44.068_998_833).abs() < 1e-6);
        assert!((p.lon + 121.314_337_167).abs() < 1e-6);
        assert_eq!(rmc.mode, Some(FaaMode::Autonomous));
    }

    #[test]
    fn gga_matches_gpsd() {
        let Ok(Sentence::Gga(gga)) = parse_sentence(
            b"$GNGGA,171926.00,4404.14063,N,12118.85478,W,1,12,0.91,1147.2,M,-21.3,M,,*44",
        ) else {
            panic!("not GGA")
        };
        let p = gga.position.expect("position");
        assert!((p.lat - 44.069_010_5).abs() < 1e-9);
        assert_eq!(gga.satellites, Some(12));
        assert_eq!(gga.hdop, Some(0.91));
    }

    #[test]
    fn empty_and_short_sentences_are_no_data() {
        let line = "GPRMC,,V,,,,,,,,,";
        let cs = super::super::checksum(line.as_bytes());
        let mut buf: heapless::String<64> = heapless::String::new();
        core::fmt::write(&mut buf, format_args!("${line}*{cs:02X}")).expect("fits");
        let Ok(Sentence::Rmc(rmc)) = parse_sentence(buf.as_bytes()) else {
            panic!("not RMC")
        };
        assert!(!rmc.valid);
        assert_eq!(rmc.position, None);
    }

    #[test]
    fn gsa_counts_used_satellites() {
        let Ok(Sentence::Gsa(gsa)) =
            parse_sentence(b"$GNGSA,A,3,01,11,31,14,22,32,04,25,03,,,,1.56,0.91,1.27*15")
        else {
            panic!("not GSA")
        };
        assert_eq!(gsa.fix_type, Some(3));
        assert_eq!(gsa.satellites_used, 9);
        assert_eq!(gsa.hdop, Some(0.91));
    }

    #[test]
    fn skips_proprietary_and_unsupported() {
        assert_eq!(
            parse_sentence(b"$PUBX,40,GLL,0,0,0,0*5C"),
            Ok(Sentence::Proprietary)
        );
        assert!(matches!(
            parse_sentence(b"$GPGSV,4,4,13,32,76,331,31*48"),
            Ok(Sentence::Unsupported { .. })
        ));
    }
}
