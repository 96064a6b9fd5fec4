//! Merging the sentences of one receiver cycle into one position.
//!
//! A receiver sends a burst per fix cycle (u-blox: RMC, VTG, GGA, GSA…, GSV…,
//! GLL). Sentences that carry a UTC time (RMC, GGA, GLL, GNS, ZDA) say which
//! cycle they belong to; VTG and GSA carry none and belong to the cycle in
//! progress. When a timed sentence arrives with a different time, the cycle in
//! progress is complete and is returned. [`EpochAssembler::flush`] returns the
//! last one when the stream ends. The assembler holds no buffers: it is a
//! fixed-size struct updated in place.

#[cfg(feature = "protocol")]
use dockline_protocol::{Fix, FixMode};

use super::sentence::{Date, Position, Sentence, Time, knots_to_mps};

/// Everything learnt about one fix cycle.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Epoch {
    /// UTC time of the cycle.
    pub time: Option<Time>,
    /// UTC date (RMC or ZDA).
    pub date: Option<Date>,
    /// Position.
    pub position: Option<Position>,
    /// Speed over ground in m/s.
    pub speed_mps: Option<f64>,
    /// Course over ground in degrees true.
    pub course_deg: Option<f64>,
    /// Validity from RMC/GLL status or a mode indicator; `false` wins.
    pub valid: Option<bool>,
    /// GGA fix quality.
    pub quality: Option<u8>,
    /// Best GSA fix type (1 none, 2 2D, 3 3D).
    pub fix_type: Option<u8>,
    /// Satellites used (GGA/GNS, else the sum over GSA sentences).
    pub satellites: Option<u8>,
    /// Horizontal DOP (GGA/GNS, else GSA).
    pub hdop: Option<f64>,
    /// Altitude above mean sea level in metres.
    pub altitude_m: Option<f64>,
    gsa_satellites: u8,
    gsa_hdop: Option<f64>,
    /// A GGA or GNS with a position was seen: its altitude field decides 2D/3D.
    height_reported: bool,
    sentences: u8,
}

impl Epoch {
    fn merge(&mut self, sentence: &Sentence) {
        self.sentences = self.sentences.saturating_add(1);
        if let Some(t) = sentence.time() {
            self.time = Some(t);
        }
        match sentence {
            Sentence::Rmc(s) => {
                self.position = s.position.or(self.position);
                self.speed_mps = s.speed_knots.map(knots_to_mps).or(self.speed_mps);
                self.course_deg = s.course_deg.or(self.course_deg);
                self.date = s.date.or(self.date);
                self.set_valid(s.valid && s.mode.is_none_or(|m| m.is_valid()));
            }
            Sentence::Gga(s) => {
                self.height_reported |= s.position.is_some();
                self.position = s.position.or(self.position);
                self.quality = s.quality.or(self.quality);
                self.satellites = s.satellites.or(self.satellites);
                self.hdop = s.hdop.or(self.hdop);
                self.altitude_m = s.altitude_m.or(self.altitude_m);
            }
            Sentence::Gll(s) => {
                self.position = self.position.or(s.position);
                self.set_valid(s.valid && s.mode.is_none_or(|m| m.is_valid()));
            }
            Sentence::Vtg(s) => {
                let speed = s
                    .speed_knots
                    .map(knots_to_mps)
                    .or(s.speed_kmh.map(|k| k / 3.6));
                self.speed_mps = self.speed_mps.or(speed);
                self.course_deg = self.course_deg.or(s.course_deg);
            }
            Sentence::Gsa(s) => {
                self.fix_type = self.fix_type.max(s.fix_type);
                self.gsa_satellites = self.gsa_satellites.saturating_add(s.satellites_used);
                self.gsa_hdop = self.gsa_hdop.or(s.hdop);
            }
            Sentence::Gns(s) => {
                self.height_reported |= s.position.is_some();
                self.position = s.position.or(self.position);
                self.satellites = s.satellites.or(self.satellites);
                self.hdop = s.hdop.or(self.hdop);
                self.altitude_m = s.altitude_m.or(self.altitude_m);
                if let Some(m) = s.mode {
                    self.set_valid(m.is_valid());
                }
            }
            Sentence::Zda(s) => self.date = s.date.or(self.date),
            Sentence::Proprietary | Sentence::Unsupported { .. } => {}
        }
    }

    fn set_valid(&mut self, valid: bool) {
        self.valid = Some(self.valid.unwrap_or(true) && valid);
    }

    /// How the receiver rates the fix, as gpsd derives it where the
    /// standard leaves room, and as the standard says where gpsd does not
    /// follow it:
    ///
    /// 1. No fix when any sentence of the cycle says so: GGA quality 0, RMC
    ///    or GLL status `V`, an FAA or GNS mode `N`, or every GSA of the
    ///    cycle (one per constellation on multi-GNSS receivers) fix type 1.
    ///    (gpsd 3.22 reports a GGA position with quality 0 as a 2D/3D fix;
    ///    we side with NMEA 0183, which calls it invalid.)
    /// 2. Otherwise, when a GGA or GNS gave a position, its altitude field
    ///    decides: present 3D, empty 2D (gpsd's rule, whatever the GSA says).
    /// 3. Otherwise the best GSA fix type over all constellations, else 2D.
    #[cfg(feature = "protocol")]
    pub fn fix_mode(&self) -> FixMode {
        let invalid =
            self.valid == Some(false) || self.quality == Some(0) || self.fix_type == Some(1);
        if invalid {
            FixMode::NoFix
        } else if self.height_reported {
            if self.altitude_m.is_some() {
                FixMode::Fix3d
            } else {
                FixMode::Fix2d
            }
        } else {
            match self.fix_type {
                Some(3) => FixMode::Fix3d,
                _ => FixMode::Fix2d,
            }
        }
    }

    /// The wire-contract position, when the cycle had one.
    #[cfg(feature = "protocol")]
    #[allow(clippy::cast_possible_truncation)] // speeds, courses and DOPs fit f32 easily
    pub fn to_fix(&self) -> Option<Fix> {
        let position = self.position?;
        let satellites = self
            .satellites
            .or((self.gsa_satellites > 0).then_some(self.gsa_satellites));
        Some(Fix {
            lat: position.lat,
            lon: position.lon,
            speed_mps: self.speed_mps.map(|v| v as f32),
            course_deg: self.course_deg.map(|v| v as f32),
            mode: self.fix_mode(),
            satellites,
            hdop: self.hdop.or(self.gsa_hdop).map(|v| v as f32),
        })
    }
}

/// Groups sentences into [`Epoch`]s.
#[derive(Debug, Clone, Copy, Default)]
pub struct EpochAssembler {
    current: Epoch,
}

impl EpochAssembler {
    /// An assembler with no cycle in progress.
    pub fn new() -> Self {
        EpochAssembler::default()
    }

    /// Add one sentence; returns the previous cycle when this one starts a new cycle.
    pub fn push(&mut self, sentence: &Sentence) -> Option<Epoch> {
        if matches!(
            sentence,
            Sentence::Proprietary | Sentence::Unsupported { .. }
        ) {
            return None;
        }
        let completed = match (sentence.time(), self.current.time) {
            (Some(new), Some(old)) if new != old => self.flush(),
            _ => None,
        };
        self.current.merge(sentence);
        completed
    }

    /// End the cycle in progress and return it, if it holds anything.
    pub fn flush(&mut self) -> Option<Epoch> {
        let done = core::mem::take(&mut self.current);
        (done.sentences > 0).then_some(done)
    }
}

#[cfg(all(test, feature = "protocol"))]
mod tests {
    use super::super::parse_sentence;
    use super::*;

    const CYCLES: &[&str] = &[
        "$GNRMC,001031.00,A,4404.13993,N,12118.86023,W,0.146,,100117,,,A*7B",
        "$GNVTG,,T,,M,0.117,N,0.216,K,A*3F",
        "$GNGSA,A,3,01,11,31,14,22,32,04,25,03,,,,1.56,0.91,1.27*15",
        "$GPGSV,4,4,13,32,76,331,31*48",
        "$GNGGA,171926.00,4404.14063,N,12118.85478,W,1,12,0.91,1147.2,M,-21.3,M,,*44",
        "$GNGLL,4404.14066,N,12118.85481,W,171925.00,A,A*66",
    ];

    #[test]
    fn one_fix_per_time() {
        let mut asm = EpochAssembler::new();
        let mut epochs = std::vec::Vec::new();
        for line in CYCLES {
            let s = parse_sentence(line.as_bytes()).expect("valid");
            epochs.extend(asm.push(&s));
        }
        epochs.extend(asm.flush());
        // Three distinct times: 00:10:31, 17:19:26, 17:19:25.
        assert_eq!(epochs.len(), 3);
        let first = epochs[0].to_fix().expect("position");
        assert_eq!(first.mode, FixMode::Fix3d);
        assert_eq!(first.satellites, Some(9));
        assert!((f64::from(first.speed_mps.expect("speed")) - 0.146 * 0.514_444).abs() < 1e-4);
        assert_eq!(first.hdop, Some(0.91));
        let second = epochs[1].to_fix().expect("position");
        assert_eq!(second.satellites, Some(12));
        assert_eq!(second.mode, FixMode::Fix3d);
    }

    fn mode_of(lines: &[&str]) -> Option<FixMode> {
        let mut asm = EpochAssembler::new();
        for line in lines {
            let s = parse_sentence(line.as_bytes()).expect("valid");
            assert_eq!(asm.push(&s), None);
        }
        asm.flush().and_then(|e| e.to_fix()).map(|f| f.mode)
    }

    fn sentence(body: &str) -> std::string::String {
        std::format!("${body}*{:02X}", super::super::checksum(body.as_bytes()))
    }

    #[test]
    fn mode_follows_gga_altitude_then_gsa_over_all_constellations() {
        let rmc = sentence("GNRMC,120000.00,A,5321.6802,N,00630.3372,W,0.02,31.66,140325,,,A");
        let gga_alt =
            sentence("GNGGA,120000.00,5321.6802,N,00630.3372,W,1,08,1.03,61.7,M,55.2,M,,");
        let gga_no_alt = sentence("GNGGA,120000.00,5321.6802,N,00630.3372,W,1,08,1.03,,M,,M,,");
        let gga_q0 = sentence("GNGGA,120000.00,5321.6802,N,00630.3372,W,0,08,1.03,61.7,M,55.2,M,,");
        let gsa = |fix: u8, system: u8| {
            sentence(&std::format!(
                "GNGSA,A,{fix},10,07,05,02,,,,,,,,,1.72,1.03,1.38,{system}"
            ))
        };
        assert_eq!(mode_of(&[&rmc, &gga_alt]), Some(FixMode::Fix3d));
        assert_eq!(
            mode_of(&[&rmc, &gga_no_alt, &gsa(3, 1)]),
            Some(FixMode::Fix2d)
        );
        assert_eq!(mode_of(&[&rmc, &gga_q0]), Some(FixMode::NoFix));
        // One constellation without a fix does not undo the other's 3D fix.
        assert_eq!(
            mode_of(&[&rmc, &gsa(1, 2), &gsa(3, 1)]),
            Some(FixMode::Fix3d)
        );
        assert_eq!(
            mode_of(&[&rmc, &gsa(1, 1), &gsa(1, 2)]),
            Some(FixMode::NoFix)
        );
        assert_eq!(mode_of(&[&rmc, &gsa(2, 1)]), Some(FixMode::Fix2d));
        assert_eq!(mode_of(&[&rmc]), Some(FixMode::Fix2d));
    }

    #[test]
    fn warning_status_means_no_fix() {
        let mut asm = EpochAssembler::new();
        let s = parse_sentence(b"$GNGLL,4404.14066,N,12118.85481,W,171925.00,V,N*7E");
        let s = s.expect("valid");
        assert_eq!(asm.push(&s), None);
        let fix = asm.flush().and_then(|e| e.to_fix()).expect("position");
        assert_eq!(fix.mode, FixMode::NoFix);
    }
}
