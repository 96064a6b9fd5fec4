//! One system under test for the demo, chaos, fleet, bench and the
//! end-to-end tests: an MQTT broker, the mock ERP, a collector and agents,
//! started one way.
//!
//! # Parts
//!
//! - [`child`]: the one child-process type (log file, address file, killed
//!   on drop, restartable).
//! - [`programs`]: which executables run the children (`dockline-sim`
//!   subcommands, or the workspace's binaries).
//! - [`config`]: the children's configs, built from the agent's and the
//!   collector's own config types.
//! - [`mqtt`]: the broker (embedded child or external).
//! - [`node`]: a collector or an agent (typed config, child, API address).
//! - [`Stack`]: broker, mock ERP (in this process, so its books are read
//!   directly), a command key pair, a collector, and agents.
//!
//! # Layout of a work directory
//!
//! ```text
//! {dir}/broker-N.log, broker-N.addr   one per broker start
//! {dir}/collector.toml, collector.log, collector/   (data: inbox, api.addr)
//! {dir}/{device}.toml, {device}.log, {device}/      (data: outbox, api.addr)
//! {dir}/keys/command-signing.key, command-verify.pub
//! ```
//!
//! # Invariants
//!
//! - Dropping a stack (or any part) kills every child it started, on every
//!   path, a failed test included.
//! - Agents verify the collector's commands with the stack's own key pair,
//!   made per stack by the collector's `keygen` code, as in production.

pub mod child;
pub mod config;
pub mod mqtt;
pub mod node;
pub mod programs;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use rand::{Rng, SeedableRng};

pub use child::{Child, ChildError};
pub use config::{AgentConfig, CollectorConfig, MqttAddr};
pub use mqtt::Broker;
pub use node::{AgentNode, CollectorNode, Node};
pub use programs::{Programs, Role};

use crate::mock_erp::{ErpConfig, ErpError, MockErp, MockErpHandle};

/// How long a child may take to write its address file.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// The system under test could not be started (as opposed to running and
/// misbehaving).
#[derive(Debug, thiserror::Error)]
pub enum StackError {
    /// A child process failed to start or become ready.
    #[error(transparent)]
    Child(#[from] ChildError),
    /// The mock ERP failed to start or took bad knobs.
    #[error(transparent)]
    Erp(#[from] ErpError),
    /// A config could not be built or written.
    #[error("cannot build the config of {what}: {problem}")]
    Config {
        /// Whose.
        what: String,
        /// Why.
        problem: String,
    },
    /// A file or folder of the work directory could not be written.
    #[error("cannot write {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The command key pair could not be made.
    #[error("cannot make the command key pair in {dir}: {problem}")]
    Keys {
        /// Where.
        dir: PathBuf,
        /// Why.
        problem: String,
    },
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    Http(#[from] reqwest::Error),
    /// A setting cannot work.
    #[error("{0}")]
    Options(String),
}

/// A fresh work directory under the system temp dir named `{prefix}…`,
/// kept when this process ends: a run removes it once it passed, and a
/// failed run leaves its configs, databases and logs for reading.
pub fn kept_work_dir(prefix: &str) -> Result<PathBuf, StackError> {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .map(tempfile::TempDir::keep)
        .map_err(|source| StackError::Io {
            path: std::env::temp_dir(),
            source,
        })
}

/// A Standard Webhooks secret (`whsec_` + base64 of 32 bytes) drawn from
/// `seed`: the same seed, the same secret.
pub fn webhook_secret(seed: u64) -> String {
    let mut key = [0u8; 32];
    rand::rngs::StdRng::seed_from_u64(seed).fill(&mut key);
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(key)
    )
}

/// The collector's command key pair, made by its own `keygen` code.
#[derive(Debug, Clone)]
pub struct CommandKeys {
    /// The signing key file (`[commands] signing_key_file`).
    pub signing_key_file: PathBuf,
    /// The public key, base64 (`[commands] verify_key` of every agent).
    pub verify_key: String,
}

impl CommandKeys {
    /// Makes a fresh pair in `dir`.
    pub fn generate(dir: &Path) -> Result<Self, StackError> {
        let verify_key =
            dockline_collector::ingest::commands::generate(dir).map_err(|e| StackError::Keys {
                dir: dir.into(),
                problem: e.to_string(),
            })?;
        Ok(Self {
            signing_key_file: dir.join(dockline_collector::ingest::commands::SIGNING_KEY_FILE),
            verify_key,
        })
    }
}

/// What a [`Stack`] starts with.
#[derive(Debug, Clone)]
pub struct StackSpec {
    /// How the children are run.
    pub programs: Programs,
    /// The work directory (configs, data, logs); the caller owns it.
    pub dir: PathBuf,
    /// The site every device belongs to.
    pub site: String,
    /// A broker to use; `None` starts an embedded one.
    pub broker: Option<MqttAddr>,
    /// The mock ERP; its secret is the collector's webhook secret.
    pub erp: ErpConfig,
}

/// Broker, mock ERP and command keys, before the collector starts; see
/// [`Services::collector_config`] and [`Services::start_collector`].
#[derive(Debug)]
pub struct Services {
    /// The work directory.
    pub dir: PathBuf,
    /// The site.
    pub site: String,
    /// How the children are run.
    pub programs: Programs,
    /// The broker.
    pub broker: Broker,
    /// The mock ERP.
    pub erp: MockErpHandle,
    /// Where it listens.
    pub erp_addr: SocketAddr,
    /// Its webhook secret.
    pub secret: String,
    /// The command key pair.
    pub keys: CommandKeys,
}

impl Services {
    /// Starts the broker (unless an external one is given), the mock ERP and
    /// makes the command keys.
    pub async fn start(spec: StackSpec) -> Result<Self, StackError> {
        std::fs::create_dir_all(&spec.dir).map_err(|source| StackError::Io {
            path: spec.dir.clone(),
            source,
        })?;
        let broker = match spec.broker {
            Some(addr) => Broker::External(addr),
            None => Broker::embedded(&spec.programs, &spec.dir).await?,
        };
        let secret = spec.erp.secret.clone();
        let (erp, erp_addr) =
            MockErp::start(SocketAddr::from(([127, 0, 0, 1], 0)), spec.erp).await?;
        let keys = CommandKeys::generate(&spec.dir.join("keys"))?;
        Ok(Self {
            dir: spec.dir,
            site: spec.site,
            programs: spec.programs,
            broker,
            erp,
            erp_addr,
            secret,
            keys,
        })
    }

    /// The collector's config: data in `{dir}/collector`, this broker, this
    /// ERP's webhook and secret, the command signing key, `devices` known;
    /// the rest the collector's defaults (see [`config::collector`]).
    pub fn collector_config(&self, devices: &[String]) -> Result<CollectorConfig, StackError> {
        let mut c = config::collector(
            &self.dir.join("collector"),
            &self.broker.addr(),
            &format!("http://{}/events", self.erp_addr),
            &self.secret,
        )?;
        c.devices = config::known_devices(&self.site, devices)?;
        c.commands.signing_key_file = Some(self.keys.signing_key_file.clone());
        Ok(c)
    }

    /// Starts the collector `config` (named `collector`) and waits until it
    /// listens.
    pub async fn start_collector(self, config: CollectorConfig) -> Result<Stack, StackError> {
        let mut collector = Node::new("collector", config, &self.programs, &self.dir);
        collector.start().await?;
        Ok(Stack {
            services: self,
            collector,
            agents: Vec::new(),
        })
    }
}

/// The whole system under test; dropping it stops every child.
#[derive(Debug)]
pub struct Stack {
    /// Broker, mock ERP and keys.
    pub services: Services,
    /// The collector.
    pub collector: CollectorNode,
    /// The agents, in the order they were added.
    pub agents: Vec<AgentNode>,
}

impl Stack {
    /// The config of agent `device`: data in `{dir}/{device}`, this broker,
    /// the collector's verify key; the rest as [`config::agent`] leaves it.
    pub fn agent_config(&self, device: &str) -> Result<AgentConfig, StackError> {
        let s = &self.services;
        let mut c = config::agent(&s.site, device, &s.dir.join(device), &s.broker.addr())?;
        c.commands.verify_key = dockline_agent::config::KeyList::One(s.keys.verify_key.clone());
        Ok(c)
    }

    /// A node for agent `config`, named after its device, in this stack's
    /// work directory; not started, and the caller's to keep.
    pub fn agent_node(&self, config: AgentConfig) -> AgentNode {
        let s = &self.services;
        let name = config.device.as_str().to_string();
        Node::new(&name, config, &s.programs, &s.dir)
    }

    /// Adds agent `config` (named after its device) and starts it without
    /// waiting; see [`Stack::wait_agents_ready`].
    pub fn spawn_agent(&mut self, config: AgentConfig) -> Result<&mut AgentNode, StackError> {
        let mut node = self.agent_node(config);
        node.spawn()?;
        self.agents.push(node);
        let last = self.agents.len() - 1;
        Ok(&mut self.agents[last])
    }

    /// Waits until every agent from `from` on listens.
    pub async fn wait_agents_ready(&mut self, from: usize) -> Result<(), StackError> {
        for a in self.agents.iter_mut().skip(from) {
            a.wait_ready().await?;
        }
        Ok(())
    }

    /// Adds agent `config` and waits until it listens.
    pub async fn start_agent(&mut self, config: AgentConfig) -> Result<&mut AgentNode, StackError> {
        let from = self.agents.len();
        self.spawn_agent(config)?;
        self.wait_agents_ready(from).await?;
        Ok(&mut self.agents[from])
    }

    /// The agent of `device`.
    pub fn agent(&self, device: &str) -> Option<&AgentNode> {
        self.agents.iter().find(|a| a.name() == device)
    }

    /// Stops everything: agents and the collector get SIGTERM and `grace`
    /// (agents all at once), the broker is killed, the ERP shut down.
    pub async fn shutdown(mut self, grace: Duration) {
        let stopping: Vec<_> = self
            .agents
            .drain(..)
            .map(|mut a| tokio::spawn(async move { a.terminate(grace).await }))
            .collect();
        for s in stopping {
            // A panicked task has dropped its node, which killed the child.
            let _ = s.await;
        }
        self.collector.terminate(grace).await;
        self.services.broker.kill();
        self.services.erp.shutdown().await;
    }
}
