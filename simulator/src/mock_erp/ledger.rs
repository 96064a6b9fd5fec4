//! The mock ERP's books: one effect per idempotency key, plus the counters the
//! demo and the tests judge the collector by.
//!
//! # Invariants
//!
//! - An idempotency key books at most one effect; asking again returns the
//!   same document number and counts a replay.
//! - Document numbers are `DOC-000001`, `DOC-000002`, … in booking order, and
//!   an effect's `index` is its position in [`Ledger::effects`].
//! - An effect's `booked_ms` is the time the caller passed when it was
//!   booked (Unix milliseconds); a replay keeps the first booking's time.
//!
//! Pure state, no I/O: the HTTP layer holds it behind a mutex.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use super::media::MediaEffect;

/// One booking made in the ERP.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Effect {
    /// Position in booking order, from 0.
    pub index: usize,
    /// The document number answered to the caller.
    pub document: String,
    /// The idempotency key that booked it.
    pub key: String,
    /// CloudEvents `id`.
    pub id: String,
    /// CloudEvents `type` (`io.dockline.picked`, …).
    #[serde(rename = "type")]
    pub kind: String,
    /// CloudEvents `source`.
    pub source: String,
    /// CloudEvents `subject`, when sent.
    pub subject: Option<String>,
    /// dockline's `docklinedevice` extension: the device that made the event.
    pub device: Option<String>,
    /// dockline's `docklineepoch` extension.
    pub epoch: Option<u64>,
    /// dockline's `docklineseq` extension: the device's sequence number.
    pub seq: Option<u64>,
    /// CloudEvents `data`.
    pub data: serde_json::Value,
    /// When it was booked, Unix milliseconds (the latency figures end here).
    pub booked_ms: u64,
}

/// What a webhook needs booked.
#[derive(Debug, Clone, PartialEq)]
pub struct Booking {
    /// The idempotency key.
    pub key: String,
    /// CloudEvents `id`.
    pub id: String,
    /// CloudEvents `type`.
    pub kind: String,
    /// CloudEvents `source`.
    pub source: String,
    /// CloudEvents `subject`.
    pub subject: Option<String>,
    /// `docklinedevice` extension.
    pub device: Option<String>,
    /// `docklineepoch` extension.
    pub epoch: Option<u64>,
    /// `docklineseq` extension.
    pub seq: Option<u64>,
    /// CloudEvents `data`.
    pub data: serde_json::Value,
}

/// The answer to a booking request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Booked {
    /// First time this key was seen: a new effect with this document.
    New(String),
    /// The key was booked before: no new effect, the earlier document.
    Replay(String),
}

/// Counters reported by `GET /stats`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// Effects booked (one per distinct idempotency key).
    pub effects: u64,
    /// Requests whose key had already been booked.
    pub replays: u64,
    /// Requests that failed webhook verification (401).
    pub bad_signatures: u64,
    /// Requests refused as malformed (400).
    pub rejected_requests: u64,
    /// Injected faults: 503s, 429s, 401s of an expired session and
    /// responses dropped after commit.
    pub faults_injected: u64,
    /// Times the session expired ([`super::session`]).
    pub session_expiries: u64,
    /// Requests answered 401 `session_expired` (also in `faults_injected`).
    pub session_refusals: u64,
    /// Effects per CloudEvents type.
    pub by_type: BTreeMap<String, u64>,
    /// Media attached (one per distinct idempotency key), bytes checked.
    pub media_attached: u64,
    /// Of those, fetched by their signed link (`dataref`).
    pub media_by_link: u64,
    /// Media requests whose key had already attached one.
    pub media_replays: u64,
    /// Attachments of a medium already attached under another key.
    pub media_duplicated: u64,
    /// Media whose `dataref` could not be fetched (answered 502).
    pub media_fetch_failures: u64,
    /// Media whose bytes did not match their SHA-256 (answered 422).
    pub media_bad_hash: u64,
}

/// The books.
#[derive(Debug, Default)]
pub struct Ledger {
    effects: Vec<Effect>,
    by_key: HashMap<String, usize>,
    media: Vec<MediaEffect>,
    media_by_key: HashMap<String, usize>,
    stats: Stats,
}

impl Ledger {
    /// Books `booking` at `now_ms` (Unix milliseconds) unless its key was
    /// booked before.
    pub fn book(&mut self, booking: Booking, now_ms: u64) -> Booked {
        if let Some(&index) = self.by_key.get(&booking.key) {
            self.stats.replays += 1;
            return Booked::Replay(self.effects[index].document.clone());
        }
        let index = self.effects.len();
        let document = format!("DOC-{:06}", index + 1);
        self.by_key.insert(booking.key.clone(), index);
        self.stats.effects += 1;
        *self.stats.by_type.entry(booking.kind.clone()).or_default() += 1;
        self.effects.push(Effect {
            index,
            document: document.clone(),
            key: booking.key,
            id: booking.id,
            kind: booking.kind,
            source: booking.source,
            subject: booking.subject,
            device: booking.device,
            epoch: booking.epoch,
            seq: booking.seq,
            data: booking.data,
            booked_ms: now_ms,
        });
        Booked::New(document)
    }

    /// Attaches a checked medium unless its key attached one before
    /// (documents `ATT-000001`, … in attachment order).
    pub fn attach(&mut self, effect: MediaEffect) -> Booked {
        if let Some(&index) = self.media_by_key.get(&effect.key) {
            self.stats.media_replays += 1;
            return Booked::Replay(format!("ATT-{:06}", index + 1));
        }
        let index = self.media.len();
        if self.media.iter().any(|m| m.hash == effect.hash) {
            self.stats.media_duplicated += 1;
        }
        self.media_by_key.insert(effect.key.clone(), index);
        self.stats.media_attached += 1;
        self.stats.media_by_link += u64::from(effect.via == super::media::Via::Link);
        self.media.push(effect);
        Booked::New(format!("ATT-{:06}", index + 1))
    }

    /// Counts a medium whose `dataref` could not be fetched.
    pub fn count_media_fetch_failure(&mut self) {
        self.stats.media_fetch_failures += 1;
    }

    /// Counts a medium whose bytes did not match its name.
    pub fn count_media_bad_hash(&mut self) {
        self.stats.media_bad_hash += 1;
    }

    /// Every medium attached, in order.
    pub fn media(&self) -> &[MediaEffect] {
        &self.media
    }

    /// Counts a request that failed verification.
    pub fn count_bad_signature(&mut self) {
        self.stats.bad_signatures += 1;
    }

    /// Counts a malformed request.
    pub fn count_rejected(&mut self) {
        self.stats.rejected_requests += 1;
    }

    /// Counts an injected fault.
    pub fn count_fault(&mut self) {
        self.stats.faults_injected += 1;
    }

    /// Counts a session that expired.
    pub fn count_session_expiry(&mut self) {
        self.stats.session_expiries += 1;
    }

    /// Counts a request refused for an expired session (an injected fault).
    pub fn count_session_refusal(&mut self) {
        self.stats.session_refusals += 1;
        self.stats.faults_injected += 1;
    }

    /// The counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Every effect in booking order.
    pub fn effects(&self) -> &[Effect] {
        &self.effects
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn booking(key: &str, kind: &str) -> Booking {
        Booking {
            key: key.into(),
            id: key.into(),
            kind: kind.into(),
            source: "dockline/dc-north/hh-01".into(),
            subject: Some("SO-1".into()),
            device: Some("hh-01".into()),
            epoch: Some(1),
            seq: Some(1),
            data: serde_json::json!({"n": 1}),
        }
    }

    #[test]
    fn one_effect_per_key_and_replays_counted() {
        let mut l = Ledger::default();
        assert_eq!(
            l.book(booking("a", "io.dockline.picked"), 1_000),
            Booked::New("DOC-000001".into())
        );
        assert_eq!(
            l.book(booking("b", "io.dockline.packed"), 1_005),
            Booked::New("DOC-000002".into())
        );
        assert_eq!(
            l.book(booking("a", "io.dockline.picked"), 1_000),
            Booked::Replay("DOC-000001".into())
        );
        assert_eq!(l.effects().len(), 2);
        assert_eq!(l.effects()[1].index, 1);
        assert_eq!(
            (l.effects()[0].booked_ms, l.effects()[1].booked_ms),
            (1_000, 1_005)
        );
        assert_eq!(l.stats().effects, 2);
        assert_eq!(l.stats().replays, 1);
        assert_eq!(l.stats().by_type.get("io.dockline.picked"), Some(&1));
    }

    #[test]
    fn a_medium_attaches_once_per_key_and_a_second_key_is_a_duplicate() {
        use super::super::media::Via;
        use dockline_protocol::media::MediaHash;
        let effect = |key: &str| MediaEffect {
            hash: MediaHash::of(b"photo"),
            key: key.into(),
            event: Some("DN-5001".into()),
            bytes: 5,
            via: Via::Link,
            booked_ms: 1,
        };
        let mut l = Ledger::default();
        assert_eq!(l.attach(effect("m1")), Booked::New("ATT-000001".into()));
        assert_eq!(l.attach(effect("m1")), Booked::Replay("ATT-000001".into()));
        assert_eq!(l.attach(effect("m2")), Booked::New("ATT-000002".into()));
        let s = l.stats();
        assert_eq!(
            (s.media_attached, s.media_replays, s.media_duplicated),
            (2, 1, 1)
        );
        assert_eq!(l.media().len(), 2);
        assert!(l.effects().is_empty(), "media are not event effects");
    }
}
