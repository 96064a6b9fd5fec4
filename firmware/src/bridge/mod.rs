//! The peripheral bridge's main loop, as a library.
//!
//! A bridge is a microcontroller next to a load cell that sends weights to
//! the agent over a serial line. [`Bridge::poll`] is one turn of its main
//! loop: ask the [`LoadCell`] for a conversion without waiting, run it through
//! the [`Weigher`], decide whether the receiver needs to hear about it, and if
//! so encode a [`BridgeMessage`], frame it with [`link`](crate::link)
//! (COBS + CRC-16) and write the frame to an [`embedded_io::Write`] sink. The
//! firmware's `main` is then `loop { let _ = bridge.poll(); }` plus whatever
//! sleep its chip offers; on the host the same code runs against fakes.
//!
//! What gets sent (so a 80 SPS converter does not flood a 9600 baud line) is
//! decided by a [`ReportGate`] (the rule is on its docs; the agent's I2C
//! source uses the same gate): the first reading, every change
//! of [`WeightState`](crate::loadcell::WeightState), a new stable weight, otherwise one reading per
//! heartbeat period; a [`Fault::SensorRead`] when the load cell errors (then
//! again only per heartbeat while it keeps failing), and a
//! [`Fault::SensorStalled`] when it gives no conversion for a whole heartbeat
//! period.
//!
//! Every message carries a sequence number (+1 per message made, also when
//! its write failed, so the receiver sees the gap) and the bridge's
//! monotonic time from the [`Clock`]. A message whose write failed does not
//! count as sent, so the same news is tried again on the next reading.

mod message;

use embedded_io::Write;

use crate::link::{LinkError, MAX_FRAME, encode_frame};
use crate::loadcell::{Filter, LoadCell, Report, ReportGate, Weigher};

pub use message::{BridgeMessage, Fault, MAX_MESSAGE, MESSAGE_VERSION, MessageError, Payload};

/// A monotonic millisecond clock (a SysTick counter, `Instant` on a host).
pub trait Clock {
    /// Milliseconds since an arbitrary start; never goes backwards.
    fn now_ms(&mut self) -> u64;
}

/// Why a turn of the loop failed. The bridge stays usable after any of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BridgeError<S, W> {
    /// The load cell failed (a fault message was sent, if the sink allowed).
    #[error("load cell read failed: {0:?}")]
    Source(S),
    /// Writing a frame to the sink failed.
    #[error("writing a frame to the link failed: {0:?}")]
    Sink(W),
    /// The sink accepted no bytes (a closed or full port).
    #[error("the link accepted no bytes; is the port closed?")]
    SinkClosed,
    /// A message could not be framed (a bug: messages are far below the limit).
    #[error("framing a bridge message failed: {0}")]
    Link(LinkError),
    /// A message could not be encoded (a bug: the buffer is sized for it).
    #[error("encoding a bridge message failed: {0}")]
    Message(MessageError),
}

/// What the bridge reports, as its gate sees it.
type Sent = Report<Fault>;

/// The bridge: a load cell, its weigher, a clock and a byte sink.
#[derive(Debug)]
pub struct Bridge<S, F, C, W> {
    source: S,
    weigher: Weigher<F>,
    clock: C,
    sink: W,
    heartbeat_ms: u64,
    next_seq: u32,
    /// What was last sent and when.
    gate: ReportGate<Fault>,
    /// When the load cell last gave a conversion (or the bridge started).
    last_sample_ms: u64,
}

impl<S, F, C, W> Bridge<S, F, C, W>
where
    S: LoadCell,
    F: Filter,
    C: Clock,
    W: Write,
{
    /// A bridge that sends at least one message per `heartbeat_ms`.
    pub fn new(source: S, weigher: Weigher<F>, mut clock: C, sink: W, heartbeat_ms: u64) -> Self {
        let now = clock.now_ms();
        Bridge {
            source,
            weigher,
            clock,
            sink,
            heartbeat_ms,
            next_seq: 0,
            gate: ReportGate::new(heartbeat_ms),
            last_sample_ms: now,
        }
    }

    /// One turn of the main loop; returns the message sent, if any.
    pub fn poll(&mut self) -> Result<Option<BridgeMessage>, BridgeError<S::Error, W::Error>> {
        let now = self.clock.now_ms();
        match self.source.try_read() {
            Ok(Some(raw)) => {
                self.last_sample_ms = now;
                let reading = self.weigher.push(raw);
                let sent = Report::Weight {
                    state: reading.state,
                    net: reading.net.mantissa,
                };
                if self.gate.is_news(sent, now) {
                    return self.send(sent, Payload::Weight(reading), now).map(Some);
                }
                Ok(None)
            }
            Ok(None) => {
                let stalled = now.saturating_sub(self.last_sample_ms) >= self.heartbeat_ms;
                let sent = Report::Fault(Fault::SensorStalled);
                if stalled && self.gate.is_news(sent, now) {
                    self.weigher.reset();
                    return self
                        .send(sent, Payload::Fault(Fault::SensorStalled), now)
                        .map(Some);
                }
                Ok(None)
            }
            Err(error) => {
                self.weigher.reset();
                let sent = Report::Fault(Fault::SensorRead);
                if self.gate.is_news(sent, now) {
                    // The read error matters more than a failed fault report.
                    let _ = self.send(sent, Payload::Fault(Fault::SensorRead), now);
                }
                Err(BridgeError::Source(error))
            }
        }
    }

    /// The weigher, to tare, zero or reset it.
    pub fn weigher_mut(&mut self) -> &mut Weigher<F> {
        &mut self.weigher
    }

    /// The load cell, to reinitialise it after a fault.
    pub fn source_mut(&mut self) -> &mut S {
        &mut self.source
    }

    /// Give back the load cell, the clock and the sink.
    pub fn release(self) -> (S, C, W) {
        (self.source, self.clock, self.sink)
    }

    fn send(
        &mut self,
        sent: Sent,
        payload: Payload,
        now: u64,
    ) -> Result<BridgeMessage, BridgeError<S::Error, W::Error>> {
        let message = BridgeMessage {
            seq: self.next_seq,
            at_ms: now,
            payload,
        };
        self.next_seq = self.next_seq.wrapping_add(1);
        let mut body = [0u8; MAX_MESSAGE];
        let len = message.encode(&mut body).map_err(BridgeError::Message)?;
        let mut frame = [0u8; MAX_FRAME];
        let framed = encode_frame(body.get(..len).unwrap_or_default(), &mut frame)
            .map_err(BridgeError::Link)?;
        self.write_all(frame.get(..framed).unwrap_or_default())?;
        // Only what reached the sink counts as sent: news that failed to go
        // out is still news on the next turn.
        self.gate.sent(sent, now);
        Ok(message)
    }

    /// `embedded_io::Write::write_all` panics when a sink returns `Ok(0)`;
    /// this reports it instead.
    fn write_all(&mut self, mut bytes: &[u8]) -> Result<(), BridgeError<S::Error, W::Error>> {
        while !bytes.is_empty() {
            let n = self.sink.write(bytes).map_err(BridgeError::Sink)?;
            if n == 0 {
                return Err(BridgeError::SinkClosed);
            }
            bytes = bytes.get(n..).unwrap_or_default();
        }
        self.sink.flush().map_err(BridgeError::Sink)
    }
}

#[cfg(test)]
mod tests;
