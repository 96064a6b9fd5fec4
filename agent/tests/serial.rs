//! Serial device sources against pseudo-terminals: the test writes device
//! bytes on the master side, the agent opens the slave through its normal
//! serialport path. Unplug is the master closing and the device's link
//! disappearing; replug is a new pseudo-terminal behind the same link.
//!
//! Every wait polls `GET /v1/status` against a deadline: no fixed sleeps.

use std::fs::File;
use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};
use rustix::termios::{OptionalActions, tcgetattr, tcsetattr};
use serde_json::Value;

/// How long any one condition may take to come true.
const DEADLINE: Duration = Duration::from_secs(15);

/// A fake serial device: the master side of a pseudo-terminal.
struct FakeDevice {
    master: File,
    /// Held open so the tty stays up (and raw) before the agent opens it.
    _slave: File,
    path: PathBuf,
}

impl FakeDevice {
    fn new() -> FakeDevice {
        let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY).expect("openpt");
        grantpt(&master).expect("grantpt");
        unlockpt(&master).expect("unlockpt");
        let name = ptsname(&master, Vec::new()).expect("ptsname");
        let path = PathBuf::from(name.into_string().expect("pts path is UTF-8"));
        let slave = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(rustix::fs::OFlags::NOCTTY.bits() as i32)
            .open(&path)
            .expect("open slave");
        // Raw from the start: no echo back to the master, no CR→LF mapping.
        let mut termios = tcgetattr(&slave).expect("tcgetattr");
        termios.make_raw();
        tcsetattr(&slave, OptionalActions::Now, &termios).expect("tcsetattr");
        FakeDevice {
            master: File::from(master),
            _slave: slave,
            path,
        }
    }

    /// A new device behind `link` (replacing whatever it pointed to).
    fn plug(link: &Path) -> FakeDevice {
        let device = FakeDevice::new();
        let _ = std::fs::remove_file(link);
        std::os::unix::fs::symlink(&device.path, link).expect("symlink");
        device
    }

    /// Closes the device and removes its link, as pulling the USB cable does.
    fn unplug(self, link: &Path) {
        std::fs::remove_file(link).expect("remove link");
        drop(self);
    }

    fn send(&mut self, bytes: &[u8]) {
        self.master.write_all(bytes).expect("write to master");
    }
}

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
            dockline_protocol::config::load(Some(&file), Vec::<(String, String)>::new())
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
        reqwest::get(format!("http://{}/v1/status", self.addr))
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
