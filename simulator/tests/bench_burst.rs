//! The `fleet_reconnect_burst` bench figure as a user runs it
//! (`dockline-sim bench --quick --only fleet_reconnect_burst`): 300 devices
//! × 4 one-event batches at once through the bench's broker to a real
//! collector, every one stored and acked, the figure written with its raw
//! baseline from the same run.

use std::process::Command;

#[test]
fn quick_fleet_reconnect_burst_is_stored_acked_and_reported_beside_its_baseline() {
    let dir = tempfile::tempdir().expect("temp dir");
    let json = dir.path().join("bench.json");
    let out = Command::new(env!("CARGO_BIN_EXE_dockline-sim"))
        .args([
            "bench",
            "--quick",
            "--only",
            "fleet_reconnect_burst",
            "--json",
        ])
        .arg(&json)
        .output()
        .expect("dockline-sim runs");
    assert!(
        out.status.success(),
        "bench failed ({})\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&json).expect("figures written");
    let figures: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    let figures = figures.as_array().expect("a list");
    assert_eq!(figures.len(), 1, "{text}");
    let f = &figures[0];
    assert_eq!(f["name"], "fleet_reconnect_burst", "{text}");
    assert_eq!(f["unit"], "messages/s", "{text}");
    let value = f["value"].as_f64().expect("value");
    let baseline = f["baseline"].as_f64().expect("baseline");
    assert!(value > 0.0 && baseline > 0.0, "{text}");
    let ratio = f["ratio"].as_f64().expect("ratio");
    assert!((ratio - value / baseline).abs() < 1e-9, "{text}");
    let detail = f["detail"].as_str().expect("detail");
    assert!(
        detail.contains("300 devices x 4") && detail.contains("acked up to 4"),
        "{detail}"
    );
}
