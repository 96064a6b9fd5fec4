//! Hostile input through a real broker, end to end.
//!
//! A rogue MQTT client (a plain rumqttc client, as a stolen credential or a
//! misconfigured device would be) publishes:
//! - device A's batch on device B's topic: the collector refuses it, counts
//!   it as `device_mismatch`, stores nothing, and both devices keep working;
//! - an oversize payload and malformed ones: refused, counted, and the
//!   collector keeps serving (its MQTT connection survives the oversize
//!   packet);
//! - forged commands on an agent's `cmd` topic (unsigned, tampered, signed
//!   by another key, expired): the agent refuses each and counts it in
//!   `/v1/status`.
//!
//! What the collector cannot see (a fully forged batch, device B's id on
//! device B's topic, sent by A) is the broker ACL's job; see the README's
//! security section.

use std::time::Duration;

use anyhow::{Result, anyhow};
use base64::Engine;
use dockline_protocol::{Command, DeviceId, PROTOCOL_VERSION, Resend, codec};
use dockline_simulator::stack::MqttAddr;
use dockline_tests::forge::{self, Lane};
use dockline_tests::{Cluster, eventually, external_mqtt};
use ed25519_dalek::{Signer, SigningKey};

/// A batch of `device`'s picks at `seqs` of the order `SO-ROGUE`.
fn batch(device: &str, seqs: std::ops::RangeInclusive<u64>) -> Result<Vec<u8>> {
    let seqs: Vec<u64> = seqs.collect();
    let lane = Lane::Order("SO-ROGUE".into());
    Ok(codec::encode(&forge::batch_in(
        &lane,
        device,
        42,
        1,
        &seqs,
        vec![],
    )?)?)
}

/// Publishes each message QoS 1 as client `id` and waits for the broker's
/// PUBACKs.
async fn publish_raw(mqtt: &MqttAddr, id: &str, messages: Vec<(String, Vec<u8>)>) -> Result<()> {
    let mut options = mqtt.options(id);
    options.set_max_packet_size(8 << 20, 8 << 20);
    forge::publish_with(options, "rogue client", messages, 0).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rogue_publishers_are_refused_and_counted() -> Result<()> {
    let Some(mqtt) = external_mqtt("security")? else {
        return Ok(());
    };
    let pid = std::process::id();
    let site = "sec";
    let (a, b) = (format!("hh-a-{pid}"), format!("hh-b-{pid}"));
    let c = Cluster::start(Some(mqtt), site, &[&a, &b], &format!("sec-{pid}")).await?;
    let agent_b = c.agent(&b).await?;
    let result = async {
        let b_addr = agent_b.api();
        let stats_url = format!("{}/v1/stats", c.collector_url());
        let topic = |dev: &str, ch: &str| format!("dockline/v1/{site}/{dev}/{ch}");

        // Device A's batch on device B's topic; an oversize payload; two
        // malformed ones.
        publish_raw(
            &c.mqtt(),
            &format!("rogue-{pid}"),
            vec![
                (topic(&b, "events"), batch(&a, 1..=3)?),
                (topic(&a, "events"), vec![0xa0; 1_200_000]),
                (topic(&a, "events"), b"{\"json\": \"not cbor\"}".to_vec()),
                (topic(&b, "status"), vec![0xff; 64]),
            ],
        )
        .await?;
        let stats = eventually("refusals counted", Duration::from_secs(20), || async {
            let s = c.get(&stats_url).await?;
            let r = &s["refused_by_reason"];
            (r["device_mismatch"] == 1 && r["oversize"] == 1 && r["malformed"] == 2).then_some(s)
        })
        .await?;
        assert_eq!(stats["refused"], 4, "{stats}");
        assert_eq!(
            stats["received"], 0,
            "nothing of the rogue's stored: {stats}"
        );

        // The collector still serves device B, through the same connection.
        c.post_event(b_addr, 0).await?;
        eventually("B's event stored", Duration::from_secs(20), || async {
            let s = c.get(&stats_url).await?;
            (s["received"] == 1).then_some(())
        })
        .await?;

        // Forged commands on B's cmd topic.
        let dev_b = DeviceId::new(b.clone())?;
        let resend = |exp: Option<i64>| Command {
            v: PROTOCOL_VERSION,
            device: dev_b.clone(),
            resend: Some(Resend {
                epoch: 1,
                ranges: vec![(1, 1)],
            }),
            expires_ms: exp,
            signed: None,
            nonce: None,
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis() as i64;
        let far = now + 3_600_000;
        // The collector's real key, to show that expiry and tampering are
        // caught even with a valid key behind them.
        let seed = base64::engine::general_purpose::STANDARD
            .decode(std::fs::read_to_string(&c.stack.services.keys.signing_key_file)?.trim())?;
        let key = SigningKey::from_bytes(
            &seed
                .as_slice()
                .try_into()
                .map_err(|_| anyhow!("key file is not 32 bytes"))?,
        );
        let sign = |m: &[u8]| key.sign(m).to_bytes();
        let unsigned = codec::encode(&resend(Some(far)))?;
        let rogue_key = Command::seal(&resend(Some(far)), |m| {
            SigningKey::from_bytes(&[9u8; 32]).sign(m).to_bytes()
        })?;
        let expired = Command::seal(&resend(Some(now - 1_000)), sign)?;
        let mut tampered = Command::seal(&resend(Some(far)), sign)?;
        if let Some(s) = tampered.signed.as_mut()
            && let Some(byte) = s.body.last_mut()
        {
            // The last range's end: (1, 1) becomes (1, 0) or the like.
            *byte ^= 0x01;
        }
        publish_raw(
            &c.mqtt(),
            &format!("rogue-cmd-{pid}"),
            vec![
                (topic(&b, "cmd"), unsigned),
                (topic(&b, "cmd"), codec::encode(&rogue_key)?),
                (topic(&b, "cmd"), codec::encode(&expired)?),
                (topic(&b, "cmd"), codec::encode(&tampered)?),
            ],
        )
        .await?;
        let status = eventually(
            "agent refused the forged commands",
            Duration::from_secs(20),
            || async {
                let s = c.get(&format!("http://{b_addr}/v1/status")).await?;
                (s["commands"]["refused"] == 4).then_some(s)
            },
        )
        .await?;
        let cmds = &status["commands"];
        assert_eq!(cmds["accepted"], 0, "{status}");
        assert_eq!(cmds["unsigned"], 1, "{status}");
        assert_eq!(cmds["bad_signature"], 2, "rogue key and tampered: {status}");
        assert_eq!(cmds["expired"], 1, "{status}");
        Ok::<_, anyhow::Error>(())
    }
    .await;
    c.judge(result)
}
