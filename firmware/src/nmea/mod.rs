//! NMEA 0183 sentences from GNSS receivers, and the epoch assembler that turns
//! one fix cycle into one position.
//!
//! [`parse_sentence`] takes one line (`$GNRMC,…*7B`, terminator optional),
//! verifies the checksum and decodes RMC, GGA, GLL, VTG, GSA, GNS and ZDA
//! from any talker (`GP`, `GN`, `GL`, `GA`, `GB`, `BD`, `QZ`, …). It is
//! lenient where real receivers differ: empty fields are "no data", missing
//! trailing fields are empty, extra trailing fields (NMEA 4.1 nav status,
//! 4.11 system IDs) are ignored. Proprietary sentences (`$P…`) and other
//! types (GSV, TXT, …) are recognised and skipped, never errors.
//! [`EpochAssembler`] then merges the sentences of one cycle.

mod epoch;
mod sentence;

pub use epoch::{Epoch, EpochAssembler};
pub use sentence::{
    Date, FaaMode, Gga, Gll, Gns, Gsa, Position, Rmc, Sentence, SentenceKind, Talker, Time, Vtg,
    Zda,
};

/// Longest NMEA line kept by a [`LineAssembler`](crate::line::LineAssembler)
/// for NMEA: the standard says 82 bytes, but NMEA 4.11 receivers (GSV with
/// signal IDs, long proprietary sentences) and several chipsets exceed it;
/// gpsd reads sentences of up to 255 bytes.
pub const MAX_LINE: usize = 256;

/// What to do with one line of a receiver's output before parsing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineClass<'a> {
    /// A sentence, starting at its last `$` or `!`: bytes before it were a
    /// sentence cut off by a doubled start character or line noise, which
    /// gpsd also drops silently.
    Sentence(&'a [u8]),
    /// A comment (`#…`, as in gpsd's logs) or blank line: skip silently.
    Skip,
}

/// Classify one line: comments and blanks are skipped, a sentence is
/// resynchronised at its last start character.
pub fn classify_line(line: &[u8]) -> LineClass<'_> {
    let line = line.trim_ascii();
    if line.is_empty() || line.first() == Some(&b'#') {
        return LineClass::Skip;
    }
    match line.iter().rposition(|b| *b == b'$' || *b == b'!') {
        Some(start) => LineClass::Sentence(line.get(start..).unwrap_or_default()),
        None => LineClass::Sentence(line),
    }
}

/// Why a line is not a usable NMEA sentence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NmeaError {
    /// The line does not start with `$` or `!`.
    #[error("NMEA line does not start with '$' or '!'")]
    MissingStart,
    /// No `*hh` checksum at the end.
    #[error("NMEA sentence has no '*hh' checksum; the receiver output may be truncated")]
    MissingChecksum,
    /// The checksum does not match the sentence.
    #[error(
        "NMEA checksum is {found:02X}, computed {expected:02X}; line noise or a wrong baud rate"
    )]
    BadChecksum {
        /// XOR of the bytes between `$` and `*`.
        expected: u8,
        /// The checksum the sentence carries.
        found: u8,
    },
    /// The address field is not a talker + sentence type.
    #[error("NMEA address field is not two talker letters and a three-letter sentence type")]
    BadAddress,
    /// A field holds something its sentence does not allow.
    #[error("{kind:?} field {index} is not {expected}")]
    BadField {
        /// The sentence type.
        kind: SentenceKind,
        /// Zero-based index of the field after the address.
        index: u8,
        /// What the field should hold.
        expected: &'static str,
    },
}

/// The NMEA checksum: XOR of all bytes.
pub fn checksum(body: &[u8]) -> u8 {
    body.iter().fold(0, |acc, b| acc ^ b)
}

/// Parse one NMEA 0183 sentence (trailing CR/LF and spaces allowed).
pub fn parse_sentence(line: &[u8]) -> Result<Sentence, NmeaError> {
    let line = line.trim_ascii();
    let body = match line {
        [b'$' | b'!', body @ ..] => body,
        _ => return Err(NmeaError::MissingStart),
    };
    let star = body
        .iter()
        .rposition(|b| *b == b'*')
        .ok_or(NmeaError::MissingChecksum)?;
    let (payload, tail) = body.split_at(star);
    let found = match tail {
        [b'*', hi, lo] => hex(*hi)
            .zip(hex(*lo))
            .map(|(h, l)| h << 4 | l)
            .ok_or(NmeaError::MissingChecksum)?,
        _ => return Err(NmeaError::MissingChecksum),
    };
    let expected = checksum(payload);
    if expected != found {
        return Err(NmeaError::BadChecksum { expected, found });
    }
    let payload = core::str::from_utf8(payload).map_err(|_| NmeaError::BadAddress)?;
    sentence::decode(payload)
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'A'..=b'F' => Some(b - b'A' + 10),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verified_checksums_from_real_receivers() {
        for line in [
            "$GNRMC,001031.00,A,4404.13993,N,12118.86023,W,0.146,,100117,,,A*7B",
            "$GNGGA,171926.00,4404.14063,N,12118.85478,W,1,12,0.91,1147.2,M,-21.3,M,,*44",
            "$GNVTG,,T,,M,0.117,N,0.216,K,A*3F",
            "$GNGSA,A,3,01,11,31,14,22,32,04,25,03,,,,1.56,0.91,1.27*15",
            "$GPGSV,4,4,13,32,76,331,31*48",
            "$GNGLL,4404.14066,N,12118.85481,W,171925.00,A,A*66",
            "$PUBX,40,GLL,0,0,0,0*5C",
        ] {
            assert!(parse_sentence(line.as_bytes()).is_ok(), "{line}");
        }
    }

    #[test]
    fn doubled_starts_and_comments_resynchronise() {
        let line = b"$GNGGA,1719$$GNVTG,,T,,M,0.117,N,0.216,K,A*3F";
        match classify_line(line) {
            LineClass::Sentence(s) => assert!(parse_sentence(s).is_ok()),
            LineClass::Skip => panic!("a sentence"),
        }
        assert_eq!(classify_line(b"# gpsd log comment"), LineClass::Skip);
        assert_eq!(classify_line(b"   "), LineClass::Skip);
    }

    #[test]
    fn non_standard_addresses_are_other_sentences() {
        let body = b"STI,005,1,2";
        let line = std::format!("${}*{:02X}", "STI,005,1,2", checksum(body));
        assert!(matches!(
            parse_sentence(line.as_bytes()),
            Ok(Sentence::Unsupported { .. })
        ));
    }

    #[test]
    fn rejects_bad_frames() {
        assert_eq!(
            parse_sentence(b"$GNVTG,,T,,M,0.117,N,0.216,K,A*3E"),
            Err(NmeaError::BadChecksum {
                expected: 0x3F,
                found: 0x3E
            })
        );
        assert_eq!(parse_sentence(b"GNVTG*00"), Err(NmeaError::MissingStart));
        assert_eq!(
            parse_sentence(b"$GNVTG,,T"),
            Err(NmeaError::MissingChecksum)
        );
    }
}
