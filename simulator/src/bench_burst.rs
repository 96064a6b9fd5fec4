//! The `fleet_reconnect_burst` figure of `dockline-sim bench`: what a fleet
//! does after a broker outage, measured end to end.
//!
//! N devices each hold K new one-event batches (what agents with
//! `max_inflight_batches = K` send the moment they reconnect). All N × K
//! batches are published at once, QoS 1, from [`PUBLISHERS`] MQTT clients,
//! to the bench's broker (a child `dockline-sim broker`), and a real
//! collector child (SQLite inbox, those N devices configured) stores and
//! acks them. The figure is messages per second from the first publish
//! until every device's application ack (`dockline/v1/{site}/+/ack`,
//! decoded as [`dockline_protocol::Ack`]) says `stored_up_to >= K`: stored
//! *and* acked, not merely PUBACKed.
//!
//! Like agents, a device not acked up to K within the agent's ack timeout
//! ([`ACK_TIMEOUT`], the simulated agents' `ack_timeout_ms`) sends again
//! everything above its ack, claiming to hold from there: a broker may drop
//! part of a burst at a queue limit. Those resends are counted in the
//! figure's detail, and the time they cost is in the figure.
//!
//! Beside it, in the same run and against the same broker: the same N × K
//! messages published QoS 1 from as many clients to topics nobody reads,
//! until every PUBACK: the broker's raw rate, the ceiling (median of
//! `RAW_ROUNDS`, each lasting only hundredths of a second).
//!
//! Every event belongs to one order lane and the ERP address has no
//! listener, so the collector's delivery backs off on one lane and the
//! figure is ingest's (as in `agent_backlog_drain`).
//!
//! Before the clock starts, a probe device publishes until its own ack
//! comes back: the collector has subscribed and its ack path works, so no
//! burst message goes to a broker with no subscriber yet.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::bench::{Figure, bench_stack};
use crate::demo::SITE;
use crate::forge::{AckWatch, Fleet, Lane, PUBLISHERS, Timing, publish_spread};
use crate::stack::MqttAddr;

/// How long a simulated device waits for its ack before sending again (the
/// simulated agents' `[uplink] ack_timeout_ms`).
pub const ACK_TIMEOUT: Duration = Duration::from_secs(3);
/// Rounds of the raw baseline (its median is reported).
const RAW_ROUNDS: usize = 3;
/// The epoch of the burst's sequences.
const EPOCH: u64 = 1_764_000_000_000;
/// Reset connections a publisher takes up, as agents do, instead of failing
/// the figure (a reset under the burst was seen once in a quick bench run).
const RECONNECTS: usize = 5;
/// The device that checks the collector listens before the clock starts.
const PROBE: &str = "burst-probe";

/// The burst's devices: every event a pick of the one order `SO-BURST`.
fn fleet() -> Fleet {
    Fleet {
        site: SITE.into(),
        epoch: EPOCH,
        lane: Lane::Order("SO-BURST".into()),
        reconnects: RECONNECTS,
    }
}

/// Devices and batches per device: (300, 4) quick, (1000, 4) full.
pub fn sizes(quick: bool) -> (usize, u64) {
    if quick { (300, 4) } else { (1_000, 4) }
}

/// Measures the figure with `devices` × `batches` one-event batches; child
/// processes are started from `exe`, their files and logs go under `dir`.
pub async fn fleet_reconnect_burst(
    exe: &Path,
    dir: &Path,
    devices: usize,
    batches: u64,
) -> Result<Figure> {
    let bdir = dir.join("burst");
    let ids: Vec<String> = (0..devices).map(|i| format!("fb-{i:04}")).collect();
    let erp: SocketAddr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?
    };
    let mut configured = ids.clone();
    configured.push(PROBE.into());
    let stack = bench_stack(
        exe,
        &bdir,
        &configured,
        Some(format!("http://{erp}/events")),
    )
    .await?;
    let broker = stack.services.broker.addr();

    let fleet = fleet();
    let acks = AckWatch::start(&broker, "bench-burst-acks", SITE).await?;
    probe(&broker, &fleet, &acks).await.with_context(|| {
        format!(
            "the collector never acked the probe batch; its log is in {}",
            bdir.display()
        )
    })?;

    let burst = fleet.batches(&ids, 1..=batches)?;
    let messages = burst.len();
    let bound = Duration::from_secs(if devices > 500 { 300 } else { 120 });

    let started = Instant::now();
    publish_spread(&broker, "bench-burst", burst, RECONNECTS).await?;
    let timing = Timing {
        ack_timeout: ACK_TIMEOUT,
        bound,
    };
    let resent = fleet
        .resend_until_acked(&broker, "bench-burst", &acks, &ids, batches, timing)
        .await
        .with_context(|| format!("logs in {}", bdir.display()))?;
    let elapsed = started.elapsed();
    let rate = messages as f64 / elapsed.as_secs_f64();

    // The ceiling: the same messages to topics nobody reads.
    let raw_messages: Vec<_> = fleet
        .batches(&ids, 1..=batches)?
        .into_iter()
        .map(|(topic, bytes)| (topic.replace("dockline/v1/", "bench/raw-burst/"), bytes))
        .collect();
    // A few hundredths of a second each: the median of three.
    let mut raw_times = Vec::with_capacity(RAW_ROUNDS);
    for round in 0..RAW_ROUNDS {
        let raw_started = Instant::now();
        publish_spread(
            &broker,
            &format!("bench-raw-burst{round}"),
            raw_messages.clone(),
            RECONNECTS,
        )
        .await?;
        raw_times.push(raw_started.elapsed());
    }
    raw_times.sort();
    let raw_elapsed = raw_times[RAW_ROUNDS / 2];
    let raw = messages as f64 / raw_elapsed.as_secs_f64();
    drop(acks);
    stack.shutdown(Duration::from_secs(5)).await;

    Ok(Figure {
        name: "fleet_reconnect_burst".into(),
        value: rate,
        unit: "messages/s".into(),
        baseline: Some(raw),
        ratio: Some(rate / raw),
        target: "every batch stored and acked, none stalled (before issue 12: 200 x 4 stalled)"
            .into(),
        detail: format!(
            "{devices} devices x {batches} one-event batches ({messages} messages) published at once from {PUBLISHERS} clients through the bench broker to a real collector (SQLite inbox); {:.2} s from the first publish to every device acked up to {batches}; {} batches sent again in {} rounds after a {} s ack timeout, as agents do; baseline: the same {messages} messages QoS 1 from {PUBLISHERS} clients to topics nobody reads, median of {RAW_ROUNDS} rounds {:.3} s",
            elapsed.as_secs_f64(),
            resent.batches,
            resent.rounds,
            ACK_TIMEOUT.as_secs(),
            raw_elapsed.as_secs_f64(),
        ),
    })
}

/// Publishes one batch of the probe device until its ack arrives (30 s).
async fn probe(broker: &MqttAddr, fleet: &Fleet, acks: &AckWatch) -> Result<()> {
    let started = Instant::now();
    let message = fleet.batches(&[PROBE.to_string()], 1..=1)?;
    while started.elapsed() < Duration::from_secs(30) {
        publish_spread(broker, "bench-burst-probe", message.clone(), RECONNECTS).await?;
        let asked = Instant::now();
        while asked.elapsed() < Duration::from_millis(500) {
            if acks.mark(PROBE) >= 1 {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    Err(anyhow::anyhow!("no ack for {PROBE} within 30 s"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_quick_and_full() {
        assert_eq!(sizes(true), (300, 4));
        assert_eq!(sizes(false), (1_000, 4));
    }
}
