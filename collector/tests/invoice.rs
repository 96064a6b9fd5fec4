//! Proof of delivery → `invoice.ready`, against a real HTTP receiver on
//! 127.0.0.1:0: queued with the booking (so a collector that stops before
//! sending still sends it later), retried after a 503 with the same id, sent
//! once, signed, and never again after it was accepted.

mod support;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use dockline_collector::delivery::Delivery;
use dockline_collector::delivery::invoice::InvoiceNotifier;
use dockline_collector::erp::ErpConfig;
use dockline_collector::erp::webhook::cloudevents::SigningKey;
use dockline_collector::inbox::{Inbox, InboxHandle, InboxStore};
use dockline_collector::shutdown::ShutdownTrigger;
use dockline_protocol::{
    Batch, BusinessEvent, DeviceId, Envelope, EventDetail, EventId, Payload, Priority,
    ProofOfDelivery, References, SiteId, TimeSource,
};
use tokio::sync::{Notify, mpsc};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

#[derive(Debug, Default)]
struct Receiver {
    /// Events booked at `/events`, by webhook id.
    events: Mutex<Vec<String>>,
    /// Every request to `/invoices`: (webhook id, signature valid, body).
    invoices: Mutex<Vec<(String, bool, serde_json::Value)>>,
    /// Answer this many invoice requests 503 first.
    fail_first: Mutex<u32>,
}

fn header(headers: &HeaderMap, name: &str) -> String {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

async fn events(State(r): State<Arc<Receiver>>, headers: HeaderMap) -> (StatusCode, String) {
    let id = header(&headers, "webhook-id");
    let mut events = r.events.lock().expect("lock");
    if !events.contains(&id) {
        events.push(id);
    }
    let n = events.len();
    (
        StatusCode::CREATED,
        format!(r#"{{"document":"WH/OUT/{n}"}}"#),
    )
}

async fn invoices(
    State(r): State<Arc<Receiver>>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    let id = header(&headers, "webhook-id");
    let ts: i64 = header(&headers, "webhook-timestamp").parse().unwrap_or(0);
    let expected = SigningKey::from_secret(SECRET)
        .expect("secret")
        .sign(&id, ts, &body);
    let signed = header(&headers, "webhook-signature") == expected
        && header(&headers, "idempotency-key") == format!("\"{id}\"");
    let json: serde_json::Value = serde_json::from_slice(&body).expect("JSON body");
    r.invoices.lock().expect("lock").push((id, signed, json));
    let mut fail = r.fail_first.lock().expect("lock");
    if *fail > 0 {
        *fail -= 1;
        return (StatusCode::SERVICE_UNAVAILABLE, "busy".into());
    }
    (StatusCode::OK, "{}".into())
}

async fn start(receiver: &Arc<Receiver>) -> std::net::SocketAddr {
    let app = Router::new()
        .route("/events", post(events))
        .route("/invoices", post(invoices))
        .with_state(Arc::clone(receiver));
    support::serve(app).await
}

fn config(addr: std::net::SocketAddr) -> ErpConfig {
    ErpConfig {
        retry_min_ms: 10,
        retry_max_ms: 50,
        // The POD comes without the order's earlier steps: no waiting.
        lane_park_max_ms: 0,
        invoice_webhook_url: Some(format!("http://{addr}/invoices")),
        ..ErpConfig::new(format!("http://{addr}/events"), SECRET)
    }
}

fn envelope(seq: u64, detail: EventDetail) -> Envelope {
    Envelope {
        v: 1,
        device: DeviceId::new("van-01").expect("id"),
        epoch: 1,
        seq,
        id: EventId([seq as u8; 16]),
        captured_ms: 1_764_000_000_000,
        time_source: TimeSource::Ntp,
        priority: Priority::MustDeliver,
        payload: Payload::Event(BusinessEvent {
            detail,
            refs: References {
                order: Some("SO-1001".into()),
                stop: Some("STOP-1".into()),
                ..References::default()
            },
        }),
    }
}

async fn wait_for(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + within;
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_booked_pod_sends_invoice_ready_once_even_across_a_stop_and_a_503() {
    let receiver = Arc::new(Receiver::default());
    *receiver.fail_first.lock().expect("lock") = 1;
    let addr = start(&receiver).await;
    let cfg = config(addr);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("inbox.db");
    let mut inbox = Inbox::open(&path).expect("inbox");
    inbox.enable_invoice_followups();
    let batch = Batch {
        v: 1,
        device: DeviceId::new("van-01").expect("id"),
        epoch: 1,
        first_held: 1,
        events: vec![
            envelope(
                1,
                EventDetail::Arrived {
                    vehicle: "VAN-7".into(),
                    position: None,
                },
            ),
            envelope(
                2,
                EventDetail::Delivered(ProofOfDelivery {
                    received_by: "J. Smith".into(),
                    pieces: 4,
                    signature_ref: None,
                    photo_ref: None,
                    position: None,
                }),
            ),
        ],
        shed: Vec::new(),
    };
    let site = SiteId::new("dc-north").expect("site");
    inbox.store_batch(&site, &batch, 0).expect("store");
    let inbox = InboxHandle::new(inbox);

    // Delivery books both events; the invoice sender is not running (as if
    // the collector died right after the booking).
    let (tx, mut rx) = mpsc::channel(16);
    tokio::spawn(async move { while rx.recv().await.is_some() {} });
    let delivery = Arc::new(Delivery::new(&cfg, inbox.clone(), tx).expect("delivery"));
    let trigger = ShutdownTrigger::new();
    let task =
        tokio::spawn(Arc::clone(&delivery).run(Arc::new(Notify::new()), trigger.subscribe()));
    wait_for("both events booked", Duration::from_secs(10), || {
        receiver.events.lock().expect("lock").len() == 2
    })
    .await;
    trigger.trigger();
    task.await.expect("delivery stops");
    let stats = inbox.call(|i| i.stats()).await.expect("stats");
    assert_eq!(stats.booked, 2);
    assert_eq!(
        stats.followups.get("pending"),
        Some(&1),
        "queued with the booking"
    );
    assert!(receiver.invoices.lock().expect("lock").is_empty());

    // The sender starts (after the "restart"): a 503, then accepted.
    let run_sender = |inbox: InboxHandle| {
        let trigger = ShutdownTrigger::new();
        let notifier = InvoiceNotifier::from_config(&cfg, inbox)
            .expect("notifier")
            .expect("configured");
        let task = tokio::spawn(notifier.run(Arc::new(Notify::new()), trigger.subscribe()));
        (trigger, task)
    };
    let (stop, sender) = run_sender(inbox.clone());
    wait_for("invoice accepted", Duration::from_secs(10), || {
        receiver.invoices.lock().expect("lock").len() == 2
    })
    .await;
    let mut sent = false;
    for _ in 0..100 {
        let stats = inbox.call(|i| i.stats()).await.expect("stats");
        if stats.followups.get("sent") == Some(&1) {
            sent = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(sent, "marked sent after the 2xx");
    stop.trigger();
    sender.await.expect("sender stops");

    // Started again: nothing left to send.
    let (stop, sender) = run_sender(inbox.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.trigger();
    sender.await.expect("sender stops");

    let invoices = receiver.invoices.lock().expect("lock").clone();
    assert_eq!(invoices.len(), 2, "one 503 and one accepted attempt");
    let pod_id = EventId([2; 16]).to_string();
    for (id, signed, body) in &invoices {
        assert_eq!(
            id,
            &format!("invoice-{pod_id}"),
            "the same id on every attempt"
        );
        assert!(
            signed,
            "signed per Standard Webhooks with the idempotency key"
        );
        assert_eq!(body["type"], "io.dockline.invoice.ready");
        assert_eq!(body["subject"], "SO-1001");
        assert_eq!(body["data"]["order"], "SO-1001");
        assert_eq!(body["data"]["pod_event_id"], pod_id.as_str());
        assert_eq!(body["data"]["pod_document"], "WH/OUT/2");
    }
    assert_eq!(
        invoices[0].2, invoices[1].2,
        "the same body on every attempt"
    );
}
