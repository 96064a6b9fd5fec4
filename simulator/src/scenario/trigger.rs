//! Which chunk of a [`Timeline`] makes each expected business event, found
//! by playing the timeline through the agent's own stream decoders and
//! station rules (no ports, no processes).
//!
//! The generators know what events the bytes must make, but not which frame
//! of a scale's continuous stream is the stable weight that completes a
//! pick, or which GNSS sentence confirms a geofence: the agent's rules
//! decide that. Asking those same rules gives the chunk exactly, so the
//! demo can time device-made events from the moment their triggering bytes
//! were written ([`latency`](crate::latency)).
//!
//! An event is attributed to the first expected event of the same
//! [`Signature`] not yet attributed, the way the verdict claims effects.
//!
//! Pure: the agent's decoders and rules run in memory.

use std::collections::HashMap;
use std::path::Path;

use dockline_agent::devices::{DecoderOptions, StreamDecoder};
use dockline_agent::stations::{Output, PickTask, StationEngine, TaskBook};
use dockline_protocol::{BusinessEvent, EventDetail};

use super::{Act, ScenarioError, Signature, Timeline};

/// What the agent's rules made of a timeline.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Replay {
    /// Every business event made, with the index of the chunk that made it.
    pub events: Vec<(usize, Signature)>,
    /// Why frames were rejected (misreads, overloads), in order.
    pub rejected: Vec<String>,
}

/// The signature the collector's ERP data will carry for `e` (the fields
/// [`Signature::of_effect_data`] reads).
pub fn signature_of_event(e: &BusinessEvent) -> Signature {
    let mut s = Signature {
        kind: e.detail.kind_name().into(),
        order: e.refs.order.clone(),
        sscc: e.refs.sscc.clone(),
        stop: e.refs.stop.clone(),
        location: e.refs.location.clone(),
        ..Signature::default()
    };
    match &e.detail {
        EventDetail::Picked { item, quantity, .. } => {
            s.item = Some(item.clone());
            s.quantity = Some(u64::from(*quantity));
        }
        EventDetail::Packed { quantity, .. } => s.quantity = Some(u64::from(*quantity)),
        EventDetail::Exception { kind, .. } => {
            s.exception = serde_json::to_value(kind)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned));
        }
        _ => {}
    }
    s
}

/// Plays `t` into the agent's decoders and station rules; returns the
/// business events made and the frames rejected.
pub fn replay(t: &Timeline) -> Result<Replay, ScenarioError> {
    let (devices, stations) = t.agent_serial(Path::new("/nonexistent"))?;
    let mut engine = StationEngine::new(&stations, &devices);
    let mut tasks = TaskBook::default();
    let mut decoders: HashMap<String, StreamDecoder> = devices
        .iter()
        .map(|d| {
            let options = DecoderOptions {
                toledo_checksum: d.toledo_checksum,
            };
            (d.name.clone(), StreamDecoder::new(d.protocol, options))
        })
        .collect();
    let mut out = Replay::default();
    for (index, chunk) in t.chunks.iter().enumerate() {
        match &chunk.act {
            Act::Bytes { device, bytes } => {
                let Some(decoder) = decoders.get_mut(device) else {
                    return Err(t.invalid(format!("bytes for {device}, no such device")));
                };
                let mut items = Vec::new();
                decoder.push(bytes, &mut items);
                for item in items {
                    if let Some(reason) = item.reason() {
                        out.rejected.push(format!("{device}: {reason}"));
                    }
                    let Some(reading) = item.to_reading() else {
                        continue;
                    };
                    if let Some((_, made)) = engine.on_reading(device, &reading, &mut tasks) {
                        out.events.extend(
                            made.iter()
                                .filter_map(Output::event)
                                .map(|e| (index, signature_of_event(e))),
                        );
                    }
                }
            }
            Act::PostTask(body) => {
                serde_json::from_value::<PickTask>(body.clone())
                    .map_err(|e| e.to_string())
                    .and_then(PickTask::normalised)
                    .and_then(|task| tasks.post(task))
                    .map_err(|e| t.invalid(format!("the agent would refuse a pick list: {e}")))?;
            }
            Act::PostEvent { .. } => {}
        }
    }
    Ok(out)
}

/// Sets each expected event's `trigger` to the chunk that makes it (left
/// `None` for one the rules do not make).
pub fn mark(t: &mut Timeline) -> Result<(), ScenarioError> {
    let made = replay(t)?;
    for x in &mut t.expected {
        x.trigger = None;
    }
    for (chunk, signature) in made.events {
        if let Some(x) = t
            .expected
            .iter_mut()
            .find(|x| x.trigger.is_none() && x.what == signature)
        {
            x.trigger = Some(chunk);
        }
    }
    Ok(())
}
