//! dockline device code that also runs on a microcontroller.
//!
//! Everything here is `no_std`, sans-I/O and allocation-free: parsers take
//! byte slices (or are fed one byte at a time) and return borrowed or
//! fixed-capacity results, so the same code runs in the gateway agent and on a
//! peripheral bridge microcontroller.
//!
//! * [`scan`]: AIM symbology identifiers, GS1 element strings and Digital Link
//!   URIs, validated against the GS1 Barcode Syntax Dictionary.
//! * [`nmea`]: NMEA 0183 sentences and the epoch assembler that yields one
//!   [`dockline_protocol::Fix`] per receiver cycle.
//! * [`scale`]: MT-SICS, Toledo continuous, SMA and NCI scale protocols.
//! * [`loadcell`]: HX711 and NAU7802 drivers on embedded-hal 1.0, and the
//!   weighing pipeline shared by both (filter, calibration, tare, stability).
//! * [`link`]: COBS + CRC-16 framing of the peripheral bridge link.
//! * [`bridge`]: the peripheral bridge's main loop as a library (load cell →
//!   weigher → framed [`bridge::BridgeMessage`]s on a byte sink) and the
//!   message format the agent decodes.
//! * [`line`]: line framing shared by the text protocols.
//! * `sim` (feature `sim`): simulated chips (a NAU7802 register map) for the
//!   agent's tests and the simulator.

#![no_std]
#![deny(unsafe_code)]
#![deny(missing_docs)]

#[cfg(test)]
extern crate std;

pub mod bridge;
pub mod line;
pub mod link;
pub mod loadcell;
pub mod nmea;
pub mod scale;
pub mod scan;
#[cfg(any(test, feature = "sim"))]
pub mod sim;
