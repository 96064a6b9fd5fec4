//! Which load-cell readings are news for whoever receives them.
//!
//! A converter gives 10 to 320 readings a second; a receiver (the agent over
//! a 9600 baud link, or the agent's outbox for an I2C load cell on the
//! gateway itself) wants to hear about changes, not every sample. The rule is
//! on [`ReportGate`]; the peripheral bridge and the agent's I2C source share
//! it. Pure: the caller passes the time and says when a report really went
//! out ([`ReportGate::sent`]), so news that failed to go out stays news.

use super::WeightState;

/// What a receiver is told: a weight (state and net mantissa) or a fault `F`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Report<F> {
    /// A weight reading.
    Weight {
        /// Stable, motion, overload or underload.
        state: WeightState,
        /// The net weight's mantissa (in the calibration's display steps).
        net: i64,
    },
    /// A fault of the source.
    Fault(F),
}

/// Remembers the last report sent and decides whether the next one is news:
///
/// * the first report, and every change of [`WeightState`] (so motion after a
///   stable weight is reported once, when it starts);
/// * a stable weight that differs from the last stable weight reported;
/// * a fault that differs from the last report;
/// * otherwise one report per heartbeat period, so the receiver can tell a
///   quiet device from a dead one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportGate<F> {
    heartbeat_ms: u64,
    last: Option<(Report<F>, u64)>,
}

impl<F: Copy + PartialEq> ReportGate<F> {
    /// A gate that lets at least one report through per `heartbeat_ms`.
    pub const fn new(heartbeat_ms: u64) -> Self {
        ReportGate {
            heartbeat_ms,
            last: None,
        }
    }

    /// Whether `report`, made at `now_ms`, should be sent.
    pub fn is_news(&self, report: Report<F>, now_ms: u64) -> bool {
        let Some((last, at)) = self.last else {
            return true;
        };
        let heartbeat_due = now_ms.saturating_sub(at) >= self.heartbeat_ms;
        match (last, report) {
            (
                Report::Weight {
                    state: last_state,
                    net: last_net,
                },
                Report::Weight { state, net },
            ) => {
                state != last_state
                    || (state == WeightState::Stable && net != last_net)
                    || heartbeat_due
            }
            (last, report) => last != report || heartbeat_due,
        }
    }

    /// Record that `report` went out at `now_ms`.
    pub fn sent(&mut self, report: Report<F>, now_ms: u64) {
        self.last = Some((report, now_ms));
    }

    /// Forget what was sent: the next report is news (a new receiver, or a
    /// reconnected source).
    pub fn reset(&mut self) {
        self.last = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(state: WeightState, net: i64) -> Report<u8> {
        Report::Weight { state, net }
    }

    #[test]
    fn changes_and_heartbeats_are_news() {
        use WeightState::{Motion, Stable};
        let mut gate = ReportGate::new(1_000);
        assert!(gate.is_news(w(Motion, 5), 0), "first report");
        gate.sent(w(Motion, 5), 0);
        assert!(
            !gate.is_news(w(Motion, 9), 10),
            "motion values are not news"
        );
        assert!(gate.is_news(w(Stable, 9), 20), "state change");
        gate.sent(w(Stable, 9), 20);
        assert!(!gate.is_news(w(Stable, 9), 30));
        assert!(gate.is_news(w(Stable, 10), 30), "another stable weight");
        assert!(gate.is_news(w(Stable, 9), 1_020), "heartbeat");
        assert!(gate.is_news(Report::Fault(1), 40), "a fault");
        gate.sent(Report::Fault(1), 40);
        assert!(!gate.is_news(Report::Fault(1), 50));
        assert!(gate.is_news(Report::Fault(2), 50));
        gate.reset();
        assert!(gate.is_news(Report::Fault(1), 50));
    }
}
