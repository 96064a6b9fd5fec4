//! Pure: what a verdict, a dead letter and its resolution write, the same
//! for both backends (which hold only the SQL that writes it).
//!
//! Invariants: a verdict moves only a `pending` row, to `booked` with the
//! ERP's document or to `rejected` with its reason; a dead letter leaves its
//! event `pending` unless the ERP itself refused it; an `invoice.ready`
//! follow-up is queued only for a booked proof of delivery that names an
//! order, and a stored envelope that no longer decodes queues none (the
//! booking stands).

use dockline_protocol::{Envelope, Outcome, codec};

use crate::delivery::invoice_ready::InvoiceReady;

/// The `events` columns a verdict sets: `state`, `document`, `reason`.
pub(crate) fn verdict_columns(outcome: &Outcome) -> (&'static str, Option<&str>, Option<&str>) {
    match outcome {
        Outcome::Booked { document } => ("booked", Some(document.as_str()), None),
        Outcome::Rejected { reason } => ("rejected", None, Some(reason.as_str())),
    }
}

/// Whether a verdict may queue an `invoice.ready` follow-up, so a backend
/// reads the event's envelope back only then.
pub(crate) fn may_queue_invoice(invoices: bool, outcome: &Outcome) -> bool {
    invoices && matches!(outcome, Outcome::Booked { .. })
}

/// The follow-up a just-booked event queues: only a proof of delivery
/// (`kind` `delivered`) whose stored envelope decodes and names an order.
pub(crate) fn invoice_of(
    site: &str,
    kind: &str,
    envelope: &[u8],
    document: &str,
) -> Option<InvoiceReady> {
    if kind != "delivered" {
        return None;
    }
    let envelope = codec::decode::<Envelope>(envelope).ok()?;
    InvoiceReady::of(site, &envelope, document)
}

/// The `state` and `reason` of an event that is dead-lettered.
pub(crate) fn dead_letter_state(erp_rejected: bool, reason: &str) -> (&'static str, Option<&str>) {
    if erp_rejected {
        ("rejected", Some(reason))
    } else {
        ("pending", None)
    }
}

/// The dead letter's new `state` and its `resolution` text: replayed, or
/// discarded with the operator's note.
pub(crate) fn resolution(discard: Option<&str>) -> (&'static str, String) {
    match discard {
        None => ("replayed", "replayed".to_string()),
        Some(note) => ("discarded", format!("discarded: {note}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_verdict_sets_document_or_reason_and_only_a_booking_may_queue_an_invoice() {
        let booked = Outcome::Booked {
            document: "WH/OUT/7".into(),
        };
        let rejected = Outcome::Rejected {
            reason: "unknown item".into(),
        };
        assert_eq!(verdict_columns(&booked), ("booked", Some("WH/OUT/7"), None));
        assert_eq!(
            verdict_columns(&rejected),
            ("rejected", None, Some("unknown item"))
        );
        assert!(may_queue_invoice(true, &booked));
        assert!(!may_queue_invoice(true, &rejected));
        assert!(!may_queue_invoice(false, &booked));
    }

    #[test]
    fn only_a_readable_proof_of_delivery_queues_an_invoice() {
        let pick = codec::encode(&crate::inbox::tests::envelope("hh-01", 1, 1)).expect("encode");
        assert!(invoice_of("dc-north", "picked", &pick, "DOC").is_none());
        assert!(invoice_of("dc-north", "delivered", b"\xff\x00 not cbor", "DOC").is_none());
    }

    #[test]
    fn a_dead_letter_rejects_only_what_the_erp_refused() {
        assert_eq!(
            dead_letter_state(true, "bad lot"),
            ("rejected", Some("bad lot"))
        );
        assert_eq!(dead_letter_state(false, "timeout"), ("pending", None));
        assert_eq!(resolution(None).0, "replayed");
        assert_eq!(
            resolution(Some("typo")),
            ("discarded", "discarded: typo".to_string())
        );
    }
}
