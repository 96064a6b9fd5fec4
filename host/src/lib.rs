//! dockline-host: what the agent and the collector binaries share as
//! programs on a Linux host, as opposed to what they say on the wire (that
//! is `dockline-protocol`, which stays `no_std` and knows none of this).
//!
//! # Layout
//!
//! - [`config`]: the TOML file plus the `DOCKLINE_*` environment overlay,
//!   readable errors, the keys a reload changed, `check-config`'s redacted
//!   view.
//! - [`secret`]: secrets written inline, or read from a file or a named
//!   environment variable; never shown by `Debug`.
//! - [`tls`]: the `[mqtt.tls]` table and the rustls client config it builds,
//!   with the tree's one crypto provider (ring).
//! - [`mqtt`]: the shared `[mqtt]` keys turned into rumqttc options.
//! - [`logging`]: text or JSON on stderr, ANSI only on a terminal, a level
//!   SIGHUP can change (`[log]`).
//! - [`service`]: systemd `Type=notify` readiness and watchdog datagrams.
//! - [`signal`]: the stop signals (SIGTERM, SIGINT) as one future.
//! - [`clock`]: Unix milliseconds.
//! - [`backoff`]: the capped exponential retry schedule.
//!
//! The agent and the collector both depend on this crate and never on each
//! other.

pub mod backoff;
pub mod clock;
pub mod config;
pub mod logging;
pub mod mqtt;
pub mod secret;
pub mod service;
pub mod signal;
pub mod tls;
