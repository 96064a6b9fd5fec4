//! The media contract as a collector and an agent would live it: random
//! images in random chunk sizes over a link that loses, repeats and
//! reorders chunks, with the sender resuming from the collector's `have`
//! and the collector restarting from its stored prefix. The stored bytes
//! are always a prefix of the image, written once each, in order, and the
//! medium completes exactly once with the right hash; hostile chunks are
//! refused by the decoder or ignored by the reassembly, never stored.

use dockline_protocol::media::{
    DEFAULT_CHUNK_BYTES, Ignored, MAX_CHUNK_BYTES, MAX_MEDIA_BYTES, Offer, ReassemblyError,
};
use dockline_protocol::*;
use proptest::prelude::*;

fn dev() -> DeviceId {
    DeviceId::new("hh-07").expect("id")
}

fn image(len: usize, seed: u8) -> Vec<u8> {
    let mut b = vec![0xff, 0xd8, 0xff, 0xe0];
    b.extend((0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)));
    b
}

fn chunk_of(img: &[u8], off: usize, size: usize) -> MediaChunk {
    let end = (off + size).min(img.len());
    MediaChunk {
        v: PROTOCOL_VERSION,
        device: dev(),
        hash: MediaHash::of(img),
        media_type: MediaType::Jpeg,
        len: img.len() as u64,
        off: off as u64,
        data: img[off..end].to_vec(),
    }
}

/// What happens to one chunk.
#[derive(Debug, Clone, Copy)]
enum Fate {
    Deliver,
    /// Lost; the agent has already sent the next one (pipelined), which
    /// arrives ahead of the prefix.
    Lose,
    Repeat,
    /// Held back and delivered after the next one.
    Late,
    /// The collector restarts before this chunk (rebuilds from its store).
    CollectorRestart,
    /// The agent restarts with another chunk size, resuming from the last
    /// `have` it was told.
    AgentRestart,
}

fn fate() -> impl Strategy<Value = Fate> {
    prop_oneof![
        6 => Just(Fate::Deliver),
        1 => Just(Fate::Lose),
        1 => Just(Fate::Repeat),
        1 => Just(Fate::Late),
        1 => Just(Fate::CollectorRestart),
        1 => Just(Fate::AgentRestart),
    ]
}

/// The collector: the reassembly plus the committed bytes.
struct Collector {
    r: Reassembly,
    stored: Vec<u8>,
    completed: u32,
}

impl Collector {
    /// Takes one chunk the way a collector does: decode, offer, commit.
    fn receive(&mut self, wire: &[u8]) -> MediaAck {
        let chunk: MediaChunk = decode(wire).expect("a valid chunk decodes");
        match self.r.offer(&chunk).expect("same medium") {
            Offer::Append { at, bytes } => {
                assert_eq!(at, self.stored.len() as u64, "written at the prefix end");
                self.stored.extend_from_slice(bytes);
            }
            Offer::Complete { at, bytes } => {
                assert_eq!(at, self.stored.len() as u64);
                self.stored.extend_from_slice(bytes);
                self.completed += 1;
            }
            Offer::Ignored(_) => {}
        }
        assert_eq!(self.r.have(), self.stored.len() as u64);
        let ack = self.r.ack(dev(), Some(chunk.off));
        let bytes = encode(&ack).expect("encodes");
        decode(&bytes).expect("the ack decodes")
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, .. ProptestConfig::default() })]

    #[test]
    fn media_arrive_whole_and_once_through_loss_repeats_and_restarts(
        len in 1usize..20_000,
        seed in any::<u8>(),
        sizes in (1usize..4096, 1usize..4096),
        fates in proptest::collection::vec(fate(), 0..200),
    ) {
        let img = image(len, seed);
        let mut size = sizes.0;
        let first = chunk_of(&img, 0, size);
        let mut c = Collector {
            r: Reassembly::start(&first, MAX_MEDIA_BYTES).expect("start"),
            stored: Vec::new(),
            completed: 0,
        };
        // The agent sends from the last `have` it was told; without an
        // answer (a lost chunk) its ack timeout brings it back there.
        let mut have = 0usize;
        let mut late: Option<Vec<u8>> = None;
        let mut steps = 0usize;
        let mut fates = std::iter::once(Fate::Deliver).chain(fates).cycle();
        while c.completed == 0 {
            steps += 1;
            prop_assert!(steps < 100_000, "no progress");
            let ch = chunk_of(&img, have, size);
            let wire = encode(&ch).expect("encodes");
            let mut answers = Vec::new();
            match fates.next().unwrap_or(Fate::Deliver) {
                Fate::Deliver => answers.push(c.receive(&wire)),
                Fate::Lose => {
                    if (ch.end() as usize) < img.len() {
                        let ahead = chunk_of(&img, ch.end() as usize, size);
                        answers.push(c.receive(&encode(&ahead).expect("encodes")));
                        prop_assert!(answers[0].have < ahead.off, "ahead is not stored");
                    }
                }
                Fate::Repeat => {
                    answers.push(c.receive(&wire));
                    answers.push(c.receive(&wire));
                }
                Fate::Late => {
                    if let Some(old) = late.replace(wire) {
                        answers.push(c.receive(&old));
                    }
                }
                Fate::CollectorRestart => {
                    c.r = Reassembly::resume(
                        first.hash, first.media_type, first.len, &c.stored, MAX_MEDIA_BYTES,
                    ).expect("resume from the stored prefix");
                    answers.push(c.receive(&wire));
                }
                Fate::AgentRestart => {
                    size = if size == sizes.0 { sizes.1 } else { sizes.0 };
                }
            }
            if !answers.is_empty() && let Some(old) = late.take() {
                answers.push(c.receive(&old));
            }
            if let Some(a) = answers.last() {
                prop_assert!(a.have <= img.len() as u64);
                have = a.have as usize;
            }
        }
        prop_assert_eq!(c.completed, 1);
        prop_assert_eq!(&c.stored, &img);
        prop_assert!(c.r.is_complete());
        // Late copies after completion change nothing.
        for off in [0, img.len() / 2] {
            let again = c.receive(&encode(&chunk_of(&img, off, size)).expect("encodes"));
            prop_assert_eq!(again.state, MediaState::Stored);
        }
        prop_assert_eq!(c.completed, 1);
    }

    /// A corrupted byte anywhere is caught by the hash at the end: nothing
    /// is kept, and the next clean pass completes.
    #[test]
    fn a_corrupted_chunk_is_caught_at_the_end(
        len in 1usize..5000,
        size in 1usize..1024,
        flip_at in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        let img = image(len, 3);
        let flip = flip_at.index(img.len());
        let mut r = Reassembly::start(&chunk_of(&img, 0, size), MAX_MEDIA_BYTES).expect("start");
        let mut off = 0;
        let mut failed = false;
        while off < img.len() {
            let mut ch = chunk_of(&img, off, size);
            if (off..ch.end() as usize).contains(&flip) {
                ch.data[flip - off] ^= 1 << bit;
            }
            off = ch.end() as usize;
            match r.offer(&ch) {
                Ok(Offer::Complete { .. }) => prop_assert!(false, "corrupt bytes completed"),
                Ok(Offer::Append { .. }) => {}
                Ok(Offer::Ignored(i)) => prop_assert!(false, "in-order chunk ignored: {:?}", i),
                Err(ReassemblyError::HashMismatch { .. }) => failed = true,
                Err(e) => prop_assert!(false, "{}", e),
            }
        }
        prop_assert!(failed);
        prop_assert_eq!(r.have(), 0);
        let mut off = 0;
        while off < img.len() {
            let ch = chunk_of(&img, off, size);
            off = ch.end() as usize;
            r.offer(&ch).expect("clean pass");
        }
        prop_assert!(r.is_complete());
    }

    /// Arbitrary bytes never panic the decoders; mutated valid chunks
    /// either decode to a chunk inside the caps or are refused.
    #[test]
    fn hostile_media_bytes_are_refused_not_panicked_on(
        bytes in proptest::collection::vec(any::<u8>(), 0..512),
        pos in 0usize..4096,
        byte in any::<u8>(),
    ) {
        let _ = decode::<MediaChunk>(&bytes);
        let _ = decode::<MediaAck>(&bytes);
        let mut wire = encode(&chunk_of(&image(300, 1), 0, 200)).expect("encodes");
        let n = wire.len();
        wire[pos % n] = byte;
        if let Ok(c) = decode::<MediaChunk>(&wire) {
            prop_assert!(c.len <= MAX_MEDIA_BYTES && c.end() <= c.len);
            prop_assert!(!c.data.is_empty() && c.data.len() <= MAX_CHUNK_BYTES);
        }
    }
}

/// Oversize, empty and out-of-bounds chunks, and oversize acks, are
/// refused by the decoder, naming the field.
#[test]
fn chunks_breaking_the_caps_are_refused_by_name() {
    let img = image(1000, 9);
    let good = chunk_of(&img, 0, DEFAULT_CHUNK_BYTES);
    let refused = |c: &MediaChunk, field: &str| {
        let err = decode::<MediaChunk>(&encode(c).expect("encodes")).expect_err("refused");
        assert!(err.to_string().contains(field), "{err}");
    };
    let mut c = good.clone();
    c.data.clear();
    refused(&c, "`data`");
    let mut c = good.clone();
    c.data = vec![0; MAX_CHUNK_BYTES + 1];
    c.len = MAX_CHUNK_BYTES as u64 + 1;
    refused(&c, "`data`");
    let mut c = good.clone();
    c.off = 1;
    refused(&c, "`off`");
    let mut c = good.clone();
    c.off = u64::MAX;
    refused(&c, "`off`");
    let mut c = good.clone();
    c.len = MAX_MEDIA_BYTES + 1;
    refused(&c, "`len`");
    let mut c = good.clone();
    c.len = 0;
    refused(&c, "`len`");
    let ack = MediaAck {
        v: PROTOCOL_VERSION,
        device: dev(),
        hash: good.hash,
        have: MAX_MEDIA_BYTES + 1,
        at: None,
        state: MediaState::Receiving,
        signed: None,
    };
    let err = decode::<MediaAck>(&encode(&ack).expect("encodes")).expect_err("refused");
    assert!(err.to_string().contains("`have`"), "{err}");
    let ack = MediaAck {
        have: 0,
        state: MediaState::Refused {
            reason: "x".repeat(3000),
        },
        ..ack
    };
    let err = decode::<MediaAck>(&encode(&ack).expect("encodes")).expect_err("refused");
    assert!(err.to_string().contains("reason"), "{err}");
    // A chunk of the largest size the protocol allows fits a message.
    let big = image(MAX_CHUNK_BYTES, 1);
    let c = chunk_of(&big, 0, MAX_CHUNK_BYTES);
    assert!(decode::<MediaChunk>(&encode(&c).expect("encodes")).is_ok());
    // A different medium is not mixed into a reassembly.
    let mut r = Reassembly::start(&good, MAX_MEDIA_BYTES).expect("start");
    assert!(matches!(
        r.offer(&c),
        Err(ReassemblyError::OtherMedium { .. })
    ));
    assert_eq!(
        r.offer(&chunk_of(&img, 10, 10)),
        Ok(Offer::Ignored(Ignored::Ahead))
    );
}
