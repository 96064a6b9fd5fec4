//! NAU7802 driver: 24-bit load-cell ADC with PGA, LDO and calibration on I2C.
//!
//! Registers (Nuvoton datasheet, bit names as in the SparkFun library):
//!
//! | reg | name | bits used here |
//! |---|---|---|
//! | `0x00` | PU_CTRL | RR 0, PUD 1, PUA 2, PUR 3 (ro), CS 4, CR 5 (ro), OSCS 6, AVDDS 7 |
//! | `0x01` | CTRL1 | GAINS 2:0, VLDO 5:3 |
//! | `0x02` | CTRL2 | CALMOD 1:0, CALS 2, CAL_ERR 3 (ro), CRS 6:4 |
//! | `0x12..=0x14` | ADCO_B2..B0 | conversion, 24-bit two's complement, MSB first |
//! | `0x15` | ADC | REG_CHPS 5:4 (`0b11` = chopper clock off) |
//! | `0x1B` | PGA | LDOMODE 6 (0 = low-ESR capacitor, better accuracy) |
//! | `0x1C` | POWER | PGA_CAP_EN 7 (330 pF decoupling on channel 2) |
//!
//! [`Nau7802::init`] runs the power-on sequence of datasheet §9.1 as the
//! SparkFun library does: RR=1 (reset), RR=0 + PUD=1, poll PUR (bounded),
//! PUA=1 + AVDDS (internal LDO), CTRL1 = LDO voltage + gain, CTRL2 = rate,
//! chopper clock off, LDOMODE clear, PGA_CAP_EN set, CS=1 (start
//! conversions), wait for the LDO to ramp, then the internal offset
//! calibration (CALMOD=00, CALS=1, poll until CALS clears; CAL_ERR set means
//! failed). Conversions are then ready when CR is set; reading ADCO_B2..B0
//! (one auto-incrementing 3-byte read) clears CR.
//!
//! The driver writes whole registers from the configuration rather than
//! read-modify-write where it owns every bit (PU_CTRL, CTRL1, CTRL2): after
//! RR their reset values are known, and the transaction log stays the same on
//! every chip. ADC, PGA and POWER hold bits it does not own, so those are
//! read-modify-write. Every wait is a counted number of polls.

use embedded_hal::delay::DelayNs;
use embedded_hal::i2c::I2c;

use super::{LoadCell, from_be_24};

/// The NAU7802's fixed 7-bit I2C address.
pub const NAU7802_ADDRESS: u8 = 0x2A;

/// Register addresses.
struct Reg;

impl Reg {
    const PU_CTRL: u8 = 0x00;
    const CTRL1: u8 = 0x01;
    const CTRL2: u8 = 0x02;
    const ADCO_B2: u8 = 0x12;
    const ADC: u8 = 0x15;
    const PGA: u8 = 0x1B;
    const POWER: u8 = 0x1C;
}

/// PU_CTRL bits.
struct PuCtrl;

impl PuCtrl {
    const RR: u8 = 1 << 0;
    const PUD: u8 = 1 << 1;
    const PUA: u8 = 1 << 2;
    const PUR: u8 = 1 << 3;
    const CS: u8 = 1 << 4;
    const CR: u8 = 1 << 5;
    const AVDDS: u8 = 1 << 7;
}

/// CTRL2 bits (CALMOD 1:0 stays 00: internal offset calibration).
struct Ctrl2;

impl Ctrl2 {
    const CALS: u8 = 1 << 2;
    const CAL_ERR: u8 = 1 << 3;
    const CRS_SHIFT: u8 = 4;
}

/// ADC register: REG_CHPS (bits 5:4) = 0b11 turns the chopper clock off.
const ADC_REG_CHPS_OFF: u8 = 0b11 << 4;
/// PGA register: LDOMODE.
const PGA_LDOMODE: u8 = 1 << 6;
/// POWER register: PGA_CAP_EN.
const POWER_PGA_CAP_EN: u8 = 1 << 7;

/// PGA gain (CTRL1 GAINS).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Gain {
    /// ×1.
    X1 = 0,
    /// ×2.
    X2 = 1,
    /// ×4.
    X4 = 2,
    /// ×8.
    X8 = 3,
    /// ×16.
    X16 = 4,
    /// ×32.
    X32 = 5,
    /// ×64.
    X64 = 6,
    /// ×128 (the usual choice for a load cell).
    #[default]
    X128 = 7,
}

/// Internal LDO output voltage (CTRL1 VLDO), the load cell's excitation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Ldo {
    /// 4.5 V.
    V4_5 = 0,
    /// 4.2 V.
    V4_2 = 1,
    /// 3.9 V.
    V3_9 = 2,
    /// 3.6 V.
    V3_6 = 3,
    /// 3.3 V (fits a 3.3 V supply).
    #[default]
    V3_3 = 4,
    /// 3.0 V.
    V3_0 = 5,
    /// 2.7 V.
    V2_7 = 6,
    /// 2.4 V.
    V2_4 = 7,
}

/// Conversion rate (CTRL2 CRS).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SampleRate {
    /// 10 samples/s (best noise).
    Sps10 = 0,
    /// 20 samples/s.
    Sps20 = 1,
    /// 40 samples/s.
    Sps40 = 2,
    /// 80 samples/s.
    #[default]
    Sps80 = 3,
    /// 320 samples/s.
    Sps320 = 7,
}

/// How [`Nau7802::init`] sets the chip up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Config {
    /// 7-bit I2C address: [`NAU7802_ADDRESS`] (fixed on the chip), or what an
    /// address translator on the bus maps it to.
    pub address: u8,
    /// PGA gain.
    pub gain: Gain,
    /// Internal LDO voltage.
    pub ldo: Ldo,
    /// Conversion rate.
    pub rate: SampleRate,
    /// Time for the LDO to settle before calibration, in ms (SparkFun: 250).
    pub ldo_ramp_ms: u32,
    /// Polls of a status bit (PUR, CALS, CR) before giving up.
    pub max_polls: u32,
    /// Pause between two polls, in µs.
    pub poll_interval_us: u32,
}

impl Default for Config {
    /// Address 0x2A, gain 128, 3.3 V LDO, 80 SPS, 250 ms ramp, 1000 polls 1 ms apart (1 s;
    /// a calibration takes a few conversion periods).
    fn default() -> Self {
        Config {
            address: NAU7802_ADDRESS,
            gain: Gain::X128,
            ldo: Ldo::V3_3,
            rate: SampleRate::Sps80,
            ldo_ramp_ms: 250,
            max_polls: 1000,
            poll_interval_us: 1000,
        }
    }
}

/// Why a NAU7802 operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Nau7802Error<E> {
    /// An I2C transfer failed.
    #[error(
        "NAU7802 I2C error: {0:?}; check wiring, power, and that the chip answers at the configured address (0x2A on the chip)"
    )]
    I2c(E),
    /// The chip did not report power-up ready (PUR) in time.
    #[error("NAU7802 did not set PUR (power-up ready) within {polls} polls; check its supply")]
    PowerUpTimeout {
        /// How many times PU_CTRL was polled.
        polls: u32,
    },
    /// The internal calibration did not finish in time.
    #[error("NAU7802 calibration still running after {polls} polls")]
    CalibrationTimeout {
        /// How many times CTRL2 was polled.
        polls: u32,
    },
    /// The chip reported CAL_ERR after the internal calibration.
    #[error(
        "NAU7802 reported a calibration error (CAL_ERR); check the load cell's connection and retry init"
    )]
    CalibrationFailed,
    /// No conversion became ready (CR) in time.
    #[error(
        "NAU7802 had no conversion ready (CR) within {polls} polls; was init run and is the chip powered up?"
    )]
    NotReady {
        /// How many times PU_CTRL was polled.
        polls: u32,
    },
}

/// A NAU7802 on the I2C bus `I` with a delay `D`.
#[derive(Debug)]
pub struct Nau7802<I, D> {
    i2c: I,
    delay: D,
    config: Config,
}

impl<I: I2c, D: DelayNs> Nau7802<I, D> {
    /// A driver that has not touched the bus yet; call [`Nau7802::init`].
    pub fn new(i2c: I, delay: D, config: Config) -> Self {
        Nau7802 { i2c, delay, config }
    }

    /// Reset, power up, configure and calibrate the chip (see the module doc).
    pub fn init(&mut self) -> Result<(), Nau7802Error<I::Error>> {
        self.write(Reg::PU_CTRL, PuCtrl::RR)?;
        self.write(Reg::PU_CTRL, PuCtrl::PUD)?;
        self.poll(Reg::PU_CTRL, |v| v & PuCtrl::PUR != 0)?
            .ok_or(Nau7802Error::PowerUpTimeout {
                polls: self.config.max_polls,
            })?;
        let powered = PuCtrl::PUD | PuCtrl::PUA | PuCtrl::AVDDS;
        self.write(Reg::PU_CTRL, powered)?;
        let Config {
            gain, ldo, rate, ..
        } = self.config;
        self.write(Reg::CTRL1, ((ldo as u8) << 3) | gain as u8)?;
        self.write(Reg::CTRL2, (rate as u8) << Ctrl2::CRS_SHIFT)?;
        self.update(Reg::ADC, |v| v | ADC_REG_CHPS_OFF)?;
        self.update(Reg::PGA, |v| v & !PGA_LDOMODE)?;
        self.update(Reg::POWER, |v| v | POWER_PGA_CAP_EN)?;
        self.write(Reg::PU_CTRL, powered | PuCtrl::CS)?;
        self.delay.delay_ms(self.config.ldo_ramp_ms);
        self.calibrate()
    }

    /// Run the internal offset calibration (after a gain, rate or LDO change,
    /// or a large temperature change) and wait for its result.
    pub fn calibrate(&mut self) -> Result<(), Nau7802Error<I::Error>> {
        let ctrl2 = (self.config.rate as u8) << Ctrl2::CRS_SHIFT;
        self.write(Reg::CTRL2, ctrl2 | Ctrl2::CALS)?;
        let status = self.poll(Reg::CTRL2, |v| v & Ctrl2::CALS == 0)?.ok_or(
            Nau7802Error::CalibrationTimeout {
                polls: self.config.max_polls,
            },
        )?;
        if status & Ctrl2::CAL_ERR != 0 {
            return Err(Nau7802Error::CalibrationFailed);
        }
        Ok(())
    }

    /// Whether a conversion is ready (PU_CTRL CR).
    pub fn is_ready(&mut self) -> Result<bool, Nau7802Error<I::Error>> {
        Ok(self.read_reg(Reg::PU_CTRL)? & PuCtrl::CR != 0)
    }

    /// Wait (bounded) for a conversion and return it.
    pub fn read(&mut self) -> Result<i32, Nau7802Error<I::Error>> {
        self.poll(Reg::PU_CTRL, |v| v & PuCtrl::CR != 0)?
            .ok_or(Nau7802Error::NotReady {
                polls: self.config.max_polls,
            })?;
        self.read_conversion()
    }

    /// Power the analog and digital parts down (PUA = PUD = 0); [`Nau7802::init`] wakes it.
    pub fn power_down(&mut self) -> Result<(), Nau7802Error<I::Error>> {
        self.write(Reg::PU_CTRL, 0)
    }

    /// Give back the bus and the delay.
    pub fn release(self) -> (I, D) {
        (self.i2c, self.delay)
    }

    fn read_conversion(&mut self) -> Result<i32, Nau7802Error<I::Error>> {
        let mut bytes = [0u8; 3];
        self.i2c
            .write_read(self.config.address, &[Reg::ADCO_B2], &mut bytes)
            .map_err(Nau7802Error::I2c)?;
        Ok(from_be_24(bytes))
    }

    /// Read `reg` until `done` holds (`Some(value)`) or the polls run out (`None`).
    fn poll(
        &mut self,
        reg: u8,
        done: impl Fn(u8) -> bool,
    ) -> Result<Option<u8>, Nau7802Error<I::Error>> {
        let polls = self.config.max_polls.max(1);
        for poll in 0..polls {
            let value = self.read_reg(reg)?;
            if done(value) {
                return Ok(Some(value));
            }
            if poll + 1 < polls {
                self.delay.delay_us(self.config.poll_interval_us);
            }
        }
        Ok(None)
    }

    fn read_reg(&mut self, reg: u8) -> Result<u8, Nau7802Error<I::Error>> {
        let mut value = [0u8];
        self.i2c
            .write_read(self.config.address, &[reg], &mut value)
            .map_err(Nau7802Error::I2c)?;
        let [value] = value;
        Ok(value)
    }

    fn write(&mut self, reg: u8, value: u8) -> Result<(), Nau7802Error<I::Error>> {
        self.i2c
            .write(self.config.address, &[reg, value])
            .map_err(Nau7802Error::I2c)
    }

    fn update(&mut self, reg: u8, change: impl Fn(u8) -> u8) -> Result<(), Nau7802Error<I::Error>> {
        let value = self.read_reg(reg)?;
        self.write(reg, change(value))
    }
}

impl<I: I2c, D: DelayNs> LoadCell for Nau7802<I, D> {
    type Error = Nau7802Error<I::Error>;

    fn try_read(&mut self) -> Result<Option<i32>, Self::Error> {
        if !self.is_ready()? {
            return Ok(None);
        }
        self.read_conversion().map(Some)
    }
}

#[cfg(test)]
mod tests {
    use std::vec;
    use std::vec::Vec;

    use embedded_hal::i2c::ErrorKind;
    use embedded_hal_mock::eh1::delay::NoopDelay;
    use embedded_hal_mock::eh1::i2c::{Mock, Transaction as T};

    use super::*;

    const A: u8 = NAU7802_ADDRESS;

    fn config() -> Config {
        Config {
            max_polls: 3,
            ..Config::default()
        }
    }

    /// The bus log of a successful init with the default configuration,
    /// up to and including the calibration start.
    fn init_until_calibration() -> Vec<T> {
        vec![
            T::write(A, vec![0x00, 0x01]),            // RR
            T::write(A, vec![0x00, 0x02]),            // RR=0, PUD
            T::write_read(A, vec![0x00], vec![0x02]), // PUR not yet
            T::write_read(A, vec![0x00], vec![0x0A]), // PUR
            T::write(A, vec![0x00, 0x86]),            // PUD PUA AVDDS
            T::write(A, vec![0x01, (4 << 3) | 7]),    // 3.3 V, ×128
            T::write(A, vec![0x02, 3 << 4]),          // 80 SPS
            T::write_read(A, vec![0x15], vec![0x00]), // ADC
            T::write(A, vec![0x15, 0x30]),            // chopper clock off
            T::write_read(A, vec![0x1B], vec![0x40]), // PGA, LDOMODE set
            T::write(A, vec![0x1B, 0x00]),            // LDOMODE cleared
            T::write_read(A, vec![0x1C], vec![0x00]), // POWER
            T::write(A, vec![0x1C, 0x80]),            // PGA_CAP_EN
            T::write(A, vec![0x00, 0x96]),            // + CS
            T::write(A, vec![0x02, (3 << 4) | 0x04]), // CALS
        ]
    }

    #[test]
    fn init_runs_the_power_on_sequence_and_calibrates() {
        let mut log = init_until_calibration();
        log.push(T::write_read(A, vec![0x02], vec![0x34])); // CALS still set
        log.push(T::write_read(A, vec![0x02], vec![0x30])); // done, no CAL_ERR
        let mut i2c = Mock::new(&log);
        let mut nau = Nau7802::new(i2c.clone(), NoopDelay::new(), config());
        assert_eq!(nau.init(), Ok(()));
        i2c.done();
    }

    #[test]
    fn cal_err_is_a_calibration_failure() {
        let mut log = init_until_calibration();
        log.push(T::write_read(A, vec![0x02], vec![0x38])); // CALS clear, CAL_ERR
        let mut i2c = Mock::new(&log);
        let mut nau = Nau7802::new(i2c.clone(), NoopDelay::new(), config());
        assert_eq!(nau.init(), Err(Nau7802Error::CalibrationFailed));
        i2c.done();
    }

    #[test]
    fn a_calibration_that_never_ends_times_out() {
        let mut log = init_until_calibration();
        log.extend(vec![T::write_read(A, vec![0x02], vec![0x34]); 3]);
        let mut i2c = Mock::new(&log);
        let mut nau = Nau7802::new(i2c.clone(), NoopDelay::new(), config());
        assert_eq!(
            nau.init(),
            Err(Nau7802Error::CalibrationTimeout { polls: 3 })
        );
        i2c.done();
    }

    #[test]
    fn a_chip_that_never_powers_up_times_out() {
        let mut log = vec![T::write(A, vec![0x00, 0x01]), T::write(A, vec![0x00, 0x02])];
        log.extend(vec![T::write_read(A, vec![0x00], vec![0x02]); 3]);
        let mut i2c = Mock::new(&log);
        let mut nau = Nau7802::new(i2c.clone(), NoopDelay::new(), config());
        assert_eq!(nau.init(), Err(Nau7802Error::PowerUpTimeout { polls: 3 }));
        i2c.done();
    }

    #[test]
    fn conversions_are_read_when_cr_is_set_and_sign_extended() {
        let log = [
            T::write_read(A, vec![0x00], vec![0x96]), // CR clear
            T::write_read(A, vec![0x00], vec![0xB6]), // CR set
            T::write_read(A, vec![0x12], vec![0xFF, 0xFF, 0x9C]), // -100
            T::write_read(A, vec![0x00], vec![0x96]), // read(): not yet
            T::write_read(A, vec![0x00], vec![0xB6]),
            T::write_read(A, vec![0x12], vec![0x01, 0x86, 0xA0]), // 100 000
        ];
        let mut i2c = Mock::new(&log);
        let mut nau = Nau7802::new(i2c.clone(), NoopDelay::new(), config());
        assert_eq!(nau.try_read(), Ok(None));
        assert_eq!(nau.try_read(), Ok(Some(-100)));
        assert_eq!(nau.read(), Ok(100_000));
        i2c.done();
    }

    #[test]
    fn no_conversion_in_time_is_not_ready_and_bus_errors_are_wrapped() {
        let mut log = vec![T::write_read(A, vec![0x00], vec![0x96]); 3];
        log.push(T::write_read(A, vec![0x00], vec![0x00]).with_error(ErrorKind::Other));
        let mut i2c = Mock::new(&log);
        let mut nau = Nau7802::new(i2c.clone(), NoopDelay::new(), config());
        assert_eq!(nau.read(), Err(Nau7802Error::NotReady { polls: 3 }));
        assert_eq!(nau.try_read(), Err(Nau7802Error::I2c(ErrorKind::Other)));
        i2c.done();
    }

    #[test]
    fn register_codes_match_the_datasheet() {
        assert_eq!(SampleRate::Sps320 as u8, 0b111);
        assert_eq!(Ldo::V2_4 as u8, 0b111);
        assert_eq!(Ldo::V4_5 as u8, 0b000);
        assert_eq!(Gain::X1 as u8, 0);
    }
}
