//! The collector's delivery figures: a backlog stored in the inbox, then
//! delivered by the collector's real delivery (lanes, policy, breaker,
//! verdicts committed in groups, acks) over loopback HTTP to a fresh mock
//! ERP until every event is booked and its verdict acked.
//!
//! | name | what | baseline |
//! |---|---|---|
//! | `collector_delivery` | events/s, SQLite inbox, nine picks per order lane, default `[erp]` | raw inserts of outbox-like rows in transactions of 256 |
//! | `collector_delivery_vs_http` | the same measurement | raw signed POSTs of the same CloudEvents by `erp.concurrency` senders: the ceiling |
//! | `collector_delivery_pg_vs_http` | the same with the PostgreSQL inbox (`DOCKLINE_TEST_PG_URL`, a fresh schema per round; the figure says skipped without it) | raw signed POSTs, same run |
//! | `collector_one_lane_backlog` | events/s draining one order lane holding the whole backlog | the same events each in a lane of its own, same config |
//!
//! Every round builds its own inbox, so no figure sees another's rows.
//! Rounds alternate a figure with its baseline; medians are reported.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use dockline_collector::delivery::Delivery;
use dockline_collector::erp::ErpConfig as DeliveryConfig;
use dockline_collector::inbox::postgres::{DEFAULT_LEASE_MS, ScratchSchema};
use dockline_collector::inbox::{Inbox, InboxHandle, InboxStore, PgInbox};
use dockline_collector::shutdown::ShutdownTrigger;
use dockline_protocol::{Batch, Envelope, Payload, SiteId};

use crate::bench::{
    BenchOptions, EPOCH, Figure, SECRET, device, envelope, median, raw_inserts, raw_posts,
};
use crate::mock_erp::{ErpConfig, MockErp};

/// Events per stored batch (and per raw insert transaction).
const PER: usize = 256;

/// Order lanes of the bench events: [`envelope`] gives nine picks per order.
const PICKS_PER_ORDER: usize = 9;

/// How the backlog's events fall into business lanes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lanes {
    /// Nine picks per order, as [`envelope`] makes them.
    OrdersOfNine,
    /// Every event in one order lane.
    One,
    /// Every event in an order lane of its own.
    EachOwn,
}

/// Which inbox a round delivers from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Postgres,
}

/// The PostgreSQL server the PostgreSQL figure uses, when one is configured.
fn pg_url() -> Option<String> {
    std::env::var("DOCKLINE_TEST_PG_URL")
        .ok()
        .filter(|u| !u.is_empty())
}

/// The delivery figures `opts` asks for (see the module docs); `n` events
/// per round, `rounds` rounds. `quick_lane` is the one-lane backlog.
pub(crate) async fn figures(
    opts: &BenchOptions,
    dir: &Path,
    n: usize,
    one_lane_n: usize,
    rounds: usize,
) -> Result<Vec<Figure>> {
    let mut out = Vec::new();
    if opts.wants("collector_delivery") {
        out.extend(
            collector_delivery(dir, n, rounds)
                .await
                .context("collector_delivery")?,
        );
    }
    if opts.wants("collector_delivery_pg") {
        out.push(
            collector_delivery_pg(n, rounds)
                .await
                .context("collector_delivery_pg")?,
        );
    }
    if opts.wants("collector_one_lane") {
        out.push(
            one_lane(dir, one_lane_n, rounds)
                .await
                .context("collector_one_lane_backlog")?,
        );
    }
    Ok(out)
}

/// Bench event `k` in the lane `lanes` gives it.
fn event_in(k: usize, lanes: Lanes) -> Result<Envelope> {
    let mut e = envelope(&device()?, k);
    if let Payload::Event(ev) = &mut e.payload {
        match lanes {
            Lanes::OrdersOfNine => {}
            Lanes::One => ev.refs.order = Some("SO-ONE-LANE".into()),
            Lanes::EachOwn => ev.refs.order = Some(format!("SO-OWN-{k}")),
        }
    }
    Ok(e)
}

/// Opens a fresh inbox of `backend` (round `round`) and stores `n` bench
/// events in batches of [`PER`], before any clock starts. The scratch
/// schema of a PostgreSQL round is returned so it lives until the round
/// ends (it is dropped with its tables).
async fn backlog(
    dir: &Path,
    backend: Backend,
    round: usize,
    n: usize,
    lanes: Lanes,
) -> Result<(InboxHandle, Option<ScratchSchema>)> {
    let path = dir.join(format!("delivery-{lanes:?}-{round}.db"));
    let (store, schema): (Box<dyn InboxStore>, Option<ScratchSchema>) = match backend {
        Backend::Sqlite => (Box::new(Inbox::open(&path)?), None),
        Backend::Postgres => {
            let base = pg_url().ok_or_else(|| anyhow!("DOCKLINE_TEST_PG_URL is not set"))?;
            // PgInbox runs its own runtime: open it off this one.
            tokio::task::spawn_blocking(move || -> Result<_> {
                let schema = ScratchSchema::create(&base, "bench")?;
                let store = PgInbox::open(schema.url(), DEFAULT_LEASE_MS)?;
                Ok((Box::new(store) as Box<dyn InboxStore>, Some(schema)))
            })
            .await??
        }
    };
    let inbox = InboxHandle::from_box(store);
    let site = SiteId::new("bench").map_err(|e| anyhow!("{e}"))?;
    let device = device()?;
    for lo in (0..n).step_by(PER) {
        let hi = (lo + PER).min(n);
        let batch = Batch {
            v: dockline_protocol::PROTOCOL_VERSION,
            device: device.clone(),
            epoch: EPOCH,
            first_held: 1,
            events: (lo..hi)
                .map(|k| event_in(k, lanes))
                .collect::<Result<_>>()?,
            shed: Vec::new(),
        };
        let site = site.clone();
        inbox
            .call(move |i| i.store_batch(&site, &batch, EPOCH as i64))
            .await?;
    }
    Ok((inbox, schema))
}

/// Events/s delivering `n` stored events from `inbox` to a fresh mock ERP
/// with `cfg`'s settings, timed until every verdict ack is out (each sent
/// after its verdict's commit).
async fn drain(
    inbox: InboxHandle,
    n: usize,
    tune: impl FnOnce(&mut DeliveryConfig),
) -> Result<f64> {
    let (erp, addr) = MockErp::start("127.0.0.1:0".parse()?, ErpConfig::new(SECRET)).await?;
    let mut cfg = DeliveryConfig::new(format!("http://{addr}/events"), SECRET);
    tune(&mut cfg);
    let (tx, mut acks) = tokio::sync::mpsc::channel(1024);
    let delivery = Arc::new(Delivery::new(&cfg, inbox, tx)?);
    let trigger = ShutdownTrigger::new();
    let started = Instant::now();
    let running = tokio::spawn(
        Arc::clone(&delivery).run(Arc::new(tokio::sync::Notify::new()), trigger.subscribe()),
    );
    let drained = async {
        let mut booked = 0;
        while booked < n {
            let p = tokio::time::timeout(Duration::from_secs(300), acks.recv())
                .await
                .map_err(|_| anyhow!("only {booked} of {n} events booked within 300 s"))?
                .ok_or_else(|| anyhow!("delivery stopped after {booked} of {n} events"))?;
            let ack: dockline_protocol::Ack = dockline_protocol::decode(&p.payload)?;
            booked += ack.verdicts.len();
        }
        Ok::<_, anyhow::Error>(n as f64 / started.elapsed().as_secs_f64())
    }
    .await;
    trigger.trigger();
    running.await?;
    // The inbox goes with the delivery, also after a failure: a PostgreSQL
    // inbox owns a runtime, which may only be dropped off this one.
    tokio::task::spawn_blocking(move || drop(delivery)).await?;
    let rate = drained?;
    let effects = erp.stats().effects;
    erp.shutdown().await;
    if effects != n as u64 {
        return Err(anyhow!(
            "the mock ERP booked {effects} effects for {n} events"
        ));
    }
    Ok(rate)
}

/// `collector_delivery` and `collector_delivery_vs_http` (SQLite).
async fn collector_delivery(dir: &Path, n: usize, rounds: usize) -> Result<Vec<Figure>> {
    let site = SiteId::new("bench").map_err(|e| anyhow!("{e}"))?;
    let concurrency = DeliveryConfig::new("http://127.0.0.1:1/", SECRET).concurrency;
    let (mut ours, mut sqlite, mut http) = (Vec::new(), Vec::new(), Vec::new());
    let (mut vs_sqlite, mut vs_http) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let (inbox, _) = backlog(dir, Backend::Sqlite, round, n, Lanes::OrdersOfNine).await?;
        let x = drain(inbox, n, |_| {}).await?;
        let y = raw_inserts(&dir.join(format!("raw-delivery-{round}.db")), n, PER)?;
        let z = raw_posts(&site, n, concurrency).await?;
        ours.push(x);
        sqlite.push(y);
        http.push(z);
        vs_sqlite.push(x / y);
        vs_http.push(x / z);
    }
    let (rate, http_rate) = (median(ours), median(http));
    let detail = format!(
        "{n} events in {} order lanes stored in the inbox, then delivered with the default [erp] (concurrency {concurrency}) to the mock ERP on loopback until every verdict was recorded and acked; median of {rounds} rounds alternating with both baselines",
        n.div_ceil(PICKS_PER_ORDER)
    );
    Ok(vec![
        Figure {
            name: "collector_delivery".into(),
            value: rate,
            unit: "events/s".into(),
            baseline: Some(median(sqlite)),
            ratio: Some(median(vs_sqlite)),
            target: "none in DESIGN.md; reported against raw SQLite inserts like the other figures"
                .into(),
            detail: format!(
                "{detail}; baseline raw inserts of outbox-like rows in transactions of {PER}"
            ),
        },
        Figure {
            name: "collector_delivery_vs_http".into(),
            value: rate,
            unit: "events/s".into(),
            baseline: Some(http_rate),
            ratio: Some(median(vs_http)),
            target: ">= 0.3 of raw signed POSTs (SQLite inbox)".into(),
            detail: format!(
                "{detail}; baseline raw signed POSTs of the same CloudEvents by {concurrency} concurrent senders to a fresh mock ERP"
            ),
        },
    ])
}

/// `collector_delivery_pg_vs_http`: the same on a PostgreSQL inbox, or a
/// figure that says it was skipped.
async fn collector_delivery_pg(n: usize, rounds: usize) -> Result<Figure> {
    let name = "collector_delivery_pg_vs_http".to_owned();
    let target = ">= 0.3 of raw signed POSTs (PostgreSQL inbox)".to_owned();
    if pg_url().is_none() {
        return Ok(Figure {
            name,
            value: 0.0,
            unit: "events/s".into(),
            baseline: None,
            ratio: None,
            target,
            detail: "skipped: DOCKLINE_TEST_PG_URL is not set (postgres://user:password@host:port/database of a server where the bench may create and drop a schema)".into(),
        });
    }
    let site = SiteId::new("bench").map_err(|e| anyhow!("{e}"))?;
    let concurrency = DeliveryConfig::new("http://127.0.0.1:1/", SECRET).concurrency;
    let (mut ours, mut http, mut ratio) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        let (inbox, schema) = backlog(
            Path::new("."),
            Backend::Postgres,
            round,
            n,
            Lanes::OrdersOfNine,
        )
        .await?;
        let x = drain(inbox, n, |_| {}).await?;
        // The schema is dropped (blocking) off the runtime.
        tokio::task::spawn_blocking(move || drop(schema)).await?;
        let z = raw_posts(&site, n, concurrency).await?;
        ours.push(x);
        http.push(z);
        ratio.push(x / z);
    }
    Ok(Figure {
        name,
        value: median(ours),
        unit: "events/s".into(),
        baseline: Some(median(http)),
        ratio: Some(median(ratio)),
        target,
        detail: format!(
            "{n} events in {} order lanes stored in a PostgreSQL inbox (fresh schema per round, local server), then delivered with the default [erp] (concurrency {concurrency}) to the mock ERP on loopback until every verdict was recorded and acked; baseline raw signed POSTs of the same CloudEvents by {concurrency} senders; median of {rounds} rounds",
            n.div_ceil(PICKS_PER_ORDER)
        ),
    })
}

/// `collector_one_lane_backlog`: one order lane holding all `n` events
/// against the same `n` events each in a lane of its own, both with one
/// request in flight (`erp.concurrency = 1`), so the figure compares what
/// picking a lane's next event costs, not the parallelism separate lanes
/// allow (one lane is delivered strictly one event at a time, by design).
async fn one_lane(dir: &Path, n: usize, rounds: usize) -> Result<Figure> {
    let (mut one, mut own, mut ratio) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        let (inbox, _) = backlog(dir, Backend::Sqlite, round, n, Lanes::One).await?;
        let x = drain(inbox, n, |c| c.concurrency = 1).await?;
        let (inbox, _) = backlog(dir, Backend::Sqlite, round, n, Lanes::EachOwn).await?;
        let y = drain(inbox, n, |c| c.concurrency = 1).await?;
        one.push(x);
        own.push(y);
        ratio.push(x / y);
    }
    Ok(Figure {
        name: "collector_one_lane_backlog".into(),
        value: median(one),
        unit: "events/s".into(),
        baseline: Some(median(own)),
        ratio: Some(median(ratio)),
        target: ">= 0.8 of the same events in separate lanes (linear, never quadratic)".into(),
        detail: format!(
            "{n} picks of one order (one lane) stored in the SQLite inbox, delivered to the mock ERP; baseline the same {n} events each in an order lane of its own; both with erp.concurrency = 1 (a lane sends one event at a time by design, so this compares the cost of picking the next event, not parallelism); median of {rounds} rounds"
        ),
    })
}
