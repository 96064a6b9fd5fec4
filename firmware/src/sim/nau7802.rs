//! A simulated NAU7802: the register map the driver talks to, on
//! [`embedded_hal::i2c::I2c`].
//!
//! # What it models
//!
//! | register | behaviour |
//! |---|---|
//! | PU_CTRL `0x00` | RR resets every register; PUD starts the power-up, PUR (ro) sets after `power_up_polls` reads of PU_CTRL; with PUD, PUA and CS set a conversion completes (CR, ro) every `conversion_polls` reads of PU_CTRL |
//! | CTRL1 `0x01`, ADC `0x15`, PGA `0x1B`, POWER `0x1C` | plain storage (gain, LDO, chopper and capacitor bits are kept, not simulated) |
//! | CTRL2 `0x02` | CALS starts a calibration that ends (CALS clear) after `cal_polls` reads of CTRL2; CAL_ERR (ro) is always clear |
//! | ADCO_B2..B0 `0x12..=0x14` | the latest conversion, 24-bit two's complement, MSB first; reading B0 clears CR |
//! | REV `0x1F` | `0x0F` |
//!
//! Reads and writes auto-increment the register pointer, as on the chip, so
//! the driver's one 3-byte read of ADCO_B2..B0 works.
//!
//! The load is given in raw counts (what the chip would report at its
//! configured gain). Each completed conversion moves the output half of the
//! remaining distance towards the load (at least one count), so a new load
//! *settles* over a few conversions the way a platform does, then sits
//! exactly on it; optional noise adds a deterministic pseudo-random offset of
//! up to ±`noise` counts to each conversion.
//!
//! Faults: [`SimNau7802::fail_next`] makes the next transactions fail with a
//! bus error (registers unchanged); [`SimNau7802::unplug`] makes every
//! transaction go unacknowledged until [`SimNau7802::plug`], which also
//! power-cycles the chip (registers reset, so the driver must run `init`
//! again: a source that keeps polling sees no conversion ever becoming ready).
//!
//! Time is counted in polls, not in wall-clock time, so tests are
//! deterministic and never wait for the model.

use embedded_hal::i2c::{ErrorKind, ErrorType, I2c, NoAcknowledgeSource, Operation};

use crate::loadcell::{NAU7802_ADDRESS, RAW_MAX, RAW_MIN, to_24_bit};

const PU_CTRL: u8 = 0x00;
const CTRL2: u8 = 0x02;
const ADCO_B2: u8 = 0x12;
const ADCO_B0: u8 = 0x14;
const REVISION: u8 = 0x1F;
const REGISTERS: usize = 0x20;

const RR: u8 = 1 << 0;
const PUD: u8 = 1 << 1;
const PUA: u8 = 1 << 2;
const PUR: u8 = 1 << 3;
const CS: u8 = 1 << 4;
const CR: u8 = 1 << 5;
const CALS: u8 = 1 << 2;
const CAL_ERR: u8 = 1 << 3;

/// A NAU7802 register map with a settling load; see the module docs.
#[derive(Debug, Clone)]
pub struct SimNau7802 {
    address: u8,
    regs: [u8; REGISTERS],
    powered_up: bool,
    power_up_left: Option<u32>,
    cal_left: Option<u32>,
    ready: bool,
    conversion_left: u32,
    power_up_polls: u32,
    cal_polls: u32,
    conversion_polls: u32,
    load: i32,
    settled: i32,
    latched: i32,
    noise: u32,
    rng: u32,
    fail_next: u32,
    unplugged: bool,
    conversions: u64,
}

impl Default for SimNau7802 {
    fn default() -> Self {
        Self::new()
    }
}

impl SimNau7802 {
    /// A powered-off chip at [`NAU7802_ADDRESS`] with no load: PUR after 2
    /// polls, calibration done after 2 polls, a conversion every 2 polls, no
    /// noise.
    pub const fn new() -> Self {
        SimNau7802 {
            address: NAU7802_ADDRESS,
            regs: [0; REGISTERS],
            powered_up: false,
            power_up_left: None,
            cal_left: None,
            ready: false,
            conversion_left: 0,
            power_up_polls: 2,
            cal_polls: 2,
            conversion_polls: 2,
            load: 0,
            settled: 0,
            latched: 0,
            noise: 0,
            rng: 0x2545_F491,
            fail_next: 0,
            unplugged: false,
            conversions: 0,
        }
    }

    /// The same chip answering at `address` (behind an address translator).
    pub const fn with_address(mut self, address: u8) -> Self {
        self.address = address;
        self
    }

    /// Put `counts` on the platform; conversions settle towards it.
    pub fn set_load(&mut self, counts: i32) {
        self.load = counts.clamp(RAW_MIN, RAW_MAX);
    }

    /// The load in counts.
    pub fn load(&self) -> i32 {
        self.load
    }

    /// Add up to ±`counts` of deterministic noise to every conversion.
    pub fn set_noise(&mut self, counts: u32) {
        self.noise = counts;
    }

    /// Fail the next `transactions` transactions with a bus error.
    pub fn fail_next(&mut self, transactions: u32) {
        self.fail_next = transactions;
    }

    /// Disconnect the chip: every transaction goes unacknowledged.
    pub fn unplug(&mut self) {
        self.unplugged = true;
    }

    /// Connect the chip again, freshly powered: every register is reset.
    pub fn plug(&mut self) {
        self.unplugged = false;
        self.power_on_reset();
    }

    /// Conversions completed since the model was made.
    pub fn conversions(&self) -> u64 {
        self.conversions
    }

    /// Whether the chip is powered up and converting (PUR, PUD, PUA, CS).
    pub fn is_converting(&self) -> bool {
        let on = PUD | PUA | CS;
        self.powered_up && self.reg(PU_CTRL) & on == on
    }

    /// A register's stored value, without the side effects of a bus read.
    pub fn register(&self, reg: u8) -> u8 {
        self.reg(reg)
    }

    fn reg(&self, reg: u8) -> u8 {
        self.regs.get(usize::from(reg)).copied().unwrap_or(0)
    }

    fn set_reg(&mut self, reg: u8, value: u8) {
        if let Some(slot) = self.regs.get_mut(usize::from(reg)) {
            *slot = value;
        }
    }

    fn power_on_reset(&mut self) {
        self.regs = [0; REGISTERS];
        self.powered_up = false;
        self.power_up_left = None;
        self.cal_left = None;
        self.ready = false;
    }

    fn write_register(&mut self, reg: u8, value: u8) {
        match reg {
            PU_CTRL => {
                if value & RR != 0 {
                    self.power_on_reset();
                    self.set_reg(PU_CTRL, RR);
                    return;
                }
                let was = self.reg(PU_CTRL);
                self.set_reg(PU_CTRL, value & !(PUR | CR));
                if value & PUD == 0 {
                    self.powered_up = false;
                    self.power_up_left = None;
                    self.ready = false;
                } else if !self.powered_up && self.power_up_left.is_none() {
                    self.power_up_left = Some(self.power_up_polls);
                }
                if value & CS != 0 && was & CS == 0 {
                    self.ready = false;
                    self.conversion_left = self.conversion_polls;
                }
            }
            CTRL2 => {
                self.set_reg(CTRL2, value & !CAL_ERR);
                if value & CALS != 0 {
                    self.cal_left = Some(self.cal_polls);
                }
            }
            // The conversion registers and the revision are read-only.
            ADCO_B2..=ADCO_B0 | REVISION => {}
            _ => self.set_reg(reg, value),
        }
    }

    fn read_register(&mut self, reg: u8) -> u8 {
        match reg {
            PU_CTRL => {
                if let Some(left) = self.power_up_left {
                    if left <= 1 {
                        self.powered_up = true;
                        self.power_up_left = None;
                    } else {
                        self.power_up_left = Some(left - 1);
                    }
                }
                if self.is_converting() && !self.ready {
                    self.conversion_left = self.conversion_left.saturating_sub(1);
                    if self.conversion_left == 0 {
                        self.convert();
                    }
                }
                let mut value = self.reg(PU_CTRL);
                if self.powered_up {
                    value |= PUR;
                }
                if self.ready {
                    value |= CR;
                }
                value
            }
            CTRL2 => {
                if let Some(left) = self.cal_left {
                    if left <= 1 {
                        self.set_reg(CTRL2, self.reg(CTRL2) & !CALS);
                        self.cal_left = None;
                    } else {
                        self.cal_left = Some(left - 1);
                    }
                }
                self.reg(CTRL2)
            }
            ADCO_B2..=ADCO_B0 => {
                let [_, high, mid, low] = to_24_bit(self.latched).to_be_bytes();
                let byte = match reg {
                    ADCO_B2 => high,
                    ADCO_B0 => low,
                    _ => mid,
                };
                if reg == ADCO_B0 && self.ready {
                    self.ready = false;
                    self.conversion_left = self.conversion_polls;
                }
                byte
            }
            REVISION => 0x0F,
            _ => self.reg(reg),
        }
    }

    /// Complete one conversion: settle, add noise, latch, set CR.
    fn convert(&mut self) {
        let gap = i64::from(self.load) - i64::from(self.settled);
        let step = if gap / 2 == 0 { gap.signum() } else { gap / 2 };
        self.settled = clamp_raw(i64::from(self.settled) + step);
        let noise = if self.noise == 0 {
            0
        } else {
            // xorshift32: deterministic, no_std, good enough for noise.
            self.rng ^= self.rng << 13;
            self.rng ^= self.rng >> 17;
            self.rng ^= self.rng << 5;
            let span = u64::from(self.noise) * 2 + 1;
            i64::try_from(u64::from(self.rng) % span).unwrap_or(0) - i64::from(self.noise)
        };
        self.latched = clamp_raw(i64::from(self.settled) + noise);
        self.ready = true;
        self.conversions += 1;
    }
}

fn clamp_raw(value: i64) -> i32 {
    i32::try_from(value.clamp(i64::from(RAW_MIN), i64::from(RAW_MAX))).unwrap_or(0)
}

impl ErrorType for SimNau7802 {
    type Error = ErrorKind;
}

impl I2c for SimNau7802 {
    fn transaction(
        &mut self,
        address: u8,
        operations: &mut [Operation<'_>],
    ) -> Result<(), Self::Error> {
        if self.unplugged || address != self.address {
            return Err(ErrorKind::NoAcknowledge(NoAcknowledgeSource::Address));
        }
        if self.fail_next > 0 {
            self.fail_next -= 1;
            return Err(ErrorKind::Bus);
        }
        let mut pointer = None::<u8>;
        for operation in operations {
            match operation {
                Operation::Write(bytes) => {
                    let Some((&reg, data)) = bytes.split_first() else {
                        continue;
                    };
                    let mut reg = reg;
                    for &value in data {
                        self.write_register(reg, value);
                        reg = reg.wrapping_add(1);
                    }
                    pointer = Some(reg);
                }
                Operation::Read(buffer) => {
                    // A read without a register pointer set in this
                    // transaction is one the driver never does.
                    let mut reg = pointer.ok_or(ErrorKind::Other)?;
                    for byte in buffer.iter_mut() {
                        *byte = self.read_register(reg);
                        reg = reg.wrapping_add(1);
                    }
                    pointer = Some(reg);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use embedded_hal_mock::eh1::delay::NoopDelay;

    use super::*;
    use crate::loadcell::{LoadCell, Nau7802, Nau7802Config, Nau7802Error, Nau7802Gain};

    fn driver(chip: &mut SimNau7802) -> Nau7802<&mut SimNau7802, NoopDelay> {
        let config = Nau7802Config {
            gain: Nau7802Gain::X64,
            max_polls: 10,
            ..Nau7802Config::default()
        };
        Nau7802::new(chip, NoopDelay::new(), config)
    }

    #[test]
    fn the_driver_initialises_the_model_and_reads_a_settling_load() {
        let mut chip = SimNau7802::new();
        chip.set_load(100_000);
        let mut nau = driver(&mut chip);
        assert_eq!(nau.init(), Ok(()));
        assert_eq!(nau.try_read(), Ok(None), "CR needs two polls");
        let reads: std::vec::Vec<i32> = (0..30).map(|_| nau.read().expect("reads")).collect();
        assert_eq!(&reads[..3], [50_000, 75_000, 87_500], "settles by halves");
        assert_eq!(reads[29], 100_000, "then sits on the load");
        assert!(chip.is_converting());
        assert_eq!(chip.register(0x01) & 0b111, 6, "gain x64 stored");
        assert_eq!(chip.conversions(), 30);
    }

    #[test]
    fn negative_loads_and_noise_stay_within_bounds() {
        let mut chip = SimNau7802::new();
        chip.set_load(-2_000);
        chip.set_noise(5);
        let mut nau = driver(&mut chip);
        nau.init().expect("init");
        let last = (0..40).map(|_| nau.read().expect("reads")).last();
        let last = last.expect("some reads");
        assert!((-2_005..=-1_995).contains(&last), "{last}");
    }

    #[test]
    fn bus_errors_unplug_and_power_cycle() {
        let mut chip = SimNau7802::new();
        chip.set_load(10);
        let mut nau = driver(&mut chip);
        nau.init().expect("init");
        chip.fail_next(1);
        let mut nau = driver(&mut chip);
        assert_eq!(nau.try_read(), Err(Nau7802Error::I2c(ErrorKind::Bus)));
        assert!(nau.read().is_ok(), "one failure only");
        chip.unplug();
        let nack = ErrorKind::NoAcknowledge(NoAcknowledgeSource::Address);
        assert_eq!(driver(&mut chip).init(), Err(Nau7802Error::I2c(nack)));
        chip.plug();
        assert!(!chip.is_converting(), "power-cycled");
        let mut nau = driver(&mut chip);
        assert_eq!(nau.read(), Err(Nau7802Error::NotReady { polls: 10 }));
        nau.init().expect("init after replug");
        assert!(nau.read().is_ok());
    }

    #[test]
    fn other_addresses_are_not_acknowledged() {
        let mut chip = SimNau7802::new().with_address(0x2B);
        assert!(driver(&mut chip).init().is_err(), "driver asks 0x2A");
        let mut nau = Nau7802::new(
            &mut chip,
            NoopDelay::new(),
            Nau7802Config {
                address: 0x2B,
                ..Nau7802Config::default()
            },
        );
        assert_eq!(nau.init(), Ok(()));
    }
}
