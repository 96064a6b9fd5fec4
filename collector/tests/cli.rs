//! The built binary: a broken config exits non-zero with one clear line; a
//! good config keeps running without a broker and serves its API.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_dockline-collector");

fn run_with(config_text: &str) -> (i32, String, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("collector.toml");
    std::fs::write(&path, config_text).expect("write config");
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&path)
        .env_remove("RUST_LOG")
        .output()
        .expect("run binary");
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    (
        out.status.code().unwrap_or(-1),
        stderr,
        path.display().to_string(),
    )
}

fn assert_one_clear_line(code: i32, stderr: &str, must: &[&str]) {
    assert_ne!(code, 0, "a bad config must fail: {stderr}");
    let lines: Vec<_> = stderr.trim().lines().collect();
    assert_eq!(lines.len(), 1, "one line expected, got: {stderr}");
    for m in must {
        assert!(lines[0].contains(m), "{m:?} missing from {stderr:?}");
    }
}

#[test]
fn typo_in_config_is_one_clear_line_naming_file_and_key() {
    let (code, stderr, path) = run_with(
        "data_dir = \"/tmp/x\"\n[erp]\nurl = \"http://127.0.0.1:9/e\"\nsecret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\nretyr_max_ms = 5\n",
    );
    assert_one_clear_line(code, &stderr, &[&path, "unknown field `retyr_max_ms`"]);
}

#[test]
fn bad_secret_and_missing_erp_are_reported() {
    let (code, stderr, path) =
        run_with("[erp]\nurl = \"http://127.0.0.1:9/e\"\nsecret = \"hunter2\"\n");
    assert_one_clear_line(code, &stderr, &[&path, "erp.secret", "whsec_"]);
    let (code, stderr, path) = run_with("[mqtt]\nport = 1883\n");
    assert_one_clear_line(code, &stderr, &[&path, "missing field `erp`"]);
    let (code, stderr, path) = run_with("[erp\nurl = 1\n");
    assert_one_clear_line(code, &stderr, &[&path]);
}

#[test]
fn missing_file_is_reported() {
    let out = Command::new(BIN)
        .args(["--config", "/nonexistent/collector.toml"])
        .output()
        .expect("run binary");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_one_clear_line(
        out.status.code().unwrap_or(-1),
        &stderr,
        &["/nonexistent/collector.toml", "--config"],
    );
}

/// Kills the child when the test ends, pass or fail.
struct Running(std::process::Child);
impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn keeps_running_without_a_broker_and_serves_stats() {
    // A port with nothing listening: the broker is "down".
    let free = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let dead_port = free.local_addr().expect("addr").port();
    drop(free);
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let path = dir.path().join("collector.toml");
    std::fs::write(
        &path,
        format!(
            "data_dir = {data:?}\n[mqtt]\nport = {dead_port}\n[[devices]]\nid = \"hh-01\"\nsite = \"dc-north\"\n\
             [erp]\nurl = \"http://127.0.0.1:9/e\"\nsecret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\n"
        ),
    )
    .expect("write config");
    let mut child = Running(
        Command::new(BIN)
            .arg("--config")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn"),
    );
    let addr_file = data.join("api.addr");
    let deadline = Instant::now() + Duration::from_secs(20);
    let addr = loop {
        if let Ok(a) = std::fs::read_to_string(&addr_file)
            && !a.is_empty()
        {
            break a;
        }
        assert!(Instant::now() < deadline, "api.addr not written");
        std::thread::sleep(Duration::from_millis(50));
    };
    // Give the MQTT task time to fail a few connects.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        child.0.try_wait().expect("try_wait").is_none(),
        "the collector must not exit when the broker is down"
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (health, stats) = rt.block_on(async {
        let c = reqwest::Client::new();
        let h = c
            .get(format!("http://{addr}/healthz"))
            .send()
            .await
            .expect("healthz")
            .text()
            .await
            .expect("body");
        let s: serde_json::Value = c
            .get(format!("http://{addr}/v1/stats"))
            .send()
            .await
            .expect("stats")
            .json()
            .await
            .expect("json");
        (h, s)
    });
    assert_eq!(health, "ok");
    assert_eq!(stats["received"], 0);
    assert_eq!(stats["pending"], 0);
    assert_eq!(stats["devices"][0]["device"], "hh-01");
    assert_eq!(stats["devices"][0]["online"], false);

    let _ = child.0.kill();
    let _ = child.0.wait();
    let mut stderr = String::new();
    if let Some(mut e) = child.0.stderr.take() {
        e.read_to_string(&mut stderr).expect("read stderr");
    }
    let warnings = stderr.matches("MQTT broker unreachable").count();
    assert_eq!(warnings, 1, "one warning per outage: {stderr}");
}
