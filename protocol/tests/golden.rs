//! Golden CBOR fixtures: the exact bytes of one message of every kind.
//!
//! A failing test here means the wire format changed. Read the versioning rule
//! in `src/lib.rs`; if the change is allowed, re-bless with
//! `DOCKLINE_BLESS=1 cargo test -p dockline-protocol --test golden`.

use std::path::PathBuf;

use dockline_protocol::*;

fn dev() -> DeviceId {
    DeviceId::new("hh-07").expect("valid id")
}

fn env(seq: u64, priority: Priority, payload: Payload) -> Envelope {
    let mut id = [0u8; 16];
    id[0] = 0x01;
    id[15] = seq as u8;
    Envelope {
        v: PROTOCOL_VERSION,
        device: dev(),
        epoch: 1_764_000_000_000,
        seq,
        id: EventId(id),
        captured_ms: 1_764_050_000_000 + seq as i64,
        time_source: TimeSource::Ntp,
        priority,
        payload,
    }
}

fn fix() -> Fix {
    Fix {
        lat: 52.520008,
        lon: 13.404954,
        speed_mps: Some(0.0),
        course_deg: None,
        mode: FixMode::Fix3d,
        satellites: Some(9),
        hdop: Some(0.9),
    }
}

fn refs(order: &str) -> References {
    References {
        order: Some(order.into()),
        shipment: Some("SHP-77".into()),
        stop: Some("STOP-3".into()),
        sscc: Some("106141411234567897".into()),
        location: Some("DOCK-4".into()),
        operator: None,
    }
}

/// `refs.op` (the operator signed in on the handheld, added in v1 as an
/// optional field): fixtures without it keep their bytes, and a batch with
/// it round-trips; the agent's JSON may name it `operator`.
#[test]
fn the_operator_travels_in_refs_and_old_fixtures_keep_their_bytes() {
    let mut batch = sample_batch();
    for e in &mut batch.events {
        if let Payload::Event(b) = &mut e.payload {
            b.refs.operator = Some("badge-0042".into());
        }
    }
    let bytes = encode(&batch).expect("encodes");
    assert_eq!(decode::<Batch>(&bytes).expect("decodes"), batch);
    let refs: References =
        serde_json::from_str(r#"{"order":"SO-1","operator":"R. Picker"}"#).expect("json");
    assert_eq!(refs.operator.as_deref(), Some("R. Picker"));
}

fn ev(detail: EventDetail) -> Payload {
    Payload::Event(BusinessEvent {
        detail,
        refs: refs("SO-1001"),
    })
}

/// One batch holding every event kind and every reading kind.
pub fn sample_batch() -> Batch {
    let events = vec![
        env(
            1,
            Priority::MustDeliver,
            ev(EventDetail::Picked {
                item: "09506000134352".into(),
                quantity: 3,
                lot: Some("L42".into()),
            }),
        ),
        env(
            2,
            Priority::Normal,
            ev(EventDetail::Packed {
                quantity: 3,
                weight: Some(Weight {
                    value: 1.25,
                    unit: WeightUnit::Kg,
                }),
            }),
        ),
        env(
            3,
            Priority::Normal,
            ev(EventDetail::Loaded {
                vehicle: "TRK-9".into(),
            }),
        ),
        env(
            4,
            Priority::Normal,
            ev(EventDetail::Departed {
                vehicle: "TRK-9".into(),
                position: Some(fix()),
            }),
        ),
        env(
            5,
            Priority::Normal,
            ev(EventDetail::Arrived {
                vehicle: "TRK-9".into(),
                position: None,
            }),
        ),
        env(
            6,
            Priority::MustDeliver,
            ev(EventDetail::Delivered(ProofOfDelivery {
                received_by: "J. Doe".into(),
                pieces: 3,
                signature_ref: Some("sha256:ab12".into()),
                photo_ref: None,
                position: Some(fix()),
            })),
        ),
        env(
            7,
            Priority::Normal,
            ev(EventDetail::Exception {
                kind: ExceptionKind::ShortPick,
                note: "bin empty".into(),
            }),
        ),
        env(
            8,
            Priority::Telemetry,
            Payload::Reading(Reading::Scan(Scan {
                symbology: Some("]C1".into()),
                data: "0109506000134352\u{1d}10L42".into(),
            })),
        ),
        env(
            9,
            Priority::Telemetry,
            Payload::Reading(Reading::Weight(WeightReading {
                net: Weight {
                    value: 1.25,
                    unit: WeightUnit::Kg,
                },
                tare: Some(Weight {
                    value: 0.05,
                    unit: WeightUnit::Kg,
                }),
                stable: true,
            })),
        ),
        env(
            10,
            Priority::Telemetry,
            Payload::Reading(Reading::Position(fix())),
        ),
    ];
    Batch {
        v: PROTOCOL_VERSION,
        device: dev(),
        epoch: 1_764_000_000_000,
        first_held: 1,
        events,
        shed: vec![],
    }
}

fn sample_ack() -> Ack {
    Ack {
        v: PROTOCOL_VERSION,
        device: dev(),
        epoch: 1_764_000_000_000,
        stored_up_to: Some(10),
        also_stored: vec![],
        verdicts: vec![
            Verdict {
                seq: 1,
                id: sample_batch().events[0].id,
                outcome: Outcome::Booked {
                    document: "WH/OUT/00042".into(),
                },
            },
            Verdict {
                seq: 7,
                id: sample_batch().events[6].id,
                outcome: Outcome::Rejected {
                    reason: "order SO-1001 is closed".into(),
                },
            },
        ],
        signed: None,
    }
}

fn sample_statuses() -> Vec<(&'static str, Status)> {
    let s = |kind| Status {
        v: PROTOCOL_VERSION,
        device: dev(),
        session: 4,
        at_ms: 1_764_050_000_000,
        kind,
    };
    vec![
        (
            "status-birth",
            s(StatusKind::Birth {
                agent_version: "0.1.0".into(),
                verdicts_wanted: None,
            }),
        ),
        (
            "status-birth-verdicts-wanted",
            s(StatusKind::Birth {
                agent_version: "0.1.0".into(),
                verdicts_wanted: Some(VerdictsWanted {
                    epoch: 1_764_000_000_000,
                    from_seq: 41,
                }),
            }),
        ),
        ("status-death", s(StatusKind::Death { graceful: false })),
        (
            "status-heartbeat",
            s(StatusKind::Heartbeat {
                queued: 12,
                oldest_unacked_ms: 3400,
                health: None,
            }),
        ),
    ]
}

fn check<T: WireMessage + PartialEq + std::fmt::Debug>(name: &str, message: &T) {
    let bytes = encode(message).expect("encodes");
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(format!("{name}.cbor"));
    if std::env::var_os("DOCKLINE_BLESS").is_some() {
        std::fs::write(&path, &bytes).expect("write fixture");
    }
    let golden = std::fs::read(&path)
        .unwrap_or_else(|e| panic!("fixture {} missing ({e}); bless it", path.display()));
    assert_eq!(
        bytes, golden,
        "{name}: the encoding changed; see the versioning rule in protocol/src/lib.rs"
    );
    let decoded: T = decode(&golden).expect("golden fixture decodes");
    assert_eq!(
        &decoded, message,
        "{name}: decoding the fixture gives a different message"
    );
}

#[test]
fn batch_with_every_kind_matches_fixture() {
    check("batch", &sample_batch());
}

#[test]
fn ack_matches_fixture() {
    check("ack", &sample_ack());
}

/// A signed ack (`sg`, added in v1 as an optional field): the plain fields
/// beside the signed bytes. The signature is a fixed stand-in.
#[test]
fn signed_ack_matches_fixture() {
    let sealed = sample_ack().seal(|_| [0x5a; 64]).expect("seals");
    check("ack-signed", &sealed);
    assert_eq!(
        sealed.open(|_, sig| sig == &[0x5a; 64]).expect("opens"),
        sample_ack()
    );
}

#[test]
fn statuses_match_fixtures() {
    for (name, s) in sample_statuses() {
        check(name, &s);
    }
}

#[test]
fn resend_command_matches_fixture() {
    let command = Command {
        v: PROTOCOL_VERSION,
        device: dev(),
        resend: Some(Resend {
            epoch: 1_764_000_000_000,
            ranges: vec![(67, 111), (113, 113)],
        }),
        expires_ms: None,
        signed: None,
        nonce: None,
    };
    check("command-resend", &command);
}

/// A signed resend request (`exp` and `sg`, added in v1 as optional
/// fields). The signature is a fixed stand-in: the fixture pins the
/// layout, the agent's tests check real Ed25519 signatures.
#[test]
fn signed_resend_command_matches_fixture() {
    let inner = Command {
        v: PROTOCOL_VERSION,
        device: dev(),
        resend: Some(Resend {
            epoch: 1_764_000_000_000,
            ranges: vec![(67, 111)],
        }),
        expires_ms: Some(1_764_050_300_000),
        signed: None,
        nonce: None,
    };
    let sealed = Command::seal(&inner, |_| [0x5a; 64]).expect("seals");
    check("command-signed", &sealed);
    // Signed without a nonce (`n`, added later in v1): decodes, is refused.
    assert_eq!(
        sealed.open(&dev(), 1_764_050_000_000, |_, sig| sig == &[0x5a; 64]),
        Err(dockline_protocol::CommandRefusal::NoNonce)
    );
    let inner = Command {
        nonce: Some(0x0123_4567_89ab_cdef),
        ..inner
    };
    let sealed = Command::seal(&inner, |_| [0x5a; 64]).expect("seals");
    check("command-signed-nonce", &sealed);
    let opened = sealed
        .open(&dev(), 1_764_050_000_000, |_, sig| sig == &[0x5a; 64])
        .expect("opens");
    assert_eq!(opened, inner);
}

/// A signature's first chunk and the collector's answers to it (the
/// `media` and `media_ack` channels, added in v1).
pub fn sample_media_chunk() -> MediaChunk {
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend((0..120u8).map(|i| i.wrapping_mul(37)));
    MediaChunk {
        v: PROTOCOL_VERSION,
        device: dev(),
        hash: MediaHash::of(&png),
        media_type: MediaType::Png,
        len: png.len() as u64,
        off: 0,
        data: png[..64].to_vec(),
    }
}

#[test]
fn media_messages_match_fixtures() {
    let chunk = sample_media_chunk();
    check("media-chunk", &chunk);
    let ack = |have, state| media::MediaAck {
        v: PROTOCOL_VERSION,
        device: dev(),
        hash: chunk.hash,
        have,
        at: None,
        state,
        signed: None,
    };
    check(
        "media-ack-receiving",
        &media::MediaAck {
            at: Some(64),
            ..ack(64, MediaState::Receiving)
        },
    );
    check("media-ack-stored", &ack(128, MediaState::Stored));
    check(
        "media-ack-attached",
        &ack(
            128,
            MediaState::Attached {
                doc: Some("shipment.out,77".into()),
            },
        ),
    );
    check(
        "media-ack-refused",
        &ack(
            0,
            MediaState::Refused {
                reason: "larger than this collector takes".into(),
            },
        ),
    );
    // The data travels as a CBOR byte string, not an array of integers.
    let bytes = encode(&chunk).expect("encodes");
    assert!(
        bytes.len() < chunk.data.len() + 100,
        "{} bytes for 64 of data",
        bytes.len()
    );
}

#[test]
fn cbor_is_at_most_half_of_json() {
    let batch = sample_batch();
    let cbor = encode(&batch).expect("encodes").len();
    let json = serde_json::to_vec(&batch).expect("json").len();
    // JSON here already uses the short keys; the comparison the bench makes is
    // against long-named JSON, so this is the stricter bound.
    assert!(cbor * 100 / json <= 90, "cbor {cbor} bytes vs json {json}");
}

#[test]
fn api_json_with_long_names_is_accepted() {
    let json = r#"{"detail":{"delivered":{"received_by":"Ann","pieces":2}},"refs":{"order":"SO-1","stop":"S-1"}}"#;
    let e: BusinessEvent = serde_json::from_str(json).expect("long names are aliases");
    assert_eq!(e.refs.order.as_deref(), Some("SO-1"));
    assert_eq!(e.detail.kind_name(), "delivered");
}

/// The outbox encodes an envelope before its sequence number is known and
/// joins the parts later: the bytes must be the envelope's own, for
/// sequence numbers of every CBOR length.
#[test]
fn joined_envelopes_are_byte_identical_to_encoded_ones() {
    use dockline_protocol::codec::{envelope_prefix, envelope_tail, join_envelope};
    for mut e in sample_batch().events {
        let prefix = envelope_prefix(e.v, &e.device, e.epoch).expect("prefix");
        let tail = envelope_tail(e.id, e.captured_ms, e.time_source, e.priority, &e.payload)
            .expect("tail");
        for seq in [
            1,
            23,
            24,
            255,
            256,
            65_535,
            65_536,
            1 << 32,
            i64::MAX as u64,
        ] {
            e.seq = seq;
            let joined = join_envelope(&prefix, seq, &tail);
            assert_eq!(joined, encode(&e).expect("encode"), "seq {seq}");
            assert_eq!(decode::<Envelope>(&joined).expect("decodes"), e);
        }
    }
}
