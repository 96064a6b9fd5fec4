//! `GET /v1/media/{hex}` through a real server: a token or a signed link
//! opens a stored medium (bytes, content type, ETag of the hash, nosniff);
//! no auth is 401, an altered link or signature 403, an expired link 403,
//! an unknown medium 404, every answer counted. The event's media list
//! hands the dashboard image links that work without the token.

use std::net::SocketAddr;
use std::sync::Arc;

use dockline_collector::http::ApiConfig;
use dockline_collector::http::auth::{Auth, Role, TokenConfig};
use dockline_collector::media::config::MediaConfig;
use dockline_collector::media::link::MediaLinks;
use dockline_collector::media::store::FsMediaStore;
use dockline_collector::media::{MediaHub, MediaRef, MediaRole};
use dockline_protocol::media::{MediaHash, MediaType};
use reqwest::StatusCode;
use tokio::sync::Notify;

const VIEWER: &str = "viewer-token-media-0123456789";
const KEY: [u8; 32] = [42; 32];

struct Server {
    base: String,
    hub: MediaHub,
    _dir: tempfile::TempDir,
}

async fn serve() -> Server {
    let dir = tempfile::tempdir().expect("dir");
    let store = FsMediaStore::open(&dir.path().join("media")).expect("store");
    let hub = MediaHub::new(
        Box::new(store),
        MediaConfig::default(),
        Arc::new(Notify::new()),
    );
    let api = ApiConfig {
        tokens: vec![TokenConfig {
            role: Some(Role::Viewer),
            name: Some("wallboard".into()),
            token: Some(VIEWER.into()),
            ..TokenConfig::default()
        }],
        ..ApiConfig::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let auth = Arc::new(Auth::from_config(&api, addr).expect("auth"));
    let links = MediaLinks::new(&KEY, &format!("http://{addr}"), 600).expect("links");
    let router = dockline_collector::http::media::routes(hub.clone(), Some(links), auth)
        .into_make_service_with_connect_info::<SocketAddr>();
    tokio::spawn(async move { axum::serve(listener, router).await });
    Server {
        base: format!("http://{addr}"),
        hub,
        _dir: dir,
    }
}

fn png() -> Vec<u8> {
    let mut b = b"\x89PNG\r\n\x1a\n".to_vec();
    b.extend((0..5000u32).map(|i| (i % 241) as u8));
    b
}

async fn put(hub: &MediaHub, bytes: &[u8]) -> MediaHash {
    let h = MediaHash::of(bytes);
    let b = bytes.to_vec();
    hub.store
        .call(move |s| {
            s.append(&h, MediaType::Png, b.len() as u64, 0, &b)?;
            s.complete(&h, MediaType::Png, 1)
        })
        .await
        .expect("stored");
    h
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

#[tokio::test]
async fn media_open_to_a_token_or_a_signed_link_and_to_nothing_else() {
    let s = serve().await;
    let bytes = png();
    let h = put(&s.hub, &bytes).await;
    let c = reqwest::Client::new();
    let url = format!("{}/v1/media/{h}", s.base);

    let r = c.get(&url).send().await.expect("get");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(r.text().await.expect("body").contains("signed link"));

    let r = c.get(&url).bearer_auth(VIEWER).send().await.expect("get");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-type"], "image/png");
    assert_eq!(r.headers()["etag"], format!("\"{h}\"").as_str());
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    assert_eq!(&r.bytes().await.expect("bytes")[..], &bytes[..]);

    let r = c
        .get(&url)
        .bearer_auth(VIEWER)
        .header("If-None-Match", format!("\"{h}\""))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);

    let links = MediaLinks::new(&KEY, &s.base, 600).expect("links");
    let link = links.url(&h, now_secs());
    let r = c.get(&link).send().await.expect("link");
    assert_eq!(r.status(), StatusCode::OK, "a signed link needs no token");
    assert_eq!(&r.bytes().await.expect("bytes")[..], &bytes[..]);

    // Altered signature, another key, expired.
    let bad = format!(
        "{}A",
        link.trim_end_matches(|c: char| c != '=')
            .trim_end_matches('=')
    );
    let tampered = link.replace("sig=", "sig=x");
    for l in [tampered, bad] {
        let r = c.get(&l).send().await.expect("bad");
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{l}");
    }
    let other = MediaLinks::new(&[1; 32], &s.base, 600).expect("links");
    let r = c
        .get(other.url(&h, now_secs()))
        .send()
        .await
        .expect("other");
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(
        r.text()
            .await
            .expect("body")
            .contains("signature does not match")
    );
    let expired = links.url(&h, now_secs() - 1_000);
    let r = c.get(&expired).send().await.expect("expired");
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(r.text().await.expect("body").contains("expired"));
    let r = c
        .get(format!("{url}?exp=99999999999"))
        .send()
        .await
        .expect("half");
    assert_eq!(r.status(), StatusCode::FORBIDDEN);

    // Unknown medium, or not a hash at all.
    let unknown = MediaHash::of(b"never sent");
    let r = c
        .get(format!("{}/v1/media/{unknown}", s.base))
        .bearer_auth(VIEWER)
        .send()
        .await
        .expect("unknown");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = c
        .get(format!("{}/v1/media/not-a-hash", s.base))
        .bearer_auth(VIEWER)
        .send()
        .await
        .expect("junk");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    // The other media routes need the token.
    let r = c
        .get(format!("{}/v1/media-lanes", s.base))
        .send()
        .await
        .expect("lanes");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    let m = &s.hub.metrics;
    let mut reg = prometheus_client::registry::Registry::default();
    m.register(&mut reg);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &reg).expect("encode");
    for line in [
        "dockline_media_served_total{outcome=\"unauthorized\"} 1",
        "dockline_media_served_total{outcome=\"ok\"} 3",
        "dockline_media_served_total{outcome=\"forbidden\"} 5",
        "dockline_media_served_total{outcome=\"not_found\"} 2",
    ] {
        assert!(text.contains(line), "{line} in\n{text}");
    }
}

#[tokio::test]
async fn an_events_media_list_gives_the_dashboard_image_links() {
    let s = serve().await;
    let bytes = png();
    let h = put(&s.hub, &bytes).await;
    let missing = MediaHash::of(b"photo not here yet");
    let refs = [
        MediaRef {
            hash: h,
            role: MediaRole::Signature,
        },
        MediaRef {
            hash: missing,
            role: MediaRole::Photo,
        },
    ];
    s.hub
        .store
        .call(move |st| st.add_refs("ev-42", &refs))
        .await
        .expect("refs");
    let c = reqwest::Client::new();
    let list: serde_json::Value = c
        .get(format!("{}/v1/events/ev-42/media", s.base))
        .bearer_auth(VIEWER)
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    assert_eq!(list[0]["role"], "signature");
    assert_eq!(list[0]["stored"], true);
    assert_eq!(list[1]["role"], "photo");
    assert_eq!(list[1]["stored"], false);
    assert!(list[1]["url"].is_null());
    let img = list[0]["url"].as_str().expect("a link");
    assert!(img.starts_with(&format!("/v1/media/{h}?exp=")), "{img}");
    let r = c.get(format!("{}{img}", s.base)).send().await.expect("img");
    assert_eq!(
        r.status(),
        StatusCode::OK,
        "the image link works without the token"
    );
    assert_eq!(&r.bytes().await.expect("bytes")[..], &bytes[..]);
}
