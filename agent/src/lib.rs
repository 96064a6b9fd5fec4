//! dockline-agent: one warehouse gateway or delivery handheld.
//!
//! # Layout
//!
//! - [`config`]: `agent.toml` + `DOCKLINE_*` overrides.
//! - [`outbox`]: the SQLite outbox (sequence, commit-before-ack, receipts).
//! - [`uplink`]: MQTT upload of batches, acks and verdicts; [`uplink::state`]
//!   is its I/O-free state machine.
//! - [`api`]: the local HTTP API for the handheld app.
//! - [`app`]: the handheld app itself, served at `/app/`.
//! - [`ops_http`]: `/healthz`, `/readyz`, `/metrics` and `/v1/version` on it.
//! - [`doctor`]: read-only inspection of an outbox file (`dockline-agent doctor`).
//! - [`devices`]: device sources (serial scanners, scales, GNSS, bridges; I2C
//!   load cells) and the stream decoder behind them.
//! - [`decode`]: decoding a raw capture to JSON lines (`dockline-agent decode`).
//! - [`stations`]: station rules (pick, pack, dock door, vehicle) that turn
//!   device readings into business events; [`priority`] picks their class.
//!
//! [`run`] wires them together; `main.rs` only parses flags and loads config.

pub mod api;
pub mod app;
pub mod config;
pub mod decode;
pub mod devices;
pub mod doctor;
pub mod ops_http;
pub mod outbox;
pub mod priority;
pub mod stations;
pub mod uplink;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

pub use config::Config;

/// The agent's version (the crate's).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The git commit the binary was built from (`unknown` outside a checkout).
pub const BUILD_COMMIT: &str = env!("DOCKLINE_BUILD_COMMIT");
/// `0.1.0 (commit 1a2b3c4d5e6f)`, as `--version` prints it.
pub const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("DOCKLINE_BUILD_COMMIT"),
    ")"
);
use tokio::sync::watch;

/// Why the agent could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The configuration is inconsistent.
    #[error("config: {0}")]
    Config(String),
    /// The data folder cannot be created or written by this user.
    #[error(
        "data_dir {path} is not writable by this user ({source}); create it for the agent's user \
         (`install -d -o dockline -g dockline {path}`; the Debian package does this for \
         /var/lib/dockline/agent) or set data_dir to a folder this user may write"
    )]
    DataDir {
        /// The folder.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The outbox could not be opened.
    #[error(transparent)]
    Outbox(#[from] outbox::OutboxError),
    /// The local API could not listen.
    #[error(
        "cannot listen on {addr} for the local API: {source}; pick another [api] listen address"
    )]
    Listen {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// A device reader thread could not start.
    #[error(transparent)]
    Devices(#[from] devices::SpawnError),
    /// The API token file could not be read or made.
    #[error(
        "cannot read or make the API token file {path}: {source}; check the data folder's owner and permissions"
    )]
    TokenFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The `api.addr` file could not be written.
    #[error("cannot write {path}: {source}")]
    AddrFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

async fn stopped(mut rx: watch::Receiver<bool>) {
    // An error means the sender is gone, which also means stop.
    let _ = rx.wait_for(|stop| *stop).await;
}

/// A new config for the running agent (SIGHUP), checked by the sender
/// ([`Config::check`]); what was applied comes back on `done`.
#[derive(Debug)]
pub struct Reload {
    /// The new config; only its `devices` and `stations` are applied.
    pub config: Config,
    /// Where the report goes.
    pub done: tokio::sync::oneshot::Sender<Reloaded>,
}

/// What a reload applied to the devices and the stations.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Reloaded {
    /// Device threads added, removed, restarted, kept, failed.
    pub devices: devices::DevicesReloaded,
    /// Stations added, removed, restarted, kept.
    pub stations: stations::StationsReloaded,
}

impl Reloaded {
    /// Whether every device that should run now runs.
    pub fn complete(&self) -> bool {
        self.devices.failed.is_empty()
    }

    /// Logs what changed (info), what was dropped with a station (warn) and
    /// what failed (error), one line each.
    pub fn log(&self) {
        let (d, s) = (&self.devices, &self.stations);
        let list = |v: &[String]| v.join(", ");
        if !(d.added.is_empty() && d.removed.is_empty() && d.restarted.is_empty()) {
            tracing::info!(added = %list(&d.added), removed = %list(&d.removed),
                restarted = %list(&d.restarted), unchanged = %list(&d.unchanged),
                "reload: devices applied");
        }
        if !(s.added.is_empty() && s.removed.is_empty() && s.restarted.is_empty()) {
            tracing::info!(added = %list(&s.added), unchanged = %list(&s.unchanged),
                "reload: stations applied");
        }
        for r in s.restarted.iter().chain(&s.removed) {
            tracing::warn!(station = %r, "reload: station restarted or removed; what it was doing is dropped, scan again");
        }
        for f in &d.failed {
            tracing::error!(device = %f, "reload: device NOT started; the next reload tries again");
        }
    }
}

/// Runs the agent until `shutdown` resolves.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), AgentError> {
    // No sender: nothing ever reloads.
    let (_, reloads) = tokio::sync::mpsc::channel(1);
    run_reloadable(config, shutdown, reloads).await
}

/// Runs the agent until `shutdown` resolves, applying each [`Reload`]'s
/// devices and stations as it comes: device threads are stopped, started
/// or kept ([`devices::Sources::reload`]), then, once the readings they
/// decoded have been taken by the feed, the stations follow
/// ([`stations::StationEngine::reload`]).
pub async fn run_reloadable(
    config: Config,
    shutdown: impl Future<Output = ()> + Send,
    mut reloads: tokio::sync::mpsc::Receiver<Reload>,
) -> Result<(), AgentError> {
    config.check().map_err(AgentError::Config)?;
    check_writable(&config.data_dir)?;
    let outbox = outbox::Outbox::open(
        &config.data_dir,
        config.device.clone(),
        config.outbox.clone(),
    )?;
    let listener = tokio::net::TcpListener::bind(config.api.listen)
        .await
        .map_err(|source| AgentError::Listen {
            addr: config.api.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| AgentError::Listen {
        addr: config.api.listen,
        source,
    })?;
    // The token in force: the configured one, else the per-install file's;
    // made before api.addr appears, so a client that waits for the address
    // finds the token too.
    let token =
        match (&config.api.token, config.api.require_token) {
            (Some(t), _) => Some(t.clone()),
            (None, true) => Some(api::token::load_or_create(&config.data_dir).map_err(
                |source| AgentError::TokenFile {
                    path: api::token::path(&config.data_dir),
                    source,
                },
            )?),
            (None, false) => None,
        };
    // Written atomically (temp file + rename, mode 0600) so a reader never
    // sees half an address.
    let addr_file = config.data_dir.join("api.addr");
    outbox::keys::write_private(&addr_file, addr.to_string().as_bytes())?;
    let guard = Arc::new(api::Guard::new(&config.api, token));
    tracing::info!(
        device = %config.device, site = %config.site, api = %format!("http://{addr}"),
        app = %format!("http://{addr}/app/"), api_token_required = config.api.require_token || config.api.token.is_some(),
        outbox = %config.data_dir.join("outbox.db").display(), epoch = outbox.epoch(),
        commands_verified = !config.commands.verify_key.keys().is_empty(),
        "agent started"
    );
    // Under systemd (Type=notify): ready once the outbox is open and the API
    // listens. A no-op elsewhere.
    if let Err(e) = dockline_host::service::notify("READY=1") {
        tracing::warn!(error = %e, "cannot tell systemd the agent is ready");
    }

    let presence = devices::Presence::new(&config.devices);
    // Bounded: a slow outbox makes the device threads wait, not grow a queue.
    let (reading_tx, reading_rx) = tokio::sync::mpsc::channel(256);
    let sources = devices::Sources::spawn(&config.devices, presence.clone(), reading_tx)?;
    let scale_commander = sources.scale_commander();
    let stations = stations::Stations::new(stations::StationEngine::new(
        &config.stations,
        &config.devices,
    ));

    let (stop_tx, stop_rx) = watch::channel(false);
    let link = Arc::new(uplink::LinkStatus::default());
    let media = Arc::new(outbox::media::MediaStore::open(
        &config.data_dir,
        &config.media,
    )?);
    let uplink = tokio::spawn(uplink::run(
        config.clone(),
        outbox.clone(),
        media.clone(),
        link.clone(),
        presence.clone(),
        stopped(stop_rx.clone()),
    ));
    let pruner = tokio::spawn(prune_receipts(outbox.clone(), stopped(stop_rx.clone())));
    let readings = tokio::spawn(stations::feed::feed_readings(
        outbox.clone(),
        config.clock,
        stations.clone(),
        scale_commander,
        reading_rx,
    ));
    let ops = ops_http::Ops::new(
        outbox.clone(),
        link.clone(),
        presence.clone(),
        config.data_dir.clone(),
    );
    let state = api::ApiState {
        outbox,
        link,
        devices: presence,
        stations: stations.clone(),
        site: config.site.to_string(),
        clock: config.clock,
        task_keys: Arc::default(),
        media,
        budget_bytes: config.outbox.budget_bytes,
    };
    let refusals = guard.refusals.clone();
    let limits = api::Limits {
        max_connections: config.api.max_connections,
        header_timeout: std::time::Duration::from_millis(config.api.header_timeout_ms),
    };
    let api = tokio::spawn(api::serve(
        listener,
        api::router(state, guard)
            // Outermost: the ops state every request can read, then the
            // counter of answers by route and status (refusals too).
            .layer(axum::middleware::from_fn(ops_http::count_requests))
            .layer(axum::Extension(ops)),
        limits,
        refusals,
        stopped(stop_rx),
    ));

    tokio::pin!(shutdown);
    let mut sources = sources;
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some(reload) = reloads.recv() => {
                let Reload { config: new, done } = reload;
                let new = Arc::new(new);
                let for_devices = new.clone();
                let (back, devices) = tokio::task::spawn_blocking(move || {
                    let done = sources.reload(&for_devices.devices);
                    (sources, done)
                })
                .await
                .map_err(|e| AgentError::Config(format!("device reload failed: {e}")))?;
                sources = back;
                sources.drained(std::time::Duration::from_secs(2)).await;
                let stations = stations.reload(&new.stations, &new.devices);
                let _ = done.send(Reloaded { devices, stations });
            }
        }
    }
    tracing::info!("shutting down: finishing requests, saying goodbye to the broker");
    let _ = stop_tx.send(true);
    // Device threads first, so their last readings are stored before the
    // outbox handle goes away; joining blocks, hence spawn_blocking.
    let _ = tokio::task::spawn_blocking(move || sources.stop()).await;
    let _ = readings.await;
    if let Ok(Err(e)) = api.await {
        tracing::warn!(error = %e, "local API stopped with an error");
    }
    let _ = uplink.await;
    let _ = pruner.await;
    Ok(())
}

/// Creates the data folder if needed and proves this user can write in it,
/// so a read-only or foreign-owned folder is named with a fix instead of
/// SQLite's bare "unable to open database file".
pub(crate) fn check_writable(dir: &std::path::Path) -> Result<(), AgentError> {
    let fail = |source| AgentError::DataDir {
        path: dir.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(fail)?;
    let probe = dir.join(".write-test");
    std::fs::write(&probe, b"").map_err(fail)?;
    std::fs::remove_file(&probe).map_err(fail)
}

/// Deletes receipts in a final state older than the retention, at start and
/// then every ten minutes, so the receipts table stays small.
async fn prune_receipts(outbox: outbox::Outbox, stop: impl Future<Output = ()>) {
    let mut every = tokio::time::interval(std::time::Duration::from_secs(600));
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = every.tick() => match outbox.prune_receipts().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(receipts = n, "pruned receipts past their retention"),
                Err(e) => tracing::warn!(error = %e, "could not prune old receipts; will try again"),
            },
        }
    }
}
