//! EAN/UPC symbols (`]E0`–`]E4`): length, digits and check digit, and UPC-E
//! expansion.
//!
//! What each AIM modifier carries (ISO/IEC 15424, GS1 General Specifications
//! 5.1.2):
//!
//! | id | data |
//! |---|---|
//! | `]E0` | EAN-13 (13 digits; UPC-A is EAN-13 with a leading `0`). Scanners set to send UPC-A as 12 digits, or UPC-E unexpanded as 8 digits (number system `0`/`1`, six digits, check), are read as such |
//! | `]E1` | a two-digit add-on alone |
//! | `]E2` | a five-digit add-on alone |
//! | `]E3` | EAN-13 with its add-on: 13 + 2 or 13 + 5 digits |
//! | `]E4` | EAN-8 (8 digits) |
//!
//! The check digit is the GS1 mod-10 over the GTIN; a UPC-E's check digit is
//! that of its expansion to UPC-A, so UPC-E is expanded before it is checked.
//! Add-ons carry no check digit of their own.

use heapless::String;

use super::validate::gs1_check_digit;

/// Which EAN/UPC symbol a scan was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetailKind {
    /// EAN-13 (13 digits, not starting with `0`).
    Ean13,
    /// UPC-A (sent as 13 digits with a leading `0`, or as 12).
    UpcA,
    /// UPC-E, sent unexpanded as 8 digits; `gtin` holds its UPC-A expansion.
    UpcE,
    /// EAN-8.
    Ean8,
    /// A two- or five-digit add-on alone (`]E1`, `]E2`); no GTIN.
    AddOn,
}

/// A validated EAN/UPC scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetailCode<'a> {
    /// The symbol.
    pub kind: RetailKind,
    /// The GTIN as GTIN-8, -12 or -13 digits (UPC-E expanded to 12); empty for
    /// an add-on alone.
    pub gtin: String<13>,
    /// The add-on digits (`]E1`, `]E2`, `]E3`), if any.
    pub add_on: Option<&'a str>,
}

/// Why an EAN/UPC scan was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetailFault {
    /// The data is not a length this identifier carries.
    Length {
        /// Digits received.
        found: usize,
        /// What the identifier allows, in words.
        expected: &'static str,
    },
    /// A byte that is not a digit.
    NonDigit {
        /// Its position in the data.
        position: usize,
    },
    /// The check digit does not match.
    CheckDigit {
        /// The check digit computed from the data.
        expected: u8,
        /// The check digit received.
        found: u8,
    },
    /// An 8-digit UPC-E whose number system is not `0` or `1`.
    UpcENumberSystem,
}

/// Validate the data of an EAN/UPC scan with AIM modifier `modifier`.
pub(crate) fn parse_retail(modifier: u8, data: &[u8]) -> Result<RetailCode<'_>, RetailFault> {
    if let Some(position) = data.iter().position(|b| !b.is_ascii_digit()) {
        return Err(RetailFault::NonDigit { position });
    }
    let text = core::str::from_utf8(data).unwrap_or_default();
    let length = |expected| RetailFault::Length {
        found: data.len(),
        expected,
    };
    match modifier {
        b'0' => match data.len() {
            13 => gtin(text, None),
            12 => gtin(text, None),
            8 => upc_e(text),
            _ => Err(length(
                "13 digits (EAN-13, UPC-A), or 12 (UPC-A) or 8 (UPC-E) from a scanner set to send them so",
            )),
        },
        b'1' | b'2' => {
            let want = if modifier == b'1' { 2 } else { 5 };
            if data.len() == want {
                Ok(RetailCode {
                    kind: RetailKind::AddOn,
                    gtin: String::new(),
                    add_on: Some(text),
                })
            } else {
                Err(length(if want == 2 {
                    "2 digits (add-on alone)"
                } else {
                    "5 digits (add-on alone)"
                }))
            }
        }
        b'3' => match data.len() {
            15 | 18 => {
                let (main, add_on) = text.split_at(13);
                gtin(main, Some(add_on))
            }
            _ => Err(length(
                "15 or 18 digits (EAN-13 with a 2- or 5-digit add-on)",
            )),
        },
        b'4' => match data.len() {
            8 => gtin(text, None),
            _ => Err(length("8 digits (EAN-8)")),
        },
        _ => Err(length("a modifier 0-4")),
    }
}

fn gtin<'a>(digits: &str, add_on: Option<&'a str>) -> Result<RetailCode<'a>, RetailFault> {
    check(digits)?;
    let kind = match digits.len() {
        8 => RetailKind::Ean8,
        12 => RetailKind::UpcA,
        _ if digits.starts_with('0') => RetailKind::UpcA,
        _ => RetailKind::Ean13,
    };
    let mut gtin = String::new();
    gtin.push_str(digits).map_err(|_| RetailFault::Length {
        found: digits.len(),
        expected: "at most 13 digits",
    })?;
    Ok(RetailCode { kind, gtin, add_on })
}

fn check(digits: &str) -> Result<(), RetailFault> {
    let (data, check) = digits.as_bytes().split_at(digits.len().saturating_sub(1));
    let expected = gs1_check_digit(data).ok_or(RetailFault::NonDigit { position: 0 })?;
    let found = check
        .first()
        .map(|c| c.wrapping_sub(b'0'))
        .unwrap_or(u8::MAX);
    if expected == found {
        Ok(())
    } else {
        Err(RetailFault::CheckDigit { expected, found })
    }
}

/// Expand an 8-digit UPC-E (`n d1..d6 c`) to its 12-digit UPC-A and check it.
pub fn expand_upc_e(upc_e: &[u8]) -> Option<[u8; 12]> {
    let [ns, d1, d2, d3, d4, d5, d6, check] = *upc_e else {
        return None;
    };
    let body: [u8; 10] = match d6 {
        b'0'..=b'2' => [d1, d2, d6, b'0', b'0', b'0', b'0', d3, d4, d5],
        b'3' => [d1, d2, d3, b'0', b'0', b'0', b'0', b'0', d4, d5],
        b'4' => [d1, d2, d3, d4, b'0', b'0', b'0', b'0', b'0', d5],
        _ => [d1, d2, d3, d4, d5, b'0', b'0', b'0', b'0', d6],
    };
    let mut out = [b'0'; 12];
    out[0] = ns;
    out[1..11].copy_from_slice(&body);
    out[11] = check;
    Some(out)
}

fn upc_e(text: &str) -> Result<RetailCode<'static>, RetailFault> {
    if !matches!(text.as_bytes().first(), Some(b'0' | b'1')) {
        return Err(RetailFault::UpcENumberSystem);
    }
    let expanded = expand_upc_e(text.as_bytes()).ok_or(RetailFault::Length {
        found: text.len(),
        expected: "8 digits (UPC-E)",
    })?;
    let expanded = core::str::from_utf8(&expanded).unwrap_or_default();
    let mut code = gtin(expanded, None)?;
    code.kind = RetailKind::UpcE;
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ean13_upca_ean8_and_their_check_digits() {
        let code = parse_retail(b'0', b"5901234123457").expect("valid");
        assert_eq!(
            (code.kind, code.gtin.as_str()),
            (RetailKind::Ean13, "5901234123457")
        );
        assert_eq!(
            parse_retail(b'0', b"0416000336108").map(|c| c.kind),
            Ok(RetailKind::UpcA)
        );
        assert_eq!(
            parse_retail(b'0', b"416000336108").map(|c| c.kind),
            Ok(RetailKind::UpcA)
        );
        assert_eq!(
            parse_retail(b'0', b"5901234123458"),
            Err(RetailFault::CheckDigit {
                expected: 7,
                found: 8
            })
        );
        assert!(matches!(
            parse_retail(b'0', b"590123412345"),
            Err(RetailFault::CheckDigit { .. })
        ));
        assert!(matches!(
            parse_retail(b'0', b"59012341234"),
            Err(RetailFault::Length { found: 11, .. })
        ));
        assert_eq!(
            parse_retail(b'0', b"59012341234A7"),
            Err(RetailFault::NonDigit { position: 11 })
        );
        assert_eq!(
            parse_retail(b'4', b"02345673").map(|c| c.kind),
            Ok(RetailKind::Ean8)
        );
        assert!(parse_retail(b'4', b"02345674").is_err());
        assert!(parse_retail(b'4', b"5901234123457").is_err());
    }

    #[test]
    fn upc_e_expands_to_upc_a_before_its_check() {
        // The textbook pair: UPC-E 04252614 is UPC-A 042100005264.
        assert_eq!(
            expand_upc_e(b"04252614").map(|d| d.to_vec()),
            Some(b"042100005264".to_vec())
        );
        let code = parse_retail(b'0', b"04252614").expect("valid");
        assert_eq!(
            (code.kind, code.gtin.as_str()),
            (RetailKind::UpcE, "042100005264")
        );
        assert!(parse_retail(b'0', b"04252615").is_err());
        assert_eq!(
            parse_retail(b'0', b"24252614"),
            Err(RetailFault::UpcENumberSystem)
        );
    }

    #[test]
    fn add_ons() {
        let code = parse_retail(b'3', b"590123412345712").expect("valid");
        assert_eq!(code.add_on, Some("12"));
        assert!(parse_retail(b'3', b"5901234123457123").is_err());
        assert_eq!(
            parse_retail(b'2', b"12345").map(|c| c.kind),
            Ok(RetailKind::AddOn)
        );
        assert!(parse_retail(b'1', b"123").is_err());
    }
}
