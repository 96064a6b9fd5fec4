//! no_std link probe for dockline-firmware: a static library that calls every
//! parser, built with `panic = "abort"` and no allocator. If firmware ever
//! pulls in `std`, `alloc` or an unwinding panic, this build fails.

#![no_std]
#![deny(missing_docs)]

use core::hint::black_box;
use core::panic::PanicInfo;

use dockline_firmware::line::LineAssembler;
use dockline_firmware::link::{FrameDecoder, MAX_FRAME, encode_frame};
use dockline_firmware::nmea::{EpochAssembler, MAX_LINE, parse_sentence};
use dockline_firmware::scale::{NciDecoder, ToledoDecoder, parse_mtsics_line, parse_sma_line};
use dockline_firmware::scan::parse_scan;

/// Run each parser on a known-good input; bit `n` set = parser `n` succeeded
/// (0 scan, 1 NMEA, 2 MT-SICS, 3 SMA, 4 Toledo, 5 NCI, 6 link round trip).
// `no_mangle` keeps the symbol in the static library for a C caller; it is the
// probe's only use of an `unsafe` attribute and firmware itself stays unsafe-free.
#[allow(unsafe_code)]
#[unsafe(no_mangle)]
pub extern "C" fn dockline_firmware_probe() -> u32 {
    let mut passed = 0u32;
    if parse_scan(black_box(b"]C10109521234543213\x1D10LOT42")).is_ok() {
        passed |= 1 << 0;
    }
    let mut lines = LineAssembler::<MAX_LINE>::new();
    let mut epochs = EpochAssembler::new();
    for byte in black_box(b"$GNGLL,4404.14066,N,12118.85481,W,171925.00,A,A*66\r\n") {
        if let Some(Ok(line)) = lines.push(*byte)
            && let Ok(sentence) = parse_sentence(line)
        {
            let _ = epochs.push(&sentence);
        }
    }
    if epochs.flush().and_then(|e| e.position).is_some() {
        passed |= 1 << 1;
    }
    if parse_mtsics_line(black_box(b"S S     12.345 kg")).is_ok() {
        passed |= 1 << 2;
    }
    if parse_sma_line(black_box(b" 1G       5.025lb ")).is_ok() {
        passed |= 1 << 3;
    }
    let mut toledo = ToledoDecoder::new(true);
    for byte in black_box(b"\x02,0 001234000000\r+") {
        if let Some(Ok(_)) = toledo.push(*byte) {
            passed |= 1 << 4;
        }
    }
    let mut nci = NciDecoder::new();
    for byte in black_box(b"\n0012.34LB\r\n00\r\x03") {
        if let Some(Ok(_)) = nci.push(*byte) {
            passed |= 1 << 5;
        }
    }
    let mut frame = [0u8; MAX_FRAME];
    if let Ok(len) = encode_frame(black_box(b"reading"), &mut frame) {
        let mut decoder = FrameDecoder::new();
        for byte in frame.iter().take(len) {
            if let Some(Ok(payload)) = decoder.push(*byte)
                && payload == b"reading"
            {
                passed |= 1 << 6;
            }
        }
    }
    passed
}

#[panic_handler]
fn panic(_info: &PanicInfo<'_>) -> ! {
    loop {
        core::hint::spin_loop();
    }
}
