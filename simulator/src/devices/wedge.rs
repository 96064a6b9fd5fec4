//! A keyboard-wedge scanner played to a file or a FIFO: the `input_event`
//! records a USB HID scanner makes the kernel deliver on
//! `/dev/input/event*`, for agents and tests on machines without
//! `/dev/uinput`. The agent reads such a file with `dockline-agent decode
//! --device wedge`; a FIFO (`mkfifo`) stands in for the live device node.
//!
//! The keys come from the agent's own keymaps
//! ([`dockline_agent::devices::wedge::type_scan`], the inverse of the
//! decoder), typed 2 ms apart with a pause between scans.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::Path;

use dockline_agent::devices::wedge::{GsKeys, WedgeOptions, type_scan};

/// Pause between two scans, µs (a person aiming at the next label).
const BETWEEN_SCANS_US: i64 = 400_000;

/// Write `scans` (bytes, GS = 0x1D) as a wedge scanner set up as `options`
/// types them, GS sent as `gs`, to `path` (created or appended to; a FIFO
/// blocks until a reader opens it). Errors name the scan that cannot be
/// typed on the keymap.
pub fn play_wedge(
    path: &Path,
    scans: &[&[u8]],
    options: WedgeOptions,
    gs: GsKeys,
    start_us: i64,
) -> io::Result<()> {
    let mut out = OpenOptions::new().create(true).append(true).open(path)?;
    let mut t = start_us;
    for scan in scans {
        let records = type_scan(options, gs, scan, t).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "scan {:?} has a character the {:?} keymap cannot type",
                    String::from_utf8_lossy(scan),
                    options.keymap
                ),
            )
        })?;
        t += i64::try_from(records.len()).unwrap_or(i64::MAX / 4) * 700 + BETWEEN_SCANS_US;
        for record in &records {
            out.write_all(record)?;
        }
        out.flush()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use dockline_agent::devices::wedge::Keymap;
    use dockline_agent::devices::{Decoded, DecoderOptions, Protocol, StreamDecoder};

    use super::*;

    #[test]
    fn a_played_file_decodes_to_the_scans() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("wedge.evdev");
        let options = WedgeOptions {
            keymap: Keymap::De,
            ..WedgeOptions::default()
        };
        play_wedge(
            &path,
            &[
                b"]C1001061414123456789080209521234543213\x1d3724" as &[u8],
                b"SO-2001",
            ],
            options,
            GsKeys::AltCode,
            0,
        )
        .expect("played");
        let bytes = std::fs::read(&path).expect("read back");
        let mut decoder = StreamDecoder::new(Protocol::Wedge, DecoderOptions::default())
            .with_wedge_options(options);
        let mut items = Vec::new();
        decoder.push(&bytes, &mut items);
        decoder.finish(&mut items);
        assert_eq!(items.len(), 2, "{items:?}");
        assert!(
            matches!(&items[0].decoded, Decoded::Scan { ai: Some(ai), .. } if ai.len() == 3),
            "{items:?}"
        );
        assert!(matches!(&items[1].decoded, Decoded::Scan { data, .. } if data == "SO-2001"));
        assert!(
            play_wedge(&path, &[b"\xe9"], options, GsKeys::AltCode, 0).is_err(),
            "a byte the keymap cannot type is refused"
        );
    }
}
