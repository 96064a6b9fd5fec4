//! Generated signatures: real PNGs of a few KB, a pen stroke on white.
//!
//! # Format
//!
//! A 1-bit grayscale PNG ([`WIDTH`] × [`HEIGHT`], no interlace): IHDR, one
//! IDAT holding a zlib stream of stored (uncompressed) deflate blocks, IEND,
//! each chunk with its CRC-32, the zlib stream with its Adler-32. Every row
//! uses filter 0. Black pixels (0) draw a seeded scribble, a sum of sines
//! swept left to right with a pen two pixels wide, as a signature pad sends.
//!
//! # Invariants
//!
//! - The same `(seed, index)` gives the same bytes; different ones give
//!   different strokes (and a `tEXt` chunk naming them, so no two are equal).
//! - Any PNG decoder reads it: the CRCs, the zlib header and the Adler-32
//!   are those the standard defines.

use crc::{CRC_32_ISO_HDLC, Crc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Width in pixels.
pub const WIDTH: u32 = 400;
/// Height in pixels.
pub const HEIGHT: u32 = 128;
const ROW_BYTES: usize = (WIDTH as usize).div_ceil(8);
const CRC32: Crc<u32> = Crc::<u32>::new(&CRC_32_ISO_HDLC);
/// The largest stored deflate block.
const STORED_MAX: usize = 65_535;

/// A PNG signature, deterministic from `seed` and `index`.
pub fn signature(seed: u64, index: u64) -> Vec<u8> {
    let mut rng =
        StdRng::seed_from_u64(seed ^ index.wrapping_mul(0xd1b5_4a32_d192_ed03) ^ 0x0053_4947);
    // White rows (filter byte 0, then all bits 1).
    let mut raw = vec![0xffu8; (ROW_BYTES + 1) * HEIGHT as usize];
    for row in raw.chunks_mut(ROW_BYTES + 1) {
        row[0] = 0;
    }
    let waves: Vec<(f64, f64, f64)> = (0..4)
        .map(|_| {
            (
                rng.random_range(6.0..24.0),
                rng.random_range(0.01..0.12),
                rng.random_range(0.0..std::f64::consts::TAU),
            )
        })
        .collect();
    let (left, right) = (rng.random_range(16..60), rng.random_range(320..390));
    let middle = f64::from(HEIGHT) / 2.0;
    let mut last: Option<(i64, i64)> = None;
    for x in left..right {
        let y = middle
            + waves
                .iter()
                .map(|(amp, freq, phase)| amp * (f64::from(x) * freq + phase).sin())
                .sum::<f64>()
                / 2.0;
        let point = (i64::from(x), y.round() as i64);
        // Join to the previous point so steep strokes stay unbroken.
        let from = last.unwrap_or(point);
        let (lo, hi) = (from.1.min(point.1), from.1.max(point.1));
        for yy in lo..=hi {
            for (dx, dy) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
                ink(&mut raw, point.0 + dx, yy + dy);
            }
        }
        last = Some(point);
    }
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::with_capacity(13);
    ihdr.extend_from_slice(&WIDTH.to_be_bytes());
    ihdr.extend_from_slice(&HEIGHT.to_be_bytes());
    // Bit depth 1, grayscale, deflate, filter method 0, no interlace.
    ihdr.extend_from_slice(&[1, 0, 0, 0, 0]);
    chunk(&mut out, b"IHDR", &ihdr);
    let text = format!("Comment\0dockline demo signature, seed {seed}, index {index}");
    chunk(&mut out, b"tEXt", text.as_bytes());
    chunk(&mut out, b"IDAT", &zlib_stored(&raw));
    chunk(&mut out, b"IEND", &[]);
    out
}

/// Sets pixel (x, y) black; outside the image, nothing.
fn ink(raw: &mut [u8], x: i64, y: i64) {
    if !(0..i64::from(WIDTH)).contains(&x) || !(0..i64::from(HEIGHT)).contains(&y) {
        return;
    }
    let (x, y) = (x as usize, y as usize);
    let at = y * (ROW_BYTES + 1) + 1 + x / 8;
    raw[at] &= !(0x80u8 >> (x % 8));
}

/// Appends a PNG chunk: length, type, data, CRC-32 of type and data.
fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    // Every chunk here is far below 2^31 bytes.
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let mut digest = CRC32.digest();
    digest.update(kind);
    digest.update(data);
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    out.extend_from_slice(&digest.finalize().to_be_bytes());
}

/// A zlib stream of stored deflate blocks holding `data`.
fn zlib_stored(data: &[u8]) -> Vec<u8> {
    // CMF 0x78 (deflate, 32 KiB window), FLG 0x01 (check bits, no dictionary).
    let mut out = vec![0x78, 0x01];
    let blocks: Vec<&[u8]> = data.chunks(STORED_MAX).collect();
    for (i, block) in blocks.iter().enumerate() {
        out.push(u8::from(i + 1 == blocks.len()));
        let len = block.len() as u16;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(block);
    }
    out.extend_from_slice(&adler32(data).to_be_bytes());
    out
}

/// zlib's checksum (RFC 1950).
fn adler32(data: &[u8]) -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    for &byte in data {
        a = (a + u32::from(byte)) % 65_521;
        b = (b + a) % 65_521;
    }
    (b << 16) | a
}
