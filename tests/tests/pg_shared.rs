//! Two collectors at once on one PostgreSQL inbox and one MQTT shared
//! subscription (`$share/<group>/…`) on the machine's Mosquitto, with four
//! agents sending the six steps of each order (pick and pack from two
//! handhelds, load from the dock, depart, arrive and deliver from the van):
//! the broker hands each batch to one of the two collectors, so an order's
//! steps reach different collectors in any order.
//!
//! Proves, with the simulator's invariant checker on the mock ERP's
//! effects: every event booked exactly once, each device's sequence order
//! kept within each lane, and each order's business order kept (no
//! inversion); both collectors delivered, and neither posted an event the
//! other had posted while both ran. Then one collector is killed with
//! SIGKILL mid-run: the other takes its lanes over once their claims
//! expire and finishes everything, still without a lost, doubled or
//! reordered booking.
//!
//! Runs when `DOCKLINE_TEST_MQTT_URL` and `DOCKLINE_TEST_PG_URL` are set;
//! otherwise prints one SKIP line.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use dockline_collector::inbox::postgres::ScratchSchema;
use dockline_simulator::mock_erp::Effect;
use dockline_simulator::stack::{CollectorNode, MqttAddr, Node};
use dockline_simulator::verdict::{Generated, tally};
use dockline_tests::{Cluster, ClusterSpec, eventually, external_mqtt};
use serde_json::{Value, json};

const TEST: &str = "pg_shared";
/// Orders sent; six events each.
const ORDERS: usize = 16;
/// How long a lane claim lasts (the takeover delay after the kill).
const LEASE_MS: u64 = 3000;

/// Step `stage` (0 = pick … 5 = deliver) of order `n`: the device that
/// makes it and the agent API body.
fn step(n: usize, stage: usize) -> (usize, Value) {
    let order = format!("SO-PG-{n:03}");
    let van = "VAN-7";
    let (device, detail) = match stage {
        0 => (
            n % 2,
            json!({"picked": {"item": "09506000134352", "quantity": 1 + n % 3}}),
        ),
        1 => (
            n % 2,
            json!({"packed": {"quantity": 2, "weight": {"value": 1.5, "unit": "kg"}}}),
        ),
        2 => (2, json!({"loaded": {"vehicle": van}})),
        3 => (3, json!({"departed": {"vehicle": van}})),
        4 => (3, json!({"arrived": {"vehicle": van}})),
        _ => (
            3,
            json!({"delivered": {"received_by": "R. Receiver", "pieces": 2}}),
        ),
    };
    (
        device,
        json!({"detail": detail, "refs": {"order": order, "stop": format!("STOP-{n}")}}),
    )
}

/// Deletes the broker's persistent sessions of `client_ids` (connect with a
/// clean session, then leave), so the test leaves nothing queued behind.
async fn forget_sessions(mqtt: &MqttAddr, client_ids: &[String]) {
    for id in client_ids {
        let mut options = mqtt.options(id);
        options.set_clean_session(true);
        let (client, mut events) = rumqttc::AsyncClient::new(options, 10);
        let _ = tokio::time::timeout(Duration::from_secs(3), async {
            loop {
                match events.poll().await {
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) => {
                        let _ = client.disconnect().await;
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
        })
        .await;
    }
}

/// Count of "ERP booked event" lines in a collector's log.
fn booked_lines(p: &CollectorNode) -> usize {
    p.log_text().matches("ERP booked event").count()
}

struct Run {
    /// Its mock ERP answers after [`ERP_DELAY_MS`], so a collector has
    /// requests in flight (lanes claimed) when it is killed.
    cluster: Cluster,
    collectors: Vec<CollectorNode>,
    client_ids: Vec<String>,
}

/// The slow mock ERP's delay per request, milliseconds.
const ERP_DELAY_MS: u64 = 150;

impl Run {
    fn effects(&self) -> Vec<Effect> {
        self.cluster.erp_effects()
    }

    /// Waits (90 s at most) for `n` effects at the ERP.
    async fn effects_at_least(&self, n: usize) -> Result<Vec<Effect>> {
        eventually(
            &format!("{n} effects at the mock ERP"),
            Duration::from_secs(90),
            || async {
                let list = self.effects();
                (list.len() >= n).then_some(list)
            },
        )
        .await
    }

    /// Requests the ERP answered as replays of a booked key.
    fn erp_replays(&self) -> u64 {
        self.cluster.stack.services.erp.stats().replays
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_collectors_share_one_postgres_inbox_and_one_shared_subscription() -> Result<()> {
    let Some(mqtt) = external_mqtt(TEST)? else {
        return Ok(());
    };
    let pg = match std::env::var("DOCKLINE_TEST_PG_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => {
            eprintln!(
                "SKIP {TEST}: set DOCKLINE_TEST_PG_URL=postgres://postgres@127.0.0.1:5432/test to run"
            );
            return Ok(());
        }
    };
    let schema =
        tokio::task::spawn_blocking(move || ScratchSchema::create(&pg, "shared")).await??;
    let result = run(&mqtt, schema.url()).await;
    // Dropping the schema runs a small runtime of its own: off this one.
    tokio::task::spawn_blocking(move || drop(schema)).await?;
    let run = result?;
    forget_sessions(&mqtt, &run.client_ids).await;
    drop(run);
    Ok(())
}

async fn run(mqtt: &MqttAddr, pg_url: &str) -> Result<Run> {
    // Fresh ids per run: the broker is shared with other tests and runs.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let tag = format!("pgs{:06x}", (std::process::id() ^ nanos) & 0xff_ffff);
    let devices: [String; 4] = [
        format!("hh1-{tag}"),
        format!("hh2-{tag}"),
        format!("dock-{tag}"),
        format!("van-{tag}"),
    ];
    let names: Vec<&str> = devices.iter().map(String::as_str).collect();
    let site = "dc-pg";
    // The cluster's own collector is replaced below; its config (PostgreSQL
    // inbox, ERP, keys, devices) is the one both collectors run with.
    let mut spec = ClusterSpec::new(Some(mqtt.clone()), &tag);
    spec.erp.delay_ms = ERP_DELAY_MS;
    let mut cluster = Cluster::start_with(spec, site, &names, |c| {
        c.inbox.url = Some(pg_url.to_string());
        c.inbox.lease_ms = 15000;
    })
    .await?;
    cluster.stack.collector.kill();
    let group = format!("dockline-{tag}");
    let mut collectors = Vec::new();
    let mut client_ids = Vec::new();
    let mut urls = Vec::new();
    for (i, name) in ["collector-a", "collector-b"].into_iter().enumerate() {
        // Collector a resumes the cluster collector's MQTT session (and
        // drops its plain subscriptions); b has its own.
        let client_id = if i == 0 {
            format!("dockline-collector-{tag}")
        } else {
            format!("dockline-collector-{tag}-b")
        };
        let mut config = cluster.stack.collector.config.clone();
        config.data_dir = cluster.dir().join(name);
        config.mqtt.client_id = client_id.clone();
        config.mqtt.shared_group = Some(group.clone());
        config.inbox.lease_ms = LEASE_MS;
        config.erp.timeout_ms = 2000;
        // Long enough that a step delayed by the kill still waits for
        // its predecessor rather than overtaking it.
        config.erp.lane_park_max_ms = 60_000;
        let mut node = Node::new(
            name,
            config,
            &cluster.stack.services.programs,
            cluster.dir(),
        );
        urls.push(format!("http://{}", node.start().await?));
        collectors.push(node);
        client_ids.push(client_id);
    }
    let mut run = Run {
        cluster,
        collectors,
        client_ids,
    };
    match exercise(&mut run, &devices, &urls).await {
        Ok(()) => Ok(run),
        Err(e) => {
            run.cluster.dump_logs();
            Err(e)
        }
    }
}

async fn exercise(run: &mut Run, devices: &[String; 4], urls: &[String]) -> Result<()> {
    let cluster = &run.cluster;
    let mut agents = Vec::new();
    let mut addrs = Vec::new();
    for d in devices {
        let agent = cluster.agent(d).await?;
        addrs.push(agent.api());
        agents.push(agent);
    }
    let mut generated: Vec<Generated> = Vec::new();
    let post = async |device: usize, body: &Value, generated: &mut Vec<Generated>| -> Result<()> {
        let r = cluster
            .http
            .post(format!("http://{}/v1/events", addrs[device]))
            .json(body)
            .send()
            .await?;
        ensure!(
            r.status() == 201,
            "agent {} answered {}",
            devices[device],
            r.status()
        );
        let v: Value = r.json().await?;
        let kind = body["detail"]
            .as_object()
            .and_then(|o| o.keys().next().cloned())
            .unwrap_or_default();
        generated.push(Generated {
            event_id: v["event_id"].as_str().context("event_id")?.into(),
            kind,
            device: devices[device].clone(),
            epoch: v["epoch"].as_u64().context("epoch")?,
            seq: v["seq"].as_u64().context("seq")?,
            source: TEST.into(),
            made_ms: 0,
        });
        Ok(())
    };
    // Phase 1, both collectors up: the first three steps of every order,
    // step by step, so each order's steps come from different devices.
    for stage in 0..3 {
        for n in 0..ORDERS {
            let (d, body) = step(n, stage);
            post(d, &body, &mut generated).await?;
        }
    }
    let first_phase = generated.len();
    run.effects_at_least(first_phase).await?;
    let replays = run.erp_replays();
    ensure!(
        replays == 0,
        "with both collectors running, no event may be posted twice: {replays} replays"
    );
    let (a_booked, b_booked) = (
        booked_lines(&run.collectors[0]),
        booked_lines(&run.collectors[1]),
    );
    eprintln!("{TEST}: phase 1 booked by collector a: {a_booked}, by b: {b_booked}");
    ensure!(
        a_booked > 0 && b_booked > 0 && a_booked + b_booked == first_phase,
        "both collectors deliver, each event once: a {a_booked}, b {b_booked}, events {first_phase}"
    );

    // Phase 2: the remaining steps. Once collector a is delivering them
    // (lanes claimed, requests in flight), it is killed with SIGKILL.
    for stage in 3..6 {
        for n in 0..ORDERS {
            let (d, body) = step(n, stage);
            post(d, &body, &mut generated).await?;
        }
    }
    let a_target = a_booked + 2;
    eventually(
        "collector a delivering the second phase",
        Duration::from_secs(60),
        || async { (booked_lines(&run.collectors[0]) >= a_target).then_some(()) },
    )
    .await?;
    run.collectors[0].kill();
    let killed_at = Instant::now();
    let a_total = booked_lines(&run.collectors[0]);
    let b_before = booked_lines(&run.collectors[1]);
    let remaining = generated.len().saturating_sub(run.effects().len());
    eprintln!(
        "{TEST}: collector a killed with SIGKILL after booking {} second-phase events; {remaining} not yet booked",
        a_total - a_booked
    );
    ensure!(remaining > 0, "the kill came too late to show a takeover");
    run.effects_at_least(generated.len()).await?;
    let replays = run.erp_replays();
    eprintln!(
        "{TEST}: all {} events booked {:?} after the kill; collector b booked {} after it; \
         {replays} requests re-posted an already booked event (in flight at the kill)",
        generated.len(),
        killed_at.elapsed(),
        booked_lines(&run.collectors[1]) - b_before
    );
    // Anything late would show as a surplus effect.
    tokio::time::sleep(Duration::from_millis(2 * LEASE_MS)).await;
    let effects = run.effects();
    let t = tally(&generated, &effects);
    eprintln!(
        "{TEST}: booked {} lost {} duplicated {} unexpected {} out_of_lane_order {} order_inversions {}",
        t.booked, t.lost, t.duplicated, t.unexpected, t.out_of_lane_order, t.order_inversions
    );
    ensure!(
        (t.booked as usize, t.lost, t.duplicated, t.unexpected) == (generated.len(), 0, 0, 0),
        "every event booked exactly once: {t:?}"
    );
    ensure!(
        (t.out_of_lane_order, t.order_inversions) == (0, 0),
        "lane and business order kept: {t:?}"
    );
    // The collector left standing reads the shared inbox.
    let stats: Value = cluster
        .http
        .get(format!("{}/v1/stats", urls[1]))
        .send()
        .await?
        .json()
        .await?;
    eprintln!(
        "{TEST}: inbox received {} booked {} duplicates {} delivered_out_of_order {}",
        stats["received"], stats["booked"], stats["duplicates"], stats["delivered_out_of_order"]
    );
    ensure!(
        stats["booked"] == generated.len() && stats["pending"] == 0,
        "the shared inbox booked everything once: {stats}"
    );
    ensure!(
        stats["delivered_out_of_order"] == 0,
        "no step waited out its park deadline: {stats}"
    );
    if !run.collectors[1].is_running() {
        bail!("collector b exited");
    }
    let resent: usize = agents
        .iter()
        .map(|a| {
            a.log_text()
                .matches("no ack from the collector in time")
                .count()
        })
        .sum();
    eprintln!("{TEST}: agents reconnected to resend after an ack timeout {resent} times");
    drop(agents);
    Ok(())
}
