//! A collector or an agent of the system under test: its typed config, the
//! child that runs it, and the address its API listens on.
//!
//! # Invariants
//!
//! - Every start writes the node's config file from [`Node::config`] first,
//!   so a test that changes the config and restarts the node runs the new
//!   one (a new MQTT client id, a gap audit setting) and the file in the
//!   work directory is always what the child read.
//! - A start removes the node's old `api.addr` before the child runs, so a
//!   stale file from the previous run can never look like readiness.
//! - The child is killed when the node is dropped.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use super::child::Child;
use super::config::{self, AgentConfig, CollectorConfig};
use super::programs::{Programs, Role};
use super::{READY_TIMEOUT, StackError};

/// A config a [`Node`] can run.
pub trait NodeConfig: Serialize {
    /// Which program runs it.
    const ROLE: Role;
    /// Where the child keeps its data and writes `api.addr`.
    fn data_dir(&self) -> &Path;
}

impl NodeConfig for AgentConfig {
    const ROLE: Role = Role::Agent;
    fn data_dir(&self) -> &Path {
        &self.data_dir
    }
}

impl NodeConfig for CollectorConfig {
    const ROLE: Role = Role::Collector;
    fn data_dir(&self) -> &Path {
        &self.data_dir
    }
}

/// An agent of the stack.
pub type AgentNode = Node<AgentConfig>;
/// A collector of the stack.
pub type CollectorNode = Node<CollectorConfig>;

/// One collector or agent; see the module docs.
#[derive(Debug)]
pub struct Node<C> {
    name: String,
    /// The config the next start writes and runs.
    pub config: C,
    programs: Programs,
    dir: PathBuf,
    envs: Vec<(String, String)>,
    child: Option<Child>,
    api: SocketAddr,
}

impl<C: NodeConfig> Node<C> {
    /// A node named `name` (its config file `{dir}/{name}.toml`, its log
    /// `{dir}/{name}.log`), not started yet.
    pub fn new(name: &str, config: C, programs: &Programs, dir: &Path) -> Self {
        Self {
            name: name.into(),
            config,
            programs: programs.clone(),
            dir: dir.into(),
            envs: Vec::new(),
            child: None,
            api: SocketAddr::from(([0, 0, 0, 0], 0)),
        }
    }

    /// Adds `DOCKLINE_*` environment overrides the child starts with.
    pub fn with_env(mut self, key: &str, value: &str) -> Self {
        self.envs.push((key.into(), value.into()));
        self
    }

    /// The node's name (a device id for agents).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The config file every start writes.
    pub fn config_file(&self) -> PathBuf {
        self.dir.join(format!("{}.toml", self.name))
    }

    fn addr_file(&self) -> PathBuf {
        self.config.data_dir().join("api.addr")
    }

    /// Writes the config and starts the child without waiting for it (see
    /// [`Node::wait_ready`]); a running child is killed first.
    pub fn spawn(&mut self) -> Result<(), StackError> {
        self.kill();
        let data = self.config.data_dir().to_path_buf();
        std::fs::create_dir_all(&data).map_err(|source| StackError::Io { path: data, source })?;
        let file = self.config_file();
        config::write(&file, &self.config)?;
        let addr_file = self.addr_file();
        match std::fs::remove_file(&addr_file) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(StackError::Io {
                    path: addr_file,
                    source,
                });
            }
        }
        let args = ["--config".to_string(), file.display().to_string()];
        self.child =
            Some(
                self.programs
                    .spawn(C::ROLE, &self.name, &args, &self.envs, &self.dir)?,
            );
        Ok(())
    }

    /// Waits until the child's API listens; returns its address.
    pub async fn wait_ready(&mut self) -> Result<SocketAddr, StackError> {
        let addr_file = self.addr_file();
        let Some(child) = self.child.as_mut() else {
            return Err(StackError::Options(format!(
                "{} was not started",
                self.name
            )));
        };
        self.api = child.wait_for_addr(&addr_file, READY_TIMEOUT).await?;
        Ok(self.api)
    }

    /// [`Node::spawn`], then [`Node::wait_ready`].
    pub async fn start(&mut self) -> Result<SocketAddr, StackError> {
        self.spawn()?;
        self.wait_ready().await
    }

    /// Kills the child (SIGKILL, no goodbye) if it runs: a crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill();
        }
    }

    /// Kills the child and starts it again with the (possibly changed)
    /// config and the same data; its API listens on a new port.
    pub async fn restart(&mut self) -> Result<SocketAddr, StackError> {
        self.start().await
    }

    /// Asks the child to stop (SIGTERM), killing it after `grace`.
    pub async fn terminate(&mut self, grace: Duration) {
        if let Some(mut child) = self.child.take() {
            child.terminate(grace).await;
        }
    }

    /// Whether the child runs.
    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(Child::is_running)
    }

    /// Where the API listened after the last start (`0.0.0.0:0` before).
    pub fn api(&self) -> SocketAddr {
        self.api
    }

    /// `http://{api}`.
    pub fn url(&self) -> String {
        format!("http://{}", self.api)
    }

    /// The child's log file.
    pub fn log(&self) -> PathBuf {
        self.dir.join(format!("{}.log", self.name))
    }

    /// The child's log so far (over every start).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.log()).unwrap_or_default()
    }

    /// The running child's process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::pid)
    }
}
