//! Per-device health, as `GET /v1/status` shows it under `devices`.
//!
//! Each reader thread updates its own entry; the API takes a snapshot. One
//! mutex over a short vector is enough: updates happen per frame, at most a
//! few hundred times a second, and each holds the lock for a few field writes.

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

/// The health of every configured device.
#[derive(Debug, Default)]
pub struct Presence {
    devices: Mutex<Vec<DevicePresence>>,
}

impl Presence {
    /// One disconnected entry per configured device, in config order.
    pub fn new(devices: &[DeviceConfig]) -> Arc<Self> {
        let entries = devices
            .iter()
            .map(|d| DevicePresence {
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
            })
            .collect();
        Arc::new(Presence {
            devices: Mutex::new(entries),
        })
    }

    /// A copy of every entry.
    pub fn snapshot(&self) -> Vec<DevicePresence> {
        self.lock().clone()
    }

    /// Updates the entry at `index` (config order); unknown indexes are ignored.
    pub(crate) fn update(&self, index: usize, change: impl FnOnce(&mut DevicePresence)) {
        if let Some(entry) = self.lock().get_mut(index) {
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
