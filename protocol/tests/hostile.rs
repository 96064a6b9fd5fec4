//! Decoding untrusted bytes: errors, never panics, and caps hold.

use dockline_protocol::codec::MAX_MESSAGE_BYTES;
use dockline_protocol::*;
use proptest::prelude::*;

#[path = "golden.rs"]
#[allow(dead_code)]
mod golden;

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, .. ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode::<Batch>(&bytes);
        let _ = decode::<Ack>(&bytes);
        let _ = decode::<Status>(&bytes);
        let _ = decode::<Command>(&bytes);
    }

    #[test]
    fn mutated_valid_batches_never_panic(pos in 0usize..4096, byte in any::<u8>(), cut in 0usize..4096) {
        let mut bytes = encode(&golden::sample_batch()).expect("encodes");
        let len = bytes.len();
        bytes[pos % len] = byte;
        bytes.truncate(cut % (len + 1));
        let _ = decode::<Batch>(&bytes);
    }

    #[test]
    fn batches_round_trip(seq0 in 1u64..(i64::MAX as u64) / 2, n in 1usize..20) {
        let mut b = golden::sample_batch();
        b.events.truncate(n);
        for (i, e) in b.events.iter_mut().enumerate() {
            e.seq = seq0 + i as u64;
        }
        let bytes = encode(&b).expect("encodes");
        prop_assert_eq!(decode::<Batch>(&bytes).expect("decodes"), b);
    }
}

/// Epochs, sequences, `held` and range ends above 2^63 - 1 cannot be stored
/// by any SQL database on either side: they are malformed, refused where
/// they are decoded, naming the field.
#[test]
fn numbers_above_i64_max_are_malformed() {
    let big = 1u64 << 63;
    let mut cases: Vec<(&str, Batch)> = Vec::new();
    let mut b = golden::sample_batch();
    b.epoch = big;
    for e in &mut b.events {
        e.epoch = big;
    }
    cases.push(("`ep`", b));
    let mut b = golden::sample_batch();
    b.first_held = big;
    cases.push(("`held`", b));
    let mut b = golden::sample_batch();
    b.events.truncate(1);
    b.events[0].seq = big;
    cases.push(("`evs[0].seq`", b));
    let mut b = golden::sample_batch();
    b.events.clear();
    b.shed = vec![(5, big)];
    cases.push(("`shed[0]`", b));
    for (field, b) in cases {
        let bytes = encode(&b).expect("encodes");
        let err = decode::<Batch>(&bytes).expect_err("refused").to_string();
        assert!(
            err.contains(field) && err.contains("2^63 - 1"),
            "{field}: {err}"
        );
    }
    // The largest allowed value still passes.
    let mut b = golden::sample_batch();
    b.events.truncate(1);
    b.events[0].seq = i64::MAX as u64;
    b.first_held = i64::MAX as u64;
    let bytes = encode(&b).expect("encodes");
    assert_eq!(decode::<Batch>(&bytes).expect("decodes"), b);
}

#[test]
fn oversized_input_is_refused_before_parsing() {
    let bytes = vec![0u8; MAX_MESSAGE_BYTES + 1];
    let err = decode::<Batch>(&bytes).expect_err("too large");
    assert!(err.to_string().contains("larger than"), "{err}");
}

#[test]
fn deep_nesting_is_refused() {
    // 10,000 nested one-element arrays.
    let mut bytes = vec![0x81u8; 10_000];
    bytes.push(0x00);
    let err = decode::<Batch>(&bytes).expect_err("too deep");
    assert!(matches!(err, DecodeError::Cbor { .. }), "{err}");
}

#[test]
fn huge_declared_lengths_do_not_allocate() {
    // A map claiming 2^32 entries, a text claiming 2^63 bytes.
    for bytes in [
        vec![0xbau8, 0xff, 0xff, 0xff, 0xff],
        vec![0x7bu8, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
    ] {
        assert!(decode::<Batch>(&bytes).is_err());
    }
}

#[test]
fn rules_are_enforced_with_clear_messages() {
    let mut b = golden::sample_batch();
    b.events.swap(0, 1);
    let err = decode::<Batch>(&encode(&b).expect("encodes")).expect_err("out of order");
    assert!(
        err.to_string().contains("ascending sequence order"),
        "{err}"
    );

    let mut b = golden::sample_batch();
    b.v = 9;
    let err = decode::<Batch>(&encode(&b).expect("encodes")).expect_err("version");
    assert!(err.to_string().contains("protocol version 9"), "{err}");

    let mut b = golden::sample_batch();
    b.events[2].device = DeviceId::new("other").expect("id");
    let err = decode::<Batch>(&encode(&b).expect("encodes")).expect_err("mixed devices");
    assert!(err.to_string().contains("belongs to device other"), "{err}");

    let backwards = Command {
        v: PROTOCOL_VERSION,
        device: DeviceId::new("hh-07").expect("id"),
        resend: Some(Resend {
            epoch: 1,
            ranges: vec![(9, 3)],
        }),
        expires_ms: None,
        signed: None,
        nonce: None,
    };
    let err = decode::<Command>(&encode(&backwards).expect("encodes")).expect_err("range");
    assert!(err.to_string().contains("rs.r[0]"), "{err}");

    let err = decode::<Batch>(b"not cbor at all").expect_err("garbage");
    assert!(err.to_string().contains("not valid dockline CBOR"), "{err}");

    // A broken field deep inside names its whole path.
    let mut b = golden::sample_batch();
    let i = b
        .events
        .iter()
        .position(|e| e.business_event().is_some_and(|be| be.refs.order.is_some()))
        .expect("an event with an order");
    if let Payload::Event(be) = &mut b.events[i].payload {
        be.refs.order = Some("x".repeat(5000));
    }
    let err = decode::<Batch>(&encode(&b).expect("encodes")).expect_err("long order ref");
    assert!(
        err.to_string().contains(&format!(
            "field `evs[{i}].p.event.r.ord` is 5000 bytes long"
        )),
        "{err}"
    );
    let mut fix = golden::sample_batch()
        .events
        .into_iter()
        .find(|e| matches!(e.payload, Payload::Reading(Reading::Position(_))))
        .expect("a position");
    if let Payload::Reading(Reading::Position(f)) = &mut fix.payload {
        f.lat = 123.0;
    }
    let err = fix.payload.validate().expect_err("latitude");
    assert_eq!(err.field, "envelope.p.reading.position.lat");
}

/// A heartbeat's device list (optional `dv`) round-trips, and a list longer
/// than the cap is refused on decode.
#[test]
fn heartbeat_device_list_round_trips_and_is_capped() {
    let heartbeat = |n: usize| Status {
        v: PROTOCOL_VERSION,
        device: DeviceId::new("gw-1").expect("valid id"),
        session: 3,
        at_ms: 1_764_000_000_000,
        kind: StatusKind::Heartbeat {
            queued: 0,
            oldest_unacked_ms: 0,
            health: Some(QueueHealth {
                devices: Some(
                    (0..n)
                        .map(|i| DeviceHealth {
                            name: format!("scale-{i}"),
                            connected: i % 2 == 0,
                            readings: 7,
                            rejected: 1,
                            last_reading_ms: Some(1_764_000_000_000),
                        })
                        .collect(),
                ),
                ..QueueHealth::default()
            }),
        },
    };
    let two = heartbeat(2);
    let bytes = encode(&two).expect("encodes");
    assert_eq!(decode::<Status>(&bytes).expect("decodes"), two);
    let too_many = encode(&heartbeat(status::MAX_HEARTBEAT_DEVICES + 1));
    let refused = too_many.map(|b| decode::<Status>(&b));
    assert!(
        !matches!(refused, Ok(Ok(_))),
        "a heartbeat with too many devices must not decode"
    );
}
