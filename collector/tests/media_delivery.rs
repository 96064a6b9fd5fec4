//! Lanes wait for their media: an event whose photo has not arrived parks
//! its lane with a visible reason (other lanes go on), goes with the photo
//! once it is stored, or without it (flagged, counted) when `[media]
//! wait_ms` runs out; a booked event's media are marked attached and the
//! device is told.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use dockline_collector::delivery::Delivery;
use dockline_collector::delivery::backoff::FixedJitter;
use dockline_collector::erp::outcome::{AttemptOutcome, Credentials, Response};
use dockline_collector::erp::{AdapterFuture, Attempt, ErpAdapter, ErpConfig, ErpEvent};
use dockline_collector::inbox::{Inbox, InboxHandle};
use dockline_collector::media::MediaHub;
use dockline_collector::media::config::MediaConfig;
use dockline_collector::media::store::FsMediaStore;
use dockline_collector::publication::Publication;
use dockline_collector::shutdown::ShutdownTrigger;
use dockline_protocol::codec;
use dockline_protocol::media::{MediaAck, MediaChunk, MediaHash, MediaState, MediaType};
use dockline_protocol::{DeviceId, EventDetail, ProofOfDelivery, SiteId};
use support::{batch, envelope, order, picked};
use tokio::sync::mpsc;

/// What the fake ERP saw of one delivery.
#[derive(Debug, Clone)]
struct Seen {
    order: String,
    media: Vec<(MediaHash, Vec<u8>)>,
    missing: Vec<MediaHash>,
}

#[derive(Debug, Clone, Default)]
struct Erp(Arc<Mutex<Vec<Seen>>>);

impl ErpAdapter for Erp {
    fn kind(&self) -> &'static str {
        "fake"
    }
    fn deliver<'a>(&'a self, e: ErpEvent<'a>) -> AdapterFuture<'a, Attempt> {
        self.0.lock().expect("lock").push(Seen {
            order: e.event.refs.order.clone().unwrap_or_default(),
            media: e.media.iter().map(|m| (m.hash, m.bytes.to_vec())).collect(),
            missing: e.media_missing.iter().map(|m| m.hash).collect(),
        });
        let n = self.0.lock().expect("lock").len();
        Box::pin(async move {
            Attempt {
                outcome: AttemptOutcome::Response(Response {
                    status: 201,
                    retry_after: None,
                    location: None,
                    body: format!(r#"{{"document":"SHP-{n}"}}"#),
                    class: None,
                }),
                request: "fake".into(),
            }
        })
    }
    fn probe(&self) -> AdapterFuture<'_, bool> {
        Box::pin(async { true })
    }
    fn credentials(&self) -> Credentials {
        Credentials::Fixed
    }
}

struct Rig {
    _dir: tempfile::TempDir,
    inbox: InboxHandle,
    hub: MediaHub,
    erp: Erp,
    acks: mpsc::Receiver<Publication>,
    trigger: ShutdownTrigger,
}

fn rig(wait_ms: u64) -> Rig {
    let dir = tempfile::tempdir().expect("dir");
    let inbox = InboxHandle::new(Inbox::open(&dir.path().join("inbox.db")).expect("inbox"));
    let config = MediaConfig {
        wait_ms,
        ..MediaConfig::default()
    };
    let wake = Arc::new(tokio::sync::Notify::new());
    let store = FsMediaStore::open(&dir.path().join("media")).expect("store");
    let hub = MediaHub::new(Box::new(store), config, Arc::clone(&wake));
    let erp = Erp::default();
    let (tx, acks) = mpsc::channel(64);
    let cfg = ErpConfig {
        retry_min_ms: 1,
        retry_max_ms: 5,
        // No earlier stage comes in these tests: do not wait for one.
        lane_park_max_ms: 1,
        ..ErpConfig::new(
            "http://127.0.0.1:9/unused",
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        )
    };
    let delivery = Arc::new(
        Delivery::with_adapter(&cfg, Box::new(erp.clone()), inbox.clone(), tx)
            .with_jitter(Box::new(FixedJitter(0.5)))
            .with_media(hub.clone()),
    );
    let trigger = ShutdownTrigger::new();
    tokio::spawn(delivery.run(wake, trigger.subscribe()));
    Rig {
        _dir: dir,
        inbox,
        hub,
        erp,
        acks,
        trigger,
    }
}

fn photo() -> Vec<u8> {
    let mut b = vec![0xff, 0xd8, 0xff, 0xe1];
    b.extend((0..30_000u32).map(|i| (i % 253) as u8));
    b
}

fn delivered(dev: &str, seq: u64, ord: &str, photo: &[u8]) -> dockline_protocol::Envelope {
    envelope(
        dev,
        seq,
        EventDetail::Delivered(ProofOfDelivery {
            received_by: "J. Doe".into(),
            pieces: 3,
            signature_ref: None,
            photo_ref: Some(format!("sha256:{}", MediaHash::of(photo))),
            position: None,
        }),
        order(ord),
    )
}

impl Rig {
    async fn store(&self, events: Vec<dockline_protocol::Envelope>) {
        let b = batch(events[0].seq, events);
        let site = SiteId::new("dc-north").expect("site");
        self.inbox
            .call(move |i| i.store_batch(&site, &b, dockline_collector::now_ms()))
            .await
            .expect("store");
        self.hub.stored.notify_one();
    }

    async fn until(&self, what: &str, f: impl Fn(&[Seen]) -> bool) -> Vec<Seen> {
        for _ in 0..500 {
            let seen = self.erp.0.lock().expect("lock").clone();
            if f(&seen) {
                return seen;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!(
            "timed out waiting for {what}: {:?}",
            self.erp.0.lock().expect("lock")
        );
    }
}

#[tokio::test]
async fn a_lane_waits_for_its_photo_others_go_and_the_photo_goes_with_its_event() {
    let mut r = rig(3_600_000);
    let dev = "hh-md1";
    let bytes = photo();
    let h = MediaHash::of(&bytes);
    r.store(vec![
        delivered(dev, 1, "SO-WAIT", &bytes),
        envelope(dev, 2, picked(), order("SO-GO")),
    ])
    .await;
    r.until("the other lane", |s| s.iter().any(|x| x.order == "SO-GO"))
        .await;
    assert!(
        !r.erp
            .0
            .lock()
            .expect("lock")
            .iter()
            .any(|x| x.order == "SO-WAIT"),
        "the event without its photo waits"
    );
    let parked = r.hub.parked_lanes();
    assert_eq!(parked.len(), 1, "{parked:?}");
    assert_eq!(parked[0].lane, "order:SO-WAIT");
    let hex = h.to_string();
    assert!(
        parked[0].reason.starts_with(&format!(
            "waiting for photo sha256:{}… from device {dev}, until ",
            &hex[..8]
        )),
        "{}",
        parked[0].reason
    );

    // The photo arrives (one chunk): the lane wakes and the ERP gets it.
    let chunk = MediaChunk {
        v: 1,
        device: DeviceId::new(dev).expect("id"),
        hash: h,
        media_type: MediaType::Jpeg,
        len: bytes.len() as u64,
        off: 0,
        data: bytes.clone(),
    };
    let site = SiteId::new("dc-north").expect("site");
    let stored = r
        .hub
        .chunk(&site, &chunk.device, &codec::encode(&chunk).expect("enc"))
        .await
        .expect("stored");
    let ack: MediaAck = codec::decode(&stored.payload).expect("ack");
    assert_eq!(ack.state, MediaState::Stored);
    let seen = r
        .until("the waiting lane", |s| {
            s.iter().any(|x| x.order == "SO-WAIT")
        })
        .await;
    let got = seen.iter().find(|x| x.order == "SO-WAIT").expect("seen");
    assert_eq!(got.media, vec![(h, bytes.clone())], "byte-identical, once");
    assert!(got.missing.is_empty());
    assert!(r.hub.parked_lanes().is_empty());

    // The device hears the photo is attached; the store starts its retention.
    let mut attached = None;
    for _ in 0..200 {
        match r.acks.try_recv() {
            Ok(p) if p.topic.ends_with("/media_ack") => {
                attached = Some(codec::decode::<MediaAck>(&p.payload).expect("ack"));
                break;
            }
            Ok(_) => {}
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
    let attached = attached.expect("an attached ack");
    assert!(
        matches!(&attached.state, MediaState::Attached { doc: Some(d) } if d.starts_with("SHP-")),
        "{attached:?}"
    );
    assert_eq!((attached.hash, attached.have), (h, bytes.len() as u64));
    let info = r
        .hub
        .store
        .call(move |s| s.info(&h))
        .await
        .expect("info")
        .expect("stored");
    assert!(info.attached_ms.is_some());
    r.trigger.trigger();
}

#[tokio::test]
async fn after_the_wait_the_event_goes_without_its_photo_flagged_and_counted() {
    let r = rig(300);
    let bytes = photo();
    let h = MediaHash::of(&bytes);
    r.store(vec![delivered("hh-md2", 1, "SO-LATE", &bytes)])
        .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(r.erp.0.lock().expect("lock").is_empty(), "waits first");
    assert_eq!(r.hub.parked_lanes().len(), 1);
    let seen = r
        .until("delivery without the photo", |s| !s.is_empty())
        .await;
    assert_eq!(seen.len(), 1);
    assert!(seen[0].media.is_empty());
    assert_eq!(seen[0].missing, vec![h], "flagged to the adapter");
    assert_eq!(r.hub.metrics.snapshot().1, 1, "counted");
    assert!(r.hub.parked_lanes().is_empty());
    r.trigger.trigger();
}
