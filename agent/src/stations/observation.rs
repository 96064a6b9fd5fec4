//! What a reading means to a station: a document, an item, a logistic unit,
//! a weight or a position. Pure conversion from the wire contract's
//! [`Reading`]; the GS1 parsing is the firmware crate's.

use dockline_firmware::scan::{Content, Requisites, ScanOptions, parse_scan_with};
use dockline_protocol::{Fix, FixMode, Reading, Weight, WeightUnit};

/// One reading, as station rules see it.
#[derive(Debug, Clone, PartialEq)]
pub enum Observation {
    /// A plain barcode: pick list, order or vehicle number.
    Document(String),
    /// A trade item (GS1 AI 01, or an EAN/UPC symbol).
    Item {
        /// GTIN, 14 digits.
        gtin: String,
        /// Batch or lot (AI 10).
        lot: Option<String>,
        /// Units this scan stands for (AI 30), else 1.
        count: u32,
    },
    /// A logistic unit (GS1 AI 00).
    Sscc {
        /// The SSCC, 18 digits.
        sscc: String,
        /// Count of contained items (AI 37) on the label.
        count: Option<u32>,
    },
    /// A weight, in kilograms.
    Weight {
        /// Net weight, kg.
        kg: f64,
        /// The scale's own stability flag.
        stable: bool,
    },
    /// A position with a fix.
    Position(Fix),
    /// Nothing a station can use; says why.
    Unusable(String),
}

impl Observation {
    /// Classifies a reading.
    pub fn of(reading: &Reading) -> Observation {
        match reading {
            Reading::Scan(scan) => {
                let raw = format!("{}{}", scan.symbology.as_deref().unwrap_or(""), scan.data);
                classify_scan(raw.as_bytes())
            }
            Reading::Weight(w) => Observation::Weight {
                kg: kilograms(w.net),
                stable: w.stable,
            },
            Reading::Position(fix) if fix.mode == FixMode::NoFix => {
                Observation::Unusable("a position without fix".into())
            }
            Reading::Position(fix) => Observation::Position(*fix),
        }
    }
}

/// Classifies one scan (AIM identifier + data, suffix stripped).
pub fn classify_scan(raw: &[u8]) -> Observation {
    // A station sees one symbol at a time while a carton's labels are judged
    // together (the dictionary's note on req=): defer req=, keep ex= and repeats.
    let options = ScanOptions {
        requisites: Requisites::AcrossSymbols,
        ..ScanOptions::default()
    };
    let scan = match parse_scan_with(raw, options) {
        Ok(s) => s,
        Err(e) => return Observation::Unusable(format!("scan rejected: {e}")),
    };
    if let Some(m) = scan.gs1() {
        if let Some(sscc) = m.get("00") {
            return Observation::Sscc {
                sscc: sscc.to_owned(),
                count: m.get("37").and_then(|c| c.parse().ok()),
            };
        }
        if let Some(gtin) = m.get("01") {
            return Observation::Item {
                gtin: gtin.to_owned(),
                lot: m.get("10").map(str::to_owned),
                count: m.get("30").and_then(|c| c.parse().ok()).unwrap_or(1),
            };
        }
        return Observation::Unusable(
            "GS1 scan without an SSCC (AI 00) or a GTIN (AI 01); scan the other label".into(),
        );
    }
    let data = match &scan.content {
        // EAN/UPC: length and check digit already verified by the parser.
        Content::Retail(code) => match gtin14(&code.gtin) {
            Some(gtin) => {
                return Observation::Item {
                    gtin,
                    lot: None,
                    count: 1,
                };
            }
            None => {
                return Observation::Unusable(
                    "an EAN/UPC add-on alone; scan the main symbol".into(),
                );
            }
        },
        Content::Text(data) => *data,
        Content::Gs1(_) | Content::DigitalLink { .. } => {
            return Observation::Unusable("scan without data".into());
        }
    };
    let text = String::from_utf8_lossy(data).trim().to_owned();
    if text.is_empty() {
        return Observation::Unusable("empty scan".into());
    }
    Observation::Document(text)
}

/// A GTIN-8, -12, -13 or -14 as 14 digits (zero-padded), or `None`.
pub fn gtin14(text: &str) -> Option<String> {
    let digits = text.bytes().all(|b| b.is_ascii_digit());
    (digits && matches!(text.len(), 8 | 12 | 13 | 14)).then(|| format!("{text:0>14}"))
}

/// A weight in kilograms.
pub fn kilograms(w: Weight) -> f64 {
    match w.unit {
        WeightUnit::Kg => w.value,
        WeightUnit::G => w.value / 1000.0,
        WeightUnit::Lb => w.value * 0.453_592_37,
        WeightUnit::Oz => w.value * 0.028_349_523_125,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scans_are_classified() {
        let cases: &[(&[u8], Observation)] = &[
            (
                b"]C10109521234543213\x1d10LOT42",
                Observation::Item {
                    gtin: "09521234543213".into(),
                    lot: Some("LOT42".into()),
                    count: 1,
                },
            ),
            (
                b"]C1010952123454321330\x1d",
                Observation::Unusable(String::new()),
            ),
            (
                b"]C100106141412345678908\x1d3724",
                Observation::Sscc {
                    sscc: "106141412345678908".into(),
                    count: Some(24),
                },
            ),
            (
                b"]E05901234123457",
                Observation::Item {
                    gtin: "05901234123457".into(),
                    lot: None,
                    count: 1,
                },
            ),
            (b"]C0SO-1001", Observation::Document("SO-1001".into())),
            (b"TRUCK-7", Observation::Document("TRUCK-7".into())),
            (b"]C14101234567890128", Observation::Unusable(String::new())),
        ];
        for (raw, want) in cases {
            let got = classify_scan(raw);
            match (want, &got) {
                // Reasons are for people; only the variant is pinned.
                (Observation::Unusable(_), Observation::Unusable(reason)) => {
                    assert!(!reason.is_empty())
                }
                _ => assert_eq!(&got, want, "{}", String::from_utf8_lossy(raw)),
            }
        }
    }

    #[test]
    fn weights_become_kilograms() {
        let w = |value, unit| Weight { value, unit };
        assert_eq!(kilograms(w(1500.0, WeightUnit::G)), 1.5);
        assert!((kilograms(w(1.0, WeightUnit::Lb)) - 0.453_592_37).abs() < 1e-12);
        assert_eq!(gtin14("96385074"), Some("00000096385074".into()));
        assert_eq!(gtin14("12345"), None);
    }
}
