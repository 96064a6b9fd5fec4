//! A direct decoder for the batches agents actually send, beside the serde
//! decoder: the ingest profile showed ciborium's byte-wise reader and
//! serde's visitors costing a quarter of the collector's ingest time.
//!
//! # Invariants
//!
//! - It never decides validity. It reads a *canonical subset* of CBOR
//!   (definite lengths, shortest-form integers, text keys with the primary
//!   field names, no tags, no floats, nothing after the message) and gives
//!   up (`None`) on anything else, whereupon [`super::decode`] uses the
//!   serde decoder, which alone refuses. Whenever it returns a value, the
//!   serde decoder returns the same value for the same bytes (tested on
//!   random and mutated batches); validation runs after either.
//! - Covered: business events without a weight or a position. Readings and
//!   anything with a float go to the serde decoder.
//! - Every length is checked against the bytes left before it is used, so
//!   a lying header costs no allocation; nesting is fixed by the types.
//! - Alongside the batch it returns where each envelope lies in the bytes
//!   (one complete CBOR map each), so the collector stores envelopes as
//!   received without walking the payload again.

use alloc::string::String;
use alloc::vec::Vec;
use core::ops::Range;

use crate::event::{BusinessEvent, EventDetail, ExceptionKind, ProofOfDelivery, References};
use crate::{Batch, DeviceId, Envelope, EventId, Payload, Priority, TimeSource};

/// Longest text read here (ciborium reads longer keys differently; no
/// valid text is this long).
const MAX_TEXT: usize = 4096;

/// Most items reserved up front for an array, whatever its header claims:
/// a header is checked only against the bytes left, and one byte per
/// claimed item would otherwise reserve an envelope's size per byte of a
/// hostile message (a 1 MiB message, a quarter of a gigabyte).
const PREALLOC_MAX: usize = 256;

const UINT: u8 = 0;
const NINT: u8 = 1;
const BYTES: u8 = 2;
const TEXT: u8 = 3;
const ARRAY: u8 = 4;
const MAP: u8 = 5;

/// A batch and each envelope's byte range, or `None` when `bytes` is
/// outside the subset this decoder reads (see the module docs).
pub(crate) fn batch(bytes: &[u8]) -> Option<(Batch, Vec<Range<usize>>)> {
    let mut c = Cursor { b: bytes, at: 0 };
    let (mut v, mut dev, mut ep, mut held, mut evs, mut shed) =
        (None, None, None, None, None, None);
    for _ in 0..c.map()? {
        match c.key()? {
            b"v" => once(&mut v, c.u16()?)?,
            b"dev" => once(&mut dev, c.device()?)?,
            b"ep" => once(&mut ep, c.uint()?)?,
            b"held" => once(&mut held, c.uint()?)?,
            b"evs" => {
                let n = c.array()?;
                let mut events = Vec::with_capacity(n.min(PREALLOC_MAX));
                let mut spans = Vec::with_capacity(n.min(PREALLOC_MAX));
                for _ in 0..n {
                    let start = c.at;
                    events.push(c.envelope(dev.as_ref())?);
                    spans.push(start..c.at);
                }
                once(&mut evs, (events, spans))?;
            }
            b"shed" => {
                let n = c.array()?;
                let mut ranges = Vec::with_capacity(n.min(PREALLOC_MAX));
                for _ in 0..n {
                    if c.array()? != 2 {
                        return None;
                    }
                    ranges.push((c.uint()?, c.uint()?));
                }
                once(&mut shed, ranges)?;
            }
            _ => return None,
        }
    }
    if c.at != bytes.len() {
        return None;
    }
    let (events, spans) = evs?;
    Some((
        Batch {
            v: v?,
            device: dev?,
            epoch: ep?,
            first_held: held?,
            events,
            shed: shed.unwrap_or_default(),
        },
        spans,
    ))
}

/// Sets a field seen for the first time; `None` for a repeated key (which
/// serde refuses).
fn once<T>(slot: &mut Option<T>, value: T) -> Option<()> {
    if slot.is_some() {
        return None;
    }
    *slot = Some(value);
    Some(())
}

/// Reads items from `b` at `at`.
struct Cursor<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    /// Bytes left after `at`.
    fn left(&self) -> usize {
        self.b.len().saturating_sub(self.at)
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(n)?;
        let out = self.b.get(self.at..end)?;
        self.at = end;
        Some(out)
    }

    /// An item head of major types 0 to 5 with a definite, shortest-form
    /// argument: `(major, argument)`.
    fn head(&mut self) -> Option<(u8, u64)> {
        let first = *self.b.get(self.at)?;
        self.at += 1;
        let (major, info) = (first >> 5, first & 0x1f);
        if major > MAP {
            return None;
        }
        let arg = match info {
            0..=23 => u64::from(info),
            24 => Some(u64::from(self.take(1)?[0])).filter(|v| *v >= 24)?,
            25 => {
                let v = u16::from_be_bytes(self.take(2)?.try_into().ok()?);
                Some(u64::from(v)).filter(|v| *v > 0xff)?
            }
            26 => {
                let v = u32::from_be_bytes(self.take(4)?.try_into().ok()?);
                Some(u64::from(v)).filter(|v| *v > 0xffff)?
            }
            27 => {
                let v = u64::from_be_bytes(self.take(8)?.try_into().ok()?);
                Some(v).filter(|v| *v > 0xffff_ffff)?
            }
            _ => return None,
        };
        Some((major, arg))
    }

    fn uint(&mut self) -> Option<u64> {
        match self.head()? {
            (UINT, v) => Some(v),
            _ => None,
        }
    }

    fn u16(&mut self) -> Option<u16> {
        u16::try_from(self.uint()?).ok()
    }

    fn u32(&mut self) -> Option<u32> {
        u32::try_from(self.uint()?).ok()
    }

    fn i64(&mut self) -> Option<i64> {
        match self.head()? {
            (UINT, v) => i64::try_from(v).ok(),
            (NINT, v) => Some(-1 - i64::try_from(v).ok()?),
            _ => None,
        }
    }

    /// A definite text string's bytes, not checked as UTF-8: a key is only
    /// ever compared with the ASCII names of fields, which no other bytes
    /// equal.
    fn key(&mut self) -> Option<&'a [u8]> {
        match self.head()? {
            (TEXT, n) => {
                let n = usize::try_from(n).ok().filter(|n| *n <= MAX_TEXT)?;
                self.take(n)
            }
            _ => None,
        }
    }

    /// A definite text string.
    fn text(&mut self) -> Option<&'a str> {
        match self.head()? {
            (TEXT, n) => {
                let n = usize::try_from(n).ok().filter(|n| *n <= MAX_TEXT)?;
                core::str::from_utf8(self.take(n)?).ok()
            }
            _ => None,
        }
    }

    fn string(&mut self) -> Option<String> {
        self.text().map(String::from)
    }

    fn device(&mut self) -> Option<DeviceId> {
        DeviceId::new(self.text()?).ok()
    }

    /// A definite array's length, no more than the bytes left.
    fn array(&mut self) -> Option<usize> {
        match self.head()? {
            (ARRAY, n) => usize::try_from(n).ok().filter(|n| *n <= self.left()),
            _ => None,
        }
    }

    /// A definite map's entry count, its entries no more than the bytes left.
    fn map(&mut self) -> Option<usize> {
        match self.head()? {
            (MAP, n) => usize::try_from(n).ok().filter(|n| *n <= self.left() / 2),
            _ => None,
        }
    }

    /// An externally tagged enum's variant: a map of one entry, its key
    /// read here and its value left for the caller.
    fn variant(&mut self) -> Option<&'a [u8]> {
        if self.map()? != 1 {
            return None;
        }
        self.key()
    }

    /// An envelope; `batch_device`, when the batch named its device
    /// first, is cloned for an envelope naming the same (every valid one)
    /// instead of being checked again.
    fn envelope(&mut self, batch_device: Option<&DeviceId>) -> Option<Envelope> {
        let (mut v, mut dev, mut ep, mut seq, mut id) = (None, None, None, None, None);
        let (mut t, mut ts, mut pri, mut p) = (None, None, None, None);
        for _ in 0..self.map()? {
            match self.key()? {
                b"v" => once(&mut v, self.u16()?)?,
                b"dev" => {
                    let bytes = self.key()?;
                    let device = match batch_device {
                        Some(d) if d.as_str().as_bytes() == bytes => d.clone(),
                        _ => DeviceId::new(core::str::from_utf8(bytes).ok()?).ok()?,
                    };
                    once(&mut dev, device)?
                }
                b"ep" => once(&mut ep, self.uint()?)?,
                b"seq" => once(&mut seq, self.uint()?)?,
                b"id" => match self.head()? {
                    (BYTES, 16) => once(&mut id, EventId(self.take(16)?.try_into().ok()?))?,
                    _ => return None,
                },
                b"t" => once(&mut t, self.i64()?)?,
                b"ts" => {
                    let source = match self.key()? {
                        b"gnss" => TimeSource::Gnss,
                        b"ntp" => TimeSource::Ntp,
                        b"device_clock" => TimeSource::DeviceClock,
                        _ => return None,
                    };
                    once(&mut ts, source)?
                }
                b"pri" => {
                    let priority = match self.key()? {
                        b"must_deliver" => Priority::MustDeliver,
                        b"normal" => Priority::Normal,
                        b"telemetry" => Priority::Telemetry,
                        _ => return None,
                    };
                    once(&mut pri, priority)?
                }
                b"p" => {
                    let payload = match self.variant()? {
                        b"event" => Payload::Event(self.business_event()?),
                        _ => return None,
                    };
                    once(&mut p, payload)?
                }
                _ => return None,
            }
        }
        Some(Envelope {
            v: v?,
            device: dev?,
            epoch: ep?,
            seq: seq?,
            id: id?,
            captured_ms: t?,
            time_source: ts?,
            priority: pri?,
            payload: p?,
        })
    }

    fn business_event(&mut self) -> Option<BusinessEvent> {
        let (mut detail, mut refs) = (None, None);
        for _ in 0..self.map()? {
            match self.key()? {
                b"e" => once(&mut detail, self.detail()?)?,
                b"r" => once(&mut refs, self.references()?)?,
                _ => return None,
            }
        }
        Some(BusinessEvent {
            detail: detail?,
            refs: refs.unwrap_or_default(),
        })
    }

    fn references(&mut self) -> Option<References> {
        let mut r = References::default();
        let mut seen = [false; 6];
        for _ in 0..self.map()? {
            let (i, slot) = match self.key()? {
                b"ord" => (0, &mut r.order),
                b"shp" => (1, &mut r.shipment),
                b"stp" => (2, &mut r.stop),
                b"sscc" => (3, &mut r.sscc),
                b"loc" => (4, &mut r.location),
                b"op" => (5, &mut r.operator),
                _ => return None,
            };
            if seen[i] {
                return None;
            }
            seen[i] = true;
            *slot = Some(self.string()?);
        }
        Some(r)
    }

    fn detail(&mut self) -> Option<EventDetail> {
        let kind = self.variant()?;
        let n = self.map()?;
        // The fields of every variant, each read at most once; a field the
        // variant does not have, or one with a float, is left to serde.
        let (mut text_a, mut text_b, mut text_c, mut number) = (None, None, None, None);
        let mut exception = None;
        for _ in 0..n {
            match (kind, self.key()?) {
                (b"picked", b"item")
                | (b"loaded" | b"departed" | b"arrived", b"veh")
                | (b"delivered", b"by")
                | (b"exception", b"note") => once(&mut text_a, self.string()?)?,
                (b"picked", b"lot") | (b"delivered", b"sig") => once(&mut text_b, self.string()?)?,
                (b"delivered", b"photo") => once(&mut text_c, self.string()?)?,
                (b"picked" | b"packed", b"qty") | (b"delivered", b"pcs") => {
                    once(&mut number, self.u32()?)?
                }
                (b"exception", b"kind") => {
                    let k = match self.key()? {
                        b"short_pick" => ExceptionKind::ShortPick,
                        b"wrong_item" => ExceptionKind::WrongItem,
                        b"weight_mismatch" => ExceptionKind::WeightMismatch,
                        b"damaged" => ExceptionKind::Damaged,
                        b"delivery_refused" => ExceptionKind::DeliveryRefused,
                        b"not_home" => ExceptionKind::NotHome,
                        b"other" => ExceptionKind::Other,
                        _ => return None,
                    };
                    once(&mut exception, k)?
                }
                _ => return None,
            }
        }
        Some(match kind {
            b"picked" => EventDetail::Picked {
                item: text_a?,
                quantity: number?,
                lot: text_b,
            },
            b"packed" => EventDetail::Packed {
                quantity: number?,
                weight: None,
            },
            b"loaded" => EventDetail::Loaded { vehicle: text_a? },
            b"departed" => EventDetail::Departed {
                vehicle: text_a?,
                position: None,
            },
            b"arrived" => EventDetail::Arrived {
                vehicle: text_a?,
                position: None,
            },
            b"delivered" => EventDetail::Delivered(ProofOfDelivery {
                received_by: text_a?,
                pieces: number?,
                signature_ref: text_b,
                photo_ref: text_c,
                position: None,
            }),
            b"exception" => EventDetail::Exception {
                kind: exception?,
                note: text_a.unwrap_or_default(),
            },
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::encode;
    use crate::reading::{Fix, FixMode, Reading, Scan};
    use alloc::vec;
    use proptest::prelude::*;

    /// What the serde decoder makes of `bytes`, before validation.
    fn serde_batch(bytes: &[u8]) -> Option<Batch> {
        ciborium::de::from_reader_with_recursion_limit(bytes, 32).ok()
    }

    fn text() -> impl Strategy<Value = String> {
        prop_oneof!["[a-zA-Z0-9 -]{0,12}", ".{0,6}", "[a-z]{20,40}"]
    }

    fn opt_text() -> impl Strategy<Value = Option<String>> {
        proptest::option::of(text())
    }

    fn detail() -> impl Strategy<Value = EventDetail> {
        prop_oneof![
            (text(), any::<u32>(), opt_text()).prop_map(|(item, quantity, lot)| {
                EventDetail::Picked {
                    item,
                    quantity,
                    lot,
                }
            }),
            any::<u32>().prop_map(|quantity| EventDetail::Packed {
                quantity,
                weight: None
            }),
            text().prop_map(|vehicle| EventDetail::Loaded { vehicle }),
            text().prop_map(|vehicle| EventDetail::Departed {
                vehicle,
                position: None
            }),
            text().prop_map(|vehicle| EventDetail::Arrived {
                vehicle,
                position: None
            }),
            (text(), any::<u32>(), opt_text(), opt_text()).prop_map(|(by, pieces, sig, photo)| {
                EventDetail::Delivered(ProofOfDelivery {
                    received_by: by,
                    pieces,
                    signature_ref: sig,
                    photo_ref: photo,
                    position: None,
                })
            }),
            (0..7usize, text()).prop_map(|(k, note)| EventDetail::Exception {
                kind: [
                    ExceptionKind::ShortPick,
                    ExceptionKind::WrongItem,
                    ExceptionKind::WeightMismatch,
                    ExceptionKind::Damaged,
                    ExceptionKind::DeliveryRefused,
                    ExceptionKind::NotHome,
                    ExceptionKind::Other,
                ][k],
                note,
            }),
        ]
    }

    fn refs() -> impl Strategy<Value = References> {
        (
            opt_text(),
            opt_text(),
            opt_text(),
            opt_text(),
            opt_text(),
            opt_text(),
        )
            .prop_map(
                |(order, shipment, stop, sscc, location, operator)| References {
                    order,
                    shipment,
                    stop,
                    sscc,
                    location,
                    operator,
                },
            )
    }

    fn envelope(device: DeviceId) -> impl Strategy<Value = Envelope> {
        (
            any::<u64>(),
            any::<u64>(),
            any::<[u8; 16]>(),
            any::<i64>(),
            0..3usize,
            0..3usize,
            detail(),
            refs(),
            any::<u16>(),
        )
            .prop_map(move |(ep, seq, id, t, ts, pri, detail, refs, v)| Envelope {
                v,
                device: device.clone(),
                epoch: ep,
                seq,
                id: EventId(id),
                captured_ms: t,
                time_source: [TimeSource::Gnss, TimeSource::Ntp, TimeSource::DeviceClock][ts],
                priority: [Priority::MustDeliver, Priority::Normal, Priority::Telemetry][pri],
                payload: Payload::Event(BusinessEvent { detail, refs }),
            })
    }

    fn batch_strategy() -> impl Strategy<Value = Batch> {
        (
            "[a-zA-Z0-9_-]{1,64}",
            any::<u16>(),
            any::<u64>(),
            any::<u64>(),
            proptest::collection::vec(any::<(u64, u64)>(), 0..3),
        )
            .prop_flat_map(|(dev, v, ep, held, shed)| {
                let device = DeviceId::new(dev).expect("valid device");
                proptest::collection::vec(envelope(device.clone()), 0..6).prop_map(move |events| {
                    Batch {
                        v,
                        device: device.clone(),
                        epoch: ep,
                        first_held: held,
                        events,
                        shed: shed.clone(),
                    }
                })
            })
    }

    /// Checks the one promise: a value here is serde's value, and each
    /// span is the serde decoding of its envelope.
    fn agrees(bytes: &[u8]) -> Result<bool, TestCaseError> {
        let Some((fast, spans)) = batch(bytes) else {
            return Ok(false);
        };
        let serde = serde_batch(bytes);
        prop_assert_eq!(Some(&fast), serde.as_ref());
        prop_assert_eq!(spans.len(), fast.events.len());
        for (span, env) in spans.iter().zip(&fast.events) {
            let own: Envelope = ciborium::de::from_reader(&bytes[span.clone()])
                .map_err(|e| TestCaseError::fail(alloc::format!("{e:?}")))?;
            prop_assert_eq!(&own, env);
        }
        Ok(true)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Every batch of covered events the encoder writes is read here,
        /// to the same value as serde's.
        #[test]
        fn encoded_batches_are_read_as_serde_reads_them(b in batch_strategy()) {
            let bytes = encode(&b).expect("encodes");
            prop_assert!(agrees(&bytes)?, "not covered");
            prop_assert_eq!(batch(&bytes).map(|(b, _)| b), Some(b));
        }

        /// Mutated batches (bytes changed, cut, inserted) are either left
        /// to serde or read to serde's value.
        #[test]
        fn mutated_batches_never_disagree_with_serde(
            b in batch_strategy(),
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0..4u8), 1..4),
        ) {
            let mut bytes = encode(&b).expect("encodes");
            for (at, byte, how) in edits {
                if bytes.is_empty() {
                    break;
                }
                let i = at.index(bytes.len());
                match how {
                    0 => bytes[i] = byte,
                    1 => bytes.truncate(i),
                    2 => bytes.insert(i, byte),
                    _ => { bytes.remove(i); }
                }
            }
            agrees(&bytes)?;
        }

        /// Arbitrary bytes never panic it and never disagree.
        #[test]
        fn any_bytes_never_disagree(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            agrees(&bytes)?;
        }
    }

    fn one(payload: Payload) -> Vec<u8> {
        let device = DeviceId::new("d").expect("device");
        encode(&Batch {
            v: 1,
            device: device.clone(),
            epoch: 1,
            first_held: 1,
            events: vec![Envelope {
                v: 1,
                device,
                epoch: 1,
                seq: 1,
                id: EventId([1; 16]),
                captured_ms: -5,
                time_source: TimeSource::Ntp,
                priority: Priority::Normal,
                payload,
            }],
            shed: vec![(3, 4)],
        })
        .expect("encodes")
    }

    #[test]
    fn floats_readings_and_non_canonical_forms_are_left_to_serde() {
        let scan = one(Payload::Reading(Reading::Scan(Scan {
            symbology: None,
            data: "x".into(),
        })));
        assert!(batch(&scan).is_none(), "readings");
        let fix = Fix {
            lat: 1.5,
            lon: 2.0,
            speed_mps: None,
            course_deg: None,
            mode: FixMode::Fix2d,
            satellites: None,
            hdop: None,
        };
        let departed = one(Payload::Event(BusinessEvent {
            detail: EventDetail::Departed {
                vehicle: "v".into(),
                position: Some(fix),
            },
            refs: References::default(),
        }));
        assert!(batch(&departed).is_none(), "a position");
        assert!(serde_batch(&departed).is_some());

        let plain = one(Payload::Event(BusinessEvent {
            detail: EventDetail::Loaded {
                vehicle: "v".into(),
            },
            refs: References::default(),
        }));
        assert!(batch(&plain).is_some());
        // Trailing bytes, and `ep` (1) written in two bytes instead of one.
        let mut trailing = plain.clone();
        trailing.push(0);
        assert!(batch(&trailing).is_none());
        let ep = plain
            .windows(3)
            .position(|w| w == [0x62, b'e', b'p'])
            .expect("ep key");
        let mut long = plain.clone();
        long.splice(ep + 3..ep + 4, [0x18, 0x01]);
        assert!(batch(&long).is_none());
        assert!(serde_batch(&long).is_some());
    }
}
