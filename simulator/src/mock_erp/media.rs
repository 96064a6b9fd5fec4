//! Media at the mock ERP: the CloudEvents that carry a delivery's signature
//! or photo, by reference (`dataref`, a signed expiring URL on the
//! collector) or inline (`data_base64`).
//!
//! # What makes a CloudEvent a medium
//!
//! A `dataref` or a `data_base64` attribute, or the type `io.dockline.media`
//! (the collector's webhook; one with neither attribute is refused: it
//! carries no bytes) ([`MediumSource::of`]). Its
//! name, the SHA-256 the ERP checks the bytes against, is the first of:
//! an attribute (or a field of an object `data`) whose value is
//! `sha256:<hex>`; the last path segment of `dataref` when it is 64 hex
//! digits (`/v1/media/{hex}`). A medium whose name cannot be found is
//! refused (400): a check that cannot fail proves nothing.
//!
//! # Invariants
//!
//! - A medium is booked ([`super::Ledger::attach`]) only after its bytes
//!   were fetched (or decoded) and their SHA-256 matched its name; a
//!   mismatch is refused 422 and counted (`media_bad_hash`), a fetch that
//!   fails is answered 502 (the sender retries) and counted
//!   (`media_fetch_failures`).
//! - One attachment per idempotency key, like events; a second attachment
//!   of the same medium under another key is counted `media_duplicated`.

use base64::Engine;
use dockline_protocol::media::MediaHash;
use serde::Serialize;
use serde_json::{Map, Value};

/// The CloudEvents type of a medium the collector sends.
pub const MEDIA_TYPE: &str = "io.dockline.media";

/// How the medium's bytes came.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Via {
    /// Fetched from its `dataref`.
    Link,
    /// Decoded from `data_base64`.
    Inline,
}

/// A medium attached at the ERP, bytes checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MediaEffect {
    /// Its SHA-256, checked against the bytes.
    #[serde(serialize_with = "hex")]
    pub hash: MediaHash,
    /// The idempotency key that attached it.
    pub key: String,
    /// The CloudEvents `subject` (the document it belongs to), when sent.
    pub event: Option<String>,
    /// Its size.
    pub bytes: u64,
    /// Link or inline.
    pub via: Via,
    /// When it was attached, Unix milliseconds.
    pub booked_ms: u64,
}

fn hex<S: serde::Serializer>(h: &MediaHash, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(h)
}

/// Where a medium's bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetch {
    /// At this URL.
    Url(String),
    /// Here.
    Inline(Vec<u8>),
}

/// A medium CloudEvent's name and bytes' whereabouts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediumSource {
    /// The SHA-256 the bytes must have.
    pub hash: MediaHash,
    /// Where they are.
    pub fetch: Fetch,
}

impl MediumSource {
    /// `None` when the CloudEvent carries no medium; the medium's source, or
    /// why it cannot be checked.
    pub fn of(ce: &Map<String, Value>) -> Option<Result<MediumSource, String>> {
        let dataref = ce.get("dataref").and_then(Value::as_str);
        let inline = ce.get("data_base64").and_then(Value::as_str);
        let typed = ce.get("type").and_then(Value::as_str) == Some(MEDIA_TYPE);
        let fetch = match (dataref, inline) {
            (None, None) if typed => {
                return Some(Err(format!(
                    "a {MEDIA_TYPE} CloudEvent with neither dataref nor data_base64 carries no bytes; give the collector a [media] link_key_file or an inline_max_bytes"
                )));
            }
            (None, None) => return None,
            (_, Some(b64)) => match base64::engine::general_purpose::STANDARD.decode(b64) {
                Ok(bytes) => Fetch::Inline(bytes),
                Err(e) => return Some(Err(format!("data_base64 is not base64: {e}"))),
            },
            (Some(url), None) => Fetch::Url(url.to_string()),
        };
        let named = |v: &Value| v.as_str().and_then(MediaHash::parse_ref);
        let declared = ce
            .iter()
            .filter(|(k, _)| k.as_str() != "data_base64")
            .find_map(|(_, v)| named(v))
            .or_else(|| ce.get("data")?.as_object()?.values().find_map(named))
            .or_else(|| {
                let path = dataref?.split(['?', '#']).next()?;
                MediaHash::parse_hex(path.rsplit('/').next()?)
            });
        Some(match declared {
            Some(hash) => Ok(MediumSource { hash, fetch }),
            None => Err(
                "a medium CloudEvent names no SHA-256 (no \"sha256:<hex>\" attribute, no /v1/media/<hex> dataref); the ERP cannot check its bytes"
                    .into(),
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(v: Value) -> Map<String, Value> {
        v.as_object().cloned().expect("object")
    }

    #[test]
    fn an_event_without_dataref_or_inline_data_is_no_medium() {
        assert_eq!(MediumSource::of(&map(json!({"data": {"a": 1}}))), None);
    }

    #[test]
    fn the_name_comes_from_an_attribute_or_the_dataref_path() {
        let h = MediaHash::of(b"photo");
        let url = format!("http://127.0.0.1:1/v1/media/{h}?exp=1&sig=x");
        let by_path = MediumSource::of(&map(json!({"dataref": url})));
        assert_eq!(
            by_path,
            Some(Ok(MediumSource {
                hash: h,
                fetch: Fetch::Url(url.clone())
            }))
        );
        let other = MediaHash::of(b"other");
        let by_attr = MediumSource::of(&map(
            json!({"dataref": "http://x/m/1", "docklinemedia": format!("sha256:{other}")}),
        ));
        assert_eq!(by_attr.and_then(Result::ok).map(|s| s.hash), Some(other));
        let in_data = MediumSource::of(&map(
            json!({"dataref": "http://x/m/1", "data": {"hash": format!("sha256:{other}")}}),
        ));
        assert_eq!(in_data.and_then(Result::ok).map(|s| s.hash), Some(other));
    }

    #[test]
    fn a_media_type_without_bytes_is_refused() {
        let h = MediaHash::of(b"sig");
        let s = MediumSource::of(&map(
            json!({"type": "io.dockline.media", "docklinehash": format!("sha256:{h}")}),
        ));
        assert!(matches!(s, Some(Err(m)) if m.contains("no bytes")));
    }

    #[test]
    fn inline_bytes_are_decoded_and_an_unnamed_medium_refused() {
        let h = MediaHash::of(b"sig");
        let b64 = base64::engine::general_purpose::STANDARD.encode(b"sig");
        let s = MediumSource::of(&map(
            json!({"data_base64": b64, "docklinemedia": format!("sha256:{h}")}),
        ));
        assert_eq!(
            s,
            Some(Ok(MediumSource {
                hash: h,
                fetch: Fetch::Inline(b"sig".to_vec())
            }))
        );
        let unnamed = MediumSource::of(&map(json!({"data_base64": b64})));
        assert!(matches!(unnamed, Some(Err(m)) if m.contains("SHA-256")));
        let bad = MediumSource::of(&map(json!({"data_base64": "!!"})));
        assert!(matches!(bad, Some(Err(m)) if m.contains("base64")));
    }
}
