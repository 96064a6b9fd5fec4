//! The PostgreSQL inbox: the same contract as the SQLite [`Inbox`]
//! ([`InboxStore`], invariants in [`crate::inbox`]), in a database that
//! several collectors share at once (`[inbox] url = "postgres://…"`), each
//! receiving part of the devices' batches through one MQTT shared
//! subscription.
//!
//! # What changes with several writers
//!
//! - **Dedup.** `events` has the primary key `(device, epoch, seq)`; rows go
//!   in with `ON CONFLICT DO NOTHING`, so a batch that reaches two
//!   collectors is stored once.
//! - **Watermarks.** Each collector sees only part of a device's stream, so
//!   the watermark is computed from the table, never from memory. A batch's
//!   transaction first locks its `(device, epoch)` watermark row (`SELECT …
//!   FOR UPDATE`): batches of one device are applied one after the other,
//!   and each sees the rows the previous one committed (READ COMMITTED
//!   takes a new snapshot per statement). The watermark only grows
//!   (`GREATEST`).
//! - **Lanes.** A lane is delivered by one collector at a time: handing out
//!   its next event ([`InboxStore::next_in_lane`]) claims it (`lanes.owner`,
//!   `lanes.lease_until`) under the lane row's lock; another collector's
//!   `next_in_lane` then returns `None` and its `due_lanes` leaves the lane
//!   out until the claim ends (the owner found the lane idle, parked or
//!   blocked) or expires (the owner died: after `lease_ms` another
//!   collector takes the lane over, and the event is retried with the same
//!   idempotency key). Before every ERP attempt the owner renews its claim
//!   ([`InboxStore::hold_lane`]) and stops if it was lost, so two
//!   collectors never post into one lane at once. `lease_ms` must exceed
//!   the ERP timeout (checked with the config). The first attempt right
//!   after a look skips the renewal when the look's claim outlasts the
//!   request ([`crate::delivery::lane::must_renew`]).
//! - **Group commits.** A group of delivery ops ([`InboxStore::run_group`])
//!   runs set-wise in one transaction: one statement for all its verdicts,
//!   one claiming all its lanes, one reading all their first heads
//!   ([`crate::inbox::group`]), so a busy collector spends a few statements
//!   per group, not several per event.
//! - **Verdicts, follow-ups, counters.** A verdict changes only a `pending`
//!   row (PostgreSQL re-checks the `WHERE` after waiting on a concurrent
//!   update), so it is recorded and its `invoice.ready` queued once;
//!   counters are single-statement upserts. Due follow-ups are claimed with
//!   `FOR UPDATE SKIP LOCKED` and their `next_ms` moved past the lease, so
//!   two collectors do not send one at the same time.
//! - **Conflicts.** A transaction that PostgreSQL aborts as a deadlock or
//!   serialization failure is run again (a few times, with a short pause).
//!
//! # Layout
//!
//! The tables and columns of the SQLite inbox at its schema version 5
//! (`BIGINT` for integers, `BYTEA` for envelopes, `BOOLEAN` for flags),
//! plus `lanes.owner` and `lanes.lease_until`. The schema version is the
//! one row of `dockline_schema`; migrations run under an advisory lock, so
//! collectors starting together do not race. Tables live in the first
//! schema of the connection's `search_path` (set one per deployment with
//! `?options=-c%20search_path%3Dname` in the URL).
//!
//! # Threads
//!
//! The methods are blocking, like SQLite's: each runs its queries on a
//! current-thread tokio runtime of its own ([`tokio::runtime::Runtime::block_on`]),
//! called from the blocking pool by [`crate::inbox::InboxHandle`]. The
//! connection is re-opened when the server closed it. The inbox may be
//! dropped anywhere, also inside async code: its runtime then shuts down in
//! the background instead of blocking (which would abort the process).

mod batch_sql;
mod bookkeeping_sql;
mod resolve_sql;
mod schema;

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::Duration;

use dockline_protocol::{Batch, DeviceId, Envelope, Outcome, SiteId, Status, Verdict, codec};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, NoTls, Row, Statement, Transaction};

use crate::delivery::lane::LaneEvent;
use crate::inbox::batch_write;
use crate::inbox::bookkeeping::{self, InboxSql};
use crate::inbox::lanes::{self, ChosenRow, HeadRow, LaneNow, chosen_event};
use crate::inbox::read_model::{
    self as queries, DeviceCols, DeviceRow, EventVerdict, ExceptionCols, ExceptionKindCount,
    ExceptionRow, OrderCols, OrderRow, TimelineCols, TimelineEvent,
};
use crate::inbox::watermark;
use crate::inbox::{
    AttemptLog, DeadLetter, DeadLetterSummary, DeviceHoles, Followup, FollowupResult, InboxError,
    InboxStore, LaneStatus, MAX_BODY_EXCERPT, NewDeadLetter, NextPending, Resolution, Stats,
    StoreOutcome, excerpt, from_sql, last_error_of, to_sql,
};
use crate::inbox::{GroupAnswer, GroupDone, GroupOp, group_answers, run_alone};
use crate::inbox::{group, resolve, verdict};
use crate::ingest::registry::DeviceConfig;

pub use schema::PG_SCHEMA_VERSION;

/// Default lane and follow-up claim, ms: how long a lane whose collector
/// died waits before another collector takes it over.
pub const DEFAULT_LEASE_MS: u64 = 30_000;

/// Transactions run again after a deadlock or serialization failure.
const MAX_TRIES: u32 = 8;

/// Key of the session advisory lock the gap-auditing collector holds
/// (`docklgap`).
const AUDIT_LOCK: i64 = 0x646f_636b_6c67_6170;

/// `sql` with SQLite's `?n` placeholders as PostgreSQL's `$n`.
fn placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '?' && chars.peek().is_some_and(char::is_ascii_digit) {
            out.push('$');
        } else {
            out.push(c);
        }
    }
    out
}

/// The dashboard's SQL ([`crate::inbox::read_model`]) in PostgreSQL's
/// placeholders, made once.
static ORDERS_SQL: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| placeholders(queries::ORDERS_SQL));
static STALLED_SQL: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| placeholders(queries::STALLED_SQL));
static TIMELINE_SQL: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| placeholders(queries::TIMELINE_SQL));
static EXCEPTIONS_SQL: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| placeholders(queries::EXCEPTIONS_SQL));
static EVENT_VERDICT_SQL: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| placeholders(queries::EVENT_VERDICT_SQL));

/// The URL without its password, for messages and logs: the password of
/// `user:password@`, of a `password=` query parameter (tokio-postgres reads
/// one there too) and of a `password=` key in the `key=value` form (quoted
/// values with spaces included) all become `***`.
pub fn redact_url(url: &str) -> String {
    // URL form: scheme://user:password@host…?password=…
    if let Some((scheme, rest)) = url.split_once("://") {
        let (authority, tail) = match rest.find(['/', '?']) {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        let authority = match authority.rsplit_once('@') {
            Some((userinfo, host)) => match userinfo.split_once(':') {
                Some((user, _password)) => format!("{user}:***@{host}"),
                None => authority.to_owned(),
            },
            None => authority.to_owned(),
        };
        let tail = match tail.split_once('?') {
            Some((path, query)) => {
                let query = query
                    .split('&')
                    .map(|kv| match kv.split_once('=') {
                        Some((key, _)) if key.eq_ignore_ascii_case("password") => {
                            format!("{key}=***")
                        }
                        _ => kv.to_owned(),
                    })
                    .collect::<Vec<_>>()
                    .join("&");
                format!("{path}?{query}")
            }
            None => tail.to_owned(),
        };
        return format!("{scheme}://{authority}{tail}");
    }
    // key=value form: hide the value of password=…, quoted or not.
    let mut out = Vec::new();
    let mut in_quoted_password = false;
    for kv in url.split_whitespace() {
        if in_quoted_password {
            in_quoted_password = !ends_quote(kv);
            continue;
        }
        match kv.split_once('=') {
            Some((key, value)) if key.eq_ignore_ascii_case("password") => {
                out.push("password=***".to_owned());
                in_quoted_password =
                    value.starts_with('\'') && (value.len() == 1 || !ends_quote(value));
            }
            _ => out.push(kv.to_owned()),
        }
    }
    out.join(" ")
}

/// Whether `word` ends a single-quoted value (a `'` not escaped by `\`).
fn ends_quote(word: &str) -> bool {
    word.ends_with('\'') && !word.ends_with("\\'")
}

/// What every query needs besides the connection.
#[derive(Debug)]
struct Ctx {
    /// This collector's claim name (`lanes.owner`).
    owner: String,
    /// Booking a proof of delivery queues an `invoice.ready` follow-up.
    invoice_followups: bool,
    /// Lane and follow-up claim length, ms.
    lease_ms: i64,
    /// `[security] max_seq_ahead` ([`crate::inbox::watermark::far_ahead`]).
    max_seq_ahead: u64,
}

/// One open connection and its prepared statements.
struct Conn {
    client: Client,
    statements: HashMap<&'static str, Statement>,
    /// This connection holds [`AUDIT_LOCK`] (released with the connection).
    holds_audit: bool,
    /// A call failed in a way that means the session is gone (closed,
    /// terminated by the server, I/O): open a new one on the next call.
    broken: bool,
}

/// Where a query runs: inside a transaction or on the bare connection.
enum On<'a> {
    Tx(&'a Transaction<'a>),
    Client(&'a Client),
}

/// Queries through the statement cache (one parse per SQL text and
/// connection, then only bind and execute).
struct Db<'a> {
    on: On<'a>,
    statements: &'a RefCell<HashMap<&'static str, Statement>>,
}

type Params<'p> = [&'p (dyn ToSql + Sync)];

impl Db<'_> {
    async fn statement(&self, sql: &'static str) -> Result<Statement, InboxError> {
        if let Some(s) = self.statements.borrow().get(sql) {
            return Ok(s.clone());
        }
        let s = match &self.on {
            On::Tx(t) => t.prepare(sql).await?,
            On::Client(c) => c.prepare(sql).await?,
        };
        self.statements.borrow_mut().insert(sql, s.clone());
        Ok(s)
    }

    async fn query(&self, sql: &'static str, p: &Params<'_>) -> Result<Vec<Row>, InboxError> {
        let s = self.statement(sql).await?;
        Ok(match &self.on {
            On::Tx(t) => t.query(&s, p).await?,
            On::Client(c) => c.query(&s, p).await?,
        })
    }

    async fn opt(&self, sql: &'static str, p: &Params<'_>) -> Result<Option<Row>, InboxError> {
        let s = self.statement(sql).await?;
        Ok(match &self.on {
            On::Tx(t) => t.query_opt(&s, p).await?,
            On::Client(c) => c.query_opt(&s, p).await?,
        })
    }

    async fn one(&self, sql: &'static str, p: &Params<'_>) -> Result<Row, InboxError> {
        let s = self.statement(sql).await?;
        Ok(match &self.on {
            On::Tx(t) => t.query_one(&s, p).await?,
            On::Client(c) => c.query_one(&s, p).await?,
        })
    }

    async fn exec(&self, sql: &'static str, p: &Params<'_>) -> Result<u64, InboxError> {
        let s = self.statement(sql).await?;
        Ok(match &self.on {
            On::Tx(t) => t.execute(&s, p).await?,
            On::Client(c) => c.execute(&s, p).await?,
        })
    }
}

/// The inbox's own runtime. Dropped, it shuts down without waiting
/// ([`tokio::runtime::Runtime::shutdown_background`]): the last handle of
/// an inbox may go inside async code (the collector's tasks ending at
/// shutdown), where dropping a runtime the plain way panics, which aborts
/// the process. Nothing is lost: every call waited for its own queries, and
/// only the connection's idle driver task is left to stop.
struct OwnRuntime(Option<tokio::runtime::Runtime>);

impl OwnRuntime {
    fn get(&self) -> Result<&tokio::runtime::Runtime, InboxError> {
        self.0
            .as_ref()
            .ok_or_else(|| InboxError::Worker("the inbox's runtime has shut down".into()))
    }
}

impl Drop for OwnRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// The PostgreSQL inbox. Blocking; see the module docs.
pub struct PgInbox {
    runtime: OwnRuntime,
    config: tokio_postgres::Config,
    /// A tokio mutex only so `&self` reads may hold it across awaits; the
    /// store itself is behind [`crate::inbox::InboxHandle`]'s lock.
    conn: tokio::sync::Mutex<Conn>,
    /// The URL without its password.
    shown: String,
    ctx: Ctx,
}

impl std::fmt::Debug for PgInbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgInbox")
            .field("url", &self.shown)
            .field("ctx", &self.ctx)
            .finish_non_exhaustive()
    }
}

/// The error means the database session is gone (closed, terminated by an
/// administrator or a server shutdown, an I/O or protocol failure), not
/// that one statement failed.
fn session_lost(e: &InboxError) -> bool {
    match e {
        InboxError::Postgres(e) => {
            e.is_closed()
                || match e.code() {
                    // Class 08: connection exception; 57: operator intervention.
                    Some(c) => c.code().starts_with("08") || c.code().starts_with("57"),
                    // No SQLSTATE: not an answer from the server at all.
                    None => true,
                }
        }
        _ => false,
    }
}

fn retryable(e: &InboxError) -> bool {
    match e {
        InboxError::Postgres(e) => matches!(
            e.code(),
            Some(c) if *c == SqlState::T_R_DEADLOCK_DETECTED || *c == SqlState::T_R_SERIALIZATION_FAILURE
        ),
        _ => false,
    }
}

/// An error and its causes, `: `-separated (tokio-postgres keeps the
/// useful part, such as "Connection refused", in the source).
pub(crate) fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let more = c.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = c.source();
    }
    text
}

async fn connect(
    runtime_config: &tokio_postgres::Config,
    shown: &str,
) -> Result<Client, InboxError> {
    let (client, connection) =
        runtime_config
            .connect(NoTls)
            .await
            .map_err(|e| InboxError::PgOpen {
                url: shown.to_owned(),
                problem: with_causes(&e),
            })?;
    // Polled whenever the inbox's runtime runs (during every call); it ends
    // when the client is dropped or the server closes the connection.
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(
                "inbox database connection closed: {e}; it is re-opened on the next call"
            );
        }
    });
    Ok(client)
}

impl PgInbox {
    /// Connects to `url` (`postgres://user:password@host:port/database`),
    /// creating or migrating the schema. `lease_ms` is how long a lane's
    /// claim lasts without renewal.
    pub fn open(url: &str, lease_ms: u64) -> Result<Self, InboxError> {
        let shown = redact_url(url);
        let mut config: tokio_postgres::Config =
            url.parse()
                .map_err(|e: tokio_postgres::Error| InboxError::PgOpen {
                    url: shown.clone(),
                    problem: format!("not a valid PostgreSQL URL ({e})"),
                })?;
        if config.get_ssl_mode() == tokio_postgres::config::SslMode::Require {
            // No TLS client is built in (one crypto stack for the tree, and
            // the database usually sits on the collectors' own network).
            return Err(InboxError::PgOpen {
                url: shown,
                problem: "sslmode=require, but this collector connects to PostgreSQL without TLS; \
                          use sslmode=disable (or prefer) on a trusted network, or a local TLS proxy"
                    .into(),
            });
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        if config.get_application_name().is_none() {
            config.application_name("dockline-collector");
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| InboxError::PgOpen {
                url: shown.clone(),
                problem: format!("cannot start its I/O runtime: {e}"),
            })?;
        let client = runtime.block_on(connect(&config, &shown))?;
        let owner = format!(
            "collector-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        );
        let mut inbox = Self {
            runtime: OwnRuntime(Some(runtime)),
            config,
            conn: tokio::sync::Mutex::new(Conn {
                client,
                statements: HashMap::new(),
                holds_audit: false,
                broken: false,
            }),
            shown,
            ctx: Ctx {
                owner,
                invoice_followups: false,
                max_seq_ahead: watermark::DEFAULT_MAX_SEQ_AHEAD,
                lease_ms: i64::try_from(lease_ms).unwrap_or(i64::MAX),
            },
        };
        inbox.migrate()?;
        Ok(inbox)
    }

    /// The URL without its password.
    pub fn url(&self) -> &str {
        &self.shown
    }

    /// This collector's name in lane claims.
    pub fn owner(&self) -> &str {
        &self.ctx.owner
    }

    fn migrate(&mut self) -> Result<(), InboxError> {
        let shown = self.shown.clone();
        self.tx(async |db, _| schema::migrate(db, &shown).await)?;
        // DDL may have changed what cached statements refer to.
        self.conn.get_mut().statements.clear();
        Ok(())
    }

    /// Re-opens the connection when the server closed it.
    async fn ensure_open(
        conn: &mut Conn,
        config: &tokio_postgres::Config,
        shown: &str,
    ) -> Result<(), InboxError> {
        if conn.broken || conn.client.is_closed() {
            conn.client = connect(config, shown).await?;
            conn.statements.clear();
            conn.holds_audit = false;
            conn.broken = false;
        }
        Ok(())
    }

    /// Runs `op` in one transaction, again after a deadlock or
    /// serialization failure.
    fn tx<R>(
        &mut self,
        mut op: impl AsyncFnMut(&Db<'_>, &Ctx) -> Result<R, InboxError>,
    ) -> Result<R, InboxError> {
        let Self {
            runtime,
            config,
            conn,
            shown,
            ctx,
        } = self;
        runtime.get()?.block_on(async {
            let conn = conn.get_mut();
            Self::ensure_open(conn, config, shown).await?;
            let mut tries = 0;
            loop {
                let Conn {
                    client, statements, ..
                } = &mut *conn;
                let cache = RefCell::new(std::mem::take(statements));
                let result = async {
                    let t = client.transaction().await?;
                    let db = Db {
                        on: On::Tx(&t),
                        statements: &cache,
                    };
                    match op(&db, ctx).await {
                        Ok(r) => {
                            t.commit().await?;
                            Ok(r)
                        }
                        Err(e) => {
                            // Dropping also rolls back; this only waits for it.
                            let _ = t.rollback().await;
                            Err(e)
                        }
                    }
                }
                .await;
                *statements = cache.into_inner();
                conn.broken = conn.broken || result.as_ref().is_err_and(session_lost);
                match result {
                    Err(e) if retryable(&e) && tries < MAX_TRIES => {
                        tries += 1;
                        tokio::time::sleep(Duration::from_millis(5 << tries.min(6))).await;
                    }
                    other => return other,
                }
            }
        })
    }

    /// Runs read-only `op` on the connection (no transaction).
    fn read<R>(
        &self,
        op: impl AsyncFnOnce(&Db<'_>, &Ctx) -> Result<R, InboxError>,
    ) -> Result<R, InboxError> {
        self.runtime.get()?.block_on(async {
            let mut guard = self.conn.lock().await;
            Self::ensure_open(&mut guard, &self.config, &self.shown).await?;
            let Conn {
                client, statements, ..
            } = &mut *guard;
            let cache = RefCell::new(std::mem::take(statements));
            let db = Db {
                on: On::Client(client),
                statements: &cache,
            };
            let result = op(&db, &self.ctx).await;
            *statements = cache.into_inner();
            guard.broken = guard.broken || result.as_ref().is_err_and(session_lost);
            result
        })
    }
}

/// One lane look in a transaction (see [`InboxStore::next_in_lane`] and
/// the steps of [`crate::inbox::lanes`]): one statement claims the lane's
/// row (locking it) unless another collector's claim still holds, and
/// returns it with its blocking dead letter; one reads each head with its
/// envelope; the lane's row is written again only when the decision changes
/// it or the claim is to be released. A lane handing out event after event
/// costs two statements.
async fn next_in_lane_in(
    db: &Db<'_>,
    ctx: &Ctx,
    lane_key: &str,
    now_ms: i64,
    park_max_ms: i64,
) -> Result<Option<ChosenRow>, InboxError> {
    let until = now_ms.saturating_add(ctx.lease_ms);
    let r = db
        .one(
            "WITH l AS (
               INSERT INTO lanes (lane, owner, lease_until) VALUES ($1, $2, $3)
               ON CONFLICT (lane) DO UPDATE SET
                 owner = CASE WHEN lanes.owner IS NULL OR lanes.owner = $2
                                OR coalesce(lanes.lease_until, $4) <= $4
                              THEN $2 ELSE lanes.owner END,
                 lease_until = CASE WHEN lanes.owner IS NULL OR lanes.owner = $2
                                      OR coalesce(lanes.lease_until, $4) <= $4
                                    THEN $3 ELSE lanes.lease_until END
               RETURNING owner, top_stage, wake_ms, status)
             SELECT l.owner = $2, l.top_stage, l.wake_ms, l.status, d.id, d.created_ms, d.what
             FROM l LEFT JOIN (SELECT id, created_ms,
                                 device || ' seq ' || seq || ' (' || kind || '): ' || reason AS what
                               FROM dead_letters WHERE state = 'open' AND lane = $1
                               ORDER BY id LIMIT 1) d ON true",
            &[&lane_key, &ctx.owner, &until, &now_ms],
        )
        .await?;
    if !r.get::<_, bool>(0) {
        // Another collector delivers this lane.
        return Ok(None);
    }
    let lane_now = LaneNow {
        top_stage: r.get(1),
        wake_ms: r.get(2),
        status: r.get(3),
        dead_letter: r
            .get::<_, Option<i64>>(4)
            .map(|id| (id, r.get(5), r.get(6))),
    };
    let mut heads: Vec<HeadRow> = Vec::new();
    let mut after = String::new();
    while let Some(head) = next_head(db, lane_key, &after).await? {
        let more = head.more;
        after.clone_from(&head.event.device);
        heads.push(head);
        if !more {
            break;
        }
    }
    let look = lanes::decide(lane_key, heads, lane_now, now_ms, park_max_ms, Some(until))?;
    write_look(db, ctx, lane_key, &look, until).await?;
    Ok(look.chosen)
}

/// Renews this collector's claim on `lane` (see [`InboxStore::hold_lane`]).
async fn hold_lane_in(db: &Db<'_>, ctx: &Ctx, lane: &str, now_ms: i64) -> Result<bool, InboxError> {
    let renewed = db
        .exec(
            "UPDATE lanes SET lease_until = $3 WHERE lane = $1 AND owner = $2",
            &[&lane, &ctx.owner, &now_ms.saturating_add(ctx.lease_ms)],
        )
        .await?;
    Ok(renewed == 1)
}

/// Records a verdict in a transaction (see [`InboxStore::record_verdict`]),
/// as [`verdicts_in`] records a group's.
async fn record_verdict_in(
    db: &Db<'_>,
    ctx: &Ctx,
    device: &DeviceId,
    epoch: u64,
    seq: u64,
    outcome: &Outcome,
    now_ms: i64,
) -> Result<bool, InboxError> {
    Ok(
        verdicts_in(db, ctx, &[(device, epoch, seq, outcome, now_ms)])
            .await?
            .first()
            .copied()
            .unwrap_or(false),
    )
}

/// One verdict: the event, its outcome, and when.
type VerdictRef<'a> = (&'a DeviceId, u64, u64, &'a Outcome, i64);

/// Records verdicts in one statement (distinct events): each changes its
/// row only if it is still pending (a second collector's verdict for the
/// same event waits for the first and then matches nothing), moves its
/// lane's chain on and drops its failed attempts; a booked proof of
/// delivery then queues its follow-up. Returns, per verdict, whether it was
/// recorded.
async fn verdicts_in(
    db: &Db<'_>,
    ctx: &Ctx,
    verdicts: &[VerdictRef<'_>],
) -> Result<Vec<bool>, InboxError> {
    let mut devices: Vec<&str> = Vec::new();
    let (mut epochs, mut seqs, mut nows): (Vec<i64>, Vec<i64>, Vec<i64>) = Default::default();
    let (mut states, mut documents, mut reasons): (
        Vec<&str>,
        Vec<Option<&str>>,
        Vec<Option<&str>>,
    ) = Default::default();
    let mut envelopes: Vec<bool> = Vec::new();
    for &(device, epoch, seq, outcome, now_ms) in verdicts {
        let (state, document, reason) = verdict::verdict_columns(outcome);
        devices.push(device.as_str());
        epochs.push(to_sql("epoch", epoch)?);
        seqs.push(to_sql("seq", seq)?);
        states.push(state);
        documents.push(document);
        reasons.push(reason);
        nows.push(now_ms);
        envelopes.push(verdict::may_queue_invoice(ctx.invoice_followups, outcome));
    }
    let rows = db
        .query(
            "WITH input AS (
               SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::text[],
                                    $5::text[], $6::text[], $7::bigint[], $8::bool[])
                 AS t(device, epoch, seq, state, document, reason, now_ms, envelope)),
             v AS (
               UPDATE events e SET state = i.state, document = i.document, reason = i.reason,
                 attempts = e.attempts + 1, updated_ms = i.now_ms
               FROM input i
               WHERE e.device = i.device AND e.epoch = i.epoch AND e.seq = i.seq
                 AND e.state = 'pending'
               RETURNING e.device, e.epoch, e.seq, e.lane, e.stage, e.kind, e.site,
                 CASE WHEN i.envelope AND e.kind = 'delivered' THEN e.envelope END AS envelope),
             l AS (
               UPDATE lanes SET top_stage = GREATEST(coalesce(lanes.top_stage, -1), s.stage)
               FROM (SELECT lane, max(stage) AS stage FROM v WHERE stage IS NOT NULL
                     GROUP BY lane) s
               WHERE lanes.lane = s.lane),
             a AS (
               DELETE FROM attempts USING input i WHERE attempts.device = i.device
                 AND attempts.epoch = i.epoch AND attempts.seq = i.seq)
             SELECT device, epoch, seq, kind, site, envelope FROM v",
            &[
                &devices, &epochs, &seqs, &states, &documents, &reasons, &nows, &envelopes,
            ],
        )
        .await?;
    // (device, epoch, seq) → (kind, site, envelope) when a follow-up may be due.
    type Changed = HashMap<(String, i64, i64), Option<(String, String, Vec<u8>)>>;
    let mut changed: Changed = HashMap::new();
    for r in &rows {
        let bytes: Option<Vec<u8>> = r.get(5);
        changed.insert(
            (r.get(0), r.get(1), r.get(2)),
            bytes.map(|b| (r.get(3), r.get(4), b)),
        );
    }
    let mut recorded = vec![false; verdicts.len()];
    for (k, done) in recorded.iter_mut().enumerate() {
        let Some(found) = changed.get(&(devices[k].to_owned(), epochs[k], seqs[k])) else {
            continue;
        };
        *done = true;
        let Some((kind, site, bytes)) = found else {
            continue;
        };
        let Some(ready) = verdict::invoice_of(site, kind, bytes, documents[k].unwrap_or_default())
        else {
            continue;
        };
        db.exec(
            "INSERT INTO followups (id, kind, device, epoch, seq, order_ref, body, state,
               next_ms, created_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending', $8, $8)
             ON CONFLICT DO NOTHING",
            &[
                &ready.id,
                &crate::delivery::invoice_ready::KIND,
                &devices[k],
                &epochs[k],
                &seqs[k],
                &ready.order,
                &ready.body,
                &nows[k],
            ],
        )
        .await?;
    }
    Ok(recorded)
}

/// Runs a group set-wise, in the phases of [`crate::inbox::group`]: one
/// statement applies every verdict, one claims every lane looked at (with
/// its row and blocking dead letter), one reads every lane's first head;
/// only a lane of several devices, a decision that changes a lane's row, a
/// claim renewal or a follow-up costs a statement of its own. So a group
/// costs a few statements, whatever its size.
async fn run_phases(
    db: &Db<'_>,
    ctx: &Ctx,
    ops: &[GroupOp],
    phases: &group::Phases,
) -> Result<Vec<GroupDone>, InboxError> {
    let mut recorded: Vec<bool> = vec![false; ops.len()];
    let verdicts: Vec<VerdictRef<'_>> = phases
        .verdicts
        .iter()
        .filter_map(|&i| match &ops[i] {
            GroupOp::Verdict {
                device,
                epoch,
                seq,
                outcome,
                now_ms,
            }
            | GroupOp::VerdictThenNext {
                device,
                epoch,
                seq,
                outcome,
                now_ms,
                ..
            } => Some((device, *epoch, *seq, outcome, *now_ms)),
            GroupOp::NextInLane { .. } | GroupOp::HoldLane { .. } => None,
        })
        .collect();
    if !verdicts.is_empty() {
        let done = verdicts_in(db, ctx, &verdicts).await?;
        for (&i, d) in phases.verdicts.iter().zip(done) {
            recorded[i] = d;
        }
    }
    let mut held: HashMap<usize, bool> = HashMap::new();
    for &i in &phases.holds {
        if let GroupOp::HoldLane { lane, now_ms } = &ops[i] {
            held.insert(i, hold_lane_in(db, ctx, lane, *now_ms).await?);
        }
    }
    let mut chosen: HashMap<usize, ChosenRow> = HashMap::new();
    if !phases.looks.is_empty() {
        let mut lanes_of: Vec<&str> = Vec::new();
        let (mut nows, mut untils, mut parks): (Vec<i64>, Vec<i64>, Vec<i64>) = Default::default();
        for &i in &phases.looks {
            let (lane, now_ms, park_max_ms) = match &ops[i] {
                GroupOp::NextInLane {
                    lane,
                    now_ms,
                    park_max_ms,
                }
                | GroupOp::VerdictThenNext {
                    lane,
                    now_ms,
                    park_max_ms,
                    ..
                } => (lane, now_ms, park_max_ms),
                GroupOp::Verdict { .. } | GroupOp::HoldLane { .. } => continue,
            };
            lanes_of.push(lane.as_str());
            nows.push(*now_ms);
            untils.push(now_ms.saturating_add(ctx.lease_ms));
            parks.push(*park_max_ms);
        }
        let claimed = db
            .query(
                "WITH input AS (
                   SELECT * FROM unnest($1::text[], $3::bigint[], $4::bigint[])
                     AS t(lane, until, now_ms)),
                 l AS (
                   INSERT INTO lanes (lane, owner, lease_until)
                   SELECT lane, $2, until FROM input
                   ON CONFLICT (lane) DO UPDATE SET
                     owner = CASE WHEN lanes.owner IS NULL OR lanes.owner = $2
                                    OR coalesce(lanes.lease_until, 0) <= excluded.lease_until - $5
                                  THEN $2 ELSE lanes.owner END,
                     lease_until = CASE WHEN lanes.owner IS NULL OR lanes.owner = $2
                                          OR coalesce(lanes.lease_until, 0) <= excluded.lease_until - $5
                                        THEN excluded.lease_until ELSE lanes.lease_until END
                   RETURNING lane, owner, top_stage, wake_ms, status)
                 SELECT l.lane, l.owner = $2, l.top_stage, l.wake_ms, l.status,
                   d.id, d.created_ms, d.what
                 FROM l LEFT JOIN LATERAL (
                   SELECT id, created_ms,
                     device || ' seq ' || seq || ' (' || kind || '): ' || reason AS what
                   FROM dead_letters WHERE state = 'open' AND lane = l.lane
                   ORDER BY id LIMIT 1) d ON true",
                &[&lanes_of, &ctx.owner, &untils, &nows, &ctx.lease_ms],
            )
            .await?;
        let mut lane_now: HashMap<String, LaneNow> = HashMap::new();
        for r in &claimed {
            if r.get::<_, bool>(1) {
                lane_now.insert(
                    r.get(0),
                    LaneNow {
                        top_stage: r.get(2),
                        wake_ms: r.get(3),
                        status: r.get(4),
                        dead_letter: r
                            .get::<_, Option<i64>>(5)
                            .map(|id| (id, r.get(6), r.get(7))),
                    },
                );
            }
        }
        // The first head of every lane this collector holds.
        let owned: Vec<&str> = lanes_of
            .iter()
            .copied()
            .filter(|l| lane_now.contains_key(*l))
            .collect();
        let mut heads: HashMap<String, Vec<HeadRow>> = HashMap::new();
        for r in &db
            .query(
                "SELECT i.lane, h.* FROM unnest($1::text[]) AS i(lane)
                 CROSS JOIN LATERAL (
                   SELECT e.device, e.epoch, e.seq, e.stage, e.received_ms,
                     e.seq > coalesce(w.complete_up_to, 0)
                     OR EXISTS (SELECT 1 FROM watermarks w2 WHERE w2.device = e.device
                                AND w2.epoch < e.epoch
                                AND EXISTS (SELECT 1 FROM events e2 WHERE e2.device = w2.device
                                            AND e2.epoch = w2.epoch
                                            AND e2.seq > w2.complete_up_to)) AS held,
                     e.site, e.envelope, e.attempts,
                     EXISTS (SELECT 1 FROM events m WHERE m.lane = i.lane AND m.state = 'pending'
                             AND m.device > e.device) AS more
                   FROM events e
                   LEFT JOIN watermarks w ON w.device = e.device AND w.epoch = e.epoch
                   WHERE e.lane = i.lane AND e.state = 'pending'
                   ORDER BY e.device, e.epoch, e.seq LIMIT 1) h",
                &[&owned],
            )
            .await?
        {
            let lane: String = r.get(0);
            heads.entry(lane).or_default().push(head_row(r, 1));
        }
        for (k, &i) in phases.looks.iter().enumerate() {
            let lane = lanes_of[k];
            let Some(now) = lane_now.remove(lane) else {
                // Another collector delivers this lane.
                continue;
            };
            let mut lane_heads = heads.remove(lane).unwrap_or_default();
            while let Some(last) = lane_heads.last().filter(|h| h.more) {
                let after = last.event.device.clone();
                match next_head(db, lane, &after).await? {
                    Some(h) => lane_heads.push(h),
                    None => break,
                }
            }
            let look = lanes::decide(lane, lane_heads, now, nows[k], parks[k], Some(untils[k]))?;
            write_look(db, ctx, lane, &look, untils[k]).await?;
            if let Some(c) = look.chosen {
                chosen.insert(i, c);
            }
        }
    }
    let mut done = Vec::with_capacity(ops.len());
    for (i, op) in ops.iter().enumerate() {
        done.push(match op {
            GroupOp::Verdict { .. } => GroupDone::Verdict(recorded[i]),
            GroupOp::HoldLane { .. } => GroupDone::Held(held.get(&i).copied().unwrap_or(false)),
            GroupOp::NextInLane { .. } => GroupDone::Next(chosen.remove(&i)),
            GroupOp::VerdictThenNext { .. } => {
                GroupDone::VerdictThenNext(recorded[i], chosen.remove(&i))
            }
        });
    }
    Ok(done)
}

/// A head as the head queries return it, from column `at` on.
fn head_row(r: &Row, at: usize) -> HeadRow {
    HeadRow {
        event: LaneEvent {
            device: r.get(at),
            epoch: from_sql(r.get(at + 1)),
            seq: from_sql(r.get(at + 2)),
            stage: r
                .get::<_, Option<i64>>(at + 3)
                .and_then(|s| u8::try_from(s).ok()),
            received_ms: r.get(at + 4),
            held: r.get(at + 5),
        },
        site: r.get(at + 6),
        envelope: r.get(at + 7),
        attempts: r.get(at + 8),
        more: r.get(at + 9),
    }
}

/// The oldest pending event of `lane` of the first device after `after`
/// (in id order; `''` sorts before every device id); held when it is above
/// its watermark or an older epoch of its device has a hole.
async fn next_head(db: &Db<'_>, lane: &str, after: &str) -> Result<Option<HeadRow>, InboxError> {
    Ok(db
        .opt(
            "SELECT e.device, e.epoch, e.seq, e.stage, e.received_ms,
               e.seq > coalesce(w.complete_up_to, 0)
               OR EXISTS (SELECT 1 FROM watermarks w2 WHERE w2.device = e.device
                          AND w2.epoch < e.epoch
                          AND EXISTS (SELECT 1 FROM events e2 WHERE e2.device = w2.device
                                      AND e2.epoch = w2.epoch
                                      AND e2.seq > w2.complete_up_to)),
               e.site, e.envelope, e.attempts,
               EXISTS (SELECT 1 FROM events m WHERE m.lane = $1 AND m.state = 'pending'
                       AND m.device > e.device)
             FROM events e
             LEFT JOIN watermarks w ON w.device = e.device AND w.epoch = e.epoch
             WHERE e.lane = $1 AND e.state = 'pending' AND e.device > $2
             ORDER BY e.device, e.epoch, e.seq LIMIT 1",
            &[&lane, &after],
        )
        .await?
        .map(|r| head_row(&r, 0)))
}

/// Writes a look's decision: the lane's row when [`lanes::Look::write`]
/// says so (with the claim kept while an event goes, released otherwise),
/// and the chosen event's `late` mark.
async fn write_look(
    db: &Db<'_>,
    ctx: &Ctx,
    lane_key: &str,
    look: &lanes::Look,
    until: i64,
) -> Result<(), InboxError> {
    if look.write {
        let row = &look.row;
        let (owner, lease): (Option<&str>, Option<i64>) = if row.claim {
            (Some(ctx.owner.as_str()), Some(until))
        } else {
            (None, None)
        };
        db.exec(
            "UPDATE lanes SET wake_ms = $2, status = $3, reason = $4,
               since_ms = CASE WHEN status IS NOT DISTINCT FROM $3 AND since_ms IS NOT NULL
                               THEN since_ms ELSE $5 END,
               owner = $6, lease_until = $7
             WHERE lane = $1",
            &[
                &lane_key,
                &row.wake_ms,
                &row.status,
                &row.reason,
                &row.since_ms,
                &owner,
                &lease,
            ],
        )
        .await?;
    }
    if let Some(chosen) = &look.chosen
        && chosen.late
    {
        db.exec(
            "UPDATE events SET late = true WHERE device = $1 AND epoch = $2 AND seq = $3",
            &[&chosen.device, &chosen.epoch, &chosen.seq],
        )
        .await?;
    }
    Ok(())
}

/// Runs `futures` concurrently on this thread and returns their outputs in
/// order (a few lines instead of a dependency on `futures`).
async fn join_all<F: std::future::Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut futures: Vec<std::pin::Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, output) in futures.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *output = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().flatten().collect()
}

fn limit_of(limit: usize) -> Result<i64, InboxError> {
    to_sql("limit", limit as u64)
}

fn u32_of(v: i64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

async fn insert_attempt(
    db: &Db<'_>,
    device: &DeviceId,
    epoch: i64,
    seq: i64,
    log: &AttemptLog,
) -> Result<(), InboxError> {
    let status = log.status.map(i64::from);
    db.exec(
        "INSERT INTO attempts (device, epoch, seq, n, at_ms, request, status, error, body, decision)
         SELECT device, epoch, seq, attempts + 1, $4, $5, $6, $7, $8, $9 FROM events
         WHERE device = $1 AND epoch = $2 AND seq = $3
         ON CONFLICT (device, epoch, seq, n) DO UPDATE SET at_ms = excluded.at_ms,
           request = excluded.request, status = excluded.status, error = excluded.error,
           body = excluded.body, decision = excluded.decision",
        &[
            &device.as_str(),
            &epoch,
            &seq,
            &log.at_ms,
            &log.request,
            &status,
            &log.error,
            &excerpt(&log.body, MAX_BODY_EXCERPT),
            &log.decision,
        ],
    )
    .await?;
    Ok(())
}

fn summary_of(r: &Row) -> DeadLetterSummary {
    DeadLetterSummary {
        id: r.get(0),
        device: r.get(1),
        epoch: from_sql(r.get(2)),
        seq: from_sql(r.get(3)),
        event_id: r.get(4),
        kind: r.get(5),
        class: r.get(6),
        reason: r.get(7),
        erp_rejected: r.get(8),
        state: r.get(9),
        created_ms: r.get(10),
        resolved_ms: r.get(11),
        attempts: usize::try_from(r.get::<_, i32>(12)).unwrap_or(0),
    }
}

impl InboxStore for PgInbox {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    fn enable_invoice_followups(&mut self) {
        self.ctx.invoice_followups = true;
    }

    fn set_max_seq_ahead(&mut self, n: u64) {
        self.ctx.max_seq_ahead = n;
    }

    fn due_followups(&mut self, now_ms: i64, limit: usize) -> Result<Vec<Followup>, InboxError> {
        let limit = limit_of(limit)?;
        self.tx(async |db, ctx| {
            // Claimed until the lease ends: record_followup sets the real
            // next time; a collector that dies leaves it to the others then.
            let claim_until = now_ms.saturating_add(ctx.lease_ms);
            let rows = db
                .query(
                    "UPDATE followups f SET next_ms = $3 FROM (
                       SELECT id FROM followups WHERE state = 'pending' AND next_ms <= $1
                       ORDER BY next_ms LIMIT $2 FOR UPDATE SKIP LOCKED) c
                     WHERE f.id = c.id
                     RETURNING f.id, f.kind, f.order_ref, f.body, f.attempts, f.bounded, f.created_ms",
                    &[&now_ms, &limit, &claim_until],
                )
                .await?;
            let mut out: Vec<(i64, Followup)> = rows
                .iter()
                .map(|r| {
                    (
                        r.get(6),
                        Followup {
                            id: r.get(0),
                            kind: r.get(1),
                            order: r.get(2),
                            body: r.get(3),
                            attempts: u32_of(r.get(4)),
                            bounded: u32_of(r.get(5)),
                        },
                    )
                })
                .collect();
            out.sort_by_key(|(created, f)| (*created, f.id.clone()));
            Ok(out.into_iter().map(|(_, f)| f).collect())
        })
    }

    fn next_followup_ms(&self) -> Result<Option<i64>, InboxError> {
        self.read(async |db, _| {
            Ok(db
                .one(
                    "SELECT min(next_ms) FROM followups WHERE state = 'pending'",
                    &[],
                )
                .await?
                .get(0))
        })
    }

    fn record_followup(
        &mut self,
        id: &str,
        result: &FollowupResult,
        now_ms: i64,
    ) -> Result<bool, InboxError> {
        self.tx(async |db, _| {
            let changed = match result {
                FollowupResult::Sent => {
                    db.exec(
                        "UPDATE followups SET state = 'sent', sent_ms = $2, attempts = attempts + 1
                         WHERE id = $1 AND state = 'pending'",
                        &[&id, &now_ms],
                    )
                    .await?
                }
                FollowupResult::Failed { reason } => {
                    db.exec(
                        "UPDATE followups SET state = 'failed', last_error = $2, attempts = attempts + 1
                         WHERE id = $1 AND state = 'pending'",
                        &[&id, reason],
                    )
                    .await?
                }
                FollowupResult::Retry {
                    next_ms,
                    error,
                    bounded,
                } => {
                    db.exec(
                        "UPDATE followups SET next_ms = $2, last_error = $3, attempts = attempts + 1,
                           bounded = $4
                         WHERE id = $1 AND state = 'pending'",
                        &[&id, next_ms, error, &i64::from(*bounded)],
                    )
                    .await?
                }
            };
            Ok(changed == 1)
        })
    }

    fn register_devices(&mut self, devices: &[DeviceConfig]) -> Result<(), InboxError> {
        let pairs: Vec<(&str, &str)> = devices
            .iter()
            .map(|d| (d.id.as_str(), d.site.as_str()))
            .collect();
        self.tx(async |db, _| bookkeeping::register_devices(db, &pairs).await)
    }

    fn store_received(
        &mut self,
        site: &SiteId,
        batch: &Batch,
        envelopes: Option<&[&[u8]]>,
        now_ms: i64,
    ) -> Result<StoreOutcome, InboxError> {
        // The rows, prepared once outside the retry loop.
        let rows = batch_write::event_rows(batch, envelopes)?;
        let max_ahead = self.ctx.max_seq_ahead;
        self.tx(async |db, _| {
            batch_write::store_batch(db, site, batch, &rows, now_ms, max_ahead).await
        })
    }

    fn complete_up_to(&self, device: &DeviceId, epoch: u64) -> Result<u64, InboxError> {
        self.read(async |db, _| bookkeeping::complete_up_to(db, device, epoch).await)
    }

    fn count_refused(&mut self, reason: &str) -> Result<(), InboxError> {
        self.tx(async |db, _| bookkeeping::count_refused(db, reason).await)
    }

    fn verdicts_from(
        &self,
        device: &DeviceId,
        epoch: u64,
        from_seq: u64,
        limit: usize,
    ) -> Result<Vec<Verdict>, InboxError> {
        self.read(async |db, _| {
            bookkeeping::verdicts_from(db, device, epoch, from_seq, limit).await
        })
    }

    fn record_status(
        &mut self,
        site: &SiteId,
        status: &Status,
        now_ms: i64,
    ) -> Result<bool, InboxError> {
        let row = bookkeeping::status_row(site, status, now_ms)?;
        self.tx(async |db, _| bookkeeping::record_status(db, &row).await)
    }

    fn due_lanes(&self, now_ms: i64, limit: usize) -> Result<Vec<String>, InboxError> {
        let limit = limit_of(limit)?;
        self.read(async |db, ctx| {
            Ok(db
                .query(
                    "SELECT lane FROM lanes WHERE wake_ms IS NOT NULL AND wake_ms <= $1
                       AND (owner IS NULL OR owner = $3 OR lease_until <= $1)
                     ORDER BY wake_ms LIMIT $2",
                    &[&now_ms, &limit, &ctx.owner],
                )
                .await?
                .iter()
                .map(|r| r.get(0))
                .collect())
        })
    }

    fn next_lane_wake_ms(&self) -> Result<Option<i64>, InboxError> {
        self.read(async |db, ctx| {
            // A lane another collector delivers is due for us only when its
            // claim ends. Both parts walk `lanes_wake` in time order instead
            // of reading every lane's row: this collector's earliest lane,
            // then only the others' lanes that wake before it (their claim
            // can only make them later).
            Ok(db
                .one(
                    "WITH ours AS (
                       SELECT wake_ms FROM lanes
                       WHERE wake_ms IS NOT NULL AND (owner IS NULL OR owner = $1)
                       ORDER BY wake_ms LIMIT 1)
                     SELECT LEAST((SELECT wake_ms FROM ours),
                       (SELECT min(GREATEST(wake_ms, lease_until)) FROM lanes
                        WHERE wake_ms IS NOT NULL
                          AND wake_ms < coalesce((SELECT wake_ms FROM ours), 9223372036854775807)
                          AND owner IS NOT NULL AND owner <> $1))",
                    &[&ctx.owner],
                )
                .await?
                .get(0))
        })
    }

    fn next_in_lane(
        &mut self,
        lane_key: &str,
        now_ms: i64,
        park_max_ms: i64,
    ) -> Result<Option<NextPending>, InboxError> {
        self.tx(async |db, ctx| next_in_lane_in(db, ctx, lane_key, now_ms, park_max_ms).await)?
            .map(|row| chosen_event(row, lane_key))
            .transpose()
    }

    fn claims_lanes(&self) -> bool {
        true
    }

    fn hold_lane(&mut self, lane: &str, now_ms: i64) -> Result<bool, InboxError> {
        self.tx(async |db, ctx| hold_lane_in(db, ctx, lane, now_ms).await)
    }

    fn gap_audit_turn(&mut self) -> Result<bool, InboxError> {
        let Self {
            runtime,
            config,
            conn,
            shown,
            ..
        } = self;
        let conn = conn.get_mut();
        runtime.get()?.block_on(async {
            Self::ensure_open(conn, config, shown).await?;
            if !conn.holds_audit {
                // Session-level: held until this connection ends, so a
                // collector that dies hands the audit on.
                conn.holds_audit = conn
                    .client
                    .query_one("SELECT pg_try_advisory_lock($1)", &[&AUDIT_LOCK])
                    .await?
                    .get(0);
            }
            Ok(conn.holds_audit)
        })
    }

    fn waiting_lanes(&self, limit: usize) -> Result<Vec<LaneStatus>, InboxError> {
        let limit = limit_of(limit)?;
        self.read(async |db, _| {
            Ok(db
                .query(
                    "SELECT l.lane, l.status, coalesce(l.reason, ''), coalesce(l.since_ms, 0),
                       l.wake_ms,
                       (SELECT count(*) FROM events e WHERE e.lane = l.lane AND e.state = 'pending')
                     FROM lanes l WHERE l.status IS NOT NULL ORDER BY l.since_ms LIMIT $1",
                    &[&limit],
                )
                .await?
                .iter()
                .map(|r| LaneStatus {
                    lane: r.get(0),
                    status: r.get(1),
                    reason: r.get(2),
                    since_ms: r.get(3),
                    next_look_ms: r.get(4),
                    pending: from_sql(r.get(5)),
                })
                .collect())
        })
    }

    fn mark_skipped(
        &mut self,
        device: &DeviceId,
        epoch: u64,
        seq: u64,
        now_ms: i64,
    ) -> Result<(), InboxError> {
        let (ep, sq) = (to_sql("epoch", epoch)?, to_sql("seq", seq)?);
        self.tx(async |db, _| {
            db.exec(
                "UPDATE events SET state = 'skipped', updated_ms = $4
                 WHERE device = $1 AND epoch = $2 AND seq = $3 AND state = 'pending'",
                &[&device.as_str(), &ep, &sq, &now_ms],
            )
            .await?;
            Ok(())
        })
    }

    fn record_attempt(
        &mut self,
        device: &DeviceId,
        epoch: u64,
        seq: u64,
        log: &AttemptLog,
    ) -> Result<(), InboxError> {
        let (ep, sq) = (to_sql("epoch", epoch)?, to_sql("seq", seq)?);
        let last_error = last_error_of(log);
        self.tx(async |db, _| {
            insert_attempt(db, device, ep, sq, log).await?;
            db.exec(
                "UPDATE events SET attempts = attempts + 1, last_error = $4, updated_ms = $5
                 WHERE device = $1 AND epoch = $2 AND seq = $3",
                &[&device.as_str(), &ep, &sq, &last_error, &log.at_ms],
            )
            .await?;
            Ok(())
        })
    }

    fn store_dead_letter(
        &mut self,
        device: &DeviceId,
        epoch: u64,
        seq: u64,
        dead: &NewDeadLetter,
    ) -> Result<Option<(i64, bool)>, InboxError> {
        let (ep, sq) = (to_sql("epoch", epoch)?, to_sql("seq", seq)?);
        let dev = device.as_str();
        self.tx(async |db, _| {
            let Some(row) = db
                .opt(
                    "SELECT site, id, kind, envelope, lane FROM events
                     WHERE device = $1 AND epoch = $2 AND seq = $3 AND state = 'pending'
                     FOR UPDATE",
                    &[&dev, &ep, &sq],
                )
                .await?
            else {
                return Ok(None);
            };
            let (site, event_id, kind, envelope, lane): (
                String,
                String,
                String,
                Vec<u8>,
                Option<String>,
            ) = (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
            insert_attempt(db, device, ep, sq, &dead.last).await?;
            let attempts: Vec<AttemptLog> = db
                .query(
                    "SELECT n, at_ms, request, status, error, body, decision FROM attempts
                     WHERE device = $1 AND epoch = $2 AND seq = $3 ORDER BY n",
                    &[&dev, &ep, &sq],
                )
                .await?
                .iter()
                .map(|r| AttemptLog {
                    n: u32_of(r.get(0)),
                    at_ms: r.get(1),
                    request: r.get(2),
                    status: r
                        .get::<_, Option<i64>>(3)
                        .and_then(|s| u16::try_from(s).ok()),
                    error: r.get(4),
                    body: r.get(5),
                    decision: r.get(6),
                })
                .collect();
            let attempts_json =
                serde_json::to_string(&attempts).map_err(|e| InboxError::DeadLetterData {
                    id: 0,
                    problem: e.to_string(),
                })?;
            let id: i64 = db
                .one(
                    "INSERT INTO dead_letters (device, epoch, seq, site, event_id, kind, envelope,
                       class, reason, erp_rejected, attempts, state, created_ms, lane)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 'open', $12, $13)
                     RETURNING id",
                    &[
                        &dev,
                        &ep,
                        &sq,
                        &site,
                        &event_id,
                        &kind,
                        &envelope,
                        &dead.class,
                        &dead.reason,
                        &dead.erp_rejected,
                        &attempts_json,
                        &dead.last.at_ms,
                        &lane,
                    ],
                )
                .await?
                .get(0);
            db.exec(
                "DELETE FROM attempts WHERE device = $1 AND epoch = $2 AND seq = $3",
                &[&dev, &ep, &sq],
            )
            .await?;
            let (state, reason) = verdict::dead_letter_state(dead.erp_rejected, &dead.reason);
            db.exec(
                "UPDATE events SET state = $4, reason = $5, last_error = $6,
                   attempts = attempts + 1, updated_ms = $7
                 WHERE device = $1 AND epoch = $2 AND seq = $3",
                &[
                    &dev,
                    &ep,
                    &sq,
                    &state,
                    &reason,
                    &dead.reason,
                    &dead.last.at_ms,
                ],
            )
            .await?;
            Ok(Some((id, dead.erp_rejected)))
        })
    }

    fn dead_letters(&self, all: bool, limit: usize) -> Result<Vec<DeadLetterSummary>, InboxError> {
        let limit = limit_of(limit)?;
        self.read(async |db, _| {
            Ok(db
                .query(
                    "SELECT id, device, epoch, seq, event_id, kind, class, reason, erp_rejected,
                       state, created_ms, resolved_ms, json_array_length(attempts::json)
                     FROM dead_letters WHERE $1 OR state = 'open' ORDER BY id DESC LIMIT $2",
                    &[&all, &limit],
                )
                .await?
                .iter()
                .map(summary_of)
                .collect())
        })
    }

    fn dead_letter(&self, id: i64) -> Result<Option<DeadLetter>, InboxError> {
        let row = self.read(async |db, _| {
            db.opt(
                "SELECT id, device, epoch, seq, event_id, kind, class, reason, erp_rejected, state,
                   created_ms, resolved_ms, json_array_length(attempts::json),
                   site, envelope, attempts, resolution
                 FROM dead_letters WHERE id = $1",
                &[&id],
            )
            .await
        })?;
        let Some(r) = row else {
            return Ok(None);
        };
        let attempts: Vec<AttemptLog> =
            serde_json::from_str(r.get::<_, &str>(15)).map_err(|e| InboxError::DeadLetterData {
                id,
                problem: e.to_string(),
            })?;
        Ok(Some(DeadLetter {
            summary: summary_of(&r),
            site: r.get(13),
            envelope: codec::decode::<Envelope>(r.get::<_, &[u8]>(14)).map_err(|e| e.to_string()),
            attempts,
            resolution: r.get(16),
        }))
    }

    fn resolve_dead_letter(
        &mut self,
        id: i64,
        now_ms: i64,
        discard: Option<&str>,
    ) -> Result<Resolution, InboxError> {
        self.tx(async |db, _| resolve::resolve(db, id, now_ms, discard).await)
    }

    fn record_verdict(
        &mut self,
        device: &DeviceId,
        epoch: u64,
        seq: u64,
        outcome: &Outcome,
        now_ms: i64,
    ) -> Result<bool, InboxError> {
        self.tx(async |db, ctx| {
            record_verdict_in(db, ctx, device, epoch, seq, outcome, now_ms).await
        })
    }

    /// One transaction for the whole group (one commit, one WAL flush).
    fn run_group(&mut self, ops: &[GroupOp]) -> Vec<Result<GroupAnswer, InboxError>> {
        if let Some(phases) = group::phases(ops) {
            return match self.tx(async |db, ctx| run_phases(db, ctx, ops, &phases).await) {
                Ok(done) => group_answers(ops, done),
                // Rolled back whole: each op alone, so each gets its own answer.
                Err(_) => ops.iter().map(|op| run_alone(self, op)).collect(),
            };
        }
        let together = self.tx(async |db, ctx| {
            // The ops are of different lanes (a lane waits for each answer
            // before its next op), so they touch different rows: sent at
            // once, the connection pipelines them, and the group costs about
            // one op's round trips instead of the sum.
            let ops = ops.iter().map(|op| async move {
                Ok::<_, InboxError>(match op {
                    GroupOp::Verdict {
                        device,
                        epoch,
                        seq,
                        outcome,
                        now_ms,
                    } => GroupDone::Verdict(
                        record_verdict_in(db, ctx, device, *epoch, *seq, outcome, *now_ms).await?,
                    ),
                    GroupOp::NextInLane {
                        lane,
                        now_ms,
                        park_max_ms,
                    } => GroupDone::Next(
                        next_in_lane_in(db, ctx, lane, *now_ms, *park_max_ms).await?,
                    ),
                    GroupOp::HoldLane { lane, now_ms } => {
                        GroupDone::Held(hold_lane_in(db, ctx, lane, *now_ms).await?)
                    }
                    GroupOp::VerdictThenNext {
                        device,
                        epoch,
                        seq,
                        outcome,
                        lane,
                        now_ms,
                        park_max_ms,
                    } => GroupDone::VerdictThenNext(
                        record_verdict_in(db, ctx, device, *epoch, *seq, outcome, *now_ms).await?,
                        next_in_lane_in(db, ctx, lane, *now_ms, *park_max_ms).await?,
                    ),
                })
            });
            join_all(ops.collect())
                .await
                .into_iter()
                .collect::<Result<Vec<_>, _>>()
        });
        match together {
            Ok(done) => group_answers(ops, done),
            // Rolled back whole: each op alone, so each gets its own answer.
            Err(_) => ops.iter().map(|op| run_alone(self, op)).collect(),
        }
    }

    fn newest_epoch(&self, device: &DeviceId) -> Result<Option<u64>, InboxError> {
        self.read(async |db, _| db.newest_epoch(device.as_str()).await)
    }

    fn open_holes(&self) -> Result<Vec<DeviceHoles>, InboxError> {
        self.read(async |db, _| bookkeeping::open_holes(db).await)
    }

    fn count_resend_requests(&mut self, n: u64) -> Result<(), InboxError> {
        self.tx(async |db, _| db.add_to_counter("resend_requests", n).await)
    }

    fn dashboard_devices(
        &self,
        holes: &[DeviceHoles],
        now_ms: i64,
        silent_after_ms: i64,
    ) -> Result<Vec<DeviceRow>, InboxError> {
        self.devices_page(holes, now_ms, silent_after_ms)
    }

    fn dashboard_orders(&self) -> Result<Vec<OrderRow>, InboxError> {
        self.orders_page()
    }

    fn dashboard_timeline(&self, lane: &str) -> Result<Vec<TimelineEvent>, InboxError> {
        self.timeline_page(lane)
    }

    fn dashboard_stalled(&self, before_ms: i64) -> Result<Vec<OrderRow>, InboxError> {
        let limit = limit_of(queries::ORDER_LIMIT)?;
        self.order_rows(STALLED_SQL.as_str(), &[&before_ms, &limit])
    }

    fn dashboard_exceptions(
        &self,
        now_ms: i64,
    ) -> Result<(Vec<ExceptionKindCount>, Vec<ExceptionRow>), InboxError> {
        self.exceptions_page(now_ms)
    }

    fn event_verdict(
        &self,
        device: &str,
        epoch: u64,
        seq: u64,
    ) -> Result<Option<EventVerdict>, InboxError> {
        self.verdict_of(device, epoch, seq)
    }

    fn stats(&self) -> Result<Stats, InboxError> {
        self.read(async |db, _| bookkeeping::stats(db).await)
    }
}

/// The dashboard's read-only queries: the same SQL and the same row
/// derivations as on SQLite ([`crate::inbox::read_model`]).
impl PgInbox {
    fn devices_page(
        &self,
        holes: &[DeviceHoles],
        now_ms: i64,
        silent_after_ms: i64,
    ) -> Result<Vec<DeviceRow>, InboxError> {
        let cols = self.read(async |db, _| {
            Ok(db
                .query(queries::DEVICES_SQL, &[])
                .await?
                .iter()
                .map(|r| DeviceCols {
                    device: r.get(0),
                    site: r.get(1),
                    online: r.get(2),
                    last_seen_ms: r.get(3),
                    online_since_ms: r.get(4),
                    backlog: r.get(5),
                    oldest_unsent_ms: r.get(6),
                    heartbeat_ms: r.get(7),
                    peripherals: r.get(8),
                    pending: r.get(9),
                    complete_up_to: r.get(10),
                })
                .collect::<Vec<_>>())
        })?;
        Ok(cols
            .into_iter()
            .map(|c| queries::device_row(c, holes, now_ms, silent_after_ms))
            .collect())
    }

    fn orders_page(&self) -> Result<Vec<OrderRow>, InboxError> {
        let limit = limit_of(queries::ORDER_LIMIT)?;
        self.order_rows(ORDERS_SQL.as_str(), &[&limit])
    }

    /// Orders by `sql`, a variant of [`queries::ORDERS_SQL`].
    fn order_rows(
        &self,
        sql: &'static str,
        params: &Params<'_>,
    ) -> Result<Vec<OrderRow>, InboxError> {
        let cols = self.read(async |db, _| {
            Ok(db
                .query(sql, params)
                .await?
                .iter()
                .map(|r| OrderCols {
                    lane: r.get(0),
                    events: r.get(1),
                    booked_stage: r.get(2),
                    seen_stage: r.get(3),
                    booked: r.get(4),
                    pending: r.get(5),
                    rejected: r.get(6),
                    exceptions: r.get(7),
                    first_ms: r.get(8),
                    last_progress_ms: r.get(9),
                    lane_status: r.get(10),
                    waiting_reason: r.get(11),
                    waiting_since_ms: r.get(12),
                })
                .collect::<Vec<_>>())
        })?;
        Ok(cols.into_iter().map(queries::order_row).collect())
    }

    fn timeline_page(&self, lane: &str) -> Result<Vec<TimelineEvent>, InboxError> {
        let cols = self.read(async |db, _| {
            Ok(db
                .query(TIMELINE_SQL.as_str(), &[&lane])
                .await?
                .iter()
                .map(|r| TimelineCols {
                    device: r.get(0),
                    epoch: r.get(1),
                    seq: r.get(2),
                    id: r.get(3),
                    kind: r.get(4),
                    state: r.get(5),
                    document: r.get(6),
                    reason: r.get(7),
                    last_error: r.get(8),
                    attempts: r.get(9),
                    received_ms: r.get(10),
                    updated_ms: r.get(11),
                    late: r.get(12),
                    envelope: r.get(13),
                    dead_letter: r.get(14),
                    stage: r.get(15),
                })
                .collect::<Vec<_>>())
        })?;
        Ok(queries::timeline_of(cols))
    }

    fn exceptions_page(
        &self,
        now_ms: i64,
    ) -> Result<(Vec<ExceptionKindCount>, Vec<ExceptionRow>), InboxError> {
        let limit = limit_of(queries::EXCEPTION_LIMIT)?;
        let cols = self.read(async |db, _| {
            Ok(db
                .query(EXCEPTIONS_SQL.as_str(), &[&limit])
                .await?
                .iter()
                .map(|r| ExceptionCols {
                    device: r.get(0),
                    seq: r.get(1),
                    lane: r.get(2),
                    state: r.get(3),
                    document: r.get(4),
                    received_ms: r.get(5),
                    envelope: r.get(6),
                })
                .collect::<Vec<_>>())
        })?;
        let items: Vec<ExceptionRow> = cols
            .into_iter()
            .map(|c| queries::exception_row(c, now_ms))
            .collect();
        Ok((queries::exception_counts(&items), items))
    }

    fn verdict_of(
        &self,
        device: &str,
        epoch: u64,
        seq: u64,
    ) -> Result<Option<EventVerdict>, InboxError> {
        let (epoch, seq) = (to_sql("epoch", epoch)?, to_sql("seq", seq)?);
        self.read(async |db, _| {
            Ok(db
                .opt(EVENT_VERDICT_SQL.as_str(), &[&device, &epoch, &seq])
                .await?
                .map(|r| EventVerdict {
                    state: r.get(0),
                    document: r.get(1),
                }))
        })
    }
}

/// A fresh, empty schema for one test or test run: created on
/// [`ScratchSchema::create`], dropped with everything in it on drop.
/// [`ScratchSchema::url`] connects with it as the `search_path`.
#[derive(Debug)]
pub struct ScratchSchema {
    base: String,
    name: String,
    url: String,
}

/// Runs `sql` on `url` once, on a runtime of its own.
pub(crate) fn run_sql(url: &str, sql: &str) -> Result<(), InboxError> {
    let shown = redact_url(url);
    let config: tokio_postgres::Config =
        url.parse()
            .map_err(|e: tokio_postgres::Error| InboxError::PgOpen {
                url: shown.clone(),
                problem: format!("not a valid PostgreSQL URL ({e})"),
            })?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| InboxError::Worker(e.to_string()))?;
    runtime.block_on(async {
        let client = connect(&config, &shown).await?;
        client.batch_execute(sql).await?;
        Ok(())
    })
}

impl ScratchSchema {
    /// Creates schema `dockline_{prefix}_{random}` in the database at `base`.
    pub fn create(base: &str, prefix: &str) -> Result<Self, InboxError> {
        let name = format!("dockline_{prefix}_{:016x}", rand::random::<u64>());
        run_sql(base, &format!("CREATE SCHEMA {name}"))?;
        let sep = if base.contains('?') { '&' } else { '?' };
        Ok(Self {
            url: format!("{base}{sep}options=-c%20search_path%3D{name}"),
            base: base.to_owned(),
            name,
        })
    }

    /// The URL that works in this schema.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for ScratchSchema {
    fn drop(&mut self) {
        if let Err(e) = run_sql(&self.base, &format!("DROP SCHEMA {} CASCADE", self.name)) {
            tracing::warn!("cannot drop test schema {}: {e}", self.name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_shown_without_their_password() {
        assert_eq!(
            redact_url("postgres://dock:s3cret@db.example:5432/inbox?sslmode=disable"),
            "postgres://dock:***@db.example:5432/inbox?sslmode=disable"
        );
        assert_eq!(
            redact_url("postgres://dock@db/inbox"),
            "postgres://dock@db/inbox"
        );
        assert_eq!(
            redact_url("host=db user=dock password=s3cret dbname=inbox"),
            "host=db user=dock password=*** dbname=inbox"
        );
        // The password as a query parameter (what tokio-postgres also reads).
        assert_eq!(
            redact_url(
                "postgres://dock@db/inbox?sslmode=require&password=s3cret&connect_timeout=5"
            ),
            "postgres://dock@db/inbox?sslmode=require&password=***&connect_timeout=5"
        );
        assert_eq!(
            redact_url("postgresql://dock:a@db?PASSWORD=s3cret"),
            "postgresql://dock:***@db?PASSWORD=***"
        );
        // Quoted values with spaces in the key=value form.
        assert_eq!(
            redact_url("host=db password='s3 cr \\' et' dbname=inbox"),
            "host=db password=*** dbname=inbox"
        );
        assert_eq!(
            redact_url("password='s3cret' host=db"),
            "password=*** host=db"
        );
        for url in [
            "postgres://dock@db/inbox?password=s3cret",
            "host=db password='s3 cret'",
        ] {
            assert!(!redact_url(url).contains("s3"), "{url}");
        }
    }

    #[test]
    fn an_unreachable_server_is_named_without_its_password_with_the_fix() {
        // Port 1 on loopback: nothing listens, the connect is refused at once.
        let err = PgInbox::open("postgres://dock:s3cret@127.0.0.1:1/inbox", 1000)
            .expect_err("nothing listens on port 1");
        let text = err.to_string();
        assert!(
            text.contains("postgres://dock:***@127.0.0.1:1/inbox"),
            "{text}"
        );
        assert!(!text.contains("s3cret"), "{text}");
        assert!(text.contains("[inbox] url"), "{text}");
        let err = PgInbox::open("postgres://dock@127.0.0.1:1/inbox?sslmode=require", 1000)
            .expect_err("no TLS");
        assert!(err.to_string().contains("without TLS"), "{err}");
        let err = PgInbox::open("postgres://dock@127.0.0.1:5432/inbox?sslmode=bogus", 1000)
            .expect_err("bad option");
        assert!(
            err.to_string().contains("not a valid PostgreSQL URL"),
            "{err}"
        );
    }

    /// The last handle of a PostgreSQL inbox may go inside async code (a
    /// collector's tasks ending at shutdown): the inbox's own runtime is
    /// shut down without blocking instead of aborting the process.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_inbox_dropped_inside_async_code_shuts_its_runtime_down_quietly() {
        let Ok(base) = std::env::var("DOCKLINE_TEST_PG_URL") else {
            println!(
                "SKIP postgres::an_inbox_dropped_inside_async_code: set DOCKLINE_TEST_PG_URL to run"
            );
            return;
        };
        let (schema, inbox) = tokio::task::spawn_blocking(move || {
            let schema = ScratchSchema::create(&base, "drop").expect("scratch schema");
            let inbox = PgInbox::open(schema.url(), DEFAULT_LEASE_MS).expect("open");
            (schema, inbox)
        })
        .await
        .expect("open off the runtime");
        let handle = crate::inbox::InboxHandle::new(inbox);
        let stats = handle.call(|i| i.stats()).await.expect("stats");
        assert_eq!(stats.pending, 0);
        // Here, on a runtime thread: this used to panic ("Cannot drop a
        // runtime in a context where blocking is not allowed").
        drop(handle);
        tokio::task::spawn_blocking(move || drop(schema))
            .await
            .expect("schema dropped");
    }
}
