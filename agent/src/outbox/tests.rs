//! Outbox tests: the invariants of the module doc, one by one, plus a
//! property test against a simple model with crashes and reopens.

use super::*;
use dockline_protocol::{BusinessEvent, EventDetail, Fix, FixMode, Outcome, Reading, References};
use rusqlite::Connection;

fn event(priority: Priority, n: u32) -> NewEvent {
    let payload = match priority {
        Priority::Telemetry => Payload::Reading(Reading::Position(Fix {
            lat: 52.0 + n as f64 / 1e5,
            lon: 13.0,
            speed_mps: Some(3.0),
            course_deg: Some(90.0),
            mode: FixMode::Fix3d,
            satellites: Some(8),
            hdop: Some(1.1),
        })),
        _ => Payload::Event(BusinessEvent {
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
    };
    NewEvent {
        priority,
        captured_ms: 1_700_000_000_000 + n as i64,
        time_source: TimeSource::DeviceClock,
        payload,
    }
}

fn picked(n: u32) -> NewEvent {
    event(Priority::MustDeliver, n)
}

fn dev() -> DeviceId {
    DeviceId::new("hh-1").expect("id")
}

fn open(dir: &Path) -> Outbox {
    Outbox::open(dir, dev(), OutboxConfig::default()).expect("open")
}

/// The fsync cost of a single commit: its frames overwrite WAL blocks
/// written at open instead of growing the file (see `preallocate_wal`), and
/// what was committed survives a reopen as always.
#[tokio::test]
async fn fsynced_commits_overwrite_a_wal_written_ahead() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wal = dir.path().join("outbox.db-wal");
    // 1000 pages (wal_autocheckpoint) of 4096 bytes, 24-byte frame headers.
    let ahead = 1000 * (4096 + 24) + 32;
    {
        let ob = open(dir.path());
        let before = std::fs::metadata(&wal).expect("WAL exists").len();
        assert!(before >= ahead, "WAL written ahead: {before} bytes");
        for i in 0..100 {
            ob.append(picked(i)).await.expect("append");
        }
        let after = std::fs::metadata(&wal).expect("WAL").len();
        assert_eq!(after, before, "100 fsynced commits did not grow the WAL");
    }
    let ob = open(dir.path());
    let chunk = ob.read(1, 1000, false).await.expect("read");
    assert_eq!(chunk.events.len(), 100);
}

#[tokio::test]
async fn sequences_are_dense_and_survive_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let epoch;
    {
        let ob = open(dir.path());
        epoch = ob.epoch();
        let mut seqs = Vec::new();
        for i in 0..5 {
            seqs.push(ob.append(picked(i)).await.expect("append").seq);
        }
        assert_eq!(seqs, vec![1, 2, 3, 4, 5]);
    }
    let ob = open(dir.path());
    assert_eq!(ob.epoch(), epoch, "epoch is persisted");
    assert_eq!(ob.append(picked(9)).await.expect("append").seq, 6);
    let held = ob.read(1, 100, false).await.expect("read");
    assert_eq!(
        held.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5, 6]
    );
}

#[tokio::test]
async fn a_deleted_outbox_starts_a_new_epoch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = open(dir.path());
    let e1 = first.epoch();
    first.append(picked(1)).await.expect("append");
    drop(first);
    for f in ["outbox.db", "outbox.db-wal", "outbox.db-shm"] {
        std::fs::remove_file(dir.path().join(f)).ok();
    }
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let second = open(dir.path());
    assert!(
        second.epoch() > e1,
        "a reinstalled device must not reuse (epoch, seq)"
    );
}

#[tokio::test]
async fn concurrent_producers_get_distinct_sequences() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ob = open(dir.path());
    let mut tasks = Vec::new();
    for i in 0..200 {
        let ob = ob.clone();
        let priority = if i % 3 == 0 {
            Priority::Telemetry
        } else {
            Priority::MustDeliver
        };
        tasks.push(tokio::spawn(async move {
            ob.append(event(priority, i)).await.expect("append").seq
        }));
    }
    let mut seqs = Vec::new();
    for t in tasks {
        seqs.push(t.await.expect("join"));
    }
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=200).collect::<Vec<_>>());
}

#[tokio::test]
async fn telemetry_alone_is_committed_within_the_bound() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ob = open(dir.path());
    let a = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        ob.append(event(Priority::Telemetry, 1)),
    )
    .await
    .expect("telemetry commit is bounded")
    .expect("append");
    assert_eq!(a.seq, 1);
    // Nothing durable was committed, so only the bounded WAL sync can have
    // fsynced: it must have happened one bound (200 ms) later.
    let mut synced = None;
    for _ in 0..50 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        synced = ob.status().await.expect("status").last_fsync_us;
        if synced.is_some() {
            break;
        }
    }
    assert!(
        synced.is_some(),
        "telemetry's WAL was fsynced within the bound"
    );
}

#[tokio::test]
async fn ack_deletes_payloads_and_keeps_receipts_then_verdicts_land() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ob = open(dir.path());
    let mut ids = Vec::new();
    for i in 0..6 {
        ids.push(ob.append(picked(i)).await.expect("append"));
    }
    assert_eq!(ob.apply_ack(2, vec![(5, 5)]).await.expect("ack"), 2);
    // A stale ack is ignored, one beyond what was assigned is clamped.
    assert_eq!(ob.apply_ack(1, vec![]).await.expect("ack"), 2);
    let held = ob.read(1, 100, false).await.expect("read");
    assert_eq!(
        held.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![3, 4, 6],
        "selective ack removed 5"
    );
    assert_eq!(ob.apply_ack(99, vec![]).await.expect("ack"), 6);
    let st = ob.status().await.expect("status");
    assert_eq!((st.queued, st.stored, st.acked_up_to), (0, 6, 6));
    assert_eq!(
        st.verdicts_wanted_from,
        Some(1),
        "verdicts are awaited from the oldest stored"
    );
    let n = ob
        .apply_verdicts(vec![
            Verdict {
                seq: 1,
                id: ids[0].event_id,
                outcome: Outcome::Booked {
                    document: "D-1".into(),
                },
            },
            Verdict {
                seq: 2,
                id: ids[1].event_id,
                outcome: Outcome::Rejected {
                    reason: "closed".into(),
                },
            },
            // A verdict whose id does not match the seq changes nothing.
            Verdict {
                seq: 3,
                id: ids[0].event_id,
                outcome: Outcome::Booked {
                    document: "X".into(),
                },
            },
        ])
        .await
        .expect("verdicts");
    assert_eq!(n, 2);
    let st = ob.status().await.expect("status");
    assert_eq!(
        st.verdicts_wanted_from,
        Some(3),
        "seq 3's verdict is still missing"
    );
    let r = ob
        .receipt(ids[0].event_id)
        .await
        .expect("receipt")
        .expect("exists");
    assert_eq!(
        (r.state.as_str(), r.document.as_deref()),
        ("booked", Some("D-1"))
    );
    let rejected = ob
        .receipts(Some("rejected".into()), 10, None)
        .await
        .expect("list");
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0].reason.as_deref(), Some("closed"));
}

#[tokio::test]
async fn live_read_skips_telemetry() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ob = open(dir.path());
    for i in 0..50 {
        ob.append(event(Priority::Telemetry, i))
            .await
            .expect("append");
    }
    let pod = ob.append(picked(99)).await.expect("append");
    let live = ob.read(1, 10, true).await.expect("read");
    assert_eq!(
        live.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![pod.seq]
    );
}

#[tokio::test]
async fn invalid_event_is_refused_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ob = open(dir.path());
    let mut bad = picked(1);
    if let Payload::Event(e) = &mut bad.payload {
        e.refs.order = Some("x".repeat(500));
    }
    let err = ob.append(bad).await.expect_err("too long");
    assert!(err.to_string().contains("r.ord"), "{err}");
    assert_eq!(
        ob.append(picked(2)).await.expect("append").seq,
        1,
        "no sequence burnt"
    );
}

#[tokio::test]
async fn newer_schema_is_refused_with_advice() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("outbox.db");
    let conn = Connection::open(&path).expect("open");
    conn.pragma_update(None, "user_version", 7).expect("pragma");
    drop(conn);
    let err = Outbox::open(dir.path(), dev(), OutboxConfig::default())
        .err()
        .expect("too new");
    assert!(err.to_string().contains("schema version 7"), "{err}");
}

/// Fill the budget with telemetry, then post proofs of delivery: telemetry is
/// shed, every proof of delivery is kept; with only proofs of delivery left,
/// new ones are refused with a clear error, and accepted again when space
/// returns.
#[tokio::test]
async fn disk_budget_sheds_telemetry_and_never_must_deliver() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = OutboxConfig {
        budget_bytes: 20_000,
        min_free_bytes: 0,
        ..OutboxConfig::default()
    };
    let ob = Outbox::open(dir.path(), dev(), config).expect("open");
    let mut telemetry = 0;
    loop {
        match ob.append(event(Priority::Telemetry, telemetry)).await {
            Ok(_) => telemetry += 1,
            Err(_) => break,
        }
        if telemetry > 10_000 {
            break;
        }
    }
    // New telemetry may only displace older telemetry, so it never fails.
    assert!(
        telemetry > 10_000,
        "telemetry is never refused while older telemetry can be shed"
    );
    let st = ob.status().await.expect("status");
    assert!(
        st.queued_bytes <= 20_000,
        "budget holds: {}",
        st.queued_bytes
    );
    let tel_before = st.classes[2].queued;

    let mut pods = Vec::new();
    let refused = loop {
        match ob.append(picked(pods.len() as u32)).await {
            Ok(a) => pods.push(a),
            Err(e) => break e,
        }
        assert!(
            pods.len() < 10_000,
            "must-deliver events must eventually be refused"
        );
    };
    assert!(
        matches!(
            refused,
            OutboxError::Full {
                class: "must_deliver",
                ..
            }
        ),
        "{refused}"
    );
    assert!(
        refused.to_string().contains("raise [outbox] budget_bytes"),
        "{refused}"
    );
    let st = ob.status().await.expect("status");
    assert_eq!(
        st.classes[2].queued, 0,
        "all telemetry was shed for proofs of delivery (had {tel_before})"
    );
    assert_eq!(
        st.classes[0].queued,
        pods.len() as u64,
        "every accepted proof of delivery is held"
    );
    let dropped = |reason: &str, class: &str| {
        st.drops
            .iter()
            .find(|d| d.reason == reason && d.class == class)
            .map(|d| d.count)
            .unwrap_or(0)
    };
    assert_eq!(dropped("budget", "must_deliver"), 0);
    assert!(dropped("budget", "telemetry") >= telemetry as u64 - tel_before);
    assert_eq!(dropped("refused_full", "must_deliver"), 1);
    // Shed telemetry is reported with the next batch so the collector never waits for it.
    let chunk = ob.read(1, 1000, false).await.expect("read");
    let shed: u64 = chunk.shed.iter().map(|(a, b)| b - a + 1).sum();
    assert!(shed > 0 && chunk.shed[0].0 == 1, "{:?}", chunk.shed);

    // Space returns when the collector acknowledges.
    let floor = pods[pods.len() / 2].seq;
    ob.apply_ack(floor, vec![]).await.expect("ack");
    ob.append(picked(1))
        .await
        .expect("accepted again once space returned");
}

/// A damaged file (bytes overwritten in the middle) is moved aside and every
/// readable event is copied into a fresh outbox; exactly what was lost is
/// reported and told to the collector as shed.
#[tokio::test]
async fn damaged_file_is_salvaged_and_losses_reported_exactly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut ids = std::collections::HashMap::new();
    {
        let ob = open(dir.path());
        for i in 0..3000 {
            let a = ob.append(picked(i)).await.expect("append");
            ids.insert(a.seq, a.event_id);
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

    let ob = open(dir.path());
    let st = ob.status().await.expect("status");
    let report = st.salvage.clone().expect("salvage reported");
    assert!(report.epoch_kept);
    assert!(
        std::path::Path::new(&report.damaged_file).exists(),
        "damaged file kept aside"
    );
    assert_eq!(
        report.recovered + report.lost,
        2900,
        "every held event is either recovered or reported lost"
    );
    let lost: u64 = report.lost_ranges.iter().map(|(a, b)| b - a + 1).sum();
    assert_eq!(lost, report.lost);
    let held = ob.read(1, 5000, false).await.expect("read");
    assert_eq!(held.events.len() as u64, report.recovered);
    for e in &held.events {
        assert_eq!(
            ids.get(&e.seq),
            Some(&e.id),
            "recovered event {} is the original",
            e.seq
        );
        assert!(
            !report
                .lost_ranges
                .iter()
                .any(|(a, b)| (*a..=*b).contains(&e.seq))
        );
    }
    assert_eq!(
        held.shed, report.lost_ranges,
        "lost sequences are reported to the collector as shed"
    );
    // The salvaged outbox carries on: no sequence is reused.
    assert_eq!(ob.append(picked(1)).await.expect("append").seq, 3001);
}

mod model {
    //! The outbox against a model: a map of held sequences, a floor and a
    //! counter. Random appends, acks, reads, crashes and reopens.
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    #[derive(Debug, Clone)]
    enum Action {
        Append(u8),
        Ack(u64),
        Read(u64),
        Reopen,
    }

    fn action() -> impl Strategy<Value = Action> {
        prop_oneof![
            4 => (0u8..3).prop_map(Action::Append),
            2 => (0u64..40).prop_map(Action::Ack),
            1 => (0u64..40).prop_map(Action::Read),
            1 => Just(Action::Reopen),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, .. ProptestConfig::default() })]
        #[test]
        fn outbox_matches_model(actions in proptest::collection::vec(action(), 1..60)) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            rt.block_on(async {
                let dir = tempfile::tempdir().expect("tempdir");
                let mut ob = open(dir.path());
                let mut held: BTreeMap<u64, EventId> = BTreeMap::new();
                let mut next = 1u64;
                let mut floor = 0u64;
                for a in actions {
                    match a {
                        Action::Append(p) => {
                            let priority = [Priority::MustDeliver, Priority::Normal, Priority::Telemetry][p as usize];
                            let got = ob.append(event(priority, next as u32)).await.expect("append");
                            assert_eq!(got.seq, next, "sequences are dense and never reused");
                            held.insert(next, got.event_id);
                            next += 1;
                        }
                        Action::Ack(k) => {
                            let up_to = floor + k;
                            let new_floor = ob.apply_ack(up_to, vec![]).await.expect("ack");
                            floor = floor.max(up_to.min(next - 1));
                            assert_eq!(new_floor, floor);
                            held.retain(|s, _| *s > floor);
                        }
                        Action::Read(from) => {
                            let chunk = ob.read(from, 1000, false).await.expect("read");
                            let got: Vec<(u64, EventId)> = chunk.events.iter().map(|e| (e.seq, e.id)).collect();
                            let want: Vec<(u64, EventId)> = held.range(from..).map(|(s, i)| (*s, *i)).collect();
                            assert_eq!(got, want, "held events, in order, nothing acked comes back");
                            let st = ob.status().await.expect("status");
                            assert_eq!(st.queued, held.len() as u64, "status counters match the table");
                        }
                        Action::Reopen => {
                            drop(ob);
                            ob = open(dir.path());
                        }
                    }
                }
                let chunk = ob.read(0, 10_000, false).await.expect("read");
                assert_eq!(chunk.events.len(), held.len());
                let st = ob.status().await.expect("status");
                let bytes: u64 = chunk.events.iter().map(|e| dockline_protocol::codec::encode(e).map(|b| (b.len() + keys::OVERHEAD) as u64).unwrap_or(0)).sum();
                assert_eq!((st.queued, st.queued_bytes), (held.len() as u64, bytes), "counted bytes are the stored (sealed) payloads");
            });
        }
    }
}

/// Receipts past their retention are pruned; queued events never are.
#[tokio::test]
async fn old_receipts_are_pruned_but_queued_events_stay() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = OutboxConfig {
        receipt_retention_hours: 0,
        ..OutboxConfig::default()
    };
    let ob = Outbox::open(dir.path(), dev(), config).expect("open");
    let mut ids = Vec::new();
    for i in 0..4 {
        ids.push(ob.append(picked(i)).await.expect("append"));
    }
    ob.apply_ack(2, vec![]).await.expect("ack");
    ob.apply_verdicts(vec![Verdict {
        seq: 1,
        id: ids[0].event_id,
        outcome: Outcome::Booked {
            document: "D-1".into(),
        },
    }])
    .await
    .expect("verdict");
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    assert_eq!(
        ob.prune_receipts().await.expect("prune"),
        2,
        "booked 1 and stored 2"
    );
    assert!(ob.receipt(ids[0].event_id).await.expect("read").is_none());
    for a in &ids[2..] {
        let r = ob
            .receipt(a.event_id)
            .await
            .expect("read")
            .expect("queued stays");
        assert_eq!(r.state, "queued");
    }
    assert_eq!(ob.status().await.expect("status").queued, 2);
}

#[tokio::test]
async fn a_verdict_that_overtakes_its_ack_is_kept_and_listed_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ob = open(dir.path());
    let a = ob.append(picked(1)).await.expect("append");
    let b = ob.append(picked(2)).await.expect("append");
    let queued = ob
        .receipt(a.event_id)
        .await
        .expect("receipt")
        .expect("exists");
    assert_eq!(
        (queued.state.as_str(), queued.kind.as_str()),
        ("queued", "picked")
    );
    assert!(
        (now_ms() - queued.updated_ms).abs() < 60_000,
        "a queued receipt's time is its append time, from the UUIDv7 id: {}",
        queued.updated_ms
    );
    // The ack that stored seq 1 was lost; its verdict arrives first.
    let n = ob
        .apply_verdicts(vec![Verdict {
            seq: 1,
            id: a.event_id,
            outcome: Outcome::Booked {
                document: "D-1".into(),
            },
        }])
        .await
        .expect("verdicts");
    assert_eq!(n, 1, "the verdict lands on the still-queued event");
    let all = ob.receipts(None, 10, None).await.expect("list");
    assert_eq!(
        all.iter()
            .map(|r| (r.seq, r.state.as_str()))
            .collect::<Vec<_>>(),
        vec![(2, "queued"), (1, "booked")],
        "newest first, each event once"
    );
    assert_eq!(
        ob.receipts(Some("queued".into()), 10, None)
            .await
            .expect("list")
            .iter()
            .map(|r| r.event_id)
            .collect::<Vec<_>>(),
        vec![b.event_id]
    );
    // The late ack deletes the payload but does not undo the verdict.
    assert_eq!(ob.apply_ack(2, vec![]).await.expect("ack"), 2);
    let r = ob
        .receipt(a.event_id)
        .await
        .expect("receipt")
        .expect("exists");
    assert_eq!(
        (r.state.as_str(), r.document.as_deref()),
        ("booked", Some("D-1"))
    );
    let r = ob
        .receipt(b.event_id)
        .await
        .expect("receipt")
        .expect("exists");
    assert_eq!(r.state, "stored");
    assert!(ob.read(1, 10, false).await.expect("read").events.is_empty());
}

#[tokio::test]
async fn receipts_page_back_with_before() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ob = open(dir.path());
    for i in 0..5 {
        ob.append(picked(i)).await.expect("append");
    }
    ob.apply_ack(2, vec![]).await.expect("ack");
    let mut pages = Vec::new();
    let mut before = None;
    loop {
        let page = ob.receipts(None, 2, before).await.expect("list");
        let Some(last) = page.last() else { break };
        before = Some(last.seq);
        pages.push(
            page.iter()
                .map(|r| (r.seq, r.state.clone()))
                .collect::<Vec<_>>(),
        );
    }
    let s = |n: u64, st: &str| (n, st.to_string());
    assert_eq!(
        pages,
        vec![
            vec![s(5, "queued"), s(4, "queued")],
            vec![s(3, "queued"), s(2, "stored")],
            vec![s(1, "stored")],
        ]
    );
    let queued = ob
        .receipts(Some("queued".into()), 10, Some(4))
        .await
        .expect("list");
    assert_eq!(queued.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![3]);
    let stored = ob
        .receipts(Some("stored".into()), 10, Some(2))
        .await
        .expect("list");
    assert_eq!(stored.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![1]);
}
