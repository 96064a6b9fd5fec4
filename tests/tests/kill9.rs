//! SIGKILL at random points while events are being posted: one agent (its
//! MQTT points at a closed port, so everything stays queued), restarted on
//! the same data folder round after round. Every event answered 201 must
//! survive with the sequence number it was given, no sequence number may be
//! handed out twice, and sequence numbers stay dense from 1.
//!
//! The kill delays come from a seeded generator; the seed is printed, and
//! `DOCKLINE_TEST_KILL9_SEED=<seed>` replays a run.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use dockline_simulator::stack::{AgentConfig, AgentNode, MqttAddr, Node, config};
use dockline_tests::{event_body, programs};
use serde_json::Value;

const ROUNDS: usize = 25;
const POSTERS: usize = 4;

/// SplitMix64: small, seedable, good enough to pick kill delays.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

/// What one round's posters saw.
#[derive(Default)]
struct Posted {
    /// (event id, seq) of every 201.
    acked: Vec<(String, u64)>,
    /// Answers other than 201 (the agent may refuse while dying).
    refused: usize,
    /// Requests that got no answer (killed mid-request): unknown outcome.
    unanswered: usize,
}

async fn poster(
    http: reqwest::Client,
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    first: usize,
) -> Posted {
    let mut out = Posted::default();
    let mut i = first;
    while !stop.load(Ordering::Relaxed) {
        let res = http
            .post(format!("http://{addr}/v1/events"))
            .json(&event_body(i))
            .send()
            .await;
        i += POSTERS;
        match res {
            Ok(r) if r.status() == 201 => match r.json::<Value>().await {
                Ok(v) => match (v["event_id"].as_str(), v["seq"].as_u64()) {
                    (Some(id), Some(seq)) => out.acked.push((id.to_string(), seq)),
                    _ => {
                        eprintln!("201 without event_id/seq: {v}");
                        out.refused += 1;
                    }
                },
                // The status line arrived but the body did not: we cannot
                // know the id, so the client could not rely on it either.
                Err(_) => out.unanswered += 1,
            },
            Ok(_) => out.refused += 1,
            Err(_) => {
                out.unanswered += 1;
                break;
            }
        }
    }
    out
}

/// Every receipt the agent lists as seq → id, paging back 1000 at a time
/// (newest first) with `before`.
async fn listing(http: &reqwest::Client, addr: SocketAddr) -> Result<BTreeMap<u64, String>> {
    let mut out = BTreeMap::new();
    let mut before = String::new();
    loop {
        let v: Value = http
            .get(format!("http://{addr}/v1/events?limit=1000{before}"))
            .send()
            .await?
            .json()
            .await?;
        let page = v["events"].as_array().context("events list")?;
        let Some(last) = page.last() else {
            return Ok(out);
        };
        before = format!("&before={}", last["seq"].as_u64().context("seq")?);
        for e in page {
            let seq = e["seq"].as_u64().context("seq")?;
            let id = e["event_id"].as_str().context("event_id")?.to_string();
            if let Some(other) = out.insert(seq, id.clone()) {
                bail!("one listing shows seq {seq} twice: {other} and {id}");
            }
        }
    }
}

/// The agent's config: data in `{dir}/data`, its MQTT at a port that was
/// free a moment ago and is closed now, so it cannot reach any broker and
/// keeps every event queued.
fn agent_config(dir: &Path) -> Result<AgentConfig> {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mqtt = MqttAddr {
        host: "127.0.0.1".into(),
        port: closed,
    };
    let mut c = config::agent("kill9", "hh-kill9", &dir.join("data"), &mqtt)?;
    c.uplink.ack_timeout_ms = 2000;
    c.uplink.reconnect_min_ms = 50;
    c.uplink.reconnect_max_ms = 1000;
    c.uplink.heartbeat_secs = 2;
    Ok(c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_points_loses_and_reuses_nothing() -> Result<()> {
    let seed = std::env::var("DOCKLINE_TEST_KILL9_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
    println!("kill9 seed {seed} (replay with DOCKLINE_TEST_KILL9_SEED={seed})");
    let mut rng = Rng(seed);

    let dir = tempfile::tempdir()?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    let mut agent: AgentNode =
        Node::new("agent", agent_config(dir.path())?, &programs()?, dir.path());
    let mut addr = agent.start().await?;

    let result = async {
        // Every 201 over all rounds: id → seq, and seq → id.
        let mut acked: HashMap<String, u64> = HashMap::new();
        let mut acked_by_seq: HashMap<u64, String> = HashMap::new();
        // Every seq the agent has ever listed, with its id.
        let mut seen: BTreeMap<u64, String> = BTreeMap::new();
        let (mut lost, mut duplicated) = (0usize, 0usize);
        let (mut refused, mut unanswered, mut delays) = (0usize, 0usize, Vec::new());
        let mut first = 0usize;

        for round in 0..=ROUNDS {
            // Check what the previous rounds left behind.
            let listed = listing(&http, addr).await?;
            for (seq, id) in &listed {
                match seen.get(seq) {
                    Some(old) if old != id => {
                        eprintln!("round {round}: seq {seq} was {old}, is now {id}");
                        duplicated += 1;
                    }
                    _ => {
                        seen.insert(*seq, id.clone());
                    }
                }
            }
            let oldest_listed = listed.keys().next().copied().unwrap_or(1);
            for (id, seq) in &acked {
                if *seq >= oldest_listed && listed.get(seq) != Some(id) {
                    eprintln!(
                        "round {round}: acknowledged {id} with seq {seq}, listed as {:?}",
                        listed.get(seq)
                    );
                    lost += 1;
                }
            }
            if round == ROUNDS {
                break;
            }

            // Post from several tasks and kill the agent mid-stream.
            let stop = Arc::new(AtomicBool::new(false));
            let tasks: Vec<_> = (0..POSTERS)
                .map(|k| {
                    tokio::spawn(poster(
                        http.clone(),
                        addr,
                        stop.clone(),
                        first + k,
                    ))
                })
                .collect();
            let delay = rng.range(5, 150);
            delays.push(delay);
            tokio::time::sleep(Duration::from_millis(delay)).await;
            agent.kill();
            let killed_at = Instant::now();
            stop.store(true, Ordering::Relaxed);
            let mut round_acked = 0;
            for t in tasks {
                let p = t.await?;
                refused += p.refused;
                unanswered += p.unanswered;
                round_acked += p.acked.len();
                for (id, seq) in p.acked {
                    if let Some(other) = acked_by_seq.insert(seq, id.clone())
                        && other != id
                    {
                        eprintln!("seq {seq} acknowledged for both {other} and {id}");
                        duplicated += 1;
                    }
                    if acked.insert(id.clone(), seq).is_some() {
                        eprintln!("event id {id} acknowledged twice");
                        duplicated += 1;
                    }
                }
            }
            first += 10_000;
            println!(
                "round {round:2}: killed after {delay:3} ms, {round_acked:3} acknowledged (posters stopped {:?} after the kill)",
                killed_at.elapsed()
            );
            addr = agent.restart().await?;
        }

        // Final word per event: every acknowledged id with its own seq.
        for (id, seq) in &acked {
            let r = http
                .get(format!("http://{addr}/v1/events/{id}"))
                .send()
                .await?;
            let got = if r.status() == 200 {
                r.json::<Value>().await?["seq"].as_u64()
            } else {
                None
            };
            if got != Some(*seq) {
                eprintln!("final: acknowledged {id} seq {seq}, agent says {got:?}");
                lost += 1;
            }
        }
        // Dense from 1: every seq up to the highest was seen in some listing.
        let max = seen.keys().next_back().copied().unwrap_or(0);
        let holes: Vec<u64> = (1..=max).filter(|s| !seen.contains_key(s)).collect();
        let status: Value = http
            .get(format!("http://{addr}/v1/status"))
            .send()
            .await?
            .json()
            .await?;
        println!(
            "kill9: seed {seed}, {ROUNDS} rounds, delays {}..{} ms, {} acknowledged, {} stored (seq 1..={max}), {} stored but never acknowledged, {refused} refused, {unanswered} unanswered; lost {lost}, duplicated {duplicated}, holes {}; status next_seq {} queued {}",
            delays.iter().min().unwrap_or(&0),
            delays.iter().max().unwrap_or(&0),
            acked.len(),
            seen.len(),
            seen.len().saturating_sub(acked.len()),
            holes.len(),
            status["next_seq"],
            status["queued"],
        );
        assert!(!acked.is_empty(), "no event was acknowledged at all");
        assert_eq!(lost, 0, "acknowledged events lost or renumbered (seed {seed})");
        assert_eq!(duplicated, 0, "sequence numbers handed out twice (seed {seed})");
        assert!(
            holes.is_empty(),
            "seqs not dense from 1 (seed {seed}): missing {:?}",
            &holes[..holes.len().min(20)]
        );
        assert_eq!(
            status["next_seq"].as_u64(),
            Some(max + 1),
            "next_seq continues after the highest stored seq: {status}"
        );
        Ok::<_, anyhow::Error>(())
    }
    .await;
    if result.is_err() {
        dockline_tests::dump_logs(dir.path());
    }
    result
}
