//! EPCIS 2.0 export: dockline business events as GS1 EPCIS 2.0 JSON-LD, and
//! a client for an EPCIS repository's capture interface.
//!
//! - [`export`]: envelope → EPCIS event → `EPCISDocument` (pure, no I/O);
//! - [`gs1`]: GTIN / SSCC / GLN → EPC URIs and Digital Link URIs (pure);
//! - [`capture`]: `POST /capture` and capture-job reads, errors classified
//!   for the delivery policy.
//!
//! The `epcis` ERP adapter ([`crate::erp::epcis`], `[erp] kind = "epcis"`)
//! delivers through these: [`Exporter::document_for`], then
//! [`CaptureClient::event_exists`] and [`CaptureClient::capture`], with
//! [`CaptureError::attempt_outcome`] handed to the delivery policy.
//!
//! # Mapping (CBV 2.0 vocabulary)
//!
//! | dockline event | EPCIS event | action | bizStep | disposition | what |
//! |---|---|---|---|---|---|
//! | `picked` | ObjectEvent | OBSERVE | `picking` | `in_progress` | `quantityList`: the item's class × quantity |
//! | `packed`, SSCC and contents known | AggregationEvent | ADD | `packing` | `in_progress` | `parentID` = SSCC; `childEPCs` = inner SSCCs, `childQuantityList` = items ([`Contents`], from the caller) |
//! | `packed`, otherwise | ObjectEvent | OBSERVE | `packing` | `in_progress` | `epcList` = the SSCC (or empty) |
//! | `loaded` | ObjectEvent | OBSERVE | `loading` | `in_progress` | the SSCC, else the vehicle |
//! | `departed` | ObjectEvent | OBSERVE | `departing` | `in_transit` | the SSCC, else the vehicle |
//! | `arrived` | ObjectEvent | OBSERVE | `arriving` | `in_transit` | the SSCC, else the vehicle |
//! | `delivered` (proof of delivery) | ObjectEvent | OBSERVE | `accepting` | none | the SSCC (or empty) |
//! | `exception` | ObjectEvent | OBSERVE | see below | see below | the SSCC (or empty) |
//!
//! A packed weight becomes a `sensorElementList` `Mass` report (UN/ECE units
//! `KGM`, `GRM`, `LBR`, `ONZ`). `packed` is an AggregationEvent only when the
//! SSCC and at least one child are known, because EPCIS requires a parent and
//! children for `ADD`; the packed event itself names no items, so the caller
//! passes what it knows (the order's picks) or nothing.
//!
//! **Exceptions** have no CBV business step of their own. They are exported
//! as `inspecting` ("reviewing objects to address potential physical or
//! documentation defects"), a step outside the pick→deliver flow so that
//! counts of `picking` or `packing` events are not inflated, with the
//! disposition saying what was found: `short_pick` → `mismatch_quantity`,
//! `wrong_item` → `mismatch_class`, `weight_mismatch` → `non_conformant`,
//! `damaged` → `damaged`, `other` → none. A refused delivery or nobody at home
//! is `holding` ("segregated for further review") with `in_transit`: the
//! goods stay with the carrier. The dockline kind and note ride along as
//! `dockline:exception` and `dockline:note`.
//!
//! # Identifiers
//!
//! - `eventID`: `urn:uuid:{dockline event id}`, stable across retries, so a
//!   repository can refuse a second capture of the same event.
//! - `eventTime`: the capture time in UTC with milliseconds;
//!   `eventTimeZoneOffset`: the site's configured fixed offset
//!   ([`ExportConfig::utc_offset`]; it does not follow daylight saving time).
//! - Items: a GTIN whose GS1 Company Prefix is configured becomes
//!   `urn:epc:idpat:sgtin:…` (or `urn:epc:class:lgtin:…` with a lot); a GTIN
//!   with an unknown prefix, or a GTIN-8, becomes its Digital Link URI
//!   (`https://id.gs1.org/01/…`), since nothing in a GTIN tells where its
//!   prefix ends and guessing would write another company's product; a SKU
//!   (anything that is not a GTIN with a valid check digit) becomes
//!   `{private_base}item/{sku}`. A numeric SKU of 8, 12, 13 or 14 digits
//!   whose last digit happens to be a valid check digit is read as a GTIN.
//! - Units: an SSCC becomes `urn:epc:id:sscc:…` (prefix configured) or
//!   `https://id.gs1.org/00/…`; an SSCC with a bad check digit fails the
//!   export ([`ExportError::Sscc`]) rather than naming a different unit.
//!   Vehicles are `{private_base}vehicle/{id}`.
//! - Locations: `refs.location` that is a GLN → `urn:epc:id:sgln:…` (or
//!   Digital Link); a bin or door code at the site with a configured site
//!   GLN → the site GLN with the code as extension (AI 254,
//!   `urn:epc:id:sgln:{prefix}.{ref}.{code}`); otherwise
//!   `{private_base}site/{site}/loc/{code}` (or `{private_base}loc/{code}` on
//!   the route). Without a location, a GNSS fix becomes a `geo:` read point.
//!   `bizLocation` is the site (GLN or `{private_base}site/{site}`) for events
//!   at the site except `departed`; on the route it is left out.
//! - Business transactions: the order as `poc` ("sometimes internally
//!   referred to as a Sales Order"), the shipment as `desadv`, written
//!   `urn:epcglobal:cbv:bt:{party GLN}:{number}` with a configured party
//!   GLN, else `{private_base}order/…` and `{private_base}shipment/…`.
//!
//! `dockline:` extension fields (namespace [`DEFAULT_EXTENSION_NAMESPACE`]
//! unless configured) keep what EPCIS has no field for: `device`, `epoch`,
//! `seq`, `timeSource`, `stop`, `vehicle`, `lot`, `quantity` (packed),
//! `receivedBy`, `pieces`, `signatureRef`, `photoRef`, `exception`, `note`,
//! `position` (a `geo:` URI when the read point is a location).
//!
//! # Checked against
//!
//! `collector/tests/epcis.rs` validates every event kind against GS1's EPCIS
//! 2.0 JSON Schema with format checking (Python `jsonschema`, see the README)
//! and shows that a broken document fails the same check.

pub mod capture;
pub mod export;
pub mod gs1;

pub use capture::{
    CaptureAccepted, CaptureClient, CaptureConfig, CaptureError, CaptureFailure, CaptureJob,
    ErrorBehaviour, Problem,
};
pub use export::{
    Contents, DEFAULT_EXTENSION_NAMESPACE, EPCIS_CONTEXT, ExportConfig, ExportConfigError,
    ExportError, Exporter, ItemCount, exception_step,
};
pub use gs1::{CompanyPrefixes, Gs1Error, Gtin};
