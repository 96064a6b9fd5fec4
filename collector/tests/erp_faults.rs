//! ERP faults against a scripted HTTP server on 127.0.0.1:0 that books each
//! idempotency key once (a replayed key gets 200 and the same document, like
//! the simulator's mock ERP): 500 then success; 429 with `Retry-After` in
//! seconds and as an HTTP-date pausing the whole endpoint; 401 halting the
//! endpoint without failing an event; a permanent 422 dead-lettered,
//! blocking its lane, replayed through the API after a data fix and booked
//! once; a response slower than the timeout retried with the same key and
//! booked once.

mod support;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use dockline_collector::delivery::Delivery;
use dockline_collector::delivery::backoff::FixedJitter;
use dockline_collector::erp::ErpConfig;
use dockline_collector::http::{self as api, ApiState};
use dockline_collector::inbox::{Inbox, InboxHandle, InboxStore};
use dockline_collector::publication::Publication;
use dockline_collector::shutdown::ShutdownTrigger;
use dockline_protocol::{
    Ack, BusinessEvent, DeviceId, Envelope, EventDetail, EventId, Outcome, Payload, Priority,
    References, TimeSource, codec,
};
use tokio::sync::{Notify, mpsc};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// One request the ERP received.
#[derive(Debug, Clone)]
struct Call {
    device: String,
    seq: u64,
    /// This request's number for its (device, seq), from 1.
    n: u32,
    key: String,
    at: Instant,
}

/// What the script answers.
struct Reply {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: String,
    /// Book the key (on a 2xx) before waiting `delay`.
    delay: Duration,
}

impl Reply {
    fn book() -> Self {
        Self::status(201, "")
    }
    fn status(status: u16, body: &str) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: body.into(),
            delay: Duration::ZERO,
        }
    }
}

type Script = Box<dyn Fn(&Call) -> Reply + Send + Sync>;

struct Erp {
    script: Script,
    calls: Mutex<Vec<Call>>,
    /// Idempotency key → document, in booking order.
    ledger: Mutex<Vec<(String, String)>>,
}

impl Erp {
    fn calls(&self) -> Vec<Call> {
        self.calls.lock().expect("lock").clone()
    }
    fn calls_for(&self, device: &str, seq: u64) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| c.device == device && c.seq == seq)
            .collect()
    }
    fn bookings(&self) -> Vec<(String, String)> {
        self.ledger.lock().expect("lock").clone()
    }
}

async fn handler(State(erp): State<Arc<Erp>>, headers: HeaderMap, body: Bytes) -> Response {
    let json: serde_json::Value = serde_json::from_slice(&body).expect("body is JSON");
    let device = json["docklinedevice"].as_str().expect("device").to_string();
    let seq = json["docklineseq"].as_u64().expect("docklineseq");
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .expect("idempotency-key")
        .to_string();
    let call = {
        let mut calls = erp.calls.lock().expect("lock");
        let n = calls
            .iter()
            .filter(|c| c.device == device && c.seq == seq)
            .count() as u32
            + 1;
        let call = Call {
            device,
            seq,
            n,
            key: key.clone(),
            at: Instant::now(),
        };
        calls.push(call.clone());
        call
    };
    // A key booked before is answered from the ledger, whatever the script.
    let existing = erp
        .ledger
        .lock()
        .expect("lock")
        .iter()
        .find(|(k, _)| *k == key)
        .map(|(_, d)| d.clone());
    if let Some(document) = existing {
        return (StatusCode::OK, format!(r#"{{"document":"{document}"}}"#)).into_response();
    }
    let reply = (erp.script)(&call);
    let mut body = reply.body;
    if (200..300).contains(&reply.status) {
        let document = format!("DOC-{}-{}", call.device, call.seq);
        erp.ledger
            .lock()
            .expect("lock")
            .push((key, document.clone()));
        body = format!(r#"{{"document":"{document}"}}"#);
    }
    tokio::time::sleep(reply.delay).await;
    let mut resp = (StatusCode::from_u16(reply.status).expect("status"), body).into_response();
    for (name, value) in reply.headers {
        resp.headers_mut().insert(
            HeaderName::from_static(name),
            HeaderValue::from_str(&value).expect("header"),
        );
    }
    resp
}

async fn start_erp(script: Script) -> (Arc<Erp>, SocketAddr) {
    let erp = Arc::new(Erp {
        script,
        calls: Mutex::new(Vec::new()),
        ledger: Mutex::new(Vec::new()),
    });
    let app = Router::new()
        .route("/events", post(handler))
        .with_state(Arc::clone(&erp));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (erp, addr)
}

fn erp_config(addr: SocketAddr) -> ErpConfig {
    ErpConfig {
        halt_recheck_ms: 300,
        breaker_open_ms: 100,
        ..support::fast_erp(format!("http://{addr}/events"), SECRET)
    }
}

fn envelope(device: &str, seq: u64) -> Envelope {
    let mut id = [seq as u8; 16];
    id[0] = device.len() as u8;
    id[1] = device.as_bytes()[device.len() - 1];
    Envelope {
        v: 1,
        device: DeviceId::new(device).expect("id"),
        epoch: 1,
        seq,
        id: EventId(id),
        captured_ms: 1_700_000_000_000,
        time_source: TimeSource::Ntp,
        priority: Priority::MustDeliver,
        payload: Payload::Event(BusinessEvent {
            detail: EventDetail::Picked {
                item: "04012345678901".into(),
                quantity: 2,
                lot: None,
            },
            refs: References {
                // One order per device: its events share one business lane.
                order: Some(format!("SO-{device}")),
                ..References::default()
            },
        }),
    }
}

/// A running delivery over a fresh inbox holding `events` (device, seqs).
struct Harness {
    _dir: tempfile::TempDir,
    inbox: InboxHandle,
    delivery: Arc<Delivery>,
    wake: Arc<Notify>,
    verdicts: mpsc::Receiver<Publication>,
    trigger: ShutdownTrigger,
    task: tokio::task::JoinHandle<()>,
}

impl Harness {
    async fn start(cfg: ErpConfig, events: &[(&str, &[u64])]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut inbox = Inbox::open(&dir.path().join("inbox.db")).expect("inbox");
        for (device, seqs) in events {
            let batch = support::batch(1, seqs.iter().map(|s| envelope(device, *s)).collect());
            inbox
                .store_batch(&support::site(), &batch, 0)
                .expect("store");
        }
        let inbox = InboxHandle::new(inbox);
        let (tx, verdicts) = mpsc::channel(64);
        let delivery = Arc::new(
            Delivery::new(&cfg, inbox.clone(), tx)
                .expect("delivery")
                .with_jitter(Box::new(FixedJitter(0.5))),
        );
        let trigger = ShutdownTrigger::new();
        let wake = Arc::new(Notify::new());
        let task = tokio::spawn(Arc::clone(&delivery).run(Arc::clone(&wake), trigger.subscribe()));
        Self {
            _dir: dir,
            inbox,
            delivery,
            wake,
            verdicts,
            trigger,
            task,
        }
    }

    /// The next `n` verdicts as (device, seq, outcome).
    async fn verdicts(&mut self, n: usize, within: Duration) -> Vec<(String, u64, Outcome)> {
        let deadline = tokio::time::Instant::now() + within;
        let mut out = Vec::new();
        while out.len() < n {
            let p = tokio::time::timeout_at(deadline, self.verdicts.recv())
                .await
                .unwrap_or_else(|_| panic!("only {} of {n} verdicts: {out:?}", out.len()))
                .expect("channel open");
            let device = p.topic.split('/').nth(3).expect("device level").to_string();
            let ack: Ack = codec::decode(&p.payload).expect("ack");
            for v in ack.verdicts {
                out.push((device.clone(), v.seq, v.outcome));
            }
        }
        out
    }

    async fn no_verdict_for(&mut self, d: Duration) {
        if let Ok(Some(p)) = tokio::time::timeout(d, self.verdicts.recv()).await {
            let ack: Ack = codec::decode(&p.payload).expect("ack");
            panic!("unexpected verdict on {}: {:?}", p.topic, ack.verdicts);
        }
    }

    async fn stop(self) -> InboxHandle {
        self.trigger.trigger();
        self.task.await.expect("delivery stops");
        self.inbox
    }
}

fn booked(device: &str, seq: u64) -> (String, u64, Outcome) {
    (
        device.into(),
        seq,
        Outcome::Booked {
            document: format!("DOC-{device}-{seq}"),
        },
    )
}

fn assert_one_key(calls: &[Call]) {
    assert!(!calls.is_empty());
    assert!(
        calls.iter().all(|c| c.key == calls[0].key),
        "every attempt carries the same Idempotency-Key: {calls:?}"
    );
}

#[tokio::test]
async fn server_error_then_success_books_once() {
    let (erp, addr) = start_erp(Box::new(|c: &Call| match c.n {
        1 => Reply::status(500, "database is locked"),
        _ => Reply::book(),
    }))
    .await;
    let mut h = Harness::start(erp_config(addr), &[("hh-01", &[1])]).await;
    assert_eq!(
        h.verdicts(1, Duration::from_secs(10)).await,
        vec![booked("hh-01", 1)]
    );
    let inbox = h.stop().await;
    let calls = erp.calls_for("hh-01", 1);
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_one_key(&calls);
    assert_eq!(erp.bookings().len(), 1);
    let stats = inbox.call(|i| i.stats()).await.expect("stats");
    assert_eq!((stats.booked, stats.pending, stats.dead_letters), (1, 0, 0));
}

/// Every call after the first 429 comes at least `pause` later, whichever
/// device it is for: the pause holds for the whole endpoint.
async fn assert_endpoint_paused(retry_after: String, pause_at_least: Duration) {
    let header = retry_after.clone();
    let (erp, addr) = start_erp(Box::new(move |c: &Call| {
        if c.device == "hh-01" && c.n == 1 {
            Reply {
                headers: vec![("retry-after", header.clone())],
                ..Reply::status(429, "slow down")
            }
        } else {
            Reply::book()
        }
    }))
    .await;
    // One request at a time, so nothing else is in flight when the 429 comes.
    let cfg = ErpConfig {
        concurrency: 1,
        ..erp_config(addr)
    };
    let mut h = Harness::start(cfg, &[("hh-01", &[1, 2]), ("hh-02", &[1])]).await;
    let mut got = h.verdicts(3, Duration::from_secs(15)).await;
    got.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
    assert_eq!(
        got,
        vec![booked("hh-01", 1), booked("hh-01", 2), booked("hh-02", 1)]
    );
    h.stop().await;
    let calls = erp.calls();
    let throttled = calls
        .iter()
        .find(|c| c.device == "hh-01" && c.n == 1)
        .expect("the 429")
        .at;
    for c in calls.iter().filter(|c| c.at > throttled) {
        let waited = c.at - throttled;
        assert!(
            waited >= pause_at_least,
            "Retry-After {retry_after:?}: {}/{} #{} came {waited:?} after the 429",
            c.device,
            c.seq,
            c.n
        );
    }
    assert_one_key(&erp.calls_for("hh-01", 1));
    assert_eq!(erp.bookings().len(), 3, "each event booked once");
}

#[tokio::test]
async fn throttled_429_with_retry_after_seconds_pauses_the_endpoint() {
    assert_endpoint_paused("1".into(), Duration::from_millis(950)).await;
}

#[tokio::test]
async fn throttled_429_with_retry_after_http_date_pauses_the_endpoint() {
    // IMF-fixdate has whole seconds: 3 s ahead is at least 2 s away.
    let at = time::OffsetDateTime::now_utc() + time::Duration::seconds(3);
    let date = format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} GMT",
        &at.weekday().to_string()[..3],
        at.day(),
        &at.month().to_string()[..3],
        at.year(),
        at.hour(),
        at.minute(),
        at.second()
    );
    assert_eq!(date.len(), 29, "{date}");
    assert_endpoint_paused(date, Duration::from_millis(1900)).await;
}

#[tokio::test]
async fn unauthorized_halts_the_endpoint_without_failing_events_then_resumes() {
    let accepted = Arc::new(AtomicBool::new(false));
    let ok = Arc::clone(&accepted);
    let (erp, addr) = start_erp(Box::new(move |_c: &Call| {
        if ok.load(Ordering::SeqCst) {
            Reply::book()
        } else {
            Reply::status(401, "invalid webhook signature")
        }
    }))
    .await;
    let mut h = Harness::start(erp_config(addr), &[("hh-01", &[1, 2]), ("hh-02", &[1])]).await;
    h.no_verdict_for(Duration::from_millis(1200)).await;
    let status = h.delivery.endpoint_status();
    assert_eq!(status.cause, Some("halted"), "{status:?}");
    let reason = status.reason.clone().expect("reason");
    assert!(
        reason.contains("HTTP 401") && reason.contains("erp.secret"),
        "{reason}"
    );
    let during = erp.calls().len();
    // One recheck every 300 ms, plus the requests in flight when it halted.
    assert!(
        during <= 8,
        "a halted endpoint is not hammered: {during} calls"
    );
    assert!(
        erp.calls_for("hh-01", 2).is_empty(),
        "seq 2 never overtakes seq 1"
    );
    let stats = h.inbox.call(|i| i.stats()).await.expect("stats");
    assert_eq!(
        (stats.pending, stats.rejected, stats.dead_letters),
        (3, 0, 0),
        "nothing failed or dead-lettered"
    );

    // The secret is fixed on the ERP side: delivery resumes on its own.
    accepted.store(true, Ordering::SeqCst);
    let mut got = h.verdicts(3, Duration::from_secs(10)).await;
    got.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
    assert_eq!(
        got,
        vec![booked("hh-01", 1), booked("hh-01", 2), booked("hh-02", 1)]
    );
    assert_eq!(h.delivery.endpoint_status().state, "closed");
    let inbox = h.stop().await;
    assert_eq!(erp.bookings().len(), 3);
    let stats = inbox.call(|i| i.stats()).await.expect("stats");
    assert_eq!((stats.booked, stats.pending), (3, 0));
}

#[tokio::test]
async fn permanent_422_dead_letters_blocks_the_lane_and_replays_once_after_a_fix() {
    let fixed = Arc::new(AtomicBool::new(false));
    let f = Arc::clone(&fixed);
    let (erp, addr) = start_erp(Box::new(move |c: &Call| {
        if c.device == "hh-01" && c.seq == 2 && !f.load(Ordering::SeqCst) {
            Reply::status(422, r#"{"message":"unknown item 04012345678901"}"#)
        } else {
            Reply::book()
        }
    }))
    .await;
    let mut h = Harness::start(erp_config(addr), &[("hh-01", &[1, 2, 3]), ("hh-02", &[1])]).await;
    let api_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let api_addr = api_listener.local_addr().expect("addr");
    let router = api::router(ApiState {
        inbox: h.inbox.clone(),
        wake: Arc::clone(&h.wake),
        delivery: Some(Arc::clone(&h.delivery)),
        auth: Arc::new(dockline_collector::http::auth::Auth::open()),
        ingest: None,
    });
    tokio::spawn(async move { axum::serve(api_listener, router).await });
    let http = reqwest::Client::new();
    let api = |path: &str| format!("http://{api_addr}{path}");

    let mut got = h.verdicts(3, Duration::from_secs(10)).await;
    got.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
    let rejection = "HTTP 422: {\"message\":\"unknown item 04012345678901\"}";
    assert_eq!(
        got,
        vec![
            booked("hh-01", 1),
            (
                "hh-01".into(),
                2,
                Outcome::Rejected {
                    reason: rejection.into()
                }
            ),
            booked("hh-02", 1),
        ],
        "the device hears the ERP's refusal; the other device is not held up"
    );
    h.no_verdict_for(Duration::from_millis(500)).await;
    assert!(
        erp.calls_for("hh-01", 3).is_empty(),
        "seq 3 is never posted over the dead letter"
    );
    let stats: serde_json::Value = http
        .get(api("/v1/stats"))
        .send()
        .await
        .expect("stats")
        .json()
        .await
        .expect("json");
    assert_eq!(stats["dead_letters"], 1);
    assert_eq!(stats["blocked_devices"], serde_json::json!(["hh-01"]));

    let list: serde_json::Value = http
        .get(api("/dlq"))
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    let items = list.as_array().expect("array");
    assert_eq!(items.len(), 1, "{list}");
    let id = items[0]["id"].as_i64().expect("id");
    assert_eq!(items[0]["seq"], 2);
    assert_eq!(items[0]["erp_rejected"], true);
    let shown: serde_json::Value = http
        .get(api(&format!("/dlq/{id}")))
        .send()
        .await
        .expect("show")
        .json()
        .await
        .expect("json");
    let event_id = envelope("hh-01", 2).id.to_string();
    assert_eq!(
        shown["event"]["id"],
        event_id.as_str(),
        "the original event: {shown}"
    );
    assert_eq!(shown["lane_blocked"], true);
    let log = shown["attempt_log"].as_array().expect("attempts");
    assert_eq!(log.len(), 1);
    assert_eq!(log[0]["status"], 422);
    assert!(
        log[0]["body"]
            .as_str()
            .expect("body")
            .contains("unknown item")
    );
    assert!(
        log[0]["request"]
            .as_str()
            .expect("request")
            .contains(&event_id)
    );
    let missing = http.get(api("/dlq/999")).send().await.expect("show");
    assert_eq!(missing.status(), 404);

    // The data is fixed in the ERP; the operator replays.
    fixed.store(true, Ordering::SeqCst);
    let replayed = http
        .post(api(&format!("/dlq/{id}/replay")))
        .send()
        .await
        .expect("replay");
    assert_eq!(replayed.status(), 200);
    let again = http
        .post(api(&format!("/dlq/{id}/replay")))
        .send()
        .await
        .expect("replay");
    assert_eq!(again.status(), 409, "a replay happens once");
    assert_eq!(
        h.verdicts(2, Duration::from_secs(10)).await,
        vec![booked("hh-01", 2), booked("hh-01", 3)],
        "the replayed event first, then the lane drains in order"
    );
    let open: serde_json::Value = http
        .get(api("/dlq"))
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    assert_eq!(open, serde_json::json!([]));
    let inbox = h.stop().await;
    let calls = erp.calls_for("hh-01", 2);
    assert_eq!(calls.len(), 2, "one refusal, one booking: {calls:?}");
    assert_one_key(&calls);
    let bookings = erp.bookings();
    assert_eq!(
        bookings.iter().filter(|(k, _)| *k == calls[0].key).count(),
        1,
        "booked exactly once"
    );
    assert_eq!(bookings.len(), 4);
    let stats = inbox.call(|i| i.stats()).await.expect("stats");
    assert_eq!(
        (
            stats.booked,
            stats.rejected,
            stats.pending,
            stats.dead_letters
        ),
        (4, 0, 0, 0)
    );
}

#[tokio::test]
async fn response_slower_than_the_timeout_is_retried_with_the_same_key_and_booked_once() {
    // The ERP commits, then answers after the collector stopped waiting.
    let (erp, addr) = start_erp(Box::new(|c: &Call| match c.n {
        1 => Reply {
            delay: Duration::from_millis(1500),
            ..Reply::book()
        },
        _ => Reply::status(500, "the script never gets here: the key is booked"),
    }))
    .await;
    let cfg = ErpConfig {
        timeout_ms: 300,
        ..erp_config(addr)
    };
    let mut h = Harness::start(cfg, &[("hh-01", &[1])]).await;
    assert_eq!(
        h.verdicts(1, Duration::from_secs(10)).await,
        vec![booked("hh-01", 1)]
    );
    h.stop().await;
    let calls = erp.calls_for("hh-01", 1);
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_one_key(&calls);
    assert_eq!(erp.bookings().len(), 1, "booked once");
}
