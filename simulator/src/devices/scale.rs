//! A weighing scale's bytes: Mettler Toledo MT-SICS responses and the Toledo
//! continuous stream, from a small model of what is on the platter.
//!
//! # The model
//!
//! [`ScaleModel`] holds the gross load, the tare and the time the last load
//! change settles. Between a change and its settling the display moves from
//! the old to the new weight with a damped wobble and the scale flags motion;
//! after it, the weight is stable. The tare is the gross load when
//! [`ScaleModel::tare`] is called; every weight sent is net (gross − tare).
//! Loads above the capacity, and [`ScaleModel::overload`] for a while (someone
//! leaning on the platter), read as overload.
//!
//! # On the wire
//!
//! - **MT-SICS**, in send-on-change mode (as after `SR`): a `S D` line per
//!   period while in motion, then one `S S` line when the new weight is
//!   stable, then nothing until the next change; `S +` once per overload; a
//!   tare answers `T S <tare> kg`. The weight field is the manual's
//!   10 characters, right-aligned, 3 decimals.
//! - **Toledo continuous**: one 17-byte frame (`STX SWA SWB SWC` + 6 digits
//!   weight + 6 digits tare + CR, optionally a checksum byte) every period,
//!   kg with 3 decimals (decimal code 5), motion in SWB bit 3, net in bit 0,
//!   negative in bit 1, out of range in bit 2.
//!
//! Pure: time is milliseconds on the scenario's clock, passed in.

use serde::Deserialize;

/// The byte protocol of a virtual scale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScaleProtocol {
    /// MT-SICS lines, sent on weight change.
    Mtsics,
    /// Toledo continuous frames.
    Toledo,
}

impl ScaleProtocol {
    /// The agent's `[[devices]] protocol` name.
    pub fn agent_protocol(self) -> dockline_agent::devices::Protocol {
        match self {
            ScaleProtocol::Mtsics => dockline_agent::devices::Protocol::Mtsics,
            ScaleProtocol::Toledo => dockline_agent::devices::Protocol::Toledo,
        }
    }
}

/// The Toledo checksum: two's complement of the 7-bit sum of every byte
/// from STX to CR. (The firmware crate keeps its own private to its decoder;
/// the tests here check that the two agree.)
fn toledo_checksum(bytes: &[u8]) -> u8 {
    let sum = bytes.iter().fold(0u8, |acc, b| acc.wrapping_add(b & 0x7F));
    sum.wrapping_neg() & 0x7F
}

/// Largest weight the 6-digit Toledo field holds at 3 decimals, kg.
const TOLEDO_MAX_KG: f64 = 999.999;

/// An MT-SICS weight line, `S S     12.345 kg` (stable) or `S D` (motion).
pub fn mtsics_weight(kg: f64, stable: bool) -> Vec<u8> {
    let status = if stable { 'S' } else { 'D' };
    format!("S {status} {:>10} kg\r\n", format!("{kg:.3}")).into_bytes()
}

/// The MT-SICS answer to a tare command: `T S      0.850 kg`.
pub fn mtsics_tare(kg: f64) -> Vec<u8> {
    format!("T S {:>10} kg\r\n", format!("{kg:.3}")).into_bytes()
}

/// The MT-SICS overload line.
pub const MTSICS_OVERLOAD: &[u8] = b"S +\r\n";

/// One Toledo continuous frame; 18 bytes with `checksum`, else 17.
pub fn toledo_frame(
    net_kg: f64,
    tare_kg: f64,
    motion: bool,
    overload: bool,
    checksum: bool,
) -> Vec<u8> {
    let digits = |kg: f64| -> u32 {
        // Rounded and clamped to the 6-digit field first, so the cast is exact.
        (kg.abs().min(TOLEDO_MAX_KG) * 1000.0).round() as u32
    };
    // SWA: bit 5 set, increment x1 (bits 3-4 = 01), decimal code 5 (XXX.XXX).
    let swa = 0x20 | 0x08 | 5;
    let mut swb = 0x20 | 0x10; // kg
    if tare_kg > 0.0 {
        swb |= 0x01;
    }
    if net_kg < 0.0 {
        swb |= 0x02;
    }
    if overload || net_kg.abs() > TOLEDO_MAX_KG {
        swb |= 0x04;
    }
    if motion {
        swb |= 0x08;
    }
    let swc = 0x20;
    let mut frame = vec![0x02, swa, swb, swc];
    frame.extend(format!("{:06}{:06}", digits(net_kg), digits(tare_kg)).bytes());
    frame.push(0x0D);
    if checksum {
        frame.push(toledo_checksum(&frame));
    }
    frame
}

/// A scale and what is on it; see the module docs.
#[derive(Debug, Clone)]
pub struct ScaleModel {
    protocol: ScaleProtocol,
    toledo_checksum: bool,
    capacity_kg: f64,
    period_ms: u64,
    /// Gross load before the last change, and after it.
    from_kg: f64,
    gross_kg: f64,
    tare_kg: f64,
    change_at: u64,
    settle_at: u64,
    overload_from: u64,
    overload_until: u64,
    /// MT-SICS: the stable net weight last sent, so it is sent once.
    sent_stable: Option<f64>,
    /// MT-SICS: the overload line was sent for the current overload.
    sent_overload: bool,
    next_frame_at: u64,
    /// One-shot lines (tare answers) to send at the next poll.
    pending: Vec<u8>,
}

impl ScaleModel {
    /// An empty scale of `capacity_kg` that sends every `period_ms`.
    pub fn new(protocol: ScaleProtocol, capacity_kg: f64, period_ms: u64) -> Self {
        ScaleModel {
            protocol,
            toledo_checksum: false,
            capacity_kg,
            period_ms: period_ms.max(10),
            from_kg: 0.0,
            gross_kg: 0.0,
            tare_kg: 0.0,
            change_at: 0,
            settle_at: 0,
            overload_from: 0,
            overload_until: 0,
            sent_stable: None,
            sent_overload: false,
            next_frame_at: 0,
            pending: Vec::new(),
        }
    }

    /// Toledo: append the checksum byte to each frame.
    pub fn with_toledo_checksum(mut self, on: bool) -> Self {
        self.toledo_checksum = on;
        self
    }

    /// The protocol.
    pub fn protocol(&self) -> ScaleProtocol {
        self.protocol
    }

    /// The load changes to `gross_kg` at `now`, settling `settle_ms` later.
    pub fn place(&mut self, now: u64, gross_kg: f64, settle_ms: u64) {
        self.from_kg = self.displayed_gross(now);
        self.gross_kg = gross_kg;
        self.change_at = now;
        self.settle_at = now + settle_ms;
    }

    /// Adds `kg` to the load (an item put down), settling `settle_ms` later.
    pub fn add(&mut self, now: u64, kg: f64, settle_ms: u64) {
        let total = self.gross_kg + kg;
        self.place(now, total, settle_ms);
    }

    /// The settled gross load, kg.
    pub fn gross(&self) -> f64 {
        self.gross_kg
    }

    /// The tare key: the current gross load becomes the tare.
    pub fn tare(&mut self) {
        self.tare_kg = self.gross_kg;
        if self.protocol == ScaleProtocol::Mtsics {
            self.pending.extend(mtsics_tare(self.tare_kg));
            self.sent_stable = None;
        }
    }

    /// Clears the tare.
    pub fn clear_tare(&mut self) {
        self.tare_kg = 0.0;
        self.sent_stable = None;
    }

    /// Overloaded from `now` for `ms`.
    pub fn overload(&mut self, now: u64, ms: u64) {
        self.overload_from = now;
        self.overload_until = now + ms;
        self.sent_overload = false;
    }

    /// The net weight the scale will show once settled, rounded to its
    /// resolution (1 g).
    pub fn settled_net(&self) -> f64 {
        round_g(self.gross_kg - self.tare_kg)
    }

    fn displayed_gross(&self, now: u64) -> f64 {
        if now >= self.settle_at || self.settle_at == self.change_at {
            return self.gross_kg;
        }
        let span = (self.settle_at - self.change_at) as f64;
        let t = (now.saturating_sub(self.change_at)) as f64 / span;
        let delta = self.gross_kg - self.from_kg;
        // Overshoot and damped oscillation around the new load.
        let wobble = 0.15 * delta * (1.0 - t) * (t * 18.0).sin();
        self.from_kg + delta * t.min(1.0).sqrt() + wobble
    }

    fn overloaded(&self, now: u64) -> bool {
        (self.overload_from..self.overload_until).contains(&now)
            || self.gross_kg - self.tare_kg > self.capacity_kg
    }

    /// MT-SICS request/response: the answer to one command line (`SI`, `S`,
    /// `T`, `TA`, `TAC`, `Z`, `@`; CR LF optional) at `now`, as a level-1
    /// balance gives it. A weight command during motion answers `S D` (`SI`)
    /// or `S I` (`S`, no stable weight in time); a tare or zero during motion
    /// answers `T I` / `Z I`; over capacity `S +`; an unknown command `ES`.
    pub fn answer(&mut self, now: u64, command: &[u8]) -> Vec<u8> {
        let command = command.trim_ascii();
        let motion = now < self.settle_at;
        let overload = self.overloaded(now);
        let net = round_g(self.displayed_gross(now) - self.tare_kg);
        let line = |text: String| format!("{text}\r\n").into_bytes();
        match command {
            b"SI" | b"S" if overload => MTSICS_OVERLOAD.to_vec(),
            b"SI" => mtsics_weight(net, !motion),
            b"S" if motion => line("S I".into()),
            b"S" => mtsics_weight(net, true),
            b"T" if motion => line("T I".into()),
            b"T" => {
                self.tare_kg = self.gross_kg;
                mtsics_tare(self.tare_kg)
            }
            b"TA" => mtsics_tare(self.tare_kg),
            b"TAC" => {
                self.clear_tare();
                line("TAC A".into())
            }
            b"Z" if motion => line("Z I".into()),
            b"Z" => {
                // Zero: what is on the platform now reads 0 (within range).
                self.from_kg = 0.0;
                self.gross_kg = 0.0;
                self.tare_kg = 0.0;
                line("Z A".into())
            }
            b"@" => {
                self.clear_tare();
                line("I4 A \"DOCKLINE-SIM\"".into())
            }
            _ => line("ES".into()),
        }
    }

    /// The bytes the scale sends at `now` (call at least once per period).
    pub fn poll(&mut self, now: u64) -> Vec<u8> {
        let mut out = std::mem::take(&mut self.pending);
        if now < self.next_frame_at {
            return out;
        }
        self.next_frame_at = now + self.period_ms;
        let motion = now < self.settle_at;
        let net = round_g(self.displayed_gross(now) - self.tare_kg);
        let overload = self.overloaded(now);
        match self.protocol {
            ScaleProtocol::Toledo => {
                out.extend(toledo_frame(
                    net,
                    self.tare_kg,
                    motion,
                    overload,
                    self.toledo_checksum,
                ));
            }
            ScaleProtocol::Mtsics if overload => {
                if !self.sent_overload {
                    out.extend_from_slice(MTSICS_OVERLOAD);
                    self.sent_overload = true;
                }
                self.sent_stable = None;
            }
            ScaleProtocol::Mtsics if motion => {
                out.extend(mtsics_weight(net, false));
                self.sent_stable = None;
            }
            ScaleProtocol::Mtsics => {
                if self.sent_stable != Some(net) {
                    out.extend(mtsics_weight(net, true));
                    self.sent_stable = Some(net);
                }
            }
        }
        out
    }
}

/// Rounds to the gram, and never shows `-0.000`.
fn round_g(kg: f64) -> f64 {
    let g = (kg * 1000.0).round();
    if g == 0.0 { 0.0 } else { g / 1000.0 }
}

#[cfg(test)]
mod tests {
    use dockline_firmware::scale::{
        DeviceError, ScaleEvent, ToledoDecoder, WeightKind, parse_mtsics_line,
    };

    use super::*;

    /// Splits MT-SICS output into lines and decodes each.
    fn mtsics_events(bytes: &[u8]) -> Vec<ScaleEvent> {
        bytes
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| parse_mtsics_line(l).expect("MT-SICS line"))
            .collect()
    }

    fn toledo_events(bytes: &[u8], checksum: bool) -> Vec<ScaleEvent> {
        let mut d = ToledoDecoder::new(checksum);
        bytes
            .iter()
            .filter_map(|b| d.push(*b))
            .map(|r| r.expect("Toledo frame"))
            .collect()
    }

    fn weight(e: &ScaleEvent) -> Option<(f64, bool)> {
        match e {
            ScaleEvent::Weight(w) if w.kind != WeightKind::Tare => {
                Some((w.value.to_f64(), w.stable))
            }
            _ => None,
        }
    }

    #[test]
    fn answers_mtsics_polls_and_actions() {
        let mut scale = ScaleModel::new(ScaleProtocol::Mtsics, 30.0, 100);
        scale.place(0, 2.5, 500);
        let events = |b: Vec<u8>| mtsics_events(&b);
        assert_eq!(
            weight(&events(scale.answer(100, b"SI\r\n"))[0]).map(|w| w.1),
            Some(false)
        );
        assert_eq!(events(scale.answer(100, b"S")), [ScaleEvent::Busy]);
        assert_eq!(events(scale.answer(100, b"T")), [ScaleEvent::Busy]);
        assert_eq!(
            weight(&events(scale.answer(600, b"S"))[0]),
            Some((2.5, true))
        );
        let tare = events(scale.answer(600, b"T"));
        assert!(matches!(tare[0], ScaleEvent::Weight(w) if w.kind == WeightKind::Tare));
        assert_eq!(
            weight(&events(scale.answer(700, b"SI"))[0]),
            Some((0.0, true))
        );
        assert_eq!(
            events(scale.answer(700, b"TAC")),
            [ScaleEvent::Acknowledged]
        );
        assert_eq!(events(scale.answer(700, b"Z")), [ScaleEvent::Acknowledged]);
        assert_eq!(events(scale.answer(700, b"@")), [ScaleEvent::Acknowledged]);
        assert_eq!(
            events(scale.answer(700, b"XYZ")),
            [ScaleEvent::Device(DeviceError::SyntaxError)]
        );
    }

    #[test]
    fn mtsics_lines_decode_to_the_intended_weights() {
        assert_eq!(mtsics_weight(12.345, true), b"S S     12.345 kg\r\n");
        let cases = [(12.345, true), (-0.015, false), (0.0, true), (150.5, true)];
        for (kg, stable) in cases {
            let events = mtsics_events(&mtsics_weight(kg, stable));
            assert_eq!(
                events.iter().filter_map(weight).collect::<Vec<_>>(),
                [(kg, stable)]
            );
        }
        assert_eq!(mtsics_events(MTSICS_OVERLOAD), [ScaleEvent::Overload]);
        let tare = mtsics_events(&mtsics_tare(0.85));
        assert!(
            matches!(tare[..], [ScaleEvent::Weight(w)] if w.kind == WeightKind::Tare && w.value.to_f64() == 0.85)
        );
    }

    #[test]
    fn toledo_frames_decode_with_and_without_checksum() {
        for checksum in [false, true] {
            for (net, tare, motion) in
                [(12.34, 0.0, false), (1.25, 0.85, true), (-0.4, 0.85, false)]
            {
                let frame = toledo_frame(net, tare, motion, false, checksum);
                assert_eq!(frame.len(), if checksum { 18 } else { 17 });
                let events = toledo_events(&frame, checksum);
                let [ScaleEvent::Weight(w)] = events[..] else {
                    panic!("{events:?}")
                };
                assert_eq!(w.value.to_f64(), net);
                assert_eq!(w.stable, !motion);
                assert_eq!(w.kind == WeightKind::Net, tare > 0.0);
                assert_eq!(w.tare.map(|t| t.to_f64()), Some(tare));
            }
        }
        let over = toledo_frame(1000.0, 0.0, false, false, true);
        assert_eq!(toledo_events(&over, true), [ScaleEvent::Overload]);
    }

    #[test]
    fn a_placed_load_moves_then_settles_once_on_mtsics() {
        let mut scale = ScaleModel::new(ScaleProtocol::Mtsics, 30.0, 100);
        let mut bytes = scale.poll(0);
        for now in (50..3000).step_by(50) {
            match now {
                100 => scale.place(now, 0.85, 500),
                700 => scale.tare(),
                1000 => scale.add(now, 1.25, 800),
                _ => {}
            }
            bytes.extend(scale.poll(now));
        }
        let weights: Vec<(f64, bool)> = mtsics_events(&bytes).iter().filter_map(weight).collect();
        let stable: Vec<f64> = weights.iter().filter(|w| w.1).map(|w| w.0).collect();
        // Empty; the tote; tared (net 0); the item. One stable line per
        // change: send-on-change.
        assert_eq!(stable, [0.0, 0.85, 0.0, 1.25]);
        assert!(weights.iter().any(|w| !w.1), "motion lines before settling");
        assert_eq!(scale.settled_net(), 1.25);
    }

    #[test]
    fn toledo_streams_every_period_and_reports_overload() {
        let mut scale =
            ScaleModel::new(ScaleProtocol::Toledo, 30.0, 100).with_toledo_checksum(true);
        scale.place(0, 2.0, 300);
        scale.overload(1000, 200);
        let mut bytes = Vec::new();
        for now in (0..1500).step_by(100) {
            bytes.extend(scale.poll(now));
        }
        let events = toledo_events(&bytes, true);
        assert_eq!(events.len(), 15, "one frame per period");
        assert_eq!(
            weight(&events[0]).map(|w| w.1),
            Some(false),
            "moving at first"
        );
        assert_eq!(weight(&events[5]), Some((2.0, true)));
        assert_eq!(events[10], ScaleEvent::Overload);
        assert_eq!(weight(&events[13]), Some((2.0, true)));
    }
}
