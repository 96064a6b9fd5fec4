//! The built `dockline-agent` binary as an operator meets it: `check-config`,
//! readable config errors without backtraces, the data folder hint, and logs
//! as JSON on stderr.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[path = "support/child.rs"]
mod child;

use child::{Running, stderr_lines, wait_line};

const BIN: &str = env!("CARGO_BIN_EXE_dockline-agent");

/// An agent config with a dead broker port and an API on a free port.
fn config(dir: &Path, extra: &str) -> PathBuf {
    let free = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let dead_port = free.local_addr().expect("addr").port();
    drop(free);
    let path = dir.join("agent.toml");
    std::fs::write(
        &path,
        format!(
            "site = \"dc\"\ndevice = \"hh-1\"\ndata_dir = {:?}\n[api]\nlisten = \"127.0.0.1:0\"\n\
             token = \"0123456789abcdef-secret\"\n[mqtt]\nport = {dead_port}\n{extra}",
            dir.join("data")
        ),
    )
    .expect("write config");
    path
}

fn run(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(args).env_remove("RUST_LOG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run agent");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_config_redacts_the_token_and_ignores_unrelated_variables() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = config(dir.path(), "");
    let path = path.to_str().expect("utf-8 path");
    let (code, stdout, stderr) = run(
        &["-c", path, "check-config"],
        &[
            ("DOCKLINE_BIN", "/opt/x"),
            ("DOCKLINE_MQTT__HOST", "broker.lan"),
        ],
    );
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(!stdout.contains("0123456789abcdef-secret"), "{stdout}");
    assert!(stdout.contains("token = \"<redacted>\""), "{stdout}");
    assert!(stdout.contains("host = \"broker.lan\""), "{stdout}");
    assert!(stdout.contains("DOCKLINE_BIN"), "{stdout}");
    assert!(stdout.contains("# ok: the config is valid"), "{stdout}");
    // Keys the file leaves out are shown with the values the agent runs with.
    assert!(stdout.contains("heartbeat_secs = "), "{stdout}");
    assert!(stdout.contains("max_bytes = "), "{stdout}");
}

#[test]
fn config_errors_are_one_paragraph_with_the_line_and_no_backtrace() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = config(dir.path(), "[uplink]\nbatch_max = 3\n");
    let path = path.to_str().expect("utf-8 path");
    let (code, _, stderr) = run(&["-c", path], &[("RUST_BACKTRACE", "1")]);
    assert_eq!(code, 2, "{stderr}");
    assert!(!stderr.contains("stack backtrace"), "{stderr}");
    let first = stderr.lines().next().unwrap_or_default();
    assert!(
        first.starts_with("dockline-agent: error: cannot start the agent")
            && first.contains("agent.toml: line 10, column 1: unknown field `batch_max`"),
        "{stderr}"
    );
    assert!(stderr.contains("  10 | batch_max = 3"), "{stderr}");
}

#[test]
fn an_unwritable_data_dir_is_named_with_the_fix() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A regular file where the data folder's parent should be: unwritable
    // even for root, which ignores permission bits.
    std::fs::write(dir.path().join("data"), b"not a folder").expect("write");
    let path = config(dir.path(), "");
    std::fs::write(
        &path,
        std::fs::read_to_string(&path)
            .expect("read")
            .replace("/data\"", "/data/agent\""),
    )
    .expect("rewrite");
    let path = path.to_str().expect("utf-8 path");
    let (code, _, stderr) = run(&["-c", path], &[]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("is not writable by this user")
            && stderr.contains("install -d -o dockline"),
        "{stderr}"
    );
}

#[test]
fn json_logs_on_stderr_and_a_clean_stop_on_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = config(dir.path(), "");
    let mut child = Running(
        Command::new(BIN)
            .arg("-c")
            .arg(&path)
            .args(["--log-format", "json"])
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn"),
    );
    let addr_file = dir.path().join("data").join("api.addr");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::fs::read_to_string(&addr_file).map_or(true, |a| a.is_empty()) {
        assert!(Instant::now() < deadline, "api.addr not written");
        std::thread::sleep(Duration::from_millis(50));
    }
    let kill = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .expect("kill");
    assert!(kill.success());
    let status = child.0.wait().expect("wait");
    assert!(status.success(), "SIGTERM is a clean stop: {status}");
    let (mut stdout, mut stderr) = (String::new(), String::new());
    if let Some(mut o) = child.0.stdout.take() {
        o.read_to_string(&mut stdout).expect("stdout");
    }
    if let Some(mut e) = child.0.stderr.take() {
        e.read_to_string(&mut stderr).expect("stderr");
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
        .find(|l| l["message"] == "dockline-agent starting")
        .unwrap_or_else(|| panic!("no start line: {stderr}"));
    assert_eq!(start["version"], env!("CARGO_PKG_VERSION"));
    assert!(
        lines.iter().any(|l| l["message"] == "agent started"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("0123456789abcdef-secret"),
        "token logged: {stderr}"
    );
}

/// `/healthz`, `/readyz`, `/metrics` and `/v1/version` of a running agent,
/// with the API token it is configured with.
#[test]
fn health_readiness_metrics_and_version_endpoints() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = config(dir.path(), "");
    let _child = Running(
        Command::new(BIN)
            .arg("-c")
            .arg(&path)
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn"),
    );
    let addr_file = dir.path().join("data").join("api.addr");
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
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let c = reqwest::Client::new();
        let get = |p: &str| {
            c.get(format!("http://{addr}{p}"))
                .bearer_auth("0123456789abcdef-secret")
                .send()
        };
        let r = get("/healthz").await.expect("healthz");
        assert_eq!(r.status(), 200);
        let r = get("/readyz").await.expect("readyz");
        assert_eq!(r.status(), 200);
        let ready: serde_json::Value = r.json().await.expect("json");
        assert_eq!(ready["outbox"], "writable");
        assert_eq!(ready["uplink"], "down", "no broker on the configured port");
        let v: serde_json::Value = get("/v1/version").await.expect("version").json().await.expect("json");
        assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
        let posted = c
            .post(format!("http://{addr}/v1/events"))
            .bearer_auth("0123456789abcdef-secret")
            .json(&serde_json::json!({"detail": {"picked": {"item": "09506000134352", "quantity": 1}}, "refs": {"order": "SO-1"}}))
            .send()
            .await
            .expect("post");
        assert_eq!(posted.status(), 201);
        let unauthorised = c
            .get(format!("http://{addr}/v1/status"))
            .send()
            .await
            .expect("status");
        assert_eq!(unauthorised.status(), 401);
        let text = get("/metrics").await.expect("metrics").text().await.expect("text");
        for line in [
            "dockline_agent_queue_events{class=\"must_deliver\"} 1",
            "dockline_agent_mqtt_connected 0",
            "dockline_agent_resends_total 0",
            "dockline_agent_http_requests_total{method=\"POST\",route=\"/v1/events\",status=\"201\"} 1",
            "dockline_agent_http_requests_total{method=\"GET\",route=\"/v1/status\",status=\"401\"} 1",
            "dockline_agent_http_requests_total{method=\"GET\",route=\"/readyz\",status=\"200\"} 1",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
        assert!(text.contains("dockline_agent_build_info{version=\""), "{text}");
        assert!(text.contains("dockline_agent_oldest_unacked_age_seconds "), "{text}");
        assert!(text.contains("dockline_agent_queue_bytes{class=\"must_deliver\"} "), "{text}");
    });
}

#[test]
fn sighup_applies_the_log_level_refuses_a_bad_config_and_names_what_needs_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = config(dir.path(), "[log]\nlevel = \"info\"\n");
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
    let rx = stderr_lines(&mut child.0);
    let mut seen = Vec::new();
    wait_line(&rx, "agent started", &mut seen);
    let hup = |c: &Running| {
        let ok = Command::new("kill")
            .args(["-HUP", &c.0.id().to_string()])
            .status()
            .expect("kill");
        assert!(ok.success());
    };

    // A broken file: refused, the agent keeps running.
    std::fs::write(&path, format!("{original}[uplink]\nbatch_max = 1\n")).expect("write");
    hup(&child);
    wait_line(&rx, "reload refused; the running config stays", &mut seen);
    assert!(
        child.0.try_wait().expect("try_wait").is_none(),
        "SIGHUP must not kill"
    );

    // A new level and a changed broker port: the level applies, the port
    // is named as needing a restart.
    let changed = original
        .replace("level = \"info\"", "level = \"debug\"")
        .replace("[mqtt]\nport = ", "[mqtt]\nkeep_alive_secs = 20\nport = ");
    std::fs::write(&path, changed).expect("write");
    hup(&child);
    wait_line(&rx, "reload: log level applied", &mut seen);
    wait_line(&rx, "needs_restart=mqtt", &mut seen);
    assert!(
        child.0.try_wait().expect("try_wait").is_none(),
        "still running"
    );
}

/// SIGTERM against a real broker: the agent's graceful death is the last
/// status message; the broker never publishes the last will after it.
/// Needs `DOCKLINE_TEST_MQTT_URL` (CI starts Mosquitto).
#[test]
fn sigterm_says_goodbye_and_the_broker_sends_no_last_will_after_it() {
    let Ok(url) = std::env::var("DOCKLINE_TEST_MQTT_URL") else {
        println!("SKIP: DOCKLINE_TEST_MQTT_URL is not set (no MQTT broker for this test)");
        return;
    };
    let hostport = url.trim_start_matches("mqtt://");
    let (host, port) = hostport.rsplit_once(':').expect("mqtt://host:port");
    let port: u16 = port.parse().expect("port");
    let dir = tempfile::tempdir().expect("tempdir");
    let device = format!("gw-bye-{}", std::process::id());
    let path = dir.path().join("agent.toml");
    std::fs::write(
        &path,
        format!(
            "site = \"dc-bye\"\ndevice = \"{device}\"\ndata_dir = {:?}\n[api]\nlisten = \"127.0.0.1:0\"\n\
             [mqtt]\nhost = \"{host}\"\nport = {port}\n",
            dir.path().join("data")
        ),
    )
    .expect("write config");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let statuses = rt.block_on(async {
        let mut options = rumqttc::MqttOptions::new(format!("watch-{device}"), host, port);
        options.set_keep_alive(Duration::from_secs(5));
        let (client, mut eventloop) = rumqttc::AsyncClient::new(options, 64);
        client
            .subscribe(
                format!("dockline/v1/dc-bye/{device}/status"),
                rumqttc::QoS::AtLeastOnce,
            )
            .await
            .expect("subscribe");
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok(event) = eventloop.poll().await {
                if let rumqttc::Event::Incoming(rumqttc::Packet::Publish(p)) = event {
                    let _ = tx.send(p.payload.to_vec());
                }
            }
        });
        let mut child = Running(
            Command::new(BIN)
                .arg("-c")
                .arg(&path)
                .env_remove("RUST_LOG")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn"),
        );
        let mut seen: Vec<dockline_protocol::Status> = Vec::new();
        let until = |seen: &Vec<dockline_protocol::Status>, birth: bool| {
            seen.iter().any(|s| match &s.kind {
                dockline_protocol::StatusKind::Birth { .. } => birth,
                dockline_protocol::StatusKind::Death { graceful } => !birth && *graceful,
                _ => false,
            })
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while !until(&seen, true) {
            let payload = tokio::time::timeout_at(deadline, rx.recv())
                .await
                .expect("a birth within 20 s")
                .expect("watcher alive");
            seen.push(dockline_protocol::codec::decode(&payload).expect("status"));
        }
        let kill = Command::new("kill")
            .args(["-TERM", &child.0.id().to_string()])
            .status()
            .expect("kill");
        assert!(kill.success());
        let status = child.0.wait().expect("wait");
        assert!(status.success(), "clean stop: {status}");
        // Anything the broker still sends (a last will) arrives within the
        // keep-alive-free window of a closed socket: well under 2 s.
        let quiet = tokio::time::Instant::now() + Duration::from_secs(2);
        while let Ok(Some(payload)) = tokio::time::timeout_at(quiet, rx.recv()).await {
            seen.push(dockline_protocol::codec::decode(&payload).expect("status"));
        }
        seen
    });
    let kinds: Vec<String> = statuses.iter().map(|s| format!("{:?}", s.kind)).collect();
    assert!(until_graceful(&statuses), "no graceful death: {kinds:?}");
    let last = statuses.last().expect("statuses");
    assert!(
        matches!(
            last.kind,
            dockline_protocol::StatusKind::Death { graceful: true }
        ),
        "the last status must be the goodbye, not a last will: {kinds:?}"
    );
}

fn until_graceful(seen: &[dockline_protocol::Status]) -> bool {
    seen.iter().any(|s| {
        matches!(
            s.kind,
            dockline_protocol::StatusKind::Death { graceful: true }
        )
    })
}
