//! `dockline-sim bench`: the performance figures of DESIGN.md, each measured
//! next to the raw limit it is judged against, in the same run on the same
//! disk and loopback, so a slow shared machine moves both numbers together.
//!
//! Figures:
//!
//! | name | what | baseline |
//! |---|---|---|
//! | `agent_durable_ingest` | events/s appended by 1024 concurrent producers through the agent's outbox (group commit, fsync per group; a group holds at most 1024 events, the baseline's transaction size) | raw batched inserts of the same rows into a bare SQLite table (WAL, `synchronous = FULL`, 1024 rows per transaction) |
//! | `agent_fsync_single_commit` | commits/s of one must-deliver event at a time (each waits for its fsync) | raw `write` + `fdatasync` of the same bytes on the same file system |
//! | `agent_backlog_drain` | seconds for a real agent to drain a pre-filled outbox through a real broker to a real collector | raw QoS 1 publishes of batches of the same size to the same broker |
//! | `agent_idle_rss` | resident memory of a fresh, idle, connected agent process | — |
//! | `collector_ingest` | events/s through the collector's ingest path without the network: wire batches of 256 decoded, validated and stored in the inbox (one fsynced transaction each) | raw inserts of outbox-like rows in transactions of 256 |
//! | `collector_delivery` | events/s from a backlog in the inbox (nine picks per order lane) to booked at the mock ERP over loopback HTTP: the real delivery (lanes, policy, breaker, verdicts committed, acks), default `[erp]` | raw inserts of outbox-like rows in transactions of 256 |
//! | `collector_delivery_vs_http` | the same measurement | raw signed POSTs of the same CloudEvents by as many concurrent senders as `erp.concurrency`, to a fresh mock ERP: the ceiling |
//! | `collector_delivery_pg_vs_http`, `collector_one_lane_backlog` | delivery from a PostgreSQL inbox; one lane with the whole backlog ([`crate::bench_delivery`]) | raw signed POSTs; the same events in separate lanes |
//! | `scan_to_erp_p50`, `scan_to_erp_p99` | ms from a pick's POST to the agent until the mock ERP has booked it, on a healthy system | — |
//! | `fleet_reconnect_burst` | messages/s from N devices × K one-event batches published at once (10 clients) until every one is stored and its application ack published, resends after the ack timeout included ([`crate::bench_burst`]) | the same messages QoS 1 from 10 clients to topics nobody reads |
//! | `wire_bytes_per_event` | CBOR bytes per event in a batch of 256 | the same batch as JSON (same field names) |
//! | `agent_binary_size` | size of the `dockline-agent` executable next to this one | — |
//! | `wire_duplicate_ratio`, `wire_link_bytes_per_event`, `media_throughput`, `media_resume_bytes` | events crossing the link more than once; photos from a real agent ([`crate::bench_media`]) | see there |
//!
//! Ingest, single commits, collector ingest and collector delivery alternate
//! with their baselines over several rounds (five in a full run) and report
//! medians.
//! Processes are children (`current_exe() broker|collector|agent`), as in the
//! demo; the outbox is filled through the agent library's public API.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use dockline_agent::outbox::{NewEvent, Outbox, OutboxConfig};
use dockline_protocol::{
    BusinessEvent, DeviceId, EventDetail, Payload, Priority, References, TimeSource,
};
use serde::Serialize;

use crate::demo::post_event;
use crate::mock_erp::{ErpConfig, MockErp};
use crate::stack::{self, AgentConfig, Programs, Role, Services, Stack, StackSpec};

/// The webhook secret shared by the bench's collector and mock ERP.
pub(crate) const SECRET: &str = "whsec_YmVuY2gtc2VjcmV0LWJlbmNoLXNlY3JldA==";

/// One measured figure.
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    /// Stable name.
    pub name: String,
    /// The measured value.
    pub value: f64,
    /// Its unit.
    pub unit: String,
    /// The raw limit measured in the same run, in the same unit, if one applies.
    pub baseline: Option<f64>,
    /// `value / baseline` (for durations: `baseline / value`), if a baseline applies.
    pub ratio: Option<f64>,
    /// The target from DESIGN.md, in words.
    pub target: String,
    /// How it was measured (sizes, counts).
    pub detail: String,
}

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// This executable (children are started from it).
    pub exe: PathBuf,
    /// Small sizes, under a minute in total.
    pub quick: bool,
    /// Run only the figures whose name contains one of these (all when empty).
    pub only: Vec<String>,
}

impl BenchOptions {
    pub(crate) fn wants(&self, name: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|o| name.contains(o.as_str()))
    }
}

struct Sizes {
    ingest: usize,
    single: usize,
    drain: usize,
    /// Alternating rounds of a figure and its baseline.
    rounds: usize,
    /// Events timed from POST to ERP booking.
    latency: usize,
    /// Backlog delivered from the inbox to the mock ERP.
    delivery: usize,
    /// Backlog of the one-lane delivery figure.
    one_lane: usize,
}

impl Sizes {
    fn new(quick: bool) -> Self {
        if quick {
            Self {
                ingest: 20_000,
                // Single commits and the paired figures are the noisiest
                // on a shared machine: a few hundred fsyncs and one round
                // swung the agent's ratio between 0.6 and 0.9 within a
                // minute; three rounds' medians of 500 hold steadier.
                single: 500,
                drain: 20_000,
                rounds: 3,
                latency: 60,
                delivery: 2_000,
                one_lane: 5_000,
            }
        } else {
            Self {
                ingest: 200_000,
                single: 2_000,
                drain: 1_000_000,
                rounds: 5,
                latency: 400,
                delivery: 20_000,
                one_lane: 20_000,
            }
        }
    }
}

/// Runs every figure; a figure that cannot be measured is an error naming it.
pub async fn run(opts: &BenchOptions) -> Result<Vec<Figure>> {
    let sizes = Sizes::new(opts.quick);
    let dir = tempfile::Builder::new()
        .prefix("dockline-bench-")
        .tempdir()
        .context("cannot create a temp dir for the bench")?;
    let mut figures = Vec::new();
    if opts.wants("agent_durable_ingest") {
        figures.push(
            ingest(dir.path(), sizes.ingest, sizes.rounds)
                .await
                .context("agent_durable_ingest")?,
        );
    }
    if opts.wants("agent_fsync_single_commit") {
        figures.push(
            single_commits(dir.path(), sizes.single, sizes.rounds)
                .await
                .context("agent_fsync_single_commit")?,
        );
    }
    if opts.wants("agent_secure_delete") {
        figures.push(
            secure_delete_cost(dir.path(), sizes.ingest, sizes.rounds)
                .context("agent_secure_delete")?,
        );
    }
    if opts.wants("agent_backlog_drain") || opts.wants("agent_idle_rss") {
        let (drain, rss) = drain_and_rss(opts, dir.path(), sizes.drain)
            .await
            .context("agent_backlog_drain")?;
        figures.push(drain);
        figures.push(rss);
    }
    if opts.wants("collector_ingest") {
        figures.push(
            collector_ingest(dir.path(), sizes.ingest, sizes.rounds)
                .await
                .context("collector_ingest")?,
        );
    }
    figures.extend(
        crate::bench_delivery::figures(
            opts,
            dir.path(),
            sizes.delivery,
            sizes.one_lane,
            sizes.rounds,
        )
        .await?,
    );
    if opts.wants("scan_to_erp") {
        let (p50, p99) = latency(opts, dir.path(), sizes.latency)
            .await
            .context("scan_to_erp latency")?;
        figures.push(p50);
        figures.push(p99);
    }
    if opts.wants("fleet_reconnect_burst") {
        let (devices, batches) = crate::bench_burst::sizes(opts.quick);
        figures.push(
            crate::bench_burst::fleet_reconnect_burst(&opts.exe, dir.path(), devices, batches)
                .await
                .context("fleet_reconnect_burst")?,
        );
    }
    if opts.wants("wire_bytes_per_event") {
        figures.push(wire_bytes()?);
    }
    if opts.wants("ack_signing") {
        let n = if opts.quick { 2_000 } else { 20_000 };
        figures.push(crate::bench_acks::ack_signing(dir.path(), n).context("ack_signing")?);
    }
    if opts.wants("agent_binary_size") {
        figures.push(binary_size(&opts.exe)?);
    }
    if opts.wants("decode_") {
        figures.extend(crate::bench_decode::figures(opts.quick).context("decode throughput")?);
    }
    figures.extend(
        crate::bench_media::figures(opts, dir.path())
            .await
            .context("media")?,
    );
    if figures.is_empty() {
        return Err(anyhow!(
            "no figure matches --only {:?}; names: agent_durable_ingest, agent_fsync_single_commit, agent_secure_delete, agent_backlog_drain, agent_idle_rss, collector_ingest, collector_delivery, collector_delivery_pg, collector_one_lane, scan_to_erp, fleet_reconnect_burst, wire_bytes_per_event, wire_duplicate_ratio, wire_link_bytes_per_event, media_throughput, media_resume_bytes, ack_signing, agent_binary_size, decode_nmea, decode_gs1, decode_mtsics",
            opts.only
        ));
    }
    Ok(figures)
}

fn event(n: usize) -> NewEvent {
    NewEvent {
        priority: Priority::Normal,
        captured_ms: 1_764_000_000_000 + n as i64,
        time_source: TimeSource::DeviceClock,
        payload: Payload::Event(BusinessEvent {
            detail: EventDetail::Picked {
                item: "09506000134352".into(),
                quantity: 1 + (n % 4) as u32,
                lot: None,
            },
            refs: References {
                order: Some(format!("SO-{}", 100_000 + n / 9)),
                location: Some("A-01-02".into()),
                ..References::default()
            },
        }),
    }
}

pub(crate) fn device() -> Result<DeviceId> {
    DeviceId::new("bench-01").map_err(|e| anyhow!("{e}"))
}

fn unlimited() -> OutboxConfig {
    OutboxConfig {
        budget_bytes: u64::MAX / 4,
        min_free_bytes: 0,
        ..OutboxConfig::default()
    }
}

/// Concurrent producers in the ingest figure.
const PRODUCERS: usize = 1024;

/// Appends `n` events from [`PRODUCERS`] concurrent producers; returns the
/// elapsed time. Each producer waits for its commit before the next append,
/// so a group holds at most one event per producer: 1024 producers let the
/// writer's groups reach the size of the raw baseline's transactions.
async fn fill(outbox: &Outbox, n: usize) -> Result<Duration> {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for p in 0..PRODUCERS {
        let ob = outbox.clone();
        tasks.push(tokio::spawn(async move {
            let mut i = p;
            while i < n {
                ob.append(event(i)).await?;
                i += PRODUCERS;
            }
            Ok::<_, dockline_agent::outbox::OutboxError>(())
        }));
    }
    for t in tasks {
        t.await.context("producer task")??;
    }
    Ok(started.elapsed())
}

/// Median of a few values.
pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Runs `ours` and `raw` alternately `rounds` times, each on fresh files, and
/// gives the median of each and of their ratios: a shared disk's slow
/// moments then weigh on both sides alike.
async fn paired<O, R>(rounds: usize, mut ours: O, mut raw: R) -> Result<(f64, f64, f64)>
where
    O: AsyncFnMut(usize) -> Result<f64>,
    R: FnMut(usize) -> Result<f64>,
{
    let (mut a, mut b, mut r) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        let x = ours(round).await?;
        let y = raw(round)?;
        a.push(x);
        b.push(y);
        r.push(x / y);
    }
    Ok((median(a), median(b), median(r)))
}

async fn ingest(dir: &Path, n: usize, rounds: usize) -> Result<Figure> {
    let (rate, raw, ratio) = paired(
        rounds,
        async |round| {
            let odir = dir.join(format!("ingest-{round}"));
            std::fs::create_dir_all(&odir)?;
            let outbox = Outbox::open(&odir, device()?, unlimited())?;
            let elapsed = fill(&outbox, n).await?;
            drop(outbox);
            let _ = std::fs::remove_dir_all(&odir);
            Ok(n as f64 / elapsed.as_secs_f64())
        },
        |round| raw_batched_inserts(&dir.join(format!("raw-insert-{round}.db")), n),
    )
    .await?;
    Ok(Figure {
        name: "agent_durable_ingest".into(),
        value: rate,
        unit: "events/s".into(),
        baseline: Some(raw),
        ratio: Some(ratio),
        target: ">= 100000 events/s and >= 0.5 of raw batched SQLite inserts".into(),
        detail: format!(
            "{n} events, {PRODUCERS} producers each awaiting its commit, fsync per group commit; median of {rounds} rounds alternating with the baseline"
        ),
    })
}

/// What `PRAGMA secure_delete` (on in the agent's outbox) costs where it
/// works: acks deleting payloads. The same rows are inserted, then deleted
/// in acked ranges of 256 with an fsync each, with secure_delete off (the
/// baseline) and on; the ratio is on/off rows deleted per second.
fn secure_delete_cost(dir: &Path, n: usize, rounds: usize) -> Result<Figure> {
    let (mut on, mut off, mut ratio) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        let with = raw_ack_deletes(&dir.join(format!("sd-on-{round}.db")), n, true)?;
        let without = raw_ack_deletes(&dir.join(format!("sd-off-{round}.db")), n, false)?;
        ratio.push(with / without);
        on.push(with);
        off.push(without);
    }
    Ok(Figure {
        name: "agent_secure_delete".into(),
        value: median(on),
        unit: "rows deleted/s".into(),
        baseline: Some(median(off)),
        ratio: Some(median(ratio)),
        target: "cost of secure_delete on ack deletes (no target; reported)".into(),
        detail: format!(
            "{n} outbox-like rows deleted in ranges of 256, fsync per range, secure_delete on vs off; median of {rounds} rounds"
        ),
    })
}

/// Inserts `n` rows as [`raw_inserts`] does, then deletes them in ranges of
/// 256 (one fsynced transaction each); returns rows deleted per second.
fn raw_ack_deletes(path: &Path, n: usize, secure: bool) -> Result<f64> {
    raw_inserts(path, n, 1024)?;
    let conn = rusqlite::Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "secure_delete", if secure { "ON" } else { "OFF" })?;
    let started = Instant::now();
    let mut lo = 1i64;
    while lo <= n as i64 {
        let hi = lo + 255;
        conn.execute("DELETE FROM outbox WHERE seq BETWEEN ?1 AND ?2", [lo, hi])?;
        lo = hi + 1;
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    let _ = std::fs::remove_file(path);
    Ok(rate)
}

/// The same rows the outbox writes, inserted raw in transactions of 1024.
fn raw_batched_inserts(path: &Path, n: usize) -> Result<f64> {
    raw_inserts(path, n, 1024)
}

/// `n` rows like the outbox's, inserted raw in transactions of `per_tx`.
pub(crate) fn raw_inserts(path: &Path, n: usize, per_tx: usize) -> Result<f64> {
    let mut conn = rusqlite::Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.execute_batch(
        "CREATE TABLE outbox (seq INTEGER PRIMARY KEY, event_id BLOB NOT NULL UNIQUE,
           priority INTEGER NOT NULL, captured_ms INTEGER NOT NULL, payload BLOB NOT NULL)",
    )?;
    let payload = sample_payload()?;
    let started = Instant::now();
    let mut seq = 0usize;
    while seq < n {
        let tx = conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO outbox (seq, event_id, priority, captured_ms, payload) VALUES (?1, ?2, 1, ?3, ?4)",
            )?;
            for _ in 0..per_tx.min(n - seq) {
                seq += 1;
                let mut id = [0u8; 16];
                id[..8].copy_from_slice(&(seq as u64).to_be_bytes());
                stmt.execute(rusqlite::params![
                    seq as i64,
                    &id[..],
                    1_764_000_000_000i64,
                    &payload
                ])?;
            }
        }
        tx.commit()?;
    }
    Ok(n as f64 / started.elapsed().as_secs_f64())
}

/// The CBOR envelope of one bench event, as the outbox stores it.
fn sample_payload() -> Result<Vec<u8>> {
    Ok(dockline_protocol::encode(&envelope(&device()?, 0))?)
}

/// The epoch of the bench's hand-made envelopes.
pub(crate) const EPOCH: u64 = 1_764_000_000_000;

/// Bench event `k` as the envelope of sequence `k + 1`, with an id made
/// from `k`.
pub(crate) fn envelope(device: &DeviceId, k: usize) -> dockline_protocol::Envelope {
    let e = event(k);
    let mut id = [0x5a; 16];
    id[8..].copy_from_slice(&(k as u64).to_be_bytes());
    dockline_protocol::Envelope {
        v: dockline_protocol::PROTOCOL_VERSION,
        device: device.clone(),
        epoch: EPOCH,
        seq: 1 + k as u64,
        id: dockline_protocol::EventId(id),
        captured_ms: e.captured_ms,
        time_source: e.time_source,
        priority: e.priority,
        payload: e.payload,
    }
}

async fn single_commits(dir: &Path, n: usize, rounds: usize) -> Result<Figure> {
    let (rate, raw, ratio) = paired(
        rounds,
        async |round| {
            let odir = dir.join(format!("single-{round}"));
            std::fs::create_dir_all(&odir)?;
            let outbox = Outbox::open(&odir, device()?, unlimited())?;
            let mut e = event(0);
            e.priority = Priority::MustDeliver;
            // Warm up the connection and the file.
            outbox.append(e.clone()).await?;
            let started = Instant::now();
            for _ in 0..n {
                outbox.append(e.clone()).await?;
            }
            Ok(n as f64 / started.elapsed().as_secs_f64())
        },
        |round| raw_fsyncs(&dir.join(format!("raw-fsync-{round}.bin")), n),
    )
    .await?;
    Ok(Figure {
        name: "agent_fsync_single_commit".into(),
        value: rate,
        unit: "commits/s".into(),
        baseline: Some(raw),
        ratio: Some(ratio),
        target: ">= 0.8 of the raw fsync rate".into(),
        detail: format!(
            "{n} sequential must-deliver appends, each acknowledged after its fsync; median of {rounds} rounds alternating with the baseline"
        ),
    })
}

/// Appends a record and `fdatasync`s it, `n` times: the disk's raw limit for
/// durable single writes.
fn raw_fsyncs(path: &Path, n: usize) -> Result<f64> {
    use std::io::Write;
    let payload = sample_payload()?;
    let mut f = std::fs::File::options()
        .create(true)
        .append(true)
        .open(path)?;
    f.write_all(&payload)?;
    f.sync_data()?;
    let started = Instant::now();
    for _ in 0..n {
        f.write_all(&payload)?;
        f.sync_data()?;
    }
    Ok(n as f64 / started.elapsed().as_secs_f64())
}

pub(crate) async fn agent_status(
    http: &reqwest::Client,
    api: SocketAddr,
) -> Result<serde_json::Value> {
    Ok(http
        .get(format!("http://{api}/v1/status"))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?)
}

/// The bench's system under test in `dir`, its children run by `exe`:
/// broker, mock ERP, and a collector knowing `devices`, posting to
/// `erp_url` (the mock ERP when `None`), with the demo's settings.
pub(crate) async fn bench_stack(
    exe: &Path,
    dir: &Path,
    devices: &[String],
    erp_url: Option<String>,
) -> Result<Stack> {
    let services = Services::start(StackSpec {
        programs: Programs::simulator(exe).with_agent_binary_beside(),
        dir: dir.into(),
        site: crate::demo::SITE.into(),
        broker: None,
        erp: ErpConfig::new(SECRET),
    })
    .await?;
    let mut config = services.collector_config(devices)?;
    stack::config::simulated_collector(&mut config);
    if let Some(url) = erp_url {
        config.erp.url = url;
    }
    Ok(services.start_collector(config).await?)
}

/// The config of the bench's agent `device` with its data in `data_dir`.
fn bench_agent(stack: &Stack, device: &str, data_dir: &Path) -> Result<AgentConfig> {
    let mut config = stack.agent_config(device)?;
    stack::config::simulated_agent(&mut config);
    config.data_dir = data_dir.into();
    Ok(config)
}

/// Scan → ERP on a healthy system: `n` picks posted one at a time, 50 ms
/// apart, to a real agent (through its HTTP API, as a handheld app does),
/// carried by a real broker and collector to the mock ERP; each timed from
/// its POST until it appears in the ERP's books (polled every millisecond).
async fn latency(opts: &BenchOptions, dir: &Path, n: usize) -> Result<(Figure, Figure)> {
    use std::collections::HashMap;
    let ldir = dir.join("latency");
    let mut stack = bench_stack(&opts.exe, &ldir, &["bench-02".into()], None).await?;
    let config = bench_agent(&stack, "bench-02", &ldir.join("agent"))?;
    let api = stack.start_agent(config).await?.api();
    // Wait until the agent is connected, so the figure is a healthy system's.
    let http = reqwest::Client::new();
    let deadline = Instant::now() + stack::READY_TIMEOUT;
    while agent_status(&http, api).await?["mqtt_connected"] != true {
        if Instant::now() > deadline {
            return Err(anyhow!(
                "the agent did not connect to the broker; logs in {}",
                ldir.display()
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let posted = std::sync::Arc::new(std::sync::Mutex::new(HashMap::<u64, Instant>::new()));
    let poster = tokio::spawn({
        let (http, posted) = (http.clone(), posted.clone());
        async move {
            let mut tick = tokio::time::interval(Duration::from_millis(50));
            for i in 0..n {
                tick.tick().await;
                let body = serde_json::json!({
                    "priority": "must_deliver",
                    "detail": { "picked": { "item": "09506000134352", "quantity": 1 + i % 4 } },
                    "refs": { "order": format!("SO-{}", 200_000 + i / 5), "location": "A-01-02" },
                });
                let at = Instant::now();
                let accepted = post_event(&http, "bench-02", api, &body)
                    .await
                    .map_err(|e| anyhow!("POST /v1/events: {e}"))?;
                posted
                    .lock()
                    .map_err(|_| anyhow!("poisoned"))?
                    .insert(accepted.seq, at);
            }
            Ok::<_, anyhow::Error>(())
        }
    });
    let mut booked = HashMap::<u64, Instant>::new();
    let limit = Instant::now() + Duration::from_secs(60) + Duration::from_millis(50 * n as u64);
    while booked.len() < n {
        if Instant::now() > limit {
            return Err(anyhow!(
                "{} of {n} events booked in time; logs in {}",
                booked.len(),
                ldir.display()
            ));
        }
        for effect in stack.services.erp.effects().into_iter().skip(booked.len()) {
            if let Some(seq) = effect.seq {
                booked.entry(seq).or_insert_with(Instant::now);
            }
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    poster.await.context("poster task")??;
    stack.shutdown(Duration::from_secs(5)).await;
    let posted = posted.lock().map_err(|_| anyhow!("poisoned"))?.clone();
    let mut ms: Vec<f64> = booked
        .iter()
        .filter_map(|(seq, at)| {
            Some(
                at.saturating_duration_since(*posted.get(seq)?)
                    .as_secs_f64()
                    * 1e3,
            )
        })
        .collect();
    ms.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        ms.get(((ms.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };
    let figure = |name: &str, value: f64| Figure {
        name: name.into(),
        value,
        unit: "ms".into(),
        baseline: None,
        ratio: None,
        target: "p99 < 250 ms".into(),
        detail: format!(
            "{} must-deliver picks posted 50 ms apart to a connected agent, from POST to the mock ERP's books; broker, collector and ERP on loopback",
            ms.len()
        ),
    };
    Ok((
        figure("scan_to_erp_p50", pct(0.5)),
        figure("scan_to_erp_p99", pct(0.99)),
    ))
}

/// Envelopes `first..first + n` of the bench device as wire batches of
/// `per` events.
fn wire_batches(first: usize, n: usize, per: usize) -> Result<Vec<Vec<u8>>> {
    let device = device()?;
    (first..first + n)
        .step_by(per.max(1))
        .map(|lo| {
            let hi = (lo + per).min(first + n);
            Ok(dockline_protocol::encode(&batch(&device, first, lo..hi))?)
        })
        .collect()
}

/// The batch of bench events `range` (see [`envelope`]), sent while the
/// device still holds everything from event `first` on.
fn batch(
    device: &DeviceId,
    first: usize,
    range: std::ops::Range<usize>,
) -> dockline_protocol::Batch {
    dockline_protocol::Batch {
        v: dockline_protocol::PROTOCOL_VERSION,
        device: device.clone(),
        epoch: EPOCH,
        first_held: 1 + first as u64,
        events: range.map(|k| envelope(device, k)).collect(),
        shed: Vec::new(),
    }
}

/// The collector's ingest path without the network: each wire batch of 256
/// events decoded and validated, then stored in the inbox in one fsynced
/// transaction (dedup, watermark), as the collector does per MQTT message.
async fn collector_ingest(dir: &Path, n: usize, rounds: usize) -> Result<Figure> {
    use dockline_collector::inbox::{Inbox, InboxStore};
    use dockline_collector::ingest::received::ReceivedBatch;
    const PER: usize = 256;
    let site = dockline_protocol::SiteId::new("bench").map_err(|e| anyhow!("{e}"))?;
    let batches = wire_batches(0, n, PER)?;
    let (rate, raw, ratio) = paired(
        rounds,
        async |round| {
            let mut inbox = Inbox::open(&dir.join(format!("inbox-{round}.db")))?;
            let started = Instant::now();
            for bytes in &batches {
                // As the collector's ingest does: decode and validate, then
                // store each envelope as received.
                let received = ReceivedBatch::decode(bytes)?;
                let envelopes = received.envelope_bytes();
                inbox.store_received(&site, &received.batch, envelopes.as_deref(), EPOCH as i64)?;
            }
            Ok(n as f64 / started.elapsed().as_secs_f64())
        },
        |round| raw_inserts(&dir.join(format!("raw-inbox-{round}.db")), n, PER),
    )
    .await?;
    Ok(Figure {
        name: "collector_ingest".into(),
        value: rate,
        unit: "events/s".into(),
        baseline: Some(raw),
        ratio: Some(ratio),
        target: ">= 100000 events/s (SQLite inbox)".into(),
        detail: format!(
            "{n} events in wire batches of {PER}: decode + validate + store (fsync per batch), one at a time as MQTT delivers them; baseline raw inserts of outbox-like rows in transactions of {PER}; median of {rounds} rounds"
        ),
    })
}

/// Events/s of `n` signed CloudEvents POSTs (the bench events, as the
/// webhook adapter builds them) by `concurrency` senders to a fresh mock
/// ERP, every one answered 201.
pub(crate) async fn raw_posts(
    site: &dockline_protocol::SiteId,
    n: usize,
    concurrency: usize,
) -> Result<f64> {
    use dockline_collector::erp::webhook::cloudevents::{
        WebhookOptions, WebhookSigner, cloudevent_body,
    };
    let (erp, addr) = MockErp::start("127.0.0.1:0".parse()?, ErpConfig::new(SECRET)).await?;
    let signer = WebhookSigner::new(SECRET, &WebhookOptions::default())?;
    let device = device()?;
    let mut requests = Vec::with_capacity(n);
    for k in 0..n {
        let e = envelope(&device, k);
        let dockline_protocol::Payload::Event(event) = &e.payload else {
            return Err(anyhow!("bench events are business events"));
        };
        requests.push((e.id.to_string(), cloudevent_body(site, &e, event)));
    }
    let requests = std::sync::Arc::new(requests);
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let client = reqwest::Client::new();
    let url = format!("http://{addr}/events");
    let started = Instant::now();
    let mut senders = Vec::new();
    for _ in 0..concurrency.max(1) {
        let (requests, next, client, url, signer) = (
            std::sync::Arc::clone(&requests),
            std::sync::Arc::clone(&next),
            client.clone(),
            url.clone(),
            signer.clone(),
        );
        senders.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some((id, body)) = requests.get(i) else {
                    return Ok::<_, anyhow::Error>(());
                };
                let ts = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)?
                    .as_secs() as i64;
                let resp = client
                    .post(&url)
                    .header("content-type", "application/cloudevents+json")
                    .header("webhook-id", id.as_str())
                    .header("webhook-timestamp", ts.to_string())
                    .header("webhook-signature", signer.signature(id, ts, body))
                    .header("idempotency-key", signer.idempotency_key(id))
                    .body(body.clone())
                    .send()
                    .await?;
                if resp.status().as_u16() != 201 {
                    return Err(anyhow!("raw POST answered {}", resp.status()));
                }
            }
        }));
    }
    for s in senders {
        s.await.context("raw POST sender")??;
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    erp.shutdown().await;
    Ok(rate)
}

/// Bytes per event in a batch on the wire (CBOR) against the same batch as
/// JSON with the same field names.
fn wire_bytes() -> Result<Figure> {
    const N: usize = 256;
    let batch = batch(&device()?, 0, 0..N);
    let cbor = dockline_protocol::encode(&batch)?.len() as f64 / N as f64;
    let json = serde_json::to_vec(&batch)?.len() as f64 / N as f64;
    Ok(Figure {
        name: "wire_bytes_per_event".into(),
        value: cbor,
        unit: "bytes".into(),
        baseline: Some(json),
        ratio: Some(cbor / json),
        target: "<= 0.5 of the same events as JSON".into(),
        detail: format!("a batch of {N} picks as CBOR (the wire) and as JSON, same field names"),
    })
}

/// Fills an outbox with `n` events offline, then starts broker, collector and
/// the agent and times the drain; then measures the idle agent's RSS.
async fn drain_and_rss(opts: &BenchOptions, dir: &Path, n: usize) -> Result<(Figure, Figure)> {
    let ddir = dir.join("drain");
    let adir = ddir.join("agent");
    std::fs::create_dir_all(&adir)?;
    let outbox = Outbox::open(&adir, device()?, unlimited())?;
    fill(&outbox, n).await?;
    drop(outbox);
    // Let the writer thread close the file before the agent opens it.
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Nothing listens on the ERP address: the collector stores and acks, and
    // its deliveries back off quietly, so the figure is the uplink's.
    let erp: SocketAddr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?
    };
    let erp_url = Some(format!("http://{erp}/events"));
    let mut stack = bench_stack(&opts.exe, &ddir, &["bench-01".into()], erp_url).await?;
    let broker = stack
        .services
        .broker
        .addr()
        .socket_addr()
        .context("the bench's broker is on an IP address")?;
    let mut config = bench_agent(&stack, "bench-01", &adir)?;
    config.uplink.batch_max_events = 1000;
    config.uplink.heartbeat_secs = 3600;
    config.uplink.max_inflight_batches = 16;
    let program = stack.services.programs.path(Role::Agent).to_path_buf();
    let started = Instant::now();
    let api = stack.start_agent(config).await?.api();
    let http = reqwest::Client::new();
    let limit = Duration::from_secs(if n > 100_000 { 600 } else { 120 });
    let drained = loop {
        let s = agent_status(&http, api).await?;
        if s["queued"].as_u64() == Some(0) {
            break started.elapsed();
        }
        if started.elapsed() > limit {
            return Err(anyhow!(
                "the agent did not drain {n} events within {}s (status {s}); logs in {}",
                limit.as_secs(),
                ddir.display()
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let rate = n as f64 / drained.as_secs_f64();
    let raw = raw_publish_rate(broker, n.min(200_000)).await?;
    let drain = Figure {
        name: "agent_backlog_drain".into(),
        value: drained.as_secs_f64(),
        unit: "s".into(),
        baseline: Some(n as f64 / raw),
        ratio: Some(rate / raw),
        target: "< 20 s for 1,000,000 events and >= 0.5 of the raw QoS 1 publish rate".into(),
        detail: format!(
            "{n} events through a real broker to a real collector ({rate:.0} events/s; agent [uplink] batch_max_events = 1000, max_inflight_batches = 16; baseline: raw QoS 1 publishes of 256-event batches at {raw:.0} events/s)"
        ),
    };

    // After the drain: connected, nothing left to do.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after_drain = rss_bytes(stack.agents[0].pid().context("the agent runs")?)?;
    stack.agents[0].terminate(Duration::from_secs(5)).await;

    // A fresh agent (empty outbox, default uplink settings), connected and idle.
    let config = bench_agent(&stack, "bench-01", &ddir.join("fresh"))?;
    let fresh = stack.start_agent(config).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle = rss_bytes(fresh.pid().context("the fresh agent runs")?)?;
    stack.shutdown(Duration::from_secs(5)).await;
    let mib = |b: u64| b as f64 / 1_048_576.0;
    let rss_figure = Figure {
        name: "agent_idle_rss".into(),
        value: mib(idle),
        unit: "MiB".into(),
        baseline: None,
        ratio: None,
        target: "< 10 MB".into(),
        detail: format!(
            "VmRSS of {} started fresh, connected and idle for 3 s; {:.1} MiB right after draining {n} events",
            program.display(),
            mib(after_drain)
        ),
    };
    Ok((drain, rss_figure))
}

/// QoS 1 publishes of 256-event-sized batches to `broker` on a topic nobody
/// reads; returns events per second (messages × 256 / s).
async fn raw_publish_rate(broker: SocketAddr, events: usize) -> Result<f64> {
    const PER_BATCH: usize = 256;
    let payload = sample_payload()?;
    let message = payload.repeat(PER_BATCH);
    let messages = events.div_ceil(PER_BATCH).max(1);
    let mut options =
        rumqttc::MqttOptions::new("bench-raw", broker.ip().to_string(), broker.port());
    options.set_max_packet_size(message.len() + 1024, message.len() + 1024);
    options.set_inflight(24);
    let (client, mut eventloop) = rumqttc::AsyncClient::new(options, 64);
    let started = Instant::now();
    let publisher = tokio::spawn(async move {
        for _ in 0..messages {
            client
                .publish(
                    "bench/raw",
                    rumqttc::QoS::AtLeastOnce,
                    false,
                    message.clone(),
                )
                .await?;
        }
        Ok::<_, rumqttc::ClientError>(client)
    });
    let mut acked = 0usize;
    while acked < messages {
        match tokio::time::timeout(Duration::from_secs(30), eventloop.poll()).await {
            Ok(Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_)))) => acked += 1,
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(anyhow!("raw publish baseline: {e}")),
            Err(_) => return Err(anyhow!("raw publish baseline: no progress for 30 s")),
        }
    }
    let elapsed = started.elapsed();
    let client = publisher.await.context("publisher task")??;
    client.disconnect().await.ok();
    Ok((messages * PER_BATCH) as f64 / elapsed.as_secs_f64())
}

fn rss_bytes(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("cannot read /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .ok_or_else(|| anyhow!("no VmRSS line in /proc/{pid}/status"))
}

fn binary_size(exe: &Path) -> Result<Figure> {
    let agent = exe.with_file_name("dockline-agent");
    let len = std::fs::metadata(&agent)
        .with_context(|| {
            format!(
                "cannot find {}; build it with `cargo build --release -p dockline-agent`",
                agent.display()
            )
        })?
        .len();
    Ok(Figure {
        name: "agent_binary_size".into(),
        value: len as f64 / 1_048_576.0,
        unit: "MiB".into(),
        baseline: None,
        ratio: None,
        target: "< 8 MB".into(),
        detail: format!("{} ({len} bytes)", agent.display()),
    })
}

/// Prints the figures as a table.
pub fn print(figures: &[Figure]) {
    println!(
        "{:<28} {:>14} {:<10} {:>14} {:>7}  target",
        "figure", "value", "unit", "baseline", "ratio"
    );
    for f in figures {
        println!(
            "{:<28} {:>14.1} {:<10} {:>14} {:>7}  {}",
            f.name,
            f.value,
            f.unit,
            f.baseline.map(|b| format!("{b:.1}")).unwrap_or_default(),
            f.ratio.map(|r| format!("{r:.2}")).unwrap_or_default(),
            f.target
        );
    }
}
