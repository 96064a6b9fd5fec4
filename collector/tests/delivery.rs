//! Delivery against a real HTTP server on 127.0.0.1:0: a 503 is retried with
//! the same webhook id until the 201 books the event once; a 422 rejects it
//! (and dead-letters it); readings never reach the ERP; each verdict is acked
//! to the device.

mod support;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use dockline_collector::delivery::Delivery;
use dockline_collector::erp::ErpConfig;
use dockline_collector::erp::webhook::cloudevents::SigningKey;
use dockline_collector::inbox::{Inbox, InboxHandle, InboxStore};
use dockline_collector::shutdown::ShutdownTrigger;
use dockline_protocol::{
    Ack, Batch, BusinessEvent, DeviceId, Envelope, EventDetail, EventId, Outcome, Payload,
    Priority, Reading, References, Scan, SiteId, TimeSource, codec,
};
use tokio::sync::{Notify, mpsc};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

#[derive(Debug, Clone)]
struct Seen {
    seq: u64,
    webhook_id: String,
    idempotency_key: String,
    signature_ok: bool,
    content_type: String,
}

#[derive(Default)]
struct Erp {
    seen: Mutex<Vec<Seen>>,
    calls: Mutex<HashMap<u64, u32>>,
    /// When set, every request gets 503 (the ERP is down).
    down: std::sync::atomic::AtomicBool,
}

async fn erp_handler(
    State(erp): State<Arc<Erp>>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    let h = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let json: serde_json::Value = serde_json::from_slice(&body).expect("body is JSON");
    let seq = json["docklineseq"].as_u64().expect("docklineseq");
    let webhook_id = h("webhook-id");
    let ts: i64 = h("webhook-timestamp").parse().expect("numeric timestamp");
    let key = SigningKey::from_secret(SECRET).expect("secret");
    let signature_ok = key.sign(&webhook_id, ts, &body) == h("webhook-signature");
    erp.seen.lock().expect("lock").push(Seen {
        seq,
        webhook_id,
        idempotency_key: h("idempotency-key"),
        signature_ok,
        content_type: h("content-type"),
    });
    let n = {
        let mut calls = erp.calls.lock().expect("lock");
        let n = calls.entry(seq).or_insert(0);
        *n += 1;
        *n
    };
    if erp.down.load(std::sync::atomic::Ordering::SeqCst) {
        return (StatusCode::SERVICE_UNAVAILABLE, "down".into());
    }
    match (seq, n) {
        (1, 1) => (StatusCode::SERVICE_UNAVAILABLE, "maintenance".into()),
        (1, _) => (StatusCode::CREATED, r#"{"document":"WH/OUT/0001"}"#.into()),
        _ => (
            StatusCode::UNPROCESSABLE_ENTITY,
            "quantity exceeds order".into(),
        ),
    }
}

fn envelope(seq: u64, payload: Payload) -> Envelope {
    Envelope {
        v: 1,
        device: DeviceId::new("hh-01").expect("id"),
        epoch: 1,
        seq,
        id: EventId([seq as u8; 16]),
        captured_ms: 1_700_000_000_000,
        time_source: TimeSource::Ntp,
        priority: Priority::MustDeliver,
        payload,
    }
}

fn picked(order: &str) -> Payload {
    Payload::Event(BusinessEvent {
        detail: EventDetail::Picked {
            item: "04012345678901".into(),
            quantity: 2,
            lot: None,
        },
        refs: References {
            order: Some(order.into()),
            ..References::default()
        },
    })
}

async fn start_erp(erp: &Arc<Erp>) -> std::net::SocketAddr {
    let app = Router::new()
        .route("/events", post(erp_handler))
        .with_state(Arc::clone(erp));
    support::serve(app).await
}

fn erp_config(addr: std::net::SocketAddr) -> ErpConfig {
    support::fast_erp(format!("http://{addr}/events"), SECRET)
}

#[tokio::test]
async fn pending_events_resume_after_restart_with_the_same_webhook_id() {
    let erp = Arc::new(Erp::default());
    erp.down.store(true, std::sync::atomic::Ordering::SeqCst);
    let addr = start_erp(&erp).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("inbox.db");
    let _site = SiteId::new("dc-north").expect("site");
    {
        let mut inbox = Inbox::open(&db).expect("inbox");
        // 1..=4 were acked earlier.
        support::seed(&mut inbox, vec![envelope(5, picked("SO-5"))]);
    }
    // First life: the ERP is down; stop after a few attempts.
    {
        let inbox = InboxHandle::new(Inbox::open(&db).expect("inbox"));
        let (tx, _rx) = mpsc::channel(16);
        let delivery = Arc::new(Delivery::new(&erp_config(addr), inbox, tx).expect("delivery"));
        let trigger = ShutdownTrigger::new();
        let task = tokio::spawn(delivery.run(Arc::new(Notify::new()), trigger.subscribe()));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while erp.seen.lock().expect("lock").len() < 2 {
            assert!(tokio::time::Instant::now() < deadline, "no retries seen");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        trigger.trigger();
        task.await.expect("delivery stops");
    }
    // Second life: the ERP is back; the pending row is picked up again.
    erp.down.store(false, std::sync::atomic::Ordering::SeqCst);
    let inbox = InboxHandle::new(Inbox::open(&db).expect("inbox"));
    let (tx, mut rx) = mpsc::channel(16);
    let delivery = Arc::new(Delivery::new(&erp_config(addr), inbox.clone(), tx).expect("delivery"));
    let trigger = ShutdownTrigger::new();
    let task = tokio::spawn(delivery.run(Arc::new(Notify::new()), trigger.subscribe()));
    let p = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("verdict within 10 s")
        .expect("channel open");
    trigger.trigger();
    task.await.expect("delivery stops");
    let ack: Ack = codec::decode(&p.payload).expect("ack");
    assert_eq!(ack.verdicts.len(), 1);
    assert_eq!(ack.verdicts[0].seq, 5);
    assert!(matches!(ack.verdicts[0].outcome, Outcome::Rejected { .. }));
    let seen = erp.seen.lock().expect("lock").clone();
    assert!(seen.len() >= 3, "{seen:?}");
    assert!(
        seen.iter()
            .all(|s| s.webhook_id == EventId([5; 16]).to_string()),
        "every attempt, before and after the restart, carries the same id"
    );
    let stats = inbox.call(|i| i.stats()).await.expect("stats");
    assert_eq!((stats.pending, stats.rejected), (0, 1));
}

#[tokio::test]
async fn retries_until_booked_and_rejects_permanent_failures() {
    let erp = Arc::new(Erp::default());
    let addr = start_erp(&erp).await;

    let dir = tempfile::tempdir().expect("tempdir");
    let mut inbox = Inbox::open(&dir.path().join("inbox.db")).expect("inbox");
    let batch = Batch {
        v: 1,
        device: DeviceId::new("hh-01").expect("id"),
        epoch: 1,
        first_held: 1,
        events: vec![
            // Two picks of one order: one lane, so the device's order holds.
            envelope(1, picked("SO-1")),
            envelope(2, picked("SO-1")),
            envelope(
                3,
                Payload::Reading(Reading::Scan(Scan {
                    symbology: None,
                    data: "123".into(),
                })),
            ),
        ],
        shed: Vec::new(),
    };
    let site = SiteId::new("dc-north").expect("site");
    inbox.store_batch(&site, &batch, 0).expect("store");
    let inbox = InboxHandle::new(inbox);

    let cfg = erp_config(addr);
    let (tx, mut rx) = mpsc::channel(16);
    let delivery = Arc::new(Delivery::new(&cfg, inbox.clone(), tx).expect("delivery"));
    let trigger = ShutdownTrigger::new();
    let wake = Arc::new(Notify::new());
    let task = tokio::spawn(delivery.run(Arc::clone(&wake), trigger.subscribe()));

    let mut acks: Vec<Ack> = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while acks.len() < 2 {
        let p = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .expect("verdict acks within 10 s")
            .expect("channel open");
        assert_eq!(p.topic, "dockline/v1/dc-north/hh-01/ack");
        acks.push(codec::decode(&p.payload).expect("ack decodes"));
    }
    trigger.trigger();
    task.await.expect("delivery stops");

    let verdicts: Vec<_> = acks.iter().flat_map(|a| a.verdicts.clone()).collect();
    assert_eq!(verdicts.len(), 2);
    assert!(
        acks.iter()
            .all(|a| a.stored_up_to.is_none() && a.epoch == 1)
    );
    assert_eq!(verdicts[0].seq, 1, "device order is kept");
    assert_eq!(
        verdicts[0].outcome,
        Outcome::Booked {
            document: "WH/OUT/0001".into()
        }
    );
    assert_eq!(verdicts[1].seq, 2);
    assert_eq!(
        verdicts[1].outcome,
        Outcome::Rejected {
            reason: "HTTP 422: quantity exceeds order".into()
        }
    );

    let seen = erp.seen.lock().expect("lock").clone();
    assert_eq!(
        seen.len(),
        3,
        "503 + 201 for seq 1, 422 for seq 2, no reading: {seen:?}"
    );
    let first: Vec<_> = seen.iter().filter(|s| s.seq == 1).collect();
    assert_eq!(first.len(), 2);
    assert_eq!(
        first[0].webhook_id, first[1].webhook_id,
        "retry keeps the id"
    );
    assert_eq!(first[0].webhook_id, EventId([1; 16]).to_string());
    assert_eq!(
        first[0].idempotency_key,
        format!("\"{}\"", first[0].webhook_id)
    );
    assert!(
        seen.iter().all(|s| s.signature_ok),
        "every request is signed"
    );
    assert!(
        seen.iter()
            .all(|s| s.content_type == "application/cloudevents+json")
    );

    let stats = inbox.call(|i| i.stats()).await.expect("stats");
    assert_eq!(
        (stats.received, stats.pending, stats.booked, stats.rejected),
        (3, 0, 1, 1)
    );
}
