//! Rules over a whole GS1 message rather than one value: repeated AIs and
//! the dictionary's `req=` / `ex=` associations.
//!
//! Checked in this order, the first failure wins, so a refusal names one rule
//! and one AI:
//!
//! 1. **Repeats**: an AI may appear more than once only with the same value
//!    (GS1 General Specifications 4.14.1, "duplicate AIs with different
//!    values"); identical repeats are accepted, as the Syntax Engine does.
//! 2. **Exclusions** (`ex=`): an AI must not appear beside an AI matching one
//!    of its patterns; an AI never excludes itself (`3103` with `ex=310n`).
//! 3. **Requirements** (`req=`): for every `req=` attribute of every AI, at
//!    least one alternative must have all its patterns present.
//!
//! The dictionary says associations apply "over the combined data received
//! from all GS1 carriers marking a physical item". A scan of one symbol is
//! checked on its own, as the GS1 Syntax Engine does by default; a label set
//! split over several symbols must be combined by the caller first.

use core::fmt;

use super::dictionary::{Requirement, ai_matches};
use super::element::Gs1Message;
use super::error::Gs1Error;

/// Where the `req=` rules are judged.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Requisites {
    /// Within this one symbol, as the GS1 Syntax Engine does by default.
    #[default]
    PerSymbol,
    /// Not here: the caller combines the symbols of one item (a carton's
    /// SSCC label and its content label) and judges them together. Repeats
    /// and exclusions are still checked.
    AcrossSymbols,
}

/// Check repeats, exclusions and (unless deferred) requirements over `message`.
pub(crate) fn check_associations(
    message: &Gs1Message<'_>,
    requisites: Requisites,
) -> Result<(), Gs1Error> {
    let elements = message.elements();
    for (i, e) in elements.iter().enumerate() {
        let later = elements.get(i + 1..).unwrap_or_default();
        if later
            .iter()
            .any(|o| o.ai == e.ai && !o.value_bytes().eq(e.value_bytes()))
        {
            return Err(Gs1Error::RepeatedAi { ai: e.ai });
        }
    }
    for e in elements {
        let Some(def) = e.ai.definition() else {
            continue;
        };
        for pattern in def.excludes {
            if let Some(other) = elements
                .iter()
                .find(|o| o.ai != e.ai && ai_matches(pattern, o.ai.as_str()))
            {
                return Err(Gs1Error::Excluded {
                    ai: e.ai,
                    with: other.ai,
                });
            }
        }
    }
    if requisites == Requisites::AcrossSymbols {
        return Ok(());
    }
    for e in elements {
        let Some(def) = e.ai.definition() else {
            continue;
        };
        for requirement in def.requires {
            let satisfied = requirement.iter().any(|group| {
                group
                    .iter()
                    .all(|pattern| elements.iter().any(|o| ai_matches(pattern, o.ai.as_str())))
            });
            if !satisfied {
                return Err(Gs1Error::Unsatisfied {
                    ai: e.ai,
                    requires: RequirementText(requirement),
                });
            }
        }
    }
    Ok(())
}

/// A `req=` attribute printed as in the dictionary (`01+21,03+21,8006+21`).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct RequirementText(pub Requirement);

impl fmt::Display for RequirementText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, group) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            for (j, pattern) in group.iter().enumerate() {
                if j > 0 {
                    f.write_str("+")?;
                }
                f.write_str(pattern)?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for RequirementText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "req={self}")
    }
}

#[cfg(test)]
mod tests {
    use super::super::element::parse_element_string;
    use super::*;
    use std::string::ToString;

    fn verdict(data: &[u8]) -> Result<(), Gs1Error> {
        parse_element_string(data).map(|_| ())
    }

    #[test]
    fn the_issue_cases_are_refused_with_their_rule() {
        // (01) with (02): 02 has ex=01,03.
        assert!(matches!(
            verdict(b"01095212345432130209521234543213\x1D3724"),
            Err(Gs1Error::Excluded { .. })
        ));
        // (01) with (255): 01 has ex=255,37.
        assert!(matches!(
            verdict(b"01095212345432132555412345000013"),
            Err(Gs1Error::Excluded { .. })
        ));
        // (01) with (37).
        assert!(matches!(
            verdict(b"0109521234543213\x1D3724"),
            Err(Gs1Error::Excluded { .. })
        ));
        // (21) with (235): 21 has ex=235.
        assert!(matches!(
            verdict(b"0109521234543213\x1D21SN1\x1D235TPX"),
            Err(Gs1Error::Excluded { .. })
        ));
        // (400) twice with different values.
        assert_eq!(
            verdict(b"400ABC\x1D400AB"),
            Err(Gs1Error::RepeatedAi {
                ai: crate::scan::Ai::new(b"400").expect("valid")
            })
        );
        // The same value twice is one fact, accepted.
        assert_eq!(verdict(b"400ABC\x1D400ABC"), Ok(()));
    }

    #[test]
    fn requirements_need_one_complete_alternative() {
        let err = verdict(b"10LOT").expect_err("10 alone");
        assert_eq!(
            err.to_string(),
            "AI (10) needs one of 01,02,03,8006,8026 in the same data (dictionary rule req=); \
             scan the label's other symbol or check the label"
        );
        assert_eq!(verdict(b"0109521234543213\x1D10LOT"), Ok(()));
        // 37 requires 00+02 or 00+8026: (02) alone is not enough.
        assert!(matches!(
            verdict(b"0209521234543213\x1D3724"),
            Err(Gs1Error::Unsatisfied { .. })
        ));
        assert_eq!(
            verdict(b"001061414123456789080209521234543213\x1D3724"),
            Ok(())
        );
    }

    #[test]
    fn an_ai_does_not_exclude_itself_but_its_range_siblings() {
        // 3103 has ex=310n: a second, different 310n is refused ...
        assert!(matches!(
            verdict(b"01095212345432133103001250\x1D3102012500"),
            Err(Gs1Error::Excluded { .. })
        ));
        // ... and the same AI repeated with its value is not.
        assert_eq!(verdict(b"010952123454321331030012503103001250"), Ok(()));
    }
}
