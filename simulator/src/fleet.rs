//! `dockline-sim fleet`: many agents with many virtual devices against one
//! collector, on loopback, then events per second and lost/duplicated.
//!
//! # What runs
//!
//! The [`stack`](crate::stack)'s system under test: a broker and a
//! collector as child processes, the mock ERP (no faults) in this process,
//! and N agent children (`fl-0001`…), started a batch at a time. Each agent reads M virtual scanners on pseudo-terminals, each
//! scanner feeding its own dock door station (with a vehicle configured), so
//! every scan of a new SSCC label is one `loaded` business event made by the
//! agent's station rules. The expected set is every SSCC scanned.
//!
//! # Bounds
//!
//! At most [`MAX_AGENTS`] agents and [`MAX_DEVICES`] devices each: every
//! device is a pseudo-terminal (the kernel allows `kernel.pty.max`, 4096 by
//! default) and every agent a process with its own SQLite outbox and MQTT
//! connection. Everything listens on 127.0.0.1 only.
//!
//! # Figures
//!
//! `events/s made` is scans per second of production; `events/s booked` is
//! events booked at the ERP per second from the first scan until the last
//! booking (production plus drain). `lost` and `duplicated` come from the
//! same invariant checker as the demo ([`crate::verdict`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dockline_agent::devices::{DeviceKind, Protocol};
use dockline_agent::stations::config::StationKind;
use serde::Serialize;
use serde_json::Value;

use crate::demo::{DemoError, get_json};
use crate::devices::VirtualPort;
use crate::devices::scanner::{Suffix, Symbol, scan_bytes, with_check_digit};
use crate::mock_erp::ErpConfig;
use crate::stack::{self, AgentConfig, Programs, Services, Stack, StackError, StackSpec};
use crate::verdict::{Expected, Signature, tally_with};

/// Most agents in one fleet run.
pub const MAX_AGENTS: usize = 1000;
/// Most virtual devices per agent.
pub const MAX_DEVICES: usize = 16;
/// Agents started at once.
const START_BATCH: usize = 16;

/// What the fleet runs.
#[derive(Debug, Clone)]
pub struct FleetOptions {
    /// Agents.
    pub agents: usize,
    /// Virtual scanners per agent.
    pub devices: usize,
    /// Seconds of scanning.
    pub duration: Duration,
    /// Scans per second per scanner.
    pub scans_per_sec: f64,
    /// Longest wait for every event to be booked after scanning stops.
    pub drain_timeout: Duration,
    /// The `dockline-sim` executable that runs the children.
    pub exe: PathBuf,
}

/// The fleet's closing figures.
#[derive(Debug, Clone, Serialize)]
pub struct FleetReport {
    /// True when nothing was lost or duplicated and something was made.
    pub passed: bool,
    /// Agents run.
    pub agents: usize,
    /// Virtual devices run.
    pub devices: usize,
    /// Scans written (each must become one `loaded` event).
    pub events_expected: u64,
    /// Expected events booked at the ERP.
    pub events_booked: u64,
    /// Expected events never booked.
    pub lost: u64,
    /// Effects beyond one per event.
    pub duplicated: u64,
    /// Effects that match no scan.
    pub unexpected: u64,
    /// Scans per second while scanning.
    pub made_per_sec: f64,
    /// Bookings per second from the first scan to the last booking.
    pub booked_per_sec: f64,
    /// Seconds of scanning.
    pub produce_secs: f64,
    /// Seconds from the end of scanning until all were booked (or the wait ended).
    pub drain_secs: f64,
    /// Seconds to start every process and open every device.
    pub startup_secs: f64,
    /// Device bytes the ptys would not take (an agent not reading).
    pub bytes_dropped: u64,
    /// Where the logs are (kept when the run fails).
    pub work_dir: String,
}

impl FleetReport {
    /// The closing summary for the terminal.
    pub fn summary(&self) -> String {
        format!(
            "\n── dockline fleet report ─────────────────────────────\n\
             agents x devices     {:>5} x {}\n\
             events expected      {:>8}   (one loaded per SSCC scan)\n\
             booked at the ERP    {:>8}\n\
             lost                 {:>8}\n\
             duplicated           {:>8}\n\
             unexpected           {:>8}\n\
             made                 {:>8.0} events/s over {:.1} s\n\
             booked               {:>8.0} events/s (scan to last booking; drain {:.1} s)\n\
             start-up             {:>8.1} s\n\
             {}\n",
            self.agents,
            self.devices / self.agents.max(1),
            self.events_expected,
            self.events_booked,
            self.lost,
            self.duplicated,
            self.unexpected,
            self.made_per_sec,
            self.produce_secs,
            self.booked_per_sec,
            self.drain_secs,
            self.startup_secs,
            if self.passed {
                "PASS: every scan booked exactly once".to_string()
            } else {
                format!("FAIL: logs and databases kept in {}", self.work_dir)
            }
        )
    }
}

/// Runs the fleet in a fresh work directory under the system temp dir.
pub async fn run(opts: FleetOptions) -> Result<FleetReport, DemoError> {
    if opts.agents == 0 || opts.agents > MAX_AGENTS {
        return Err(DemoError::Options(format!(
            "{} agents; give 1 to {MAX_AGENTS}",
            opts.agents
        )));
    }
    if opts.devices == 0 || opts.devices > MAX_DEVICES {
        return Err(DemoError::Options(format!(
            "{} devices per agent; give 1 to {MAX_DEVICES}",
            opts.devices
        )));
    }
    if !(opts.scans_per_sec > 0.0 && opts.scans_per_sec <= 100.0) {
        return Err(DemoError::Options(format!(
            "{} scans per second per device; give (0, 100]",
            opts.scans_per_sec
        )));
    }
    let dir = stack::kept_work_dir("dockline-fleet-")?;
    println!("work dir   {} (configs, databases, logs)", dir.display());
    let result = run_in(&opts, &dir).await;
    if let Ok(r) = &result
        && r.passed
    {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

/// Agent `device`'s config for `scanners` virtual scanners, each feeding
/// its own dock door station with a vehicle at the door.
fn fleet_agent(
    stack: &Stack,
    device: &str,
    scanners: &[VirtualPort],
) -> Result<AgentConfig, StackError> {
    let mut config = stack.agent_config(device)?;
    stack::config::simulated_agent(&mut config);
    for (j, port) in scanners.iter().enumerate() {
        let scanner = format!("scanner-{j}");
        config.devices.push(stack::config::serial_device(
            &scanner,
            DeviceKind::Scanner,
            Protocol::Scan,
            port.path(),
        )?);
        let mut door =
            stack::config::station(&format!("door-{j}"), StationKind::DockDoor, &[&scanner])?;
        door.vehicle = Some(format!("TRUCK-{device}-{j}"));
        config.stations.push(door);
    }
    Ok(config)
}

async fn run_in(opts: &FleetOptions, dir: &Path) -> Result<FleetReport, DemoError> {
    let started = Instant::now();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let services = Services::start(StackSpec {
        programs: Programs::simulator(&opts.exe),
        dir: dir.into(),
        site: crate::demo::SITE.into(),
        broker: None,
        erp: ErpConfig {
            seed: 1,
            ..ErpConfig::new(stack::webhook_secret(opts.agents as u64))
        },
    })
    .await?;
    let ids: Vec<String> = (1..=opts.agents).map(|i| format!("fl-{i:04}")).collect();
    let mut config = services.collector_config(&ids)?;
    stack::config::simulated_collector(&mut config);
    let mut stack = services.start_collector(config).await?;
    println!(
        "broker {}, collector {}, ERP http://{}; starting {} agents x {} devices",
        stack.services.broker.addr(),
        stack.collector.url(),
        stack.services.erp_addr,
        opts.agents,
        opts.devices
    );

    // Every agent's scanners, in the agents' order.
    let mut ports: Vec<Vec<VirtualPort>> = Vec::with_capacity(opts.agents);
    for batch in ids.chunks(START_BATCH) {
        let from = stack.agents.len();
        for device in batch {
            let dev_dir = dir.join("dev").join(device);
            std::fs::create_dir_all(&dev_dir).map_err(|source| StackError::Io {
                path: dev_dir.clone(),
                source,
            })?;
            let scanners = (0..opts.devices)
                .map(|j| VirtualPort::open(&dev_dir.join(format!("scanner-{j}"))))
                .collect::<Result<Vec<_>, _>>()?;
            let config = fleet_agent(&stack, device, &scanners)?;
            stack.spawn_agent(config)?;
            ports.push(scanners);
        }
        stack.wait_agents_ready(from).await?;
        print!("\ragents started {}/{}", stack.agents.len(), opts.agents);
        let _ = std::io::Write::flush(&mut std::io::stdout());
    }
    println!();
    // Every device open before the clock starts.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut open = 0;
        for a in &stack.agents {
            if let Some(s) = get_json(&client, format!("{}/v1/status", a.url())).await {
                open += s["devices"].as_array().map_or(0, |d| {
                    d.iter()
                        .filter(|d| d["connected"] == Value::Bool(true))
                        .count()
                });
            }
        }
        if open >= opts.agents * opts.devices || Instant::now() >= deadline {
            println!("devices online {open}/{}", opts.agents * opts.devices);
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let startup_secs = started.elapsed().as_secs_f64();

    // Scanning: one task per agent writes one SSCC to each of its scanners
    // per tick. SSCC serials are unique across the fleet.
    let made = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    let ticks = (opts.duration.as_secs_f64() * opts.scans_per_sec).max(1.0) as u64;
    let period = Duration::from_secs_f64(1.0 / opts.scans_per_sec);
    let mut writers = Vec::new();
    for (i, (a, mut ports)) in stack.agents.iter().zip(ports).enumerate() {
        let device = a.name().to_string();
        let made = made.clone();
        let devices = opts.devices;
        writers.push(tokio::spawn(async move {
            let mut expected = Vec::new();
            let mut tick = tokio::time::interval(period);
            // Agents start their ticks spread over one period.
            tokio::time::sleep(period.mul_f64((i % 97) as f64 / 97.0)).await;
            for n in 0..ticks {
                tick.tick().await;
                for (j, port) in ports.iter_mut().enumerate() {
                    let serial = ((i * devices + j) as u64) * 100_000 + n;
                    let Some(sscc) = with_check_digit(&format!("3950600{serial:010}")) else {
                        continue;
                    };
                    port.send(&scan_bytes(&Symbol::sscc(&sscc, None), Suffix::CrLf));
                    made.fetch_add(1, Ordering::Relaxed);
                    expected.push(Expected::new(
                        "fleet",
                        device.as_str(),
                        Signature {
                            sscc: Some(sscc),
                            location: Some(format!("door-{j}")),
                            ..Signature::kind("loaded")
                        },
                    ));
                }
            }
            (ports, expected)
        }));
    }
    let mut next_line = Duration::from_secs(1);
    while writers.iter().any(|w| !w.is_finished()) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if t0.elapsed() >= next_line {
            next_line += Duration::from_secs(1);
            let c = get_json(&client, format!("{}/v1/stats", stack.collector.url())).await;
            let num = |f: &str| c.as_ref().and_then(|c| c[f].as_u64()).unwrap_or(0);
            println!(
                "[{:>5.1}s] scanned {:>7} | collector {:>6} pending, {:>7} booked | ERP {:>7} effects",
                t0.elapsed().as_secs_f64(),
                made.load(Ordering::Relaxed),
                num("pending"),
                num("booked"),
                stack.services.erp.stats().effects
            );
        }
    }
    let produce_secs = t0.elapsed().as_secs_f64();
    let mut expected = Vec::new();
    let mut kept_ports = Vec::new();
    for w in writers {
        if let Ok((ports, mut e)) = w.await {
            expected.append(&mut e);
            kept_ports.push(ports);
        }
    }
    let bytes_dropped = kept_ports.iter().flatten().map(VirtualPort::dropped).sum();
    println!(
        "scanning stopped: {} scans; waiting up to {} s for all of them at the ERP",
        expected.len(),
        opts.drain_timeout.as_secs()
    );
    let drain_start = Instant::now();
    let mut next_line = Duration::from_secs(1);
    let mut last_booking = drain_start;
    let mut last_count = 0;
    loop {
        let effects = stack.services.erp.effects();
        if effects.len() != last_count {
            last_count = effects.len();
            last_booking = Instant::now();
        }
        let t = tally_with(&[], &expected, &effects);
        if t.lost == 0 || drain_start.elapsed() >= opts.drain_timeout {
            break;
        }
        if drain_start.elapsed() >= next_line {
            next_line += Duration::from_secs(1);
            println!(
                "[{:>5.1}s] draining: {} of {} booked",
                t0.elapsed().as_secs_f64(),
                t.booked,
                expected.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let drain_secs = drain_start.elapsed().as_secs_f64();
    // A late redelivery would show up as a duplicate: give it a moment.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let t = tally_with(&[], &expected, &stack.services.erp.effects());
    let booked_span = last_booking
        .duration_since(t0)
        .as_secs_f64()
        .max(produce_secs);

    // Stop everything this run started.
    stack.shutdown(Duration::from_secs(5)).await;
    drop(kept_ports);

    let events_expected = expected.len() as u64;
    Ok(FleetReport {
        passed: t.lost == 0 && t.duplicated == 0 && events_expected > 0,
        agents: opts.agents,
        devices: opts.agents * opts.devices,
        events_expected,
        events_booked: t.booked,
        lost: t.lost,
        duplicated: t.duplicated,
        unexpected: t.unexpected,
        made_per_sec: events_expected as f64 / produce_secs.max(1e-9),
        booked_per_sec: t.booked as f64 / booked_span.max(1e-9),
        produce_secs,
        drain_secs,
        startup_secs,
        bytes_dropped,
        work_dir: dir.display().to_string(),
    })
}
