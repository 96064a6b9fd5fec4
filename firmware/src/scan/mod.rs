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
//! Not enforced: AI associations (`req=`/`ex=`), which the dictionary says
//! apply over all symbols on an item, and the code-list linters (ISO 3166,
//! ISO 4217, IBAN, …) listed as unchecked by [`Lint::is_checked`].

mod ai_table;
mod dictionary;
mod digital_link;
mod element;
mod error;
mod symbology;
mod validate;

pub use dictionary::{AiDefinition, CharSet, Component, Lint, definitions, lookup};
pub use digital_link::parse_digital_link;
pub use element::{Ai, Element, GS, Gs1Message, MAX_ELEMENTS, parse_element_string};
pub use error::{Gs1Error, ScanError};
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
    /// Plain data, passed through unchanged (bytes; usually ASCII).
    Text(&'a [u8]),
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
            Content::Text(_) => None,
        }
    }
}

/// Parse one scan (suffix already stripped).
pub fn parse_scan(input: &[u8]) -> Result<Scan<'_>, ScanError> {
    let symbology = match Symbology::from_prefix(input) {
        Some(Ok(s)) => Some(s),
        Some(Err(())) => return Err(ScanError::BadSymbologyId),
        None => None,
    };
    let data = if symbology.is_some() {
        input.get(3..).unwrap_or_default()
    } else {
        input
    };
    let content = if symbology.is_some_and(|s| s.carries_gs1()) {
        Content::Gs1(parse_element_string(data)?)
    } else {
        match core::str::from_utf8(data) {
            Ok(uri) => match parse_digital_link(uri)? {
                Some(message) => Content::DigitalLink { uri, message },
                None => Content::Text(data),
            },
            Err(_) => Content::Text(data),
        }
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

    #[test]
    fn plain_symbols_pass_through() {
        let scan = parse_scan(b"]E05901234123457").expect("valid");
        assert_eq!(
            scan.symbology.map(|s| s.kind()),
            Some(SymbologyKind::EanUpc)
        );
        assert_eq!(scan.content, Content::Text(b"5901234123457"));
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
}
