//! What the stream decoder yields: readings, device states and rejected frames,
//! each tied to the byte offset where its frame started.
//!
//! An [`Item`] prints as one JSON object for `dockline-agent decode`
//! ([`Item::to_json_line`]) and converts to the wire contract for the outbox
//! ([`Item::to_reading`]). Conversions never fail loudly: what the contract
//! cannot carry (a tare line, a unit it has no name for) simply has no reading.

use dockline_firmware::nmea::{Date, Time};
use dockline_firmware::scale::{Decimal, Unit, WeightKind, WeightSample};
use dockline_protocol::{Fix, FixMode, Reading, Scan};
use serde::Serialize;
use serde::ser::SerializeSeq;

/// One thing found in the byte stream.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    /// Byte offset in the stream where the frame behind this item started.
    pub offset: u64,
    /// What the frame held.
    pub decoded: Decoded,
}

/// What one frame (or, for NMEA, one receiver cycle) held.
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded {
    /// A barcode.
    Scan {
        /// The AIM identifier (`]C1`), when the scanner sent one.
        symbology: Option<String>,
        /// The data after the identifier; FNC1 kept as GS (U+001D).
        data: String,
        /// GS1 AIs and values in symbol order, for GS1 symbols and Digital
        /// Link URIs (values percent-decoded). A list, not a map: an AI may
        /// repeat (with the same value).
        ai: Option<Vec<(String, String)>>,
        /// The GTIN of an EAN/UPC symbol (UPC-E expanded to UPC-A).
        gtin: Option<String>,
    },
    /// One GNSS receiver cycle with a position.
    Position {
        /// UTC time of the cycle.
        time: Option<Time>,
        /// UTC date (RMC or ZDA), when the cycle had one.
        date: Option<Date>,
        /// The position as the wire contract carries it.
        fix: Fix,
    },
    /// A weight as the scale reported it.
    Weight(WeightSample),
    /// The scale answered with a state instead of a weight (overload, busy, …).
    ScaleState {
        /// Short machine name: `overload`, `underload`, `busy`, `device_error`,
        /// `bridge_fault`.
        state: &'static str,
        /// What it means and what to do.
        reason: String,
    },
    /// Bytes that are not a valid frame of the protocol.
    Error {
        /// What was wrong and what to check.
        reason: String,
    },
}

impl Item {
    /// Whether this item reports rejected input or a device problem.
    pub fn is_error(&self) -> bool {
        matches!(
            self.decoded,
            Decoded::Error { .. } | Decoded::ScaleState { .. }
        )
    }

    /// What was wrong, for an error or a scale state.
    pub fn reason(&self) -> Option<&str> {
        match &self.decoded {
            Decoded::Error { reason } | Decoded::ScaleState { reason, .. } => Some(reason),
            _ => None,
        }
    }

    /// The JSON line printed by `dockline-agent decode` (without newline),
    /// `kind` first and the other fields in a fixed order.
    pub fn to_json_line(&self) -> String {
        // Serializing plain structs cannot fail; the fallback keeps the
        // promise of one JSON object per item anyway.
        serde_json::to_string(&self.line()).unwrap_or_else(|e| {
            format!(
                r#"{{"kind":"error","offset":{},"reason":"cannot print this item: {e}"}}"#,
                self.offset
            )
        })
    }

    fn line(&self) -> Line<'_> {
        match &self.decoded {
            Decoded::Scan {
                symbology,
                data,
                ai,
                gtin,
            } => Line::Scan {
                symbology: symbology.as_deref(),
                data,
                gtin: gtin.as_deref(),
                ai: ai.as_deref().map(InOrder),
            },
            Decoded::Position { time, date, fix } => position_line(*time, *date, fix),
            Decoded::Weight(w) => Line::Weight {
                value: decimal_number(w.value),
                unit: unit_name(w.unit),
                stable: w.stable,
                basis: Some(match w.kind {
                    WeightKind::Gross => "gross",
                    WeightKind::Net => "net",
                    WeightKind::Tare => "tare",
                }),
                tare: w.tare.map(decimal_number),
            },
            Decoded::ScaleState { state, reason } => Line::Error {
                offset: self.offset,
                reason,
                state: Some(state),
            },
            Decoded::Error { reason } => Line::Error {
                offset: self.offset,
                reason,
                state: None,
            },
        }
    }

    /// The wire-contract reading, when this item is one the contract carries.
    pub fn to_reading(&self) -> Option<Reading> {
        match &self.decoded {
            Decoded::Scan {
                symbology, data, ..
            } => Some(Reading::Scan(Scan {
                symbology: symbology.clone(),
                data: data.clone(),
            })),
            Decoded::Position { fix, .. } => Some(Reading::Position(*fix)),
            Decoded::Weight(w) => w.to_protocol().map(Reading::Weight),
            Decoded::ScaleState { .. } | Decoded::Error { .. } => None,
        }
    }
}

/// Scanner bytes as text: UTF-8 when they are, else ISO 8859-1 (what Code 128
/// extended characters mean), so no byte is lost or replaced.
pub(crate) fn scan_text(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) => s.to_owned(),
        Err(_) => bytes.iter().map(|b| char::from(*b)).collect(),
    }
}

/// One printed line; field order here is the order on screen.
#[derive(Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
enum Line<'a> {
    Scan {
        symbology: Option<&'a str>,
        data: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        gtin: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        ai: Option<InOrder<'a>>,
    },
    Position {
        time: Option<String>,
        date: Option<String>,
        lat: f64,
        lon: f64,
        speed_mps: Option<f64>,
        course_deg: Option<f64>,
        mode: u8,
        sats: Option<u8>,
        hdop: Option<f64>,
    },
    Weight {
        value: f64,
        unit: String,
        stable: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        basis: Option<&'static str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        tare: Option<f64>,
    },
    Error {
        offset: u64,
        reason: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        state: Option<&'a str>,
    },
}

/// GS1 AIs as a JSON list of `[ai, value]` pairs in symbol order: never an
/// object, whose keys could repeat (which most JSON parsers silently collapse).
struct InOrder<'a>(&'a [(String, String)]);

impl Serialize for InOrder<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut list = serializer.serialize_seq(Some(self.0.len()))?;
        for pair in self.0 {
            list.serialize_element(pair)?;
        }
        list.end()
    }
}

/// A decimal as printed by the scale, as a number that prints the same way
/// (`12.34`, not `12.340000000000002`): its text parsed into the nearest double.
fn decimal_number(value: Decimal) -> f64 {
    value
        .to_string()
        .parse::<f64>()
        .unwrap_or_else(|_| value.to_f64())
}

fn round(value: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (value * scale).round() / scale
}

fn unit_name(unit: Unit) -> String {
    match unit {
        Unit::Kg => "kg".into(),
        Unit::G => "g".into(),
        Unit::Lb => "lb".into(),
        Unit::Oz => "oz".into(),
        Unit::T => "t".into(),
        Unit::Other(raw) => String::from_utf8_lossy(&raw).trim().to_owned(),
    }
}

fn position_line(time: Option<Time>, date: Option<Date>, fix: &Fix) -> Line<'static> {
    Line::Position {
        time: time.map(|t| {
            format!(
                "{:02}:{:02}:{:02}.{:03}",
                t.hour, t.minute, t.second, t.millis
            )
        }),
        date: date.map(|d| format!("{:04}-{:02}-{:02}", d.year, d.month, d.day)),
        // 1e-9 degrees is 0.1 mm: no receiver is that good, and it hides the
        // binary noise of the ddmm.mmmm conversion.
        lat: round(fix.lat, 9),
        lon: round(fix.lon, 9),
        speed_mps: fix.speed_mps.map(|v| round(f64::from(v), 3)),
        course_deg: fix.course_deg.map(|v| round(f64::from(v), 2)),
        // gpsd's numbering: 1 no fix, 2 two-dimensional, 3 three-dimensional.
        mode: match fix.mode {
            FixMode::NoFix => 1,
            FixMode::Fix2d => 2,
            FixMode::Fix3d => 3,
        },
        sats: fix.satellites,
        hdop: fix.hdop.map(|v| round(f64::from(v), 2)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_print_as_the_scale_wrote_them() {
        let item = Item {
            offset: 0,
            decoded: Decoded::Weight(WeightSample {
                value: Decimal {
                    mantissa: 1234,
                    scale: 2,
                },
                unit: Unit::Kg,
                kind: WeightKind::Net,
                stable: true,
                at_zero: false,
                tare: None,
            }),
        };
        assert_eq!(
            item.to_json_line(),
            r#"{"kind":"weight","value":12.34,"unit":"kg","stable":true,"basis":"net"}"#
        );
        assert!(matches!(item.to_reading(), Some(Reading::Weight(_))));
    }

    #[test]
    fn ais_print_as_an_ordered_list_of_pairs() {
        let item = Item {
            offset: 0,
            decoded: Decoded::Scan {
                symbology: Some("]C1".into()),
                data: "400ABC\u{1d}400ABC".into(),
                ai: Some(vec![
                    ("400".into(), "ABC".into()),
                    ("400".into(), "ABC".into()),
                ]),
                gtin: None,
            },
        };
        assert_eq!(
            item.to_json_line(),
            r#"{"kind":"scan","symbology":"]C1","data":"400ABC\u001d400ABC","ai":[["400","ABC"],["400","ABC"]]}"#
        );
    }

    #[test]
    fn scan_text_keeps_every_byte() {
        assert_eq!(scan_text(b"AB\x1dC"), "AB\u{1d}C");
        assert_eq!(scan_text(b"\xe9t\xe9"), "\u{e9}t\u{e9}");
    }
}
