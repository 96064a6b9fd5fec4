//! Proof-of-delivery media through the Odoo adapter, against the stateful
//! Odoo emulator (`support/odoo_emulator.rs`, 17 over `/jsonrpc`, 18 over
//! the web session routes, 19 over JSON-2), behind a proxy that loses a
//! response after the emulator committed:
//! - a `delivered` event's signature and photo become `ir.attachment`s with
//!   `res_model = 'stock.picking'`, `res_id` the delivery, named
//!   `signature-<hex>.png` / `photo-<hex>.jpg`, `mimetype` the image type,
//!   `datas` the bytes (decoded, they hash to the medium), beside the
//!   proof-of-delivery JSON which lists them;
//! - a lost answer to each `create` (signature, photo, POD) is retried: one
//!   attachment per medium (the emulator's create counter agrees), and a
//!   replay changes nothing;
//! - a medium whose wait ran out: the event is booked, the POD attachment's
//!   description names the missing medium.

#[path = "support/erp_media.rs"]
mod erp_media;
#[path = "support/lost_response.rs"]
mod lost_response;
#[path = "support/odoo_emulator.rs"]
mod odoo_emulator;
mod support;

use std::net::SocketAddr;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use dockline_collector::delivery::policy::Decision;
use dockline_collector::erp::odoo::{Backorder, OdooAdapter, OdooConfig, OdooTransport};
use dockline_collector::erp::outcome::AttemptOutcome;
use dockline_collector::erp::{Attempt, ErpConfig, ErpKind};
use dockline_collector::media::ErpMedium;
use dockline_protocol::media::MediaHash;
use dockline_protocol::{Envelope, EventDetail};
use erp_media::{attempt_with, delivered, photo, reference, signature};
use lost_response::LostResponseProxy;
use odoo_emulator::{API_KEY, DATABASE, LOGIN, OdooEmulator, PASSWORD};
use serde_json::{Map, Value, json};

const GTIN: &str = "09506000134352";
const DEVICE: &str = "hh-media-od";

fn event(n: u8, order: &str, detail: EventDetail) -> Envelope {
    erp_media::event(DEVICE, n, order, detail)
}

fn adapter(addr: SocketAddr, version: u8, transport: OdooTransport) -> OdooAdapter {
    let cfg = ErpConfig {
        kind: ErpKind::Odoo,
        timeout_ms: 5_000,
        odoo: Some(OdooConfig {
            version,
            transport: Some(transport),
            database: DATABASE.into(),
            login: LOGIN.into(),
            password: PASSWORD.into(),
            api_key: if transport == OdooTransport::Json2 {
                API_KEY.into()
            } else {
                String::new()
            },
            backorder: Backorder::Create,
            validate_on: Default::default(),
        }),
        ..ErpConfig::new(format!("http://{addr}/"), "")
    };
    OdooAdapter::new(&cfg).expect("adapter")
}

fn marker(transport: OdooTransport, model: &str, method: &str) -> String {
    match transport {
        OdooTransport::JsonRpc => format!("\"{model}\",\"{method}\""),
        OdooTransport::Web | OdooTransport::Json2 => format!("/{model}/{method} "),
    }
}

fn booked(erp: &OdooAdapter, a: &Attempt) -> Option<bool> {
    match support::decide(erp, a) {
        Decision::Booked { duplicate, .. } => Some(duplicate),
        _ => None,
    }
}

/// The attachments of picking `id`, as the emulator stores them.
fn attachments(emu: &OdooEmulator, id: i64) -> Vec<Map<String, Value>> {
    emu.records("ir.attachment")
        .into_iter()
        .filter(|a| a["res_model"] == json!("stock.picking") && a["res_id"] == json!(id))
        .collect()
}

/// Exactly one attachment of `m` on the picking, its bytes `m`'s.
fn attached_once(stored: &[Map<String, Value>], m: &ErpMedium) {
    let name = dockline_collector::erp::media_file_name(m.role, &m.hash, m.media_type);
    let found: Vec<_> = stored.iter().filter(|a| a["name"] == json!(name)).collect();
    assert_eq!(found.len(), 1, "{name} once");
    let bytes = BASE64
        .decode(found[0]["datas"].as_str().expect("datas"))
        .expect("base64");
    assert_eq!(MediaHash::of(&bytes), m.hash, "{name}: byte-identical");
    assert_eq!(found[0]["mimetype"], json!(m.media_type.content_type()));
    assert_eq!(found[0]["type"], json!("binary"));
}

#[tokio::test]
async fn odoo_emulated_attaches_each_medium_once_through_lost_responses() {
    for (version, transport) in [
        (17, OdooTransport::JsonRpc),
        (18, OdooTransport::Web),
        (19, OdooTransport::Json2),
    ] {
        let emu = OdooEmulator::start(version).await;
        let product = emu.add_product(GTIN);
        let so = emu.add_delivery("SO-OM-1", &[(product, 1.0)], "assigned");
        let so2 = emu.add_delivery("SO-OM-2", &[(product, 1.0)], "assigned");
        let proxy = LostResponseProxy::start(emu.addr).await.expect("proxy");
        let erp = adapter(proxy.addr(), version, transport);
        for (n, order) in [(1, "SO-OM-1"), (3, "SO-OM-2")] {
            for (k, detail) in [
                EventDetail::Picked {
                    item: GTIN.into(),
                    quantity: 1,
                    lot: None,
                },
                EventDetail::Departed {
                    vehicle: "van-07".into(),
                    position: None,
                },
            ]
            .into_iter()
            .enumerate()
            {
                let a = attempt_with(
                    &erp,
                    "dc-media",
                    &event(n + k as u8, order, detail),
                    &[],
                    &[],
                )
                .await;
                assert_eq!(booked(&erp, &a), Some(false), "{version}: {a:?}");
            }
        }
        assert_eq!(emu.state(so), "done");
        let created_before = emu.counters().attachments;

        let sig = signature(1_500, 21);
        let pic = photo(400_000, 22);
        let pod = delivered(DEVICE, 30, "SO-OM-1", Some(&sig.hash), Some(&pic.hash));
        let media = [sig.clone(), pic.clone()];
        for _ in 0..3 {
            proxy.lose_response_containing(&marker(transport, "ir.attachment", "create"));
            let a = attempt_with(&erp, "dc-media", &pod, &media, &[]).await;
            assert!(
                matches!(a.outcome, AttemptOutcome::Transport { .. }),
                "{version}: {a:?}"
            );
            assert_eq!(booked(&erp, &a), None, "{version}: retried: {a:?}");
        }
        assert_eq!(proxy.lost(), 3);
        let a = attempt_with(&erp, "dc-media", &pod, &media, &[]).await;
        assert_eq!(booked(&erp, &a), Some(true), "{version}: all found: {a:?}");
        let a = attempt_with(&erp, "dc-media", &pod, &media, &[]).await;
        assert_eq!(booked(&erp, &a), Some(true), "{version}: a replay: {a:?}");
        assert_eq!(
            emu.counters().attachments - created_before,
            3,
            "{version}: two media and the POD created once each"
        );
        let stored = attachments(&emu, so);
        attached_once(&stored, &sig);
        attached_once(&stored, &pic);
        let pod_name = format!("dockline-pod-{}.json", pod.id);
        let pod_row = stored
            .iter()
            .find(|a| a["name"] == json!(pod_name))
            .expect("the POD attachment");
        let pod_json: Value = serde_json::from_slice(
            &BASE64
                .decode(pod_row["datas"].as_str().expect("datas"))
                .expect("base64"),
        )
        .expect("JSON");
        assert_eq!(
            pod_json["data"]["media"][1]["hash"],
            json!(format!("sha256:{}", pic.hash))
        );

        // SO-OM-2: the photo never arrived.
        let sig2 = signature(900, 23);
        let lost = photo(10_000, 24);
        let pod2 = delivered(DEVICE, 31, "SO-OM-2", Some(&sig2.hash), Some(&lost.hash));
        let a = attempt_with(
            &erp,
            "dc-media",
            &pod2,
            std::slice::from_ref(&sig2),
            &[reference(&lost)],
        )
        .await;
        assert_eq!(booked(&erp, &a), Some(false), "{version}: {a:?}");
        let stored = attachments(&emu, so2);
        attached_once(&stored, &sig2);
        let pod2_name = format!("dockline-pod-{}.json", pod2.id);
        let description = stored
            .iter()
            .find(|a| a["name"] == json!(pod2_name))
            .and_then(|a| a["description"].as_str().map(str::to_owned))
            .expect("the POD's description");
        assert!(
            description.contains("MEDIA MISSING")
                && description.contains(&format!("photo sha256:{}", lost.hash)),
            "{version}: {description}"
        );
        let photo_name =
            dockline_collector::erp::media_file_name(lost.role, &lost.hash, lost.media_type);
        assert!(
            stored.iter().all(|a| a["name"] != json!(photo_name)),
            "nothing attached for the missing photo"
        );
    }
}
