//! The store contract, run on both backends (PostgreSQL when
//! `DOCKLINE_TEST_PG_URL` is set; a skip line otherwise).

use dockline_protocol::media::{MediaHash, MediaType};

use super::{FsMediaStore, MediaError, MediaStore, PgMediaStore};
use crate::inbox::postgres::ScratchSchema;

fn on_each_backend(name: &str, test: impl Fn(&mut dyn MediaStore, &dyn Fn(&mut dyn MediaStore))) {
    let dir = tempfile::tempdir().expect("tempdir");
    println!("media::{name} on files");
    let root = dir.path().join("media");
    let mut fs = FsMediaStore::open(&root).expect("open fs store");
    test(&mut fs, &|_| {});
    match std::env::var("DOCKLINE_TEST_PG_URL") {
        Ok(url) if !url.is_empty() => {
            println!("media::{name} on PostgreSQL");
            let schema = ScratchSchema::create(&url, "media").expect("scratch schema");
            let mut pg = PgMediaStore::open(schema.url()).expect("open pg store");
            test(&mut pg, &|_| {});
        }
        _ => println!("SKIP media::{name} on PostgreSQL: set DOCKLINE_TEST_PG_URL to run"),
    }
}

/// A PNG-looking medium of `n` bytes.
pub(crate) fn png(n: usize, salt: u8) -> Vec<u8> {
    let mut b = b"\x89PNG\r\n\x1a\n".to_vec();
    b.extend((0..n.saturating_sub(8)).map(|i| (i as u8).wrapping_mul(31).wrapping_add(salt)));
    b
}

fn put(s: &mut dyn MediaStore, bytes: &[u8], chunk: usize, now: i64) -> MediaHash {
    let h = MediaHash::of(bytes);
    let mut at = 0;
    for c in bytes.chunks(chunk) {
        s.append(&h, MediaType::Png, bytes.len() as u64, at, c)
            .expect("append");
        at += c.len() as u64;
    }
    s.complete(&h, MediaType::Png, now).expect("complete");
    h
}

#[test]
fn chunks_appended_in_order_are_stored_once_and_read_back_verified() {
    on_each_backend("store_and_get", |s, _| {
        let bytes = png(10_000, 1);
        let h = MediaHash::of(&bytes);
        assert_eq!(s.prefix_len(&h).expect("len"), 0);
        assert!(!s.has(&h).expect("has"));
        s.append(&h, MediaType::Png, 10_000, 0, &bytes[..4000])
            .expect("append");
        assert_eq!(s.prefix(&h).expect("prefix"), bytes[..4000]);
        assert_eq!(s.prefix_len(&h).expect("len"), 4000);
        assert!(!s.has(&h).expect("has"), "a prefix is not a medium");
        assert!(s.get(&h).expect("get").is_none());
        s.append(&h, MediaType::Png, 10_000, 4000, &bytes[4000..])
            .expect("append");
        s.complete(&h, MediaType::Png, 5).expect("complete");
        let got = s.get(&h).expect("get").expect("stored");
        assert_eq!(&got.bytes[..], &bytes[..]);
        assert_eq!(got.media_type, MediaType::Png);
        let info = s.info(&h).expect("info").expect("info");
        assert_eq!(
            (info.len, info.stored_ms, info.attached_ms),
            (10_000, 5, None)
        );
        // The same bytes again (another device): still one medium.
        put(s, &bytes, 3000, 9);
        let st = s.stats().expect("stats");
        assert_eq!((st.count, st.bytes, st.partial), (1, 10_000, 0));
    });
}

#[test]
fn only_the_prefix_end_is_written_and_an_unacked_tail_is_cut() {
    on_each_backend("append_at_end", |s, _| {
        let bytes = png(300, 2);
        let h = MediaHash::of(&bytes);
        s.append(&h, MediaType::Png, 300, 0, &bytes[..100])
            .expect("append");
        let err = s
            .append(&h, MediaType::Png, 300, 200, &bytes[200..])
            .expect_err("a gap is refused");
        assert!(err.restarts_medium(), "{err}");
        assert!(err.to_string().contains("received again from 0"), "{err}");
        assert_eq!(s.prefix_len(&h).expect("len"), 0, "damage starts over");
        s.append(&h, MediaType::Png, 300, 0, &bytes[..150])
            .expect("append");
        // The ack for 150 was lost and the collector restarted believing 100
        // (it cannot, it reads the store; but a caller at 100 cuts the tail).
        match s.append(&h, MediaType::Png, 300, 100, &bytes[100..200]) {
            Ok(()) => assert_eq!(s.prefix(&h).expect("prefix"), bytes[..200]),
            Err(MediaError::Moved { have, .. }) => assert_eq!(have, 150),
            Err(e) => panic!("{e}"),
        }
    });
}

#[test]
fn wrong_bytes_are_discarded_at_completion_and_never_served() {
    on_each_backend("hash_mismatch", |s, _| {
        let bytes = png(500, 3);
        let h = MediaHash::of(&bytes);
        let mut bad = bytes.clone();
        bad[400] ^= 0xff;
        s.append(&h, MediaType::Png, 500, 0, &bad).expect("append");
        let err = s.complete(&h, MediaType::Png, 1).expect_err("mismatch");
        assert!(matches!(err, MediaError::HashMismatch { .. }), "{err}");
        assert!(s.get(&h).expect("get").is_none());
        assert_eq!(s.prefix_len(&h).expect("len"), 0);
        put(s, &bytes, 128, 2);
        assert!(s.get(&h).expect("get").is_some());
    });
}

#[test]
fn sweep_takes_only_media_attached_long_ago_and_referenced_by_no_open_event() {
    on_each_backend("sweep", |s, _| {
        let day = 86_400_000i64;
        let old = put(s, &png(100, 4), 64, 0);
        let held = put(s, &png(100, 5), 64, 0);
        let recent = put(s, &png(100, 6), 64, 0);
        let never = put(s, &png(100, 7), 64, 0);
        s.mark_attached(&old, day).expect("attach");
        s.mark_attached(&held, day).expect("attach");
        s.mark_attached(&recent, 29 * day).expect("attach");
        let r = crate::media::MediaRef {
            hash: held,
            role: crate::media::MediaRole::Photo,
        };
        s.add_refs("ev-2", &[r]).expect("refs");
        assert_eq!(s.media_of_event("ev-2").expect("list"), vec![r]);
        assert_eq!(s.sweep(32 * day, 30 * day).expect("sweep"), 1);
        assert!(!s.has(&old).expect("has"));
        for h in [held, recent, never] {
            assert!(s.has(&h).expect("has"), "{h}");
        }
        s.drop_refs("ev-2").expect("drop");
        assert_eq!(
            s.media_of_event("ev-2").expect("list"),
            vec![r],
            "kept for the timeline"
        );
        assert_eq!(s.sweep(32 * day, 30 * day).expect("sweep"), 1);
        assert!(!s.has(&held).expect("has"));
        assert_eq!(s.stats().expect("stats").swept, 2);
    });
}

#[test]
fn an_events_wait_starts_once_and_survives() {
    on_each_backend("wait_since", |s, _| {
        assert_eq!(s.wait_since("ev-1", 100).expect("wait"), 100);
        assert_eq!(s.wait_since("ev-1", 900).expect("wait"), 100);
        s.drop_refs("ev-1").expect("drop");
        assert_eq!(s.wait_since("ev-1", 900).expect("wait"), 900);
    });
}

#[test]
fn damaged_files_are_detected_counted_and_received_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("media");
    let mut s = FsMediaStore::open(&root).expect("open");
    let bytes = png(2000, 8);
    let h = put(&mut s, &bytes, 700, 1);
    let hex = h.to_string();
    let file = root.join("sha256").join(&hex[..2]).join(&hex);
    let mut damaged = bytes.clone();
    damaged[1500] ^= 1;
    std::fs::write(&file, &damaged).expect("damage");
    assert!(s.get(&h).expect("get").is_none(), "never served");
    assert!(!s.has(&h).expect("has"), "received again");
    assert_eq!(s.stats().expect("stats").damaged, 1);
    // A truncated partial: the store says 500 were written, 300 remain.
    let h2 = MediaHash::of(&bytes);
    s.append(&h2, MediaType::Png, 2000, 0, &bytes[..500])
        .expect("append");
    let partial = root.join("partial").join(&hex);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&partial)
        .expect("open");
    f.set_len(300).expect("truncate");
    let err = s
        .append(&h2, MediaType::Png, 2000, 500, &bytes[500..1000])
        .expect_err("damage");
    assert!(
        matches!(
            err,
            MediaError::Damaged {
                have: 300,
                at: 500,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(s.stats().expect("stats").damaged, 2);
    // A complete file whose index row a crash lost is adopted.
    let h3 = put(&mut s, &png(900, 9), 900, 1);
    drop(s);
    let idx = rusqlite::Connection::open(root.join("index.db")).expect("index");
    idx.execute("DELETE FROM media", []).expect("lose rows");
    drop(idx);
    let mut s = FsMediaStore::open(&root).expect("reopen");
    assert!(s.get(&h3).expect("get").is_some());
}
