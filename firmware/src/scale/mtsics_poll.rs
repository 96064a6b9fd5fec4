//! MT-SICS as a polled device: the commands the agent sends and the state
//! machine that decides when to send them (sans-I/O).
//!
//! # Invariants
//!
//! - At most one command is outstanding: MT-SICS answers in order and a
//!   second command before the answer confuses some balances. A command
//!   counts as answered by the next response line, except an acknowledgement
//!   (`T A`) of a tare: Radwag's SICS-like scales send `T A` first and the
//!   tare weight after it. (`Z A`, `TAC A` and `@`'s `I4 A` are final.)
//! - An answer that does not come within the reply timeout frees the line
//!   again (the caller reports the timeout); a lost `SI` costs one poll.
//! - Operator actions (tare, zero, clear tare, reset) go before the next
//!   weight poll, in the order they were asked for, and are never dropped
//!   while fewer than [`MAX_PENDING`] wait.

use heapless::Deque;

use super::ScaleEvent;

/// Operator actions waiting at most.
pub const MAX_PENDING: usize = 8;

/// An MT-SICS command (level 0/1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MtSicsCommand {
    /// `SI`: the weight now, stable or not.
    WeighImmediately,
    /// `S`: the next stable weight (`S I` when none in time).
    WeighStable,
    /// `T`: tare with the next stable weight.
    Tare,
    /// `TA`: ask for the tare value.
    TareValue,
    /// `TAC`: clear the tare.
    ClearTare,
    /// `Z`: zero with the next stable weight.
    Zero,
    /// `@`: reset to the power-on state (answers `I4 A "<serial>"`).
    Reset,
}

impl MtSicsCommand {
    /// The bytes on the line, CR LF included.
    pub fn bytes(self) -> &'static [u8] {
        match self {
            MtSicsCommand::WeighImmediately => b"SI\r\n",
            MtSicsCommand::WeighStable => b"S\r\n",
            MtSicsCommand::Tare => b"T\r\n",
            MtSicsCommand::TareValue => b"TA\r\n",
            MtSicsCommand::ClearTare => b"TAC\r\n",
            MtSicsCommand::Zero => b"Z\r\n",
            MtSicsCommand::Reset => b"@\r\n",
        }
    }
}

/// Why a poller refused an action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "{MAX_PENDING} scale actions already wait; the scale is not answering (check its cable and interface mode)"
)]
pub struct TooManyPending;

/// When to send what to one MT-SICS scale.
#[derive(Debug)]
pub struct MtSicsPoller {
    poll_ms: u64,
    reply_timeout_ms: u64,
    pending: Deque<MtSicsCommand, MAX_PENDING>,
    /// The command awaiting its answer, and when it was sent.
    outstanding: Option<(MtSicsCommand, u64)>,
    last_poll_ms: Option<u64>,
    timeouts: u64,
}

impl MtSicsPoller {
    /// Poll the weight (`SI`) every `poll_ms` (0: never, actions only); give
    /// up on an answer after `reply_timeout_ms`.
    pub fn new(poll_ms: u64, reply_timeout_ms: u64) -> Self {
        MtSicsPoller {
            poll_ms,
            reply_timeout_ms,
            pending: Deque::new(),
            outstanding: None,
            last_poll_ms: None,
            timeouts: 0,
        }
    }

    /// Queue an operator action (tare, zero, …).
    pub fn request(&mut self, command: MtSicsCommand) -> Result<(), TooManyPending> {
        self.pending.push_back(command).map_err(|_| TooManyPending)
    }

    /// The command to write now, if any; the caller writes
    /// [`MtSicsCommand::bytes`] and the poller counts it outstanding.
    pub fn next_command(&mut self, now_ms: u64) -> Option<MtSicsCommand> {
        if let Some((_, sent)) = self.outstanding {
            if now_ms.saturating_sub(sent) < self.reply_timeout_ms {
                return None;
            }
            self.outstanding = None;
            self.timeouts += 1;
        }
        let command = if let Some(action) = self.pending.pop_front() {
            action
        } else {
            let due = self
                .last_poll_ms
                .is_none_or(|last| now_ms.saturating_sub(last) >= self.poll_ms);
            if self.poll_ms == 0 || !due {
                return None;
            }
            self.last_poll_ms = Some(now_ms);
            MtSicsCommand::WeighImmediately
        };
        self.outstanding = Some((command, now_ms));
        Some(command)
    }

    /// A response line was decoded: a final answer frees the line.
    pub fn on_response(&mut self, event: &ScaleEvent) {
        let interim = matches!(event, ScaleEvent::Acknowledged)
            && matches!(self.outstanding, Some((MtSicsCommand::Tare, _)));
        if !interim {
            self.outstanding = None;
        }
    }

    /// A line that was not MT-SICS arrived: it still ends the exchange.
    pub fn on_garbage(&mut self) {
        self.outstanding = None;
    }

    /// Commands that got no answer in time, so far.
    pub fn timeouts(&self) -> u64 {
        self.timeouts
    }

    /// The command awaiting its answer.
    pub fn outstanding(&self) -> Option<MtSicsCommand> {
        self.outstanding.map(|(c, _)| c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polls_at_the_interval_one_command_at_a_time() {
        let mut p = MtSicsPoller::new(200, 1000);
        assert_eq!(p.next_command(0), Some(MtSicsCommand::WeighImmediately));
        // Unanswered: nothing else goes out.
        assert_eq!(p.next_command(300), None);
        p.on_response(&ScaleEvent::Busy);
        assert_eq!(p.next_command(300), Some(MtSicsCommand::WeighImmediately));
        p.on_response(&ScaleEvent::Busy);
        assert_eq!(p.next_command(400), None, "interval not over");
        assert_eq!(p.next_command(500), Some(MtSicsCommand::WeighImmediately));
    }

    #[test]
    fn actions_go_first_and_acknowledgements_do_not_end_them() {
        let mut p = MtSicsPoller::new(200, 1000);
        p.request(MtSicsCommand::Tare).expect("room");
        p.request(MtSicsCommand::Zero).expect("room");
        assert_eq!(p.next_command(0), Some(MtSicsCommand::Tare));
        p.on_response(&ScaleEvent::Acknowledged);
        assert_eq!(p.next_command(10), None);
        p.on_response(&ScaleEvent::Busy);
        assert_eq!(p.next_command(20), Some(MtSicsCommand::Zero));
        assert_eq!(MtSicsCommand::Zero.bytes(), b"Z\r\n");
        // `Z A` is the zero's final answer.
        p.on_response(&ScaleEvent::Acknowledged);
        assert_eq!(p.outstanding(), None);
    }

    #[test]
    fn a_lost_answer_times_out_and_is_counted() {
        let mut p = MtSicsPoller::new(0, 500);
        assert_eq!(p.next_command(0), None, "no polling at 0");
        p.request(MtSicsCommand::Reset).expect("room");
        assert_eq!(p.next_command(0), Some(MtSicsCommand::Reset));
        assert_eq!(p.next_command(499), None);
        p.request(MtSicsCommand::TareValue).expect("room");
        assert_eq!(p.next_command(500), Some(MtSicsCommand::TareValue));
        assert_eq!(p.timeouts(), 1);
        for _ in 0..MAX_PENDING {
            p.request(MtSicsCommand::Tare).expect("room");
        }
        assert_eq!(p.request(MtSicsCommand::Tare), Err(TooManyPending));
    }
}
