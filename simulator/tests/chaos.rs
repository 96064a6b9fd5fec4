//! `dockline-sim chaos` as CI runs it: two short fault trials over the real
//! agent and collector processes, a JSON report, and exit 0 only when no
//! accepted event was lost or booked twice.
//!
//! The seed is fixed so the same faults are played on every run (process
//! timing still varies); its plans include process kills, link faults and
//! ERP faults (checked below, so a change to the planner that loses one of
//! them shows here rather than silently thinning the test).

mod support;

use support::dockline_sim;

/// Trials 7 and 8 kill an agent and the collector, stop the broker, black-hole
/// the agents' link, take the ERP link down and delay it, and answer 503s.
const SEED: &str = "7";

#[test]
fn two_short_fault_trials_lose_and_duplicate_nothing() {
    let run = dockline_sim(
        &[
            "chaos",
            "--trials",
            "2",
            "--duration-per-trial",
            "10",
            "--seed",
            SEED,
        ],
        "--report",
    );
    let (report, stdout) = (&run.json, &run.stdout);
    assert_eq!(report["passed"], true, "{report}");
    let trials = report["trials"].as_array().expect("trials");
    assert_eq!(trials.len(), 2, "{report}");
    let mut kinds = Vec::new();
    for t in trials {
        let n = |f: &str| t[f].as_u64().unwrap_or_else(|| panic!("no {f}: {t}"));
        assert!(n("events_generated") > 0, "{t}");
        assert_eq!(n("booked"), n("events_generated"), "{t}");
        assert_eq!((n("lost"), n("duplicated")), (0, 0), "{t}");
        assert!(n("faults_injected") > 0, "{t}");
        // Signatures and photos went through the same kills and cuts: each
        // attached at the ERP once.
        let m = &t["media"];
        assert!(m["made"].as_u64() > Some(0), "{t}");
        assert_eq!(m["attached"], m["made"], "{t}");
        assert_eq!(
            (m["lost"].as_u64(), m["duplicated"].as_u64()),
            (Some(0), Some(0)),
            "{t}"
        );
        assert!(
            n("media_sent_bytes") >= m["made_bytes"].as_u64().unwrap_or(0),
            "{t}"
        );
        for f in t["faults"].as_array().expect("faults") {
            kinds.push(f["kind"].as_str().unwrap_or_default().to_string());
        }
    }
    let any = |p: &str| kinds.iter().any(|k| k.starts_with(p));
    assert!(
        any("kill_agent")
            && (any("kill_collector") || any("broker_outage"))
            && any("agents_broker")
            && any("collector_erp")
            && any("erp_"),
        "seed {SEED} no longer mixes process, link and ERP faults: {kinds:?}"
    );
    assert!(stdout.contains("total"), "{stdout}");
    assert!(stdout.contains("media: made"), "{stdout}");
}
