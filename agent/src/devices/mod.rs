//! Device sources: serial scanners, scales, GNSS receivers and peripheral
//! bridges, and I2C load cells, from the bus to readings in the outbox.
//!
//! # Layout
//!
//! - [`decoder`]: the sans-I/O stream decoder. Bytes in, [`Decoded`] items out,
//!   each with the byte offset of the frame it came from. All parsing is the
//!   firmware crate's (`dockline_firmware::{scan, nmea, scale, link, line}`);
//!   this module only frames the stream, tracks offsets and merges NMEA
//!   sentences into one position per receiver cycle.
//! - [`decoded`]: what the decoder yields, as a JSON line (`dockline-agent
//!   decode`) or as a wire-contract [`Reading`](dockline_protocol::Reading).
//! - [`source`]: one blocking thread per configured device: connect, read
//!   until gone, reconnect with capped backoff; the readings channel.
//! - [`serial`]: devices on a serial port or USB-CDC.
//! - [`loadcell`]: NAU7802 load cells on Linux I2C (`protocol = "nau7802"`),
//!   through the firmware driver and weighing pipeline.
//! - [`presence`]: per-device health for `GET /v1/status`.
//!
//! The same decoder serves the `decode` command and the live sources, so a
//! capture that decodes cleanly on the command line decodes the same way on
//! the port.

pub mod decoded;
pub mod decoder;
mod evdev;
pub mod loadcell;
pub mod presence;
pub mod serial;
pub mod source;
pub mod wedge;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub use decoded::{Decoded, Item};
pub use decoder::{DecoderOptions, STREAM_SCAN_OPTIONS, StreamDecoder};
pub use loadcell::{BusOpener, LinuxI2c, LoadCellConfig};
pub use presence::{DevicePresence, Presence};
pub use source::{
    DeviceReading, DevicesReloaded, ScaleActionError, ScaleCommander, Sources, SpawnError,
};

/// The byte protocol a device speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// Barcode scanner: AIM identifier + data, one scan per CR/LF-terminated line.
    Scan,
    /// Keyboard-wedge barcode scanner: Linux evdev `input_event` records
    /// from `/dev/input/event*` (grabbed exclusively), typed on the
    /// scanner's keymap; see [`wedge`].
    Wedge,
    /// GNSS receiver: NMEA 0183 sentences.
    Nmea,
    /// Mettler Toledo MT-SICS response lines (`S S     12.34 kg`).
    Mtsics,
    /// Toledo continuous output (STX status frames).
    Toledo,
    /// SMA (SCP-01) response lines.
    Sma,
    /// NCI / Avery Weigh-Tronix responses ending in ETX.
    Nci,
    /// Peripheral bridge: COBS + CRC frames, each carrying one
    /// [`BridgeMessage`](dockline_firmware::bridge::BridgeMessage) (load-cell
    /// weight or fault).
    Link,
    /// NAU7802 load-cell ADC on Linux I2C (`/dev/i2c-N`); not a byte stream,
    /// so not offered by `dockline-agent decode`.
    #[value(skip)]
    Nau7802,
}

impl Protocol {
    /// Every protocol, for messages that list the choices.
    pub const ALL: [Protocol; 9] = [
        Protocol::Scan,
        Protocol::Nmea,
        Protocol::Mtsics,
        Protocol::Toledo,
        Protocol::Sma,
        Protocol::Nci,
        Protocol::Link,
        Protocol::Nau7802,
        Protocol::Wedge,
    ];

    /// The name used in config files and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Scan => "scan",
            Protocol::Wedge => "wedge",
            Protocol::Nmea => "nmea",
            Protocol::Mtsics => "mtsics",
            Protocol::Toledo => "toledo",
            Protocol::Sma => "sma",
            Protocol::Nci => "nci",
            Protocol::Link => "link",
            Protocol::Nau7802 => "nau7802",
        }
    }

    /// The baud rate a device of this protocol ships with: 9600 for scanners,
    /// u-blox receivers and scale indicators; 115200 for our bridge firmware.
    /// USB-CDC devices ignore it, and so does `nau7802` (I2C).
    pub fn default_baud(self) -> u32 {
        match self {
            Protocol::Link => 115_200,
            _ => 9600,
        }
    }

    /// The device kind this protocol belongs to.
    pub fn kind(self) -> DeviceKind {
        match self {
            Protocol::Scan | Protocol::Wedge => DeviceKind::Scanner,
            Protocol::Nmea => DeviceKind::Gps,
            Protocol::Mtsics
            | Protocol::Toledo
            | Protocol::Sma
            | Protocol::Nci
            | Protocol::Nau7802 => DeviceKind::Scale,
            Protocol::Link => DeviceKind::Bridge,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Protocol {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Protocol::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Protocol::ALL.iter().map(|p| p.name()).collect();
                format!(
                    "unknown device protocol {s:?}; use one of {}",
                    names.join(", ")
                )
            })
    }
}

/// What a device is, which fixes the protocols it may speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceKind {
    /// A barcode scanner (`scan`, `wedge`).
    Scanner,
    /// A weighing scale (`mtsics`, `toledo`, `sma`, `nci`, `nau7802`).
    Scale,
    /// A GNSS receiver (`nmea`).
    Gps,
    /// A peripheral bridge microcontroller (`link`).
    Bridge,
}

impl DeviceKind {
    /// The name used in config files.
    pub fn name(self) -> &'static str {
        match self {
            DeviceKind::Scanner => "scanner",
            DeviceKind::Scale => "scale",
            DeviceKind::Gps => "gps",
            DeviceKind::Bridge => "bridge",
        }
    }
}

impl fmt::Display for DeviceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for p in Protocol::ALL {
            assert_eq!(p.name().parse::<Protocol>(), Ok(p));
        }
        let err = "ups".parse::<Protocol>().expect_err("unknown");
        assert!(err.contains("scan, nmea"), "{err}");
    }
}
