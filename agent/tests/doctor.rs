//! `dockline-agent doctor` as an operator runs it: the real binary against a
//! live outbox, a damaged file, a salvaged file and a missing one.

use std::path::Path;
use std::process::{Command, Output};

use dockline_agent::outbox::{NewEvent, Outbox, OutboxConfig};
use dockline_protocol::{
    BusinessEvent, DeviceId, EventDetail, Outcome, Payload, Priority, References, TimeSource,
    Verdict,
};
use serde_json::Value;

fn picked(n: u32) -> NewEvent {
    NewEvent {
        priority: Priority::MustDeliver,
        captured_ms: 1_700_000_000_000 + n as i64,
        time_source: TimeSource::DeviceClock,
        payload: Payload::Event(BusinessEvent {
            detail: EventDetail::Picked {
                item: format!("item-{n}"),
                quantity: n,
                lot: None,
            },
            refs: References {
                order: Some("SO-1".into()),
                ..References::default()
            },
        }),
    }
}

fn open(dir: &Path) -> Outbox {
    Outbox::open(
        dir,
        DeviceId::new("hh-doc").expect("id"),
        OutboxConfig::default(),
    )
    .expect("open")
}

fn doctor(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dockline-agent"))
        .arg("doctor")
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("run dockline-agent doctor")
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).expect("doctor printed JSON")
}

#[tokio::test]
async fn doctor_reads_a_live_outbox() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().display().to_string();
    let ob = open(dir.path());
    let mut ids = Vec::new();
    for i in 1..=5 {
        ids.push(ob.append(picked(i)).await.expect("append"));
    }
    assert_eq!(ob.apply_ack(2, vec![]).await.expect("ack"), 2);
    let n = ob
        .apply_verdicts(vec![Verdict {
            seq: 1,
            id: ids[0].event_id,
            outcome: Outcome::Booked {
                document: "DN-4711".into(),
            },
        }])
        .await
        .expect("verdict");
    assert_eq!(n, 1);

    // The outbox is still open (the agent is "running"): doctor reads alongside.
    let out = doctor(&["--data-dir", &data, "check"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("integrity     ok"), "{stdout}");
    assert!(stdout.contains("next_seq      6"), "{stdout}");
    assert!(stdout.contains("acked_up_to   2"), "{stdout}");
    assert!(stdout.contains("held events   3"), "{stdout}");
    assert!(stdout.contains("last salvage  none"), "{stdout}");
    assert!(stdout.contains("healthy"), "{stdout}");

    let out = doctor(&["--data-dir", &data, "check", "--json"]);
    assert_eq!(out.status.code(), Some(0));
    let report = json(&out);
    assert_eq!(report["healthy"], true);
    assert_eq!(report["schema_version"], report["schema_expected"]);
    assert_eq!(report["epoch"], ob.epoch());

    // Through the agent's config file too.
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!("site = \"dc-1\"\ndevice = \"hh-doc\"\ndata_dir = {data:?}\n"),
    )
    .expect("write config");
    let out = doctor(&["--config", &config.display().to_string(), "stats", "--json"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    let stats = json(&out);
    assert_eq!(stats["queued"], 3);
    assert_eq!(stats["classes"][0]["class"], "must_deliver");
    assert_eq!(stats["classes"][0]["queued"], 3);
    assert!(stats["classes"][0]["bytes"].as_u64().unwrap_or(0) > 0);
    assert_eq!(stats["classes"][2]["queued"], 0);
    assert_eq!(stats["receipts"]["queued"], 3);
    assert_eq!(stats["receipts"]["stored"], 1);
    assert_eq!(stats["receipts"]["booked"], 1);
    assert_eq!(stats["oldest_queued_ms"], 1_700_000_000_003i64);
    assert_eq!(stats["shed"], 0);
    assert_eq!(stats["drops"], Value::Array(vec![]));

    let out = doctor(&["--data-dir", &data, "list", "--state", "booked"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("DN-4711"), "{stdout}");
    assert!(stdout.contains(&ids[0].event_id.to_string()), "{stdout}");
    assert_eq!(stdout.lines().count(), 2, "header + one booked receipt");

    let out = doctor(&["--data-dir", &data, "list", "--state", "queued", "--json"]);
    assert_eq!(out.status.code(), Some(0));
    let queued = json(&out);
    let seqs: Vec<u64> = queued
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|r| r["seq"].as_u64())
        .collect();
    assert_eq!(seqs, vec![5, 4, 3], "queued receipts, newest first");

    // Only held events are exported: 1 and 2 are acknowledged.
    let out = doctor(&["--data-dir", &data, "export", "--from", "2", "--to", "3"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(lines.len(), 1, "{stdout}");
    assert_eq!(lines[0]["seq"], 3);
    assert_eq!(lines[0]["id"], ids[2].event_id.to_string());
    assert_eq!(lines[0]["ep"], ob.epoch());
    assert!(stdout.contains("item-3"), "{stdout}");

    let out = doctor(&["--data-dir", &data, "export"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(text(&out).0.lines().count(), 3);

    // The writer is still fine after the doctor's visits.
    assert_eq!(ob.append(picked(9)).await.expect("append").seq, 6);
}

#[tokio::test]
async fn doctor_reports_damage_and_then_the_salvage() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().display().to_string();
    {
        let ob = open(dir.path());
        for i in 0..3000 {
            ob.append(picked(i)).await.expect("append");
        }
        ob.apply_ack(100, vec![]).await.expect("ack");
    }
    // Let the writer thread close its connection (checkpointing the WAL).
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let path = dir.path().join("outbox.db");
    let mut bytes = std::fs::read(&path).expect("read db");
    let mid = bytes.len() / 2 / 4096 * 4096;
    for b in &mut bytes[mid..mid + 3 * 4096] {
        *b = 0xA5;
    }
    std::fs::write(&path, &bytes).expect("write damage");

    let out = doctor(&["--data-dir", &data, "check"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stdout.contains("integrity     DAMAGED"), "{stdout}");
    assert!(stdout.contains("readable"), "{stdout}");
    assert!(stdout.contains("start the agent"), "{stdout}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    let out = doctor(&["--data-dir", &data, "check", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let report = json(&out);
    assert_eq!(report["healthy"], false);
    let readable = &report["readable"];
    assert_eq!(readable["range_known"], true);
    let (ok, bad) = (
        readable["readable"].as_u64().unwrap_or(0),
        readable["unreadable"].as_u64().unwrap_or(0),
    );
    assert_eq!(ok + bad, 2900, "every held event is readable or unreadable");
    // The doctor changed nothing: the file is still where it was.
    assert_eq!(
        std::fs::read(&path).expect("read db").len(),
        bytes.len(),
        "doctor must not touch the file"
    );

    // Other actions on the damaged file fail clearly (or succeed), never panic.
    for args in [&["stats"][..], &["export"][..]] {
        let out = doctor(&[&["--data-dir", &data][..], args].concat());
        let (_, stderr) = text(&out);
        assert!(matches!(out.status.code(), Some(0 | 1)), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }

    // The agent salvages at open; then the doctor reports the salvage.
    let ob = open(dir.path());
    let salvage = ob
        .status()
        .await
        .expect("status")
        .salvage
        .expect("salvaged");
    let out = doctor(&["--data-dir", &data, "check"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains(&format!(
            "{} recovered, {} LOST",
            salvage.recovered, salvage.lost
        )),
        "{stdout}"
    );
    assert!(stdout.contains(&salvage.damaged_file), "{stdout}");
    let out = doctor(&["--data-dir", &data, "check", "--json"]);
    let report = json(&out);
    assert_eq!(report["last_salvage"]["lost"], salvage.lost);
    assert_eq!(
        report["last_salvage"]["lost_ranges"],
        serde_json::to_value(&salvage.lost_ranges).expect("ranges")
    );
    assert_eq!(report["last_salvage"]["recovered"], salvage.recovered);
    assert_eq!(report["salvages"], 1);
    // What the doctor read before the salvage is what the salvage found.
    assert_eq!(salvage.recovered, ok);
    assert_eq!(salvage.lost, bad);
    drop(ob);
}

#[test]
fn a_missing_outbox_is_a_clear_error_and_is_not_created() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("nowhere");
    let out = doctor(&["--data-dir", &data.display().to_string(), "check"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stdout}{stderr}");
    assert!(
        stderr.contains(&data.join("outbox.db").display().to_string()),
        "{stderr}"
    );
    assert!(stderr.contains("--data-dir"), "{stderr}");
    assert!(!data.exists(), "doctor must not create anything");

    // Neither flag nor DOCKLINE_* config: a usage error.
    let out = Command::new(env!("CARGO_BIN_EXE_dockline-agent"))
        .args(["doctor", "check"])
        .current_dir(dir.path())
        .env_remove("DOCKLINE_SITE")
        .env_remove("DOCKLINE_DEVICE")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).1.contains("--data-dir"));
}
