//! The watermark rules both inbox backends apply to a batch, as pure
//! functions: which claims of a device are believed, and how far its
//! "complete up to N" moves.
//!
//! A device can lie (a stolen handheld, a forged message on an anonymous
//! broker), and a watermark set too high makes the agent delete events the
//! collector never stored. So:
//!
//! - **Only stored data moves the watermark.** The batch's `held` claim
//!   ("everything below was acknowledged before") and its shed ranges move
//!   the watermark at most to the highest sequence stored for that device
//!   and epoch ([`claim_held`], [`advance`]). A `held` claim that would go
//!   further is refused whole (the watermark does not move) and counted as
//!   `bad_watermark`; a shed range above the
//!   highest stored sequence is not recorded (the agent reports it again
//!   with its next batch, which then carries real events above it).
//! - **Duplicates are rows, not numbers.** An event is a duplicate only when
//!   its `(device, epoch, seq)` row exists; an event at or below the
//!   watermark without a row is stored (real data below a false claim is
//!   never dropped). A duplicate whose event id differs from the stored
//!   row's is a conflict: kept in quarantine and counted (`seq_conflict`).
//! - **Far ahead is not trusted.** An event more than `max_seq_ahead` above
//!   the watermark ([`far_ahead`]) is kept in quarantine, counted
//!   (`far_ahead`) and not acknowledged, so it opens no hole and moves
//!   nothing; a real device sends it again once its backlog is stored.
//! - **No new epoch older than the newest.** A device's epoch is its
//!   outbox's creation time; a batch opening an epoch older than the newest
//!   one known for the device is refused (`old_epoch`).

use dockline_protocol::batch::{MAX_RANGES, uncovered};

/// Default for `[security] max_seq_ahead`.
pub const DEFAULT_MAX_SEQ_AHEAD: u64 = 1_000_000;

/// What the batch's `held` claim does to the watermark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeldClaim {
    /// The watermark after the claim.
    pub mark: u64,
    /// `Some(claimed floor)` when the claim went above the highest stored
    /// sequence and was cut there (counted as `bad_watermark`).
    pub refused: Option<u64>,
}

/// Applies a batch's `first_held` to `mark`, given the highest sequence
/// stored for the device and epoch (this batch's rows included).
pub fn claim_held(mark: u64, first_held: u64, top_stored: u64) -> HeldClaim {
    let claimed = first_held.saturating_sub(1);
    if claimed <= top_stored {
        return HeldClaim {
            mark: mark.max(claimed),
            refused: None,
        };
    }
    // Refused whole: cutting it at the highest stored sequence would still
    // pass the holes below it.
    HeldClaim {
        mark,
        refused: (claimed > mark).then_some(claimed),
    }
}

/// Whether a shed range may be recorded: only below the highest stored
/// sequence (a device sheds what it assigned; a range ahead of everything
/// stored is a claim about the future).
pub fn shed_recordable(hi: u64, top_stored: u64) -> bool {
    hi <= top_stored
}

/// Whether `seq` is too far above `mark` to be trusted.
pub fn far_ahead(seq: u64, mark: u64, max_ahead: u64) -> bool {
    seq > mark.saturating_add(max_ahead)
}

/// How far the watermark moves from `mark` over `stored` sequences above it
/// (ascending) and `shed` ranges, never past `top_stored`.
pub fn advance(mut mark: u64, top_stored: u64, stored: &[u64], shed: &[(u64, u64)]) -> u64 {
    let mut i = 0;
    while mark < top_stored {
        let next = mark + 1;
        if let Some(hi) = shed
            .iter()
            .filter(|(lo, hi)| *lo <= next && *hi >= next)
            .map(|(_, hi)| *hi)
            .max()
        {
            mark = hi.min(top_stored);
            continue;
        }
        while i < stored.len() && stored[i] < next {
            i += 1;
        }
        if i < stored.len() && stored[i] == next {
            mark = next;
        } else {
            break;
        }
    }
    mark
}

/// Stored sequences a [`Walk`] reads per query.
pub const WALK_CHUNK: usize = 1024;

/// The watermark walk of one batch, without I/O: how far `complete_up_to`
/// moves over stored sequences and shed ranges ([`advance`]), reading the
/// stored sequences above the mark a chunk at a time, so a batch costs one
/// index range scan per chunk instead of a lookup per sequence, and a walk
/// that stops at a hole reads no further. Both backends drive it the same
/// way:
///
/// ```text
/// let mut walk = Walk::new(mark, top_stored, WALK_CHUNK);
/// while let Some(after) = walk.next_read() {
///     // stored sequences > after, ascending, at most chunk; shed ranges with hi > after
///     walk.feed(&stored, &shed);
/// }
/// walk.mark()
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Walk {
    mark: u64,
    top: u64,
    chunk: usize,
    done: bool,
}

impl Walk {
    /// A walk from `mark`, never past `top_stored`, reading `chunk` stored
    /// sequences per query.
    pub fn new(mark: u64, top_stored: u64, chunk: usize) -> Self {
        Self {
            mark,
            top: top_stored,
            chunk: chunk.max(1),
            done: mark >= top_stored,
        }
    }

    /// `Some(after)` while the walk needs the stored sequences above
    /// `after` (and the shed ranges ending above it).
    pub fn next_read(&self) -> Option<u64> {
        (!self.done).then_some(self.mark)
    }

    /// Feeds what the last read returned: `stored` ascending, at most the
    /// chunk size; `shed` the ranges with `hi` above the read's `after`.
    pub fn feed(&mut self, stored: &[u64], shed: &[(u64, u64)]) {
        let full = stored.len() >= self.chunk;
        // A full chunk may end before `top`: walk only as far as it shows.
        let end = match stored.last() {
            Some(&last) if full => last.min(self.top),
            _ => self.top,
        };
        let next = advance(self.mark, end, stored, shed);
        self.done = !(full && next >= end && next < self.top);
        self.mark = next;
    }

    /// The watermark so far (final once [`Walk::next_read`] is `None`).
    pub fn mark(&self) -> u64 {
        self.mark
    }
}

/// Whether a batch opening `epoch` (not seen before for its device) is
/// refused because the device already has the newer epoch `newest`.
pub fn epoch_too_old(epoch: u64, newest: Option<u64>) -> bool {
    newest.is_some_and(|n| epoch < n)
}

/// Groups ascending sequences into inclusive ranges, at most
/// [`MAX_RANGES`] of them (the protocol's cap; the rest is acked later).
pub(crate) fn ranges(seqs: impl Iterator<Item = u64>) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for seq in seqs {
        if let Some((_, hi)) = out.last_mut()
            && hi.checked_add(1) == Some(seq)
        {
            *hi = seq;
        } else if out.len() == MAX_RANGES {
            break;
        } else {
            out.push((seq, seq));
        }
    }
    out
}

/// The holes above `mark`: sequences below the highest of `stored` (the
/// stored sequences above `mark`, ascending) that are neither stored nor in
/// a `shed` range; at most [`MAX_RANGES`] of them, lowest first.
pub fn holes_above(mark: u64, stored: &[u64], shed: &[(u64, u64)]) -> Vec<(u64, u64)> {
    match stored.last() {
        Some(top) => uncovered(mark.saturating_add(1), top.saturating_sub(1), stored, shed),
        None => Vec::new(),
    }
}

/// The refusal reasons one batch's guard decisions count: `bad_watermark`
/// once for any refused claim, and each quarantine reason once.
pub(crate) fn guard_reasons(
    refused_claims: &[String],
    quarantined: &[(u64, &'static str)],
) -> Vec<&'static str> {
    let mut reasons = Vec::new();
    if !refused_claims.is_empty() {
        reasons.push("bad_watermark");
    }
    for (_, r) in quarantined {
        if !reasons.contains(r) {
            reasons.push(r);
        }
    }
    reasons
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Read a chunk at a time, the walk ends where one walk over
        /// everything stored ends.
        #[test]
        fn a_chunked_walk_ends_where_the_whole_walk_ends(
            stored in proptest::collection::btree_set(1..200u64, 0..120),
            shed in proptest::collection::vec((1..200u64, 0..20u64), 0..6),
            mark in 0..50u64,
            chunk in 1..40usize,
        ) {
            let shed: Vec<(u64, u64)> = shed.into_iter().map(|(lo, len)| (lo, lo + len)).collect();
            let top = stored.iter().copied().max().unwrap_or(0).max(mark);
            let above: Vec<u64> = stored.iter().copied().filter(|&s| s > mark).collect();
            let whole = advance(mark, top, &above, &shed);
            let mut walk = Walk::new(mark, top, chunk);
            let mut reads = 0;
            while let Some(after) = walk.next_read() {
                let rows: Vec<u64> = stored.iter().copied().filter(|&s| s > after).take(chunk).collect();
                let sh: Vec<(u64, u64)> = shed.iter().copied().filter(|&(_, hi)| hi > after).collect();
                walk.feed(&rows, &sh);
                reads += 1;
                prop_assert!(reads <= 200, "the walk does not end");
            }
            prop_assert_eq!(walk.mark(), whole);
        }
    }

    #[test]
    fn an_honest_held_claim_moves_the_watermark() {
        // The agent holds from 11: 1..=10 were acked earlier.
        assert_eq!(
            claim_held(3, 11, 14),
            HeldClaim {
                mark: 10,
                refused: None
            }
        );
        assert_eq!(claim_held(12, 11, 14).mark, 12, "never backwards");
    }

    #[test]
    fn a_held_claim_above_everything_stored_is_cut_and_refused() {
        // held = 2^40 with nothing stored above 5.
        let c = claim_held(5, 1 << 40, 5);
        assert_eq!(c.mark, 5);
        // Refused whole: not even up to the highest stored (a hole below it
        // stays open).
        let c = claim_held(2, 1 << 40, 50);
        assert_eq!(c.mark, 2);
        assert_eq!(c.refused, Some((1 << 40) - 1));
        // From an empty inbox the claim stops at what is stored.
        assert_eq!(claim_held(0, 100, 0).mark, 0);
        assert_eq!(claim_held(0, 100, 0).refused, Some(99));
    }

    #[test]
    fn the_walk_never_passes_the_highest_stored_sequence() {
        assert_eq!(advance(0, 3, &[1, 2, 3], &[]), 3);
        assert_eq!(advance(0, 5, &[1, 2, 5], &[]), 2, "stops at the hole");
        assert_eq!(advance(0, 5, &[1, 2, 5], &[(3, 4)]), 5, "shed fills it");
        // A shed range reaching far beyond what is stored stops at the top.
        assert_eq!(advance(0, 3, &[1, 2, 3], &[(2, 1 << 40)]), 3);
        assert_eq!(advance(7, 3, &[], &[(1, 100)]), 7, "never backwards");
    }

    #[test]
    fn shed_ahead_of_everything_stored_is_not_recorded() {
        assert!(shed_recordable(10, 10));
        assert!(!shed_recordable(11, 10));
    }

    #[test]
    fn far_ahead_is_relative_to_the_watermark() {
        assert!(!far_ahead(100, 0, 100));
        assert!(far_ahead(101, 0, 100));
        assert!(!far_ahead(u64::MAX, u64::MAX - 1, 100), "no overflow");
    }

    #[test]
    fn a_new_epoch_older_than_the_newest_is_refused() {
        assert!(epoch_too_old(5, Some(7)));
        assert!(!epoch_too_old(8, Some(7)));
        assert!(!epoch_too_old(5, None));
    }
}
