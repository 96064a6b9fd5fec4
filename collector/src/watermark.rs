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

/// Whether a batch opening `epoch` (not seen before for its device) is
/// refused because the device already has the newer epoch `newest`.
pub fn epoch_too_old(epoch: u64, newest: Option<u64>) -> bool {
    newest.is_some_and(|n| epoch < n)
}

#[cfg(test)]
mod tests {
    use super::*;

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
