//! `dockline-collector --config collector.toml`: loads the config (file, then
//! `DOCKLINE_*` environment overrides), sets up logging and runs the collector
//! until Ctrl-C or SIGTERM.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use dockline_collector::Config;
use tracing_subscriber::EnvFilter;

/// dockline collector: ingest, inbox, ERP delivery, acks.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// The collector's TOML config (see collector.example.toml); DOCKLINE_*
    /// variables override its keys, e.g. DOCKLINE_MQTT__PORT=1884.
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match start(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: the chain joined, naming the file and the problem.
            eprintln!("dockline-collector: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn start(args: Args) -> anyhow::Result<()> {
    let origin = args.config.as_ref().map_or_else(
        || "(no --config file)".to_string(),
        |p| p.display().to_string(),
    );
    let config: Config = dockline_protocol::config::load(args.config.as_deref(), std::env::vars())?;
    config.check().with_context(|| format!("config {origin}"))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let result = runtime.block_on(async {
        dockline_collector::run(config, shutdown_signal())
            .await
            .map_err(anyhow::Error::from)
    });
    // Every commit is already durable; do not let a stuck connection delay exit.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    result
}

/// Completes on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
