//! `dockline-agent decode` on device captures: the built binary, real-looking
//! bytes, one JSON object per reading, errors with offsets, decoding going on
//! after them.

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::{Value, json};

/// Runs `dockline-agent decode --device <device> <extra…>` with `input` on
/// stdin; returns the JSON lines and the exit code.
fn decode(device: &str, extra: &[&str], input: &[u8]) -> (Vec<Value>, i32) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_dockline-agent"))
        .args(["decode", "--device", device])
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("binary runs");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(input).expect("write capture");
    drop(stdin);
    let out = child.wait_with_output().expect("binary ends");
    let text = String::from_utf8(out.stdout).expect("stdout is UTF-8");
    let lines = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    (lines, out.status.code().expect("exit code"))
}

fn offset_of(haystack: &[u8], needle: &[u8]) -> u64 {
    haystack
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("needle in capture") as u64
}

#[test]
fn scanner_gs1_plain_and_digital_link() {
    // FNC1 arrives as GS (0x1D); every scan ends with the CR LF suffix.
    let gs1_128: &[u8] =
        b"]C10010614141234567890802095212345432133724\x1d3103001250400PO-4711\x1d1726123110LOT42\r\n";
    let bad: &[u8] = b"]C10109521234543214\r\n";
    let capture = [
        gs1_128,
        bad,
        b"]E05901234123457\r\n",
        b"]Q1https://id.gs1.org/01/09521234543213/10/ABC123?17=261231\r\n",
        b"]d201095212345432131726123110ABC123\x1d21SN0001\r\n",
    ]
    .concat();
    let (lines, code) = decode("scan", &[], &capture);
    assert_eq!(code, 1, "a rejected scan makes the exit code 1");
    assert_eq!(lines.len(), 5, "{lines:#?}");
    assert_eq!(lines[0]["kind"], "scan");
    assert_eq!(lines[0]["symbology"], "]C1");
    assert_eq!(
        lines[0]["data"],
        "0010614141234567890802095212345432133724\u{1d}3103001250400PO-4711\u{1d}1726123110LOT42"
    );
    assert_eq!(
        lines[0]["ai"],
        json!([
            ["00", "106141412345678908"],
            ["02", "09521234543213"],
            ["37", "24"],
            ["3103", "001250"],
            ["400", "PO-4711"],
            ["17", "261231"],
            ["10", "LOT42"]
        ])
    );
    assert_eq!(lines[1]["kind"], "error");
    assert_eq!(lines[1]["offset"], offset_of(&capture, bad));
    let reason = lines[1]["reason"].as_str().expect("reason");
    assert!(reason.contains("check digit"), "{reason}");
    assert_eq!(
        lines[2],
        json!({"kind": "scan", "symbology": "]E0", "data": "5901234123457", "gtin": "5901234123457"})
    );
    assert_eq!(lines[3]["symbology"], "]Q1");
    assert_eq!(
        lines[3]["ai"],
        json!([["01", "09521234543213"], ["10", "ABC123"], ["17", "261231"]])
    );
    assert_eq!(
        lines[4]["ai"],
        json!([
            ["01", "09521234543213"],
            ["17", "261231"],
            ["10", "ABC123"],
            ["21", "SN0001"]
        ])
    );
}

const UBLOX: &str = "\
$GNRMC,092749.00,V,,,,,,,140325,,,N*63\r\n\
$GNGGA,092749.00,,,,,0,00,99.99,,,,,,*79\r\n\
$GNRMC,092750.00,A,5321.6802,N,00630.3372,W,0.02,31.66,140325,,,A*63\r\n\
$GNVTG,31.66,T,,M,0.02,N,0.04,K,A*17\r\n\
$GNGGA,092750.00,5321.6802,N,00630.3372,W,1,08,1.03,61.7,M,55.2,M,,*68\r\n\
$GNGSA,A,3,10,07,05,02,29,04,08,13,,,,,1.72,1.03,1.38*14\r\n\
$GPGSV,3,1,11,10,63,137,17,07,61,098,15,05,59,290,20,08,54,157,30*70\r\n\
$GNGSV,3,2,11,29,3\r\n\
$GNGLL,5321.6802,N,00630.3372,W,092750.00,A,A*65\r\n\
$GPTXT,01,01,02,u-blox ag - www.u-blox.com*50\r\n\
$GNRMC,092751.00,A,5321.6803,N,00630.3374,W,0.05,31.66,140325,,,A*62\r\n\
$GNVTG,31.66,T,,M,0.05,N,0.09,K,A*1D\r\n\
$GNGGA,092751.00,5321.6803,N,00630.3374,W,1,08,1.03,61.8,M,55.2,M,,*61\r\n\
$GNGSA,A,3,10,07,05,02,29,04,08,13,,,,,1.72,1.03,1.38*15\r\n\
$GNGLL,5321.6803,N,00630.3374,W,092751.00,A,A*63\r\n";

#[test]
fn gnss_cycles_become_positions() {
    let (lines, code) = decode("nmea", &[], UBLOX.as_bytes());
    assert_eq!(code, 1);
    assert_eq!(lines.len(), 4, "{lines:#?}");
    // The cut-off GSV line (no checksum) is rejected where it starts.
    assert_eq!(lines[0]["kind"], "error");
    assert_eq!(
        lines[0]["offset"],
        offset_of(UBLOX.as_bytes(), b"$GNGSV,3,2")
    );
    // The 09:27:49 cycle had no fix yet: no position for it.
    assert_eq!(
        lines[1],
        json!({
            "kind": "position",
            "time": "09:27:50.000",
            "date": "2025-03-14",
            "lat": 53.361336667,
            "lon": -6.50562,
            "speed_mps": 0.01,
            "course_deg": 31.66,
            "mode": 3,
            "sats": 8,
            "hdop": 1.03
        })
    );
    // A GSA with a bad checksum (…*15) is an error; the cycle still decodes.
    assert_eq!(lines[2]["kind"], "error");
    let reason = lines[2]["reason"].as_str().expect("reason");
    assert!(reason.contains("checksum"), "{reason}");
    assert_eq!(lines[3]["time"], "09:27:51.000");
    assert_eq!(lines[3]["speed_mps"], 0.026);
}

#[test]
fn gnss_from_a_file_argument() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ublox.nmea");
    // LF-only line ends, as some receivers send them.
    std::fs::write(&path, UBLOX.replace("\r\n", "\n")).expect("write capture");
    let out = Command::new(env!("CARGO_BIN_EXE_dockline-agent"))
        .args(["decode", "--device", "nmea"])
        .arg(&path)
        .output()
        .expect("binary runs");
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let kinds: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("json")["kind"].clone())
        .collect();
    assert_eq!(kinds, ["error", "position", "error", "position"]);
    let missing = Command::new(env!("CARGO_BIN_EXE_dockline-agent"))
        .args(["decode", "--device", "nmea"])
        .arg(dir.path().join("nope.nmea"))
        .output()
        .expect("binary runs");
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("nope.nmea"));
}

#[test]
fn mtsics_weights_states_and_garbage() {
    let capture =
        b"S S      12.34 kg\r\nS D      12.36 kg\r\nS I\r\nS +\r\nS X 1\r\nS S     -0.015 kg\r\n";
    let (lines, code) = decode("mtsics", &[], capture);
    assert_eq!(code, 1);
    assert_eq!(lines.len(), 6, "{lines:#?}");
    assert_eq!(
        lines[0],
        json!({"kind": "weight", "value": 12.34, "unit": "kg", "stable": true, "basis": "net"})
    );
    assert_eq!(lines[1]["stable"], false);
    assert_eq!(lines[1]["value"], 12.36);
    assert_eq!(lines[2]["kind"], "error");
    assert_eq!(lines[2]["state"], "busy");
    assert_eq!(lines[2]["offset"], offset_of(capture, b"S I"));
    assert_eq!(lines[3]["state"], "overload");
    assert_eq!(lines[3]["offset"], offset_of(capture, b"S +"));
    assert_eq!(lines[4]["kind"], "error");
    assert_eq!(lines[4]["offset"], offset_of(capture, b"S X 1"));
    let reason = lines[4]["reason"].as_str().expect("reason");
    assert!(
        reason.contains("S X 1") && reason.contains("interface mode"),
        "{reason}"
    );
    assert_eq!(lines[5]["value"], -0.015);
}

/// The manual's worked Toledo frame: gross 12.34 kg, stable, tare 0.
const TOLEDO: [u8; 17] = [
    0x02, 0x2C, 0x30, 0x20, 0x30, 0x30, 0x31, 0x32, 0x33, 0x34, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30,
    0x0D,
];

#[test]
fn toledo_continuous_stream() {
    // Joined mid-frame, then a good frame, a net/negative/motion frame sent
    // 7E1 but read 8N1 (parity in bit 7), and a short frame.
    let mut capture = TOLEDO[9..].to_vec();
    capture.extend(TOLEDO);
    let mut motion = TOLEDO;
    motion[2] = b';';
    capture.extend(motion.iter().map(|b| b | 0x80));
    let short_at = capture.len() as u64;
    capture.extend([0x02, 0x2C, 0x30, 0x20, 0x31, 0x32, 0x0D]);
    capture.extend(TOLEDO);
    let (lines, code) = decode("toledo", &[], &capture);
    assert_eq!(code, 1);
    assert_eq!(lines.len(), 4, "{lines:#?}");
    assert_eq!(
        lines[0],
        json!({"kind": "weight", "value": 12.34, "unit": "kg", "stable": true, "basis": "gross", "tare": 0.0})
    );
    assert_eq!(lines[1]["value"], -12.34);
    assert_eq!(lines[1]["stable"], false);
    assert_eq!(lines[1]["basis"], "net");
    assert_eq!(lines[2]["kind"], "error");
    assert_eq!(lines[2]["offset"], short_at);
    assert_eq!(lines[3]["kind"], "weight");
}

#[test]
fn toledo_checksums_when_asked() {
    let mut good = TOLEDO.to_vec();
    good.push(0x2B);
    let mut bad = good.clone();
    bad[17] = 0x2C;
    let capture = [good.clone(), bad, good].concat();
    let (lines, code) = decode("toledo", &["--checksum"], &capture);
    assert_eq!(code, 1);
    let kinds: Vec<&str> = lines
        .iter()
        .map(|l| l["kind"].as_str().expect("kind"))
        .collect();
    assert_eq!(kinds, ["weight", "error", "weight"]);
    assert_eq!(lines[1]["offset"], 18);
    assert!(
        lines[1]["reason"]
            .as_str()
            .expect("reason")
            .contains("checksum")
    );
    // The same capture without --checksum: the byte is skipped, all decode.
    let (lines, code) = decode("toledo", &[], &capture);
    assert_eq!((lines.len(), code), (3, 0));
}

#[test]
fn sma_responses() {
    let capture = b"\n 1G       5.025lb \r\n 1NM     12.340kg \r\nO1G    ------kg \r\nX1G 1.0kg\r\nZ1G       0.000kg \r";
    let (lines, code) = decode("sma", &[], capture);
    assert_eq!(code, 1);
    assert_eq!(lines.len(), 5, "{lines:#?}");
    assert_eq!(
        lines[0],
        json!({"kind": "weight", "value": 5.025, "unit": "lb", "stable": true, "basis": "gross"})
    );
    assert_eq!(
        lines[1],
        json!({"kind": "weight", "value": 12.34, "unit": "kg", "stable": false, "basis": "net"})
    );
    assert_eq!(lines[2]["state"], "overload");
    assert_eq!(lines[3]["kind"], "error");
    assert_eq!(lines[3]["offset"], offset_of(capture, b"X1G"));
    assert_eq!(lines[4]["value"], 0.0);
}

#[test]
fn clean_capture_exits_zero_and_usage_names_the_devices() {
    let (lines, code) = decode("mtsics", &[], b"S S      12.34 kg\r\n");
    assert_eq!((lines.len(), code), (1, 0));
    let out = Command::new(env!("CARGO_BIN_EXE_dockline-agent"))
        .args(["decode", "--device", "fax"])
        .output()
        .expect("binary runs");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("mtsics") && err.contains("toledo"), "{err}");
}

#[test]
fn scanner_refusals_name_their_rule() {
    let capture = [
        &b"]C1400ABC\x1d400AB\r\n"[..],
        b"]C10109521234543213\x1d3724\r\n",
        b"]E05901234123458\r\n",
        b"]XX123\r\n",
        b"]C1400ABC\x1d400ABC\r\n",
        b"]E004252614\r\n",
    ]
    .concat();
    let (lines, code) = decode("scan", &[], &capture);
    assert_eq!(code, 1);
    assert_eq!(lines.len(), 6, "{lines:#?}");
    for (line, rule) in lines
        .iter()
        .zip(["repeat", "ex", "retail_csum", "aim_unknown"])
    {
        assert_eq!(line["kind"], "error", "{line}");
        let reason = line["reason"].as_str().expect("reason");
        assert!(reason.contains(&format!("(rule {rule})")), "{reason}");
    }
    // The same AI twice with the same value is one fact: a list keeps both.
    assert_eq!(lines[4]["ai"], json!([["400", "ABC"], ["400", "ABC"]]));
    // UPC-E sent unexpanded: its GTIN is the UPC-A expansion.
    assert_eq!(lines[5]["gtin"], "042100005264");
}

/// A keyboard-wedge recording: `input_event` records as the kernel delivers
/// them (MSC_SCAN, key, SYN), GS as Ctrl+], Enter as suffix, one autorepeat.
fn wedge_recording() -> Vec<u8> {
    use dockline_agent::devices::wedge::{GsKeys, WedgeOptions, input_event, type_scan};
    let mut bytes = Vec::new();
    let first = type_scan(
        WedgeOptions::default(),
        GsKeys::CtrlBracket,
        b"]C10109521234543213\x1d10LOT42\x1d21SN7",
        1_700_000_000_000_000,
    )
    .expect("typeable on US");
    bytes.extend(first.iter().flatten());
    // A held key autorepeats (value 2): "HH" then Enter.
    for (kind, code, value) in [
        (1, 35, 1),
        (0, 0, 0),
        (1, 35, 2),
        (0, 0, 0),
        (1, 35, 0),
        (0, 0, 0),
    ] {
        bytes.extend(input_event(1_700_000_001, 0, kind, code, value));
    }
    for (kind, code, value) in [(1, 28, 1), (0, 0, 0), (1, 28, 0), (0, 0, 0)] {
        bytes.extend(input_event(1_700_000_001, 10, kind, code, value));
    }
    bytes
}

#[test]
fn wedge_recordings_decode_like_serial_scans() {
    let capture = wedge_recording();
    let (lines, code) = decode("wedge", &[], &capture);
    println!("{} input_event bytes decode to:", capture.len());
    for line in &lines {
        println!("{line}");
    }
    assert_eq!(code, 0, "{lines:#?}");
    assert_eq!(lines.len(), 2, "{lines:#?}");
    assert_eq!(lines[0]["symbology"], "]C1");
    assert_eq!(
        lines[0]["ai"],
        json!([["01", "09521234543213"], ["10", "LOT42"], ["21", "SN7"]])
    );
    assert_eq!(lines[1]["data"], "hh");
}

#[test]
fn wedge_on_a_german_scanner_with_a_substitute_for_gs() {
    use dockline_agent::devices::wedge::{GsKeys, Keymap, WedgeOptions, type_scan};
    use dockline_agent::devices::{Decoded, DecoderOptions, Protocol, StreamDecoder};
    let options = WedgeOptions {
        keymap: Keymap::De,
        gs_substitute: Some('#'),
        ..WedgeOptions::default()
    };
    let records = type_scan(
        options,
        GsKeys::Substitute,
        b"]d20109521234543213\x1d10ZY-1",
        0,
    )
    .expect("typeable on DE");
    let bytes: Vec<u8> = records.iter().flatten().copied().collect();
    let mut decoder =
        StreamDecoder::new(Protocol::Wedge, DecoderOptions::default()).with_wedge_options(options);
    let mut items = Vec::new();
    decoder.push(&bytes, &mut items);
    decoder.finish(&mut items);
    let Decoded::Scan { ai, .. } = &items[0].decoded else {
        panic!("{items:?}");
    };
    assert_eq!(
        ai.as_deref(),
        Some(
            &[
                ("01".into(), "09521234543213".into()),
                ("10".into(), "ZY-1".into())
            ][..]
        )
    );
    // The same keys read with a US keymap: Z and Y swap, and the scan breaks.
    let mut us = StreamDecoder::new(Protocol::Wedge, DecoderOptions::default());
    let mut items = Vec::new();
    us.push(&bytes, &mut items);
    us.finish(&mut items);
    assert!(
        items[0].is_error()
            || !matches!(&items[0].decoded, Decoded::Scan { ai: Some(a), .. } if a.len() == 2)
    );
}
