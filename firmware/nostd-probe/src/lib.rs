//! no_std link probe for dockline-firmware: a static library that calls every
//! parser, built with `panic = "abort"` and no allocator. If firmware ever
//! pulls in `std`, `alloc` or an unwinding panic, this build fails.

#![no_std]
#![deny(missing_docs)]

use core::hint::black_box;
use core::panic::PanicInfo;

use dockline_firmware::bridge::{Bridge, BridgeMessage, Clock};
use dockline_firmware::line::LineAssembler;
use dockline_firmware::link::{FrameDecoder, MAX_FRAME, encode_frame};
use dockline_firmware::loadcell::{
    Calibration, Hx711, LoadCell, MedianFilter, MovingAverage, Nau7802, Nau7802Config,
    StabilityDetector, Weigher,
};
use dockline_firmware::nmea::{EpochAssembler, MAX_LINE, parse_sentence};
use dockline_firmware::scale::{NciDecoder, ToledoDecoder, parse_mtsics_line, parse_sma_line};
use dockline_firmware::scan::parse_scan;

/// Run each parser on a known-good input; bit `n` set = parser `n` succeeded
/// (0 scan, 1 NMEA, 2 MT-SICS, 3 SMA, 4 Toledo, 5 NCI, 6 link round trip,
/// 7 HX711 read, 8 NAU7802 init + bridge frame round trip).
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
    if let Ok(mut hx) = Hx711::new(Pin, Pin, NoDelay)
        && hx.try_read() == Ok(Some(0))
    {
        passed |= 1 << 7;
    }
    if bridge_round_trip() {
        passed |= 1 << 8;
    }
    passed
}

/// NAU7802 on a fake bus → weigher → bridge → frame in a buffer → decoded.
fn bridge_round_trip() -> bool {
    let mut nau = Nau7802::new(FakeNau::default(), NoDelay, Nau7802Config::default());
    if nau.init().is_err() {
        return false;
    }
    let Ok(calibration) = Calibration::from_reference(
        0,
        1_000,
        dockline_firmware::scale::Decimal {
            mantissa: 1_000,
            scale: 3,
        },
        dockline_firmware::scale::Unit::Kg,
    ) else {
        return false;
    };
    let weigher = Weigher::new(
        (MedianFilter::<3>::new(), MovingAverage::<4>::new()),
        calibration,
        StabilityDetector::new(2, 5),
    );
    let mut bridge = Bridge::new(nau, weigher, Ticks(0), Sink::default(), 1_000);
    let sent = matches!(bridge.poll(), Ok(Some(_)));
    let (_, _, sink) = bridge.release();
    let mut decoder = FrameDecoder::new();
    let mut decoded = false;
    for byte in sink.buf.iter().take(sink.len) {
        if let Some(Ok(payload)) = decoder.push(*byte) {
            decoded = BridgeMessage::decode(payload).is_ok();
        }
    }
    sent && decoded
}

/// An HX711 pin pair that always reads low (ready, all-zero bits).
struct Pin;

impl embedded_hal::digital::ErrorType for Pin {
    type Error = core::convert::Infallible;
}

impl embedded_hal::digital::OutputPin for Pin {
    fn set_low(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }

    fn set_high(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
}

impl embedded_hal::digital::InputPin for Pin {
    fn is_high(&mut self) -> Result<bool, Self::Error> {
        Ok(false)
    }

    fn is_low(&mut self) -> Result<bool, Self::Error> {
        Ok(true)
    }
}

struct NoDelay;

impl embedded_hal::delay::DelayNs for NoDelay {
    fn delay_ns(&mut self, _ns: u32) {}
}

/// A NAU7802 that is always powered up, calibrated and ready with 1 000 counts.
#[derive(Default)]
struct FakeNau {
    register: u8,
}

impl embedded_hal::i2c::ErrorType for FakeNau {
    type Error = embedded_hal::i2c::ErrorKind;
}

impl embedded_hal::i2c::I2c for FakeNau {
    fn transaction(
        &mut self,
        _address: u8,
        operations: &mut [embedded_hal::i2c::Operation<'_>],
    ) -> Result<(), Self::Error> {
        for op in operations {
            match op {
                embedded_hal::i2c::Operation::Write(bytes) => {
                    self.register = bytes.first().copied().unwrap_or_default();
                }
                embedded_hal::i2c::Operation::Read(out) => {
                    let answer: &[u8] = match self.register {
                        0x00 => &[0x28], // PUR | CR
                        0x12 => &[0x00, 0x03, 0xE8],
                        _ => &[0x00], // CTRL2: calibration done, no error
                    };
                    for (dst, src) in out.iter_mut().zip(answer) {
                        *dst = *src;
                    }
                }
            }
        }
        Ok(())
    }
}

struct Ticks(u64);

impl Clock for Ticks {
    fn now_ms(&mut self) -> u64 {
        self.0 += 1;
        self.0
    }
}

/// A byte sink into a fixed buffer.
struct Sink {
    buf: [u8; MAX_FRAME],
    len: usize,
}

impl Default for Sink {
    fn default() -> Self {
        Sink {
            buf: [0; MAX_FRAME],
            len: 0,
        }
    }
}

impl embedded_io::ErrorType for Sink {
    type Error = embedded_io::ErrorKind;
}

impl embedded_io::Write for Sink {
    fn write(&mut self, bytes: &[u8]) -> Result<usize, Self::Error> {
        let free = self.buf.get_mut(self.len..).unwrap_or_default();
        let n = bytes.len().min(free.len());
        for (dst, src) in free.iter_mut().zip(bytes) {
            *dst = *src;
        }
        self.len += n;
        Ok(n)
    }

    fn flush(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
}

#[panic_handler]
fn panic(_info: &PanicInfo<'_>) -> ! {
    loop {
        core::hint::spin_loop();
    }
}
