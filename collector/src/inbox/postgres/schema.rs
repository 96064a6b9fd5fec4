//! The PostgreSQL inbox's schema: one constant per version (its own count,
//! not SQLite's), in the order [`crate::inbox::migrate`] applies them, all
//! pending steps in one transaction under an advisory lock, so collectors
//! starting together do not race. The version is the one row of
//! `dockline_schema`.

use crate::inbox::InboxError;
use crate::inbox::migrate::{self, SchemaTx, Step};

use super::{Db, On};

/// Current PostgreSQL schema version.
pub const PG_SCHEMA_VERSION: i64 = 2;

/// Key of the advisory lock migrations hold (`dockline` in ASCII).
const MIGRATION_LOCK: i64 = 0x646f_636b_6c69_6e65;

/// Version 2: the quarantine of the SQLite schema's version 6.
const PG_V2: &str = "
CREATE TABLE quarantine (
    device      TEXT   NOT NULL,
    epoch       BIGINT NOT NULL,
    seq         BIGINT NOT NULL,
    id          TEXT   NOT NULL,
    reason      TEXT   NOT NULL,
    envelope    BYTEA  NOT NULL,
    received_ms BIGINT NOT NULL,
    PRIMARY KEY (device, epoch, seq, id)
);
";

/// Version 1: the SQLite schema at its version 5, plus lane claims.
const PG_V1: &str = "
CREATE TABLE events (
    device      TEXT   NOT NULL,
    epoch       BIGINT NOT NULL,
    seq         BIGINT NOT NULL,
    site        TEXT   NOT NULL,
    id          TEXT   NOT NULL,
    kind        TEXT   NOT NULL,
    envelope    BYTEA  NOT NULL,
    received_ms BIGINT NOT NULL,
    state       TEXT   NOT NULL CHECK (state IN ('pending','booked','rejected','skipped')),
    attempts    BIGINT NOT NULL DEFAULT 0,
    document    TEXT,
    reason      TEXT,
    last_error  TEXT,
    updated_ms  BIGINT,
    lane        TEXT,
    stage       BIGINT,
    late        BOOLEAN NOT NULL DEFAULT false,
    PRIMARY KEY (device, epoch, seq)
);
CREATE INDEX events_lane_pending ON events (lane, device, epoch, seq) WHERE state = 'pending';
CREATE TABLE watermarks (
    device         TEXT   NOT NULL,
    epoch          BIGINT NOT NULL,
    complete_up_to BIGINT NOT NULL,
    PRIMARY KEY (device, epoch)
);
CREATE TABLE shed (
    device TEXT   NOT NULL,
    epoch  BIGINT NOT NULL,
    lo     BIGINT NOT NULL,
    hi     BIGINT NOT NULL,
    PRIMARY KEY (device, epoch, lo, hi)
);
CREATE TABLE devices (
    device           TEXT PRIMARY KEY,
    site             TEXT    NOT NULL,
    online           BOOLEAN NOT NULL DEFAULT false,
    session          BIGINT  NOT NULL DEFAULT 0,
    last_seen_ms     BIGINT,
    online_since_ms  BIGINT,
    backlog          BIGINT,
    oldest_unsent_ms BIGINT,
    heartbeat_ms     BIGINT,
    peripherals      TEXT
);
CREATE TABLE counters (
    name  TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);
INSERT INTO counters (name, value) VALUES ('duplicates', 0), ('refused', 0)
    ON CONFLICT DO NOTHING;
CREATE TABLE attempts (
    device   TEXT   NOT NULL,
    epoch    BIGINT NOT NULL,
    seq      BIGINT NOT NULL,
    n        BIGINT NOT NULL,
    at_ms    BIGINT NOT NULL,
    request  TEXT   NOT NULL,
    status   BIGINT,
    error    TEXT,
    body     TEXT   NOT NULL,
    decision TEXT   NOT NULL,
    PRIMARY KEY (device, epoch, seq, n)
);
CREATE TABLE dead_letters (
    id           BIGSERIAL PRIMARY KEY,
    device       TEXT    NOT NULL,
    epoch        BIGINT  NOT NULL,
    seq          BIGINT  NOT NULL,
    site         TEXT    NOT NULL,
    event_id     TEXT    NOT NULL,
    kind         TEXT    NOT NULL,
    envelope     BYTEA   NOT NULL,
    class        TEXT    NOT NULL,
    reason       TEXT    NOT NULL,
    erp_rejected BOOLEAN NOT NULL,
    attempts     TEXT    NOT NULL,
    state        TEXT    NOT NULL CHECK (state IN ('open','replayed','discarded')),
    created_ms   BIGINT  NOT NULL,
    resolved_ms  BIGINT,
    resolution   TEXT,
    lane         TEXT
);
CREATE INDEX dead_letters_open ON dead_letters (device) WHERE state = 'open';
CREATE INDEX dead_letters_open_lane ON dead_letters (lane) WHERE state = 'open';
CREATE TABLE lanes (
    lane        TEXT PRIMARY KEY,
    top_stage   BIGINT,
    wake_ms     BIGINT,
    status      TEXT CHECK (status IN ('parked','blocked')),
    reason      TEXT,
    since_ms    BIGINT,
    owner       TEXT,
    lease_until BIGINT
);
CREATE INDEX lanes_wake ON lanes (wake_ms) WHERE wake_ms IS NOT NULL;
CREATE INDEX lanes_status ON lanes (status) WHERE status IS NOT NULL;
CREATE TABLE followups (
    id          TEXT PRIMARY KEY,
    kind        TEXT   NOT NULL,
    device      TEXT   NOT NULL,
    epoch       BIGINT NOT NULL,
    seq         BIGINT NOT NULL,
    order_ref   TEXT   NOT NULL,
    body        BYTEA  NOT NULL,
    state       TEXT   NOT NULL CHECK (state IN ('pending','sent','failed')),
    attempts    BIGINT NOT NULL DEFAULT 0,
    bounded     BIGINT NOT NULL DEFAULT 0,
    next_ms     BIGINT NOT NULL,
    last_error  TEXT,
    created_ms  BIGINT NOT NULL,
    sent_ms     BIGINT
);
CREATE INDEX followups_due ON followups (next_ms) WHERE state = 'pending';
";

/// The PostgreSQL steps, oldest first.
const STEPS: [Step; 2] = [
    Step {
        version: 1,
        sql: PG_V1,
    },
    Step {
        version: PG_SCHEMA_VERSION,
        sql: PG_V2,
    },
];

/// A migration's transaction; `shown` is the URL without its password.
struct DbSchema<'a> {
    db: &'a Db<'a>,
    shown: &'a str,
}

impl SchemaTx for DbSchema<'_> {
    fn place(&self) -> String {
        self.shown.to_owned()
    }

    async fn version(&self) -> Result<i64, InboxError> {
        Ok(self
            .db
            .opt("SELECT max(version) FROM dockline_schema", &[])
            .await?
            .and_then(|r| r.get::<_, Option<i64>>(0))
            .unwrap_or(0))
    }

    async fn run(&self, sql: &'static str) -> Result<(), InboxError> {
        match &self.db.on {
            On::Tx(t) => t.batch_execute(sql).await?,
            On::Client(c) => c.batch_execute(sql).await?,
        }
        Ok(())
    }

    async fn set_version(&self, version: i64) -> Result<(), InboxError> {
        self.db.exec("DELETE FROM dockline_schema", &[]).await?;
        self.db
            .exec(
                "INSERT INTO dockline_schema (version) VALUES ($1)",
                &[&version],
            )
            .await?;
        Ok(())
    }
}

/// Brings the schema to [`PG_SCHEMA_VERSION`] in `db`'s transaction.
pub(super) async fn migrate(db: &Db<'_>, shown: &str) -> Result<(), InboxError> {
    // One collector migrates at a time; the others wait, then find it done.
    db.exec("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    db.exec(
        "CREATE TABLE IF NOT EXISTS dockline_schema (version BIGINT NOT NULL)",
        &[],
    )
    .await?;
    migrate::migrate(&DbSchema { db, shown }, &STEPS).await
}
