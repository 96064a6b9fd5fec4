//! `dockline-agent`: parses flags, loads config, runs the agent (or, with
//! `doctor`, inspects its outbox read-only; with `decode`, decodes a device
//! capture).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use dockline_agent::doctor::{self, DoctorError};

/// The dockline agent for a warehouse gateway or delivery handheld.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Config file (TOML); `DOCKLINE_*` environment variables override it
    /// (`DOCKLINE_MQTT__HOST=broker`).
    #[arg(long, short)]
    config: Option<PathBuf>,
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

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Doctor(args)) => return Ok(run_doctor(args, cli.config.as_deref())),
        Some(Command::Decode(args)) => return Ok(run_decode(&args)),
        Some(Command::Token(args)) => return Ok(run_token(&args, cli.config.as_deref())),
        Some(Command::RotateKey(args)) => {
            return Ok(run_rotate_key(&args, cli.config.as_deref()));
        }
        None => {}
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let config: dockline_agent::Config = dockline_protocol::config::load(
        cli.config.as_deref(),
        dockline_agent::config::with_env_aliases(std::env::vars()),
    )
    .context("cannot start the agent")?;
    dockline_agent::run(config, shutdown_signal())
        .await
        .context("the agent stopped")?;
    Ok(ExitCode::SUCCESS)
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
            .map_err(|e| anyhow::anyhow!("{e}"))
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
        None => load_config(args.config.as_deref().or(outer_config)).map(|c| c.data_dir),
    };
    let rotated = dir.map_err(|e| anyhow::anyhow!("{e}")).and_then(|dir| {
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
    Ok(load_config(args.config.as_deref().or(outer_config))?.data_dir)
}

/// Loads the config for a subcommand, with a usage error that says how to
/// point at the data otherwise.
fn load_config(file: Option<&Path>) -> Result<dockline_agent::Config, DoctorError> {
    let config: dockline_agent::Config = dockline_protocol::config::load(
        file,
        dockline_agent::config::with_env_aliases(std::env::vars()),
    )
    .map_err(|e| {
        DoctorError::Usage(match file {
            Some(_) => format!("cannot load the config: {e}"),
            None => format!(
                "say where the outbox is: --data-dir DIR or --config agent.toml \
                     (without them the config comes from DOCKLINE_* variables alone, and: {e})"
            ),
        })
    })?;
    Ok(config)
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

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}
