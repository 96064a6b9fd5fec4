//! The built binary: a broken config exits non-zero with one clear line; a
//! good config keeps running without a broker and serves its API.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

mod support;

use support::{BIN, Lines, Running, signal, wait_api_addr};

fn run_with(config_text: &str) -> (i32, String, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("collector.toml");
    std::fs::write(&path, config_text).expect("write config");
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&path)
        .env_remove("RUST_LOG")
        // A user error never ends in a backtrace, even when one is asked for.
        .env("RUST_BACKTRACE", "1")
        .output()
        .expect("run binary");
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    (
        out.status.code().unwrap_or(-1),
        stderr,
        path.display().to_string(),
    )
}

/// One line naming the file and the problem; for a problem at a place in
/// the file, that line (`  5 | …`) and a caret under the problem follow.
fn assert_one_clear_line(code: i32, stderr: &str, must: &[&str]) {
    assert_eq!(code, 2, "a bad config must fail with 2: {stderr}");
    let lines: Vec<_> = stderr.trim_end().lines().collect();
    assert!(
        lines.len() == 1 || (lines.len() == 3 && lines[1..].iter().all(|l| l.starts_with("  "))),
        "one line (plus the file's line and a caret) expected, got: {stderr}"
    );
    assert!(!stderr.contains("stack backtrace"), "{stderr}");
    for m in must {
        assert!(lines[0].contains(m), "{m:?} missing from {stderr:?}");
    }
}

#[test]
fn typo_in_config_is_one_clear_line_naming_file_and_key() {
    let (code, stderr, path) = run_with(
        "data_dir = \"/tmp/x\"\n[erp]\nurl = \"http://127.0.0.1:9/e\"\nsecret = \"whsec_ZG9ja2xpbmUtY2xpLXRlc3Qtc2VjcmV0LTMyYnl0ZXM=\"\nretyr_max_ms = 5\n",
    );
    assert_one_clear_line(
        code,
        &stderr,
        &[&path, "line 5, column 1", "unknown field `retyr_max_ms`"],
    );
    assert!(
        stderr.contains("\n  5 | retyr_max_ms = 5\n    | ^^^^^^^^^^^^"),
        "{stderr}"
    );
}

/// The example config's webhook secret is public: refused at start, naming
/// the key and how to make one.
#[test]
fn the_example_webhook_secret_is_refused() {
    let (code, stderr, path) = run_with(&format!(
        "[erp]\nurl = \"http://127.0.0.1:9/e\"\nsecret = \"{}\"\n",
        dockline_collector::secret_hygiene::EXAMPLE_SECRETS[0]
    ));
    assert_one_clear_line(
        code,
        &stderr,
        &[&path, "erp.secret", "example secret", "openssl rand"],
    );
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

#[test]
fn keeps_running_without_a_broker_and_serves_stats() {
    // A port with nothing listening: the broker is "down".
    let dead_port = support::dead_port();
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let path = dir.path().join("collector.toml");
    std::fs::write(
        &path,
        format!(
            "data_dir = {data:?}\n[mqtt]\nport = {dead_port}\n[[devices]]\nid = \"hh-01\"\nsite = \"dc-north\"\n\
             [erp]\nurl = \"http://127.0.0.1:9/e\"\nsecret = \"whsec_ZG9ja2xpbmUtY2xpLXRlc3Qtc2VjcmV0LTMyYnl0ZXM=\"\n"
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
    let addr = wait_api_addr(&data);
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

/// Runs `dockline-collector --config <path> <args…>`; (exit code, stdout, stderr).
fn run_cli(config: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("run binary");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[test]
fn dlq_commands_list_show_replay_and_discard() {
    use dockline_collector::inbox::{AttemptLog, Inbox, InboxStore, NewDeadLetter};
    use dockline_protocol::{
        Batch, BusinessEvent, DeviceId, Envelope, EventDetail, EventId, Payload, Priority,
        References, SiteId, TimeSource,
    };

    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let config = dir.path().join("collector.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {data:?}\n[erp]\nurl = \"http://127.0.0.1:9/e\"\nsecret = \"whsec_ZG9ja2xpbmUtY2xpLXRlc3Qtc2VjcmV0LTMyYnl0ZXM=\"\n"
        ),
    )
    .expect("write config");

    // No database yet: a clear error, not an empty list.
    let (code, _, stderr) = run_cli(&config, &["dlq", "list"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("no collector database") && stderr.contains("data_dir"),
        "{stderr}"
    );

    std::fs::create_dir_all(&data).expect("mkdir");
    let device = DeviceId::new("hh-01").expect("id");
    let envelope = |seq: u64| Envelope {
        v: 1,
        device: device.clone(),
        epoch: 1,
        seq,
        id: EventId([seq as u8; 16]),
        captured_ms: 1_700_000_000_000,
        time_source: TimeSource::Ntp,
        priority: Priority::MustDeliver,
        payload: Payload::Event(BusinessEvent {
            detail: EventDetail::Picked {
                item: "04012345678901".into(),
                quantity: 1,
                lot: None,
            },
            refs: References {
                order: Some("SO-9".into()),
                ..References::default()
            },
        }),
    };
    {
        let mut inbox = Inbox::open(&data.join("inbox.db")).expect("inbox");
        let batch = Batch {
            v: 1,
            device: device.clone(),
            epoch: 1,
            first_held: 1,
            events: vec![envelope(1), envelope(2)],
            shed: Vec::new(),
        };
        inbox
            .store_batch(&SiteId::new("dc-north").expect("site"), &batch, 0)
            .expect("store");
        for (seq, erp_rejected) in [(1, true), (2, false)] {
            let dead = NewDeadLetter {
                last: AttemptLog {
                    n: 0,
                    at_ms: 1_700_000_000_000,
                    request: "POST http://127.0.0.1:9/e".into(),
                    status: Some(422),
                    error: None,
                    body: "unknown item".into(),
                    decision: "dead letter (permanent)".into(),
                },
                reason: format!("HTTP 422: unknown item (seq {seq})"),
                class: "permanent".into(),
                erp_rejected,
            };
            inbox
                .store_dead_letter(&device, 1, seq, &dead)
                .expect("dead letter")
                .expect("pending");
        }
    }

    let (code, out, stderr) = run_cli(&config, &["dlq", "list"]);
    assert_eq!(code, 0, "{stderr}");
    let lines: Vec<_> = out.lines().collect();
    assert_eq!(lines.len(), 3, "header + 2: {out}");
    assert!(
        lines[1].contains("open") && lines[1].contains("hh-01"),
        "{out}"
    );
    assert!(
        out.contains("[ERP rejected] HTTP 422: unknown item (seq 1)"),
        "{out}"
    );

    let (code, out, stderr) = run_cli(&config, &["dlq", "show", "1"]);
    assert_eq!(code, 0, "{stderr}");
    let shown: serde_json::Value = serde_json::from_str(&out).expect("show prints JSON");
    assert_eq!(shown["event"]["id"], EventId([1; 16]).to_string());
    assert_eq!(shown["event"]["source"], "/dockline/dc-north/hh-01");
    assert_eq!(shown["attempt_log"][0]["status"], 422);
    assert_eq!(shown["lane_blocked"], true);

    let (code, out, stderr) = run_cli(&config, &["dlq", "replay", "1"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(out.contains("dead letter 1 replayed"), "{out}");
    assert!(
        out.contains("\"lane_blocked\": true"),
        "dead letter 2 still blocks: {out}"
    );
    let (code, _, stderr) = run_cli(&config, &["dlq", "replay", "1"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("already replayed"), "{stderr}");
    let (code, _, stderr) = run_cli(&config, &["dlq", "show", "42"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("no dead letter 42"), "{stderr}");

    let (code, out, stderr) = run_cli(
        &config,
        &["dlq", "discard", "2", "--note", "item withdrawn"],
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(out.contains("\"lane_blocked\": false"), "{out}");
    let (_, out, _) = run_cli(&config, &["dlq", "list"]);
    assert_eq!(out, "no dead letters\n");
    let (code, out, _) = run_cli(&config, &["dlq", "list", "--all", "--json"]);
    assert_eq!(code, 0);
    let all: serde_json::Value = serde_json::from_str(&out).expect("json");
    let states: Vec<_> = all
        .as_array()
        .expect("array")
        .iter()
        .map(|d| d["state"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(states, vec!["discarded", "replayed"]);
}

/// `keygen` writes a key pair, refuses to overwrite it, and the collector
/// starts with the key from the environment's short name; a bad key is one
/// clear line that does not print the key.
#[test]
fn keygen_writes_a_pair_and_a_bad_signing_key_is_named_not_printed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(BIN)
        .args(["keygen", "--out"])
        .arg(dir.path())
        .output()
        .expect("run keygen");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    let public = std::fs::read_to_string(dir.path().join("command-verify.pub")).expect("pub");
    assert!(
        stdout.contains(&format!("verify_key = \"{}\"", public.trim())),
        "{stdout}"
    );
    let again = Command::new(BIN)
        .args(["keygen", "--out"])
        .arg(dir.path())
        .output()
        .expect("run keygen");
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists"));

    let cfg = dir.path().join("collector.toml");
    std::fs::write(
        &cfg,
        "[erp]\nurl = \"http://127.0.0.1:9/e\"\nsecret = \"whsec_ZG9ja2xpbmUtY2xpLXRlc3Qtc2VjcmV0LTMyYnl0ZXM=\"\n",
    )
    .expect("write");
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&cfg)
        .env("DOCKLINE_COMMANDS_SIGNING_KEY", "bm90LWEta2V5")
        .env("DOCKLINE_DATA_DIR", dir.path().join("data"))
        .env_remove("RUST_LOG")
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("[commands] signing_key"), "{stderr}");
    assert!(
        !stderr.contains("bm90LWEta2V5"),
        "the key is never printed: {stderr}"
    );
    // The key file keygen wrote is 0600; made readable by others, the
    // collector refuses to start, naming the file, its mode and the fix.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let key = dir.path().join("command-signing.key");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let out = Command::new(BIN)
            .arg("--config")
            .arg(&cfg)
            .env("DOCKLINE_COMMANDS__SIGNING_KEY_FILE", &key)
            .env("DOCKLINE_DATA_DIR", dir.path().join("data"))
            .env_remove("RUST_LOG")
            .output()
            .expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        for part in [&key.display().to_string(), "0644", "chmod 600"] {
            assert!(stderr.contains(part), "{part} missing: {stderr}");
        }
    }
}

/// `holes list` shows a device's missing sequences; `holes close` gives them
/// up as lost and says how many events that was.
#[test]
fn holes_commands_list_and_close_as_lost() {
    use dockline_collector::inbox::{Inbox, InboxStore};
    use dockline_protocol::{
        Batch, BusinessEvent, DeviceId, Envelope, EventDetail, EventId, Payload, Priority,
        References, SiteId, TimeSource,
    };

    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let config = dir.path().join("collector.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {data:?}\n[erp]\nurl = \"http://127.0.0.1:9/e\"\nsecret = \"whsec_ZG9ja2xpbmUtY2xpLXRlc3Qtc2VjcmV0LTMyYnl0ZXM=\"\n"
        ),
    )
    .expect("write config");
    std::fs::create_dir_all(&data).expect("mkdir");
    let device = DeviceId::new("hh-01").expect("id");
    let envelope = |seq: u64| Envelope {
        v: 1,
        device: device.clone(),
        epoch: 7,
        seq,
        id: EventId([seq as u8; 16]),
        captured_ms: 1_700_000_000_000,
        time_source: TimeSource::Ntp,
        priority: Priority::MustDeliver,
        payload: Payload::Event(BusinessEvent {
            detail: EventDetail::Picked {
                item: "04012345678901".into(),
                quantity: 1,
                lot: None,
            },
            refs: References::default(),
        }),
    };
    {
        let mut inbox = Inbox::open(&data.join("inbox.db")).expect("inbox");
        let batch = Batch {
            v: 1,
            device: device.clone(),
            epoch: 7,
            first_held: 1,
            events: vec![envelope(1), envelope(2), envelope(5)],
            shed: Vec::new(),
        };
        inbox
            .store_batch(&SiteId::new("dc-north").expect("site"), &batch, 0)
            .expect("store");
    }
    let (code, out, stderr) = run_cli(&config, &["holes", "list"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(out, "hh-01 epoch 7: complete up to 2, missing [(3, 4)]\n");
    let (code, out, stderr) = run_cli(&config, &["holes", "close", "--device", "hh-01"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(out.contains("closed as lost [(3, 4)] (2 events)"), "{out}");
    let (_, out, _) = run_cli(&config, &["holes", "list"]);
    assert_eq!(out, "no open holes\n");
    let inbox = Inbox::open(&data.join("inbox.db")).expect("inbox");
    assert_eq!(inbox.complete_up_to(&device, 7).expect("mark"), 5);
    assert_eq!(inbox.stats().expect("stats").holes_lost, 2);
}

/// A config that starts without a broker (dead port) or an ERP.
fn offline_config(dir: &std::path::Path) -> std::path::PathBuf {
    let dead_port = support::dead_port();
    let data = dir.join("data");
    let path = dir.join("collector.toml");
    std::fs::write(
        &path,
        format!(
            "data_dir = {data:?}\n[api]\nlisten = \"127.0.0.1:0\"\n[mqtt]\nport = {dead_port}\n\
             [[devices]]\nid = \"hh-01\"\nsite = \"dc-north\"\n\
             [erp]\nurl = \"http://127.0.0.1:9/e\"\nsecret = \"whsec_ZG9ja2xpbmUtY2xpLXRlc3Qtc2VjcmV0LTMyYnl0ZXM=\"\n"
        ),
    )
    .expect("write config");
    path
}

#[test]
fn check_config_prints_the_merged_config_with_secrets_redacted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = offline_config(dir.path());
    let out = Command::new(BIN)
        .arg("-c")
        .arg(&path)
        .arg("check-config")
        .env("DOCKLINE_BIN", "/opt/deploy/bin")
        .env("DOCKLINE_GAPS__RESEND_AFTER_MS", "20000")
        .output()
        .expect("run binary");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(!stdout.contains("whsec_MfKQ"), "secret shown: {stdout}");
    assert!(stdout.contains("secret = \"<redacted>\""), "{stdout}");
    assert!(stdout.contains("resend_after_ms = 20000"), "{stdout}");
    // The effective config: keys the file never names, with their defaults.
    for default in ["concurrency = 4", "keep_alive_secs = 15", "ttl_secs = 300"] {
        assert!(
            stdout.lines().any(|l| l == default),
            "no default {default:?}: {stdout}"
        );
    }
    assert!(
        stdout.contains("ignored (name no config key): DOCKLINE_BIN"),
        "{stdout}"
    );
    assert!(stdout.contains("# ok: the config is valid"), "{stdout}");

    // A typo below a known section is still refused, naming the variable.
    let out = Command::new(BIN)
        .arg("-c")
        .arg(&path)
        .arg("check-config")
        .env("DOCKLINE_GAPS__RESEND_AFTR_MS", "1")
        .output()
        .expect("run binary");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("DOCKLINE_GAPS__RESEND_AFTR_MS")
            && stderr.contains("unknown field `resend_aftr_ms`"),
        "{stderr}"
    );
}

#[test]
fn json_logs_go_to_stderr_one_object_per_line_without_colour() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = offline_config(dir.path());
    let mut child = Running(
        Command::new(BIN)
            .arg("-c")
            .arg(&path)
            .args(["--log-format", "json"])
            .env_remove("RUST_LOG")
            .env("DOCKLINE_BIN", "/opt/deploy/bin")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn"),
    );
    wait_api_addr(&dir.path().join("data"));
    signal(&child.0, "TERM");
    let status = child.0.wait().expect("wait");
    assert!(status.success(), "SIGTERM is a clean stop: {status}");
    let mut stdout = String::new();
    let mut stderr = String::new();
    if let Some(mut o) = child.0.stdout.take() {
        o.read_to_string(&mut stdout).expect("read stdout");
    }
    if let Some(mut e) = child.0.stderr.take() {
        e.read_to_string(&mut stderr).expect("read stderr");
    }
    assert!(stdout.is_empty(), "logs belong on stderr: {stdout}");
    assert!(
        !stderr.contains('\u{1b}'),
        "no ANSI codes into a pipe: {stderr}"
    );
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: not JSON: {l}")))
        .collect();
    let start = lines
        .iter()
        .find(|l| l["message"] == "dockline-collector starting")
        .unwrap_or_else(|| panic!("no start line: {stderr}"));
    assert_eq!(start["level"], "INFO");
    assert_eq!(start["version"], env!("CARGO_PKG_VERSION"));
    assert!(
        start["commit"].as_str().is_some_and(|c| !c.is_empty()),
        "{start}"
    );
}

#[test]
fn sighup_applies_the_log_level_and_names_what_needs_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = offline_config(dir.path());
    let original = std::fs::read_to_string(&path).expect("read");
    let mut child = Running(
        Command::new(BIN)
            .arg("-c")
            .arg(&path)
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn"),
    );
    let mut lines = Lines::of(&mut child);
    lines.wait(&["collector started"]);
    std::fs::write(
        &path,
        format!("{original}[gaps]\nresend_after_ms = 30000\n[log]\nlevel = \"debug\"\n"),
    )
    .expect("write");
    signal(&child.0, "HUP");
    lines.wait(&["reload: log level applied"]);
    lines.wait(&["needs_restart=gaps.resend_after_ms"]);
    std::fs::write(&path, format!("{original}[gaps]\nresend_aftr_ms = 1\n")).expect("write");
    signal(&child.0, "HUP");
    lines.wait(&["reload refused; the running config stays"]);
    assert!(
        child.0.try_wait().expect("try_wait").is_none(),
        "SIGHUP must not stop the collector"
    );
}

/// A collector on a PostgreSQL inbox stops cleanly on SIGTERM: the inbox
/// (which owns a runtime of its own) is dropped inside the collector's
/// async shutdown without aborting the process.
#[test]
fn sigterm_with_a_postgres_inbox_is_a_clean_stop() {
    let Some(base) = std::env::var("DOCKLINE_TEST_PG_URL")
        .ok()
        .filter(|u| !u.is_empty())
    else {
        eprintln!("skipped: DOCKLINE_TEST_PG_URL is not set (postgres://user@host:port/db)");
        return;
    };
    let schema = dockline_collector::inbox::postgres::ScratchSchema::create(&base, "sigterm")
        .expect("scratch schema");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = offline_config(dir.path());
    let mut text = std::fs::read_to_string(&path).expect("read config");
    text.push_str(&format!("[inbox]\nurl = {:?}\n", schema.url()));
    std::fs::write(&path, text).expect("write config");
    let mut child = Running(
        Command::new(BIN)
            .arg("-c")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn"),
    );
    wait_api_addr(&dir.path().join("data"));
    signal(&child.0, "TERM");
    let status = child.0.wait().expect("wait");
    let mut stderr = String::new();
    if let Some(mut e) = child.0.stderr.take() {
        e.read_to_string(&mut stderr).expect("read stderr");
    }
    assert!(
        status.success(),
        "SIGTERM is a clean stop: {status}\n{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}
