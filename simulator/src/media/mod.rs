//! Proof-of-delivery media in the simulation (issue 14): the signatures and
//! photos the demo's drivers take, and the count of what became of them.
//!
//! - [`signature`]: a PNG of a pen stroke, a few KB.
//! - [`photo`]: a baseline JPEG of 200–800 KB that does not compress.
//! - [`tally`]: media made against media stored at the collector and
//!   attached at the ERP: lost, duplicated.
//!
//! # Invariants
//!
//! - Every medium is deterministic from `(seed, index)`, and no two
//!   `(seed, index, role)` give the same bytes: a medium's SHA-256 names one
//!   delivery's signature or photo, never two.
//! - A medium's [`Medium::reference`] is what an event carries
//!   (`sha256:<hex>` in `signature_ref` / `photo_ref`).

pub mod photo;
pub mod signature;
pub mod tally;

use std::sync::Arc;

pub use dockline_collector::media::MediaRole;
use dockline_protocol::media::MediaHash;

/// One generated image, ready to post to an agent's `POST /v1/media`.
#[derive(Clone, PartialEq, Eq)]
pub struct Medium {
    /// Signature or photo.
    pub role: MediaRole,
    /// Its bytes.
    pub bytes: Arc<[u8]>,
    /// Their SHA-256.
    pub hash: MediaHash,
}

impl std::fmt::Debug for Medium {
    // Not the bytes: a photo is hundreds of KB.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Medium")
            .field("role", &self.role)
            .field("len", &self.bytes.len())
            .field("hash", &self.hash.to_string())
            .finish()
    }
}

impl Medium {
    fn new(role: MediaRole, bytes: Vec<u8>) -> Self {
        Self {
            role,
            hash: MediaHash::of(&bytes),
            bytes: bytes.into(),
        }
    }

    /// The signature of delivery `index`.
    pub fn signature(seed: u64, index: u64) -> Self {
        Self::new(MediaRole::Signature, signature::signature(seed, index))
    }

    /// The photo of delivery `index`.
    pub fn photo(seed: u64, index: u64) -> Self {
        Self::new(MediaRole::Photo, photo::photo(seed, index))
    }

    /// The content type the agent checks against the magic bytes.
    pub fn content_type(&self) -> &'static str {
        match self.role {
            MediaRole::Signature => "image/png",
            MediaRole::Photo => "image/jpeg",
        }
    }

    /// How an event names it: `sha256:<hex>`.
    pub fn reference(&self) -> String {
        format!("sha256:{}", self.hash)
    }

    /// The field of `delivered` that carries [`Self::reference`].
    pub fn field(&self) -> &'static str {
        match self.role {
            MediaRole::Signature => "signature_ref",
            MediaRole::Photo => "photo_ref",
        }
    }
}

/// The signature and photo of delivery `index`.
pub fn proof_of_delivery(seed: u64, index: u64) -> Vec<Medium> {
    vec![Medium::signature(seed, index), Medium::photo(seed, index)]
}

/// Sets each medium's reference in a `delivered` event body
/// (`detail.delivered.signature_ref` / `photo_ref`); other bodies are left
/// as they are.
pub fn reference_in(body: &mut serde_json::Value, media: &[Medium]) {
    if let Some(pod) = body
        .pointer_mut("/detail/delivered")
        .and_then(serde_json::Value::as_object_mut)
    {
        for m in media {
            pod.insert(m.field().into(), m.reference().into());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dockline_protocol::media::MediaType;
    use std::collections::HashSet;

    /// Reads a PNG back: chunk CRCs, zlib of stored blocks, Adler-32; the
    /// raw scanlines.
    fn read_png(b: &[u8]) -> (u32, u32, Vec<u8>) {
        let crc = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC);
        assert_eq!(&b[..8], b"\x89PNG\r\n\x1a\n");
        let mut at = 8;
        let (mut w, mut h, mut idat) = (0, 0, Vec::new());
        let mut kinds = Vec::new();
        while at < b.len() {
            let len = u32::from_be_bytes(b[at..at + 4].try_into().expect("4")) as usize;
            let kind = &b[at + 4..at + 8];
            let data = &b[at + 8..at + 8 + len];
            let stored = u32::from_be_bytes(b[at + 8 + len..at + 12 + len].try_into().expect("4"));
            assert_eq!(
                crc.checksum(&b[at + 4..at + 8 + len]),
                stored,
                "CRC of {kind:?}"
            );
            match kind {
                b"IHDR" => {
                    w = u32::from_be_bytes(data[0..4].try_into().expect("4"));
                    h = u32::from_be_bytes(data[4..8].try_into().expect("4"));
                    assert_eq!(&data[8..], &[1, 0, 0, 0, 0]);
                }
                b"IDAT" => idat.extend_from_slice(data),
                _ => {}
            }
            kinds.push(String::from_utf8_lossy(kind).to_string());
            at += 12 + len;
        }
        assert_eq!(kinds.first().map(String::as_str), Some("IHDR"));
        assert_eq!(kinds.last().map(String::as_str), Some("IEND"));
        // zlib: header check bits, stored blocks, Adler-32.
        assert_eq!((u16::from(idat[0]) << 8 | u16::from(idat[1])) % 31, 0);
        let mut raw = Vec::new();
        let mut p = 2;
        loop {
            let last = idat[p] & 1 == 1;
            assert_eq!(idat[p] >> 1 & 3, 0, "stored block");
            let len = u16::from_le_bytes([idat[p + 1], idat[p + 2]]);
            let nlen = u16::from_le_bytes([idat[p + 3], idat[p + 4]]);
            assert_eq!(len, !nlen);
            raw.extend_from_slice(&idat[p + 5..p + 5 + len as usize]);
            p += 5 + len as usize;
            if last {
                break;
            }
        }
        let adler = u32::from_be_bytes(idat[p..p + 4].try_into().expect("4"));
        let (mut a, mut s) = (1u32, 0u32);
        for &x in &raw {
            a = (a + u32::from(x)) % 65_521;
            s = (s + a) % 65_521;
        }
        assert_eq!(adler, (s << 16) | a);
        (w, h, raw)
    }

    /// Reads a JPEG back: markers in order, its Huffman tables, and the
    /// scan decoded block by block to EOI. Returns (width, height, blocks).
    fn read_jpeg(b: &[u8]) -> (u16, u16, usize) {
        assert_eq!(&b[..2], &[0xff, 0xd8]);
        let mut at = 2;
        let (mut w, mut h) = (0u16, 0u16);
        // Per table (class, id): code → (length, symbol).
        let mut tables: std::collections::HashMap<u8, Vec<(u16, u8, u8)>> = Default::default();
        loop {
            assert_eq!(b[at], 0xff);
            let kind = b[at + 1];
            let len = u16::from_be_bytes([b[at + 2], b[at + 3]]) as usize;
            let body = &b[at + 4..at + 2 + len];
            match kind {
                0xc0 => {
                    h = u16::from_be_bytes([body[1], body[2]]);
                    w = u16::from_be_bytes([body[3], body[4]]);
                }
                0xc4 => {
                    let counts = &body[1..17];
                    let mut symbols = body[17..].iter();
                    let mut code = 0u16;
                    let mut codes = Vec::new();
                    for (i, &n) in counts.iter().enumerate() {
                        for _ in 0..n {
                            codes.push((code, i as u8 + 1, *symbols.next().expect("symbol")));
                            code += 1;
                        }
                        code <<= 1;
                    }
                    tables.insert(body[0], codes);
                }
                0xda => {
                    at += 2 + len;
                    break;
                }
                _ => {}
            }
            at += 2 + len;
        }
        // Unstuff the scan up to EOI.
        let mut scan = Vec::new();
        let mut i = at;
        loop {
            if b[i] == 0xff {
                if b[i + 1] == 0x00 {
                    scan.push(0xff);
                    i += 2;
                    continue;
                }
                assert_eq!(b[i + 1], 0xd9, "EOI ends the scan");
                assert_eq!(i + 2, b.len(), "nothing after EOI");
                break;
            }
            scan.push(b[i]);
            i += 1;
        }
        let total_bits = scan.len() * 8;
        let mut pos = 0usize;
        let bit = |pos: usize| (scan[pos / 8] >> (7 - pos % 8)) & 1;
        let decode = |pos: &mut usize, table: &[(u16, u8, u8)]| -> u8 {
            let mut code = 0u16;
            for len in 1..=16u8 {
                code = code << 1 | u16::from(bit(*pos));
                *pos += 1;
                if let Some(&(_, _, s)) = table.iter().find(|&&(c, l, _)| l == len && c == code) {
                    return s;
                }
            }
            panic!("no Huffman code at bit {pos}");
        };
        let blocks = usize::from(w / 8) * usize::from(h / 8);
        for _ in 0..blocks {
            let size = decode(&mut pos, &tables[&0x00]);
            pos += usize::from(size);
            let mut k = 1;
            while k < 64 {
                let s = decode(&mut pos, &tables[&0x10]);
                if s == 0 {
                    break;
                }
                k += 1 + usize::from(s >> 4);
                pos += usize::from(s & 0xf);
            }
            assert!(k <= 64);
        }
        assert!(
            total_bits - pos < 8,
            "{} bits left after the last block",
            total_bits - pos
        );
        (w, h, blocks)
    }

    #[test]
    fn a_signature_is_a_real_png_of_a_few_kb_with_ink_on_it() {
        let m = Medium::signature(7, 0);
        assert_eq!(MediaType::from_magic(&m.bytes), Some(MediaType::Png));
        assert!(
            (2_000..=16_000).contains(&m.bytes.len()),
            "{} bytes",
            m.bytes.len()
        );
        let (w, h, raw) = read_png(&m.bytes);
        assert_eq!((w, h), (signature::WIDTH, signature::HEIGHT));
        let row = (w as usize).div_ceil(8) + 1;
        assert_eq!(raw.len(), row * h as usize);
        assert!(raw.chunks(row).all(|r| r[0] == 0), "filter 0 on every row");
        let ink: u32 = raw
            .chunks(row)
            .flat_map(|r| &r[1..])
            .map(|b| b.count_zeros())
            .sum();
        assert!(ink > 500, "{ink} black pixels: a stroke, not a blank pad");
        assert_eq!(m.content_type(), "image/png");
    }

    #[test]
    fn a_photo_is_a_real_baseline_jpeg_of_200_to_800_kb() {
        let mut sizes = Vec::new();
        for index in 0..6 {
            let m = Medium::photo(42, index);
            assert_eq!(MediaType::from_magic(&m.bytes), Some(MediaType::Jpeg));
            let len = m.bytes.len();
            assert!(
                (photo::MIN_BYTES..=photo::MAX_BYTES).contains(&len),
                "{len} bytes"
            );
            let (w, h, blocks) = read_jpeg(&m.bytes);
            assert_eq!(w, photo::WIDTH);
            assert!(blocks * 40 <= len, "{blocks} blocks in {len} bytes");
            assert!(h > 0);
            sizes.push(len);
        }
        sizes.dedup();
        assert!(sizes.len() > 1, "sizes vary: {sizes:?}");
    }

    #[test]
    fn media_are_deterministic_and_never_equal() {
        assert_eq!(Medium::photo(1, 2), Medium::photo(1, 2));
        assert_eq!(Medium::signature(1, 2), Medium::signature(1, 2));
        let mut hashes = HashSet::new();
        for seed in 0..3 {
            for index in 0..5 {
                for m in proof_of_delivery(seed, index) {
                    assert!(hashes.insert(m.hash), "{m:?} repeats");
                }
            }
        }
    }

    #[test]
    fn references_go_into_the_delivered_event() {
        let media = proof_of_delivery(3, 1);
        let mut body = serde_json::json!({"detail": {"delivered": {"received_by": "K", "pieces": 1,
            "signature_ref": "sig-1.png"}}});
        reference_in(&mut body, &media);
        let pod = &body["detail"]["delivered"];
        assert_eq!(pod["signature_ref"], format!("sha256:{}", media[0].hash));
        assert_eq!(pod["photo_ref"], format!("sha256:{}", media[1].hash));
        let mut other = serde_json::json!({"detail": {"picked": {"item": "x"}}});
        reference_in(&mut other, &media);
        assert!(other["detail"]["picked"].get("photo_ref").is_none());
    }
}
