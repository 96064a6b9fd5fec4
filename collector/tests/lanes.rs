//! Business lanes, end to end inside one process: the real inbox and lane
//! scheduler ([`Delivery`]) with a fake ERP adapter.
//!
//! The property: whatever order the devices' batches arrive in (any
//! permutation across and within devices, with duplicates; the inbox's
//! watermark restores each device's own order), the ERP books every event
//! exactly once, each lane's events in business order (pick → pack → load →
//! depart → arrive → deliver), and each device's events of one lane in
//! sequence order. The fake ERP loses some responses after committing, so
//! retries happen and must not double an effect.
//!
//! Also: a proof of delivery whose order's other steps never come is parked
//! for `lane_park_max_ms`, then delivered and counted as out of order; a
//! dead letter blocks its lane only, and a replay unblocks it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dockline_collector::delivery::Delivery;
use dockline_collector::delivery::backoff::FixedJitter;
use dockline_collector::delivery::lane;
use dockline_collector::erp::ErpConfig;
use dockline_collector::erp::outcome::{AttemptOutcome, Credentials, Response, TransportError};
use dockline_collector::erp::{AdapterFuture, Attempt, ErpAdapter, ErpEvent};
use dockline_collector::inbox::{Inbox, InboxHandle};
use dockline_collector::shutdown::ShutdownTrigger;
use dockline_protocol::{
    Batch, BusinessEvent, DeviceId, Envelope, EventDetail, EventId, ExceptionKind, Payload,
    Priority, ProofOfDelivery, References, SiteId, TimeSource,
};
use proptest::prelude::*;
use tokio::sync::{Notify, mpsc};

/// One booking at the fake ERP.
#[derive(Debug, Clone)]
struct Effect {
    id: String,
    device: String,
    seq: u64,
    lane: String,
    stage: Option<u8>,
}

/// An ERP that books each event id once (as an ERP honouring the
/// idempotency key does) and loses the answer to some first bookings.
#[derive(Debug, Default)]
struct FakeErp {
    effects: Mutex<Vec<Effect>>,
    calls: Mutex<HashMap<String, u32>>,
    /// Lose the response of every n-th new booking (0: never).
    lose_every: u64,
    /// Refuse (422) events whose device and sequence are listed, until cleared.
    refuse: Mutex<HashSet<(String, u64)>>,
}

#[derive(Debug, Clone)]
struct Adapter(Arc<FakeErp>);

impl Adapter {
    fn book(&self, event: ErpEvent<'_>) -> Attempt {
        let env = event.envelope;
        let id = env.id.to_string();
        let erp = &self.0;
        *erp.calls
            .lock()
            .expect("lock")
            .entry(id.clone())
            .or_default() += 1;
        let response = |status: u16, body: &str| Attempt {
            outcome: AttemptOutcome::Response(Response {
                status,
                retry_after: None,
                location: None,
                body: body.into(),
                class: None,
            }),
            request: format!("fake {id}"),
        };
        if erp
            .refuse
            .lock()
            .expect("lock")
            .contains(&(env.device.to_string(), env.seq))
        {
            return response(422, r#"{"message":"refused by the test"}"#);
        }
        let mut effects = erp.effects.lock().expect("lock");
        if effects.iter().any(|e| e.id == id) {
            return response(200, r#"{"document":"again"}"#);
        }
        effects.push(Effect {
            id: id.clone(),
            device: env.device.to_string(),
            seq: env.seq,
            lane: lane::lane_key(&env.device, event.event),
            stage: lane::stage(&event.event.detail),
        });
        let n = effects.len() as u64;
        drop(effects);
        if erp.lose_every > 0 && n.is_multiple_of(erp.lose_every) {
            return Attempt {
                outcome: AttemptOutcome::Transport {
                    kind: TransportError::TimeoutAfterSend,
                    detail: "response lost after commit (test)".into(),
                },
                request: format!("fake {id}"),
            };
        }
        response(201, &format!(r#"{{"document":"D-{n}"}}"#))
    }
}

impl ErpAdapter for Adapter {
    fn kind(&self) -> &'static str {
        "fake"
    }
    fn deliver<'a>(&'a self, event: ErpEvent<'a>) -> AdapterFuture<'a, Attempt> {
        let attempt = self.book(event);
        Box::pin(async move { attempt })
    }
    fn probe(&self) -> AdapterFuture<'_, bool> {
        Box::pin(async { true })
    }
    fn credentials(&self) -> Credentials {
        Credentials::Fixed
    }
}

fn erp_config(park_max_ms: u64) -> ErpConfig {
    ErpConfig {
        retry_min_ms: 1,
        retry_max_ms: 5,
        concurrency: 3,
        max_attempts: 2,
        breaker_failures: 1000,
        lane_park_max_ms: park_max_ms,
        ..ErpConfig::new(
            "http://127.0.0.1:9/unused",
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        )
    }
}

/// A business event of `order` (`None`: no reference, the device's lane).
fn event(stage: Option<u8>, order: Option<&str>) -> BusinessEvent {
    let detail = match stage {
        Some(0) => EventDetail::Picked {
            item: "09506000134352".into(),
            quantity: 1,
            lot: None,
        },
        Some(1) => EventDetail::Packed {
            quantity: 1,
            weight: None,
        },
        Some(2) => EventDetail::Loaded {
            vehicle: "VAN-7".into(),
        },
        Some(3) => EventDetail::Departed {
            vehicle: "VAN-7".into(),
            position: None,
        },
        Some(4) => EventDetail::Arrived {
            vehicle: "VAN-7".into(),
            position: None,
        },
        Some(_) => EventDetail::Delivered(ProofOfDelivery {
            received_by: "J. Smith".into(),
            pieces: 1,
            signature_ref: None,
            photo_ref: None,
            position: None,
        }),
        None => EventDetail::Exception {
            kind: ExceptionKind::Other,
            note: "look".into(),
        },
    };
    BusinessEvent {
        detail,
        refs: References {
            order: order.map(str::to_owned),
            ..References::default()
        },
    }
}

fn envelope(device: &str, seq: u64, e: BusinessEvent) -> Envelope {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&seq.to_be_bytes());
    id[8..8 + device.len().min(8)].copy_from_slice(&device.as_bytes()[..device.len().min(8)]);
    Envelope {
        v: 1,
        device: DeviceId::new(device).expect("device id"),
        epoch: 1,
        seq,
        id: EventId(id),
        captured_ms: 1_764_000_000_000,
        time_source: TimeSource::Ntp,
        priority: Priority::MustDeliver,
        payload: Payload::Event(e),
    }
}

/// A delivery over a fresh inbox in a temporary directory (on tmpfs when the
/// machine has one: the inbox fsyncs every batch).
struct Rig {
    _dir: tempfile::TempDir,
    inbox: InboxHandle,
    delivery: Arc<Delivery>,
    wake: Arc<Notify>,
    trigger: ShutdownTrigger,
    task: tokio::task::JoinHandle<()>,
    erp: Arc<FakeErp>,
}

impl Rig {
    fn start(erp: FakeErp, park_max_ms: u64) -> Rig {
        let dir = if std::path::Path::new("/dev/shm").is_dir() {
            tempfile::tempdir_in("/dev/shm")
        } else {
            tempfile::tempdir()
        }
        .expect("tempdir");
        let inbox = InboxHandle::new(Inbox::open(&dir.path().join("inbox.db")).expect("inbox"));
        let erp = Arc::new(erp);
        let (tx, mut rx) = mpsc::channel(64);
        // Verdict acks are not what these tests check; keep the channel open.
        tokio::spawn(async move { while rx.recv().await.is_some() {} });
        let delivery = Arc::new(
            Delivery::with_adapter(
                &erp_config(park_max_ms),
                Box::new(Adapter(Arc::clone(&erp))),
                inbox.clone(),
                tx,
            )
            .with_jitter(Box::new(FixedJitter(0.5))),
        );
        let wake = Arc::new(Notify::new());
        let trigger = ShutdownTrigger::new();
        let task = tokio::spawn(Arc::clone(&delivery).run(Arc::clone(&wake), trigger.subscribe()));
        Rig {
            _dir: dir,
            inbox,
            delivery,
            wake,
            trigger,
            task,
            erp,
        }
    }

    async fn store(&self, batch: Batch) {
        let site = SiteId::new("dc-north").expect("site");
        self.inbox
            .call(move |i| i.store_batch(&site, &batch, dockline_collector::now_ms()))
            .await
            .expect("store");
        self.wake.notify_one();
    }

    /// Waits until the ERP holds `n` effects and nothing is pending.
    async fn settled(&self, n: usize, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let effects = self.erp.effects.lock().expect("lock").len();
            let pending = self.inbox.call(|i| i.stats()).await.expect("stats").pending;
            if effects >= n && pending == 0 {
                return true;
            }
            if tokio::time::Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    async fn stop(self) -> Arc<FakeErp> {
        self.trigger.trigger();
        let _ = self.task.await;
        drop(self.delivery);
        self.erp
    }
}

/// The events of one scenario, per device in sequence order.
#[derive(Debug, Clone)]
struct Scenario {
    /// device → its events in the order it recorded them.
    devices: BTreeMap<String, Vec<BusinessEvent>>,
}

/// Orders picked on one of two handhelds and driven by one van; each
/// device interleaves its orders at random but keeps each order's steps in
/// business order; pickers also record some events without a reference.
fn scenario() -> impl Strategy<Value = Scenario> {
    (1usize..5, any::<u64>()).prop_map(|(orders, seed)| {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut queues: BTreeMap<String, Vec<Vec<BusinessEvent>>> = BTreeMap::new();
        for o in 0..orders {
            let order = format!("SO-{}", 1001 + o);
            let picker = if rng.random_bool(0.5) {
                "hh-01"
            } else {
                "hh-02"
            };
            let mut pick_side: Vec<BusinessEvent> = (0..rng.random_range(1..=3))
                .map(|_| event(Some(0), Some(&order)))
                .collect();
            if rng.random_bool(0.3) {
                pick_side.push(event(None, Some(&order)));
            }
            pick_side.push(event(Some(1), Some(&order)));
            pick_side.push(event(Some(2), Some(&order)));
            queues.entry(picker.into()).or_default().push(pick_side);
            let drive: Vec<BusinessEvent> = (3..=5).map(|s| event(Some(s), Some(&order))).collect();
            queues.entry("van-01".into()).or_default().push(drive);
        }
        for picker in ["hh-01", "hh-02"] {
            if rng.random_bool(0.5) {
                queues
                    .entry(picker.into())
                    .or_default()
                    .push(vec![event(None, None), event(Some(0), None)]);
            }
        }
        let mut devices = BTreeMap::new();
        for (device, mut lists) in queues {
            // A random merge that keeps each list's order.
            let mut merged = Vec::new();
            while !lists.is_empty() {
                let i = rng.random_range(0..lists.len());
                merged.push(lists[i].remove(0));
                if lists[i].is_empty() {
                    lists.remove(i);
                }
            }
            devices.insert(device, merged);
        }
        Scenario { devices }
    })
}

/// Cuts each device's events into batches and shuffles them all together,
/// with some batches sent twice.
fn arrivals(s: &Scenario, seed: u64) -> Vec<Batch> {
    use rand::seq::SliceRandom;
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut batches = Vec::new();
    for (device, events) in &s.devices {
        let mut seq = 1u64;
        let mut rest: &[BusinessEvent] = events;
        while !rest.is_empty() {
            let n = rng.random_range(1..=3).min(rest.len());
            let envs: Vec<Envelope> = rest[..n]
                .iter()
                .enumerate()
                .map(|(k, e)| envelope(device, seq + k as u64, e.clone()))
                .collect();
            seq += n as u64;
            rest = &rest[n..];
            batches.push(Batch {
                v: 1,
                device: DeviceId::new(device.as_str()).expect("id"),
                epoch: 1,
                first_held: 1,
                events: envs,
                shed: Vec::new(),
            });
        }
    }
    let extra: Vec<Batch> = batches
        .iter()
        .filter(|_| rng.random_bool(0.3))
        .cloned()
        .collect();
    batches.extend(extra);
    batches.shuffle(&mut rng);
    batches
}

fn check(s: &Scenario, effects: &[Effect], calls: &HashMap<String, u32>) -> Result<(), String> {
    let total: usize = s.devices.values().map(Vec::len).sum();
    if effects.len() != total {
        return Err(format!("{} effects for {total} events", effects.len()));
    }
    let ids: HashSet<&str> = effects.iter().map(|e| e.id.as_str()).collect();
    if ids.len() != total {
        return Err("an event took effect twice".into());
    }
    if calls.len() != total {
        return Err(format!("{} distinct events called", calls.len()));
    }
    // Per lane: stages never go down (exceptions excepted); per device and
    // lane: sequences go up.
    let mut top: HashMap<&str, u8> = HashMap::new();
    let mut last_seq: HashMap<(&str, &str), u64> = HashMap::new();
    for e in effects {
        if let Some(stage) = e.stage {
            let t = top.entry(e.lane.as_str()).or_insert(stage);
            if stage < *t {
                return Err(format!(
                    "lane {}: {} booked after {} ({effects:?})",
                    e.lane,
                    lane::stage_name(stage),
                    lane::stage_name(*t)
                ));
            }
            *t = stage;
        }
        let l = last_seq
            .entry((e.device.as_str(), e.lane.as_str()))
            .or_insert(0);
        if e.seq <= *l {
            return Err(format!(
                "{} seq {} booked after seq {} of lane {}",
                e.device, e.seq, l, e.lane
            ));
        }
        *l = e.seq;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn any_arrival_order_books_each_event_once_in_business_order_per_lane(
        s in scenario(),
        seed in any::<u64>(),
        lose_every in prop_oneof![Just(0u64), 2u64..5],
    ) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let total: usize = s.devices.values().map(Vec::len).sum();
        let result = rt.block_on(async {
            // Park long enough that no event is ever delivered out of order
            // for want of a step that is still on its way.
            let rig = Rig::start(FakeErp { lose_every, ..FakeErp::default() }, 60_000);
            for (i, b) in arrivals(&s, seed).into_iter().enumerate() {
                rig.store(b).await;
                if i % 3 == 0 {
                    tokio::task::yield_now().await;
                }
            }
            let settled = rig.settled(total, Duration::from_secs(20)).await;
            let stats = rig.inbox.call(|i| i.stats()).await.expect("stats");
            let erp = rig.stop().await;
            let effects = erp.effects.lock().expect("lock").clone();
            let calls = erp.calls.lock().expect("lock").clone();
            (settled, stats, effects, calls)
        });
        let (settled, stats, effects, calls) = result;
        prop_assert!(settled, "not all booked: {} of {total}; stats {stats:?}", effects.len());
        prop_assert_eq!(stats.delivered_out_of_order, 0);
        prop_assert_eq!(stats.booked as usize, total);
        if let Err(problem) = check(&s, &effects, &calls) {
            prop_assert!(false, "{}", problem);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_without_its_earlier_steps_parks_then_goes_out_of_order() {
    let rig = Rig::start(FakeErp::default(), 400);
    let pod = envelope("van-01", 1, event(Some(5), Some("SO-9")));
    rig.store(Batch {
        v: 1,
        device: pod.device.clone(),
        epoch: 1,
        first_held: 1,
        events: vec![pod],
        shed: Vec::new(),
    })
    .await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(rig.erp.effects.lock().expect("lock").is_empty(), "parked");
    let lanes = rig
        .inbox
        .call(|i| i.waiting_lanes(10))
        .await
        .expect("lanes");
    assert_eq!(lanes.len(), 1, "{lanes:?}");
    assert_eq!(lanes[0].lane, "order:SO-9");
    assert_eq!(lanes[0].status, "parked");
    assert!(lanes[0].reason.contains("`arrived`"), "{lanes:?}");
    assert!(
        rig.settled(1, Duration::from_secs(5)).await,
        "delivered after the park time"
    );
    let stats = rig.inbox.call(|i| i.stats()).await.expect("stats");
    assert_eq!((stats.delivered_out_of_order, stats.parked_lanes), (1, 0));
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_blocks_its_lane_only_and_a_replay_unblocks_it() {
    let erp = FakeErp::default();
    erp.refuse.lock().expect("lock").insert(("hh-01".into(), 1));
    let rig = Rig::start(erp, 60_000);
    // hh-01 picks SO-1 (refused) and SO-2; van-01 departs with SO-1 (needs
    // the lane's load, which never comes: the lane is blocked before that).
    let events = vec![
        envelope("hh-01", 1, event(Some(0), Some("SO-1"))),
        envelope("hh-01", 2, event(Some(0), Some("SO-2"))),
        envelope("hh-01", 3, event(Some(1), Some("SO-1"))),
    ];
    rig.store(Batch {
        v: 1,
        device: DeviceId::new("hh-01").expect("id"),
        epoch: 1,
        first_held: 1,
        events,
        shed: Vec::new(),
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let booked: Vec<u64> = rig
        .erp
        .effects
        .lock()
        .expect("lock")
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(
        booked,
        vec![2],
        "SO-2 goes on; SO-1's pack waits behind the dead letter"
    );
    let lanes = rig
        .inbox
        .call(|i| i.waiting_lanes(10))
        .await
        .expect("lanes");
    assert_eq!(lanes.len(), 1, "{lanes:?}");
    assert_eq!(
        (lanes[0].lane.as_str(), lanes[0].status.as_str()),
        ("order:SO-1", "blocked")
    );
    let stats = rig.inbox.call(|i| i.stats()).await.expect("stats");
    assert_eq!((stats.blocked_lanes, stats.dead_letters), (1, 1));

    // Fixed in the ERP; replayed: the pick, then the pack, once each.
    rig.erp.refuse.lock().expect("lock").clear();
    let dl = rig
        .inbox
        .call(|i| i.dead_letters(false, 10))
        .await
        .expect("list");
    let id = dl[0].id;
    rig.inbox
        .call(move |i| i.replay_dead_letter(id, dockline_collector::now_ms()))
        .await
        .expect("replay");
    rig.wake.notify_one();
    assert!(
        rig.settled(3, Duration::from_secs(5)).await,
        "replayed lane drains"
    );
    let erp = rig.stop().await;
    let booked: Vec<u64> = erp
        .effects
        .lock()
        .expect("lock")
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(booked, vec![2, 1, 3]);
}
