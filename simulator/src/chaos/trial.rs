//! One chaos trial: the demo's journey with a seeded mix of faults, then a
//! bounded wait for quiescence and the verdict.
//!
//! # Wiring
//!
//! ```text
//!  producer ─HTTP─▶ agents ─MQTT─▶ [proxy A] ─▶ broker ◀─MQTT─ collector ─HTTP─▶ [proxy E] ─▶ mock ERP
//! ```
//!
//! The system under test is the [`stack`](crate::stack)'s: the broker, the
//! collector and the agents are child processes of this program
//! (`current_exe() broker|collector|agent`), each restartable with the same
//! config and data directory; the mock ERP and both chaos proxies run in
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
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::plan::{self, Fault, Link, LinkFault, Planned};
use super::proxy::ChaosProxy;
use super::{ChaosError, ChaosOptions, FaultRecord, TrialReport};
use crate::demo::{self, AgentPlan, PodMedia, Production, Route, Routes, get_json};
use crate::media::tally::{MadeMedium, MediaTally, tally as media_tally};
use crate::mock_erp::{ErpConfig, ErpFaults};
use crate::scenario::Scenario;
use crate::stack::{self, AgentConfig, Programs, Services, Stack, StackSpec};
use crate::verdict::{Generated, Tally, tally};

/// How often the fault player and the drain look at the clock.
const TICK: Duration = Duration::from_millis(50);
/// Grace given to agents and the collector to stop on SIGTERM at the end.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// The agent settings the chaos trials add to the demo's: reconnect quickly,
/// so a trial's recovery is measured in seconds, not in the 30 s default cap.
fn chaos_agent(config: &mut AgentConfig, broker: SocketAddr) {
    stack::config::simulated_agent(config);
    config.mqtt.host = broker.ip().to_string();
    config.mqtt.port = broker.port();
    config.uplink.reconnect_min_ms = 100;
    config.uplink.reconnect_max_ms = 2000;
}

/// Aborts a task when dropped, so an early error stops the producer.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Everything one trial started; dropping it stops all of it.
struct Trial {
    stack: Stack,
    plan: Vec<AgentPlan>,
    agents_link: ChaosProxy,
    erp_link: ChaosProxy,
    routes: Routes,
    /// The agents' media counters (sent, re-sent bytes) as last read, by
    /// device, and those of agents since killed (their counters restart).
    media_seen: BTreeMap<String, (u64, u64)>,
    media_banked: (u64, u64),
}

impl Trial {
    async fn start(opts: &ChaosOptions, seed: u64, dir: &Path) -> Result<Self, ChaosError> {
        let services = Services::start(StackSpec {
            programs: Programs::simulator(&opts.exe),
            dir: dir.into(),
            site: demo::SITE.into(),
            broker: None,
            erp: ErpConfig {
                seed,
                ..ErpConfig::new(stack::webhook_secret(seed))
            },
        })
        .await?;
        let broker = services.broker.addr().socket_addr().ok_or_else(|| {
            ChaosError::Options(format!(
                "broker {} is not an IP address",
                services.broker.addr()
            ))
        })?;
        let agents_link = ChaosProxy::start(broker)
            .await
            .map_err(|source| ChaosError::Proxy { source })?;
        let erp_link = ChaosProxy::start(services.erp_addr)
            .await
            .map_err(|source| ChaosError::Proxy { source })?;

        let plan = demo::http_agents(opts.agents);
        let ids: Vec<String> = plan.iter().map(|a| a.device.clone()).collect();
        let mut config = services.collector_config(&ids)?;
        stack::config::simulated_collector(&mut config);
        stack::config::simulated_collector_media(&mut config, &dir.join("keys"))?;
        config.erp.url = format!("http://{}/events", erp_link.addr());
        let mut stack = services.start_collector(config).await?;

        let mut routes = Vec::new();
        for a in &plan {
            let mut config = stack.agent_config(&a.device)?;
            chaos_agent(&mut config, agents_link.addr());
            let api = stack.start_agent(config).await?.api();
            routes.extend(a.roles.iter().map(|r| Route {
                role: *r,
                device: a.device.clone(),
                api,
            }));
        }
        Ok(Self {
            stack,
            plan,
            agents_link,
            erp_link,
            routes: Arc::new(Mutex::new(routes)),
            media_seen: BTreeMap::new(),
            media_banked: (0, 0),
        })
    }

    fn proxy(&self, link: Link) -> &ChaosProxy {
        match link {
            Link::AgentsBroker => &self.agents_link,
            Link::CollectorErp => &self.erp_link,
        }
    }

    /// Applies the start of a fault.
    fn begin(&mut self, fault: &Fault) -> Result<(), ChaosError> {
        let erp = &self.stack.services.erp;
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
                if let Some(a) = self.stack.agents.get_mut(agent) {
                    a.kill();
                }
            }
            Fault::KillCollector => self.stack.collector.kill(),
            Fault::BrokerOutage => self.stack.services.broker.kill(),
            Fault::ErpErrors { rate } => erp.set_faults(ErpFaults {
                fail_rate: rate,
                ..ErpFaults::default()
            })?,
            Fault::ErpThrottle { rate } => erp.set_faults(ErpFaults {
                throttle_rate: rate,
                ..ErpFaults::default()
            })?,
            Fault::ErpSlow { ms } => erp.set_faults(ErpFaults {
                delay_ms: ms,
                ..ErpFaults::default()
            })?,
            Fault::ErpLoseAfterCommit { rate } => erp.set_faults(ErpFaults {
                lose_after_commit_rate: rate,
                ..ErpFaults::default()
            })?,
            Fault::ErpSessionExpiry { every, ms } => erp.set_faults(ErpFaults {
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
                self.stack.collector.restart().await?;
            }
            Fault::BrokerOutage => self.stack.services.broker.restart().await?,
            Fault::ErpErrors { .. }
            | Fault::ErpThrottle { .. }
            | Fault::ErpSlow { .. }
            | Fault::ErpLoseAfterCommit { .. }
            | Fault::ErpSessionExpiry { .. } => {
                self.stack.services.erp.set_faults(ErpFaults::default())?;
            }
        }
        Ok(())
    }

    /// Reads every agent's media counters (`/v1/status` `media.sent_bytes`,
    /// `resent_bytes`).
    async fn read_media_counters(&mut self, client: &reqwest::Client) {
        for a in &self.stack.agents {
            if let Some(s) = get_json(client, format!("{}/v1/status", a.url())).await {
                let n = |k: &str| s["media"][k].as_u64().unwrap_or(0);
                self.media_seen
                    .insert(a.name().to_string(), (n("sent_bytes"), n("resent_bytes")));
            }
        }
    }

    /// Media bytes sent and re-sent by all agents over the trial (an agent's
    /// counts up to its last reading before each kill included).
    fn media_counters(&self) -> (u64, u64) {
        self.media_seen
            .values()
            .fold(self.media_banked, |(s, r), (a, b)| (s + a, r + b))
    }

    async fn restart_agent(&mut self, index: usize) -> Result<(), ChaosError> {
        let Some(a) = self.stack.agents.get_mut(index) else {
            return Ok(());
        };
        // Its counters start again at 0: keep what it had reported.
        if let Some((sent, resent)) = self.media_seen.remove(a.name()) {
            self.media_banked.0 += sent;
            self.media_banked.1 += resent;
        }
        let api = a.restart().await?;
        let mut routes = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        for r in routes.iter_mut().filter(|r| r.device == a.name()) {
            r.api = api;
        }
        Ok(())
    }
}

/// What the drain reads from the running system.
#[derive(Debug, Default)]
struct Quiet {
    tally: Tally,
    media: MediaTally,
    collector: Option<Value>,
    agents_queued: Option<u64>,
}

impl Quiet {
    fn reached(&self) -> bool {
        let pending = self.collector.as_ref().and_then(|c| c["pending"].as_u64());
        self.tally.lost == 0
            && self.media.lost == 0
            && pending == Some(0)
            && self.agents_queued == Some(0)
    }
}

async fn look(
    client: &reqwest::Client,
    stack: &Stack,
    generated: &[Generated],
    media: &[MadeMedium],
) -> Quiet {
    let collector = get_json(client, format!("{}/v1/stats", stack.collector.url())).await;
    let mut queued = Some(0u64);
    for a in &stack.agents {
        let s = get_json(client, format!("{}/v1/status", a.url())).await;
        queued = match (queued, s.as_ref().and_then(|s| s["queued"].as_u64())) {
            (Some(total), Some(n)) => Some(total + n),
            _ => None,
        };
    }
    Quiet {
        tally: tally(generated, &stack.services.erp.effects()),
        media: media_tally(
            media,
            &std::collections::BTreeSet::new(),
            &stack.services.erp.media(),
        ),
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
        let api = stack.agent(&g.device).map(|a| a.api());
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
            .map(|a| a.name().to_string())
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

/// Media the agents hold that the collector has not stored yet (on their
/// way, or waiting for their event's ack).
async fn media_on_the_way(client: &reqwest::Client, stack: &Stack) -> u64 {
    let mut n = 0;
    for a in &stack.agents {
        if let Some(s) = get_json(client, format!("{}/v1/status", a.url())).await {
            n += s["media"]["queued"].as_u64().unwrap_or(0);
        }
    }
    n
}

/// Faults that break an upload in progress: the agents' link to the broker
/// cut or stalled, an agent or the collector killed, the broker down.
fn cuts_uploads(kind: &str) -> bool {
    kind.starts_with("agents_broker") || kind.starts_with("kill_") || kind == "broker_outage"
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
    let mut trial = Trial::start(opts, seed, dir).await?;
    let planned = plan::plan(seed, opts.duration, trial.stack.agents.len());
    let faults: Vec<FaultRecord> = planned.iter().map(|p| record(p, &trial.stack)).collect();

    let production = Arc::new(Production::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut producer = AbortOnDrop(tokio::spawn(demo::produce(
        client.clone(),
        trial.routes.clone(),
        Scenario::new(seed, demo::pickers(&trial.plan)),
        opts.orders_per_sec,
        PodMedia {
            every: opts.media_every,
            seed,
        },
        production.clone(),
        stop_rx,
    )));

    // Play the plan: start each fault at its time, end it after its hold.
    let t0 = Instant::now();
    let mut next = 0usize;
    let mut active: Vec<Planned> = Vec::new();
    let mut applied = 0u64;
    let mut next_reading = Duration::ZERO;
    let mut cuts_mid_upload = 0u64;
    while t0.elapsed() < opts.duration || !active.is_empty() || next < planned.len() {
        let now = t0.elapsed();
        if opts.media_every > 0 && now >= next_reading {
            next_reading = now + Duration::from_secs(1);
            trial.read_media_counters(&client).await;
        }
        while let Some(p) = planned.get(next).filter(|p| p.at <= now) {
            if opts.media_every > 0
                && cuts_uploads(&p.fault.kind())
                && media_on_the_way(&client, &trial.stack).await > 0
            {
                cuts_mid_upload += 1;
            }
            trial.begin(&p.fault)?;
            applied += 1;
            active.push(*p);
            next += 1;
        }
        let mut i = 0;
        while i < active.len() {
            if active[i].end() <= t0.elapsed() {
                let p = active.swap_remove(i);
                trial.end(&p.fault).await?;
            } else {
                i += 1;
            }
        }
        tokio::time::sleep(TICK).await;
    }
    let _ = stop_tx.send(true);
    let _ = (&mut producer.0).await;
    let generated = production.generated();
    let made_media = production.media();

    // Quiescence, bounded.
    let drain_start = Instant::now();
    let mut quiet = look(&client, &trial.stack, &generated, &made_media).await;
    while !quiet.reached() && drain_start.elapsed() < opts.drain_timeout {
        tokio::time::sleep(Duration::from_millis(200)).await;
        quiet = look(&client, &trial.stack, &generated, &made_media).await;
    }
    let drain_secs = drain_start.elapsed().as_secs_f64();
    // A late redelivery would show up as a duplicate: give it a moment.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let last = look(&client, &trial.stack, &generated, &made_media).await;
    let quiescent = quiet.reached();
    trial.read_media_counters(&client).await;
    let (media_sent_bytes, media_resent_bytes) = trial.media_counters();
    let stored = demo::stored_media(&client, &trial.stack).await;
    let media = media_tally(&made_media, &stored, &trial.stack.services.erp.media());
    let stack = &trial.stack;
    let effects = stack.services.erp.effects();
    let t = tally(&generated, &effects);
    let lost_where = if t.lost > 0 {
        where_lost(&client, stack, &generated, &effects).await
    } else {
        BTreeMap::new()
    };
    let erp = stack.services.erp.stats();
    let collector = last.collector.unwrap_or(Value::Null);
    let proxy_cuts = trial.agents_link.cut_connections() + trial.erp_link.cut_connections();
    let proxy_accepted = trial.agents_link.accepted() + trial.erp_link.accepted();
    trial.stack.shutdown(STOP_GRACE).await;

    let events_generated = generated.len() as u64;
    let media_cuts = faults
        .iter()
        .take(applied as usize)
        .filter(|f| cuts_uploads(&f.kind))
        .count() as u64;
    let passed = events_generated > 0
        && t.lost == 0
        && t.duplicated == 0
        && media.clean()
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
        media_cuts,
        media_cuts_mid_upload: cuts_mid_upload,
        media,
        media_sent_bytes,
        media_resent_bytes,
        erp_media_replays: erp.media_replays,
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
    fn chaos_agents_reconnect_quickly_through_the_proxy() {
        let mqtt = stack::MqttAddr::from(SocketAddr::from(([127, 0, 0, 1], 1883)));
        let mut c = stack::config::agent("s", "hh-01", Path::new("/tmp/a"), &mqtt).expect("agent");
        chaos_agent(&mut c, "127.0.0.1:4000".parse().expect("addr"));
        assert_eq!(c.mqtt.port, 4000);
        assert_eq!(c.uplink.reconnect_max_ms, 2000);
        assert_eq!(c.uplink.ack_timeout_ms, 3000);
        c.check().expect("valid");
    }
}
