//! Generated delivery photos: real baseline JPEGs of 200–800 KB.
//!
//! # Format
//!
//! A grayscale baseline JPEG (JFIF APP0, one quantisation table, SOF0,
//! a DC and an AC Huffman table, one scan, EOI) whose 8×8 blocks carry
//! seeded random coefficients, so the file neither compresses nor repeats,
//! like a camera's photo. The Huffman tables are the file's own (JPEG lets a
//! file define them), chosen so every block costs exactly 40 bytes before
//! byte stuffing: the DC difference and all 63 AC coefficients are of size
//! category 4 (code `0` + 4 value bits), with `10` left for the AC table's
//! end of block. Any JPEG decoder reads the result (as noise).
//!
//! # Invariants
//!
//! - The same `(seed, index)` gives the same bytes; different ones give
//!   different bytes (the seed and index are also written in a COM segment).
//! - The size lies in [`MIN_BYTES`]..=[`MAX_BYTES`].

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The smallest photo made.
pub const MIN_BYTES: usize = 200_000;
/// The largest photo made.
pub const MAX_BYTES: usize = 800_000;
/// Width in pixels (a multiple of 8: whole blocks, no padding).
pub const WIDTH: u16 = 1280;
/// Entropy-coded bytes per 8×8 block before stuffing: (1 + 4) × 64 bits.
const BLOCK_BYTES: usize = 40;

/// A JPEG photo, deterministic from `seed` and `index`.
pub fn photo(seed: u64, index: u64) -> Vec<u8> {
    let mut rng =
        StdRng::seed_from_u64(seed ^ index.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x0050_4f44);
    // Room for headers and byte stuffing (one 0xFF in 256 gains a byte)
    // on either side of the range.
    let target = rng.random_range(MIN_BYTES + 4_000..=MAX_BYTES - 8_000);
    let blocks_wide = usize::from(WIDTH / 8);
    let rows = (target / BLOCK_BYTES).div_ceil(blocks_wide);
    let height = (rows * 8) as u16;
    let mut out = Vec::with_capacity(target + 4_096);
    out.extend_from_slice(&[0xff, 0xd8]);
    segment(
        &mut out,
        0xe0,
        b"JFIF\0\x01\x01\x00\x00\x01\x00\x01\x00\x00",
    );
    let comment = format!("dockline demo photo, seed {seed}, index {index}");
    segment(&mut out, 0xfe, comment.as_bytes());
    // One table, gentle steps: the coefficients stay in the decoder's range.
    let mut dqt = vec![0u8];
    dqt.extend((0..64).map(|i| 1 + (i / 16) as u8));
    segment(&mut out, 0xdb, &dqt);
    let mut sof = vec![8];
    sof.extend_from_slice(&height.to_be_bytes());
    sof.extend_from_slice(&WIDTH.to_be_bytes());
    sof.extend_from_slice(&[1, 1, 0x11, 0]);
    segment(&mut out, 0xc0, &sof);
    // DC table 0: size 4 → `0`, size 0 → `10`. AC table 0: (run 0, size 4)
    // → `0`, end of block → `10`.
    for (class, symbols) in [(0x00u8, [4u8, 0x00]), (0x10, [0x04, 0x00])] {
        let mut dht = vec![class, 1, 1];
        dht.extend_from_slice(&[0; 14]);
        dht.extend_from_slice(&symbols);
        segment(&mut out, 0xc4, &dht);
    }
    segment(&mut out, 0xda, &[1, 1, 0x00, 0, 63, 0]);
    let mut bits = BitWriter::new(&mut out);
    // The DC value stays near 0: its difference points back towards it.
    let mut dc: i32 = 0;
    for _ in 0..rows * blocks_wide {
        let mut word: u64 = rng.random();
        // Size category 4: value bits 1xxx are +8..+15, 0xxx are -15..-8.
        let up = dc <= 0;
        let v = (word & 0x7) as u8 | if up { 0x8 } else { 0 };
        dc += if up { i32::from(v) } else { i32::from(v) - 15 };
        bits.put(u64::from(v), 5);
        for k in 0..63 {
            if k % 16 == 0 {
                word = rng.random();
            }
            // `0` (the code) then four value bits.
            bits.put(word & 0xf, 5);
            word >>= 4;
        }
    }
    bits.finish();
    out.extend_from_slice(&[0xff, 0xd9]);
    out
}

/// Appends marker `0xFF kind` and its length-prefixed `body`.
fn segment(out: &mut Vec<u8>, kind: u8, body: &[u8]) {
    out.extend_from_slice(&[0xff, kind]);
    // Every body here is far below 64 KiB.
    out.extend_from_slice(&((body.len() + 2) as u16).to_be_bytes());
    out.extend_from_slice(body);
}

/// Entropy-coded bits, most significant first, with JPEG's byte stuffing
/// (a 0x00 after every 0xFF).
struct BitWriter<'a> {
    out: &'a mut Vec<u8>,
    acc: u8,
    used: u32,
}

impl<'a> BitWriter<'a> {
    fn new(out: &'a mut Vec<u8>) -> Self {
        Self {
            out,
            acc: 0,
            used: 0,
        }
    }

    fn put(&mut self, value: u64, count: u32) {
        for i in (0..count).rev() {
            self.acc = (self.acc << 1) | ((value >> i) & 1) as u8;
            self.used += 1;
            if self.used == 8 {
                self.byte();
            }
        }
    }

    fn byte(&mut self) {
        self.out.push(self.acc);
        if self.acc == 0xff {
            self.out.push(0x00);
        }
        self.acc = 0;
        self.used = 0;
    }

    /// Pads the last byte with 1 bits, as the standard asks.
    fn finish(mut self) {
        if self.used > 0 {
            let pad = 8 - self.used;
            self.acc = (self.acc << pad) | ((1u8 << pad) - 1);
            self.byte();
        }
    }
}
