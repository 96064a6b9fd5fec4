//! The demo end to end, as a user runs it: broker, collector and agents as
//! child processes, a broker outage, ERP faults, the checked-in warehouse
//! shift and delivery route played on virtual devices (pseudo-terminals read
//! by the agents' serial sources), and a report that must show every event,
//! posted or made by station rules from device bytes, booked exactly once.

mod support;

use support::{dockline_sim, field};

/// Without media the drivers' PODs name none, and the report counts none.
#[test]
fn demo_without_media_counts_none() {
    let run = dockline_sim(
        &[
            "demo",
            "--duration",
            "12",
            "--no-media",
            "--outage-secs",
            "0",
        ],
        "--report",
    );
    let report = &run.json;
    // The route's PODs were posted, without their media.
    let pods = &report["by_source"]["delivery-route"]["delivered"]["generated"];
    assert!(pods.as_u64() > Some(0), "{report}");
    assert_eq!(report["media"]["made"], 0, "{report}");
    assert_eq!(report["media"]["attached"], 0, "{report}");
    assert_eq!(report["passed"], true, "{report}");
}

#[test]
fn demo_books_every_event_exactly_once_across_a_broker_outage() {
    let run = dockline_sim(&["demo", "--duration", "20"], "--report");
    let (report, stdout) = (&run.json, &run.stdout);
    let field = |name: &str| field(report, name);
    let generated = field("events_generated");
    assert!(generated > 0, "{report}");
    assert_eq!(field("events_booked_at_erp"), generated, "{report}");
    assert_eq!(field("lost"), 0, "{report}");
    assert_eq!(field("duplicated"), 0, "{report}");
    assert_eq!(field("broker_outages"), 1, "{report}");
    assert_eq!(report["passed"], true, "{report}");
    let by_kind = report["by_kind"].as_object().expect("by_kind");
    for kind in ["picked", "packed", "loaded", "departed", "arrived"] {
        assert!(by_kind.contains_key(kind), "no {kind} events: {report}");
    }
    // The device scenarios made business events through the station rules.
    assert!(field("virtual_devices") >= 8, "{report}");
    assert!(field("expected_from_devices") > 0, "{report}");
    let by_source = report["by_source"].as_object().expect("by_source");
    for (source, kinds) in [
        ("warehouse-shift", &["picked", "packed", "loaded"][..]),
        ("delivery-route", &["departed", "arrived", "delivered"][..]),
    ] {
        for kind in kinds {
            let c = &by_source[source][kind];
            assert!(
                c["generated"].as_u64() > Some(0),
                "{source} {kind}: {report}"
            );
            assert_eq!(c["booked"], c["generated"], "{source} {kind}: {report}");
        }
    }
    // Every source is timed from making to booking, device-made events too.
    for source in ["orders (HTTP)", "warehouse-shift", "delivery-route"] {
        let l = &report["latency"][source];
        assert!(l["events"].as_u64() > Some(0), "{source}: {report}");
        assert!(
            l["p50_ms"].as_u64() <= l["p99_ms"].as_u64(),
            "{source}: {l}"
        );
        assert!(
            l["p99_ms"].as_u64() <= l["max_ms"].as_u64(),
            "{source}: {l}"
        );
    }
    // Each of the route's three stops posted a signature and a photo; each
    // reached the collector and was attached at the ERP once, its bytes
    // checked there against its hash.
    let media = &report["media"];
    assert_eq!(media["made"], 6, "{report}");
    assert!(media["made_bytes"].as_u64() > Some(3 * 200_000), "{report}");
    assert_eq!(media["stored"], media["made"], "{report}");
    assert_eq!(media["attached"], media["made"], "{report}");
    assert_eq!(
        (media["lost"].as_u64(), media["duplicated"].as_u64()),
        (Some(0), Some(0)),
        "{report}"
    );
    assert!(stdout.contains("media attached"), "{stdout}");
    assert!(stdout.contains("broker KILLED"), "{stdout}");
    assert!(stdout.contains("PASS"), "{stdout}");
}

/// The mock ERP's session expires every 40 bookings and answers 401
/// `{"code":"session_expired"}` for 600 ms each time; the collector halts its
/// endpoint on each 401, rechecks, and must still book every event once.
#[test]
fn expiring_erp_sessions_still_book_every_event_exactly_once() {
    let run = dockline_sim(
        &[
            "demo",
            "--duration",
            "10",
            "--no-devices",
            "--outage-secs",
            "0",
            "--erp-fail-rate",
            "0",
            "--erp-throttle-rate",
            "0",
            "--erp-lose-after-commit-rate",
            "0",
            "--erp-session-expiry-every",
            "40",
            "--erp-session-expiry-ms",
            "600",
        ],
        "--report",
    );
    let report = &run.json;
    let field = |name: &str| field(report, name);
    assert!(field("events_generated") > 80, "{report}");
    assert_eq!(
        field("events_booked_at_erp"),
        field("events_generated"),
        "{report}"
    );
    assert_eq!((field("lost"), field("duplicated")), (0, 0), "{report}");
    assert!(field("erp_session_expiries") >= 2, "{report}");
    assert!(field("erp_session_refusals") >= 2, "{report}");
    let latency = &report["latency"]["orders (HTTP)"];
    assert_eq!(latency["events"], report["events_generated"], "{report}");
    assert!(
        latency["max_ms"].as_u64() >= latency["p50_ms"].as_u64(),
        "{report}"
    );
}
