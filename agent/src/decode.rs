//! `dockline-agent decode`: a raw device capture in, one JSON object per
//! reading out, to check a device (or a capture from the field) without
//! running the agent.
//!
//! The bytes go through the same [`StreamDecoder`] as a live serial source, so
//! what decodes here decodes on the port. Rejected frames print as
//! `{"kind":"error","offset":…,"reason":…}` and decoding goes on after them.

use std::io::{self, Read, Write};

use crate::devices::{DecoderOptions, Item, Protocol, StreamDecoder};

/// What a decode run found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DecodeSummary {
    /// Readings printed (scans, positions, weights).
    pub readings: u64,
    /// Error lines printed (rejected frames and scale error states).
    pub errors: u64,
    /// NMEA proprietary and unknown sentences skipped (not errors).
    pub skipped: u64,
}

/// Decodes `input` to JSON lines on `output` until `input` ends.
pub fn decode_stream(
    mut input: impl Read,
    mut output: impl Write,
    protocol: Protocol,
    options: DecoderOptions,
) -> io::Result<DecodeSummary> {
    let mut decoder = StreamDecoder::new(protocol, options);
    let mut summary = DecodeSummary::default();
    let mut buf = vec![0u8; 64 * 1024];
    let mut items = Vec::new();
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        decoder.push(buf.get(..n).unwrap_or_default(), &mut items);
        write_items(&mut output, &mut items, &mut summary)?;
    }
    decoder.finish(&mut items);
    write_items(&mut output, &mut items, &mut summary)?;
    summary.skipped = decoder.skipped_sentences();
    output.flush()?;
    Ok(summary)
}

fn write_items(
    output: &mut impl Write,
    items: &mut Vec<Item>,
    summary: &mut DecodeSummary,
) -> io::Result<()> {
    for item in items.drain(..) {
        if item.is_error() {
            summary.errors += 1;
        } else {
            summary.readings += 1;
        }
        writeln!(output, "{}", item.to_json_line())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nmea_debris_is_skipped_silently_and_counted() {
        let long_gsv = format!("$GPGSV,4,1,16{}*00", ",01,40,083,46".repeat(18));
        let capture = format!(
            "# a gpsd log comment\r\n\
             $GNRMC,0927$$GNRMC,092750.00,A,5321.6802,N,00630.3372,W,0.02,31.66,140325,,,A*63\r\n\
             $PUBX,40,GLL,0,0,0,0*5C\r\n\
             {long_gsv}\r\n\
             $GNGGA,092750.00,5321.6802,N,00630.3372,W,1,08,1.03,61.7,M,55.2,M,,*68\r\n"
        );
        let mut out = Vec::new();
        let summary = decode_stream(
            capture.as_bytes(),
            &mut out,
            Protocol::Nmea,
            DecoderOptions::default(),
        )
        .expect("in memory");
        let text = String::from_utf8(out).expect("utf-8");
        // The 250-byte GSV fits the line buffer (128 did not); its made-up checksum is the
        // one error, the PUBX is skipped, the comment and the doubled '$' are
        // silent.
        assert_eq!(summary.readings, 1, "{text}");
        assert_eq!(summary.errors, 1, "{text}");
        assert_eq!(summary.skipped, 1);
        assert!(text.contains(r#""mode":3"#), "{text}");
    }

    #[test]
    fn prints_one_line_per_item() {
        let mut out = Vec::new();
        let summary = decode_stream(
            &b"S S      12.34 kg\r\nS X\r\n"[..],
            &mut out,
            Protocol::Mtsics,
            DecoderOptions::default(),
        )
        .expect("in memory");
        assert_eq!(
            summary,
            DecodeSummary {
                readings: 1,
                errors: 1,
                skipped: 0
            }
        );
        let text = String::from_utf8(out).expect("utf-8");
        assert_eq!(text.lines().count(), 2, "{text}");
    }
}
