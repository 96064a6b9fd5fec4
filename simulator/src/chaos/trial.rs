//! One chaos trial: the demo's journey with a seeded mix of faults, then a
//! bounded wait for quiescence and the verdict.
//!
//! # Wiring
//!
//! ```text
//!  producer ─HTTP─▶ agents ─MQTT─▶ [proxy A] ─▶ broker ◀─MQTT─ collector ─HTTP─▶ [proxy E] ─▶ mock ERP
//! ```
//!
//! The broker, the collector and the agents are child processes of this
//! program (`current_exe() broker|collector|agent`), each restartable with the
//! same config and data directory; the mock ERP and both chaos proxies run in
//! this process so the trial can read the ERP's books and steer the faults.
//!
//! # Life of a trial
//!
//! 1. Start everything, then produce the scenario's orders for the trial's
//!    duration while the [`plan`](super::plan) is played: each fault is
//!    applied at its time and undone after its hold (a killed process is
//!    started again, a link healed, the ERP's knobs reset).
//! 2. Stop producing. Every fault has ended by now (the plan keeps a margin).
//! 3. Wait, bounded, for quiescence: every accepted event booked, nothing
//!    pending at the collector, nothing queued on an agent. Then one more
//!    second, so a late redelivery would show up as a duplicate.
//! 4. Judge with [`verdict::tally`](crate::verdict::tally) and stop every
//!    process. Stopping happens on every path: each child is killed when its
//!    handle drops, and the producer task is aborted by a guard.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::plan::{self, Fault, Link, LinkFault, Planned};
use super::proxy::ChaosProxy;
use super::{ChaosError, ChaosOptions, FaultRecord, TrialReport};
use crate::demo::{
    self, Production, READY_TIMEOUT, Route, Routes, agent_config, collector_config, get_json,
    start_broker,
};
use crate::mock_erp::{ErpConfig, ErpFaults, MockErp, MockErpHandle};
use crate::process::ChildProcess;
use crate::scenario::{Role, Scenario};
use crate::verdict::{Generated, Tally, tally};

/// How often the fault player and the drain look at the clock.
const TICK: Duration = Duration::from_millis(50);
/// Grace given to agents and the collector to stop on SIGTERM at the end.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// The agent settings the chaos trials add to the demo's: reconnect quickly,
/// so a trial's recovery is measured in seconds, not in the 30 s default cap.
fn chaos_agent_config(device: &str, data_dir: &Path, broker: SocketAddr) -> String {
    // `agent_config` ends inside `[uplink]`, so these keys land there.
    agent_config(device, data_dir, broker) + "reconnect_min_ms = 100\nreconnect_max_ms = 2000\n"
}

/// A child that the trial kills and starts again with the same arguments.
struct Node {
    name: String,
    args: Vec<String>,
    /// The `api.addr` the child writes when ready.
    addr_file: PathBuf,
    process: Option<ChildProcess>,
}

impl Node {
    /// Starts the child and waits for its API address.
    async fn start(&mut self, exe: &Path, dir: &Path) -> Result<SocketAddr, ChaosError> {
        // A stale file from the previous run would look ready at once.
        let _ = std::fs::remove_file(&self.addr_file);
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        let mut child = ChildProcess::spawn(&self.name, exe, &args, dir)?;
        let addr = child.wait_for_addr(&self.addr_file, READY_TIMEOUT).await?;
        self.process = Some(child);
        Ok(addr)
    }

    /// SIGKILL, no goodbye.
    fn kill(&mut self) {
        if let Some(p) = self.process.take() {
            p.kill();
        }
    }

    async fn terminate(&mut self) {
        if let Some(p) = self.process.take() {
            p.terminate(STOP_GRACE).await;
        }
    }
}

/// An agent node, its device id and roles.
struct AgentNode {
    device: String,
    roles: Vec<Role>,
    api: SocketAddr,
    node: Node,
}

/// Aborts a task when dropped, so an early error stops the producer.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Everything one trial started; dropping it stops all of it.
struct Stack {
    dir: PathBuf,
    exe: PathBuf,
    broker: Option<ChildProcess>,
    broker_addr: SocketAddr,
    broker_starts: u32,
    agents_link: ChaosProxy,
    erp_link: ChaosProxy,
    erp: MockErpHandle,
    collector: Node,
    collector_api: SocketAddr,
    agents: Vec<AgentNode>,
    routes: Routes,
}

fn write(path: &Path, text: &str) -> Result<(), ChaosError> {
    std::fs::write(path, text).map_err(|source| ChaosError::Io {
        path: path.into(),
        source,
    })
}

fn mkdir(path: &Path) -> Result<(), ChaosError> {
    std::fs::create_dir_all(path).map_err(|source| ChaosError::Io {
        path: path.into(),
        source,
    })
}

impl Stack {
    async fn start(opts: &ChaosOptions, seed: u64, dir: &Path) -> Result<Self, ChaosError> {
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        let (broker, broker_addr) = start_broker(&opts.exe, dir, loopback, 1).await?;
        let agents_link = ChaosProxy::start(broker_addr)
            .await
            .map_err(|source| ChaosError::Proxy { source })?;

        let mut key = [0u8; 32];
        rand::rngs::StdRng::seed_from_u64(seed).fill(&mut key);
        let secret = format!(
            "whsec_{}",
            base64::engine::general_purpose::STANDARD.encode(key)
        );
        let mut erp_config = ErpConfig::new(secret.clone());
        erp_config.seed = seed;
        let (erp, erp_addr) = MockErp::start(loopback, erp_config).await?;
        let erp_link = ChaosProxy::start(erp_addr)
            .await
            .map_err(|source| ChaosError::Proxy { source })?;

        let plan = demo::devices(opts.agents);
        let ids: Vec<String> = plan.iter().map(|(d, _)| d.clone()).collect();
        let cdir = dir.join("collector");
        mkdir(&cdir)?;
        let cfile = dir.join("collector.toml");
        write(
            &cfile,
            &collector_config(&cdir, broker_addr, &ids, erp_link.addr(), &secret),
        )?;
        let mut collector = Node {
            name: "collector".into(),
            args: vec![
                "collector".into(),
                "--config".into(),
                cfile.display().to_string(),
            ],
            addr_file: cdir.join("api.addr"),
            process: None,
        };
        let collector_api = collector.start(&opts.exe, dir).await?;

        let mut agents = Vec::new();
        let mut routes = Vec::new();
        for (device, roles) in plan {
            let adir = dir.join(&device);
            mkdir(&adir)?;
            let afile = dir.join(format!("{device}.toml"));
            write(
                &afile,
                &chaos_agent_config(&device, &adir, agents_link.addr()),
            )?;
            let mut node = Node {
                name: device.clone(),
                args: vec![
                    "agent".into(),
                    "--config".into(),
                    afile.display().to_string(),
                ],
                addr_file: adir.join("api.addr"),
                process: None,
            };
            let api = node.start(&opts.exe, dir).await?;
            routes.extend(roles.iter().map(|r| Route {
                role: *r,
                device: device.clone(),
                api,
            }));
            agents.push(AgentNode {
                device,
                roles,
                api,
                node,
            });
        }
        Ok(Self {
            dir: dir.into(),
            exe: opts.exe.clone(),
            broker: Some(broker),
            broker_addr,
            broker_starts: 1,
            agents_link,
            erp_link,
            erp,
            collector,
            collector_api,
            agents,
            routes: Arc::new(Mutex::new(routes)),
        })
    }

    fn pickers(&self) -> usize {
        self.agents
            .iter()
            .flat_map(|a| &a.roles)
            .filter(|r| matches!(r, Role::Picker(_)))
            .count()
    }

    fn proxy(&self, link: Link) -> &ChaosProxy {
        match link {
            Link::AgentsBroker => &self.agents_link,
            Link::CollectorErp => &self.erp_link,
        }
    }

    /// Applies the start of a fault.
    fn begin(&mut self, fault: &Fault) -> Result<(), ChaosError> {
        match *fault {
            Fault::Link { link, fault } => {
                let proxy = self.proxy(link);
                match fault {
                    LinkFault::Close => proxy.close_all(),
                    LinkFault::Reset => proxy.reset_all(),
                    LinkFault::Delay { ms } => proxy.set_delay(Duration::from_millis(ms)),
                    LinkFault::BlackHole => proxy.black_hole(),
                    LinkFault::Down => {
                        proxy.refuse(true);
                        proxy.reset_all();
                    }
                }
            }
            Fault::KillAgent { agent } => {
                if let Some(a) = self.agents.get_mut(agent) {
                    a.node.kill();
                }
            }
            Fault::KillCollector => self.collector.kill(),
            Fault::BrokerOutage => {
                if let Some(b) = self.broker.take() {
                    b.kill();
                }
            }
            Fault::ErpErrors { rate } => self.erp.set_faults(ErpFaults {
                fail_rate: rate,
                ..ErpFaults::default()
            })?,
            Fault::ErpThrottle { rate } => self.erp.set_faults(ErpFaults {
                throttle_rate: rate,
                ..ErpFaults::default()
            })?,
            Fault::ErpSlow { ms } => self.erp.set_faults(ErpFaults {
                delay_ms: ms,
                ..ErpFaults::default()
            })?,
            Fault::ErpLoseAfterCommit { rate } => self.erp.set_faults(ErpFaults {
                lose_after_commit_rate: rate,
                ..ErpFaults::default()
            })?,
            Fault::ErpSessionExpiry { every, ms } => self.erp.set_faults(ErpFaults {
                session_expiry_every: every,
                session_expiry_ms: ms,
                ..ErpFaults::default()
            })?,
        }
        Ok(())
    }

    /// Undoes a fault: heals the link, restarts the process, resets the ERP.
    async fn end(&mut self, fault: &Fault) -> Result<(), ChaosError> {
        match *fault {
            Fault::Link { link, .. } => self.proxy(link).heal(),
            Fault::KillAgent { agent } => self.restart_agent(agent).await?,
            Fault::KillCollector => {
                self.collector_api = self.collector.start(&self.exe, &self.dir).await?;
            }
            Fault::BrokerOutage => {
                let child = demo::restart_broker(
                    &self.exe,
                    &self.dir,
                    self.broker_addr,
                    &mut self.broker_starts,
                )
                .await?;
                self.broker = Some(child);
            }
            Fault::ErpErrors { .. }
            | Fault::ErpThrottle { .. }
            | Fault::ErpSlow { .. }
            | Fault::ErpLoseAfterCommit { .. }
            | Fault::ErpSessionExpiry { .. } => self.erp.set_faults(ErpFaults::default())?,
        }
        Ok(())
    }

    async fn restart_agent(&mut self, index: usize) -> Result<(), ChaosError> {
        let Some(a) = self.agents.get_mut(index) else {
            return Ok(());
        };
        a.api = a.node.start(&self.exe, &self.dir).await?;
        let mut routes = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        for r in routes.iter_mut().filter(|r| r.device == a.device) {
            r.api = a.api;
        }
        Ok(())
    }

    /// Stops everything: agents and collector get SIGTERM and a grace period.
    async fn shutdown(mut self) {
        for a in &mut self.agents {
            a.node.terminate().await;
        }
        self.collector.terminate().await;
        if let Some(b) = self.broker.take() {
            b.kill();
        }
        self.erp.shutdown().await;
    }
}

/// What the drain reads from the running system.
#[derive(Debug, Default)]
struct Quiet {
    tally: Tally,
    collector: Option<Value>,
    agents_queued: Option<u64>,
}

impl Quiet {
    fn reached(&self) -> bool {
        let pending = self.collector.as_ref().and_then(|c| c["pending"].as_u64());
        self.tally.lost == 0 && pending == Some(0) && self.agents_queued == Some(0)
    }
}

async fn look(client: &reqwest::Client, stack: &Stack, generated: &[Generated]) -> Quiet {
    let collector = get_json(client, format!("http://{}/v1/stats", stack.collector_api)).await;
    let mut queued = Some(0u64);
    for a in &stack.agents {
        let s = get_json(client, format!("http://{}/v1/status", a.api)).await;
        queued = match (queued, s.as_ref().and_then(|s| s["queued"].as_u64())) {
            (Some(total), Some(n)) => Some(total + n),
            _ => None,
        };
    }
    Quiet {
        tally: tally(generated, &stack.erp.effects()),
        collector,
        agents_queued: queued,
    }
}

/// For events with no effect: the state their agent reports (`queued`,
/// `stored`, …, `unknown` when it does not know the event, `unreachable`).
async fn where_lost(
    client: &reqwest::Client,
    stack: &Stack,
    generated: &[Generated],
    effects: &[crate::mock_erp::Effect],
) -> BTreeMap<String, u64> {
    let booked: std::collections::HashSet<&str> = effects
        .iter()
        .flat_map(|e| [e.id.as_str(), e.key.as_str()])
        .collect();
    let mut out = BTreeMap::new();
    for g in generated
        .iter()
        .filter(|g| !booked.contains(g.event_id.as_str()))
    {
        let api = stack
            .agents
            .iter()
            .find(|a| a.device == g.device)
            .map(|a| a.api);
        let state = match api {
            Some(api) => match client
                .get(format!("http://{api}/v1/events/{}", g.event_id))
                .send()
                .await
            {
                Ok(r) if r.status() == reqwest::StatusCode::NOT_FOUND => "unknown".to_string(),
                Ok(r) => match r.json::<Value>().await {
                    Ok(v) => v["state"].as_str().unwrap_or("unknown").to_string(),
                    Err(_) => "unreachable".to_string(),
                },
                Err(_) => "unreachable".to_string(),
            },
            None => "unreachable".to_string(),
        };
        *out.entry(state).or_default() += 1;
    }
    out
}

fn record(p: &Planned, stack: &Stack) -> FaultRecord {
    let target = match p.fault {
        Fault::KillAgent { agent } => stack
            .agents
            .get(agent)
            .map(|a| a.device.clone())
            .unwrap_or_default(),
        _ => String::new(),
    };
    FaultRecord {
        at_secs: round2(p.at.as_secs_f64()),
        hold_secs: round2(p.hold.as_secs_f64()),
        kind: p.fault.kind(),
        target,
        strength: p.fault.strength(),
    }
}

/// Writes what the verdict was drawn from next to the logs of a failed
/// trial: `accepted.jsonl` (one accepted event a line, in acceptance order)
/// and `effects.json` (the ERP's books in booking order).
fn keep_evidence(dir: &Path, generated: &[Generated], effects: &[crate::mock_erp::Effect]) {
    let accepted: String = generated
        .iter()
        .map(|g| {
            serde_json::json!({
                "event_id": g.event_id, "kind": g.kind, "device": g.device,
                "epoch": g.epoch, "seq": g.seq,
            })
            .to_string()
                + "\n"
        })
        .collect();
    let effects = serde_json::to_string_pretty(effects).unwrap_or_default();
    for (name, text) in [("accepted.jsonl", accepted), ("effects.json", effects)] {
        if let Err(e) = std::fs::write(dir.join(name), text) {
            tracing::warn!(error = %e, file = name, "cannot keep the trial's evidence");
        }
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Runs trial `number` with `seed` in `dir`; an `Err` means the trial could
/// not be carried out (a process did not start or restart), which the caller
/// reports as a failed trial.
pub(super) async fn run(
    opts: &ChaosOptions,
    number: usize,
    seed: u64,
    dir: &Path,
) -> Result<TrialReport, ChaosError> {
    let started = Instant::now();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    let mut stack = Stack::start(opts, seed, dir).await?;
    let planned = plan::plan(seed, opts.duration, stack.agents.len());
    let faults: Vec<FaultRecord> = planned.iter().map(|p| record(p, &stack)).collect();

    let production = Arc::new(Production::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut producer = AbortOnDrop(tokio::spawn(demo::produce(
        client.clone(),
        stack.routes.clone(),
        Scenario::new(seed, stack.pickers()),
        opts.orders_per_sec,
        production.clone(),
        stop_rx,
    )));

    // Play the plan: start each fault at its time, end it after its hold.
    let t0 = Instant::now();
    let mut next = 0usize;
    let mut active: Vec<Planned> = Vec::new();
    let mut applied = 0u64;
    while t0.elapsed() < opts.duration || !active.is_empty() || next < planned.len() {
        let now = t0.elapsed();
        while let Some(p) = planned.get(next).filter(|p| p.at <= now) {
            stack.begin(&p.fault)?;
            applied += 1;
            active.push(*p);
            next += 1;
        }
        let mut i = 0;
        while i < active.len() {
            if active[i].end() <= t0.elapsed() {
                let p = active.swap_remove(i);
                stack.end(&p.fault).await?;
            } else {
                i += 1;
            }
        }
        tokio::time::sleep(TICK).await;
    }
    let _ = stop_tx.send(true);
    let _ = (&mut producer.0).await;
    let generated = production.generated();

    // Quiescence, bounded.
    let drain_start = Instant::now();
    let mut quiet = look(&client, &stack, &generated).await;
    while !quiet.reached() && drain_start.elapsed() < opts.drain_timeout {
        tokio::time::sleep(Duration::from_millis(200)).await;
        quiet = look(&client, &stack, &generated).await;
    }
    let drain_secs = drain_start.elapsed().as_secs_f64();
    // A late redelivery would show up as a duplicate: give it a moment.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let last = look(&client, &stack, &generated).await;
    let quiescent = quiet.reached();
    let effects = stack.erp.effects();
    let t = tally(&generated, &effects);
    let lost_where = if t.lost > 0 {
        where_lost(&client, &stack, &generated, &effects).await
    } else {
        BTreeMap::new()
    };
    let erp = stack.erp.stats();
    let collector = last.collector.unwrap_or(Value::Null);
    let proxy_cuts = stack.agents_link.cut_connections() + stack.erp_link.cut_connections();
    let proxy_accepted = stack.agents_link.accepted() + stack.erp_link.accepted();
    stack.shutdown().await;

    let events_generated = generated.len() as u64;
    let passed = events_generated > 0
        && t.lost == 0
        && t.duplicated == 0
        && (t.out_of_lane_order == 0 || !opts.strict_order);
    if !passed || t.out_of_lane_order > 0 {
        keep_evidence(dir, &generated, &effects);
    }
    Ok(TrialReport {
        trial: number,
        seed,
        passed,
        error: None,
        events_generated,
        booked: t.booked,
        lost: t.lost,
        duplicated: t.duplicated,
        out_of_lane_order: t.out_of_lane_order,
        order_inversions: t.order_inversions,
        unexpected_effects: t.unexpected,
        faults_injected: applied,
        faults,
        erp_faults_injected: erp.faults_injected,
        erp_replays: erp.replays,
        proxy_connections: proxy_accepted,
        proxy_connections_cut: proxy_cuts,
        posts_refused: production.posts_refused.load(Ordering::Relaxed),
        post_errors: production.post_errors.load(Ordering::Relaxed),
        collector_duplicates_dropped: collector["duplicates"].as_u64().unwrap_or(0),
        collector_dead_letters: collector["dead_letters"].as_u64().unwrap_or(0),
        lost_where,
        quiescent,
        drain_secs: round2(drain_secs),
        duration_secs: round2(started.elapsed().as_secs_f64()),
        work_dir: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chaos_agent_config_reconnects_quickly() {
        let broker: SocketAddr = "127.0.0.1:1883".parse().expect("addr");
        let a: toml::Table = chaos_agent_config("hh-01", Path::new("/tmp/a"), broker)
            .parse()
            .expect("agent toml");
        assert_eq!(a["uplink"]["reconnect_max_ms"].as_integer(), Some(2000));
        assert_eq!(a["uplink"]["ack_timeout_ms"].as_integer(), Some(3000));
    }
}
