//! SIGHUP against the built `dockline-agent` binary with fake serial
//! devices (pseudo-terminals): devices and stations added, changed and
//! removed by editing the config file apply without a restart; a config that
//! would not start is refused and the running devices stay.
//!
//! What a user sees is checked where a user sees it: the log lines, `GET
//! /v1/status` (devices, stations, queued events), and the process itself
//! (a removed device's reader thread is gone from `/proc/PID/task`, and its
//! port is no longer open in `/proc/PID/fd`).

#[path = "support/child.rs"]
mod child;
#[path = "support/pty.rs"]
mod pty;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use child::{Running, stderr_lines};
use pty::FakeDevice;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_dockline-agent");
/// How long any one condition may take to come true.
const DEADLINE: Duration = Duration::from_secs(20);
/// An SSCC (GS1-128, AI 00): loaded onto the vehicle at a dock door.
const SSCC: &[u8] = b"]C100106141412345678908\r\n";
const SSCC_2: &[u8] = b"]C100006141411234567890\r\n";

/// The config: a dead broker port, the API on a free port, and `devices`
/// (one `(name, extra keys)` pair each, a scanner at `{dir}/{name}`), each
/// feeding its own dock door `door-{name}` with vehicle TRUCK-1.
fn write_config(dir: &Path, port: u16, devices: &[(&str, &str)], tail: &str) {
    let mut toml = format!(
        "site = \"dc\"\ndevice = \"gw-reload\"\ndata_dir = {:?}\n[api]\nlisten = \"127.0.0.1:0\"\n\
         token = \"0123456789abcdef-secret\"\n[mqtt]\nport = {port}\n",
        dir.join("data")
    );
    for (name, extra) in devices {
        toml += &format!(
            "[[devices]]\nname = {name:?}\nkind = \"scanner\"\nprotocol = \"scan\"\npath = {:?}\n\
             reconnect_max_ms = 200\n{extra}\n",
            dir.join(name)
        );
    }
    for (name, _) in devices {
        toml += &format!(
            "[[stations]]\nname = \"door-{name}\"\nkind = \"dock_door\"\ndevices = [{name:?}]\n\
             vehicle = \"TRUCK-1\"\n"
        );
    }
    toml += tail;
    std::fs::write(dir.join("agent.toml"), toml).expect("write config");
}

struct Agent {
    child: Running,
    lines: Receiver<String>,
    seen: Vec<String>,
    api: String,
    http: reqwest::Client,
}

impl Agent {
    fn start(dir: &Path) -> Agent {
        let mut child = Running(
            Command::new(BIN)
                .arg("-c")
                .arg(dir.join("agent.toml"))
                .env_remove("RUST_LOG")
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn the agent"),
        );
        let lines = stderr_lines(&mut child.0);
        let mut agent = Agent {
            child,
            lines,
            seen: Vec::new(),
            api: String::new(),
            http: reqwest::Client::new(),
        };
        agent.wait_line("agent started");
        let addr = std::fs::read_to_string(dir.join("data/api.addr")).expect("api.addr");
        agent.api = format!("http://{}", addr.trim());
        agent
    }

    fn pid(&self) -> u32 {
        self.child.0.id()
    }

    fn hup(&self) {
        let ok = Command::new("kill")
            .args(["-HUP", &self.pid().to_string()])
            .status()
            .expect("kill");
        assert!(ok.success());
    }

    /// Waits for a log line containing `needle`; returns it.
    fn wait_line(&mut self, needle: &str) -> String {
        child::wait_line(&self.lines, needle, &mut self.seen);
        self.seen.last().cloned().unwrap_or_default()
    }

    async fn status(&self) -> Value {
        self.http
            .get(format!("{}/v1/status", self.api))
            .bearer_auth("0123456789abcdef-secret")
            .send()
            .await
            .expect("status answers")
            .json()
            .await
            .expect("status is JSON")
    }

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

    /// The names of the agent's threads (`/proc/PID/task/*/comm`).
    fn threads(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(format!("/proc/{}/task", self.pid()))
            .expect("read /proc/PID/task")
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
            .map(|n| n.trim().to_owned())
            .collect();
        names.sort();
        names
    }

    /// Whether the agent has `path` open.
    fn has_open(&self, path: &Path) -> bool {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .expect("read /proc/PID/fd")
            .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
            .any(|target| target == path)
    }
}

fn device<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["devices"]
        .as_array()
        .and_then(|ds| ds.iter().find(|d| d["name"] == name))
        .unwrap_or(&Value::Null)
}

fn station<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["stations"]
        .as_array()
        .and_then(|ss| ss.iter().find(|s| s["name"] == name))
        .unwrap_or(&Value::Null)
}

fn names(status: &Value, key: &str) -> Vec<String> {
    status[key]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|d| d["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn free_dead_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_adds_changes_and_removes_devices_and_stations_live() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dir = dir.path();
    let port = free_dead_port();
    let link = |name: &str| -> PathBuf { dir.join(name) };
    let mut a = FakeDevice::plug(&link("scan-a"));
    let mut b = FakeDevice::plug(&link("scan-b"));
    write_config(dir, port, &[("scan-a", "")], "");
    let mut agent = Agent::start(dir);

    agent
        .wait_for("scan-a to connect", |s| {
            device(s, "scan-a")["connected"] == true
        })
        .await;
    a.send(SSCC);
    // The reading (telemetry) and the dock door's `loaded` event.
    agent
        .wait_for("scan-a's scan stored with its event", |s| {
            s["queued"] == 2 && station(s, "door-scan-a")["events"] == 1
        })
        .await;
    assert!(agent.threads().contains(&"device-scan-a".to_owned()));

    // Added: scan-b and its door, by editing the file and SIGHUP.
    write_config(dir, port, &[("scan-a", ""), ("scan-b", "")], "");
    agent.hup();
    let line = agent.wait_line("reload: devices applied");
    assert!(line.contains("added=scan-b"), "{line}");
    assert!(line.contains("unchanged=scan-a"), "{line}");
    agent.wait_line("reload: done; nothing else changed");
    let status = agent
        .wait_for("scan-b to connect", |s| {
            device(s, "scan-b")["connected"] == true
        })
        .await;
    assert_eq!(names(&status, "devices"), ["scan-a", "scan-b"]);
    assert_eq!(names(&status, "stations"), ["door-scan-a", "door-scan-b"]);
    // scan-a was not touched: same thread, same counters, same station state.
    assert_eq!(device(&status, "scan-a")["readings"], 1);
    assert_eq!(device(&status, "scan-a")["reconnects"], 0);
    assert_eq!(station(&status, "door-scan-a")["events"], 1);
    b.send(SSCC);
    agent
        .wait_for("scan-b's scan became a loaded event", |s| {
            s["queued"] == 4 && station(s, "door-scan-b")["events"] == 1
        })
        .await;

    // A config that would not start (a station fed by no device): refused,
    // nothing changes.
    write_config(
        dir,
        port,
        &[("scan-a", ""), ("scan-b", "")],
        "[[stations]]\nname = \"ghost\"\nkind = \"dock_door\"\ndevices = [\"nope\"]\n",
    );
    agent.hup();
    agent.wait_line("reload refused; the running config stays");
    let status = agent.status().await;
    assert_eq!(names(&status, "devices"), ["scan-a", "scan-b"]);
    assert_eq!(names(&status, "stations"), ["door-scan-a", "door-scan-b"]);

    // Removed: scan-a and its door; changed: scan-b (require_aim), which
    // restarts its thread with the new settings. An MQTT key changes too,
    // and is named as needing a restart.
    let a_port = a.path.clone();
    assert!(agent.has_open(&a_port), "scan-a's port is open before");
    write_config(
        dir,
        port,
        &[("scan-b", "require_aim = true")],
        "[uplink]\nbatch_max_events = 10\n",
    );
    agent.hup();
    let line = agent.wait_line("reload: devices applied");
    assert!(line.contains("removed=scan-a"), "{line}");
    assert!(line.contains("restarted=scan-b"), "{line}");
    let line = agent.wait_line("not applied until a restart");
    assert!(line.contains("needs_restart=uplink"), "{line}");
    assert!(
        !line.contains("devices") && !line.contains("stations"),
        "{line}"
    );
    let status = agent
        .wait_for("scan-b to reconnect with its new settings", |s| {
            device(s, "scan-b")["connected"] == true
        })
        .await;
    assert_eq!(names(&status, "devices"), ["scan-b"]);
    assert_eq!(names(&status, "stations"), ["door-scan-b"]);
    // The removed device's thread is gone and its port closed.
    assert!(
        !agent.threads().contains(&"device-scan-a".to_owned()),
        "{:?}",
        agent.threads()
    );
    assert!(!agent.has_open(&a_port), "scan-a's port is still open");
    // Bytes on the removed device's port go nowhere.
    a.send(SSCC_2);
    // The changed device runs with its new settings: a scan without an AIM
    // identifier is now refused, one with it is read.
    b.send(b"PLAIN-TEXT\r\n");
    agent
        .wait_for("the plain scan refused under require_aim", |s| {
            device(s, "scan-b")["rejected"] == 1
        })
        .await;
    b.send(SSCC_2);
    let status = agent
        .wait_for("scan-b's scan after the restart stored", |s| {
            s["queued"] == 6 && station(s, "door-scan-b")["events"] == 2
        })
        .await;
    // The restarted device counts afresh; its door's table did not change,
    // so the door kept its state (TRUCK-1, one unit loaded before).
    assert_eq!(device(&status, "scan-b")["readings"], 1, "{status:#}");
    assert!(
        station(&status, "door-scan-b")["state"]
            .as_str()
            .is_some_and(|s| s.contains("2 units")),
        "{status:#}"
    );
    assert!(
        agent.child.0.try_wait().expect("try_wait").is_none(),
        "SIGHUP must not stop the agent"
    );
}
