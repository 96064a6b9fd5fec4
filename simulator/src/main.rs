//! `dockline-sim`: parses flags and calls the simulator library.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use dockline_simulator::bench::{self, BenchOptions};
use dockline_simulator::broker;
use dockline_simulator::chaos::{self, ChaosOptions};
use dockline_simulator::demo::{self, DemoOptions};
use dockline_simulator::fleet::{self, FleetOptions};
use dockline_simulator::mock_erp::{ErpConfig, MockErp};
use dockline_simulator::scenario::{self, ScenarioFile};
use dockline_simulator::stack::child;

/// dockline without hardware: broker, mock ERP and the end-to-end demo.
#[derive(Debug, Parser)]
#[command(name = "dockline-sim", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run an MQTT broker (rumqttd) until killed.
    Broker {
        /// Address to listen on; port 0 picks a free port.
        #[arg(long, default_value = "127.0.0.1:1883")]
        listen: SocketAddr,
        /// Write the bound address here once the broker accepts connections.
        #[arg(long)]
        addr_file: Option<PathBuf>,
    },
    /// Run the mock ERP webhook endpoint until killed.
    MockErp {
        /// Address to listen on; port 0 picks a free port.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        /// Write the bound address here once listening.
        #[arg(long)]
        addr_file: Option<PathBuf>,
        /// Webhook secret, `whsec_<base64>`.
        #[arg(long, env = "DOCKLINE_ERP_SECRET")]
        secret: String,
        /// Share of requests answered 503 (0.0 to 1.0).
        #[arg(long, default_value_t = 0.0)]
        fail_rate: f64,
        /// Share of requests answered 429 with Retry-After: 1.
        #[arg(long, default_value_t = 0.0)]
        throttle_rate: f64,
        /// Share of new bookings whose response is dropped after commit.
        #[arg(long, default_value_t = 0.0)]
        lose_after_commit_rate: f64,
        /// Delay before each answer, in milliseconds.
        #[arg(long, default_value_t = 0)]
        delay_ms: u64,
        /// The session expires after this many new bookings (0: never);
        /// meanwhile requests get 401 `{"code":"session_expired"}`.
        #[arg(long, default_value_t = 0)]
        session_expiry_every: u64,
        /// How long an expired session refuses requests, in milliseconds.
        #[arg(long, default_value_t = 1000)]
        session_expiry_ms: u64,
        /// Seed for the fault generator.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Run the whole journey (agents, broker, collector, mock ERP) with a
    /// broker outage in the middle, then report lost and duplicated events.
    Demo {
        /// Seconds of event production.
        #[arg(long, default_value_t = 60)]
        duration: u64,
        /// Write the report as JSON here.
        #[arg(long)]
        report: Option<PathBuf>,
        /// Number of agents (handhelds); the last is the driver's.
        #[arg(long, default_value_t = 3)]
        agents: usize,
        /// Seed of the scenario and the ERP's faults.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// New orders per second (about nine events each).
        #[arg(long, default_value_t = 4.0)]
        orders_per_sec: f64,
        /// Seconds the broker stays down (default: min(5, duration / 3); 0 for none).
        #[arg(long)]
        outage_secs: Option<f64>,
        /// Seconds to wait after production for every event to be booked.
        #[arg(long, default_value_t = 60)]
        drain_timeout: u64,
        /// Share of ERP requests answered 503.
        #[arg(long, default_value_t = 0.02)]
        erp_fail_rate: f64,
        /// Share of ERP requests answered 429 with Retry-After: 1.
        #[arg(long, default_value_t = 0.01)]
        erp_throttle_rate: f64,
        /// Share of new ERP bookings whose response is lost after commit.
        #[arg(long, default_value_t = 0.02)]
        erp_lose_after_commit_rate: f64,
        /// The ERP's session expires after this many new bookings (0:
        /// never); meanwhile it answers 401 `{"code":"session_expired"}`.
        #[arg(long, default_value_t = 500)]
        erp_session_expiry_every: u64,
        /// How long an expired ERP session refuses requests, in milliseconds.
        #[arg(long, default_value_t = 1000)]
        erp_session_expiry_ms: u64,
        /// Device scenario files (TOML) played on virtual devices, each on
        /// its own agent; repeat for several. Default: the checked-in
        /// warehouse shift and delivery route.
        #[arg(long = "scenario", value_name = "FILE")]
        scenarios: Vec<PathBuf>,
        /// No device scenarios: HTTP orders only.
        #[arg(long, conflicts_with = "scenarios")]
        no_devices: bool,
        /// The drivers post no signatures and photos (their PODs name none).
        #[arg(long)]
        no_media: bool,
    },
    /// Run N agents with M virtual scanners each against one collector
    /// (loopback only), then report events per second, lost and duplicated.
    /// Exits 1 on any loss or duplicate.
    Fleet {
        /// Agents (child processes), 1 to 1000.
        #[arg(long, default_value_t = 100)]
        agents: usize,
        /// Virtual scanners per agent, 1 to 16 (each a dock door station).
        #[arg(long, default_value_t = 2)]
        devices: usize,
        /// Seconds of scanning.
        #[arg(long, default_value_t = 30)]
        duration: u64,
        /// Scans per second per scanner (each one `loaded` event).
        #[arg(long, default_value_t = 1.0)]
        scans_per_sec: f64,
        /// Seconds to wait after scanning for every event to be booked.
        #[arg(long, default_value_t = 120)]
        drain_timeout: u64,
        /// Write the report as JSON here.
        #[arg(long)]
        report: Option<PathBuf>,
    },
    /// Run repeated fault trials (chaos proxy on the links, agent, collector
    /// and broker kills, ERP faults) and check that every event is booked
    /// exactly once, in lane order. Exits 1 on any loss or duplicate.
    Chaos {
        /// Number of trials.
        #[arg(long, default_value_t = 5)]
        trials: usize,
        /// Write the report as JSON here.
        #[arg(long)]
        report: Option<PathBuf>,
        /// Seed of the first trial (trial i uses seed + i); default: from the clock.
        #[arg(long)]
        seed: Option<u64>,
        /// Seconds of event production (and faults) per trial.
        #[arg(long, default_value_t = 20)]
        duration_per_trial: u64,
        /// Agents per trial; the last is the driver's.
        #[arg(long, default_value_t = 3)]
        agents: usize,
        /// New orders per second (about nine events each).
        #[arg(long, default_value_t = 3.0)]
        orders_per_sec: f64,
        /// Longest wait, in seconds, for quiescence after each trial's faults.
        #[arg(long, default_value_t = 60)]
        drain_timeout: u64,
        /// Also fail (exit 1) when a device's events were booked out of
        /// sequence order.
        #[arg(long)]
        strict_order: bool,
        /// Every how many proofs of delivery carry a signature and a photo
        /// (0: none).
        #[arg(long, default_value_t = 6)]
        media_every: u64,
    },
    /// Measure the performance figures of DESIGN.md, each next to the raw
    /// limit measured in the same run, and write them as JSON.
    Bench {
        /// Write the figures here (a JSON array of objects with name, value,
        /// unit, baseline, ratio, target).
        #[arg(long)]
        json: Option<PathBuf>,
        /// Small sizes for a smoke run (under a minute).
        #[arg(long)]
        quick: bool,
        /// Run only the figures whose name contains one of these
        /// (comma-separated), e.g. `--only ingest,drain`.
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
    },
    /// Run a dockline agent in this process (what `dockline-agent` does).
    #[command(hide = true)]
    Agent {
        /// Agent config file (TOML).
        #[arg(long)]
        config: PathBuf,
    },
    /// Run a dockline collector in this process (what `dockline-collector` does).
    #[command(hide = true)]
    Collector {
        /// Collector config file (TOML).
        #[arg(long)]
        config: PathBuf,
    },
}

/// Logs to stdout, filtered by `RUST_LOG` or `default`; colours only on a
/// terminal (children of the demo log to files).
fn init_tracing(default: &str) {
    tracing_subscriber::fmt()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default)),
        )
        .init();
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // The demo's terminal is for progress lines; its children log to files.
    init_tracing(
        if matches!(
            cli.command,
            Command::Demo { .. }
                | Command::Bench { .. }
                | Command::Chaos { .. }
                | Command::Fleet { .. }
        ) {
            "warn"
        } else {
            "info,rumqttd=warn"
        },
    );
    match cli.command {
        Command::Broker { listen, addr_file } => {
            let addr = broker::start(listen).context("cannot start the broker")?;
            if let Some(file) = addr_file {
                child::write_addr_file(&file, addr)?;
            }
            tracing::info!(%addr, "broker accepting MQTT v3.1.1 connections; kill the process to stop it");
            // rumqttd has no shutdown API: the broker ends with the process.
            dockline_host::signal::shutdown().await;
            Ok(())
        }
        Command::MockErp {
            listen,
            addr_file,
            secret,
            fail_rate,
            throttle_rate,
            lose_after_commit_rate,
            delay_ms,
            session_expiry_every,
            session_expiry_ms,
            seed,
        } => {
            let config = ErpConfig {
                secret,
                fail_rate,
                throttle_rate,
                lose_after_commit_rate,
                delay_ms,
                session_expiry_every,
                session_expiry_ms,
                seed,
            };
            let (erp, addr) = MockErp::start(listen, config)
                .await
                .context("cannot start the mock ERP")?;
            if let Some(file) = addr_file {
                child::write_addr_file(&file, addr)?;
            }
            dockline_host::signal::shutdown().await;
            let stats = erp.stats();
            erp.shutdown().await;
            tracing::info!(?stats, "mock ERP stopped");
            Ok(())
        }
        Command::Demo {
            duration,
            report,
            agents,
            seed,
            orders_per_sec,
            outage_secs,
            drain_timeout,
            erp_fail_rate,
            erp_throttle_rate,
            erp_lose_after_commit_rate,
            erp_session_expiry_every,
            erp_session_expiry_ms,
            scenarios,
            no_devices,
            no_media,
        } => {
            let scenarios = if no_devices {
                Vec::new()
            } else if scenarios.is_empty() {
                scenario::default_scenarios()?
            } else {
                scenarios
                    .iter()
                    .map(|p| ScenarioFile::load(p))
                    .collect::<Result<_, _>>()?
            };
            let outage = match outage_secs {
                Some(s) => Some(
                    Duration::try_from_secs_f64(s)
                        .map_err(|_| anyhow::anyhow!("--outage-secs {s} is not a duration"))?,
                ),
                None => None,
            };
            let opts = DemoOptions {
                duration: Duration::from_secs(duration),
                agents,
                seed,
                orders_per_sec,
                outage,
                drain_timeout: Duration::from_secs(drain_timeout),
                erp_fail_rate,
                erp_throttle_rate,
                erp_lose_after_commit_rate,
                erp_session_expiry_every,
                erp_session_expiry_ms,
                exe: this_exe()?,
                scenarios,
                media: !no_media,
            };
            let result = until_interrupted(demo::run(opts), "the demo could not run").await?;
            conclude(
                &format!("{}\n", result.summary()),
                report.as_deref(),
                &result,
                result.passed,
            )
        }
        Command::Fleet {
            agents,
            devices,
            duration,
            scans_per_sec,
            drain_timeout,
            report,
        } => {
            let opts = FleetOptions {
                agents,
                devices,
                duration: Duration::from_secs(duration),
                scans_per_sec,
                drain_timeout: Duration::from_secs(drain_timeout),
                exe: this_exe()?,
            };
            let result = until_interrupted(fleet::run(opts), "the fleet could not run").await?;
            conclude(
                &format!("{}\n", result.summary()),
                report.as_deref(),
                &result,
                result.passed,
            )
        }
        Command::Chaos {
            trials,
            report,
            seed,
            duration_per_trial,
            agents,
            orders_per_sec,
            drain_timeout,
            strict_order,
            media_every,
        } => {
            let seed = seed.unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs() % 1_000_000)
                    .unwrap_or(1)
            });
            let opts = ChaosOptions {
                trials,
                seed,
                duration: Duration::from_secs(duration_per_trial),
                agents,
                orders_per_sec,
                drain_timeout: Duration::from_secs(drain_timeout),
                strict_order,
                media_every,
                exe: this_exe()?,
            };
            let result =
                until_interrupted(chaos::run(&opts), "the chaos trials could not run").await?;
            conclude(&result.table(), report.as_deref(), &result, result.passed)
        }
        Command::Bench { json, quick, only } => {
            let opts = BenchOptions {
                exe: this_exe()?,
                quick,
                only,
            };
            let figures =
                until_interrupted(bench::run(&opts), "the bench could not finish").await?;
            bench::print(&figures);
            if let Some(path) = json {
                write_json(&path, &figures, "figures")?;
            }
            Ok(())
        }
        Command::Collector { config } => {
            serve("collector", &config, |c| {
                dockline_collector::run(c, dockline_host::signal::shutdown())
            })
            .await
        }
        Command::Agent { config } => {
            serve("agent", &config, |c| {
                dockline_agent::run(c, dockline_host::signal::shutdown())
            })
            .await
        }
    }
}

/// Loads the `what` config from `file` (then `DOCKLINE_*` overrides) and
/// runs it with `run` until it stops.
async fn serve<C, E, F>(what: &str, file: &Path, run: impl FnOnce(C) -> F) -> anyhow::Result<()>
where
    C: serde::de::DeserializeOwned,
    E: std::error::Error + Send + Sync + 'static,
    F: std::future::Future<Output = Result<(), E>>,
{
    let config: C = dockline_host::config::load(Some(file), std::env::vars())
        .with_context(|| format!("cannot start the {what}"))?;
    run(config)
        .await
        .with_context(|| format!("the {what} stopped"))
}

/// This program's path (the children of demo, fleet, chaos and bench run it).
fn this_exe() -> anyhow::Result<PathBuf> {
    std::env::current_exe().context("cannot find this program's path")
}

/// Runs `work` to its end, or until Ctrl-C or SIGTERM: then `work` is
/// dropped, which kills every child it started. `failed` says what could
/// not be done when `work` fails.
async fn until_interrupted<T, E>(
    work: impl std::future::Future<Output = Result<T, E>>,
    failed: &str,
) -> anyhow::Result<T>
where
    anyhow::Error: From<E>,
{
    tokio::select! {
        r = work => r.map_err(anyhow::Error::from).with_context(|| failed.to_string()),
        () = dockline_host::signal::shutdown() => anyhow::bail!("interrupted; child processes stopped"),
    }
}

/// Writes `value` to `path` as pretty JSON and says so; `what` names it in
/// messages ("report", "figures").
fn write_json(path: &Path, value: &impl serde::Serialize, what: &str) -> anyhow::Result<()> {
    let json = serde_json::to_string_pretty(value)?;
    std::fs::write(path, json + "\n")
        .with_context(|| format!("cannot write the {what} to {}", path.display()))?;
    println!("{what} written to {}", path.display());
    Ok(())
}

/// Ends a demo, fleet or chaos run: prints `text` (its summary), writes its
/// report when asked, and exits 1 when it did not pass.
fn conclude(
    text: &str,
    report: Option<&Path>,
    result: &impl serde::Serialize,
    passed: bool,
) -> anyhow::Result<()> {
    print!("{text}");
    if let Some(path) = report {
        write_json(path, result, "report")?;
    }
    if !passed {
        std::process::exit(1);
    }
    Ok(())
}
