//! The webhook adapter's requests, checked by independent implementations:
//! the real delivery path (and the `invoice.ready` follow-up) POSTs to an
//! HTTP receiver on 127.0.0.1:0 that keeps every request's headers and exact
//! body bytes; a Python script then
//! - verifies each request with PyPI `standardwebhooks` (`Webhook(secret)
//!   .verify(body, headers)`) once per secret of the rotation (current and
//!   two previous), and each `v1,` signature alone with its own secret, and
//!   shows the verifier has teeth: a secret not in the rotation, a tampered
//!   body, a replaced timestamp and a correctly signed but 10-minute-old
//!   request are all refused;
//! - parses each body with PyPI `cloudevents`, both its classic HTTP API
//!   (`cloudevents.v1.http.from_http`, structured mode picked by the
//!   `application/cloudevents+json` content type) and its 2.x core (`JSONFormat`
//!   with the v1.0 attribute validation), and compares `specversion`, `id`,
//!   `source`, `type`, `time`, `subject`, the extensions and `data` with what
//!   this test stored, not with what the collector sent;
//! - checks the `Idempotency-Key` is the quoted event id (the default).
//!
//! With `[erp.webhook] batch_max = 4` (second test) the same checks run on
//! `application/cloudevents-batch+json` requests: the signature over the
//! whole array, `webhook-id` and `Idempotency-Key` equal to the batch key
//! recomputed in Python (the lone event's id, else `batch-` + the first 128
//! bits of SHA-256 over the sorted ids), and each element read by the
//! `cloudevents` JSON readers (classic `from_json`, core `JSONFormat.read`;
//! the SDK has no batch reader) and compared with the stored event.
//!
//! Python: `DOCKLINE_TEST_WEBHOOK_PYTHON` (bash .ci/run makes
//! `target/webhook-venv`). Unset: the test prints SKIP. Set but unable to
//! import the packages: the test fails, so CI cannot pass without teeth.

mod support;
use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::routing::post;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use dockline_collector::delivery::Delivery;
use dockline_collector::delivery::invoice::InvoiceNotifier;
use dockline_collector::erp::ErpConfig;
use dockline_collector::erp::webhook::cloudevents::WebhookOptions;
use dockline_collector::inbox::{Inbox, InboxHandle, InboxStore};
use dockline_collector::shutdown::ShutdownTrigger;
use dockline_protocol::{
    Batch, BusinessEvent, DeviceId, Envelope, EventDetail, EventId, ExceptionKind, Payload,
    Priority, ProofOfDelivery, References, SiteId, TimeSource, Weight, WeightUnit,
};
use serde_json::{Value, json};
use tokio::sync::{Notify, mpsc};

const PYTHON_VAR: &str = "DOCKLINE_TEST_WEBHOOK_PYTHON";
/// `[erp] secret`: the current one.
const CURRENT: &str = "whsec_ZG9ja2xpbmUtaW50ZXJvcC1jdXJyZW50LXNlY3JldA==";
/// `[erp.webhook] previous_secrets`.
const PREVIOUS: [&str; 2] = [
    "whsec_ZG9ja2xpbmUtcm90YXRpb24tdGVzdC1rZXktMDAwMg==",
    "whsec_c2Vjb25kLW9sZGVzdC1kb2NrbGluZS1rZXktMDAwMw==",
];
/// A valid secret that is not in the rotation: must not verify.
const STRANGER: &str = "whsec_bm90LWluLXRoZS1yb3RhdGlvbi1hdC1hbGwtMDAwNA==";
const CAPTURED_MS: i64 = 1_764_000_000_123;

/// Reads `{"secrets", "stranger", "requests": [{path, headers, body_b64,
/// expect}]}` on stdin; exits non-zero with the first mismatch.
const CHECKER: &str = r#"
import base64, hashlib, json, sys, time
from datetime import datetime, timezone
try:
    import standardwebhooks
    from standardwebhooks.webhooks import Webhook, WebhookVerificationError
    import cloudevents
    from cloudevents.v1.http import from_http as classic_from_http
    from cloudevents.v1.http import from_json as classic_from_json
    from cloudevents.core.bindings.http import HTTPMessage, from_http as core_from_http
    from cloudevents.core.formats.json import JSONFormat
    from cloudevents.core.v1.event import CloudEvent as CoreEvent
except ImportError as e:
    print(f"cannot import standardwebhooks / cloudevents: {e}", file=sys.stderr)
    sys.exit(3)
if sys.argv[1:] == ["--probe"]:
    from importlib.metadata import version
    print("standardwebhooks", version("standardwebhooks"), "cloudevents", version("cloudevents"))
    sys.exit(0)

def refused(wh, body, headers, why):
    try:
        wh.verify(body, headers)
    except WebhookVerificationError as e:
        return str(e)
    raise AssertionError(f"verified although {why}")

def check_event(where, classic, core, exp):
    views = [
        ("classic", classic["specversion"], classic["id"], classic["source"], classic["type"],
         classic.get("time"), classic.get("subject"), classic.get_attributes(), classic.get_data()),
        ("core", core.get_specversion(), core.get_id(), core.get_source(), core.get_type(),
         core.get_time(), core.get_subject(), core.get_attributes(), core.get_data()),
    ]
    for (sdk, specversion, id_, source, type_, t, subject, attrs, data) in views:
        at = f"{where} ({sdk})"
        assert specversion == "1.0", f"{at}: specversion {specversion!r}"
        assert (id_, source, type_) == (exp["id"], exp["source"], exp["type"]), f"{at}: {(id_, source, type_)}"
        assert subject == exp["subject"], f"{at}: subject {subject!r}"
        if isinstance(t, str):
            t = datetime.fromisoformat(t.replace("Z", "+00:00"))
        assert t is not None and t.tzinfo is not None, f"{at}: time {t!r}"
        if exp["time_ms"] is not None:
            assert round(t.timestamp() * 1000) == exp["time_ms"], f"{at}: time {t.isoformat()}"
        assert attrs.get("datacontenttype") == "application/json", f"{at}: datacontenttype"
        for k, v in exp["extensions"].items():
            assert attrs.get(k) == v, f"{at}: extension {k} = {attrs.get(k)!r}, expected {v!r}"
        assert isinstance(data, dict), f"{at}: data is {type(data).__name__}"
        for k, v in exp["data"].items():
            assert data.get(k) == v, f"{at}: data.{k} = {data.get(k)!r}, expected {v!r}"

spec = json.load(sys.stdin)
rotation = [Webhook(s) for s in spec["secrets"]]
stranger = Webhook(spec["stranger"])
checked = 0
for r in spec["requests"]:
    where = f'{r["path"]} {r["headers"].get("webhook-id")}'
    headers = r["headers"]
    body = base64.b64decode(r["body_b64"])
    exp = r["expect"]
    # A batch expects a list (one entry per element, in body order).
    batch = isinstance(exp, list)
    expected = exp if batch else [exp]
    ids = [e["id"] for e in expected]
    # The batch key, derived here independently: the id of a lone event,
    # else "batch-" + the first 128 bits of SHA-256 over the sorted ids.
    if batch and len(ids) > 1:
        key = "batch-" + hashlib.sha256("".join(i + "\n" for i in sorted(ids)).encode()).hexdigest()[:32]
    else:
        key = ids[0]

    # --- Standard Webhooks ---
    sigs = headers["webhook-signature"].split(" ")
    assert len(sigs) == len(rotation), f"{where}: {len(sigs)} signatures for {len(rotation)} secrets"
    for i, wh in enumerate(rotation):
        parsed = wh.verify(body, headers)
        got = [p["id"] for p in parsed] if batch else [parsed["id"]]
        assert got == ids, f"{where}: verify() returned another body: {got}"
        alone = dict(headers, **{"webhook-signature": sigs[i]})
        wh.verify(body, alone)  # signature i is the one of secret i
    refused(stranger, body, headers, f"{where}: signed for a secret not in the rotation")
    tampered = body.replace(b'"specversion"', b'"specversion" ', 1)
    assert tampered != body
    refused(rotation[0], tampered, headers, f"{where}: the body was changed")
    old = int(time.time()) - 600
    refused(rotation[0], body, dict(headers, **{"webhook-timestamp": str(old)}),
            f"{where}: the timestamp was replaced")
    old_dt = datetime.fromtimestamp(old, tz=timezone.utc)
    resigned = dict(headers, **{"webhook-timestamp": str(old),
                                "webhook-signature": rotation[0].sign(headers["webhook-id"], old_dt, body.decode())})
    why = refused(rotation[0], body, resigned, f"{where}: correctly signed but 10 minutes old")
    assert "too old" in why, f"{where}: an old request refused for another reason: {why}"
    assert headers["webhook-id"] == key, f"{where}: webhook-id {headers['webhook-id']!r}, expected {key!r}"
    assert headers["idempotency-key"] == '"' + key + '"', f"{where}: Idempotency-Key {headers['idempotency-key']!r}"

    # --- CloudEvents ---
    if batch:
        # The JSON batch format: an array of structured events. The SDK has
        # no batch reader, so each element goes through its JSON readers.
        assert headers["content-type"] == "application/cloudevents-batch+json", f"{where}: {headers['content-type']}"
        elements = json.loads(body)
        assert isinstance(elements, list) and len(elements) == len(expected), f"{where}: {len(elements)} elements"
        parsed_events = [(classic_from_json(json.dumps(e)), JSONFormat().read(CoreEvent, json.dumps(e).encode()))
                         for e in elements]
    else:
        assert headers["content-type"] == "application/cloudevents+json", f"{where}: {headers['content-type']}"
        parsed_events = [(classic_from_http(headers, body),
                          core_from_http(HTTPMessage(headers=headers, body=body), JSONFormat(), CoreEvent))]
    for (classic, core), exp in zip(parsed_events, expected):
        check_event(where, classic, core, exp)
    checked += 1

from importlib.metadata import version
print(f"verified {checked} requests with standardwebhooks {version('standardwebhooks')} and cloudevents {version('cloudevents')}")
"#;

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
struct Captured {
    path: String,
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
}

type Log = Arc<Mutex<Vec<Captured>>>;

async fn capture(
    State(log): State<Log>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, &'static str) {
    let headers = headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    log.lock().expect("lock").push(Captured {
        path: uri.path().to_owned(),
        headers,
        body: body.to_vec(),
    });
    (StatusCode::CREATED, r#"{"document":"WH/OUT/0042"}"#)
}

async fn start(log: &Log) -> std::net::SocketAddr {
    let app = Router::new()
        .route("/events", post(capture))
        .route("/invoices", post(capture))
        .with_state(Arc::clone(log));
    support::serve(app).await
}

fn envelope(seq: u64, order: &str, detail: EventDetail) -> Envelope {
    Envelope {
        v: 1,
        device: DeviceId::new("hh-01").expect("id"),
        epoch: 2,
        seq,
        id: EventId([seq as u8; 16]),
        captured_ms: CAPTURED_MS + seq as i64,
        time_source: TimeSource::Gnss,
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

/// The events, and what the receiver must find in each one's CloudEvent.
fn events() -> Vec<(Envelope, Value)> {
    let pod = ProofOfDelivery {
        received_by: "A. Jones".into(),
        pieces: 3,
        signature_ref: Some("sig-7".into()),
        photo_ref: None,
        position: None,
    };
    vec![
        (
            envelope(
                1,
                "SO-1001",
                EventDetail::Picked {
                    item: "04012345678901".into(),
                    quantity: 3,
                    lot: Some("L-9".into()),
                },
            ),
            json!({"kind": "picked", "item": "04012345678901", "quantity": 3, "lot": "L-9",
                   "refs": {"order": "SO-1001"}, "time_source": "gnss"}),
        ),
        (
            envelope(
                2,
                "SO-1001",
                EventDetail::Packed {
                    quantity: 3,
                    weight: Some(Weight {
                        value: 4.25,
                        unit: WeightUnit::Kg,
                    }),
                },
            ),
            json!({"kind": "packed", "quantity": 3, "weight": {"value": 4.25, "unit": "kg"}}),
        ),
        (
            envelope(3, "SO-1001", EventDetail::Delivered(pod)),
            json!({"kind": "delivered", "received_by": "A. Jones", "pieces": 3,
                   "signature_ref": "sig-7", "priority": "must_deliver"}),
        ),
        (
            envelope(
                4,
                "SO-2002",
                EventDetail::Exception {
                    kind: ExceptionKind::Damaged,
                    note: "crushed corner, ünïcode ✓".into(),
                },
            ),
            json!({"kind": "exception", "exception": "damaged",
                   "note": "crushed corner, ünïcode ✓", "refs": {"order": "SO-2002"}}),
        ),
    ]
}

/// The Python named by `DOCKLINE_TEST_WEBHOOK_PYTHON`, or `None` after
/// printing why `test` is skipped.
fn python(test: &str) -> Result<Option<String>> {
    let Ok(python) = std::env::var(PYTHON_VAR) else {
        eprintln!(
            "SKIP {test}: {PYTHON_VAR} is not set; point it at a Python with the PyPI packages standardwebhooks and cloudevents (bash .ci/run makes target/webhook-venv)"
        );
        return Ok(None);
    };
    // Set: it must work, or the suite would pass without checking anything.
    let out = Command::new(&python)
        .arg("-c")
        .arg(CHECKER)
        .arg("--probe")
        .output()
        .with_context(|| format!("{PYTHON_VAR}={python} cannot be run"))?;
    if !out.status.success() {
        bail!(
            "{PYTHON_VAR}={python} cannot check webhooks ({}): {}; rerun the webhook block of .ci/run",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    eprintln!(
        "{test}: checking with {python}: {}",
        String::from_utf8_lossy(&out.stdout).trim()
    );
    Ok(Some(python))
}

/// Runs the checker on `requests`; its report line on success.
fn check(python: &str, requests: &[Value]) -> Result<String> {
    let mut secrets = vec![CURRENT];
    secrets.extend(PREVIOUS);
    let input = serde_json::to_vec(&json!({
        "secrets": secrets,
        "stranger": STRANGER,
        "requests": requests,
    }))?;
    let mut child = Command::new(python)
        .arg("-c")
        .arg(CHECKER)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {python}"))?;
    child
        .stdin
        .take()
        .ok_or_else(|| anyhow!("no stdin"))?
        .write_all(&input)?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "the independent check failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

async fn wait_for(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + within;
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_cloudevents_verify_with_standardwebhooks_and_parse_with_cloudevents() -> Result<()>
{
    let test = "signed_cloudevents_verify_with_standardwebhooks_and_parse_with_cloudevents";
    let Some(python) = python(test)? else {
        return Ok(());
    };
    let log: Log = Arc::default();
    let addr = start(&log).await;
    let cfg = ErpConfig {
        timeout_ms: 2000,
        retry_min_ms: 10,
        retry_max_ms: 50,
        // The proof of delivery need not wait long for the `arrived` this
        // test never sends.
        lane_park_max_ms: 50,
        invoice_webhook_url: Some(format!("http://{addr}/invoices")),
        webhook: WebhookOptions {
            previous_secrets: PREVIOUS.iter().map(|s| (*s).to_owned()).collect(),
            ..WebhookOptions::default()
        },
        ..ErpConfig::new(format!("http://{addr}/events"), CURRENT)
    };

    let dir = tempfile::tempdir()?;
    let mut inbox = Inbox::open(&dir.path().join("inbox.db"))?;
    inbox.enable_invoice_followups();
    let events = events();
    let site = SiteId::new("dc-north")?;
    inbox.store_batch(
        &site,
        &Batch {
            v: 1,
            device: DeviceId::new("hh-01")?,
            epoch: 2,
            first_held: 1,
            events: events.iter().map(|(e, _)| e.clone()).collect(),
            shed: Vec::new(),
        },
        0,
    )?;
    let inbox = InboxHandle::new(inbox);

    let (tx, mut rx) = mpsc::channel(16);
    tokio::spawn(async move { while rx.recv().await.is_some() {} });
    let delivery = Arc::new(Delivery::new(&cfg, inbox.clone(), tx)?);
    let notifier = InvoiceNotifier::from_config(&cfg, inbox.clone())?
        .ok_or_else(|| anyhow!("invoice_webhook_url is set"))?;
    let trigger = ShutdownTrigger::new();
    let delivering =
        tokio::spawn(Arc::clone(&delivery).run(Arc::new(Notify::new()), trigger.subscribe()));
    // Woken by delivery when the booked proof of delivery queues its
    // follow-up, as `dockline_collector::run` wires it.
    let notifying = tokio::spawn(notifier.run(delivery.followup_wake(), trigger.subscribe()));
    wait_for(
        "four events and one invoice.ready posted",
        Duration::from_secs(15),
        || log.lock().expect("lock").len() >= 5,
    )
    .await;
    trigger.trigger();
    delivering.await?;
    notifying.await?;

    let captured = log.lock().expect("lock").clone();
    let pod_id = EventId([3; 16]).to_string();
    let mut requests = Vec::new();
    for c in &captured {
        let expect = if c.path == "/invoices" {
            json!({
                "id": format!("invoice-{pod_id}"),
                "source": "/dockline/dc-north/collector",
                "type": "io.dockline.invoice.ready",
                "subject": "SO-1001",
                "time_ms": null,
                "extensions": {},
                "data": {"order": "SO-1001", "pod_event_id": pod_id, "pod_document": "WH/OUT/0042",
                         "device": "hh-01", "received_by": "A. Jones", "pieces": 3},
            })
        } else {
            let id = c
                .headers
                .get("webhook-id")
                .ok_or_else(|| anyhow!("no webhook-id"))?;
            let (env, data) = events
                .iter()
                .find(|(e, _)| &e.id.to_string() == id)
                .ok_or_else(|| anyhow!("webhook-id {id} is none of the stored events"))?;
            let Payload::Event(event) = &env.payload else {
                bail!("stored only business events");
            };
            json!({
                "id": id,
                "source": "/dockline/dc-north/hh-01",
                "type": format!("io.dockline.{}", event.detail.kind_name()),
                "subject": event.refs.order,
                "time_ms": env.captured_ms,
                "extensions": {"docklinedevice": "hh-01", "docklineseq": env.seq, "docklineepoch": 2},
                "data": data,
            })
        };
        requests.push(json!({
            "path": c.path,
            "headers": c.headers,
            "body_b64": BASE64.encode(&c.body),
            "expect": expect,
        }));
    }
    assert_eq!(
        captured.iter().filter(|c| c.path == "/events").count(),
        4,
        "each event posted once (all answered 201)"
    );
    assert_eq!(captured.iter().filter(|c| c.path == "/invoices").count(), 1);
    let report = check(&python, &requests)?;
    eprintln!("{test}: {report}");
    assert!(report.starts_with("verified 5 requests"), "{report}");
    Ok(())
}

async fn capture_slowly(
    State(log): State<Log>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, &'static str) {
    // Slow enough that the ready events of other lanes form a batch.
    tokio::time::sleep(Duration::from_millis(40)).await;
    capture(State(log), uri, headers, body).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_cloudevents_verify_with_standardwebhooks_and_parse_with_cloudevents() -> Result<()>
{
    let test = "batched_cloudevents_verify_with_standardwebhooks_and_parse_with_cloudevents";
    let Some(python) = python(test)? else {
        return Ok(());
    };
    let log: Log = Arc::default();
    let app = Router::new()
        .route("/batch", post(capture_slowly))
        .with_state(Arc::clone(&log));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    let cfg = ErpConfig {
        timeout_ms: 2000,
        retry_min_ms: 10,
        retry_max_ms: 50,
        lane_park_max_ms: 50,
        concurrency: 1,
        webhook: WebhookOptions {
            previous_secrets: PREVIOUS.iter().map(|s| (*s).to_owned()).collect(),
            batch_max: 4,
            ..WebhookOptions::default()
        },
        ..ErpConfig::new(format!("http://{addr}/batch"), CURRENT)
    };
    // The four events of the structured test, plus picks in four more
    // lanes: six lanes ready at once, so at least one batch holds several.
    let mut events = events();
    for (i, order) in ["SO-3003", "SO-3004", "SO-3005", "SO-3006"]
        .into_iter()
        .enumerate()
    {
        let seq = 5 + i as u64;
        events.push((
            envelope(
                seq,
                order,
                EventDetail::Picked {
                    item: "04012345678901".into(),
                    quantity: 1,
                    lot: None,
                },
            ),
            json!({"kind": "picked", "quantity": 1, "refs": {"order": order}}),
        ));
    }
    let dir = tempfile::tempdir()?;
    let mut inbox = Inbox::open(&dir.path().join("inbox.db"))?;
    let site = SiteId::new("dc-north")?;
    inbox.store_batch(
        &site,
        &Batch {
            v: 1,
            device: DeviceId::new("hh-01")?,
            epoch: 2,
            first_held: 1,
            events: events.iter().map(|(e, _)| e.clone()).collect(),
            shed: Vec::new(),
        },
        0,
    )?;
    let inbox = InboxHandle::new(inbox);
    let (tx, mut rx) = mpsc::channel(16);
    tokio::spawn(async move { while rx.recv().await.is_some() {} });
    let delivery = Arc::new(Delivery::new(&cfg, inbox.clone(), tx)?);
    let trigger = ShutdownTrigger::new();
    let delivering =
        tokio::spawn(Arc::clone(&delivery).run(Arc::new(Notify::new()), trigger.subscribe()));
    let count = |log: &Log| -> usize {
        log.lock()
            .expect("lock")
            .iter()
            .map(|c| {
                serde_json::from_slice::<Vec<Value>>(&c.body)
                    .map(|v| v.len())
                    .unwrap_or(0)
            })
            .sum()
    };
    wait_for(
        "all events posted in batches",
        Duration::from_secs(15),
        || count(&log) >= events.len(),
    )
    .await;
    trigger.trigger();
    delivering.await?;

    let captured = log.lock().expect("lock").clone();
    let mut requests = Vec::new();
    let mut largest = 0;
    for c in &captured {
        let elements: Vec<Value> = serde_json::from_slice(&c.body)
            .with_context(|| format!("batch body is not a JSON array: {:?}", c.headers))?;
        largest = largest.max(elements.len());
        let mut expect = Vec::new();
        for element in &elements {
            let id = element["id"].as_str().ok_or_else(|| anyhow!("no id"))?;
            let (env, data) = events
                .iter()
                .find(|(e, _)| e.id.to_string() == id)
                .ok_or_else(|| anyhow!("{id} is none of the stored events"))?;
            let Payload::Event(event) = &env.payload else {
                bail!("stored only business events");
            };
            expect.push(json!({
                "id": id,
                "source": "/dockline/dc-north/hh-01",
                "type": format!("io.dockline.{}", event.detail.kind_name()),
                "subject": event.refs.order,
                "time_ms": env.captured_ms,
                "extensions": {"docklinedevice": "hh-01", "docklineseq": env.seq, "docklineepoch": 2},
                "data": data,
            }));
        }
        requests.push(json!({
            "path": c.path,
            "headers": c.headers,
            "body_b64": BASE64.encode(&c.body),
            "expect": expect,
        }));
    }
    assert!(largest >= 2, "a batch of several events formed: {largest}");
    assert_eq!(count(&log), events.len(), "each event posted once");
    let report = check(&python, &requests)?;
    eprintln!("{test}: {report} (largest batch {largest})");
    assert!(
        report.starts_with(&format!("verified {} requests", captured.len())),
        "{report}"
    );
    Ok(())
}
