//! The EPCIS export checked against GS1's own artefacts, and the capture
//! client against an in-test repository.
//!
//! Schema tests: every event kind (and every exception kind, with and without
//! GS1 master data) is exported and validated against GS1's EPCIS 2.0 JSON
//! Schema (`../shared/data/epcis/schema/EPCIS-JSON-Schema.json`, draft-07)
//! with format checking on, by Python's `jsonschema`. The same validator must
//! reject broken documents (a `bizStep` of `pickingX`, a non-URI EPC, a bad
//! time) and must agree with the data README on GS1's 46 examples (42 valid,
//! 4 invalid as published), which proves it has teeth. The validator is the
//! Python named by `DOCKLINE_TEST_EPCIS_PYTHON` (`bash .ci/run` makes one in
//! `target/epcis-venv`), else `python3` if it has the `uri` and `date-time`
//! format checkers; otherwise these tests print a SKIP line.
//!
//! Capture tests: a small axum server on 127.0.0.1:0 records what it
//! receives and answers as an EPCIS 2.0 repository would (202 + Location,
//! problem documents, Retry-After); the client's errors are fed to the
//! delivery policy to show how an adapter would use them.

#[path = "support/lost_response.rs"]
mod lost_response;

use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use anyhow::{Context as _, Result, anyhow, bail, ensure};
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use dockline_collector::delivery::backoff::{Backoff, FixedJitter};
use dockline_collector::delivery::policy::{self, Decision, EndpointView, History, Policy};
use dockline_collector::erp::epcis::{
    CaptureClient, CaptureConfig, CaptureError, CaptureFailure, Contents, ErrorBehaviour,
    ExportConfig, Exporter, ItemCount,
};
use dockline_collector::erp::outcome::{Credentials, FailureClass, TransportError};
use dockline_protocol::{
    BusinessEvent, DeviceId, Envelope, EventDetail, EventId, ExceptionKind, Fix, FixMode, Payload,
    Priority, ProofOfDelivery, References, TimeSource, Weight, WeightUnit,
};
use lost_response::LostResponseProxy;
use serde_json::{Value, json};

// ---------------------------------------------------------------- validator

/// Validates documents given as a JSON array on stdin against the schema
/// named in argv[1]; prints one list of error lines per document. Exits 3
/// when format checkers are missing (then `pickingX` would pass).
const VALIDATOR: &str = r#"
import json, sys
from jsonschema import Draft7Validator
checker = Draft7Validator.FORMAT_CHECKER
missing = [f for f in ("uri", "date-time") if f not in checker.checkers]
if missing:
    print("jsonschema has no format checker for: " + ", ".join(missing))
    sys.exit(3)
with open(sys.argv[1], encoding="utf-8") as f:
    schema = json.load(f)
validator = Draft7Validator(schema, format_checker=checker)
out = []
for doc in json.load(sys.stdin):
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.absolute_path)))
    out.append(["/" + "/".join(map(str, e.absolute_path)) + ": " + e.message[:400] for e in errors])
print(json.dumps(out))
"#;

/// The shared data folder (`../shared/data` from the project root).
fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data")
}

struct Validator {
    python: String,
    schema: PathBuf,
}

impl Validator {
    /// The validator, or `None` after printing why `test` is skipped.
    fn find(test: &str) -> Result<Option<Self>> {
        let schema = data_dir().join("epcis/schema/EPCIS-JSON-Schema.json");
        if !schema.is_file() {
            eprintln!(
                "SKIP {test}: {} is absent (GS1 EPCIS schema, external test data under ../shared/data/)",
                schema.display()
            );
            return Ok(None);
        }
        if let Ok(python) = std::env::var("DOCKLINE_TEST_EPCIS_PYTHON") {
            // Set by CI: it must work, or the suite would pass without teeth.
            let v = Self { python, schema };
            v.validate(&[]).with_context(|| {
                format!(
                    "DOCKLINE_TEST_EPCIS_PYTHON={} cannot validate; rerun the EPCIS block of .ci/run",
                    v.python
                )
            })?;
            return Ok(Some(v));
        }
        let v = Self {
            python: "python3".into(),
            schema,
        };
        match v.validate(&[]) {
            Ok(_) => Ok(Some(v)),
            Err(e) => {
                eprintln!(
                    "SKIP {test}: no Python with jsonschema format checking ({e:#}); set DOCKLINE_TEST_EPCIS_PYTHON to one with `jsonschema[format-nongpl]` (bash .ci/run makes target/epcis-venv)"
                );
                Ok(None)
            }
        }
    }

    /// The schema errors of each document (empty = valid).
    fn validate(&self, docs: &[Value]) -> Result<Vec<Vec<String>>> {
        let mut child = Command::new(&self.python)
            .arg("-c")
            .arg(VALIDATOR)
            .arg(&self.schema)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot run {}", self.python))?;
        let input = serde_json::to_vec(docs)?;
        child
            .stdin
            .take()
            .ok_or_else(|| anyhow!("no stdin"))?
            .write_all(&input)?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "validator exited with {}: {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout).trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let errors: Vec<Vec<String>> = serde_json::from_slice(&out.stdout)?;
        ensure!(errors.len() == docs.len(), "validator skipped documents");
        Ok(errors)
    }
}

// ---------------------------------------------------------------- events

const CREATED_MS: i64 = 1_795_939_300_000;

fn gs1_config() -> ExportConfig {
    ExportConfig {
        site: "BRU1".into(),
        site_gln: Some("4012345000016".into()),
        party_gln: Some("4012345000009".into()),
        company_prefixes: vec!["4012345".into(), "0614141".into()],
        private_base: "https://wms.example.com/id/".into(),
        utc_offset: "+01:00".into(),
        extension_namespace: None,
    }
}

/// No GLNs, no prefixes: private URIs and Digital Links only.
fn bare_config() -> ExportConfig {
    ExportConfig {
        site_gln: None,
        party_gln: None,
        company_prefixes: vec![],
        utc_offset: "-05:00".into(),
        extension_namespace: Some("https://wms.example.com/ns#".into()),
        ..gs1_config()
    }
}

fn fix() -> Fix {
    Fix {
        lat: 50.8467,
        lon: 4.3525,
        speed_mps: Some(0.0),
        course_deg: None,
        mode: FixMode::Fix3d,
        satellites: Some(9),
        hdop: Some(0.9),
    }
}

fn envelope(seq: u64, detail: EventDetail, refs: References) -> Envelope {
    let mut id = [0u8; 16];
    id[0] = 0x01;
    id[6] = 0x70; // a v7-looking UUID
    id[15] = u8::try_from(seq % 256).unwrap_or(0);
    Envelope {
        v: 1,
        device: DeviceId::new("hh-017").expect("valid id"),
        epoch: 1,
        seq,
        id: EventId(id),
        captured_ms: 1_795_939_272_000 + i64::try_from(seq).unwrap_or(0) * 60_000,
        time_source: TimeSource::Gnss,
        priority: Priority::MustDeliver,
        payload: Payload::Event(BusinessEvent { detail, refs }),
    }
}

fn refs(sscc: Option<&str>, location: Option<&str>, stop: Option<&str>) -> References {
    References {
        order: Some("SO-42".into()),
        shipment: Some("DN-2026/0042".into()),
        stop: stop.map(Into::into),
        sscc: sscc.map(Into::into),
        location: location.map(Into::into),
        operator: None,
    }
}

const SSCC: &str = "340123450000000420";
const FOREIGN_SSCC: &str = "354123450000000014";

/// Every event kind, in the variants that change the EPCIS shape, with the
/// contents passed for `packed`.
fn journey() -> Vec<(Envelope, Contents)> {
    let none = Contents::default;
    let contents = Contents {
        units: vec![FOREIGN_SSCC.into()],
        items: vec![
            ItemCount {
                item: "4012345111118".into(),
                lot: Some("L2026/11".into()),
                quantity: 4,
            },
            ItemCount {
                item: "SKU-77".into(),
                lot: None,
                quantity: 2,
            },
        ],
    };
    let picked = |item: &str, lot: Option<&str>| EventDetail::Picked {
        item: item.into(),
        quantity: 4,
        lot: lot.map(Into::into),
    };
    let mut list = vec![
        (
            envelope(
                1,
                picked("4012345111118", None),
                refs(None, Some("A0103"), None),
            ),
            none(),
        ),
        (
            envelope(
                2,
                picked("4012345111118", Some("L2026/11")),
                refs(None, None, None),
            ),
            none(),
        ),
        (
            envelope(
                3,
                picked("5412345111115", None),
                refs(None, Some("4012345000016"), None),
            ),
            none(),
        ),
        (
            envelope(
                4,
                picked("96385074", Some("lot 7 #b")),
                refs(None, None, None),
            ),
            none(),
        ),
        (
            envelope(5, picked("SKU-77", None), refs(None, Some("BIN 3/4"), None)),
            none(),
        ),
        (
            envelope(
                6,
                EventDetail::Packed {
                    quantity: 6,
                    weight: Some(Weight {
                        value: 12.4,
                        unit: WeightUnit::Kg,
                    }),
                },
                refs(Some(SSCC), Some("PACK1"), None),
            ),
            contents,
        ),
        (
            envelope(
                7,
                EventDetail::Packed {
                    quantity: 6,
                    weight: Some(Weight {
                        value: 27.0,
                        unit: WeightUnit::Lb,
                    }),
                },
                refs(Some(SSCC), None, None),
            ),
            none(),
        ),
        (
            envelope(
                8,
                EventDetail::Packed {
                    quantity: 1,
                    weight: None,
                },
                refs(None, None, None),
            ),
            none(),
        ),
        (
            envelope(
                9,
                EventDetail::Loaded {
                    vehicle: "1-ABC-123".into(),
                },
                refs(Some(SSCC), Some("DOOR3"), None),
            ),
            none(),
        ),
        (
            envelope(
                10,
                EventDetail::Loaded {
                    vehicle: "1-ABC-123".into(),
                },
                refs(None, None, None),
            ),
            none(),
        ),
        (
            envelope(
                11,
                EventDetail::Departed {
                    vehicle: "1-ABC-123".into(),
                    position: Some(fix()),
                },
                refs(Some(SSCC), None, None),
            ),
            none(),
        ),
        (
            envelope(
                12,
                EventDetail::Arrived {
                    vehicle: "1-ABC-123".into(),
                    position: Some(fix()),
                },
                refs(Some(FOREIGN_SSCC), Some("0614141000005"), Some("7")),
            ),
            none(),
        ),
        (
            envelope(
                13,
                EventDetail::Delivered(ProofOfDelivery {
                    received_by: "J. Peeters".into(),
                    pieces: 6,
                    signature_ref: Some("sha256:9f2c4433".into()),
                    photo_ref: Some("pod/DN-2026-0042/photo-1.jpg".into()),
                    position: Some(fix()),
                }),
                refs(Some(SSCC), None, Some("7")),
            ),
            none(),
        ),
        (
            envelope(
                14,
                EventDetail::Delivered(ProofOfDelivery {
                    received_by: "reception".into(),
                    pieces: 1,
                    signature_ref: None,
                    photo_ref: None,
                    position: None,
                }),
                refs(None, Some("CUSTOMER DOCK"), Some("8")),
            ),
            none(),
        ),
    ];
    for (i, kind) in [
        ExceptionKind::ShortPick,
        ExceptionKind::WrongItem,
        ExceptionKind::WeightMismatch,
        ExceptionKind::Damaged,
        ExceptionKind::DeliveryRefused,
        ExceptionKind::NotHome,
        ExceptionKind::Other,
    ]
    .into_iter()
    .enumerate()
    {
        let on_route = matches!(
            kind,
            ExceptionKind::DeliveryRefused | ExceptionKind::NotHome
        );
        let seq = 20 + u64::try_from(i).unwrap_or(0);
        list.push((
            envelope(
                seq,
                EventDetail::Exception {
                    kind,
                    note: if kind == ExceptionKind::Other {
                        String::new()
                    } else {
                        format!("note for {kind:?}")
                    },
                },
                refs(
                    (i % 2 == 0).then_some(SSCC),
                    Some("A0103"),
                    on_route.then_some("9"),
                ),
            ),
            none(),
        ));
    }
    list
}

/// One document per event, for each config.
fn exported() -> Result<Vec<(String, Value)>> {
    let mut docs = Vec::new();
    for (name, config) in [("gs1", gs1_config()), ("bare", bare_config())] {
        let exporter = Exporter::new(&config)?;
        for (envelope, contents) in journey() {
            let doc = exporter.document_for(&envelope, &contents, CREATED_MS)?;
            docs.push((format!("{name} seq {}", envelope.seq), doc));
        }
    }
    Ok(docs)
}

#[test]
fn every_event_kind_validates_against_the_gs1_schema() -> Result<()> {
    let Some(validator) = Validator::find("every_event_kind_validates_against_the_gs1_schema")?
    else {
        return Ok(());
    };
    let docs = exported()?;
    // All events in one document too: the multi-event form must hold.
    let exporter = Exporter::new(&gs1_config())?;
    let mut events = Vec::new();
    for (envelope, contents) in journey() {
        events.push(exporter.event(&envelope, &contents)?);
    }
    let all = exporter.document(events, CREATED_MS)?;

    let mut inputs: Vec<Value> = docs.iter().map(|(_, d)| d.clone()).collect();
    inputs.push(all);
    let results = validator.validate(&inputs)?;
    let failures: Vec<String> = docs
        .iter()
        .map(|(name, _)| name.as_str())
        .chain(["all events in one document"])
        .zip(&results)
        .filter(|(_, errors)| !errors.is_empty())
        .map(|(name, errors)| format!("{name}:\n  {}", errors.join("\n  ")))
        .collect();
    assert!(
        failures.is_empty(),
        "documents the GS1 schema rejects:\n{}",
        failures.join("\n")
    );

    // The journey covers every dockline kind and both EPCIS event types.
    let mut steps = BTreeSet::new();
    let mut types = BTreeSet::new();
    for (_, doc) in &docs {
        let e = &doc["epcisBody"]["eventList"][0];
        steps.insert(e["bizStep"].as_str().unwrap_or("?").to_string());
        types.insert(e["type"].as_str().unwrap_or("?").to_string());
    }
    let want: BTreeSet<String> = [
        "picking",
        "packing",
        "loading",
        "departing",
        "arriving",
        "accepting",
        "inspecting",
        "holding",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(steps, want);
    assert_eq!(
        types,
        ["AggregationEvent", "ObjectEvent"]
            .into_iter()
            .map(String::from)
            .collect()
    );
    Ok(())
}

#[test]
fn broken_documents_fail_the_same_validation() -> Result<()> {
    let Some(validator) = Validator::find("broken_documents_fail_the_same_validation")? else {
        return Ok(());
    };
    let (_, good) = exported()?
        .into_iter()
        .find(|(name, _)| name == "gs1 seq 9")
        .ok_or_else(|| anyhow!("the loaded event is in the journey"))?;
    let broken = |f: &dyn Fn(&mut Value)| {
        let mut doc = good.clone();
        f(&mut doc["epcisBody"]["eventList"][0]);
        doc
    };
    let cases = [
        ("unchanged", good.clone()),
        (
            "bizStep pickingX",
            broken(&|e| e["bizStep"] = json!("pickingX")),
        ),
        (
            "epcList not URIs",
            broken(&|e| e["epcList"] = json!(["order-42"])),
        ),
        (
            "eventTime not a date",
            broken(&|e| e["eventTime"] = json!("yesterday")),
        ),
        (
            "disposition unknown",
            broken(&|e| e["disposition"] = json!("lost_somewhere")),
        ),
        (
            "no eventTimeZoneOffset",
            broken(&|e| {
                if let Some(o) = e.as_object_mut() {
                    o.remove("eventTimeZoneOffset");
                }
            }),
        ),
    ];
    let docs: Vec<Value> = cases.iter().map(|(_, d)| d.clone()).collect();
    let results = validator.validate(&docs)?;
    for ((name, _), errors) in cases.iter().zip(&results) {
        if *name == "unchanged" {
            assert!(errors.is_empty(), "the control document fails: {errors:?}");
        } else {
            assert!(!errors.is_empty(), "{name}: the validator accepted it");
        }
    }
    Ok(())
}

#[test]
fn the_validator_agrees_with_gs1_examples() -> Result<()> {
    let Some(validator) = Validator::find("the_validator_agrees_with_gs1_examples")? else {
        return Ok(());
    };
    let dir = data_dir().join("epcis/examples");
    let mut names = Vec::new();
    let mut docs = Vec::new();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("{}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "jsonld") {
            let text = std::fs::read_to_string(&path)?;
            docs.push(
                serde_json::from_str::<Value>(&text)
                    .with_context(|| format!("{}", path.display()))?,
            );
            names.push(
                path.file_stem()
                    .and_then(|s| s.to_str())
                    .unwrap_or("?")
                    .to_string(),
            );
        }
    }
    ensure!(
        docs.len() == 46,
        "example count changed in {}",
        dir.display()
    );
    // With blank-node ids removed, so each example is also checked on its
    // content (see below).
    let stripped: Vec<Value> = docs
        .iter()
        .map(|d| {
            let mut d = d.clone();
            strip_blank_node_ids(&mut d);
            d
        })
        .collect();
    let all: Vec<Value> = docs.iter().chain(&stripped).cloned().collect();
    let results = validator.validate(&all)?;
    let (as_published, without_blank_ids) = results.split_at(docs.len());

    // The 4 examples the data README lists as invalid as published are
    // rejected: the validator catches GS1's own mistakes.
    let readme_invalid = [
        "Example-TransactionEvents-2020_07_03y",
        "WithFullCombinationOfFields_object_event_all_possible_fields",
        "WithSensorData_SensorDataExample12",
        "WithSensorData_SensorDataExample17",
    ];
    for name in readme_invalid {
        let i = names
            .iter()
            .position(|n| n == name)
            .ok_or_else(|| anyhow!("example {name} is missing"))?;
        assert!(!as_published[i].is_empty(), "{name} passed");
    }
    // The standard's own worked examples (EPCIS 2.0 §9.6) are accepted once
    // their JSON-LD blank-node document id (`"id": "_:document1"`) is gone:
    // `_:` is valid JSON-LD but not an RFC 3986 URI, and the schema gives
    // `id` format `uri`, so with the uri checker on (the one that rejects
    // `pickingX`) every example carrying it fails.
    for name in [
        "Example_9.6.1-ObjectEvent",
        "Example_9.6.2-ObjectEvent",
        "Example_9.6.3-AggregationEvent",
        "Example_9.6.4-TransformationEvent",
    ] {
        let i = names
            .iter()
            .position(|n| n == name)
            .ok_or_else(|| anyhow!("example {name} is missing"))?;
        assert!(
            without_blank_ids[i].is_empty(),
            "{name}: {:?}",
            without_blank_ids[i]
        );
    }
    // The rest, for the record (the data README's "42 valid" was measured
    // without a uri format checker).
    let mut blank_only = 0;
    let mut other = Vec::new();
    for ((name, published), stripped) in names.iter().zip(as_published).zip(without_blank_ids) {
        if published.is_empty() || readme_invalid.contains(&name.as_str()) {
            continue;
        }
        match stripped.first() {
            None => blank_only += 1,
            Some(error) => other.push(format!("{name} ({error})")),
        }
    }
    eprintln!(
        "note: with uri format checking, {blank_only} more GS1 examples fail only on blank-node ids; {} fail on content: {}",
        other.len(),
        other.join("; ")
    );
    Ok(())
}

/// Removes `"id": "_:…"` (JSON-LD blank nodes) everywhere.
fn strip_blank_node_ids(v: &mut Value) {
    match v {
        Value::Object(map) => {
            if map
                .get("id")
                .and_then(Value::as_str)
                .is_some_and(|s| s.starts_with("_:"))
            {
                map.remove("id");
            }
            map.values_mut().for_each(strip_blank_node_ids);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_blank_node_ids),
        _ => {}
    }
}

// ---------------------------------------------------------------- capture

/// What the repository saw.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    headers: HeaderMap,
    body: Vec<u8>,
}

/// The repository's next answer to a capture.
#[derive(Debug, Clone)]
struct Reply {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: String,
}

#[derive(Debug)]
struct Repo {
    seen: Mutex<Vec<Seen>>,
    reply: Mutex<Reply>,
}

impl Repo {
    fn record(&self, method: &str, path: String, headers: HeaderMap, body: &[u8]) {
        if let Ok(mut seen) = self.seen.lock() {
            seen.push(Seen {
                method: method.into(),
                path,
                headers,
                body: body.to_vec(),
            });
        }
    }

    fn answer(&self) -> Response {
        let reply = self.reply.lock().map(|r| r.clone()).unwrap_or(Reply {
            status: 500,
            headers: vec![],
            body: String::new(),
        });
        let mut resp = (
            StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            reply.body,
        )
            .into_response();
        for (name, value) in reply.headers {
            if let Ok(v) = value.parse() {
                resp.headers_mut().insert(name, v);
            }
        }
        resp
    }
}

async fn capture(State(repo): State<Arc<Repo>>, headers: HeaderMap, body: Bytes) -> Response {
    repo.record("POST", "/epcis/capture".into(), headers, &body);
    repo.answer()
}

async fn job(
    State(repo): State<Arc<Repo>>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
) -> Response {
    repo.record("GET", format!("/epcis/capture/{id}"), headers, &[]);
    (
        [("content-type", "application/json")],
        json!({
            "captureID": id,
            "createdAt": "2026-11-29T08:02:00.000Z",
            "finishedAt": "2026-11-29T08:02:01.000Z",
            "running": false,
            "success": true,
            "captureErrorBehaviour": "rollback",
            "errors": [],
        })
        .to_string(),
    )
        .into_response()
}

/// A repository on 127.0.0.1:0 and a client pointed at its REST root.
async fn repository(first: Reply) -> Result<(Arc<Repo>, CaptureClient)> {
    let repo = Arc::new(Repo {
        seen: Mutex::new(Vec::new()),
        reply: Mutex::new(first),
    });
    let app = Router::new()
        .route("/epcis/capture", post(capture))
        .route("/epcis/capture/{id}", get(job))
        .with_state(Arc::clone(&repo));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    let client = CaptureClient::new(&CaptureConfig {
        root: format!("http://{addr}/epcis"),
        error_behaviour: ErrorBehaviour::Rollback,
        timeout: Duration::from_secs(5),
        authorization: Some("Bearer test-token".into()),
    })?;
    Ok((repo, client))
}

fn accepted() -> Reply {
    Reply {
        status: 202,
        headers: vec![("location", "/epcis/capture/cap-0001".into())],
        body: String::new(),
    }
}

fn document() -> Result<Value> {
    let (envelope, contents) = journey()
        .into_iter()
        .next()
        .ok_or_else(|| anyhow!("journey is not empty"))?;
    Ok(Exporter::new(&gs1_config())?.document_for(&envelope, &contents, CREATED_MS)?)
}

fn header<'a>(seen: &'a Seen, name: &str) -> &'a str {
    seen.headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("(missing)")
}

#[tokio::test]
async fn capture_posts_json_ld_with_the_epcis_headers_and_reads_the_job() -> Result<()> {
    let (repo, client) = repository(accepted()).await?;
    let doc = document()?;
    let accepted = client.capture(&doc).await?;
    let root = client
        .capture_url()
        .trim_end_matches("/capture")
        .to_string();
    assert_eq!(accepted.status, 202);
    assert_eq!(accepted.capture_id.as_deref(), Some("cap-0001"));
    assert_eq!(
        accepted.job.as_deref(),
        Some(format!("{root}/capture/cap-0001").as_str())
    );

    let job = client
        .job(accepted.job.as_deref().unwrap_or_default())
        .await?;
    assert!(job.stored(), "{job:?}");
    assert_eq!(job.capture_id.as_deref(), Some("cap-0001"));

    let seen = repo.seen.lock().map_err(|_| anyhow!("lock"))?.clone();
    assert_eq!(seen.len(), 2);
    let post = &seen[0];
    assert_eq!(
        (post.method.as_str(), post.path.as_str()),
        ("POST", "/epcis/capture")
    );
    assert_eq!(header(post, "content-type"), "application/ld+json");
    assert_eq!(header(post, "gs1-epcis-version"), "2.0.0");
    assert_eq!(header(post, "gs1-cbv-version"), "2.0.0");
    assert_eq!(header(post, "gs1-capture-error-behaviour"), "rollback");
    assert_eq!(header(post, "authorization"), "Bearer test-token");
    let sent: Value = serde_json::from_slice(&post.body)?;
    assert_eq!(sent, doc, "the body is the exported document");
    assert_eq!(sent["type"], "EPCISDocument");
    let get = &seen[1];
    assert_eq!(
        (get.method.as_str(), get.path.as_str()),
        ("GET", "/epcis/capture/cap-0001")
    );
    assert_eq!(header(get, "gs1-epcis-version"), "2.0.0");
    Ok(())
}

fn policy() -> Policy {
    Policy {
        backoff: Backoff {
            min: Duration::from_millis(100),
            max: Duration::from_secs(10),
        },
        pause_max: Duration::from_secs(300),
        max_bounded_attempts: 5,
        parked_min: Duration::from_secs(10),
    }
}

fn decide(err: &CaptureError) -> Decision {
    policy::decide(
        &err.attempt_outcome(),
        History {
            attempts: 1,
            bounded: 0,
        },
        EndpointView {
            credentials: Credentials::Fixed,
        },
        &policy(),
        SystemTime::now(),
        &mut FixedJitter(0.5),
    )
}

#[tokio::test]
async fn capture_errors_are_classified_and_drive_the_delivery_policy() -> Result<()> {
    let problem = |exception: &str, status: u16| {
        json!({
            "type": format!("epcisException:{exception}"),
            "title": "refused",
            "status": status,
        })
        .to_string()
    };
    let (repo, client) = repository(accepted()).await?;
    let doc = document()?;
    let cases = [
        (
            400,
            problem("ValidationException", 400),
            vec![],
            CaptureFailure::Invalid,
        ),
        (
            409,
            problem("ResourceAlreadyExistsException", 409),
            vec![],
            CaptureFailure::Duplicate,
        ),
        (
            413,
            problem("CaptureLimitExceededException", 413),
            vec![],
            CaptureFailure::TooLarge,
        ),
        (415, String::new(), vec![], CaptureFailure::Unsupported),
        (401, String::new(), vec![], CaptureFailure::Unauthorized),
        (404, String::new(), vec![], CaptureFailure::NotFound),
        (
            429,
            String::new(),
            vec![("retry-after", "7".to_string())],
            CaptureFailure::Throttled,
        ),
        (502, String::new(), vec![], CaptureFailure::Transient),
    ];
    for (status, body, headers, want) in cases {
        *repo.reply.lock().map_err(|_| anyhow!("lock"))? = Reply {
            status,
            headers,
            body,
        };
        let err = client
            .capture(&doc)
            .await
            .expect_err("the repository refused");
        let CaptureError::Refused {
            status: got,
            failure,
            ref problem,
            ..
        } = err
        else {
            bail!("HTTP {status}: not a refusal: {err}");
        };
        assert_eq!((got, failure), (status, want), "{err}");
        if status == 400 {
            assert_eq!(
                problem.as_ref().and_then(|p| p.exception()),
                Some("ValidationException")
            );
            assert!(err.to_string().contains("ValidationException"), "{err}");
        }
        let decision = decide(&err);
        match want {
            CaptureFailure::Duplicate => assert!(
                matches!(
                    decision,
                    Decision::Booked {
                        duplicate: true,
                        ..
                    }
                ),
                "{decision:?}"
            ),
            CaptureFailure::Invalid => assert!(
                matches!(
                    decision,
                    Decision::DeadLetter {
                        erp_rejected: true,
                        ..
                    }
                ),
                "{decision:?}"
            ),
            CaptureFailure::TooLarge | CaptureFailure::Unsupported => assert!(
                matches!(
                    decision,
                    Decision::DeadLetter {
                        erp_rejected: false,
                        ..
                    }
                ) || matches!(decision, Decision::HaltEndpoint { .. }),
                "{decision:?}"
            ),
            CaptureFailure::Unauthorized | CaptureFailure::NotFound => assert!(
                matches!(decision, Decision::HaltEndpoint { .. }),
                "{decision:?}"
            ),
            CaptureFailure::Throttled => assert_eq!(
                match decision {
                    Decision::PauseEndpoint { delay, .. } => Some(delay),
                    _ => None,
                },
                Some(Duration::from_secs(7))
            ),
            _ => assert!(matches!(decision, Decision::Retry { .. }), "{decision:?}"),
        }
    }

    // Nobody listening: a connect error, safe to retry with any key.
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    drop(listener);
    let dead = CaptureClient::new(&CaptureConfig {
        root: format!("http://{addr}/epcis/"),
        error_behaviour: ErrorBehaviour::Proceed,
        timeout: Duration::from_secs(2),
        authorization: None,
    })?;
    let err = dead.capture(&doc).await.expect_err("nothing listens");
    assert!(
        matches!(
            err,
            CaptureError::Transport {
                kind: TransportError::Connect,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(err.failure_class(), FailureClass::Transient);
    Ok(())
}

// ---------------------------------------------------------------- delivery

/// What the mock repository does with one capture of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scripted {
    /// 500, nothing stored.
    Fail500,
    /// 400 `ValidationException`, nothing stored.
    Invalid,
    /// 202, then a capture job that ends with a `ValidationException`.
    JobFails,
}

/// A mock EPCIS 2.0 repository: checks the key fields of every capture,
/// stores events by `eventID`, answers 202 + a capture job (running on its
/// first read, ended on the next), serves `GET /events/{eventID}`.
#[derive(Debug, Default)]
struct MockRepository {
    /// eventID → captures stored (more than one would be a double capture).
    stored: Mutex<std::collections::BTreeMap<String, u32>>,
    /// eventIDs in the order they were first stored.
    order: Mutex<Vec<String>>,
    /// eventID → capture POSTs received.
    posts: Mutex<std::collections::BTreeMap<String, u32>>,
    /// Every capture body, as received.
    bodies: Mutex<Vec<Value>>,
    /// What was wrong with a request (none expected).
    problems: Mutex<Vec<String>>,
    /// capture id → (reads so far, the job's error if it fails).
    jobs: Mutex<std::collections::BTreeMap<String, (u32, Option<Value>)>>,
    /// eventID → what its next captures get, in order.
    script: Mutex<std::collections::BTreeMap<String, Vec<Scripted>>>,
}

fn problem_body(exception: &str, status: u16, detail: &str) -> String {
    json!({"type": format!("epcisException:{exception}"), "title": exception,
           "status": status, "detail": detail})
    .to_string()
}

/// The key fields of a one-event capture document; the event's id.
fn check_capture(headers: &HeaderMap, doc: &Value) -> std::result::Result<String, String> {
    let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or("");
    for (name, want) in [
        ("content-type", "application/ld+json"),
        ("gs1-epcis-version", "2.0.0"),
        ("gs1-cbv-version", "2.0.0"),
        ("gs1-capture-error-behaviour", "rollback"),
    ] {
        if h(name) != want {
            return Err(format!("header {name} is {:?}, expected {want:?}", h(name)));
        }
    }
    if doc["type"] != "EPCISDocument" || doc["schemaVersion"] != "2.0" {
        return Err(format!("not an EPCIS 2.0 document: {}", doc["type"]));
    }
    if doc["@context"][0] != dockline_collector::erp::epcis::EPCIS_CONTEXT {
        return Err("@context does not start with the EPCIS 2.0 context".into());
    }
    let events = doc["epcisBody"]["eventList"]
        .as_array()
        .ok_or("no epcisBody.eventList")?;
    let [event] = events.as_slice() else {
        return Err(format!(
            "{} events in one capture, expected 1",
            events.len()
        ));
    };
    let id = event["eventID"].as_str().ok_or("no eventID")?;
    if !id.starts_with("urn:uuid:") {
        return Err(format!("eventID {id} is not urn:uuid:"));
    }
    for key in [
        "type",
        "eventTime",
        "eventTimeZoneOffset",
        "action",
        "bizStep",
    ] {
        if !event[key].is_string() {
            return Err(format!("{id}: no {key}"));
        }
    }
    Ok(id.to_owned())
}

async fn repo_capture(
    State(repo): State<Arc<MockRepository>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let doc: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let id = match check_capture(&headers, &doc) {
        Ok(id) => id,
        Err(problem) => {
            repo.problems.lock().expect("lock").push(problem.clone());
            return (
                StatusCode::BAD_REQUEST,
                problem_body("ValidationException", 400, &problem),
            )
                .into_response();
        }
    };
    repo.bodies.lock().expect("lock").push(doc);
    *repo
        .posts
        .lock()
        .expect("lock")
        .entry(id.clone())
        .or_insert(0) += 1;
    let scripted = {
        let mut script = repo.script.lock().expect("lock");
        script
            .get_mut(&id)
            .and_then(|s| (!s.is_empty()).then(|| s.remove(0)))
    };
    let job_error = match scripted {
        Some(Scripted::Fail500) => {
            return (StatusCode::INTERNAL_SERVER_ERROR, "repository hiccup").into_response();
        }
        Some(Scripted::Invalid) => {
            return (
                StatusCode::BAD_REQUEST,
                problem_body(
                    "ValidationException",
                    400,
                    "readPoint unknown to this repository",
                ),
            )
                .into_response();
        }
        Some(Scripted::JobFails) => Some(json!({
            "type": "epcisException:ValidationException", "title": "ValidationException",
            "status": 400, "detail": "bizLocation is not a location of this company"})),
        None => {
            let first = {
                let mut stored = repo.stored.lock().expect("lock");
                let n = stored.entry(id.clone()).or_insert(0);
                *n += 1;
                *n == 1
            };
            if first {
                repo.order.lock().expect("lock").push(id.clone());
            }
            None
        }
    };
    let capture_id = {
        let mut jobs = repo.jobs.lock().expect("lock");
        let capture_id = format!("cap-{:04}", jobs.len() + 1);
        jobs.insert(capture_id.clone(), (0, job_error));
        capture_id
    };
    (
        StatusCode::ACCEPTED,
        [("location", format!("/epcis/capture/{capture_id}"))],
    )
        .into_response()
}

async fn repo_job(
    State(repo): State<Arc<MockRepository>>,
    UrlPath(capture_id): UrlPath<String>,
) -> Response {
    let mut jobs = repo.jobs.lock().expect("lock");
    let Some((reads, error)) = jobs.get_mut(&capture_id) else {
        return (
            StatusCode::NOT_FOUND,
            problem_body("NoSuchResourceException", 404, &capture_id),
        )
            .into_response();
    };
    *reads += 1;
    let running = *reads == 1;
    let errors: Vec<Value> = if running {
        vec![]
    } else {
        error.iter().cloned().collect()
    };
    Json(json!({
        "captureID": capture_id,
        "running": running,
        "success": errors.is_empty(),
        "captureErrorBehaviour": "rollback",
        "errors": errors,
    }))
    .into_response()
}

async fn repo_event(
    State(repo): State<Arc<MockRepository>>,
    UrlPath(event_id): UrlPath<String>,
) -> Response {
    if repo.stored.lock().expect("lock").contains_key(&event_id) {
        Json(json!({"type": "EPCISQueryDocument", "eventID": event_id})).into_response()
    } else {
        (
            StatusCode::NOT_FOUND,
            problem_body("NoSuchResourceException", 404, &event_id),
        )
            .into_response()
    }
}

/// A pick of the journey's device in its own order lane.
fn lane_event(seq: u64, order: &str) -> Envelope {
    let mut e = envelope(
        seq,
        EventDetail::Picked {
            item: "4012345111118".into(),
            quantity: 1,
            lot: None,
        },
        References {
            order: Some(order.into()),
            location: Some("A0103".into()),
            ..References::default()
        },
    );
    // Distinct from the journey's ids, which use only the last byte.
    e.id.0[14] = 0xee;
    e
}

fn urn(envelope: &Envelope) -> String {
    format!("urn:uuid:{}", envelope.id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_epcis_adapter_captures_every_event_once_through_the_delivery_path() -> Result<()> {
    use dockline_collector::delivery::Delivery;
    use dockline_collector::erp::epcis::EpcisOptions;
    use dockline_collector::erp::{ErpConfig, ErpKind};
    use dockline_collector::inbox::{Inbox, InboxHandle, InboxStore};
    use dockline_collector::shutdown::ShutdownTrigger;
    use dockline_protocol::{Ack, Outcome, SiteId, codec};

    // The whole journey in lane SO-42, sequences made contiguous, then three
    // one-event lanes.
    let mut events: Vec<Envelope> = journey()
        .into_iter()
        .enumerate()
        .map(|(i, (mut e, _))| {
            e.seq = 1 + u64::try_from(i).unwrap_or(0);
            e
        })
        .collect();
    let next = 1 + u64::try_from(events.len())?;
    let (invalid, job_fails, already) = (
        lane_event(next, "SO-43"),
        lane_event(next + 1, "SO-44"),
        lane_event(next + 2, "SO-45"),
    );
    events.extend([invalid.clone(), job_fails.clone(), already.clone()]);
    let (fails_once, loses_answer) = (events[1].clone(), events[3].clone());

    let repo = Arc::new(MockRepository::default());
    {
        let mut script = repo.script.lock().map_err(|_| anyhow!("lock"))?;
        script.insert(urn(&fails_once), vec![Scripted::Fail500]);
        script.insert(urn(&invalid), vec![Scripted::Invalid]);
        script.insert(urn(&job_fails), vec![Scripted::JobFails]);
    }
    // Captured before (by an earlier collector, say): found, not captured.
    repo.stored
        .lock()
        .map_err(|_| anyhow!("lock"))?
        .insert(urn(&already), 1);
    let app = Router::new()
        .route(
            "/epcis/capture",
            post(repo_capture).options(|| async { StatusCode::NO_CONTENT }),
        )
        .route("/epcis/capture/{id}", get(repo_job))
        .route("/epcis/events/{id}", get(repo_event))
        .with_state(Arc::clone(&repo));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    // The repository stores this capture, but its 202 never comes back.
    let proxy = LostResponseProxy::start(addr).await?;
    proxy.lose_response_containing(&format!("\"eventID\":\"{}\"", urn(&loses_answer)));

    let gs1 = gs1_config();
    let cfg = ErpConfig {
        kind: ErpKind::Epcis,
        timeout_ms: 2000,
        retry_min_ms: 20,
        retry_max_ms: 100,
        epcis: Some(EpcisOptions {
            site: Some(gs1.site.clone()),
            site_gln: gs1.site_gln.clone(),
            party_gln: gs1.party_gln.clone(),
            company_prefixes: gs1.company_prefixes.clone(),
            utc_offset: gs1.utc_offset.clone(),
            ..EpcisOptions::new(gs1.private_base.clone())
        }),
        ..ErpConfig::new(format!("http://{}/epcis/", proxy.addr()), "")
    };

    let dir = tempfile::tempdir()?;
    let mut inbox = Inbox::open(&dir.path().join("inbox.db"))?;
    inbox.store_batch(
        &SiteId::new("BRU1")?,
        &dockline_protocol::Batch {
            v: 1,
            device: DeviceId::new("hh-017")?,
            epoch: 1,
            first_held: 1,
            events: events.clone(),
            shed: Vec::new(),
        },
        0,
    )?;
    let inbox = InboxHandle::new(inbox);
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    let delivery = Arc::new(Delivery::new(&cfg, inbox.clone(), tx)?);
    let trigger = ShutdownTrigger::new();
    let running = tokio::spawn(
        Arc::clone(&delivery).run(Arc::new(tokio::sync::Notify::new()), trigger.subscribe()),
    );
    let mut verdicts = std::collections::BTreeMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while verdicts.len() < events.len() {
        let p = tokio::time::timeout_at(deadline, rx.recv())
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

    let problems = repo.problems.lock().map_err(|_| anyhow!("lock"))?.clone();
    assert!(
        problems.is_empty(),
        "the repository saw bad requests: {problems:?}"
    );
    assert_eq!(proxy.lost(), 1, "one 202 was lost on its way back");
    let stored = repo.stored.lock().map_err(|_| anyhow!("lock"))?.clone();
    let posts = repo.posts.lock().map_err(|_| anyhow!("lock"))?.clone();
    for e in &events {
        let id = urn(e);
        let outcome = verdicts
            .get(&e.seq)
            .ok_or_else(|| anyhow!("no verdict for {}", e.seq))?;
        if e.id == invalid.id || e.id == job_fails.id {
            assert!(
                matches!(outcome, Outcome::Rejected { .. }),
                "{id}: {outcome:?}"
            );
            assert_eq!(stored.get(&id), None, "{id} refused, not stored");
            continue;
        }
        assert!(
            matches!(outcome, Outcome::Booked { .. }),
            "{id}: {outcome:?}"
        );
        assert_eq!(stored.get(&id), Some(&1), "{id} stored exactly once");
        let want_posts = if e.id == already.id {
            0 // found by GET /events/{eventID}
        } else if e.id == fails_once.id {
            2 // the 500, then the capture
        } else {
            1 // including the lost answer: the resend found the event
        };
        assert_eq!(
            posts.get(&id).copied().unwrap_or(0),
            want_posts,
            "{id}: captures sent"
        );
    }
    if let Outcome::Rejected { reason } = &verdicts[&job_fails.seq] {
        assert!(reason.contains("bizLocation is not a location"), "{reason}");
    }
    if let Outcome::Booked { document } = &verdicts[&events[0].seq] {
        assert!(document.starts_with("EPCIS capture cap-"), "{document}");
    }
    // Lane SO-42 reached the repository in the device's order.
    let order = repo.order.lock().map_err(|_| anyhow!("lock"))?.clone();
    let lane: Vec<String> = order
        .into_iter()
        .filter(|id| events[..events.len() - 3].iter().any(|e| &urn(e) == id))
        .collect();
    let want: Vec<String> = events[..events.len() - 3].iter().map(urn).collect();
    assert_eq!(lane, want, "lane SO-42 captured in order");
    let stats = inbox.call(|i| i.stats()).await?;
    assert_eq!(
        (stats.pending, stats.rejected, stats.dead_letters),
        (0, 2, 2)
    );

    // Every document the repository received, against GS1's schema.
    let test = "the_epcis_adapter_captures_every_event_once_through_the_delivery_path";
    if let Some(v) = Validator::find(test)? {
        let bodies = repo.bodies.lock().map_err(|_| anyhow!("lock"))?.clone();
        let errors = v.validate(&bodies)?;
        for (doc, errs) in bodies.iter().zip(&errors) {
            assert!(
                errs.is_empty(),
                "{}: {errs:?}",
                doc["epcisBody"]["eventList"][0]["eventID"]
            );
        }
        eprintln!(
            "{test}: {} captured documents valid against the GS1 EPCIS 2.0 schema",
            bodies.len()
        );
    }
    Ok(())
}

// ---------------------------------------------------------------- media

/// A proof of delivery with a signature and a photo: the captured
/// ObjectEvent links each medium (`dockline:media`: role, hash, type and the
/// collector's signed URL, which verifies and opens exactly that medium)
/// and names a medium whose wait ran out (`dockline:mediaMissing`,
/// `dockline:mediaNote`); the document stays valid against GS1's schema,
/// and a resend after a lost 202 does not capture the event twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_delivered_event_links_its_media_and_flags_missing_ones() -> Result<()> {
    use dockline_collector::erp::epcis::{EpcisAdapter, EpcisOptions};
    use dockline_collector::erp::{ErpAdapter, ErpConfig, ErpEvent, ErpKind, ErpMediaOptions};
    use dockline_collector::media::link::MediaLinks;
    use dockline_collector::media::{ErpMedium, MediaRef, MediaRole};
    use dockline_protocol::SiteId;
    use dockline_protocol::media::{MediaHash, MediaType};

    let medium = |role, media_type, bytes: &[u8]| ErpMedium {
        hash: MediaHash::of(bytes),
        media_type,
        role,
        bytes: Arc::from(bytes),
    };
    let sig = medium(
        MediaRole::Signature,
        MediaType::Png,
        b"\x89PNG\r\n\x1a\nsignature strokes",
    );
    let photo = medium(
        MediaRole::Photo,
        MediaType::Jpeg,
        b"\xff\xd8\xff\xe0 a photo of the pallet at the door",
    );
    let lost = MediaRef {
        hash: MediaHash::of(b"a second photo that never arrived"),
        role: MediaRole::Photo,
    };
    let mut pod = envelope(
        40,
        EventDetail::Delivered(ProofOfDelivery {
            received_by: "J. Peeters".into(),
            pieces: 2,
            signature_ref: Some(format!("sha256:{}", sig.hash)),
            photo_ref: Some(format!("sha256:{}", photo.hash)),
            position: None,
        }),
        refs(Some("340123450000000017"), None, Some("7")),
    );
    pod.id.0[14] = 0x99;

    let repo = Arc::new(MockRepository::default());
    let app = Router::new()
        .route("/epcis/capture", post(repo_capture))
        .route("/epcis/capture/{id}", get(repo_job))
        .route("/epcis/events/{id}", get(repo_event))
        .with_state(Arc::clone(&repo));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    let proxy = LostResponseProxy::start(addr).await?;
    proxy.lose_response_containing(&format!("\"eventID\":\"{}\"", urn(&pod)));

    let gs1 = gs1_config();
    let cfg = ErpConfig {
        kind: ErpKind::Epcis,
        timeout_ms: 5000,
        epcis: Some(EpcisOptions {
            site: Some(gs1.site.clone()),
            site_gln: gs1.site_gln.clone(),
            party_gln: gs1.party_gln.clone(),
            company_prefixes: gs1.company_prefixes.clone(),
            utc_offset: gs1.utc_offset.clone(),
            ..EpcisOptions::new(gs1.private_base.clone())
        }),
        ..ErpConfig::new(format!("http://{}/epcis/", proxy.addr()), "")
    };
    let key = [9u8; 32];
    let links = MediaLinks::new(&key, "https://collector.example", 86_400)?;
    let adapter = EpcisAdapter::new(&cfg)?.with_media(ErpMediaOptions {
        links: Some(links.clone()),
        inline_max_bytes: 0,
    });
    let site = SiteId::new("BRU1")?;
    let event = pod.business_event().ok_or_else(|| anyhow!("an event"))?;
    let media = [sig.clone(), photo.clone()];
    let missing = [lost];
    let deliver = || {
        adapter.deliver(ErpEvent {
            site: &site,
            envelope: &pod,
            event,
            lane: "SO-42",
            media: &media,
            media_missing: &missing,
        })
    };
    let first = deliver().await;
    let second = deliver().await;
    assert!(
        matches!(
            second.outcome,
            dockline_collector::erp::outcome::AttemptOutcome::Rpc(
                dockline_collector::erp::outcome::RpcOutcome::AlreadyThere { .. }
            )
        ),
        "the resend finds the stored event: {first:?} then {second:?}"
    );
    assert_eq!(
        repo.stored
            .lock()
            .map_err(|_| anyhow!("lock"))?
            .get(&urn(&pod)),
        Some(&1),
        "captured once"
    );

    let bodies = repo.bodies.lock().map_err(|_| anyhow!("lock"))?.clone();
    assert_eq!(bodies.len(), 1);
    let e = &bodies[0]["epcisBody"]["eventList"][0];
    assert_eq!(e["bizStep"], "accepting");
    let listed = e["dockline:media"]
        .as_array()
        .ok_or_else(|| anyhow!("dockline:media in {e}"))?;
    assert_eq!(listed.len(), 2);
    let now = SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    for (entry, m) in listed.iter().zip([&sig, &photo]) {
        assert_eq!(entry["dockline:role"], m.role.name());
        assert_eq!(entry["dockline:hash"], json!(format!("sha256:{}", m.hash)));
        assert_eq!(entry["dockline:mediaType"], m.media_type.content_type());
        let url = entry["dockline:url"]
            .as_str()
            .ok_or_else(|| anyhow!("url"))?;
        let (path, query) = url.split_once('?').ok_or_else(|| anyhow!("query"))?;
        assert_eq!(
            path,
            format!("https://collector.example/v1/media/{}", m.hash)
        );
        let q: std::collections::BTreeMap<&str, &str> =
            query.split('&').filter_map(|p| p.split_once('=')).collect();
        links.verify(&m.hash, q["exp"].parse()?, q["sig"], now)?;
    }
    assert_eq!(
        e["dockline:mediaMissing"],
        json!([{ "dockline:role": "photo", "dockline:hash": format!("sha256:{}", lost.hash) }])
    );
    let note = e["dockline:mediaNote"].as_str().unwrap_or_default();
    assert!(
        note.contains("MEDIA MISSING") && note.contains(&lost.hash.to_string()),
        "{note}"
    );
    // The prefix is declared in the document's @context.
    assert_eq!(
        bodies[0]["@context"][1]["dockline"],
        "https://dockline.invalid/ns/epcis/"
    );

    let test = "the_delivered_event_links_its_media_and_flags_missing_ones";
    if let Some(v) = Validator::find(test)? {
        let errors = v.validate(&bodies)?;
        assert!(errors[0].is_empty(), "GS1 schema: {:?}", errors[0]);
        // The same validator refuses a media link in a field EPCIS does
        // not define (an unprefixed name): it has teeth here too.
        let mut broken = bodies[0].clone();
        broken["epcisBody"]["eventList"][0]["media"] = json!(listed);
        let errors = v.validate(&[broken])?;
        assert!(!errors[0].is_empty(), "an unprefixed `media` must fail");
        eprintln!("{test}: the captured document is valid against the GS1 EPCIS 2.0 schema");
    }
    Ok(())
}
