//! Errors of the scan parsers: each says which AI, what was expected and what came.

use super::dictionary::{CharSet, Lint};
use super::element::Ai;
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
    /// A GS1 Digital Link URI with a percent-encoded value, not supported here.
    #[error(
        "GS1 Digital Link value of AI ({ai}) is percent-encoded; not supported by the device parser"
    )]
    PercentEncoded {
        /// The AI.
        ai: Ai,
    },
    /// A GS1 Digital Link path names an AI with no value after it.
    #[error("GS1 Digital Link path ends after AI ({ai}) without a value")]
    MissingValue {
        /// The AI.
        ai: Ai,
    },
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
}
