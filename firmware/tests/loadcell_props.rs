//! Property tests for the load-cell code: the drivers sign-extend whatever the
//! bus returns, the weighing pipeline and the bridge message decoder never
//! panic on arbitrary input, and bridge messages survive the link.

use std::collections::VecDeque;

use dockline_firmware::bridge::{Bridge, BridgeMessage, Clock, Payload};
use dockline_firmware::link::FrameDecoder;
use dockline_firmware::loadcell::{
    Calibration, Filter, Hx711, LoadCell, LoadCellReading, MedianFilter, MovingAverage,
    NAU7802_ADDRESS, Nau7802, Nau7802Config, RAW_MAX, RAW_MIN, StabilityDetector, Weigher,
    WeightState, from_be_24, sign_extend_24, to_24_bit,
};
use dockline_firmware::scale::{Decimal, Unit};
use embedded_hal_mock::eh1::delay::NoopDelay;
use embedded_hal_mock::eh1::digital::{Mock as Pin, State, Transaction as PinT};
use embedded_hal_mock::eh1::i2c::{Mock as I2c, Transaction as I2cT};
use proptest::prelude::*;

fn raw_count() -> impl Strategy<Value = i32> {
    prop_oneof![
        RAW_MIN..=RAW_MAX,
        Just(RAW_MIN),
        Just(RAW_MAX),
        any::<i32>(),
        -2_000i32..2_000,
    ]
}

fn unit() -> impl Strategy<Value = Unit> {
    prop::sample::select(vec![Unit::Kg, Unit::G, Unit::Lb, Unit::Oz, Unit::T])
}

fn calibration() -> impl Strategy<Value = Option<Calibration>> {
    (any::<i32>(), any::<i32>(), any::<i64>(), 0u8..6, unit()).prop_map(
        |(zero, loaded, mantissa, scale, unit)| {
            Calibration::from_reference(zero, loaded, Decimal { mantissa, scale }, unit).ok()
        },
    )
}

/// A load cell that replays raw counts.
struct Replay(VecDeque<i32>);

impl LoadCell for Replay {
    type Error = ();

    fn try_read(&mut self) -> Result<Option<i32>, ()> {
        Ok(self.0.pop_front())
    }
}

/// A sink that keeps every byte.
#[derive(Default)]
struct Wire(Vec<u8>);

impl embedded_io::ErrorType for Wire {
    type Error = core::convert::Infallible;
}

impl embedded_io::Write for Wire {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
}

/// A clock that moves 37 ms per reading.
struct Ticks(u64);

impl Clock for Ticks {
    fn now_ms(&mut self) -> u64 {
        self.0 += 37;
        self.0
    }
}

proptest! {
    #[test]
    fn sign_extension_round_trips(value in RAW_MIN..=RAW_MAX, code in any::<u32>()) {
        prop_assert_eq!(sign_extend_24(to_24_bit(value)), value);
        prop_assert_eq!(to_24_bit(sign_extend_24(code)), code & 0xFF_FFFF);
        let extended = sign_extend_24(code);
        prop_assert!((RAW_MIN..=RAW_MAX).contains(&extended));
        let [_, b2, b1, b0] = code.to_be_bytes();
        prop_assert_eq!(from_be_24([b2, b1, b0]), extended);
    }

    #[test]
    fn hx711_returns_the_sign_extended_bits_it_clocked(code in 0u32..=0xFF_FFFF) {
        let mut sck = vec![PinT::set(State::Low)];
        let mut dout = vec![PinT::get(State::Low)];
        for i in 0..25 {
            sck.push(PinT::set(State::High));
            sck.push(PinT::set(State::Low));
            let high = i < 24 && (code >> (23 - i)) & 1 == 1;
            dout.push(PinT::get(if high { State::High } else { State::Low }));
        }
        let (mut sck, mut dout) = (Pin::new(&sck), Pin::new(&dout));
        let mut hx = Hx711::new(sck.clone(), dout.clone(), NoopDelay::new()).expect("mock");
        prop_assert_eq!(hx.try_read(), Ok(Some(sign_extend_24(code))));
        sck.done();
        dout.done();
    }

    #[test]
    fn nau7802_returns_the_sign_extended_bytes_it_read(bytes in any::<[u8; 3]>(), status in any::<u8>()) {
        let ready = status & 0x20 != 0;
        let mut log = vec![I2cT::write_read(NAU7802_ADDRESS, vec![0x00], vec![status])];
        if ready {
            log.push(I2cT::write_read(NAU7802_ADDRESS, vec![0x12], bytes.to_vec()));
        }
        let mut i2c = I2c::new(&log);
        let mut nau = Nau7802::new(i2c.clone(), NoopDelay::new(), Nau7802Config::default());
        let expected = ready.then(|| from_be_24(bytes));
        prop_assert_eq!(nau.try_read(), Ok(expected));
        i2c.done();
    }

    #[test]
    fn filters_stay_within_their_inputs(input in prop::collection::vec(any::<i32>(), 1..64)) {
        let mut average = MovingAverage::<5>::new();
        let mut median = MedianFilter::<4>::new();
        let mut chain = (MedianFilter::<3>::new(), MovingAverage::<8>::new());
        let (lo, hi) = input.iter().fold((i32::MAX, i32::MIN), |(l, h), &x| (l.min(x), h.max(x)));
        for &x in &input {
            for out in [average.push(x), median.push(x), chain.push(x)] {
                prop_assert!((lo..=hi).contains(&out), "{out} outside {lo}..={hi}");
            }
        }
    }

    #[test]
    fn a_constant_input_is_stable_after_n(value in any::<i64>(), band in any::<u64>(), n in 1u16..50) {
        let mut d = StabilityDetector::new(band, n);
        for i in 1..=n {
            prop_assert_eq!(d.push(value), i == n);
        }
    }

    #[test]
    fn the_weigher_never_panics_and_saturation_is_never_a_weight(
        cal in calibration(),
        raws in prop::collection::vec(raw_count(), 0..100),
        band in 0u64..1_000,
        n in 0u16..10,
        actions in prop::collection::vec(0u8..8, 0..100),
    ) {
        let Some(cal) = cal else { return Ok(()) };
        let mut w = Weigher::new((MedianFilter::<3>::new(), MovingAverage::<4>::new()), cal, StabilityDetector::new(band, n));
        for (raw, action) in raws.iter().zip(actions.iter().chain(std::iter::repeat(&0))) {
            match action {
                1 => { let _ = w.tare(); }
                2 => w.clear_tare(),
                3 => { let _ = w.zero(); }
                4 => w.reset(),
                _ => {}
            }
            let reading = w.push(*raw);
            let saturated = *raw >= RAW_MAX || *raw <= RAW_MIN;
            prop_assert_eq!(
                saturated,
                matches!(reading.state, WeightState::Overload | WeightState::Underload)
            );
        }
    }

    #[test]
    fn message_decoder_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        let _ = BridgeMessage::decode(&bytes);
        let mut with_header = vec![1u8, b'W'];
        with_header.extend_from_slice(&bytes);
        let _ = BridgeMessage::decode(&with_header);
    }

    #[test]
    fn weight_messages_round_trip(
        seq in any::<u32>(), at_ms in any::<u64>(), raw in any::<i32>(), filtered in any::<i32>(),
        net in any::<i64>(), tare in any::<Option<i64>>(), scale in any::<u8>(), unit in unit(),
        state in prop::sample::select(vec![WeightState::Motion, WeightState::Stable, WeightState::Overload, WeightState::Underload]),
    ) {
        let message = BridgeMessage {
            seq,
            at_ms,
            payload: Payload::Weight(LoadCellReading {
                raw,
                filtered,
                net: Decimal { mantissa: net, scale },
                tare: tare.map(|mantissa| Decimal { mantissa, scale }),
                unit,
                state,
            }),
        };
        let mut buf = [0u8; 64];
        let n = message.encode(&mut buf).expect("fits");
        prop_assert_eq!(BridgeMessage::decode(&buf[..n]), Ok(message));
    }

    #[test]
    fn every_bridge_frame_decodes_in_order(raws in prop::collection::vec(raw_count(), 0..200), heartbeat in 1u64..2_000) {
        let cal = Calibration::from_reference(0, 1_000, Decimal { mantissa: 100, scale: 1 }, Unit::Kg).expect("span");
        let weigher = Weigher::new(MovingAverage::<4>::new(), cal, StabilityDetector::new(2, 5));
        let polls = raws.len() + 10;
        let mut bridge = Bridge::new(Replay(raws.into()), weigher, Ticks(0), Wire::default(), heartbeat);
        let mut returned = Vec::new();
        for _ in 0..polls {
            if let Some(m) = bridge.poll().expect("no faults from a replay or a Vec") {
                returned.push(m);
            }
        }
        let (_, _, wire) = bridge.release();
        let mut frames = FrameDecoder::new();
        let mut decoded = Vec::new();
        for &b in &wire.0 {
            if let Some(frame) = frames.push(b) {
                decoded.push(BridgeMessage::decode(frame.expect("valid frame")).expect("valid message"));
            }
        }
        prop_assert_eq!(&decoded, &returned);
        for (i, m) in decoded.iter().enumerate() {
            prop_assert_eq!(m.seq as usize, i);
        }
    }
}
