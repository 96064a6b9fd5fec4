//! Dockline business events as EPCIS 2.0 events and documents (pure).
//!
//! [`Exporter::event`] turns one envelope into one EPCIS event (a JSON-LD
//! object); [`Exporter::document`] wraps events in an `EPCISDocument`. The
//! mapping, identifier choices and their limits are described in the
//! [module docs](super).

use crate::media::{ErpMedium, MediaRef};
use dockline_protocol::{
    BusinessEvent, Envelope, EventDetail, ExceptionKind, Fix, Payload, SiteId, Weight, WeightUnit,
};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};

use super::gs1::{self, CompanyPrefixes, Gs1Error, Gtin};

/// The normative EPCIS 2.0 JSON-LD context.
pub const EPCIS_CONTEXT: &str = "https://ref.gs1.org/standards/epcis/2.0.0/epcis-context.jsonld";

/// The namespace of dockline's extension fields (`dockline:seq`, …) when the
/// config names none. `.invalid` is reserved (RFC 2606): it is a name, not a
/// page to fetch.
pub const DEFAULT_EXTENSION_NAMESPACE: &str = "https://dockline.invalid/ns/epcis/";

/// The JSON-LD prefix of dockline's extension fields.
pub const EXTENSION_PREFIX: &str = "dockline";

/// How to export (a future `[erp.epcis]` config section deserialises into it).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportConfig {
    /// The site (warehouse) the collector serves; names private locations.
    pub site: String,
    /// The site's GLN (13 digits): the `bizLocation` of warehouse events and
    /// the base of bin read points (GLN + extension). Without it, private URIs.
    #[serde(default)]
    pub site_gln: Option<String>,
    /// The GLN of the party whose order and shipment numbers the events carry
    /// (normally the warehouse operator): business transactions become
    /// `urn:epcglobal:cbv:bt:{gln}:{number}`. Without it, private URIs.
    #[serde(default)]
    pub party_gln: Option<String>,
    /// GS1 Company Prefixes whose keys are written as EPC URIs (6 to 12
    /// digits each). Keys with any other prefix become Digital Link URIs.
    #[serde(default)]
    pub company_prefixes: Vec<String>,
    /// Absolute URI under which dockline mints identifiers that have no GS1
    /// key (bins without a site GLN, SKUs, vehicles, orders without a party
    /// GLN), e.g. `https://wms.example.com/id/`. Must end in `/`.
    pub private_base: String,
    /// The site's UTC offset for `eventTimeZoneOffset`, `+HH:MM` or `-HH:MM`.
    /// A fixed offset: it does not follow daylight saving time.
    #[serde(default = "default_offset")]
    pub utc_offset: String,
    /// Namespace IRI of the `dockline:` extension fields.
    #[serde(default)]
    pub extension_namespace: Option<String>,
}

fn default_offset() -> String {
    "+00:00".into()
}

/// The export config cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExportConfigError {
    /// The site id breaks the id rule.
    #[error("epcis site: {0}")]
    Site(#[from] dockline_protocol::IdError),
    /// A GLN or company prefix is wrong.
    #[error("epcis {field}: {source}")]
    Gs1 {
        /// The config field.
        field: &'static str,
        /// What is wrong.
        source: Gs1Error,
    },
    /// `private_base` is not an absolute URI ending in `/`.
    #[error(
        "epcis private_base {0:?} is not an absolute URI ending in '/'; use something like https://wms.example.com/id/"
    )]
    PrivateBase(String),
    /// `extension_namespace` is not an absolute URI.
    #[error(
        "epcis extension_namespace {0:?} is not an absolute URI ending in '/' or '#'; leave it out to use {DEFAULT_EXTENSION_NAMESPACE}"
    )]
    Namespace(String),
    /// `utc_offset` is not `±HH:MM` within EPCIS's range.
    #[error(
        "epcis utc_offset {0:?} is not an offset EPCIS accepts: use +HH:MM or -HH:MM between -13:59 and +14:00"
    )]
    Offset(String),
}

/// An event could not be exported.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ExportError {
    /// The envelope carries a reading (telemetry), not a business event.
    #[error(
        "event {event_id} is a {kind} reading, not a business event; only business events are exported to EPCIS"
    )]
    NotABusinessEvent {
        /// The envelope's id.
        event_id: String,
        /// `scan`, `weight` or `position`.
        kind: &'static str,
    },
    /// The capture time is outside what a date-time can hold.
    #[error(
        "event {event_id}: capture time {ms} ms since 1970 is not a representable date; the device clock is broken"
    )]
    Time {
        /// The envelope's id.
        event_id: String,
        /// The time.
        ms: i64,
    },
    /// The SSCC reference is not a valid SSCC.
    #[error("event {event_id}: refs.sscc: {source}")]
    Sscc {
        /// The envelope's id.
        event_id: String,
        /// What is wrong.
        source: Gs1Error,
    },
    /// A packed unit's content names an invalid SSCC.
    #[error("event {event_id}: packed contents: {source}")]
    Contents {
        /// The envelope's id.
        event_id: String,
        /// What is wrong.
        source: Gs1Error,
    },
    /// The packed weight is not a finite number.
    #[error(
        "event {event_id}: packed weight {value} is not a finite number; the scale reading is corrupt"
    )]
    Weight {
        /// The envelope's id.
        event_id: String,
        /// The value.
        value: f64,
    },
}

/// What a logistic unit holds, as far as the caller knows (for example from
/// the picks of the same order). Empty when unknown.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Contents {
    /// SSCCs of units inside this one (a pallet of cartons) → `childEPCs`.
    pub units: Vec<String>,
    /// Items inside → `childQuantityList`.
    pub items: Vec<ItemCount>,
}

impl Contents {
    /// True when nothing is known.
    pub fn is_empty(&self) -> bool {
        self.units.is_empty() && self.items.is_empty()
    }
}

/// A quantity of one item (GTIN or SKU), optionally from one lot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemCount {
    /// GTIN (8, 12, 13 or 14 digits) or SKU.
    pub item: String,
    /// Lot (batch) number.
    pub lot: Option<String>,
    /// Units.
    pub quantity: u32,
}

/// Builds EPCIS events from dockline envelopes with a checked config.
#[derive(Debug, Clone)]
pub struct Exporter {
    site: SiteId,
    site_gln: Option<String>,
    party_gln: Option<String>,
    prefixes: CompanyPrefixes,
    private_base: String,
    offset: String,
    namespace: String,
}

impl Exporter {
    /// Checks the config.
    pub fn new(config: &ExportConfig) -> Result<Self, ExportConfigError> {
        let site = SiteId::new(config.site.clone())?;
        for (field, gln) in [
            ("site_gln", &config.site_gln),
            ("party_gln", &config.party_gln),
        ] {
            if let Some(gln) = gln {
                gs1::check_gln(gln).map_err(|source| ExportConfigError::Gs1 { field, source })?;
            }
        }
        let prefixes =
            CompanyPrefixes::new(config.company_prefixes.iter().cloned()).map_err(|source| {
                ExportConfigError::Gs1 {
                    field: "company_prefixes",
                    source,
                }
            })?;
        if !is_absolute_uri(&config.private_base) || !config.private_base.ends_with('/') {
            return Err(ExportConfigError::PrivateBase(config.private_base.clone()));
        }
        let namespace = config
            .extension_namespace
            .clone()
            .unwrap_or_else(|| DEFAULT_EXTENSION_NAMESPACE.into());
        if !is_absolute_uri(&namespace) || !(namespace.ends_with('/') || namespace.ends_with('#')) {
            return Err(ExportConfigError::Namespace(namespace));
        }
        let offset = parse_offset(&config.utc_offset)
            .ok_or_else(|| ExportConfigError::Offset(config.utc_offset.clone()))?;
        Ok(Self {
            site,
            site_gln: config.site_gln.clone(),
            party_gln: config.party_gln.clone(),
            prefixes,
            private_base: config.private_base.clone(),
            offset,
            namespace,
        })
    }

    /// The document's `@context`: the EPCIS context plus the `dockline:`
    /// prefix.
    pub fn context(&self) -> Value {
        json!([EPCIS_CONTEXT, { EXTENSION_PREFIX: self.namespace }])
    }

    /// Wraps events in an `EPCISDocument` created at `created_ms`.
    pub fn document(&self, events: Vec<Value>, created_ms: i64) -> Result<Value, ExportError> {
        let created = rfc3339_ms(created_ms).ok_or_else(|| ExportError::Time {
            event_id: "(document)".into(),
            ms: created_ms,
        })?;
        Ok(json!({
            "@context": self.context(),
            "type": "EPCISDocument",
            "schemaVersion": "2.0",
            "creationDate": created,
            "epcisBody": { "eventList": events },
        }))
    }

    /// One envelope as a one-event document: what a capture call sends.
    pub fn document_for(
        &self,
        envelope: &Envelope,
        contents: &Contents,
        created_ms: i64,
    ) -> Result<Value, ExportError> {
        let event = self.event(envelope, contents)?;
        self.document(vec![event], created_ms)
    }

    /// One envelope as an EPCIS event. `contents` is used by `packed` only.
    pub fn event(&self, envelope: &Envelope, contents: &Contents) -> Result<Value, ExportError> {
        let event_id = envelope.id.to_string();
        let event = match &envelope.payload {
            Payload::Event(e) => e,
            Payload::Reading(r) => {
                return Err(ExportError::NotABusinessEvent {
                    event_id,
                    kind: reading_kind(r),
                });
            }
        };
        let time = rfc3339_ms(envelope.captured_ms).ok_or_else(|| ExportError::Time {
            event_id: event_id.clone(),
            ms: envelope.captured_ms,
        })?;
        let sscc = match &event.refs.sscc {
            Some(s) => Some(self.sscc(s).map_err(|source| ExportError::Sscc {
                event_id: event_id.clone(),
                source,
            })?),
            None => None,
        };
        let shape = self.shape(event, sscc, contents, &event_id)?;

        let mut e = Map::new();
        e.insert("type".into(), json!(shape.event_type));
        e.insert("eventID".into(), json!(format!("urn:uuid:{event_id}")));
        e.insert("eventTime".into(), json!(time));
        e.insert("eventTimeZoneOffset".into(), json!(self.offset));
        for (key, value) in shape.what {
            e.insert(key.into(), value);
        }
        e.insert("action".into(), json!(shape.action));
        e.insert("bizStep".into(), json!(shape.biz_step));
        if let Some(d) = shape.disposition {
            e.insert("disposition".into(), json!(d));
        }
        let at_site = at_site(event);
        let position = position(event);
        if let Some(id) = self.read_point(event.refs.location.as_deref(), at_site, position) {
            e.insert("readPoint".into(), json!({ "id": id }));
        }
        if at_site && !matches!(event.detail, EventDetail::Departed { .. }) {
            e.insert("bizLocation".into(), json!({ "id": self.site_uri() }));
        }
        let transactions = self.biz_transactions(event);
        if !transactions.is_empty() {
            e.insert("bizTransactionList".into(), Value::Array(transactions));
        }
        if let Some(sensors) = shape.sensors {
            e.insert("sensorElementList".into(), sensors);
        }
        self.extensions(&mut e, envelope, event, position);
        Ok(Value::Object(e))
    }

    /// Event type, what-dimension, action, bizStep and disposition.
    fn shape(
        &self,
        event: &BusinessEvent,
        sscc: Option<String>,
        contents: &Contents,
        event_id: &str,
    ) -> Result<Shape, ExportError> {
        let objects =
            |sscc: Option<String>, fallback: Option<String>| -> Vec<(&'static str, Value)> {
                let list: Vec<String> = sscc.or(fallback).into_iter().collect();
                vec![("epcList", json!(list))]
            };
        let observe = |step, disposition, what| Shape {
            event_type: "ObjectEvent",
            what,
            action: "OBSERVE",
            biz_step: step,
            disposition,
            sensors: None,
        };
        Ok(match &event.detail {
            EventDetail::Picked {
                item,
                quantity,
                lot,
            } => {
                let class = self.item_class(item, lot.as_deref());
                observe(
                    "picking",
                    Some("in_progress"),
                    vec![(
                        "quantityList",
                        json!([{ "epcClass": class, "quantity": quantity }]),
                    )],
                )
            }
            EventDetail::Packed { weight, .. } => {
                let sensors = match weight {
                    Some(w) => Some(self.mass(w, event_id)?),
                    None => None,
                };
                let mut shape = match sscc {
                    // An aggregation needs its parent and at least one child.
                    Some(parent) if !contents.is_empty() => {
                        let mut what = vec![("parentID", json!(parent))];
                        if !contents.units.is_empty() {
                            let units = contents
                                .units
                                .iter()
                                .map(|u| self.sscc(u))
                                .collect::<Result<Vec<_>, _>>()
                                .map_err(|source| ExportError::Contents {
                                    event_id: event_id.into(),
                                    source,
                                })?;
                            what.push(("childEPCs", json!(units)));
                        }
                        if !contents.items.is_empty() {
                            let items: Vec<Value> = contents
                                .items
                                .iter()
                                .map(|c| {
                                    json!({
                                        "epcClass": self.item_class(&c.item, c.lot.as_deref()),
                                        "quantity": c.quantity,
                                    })
                                })
                                .collect();
                            what.push(("childQuantityList", Value::Array(items)));
                        }
                        Shape {
                            event_type: "AggregationEvent",
                            what,
                            action: "ADD",
                            biz_step: "packing",
                            disposition: Some("in_progress"),
                            sensors: None,
                        }
                    }
                    // Contents unknown (or no SSCC): the unit observed at packing.
                    sscc => observe("packing", Some("in_progress"), objects(sscc, None)),
                };
                shape.sensors = sensors;
                shape
            }
            EventDetail::Loaded { vehicle } => observe(
                "loading",
                Some("in_progress"),
                objects(sscc, Some(self.private("vehicle", vehicle))),
            ),
            EventDetail::Departed { vehicle, .. } => observe(
                "departing",
                Some("in_transit"),
                objects(sscc, Some(self.private("vehicle", vehicle))),
            ),
            EventDetail::Arrived { vehicle, .. } => observe(
                "arriving",
                Some("in_transit"),
                objects(sscc, Some(self.private("vehicle", vehicle))),
            ),
            EventDetail::Delivered(_) => observe("accepting", None, objects(sscc, None)),
            EventDetail::Exception { kind, .. } => {
                let (step, disposition) = exception_step(*kind);
                observe(step, disposition, objects(sscc, None))
            }
        })
    }

    /// The class URI of an item: EPC (prefix known), Digital Link (GTIN with
    /// an unknown prefix, or a lot EPC escaping refuses), or private (SKU).
    fn item_class(&self, item: &str, lot: Option<&str>) -> String {
        let Ok(gtin) = Gtin::parse(item) else {
            let mut uri = self.private("item", item);
            if let Some(lot) = lot {
                uri.push_str("/lot/");
                uri.push_str(&gs1::percent_encode(lot));
            }
            return uri;
        };
        let prefix_len = if gtin.is_gtin8() {
            None
        } else {
            self.prefixes.length_of(&gtin.as_str()[1..])
        };
        let epc = prefix_len.and_then(|len| match lot {
            Some(lot) => gs1::lgtin_class(&gtin, len, lot).ok(),
            None => gs1::sgtin_pattern(&gtin, len).ok(),
        });
        if let Some(epc) = epc {
            return epc;
        }
        match gs1::digital_link_gtin(&gtin, lot) {
            Ok(dl) => dl,
            // A lot outside GS1's character set: keep it in a private URI
            // under the GTIN's Digital Link rather than drop it.
            Err(_) => {
                let mut uri = self.private("item", gtin.as_str());
                if let Some(lot) = lot {
                    uri.push_str("/lot/");
                    uri.push_str(&gs1::percent_encode(lot));
                }
                uri
            }
        }
    }

    /// An SSCC as EPC URI (prefix known) or Digital Link.
    fn sscc(&self, sscc: &str) -> Result<String, Gs1Error> {
        gs1::check_sscc(sscc)?;
        match self.prefixes.length_of(&sscc[1..]) {
            Some(len) => gs1::sscc_uri(sscc, len),
            None => gs1::digital_link_sscc(sscc),
        }
    }

    /// A GLN (with optional extension) as SGLN or Digital Link.
    fn gln(&self, gln: &str, extension: Option<&str>) -> Option<String> {
        match self.prefixes.length_of(gln) {
            Some(len) => gs1::sgln_uri(gln, len, extension).ok(),
            None => gs1::digital_link_gln(gln, extension).ok(),
        }
    }

    /// The site: its GLN, or a private URI.
    fn site_uri(&self) -> String {
        self.site_gln
            .as_deref()
            .and_then(|gln| self.gln(gln, None))
            .unwrap_or_else(|| self.private("site", self.site.as_str()))
    }

    /// Where the event was seen: a GLN location, a bin of the site's GLN, a
    /// private location, or the position as a `geo:` URI.
    fn read_point(
        &self,
        location: Option<&str>,
        at_site: bool,
        pos: Option<&Fix>,
    ) -> Option<String> {
        if let Some(loc) = location {
            if gs1::check_gln(loc).is_ok()
                && let Some(uri) = self.gln(loc, None)
            {
                return Some(uri);
            }
            // A bin or door code on our own site: the site GLN + extension
            // (AI 254), as GS1 intends for sub-locations.
            if at_site
                && gs1::check_alphanumeric("GLN extension", loc).is_ok()
                && let Some(uri) = self
                    .site_gln
                    .as_deref()
                    .and_then(|g| self.gln(g, Some(loc)))
            {
                return Some(uri);
            }
            let scope = if at_site {
                format!("site/{}/loc", self.site.as_str())
            } else {
                "loc".into()
            };
            return Some(self.private(&scope, loc));
        }
        pos.map(geo_uri)
    }

    /// `bizTransactionList`: the order (`poc`) and shipment (`desadv`).
    fn biz_transactions(&self, event: &BusinessEvent) -> Vec<Value> {
        let r = &event.refs;
        [
            ("poc", "order", &r.order),
            ("desadv", "shipment", &r.shipment),
        ]
        .into_iter()
        .filter_map(|(kind, scope, reference)| {
            let reference = reference.as_deref()?;
            let id = match &self.party_gln {
                Some(gln) => format!(
                    "urn:epcglobal:cbv:bt:{gln}:{}",
                    gs1::percent_encode(reference)
                ),
                None => self.private(scope, reference),
            };
            Some(json!({ "type": kind, "bizTransaction": id }))
        })
        .collect()
    }

    /// The `dockline:` fields: envelope identity, references EPCIS has no
    /// field for, and proof-of-delivery evidence.
    fn extensions(
        &self,
        e: &mut Map<String, Value>,
        envelope: &Envelope,
        event: &BusinessEvent,
        position: Option<&Fix>,
    ) {
        let mut put = |name: &str, value: Value| {
            e.insert(format!("{EXTENSION_PREFIX}:{name}"), value);
        };
        put("device", json!(envelope.device.as_str()));
        put("epoch", json!(envelope.epoch));
        put("seq", json!(envelope.seq));
        put("timeSource", enum_name(&envelope.time_source));
        if let Some(stop) = &event.refs.stop {
            put("stop", json!(stop));
        }
        if let (Some(p), Some(_)) = (position, &event.refs.location) {
            // The read point is the location; keep the fix as well.
            put("position", json!(geo_uri(p)));
        }
        match &event.detail {
            EventDetail::Picked { lot: Some(lot), .. } => put("lot", json!(lot)),
            EventDetail::Packed { quantity, .. } => put("quantity", json!(quantity)),
            EventDetail::Loaded { vehicle }
            | EventDetail::Departed { vehicle, .. }
            | EventDetail::Arrived { vehicle, .. } => put("vehicle", json!(vehicle)),
            EventDetail::Delivered(pod) => {
                put("receivedBy", json!(pod.received_by));
                put("pieces", json!(pod.pieces));
                if let Some(s) = &pod.signature_ref {
                    put("signatureRef", json!(s));
                }
                if let Some(p) = &pod.photo_ref {
                    put("photoRef", json!(p));
                }
            }
            EventDetail::Exception { kind, note } => {
                put("exception", enum_name(kind));
                if !note.is_empty() {
                    put("note", json!(note));
                }
            }
            EventDetail::Picked { lot: None, .. } => {}
        }
    }

    /// Links the event's media into an exported `event`: `dockline:media`
    /// lists each medium as `{dockline:role, dockline:hash, dockline:mediaType,
    /// dockline:url}` (`dockline:url` the collector's signed link, absent
    /// without a link key), and `dockline:mediaMissing` the media whose wait
    /// ran out (`{dockline:role, dockline:hash}`) with `dockline:mediaNote`
    /// saying so in words. Extension fields in the `dockline:` namespace,
    /// which EPCIS 2.0 lets any event carry; nothing is added without media.
    pub fn link_media(
        &self,
        event: &mut Value,
        media: &[(&ErpMedium, Option<String>)],
        missing: &[MediaRef],
    ) {
        let Value::Object(e) = event else {
            return;
        };
        let key = |name: &str| format!("{EXTENSION_PREFIX}:{name}");
        if !media.is_empty() {
            let list: Vec<Value> = media
                .iter()
                .map(|(m, url)| {
                    let mut v = Map::new();
                    v.insert(key("role"), json!(m.role.name()));
                    v.insert(key("hash"), json!(format!("sha256:{}", m.hash)));
                    v.insert(key("mediaType"), json!(m.media_type.content_type()));
                    if let Some(url) = url {
                        v.insert(key("url"), json!(url));
                    }
                    Value::Object(v)
                })
                .collect();
            e.insert(key("media"), Value::Array(list));
        }
        if !missing.is_empty() {
            let list: Vec<Value> = missing
                .iter()
                .map(|m| {
                    json!({
                        key("role"): m.role.name(),
                        key("hash"): format!("sha256:{}", m.hash),
                    })
                })
                .collect();
            e.insert(key("mediaMissing"), Value::Array(list));
            e.insert(
                key("mediaNote"),
                json!(crate::erp::media_missing_note(missing)),
            );
        }
    }

    /// The packed weight as a `Mass` sensor report in UN/ECE rec. 20 units.
    fn mass(&self, w: &Weight, event_id: &str) -> Result<Value, ExportError> {
        if !w.value.is_finite() {
            return Err(ExportError::Weight {
                event_id: event_id.into(),
                value: w.value,
            });
        }
        let uom = match w.unit {
            WeightUnit::Kg => "KGM",
            WeightUnit::G => "GRM",
            WeightUnit::Lb => "LBR",
            WeightUnit::Oz => "ONZ",
        };
        Ok(json!([{ "sensorReport": [{ "type": "Mass", "value": w.value, "uom": uom }] }]))
    }

    /// `{private_base}{scope}/{value}`, the value percent-encoded.
    fn private(&self, scope: &str, value: &str) -> String {
        format!(
            "{}{scope}/{}",
            self.private_base,
            gs1::percent_encode(value)
        )
    }
}

/// Parts of an event that depend on its kind.
struct Shape {
    event_type: &'static str,
    what: Vec<(&'static str, Value)>,
    action: &'static str,
    biz_step: &'static str,
    disposition: Option<&'static str>,
    sensors: Option<Value>,
}

/// The bizStep and disposition of each exception kind (see the module docs).
pub fn exception_step(kind: ExceptionKind) -> (&'static str, Option<&'static str>) {
    match kind {
        ExceptionKind::ShortPick => ("inspecting", Some("mismatch_quantity")),
        ExceptionKind::WrongItem => ("inspecting", Some("mismatch_class")),
        ExceptionKind::WeightMismatch => ("inspecting", Some("non_conformant")),
        ExceptionKind::Damaged => ("inspecting", Some("damaged")),
        ExceptionKind::DeliveryRefused | ExceptionKind::NotHome => ("holding", Some("in_transit")),
        ExceptionKind::Other => ("inspecting", None),
    }
}

/// True when the event happens at the site (not at a stop or a customer).
fn at_site(event: &BusinessEvent) -> bool {
    event.refs.stop.is_none()
        && !matches!(
            event.detail,
            EventDetail::Arrived { .. } | EventDetail::Delivered(_)
        )
}

fn position(event: &BusinessEvent) -> Option<&Fix> {
    match &event.detail {
        EventDetail::Departed { position, .. } | EventDetail::Arrived { position, .. } => {
            position.as_ref()
        }
        EventDetail::Delivered(pod) => pod.position.as_ref(),
        _ => None,
    }
}

/// `geo:lat,lon` (RFC 5870), 7 decimals (about 1 cm).
fn geo_uri(f: &Fix) -> String {
    format!("geo:{:.7},{:.7}", f.lat, f.lon)
}

fn reading_kind(r: &dockline_protocol::Reading) -> &'static str {
    match r {
        dockline_protocol::Reading::Scan(_) => "scan",
        dockline_protocol::Reading::Weight(_) => "weight",
        dockline_protocol::Reading::Position(_) => "position",
    }
}

/// The serde (snake_case) name of a protocol enum, as the wire spells it.
fn enum_name<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// `2026-11-24T08:01:12.000Z`.
fn rfc3339_ms(ms: i64) -> Option<String> {
    let t = OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()?;
    // Rfc3339 drops a zero fraction; EPCIS examples keep milliseconds, so
    // write them always.
    let whole = t.replace_nanosecond(0).ok()?.format(&Rfc3339).ok()?;
    let stem = whole.strip_suffix('Z')?;
    Some(format!("{stem}.{:03}Z", t.millisecond()))
}

/// `+01:00` → `+01:00`, checked against EPCIS's -13:59..+14:00.
fn parse_offset(text: &str) -> Option<String> {
    let b = text.as_bytes();
    if b.len() != 6 || !matches!(b[0], b'+' | b'-') || b[3] != b':' {
        return None;
    }
    let hours: i8 = text.get(1..3)?.parse().ok()?;
    let minutes: i8 = text.get(4..6)?.parse().ok()?;
    if !text[1..3].bytes().all(|c| c.is_ascii_digit())
        || !text[4..6].bytes().all(|c| c.is_ascii_digit())
    {
        return None;
    }
    let sign = if b[0] == b'-' { -1 } else { 1 };
    let offset = UtcOffset::from_hms(sign * hours, sign * minutes, 0).ok()?;
    let total = offset.whole_minutes();
    (-(13 * 60 + 59)..=14 * 60)
        .contains(&total)
        .then(|| text.to_string())
}

/// `scheme:` at the start (RFC 3986) and no whitespace.
fn is_absolute_uri(text: &str) -> bool {
    let Some((scheme, rest)) = text.split_once(':') else {
        return false;
    };
    let mut chars = scheme.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        && !rest.is_empty()
        && !text.chars().any(char::is_whitespace)
}

#[cfg(test)]
mod tests {
    use super::*;
    use dockline_protocol::{
        DeviceId, EventId, FixMode, Priority, ProofOfDelivery, References, TimeSource,
    };

    fn config() -> ExportConfig {
        ExportConfig {
            site: "BRU1".into(),
            site_gln: Some("4012345000016".into()),
            party_gln: Some("4012345000009".into()),
            company_prefixes: vec!["4012345".into()],
            private_base: "https://wms.example.com/id/".into(),
            utc_offset: "+01:00".into(),
            extension_namespace: None,
        }
    }

    fn exporter() -> Exporter {
        Exporter::new(&config()).expect("test config is valid")
    }

    fn envelope(detail: EventDetail, refs: References) -> Envelope {
        Envelope {
            v: 1,
            device: DeviceId::new("hh-017").expect("valid id"),
            epoch: 3,
            seq: 42,
            id: EventId([0x01; 16]),
            captured_ms: 1_795_939_272_000,
            time_source: TimeSource::Ntp,
            priority: Priority::MustDeliver,
            payload: Payload::Event(BusinessEvent { detail, refs }),
        }
    }

    fn order(sscc: Option<&str>, location: Option<&str>) -> References {
        References {
            order: Some("SO-42".into()),
            sscc: sscc.map(Into::into),
            location: location.map(Into::into),
            ..References::default()
        }
    }

    #[test]
    fn pick_of_a_known_gtin_becomes_an_sgtin_pattern_at_a_bin_of_the_site_gln() {
        let e = exporter()
            .event(
                &envelope(
                    EventDetail::Picked {
                        item: "4012345111118".into(),
                        quantity: 4,
                        lot: None,
                    },
                    order(None, Some("A0103")),
                ),
                &Contents::default(),
            )
            .expect("exports");
        assert_eq!(e["type"], "ObjectEvent");
        assert_eq!(
            e["eventID"],
            "urn:uuid:01010101-0101-0101-0101-010101010101"
        );
        assert_eq!(e["eventTime"], "2026-11-29T08:01:12.000Z");
        assert_eq!(e["eventTimeZoneOffset"], "+01:00");
        assert_eq!(e["bizStep"], "picking");
        assert_eq!(
            e["quantityList"],
            json!([{ "epcClass": "urn:epc:idpat:sgtin:4012345.011111.*", "quantity": 4 }])
        );
        assert_eq!(e["readPoint"]["id"], "urn:epc:id:sgln:4012345.00001.A0103");
        assert_eq!(e["bizLocation"]["id"], "urn:epc:id:sgln:4012345.00001.0");
        assert_eq!(
            e["bizTransactionList"],
            json!([{ "type": "poc", "bizTransaction": "urn:epcglobal:cbv:bt:4012345000009:SO-42" }])
        );
        assert_eq!(e["dockline:seq"], 42);
        assert_eq!(e["dockline:device"], "hh-017");
        assert_eq!(e["dockline:timeSource"], "ntp");
    }

    #[test]
    fn lot_sku_and_unknown_prefix_choose_the_honest_uri() {
        let x = exporter();
        assert_eq!(
            x.item_class("4012345111118", Some("L1/2")),
            "urn:epc:class:lgtin:4012345.011111.L1%2F2"
        );
        // Prefix 5412345 not configured: Digital Link, no guessed split.
        assert_eq!(
            x.item_class("5412345111115", None),
            "https://id.gs1.org/01/05412345111115"
        );
        assert_eq!(
            x.item_class("SKU 7", Some("L1")),
            "https://wms.example.com/id/item/SKU%207/lot/L1"
        );
        // A lot GS1 cannot carry stays, in a private URI.
        assert_eq!(
            x.item_class("4012345111118", Some("lot #1")),
            "https://wms.example.com/id/item/04012345111118/lot/lot%20%231"
        );
    }

    #[test]
    fn packed_with_known_contents_is_an_aggregation_under_the_sscc() {
        let contents = Contents {
            units: vec![],
            items: vec![ItemCount {
                item: "4012345111118".into(),
                lot: None,
                quantity: 4,
            }],
        };
        let e = exporter()
            .event(
                &envelope(
                    EventDetail::Packed {
                        quantity: 4,
                        weight: Some(Weight {
                            value: 12.4,
                            unit: WeightUnit::Kg,
                        }),
                    },
                    order(Some("340123450000000420"), None),
                ),
                &contents,
            )
            .expect("exports");
        assert_eq!(e["type"], "AggregationEvent");
        assert_eq!(e["action"], "ADD");
        assert_eq!(e["parentID"], "urn:epc:id:sscc:4012345.3000000042");
        assert_eq!(
            e["childQuantityList"][0]["epcClass"],
            "urn:epc:idpat:sgtin:4012345.011111.*"
        );
        assert_eq!(e["sensorElementList"][0]["sensorReport"][0]["uom"], "KGM");

        // Contents unknown: the unit observed at packing.
        let e = exporter()
            .event(
                &envelope(
                    EventDetail::Packed {
                        quantity: 4,
                        weight: None,
                    },
                    order(Some("340123450000000420"), None),
                ),
                &Contents::default(),
            )
            .expect("exports");
        assert_eq!(e["type"], "ObjectEvent");
        assert_eq!(e["epcList"], json!(["urn:epc:id:sscc:4012345.3000000042"]));
        assert_eq!(e["dockline:quantity"], 4);
    }

    #[test]
    fn delivery_at_a_stop_reads_at_its_position_and_keeps_the_evidence() {
        let e = exporter()
            .event(
                &envelope(
                    EventDetail::Delivered(ProofOfDelivery {
                        received_by: "J. Peeters".into(),
                        pieces: 3,
                        signature_ref: Some("sha256:9f2c".into()),
                        photo_ref: None,
                        position: Some(Fix {
                            lat: 50.8467,
                            lon: 4.3525,
                            speed_mps: None,
                            course_deg: None,
                            mode: FixMode::Fix3d,
                            satellites: None,
                            hdop: None,
                        }),
                    }),
                    References {
                        shipment: Some("DN 2026/0042".into()),
                        stop: Some("7".into()),
                        ..References::default()
                    },
                ),
                &Contents::default(),
            )
            .expect("exports");
        assert_eq!(e["bizStep"], "accepting");
        assert!(e.get("disposition").is_none());
        assert!(e.get("bizLocation").is_none());
        assert_eq!(e["readPoint"]["id"], "geo:50.8467000,4.3525000");
        assert_eq!(
            e["bizTransactionList"][0]["bizTransaction"],
            "urn:epcglobal:cbv:bt:4012345000009:DN%202026%2F0042"
        );
        assert_eq!(e["dockline:receivedBy"], "J. Peeters");
        assert_eq!(e["dockline:stop"], "7");
        assert_eq!(e["epcList"], json!([]));
    }

    #[test]
    fn without_gs1_master_data_everything_is_a_private_uri() {
        let x = Exporter::new(&ExportConfig {
            site_gln: None,
            party_gln: None,
            company_prefixes: vec![],
            ..config()
        })
        .expect("valid");
        let e = x
            .event(
                &envelope(
                    EventDetail::Loaded {
                        vehicle: "1-ABC-123".into(),
                    },
                    order(None, Some("DOOR 3")),
                ),
                &Contents::default(),
            )
            .expect("exports");
        assert_eq!(
            e["readPoint"]["id"],
            "https://wms.example.com/id/site/BRU1/loc/DOOR%203"
        );
        assert_eq!(
            e["bizLocation"]["id"],
            "https://wms.example.com/id/site/BRU1"
        );
        assert_eq!(
            e["epcList"],
            json!(["https://wms.example.com/id/vehicle/1-ABC-123"])
        );
        assert_eq!(
            e["bizTransactionList"][0]["bizTransaction"],
            "https://wms.example.com/id/order/SO-42"
        );
    }

    #[test]
    fn bad_input_is_named() {
        let x = exporter();
        let err = x
            .event(
                &envelope(
                    EventDetail::Loaded {
                        vehicle: "T1".into(),
                    },
                    order(Some("340123450000000421"), None),
                ),
                &Contents::default(),
            )
            .expect_err("bad SSCC");
        assert!(err.to_string().contains("refs.sscc"), "{err}");
        assert!(err.to_string().contains("check digit"), "{err}");
    }

    #[test]
    fn config_errors_say_what_to_fix() {
        let bad = |f: fn(&mut ExportConfig)| {
            let mut c = config();
            f(&mut c);
            Exporter::new(&c).expect_err("invalid").to_string()
        };
        assert!(bad(|c| c.utc_offset = "+14:30".into()).contains("utc_offset"));
        assert!(bad(|c| c.utc_offset = "1:00".into()).contains("+HH:MM"));
        assert!(bad(|c| c.private_base = "wms/id/".into()).contains("private_base"));
        assert!(bad(|c| c.site_gln = Some("4012345000017".into())).contains("site_gln"));
        assert!(bad(|c| c.company_prefixes = vec!["123".into()]).contains("company_prefixes"));
        assert!(
            Exporter::new(&ExportConfig {
                utc_offset: "-13:59".into(),
                ..config()
            })
            .is_ok()
        );
    }

    #[test]
    fn times_keep_milliseconds() {
        assert_eq!(rfc3339_ms(0).as_deref(), Some("1970-01-01T00:00:00.000Z"));
        assert_eq!(
            rfc3339_ms(1_795_939_272_123).as_deref(),
            Some("2026-11-29T08:01:12.123Z")
        );
    }
}
