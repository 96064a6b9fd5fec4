//! The delivery class of a business event when its producer does not say.
//!
//! Picks, packs, loads, proofs of delivery and exceptions are the ERP's
//! bookings and must not be shed (fsynced before the producer hears back);
//! departures and arrivals are normal events. One rule for the local API and
//! the station rules alike.

use dockline_protocol::{EventDetail, Priority};

/// The default priority of an event of this kind.
pub fn for_event(detail: &EventDetail) -> Priority {
    match detail {
        EventDetail::Picked { .. }
        | EventDetail::Packed { .. }
        | EventDetail::Loaded { .. }
        | EventDetail::Delivered(_)
        | EventDetail::Exception { .. } => Priority::MustDeliver,
        EventDetail::Departed { .. } | EventDetail::Arrived { .. } => Priority::Normal,
    }
}
