//! The stream decoder: raw device bytes in, [`Item`]s out.
//!
//! # Design
//!
//! Sans-I/O: [`StreamDecoder::push`] takes whatever a read returned (one byte,
//! a line, half a frame) and appends the items it completed. Parsing is the
//! firmware crate's; this type only chooses the framer per protocol, feeds it
//! byte by byte, and remembers where each frame started:
//!
//! | protocol | framing | parser |
//! |---|---|---|
//! | `wedge` | 24-byte evdev `input_event` records, keys → characters ([`super::wedge`]), ended by the suffix key | as `scan` |
//! | `scan` | CR/LF lines ([`LineAssembler`]) | [`parse_scan_with`] under [`STREAM_SCAN_OPTIONS`] |
//! | `nmea` | CR/LF lines | [`parse_sentence`] + [`EpochAssembler`] (one position per cycle) |
//! | `mtsics`, `sma` | CR/LF lines | [`parse_mtsics_line`], [`parse_sma_line`] |
//! | `toledo` | STX … CR [checksum] | [`ToledoDecoder`] |
//! | `nci` | … ETX | [`NciDecoder`] |
//! | `link` | 0x00-delimited COBS + CRC | [`FrameDecoder`], payload = [`BridgeMessage`] |
//! | `nau7802` | none: read over I2C ([`super::loadcell`]), bytes are ignored | — |
//!
//! # Invariants
//!
//! - Bad bytes never stop the stream: a rejected frame becomes one
//!   [`Decoded::Error`] item and decoding resumes at the next frame.
//! - Every item's `offset` is the position (counted from the first byte ever
//!   pushed) of the first byte of its frame; for a position, of the first
//!   sentence of its cycle.
//! - [`idle`](StreamDecoder::idle) is what a live source calls when the line
//!   went quiet, [`finish`](StreamDecoder::finish) what a capture reader
//!   calls at its end: both complete what the quiet proves complete.

use dockline_firmware::bridge::{BridgeMessage, Fault, Payload as BridgePayload};
use dockline_firmware::line::{LineAssembler, LineOverflow};
use dockline_firmware::link::FrameDecoder;
use dockline_firmware::loadcell::LoadCellReading;
use dockline_firmware::nmea::{
    self, EpochAssembler, LineClass, Sentence, classify_line, parse_sentence,
};
use dockline_firmware::scale::{
    DeviceError, NciDecoder, ScaleError, ScaleEvent, TOLEDO_FRAME_LEN, ToledoDecoder,
    parse_mtsics_line, parse_sma_line,
};
use dockline_firmware::scan::{Content, Requisites, ScanOptions, WithoutAim, parse_scan_with};
use dockline_protocol::FixMode;

use super::Protocol;
use super::decoded::{Decoded, Item, scan_text};
use super::wedge::{INPUT_EVENT_LEN, Typed, WedgeDecoder, WedgeOptions, key_event};

/// Longest scan kept: a full Data Matrix holds about 3,100 bytes.
const SCAN_LINE: usize = 4096;
/// Longest scale response line; real ones are under 30 bytes.
const SCALE_LINE: usize = 128;
/// Most bytes of a rejected frame quoted in an error.
const EXCERPT: usize = 48;

const STX: u8 = 0x02;
const CR: u8 = 0x0D;

/// Settings that the bytes alone cannot tell.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DecoderOptions {
    /// Toledo continuous: the indicator appends a checksum byte after CR.
    /// Off by default: a checksummed stream still decodes without it (the
    /// byte is skipped, unverified), while the reverse fails every frame.
    pub toledo_checksum: bool,
}

/// How a scanner stream is judged unless [`StreamDecoder::with_scan_options`]
/// says otherwise: scans without an AIM identifier are plain data, and GS1
/// `req=` associations are left to whoever combines the symbols of one item
/// (a logistic label often splits (00) and (02)+(37) over two barcodes, and a
/// scanner reads one at a time); `ex=`, repeats and every value check apply.
pub const STREAM_SCAN_OPTIONS: ScanOptions = ScanOptions {
    without_aim: WithoutAim::AcceptPlain,
    requisites: Requisites::AcrossSymbols,
};

enum Framer {
    ScanLines(Box<LineAssembler<SCAN_LINE>>),
    Wedge(Box<WedgeFramer>),
    NmeaLines(LineAssembler<{ nmea::MAX_LINE }>),
    ScaleLines(LineAssembler<SCALE_LINE>),
    Toledo {
        decoder: ToledoDecoder,
        with_checksum: bool,
        /// Bytes of the current frame seen (0 = between frames;
        /// `TOLEDO_FRAME_LEN` = waiting for the checksum byte). Mirrors the
        /// firmware decoder only to know where a frame began.
        in_frame: usize,
    },
    Nci(NciDecoder),
    Link(Box<FrameDecoder>),
    /// A protocol without bytes (`nau7802`): input is ignored.
    Unframed,
}

/// Keyboard-wedge input: `input_event` records in, scan lines out.
struct WedgeFramer {
    record: [u8; INPUT_EVENT_LEN],
    filled: usize,
    /// Offset of the record being filled.
    record_start: u64,
    keys: WedgeDecoder,
    line: Vec<u8>,
    overflowed: bool,
}

impl WedgeFramer {
    fn new(options: WedgeOptions) -> Self {
        WedgeFramer {
            record: [0; INPUT_EVENT_LEN],
            filled: 0,
            record_start: 0,
            keys: WedgeDecoder::new(options),
            line: Vec::new(),
            overflowed: false,
        }
    }
}

/// Decodes one device's byte stream; see the module docs.
pub struct StreamDecoder {
    protocol: Protocol,
    framer: Framer,
    next_offset: u64,
    /// Offset of the first byte of the frame in progress.
    frame_start: Option<u64>,
    nmea: LineState,
    scan: ScanOptions,
}

/// Per-line state: the NMEA cycle in progress and where its first sentence
/// started, skipped sentences, MT-SICS answers for a poller.
#[derive(Default)]
struct LineState {
    assembler: EpochAssembler,
    start: Option<u64>,
    /// Proprietary and unknown sentences skipped so far.
    skipped: u64,
    /// MT-SICS: every response line since the last
    /// [`StreamDecoder::take_scale_answers`] (`None`: not MT-SICS), for a
    /// poller that must know when its command was answered.
    scale_answers: Vec<Option<ScaleEvent>>,
}

impl StreamDecoder {
    /// A decoder for `protocol`, at offset 0.
    pub fn new(protocol: Protocol, options: DecoderOptions) -> Self {
        StreamDecoder {
            protocol,
            framer: new_framer(protocol, options),
            next_offset: 0,
            frame_start: None,
            nmea: LineState::default(),
            scan: STREAM_SCAN_OPTIONS,
        }
    }

    /// The same decoder, for a keyboard-wedge scanner set up as `options`
    /// (keymap, GS substitute, suffix); other protocols ignore it.
    pub fn with_wedge_options(mut self, options: WedgeOptions) -> Self {
        if let Framer::Wedge(w) = &mut self.framer {
            **w = WedgeFramer::new(options);
        }
        self
    }

    /// Keyboard wedge: keys the keymap did not know (a wrong keymap shows here).
    pub fn unknown_keys(&self) -> u64 {
        match &self.framer {
            Framer::Wedge(w) => w.keys.unknown_keys(),
            _ => 0,
        }
    }

    /// The same decoder, judging scans under `options` (a scanner's
    /// `require_aim`, or per-symbol `req=` checks).
    pub fn with_scan_options(mut self, options: ScanOptions) -> Self {
        self.scan = options;
        self
    }

    /// The protocol this decoder reads.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// MT-SICS: the response lines decoded since the last call, in order
    /// (`None` for a line that was not MT-SICS), including acknowledgements
    /// that make no item.
    pub fn take_scale_answers(&mut self) -> Vec<Option<ScaleEvent>> {
        std::mem::take(&mut self.nmea.scale_answers)
    }

    /// NMEA: proprietary and unknown sentences skipped so far (counted, not
    /// reported as errors).
    pub fn skipped_sentences(&self) -> u64 {
        self.nmea.skipped
    }

    /// Feed bytes; completed items are appended to `out`.
    pub fn push(&mut self, bytes: &[u8], out: &mut Vec<Item>) {
        for &byte in bytes {
            let offset = self.next_offset;
            self.next_offset += 1;
            self.push_byte(byte, offset, out);
        }
    }

    /// The line has been quiet: a scanner's scan without its suffix is
    /// complete (a lost CR must not glue two scans together), and the NMEA
    /// cycle in progress is complete (receivers send each cycle as a burst).
    pub fn idle(&mut self, out: &mut Vec<Item>) {
        match self.protocol {
            Protocol::Scan | Protocol::Wedge => self.end_partial_line(out),
            Protocol::Nmea => self.flush_cycle(out),
            _ => {}
        }
    }

    /// The input ended: complete a last line without terminator, flush the
    /// NMEA cycle, and report a frame cut off in the middle.
    pub fn finish(&mut self, out: &mut Vec<Item>) {
        self.end_partial_line(out);
        self.flush_cycle(out);
        let offset = self.frame_start.take();
        let cut = match &mut self.framer {
            Framer::Toledo {
                decoder,
                with_checksum,
                in_frame,
            } if *in_frame > 0 => {
                let reason = if *in_frame == TOLEDO_FRAME_LEN {
                    "input ended before the Toledo checksum byte; if this indicator sends no checksum, decode without --checksum"
                } else {
                    "input ended inside a Toledo frame (no CR after STX); the capture was cut off"
                };
                *decoder = ToledoDecoder::new(*with_checksum);
                *in_frame = 0;
                Some(reason)
            }
            Framer::Nci(decoder) if offset.is_some() => {
                *decoder = NciDecoder::new();
                Some("input ended before the NCI response's ETX; the capture was cut off")
            }
            Framer::Link(decoder) if offset.is_some() => {
                **decoder = FrameDecoder::new();
                Some(
                    "input ended inside a bridge frame (no closing 0x00 delimiter); the capture was cut off",
                )
            }
            _ => None,
        };
        if let Some(reason) = cut {
            out.push(error_item(offset.unwrap_or(0), reason.to_owned()));
        }
    }

    fn end_partial_line(&mut self, out: &mut Vec<Item>) {
        if let Framer::Wedge(w) = &mut self.framer {
            if let Some(start) = self.frame_start.take()
                && !w.line.is_empty()
            {
                let line = std::mem::take(&mut w.line);
                out.push(scan_item(start, &line, self.scan));
            }
            return;
        }
        let line_framed = matches!(
            self.framer,
            Framer::ScanLines(_) | Framer::NmeaLines(_) | Framer::ScaleLines(_)
        );
        if line_framed && self.frame_start.is_some() {
            // A synthetic terminator: takes no offset of its own.
            self.push_byte(b'\n', self.next_offset, out);
        }
    }

    fn flush_cycle(&mut self, out: &mut Vec<Item>) {
        let start = self.nmea.start.take();
        if let Some(epoch) = self.nmea.assembler.flush() {
            push_epoch(epoch, start.unwrap_or(0), out);
        }
    }

    fn push_byte(&mut self, byte: u8, offset: u64, out: &mut Vec<Item>) {
        let StreamDecoder {
            protocol,
            framer,
            frame_start,
            nmea,
            scan,
            ..
        } = self;
        match framer {
            Framer::ScanLines(asm) => {
                if let Some((start, line)) = line_step(asm, byte, offset, frame_start) {
                    on_line(*protocol, start, line, nmea, *scan, out);
                }
            }
            Framer::Wedge(w) => {
                if w.filled == 0 {
                    w.record_start = offset;
                }
                if let Some(slot) = w.record.get_mut(w.filled) {
                    *slot = byte;
                }
                w.filled += 1;
                if w.filled < INPUT_EVENT_LEN {
                    return;
                }
                w.filled = 0;
                let Some(event) = key_event(&w.record) else {
                    return;
                };
                match w.keys.push(event) {
                    Some(Typed::Byte(b)) => {
                        frame_start.get_or_insert(w.record_start);
                        if w.line.len() < SCAN_LINE {
                            w.line.push(b);
                        } else {
                            w.overflowed = true;
                        }
                    }
                    Some(Typed::End) => {
                        let start = frame_start.take().unwrap_or(w.record_start);
                        let line = std::mem::take(&mut w.line);
                        if std::mem::take(&mut w.overflowed) {
                            out.push(error_item(
                                start,
                                format!("wedge scan longer than {SCAN_LINE} characters dropped; is the suffix key configured?"),
                            ));
                        } else if !line.is_empty() {
                            out.push(scan_item(start, &line, *scan));
                        }
                    }
                    None => {}
                }
            }
            Framer::NmeaLines(asm) => {
                if let Some((start, line)) = line_step(asm, byte, offset, frame_start) {
                    on_line(*protocol, start, line, nmea, *scan, out);
                }
            }
            Framer::ScaleLines(asm) => {
                if let Some((start, line)) = line_step(asm, byte, offset, frame_start) {
                    on_line(*protocol, start, line, nmea, *scan, out);
                }
            }
            Framer::Toledo {
                decoder,
                with_checksum,
                in_frame,
            } => {
                let b7 = byte & 0x7F;
                if *in_frame == TOLEDO_FRAME_LEN {
                    // The checksum byte, whatever its value (it may equal STX).
                    *in_frame = 0;
                } else if b7 == STX {
                    *frame_start = Some(offset);
                    *in_frame = 1;
                } else if *in_frame > 0 {
                    *in_frame += 1;
                    let full = *in_frame == TOLEDO_FRAME_LEN;
                    if b7 == CR || full {
                        let await_checksum = full && b7 == CR && *with_checksum;
                        *in_frame = if await_checksum { TOLEDO_FRAME_LEN } else { 0 };
                    }
                }
                if let Some(result) = decoder.push(byte) {
                    let start = frame_start.unwrap_or(offset);
                    out.extend(scale_item(start, result, None));
                }
            }
            Framer::Nci(decoder) => {
                let start = *frame_start.get_or_insert(offset);
                if let Some(result) = decoder.push(byte) {
                    *frame_start = None;
                    out.extend(scale_item(start, result, None));
                }
            }
            Framer::Link(decoder) => {
                if byte != 0 && frame_start.is_none() {
                    *frame_start = Some(offset);
                }
                let start = if byte == 0 { frame_start.take() } else { None };
                if let Some(result) = decoder.push(byte) {
                    let start = start.unwrap_or(offset);
                    match result {
                        Ok(payload) => out.extend(bridge_item(start, payload)),
                        Err(e) => out.push(error_item(start, format!("bridge link: {e}"))),
                    }
                }
            }
            Framer::Unframed => {}
        }
    }
}

fn new_framer(protocol: Protocol, options: DecoderOptions) -> Framer {
    match protocol {
        Protocol::Scan => Framer::ScanLines(Box::new(LineAssembler::new())),
        Protocol::Wedge => Framer::Wedge(Box::new(WedgeFramer::new(WedgeOptions::default()))),
        Protocol::Nmea => Framer::NmeaLines(LineAssembler::new()),
        Protocol::Mtsics | Protocol::Sma => Framer::ScaleLines(LineAssembler::new()),
        Protocol::Toledo => Framer::Toledo {
            decoder: ToledoDecoder::new(options.toledo_checksum),
            with_checksum: options.toledo_checksum,
            in_frame: 0,
        },
        Protocol::Nci => Framer::Nci(NciDecoder::new()),
        Protocol::Link => Framer::Link(Box::new(FrameDecoder::new())),
        // Read over I2C, not a byte stream: nothing to frame.
        Protocol::Nau7802 => Framer::Unframed,
    }
}

/// Feeds one byte to a line assembler; returns a finished line (or its
/// overflow) with the offset of its first byte.
fn line_step<'a, const N: usize>(
    asm: &'a mut LineAssembler<N>,
    byte: u8,
    offset: u64,
    frame_start: &mut Option<u64>,
) -> Option<(u64, Result<&'a [u8], LineOverflow>)> {
    let terminator = byte == b'\r' || byte == b'\n';
    if !terminator && frame_start.is_none() {
        *frame_start = Some(offset);
    }
    let start = if terminator { frame_start.take() } else { None };
    let line = asm.push(byte)?;
    Some((start.unwrap_or(offset), line))
}

fn on_line(
    protocol: Protocol,
    start: u64,
    line: Result<&[u8], LineOverflow>,
    nmea: &mut LineState,
    scan: ScanOptions,
    out: &mut Vec<Item>,
) {
    let line = match line {
        Ok(line) => line,
        Err(overflow) => {
            out.push(error_item(start, format!("{protocol}: {overflow}")));
            return;
        }
    };
    match protocol {
        Protocol::Scan => out.push(scan_item(start, line, scan)),
        Protocol::Nmea => match classify_line(line) {
            LineClass::Skip => {}
            LineClass::Sentence(line) => nmea_sentence(start, line, nmea, out),
        },
        Protocol::Mtsics => {
            let result = parse_mtsics_line(line);
            nmea.scale_answers.push(match &result {
                Ok(event) => Some(*event),
                Err(_) => None,
            });
            out.extend(scale_item(start, result, Some(line)));
        }
        Protocol::Sma => out.extend(scale_item(start, parse_sma_line(line), Some(line))),
        // Frame protocols never produce lines.
        Protocol::Wedge | Protocol::Toledo | Protocol::Nci | Protocol::Link | Protocol::Nau7802 => {
        }
    }
}

/// One NMEA sentence into the cycle in progress. Proprietary and unknown
/// sentences are counted and skipped: receivers send many that carry no
/// position (GSV, TXT, PUBX, vendor extensions), and none is an error.
fn nmea_sentence(start: u64, line: &[u8], nmea: &mut LineState, out: &mut Vec<Item>) {
    match parse_sentence(line) {
        Ok(Sentence::Proprietary | Sentence::Unsupported { .. }) => {
            nmea.skipped += 1;
        }
        Ok(sentence) => {
            if let Some(epoch) = nmea.assembler.push(&sentence) {
                push_epoch(epoch, nmea.start.unwrap_or(start), out);
                nmea.start = None;
            }
            nmea.start.get_or_insert(start);
        }
        Err(e) => out.push(error_item(
            start,
            format!("NMEA line \"{}\" rejected: {e}", excerpt(line)),
        )),
    }
}

fn scan_item(start: u64, line: &[u8], options: ScanOptions) -> Item {
    match parse_scan_with(line, options) {
        Ok(scan) => Item {
            offset: start,
            decoded: Decoded::Scan {
                symbology: scan.symbology.map(|s| s.to_string()),
                data: scan_text(scan.data),
                ai: scan.gs1().map(|m| {
                    m.elements()
                        .iter()
                        .map(|e| {
                            let value: Vec<u8> = e.value_bytes().collect();
                            (e.ai.as_str().to_owned(), scan_text(&value))
                        })
                        .collect()
                }),
                gtin: match &scan.content {
                    Content::Retail(code) if !code.gtin.is_empty() => Some(code.gtin.to_string()),
                    _ => None,
                },
            },
        },
        Err(e) => error_item(
            start,
            format!(
                "scan \"{}\" rejected (rule {}): {e}",
                excerpt(line),
                e.rule()
            ),
        ),
    }
}

fn push_epoch(epoch: nmea::Epoch, start: u64, out: &mut Vec<Item>) {
    // A reading needs a time and a position, and a fix: a cycle with no
    // position (only GSA/VTG), no time, or a position the receiver itself
    // calls invalid (status V, quality 0) is not a measurement (gpsd reports
    // none either).
    if epoch.time.is_none() {
        return;
    }
    if let Some(fix) = epoch.to_fix().filter(|f| f.mode != FixMode::NoFix) {
        out.push(Item {
            offset: start,
            decoded: Decoded::Position {
                time: epoch.time,
                date: epoch.date,
                fix,
            },
        });
    }
}

/// A scale's answer as an item; `None` for acknowledgements, which carry nothing.
fn scale_item(
    start: u64,
    result: Result<ScaleEvent, ScaleError>,
    line: Option<&[u8]>,
) -> Option<Item> {
    let (state, reason) = match result {
        Ok(ScaleEvent::Weight(sample)) => {
            return Some(Item {
                offset: start,
                decoded: Decoded::Weight(sample),
            });
        }
        Ok(ScaleEvent::Acknowledged) => return None,
        Ok(ScaleEvent::Overload) => (
            "overload",
            "scale reports overload: the load is above its capacity; take weight off".to_owned(),
        ),
        Ok(ScaleEvent::Underload) => (
            "underload",
            "scale reports underload (below its zero range); empty the platform and zero the scale"
                .to_owned(),
        ),
        Ok(ScaleEvent::Busy) => (
            "busy",
            "scale cannot answer now (busy, or no stable weight in time); keep the load still and ask again"
                .to_owned(),
        ),
        Ok(ScaleEvent::Device(e)) => ("device_error", device_error_reason(e).to_owned()),
        Err(e) => {
            let reason = match line {
                Some(line) => format!("scale sent \"{}\": {e}", excerpt(line)),
                None => e.to_string(),
            };
            return Some(error_item(start, reason));
        }
    };
    Some(Item {
        offset: start,
        decoded: Decoded::ScaleState { state, reason },
    })
}

fn device_error_reason(e: DeviceError) -> &'static str {
    match e {
        DeviceError::SyntaxError => {
            "scale did not understand the command (ES); check the command set of this model"
        }
        DeviceError::TransmissionError => {
            "scale saw a parity or overrun error (ET); check baud rate, parity and cabling"
        }
        DeviceError::LogicalError => "scale cannot execute the command now (EL)",
        DeviceError::UnknownCommand => "scale answered '?': unknown command",
        DeviceError::CommunicationError => {
            "scale answered '!': communication error; check the line settings"
        }
        DeviceError::ZeroError => "scale reports a zero error; empty the platform and zero it",
        DeviceError::InitialZeroError => {
            "scale reports an initial zero error; restart it with an empty platform"
        }
        DeviceError::TareError => "scale reports a tare error",
        DeviceError::MemoryError => "scale reports a memory (RAM/ROM/EEPROM) error; service it",
        DeviceError::CalibrationError => "scale reports faulty calibration; recalibrate it",
    }
}

/// A load cell's reading (from a bridge frame, or an I2C load cell on the
/// gateway) as an item: a weight, or the overload/underload state.
pub(crate) fn load_cell_item(offset: u64, reading: &LoadCellReading) -> Option<Item> {
    scale_item(offset, Ok(reading.to_scale_event()), None)
}

fn bridge_item(start: u64, payload: &[u8]) -> Option<Item> {
    match BridgeMessage::decode(payload) {
        Ok(message) => match message.payload {
            BridgePayload::Weight(reading) => load_cell_item(start, &reading),
            BridgePayload::Fault(fault) => {
                let reason = match fault {
                    Fault::SensorRead => {
                        "bridge cannot read its load cell; check the load cell wiring".to_owned()
                    }
                    Fault::SensorStalled => {
                        "bridge's load cell gives no conversions; check its power and wiring"
                            .to_owned()
                    }
                    Fault::Other(code) => format!(
                        "bridge reports fault code {code}, unknown to this agent; update the agent"
                    ),
                };
                Some(Item {
                    offset: start,
                    decoded: Decoded::ScaleState {
                        state: "bridge_fault",
                        reason,
                    },
                })
            }
        },
        Err(e) => Some(error_item(start, format!("bridge message rejected: {e}"))),
    }
}

fn error_item(offset: u64, reason: String) -> Item {
    Item {
        offset,
        decoded: Decoded::Error { reason },
    }
}

/// The start of a rejected frame, printable (`\x1d`, `\r` escaped).
fn excerpt(bytes: &[u8]) -> String {
    let shown = bytes.get(..EXCERPT).unwrap_or(bytes);
    let mut text = shown.escape_ascii().to_string();
    if shown.len() < bytes.len() {
        text.push('…');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use dockline_firmware::bridge::MAX_MESSAGE;
    use dockline_firmware::link::{MAX_FRAME, encode_frame};
    use dockline_firmware::loadcell::WeightState;
    use dockline_firmware::scale::{Decimal, Unit};

    fn decode(protocol: Protocol, input: &[u8]) -> Vec<Item> {
        let mut d = StreamDecoder::new(protocol, DecoderOptions::default());
        let mut out = Vec::new();
        d.push(input, &mut out);
        d.finish(&mut out);
        out
    }

    /// Same items whether the input comes in one piece or byte by byte.
    fn decode_bytewise(protocol: Protocol, input: &[u8]) -> Vec<Item> {
        let mut d = StreamDecoder::new(protocol, DecoderOptions::default());
        let mut out = Vec::new();
        for b in input {
            d.push(std::slice::from_ref(b), &mut out);
        }
        d.finish(&mut out);
        out
    }

    #[test]
    fn scans_with_offsets_and_errors() {
        let input =
            b"]C10109521234543213\x1d10LOT42\r\n]C10109521234543214\r\n]E05901234123457\r\n";
        let items = decode(Protocol::Scan, input);
        assert_eq!(items, decode_bytewise(Protocol::Scan, input));
        assert_eq!(items.len(), 3);
        assert_eq!(items[0].offset, 0);
        let Decoded::Scan { ai: Some(ai), .. } = &items[0].decoded else {
            panic!("{items:?}")
        };
        assert_eq!(ai[1], ("10".to_owned(), "LOT42".to_owned()));
        assert_eq!(items[1].offset, 29);
        assert!(matches!(items[1].decoded, Decoded::Error { .. }));
        assert!(matches!(
            &items[2].decoded,
            Decoded::Scan { ai: None, data, .. } if data == "5901234123457"
        ));
    }

    #[test]
    fn idle_ends_a_scan_without_suffix() {
        let mut d = StreamDecoder::new(Protocol::Scan, DecoderOptions::default());
        let mut out = Vec::new();
        d.push(b"]E05901234123457", &mut out);
        assert!(out.is_empty());
        d.idle(&mut out);
        assert_eq!(out.len(), 1);
        d.push(b"]E05901234123457\r\n", &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(out[1].offset, 16);
    }

    #[test]
    fn toledo_checksum_byte_may_look_like_stx() {
        // Any frame whose checksum is 0x02 must not shift the next frame's offset.
        let mut frame = vec![
            0x02, 0x2C, 0x30, 0x20, 0x30, 0x30, 0x31, 0x32, 0x33, 0x34, 0x30, 0x30, 0x30, 0x30,
            0x30, 0x30, 0x0D,
        ];
        let sum = frame.iter().fold(0u8, |a, b| a.wrapping_add(b & 0x7f));
        frame.push(sum.wrapping_neg() & 0x7f);
        let mut stream = frame.clone();
        stream.extend(&frame);
        let mut bad = frame.clone();
        bad[17] ^= 1;
        stream.extend(&bad);
        let mut d = StreamDecoder::new(
            Protocol::Toledo,
            DecoderOptions {
                toledo_checksum: true,
            },
        );
        let mut out = Vec::new();
        d.push(&stream, &mut out);
        d.finish(&mut out);
        let offsets: Vec<u64> = out.iter().map(|i| i.offset).collect();
        assert_eq!(offsets, [0, 18, 36]);
        assert!(out[2].is_error());
    }

    #[test]
    fn bridge_frames_carry_load_cell_weights() {
        let message = BridgeMessage {
            seq: 7,
            at_ms: 1234,
            payload: BridgePayload::Weight(LoadCellReading {
                raw: 81_234,
                filtered: 81_200,
                net: Decimal {
                    mantissa: 1250,
                    scale: 3,
                },
                tare: None,
                unit: Unit::Kg,
                state: WeightState::Stable,
            }),
        };
        let mut payload = [0u8; MAX_MESSAGE];
        let len = message.encode(&mut payload).expect("fits");
        let mut buf = [0u8; MAX_FRAME];
        let n = encode_frame(&payload[..len], &mut buf).expect("fits");
        let mut stream = b"noise".to_vec();
        stream.extend_from_slice(&buf[..n]);
        stream.extend_from_slice(&buf[..n]);
        let items = decode(Protocol::Link, &stream);
        assert_eq!(items.len(), 3, "{items:?}");
        assert_eq!(items[0].offset, 0);
        assert!(items[0].is_error());
        let Some(dockline_protocol::Reading::Weight(w)) = items[1].to_reading() else {
            panic!("{items:?}")
        };
        assert!(w.stable && (w.net.value - 1.25).abs() < 1e-9);
        assert_eq!(items[2].offset, 5 + n as u64 + 1);
    }

    #[test]
    fn nmea_cycles_become_positions() {
        let input = b"$GNRMC,001031.00,A,4404.13993,N,12118.86023,W,0.146,,100117,,,A*7B\r\n\
$GNGSA,A,3,01,11,31,14,22,32,04,25,03,,,,1.56,0.91,1.27*15\r\n\
$GNGSA,A,3,01,11,31,14,22,32,04,25,03,,,,1.56,0.91,1.27*16\r\n";
        let items = decode(Protocol::Nmea, input);
        assert_eq!(items.len(), 2, "{items:?}");
        assert!(items[0].is_error());
        assert_eq!(items[0].offset, 128);
        assert_eq!(items[1].offset, 0);
        assert!(matches!(items[1].decoded, Decoded::Position { .. }));
    }
}
