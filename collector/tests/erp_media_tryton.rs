//! Proof-of-delivery media on a real Tryton (trytond 8.2 + trytond-stock on
//! SQLite, see `support/tryton_server.rs`), through a proxy that loses
//! responses after Tryton has committed. Skipped with a printed reason
//! unless `DOCKLINE_TEST_TRYTON=1`.
//!
//! What it shows, read back from Tryton itself:
//! - a `delivered` event's signature and photo become `ir.attachment`s of
//!   the shipment named `signature-<hex>.png` and `photo-<hex>.jpg`, whose
//!   stored `data` hashes to the medium's SHA-256 (byte-identical), beside
//!   the proof-of-delivery JSON, which lists them;
//! - a response lost after each attachment's `create` (the signature's, the
//!   photo's, the POD's) and after `do` is retried: every medium is there
//!   exactly once and the shipment entered `done` once; a replay of the
//!   event changes nothing;
//! - a medium whose wait ran out: the event is booked (the shipment is
//!   done), the medium that arrived is attached, and the POD attachment's
//!   description names the missing one ("MEDIA MISSING: photo sha256:…").

#[path = "support/erp_media.rs"]
mod erp_media;
#[path = "support/lost_response.rs"]
mod lost_response;
mod support;
#[path = "support/tryton_server.rs"]
mod tryton_server;

use anyhow::{Result, anyhow};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use dockline_collector::delivery::policy::Decision;
use dockline_collector::erp::outcome::AttemptOutcome;
use dockline_collector::erp::tryton::{TrytonAdapter, TrytonConfig};
use dockline_collector::erp::{Attempt, ErpConfig};
use dockline_collector::media::ErpMedium;
use dockline_protocol::media::MediaHash;
use dockline_protocol::{Envelope, EventDetail};
use erp_media::{attempt_with, delivered, photo, reference, signature};
use lost_response::LostResponseProxy;
use serde_json::{Value, json};
use tryton_server::{ADMIN_PASSWORD, DATABASE, TrytonServer};

const DEVICE: &str = "hh-media-tr";

fn event(n: u8, order: &str, detail: EventDetail) -> Envelope {
    erp_media::event(DEVICE, n, order, detail)
}

fn adapter(addr: std::net::SocketAddr) -> TrytonAdapter {
    let cfg = ErpConfig {
        timeout_ms: 20_000,
        ..ErpConfig::tryton(
            format!("http://{addr}/"),
            TrytonConfig {
                database: DATABASE.into(),
                user: "admin".into(),
                password: ADMIN_PASSWORD.into(),
                assign_force: false,
                language: "en".into(),
            },
        )
    };
    TrytonAdapter::new(&cfg).expect("adapter")
}

fn booked(erp: &TrytonAdapter, a: &Attempt) -> Option<bool> {
    match support::decide(erp, a) {
        Decision::Booked { duplicate, .. } => Some(duplicate),
        _ => None,
    }
}

/// Picks and packs the shipment of `order` (events `n`, `n + 1`).
async fn pick_and_pack(erp: &TrytonAdapter, n: u8, order: &str) {
    for (k, detail) in [
        EventDetail::Picked {
            item: "09506000134352".into(),
            quantity: 1,
            lot: None,
        },
        EventDetail::Packed {
            quantity: 1,
            weight: None,
        },
    ]
    .into_iter()
    .enumerate()
    {
        let env = event(n + k as u8, order, detail);
        let a = attempt_with(erp, "dc-media", &env, &[], &[]).await;
        assert_eq!(booked(erp, &a), Some(false), "{a:?}");
    }
}

/// One attachment as Tryton stores it.
#[derive(Debug)]
struct Stored {
    name: String,
    description: String,
    data: Vec<u8>,
}

/// The shipment's attachments, with their bytes.
async fn attachments(server: &TrytonServer, reference: &str) -> Result<Vec<Stored>> {
    let id = server.shipments[reference];
    let rows = server
        .call(
            "model.ir.attachment.search_read",
            json!([
                [["resource", "=", format!("stock.shipment.out,{id}")]],
                0,
                100,
                [["id", "ASC"]],
                ["name", "description", "data"],
                {}
            ]),
        )
        .await?;
    rows.as_array()
        .ok_or_else(|| anyhow!("not a list: {rows}"))?
        .iter()
        .map(|r| {
            let data = match &r["data"] {
                Value::Object(b) => {
                    // Tryton's encoder breaks base64 into lines.
                    let text: String = b["base64"]
                        .as_str()
                        .unwrap_or_default()
                        .chars()
                        .filter(|c| !c.is_whitespace())
                        .collect();
                    BASE64.decode(text)?
                }
                Value::String(s) => s.as_bytes().to_vec(),
                _ => Vec::new(),
            };
            Ok(Stored {
                name: r["name"].as_str().unwrap_or_default().to_owned(),
                description: r["description"].as_str().unwrap_or_default().to_owned(),
                data,
            })
        })
        .collect()
}

fn file_name(m: &ErpMedium) -> String {
    dockline_collector::erp::media_file_name(m.role, &m.hash, m.media_type)
}

/// Exactly one attachment named like `m`, byte-identical to it.
fn attached_once(stored: &[Stored], m: &ErpMedium) {
    let name = file_name(m);
    let found: Vec<&Stored> = stored.iter().filter(|s| s.name == name).collect();
    assert_eq!(found.len(), 1, "{name} once in {:?}", names(stored));
    assert_eq!(
        MediaHash::of(&found[0].data),
        m.hash,
        "{name}: the bytes Tryton stored hash to the medium's SHA-256 ({} bytes stored, {} sent)",
        found[0].data.len(),
        m.bytes.len()
    );
}

fn names(stored: &[Stored]) -> Vec<&str> {
    stored.iter().map(|s| s.name.as_str()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tryton_attaches_each_medium_once_through_lost_responses() -> Result<()> {
    let Some(venv) =
        tryton_server::venv_or_skip("tryton_attaches_each_medium_once_through_lost_responses")
    else {
        return Ok(());
    };
    let server = tokio::task::spawn_blocking(move || {
        TrytonServer::start(&venv, &["SO-MEDIA-1", "SO-MEDIA-2"])
    })
    .await??;
    let result = scenario(&server).await;
    if result.is_err() {
        eprintln!("----- trytond log -----\n{}", server.log_text());
    }
    result
}

async fn scenario(server: &TrytonServer) -> Result<()> {
    let proxy = LostResponseProxy::start(server.addr).await?;
    let erp = adapter(proxy.addr());

    // --- SO-MEDIA-1: a signature and a 1.5 MB photo, four lost answers ---
    pick_and_pack(&erp, 1, "SO-MEDIA-1").await;
    let sig = signature(2_000, 11);
    let pic = photo(1_500_000, 12);
    let pod = delivered(DEVICE, 20, "SO-MEDIA-1", Some(&sig.hash), Some(&pic.hash));
    let media = [sig.clone(), pic.clone()];
    // The signature's create, then the photo's, then the POD's, then `do`:
    // each commits in Tryton and its answer is lost.
    let mut outcomes = Vec::new();
    for lose in [
        "model.ir.attachment.create",
        "model.ir.attachment.create",
        "model.ir.attachment.create",
        "model.stock.shipment.out.do",
    ] {
        proxy.lose_response_of(lose);
        let a = attempt_with(&erp, "dc-media", &pod, &media, &[]).await;
        assert!(
            matches!(a.outcome, AttemptOutcome::Transport { .. }),
            "losing {lose}: {a:?}"
        );
        assert_eq!(booked(&erp, &a), None, "a lost answer is retried: {a:?}");
        outcomes.push(a.request);
    }
    assert_eq!(proxy.lost(), 4, "{outcomes:#?}");
    let stored = attachments(server, "SO-MEDIA-1").await?;
    attached_once(&stored, &sig);
    attached_once(&stored, &pic);
    // The retry after the lost `do`: Tryton is done, nothing pressed again.
    let a = attempt_with(&erp, "dc-media", &pod, &media, &[]).await;
    assert_eq!(booked(&erp, &a), Some(true), "{a:?}");
    assert_eq!(server.state("SO-MEDIA-1").await?, "done");
    // A replay of the event (the device resent it): no change.
    let a = attempt_with(&erp, "dc-media", &pod, &media, &[]).await;
    assert_eq!(booked(&erp, &a), Some(true), "{a:?}");

    let stored = attachments(server, "SO-MEDIA-1").await?;
    assert_eq!(
        stored.len(),
        3,
        "two media and the POD: {:?}",
        names(&stored)
    );
    attached_once(&stored, &sig);
    attached_once(&stored, &pic);
    let pod_file = format!("dockline-pod-{}.json", pod.id);
    let pod_json: Value = serde_json::from_slice(
        &stored
            .iter()
            .find(|s| s.name == pod_file)
            .ok_or_else(|| anyhow!("{pod_file} in {:?}", names(&stored)))?
            .data,
    )?;
    let listed = &pod_json["data"]["media"];
    assert_eq!(listed[0]["hash"], json!(format!("sha256:{}", sig.hash)));
    assert_eq!(listed[1]["hash"], json!(format!("sha256:{}", pic.hash)));
    let done = server
        .transitions("SO-MEDIA-1")
        .await?
        .iter()
        .filter(|t| *t == "state:done")
        .count();
    assert_eq!(done, 1, "done entered once");

    // --- SO-MEDIA-2: the photo's wait ran out ---
    pick_and_pack(&erp, 3, "SO-MEDIA-2").await;
    let sig2 = signature(1_200, 13);
    let lost = photo(40_000, 14);
    let pod2 = delivered(DEVICE, 21, "SO-MEDIA-2", Some(&sig2.hash), Some(&lost.hash));
    let a = attempt_with(
        &erp,
        "dc-media",
        &pod2,
        std::slice::from_ref(&sig2),
        &[reference(&lost)],
    )
    .await;
    assert_eq!(
        booked(&erp, &a),
        Some(false),
        "booked without the photo: {a:?}"
    );
    assert_eq!(server.state("SO-MEDIA-2").await?, "done");
    let stored = attachments(server, "SO-MEDIA-2").await?;
    assert_eq!(stored.len(), 2, "{:?}", names(&stored));
    attached_once(&stored, &sig2);
    let pod2_file = format!("dockline-pod-{}.json", pod2.id);
    let note = &stored
        .iter()
        .find(|s| s.name == pod2_file)
        .ok_or_else(|| anyhow!("{pod2_file}"))?
        .description;
    assert!(
        note.contains("MEDIA MISSING") && note.contains(&format!("photo sha256:{}", lost.hash)),
        "the POD's description flags the missing photo: {note}"
    );
    Ok(())
}
