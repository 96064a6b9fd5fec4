//! Proof-of-delivery media through the webhook adapter, as an ERP receiving
//! the requests sees them (a loopback receiver on 127.0.0.1:0 that keeps
//! every request and "attaches" each `webhook-id` once, behind a proxy that
//! can lose a response after the receiver took the request):
//! - each medium of a `delivered` event is its own signed CloudEvent
//!   (`io.dockline.media`), sent before the event's own, with `dataref` the
//!   collector's signed link (it verifies with the collector's key and opens
//!   `/v1/media/{hex}` of exactly that medium), `datacontenttype` the image
//!   type and the hash, role and event id as extension attributes;
//! - a medium up to `inline_max_bytes` also carries its bytes
//!   (`data_base64`), a larger one only the link; without a link key every
//!   medium goes inline and none has a `dataref`;
//! - a lost response to the event makes delivery retry: every medium and
//!   the event come again with the same `webhook-id` and `Idempotency-Key`,
//!   so the receiver attaches each medium once;
//! - the event's own CloudEvent lists its media (hash, role, dataref) and,
//!   when their wait ran out, `media_missing` and a note;
//! - a refused medium stops the attempt before the event is sent;
//! - PyPI `standardwebhooks` verifies every request and PyPI `cloudevents`
//!   (classic and 2.x core) parses it, the bytes of an inline medium
//!   included (`DOCKLINE_TEST_WEBHOOK_PYTHON`, as `webhook_interop.rs`;
//!   SKIP line without it).

#[path = "support/erp_media.rs"]
mod erp_media;
#[path = "support/lost_response.rs"]
mod lost_response;
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, anyhow, bail};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use dockline_collector::delivery::policy::Decision;
use dockline_collector::erp::outcome::AttemptOutcome;
use dockline_collector::erp::webhook::WebhookAdapter;
use dockline_collector::erp::{Attempt, ErpConfig, ErpMediaOptions};
use dockline_collector::media::ErpMedium;
use dockline_collector::media::link::MediaLinks;
use dockline_protocol::media::MediaHash;
use erp_media::{attempt_with, delivered, photo, reference, signature};
use lost_response::LostResponseProxy;
use serde_json::{Value, json};

const SECRET: &str = "whsec_ZG9ja2xpbmUtbWVkaWEtd2ViaG9vay10ZXN0LWtleQ==";
const LINK_KEY: [u8; 32] = [42; 32];
const PUBLIC_URL: &str = "https://collector.example:8443";

/// One request as the receiver kept it.
#[derive(Debug, Clone)]
struct Got {
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
}

impl Got {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
    fn id(&self) -> String {
        self.headers.get("webhook-id").cloned().unwrap_or_default()
    }
}

#[derive(Default)]
struct Erp {
    /// Every request, in order.
    seen: Vec<Got>,
    /// `webhook-id`s taken (an ERP that honours them attaches once).
    taken: BTreeSet<String>,
    /// Media attached, by hash: how many times.
    attached: BTreeMap<String, u32>,
    /// Answer media with this status (none: 201).
    refuse_media: Option<u16>,
}

type Shared = Arc<Mutex<Erp>>;

async fn receive(State(erp): State<Shared>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let headers: BTreeMap<String, String> = headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let got = Got {
        headers,
        body: body.to_vec(),
    };
    let mut erp = erp.lock().expect("lock");
    let v = got.json();
    erp.seen.push(got.clone());
    if v["type"] == "io.dockline.media" {
        if let Some(status) = erp.refuse_media {
            return StatusCode::from_u16(status).expect("status");
        }
        if erp.taken.insert(got.id()) {
            let hash = v["docklinehash"].as_str().unwrap_or_default().to_owned();
            *erp.attached.entry(hash).or_default() += 1;
        }
        return StatusCode::CREATED;
    }
    erp.taken.insert(got.id());
    StatusCode::CREATED
}

async fn start() -> (Shared, LostResponseProxy) {
    let erp: Shared = Arc::default();
    let app = Router::new()
        .route("/hooks", post(receive))
        .with_state(Arc::clone(&erp));
    let addr = support::serve(app).await;
    let proxy = LostResponseProxy::start(addr).await.expect("proxy");
    (erp, proxy)
}

fn links() -> MediaLinks {
    MediaLinks::new(&LINK_KEY, PUBLIC_URL, 3600).expect("links")
}

fn adapter(proxy: &LostResponseProxy, media: ErpMediaOptions) -> WebhookAdapter {
    let cfg = ErpConfig {
        timeout_ms: 5000,
        ..ErpConfig::new(format!("http://{}/hooks", proxy.addr()), SECRET)
    };
    WebhookAdapter::new(&cfg)
        .expect("adapter")
        .with_media(media)
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// Checks `dataref` is a link to exactly `hash` that the collector's key
/// verifies now.
fn check_link(dataref: &str, hash: &MediaHash) {
    let (path, query) = dataref.split_once('?').expect("a query");
    assert_eq!(path, format!("{PUBLIC_URL}/v1/media/{hash}"), "{dataref}");
    let mut exp = 0;
    let mut sig = "";
    for pair in query.split('&') {
        match pair.split_once('=').expect("k=v") {
            ("exp", v) => exp = v.parse().expect("exp"),
            ("sig", v) => sig = v,
            _ => {}
        }
    }
    assert!(exp > now_secs(), "the link is valid for a while: {dataref}");
    links()
        .verify(hash, exp, sig, now_secs())
        .expect("the collector's key verifies the link");
    let other = MediaHash::of(b"another medium");
    assert!(links().verify(&other, exp, sig, now_secs()).is_err());
}

fn booked(webhook: &WebhookAdapter, a: &Attempt) -> bool {
    matches!(support::decide(webhook, a), Decision::Booked { .. })
}

#[tokio::test]
async fn media_go_before_their_event_once_each_through_a_lost_response() -> Result<()> {
    let (erp, proxy) = start().await;
    let webhook = adapter(
        &proxy,
        ErpMediaOptions {
            links: Some(links()),
            inline_max_bytes: 4096,
        },
    );
    let sig = signature(900, 1);
    let pic = photo(200_000, 2);
    let env = delivered(
        "hh-media-wh1",
        7,
        "SO-MW-1",
        Some(&sig.hash),
        Some(&pic.hash),
    );
    let media = [sig.clone(), pic.clone()];

    // First attempt: both media taken, the event's answer lost.
    proxy.lose_response_containing("io.dockline.delivered");
    let first = attempt_with(&webhook, "dc-media", &env, &media, &[]).await;
    assert!(
        matches!(first.outcome, AttemptOutcome::Transport { .. }),
        "{first:?}"
    );
    assert!(
        !booked(&webhook, &first),
        "a lost answer is retried: {first:?}"
    );
    // The retry: the same three requests, the event booked.
    let second = attempt_with(&webhook, "dc-media", &env, &media, &[]).await;
    assert!(booked(&webhook, &second), "{second:?}");

    let erp = erp.lock().expect("lock");
    let seen = erp.seen.clone();
    assert_eq!(seen.len(), 6, "3 requests per attempt: {seen:#?}");
    let types: Vec<String> = seen
        .iter()
        .map(|g| g.json()["type"].as_str().unwrap_or_default().to_owned())
        .collect();
    let attempt_types = [
        "io.dockline.media",
        "io.dockline.media",
        "io.dockline.delivered",
    ];
    assert_eq!(types[..3], attempt_types, "media before the event");
    assert_eq!(types[3..], attempt_types, "media before the event");
    // Same keys on both attempts.
    for i in 0..3 {
        assert_eq!(seen[i].id(), seen[i + 3].id(), "request {i}");
        assert_eq!(
            seen[i].headers["idempotency-key"],
            seen[i + 3].headers["idempotency-key"],
            "request {i}"
        );
        assert_eq!(
            seen[i].headers["idempotency-key"],
            format!("\"{}\"", seen[i].id())
        );
        assert_eq!(seen[i].json()["id"], json!(seen[i].id()));
    }
    let ids: BTreeSet<String> = seen.iter().map(Got::id).collect();
    assert_eq!(ids.len(), 3, "three distinct keys: {ids:?}");
    assert_eq!(
        erp.attached,
        BTreeMap::from([
            (format!("sha256:{}", sig.hash), 1),
            (format!("sha256:{}", pic.hash), 1)
        ]),
        "each medium attached once"
    );

    // The media CloudEvents.
    let event_id = env.id.to_string();
    for (got, m) in [(&seen[3], &sig), (&seen[4], &pic)] {
        let v = got.json();
        assert_eq!(v["specversion"], "1.0");
        assert_eq!(v["subject"], "SO-MW-1");
        assert_eq!(v["source"], "/dockline/dc-media/hh-media-wh1");
        assert_eq!(v["datacontenttype"], m.media_type.content_type());
        assert_eq!(v["docklinehash"], json!(format!("sha256:{}", m.hash)));
        assert_eq!(v["docklinerole"], m.role.name());
        assert_eq!(v["docklineevent"], json!(event_id));
        assert_eq!(v["docklinesize"], json!(m.bytes.len()));
        assert!(got.id().starts_with(&event_id), "{}", got.id());
        check_link(v["dataref"].as_str().expect("a dataref"), &m.hash);
        assert!(v.get("data").is_none(), "binary data goes as data_base64");
    }
    // The 900-byte signature is inline, the 200 kB photo only linked.
    let inline = BASE64
        .decode(seen[3].json()["data_base64"].as_str().expect("inline"))
        .expect("base64");
    assert_eq!(&inline[..], &sig.bytes[..]);
    assert!(seen[4].json().get("data_base64").is_none());

    // The event lists its media.
    let ev = seen[5].json();
    assert_eq!(ev["id"], json!(event_id));
    let listed = ev["data"]["media"].as_array().expect("data.media");
    assert_eq!(listed.len(), 2);
    for (entry, m, request) in [(&listed[0], &sig, &seen[3]), (&listed[1], &pic, &seen[4])] {
        assert_eq!(entry["hash"], json!(format!("sha256:{}", m.hash)));
        assert_eq!(entry["role"], m.role.name());
        assert_eq!(entry["cloudevent"], json!(request.id()));
        check_link(entry["dataref"].as_str().expect("dataref"), &m.hash);
    }
    assert!(ev["data"].get("media_missing").is_none());
    let requests = seen.clone();
    drop(erp);
    oracle(
        "media_go_before_their_event_once_each_through_a_lost_response",
        &requests,
        &[&sig, &pic],
    )
}

#[tokio::test]
async fn without_a_link_key_media_go_inline_and_missing_media_are_flagged() -> Result<()> {
    let (erp, proxy) = start().await;
    let webhook = adapter(&proxy, ErpMediaOptions::default());
    let sig = signature(300, 3);
    let pic = photo(50_000, 4);
    let env = delivered(
        "hh-media-wh2",
        9,
        "SO-MW-2",
        Some(&sig.hash),
        Some(&pic.hash),
    );
    // The signature arrived, the photo's wait ran out.
    let missing = [reference(&pic)];
    let a = attempt_with(&webhook, "dc-media", &env, &[sig.clone()], &missing).await;
    assert!(booked(&webhook, &a), "{a:?}");
    let seen = erp.lock().expect("lock").seen.clone();
    assert_eq!(seen.len(), 2, "the signature, then the event");
    let m = seen[0].json();
    assert_eq!(m["type"], "io.dockline.media");
    assert!(m.get("dataref").is_none(), "no link without a key");
    let inline = BASE64
        .decode(m["data_base64"].as_str().expect("inline"))
        .expect("base64");
    assert_eq!(&inline[..], &sig.bytes[..]);
    let ev = seen[1].json();
    assert_eq!(ev["type"], "io.dockline.delivered");
    assert_eq!(
        ev["data"]["media_missing"],
        json!([{ "hash": format!("sha256:{}", pic.hash), "role": "photo" }])
    );
    let note = ev["data"]["media_note"].as_str().expect("a note");
    assert!(
        note.contains("MEDIA MISSING") && note.contains(&pic.hash.to_string()),
        "{note}"
    );
    assert!(ev["data"]["media"][0].get("dataref").is_none());

    // Also a large photo goes inline when there is no link.
    let big = photo(300_000, 5);
    let env = delivered("hh-media-wh2", 10, "SO-MW-2", None, Some(&big.hash));
    let a = attempt_with(&webhook, "dc-media", &env, &[big.clone()], &[]).await;
    assert!(booked(&webhook, &a), "{a:?}");
    let seen = erp.lock().expect("lock").seen.clone();
    let m = seen[2].json();
    let inline = BASE64
        .decode(m["data_base64"].as_str().expect("inline"))
        .expect("base64");
    assert_eq!(&inline[..], &big.bytes[..]);
    oracle(
        "without_a_link_key_media_go_inline_and_missing_media_are_flagged",
        &seen,
        &[&sig, &big],
    )
}

#[tokio::test]
async fn a_refused_medium_stops_the_attempt_before_the_event() {
    let (erp, proxy) = start().await;
    erp.lock().expect("lock").refuse_media = Some(503);
    let webhook = adapter(
        &proxy,
        ErpMediaOptions {
            links: Some(links()),
            inline_max_bytes: 0,
        },
    );
    let pic = photo(1000, 6);
    let env = delivered("hh-media-wh3", 3, "SO-MW-3", None, Some(&pic.hash));
    let a = attempt_with(&webhook, "dc-media", &env, &[pic.clone()], &[]).await;
    match &a.outcome {
        AttemptOutcome::Response(r) => assert_eq!(r.status, 503, "{a:?}"),
        other => panic!("expected the medium's 503, got {other:?}"),
    }
    assert!(a.request.contains("photo"), "{}", a.request);
    assert!(!booked(&webhook, &a));
    let seen = erp.lock().expect("lock").seen.clone();
    assert_eq!(seen.len(), 1, "the event was not sent: {seen:#?}");
    // No link bytes inline with inline_max_bytes = 0.
    assert!(seen[0].json().get("data_base64").is_none());
}

// ---------------------------------------------------------------- oracle

const PYTHON_VAR: &str = "DOCKLINE_TEST_WEBHOOK_PYTHON";

/// Reads `{"secret", "requests": [{headers, body_b64}], "media": {hash:
/// bytes_b64}}`; every request must verify with `standardwebhooks` and parse
/// with both `cloudevents` APIs; a media event's inline data must be the
/// medium's bytes and its hash their SHA-256.
const ORACLE: &str = r#"
import base64, hashlib, json, sys
try:
    from standardwebhooks.webhooks import Webhook
    from cloudevents.v1.http import from_http as classic_from_http
    from cloudevents.core.bindings.http import HTTPMessage, from_http as core_from_http
    from cloudevents.core.formats.json import JSONFormat
    from cloudevents.core.v1.event import CloudEvent as CoreEvent
except ImportError as e:
    print(f"cannot import standardwebhooks / cloudevents: {e}", file=sys.stderr)
    sys.exit(3)
spec = json.load(sys.stdin)
wh = Webhook(spec["secret"])
media = {h: base64.b64decode(b) for h, b in spec["media"].items()}
n = 0
for r in spec["requests"]:
    headers, body = r["headers"], base64.b64decode(r["body_b64"])
    parsed = wh.verify(body, headers)
    assert parsed["id"] == headers["webhook-id"], parsed["id"]
    classic = classic_from_http(headers, body)
    core = core_from_http(HTTPMessage(headers=headers, body=body), JSONFormat(), CoreEvent)
    for sdk, attrs, data in (("classic", classic.get_attributes(), classic.get_data()),
                             ("core", core.get_attributes(), core.get_data())):
        at = f'{headers["webhook-id"]} ({sdk})'
        assert attrs["id"] == headers["webhook-id"], at
        if attrs["type"] != "io.dockline.media":
            assert attrs["datacontenttype"] == "application/json", at
            continue
        h = attrs["docklinehash"]
        assert h.startswith("sha256:"), at
        assert attrs["datacontenttype"] in ("image/png", "image/jpeg"), at
        assert attrs["docklinerole"] in ("signature", "photo"), at
        if "data_base64" in json.loads(body):
            assert isinstance(data, (bytes, bytearray)), f"{at}: data is {type(data).__name__}"
            assert hashlib.sha256(data).hexdigest() == h[7:], f"{at}: inline bytes do not hash to {h}"
            assert bytes(data) == media[h], f"{at}: inline bytes differ"
            assert int(attrs["docklinesize"]) == len(data), at
        else:
            assert data is None, f"{at}: data without data_base64"
            assert attrs.get("dataref", "").startswith("http"), f"{at}: no dataref"
    n += 1
print(f"oracle: {n} requests verified (standardwebhooks) and parsed (cloudevents classic + core)")
"#;

fn oracle(test: &str, requests: &[Got], media: &[&ErpMedium]) -> Result<()> {
    let Ok(python) = std::env::var(PYTHON_VAR) else {
        eprintln!(
            "SKIP {test} (oracle part): set {PYTHON_VAR} to a Python with standardwebhooks and cloudevents (bash .ci/run makes target/webhook-venv)"
        );
        return Ok(());
    };
    let spec = json!({
        "secret": SECRET,
        "requests": requests.iter().map(|g| json!({
            "headers": g.headers,
            "body_b64": BASE64.encode(&g.body),
        })).collect::<Vec<_>>(),
        "media": media.iter().map(|m| (format!("sha256:{}", m.hash), json!(BASE64.encode(&m.bytes[..]))))
            .collect::<serde_json::Map<String, Value>>(),
    });
    let mut child = Command::new(&python)
        .arg("-c")
        .arg(ORACLE)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {PYTHON_VAR}={python}"))?;
    child
        .stdin
        .take()
        .ok_or_else(|| anyhow!("no stdin"))?
        .write_all(&serde_json::to_vec(&spec)?)?;
    let out = child.wait_with_output()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() {
        bail!("the webhook oracle refused the requests: {text}");
    }
    eprintln!("{}", text.trim());
    Ok(())
}
