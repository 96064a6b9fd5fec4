//! Station rules: readings from the devices of a station, plus the task in
//! hand, become business events.
//!
//! # Design
//!
//! Every station is a state machine without I/O: it takes one
//! [`Observation`] (what a reading means to a station) at a time and answers
//! with [`Output`]s, business events to append to the outbox and notices for
//! the person at the station. The [`StationEngine`] routes each device's
//! readings to the station it feeds. [`feed`] is the thin async shell that
//! stores readings and events in the outbox.
//!
//! Scans are classified once ([`observation`]): a GS1 scan with AI 00 is an
//! SSCC (logistic unit), one with AI 01 (or an EAN/UPC symbol) an item with
//! its GTIN, lot (AI 10) and count (AI 30, else 1); any other plain scan is a
//! document: a pick list, an order, or a vehicle's barcode. Weights count
//! only when the scale says they are stable; motion readings are ignored.
//!
//! # The rules, per station kind
//!
//! **Pick station** (`pick`: a scanner, optionally a scale). Pick lists are
//! posted to the agent beforehand (`POST /v1/tasks`, held in a [`TaskBook`]).
//! - Scanning a pick list's barcode (its order number as plain text) opens it
//!   and takes it out of the task book, so no other station picks it twice.
//!   An unknown barcode is a notice, no event.
//! - An item scan counts towards its line. An item not on the list is an
//!   `exception wrong_item`; more than the line asks for is an
//!   `exception other` ("put the extra back"); neither is counted.
//! - When a line reaches its quantity: without a scale, or without a unit
//!   weight on the line, it is `picked` at once. Otherwise it waits for its
//!   weight: the first stable reading that differs from the baseline (the
//!   stable weight when the line's first item was scanned, 0 without one) by
//!   more than `min(tolerance, expected / 2)` is the line's weight, the
//!   difference taken as positive (picking into a tote or off a shelf scale).
//!   Within tolerance of quantity × unit weight it is `picked`; otherwise
//!   `exception weight_mismatch` with both weights in the note. Tolerance is
//!   `max(weight_tolerance_kg, weight_tolerance_percent of expected)`.
//! - Scanning another item while a line waits for its weight fails that line
//!   (`weight_mismatch`, "not weighed"): weigh each line before the next.
//! - The task closes when every line is done, or when its barcode (or
//!   another pick list) is scanned. Closing early books what was picked
//!   (`picked` with the partial quantity, unweighed) and an `exception
//!   short_pick` per line that is short.
//!
//! **Pack station** (`pack`: a scanner and a scale). A document scan sets
//! the order for the packages that follow. An SSCC scan opens a package;
//! item scans count its units. The first stable weight above the tolerance
//! that differs from the weight at the SSCC scan by more than the tolerance
//! closes it as `packed` with that weight and the item count (the label's
//! AI 37 when no item was scanned, else 1). A new SSCC while a package waits
//! for its weight is an `exception other` for the unweighed one.
//!
//! **Dock door** (`dock_door`: a scanner). A document scan is the vehicle or
//! trailer now at the door (or `vehicle` from config until one is scanned).
//! An SSCC scan is `loaded` onto it, once per SSCC and vehicle.
//!
//! **Vehicle** (`vehicle`: a GNSS receiver). Circular geofences around the
//! depot and the stops. A fix is inside a fence within `radius_m`, outside
//! beyond `radius_m + hysteresis_m`, and in between counts for neither side;
//! the state changes only after `confirm_fixes` consecutive fixes on the new
//! side, so GPS jitter at the boundary cannot flap. Entering is `arrived`,
//! leaving `departed` (stop fences carry the stop reference, depot fences the
//! location). The first state established after start emits nothing.
//!
//! **Scale actions** (pick and pack stations with an MT-SICS scale): a
//! station's `tare_barcode` or `zero_barcode`, scanned as plain text, is not
//! a document: it becomes an [`Output::ScaleCommand`] (`T` or `Z`) for each
//! MT-SICS scale of the station, sent before the scale's next weight poll,
//! and a notice. Only configured texts act, so no shipment barcode can tare a
//! scale by accident. (The scale is not tared on every SSCC scan: a pack
//! station books the gross weight, carton included, which a tare would hide.)
//!
//! Events carry the station's `location` (default: its name) as location.

pub mod config;
pub mod dock;
pub mod engine;
pub mod feed;
pub mod geofence;
pub mod observation;
pub mod pack;
pub mod pick;
pub mod task;
pub mod vehicle;

pub use config::{GeofenceConfig, GeofenceRole, StationConfig, StationKind};
pub use engine::{StationEngine, StationStatus, Stations, StationsReloaded};
pub use observation::Observation;
pub use task::{PickTask, TaskBook, TaskLine};

use dockline_firmware::scale::MtSicsCommand;
use dockline_protocol::{BusinessEvent, EventDetail, ExceptionKind, References};

/// What a station answers to an observation.
// An output lives for one reading and there are a few at most: boxing the
// event would only add an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// A business event for the outbox.
    Event(BusinessEvent),
    /// Something the person at the station should know; no event.
    Notice(String),
    /// A command for the station's MT-SICS scale (tare, zero), which the
    /// feed passes to the device thread.
    ScaleCommand {
        /// The scale's device name.
        device: String,
        /// What to send.
        command: MtSicsCommand,
    },
}

impl Output {
    /// The event, if this output is one.
    pub fn event(&self) -> Option<&BusinessEvent> {
        match self {
            Output::Event(e) => Some(e),
            Output::Notice(_) | Output::ScaleCommand { .. } => None,
        }
    }
}

/// An exception event with its note.
pub(crate) fn exception(kind: ExceptionKind, note: String, refs: References) -> Output {
    Output::Event(BusinessEvent {
        detail: EventDetail::Exception { kind, note },
        refs,
    })
}

/// A weight tolerance: the larger of an absolute and a relative allowance.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tolerance {
    /// Absolute allowance, kg.
    pub kg: f64,
    /// Relative allowance, percent of the expected weight.
    pub percent: f64,
}

impl Tolerance {
    /// The allowed difference from `expected_kg`.
    pub fn allowed(&self, expected_kg: f64) -> f64 {
        self.kg.max(expected_kg.abs() * self.percent / 100.0)
    }
}
