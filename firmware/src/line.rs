//! Line framing for text protocols (NMEA 0183, MT-SICS, SMA): bytes in, one
//! complete line out, with a fixed-capacity buffer.
//!
//! A line ends at LF or CR; the empty "line" between CR and LF is skipped, so
//! CR LF, LF-only and CR-only devices all work. A line longer than the buffer
//! is reported once as [`LineOverflow`] and its remaining bytes are dropped up
//! to the next terminator, so one runaway line cannot glue itself to the next.
//! A returned line stays in the buffer until the next byte is pushed.

use heapless::Vec;

/// A line did not fit the buffer and was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "line longer than {capacity} bytes dropped; check the line settings (baud, parity) or the terminator"
)]
pub struct LineOverflow {
    /// The buffer capacity.
    pub capacity: usize,
}

/// Collects bytes into lines of at most `N` bytes (terminator excluded).
#[derive(Debug, Default)]
pub struct LineAssembler<const N: usize> {
    buf: Vec<u8, N>,
    overflowed: bool,
    handed_out: bool,
}

impl<const N: usize> LineAssembler<N> {
    /// An empty assembler.
    pub const fn new() -> Self {
        LineAssembler {
            buf: Vec::new(),
            overflowed: false,
            handed_out: false,
        }
    }

    /// Feed one byte; returns a complete line (without terminator) when `byte`
    /// ends one, or the overflow of the line it ends.
    pub fn push(&mut self, byte: u8) -> Option<Result<&[u8], LineOverflow>> {
        if self.handed_out {
            self.buf.clear();
            self.handed_out = false;
        }
        if byte == b'\n' || byte == b'\r' {
            if self.overflowed {
                self.overflowed = false;
                self.buf.clear();
                return Some(Err(LineOverflow { capacity: N }));
            }
            if self.buf.is_empty() {
                return None;
            }
            self.handed_out = true;
            return Some(Ok(&self.buf));
        }
        if !self.overflowed && self.buf.push(byte).is_err() {
            self.overflowed = true;
        }
        None
    }

    /// Drop any partial line.
    pub fn reset(&mut self) {
        self.buf.clear();
        self.overflowed = false;
        self.handed_out = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines<const N: usize>(
        input: &[u8],
    ) -> std::vec::Vec<Result<std::vec::Vec<u8>, LineOverflow>> {
        let mut a = LineAssembler::<N>::new();
        input
            .iter()
            .filter_map(|b| a.push(*b).map(|r| r.map(<[u8]>::to_vec)))
            .collect()
    }

    #[test]
    fn splits_on_any_terminator() {
        assert_eq!(
            lines::<8>(b"ab\r\ncd\nef\rgh"),
            [Ok(b"ab".to_vec()), Ok(b"cd".to_vec()), Ok(b"ef".to_vec())]
        );
    }

    #[test]
    fn overflow_drops_one_line_only() {
        assert_eq!(
            lines::<4>(b"abcdefg\r\nxy\n"),
            [Err(LineOverflow { capacity: 4 }), Ok(b"xy".to_vec())]
        );
    }
}
