//! CloudEvents batches through the real delivery path (`[erp.webhook]
//! batch_max = 8`, `concurrency = 1`) to a receiver on 127.0.0.1:0 that
//! answers slowly, so ready events of many lanes pile up into batches:
//! - every request is `application/cloudevents-batch+json`, a JSON array,
//!   signed over the whole body (checked with the collector's own
//!   `SigningKey` here; `webhook_interop.rs` checks with PyPI
//!   `standardwebhooks`), its `webhook-id` and quoted `Idempotency-Key` the
//!   batch id of its events;
//! - no batch holds two events of one lane, and each lane reaches the
//!   receiver in business order (picked, packed, loaded);
//! - the first batch is answered 500: its events are retried;
//! - any batch holding the one bad event is answered 422: the batch is
//!   split, the bad event alone is refused again and dead-lettered (the
//!   device gets `rejected`), its neighbours are booked;
//! - every other event is booked exactly once.
//!
//! The split itself is shown deterministically by the second test, on the
//! adapter alone: the first request is held until three more events are
//! queued, so they must share the next batch.

mod support;
use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use dockline_collector::delivery::Delivery;
use dockline_collector::erp::ErpConfig;
use dockline_collector::erp::webhook::cloudevents::{SigningKey, WebhookOptions, batch_id};
use dockline_collector::inbox::{Inbox, InboxHandle, InboxStore};
use dockline_collector::shutdown::ShutdownTrigger;
use dockline_protocol::{
    Ack, Batch, BusinessEvent, DeviceId, Envelope, EventDetail, EventId, Outcome, Payload,
    Priority, References, SiteId, TimeSource, codec,
};
use serde_json::Value;
use tokio::sync::{Notify, mpsc};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const LANES: usize = 10;
const BAD_ORDER: &str = "SO-BAD";

/// One request as the receiver saw it: each element's (id, order, seq).
#[derive(Debug, Clone)]
struct Request {
    events: Vec<(String, String, u64)>,
    status: u16,
}

#[derive(Default)]
struct Receiver {
    requests: Mutex<Vec<Request>>,
    /// CloudEvent id → bookings (a 2xx for a request holding it).
    booked: Mutex<BTreeMap<String, u32>>,
    /// Per order, the sequences booked, in booking order.
    lanes: Mutex<BTreeMap<String, Vec<u64>>>,
    problems: Mutex<Vec<String>>,
}

async fn receive(
    State(rx): State<Arc<Receiver>>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    // Slow enough that events of other lanes queue behind the request.
    tokio::time::sleep(Duration::from_millis(40)).await;
    let h = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let problem = |p: String| {
        rx.problems.lock().expect("lock").push(p.clone());
        (StatusCode::BAD_REQUEST, p)
    };
    if h("content-type") != "application/cloudevents-batch+json" {
        return problem(format!("content-type {:?}", h("content-type")));
    }
    let id = h("webhook-id");
    let ts: i64 = h("webhook-timestamp").parse().unwrap_or(0);
    let key = SigningKey::from_secret(SECRET).expect("secret");
    if key.sign(&id, ts, &body) != h("webhook-signature") {
        return problem(format!("{id}: bad signature"));
    }
    let Ok(Value::Array(elements)) = serde_json::from_slice::<Value>(&body) else {
        return problem(format!("{id}: not a JSON array"));
    };
    let events: Vec<(String, String, u64)> = elements
        .iter()
        .map(|e| {
            (
                e["id"].as_str().unwrap_or("").to_owned(),
                e["subject"].as_str().unwrap_or("").to_owned(),
                e["docklineseq"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    let ids: Vec<&str> = events.iter().map(|e| e.0.as_str()).collect();
    if id != batch_id(&ids) || h("idempotency-key") != format!("\"{id}\"") {
        return problem(format!("{id}: not the batch id of {ids:?}"));
    }
    let lanes: HashSet<&str> = events.iter().map(|e| e.1.as_str()).collect();
    if lanes.len() != events.len() {
        return problem(format!("{id}: two events of one lane in {events:?}"));
    }
    let first = rx.requests.lock().expect("lock").is_empty();
    let status = if first {
        500
    } else if events.iter().any(|e| e.1 == BAD_ORDER) {
        422
    } else {
        200
    };
    rx.requests.lock().expect("lock").push(Request {
        events: events.clone(),
        status,
    });
    match status {
        500 => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "database restarting".into(),
        ),
        422 => (
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("order {BAD_ORDER} is closed"),
        ),
        _ => {
            let mut booked = rx.booked.lock().expect("lock");
            let mut lanes = rx.lanes.lock().expect("lock");
            for (id, order, seq) in &events {
                *booked.entry(id.clone()).or_insert(0) += 1;
                lanes.entry(order.clone()).or_default().push(*seq);
            }
            (StatusCode::OK, format!(r#"{{"document":"BATCH-{id}"}}"#))
        }
    }
}

fn envelope(seq: u64, order: &str, detail: EventDetail) -> Envelope {
    let mut id = [0x42; 16];
    id[8..].copy_from_slice(&seq.to_be_bytes());
    Envelope {
        v: 1,
        device: DeviceId::new("hh-01").expect("id"),
        epoch: 1,
        seq,
        id: EventId(id),
        captured_ms: 1_764_000_000_000 + seq as i64,
        time_source: TimeSource::Ntp,
        priority: Priority::MustDeliver,
        payload: Payload::Event(BusinessEvent {
            detail,
            refs: References {
                order: Some(order.into()),
                ..References::default()
            },
        }),
    }
}

/// Three steps in each of [`LANES`] order lanes, interleaved by sequence,
/// and one pick of the bad order among the first.
fn events() -> Vec<Envelope> {
    let mut list = Vec::new();
    let mut seq = 0;
    for step in 0..3 {
        for lane in 0..LANES {
            seq += 1;
            let detail = match step {
                0 => EventDetail::Picked {
                    item: "04012345678901".into(),
                    quantity: 1,
                    lot: None,
                },
                1 => EventDetail::Packed {
                    quantity: 1,
                    weight: None,
                },
                _ => EventDetail::Loaded {
                    vehicle: "TRUCK-1".into(),
                },
            };
            list.push(envelope(seq, &format!("SO-{lane}"), detail));
            if step == 0 && lane == 1 {
                seq += 1;
                list.push(envelope(
                    seq,
                    BAD_ORDER,
                    EventDetail::Picked {
                        item: "04012345678901".into(),
                        quantity: 99,
                        lot: None,
                    },
                ));
            }
        }
    }
    list
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_events_of_distinct_lanes_share_signed_batches() -> Result<()> {
    let receiver = Arc::new(Receiver::default());
    let app = Router::new()
        .route("/events", post(receive))
        .with_state(Arc::clone(&receiver));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });

    let cfg = ErpConfig {
        timeout_ms: 2000,
        retry_min_ms: 10,
        retry_max_ms: 50,
        concurrency: 1,
        webhook: WebhookOptions {
            batch_max: 8,
            ..WebhookOptions::default()
        },
        ..ErpConfig::new(format!("http://{addr}/events"), SECRET)
    };
    let events = events();
    let dir = tempfile::tempdir()?;
    let mut inbox = Inbox::open(&dir.path().join("inbox.db"))?;
    inbox.store_batch(
        &SiteId::new("dc-north")?,
        &Batch {
            v: 1,
            device: DeviceId::new("hh-01")?,
            epoch: 1,
            first_held: 1,
            events: events.clone(),
            shed: Vec::new(),
        },
        0,
    )?;
    let inbox = InboxHandle::new(inbox);
    let (tx, mut acks) = mpsc::channel(64);
    let delivery = Arc::new(Delivery::new(&cfg, inbox.clone(), tx)?);
    let trigger = ShutdownTrigger::new();
    let running =
        tokio::spawn(Arc::clone(&delivery).run(Arc::new(Notify::new()), trigger.subscribe()));
    let mut verdicts = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while verdicts.len() < events.len() {
        let p = tokio::time::timeout_at(deadline, acks.recv())
            .await
            .with_context(|| format!("only {} verdicts within 30 s", verdicts.len()))?
            .ok_or_else(|| anyhow!("ack channel closed"))?;
        let ack: Ack = codec::decode(&p.payload)?;
        for v in ack.verdicts {
            verdicts.insert(v.seq, v.outcome);
        }
    }
    trigger.trigger();
    running.await?;

    let problems = receiver.problems.lock().expect("lock").clone();
    assert!(problems.is_empty(), "{problems:?}");
    let requests = receiver.requests.lock().expect("lock").clone();
    let largest = requests.iter().map(|r| r.events.len()).max().unwrap_or(0);
    assert!(
        (2..=8).contains(&largest),
        "batches formed, none above batch_max: largest {largest} in {} requests",
        requests.len()
    );
    assert!(
        requests.len() < events.len(),
        "{} requests for {} events",
        requests.len(),
        events.len()
    );
    // The first batch failed with 500 and its events went again.
    let first = &requests[0];
    assert_eq!(first.status, 500);
    for (id, ..) in &first.events {
        let sent = requests
            .iter()
            .filter(|r| r.events.iter().any(|e| &e.0 == id))
            .count();
        assert!(sent >= 2, "{id} retried after the 500");
    }
    // Whether the bad event came alone or in company (timing decides),
    // it was last refused alone: a refused batch is split.
    let last_bad = requests
        .iter()
        .rfind(|r| r.events.iter().any(|e| e.1 == BAD_ORDER))
        .ok_or_else(|| anyhow!("the bad event was never sent"))?;
    assert_eq!((last_bad.events.len(), last_bad.status), (1, 422));
    let booked = receiver.booked.lock().expect("lock").clone();
    for e in &events {
        let id = e.id.to_string();
        let Payload::Event(ev) = &e.payload else {
            continue;
        };
        let outcome = verdicts
            .get(&e.seq)
            .ok_or_else(|| anyhow!("no verdict for {}", e.seq))?;
        if ev.refs.order.as_deref() == Some(BAD_ORDER) {
            assert!(matches!(outcome, Outcome::Rejected { .. }), "{outcome:?}");
            assert_eq!(booked.get(&id), None);
        } else {
            assert!(matches!(outcome, Outcome::Booked { .. }), "{outcome:?}");
            assert_eq!(booked.get(&id), Some(&1), "seq {} booked once", e.seq);
        }
    }
    // Each lane was booked in its business order.
    for (order, seqs) in receiver.lanes.lock().expect("lock").iter() {
        let mut sorted = seqs.clone();
        sorted.sort_unstable();
        assert_eq!(seqs, &sorted, "lane {order} booked out of order");
        assert_eq!(seqs.len(), 3, "lane {order}");
    }
    let stats = inbox.call(|i| i.stats()).await?;
    assert_eq!(
        (stats.pending, stats.rejected, stats.dead_letters),
        (0, 1, 1)
    );
    eprintln!(
        "{} events in {} requests, largest batch {largest}",
        events.len(),
        requests.len()
    );
    Ok(())
}

/// A receiver that holds its first request until `release`, refuses any
/// request holding the bad order with 422, and books the rest.
struct Gate {
    release: Notify,
    seen: Mutex<Vec<(Vec<String>, u16)>>,
}

async fn gated(State(gate): State<Arc<Gate>>, body: Bytes) -> (StatusCode, &'static str) {
    let first = gate.seen.lock().expect("lock").is_empty();
    let elements: Vec<Value> = serde_json::from_slice(&body).unwrap_or_default();
    let orders: Vec<String> = elements
        .iter()
        .map(|e| e["subject"].as_str().unwrap_or("").to_owned())
        .collect();
    let status = if orders.iter().any(|o| o == BAD_ORDER) {
        422
    } else {
        200
    };
    gate.seen.lock().expect("lock").push((orders, status));
    if first {
        gate.release.notified().await;
    }
    match status {
        422 => (StatusCode::UNPROCESSABLE_ENTITY, "order is closed"),
        _ => (StatusCode::OK, r#"{"document":"DOC-1"}"#),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_batch_is_split_so_only_the_bad_event_fails() -> Result<()> {
    use dockline_collector::erp;
    use dockline_collector::erp::outcome::AttemptOutcome;

    let gate = Arc::new(Gate {
        release: Notify::new(),
        seen: Mutex::new(Vec::new()),
    });
    let app = Router::new()
        .route("/events", post(gated))
        .with_state(Arc::clone(&gate));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    let cfg = ErpConfig {
        concurrency: 1,
        webhook: WebhookOptions {
            batch_max: 8,
            ..WebhookOptions::default()
        },
        ..ErpConfig::new(format!("http://{addr}/events"), SECRET)
    };
    let adapter: Arc<dyn erp::ErpAdapter> =
        Arc::from(erp::from_config(&cfg, erp::ErpMediaOptions::default())?);
    assert_eq!(adapter.events_per_request(), 8);
    let site = SiteId::new("dc-north")?;
    let pick = |seq, order: &str| {
        envelope(
            seq,
            order,
            EventDetail::Picked {
                item: "04012345678901".into(),
                quantity: 1,
                lot: None,
            },
        )
    };
    let envelopes = [
        pick(1, "SO-1"),
        pick(2, "SO-2"),
        pick(3, BAD_ORDER),
        pick(4, "SO-4"),
    ];
    let mut tasks = Vec::new();
    for (i, env) in envelopes.iter().cloned().enumerate() {
        let (adapter, site) = (Arc::clone(&adapter), site.clone());
        tasks.push(tokio::spawn(async move {
            if !matches!(env.payload, Payload::Event(_)) {
                return None;
            }
            let attempt = support::attempt(adapter.as_ref(), site.as_str(), &env).await;
            Some((env.seq, attempt))
        }));
        if i == 0 {
            // The first goes out alone and is held at the receiver.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // The other three are queued behind it by now.
    tokio::time::sleep(Duration::from_millis(200)).await;
    gate.release.notify_one();
    let mut statuses = BTreeMap::new();
    for t in tasks {
        let (seq, attempt) = t.await?.ok_or_else(|| anyhow!("a business event"))?;
        let AttemptOutcome::Response(r) = attempt.outcome else {
            anyhow::bail!("seq {seq}: no response: {:?}", attempt.outcome);
        };
        statuses.insert(seq, r.status);
    }
    assert_eq!(
        statuses,
        BTreeMap::from([(1, 200), (2, 200), (3, 422), (4, 200)]),
        "only the bad event is refused"
    );
    // The three queued while the first was held may be queued in any
    // order (they are separate tasks), so compare each request's orders
    // sorted, and the split's lone sends as a set.
    let mut seen: Vec<(Vec<String>, u16)> = gate.seen.lock().expect("lock").clone();
    for (orders, _) in &mut seen {
        orders.sort();
    }
    let owned = |list: &[&str]| list.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    assert_eq!(seen.len(), 5, "held, batched, then three alone: {seen:?}");
    assert_eq!(seen[0], (owned(&["SO-1"]), 200), "{seen:?}");
    assert_eq!(
        seen[1],
        (owned(&["SO-2", "SO-4", BAD_ORDER]), 422),
        "the three share one batch: {seen:?}"
    );
    let mut alone = seen[2..].to_vec();
    alone.sort();
    assert_eq!(
        alone,
        vec![
            (owned(&["SO-2"]), 200),
            (owned(&["SO-4"]), 200),
            (owned(&[BAD_ORDER]), 422),
        ],
        "split: each sent alone"
    );
    Ok(())
}
