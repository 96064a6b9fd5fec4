//! The Odoo adapter against the Odoo **emulator** (`support/odoo_emulator.rs`),
//! not a real Odoo: every test is named `odoo_emulated_*` and proves the
//! adapter against the behaviours of research §1.1 the emulator encodes
//! (transports per version, the backorder wizard's action dict, the
//! auto-pick hook, session expiry, serialization failures, errors in HTTP
//! 200), with a proxy that loses answers after the emulator committed.
//!
//! Every effect is read back from the emulator's state and counters
//! (validations, backorders, packages, attachments, line writes), so
//! "exactly once" is asserted, not assumed.

#[path = "support/lost_response.rs"]
mod lost_response;
#[path = "support/odoo_emulator.rs"]
mod odoo_emulator;
mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use dockline_collector::delivery::Delivery;
use dockline_collector::delivery::backoff::FixedJitter;
use dockline_collector::delivery::policy::Decision;
use dockline_collector::erp::odoo::{Backorder, OdooAdapter, OdooConfig, OdooTransport};
use dockline_collector::erp::outcome::{AttemptOutcome, FailureClass, RpcOutcome, TransportError};
use dockline_collector::erp::{Attempt, ErpAdapter};
use dockline_collector::erp::{ErpConfig, ErpKind};
use dockline_collector::inbox::{Inbox, InboxHandle, InboxStore};
use dockline_collector::shutdown::ShutdownTrigger;
use dockline_protocol::{
    Ack, Batch, BusinessEvent, DeviceId, Envelope, EventDetail, EventId, Outcome, Payload,
    Priority, ProofOfDelivery, References, SiteId, TimeSource, Weight, WeightUnit, codec,
};
use lost_response::LostResponseProxy;
use odoo_emulator::{API_KEY, DATABASE, Fault, LOGIN, OdooEmulator, PASSWORD};
use serde_json::json;
use tokio::sync::{Notify, mpsc};

const GTIN_A: &str = "09506000134352";
const GTIN_B: &str = "09506000134369";
const SSCC: &str = "340123450000000424";

fn envelope(n: u8, refs: References, detail: EventDetail) -> Envelope {
    Envelope {
        v: 1,
        device: DeviceId::new("hh-01").expect("device id"),
        epoch: 1,
        seq: u64::from(n),
        id: EventId([n; 16]),
        captured_ms: 1_700_000_000_000 + i64::from(n),
        time_source: TimeSource::Ntp,
        priority: Priority::MustDeliver,
        payload: Payload::Event(BusinessEvent { detail, refs }),
    }
}

fn order(order: &str) -> References {
    References {
        order: Some(order.into()),
        ..References::default()
    }
}

fn on(n: u8, o: &str, detail: EventDetail) -> Envelope {
    envelope(n, order(o), detail)
}

fn picked(item: &str, quantity: u32) -> EventDetail {
    EventDetail::Picked {
        item: item.into(),
        quantity,
        lot: None,
    }
}

fn packed() -> EventDetail {
    EventDetail::Packed {
        quantity: 3,
        weight: Some(Weight {
            value: 12_400.0,
            unit: WeightUnit::G,
        }),
    }
}

fn departed() -> EventDetail {
    EventDetail::Departed {
        vehicle: "van-07".into(),
        position: None,
    }
}

fn delivered() -> EventDetail {
    EventDetail::Delivered(ProofOfDelivery {
        received_by: "R. Receiver".into(),
        pieces: 3,
        signature_ref: Some("sig-1".into()),
        photo_ref: None,
        position: None,
    })
}

fn odoo_config(
    addr: SocketAddr,
    version: u8,
    transport: OdooTransport,
    backorder: Backorder,
) -> ErpConfig {
    ErpConfig {
        kind: ErpKind::Odoo,
        timeout_ms: 5_000,
        retry_min_ms: 10,
        retry_max_ms: 50,
        halt_recheck_ms: 300,
        breaker_open_ms: 100,
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
            backorder,
            validate_on: Default::default(),
        }),
        ..ErpConfig::new(format!("http://{addr}/"), "")
    }
}

fn adapter(addr: SocketAddr, version: u8, transport: OdooTransport) -> OdooAdapter {
    adapter_with(addr, version, transport, Backorder::Create)
}

fn adapter_with(
    addr: SocketAddr,
    version: u8,
    transport: OdooTransport,
    backorder: Backorder,
) -> OdooAdapter {
    let cfg = odoo_config(addr, version, transport, backorder);
    cfg.odoo
        .as_ref()
        .expect("odoo")
        .check()
        .expect("valid [erp.odoo]");
    OdooAdapter::new(&cfg).expect("adapter")
}

async fn attempt(adapter: &OdooAdapter, env: &Envelope) -> Attempt {
    support::attempt(adapter, "dc-north", env).await
}

/// What delivery would do with the attempt (the real policy).
fn decide(adapter: &OdooAdapter, a: &Attempt) -> Decision {
    support::decide(adapter, a)
}

/// The booked document and whether it was a duplicate, or a panic with the attempt.
fn booked(adapter: &OdooAdapter, a: &Attempt) -> (String, bool) {
    match decide(adapter, a) {
        Decision::Booked {
            document,
            duplicate,
        } => (document, duplicate),
        other => panic!("not booked: {other:?} from {a:?}"),
    }
}

fn line_of(
    emu: &OdooEmulator,
    picking: i64,
    product: i64,
) -> serde_json::Map<String, serde_json::Value> {
    emu.lines(picking)
        .into_iter()
        .find(|l| l["product_id"] == json!(product))
        .expect("a line of the product")
}

/// The text that marks one ORM call in a request, per transport (the
/// proxy loses the answer of the first request containing it).
fn marker(transport: OdooTransport, model: &str, method: &str) -> String {
    match transport {
        OdooTransport::JsonRpc => format!("\"{model}\",\"{method}\""),
        OdooTransport::Web | OdooTransport::Json2 => format!("/{model}/{method} "),
    }
}

/// pick → pick → pick → pack → load → depart → deliver on one order, with
/// replays; every effect once.
async fn full_flow(version: u8, transport: OdooTransport) {
    let emu = OdooEmulator::start(version).await;
    let a = emu.add_product(GTIN_A);
    let b = emu.add_product(GTIN_B);
    let so = emu.add_delivery("SO-1", &[(a, 2.0), (b, 1.0)], "assigned");
    let erp = adapter(emu.addr, version, transport);
    assert!(erp.probe().await, "the probe reads the server");

    let pick_a1 = on(1, "SO-1", picked(GTIN_A, 1));
    let got = attempt(&erp, &pick_a1).await;
    assert_eq!(
        booked(&erp, &got),
        ("WH/OUT/00001".into(), false),
        "{got:?}"
    );
    assert_eq!(line_of(&emu, so, a)["quantity"], json!(1.0));
    assert_eq!(line_of(&emu, so, a)["picked"], json!(true));
    // A second pick of the same item adds up; the other line is untouched.
    let got = attempt(&erp, &on(2, "SO-1", picked(GTIN_A, 1))).await;
    assert!(!booked(&erp, &got).1);
    assert_eq!(line_of(&emu, so, a)["quantity"], json!(2.0));
    assert_eq!(line_of(&emu, so, b)["picked"], json!(false));
    let got = attempt(&erp, &on(3, "SO-1", picked(GTIN_B, 1))).await;
    assert!(!booked(&erp, &got).1);
    // A replayed pick changes nothing: the ledger already holds it.
    let got = attempt(&erp, &pick_a1).await;
    assert_eq!(booked(&erp, &got), ("WH/OUT/00001".into(), true), "{got:?}");
    assert_eq!(line_of(&emu, so, a)["quantity"], json!(2.0));

    let pack = envelope(
        4,
        References {
            sscc: Some(SSCC.into()),
            ..order("SO-1")
        },
        packed(),
    );
    let got = attempt(&erp, &pack).await;
    assert!(!booked(&erp, &got).1, "{got:?}");
    let model = if version >= 19 {
        "stock.package"
    } else {
        "stock.quant.package"
    };
    let packages = emu.records(model);
    assert_eq!(packages.len(), 1, "{model}");
    assert_eq!(packages[0]["name"], json!(SSCC));
    assert_eq!(packages[0]["shipping_weight"], json!(12.4));
    let package_id = packages[0]["id"].clone();
    assert!(
        emu.lines(so)
            .iter()
            .all(|l| l["result_package_id"] == package_id)
    );
    assert!(
        booked(&erp, &attempt(&erp, &pack).await).1,
        "a replayed pack is a duplicate"
    );

    let got = attempt(
        &erp,
        &on(
            5,
            "SO-1",
            EventDetail::Loaded {
                vehicle: "van-07".into(),
            },
        ),
    )
    .await;
    assert!(
        booked(&erp, &got).0.contains("nothing to record"),
        "{got:?}"
    );
    assert_eq!(emu.state(so), "assigned", "loading changes nothing");

    let depart = on(6, "SO-1", departed());
    let got = attempt(&erp, &depart).await;
    assert_eq!(
        booked(&erp, &got),
        ("WH/OUT/00001".into(), false),
        "{got:?}"
    );
    assert_eq!(emu.state(so), "done");
    let pod = on(7, "SO-1", delivered());
    let got = attempt(&erp, &pod).await;
    assert_eq!(
        booked(&erp, &got),
        ("WH/OUT/00001".into(), false),
        "{got:?}"
    );
    let pod_file = format!("dockline-pod-{}.json", pod.id);
    assert!(emu.attachments(so).contains(&pod_file));
    for replay in [&depart, &pod, &pick_a1, &pack] {
        let got = attempt(&erp, replay).await;
        assert_eq!(booked(&erp, &got), ("WH/OUT/00001".into(), true), "{got:?}");
    }
    let c = emu.counters();
    assert_eq!(
        (
            c.validations,
            c.backorders,
            c.backorder_wizards,
            c.auto_picks
        ),
        (1, 0, 0, 0),
        "validated once, everything picked, never by the auto-pick hook: {c:?}"
    );
    assert_eq!(
        (c.packages, c.attachments),
        (1, 4),
        "3 pick records + 1 proof of delivery: {c:?}"
    );
    assert_eq!(
        c.line_writes, 4,
        "3 quantity writes + 1 package link: {c:?}"
    );
    let other = if version >= 19 {
        "stock.quant.package."
    } else {
        "stock.package."
    };
    assert!(
        !emu.calls().iter().any(|call| call.starts_with(other)),
        "version {version} never calls {other}: {:?}",
        emu.calls()
    );
}

#[tokio::test]
async fn odoo_emulated_17_full_flow_over_jsonrpc() {
    full_flow(17, OdooTransport::JsonRpc).await;
}

#[tokio::test]
async fn odoo_emulated_18_full_flow_over_web_session() {
    full_flow(18, OdooTransport::Web).await;
}

#[tokio::test]
async fn odoo_emulated_19_full_flow_over_json2() {
    full_flow(19, OdooTransport::Json2).await;
}

#[tokio::test]
async fn odoo_emulated_19_full_flow_over_deprecated_jsonrpc() {
    full_flow(19, OdooTransport::JsonRpc).await;
}

/// A short pick: `button_validate` answers with the backorder wizard's
/// action dict; the adapter answers the wizard per `erp.odoo.backorder`.
async fn backorder_wizard(version: u8, transport: OdooTransport) {
    let emu = OdooEmulator::start(version).await;
    let a = emu.add_product(GTIN_A);
    let create = emu.add_delivery("SO-2", &[(a, 3.0)], "assigned");
    let cancel = emu.add_delivery("SO-3", &[(a, 3.0)], "assigned");
    let erp = adapter_with(emu.addr, version, transport, Backorder::Create);
    let erp_cancel = adapter_with(emu.addr, version, transport, Backorder::Cancel);

    booked(
        &erp,
        &attempt(&erp, &on(1, "SO-2", picked(GTIN_A, 2))).await,
    );
    let got = attempt(&erp, &on(2, "SO-2", departed())).await;
    assert_eq!(
        booked(&erp, &got),
        ("WH/OUT/00001".into(), false),
        "{got:?}"
    );
    assert!(
        got.request.contains("backorder wizard: create"),
        "{}",
        got.request
    );
    assert_eq!(emu.state(create), "done");
    let pickings = emu.pickings_of("SO-2");
    assert_eq!(
        pickings.len(),
        2,
        "the original and its backorder: {pickings:?}"
    );
    let backorder = &pickings[1];
    assert_eq!(backorder["backorder_id"], json!(create));
    let bo_id = backorder["id"].as_i64().expect("id");
    assert_eq!(
        emu.moves(bo_id)[0]["product_uom_qty"],
        json!(1.0),
        "the unpicked rest"
    );
    assert_eq!(
        emu.moves(create)[0]["quantity"],
        json!(2.0),
        "only what was picked shipped"
    );
    let c = emu.counters();
    assert_eq!(
        (
            c.backorder_wizards,
            c.backorders,
            c.validations,
            c.auto_picks
        ),
        (1, 1, 1, 0),
        "{c:?}"
    );

    // The proof of delivery finds the original, not the backorder.
    let got = attempt(&erp, &on(3, "SO-2", delivered())).await;
    assert_eq!(
        booked(&erp, &got),
        ("WH/OUT/00001".into(), false),
        "{got:?}"
    );
    assert_eq!(emu.state(bo_id), "assigned", "the backorder is not touched");
    assert_eq!(emu.counters().validations, 1);
    // A replayed pick of the original is a duplicate; a new pick naming only
    // the order is refused (it may be for the backorder), never swallowed;
    // one naming the backorder goes on the backorder.
    let got = attempt(&erp, &on(1, "SO-2", picked(GTIN_A, 2))).await;
    assert_eq!(booked(&erp, &got), ("WH/OUT/00001".into(), true), "{got:?}");
    let got = attempt(&erp, &on(10, "SO-2", picked(GTIN_A, 1))).await;
    let bo_name = backorder["name"].as_str().expect("name").to_owned();
    assert!(
        matches!(&got.outcome, AttemptOutcome::Rpc(RpcOutcome::Refused { message })
            if message.contains(&bo_name) && message.contains("refs.shipment")),
        "{got:?}"
    );
    let for_backorder = envelope(
        10,
        References {
            shipment: Some(bo_name.clone()),
            ..order("SO-2")
        },
        picked(GTIN_A, 1),
    );
    let got = attempt(&erp, &for_backorder).await;
    assert_eq!(booked(&erp, &got), (bo_name, false), "{got:?}");
    assert_eq!(line_of(&emu, bo_id, a)["picked"], json!(true));
    assert_eq!(line_of(&emu, bo_id, a)["quantity"], json!(1.0));

    booked(
        &erp_cancel,
        &attempt(&erp_cancel, &on(4, "SO-3", picked(GTIN_A, 2))).await,
    );
    let got = attempt(&erp_cancel, &on(5, "SO-3", departed())).await;
    assert!(!booked(&erp_cancel, &got).1, "{got:?}");
    assert!(
        got.request.contains("backorder wizard: cancel"),
        "{}",
        got.request
    );
    assert_eq!(emu.state(cancel), "done");
    assert_eq!(emu.pickings_of("SO-3").len(), 1, "no backorder");
    let c = emu.counters();
    assert_eq!(
        (
            c.backorder_wizards,
            c.backorders,
            c.remainders_cancelled,
            c.validations
        ),
        (2, 1, 1, 2),
        "{c:?}"
    );

    // Another module's pre-done wizard: the adapter cannot decide it.
    let other = emu.add_delivery("SO-4", &[(a, 1.0)], "assigned");
    booked(
        &erp,
        &attempt(&erp, &on(6, "SO-4", picked(GTIN_A, 1))).await,
    );
    emu.add_pre_done_wizard("confirm.stock.sms");
    let got = attempt(&erp, &on(7, "SO-4", departed())).await;
    assert!(
        matches!(&got.outcome, AttemptOutcome::Rpc(RpcOutcome::Refused { message }) if message.contains("confirm.stock.sms")),
        "{got:?}"
    );
    assert!(matches!(
        decide(&erp, &got),
        Decision::DeadLetter {
            class: FailureClass::Permanent,
            erp_rejected: true,
            ..
        }
    ));
    assert_eq!(emu.state(other), "assigned");
}

#[tokio::test]
async fn odoo_emulated_17_backorder_wizard_create_or_cancel() {
    backorder_wizard(17, OdooTransport::JsonRpc).await;
}

#[tokio::test]
async fn odoo_emulated_18_backorder_wizard_create_or_cancel() {
    backorder_wizard(18, OdooTransport::Web).await;
}

#[tokio::test]
async fn odoo_emulated_19_backorder_wizard_create_or_cancel() {
    backorder_wizard(19, OdooTransport::Json2).await;
}

#[tokio::test]
async fn odoo_emulated_auto_pick_hook_is_never_triggered() {
    let emu = OdooEmulator::start(17).await;
    let a = emu.add_product(GTIN_A);
    let b = emu.add_product(GTIN_B);
    let so = emu.add_delivery("SO-5", &[(a, 4.0), (b, 2.0)], "assigned");
    let erp = adapter(emu.addr, 17, OdooTransport::JsonRpc);
    for detail in [departed(), delivered()] {
        let got = attempt(&erp, &on(1, "SO-5", detail)).await;
        assert!(
            matches!(&got.outcome, AttemptOutcome::Rpc(RpcOutcome::NotReady { message }) if message.contains("auto-pick")),
            "{got:?}"
        );
        assert!(matches!(
            decide(&erp, &got),
            Decision::Retry {
                class: FailureClass::Parked,
                ..
            }
        ));
    }
    assert_eq!(emu.state(so), "assigned");
    assert!(
        !emu.calls()
            .contains(&"stock.picking.button_validate".to_string())
    );
    assert_eq!(emu.counters().auto_picks, 0);

    // What the guard prevents: a naive validate ships all reserved goods.
    let naive = reqwest::Client::new()
        .post(format!("http://{}/jsonrpc", emu.addr))
        .json(&json!({"jsonrpc": "2.0", "method": "call", "id": 1, "params": {"service": "object",
            "method": "execute_kw", "args": [DATABASE, 7, PASSWORD, "stock.picking", "button_validate", [[so]], {}]}}))
        .send()
        .await
        .expect("post")
        .json::<serde_json::Value>()
        .await
        .expect("json");
    assert_eq!(naive["result"], json!(true), "{naive}");
    assert_eq!(emu.counters().auto_picks, 1);
    assert_eq!(emu.state(so), "done");
    assert!(
        emu.lines(so).iter().all(|l| l["picked"] == json!(true)),
        "nothing was scanned, all shipped"
    );
}

#[tokio::test]
async fn odoo_emulated_session_expiry_mid_flow_logs_in_again_once() {
    for version in [17, 18] {
        let emu = OdooEmulator::start(version).await;
        let a = emu.add_product(GTIN_A);
        let so = emu.add_delivery("SO-6", &[(a, 1.0)], "assigned");
        let erp = adapter(emu.addr, version, OdooTransport::Web);
        booked(
            &erp,
            &attempt(&erp, &on(1, "SO-6", picked(GTIN_A, 1))).await,
        );
        assert_eq!(emu.counters().logins, 1);
        emu.expire_sessions();
        let got = attempt(&erp, &on(2, "SO-6", departed())).await;
        assert!(!booked(&erp, &got).1, "{got:?}");
        assert_eq!(emu.state(so), "done");
        let c = emu.counters();
        assert_eq!(
            (c.logins, c.sessions_expired, c.validations),
            (2, 1, 1),
            "one re-login: {c:?}"
        );

        // Expired again and the password changed: the endpoint halts, no event fails.
        emu.expire_sessions();
        emu.set_password("rotated");
        let got = attempt(&erp, &on(3, "SO-6", delivered())).await;
        assert!(
            matches!(&got.outcome, AttemptOutcome::Response(r) if r.status == 200 && r.body.contains("refused the login")),
            "{got:?}"
        );
        assert!(
            matches!(decide(&erp, &got), Decision::HaltEndpoint { .. }),
            "{got:?}"
        );
        assert_eq!(
            emu.attachments(so)
                .iter()
                .filter(|n| n.starts_with("dockline-pod"))
                .count(),
            0
        );
    }

    // JSON-2 has no session: a revoked or expired API key is a 401 that halts.
    let emu = OdooEmulator::start(19).await;
    let a = emu.add_product(GTIN_A);
    emu.add_delivery("SO-6", &[(a, 1.0)], "assigned");
    let erp = adapter(emu.addr, 19, OdooTransport::Json2);
    booked(
        &erp,
        &attempt(&erp, &on(1, "SO-6", picked(GTIN_A, 1))).await,
    );
    emu.revoke_api_key();
    let got = attempt(&erp, &on(2, "SO-6", departed())).await;
    assert!(
        matches!(&got.outcome, AttemptOutcome::Response(r) if r.status == 401 && r.body.contains("Invalid apikey")),
        "{got:?}"
    );
    assert!(matches!(decide(&erp, &got), Decision::HaltEndpoint { .. }));

    // `/jsonrpc` has no session: a changed password is `AccessDenied` on the
    // next call; one fresh `common.authenticate` answers false; it halts.
    let emu = OdooEmulator::start(17).await;
    let a = emu.add_product(GTIN_A);
    let so = emu.add_delivery("SO-6", &[(a, 1.0)], "assigned");
    let erp = adapter(emu.addr, 17, OdooTransport::JsonRpc);
    booked(
        &erp,
        &attempt(&erp, &on(1, "SO-6", picked(GTIN_A, 1))).await,
    );
    emu.set_password("rotated");
    let got = attempt(&erp, &on(2, "SO-6", departed())).await;
    assert!(
        matches!(&got.outcome, AttemptOutcome::Response(r)
            if r.body.contains("common.authenticate answered false")),
        "{got:?}"
    );
    assert!(matches!(decide(&erp, &got), Decision::HaltEndpoint { .. }));
    assert_eq!(
        (emu.counters().logins, emu.state(so).as_str()),
        (1, "assigned")
    );
}

#[tokio::test]
async fn odoo_emulated_serialization_failure_then_success() {
    for (version, transport) in [(18, OdooTransport::JsonRpc), (19, OdooTransport::Json2)] {
        let emu = OdooEmulator::start(version).await;
        let a = emu.add_product(GTIN_A);
        let so = emu.add_delivery("SO-7", &[(a, 2.0)], "assigned");
        let erp = adapter(emu.addr, version, transport);
        emu.fail_next("stock.move.line.write", Fault::Serialization);
        let pick = on(1, "SO-7", picked(GTIN_A, 2));
        let got = attempt(&erp, &pick).await;
        assert!(
            matches!(&got.outcome, AttemptOutcome::Rpc(RpcOutcome::Conflict { message }) if message.contains("could not serialize access")),
            "{version}: {got:?}"
        );
        assert!(
            matches!(
                decide(&erp, &got),
                Decision::Retry {
                    class: FailureClass::Conflict,
                    bounded: true,
                    same_key_only: true,
                    ..
                }
            ),
            "{got:?}"
        );
        assert!(
            !booked(&erp, &attempt(&erp, &pick).await).1,
            "the retry writes the line"
        );
        assert_eq!(line_of(&emu, so, a)["quantity"], json!(2.0));

        emu.fail_next("stock.picking.button_validate", Fault::Serialization);
        let depart = on(2, "SO-7", departed());
        let got = attempt(&erp, &depart).await;
        assert!(
            matches!(
                got.outcome,
                AttemptOutcome::Rpc(RpcOutcome::Conflict { .. })
            ),
            "{got:?}"
        );
        assert_eq!(emu.state(so), "assigned", "rolled back");
        assert!(!booked(&erp, &attempt(&erp, &depart).await).1);
        let c = emu.counters();
        assert_eq!(
            (c.validations, c.faults, c.attachments, c.line_writes),
            (1, 2, 1, 1),
            "{c:?}"
        );
    }
}

#[tokio::test]
async fn odoo_emulated_lost_response_after_commit_books_once() {
    for (version, transport) in [
        (17, OdooTransport::JsonRpc),
        (18, OdooTransport::Web),
        (19, OdooTransport::Json2),
    ] {
        let emu = OdooEmulator::start(version).await;
        let a = emu.add_product(GTIN_A);
        let b = emu.add_product(GTIN_B);
        let so = emu.add_delivery("SO-8", &[(a, 2.0), (b, 2.0)], "assigned");
        let proxy = LostResponseProxy::start(emu.addr).await.expect("proxy");
        let erp = adapter(proxy.addr(), version, transport);
        let package_model = if version >= 19 {
            "stock.package"
        } else {
            "stock.quant.package"
        };
        let cases = [
            (
                on(1, "SO-8", picked(GTIN_A, 2)),
                marker(transport, "ir.attachment", "create"),
            ),
            (
                on(2, "SO-8", picked(GTIN_B, 1)),
                marker(transport, "stock.move.line", "write"),
            ),
            (
                on(3, "SO-8", packed()),
                marker(transport, package_model, "create"),
            ),
            // Short on B: the wizard's `process` commits the validation and the backorder.
            (
                on(4, "SO-8", departed()),
                marker(transport, "stock.backorder.confirmation", "process"),
            ),
            (
                on(5, "SO-8", delivered()),
                marker(transport, "ir.attachment", "create"),
            ),
        ];
        for (env, lose) in &cases {
            let before = proxy.lost();
            proxy.lose_response_containing(lose);
            let first = attempt(&erp, env).await;
            assert_eq!(proxy.lost(), before + 1, "{version} {lose}: {first:?}");
            assert!(
                matches!(
                    first.outcome,
                    AttemptOutcome::Transport {
                        kind: TransportError::ResetAfterSend,
                        ..
                    }
                ),
                "{version} {lose}: {first:?}"
            );
            assert!(matches!(
                decide(&erp, &first),
                Decision::Retry {
                    same_key_only: true,
                    ..
                }
            ));
            let retry = attempt(&erp, env).await;
            booked(&erp, &retry);
        }
        assert_eq!(emu.state(so), "done");
        assert_eq!(line_of(&emu, so, a)["quantity"], json!(2.0));
        assert_eq!(
            line_of(&emu, so, b)["quantity"],
            json!(1.0),
            "one pick of 1, not 2"
        );
        let c = emu.counters();
        assert_eq!(
            (
                c.validations,
                c.backorders,
                c.backorder_wizards,
                c.packages,
                c.attachments
            ),
            (1, 1, 1, 1, 3),
            "{version}: every effect once despite five lost answers: {c:?}"
        );
        assert_eq!(emu.attachments(so).len(), 3);
        // The lost `button_validate` answer (not the wizard's) on a fresh order.
        let so9 = emu.add_delivery("SO-9", &[(a, 1.0)], "assigned");
        booked(
            &erp,
            &attempt(&erp, &on(6, "SO-9", picked(GTIN_A, 1))).await,
        );
        proxy.lose_response_containing(&marker(transport, "stock.picking", "button_validate"));
        let depart = on(7, "SO-9", departed());
        let first = attempt(&erp, &depart).await;
        assert!(
            matches!(first.outcome, AttemptOutcome::Transport { .. }),
            "{first:?}"
        );
        assert!(
            booked(&erp, &attempt(&erp, &depart).await).1,
            "the retry reads done"
        );
        assert_eq!(emu.state(so9), "done");
        assert_eq!(emu.counters().validations, 2);
    }
}

#[tokio::test]
async fn odoo_emulated_already_done_in_odoo_is_success() {
    let emu = OdooEmulator::start(18).await;
    let a = emu.add_product(GTIN_A);
    let so = emu.add_delivery("SO-10", &[(a, 1.0)], "assigned");
    emu.validate_by_hand(so);
    let erp = adapter(emu.addr, 18, OdooTransport::JsonRpc);
    for (n, detail) in [(1, picked(GTIN_A, 1)), (2, packed()), (3, departed())] {
        let got = attempt(&erp, &on(n, "SO-10", detail)).await;
        assert_eq!(
            got.outcome,
            AttemptOutcome::Rpc(RpcOutcome::AlreadyThere {
                document: "WH/OUT/00001".into()
            }),
            "{got:?}"
        );
    }
    // The proof of delivery is still attached, once.
    let pod = on(4, "SO-10", delivered());
    assert!(!booked(&erp, &attempt(&erp, &pod).await).1);
    assert!(booked(&erp, &attempt(&erp, &pod).await).1);
    let c = emu.counters();
    assert_eq!(
        (c.validations, c.attachments, c.line_writes),
        (1, 1, 0),
        "{c:?}"
    );
}

#[tokio::test]
async fn odoo_emulated_refusals_parks_and_version_mismatch() {
    let emu = OdooEmulator::start(18).await;
    let a = emu.add_product(GTIN_A);
    emu.add_delivery("SO-11", &[(a, 1.0)], "confirmed");
    emu.add_delivery("SO-12", &[(a, 1.0)], "cancel");
    emu.add_delivery("SO-13", &[(a, 1.0)], "assigned");
    let erp = adapter(emu.addr, 18, OdooTransport::JsonRpc);
    let parked = |a: &Attempt| {
        matches!(
            decide(&erp, a),
            Decision::Retry {
                class: FailureClass::Parked,
                ..
            }
        )
    };
    let rejected = |a: &Attempt| {
        matches!(
            decide(&erp, a),
            Decision::DeadLetter {
                class: FailureClass::Permanent,
                erp_rejected: true,
                ..
            }
        )
    };
    let got = attempt(&erp, &on(1, "SO-11", picked(GTIN_A, 1))).await;
    assert!(
        parked(&got) && format!("{got:?}").contains("not reserved"),
        "{got:?}"
    );
    let got = attempt(&erp, &on(2, "SO-404", picked(GTIN_A, 1))).await;
    assert!(
        parked(&got) && format!("{got:?}").contains("SO-404"),
        "{got:?}"
    );
    let got = attempt(&erp, &on(3, "SO-12", picked(GTIN_A, 1))).await;
    assert!(
        rejected(&got) && format!("{got:?}").contains("cancelled"),
        "{got:?}"
    );
    let got = attempt(&erp, &on(4, "SO-13", picked("0000000000000", 1))).await;
    assert!(
        rejected(&got) && format!("{got:?}").contains("no product"),
        "{got:?}"
    );
    let got = attempt(&erp, &on(5, "SO-13", packed())).await;
    assert!(parked(&got), "a pack before its pick waits: {got:?}");
    emu.fail_next(
        "stock.move.line.write",
        Fault::User("The quantity 1 exceeds what is allowed.".into()),
    );
    let got = attempt(&erp, &on(6, "SO-13", picked(GTIN_A, 1))).await;
    assert!(
        rejected(&got) && format!("{got:?}").contains("exceeds"),
        "{got:?}"
    );
    let got = attempt(&erp, &envelope(7, References::default(), picked(GTIN_A, 1))).await;
    assert!(rejected(&got), "{got:?}");

    // Versions: a 17 config against an 18 server is told which to set; a
    // 19 JSON-2 config against an 18 server meets a 404 and halts.
    let wrong = adapter(emu.addr, 17, OdooTransport::JsonRpc);
    let got = attempt(&wrong, &on(8, "SO-13", departed())).await;
    assert!(
        matches!(&got.outcome, AttemptOutcome::Rpc(RpcOutcome::Fault { message }) if message.contains("set erp.odoo.version = 18")),
        "{got:?}"
    );
    let json2 = adapter(emu.addr, 19, OdooTransport::Json2);
    let got = attempt(&json2, &on(9, "SO-13", departed())).await;
    assert!(
        matches!(&got.outcome, AttemptOutcome::Response(r) if r.status == 404),
        "{got:?}"
    );
    assert!(matches!(
        decide(&json2, &got),
        Decision::HaltEndpoint { .. }
    ));
}

/// Through the collector's real delivery path (inbox, lanes, policy,
/// verdicts, dead letters) with `kind = "odoo"` chosen by the config.
#[tokio::test]
async fn odoo_emulated_delivery_path_books_and_dead_letters_with_attempts() {
    let emu = OdooEmulator::start(19).await;
    let a = emu.add_product(GTIN_A);
    let good = emu.add_delivery("SO-20", &[(a, 1.0)], "assigned");
    emu.add_delivery("SO-21", &[(a, 1.0)], "assigned");
    emu.add_delivery("SO-22", &[(a, 1.0)], "cancel");
    // One serialization failure on the way: retried, booked once.
    emu.fail_next("stock.picking.button_validate", Fault::Serialization);
    let cfg = odoo_config(emu.addr, 19, OdooTransport::Json2, Backorder::Create);
    let events = vec![
        on(1, "SO-20", picked(GTIN_A, 1)),
        on(2, "SO-21", picked("0000000000000", 1)),
        on(3, "SO-20", packed()),
        on(4, "SO-22", picked(GTIN_A, 1)),
        on(5, "SO-20", departed()),
        on(6, "SO-20", delivered()),
    ];
    let dir = tempfile::tempdir().expect("tempdir");
    let mut inbox = Inbox::open(&dir.path().join("inbox.db")).expect("inbox");
    let batch = Batch {
        v: 1,
        device: DeviceId::new("hh-01").expect("id"),
        epoch: 1,
        first_held: 1,
        events,
        shed: Vec::new(),
    };
    inbox
        .store_batch(&SiteId::new("dc-north").expect("site"), &batch, 0)
        .expect("store");
    let inbox = InboxHandle::new(inbox);
    let (tx, mut acks) = mpsc::channel(64);
    let delivery = Arc::new(
        Delivery::new(&cfg, inbox.clone(), tx)
            .expect("delivery with kind = odoo")
            .with_jitter(Box::new(FixedJitter(0.5))),
    );
    let trigger = ShutdownTrigger::new();
    let task =
        tokio::spawn(Arc::clone(&delivery).run(Arc::new(Notify::new()), trigger.subscribe()));
    let mut verdicts = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while verdicts.len() < 6 {
        let p = tokio::time::timeout_at(deadline, acks.recv())
            .await
            .unwrap_or_else(|_| panic!("only {verdicts:?}"))
            .expect("open");
        let ack: Ack = codec::decode(&p.payload).expect("ack");
        verdicts.extend(ack.verdicts.into_iter().map(|v| (v.seq, v.outcome)));
    }
    trigger.trigger();
    task.await.expect("delivery stops");
    verdicts.sort_by_key(|(seq, _)| *seq);
    let doc = |d: &str| Outcome::Booked { document: d.into() };
    assert_eq!(verdicts[0], (1, doc("WH/OUT/00001")));
    assert_eq!(verdicts[2], (3, doc("WH/OUT/00001")));
    assert_eq!(verdicts[4], (5, doc("WH/OUT/00001")));
    assert_eq!(verdicts[5], (6, doc("WH/OUT/00001")));
    assert!(
        matches!(&verdicts[1], (2, Outcome::Rejected { reason }) if reason.contains("no product")),
        "{verdicts:?}"
    );
    assert!(
        matches!(&verdicts[3], (4, Outcome::Rejected { reason }) if reason.contains("cancelled")),
        "{verdicts:?}"
    );
    assert_eq!(emu.state(good), "done");
    let c = emu.counters();
    assert_eq!((c.validations, c.faults, c.packages), (1, 1, 1), "{c:?}");

    let stats = inbox.call(|i| i.stats()).await.expect("stats");
    assert_eq!(
        (
            stats.booked,
            stats.rejected,
            stats.dead_letters,
            stats.pending
        ),
        (4, 2, 2, 0),
        "{stats:?}"
    );
    let dead = inbox
        .call(|i| i.dead_letters(false, 10))
        .await
        .expect("dead letters");
    assert_eq!(dead.len(), 2);
    for d in &dead {
        assert!(
            d.erp_rejected && d.class == "permanent" && d.attempts >= 1,
            "{d:?}"
        );
        let full = inbox
            .call({
                let id = d.id;
                move |i| i.dead_letter(id)
            })
            .await
            .expect("dead letter")
            .expect("exists");
        let last = full.attempts.last().expect("an attempt");
        assert!(
            last.request
                .starts_with("odoo 19 json2 prod stock.picking origin="),
            "{last:?}"
        );
        assert!(
            full.envelope.is_ok(),
            "the original event is kept for replay"
        );
    }
}
