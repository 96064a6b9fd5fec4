//! Media chunks through ingest, as the MQTT edge hands them over: stored
//! once and acked after the commit, resumed from the store after a
//! restart, and every bad chunk refused with a counted, named reason.

mod support;

use std::sync::Arc;

use dockline_collector::inbox::{Inbox, InboxHandle};
use dockline_collector::ingest::Ingest;
use dockline_collector::ingest::registry::DeviceConfig;
use dockline_collector::media::MediaHub;
use dockline_collector::media::config::MediaConfig;
use dockline_collector::media::store::FsMediaStore;
use dockline_protocol::codec;
use dockline_protocol::media::{MediaAck, MediaChunk, MediaHash, MediaState, MediaType};
use dockline_protocol::{DeviceId, SiteId};
use tokio::sync::Notify;

const DEV: &str = "hh-m1";
const TOPIC: &str = "dockline/v1/dc-north/hh-m1/media";

fn photo(n: usize) -> Vec<u8> {
    let mut b = vec![0xff, 0xd8, 0xff, 0xe0];
    b.extend((0..n - 4).map(|i| (i * 7 + i / 251) as u8));
    b
}

fn chunk(dev: &str, bytes: &[u8], off: usize, n: usize) -> MediaChunk {
    MediaChunk {
        v: 1,
        device: DeviceId::new(dev).expect("id"),
        hash: MediaHash::of(bytes),
        media_type: MediaType::Jpeg,
        len: bytes.len() as u64,
        off: off as u64,
        data: bytes[off..(off + n).min(bytes.len())].to_vec(),
    }
}

struct Rig {
    ingest: Ingest,
    hub: MediaHub,
    inbox: InboxHandle,
}

fn rig(dir: &std::path::Path, config: MediaConfig) -> Rig {
    let inbox = InboxHandle::new(Inbox::open(&dir.join("inbox.db")).expect("inbox"));
    let devices = vec![DeviceConfig {
        id: DeviceId::new(DEV).expect("id"),
        site: SiteId::new("dc-north").expect("site"),
    }];
    let store = FsMediaStore::open(&dir.join("media")).expect("store");
    let hub = MediaHub::new(Box::new(store), config, Arc::new(Notify::new()));
    let ingest = Ingest::new(inbox.clone(), &devices, false, Arc::new(Notify::new()))
        .with_media(hub.clone());
    Rig { ingest, hub, inbox }
}

async fn send(r: &Rig, topic: &str, c: &MediaChunk) -> MediaAck {
    let p = r
        .ingest
        .handle(topic, &codec::encode(c).expect("encode"))
        .await
        .expect("taken")
        .expect("an ack");
    assert_eq!(p.topic, "dockline/v1/dc-north/hh-m1/media_ack");
    codec::decode(&p.payload).expect("ack decodes")
}

async fn refused(r: &Rig) -> std::collections::BTreeMap<String, u64> {
    r.inbox
        .call(|i| i.stats())
        .await
        .expect("stats")
        .refused_by_reason
}

#[tokio::test]
async fn chunks_are_stored_acked_and_a_restart_resumes_from_the_stored_prefix() {
    let dir = tempfile::tempdir().expect("dir");
    let bytes = photo(200_000);
    let h = MediaHash::of(&bytes);
    {
        let r = rig(dir.path(), MediaConfig::default());
        let a = send(&r, TOPIC, &chunk(DEV, &bytes, 0, 65_536)).await;
        assert_eq!(
            (a.have, a.at, a.state),
            (65_536, Some(0), MediaState::Receiving)
        );
        // A lost chunk: the next one is ahead; the ack says where to resume.
        let a = send(&r, TOPIC, &chunk(DEV, &bytes, 131_072, 65_536)).await;
        assert_eq!((a.have, a.at), (65_536, Some(131_072)));
        let a = send(&r, TOPIC, &chunk(DEV, &bytes, 0, 65_536)).await;
        assert_eq!(a.have, 65_536, "a duplicate moves nothing");
    }
    // The collector restarts: nothing in memory, the prefix on disk.
    let r = rig(dir.path(), MediaConfig::default());
    let a = send(&r, TOPIC, &chunk(DEV, &bytes, 65_536, 65_536)).await;
    assert_eq!(a.have, 131_072, "resumed from the stored 64 KiB");
    let a = send(&r, TOPIC, &chunk(DEV, &bytes, 131_072, 68_928)).await;
    assert_eq!((a.have, a.state), (200_000, MediaState::Stored));
    let got = r
        .hub
        .store
        .call(move |s| s.get(&h))
        .await
        .expect("get")
        .expect("stored");
    assert_eq!(&got.bytes[..], &bytes[..], "byte-identical");
    // A resend after Stored is answered Stored, nothing written again.
    let a = send(&r, TOPIC, &chunk(DEV, &bytes, 0, 65_536)).await;
    assert_eq!((a.have, a.state), (200_000, MediaState::Stored));
    assert_eq!(r.hub.metrics.snapshot().0, 1, "stored once");
    let stats = r.hub.store.call(|s| s.stats()).await.expect("stats");
    assert_eq!((stats.count, stats.bytes, stats.partial), (1, 200_000, 0));
}

#[tokio::test]
async fn wrong_bytes_start_over_and_bad_chunks_are_refused_by_name() {
    let dir = tempfile::tempdir().expect("dir");
    let config = MediaConfig {
        max_bytes: 100_000,
        max_receiving_per_device: 1,
        max_receiving: 1,
        ..MediaConfig::default()
    };
    let r = rig(dir.path(), config);
    let bytes = photo(1_000);
    // The last chunk is corrupted on the way: the hash check fails at the end.
    send(&r, TOPIC, &chunk(DEV, &bytes, 0, 500)).await;
    let mut bad = chunk(DEV, &bytes, 500, 500);
    bad.data[10] ^= 1;
    let a = send(&r, TOPIC, &bad).await;
    assert_eq!(
        (a.have, a.state),
        (0, MediaState::Receiving),
        "start again from 0"
    );
    send(&r, TOPIC, &chunk(DEV, &bytes, 0, 500)).await;
    let a = send(&r, TOPIC, &chunk(DEV, &bytes, 500, 500)).await;
    assert_eq!(a.state, MediaState::Stored);

    // Too large for this collector: refused to the agent, with the reason.
    let big = photo(150_000);
    let a = send(&r, TOPIC, &chunk(DEV, &big, 0, 1000)).await;
    let MediaState::Refused { reason } = a.state else {
        panic!("{a:?}")
    };
    assert!(reason.contains("[media] max_bytes"), "{reason}");
    // Not the image it claims.
    let mut text = b"GIF89a not a jpeg at all".to_vec();
    text.resize(64, b'x');
    let mut c = chunk(DEV, &text, 0, 64);
    c.media_type = MediaType::Jpeg;
    let a = send(&r, TOPIC, &c).await;
    assert!(matches!(a.state, MediaState::Refused { .. }), "{a:?}");

    // Another device's topic, an unknown device, garbage, a full table.
    let err = r
        .ingest
        .handle(
            TOPIC,
            &codec::encode(&chunk("hh-other", &bytes, 0, 10)).expect("enc"),
        )
        .await
        .expect_err("mismatch");
    assert!(
        err.to_string().contains("claims device 'hh-other'"),
        "{err}"
    );
    let err = r
        .ingest
        .handle(
            "dockline/v1/dc-north/hh-stranger/media",
            &codec::encode(&chunk("hh-stranger", &bytes, 0, 10)).expect("enc"),
        )
        .await
        .expect_err("unknown");
    assert!(err.to_string().contains("[[devices]]"), "{err}");
    let err = r
        .ingest
        .handle(TOPIC, b"\xff garbage")
        .await
        .expect_err("garbage");
    assert!(err.to_string().contains("malformed media chunk"), "{err}");
    let one = photo(5_000);
    send(&r, TOPIC, &chunk(DEV, &one, 0, 1000)).await;
    let two = photo(6_000);
    let err = r
        .ingest
        .handle(
            TOPIC,
            &codec::encode(&chunk(DEV, &two, 0, 1000)).expect("enc"),
        )
        .await
        .expect_err("busy");
    assert!(
        err.to_string().contains("max_receiving_per_device"),
        "{err}"
    );

    let counts = refused(&r).await;
    for reason in [
        "device_mismatch",
        "unknown_device",
        "malformed",
        "media_busy",
    ] {
        assert_eq!(counts.get(reason), Some(&1), "{reason}: {counts:?}");
    }
    assert_eq!(r.hub.metrics.refused_count("media_refused"), 2);
    assert_eq!(r.hub.metrics.refused_count("media_hash_mismatch"), 1);
}
