//! `dockline-agent`: parses flags, loads config, runs the agent.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;

/// The dockline agent for a warehouse gateway or delivery handheld.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Config file (TOML); `DOCKLINE_*` environment variables override it
    /// (`DOCKLINE_MQTT__HOST=broker`).
    #[arg(long, short)]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    let config: dockline_agent::Config =
        dockline_protocol::config::load(cli.config.as_deref(), std::env::vars())
            .context("cannot start the agent")?;
    dockline_agent::run(config, shutdown_signal())
        .await
        .context("the agent stopped")?;
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
