//! dockline-collector: the central side of dockline.
//!
//! It subscribes to every device's `events` and `status` topics, stores each
//! batch in an inbox that drops duplicates (SQLite, or PostgreSQL shared by
//! several collectors), acks the batch only after
//! the commit, delivers each business event to the ERP (a signed webhook,
//! Tryton, Odoo or an EPCIS repository, see [`erp`]) until the ERP gives a
//! verdict, and sends that verdict back to the device. An
//! event the ERP refuses (or that cannot be delivered for a reason on our
//! side) becomes a dead letter that blocks its device's lane until an
//! operator replays or discards it.
//!
//! # Layout: capability folders
//!
//! Imports run one way between the folders: `http → delivery → erp`, and
//! `ingest`/`delivery → inbox → protocol`; [`config`] composes every
//! module's own section and is imported by `lib`/`main` alone.
//!
//! - [`ingest`]: topic + bytes → inbox + ack, without MQTT;
//!   [`ingest::mqtt`] the broker connection (and `[mqtt]`);
//!   [`ingest::registry`] the devices allowed to send (`[[devices]]`,
//!   replaced live on reload); [`ingest::limits`] payload size and
//!   per-device rate limits (`[security]`); [`ingest::gaps`] the gap audit
//!   (`[gaps]`): holes get a resend request; [`ingest::commands`] stamps
//!   commands with an expiry and signs them (`[commands]`).
//! - [`inbox`]: the inbox (SQLite,
//!   or PostgreSQL shared by several collectors): dedup, watermarks,
//!   delivery state, stats; `[inbox]`.
//! - [`delivery`]: one task per business lane, retries, verdicts;
//!   [`delivery::lane`] which event of a lane may go (pure);
//!   [`delivery::policy`] what each ERP answer means (pure);
//!   [`delivery::breaker`] the endpoint's circuit breaker (pure);
//!   [`delivery::backoff`] the retry schedule; [`delivery::invoice`] the
//!   `invoice.ready` follow-up (`delivery::invoice_ready` its body);
//!   [`delivery::dlq`] dead letters for people.
//! - [`erp`]: the adapters behind one trait and `[erp]`
//!   ([`erp::ErpConfig`]); [`erp::outcome`] the words an adapter reports an
//!   attempt in; [`erp::webhook`] (CloudEvents body and Standard Webhooks
//!   signature in [`erp::webhook::cloudevents`], batches in
//!   `erp::webhook::batch`), [`erp::tryton`], [`erp::odoo`],
//!   [`erp::epcis`] (export, GS1 identifiers, capture client).
//! - [`http`]: health, stats, lanes, endpoint state and dead letters over
//!   HTTP (`[api]`); [`http::auth`] who may use it; [`http::login_limit`]
//!   backoff after failed logins; `http::metrics` `GET /metrics`;
//!   `http::dashboard` the pages for people.
//! - Below them all: [`metrics`] (the counters ingest and delivery keep),
//!   [`publication`] (what goes out on MQTT), [`shutdown`],
//!   `config_error` (the refusal every section's check gives).
//! - Around them: [`config`] (the TOML config, composed),
//!   [`reload`] (what SIGHUP applies live), [`secret_hygiene`] (refuses a
//!   signing key others can read and the example webhook secret), [`certs`]
//!   (the mutual-TLS certificates).
//!
//! # Lifecycle
//!
//! [`run`] checks the config, opens the inbox, binds the API (writing the
//! bound address to `{data_dir}/api.addr`), then runs the API, delivery and
//! MQTT tasks until `shutdown` completes; [`run_reloadable`] also applies
//! what a [`reload::Reloader`] sends (the device registry, the API's tokens
//! and users) while it runs. Only start-up problems return an
//! error; a lost broker or ERP is retried forever, and bad input is logged and
//! dropped.

pub mod certs;
pub mod config;
mod config_error;
pub mod delivery;
pub mod erp;
pub mod http;
pub mod inbox;
pub mod ingest;
pub mod media;
pub mod metrics;
pub mod publication;
pub mod reload;
pub mod secret_hygiene;
pub mod shutdown;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::{Notify, mpsc};
use tracing::{info, warn};

pub use config::Config;

/// The collector's version (the crate's).
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

use crate::config_error::ConfigCheckError;
use crate::delivery::Delivery;
use crate::erp::ErpSetupError;
use crate::inbox::{InboxError, InboxHandle};
use crate::ingest::Ingest;
use crate::shutdown::ShutdownTrigger;

/// Verdict acks and commands buffered between delivery (and the gap audit)
/// and the MQTT publisher.
const VERDICT_CAPACITY: usize = 1024;

/// The collector could not start (or its API server failed).
#[derive(Debug, thiserror::Error)]
pub enum CollectorError {
    /// The configuration is not usable.
    #[error("invalid config: {0}")]
    Config(#[from] ConfigCheckError),
    /// The data directory or a file in it could not be written.
    #[error("cannot write {path}: {source}; check data_dir in the config and its permissions")]
    DataDir {
        /// The path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The inbox could not be opened.
    #[error(transparent)]
    Inbox(#[from] InboxError),
    /// The API address could not be bound.
    #[error("cannot listen on {addr} for the HTTP API: {source}; change [api] listen")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The HTTP API server stopped with an error.
    #[error("HTTP API server failed: {0}")]
    Api(std::io::Error),
    /// ERP delivery could not be set up.
    #[error(transparent)]
    Delivery(#[from] ErpSetupError),
    /// `[api]` credentials are unusable, or missing on a network address.
    #[error(transparent)]
    Auth(#[from] http::auth::AuthConfigError),
    /// The command signing key could not be loaded.
    #[error(transparent)]
    CommandKey(#[from] ingest::commands::KeyError),
    /// The media store could not be opened.
    #[error("cannot open the media store: {0}")]
    Media(#[from] media::store::MediaError),
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub use dockline_host::clock::now_ms;

/// Runs the collector until `shutdown` completes.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), CollectorError> {
    run_reloadable(config, shutdown, reload::Reloads::none()).await
}

/// [`run`], applying what a [`reload::Reloader`] sends to `reloads` while
/// it runs (the device registry, the API's tokens and users).
pub async fn run_reloadable(
    config: Config,
    shutdown: impl Future<Output = ()> + Send,
    reloads: reload::Reloads,
) -> Result<(), CollectorError> {
    config.check_for_start()?;
    let auth = Arc::new(http::auth::Auth::from_config(
        &config.api,
        config.api.listen,
    )?);
    if auth.is_open() {
        warn!(listen = %config.api.listen, "the HTTP API and dashboard have no credentials ([[api.tokens]] / [[api.users]]): open to anyone on this host, loopback only");
    }
    let signer = ingest::commands::CommandSigner::from_config(&config.commands)?;
    if let Some(public) = signer.verify_key_base64() {
        // The public key is no secret: it is what agents are configured with.
        info!(verify_key = %public, "commands to devices are signed; agents need this [commands] verify_key");
    } else {
        warn!(
            "no [commands] signing key: commands to devices (resend requests) go out unsigned, and agents refuse them unless allow_unsigned_commands = true; make a key pair with `dockline-collector keygen --out DIR`"
        );
    }
    tokio::fs::create_dir_all(&config.data_dir)
        .await
        .map_err(|source| CollectorError::DataDir {
            path: config.data_dir.clone(),
            source,
        })?;
    let inbox_path = config.inbox_path();
    let devices = config.devices.clone();
    let inbox_config = config.inbox.clone();
    let inbox = InboxHandle::from_box(
        tokio::task::spawn_blocking(move || {
            let mut inbox = inbox_config.open(&inbox_path)?;
            inbox.register_devices(&devices)?;
            Ok::<_, InboxError>(inbox)
        })
        .await
        .map_err(|e| InboxError::Worker(e.to_string()))??,
    );

    let listener = tokio::net::TcpListener::bind(config.api.listen)
        .await
        .map_err(|source| CollectorError::Bind {
            addr: config.api.listen,
            source,
        })?;
    let bound = listener
        .local_addr()
        .map_err(|source| CollectorError::Bind {
            addr: config.api.listen,
            source,
        })?;
    // Written atomically (temp file + rename): a reader polling for the
    // address never sees an empty or half-written file.
    let addr_path = config.api_addr_path();
    let tmp = config.data_dir.join("api.addr.tmp");
    let written = match tokio::fs::write(&tmp, bound.to_string()).await {
        Ok(()) => tokio::fs::rename(&tmp, &addr_path).await,
        Err(e) => Err(e),
    };
    written.map_err(|source| CollectorError::DataDir {
        path: addr_path,
        source,
    })?;
    info!(api = %bound, data_dir = %config.data_dir.display(),
        broker = %format!("{}:{}", config.mqtt.host, config.mqtt.port),
        erp = %config.erp.url, erp_kind = config.erp.kind.name(),
        inbox = %config.inbox.url.as_deref().map_or_else(|| "sqlite".to_owned(), crate::inbox::postgres::redact_url),
        shared_group = config.mqtt.shared_group.as_deref().unwrap_or("-"),
        "collector started");
    // Under systemd (Type=notify): ready once the inbox is open and the API
    // listens. A no-op elsewhere.
    if let Err(e) = dockline_host::service::notify("READY=1") {
        warn!(error = %e, "cannot tell systemd the collector is ready");
    }

    let trigger = ShutdownTrigger::new();
    let wake = Arc::new(Notify::new());
    let (verdict_tx, verdict_rx) = mpsc::channel(VERDICT_CAPACITY);
    let gaps_task = tokio::spawn(ingest::gaps::run(
        inbox.clone(),
        config.gaps.resend_after(),
        config.gaps.old_epoch_hole_limit(),
        signer.clone(),
        verdict_tx.clone(),
        trigger.subscribe(),
    ));
    let max_ahead = config.security.max_seq_ahead;
    inbox
        .call(move |i| {
            i.set_max_seq_ahead(max_ahead);
            Ok(())
        })
        .await?;
    let invoices = delivery::invoice::InvoiceNotifier::from_config(&config.erp, inbox.clone())?;
    if invoices.is_some() {
        inbox
            .call(|i| {
                i.enable_invoice_followups();
                Ok(())
            })
            .await?;
    }
    let media_config = config.media();
    let media_links = media_config.links().map_err(ConfigCheckError::from)?;
    let (data_dir, pg_url) = (config.data_dir.clone(), config.inbox.url.clone());
    let media_store =
        tokio::task::spawn_blocking(move || media::store::open(&data_dir, pg_url.as_deref()))
            .await
            .map_err(|e| media::store::MediaError::Db(e.to_string()))??;
    info!(
        backend = media_store.backend(),
        max_bytes = media_config.max_bytes,
        wait_ms = media_config.wait_ms,
        retain_days = media_config.retain_days,
        links = media_links.is_some(),
        "media store open"
    );
    let hub = media::MediaHub::new(media_store, media_config, Arc::clone(&wake));
    let sweep_task = tokio::spawn(media::sweep::run(hub.clone(), now_ms, trigger.subscribe()));
    let delivery =
        Arc::new(Delivery::new(&config.erp, inbox.clone(), verdict_tx)?.with_media(hub.clone()));
    let invoice_task =
        invoices.map(|n| tokio::spawn(n.run(delivery.followup_wake(), trigger.subscribe())));
    let ingest = Ingest::new(
        inbox.clone(),
        &config.devices,
        config.allow_unknown_devices,
        Arc::clone(&wake),
    )
    .with_limits(&config.security)
    .with_metrics(delivery.metrics())
    .with_media(hub.clone());

    let live = reload::Live {
        registry: ingest.registry(),
        auth: Arc::clone(&auth),
        inbox: inbox.clone(),
        listen: config.api.listen,
    };
    let reload_task = tokio::spawn(live.serve(reloads, trigger.subscribe()));
    let progress = Arc::new(ingest::mqtt::IngestProgress::new());
    let media_routes = http::media::routes(hub.clone(), media_links, Arc::clone(&auth));
    let api_state = http::ApiState {
        inbox,
        wake: Arc::clone(&wake),
        delivery: Some(Arc::clone(&delivery)),
        auth,
        ingest: Some(Arc::clone(&progress)),
    };
    let mut api_stop = trigger.subscribe();
    let api = tokio::spawn(async move {
        // The peer address feeds the per-address login backoff.
        axum::serve(
            listener,
            http::router(api_state)
                .merge(media_routes)
                .into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move { api_stop.wait().await })
        .await
    });
    let delivery_task = tokio::spawn(delivery.run(wake, trigger.subscribe()));
    let mqtt_cfg = config.mqtt.clone();
    let mqtt_stop = trigger.subscribe();
    let mqtt_task = tokio::spawn(async move {
        ingest::mqtt::run(&mqtt_cfg, ingest, verdict_rx, progress, signer, mqtt_stop).await
    });

    // The API task ends early only on a server error; report it then.
    let mut api = api;
    let api_result = tokio::select! {
        () = shutdown => None,
        r = &mut api => Some(r),
    };
    info!("collector shutting down");
    trigger.trigger();
    // Every task stops at its next await point; nothing here holds data that
    // is not already committed, so a task that does not stop in time is left.
    let grace = std::time::Duration::from_secs(5);
    let _ = tokio::time::timeout(grace, delivery_task).await;
    let _ = tokio::time::timeout(grace, mqtt_task).await;
    let _ = tokio::time::timeout(grace, gaps_task).await;
    let _ = tokio::time::timeout(grace, reload_task).await;
    let _ = tokio::time::timeout(grace, sweep_task).await;
    if let Some(task) = invoice_task {
        let _ = tokio::time::timeout(grace, task).await;
    }
    let api_result = match api_result {
        Some(r) => r,
        None => match tokio::time::timeout(grace, api).await {
            Ok(r) => r,
            Err(_) => {
                warn!("HTTP API did not close its connections in time; leaving them");
                Ok(Ok(()))
            }
        },
    };
    match api_result {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(CollectorError::Api(e)),
        Err(e) => Err(CollectorError::Api(std::io::Error::other(e.to_string()))),
    }
}
