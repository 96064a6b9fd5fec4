//! A pick at a pick station, end to end across processes: a scanner and an
//! MT-SICS scale on pseudo-terminals → agent (station rules) → broker →
//! collector → mock ERP.
//!
//! The pick list is posted to the agent's `POST /v1/tasks`; then its barcode,
//! the item scans and the scale's weight lines are written to the devices.
//! The first line is picked only once the scale shows its weight (within
//! tolerance): `picked` is booked. The second line has a wrong item scanned
//! on the way and lands on the scale with the wrong weight: two exceptions
//! (`wrong_item`, `weight_mismatch`) are booked, and no `picked` for it.
//!
//! Every wait polls the agent's status or the ERP against a deadline.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result};
use dockline_agent::devices::{DeviceKind, Protocol};
use dockline_agent::stations::StationKind;
use dockline_simulator::devices::VirtualPort;
use dockline_simulator::stack::{MqttAddr, config};
use dockline_tests::{Cluster, eventually, external_mqtt};
use serde_json::{Value, json};

const ORDER: &str = "SO-4711";
const ITEM_A: &str = "09521234543213";
const ITEM_B: &str = "05901234123457";
const WAIT: Duration = Duration::from_secs(20);

/// Writes device bytes; fails if the line would not take them all.
fn send(port: &mut VirtualPort, bytes: &[u8]) -> Result<()> {
    let sent = port.send(bytes);
    anyhow::ensure!(
        sent == bytes.len(),
        "{} took {sent} of {} bytes",
        port.path().display(),
        bytes.len()
    );
    Ok(())
}

/// Waits until the agent's status satisfies `ok`.
async fn until(
    c: &Cluster,
    addr: SocketAddr,
    what: &str,
    ok: impl Fn(&Value) -> bool,
) -> Result<Value> {
    eventually(what, WAIT, || async {
        c.get(&format!("http://{addr}/v1/status"))
            .await
            .filter(|s| ok(s))
    })
    .await
}

fn station(s: &Value) -> &Value {
    &s["stations"][0]
}

async fn pick_journey(external: Option<MqttAddr>, tag: &str) -> Result<()> {
    let site = format!("pick-{tag}");
    let device = format!("gw-pick-{tag}-{}", std::process::id());
    let c = Cluster::start(external, &site, &[&device], &format!("pick-{tag}")).await?;
    let result = async {
        let mut scanner = VirtualPort::open(&c.dir().join("pick-scanner"))?;
        let mut scale = VirtualPort::open(&c.dir().join("pick-scale"))?;
        let mut agent = c.agent_config(&device)?;
        agent.devices = vec![
            config::serial_device(
                "pick-scanner",
                DeviceKind::Scanner,
                Protocol::Scan,
                scanner.path(),
            )?,
            config::serial_device(
                "pick-scale",
                DeviceKind::Scale,
                Protocol::Mtsics,
                scale.path(),
            )?,
        ];
        let mut pick =
            config::station("pick-1", StationKind::Pick, &["pick-scanner", "pick-scale"])?;
        pick.weight_tolerance_kg = 0.02;
        pick.weight_tolerance_percent = 2.0;
        agent.stations = vec![pick];
        let agent = c.start_agent(agent).await?;
        let addr = agent.api();

        let task = json!({
            "order": ORDER,
            "lines": [
                {"item": ITEM_A, "quantity": 2, "unit_weight_kg": 0.5},
                {"item": "5901234123457", "quantity": 1, "unit_weight_kg": 1.25}
            ]
        });
        let r = c
            .http
            .post(format!("http://{addr}/v1/tasks"))
            .json(&task)
            .send()
            .await?;
        anyhow::ensure!(
            r.status() == 201,
            "POST /v1/tasks: {} {}",
            r.status(),
            r.text().await?
        );

        until(&c, addr, "scanner and scale connected", |s| {
            s["devices"][0]["connected"] == true && s["devices"][1]["connected"] == true
        })
        .await?;
        // An empty tote on the scale, then the pick list.
        send(&mut scale, b"S S      0.000 kg\r\n")?;
        until(&c, addr, "the empty scale's weight", |s| {
            s["devices"][1]["readings"] == 1
        })
        .await?;
        send(&mut scanner, format!("]C0{ORDER}\r\n").as_bytes())?;
        until(&c, addr, "the pick list opened", |s| {
            station(s)["state"]
                .as_str()
                .is_some_and(|t| t.starts_with(&format!("picking {ORDER}")))
        })
        .await?;

        // Line A: two scans, then the weight decides.
        send(
            &mut scanner,
            b"]C10109521234543213\x1d10LOT42\r\n]C10109521234543213\x1d10LOT42\r\n",
        )?;
        let s = until(&c, addr, "line A waiting for its weight", |s| {
            station(s)["state"]
                .as_str()
                .is_some_and(|t| t.contains("waits for its weight"))
        })
        .await?;
        assert_eq!(
            station(&s)["events"],
            0,
            "nothing is picked before the weight: {s:#}"
        );
        send(&mut scale, b"S D      0.612 kg\r\nS S      1.004 kg\r\n")?;
        until(&c, addr, "line A picked", |s| station(s)["events"] == 1).await?;

        // Line B: a wrong item on the way, then the wrong weight.
        send(&mut scanner, b"]E496385074\r\n]E05901234123457\r\n")?;
        until(&c, addr, "line B waiting for its weight", |s| {
            station(s)["events"] == 2
                && station(s)["state"]
                    .as_str()
                    .is_some_and(|t| t.contains("waits for its weight"))
        })
        .await?;
        send(&mut scale, b"S S      1.310 kg\r\n")?;
        until(&c, addr, "the pick list complete", |s| {
            station(s)["events"] == 3 && station(s)["state"] == "idle: scan a pick list"
        })
        .await?;

        let effects = eventually(
            "the station's events booked at the ERP",
            WAIT * 3,
            || async {
                let ours: Vec<Value> = c
                    .erp_effects()
                    .into_iter()
                    .filter(|e| e.data["refs"]["order"] == ORDER)
                    .map(|e| e.data)
                    .collect();
                (ours.len() >= 3).then_some(ours)
            },
        )
        .await?;
        let data: Vec<&Value> = effects.iter().collect();
        let picked: Vec<&&Value> = data.iter().filter(|d| d["kind"] == "picked").collect();
        assert_eq!(picked.len(), 1, "one line picked: {data:#?}");
        let p = picked[0];
        assert_eq!(p["item"], ITEM_A);
        assert_eq!(p["quantity"], 2);
        assert_eq!(p["lot"], "LOT42");
        assert_eq!(p["refs"]["location"], "pick-1");
        assert_eq!(p["priority"], "must_deliver");

        let exception = |name: &str| {
            data.iter()
                .find(|d| d["kind"] == "exception" && d["exception"] == name)
                .copied()
                .with_context(|| format!("no {name} exception among {data:#?}"))
        };
        let wrong = exception("wrong_item")?;
        assert!(
            wrong["note"]
                .as_str()
                .is_some_and(|n| n.contains("00000096385074")),
            "{wrong}"
        );
        let mismatch = exception("weight_mismatch")?;
        let note = mismatch["note"].as_str().unwrap_or_default();
        assert!(
            note.contains(ITEM_B) && note.contains("1.250 kg") && note.contains("0.306 kg"),
            "the note names the item, the expected and the measured weight: {note}"
        );
        assert_eq!(mismatch["priority"], "must_deliver");
        assert_eq!(data.len(), 3, "nothing else booked for {ORDER}: {data:#?}");
        Ok::<_, anyhow::Error>(())
    }
    .await;
    c.judge(result)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pick_station_books_picked_and_exceptions_embedded_broker() -> Result<()> {
    pick_journey(None, "emb").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pick_station_books_picked_and_exceptions_mosquitto() -> Result<()> {
    match external_mqtt("pick_station_books_picked_and_exceptions_mosquitto")? {
        Some(broker) => pick_journey(Some(broker), "mosq").await,
        None => Ok(()),
    }
}
