//! A barcode scanner's bytes: `[AIM identifier] data [suffix]`, as a serial
//! or USB-CDC scanner configured for AIM code IDs sends them.
//!
//! - GS1 symbols (`]C1` GS1-128, `]d2` GS1 DataMatrix) carry element strings
//!   with FNC1 in first position implied by the identifier, and FNC1 as GS
//!   (0x1D) after every variable-length AI that is not last. Which AIs need
//!   the separator comes from the firmware's copy of the GS1 Barcode Syntax
//!   Dictionary, the same table the agent's parser uses.
//! - `]E0` EAN-13 and `]C0` plain Code 128 (pick lists, vehicle barcodes).
//! - The suffix is configurable: CR, LF or CR LF.
//! - A misread is modelled on GS1 symbols only: one digit of the key (GTIN
//!   or SSCC) arrives wrong, so its check digit fails and the agent rejects
//!   the scan. Real scanners verify EAN and Code 128 check characters before
//!   sending, so a wrong plain symbol would be a different, valid code; the
//!   simulator does not send those.
//!
//! Pure: bytes out, no I/O.

use dockline_firmware::scan::{gs1_check_digit, lookup};
use serde::Deserialize;

/// FNC1 as a scanner transmits it between GS1 elements.
pub const GS: u8 = 0x1D;

/// What the scanner appends to each scan.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Suffix {
    /// Carriage return (0x0D), many scanners' default.
    Cr,
    /// Line feed (0x0A).
    Lf,
    /// CR LF.
    #[default]
    CrLf,
}

impl Suffix {
    /// The suffix bytes.
    pub fn bytes(self) -> &'static [u8] {
        match self {
            Suffix::Cr => b"\r",
            Suffix::Lf => b"\n",
            Suffix::CrLf => b"\r\n",
        }
    }
}

/// One symbol as printed on a label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Symbol {
    /// Plain Code 128 (`]C0`): a pick list, order or vehicle number.
    Code128(String),
    /// EAN-13 (`]E0`), 13 digits.
    Ean13(String),
    /// GS1-128 (`]C1`) with these (AI, value) elements.
    Gs1_128(Vec<(String, String)>),
    /// GS1 DataMatrix (`]d2`) with these (AI, value) elements.
    Gs1DataMatrix(Vec<(String, String)>),
}

impl Symbol {
    /// A trade item's GS1-128 label: GTIN (AI 01) and lot (AI 10).
    pub fn item(gtin: &str, lot: Option<&str>) -> Symbol {
        let mut elements = vec![("01".to_string(), gtin.to_string())];
        if let Some(lot) = lot {
            elements.push(("10".into(), lot.into()));
        }
        Symbol::Gs1_128(elements)
    }

    /// A logistic unit's label: SSCC (AI 00), with the count of contained
    /// items (AI 37) when given. GS1 wants (37) beside (02) or (8026) on the
    /// same unit (`req=00+02,00+8026`), usually in another symbol of the
    /// label; the agent's stream decoder judges `req=` across symbols.
    pub fn sscc(sscc: &str, count: Option<u32>) -> Symbol {
        let mut elements = vec![("00".to_string(), sscc.to_string())];
        if let Some(n) = count {
            elements.push(("37".into(), n.to_string()));
        }
        Symbol::Gs1_128(elements)
    }

    /// The data after the identifier, without the suffix.
    pub fn data(&self) -> Vec<u8> {
        match self {
            Symbol::Code128(text) | Symbol::Ean13(text) => text.as_bytes().to_vec(),
            Symbol::Gs1_128(elements) | Symbol::Gs1DataMatrix(elements) => element_string(elements),
        }
    }

    /// The AIM symbology identifier.
    pub fn aim(&self) -> &'static [u8] {
        match self {
            Symbol::Code128(_) => b"]C0",
            Symbol::Ean13(_) => b"]E0",
            Symbol::Gs1_128(_) => b"]C1",
            Symbol::Gs1DataMatrix(_) => b"]d2",
        }
    }

    /// Whether a misread of this symbol is simulated (GS1 symbols only).
    pub fn can_misread(&self) -> bool {
        matches!(self, Symbol::Gs1_128(_) | Symbol::Gs1DataMatrix(_))
    }
}

/// GS1 element strings: AI + value, GS after a variable-length value unless
/// it is the last element.
pub fn element_string(elements: &[(String, String)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, (ai, value)) in elements.iter().enumerate() {
        out.extend_from_slice(ai.as_bytes());
        out.extend_from_slice(value.as_bytes());
        let last = i + 1 == elements.len();
        let predefined = lookup(ai.as_bytes()).is_some_and(|d| d.predefined_length);
        if !last && !predefined {
            out.push(GS);
        }
    }
    out
}

/// The bytes of one good read: identifier, data, suffix.
pub fn scan_bytes(symbol: &Symbol, suffix: Suffix) -> Vec<u8> {
    let mut out = symbol.aim().to_vec();
    out.extend(symbol.data());
    out.extend_from_slice(suffix.bytes());
    out
}

/// The bytes of a misread of a GS1 symbol: `digit` (0–9, chosen by the
/// caller's random source) replaces the key's first digit that differs from
/// it, which breaks the key's check digit. `None` for symbols without a
/// misread model.
pub fn misread_bytes(symbol: &Symbol, suffix: Suffix, digit: u8) -> Option<Vec<u8>> {
    let (Symbol::Gs1_128(elements) | Symbol::Gs1DataMatrix(elements)) = symbol else {
        return None;
    };
    let mut elements = elements.clone();
    let key = elements
        .iter_mut()
        .find(|(ai, _)| ai == "00" || ai == "01")?;
    let wrong = char::from(b'0' + digit % 10);
    let mut chars: Vec<char> = key.1.chars().collect();
    // Not the check digit itself: a wrong data digit is what a bad read gives.
    let data_len = chars.len().saturating_sub(1);
    let slot = chars.iter().take(data_len).position(|c| *c != wrong)?;
    chars[slot] = wrong;
    key.1 = chars.into_iter().collect();
    let bad = match symbol {
        Symbol::Gs1DataMatrix(_) => Symbol::Gs1DataMatrix(elements),
        _ => Symbol::Gs1_128(elements),
    };
    Some(scan_bytes(&bad, suffix))
}

/// Appends the GS1 check digit to `digits` (all ASCII digits), e.g. a
/// GTIN-14 from 13 digits or an SSCC from 17. `None` when a byte is not a digit.
pub fn with_check_digit(digits: &str) -> Option<String> {
    let check = gs1_check_digit(digits.as_bytes())?;
    Some(format!("{digits}{check}"))
}

#[cfg(test)]
mod tests {
    use dockline_firmware::scan::{Content, ScanError, SymbologyKind, parse_scan};

    use super::*;

    /// Strips the suffix as the agent's framer does, then parses.
    fn parse(bytes: &[u8]) -> Result<dockline_firmware::scan::Scan<'_>, ScanError> {
        let end = bytes
            .iter()
            .position(|b| *b == b'\r' || *b == b'\n')
            .unwrap_or(bytes.len());
        parse_scan(&bytes[..end])
    }

    #[test]
    fn gs1_128_item_decodes_to_its_gtin_and_lot() {
        let gtin = with_check_digit("0950600013435").expect("digits");
        assert_eq!(gtin, "09506000134352");
        for suffix in [Suffix::Cr, Suffix::Lf, Suffix::CrLf] {
            let bytes = scan_bytes(&Symbol::item(&gtin, Some("L123")), suffix);
            assert!(bytes.ends_with(suffix.bytes()));
            let scan = parse(&bytes).expect("valid GS1");
            let m = scan.gs1().expect("GS1 content");
            assert_eq!(m.get("01"), Some(gtin.as_str()));
            assert_eq!(m.get("10"), Some("L123"));
        }
    }

    #[test]
    fn a_variable_length_ai_before_another_gets_a_gs() {
        let symbol = Symbol::Gs1DataMatrix(vec![
            ("01".into(), "09521234543213".into()),
            ("10".into(), "ABC123".into()),
            ("21".into(), "SN0001".into()),
        ]);
        let bytes = scan_bytes(&symbol, Suffix::Cr);
        assert_eq!(bytes, b"]d2010952123454321310ABC123\x1d21SN0001\r");
        let scan = parse(&bytes).expect("valid");
        assert_eq!(scan.gs1().and_then(|m| m.get("21")), Some("SN0001"));
    }

    #[test]
    fn sscc_label_decodes_with_its_count() {
        let sscc = with_check_digit("10614141234567890").expect("digits");
        let bytes = scan_bytes(&Symbol::sscc(&sscc, Some(24)), Suffix::CrLf);
        // Alone, (37) lacks its (02): refused per symbol, accepted across symbols.
        assert!(parse(&bytes).is_err());
        let end = bytes.len() - 2;
        let across = dockline_firmware::scan::ScanOptions {
            requisites: dockline_firmware::scan::Requisites::AcrossSymbols,
            ..Default::default()
        };
        let scan = dockline_firmware::scan::parse_scan_with(&bytes[..end], across).expect("valid");
        let m = scan.gs1().expect("GS1");
        assert_eq!(m.get("00"), Some(sscc.as_str()));
        assert_eq!(m.get("37"), Some("24"));
    }

    #[test]
    fn plain_symbols_keep_their_text() {
        let bytes = scan_bytes(&Symbol::Code128("SO-2001".into()), Suffix::Lf);
        let scan = parse(&bytes).expect("valid");
        assert_eq!(scan.content, Content::Text(b"SO-2001"));
        let bytes = scan_bytes(&Symbol::Ean13("5901234123457".into()), Suffix::Cr);
        let scan = parse(&bytes).expect("valid");
        assert_eq!(
            scan.symbology.map(|s| s.kind()),
            Some(SymbologyKind::EanUpc)
        );
    }

    #[test]
    fn every_misread_is_rejected_by_the_check_digit() {
        let symbol = Symbol::item("09506000134352", Some("L7"));
        for digit in 0..10 {
            let bytes = misread_bytes(&symbol, Suffix::CrLf, digit).expect("GS1 misreads");
            assert!(
                parse(&bytes).is_err(),
                "{}",
                String::from_utf8_lossy(&bytes)
            );
        }
        assert_eq!(
            misread_bytes(&Symbol::Code128("SO-1".into()), Suffix::Cr, 3),
            None
        );
    }
}
