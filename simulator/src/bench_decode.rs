//! Decode throughput of the agent's device decoders, on one core: MB of
//! capture per second through [`StreamDecoder`] for NMEA, GS1 scans and
//! MT-SICS, each beside the raw limit measured in the same run on the same
//! bytes, splitting them into lines (the least any line decoder must do).
//!
//! Captures are built in memory from realistic device output (a u-blox
//! cycle, GS1-128 and DataMatrix scans, MT-SICS answers); the best of
//! several passes counts, so a busy neighbour on a shared machine makes a
//! figure low, never high.

use std::hint::black_box;
use std::time::Instant;

use anyhow::{Result, anyhow};
use dockline_agent::devices::{DecoderOptions, Protocol, StreamDecoder};

use crate::bench::Figure;

const NMEA_CYCLE: &str = "\
$GNRMC,092750.00,A,5321.6802,N,00630.3372,W,0.02,31.66,140325,,,A*63\r\n\
$GNVTG,31.66,T,,M,0.02,N,0.04,K,A*17\r\n\
$GNGGA,092750.00,5321.6802,N,00630.3372,W,1,08,1.03,61.7,M,55.2,M,,*68\r\n\
$GNGSA,A,3,10,07,05,02,29,04,08,13,,,,,1.72,1.03,1.38*14\r\n\
$GPGSV,3,1,11,10,63,137,17,07,61,098,15,05,59,290,20,08,54,157,30*70\r\n\
$GNGLL,5321.6802,N,00630.3372,W,092750.00,A,A*65\r\n";

const SCANS: &[&[u8]] = &[
    b"]C10010614141234567890802095212345432133724\x1d3103001250400PO-4711\x1d1726123110LOT42\r\n",
    b"]d201095212345432131726123110ABC123\x1d21SN0001\r\n",
    b"]E05901234123457\r\n",
    b"]Q1https://id.gs1.org/01/09521234543213/10/ABC123?17=261231\r\n",
];

const MTSICS: &[&[u8]] = &[
    b"S S     12.345 kg\r\n",
    b"S D     -0.015 kg\r\n",
    b"S I\r\n",
    b"T S      0.850 kg\r\n",
];

fn capture(parts: &[&[u8]], bytes: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes + 256);
    while out.len() < bytes {
        for p in parts {
            out.extend_from_slice(p);
        }
    }
    out
}

/// MB/s of the best of `passes` runs of `work` over `bytes` bytes.
fn best_mb_s(bytes: usize, passes: usize, mut work: impl FnMut() -> usize) -> Result<f64> {
    let mut best = f64::INFINITY;
    let mut produced = 0;
    for _ in 0..passes {
        let started = Instant::now();
        produced = black_box(work());
        best = best.min(started.elapsed().as_secs_f64());
    }
    if produced == 0 || best <= 0.0 {
        return Err(anyhow!(
            "the decoder produced nothing; the capture is wrong"
        ));
    }
    Ok(bytes as f64 / best / 1e6)
}

fn figure(name: &str, protocol: Protocol, data: &[u8], passes: usize) -> Result<Figure> {
    let decoded = best_mb_s(data.len(), passes, || {
        let mut decoder = StreamDecoder::new(protocol, DecoderOptions::default());
        let mut items = Vec::new();
        let mut count = 0;
        // Reads of 4 KiB, as a serial port or a capture file hands them over.
        for chunk in data.chunks(4096) {
            decoder.push(chunk, &mut items);
            count += items.len();
            items.clear();
        }
        decoder.finish(&mut items);
        count + items.len()
    })?;
    let split = best_mb_s(data.len(), passes, || {
        data.split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .count()
    })?;
    Ok(Figure {
        name: name.into(),
        value: decoded,
        unit: "MB/s".into(),
        baseline: Some(split),
        ratio: Some(decoded / split),
        target: "none set; raw line splitting of the same bytes as the limit".into(),
        detail: format!(
            "{:.1} MB capture through StreamDecoder({protocol}) in 4 KiB reads, one core, best of {passes}",
            data.len() as f64 / 1e6
        ),
    })
}

/// The decode figures: `decode_nmea`, `decode_gs1`, `decode_mtsics`.
pub fn figures(quick: bool) -> Result<Vec<Figure>> {
    let (bytes, passes) = if quick {
        (4_000_000, 3)
    } else {
        (32_000_000, 5)
    };
    Ok(vec![
        figure(
            "decode_nmea",
            Protocol::Nmea,
            &capture(&[NMEA_CYCLE.as_bytes()], bytes),
            passes,
        )?,
        figure("decode_gs1", Protocol::Scan, &capture(SCANS, bytes), passes)?,
        figure(
            "decode_mtsics",
            Protocol::Mtsics,
            &capture(MTSICS, bytes),
            passes,
        )?,
    ])
}
