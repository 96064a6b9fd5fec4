//! The one way the system under test gets its MQTT broker: an embedded
//! rumqttd in a child `dockline-sim broker` (killable and restartable on the
//! same port, for outages), or a broker already running elsewhere (the
//! machine's Mosquitto, named by `DOCKLINE_TEST_MQTT_URL` in the tests).
//!
//! The embedded broker runs in a child, never in this process: rumqttd cannot
//! be stopped (see [`crate::broker`]), and a broker outage must be a real
//! crash.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::child::{Child, ChildError};
use super::config::MqttAddr;
use super::programs::{Programs, Role};
use super::{READY_TIMEOUT, StackError};

/// The broker of a stack; see the module docs.
#[derive(Debug)]
pub enum Broker {
    /// A `dockline-sim broker` child.
    Embedded(Box<EmbeddedBroker>),
    /// A broker this stack does not run.
    External(MqttAddr),
}

/// A `dockline-sim broker` child on a fixed loopback address.
#[derive(Debug)]
pub struct EmbeddedBroker {
    programs: Programs,
    dir: PathBuf,
    addr: SocketAddr,
    child: Option<Child>,
    /// Starts so far; numbers the log and address files (`broker-N`).
    starts: u32,
}

impl Broker {
    /// Starts an embedded broker on a free loopback port; its files and
    /// log go to `dir` (`broker-1.log`, …).
    pub async fn embedded(programs: &Programs, dir: &Path) -> Result<Self, StackError> {
        let mut broker = EmbeddedBroker {
            programs: programs.clone(),
            dir: dir.into(),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            child: None,
            starts: 0,
        };
        broker.addr = broker.start_once().await?;
        Ok(Self::Embedded(Box::new(broker)))
    }

    /// Where clients connect.
    pub fn addr(&self) -> MqttAddr {
        match self {
            Self::Embedded(b) => MqttAddr::from(b.addr),
            Self::External(a) => a.clone(),
        }
    }

    /// Whether the broker is up (an external one always counts as up).
    pub fn is_up(&self) -> bool {
        match self {
            Self::Embedded(b) => b.child.is_some(),
            Self::External(_) => true,
        }
    }

    /// Kills an embedded broker at once (SIGKILL): a crash, not a shutdown.
    /// An external broker is not this stack's to kill: nothing happens.
    pub fn kill(&mut self) {
        if let Self::Embedded(b) = self
            && let Some(mut child) = b.child.take()
        {
            child.kill();
        }
    }

    /// Starts an embedded broker again on the same address, retrying while
    /// the old socket is still being released.
    pub async fn restart(&mut self) -> Result<(), StackError> {
        let Self::Embedded(b) = self else {
            return Ok(());
        };
        b.child = None;
        let mut last = None;
        for _ in 0..20 {
            match b.start_once().await {
                Ok(_) => return Ok(()),
                Err(e) => {
                    last = Some(e);
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            }
        }
        Err(last.unwrap_or(StackError::Options("broker restart never attempted".into())))
    }
}

impl EmbeddedBroker {
    /// One start on `self.addr`; returns the bound address.
    async fn start_once(&mut self) -> Result<SocketAddr, StackError> {
        self.starts += 1;
        let name = format!("broker-{}", self.starts);
        let addr_file = self.dir.join(format!("{name}.addr"));
        let args = [
            "--listen".to_string(),
            self.addr.to_string(),
            "--addr-file".to_string(),
            addr_file.display().to_string(),
        ];
        let mut child = self
            .programs
            .spawn(Role::Broker, &name, &args, &[], &self.dir)?;
        let addr = child
            .wait_for_addr(&addr_file, READY_TIMEOUT)
            .await
            .map_err(|e: ChildError| StackError::Child(e))?;
        self.child = Some(child);
        Ok(addr)
    }
}
