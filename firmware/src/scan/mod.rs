//! Barcode scans: AIM symbology identifiers, GS1 element strings and GS1
//! Digital Link URIs, validated against the GS1 Barcode Syntax Dictionary.
//!
//! Input is one scan as the scanner sent it, with the transport suffix (CR,
//! LF) already stripped by the framer: `]C1` + data, FNC1 separators as GS
//! (0x1D). The result borrows from the input and never allocates.
//!
//! * A GS1 identifier (`]C1`, `]e0`, `]d2`, `]Q3`, `]J1`) makes the data GS1
//!   element strings, which must validate (AIs, lengths, character sets, check
//!   digits, dates) or the scan is rejected with a precise [`Gs1Error`].
//! * Any other identifier, or none, is plain data ([`Content::Text`]); when
//!   that text is a GS1 Digital Link URI its AIs are extracted and validated
//!   ([`Content::DigitalLink`]).
//!
//! Every value passes its dictionary components (length, character set and
//! every linter except those [`Lint::is_checked`] lists as not carried), then
//! the message passes the repeat and `req=`/`ex=` association rules of one
//! symbol. Every refusal names its rule ([`Gs1Error::rule`]) and the AI.

mod ai_table;
mod association;
mod code_lists;
mod dictionary;
mod digital_link;
mod element;
mod error;
mod retail;
mod symbology;
mod validate;

pub use association::{RequirementText, Requisites};
pub use dictionary::{
    AiDefinition, CharSet, Component, Lint, Requirement, ai_matches, definitions, lookup,
};
pub use digital_link::parse_digital_link;
pub use element::{
    Ai, Element, GS, Gs1Message, MAX_ELEMENTS, parse_element_string, parse_element_string_with,
};
pub use error::{Gs1Error, ScanError};
pub use retail::{RetailCode, RetailFault, RetailKind, expand_upc_e};
pub use symbology::{Symbology, SymbologyKind};
pub use validate::{DateFault, gs1_check_digit};

/// What a scan carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content<'a> {
    /// GS1 element strings from a GS1 symbology.
    Gs1(Gs1Message<'a>),
    /// A GS1 Digital Link URI in a plain symbol, with its AIs.
    DigitalLink {
        /// The URI as scanned.
        uri: &'a str,
        /// The AIs from its path and query.
        message: Gs1Message<'a>,
    },
    /// An EAN/UPC symbol (`]E0`–`]E4`), length and check digit verified.
    Retail(RetailCode<'a>),
    /// Plain data, passed through unchanged (bytes; usually ASCII).
    Text(&'a [u8]),
}

/// What to do with a scan that has no AIM identifier, per scanner.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum WithoutAim {
    /// Accept it as plain data (a GS1 Digital Link URI is still recognised).
    /// Such a scanner cannot tell GS1-128 from Code 128: GS1 element strings
    /// arrive as plain text.
    #[default]
    AcceptPlain,
    /// Refuse it ([`ScanError::MissingSymbologyId`]): for scanners that are
    /// configured to send AIM identifiers, where a scan without one is debris.
    Refuse,
}

/// Per-scanner settings the bytes alone cannot tell.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScanOptions {
    /// Scans without an AIM identifier.
    pub without_aim: WithoutAim,
    /// Where GS1 `req=` associations are judged.
    pub requisites: Requisites,
}

/// One parsed scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scan<'a> {
    /// The AIM identifier, when the scanner sent one.
    pub symbology: Option<Symbology>,
    /// The data after the identifier, as received.
    pub data: &'a [u8],
    /// What the data means.
    pub content: Content<'a>,
}

impl<'a> Scan<'a> {
    /// The GS1 AI data, from element strings or a Digital Link URI.
    pub fn gs1(&self) -> Option<&Gs1Message<'a>> {
        match &self.content {
            Content::Gs1(m) | Content::DigitalLink { message: m, .. } => Some(m),
            Content::Retail(_) | Content::Text(_) => None,
        }
    }
}

/// Parse one scan (suffix already stripped), accepting scans without an AIM
/// identifier as plain data.
pub fn parse_scan(input: &[u8]) -> Result<Scan<'_>, ScanError> {
    parse_scan_with(input, ScanOptions::default())
}

/// Parse one scan (suffix already stripped) under a scanner's `options`.
pub fn parse_scan_with(input: &[u8], options: ScanOptions) -> Result<Scan<'_>, ScanError> {
    let symbology = match Symbology::from_prefix(input) {
        Some(Ok(s)) if s.is_assigned() => Some(s),
        Some(Ok(id)) => return Err(ScanError::UnknownSymbology { id }),
        Some(Err(())) => return Err(ScanError::BadSymbologyId),
        None if options.without_aim == WithoutAim::Refuse => {
            return Err(ScanError::MissingSymbologyId);
        }
        None => None,
    };
    let data = if symbology.is_some() {
        input.get(3..).unwrap_or_default()
    } else {
        input
    };
    let content = match symbology {
        Some(s) if s.carries_gs1() => {
            Content::Gs1(parse_element_string_with(data, options.requisites)?)
        }
        Some(id) if id.kind() == SymbologyKind::EanUpc => Content::Retail(
            retail::parse_retail(id.modifier, data)
                .map_err(|fault| ScanError::Retail { id, fault })?,
        ),
        _ => match core::str::from_utf8(data) {
            Ok(uri) => match parse_digital_link(uri)? {
                Some(message) => Content::DigitalLink { uri, message },
                None => Content::Text(data),
            },
            Err(_) => Content::Text(data),
        },
    };
    Ok(Scan {
        symbology,
        data,
        content,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::string::ToString;

    #[test]
    fn gs1_databar_is_checked_as_gs1_element_strings() {
        // DataBar Omnidirectional/Truncated/Stacked/Limited: the (01) GTIN.
        let scan = parse_scan(b"]e00109521234543213").expect("valid");
        assert_eq!(
            scan.symbology.map(|s| s.kind()),
            Some(SymbologyKind::Gs1DataBar)
        );
        assert_eq!(scan.gs1().and_then(|m| m.get("01")), Some("09521234543213"));
        // DataBar Expanded: weight, date, lot, with FNC1 after variable AIs.
        let scan = parse_scan(b"]e00109521234543213310300125015261231").expect("valid");
        assert_eq!(scan.gs1().and_then(|m| m.get("3103")), Some("001250"));
        let refused = |input: &[u8]| {
            parse_scan(input)
                .map(|_| ())
                .map_err(|e| ScanError::rule(&e))
        };
        assert_eq!(refused(b"]e00109521234543214"), Err("csum"));
        assert_eq!(refused(b"]e0010952123454321"), Err("length"));
        assert_eq!(refused(b"]e0"), Err("empty"));
        assert_eq!(refused(b"]e0HELLO"), Err("unknown_ai"));
        assert_eq!(refused(b"]e039221299"), Err("req"));
        assert_eq!(refused(b"]e0010952123454321315261301"), Err("date"));
        assert_eq!(refused(b"]e40109521234543213"), Err("aim_unknown"));
        // Composite data after a symbol separator: passed on as plain data.
        let scan = parse_scan(b"]e1ABC").expect("valid");
        assert_eq!(scan.content, Content::Text(b"ABC"));
    }

    #[test]
    fn plain_symbols_pass_through() {
        let scan = parse_scan(b"]C0HELLO").expect("valid");
        assert_eq!(scan.content, Content::Text(b"HELLO"));
        let scan = parse_scan(b"HELLO\xff").expect("valid");
        assert_eq!(scan.symbology, None);
        assert_eq!(scan.content, Content::Text(b"HELLO\xff"));
    }

    #[test]
    fn gs1_symbols_are_validated() {
        let scan = parse_scan(b"]d20109521234543213").expect("valid");
        assert_eq!(scan.gs1().and_then(|m| m.get("01")), Some("09521234543213"));
        assert!(matches!(
            parse_scan(b"]C10109521234543214"),
            Err(ScanError::Gs1(Gs1Error::CheckDigit { .. }))
        ));
        assert_eq!(parse_scan(b"]\x01x"), Err(ScanError::BadSymbologyId));
    }

    #[test]
    fn retail_symbols_are_checked() {
        let scan = parse_scan(b"]E05901234123457").expect("valid");
        assert!(matches!(scan.content, Content::Retail(ref r) if r.gtin == "5901234123457"));
        let err = parse_scan(b"]E05901234123458").expect_err("bad check digit");
        assert_eq!(err.rule(), "retail_csum");
        assert_eq!(
            err.to_string(),
            "]E0 scan refused: check digit is 8, expected 7; a misread, scan again"
        );
        assert_eq!(
            parse_scan(b"]E402345674").map_err(|e| e.rule()),
            Err("retail_csum")
        );
        assert_eq!(
            parse_scan(b"]E5123").map_err(|e| e.rule()),
            Err("aim_unknown")
        );
    }

    #[test]
    fn unknown_identifiers_and_the_no_aim_policy() {
        assert!(matches!(
            parse_scan(b"]XX123"),
            Err(ScanError::UnknownSymbology { .. })
        ));
        assert!(parse_scan(b"]X0123").is_ok());
        let refuse = ScanOptions {
            without_aim: WithoutAim::Refuse,
            ..ScanOptions::default()
        };
        assert_eq!(
            parse_scan_with(b"0109521234543213", refuse),
            Err(ScanError::MissingSymbologyId)
        );
        assert!(parse_scan(b"0109521234543213").is_ok());
        assert!(parse_scan_with(b"]C10109521234543213", refuse).is_ok());
    }
}
