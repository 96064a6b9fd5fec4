//! The inbox contract's tests ([`InboxStore`]), one suite for every
//! backend: each test runs on a fresh SQLite file and, when
//! `DOCKLINE_TEST_PG_URL` is set, on PostgreSQL in a fresh schema of its own
//! (created with a random name, dropped at the end); otherwise it prints one
//! `SKIP` line for PostgreSQL. The last tests open two stores on one
//! database, as two collectors do.

use super::tests::{batch, envelope, site};
use super::*;
use crate::inbox::postgres::ScratchSchema;
use crate::inbox::sqlite::schema::V1;
use crate::inbox::watermark::ranges;
use dockline_protocol::batch::MAX_RANGES;
use dockline_protocol::{Envelope, Payload, StatusKind, codec};
use rusqlite::{Connection, params};

/// One backend's fresh, empty inbox, which a test may open more than once
/// (a restart, or a second collector).
enum Fresh {
    Sqlite(tempfile::TempDir),
    Postgres(ScratchSchema),
}

impl Fresh {
    fn open(&self) -> Box<dyn InboxStore> {
        match self {
            Fresh::Sqlite(dir) => {
                Box::new(Inbox::open(&dir.path().join("inbox.db")).expect("open SQLite inbox"))
            }
            Fresh::Postgres(schema) => Box::new(
                PgInbox::open(schema.url(), crate::inbox::postgres::DEFAULT_LEASE_MS)
                    .expect("open PostgreSQL inbox"),
            ),
        }
    }
}

/// Runs `test` on SQLite, then on PostgreSQL when `DOCKLINE_TEST_PG_URL`
/// is set.
fn on_each_backend(name: &str, test: impl Fn(&Fresh)) {
    println!("inbox::{name} on SQLite");
    test(&Fresh::Sqlite(tempfile::tempdir().expect("tempdir")));
    match std::env::var("DOCKLINE_TEST_PG_URL") {
        Ok(url) if !url.is_empty() => {
            println!("inbox::{name} on PostgreSQL");
            let schema = ScratchSchema::create(&url, "unit")
                .expect("DOCKLINE_TEST_PG_URL is set: its database must accept CREATE SCHEMA");
            test(&Fresh::Postgres(schema));
        }
        _ => println!("SKIP inbox::{name} on PostgreSQL: set DOCKLINE_TEST_PG_URL to run"),
    }
}

/// Lanes due now, sorted.
fn due(inbox: &dyn InboxStore) -> Vec<String> {
    let mut d = inbox.due_lanes(i64::MAX, 100).expect("due");
    d.sort();
    d
}

#[test]
fn due_lanes_list_each_lane_with_work_once() {
    on_each_backend("due_lanes_list_each_lane_with_work_once", |b| {
        let mut inbox = b.open();
        assert!(due(&*inbox).is_empty());
        for d in ["van-2", "hh-01", "hh-03"] {
            inbox
                .store_batch(&site(), &batch(d, 1, 1, &[1, 2, 3]), 0)
                .expect("store");
        }
        let hh03 = DeviceId::new("hh-03").expect("id");
        for seq in 1..=3 {
            let booked = Outcome::Booked {
                document: format!("D-{seq}"),
            };
            inbox
                .record_verdict(&hh03, 1, seq, &booked, 1)
                .expect("verdict");
        }
        assert_eq!(
            due(&*inbox),
            vec!["device:hh-01", "device:hh-03", "device:van-2"]
        );
        // Looking at a lane with nothing pending makes it idle.
        assert!(
            inbox
                .next_in_lane("device:hh-03", 1, 0)
                .expect("next")
                .is_none()
        );
        assert_eq!(due(&*inbox), vec!["device:hh-01", "device:van-2"]);
    });
}

#[test]
fn out_of_order_arrival_never_acks_past_a_hole() {
    on_each_backend("out_of_order_arrival_never_acks_past_a_hole", |b| {
        let mut inbox = b.open();
        let out = inbox
            .store_batch(&site(), &batch("hh-01", 1, 1, &[1, 2]), 0)
            .expect("store");
        assert_eq!(
            out,
            StoreOutcome {
                stored: 2,
                duplicates: 0,
                complete_up_to: 2,
                also_stored: vec![],
                newly_shed: vec![],
                refused_claims: vec![],
                quarantined: vec![],
            }
        );
        // 3 is lost in flight; 4 and 5 arrive first.
        let out = inbox
            .store_batch(&site(), &batch("hh-01", 1, 1, &[4, 5]), 0)
            .expect("store");
        assert_eq!(out.stored, 2);
        assert_eq!(out.complete_up_to, 2, "must not ack past the hole at 3");
        assert_eq!(out.also_stored, vec![(4, 5)]);
        // 3 arrives: the watermark jumps over everything already present.
        let out = inbox
            .store_batch(&site(), &batch("hh-01", 1, 1, &[3]), 0)
            .expect("store");
        assert_eq!(out.complete_up_to, 5);
        // Another epoch of the same device is independent.
        let out = inbox
            .store_batch(&site(), &batch("hh-01", 2, 1, &[2]), 0)
            .expect("store");
        assert_eq!(out.complete_up_to, 0);
    });
}

fn book(inbox: &mut dyn InboxStore, dev: &DeviceId, epoch: u64, seq: u64) {
    let booked = Outcome::Booked {
        document: format!("D-{epoch}-{seq}"),
    };
    assert!(
        inbox
            .record_verdict(dev, epoch, seq, &booked, 1)
            .expect("verdict")
    );
}

fn deliverable(inbox: &mut dyn InboxStore, dev: &DeviceId) -> Option<(u64, u64)> {
    match inbox
        .next_in_lane(&format!("device:{dev}"), 1, 0)
        .expect("next")
    {
        Some(NextPending::Event(p)) => Some((p.envelope.epoch, p.envelope.seq)),
        Some(other) => panic!("{other:?}"),
        None => None,
    }
}

#[test]
fn nothing_is_delivered_past_a_hole() {
    on_each_backend("nothing_is_delivered_past_a_hole", |b| {
        let mut inbox = b.open();
        let dev = DeviceId::new("hh-01").expect("id");
        inbox
            .store_batch(&site(), &batch("hh-01", 1, 1, &[1, 2, 4]), 0)
            .expect("store");
        assert_eq!(deliverable(&mut *inbox, &dev), Some((1, 1)));
        book(&mut *inbox, &dev, 1, 1);
        assert_eq!(deliverable(&mut *inbox, &dev), Some((1, 2)));
        book(&mut *inbox, &dev, 1, 2);
        // 4 is stored but 3 is missing: 4 waits.
        assert_eq!(deliverable(&mut *inbox, &dev), None, "4 must wait for 3");
        assert!(
            due(&*inbox).is_empty() || inbox.next_lane_wake_ms().expect("wake") > Some(1),
            "a lane held at a hole is not due"
        );
        inbox
            .store_batch(&site(), &batch("hh-01", 1, 1, &[3]), 2)
            .expect("store");
        assert_eq!(
            due(&*inbox),
            vec!["device:hh-01"],
            "the hole closed: due again"
        );
        assert_eq!(deliverable(&mut *inbox, &dev), Some((1, 3)));
        book(&mut *inbox, &dev, 1, 3);
        assert_eq!(deliverable(&mut *inbox, &dev), Some((1, 4)));
    });
}

/// The agent's live lane sends a business event ahead of the backlog, and
/// the backlog lane then sends it again with the sequences before it: the
/// batch that closes the hole holds the held event as a duplicate, and
/// brings nothing else of its lane. The watermark still passes an event
/// stored earlier, so that lane is due at once (the demo once waited for the
/// 60 s safety net here).
#[test]
fn closing_a_hole_wakes_a_held_lane_even_when_the_batch_repeats_the_held_event() {
    on_each_backend(
        "closing_a_hole_wakes_a_held_lane_even_when_the_batch_repeats_the_held_event",
        |b| {
            let mut inbox = b.open();
            let dev = DeviceId::new("hh-01").expect("id");
            let with_pod = |seqs: &[u64]| {
                let mut b = batch("hh-01", 1, 1, seqs);
                for e in &mut b.events {
                    if e.seq == 4 {
                        *e = pod("hh-01", 4, "SO-9");
                    }
                }
                b
            };
            inbox
                .store_batch(&site(), &with_pod(&[1, 4]), 0)
                .expect("store");
            book(&mut *inbox, &dev, 1, 1);
            let lane = "order:SO-9";
            assert!(
                inbox.next_in_lane(lane, 1, 0).expect("next").is_none(),
                "the proof of delivery waits for 2 and 3"
            );
            // Parked at the hole until the safety net, a minute on.
            let due_at_2 = |inbox: &dyn InboxStore| inbox.due_lanes(2, 100).expect("due");
            assert!(
                !due_at_2(&*inbox).contains(&lane.to_string()),
                "a lane held at a hole is not due"
            );
            let out = inbox
                .store_batch(&site(), &with_pod(&[2, 3, 4]), 2)
                .expect("store");
            assert_eq!(out.complete_up_to, 4);
            assert!(
                due_at_2(&*inbox).contains(&lane.to_string()),
                "the hole closed: the proof of delivery's lane is due again at once"
            );
        },
    );
}

#[test]
fn shed_sequences_do_not_hold_delivery_and_epochs_go_oldest_first() {
    on_each_backend(
        "shed_sequences_do_not_hold_delivery_and_epochs_go_oldest_first",
        |b| {
            let mut inbox = b.open();
            let dev = DeviceId::new("hh-01").expect("id");
            inbox
                .store_batch(&site(), &batch("hh-01", 1, 1, &[1, 3]), 0)
                .expect("store");
            // The device was reinstalled: epoch 2 starts its own watermark.
            inbox
                .store_batch(&site(), &batch("hh-01", 2, 1, &[1, 2]), 0)
                .expect("store");
            assert_eq!(deliverable(&mut *inbox, &dev), Some((1, 1)));
            book(&mut *inbox, &dev, 1, 1);
            // Epoch 1 is held at its hole at 2, and the newer epoch waits behind it.
            assert_eq!(deliverable(&mut *inbox, &dev), None);
            // The device reports 2 as gone (shed): the hole closes.
            let mut gone = batch("hh-01", 1, 1, &[]);
            gone.shed = vec![(2, 2)];
            let out = inbox.store_batch(&site(), &gone, 0).expect("store");
            assert_eq!(out.complete_up_to, 3);
            assert_eq!(deliverable(&mut *inbox, &dev), Some((1, 3)));
            book(&mut *inbox, &dev, 1, 3);
            assert_eq!(deliverable(&mut *inbox, &dev), Some((2, 1)));
        },
    );
}

#[test]
fn holes_are_the_missing_sequences_below_the_highest_stored_minus_shed() {
    assert_eq!(holes_above(2, &[4, 5], &[]), vec![(3, 3)]);
    assert_eq!(holes_above(2, &[], &[]), vec![], "a tail is not a hole");
    assert_eq!(
        holes_above(0, &[10, 20], &[(3, 4), (12, 19)]),
        vec![(1, 2), (5, 9), (11, 11)]
    );
    assert_eq!(holes_above(0, &[10], &[(1, 9)]), vec![]);
    assert_eq!(holes_above(5, &[7, 8, 12], &[]), vec![(6, 6), (9, 11)]);
    let many: Vec<u64> = (1..=3000).map(|i| i * 2).collect();
    assert_eq!(holes_above(0, &many, &[]).len(), MAX_RANGES);
}

#[test]
fn open_holes_are_listed_counted_and_closed_by_a_gone_report() {
    on_each_backend(
        "open_holes_are_listed_counted_and_closed_by_a_gone_report",
        |b| {
            let mut inbox = b.open();
            inbox
                .store_batch(&site(), &batch("hh-01", 1, 1, &[1, 2, 5, 8]), 0)
                .expect("store");
            inbox
                .store_batch(&site(), &batch("hh-02", 1, 1, &[1, 2]), 0)
                .expect("store");
            let holes = inbox.open_holes().expect("holes");
            assert_eq!(holes.len(), 1);
            assert_eq!(holes[0].device.as_str(), "hh-01");
            assert_eq!((holes[0].epoch, holes[0].complete_up_to), (1, 2));
            assert_eq!(holes[0].holes, vec![(3, 4), (6, 7)]);
            let stats = inbox.stats().expect("stats");
            assert_eq!(
                stats.devices[0].holes,
                vec![
                    HoleStats {
                        epoch: 1,
                        from: 3,
                        to: 4
                    },
                    HoleStats {
                        epoch: 1,
                        from: 6,
                        to: 7
                    }
                ]
            );
            assert!(stats.devices[1].holes.is_empty());
            // The device still has 3..=4 and sends them; 6..=7 are gone.
            inbox
                .store_batch(&site(), &batch("hh-01", 1, 1, &[3, 4]), 0)
                .expect("store");
            let mut gone = batch("hh-01", 1, 1, &[]);
            gone.shed = vec![(6, 7)];
            let out = inbox.store_batch(&site(), &gone, 0).expect("store");
            assert_eq!(out.complete_up_to, 8);
            assert!(inbox.open_holes().expect("holes").is_empty());
            inbox.count_resend_requests(2).expect("count");
            let stats = inbox.stats().expect("stats");
            assert_eq!((stats.holes_lost, stats.resend_requests), (2, 2));
        },
    );
}

#[test]
fn duplicates_are_skipped_counted_and_re_acked() {
    on_each_backend("duplicates_are_skipped_counted_and_re_acked", |b| {
        let mut inbox = b.open();
        inbox
            .store_batch(&site(), &batch("hh-01", 1, 1, &[1, 2, 3]), 0)
            .expect("store");
        inbox
            .store_batch(&site(), &batch("hh-01", 1, 1, &[5]), 0)
            .expect("store");
        // The ack for 1..=3 was lost; the agent resends 1..=3 plus 4.
        let out = inbox
            .store_batch(&site(), &batch("hh-01", 1, 1, &[1, 2, 3, 4]), 0)
            .expect("store");
        assert_eq!(out.stored, 1);
        assert_eq!(out.duplicates, 3);
        assert_eq!(out.complete_up_to, 5);
        // A pure duplicate (5 again) is re-acked with the current watermark.
        let out = inbox
            .store_batch(&site(), &batch("hh-01", 1, 1, &[5]), 0)
            .expect("store");
        assert_eq!((out.stored, out.duplicates, out.complete_up_to), (0, 1, 5));
        let stats = inbox.stats().expect("stats");
        assert_eq!(stats.received, 5);
        assert_eq!(stats.duplicates, 4);
        assert_eq!(stats.pending, 5);
    });
}

#[test]
fn first_held_jump_moves_the_watermark() {
    on_each_backend("first_held_jump_moves_the_watermark", |b| {
        let mut inbox = b.open();
        // A fresh collector: the agent already had 1..=99 acked elsewhere.
        let out = inbox
            .store_batch(&site(), &batch("hh-01", 1, 100, &[100, 101, 103]), 0)
            .expect("store");
        assert_eq!(out.complete_up_to, 101);
        // An event below the watermark that has no row is stored: real data
        // below a claim is never dropped (crate::inbox::watermark); a repeat of it is
        // a duplicate.
        let out = inbox
            .store_batch(&site(), &batch("hh-01", 1, 50, &[50]), 0)
            .expect("store");
        assert_eq!(
            (out.stored, out.duplicates, out.complete_up_to),
            (1, 0, 101)
        );
        let out = inbox
            .store_batch(&site(), &batch("hh-01", 1, 50, &[50]), 0)
            .expect("store");
        assert_eq!(
            (out.stored, out.duplicates, out.complete_up_to),
            (0, 1, 101)
        );
        // The watermark never moves backwards, even if first_held does.
        assert_eq!(
            inbox
                .complete_up_to(&DeviceId::new("hh-01").expect("id"), 1)
                .expect("mark"),
            101
        );
        // first_held says 200 is still held by the device: only 199 is complete.
        let out = inbox
            .store_batch(&site(), &batch("hh-02", 1, 200, &[201]), 0)
            .expect("store");
        assert_eq!(out.complete_up_to, 199, "200 is not stored, never ack it");
        // first_held past the hole at 102 closes it.
        let out = inbox
            .store_batch(&site(), &batch("hh-01", 1, 103, &[104]), 0)
            .expect("store");
        assert_eq!(out.complete_up_to, 104);
    });
}

#[test]
fn shed_ranges_are_passed_over_and_remembered() {
    on_each_backend("shed_ranges_are_passed_over_and_remembered", |b| {
        let mut inbox = b.open();
        // 3..=5 will never come (dropped under disk pressure), 7 is in flight.
        let mut b = batch("hh-01", 1, 1, &[1, 2, 6, 8]);
        b.shed = vec![(3, 5)];
        let out = inbox.store_batch(&site(), &b, 0).expect("store");
        assert_eq!(out.complete_up_to, 6);
        assert_eq!(out.newly_shed, vec![(3, 5)]);
        assert_eq!(out.also_stored, vec![(8, 8)]);
        // Later batches no longer list the range; it is remembered.
        let out = inbox
            .store_batch(&site(), &batch("hh-01", 1, 1, &[7]), 0)
            .expect("store");
        assert_eq!(out.complete_up_to, 8);
        assert!(out.newly_shed.is_empty());
        assert_eq!(
            ranges([1, 2, 3, 5, 7, 8].into_iter()),
            vec![(1, 3), (5, 5), (7, 8)]
        );
    });
}

#[test]
fn state_survives_reopen() {
    on_each_backend("state_survives_reopen", |b| {
        let dev = DeviceId::new("hh-01").expect("id");
        {
            let mut inbox = b.open();
            inbox
                .store_batch(&site(), &batch("hh-01", 1, 1, &[1, 2, 4]), 0)
                .expect("store");
            inbox
                .record_verdict(
                    &dev,
                    1,
                    1,
                    &Outcome::Booked {
                        document: "WH/OUT/1".into(),
                    },
                    0,
                )
                .expect("verdict");
            inbox.count_refused("malformed").expect("refused");
        }
        let mut inbox = b.open();
        assert_eq!(inbox.complete_up_to(&dev, 1).expect("mark"), 2);
        let out = inbox
            .store_batch(&site(), &batch("hh-01", 1, 1, &[2, 3]), 0)
            .expect("store");
        assert_eq!((out.stored, out.duplicates, out.complete_up_to), (1, 1, 4));
        let stats = inbox.stats().expect("stats");
        assert_eq!(stats.booked, 1);
        assert_eq!(stats.pending, 3);
        assert_eq!(stats.refused, 1);
        assert_eq!(stats.devices.len(), 1);
        assert_eq!(stats.devices[0].complete_up_to, Some(4));
        // The pending queue resumes in order after the booked one.
        match inbox.next_in_lane("device:hh-01", 1, 0).expect("next") {
            Some(NextPending::Event(p)) => assert_eq!(p.envelope.seq, 2),
            other => panic!("expected seq 2, got {other:?}"),
        }
        // A verdict is recorded once.
        assert!(
            !inbox
                .record_verdict(
                    &dev,
                    1,
                    1,
                    &Outcome::Rejected {
                        reason: "late".into()
                    },
                    0
                )
                .expect("verdict")
        );
    });
}

fn attempt(status: Option<u16>, body: &str) -> AttemptLog {
    AttemptLog {
        n: 0,
        at_ms: 5,
        request: "POST http://erp/events".into(),
        status,
        error: status
            .is_none()
            .then(|| "ERP could not connect".to_string()),
        body: body.into(),
        decision: "retry".into(),
    }
}

fn dead(erp_rejected: bool, reason: &str) -> NewDeadLetter {
    NewDeadLetter {
        last: attempt(Some(422), "unknown item"),
        reason: reason.into(),
        class: if erp_rejected {
            "permanent"
        } else {
            "conflict"
        }
        .into(),
        erp_rejected,
    }
}

fn next_seq(inbox: &mut dyn InboxStore, dev: &DeviceId) -> Option<u64> {
    match inbox
        .next_in_lane(&format!("device:{dev}"), 1, 0)
        .expect("next")
    {
        Some(NextPending::Event(p)) => Some(p.envelope.seq),
        Some(other) => panic!("{other:?}"),
        None => None,
    }
}

#[test]
fn dead_letter_blocks_the_lane_until_replayed_with_the_same_id() {
    on_each_backend(
        "dead_letter_blocks_the_lane_until_replayed_with_the_same_id",
        |b| {
            let mut inbox = b.open();
            let dev = DeviceId::new("hh-01").expect("id");
            inbox
                .store_batch(&site(), &batch("hh-01", 1, 1, &[1, 2, 3]), 0)
                .expect("store");
            inbox
                .store_batch(&site(), &batch("hh-02", 1, 1, &[1]), 0)
                .expect("store");
            // Two failed attempts, then the ERP refuses seq 1 for good.
            inbox
                .record_attempt(&dev, 1, 1, &attempt(None, ""))
                .expect("attempt");
            let long = "é".repeat(3000);
            inbox
                .record_attempt(&dev, 1, 1, &attempt(Some(500), &long))
                .expect("attempt");
            let (id, verdict) = inbox
                .store_dead_letter(&dev, 1, 1, &dead(true, "HTTP 422: unknown item"))
                .expect("dead letter")
                .expect("was pending");
            assert!(verdict, "the ERP refused it: the device gets a verdict");
            // Blocked: nothing of hh-01 is delivered, hh-02 still is.
            assert_eq!(next_seq(&mut *inbox, &dev), None);
            assert_eq!(due(&*inbox), vec!["device:hh-02"]);
            let lanes = inbox.waiting_lanes(10).expect("lanes");
            assert_eq!(lanes.len(), 1);
            assert_eq!(
                (lanes[0].lane.as_str(), lanes[0].status.as_str()),
                ("device:hh-01", "blocked")
            );
            assert!(
                lanes[0].reason.contains(&format!("dead letter {id}")),
                "{:?}",
                lanes[0]
            );
            let stats = inbox.stats().expect("stats");
            assert_eq!(
                (stats.rejected, stats.pending, stats.dead_letters),
                (1, 3, 1)
            );
            assert_eq!(stats.blocked_devices, vec!["hh-01"]);
            // The device can learn the rejection again later.
            let v = inbox.verdicts_from(&dev, 1, 1, 10).expect("verdicts");
            assert_eq!(v.len(), 1);
            assert!(
                matches!(&v[0].outcome, Outcome::Rejected { reason } if reason == "HTTP 422: unknown item")
            );

            let dl = inbox.dead_letter(id).expect("read").expect("exists");
            assert_eq!(dl.summary.state, "open");
            assert_eq!((dl.summary.seq, dl.summary.attempts), (1, 3));
            assert_eq!(
                dl.attempts.iter().map(|a| a.n).collect::<Vec<_>>(),
                vec![1, 2, 3],
                "every attempt, numbered"
            );
            assert_eq!(
                dl.attempts[0].error.as_deref(),
                Some("ERP could not connect")
            );
            assert!(dl.attempts[1].body.len() <= MAX_BODY_EXCERPT);
            assert!(
                dl.attempts[1].body.len() > MAX_BODY_EXCERPT - 2,
                "cut on a char boundary"
            );
            assert_eq!(dl.attempts[2].status, Some(422));
            let envelope = dl.envelope.clone().expect("original envelope kept");
            assert_eq!(envelope, envelope_of(1));
            assert_eq!(dl.summary.event_id, envelope.id.to_string());

            // Replay: pending again, same id, lane unblocked, in order.
            assert_eq!(
                inbox.replay_dead_letter(id, 9).expect("replay"),
                Resolution::Done {
                    lane: "device:hh-01".into(),
                    device: dev.clone(),
                    still_blocked: false
                }
            );
            assert_eq!(next_seq(&mut *inbox, &dev), Some(1));
            assert_eq!(
                inbox.replay_dead_letter(id, 9).expect("replay"),
                Resolution::AlreadyResolved {
                    state: "replayed".into()
                }
            );
            assert_eq!(
                inbox.replay_dead_letter(999, 9).expect("replay"),
                Resolution::NotFound
            );
            assert!(inbox.dead_letters(false, 10).expect("list").is_empty());
            let all = inbox.dead_letters(true, 10).expect("list");
            assert_eq!(all.len(), 1);
            assert_eq!(all[0].state, "replayed");
            // Booked after the data fix: one verdict, attempts cleared.
            let booked = Outcome::Booked {
                document: "DOC-1".into(),
            };
            assert!(
                inbox
                    .record_verdict(&dev, 1, 1, &booked, 10)
                    .expect("verdict")
            );
            if let Some(sqlite) = inbox.as_sqlite() {
                let left: i64 = sqlite
                    .conn
                    .query_row("SELECT COUNT(*) FROM attempts", [], |r| r.get(0))
                    .expect("count");
                assert_eq!(left, 0);
            }
            assert_eq!(inbox.stats().expect("stats").booked, 1);
        },
    );
}

fn envelope_of(seq: u64) -> Envelope {
    envelope("hh-01", 1, seq)
}

#[test]
fn our_side_dead_letter_stays_pending_and_discard_rejects_it() {
    on_each_backend(
        "our_side_dead_letter_stays_pending_and_discard_rejects_it",
        |b| {
            let mut inbox = b.open();
            let dev = DeviceId::new("hh-01").expect("id");
            inbox
                .store_batch(&site(), &batch("hh-01", 1, 1, &[1, 2]), 0)
                .expect("store");
            let (id, verdict) = inbox
                .store_dead_letter(&dev, 1, 1, &dead(false, "HTTP 423; gave up"))
                .expect("dead letter")
                .expect("was pending");
            assert!(!verdict, "our side: no verdict for the device");
            assert_eq!(inbox.stats().expect("stats").rejected, 0);
            assert_eq!(next_seq(&mut *inbox, &dev), None, "blocked all the same");
            // A second dead letter on a row that is not pending is refused.
            assert_eq!(
                inbox
                    .store_dead_letter(&dev, 1, 9, &dead(false, "x"))
                    .expect("no row"),
                None
            );
            assert_eq!(
                inbox
                    .discard_dead_letter(id, "item withdrawn", 3)
                    .expect("discard"),
                Resolution::Done {
                    lane: "device:hh-01".into(),
                    device: dev.clone(),
                    still_blocked: false
                }
            );
            assert_eq!(
                next_seq(&mut *inbox, &dev),
                Some(2),
                "the lane moves past it"
            );
            let v = inbox.verdicts_from(&dev, 1, 1, 10).expect("verdicts");
            assert!(
                matches!(&v[0].outcome, Outcome::Rejected { reason }
            if reason == "discarded by an operator (item withdrawn): HTTP 423; gave up"),
                "{v:?}"
            );
            let dl = inbox.dead_letter(id).expect("read").expect("exists");
            assert_eq!(dl.summary.state, "discarded");
            assert_eq!(dl.resolution.as_deref(), Some("discarded: item withdrawn"));
        },
    );
}

#[test]
fn stale_death_does_not_mark_a_new_session_offline() {
    on_each_backend("stale_death_does_not_mark_a_new_session_offline", |b| {
        let mut inbox = b.open();
        let dev = DeviceId::new("hh-01").expect("id");
        let status = |session, kind| Status {
            v: 1,
            device: dev.clone(),
            session,
            at_ms: 0,
            kind,
        };
        let birth = StatusKind::Birth {
            agent_version: "0.1.0".into(),
            verdicts_wanted: None,
        };
        assert!(
            inbox
                .record_status(&site(), &status(2, birth), 10)
                .expect("birth")
        );
        let death = StatusKind::Death { graceful: false };
        assert!(
            !inbox
                .record_status(&site(), &status(1, death.clone()), 11)
                .expect("stale")
        );
        let s = inbox.stats().expect("stats");
        assert!(s.devices[0].online);
        assert_eq!(s.devices[0].last_seen_ms, Some(10));
        assert!(
            inbox
                .record_status(&site(), &status(2, death), 12)
                .expect("death")
        );
        assert!(!inbox.stats().expect("stats").devices[0].online);
    });
}

/// A proof of delivery for order `order` from `device`.
fn pod(device: &str, seq: u64, order: &str) -> Envelope {
    let mut env = envelope(device, 1, seq);
    env.payload = Payload::Event(dockline_protocol::BusinessEvent {
        detail: dockline_protocol::EventDetail::Delivered(dockline_protocol::ProofOfDelivery {
            received_by: "Front desk".into(),
            pieces: 2,
            signature_ref: None,
            photo_ref: None,
            position: None,
        }),
        refs: dockline_protocol::References {
            order: Some(order.into()),
            ..Default::default()
        },
    });
    env
}

#[test]
fn two_writers_share_dedup_and_watermarks() {
    on_each_backend("two_writers_share_dedup_and_watermarks", |b| {
        let (mut one, mut two) = (b.open(), b.open());
        let dev = DeviceId::new("hh-01").expect("id");
        // The broker hands batches to either collector.
        let out = one
            .store_batch(&site(), &batch("hh-01", 1, 1, &[1, 2]), 0)
            .expect("store");
        assert_eq!(out.complete_up_to, 2);
        let out = two
            .store_batch(&site(), &batch("hh-01", 1, 1, &[4, 5]), 0)
            .expect("store");
        assert_eq!(out.complete_up_to, 2, "the other writer's hole at 3");
        let out = one
            .store_batch(&site(), &batch("hh-01", 1, 1, &[3]), 0)
            .expect("store");
        assert_eq!(out.complete_up_to, 5, "rows the other writer stored count");
        // A batch redelivered to the other collector is a duplicate there.
        let out = two
            .store_batch(&site(), &batch("hh-01", 1, 1, &[3, 4, 5, 6]), 0)
            .expect("store");
        assert_eq!((out.stored, out.duplicates, out.complete_up_to), (1, 3, 6));
        assert_eq!(two.complete_up_to(&dev, 1).expect("mark"), 6);
        let stats = one.stats().expect("stats");
        assert_eq!((stats.received, stats.duplicates), (6, 3));
    });
}

#[test]
fn concurrent_batches_of_one_device_keep_one_watermark() {
    on_each_backend("concurrent_batches_of_one_device_keep_one_watermark", |b| {
        // Two writers store interleaved batches of one device at once,
        // some twice: every sequence once, the watermark at the top.
        if !b.open().claims_lanes() {
            // SQLite is one collector's file: its deferred transactions
            // are not made for two writers at once.
            return;
        }
        let writers: Vec<_> = (0..2u64)
            .map(|w| {
                let mut store = b.open();
                std::thread::spawn(move || {
                    for k in 0..40u64 {
                        let first = 1 + 5 * (2 * k + (w + k) % 2);
                        let seqs: Vec<u64> = (first..first + 5).collect();
                        store
                            .store_batch(&site(), &batch("hh-01", 1, 1, &seqs), 0)
                            .expect("store");
                        if k % 7 == 0 {
                            store
                                .store_batch(&site(), &batch("hh-01", 1, 1, &seqs), 0)
                                .expect("store again");
                        }
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().expect("writer");
        }
        let inbox = b.open();
        let stats = inbox.stats().expect("stats");
        assert_eq!(stats.received, 400);
        assert_eq!(stats.pending, 400);
        assert_eq!(
            inbox
                .complete_up_to(&DeviceId::new("hh-01").expect("id"), 1)
                .expect("mark"),
            400
        );
        assert!(inbox.open_holes().expect("holes").is_empty());
    });
}

/// The earliest wake time counts this collector's own lanes at their
/// wake time and another collector's claimed lane only from its claim's
/// end, whichever comes first.
#[test]
fn the_next_wake_is_the_earliest_of_own_lanes_and_others_claims() {
    on_each_backend(
        "the_next_wake_is_the_earliest_of_own_lanes_and_others_claims",
        |b| {
            let (mut one, mut two) = (b.open(), b.open());
            if !one.claims_lanes() {
                return;
            }
            let lease = crate::inbox::postgres::DEFAULT_LEASE_MS as i64;
            one.store_batch(&site(), &batch("hh-01", 1, 1, &[1]), 0)
                .expect("store");
            assert!(
                one.next_in_lane("device:hh-01", 10, 0)
                    .expect("next")
                    .is_some()
            );
            // Only the other's claimed lane: due at its claim's end.
            assert_eq!(two.next_lane_wake_ms().expect("wake"), Some(10 + lease));
            // A lane of its own woken later than the claimed one's wake time
            // but before the claim ends comes first.
            two.store_batch(&site(), &batch("hh-02", 1, 1, &[1]), 500)
                .expect("store");
            assert_eq!(two.next_lane_wake_ms().expect("wake"), Some(500));
            // The owner sees its own lane at its wake time.
            assert_eq!(one.next_lane_wake_ms().expect("wake"), Some(0));
        },
    );
}

#[test]
fn a_lane_is_delivered_by_one_collector_until_its_claim_expires() {
    on_each_backend(
        "a_lane_is_delivered_by_one_collector_until_its_claim_expires",
        |b| {
            let (mut one, mut two) = (b.open(), b.open());
            if !one.claims_lanes() {
                // One collector per SQLite file: nothing to claim.
                assert!(one.hold_lane("device:hh-01", 0).expect("hold"));
                return;
            }
            let dev = DeviceId::new("hh-01").expect("id");
            one.store_batch(&site(), &batch("hh-01", 1, 1, &[1, 2]), 0)
                .expect("store");
            assert!(matches!(
                one.next_in_lane("device:hh-01", 10, 0).expect("next"),
                Some(NextPending::Event(p)) if p.envelope.seq == 1
            ));
            // The other collector neither sees the lane due nor gets its event.
            assert!(two.due_lanes(20, 10).expect("due").is_empty());
            assert!(
                two.next_in_lane("device:hh-01", 20, 0)
                    .expect("next")
                    .is_none()
            );
            assert_eq!(
                two.next_lane_wake_ms().expect("wake"),
                Some(10 + crate::inbox::postgres::DEFAULT_LEASE_MS as i64),
                "due for the other collector when the claim ends"
            );
            assert!(one.hold_lane("device:hh-01", 5_000).expect("renew"));
            // The owner dies; after the lease the other one takes over.
            let later = 5_000 + crate::inbox::postgres::DEFAULT_LEASE_MS as i64 + 1;
            assert_eq!(two.due_lanes(later, 10).expect("due"), vec!["device:hh-01"]);
            assert!(matches!(
                two.next_in_lane("device:hh-01", later, 0).expect("next"),
                Some(NextPending::Event(p)) if p.envelope.seq == 1
            ));
            assert!(
                !one.hold_lane("device:hh-01", later).expect("hold"),
                "the old owner learns it lost the lane"
            );
            assert!(two.hold_lane("device:hh-01", later).expect("hold"));
            let booked = Outcome::Booked {
                document: "D-1".into(),
            };
            assert!(
                two.record_verdict(&dev, 1, 1, &booked, later)
                    .expect("verdict")
            );
            assert!(
                !one.record_verdict(&dev, 1, 1, &booked, later)
                    .expect("verdict"),
                "a verdict is recorded once"
            );
            assert!(matches!(
                two.next_in_lane("device:hh-01", later, 0).expect("next"),
                Some(NextPending::Event(p)) if p.envelope.seq == 2
            ));
            two.record_verdict(&dev, 1, 2, &booked, later)
                .expect("verdict");
            // Idle: the claim ends, and the lane is anyone's again.
            assert!(
                two.next_in_lane("device:hh-01", later, 0)
                    .expect("next")
                    .is_none()
            );
            one.store_batch(&site(), &batch("hh-01", 1, 1, &[3]), later)
                .expect("store");
            assert_eq!(one.due_lanes(later, 10).expect("due"), vec!["device:hh-01"]);
        },
    );
}

#[test]
fn an_invoice_follow_up_is_queued_once_and_claimed_by_one_sender() {
    on_each_backend(
        "an_invoice_follow_up_is_queued_once_and_claimed_by_one_sender",
        |b| {
            let (mut one, mut two) = (b.open(), b.open());
            one.enable_invoice_followups();
            two.enable_invoice_followups();
            let dev = DeviceId::new("van-7").expect("id");
            let mut delivered = batch("van-7", 1, 1, &[]);
            delivered.events = vec![pod("van-7", 1, "SO-1")];
            one.store_batch(&site(), &delivered, 0).expect("store");
            let booked = Outcome::Booked {
                document: "WH/OUT/9".into(),
            };
            assert!(one.record_verdict(&dev, 1, 1, &booked, 5).expect("verdict"));
            assert!(!two.record_verdict(&dev, 1, 1, &booked, 6).expect("verdict"));
            let first = one.due_followups(10, 10).expect("due");
            assert_eq!(first.len(), 1);
            assert_eq!(first[0].order, "SO-1");
            if one.claims_lanes() {
                assert!(
                    two.due_followups(10, 10).expect("due").is_empty(),
                    "claimed by the first sender"
                );
            }
            assert!(
                one.record_followup(&first[0].id, &FollowupResult::Sent, 11)
                    .expect("sent")
            );
            assert!(two.due_followups(i64::MAX, 10).expect("due").is_empty());
            assert_eq!(two.stats().expect("stats").followups.get("sent"), Some(&1));
        },
    );
}

/// SQLite only: files of older collectors.
#[test]
fn version_1_file_migrates_to_version_2_keeping_its_rows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("inbox.db");
    {
        let conn = Connection::open(&path).expect("open");
        conn.execute_batch(V1).expect("v1");
        conn.pragma_update(None, "user_version", 1).expect("pragma");
    }
    // Write a v1 row through a v1-only connection, as an old collector did.
    {
        let mut inbox = Inbox {
            conn: Connection::open(&path).expect("open"),
            invoice_followups: false,
            max_seq_ahead: crate::inbox::watermark::DEFAULT_MAX_SEQ_AHEAD,
        };
        let tx = inbox.conn.transaction().expect("tx");
        tx.execute(
            "INSERT INTO events (device, epoch, seq, site, id, kind, envelope, received_ms, state)
             VALUES ('hh-01', 1, 1, 'dc-north', 'x', 'picked', ?1, 0, 'pending')",
            params![codec::encode(&envelope_of(1)).expect("encode")],
        )
        .expect("insert");
        // A v1 collector wrote the watermark in the same transaction.
        tx.execute(
            "INSERT INTO watermarks (device, epoch, complete_up_to) VALUES ('hh-01', 1, 1)",
            [],
        )
        .expect("watermark");
        tx.commit().expect("commit");
    }
    let mut inbox = Inbox::open(&path).expect("migrates");
    let version: i64 = inbox
        .conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .expect("version");
    assert_eq!(version, SCHEMA_VERSION);
    assert_eq!(
        next_seq(&mut inbox, &DeviceId::new("hh-01").expect("id")),
        Some(1)
    );
    assert!(inbox.dead_letters(true, 10).expect("list").is_empty());
    drop(inbox);
    // A newer file is refused with a clear message.
    {
        let conn = Connection::open(&path).expect("open");
        conn.pragma_update(None, "user_version", 99)
            .expect("pragma");
    }
    let err = Inbox::open(&path).expect_err("too new");
    assert!(err.to_string().contains("schema version 99"), "{err}");
}

#[test]
#[ignore = "ad-hoc figure: cargo test -p dockline-collector --lib store_batch_rate -- --ignored --nocapture"]
fn store_batch_rate() {
    on_each_backend("store_batch_rate", |b| {
        let mut inbox = b.open();
        let start = std::time::Instant::now();
        let mut n = 0u64;
        for device in 0..20 {
            let name = format!("hh-{device:02}");
            for k in 0..10u64 {
                let seqs: Vec<u64> = (k * 100 + 1..=k * 100 + 100).collect();
                inbox
                    .store_batch(&site(), &batch(&name, 1, 1, &seqs), 0)
                    .expect("store");
                n += 100;
            }
        }
        let secs = start.elapsed().as_secs_f64();
        println!(
            "{} store_batch: {n} events in {secs:.2} s = {:.0} events/s (100-event batches)",
            inbox.backend(),
            n as f64 / secs
        );
        if inbox.claims_lanes() {
            // Two writers at once (two collectors), other devices each.
            let start = std::time::Instant::now();
            let writers: Vec<_> = (0..2)
                .map(|w| {
                    let mut store = b.open();
                    std::thread::spawn(move || {
                        for device in 0..10 {
                            let name = format!("w{w}-{device:02}");
                            for k in 0..10u64 {
                                let seqs: Vec<u64> = (k * 100 + 1..=k * 100 + 100).collect();
                                store
                                    .store_batch(&site(), &batch(&name, 1, 1, &seqs), 0)
                                    .expect("store");
                            }
                        }
                    })
                })
                .collect();
            for w in writers {
                w.join().expect("writer");
            }
            let secs = start.elapsed().as_secs_f64();
            println!(
                "{} store_batch, two writers: 20000 events in {secs:.2} s = {:.0} events/s",
                inbox.backend(),
                20_000.0 / secs
            );
        }
    });
}

/// An event of order `order` from `device`.
fn order_event(
    device: &str,
    seq: u64,
    order: &str,
    detail: dockline_protocol::EventDetail,
) -> Envelope {
    let mut env = envelope(device, 1, seq);
    env.captured_ms = 1_700_000_000_000 + seq as i64;
    env.payload = Payload::Event(dockline_protocol::BusinessEvent {
        detail,
        refs: dockline_protocol::References {
            order: Some(order.into()),
            ..Default::default()
        },
    });
    env
}

#[test]
fn dashboard_queries_answer_alike_on_every_backend() {
    use dockline_protocol::{EventDetail, ExceptionKind, QueueHealth, StatusKind};
    let seen = std::cell::RefCell::new(Vec::new());
    on_each_backend("dashboard_queries_answer_alike_on_every_backend", |b| {
        let mut inbox = b.open();
        let dev = DeviceId::new("hh-01").expect("id");
        let mut b1 = batch("hh-01", 1, 1, &[]);
        b1.events = vec![
            order_event(
                "hh-01",
                1,
                "SO-7",
                EventDetail::Picked {
                    item: "09506000134352".into(),
                    quantity: 2,
                    lot: None,
                },
            ),
            order_event(
                "hh-01",
                2,
                "SO-7",
                EventDetail::Exception {
                    kind: ExceptionKind::ShortPick,
                    note: "one missing".into(),
                },
            ),
            order_event(
                "hh-01",
                4,
                "SO-7",
                EventDetail::Loaded {
                    vehicle: "VAN-7".into(),
                },
            ),
        ];
        inbox.store_batch(&site(), &b1, 100).expect("store");
        let booked = Outcome::Booked {
            document: "WH/PICK/7".into(),
        };
        assert!(
            inbox
                .record_verdict(&dev, 1, 1, &booked, 200)
                .expect("verdict")
        );
        let heartbeat = Status {
            v: 1,
            device: dev.clone(),
            session: 1,
            at_ms: 0,
            kind: StatusKind::Heartbeat {
                queued: 3,
                oldest_unacked_ms: 40,
                health: Some(QueueHealth {
                    devices: Some(vec![dockline_protocol::DeviceHealth {
                        name: "scanner".into(),
                        connected: true,
                        readings: 9,
                        rejected: 1,
                        last_reading_ms: Some(150),
                    }]),
                    ..Default::default()
                }),
            },
        };
        assert!(
            inbox
                .record_status(&site(), &heartbeat, 300)
                .expect("status")
        );

        let holes = inbox.open_holes().expect("holes");
        let devices = inbox
            .dashboard_devices(&holes, 1_000, 90_000)
            .expect("devices");
        assert_eq!(devices.len(), 1);
        let d = &devices[0];
        assert_eq!(
            (d.state.as_str(), d.backlog, d.pending_erp),
            ("online", Some(3), 2)
        );
        assert_eq!(
            (d.complete_up_to, d.missing),
            (Some(2), 1),
            "seq 3 is missing"
        );
        assert_eq!(d.peripherals.len(), 1);
        let orders = inbox.dashboard_orders().expect("orders");
        assert_eq!(orders.len(), 1);
        let o = &orders[0];
        assert_eq!(
            (o.reference.as_str(), o.events, o.booked, o.exceptions),
            ("SO-7", 3, 1, 1)
        );
        assert_eq!(o.booked_stage.as_deref(), Some("picked"));
        let stalled = inbox.dashboard_stalled(10_000).expect("stalled");
        assert_eq!(stalled.len(), 1, "no progress since 200, not delivered");
        assert!(inbox.dashboard_stalled(150).expect("stalled").is_empty());
        let timeline = inbox.dashboard_timeline("order:SO-7").expect("timeline");
        assert_eq!(
            timeline
                .iter()
                .map(|e| (e.seq, e.verdict.as_str()))
                .collect::<Vec<_>>(),
            vec![(1, "booked"), (2, "pending"), (4, "pending")]
        );
        let (by_kind, items) = inbox.dashboard_exceptions(1_000).expect("exceptions");
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].kind, "short_pick");
        assert!(
            by_kind
                .iter()
                .any(|k| k.kind == "short_pick" && k.count == 1)
        );
        let verdict = inbox.event_verdict("hh-01", 1, 1).expect("verdict");
        assert_eq!(
            verdict.map(|v| (v.state, v.document)),
            Some(("booked".to_string(), Some("WH/PICK/7".to_string())))
        );
        assert!(inbox.event_verdict("hh-01", 1, 99).expect("none").is_none());
        seen.borrow_mut().push(format!(
            "{devices:?}\n{orders:?}\n{stalled:?}\n{timeline:?}\n{by_kind:?}\n{items:?}"
        ));
    });
    let seen = seen.into_inner();
    if let [sqlite, postgres] = seen.as_slice() {
        assert_eq!(sqlite, postgres, "PostgreSQL answers as SQLite does");
    }
}

#[test]
fn one_collector_at_a_time_runs_the_gap_audit() {
    on_each_backend("one_collector_at_a_time_runs_the_gap_audit", |b| {
        let mut one = b.open();
        let mut two = b.open();
        assert!(one.gap_audit_turn().expect("turn"));
        assert!(one.gap_audit_turn().expect("keeps it"));
        if !one.claims_lanes() {
            // One collector per SQLite file: it always audits.
            assert!(two.gap_audit_turn().expect("turn"));
            return;
        }
        assert!(!two.gap_audit_turn().expect("turn"), "taken");
        drop(one);
        // The first collector's connection is gone: the lock with it.
        let mut took = false;
        for _ in 0..50 {
            if two.gap_audit_turn().expect("turn") {
                took = true;
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert!(took, "the audit passes on when its collector stops");
    });
}

#[test]
fn a_lost_database_connection_is_reopened() {
    let Ok(base) = std::env::var("DOCKLINE_TEST_PG_URL") else {
        println!(
            "SKIP inbox::a_lost_database_connection_is_reopened on PostgreSQL: set DOCKLINE_TEST_PG_URL to run"
        );
        return;
    };
    let schema = ScratchSchema::create(&base, "reconnect").expect("schema");
    // A name of its own, so terminating it touches no other test.
    let name = format!("dockline_{}", schema.name());
    let mut inbox = PgInbox::open(
        &format!("{}&application_name={name}", schema.url()),
        crate::inbox::postgres::DEFAULT_LEASE_MS,
    )
    .expect("open");
    inbox
        .store_batch(&site(), &batch("hh-01", 1, 1, &[1, 2]), 0)
        .expect("store");
    // The server restarts, a failover, an idle timeout: the session ends.
    crate::inbox::postgres::run_sql(
        &base,
        &format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = '{name}'"
        ),
    )
    .expect("terminate");
    // At most the call that finds the connection dead fails; the next one
    // opens a new connection, and nothing committed is lost.
    let mut stored = None;
    for _ in 0..2 {
        match inbox.store_batch(&site(), &batch("hh-01", 1, 1, &[3]), 1) {
            Ok(out) => {
                stored = Some(out);
                break;
            }
            Err(e) => println!("call after the connection was lost: {e}"),
        }
    }
    let out = stored.expect("reconnected");
    assert_eq!(out.complete_up_to, 3);
    assert_eq!(inbox.stats().expect("stats").received, 3);
}

/// The forgeries of a device that lies about its watermark (see
/// `crate::inbox::watermark`), on both backends: each is refused and counted, and
/// the device's real events that follow are stored and acked.
#[test]
fn a_forged_watermark_claim_moves_nothing_and_real_events_still_land() {
    on_each_backend("a_forged_watermark_claim_moves_nothing", |b| {
        let mut inbox = b.open();
        inbox
            .store_batch(&site(), &batch("hh-01", 1, 1, &[1, 2]), 0)
            .expect("store");
        // held = 2^40 with no events: "everything below was acked".
        let out = inbox
            .store_batch(&site(), &batch("hh-01", 1, 1 << 40, &[]), 0)
            .expect("store");
        assert_eq!(out.complete_up_to, 2);
        assert_eq!(out.refused_claims, vec![format!("held {}", 1u64 << 40)]);
        // A shed range far ahead of everything stored.
        let mut shed = batch("hh-01", 1, 3, &[]);
        shed.shed = vec![(3, 1 << 40)];
        let out = inbox.store_batch(&site(), &shed, 0).expect("store");
        assert_eq!(out.complete_up_to, 2);
        assert_eq!(out.refused_claims, vec![format!("shed 3..{}", 1u64 << 40)]);
        // The device's next real events are stored, not taken for duplicates.
        let out = inbox
            .store_batch(&site(), &batch("hh-01", 1, 3, &[3, 4, 5]), 0)
            .expect("store");
        assert_eq!((out.stored, out.duplicates, out.complete_up_to), (3, 0, 5));
        let stats = inbox.stats().expect("stats");
        assert_eq!(stats.refused_by_reason.get("bad_watermark"), Some(&2));
        assert_eq!(stats.received, 5);
    });
}

#[test]
fn events_far_ahead_or_under_a_taken_number_go_to_quarantine() {
    on_each_backend("events_far_ahead_or_under_a_taken_number", |b| {
        let mut inbox = b.open();
        inbox.set_max_seq_ahead(100);
        inbox
            .store_batch(&site(), &batch("hh-01", 1, 1, &[1, 2]), 0)
            .expect("store");
        // Seq 500 while the watermark is 2: not stored, not acked.
        let out = inbox
            .store_batch(&site(), &batch("hh-01", 1, 1, &[3, 500]), 0)
            .expect("store");
        assert_eq!(out.quarantined, vec![(500, "far_ahead")]);
        assert_eq!((out.stored, out.complete_up_to), (1, 3));
        assert!(out.also_stored.is_empty(), "{:?}", out.also_stored);
        // Another event under seq 2 (same number, another id).
        let mut other = batch("hh-01", 1, 1, &[2]);
        other.events[0].id = dockline_protocol::EventId([0xee; 16]);
        let out = inbox.store_batch(&site(), &other, 0).expect("store");
        assert_eq!(out.quarantined, vec![(2, "seq_conflict")]);
        assert_eq!((out.stored, out.duplicates), (0, 0));
        let stats = inbox.stats().expect("stats");
        assert_eq!(stats.refused_by_reason.get("far_ahead"), Some(&1));
        assert_eq!(stats.refused_by_reason.get("seq_conflict"), Some(&1));
        assert_eq!(stats.received, 3);
    });
}

#[test]
fn a_new_epoch_older_than_the_newest_is_refused() {
    on_each_backend("a_new_epoch_older_than_the_newest_is_refused", |b| {
        let mut inbox = b.open();
        inbox
            .store_batch(&site(), &batch("hh-01", 10, 1, &[1]), 0)
            .expect("store");
        let err = inbox
            .store_batch(&site(), &batch("hh-01", 5, 1, &[1]), 0)
            .expect_err("older epoch refused");
        assert!(
            matches!(err, InboxError::OldEpoch { newest: 10, .. }),
            "{err}"
        );
        assert!(err.is_deterministic());
        // The known epoch and a newer one still land; another device is free.
        inbox
            .store_batch(&site(), &batch("hh-01", 10, 1, &[2]), 0)
            .expect("known epoch");
        inbox
            .store_batch(&site(), &batch("hh-01", 12, 1, &[1]), 0)
            .expect("newer epoch");
        inbox
            .store_batch(&site(), &batch("hh-02", 5, 1, &[1]), 0)
            .expect("other device");
        // Once epoch 12 exists, epoch 10 is still known and accepted.
        inbox
            .store_batch(&site(), &batch("hh-01", 10, 1, &[3]), 0)
            .expect("known epoch after a newer one");
    });
}

/// The forgeries test's sequence through a real broker, on the inbox alone:
/// a forged seq 50 ahead of a device at 2 never pulls its watermark up.
#[test]
fn a_forged_future_sequence_never_pulls_the_watermark_up() {
    on_each_backend(
        "a_forged_future_sequence_never_pulls_the_watermark_up",
        |b| {
            let mut inbox = b.open();
            let mark = |inbox: &mut Box<dyn InboxStore>, b: Batch| {
                inbox
                    .store_batch(&site(), &b, 0)
                    .expect("store")
                    .complete_up_to
            };
            assert_eq!(mark(&mut inbox, batch("hh-01", 1, 1, &[1, 2])), 2);
            assert_eq!(mark(&mut inbox, batch("hh-01", 1, 1, &[50])), 2);
            assert_eq!(mark(&mut inbox, batch("hh-01", 1, 3, &[3, 4, 5])), 5);
            let mut gone = batch("hh-01", 1, 6, &[]);
            gone.shed = vec![(3, 5)];
            assert_eq!(mark(&mut inbox, gone), 5);
            assert_eq!(mark(&mut inbox, batch("hh-01", 1, 1 << 40, &[])), 5);
            assert_eq!(mark(&mut inbox, batch("hh-01", 1, 6, &[6])), 6);
        },
    );
}

#[test]
fn a_schema_newer_than_this_collector_is_refused_naming_both_versions() {
    on_each_backend(
        "a_schema_newer_than_this_collector_is_refused_naming_both_versions",
        |b| {
            drop(b.open());
            let supported = match b {
                Fresh::Sqlite(dir) => {
                    Connection::open(dir.path().join("inbox.db"))
                        .expect("open")
                        .pragma_update(None, "user_version", 99)
                        .expect("pragma");
                    SCHEMA_VERSION
                }
                Fresh::Postgres(schema) => {
                    crate::inbox::postgres::run_sql(
                        schema.url(),
                        "UPDATE dockline_schema SET version = 99",
                    )
                    .expect("update");
                    crate::inbox::postgres::PG_SCHEMA_VERSION
                }
            };
            let err = match b {
                Fresh::Sqlite(dir) => Inbox::open(&dir.path().join("inbox.db")).map(|_| ()),
                Fresh::Postgres(schema) => {
                    PgInbox::open(schema.url(), crate::inbox::postgres::DEFAULT_LEASE_MS)
                        .map(|_| ())
                }
            }
            .expect_err("too new");
            let text = err.to_string();
            assert!(
                text.contains("schema version 99")
                    && text.contains(&format!("this collector's {supported};")),
                "{text}"
            );
        },
    );
}

/// `bytes` with one more (unknown) entry in its top-level map: what a newer
/// agent might send, which this collector's decoder reads past.
fn with_unknown_field(bytes: &[u8]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    assert!(out[0] >= 0xa0 && out[0] < 0xb6, "a short map");
    out[0] += 1;
    out.extend_from_slice(&[0x62, b'z', b'z', 0x00]);
    out
}

#[test]
fn a_received_envelope_is_kept_byte_for_byte() {
    on_each_backend("a_received_envelope_is_kept_byte_for_byte", |b| {
        let mut inbox = b.open();
        let batch = batch("hh-raw", 1, 1, &[1, 2]);
        let raw: Vec<Vec<u8>> = batch
            .events
            .iter()
            .map(|e| with_unknown_field(&codec::encode(e).expect("encode")))
            .collect();
        assert_eq!(
            codec::decode::<Envelope>(&raw[0]).expect("still decodes"),
            batch.events[0]
        );
        let slices: Vec<&[u8]> = raw.iter().map(Vec::as_slice).collect();
        let out = inbox
            .store_received(&site(), &batch, Some(&slices), 0)
            .expect("store");
        assert_eq!((out.stored, out.complete_up_to), (2, 2));
        // Delivery reads it back as the same event.
        let dev = DeviceId::new("hh-raw").expect("id");
        assert_eq!(next_seq(&mut *inbox, &dev), Some(1));
        if let Some(sqlite) = inbox.as_sqlite() {
            let stored: Vec<u8> = sqlite
                .read(|c| {
                    c.query_row(
                        "SELECT envelope FROM events WHERE device = 'hh-raw' AND seq = 1",
                        [],
                        |r| r.get(0),
                    )
                })
                .expect("row");
            assert_eq!(stored, raw[0], "stored as received, not re-encoded");
        }
        // A list that does not match the batch is ignored: encoded instead.
        let again = batch_of_one("hh-raw", 3);
        let out = inbox
            .store_received(&site(), &again, Some(&slices), 0)
            .expect("store");
        assert_eq!(out.complete_up_to, 3);
    });
}

fn batch_of_one(device: &str, seq: u64) -> Batch {
    super::tests::batch(device, 1, 1, &[seq])
}

/// A booking's verdict and its lane's next look in one group op: the look
/// sees the verdict (the next event, in order), a lane of several devices
/// reads every head, and the last verdict leaves the lane idle. Groups mix
/// it with other lanes' ops.
#[test]
fn a_verdict_then_next_hands_out_the_lanes_next_event_in_order() {
    on_each_backend(
        "a_verdict_then_next_hands_out_the_lanes_next_event_in_order",
        |b| {
            let mut inbox = b.open();
            // Two devices in one order lane, one device in its own lane.
            let in_order = |device: &str, seqs: &[u64]| {
                let mut b = batch(device, 1, 1, seqs);
                for e in &mut b.events {
                    if let Payload::Event(ev) = &mut e.payload {
                        ev.refs.order = Some("SO-77".into());
                    }
                }
                b
            };
            inbox
                .store_batch(&site(), &in_order("hh-01", &[1, 2]), 0)
                .expect("store");
            inbox
                .store_batch(&site(), &in_order("hh-02", &[1]), 0)
                .expect("store");
            inbox
                .store_batch(&site(), &batch("hh-09", 1, 1, &[1]), 0)
                .expect("store");
            let lane = "order:SO-77".to_owned();
            let look = |lane: &str| GroupOp::NextInLane {
                lane: lane.into(),
                now_ms: 5,
                park_max_ms: 60_000,
            };
            let seq_of = |next: &Option<NextPending>| match next {
                Some(NextPending::Event(e)) => {
                    Some((e.envelope.device.to_string(), e.envelope.seq))
                }
                _ => None,
            };
            let answers = inbox.run_group(&[look(&lane), look("device:hh-09")]);
            let GroupAnswer::Next(first) = answers[0].as_ref().expect("look").clone() else {
                panic!("a look answers a look");
            };
            let (device, seq) = seq_of(&first).expect("an event may go");
            let mut delivered = vec![(device.clone(), seq)];
            let (mut device, mut seq) = (device, seq);
            loop {
                let op = GroupOp::VerdictThenNext {
                    device: DeviceId::new(device.as_str()).expect("id"),
                    epoch: 1,
                    seq,
                    outcome: Outcome::Booked {
                        document: format!("D-{device}-{seq}"),
                    },
                    lane: lane.clone(),
                    now_ms: 6,
                    park_max_ms: 60_000,
                };
                let answers = inbox.run_group(&[op, look("device:hh-09")]);
                let Ok(GroupAnswer::VerdictThenNext(recorded, next)) = &answers[0] else {
                    panic!("answered {:?}", answers[0]);
                };
                assert!(recorded, "the verdict of {device} {seq} is recorded");
                match seq_of(next) {
                    Some((d, s)) => {
                        delivered.push((d.clone(), s));
                        (device, seq) = (d, s);
                    }
                    None => break,
                }
            }
            let mut sorted = delivered.clone();
            sorted.sort();
            assert_eq!(
                sorted,
                [
                    ("hh-01".into(), 1),
                    ("hh-01".into(), 2),
                    ("hh-02".into(), 1)
                ],
                "every event of the lane once: {delivered:?}"
            );
            let hh01: Vec<u64> = delivered
                .iter()
                .filter(|(d, _)| d == "hh-01")
                .map(|(_, s)| *s)
                .collect();
            assert_eq!(hh01, [1, 2], "a device's own order is kept");
            let stats = inbox.stats().expect("stats");
            assert_eq!((stats.booked, stats.pending), (3, 1), "hh-09 still pending");
        },
    );
}

/// Lane looks in a group commit claim lanes as single looks do: another
/// collector's group gets nothing from a claimed lane until the claim ends,
/// and then takes it over, handing out the same (still pending) event.
#[test]
fn a_group_look_claims_its_lane_against_another_collectors_group() {
    on_each_backend(
        "a_group_look_claims_its_lane_against_another_collectors_group",
        |b| {
            let (mut one, mut two) = (b.open(), b.open());
            if !one.claims_lanes() {
                return;
            }
            one.store_batch(&site(), &batch("hh-01", 1, 1, &[1, 2]), 0)
                .expect("store");
            one.store_batch(&site(), &batch("hh-02", 1, 1, &[1]), 0)
                .expect("store");
            let look = |lane: &str, now_ms| GroupOp::NextInLane {
                lane: lane.into(),
                now_ms,
                park_max_ms: 0,
            };
            let seq = |a: &Result<GroupAnswer, InboxError>| match a {
                Ok(GroupAnswer::Next(Some(NextPending::Event(p)))) => Some(p.envelope.seq),
                Ok(GroupAnswer::Next(None)) => None,
                other => panic!("a look answered {other:?}"),
            };
            let first = one.run_group(&[look("device:hh-01", 10)]);
            assert_eq!(seq(&first[0]), Some(1));
            let other = two.run_group(&[look("device:hh-01", 20), look("device:hh-02", 20)]);
            assert_eq!(seq(&other[0]), None, "claimed by the first collector");
            assert_eq!(seq(&other[1]), Some(1), "a free lane in the same group");
            let later = 10 + crate::inbox::postgres::DEFAULT_LEASE_MS as i64 + 1;
            let taken = two.run_group(&[look("device:hh-01", later)]);
            assert_eq!(seq(&taken[0]), Some(1), "taken over after the claim");
            assert!(
                !one.hold_lane("device:hh-01", later).expect("hold"),
                "the old owner learns it lost the lane"
            );
        },
    );
}
