//! The cost of signed acks: the collector signs every ack with its command
//! key and an agent with a verify key checks it before it deletes anything
//! (see `dockline_protocol::ack`). Measured per ack against the same ack
//! encoded and decoded without a signature, in one run.

use std::time::Instant;

use anyhow::{Context, Result};
use dockline_protocol::{Ack, DeviceId, PROTOCOL_VERSION, codec};

use crate::bench::Figure;

fn ack(device: &DeviceId, up_to: u64) -> Ack {
    Ack {
        v: PROTOCOL_VERSION,
        device: device.clone(),
        epoch: 1_764_000_000_000,
        stored_up_to: Some(up_to),
        also_stored: vec![(up_to + 2, up_to + 5)],
        verdicts: Vec::new(),
        signed: None,
    }
}

/// `ack_signing`: microseconds per ack to sign it (collector) and verify it
/// (agent), beside encoding and decoding the unsigned ack.
pub fn ack_signing(dir: &std::path::Path, n: usize) -> Result<Figure> {
    let keys = dir.join("bench-ack-keys");
    let public = dockline_collector::ingest::commands::generate(&keys).context("keygen")?;
    let signer = dockline_collector::ingest::commands::CommandSigner::from_config(
        &dockline_collector::ingest::commands::CommandsConfig {
            signing_key_file: Some(
                keys.join(dockline_collector::ingest::commands::SIGNING_KEY_FILE),
            ),
            ..Default::default()
        },
    )
    .context("signer")?;
    let verifier = dockline_agent::uplink::command::CommandVerifier::from_config(
        &dockline_agent::config::CommandsConfig {
            verify_key: dockline_agent::config::KeyList::One(public),
            allow_unsigned_commands: false,
        },
    )
    .map_err(anyhow::Error::msg)?;
    let device = DeviceId::new("bench-01")?;

    let start = Instant::now();
    for i in 0..n {
        let bytes = codec::encode(&ack(&device, i as u64))?;
        let back: Ack = codec::decode(&bytes)?;
        std::hint::black_box(back);
    }
    let plain_us = start.elapsed().as_secs_f64() * 1e6 / n as f64;

    let start = Instant::now();
    for i in 0..n {
        let sealed = signer.sign_ack(&ack(&device, i as u64))?;
        let bytes = codec::encode(&sealed)?;
        let back: Ack = codec::decode(&bytes)?;
        let opened = verifier
            .open_ack(back)
            .map_err(|e| anyhow::anyhow!("a signed ack did not verify: {e}"))?;
        std::hint::black_box(opened);
    }
    let signed_us = start.elapsed().as_secs_f64() * 1e6 / n as f64;
    Ok(Figure {
        name: "ack_signing".into(),
        value: signed_us,
        unit: "us/ack".into(),
        baseline: Some(plain_us),
        ratio: Some(plain_us / signed_us),
        target: "reported (the cost of authenticated acks, issue 12)".into(),
        detail: format!(
            "{n} acks signed (Ed25519, collector), encoded, decoded and verified (agent) on one core, beside the same acks encoded and decoded unsigned; {:.1} us added per ack",
            signed_us - plain_us
        ),
    })
}
