//! The bridge loop on the host: a scripted load cell, a stepping clock and a
//! byte sink; every check decodes the frames that reached the sink.

use std::collections::VecDeque;
use std::vec::Vec;

use embedded_io::{ErrorKind, ErrorType};

use super::*;
use crate::link::FrameDecoder;
use crate::loadcell::{Calibration, MovingAverage, StabilityDetector, WeightState};
use crate::scale::{Decimal, Unit};

/// A load cell that replays a script, then has nothing ready.
struct Script(VecDeque<Result<Option<i32>, &'static str>>);

impl Script {
    fn raws(raws: &[i32]) -> Script {
        Script(raws.iter().map(|&r| Ok(Some(r))).collect())
    }
}

impl LoadCell for Script {
    type Error = &'static str;

    fn try_read(&mut self) -> Result<Option<i32>, Self::Error> {
        self.0.pop_front().unwrap_or(Ok(None))
    }
}

/// A clock that moves 100 ms per reading.
struct Ticks(u64);

impl Clock for Ticks {
    fn now_ms(&mut self) -> u64 {
        let now = self.0;
        self.0 += 100;
        now
    }
}

/// A sink that records bytes, or fails while `fail` says so.
#[derive(Default)]
struct Wire {
    bytes: Vec<u8>,
    fail: Option<Result<usize, ErrorKind>>,
}

impl ErrorType for Wire {
    type Error = ErrorKind;
}

impl Write for Wire {
    fn write(&mut self, buf: &[u8]) -> Result<usize, ErrorKind> {
        if let Some(fail) = self.fail {
            return fail;
        }
        // Accept at most 7 bytes at a time: partial writes must be handled.
        let n = buf.len().min(7);
        self.bytes.extend_from_slice(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> Result<(), ErrorKind> {
        Ok(())
    }
}

fn decode(bytes: &[u8]) -> Vec<BridgeMessage> {
    let mut frames = FrameDecoder::new();
    let mut messages = Vec::new();
    for &byte in bytes {
        if let Some(frame) = frames.push(byte) {
            let payload = frame.expect("valid frame");
            messages.push(BridgeMessage::decode(payload).expect("valid message"));
        }
    }
    messages
}

/// 10 counts per gram with zero at 1 000 counts, 2 samples averaged, stable
/// after 3 samples within 1 g, heartbeat 1 s.
fn bridge(source: Script) -> Bridge<Script, MovingAverage<2>, Ticks, Wire> {
    let cal = Calibration::from_reference(
        1_000,
        11_000,
        Decimal {
            mantissa: 1_000,
            scale: 0,
        },
        Unit::G,
    )
    .expect("span");
    let weigher = Weigher::new(MovingAverage::new(), cal, StabilityDetector::new(1, 3));
    Bridge::new(source, weigher, Ticks(0), Wire::default(), 1_000)
}

/// (seq, ms, state, grams) of each weight message; faults as state `None`.
fn summary(messages: &[BridgeMessage]) -> Vec<(u32, u64, Option<WeightState>, i64)> {
    messages
        .iter()
        .map(|m| match m.payload {
            Payload::Weight(r) => (m.seq, m.at_ms, Some(r.state), r.net.mantissa),
            Payload::Fault(f) => (m.seq, m.at_ms, None, i64::from(f.code())),
        })
        .collect()
}

fn run(
    bridge: &mut Bridge<Script, MovingAverage<2>, Ticks, Wire>,
    polls: usize,
) -> Vec<BridgeMessage> {
    let mut returned = Vec::new();
    for _ in 0..polls {
        if let Ok(Some(m)) = bridge.poll() {
            returned.push(m);
        }
    }
    returned
}

#[test]
fn stable_weight_after_motion() {
    use WeightState::{Motion, Stable};
    // Empty platform, then a 5 kg parcel lands (bounce), then it settles.
    let raws = [
        1_000, 1_000, 1_000, 1_000, 30_000, 58_000, 49_000, 51_000, 51_000, 51_000, 51_000,
    ];
    let mut b = bridge(Script::raws(&raws));
    let returned = run(&mut b, raws.len());
    let (_, _, wire) = b.release();
    let sent = decode(&wire.bytes);
    assert_eq!(
        sent, returned,
        "what poll returned is what reached the wire"
    );
    // Clock: `new` reads 0 ms, poll n reads n × 100 ms.
    assert_eq!(
        summary(&sent),
        [
            (0, 100, Some(Motion), 0),     // first reading
            (1, 300, Some(Stable), 0),     // third empty reading: stable zero
            (2, 500, Some(Motion), 1_450), // the parcel lands
            (3, 1_100, Some(Stable), 5_000),
        ]
    );
    let Payload::Weight(last) = sent[3].payload else {
        panic!("weight expected");
    };
    assert_eq!(
        (last.raw, last.filtered, last.unit),
        (51_000, 51_000, Unit::G)
    );
}

#[test]
fn a_steady_weight_is_repeated_once_per_heartbeat() {
    let mut b = bridge(Script::raws(&[6_000; 30]));
    run(&mut b, 30);
    let (_, _, wire) = b.release();
    let times: Vec<u64> = decode(&wire.bytes).iter().map(|m| m.at_ms).collect();
    assert_eq!(times, [100, 300, 1_300, 2_300]);
}

#[test]
fn read_errors_send_one_fault_then_recover() {
    let mut script = Script::raws(&[2_000]);
    script
        .0
        .extend([Err("bus"), Err("bus"), Err("bus"), Ok(Some(2_000))]);
    let mut b = bridge(script);
    assert!(matches!(b.poll(), Ok(Some(_))));
    for _ in 0..3 {
        assert_eq!(b.poll(), Err(BridgeError::Source("bus")));
    }
    assert!(matches!(b.poll(), Ok(Some(_))));
    let (_, _, wire) = b.release();
    assert_eq!(
        summary(&decode(&wire.bytes)),
        [
            (0, 100, Some(WeightState::Motion), 100),
            (1, 200, None, 1),
            (2, 500, Some(WeightState::Motion), 100),
        ]
    );
}

#[test]
fn a_silent_load_cell_is_reported_as_stalled_each_heartbeat() {
    let mut b = bridge(Script::raws(&[]));
    let sent = run(&mut b, 25);
    assert_eq!(summary(&sent), [(0, 1_000, None, 2), (1, 2_000, None, 2)]);
}

#[test]
fn sink_failures_are_reported_and_the_news_retried() {
    let mut b = bridge(Script::raws(&[2_000, 2_000]));
    b.sink.fail = Some(Err(ErrorKind::BrokenPipe));
    assert_eq!(b.poll(), Err(BridgeError::Sink(ErrorKind::BrokenPipe)));
    b.sink.fail = Some(Ok(0));
    b.source.0.push_back(Ok(Some(2_000)));
    assert_eq!(b.poll(), Err(BridgeError::SinkClosed));
    b.sink.fail = None;
    let sent = b.poll().expect("sink works again").expect("still news");
    assert_eq!(sent.seq, 2, "the two lost messages leave a gap");
}
