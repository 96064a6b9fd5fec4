//! A batch as it came off the wire: decoded and validated by the protocol's
//! decoder, plus where each envelope's own bytes lie in the payload, so the
//! inbox stores every envelope as it was received instead of encoding it
//! again (the profile of ingest showed that re-encoding per event).
//!
//! # Invariants
//!
//! - The batch is always the protocol decoder's ([`codec::decode_batch`]):
//!   it alone decides what is valid. Its direct decoder gives the byte
//!   spans of what it reads; for the rest they are found afterwards by a
//!   structural walk over the same payload, which only delimits CBOR items
//!   and trusts nothing it reads: every length is checked against the end
//!   of the payload, nesting is capped, and reserved encodings are refused.
//! - Spans are kept only when the walk finds exactly one span per decoded
//!   envelope; otherwise (a payload the walk cannot follow) they are
//!   dropped and the inbox encodes the envelopes itself. So a span is
//!   always one complete CBOR item that the protocol decoder decoded into
//!   the envelope at the same position.

use std::ops::Range;

use dockline_protocol::{Batch, DecodeError, codec};

/// The batch map's key of its envelope array (`Batch::events`).
const EVENTS_KEY: &[u8] = b"evs";

/// Deepest nesting the walk follows (the protocol decoder allows less).
const MAX_DEPTH: usize = 64;

/// A decoded batch and, when found, each envelope's bytes in `payload`.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedBatch {
    /// The decoded, validated batch.
    pub batch: Batch,
    /// The payload it was decoded from.
    payload: Vec<u8>,
    /// Where `batch.events[i]` lies in `payload`; empty when not found.
    spans: Vec<Range<usize>>,
}

impl ReceivedBatch {
    /// Decodes `payload` with the protocol's validating decoder and finds
    /// each envelope's bytes in it.
    pub fn decode(payload: &[u8]) -> Result<Self, DecodeError> {
        let (batch, spans) = codec::decode_batch(payload)?;
        let spans = match spans.or_else(|| envelope_spans(payload)) {
            Some(spans) if spans.len() == batch.events.len() => spans,
            _ => Vec::new(),
        };
        Ok(Self {
            batch,
            payload: payload.to_vec(),
            spans,
        })
    }

    /// Each envelope's bytes as received, in batch order; `None` when they
    /// could not be delimited (then encode the envelopes).
    pub fn envelope_bytes(&self) -> Option<Vec<&[u8]>> {
        if self.spans.len() != self.batch.events.len() {
            return None;
        }
        self.spans
            .iter()
            .map(|r| self.payload.get(r.clone()))
            .collect()
    }
}

/// The byte ranges of the items of the top-level map's `evs` array, or
/// `None` when `payload` is not a map holding one.
pub fn envelope_spans(payload: &[u8]) -> Option<Vec<Range<usize>>> {
    let mut at = 0;
    let (major, len) = head(payload, &mut at)?;
    if major != MAP {
        return None;
    }
    let mut spans = None;
    for _ in 0..len.count()? {
        let key_start = at;
        skip(payload, &mut at, 0)?;
        let key = payload.get(key_start..at)?;
        if is_text(key, EVENTS_KEY) {
            let (major, n) = head(payload, &mut at)?;
            if major != ARRAY {
                return None;
            }
            let mut found = Vec::new();
            let mut item = |at: &mut usize| -> Option<()> {
                let start = *at;
                skip(payload, at, 1)?;
                found.push(start..*at);
                Some(())
            };
            match n {
                Len::Definite(n) => {
                    for _ in 0..n {
                        item(&mut at)?;
                    }
                }
                Len::Indefinite => {
                    while *payload.get(at)? != BREAK {
                        item(&mut at)?;
                    }
                    at += 1;
                }
            }
            spans = Some(found);
        } else {
            skip(payload, &mut at, 0)?;
        }
    }
    (at == payload.len()).then_some(spans).flatten()
}

const UINT: u8 = 0;
const NINT: u8 = 1;
const BYTES: u8 = 2;
const TEXT: u8 = 3;
const ARRAY: u8 = 4;
const MAP: u8 = 5;
const TAG: u8 = 6;
const SIMPLE: u8 = 7;

/// The length part of an item's head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Len {
    Definite(u64),
    Indefinite,
}

impl Len {
    /// The definite count, capped by what a payload can hold.
    fn count(self) -> Option<usize> {
        match self {
            Len::Definite(n) => usize::try_from(n).ok(),
            Len::Indefinite => None,
        }
    }
}

/// Reads one item head at `*at`: its major type and its argument.
fn head(bytes: &[u8], at: &mut usize) -> Option<(u8, Len)> {
    let first = *bytes.get(*at)?;
    *at += 1;
    let (major, info) = (first >> 5, first & 0x1f);
    let len = match info {
        0..=23 => Len::Definite(u64::from(info)),
        24..=27 => {
            let n = 1usize << (info - 24);
            let arg = bytes.get(*at..at.checked_add(n)?)?;
            *at += n;
            Len::Definite(arg.iter().fold(0u64, |v, b| (v << 8) | u64::from(*b)))
        }
        31 if matches!(major, BYTES | TEXT | ARRAY | MAP) => Len::Indefinite,
        _ => return None,
    };
    Some((major, len))
}

/// Moves `*at` past one complete item.
fn skip(bytes: &[u8], at: &mut usize, depth: usize) -> Option<()> {
    if depth > MAX_DEPTH {
        return None;
    }
    let (major, len) = head(bytes, at)?;
    match (major, len) {
        (UINT | NINT | SIMPLE, Len::Definite(_)) => Some(()),
        (BYTES | TEXT, Len::Definite(n)) => {
            let end = at.checked_add(usize::try_from(n).ok()?)?;
            (end <= bytes.len()).then(|| *at = end)
        }
        (BYTES | TEXT, Len::Indefinite) => {
            // Definite chunks of the same type until the break byte.
            while *bytes.get(*at)? != BREAK {
                let (chunk, n) = head(bytes, at)?;
                let n = n.count()?;
                if chunk != major {
                    return None;
                }
                let end = at.checked_add(n)?;
                if end > bytes.len() {
                    return None;
                }
                *at = end;
            }
            *at += 1;
            Some(())
        }
        (ARRAY | MAP, Len::Definite(n)) => {
            let items = if major == MAP { n.checked_mul(2)? } else { n };
            // Every item takes at least one byte: a count beyond the
            // payload is a lie, refused before looping on it.
            if items > (bytes.len() - *at) as u64 {
                return None;
            }
            for _ in 0..items {
                skip(bytes, at, depth + 1)?;
            }
            Some(())
        }
        (ARRAY | MAP, Len::Indefinite) => {
            let mut items = 0u64;
            while *bytes.get(*at)? != BREAK {
                skip(bytes, at, depth + 1)?;
                items += 1;
            }
            *at += 1;
            (major == ARRAY || items.is_multiple_of(2)).then_some(())
        }
        (TAG, Len::Definite(_)) => skip(bytes, at, depth + 1),
        _ => None,
    }
}

/// The "break" stop code that ends an indefinite-length item.
const BREAK: u8 = 0xff;

/// Whether `item` is the text string `text` (definite length).
fn is_text(item: &[u8], text: &[u8]) -> bool {
    let mut at = 0;
    matches!(head(item, &mut at), Some((TEXT, Len::Definite(n))) if n as usize == text.len())
        && item.get(at..) == Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use dockline_protocol::{
        BusinessEvent, DeviceId, Envelope, EventDetail, EventId, Payload, Priority, References,
        TimeSource,
    };
    use proptest::prelude::*;

    fn envelope(seq: u64, item: &str, order: Option<String>) -> Envelope {
        Envelope {
            v: 1,
            device: DeviceId::new("hh-01").expect("device"),
            epoch: 7,
            seq,
            id: EventId([seq as u8; 16]),
            captured_ms: 1_700_000_000_000 + seq as i64,
            time_source: TimeSource::Ntp,
            priority: Priority::Normal,
            payload: Payload::Event(BusinessEvent {
                detail: EventDetail::Picked {
                    item: item.into(),
                    quantity: 1 + seq as u32,
                    lot: None,
                },
                refs: References {
                    order,
                    ..References::default()
                },
            }),
        }
    }

    fn batch(events: Vec<Envelope>, shed: Vec<(u64, u64)>) -> Batch {
        Batch {
            v: 1,
            device: DeviceId::new("hh-01").expect("device"),
            epoch: 7,
            first_held: 1,
            events,
            shed,
        }
    }

    proptest! {
        /// Each span is exactly the envelope's own encoding, whatever the
        /// batch holds.
        #[test]
        fn spans_are_each_envelopes_own_bytes(
            n in 0..20usize,
            item in "[0-9]{1,30}",
            order in proptest::option::of("[A-Z0-9-]{0,40}"),
            shed in proptest::collection::vec((1..100u64, 0..5u64), 0..3),
        ) {
            let events: Vec<Envelope> =
                (1..=n as u64).map(|s| envelope(s, &item, order.clone())).collect();
            // Shed ranges above the events (a sent sequence is never shed).
            let top = n as u64;
            let shed = shed.into_iter().map(|(lo, len)| (top + lo, top + lo + len)).collect();
            let payload = codec::encode(&batch(events.clone(), shed)).expect("encode");
            let got = ReceivedBatch::decode(&payload).expect("decode");
            let bytes = got.envelope_bytes().expect("spans found");
            prop_assert_eq!(bytes.len(), events.len());
            for (b, e) in bytes.iter().zip(&events) {
                let own = codec::encode(e).expect("encode");
                prop_assert_eq!(*b, own.as_slice());
            }
        }

        /// Arbitrary bytes never panic the walk, and whatever spans it
        /// returns lie inside the payload.
        #[test]
        fn any_bytes_are_walked_safely(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Some(spans) = envelope_spans(&bytes) {
                for r in spans {
                    prop_assert!(r.start <= r.end && r.end <= bytes.len());
                }
            }
        }
    }

    #[test]
    fn indefinite_lengths_and_tags_are_followed() {
        // {"evs": [_ 1, 24(h'00'), "a"], "v": [_ ]} with an indefinite array.
        let payload = [
            0xa2, 0x63, b'e', b'v', b's', 0x9f, 0x01, 0xd8, 0x18, 0x41, 0x00, 0x61, b'a', 0xff,
            0x61, b'v', 0x9f, 0xff,
        ];
        assert_eq!(
            envelope_spans(&payload),
            Some(vec![6..7, 7..11, 11..13]),
            "three items"
        );
    }

    #[test]
    fn lies_about_lengths_are_refused() {
        // A map claiming 2^32 entries in a few bytes, a string running past
        // the end, a reserved head, trailing bytes.
        assert_eq!(envelope_spans(&[0xba, 0xff, 0xff, 0xff, 0xff, 0x00]), None);
        assert_eq!(envelope_spans(&[0xa1, 0x63, b'e', b'v']), None);
        assert_eq!(envelope_spans(&[0xa1, 0x1c, 0x00]), None);
        assert_eq!(envelope_spans(&[0xa0, 0x00]), None);
        // 100 nested arrays: deeper than the walk follows.
        let mut deep = vec![0xa1, 0x63, b'e', b'v', b's', 0x81];
        deep.extend(std::iter::repeat_n(0x81, 100));
        deep.push(0x00);
        assert_eq!(envelope_spans(&deep), None);
    }

    #[test]
    fn spans_of_batches_the_direct_decoder_leaves_come_from_the_walk() {
        // A reading is decoded by serde; the walk still finds its bytes.
        let mut reading = envelope(2, "1", None);
        reading.payload =
            Payload::Reading(dockline_protocol::Reading::Scan(dockline_protocol::Scan {
                symbology: None,
                data: "0950".into(),
            }));
        let events = vec![envelope(1, "1", None), reading];
        let payload = codec::encode(&batch(events.clone(), Vec::new())).expect("enc");
        let got = ReceivedBatch::decode(&payload).expect("decode");
        let bytes = got.envelope_bytes().expect("spans found");
        for (b, e) in bytes.iter().zip(&events) {
            assert_eq!(*b, codec::encode(e).expect("encode").as_slice());
        }
    }

    #[test]
    fn a_batch_the_walk_cannot_follow_falls_back_to_encoding() {
        let payload = codec::encode(&batch(vec![envelope(1, "1", None)], Vec::new())).expect("enc");
        let mut got = ReceivedBatch::decode(&payload).expect("decode");
        got.spans.clear();
        assert_eq!(got.envelope_bytes(), None);
    }
}
