//! `dockline-agent`: parses flags, loads config, runs the agent (or, with
//! `doctor`, inspects its outbox read-only; with `decode`, decodes a device
//! capture; with `check-config`, prints the effective config).
//!
//! User errors (a bad config, a data folder it cannot write) end with one
//! `dockline-agent: error: …` paragraph on stderr and exit code 2, never a
//! backtrace; logs go to stderr as text or JSON (`--log-format`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use dockline_agent::config::DEFAULT_CONFIG_PATH;
use dockline_agent::doctor::{self, DoctorError};
use dockline_host::config::Loaded;
use dockline_host::logging::LogFormat;

/// The dockline agent for a warehouse gateway or delivery handheld.
#[derive(Debug, Parser)]
#[command(version = dockline_agent::LONG_VERSION, about)]
struct Cli {
    /// Config file (TOML) [default: /etc/dockline/agent.toml when it
    /// exists]; `DOCKLINE_*` environment variables naming its keys override
    /// it (`DOCKLINE_MQTT__HOST=broker`).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Log lines as `text` or `json` (overrides `[log] format`); on stderr.
    #[arg(long, value_name = "text|json")]
    log_format: Option<LogFormat>,
    /// Without a subcommand the agent runs.
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Inspect the outbox database read-only (safe while the agent runs).
    ///
    /// Exit codes: 0 healthy, 1 damaged, 2 usage, config or missing file.
    Doctor(DoctorArgs),
    /// Decode a raw device capture (a file, or stdin) to one JSON object per line.
    ///
    /// Exit codes: 0 all input decoded, 1 some frames rejected (printed as
    /// `"kind":"error"` lines), 2 the input could not be read.
    Decode(DecodeArgs),
    /// Print the local API's token (made now if the agent has not made it
    /// yet): the configured `[api] token`, else `{data_dir}/api.token`.
    Token(WhereArgs),
    /// Rotate the outbox's payload key (stop the agent first): a new key
    /// seals every held payload, then the old keys are removed from
    /// `outbox.key`. Prints what it did as JSON.
    RotateKey(WhereArgs),
    /// Print the effective config (file plus `DOCKLINE_*` overrides, secrets
    /// redacted) and check it as a start would, without starting.
    ///
    /// Exit codes: 0 valid, 2 it would not start (the reason on stderr).
    CheckConfig,
}

#[derive(Debug, clap::Args)]
struct WhereArgs {
    /// The agent's config file; its `data_dir` holds the data.
    #[arg(long, short, conflicts_with = "data_dir")]
    config: Option<PathBuf>,
    /// The data folder (instead of --config).
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct DecodeArgs {
    /// The device protocol of the capture.
    #[arg(long, value_enum)]
    device: dockline_agent::devices::Protocol,
    /// Toledo continuous: frames end with a checksum byte after CR (verified).
    #[arg(long)]
    checksum: bool,
    /// The capture file; stdin when omitted.
    file: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct DoctorArgs {
    /// The agent's config file; its `data_dir` holds outbox.db.
    #[arg(long, short, conflicts_with = "data_dir")]
    config: Option<PathBuf>,
    /// The data folder holding outbox.db (instead of --config).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    #[command(subcommand)]
    action: DoctorAction,
}

#[derive(Debug, Subcommand)]
enum DoctorAction {
    /// Integrity, schema version, counters and the last salvage.
    Check {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Queue depth and bytes per class, receipts by state, drops, shed ranges.
    Stats {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Receipts in one state, newest first.
    List {
        /// Which receipts (all when omitted).
        #[arg(long, value_enum)]
        state: Option<State>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Machine-readable output (one JSON array).
        #[arg(long)]
        json: bool,
    },
    /// Held events as JSON lines on stdout.
    Export {
        /// Lowest sequence (inclusive).
        #[arg(long)]
        from: Option<u64>,
        /// Highest sequence (inclusive).
        #[arg(long)]
        to: Option<u64>,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum State {
    Queued,
    Stored,
    Booked,
    Rejected,
    Shed,
}

impl State {
    fn as_str(self) -> &'static str {
        match self {
            State::Queued => "queued",
            State::Stored => "stored",
            State::Booked => "booked",
            State::Rejected => "rejected",
            State::Shed => "shed",
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Doctor(args)) => run_doctor(args, cli.config.as_deref()),
        Some(Command::Decode(args)) => run_decode(&args),
        Some(Command::CheckConfig) => check_config(cli.config.as_deref()),
        Some(Command::Token(args)) => run_token(&args, cli.config.as_deref()),
        Some(Command::RotateKey(args)) => run_rotate_key(&args, cli.config.as_deref()),
        None => run_agent(&cli),
    }
}

/// One paragraph on stderr, exit code 2: how every user error ends.
fn fail(e: impl std::fmt::Display) -> ExitCode {
    eprintln!("dockline-agent: error: {e}");
    ExitCode::from(2)
}

/// Loads the config from `-c`, else the default path when it exists, else
/// from `DOCKLINE_*` variables alone.
fn load_config(given: Option<&Path>) -> anyhow::Result<Loaded<dockline_agent::Config>> {
    let file = dockline_host::config::file_to_load(given, Path::new(DEFAULT_CONFIG_PATH));
    dockline_host::config::load_report(
        file.as_deref(),
        dockline_agent::config::with_env_aliases(std::env::vars()),
    )
    .with_context(|| match file {
        Some(_) => "cannot load the config".to_string(),
        None => format!(
            "no config file (give one with -c, or create {DEFAULT_CONFIG_PATH}) and the \
             DOCKLINE_* variables alone are not a config"
        ),
    })
}

fn run_agent(cli: &Cli) -> ExitCode {
    let loaded = match load_config(cli.config.as_deref()) {
        Ok(l) => l,
        Err(e) => return fail(format!("cannot start the agent: {e:#}")),
    };
    let format = cli
        .log_format
        .or(loaded.config.log.format)
        .unwrap_or_default();
    let log = match dockline_host::logging::init(format, &loaded.config.log) {
        Ok(handle) => handle,
        Err(e) => return fail(format!("cannot start the agent: {e}")),
    };
    tracing::info!(version = dockline_agent::VERSION, commit = dockline_agent::BUILD_COMMIT, config = %loaded.origin, "dockline-agent starting");
    for var in &loaded.ignored {
        tracing::debug!(variable = %var, "environment variable names no config key; ignored");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return fail(format!("cannot start the async runtime: {e}")),
    };
    let given = cli.config.clone();
    let result = runtime.block_on(async move {
        let (reload_tx, reloads) = tokio::sync::mpsc::channel(1);
        // Installed before the agent starts, so an early SIGHUP cannot kill it.
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(hup) => {
                tokio::spawn(reload_on_sighup(
                    hup,
                    given,
                    loaded.table.clone(),
                    log,
                    reload_tx,
                ));
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP; reload needs a restart")
            }
        }
        dockline_agent::run_reloadable(loaded.config, dockline_host::signal::shutdown(), reloads)
            .await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "the agent stopped");
            fail(format!("the agent stopped: {e}"))
        }
    }
}

/// The config keys a reload applies without a restart: `[log] level` (by
/// the log handle) and these, by the running agent.
const LIVE_KEYS: [&str; 2] = ["devices", "stations"];

/// SIGHUP: reads the config again (same file, same environment) and checks
/// it; a config that would not start is refused and the running one stays.
/// The log level, the devices and the stations are applied; every other
/// changed key is named as needing a restart. `running` is the merged table
/// the process runs with.
async fn reload_on_sighup(
    mut hup: tokio::signal::unix::Signal,
    given: Option<PathBuf>,
    mut running: dockline_host::config::Table,
    log: dockline_host::logging::LogHandle,
    agent: tokio::sync::mpsc::Sender<dockline_agent::Reload>,
) {
    while hup.recv().await.is_some() {
        tracing::info!("SIGHUP: reloading the config");
        let _ = dockline_host::service::notify("RELOADING=1");
        reload_once(given.as_deref(), &mut running, &log, &agent).await;
        let _ = dockline_host::service::notify("READY=1");
    }
}

/// One reload; see [`reload_on_sighup`].
async fn reload_once(
    given: Option<&Path>,
    running: &mut dockline_host::config::Table,
    log: &dockline_host::logging::LogHandle,
    agent: &tokio::sync::mpsc::Sender<dockline_agent::Reload>,
) {
    let loaded = match load_config(given) {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "reload refused; the running config stays");
            return;
        }
    };
    if let Err(e) = loaded.config.check() {
        tracing::warn!(error = %e, config = %loaded.origin, "reload refused; the running config stays");
        return;
    }
    let changed = dockline_host::config::changed_keys(running, &loaded.table);
    let mut applied = vec!["log"];
    if changed.iter().any(|k| LIVE_KEYS.contains(&k.as_str())) {
        let (done, report) = tokio::sync::oneshot::channel();
        let sent = agent
            .send(dockline_agent::Reload {
                config: loaded.config.clone(),
                done,
            })
            .await;
        match (sent, report.await) {
            (Ok(()), Ok(report)) => {
                report.log();
                applied.push("stations");
                // A device that did not start is tried again by the next
                // reload, even of the same file.
                if report.complete() {
                    applied.push("devices");
                }
            }
            _ => tracing::warn!("reload: the agent is stopping; devices and stations not applied"),
        }
    }
    let rest: Vec<String> = changed
        .into_iter()
        .filter(|k| !LIVE_KEYS.contains(&k.as_str()))
        .collect();
    dockline_host::logging::log_reload(log, &loaded.config.log, &rest, &loaded.origin);
    for key in applied {
        match loaded.table.get(key) {
            Some(section) => running.insert(key.into(), section.clone()),
            None => running.remove(key),
        };
    }
}

/// `check-config`: the merged config, secrets redacted, then the checks a
/// start would run.
fn check_config(given: Option<&Path>) -> ExitCode {
    let loaded = match load_config(given) {
        Ok(l) => l,
        Err(e) => return fail(format!("{e:#}")),
    };
    println!("# dockline-agent {}", dockline_agent::LONG_VERSION);
    println!("# config: {}", loaded.origin);
    if !loaded.ignored.is_empty() {
        println!(
            "# ignored (name no config key): {}",
            loaded.ignored.join(", ")
        );
    }
    println!("# the effective config: every key, defaults included; secrets are <redacted>");
    match dockline_host::config::effective_toml(&loaded.config) {
        Ok(text) => print!("{text}"),
        Err(e) => return fail(e),
    }
    match loaded.config.check() {
        Ok(()) => {
            println!("# ok: the config is valid");
            ExitCode::SUCCESS
        }
        Err(e) => fail(format!("config {}: {e}", loaded.origin)),
    }
}

/// Runs `decode`; reports errors on stderr and returns the exit code.
fn run_decode(args: &DecodeArgs) -> ExitCode {
    let options = dockline_agent::devices::DecoderOptions {
        toledo_checksum: args.checksum,
    };
    let stdout = std::io::stdout();
    let out = std::io::BufWriter::new(stdout.lock());
    let result = match &args.file {
        Some(path) => std::fs::File::open(path)
            .with_context(|| format!("cannot open the capture {}", path.display()))
            .and_then(|f| {
                dockline_agent::decode::decode_stream(f, out, args.device, options)
                    .with_context(|| format!("cannot read the capture {}", path.display()))
            }),
        None => dockline_agent::decode::decode_stream(
            std::io::stdin().lock(),
            out,
            args.device,
            options,
        )
        .context("cannot read the capture from stdin"),
    };
    match result {
        Ok(summary) if summary.errors == 0 => ExitCode::SUCCESS,
        Ok(summary) => {
            eprintln!(
                "dockline-agent decode: {} readings, {} rejected frames or device errors (see the \"error\" lines)",
                summary.readings, summary.errors
            );
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("dockline-agent decode: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Runs a doctor action; reports errors on stderr and returns the exit code.
fn run_doctor(args: DoctorArgs, outer_config: Option<&Path>) -> ExitCode {
    match doctor_action(args, outer_config) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("dockline-agent doctor: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// Runs `token`: prints the API token on stdout.
fn run_token(args: &WhereArgs, outer_config: Option<&Path>) -> ExitCode {
    let token = match &args.data_dir {
        Some(dir) => dockline_agent::api::token::load_or_create(dir)
            .with_context(|| format!("cannot read or make the token in {}", dir.display())),
        None => load_config(args.config.as_deref().or(outer_config))
            .map(|loaded| loaded.config)
            .and_then(|config| match config.api.token {
                Some(t) => Ok(t),
                None => dockline_agent::api::token::load_or_create(&config.data_dir).with_context(
                    || {
                        format!(
                            "cannot read or make the token in {}",
                            config.data_dir.display()
                        )
                    },
                ),
            }),
    };
    match token {
        Ok(t) => {
            println!("{}", t.expose());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("dockline-agent token: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Runs `rotate-key`.
fn run_rotate_key(args: &WhereArgs, outer_config: Option<&Path>) -> ExitCode {
    let dir = match &args.data_dir {
        Some(dir) => Ok(dir.clone()),
        None => load_config(args.config.as_deref().or(outer_config)).map(|l| l.config.data_dir),
    };
    let rotated = dir.and_then(|dir| {
        dockline_agent::outbox::keys::rotate(&dir)
            .with_context(|| format!("cannot rotate the payload key in {}", dir.display()))
    });
    match rotated.and_then(|r| serde_json::to_string(&r).context("cannot print the report")) {
        Ok(text) => {
            println!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("dockline-agent rotate-key: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn data_dir(args: &DoctorArgs, outer_config: Option<&Path>) -> Result<PathBuf, DoctorError> {
    if let Some(dir) = &args.data_dir {
        return Ok(dir.clone());
    }
    let file = args.config.as_deref().or(outer_config);
    let loaded = load_config(file).map_err(|e| {
        DoctorError::Usage(format!(
            "{e:#}; or say where the outbox is with --data-dir DIR"
        ))
    })?;
    Ok(loaded.config.data_dir)
}

fn doctor_action(args: DoctorArgs, outer_config: Option<&Path>) -> Result<u8, DoctorError> {
    let path = doctor::outbox_path(&data_dir(&args, outer_config)?);
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let code = match args.action {
        DoctorAction::Check { json: as_json } => {
            let report = doctor::check(&path)?;
            if as_json {
                json(&mut out, &report)?;
            } else {
                write!(out, "{report}")?;
            }
            if report.healthy { 0 } else { 1 }
        }
        DoctorAction::Stats { json: as_json } => {
            let stats = doctor::stats(&path)?;
            if as_json {
                json(&mut out, &stats)?;
            } else {
                write!(out, "{stats}")?;
            }
            0
        }
        DoctorAction::List {
            state,
            limit,
            json: as_json,
        } => {
            let receipts = doctor::list(&path, state.map(State::as_str), limit)?;
            if as_json {
                json(&mut out, &receipts)?;
            } else {
                doctor::write_receipts(&mut out, &receipts)?;
            }
            0
        }
        DoctorAction::Export { from, to } => {
            let done = doctor::export(&path, from, to, &mut out)?;
            if done.errors > 0 {
                eprintln!(
                    "dockline-agent doctor: {} events exported, {} rows could not be decoded (lines with \"error\")",
                    done.events, done.errors
                );
            }
            0
        }
    };
    out.flush()?;
    Ok(code)
}

fn json(out: &mut impl Write, value: &impl serde::Serialize) -> Result<(), DoctorError> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| DoctorError::Usage(format!("cannot print JSON: {e}")))?;
    writeln!(out, "{text}")?;
    Ok(())
}
