//! Errors of the scan parsers: each says which AI, what was expected and what came.

use super::association::RequirementText;
use super::dictionary::{CharSet, Lint};
use super::element::Ai;
use super::retail::RetailFault;
use super::symbology::Symbology;
use super::validate::DateFault;

/// Why GS1 element-string data was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Gs1Error {
    /// The symbol says GS1 but carries no data.
    #[error("GS1 symbol carries no data")]
    Empty,
    /// No AI of the GS1 Syntax Dictionary starts the data at `offset`.
    #[error(
        "no known GS1 AI starts the data at byte {offset}; check for transport debris (CR/LF) or a missing FNC1/GS"
    )]
    UnknownAi {
        /// Byte offset in the element string.
        offset: usize,
    },
    /// A value is shorter than its AI allows.
    #[error("AI ({ai}) value is {found} characters, expected at least {min}")]
    TooShort {
        /// The AI.
        ai: Ai,
        /// Minimum length from the dictionary.
        min: usize,
        /// Length received.
        found: usize,
    },
    /// A value is longer than its AI allows (often a missing GS separator).
    #[error(
        "AI ({ai}) value is {found} characters, expected at most {max}; a GS separator may be missing"
    )]
    TooLong {
        /// The AI.
        ai: Ai,
        /// Maximum length from the dictionary.
        max: usize,
        /// Length received.
        found: usize,
    },
    /// A byte outside the AI's character set.
    #[error("AI ({ai}) value has byte 0x{found:02x} at position {position}, expected a character of set {}", expected.letter())]
    InvalidCharacter {
        /// The AI.
        ai: Ai,
        /// Position in the value.
        position: usize,
        /// The byte received.
        found: u8,
        /// The set the dictionary requires.
        expected: CharSet,
    },
    /// A GS1 mod-10 check digit is wrong.
    #[error("AI ({ai}) check digit is {found}, expected {expected}")]
    CheckDigit {
        /// The AI.
        ai: Ai,
        /// The check digit computed from the data.
        expected: u8,
        /// The check digit received.
        found: u8,
    },
    /// A date that does not exist.
    #[error("AI ({ai}) holds an impossible date ({fault:?} out of range)")]
    InvalidDate {
        /// The AI.
        ai: Ai,
        /// Which part is wrong.
        fault: DateFault,
    },
    /// Another dictionary content check failed.
    #[error("AI ({ai}) value fails the dictionary check `{}`", lint.name())]
    Lint {
        /// The AI.
        ai: Ai,
        /// The failing check.
        lint: Lint,
    },
    /// More element strings than [`MAX_ELEMENTS`](super::MAX_ELEMENTS).
    #[error("more than {max} GS1 element strings in one symbol")]
    TooManyElements {
        /// The capacity.
        max: usize,
    },
    /// A `^` in the data: GS1 forbids it (it stands for FNC1 in some tools).
    #[error("'^' at byte {offset} is not allowed in GS1 data")]
    Caret {
        /// Byte offset in the element string.
        offset: usize,
    },
    /// A GS1 Digital Link value with a `%` not followed by two hex digits.
    #[error("GS1 Digital Link value of AI ({ai}) has a malformed %-escape (expected %XX)")]
    BadEscape {
        /// The AI.
        ai: Ai,
    },
    /// A GS1 Digital Link key path whose qualifiers do not fit the key.
    #[error(
        "GS1 Digital Link path after key AI ({ai}) has qualifiers this key does not take, or out of order (dictionary rule dlpkey=)"
    )]
    DlPath {
        /// The primary key AI.
        ai: Ai,
    },
    /// A GS1 Digital Link query parameter naming an AI that may not be a data attribute.
    #[error(
        "AI ({ai}) may not be a GS1 Digital Link query attribute (no '?' flag in the dictionary); it belongs in the path or not in a Digital Link"
    )]
    DlNotAttribute {
        /// The AI.
        ai: Ai,
    },
    /// The same AI twice with different values.
    #[error(
        "AI ({ai}) appears twice with different values (GS1 rule: repeated AIs must agree); the data mixes two items"
    )]
    RepeatedAi {
        /// The AI.
        ai: Ai,
    },
    /// Two AIs that the dictionary forbids together (`ex=`).
    #[error(
        "AI ({ai}) must not appear with AI ({with}) (dictionary rule ex=); the data mixes two items or the label is wrong"
    )]
    Excluded {
        /// The AI whose `ex=` attribute forbids the pair.
        ai: Ai,
        /// The AI it must not appear with.
        with: Ai,
    },
    /// An AI whose `req=` attribute is not satisfied by the other AIs.
    #[error(
        "AI ({ai}) needs one of {requires} in the same data (dictionary rule req=); scan the label's other symbol or check the label"
    )]
    Unsatisfied {
        /// The AI.
        ai: Ai,
        /// Its requirement, as the dictionary writes it.
        requires: RequirementText,
    },
    /// A GS1 Digital Link path names an AI with no value after it.
    #[error("GS1 Digital Link path ends after AI ({ai}) without a value")]
    MissingValue {
        /// The AI.
        ai: Ai,
    },
}

impl Gs1Error {
    /// The rule that refused the data, as a short stable name for counters and
    /// logs: `empty`, `unknown_ai`, `length`, `charset`, a linter name
    /// (`csum`, `yymmd0`, `iso3166`, …), `repeat`, `ex`, `req`, `caret`,
    /// `capacity`, `dl_syntax`, `dlpkey`, `dl_attribute`.
    pub fn rule(&self) -> &'static str {
        match self {
            Gs1Error::Empty => "empty",
            Gs1Error::UnknownAi { .. } => "unknown_ai",
            Gs1Error::TooShort { .. } | Gs1Error::TooLong { .. } => "length",
            Gs1Error::InvalidCharacter { .. } => "charset",
            Gs1Error::CheckDigit { .. } => "csum",
            Gs1Error::InvalidDate { .. } => "date",
            Gs1Error::Lint { lint, .. } => lint.name(),
            Gs1Error::TooManyElements { .. } => "capacity",
            Gs1Error::Caret { .. } => "caret",
            Gs1Error::RepeatedAi { .. } => "repeat",
            Gs1Error::Excluded { .. } => "ex",
            Gs1Error::Unsatisfied { .. } => "req",
            Gs1Error::BadEscape { .. } | Gs1Error::MissingValue { .. } => "dl_syntax",
            Gs1Error::DlPath { .. } => "dlpkey",
            Gs1Error::DlNotAttribute { .. } => "dl_attribute",
        }
    }
}

/// Why a scan (AIM identifier + data) was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ScanError {
    /// Data starts with `]` but not with a valid three-character AIM identifier.
    #[error("scan starts with ']' but not with an AIM symbology identifier ']' letter modifier")]
    BadSymbologyId,
    /// The symbology says GS1 but the data is not valid GS1 element strings.
    #[error(transparent)]
    Gs1(#[from] Gs1Error),
    /// A well-formed identifier that ISO/IEC 15424 does not assign.
    #[error(
        "symbology identifier {id} is not assigned by ISO/IEC 15424; check the scanner's AIM identifier setting"
    )]
    UnknownSymbology {
        /// The identifier received.
        id: Symbology,
    },
    /// An EAN/UPC symbol whose data is not what its identifier carries.
    #[error("{id} scan refused: {}", RetailText(*fault))]
    Retail {
        /// The identifier (`]E0`, `]E4`, …).
        id: Symbology,
        /// What was wrong.
        fault: RetailFault,
    },
    /// The device policy requires AIM identifiers and the scan had none.
    #[error(
        "scan has no AIM symbology identifier and this scanner's policy refuses such scans; enable AIM IDs on the scanner (or set the device to accept plain data)"
    )]
    MissingSymbologyId,
}

impl ScanError {
    /// The rule that refused the scan, as a short stable name for counters:
    /// [`Gs1Error::rule`] for GS1 data, else `aim_syntax`, `aim_unknown`,
    /// `aim_missing`, `retail_length`, `retail_charset`, `retail_csum`.
    pub fn rule(&self) -> &'static str {
        match self {
            ScanError::BadSymbologyId => "aim_syntax",
            ScanError::Gs1(e) => e.rule(),
            ScanError::UnknownSymbology { .. } => "aim_unknown",
            ScanError::MissingSymbologyId => "aim_missing",
            ScanError::Retail { fault, .. } => match fault {
                RetailFault::Length { .. } | RetailFault::UpcENumberSystem => "retail_length",
                RetailFault::NonDigit { .. } => "retail_charset",
                RetailFault::CheckDigit { .. } => "retail_csum",
            },
        }
    }
}

/// A [`RetailFault`] in words.
struct RetailText(RetailFault);

impl core::fmt::Display for RetailText {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.0 {
            RetailFault::Length { found, expected } => {
                write!(f, "{found} digits, expected {expected}")
            }
            RetailFault::NonDigit { position } => {
                write!(
                    f,
                    "non-digit at position {position}; EAN/UPC data is digits only"
                )
            }
            RetailFault::CheckDigit { expected, found } => write!(
                f,
                "check digit is {found}, expected {expected}; a misread, scan again"
            ),
            RetailFault::UpcENumberSystem => {
                f.write_str("8-digit UPC-E must start with number system 0 or 1")
            }
        }
    }
}
