//! The envelope: one event or reading with everything needed to order,
//! deduplicate and trace it.

use serde::{Deserialize, Serialize};

use crate::event::BusinessEvent;
use crate::ids::{DeviceId, EventId};
use crate::reading::Reading;
use crate::validate::ValidationError;

/// Where the capture time came from, so the collector knows how far to trust it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeSource {
    /// GNSS time from the position receiver.
    Gnss,
    /// A clock synchronised by NTP or the network.
    Ntp,
    /// The device's own clock, not known to be synchronised.
    DeviceClock,
}

/// How hard the system must try to deliver an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    /// Picks, proofs of delivery: never shed, fsynced before the producer is acknowledged.
    MustDeliver,
    /// Ordinary business events.
    Normal,
    /// GPS breadcrumbs and raw weights: may be shed under disk pressure.
    Telemetry,
}

/// What an envelope carries.
// A business event is the larger variant (its references); boxing it would
// cost an allocation per event on the hot paths (outbox writes, decode) to
// save stack space in the few places a Payload is held by value.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Payload {
    /// A business event.
    Event(BusinessEvent),
    /// A raw reading (telemetry).
    Reading(Reading),
}

/// One event with its identity, order and time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// Protocol version.
    pub v: u16,
    /// Device that captured the event.
    #[serde(rename = "dev")]
    pub device: DeviceId,
    /// Sequence epoch: a new one starts whenever the device's outbox is created
    /// from scratch, so a reinstalled device is told apart from a gap.
    #[serde(rename = "ep")]
    pub epoch: u64,
    /// Per-device sequence number within the epoch, from 1, never reused.
    pub seq: u64,
    /// Stable event id; also the ERP's idempotency key.
    pub id: EventId,
    /// Capture time, milliseconds since the Unix epoch.
    #[serde(rename = "t")]
    pub captured_ms: i64,
    /// Where `captured_ms` came from.
    #[serde(rename = "ts")]
    pub time_source: TimeSource,
    /// Delivery priority class.
    #[serde(rename = "pri")]
    pub priority: Priority,
    /// The event or reading.
    #[serde(rename = "p")]
    pub payload: Payload,
}

impl Payload {
    /// Checks the payload's rules, naming fields as inside an envelope
    /// (`envelope.p.event…`).
    pub fn validate(&self) -> Result<(), ValidationError> {
        self.check().map_err(|err| err.under("envelope.p"))
    }

    /// Fields named relative to the payload.
    fn check(&self) -> Result<(), ValidationError> {
        match self {
            Payload::Event(e) => e.validate().map_err(|err| err.under("event")),
            Payload::Reading(r) => r.validate().map_err(|err| err.under("reading")),
        }
    }
}

/// The fields of an [`Envelope`] before `seq`, serialised with the same keys
/// in the same order (see [`crate::codec::envelope_prefix`]).
#[derive(Serialize)]
pub(crate) struct Prefix<'a> {
    pub(crate) v: u16,
    #[serde(rename = "dev")]
    pub(crate) device: &'a DeviceId,
    #[serde(rename = "ep")]
    pub(crate) epoch: u64,
}

/// The fields of an [`Envelope`] after `seq` (see
/// [`crate::codec::envelope_tail`]).
#[derive(Serialize)]
pub(crate) struct Tail<'a> {
    pub(crate) id: EventId,
    #[serde(rename = "t")]
    pub(crate) captured_ms: i64,
    #[serde(rename = "ts")]
    pub(crate) time_source: TimeSource,
    #[serde(rename = "pri")]
    pub(crate) priority: Priority,
    #[serde(rename = "p")]
    pub(crate) payload: &'a Payload,
}

/// Fields of an [`Envelope`]: [`Prefix`], `seq`, [`Tail`].
pub(crate) const ENVELOPE_FIELDS: u8 = 9;
pub(crate) const PREFIX_FIELDS: u8 = 3;
pub(crate) const TAIL_FIELDS: u8 = 5;

impl Envelope {
    /// Fields named relative to the envelope.
    pub(crate) fn validate(&self) -> Result<(), ValidationError> {
        if self.seq == 0 {
            return Err(ValidationError {
                field: "seq".into(),
                problem: "is 0; sequences start at 1".into(),
            });
        }
        crate::validate::wire_number("seq", self.seq)?;
        crate::validate::wire_number("ep", self.epoch)?;
        self.payload.check().map_err(|err| err.under("p"))
    }

    /// The business event, if the envelope carries one.
    pub fn business_event(&self) -> Option<&BusinessEvent> {
        match &self.payload {
            Payload::Event(e) => Some(e),
            Payload::Reading(_) => None,
        }
    }
}
