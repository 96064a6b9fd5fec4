//! Serial device sources against pseudo-terminals: the test writes device
//! bytes on the master side, the agent opens the slave through its normal
//! serialport path. Unplug is the master closing and the device's link
//! disappearing; replug is a new pseudo-terminal behind the same link.
//!
//! Every protocol the agent reads from a port (scan, nmea, mtsics, toledo,
//! sma, nci, link) is written as device bytes, unplugged and replugged, and
//! its readings are checked where they end up: in the outbox.
//!
//! Every wait polls `GET /v1/status` against a deadline: no fixed sleeps.

#[path = "support/pty.rs"]
mod pty;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use pty::FakeDevice;
use serde_json::Value;

/// How long any one condition may take to come true.
const DEADLINE: Duration = Duration::from_secs(15);

struct Agent {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
    dir: tempfile::TempDir,
}

impl Agent {
    /// Starts an agent with one device `name` of `kind`/`protocol` at `{dir}/{name}`.
    async fn start(name: &str, kind: &str, protocol: &str) -> Agent {
        let dir = tempfile::tempdir().expect("tempdir");
        let dead = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let toml = format!(
            "site = \"dc-test\"\ndevice = \"gw-serial\"\ndata_dir = {data:?}\n\
             [api]\nlisten = \"127.0.0.1:0\"\n[mqtt]\nport = {port}\n\
             [[devices]]\nname = {name:?}\nkind = {kind:?}\nprotocol = {protocol:?}\n\
             path = {path:?}\nreconnect_max_ms = 200\n",
            data = dir.path().display().to_string(),
            port = dead.local_addr().expect("addr").port(),
            path = dir.path().join(name).display().to_string(),
        );
        drop(dead);
        let file = dir.path().join("agent.toml");
        std::fs::write(&file, toml).expect("write config");
        let config: dockline_agent::Config =
            dockline_host::config::load(Some(&file), Vec::<(String, String)>::new())
                .expect("config loads");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            dockline_agent::run(config, async {
                let _ = rx.await;
            })
            .await
            .expect("agent runs");
        });
        let addr_file = dir.path().join("api.addr");
        let deadline = Instant::now() + DEADLINE;
        let addr = loop {
            if let Ok(text) = std::fs::read_to_string(&addr_file) {
                break text.parse().expect("address");
            }
            assert!(Instant::now() < deadline, "agent did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        Agent {
            addr,
            stop: Some(tx),
            task,
            dir,
        }
    }

    fn link(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    async fn status(&self) -> Value {
        // The per-install token the agent made at start (api.token).
        let token = std::fs::read_to_string(self.dir.path().join("api.token"))
            .expect("the agent made its API token");
        reqwest::Client::new()
            .get(format!("http://{}/v1/status", self.addr))
            .bearer_auth(token.trim())
            .send()
            .await
            .expect("status answers")
            .json()
            .await
            .expect("status is JSON")
    }

    /// Polls the status until `ok` holds for it; fails with `what` and the
    /// last status at the deadline.
    async fn wait_for(&self, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let status = self.status().await;
            if ok(&status) {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; last status: {status:#}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        tokio::time::timeout(DEADLINE, &mut self.task)
            .await
            .expect("agent stops in time")
            .expect("agent task ends cleanly");
    }
}

fn device(status: &Value) -> &Value {
    &status["devices"][0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_unplugged_and_replugged_keeps_reporting() {
    let agent = Agent::start("pack-scale", "scale", "mtsics").await;
    let link = agent.link("pack-scale");
    let mut scale = FakeDevice::plug(&link);
    agent
        .wait_for("the scale to connect", |s| device(s)["connected"] == true)
        .await;

    scale.send(b"S S      12.34 kg\r\nS D      12.36 kg\r\n");
    let status = agent
        .wait_for("two weights", |s| device(s)["readings"] == 2)
        .await;
    assert!(device(&status)["last_reading_ms"].as_i64().is_some());
    assert_eq!(device(&status)["reconnects"], 0);

    scale.unplug(&link);
    let status = agent
        .wait_for("the unplug to be noticed", |s| {
            device(s)["connected"] == false
        })
        .await;
    let error = device(&status)["last_error"].as_str().expect("last_error");
    assert!(error.contains("unplugged"), "{error}");

    let mut scale = FakeDevice::plug(&link);
    agent
        .wait_for("the scale to reconnect", |s| {
            device(s)["connected"] == true && device(s)["reconnects"] == 1
        })
        .await;
    scale.send(b"S S       5.00 kg\r\n");
    // Readings become telemetry events in the outbox (no broker: all stay
    // queued); the count there follows the device counter asynchronously.
    let status = agent
        .wait_for("the weight after replug, in the outbox", |s| {
            device(s)["readings"] == 3 && s["queued"] == 3
        })
        .await;
    assert_eq!(device(&status)["reconnects"], 1);
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scanner_absent_at_start_then_plugged_in() {
    let agent = Agent::start("dock-scanner", "scanner", "scan").await;
    let status = agent
        .wait_for("the failed open to be reported", |s| {
            device(s)["last_error"].is_string()
        })
        .await;
    assert_eq!(device(&status)["connected"], false);
    let error = device(&status)["last_error"].as_str().expect("last_error");
    assert!(
        error.contains("dock-scanner") && error.contains("plugged in"),
        "{error}"
    );

    let link = agent.link("dock-scanner");
    let mut scanner = FakeDevice::plug(&link);
    agent
        .wait_for("the scanner to connect", |s| device(s)["connected"] == true)
        .await;
    // A GS1-128 scan, a scan with a bad check digit, and a scan whose suffix
    // was lost: the quiet line completes it.
    scanner.send(b"]C10109521234543213\x1d10LOT42\r\n]C10109521234543214\r\n]E05901234123457");
    let status = agent
        .wait_for("two scans and one rejected", |s| {
            device(s)["readings"] == 2 && device(s)["rejected"] == 1
        })
        .await;
    let error = device(&status)["last_error"].as_str().expect("last_error");
    assert!(error.contains("check digit"), "{error}");
    // The first open counts as a connect, not a reconnect.
    assert_eq!(device(&status)["reconnects"], 0);
    agent.stop().await;
}

/// One protocol through the real serial path: what the device sends before
/// an unplug and after the replug, the readings and rejections that makes,
/// and what each stored reading must show, in sequence order (a fragment of
/// its line in the outbox export).
struct Case {
    name: &'static str,
    kind: &'static str,
    protocol: &'static str,
    before: Vec<u8>,
    before_readings: u64,
    before_rejected: u64,
    after: Vec<u8>,
    after_readings: u64,
    stored: &'static [&'static str],
}

/// Plug, read, unplug, replug, read again; then the outbox holds one
/// telemetry event per reading, showing what the device sent.
async fn unplug_and_replug(case: Case) {
    let agent = Agent::start(case.name, case.kind, case.protocol).await;
    let link = agent.link(case.name);
    let mut fake = FakeDevice::plug(&link);
    agent
        .wait_for("the device to connect", |s| device(s)["connected"] == true)
        .await;
    fake.send(&case.before);
    agent
        .wait_for("the readings before the unplug", |s| {
            device(s)["readings"] == case.before_readings
                && device(s)["rejected"] == case.before_rejected
        })
        .await;
    fake.unplug(&link);
    agent
        .wait_for("the unplug to be noticed", |s| {
            device(s)["connected"] == false
        })
        .await;
    let mut fake = FakeDevice::plug(&link);
    agent
        .wait_for("the device to reconnect", |s| {
            device(s)["connected"] == true && device(s)["reconnects"] == 1
        })
        .await;
    fake.send(&case.after);
    let total = case.before_readings + case.after_readings;
    agent
        .wait_for("every reading stored", |s| {
            device(s)["readings"] == total && s["queued"] == total
        })
        .await;
    let mut export = Vec::new();
    let outbox = dockline_agent::doctor::outbox_path(agent.dir.path());
    let done = dockline_agent::doctor::export(&outbox, None, None, &mut export).expect("export");
    assert_eq!(done.events, total);
    let export = String::from_utf8(export).expect("JSON lines");
    let lines: Vec<&str> = export.lines().collect();
    assert_eq!(lines.len(), case.stored.len(), "{export}");
    for (line, needle) in lines.iter().zip(case.stored) {
        assert!(
            line.contains(needle),
            "{}: {needle} not in the stored reading {line}",
            case.protocol
        );
    }
    agent.stop().await;
}

/// `bytes` as a 7E1 device sends them, read as 8N1: bit 7 is the parity bit.
fn even_parity(bytes: &[u8]) -> Vec<u8> {
    bytes
        .iter()
        .map(|&b| if b.count_ones() % 2 == 1 { b | 0x80 } else { b })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scanner_scans_across_a_replug() {
    unplug_and_replug(Case {
        name: "scanner",
        kind: "scanner",
        protocol: "scan",
        before: b"]C10109521234543213\x1d10LOT42\r\n".to_vec(),
        before_readings: 1,
        before_rejected: 0,
        after: b"]E05901234123457\r\n".to_vec(),
        after_readings: 1,
        stored: &[
            r#""sym":"]C1","d":"0109521234543213\u001d10LOT42""#,
            r#""sym":"]E0","d":"5901234123457""#,
        ],
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gnss_positions_across_a_replug() {
    unplug_and_replug(Case {
        name: "gps",
        kind: "gps",
        protocol: "nmea",
        // One cycle, then a bad checksum (rejected); the quiet line ends the cycle.
        before: b"$GNRMC,001031.00,A,4404.13993,N,12118.86023,W,0.146,,100117,,,A*7B\r\n\
$GNGSA,A,3,01,11,31,14,22,32,04,25,03,,,,1.56,0.91,1.27*16\r\n"
            .to_vec(),
        before_readings: 1,
        before_rejected: 1,
        after: b"$GNGGA,171926.00,4404.14063,N,12118.85478,W,1,12,0.91,1147.2,M,-21.3,M,,*44\r\n"
            .to_vec(),
        after_readings: 1,
        stored: &[
            r#""lat":44.068998"#,
            r#""lat":44.0690105,"lon":-121.314246"#,
        ],
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtsics_weights_across_a_replug() {
    unplug_and_replug(Case {
        name: "mtsics",
        kind: "scale",
        protocol: "mtsics",
        // A weight, an overload state (rejected), a weight in motion.
        before: b"S S      12.34 kg\r\nS +\r\nS D       0.50 kg\r\n".to_vec(),
        before_readings: 2,
        before_rejected: 1,
        after: b"S S       5.00 kg\r\n".to_vec(),
        after_readings: 1,
        stored: &[
            r#"{"val":12.34,"u":"kg"},"st":true"#,
            r#"{"val":0.5,"u":"kg"},"st":false"#,
            r#"{"val":5.0,"u":"kg"},"st":true"#,
        ],
    })
    .await;
}

const TOLEDO_STORED: &str = r#"{"val":12.34,"u":"kg"},"tare":{"val":0.0,"u":"kg"},"st":true"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn toledo_frames_across_a_replug() {
    // SWA 0x2C, SWB 0x30, SWC 0x20, weight 001234, tare 000000.
    let frame = b"\x02\x2C\x30\x20001234000000\r".to_vec();
    let mut before = b"noise".to_vec();
    before.extend(&frame);
    unplug_and_replug(Case {
        name: "toledo",
        kind: "scale",
        protocol: "toledo",
        before,
        before_readings: 1,
        before_rejected: 0,
        // The same frame from a 7E1 indicator: parity bits are masked off.
        after: even_parity(&frame),
        after_readings: 1,
        stored: &[TOLEDO_STORED, TOLEDO_STORED],
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sma_weights_across_a_replug() {
    unplug_and_replug(Case {
        name: "sma",
        kind: "scale",
        protocol: "sma",
        before: b"\n 1G      12.340kg \r\n?\r".to_vec(),
        before_readings: 1,
        before_rejected: 1,
        after: b"\n 1NM      7.500kg \r".to_vec(),
        after_readings: 1,
        stored: &[
            r#"{"val":12.34,"u":"kg"},"st":true"#,
            r#"{"val":7.5,"u":"kg"},"st":false"#,
        ],
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nci_weights_across_a_replug() {
    unplug_and_replug(Case {
        name: "nci",
        kind: "scale",
        protocol: "nci",
        before: b"\n0012.34kg\r\n00\r\x03".to_vec(),
        before_readings: 1,
        before_rejected: 0,
        after: b"\n0003.25kg\r\n00\r\x03".to_vec(),
        after_readings: 1,
        stored: &[
            r#"{"val":12.34,"u":"kg"},"st":true"#,
            r#"{"val":3.25,"u":"kg"},"st":true"#,
        ],
    })
    .await;
}

/// One bridge message as the bridge firmware frames it (COBS + CRC, 0x00
/// delimiters): a stable 1.250 kg, or a load-cell fault.
fn bridge_frame(seq: u32, fault: bool) -> Vec<u8> {
    use dockline_firmware::bridge::{BridgeMessage, Fault, MAX_MESSAGE, Payload};
    use dockline_firmware::link::{MAX_FRAME, encode_frame};
    use dockline_firmware::loadcell::{LoadCellReading, WeightState};
    use dockline_firmware::scale::{Decimal, Unit};
    let payload = if fault {
        Payload::Fault(Fault::SensorRead)
    } else {
        Payload::Weight(LoadCellReading {
            raw: 81_234,
            filtered: 81_200,
            net: Decimal {
                mantissa: 1250,
                scale: 3,
            },
            tare: None,
            unit: Unit::Kg,
            state: WeightState::Stable,
        })
    };
    let message = BridgeMessage {
        seq,
        at_ms: u64::from(seq) * 100,
        payload,
    };
    let mut body = [0u8; MAX_MESSAGE];
    let len = message.encode(&mut body).expect("fits");
    let mut frame = [0u8; MAX_FRAME];
    let n = encode_frame(&body[..len], &mut frame).expect("fits");
    frame[..n].to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridge_frames_across_a_replug() {
    let mut before = bridge_frame(0, false);
    before.extend(bridge_frame(1, true));
    // Half a frame, cut by the unplug: dropped, never glued to the next one.
    let cut = bridge_frame(2, false);
    before.extend(&cut[..cut.len() / 2]);
    unplug_and_replug(Case {
        name: "bridge",
        kind: "bridge",
        protocol: "link",
        before,
        before_readings: 1,
        before_rejected: 1,
        after: bridge_frame(3, false),
        after_readings: 1,
        stored: &[
            r#"{"val":1.25,"u":"kg"},"st":true"#,
            r#"{"val":1.25,"u":"kg"},"st":true"#,
        ],
    })
    .await;
}
