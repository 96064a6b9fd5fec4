//! Access control of the collector's HTTP API, through a real server on a
//! loopback port: no token → 401; a viewer reads but cannot replay (403);
//! an operator can; passwords (argon2) log in to a session token; a
//! cross-origin change is refused even with a valid token; the open
//! (no credentials) mode answers only loopback host names and is refused on
//! a network address; `/metrics` speaks OpenMetrics text; `/healthz` and
//! `/readyz` need nothing. Failed logins back off per user and per client
//! address (429 + `Retry-After`), a user's sessions are capped without
//! touching another user's, and token answers are `Cache-Control: no-store`.

use std::net::SocketAddr;
use std::sync::Arc;

use dockline_collector::http::ApiConfig;
use dockline_collector::http::auth::{self, Auth, AuthConfigError, Role, TokenConfig, UserConfig};
use dockline_collector::http::{self as api, ApiState};
use dockline_collector::inbox::{Inbox, InboxHandle};
use reqwest::StatusCode;
use tokio::sync::Notify;

const VIEWER: &str = "viewer-token-0123456789abcdef";
const OPERATOR: &str = "operator-token-0123456789abcdef";

struct Server {
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

async fn serve(auth: Auth) -> Server {
    let dir = tempfile::tempdir().expect("tempdir");
    let inbox = Inbox::open(&dir.path().join("inbox.db")).expect("inbox");
    let state = ApiState {
        inbox: InboxHandle::new(inbox),
        wake: Arc::new(Notify::new()),
        delivery: None,
        auth: Arc::new(auth),
        ingest: None,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    // With the peer address, as the collector serves: the login backoff
    // counts per client address too.
    let router = api::router(state).into_make_service_with_connect_info::<SocketAddr>();
    tokio::spawn(async move { axum::serve(listener, router).await });
    Server { addr, _dir: dir }
}

fn config(password_hash: &str) -> ApiConfig {
    ApiConfig {
        tokens: vec![
            TokenConfig {
                role: Some(Role::Viewer),
                name: Some("wallboard".into()),
                token: Some(VIEWER.into()),
                ..TokenConfig::default()
            },
            TokenConfig {
                role: Some(Role::Operator),
                name: Some("ops".into()),
                token_sha256: Some(sha256_hex(OPERATOR)),
                ..TokenConfig::default()
            },
        ],
        users: vec![UserConfig {
            name: "alice".into(),
            role: Role::Operator,
            password_hash: Some(password_hash.into()),
            password_hash_env: None,
        }],
        ..ApiConfig::default()
    }
}

fn sha256_hex(s: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().expect("addr")
}

#[tokio::test]
async fn tokens_roles_passwords_and_csrf() {
    let hash = auth::hash_password("correct horse battery").expect("hash");
    let auth = Auth::from_config(&config(&hash), loopback()).expect("auth config");
    let server = serve(auth).await;
    let url = |p: &str| format!("http://{}{p}", server.addr);
    let http = reqwest::Client::new();

    // Public: liveness, readiness (no delivery here, so not ready) and the
    // dashboard's page shells, which hold no data.
    let r = http.get(url("/ui/devices")).send().await.expect("ui");
    assert_eq!(r.status(), StatusCode::OK);
    // No framing (clickjacking of Replay), only our own script and style.
    assert_eq!(r.headers()["x-frame-options"], "DENY");
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .expect("csp");
    assert!(csp.contains("frame-ancestors 'none'") && csp.contains("default-src 'self'"));
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    let r = http.get(url("/healthz")).send().await.expect("healthz");
    assert_eq!(r.status(), StatusCode::OK);
    let r = http.get(url("/readyz")).send().await.expect("readyz");
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        r.text()
            .await
            .expect("body")
            .contains("delivery is not running")
    );

    // No token: 401 with a message naming the fix.
    // The dashboard's data included: its pages are static shells, every
    // number on them comes from these.
    for path in [
        "/dlq",
        "/v1/stats",
        "/metrics",
        "/v1/lanes",
        "/v1/devices",
        "/v1/orders",
        "/v1/orders/timeline?lane=order:SO-1",
        "/v1/stuck",
        "/v1/exceptions",
        "/v1/dead-letters",
    ] {
        let r = http.get(url(path)).send().await.expect("get");
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{path}");
        assert!(r.headers().contains_key("www-authenticate"));
        assert!(
            r.text()
                .await
                .expect("body")
                .contains("Authorization: Bearer")
        );
    }
    let r = http
        .get(url("/dlq"))
        .bearer_auth("not-a-token")
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // A viewer reads, but cannot replay or discard.
    let r = http
        .get(url("/dlq"))
        .bearer_auth(VIEWER)
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), StatusCode::OK);
    let who: serde_json::Value = http
        .get(url("/v1/whoami"))
        .bearer_auth(VIEWER)
        .send()
        .await
        .expect("whoami")
        .json()
        .await
        .expect("json");
    assert_eq!(who["role"], "viewer");
    assert_eq!(who["who"], "wallboard");
    for path in ["/dlq/1/replay", "/dlq/1/discard"] {
        let r = http
            .post(url(path))
            .bearer_auth(VIEWER)
            .send()
            .await
            .expect("post");
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{path}");
        assert!(r.text().await.expect("body").contains("operator role"));
    }

    // An operator gets through to the handler (no such dead letter: 404).
    let r = http
        .post(url("/dlq/1/replay"))
        .bearer_auth(OPERATOR)
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    // Prometheus text for a viewer.
    let r = http
        .get(url("/metrics"))
        .bearer_auth(VIEWER)
        .send()
        .await
        .expect("metrics");
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .expect("ct")
            .starts_with("application/openmetrics-text; version=1.0.0")
    );
    let text = r.text().await.expect("body");
    assert!(text.contains("# TYPE dockline_inbox_pending_events gauge"));
    assert!(
        text.contains("\ndockline_inbox_pending_events 0\n"),
        "{text}"
    );
    assert!(text.ends_with("# EOF\n"), "{text}");
    assert!(text.contains("dockline_inbox_pending_events 0"));

    // Password login: wrong password refused, right one gives a session token.
    let r = http
        .post(url("/v1/login"))
        .json(&serde_json::json!({"username": "alice", "password": "wrong"}))
        .send()
        .await
        .expect("login");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = http
        .post(url("/v1/login"))
        .json(&serde_json::json!({"username": "mallory", "password": "x"}))
        .send()
        .await
        .expect("login");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let session: serde_json::Value = http
        .post(url("/v1/login"))
        .json(&serde_json::json!({"username": "alice", "password": "correct horse battery"}))
        .send()
        .await
        .expect("login")
        .json()
        .await
        .expect("json");
    let token = session["token"].as_str().expect("token").to_string();
    assert_eq!(session["role"], "operator");
    let r = http
        .post(url("/dlq/1/replay"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("post");
    assert_eq!(
        r.status(),
        StatusCode::NOT_FOUND,
        "session token is an operator"
    );

    // CSRF: a change sent from another origin is refused, token or not.
    let r = http
        .post(url("/dlq/1/replay"))
        .bearer_auth(OPERATOR)
        .header("origin", "http://evil.example")
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = http
        .post(url("/dlq/1/replay"))
        .bearer_auth(OPERATOR)
        .header("origin", format!("http://{}", server.addr))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), StatusCode::NOT_FOUND, "same origin passes");

    // Logout ends the session.
    let r = http
        .post(url("/v1/logout"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("logout");
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = http
        .get(url("/dlq"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // Oversize bodies are refused before any handler.
    let big = "x".repeat(api::MAX_BODY + 1);
    let r = http
        .post(url("/v1/login"))
        .header("content-type", "application/json")
        .body(format!("{{\"username\":\"{big}\",\"password\":\"\"}}"))
        .send()
        .await
        .expect("login");
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
}

/// A JSON client whose connections come from `from` (any 127/8 address is
/// this host's loopback), so one test plays several client addresses.
fn client_from(from: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(Some(from.parse().expect("ip")))
        .build()
        .expect("client")
}

async fn login(
    http: &reqwest::Client,
    addr: SocketAddr,
    user: &str,
    password: &str,
) -> reqwest::Response {
    let r = http
        .post(format!("http://{addr}/v1/login"))
        .json(&serde_json::json!({"username": user, "password": password}))
        .send()
        .await
        .expect("login");
    assert_eq!(
        r.headers().get("cache-control").map(|v| v.to_str().ok()),
        Some(Some("no-store")),
        "every login answer is no-store ({user}, {})",
        r.status()
    );
    r
}

async fn token_of(r: reqwest::Response) -> String {
    assert_eq!(r.status(), StatusCode::OK);
    let body: serde_json::Value = r.json().await.expect("json");
    body["token"].as_str().expect("token").to_string()
}

#[tokio::test]
async fn failed_logins_back_off_per_user_and_address_and_sessions_are_capped_per_user() {
    use dockline_collector::http::login_limit::FREE_FAILURES;
    const ALICE: &str = "correct horse battery";
    const BOB: &str = "bob's own passphrase";
    let mut api = config(&auth::hash_password(ALICE).expect("hash"));
    api.users.push(UserConfig {
        name: "bob".into(),
        role: Role::Viewer,
        password_hash: Some(auth::hash_password(BOB).expect("hash")),
        password_hash_env: None,
    });
    let server = serve(Auth::from_config(&api, loopback()).expect("auth")).await;
    let addr = server.addr;
    let guesser = client_from("127.0.0.1");
    let other = client_from("127.0.0.2");

    // A guesser's first failures are plain 401s; then it must wait, and
    // even the right password is not checked meanwhile.
    for _ in 0..=FREE_FAILURES {
        let r = login(&guesser, addr, "alice", "guess").await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    let r = login(&guesser, addr, "alice", ALICE).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.headers()["retry-after"], "1");
    assert!(
        r.text()
            .await
            .expect("body")
            .contains("too many failed logins for this user name")
    );
    // Per user: alice from another address waits too ...
    let r = login(&other, addr, "alice", ALICE).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    // ... while bob from that address logs in,
    let bob = token_of(login(&other, addr, "bob", BOB).await).await;
    // and per address: the guesser's address waits for every user name.
    let r = login(&guesser, addr, "bob", BOB).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(
        r.text()
            .await
            .expect("body")
            .contains("too many failed logins for this client address")
    );

    // The wait ends; alice logs in from her own address.
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    let first = token_of(login(&other, addr, "alice", ALICE).await).await;
    let whoami = |token: String| {
        let http = other.clone();
        async move {
            http.get(format!("http://{addr}/v1/whoami"))
                .bearer_auth(token)
                .send()
                .await
                .expect("whoami")
                .status()
        }
    };
    assert_eq!(whoami(first.clone()).await, StatusCode::OK);

    // Alice logs in MAX_SESSIONS_PER_USER more times: her oldest session
    // ends, bob's does not.
    let mut last = String::new();
    for _ in 0..auth::MAX_SESSIONS_PER_USER {
        last = token_of(login(&other, addr, "alice", ALICE).await).await;
    }
    assert_eq!(whoami(first).await, StatusCode::UNAUTHORIZED);
    assert_eq!(whoami(last).await, StatusCode::OK);
    assert_eq!(whoami(bob.clone()).await, StatusCode::OK);

    // Counted.
    let text = other
        .get(format!("http://{addr}/metrics"))
        .bearer_auth(&bob)
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        text.contains(&format!(
            "dockline_login_failed_total {}",
            FREE_FAILURES + 1
        )),
        "{text}"
    );
    assert!(
        text.contains("dockline_login_blocked_total{by=\"user\"} 2"),
        "{text}"
    );
    assert!(
        text.contains("dockline_login_blocked_total{by=\"address\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("dockline_sessions_ended_by_cap_total 1"),
        "{text}"
    );
}

/// Guesses sent all at once queue for the two password checks; those that
/// wait behind the failures are refused unchecked, so a burst gets no more
/// guesses than a patient guesser.
#[tokio::test]
async fn concurrent_guesses_do_not_slip_past_the_backoff() {
    use dockline_collector::http::login_limit::FREE_FAILURES;
    let api = config(&auth::hash_password("correct horse battery").expect("hash"));
    let server = serve(Auth::from_config(&api, loopback()).expect("auth")).await;
    let http = client_from("127.0.0.3");
    let guesses: Vec<_> = (0..30)
        .map(|i| {
            let http = http.clone();
            let addr = server.addr;
            tokio::spawn(async move {
                login(&http, addr, "alice", &format!("guess {i}"))
                    .await
                    .status()
            })
        })
        .collect();
    let mut checked = 0;
    let mut refused = 0;
    for g in guesses {
        match g.await.expect("task") {
            StatusCode::UNAUTHORIZED => checked += 1,
            StatusCode::TOO_MANY_REQUESTS => refused += 1,
            other => panic!("unexpected {other}"),
        }
    }
    // The sixth failure blocks; besides it, only the one check already
    // running beside it (two at a time) can still be answered.
    let free = FREE_FAILURES as usize;
    assert!(
        (free + 1..=free + 2).contains(&checked),
        "{checked} guesses checked, {refused} refused"
    );
    assert_eq!(refused, 30 - checked);
}

#[tokio::test]
async fn open_api_is_loopback_only() {
    // No credentials on a network address: refused at start.
    let err = Auth::from_config(&ApiConfig::default(), "0.0.0.0:8080".parse().expect("addr"))
        .expect_err("must refuse");
    assert!(matches!(err, AuthConfigError::OpenOnNetwork(_)));
    assert!(err.to_string().contains("listen on 127.0.0.1"), "{err}");

    // On loopback it is open, but only to loopback host names (DNS rebinding).
    let auth = Auth::from_config(&ApiConfig::default(), loopback()).expect("open");
    assert!(auth.is_open());
    let server = serve(auth).await;
    let http = reqwest::Client::new();
    let r = http
        .get(format!("http://{}/dlq", server.addr))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), StatusCode::OK);
    let r = http
        .get(format!("http://{}/dlq", server.addr))
        .header("host", "attacker.example")
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = http
        .post(format!("http://{}/dlq/1/replay", server.addr))
        .header("origin", "http://attacker.example")
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
}

#[test]
fn broken_credentials_name_the_key_and_the_fix() {
    let mut api = ApiConfig {
        tokens: vec![TokenConfig {
            role: Some(Role::Viewer),
            token_env: Some("DOCKLINE_TEST_SURELY_UNSET_TOKEN".into()),
            ..TokenConfig::default()
        }],
        ..ApiConfig::default()
    };
    let err = Auth::from_config(&api, loopback()).expect_err("unset env");
    assert!(err.to_string().contains("api.tokens[0]"), "{err}");
    assert!(
        err.to_string().contains("DOCKLINE_TEST_SURELY_UNSET_TOKEN"),
        "{err}"
    );

    api.tokens = vec![TokenConfig {
        role: Some(Role::Viewer),
        token: Some("short".into()),
        ..TokenConfig::default()
    }];
    let err = Auth::from_config(&api, loopback()).expect_err("short token");
    assert!(err.to_string().contains("openssl rand"), "{err}");

    api.tokens = Vec::new();
    api.users = vec![UserConfig {
        name: "bob".into(),
        role: Role::Viewer,
        password_hash: Some("plaintext-password".into()),
        password_hash_env: None,
    }];
    let err = Auth::from_config(&api, loopback()).expect_err("not a hash");
    assert!(err.to_string().contains("hash-password"), "{err}");
    // Secrets never show in Debug output.
    let t = TokenConfig {
        token: Some(VIEWER.into()),
        ..TokenConfig::default()
    };
    assert!(!format!("{t:?}").contains(VIEWER));
}
