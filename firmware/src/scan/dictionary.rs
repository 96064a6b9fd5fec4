//! The shape of the GS1 Application Identifier table and the lookup into it.
//!
//! The table itself (`ai_table.rs`) is generated from the GS1 Barcode Syntax
//! Dictionary by `firmware/gen/gs1_table.rs`; a test regenerates it from
//! `../shared/data/gs1/gs1-syntax-dictionary.txt` and fails when the checked-in
//! copy differs, so the two cannot drift. Nothing here is hand-typed AI data.

use super::ai_table::AI_TABLE;

/// Character set of one component of an AI's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CharSet {
    /// Digits `0`–`9` (`N` in the dictionary).
    Numeric,
    /// GS1 AI encodable character set 82 (`X`).
    Cset82,
    /// GS1 AI encodable character set 39 (`Y`).
    Cset39,
    /// base64url (`Z`), used by digital signatures.
    Base64Url,
}

impl CharSet {
    /// Whether `byte` belongs to this character set.
    pub fn contains(self, byte: u8) -> bool {
        match self {
            CharSet::Numeric => byte.is_ascii_digit(),
            CharSet::Cset82 => {
                byte.is_ascii_alphanumeric()
                    || matches!(
                        byte,
                        b'!' | b'"'
                            | b'%'
                            | b'&'
                            | b'\''
                            | b'('
                            | b')'
                            | b'*'
                            | b'+'
                            | b','
                            | b'-'
                            | b'.'
                            | b'/'
                            | b':'
                            | b';'
                            | b'<'
                            | b'='
                            | b'>'
                            | b'?'
                            | b'_'
                    )
            }
            CharSet::Cset39 => {
                byte.is_ascii_digit()
                    || byte.is_ascii_uppercase()
                    || matches!(byte, b'#' | b'-' | b'/')
            }
            CharSet::Base64Url => {
                byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'=')
            }
        }
    }

    /// The dictionary's letter for this set (`N`, `X`, `Y`, `Z`).
    pub fn letter(self) -> char {
        match self {
            CharSet::Numeric => 'N',
            CharSet::Cset82 => 'X',
            CharSet::Cset39 => 'Y',
            CharSet::Base64Url => 'Z',
        }
    }
}

/// A content check ("linter") the dictionary attaches to a component.
///
/// Every linter named in the dictionary has a variant, so the generator fails
/// loudly when a new one appears. [`Lint::is_checked`] says which ones this
/// crate enforces; the others (code lists such as ISO 3166, IBAN, coupon
/// grammars, GS1 Company Prefix position) are carried for completeness only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)] // variants are the dictionary's linter names, see `name()`
pub enum Lint {
    Csum,
    CsumAlpha,
    GcpPos1,
    GcpPos2,
    Yymmd0,
    Yymmdd,
    Yyyymmdd,
    Hhmi,
    Hh,
    Mi,
    Ss,
    Zero,
    NonZero,
    YesNo,
    Hyphen,
    NoZeroPrefix,
    HasNonDigit,
    Latitude,
    Longitude,
    PieceOfTotal,
    Iso5218,
    Iso3166,
    Iso3166999,
    Iso3166Alpha2,
    Iso4217,
    Iban,
    Pcenc,
    ImporterIdx,
    PackageType,
    MediaType,
    PosInSeqSlash,
    Winding,
    CouponCode,
    CouponPosOffer,
}

impl Lint {
    /// Every linter, in declaration order.
    pub const ALL: [Lint; 34] = [
        Lint::Csum,
        Lint::CsumAlpha,
        Lint::GcpPos1,
        Lint::GcpPos2,
        Lint::Yymmd0,
        Lint::Yymmdd,
        Lint::Yyyymmdd,
        Lint::Hhmi,
        Lint::Hh,
        Lint::Mi,
        Lint::Ss,
        Lint::Zero,
        Lint::NonZero,
        Lint::YesNo,
        Lint::Hyphen,
        Lint::NoZeroPrefix,
        Lint::HasNonDigit,
        Lint::Latitude,
        Lint::Longitude,
        Lint::PieceOfTotal,
        Lint::Iso5218,
        Lint::Iso3166,
        Lint::Iso3166999,
        Lint::Iso3166Alpha2,
        Lint::Iso4217,
        Lint::Iban,
        Lint::Pcenc,
        Lint::ImporterIdx,
        Lint::PackageType,
        Lint::MediaType,
        Lint::PosInSeqSlash,
        Lint::Winding,
        Lint::CouponCode,
        Lint::CouponPosOffer,
    ];

    /// The linter's name in the dictionary (`csum`, `yymmd0`, …).
    pub fn name(self) -> &'static str {
        match self {
            Lint::Csum => "csum",
            Lint::CsumAlpha => "csumalpha",
            Lint::GcpPos1 => "gcppos1",
            Lint::GcpPos2 => "gcppos2",
            Lint::Yymmd0 => "yymmd0",
            Lint::Yymmdd => "yymmdd",
            Lint::Yyyymmdd => "yyyymmdd",
            Lint::Hhmi => "hhmi",
            Lint::Hh => "hh",
            Lint::Mi => "mi",
            Lint::Ss => "ss",
            Lint::Zero => "zero",
            Lint::NonZero => "nonzero",
            Lint::YesNo => "yesno",
            Lint::Hyphen => "hyphen",
            Lint::NoZeroPrefix => "nozeroprefix",
            Lint::HasNonDigit => "hasnondigit",
            Lint::Latitude => "latitude",
            Lint::Longitude => "longitude",
            Lint::PieceOfTotal => "pieceoftotal",
            Lint::Iso5218 => "iso5218",
            Lint::Iso3166 => "iso3166",
            Lint::Iso3166999 => "iso3166999",
            Lint::Iso3166Alpha2 => "iso3166alpha2",
            Lint::Iso4217 => "iso4217",
            Lint::Iban => "iban",
            Lint::Pcenc => "pcenc",
            Lint::ImporterIdx => "importeridx",
            Lint::PackageType => "packagetype",
            Lint::MediaType => "mediatype",
            Lint::PosInSeqSlash => "posinseqslash",
            Lint::Winding => "winding",
            Lint::CouponCode => "couponcode",
            Lint::CouponPosOffer => "couponposoffer",
        }
    }

    /// Whether this crate enforces the linter (see `validate.rs`): all but
    /// `packagetype` (the UN/ECE Rec. 21 code list, AI 7041) and the North
    /// American coupon grammars (`couponcode`, `couponposoffer`, AIs 8110 and
    /// 8112), which a warehouse never scans.
    pub fn is_checked(self) -> bool {
        !matches!(
            self,
            Lint::PackageType | Lint::CouponCode | Lint::CouponPosOffer
        )
    }

    /// Whether the linter is a date check (`yymmd0`, `yymmdd`, `yyyymmdd`).
    pub fn is_date(self) -> bool {
        matches!(self, Lint::Yymmd0 | Lint::Yymmdd | Lint::Yyyymmdd)
    }
}

/// One component of an AI's value, e.g. `N13,csum` or `[X..16]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Component {
    /// Characters allowed.
    pub charset: CharSet,
    /// Minimum length (equal to `max` for a fixed-length component).
    pub min: u8,
    /// Maximum length.
    pub max: u8,
    /// Whether the component may be absent (`[...]`).
    pub optional: bool,
    /// Content checks, in dictionary order.
    pub lints: &'static [Lint],
}

/// One `req=` attribute: alternatives, each a group of AI patterns that must
/// all be present. A pattern is the AI's digits with `n` for any digit (`35nn`).
pub type Requirement = &'static [&'static [&'static str]];

/// Whether AI `ai` (its digits) matches the dictionary pattern `pattern`
/// (`"01"`, `"310n"`, `"35nn"`): same length, `n` matching any digit.
pub fn ai_matches(pattern: &str, ai: &str) -> bool {
    pattern.len() == ai.len()
        && pattern
            .bytes()
            .zip(ai.bytes())
            .all(|(p, a)| p == a || (p == b'n' && a.is_ascii_digit()))
}

/// One dictionary entry: a single AI or a range of AIs with the same format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AiDefinition {
    /// First AI of the range, as a number.
    pub first: u16,
    /// Last AI of the range (equal to `first` for a single AI).
    pub last: u16,
    /// Number of digits of the AI (2–4).
    pub digits: u8,
    /// `*`: pre-defined length, no FNC1 separator needed after the value.
    pub predefined_length: bool,
    /// `?`: allowed as a GS1 Digital Link data attribute.
    pub dl_attribute: bool,
    /// `dlpkey`: a GS1 Digital Link primary key.
    pub dl_primary_key: bool,
    /// `dlpkey=`: the key qualifiers a Digital Link path may carry after this
    /// key, as alternative sequences (`22,10,21|235`): a path uses one
    /// sequence, skipping any, keeping its order.
    pub dl_qualifiers: &'static [&'static [&'static str]],
    /// Value components, in order.
    pub components: &'static [Component],
    /// `req=` attributes: every one must be satisfied by the other AIs of the
    /// data. Each is a list of alternatives (`01,02` = (01) or (02)); an
    /// alternative is a list of patterns that must all be present (`00+02`).
    pub requires: &'static [Requirement],
    /// `ex=` patterns: AIs that must not appear beside this one (an AI never
    /// excludes itself, even when it matches a pattern such as `310n`).
    pub excludes: &'static [&'static str],
    /// The dictionary's short title (`SSCC`, `GTIN`, `BATCH/LOT`, …).
    pub title: &'static str,
}

impl AiDefinition {
    /// Shortest acceptable value length.
    pub fn min_length(&self) -> usize {
        self.components
            .iter()
            .filter(|c| !c.optional)
            .map(|c| usize::from(c.min))
            .sum()
    }

    /// Longest acceptable value length.
    pub fn max_length(&self) -> usize {
        self.components.iter().map(|c| usize::from(c.max)).sum()
    }
}

/// Every AI definition of the GS1 Syntax Dictionary, in AI order.
pub fn definitions() -> &'static [AiDefinition] {
    AI_TABLE
}

/// The definition of the AI whose digits are `ai` (`b"01"`, `b"3103"`), if any.
pub fn lookup(ai: &[u8]) -> Option<&'static AiDefinition> {
    let digits = u8::try_from(ai.len()).ok()?;
    let mut number: u16 = 0;
    for &b in ai {
        if !b.is_ascii_digit() {
            return None;
        }
        number = number.checked_mul(10)?.checked_add(u16::from(b - b'0'))?;
    }
    AI_TABLE
        .iter()
        .find(|d| d.digits == digits && d.first <= number && number <= d.last)
}

/// The definition of the AI at the start of `data` and the AI's length.
///
/// GS1 AIs are prefix-free, so at most one length (2, 3 or 4) matches.
pub fn lookup_prefix(data: &[u8]) -> Option<(&'static AiDefinition, usize)> {
    (2..=4).find_map(|len| data.get(..len).and_then(lookup).map(|d| (d, len)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_single_and_ranged_ais() {
        assert_eq!(lookup(b"01").map(|d| d.title), Some("GTIN"));
        assert_eq!(lookup(b"3103").map(|d| d.title), Some("NET WEIGHT (kg)"));
        assert_eq!(lookup(b"95").map(|d| d.title), Some("INTERNAL"));
        assert!(lookup(b"3106").is_none());
        assert!(lookup(b"4212").is_none());
        assert_eq!(lookup_prefix(b"421276D10115").map(|(_, n)| n), Some(3));
    }

    #[test]
    fn prefix_lengths_are_unambiguous() {
        for d in definitions() {
            for other in definitions() {
                if d.digits < other.digits {
                    let shift = 10u16.pow(u32::from(other.digits - d.digits));
                    let lo = other.first / shift;
                    let hi = other.last / shift;
                    assert!(
                        hi < d.first || lo > d.last,
                        "{}-{} is a prefix of {}-{}",
                        d.first,
                        d.last,
                        other.first,
                        other.last
                    );
                }
            }
        }
    }
}
