//! Business events: what happened to goods, in the terms the ERP books.

use alloc::string::String;
use serde::{Deserialize, Serialize};

use crate::reading::{Fix, Weight};
use crate::validate::{self, MAX_TEXT_BYTES, ValidationError};

/// Longest business reference (order number, SSCC, location code).
pub const MAX_REF_BYTES: usize = 128;

/// A business event with the references the ERP correlates it by.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BusinessEvent {
    /// What happened.
    #[serde(rename = "e", alias = "detail")]
    pub detail: EventDetail,
    /// Which documents and things it concerns.
    #[serde(rename = "r", alias = "refs", default)]
    pub refs: References,
}

/// Correlation references: order, shipment, stop, logistic unit, location.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct References {
    /// Sales or transfer order number.
    #[serde(
        rename = "ord",
        alias = "order",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub order: Option<String>,
    /// Shipment (delivery) number.
    #[serde(
        rename = "shp",
        alias = "shipment",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub shipment: Option<String>,
    /// Stop on a delivery route.
    #[serde(
        rename = "stp",
        alias = "stop",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub stop: Option<String>,
    /// SSCC of the logistic unit (pallet, parcel), 18 digits.
    #[serde(rename = "sscc", default, skip_serializing_if = "Option::is_none")]
    pub sscc: Option<String>,
    /// Location: GLN, bin or dock door code.
    #[serde(
        rename = "loc",
        alias = "location",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub location: Option<String>,
    /// Who did it: the operator signed in on the handheld (badge or name).
    /// Added in v1 as an optional field (no version bump).
    #[serde(
        rename = "op",
        alias = "operator",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub operator: Option<String>,
}

/// The kinds of business event, with their own fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventDetail {
    /// Items taken from a pick location for an order.
    Picked {
        /// GTIN or SKU of the item.
        item: String,
        /// Number of units picked.
        #[serde(rename = "qty", alias = "quantity")]
        quantity: u32,
        /// Batch or lot number.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        lot: Option<String>,
    },
    /// Items packed into a logistic unit.
    Packed {
        /// Number of units in the package.
        #[serde(rename = "qty", alias = "quantity")]
        quantity: u32,
        /// Measured weight of the package.
        #[serde(
            rename = "w",
            alias = "weight",
            default,
            skip_serializing_if = "Option::is_none"
        )]
        weight: Option<Weight>,
    },
    /// A logistic unit loaded onto a vehicle.
    Loaded {
        /// Vehicle or trailer id.
        #[serde(rename = "veh", alias = "vehicle")]
        vehicle: String,
    },
    /// A vehicle left a site or stop.
    Departed {
        /// Vehicle id.
        #[serde(rename = "veh", alias = "vehicle")]
        vehicle: String,
        /// Where it was when it left.
        #[serde(
            rename = "pos",
            alias = "position",
            default,
            skip_serializing_if = "Option::is_none"
        )]
        position: Option<Fix>,
    },
    /// A vehicle reached a stop.
    Arrived {
        /// Vehicle id.
        #[serde(rename = "veh", alias = "vehicle")]
        vehicle: String,
        /// Where it arrived.
        #[serde(
            rename = "pos",
            alias = "position",
            default,
            skip_serializing_if = "Option::is_none"
        )]
        position: Option<Fix>,
    },
    /// Goods handed over, with proof of delivery.
    Delivered(ProofOfDelivery),
    /// Something went wrong and a person must look.
    Exception {
        /// The kind of problem.
        kind: ExceptionKind,
        /// Free-text explanation from the picker or driver.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        note: String,
    },
}

/// Proof-of-delivery fields captured at the customer's door.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProofOfDelivery {
    /// Name of the person who received the goods.
    #[serde(rename = "by", alias = "received_by")]
    pub received_by: String,
    /// Number of pieces handed over.
    #[serde(rename = "pcs", alias = "pieces")]
    pub pieces: u32,
    /// Reference (content hash or file name) of the captured signature image.
    #[serde(
        rename = "sig",
        alias = "signature_ref",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub signature_ref: Option<String>,
    /// Reference of the captured photo.
    #[serde(
        rename = "photo",
        alias = "photo_ref",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub photo_ref: Option<String>,
    /// Where the handover happened.
    #[serde(
        rename = "pos",
        alias = "position",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub position: Option<Fix>,
}

/// Kinds of exception a picker or driver can report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExceptionKind {
    /// Fewer units at the location than the pick list asks for.
    ShortPick,
    /// The scanned item is not the one on the pick list.
    WrongItem,
    /// The weighed package differs from the expected weight.
    WeightMismatch,
    /// Goods are damaged.
    Damaged,
    /// The consignee refused the delivery.
    DeliveryRefused,
    /// Nobody was there to receive the goods.
    NotHome,
    /// Anything else; the note explains.
    Other,
}

impl EventDetail {
    /// The event's kind as a lower-case word (`picked`, `delivered`, …), used
    /// in CloudEvents types, logs and the dashboard.
    pub fn kind_name(&self) -> &'static str {
        match self {
            EventDetail::Picked { .. } => "picked",
            EventDetail::Packed { .. } => "packed",
            EventDetail::Loaded { .. } => "loaded",
            EventDetail::Departed { .. } => "departed",
            EventDetail::Arrived { .. } => "arrived",
            EventDetail::Delivered(_) => "delivered",
            EventDetail::Exception { .. } => "exception",
        }
    }
}

impl BusinessEvent {
    pub(crate) fn validate(&self) -> Result<(), ValidationError> {
        let r = &self.refs;
        validate::opt_text("r.ord", &r.order, MAX_REF_BYTES)?;
        validate::opt_text("r.shp", &r.shipment, MAX_REF_BYTES)?;
        validate::opt_text("r.stp", &r.stop, MAX_REF_BYTES)?;
        validate::opt_text("r.sscc", &r.sscc, MAX_REF_BYTES)?;
        validate::opt_text("r.loc", &r.location, MAX_REF_BYTES)?;
        validate::opt_text("r.op", &r.operator, MAX_REF_BYTES)?;
        match &self.detail {
            EventDetail::Picked { item, lot, .. } => {
                validate::text("e.picked.item", item, MAX_REF_BYTES)?;
                validate::opt_text("e.picked.lot", lot, MAX_REF_BYTES)
            }
            EventDetail::Packed { .. } => Ok(()),
            EventDetail::Loaded { vehicle } => {
                validate::text("e.loaded.veh", vehicle, MAX_REF_BYTES)
            }
            EventDetail::Departed { vehicle, position }
            | EventDetail::Arrived { vehicle, position } => {
                validate::text("e.veh", vehicle, MAX_REF_BYTES)?;
                match position {
                    Some(p) => p.validate().map_err(|e| e.under("e.pos")),
                    None => Ok(()),
                }
            }
            EventDetail::Delivered(pod) => {
                validate::text("e.delivered.by", &pod.received_by, MAX_REF_BYTES)?;
                validate::opt_text("e.delivered.sig", &pod.signature_ref, MAX_REF_BYTES)?;
                validate::opt_text("e.delivered.photo", &pod.photo_ref, MAX_REF_BYTES)?;
                match &pod.position {
                    Some(p) => p.validate().map_err(|e| e.under("e.delivered.pos")),
                    None => Ok(()),
                }
            }
            EventDetail::Exception { note, .. } => {
                validate::text("e.exception.note", note, MAX_TEXT_BYTES)
            }
        }
    }
}
