//! The checked-in GS1 AI table must be exactly what the generator makes from the
//! GS1 Syntax Dictionary in `../shared/data/gs1/`.

#[path = "../gen/gs1_table.rs"]
mod gs1_table;

mod shared_data;

const TABLE_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src/scan/ai_table.rs");

fn dictionary() -> Option<String> {
    let path = shared_data::path("gs1/gs1-syntax-dictionary.txt")?;
    Some(std::fs::read_to_string(&path).expect("dictionary is readable"))
}

#[test]
fn table_matches_dictionary() {
    let Some(dictionary) = dictionary() else {
        return;
    };
    let generated = gs1_table::generate(&dictionary).expect("dictionary parses");
    let checked_in = std::fs::read_to_string(TABLE_PATH).expect("ai_table.rs is readable");
    assert!(
        generated == checked_in,
        "src/scan/ai_table.rs is stale; run `cargo test -p dockline-firmware --test gs1_table -- --ignored`"
    );
}

#[test]
#[ignore = "rewrites src/scan/ai_table.rs from the dictionary"]
fn regenerate_ai_table() {
    let Some(dictionary) = dictionary() else {
        return;
    };
    let generated = gs1_table::generate(&dictionary).expect("dictionary parses");
    std::fs::write(TABLE_PATH, generated).expect("ai_table.rs is writable");
}
