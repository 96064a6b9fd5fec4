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
//!
//! Reload ([`Sources::reload`], on SIGHUP): threads are matched to the new
//! device list by name. A device whose settings are unchanged keeps its
//! thread (and its open port); a removed device's thread is stopped and
//! joined; a changed device's old thread is stopped and joined before its
//! new one starts, so two threads never hold one port; an added device gets
//! a thread. A stopped thread hands every reading it decoded to the channel
//! before it returns, so no reading already read is lost; the feed stores
//! them after the ones before them.

use std::io;
use std::sync::mpsc::{self, RecvTimeoutError, TryRecvError};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use dockline_protocol::Reading;
use tokio::sync::mpsc as async_mpsc;

use super::evdev::EvdevDevice;
use super::loadcell::{BusOpener, LinuxI2c, LoadCellDevice};
use super::presence::Presence;
use super::serial::SerialDevice;
use super::{Item, Protocol};
use crate::config::DeviceConfig;
use dockline_firmware::scale::MtSicsCommand;
use dockline_host::backoff::Backoff;
use dockline_host::clock::now_ms;

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
                self.presence.update(&self.name, |p| {
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
            self.presence.update(&self.name, |p| {
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
    running: Vec<Running>,
    /// Per MT-SICS device name, where its scale commands go; shared with
    /// every [`ScaleCommander`] so a reload reaches them too.
    actions: Actions,
}

/// One device thread and what stops it.
struct Running {
    config: DeviceConfig,
    stop: mpsc::Sender<()>,
    thread: JoinHandle<()>,
}

type Actions = Arc<RwLock<Vec<(String, mpsc::Sender<MtSicsCommand>)>>>;

/// What [`Sources::reload`] did, by device name.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DevicesReloaded {
    /// Devices that got a thread.
    pub added: Vec<String>,
    /// Devices whose thread was stopped.
    pub removed: Vec<String>,
    /// Devices whose thread was stopped and started again with new settings.
    pub restarted: Vec<String>,
    /// Devices left running as they were.
    pub unchanged: Vec<String>,
    /// Devices whose new thread could not start (named with the reason).
    pub failed: Vec<String>,
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
            running: Vec::new(),
            actions: Actions::default(),
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
        for config in devices {
            sources.start(config)?;
        }
        Ok(sources)
    }

    /// Starts the thread of `config` on the bus its protocol names.
    fn start(&mut self, config: &DeviceConfig) -> Result<(), SpawnError> {
        match config.protocol {
            Protocol::Nau7802 => self.add_load_cell(config, LinuxI2c),
            Protocol::Wedge => self.add(config, EvdevDevice::new(config.clone())),
            _ => self.add(config, SerialDevice::new(config.clone())),
        }
    }

    /// Starts the thread of the NAU7802 load cell `config`, on the buses
    /// `opener` opens (the Linux I2C device, or a simulated chip in tests).
    /// A device without a `[devices.load_cell]` table (which
    /// [`crate::Config::check`] rejects) starts a thread that reports this
    /// as its problem.
    pub fn add_load_cell<O: BusOpener>(
        &mut self,
        config: &DeviceConfig,
        opener: O,
    ) -> Result<(), SpawnError> {
        self.add(config, LoadCellDevice::new(config.clone(), opener))
    }

    fn add<D: Device>(&mut self, config: &DeviceConfig, device: D) -> Result<(), SpawnError> {
        let (stop_tx, stop_rx) = mpsc::channel();
        let (action_tx, action_rx) = mpsc::channel();
        let outlet = Outlet {
            name: config.name.clone(),
            presence: self.presence.clone(),
            readings: self.readings.clone(),
            stop: stop_rx,
            actions: action_rx,
        };
        let cap = Duration::from_millis(config.reconnect_max_ms);
        let thread = std::thread::Builder::new()
            .name(format!("device-{}", config.name))
            .spawn(move || run(device, &outlet, cap))
            .map_err(|source| SpawnError {
                device: config.name.clone(),
                source,
            })?;
        if config.protocol == Protocol::Mtsics {
            write(&self.actions).push((config.name.clone(), action_tx));
        }
        self.running.push(Running {
            config: config.clone(),
            stop: stop_tx,
            thread,
        });
        Ok(())
    }

    /// Applies a new device list (SIGHUP): see the module doc. `presence`
    /// follows it. Blocking (joins stopped threads, about one read timeout
    /// each): call it from `spawn_blocking` in async code.
    pub fn reload(&mut self, devices: &[DeviceConfig]) -> DevicesReloaded {
        let mut done = DevicesReloaded::default();
        let (keep, stop): (Vec<Running>, Vec<Running>) = std::mem::take(&mut self.running)
            .into_iter()
            .partition(|r| {
                devices
                    .iter()
                    .any(|d| d.name == r.config.name && *d == r.config)
            });
        self.running = keep;
        for r in stop {
            let name = r.config.name.clone();
            write(&self.actions).retain(|(n, _)| *n != name);
            r.stop_and_join();
            if devices.iter().any(|d| d.name == name) {
                done.restarted.push(name);
            } else {
                done.removed.push(name);
            }
        }
        let kept: Vec<String> = self.running.iter().map(|r| r.config.name.clone()).collect();
        let kept_names: Vec<&str> = kept.iter().map(String::as_str).collect();
        // Presence first, so a new thread finds its entry.
        self.presence.reconcile(devices, &kept_names);
        for d in devices {
            if kept_names.contains(&d.name.as_str()) {
                done.unchanged.push(d.name.clone());
                continue;
            }
            match self.start(d) {
                Ok(()) if done.restarted.contains(&d.name) => {}
                Ok(()) => done.added.push(d.name.clone()),
                Err(e) => {
                    done.restarted.retain(|n| *n != d.name);
                    self.presence
                        .update(&d.name, |p| p.last_error = Some(e.to_string()));
                    done.failed.push(format!("{}: {e}", d.name));
                }
            }
        }
        done
    }

    /// Waits until the feed has taken every reading sent so far (the
    /// channel is empty), at most `max`: after a reload, the readings of a
    /// stopped device reach the station rules they were read under.
    pub async fn drained(&self, max: Duration) {
        let deadline = tokio::time::Instant::now() + max;
        while self.readings.capacity() < self.readings.max_capacity()
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// A handle that sends scale actions from elsewhere (the station feed)
    /// while the device threads run; a reload's scales reach it too. Once
    /// the threads stop, its sends go nowhere.
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
        match self.scale_commander().send(device, command) {
            Err(ScaleActionError::UnknownDevice(_)) if self.presence_has(device) => {
                Err(ScaleActionError::NotCommandable(device.to_owned()))
            }
            other => other,
        }
    }

    fn presence_has(&self, device: &str) -> bool {
        self.presence.snapshot().iter().any(|p| p.name == device)
    }

    /// Stops every thread and waits for it (at most about one read timeout).
    /// Blocking: call it from `spawn_blocking` in async code.
    pub fn stop(self) {
        // Every stop signal first, so the threads wind down together.
        let threads: Vec<JoinHandle<()>> = self
            .running
            .into_iter()
            .map(|r| {
                drop(r.stop);
                r.thread
            })
            .collect();
        for thread in threads {
            join(thread);
        }
    }
}

impl Running {
    fn stop_and_join(self) {
        drop(self.stop);
        join(self.thread);
    }
}

fn join(thread: JoinHandle<()>) {
    if thread.join().is_err() {
        tracing::error!("a device reader thread panicked; its device stopped early");
    }
}

fn write(
    actions: &Actions,
) -> std::sync::RwLockWriteGuard<'_, Vec<(String, mpsc::Sender<MtSicsCommand>)>> {
    // Only pushes and removals happen under this lock: a panic cannot leave
    // the list half-changed.
    actions
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A device thread: connect, read until gone, back off, again.
fn run<D: Device>(mut device: D, outlet: &Outlet, cap: Duration) {
    // No jitter: each device has its own port, so there is no crowd of
    // clients to spread out (unlike the MQTT uplink).
    let backoff = Backoff {
        min: RECONNECT_FIRST.min(cap),
        max: cap,
    };
    let mut attempt = 0u32;
    let mut was_connected = false;
    // Only the first failed connect of an outage is logged as a warning: a
    // scale left unplugged for a day must not fill the log.
    let mut failures = 0u64;
    loop {
        match device.connect() {
            Ok(link) => {
                tracing::info!(device = %outlet.name, at = %device.location(), "device connected");
                outlet.presence.update(&outlet.name, |p| {
                    p.connected = true;
                    if was_connected {
                        p.reconnects += 1;
                    }
                });
                was_connected = true;
                failures = 0;
                attempt = 0;
                match device.read_until_gone(link, outlet) {
                    Ended::Stopped => return,
                    Ended::Unplugged(reason) => {
                        let message = format!(
                            "{} unplugged or stopped answering ({reason}); waiting for it to come back",
                            device.location()
                        );
                        tracing::warn!(device = %outlet.name, "{message}");
                        outlet.presence.update(&outlet.name, |p| {
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
                    .update(&outlet.name, |p| p.last_error = Some(message));
            }
        }
        let delay = backoff.ceiling(attempt);
        attempt = attempt.saturating_add(1);
        if !outlet.pause(delay) {
            return;
        }
    }
}

/// Sends tare/zero actions to MT-SICS scales from outside [`Sources`] (the
/// station feed): shares the device threads' command channels, reloads
/// included.
#[derive(Debug, Clone, Default)]
pub struct ScaleCommander {
    actions: Actions,
}

impl ScaleCommander {
    /// Asks the MT-SICS scale `device` to run `command` before its next
    /// weight poll; refused when no MT-SICS scale of that name runs.
    pub fn send(&self, device: &str, command: MtSicsCommand) -> Result<(), ScaleActionError> {
        let actions = self
            .actions
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some((_, sender)) = actions.iter().find(|(name, _)| name == device) else {
            return Err(ScaleActionError::UnknownDevice(device.to_owned()));
        };
        // A send fails only when the thread has ended (the agent is stopping).
        let _ = sender.send(command);
        Ok(())
    }
}
