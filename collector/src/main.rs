//! `dockline-collector --config collector.toml`: loads the config (file, then
//! `DOCKLINE_*` environment overrides), sets up logging and runs the collector
//! until Ctrl-C or SIGTERM.
//!
//! `dockline-collector --config collector.toml dlq list|show|replay|discard`
//! reads the same config to find the inbox and works on its dead letters;
//! it runs beside a running collector or without one.
//!
//! `dockline-collector keygen --out DIR` writes a command signing key pair
//! (see `dockline_collector::ingest::commands`).
//!
//! `dockline-collector certs ca|server|client` issues the CA, broker and
//! device certificates of mutual TLS (see `dockline_collector::certs`).
//!
//! `dockline-collector check-config` prints the effective config (file plus
//! overrides, secrets redacted) and checks it as a start would.
//!
//! Without `-c` the config is `/etc/dockline/collector.toml` when it exists.
//! Logs go to stderr as text or JSON (`--log-format`, `[log] format`).
//!
//! `dockline-collector hash-password < pw.txt` prints the argon2id hash of a
//! dashboard/API user's password (see `dockline_collector::http::auth`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use dockline_collector::Config;
use dockline_collector::config::DEFAULT_CONFIG_PATH;
use dockline_collector::delivery::dlq::{self, DlqError};
use dockline_collector::reload::{self, LiveSections, Reloader};
use dockline_host::config::Loaded;
use dockline_host::logging::LogFormat;

/// dockline collector: ingest, inbox, ERP delivery, acks.
#[derive(Debug, Parser)]
#[command(version = dockline_collector::LONG_VERSION, about)]
struct Args {
    /// The collector's TOML config (see collector.example.toml) [default:
    /// /etc/dockline/collector.toml when it exists]; DOCKLINE_* variables
    /// naming its keys override them, e.g. DOCKLINE_MQTT__PORT=1884.
    #[arg(long, short, value_name = "PATH", global = true)]
    config: Option<PathBuf>,
    /// Log lines as `text` or `json` (overrides `[log] format`); on stderr.
    #[arg(long, value_name = "text|json", global = true)]
    log_format: Option<LogFormat>,
    /// What to do; without a command the collector runs.
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Dead letters: events ERP delivery gave up on. Each blocks its
    /// device's lane until it is replayed or discarded.
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// Holes: sequences missing below a stored one, which hold their
    /// device's delivery. The gap audit asks the device for them; these
    /// commands list them, or give them up as lost.
    #[command(subcommand)]
    Holes(HolesCommand),
    /// Writes a new Ed25519 key pair for signing commands to devices:
    /// DIR/command-signing.key (mode 0600; point [commands] signing_key_file
    /// at it) and DIR/command-verify.pub (every agent's [commands]
    /// verify_key). Prints the public key.
    Keygen {
        /// The folder to write the two files into (created if missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Reads a password from standard input (one line) and prints its
    /// argon2id hash for `[[api.users]] password_hash`.
    HashPassword,
    /// Prints the effective config (file plus DOCKLINE_* overrides, secrets
    /// redacted) and checks it as a start would, without starting. Exit
    /// codes: 0 valid, 2 it would not start (the reason on stderr).
    CheckConfig,
    /// Issues the certificates of mutual TLS between the agents, the
    /// collector and the MQTT broker: a fleet CA, the broker's certificate
    /// and one client certificate per device (see the README's security
    /// section for the Mosquitto side).
    #[command(subcommand)]
    Certs(dockline_collector::certs::CertsCommand),
}

#[derive(Debug, Subcommand)]
enum DlqCommand {
    /// Lists open dead letters (blocked lanes), newest first.
    List {
        /// Also list replayed and discarded ones.
        #[arg(long)]
        all: bool,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Shows one dead letter as JSON: the original event, every attempt,
    /// the reason.
    Show {
        /// The dead letter's id (from `dlq list`).
        id: i64,
    },
    /// Re-queues the event with its original id and idempotency key (fix the
    /// data in the ERP first) and unblocks its lane.
    Replay {
        /// The dead letter's id (from `dlq list`).
        id: i64,
    },
    /// Gives up on the event (the device is told it was rejected) and
    /// unblocks its lane.
    Discard {
        /// The dead letter's id (from `dlq list`).
        id: i64,
        /// Why, kept with the dead letter and in the device's verdict.
        #[arg(long, default_value = "discarded with dockline-collector dlq discard")]
        note: String,
    },
}

#[derive(Debug, Subcommand)]
enum HolesCommand {
    /// Lists every device and epoch with open holes.
    List,
    /// Closes the open holes of a device as lost (all its epochs, or one):
    /// the events behind them are delivered, the holes are counted in
    /// `holes_lost` and printed. For a device that can never send them (its
    /// outbox was lost, or a forged batch opened them).
    Close {
        /// The device id.
        #[arg(long)]
        device: String,
        /// Only this epoch.
        #[arg(long)]
        epoch: Option<u64>,
    },
}

fn main() -> ExitCode {
    let mut args = Args::parse();
    if let Some(Command::Keygen { out }) = &args.command {
        return match dockline_collector::ingest::commands::generate(out) {
            Ok(public) => {
                println!(
                    "wrote {}/{} (keep it secret) and {}/{}\nagents: [commands] verify_key = \"{public}\"",
                    out.display(),
                    dockline_collector::ingest::commands::SIGNING_KEY_FILE,
                    out.display(),
                    dockline_collector::ingest::commands::VERIFY_KEY_FILE
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("dockline-collector: error: {e}");
                ExitCode::from(2)
            }
        };
    }
    if let Some(Command::Certs(cmd)) = &args.command {
        return match dockline_collector::certs::run_command(cmd) {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("dockline-collector: error: {e}");
                ExitCode::from(2)
            }
        };
    }
    if let Some(Command::CheckConfig) = &args.command {
        return check_config(&args);
    }
    if let Some(Command::HashPassword) = &args.command {
        return hash_password();
    }
    if let Some(Command::Holes(cmd)) = args.command.take_if(|c| matches!(c, Command::Holes(_))) {
        return match holes_command(args, cmd) {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("dockline-collector: error: {e:#}");
                ExitCode::from(2)
            }
        };
    }
    if let Some(Command::Dlq(cmd)) = args.command.take() {
        return match dlq_command(args, cmd) {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("dockline-collector: error: {e:#}");
                // 1: the dead letter is not there or already resolved; 2: setup.
                match e.downcast_ref::<DlqError>() {
                    Some(DlqError::NotFound(_) | DlqError::AlreadyResolved { .. }) => {
                        ExitCode::from(1)
                    }
                    _ => ExitCode::from(2),
                }
            }
        };
    }
    match start(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: the chain joined, naming the file and the problem.
            eprintln!("dockline-collector: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// `hash-password`: one line from stdin → an argon2id PHC string on stdout.
fn hash_password() -> ExitCode {
    let mut line = String::new();
    if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        eprintln!("password (the line is echoed; pipe it in to avoid that):");
    }
    if let Err(e) = std::io::stdin().read_line(&mut line) {
        eprintln!("dockline-collector: error: cannot read the password from stdin: {e}");
        return ExitCode::from(2);
    }
    let password = line.trim_end_matches(['\r', '\n']);
    if password.len() < 8 {
        eprintln!(
            "dockline-collector: error: the password is shorter than 8 characters; choose a longer one"
        );
        return ExitCode::from(2);
    }
    match dockline_collector::http::auth::hash_password(password) {
        Ok(hash) => {
            println!("{hash}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("dockline-collector: error: cannot hash the password: {e}");
            ExitCode::from(2)
        }
    }
}

/// Loads the config (`-c`, else the default path when it exists, else the
/// `DOCKLINE_*` variables alone) without the checks.
fn load_unchecked(args: &Args) -> anyhow::Result<Loaded<Config>> {
    let file =
        dockline_host::config::file_to_load(args.config.as_deref(), Path::new(DEFAULT_CONFIG_PATH));
    let loaded = dockline_host::config::load_report(
        file.as_deref(),
        dockline_collector::ingest::commands::with_env_aliases(std::env::vars()),
    );
    match (loaded, file) {
        (Ok(l), _) => Ok(l),
        (Err(e), Some(_)) => Err(e.into()),
        (Err(e), None) => Err(anyhow::Error::from(e).context(format!(
            "no config file (give one with -c, or create {DEFAULT_CONFIG_PATH})"
        ))),
    }
}

/// Loads and checks the config exactly as the collector does.
fn load_checked(args: &Args) -> anyhow::Result<Loaded<Config>> {
    let loaded = load_unchecked(args)?;
    loaded
        .config
        .check_for_start()
        .with_context(|| format!("config {}", loaded.origin))?;
    Ok(loaded)
}

/// Loads and checks the config; the typed value only.
fn load_config(args: &Args) -> anyhow::Result<Config> {
    load_checked(args).map(|l| l.config)
}

/// `check-config`: the effective config (file, overrides and defaults),
/// secrets redacted, then the checks a start makes.
fn check_config(args: &Args) -> ExitCode {
    let loaded = match load_unchecked(args) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("dockline-collector: error: {e:#}");
            return ExitCode::from(2);
        }
    };
    println!("# dockline-collector {}", dockline_collector::LONG_VERSION);
    println!("# config: {}", loaded.origin);
    if !loaded.ignored.is_empty() {
        println!(
            "# ignored (name no config key): {}",
            loaded.ignored.join(", ")
        );
    }
    println!("# the effective config: every key, defaults included; secrets are <redacted>");
    match loaded.config.effective_toml() {
        Ok(text) => print!("{text}"),
        Err(e) => {
            eprintln!("dockline-collector: error: {e}");
            return ExitCode::from(2);
        }
    }
    match loaded.config.check_for_start() {
        Ok(()) => {
            println!("# ok: the config is valid");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("dockline-collector: error: config {}: {e}", loaded.origin);
            ExitCode::from(2)
        }
    }
}

/// Runs a `dlq` subcommand; returns what to print.
fn dlq_command(args: Args, cmd: DlqCommand) -> anyhow::Result<String> {
    let config = load_config(&args)?;
    let mut inbox = dlq::open_existing(&config.inbox, &config.inbox_path())?;
    let pretty = |v: &serde_json::Value| -> anyhow::Result<String> {
        Ok(format!("{}\n", serde_json::to_string_pretty(v)?))
    };
    match cmd {
        DlqCommand::List { all, json } => {
            let items = inbox.dead_letters(all, dlq::LIST_LIMIT)?;
            if json {
                pretty(&serde_json::to_value(&items)?)
            } else {
                Ok(dlq::list_text(&items))
            }
        }
        DlqCommand::Show { id } => match inbox.dead_letter(id)? {
            Some(dl) => pretty(&dlq::show_json(&dl)),
            None => Err(DlqError::NotFound(id).into()),
        },
        DlqCommand::Replay { id } => {
            let done = dlq::resolve(&mut *inbox, id, None, dockline_collector::now_ms())?;
            Ok(format!(
                "dead letter {id} replayed: the event is queued again with its original id; a running collector posts it within a few seconds\n{}",
                pretty(&done)?
            ))
        }
        DlqCommand::Discard { id, note } => {
            let done = dlq::resolve(&mut *inbox, id, Some(&note), dockline_collector::now_ms())?;
            Ok(format!("dead letter {id} discarded\n{}", pretty(&done)?))
        }
    }
}

/// Runs a `holes` subcommand; returns what to print.
fn holes_command(args: Args, cmd: HolesCommand) -> anyhow::Result<String> {
    let config = load_config(&args)?;
    let mut inbox = dlq::open_existing(&config.inbox, &config.inbox_path())?;
    match cmd {
        HolesCommand::List => {
            let holes = inbox.open_holes()?;
            if holes.is_empty() {
                return Ok("no open holes\n".into());
            }
            let mut out = String::new();
            for h in holes {
                out.push_str(&format!(
                    "{} epoch {}: complete up to {}, missing {:?}\n",
                    h.device, h.epoch, h.complete_up_to, h.holes
                ));
            }
            Ok(out)
        }
        HolesCommand::Close { device, epoch } => {
            let device = dockline_protocol::DeviceId::new(device)?;
            let closed = dockline_collector::ingest::gaps::close_all(
                &mut *inbox,
                &device,
                epoch,
                dockline_collector::now_ms(),
            )?;
            if closed.is_empty() {
                return Ok(format!("{device}: no open holes\n"));
            }
            let mut out = String::new();
            for (ep, ranges) in closed {
                let n: u64 = ranges.iter().map(|(lo, hi)| hi - lo + 1).sum();
                out.push_str(&format!(
                    "{device} epoch {ep}: closed as lost {ranges:?} ({n} events); a running collector delivers what waited behind them\n"
                ));
            }
            Ok(out)
        }
    }
}

fn start(args: Args) -> anyhow::Result<()> {
    let loaded = load_checked(&args)?;
    let format = args
        .log_format
        .or(loaded.config.log.format)
        .unwrap_or_default();
    let log =
        dockline_host::logging::init(format, &loaded.config.log).map_err(anyhow::Error::msg)?;
    tracing::info!(
        version = dockline_collector::VERSION,
        commit = dockline_collector::BUILD_COMMIT,
        config = %loaded.origin,
        "dockline-collector starting"
    );
    for var in &loaded.ignored {
        tracing::debug!(variable = %var, "environment variable names no config key; ignored");
    }
    let config = loaded.config;
    // What a reload compares with: the effective config, defaults included.
    let running = config.effective_table().unwrap_or(loaded.table);
    let given = args.config.clone();
    let (reloader, reloads) = dockline_collector::reload::channel();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let result = runtime.block_on(async move {
        // Installed before the collector starts, so an early SIGHUP cannot kill it.
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(hup) => {
                tokio::spawn(reload_on_sighup(hup, given, running, log, reloader));
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP; reload needs a restart")
            }
        }
        dockline_collector::run_reloadable(config, dockline_host::signal::shutdown(), reloads)
            .await
            .map_err(anyhow::Error::from)
    });
    // Every commit is already durable; do not let a stuck connection delay exit.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    result
}

/// SIGHUP: reads the config again (same file, same environment) and checks
/// it as a start would; a config that would not start is refused and the
/// running one stays. The device registry, the API's tokens and users and
/// the log level are applied (see `dockline_collector::reload`); every other
/// changed key is named as needing a restart. `running` is the effective
/// config the process runs with (defaults included), so a key written out
/// with the value it already had changes nothing.
async fn reload_on_sighup(
    mut hup: tokio::signal::unix::Signal,
    given: Option<PathBuf>,
    mut running: dockline_host::config::Table,
    log: dockline_host::logging::LogHandle,
    reloader: Reloader,
) {
    let args = Args {
        config: given,
        log_format: None,
        command: None,
    };
    while hup.recv().await.is_some() {
        tracing::info!("SIGHUP: reloading the config");
        let _ = dockline_host::service::notify("RELOADING=1");
        reload_once(&args, &mut running, &log, &reloader).await;
        let _ = dockline_host::service::notify("READY=1");
    }
}

/// One reload; see [`reload_on_sighup`].
async fn reload_once(
    args: &Args,
    running: &mut dockline_host::config::Table,
    log: &dockline_host::logging::LogHandle,
    reloader: &Reloader,
) {
    let loaded = match load_checked(args) {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "reload refused; the running config stays");
            return;
        }
    };
    let config = &loaded.config;
    let sections = LiveSections {
        api: config.api.clone(),
        devices: config.devices.clone(),
        allow_unknown_devices: config.allow_unknown_devices,
    };
    match reloader.apply(sections).await {
        Ok(applied) => log_applied(&applied),
        Err(e) => {
            tracing::warn!(error = %e, "reload refused; the running config stays");
            return;
        }
    }
    let effective = config.effective_table().unwrap_or(loaded.table);
    let restart = reload::restart_needed(running, &effective);
    dockline_host::logging::log_reload(log, &config.log, &restart, &loaded.origin);
    reload::adopt_live(running, &effective);
}

/// Logs what a reload changed in the device registry and the credentials
/// (names only, never a secret).
fn log_applied(applied: &reload::Applied) {
    let names = |ids: &[String]| ids.join(", ");
    let d = &applied.devices;
    if d.is_empty() {
        tracing::info!("reload: devices unchanged");
    } else {
        let list = |ids: &[dockline_protocol::DeviceId]| {
            ids.iter()
                .map(|d| d.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        tracing::info!(added = %list(&d.added), removed = %list(&d.removed),
            moved = %list(&d.moved), allow_unknown_devices = ?d.allow_unknown,
            "reload: device registry applied");
    }
    let c = &applied.credentials;
    if c.is_empty() {
        tracing::info!("reload: API tokens and users unchanged");
    } else {
        tracing::info!(tokens_added = %names(&c.tokens_added),
            tokens_removed = %names(&c.tokens_removed), users_added = %names(&c.users_added),
            users_removed = %names(&c.users_removed), users_changed = %names(&c.users_changed),
            sessions_ended = c.sessions_ended, "reload: API tokens and users applied");
    }
}
