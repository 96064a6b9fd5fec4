//! SIGHUP on the built binary: the collector re-reads its config and, with
//! no restart, applies the device registry, the API's tokens and users;
//! a config whose credentials cannot be read is refused and the running
//! one stays. The device part needs a broker
//! (`DOCKLINE_TEST_MQTT_URL=mqtt://127.0.0.1:1883`) and prints a skip line
//! without one; the credentials part always runs.

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use dockline_collector::http::auth::hash_password;
use dockline_protocol::{Channel, DeviceId, SiteId, Topic, codec};
use reqwest::StatusCode;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use support::{BIN, Lines, Running, signal, wait_api_addr};

const OLD_TOKEN: &str = "old-viewer-token-0123456789";
const NEW_TOKEN: &str = "new-viewer-token-9876543210";
const PASSWORD: &str = "correct horse battery";
const SECRET: &str = "whsec_ZG9ja2xpbmUtY2xpLXRlc3Qtc2VjcmV0LTMyYnl0ZXM=";

/// Something unique to this run, for ids on a broker other runs share.
fn unique() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{:x}{:x}", std::process::id(), nanos)
}

/// The broker of `DOCKLINE_TEST_MQTT_URL`, or a dead port (and `None`).
fn broker() -> Option<(String, u16)> {
    let url = std::env::var("DOCKLINE_TEST_MQTT_URL").ok()?;
    let rest = url.strip_prefix("mqtt://").unwrap_or(&url);
    let (host, port) = rest.trim_end_matches('/').rsplit_once(':')?;
    Some((host.to_string(), port.parse().ok()?))
}

/// The config text: `devices` on `site`, `[api]` with `api` (tokens, users).
fn config(
    data: &std::path::Path,
    mqtt: &(String, u16),
    client: &str,
    site: &str,
    devices: &[&str],
    api: &str,
) -> String {
    let mut text = format!(
        "data_dir = {data:?}\n[api]\nlisten = \"127.0.0.1:0\"\n{api}\
         [mqtt]\nhost = {:?}\nport = {}\nclient_id = \"{client}\"\n\
         [erp]\nurl = \"http://127.0.0.1:9/e\"\nsecret = \"{SECRET}\"\n",
        mqtt.0, mqtt.1
    );
    for d in devices {
        text.push_str(&format!("[[devices]]\nid = \"{d}\"\nsite = \"{site}\"\n"));
    }
    text
}

fn token(name: &str, value: &str) -> String {
    format!("[[api.tokens]]\nname = \"{name}\"\nrole = \"viewer\"\ntoken = \"{value}\"\n")
}

/// `GET /v1/stats` with `bearer`: the status and, on 200, the body.
async fn stats(
    http: &reqwest::Client,
    addr: &str,
    bearer: &str,
) -> (StatusCode, serde_json::Value) {
    let r = http
        .get(format!("http://{addr}/v1/stats"))
        .bearer_auth(bearer)
        .send()
        .await
        .expect("stats");
    let status = r.status();
    let body = if status == StatusCode::OK {
        r.json().await.expect("json")
    } else {
        serde_json::Value::Null
    };
    (status, body)
}

/// `POST /v1/login` as `alice`: the status.
async fn login(http: &reqwest::Client, addr: &str) -> StatusCode {
    http.post(format!("http://{addr}/v1/login"))
        .json(&serde_json::json!({"username": "alice", "password": PASSWORD}))
        .send()
        .await
        .expect("login")
        .status()
}

/// Publishes one batch of `device` on `site` and returns whether an ack came
/// back within a few seconds.
async fn publish_batch(mqtt: &(String, u16), site: &str, device: &str) -> bool {
    let mut options = MqttOptions::new(format!("reload-test-{}", unique()), &mqtt.0, mqtt.1);
    options.set_keep_alive(Duration::from_secs(5));
    let (client, mut events) = AsyncClient::new(options, 16);
    let site_id = SiteId::new(site).expect("site");
    let device_id = DeviceId::new(device).expect("device");
    let ack = Topic::new(site_id.clone(), device_id.clone(), Channel::Ack).to_string();
    let topic = Topic::new(site_id, device_id, Channel::Events).to_string();
    client
        .subscribe(&ack, QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    let envelope = support::envelope(device, 1, support::picked(), support::order("SO-R1"));
    let payload = codec::encode(&support::batch(1, vec![envelope])).expect("encode");
    let mut published = false;
    let waited = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::SubAck(_))) if !published => {
                    published = true;
                    client
                        .publish(&topic, QoS::AtLeastOnce, false, payload.clone())
                        .await
                        .expect("publish");
                }
                Ok(Event::Incoming(Packet::Publish(p))) if p.topic == ack => return true,
                Ok(_) => {}
                Err(e) => panic!("broker connection failed: {e}"),
            }
        }
    })
    .await;
    let _ = client.disconnect().await;
    waited.unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_applies_devices_tokens_and_users_without_a_restart() {
    let with_broker = broker();
    if with_broker.is_none() {
        eprintln!(
            "SKIP the device part of sighup_applies_devices_tokens_and_users_without_a_restart: set DOCKLINE_TEST_MQTT_URL=mqtt://127.0.0.1:1883 to publish batches"
        );
    }
    let mqtt = with_broker
        .clone()
        .unwrap_or_else(|| ("127.0.0.1".into(), support::dead_port()));
    let run = unique();
    let (site, old_device, new_device) = (
        format!("rl{run}"),
        format!("hh-a{run}"),
        format!("hh-b{run}"),
    );
    let client = format!("reload-{run}");
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let path = dir.path().join("collector.toml");
    let hash = hash_password(PASSWORD).expect("hash");
    let user =
        format!("[[api.users]]\nname = \"alice\"\nrole = \"viewer\"\npassword_hash = \"{hash}\"\n");
    std::fs::write(
        &path,
        config(
            &data,
            &mqtt,
            &client,
            &site,
            &[&old_device],
            &token("old", OLD_TOKEN),
        ),
    )
    .expect("write");
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
    let addr = wait_api_addr(&data);
    lines.wait(&["collector started"]);
    let http = reqwest::Client::new();

    // Before: the old token works, alice is unknown, the new device refused.
    assert_eq!(stats(&http, &addr, OLD_TOKEN).await.0, StatusCode::OK);
    assert_eq!(
        stats(&http, &addr, NEW_TOKEN).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(login(&http, &addr).await, StatusCode::UNAUTHORIZED);
    if let Some(mqtt) = &with_broker {
        lines.wait(&["connected to MQTT broker"]);
        assert!(
            !publish_batch(mqtt, &site, &new_device).await,
            "an unknown device gets no ack"
        );
        let (_, s) = stats(&http, &addr, OLD_TOKEN).await;
        assert_eq!(s["received"], 0, "{s}");
    }

    // A config whose new token cannot be read is refused whole.
    let unreadable = "[[api.tokens]]\nname = \"broken\"\nrole = \"viewer\"\ntoken_file = \"/nonexistent/token\"\n";
    std::fs::write(
        &path,
        config(
            &data,
            &mqtt,
            &client,
            &site,
            &[&old_device, &new_device],
            &format!("{}{unreadable}", token("new", NEW_TOKEN)),
        ),
    )
    .expect("write");
    signal(&child.0, "HUP");
    lines.wait(&[
        "reload refused; the running config stays",
        "/nonexistent/token",
    ]);
    assert_eq!(stats(&http, &addr, OLD_TOKEN).await.0, StatusCode::OK);
    assert_eq!(
        stats(&http, &addr, NEW_TOKEN).await.0,
        StatusCode::UNAUTHORIZED
    );

    // The real change: a device added, the old token replaced, a user added,
    // and one key that needs a restart.
    let text = config(
        &data,
        &mqtt,
        &client,
        &site,
        &[&old_device, &new_device],
        &format!("{}{user}", token("new", NEW_TOKEN)),
    );
    std::fs::write(&path, format!("{text}[gaps]\nresend_after_ms = 30000\n")).expect("write");
    signal(&child.0, "HUP");
    lines.wait(&[
        "reload: device registry applied",
        &format!("added={new_device}"),
    ]);
    lines.wait(&[
        "reload: API tokens and users applied",
        "tokens_added=new",
        "tokens_removed=old",
        "users_added=alice",
    ]);
    lines.wait(&["needs_restart=gaps.resend_after_ms"]);
    assert_eq!(
        stats(&http, &addr, OLD_TOKEN).await.0,
        StatusCode::UNAUTHORIZED,
        "a removed token gets 401"
    );
    assert_eq!(stats(&http, &addr, NEW_TOKEN).await.0, StatusCode::OK);
    assert_eq!(
        login(&http, &addr).await,
        StatusCode::OK,
        "a new user logs in"
    );
    if let Some(mqtt) = &with_broker {
        assert!(
            publish_batch(mqtt, &site, &new_device).await,
            "the added device's batch is acked"
        );
        let (_, s) = stats(&http, &addr, NEW_TOKEN).await;
        assert_eq!(s["received"], 1, "{s}");
    }
    assert!(
        child.0.try_wait().expect("try_wait").is_none(),
        "the collector ran through every reload"
    );
}
