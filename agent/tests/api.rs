//! The local API as a handheld app sees it: 201 only after commit, clear errors.

mod support;

use serde_json::{Value, json};
use support::{start_agent, start_agent_api, start_agent_with};

#[tokio::test]
async fn posted_event_is_committed_and_visible() {
    let agent = start_agent().await;
    let http = agent.http();
    let res = http
        .post(agent.url("/v1/events"))
        .json(&json!({"detail": {"picked": {"item": "09506000134352", "quantity": 2}}, "refs": {"order": "SO-9"}}))
        .send()
        .await
        .expect("post");
    assert_eq!(res.status(), 201);
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["seq"], 1);
    let id = body["event_id"].as_str().expect("event id").to_string();

    let status: Value = http
        .get(agent.url("/v1/status"))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(status["queued"], 1);
    assert_eq!(status["mqtt_connected"], false);

    let receipt: Value = http
        .get(agent.url(&format!("/v1/events/{id}")))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(receipt["state"], "queued");
    assert_eq!(receipt["kind"], "picked");
    agent.stop().await;
}

#[tokio::test]
async fn bad_requests_get_clear_errors_and_the_agent_keeps_serving() {
    let agent = start_agent().await;
    let http = agent.http();
    for (body, expect) in [
        ("{not json", "invalid event JSON"),
        (r#"{"detail": {"pickd": {}}}"#, "unknown variant `pickd`"),
        (
            r#"{"detail": {"picked": {"item": "x"}}}"#,
            "missing field `qty`",
        ),
    ] {
        let res = http
            .post(agent.url("/v1/events"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("post");
        assert_eq!(res.status(), 400, "{body}");
        let err: Value = res.json().await.expect("json");
        let text = err["error"].as_str().expect("error text");
        assert!(text.contains(expect), "{text}");
    }
    let long = "x".repeat(300);
    let res = http
        .post(agent.url("/v1/events"))
        .json(&json!({"detail": {"loaded": {"vehicle": long}}}))
        .send()
        .await
        .expect("post");
    assert_eq!(res.status(), 422);
    let res = http
        .get(agent.url("/v1/events/not-an-id"))
        .send()
        .await
        .expect("get");
    assert_eq!(res.status(), 400);
    let res = http
        .get(agent.url("/v1/events?state=lost"))
        .send()
        .await
        .expect("get");
    assert_eq!(res.status(), 400);
    // Still serving, and nothing was stored by the bad requests.
    let status: Value = http
        .get(agent.url("/v1/status"))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(status["queued"], 0);
    agent.stop().await;
}

#[test]
fn broken_config_file_gives_one_clear_line_and_exit_code() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("agent.toml");
    std::fs::write(&path, "site = \"dc\"\ndevice = \"hh/1\"\n").expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dockline-agent"))
        .arg("--config")
        .arg(&path)
        .output()
        .expect("run agent");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("agent.toml") && stderr.contains("device id \"hh/1\" is not valid"),
        "{stderr}"
    );

    std::fs::write(
        &path,
        "site = \"dc\"\ndevice = \"hh-1\"\n[mqtt]\nprot = 1883\n",
    )
    .expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dockline-agent"))
        .arg("--config")
        .arg(&path)
        .output()
        .expect("run agent");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unknown field `prot`"), "{stderr}");
}

#[test]
fn example_config_loads() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("agent.example.toml");
    let config: dockline_agent::Config =
        dockline_host::config::load(Some(&path), Vec::<(String, String)>::new())
            .expect("example config is valid");
    config.check().expect("example config is consistent");
    assert_eq!(config.device.as_str(), "hh-01");
    let load_cell = config
        .devices
        .iter()
        .find(|d| d.protocol == dockline_agent::devices::Protocol::Nau7802)
        .and_then(|d| d.load_cell.as_ref())
        .expect("the example shows an I2C load cell");
    assert_eq!(load_cell.address, 0x2A);
}

/// With the budget full of proofs of delivery, a new one is refused with 507
/// and a message that says what to do; nothing already accepted is lost.
#[tokio::test]
async fn full_outbox_refuses_must_deliver_with_507() {
    let agent = start_agent_with("[outbox]\nbudget_bytes = 3000\nmin_free_bytes = 0\n").await;
    let http = agent.http();
    let mut accepted = 0;
    let refused = loop {
        let res = http
            .post(agent.url("/v1/events"))
            .json(&json!({"detail": {"delivered": {"received_by": "R. Receiver", "pieces": 2}}, "refs": {"order": "SO-7", "stop": "STOP-1"}}))
            .send()
            .await
            .expect("post");
        if res.status() == 201 {
            accepted += 1;
            assert!(accepted < 200, "a 3000-byte budget must fill up");
            continue;
        }
        break res;
    };
    assert_eq!(refused.status(), 507);
    let body: Value = refused.json().await.expect("json");
    let message = body.to_string();
    assert!(
        message.contains("budget_bytes") && message.contains("NOT stored"),
        "{message}"
    );
    let status: Value = http
        .get(agent.url("/v1/status"))
        .send()
        .await
        .expect("status")
        .json()
        .await
        .expect("json");
    assert_eq!(status["queued"].as_u64(), Some(accepted), "{status}");
    agent.stop().await;
}

const TOKEN: &str = "handheld-token-5f2c9a71";

/// With `[api] token` set, every route (unknown ones too) needs the bearer
/// token: without it or with a wrong one, 401 with a JSON error that says
/// what to send, and nothing is stored.
#[tokio::test]
async fn with_a_token_every_route_needs_it() {
    let agent = start_agent_api(&format!("token = \"{TOKEN}\"\n"), "").await;
    let http = agent.http();
    let event = json!({"detail": {"picked": {"item": "09506000134352", "quantity": 1}}, "refs": {"order": "SO-1"}});
    for (method, path) in [
        ("GET", "/v1/status"),
        ("GET", "/v1/events"),
        ("POST", "/v1/events"),
        ("GET", "/v1/tasks"),
        ("POST", "/v1/tasks"),
        ("GET", "/v1/nothing-here"),
    ] {
        for auth in [None, Some("Bearer wrong-token-0000000"), Some(TOKEN)] {
            let mut req = http.request(method.parse().expect("method"), agent.url(path));
            if method == "POST" {
                req = req.json(&event);
            }
            if let Some(a) = auth {
                req = req.header("authorization", a);
            }
            let res = req.send().await.expect("send");
            assert_eq!(res.status(), 401, "{method} {path} with {auth:?}");
            assert_eq!(
                res.headers().get("www-authenticate").map(|v| v.as_bytes()),
                Some(&b"Bearer"[..])
            );
            let err: Value = res.json().await.expect("json error");
            let text = err["error"].as_str().expect("error text");
            assert!(text.contains("Authorization: Bearer"), "{text}");
            assert!(!text.contains(TOKEN), "the token is never echoed: {text}");
        }
    }
    let bearer = format!("Bearer {TOKEN}");
    let res = http
        .post(agent.url("/v1/events"))
        .header("authorization", &bearer)
        .json(&event)
        .send()
        .await
        .expect("post");
    assert_eq!(res.status(), 201);
    let status: Value = http
        .get(agent.url("/v1/status"))
        .header("authorization", &bearer)
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(status["queued"], 1, "only the authorised event was stored");
    assert_eq!(status["commands"]["accepted"], 0);
    assert_eq!(status["commands"]["refused"], 0);
    agent.stop().await;
}

/// Every request body is capped: 413 above 64 KiB, the agent keeps serving.
#[tokio::test]
async fn oversized_request_bodies_are_refused() {
    let agent = start_agent().await;
    let http = agent.http();
    let big = "x".repeat(dockline_agent::api::MAX_BODY_BYTES + 1);
    for path in ["/v1/events", "/v1/tasks"] {
        let res = http
            .post(agent.url(path))
            .header("content-type", "application/json")
            .body(big.clone())
            .send()
            .await
            .expect("post");
        assert_eq!(res.status(), 413, "{path}");
    }
    let res = http.get(agent.url("/v1/status")).send().await.expect("get");
    assert_eq!(res.status(), 200);
    agent.stop().await;
}

/// A short token, or a network-facing API without one, is refused at start
/// with a line that says what to do; the token is never printed.
#[test]
fn weak_or_missing_tokens_are_refused_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("agent.toml");
    for (api, env, expect) in [
        ("listen = \"0.0.0.0:0\"\n", None, "api.token is not set"),
        ("", Some("short"), "shorter than 16"),
    ] {
        std::fs::write(
            &path,
            format!("site = \"dc\"\ndevice = \"hh-1\"\n[api]\n{api}"),
        )
        .expect("write");
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_dockline-agent"));
        cmd.arg("--config").arg(&path).current_dir(dir.path());
        if let Some(token) = env {
            cmd.env("DOCKLINE_API_TOKEN", token);
        }
        let out = cmd.output().expect("run agent");
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(expect), "{expect}: {stderr}");
        if let Some(token) = env {
            assert!(!stderr.contains(&format!("\"{token}\"")), "{stderr}");
        }
    }
}
