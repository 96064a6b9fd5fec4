//! GS1 element strings: AI + value pairs as they come out of a GS1 symbol.
//!
//! Parsing follows the GS1 Syntax Engine: an AI marked `*` (pre-defined
//! length) takes exactly its fixed length and a GS after it is tolerated; any
//! other AI takes everything up to the next GS (or the end) and is then checked
//! against its dictionary length, so a missing GS shows up as "too long" where
//! it can be detected. A trailing GS is tolerated. Values borrow from the
//! input: nothing is copied and no allocation happens. After every value has
//! passed its own checks, the message as a whole must pass the repeat and
//! association rules of [`super::association`].

use core::fmt;

use heapless::Vec;

use super::association::{Requisites, check_associations};
use super::dictionary::{self, AiDefinition};
use super::error::Gs1Error;
use super::validate::validate_value;

/// The FNC1 separator as scanners transmit it (ASCII GS).
pub const GS: u8 = 0x1D;

/// Most element strings kept for one symbol.
pub const MAX_ELEMENTS: usize = 32;

/// An Application Identifier: 2 to 4 digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ai {
    digits: [u8; 4],
    len: u8,
}

impl Ai {
    /// The AI from its digits (`b"01"`, `b"3103"`); `None` unless 2–4 ASCII digits.
    pub fn new(digits: &[u8]) -> Option<Ai> {
        if !(2..=4).contains(&digits.len()) || !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let mut ai = Ai {
            digits: [0; 4],
            len: u8::try_from(digits.len()).ok()?,
        };
        ai.digits.get_mut(..digits.len())?.copy_from_slice(digits);
        Some(ai)
    }

    /// The AI as text (`"01"`).
    pub fn as_str(&self) -> &str {
        let digits = self.digits.get(..usize::from(self.len)).unwrap_or_default();
        core::str::from_utf8(digits).unwrap_or_default()
    }

    /// The dictionary definition of this AI.
    pub fn definition(&self) -> Option<&'static AiDefinition> {
        dictionary::lookup(self.as_str().as_bytes())
    }
}

impl fmt::Display for Ai {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Ai {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Ai({})", self.as_str())
    }
}

/// One validated element string: an AI and its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Element<'a> {
    /// The Application Identifier.
    pub ai: Ai,
    /// The value as it appears in the data, validated against the dictionary
    /// after percent-decoding when `escaped` is set.
    pub value: &'a str,
    /// `value` is percent-encoded (a Digital Link URI value with `%XX`
    /// escapes); read it with [`Element::value_bytes`] or
    /// [`Element::write_value`]. Element strings are never escaped.
    pub escaped: bool,
}

impl Element<'_> {
    /// The value's bytes, percent-decoded when `escaped`.
    pub fn value_bytes(&self) -> impl Iterator<Item = u8> + '_ {
        PercentDecoded {
            bytes: self.value.as_bytes(),
            decode: self.escaped,
        }
    }

    /// Write the value, percent-decoded when `escaped`.
    pub fn write_value(&self, out: &mut impl fmt::Write) -> fmt::Result {
        if !self.escaped {
            return out.write_str(self.value);
        }
        for b in self.value_bytes() {
            out.write_char(char::from(b))?;
        }
        Ok(())
    }

    /// The dictionary title of the AI (`"GTIN"`, `"BATCH/LOT"`).
    pub fn title(&self) -> &'static str {
        self.ai.definition().map(|d| d.title).unwrap_or_default()
    }

    /// For the decimal measure AIs `31nn`–`36nn` (and others whose 4th digit
    /// gives the decimals, e.g. `392n`): the value as an integer mantissa and
    /// the number of decimals, e.g. `3103` `001250` → `(1250, 3)` = 1.250.
    pub fn decimal(&self) -> Option<(u64, u8)> {
        let ai = self.ai.as_str().as_bytes();
        match ai {
            [b'3', b'1'..=b'6', _, d] | [b'3', b'9', b'0'..=b'3', d] => {
                let mantissa = super::validate::digits_value(Some(self.value.as_bytes()))?;
                Some((mantissa, d - b'0'))
            }
            _ => None,
        }
    }
}

/// Percent-decoding over bytes: `%XX` (two hex digits) is one byte; anything
/// else passes through (validation refuses a malformed escape beforehand).
pub(crate) struct PercentDecoded<'a> {
    pub(crate) bytes: &'a [u8],
    pub(crate) decode: bool,
}

impl Iterator for PercentDecoded<'_> {
    type Item = u8;
    fn next(&mut self) -> Option<u8> {
        let (&first, rest) = self.bytes.split_first()?;
        if self.decode
            && first == b'%'
            && let Some(hex) = rest.get(..2)
            && let Some(byte) = core::str::from_utf8(hex)
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            self.bytes = rest.get(2..).unwrap_or_default();
            return Some(byte);
        }
        self.bytes = rest;
        Some(first)
    }
}

/// The validated element strings of one GS1 symbol, in symbol order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Gs1Message<'a> {
    elements: Vec<Element<'a>, MAX_ELEMENTS>,
}

impl<'a> Gs1Message<'a> {
    /// The element strings in order.
    pub fn elements(&self) -> &[Element<'a>] {
        &self.elements
    }

    /// The value of the first element with AI `ai` (`"01"`).
    pub fn get(&self, ai: &str) -> Option<&'a str> {
        self.elements
            .iter()
            .find(|e| e.ai.as_str() == ai)
            .map(|e| e.value)
    }

    pub(crate) fn push(&mut self, element: Element<'a>) -> Result<(), Gs1Error> {
        self.elements
            .push(element)
            .map_err(|_| Gs1Error::TooManyElements { max: MAX_ELEMENTS })
    }

    /// Write the bracketed human-readable form: `(01)09521234543213(10)ABC`.
    pub fn write_bracketed(&self, out: &mut impl fmt::Write) -> fmt::Result {
        for e in &self.elements {
            write!(out, "({})", e.ai)?;
            e.write_value(out)?;
        }
        Ok(())
    }

    /// Write the element string as a scanner sends it after the AIM identifier:
    /// AIs and values, with GS after every value whose AI is not of pre-defined
    /// length, except the last. [`parse_element_string`] reads it back.
    pub fn write_element_string(&self, out: &mut impl fmt::Write) -> fmt::Result {
        let count = self.elements.len();
        for (i, e) in self.elements.iter().enumerate() {
            out.write_str(e.ai.as_str())?;
            e.write_value(out)?;
            let predefined = e.ai.definition().is_some_and(|d| d.predefined_length);
            if !predefined && i + 1 < count {
                out.write_char(char::from(GS))?;
            }
        }
        Ok(())
    }
}

impl fmt::Display for Gs1Message<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write_bracketed(f)
    }
}

/// Parse and validate GS1 element strings (the data after `]C1`, `]d2`, `]Q3`,
/// `]e0`, …), GS (0x1D) standing for FNC1; `req=` judged within this data.
pub fn parse_element_string(data: &[u8]) -> Result<Gs1Message<'_>, Gs1Error> {
    parse_element_string_with(data, Requisites::PerSymbol)
}

/// [`parse_element_string`], with the `req=` rules judged where `requisites` says.
pub fn parse_element_string_with(
    data: &[u8],
    requisites: Requisites,
) -> Result<Gs1Message<'_>, Gs1Error> {
    // A leading FNC1 is implied by the symbology identifier; some scanners send it anyway.
    let start = usize::from(data.first() == Some(&GS));
    if let Some(offset) = data.iter().position(|b| *b == b'^') {
        return Err(Gs1Error::Caret { offset });
    }
    let mut message = Gs1Message::default();
    let mut pos = start;
    while pos < data.len() {
        let rest = data.get(pos..).unwrap_or_default();
        let (def, ai_len) =
            dictionary::lookup_prefix(rest).ok_or(Gs1Error::UnknownAi { offset: pos })?;
        let ai = rest
            .get(..ai_len)
            .and_then(Ai::new)
            .ok_or(Gs1Error::UnknownAi { offset: pos })?;
        let after_ai = rest.get(ai_len..).unwrap_or_default();
        let until_gs = after_ai
            .iter()
            .position(|b| *b == GS)
            .unwrap_or(after_ai.len());
        let value_len = if def.predefined_length {
            def.max_length().min(until_gs)
        } else {
            until_gs
        };
        let value = after_ai.get(..value_len).unwrap_or_default();
        validate_value(ai, def, value)?;
        let value = core::str::from_utf8(value).map_err(|_| Gs1Error::UnknownAi { offset: pos })?;
        message.push(Element {
            ai,
            value,
            escaped: false,
        })?;
        pos += ai_len + value_len;
        if data.get(pos) == Some(&GS) {
            pos += 1;
        }
    }
    if message.elements.is_empty() {
        return Err(Gs1Error::Empty);
    }
    check_associations(&message, requisites)?;
    Ok(message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use heapless::String;

    fn bracketed(data: &[u8]) -> Result<String<256>, Gs1Error> {
        let message = parse_element_string(data)?;
        let mut s = String::new();
        message.write_bracketed(&mut s).expect("fits");
        Ok(s)
    }

    #[test]
    fn splits_fixed_and_variable_ais() {
        assert_eq!(
            bracketed(b"011231231231233310ABC123\x1D99TESTING").as_deref(),
            Ok("(01)12312312312333(10)ABC123(99)TESTING")
        );
        assert_eq!(
            bracketed(b"0109521234543213\x1D3103001250").as_deref(),
            Ok("(01)09521234543213(3103)001250")
        );
        assert_eq!(
            bracketed(b"\x1D0109521234543213\x1D").as_deref(),
            Ok("(01)09521234543213")
        );
    }

    #[test]
    fn reports_the_failing_ai() {
        assert_eq!(
            parse_element_string(b"0109521234543214"),
            Err(Gs1Error::CheckDigit {
                ai: Ai::new(b"01").expect("valid"),
                expected: 3,
                found: 4
            })
        );
        assert!(matches!(
            parse_element_string(b"40212345678901234560109521234543213"),
            Err(Gs1Error::TooLong { max: 17, .. })
        ));
        assert!(matches!(
            parse_element_string(b"00106141412345678908\r"),
            Err(Gs1Error::UnknownAi { .. })
        ));
        assert!(matches!(
            parse_element_string(b"010952123454321"),
            Err(Gs1Error::TooShort {
                min: 14,
                found: 13,
                ..
            })
        ));
        assert!(matches!(
            parse_element_string(b"10AB\x01"),
            Err(Gs1Error::InvalidCharacter {
                found: 1,
                position: 2,
                ..
            })
        ));
        assert_eq!(parse_element_string(b""), Err(Gs1Error::Empty));
    }

    #[test]
    fn dates_allow_day_zero_only_where_the_dictionary_does() {
        assert!(parse_element_string(b"0109521234543213\x1D17261200").is_ok());
        assert!(parse_element_string(b"010952123454321315200229").is_ok());
        assert!(parse_element_string(b"010952123454321315210229").is_err());
        assert!(parse_element_string(b"010952123454321317261301").is_err());
        // 7006 is yymmdd: day 00 is not allowed.
        assert!(parse_element_string(b"7006261200").is_err());
    }

    #[test]
    fn decimal_measures() {
        let m = parse_element_string(b"01095212345432133103001250").expect("valid");
        assert_eq!(m.elements()[1].decimal(), Some((1250, 3)));
        assert_eq!(m.elements()[1].title(), "NET WEIGHT (kg)");
    }

    #[test]
    fn element_string_round_trips() {
        let data = b"0109521234543213\x1D10ABC\x1D21SN1\x1D3103001250";
        let message = parse_element_string(data).expect("valid");
        let mut s: String<256> = String::new();
        message.write_element_string(&mut s).expect("fits");
        assert_eq!(parse_element_string(s.as_bytes()), Ok(message));
    }
}
