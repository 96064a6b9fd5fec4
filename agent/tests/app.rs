//! The handheld app as the browser loads it: the page sets the app cookie,
//! the cookie (and only it, from the agent's own origin) authorises the
//! app's API calls, every answer carries the security headers, and the
//! script parses (with Node, when installed).

mod support;

use serde_json::{Value, json};
use support::start_agent;

#[tokio::test]
async fn the_app_page_authorises_its_own_calls_only() {
    let agent = start_agent().await;
    let bare = reqwest::Client::new();
    let res = bare.get(agent.url("/app/")).send().await.expect("get");
    assert_eq!(res.status(), 200);
    let csp = res.headers()["content-security-policy"]
        .to_str()
        .expect("csp")
        .to_string();
    assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"));
    assert_eq!(res.headers()["x-frame-options"], "DENY");
    let cookie = res.headers()["set-cookie"]
        .to_str()
        .expect("cookie")
        .to_string();
    assert!(cookie.starts_with("dockline_app="), "{cookie}");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let token = agent.token.clone().expect("token");
    assert!(!cookie.contains(&token), "the cookie is not the token");
    let html = res.text().await.expect("html");
    for id in [
        "s-signin",
        "s-pick",
        "s-deliver",
        "pod-sig",
        "pod-photo",
        "s-receipts",
    ] {
        assert!(html.contains(&format!("id=\"{id}\"")), "{id}");
    }
    assert!(html.contains("capture=\"environment\""));
    for (path, ct) in [
        ("/app/app.js", "text/javascript"),
        ("/app/app.css", "text/css"),
    ] {
        let res = bare.get(agent.url(path)).send().await.expect("get");
        assert_eq!(res.status(), 200, "{path}");
        assert!(
            res.headers()["content-type"]
                .to_str()
                .expect("ct")
                .starts_with(ct)
        );
    }
    let redirect = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
        .get(agent.url("/app"))
        .send()
        .await
        .expect("get");
    assert_eq!(redirect.status(), 303);

    let pair = cookie.split(';').next().expect("pair").to_string();
    let own = format!("http://{}", agent.addr);
    // The app's calls: cookie, own origin, JSON, a key.
    let res = bare
        .post(agent.url("/v1/events"))
        .header("cookie", &pair)
        .header("origin", &own)
        .header("idempotency-key", "app-key-1")
        .json(&json!({"detail": {"loaded": {"vehicle": "TRK-7"}}, "refs": {"sscc": "340123450000000017"}}))
        .send()
        .await
        .expect("post");
    assert_eq!(res.status(), 201);
    let res = bare
        .get(agent.url("/v1/tasks"))
        .header("cookie", &pair)
        .send()
        .await
        .expect("get");
    assert_eq!(res.status(), 200);
    // The same cookie from a foreign page: refused (403 before the cookie
    // is even looked at), and a forged cookie is no token.
    let res = bare
        .post(agent.url("/v1/events"))
        .header("cookie", &pair)
        .header("origin", "https://evil.example")
        .json(&json!({"detail": {"loaded": {"vehicle": "TRK-7"}}}))
        .send()
        .await
        .expect("post");
    assert_eq!(res.status(), 403);
    let res = bare
        .get(agent.url("/v1/tasks"))
        .header("cookie", "dockline_app=0000")
        .send()
        .await
        .expect("get");
    assert_eq!(res.status(), 401);
    let status: Value = agent
        .http()
        .get(agent.url("/v1/status"))
        .send()
        .await
        .expect("status")
        .json()
        .await
        .expect("json");
    assert_eq!(status["queued"], 1);
    agent.stop().await;
}

/// The script is valid JavaScript (checked with `node --check` when Node is
/// installed; a syntax error would leave the handheld with a dead page).
#[test]
fn the_app_script_parses() {
    let has_node = std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_node {
        println!("SKIP the_app_script_parses: node is not installed");
        return;
    }
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/app/assets/app.js");
    let out = std::process::Command::new("node")
        .arg("--check")
        .arg(&script)
        .output()
        .expect("run node");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
