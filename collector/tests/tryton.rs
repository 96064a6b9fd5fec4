//! The Tryton adapter against a real trytond 8.2 + trytond-stock on SQLite
//! (started by the test on a loopback port; see `support/tryton_server.rs`),
//! with a proxy between them that can lose a response after Tryton has
//! committed. Skipped with a printed reason unless `DOCKLINE_TEST_TRYTON=1`.
//!
//! What it shows, all read back from Tryton itself (the shipment's state,
//! its transition log `ir.model.log`, its attachments):
//! - pick → pack → load → depart → deliver walks one shipment through
//!   waiting → assigned → picked → packed → shipped → done, each state
//!   entered once, and the proof of delivery is attached once;
//! - a repeated or replayed event is booked as a duplicate without a call;
//! - a response lost after `pick`, `pack`, the POD attachment or `do` is
//!   retried: the retry reads the state, books the event as a duplicate, and
//!   Tryton's log shows no state entered twice and one attachment;
//! - a pack or proof of delivery before its pick is parked, as are a draft
//!   shipment and an unknown reference; a cancelled shipment is refused;
//! - a wrong password halts the endpoint; the probe reads the version.

#[path = "support/lost_response.rs"]
mod lost_response;
mod support;
#[path = "support/tryton_server.rs"]
mod tryton_server;

use anyhow::Result;
use dockline_collector::delivery::policy::Decision;
use dockline_collector::erp::ErpConfig;
use dockline_collector::erp::outcome::{AttemptOutcome, FailureClass, RpcOutcome, TransportError};
use dockline_collector::erp::tryton::TrytonAdapter;
use dockline_collector::erp::tryton::TrytonConfig;
use dockline_collector::erp::{Attempt, ErpAdapter};
use dockline_protocol::{
    BusinessEvent, DeviceId, Envelope, EventDetail, EventId, Payload, Priority, ProofOfDelivery,
    References, TimeSource,
};
use lost_response::LostResponseProxy;
use tryton_server::{ADMIN_PASSWORD, DATABASE, TrytonServer};

fn envelope(n: u8, order: &str, detail: EventDetail) -> Envelope {
    Envelope {
        v: 1,
        device: DeviceId::new("hh-01").expect("device id"),
        epoch: 1,
        seq: u64::from(n),
        id: EventId([n; 16]),
        captured_ms: 1_700_000_000_000 + i64::from(n),
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

fn picked() -> EventDetail {
    EventDetail::Picked {
        item: "09506000134352".into(),
        quantity: 1,
        lot: None,
    }
}

fn packed() -> EventDetail {
    EventDetail::Packed {
        quantity: 1,
        weight: None,
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
        pieces: 1,
        signature_ref: Some("sig-1".into()),
        photo_ref: None,
        position: None,
    })
}

fn adapter(addr: std::net::SocketAddr, user: &str, password: &str) -> TrytonAdapter {
    let cfg = ErpConfig {
        timeout_ms: 10_000,
        ..ErpConfig::tryton(
            format!("http://{addr}/"),
            TrytonConfig {
                database: DATABASE.into(),
                user: user.into(),
                password: password.into(),
                assign_force: false,
                language: "en".into(),
            },
        )
    };
    TrytonAdapter::new(&cfg).expect("adapter")
}

async fn attempt(adapter: &TrytonAdapter, env: &Envelope) -> Attempt {
    support::attempt(adapter, "dc-north", env).await
}

/// What delivery would do with the attempt (the real policy).
fn decide(adapter: &TrytonAdapter, a: &Attempt) -> Decision {
    support::decide(adapter, a)
}

fn booked(decision: &Decision) -> Option<(String, bool)> {
    match decision {
        Decision::Booked {
            document,
            duplicate,
        } => Some((document.clone(), *duplicate)),
        _ => None,
    }
}

/// The expected transition log: the setup's own `wait`, then `list`.
fn transitions(list: &[&str]) -> Vec<String> {
    std::iter::once(&"waiting")
        .chain(list)
        .map(|s| format!("state:{s}"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tryton_books_each_event_once_through_lost_responses() -> Result<()> {
    let Some(venv) =
        tryton_server::venv_or_skip("tryton_books_each_event_once_through_lost_responses")
    else {
        return Ok(());
    };
    let server = tokio::task::spawn_blocking(move || {
        TrytonServer::start(
            &venv,
            &["SO-1", "SO-2", "SO-3", "SO-4:draft", "SO-5:cancelled"],
        )
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
    let erp = adapter(proxy.addr(), "admin", ADMIN_PASSWORD);
    assert!(erp.probe().await, "common.server.version answers");

    // --- the whole flow on SO-1 ---
    let pick = envelope(1, "SO-1", picked());
    let a = attempt(&erp, &pick).await;
    assert_eq!(
        booked(&decide(&erp, &a)),
        Some(("shipment 1 [SO-1]".into(), false)),
        "{a:?}"
    );
    assert_eq!(server.state("SO-1").await?, "picked");
    assert_eq!(
        server.transitions("SO-1").await?,
        transitions(&["assigned", "picked"])
    );
    // A second pick of the same order (another line) needs nothing.
    let a = attempt(&erp, &envelope(2, "SO-1", picked())).await;
    assert_eq!(
        a.outcome,
        AttemptOutcome::Rpc(RpcOutcome::AlreadyThere {
            document: "shipment 1 [SO-1]".into()
        })
    );
    for (n, detail, state) in [
        (3, packed(), "packed"),
        (
            4,
            EventDetail::Loaded {
                vehicle: "van-07".into(),
            },
            "packed",
        ),
        (5, departed(), "shipped"),
        (6, delivered(), "done"),
    ] {
        let a = attempt(&erp, &envelope(n, "SO-1", detail)).await;
        let (_, duplicate) = booked(&decide(&erp, &a)).unwrap_or_else(|| panic!("{a:?}"));
        assert!(!duplicate, "{a:?}");
        assert_eq!(server.state("SO-1").await?, state, "after {}", a.request);
    }
    let pod = envelope(6, "SO-1", delivered());
    let pod_file = format!("dockline-pod-{}.json", pod.id);
    assert_eq!(server.attachments("SO-1").await?, vec![pod_file.clone()]);
    // Replays of a booked event (after a dead-letter replay, say) change nothing.
    for env in [&pod, &pick] {
        let a = attempt(&erp, env).await;
        assert_eq!(
            booked(&decide(&erp, &a)),
            Some(("shipment 1 [SO-1]".into(), true)),
            "{a:?}"
        );
    }
    assert_eq!(server.attachments("SO-1").await?, vec![pod_file]);
    assert_eq!(
        server.transitions("SO-1").await?,
        transitions(&["assigned", "picked", "packed", "shipped", "done"])
    );

    // --- out of order on SO-2: parked, nothing pressed ---
    for (n, detail) in [(11, packed()), (12, delivered()), (13, departed())] {
        let a = attempt(&erp, &envelope(n, "SO-2", detail)).await;
        assert!(
            matches!(&a.outcome, AttemptOutcome::Rpc(RpcOutcome::NotReady { message }) if message.contains("waiting")),
            "{a:?}"
        );
        assert!(
            matches!(
                decide(&erp, &a),
                Decision::Retry {
                    class: FailureClass::Parked,
                    ..
                }
            ),
            "{a:?}"
        );
    }
    assert_eq!(server.state("SO-2").await?, "waiting");
    assert_eq!(server.transitions("SO-2").await?, transitions(&[]));
    assert!(server.attachments("SO-2").await?.is_empty());

    // --- a draft, a cancelled and an unknown shipment ---
    let a = attempt(&erp, &envelope(21, "SO-4", picked())).await;
    assert!(
        matches!(&a.outcome, AttemptOutcome::Rpc(RpcOutcome::NotReady { message }) if message.contains("draft")),
        "{a:?}"
    );
    let a = attempt(&erp, &envelope(22, "SO-5", picked())).await;
    assert!(
        matches!(
            decide(&erp, &a),
            Decision::DeadLetter {
                class: FailureClass::Permanent,
                erp_rejected: true,
                ..
            }
        ),
        "{a:?}"
    );
    let a = attempt(&erp, &envelope(23, "SO-404", picked())).await;
    assert!(
        matches!(&a.outcome, AttemptOutcome::Rpc(RpcOutcome::NotReady { message }) if message.contains("SO-404")),
        "{a:?}"
    );

    // --- lost responses on SO-3: Tryton committed, the collector never heard ---
    let lost_then_duplicate = |method: &'static str, env: Envelope| {
        let erp = &erp;
        let proxy = &proxy;
        async move {
            proxy.lose_response_of(method);
            let first = attempt(erp, &env).await;
            assert!(
                matches!(
                    first.outcome,
                    AttemptOutcome::Transport {
                        kind: TransportError::ResetAfterSend,
                        ..
                    }
                ),
                "losing the answer to {method}: {first:?}"
            );
            assert!(
                matches!(
                    decide(erp, &first),
                    Decision::Retry {
                        same_key_only: true,
                        ..
                    }
                ),
                "{first:?}"
            );
            attempt(erp, &env).await
        }
    };
    let before = proxy.lost();
    let retry = lost_then_duplicate(
        "model.stock.shipment.out.pick",
        envelope(31, "SO-3", picked()),
    )
    .await;
    assert_eq!(
        booked(&decide(&erp, &retry)),
        Some(("shipment 3 [SO-3]".into(), true)),
        "the retry reads `picked` and presses nothing: {retry:?}"
    );
    let retry = lost_then_duplicate(
        "model.stock.shipment.out.pack",
        envelope(32, "SO-3", packed()),
    )
    .await;
    assert_eq!(
        booked(&decide(&erp, &retry)),
        Some(("shipment 3 [SO-3]".into(), true)),
        "{retry:?}"
    );
    // The proof of delivery: first the attachment's answer is lost, then
    // the answer to `do`; the third attempt finds both done.
    let pod = envelope(33, "SO-3", delivered());
    let second = lost_then_duplicate("model.ir.attachment.create", pod.clone()).await;
    assert!(
        matches!(booked(&decide(&erp, &second)), Some((_, false))),
        "the retry finds the attachment and presses `do`: {second:?}"
    );
    assert_eq!(server.state("SO-3").await?, "done");
    let again = attempt(&erp, &pod).await;
    assert_eq!(
        booked(&decide(&erp, &again)),
        Some(("shipment 3 [SO-3]".into(), true))
    );
    assert_eq!(proxy.lost() - before, 3, "three answers were lost");
    assert_eq!(
        server.attachments("SO-3").await?,
        vec![format!("dockline-pod-{}.json", pod.id)],
        "one attachment despite the lost answer"
    );
    assert_eq!(
        server.transitions("SO-3").await?,
        transitions(&["assigned", "picked", "packed", "done"]),
        "no state entered twice"
    );

    // The answer to `do` lost, on SO-2 walked from the start.
    for (n, detail) in [(41, picked()), (42, packed())] {
        let a = attempt(&erp, &envelope(n, "SO-2", detail)).await;
        assert!(booked(&decide(&erp, &a)).is_some(), "{a:?}");
    }
    let retry = lost_then_duplicate(
        "model.stock.shipment.out.do",
        envelope(43, "SO-2", delivered()),
    )
    .await;
    assert_eq!(
        booked(&decide(&erp, &retry)),
        Some(("shipment 2 [SO-2]".into(), true)),
        "{retry:?}"
    );
    assert_eq!(
        server.transitions("SO-2").await?,
        transitions(&["assigned", "picked", "packed", "done"])
    );
    assert_eq!(server.attachments("SO-2").await?.len(), 1);

    // --- a wrong password (a throwaway login: admin's failures are rate-limited) ---
    let wrong = adapter(server.addr, "nobody", "wrong");
    let a = attempt(&wrong, &envelope(51, "SO-1", picked())).await;
    assert!(
        matches!(&a.outcome, AttemptOutcome::Response(r) if r.status == 401),
        "{a:?}"
    );
    assert!(
        matches!(decide(&wrong, &a), Decision::HaltEndpoint { .. }),
        "{a:?}"
    );
    Ok(())
}
