//! GS1 keys (GTIN, SSCC, GLN) turned into the URIs EPCIS events carry.
//!
//! Two URI forms, both valid in EPCIS 2.0:
//!
//! - **EPC URIs** (GS1 Tag Data Standard 2.x): `urn:epc:idpat:sgtin:…`,
//!   `urn:epc:class:lgtin:…`, `urn:epc:id:sscc:…`, `urn:epc:id:sgln:…`. They
//!   put a dot after the GS1 Company Prefix, so they can only be written when
//!   the prefix's *length* is known. Nothing in a GTIN or SSCC says how long
//!   its company prefix is (GS1 publishes a prefix-length table, which dockline
//!   does not bundle), so the length comes from [`CompanyPrefixes`]: the
//!   prefixes the operator configured (their own and their partners'). A key
//!   whose prefix is not configured is never guessed at.
//! - **GS1 Digital Link URIs** (`https://id.gs1.org/01/{gtin}`, `/00/{sscc}`,
//!   `/414/{gln}`), which need no prefix length. They are the fallback for a
//!   key whose company prefix is not configured, and for GTIN-8 (whose EPC
//!   encoding has special rules this module does not implement).
//!
//! Every function here is pure and checks the key's GS1 check digit first, so
//! a mistyped key is refused instead of being exported as someone else's
//! product.
//!
//! Layouts (TDS 2.x §6, `d1…dN` are the key's digits, `L` the prefix length):
//!
//! | key | EPC URI |
//! |---|---|
//! | GTIN-14 | `urn:epc:idpat:sgtin:{d2…d(L+1)}.{d1}{d(L+2)…d13}.*` (indicator digit moves to the front of the item reference; check digit dropped) |
//! | GTIN-14 + lot | `urn:epc:class:lgtin:{prefix}.{indicator+item ref}.{lot}` |
//! | SSCC-18 | `urn:epc:id:sscc:{d2…d(L+1)}.{d1}{d(L+2)…d17}` (extension digit moves to the front of the serial reference) |
//! | GLN-13 | `urn:epc:id:sgln:{d1…dL}.{d(L+1)…d12}.{extension or 0}` |

use std::fmt::Write as _;

/// Shortest GS1 Company Prefix an EPC URI can carry (TDS: 6 to 12 digits).
pub const MIN_PREFIX_DIGITS: usize = 6;
/// Longest GS1 Company Prefix.
pub const MAX_PREFIX_DIGITS: usize = 12;
/// Longest lot (AI 10) or GLN extension (AI 254): `X..20`.
pub const MAX_ALPHANUMERIC: usize = 20;

/// The GS1 Digital Link resolver that canonical Digital Link URIs name.
pub const DIGITAL_LINK_BASE: &str = "https://id.gs1.org";

/// A GS1 key or its companion text could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Gs1Error {
    /// Wrong length or a non-digit.
    #[error("{kind} {value:?} is not {expected}; check the scanned or typed value")]
    Malformed {
        /// `GTIN`, `SSCC`, `GLN` or `GS1 Company Prefix`.
        kind: &'static str,
        /// The text (cut to 40 characters).
        value: String,
        /// What a valid one looks like.
        expected: &'static str,
    },
    /// The last digit is not the GS1 check digit of the others.
    #[error(
        "{kind} {value:?} fails the GS1 check digit (expected {expected}); the key is mistyped or misread"
    )]
    CheckDigit {
        /// `GTIN`, `SSCC` or `GLN`.
        kind: &'static str,
        /// The key.
        value: String,
        /// The check digit the other digits call for.
        expected: char,
    },
    /// A company prefix length outside 6..=12, or longer than the key allows.
    #[error(
        "a GS1 Company Prefix of {len} digits does not fit a {kind}; EPC URIs take prefixes of 6 to 12 digits"
    )]
    PrefixLength {
        /// The key kind.
        kind: &'static str,
        /// The length asked for.
        len: usize,
    },
    /// Two configured prefixes overlap.
    #[error(
        "GS1 Company Prefixes {shorter} and {longer} overlap; GS1 never allocates one prefix inside another, so one of them is misconfigured"
    )]
    OverlappingPrefixes {
        /// The shorter one.
        shorter: String,
        /// The one that starts with it.
        longer: String,
    },
    /// A lot or GLN extension with characters outside GS1's set of 82.
    #[error(
        "{kind} {value:?} is not valid GS1 alphanumeric data (1 to 20 characters from GS1 character set 82: A-Z a-z 0-9 and !\"%&'()*+,-./:;<=>?_)"
    )]
    Alphanumeric {
        /// `lot` or `GLN extension`.
        kind: &'static str,
        /// The text (cut to 40 characters).
        value: String,
    },
}

/// The GS1 Company Prefixes whose lengths are known (configured), so keys
/// that start with them can be written as EPC URIs.
///
/// GS1 allocates prefixes so that none starts with another, so at most one
/// configured prefix matches a key; overlapping entries are refused.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompanyPrefixes(Vec<String>);

impl CompanyPrefixes {
    /// Checks each prefix (6 to 12 digits) and that none starts with another.
    pub fn new<I, S>(prefixes: I) -> Result<Self, Gs1Error>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut list: Vec<String> = Vec::new();
        for p in prefixes {
            let p = p.into();
            let len = p.len();
            if !all_digits(&p) || !(MIN_PREFIX_DIGITS..=MAX_PREFIX_DIGITS).contains(&len) {
                return Err(Gs1Error::Malformed {
                    kind: "GS1 Company Prefix",
                    value: cut(&p),
                    expected: "6 to 12 digits",
                });
            }
            if list.contains(&p) {
                continue;
            }
            if let Some(other) = list
                .iter()
                .find(|q| q.starts_with(p.as_str()) || p.starts_with(q.as_str()))
            {
                let (shorter, longer) = if other.len() < p.len() {
                    (other.clone(), p)
                } else {
                    (p, other.clone())
                };
                return Err(Gs1Error::OverlappingPrefixes { shorter, longer });
            }
            list.push(p);
        }
        Ok(Self(list))
    }

    /// The length of the configured prefix that `digits` starts with.
    pub fn length_of(&self, digits: &str) -> Option<usize> {
        self.0
            .iter()
            .find(|p| digits.starts_with(p.as_str()))
            .map(String::len)
    }

    /// True when no prefix is configured.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A GTIN normalised to 14 digits, check digit verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gtin {
    digits: String,
    /// Digits of the key as written (8, 12, 13 or 14).
    written_len: usize,
}

impl Gtin {
    /// Reads a GTIN-8, -12, -13 or -14 (left-padded with zeros to 14).
    pub fn parse(text: &str) -> Result<Self, Gs1Error> {
        let len = text.len();
        if !all_digits(text) || ![8, 12, 13, 14].contains(&len) {
            return Err(Gs1Error::Malformed {
                kind: "GTIN",
                value: cut(text),
                expected: "8, 12, 13 or 14 digits",
            });
        }
        check_digit("GTIN", text)?;
        Ok(Self {
            digits: format!("{text:0>14}"),
            written_len: len,
        })
    }

    /// The 14 digits.
    pub fn as_str(&self) -> &str {
        &self.digits
    }

    /// True for a GTIN-8 (written with 8 digits).
    pub fn is_gtin8(&self) -> bool {
        self.written_len == 8
    }
}

/// `urn:epc:idpat:sgtin:{prefix}.{indicator}{item ref}.*`: every instance of
/// the GTIN, for a quantity without serial numbers.
pub fn sgtin_pattern(gtin: &Gtin, prefix_len: usize) -> Result<String, Gs1Error> {
    let (prefix, item) = split_gtin(gtin, prefix_len)?;
    Ok(format!("urn:epc:idpat:sgtin:{prefix}.{item}.*"))
}

/// `urn:epc:class:lgtin:{prefix}.{indicator}{item ref}.{lot}`: the GTIN's
/// instances from one lot (AI 10), the lot escaped as TDS requires.
pub fn lgtin_class(gtin: &Gtin, prefix_len: usize, lot: &str) -> Result<String, Gs1Error> {
    let (prefix, item) = split_gtin(gtin, prefix_len)?;
    let lot = epc_component("lot", lot)?;
    Ok(format!("urn:epc:class:lgtin:{prefix}.{item}.{lot}"))
}

/// `urn:epc:id:sscc:{prefix}.{extension}{serial ref}` for an 18-digit SSCC.
pub fn sscc_uri(sscc: &str, prefix_len: usize) -> Result<String, Gs1Error> {
    check_sscc(sscc)?;
    if !(MIN_PREFIX_DIGITS..=MAX_PREFIX_DIGITS).contains(&prefix_len) {
        return Err(Gs1Error::PrefixLength {
            kind: "SSCC",
            len: prefix_len,
        });
    }
    // d1 is the extension digit, then the prefix; d18 is the check digit.
    let extension = &sscc[..1];
    let prefix = &sscc[1..=prefix_len];
    let serial = &sscc[prefix_len + 1..17];
    Ok(format!("urn:epc:id:sscc:{prefix}.{extension}{serial}"))
}

/// `urn:epc:id:sgln:{prefix}.{location ref}.{extension}` for a 13-digit
/// GLN; the extension (AI 254) is `0` when there is none.
pub fn sgln_uri(gln: &str, prefix_len: usize, extension: Option<&str>) -> Result<String, Gs1Error> {
    check_gln(gln)?;
    if !(MIN_PREFIX_DIGITS..=MAX_PREFIX_DIGITS).contains(&prefix_len) {
        return Err(Gs1Error::PrefixLength {
            kind: "GLN",
            len: prefix_len,
        });
    }
    let extension = match extension {
        Some(e) => epc_component("GLN extension", e)?,
        None => "0".to_string(),
    };
    // With a 12-digit prefix the location reference is empty (`prefix..ext`).
    let prefix = &gln[..prefix_len];
    let location = &gln[prefix_len..12];
    Ok(format!("urn:epc:id:sgln:{prefix}.{location}.{extension}"))
}

/// The canonical Digital Link URI of a GTIN, with its lot when given.
pub fn digital_link_gtin(gtin: &Gtin, lot: Option<&str>) -> Result<String, Gs1Error> {
    let mut uri = format!("{DIGITAL_LINK_BASE}/01/{}", gtin.as_str());
    if let Some(lot) = lot {
        check_alphanumeric("lot", lot)?;
        let _ = write!(uri, "/10/{}", percent_encode(lot));
    }
    Ok(uri)
}

/// The canonical Digital Link URI of an SSCC.
pub fn digital_link_sscc(sscc: &str) -> Result<String, Gs1Error> {
    check_sscc(sscc)?;
    Ok(format!("{DIGITAL_LINK_BASE}/00/{sscc}"))
}

/// The canonical Digital Link URI of a GLN, with its extension when given.
pub fn digital_link_gln(gln: &str, extension: Option<&str>) -> Result<String, Gs1Error> {
    check_gln(gln)?;
    let mut uri = format!("{DIGITAL_LINK_BASE}/414/{gln}");
    if let Some(e) = extension {
        check_alphanumeric("GLN extension", e)?;
        let _ = write!(uri, "/254/{}", percent_encode(e));
    }
    Ok(uri)
}

/// Checks an 18-digit SSCC and its check digit.
pub fn check_sscc(sscc: &str) -> Result<(), Gs1Error> {
    if !all_digits(sscc) || sscc.len() != 18 {
        return Err(Gs1Error::Malformed {
            kind: "SSCC",
            value: cut(sscc),
            expected: "18 digits",
        });
    }
    check_digit("SSCC", sscc)
}

/// Checks a 13-digit GLN and its check digit.
pub fn check_gln(gln: &str) -> Result<(), Gs1Error> {
    if !all_digits(gln) || gln.len() != 13 {
        return Err(Gs1Error::Malformed {
            kind: "GLN",
            value: cut(gln),
            expected: "13 digits",
        });
    }
    check_digit("GLN", gln)
}

/// Checks that `text` is GS1 alphanumeric data of at most 20 characters
/// (lot, GLN extension).
pub fn check_alphanumeric(kind: &'static str, text: &str) -> Result<(), Gs1Error> {
    let ok = !text.is_empty()
        && text.len() <= MAX_ALPHANUMERIC
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || CSET82_PUNCT.contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Gs1Error::Alphanumeric {
            kind,
            value: cut(text),
        })
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters, so any
/// text can sit in one URI path segment.
pub fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// The punctuation of GS1 character set 82 (AI encodable character set).
const CSET82_PUNCT: &[u8] = b"!\"%&'()*+,-./:;<=>?_";

/// TDS escaping of a GS1 alphanumeric component inside an EPC URI: the
/// characters `" % & / < > ?` become `%XX`; the rest of set 82 stays as is.
fn epc_component(kind: &'static str, text: &str) -> Result<String, Gs1Error> {
    check_alphanumeric(kind, text)?;
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if matches!(b, b'"' | b'%' | b'&' | b'/' | b'<' | b'>' | b'?') {
            let _ = write!(out, "%{b:02X}");
        } else {
            out.push(char::from(b));
        }
    }
    Ok(out)
}

/// The company prefix and `indicator + item reference` of a GTIN-14.
fn split_gtin(gtin: &Gtin, prefix_len: usize) -> Result<(&str, String), Gs1Error> {
    if !(MIN_PREFIX_DIGITS..=MAX_PREFIX_DIGITS).contains(&prefix_len) {
        return Err(Gs1Error::PrefixLength {
            kind: "GTIN",
            len: prefix_len,
        });
    }
    let d = gtin.as_str();
    let prefix = &d[1..=prefix_len];
    let item = format!("{}{}", &d[..1], &d[prefix_len + 1..13]);
    Ok((prefix, item))
}

/// Verifies the GS1 mod-10 check digit (the last digit of `digits`).
fn check_digit(kind: &'static str, digits: &str) -> Result<(), Gs1Error> {
    let bytes = digits.as_bytes();
    let Some((&last, body)) = bytes.split_last() else {
        return Err(Gs1Error::Malformed {
            kind,
            value: String::new(),
            expected: "digits",
        });
    };
    // Weights 3,1,3,1,… from the digit left of the check digit.
    let sum: u32 = body
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &b)| u32::from(b - b'0') * if i % 2 == 0 { 3 } else { 1 })
        .sum();
    let expected = (10 - sum % 10) % 10;
    let expected = char::from_digit(expected, 10).unwrap_or('0');
    if char::from(last) == expected {
        Ok(())
    } else {
        Err(Gs1Error::CheckDigit {
            kind,
            value: cut(digits),
            expected,
        })
    }
}

fn all_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

fn cut(s: &str) -> String {
    s.chars().take(40).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gtin(s: &str) -> Gtin {
        Gtin::parse(s).expect("test GTIN is valid")
    }

    #[test]
    fn sgtin_pattern_moves_the_indicator_digit_and_drops_the_check_digit() {
        // TDS example: GTIN 80614141123458, prefix 0614141 (7 digits).
        let g = gtin("80614141123458");
        assert_eq!(
            sgtin_pattern(&g, 7).as_deref(),
            Ok("urn:epc:idpat:sgtin:0614141.812345.*")
        );
        // The same digits read with other prefix lengths.
        assert_eq!(
            sgtin_pattern(&g, 6).as_deref(),
            Ok("urn:epc:idpat:sgtin:061414.8112345.*")
        );
        assert_eq!(
            sgtin_pattern(&g, 12).as_deref(),
            Ok("urn:epc:idpat:sgtin:061414112345.8.*")
        );
    }

    #[test]
    fn gtin13_and_gtin12_are_padded_to_14() {
        // EAN-13 4012345111118 → indicator 0.
        let g = gtin("4012345111118");
        assert_eq!(g.as_str(), "04012345111118");
        assert_eq!(
            sgtin_pattern(&g, 7).as_deref(),
            Ok("urn:epc:idpat:sgtin:4012345.011111.*")
        );
        // UPC-A 036000291452 → 00036000291452, US prefix 0036000 (7).
        let g = gtin("036000291452");
        assert_eq!(
            sgtin_pattern(&g, 7).as_deref(),
            Ok("urn:epc:idpat:sgtin:0036000.029145.*")
        );
        assert!(gtin("96385074").is_gtin8());
    }

    #[test]
    fn lgtin_escapes_the_lot_as_tds_requires() {
        let g = gtin("80614141123458");
        assert_eq!(
            lgtin_class(&g, 7, "998877").as_deref(),
            Ok("urn:epc:class:lgtin:0614141.812345.998877")
        );
        assert_eq!(
            lgtin_class(&g, 7, "A/B%1?x").as_deref(),
            Ok("urn:epc:class:lgtin:0614141.812345.A%2FB%251%3Fx")
        );
        // Outside set 82 (space, #) or longer than 20: refused.
        assert!(matches!(
            lgtin_class(&g, 7, "LOT 1"),
            Err(Gs1Error::Alphanumeric { .. })
        ));
        assert!(lgtin_class(&g, 7, "L#1").is_err());
        assert!(lgtin_class(&g, 7, &"1".repeat(21)).is_err());
    }

    #[test]
    fn sscc_keeps_the_extension_digit_in_front_of_the_serial_reference() {
        // TDS example: SSCC 106141412345678908, prefix 0614141.
        assert_eq!(
            sscc_uri("106141412345678908", 7).as_deref(),
            Ok("urn:epc:id:sscc:0614141.1234567890")
        );
        // Extension digit 0 is kept too (the serial part is 17 - L digits).
        assert_eq!(
            sscc_uri("340123450000000420", 7).as_deref(),
            Ok("urn:epc:id:sscc:4012345.3000000042")
        );
        assert_eq!(
            sscc_uri("340123450000000420", 12).as_deref(),
            Ok("urn:epc:id:sscc:401234500000.30042")
        );
    }

    #[test]
    fn keys_with_a_wrong_check_digit_or_length_are_refused() {
        assert!(matches!(
            sscc_uri("106141412345678909", 7),
            Err(Gs1Error::CheckDigit { expected: '8', .. })
        ));
        assert!(matches!(
            Gtin::parse("80614141123459"),
            Err(Gs1Error::CheckDigit { .. })
        ));
        assert!(matches!(
            Gtin::parse("SKU-1"),
            Err(Gs1Error::Malformed { .. })
        ));
        assert!(sscc_uri("10614141234567890", 7).is_err());
        assert!(matches!(
            sscc_uri("106141412345678908", 5),
            Err(Gs1Error::PrefixLength { len: 5, .. })
        ));
        assert!(check_gln("0614141000001").is_err());
    }

    #[test]
    fn sgln_with_and_without_extension() {
        assert_eq!(
            sgln_uri("0614141000005", 7, None).as_deref(),
            Ok("urn:epc:id:sgln:0614141.00000.0")
        );
        assert_eq!(
            sgln_uri("4012345000016", 7, Some("A0103")).as_deref(),
            Ok("urn:epc:id:sgln:4012345.00001.A0103")
        );
        // A 12-digit prefix leaves an empty location reference.
        assert_eq!(
            sgln_uri("4012345000016", 12, None).as_deref(),
            Ok("urn:epc:id:sgln:401234500001..0")
        );
    }

    #[test]
    fn digital_links_need_no_prefix_length() {
        let g = gtin("4012345111118");
        assert_eq!(
            digital_link_gtin(&g, Some("L/1")).as_deref(),
            Ok("https://id.gs1.org/01/04012345111118/10/L%2F1")
        );
        assert_eq!(
            digital_link_sscc("106141412345678908").as_deref(),
            Ok("https://id.gs1.org/00/106141412345678908")
        );
        assert_eq!(
            digital_link_gln("4012345000016", Some("A0103")).as_deref(),
            Ok("https://id.gs1.org/414/4012345000016/254/A0103")
        );
    }

    #[test]
    fn company_prefixes_match_by_leading_digits_and_refuse_overlaps() {
        let p = CompanyPrefixes::new(["4012345", "0614141", "00360002"]).expect("valid");
        assert_eq!(p.length_of("4012345111118"), Some(7));
        assert_eq!(p.length_of("0036000291452"), Some(8));
        assert_eq!(p.length_of("5412345111115"), None);
        assert!(matches!(
            CompanyPrefixes::new(["401234", "4012345"]),
            Err(Gs1Error::OverlappingPrefixes { .. })
        ));
        assert!(CompanyPrefixes::new(["40123"]).is_err());
        assert!(CompanyPrefixes::new(["40123x5"]).is_err());
    }

    #[test]
    fn percent_encoding_keeps_only_unreserved_characters() {
        assert_eq!(percent_encode("A-01.b_~"), "A-01.b_~");
        assert_eq!(percent_encode("SO 42/é"), "SO%2042%2F%C3%A9");
    }
}
