//! `dockline-sim demo`: the whole journey on one machine, no hardware and no
//! installed services, with a broker outage in the middle and a closing report.
//!
//! # What runs where
//!
//! The system under test is the [`stack`](crate::stack)'s:
//!
//! - The broker, the collector and every agent are child processes of this
//!   one (`current_exe() broker|collector|agent …`), so killing the broker is a
//!   real crash and nothing shares a runtime with the thing it checks. Their
//!   configs, data and logs go to a temp dir, kept (and named) when the demo
//!   fails.
//! - The mock ERP runs in this process, so the report reads its books directly.
//!
//! # The verdict
//!
//! Every event the agents answered 201 is remembered by its event id. At the
//! end, production stops and the demo waits (bounded) until each of those ids
//! is booked at the ERP. `lost` counts ids with no effect; `duplicated` counts
//! effects beyond the first for the same event id, read from the effects list
//! itself (not from a counter the ERP could get wrong). The demo passes only if
//! both are 0 and something was generated.
//!
//! The route's drivers also post a signature and a photo with every proof of
//! delivery; the demo waits for those too, and passes only if every medium
//! made was attached at the ERP exactly once, its bytes checked there against
//! its hash ([`crate::media::tally`]).
//!
//! The report also times each source's events from the moment they were
//! made to their booking ([`Report::latency`]; see [`crate::latency`]).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dockline_agent::config::DeviceConfig;
use dockline_agent::stations::config::StationConfig;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::watch;

use crate::devices::PortError;
pub use crate::latency::Latency;
use crate::media::Medium;
use crate::media::tally::{MadeMedium, MediaTally, tally as media_tally};
use crate::mock_erp::ErpConfig;
use crate::scenario::player::{self, PlayStats, Ports, Target};
use crate::scenario::{Role, Scenario, ScenarioError, ScenarioFile, Timeline};
use crate::stack::{self, Programs, Services, Stack, StackError, StackSpec};
pub use crate::verdict::{Generated, KindCount, Tally, tally, tally_with};
use dockline_protocol::media::MediaHash;

/// The site of every simulated device.
pub(crate) const SITE: &str = "dc-north";
/// The report's label for events posted by the HTTP order scenario.
pub const ORDERS_SOURCE: &str = "orders (HTTP)";

/// What the demo runs.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// How long events are produced.
    pub duration: Duration,
    /// Number of agents (handhelds); the last one is the driver's.
    pub agents: usize,
    /// Seed of the scenario and of the ERP's faults.
    pub seed: u64,
    /// New orders started per second (each is about nine events).
    pub orders_per_sec: f64,
    /// How long the broker stays down; `None` picks min(5 s, duration / 3).
    pub outage: Option<Duration>,
    /// How long to wait after production for every event to be booked.
    pub drain_timeout: Duration,
    /// Share of ERP requests answered 503.
    pub erp_fail_rate: f64,
    /// Share of ERP requests answered 429.
    pub erp_throttle_rate: f64,
    /// Share of new ERP bookings whose response is lost.
    pub erp_lose_after_commit_rate: f64,
    /// The ERP's session expires after this many new bookings (0: never).
    pub erp_session_expiry_every: u64,
    /// How long an expired session refuses requests, in milliseconds.
    pub erp_session_expiry_ms: u64,
    /// The `dockline-sim` executable that runs the children.
    pub exe: PathBuf,
    /// Device scenarios played on virtual devices next to the HTTP orders
    /// (each on its own agent).
    pub scenarios: Vec<ScenarioFile>,
    /// The drivers post a signature and a photo with each proof of
    /// delivery ([`crate::media`]).
    pub media: bool,
}

/// The demo could not run (as opposed to running and finding losses).
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The system under test could not be started.
    #[error(transparent)]
    Stack(#[from] StackError),
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    Http(#[from] reqwest::Error),
    /// A setting cannot work.
    #[error("{0}")]
    Options(String),
    /// A scenario cannot be played.
    #[error(transparent)]
    Scenario(#[from] ScenarioError),
    /// A virtual device could not be created.
    #[error(transparent)]
    Port(#[from] PortError),
}

/// The closing report, also written as JSON with `--report`.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// True when nothing was lost or duplicated and something was generated.
    pub passed: bool,
    /// Events the agents accepted (201).
    pub events_generated: u64,
    /// Generated events with an effect at the ERP.
    pub events_booked_at_erp: u64,
    /// Generated events without an effect.
    pub lost: u64,
    /// Effects beyond the first for the same event.
    pub duplicated: u64,
    /// Effects that match no generated event.
    pub unexpected_effects: u64,
    /// Effects booked in total.
    pub erp_effects: u64,
    /// Requests the ERP answered as replays of a booked key.
    pub erp_replays: u64,
    /// Faults the ERP injected (503, 429, 401 of an expired session, lost
    /// responses).
    pub erp_faults_injected: u64,
    /// Times the ERP's session expired.
    pub erp_session_expiries: u64,
    /// Requests the ERP answered 401 `session_expired` meanwhile.
    pub erp_session_refusals: u64,
    /// Requests the ERP refused for their signature.
    pub erp_bad_signatures: u64,
    /// Requests the ERP refused as malformed.
    pub erp_rejected_requests: u64,
    /// Posts to agents that did not get a 201.
    pub post_errors: u64,
    /// Times the broker was killed and restarted.
    pub broker_outages: u64,
    /// Seconds the broker was down in total.
    pub broker_down_secs: f64,
    /// Seconds events were produced.
    pub produce_secs: f64,
    /// Seconds from the end of production until all events were booked (or the wait ended).
    pub drain_secs: f64,
    /// Wall time of the whole demo, start-up and shutdown included.
    pub duration_secs: f64,
    /// Agents run.
    pub agents: usize,
    /// The seed.
    pub seed: u64,
    /// Counts per event kind.
    pub by_kind: BTreeMap<String, KindCount>,
    /// Counts per source (the HTTP orders, each device scenario), per kind.
    pub by_source: BTreeMap<String, BTreeMap<String, KindCount>>,
    /// Per source: milliseconds from the moment each event was made (its
    /// POST, or the write of the device bytes that trigger it) to its
    /// booking at the ERP, as percentiles.
    pub latency: BTreeMap<String, Latency>,
    /// Business events the virtual devices' bytes had to produce.
    pub expected_from_devices: u64,
    /// Virtual devices played.
    pub virtual_devices: usize,
    /// Device bytes written to the virtual devices.
    pub device_bytes: u64,
    /// Pick lists and PODs the scenarios posted that were not accepted.
    pub scenario_post_failures: u64,
    /// One line per device scenario: what it played.
    pub scenarios: Vec<String>,
    /// Signatures and photos: made, stored at the collector (as their
    /// agents know from its acks), attached at the ERP, lost, duplicated.
    pub media: MediaTally,
    /// Media the ERP fetched by their signed link (the others came inline).
    pub erp_media_by_link: u64,
    /// Media requests the ERP answered as replays of an attachment.
    pub erp_media_replays: u64,
    /// Media the ERP could not fetch by their link (answered 502).
    pub erp_media_fetch_failures: u64,
    /// Media whose bytes did not match their hash at the ERP.
    pub erp_media_bad_hash: u64,
    /// Where the logs are (kept when the demo fails).
    pub work_dir: String,
}

/// An agent of the demo: its device id, the roles it plays, and how many
/// virtual devices it reads.
#[derive(Debug, Clone)]
pub(crate) struct AgentPlan {
    pub device: String,
    pub roles: Vec<Role>,
    pub devices: usize,
    /// Its `[[devices]]` and `[[stations]]` (a device scenario's agent).
    pub serial: Option<(Vec<DeviceConfig>, Vec<StationConfig>)>,
}

/// Device ids and roles: pickers `hh-01`…, the last agent is the driver's
/// `van-01` (with one agent, it does both).
pub(crate) fn devices(agents: usize) -> Vec<(String, Vec<Role>)> {
    if agents <= 1 {
        return vec![("hh-01".into(), vec![Role::Picker(0), Role::Driver])];
    }
    let mut out: Vec<(String, Vec<Role>)> = (0..agents - 1)
        .map(|i| (format!("hh-{:02}", i + 1), vec![Role::Picker(i)]))
        .collect();
    out.push(("van-01".into(), vec![Role::Driver]));
    out
}

/// The agents of the HTTP orders ([`devices`]): no virtual devices.
pub(crate) fn http_agents(agents: usize) -> Vec<AgentPlan> {
    devices(agents)
        .into_iter()
        .map(|(device, roles)| AgentPlan {
            device,
            roles,
            devices: 0,
            serial: None,
        })
        .collect()
}

/// The number of pickers among `plan`.
pub(crate) fn pickers(plan: &[AgentPlan]) -> usize {
    plan.iter()
        .flat_map(|a| &a.roles)
        .filter(|r| matches!(r, Role::Picker(_)))
        .count()
}

/// The demo's system under test: broker, mock ERP (with `erp`'s faults),
/// collector and the agents of `plan`, tuned by [`stack::config::simulated_agent`]
/// and [`stack::config::simulated_collector`].
async fn start_stack(
    opts: &DemoOptions,
    dir: &Path,
    plan: &[AgentPlan],
    erp: ErpConfig,
) -> Result<Stack, DemoError> {
    let services = Services::start(StackSpec {
        programs: Programs::simulator(&opts.exe),
        dir: dir.into(),
        site: SITE.into(),
        broker: None,
        erp,
    })
    .await?;
    println!("broker     {}", services.broker.addr());
    let session = if opts.erp_session_expiry_every > 0 {
        format!(
            ", session expires every {} bookings for {:.1} s",
            opts.erp_session_expiry_every,
            opts.erp_session_expiry_ms as f64 / 1000.0
        )
    } else {
        String::new()
    };
    println!(
        "mock ERP   http://{}/events (fail {:.0}%, throttle {:.0}%, lose-after-commit {:.0}%{session})",
        services.erp_addr,
        opts.erp_fail_rate * 100.0,
        opts.erp_throttle_rate * 100.0,
        opts.erp_lose_after_commit_rate * 100.0
    );
    let ids: Vec<String> = plan.iter().map(|a| a.device.clone()).collect();
    let mut config = services.collector_config(&ids)?;
    stack::config::simulated_collector(&mut config);
    stack::config::simulated_collector_media(&mut config, &dir.join("keys"))?;
    let mut stack = services.start_collector(config).await?;
    let api = stack.collector.api();
    println!(
        "collector  http://{api}/v1/stats (child pid {})",
        stack.collector.pid().unwrap_or(0)
    );
    println!(
        "dashboard  http://{api}/ui/ (devices, orders, stuck work, exceptions, dead letters; open access on loopback)"
    );
    for a in plan {
        let mut config = stack.agent_config(&a.device)?;
        stack::config::simulated_agent(&mut config);
        if let Some((devices, stations)) = &a.serial {
            config.devices = devices.clone();
            config.stations = stations.clone();
        }
        let node = stack.start_agent(config).await?;
        println!(
            "agent      {:<7} {}/v1/status (child pid {})",
            a.device,
            node.url(),
            node.pid().unwrap_or(0)
        );
    }
    Ok(stack)
}

/// What the producer and the progress lines share.
#[derive(Debug, Default)]
pub(crate) struct Production {
    /// Events accepted so far.
    pub made: AtomicU64,
    /// Posts that failed in a way that leaves open whether the agent stored
    /// the event (an effect for it then counts as unexpected, not as a bug).
    pub post_errors: AtomicU64,
    /// Posts no agent could take (it was down): certainly not stored.
    pub posts_refused: AtomicU64,
    generated: Mutex<Vec<Generated>>,
    media: Mutex<Vec<MadeMedium>>,
}

impl Production {
    /// Records an event an agent accepted.
    pub(crate) fn record(&self, event: Generated) {
        self.generated
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(event);
        self.made.fetch_add(1, Ordering::Relaxed);
    }

    /// Records the media of an event `device` accepted.
    pub(crate) fn record_media(&self, device: &str, media: &[Medium]) {
        self.media
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(media.iter().map(|m| MadeMedium {
                hash: m.hash,
                role: m.role,
                bytes: m.bytes.len() as u64,
                device: device.to_string(),
            }));
    }

    /// The media made so far.
    pub(crate) fn media(&self) -> Vec<MadeMedium> {
        self.media.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(crate) fn generated(&self) -> Vec<Generated> {
        self.generated
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// Where the producer posts a role's events: the agent's device id and API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Route {
    pub role: Role,
    pub device: String,
    pub api: SocketAddr,
}

/// The producer's routes; the chaos trials change an agent's address when
/// they restart it.
pub(crate) type Routes = Arc<Mutex<Vec<Route>>>;

/// Which of the HTTP orders' proofs of delivery carry a signature and a
/// photo ([`crate::media::proof_of_delivery`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct PodMedia {
    /// Every how many `delivered` events (0: none; 1: all).
    pub every: u64,
    /// Seed of the images.
    pub seed: u64,
}

/// Posts the scenario's orders to the agents until told to stop, finishing
/// the order in hand first; the `delivered` events `pod_media` picks go
/// with their signature and photo.
pub(crate) async fn produce(
    client: reqwest::Client,
    routes: Routes,
    mut scenario: Scenario,
    orders_per_sec: f64,
    pod_media: PodMedia,
    out: Arc<Production>,
    mut stop: watch::Receiver<bool>,
) {
    let mut pods = 0u64;
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / orders_per_sec));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        for step in scenario.next_order() {
            let route = routes
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .find(|r| r.role == step.role)
                .cloned();
            let Some(Route { device, api, .. }) = route else {
                out.posts_refused.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            let mut media = Vec::new();
            if step.kind == "delivered" && pod_media.every > 0 {
                if pods.is_multiple_of(pod_media.every) {
                    media = crate::media::proof_of_delivery(pod_media.seed, pods);
                }
                pods += 1;
            }
            let posted = if media.is_empty() {
                post_event(&client, &device, api, &step.body).await
            } else {
                crate::scenario::player::post_event_with_media(
                    &client, &device, api, &step.body, &media,
                )
                .await
            };
            match posted {
                Ok(accepted) => {
                    out.record_media(&accepted.device, &media);
                    out.record(accepted.into_generated(step.kind, ORDERS_SOURCE));
                }
                Err(PostError::Refused(message)) => {
                    tracing::debug!(%api, kind = step.kind, %message, "agent down; event not made");
                    out.posts_refused.fetch_add(1, Ordering::Relaxed);
                }
                Err(PostError::Failed(message)) => {
                    tracing::warn!(%api, kind = step.kind, %message, "agent did not accept an event");
                    out.post_errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

/// An agent's 201 answer to `POST /v1/events`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Accepted {
    /// The device that answered (its `/v1/status` `device`).
    pub device: String,
    /// The event id.
    pub event_id: String,
    /// The device's epoch.
    pub epoch: u64,
    /// The device's sequence number.
    pub seq: u64,
    /// When the POST was sent, Unix milliseconds.
    pub made_ms: u64,
}

impl Accepted {
    pub(crate) fn into_generated(self, kind: &str, source: &str) -> Generated {
        Generated {
            source: source.to_string(),
            event_id: self.event_id,
            kind: kind.to_string(),
            device: self.device,
            epoch: self.epoch,
            seq: self.seq,
            made_ms: self.made_ms,
        }
    }
}

/// Why a post did not give a 201.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PostError {
    /// No connection could be made: the agent certainly stored nothing.
    Refused(String),
    /// Anything else: the agent may or may not have stored the event.
    Failed(String),
}

impl std::fmt::Display for PostError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Refused(m) | Self::Failed(m) => f.write_str(m),
        }
    }
}

/// Posts one event to the agent of `device`; returns its 201 answer.
pub(crate) async fn post_event(
    client: &reqwest::Client,
    device: &str,
    api: SocketAddr,
    body: &Value,
) -> Result<Accepted, PostError> {
    post_event_keyed(client, device, api, body, None).await
}

/// [`post_event`] with an `Idempotency-Key`: every retry of one event with
/// the same key is answered with the first event (200) and stored once.
pub(crate) async fn post_event_keyed(
    client: &reqwest::Client,
    device: &str,
    api: SocketAddr,
    body: &Value,
    key: Option<&str>,
) -> Result<Accepted, PostError> {
    let made_ms = crate::latency::unix_ms();
    let mut request = client.post(format!("http://{api}/v1/events")).json(body);
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    let resp = request.send().await.map_err(|e| {
        if e.is_connect() {
            PostError::Refused(e.to_string())
        } else {
            PostError::Failed(e.to_string())
        }
    })?;
    let status = resp.status();
    let answer: Value = resp
        .json()
        .await
        .map_err(|e| PostError::Failed(e.to_string()))?;
    // 200: a retry under the same Idempotency-Key, answered with the event
    // the first attempt stored.
    let replayed = status == reqwest::StatusCode::OK && key.is_some();
    if status != reqwest::StatusCode::CREATED && !replayed {
        return Err(PostError::Failed(format!("{status}: {answer}")));
    }
    let field = |name: &str| answer[name].as_u64();
    match (answer["event_id"].as_str(), field("epoch"), field("seq")) {
        (Some(id), Some(epoch), Some(seq)) => Ok(Accepted {
            device: device.to_string(),
            event_id: id.to_string(),
            epoch,
            seq,
            made_ms,
        }),
        _ => Err(PostError::Failed(format!(
            "201 without event_id, epoch and seq: {answer}"
        ))),
    }
}

pub(crate) async fn get_json(client: &reqwest::Client, url: String) -> Option<Value> {
    let resp = client.get(url).send().await.ok()?;
    resp.json().await.ok()
}

fn num(v: &Option<Value>, field: &str) -> String {
    v.as_ref()
        .and_then(|v| v.get(field))
        .and_then(Value::as_u64)
        .map_or_else(|| "-".to_string(), |n| n.to_string())
}

/// One progress line: made, queued on devices, pending at the collector,
/// booked at the ERP, agents online, broker state.
async fn progress_line(
    client: &reqwest::Client,
    stack: &Stack,
    plan: &[AgentPlan],
    made: u64,
    elapsed: Duration,
    phase: &str,
) -> String {
    let mut queued = 0u64;
    let mut online = 0usize;
    let mut answered = 0usize;
    let mut devices_online = 0usize;
    let mut station_events = 0u64;
    for a in &stack.agents {
        if let Some(s) = get_json(client, format!("{}/v1/status", a.url())).await {
            answered += 1;
            queued += s.get("queued").and_then(Value::as_u64).unwrap_or(0);
            if s.get("mqtt_connected").and_then(Value::as_bool) == Some(true) {
                online += 1;
            }
            let list = |key: &str| {
                s.get(key)
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default()
            };
            devices_online += list("devices")
                .iter()
                .filter(|d| d["connected"] == Value::Bool(true))
                .count();
            station_events += list("stations")
                .iter()
                .filter_map(|st| st["events"].as_u64())
                .sum::<u64>();
        }
    }
    let devices_total: usize = plan.iter().map(|a| a.devices).sum();
    let c = get_json(client, format!("{}/v1/stats", stack.collector.url())).await;
    let erp = stack.services.erp.stats();
    let queued = if answered == stack.agents.len() {
        queued.to_string()
    } else {
        format!("{queued}+?")
    };
    format!(
        "[{:>5.1}s] {phase:<9} made {made:>5} + {station_events:>4} by stations | outboxes {queued:>5} queued | collector {:>5} pending, {:>6} booked | ERP {:>6} effects, {} replays, {} faults, {} media | agents {online}/{} | devices {devices_online}/{devices_total} | broker {}",
        elapsed.as_secs_f64(),
        num(&c, "pending"),
        num(&c, "booked"),
        erp.effects,
        erp.replays,
        erp.faults_injected,
        erp.media_attached,
        stack.agents.len(),
        if stack.services.broker.is_up() {
            "up"
        } else {
            "DOWN"
        },
    )
}

/// Runs the demo in a fresh work directory under the system temp dir.
pub async fn run(opts: DemoOptions) -> Result<Report, DemoError> {
    if !(opts.orders_per_sec > 0.0 && opts.orders_per_sec.is_finite()) {
        return Err(DemoError::Options(format!(
            "orders per second is {}; give a positive number",
            opts.orders_per_sec
        )));
    }
    if opts.agents == 0 || opts.agents > 99 {
        return Err(DemoError::Options(format!(
            "{} agents; give 1 to 99",
            opts.agents
        )));
    }
    let started = Instant::now();
    // Kept on failure so the children's logs can be read; removed on success.
    let dir = stack::kept_work_dir("dockline-demo-")?;
    println!("work dir   {} (configs, databases, logs)", dir.display());
    let result = run_in(&opts, &dir, started).await;
    if let Ok(report) = &result
        && report.passed
    {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

async fn run_in(opts: &DemoOptions, dir: &Path, started: Instant) -> Result<Report, DemoError> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    // Device scenarios: their timelines fit the production time, their
    // virtual devices exist before their agents start.
    let budget_ms = opts.duration.as_millis().saturating_sub(2_000) as u64;
    let mut timelines: Vec<Arc<Timeline>> = Vec::new();
    let mut ports: Vec<Ports> = Vec::new();
    let mut plan = http_agents(opts.agents);
    for file in &opts.scenarios {
        let timeline = file.timeline(budget_ms, Some(opts.seed))?;
        if plan.iter().any(|a| a.device == timeline.agent) {
            return Err(DemoError::Options(format!(
                "scenario {} uses agent {}, which another scenario or the HTTP orders use; give it its own",
                timeline.source, timeline.agent
            )));
        }
        let open = Ports::open(&timeline, &dir.join("dev").join(&timeline.agent))?;
        println!(
            "scenario   {:<16} on {}: {}",
            timeline.source, timeline.agent, timeline.description
        );
        plan.push(AgentPlan {
            device: timeline.agent.clone(),
            roles: Vec::new(),
            devices: timeline.devices.len(),
            serial: Some(timeline.agent_serial(open.dir())?),
        });
        ports.push(open);
        timelines.push(Arc::new(timeline));
    }
    let erp = ErpConfig {
        secret: stack::webhook_secret(opts.seed),
        fail_rate: opts.erp_fail_rate,
        throttle_rate: opts.erp_throttle_rate,
        lose_after_commit_rate: opts.erp_lose_after_commit_rate,
        delay_ms: 0,
        session_expiry_every: opts.erp_session_expiry_every,
        session_expiry_ms: opts.erp_session_expiry_ms,
        seed: opts.seed,
    };
    let mut stack = start_stack(opts, dir, &plan, erp).await?;
    let production = Arc::new(Production::default());
    let play_stats = Arc::new(PlayStats::default());
    let mut targets = Vec::new();
    for t in &timelines {
        let Some(agent) = stack.agent(&t.agent) else {
            continue;
        };
        let target = Target {
            device: t.agent.clone(),
            api: agent.api(),
        };
        if !player::wait_connected(&client, &target, t, Duration::from_secs(15)).await {
            println!(
                "warning    {} has not opened every virtual device of {} after 15 s; playing anyway",
                t.agent, t.source
            );
        }
        targets.push(target);
    }

    let outage = opts
        .outage
        .unwrap_or_else(|| Duration::from_secs(5).min(opts.duration / 3));
    let outage_at = (opts.duration / 2).saturating_sub(outage / 2);
    let (stop_tx, stop_rx) = watch::channel(false);
    let play_start = tokio::time::Instant::now();
    let players: Vec<_> = timelines
        .iter()
        .zip(targets)
        .zip(ports)
        .map(|((t, target), open)| {
            let play = player::Play {
                client: client.clone(),
                timeline: t.clone(),
                target,
                production: production.clone(),
                stats: play_stats.clone(),
                media: opts.media,
            };
            tokio::spawn(player::play(play, open, play_start, stop_rx.clone()))
        })
        .collect();
    let routes: Vec<Route> = plan
        .iter()
        .zip(&stack.agents)
        .flat_map(|(a, node)| {
            a.roles.iter().map(move |r| Route {
                role: *r,
                device: a.device.clone(),
                api: node.api(),
            })
        })
        .collect();
    let routes = Arc::new(Mutex::new(routes));
    let producer = tokio::spawn(produce(
        client.clone(),
        routes,
        Scenario::new(opts.seed, pickers(&plan)),
        opts.orders_per_sec,
        // The route's drivers take the demo's photos; the HTTP orders'
        // hundreds of PODs would only lengthen its drain.
        PodMedia::default(),
        production.clone(),
        stop_rx,
    ));
    println!(
        "producing for {} s; the broker goes down at {} s for {} s",
        opts.duration.as_secs_f64(),
        outage_at.as_secs_f64(),
        outage.as_secs_f64()
    );

    let t0 = Instant::now();
    let mut outages = 0u64;
    let mut down_since: Option<Instant> = None;
    let mut down_total = Duration::ZERO;
    let mut next_line = Duration::from_secs(1);
    while t0.elapsed() < opts.duration {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = t0.elapsed();
        if outage > Duration::ZERO && outages == 0 && now >= outage_at {
            stack.services.broker.kill();
            outages += 1;
            down_since = Some(Instant::now());
            println!(
                "[{:>5.1}s] broker KILLED (SIGKILL); agents keep accepting events",
                now.as_secs_f64()
            );
        }
        if let Some(since) = down_since
            && since.elapsed() >= outage
        {
            stack.services.broker.restart().await?;
            down_total += since.elapsed();
            down_since = None;
            println!(
                "[{:>5.1}s] broker restarted on {}",
                t0.elapsed().as_secs_f64(),
                stack.services.broker.addr()
            );
        }
        if now >= next_line {
            next_line += Duration::from_secs(1);
            let made = production.made.load(Ordering::Relaxed);
            println!(
                "{}",
                progress_line(&client, &stack, &plan, made, now, "producing").await
            );
        }
    }
    if let Some(since) = down_since.take() {
        // The duration ended during the outage: bring the broker back to drain.
        stack.services.broker.restart().await?;
        down_total += since.elapsed();
    }
    // The timelines end within the production time; a late one gets a
    // moment before it is stopped (its unplayed events then show as lost).
    let mut played = Vec::new();
    for p in players {
        match tokio::time::timeout(Duration::from_secs(10), p).await {
            Ok(Ok(done)) => played.push(Some(done)),
            _ => {
                println!("warning    a scenario did not finish playing in time");
                played.push(None);
            }
        }
    }
    let _ = stop_tx.send(true);
    let _ = producer.await;
    let produce_secs = t0.elapsed().as_secs_f64();
    let generated = production.generated();
    // Device-made events, timed from when their triggering bytes were written.
    let expected: Vec<crate::verdict::Expected> = timelines
        .iter()
        .zip(&played)
        .flat_map(|(t, p)| match p {
            Some(p) => p.expected(t),
            None => t.expected.clone(),
        })
        .collect();
    println!(
        "production stopped: {} events posted, {} expected from device bytes; waiting up to {} s for all of them at the ERP",
        generated.len(),
        expected.len(),
        opts.drain_timeout.as_secs()
    );

    let drain_start = Instant::now();
    let made = generated.len() as u64;
    let progress =
        async |phase: &str| progress_line(&client, &stack, &plan, made, t0.elapsed(), phase).await;
    let mut next_line = Duration::from_secs(1);
    let made_media = production.media();
    loop {
        let t = tally_with(&generated, &expected, &stack.services.erp.effects());
        let m = media_tally(&made_media, &BTreeSet::new(), &stack.services.erp.media());
        if (t.lost == 0 && m.lost == 0) || drain_start.elapsed() >= opts.drain_timeout {
            break;
        }
        if drain_start.elapsed() >= next_line {
            next_line += Duration::from_secs(1);
            println!("{}", progress("draining").await);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let drain_secs = drain_start.elapsed().as_secs_f64();
    // A late redelivery would show up as a duplicate: give it a moment.
    tokio::time::sleep(Duration::from_secs(1)).await;
    println!("{}", progress("final").await);

    let effects = stack.services.erp.effects();
    let erp = stack.services.erp.stats();
    let t = tally_with(&generated, &expected, &effects);
    let stored = stored_media(&client, &stack).await;
    let media = media_tally(&made_media, &stored, &stack.services.erp.media());
    let device_bytes = played.iter().flatten().map(|p| p.ports.bytes().0).sum();
    drop(played);
    let post_errors = production.post_errors.load(Ordering::Relaxed)
        + production.posts_refused.load(Ordering::Relaxed);
    let agents = opts.agents;
    stack.shutdown(Duration::from_secs(5)).await;
    let events_generated = (generated.len() + expected.len()) as u64;
    Ok(Report {
        passed: t.lost == 0 && t.duplicated == 0 && events_generated > 0 && media.clean(),
        events_generated,
        events_booked_at_erp: t.booked,
        lost: t.lost,
        duplicated: t.duplicated,
        unexpected_effects: t.unexpected,
        erp_effects: erp.effects,
        erp_replays: erp.replays,
        erp_faults_injected: erp.faults_injected,
        erp_session_expiries: erp.session_expiries,
        erp_session_refusals: erp.session_refusals,
        erp_bad_signatures: erp.bad_signatures,
        erp_rejected_requests: erp.rejected_requests,
        post_errors,
        broker_outages: outages,
        broker_down_secs: down_total.as_secs_f64(),
        produce_secs,
        drain_secs,
        duration_secs: started.elapsed().as_secs_f64(),
        agents,
        seed: opts.seed,
        latency: t.latency(),
        by_kind: t.by_kind,
        by_source: t.by_source,
        expected_from_devices: expected.len() as u64,
        virtual_devices: timelines.iter().map(|t| t.devices.len()).sum(),
        device_bytes,
        scenario_post_failures: play_stats.posts_failed.load(Ordering::Relaxed),
        scenarios: timelines
            .iter()
            .map(|t| format!("{}: {}", t.source, t.description))
            .collect(),
        media,
        erp_media_by_link: erp.media_by_link,
        erp_media_replays: erp.media_replays,
        erp_media_fetch_failures: erp.media_fetch_failures,
        erp_media_bad_hash: erp.media_bad_hash,
        work_dir: dir.display().to_string(),
    })
}

/// The media the agents of `stack` show stored at the collector (or
/// attached at the ERP), which they know only from the collector's acks.
pub(crate) async fn stored_media(client: &reqwest::Client, stack: &Stack) -> BTreeSet<MediaHash> {
    let mut out = BTreeSet::new();
    for a in &stack.agents {
        if let Some(list) = get_json(client, format!("{}/v1/media", a.url())).await {
            out.extend(
                list["media"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|m| m["state"] == "stored" || m["state"] == "attached")
                    .filter_map(|m| m["ref"].as_str().and_then(MediaHash::parse_ref)),
            );
        }
    }
    out
}

impl Report {
    /// The closing summary for the terminal.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        s.push_str("\n── dockline demo report ──────────────────────────────\n");
        s.push_str(&format!(
            "events made          {:>8}\nbooked at the ERP    {:>8}\nlost                 {:>8}\nduplicated           {:>8}\n",
            self.events_generated, self.events_booked_at_erp, self.lost, self.duplicated
        ));
        let m = &self.media;
        if m.made + m.attached + m.unexpected > 0 {
            s.push_str(&format!(
                "media made           {:>8}   ({:.1} MB of signatures and photos)\nmedia stored         {:>8}   (at the collector, as the agents know from its acks)\nmedia attached       {:>8}   (at the ERP, bytes checked against their hash; {} by link, {} inline)\nmedia lost           {:>8}\nmedia duplicated     {:>8}\n",
                m.made,
                m.made_bytes as f64 / 1e6,
                m.stored,
                m.attached,
                self.erp_media_by_link,
                m.attached.saturating_sub(self.erp_media_by_link),
                m.lost,
                m.duplicated
            ));
            if m.unexpected + self.erp_media_bad_hash + self.erp_media_fetch_failures > 0 {
                s.push_str(&format!(
                    "media unexpected {}, bad hash at the ERP {}, links the ERP could not fetch {}\n",
                    m.unexpected, self.erp_media_bad_hash, self.erp_media_fetch_failures
                ));
            }
        }
        s.push_str(&format!(
            "ERP replays          {:>8}   (retries answered with the earlier booking)\nERP faults injected  {:>8}\nbroker outages       {:>8}   ({:.1} s down)\n",
            self.erp_replays, self.erp_faults_injected, self.broker_outages, self.broker_down_secs
        ));
        if self.erp_session_expiries > 0 {
            s.push_str(&format!(
                "ERP session expiries {:>8}   ({} requests answered 401 session_expired meanwhile)\n",
                self.erp_session_expiries, self.erp_session_refusals
            ));
        }
        if self.unexpected_effects
            + self.erp_bad_signatures
            + self.erp_rejected_requests
            + self.post_errors
            > 0
        {
            s.push_str(&format!(
                "unexpected effects {}, bad signatures {}, refused requests {}, failed posts {}\n",
                self.unexpected_effects,
                self.erp_bad_signatures,
                self.erp_rejected_requests,
                self.post_errors
            ));
        }
        if self.virtual_devices > 0 {
            s.push_str(&format!(
                "virtual devices      {:>8}   ({} bytes written; {} expected business events)\n",
                self.virtual_devices, self.device_bytes, self.expected_from_devices
            ));
        }
        if self.scenario_post_failures > 0 {
            s.push_str(&format!(
                "scenario posts failed {:>7}   (their events cannot be made)\n",
                self.scenario_post_failures
            ));
        }
        for (source, kinds) in &self.by_source {
            let (made, booked) = kinds
                .values()
                .fold((0, 0), |(m, b), c| (m + c.generated, b + c.booked));
            s.push_str(&format!("{source:<20} {made:>8} made {booked:>8} booked\n"));
            for (kind, c) in kinds {
                s.push_str(&format!(
                    "  {kind:<18} {:>8}      {:>8}\n",
                    c.generated, c.booked
                ));
            }
        }
        if !self.latency.is_empty() {
            s.push_str("made → booked, ms        events     p50     p90     p99     max\n");
            for (source, l) in &self.latency {
                s.push_str(&format!(
                    "{source:<20} {:>10} {:>7} {:>7} {:>7} {:>7}\n",
                    l.events, l.p50_ms, l.p90_ms, l.p99_ms, l.max_ms
                ));
            }
        }
        s.push_str(&format!(
            "produced {:.1} s, drained {:.1} s, wall time {:.1} s\n",
            self.produce_secs, self.drain_secs, self.duration_secs
        ));
        if self.passed {
            s.push_str(if self.media.made > 0 {
                "PASS: every event booked and every medium attached exactly once\n"
            } else {
                "PASS: every event booked exactly once\n"
            });
        } else {
            s.push_str(&format!(
                "FAIL: logs and databases kept in {}\n",
                self.work_dir
            ));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_cover_pickers_and_a_driver() {
        assert_eq!(devices(1)[0].1, vec![Role::Picker(0), Role::Driver]);
        let d = devices(3);
        assert_eq!(d.len(), 3);
        assert_eq!(d[2], ("van-01".to_string(), vec![Role::Driver]));
    }
}
