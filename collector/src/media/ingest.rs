//! Chunk ingest: one [`MediaChunk`] from `dockline/v1/{site}/{device}/media`
//! in, the [`MediaAck`] for `…/media_ack` out (see
//! `dockline_protocol::media`, the contract).
//!
//! # Invariants
//!
//! - **Committed before acked.** Bytes go to the store
//!   ([`crate::media::store::MediaStore::append`], durable on return)
//!   before the ack that counts them is built; a store failure returns an
//!   error (the MQTT edge retries the message) and forgets the in-memory
//!   reassembly, so the next attempt rebuilds it from the store.
//! - **Resumable.** A reassembly not in memory (a restart, an eviction, a
//!   chunk another collector of the group took) is rebuilt from the stored
//!   prefix ([`Reassembly::resume`]); one whose `have` differs from the
//!   store's is rebuilt too, so collectors sharing a database never write
//!   at the same offset.
//! - **Bounded memory.** A reassembly holds a header and a running hash,
//!   never the bytes. At most `[media] max_receiving_per_device` per device
//!   and `max_receiving` in total; when full, one idle for [`IDLE_MS`] is
//!   evicted (its bytes stay in the store), else the chunk is refused
//!   (`media_busy`, not acked: the agent resends after its ack timeout).
//! - **Every refusal is counted and named**: a bad payload (`malformed`,
//!   `oversize`), another device's topic (`device_mismatch`), an unknown
//!   device (`unknown_device`), a medium over `[media] max_bytes` or whose
//!   bytes are not the type it claims (`media_refused`: acked `Refused`, the
//!   agent stops and shows why), a header that changed mid-medium
//!   (`media_header`), a full table (`media_busy`).

use std::collections::HashMap;

use dockline_protocol::codec;
use dockline_protocol::media::{
    MediaAck, MediaChunk, MediaHash, MediaState, MediaType, Offer, Reassembly, ReassemblyError,
};
use dockline_protocol::{DeviceId, MediaChannel, PROTOCOL_VERSION, SiteId, Topic};

use crate::media::MediaHub;
use crate::media::store::MediaError;
use crate::publication::Publication;

/// A reassembly without a chunk for this long may be evicted (ms).
pub const IDLE_MS: i64 = 60_000;

/// Why a chunk was refused (each a counter under its [`Self::reason`]).
#[derive(Debug, thiserror::Error)]
pub enum ChunkRefusal {
    /// The payload is not a valid chunk.
    #[error("dropping malformed media chunk: {0}")]
    Decode(#[from] dockline_protocol::DecodeError),
    /// The chunk names another device than its topic.
    #[error(
        "refusing media chunk: it claims device '{claimed}', the topic says '{topic}'; fix the agent's device id or its topic"
    )]
    DeviceMismatch {
        /// The payload's device.
        claimed: DeviceId,
        /// The topic's.
        topic: DeviceId,
    },
    /// The chunk's header differs from the medium's first chunk.
    #[error("refusing media chunk: {0}")]
    Header(ReassemblyError),
    /// Too many media received at once.
    #[error(
        "not storing or acking media chunk of {hash} from '{device}': {busy}; the agent resends after its ack timeout (raise [media] max_receiving_per_device / max_receiving if this persists)"
    )]
    Busy {
        /// The medium.
        hash: MediaHash,
        /// The device.
        device: DeviceId,
        /// Which cap.
        busy: &'static str,
    },
    /// The store failed (transient: the message is retried).
    #[error("cannot store media chunk: {0}")]
    Store(MediaError),
    /// The ack could not be encoded.
    #[error("cannot encode media ack: {0}")]
    Encode(dockline_protocol::EncodeError),
}

impl ChunkRefusal {
    /// The counter name.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Decode(dockline_protocol::DecodeError::TooLarge { .. }) => "oversize",
            Self::Decode(_) => "malformed",
            Self::DeviceMismatch { .. } => "device_mismatch",
            Self::Header(_) => "media_header",
            Self::Busy { .. } => "media_busy",
            Self::Store(_) => "media_store",
            Self::Encode(_) => "encode",
        }
    }

    /// Whether it is bad input (counted, dropped) rather than our failure.
    pub fn is_refusal(&self) -> bool {
        !matches!(self, Self::Store(_) | Self::Encode(_))
    }
}

/// One medium being received.
#[derive(Debug)]
pub(crate) struct Receiving {
    device: DeviceId,
    reassembly: Reassembly,
    last_ms: i64,
}

/// The reassemblies in memory.
#[derive(Debug, Default)]
pub(crate) struct Table {
    by_hash: HashMap<MediaHash, Receiving>,
}

/// Whether a new reassembly for `device` fits, evicting one idle entry if
/// that makes room (pure: the table and the clock in, the verdict out).
pub(crate) fn admit(
    table: &mut Table,
    device: &DeviceId,
    per_device: usize,
    total: usize,
    now_ms: i64,
) -> Result<(), &'static str> {
    let mine = table
        .by_hash
        .values()
        .filter(|r| &r.device == device)
        .count();
    let idle = |r: &Receiving| now_ms.saturating_sub(r.last_ms) >= IDLE_MS;
    if mine >= per_device {
        let victim = table
            .by_hash
            .iter()
            .filter(|(_, r)| &r.device == device && idle(r))
            .min_by_key(|(_, r)| r.last_ms)
            .map(|(h, _)| *h);
        match victim {
            Some(h) => {
                table.by_hash.remove(&h);
            }
            None => {
                return Err(
                    "this device already sends [media] max_receiving_per_device media at once",
                );
            }
        }
    }
    if table.by_hash.len() >= total {
        let victim = table
            .by_hash
            .iter()
            .filter(|(_, r)| idle(r))
            .min_by_key(|(_, r)| r.last_ms)
            .map(|(h, _)| *h);
        match victim {
            Some(h) => {
                table.by_hash.remove(&h);
            }
            None => {
                return Err("the collector already receives [media] max_receiving media at once");
            }
        }
    }
    Ok(())
}

fn ack_publication(site: &SiteId, ack: &MediaAck) -> Result<Publication, ChunkRefusal> {
    Ok(Publication {
        topic: Topic::media(site, &ack.device, MediaChannel::MediaAck),
        payload: codec::encode(ack).map_err(ChunkRefusal::Encode)?,
    })
}

fn ack_of(
    device: &DeviceId,
    hash: MediaHash,
    have: u64,
    at: Option<u64>,
    state: MediaState,
) -> MediaAck {
    MediaAck {
        v: PROTOCOL_VERSION,
        device: device.clone(),
        hash,
        have,
        at,
        state,
    }
}

/// The ack for a medium a later stage settled (attached, refused).
pub fn later_ack(
    site: &SiteId,
    device: &DeviceId,
    hash: MediaHash,
    have: u64,
    state: MediaState,
) -> Result<Publication, ChunkRefusal> {
    ack_publication(site, &ack_of(device, hash, have, None, state))
}

impl MediaHub {
    /// Handles one chunk published on `site`/`topic_device`'s media topic
    /// (the device already admitted by the caller): the ack to publish.
    pub async fn chunk(
        &self,
        site: &SiteId,
        topic_device: &DeviceId,
        payload: &[u8],
    ) -> Result<Publication, ChunkRefusal> {
        let chunk: MediaChunk = codec::decode(payload)?;
        if &chunk.device != topic_device {
            return Err(ChunkRefusal::DeviceMismatch {
                claimed: chunk.device,
                topic: topic_device.clone(),
            });
        }
        let result = self.take(site, &chunk).await;
        if let Err(e) = &result {
            self.metrics.refused(e.reason());
        }
        result
    }

    async fn take(&self, site: &SiteId, chunk: &MediaChunk) -> Result<Publication, ChunkRefusal> {
        let (hash, device) = (chunk.hash, &chunk.device);
        let at = Some(chunk.off);
        let h = hash;
        let info = self
            .store
            .call(move |s| s.info(&h))
            .await
            .map_err(ChunkRefusal::Store)?;
        if let Some(info) = info {
            // Stored already (a resend, or the same bytes from elsewhere).
            self.table.lock().await.by_hash.remove(&hash);
            let state = match info.attached_ms {
                Some(_) => MediaState::Attached { doc: None },
                None => MediaState::Stored,
            };
            return ack_publication(site, &ack_of(device, hash, info.len, at, state));
        }
        let max = self.config.max_bytes;
        if chunk.len > max {
            self.metrics.refused("media_refused");
            let reason = format!(
                "the medium is {} bytes, this collector takes at most {max} ([media] max_bytes)",
                chunk.len
            );
            return ack_publication(
                site,
                &ack_of(device, hash, 0, at, MediaState::Refused { reason }),
            );
        }
        if chunk.off == 0
            && chunk.data.len() >= 8
            && MediaType::from_magic(&chunk.data) != Some(chunk.media_type)
        {
            self.metrics.refused("media_refused");
            let reason = format!(
                "the bytes are not a {} image (their first bytes say otherwise); the collector takes PNG and JPEG only",
                chunk.media_type.content_type()
            );
            return ack_publication(
                site,
                &ack_of(device, hash, 0, at, MediaState::Refused { reason }),
            );
        }
        let now = crate::now_ms();
        let mut table = self.table.lock().await;
        // The store is the truth: rebuild when it moved without us.
        let stored_have = self
            .store
            .call(move |s| s.prefix_len(&h))
            .await
            .map_err(ChunkRefusal::Store)?;
        let fresh = match table.by_hash.get(&hash) {
            Some(r) => r.reassembly.have() != stored_have,
            None => true,
        };
        if fresh {
            if !table.by_hash.contains_key(&hash) {
                admit(
                    &mut table,
                    device,
                    self.config.max_receiving_per_device,
                    self.config.max_receiving,
                    now,
                )
                .map_err(|busy| ChunkRefusal::Busy {
                    hash,
                    device: device.clone(),
                    busy,
                })?;
            }
            let prefix = self
                .store
                .call(move |s| s.prefix(&h))
                .await
                .map_err(ChunkRefusal::Store)?;
            let r = match Reassembly::resume(hash, chunk.media_type, chunk.len, &prefix, max) {
                Ok(r) if !r.is_complete() => r,
                // A complete but unverified prefix (killed between the last
                // append and the rename): completed below by the next offer
                // only if it is short; here it is full, so store or discard.
                Ok(_) => {
                    let t = chunk.media_type;
                    match self.store.call(move |s| s.complete(&h, t, now)).await {
                        Ok(()) => {
                            self.on_stored(hash, chunk.len);
                            return ack_publication(
                                site,
                                &ack_of(device, hash, chunk.len, at, MediaState::Stored),
                            );
                        }
                        Err(e) if e.restarts_medium() => {
                            Reassembly::resume(hash, chunk.media_type, chunk.len, &[], max)
                                .map_err(ChunkRefusal::Header)?
                        }
                        Err(e) => return Err(ChunkRefusal::Store(e)),
                    }
                }
                Err(ReassemblyError::TooLarge { .. }) => unreachable_too_large(max)?,
                Err(_) => {
                    // A prefix longer than the medium or hashing wrong: damage.
                    self.store
                        .call(move |s| s.discard(&h))
                        .await
                        .map_err(ChunkRefusal::Store)?;
                    self.metrics.refused("media_damaged");
                    Reassembly::resume(hash, chunk.media_type, chunk.len, &[], max)
                        .map_err(ChunkRefusal::Header)?
                }
            };
            table.by_hash.insert(
                hash,
                Receiving {
                    device: device.clone(),
                    reassembly: r,
                    last_ms: now,
                },
            );
        }
        let Some(entry) = table.by_hash.get_mut(&hash) else {
            return Err(ChunkRefusal::Store(MediaError::Db(
                "reassembly vanished".into(),
            )));
        };
        entry.last_ms = now;
        let offered = entry.reassembly.offer(chunk);
        let (t, len) = (chunk.media_type, chunk.len);
        match offered {
            Ok(Offer::Ignored(_)) => {
                let ack = entry.reassembly.ack(device.clone(), at);
                ack_publication(site, &ack)
            }
            Ok(Offer::Append { at: off, bytes }) | Ok(Offer::Complete { at: off, bytes }) => {
                let complete = entry.reassembly.is_complete();
                let data = bytes.to_vec();
                let written = self
                    .store
                    .call(move |s| {
                        s.append(&h, t, len, off, &data)?;
                        if complete {
                            s.complete(&h, t, now)?;
                        }
                        Ok(())
                    })
                    .await;
                match written {
                    Ok(()) => {
                        let ack = entry.reassembly.ack(device.clone(), at);
                        if complete {
                            table.by_hash.remove(&hash);
                            self.on_stored(hash, len);
                        }
                        ack_publication(site, &ack)
                    }
                    Err(e) if e.restarts_medium() => {
                        table.by_hash.remove(&hash);
                        self.metrics.refused("media_damaged");
                        tracing::warn!(medium = %hash, device = %device, "{e}");
                        ack_publication(site, &ack_of(device, hash, 0, at, MediaState::Receiving))
                    }
                    Err(MediaError::Moved { have, .. }) => {
                        table.by_hash.remove(&hash);
                        ack_publication(
                            site,
                            &ack_of(device, hash, have, at, MediaState::Receiving),
                        )
                    }
                    Err(e) => {
                        table.by_hash.remove(&hash);
                        Err(ChunkRefusal::Store(e))
                    }
                }
            }
            Err(ReassemblyError::HashMismatch { .. }) => {
                // The reassembly starts over at 0; so does the store.
                table.by_hash.remove(&hash);
                self.store
                    .call(move |s| s.discard(&h))
                    .await
                    .map_err(ChunkRefusal::Store)?;
                self.metrics.refused("media_hash_mismatch");
                tracing::warn!(medium = %hash, device = %device,
                    "the bytes received for this medium do not hash to its name; discarded, the device sends it again from 0");
                ack_publication(site, &ack_of(device, hash, 0, at, MediaState::Receiving))
            }
            Err(e) => Err(ChunkRefusal::Header(e)),
        }
    }

    fn on_stored(&self, hash: MediaHash, len: u64) {
        self.metrics.stored(len);
        self.release(&hash);
        self.stored.notify_one();
    }
}

/// `resume` was given the same cap the chunk passed: cannot be too large.
fn unreachable_too_large(max: u64) -> Result<Reassembly, ChunkRefusal> {
    Err(ChunkRefusal::Store(MediaError::Db(format!(
        "medium over the {max}-byte cap passed the size check"
    ))))
}
