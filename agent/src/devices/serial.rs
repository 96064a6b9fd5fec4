//! Serial device sources: scanners, scales, GNSS receivers and bridges on a
//! serial port or USB-CDC.
//!
//! A connection is an open port read with a short timeout, feeding the
//! [`StreamDecoder`]. A read error, EOF, or the path disappearing (a removed
//! `/dev/serial/by-id` link) ends it: the device counts as unplugged and the
//! thread's life in [`super::source`] takes over (back off, open again). A
//! fresh decoder is used per connection: bytes of a frame cut by an unplug
//! must not glue onto the first frame after it.

use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use super::Protocol;
use super::source::{Device, Ended, Outlet};
use super::{DecoderOptions, STREAM_SCAN_OPTIONS, StreamDecoder};
use crate::config::DeviceConfig;
use dockline_firmware::scale::MtSicsPoller;
use dockline_firmware::scan::{ScanOptions, WithoutAim};

/// How long an MT-SICS scale may take to answer a command before the poller
/// sends the next one (a stable-weight `S` can take a second on a busy scale).
const MTSICS_REPLY_TIMEOUT_MS: u64 = 2_000;

/// How long a read waits for bytes. Also the quiet time after which a scan
/// without suffix is complete and an NMEA cycle is flushed, and the longest a
/// thread takes to notice a stop or a vanished path.
const READ_TIMEOUT: Duration = Duration::from_millis(100);

/// A device on a serial port.
pub(crate) struct SerialDevice {
    config: DeviceConfig,
}

impl SerialDevice {
    pub(crate) fn new(config: DeviceConfig) -> Self {
        SerialDevice { config }
    }
}

impl Device for SerialDevice {
    type Link = Box<dyn serialport::SerialPort>;

    fn location(&self) -> String {
        format!(
            "{} ({} baud, {})",
            self.config.path.display(),
            self.config.baud(),
            self.config.protocol
        )
    }

    fn connect(&mut self) -> Result<Self::Link, String> {
        self.open()
    }

    fn read_until_gone(&mut self, port: Self::Link, outlet: &Outlet) -> Ended {
        self.read_port(port, outlet)
    }
}

impl SerialDevice {
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

    fn read_port(&self, mut port: Box<dyn serialport::SerialPort>, outlet: &Outlet) -> Ended {
        let options = DecoderOptions {
            toledo_checksum: self.config.toledo_checksum,
        };
        let scan = ScanOptions {
            without_aim: if self.config.require_aim {
                WithoutAim::Refuse
            } else {
                WithoutAim::AcceptPlain
            },
            ..STREAM_SCAN_OPTIONS
        };
        let mut decoder = StreamDecoder::new(self.config.protocol, options).with_scan_options(scan);
        let mut buf = [0u8; 1024];
        let mut items = Vec::new();
        // MT-SICS: polled and sent operator actions; other protocols only read.
        let mut poller = (self.config.protocol == Protocol::Mtsics)
            .then(|| MtSicsPoller::new(self.config.poll_ms.unwrap_or(0), MTSICS_REPLY_TIMEOUT_MS));
        let started = Instant::now();
        loop {
            if outlet.stopping() {
                return Ended::Stopped;
            }
            if let Some(poller) = poller.as_mut() {
                for action in outlet.scale_actions() {
                    if let Err(e) = poller.request(action) {
                        tracing::warn!(device = %outlet.name(), "scale action {action:?} dropped: {e}");
                    }
                }
                let now = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
                if let Some(command) = poller.next_command(now)
                    && let Err(e) = port.write_all(command.bytes()).and_then(|()| port.flush())
                {
                    return Ended::Unplugged(format!("writing {command:?} failed: {e}"));
                }
            }
            match port.read(&mut buf) {
                Ok(0) => return Ended::Unplugged("end of file".into()),
                Ok(n) => decoder.push(buf.get(..n).unwrap_or_default(), &mut items),
                Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                    decoder.idle(&mut items);
                    // An open fd keeps a device readable after its by-id link
                    // is gone; the link going away is the unplug we can see.
                    if !self.config.path.exists() {
                        outlet.deliver(&mut items);
                        return Ended::Unplugged("path is gone".into());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    decoder.idle(&mut items);
                    outlet.deliver(&mut items);
                    return Ended::Unplugged(format!("read failed: {e}"));
                }
            }
            if let Some(poller) = poller.as_mut() {
                for answer in decoder.take_scale_answers() {
                    match answer {
                        Some(event) => poller.on_response(&event),
                        None => poller.on_garbage(),
                    }
                }
            }
            if !outlet.deliver(&mut items) {
                return Ended::Stopped;
            }
        }
    }
}
