//! Signatures and photos kept on the agent: stored at their hash, sealed on
//! disk (the bytes are not in the file), private, refused when the hash or
//! the type is wrong, and still readable after `rotate-key`.

mod support;

use std::os::unix::fs::PermissionsExt;

use serde_json::Value;
use support::start_agent_in;

/// PNG magic and a marker that must never appear on disk in the clear.
fn image() -> Vec<u8> {
    let mut b = b"\x89PNG\r\n\x1a\n".to_vec();
    b.extend_from_slice(b"signature-of-Hedwig-Ostermann");
    b
}

fn sha256_hex(bytes: &[u8]) -> String {
    use std::io::Write;
    let mut child = std::process::Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("sha256sum");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(bytes)
        .expect("write");
    let out = child.wait_with_output().expect("digest");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .expect("hex")
        .to_string()
}

#[tokio::test]
async fn media_are_kept_sealed_at_their_hash_and_survive_a_key_rotation() {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = root.path().join("data");
    std::fs::create_dir_all(&dir).expect("dir");
    let agent = start_agent_in(&dir, "", "").await;
    let http = agent.http();
    let img = image();
    let hex = sha256_hex(&img);
    let put = |ct: &'static str, path: String, body: Vec<u8>| {
        http.put(agent.url(&path))
            .header("content-type", ct)
            .body(body)
            .send()
    };
    let res = put("image/png", format!("/v1/media/{hex}"), img.clone())
        .await
        .expect("put");
    assert_eq!(res.status(), 201);
    let v: Value = res.json().await.expect("json");
    assert_eq!(v["ref"], format!("sha256:{hex}"));
    assert_eq!(v["state"], "queued");
    // Again: held already.
    let res = put("image/png", format!("/v1/media/{hex}"), img.clone())
        .await
        .expect("put");
    assert_eq!(res.status(), 200);
    // Wrong hash, wrong type, not a hash, no token.
    let zeros = "0".repeat(64);
    assert_eq!(
        put("image/png", format!("/v1/media/{zeros}"), img.clone())
            .await
            .expect("put")
            .status(),
        422
    );
    assert_eq!(
        put("text/plain", format!("/v1/media/{hex}"), img.clone())
            .await
            .expect("put")
            .status(),
        415
    );
    assert_eq!(
        put("image/png", "/v1/media/not-a-hash".into(), img.clone())
            .await
            .expect("put")
            .status(),
        400
    );
    let res = reqwest::Client::new()
        .put(agent.url(&format!("/v1/media/{hex}")))
        .header("content-type", "image/png")
        .body(img.clone())
        .send()
        .await
        .expect("put");
    assert_eq!(res.status(), 401);
    // Not an image by its bytes, whatever the header says.
    let text = b"signature-of-nobody".to_vec();
    assert_eq!(
        put(
            "image/png",
            format!("/v1/media/{}", sha256_hex(&text)),
            text
        )
        .await
        .expect("put")
        .status(),
        415
    );
    let mut big = vec![7u8; dockline_agent::outbox::media::DEFAULT_MAX_MEDIA_BYTES + 1];
    big[..3].copy_from_slice(&[0xff, 0xd8, 0xff]);
    let big_hex = sha256_hex(&big);
    assert_eq!(
        put("image/jpeg", format!("/v1/media/{big_hex}"), big)
            .await
            .expect("put")
            .status(),
        413
    );
    // Listed, readable back, sealed and private on disk.
    let list: Value = http
        .get(agent.url("/v1/media"))
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    assert_eq!(list["media"].as_array().map(Vec::len), Some(1), "{list}");
    assert_eq!(list["media"][0]["bytes"], img.len());
    let file = dir.join("media").join(&hex);
    let raw = std::fs::read(&file).expect("media file");
    assert!(!raw.windows(8).any(|w| w == b"Ostermann"), "sealed on disk");
    assert_eq!(
        std::fs::metadata(&file).expect("meta").permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        std::fs::metadata(dir.join("media"))
            .expect("meta")
            .permissions()
            .mode()
            & 0o777,
        0o700
    );
    agent.stop().await;

    // The key rotates; the media follow.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dockline-agent"))
        .args(["rotate-key", "--data-dir"])
        .arg(&dir)
        .output()
        .expect("rotate-key");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("report");
    assert_eq!(report["media"], 1);
    assert_ne!(std::fs::read(&file).expect("media file"), raw, "re-sealed");
    let agent = start_agent_in(&dir, "", "").await;
    let res = agent
        .http()
        .get(agent.url(&format!("/v1/media/{hex}")))
        .send()
        .await
        .expect("get");
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "image/png");
    assert_eq!(res.bytes().await.expect("bytes").as_ref(), &img[..]);
    agent.stop().await;
}
