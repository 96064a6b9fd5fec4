//! Property tests of the stream decoder (agent/src/devices/decoder.rs): for
//! every protocol, arbitrary bytes never panic, every item points inside the
//! input, and how the bytes are split into reads does not change the items.

use dockline_agent::devices::{DecoderOptions, Item, Protocol, StreamDecoder};
use proptest::prelude::*;

/// Bytes that look like device output often enough to reach deep states:
/// frame markers and line ends mixed with printable text and noise.
fn device_bytes() -> impl Strategy<Value = Vec<u8>> {
    let byte = prop_oneof![
        4 => any::<u8>(),
        2 => prop::sample::select(b"\r\n\x02\x03\x00\x1d$*,. ]SCDIE+-kg0123456789".to_vec()),
    ];
    proptest::collection::vec(byte, 0..600)
}

fn options() -> impl Strategy<Value = DecoderOptions> {
    any::<bool>().prop_map(|toledo_checksum| DecoderOptions { toledo_checksum })
}

fn decode(protocol: Protocol, options: DecoderOptions, chunks: &[&[u8]]) -> Vec<Item> {
    let mut decoder = StreamDecoder::new(protocol, options);
    let mut items = Vec::new();
    for chunk in chunks {
        decoder.push(chunk, &mut items);
    }
    decoder.finish(&mut items);
    items
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, .. ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic_and_split_reads_agree(
        protocol in prop::sample::select(Protocol::ALL.to_vec()),
        options in options(),
        bytes in device_bytes(),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..8),
    ) {
        let whole = decode(protocol, options, &[&bytes]);
        for item in &whole {
            prop_assert!(item.offset <= bytes.len() as u64, "{item:?} past the input");
            // Every item prints as one JSON line, whatever it holds.
            let line = item.to_json_line();
            prop_assert!(serde_json::from_str::<serde_json::Value>(&line).is_ok(), "{line}");
        }
        let mut at: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
        at.sort_unstable();
        let mut chunks = Vec::new();
        let mut start = 0;
        for cut in at {
            chunks.push(&bytes[start..cut]);
            start = cut;
        }
        chunks.push(&bytes[start..]);
        prop_assert_eq!(decode(protocol, options, &chunks), whole);
    }

    #[test]
    fn idle_at_any_point_never_panics(
        protocol in prop::sample::select(Protocol::ALL.to_vec()),
        bytes in device_bytes(),
        idles in proptest::collection::vec(any::<prop::sample::Index>(), 0..6),
    ) {
        let mut decoder = StreamDecoder::new(protocol, DecoderOptions::default());
        let mut items = Vec::new();
        let mut at: Vec<usize> = idles.iter().map(|i| i.index(bytes.len() + 1)).collect();
        at.sort_unstable();
        let mut start = 0;
        for cut in at {
            decoder.push(&bytes[start..cut], &mut items);
            decoder.idle(&mut items);
            start = cut;
        }
        decoder.push(&bytes[start..], &mut items);
        decoder.finish(&mut items);
        for item in &items {
            prop_assert!(item.offset <= bytes.len() as u64);
        }
    }
}
