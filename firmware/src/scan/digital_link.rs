//! GS1 Digital Link URIs carried as plain data (`]Q1https://id.gs1.org/01/…`).
//!
//! The path is searched for the first segment that is a Digital Link primary
//! key AI; from there on segments are AI/value pairs. Query parameters whose
//! key is a known AI are data attributes; other parameters are ignored. Values
//! are validated like element strings. Percent-encoded values are refused
//! (they would need a copy; the device parser never allocates).

use super::dictionary;
use super::element::{Ai, Element, Gs1Message};
use super::error::Gs1Error;
use super::validate::validate_value;

/// Whether `text` uses an `http`/`https` scheme in all-lower or all-upper case.
fn strip_scheme(text: &str) -> Option<&str> {
    ["https://", "http://", "HTTPS://", "HTTP://"]
        .iter()
        .find_map(|scheme| text.strip_prefix(scheme))
}

/// Parse `text` as a GS1 Digital Link URI: `Ok(None)` when it is not one (no
/// scheme or no primary key in the path), `Err` when it is one but its data is
/// invalid.
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
    let path = path_part.get(path_start..).unwrap_or_default();
    let path_offset = base + path_start;

    // Segments with their byte offsets in `text`.
    let mut segments = path
        .split('/')
        .scan(path_offset, |offset, seg| {
            let at = *offset;
            *offset += seg.len() + 1;
            Some((at, seg))
        })
        .skip(1)
        .skip_while(|(_, seg)| {
            !dictionary::lookup(seg.as_bytes()).is_some_and(|d| d.dl_primary_key)
        })
        .peekable();
    if segments.peek().is_none() {
        return Ok(None);
    }
    let mut message = Gs1Message::default();
    while let Some((at, key)) = segments.next() {
        let ai = Ai::new(key.as_bytes()).ok_or(Gs1Error::UnknownAi { offset: at })?;
        let value = segments
            .next()
            .map(|(_, v)| v)
            .filter(|v| !v.is_empty())
            .ok_or(Gs1Error::MissingValue { ai })?;
        push_validated(&mut message, ai, value, at)?;
    }
    let query_offset = text.len() - query.len();
    let mut offset = query_offset;
    for param in query.split('&') {
        let at = offset;
        offset += param.len() + 1;
        let Some((key, value)) = param.split_once('=') else {
            continue;
        };
        let Some(ai) = Ai::new(key.as_bytes()) else {
            continue;
        };
        push_validated(&mut message, ai, value, at)?;
    }
    Ok(Some(message))
}

fn push_validated<'a>(
    message: &mut Gs1Message<'a>,
    ai: Ai,
    value: &'a str,
    offset: usize,
) -> Result<(), Gs1Error> {
    let def = ai.definition().ok_or(Gs1Error::UnknownAi { offset })?;
    if value.contains('%') {
        return Err(Gs1Error::PercentEncoded { ai });
    }
    validate_value(ai, def, value.as_bytes())?;
    message.push(Element { ai, value })
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
