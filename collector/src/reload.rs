//! Live reload (SIGHUP): what a changed config may change while the
//! collector runs, and the handle that applies it.
//!
//! Applied live: the device registry (`[[devices]]`,
//! `allow_unknown_devices`), the API's `[[api.tokens]]` and `[[api.users]]`,
//! and (in `main`, which owns the logger) `[log] level`. Every other
//! changed key is named by [`restart_needed`] and keeps its running value.
//!
//! Invariants:
//! - the caller checks the new config as a start would before it gets
//!   here (a config that would not start is refused whole);
//! - [`Reloader::apply`] changes all or nothing: everything that can fail
//!   (reading token files and variables, registering new devices in the
//!   inbox) happens before the registry and the credentials are swapped;
//! - [`restart_needed`] and [`adopt_live`] are pure over the merged TOML
//!   tables, so the running table always says what the process runs with:
//!   live keys take the new value, the others keep the old one until a
//!   restart.

use std::net::SocketAddr;
use std::sync::Arc;

use dockline_host::config::Table;
use tokio::sync::{mpsc, oneshot};

use crate::http::ApiConfig;
use crate::http::auth::{Auth, AuthConfigError, CredentialChange};
use crate::inbox::{InboxError, InboxHandle};
use crate::ingest::registry::{DeviceConfig, DeviceRegistry, DeviceSet, RegistryChange};
use crate::shutdown::Shutdown;

/// The keys a reload applies without a restart, as dotted paths.
pub const LIVE_KEYS: &[&str] = &[
    "allow_unknown_devices",
    "api.tokens",
    "api.users",
    "devices",
    "log.level",
];

/// The dotted paths (a top-level key, or `section.key` inside a table)
/// whose value differs between `old` and `new`, added and removed
/// included, in name order.
pub fn changed_paths(old: &Table, new: &Table) -> Vec<String> {
    let mut out = Vec::new();
    let mut keys: Vec<&String> = old.keys().chain(new.keys()).collect();
    keys.sort();
    keys.dedup();
    for key in keys {
        match (old.get(key), new.get(key)) {
            (a, b) if a == b => {}
            (Some(toml::Value::Table(a)), Some(toml::Value::Table(b))) => {
                let mut inner: Vec<&String> = a.keys().chain(b.keys()).collect();
                inner.sort();
                inner.dedup();
                out.extend(
                    inner
                        .into_iter()
                        .filter(|k| a.get(*k) != b.get(*k))
                        .map(|k| format!("{key}.{k}")),
                );
            }
            _ => out.push(key.clone()),
        }
    }
    out
}

/// The changed paths that a reload does not apply: they need a restart.
/// A whole section added or removed counts as needing one unless it is
/// live itself.
pub fn restart_needed(old: &Table, new: &Table) -> Vec<String> {
    changed_paths(old, new)
        .into_iter()
        .filter(|path| !is_live(path, old, new))
        .collect()
}

/// Whether `path` (from [`changed_paths`]) is applied live. A section that
/// appears or disappears whole (`api`, `log`) is live when every key it
/// holds on either side is.
fn is_live(path: &str, old: &Table, new: &Table) -> bool {
    if LIVE_KEYS.contains(&path) {
        return true;
    }
    let keys_of = |t: &Table| -> Vec<String> {
        match t.get(path) {
            Some(toml::Value::Table(inner)) => {
                inner.keys().map(|k| format!("{path}.{k}")).collect()
            }
            _ => Vec::new(),
        }
    };
    let inner: Vec<String> = keys_of(old).into_iter().chain(keys_of(new)).collect();
    !inner.is_empty() && inner.iter().all(|k| LIVE_KEYS.contains(&k.as_str()))
}

/// Sets every live key of `running` to its value in `new` (removing it
/// where `new` has none), leaving every other key as it runs.
pub fn adopt_live(running: &mut Table, new: &Table) {
    for path in LIVE_KEYS {
        let (section, key) = match path.split_once('.') {
            Some((s, k)) => (s, Some(k)),
            None => (*path, None),
        };
        match key {
            None => match new.get(section) {
                Some(v) => {
                    running.insert(section.to_string(), v.clone());
                }
                None => {
                    running.remove(section);
                }
            },
            Some(key) => {
                let value = new
                    .get(section)
                    .and_then(toml::Value::as_table)
                    .and_then(|t| t.get(key))
                    .cloned();
                let entry = running
                    .entry(section.to_string())
                    .or_insert_with(|| toml::Value::Table(Table::new()));
                if let toml::Value::Table(t) = entry {
                    match value {
                        Some(v) => {
                            t.insert(key.to_string(), v);
                        }
                        None => {
                            t.remove(key);
                        }
                    }
                    if t.is_empty() {
                        running.remove(section);
                    }
                }
            }
        }
    }
}

/// The sections a reload applies, from the new config.
#[derive(Debug, Clone)]
pub struct LiveSections {
    /// `[api]` (only its tokens and users are applied).
    pub api: ApiConfig,
    /// `[[devices]]`.
    pub devices: Vec<DeviceConfig>,
    /// `allow_unknown_devices`.
    pub allow_unknown_devices: bool,
}

/// What a reload changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    /// The device registry.
    pub devices: RegistryChange,
    /// The API's tokens and users.
    pub credentials: CredentialChange,
}

/// A reload was refused; the running config stays.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// `[api]` credentials cannot be used (a token file unreadable, a
    /// variable unset, a hash that does not parse).
    #[error(transparent)]
    Auth(#[from] AuthConfigError),
    /// New devices could not be registered in the inbox.
    #[error("cannot register the new devices in the inbox: {0}")]
    Inbox(#[from] InboxError),
    /// The collector is not running (not started yet, or stopping).
    #[error("the collector is not running; nothing to reload")]
    NotRunning,
}

/// One reload waiting for the running collector.
struct Request {
    sections: LiveSections,
    reply: oneshot::Sender<Result<Applied, ReloadError>>,
}

/// Hands new live sections to a running collector ([`crate::run_reloadable`]).
#[derive(Debug, Clone)]
pub struct Reloader {
    tx: mpsc::Sender<Request>,
}

/// The running collector's end of [`channel`].
#[derive(Debug)]
pub struct Reloads {
    rx: mpsc::Receiver<Request>,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request").finish_non_exhaustive()
    }
}

/// A reloader and the collector's end of it.
pub fn channel() -> (Reloader, Reloads) {
    let (tx, rx) = mpsc::channel(1);
    (Reloader { tx }, Reloads { rx })
}

impl Reloads {
    /// An end no reloader holds (a collector that is never reloaded).
    pub fn none() -> Self {
        channel().1
    }
}

impl Reloader {
    /// Applies `sections` to the running collector; waits for the result.
    pub async fn apply(&self, sections: LiveSections) -> Result<Applied, ReloadError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Request { sections, reply })
            .await
            .map_err(|_| ReloadError::NotRunning)?;
        answer.await.map_err(|_| ReloadError::NotRunning)?
    }
}

/// The running collector's live parts a reload replaces.
#[derive(Debug)]
pub(crate) struct Live {
    pub(crate) registry: Arc<DeviceRegistry>,
    pub(crate) auth: Arc<Auth>,
    pub(crate) inbox: InboxHandle,
    /// The address the API listens on (a reload does not move it).
    pub(crate) listen: SocketAddr,
}

impl Live {
    /// Applies one reload, all or nothing (see the module invariants).
    async fn apply(&self, sections: LiveSections) -> Result<Applied, ReloadError> {
        let LiveSections {
            api,
            devices,
            allow_unknown_devices,
        } = sections;
        // Everything that can fail comes first.
        let prepared = Auth::prepare(&api, self.listen)?;
        let set = DeviceSet::new(&devices, allow_unknown_devices);
        if !self.registry.current().changes_to(&set).added.is_empty() {
            // The dashboard lists a registered device before its first batch.
            self.inbox
                .call(move |i| i.register_devices(&devices))
                .await?;
        }
        let credentials = self.auth.commit(prepared);
        let devices = self.registry.replace(set);
        Ok(Applied {
            devices,
            credentials,
        })
    }

    /// Answers reload requests until `shutdown`.
    pub(crate) async fn serve(self, mut reloads: Reloads, mut shutdown: Shutdown) {
        loop {
            let request = tokio::select! {
                r = reloads.rx.recv() => r,
                () = shutdown.wait() => None,
            };
            let Some(Request { sections, reply }) = request else {
                return;
            };
            let _ = reply.send(self.apply(sections).await);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> Table {
        text.parse().expect("toml")
    }

    #[test]
    fn changed_paths_go_one_level_into_sections() {
        let old = table(
            "data_dir = \"a\"\n[erp]\nurl = \"x\"\nconcurrency = 4\n[gaps]\nresend_after_ms = 1\n",
        );
        let new =
            table("data_dir = \"a\"\n[erp]\nurl = \"y\"\nconcurrency = 4\n[mqtt]\nport = 1\n");
        assert_eq!(changed_paths(&old, &new), ["erp.url", "gaps", "mqtt"]);
    }

    #[test]
    fn live_keys_need_no_restart_and_everything_else_does() {
        let old = table(
            "[api]\nlisten = \"127.0.0.1:0\"\n[[api.tokens]]\nrole = \"viewer\"\ntoken = \"a\"\n\
             [[devices]]\nid = \"hh-01\"\nsite = \"s\"\n[erp]\nurl = \"x\"\n",
        );
        let new = table(
            "allow_unknown_devices = true\n[api]\nlisten = \"127.0.0.1:0\"\n[[api.users]]\nname = \"u\"\nrole = \"viewer\"\n\
             [[devices]]\nid = \"hh-02\"\nsite = \"s\"\n[erp]\nurl = \"y\"\n[log]\nlevel = \"debug\"\n",
        );
        assert_eq!(restart_needed(&old, &new), ["erp.url"]);
        let new_listen = table("[api]\nlisten = \"127.0.0.1:1\"\n");
        assert_eq!(restart_needed(&table(""), &new_listen), ["api"]);
        let log_format = table("[log]\nformat = \"json\"\nlevel = \"info\"\n");
        assert_eq!(restart_needed(&table(""), &log_format), ["log"]);
        assert!(restart_needed(&table(""), &table("[log]\nlevel = \"debug\"\n")).is_empty());
    }

    #[test]
    fn adopt_live_takes_live_keys_and_keeps_the_rest_running() {
        let mut running = table(
            "[api]\nlisten = \"127.0.0.1:0\"\n[[api.tokens]]\nrole = \"viewer\"\ntoken = \"a\"\n\
             [[devices]]\nid = \"hh-01\"\nsite = \"s\"\n[erp]\nurl = \"x\"\n",
        );
        let new = table(
            "[api]\nlisten = \"127.0.0.1:9\"\n[[devices]]\nid = \"hh-02\"\nsite = \"s\"\n[erp]\nurl = \"y\"\n\
             [log]\nlevel = \"debug\"\nformat = \"json\"\n",
        );
        adopt_live(&mut running, &new);
        let expected = table(
            "[api]\nlisten = \"127.0.0.1:0\"\n[[devices]]\nid = \"hh-02\"\nsite = \"s\"\n[erp]\nurl = \"x\"\n\
             [log]\nlevel = \"debug\"\n",
        );
        assert_eq!(running, expected);
        // The next reload of the same file names only what still differs.
        assert_eq!(
            restart_needed(&running, &new),
            ["api.listen", "erp.url", "log.format"]
        );
    }
}
