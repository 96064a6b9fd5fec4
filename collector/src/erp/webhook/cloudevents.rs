//! The ERP webhook request: a CloudEvents 1.0 structured JSON body signed per
//! the Standard Webhooks specification.
//!
//! Everything here is pure (no I/O), so the exact bytes the ERP receives are
//! unit-tested. Invariants:
//! - the signature covers `"{webhook-id}.{webhook-timestamp}.{body}"` with the
//!   exact body bytes that are sent (the body is serialised once, then signed);
//! - `webhook-id` and `Idempotency-Key` are the event's own id, so every retry
//!   of the same event carries the same keys and the ERP can drop repeats;
//! - during a secret rotation `webhook-signature` carries one `v1,<sig>` per
//!   secret, space-separated, the current secret's first: a receiver that
//!   knows any one of them accepts the request (Standard Webhooks §
//!   "Signature scheme"), so the ERP side can switch secrets at its own pace;
//! - the JSON uses readable field names, built explicitly here rather than
//!   from the protocol's short wire keys, so a wire rename cannot silently
//!   change what the ERP sees;
//! - a batch (`[erp.webhook] batch_max` > 1) is the CloudEvents JSON batch
//!   format, `application/cloudevents-batch+json`: a JSON array of the same
//!   structured events, byte for byte, signed as one body; its
//!   `webhook-id` and `Idempotency-Key` are [`batch_id`] of the events' ids,
//!   so the same events in a resend carry the same key, and each event
//!   keeps its own CloudEvents `id` for a receiver that drops repeats by
//!   event.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use dockline_protocol::{
    BusinessEvent, Envelope, EventDetail, ExceptionKind, Fix, FixMode, Priority, SiteId,
    TimeSource, Weight, WeightUnit,
};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sha2::Sha256;

use crate::erp::outcome::BodyClass;
use crate::media::{ErpMedium, MediaRef};

/// The prefix of a Standard Webhooks secret.
pub const SECRET_PREFIX: &str = "whsec_";

/// A webhook secret could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// Not `whsec_` + base64.
    #[error(
        "is not a Standard Webhooks secret: expected `whsec_` followed by base64 ({problem}); copy the secret exactly as the ERP shows it"
    )]
    Malformed {
        /// What was wrong.
        problem: String,
    },
    /// An entry of `[erp.webhook] previous_secrets` is not `whsec_` + base64.
    #[error(
        "has a `[erp.webhook] previous_secrets` entry (number {number}) that is not a Standard Webhooks secret: expected `whsec_` followed by base64 ({problem}); copy the old secret exactly as it was configured"
    )]
    MalformedPrevious {
        /// Its position in the list, from 1.
        number: usize,
        /// What was wrong.
        problem: String,
    },
}

/// The HMAC key decoded from a `whsec_…` secret.
#[derive(Clone)]
pub struct SigningKey(Vec<u8>);

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.write_str("SigningKey(..)")
    }
}

impl SigningKey {
    /// Decodes a `whsec_<base64>` secret.
    pub fn from_secret(secret: &str) -> Result<Self, SecretError> {
        let b64 = secret
            .strip_prefix(SECRET_PREFIX)
            .ok_or_else(|| SecretError::Malformed {
                problem: "the `whsec_` prefix is missing".into(),
            })?;
        let key = BASE64.decode(b64).map_err(|e| SecretError::Malformed {
            problem: e.to_string(),
        })?;
        if key.is_empty() {
            return Err(SecretError::Malformed {
                problem: "the key is empty".into(),
            });
        }
        Ok(Self(key))
    }

    /// The `webhook-signature` header value: `v1,<base64 HMAC-SHA256>`.
    pub fn sign(&self, webhook_id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0)
            .expect("HMAC accepts keys of any length; only fixed-size MACs reject one");
        mac.update(webhook_id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", BASE64.encode(mac.finalize().into_bytes()))
    }
}

/// How the `Idempotency-Key` header value is written
/// (`[erp.webhook] idempotency_key`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum IdempotencyKeyQuoting {
    /// `"<event id>"`: a Structured Field string, as the IETF draft
    /// (draft-ietf-httpapi-idempotency-key-header) defines the header. The
    /// default.
    #[default]
    Quoted,
    /// `<event id>` without quotes, for receivers that compare the header
    /// verbatim with the token they stored (many ERPs and payment APIs).
    Raw,
}

impl IdempotencyKeyQuoting {
    /// The header value for `event_id`.
    pub fn header_value(self, event_id: &str) -> String {
        match self {
            Self::Quoted => format!("\"{event_id}\""),
            Self::Raw => event_id.to_owned(),
        }
    }
}

/// The `Idempotency-Key` header value with the default quoting (an
/// sf-string: quoted).
pub fn idempotency_key(event_id: &str) -> String {
    IdempotencyKeyQuoting::default().header_value(event_id)
}

/// The most events `[erp.webhook] batch_max` may put in one request.
pub const MAX_BATCH: usize = 1000;

/// `[erp.webhook]`: secret rotation, header and batching options of the
/// webhook adapter. Every key is optional; an `[erp]` with only `secret`
/// signs once, quotes the `Idempotency-Key` and sends one event per request,
/// as before these options existed.
#[derive(Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookOptions {
    /// Secrets (`whsec_…`) the receiver may still verify with while it moves
    /// to `[erp] secret`: each adds a `v1,<sig>` to `webhook-signature`,
    /// after the current secret's. Remove an entry once the receiver has
    /// switched. Each entry may be inline, `{ file = "…" }` or
    /// `{ env = "…" }` ([`dockline_host::secret`]).
    #[serde(default, deserialize_with = "dockline_host::secret::deserialize_list")]
    pub previous_secrets: Vec<String>,
    /// `quoted` (the default, `"<id>"` per the IETF draft) or `raw`
    /// (`<id>`).
    #[serde(default)]
    pub idempotency_key: IdempotencyKeyQuoting,
    /// Most events in one request. 1 (the default): one structured-mode
    /// CloudEvent per POST. More: ready events of distinct lanes go together
    /// as one `application/cloudevents-batch+json` array (see
    /// `crate::erp::webhook::batch`), at most [`MAX_BATCH`].
    #[serde(default = "default_batch_max")]
    pub batch_max: usize,
}

fn default_batch_max() -> usize {
    1
}

impl Default for WebhookOptions {
    fn default() -> Self {
        Self {
            previous_secrets: Vec::new(),
            idempotency_key: IdempotencyKeyQuoting::default(),
            batch_max: default_batch_max(),
        }
    }
}

impl WebhookOptions {
    /// Checks `batch_max`; the problem, for `erp.webhook.batch_max`.
    pub fn check_batch(&self) -> Result<(), String> {
        if self.batch_max == 0 || self.batch_max > MAX_BATCH {
            return Err(format!(
                "is {}; use 1 (one event per request) up to {MAX_BATCH}",
                self.batch_max
            ));
        }
        Ok(())
    }
}

impl std::fmt::Debug for WebhookOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print secrets; how many there are is enough to debug a config.
        f.debug_struct("WebhookOptions")
            .field("previous_secrets", &self.previous_secrets.len())
            .field("idempotency_key", &self.idempotency_key)
            .field("batch_max", &self.batch_max)
            .finish()
    }
}

/// Writes the signed headers of a webhook request: one HMAC key per
/// configured secret (current first) and the `Idempotency-Key` quoting.
#[derive(Debug, Clone)]
pub struct WebhookSigner {
    /// Never empty: the current secret's key, then the previous ones.
    keys: Vec<SigningKey>,
    quoting: IdempotencyKeyQuoting,
}

impl WebhookSigner {
    /// The signer of `[erp]`: `secret` (current) plus `[erp.webhook]
    /// previous_secrets`, with its `idempotency_key` quoting.
    pub fn new(secret: &str, options: &WebhookOptions) -> Result<Self, SecretError> {
        let mut keys = vec![SigningKey::from_secret(secret)?];
        for (i, previous) in options.previous_secrets.iter().enumerate() {
            let key = SigningKey::from_secret(previous).map_err(|e| {
                let (SecretError::Malformed { problem }
                | SecretError::MalformedPrevious { problem, .. }) = e;
                SecretError::MalformedPrevious {
                    number: i + 1,
                    problem,
                }
            })?;
            keys.push(key);
        }
        Ok(Self {
            keys,
            quoting: options.idempotency_key,
        })
    }

    /// The `webhook-signature` header value: `v1,<sig>` per secret,
    /// space-separated, the current secret's first.
    pub fn signature(&self, webhook_id: &str, timestamp: i64, body: &[u8]) -> String {
        let signatures: Vec<String> = self
            .keys
            .iter()
            .map(|k| k.sign(webhook_id, timestamp, body))
            .collect();
        signatures.join(" ")
    }

    /// The `Idempotency-Key` header value for `event_id`.
    pub fn idempotency_key(&self, event_id: &str) -> String {
        self.quoting.header_value(event_id)
    }
}

impl From<SigningKey> for WebhookSigner {
    /// One secret, the default quoting.
    fn from(key: SigningKey) -> Self {
        Self {
            keys: vec![key],
            quoting: IdempotencyKeyQuoting::default(),
        }
    }
}

/// The CloudEvents `subject`: the business document the event concerns.
pub fn subject(event: &BusinessEvent) -> Option<&str> {
    let r = &event.refs;
    r.order
        .as_deref()
        .or(r.shipment.as_deref())
        .or(r.stop.as_deref())
}

/// Builds the CloudEvents structured-mode JSON body for a business event.
pub fn cloudevent_body(site: &SiteId, envelope: &Envelope, event: &BusinessEvent) -> Vec<u8> {
    cloudevent_body_with_media(site, envelope, event, &[], &[])
}

/// The CloudEvents `type` of a medium's own event.
pub const MEDIA_TYPE: &str = "io.dockline.media";

/// One medium of an event as its CloudEvents name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaEntry<'a> {
    /// The medium.
    pub medium: &'a ErpMedium,
    /// The signed link the ERP fetches it by (`dataref`), if links are
    /// configured.
    pub dataref: Option<String>,
}

/// The `id` (and `webhook-id`, `Idempotency-Key`) of a medium's CloudEvent:
/// `{event id}.{role}.{hex}`. A pure function of the event and the medium,
/// so every attempt (after a lost answer, a crash, a replay) carries the
/// same key and the ERP attaches the medium once.
pub fn media_event_id(envelope: &Envelope, medium: &ErpMedium) -> String {
    format!("{}.{}.{}", envelope.id, medium.role.name(), medium.hash)
}

/// The CloudEvent of one medium of `event`, sent before the event's own:
/// `type` [`MEDIA_TYPE`], `subject` the event's (its order), `dataref` the
/// signed link (when there is one), `datacontenttype` the image type,
/// `data_base64` the bytes when `inline`, and the extension attributes
/// `docklinehash` (`sha256:<hex>`), `docklinerole` (`signature`, `photo`),
/// `docklineevent` (the id of the event's own CloudEvent) and
/// `docklinesize` (bytes).
pub fn media_cloudevent_body(
    site: &SiteId,
    envelope: &Envelope,
    event: &BusinessEvent,
    entry: &MediaEntry<'_>,
    inline: bool,
) -> Vec<u8> {
    let medium = entry.medium;
    let mut ce = Map::new();
    ce.insert("specversion".into(), json!("1.0"));
    ce.insert("id".into(), json!(media_event_id(envelope, medium)));
    ce.insert(
        "source".into(),
        json!(format!("/dockline/{site}/{}", envelope.device)),
    );
    ce.insert("type".into(), json!(MEDIA_TYPE));
    if let Some(s) = subject(event) {
        ce.insert("subject".into(), json!(s));
    }
    if let Some(t) = rfc3339_ms(envelope.captured_ms) {
        ce.insert("time".into(), json!(t));
    }
    ce.insert(
        "datacontenttype".into(),
        json!(medium.media_type.content_type()),
    );
    if let Some(url) = &entry.dataref {
        ce.insert("dataref".into(), json!(url));
    }
    ce.insert(
        "docklinehash".into(),
        json!(format!("sha256:{}", medium.hash)),
    );
    ce.insert("docklinerole".into(), json!(medium.role.name()));
    ce.insert("docklineevent".into(), json!(envelope.id.to_string()));
    ce.insert("docklinesize".into(), json!(medium.bytes.len()));
    ce.insert("docklinedevice".into(), json!(envelope.device.as_str()));
    if inline {
        ce.insert("data_base64".into(), json!(BASE64.encode(&medium.bytes)));
    }
    serde_json::to_vec(&Value::Object(ce)).unwrap_or_default()
}

/// [`cloudevent_body`] for an event with media: `data.media` lists each
/// medium (`hash`, `role`, `media_type`, `size`, `cloudevent` the id of its
/// own CloudEvent, `dataref` when linked), and `data.media_missing` the
/// media whose wait ran out (`hash`, `role`) with `data.media_note` saying
/// so in words. With neither, the body is exactly [`cloudevent_body`]'s.
///
/// A `dataref` is signed when the body is built, so with links the body is
/// not byte-identical between attempts; its `id` (and the request's
/// `webhook-id`) is.
pub fn cloudevent_body_with_media(
    site: &SiteId,
    envelope: &Envelope,
    event: &BusinessEvent,
    media: &[MediaEntry<'_>],
    missing: &[MediaRef],
) -> Vec<u8> {
    let mut data = event_data(envelope, event);
    if let Value::Object(d) = &mut data {
        if !media.is_empty() {
            let list: Vec<Value> = media
                .iter()
                .map(|entry| {
                    let m = entry.medium;
                    let mut v = Map::new();
                    v.insert("hash".into(), json!(format!("sha256:{}", m.hash)));
                    v.insert("role".into(), json!(m.role.name()));
                    v.insert("media_type".into(), json!(m.media_type.content_type()));
                    v.insert("size".into(), json!(m.bytes.len()));
                    v.insert("cloudevent".into(), json!(media_event_id(envelope, m)));
                    if let Some(url) = &entry.dataref {
                        v.insert("dataref".into(), json!(url));
                    }
                    Value::Object(v)
                })
                .collect();
            d.insert("media".into(), Value::Array(list));
        }
        if !missing.is_empty() {
            let list: Vec<Value> = missing
                .iter()
                .map(|m| json!({ "hash": format!("sha256:{}", m.hash), "role": m.role.name() }))
                .collect();
            d.insert("media_missing".into(), Value::Array(list));
            d.insert(
                "media_note".into(),
                json!(crate::erp::media_missing_note(missing)),
            );
        }
    }
    structured(site, envelope, event, data)
}

/// The structured-mode body around `data`.
fn structured(site: &SiteId, envelope: &Envelope, event: &BusinessEvent, data: Value) -> Vec<u8> {
    let mut ce = Map::new();
    ce.insert("specversion".into(), json!("1.0"));
    ce.insert("id".into(), json!(envelope.id.to_string()));
    ce.insert(
        "source".into(),
        json!(format!("/dockline/{site}/{}", envelope.device)),
    );
    ce.insert(
        "type".into(),
        json!(format!("io.dockline.{}", event.detail.kind_name())),
    );
    if let Some(s) = subject(event) {
        ce.insert("subject".into(), json!(s));
    }
    if let Some(t) = rfc3339_ms(envelope.captured_ms) {
        ce.insert("time".into(), json!(t));
    }
    ce.insert("datacontenttype".into(), json!("application/json"));
    ce.insert("docklinedevice".into(), json!(envelope.device.as_str()));
    ce.insert("docklineseq".into(), json!(envelope.seq));
    ce.insert("docklineepoch".into(), json!(envelope.epoch));
    ce.insert("data".into(), data);
    // Serialising a Value built from maps, strings and finite numbers cannot fail.
    serde_json::to_vec(&Value::Object(ce)).unwrap_or_default()
}

/// The CloudEvents JSON batch body (`application/cloudevents-batch+json`):
/// the structured bodies of [`cloudevent_body`] as one JSON array, each
/// element byte for byte as it would be sent alone.
pub fn cloudevent_batch_body(events: &[&[u8]]) -> Vec<u8> {
    let len = events.iter().map(|e| e.len() + 1).sum::<usize>() + 2;
    let mut body = Vec::with_capacity(len);
    body.push(b'[');
    for (i, event) in events.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(event);
    }
    body.push(b']');
    body
}

/// The `webhook-id` (and `Idempotency-Key` value) of a batch: the event id
/// itself for one event, else `batch-` and the first 128 bits of SHA-256
/// over the sorted event ids, in hex. A pure function of the set of events,
/// so a resend of the same events carries the same key whatever their order.
pub fn batch_id(event_ids: &[&str]) -> String {
    use sha2::Digest;
    if let [one] = event_ids {
        return (*one).to_owned();
    }
    let mut sorted = event_ids.to_vec();
    sorted.sort_unstable();
    let mut hash = Sha256::new();
    for id in sorted {
        hash.update(id.as_bytes());
        hash.update(b"\n");
    }
    let digest = hash.finalize();
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("batch-{hex}")
}

/// What a webhook receiver's JSON body says about the event, for the
/// delivery policy ([`crate::erp::outcome::BodyClass`]).
///
/// The convention a receiver may follow (all optional; a plain status code
/// is enough):
/// - a JSON `"code"` of `already_booked`, `in_flight`, `conflict`,
///   `reference_missing` or `session_expired` on any status;
/// - a 409 whose body names the existing `document` (or `id`) means the
///   event was booked before (a duplicate, §2.4 of the ERP research);
/// - a 2xx whose body has a non-null `"error"` is a JSON-RPC-style
///   refusal hidden in a success status.
pub fn body_class(status: u16, body: &str) -> Option<BodyClass> {
    let value: Value = serde_json::from_str(body).ok()?;
    let document = crate::erp::outcome::document_from_body(body);
    if let Some(code) = value.get("code").and_then(Value::as_str) {
        return match code {
            "already_booked" => Some(BodyClass::AlreadyBooked { document }),
            "in_flight" => Some(BodyClass::InFlight),
            "conflict" => Some(BodyClass::Conflict),
            "reference_missing" => Some(BodyClass::ReferenceMissing),
            "session_expired" => Some(BodyClass::SessionExpired),
            _ => None,
        };
    }
    if status == 409 && document.is_some() {
        return Some(BodyClass::AlreadyBooked { document });
    }
    if (200..300).contains(&status)
        && let Some(error) = value.get("error").filter(|e| !e.is_null())
    {
        let message = match error {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        return Some(BodyClass::RpcError { message });
    }
    None
}

fn rfc3339_ms(ms: i64) -> Option<String> {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()?;
    t.format(&time::format_description::well_known::Rfc3339)
        .ok()
}

fn event_data(envelope: &Envelope, event: &BusinessEvent) -> Value {
    let mut data = Map::new();
    data.insert("kind".into(), json!(event.detail.kind_name()));
    let r = &event.refs;
    let mut refs = Map::new();
    for (name, value) in [
        ("order", &r.order),
        ("shipment", &r.shipment),
        ("stop", &r.stop),
        ("sscc", &r.sscc),
        ("location", &r.location),
        ("operator", &r.operator),
    ] {
        if let Some(v) = value {
            refs.insert(name.into(), json!(v));
        }
    }
    data.insert("refs".into(), Value::Object(refs));
    match &event.detail {
        EventDetail::Picked {
            item,
            quantity,
            lot,
        } => {
            data.insert("item".into(), json!(item));
            data.insert("quantity".into(), json!(quantity));
            if let Some(lot) = lot {
                data.insert("lot".into(), json!(lot));
            }
        }
        EventDetail::Packed { quantity, weight } => {
            data.insert("quantity".into(), json!(quantity));
            if let Some(w) = weight {
                data.insert("weight".into(), weight_json(w));
            }
        }
        EventDetail::Loaded { vehicle } => {
            data.insert("vehicle".into(), json!(vehicle));
        }
        EventDetail::Departed { vehicle, position }
        | EventDetail::Arrived { vehicle, position } => {
            data.insert("vehicle".into(), json!(vehicle));
            if let Some(p) = position {
                data.insert("position".into(), fix_json(p));
            }
        }
        EventDetail::Delivered(pod) => {
            data.insert("received_by".into(), json!(pod.received_by));
            data.insert("pieces".into(), json!(pod.pieces));
            if let Some(s) = &pod.signature_ref {
                data.insert("signature_ref".into(), json!(s));
            }
            if let Some(p) = &pod.photo_ref {
                data.insert("photo_ref".into(), json!(p));
            }
            if let Some(p) = &pod.position {
                data.insert("position".into(), fix_json(p));
            }
        }
        EventDetail::Exception { kind, note } => {
            data.insert("exception".into(), json!(exception_name(*kind)));
            if !note.is_empty() {
                data.insert("note".into(), json!(note));
            }
        }
    }
    data.insert("priority".into(), json!(priority_name(envelope.priority)));
    data.insert(
        "time_source".into(),
        json!(time_source_name(envelope.time_source)),
    );
    Value::Object(data)
}

fn weight_json(w: &Weight) -> Value {
    let unit = match w.unit {
        WeightUnit::Kg => "kg",
        WeightUnit::G => "g",
        WeightUnit::Lb => "lb",
        WeightUnit::Oz => "oz",
    };
    json!({ "value": w.value, "unit": unit })
}

fn fix_json(f: &Fix) -> Value {
    let mut m = Map::new();
    m.insert("lat".into(), json!(f.lat));
    m.insert("lon".into(), json!(f.lon));
    if let Some(s) = f.speed_mps {
        m.insert("speed_mps".into(), json!(s));
    }
    if let Some(c) = f.course_deg {
        m.insert("course_deg".into(), json!(c));
    }
    let mode = match f.mode {
        FixMode::NoFix => "no_fix",
        FixMode::Fix2d => "fix_2d",
        FixMode::Fix3d => "fix_3d",
    };
    m.insert("mode".into(), json!(mode));
    if let Some(s) = f.satellites {
        m.insert("satellites".into(), json!(s));
    }
    if let Some(h) = f.hdop {
        m.insert("hdop".into(), json!(h));
    }
    Value::Object(m)
}

fn exception_name(kind: ExceptionKind) -> &'static str {
    match kind {
        ExceptionKind::ShortPick => "short_pick",
        ExceptionKind::WrongItem => "wrong_item",
        ExceptionKind::WeightMismatch => "weight_mismatch",
        ExceptionKind::Damaged => "damaged",
        ExceptionKind::DeliveryRefused => "delivery_refused",
        ExceptionKind::NotHome => "not_home",
        ExceptionKind::Other => "other",
    }
}

fn priority_name(p: Priority) -> &'static str {
    match p {
        Priority::MustDeliver => "must_deliver",
        Priority::Normal => "normal",
        Priority::Telemetry => "telemetry",
    }
}

fn time_source_name(t: TimeSource) -> &'static str {
    match t {
        TimeSource::Gnss => "gnss",
        TimeSource::Ntp => "ntp",
        TimeSource::DeviceClock => "device_clock",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_classes_follow_the_documented_convention() {
        let already = |d: Option<&str>| {
            Some(BodyClass::AlreadyBooked {
                document: d.map(str::to_owned),
            })
        };
        assert_eq!(
            body_class(409, r#"{"document":"DOC-1"}"#),
            already(Some("DOC-1"))
        );
        assert_eq!(body_class(409, r#"{"id":7}"#), already(Some("7")));
        assert_eq!(body_class(409, "busy"), None);
        assert_eq!(body_class(409, r#"{"message":"busy"}"#), None);
        assert_eq!(
            body_class(422, r#"{"code":"already_booked"}"#),
            already(None)
        );
        assert_eq!(
            body_class(409, r#"{"code":"in_flight"}"#),
            Some(BodyClass::InFlight)
        );
        assert_eq!(
            body_class(417, r#"{"code":"conflict"}"#),
            Some(BodyClass::Conflict)
        );
        assert_eq!(
            body_class(404, r#"{"code":"reference_missing"}"#),
            Some(BodyClass::ReferenceMissing)
        );
        assert_eq!(
            body_class(200, r#"{"code":"session_expired"}"#),
            Some(BodyClass::SessionExpired)
        );
        assert_eq!(
            body_class(422, r#"{"code":"whatever","document":"X"}"#),
            None
        );
        assert_eq!(
            body_class(
                200,
                r#"{"error":["UserError",["You can not call \"do\""]]}"#
            ),
            Some(BodyClass::RpcError {
                message: r#"["UserError",["You can not call \"do\""]]"#.into()
            })
        );
        assert_eq!(
            body_class(200, r#"{"error":"bad"}"#),
            Some(BodyClass::RpcError {
                message: "bad".into()
            })
        );
        assert_eq!(body_class(201, r#"{"document":"D","error":null}"#), None);
        assert_eq!(body_class(500, r#"{"error":"bad"}"#), None);
    }
    use dockline_protocol::{DeviceId, EventId, Payload, ProofOfDelivery, References};

    /// The published Standard Webhooks test vector.
    #[test]
    fn signature_matches_standard_webhooks_vector() {
        let key = SigningKey::from_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
            .expect("vector secret decodes");
        let sig = key.sign(
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1_614_265_330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        // A different body must not verify.
        let other = key.sign(
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1_614_265_330,
            br#"{"test": 2432232315}"#,
        );
        assert_ne!(other, sig);
    }

    const CURRENT: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const PREVIOUS: &str = "whsec_ZG9ja2xpbmUtcm90YXRpb24tdGVzdC1rZXktMDAwMg==";

    fn options(previous: &[&str], quoting: IdempotencyKeyQuoting) -> WebhookOptions {
        WebhookOptions {
            previous_secrets: previous.iter().map(|s| (*s).to_owned()).collect(),
            idempotency_key: quoting,
            ..WebhookOptions::default()
        }
    }

    #[test]
    fn one_secret_signs_once_as_before() {
        let signer = WebhookSigner::new(CURRENT, &WebhookOptions::default()).expect("signer");
        assert_eq!(
            signer.signature(
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1_614_265_330,
                br#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
        assert_eq!(signer.idempotency_key("abc"), "\"abc\"");
    }

    #[test]
    fn rotation_sends_one_signature_per_secret_current_first() {
        let signer = WebhookSigner::new(
            CURRENT,
            &options(&[PREVIOUS], IdempotencyKeyQuoting::Quoted),
        )
        .expect("signer");
        let (id, ts, body) = ("evt-1", 1_700_000_000, br#"{"a":1}"#.as_slice());
        let header = signer.signature(id, ts, body);
        let parts: Vec<&str> = header.split(' ').collect();
        let current = SigningKey::from_secret(CURRENT).expect("current");
        let previous = SigningKey::from_secret(PREVIOUS).expect("previous");
        assert_eq!(
            parts,
            [
                current.sign(id, ts, body).as_str(),
                previous.sign(id, ts, body).as_str()
            ]
        );
        assert_ne!(parts[0], parts[1], "different secrets, different MACs");
        assert!(parts.iter().all(|p| p.starts_with("v1,")));
    }

    #[test]
    fn a_bad_previous_secret_is_named_by_its_position() {
        let err = WebhookSigner::new(
            CURRENT,
            &options(&[PREVIOUS, "whsec_%%"], IdempotencyKeyQuoting::Quoted),
        )
        .expect_err("bad second entry");
        assert!(
            matches!(err, SecretError::MalformedPrevious { number: 2, .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("previous_secrets"), "{err}");
        let err = WebhookSigner::new("nope", &options(&[PREVIOUS], IdempotencyKeyQuoting::Raw))
            .expect_err("bad current secret");
        assert!(matches!(err, SecretError::Malformed { .. }), "{err:?}");
    }

    #[test]
    fn idempotency_key_quoting_is_configurable() {
        assert_eq!(IdempotencyKeyQuoting::Quoted.header_value("k-1"), "\"k-1\"");
        assert_eq!(IdempotencyKeyQuoting::Raw.header_value("k-1"), "k-1");
        let signer =
            WebhookSigner::new(CURRENT, &options(&[], IdempotencyKeyQuoting::Raw)).expect("signer");
        assert_eq!(signer.idempotency_key("k-1"), "k-1");
        let signer = WebhookSigner::from(SigningKey::from_secret(CURRENT).expect("key"));
        assert_eq!(signer.idempotency_key("k-1"), "\"k-1\"");
    }

    #[test]
    fn options_parse_with_defaults_and_debug_hides_secrets() {
        let parsed: WebhookOptions = toml::from_str("").expect("empty table");
        assert_eq!(parsed, WebhookOptions::default());
        assert_eq!(parsed.idempotency_key, IdempotencyKeyQuoting::Quoted);
        let parsed: WebhookOptions = toml::from_str(&format!(
            "previous_secrets = [\"{PREVIOUS}\"]\nidempotency_key = \"raw\"\n"
        ))
        .expect("full table");
        assert_eq!(parsed, options(&[PREVIOUS], IdempotencyKeyQuoting::Raw));
        assert!(toml::from_str::<WebhookOptions>("idempotency_key = \"bare\"").is_err());
        assert!(toml::from_str::<WebhookOptions>("secrets = []").is_err());
        let debug = format!("{parsed:?}");
        assert!(!debug.contains("whsec_"), "{debug}");
        assert!(debug.contains("previous_secrets: 1"), "{debug}");
    }

    #[test]
    fn erp_webhook_table_is_read_and_checked() {
        let text = |previous: &str| {
            format!(
                "[erp]\nurl = \"http://x\"\nsecret = \"{CURRENT}\"\n[erp.webhook]\nprevious_secrets = [\"{previous}\"]\nidempotency_key = \"raw\"\n"
            )
        };
        let cfg: crate::config::Config = toml::from_str(&text(PREVIOUS)).expect("parses");
        assert_eq!(
            cfg.erp.webhook,
            options(&[PREVIOUS], IdempotencyKeyQuoting::Raw)
        );
        cfg.check().expect("valid");
        assert!(
            !format!("{cfg:?}").contains(PREVIOUS),
            "Debug hides previous secrets"
        );
        let cfg: crate::config::Config = toml::from_str(&text("whsec_%%")).expect("parses");
        let err = cfg.check().expect_err("a bad previous secret");
        assert_eq!(err.key, "erp.webhook.previous_secrets");
    }

    #[test]
    fn batches_are_json_arrays_of_the_structured_bodies_with_a_set_key() {
        let a = br#"{"id":"a","specversion":"1.0"}"#.as_slice();
        let b = br#"{"id":"b"}"#.as_slice();
        let body = cloudevent_batch_body(&[a, b]);
        assert_eq!(body, br#"[{"id":"a","specversion":"1.0"},{"id":"b"}]"#);
        let parsed: Vec<Value> = serde_json::from_slice(&body).expect("a JSON array");
        assert_eq!(parsed.len(), 2);
        assert_eq!(
            cloudevent_batch_body(&[a]),
            [b"[".as_slice(), a, b"]"].concat()
        );
        assert_eq!(batch_id(&["e1"]), "e1", "one event: its own id");
        let key = batch_id(&["e1", "e2"]);
        assert_eq!(key, batch_id(&["e2", "e1"]), "order does not matter");
        assert_ne!(key, batch_id(&["e1", "e3"]));
        assert!(key.starts_with("batch-") && key.len() == 6 + 32, "{key}");
        let parsed: WebhookOptions = toml::from_str("batch_max = 50").expect("parses");
        assert_eq!(parsed.batch_max, 50);
        assert_eq!(WebhookOptions::default().batch_max, 1);
        assert!(
            WebhookOptions {
                batch_max: 0,
                ..parsed.clone()
            }
            .check_batch()
            .is_err()
        );
        assert!(
            WebhookOptions {
                batch_max: MAX_BATCH + 1,
                ..parsed
            }
            .check_batch()
            .is_err()
        );
    }

    #[test]
    fn bad_secrets_are_refused() {
        assert!(SigningKey::from_secret("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_err());
        assert!(SigningKey::from_secret("whsec_not base64!").is_err());
        assert!(SigningKey::from_secret("whsec_").is_err());
    }

    fn envelope(detail: EventDetail) -> (Envelope, BusinessEvent) {
        let event = BusinessEvent {
            detail,
            refs: References {
                order: Some("SO-1001".into()),
                sscc: Some("003456789012345678".into()),
                ..References::default()
            },
        };
        let env = Envelope {
            v: 1,
            device: DeviceId::new("hh-01").expect("id"),
            epoch: 3,
            seq: 42,
            id: EventId([1; 16]),
            captured_ms: 1_700_000_000_123,
            time_source: TimeSource::Ntp,
            priority: Priority::MustDeliver,
            payload: Payload::Event(BusinessEvent {
                detail: EventDetail::Loaded {
                    vehicle: "x".into(),
                },
                refs: References::default(),
            }),
        };
        (env, event)
    }

    #[test]
    fn cloudevent_body_uses_readable_names() {
        let (env, event) = envelope(EventDetail::Delivered(ProofOfDelivery {
            received_by: "A. Jones".into(),
            pieces: 3,
            signature_ref: Some("sig-1".into()),
            photo_ref: None,
            position: Some(Fix {
                lat: 52.5,
                lon: 13.4,
                speed_mps: None,
                course_deg: None,
                mode: FixMode::Fix3d,
                satellites: Some(9),
                hdop: None,
            }),
        }));
        let site = SiteId::new("dc-north").expect("site");
        let body = cloudevent_body(&site, &env, &event);
        let v: Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(v["specversion"], "1.0");
        assert_eq!(v["id"], "01010101-0101-0101-0101-010101010101");
        assert_eq!(v["source"], "/dockline/dc-north/hh-01");
        assert_eq!(v["type"], "io.dockline.delivered");
        assert_eq!(v["subject"], "SO-1001");
        assert_eq!(v["time"], "2023-11-14T22:13:20.123Z");
        assert_eq!(v["docklineseq"], 42);
        assert_eq!(v["docklineepoch"], 3);
        assert_eq!(v["docklinedevice"], "hh-01");
        let d = &v["data"];
        assert_eq!(d["kind"], "delivered");
        assert_eq!(d["refs"]["order"], "SO-1001");
        assert_eq!(d["refs"]["sscc"], "003456789012345678");
        assert_eq!(d["received_by"], "A. Jones");
        assert_eq!(d["pieces"], 3);
        assert_eq!(d["signature_ref"], "sig-1");
        assert_eq!(d["position"]["lat"], 52.5);
        assert_eq!(d["position"]["satellites"], 9);
        assert_eq!(d["priority"], "must_deliver");
        assert_eq!(d["time_source"], "ntp");
        assert_eq!(idempotency_key("abc"), "\"abc\"");
    }

    #[test]
    fn packed_and_exception_fields() {
        let site = SiteId::new("s").expect("site");
        let (env, event) = envelope(EventDetail::Packed {
            quantity: 2,
            weight: Some(Weight {
                value: 1.5,
                unit: WeightUnit::Kg,
            }),
        });
        let v: Value = serde_json::from_slice(&cloudevent_body(&site, &env, &event)).expect("json");
        assert_eq!(v["data"]["weight"]["value"], 1.5);
        assert_eq!(v["data"]["weight"]["unit"], "kg");
        let (env, event) = envelope(EventDetail::Exception {
            kind: ExceptionKind::ShortPick,
            note: "only 2".into(),
        });
        let v: Value = serde_json::from_slice(&cloudevent_body(&site, &env, &event)).expect("json");
        assert_eq!(v["type"], "io.dockline.exception");
        assert_eq!(v["data"]["exception"], "short_pick");
        assert_eq!(v["data"]["note"], "only 2");
    }
}
