//! Per-device health, as `GET /v1/status` shows it under `devices`.
//!
//! Each reader thread updates its own entry, found by the device's name
//! (names are unique on an agent: [`crate::Config::check`]); the API takes a
//! snapshot. One mutex over a short vector is enough: updates happen per
//! frame, at most a few hundred times a second, and each holds the lock for a
//! name search over a handful of entries and a few field writes.
//!
//! A reload ([`Presence::reconcile`]) keeps the entry (and counters) of every
//! device whose settings did not change, starts a fresh one for an added or
//! changed device, and drops the entries of removed devices, in the new
//! config's order.

use std::sync::{Arc, Mutex, MutexGuard};

use serde::Serialize;

use super::{DeviceKind, Protocol};
use crate::config::DeviceConfig;

/// What the agent knows about one configured device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DevicePresence {
    /// The configured name.
    pub name: String,
    /// Scanner, scale, gps or bridge.
    pub kind: DeviceKind,
    /// The byte protocol.
    pub protocol: Protocol,
    /// The configured path.
    pub path: String,
    /// The port is open and being read.
    pub connected: bool,
    /// When the last reading was decoded (Unix ms).
    pub last_reading_ms: Option<i64>,
    /// Readings decoded since the agent started.
    pub readings: u64,
    /// Frames rejected (bad bytes) or device error states since the agent started.
    pub rejected: u64,
    /// Times the port was opened again after being lost.
    pub reconnects: u64,
    /// The most recent problem: open failure, unplug, or rejected frame.
    pub last_error: Option<String>,
}

impl DevicePresence {
    /// A disconnected entry with no history.
    fn fresh(d: &DeviceConfig) -> DevicePresence {
        DevicePresence {
            name: d.name.clone(),
            kind: d.kind,
            protocol: d.protocol,
            path: d.path.display().to_string(),
            connected: false,
            last_reading_ms: None,
            readings: 0,
            rejected: 0,
            reconnects: 0,
            last_error: None,
        }
    }
}

/// The health of every configured device.
#[derive(Debug, Default)]
pub struct Presence {
    devices: Mutex<Vec<DevicePresence>>,
}

impl Presence {
    /// One disconnected entry per configured device, in config order.
    pub fn new(devices: &[DeviceConfig]) -> Arc<Self> {
        Arc::new(Presence {
            devices: Mutex::new(devices.iter().map(DevicePresence::fresh).collect()),
        })
    }

    /// After a reload: the entries of `devices` in their order, keeping the
    /// entry of every name in `kept` (its thread runs on), fresh ones for
    /// the others.
    pub(crate) fn reconcile(&self, devices: &[DeviceConfig], kept: &[&str]) {
        let mut entries = self.lock();
        let mut old = std::mem::take(&mut *entries);
        *entries = devices
            .iter()
            .map(|d| {
                let previous = kept
                    .contains(&d.name.as_str())
                    .then(|| old.iter().position(|p| p.name == d.name))
                    .flatten();
                match previous {
                    Some(i) => old.swap_remove(i),
                    None => DevicePresence::fresh(d),
                }
            })
            .collect();
    }

    /// A copy of every entry.
    pub fn snapshot(&self) -> Vec<DevicePresence> {
        self.lock().clone()
    }

    /// Updates the entry of device `name`; an unknown name (a device a
    /// reload just removed) is ignored.
    pub(crate) fn update(&self, name: &str, change: impl FnOnce(&mut DevicePresence)) {
        if let Some(entry) = self.lock().iter_mut().find(|p| p.name == name) {
            change(entry);
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<DevicePresence>> {
        // A reader thread that panicked mid-update left plain counters behind:
        // still worth showing, so a poisoned lock is used as is.
        self.devices
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
