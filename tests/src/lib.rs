//! Harness for dockline's cross-process tests. The system under test is the
//! simulator's [`stack`](dockline_simulator::stack), run with the workspace's
//! own binaries (`dockline-agent`, `dockline-collector`; the embedded broker
//! is `dockline-sim broker`): a [`Cluster`] is its broker, mock ERP (in the
//! test's process) and collector, in a temp folder, with the agents' test
//! settings. Every process a test starts is stopped when its handle drops,
//! a failed test included.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use dockline_simulator::mock_erp::{Effect, ErpConfig};
use dockline_simulator::stack::{
    AgentConfig, AgentNode, CollectorConfig, MqttAddr, Programs, Services, Stack, StackSpec,
};
use serde_json::{Value, json};

pub mod webdriver;

/// The simulator's chaos proxy (black hole, delay, close, reset, refuse),
/// which the link tests put between an agent and the broker.
pub use dockline_simulator::chaos::proxy::ChaosProxy;
/// Batches, bursts, floods and the ack watcher.
pub use dockline_simulator::forge;

/// The folder holding the workspace's binaries (`target/debug` next to the
/// test executable in `target/debug/deps`).
pub fn bin_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("the test knows its own path")?;
    exe.parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .context("the test binary lives in target/<profile>/deps")
}

/// The workspace's binaries as the stack's programs.
pub fn programs() -> Result<Programs> {
    Ok(Programs::binaries(&bin_dir()?))
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
pub fn external_mqtt(test: &str) -> Result<Option<MqttAddr>> {
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
    Ok(Some(MqttAddr {
        host: host.to_string(),
        port: port.parse()?,
    }))
}

/// Webhook secret shared by the mock ERP and the collector.
pub const SECRET: &str = "whsec_ZG9ja2xpbmUtZTJlLXRlc3Qtc2VjcmV0LTMyYnl0ZXM=";

/// What a [`Cluster`] starts with besides its site and devices.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    /// A broker to use; `None` starts an embedded one.
    pub mqtt: Option<MqttAddr>,
    /// The mock ERP (its secret is [`SECRET`] unless changed).
    pub erp: ErpConfig,
    /// Names the collector's MQTT client id, `dockline-collector-{tag}`.
    pub tag: String,
}

impl ClusterSpec {
    /// A healthy mock ERP, the broker `mqtt` (embedded when `None`).
    pub fn new(mqtt: Option<MqttAddr>, tag: &str) -> Self {
        Self {
            mqtt,
            erp: ErpConfig::new(SECRET),
            tag: tag.into(),
        }
    }
}

/// Broker (unless external), mock ERP and collector, in a temp folder
/// removed after the processes stop.
pub struct Cluster {
    /// The system under test (agents a test starts are its own).
    pub stack: Stack,
    /// A client with a 5 s timeout.
    pub http: reqwest::Client,
    // Dropped after `stack`, so no child writes into a removed folder.
    dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts mock ERP, collector and (unless `mqtt` is given) an embedded
    /// broker; `devices` are the agents the collector will accept.
    pub async fn start(
        mqtt: Option<MqttAddr>,
        site: &str,
        devices: &[&str],
        tag: &str,
    ) -> Result<Self> {
        Self::start_with(ClusterSpec::new(mqtt, tag), site, devices, |_| {}).await
    }

    /// [`Cluster::start`] from `spec`, with `tune` changing the collector's
    /// config (a `[mqtt.tls]`, a PostgreSQL inbox) before it starts.
    pub async fn start_with(
        spec: ClusterSpec,
        site: &str,
        devices: &[&str],
        tune: impl FnOnce(&mut CollectorConfig),
    ) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let services = Services::start(StackSpec {
            programs: programs()?,
            dir: dir.path().into(),
            site: site.into(),
            broker: spec.mqtt,
            erp: spec.erp,
        })
        .await?;
        let ids: Vec<String> = devices.iter().map(|d| d.to_string()).collect();
        let mut config = services.collector_config(&ids)?;
        config.mqtt.client_id = format!("dockline-collector-{}", spec.tag);
        config.erp.retry_min_ms = 50;
        config.erp.retry_max_ms = 1000;
        tune(&mut config);
        let stack = match services.start_collector(config).await {
            Ok(stack) => stack,
            Err(e) => {
                dump_logs(dir.path());
                return Err(e.into());
            }
        };
        Ok(Self {
            stack,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()?,
            dir,
        })
    }

    /// The work folder (configs, data, logs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Where the broker accepts connections.
    pub fn mqtt(&self) -> MqttAddr {
        self.stack.services.broker.addr()
    }

    /// `http://` and the collector's API address.
    pub fn collector_url(&self) -> String {
        self.stack.collector.url()
    }

    /// Agent `device`'s config with the tests' settings: batches of 16, a
    /// 2 s ack timeout, reconnects from 50 ms to 1 s, heartbeats every 2 s.
    pub fn agent_config(&self, device: &str) -> Result<AgentConfig> {
        let mut c = self.stack.agent_config(device)?;
        c.uplink.batch_max_events = 16;
        c.uplink.ack_timeout_ms = 2000;
        c.uplink.reconnect_min_ms = 50;
        c.uplink.reconnect_max_ms = 1000;
        c.uplink.heartbeat_secs = 2;
        Ok(c)
    }

    /// Starts agent `config`; the test owns it.
    pub async fn start_agent(&self, config: AgentConfig) -> Result<AgentNode> {
        let mut node = self.stack.agent_node(config);
        if let Err(e) = node.start().await {
            self.dump_logs();
            return Err(e.into());
        }
        Ok(node)
    }

    /// Starts agent `device` with the tests' settings, connected straight to
    /// the broker.
    pub async fn agent(&self, device: &str) -> Result<AgentNode> {
        self.start_agent(self.agent_config(device)?).await
    }

    /// Posts test event `i` ([`event_body`]) to the agent API at `api`;
    /// fails unless the agent answers 201, else gives the event id.
    pub async fn post_event(&self, api: SocketAddr, i: usize) -> Result<String> {
        let r = self
            .http
            .post(format!("http://{api}/v1/events"))
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

    /// Everything the mock ERP booked, in booking order.
    pub fn erp_effects(&self) -> Vec<Effect> {
        self.stack.services.erp.effects()
    }

    /// A GET of `url` as JSON, `None` on any failure.
    pub async fn get(&self, url: &str) -> Option<Value> {
        self.http.get(url).send().await.ok()?.json().await.ok()
    }

    /// `result`, after printing the logs when it is an error.
    pub fn judge<T>(&self, result: Result<T>) -> Result<T> {
        if result.is_err() {
            self.dump_logs();
        }
        result
    }

    /// Prints the last lines of every log (for failures).
    pub fn dump_logs(&self) {
        dump_logs(self.dir.path());
    }
}

/// Prints the last 40 lines of every `*.log` in `dir`.
pub fn dump_logs(dir: &Path) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
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

/// The idempotency key of one ERP effect (the event id), unquoted.
pub fn effect_key(e: &Effect) -> String {
    e.key.trim_matches('"').to_string()
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
