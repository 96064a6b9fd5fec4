//! The I2C load-cell source against the simulated NAU7802
//! (`dockline_firmware::sim`): the same thread, driver and weighing pipeline
//! as on a gateway, with the chip's register map in place of `/dev/i2c-1`.
//! The real Linux I2C path is not exercised here (no hardware).
//!
//! Every wait polls against a deadline: no fixed sleeps.

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use dockline_agent::devices::{BusOpener, DevicePresence, DeviceReading, Presence, Sources};
use dockline_firmware::sim::SimNau7802;
use dockline_protocol::Reading;
use embedded_hal::i2c::{ErrorKind, ErrorType, I2c, Operation};
use tokio::sync::mpsc;

/// How long any one condition may take to come true.
const DEADLINE: Duration = Duration::from_secs(15);

/// Counts with the platform empty, and per kg.
const ZERO: i32 = 50_000;
const PER_KG: i32 = 10_000;

/// The chip, shared between the test and the source thread.
#[derive(Clone, Default)]
struct Chip(Arc<Mutex<SimNau7802>>);

impl Chip {
    fn lock(&self) -> MutexGuard<'_, SimNau7802> {
        self.0.lock().expect("chip lock")
    }
}

impl ErrorType for Chip {
    type Error = ErrorKind;
}

impl I2c for Chip {
    fn transaction(
        &mut self,
        address: u8,
        operations: &mut [Operation<'_>],
    ) -> Result<(), Self::Error> {
        self.lock().transaction(address, operations)
    }
}

/// Opens the shared chip, whatever the path.
struct SimBus(Chip);

impl BusOpener for SimBus {
    type Bus = Chip;

    fn open(&mut self, _path: &Path) -> Result<Chip, String> {
        Ok(self.0.clone())
    }
}

struct Harness {
    chip: Chip,
    presence: Arc<Presence>,
    readings: mpsc::Receiver<DeviceReading>,
    sources: Option<Sources>,
}

impl Harness {
    fn start() -> Harness {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("agent.toml");
        let toml = "site = \"dc\"\ndevice = \"gw\"\n\
                    [[devices]]\nname = \"pack-scale\"\nkind = \"scale\"\nprotocol = \"nau7802\"\n\
                    path = \"/dev/i2c-sim\"\nreconnect_max_ms = 200\n\
                    [devices.load_cell]\nrate_sps = 80\nzero_counts = 50000\ncounts_per_kg = 10000\n\
                    stable_samples = 8\nheartbeat_ms = 60000\n";
        std::fs::write(&file, toml).expect("write config");
        let config: dockline_agent::Config =
            dockline_host::config::load(Some(&file), Vec::<(String, String)>::new())
                .expect("config loads");
        config.check().expect("config is valid");
        let chip = Chip::default();
        {
            let mut sim = chip.lock();
            sim.set_load(ZERO);
            sim.set_noise(3);
        }
        let presence = Presence::new(&config.devices);
        let (tx, readings) = mpsc::channel(64);
        let mut sources = Sources::new(presence.clone(), tx);
        sources
            .add_load_cell(&config.devices[0], SimBus(chip.clone()))
            .expect("thread starts");
        Harness {
            chip,
            presence,
            readings,
            sources: Some(sources),
        }
    }

    fn device(&self) -> DevicePresence {
        self.presence.snapshot().remove(0)
    }

    /// Receives readings until one is a stable `kg`; returns the readings
    /// before it as (stable, kg).
    async fn until_stable(&mut self, kg: f64) -> Vec<(bool, f64)> {
        let deadline = Instant::now() + DEADLINE;
        let mut before = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let reading = tokio::time::timeout(left, self.readings.recv())
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "no stable {kg} kg in time; readings: {before:?}; device: {:?}",
                        self.device()
                    )
                })
                .expect("source running");
            let Reading::Weight(w) = reading.reading else {
                panic!("not a weight: {reading:?}")
            };
            assert_eq!(reading.device, "pack-scale");
            if w.stable && (w.net.value - kg).abs() < 1e-9 {
                return before;
            }
            before.push((w.stable, w.net.value));
        }
    }

    /// Polls the presence until `ok` holds for it.
    async fn wait_for(&self, what: &str, ok: impl Fn(&DevicePresence) -> bool) -> DevicePresence {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let device = self.device();
            if ok(&device) {
                return device;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; device: {device:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// After a reconnect: the weigher starts over, so motion comes first,
    /// then the stable weight again.
    async fn restarted_at(&mut self, kg: f64) {
        let before = self.until_stable(kg).await;
        assert!(
            before.iter().any(|&(stable, _)| !stable),
            "motion first after a reconnect: {before:?}"
        );
    }

    async fn stop(mut self) {
        let sources = self.sources.take().expect("running");
        tokio::time::timeout(
            DEADLINE,
            tokio::task::spawn_blocking(move || sources.stop()),
        )
        .await
        .expect("threads stop in time")
        .expect("join");
    }
}

fn counts(kg: f64) -> i32 {
    ZERO + (kg * f64::from(PER_KG)) as i32
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settling_load_reports_motion_then_the_stable_weight() {
    let mut h = Harness::start();
    h.until_stable(0.0).await;
    let device = h.device();
    assert!(device.connected, "{device:?}");
    assert_eq!(device.reconnects, 0);
    assert_eq!(device.path, "/dev/i2c-sim");

    h.chip.lock().set_load(counts(2.5));
    let before = h.until_stable(2.5).await;
    assert!(
        before.iter().any(|&(stable, kg)| !stable && kg > 0.1),
        "motion reported while settling: {before:?}"
    );
    // The gate passes changes only: a handful of readings, not one per conversion.
    assert!(before.len() < 10, "{before:?}");
    let conversions = h.chip.lock().conversions();
    assert!(conversions > 20, "{conversions}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bus_errors_unplug_and_power_loss_reconnect() {
    let mut h = Harness::start();
    h.chip.lock().set_load(counts(1.25));
    h.until_stable(1.25).await;

    // A failed transfer: the source gives the chip up, initialises it again
    // and weighs on.
    h.chip.lock().fail_next(1);
    let device = h
        .wait_for("a reconnect after bus errors", |d| {
            d.reconnects == 1 && d.connected
        })
        .await;
    let error = device.last_error.expect("last_error");
    assert!(
        error.contains("NAU7802 at 0x2A on /dev/i2c-sim unplugged") && error.contains("Bus"),
        "{error}"
    );
    h.restarted_at(1.25).await;

    // Unplugged: every transfer unacknowledged, init fails until it is back.
    h.chip.lock().unplug();
    let device = h
        .wait_for("init to fail while unplugged", |d| {
            !d.connected
                && d.last_error
                    .as_deref()
                    .is_some_and(|e| e.starts_with("cannot start the NAU7802"))
        })
        .await;
    let error = device.last_error.expect("last_error");
    assert!(
        error.contains("pack-scale") && error.contains("NoAcknowledge"),
        "{error}"
    );
    h.chip.lock().plug();
    h.wait_for("the replugged chip", |d| d.reconnects == 2 && d.connected)
        .await;
    h.restarted_at(1.25).await;

    // Power lost and back between two polls: no bus error, but the chip
    // forgot its settings and converts no more; the silence ends the
    // connection and init runs again.
    h.chip.lock().plug();
    let device = h
        .wait_for("a reconnect after power loss", |d| {
            d.reconnects == 3 && d.connected
        })
        .await;
    let error = device.last_error.expect("last_error");
    assert!(error.contains("no conversion for"), "{error}");
    h.restarted_at(1.25).await;
    assert!(h.device().readings >= 5);
    h.stop().await;
}
