//! Virtual devices: scanners, scales and GNSS receivers that speak the real
//! byte protocols on pseudo-terminals, so an agent reads them through its
//! normal `[[devices]]` serial sources.
//!
//! # Layout
//!
//! - [`pty`]: the wire, a raw pseudo-terminal behind a stable symlink.
//! - [`scanner`]: AIM identifiers, GS1 element strings with FNC1 as GS,
//!   suffixes, misreads.
//! - [`scale`]: MT-SICS lines and Toledo continuous frames from a model of
//!   the load (motion before settling, tare, overload).
//! - [`gps`]: NMEA RMC/VTG/GGA/GSA/GSV/GLL bursts at 1 Hz, with and without
//!   a fix.
//! - [`wedge`]: a keyboard-wedge scanner's `input_event` records, played to a
//!   file or FIFO.
//!
//! The byte generators are pure and each is unit-tested by decoding its
//! output with the firmware crate's parsers, the ones the agent runs, back
//! to the intended reading. What a device *does* over time (which scans,
//! which loads, which route) is the scenarios' business
//! ([`crate::scenario`]).

pub mod gps;
pub mod pty;
pub mod scale;
pub mod scanner;
pub mod wedge;

pub use gps::{FixState, GpsReceiver};
pub use pty::{PortError, VirtualPort};
pub use scale::{ScaleModel, ScaleProtocol};
pub use scanner::{Suffix, Symbol};
