//! The media lane's bookkeeping, without I/O: which chunk of the medium in
//! hand goes next, when, and where to resume.
//!
//! Methods only change state; the event loop in `uplink/mod.rs` reads the
//! image, publishes chunks and feeds acks back here. Time is passed in.
//!
//! # Rules
//!
//! - One medium at a time, from the offset the collector last said it has
//!   (`have`, persisted with the medium, so a restarted agent resumes
//!   there). At most [`MEDIA_WINDOW`] chunks are in flight.
//! - An ack answers the chunk at its `at`: `have` at or past that chunk's
//!   end retires it (and any before it); `have` below it means the
//!   collector did not take it (a chunk before it was lost, or the hash
//!   check failed and it starts over): the lane resumes from `have` at
//!   once. An ack for a chunk no longer in flight (sent before a resume)
//!   is stale and moves nothing.
//! - No ack within the ack timeout for the oldest chunk in flight, or a
//!   dropped connection: resume from the last `have`.
//! - Pacing: a token bucket of `bytes_per_sec` (0: none) with a burst of
//!   one chunk or one second, whichever is larger; a chunk goes only when
//!   the bucket holds its bytes. On a metered link media go only inside the
//!   configured UTC window or once the link is declared unmetered
//!   ([`media_allowed`]). Events are never held by any of this: they have
//!   their own lanes and go first in every turn of the loop.
//! - Bytes sent below the highest offset already sent for the medium are
//!   counted as re-sent ([`MediaLane::resent_bytes`]).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use dockline_protocol::media::MediaHash;

/// Chunks of one medium in flight at once.
pub const MEDIA_WINDOW: usize = 4;

/// One chunk published and not yet answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Sent {
    off: u64,
    end: u64,
    at: Instant,
}

/// The medium being sent.
#[derive(Debug, Clone)]
struct Upload {
    hash: MediaHash,
    len: u64,
    have: u64,
    next: u64,
    high: u64,
    in_flight: VecDeque<Sent>,
    /// Where the lane last resumed because a chunk was not taken: answers
    /// to chunks sent before that resume (still arriving) say the same
    /// `have` and are stale.
    resumed_at: Option<u64>,
}

/// What an ack did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckEffect {
    /// Not about the medium in hand, or stale.
    Ignored,
    /// Chunks retired; keep sending.
    Progress,
    /// A chunk was not taken: resuming from `have`.
    Resumed,
}

/// A token bucket over bytes.
#[derive(Debug, Clone)]
struct Pace {
    rate: u64,
    burst: f64,
    tokens: f64,
    at: Option<Instant>,
}

impl Pace {
    fn refill(&mut self, now: Instant) {
        if let Some(at) = self.at {
            let gained = now.saturating_duration_since(at).as_secs_f64() * self.rate as f64;
            self.tokens = (self.tokens + gained).min(self.burst);
        }
        self.at = Some(now);
    }

    fn allows(&mut self, bytes: u64, now: Instant) -> bool {
        if self.rate == 0 {
            return true;
        }
        self.refill(now);
        self.tokens >= bytes as f64
    }

    fn spend(&mut self, bytes: u64) {
        if self.rate > 0 {
            self.tokens -= bytes as f64;
        }
    }
}

/// The media lane's state.
#[derive(Debug, Clone)]
pub struct MediaLane {
    chunk_bytes: u64,
    ack_timeout: Duration,
    pace: Pace,
    upload: Option<Upload>,
    sent_bytes: u64,
    resent_bytes: u64,
    resumes: u64,
}

impl MediaLane {
    /// A lane sending chunks of `chunk_bytes`, paced at `bytes_per_sec`
    /// (0: unpaced), resuming after `ack_timeout` without an answer.
    pub fn new(chunk_bytes: usize, bytes_per_sec: u64, ack_timeout: Duration) -> Self {
        let chunk_bytes = chunk_bytes.max(1) as u64;
        let burst = chunk_bytes.max(bytes_per_sec) as f64;
        Self {
            chunk_bytes,
            ack_timeout,
            pace: Pace {
                rate: bytes_per_sec,
                burst,
                // Starts full: the first chunk of a quiet device goes at once.
                tokens: burst,
                at: None,
            },
            upload: None,
            sent_bytes: 0,
            resent_bytes: 0,
            resumes: 0,
        }
    }

    /// Takes `hash` (of `len` bytes, `have` of them at the collector) in
    /// hand, unless it is already.
    pub fn begin(&mut self, hash: MediaHash, len: u64, have: u64) {
        if self.current() == Some(hash) {
            return;
        }
        let have = have.min(len);
        self.upload = Some(Upload {
            hash,
            len,
            have,
            next: have,
            high: have,
            in_flight: VecDeque::new(),
            resumed_at: None,
        });
    }

    /// The medium in hand.
    pub fn current(&self) -> Option<MediaHash> {
        self.upload.as_ref().map(|u| u.hash)
    }

    /// Puts the medium in hand down (stored, refused, or gone).
    pub fn finish(&mut self) {
        self.upload = None;
    }

    /// The next chunk to publish now, as `(offset, length)`, if the window
    /// and the pace allow one.
    pub fn next_chunk(&mut self, now: Instant) -> Option<(u64, usize)> {
        let chunk = self.chunk_bytes;
        let u = self.upload.as_ref()?;
        if u.next >= u.len || u.in_flight.len() >= MEDIA_WINDOW {
            return None;
        }
        let n = chunk.min(u.len - u.next);
        let off = u.next;
        self.pace.allows(n, now).then_some((off, n as usize))
    }

    /// The chunk at `off` of `n` bytes was handed to MQTT.
    pub fn on_published(&mut self, off: u64, n: usize, now: Instant) {
        let Some(u) = self.upload.as_mut() else {
            return;
        };
        let end = off + n as u64;
        if off < u.high {
            self.resent_bytes += end.min(u.high) - off;
        }
        u.high = u.high.max(end);
        u.next = end;
        u.in_flight.push_back(Sent { off, end, at: now });
        self.sent_bytes += n as u64;
        self.pace.spend(n as u64);
    }

    /// The collector's ack for `hash`: it has `have` bytes, answering the
    /// chunk at `at`.
    pub fn on_ack(&mut self, hash: MediaHash, have: u64, at: Option<u64>) -> AckEffect {
        let Some(u) = self.upload.as_mut().filter(|u| u.hash == hash) else {
            return AckEffect::Ignored;
        };
        let Some(at) = at else {
            return AckEffect::Ignored;
        };
        let Some(sent) = u.in_flight.iter().find(|s| s.off == at).copied() else {
            // Answers a chunk sent before a resume.
            return AckEffect::Ignored;
        };
        let have = have.min(u.len);
        if have >= sent.end {
            u.have = have;
            u.resumed_at = None;
            u.in_flight.retain(|s| s.end > have);
            u.next = u.next.max(have);
            return AckEffect::Progress;
        }
        if u.resumed_at == Some(have) {
            // An answer to a chunk sent before the resume (one connection
            // keeps order: the resent chunk's answer comes after it).
            return AckEffect::Ignored;
        }
        u.have = have;
        u.resumed_at = Some(have);
        u.in_flight.clear();
        u.next = have;
        self.resumes += 1;
        AckEffect::Resumed
    }

    /// Resumes from `have` when the oldest chunk in flight waited longer
    /// than the ack timeout; returns whether it did.
    pub fn on_tick(&mut self, now: Instant) -> bool {
        let timeout = self.ack_timeout;
        let Some(u) = self.upload.as_mut() else {
            return false;
        };
        let expired = u
            .in_flight
            .front()
            .is_some_and(|s| now.saturating_duration_since(s.at) >= timeout);
        if expired {
            u.in_flight.clear();
            u.next = u.have;
            u.resumed_at = None;
            self.resumes += 1;
        }
        expired
    }

    /// The link dropped: what was in flight is resent from `have`.
    pub fn on_disconnected(&mut self) {
        if let Some(u) = self.upload.as_mut() {
            u.in_flight.clear();
            u.next = u.have;
            u.resumed_at = None;
        }
    }

    /// Media bytes published since start.
    pub fn sent_bytes(&self) -> u64 {
        self.sent_bytes
    }

    /// Of those, bytes published again (after a loss, a timeout or a
    /// reconnect).
    pub fn resent_bytes(&self) -> u64 {
        self.resent_bytes
    }

    /// Times the lane resumed from `have`.
    pub fn resumes(&self) -> u64 {
        self.resumes
    }
}

/// Whether media may go now: always on an unmetered link; on a metered one
/// only when it is declared unmetered for now, or inside the UTC window
/// `[from, to)` (which may wrap midnight: `[22, 6]`).
pub fn media_allowed(
    metered: bool,
    declared_unmetered: bool,
    window_utc: Option<[u8; 2]>,
    hour_utc: u8,
) -> bool {
    if !metered || declared_unmetered {
        return true;
    }
    match window_utc {
        Some([from, to]) if from < to => (from..to).contains(&hour_utc),
        Some([from, to]) => hour_utc >= from || hour_utc < to,
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(n: u8) -> MediaHash {
        MediaHash([n; 32])
    }

    fn lane() -> MediaLane {
        MediaLane::new(100, 0, Duration::from_secs(5))
    }

    /// Publishes everything the window allows; returns the offsets.
    fn fill(l: &mut MediaLane, now: Instant) -> Vec<u64> {
        let mut out = Vec::new();
        while let Some((off, n)) = l.next_chunk(now) {
            l.on_published(off, n, now);
            out.push(off);
        }
        out
    }

    #[test]
    fn chunks_go_in_order_within_the_window_and_retire_on_acks() {
        let now = Instant::now();
        let mut l = lane();
        l.begin(h(1), 450, 0);
        assert_eq!(fill(&mut l, now), vec![0, 100, 200, 300]);
        assert_eq!(l.on_ack(h(1), 100, Some(0)), AckEffect::Progress);
        assert_eq!(fill(&mut l, now), vec![400]);
        assert_eq!(l.next_chunk(now), None, "the last chunk is out");
        assert_eq!(l.on_ack(h(2), 100, Some(0)), AckEffect::Ignored);
        assert_eq!((l.sent_bytes(), l.resent_bytes()), (450, 0));
    }

    #[test]
    fn a_chunk_not_taken_resumes_from_have_at_once_and_stale_acks_move_nothing() {
        let now = Instant::now();
        let mut l = lane();
        l.begin(h(1), 400, 0);
        fill(&mut l, now);
        // Chunk 0 was lost: the collector answers chunk 100 with have 0.
        assert_eq!(l.on_ack(h(1), 0, Some(100)), AckEffect::Resumed);
        assert_eq!(fill(&mut l, now), vec![0, 100, 200, 300]);
        // The answers to 200 and 300 from before the resume are stale.
        assert_eq!(l.on_ack(h(1), 0, Some(200)), AckEffect::Ignored);
        assert_eq!(l.on_ack(h(1), 0, Some(300)), AckEffect::Ignored);
        assert_eq!(l.on_ack(h(1), 100, Some(0)), AckEffect::Progress);
        assert_eq!(l.on_ack(h(1), 200, Some(100)), AckEffect::Progress);
        // A later loss resumes again.
        assert_eq!(l.on_ack(h(1), 200, Some(300)), AckEffect::Resumed);
        assert_eq!(l.resent_bytes(), 400);
        assert_eq!(l.resumes(), 2);
    }

    #[test]
    fn a_timeout_or_a_reconnect_resumes_from_the_last_have() {
        let now = Instant::now();
        let mut l = lane();
        l.begin(h(1), 1000, 300);
        assert_eq!(fill(&mut l, now), vec![300, 400, 500, 600]);
        l.on_ack(h(1), 400, Some(300));
        assert!(!l.on_tick(now + Duration::from_secs(4)));
        assert!(l.on_tick(now + Duration::from_secs(5)));
        assert_eq!(fill(&mut l, now), vec![400, 500, 600, 700]);
        l.on_disconnected();
        assert_eq!(l.next_chunk(now), Some((400, 100)));
        assert_eq!(l.resent_bytes(), 300);
    }

    #[test]
    fn pacing_spends_a_byte_budget() {
        let t0 = Instant::now();
        let mut l = MediaLane::new(100, 200, Duration::from_secs(60));
        l.begin(h(1), 10_000, 0);
        // A burst of one second (200 bytes), then 100 bytes per half second.
        assert_eq!(fill(&mut l, t0).len(), 2);
        l.on_ack(h(1), 200, Some(100));
        assert_eq!(fill(&mut l, t0 + Duration::from_millis(100)).len(), 0);
        assert_eq!(fill(&mut l, t0 + Duration::from_millis(500)).len(), 1);
        assert_eq!(fill(&mut l, t0 + Duration::from_millis(1000)).len(), 1);
    }

    #[test]
    fn metered_links_hold_media_outside_the_window() {
        assert!(media_allowed(false, false, None, 12));
        assert!(!media_allowed(true, false, None, 12));
        assert!(media_allowed(true, true, None, 12));
        assert!(media_allowed(true, false, Some([22, 6]), 23));
        assert!(media_allowed(true, false, Some([22, 6]), 3));
        assert!(!media_allowed(true, false, Some([22, 6]), 6));
        assert!(media_allowed(true, false, Some([9, 17]), 9));
        assert!(!media_allowed(true, false, Some([9, 17]), 17));
    }
}
