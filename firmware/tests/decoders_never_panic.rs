//! Property tests for every decoder: arbitrary bytes never panic, and valid
//! inputs built by a formatter decode back to what was formatted.

use dockline_firmware::line::LineAssembler;
use dockline_firmware::link::{FrameDecoder, MAX_FRAME, MAX_PAYLOAD, encode_frame};
use dockline_firmware::nmea::{EpochAssembler, Sentence, checksum, parse_sentence};
use dockline_firmware::scale::{
    Decimal, NciDecoder, ScaleEvent, ToledoDecoder, parse_mtsics_line, parse_nci_response,
    parse_sma_line, parse_toledo_frame,
};
use dockline_firmware::scan::{
    gs1_check_digit, parse_digital_link, parse_element_string, parse_scan,
};
use proptest::prelude::*;

/// Bytes biased towards what the parsers look for, so they get past the first check.
fn protocol_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![
            any::<u8>(),
            prop::sample::select(
                b"0123456789.,*$]CdQe1230 \r\n\x1D\x02\x03SDIGNMkglb?!+-".to_vec()
            ),
        ],
        0..200,
    )
}

fn digits(n: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(0u8..10, n).prop_map(|d| d.iter().map(|x| char::from(b'0' + x)).collect())
}

fn with_check_digit(body: String) -> String {
    let check = gs1_check_digit(body.as_bytes()).expect("digits");
    format!("{body}{check}")
}

fn cset82(max: usize) -> impl Strategy<Value = String> {
    prop::string::string_regex(&format!("[A-Za-z0-9!\"%&'()*+,./:;<=>?_-]{{1,{max}}}"))
        .expect("regex")
}

/// One valid (AI, value) pair.
fn element() -> impl Strategy<Value = (String, String)> {
    prop_oneof![
        digits(13).prop_map(|d| ("01".to_owned(), with_check_digit(d))),
        digits(17).prop_map(|d| ("00".to_owned(), with_check_digit(d))),
        digits(12).prop_map(|d| ("414".to_owned(), with_check_digit(d))),
        cset82(20).prop_map(|v| ("10".to_owned(), v)),
        cset82(20).prop_map(|v| ("21".to_owned(), v)),
        cset82(30).prop_map(|v| ("400".to_owned(), v)),
        (0u8..100, 1u8..13, 0u8..29)
            .prop_map(|(y, m, d)| ("17".to_owned(), format!("{y:02}{m:02}{d:02}"))),
        (0u8..6, digits(6)).prop_map(|(dec, v)| (format!("310{dec}"), v)),
        (0u8..6, digits(6)).prop_map(|(dec, v)| (format!("330{dec}"), v)),
    ]
}

/// Element strings that also pass the message rules: a GTIN first (which the
/// others' `req=` asks for), then at most one AI of each AI or measure family
/// (repeats must agree; `310n` excludes its siblings). `(37)` is left out: it
/// excludes `(01)`.
fn message() -> impl Strategy<Value = Vec<(String, String)>> {
    (digits(13), prop::collection::vec(element(), 0..7)).prop_map(|(gtin, rest)| {
        let mut out = vec![("01".to_owned(), with_check_digit(gtin))];
        for (ai, value) in rest {
            let family = |a: &str| {
                if a.len() == 4 {
                    a[..3].to_owned()
                } else {
                    a.to_owned()
                }
            };
            if out.iter().all(|(seen, _)| family(seen) != family(&ai)) {
                out.push((ai, value));
            }
        }
        out
    })
}

proptest! {
    #[test]
    fn scan_parsers_never_panic(bytes in protocol_bytes()) {
        let _ = parse_scan(&bytes);
        let _ = parse_element_string(&bytes);
        let mut with_id = b"]C1".to_vec();
        with_id.extend_from_slice(&bytes);
        let _ = parse_scan(&with_id);
        if let Ok(text) = std::str::from_utf8(&bytes) {
            let _ = parse_digital_link(&format!("https://id.gs1.org/{text}"));
        }
    }

    #[test]
    fn element_strings_round_trip(elements in message()) {
        let mut data = String::new();
        let mut bracketed = String::new();
        for (i, (ai, value)) in elements.iter().enumerate() {
            data.push_str(ai);
            data.push_str(value);
            // GS after every value; superfluous after fixed-length AIs but legal.
            if i + 1 < elements.len() {
                data.push('\u{1D}');
            }
            bracketed.push_str(&format!("({ai}){value}"));
        }
        let input = format!("]d2{data}");
        let scan = parse_scan(input.as_bytes()).expect("valid GS1 data");
        let message = scan.gs1().expect("GS1 content");
        prop_assert_eq!(message.to_string(), bracketed);
        let mut again = String::new();
        message.write_element_string(&mut again).expect("string");
        let reparsed = parse_element_string(again.as_bytes()).expect("valid again");
        prop_assert_eq!(&reparsed, message);
    }

    #[test]
    fn nmea_never_panics(bytes in protocol_bytes()) {
        let _ = parse_sentence(&bytes);
        // With a correct checksum the field decoders are exercised too.
        let body: Vec<u8> = bytes.iter().copied().filter(|b| *b != b'*' && *b != b'$').collect();
        let mut line = b"$".to_vec();
        line.extend_from_slice(&body);
        line.extend_from_slice(format!("*{:02X}", checksum(&body)).as_bytes());
        let mut asm = EpochAssembler::new();
        if let Ok(sentence) = parse_sentence(&line) {
            let _ = asm.push(&sentence);
        }
        let mut lines = LineAssembler::<82>::new();
        for b in &bytes {
            if let Some(Ok(l)) = lines.push(*b) && let Ok(s) = parse_sentence(l) {
                let _ = asm.push(&s);
            }
        }
        let _ = asm.flush().map(|e| e.position);
    }

    #[test]
    fn nmea_fields_round_trip(
        talker in prop::sample::select(vec!["GP", "GN", "GL", "GA", "GB", "BD", "QZ"]),
        h in 0u8..24, m in 0u8..60, s in 0u8..60,
        lat_deg in 0u16..90, lat_min in 0u32..600_000, north in any::<bool>(),
        lon_deg in 0u16..180, lon_min in 0u32..600_000, east in any::<bool>(),
        sats in 0u8..40,
    ) {
        let body = format!(
            "{talker}GGA,{h:02}{m:02}{s:02}.00,{lat_deg:02}{:02}.{:04},{},{lon_deg:03}{:02}.{:04},{},1,{sats:02},0.9,12.0,M,,M,,",
            lat_min / 10_000, lat_min % 10_000, if north { 'N' } else { 'S' },
            lon_min / 10_000, lon_min % 10_000, if east { 'E' } else { 'W' },
        );
        let line = format!("${body}*{:02X}\r\n", checksum(body.as_bytes()));
        let Ok(Sentence::Gga(gga)) = parse_sentence(line.as_bytes()) else {
            return Err(TestCaseError::fail(format!("not GGA: {line}")));
        };
        let p = gga.position.expect("position");
        let lat = (f64::from(lat_deg) + f64::from(lat_min) / 10_000.0 / 60.0) * if north { 1.0 } else { -1.0 };
        let lon = (f64::from(lon_deg) + f64::from(lon_min) / 10_000.0 / 60.0) * if east { 1.0 } else { -1.0 };
        prop_assert!((p.lat - lat).abs() < 1e-9 && (p.lon - lon).abs() < 1e-9);
        prop_assert_eq!(gga.satellites, Some(sats));
        let t = gga.time.expect("time");
        prop_assert_eq!((t.hour, t.minute, t.second), (h, m, s));
    }

    #[test]
    fn scale_parsers_never_panic(bytes in protocol_bytes()) {
        let _ = parse_mtsics_line(&bytes);
        let _ = parse_sma_line(&bytes);
        let _ = parse_nci_response(&bytes);
        let _ = parse_toledo_frame(&bytes);
        let mut toledo = ToledoDecoder::new(true);
        let mut toledo_plain = ToledoDecoder::new(false);
        let mut nci = NciDecoder::new();
        for b in &bytes {
            let _ = toledo.push(*b);
            let _ = toledo_plain.push(*b);
            let _ = nci.push(*b);
        }
    }

    #[test]
    fn mtsics_weights_round_trip(mantissa in -9_999_999i64..9_999_999, scale in 0u8..5, stable in any::<bool>()) {
        let value = Decimal { mantissa, scale };
        let line = format!("S {} {value:>10} kg\r\n", if stable { 'S' } else { 'D' });
        let Ok(ScaleEvent::Weight(w)) = parse_mtsics_line(line.as_bytes()) else {
            return Err(TestCaseError::fail(line));
        };
        prop_assert_eq!(w.value, value);
        prop_assert_eq!(w.stable, stable);
    }

    #[test]
    fn toledo_frames_round_trip(weight in 0u32..1_000_000, tare in 0u32..1_000_000, code in 2u8..8, motion in any::<bool>(), net in any::<bool>()) {
        let swa = 0x20 | 0x08 | code;
        let swb = 0x20 | 0x10 | u8::from(net) | if motion { 0x08 } else { 0 };
        let mut frame = vec![0x02, swa, swb, 0x20];
        frame.extend_from_slice(format!("{weight:06}{tare:06}\r").as_bytes());
        let sum = frame.iter().fold(0u8, |a, b| a.wrapping_add(b & 0x7F));
        frame.push(sum.wrapping_neg() & 0x7F);
        let mut d = ToledoDecoder::new(true);
        let out: Vec<_> = frame.iter().filter_map(|b| d.push(*b)).collect();
        let [Ok(ScaleEvent::Weight(w))] = out.as_slice() else {
            return Err(TestCaseError::fail(format!("{out:?}")));
        };
        prop_assert_eq!(w.value, Decimal { mantissa: i64::from(weight), scale: code - 2 });
        prop_assert_eq!(w.tare, Some(Decimal { mantissa: i64::from(tare), scale: code - 2 }));
        prop_assert_eq!(w.stable, !motion);
    }

    #[test]
    fn link_decoder_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..1200)) {
        let mut d = FrameDecoder::new();
        for b in &bytes {
            let _ = d.push(*b);
        }
    }

    #[test]
    fn link_frames_round_trip_after_garbage(
        garbage in prop::collection::vec(any::<u8>(), 0..600),
        payloads in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..=MAX_PAYLOAD), 1..4),
    ) {
        let mut stream = garbage;
        for p in &payloads {
            let mut out = [0u8; MAX_FRAME];
            let n = encode_frame(p, &mut out).expect("fits");
            stream.extend_from_slice(&out[..n]);
        }
        let mut d = FrameDecoder::new();
        let mut decoded: Vec<Vec<u8>> = Vec::new();
        for b in &stream {
            if let Some(Ok(payload)) = d.push(*b) {
                decoded.push(payload.to_vec());
            }
        }
        // Garbage may by chance contain a valid frame; the real ones come last, in order.
        prop_assert!(decoded.len() >= payloads.len());
        prop_assert_eq!(&decoded[decoded.len() - payloads.len()..], payloads.as_slice());
    }
}
