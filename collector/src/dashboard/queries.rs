//! The dashboard's read-only queries over the inbox.
//!
//! Each function takes the inbox's connection (through
//! [`crate::inbox::Inbox::read`]) and the current time, and returns plain
//! serializable rows; what people see is derived here (device state, order
//! state, ages), not in the browser, so the JSON endpoints and the pages
//! agree. The SQL is plain and portable (no SQLite-only functions, `CASE`
//! instead of boolean sums) so a PostgreSQL inbox can run the same text with
//! `$n` placeholders.
//!
//! Costs: devices, lanes and dead letters are small tables. The order list
//! and the exception list scan the `events` table once (no index on lane or
//! kind for every row, which would slow ingest); a site's inbox holds
//! hundreds of thousands of rows at most, which SQLite scans in well under
//! a second, and the pages poll every few seconds.

use std::collections::BTreeMap;

use dockline_protocol::{DeviceHealth, Envelope, EventDetail, codec};
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use crate::inbox::{DeviceHoles, LaneStatus};
use crate::lane;

/// Most orders one list shows (newest activity first).
pub const ORDER_LIMIT: usize = 500;
/// Most exceptions one list shows (newest first).
pub const EXCEPTION_LIMIT: usize = 500;

/// One device on the devices page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeviceRow {
    /// Device id.
    pub device: String,
    /// Site id.
    pub site: String,
    /// `online`, `offline` (a death, or never born) or `silent` (online per
    /// its last birth but nothing heard for longer than the silence limit).
    pub state: String,
    /// When it last went online or offline (birth or death), ms since the
    /// Unix epoch.
    pub since_ms: Option<i64>,
    /// When the collector last heard from it (status or batch).
    pub last_seen_ms: Option<i64>,
    /// Events in its outbox not yet acknowledged, per its latest heartbeat.
    pub backlog: Option<u64>,
    /// Age of its oldest unsent event now: the heartbeat's age plus the
    /// time since that heartbeat (nothing left the device since, or a newer
    /// heartbeat would say so); absent when the backlog is empty.
    pub oldest_unsent_age_ms: Option<i64>,
    /// When its latest heartbeat came.
    pub heartbeat_ms: Option<i64>,
    /// Its business events the collector holds that the ERP has not booked yet.
    pub pending_erp: u64,
    /// Watermark of its newest epoch ("complete up to").
    pub complete_up_to: Option<u64>,
    /// Open gaps in its sequence.
    pub gaps: Vec<Gap>,
    /// Sequences missing in those gaps.
    pub missing: u64,
    /// Its serial peripherals per its latest heartbeat.
    pub peripherals: Vec<Peripheral>,
}

/// One open gap in a device's sequence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Gap {
    /// Epoch.
    pub epoch: u64,
    /// First missing sequence.
    pub from: u64,
    /// Last missing sequence.
    pub to: u64,
}

/// One peripheral (scanner, scale, GNSS receiver) of a device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Peripheral {
    /// Its configured name.
    pub name: String,
    /// Its port is open and being read.
    pub connected: bool,
    /// Readings since the agent started.
    pub readings: u64,
    /// Rejected frames or error states since the agent started.
    pub rejected: u64,
    /// When its last reading came.
    pub last_reading_ms: Option<i64>,
}

impl From<DeviceHealth> for Peripheral {
    fn from(d: DeviceHealth) -> Self {
        Self {
            name: d.name,
            connected: d.connected,
            readings: d.readings,
            rejected: d.rejected,
            last_reading_ms: d.last_reading_ms,
        }
    }
}

const DEVICES_SQL: &str = "
SELECT d.device, d.site, d.online, d.last_seen_ms, d.online_since_ms, d.backlog,
       d.oldest_unsent_ms, d.heartbeat_ms, d.peripherals,
       (SELECT count(*) FROM events e WHERE e.device = d.device AND e.state = 'pending'),
       (SELECT w.complete_up_to FROM watermarks w WHERE w.device = d.device
        ORDER BY w.epoch DESC LIMIT 1)
FROM devices d ORDER BY d.device";

/// Every device with its state, backlog, peripherals and the gaps in
/// `holes` (from [`crate::inbox::Inbox::open_holes`]). A device online
/// per its birth but silent for more than `silent_after_ms` shows as
/// `silent`: its link may be dead without the broker having noticed yet.
pub fn devices(
    conn: &Connection,
    holes: &[DeviceHoles],
    now_ms: i64,
    silent_after_ms: i64,
) -> rusqlite::Result<Vec<DeviceRow>> {
    let mut stmt = conn.prepare_cached(DEVICES_SQL)?;
    let rows = stmt.query_map([], |r| {
        let online: bool = r.get(2)?;
        let last_seen_ms: Option<i64> = r.get(3)?;
        let backlog: Option<i64> = r.get(5)?;
        let oldest: Option<i64> = r.get(6)?;
        let heartbeat_ms: Option<i64> = r.get(7)?;
        let peripherals: Option<String> = r.get(8)?;
        let state = if !online {
            "offline"
        } else if last_seen_ms.is_some_and(|t| now_ms.saturating_sub(t) > silent_after_ms) {
            "silent"
        } else {
            "online"
        };
        let oldest_unsent_age_ms = match (backlog, oldest, heartbeat_ms) {
            (Some(b), Some(age), Some(at)) if b > 0 => {
                Some(age.saturating_add(now_ms.saturating_sub(at).max(0)))
            }
            _ => None,
        };
        Ok(DeviceRow {
            device: r.get(0)?,
            site: r.get(1)?,
            state: state.into(),
            since_ms: r.get(4)?,
            last_seen_ms,
            backlog: backlog.map(non_negative),
            oldest_unsent_age_ms,
            heartbeat_ms,
            pending_erp: non_negative(r.get(9)?),
            complete_up_to: r.get::<_, Option<i64>>(10)?.map(non_negative),
            gaps: Vec::new(),
            missing: 0,
            // Written by the inbox from a decoded heartbeat; a row that does
            // not parse (written by a future version) shows no peripherals.
            peripherals: peripherals
                .and_then(|p| serde_json::from_str::<Vec<DeviceHealth>>(&p).ok())
                .map(|list| list.into_iter().map(Peripheral::from).collect())
                .unwrap_or_default(),
        })
    })?;
    let mut out = Vec::new();
    for row in rows {
        let mut row = row?;
        for h in holes.iter().filter(|h| h.device.as_str() == row.device) {
            for &(from, to) in &h.holes {
                row.missing = row
                    .missing
                    .saturating_add(to.saturating_sub(from).saturating_add(1));
                row.gaps.push(Gap {
                    epoch: h.epoch,
                    from,
                    to,
                });
            }
        }
        out.push(row);
    }
    Ok(out)
}

fn non_negative(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// One order (or shipment) on the orders page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OrderRow {
    /// Its lane key (`order:SO-1001`, `shipment:…`), the timeline's key.
    pub lane: String,
    /// The reference alone (`SO-1001`).
    pub reference: String,
    /// `order` or `shipment`.
    pub kind: String,
    /// `delivered`, `in_progress`, `parked`, `blocked` or `rejected`.
    pub state: String,
    /// The furthest step the ERP booked (`picked` … `delivered`).
    pub booked_stage: Option<String>,
    /// The furthest step received.
    pub seen_stage: Option<String>,
    /// Events in it.
    pub events: u64,
    /// Of which booked.
    pub booked: u64,
    /// Waiting for the ERP.
    pub pending: u64,
    /// Refused by the ERP.
    pub rejected: u64,
    /// Exceptions reported on it.
    pub exceptions: u64,
    /// When its first event was received.
    pub first_ms: i64,
    /// Its last progress: the latest event received or verdict recorded.
    pub last_progress_ms: i64,
    /// Why its lane waits (parked or blocked).
    pub waiting_reason: Option<String>,
    /// Since when its lane waits.
    pub waiting_since_ms: Option<i64>,
}

/// The order states, in the order the page shows them.
pub const ORDER_STATES: [&str; 5] = ["in_progress", "parked", "blocked", "rejected", "delivered"];

const ORDERS_SQL: &str = "
SELECT e.lane, count(*),
       max(CASE WHEN e.state = 'booked' THEN e.stage END),
       max(e.stage),
       sum(CASE WHEN e.state = 'booked' THEN 1 ELSE 0 END),
       sum(CASE WHEN e.state = 'pending' THEN 1 ELSE 0 END),
       sum(CASE WHEN e.state = 'rejected' THEN 1 ELSE 0 END),
       sum(CASE WHEN e.kind = 'exception' THEN 1 ELSE 0 END),
       min(e.received_ms),
       max(CASE WHEN e.updated_ms IS NOT NULL AND e.updated_ms > e.received_ms
                THEN e.updated_ms ELSE e.received_ms END),
       l.status, l.reason, l.since_ms
FROM events e LEFT JOIN lanes l ON l.lane = e.lane
WHERE e.lane LIKE 'order:%' OR e.lane LIKE 'shipment:%'
GROUP BY e.lane, l.status, l.reason, l.since_ms
ORDER BY 10 DESC
LIMIT ?1";

/// Orders and shipments, latest progress first, at most [`ORDER_LIMIT`].
pub fn orders(conn: &Connection) -> rusqlite::Result<Vec<OrderRow>> {
    let mut stmt = conn.prepare_cached(ORDERS_SQL)?;
    let limit = i64::try_from(ORDER_LIMIT).unwrap_or(i64::MAX);
    let rows = stmt.query_map(params![limit], |r| {
        let lane: String = r.get(0)?;
        let (kind, reference) = lane.split_once(':').unwrap_or(("order", lane.as_str()));
        let (kind, reference) = (kind.to_string(), reference.to_string());
        let booked_stage: Option<i64> = r.get(2)?;
        let seen_stage: Option<i64> = r.get(3)?;
        let rejected = non_negative(r.get(6)?);
        let lane_status: Option<String> = r.get(10)?;
        let delivered = booked_stage == Some(5);
        let state = match lane_status.as_deref() {
            Some("blocked") => "blocked",
            Some("parked") => "parked",
            _ if delivered => "delivered",
            _ if rejected > 0 => "rejected",
            _ => "in_progress",
        };
        Ok(OrderRow {
            lane,
            reference,
            kind,
            state: state.into(),
            booked_stage: booked_stage.map(stage_name),
            seen_stage: seen_stage.map(stage_name),
            events: non_negative(r.get(1)?),
            booked: non_negative(r.get(4)?),
            pending: non_negative(r.get(5)?),
            rejected,
            exceptions: non_negative(r.get(7)?),
            first_ms: r.get(8)?,
            last_progress_ms: r.get(9)?,
            waiting_reason: r.get(11)?,
            waiting_since_ms: r.get(12)?,
        })
    })?;
    rows.collect()
}

fn stage_name(stage: i64) -> String {
    u8::try_from(stage)
        .map(lane::stage_name)
        .unwrap_or("?")
        .to_string()
}

/// Orders per state, every state present (zero when none).
pub fn count_by_state(orders: &[OrderRow]) -> BTreeMap<String, u64> {
    let mut counts: BTreeMap<String, u64> =
        ORDER_STATES.iter().map(|s| ((*s).to_string(), 0)).collect();
    for o in orders {
        *counts.entry(o.state.clone()).or_default() += 1;
    }
    counts
}

/// One event of an order's timeline.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TimelineEvent {
    /// Device that recorded it.
    pub device: String,
    /// Its epoch and sequence on that device.
    pub epoch: u64,
    /// Sequence.
    pub seq: u64,
    /// Event id (the ERP's idempotency key).
    pub id: String,
    /// `picked` … `delivered`, `exception`.
    pub kind: String,
    /// What it says, for people (`2 × 4012345678901`, `VAN-7`, …).
    pub detail: String,
    /// When the device captured it.
    pub captured_ms: Option<i64>,
    /// When the collector stored it.
    pub received_ms: i64,
    /// The ERP verdict: `pending`, `booked`, `rejected`.
    pub verdict: String,
    /// The ERP's document reference, when booked.
    pub document: Option<String>,
    /// The ERP's reason, when rejected.
    pub reason: Option<String>,
    /// The last failure while pending.
    pub last_error: Option<String>,
    /// Delivery attempts so far.
    pub attempts: u64,
    /// When the verdict was recorded.
    pub verdict_ms: Option<i64>,
    /// Delivered after its lane's park limit, out of business order.
    pub late: bool,
    /// Its open dead letter, if any.
    pub dead_letter: Option<i64>,
}

const TIMELINE_SQL: &str = "
SELECT e.device, e.epoch, e.seq, e.id, e.kind, e.state, e.document, e.reason, e.last_error,
       e.attempts, e.received_ms, e.updated_ms, e.late, e.envelope,
       (SELECT max(dl.id) FROM dead_letters dl WHERE dl.device = e.device AND dl.epoch = e.epoch
        AND dl.seq = e.seq AND dl.state = 'open'),
       e.stage
FROM events e WHERE e.lane = ?1";

/// Every event of a lane, in the order they happened (capture time, then
/// business stage).
pub fn timeline(conn: &Connection, lane_key: &str) -> rusqlite::Result<Vec<TimelineEvent>> {
    let mut stmt = conn.prepare_cached(TIMELINE_SQL)?;
    let rows = stmt.query_map(params![lane_key], |r| {
        let envelope: Vec<u8> = r.get(13)?;
        let decoded = codec::decode::<Envelope>(&envelope).ok();
        let state: String = r.get(5)?;
        let stage: Option<i64> = r.get(15)?;
        Ok((
            stage,
            TimelineEvent {
                device: r.get(0)?,
                epoch: non_negative(r.get(1)?),
                seq: non_negative(r.get(2)?),
                id: r.get(3)?,
                kind: r.get(4)?,
                detail: decoded
                    .as_ref()
                    .map_or_else(|| "(unreadable)".into(), describe),
                captured_ms: decoded.as_ref().map(|e| e.captured_ms),
                received_ms: r.get(10)?,
                verdict_ms: if state == "pending" { None } else { r.get(11)? },
                verdict: state,
                document: r.get(6)?,
                reason: r.get(7)?,
                last_error: r.get(8)?,
                attempts: non_negative(r.get(9)?),
                late: r.get(12)?,
                dead_letter: r.get(14)?,
            },
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        out.push(row?);
    }
    out.sort_by_key(|(stage, e)| {
        (
            e.captured_ms.unwrap_or(e.received_ms),
            stage.unwrap_or(i64::MAX),
            e.device.clone(),
            e.seq,
        )
    });
    Ok(out.into_iter().map(|(_, e)| e).collect())
}

/// A business event in a few words.
fn describe(envelope: &Envelope) -> String {
    let Some(event) = envelope.business_event() else {
        return "reading".into();
    };
    let mut text = match &event.detail {
        EventDetail::Picked {
            item,
            quantity,
            lot,
        } => match lot {
            Some(lot) => format!("{quantity} × {item} (lot {lot})"),
            None => format!("{quantity} × {item}"),
        },
        EventDetail::Packed { quantity, weight } => match weight {
            Some(w) => format!(
                "{quantity} units, {} {}",
                w.value,
                serde_json::to_value(w.unit)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default()
            ),
            None => format!("{quantity} units"),
        },
        EventDetail::Loaded { vehicle } => format!("onto {vehicle}"),
        EventDetail::Departed { vehicle, .. } => format!("{vehicle} left"),
        EventDetail::Arrived { vehicle, .. } => format!("{vehicle} arrived"),
        EventDetail::Delivered(pod) => {
            format!("{} pcs, received by {}", pod.pieces, pod.received_by)
        }
        EventDetail::Exception { kind, note } => {
            let kind = exception_kind_name(kind);
            if note.is_empty() {
                kind
            } else {
                format!("{kind}: {note}")
            }
        }
    };
    if let Some(stop) = &event.refs.stop {
        text.push_str(&format!(" · stop {stop}"));
    }
    text
}

fn exception_kind_name(kind: &dockline_protocol::ExceptionKind) -> String {
    serde_json::to_value(kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| "other".into())
}

/// A parked or blocked lane with how long it has waited.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WaitingLane {
    /// The lane as the inbox reports it.
    #[serde(flatten)]
    pub lane: LaneStatus,
    /// How long it has waited.
    pub waiting_ms: i64,
}

/// Lanes with their waiting time.
pub fn waiting(lanes: Vec<LaneStatus>, now_ms: i64) -> Vec<WaitingLane> {
    lanes
        .into_iter()
        .map(|lane| WaitingLane {
            waiting_ms: now_ms.saturating_sub(lane.since_ms).max(0),
            lane,
        })
        .collect()
}

/// Orders not delivered whose last progress is older than `after_ms`,
/// longest stalled first.
pub fn stalled(orders: &[OrderRow], now_ms: i64, after_ms: i64) -> Vec<OrderRow> {
    let mut out: Vec<OrderRow> = orders
        .iter()
        .filter(|o| o.state != "delivered" && now_ms.saturating_sub(o.last_progress_ms) > after_ms)
        .cloned()
        .collect();
    out.sort_by_key(|o| o.last_progress_ms);
    out
}

/// One exception event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExceptionRow {
    /// Device that reported it.
    pub device: String,
    /// Sequence on that device.
    pub seq: u64,
    /// `short_pick`, `weight_mismatch`, `delivery_refused`, ….
    pub kind: String,
    /// The picker's or driver's note.
    pub note: String,
    /// Its lane (order, shipment, stop or device).
    pub lane: Option<String>,
    /// When the device captured it.
    pub captured_ms: i64,
    /// How old it is.
    pub age_ms: i64,
    /// The ERP verdict.
    pub verdict: String,
    /// The ERP's document reference, when booked.
    pub document: Option<String>,
}

/// Exceptions of one kind, by age.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExceptionKindCount {
    /// The kind.
    pub kind: String,
    /// All of them.
    pub count: u64,
    /// Younger than an hour.
    pub last_hour: u64,
    /// Between an hour and a day old.
    pub last_day: u64,
    /// Older than a day.
    pub older: u64,
    /// Age of the oldest.
    pub oldest_age_ms: i64,
}

/// The kinds the page always shows, even at zero: the ones the issue names.
pub const EXCEPTION_KINDS: [&str; 3] = ["short_pick", "weight_mismatch", "delivery_refused"];

const EXCEPTIONS_SQL: &str = "
SELECT device, seq, lane, state, document, received_ms, envelope
FROM events WHERE kind = 'exception' ORDER BY received_ms DESC LIMIT ?1";

/// The newest exceptions (at most [`EXCEPTION_LIMIT`]) and their counts
/// by kind and age.
pub fn exceptions(
    conn: &Connection,
    now_ms: i64,
) -> rusqlite::Result<(Vec<ExceptionKindCount>, Vec<ExceptionRow>)> {
    const HOUR: i64 = 3_600_000;
    let mut stmt = conn.prepare_cached(EXCEPTIONS_SQL)?;
    let limit = i64::try_from(EXCEPTION_LIMIT).unwrap_or(i64::MAX);
    let rows = stmt.query_map(params![limit], |r| {
        let envelope: Vec<u8> = r.get(6)?;
        let received_ms: i64 = r.get(5)?;
        let decoded = codec::decode::<Envelope>(&envelope).ok();
        let (kind, note) = match decoded.as_ref().and_then(|e| e.business_event()) {
            Some(e) => match &e.detail {
                EventDetail::Exception { kind, note } => (exception_kind_name(kind), note.clone()),
                _ => ("other".into(), String::new()),
            },
            None => ("other".into(), "(unreadable)".into()),
        };
        let captured_ms = decoded.map_or(received_ms, |e| e.captured_ms);
        Ok(ExceptionRow {
            device: r.get(0)?,
            seq: non_negative(r.get(1)?),
            kind,
            note,
            lane: r.get(2)?,
            captured_ms,
            age_ms: now_ms.saturating_sub(captured_ms).max(0),
            verdict: r.get(3)?,
            document: r.get(4)?,
        })
    })?;
    let items: Vec<ExceptionRow> = rows.collect::<rusqlite::Result<_>>()?;
    let mut by_kind: BTreeMap<String, ExceptionKindCount> = EXCEPTION_KINDS
        .iter()
        .map(|k| {
            (
                (*k).to_string(),
                ExceptionKindCount {
                    kind: (*k).to_string(),
                    count: 0,
                    last_hour: 0,
                    last_day: 0,
                    older: 0,
                    oldest_age_ms: 0,
                },
            )
        })
        .collect();
    for item in &items {
        let c = by_kind
            .entry(item.kind.clone())
            .or_insert_with(|| ExceptionKindCount {
                kind: item.kind.clone(),
                count: 0,
                last_hour: 0,
                last_day: 0,
                older: 0,
                oldest_age_ms: 0,
            });
        c.count += 1;
        if item.age_ms < HOUR {
            c.last_hour += 1;
        } else if item.age_ms < 24 * HOUR {
            c.last_day += 1;
        } else {
            c.older += 1;
        }
        c.oldest_age_ms = c.oldest_age_ms.max(item.age_ms);
    }
    let mut counts: Vec<ExceptionKindCount> = by_kind.into_values().collect();
    counts.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.kind.cmp(&b.kind)));
    Ok((counts, items))
}

/// An ERP verdict of one event, for the dead-letter list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EventVerdict {
    /// `pending`, `booked`, `rejected`.
    pub state: String,
    /// The document reference, when booked.
    pub document: Option<String>,
}

/// The current verdict of one event.
pub fn event_verdict(
    conn: &Connection,
    device: &str,
    epoch: u64,
    seq: u64,
) -> rusqlite::Result<Option<EventVerdict>> {
    let (epoch, seq) = (
        i64::try_from(epoch).unwrap_or(i64::MAX),
        i64::try_from(seq).unwrap_or(i64::MAX),
    );
    conn.prepare_cached(
        "SELECT state, document FROM events WHERE device = ?1 AND epoch = ?2 AND seq = ?3",
    )?
    .query_row(params![device, epoch, seq], |r| {
        Ok(EventVerdict {
            state: r.get(0)?,
            document: r.get(1)?,
        })
    })
    .optional()
}
