//! The collector tests' shared harness: envelopes built one way, an ERP
//! adapter driven the way delivery drives it, loopback receivers that
//! record what they were sent, and an inbox seeded with batches.
//!
//! Every test file that needs these says `mod support;`; the ERP fakes
//! that only one or two files use (`odoo_emulator.rs`, `tryton_server.rs`,
//! `lost_response.rs`) stay their own modules beside it. Not every file
//! uses every helper, hence the `dead_code` allowance.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::Bytes;
use axum::http::HeaderMap;
use dockline_collector::delivery::backoff::{Backoff, FixedJitter};
use dockline_collector::delivery::lane::lane_key;
use dockline_collector::delivery::policy::{self, Decision, EndpointView, History, Policy};
use dockline_collector::erp::{Attempt, ErpAdapter, ErpConfig, ErpEvent};
use dockline_collector::inbox::{Inbox, InboxStore};
use dockline_protocol::{
    Batch, BusinessEvent, DeviceId, Envelope, EventDetail, EventId, Payload, Priority, References,
    SiteId, TimeSource,
};

/// The capture time of [`envelope`]'s sequence 0 (2025-11-24, UTC).
pub const CAPTURED_MS: i64 = 1_764_000_000_000;

/// A business event of `device` at `seq` (epoch 1): its id is unique per
/// device and sequence, its capture time [`CAPTURED_MS`] + `seq` ms.
pub fn envelope(device: &str, seq: u64, detail: EventDetail, refs: References) -> Envelope {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&seq.to_be_bytes());
    let tag = &device.as_bytes()[..device.len().min(8)];
    id[8..8 + tag.len()].copy_from_slice(tag);
    Envelope {
        v: 1,
        device: DeviceId::new(device).expect("device id"),
        epoch: 1,
        seq,
        id: EventId(id),
        captured_ms: CAPTURED_MS + i64::try_from(seq).expect("small seq"),
        time_source: TimeSource::Ntp,
        priority: Priority::MustDeliver,
        payload: Payload::Event(BusinessEvent { detail, refs }),
    }
}

/// References naming only `order`.
pub fn order(order: &str) -> References {
    References {
        order: Some(order.into()),
        ..References::default()
    }
}

/// Two of one GTIN picked.
pub fn picked() -> EventDetail {
    EventDetail::Picked {
        item: "04012345678901".into(),
        quantity: 2,
        lot: None,
    }
}

/// One attempt of `adapter` for `envelope` from `site`, as delivery makes
/// it (the lane key delivery would use).
pub async fn attempt(adapter: &dyn ErpAdapter, site: &str, envelope: &Envelope) -> Attempt {
    let site = SiteId::new(site).expect("site id");
    let event = envelope.business_event().expect("a business event");
    let lane = lane_key(&envelope.device, event);
    adapter
        .deliver(ErpEvent {
            site: &site,
            envelope,
            event,
            lane: &lane,
            media: &[],
            media_missing: &[],
        })
        .await
}

/// A webhook ERP at `url` with `secret`, retrying fast (10 to 50 ms, a
/// 2 s timeout) so a test sees several attempts quickly.
pub fn fast_erp(url: impl Into<String>, secret: &str) -> ErpConfig {
    ErpConfig {
        timeout_ms: 2000,
        retry_min_ms: 10,
        retry_max_ms: 50,
        concurrency: 2,
        ..ErpConfig::new(url, secret)
    }
}

/// Serves `app` on a fresh loopback port until the test's runtime ends.
pub async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// One request a [`Recorder`] received.
#[derive(Debug, Clone)]
pub struct Received {
    /// Its headers.
    pub headers: HeaderMap,
    /// Its body.
    pub body: Bytes,
}

impl Received {
    /// A header as text ("" when absent).
    pub fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("the body is JSON")
    }
}

/// A receiver's log of what it was sent, shared with its handler.
#[derive(Debug, Clone, Default)]
pub struct Recorder {
    seen: Arc<Mutex<Vec<Received>>>,
}

impl Recorder {
    /// Keeps one request.
    pub fn record(&self, headers: &HeaderMap, body: &Bytes) {
        self.seen.lock().expect("recorder lock").push(Received {
            headers: headers.clone(),
            body: body.clone(),
        });
    }

    /// Everything received so far, in order.
    pub fn seen(&self) -> Vec<Received> {
        self.seen.lock().expect("recorder lock").clone()
    }
}

/// The site every seeded batch comes from.
pub const SITE: &str = "dc-north";

/// [`SITE`] as an id.
pub fn site() -> SiteId {
    SiteId::new(SITE).expect("site id")
}

/// One device's batch of `events` (one epoch, ascending); `first_held` is
/// the lowest sequence the device still holds (below it: acked earlier).
pub fn batch(first_held: u64, events: Vec<Envelope>) -> Batch {
    let first = events.first().expect("at least one event");
    Batch {
        v: 1,
        device: first.device.clone(),
        epoch: first.epoch,
        first_held,
        events,
        shed: Vec::new(),
    }
}

/// Stores `events` in `inbox` as one batch from [`SITE`], as ingest would;
/// sequences below the first are taken as acked earlier.
pub fn seed(inbox: &mut Inbox, events: Vec<Envelope>) {
    let first_held = events.first().expect("at least one event").seq;
    inbox
        .store_batch(&site(), &batch(first_held, events), 0)
        .expect("store the batch");
}

/// The collector binary of this build.
pub const BIN: &str = env!("CARGO_BIN_EXE_dockline-collector");

/// A child process killed (and reaped) when the test ends, pass or fail.
#[derive(Debug)]
pub struct Running(pub std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A loopback port nothing listens on (a broker or ERP that is "down").
pub fn dead_port() -> u16 {
    let free = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    free.local_addr().expect("addr").port()
}

/// Waits for `{data_dir}/api.addr`, the sign the collector is up.
pub fn wait_api_addr(data: &std::path::Path) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        if let Ok(a) = std::fs::read_to_string(data.join("api.addr"))
            && !a.is_empty()
        {
            return a;
        }
        assert!(std::time::Instant::now() < deadline, "api.addr not written");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Sends signal `name` (`HUP`, `TERM`, …) to `child`.
pub fn signal(child: &std::process::Child, name: &str) {
    let ok = std::process::Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(ok.success(), "kill -{name} failed");
}

/// A child's stderr, line by line, read on a thread so the child never
/// blocks on a full pipe.
#[derive(Debug)]
pub struct Lines {
    rx: std::sync::mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Lines {
    /// Reads `running`'s piped stderr from now on.
    pub fn of(running: &mut Running) -> Self {
        use std::io::BufRead;
        let stderr = running.0.stderr.take().expect("stderr is piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            rx,
            seen: Vec::new(),
        }
    }

    /// Waits (20 s at most) for a line holding every one of `needles`;
    /// returns it. Panics with every line seen otherwise.
    pub fn wait(&mut self, needles: &[&str]) -> String {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while std::time::Instant::now() < deadline {
            if let Ok(line) = self.rx.recv_timeout(std::time::Duration::from_millis(100)) {
                self.seen.push(line.clone());
                if needles.iter().all(|n| line.contains(n)) {
                    return line;
                }
            }
        }
        panic!("no line with {needles:?} in:\n{}", self.seen.join("\n"));
    }
}

/// What delivery would do with `attempt`, the first of its event (the real
/// policy, with tunables a test can reason about: 100 ms to 10 s backoff,
/// five bounded attempts, a fixed jitter).
pub fn decide(adapter: &dyn ErpAdapter, attempt: &Attempt) -> Decision {
    policy::decide(
        &attempt.outcome,
        History {
            attempts: 1,
            bounded: 0,
        },
        EndpointView {
            credentials: adapter.credentials(),
        },
        &Policy {
            backoff: Backoff {
                min: Duration::from_millis(100),
                max: Duration::from_secs(10),
            },
            pause_max: Duration::from_secs(60),
            max_bounded_attempts: 5,
            parked_min: Duration::from_secs(30),
        },
        SystemTime::now(),
        &mut FixedJitter(0.5),
    )
}
