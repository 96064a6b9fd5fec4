//! The dashboard's read-only queries over the inbox.
//!
//! Each function takes the inbox's connection (through
//! [`crate::inbox::Inbox::read`]) and the current time, and returns plain
//! serializable rows; what people see is derived here (device state, order
//! state, ages), not in the browser, so the JSON endpoints and the pages
//! agree. The SQL is plain and portable (no SQLite-only functions, `CASE`
//! instead of boolean sums): the PostgreSQL inbox runs the same text with
//! `$n` placeholders ([`crate::inbox::postgres`]), reads the same columns into the
//! same `…Cols` structs, and derives the rows with the same functions
//! ([`device_row`], [`order_row`], [`timeline_event`], [`exception_row`]).
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

use crate::delivery::lane;
use crate::inbox::{DeviceHoles, LaneStatus};

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

pub(crate) const DEVICES_SQL: &str = "
SELECT d.device, d.site, d.online, d.last_seen_ms, d.online_since_ms, d.backlog,
       d.oldest_unsent_ms, d.heartbeat_ms, d.peripherals,
       (SELECT count(*) FROM events e WHERE e.device = d.device AND e.state = 'pending'),
       (SELECT w.complete_up_to FROM watermarks w WHERE w.device = d.device
        ORDER BY w.epoch DESC LIMIT 1)
FROM devices d ORDER BY d.device";

/// Every device with its state, backlog, peripherals and the gaps in
/// `holes` (from [`crate::inbox::InboxStore::open_holes`]). A device online
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
        Ok(DeviceCols {
            device: r.get(0)?,
            site: r.get(1)?,
            online: r.get(2)?,
            last_seen_ms: r.get(3)?,
            online_since_ms: r.get(4)?,
            backlog: r.get(5)?,
            oldest_unsent_ms: r.get(6)?,
            heartbeat_ms: r.get(7)?,
            peripherals: r.get(8)?,
            pending: r.get(9)?,
            complete_up_to: r.get(10)?,
        })
    })?;
    let mut out = Vec::new();
    for row in rows {
        out.push(device_row(row?, holes, now_ms, silent_after_ms));
    }
    Ok(out)
}

/// The columns of [`DEVICES_SQL`].
#[derive(Debug, Clone)]
pub(crate) struct DeviceCols {
    pub device: String,
    pub site: String,
    pub online: bool,
    pub last_seen_ms: Option<i64>,
    pub online_since_ms: Option<i64>,
    pub backlog: Option<i64>,
    pub oldest_unsent_ms: Option<i64>,
    pub heartbeat_ms: Option<i64>,
    pub peripherals: Option<String>,
    pub pending: i64,
    pub complete_up_to: Option<i64>,
}

/// A device's row from its columns, its gaps in `holes` and the time.
pub(crate) fn device_row(
    c: DeviceCols,
    holes: &[DeviceHoles],
    now_ms: i64,
    silent_after_ms: i64,
) -> DeviceRow {
    let state = if !c.online {
        "offline"
    } else if c
        .last_seen_ms
        .is_some_and(|t| now_ms.saturating_sub(t) > silent_after_ms)
    {
        "silent"
    } else {
        "online"
    };
    let oldest_unsent_age_ms = match (c.backlog, c.oldest_unsent_ms, c.heartbeat_ms) {
        (Some(b), Some(age), Some(at)) if b > 0 => {
            Some(age.saturating_add(now_ms.saturating_sub(at).max(0)))
        }
        _ => None,
    };
    let mut row = DeviceRow {
        device: c.device,
        site: c.site,
        state: state.into(),
        since_ms: c.online_since_ms,
        last_seen_ms: c.last_seen_ms,
        backlog: c.backlog.map(non_negative),
        oldest_unsent_age_ms,
        heartbeat_ms: c.heartbeat_ms,
        pending_erp: non_negative(c.pending),
        complete_up_to: c.complete_up_to.map(non_negative),
        gaps: Vec::new(),
        missing: 0,
        // Written by the inbox from a decoded heartbeat; a row that does
        // not parse (written by a future version) shows no peripherals.
        peripherals: c
            .peripherals
            .and_then(|p| serde_json::from_str::<Vec<DeviceHealth>>(&p).ok())
            .map(|list| list.into_iter().map(Peripheral::from).collect())
            .unwrap_or_default(),
    };
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
    row
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

/// The columns and grouping of [`ORDERS_SQL`] and [`STALLED_SQL`]; column 10
/// is the last progress.
macro_rules! orders_select {
    () => {
        "
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
GROUP BY e.lane, l.status, l.reason, l.since_ms"
    };
}

/// Orders and shipments, latest progress first; `?1` the limit.
pub(crate) const ORDERS_SQL: &str = concat!(orders_select!(), "\nORDER BY 10 DESC\nLIMIT ?1");

/// Orders and shipments not delivered (or whose lane waits) with no
/// progress since `?1`, longest stalled first; `?2` the limit. Its own query
/// rather than a filter over [`ORDERS_SQL`]: that one keeps the newest
/// orders, and the stalled ones are the oldest.
pub(crate) const STALLED_SQL: &str = concat!(
    orders_select!(),
    "
HAVING (coalesce(max(CASE WHEN e.state = 'booked' THEN e.stage END), -1) < 5
        OR l.status IS NOT NULL)
   AND max(CASE WHEN e.updated_ms IS NOT NULL AND e.updated_ms > e.received_ms
                THEN e.updated_ms ELSE e.received_ms END) < ?1
ORDER BY 10 ASC
LIMIT ?2"
);

/// Orders and shipments, latest progress first, at most [`ORDER_LIMIT`].
pub fn orders(conn: &Connection) -> rusqlite::Result<Vec<OrderRow>> {
    let limit = i64::try_from(ORDER_LIMIT).unwrap_or(i64::MAX);
    order_rows(conn, ORDERS_SQL, params![limit])
}

/// Orders and shipments with no progress since `before_ms` that are not
/// delivered, longest stalled first, at most [`ORDER_LIMIT`] (the stuck
/// page).
pub fn stalled_orders(conn: &Connection, before_ms: i64) -> rusqlite::Result<Vec<OrderRow>> {
    let limit = i64::try_from(ORDER_LIMIT).unwrap_or(i64::MAX);
    order_rows(conn, STALLED_SQL, params![before_ms, limit])
}

fn order_rows(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> rusqlite::Result<Vec<OrderRow>> {
    let mut stmt = conn.prepare_cached(sql)?;
    let rows = stmt.query_map(params, |r| {
        Ok(OrderCols {
            lane: r.get(0)?,
            events: r.get(1)?,
            booked_stage: r.get(2)?,
            seen_stage: r.get(3)?,
            booked: r.get(4)?,
            pending: r.get(5)?,
            rejected: r.get(6)?,
            exceptions: r.get(7)?,
            first_ms: r.get(8)?,
            last_progress_ms: r.get(9)?,
            lane_status: r.get(10)?,
            waiting_reason: r.get(11)?,
            waiting_since_ms: r.get(12)?,
        })
    })?;
    rows.map(|r| r.map(order_row)).collect()
}

/// The columns of [`ORDERS_SQL`].
#[derive(Debug, Clone)]
pub(crate) struct OrderCols {
    pub lane: String,
    pub events: i64,
    pub booked_stage: Option<i64>,
    pub seen_stage: Option<i64>,
    pub booked: i64,
    pub pending: i64,
    pub rejected: i64,
    pub exceptions: i64,
    pub first_ms: i64,
    pub last_progress_ms: i64,
    pub lane_status: Option<String>,
    pub waiting_reason: Option<String>,
    pub waiting_since_ms: Option<i64>,
}

/// An order's row from its columns.
pub(crate) fn order_row(c: OrderCols) -> OrderRow {
    let (kind, reference) = c.lane.split_once(':').unwrap_or(("order", c.lane.as_str()));
    let (kind, reference) = (kind.to_string(), reference.to_string());
    let rejected = non_negative(c.rejected);
    let delivered = c.booked_stage == Some(5);
    let state = match c.lane_status.as_deref() {
        Some("blocked") => "blocked",
        Some("parked") => "parked",
        _ if delivered => "delivered",
        _ if rejected > 0 => "rejected",
        _ => "in_progress",
    };
    OrderRow {
        lane: c.lane,
        reference,
        kind,
        state: state.into(),
        booked_stage: c.booked_stage.map(stage_name),
        seen_stage: c.seen_stage.map(stage_name),
        events: non_negative(c.events),
        booked: non_negative(c.booked),
        pending: non_negative(c.pending),
        rejected,
        exceptions: non_negative(c.exceptions),
        first_ms: c.first_ms,
        last_progress_ms: c.last_progress_ms,
        waiting_reason: c.waiting_reason,
        waiting_since_ms: c.waiting_since_ms,
    }
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

pub(crate) const TIMELINE_SQL: &str = "
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
        Ok(TimelineCols {
            device: r.get(0)?,
            epoch: r.get(1)?,
            seq: r.get(2)?,
            id: r.get(3)?,
            kind: r.get(4)?,
            state: r.get(5)?,
            document: r.get(6)?,
            reason: r.get(7)?,
            last_error: r.get(8)?,
            attempts: r.get(9)?,
            received_ms: r.get(10)?,
            updated_ms: r.get(11)?,
            late: r.get(12)?,
            envelope: r.get(13)?,
            dead_letter: r.get(14)?,
            stage: r.get(15)?,
        })
    })?;
    let mut cols = Vec::new();
    for row in rows {
        cols.push(row?);
    }
    Ok(timeline_of(cols))
}

/// The columns of [`TIMELINE_SQL`].
#[derive(Debug, Clone)]
pub(crate) struct TimelineCols {
    pub device: String,
    pub epoch: i64,
    pub seq: i64,
    pub id: String,
    pub kind: String,
    pub state: String,
    pub document: Option<String>,
    pub reason: Option<String>,
    pub last_error: Option<String>,
    pub attempts: i64,
    pub received_ms: i64,
    pub updated_ms: Option<i64>,
    pub late: bool,
    pub envelope: Vec<u8>,
    pub dead_letter: Option<i64>,
    pub stage: Option<i64>,
}

/// A lane's timeline from its events' columns, in the order they happened
/// (capture time, then business stage).
pub(crate) fn timeline_of(rows: Vec<TimelineCols>) -> Vec<TimelineEvent> {
    let mut out: Vec<(Option<i64>, TimelineEvent)> = rows
        .into_iter()
        .map(|c| {
            let decoded = codec::decode::<Envelope>(&c.envelope).ok();
            (
                c.stage,
                TimelineEvent {
                    device: c.device,
                    epoch: non_negative(c.epoch),
                    seq: non_negative(c.seq),
                    id: c.id,
                    kind: c.kind,
                    detail: decoded
                        .as_ref()
                        .map_or_else(|| "(unreadable)".into(), describe),
                    captured_ms: decoded.as_ref().map(|e| e.captured_ms),
                    received_ms: c.received_ms,
                    verdict_ms: if c.state == "pending" {
                        None
                    } else {
                        c.updated_ms
                    },
                    verdict: c.state,
                    document: c.document,
                    reason: c.reason,
                    last_error: c.last_error,
                    attempts: non_negative(c.attempts),
                    late: c.late,
                    dead_letter: c.dead_letter,
                },
            )
        })
        .collect();
    out.sort_by_key(|(stage, e)| {
        (
            e.captured_ms.unwrap_or(e.received_ms),
            stage.unwrap_or(i64::MAX),
            e.device.clone(),
            e.seq,
        )
    });
    out.into_iter().map(|(_, e)| e).collect()
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
            let kind = exception_kind_name(kind).replace('_', " ");
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

pub(crate) const EXCEPTIONS_SQL: &str = "
SELECT device, seq, lane, state, document, received_ms, envelope
FROM events WHERE kind = 'exception' ORDER BY received_ms DESC LIMIT ?1";

/// The newest exceptions (at most [`EXCEPTION_LIMIT`]) and their counts
/// by kind and age.
pub fn exceptions(
    conn: &Connection,
    now_ms: i64,
) -> rusqlite::Result<(Vec<ExceptionKindCount>, Vec<ExceptionRow>)> {
    let mut stmt = conn.prepare_cached(EXCEPTIONS_SQL)?;
    let limit = i64::try_from(EXCEPTION_LIMIT).unwrap_or(i64::MAX);
    let rows = stmt.query_map(params![limit], |r| {
        Ok(ExceptionCols {
            device: r.get(0)?,
            seq: r.get(1)?,
            lane: r.get(2)?,
            state: r.get(3)?,
            document: r.get(4)?,
            received_ms: r.get(5)?,
            envelope: r.get(6)?,
        })
    })?;
    let mut items = Vec::new();
    for row in rows {
        items.push(exception_row(row?, now_ms));
    }
    Ok((exception_counts(&items), items))
}

/// The columns of [`EXCEPTIONS_SQL`].
#[derive(Debug, Clone)]
pub(crate) struct ExceptionCols {
    pub device: String,
    pub seq: i64,
    pub lane: Option<String>,
    pub state: String,
    pub document: Option<String>,
    pub received_ms: i64,
    pub envelope: Vec<u8>,
}

/// An exception's row from its columns and the time.
pub(crate) fn exception_row(c: ExceptionCols, now_ms: i64) -> ExceptionRow {
    let decoded = codec::decode::<Envelope>(&c.envelope).ok();
    let (kind, note) = match decoded.as_ref().and_then(|e| e.business_event()) {
        Some(e) => match &e.detail {
            EventDetail::Exception { kind, note } => (exception_kind_name(kind), note.clone()),
            _ => ("other".into(), String::new()),
        },
        None => ("other".into(), "(unreadable)".into()),
    };
    let captured_ms = decoded.map_or(c.received_ms, |e| e.captured_ms);
    ExceptionRow {
        device: c.device,
        seq: non_negative(c.seq),
        kind,
        note,
        lane: c.lane,
        captured_ms,
        age_ms: now_ms.saturating_sub(captured_ms).max(0),
        verdict: c.state,
        document: c.document,
    }
}

/// Exception counts by kind and age, the kinds always present.
pub(crate) fn exception_counts(items: &[ExceptionRow]) -> Vec<ExceptionKindCount> {
    const HOUR: i64 = 3_600_000;
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
    for item in items {
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
    counts
}

/// An ERP verdict of one event, for the dead-letter list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EventVerdict {
    /// `pending`, `booked`, `rejected`.
    pub state: String,
    /// The document reference, when booked.
    pub document: Option<String>,
}

pub(crate) const EVENT_VERDICT_SQL: &str =
    "SELECT state, document FROM events WHERE device = ?1 AND epoch = ?2 AND seq = ?3";

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
    conn.prepare_cached(EVENT_VERDICT_SQL)?
        .query_row(params![device, epoch, seq], |r| {
            Ok(EventVerdict {
                state: r.get(0)?,
                document: r.get(1)?,
            })
        })
        .optional()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inbox::{Inbox, InboxStore};
    use dockline_protocol::status::QueueHealth;
    use dockline_protocol::{
        Batch, BusinessEvent, DeviceId, EventId, ExceptionKind, Outcome, Payload, Priority,
        References, SiteId, Status, StatusKind, TimeSource,
    };

    const NOW: i64 = 1_764_000_000_000;
    const MIN: i64 = 60_000;

    fn open() -> (tempfile::TempDir, Inbox) {
        let dir = tempfile::tempdir().expect("tempdir");
        let inbox = Inbox::open(&dir.path().join("inbox.db")).expect("inbox");
        (dir, inbox)
    }

    fn site() -> SiteId {
        SiteId::new("dc-north").expect("site")
    }

    fn status(device: &str, kind: StatusKind) -> Status {
        Status {
            v: 1,
            device: DeviceId::new(device).expect("id"),
            session: 1,
            at_ms: NOW,
            kind,
        }
    }

    fn birth() -> StatusKind {
        StatusKind::Birth {
            agent_version: "0.1.0".into(),
            verdicts_wanted: None,
        }
    }

    /// Stores `detail` of `order` as `device`'s `seq`, captured `ago` ms
    /// before [`NOW`] and received then.
    fn store(
        inbox: &mut Inbox,
        device: &str,
        seq: u64,
        detail: EventDetail,
        order: &str,
        ago: i64,
    ) {
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&seq.to_be_bytes());
        id[8] = device.len() as u8;
        id[9] = device.as_bytes()[device.len() - 1];
        let envelope = Envelope {
            v: 1,
            device: DeviceId::new(device).expect("id"),
            epoch: 1,
            seq,
            id: EventId(id),
            captured_ms: NOW - ago,
            time_source: TimeSource::Ntp,
            priority: Priority::MustDeliver,
            payload: Payload::Event(BusinessEvent {
                detail,
                refs: References {
                    order: Some(order.into()),
                    ..References::default()
                },
            }),
        };
        let batch = Batch {
            v: 1,
            device: envelope.device.clone(),
            epoch: 1,
            first_held: 1,
            events: vec![envelope],
            shed: Vec::new(),
        };
        inbox
            .store_batch(&site(), &batch, NOW - ago)
            .expect("store");
    }

    fn book(inbox: &mut Inbox, device: &str, seq: u64, at: i64) {
        let outcome = Outcome::Booked {
            document: format!("DOC-{device}-{seq}"),
        };
        let device = DeviceId::new(device).expect("id");
        assert!(
            inbox
                .record_verdict(&device, 1, seq, &outcome, at)
                .expect("verdict")
        );
    }

    fn pick() -> EventDetail {
        EventDetail::Picked {
            item: "04012345678901".into(),
            quantity: 2,
            lot: Some("L7".into()),
        }
    }

    fn pack() -> EventDetail {
        EventDetail::Packed {
            quantity: 2,
            weight: None,
        }
    }

    fn short_pick() -> EventDetail {
        EventDetail::Exception {
            kind: ExceptionKind::ShortPick,
            note: "1 of 2".into(),
        }
    }

    #[test]
    fn devices_show_state_backlog_age_and_peripherals() {
        let (_dir, mut inbox) = open();
        let scanner = DeviceHealth {
            name: "scanner".into(),
            connected: true,
            readings: 5,
            rejected: 0,
            last_reading_ms: Some(NOW - 1000),
        };
        let heartbeat = StatusKind::Heartbeat {
            queued: 40,
            oldest_unacked_ms: 60_000,
            health: Some(QueueHealth {
                devices: Some(vec![scanner]),
                ..QueueHealth::default()
            }),
        };
        inbox
            .record_status(&site(), &status("hh-01", birth()), NOW - 10 * MIN)
            .expect("birth");
        inbox
            .record_status(&site(), &status("hh-01", heartbeat), NOW - 30_000)
            .expect("heartbeat");
        inbox
            .record_status(&site(), &status("hh-02", birth()), NOW - 5 * MIN)
            .expect("birth");
        inbox
            .record_status(
                &site(),
                &status("van-01", StatusKind::Death { graceful: true }),
                NOW - MIN,
            )
            .expect("death");
        let rows = inbox
            .read(|c| devices(c, &[], NOW, 90_000))
            .expect("devices");
        let by = |d: &str| rows.iter().find(|r| r.device == d).expect("row").clone();
        let hh01 = by("hh-01");
        assert_eq!(hh01.state, "online");
        assert_eq!(
            hh01.since_ms,
            Some(NOW - 10 * MIN),
            "online since its birth"
        );
        assert_eq!(hh01.backlog, Some(40));
        assert_eq!(
            hh01.oldest_unsent_age_ms,
            Some(60_000 + 30_000),
            "the heartbeat's age plus the time since it"
        );
        assert_eq!(hh01.peripherals.len(), 1);
        assert!(hh01.peripherals[0].connected);
        assert_eq!(hh01.peripherals[0].name, "scanner");
        assert_eq!(by("hh-02").state, "silent", "five minutes without a word");
        assert_eq!(by("hh-02").backlog, None, "no heartbeat yet");
        assert_eq!(by("van-01").state, "offline");
        assert_eq!(by("van-01").since_ms, Some(NOW - MIN));
    }

    #[test]
    fn orders_have_a_state_a_stage_and_stall_without_progress() {
        let (_dir, mut inbox) = open();
        store(&mut inbox, "hh-01", 1, pick(), "SO-1", 3 * 60 * MIN);
        store(
            &mut inbox,
            "hh-01",
            2,
            short_pick(),
            "SO-1",
            3 * 60 * MIN - 1000,
        );
        store(&mut inbox, "hh-01", 3, pack(), "SO-1", 3 * 60 * MIN - 2000);
        for seq in 1..=3 {
            book(&mut inbox, "hh-01", seq, NOW - 3 * 60 * MIN + 5000);
        }
        store(&mut inbox, "hh-02", 1, pick(), "SO-2", MIN);
        let all = inbox.read(orders).expect("orders");
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].reference, "SO-2", "latest progress first");
        let so1 = &all[1];
        assert_eq!(
            (so1.state.as_str(), so1.booked_stage.as_deref()),
            ("in_progress", Some("packed"))
        );
        assert_eq!(
            (so1.events, so1.booked, so1.pending, so1.exceptions),
            (3, 3, 0, 1)
        );
        assert_eq!(so1.last_progress_ms, NOW - 3 * 60 * MIN + 5000);
        let so2 = &all[0];
        assert_eq!((so2.booked_stage.as_deref(), so2.pending), (None, 1));
        let stalled_30 = stalled(&all, NOW, 30 * MIN);
        assert_eq!(
            stalled_30
                .iter()
                .map(|o| o.reference.as_str())
                .collect::<Vec<_>>(),
            ["SO-1"]
        );
        assert!(stalled(&all, NOW, 4 * 60 * MIN).is_empty());
        let exact = inbox
            .read(|c| stalled_orders(c, NOW - 30 * MIN))
            .expect("stalled");
        assert_eq!(exact, stalled_30, "the query and the filter agree");
        assert!(
            inbox
                .read(|c| stalled_orders(c, NOW - 4 * 60 * MIN))
                .expect("stalled")
                .is_empty()
        );
        let counts = count_by_state(&all);
        assert_eq!(counts["in_progress"], 2);
        assert_eq!(counts["delivered"], 0, "every state is listed");

        let events = inbox.read(|c| timeline(c, "order:SO-1")).expect("timeline");
        let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(kinds, ["picked", "exception", "packed"], "in capture order");
        assert_eq!(events[0].detail, "2 × 04012345678901 (lot L7)");
        assert_eq!(events[0].verdict, "booked");
        assert_eq!(events[0].document.as_deref(), Some("DOC-hh-01-1"));
        assert_eq!(events[1].detail, "short pick: 1 of 2");
        assert!(
            inbox
                .read(|c| timeline(c, "order:nope"))
                .expect("timeline")
                .is_empty()
        );
    }

    #[test]
    fn a_stalled_order_shows_behind_more_recent_orders_than_the_list_holds() {
        let (_dir, mut inbox) = open();
        store(&mut inbox, "hh-01", 1, pick(), "SO-OLD", 3 * 60 * MIN);
        let device = DeviceId::new("hh-02").expect("id");
        let events: Vec<Envelope> = (1..=ORDER_LIMIT as u64 + 1)
            .map(|seq| {
                let mut id = [0u8; 16];
                id[..8].copy_from_slice(&seq.to_be_bytes());
                id[15] = 2;
                Envelope {
                    v: 1,
                    device: device.clone(),
                    epoch: 1,
                    seq,
                    id: EventId(id),
                    captured_ms: NOW - MIN,
                    time_source: TimeSource::Ntp,
                    priority: Priority::MustDeliver,
                    payload: Payload::Event(BusinessEvent {
                        detail: pick(),
                        refs: References {
                            order: Some(format!("SO-{seq}")),
                            ..References::default()
                        },
                    }),
                }
            })
            .collect();
        let batch = Batch {
            v: 1,
            device,
            epoch: 1,
            first_held: 1,
            events,
            shed: Vec::new(),
        };
        inbox
            .store_batch(&site(), &batch, NOW - MIN)
            .expect("store");
        let newest = inbox.read(orders).expect("orders");
        assert_eq!(newest.len(), ORDER_LIMIT);
        assert!(newest.iter().all(|o| o.reference != "SO-OLD"));
        let stuck = inbox
            .read(|c| stalled_orders(c, NOW - 30 * MIN))
            .expect("stalled");
        assert_eq!(
            stuck
                .iter()
                .map(|o| o.reference.as_str())
                .collect::<Vec<_>>(),
            ["SO-OLD"]
        );
    }

    #[test]
    fn exceptions_are_counted_by_kind_and_age() {
        let (_dir, mut inbox) = open();
        store(&mut inbox, "hh-01", 1, short_pick(), "SO-1", 10 * MIN);
        store(&mut inbox, "hh-01", 2, short_pick(), "SO-1", 5 * 60 * MIN);
        store(&mut inbox, "hh-01", 3, short_pick(), "SO-1", 30 * 60 * MIN);
        let refused = EventDetail::Exception {
            kind: ExceptionKind::DeliveryRefused,
            note: String::new(),
        };
        store(&mut inbox, "van-01", 1, refused, "SO-2", 2 * MIN);
        store(&mut inbox, "hh-01", 4, pick(), "SO-3", MIN);
        let (counts, items) = inbox.read(|c| exceptions(c, NOW)).expect("exceptions");
        assert_eq!(items.len(), 4, "picks are no exceptions");
        assert_eq!(items[0].kind, "delivery_refused", "newest first");
        let short = counts
            .iter()
            .find(|k| k.kind == "short_pick")
            .expect("short");
        assert_eq!(
            (short.count, short.last_hour, short.last_day, short.older),
            (3, 1, 1, 1)
        );
        assert_eq!(short.oldest_age_ms, 30 * 60 * MIN);
        let weight = counts
            .iter()
            .find(|k| k.kind == "weight_mismatch")
            .expect("listed at zero");
        assert_eq!(weight.count, 0);
        assert_eq!(counts[0].kind, "short_pick", "most first");
    }
}
