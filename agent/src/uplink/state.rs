//! The uplink's bookkeeping, without I/O: which sequences are in flight, what
//! to send next, when to give up waiting for an ack and resend.
//!
//! Methods only change state; the event loop in `uplink/mod.rs` does the
//! network and outbox calls and feeds the results back here. Time is passed
//! in, so every rule is testable without a clock.
//!
//! # Rules
//!
//! - Two lanes share the link. The **backlog** lane sends every held event in
//!   ascending sequence order, `max_inflight` batches at a time. The **live**
//!   lane sends only business events (must-deliver and normal, no telemetry),
//!   one batch at a time, from wherever the backlog lane has got to: a new
//!   proof of delivery jumps ahead of a million queued GPS points. The
//!   collector orders by sequence, so per-device order holds there.
//! - **An event crosses the link once.** The backlog lane leaves out the
//!   business events a live batch still in flight carries
//!   ([`UplinkState::sent_live`]); once that batch is acked the outbox no
//!   longer holds them. Without this, with no fault at all, every business
//!   event appended while the link is idle went out on both lanes (the
//!   collector dropped the repeat, a metered link paid twice). Resends
//!   happen only on the rules below: a reconnect, an ack timeout, or the
//!   collector's resend request (which also stops the backlog lane from
//!   leaving out the live batches above the requested sequence).
//! - Only the collector's application ack moves the floor (`acked_up_to`) or
//!   retires a live batch (`also` ranges); an MQTT PUBACK is not an ack.
//! - On (re)connect both lanes restart from the floor: everything
//!   unacknowledged is sent again. The collector drops duplicates by (device,
//!   epoch, seq), so resending is always safe.
//! - When any batch in flight has waited longer than the ack timeout, the
//!   connection is presumed dead (a silently dead TCP path looks healthy to
//!   MQTT until the keep-alive, which is much longer): the state goes
//!   disconnected, the event loop drops the connection and makes a fresh one,
//!   and the resend from the floor happens on that fresh connection. Nothing
//!   is published into the suspect connection meanwhile.
//! - A collector's resend request (it is missing sequences from `from` on)
//!   rewinds only the backlog lane to `from` (never below the floor); the
//!   link stays up and the batches in flight above `from` are sent again.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Which lane a batch went out on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    /// Everything, in sequence order.
    Backlog,
    /// Business events only, ahead of the backlog.
    Live,
}

/// One published batch awaiting its ack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct InFlight {
    /// Where the batch's read started: a live batch carries every business
    /// event of `first_seq..=last_seq`.
    first_seq: u64,
    last_seq: u64,
    sent_at: Instant,
}

/// The uplink's state.
#[derive(Debug)]
pub struct UplinkState {
    acked_up_to: u64,
    backlog_sent_up_to: u64,
    live_sent_up_to: u64,
    backlog: VecDeque<InFlight>,
    live: VecDeque<InFlight>,
    connected: bool,
    max_inflight: usize,
    ack_timeout: Duration,
    resends: u64,
}

/// Live batches in flight at once.
const LIVE_WINDOW: usize = 2;

impl UplinkState {
    /// Starts disconnected with the outbox's persisted ack floor.
    pub fn new(acked_up_to: u64, max_inflight: usize, ack_timeout: Duration) -> Self {
        Self {
            acked_up_to,
            backlog_sent_up_to: acked_up_to,
            live_sent_up_to: acked_up_to,
            backlog: VecDeque::new(),
            live: VecDeque::new(),
            connected: false,
            max_inflight: max_inflight.max(1),
            ack_timeout,
            resends: 0,
        }
    }

    /// The broker accepted our connection: resend from the floor.
    pub fn on_connected(&mut self) {
        self.connected = true;
        self.rewind();
    }

    /// The link is down: nothing can be sent until it is back.
    pub fn on_disconnected(&mut self) {
        self.connected = false;
        self.backlog.clear();
        self.live.clear();
    }

    /// The highest sequence sent on either lane in this session (at least
    /// the ack floor).
    pub fn sent_up_to(&self) -> u64 {
        self.backlog_sent_up_to.max(self.live_sent_up_to)
    }

    /// Whether the link is up.
    pub fn connected(&self) -> bool {
        self.connected
    }

    /// Where the next batch of `lane` starts, if its window has room.
    pub fn next_from(&self, lane: Lane) -> Option<u64> {
        if !self.connected {
            return None;
        }
        match lane {
            Lane::Backlog => {
                (self.backlog.len() < self.max_inflight).then_some(self.backlog_sent_up_to + 1)
            }
            Lane::Live => (self.live.len() < LIVE_WINDOW)
                .then_some(self.live_sent_up_to.max(self.backlog_sent_up_to) + 1),
        }
    }

    /// A batch of `lane`, read from `first_seq` and ending at `last_seq`,
    /// was handed to MQTT.
    pub fn on_published(&mut self, lane: Lane, first_seq: u64, last_seq: u64, now: Instant) {
        let (sent, window) = match lane {
            Lane::Backlog => (&mut self.backlog_sent_up_to, &mut self.backlog),
            Lane::Live => (&mut self.live_sent_up_to, &mut self.live),
        };
        if last_seq > *sent {
            *sent = last_seq;
            window.push_back(InFlight {
                first_seq,
                last_seq,
                sent_at: now,
            });
        }
    }

    /// The backlog lane read up to `last_seq` and had nothing left to send:
    /// every event in it rides a live batch in flight
    /// ([`sent_live`](Self::sent_live)). It continues above; a timeout or a
    /// reconnect of that live batch rewinds both lanes anyway.
    pub fn on_backlog_skipped(&mut self, last_seq: u64) {
        self.backlog_sent_up_to = self.backlog_sent_up_to.max(last_seq);
    }

    /// Whether a live batch in flight carries the business event `seq`:
    /// the backlog lane leaves it out (it crosses the link once).
    pub fn sent_live(&self, seq: u64) -> bool {
        self.live
            .iter()
            .any(|f| f.first_seq <= seq && seq <= f.last_seq)
    }

    /// The collector stored everything up to `up_to`, and the `also` ranges.
    pub fn on_ack(&mut self, up_to: u64, also: &[(u64, u64)]) {
        let stored =
            |seq: u64| seq <= up_to || also.iter().any(|(lo, hi)| (*lo..=*hi).contains(&seq));
        self.live.retain(|f| !stored(f.last_seq));
        // A backlog batch whose last sequence is stored above a hole is done
        // too: the hole is the gap audit's to ask for.
        self.backlog
            .retain(|f| f.last_seq <= up_to || !stored(f.last_seq));
        if up_to <= self.acked_up_to {
            return;
        }
        self.acked_up_to = up_to;
        while self.backlog.front().is_some_and(|f| f.last_seq <= up_to) {
            self.backlog.pop_front();
        }
        // An ack past what this session sent (a previous session's batch was
        // stored after all) moves the send points too.
        self.backlog_sent_up_to = self.backlog_sent_up_to.max(up_to);
        self.live_sent_up_to = self.live_sent_up_to.max(up_to);
    }

    /// Checks the ack timeout; returns `true` when it fired. The link is then
    /// presumed dead: the state goes disconnected (nothing more is sent), the
    /// caller must drop the connection and reconnect, and [`on_connected`]
    /// resends everything unacknowledged on the fresh connection.
    ///
    /// [`on_connected`]: Self::on_connected
    pub fn on_tick(&mut self, now: Instant) -> bool {
        let expired = |w: &VecDeque<InFlight>| {
            w.front()
                .is_some_and(|f| now.duration_since(f.sent_at) >= self.ack_timeout)
        };
        let fired = expired(&self.backlog) || expired(&self.live);
        if fired {
            self.resends += 1;
            self.on_disconnected();
            self.rewind();
        }
        fired
    }

    /// The collector asked for the sequences from `from` on again: the
    /// backlog lane continues from there (not below the ack floor, which
    /// the collector confirmed), forgetting its batches in flight above it.
    pub fn resend_from(&mut self, from: u64) {
        let to = from.saturating_sub(1).max(self.acked_up_to);
        if to < self.backlog_sent_up_to {
            self.backlog_sent_up_to = to;
            self.backlog.retain(|f| f.last_seq <= to);
        }
        // The collector says it lacks them: a live batch is no reason for
        // the backlog lane to leave out its events from `from` on any more.
        // What it carries below `from` stays covered (and keeps its timeout).
        self.live.retain_mut(|f| {
            f.last_seq = f.last_seq.min(to);
            f.first_seq <= f.last_seq
        });
    }

    fn rewind(&mut self) {
        self.backlog_sent_up_to = self.acked_up_to;
        self.live_sent_up_to = self.acked_up_to;
        self.backlog.clear();
        self.live.clear();
    }

    /// The collector's ack floor.
    pub fn acked_up_to(&self) -> u64 {
        self.acked_up_to
    }

    /// How many times the ack timeout forced a resend.
    pub fn resends(&self) -> u64 {
        self.resends
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Lane::*;

    fn t0() -> Instant {
        Instant::now()
    }

    /// Publishes a batch of `lane` read from where the lane stands.
    fn publish(s: &mut UplinkState, lane: Lane, last: u64, now: Instant) {
        let first = s.next_from(lane).unwrap_or(last);
        s.on_published(lane, first, last, now);
    }

    /// The event loop's rule for a backlog read: leave out what rides a
    /// live batch, publish the rest (`None`: nothing left, skipped).
    fn backlog_send(
        s: &mut UplinkState,
        business: &[u64],
        telemetry: &[u64],
        now: Instant,
    ) -> Option<Vec<u64>> {
        let first = s.next_from(Backlog).expect("backlog window has room");
        let mut read: Vec<u64> = business.iter().chain(telemetry).copied().collect();
        read.sort();
        let last = *read.last().expect("something to read");
        let sent: Vec<u64> = read
            .into_iter()
            .filter(|q| telemetry.contains(q) || !s.sent_live(*q))
            .collect();
        if sent.is_empty() {
            s.on_backlog_skipped(last);
            None
        } else {
            s.on_published(Backlog, first, last, now);
            Some(sent)
        }
    }

    /// Normal operation, no fault: a proof of delivery appended on an idle
    /// link goes out on the live lane; the backlog lane, which reads it
    /// too, leaves it out. Telemetry around it still goes on the backlog.
    #[test]
    fn an_event_on_the_live_lane_is_not_sent_again_by_the_backlog_lane() {
        let now = t0();
        let mut s = UplinkState::new(10, 4, Duration::from_secs(5));
        s.on_connected();
        assert_eq!(s.next_from(Live), Some(11));
        s.on_published(Live, 11, 11, now);
        assert!(s.sent_live(11));
        assert!(!s.sent_live(12));
        assert_eq!(backlog_send(&mut s, &[11], &[], now), None, "sent once");
        assert_eq!(s.next_from(Backlog), Some(12));
        // Telemetry 12, business 13 on live, telemetry 14.
        s.on_published(Live, 12, 13, now);
        assert_eq!(
            backlog_send(&mut s, &[13], &[12, 14], now),
            Some(vec![12, 14])
        );
        s.on_ack(14, &[]);
        assert!(!s.sent_live(13), "acked live batches are retired");
        assert_eq!(s.next_from(Backlog), Some(15));
        assert_eq!(s.next_from(Live), Some(15));
    }

    /// A live batch that gets no ack is resent after the timeout, on both
    /// lanes from the floor: the rule that leaves events out holds only
    /// while their live batch is in flight.
    #[test]
    fn a_lost_live_batch_is_resent_after_the_ack_timeout() {
        let now = t0();
        let mut s = UplinkState::new(0, 4, Duration::from_secs(5));
        s.on_connected();
        s.on_published(Live, 1, 3, now);
        assert_eq!(backlog_send(&mut s, &[1, 2, 3], &[], now), None);
        assert!(s.on_tick(now + Duration::from_secs(5)));
        s.on_connected();
        assert!(!s.sent_live(2));
        assert_eq!(
            backlog_send(&mut s, &[1, 2, 3], &[], now),
            Some(vec![1, 2, 3])
        );
    }

    /// The collector's resend request for sequences a live batch carries
    /// (it says it lacks them) is obeyed by the backlog lane at once.
    #[test]
    fn a_resend_request_overrides_a_live_batch_in_flight() {
        let now = t0();
        let mut s = UplinkState::new(0, 4, Duration::from_secs(60));
        s.on_connected();
        s.on_published(Live, 1, 5, now);
        assert_eq!(backlog_send(&mut s, &[1, 2, 3, 4, 5], &[], now), None);
        s.resend_from(3);
        assert!(
            s.sent_live(2),
            "below the request the live batch still counts"
        );
        assert!(!s.sent_live(3));
        assert_eq!(s.next_from(Backlog), Some(3));
        assert_eq!(
            backlog_send(&mut s, &[3, 4, 5], &[], now),
            Some(vec![3, 4, 5])
        );
    }

    #[test]
    fn nothing_is_sent_while_disconnected() {
        let s = UplinkState::new(0, 2, Duration::from_secs(5));
        assert_eq!(s.next_from(Backlog), None);
        assert_eq!(s.next_from(Live), None);
    }

    #[test]
    fn window_limits_batches_in_flight() {
        let now = t0();
        let mut s = UplinkState::new(10, 2, Duration::from_secs(5));
        s.on_connected();
        assert_eq!(s.next_from(Backlog), Some(11));
        publish(&mut s, Backlog, 20, now);
        assert_eq!(s.next_from(Backlog), Some(21));
        publish(&mut s, Backlog, 30, now);
        assert_eq!(s.next_from(Backlog), None, "window of 2 is full");
        s.on_ack(20, &[]);
        assert_eq!(s.next_from(Backlog), Some(31));
    }

    #[test]
    fn puback_is_not_an_ack_and_timeout_resends_from_the_floor() {
        let now = t0();
        let mut s = UplinkState::new(0, 4, Duration::from_secs(5));
        s.on_connected();
        publish(&mut s, Backlog, 10, now);
        publish(&mut s, Backlog, 20, now);
        s.on_ack(10, &[]);
        assert!(!s.on_tick(now + Duration::from_secs(4)));
        assert!(s.on_tick(now + Duration::from_secs(6)));
        s.on_connected();
        assert_eq!(
            s.next_from(Backlog),
            Some(11),
            "resend everything above the ack floor"
        );
        assert_eq!(s.resends(), 1);
    }

    #[test]
    fn ack_timeout_drops_the_link_and_resends_on_a_fresh_connection() {
        let now = t0();
        let mut s = UplinkState::new(0, 4, Duration::from_secs(2));
        s.on_connected();
        publish(&mut s, Backlog, 10, now);
        publish(&mut s, Live, 12, now);
        assert!(s.on_tick(now + Duration::from_secs(2)));
        // The connection is presumed dead: nothing goes into it any more.
        assert!(!s.connected());
        assert_eq!(s.next_from(Backlog), None);
        assert_eq!(s.next_from(Live), None);
        // Nothing in flight, so the timeout does not fire again meanwhile.
        assert!(!s.on_tick(now + Duration::from_secs(10)));
        // The forced disconnect is reported by the event loop as well.
        s.on_disconnected();
        s.on_connected();
        assert_eq!(
            s.next_from(Backlog),
            Some(1),
            "everything unacknowledged again"
        );
        assert_eq!(s.next_from(Live), Some(1));
        assert_eq!(s.resends(), 1);
    }

    #[test]
    fn reconnect_resends_everything_unacknowledged() {
        let now = t0();
        let mut s = UplinkState::new(0, 4, Duration::from_secs(5));
        s.on_connected();
        publish(&mut s, Backlog, 10, now);
        publish(&mut s, Live, 15, now);
        s.on_disconnected();
        assert_eq!(s.next_from(Backlog), None);
        s.on_connected();
        assert_eq!(s.next_from(Backlog), Some(1));
        assert_eq!(s.next_from(Live), Some(1));
    }

    #[test]
    fn live_lane_runs_ahead_and_is_retired_by_selective_ack() {
        let now = t0();
        let mut s = UplinkState::new(0, 1, Duration::from_secs(5));
        s.on_connected();
        publish(&mut s, Backlog, 256, now);
        // The backlog window is full, the live lane still has room.
        assert_eq!(s.next_from(Backlog), None);
        assert_eq!(s.next_from(Live), Some(257));
        publish(&mut s, Live, 1_000_000, now);
        assert_eq!(s.next_from(Live), Some(1_000_001));
        publish(&mut s, Live, 1_000_005, now);
        assert_eq!(s.next_from(Live), None, "live window of 2 is full");
        s.on_ack(256, &[(1_000_000, 1_000_000), (1_000_005, 1_000_005)]);
        assert_eq!(s.next_from(Live), Some(1_000_006));
        assert_eq!(
            s.next_from(Backlog),
            Some(257),
            "the backlog continues in order"
        );
        // A late live batch times out like any other.
        publish(&mut s, Live, 1_000_010, now);
        assert!(s.on_tick(now + Duration::from_secs(6)));
        s.on_connected();
        assert_eq!(s.next_from(Live), Some(257));
    }

    #[test]
    fn a_resend_request_rewinds_the_backlog_lane_only() {
        let now = t0();
        let mut s = UplinkState::new(66, 8, Duration::from_secs(60));
        s.on_connected();
        publish(&mut s, Backlog, 111, now);
        publish(&mut s, Backlog, 130, now);
        publish(&mut s, Live, 140, now);
        // 67..=111 never arrived; 112..=130 did (acked as also-stored).
        s.on_ack(66, &[(112, 130)]);
        s.resend_from(67);
        assert!(s.connected(), "the link stays up");
        assert_eq!(s.next_from(Backlog), Some(67));
        assert_eq!(
            s.next_from(Live),
            Some(141),
            "the live lane keeps its place"
        );
        // A request below the floor starts at the floor; one above what was
        // sent changes nothing.
        publish(&mut s, Backlog, 111, now);
        s.on_ack(111, &[]);
        s.resend_from(5);
        assert_eq!(s.next_from(Backlog), Some(112));
        s.resend_from(500);
        assert_eq!(s.next_from(Backlog), Some(112));
    }

    #[test]
    fn stale_acks_do_not_move_the_floor_back() {
        let mut s = UplinkState::new(50, 4, Duration::from_secs(5));
        s.on_connected();
        s.on_ack(40, &[]);
        assert_eq!(s.acked_up_to(), 50);
        s.on_ack(70, &[]);
        assert_eq!(s.next_from(Backlog), Some(71));
    }
}
