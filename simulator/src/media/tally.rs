//! The media verdict: what became of every medium the drivers took.
//!
//! A medium is *made* when an agent took it (`POST /v1/media` 201/200) and
//! then took the `delivered` event that references it. It is *stored* when
//! its agent shows it stored (or attached) at the collector, which it learns
//! only from the collector's acks. It is *attached* when the mock ERP booked
//! it after checking its bytes against its SHA-256 ([`MediaEffect`]).
//!
//! - `lost`: made, never attached.
//! - `duplicated`: attachments beyond the first of one medium (a retry the
//!   ERP answered as a replay of the same key is not one: nothing new was
//!   attached).
//! - `unexpected`: attachments of a medium nobody made.
//!
//! Pure: the demo and the chaos trials gather the inputs.

use std::collections::{BTreeMap, BTreeSet};

use dockline_protocol::media::MediaHash;
use serde::Serialize;

use super::MediaRole;
use crate::mock_erp::MediaEffect;

/// A medium an agent took, with the event that references it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MadeMedium {
    /// Its SHA-256.
    pub hash: MediaHash,
    /// Signature or photo.
    pub role: MediaRole,
    /// Its size.
    pub bytes: u64,
    /// The agent (device id) that took it.
    pub device: String,
}

/// The media counts of a run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MediaTally {
    /// Media made.
    pub made: u64,
    /// Bytes of the media made.
    pub made_bytes: u64,
    /// Made media their agents show stored at the collector.
    pub stored: u64,
    /// Made media attached at the ERP, bytes checked.
    pub attached: u64,
    /// Made media never attached.
    pub lost: u64,
    /// Attachments beyond the first of one medium.
    pub duplicated: u64,
    /// Attachments of media nobody made.
    pub unexpected: u64,
}

impl MediaTally {
    /// True when every medium made was attached exactly once.
    pub fn clean(&self) -> bool {
        self.lost == 0 && self.duplicated == 0 && self.unexpected == 0 && self.made == self.attached
    }
}

/// Counts `made` against the hashes the agents show stored and the ERP's
/// media effects.
pub fn tally(
    made: &[MadeMedium],
    stored: &BTreeSet<MediaHash>,
    effects: &[MediaEffect],
) -> MediaTally {
    let mut per_hash: BTreeMap<MediaHash, u64> = BTreeMap::new();
    for e in effects {
        *per_hash.entry(e.hash).or_default() += 1;
    }
    let made_set: BTreeSet<MediaHash> = made.iter().map(|m| m.hash).collect();
    let mut t = MediaTally {
        made: made_set.len() as u64,
        made_bytes: made.iter().map(|m| m.bytes).sum(),
        ..MediaTally::default()
    };
    for hash in &made_set {
        t.stored += u64::from(stored.contains(hash));
        match per_hash.get(hash) {
            Some(&n) => {
                t.attached += 1;
                t.duplicated += n - 1;
            }
            None => t.lost += 1,
        }
    }
    for (hash, n) in &per_hash {
        if !made_set.contains(hash) {
            t.unexpected += n;
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mock_erp::Via;

    fn made(n: u8) -> MadeMedium {
        MadeMedium {
            hash: MediaHash([n; 32]),
            role: MediaRole::Photo,
            bytes: 1000,
            device: "truck-01".into(),
        }
    }

    fn effect(n: u8) -> MediaEffect {
        MediaEffect {
            hash: MediaHash([n; 32]),
            key: format!("k{n}"),
            event: None,
            bytes: 1000,
            via: Via::Link,
            booked_ms: 0,
        }
    }

    #[test]
    fn every_medium_attached_once_is_clean() {
        let stored = [1, 2].map(|n| MediaHash([n; 32])).into();
        let t = tally(&[made(1), made(2)], &stored, &[effect(1), effect(2)]);
        assert_eq!(
            (t.made, t.stored, t.attached, t.lost, t.duplicated),
            (2, 2, 2, 0, 0)
        );
        assert_eq!(t.made_bytes, 2000);
        assert!(t.clean());
    }

    #[test]
    fn a_missing_attachment_is_lost_and_a_second_one_duplicated() {
        let t = tally(
            &[made(1), made(2)],
            &BTreeSet::new(),
            &[effect(1), effect(1)],
        );
        assert_eq!((t.stored, t.attached, t.lost, t.duplicated), (0, 1, 1, 1));
        assert!(!t.clean());
    }

    #[test]
    fn an_attachment_nobody_made_is_unexpected() {
        let t = tally(&[], &BTreeSet::new(), &[effect(9)]);
        assert_eq!((t.made, t.unexpected), (0, 1));
        assert!(!t.clean());
        assert!(tally(&[], &BTreeSet::new(), &[]).clean());
    }
}
