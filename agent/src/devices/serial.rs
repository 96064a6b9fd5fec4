//! Serial device sources: one blocking reader thread per configured device.
//!
//! # Design
//!
//! Serial reads block, so each device gets a dedicated thread (never the async
//! runtime); readings cross to async code over a bounded channel
//! ([`DeviceReading`]), where [`crate::stations::feed`] stores them in the
//! outbox and hands them to the station rules.
//! A full channel makes the reader wait, and the kernel's tty buffer absorbs
//! the pause.
//!
//! A thread's life: open the port → read with a short timeout, feeding the
//! [`StreamDecoder`] → on a read error, EOF, or the path disappearing (a
//! removed `/dev/serial/by-id` link), the device counts as unplugged → wait
//! ([`Backoff`]) and open again, for as long as the agent runs. Every step is
//! recorded in [`Presence`]. A fresh decoder is used per connection: bytes of
//! a frame cut by an unplug must not glue onto the first frame after it.
//!
//! Stopping: each thread holds the receiving end of a channel that
//! [`Sources`] keeps the sending end of. Dropping it wakes a thread waiting
//! to reconnect at once, and a reading thread within one read timeout.

use std::io::{self, Read};
use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError, TryRecvError};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dockline_protocol::Reading;
use tokio::sync::mpsc as async_mpsc;

use super::backoff::Backoff;
use super::presence::Presence;
use super::{DecoderOptions, StreamDecoder};
use crate::config::DeviceConfig;

/// How long a read waits for bytes. Also the quiet time after which a scan
/// without suffix is complete and an NMEA cycle is flushed, and the longest a
/// thread takes to notice a stop or a vanished path.
const READ_TIMEOUT: Duration = Duration::from_millis(100);

/// First delay before reopening a lost device.
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

/// The running reader threads.
pub struct Sources {
    stops: Vec<mpsc::Sender<()>>,
    threads: Vec<JoinHandle<()>>,
}

impl Sources {
    /// Starts one reader thread per device; readings go to `readings`.
    pub fn spawn(
        devices: &[DeviceConfig],
        presence: Arc<Presence>,
        readings: async_mpsc::Sender<DeviceReading>,
    ) -> Result<Sources, SpawnError> {
        let mut sources = Sources {
            stops: Vec::new(),
            threads: Vec::new(),
        };
        for (index, config) in devices.iter().enumerate() {
            let (stop_tx, stop_rx) = mpsc::channel();
            let reader = DeviceReader {
                config: config.clone(),
                index,
                presence: presence.clone(),
                readings: readings.clone(),
                stop: stop_rx,
            };
            let thread = std::thread::Builder::new()
                .name(format!("device-{}", config.name))
                .spawn(move || reader.run())
                .map_err(|source| SpawnError {
                    device: config.name.clone(),
                    source,
                })?;
            sources.stops.push(stop_tx);
            sources.threads.push(thread);
        }
        Ok(sources)
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

/// Why a connection ended.
enum Ended {
    /// The agent is stopping.
    Stopped,
    /// The device went away.
    Unplugged(String),
}

struct DeviceReader {
    config: DeviceConfig,
    index: usize,
    presence: Arc<Presence>,
    readings: async_mpsc::Sender<DeviceReading>,
    stop: mpsc::Receiver<()>,
}

impl DeviceReader {
    fn run(self) {
        let cap = Duration::from_millis(self.config.reconnect_max_ms);
        let mut backoff = Backoff::new(RECONNECT_FIRST, cap);
        let mut was_connected = false;
        // Only the first failed open of an outage is logged as a warning: a
        // scale left unplugged for a day must not fill the log.
        let mut failures = 0u64;
        loop {
            match self.open() {
                Ok(port) => {
                    tracing::info!(
                        device = %self.config.name, path = %self.config.path.display(),
                        baud = self.config.baud(), protocol = %self.config.protocol,
                        "device connected"
                    );
                    self.presence.update(self.index, |p| {
                        p.connected = true;
                        if was_connected {
                            p.reconnects += 1;
                        }
                    });
                    was_connected = true;
                    failures = 0;
                    backoff.reset();
                    match self.read_until_gone(port) {
                        Ended::Stopped => return,
                        Ended::Unplugged(reason) => {
                            let message = format!(
                                "{} unplugged or stopped answering ({reason}); waiting for it to come back",
                                self.config.path.display()
                            );
                            tracing::warn!(device = %self.config.name, "{message}");
                            self.presence.update(self.index, |p| {
                                p.connected = false;
                                p.last_error = Some(message);
                            });
                        }
                    }
                }
                Err(message) => {
                    if failures == 0 {
                        tracing::warn!(device = %self.config.name, "{message}");
                    } else {
                        tracing::debug!(device = %self.config.name, "{message}");
                    }
                    failures += 1;
                    self.presence
                        .update(self.index, |p| p.last_error = Some(message));
                }
            }
            match self.stop.recv_timeout(backoff.next_delay()) {
                Err(RecvTimeoutError::Timeout) => {}
                Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    fn open(&self) -> Result<Box<dyn serialport::SerialPort>, String> {
        let path = self.config.path.to_string_lossy();
        serialport::new(path.as_ref(), self.config.baud())
            .timeout(READ_TIMEOUT)
            .open()
            .map_err(|e| {
                let hint = match e.kind() {
                    serialport::ErrorKind::NoDevice => "is it plugged in? check the path",
                    serialport::ErrorKind::Io(io::ErrorKind::NotFound) => {
                        "is it plugged in? check the path"
                    }
                    serialport::ErrorKind::Io(io::ErrorKind::PermissionDenied) => {
                        "add the agent's user to the dialout group"
                    }
                    _ => "check the path and that no other program holds the port",
                };
                format!(
                    "cannot open {} for device {:?}: {e}; {hint}",
                    self.config.path.display(),
                    self.config.name
                )
            })
    }

    fn stopping(&self) -> bool {
        !matches!(self.stop.try_recv(), Err(TryRecvError::Empty))
    }

    fn read_until_gone(&self, mut port: Box<dyn serialport::SerialPort>) -> Ended {
        let options = DecoderOptions {
            toledo_checksum: self.config.toledo_checksum,
        };
        let mut decoder = StreamDecoder::new(self.config.protocol, options);
        let mut buf = [0u8; 1024];
        let mut items = Vec::new();
        loop {
            if self.stopping() {
                return Ended::Stopped;
            }
            match port.read(&mut buf) {
                Ok(0) => return Ended::Unplugged("end of file".into()),
                Ok(n) => decoder.push(buf.get(..n).unwrap_or_default(), &mut items),
                Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                    decoder.idle(&mut items);
                    // An open fd keeps a device readable after its by-id link
                    // is gone; the link going away is the unplug we can see.
                    if !self.config.path.exists() {
                        self.deliver(&mut items);
                        return Ended::Unplugged("path is gone".into());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    decoder.idle(&mut items);
                    self.deliver(&mut items);
                    return Ended::Unplugged(format!("read failed: {e}"));
                }
            }
            if !self.deliver(&mut items) {
                return Ended::Stopped;
            }
        }
    }

    /// Sends the readings among `items` on and records the rest; `false` when
    /// the agent no longer takes readings.
    fn deliver(&self, items: &mut Vec<super::Item>) -> bool {
        for item in items.drain(..) {
            if let Some(reason) = item.reason() {
                let reason = reason.to_owned();
                tracing::warn!(device = %self.config.name, offset = item.offset, "{reason}");
                self.presence.update(self.index, |p| {
                    p.rejected += 1;
                    p.last_error = Some(reason);
                });
                continue;
            }
            let Some(reading) = item.to_reading() else {
                tracing::debug!(device = %self.config.name, item = %item.to_json_line(), "not a reading the wire contract carries; skipped");
                continue;
            };
            let now = now_ms();
            self.presence.update(self.index, |p| {
                p.readings += 1;
                p.last_reading_ms = Some(now);
            });
            let sent = self.readings.blocking_send(DeviceReading {
                device: self.config.name.clone(),
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

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
