//! Media for the ERP adapter tests: a signature (PNG) and a photo (JPEG)
//! with real magic bytes, a proof of delivery that references them by hash,
//! and one attempt of an adapter with them, as delivery makes it once the
//! media are stored (or their wait ran out).

#![allow(dead_code)]

use std::sync::Arc;

use dockline_collector::delivery::lane::lane_key;
use dockline_collector::erp::{Attempt, ErpAdapter, ErpEvent};
use dockline_collector::media::{ErpMedium, MediaRef, MediaRole};
use dockline_protocol::media::{MediaHash, MediaType};
use dockline_protocol::{
    BusinessEvent, DeviceId, Envelope, EventDetail, EventId, Payload, Priority, ProofOfDelivery,
    References, SiteId, TimeSource,
};

/// `len` bytes of an image of `media_type` (its magic, then a pattern
/// seeded by `seed`, so two media differ).
pub fn image(media_type: MediaType, len: usize, seed: u8) -> Vec<u8> {
    let magic: &[u8] = match media_type {
        MediaType::Png => b"\x89PNG\r\n\x1a\n",
        MediaType::Jpeg => &[0xff, 0xd8, 0xff, 0xe0],
    };
    let mut bytes = magic.to_vec();
    let mut x = u32::from(seed).wrapping_mul(2_654_435_761).wrapping_add(1);
    while bytes.len() < len {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        bytes.push(x as u8);
    }
    bytes.truncate(len.max(magic.len()));
    bytes
}

/// A stored medium of `role` holding `bytes`.
pub fn medium(role: MediaRole, media_type: MediaType, bytes: Vec<u8>) -> ErpMedium {
    ErpMedium {
        hash: MediaHash::of(&bytes),
        media_type,
        role,
        bytes: Arc::from(bytes),
    }
}

/// A small signature PNG (`len` bytes).
pub fn signature(len: usize, seed: u8) -> ErpMedium {
    medium(
        MediaRole::Signature,
        MediaType::Png,
        image(MediaType::Png, len, seed),
    )
}

/// A photo JPEG (`len` bytes).
pub fn photo(len: usize, seed: u8) -> ErpMedium {
    medium(
        MediaRole::Photo,
        MediaType::Jpeg,
        image(MediaType::Jpeg, len, seed),
    )
}

/// The reference an event carries to `m`.
pub fn reference(m: &ErpMedium) -> MediaRef {
    MediaRef {
        hash: m.hash,
        role: m.role,
    }
}

/// Event number `n` of `device` for `order` with `detail` (id `[n; 16]`).
pub fn event(device: &str, n: u8, order: &str, detail: EventDetail) -> Envelope {
    Envelope {
        v: 1,
        device: DeviceId::new(device).expect("device id"),
        epoch: 1,
        seq: u64::from(n),
        id: EventId([n; 16]),
        captured_ms: 1_700_000_000_000 + i64::from(n),
        time_source: TimeSource::Ntp,
        priority: Priority::MustDeliver,
        payload: Payload::Event(BusinessEvent {
            detail,
            refs: References {
                order: Some(order.into()),
                ..References::default()
            },
        }),
    }
}

/// `delivered` for `order` from `device`, event number `n`, referencing
/// `sig` and `photo` by hash (`sha256:<hex>`).
pub fn delivered(
    device: &str,
    n: u8,
    order: &str,
    sig: Option<&MediaHash>,
    photo: Option<&MediaHash>,
) -> Envelope {
    let mut id = [n; 16];
    let tag = device.as_bytes();
    for (i, b) in tag.iter().take(8).enumerate() {
        id[8 + i] = *b;
    }
    Envelope {
        v: 1,
        device: DeviceId::new(device).expect("device id"),
        epoch: 1,
        seq: u64::from(n),
        id: EventId(id),
        captured_ms: 1_764_000_000_000 + i64::from(n),
        time_source: TimeSource::Ntp,
        priority: Priority::MustDeliver,
        payload: Payload::Event(BusinessEvent {
            detail: EventDetail::Delivered(ProofOfDelivery {
                received_by: "R. Receiver".into(),
                pieces: 1,
                signature_ref: sig.map(|h| format!("sha256:{h}")),
                photo_ref: photo.map(|h| format!("sha256:{h}")),
                position: None,
            }),
            refs: References {
                order: Some(order.into()),
                ..References::default()
            },
        }),
    }
}

/// One attempt of `adapter` for `envelope` from `site` with its stored
/// `media` and the `missing` ones, as delivery makes it.
pub async fn attempt_with(
    adapter: &dyn ErpAdapter,
    site: &str,
    envelope: &Envelope,
    media: &[ErpMedium],
    missing: &[MediaRef],
) -> Attempt {
    let site = SiteId::new(site).expect("site id");
    let event = envelope.business_event().expect("a business event");
    let lane = lane_key(&envelope.device, event);
    adapter
        .deliver(ErpEvent {
            site: &site,
            envelope,
            event,
            lane: &lane,
            media,
            media_missing: missing,
        })
        .await
}
