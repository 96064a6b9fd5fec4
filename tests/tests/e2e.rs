//! The whole journey across real processes: handheld app → agent (HTTP) →
//! broker (MQTT) → collector → mock ERP (signed webhook), with the agent
//! killed by SIGKILL in the middle. Every event the agent acknowledged with
//! 201 must be booked at the ERP exactly once.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use dockline_tests::{Proc, bin, eventually, wait_for_file};
use serde_json::{Value, json};

const SECRET: &str = "whsec_ZG9ja2xpbmUtZTJlLXRlc3Qtc2VjcmV0LTMyYnl0ZXM=";

struct Cluster {
    dir: tempfile::TempDir,
    mqtt: (String, u16),
    _broker: Option<Proc>,
    _erp: Proc,
    erp_url: String,
    collector: Proc,
    collector_url: String,
    http: reqwest::Client,
}

fn read_addr(path: &Path) -> Result<String> {
    wait_for_file(path, Duration::from_secs(30))
}

impl Cluster {
    /// Starts mock ERP, collector and (unless `external_mqtt` is given) an
    /// embedded broker; `devices` are the agents the collector will accept.
    fn start(
        external_mqtt: Option<(String, u16)>,
        site: &str,
        devices: &[&str],
        tag: &str,
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
        let mut toml = format!(
            "data_dir = {:?}\n[api]\nlisten = \"127.0.0.1:0\"\n[mqtt]\nhost = {:?}\nport = {}\nclient_id = \"dockline-collector-{tag}\"\nkeep_alive_secs = 5\n[erp]\nurl = \"{erp_url}/events\"\nsecret = \"{SECRET}\"\nretry_min_ms = 50\nretry_max_ms = 1000\n",
            cdir.display().to_string(),
            mqtt.0,
            mqtt.1
        );
        for d in devices {
            toml.push_str(&format!("[[devices]]\nid = \"{d}\"\nsite = \"{site}\"\n"));
        }
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
        })
    }

    fn agent(&self, site: &str, device: &str) -> Result<(Proc, PathBuf)> {
        let adir = self.dir.path().join(device);
        std::fs::create_dir_all(&adir)?;
        let cfg = adir.join("agent.toml");
        std::fs::write(
            &cfg,
            format!(
                "site = \"{site}\"\ndevice = \"{device}\"\ndata_dir = {:?}\n[api]\nlisten = \"127.0.0.1:0\"\n[mqtt]\nhost = {:?}\nport = {}\nkeep_alive_secs = 5\n[uplink]\nbatch_max_events = 16\nack_timeout_ms = 2000\nreconnect_min_ms = 50\nreconnect_max_ms = 1000\nheartbeat_secs = 2\n",
                adir.display().to_string(),
                self.mqtt.0,
                self.mqtt.1
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

    async fn erp_effects(&self) -> Result<Vec<Value>> {
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

    fn dump_logs(&self) {
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

fn effect_key(e: &Value) -> Option<String> {
    ["key", "idempotency_key", "event_id", "id"]
        .iter()
        .find_map(|k| e[*k].as_str())
        .map(|s| s.trim_matches('"').to_string())
}

fn event_body(i: usize) -> Value {
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

/// Posts `count` events, SIGKILLs the agent after `kill_after` of them,
/// restarts it, and returns the ids of every event answered with 201.
async fn post_with_kill(
    c: &Cluster,
    agent: &mut Proc,
    addr_file: &Path,
    count: usize,
    kill_after: usize,
) -> Result<Vec<String>> {
    let mut addr = read_addr(addr_file)?;
    let mut ids = Vec::new();
    for i in 0..count {
        if i == kill_after {
            agent.kill9();
            std::fs::remove_file(addr_file).ok();
            agent.restart()?;
            addr = read_addr(addr_file)?;
        }
        let res = c
            .http
            .post(format!("http://{addr}/v1/events"))
            .json(&event_body(i))
            .send()
            .await;
        match res {
            Ok(r) if r.status() == 201 => {
                let v: Value = r.json().await?;
                ids.push(
                    v["event_id"]
                        .as_str()
                        .context("event_id in 201")?
                        .to_string(),
                );
            }
            Ok(r) => anyhow::bail!(
                "agent answered {} to event {i}: {}",
                r.status(),
                r.text().await.unwrap_or_default()
            ),
            Err(e) => anyhow::bail!("agent unreachable for event {i}: {e}"),
        }
        // Give the uplink time to have batches in flight when the kill lands.
        if i % 4 == 0 {
            tokio::time::sleep(Duration::from_millis(15)).await;
        }
    }
    Ok(ids)
}

async fn journey(external_mqtt: Option<(String, u16)>, tag: &str) -> Result<()> {
    let site = format!("e2e-{tag}");
    let device = format!("hh-{tag}-{}", std::process::id());
    let c = Cluster::start(external_mqtt, &site, &[&device], tag)?;
    let result = async {
        let (mut agent, addr_file) = c.agent(&site, &device)?;
        let ids = post_with_kill(&c, &mut agent, &addr_file, 60, 23).await?;
        let wanted: HashSet<String> = ids.iter().cloned().collect();
        assert_eq!(wanted.len(), ids.len(), "event ids are unique");

        let effects = eventually(
            "every acknowledged event booked at the ERP",
            Duration::from_secs(90),
            || async {
                let effects = c.erp_effects().await.ok()?;
                let keys: HashSet<String> = effects.iter().filter_map(effect_key).collect();
                wanted.is_subset(&keys).then_some(effects)
            },
        )
        .await?;
        let mut per_key: HashMap<String, usize> = HashMap::new();
        for e in &effects {
            *per_key
                .entry(effect_key(e).context("effect without key")?)
                .or_default() += 1;
        }
        let lost: Vec<_> = wanted
            .iter()
            .filter(|id| !per_key.contains_key(*id))
            .collect();
        let duplicated: Vec<_> = per_key.iter().filter(|(_, n)| **n > 1).collect();
        let strangers: Vec<_> = per_key.keys().filter(|k| !wanted.contains(*k)).collect();
        assert!(lost.is_empty(), "lost: {lost:?}");
        assert!(
            duplicated.is_empty(),
            "duplicated at the ERP: {duplicated:?}"
        );
        assert!(
            strangers.is_empty(),
            "ERP booked events nobody acknowledged: {strangers:?}"
        );

        // The collector stored each event once, and the agent learns the verdicts.
        let stats: Value = c
            .http
            .get(format!("{}/v1/stats", c.collector_url))
            .send()
            .await?
            .json()
            .await?;
        assert_eq!(
            stats["received"].as_u64(),
            Some(ids.len() as u64),
            "collector stats: {stats}"
        );
        let addr = read_addr(&addr_file)?;
        eventually(
            "agent outbox drained and verdicts recorded",
            Duration::from_secs(30),
            || async {
                let s: Value = c
                    .http
                    .get(format!("http://{addr}/v1/status"))
                    .send()
                    .await
                    .ok()?
                    .json()
                    .await
                    .ok()?;
                (s["queued"] == 0 && s["booked"].as_u64() == Some(ids.len() as u64)).then_some(())
            },
        )
        .await?;
        Ok::<_, anyhow::Error>(())
    }
    .await;
    if result.is_err() {
        c.dump_logs();
    }
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_agent_loses_and_doubles_nothing_embedded_broker() -> Result<()> {
    journey(None, "emb").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_agent_loses_and_doubles_nothing_mosquitto() -> Result<()> {
    let Ok(url) = std::env::var("DOCKLINE_TEST_MQTT_URL") else {
        eprintln!(
            "SKIP sigkilled_agent_loses_and_doubles_nothing_mosquitto: set DOCKLINE_TEST_MQTT_URL=mqtt://127.0.0.1:1883 to run against a real Mosquitto"
        );
        return Ok(());
    };
    let rest = url.strip_prefix("mqtt://").unwrap_or(&url);
    let (host, port) = rest
        .trim_end_matches('/')
        .rsplit_once(':')
        .ok_or_else(|| anyhow!("DOCKLINE_TEST_MQTT_URL={url}: expected mqtt://host:port"))?;
    journey(Some((host.to_string(), port.parse()?)), "mosq").await
}

/// Hostile input on the events topic: the collector names the problem and
/// keeps going; a valid event afterwards is still booked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collector_survives_malformed_cbor_and_unknown_devices() -> Result<()> {
    let site = "e2e-bad";
    let device = format!("hh-ok-{}", std::process::id());
    let mut c = Cluster::start(None, site, &[&device], "bad")?;
    let result = async {
        let mut opts = rumqttc::MqttOptions::new("hostile-client", c.mqtt.0.clone(), c.mqtt.1);
        opts.set_keep_alive(Duration::from_secs(5));
        let (client, mut eventloop) = rumqttc::AsyncClient::new(opts, 10);
        let pump = tokio::spawn(async move { while eventloop.poll().await.is_ok() {} });
        let garbage_topic = format!("dockline/v1/{site}/{device}/events");
        client
            .publish(
                &garbage_topic,
                rumqttc::QoS::AtLeastOnce,
                false,
                b"\xff\x00not cbor".to_vec(),
            )
            .await?;
        // A well-formed batch from a device the collector does not know.
        let stranger = dockline_protocol::DeviceId::new("stranger-1")?;
        let batch = dockline_protocol::Batch {
            v: 1,
            device: stranger,
            epoch: 1,
            first_held: 1,
            events: vec![],
            shed: vec![],
        };
        client
            .publish(
                format!("dockline/v1/{site}/stranger-1/events"),
                rumqttc::QoS::AtLeastOnce,
                false,
                dockline_protocol::encode(&batch)?,
            )
            .await?;
        eventually(
            "collector logs both refusals",
            Duration::from_secs(20),
            || async {
                let log = c.collector.log_text();
                (log.contains("not valid dockline CBOR") && log.contains("stranger-1"))
                    .then_some(())
            },
        )
        .await?;
        assert!(c.collector.running(), "collector must keep running");
        pump.abort();

        let (_agent, addr_file) = c.agent(site, &device)?;
        let addr = read_addr(&addr_file)?;
        let r = c
            .http
            .post(format!("http://{addr}/v1/events"))
            .json(&event_body(0))
            .send()
            .await?;
        assert_eq!(r.status(), 201);
        let id = r.json::<Value>().await?["event_id"]
            .as_str()
            .context("id")?
            .to_string();
        eventually(
            "the valid event is booked",
            Duration::from_secs(30),
            || async {
                let effects = c.erp_effects().await.ok()?;
                effects
                    .iter()
                    .any(|e| effect_key(e).as_deref() == Some(id.as_str()))
                    .then_some(())
            },
        )
        .await?;
        Ok::<_, anyhow::Error>(())
    }
    .await;
    if result.is_err() {
        c.dump_logs();
    }
    result
}
