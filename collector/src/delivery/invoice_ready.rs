//! The `invoice.ready` follow-up as a value: [`InvoiceReady::of`] builds its
//! CloudEvents body from a booked proof of delivery. Pure (no I/O) and a
//! leaf, because the inbox queues the follow-up in the same transaction
//! that books the proof of delivery ([`crate::delivery::invoice`] sends
//! it).
//!
//! Invariants: only a proof of delivery naming an order gives one; its id
//! is `invoice-{pod event id}`, the same on every build, so a resend
//! carries the same `webhook-id`.

use dockline_protocol::{Envelope, EventDetail};
use serde_json::{Map, Value, json};

/// The follow-up's kind, and its CloudEvents type after `io.dockline.`.
pub const KIND: &str = "invoice.ready";

/// An `invoice.ready` follow-up, ready to queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvoiceReady {
    /// `invoice-{pod event id}`: its webhook id and idempotency key.
    pub id: String,
    /// The order reference.
    pub order: String,
    /// The CloudEvents JSON body.
    pub body: Vec<u8>,
}

impl InvoiceReady {
    /// The follow-up of a proof of delivery the ERP booked as `document`;
    /// `None` when the event is not a proof of delivery or names no order.
    pub fn of(site: &str, pod: &Envelope, document: &str) -> Option<InvoiceReady> {
        let event = pod.business_event()?;
        let EventDetail::Delivered(proof) = &event.detail else {
            return None;
        };
        let order = event.refs.order.clone()?;
        let id = format!("invoice-{}", pod.id);
        let mut data = Map::new();
        data.insert("order".into(), json!(order));
        for (name, value) in [
            ("shipment", &event.refs.shipment),
            ("stop", &event.refs.stop),
        ] {
            if let Some(v) = value {
                data.insert(name.into(), json!(v));
            }
        }
        data.insert("pod_event_id".into(), json!(pod.id.to_string()));
        data.insert("pod_document".into(), json!(document));
        data.insert("device".into(), json!(pod.device.as_str()));
        data.insert("received_by".into(), json!(proof.received_by));
        data.insert("pieces".into(), json!(proof.pieces));
        let mut ce = Map::new();
        ce.insert("specversion".into(), json!("1.0"));
        ce.insert("id".into(), json!(id));
        ce.insert(
            "source".into(),
            json!(format!("/dockline/{site}/collector")),
        );
        ce.insert("type".into(), json!(format!("io.dockline.{KIND}")));
        ce.insert("subject".into(), json!(order));
        if let Some(t) = rfc3339_ms(pod.captured_ms) {
            ce.insert("time".into(), json!(t));
        }
        ce.insert("datacontenttype".into(), json!("application/json"));
        ce.insert("data".into(), Value::Object(data));
        // A Value of maps, strings and integers always serialises.
        let body = serde_json::to_vec(&Value::Object(ce)).unwrap_or_default();
        Some(InvoiceReady { id, order, body })
    }
}

fn rfc3339_ms(ms: i64) -> Option<String> {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()?;
    t.format(&time::format_description::well_known::Rfc3339)
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use dockline_protocol::{
        BusinessEvent, DeviceId, EventId, Payload, Priority, ProofOfDelivery, References,
        TimeSource,
    };

    fn pod(order: Option<&str>) -> Envelope {
        Envelope {
            v: 1,
            device: DeviceId::new("van-01").expect("id"),
            epoch: 1,
            seq: 7,
            id: EventId([7; 16]),
            captured_ms: 1_764_000_000_000,
            time_source: TimeSource::Ntp,
            priority: Priority::MustDeliver,
            payload: Payload::Event(BusinessEvent {
                detail: EventDetail::Delivered(ProofOfDelivery {
                    received_by: "J. Smith".into(),
                    pieces: 3,
                    signature_ref: None,
                    photo_ref: None,
                    position: None,
                }),
                refs: References {
                    order: order.map(str::to_owned),
                    stop: Some("STOP-1".into()),
                    ..References::default()
                },
            }),
        }
    }

    #[test]
    fn invoice_ready_is_a_cloudevent_about_the_order() {
        let ready = InvoiceReady::of("dc-north", &pod(Some("SO-1001")), "WH/OUT/7").expect("one");
        assert_eq!(ready.id, format!("invoice-{}", EventId([7; 16])));
        assert_eq!(ready.order, "SO-1001");
        let v: Value = serde_json::from_slice(&ready.body).expect("json");
        assert_eq!(v["type"], "io.dockline.invoice.ready");
        assert_eq!(v["subject"], "SO-1001");
        assert_eq!(v["id"], ready.id.as_str());
        assert_eq!(v["source"], "/dockline/dc-north/collector");
        assert_eq!(v["data"]["order"], "SO-1001");
        assert_eq!(v["data"]["pod_document"], "WH/OUT/7");
        assert_eq!(v["data"]["stop"], "STOP-1");
        assert_eq!(v["data"]["pieces"], 3);
        assert!(InvoiceReady::of("dc-north", &pod(None), "D").is_none());
    }
}
