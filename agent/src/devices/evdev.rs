//! Keyboard-wedge scanner sources: a Linux input device
//! (`/dev/input/by-id/usb-…-event-kbd`) grabbed exclusively, so scans do not
//! also type into a console, and read as `input_event` records through the
//! same [`StreamDecoder`] as a recorded capture (`dockline-agent decode
//! --device wedge`).
//!
//! The device is non-blocking: between bursts the thread pauses briefly,
//! which is also how it notices a stop, and a quiet line completes a scan
//! sent without a suffix key. A read error (the scanner unplugged) ends the
//! connection; the thread's life in [`super::source`] opens it again.

use std::io;
use std::time::{Duration, Instant, UNIX_EPOCH};

use super::source::{Device, Ended, Outlet};
use super::wedge::input_event;
use super::{DecoderOptions, STREAM_SCAN_OPTIONS, StreamDecoder};
use crate::config::DeviceConfig;
use dockline_firmware::scan::{ScanOptions, WithoutAim};

/// Pause between empty reads.
const PAUSE: Duration = Duration::from_millis(20);
/// Quiet time after which a scan without suffix is complete.
const QUIET: Duration = Duration::from_millis(100);

/// A keyboard-wedge scanner on an evdev node.
pub(crate) struct EvdevDevice {
    config: DeviceConfig,
}

impl EvdevDevice {
    pub(crate) fn new(config: DeviceConfig) -> Self {
        EvdevDevice { config }
    }
}

impl Device for EvdevDevice {
    type Link = evdev::Device;

    fn location(&self) -> String {
        format!("{} (evdev keyboard wedge)", self.config.path.display())
    }

    fn connect(&mut self) -> Result<Self::Link, String> {
        let path = &self.config.path;
        let mut device = evdev::Device::open(path).map_err(|e| {
            let hint = match e.kind() {
                io::ErrorKind::NotFound => "is the scanner plugged in? check the path",
                io::ErrorKind::PermissionDenied => "add the agent's user to the input group",
                _ => "check that the path is an input event device",
            };
            format!(
                "cannot open {} for device {:?}: {e}; {hint}",
                path.display(),
                self.config.name
            )
        })?;
        device.grab().map_err(|e| {
            format!(
                "cannot grab {} exclusively for device {:?}: {e}; another program (X, a console, another agent) holds it",
                path.display(),
                self.config.name
            )
        })?;
        device
            .set_nonblocking(true)
            .map_err(|e| format!("cannot make {} non-blocking: {e}", path.display()))?;
        Ok(device)
    }

    fn read_until_gone(&mut self, mut device: Self::Link, outlet: &Outlet) -> Ended {
        let scan = ScanOptions {
            without_aim: if self.config.require_aim {
                WithoutAim::Refuse
            } else {
                WithoutAim::AcceptPlain
            },
            ..STREAM_SCAN_OPTIONS
        };
        let mut decoder = StreamDecoder::new(self.config.protocol, DecoderOptions::default())
            .with_scan_options(scan)
            .with_wedge_options(self.config.wedge.unwrap_or_default());
        let mut items = Vec::new();
        let mut last_input = Instant::now();
        loop {
            let ended = match device.fetch_events() {
                Ok(events) => {
                    for event in events {
                        let at = event
                            .timestamp()
                            .duration_since(UNIX_EPOCH)
                            .unwrap_or_default();
                        let record = input_event(
                            i64::try_from(at.as_secs()).unwrap_or(i64::MAX),
                            i64::from(at.subsec_micros()),
                            event.event_type().0,
                            event.code(),
                            event.value(),
                        );
                        decoder.push(&record, &mut items);
                    }
                    last_input = Instant::now();
                    None
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if last_input.elapsed() >= QUIET {
                        decoder.idle(&mut items);
                    }
                    if !outlet.pause(PAUSE) {
                        Some(Ended::Stopped)
                    } else {
                        None
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => None,
                Err(e) => Some(Ended::Unplugged(format!("read failed: {e}"))),
            };
            if !outlet.deliver(&mut items) {
                return Ended::Stopped;
            }
            if let Some(ended) = ended {
                // Best effort: the fd closes with the device anyway.
                let _ = device.ungrab();
                return ended;
            }
        }
    }
}
