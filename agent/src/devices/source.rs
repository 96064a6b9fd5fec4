//! Device source threads: one per configured device, whatever its bus.
//!
//! # Design
//!
//! Serial reads and I2C transfers block, so each device gets a dedicated
//! thread (never the async runtime); readings cross to async code over a
//! bounded channel ([`DeviceReading`]), where [`crate::stations::feed`]
//! stores them in the outbox and hands them to the station rules. A full
//! channel makes the thread wait; the kernel's tty buffer (or the load cell,
//! which simply converts again) absorbs the pause.
//!
//! Every thread lives the same life, whatever the bus: connect
//! ([`Device::connect`]: open a port, or open the I2C bus and initialise the
//! chip) → read until the device is gone ([`Device::read_until_gone`]) →
//! wait ([`Backoff`], doubling up to the device's `reconnect_max_ms`) and
//! connect again, for as long as the agent runs. Every step is recorded in
//! [`Presence`]: connected or not, reconnects, readings, rejected frames and
//! the last problem. Only the bus-specific parts differ:
//! [`super::serial`] (ports) and [`super::loadcell`] (I2C load cells).
//!
//! Stopping: each thread holds the receiving end of a channel that
//! [`Sources`] keeps the sending end of. Dropping it wakes a thread waiting
//! to reconnect at once, and a reading thread within one read timeout or
//! poll interval.

use std::io;
use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError, TryRecvError};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dockline_protocol::Reading;
use tokio::sync::mpsc as async_mpsc;

use super::backoff::Backoff;
use super::evdev::EvdevDevice;
use super::loadcell::{BusOpener, LinuxI2c, LoadCellDevice};
use super::presence::Presence;
use super::serial::SerialDevice;
use super::{Item, Protocol};
use crate::config::DeviceConfig;
use dockline_firmware::scale::MtSicsCommand;

/// First delay before connecting to a lost device again.
const RECONNECT_FIRST: Duration = Duration::from_millis(100);

/// One reading from a device, on its way to the outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceReading {
    /// The configured device name.
    pub device: String,
    /// When it was decoded (Unix ms, agent clock).
    pub captured_ms: i64,
    /// The reading.
    pub reading: Reading,
}

/// Why the sources could not start.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot start the reader thread for device {device:?}: {source}; the system is out of threads or memory"
)]
pub struct SpawnError {
    /// The device.
    pub device: String,
    /// Why.
    pub source: io::Error,
}

/// Why a connection ended.
pub(crate) enum Ended {
    /// The agent is stopping.
    Stopped,
    /// The device went away (unplugged, bus error, no answer); the text says how.
    Unplugged(String),
}

/// The bus-specific half of a device thread.
pub(crate) trait Device: Send + 'static {
    /// An open connection (a port, an initialised chip).
    type Link;

    /// Where the device is, for messages (`/dev/ttyUSB0`, `NAU7802 at 0x2A on /dev/i2c-1`).
    fn location(&self) -> String;

    /// Open the device; the error says what failed and what to check.
    fn connect(&mut self) -> Result<Self::Link, String>;

    /// Read and deliver until the device is gone or the agent stops.
    fn read_until_gone(&mut self, link: Self::Link, outlet: &Outlet) -> Ended;
}

/// What a device thread talks to: the readings channel, its presence entry,
/// and the stop signal.
pub(crate) struct Outlet {
    name: String,
    index: usize,
    presence: Arc<Presence>,
    readings: async_mpsc::Sender<DeviceReading>,
    stop: mpsc::Receiver<()>,
    actions: mpsc::Receiver<MtSicsCommand>,
}

impl Outlet {
    /// Scale commands asked for since the last call ([`Sources::scale_action`]).
    pub(crate) fn scale_actions(&self) -> Vec<MtSicsCommand> {
        self.actions.try_iter().collect()
    }

    /// The configured device name.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// Whether the agent asked the thread to stop.
    pub(crate) fn stopping(&self) -> bool {
        !matches!(self.stop.try_recv(), Err(TryRecvError::Empty))
    }

    /// Waits `delay`, or less when the agent stops; `false` when stopping.
    pub(crate) fn pause(&self, delay: Duration) -> bool {
        matches!(
            self.stop.recv_timeout(delay),
            Err(RecvTimeoutError::Timeout)
        )
    }

    /// Sends the readings among `items` on and records the rest (rejected
    /// frames, device states) in the presence; `false` when the agent no
    /// longer takes readings.
    pub(crate) fn deliver(&self, items: &mut Vec<Item>) -> bool {
        for item in items.drain(..) {
            if let Some(reason) = item.reason() {
                let reason = reason.to_owned();
                tracing::warn!(device = %self.name, offset = item.offset, "{reason}");
                self.presence.update(self.index, |p| {
                    p.rejected += 1;
                    p.last_error = Some(reason);
                });
                continue;
            }
            let Some(reading) = item.to_reading() else {
                tracing::debug!(device = %self.name, item = %item.to_json_line(), "not a reading the wire contract carries; skipped");
                continue;
            };
            let now = now_ms();
            self.presence.update(self.index, |p| {
                p.readings += 1;
                p.last_reading_ms = Some(now);
            });
            let sent = self.readings.blocking_send(DeviceReading {
                device: self.name.clone(),
                captured_ms: now,
                reading,
            });
            if sent.is_err() {
                return false;
            }
        }
        true
    }
}

/// The running device threads.
pub struct Sources {
    presence: Arc<Presence>,
    readings: async_mpsc::Sender<DeviceReading>,
    stops: Vec<mpsc::Sender<()>>,
    /// Per device name, where its scale commands go.
    actions: Vec<(String, mpsc::Sender<MtSicsCommand>)>,
    threads: Vec<JoinHandle<()>>,
}

/// Why a scale command was not passed on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScaleActionError {
    /// No device of that name runs here.
    #[error("no device {0:?} on this agent; check the station's device names")]
    UnknownDevice(String),
    /// The device does not take commands (only MT-SICS scales do).
    #[error("device {0:?} does not take scale commands; only MT-SICS scales (protocol mtsics) do")]
    NotCommandable(String),
}

impl Sources {
    /// No threads yet; readings will go to `readings`, health to `presence`
    /// (made from the same device list the threads are added from).
    pub fn new(presence: Arc<Presence>, readings: async_mpsc::Sender<DeviceReading>) -> Sources {
        Sources {
            presence,
            readings,
            stops: Vec::new(),
            actions: Vec::new(),
            threads: Vec::new(),
        }
    }

    /// Starts one thread per device: serial protocols on their port, the
    /// `nau7802` protocol on the Linux I2C bus at its path.
    pub fn spawn(
        devices: &[DeviceConfig],
        presence: Arc<Presence>,
        readings: async_mpsc::Sender<DeviceReading>,
    ) -> Result<Sources, SpawnError> {
        let mut sources = Sources::new(presence, readings);
        for (index, config) in devices.iter().enumerate() {
            match config.protocol {
                Protocol::Nau7802 => sources.add_load_cell(index, config, LinuxI2c)?,
                Protocol::Wedge => sources.add(index, config, EvdevDevice::new(config.clone()))?,
                _ => sources.add(index, config, SerialDevice::new(config.clone()))?,
            }
        }
        Ok(sources)
    }

    /// Starts the thread of the NAU7802 load cell configured at `index`, on
    /// the buses `opener` opens (the Linux I2C device, or a simulated chip
    /// in tests). A device without a `[devices.load_cell]` table (which
    /// [`crate::Config::check`] rejects) starts a thread that reports this
    /// as its problem.
    pub fn add_load_cell<O: BusOpener>(
        &mut self,
        index: usize,
        config: &DeviceConfig,
        opener: O,
    ) -> Result<(), SpawnError> {
        self.add(index, config, LoadCellDevice::new(config.clone(), opener))
    }

    fn add<D: Device>(
        &mut self,
        index: usize,
        config: &DeviceConfig,
        device: D,
    ) -> Result<(), SpawnError> {
        let (stop_tx, stop_rx) = mpsc::channel();
        let (action_tx, action_rx) = mpsc::channel();
        let outlet = Outlet {
            name: config.name.clone(),
            index,
            presence: self.presence.clone(),
            readings: self.readings.clone(),
            stop: stop_rx,
            actions: action_rx,
        };
        if config.protocol == Protocol::Mtsics {
            self.actions.push((config.name.clone(), action_tx));
        }
        let cap = Duration::from_millis(config.reconnect_max_ms);
        let thread = std::thread::Builder::new()
            .name(format!("device-{}", config.name))
            .spawn(move || run(device, &outlet, cap))
            .map_err(|source| SpawnError {
                device: config.name.clone(),
                source,
            })?;
        self.stops.push(stop_tx);
        self.threads.push(thread);
        Ok(())
    }

    /// A handle that sends scale actions from elsewhere (the station feed)
    /// while the device threads run; it outlives nothing: once the threads
    /// stop, its sends go nowhere.
    pub fn scale_commander(&self) -> ScaleCommander {
        ScaleCommander {
            actions: self.actions.clone(),
        }
    }

    /// Asks the MT-SICS scale `device` to tare, zero, clear its tare or
    /// reset (a station's action); the device thread sends it before its next
    /// weight poll.
    pub fn scale_action(
        &self,
        device: &str,
        command: MtSicsCommand,
    ) -> Result<(), ScaleActionError> {
        let Some((_, sender)) = self.actions.iter().find(|(name, _)| name == device) else {
            return Err(if self.presence_has(device) {
                ScaleActionError::NotCommandable(device.to_owned())
            } else {
                ScaleActionError::UnknownDevice(device.to_owned())
            });
        };
        // A send fails only when the thread has ended (the agent is stopping).
        let _ = sender.send(command);
        Ok(())
    }

    fn presence_has(&self, device: &str) -> bool {
        self.presence.snapshot().iter().any(|p| p.name == device)
    }

    /// Stops every thread and waits for it (at most about one read timeout).
    /// Blocking: call it from `spawn_blocking` in async code.
    pub fn stop(self) {
        drop(self.stops);
        for thread in self.threads {
            if thread.join().is_err() {
                tracing::error!("a device reader thread panicked; its device stopped early");
            }
        }
    }
}

/// A device thread: connect, read until gone, back off, again.
fn run<D: Device>(mut device: D, outlet: &Outlet, cap: Duration) {
    let mut backoff = Backoff::new(RECONNECT_FIRST, cap);
    let mut was_connected = false;
    // Only the first failed connect of an outage is logged as a warning: a
    // scale left unplugged for a day must not fill the log.
    let mut failures = 0u64;
    loop {
        match device.connect() {
            Ok(link) => {
                tracing::info!(device = %outlet.name, at = %device.location(), "device connected");
                outlet.presence.update(outlet.index, |p| {
                    p.connected = true;
                    if was_connected {
                        p.reconnects += 1;
                    }
                });
                was_connected = true;
                failures = 0;
                backoff.reset();
                match device.read_until_gone(link, outlet) {
                    Ended::Stopped => return,
                    Ended::Unplugged(reason) => {
                        let message = format!(
                            "{} unplugged or stopped answering ({reason}); waiting for it to come back",
                            device.location()
                        );
                        tracing::warn!(device = %outlet.name, "{message}");
                        outlet.presence.update(outlet.index, |p| {
                            p.connected = false;
                            p.last_error = Some(message);
                        });
                    }
                }
            }
            Err(message) => {
                if failures == 0 {
                    tracing::warn!(device = %outlet.name, "{message}");
                } else {
                    tracing::debug!(device = %outlet.name, "{message}");
                }
                failures += 1;
                outlet
                    .presence
                    .update(outlet.index, |p| p.last_error = Some(message));
            }
        }
        if !outlet.pause(backoff.next_delay()) {
            return;
        }
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Sends tare/zero actions to MT-SICS scales from outside [`Sources`] (the
/// station feed): a clone of the device threads' command channels.
#[derive(Debug, Clone, Default)]
pub struct ScaleCommander {
    actions: Vec<(String, mpsc::Sender<MtSicsCommand>)>,
}

impl ScaleCommander {
    /// Asks the MT-SICS scale `device` to run `command` before its next
    /// weight poll; refused when no MT-SICS scale of that name runs.
    pub fn send(&self, device: &str, command: MtSicsCommand) -> Result<(), ScaleActionError> {
        let Some((_, sender)) = self.actions.iter().find(|(name, _)| name == device) else {
            return Err(ScaleActionError::UnknownDevice(device.to_owned()));
        };
        // A send fails only when the thread has ended (the agent is stopping).
        let _ = sender.send(command);
        Ok(())
    }
}
