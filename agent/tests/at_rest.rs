//! Data at rest on a lost handheld: private files, sealed payloads (nothing
//! readable in the database, its WAL or free pages), and the doctor, the
//! salvage and `rotate-key` still working with the key.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use dockline_agent::outbox::{NewEvent, Outbox, OutboxConfig};
use dockline_protocol::{
    BusinessEvent, DeviceId, EventDetail, Payload, Priority, ProofOfDelivery, References,
    TimeSource,
};

const RECIPIENT: &str = "Zebulon Quartermaine";

fn delivered(n: u32) -> NewEvent {
    let pod: ProofOfDelivery = serde_json::from_value(serde_json::json!({
        "received_by": format!("{RECIPIENT} {n}"),
        "pieces": 2,
        "signature_ref": "sig-Quartermaine.png",
    }))
    .expect("proof of delivery");
    NewEvent {
        priority: Priority::MustDeliver,
        captured_ms: 1_700_000_000_000 + n as i64,
        time_source: TimeSource::DeviceClock,
        payload: Payload::Event(BusinessEvent {
            detail: EventDetail::Delivered(pod),
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
        DeviceId::new("hh-rest").expect("id"),
        OutboxConfig::default(),
    )
    .expect("open")
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// Every file in `dir` but the key file, with the name of any that holds
/// `needle` in its raw bytes.
fn files_holding(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read dir") {
        let path = entry.expect("entry").path();
        if path.file_name().is_some_and(|n| n == "outbox.key") || path.is_dir() {
            continue;
        }
        let bytes = std::fs::read(&path).expect("read");
        if bytes.windows(needle.len()).any(|w| w == needle) {
            found.push(path.display().to_string());
        }
    }
    found
}

fn agent(args: &[&str], dir: &Path) -> std::process::Output {
    // `--data-dir` belongs to the subcommand (`doctor --data-dir D export`).
    Command::new(env!("CARGO_BIN_EXE_dockline-agent"))
        .arg(args[0])
        .arg("--data-dir")
        .arg(dir)
        .args(&args[1..])
        .env_remove("RUST_LOG")
        .output()
        .expect("run dockline-agent")
}

#[tokio::test]
async fn a_stolen_outbox_shows_no_recipient_and_the_key_still_reads_it() {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = root.path().join("data");
    {
        let ob = open(&dir);
        for n in 0..40 {
            ob.append(delivered(n)).await.expect("append");
        }
        // Half of them are acknowledged: their payloads are deleted (the
        // receipts stay), so they would linger in free pages and the WAL
        // without secure_delete and sealing.
        ob.apply_ack(20, Vec::new()).await.expect("ack");
        // The files while the writer holds them (WAL not checkpointed).
        assert_eq!(mode(&dir), 0o700, "data folder");
        for f in [
            "outbox.db",
            "outbox.db-wal",
            "outbox.db-shm",
            "outbox.key",
            "outbox.lock",
        ] {
            assert_eq!(mode(&dir.join(f)), 0o600, "{f}");
        }
        assert_eq!(
            files_holding(&dir, RECIPIENT.as_bytes()),
            Vec::<String>::new()
        );
        assert_eq!(files_holding(&dir, b"Quartermaine"), Vec::<String>::new());
        // A second agent on the same folder is refused while this one runs.
        let err = Outbox::open(
            &dir,
            DeviceId::new("hh-rest").expect("id"),
            OutboxConfig::default(),
        )
        .err()
        .expect("a second writer is refused")
        .to_string();
        assert!(err.contains("another dockline-agent"), "{err}");
        let out = agent(&["rotate-key"], &dir);
        assert!(!out.status.success(), "rotate-key under a running agent");
        assert!(String::from_utf8_lossy(&out.stderr).contains("stop it first"));
    }
    // Give the writer thread a moment to close after the last handle.
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_eq!(files_holding(&dir, b"Quartermaine"), Vec::<String>::new());

    // The doctor reads the held events with the key beside the database.
    let out = agent(&["doctor", "export"], &dir);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().count(), 20);
    assert!(text.contains(&format!("{RECIPIENT} 39")), "{text}");

    // Rotation: a new key seals everything, the old one is gone.
    let before = std::fs::read_to_string(dir.join("outbox.key")).expect("key");
    let out = agent(&["rotate-key"], &dir);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json report");
    assert_eq!(report["key_id"], 2);
    assert_eq!(report["resealed"], 20);
    assert_eq!(report["retired"], serde_json::json!([1]));
    let after = std::fs::read_to_string(dir.join("outbox.key")).expect("key");
    assert_ne!(before, after);
    assert_eq!(after.lines().count(), 1);
    assert!(after.starts_with("2 "));
    assert_eq!(mode(&dir.join("outbox.key")), 0o600);
    assert_eq!(files_holding(&dir, b"Quartermaine"), Vec::<String>::new());
    let out = agent(&["doctor", "export"], &dir);
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("{RECIPIENT} 21")));

    // Without the key file, the doctor says which key is missing per row.
    std::fs::rename(dir.join("outbox.key"), root.path().join("key.aside")).expect("move key");
    let out = agent(&["doctor", "export"], &dir);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains(RECIPIENT));
    assert!(
        text.contains("sealed with key 2") && text.contains("outbox.key"),
        "{text}"
    );
    std::fs::rename(root.path().join("key.aside"), dir.join("outbox.key")).expect("key back");

    // The agent reopens it and uploads the same events.
    let ob = open(&dir);
    let chunk = ob.read(0, 100, false).await.expect("read");
    assert_eq!(chunk.events.len(), 20);
    assert_eq!(chunk.events[0].seq, 21);
}

/// A damaged file is salvaged with its sealed payloads readable.
#[tokio::test]
async fn salvage_keeps_sealed_payloads_readable() {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = root.path().join("data");
    {
        let ob = open(&dir);
        for n in 0..10 {
            ob.append(delivered(n)).await.expect("append");
        }
    }
    std::thread::sleep(std::time::Duration::from_millis(200));
    // Flip bytes in the middle of the last page of the file's table data.
    let db = dir.join("outbox.db");
    let conn = rusqlite::Connection::open(&db).expect("open");
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .expect("checkpoint");
    drop(conn);
    let mut bytes = std::fs::read(&db).expect("read");
    let page = 4096;
    let pages = bytes.len() / page;
    assert!(pages >= 3, "{pages} pages");
    // Page 1 is the schema; wreck the header of page 2 (an index or table
    // b-tree page) so quick_check fails.
    for b in &mut bytes[page..page + 16] {
        *b = 0xff;
    }
    std::fs::write(&db, &bytes).expect("write");
    let ob = open(&dir);
    let status = ob.status().await.expect("status");
    let report = status.salvage.expect("salvaged");
    // Whatever was recovered decodes with the key.
    let chunk = ob.read(0, 100, false).await.expect("read");
    assert_eq!(chunk.events.len() as u64, report.recovered);
    assert_eq!(report.recovered + report.lost, 10, "{report:?}");
    assert_eq!(mode(&db), 0o600);
}
