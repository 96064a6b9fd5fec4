//! I2C load cells on the gateway itself: a NAU7802 on `/dev/i2c-N`
//! (`protocol = "nau7802"`).
//!
//! # Design
//!
//! The firmware crate's driver and weighing pipeline run here unchanged, on
//! [`linux_embedded_hal::I2cdev`] instead of a microcontroller's bus: a
//! connection is the bus opened ([`BusOpener`]) and the chip initialised
//! ([`Nau7802::init`]: reset, power-up, gain, rate, internal calibration).
//! The thread then polls the chip twice per conversion period; each
//! conversion goes through the [`Weigher`] (median of 3 then mean of 4 →
//! calibration → stability), and the [`ReportGate`] that the peripheral
//! bridge uses decides which readings are news: the first, every change
//! between motion and stable, every new stable weight, and one per
//! `heartbeat_ms` otherwise. So a platform that settles yields one *motion*
//! reading and then one *stable* reading of the weight, not 80 a second.
//! Readings take the serial sources' path from there (the same
//! [`Item`](super::Item) conversion as a bridge's load-cell weights, the
//! same channel, the same presence entry).
//!
//! Losing the chip: any I2C error, or no conversion for ten conversion
//! periods (at least half a second: the chip lost power and forgot its
//! configuration), ends the connection; the thread backs off (capped by the
//! device's `reconnect_max_ms`) and opens and initialises it again, as the
//! serial sources reopen a port. One failed transfer is enough: a clean
//! reinitialisation costs a fraction of a second, a reading from a chip in an
//! unknown state could cost a wrong weight.
//!
//! Generic over [`embedded_hal::i2c::I2c`], so the tests run it against the
//! simulated chip in `dockline_firmware::sim` (`agent/tests/loadcell.rs`).
//! **Not exercised on hardware here**: the real `/dev/i2c-N` path
//! ([`LinuxI2c`]) is compiled but was never run against a NAU7802.
//!
//! Calibration comes from the config: `zero_counts` (the reading with the
//! platform empty) and `counts_per_kg` (the slope), turned into the
//! firmware's exact two-point [`Calibration`] with `decimals` digits of kg.

use std::path::Path;
use std::time::{Duration, Instant};

use dockline_firmware::loadcell::{
    Calibration, MedianFilter, MovingAverage, Nau7802, Nau7802Config, Nau7802Gain,
    Nau7802SampleRate, Report, ReportGate, StabilityDetector, Weigher,
};
use dockline_firmware::scale::{Decimal, Unit};
use embedded_hal::i2c::I2c;
use serde::Deserialize;

use super::decoder::load_cell_item;
use super::source::{Device, Ended, Outlet};
use crate::config::DeviceConfig;

/// The filter in front of the calibration: a median of 3 drops single spikes
/// (a knock, a bit error), a mean of 4 smooths the noise.
type LoadCellFilter = (MedianFilter<3>, MovingAverage<4>);

/// Shortest silence from the chip that counts as losing it.
const STALL_MIN: Duration = Duration::from_millis(500);

/// Opens the I2C bus a load cell sits on.
pub trait BusOpener: Send + 'static {
    /// The opened bus.
    type Bus: I2c;

    /// Open the bus at `path`; the error says what failed and what to check.
    fn open(&mut self, path: &Path) -> Result<Self::Bus, String>;
}

/// The Linux I2C character device (`/dev/i2c-N`), through linux-embedded-hal.
#[derive(Debug, Clone, Copy, Default)]
pub struct LinuxI2c;

impl BusOpener for LinuxI2c {
    type Bus = linux_embedded_hal::I2cdev;

    fn open(&mut self, path: &Path) -> Result<Self::Bus, String> {
        linux_embedded_hal::I2cdev::new(path).map_err(|e| {
            let hint = match &e {
                linux_embedded_hal::i2cdev::linux::LinuxI2CError::Io(io)
                    if io.kind() == std::io::ErrorKind::PermissionDenied =>
                {
                    "add the agent's user to the i2c group"
                }
                _ => {
                    "check the bus number, and that I2C is enabled (raspi-config, dtparam=i2c_arm=on) and the i2c-dev module loaded"
                }
            };
            format!("cannot open the I2C bus {}: {e}; {hint}", path.display())
        })
    }
}

/// `[devices.load_cell]`: the chip's settings and the calibration.
///
/// ```toml
/// [devices.load_cell]
/// address = 0x2A
/// gain = 128
/// rate_sps = 10
/// zero_counts = 8400
/// counts_per_kg = 21500.0
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct LoadCellConfig {
    /// 7-bit I2C address; the NAU7802's is fixed at 0x2A (another value only
    /// behind an address translator).
    #[serde(default = "default_address")]
    pub address: u8,
    /// PGA gain: 1, 2, 4, 8, 16, 32, 64 or 128.
    #[serde(default = "default_gain")]
    pub gain: u16,
    /// Conversions per second: 10, 20, 40, 80 or 320.
    #[serde(default = "default_rate")]
    pub rate_sps: u16,
    /// Raw counts with the platform empty.
    #[serde(default)]
    pub zero_counts: i32,
    /// Counts one kilogram adds (negative if the cell is wired the other way).
    pub counts_per_kg: f64,
    /// Digits after the decimal point of the weight in kg (3 = grams).
    #[serde(default = "default_decimals")]
    pub decimals: u8,
    /// Largest spread, in steps of the last digit, of samples that count as
    /// still.
    #[serde(default = "default_stable_band")]
    pub stable_band: u64,
    /// Consecutive still samples before a weight is stable; default half a
    /// second's worth (at least 3).
    #[serde(default)]
    pub stable_samples: Option<u16>,
    /// A reading at least this often while nothing changes.
    #[serde(default = "default_heartbeat")]
    pub heartbeat_ms: u64,
}

fn default_address() -> u8 {
    dockline_firmware::loadcell::NAU7802_ADDRESS
}
fn default_gain() -> u16 {
    128
}
fn default_rate() -> u16 {
    10
}
fn default_decimals() -> u8 {
    3
}
fn default_stable_band() -> u64 {
    2
}
fn default_heartbeat() -> u64 {
    10_000
}

impl LoadCellConfig {
    /// Checks every value; the error names the device, the key and the fix.
    pub fn check(&self, device: &str) -> Result<(), String> {
        self.driver_config(device)?;
        self.calibration(device)?;
        if self.address > 0x7F {
            return Err(format!(
                "device {device:?}: load_cell.address 0x{:X} is not a 7-bit I2C address; the NAU7802 answers at 0x2A",
                self.address
            ));
        }
        if self.heartbeat_ms == 0 {
            return Err(format!(
                "device {device:?}: load_cell.heartbeat_ms must be at least 1 (default 10000)"
            ));
        }
        Ok(())
    }

    /// The driver's settings.
    pub fn driver_config(&self, device: &str) -> Result<Nau7802Config, String> {
        let gain = match self.gain {
            1 => Nau7802Gain::X1,
            2 => Nau7802Gain::X2,
            4 => Nau7802Gain::X4,
            8 => Nau7802Gain::X8,
            16 => Nau7802Gain::X16,
            32 => Nau7802Gain::X32,
            64 => Nau7802Gain::X64,
            128 => Nau7802Gain::X128,
            other => {
                return Err(format!(
                    "device {device:?}: load_cell.gain = {other} is not a NAU7802 gain; use 1, 2, 4, 8, 16, 32, 64 or 128"
                ));
            }
        };
        let rate = match self.rate_sps {
            10 => Nau7802SampleRate::Sps10,
            20 => Nau7802SampleRate::Sps20,
            40 => Nau7802SampleRate::Sps40,
            80 => Nau7802SampleRate::Sps80,
            320 => Nau7802SampleRate::Sps320,
            other => {
                return Err(format!(
                    "device {device:?}: load_cell.rate_sps = {other} is not a NAU7802 rate; use 10, 20, 40, 80 or 320"
                ));
            }
        };
        Ok(Nau7802Config {
            address: self.address,
            gain,
            rate,
            ..Nau7802Config::default()
        })
    }

    /// The two-point calibration: `zero_counts` and the counts of a
    /// reference load, the reference chosen as large as the count range
    /// allows (1000 kg down to 1 kg) so the rounding of `counts_per_kg` to
    /// whole counts costs the least precision.
    pub fn calibration(&self, device: &str) -> Result<Calibration, String> {
        let slope = self.counts_per_kg;
        if !slope.is_finite() || slope.abs() < 1e-3 {
            return Err(format!(
                "device {device:?}: load_cell.counts_per_kg = {slope} cannot be a load cell's slope; \
                 weigh a known load and set (counts − zero_counts) / kg"
            ));
        }
        if self.decimals > 6 {
            return Err(format!(
                "device {device:?}: load_cell.decimals = {} is finer than a 24-bit converter resolves; use 0 to 6",
                self.decimals
            ));
        }
        let step = 10i64.pow(u32::from(self.decimals));
        for reference_kg in [1000i64, 100, 10, 1] {
            #[allow(clippy::cast_possible_truncation)] // range checked below
            let span = (slope * reference_kg as f64).round() as i64;
            let loaded = i64::from(self.zero_counts) + span;
            let (Ok(loaded), true) = (i32::try_from(loaded), span != 0) else {
                continue;
            };
            let reference = Decimal {
                mantissa: reference_kg * step,
                scale: self.decimals,
            };
            return Calibration::from_reference(self.zero_counts, loaded, reference, Unit::Kg)
                .map_err(|e| format!("device {device:?}: load_cell calibration: {e}"));
        }
        Err(format!(
            "device {device:?}: load_cell.counts_per_kg = {slope} with zero_counts = {} leaves the converter's range; check both",
            self.zero_counts
        ))
    }

    /// Samples in a row that make a stable weight.
    fn stable_samples(&self) -> u16 {
        self.stable_samples.unwrap_or(self.rate_sps / 2).max(3)
    }

    /// The time between two conversions.
    fn period(&self) -> Duration {
        Duration::from_micros(1_000_000 / u64::from(self.rate_sps.max(1)))
    }
}

/// A NAU7802 on an I2C bus, as a device thread sees it.
pub(crate) struct LoadCellDevice<O> {
    config: DeviceConfig,
    opener: O,
}

impl<O: BusOpener> LoadCellDevice<O> {
    pub(crate) fn new(config: DeviceConfig, opener: O) -> Self {
        LoadCellDevice { config, opener }
    }

    fn load_cell(&self) -> Result<&LoadCellConfig, String> {
        self.config.load_cell.as_ref().ok_or_else(|| {
            format!(
                "device {:?} uses protocol nau7802 but has no [devices.load_cell] table; add one with counts_per_kg (see agent.example.toml)",
                self.config.name
            )
        })
    }
}

impl<O: BusOpener> Device for LoadCellDevice<O> {
    type Link = Nau7802<O::Bus, linux_embedded_hal::Delay>;

    fn location(&self) -> String {
        let address = self.config.load_cell.as_ref().map_or(0x2A, |c| c.address);
        format!(
            "NAU7802 at 0x{address:02X} on {}",
            self.config.path.display()
        )
    }

    fn connect(&mut self) -> Result<Self::Link, String> {
        let settings = self.load_cell()?.driver_config(&self.config.name)?;
        let bus = self.opener.open(&self.config.path)?;
        let mut chip = Nau7802::new(bus, linux_embedded_hal::Delay, settings);
        chip.init().map_err(|e| {
            format!(
                "cannot start the {} for device {:?}: {e}",
                self.location(),
                self.config.name
            )
        })?;
        Ok(chip)
    }

    fn read_until_gone(&mut self, mut chip: Self::Link, outlet: &Outlet) -> Ended {
        let settings = match self.load_cell() {
            Ok(settings) => settings.clone(),
            Err(message) => return Ended::Unplugged(message),
        };
        let calibration = match settings.calibration(outlet.name()) {
            Ok(calibration) => calibration,
            Err(message) => return Ended::Unplugged(message),
        };
        let stability = StabilityDetector::new(settings.stable_band, settings.stable_samples());
        let mut weigher = Weigher::new(LoadCellFilter::default(), calibration, stability);
        let mut gate = ReportGate::<()>::new(settings.heartbeat_ms);
        let period = settings.period();
        let stall_after = (period * 10).max(STALL_MIN);
        let started = Instant::now();
        let mut last_conversion = started;
        let mut conversions = 0u64;
        let mut items = Vec::with_capacity(1);
        loop {
            // Twice per period: a conversion waits at most half a period.
            if !outlet.pause(period / 2) {
                return Ended::Stopped;
            }
            let raw = match dockline_firmware::loadcell::LoadCell::try_read(&mut chip) {
                Ok(Some(raw)) => raw,
                Ok(None) => {
                    let quiet = last_conversion.elapsed();
                    if quiet >= stall_after {
                        return Ended::Unplugged(format!(
                            "no conversion for {} ms; the chip may have lost power and its settings",
                            quiet.as_millis()
                        ));
                    }
                    continue;
                }
                Err(e) => return Ended::Unplugged(e.to_string()),
            };
            last_conversion = Instant::now();
            conversions += 1;
            let reading = weigher.push(raw);
            let report = Report::Weight {
                state: reading.state,
                net: reading.net.mantissa,
            };
            let now_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
            if !gate.is_news(report, now_ms) {
                continue;
            }
            items.extend(load_cell_item(conversions, &reading));
            if !outlet.deliver(&mut items) {
                return Ended::Stopped;
            }
            gate.sent(report, now_ms);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(counts_per_kg: f64, zero_counts: i32) -> LoadCellConfig {
        LoadCellConfig {
            address: 0x2A,
            gain: 128,
            rate_sps: 10,
            zero_counts,
            counts_per_kg,
            decimals: 3,
            stable_band: 2,
            stable_samples: None,
            heartbeat_ms: 10_000,
        }
    }

    #[test]
    fn counts_per_kg_becomes_an_exact_calibration() {
        let cal = config(21_500.0, 8_400).calibration("s").expect("valid");
        assert_eq!(
            cal.weight(8_400 + 2 * 21_500),
            Decimal {
                mantissa: 2_000,
                scale: 3
            }
        );
        // A fractional slope keeps its precision (reference of 1000 kg).
        let cal = config(10.25, 0).calibration("s").expect("valid");
        assert_eq!(cal.weight(41).mantissa, 4_000);
        // A steep slope falls back to a smaller reference, a negative one works.
        let cal = config(-8_000_000.0, 0).calibration("s").expect("valid");
        assert_eq!(cal.weight(-4_000_000).mantissa, 500);
    }

    #[test]
    fn bad_values_name_the_key_and_the_fix() {
        for (c, needle) in [
            (config(0.0, 0), "counts_per_kg"),
            (config(f64::NAN, 0), "counts_per_kg"),
            (
                LoadCellConfig {
                    gain: 3,
                    ..config(1.0, 0)
                },
                "use 1, 2, 4",
            ),
            (
                LoadCellConfig {
                    rate_sps: 15,
                    ..config(1.0, 0)
                },
                "use 10, 20",
            ),
            (
                LoadCellConfig {
                    decimals: 9,
                    ..config(1.0, 0)
                },
                "use 0 to 6",
            ),
            (
                LoadCellConfig {
                    address: 0x80,
                    ..config(1.0, 0)
                },
                "7-bit",
            ),
        ] {
            let err = c.check("pack-scale").expect_err(needle);
            assert!(err.contains(needle) && err.contains("pack-scale"), "{err}");
        }
        assert_eq!(config(1.0, 0).stable_samples(), 5);
        assert_eq!(config(1.0, 0).period(), Duration::from_millis(100));
    }
}
