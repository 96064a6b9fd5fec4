//! Validation of one AI's value against its dictionary components: lengths,
//! character sets, and the content checks this crate enforces (see
//! [`Lint::is_checked`]).
//!
//! Components consume prefixes of the value in order; optional components may
//! be skipped once the value is exhausted, exactly as the dictionary header
//! describes. Only the last component may have a variable length.

use super::code_lists::{ISO3166_ALPHA2, ISO3166_NUMERIC, ISO4217_NUMERIC};
use super::dictionary::{AiDefinition, Lint};
use super::element::Ai;
use super::error::Gs1Error;

/// Check `value` (the data after AI `ai`) against `def`.
pub(crate) fn validate_value(ai: Ai, def: &AiDefinition, value: &[u8]) -> Result<(), Gs1Error> {
    let too_short = || Gs1Error::TooShort {
        ai,
        min: def.min_length(),
        found: value.len(),
    };
    let mut pos = 0usize;
    for component in def.components {
        let remaining = value.len().saturating_sub(pos);
        if remaining == 0 && component.optional {
            break;
        }
        let min = usize::from(component.min);
        let max = usize::from(component.max);
        if remaining < min {
            return Err(too_short());
        }
        let len = remaining.min(max);
        let part = value.get(pos..pos + len).ok_or_else(too_short)?;
        if let Some(offset) = part.iter().position(|b| !component.charset.contains(*b)) {
            let found = part.get(offset).copied().unwrap_or_default();
            return Err(Gs1Error::InvalidCharacter {
                ai,
                position: pos + offset,
                found,
                expected: component.charset,
            });
        }
        for &lint in component.lints {
            check_lint(ai, lint, part)?;
        }
        pos += len;
    }
    if pos < value.len() {
        return Err(Gs1Error::TooLong {
            ai,
            max: def.max_length(),
            found: value.len(),
        });
    }
    Ok(())
}

fn check_lint(ai: Ai, lint: Lint, part: &[u8]) -> Result<(), Gs1Error> {
    let fails = |lint| Err(Gs1Error::Lint { ai, lint });
    match lint {
        Lint::Csum => {
            let (data, check) = match part.split_last() {
                Some((check, data)) => (data, *check),
                None => return fails(lint),
            };
            let expected = gs1_check_digit(data).ok_or(Gs1Error::Lint { ai, lint })?;
            let found = check.wrapping_sub(b'0');
            if expected != found {
                return Err(Gs1Error::CheckDigit {
                    ai,
                    expected,
                    found,
                });
            }
            Ok(())
        }
        Lint::Yymmd0 | Lint::Yymmdd | Lint::Yyyymmdd => check_date(ai, lint, part),
        Lint::Hhmi => check_time(ai, lint, part, &[23, 59]),
        Lint::Hh => check_time(ai, lint, part, &[23]),
        Lint::Mi | Lint::Ss => check_time(ai, lint, part, &[59]),
        Lint::Zero => match part {
            [b'0'] => Ok(()),
            _ => fails(lint),
        },
        Lint::NonZero => {
            if part.iter().all(|b| *b == b'0') {
                fails(lint)
            } else {
                Ok(())
            }
        }
        Lint::YesNo => match part {
            [b'0' | b'1'] => Ok(()),
            _ => fails(lint),
        },
        Lint::Hyphen => {
            if part.iter().all(|b| *b == b'-') {
                Ok(())
            } else {
                fails(lint)
            }
        }
        Lint::NoZeroPrefix => match part {
            [b'0', _, ..] => fails(lint),
            _ => Ok(()),
        },
        Lint::HasNonDigit => {
            if part.iter().any(|b| !b.is_ascii_digit()) {
                Ok(())
            } else {
                fails(lint)
            }
        }
        Lint::Latitude => bounded(ai, lint, part, 1_800_000_000),
        Lint::Longitude => bounded(ai, lint, part, 3_600_000_000),
        Lint::PieceOfTotal => {
            // NNNN: piece number (2 digits) of total (2 digits), 1 <= piece <= total.
            let piece = digits_value(part.get(..2));
            let total = digits_value(part.get(2..4));
            match (piece, total) {
                (Some(p), Some(t)) if p >= 1 && p <= t => Ok(()),
                _ => fails(lint),
            }
        }
        Lint::Iso5218 => match part {
            [b'0' | b'1' | b'2' | b'9'] => Ok(()),
            _ => fails(lint),
        },
        Lint::GcpPos1 => gcp_at(ai, lint, part, 0),
        Lint::GcpPos2 => gcp_at(ai, lint, part, 1),
        Lint::CsumAlpha => {
            if check_pair_ok(part) {
                Ok(())
            } else {
                fails(lint)
            }
        }
        Lint::Iso3166 => numeric_code(ai, lint, part, ISO3166_NUMERIC, None),
        Lint::Iso3166999 => numeric_code(ai, lint, part, ISO3166_NUMERIC, Some(999)),
        Lint::Iso4217 => numeric_code(ai, lint, part, ISO4217_NUMERIC, None),
        Lint::Iso3166Alpha2 => {
            if is_alpha2_country(part) {
                Ok(())
            } else {
                fails(lint)
            }
        }
        Lint::Iban => {
            if iban_ok(part) {
                Ok(())
            } else {
                fails(lint)
            }
        }
        Lint::Pcenc => {
            // Every '%' starts a two-hex-digit escape.
            let mut i = 0;
            while let Some(&b) = part.get(i) {
                if b == b'%' {
                    let hex = part.get(i + 1..i + 3).unwrap_or_default();
                    if hex.len() != 2 || !hex.iter().all(u8::is_ascii_hexdigit) {
                        return fails(lint);
                    }
                    i += 3;
                } else {
                    i += 1;
                }
            }
            Ok(())
        }
        Lint::ImporterIdx => match part {
            [b] if b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_' => Ok(()),
            _ => fails(lint),
        },
        Lint::MediaType => match digits_value(Some(part)) {
            // AIDC media types: 01–10 assigned, 80–99 for local use.
            Some(v) if part.len() == 2 && ((1..=10).contains(&v) || (80..=99).contains(&v)) => {
                Ok(())
            }
            _ => fails(lint),
        },
        Lint::Winding => match part {
            [b'0' | b'1' | b'9'] => Ok(()),
            _ => fails(lint),
        },
        Lint::PosInSeqSlash => {
            if position_in_sequence_ok(part) {
                Ok(())
            } else {
                fails(lint)
            }
        }
        // Code lists and grammars this crate does not carry (see `Lint::is_checked`).
        Lint::PackageType | Lint::CouponCode | Lint::CouponPosOffer => Ok(()),
    }
}

/// `gcppos1`/`gcppos2`: a GS1 Company Prefix starts at `at`: at least its
/// shortest length (4) of digits.
fn gcp_at(ai: Ai, lint: Lint, part: &[u8], at: usize) -> Result<(), Gs1Error> {
    const GCP_MIN_LENGTH: usize = 4;
    match part.get(at..at + GCP_MIN_LENGTH) {
        Some(prefix) if prefix.iter().all(u8::is_ascii_digit) => Ok(()),
        _ => Err(Gs1Error::Lint { ai, lint }),
    }
}

fn numeric_code(
    ai: Ai,
    lint: Lint,
    part: &[u8],
    list: &[u16],
    extra: Option<u16>,
) -> Result<(), Gs1Error> {
    let code = digits_value(Some(part)).and_then(|v| u16::try_from(v).ok());
    match code {
        Some(c) if part.len() == 3 && (list.binary_search(&c).is_ok() || extra == Some(c)) => {
            Ok(())
        }
        _ => Err(Gs1Error::Lint { ai, lint }),
    }
}

fn is_alpha2_country(part: &[u8]) -> bool {
    match part {
        [a, b] => ISO3166_ALPHA2.binary_search(&[*a, *b]).is_ok(),
        _ => false,
    }
}

/// IBAN (ISO 13616): country, two check digits, upper-case alphanumeric BBAN,
/// 5–34 characters, the whole rearranged number mod 97 = 1.
fn iban_ok(part: &[u8]) -> bool {
    if !(5..=34).contains(&part.len()) {
        return false;
    }
    let (head, bban) = part.split_at(4);
    let (country, check) = head.split_at(2);
    if !is_alpha2_country(country)
        || !check.iter().all(u8::is_ascii_digit)
        || !bban
            .iter()
            .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase())
    {
        return false;
    }
    let mut remainder: u32 = 0;
    for &b in bban.iter().chain(head) {
        let value = if b.is_ascii_digit() {
            u32::from(b - b'0')
        } else {
            u32::from(b - b'A') + 10
        };
        remainder = if value >= 10 {
            (remainder * 100 + value) % 97
        } else {
            (remainder * 10 + value) % 97
        };
    }
    remainder == 1
}

/// `posinseqslash`: `<pos>/<end>`, both without leading zeros, pos <= end.
fn position_in_sequence_ok(part: &[u8]) -> bool {
    let Some(slash) = part.iter().position(|b| *b == b'/') else {
        return false;
    };
    let (pos, end) = (
        part.get(..slash).unwrap_or_default(),
        part.get(slash + 1..).unwrap_or_default(),
    );
    let well_formed =
        |n: &[u8]| !n.is_empty() && n.iter().all(u8::is_ascii_digit) && n.first() != Some(&b'0');
    if !well_formed(pos) || !well_formed(end) {
        return false;
    }
    // Without leading zeros, the longer number is the larger; equal lengths
    // compare as text.
    (pos.len(), pos) <= (end.len(), end)
}

/// The alphanumeric check character pair (`csumalpha`, GS1 General
/// Specifications 7.9.5): data characters weighted by their CSET 82 position
/// and by primes from the right, sum mod 1021, as two CSET 32 characters.
fn check_pair_ok(part: &[u8]) -> bool {
    const CSET32: &[u8; 32] = b"23456789ABCDEFGHJKLMNPQRSTUVWXYZ";
    const CSET82: &[u8; 82] =
        b"!\"%&'()*+,-./0123456789:;<=>?ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz";
    let Some((data, pair)) = part.split_last_chunk::<2>() else {
        return false;
    };
    let mut sum: u32 = 0;
    let mut primes = Primes::default();
    for &b in data.iter().rev() {
        let Some(weight) = CSET82.iter().position(|c| *c == b) else {
            return false;
        };
        let Some(prime) = primes.next() else {
            return false;
        };
        sum += u32::try_from(weight).unwrap_or(u32::MAX / 1024) * prime;
        sum %= 1021;
    }
    let hi = usize::try_from(sum >> 5).unwrap_or(usize::MAX);
    let lo = usize::try_from(sum & 31).unwrap_or(usize::MAX);
    CSET32.get(hi) == Some(&pair[0]) && CSET32.get(lo) == Some(&pair[1])
}

/// Successive primes 2, 3, 5, … by trial division (values are at most ~100
/// characters long, so at most ~100 primes are needed).
#[derive(Default)]
struct Primes {
    last: u32,
}

impl Iterator for Primes {
    type Item = u32;
    fn next(&mut self) -> Option<u32> {
        let mut n = self.last.checked_add(1)?.max(2);
        while (2..n).take_while(|d| d * d <= n).any(|d| n % d == 0) {
            n = n.checked_add(1)?;
        }
        self.last = n;
        Some(n)
    }
}

fn bounded(ai: Ai, lint: Lint, part: &[u8], max: u64) -> Result<(), Gs1Error> {
    match digits_value(Some(part)) {
        Some(v) if v <= max => Ok(()),
        _ => Err(Gs1Error::Lint { ai, lint }),
    }
}

/// The decimal value of an all-digit slice (at most 19 digits).
pub(crate) fn digits_value(part: Option<&[u8]>) -> Option<u64> {
    let part = part?;
    if part.is_empty() || part.len() > 19 {
        return None;
    }
    part.iter().try_fold(0u64, |acc, b| {
        b.is_ascii_digit().then(|| acc * 10 + u64::from(b - b'0'))
    })
}

fn check_time(ai: Ai, lint: Lint, part: &[u8], maxima: &[u64]) -> Result<(), Gs1Error> {
    for (i, max) in maxima.iter().enumerate() {
        match digits_value(part.get(i * 2..i * 2 + 2)) {
            Some(v) if v <= *max => {}
            _ => return Err(Gs1Error::Lint { ai, lint }),
        }
    }
    Ok(())
}

fn check_date(ai: Ai, lint: Lint, part: &[u8]) -> Result<(), Gs1Error> {
    let year_digits = if lint == Lint::Yyyymmdd { 4 } else { 2 };
    let year = digits_value(part.get(..year_digits));
    let month = digits_value(part.get(year_digits..year_digits + 2));
    let day = digits_value(part.get(year_digits + 2..year_digits + 4));
    let (Some(year), Some(month), Some(day)) = (year, month, day) else {
        return Err(Gs1Error::Lint { ai, lint });
    };
    let fault = if !(1..=12).contains(&month) {
        Some(DateFault::Month)
    } else if day == 0 && lint == Lint::Yymmd0 {
        None
    } else if day == 0 || day > u64::from(days_in_month(year, month)) {
        Some(DateFault::Day)
    } else {
        None
    };
    match fault {
        Some(fault) => Err(Gs1Error::InvalidDate { ai, fault }),
        None => Ok(()),
    }
}

/// Which part of a date is impossible.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DateFault {
    /// Month outside 01–12.
    Month,
    /// Day outside the month (or `00` where the AI does not allow it).
    Day,
}

/// Days in `month` of `year`. Two-digit years fall in a window around the
/// present century (GS1 General Specifications 7.12), where `yy % 4 == 0` is
/// exactly the leap-year rule; four-digit years use the Gregorian rule.
pub(crate) fn days_in_month(year: u64, month: u64) -> u8 {
    let leap = if year >= 100 {
        (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400)
    } else {
        year.is_multiple_of(4)
    };
    match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// The GS1 mod-10 check digit over `data` (all digits), or `None` when a
/// byte is not a digit. Weights 3, 1, 3, … from the rightmost data digit.
pub fn gs1_check_digit(data: &[u8]) -> Option<u8> {
    let mut sum: u32 = 0;
    for (i, b) in data.iter().rev().enumerate() {
        if !b.is_ascii_digit() {
            return None;
        }
        let weight = if i % 2 == 0 { 3 } else { 1 };
        sum += u32::from(b - b'0') * weight;
    }
    u8::try_from((10 - sum % 10) % 10).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_digits_of_the_dictionary_vectors() {
        for ok in [
            "02345673",
            "416000336108",
            "1234567890128",
            "12345678901231",
            "123456789012345675",
        ] {
            let (data, check) = ok.as_bytes().split_at(ok.len() - 1);
            assert_eq!(gs1_check_digit(data), Some(check[0] - b'0'), "{ok}");
        }
        assert_eq!(gs1_check_digit(b"12a"), None);
    }

    #[test]
    fn alphanumeric_check_pairs() {
        for ok in [
            "22",
            "!22",
            "1987654Ad4X4bL5ttr2310c2K",
            "12345678901234567890123NT",
            "12345_!\"%&'()*+,-./LC",
            "00000!HV",
        ] {
            assert!(check_pair_ok(ok.as_bytes()), "{ok}");
        }
        for bad in [
            "33",
            "2",
            "1987654Ad4X4bL5ttr2310cXK",
            "12345678901234567890123 T",
        ] {
            assert!(!check_pair_ok(bad.as_bytes()), "{bad}");
        }
    }

    #[test]
    fn iban_country_and_mod_97() {
        assert!(iban_ok(b"GB82WEST12345698765432"));
        assert!(iban_ok(b"DE89370400440532013000"));
        assert!(!iban_ok(b"GB83WEST12345698765432"));
        assert!(!iban_ok(b"XX82WEST12345698765432"));
        assert!(!iban_ok(b"gb82WEST12345698765432"));
    }

    #[test]
    fn positions_in_sequence() {
        for ok in ["1/1", "2/3", "9/10", "100/100", "998/999"] {
            assert!(position_in_sequence_ok(ok.as_bytes()), "{ok}");
        }
        for bad in [
            "", "/", "1/", "/1", "0/1", "1/0", "01/2", "2/1", "10/9", "1//2",
        ] {
            assert!(!position_in_sequence_ok(bad.as_bytes()), "{bad}");
        }
    }

    #[test]
    fn february_has_29_days_in_leap_years() {
        assert_eq!(days_in_month(20, 2), 29);
        assert_eq!(days_in_month(21, 2), 28);
        assert_eq!(days_in_month(2000, 2), 29);
        assert_eq!(days_in_month(1900, 2), 28);
    }
}
