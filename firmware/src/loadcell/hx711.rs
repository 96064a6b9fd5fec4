//! HX711 driver: 24-bit load-cell ADC on two GPIO lines.
//!
//! Protocol (datasheet): PD_SCK idles low. DOUT high means "no conversion
//! ready"; DOUT low means ready. The host then clocks 25–27 PD_SCK pulses: on
//! each of the first 24 the chip shifts out one data bit, MSB first (24-bit
//! two's complement); the 1–3 extra pulses select the gain and channel of
//! the *next* conversion (25 = A×128, 26 = B×32, 27 = A×64). PD_SCK held high
//! for more than 60 µs powers the chip down; taking it low again powers it up,
//! and after power-up the chip converts on A×128 whatever was chosen before.
//!
//! Invariants this driver keeps:
//!
//! * It tracks the gain of the conversion in progress (`converting`) apart
//!   from the one asked for (`gain`). A conversion made at another gain than
//!   the one asked for (the first after [`Hx711::set_gain`] or
//!   [`Hx711::power_up`]) is clocked out with the right pulse count and
//!   discarded, so a value handed out always belongs to the configured gain.
//! * Waiting for DOUT low is a counted number of polls; past it,
//!   [`Hx711Error::NotReady`] — never an endless loop on a dead chip.
//! * A PD_SCK high phase lasts [`PULSE_US`]; the caller must keep it well
//!   under the 50 µs maximum. On a preemptive system (Linux user-space GPIO)
//!   a stretched pulse powers the chip down mid-read and the rest reads as
//!   ones; on a microcontroller, run [`Hx711::read`] / [`LoadCell::try_read`]
//!   inside a critical section (for example `critical_section::with`).

use embedded_hal::delay::DelayNs;
use embedded_hal::digital::{InputPin, OutputPin};

use super::{LoadCell, sign_extend_24};

/// Length of each PD_SCK high and low phase, in µs (datasheet: ≥ 0.2 µs, high ≤ 50 µs).
pub const PULSE_US: u32 = 1;

/// How long PD_SCK is held high to power down, in µs (datasheet: > 60 µs).
pub const POWER_DOWN_US: u32 = 100;

// The datasheet's bounds, checked when the crate compiles.
const _: () = assert!(POWER_DOWN_US > 60 && PULSE_US < 50);

/// Channel and gain of a conversion, named by the extra PD_SCK pulses that select it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Gain {
    /// Channel A, gain 128 (±20 mV full scale); 25 pulses. The power-up default.
    #[default]
    A128,
    /// Channel B, gain 32 (fixed); 26 pulses.
    B32,
    /// Channel A, gain 64 (±40 mV full scale); 27 pulses.
    A64,
}

impl Gain {
    /// PD_SCK pulses of one read that selects this gain for the next conversion.
    pub const fn pulses(self) -> u8 {
        match self {
            Gain::A128 => 25,
            Gain::B32 => 26,
            Gain::A64 => 27,
        }
    }
}

/// Why an HX711 operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Hx711Error<E> {
    /// A GPIO operation failed.
    #[error("HX711 GPIO error: {0:?}")]
    Pin(E),
    /// DOUT stayed high (no conversion) for the whole bounded wait.
    #[error(
        "HX711 DOUT stayed high for {polls} polls: no conversion ready; check power, wiring of DOUT/PD_SCK and that the chip is powered up"
    )]
    NotReady {
        /// How many times DOUT was polled.
        polls: u32,
    },
}

/// An HX711 on a clock pin `SCK`, a data pin `DOUT` and a delay `D`.
///
/// Both pins must share one error type `E` (as every HAL does for its GPIOs).
#[derive(Debug)]
pub struct Hx711<SCK, DOUT, D> {
    sck: SCK,
    dout: DOUT,
    delay: D,
    /// Gain the caller asked for.
    gain: Gain,
    /// Gain of the conversion the chip is running now.
    converting: Gain,
    /// Polls of DOUT before a blocking wait gives up.
    ready_polls: u32,
    /// Pause between two polls of DOUT, in µs.
    poll_interval_us: u32,
}

impl<SCK, DOUT, D, E> Hx711<SCK, DOUT, D>
where
    SCK: OutputPin<Error = E>,
    DOUT: InputPin<Error = E>,
    D: DelayNs,
{
    /// A driver at gain A×128 that waits at most 200 polls of 1 ms (two
    /// conversion periods at 10 SPS) for a conversion. Drives PD_SCK low,
    /// which also powers the chip up.
    pub fn new(sck: SCK, dout: DOUT, delay: D) -> Result<Self, Hx711Error<E>> {
        let mut hx = Hx711 {
            sck,
            dout,
            delay,
            gain: Gain::A128,
            converting: Gain::A128,
            ready_polls: 200,
            poll_interval_us: 1000,
        };
        hx.power_up()?;
        Ok(hx)
    }

    /// Change the bounded wait of [`Hx711::read`]: `polls` polls of DOUT,
    /// `interval_us` apart (at least one poll is always made).
    pub fn set_ready_wait(&mut self, polls: u32, interval_us: u32) {
        self.ready_polls = polls.max(1);
        self.poll_interval_us = interval_us;
    }

    /// Select the channel and gain of the following conversions. Takes effect
    /// with the conversion after the next read; that next one is discarded.
    pub fn set_gain(&mut self, gain: Gain) {
        self.gain = gain;
    }

    /// The gain asked for.
    pub fn gain(&self) -> Gain {
        self.gain
    }

    /// Whether a conversion is ready (DOUT low).
    pub fn is_ready(&mut self) -> Result<bool, Hx711Error<E>> {
        self.dout.is_low().map_err(Hx711Error::Pin)
    }

    /// Wait (bounded) for a conversion at the configured gain and return it.
    /// A conversion at another gain (see [`Hx711::set_gain`]) is discarded and
    /// the wait starts again, so this waits for at most two conversions.
    pub fn read(&mut self) -> Result<i32, Hx711Error<E>> {
        for _ in 0..2 {
            self.wait_ready()?;
            if let Some(value) = self.shift_out()? {
                return Ok(value);
            }
        }
        // Only reachable if the gain changed twice under us, which `&mut self`
        // rules out; report it as "no usable conversion" rather than panic.
        Err(Hx711Error::NotReady {
            polls: self.ready_polls,
        })
    }

    /// Power the chip down: PD_SCK high for [`POWER_DOWN_US`].
    pub fn power_down(&mut self) -> Result<(), Hx711Error<E>> {
        self.sck.set_high().map_err(Hx711Error::Pin)?;
        self.delay.delay_us(POWER_DOWN_US);
        Ok(())
    }

    /// Power the chip up: PD_SCK low. The chip restarts on A×128, so a
    /// different configured gain costs one discarded conversion.
    pub fn power_up(&mut self) -> Result<(), Hx711Error<E>> {
        self.sck.set_low().map_err(Hx711Error::Pin)?;
        self.converting = Gain::A128;
        Ok(())
    }

    /// Give back the pins and the delay.
    pub fn release(self) -> (SCK, DOUT, D) {
        (self.sck, self.dout, self.delay)
    }

    fn wait_ready(&mut self) -> Result<(), Hx711Error<E>> {
        for poll in 0..self.ready_polls {
            if self.is_ready()? {
                return Ok(());
            }
            if poll + 1 < self.ready_polls {
                self.delay.delay_us(self.poll_interval_us);
            }
        }
        Err(Hx711Error::NotReady {
            polls: self.ready_polls,
        })
    }

    /// Clock out one conversion (DOUT must already be low) and select the
    /// next gain; `None` when the conversion was made at another gain.
    fn shift_out(&mut self) -> Result<Option<i32>, Hx711Error<E>> {
        let mut bits: u32 = 0;
        for _ in 0..24 {
            let high = self.pulse_and_sample()?;
            bits = (bits << 1) | u32::from(high);
        }
        for _ in 24..self.gain.pulses() {
            self.pulse_and_sample()?;
        }
        let made_at = self.converting;
        self.converting = self.gain;
        Ok((made_at == self.gain).then_some(sign_extend_24(bits)))
    }

    /// One PD_SCK pulse; DOUT is sampled while PD_SCK is high (the chip
    /// shifts on the rising edge and the bit is valid 0.1 µs later).
    fn pulse_and_sample(&mut self) -> Result<bool, Hx711Error<E>> {
        self.sck.set_high().map_err(Hx711Error::Pin)?;
        self.delay.delay_us(PULSE_US);
        let high = self.dout.is_high().map_err(Hx711Error::Pin)?;
        self.sck.set_low().map_err(Hx711Error::Pin)?;
        self.delay.delay_us(PULSE_US);
        Ok(high)
    }
}

impl<SCK, DOUT, D, E> LoadCell for Hx711<SCK, DOUT, D>
where
    SCK: OutputPin<Error = E>,
    DOUT: InputPin<Error = E>,
    D: DelayNs,
{
    type Error = Hx711Error<E>;

    fn try_read(&mut self) -> Result<Option<i32>, Self::Error> {
        if !self.is_ready()? {
            return Ok(None);
        }
        self.shift_out()
    }
}

#[cfg(test)]
mod tests {
    use std::vec::Vec;

    use embedded_hal_mock::eh1::MockError;
    use embedded_hal_mock::eh1::delay::{CheckedDelay, NoopDelay, Transaction as Delay};
    use embedded_hal_mock::eh1::digital::{Mock as Pin, State, Transaction as T};

    use super::*;

    /// The SCK and DOUT transactions of clocking out `code` with `pulses` pulses.
    fn clock_out(code: u32, pulses: u8) -> (Vec<T>, Vec<T>) {
        let mut sck = Vec::new();
        let mut dout = Vec::new();
        for i in 0..u32::from(pulses) {
            sck.push(T::set(State::High));
            sck.push(T::set(State::Low));
            let bit = i < 24 && (code >> (23 - i)) & 1 == 1;
            dout.push(T::get(if bit { State::High } else { State::Low }));
        }
        (sck, dout)
    }

    fn driver(sck: &[T], dout: &[T]) -> (Hx711<Pin, Pin, NoopDelay>, Pin, Pin) {
        let mut sck_all = std::vec![T::set(State::Low)]; // power-up in `new`
        sck_all.extend_from_slice(sck);
        let sck = Pin::new(&sck_all);
        let dout = Pin::new(dout);
        let hx = Hx711::new(sck.clone(), dout.clone(), NoopDelay::new()).expect("mock pins");
        (hx, sck, dout)
    }

    #[test]
    fn reads_a_negative_conversion_with_25_pulses() {
        let (sck, mut dout) = clock_out(0xFF_FFFE, 25);
        dout.insert(0, T::get(State::Low)); // ready
        let (mut hx, mut sck, mut dout) = driver(&sck, &dout);
        assert_eq!(hx.read(), Ok(-2));
        sck.done();
        dout.done();
    }

    #[test]
    fn try_read_does_not_wait() {
        let (sck, mut dout) = clock_out(0x01_2345, 25);
        dout.insert(0, T::get(State::High)); // not ready
        dout.insert(1, T::get(State::Low));
        let (mut hx, mut sck, mut dout) = driver(&sck, &dout);
        assert_eq!(hx.try_read(), Ok(None));
        assert_eq!(hx.try_read(), Ok(Some(0x01_2345)));
        sck.done();
        dout.done();
    }

    #[test]
    fn gain_change_discards_one_conversion_and_uses_its_pulse_count() {
        // After set_gain(A64): the conversion in progress is A128 — clocked out
        // with 27 pulses (selecting A64) and discarded; the next one is kept.
        let (mut sck, mut dout) = (Vec::new(), Vec::new());
        for code in [0x11_1111, 0x22_2222] {
            let (s, d) = clock_out(code, 27);
            dout.push(T::get(State::Low));
            dout.extend(d);
            sck.extend(s);
        }
        let (mut hx, mut sck, mut dout) = driver(&sck, &dout);
        hx.set_gain(Gain::A64);
        assert_eq!(hx.read(), Ok(0x22_2222));
        sck.done();
        dout.done();
    }

    #[test]
    fn channel_b_uses_26_pulses() {
        let (mut sck, mut dout) = (Vec::new(), Vec::new());
        for code in [0x00_0001, 0x00_0002] {
            let (s, d) = clock_out(code, 26);
            dout.push(T::get(State::Low));
            dout.extend(d);
            sck.extend(s);
        }
        let (mut hx, mut sck, mut dout) = driver(&sck, &dout);
        hx.set_gain(Gain::B32);
        assert_eq!(hx.try_read(), Ok(None), "A128 conversion discarded");
        assert_eq!(hx.try_read(), Ok(Some(2)));
        sck.done();
        dout.done();
    }

    #[test]
    fn a_dead_chip_times_out() {
        let dout = std::vec![T::get(State::High); 3];
        let (mut hx, mut sck, mut dout) = driver(&[], &dout);
        hx.set_ready_wait(3, 500);
        assert_eq!(hx.read(), Err(Hx711Error::NotReady { polls: 3 }));
        sck.done();
        dout.done();
    }

    #[test]
    fn power_down_holds_sck_high_over_60_us_and_power_up_restarts_at_a128() {
        let sck_expect = [
            T::set(State::Low),  // new
            T::set(State::High), // power down
            T::set(State::Low),  // power up
        ];
        let mut sck = Pin::new(&sck_expect);
        let mut dout = Pin::new(&[]);
        let mut delay = CheckedDelay::new(&[Delay::delay_us(POWER_DOWN_US)]);
        let mut hx = Hx711::new(sck.clone(), dout.clone(), delay.clone()).expect("mock pins");
        hx.set_gain(Gain::A64);
        hx.power_down().expect("mock pin");
        hx.power_up().expect("mock pin");
        assert_eq!(hx.converting, Gain::A128);
        sck.done();
        dout.done();
        delay.done();
    }

    #[test]
    fn pin_errors_are_wrapped() {
        let err = MockError::Io(std::io::ErrorKind::NotConnected);
        let dout = [T::get(State::Low).with_error(err.clone())];
        let (mut hx, mut sck, mut dout) = driver(&[], &dout);
        assert_eq!(hx.try_read(), Err(Hx711Error::Pin(err)));
        sck.done();
        dout.done();
    }

    #[test]
    fn pulse_counts_match_the_datasheet() {
        assert_eq!(
            [Gain::A128, Gain::B32, Gain::A64].map(Gain::pulses),
            [25, 26, 27]
        );
    }
}
