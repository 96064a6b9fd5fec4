//! Locating the external test data in `../shared/data/` (relative to the project root).

use std::path::PathBuf;

/// The path of `relative` inside the shared data folder, or `None` (with a printed
/// reason) when the folder or the file is absent, so the calling test can skip.
pub fn path(relative: &str) -> Option<PathBuf> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("..")
        .join("shared")
        .join("data");
    let file = root.join(relative);
    if file.is_file() {
        Some(file)
    } else {
        println!(
            "SKIPPED: {} is absent; this test needs the shared test data folder ../shared/data next to the project root",
            file.display()
        );
        None
    }
}
