//! The local API's defences, one test each: replayed idempotency keys,
//! cross-origin requests, wrong content types, foreign `Host`s, missing
//! tokens, slow headers and connection floods.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::{start_agent, start_agent_api, start_agent_in};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn picked(order: &str) -> Value {
    json!({"detail": {"picked": {"item": "09506000134352", "quantity": 2}}, "refs": {"order": order}})
}

async fn status(agent: &support::Agent) -> Value {
    agent
        .http()
        .get(agent.url("/v1/status"))
        .send()
        .await
        .expect("status")
        .json()
        .await
        .expect("json")
}

/// The same key and body: 201 then 200 with the same event id, one event
/// stored; also after the agent restarts on the same outbox (the key was
/// committed with the event). The same key with another body: 422.
#[tokio::test]
async fn replayed_idempotency_key_answers_the_first_event_and_stores_nothing_twice() {
    let dir = tempfile::tempdir().expect("tempdir");
    let agent = start_agent_in(dir.path(), "", "").await;
    let http = agent.http();
    let post = |body: Value, key: &'static str| {
        http.post(agent.url("/v1/events"))
            .header("idempotency-key", key)
            .json(&body)
            .send()
    };
    let first = post(picked("SO-1"), "0190f0aa-retry-1")
        .await
        .expect("post");
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.expect("json");
    assert_eq!(first["replayed"], false);
    // The app's retry re-serialises the body: key order differs, same event.
    let again: Value = serde_json::from_str(
        r#"{"refs": {"order": "SO-1"}, "detail": {"picked": {"quantity": 2, "item": "09506000134352"}}}"#,
    )
    .expect("json");
    let second = post(again, "0190f0aa-retry-1").await.expect("post");
    assert_eq!(second.status(), 200);
    let second: Value = second.json().await.expect("json");
    assert_eq!(second["event_id"], first["event_id"]);
    assert_eq!(second["seq"], first["seq"]);
    assert_eq!(second["replayed"], true);
    assert_eq!(second["state"], "queued");

    let other = post(picked("SO-2"), "0190f0aa-retry-1")
        .await
        .expect("post");
    assert_eq!(other.status(), 422);
    let err: Value = other.json().await.expect("json");
    assert!(
        err["error"]
            .as_str()
            .is_some_and(|e| e.contains("Idempotency-Key")),
        "{err}"
    );
    let bad_key = http
        .post(agent.url("/v1/events"))
        .header("idempotency-key", "has spaces in it")
        .json(&picked("SO-3"))
        .send()
        .await
        .expect("post");
    assert_eq!(bad_key.status(), 400);
    // Many retries at once, all in one group commit: still one event.
    let racing: Vec<_> = (0..16).map(|_| post(picked("SO-4"), "race-key")).collect();
    let mut ids = std::collections::BTreeSet::new();
    for r in futures_join(racing).await {
        let r = r.expect("post");
        assert!(r.status() == 201 || r.status() == 200, "{}", r.status());
        let v: Value = r.json().await.expect("json");
        ids.insert(v["event_id"].as_str().expect("id").to_string());
    }
    assert_eq!(ids.len(), 1, "16 concurrent retries booked {ids:?}");
    assert_eq!(status(&agent).await["queued"], 2);
    drop(http);
    agent.stop().await;

    // The agent comes back on the same outbox: the key is still there.
    let agent = start_agent_in(dir.path(), "", "").await;
    let res = agent
        .http()
        .post(agent.url("/v1/events"))
        .header("idempotency-key", "0190f0aa-retry-1")
        .json(&picked("SO-1"))
        .send()
        .await
        .expect("post");
    assert_eq!(res.status(), 200);
    let v: Value = res.json().await.expect("json");
    assert_eq!(v["event_id"], first["event_id"]);
    assert_eq!(status(&agent).await["queued"], 2);
    agent.stop().await;
}

async fn futures_join<F: std::future::Future + Send + 'static>(futs: Vec<F>) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futs.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.expect("join"));
    }
    out
}

/// Pick lists: the same key and body is answered 200 with the first answer,
/// another body under the same key 422.
#[tokio::test]
async fn replayed_idempotency_key_on_tasks() {
    let agent = start_agent().await;
    let http = agent.http();
    let list = json!({"order": "SO-77", "lines": [{"item": "09506000134352", "quantity": 2}]});
    let send = |body: &Value| {
        http.post(agent.url("/v1/tasks"))
            .header("idempotency-key", "task-key-1")
            .json(body)
            .send()
    };
    assert_eq!(send(&list).await.expect("post").status(), 201);
    let again = send(&list).await.expect("post");
    assert_eq!(again.status(), 200);
    let v: Value = again.json().await.expect("json");
    assert_eq!(v["replaced"], false, "the first answer, not a replacement");
    let other = json!({"order": "SO-78", "lines": [{"item": "09506000134352", "quantity": 1}]});
    assert_eq!(send(&other).await.expect("post").status(), 422);
    agent.stop().await;
}

/// A page on another origin cannot post (403, nothing stored), not even
/// with `no-cors`'s `text/plain`; an allow-listed origin gets CORS answers.
#[tokio::test]
async fn cross_origin_requests_are_refused_and_allowed_origins_get_cors() {
    let agent = start_agent_api("allowed_origins = [\"https://app.example\"]\n", "").await;
    let http = agent.http();
    for (ct, body) in [
        ("application/json", picked("SO-1").to_string()),
        ("text/plain;charset=UTF-8", picked("SO-1").to_string()),
    ] {
        let res = http
            .post(agent.url("/v1/events"))
            .header("origin", "https://evil.example")
            .header("content-type", ct)
            .body(body)
            .send()
            .await
            .expect("post");
        assert_eq!(res.status(), 403, "{ct}");
        assert!(res.headers().get("access-control-allow-origin").is_none());
        let err: Value = res.json().await.expect("json");
        assert!(
            err["error"]
                .as_str()
                .is_some_and(|e| e.contains("allowed_origins"))
        );
    }
    // A cross-site fetch that hides its origin still says so.
    let res = http
        .get(agent.url("/v1/events"))
        .header("sec-fetch-site", "cross-site")
        .send()
        .await
        .expect("get");
    assert_eq!(res.status(), 403);
    // A link from elsewhere may open the app's page (no data in it).
    let res = http
        .get(agent.url("/app/"))
        .header("sec-fetch-site", "cross-site")
        .send()
        .await
        .expect("get");
    assert_eq!(res.status(), 200);
    // The agent's own origin is fine.
    let res = http
        .post(agent.url("/v1/events"))
        .header("origin", format!("http://{}", agent.addr))
        .json(&picked("SO-2"))
        .send()
        .await
        .expect("post");
    assert_eq!(res.status(), 201);
    // The allowed origin: a preflight, then the request, with CORS headers.
    let pre = reqwest::Client::new()
        .request(reqwest::Method::OPTIONS, agent.url("/v1/events"))
        .header("origin", "https://app.example")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "content-type, idempotency-key",
        )
        .send()
        .await
        .expect("preflight");
    assert_eq!(pre.status(), 204);
    assert_eq!(
        pre.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    let allowed = pre.headers()["access-control-allow-headers"]
        .to_str()
        .expect("text");
    assert!(allowed.contains("idempotency-key") && allowed.contains("authorization"));
    let res = http
        .post(agent.url("/v1/events"))
        .header("origin", "https://app.example")
        .json(&picked("SO-3"))
        .send()
        .await
        .expect("post");
    assert_eq!(res.status(), 201);
    assert_eq!(
        res.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    let s = status(&agent).await;
    assert_eq!(s["queued"], 2, "only the own and the allowed origin stored");
    assert_eq!(s["api_refusals"]["origin"], 3);
    agent.stop().await;
}

/// A POST that is not `application/json` is refused with 415 and stores
/// nothing.
#[tokio::test]
async fn wrong_content_type_is_refused() {
    let agent = start_agent().await;
    let http = agent.http();
    for ct in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        None,
    ] {
        let mut req = http
            .post(agent.url("/v1/events"))
            .body(picked("SO-1").to_string());
        if let Some(ct) = ct {
            req = req.header("content-type", ct);
        }
        let res = req.send().await.expect("post");
        assert_eq!(res.status(), 415, "{ct:?}");
        let err: Value = res.json().await.expect("json");
        assert!(
            err["error"]
                .as_str()
                .is_some_and(|e| e.contains("application/json"))
        );
    }
    let s = status(&agent).await;
    assert_eq!(s["queued"], 0);
    assert_eq!(s["api_refusals"]["content_type"], 3);
    agent.stop().await;
}

/// A `Host` that is not loopback (DNS rebinding) is refused with 421 before
/// anything is read; names in `allowed_hosts` pass.
#[tokio::test]
async fn foreign_host_is_refused() {
    let agent = start_agent_api("allowed_hosts = [\"hh-07.local\"]\n", "").await;
    let http = agent.http();
    for (host, expect) in [
        ("attacker.example", 421),
        ("attacker.example:7878", 421),
        ("10.1.2.3", 421),
        ("localhost:7878", 200),
        ("127.0.0.1", 200),
        ("[::1]:7878", 200),
        ("hh-07.local:7878", 200),
    ] {
        let res = http
            .get(agent.url("/v1/events"))
            .header("host", host)
            .send()
            .await
            .expect("get");
        assert_eq!(res.status(), expect, "{host}");
    }
    assert_eq!(status(&agent).await["api_refusals"]["host"], 3);
    agent.stop().await;
}

/// Without the token (or with a wrong one) every data route answers 401;
/// the token is made at first start in a 0600 file, the CLI prints it, and
/// the app's cookie from /app/ is honoured only without a foreign origin.
#[tokio::test]
async fn missing_token_is_refused_and_the_token_file_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let agent = start_agent().await;
    let token = agent.token.clone().expect("a token file was made");
    assert_eq!(token.len(), 64);
    let mode = std::fs::metadata(agent.dir.join("api.token"))
        .expect("token file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let bare = reqwest::Client::new();
    for (method, path) in [
        ("GET", "/v1/status"),
        ("GET", "/v1/events"),
        ("POST", "/v1/events"),
        ("GET", "/v1/tasks"),
        ("POST", "/v1/tasks"),
        ("GET", "/v1/nothing-here"),
    ] {
        for auth in [None, Some("Bearer wrong-token-0000000000000000")] {
            let mut req = bare.request(method.parse().expect("method"), agent.url(path));
            if method == "POST" {
                req = req.json(&picked("SO-1"));
            }
            if let Some(a) = auth {
                req = req.header("authorization", a);
            }
            let res = req.send().await.expect("send");
            assert_eq!(res.status(), 401, "{method} {path} {auth:?}");
            let err: Value = res.json().await.expect("json");
            let text = err["error"].as_str().expect("text");
            assert!(text.contains("dockline-agent token"), "{text}");
            assert!(!text.contains(&token));
        }
    }
    assert_eq!(status(&agent).await["queued"], 0);

    // The CLI prints the same token.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dockline-agent"))
        .args(["token", "--data-dir"])
        .arg(&agent.dir)
        .output()
        .expect("run agent token");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), token);
    agent.stop().await;
}

/// A connection that never finishes its headers is closed after
/// `header_timeout_ms`; connections over `max_connections` get 503 at once
/// while the held ones keep their places; the API keeps serving.
#[tokio::test]
async fn slow_headers_are_cut_and_a_connection_flood_is_capped() {
    let agent = start_agent_api("header_timeout_ms = 300\nmax_connections = 4\n", "").await;
    // A slowloris: half a request line, then silence.
    let mut slow = tokio::net::TcpStream::connect(agent.addr)
        .await
        .expect("connect");
    slow.write_all(b"GET /v1/status HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .await
        .expect("write");
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut buf)).await;
    assert!(
        read.is_ok(),
        "the slow connection was not closed within 5 s"
    );

    // Four idle connections take every place; the fifth is told off.
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut c = tokio::net::TcpStream::connect(agent.addr)
            .await
            .expect("connect");
        // Headers trickle in just under the timeout? No: open and idle,
        // which the header timeout also ends; check the cap before that.
        c.write_all(b"G").await.expect("write");
        held.push(c);
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut extra = tokio::net::TcpStream::connect(agent.addr)
        .await
        .expect("connect");
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(2), extra.read_to_string(&mut answer))
        .await
        .expect("answered at once")
        .expect("read");
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("max_connections"), "{answer}");
    drop(held);
    // The held ones time out or close; the API serves again.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let s = status(&agent).await;
    assert!(s["api_refusals"]["connections"].as_u64() >= Some(1), "{s}");
    assert!(s["api_refusals"]["slow_headers"].as_u64() >= Some(1), "{s}");
    agent.stop().await;
}
