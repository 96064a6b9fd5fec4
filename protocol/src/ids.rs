//! Identifiers that appear in topics and keys.
//!
//! Device and site ids are restricted to `[A-Za-z0-9_-]`, 1 to 64 bytes: they
//! are MQTT topic levels and client ids, where `+ # / $` would change the
//! meaning of a subscription (and some brokers reject such client ids).

use alloc::string::String;
use core::fmt;
use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

/// Longest device or site id.
pub const MAX_ID_BYTES: usize = 64;

/// An id failed the `[A-Za-z0-9_-]{1,64}` rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} id {value:?} is not valid: use 1 to 64 characters from A-Z a-z 0-9 _ -")]
pub struct IdError {
    /// "device" or "site".
    pub kind: &'static str,
    /// The rejected text (cut to 80 bytes).
    pub value: String,
}

fn check(kind: &'static str, value: &str) -> Result<(), IdError> {
    let ok = !value.is_empty()
        && value.len() <= MAX_ID_BYTES
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        let mut shown = String::new();
        for c in value.chars() {
            if shown.len() >= 80 {
                break;
            }
            shown.push(c);
        }
        Err(IdError { kind, value: shown })
    }
}

macro_rules! topic_safe_id {
    ($name:ident, $kind:literal, $doc:literal) => {
        #[doc = $doc]
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Checks the text against the id rule.
            pub fn new(value: impl Into<String>) -> Result<Self, IdError> {
                let value = value.into();
                check($kind, &value)?;
                Ok(Self(value))
            }

            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl core::str::FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::new(s)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::new(s).map_err(de::Error::custom)
            }
        }
    };
}

topic_safe_id!(
    DeviceId,
    "device",
    "A device (agent) id, unique within the fleet."
);
topic_safe_id!(SiteId, "site", "A site (warehouse, depot) id.");

/// A stable 128-bit event id (a UUIDv7 made by the agent's outbox).
///
/// CBOR carries it as a 16-byte string; human-readable formats (JSON) as the
/// canonical hyphenated UUID text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventId(pub [u8; 16]);

impl EventId {
    /// Parses the hyphenated (or plain 32-digit) hex form.
    pub fn parse(text: &str) -> Option<Self> {
        let mut out = [0u8; 16];
        let mut nibbles = 0usize;
        for c in text.bytes() {
            if c == b'-' {
                continue;
            }
            let v = (c as char).to_digit(16)? as u8;
            if nibbles >= 32 {
                return None;
            }
            out[nibbles / 2] |= if nibbles.is_multiple_of(2) { v << 4 } else { v };
            nibbles += 1;
        }
        (nibbles == 32).then_some(Self(out))
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl Serialize for EventId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.collect_str(self)
        } else {
            s.serialize_bytes(&self.0)
        }
    }
}

impl<'de> Deserialize<'de> for EventId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = EventId;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a 16-byte event id or its UUID text")
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<EventId, E> {
                let arr: [u8; 16] = v.try_into().map_err(|_| {
                    E::custom(alloc::format!(
                        "event id has {} bytes, expected 16",
                        v.len()
                    ))
                })?;
                Ok(EventId(arr))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<EventId, E> {
                EventId::parse(v).ok_or_else(|| E::custom("event id is not a UUID"))
            }
        }
        if d.is_human_readable() {
            d.deserialize_str(V)
        } else {
            d.deserialize_bytes(V)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_reject_topic_wildcards_and_empty() {
        for bad in ["", "a/b", "a+b", "#", "$sys", "é", &"x".repeat(65)] {
            assert!(DeviceId::new(bad).is_err(), "{bad:?} accepted");
        }
        assert!(DeviceId::new("handheld-07_A").is_ok());
    }

    #[test]
    fn event_id_text_round_trip() {
        let id = EventId([
            0x01, 0x93, 0x5f, 0x1e, 0x2a, 0x3b, 0x7c, 0x4d, 0x8e, 0x9f, 0xa0, 0xb1, 0xc2, 0xd3,
            0xe4, 0xf5,
        ]);
        let text = alloc::format!("{id}");
        assert_eq!(text, "01935f1e-2a3b-7c4d-8e9f-a0b1c2d3e4f5");
        assert_eq!(EventId::parse(&text), Some(id));
        assert_eq!(EventId::parse("01935f1e"), None);
        assert_eq!(EventId::parse("zz935f1e-2a3b-7c4d-8e9f-a0b1c2d3e4f5"), None);
    }
}
