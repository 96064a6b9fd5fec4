//! Runs `dockline-sim` as a user does and reads the JSON file it writes.
//! (Each test file compiles its own copy and uses part of it.)
#![allow(dead_code)]

use std::process::Command;
use std::time::Instant;

/// What a run printed and wrote.
pub struct Run {
    /// Its standard output.
    pub stdout: String,
    /// The JSON it wrote to the file after `file_flag`.
    pub json: serde_json::Value,
}

/// Runs `dockline-sim args… {file_flag} <temp file>`, fails the test with
/// its output unless it exits 0, and returns what it printed and wrote.
pub fn dockline_sim(args: &[&str], file_flag: &str) -> Run {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("out.json");
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_dockline-sim"))
        .args(args)
        .arg(file_flag)
        .arg(&path)
        .output()
        .expect("dockline-sim runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "dockline-sim {args:?} failed ({}) after {:?}\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        started.elapsed(),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&path).expect("JSON written");
    let json = serde_json::from_str(&text).expect("valid JSON");
    Run { stdout, json }
}

/// The unsigned integer `name` of `report`, failing the test without it.
pub fn field(report: &serde_json::Value, name: &str) -> u64 {
    report[name]
        .as_u64()
        .unwrap_or_else(|| panic!("report lacks {name}: {report}"))
}
