//! AIM / ISO/IEC 15424 symbology identifiers: `]` + code character + modifier.

use core::fmt;

/// What kind of symbol the code character names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SymbologyKind {
    /// `A`: Code 39.
    Code39,
    /// `C`: Code 128 (`]C1` = GS1-128).
    Code128,
    /// `E`: EAN/UPC.
    EanUpc,
    /// `F`: Codabar.
    Codabar,
    /// `G`: Code 93.
    Code93,
    /// `I`: Interleaved 2 of 5 / ITF-14.
    Itf,
    /// `L`: PDF417.
    Pdf417,
    /// `Q`: QR Code (`]Q3` = GS1 QR).
    Qr,
    /// `d`: Data Matrix (`]d2` = GS1 DataMatrix).
    DataMatrix,
    /// `e`: GS1 DataBar and composite components.
    Gs1DataBar,
    /// `z`: Aztec.
    Aztec,
    /// `J`: DotCode (`]J1` = GS1 DotCode).
    DotCode,
    /// Any other code character.
    Other,
}

/// A three-character AIM symbology identifier such as `]C1`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Symbology {
    /// The code character (`C`, `d`, `Q`, …).
    pub code: u8,
    /// The modifier character (`0`, `1`, `2`, …).
    pub modifier: u8,
}

impl Symbology {
    /// Read the identifier at the start of `data`: `None` when `data` does not
    /// start with `]`, `Some(Err(()))` when it starts with `]` but the next two
    /// bytes are not an ASCII letter and an ASCII alphanumeric modifier.
    pub fn from_prefix(data: &[u8]) -> Option<Result<Symbology, ()>> {
        match data {
            [b']', code, modifier, ..]
                if code.is_ascii_alphabetic() && modifier.is_ascii_alphanumeric() =>
            {
                Some(Ok(Symbology {
                    code: *code,
                    modifier: *modifier,
                }))
            }
            [b']', ..] => Some(Err(())),
            _ => None,
        }
    }

    /// The symbology family.
    pub fn kind(&self) -> SymbologyKind {
        match self.code {
            b'A' => SymbologyKind::Code39,
            b'C' => SymbologyKind::Code128,
            b'E' => SymbologyKind::EanUpc,
            b'F' => SymbologyKind::Codabar,
            b'G' => SymbologyKind::Code93,
            b'I' => SymbologyKind::Itf,
            b'L' => SymbologyKind::Pdf417,
            b'Q' => SymbologyKind::Qr,
            b'd' => SymbologyKind::DataMatrix,
            b'e' => SymbologyKind::Gs1DataBar,
            b'z' => SymbologyKind::Aztec,
            b'J' => SymbologyKind::DotCode,
            _ => SymbologyKind::Other,
        }
    }

    /// Whether the identifier announces GS1 element strings (FNC1 in first
    /// position): `]C1`, `]e0`, `]d2`, `]Q3`, `]J1`.
    pub fn carries_gs1(&self) -> bool {
        matches!(
            (self.code, self.modifier),
            (b'C', b'1') | (b'e', b'0') | (b'd', b'2') | (b'Q', b'3') | (b'J', b'1')
        )
    }

    /// Whether the code character is one ISO/IEC 15424 assigns (and, for
    /// EAN/UPC, the modifier one of `0`–`4`; for GS1 DataBar, `0`–`3`). An unknown identifier means a
    /// misconfigured scanner or data that merely starts with `]`.
    pub fn is_assigned(&self) -> bool {
        const CODES: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUXYZcdeghopsz";
        let modifier_ok = match self.code {
            b'E' => (b'0'..=b'4').contains(&self.modifier),
            // GS1 DataBar and composites (ISO/IEC 24724, 24723): `]e0` data
            // (GS1 element strings), `]e1` data after an encoded symbol
            // separator, `]e2` after an escape character, `]e3` reader
            // initialisation; nothing else.
            b'e' => (b'0'..=b'3').contains(&self.modifier),
            // "Other", system expansion and non-barcode data: hexadecimal modifiers.
            b'X' | b'Y' | b'Z' => matches!(self.modifier, b'0'..=b'9' | b'A'..=b'F'),
            _ => true,
        };
        CODES.contains(&self.code) && modifier_ok
    }

    /// The identifier as three characters (`"]C1"`).
    pub fn as_bytes(&self) -> [u8; 3] {
        [b']', self.code, self.modifier]
    }
}

impl fmt::Display for Symbology {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "]{}{}", char::from(self.code), char::from(self.modifier))
    }
}

impl fmt::Debug for Symbology {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Symbology({self})")
    }
}
