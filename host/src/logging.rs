//! Logging for the agent and collector binaries: one set-up, both processes.
//!
//! Invariants:
//! - logs go to **stderr** (stdout stays free for command output), with ANSI
//!   colours only when stderr is a terminal, never into a pipe or the journal;
//! - under systemd (`JOURNAL_STREAM` set) text lines carry no timestamp of
//!   their own: the journal stamps each line;
//! - `json` prints one object per line with the event's fields flattened and
//!   the current span's fields (event id, device, sequence, lane) beside
//!   them, for journald/Loki/Elasticsearch;
//! - the level filter sits behind a reload handle, so SIGHUP can change it
//!   without a restart; `RUST_LOG`, when set, wins over the config's level.
//!
//! ```toml
//! [log]
//! format = "json"   # or "text" (default); --log-format overrides it
//! level = "info,dockline_agent::uplink=debug"   # an EnvFilter directive
//! ```

use std::fmt;

use serde::{Deserialize, Serialize};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry, reload};

/// The level used when neither `RUST_LOG` nor `[log] level` says.
pub const DEFAULT_LEVEL: &str = "info";

/// How log lines look.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        })
    }
}

impl core::str::FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("unknown log format {other:?}; use text or json")),
        }
    }
}

/// `[log]`: the log format and level of a binary.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `text` (default) or `json`; `--log-format` overrides it.
    #[serde(default)]
    pub format: Option<LogFormat>,
    /// An `EnvFilter` directive (`info`, `warn,dockline_collector=debug`);
    /// `RUST_LOG` overrides it. SIGHUP applies a changed one.
    #[serde(default)]
    pub level: Option<String>,
}

impl LogConfig {
    /// Checks that `level` parses as a filter directive.
    pub fn check(&self) -> Result<(), String> {
        match &self.level {
            Some(level) => parse_filter(level).map(|_| ()),
            None => Ok(()),
        }
    }
}

fn parse_filter(directive: &str) -> Result<EnvFilter, String> {
    EnvFilter::try_new(directive).map_err(|e| {
        format!(
            "log.level {directive:?} is not a log filter ({e}); use e.g. \"info\" or \"warn,dockline_agent=debug\""
        )
    })
}

/// Changes the level of a running process (SIGHUP).
#[derive(Clone)]
pub struct LogHandle {
    filter: reload::Handle<EnvFilter, Registry>,
    from_env: bool,
    current: std::sync::Arc<std::sync::Mutex<String>>,
}

impl fmt::Debug for LogHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogHandle")
            .field("from_env", &self.from_env)
            .finish_non_exhaustive()
    }
}

/// What [`LogHandle::apply`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum LevelChange {
    /// The level is now this one.
    Applied(String),
    /// Same as before; nothing to do.
    Unchanged,
    /// `RUST_LOG` is set and wins over the config.
    PinnedByEnv,
}

impl LogHandle {
    /// Applies the config's level (or the default when it has none), unless
    /// `RUST_LOG` pinned the level at start.
    pub fn apply(&self, config: &LogConfig) -> Result<LevelChange, String> {
        if self.from_env {
            return Ok(LevelChange::PinnedByEnv);
        }
        let wanted = config.level.as_deref().unwrap_or(DEFAULT_LEVEL);
        let mut current = self
            .current
            .lock()
            .map_err(|_| "the log level lock is poisoned".to_string())?;
        if *current == wanted {
            return Ok(LevelChange::Unchanged);
        }
        let filter = parse_filter(wanted)?;
        self.filter
            .reload(filter)
            .map_err(|e| format!("cannot change the log level: {e}"))?;
        *current = wanted.to_string();
        Ok(LevelChange::Applied(wanted.to_string()))
    }
}

/// Logs what a SIGHUP reload did: the level applied (or why not), and the
/// changed top-level keys other than `[log]`, which need a restart.
/// `changed` comes from [`crate::config::changed_keys`].
pub fn log_reload(handle: &LogHandle, config: &LogConfig, changed: &[String], origin: &str) {
    match handle.apply(config) {
        Ok(LevelChange::Applied(level)) => {
            tracing::info!(%level, "reload: log level applied");
        }
        Ok(LevelChange::Unchanged) => {}
        Ok(LevelChange::PinnedByEnv) => {
            tracing::info!(
                "reload: log level left alone: RUST_LOG is set and wins over [log] level"
            );
        }
        Err(e) => tracing::warn!(error = %e, "reload: log level refused"),
    }
    let restart: Vec<&str> = changed
        .iter()
        .map(String::as_str)
        .filter(|k| *k != "log")
        .collect();
    if restart.is_empty() {
        tracing::info!(config = %origin, "reload: done; nothing else changed");
    } else {
        tracing::warn!(config = %origin, needs_restart = %restart.join(", "),
            "reload: these keys changed but are not applied until a restart (systemctl restart)");
    }
}

/// Installs the global subscriber: `format` from the flag or the config,
/// the level from `RUST_LOG`, else the config, else [`DEFAULT_LEVEL`].
/// Fails when the level does not parse or a subscriber is already set.
pub fn init(format: LogFormat, config: &LogConfig) -> Result<LogHandle, String> {
    let env = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty());
    let from_env = env.is_some();
    let level = env
        .or_else(|| config.level.clone())
        .unwrap_or_else(|| DEFAULT_LEVEL.to_string());
    let (filter, handle) = reload::Layer::new(parse_filter(&level)?);
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let journal = std::env::var_os("JOURNAL_STREAM").is_some();
    let registry = tracing_subscriber::registry().with(filter);
    let result = match format {
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
        LogFormat::Text if journal && !ansi => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .without_time()
                    .with_ansi(false)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
        LogFormat::Text => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(ansi)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
    };
    result.map_err(|e| format!("cannot set up logging: {e}"))?;
    Ok(LogHandle {
        filter: handle,
        from_env,
        current: std::sync::Arc::new(std::sync::Mutex::new(level)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_levels_parse_or_say_why() {
        assert_eq!("json".parse::<LogFormat>(), Ok(LogFormat::Json));
        let err = "xml".parse::<LogFormat>().expect_err("unknown");
        assert!(err.contains("use text or json"), "{err}");
        let ok = LogConfig {
            format: None,
            level: Some("warn,dockline_agent=debug".into()),
        };
        assert!(ok.check().is_ok());
        let bad = LogConfig {
            format: None,
            level: Some("info,=[".into()),
        };
        let err = bad.check().expect_err("bad directive");
        assert!(err.contains("log.level"), "{err}");
    }
}
