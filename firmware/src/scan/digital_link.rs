//! GS1 Digital Link URIs carried as plain data (`]Q1https://id.gs1.org/01/…`),
//! per the GS1 Digital Link URI standard (1.x) and the Syntax Dictionary's
//! `dlpkey` attributes.
//!
//! A text is a Digital Link when all of these hold, else it is plain data
//! (`Ok(None)`):
//!
//! * the scheme is `http://` or `https://`, all lower or all upper case;
//! * the host is a DNS name or IPv4 address (letters, digits, `-`, `.`), or an
//!   IPv6 literal in brackets without a zone (`[fe80::1%25lo]` is not a host
//!   a Digital Link resolver can be), with an optional numeric port; no
//!   user information;
//! * the path ends in a key path: a primary key (numeric AI or convenience
//!   alpha such as `gtin`, `sscc`) with its value, then qualifier pairs in one
//!   of the orders its `dlpkey=` allows. Anything before it is the resolver's
//!   own path prefix (`https://a/00/faux/00/006141411234567890` has the key
//!   path `/00/006141411234567890`); the longest key path that is valid wins.
//!
//! Once a key path is found the URI is a Digital Link and its data must be
//! valid: values are percent-decoded and validated like element strings;
//! query parameters whose key is a numeric AI are data attributes (allowed
//! only for AIs the dictionary flags `?`), other parameters are ignored; the
//! whole message then passes the repeat and association rules. A key path
//! whose last AI has no value is refused rather than read as plain text.
//!
//! Nothing is copied: values borrow the URI and keep their `%XX` escapes,
//! marked [`Element::escaped`](super::Element::escaped).

use super::association::{Requisites, check_associations};
use super::dictionary::{AiDefinition, ai_matches};
use super::element::{Ai, Element, Gs1Message, PercentDecoded};
use super::error::Gs1Error;
use super::validate::validate_value;

/// Longest value after percent-decoding (the longest AI value is 90).
const MAX_VALUE: usize = 128;

/// Path convenience alphas of the Digital Link standard and their AIs.
const CONVENIENCE_ALPHAS: &[(&str, &str)] = &[
    ("gtin", "01"),
    ("itip", "8006"),
    ("cpv", "22"),
    ("lot", "10"),
    ("ser", "21"),
    ("sscc", "00"),
    ("gln", "414"),
    ("party", "417"),
    ("gdti", "253"),
    ("grai", "8003"),
    ("giai", "8004"),
    ("gsrn", "8018"),
    ("gsrnp", "8017"),
    ("gsin", "402"),
    ("ginc", "401"),
    ("gcn", "255"),
    ("cpid", "8010"),
    ("cpsn", "8011"),
    ("glnx", "254"),
    ("gmn", "8013"),
];

/// The AI a path segment names: numeric AI digits or a convenience alpha.
fn segment_ai(segment: &str) -> Option<(Ai, &'static AiDefinition)> {
    let digits = CONVENIENCE_ALPHAS
        .iter()
        .find(|(alpha, _)| *alpha == segment)
        .map_or(segment, |(_, ai)| ai);
    let ai = Ai::new(digits.as_bytes())?;
    Some((ai, ai.definition()?))
}

/// Whether `text` uses an `http`/`https` scheme in all-lower or all-upper case.
fn strip_scheme(text: &str) -> Option<&str> {
    ["https://", "http://", "HTTPS://", "HTTP://"]
        .iter()
        .find_map(|scheme| text.strip_prefix(scheme))
}

/// Whether `authority` (`host[:port]`) is a host a Digital Link may use.
fn valid_authority(authority: &str) -> bool {
    if authority.contains('@') {
        return false;
    }
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let Some((literal, after)) = rest.split_once(']') else {
            return false;
        };
        let ipv6 = !literal.is_empty()
            && literal.contains(':')
            && literal
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.');
        if !ipv6 {
            return false;
        }
        match after {
            "" => return true,
            _ => match after.strip_prefix(':') {
                Some(port) => ("x", Some(port)),
                None => return false,
            },
        }
    } else {
        match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    let host_ok = !host.is_empty()
        && host.split('.').enumerate().all(|(i, label)| {
            (!label.is_empty() || i > 0 && host.ends_with('.'))
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    let port_ok = port.is_none_or(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    host_ok && port_ok
}

/// Whether the qualifier AIs `qualifiers` may follow primary key `key`: they
/// are, in order, a subsequence of one of its `dlpkey=` sequences.
fn qualifiers_fit(key: &AiDefinition, qualifiers: &[Ai]) -> bool {
    if qualifiers.is_empty() {
        return true;
    }
    key.dl_qualifiers.iter().any(|sequence| {
        let mut allowed = sequence.iter();
        qualifiers
            .iter()
            .all(|q| allowed.any(|pattern| ai_matches(pattern, q.as_str())))
    })
}

/// Where a key path starts among `segments`, searching back from the end in
/// pairs while segments name AIs. `Err(ai)` when a primary key was reached but
/// no qualifier order fits.
fn key_path_start(segments: &[&str]) -> Result<Option<usize>, Ai> {
    let n = segments.len();
    let mut best = None;
    let mut misfit = None;
    let mut k = n;
    while k >= 2 {
        k -= 2;
        let Some((ai, def)) = segments.get(k).and_then(|s| segment_ai(s)) else {
            break;
        };
        if !def.dl_primary_key {
            continue;
        }
        let mut qualifiers = heapless::Vec::<Ai, 8>::new();
        let mut fits = true;
        for pair in segments.get(k + 2..).unwrap_or_default().chunks(2) {
            let q = pair.first().and_then(|s| segment_ai(s)).map(|(q, _)| q);
            match q.map(|q| qualifiers.push(q)) {
                Some(Ok(())) => {}
                _ => fits = false,
            }
        }
        if fits && qualifiers_fit(def, &qualifiers) {
            best = Some(k);
        } else {
            misfit.get_or_insert(ai);
        }
    }
    match (best, misfit) {
        (Some(k), _) => Ok(Some(k)),
        (None, Some(ai)) => Err(ai),
        (None, None) => Ok(None),
    }
}

/// Parse `text` as a GS1 Digital Link URI: `Ok(None)` when it is not one (see
/// the module docs), `Err` when it is one but its data is invalid.
pub fn parse_digital_link(text: &str) -> Result<Option<Gs1Message<'_>>, Gs1Error> {
    let Some(after_scheme) = strip_scheme(text) else {
        return Ok(None);
    };
    let base = text.len() - after_scheme.len();
    let without_fragment = after_scheme.split('#').next().unwrap_or_default();
    let (path_part, query) = match without_fragment.split_once('?') {
        Some((p, q)) => (p, q),
        None => (without_fragment, ""),
    };
    let Some(path_start) = path_part.find('/') else {
        return Ok(None);
    };
    if !valid_authority(path_part.get(..path_start).unwrap_or_default()) {
        return Ok(None);
    }
    let path = path_part.get(path_start + 1..).unwrap_or_default();
    let path = path.strip_suffix('/').unwrap_or(path);
    let mut segments = heapless::Vec::<&str, 64>::new();
    for segment in path.split('/') {
        if segments.push(segment).is_err() {
            return Ok(None);
        }
    }
    let start = match key_path_start(&segments) {
        Ok(Some(k)) => k,
        Ok(None) => {
            // A key path cut short (`…/01/{gtin}/10`) is a broken Digital
            // Link, not plain text.
            let (last, head) = segments.split_last().unwrap_or((&"", &[]));
            if let (Some((ai, _)), Ok(Some(_))) = (segment_ai(last), key_path_start(head)) {
                return Err(Gs1Error::MissingValue { ai });
            }
            return Ok(None);
        }
        Err(ai) => return Err(Gs1Error::DlPath { ai }),
    };
    let mut message = Gs1Message::default();
    let mut offset = base + path_start + 1;
    for segment in segments.get(..start).unwrap_or_default() {
        offset += segment.len() + 1;
    }
    for pair in segments.get(start..).unwrap_or_default().chunks(2) {
        let (key, value) = match pair {
            [key, value] => (*key, *value),
            _ => return Ok(None),
        };
        let (ai, def) = segment_ai(key).ok_or(Gs1Error::UnknownAi { offset })?;
        push_validated(&mut message, ai, def, value)?;
        offset += key.len() + value.len() + 2;
    }
    let mut offset = text.len() - query.len();
    for param in query.split('&') {
        let at = offset;
        offset += param.len() + 1;
        let Some((key, value)) = param.split_once('=') else {
            continue;
        };
        if !key.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let ai = Ai::new(key.as_bytes()).ok_or(Gs1Error::UnknownAi { offset: at })?;
        let def = ai.definition().ok_or(Gs1Error::UnknownAi { offset: at })?;
        if !def.dl_attribute {
            return Err(Gs1Error::DlNotAttribute { ai });
        }
        push_validated(&mut message, ai, def, value)?;
    }
    check_associations(&message, Requisites::PerSymbol)?;
    Ok(Some(message))
}

fn push_validated<'a>(
    message: &mut Gs1Message<'a>,
    ai: Ai,
    def: &AiDefinition,
    value: &'a str,
) -> Result<(), Gs1Error> {
    if value.is_empty() {
        return Err(Gs1Error::MissingValue { ai });
    }
    let escaped = value.contains('%');
    if escaped {
        let bytes = value.as_bytes();
        let well_formed = bytes.iter().enumerate().all(|(i, b)| {
            *b != b'%'
                || bytes
                    .get(i + 1..i + 3)
                    .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit))
        });
        if !well_formed {
            return Err(Gs1Error::BadEscape { ai });
        }
    }
    let mut buffer = [0u8; MAX_VALUE];
    let mut len = 0;
    for b in (PercentDecoded {
        bytes: value.as_bytes(),
        decode: escaped,
    }) {
        let slot = buffer.get_mut(len).ok_or(Gs1Error::TooLong {
            ai,
            max: def.max_length(),
            found: len + 1,
        })?;
        *slot = b;
        len += 1;
    }
    validate_value(ai, def, buffer.get(..len).unwrap_or_default())?;
    message.push(Element { ai, value, escaped })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::string::{String, ToString};

    fn hri(uri: &str) -> Result<Option<String>, Gs1Error> {
        parse_digital_link(uri).map(|m| m.map(|m| m.to_string()))
    }

    #[test]
    fn path_and_query_become_elements() {
        let m = parse_digital_link("https://id.gs1.org/01/09521234543213/10/ABC123?17=261231&x=1")
            .expect("valid")
            .expect("a DL URI");
        assert_eq!(m.get("01"), Some("09521234543213"));
        assert_eq!(m.get("10"), Some("ABC123"));
        assert_eq!(m.get("17"), Some("261231"));
    }

    #[test]
    fn custom_stems_and_non_dl_urls() {
        assert!(
            parse_digital_link("https://a.example/stem/00/106141412345678908")
                .expect("valid")
                .is_some()
        );
        assert_eq!(parse_digital_link("https://example.com/about"), Ok(None));
        assert_eq!(
            parse_digital_link("HtTps://id.gs1.org/01/09521234543213"),
            Ok(None)
        );
        assert!(parse_digital_link("https://id.gs1.org/01/09521234543214").is_err());
        assert!(parse_digital_link("https://id.gs1.org/01/09521234543213/10").is_err());
    }

    #[test]
    fn path_prefixes_before_the_key_path_are_skipped() {
        assert_eq!(
            hri("https://a/00/faux/00/006141411234567890"),
            Ok(Some("(00)006141411234567890".into()))
        );
        assert_eq!(
            hri("https://a/01/stem/01/09521234543213/22/V1/10/L1/21/S1"),
            Ok(Some("(01)09521234543213(22)V1(10)L1(21)S1".into()))
        );
    }

    #[test]
    fn qualifier_order_follows_dlpkey() {
        // 21 before 10: out of the order 22,10,21.
        assert!(matches!(
            parse_digital_link("https://a/01/09521234543213/21/S1/10/L1"),
            Err(Gs1Error::DlPath { .. })
        ));
        // 235 is the other alternative and must not mix with 10.
        assert!(parse_digital_link("https://a/01/09521234543213/235/T1").is_ok());
        assert!(parse_digital_link("https://a/01/09521234543213/10/L1/235/T1").is_err());
    }

    #[test]
    fn convenience_alphas_name_ais() {
        assert_eq!(
            hri("https://example.com/gtin/09521234543213/lot/L1/ser/S1"),
            Ok(Some("(01)09521234543213(10)L1(21)S1".into()))
        );
        assert_eq!(
            hri("https://example.com/sscc/106141412345678908"),
            Ok(Some("(00)106141412345678908".into()))
        );
    }

    #[test]
    fn values_are_percent_decoded_and_validated() {
        assert_eq!(
            hri("https://a/01/09521234543213/10/AB%2F12?240=X%25"),
            Ok(Some("(01)09521234543213(10)AB/12(240)X%".into()))
        );
        assert!(matches!(
            parse_digital_link("https://a/01/09521234543213/10/AB%2G"),
            Err(Gs1Error::BadEscape { .. })
        ));
        // %20 is a space: outside CSET 82.
        assert!(matches!(
            parse_digital_link("https://a/01/09521234543213/10/A%20B"),
            Err(Gs1Error::InvalidCharacter { .. })
        ));
    }

    #[test]
    fn host_rules() {
        let dl = "/01/09521234543213";
        for ok in [
            "id.gs1.org",
            "127.0.0.1:8080",
            "[::1]",
            "[2001:db8::1]:443",
            "a",
        ] {
            assert!(
                parse_digital_link(&std::format!("https://{ok}{dl}"))
                    .expect("valid")
                    .is_some(),
                "{ok}"
            );
        }
        for bad in ["[fe80::1%25lo]", "user@host", "", "ho st", "a:b", "[::1"] {
            assert_eq!(
                parse_digital_link(&std::format!("https://{bad}{dl}")),
                Ok(None),
                "{bad}"
            );
        }
    }

    #[test]
    fn query_attributes_must_be_allowed_and_associated() {
        // 21 is not a data attribute (no `?` flag): it belongs in the path.
        assert!(matches!(
            parse_digital_link("https://a/01/09521234543213?21=S1"),
            Err(Gs1Error::DlNotAttribute { .. })
        ));
        // 3103 with 3102: ex=310n.
        assert!(matches!(
            parse_digital_link("https://a/01/09521234543213?3103=000500&3102=001250"),
            Err(Gs1Error::Excluded { .. })
        ));
    }
}
