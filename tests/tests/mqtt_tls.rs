//! MQTT over mutual TLS through a real Mosquitto, configured as the README's
//! security section says: a TLS listener that requires a client
//! certificate from the fleet CA, the certificate's common name as the MQTT
//! user name (`use_identity_as_username`), and pattern ACLs that let a
//! device write only under its own topic segment.
//!
//! The certificates are issued by `dockline-collector certs`, as an
//! operator would. The test starts its own Mosquitto on a free loopback
//! port (killed on drop) and checks:
//! - an agent with device A's certificate syncs an event end to end to a
//!   collector that also connects with its own certificate, and the mock
//!   ERP books it;
//! - a client without a certificate, one with a certificate from another
//!   CA, and a plain-TCP client cannot connect (while a client with A's
//!   certificate, built the same way, can);
//! - device A publishing on device B's topic is refused by the broker's
//!   ACL (the collector never sees it, nothing is stored or booked), and A
//!   publishing on its own topic a batch that claims to be B's is refused
//!   by the collector and counted as `device_mismatch`.
//!
//! Runs when `DOCKLINE_TEST_MQTT_URL` is set (a machine with Mosquitto) and
//! a `mosquitto` binary is found; prints SKIP otherwise.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use dockline_host::tls::MqttTls;
use dockline_simulator::stack::{Child, MqttAddr};
use dockline_tests::forge::{self, Lane};
use dockline_tests::{Cluster, ClusterSpec, bin_dir, effect_key, eventually};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, TlsConfiguration, Transport};

/// The `mosquitto` binary: on PATH, or Debian's /usr/sbin.
fn mosquitto_binary() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("mosquitto"));
    on_path
        .chain([PathBuf::from("/usr/sbin/mosquitto")])
        .find(|p| p.is_file())
}

/// Runs `dockline-collector certs …`.
fn certs(args: &[&str]) -> Result<()> {
    let out = std::process::Command::new(bin_dir()?.join("dockline-collector"))
        .arg("certs")
        .args(args)
        .output()
        .context("running dockline-collector certs")?;
    if !out.status.success() {
        bail!(
            "dockline-collector certs {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

fn p(path: &Path) -> String {
    path.display().to_string()
}

/// A free loopback port (bound, then released for Mosquitto).
fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Whether this process runs as root (Mosquitto then drops to the user
/// `mosquitto` unless told otherwise, and could not read the 0600 keys).
fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// The broker's config and ACL as the README documents them.
fn mosquitto_conf(dir: &Path, port: u16, collector_user: &str) -> Result<PathBuf> {
    let acl = dir.join("acl");
    std::fs::write(
        &acl,
        format!(
            "# The collector (its certificate's CN): reads every device's events and\n\
             # status, writes acks and commands.\n\
             user {collector_user}\n\
             topic read dockline/v1/+/+/events\n\
             topic read dockline/v1/+/+/status\n\
             topic write dockline/v1/+/+/ack\n\
             topic write dockline/v1/+/+/cmd\n\
             \n\
             # Every device (%u = its certificate's CN = its device id): its own topics only.\n\
             pattern write dockline/v1/+/%u/events\n\
             pattern write dockline/v1/+/%u/status\n\
             pattern read dockline/v1/+/%u/ack\n\
             pattern read dockline/v1/+/%u/cmd\n"
        ),
    )?;
    let conf = dir.join("mosquitto.conf");
    let user = if running_as_root() { "user root\n" } else { "" };
    std::fs::write(
        &conf,
        format!(
            "{user}per_listener_settings false\n\
             persistence false\n\
             log_dest stderr\n\
             log_type error\nlog_type warning\nlog_type notice\nlog_type information\n\
             connection_messages true\n\
             allow_anonymous false\n\
             acl_file {}\n\
             listener {port} 127.0.0.1\n\
             cafile {}\n\
             certfile {}\n\
             keyfile {}\n\
             require_certificate true\n\
             use_identity_as_username true\n",
            p(&acl),
            p(&dir.join("ca/ca.pem")),
            p(&dir.join("broker/server.pem")),
            p(&dir.join("broker/server.key")),
        ),
    )?;
    Ok(conf)
}

/// Waits until something listens on `port`.
async fn wait_listening(port: u16, broker: &mut Child) -> Result<()> {
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return Ok(());
        }
        if !broker.is_running() {
            bail!("mosquitto exited: {}", broker.log_text());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("mosquitto did not listen on {port}: {}", broker.log_text())
}

/// MQTT options for `client_id` over TLS with `tls` (or plain TCP).
fn options(port: u16, client_id: &str, tls: Option<&MqttTls>) -> Result<MqttOptions> {
    let mut o = MqttOptions::new(client_id, "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(5));
    if let Some(tls) = tls {
        o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
            Arc::new(tls.client_config()?),
        )));
    }
    Ok(o)
}

/// Connects and reports the broker's verdict: `Ok(())` on a CONNACK that
/// accepts, `Err(why)` when the TLS handshake or the MQTT connect fails.
async fn try_connect(options: MqttOptions) -> std::result::Result<(), String> {
    let (client, mut eventloop) = AsyncClient::new(options, 8);
    let verdict = loop {
        match tokio::time::timeout(Duration::from_secs(10), eventloop.poll()).await {
            Ok(Ok(Event::Incoming(Packet::ConnAck(ack)))) => {
                break if ack.code == rumqttc::ConnectReturnCode::Success {
                    Ok(())
                } else {
                    Err(format!("CONNACK {:?}", ack.code))
                };
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => break Err(e.to_string()),
            Err(_) => break Err("no answer within 10 s".into()),
        }
    };
    let _ = client.try_disconnect();
    verdict
}

/// A one-event batch of `device` whose order is `order`.
fn batch(device: &str, order: &str) -> Result<Vec<u8>> {
    forge::one_event_batch_in(&Lane::Order(order.into()), device, 7, 1, 1)
}

/// Mutual TLS with `name`'s client certificate from the fleet CA in `dir`.
fn tls(dir: &Path, name: &str) -> MqttTls {
    MqttTls {
        ca_file: Some(dir.join("ca/ca.pem")),
        cert_file: Some(dir.join(format!("clients/{name}.pem"))),
        key_file: Some(dir.join(format!("clients/{name}.key"))),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_binds_devices_to_their_topics() -> Result<()> {
    if std::env::var("DOCKLINE_TEST_MQTT_URL").is_err() {
        eprintln!(
            "SKIP mqtt_tls: set DOCKLINE_TEST_MQTT_URL=mqtt://127.0.0.1:1883 (and have mosquitto installed) to run"
        );
        return Ok(());
    }
    let Some(mosquitto) = mosquitto_binary() else {
        eprintln!("SKIP mqtt_tls: no mosquitto binary on PATH or in /usr/sbin");
        return Ok(());
    };
    let pid = std::process::id();
    let site = "tls";
    let (a, b) = (format!("hh-a-{pid}"), format!("hh-b-{pid}"));
    let tag = format!("tls-{pid}");
    let collector_user = format!("dockline-collector-{tag}");

    // Certificates, issued as an operator would.
    let certs_dir = tempfile::tempdir()?;
    let d = certs_dir.path();
    certs(&["ca", "--out", &p(&d.join("ca"))])?;
    certs(&[
        "server",
        "--ca",
        &p(&d.join("ca")),
        "--out",
        &p(&d.join("broker")),
        "127.0.0.1",
        "localhost",
    ])?;
    certs(&[
        "client",
        "--ca",
        &p(&d.join("ca")),
        "--out",
        &p(&d.join("clients")),
        &a,
        &b,
        &collector_user,
    ])?;
    // Device A's id, but from a CA the broker does not know.
    certs(&[
        "ca",
        "--out",
        &p(&d.join("other-ca")),
        "--name",
        "someone else",
    ])?;
    certs(&[
        "device",
        "--ca",
        &p(&d.join("other-ca")),
        "--out",
        &p(&d.join("other")),
        &a,
    ])?;

    let port = free_port()?;
    let conf = mosquitto_conf(d, port, &collector_user)?;
    let mut broker = Child::spawn("mosquitto", &mosquitto, &["-c".into(), p(&conf)], &[], d)?;
    wait_listening(port, &mut broker).await?;

    let a_tls = tls(d, &a);

    // (b) Who may connect at all. A's certificate (control), then no
    // certificate, another CA's certificate, and plain TCP.
    try_connect(options(port, &format!("{a}-probe"), Some(&a_tls))?)
        .await
        .map_err(|e| {
            anyhow!(
                "a client with A's certificate could not connect: {e}\n{}",
                broker.log_text()
            )
        })?;
    let no_cert = MqttTls {
        ca_file: a_tls.ca_file.clone(),
        ..MqttTls::default()
    };
    let other_ca = MqttTls {
        ca_file: a_tls.ca_file.clone(),
        cert_file: Some(d.join(format!("other/{a}.pem"))),
        key_file: Some(d.join(format!("other/{a}.key"))),
    };
    for (what, tls) in [
        ("without a certificate", Some(&no_cert)),
        ("with a certificate from another CA", Some(&other_ca)),
        ("over plain TCP", None),
    ] {
        let verdict = try_connect(options(port, &format!("intruder-{pid}"), tls)?).await;
        assert!(verdict.is_err(), "a client {what} connected");
    }

    // (a) End to end over mutual TLS: the collector and agent A each with
    // their own certificate.
    let mqtt = MqttAddr {
        host: "127.0.0.1".into(),
        port,
    };
    let c = Cluster::start_with(ClusterSpec::new(Some(mqtt), &tag), site, &[&a, &b], |c| {
        c.mqtt.tls = Some(tls(d, &collector_user));
    })
    .await?;
    let result = async {
        let mut config = c.agent_config(&a)?;
        config.mqtt.tls = Some(tls(d, &a));
        let agent_a = c.start_agent(config).await?;
        let event_id = c.post_event(agent_a.api(), 0).await?;
        let booked = eventually(
            "A's event booked at the ERP",
            Duration::from_secs(30),
            || async {
                let effects = c.erp_effects();
                effects
                    .iter()
                    .any(|e| effect_key(e) == event_id)
                    .then_some(effects)
            },
        )
        .await?;
        assert_eq!(booked.len(), 1, "{booked:?}");
        let stats_url = format!("{}/v1/stats", c.collector_url());

        // (c) A on B's topic: the broker's ACL drops it. Then A on its own
        // topic claiming to be B: the collector refuses and counts it.
        let topic = |dev: &str| format!("dockline/v1/{site}/{dev}/events");
        forge::publish_with(
            options(port, &format!("{a}-rogue"), Some(&a_tls))?,
            "publisher",
            vec![
                (topic(&b), batch(&a, "SO-ACL-DENIED")?),
                (topic(&b), batch(&b, "SO-ACL-DENIED")?),
                (topic(&a), batch(&b, "SO-CLAIMS-B")?),
            ],
            0,
        )
        .await?;
        let stats = eventually(
            "the claim to be B refused",
            Duration::from_secs(20),
            || async {
                let s = c.get(&stats_url).await?;
                (s["refused_by_reason"]["device_mismatch"] == 1).then_some(s)
            },
        )
        .await?;
        // Had either message on B's topic reached the collector, it would
        // be stored (B's own batch) or refused too (A's batch on B's topic).
        tokio::time::sleep(Duration::from_secs(1)).await;
        let stats = c.get(&stats_url).await.unwrap_or(stats);
        assert_eq!(
            stats["refused"], 1,
            "only the claim reached the collector: {stats}"
        );
        assert_eq!(
            stats["received"], 1,
            "only A's real event is stored: {stats}"
        );
        let effects = c.erp_effects();
        let text = serde_json::to_string(&effects)?;
        assert!(
            !text.contains("SO-ACL-DENIED") && !text.contains("SO-CLAIMS-B"),
            "nothing of the rogue publishes booked: {text}"
        );
        assert_eq!(effects.len(), 1, "{effects:?}");
        Ok::<_, anyhow::Error>(())
    }
    .await;
    if result.is_err() {
        c.dump_logs();
        eprintln!("----- mosquitto -----\n{}", broker.log_text());
    }
    result
}
