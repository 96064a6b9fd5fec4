//! The `fleet_reconnect_burst` bench figure as a user runs it
//! (`dockline-sim bench --quick --only fleet_reconnect_burst`): 300 devices
//! × 4 one-event batches at once through the bench's broker to a real
//! collector, every one stored and acked, the figure written with its raw
//! baseline from the same run.

mod support;

use support::dockline_sim;

#[test]
fn quick_fleet_reconnect_burst_is_stored_acked_and_reported_beside_its_baseline() {
    let run = dockline_sim(
        &["bench", "--quick", "--only", "fleet_reconnect_burst"],
        "--json",
    );
    let text = run.json.to_string();
    let figures = &run.json;
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
