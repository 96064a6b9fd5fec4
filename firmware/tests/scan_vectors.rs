//! Every scan vector in `../shared/data/gs1/scan-vectors.jsonl` (GS1 Syntax
//! Engine 1.4.1 results) must give the engine's verdict and bracketed AI string.

use dockline_firmware::scan::parse_scan;

mod shared_data;

/// Rows where the recorded expectation contradicts the GS1 Syntax Dictionary
/// itself, with the reason. They must still parse, to the dictionary's answer.
const DATA_ERRATA: &[(&str, &str, &str)] = &[(
    "]C14101234567890128421276D10115",
    "(410)1234567890128(421)276D10115",
    "the vector file expects (4212)76D10115, but AI 4212 does not exist in the dictionary; \
     AI 421 is N3,iso3166 X..9 and 276 is Germany (research note §1.5 lists `421276D10115`)",
)];

#[test]
fn scan_vectors_match_the_gs1_syntax_engine() {
    let Some(path) = shared_data::path("gs1/scan-vectors.jsonl") else {
        return;
    };
    let text = std::fs::read_to_string(&path).expect("vectors are readable");
    let mut failures = Vec::new();
    let mut rows = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        rows += 1;
        let row: serde_json::Value = serde_json::from_str(line).expect("each line is JSON");
        let input = row["input"].as_str().expect("input is a string");
        let ok = row["ok"].as_bool().expect("ok is a bool");
        let mut expected = row["ai_string"].as_str().map(str::to_owned);
        if let Some((_, corrected, reason)) = DATA_ERRATA.iter().find(|(i, _, _)| *i == input) {
            println!("erratum for {input:?}: {reason}");
            expected = Some((*corrected).to_owned());
        }
        let got = match parse_scan(input.as_bytes()) {
            Ok(scan) => scan.gs1().map(|m| m.to_string()),
            Err(e) => {
                println!("{input:?} rejected: {e}");
                None
            }
        };
        let passed = if ok { got == expected } else { got.is_none() };
        if !passed {
            failures.push(format!(
                "{input:?}: expected ok={ok} {expected:?}, got {got:?}"
            ));
        }
    }
    println!("{} of {rows} scan vectors pass", rows - failures.len());
    assert!(
        failures.is_empty(),
        "failing vectors:\n{}",
        failures.join("\n")
    );
    assert!(rows >= 11, "expected at least 11 vectors, found {rows}");
}
