//! The async shell around the station rules: every device reading is stored
//! as telemetry, then fed to its station, whose business events are stored
//! after it (so the evidence precedes the event in sequence order).
//!
//! Events are appended with the priority of [`crate::priority::for_event`]
//! and the reading's capture time. A station event the outbox refuses (full
//! of must-deliver events) is logged in full at error level and becomes the
//! station's last notice in `GET /v1/status`, where the handheld shows it:
//! there is no producer to hand it back to. A station's scale command (tare,
//! zero) goes to the device thread through the [`ScaleCommander`]; one it
//! cannot send becomes the station's notice.

use std::sync::Arc;

use dockline_protocol::{Payload, Priority, TimeSource};
use tokio::sync::mpsc;

use super::{Output, Stations};
use crate::devices::{DeviceReading, ScaleCommander};
use crate::outbox::{NewEvent, Outbox, OutboxError};

/// Stores readings and station events until every reading sender is gone.
pub async fn feed_readings(
    outbox: Outbox,
    clock: TimeSource,
    stations: Arc<Stations>,
    scales: ScaleCommander,
    mut readings: mpsc::Receiver<DeviceReading>,
) {
    while let Some(r) = readings.recv().await {
        let telemetry = NewEvent {
            priority: Priority::Telemetry,
            captured_ms: r.captured_ms,
            time_source: clock,
            payload: Payload::Reading(r.reading.clone()),
        };
        match outbox.append(telemetry).await {
            Ok(_) => {}
            // Closing: nothing more can be stored; the readers stop next.
            Err(OutboxError::Closed) => return,
            Err(e) => {
                tracing::warn!(device = %r.device, error = %e, "a device reading was not stored")
            }
        }
        let Some((station, outputs)) = stations.on_reading(&r.device, &r.reading) else {
            continue;
        };
        for output in outputs {
            let event = match output {
                Output::Notice(notice) => {
                    tracing::info!(station = %station, device = %r.device, "{notice}");
                    continue;
                }
                Output::ScaleCommand { device, command } => {
                    match scales.send(&device, command) {
                        Ok(()) => {
                            tracing::info!(station = %station, scale = %device, ?command, "scale action sent")
                        }
                        Err(e) => {
                            tracing::warn!(station = %station, scale = %device, error = %e, "scale action not sent");
                            stations.notice(
                                &station,
                                format!("{command:?} not sent to {device} ({e}); use the scale's own key"),
                            );
                        }
                    }
                    continue;
                }
                Output::Event(event) => event,
            };
            let kind = event.detail.kind_name();
            let described = serde_json::to_string(&event).unwrap_or_else(|_| kind.to_owned());
            let new = NewEvent {
                priority: crate::priority::for_event(&event.detail),
                captured_ms: r.captured_ms,
                time_source: clock,
                payload: Payload::Event(event),
            };
            match outbox.append(new).await {
                Ok(a) => {
                    tracing::info!(station = %station, seq = a.seq, event = %described, "station event {kind} stored")
                }
                Err(OutboxError::Closed) => {
                    tracing::error!(station = %station, event = %described, "the agent stopped before this station event was stored; it is lost, book it by hand");
                    return;
                }
                Err(e) => {
                    tracing::error!(station = %station, event = %described, error = %e, "station event NOT stored; book it by hand or repeat the scan once the outbox has room");
                    stations.notice(
                        &station,
                        format!(
                            "{kind} NOT stored ({e}); repeat the scan once the outbox has room"
                        ),
                    );
                }
            }
        }
    }
}
