//! Proof-of-delivery media at the collector: the signatures and photos an
//! agent uploads in chunks (`dockline_protocol::media`), stored by their
//! SHA-256, handed to the ERP adapters with the event that references them.
//!
//! This module names what the rest of the collector sees of a medium; the
//! store, the chunk ingest and the signed links live in its submodules.

pub mod config;
pub mod link;
pub mod store;

use std::sync::Arc;

use dockline_protocol::media::{MediaHash, MediaType};
use dockline_protocol::{BusinessEvent, EventDetail, Payload};

/// What a medium is to its event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MediaRole {
    /// The receiver's signature (`delivered.sig`).
    Signature,
    /// A photo of the handover (`delivered.photo`).
    Photo,
}

impl MediaRole {
    /// Its name in documents, file names and logs.
    pub fn name(self) -> &'static str {
        match self {
            Self::Signature => "signature",
            Self::Photo => "photo",
        }
    }
}

/// A reference from an event to a medium.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MediaRef {
    /// The medium's name.
    pub hash: MediaHash,
    /// What it is to the event.
    pub role: MediaRole,
}

/// The media an event references by hash (`sha256:<hex>` in `delivered`'s
/// `sig` and `photo`). A reference that is not a hash (a file name from an
/// older agent) names no medium the collector can wait for: it is skipped.
pub fn refs_of(event: &BusinessEvent) -> Vec<MediaRef> {
    let EventDetail::Delivered(pod) = &event.detail else {
        return Vec::new();
    };
    let mut refs = Vec::new();
    for (text, role) in [
        (&pod.signature_ref, MediaRole::Signature),
        (&pod.photo_ref, MediaRole::Photo),
    ] {
        if let Some(hash) = text.as_deref().and_then(MediaHash::parse_ref) {
            refs.push(MediaRef { hash, role });
        }
    }
    refs
}

/// The media of an envelope's business event (none for other payloads).
pub fn refs_of_payload(payload: &Payload) -> Vec<MediaRef> {
    match payload {
        Payload::Event(event) => refs_of(event),
        _ => Vec::new(),
    }
}

/// A stored medium as an ERP adapter receives it with its event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErpMedium {
    /// Its name.
    pub hash: MediaHash,
    /// PNG or JPEG.
    pub media_type: MediaType,
    /// What it is to the event.
    pub role: MediaRole,
    /// Its bytes, verified against `hash` when they were stored.
    pub bytes: Arc<[u8]>,
}
