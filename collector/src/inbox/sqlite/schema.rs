//! The SQLite inbox's schema: one constant per version, in the order
//! [`crate::inbox::migrate`] applies them (all pending steps in one
//! transaction, the version in `PRAGMA user_version`).

use std::path::Path;

use dockline_protocol::{DeviceId, Envelope, codec};
use rusqlite::{Connection, params};

use crate::delivery::lane;
use crate::inbox::InboxError;
use crate::inbox::migrate::{self, SchemaTx, Step};

/// Current inbox schema version.
pub const SCHEMA_VERSION: i64 = 7;

/// Version 1: events, watermarks, shed ranges, devices, counters. `IF NOT
/// EXISTS` because files from before `user_version` was kept hold it already.
pub(crate) const V1: &str = "
CREATE TABLE IF NOT EXISTS events (
    device      TEXT    NOT NULL,
    epoch       INTEGER NOT NULL,
    seq         INTEGER NOT NULL,
    site        TEXT    NOT NULL,
    id          TEXT    NOT NULL,
    kind        TEXT    NOT NULL,
    envelope    BLOB    NOT NULL,
    received_ms INTEGER NOT NULL,
    state       TEXT    NOT NULL CHECK (state IN ('pending','booked','rejected','skipped')),
    attempts    INTEGER NOT NULL DEFAULT 0,
    document    TEXT,
    reason      TEXT,
    last_error  TEXT,
    updated_ms  INTEGER,
    PRIMARY KEY (device, epoch, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS events_pending ON events (device, epoch, seq) WHERE state = 'pending';
CREATE TABLE IF NOT EXISTS watermarks (
    device         TEXT    NOT NULL,
    epoch          INTEGER NOT NULL,
    complete_up_to INTEGER NOT NULL,
    PRIMARY KEY (device, epoch)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS shed (
    device TEXT    NOT NULL,
    epoch  INTEGER NOT NULL,
    lo     INTEGER NOT NULL,
    hi     INTEGER NOT NULL,
    PRIMARY KEY (device, epoch, lo, hi)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS devices (
    device       TEXT PRIMARY KEY,
    site         TEXT    NOT NULL,
    online       INTEGER NOT NULL DEFAULT 0,
    session      INTEGER NOT NULL DEFAULT 0,
    last_seen_ms INTEGER
);
CREATE TABLE IF NOT EXISTS counters (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
INSERT OR IGNORE INTO counters (name, value) VALUES ('duplicates', 0), ('refused', 0);
";

/// Version 2: attempts and dead letters.
const V2: &str = "
CREATE TABLE attempts (
    device   TEXT    NOT NULL,
    epoch    INTEGER NOT NULL,
    seq      INTEGER NOT NULL,
    n        INTEGER NOT NULL,
    at_ms    INTEGER NOT NULL,
    request  TEXT    NOT NULL,
    status   INTEGER,
    error    TEXT,
    body     TEXT    NOT NULL,
    decision TEXT    NOT NULL,
    PRIMARY KEY (device, epoch, seq, n)
) WITHOUT ROWID;
CREATE TABLE dead_letters (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    device       TEXT    NOT NULL,
    epoch        INTEGER NOT NULL,
    seq          INTEGER NOT NULL,
    site         TEXT    NOT NULL,
    event_id     TEXT    NOT NULL,
    kind         TEXT    NOT NULL,
    envelope     BLOB    NOT NULL,
    class        TEXT    NOT NULL,
    reason       TEXT    NOT NULL,
    erp_rejected INTEGER NOT NULL,
    attempts     TEXT    NOT NULL,
    state        TEXT    NOT NULL CHECK (state IN ('open','replayed','discarded')),
    created_ms   INTEGER NOT NULL,
    resolved_ms  INTEGER,
    resolution   TEXT
);
CREATE INDEX dead_letters_open ON dead_letters (device) WHERE state = 'open';
";

/// Version 3: business lanes. Every business event gets its lane key and
/// stage ([`crate::lane`]); `lanes` keeps per lane what the scheduler needs
/// without reading the lane's events: the highest resolved stage, when to
/// look at it next, and why it waits (for `/v1/lanes`). Dead letters name
/// their lane. Existing rows are filled in by [`backfill_lanes`].
const V3: &str = "
ALTER TABLE events ADD COLUMN lane TEXT;
ALTER TABLE events ADD COLUMN stage INTEGER;
ALTER TABLE events ADD COLUMN late INTEGER NOT NULL DEFAULT 0;
CREATE INDEX events_lane_pending ON events (lane, device, epoch, seq) WHERE state = 'pending';
CREATE TABLE lanes (
    lane       TEXT PRIMARY KEY,
    top_stage  INTEGER,
    wake_ms    INTEGER,
    status     TEXT CHECK (status IN ('parked','blocked')),
    reason     TEXT,
    since_ms   INTEGER
) WITHOUT ROWID;
CREATE INDEX lanes_wake ON lanes (wake_ms) WHERE wake_ms IS NOT NULL;
CREATE INDEX lanes_status ON lanes (status) WHERE status IS NOT NULL;
ALTER TABLE dead_letters ADD COLUMN lane TEXT;
CREATE INDEX dead_letters_open_lane ON dead_letters (lane) WHERE state = 'open';
";

/// Version 4: follow-up webhooks (`invoice.ready` after a booked proof of
/// delivery). A row is written in the transaction that books the proof of
/// delivery, with the exact body to send, so a crash can neither lose it
/// nor change it; it is marked `sent` after the receiver's 2xx. A crash
/// between the two sends it again with the same `webhook-id` and
/// `Idempotency-Key`, which a receiver that de-duplicates drops.
const V4: &str = "
CREATE TABLE followups (
    id          TEXT PRIMARY KEY,
    kind        TEXT    NOT NULL,
    device      TEXT    NOT NULL,
    epoch       INTEGER NOT NULL,
    seq         INTEGER NOT NULL,
    order_ref   TEXT    NOT NULL,
    body        BLOB    NOT NULL,
    state       TEXT    NOT NULL CHECK (state IN ('pending','sent','failed')),
    attempts    INTEGER NOT NULL DEFAULT 0,
    bounded     INTEGER NOT NULL DEFAULT 0,
    next_ms     INTEGER NOT NULL,
    last_error  TEXT,
    created_ms  INTEGER NOT NULL,
    sent_ms     INTEGER
) WITHOUT ROWID;
CREATE INDEX followups_due ON followups (next_ms) WHERE state = 'pending';
";

/// Version 5: what the dashboard shows of each device (see
/// [`crate::dashboard`]): when it last went online or offline (birth or
/// death), and from its latest heartbeat the outbox backlog, the age of its
/// oldest unsent event, when that heartbeat came, and its peripherals as
/// the heartbeat's `dv` list in JSON.
const V5: &str = "
ALTER TABLE devices ADD COLUMN online_since_ms INTEGER;
ALTER TABLE devices ADD COLUMN backlog INTEGER;
ALTER TABLE devices ADD COLUMN oldest_unsent_ms INTEGER;
ALTER TABLE devices ADD COLUMN heartbeat_ms INTEGER;
ALTER TABLE devices ADD COLUMN peripherals TEXT;
";

/// Version 6: events a device sent that were not trusted
/// ([`crate::inbox::watermark`]): too far above its watermark (`far_ahead`), or
/// another event under a number already stored (`seq_conflict`). Kept for
/// the operator; never delivered from here.
const V6: &str = "
CREATE TABLE quarantine (
    device      TEXT    NOT NULL,
    epoch       INTEGER NOT NULL,
    seq         INTEGER NOT NULL,
    id          TEXT    NOT NULL,
    reason      TEXT    NOT NULL,
    envelope    BLOB    NOT NULL,
    received_ms INTEGER NOT NULL,
    PRIMARY KEY (device, epoch, seq, id)
) WITHOUT ROWID;
";

/// Version 7: without `events_pending`. Its key is the primary key's
/// (`device, epoch, seq`), so every query it served the primary key serves
/// too, and lane looks use `events_lane_pending`; dropping it saves one
/// b-tree insert (and later one delete) per stored event. PostgreSQL never
/// had it.
const V7: &str = "
DROP INDEX IF EXISTS events_pending;
";

/// Fills in the lane columns of rows stored before version 3, in the
/// migration's transaction: decodes each business event once.
fn backfill_lanes(tx: &rusqlite::Transaction<'_>) -> rusqlite::Result<()> {
    let mut rows = Vec::new();
    {
        let mut stmt = tx.prepare(
            "SELECT device, epoch, seq, envelope FROM events
             WHERE lane IS NULL AND state IN ('pending', 'booked', 'rejected')",
        )?;
        let mut q = stmt.query([])?;
        while let Some(r) = q.next()? {
            rows.push((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, Vec<u8>>(3)?,
            ));
        }
    }
    for (device, epoch, seq, bytes) in rows {
        // An unreadable row gets its device's lane; delivery rejects it.
        let (lane, stage) = match (
            DeviceId::new(device.as_str()),
            codec::decode::<Envelope>(&bytes),
        ) {
            (Ok(dev), Ok(env)) => match env.business_event() {
                Some(e) => (lane::lane_key(&dev, e), lane::stage(&e.detail)),
                None => (format!("device:{device}"), None),
            },
            _ => (format!("device:{device}"), None),
        };
        tx.execute(
            "UPDATE events SET lane = ?4, stage = ?5 WHERE device = ?1 AND epoch = ?2 AND seq = ?3",
            params![device, epoch, seq, lane, stage],
        )?;
    }
    tx.execute_batch(
        "INSERT OR IGNORE INTO lanes (lane, top_stage, wake_ms)
           SELECT lane, max(CASE WHEN state IN ('booked','rejected') THEN stage END),
                  CASE WHEN max(state = 'pending') THEN 0 END
           FROM events WHERE lane IS NOT NULL GROUP BY lane;
         UPDATE dead_letters SET lane = (SELECT e.lane FROM events e WHERE e.device = dead_letters.device
           AND e.epoch = dead_letters.epoch AND e.seq = dead_letters.seq) WHERE lane IS NULL;",
    )
}

/// The SQLite steps, oldest first ([`crate::inbox::migrate`] runs them).
const STEPS: [Step; 7] = [
    Step {
        version: 1,
        sql: V1,
    },
    Step {
        version: 2,
        sql: V2,
    },
    Step {
        version: 3,
        sql: V3,
    },
    Step {
        version: 4,
        sql: V4,
    },
    Step {
        version: 5,
        sql: V5,
    },
    Step {
        version: 6,
        sql: V6,
    },
    Step {
        version: SCHEMA_VERSION,
        sql: V7,
    },
];

/// A migration's transaction on the file at `path`; the version is
/// `PRAGMA user_version`, which SQLite writes inside the transaction.
struct FileSchema<'a> {
    tx: rusqlite::Transaction<'a>,
    path: &'a Path,
}

impl FileSchema<'_> {
    fn err(&self, source: rusqlite::Error) -> InboxError {
        InboxError::Open {
            path: self.path.into(),
            source,
        }
    }
}

impl SchemaTx for FileSchema<'_> {
    fn place(&self) -> String {
        self.path.display().to_string()
    }

    async fn version(&self) -> Result<i64, InboxError> {
        self.tx
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(|e| self.err(e))
    }

    async fn run(&self, sql: &'static str) -> Result<(), InboxError> {
        self.tx.execute_batch(sql).map_err(|e| self.err(e))
    }

    async fn after_step(&self, version: i64) -> Result<(), InboxError> {
        if version == 3 {
            backfill_lanes(&self.tx).map_err(|e| self.err(e))?;
        }
        Ok(())
    }

    async fn set_version(&self, version: i64) -> Result<(), InboxError> {
        self.tx
            .pragma_update(None, "user_version", version)
            .map_err(|e| self.err(e))
    }
}

/// Brings the schema to [`SCHEMA_VERSION`] in one transaction.
pub(super) fn migrate(conn: &mut Connection, path: &Path) -> Result<(), InboxError> {
    let tx = conn.transaction().map_err(|source| InboxError::Open {
        path: path.into(),
        source,
    })?;
    let schema = FileSchema { tx, path };
    crate::inbox::ready(migrate::migrate(&schema, &STEPS))??;
    schema.tx.commit().map_err(|source| InboxError::Open {
        path: path.into(),
        source,
    })
}
