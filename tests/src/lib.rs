//! Harness for dockline's cross-process tests: find the built binaries, start
//! them as child processes with their own temp folders and log files, and
//! make sure every process a test starts is stopped, even when the test fails.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use serde_json::{Value, json};

pub mod forge;
pub mod pty;

/// The folder holding the workspace's binaries (`target/debug` next to the
/// test executable in `target/debug/deps`).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test knows its own path");
    let deps = exe
        .parent()
        .expect("test binary lives in target/<profile>/deps");
    deps.parent().expect("deps has a parent").to_path_buf()
}

/// Path of a workspace binary, with advice when it has not been built.
pub fn bin(name: &str) -> Result<PathBuf> {
    let path = bin_dir().join(name);
    if !path.exists() {
        bail!(
            "{} is not built; run the tests with `cargo test --workspace` (it builds every binary) \
             or `cargo build --workspace --bins` first",
            path.display()
        );
    }
    Ok(path)
}

/// A child process that is killed (SIGKILL) when dropped.
pub struct Proc {
    /// Name for messages.
    pub name: String,
    child: Option<Child>,
    /// Where its stdout and stderr go.
    pub log: PathBuf,
    program: PathBuf,
    args: Vec<String>,
    envs: Vec<(String, String)>,
}

impl Proc {
    /// Starts `program args…`, logging to `{log_dir}/{name}.log` (appended, so
    /// a restarted process keeps one log).
    pub fn start(
        name: &str,
        program: &Path,
        args: &[&str],
        envs: &[(&str, &str)],
        log_dir: &Path,
    ) -> Result<Self> {
        let mut p = Proc {
            name: name.into(),
            child: None,
            log: log_dir.join(format!("{name}.log")),
            program: program.into(),
            args: args.iter().map(|s| s.to_string()).collect(),
            envs: envs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        p.spawn()?;
        Ok(p)
    }

    fn spawn(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = Command::new(&self.program)
            .args(&self.args)
            .envs(self.envs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", self.program.display()))?;
        self.child = Some(child);
        Ok(())
    }

    /// Kills the process with SIGKILL (no goodbye, no flush) and reaps it.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the same command again.
    pub fn restart(&mut self) -> Result<()> {
        self.kill9();
        self.spawn()
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        match &mut self.child {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Waits until `path` exists with non-empty content, returning it.
pub fn wait_for_file(path: &Path, timeout: Duration) -> Result<String> {
    let start = Instant::now();
    loop {
        if let Ok(text) = std::fs::read_to_string(path)
            && !text.trim().is_empty()
        {
            return Ok(text.trim().to_string());
        }
        if start.elapsed() > timeout {
            bail!("{} did not appear within {:?}", path.display(), timeout);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Polls `check` until it returns `Some`, or fails after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        if start.elapsed() > timeout {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The broker named by `DOCKLINE_TEST_MQTT_URL` (`mqtt://host:port`), or
/// `None` after printing why `test` is skipped.
pub fn external_mqtt(test: &str) -> Result<Option<(String, u16)>> {
    let Ok(url) = std::env::var("DOCKLINE_TEST_MQTT_URL") else {
        eprintln!(
            "SKIP {test}: set DOCKLINE_TEST_MQTT_URL=mqtt://127.0.0.1:1883 to run against a real Mosquitto"
        );
        return Ok(None);
    };
    let rest = url.strip_prefix("mqtt://").unwrap_or(&url);
    let (host, port) = rest
        .trim_end_matches('/')
        .rsplit_once(':')
        .ok_or_else(|| anyhow!("DOCKLINE_TEST_MQTT_URL={url}: expected mqtt://host:port"))?;
    Ok(Some((host.to_string(), port.parse()?)))
}

/// Webhook secret shared by the mock ERP and the collector.
pub const SECRET: &str = "whsec_ZG9ja2xpbmUtZTJlLXRlc3Qtc2VjcmV0LTMyYnl0ZXM=";

/// Broker (unless external), mock ERP and collector, each a separate process.
pub struct Cluster {
    /// See the struct docs.
    pub dir: tempfile::TempDir,
    /// See the struct docs.
    pub mqtt: (String, u16),
    _broker: Option<Proc>,
    _erp: Proc,
    /// See the struct docs.
    pub erp_url: String,
    /// See the struct docs.
    pub collector: Proc,
    /// See the struct docs.
    pub collector_url: String,
    /// See the struct docs.
    pub http: reqwest::Client,
    /// The collector's command verify key (base64), from `dockline-collector
    /// keygen`; every agent the cluster starts is configured with it.
    pub verify_key: String,
}

/// Waits for an address file written by a process (30 s).
pub fn read_addr(path: &Path) -> Result<String> {
    wait_for_file(path, Duration::from_secs(30))
}

impl Cluster {
    /// Posts test event `i` ([`event_body`]) to the agent API at `addr`;
    /// fails unless the agent answers 201, else gives the event id.
    pub async fn post_event(&self, addr: &str, i: usize) -> Result<String> {
        let r = self
            .http
            .post(format!("http://{addr}/v1/events"))
            .json(&event_body(i))
            .send()
            .await?;
        if r.status() != 201 {
            bail!("agent answered {} to event {i}", r.status());
        }
        Ok(r.json::<Value>().await?["event_id"]
            .as_str()
            .context("event_id in 201")?
            .to_string())
    }

    /// Starts mock ERP, collector and (unless `external_mqtt` is given) an
    /// embedded broker; `devices` are the agents the collector will accept.
    pub fn start(
        external_mqtt: Option<(String, u16)>,
        site: &str,
        devices: &[&str],
        tag: &str,
    ) -> Result<Self> {
        Self::start_configured(external_mqtt, site, devices, tag, "")
    }

    /// [`Cluster::start`] with `collector_extra` TOML appended to the
    /// collector's config (a `[mqtt.tls]` table, say); the collector's MQTT
    /// client id is `dockline-collector-{tag}`.
    pub fn start_configured(
        external_mqtt: Option<(String, u16)>,
        site: &str,
        devices: &[&str],
        tag: &str,
        collector_extra: &str,
    ) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let logs = dir.path();
        let sim = bin("dockline-sim")?;
        let (broker, mqtt) = match external_mqtt {
            Some(m) => (None, m),
            None => {
                let addr_file = logs.join("broker.addr");
                let p = Proc::start(
                    "broker",
                    &sim,
                    &[
                        "broker",
                        "--listen",
                        "127.0.0.1:0",
                        "--addr-file",
                        &addr_file.display().to_string(),
                    ],
                    &[],
                    logs,
                )?;
                let addr = read_addr(&addr_file)?;
                let (host, port) = addr
                    .rsplit_once(':')
                    .ok_or_else(|| anyhow!("bad broker address {addr}"))?;
                (Some(p), (host.to_string(), port.parse()?))
            }
        };
        let erp_addr_file = logs.join("erp.addr");
        let erp = Proc::start(
            "mock-erp",
            &sim,
            &[
                "mock-erp",
                "--listen",
                "127.0.0.1:0",
                "--addr-file",
                &erp_addr_file.display().to_string(),
                "--secret",
                SECRET,
            ],
            &[],
            logs,
        )?;
        let erp_url = format!("http://{}", read_addr(&erp_addr_file)?);

        let cdir = logs.join("collector");
        std::fs::create_dir_all(&cdir)?;
        // Commands are signed as in production: a fresh key pair per cluster.
        let keys = logs.join("keys");
        let out = std::process::Command::new(bin("dockline-collector")?)
            .arg("keygen")
            .arg("--out")
            .arg(&keys)
            .output()
            .context("running dockline-collector keygen")?;
        if !out.status.success() {
            bail!(
                "dockline-collector keygen failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let verify_key = std::fs::read_to_string(keys.join("command-verify.pub"))?
            .trim()
            .to_string();
        let mut toml = format!(
            "data_dir = {:?}\n[api]\nlisten = \"127.0.0.1:0\"\n[mqtt]\nhost = {:?}\nport = {}\nclient_id = \"dockline-collector-{tag}\"\nkeep_alive_secs = 5\n[erp]\nurl = \"{erp_url}/events\"\nsecret = \"{SECRET}\"\nretry_min_ms = 50\nretry_max_ms = 1000\n[commands]\nsigning_key_file = {:?}\n",
            cdir.display().to_string(),
            mqtt.0,
            mqtt.1,
            keys.join("command-signing.key").display().to_string()
        );
        for d in devices {
            toml.push_str(&format!("[[devices]]\nid = \"{d}\"\nsite = \"{site}\"\n"));
        }
        toml.push_str(collector_extra);
        let cfg = logs.join("collector.toml");
        std::fs::write(&cfg, toml)?;
        let collector = Proc::start(
            "collector",
            &bin("dockline-collector")?,
            &["--config", &cfg.display().to_string()],
            &[],
            logs,
        )?;
        let collector_url = format!("http://{}", read_addr(&cdir.join("api.addr"))?);
        Ok(Self {
            dir,
            mqtt,
            _broker: broker,
            _erp: erp,
            erp_url,
            collector,
            collector_url,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()?,
            verify_key,
        })
    }

    /// Kills the collector (SIGKILL) and starts it again with the same config
    /// and data; its API listens on a new port, so `collector_url` changes.
    pub fn restart_collector(&mut self) -> Result<()> {
        let addr_file = self.dir.path().join("collector").join("api.addr");
        self.collector.kill9();
        let _ = std::fs::remove_file(&addr_file);
        self.collector.restart()?;
        self.collector_url = format!("http://{}", read_addr(&addr_file)?);
        Ok(())
    }

    /// Starts an agent connected straight to the cluster's broker.
    pub fn agent(&self, site: &str, device: &str) -> Result<(Proc, PathBuf)> {
        self.agent_via(site, device, &self.mqtt.clone(), 5)
    }

    /// Starts an agent whose MQTT goes to `mqtt` (a proxy, say) with the
    /// given keep-alive; returns it and the path of its `api.addr` file.
    pub fn agent_via(
        &self,
        site: &str,
        device: &str,
        mqtt: &(String, u16),
        keep_alive_secs: u64,
    ) -> Result<(Proc, PathBuf)> {
        self.agent_configured(site, device, mqtt, keep_alive_secs, "")
    }

    /// Starts an agent connected straight to the broker, with `extra` TOML
    /// (`[[devices]]`, `[[stations]]` tables) appended to its config.
    pub fn agent_with(&self, site: &str, device: &str, extra: &str) -> Result<(Proc, PathBuf)> {
        self.agent_configured(site, device, &self.mqtt.clone(), 5, extra)
    }

    fn agent_configured(
        &self,
        site: &str,
        device: &str,
        mqtt: &(String, u16),
        keep_alive_secs: u64,
        extra: &str,
    ) -> Result<(Proc, PathBuf)> {
        let adir = self.dir.path().join(device);
        std::fs::create_dir_all(&adir)?;
        let cfg = adir.join("agent.toml");
        std::fs::write(
            &cfg,
            format!(
                "site = \"{site}\"\ndevice = \"{device}\"\ndata_dir = {:?}\n[api]\nlisten = \"127.0.0.1:0\"\nrequire_token = false\n[mqtt]\nhost = {:?}\nport = {}\nkeep_alive_secs = {keep_alive_secs}\n[uplink]\nbatch_max_events = 16\nack_timeout_ms = 2000\nreconnect_min_ms = 50\nreconnect_max_ms = 1000\nheartbeat_secs = 2\n[commands]\nverify_key = \"{}\"\n{extra}",
                adir.display().to_string(),
                mqtt.0,
                mqtt.1,
                self.verify_key
            ),
        )?;
        let p = Proc::start(
            device,
            &bin("dockline-agent")?,
            &["--config", &cfg.display().to_string()],
            &[],
            self.dir.path(),
        )?;
        Ok((p, adir.join("api.addr")))
    }

    /// Everything the mock ERP booked.
    pub async fn erp_effects(&self) -> Result<Vec<Value>> {
        let v: Value = self
            .http
            .get(format!("{}/effects", self.erp_url))
            .send()
            .await?
            .json()
            .await?;
        let list = v
            .as_array()
            .cloned()
            .or_else(|| v["effects"].as_array().cloned());
        list.ok_or_else(|| anyhow!("mock ERP /effects did not return a list: {v}"))
    }

    /// Prints the last lines of every log (for failures).
    pub fn dump_logs(&self) {
        for entry in std::fs::read_dir(self.dir.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let p = entry.path();
            if p.extension().is_some_and(|e| e == "log") {
                let text = std::fs::read_to_string(&p).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(40).collect();
                eprintln!("----- {} (last 40 lines) -----", p.display());
                for l in tail.into_iter().rev() {
                    eprintln!("{l}");
                }
            }
        }
    }
}

/// The idempotency key of one ERP effect.
pub fn effect_key(e: &Value) -> Option<String> {
    ["key", "idempotency_key", "event_id", "id"]
        .iter()
        .find_map(|k| e[*k].as_str())
        .map(|s| s.trim_matches('"').to_string())
}

/// The `i`-th business event of a test run (picked, packed, delivered).
pub fn event_body(i: usize) -> Value {
    let order = format!("SO-{}", 1000 + i / 3);
    match i % 3 {
        0 => {
            json!({"detail": {"picked": {"item": "09506000134352", "quantity": 1 + i % 4}}, "refs": {"order": order}})
        }
        1 => {
            json!({"detail": {"packed": {"quantity": 2, "weight": {"value": 1.5, "unit": "kg"}}}, "refs": {"order": order, "sscc": "106141411234567897"}})
        }
        _ => {
            json!({"detail": {"delivered": {"received_by": "R. Receiver", "pieces": 2}}, "refs": {"order": order, "stop": "STOP-1"}})
        }
    }
}

/// The simulator's chaos proxy (black hole, delay, close, reset, refuse),
/// which the link tests put between an agent and the broker.
pub use dockline_simulator::chaos::proxy::ChaosProxy;

/// Publishes each `(topic, payload)` QoS 1 through a client made from
/// `options` and waits for the broker's PUBACKs (Mosquitto PUBACKs a publish
/// its ACL denies, too, and drops it); `who` names the client in errors.
pub async fn publish_all(
    options: rumqttc::MqttOptions,
    who: &str,
    messages: Vec<(String, Vec<u8>)>,
) -> Result<()> {
    use rumqttc::{AsyncClient, Event, Packet, QoS};
    let (client, mut eventloop) = AsyncClient::new(options, 16);
    let n = messages.len();
    for (topic, payload) in messages {
        client
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .await?;
    }
    let mut acked = 0;
    while acked < n {
        match tokio::time::timeout(Duration::from_secs(10), eventloop.poll()).await {
            Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => acked += 1,
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(anyhow!("{who}: {e}")),
            Err(_) => return Err(anyhow!("{who}: no PUBACK within 10 s")),
        }
    }
    let _ = client.disconnect().await;
    // Let the last packets leave before the event loop is dropped.
    let _ = tokio::time::timeout(Duration::from_millis(300), eventloop.poll()).await;
    Ok(())
}
