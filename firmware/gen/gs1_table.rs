//! Generator: GS1 Barcode Syntax Dictionary text → `firmware/src/scan/ai_table.rs`.
//!
//! Run by `firmware/tests/gs1_table.rs`: `table_matches_dictionary` regenerates
//! the table in memory from `../shared/data/gs1/gs1-syntax-dictionary.txt` and
//! compares it with the checked-in file; the ignored test `regenerate_ai_table`
//! rewrites the file (`cargo test -p dockline-firmware --test gs1_table -- --ignored`).
//!
//! Every linter name must be known to `Lint::ALL`, so a new dictionary linter
//! fails the generator instead of being dropped silently.

use std::fmt::Write as _;

use dockline_firmware::scan::Lint;

/// One parsed component of a specification (`N13,csum`, `[X..16]`).
struct Spec {
    letter: char,
    min: u8,
    max: u8,
    optional: bool,
    lints: Vec<Lint>,
}

/// One parsed dictionary line.
struct Entry {
    first: u16,
    last: u16,
    digits: u8,
    predefined: bool,
    dl_attribute: bool,
    dl_primary_key: bool,
    specs: Vec<Spec>,
    /// `req=` attributes, each a list of alternatives of `+`-joined patterns.
    requires: Vec<Vec<Vec<String>>>,
    /// `ex=` patterns, every `ex=` attribute merged.
    excludes: Vec<String>,
    /// `dlpkey=` qualifier sequences (alternatives split on `|`).
    dl_qualifiers: Vec<Vec<String>>,
    title: String,
}

/// One AI pattern of `req=`/`ex=`: 2 to 4 characters, digits or `n` (any digit).
fn pattern(text: &str, line_no: usize) -> Result<String, String> {
    let ok = (2..=4).contains(&text.len()) && text.chars().all(|c| c.is_ascii_digit() || c == 'n');
    if ok {
        Ok(text.to_string())
    } else {
        Err(format!("line {line_no}: {text:?} is not an AI pattern"))
    }
}

fn parse_component(token: &str, line_no: usize) -> Result<Spec, String> {
    let optional = token.starts_with('[');
    let cleaned: String = token.chars().filter(|c| *c != '[' && *c != ']').collect();
    let mut parts = cleaned.split(',');
    let kind = parts.next().unwrap_or_default();
    let mut chars = kind.chars();
    let letter = chars
        .next()
        .ok_or(format!("line {line_no}: empty component"))?;
    if !matches!(letter, 'N' | 'X' | 'Y' | 'Z') {
        return Err(format!(
            "line {line_no}: unknown type {letter:?} in {token:?}"
        ));
    }
    let rest: String = chars.collect();
    let (min, max) = if let Some(max) = rest.strip_prefix("..") {
        (
            1,
            max.parse::<u8>()
                .map_err(|e| format!("line {line_no}: {token:?}: {e}"))?,
        )
    } else {
        let n = rest
            .parse::<u8>()
            .map_err(|e| format!("line {line_no}: {token:?}: {e}"))?;
        (n, n)
    };
    let mut lints = Vec::new();
    for name in parts {
        let lint = Lint::ALL
            .iter()
            .copied()
            .find(|l| l.name() == name)
            .ok_or(format!(
                "line {line_no}: unknown linter {name:?}; add it to Lint"
            ))?;
        lints.push(lint);
    }
    Ok(Spec {
        letter,
        min,
        max,
        optional,
        lints,
    })
}

fn parse_line(line: &str, line_no: usize) -> Result<Option<Entry>, String> {
    let (body, title) = match line.split_once('#') {
        Some((body, title)) => (body, title.trim()),
        None => (line, ""),
    };
    let mut tokens = body.split_whitespace().peekable();
    let Some(ais) = tokens.next() else {
        return Ok(None);
    };
    let (first, last) = ais.split_once('-').unwrap_or((ais, ais));
    let digits = u8::try_from(first.len()).map_err(|e| format!("line {line_no}: {e}"))?;
    let first: u16 = first.parse().map_err(|e| format!("line {line_no}: {e}"))?;
    let last: u16 = last.parse().map_err(|e| format!("line {line_no}: {e}"))?;
    let mut predefined = false;
    let mut dl_attribute = false;
    if let Some(flags) = tokens.next_if(|t| {
        t.chars()
            .all(|c| "*?!\"$%&'()+,-./:;<=>@\\^_`{|}~".contains(c))
    }) {
        predefined = flags.contains('*');
        dl_attribute = flags.contains('?');
    }
    let mut specs = Vec::new();
    let mut dl_primary_key = false;
    let mut requires = Vec::new();
    let mut excludes = Vec::new();
    let mut dl_qualifiers = Vec::new();
    for token in tokens {
        if let Some(list) = token.strip_prefix("req=") {
            let mut alternatives = Vec::new();
            for alternative in list.split(',') {
                let group = alternative
                    .split('+')
                    .map(|p| pattern(p, line_no))
                    .collect::<Result<Vec<_>, _>>()?;
                alternatives.push(group);
            }
            requires.push(alternatives);
        } else if let Some(list) = token.strip_prefix("ex=") {
            for p in list.split(',') {
                excludes.push(pattern(p, line_no)?);
            }
        } else if let Some(list) = token.strip_prefix("dlpkey=") {
            dl_primary_key = true;
            for alternative in list.split('|') {
                let sequence = alternative
                    .split(',')
                    .map(|p| pattern(p, line_no))
                    .collect::<Result<Vec<_>, _>>()?;
                dl_qualifiers.push(sequence);
            }
        } else if token.contains('=') || token == "dlpkey" {
            dl_primary_key |= token == "dlpkey";
        } else {
            specs.push(parse_component(token, line_no)?);
        }
    }
    if specs.is_empty() {
        return Err(format!("line {line_no}: no specification"));
    }
    Ok(Some(Entry {
        first,
        last,
        digits,
        predefined,
        dl_attribute,
        dl_primary_key,
        specs,
        requires,
        excludes,
        dl_qualifiers,
        title: title.to_string(),
    }))
}

/// Turn the dictionary text into the Rust source of `ai_table.rs`.
pub fn generate(dictionary: &str) -> Result<String, String> {
    let mut out = String::new();
    out.push_str(
        "//! GS1 Application Identifier table. @generated by `firmware/gen/gs1_table.rs`\n\
         //! from the GS1 Barcode Syntax Dictionary (Apache-2.0, (c) GS1 AISBL, BWIPP and\n\
         //! Zint projects). Do not edit: regenerate with\n\
         //! `cargo test -p dockline-firmware --test gs1_table -- --ignored`.\n\n\
         use super::dictionary::{AiDefinition, CharSet, Component, Lint};\n\n\
         /// Every AI definition, in AI order.\n\
         #[rustfmt::skip]\n\
         pub(crate) static AI_TABLE: &[AiDefinition] = &[\n",
    );
    for (index, line) in dictionary.lines().enumerate() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let Some(entry) = parse_line(trimmed, index + 1)? else {
            continue;
        };
        let mut components = String::new();
        for spec in &entry.specs {
            let charset = match spec.letter {
                'N' => "Numeric",
                'X' => "Cset82",
                'Y' => "Cset39",
                _ => "Base64Url",
            };
            let lints: Vec<String> = spec.lints.iter().map(|l| format!("Lint::{l:?}")).collect();
            let _ = write!(
                components,
                "Component {{ charset: CharSet::{charset}, min: {}, max: {}, optional: {}, lints: &[{}] }}, ",
                spec.min,
                spec.max,
                spec.optional,
                lints.join(", ")
            );
        }
        let requires: Vec<String> = entry
            .requires
            .iter()
            .map(|alternatives| {
                let groups: Vec<String> = alternatives
                    .iter()
                    .map(|group| {
                        let quoted: Vec<String> = group.iter().map(|p| format!("{p:?}")).collect();
                        format!("&[{}]", quoted.join(", "))
                    })
                    .collect();
                format!("&[{}]", groups.join(", "))
            })
            .collect();
        let excludes: Vec<String> = entry.excludes.iter().map(|p| format!("{p:?}")).collect();
        let qualifiers: Vec<String> = entry
            .dl_qualifiers
            .iter()
            .map(|sequence| {
                let quoted: Vec<String> = sequence.iter().map(|p| format!("{p:?}")).collect();
                format!("&[{}]", quoted.join(", "))
            })
            .collect();
        let _ = writeln!(
            out,
            "    AiDefinition {{ first: {}, last: {}, digits: {}, predefined_length: {}, dl_attribute: {}, dl_primary_key: {}, dl_qualifiers: &[{}], components: &[{}], requires: &[{}], excludes: &[{}], title: {:?} }},",
            entry.first,
            entry.last,
            entry.digits,
            entry.predefined,
            entry.dl_attribute,
            entry.dl_primary_key,
            qualifiers.join(", "),
            components.trim_end_matches(", "),
            requires.join(", "),
            excludes.join(", "),
            entry.title
        );
    }
    out.push_str("];\n");
    Ok(out)
}
