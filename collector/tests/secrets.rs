//! Webhook secrets from files and environment variables, through the real
//! config loader and the real binary:
//! - `[erp] secret`, `invoice_webhook_secret` and `[erp.webhook]
//!   previous_secrets` read from files (trimmed), and the collector's config
//!   check accepts them;
//! - `secret = { env = "…" }`: the collector starts with the variable set,
//!   and refuses to start without it, naming the variable and never printing
//!   a secret;
//! - a missing secret file stops it with the file's name.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use dockline_collector::Config;

// Not the example config's secret: the collector refuses that one at start.
const CURRENT: &str = "whsec_ZG9ja2xpbmUtc2VjcmV0cy10ZXN0LWN1cnJlbnQ=";
const PREVIOUS: &str = "whsec_c2Vjb25kLXNlY3JldC1zZWNvbmQtc2VjcmV0";
// Not `DOCKLINE_…`: those are config overrides.
const VAR: &str = "SECRETS_TEST_ERP_WEBHOOK_SECRET";

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write");
}

#[test]
fn secrets_are_read_from_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cur, prev, inv) = (
        dir.path().join("current"),
        dir.path().join("previous"),
        dir.path().join("invoice"),
    );
    write(&cur, &format!("{CURRENT}\n"));
    write(&prev, PREVIOUS);
    write(&inv, &format!("  {PREVIOUS}  \n"));
    let cfg = dir.path().join("collector.toml");
    write(
        &cfg,
        &format!(
            "[erp]\nurl = \"http://127.0.0.1:9/events\"\nsecret = {{ file = {:?} }}\n\
             invoice_webhook_url = \"http://127.0.0.1:9/invoices\"\ninvoice_webhook_secret = {{ file = {:?} }}\n\
             [erp.webhook]\nprevious_secrets = [{{ file = {:?} }}, \"{CURRENT}\"]\n",
            cur.display().to_string(),
            inv.display().to_string(),
            prev.display().to_string()
        ),
    );
    let config: Config =
        dockline_host::config::load(Some(&cfg), Vec::<(String, String)>::new()).expect("loads");
    config.check().expect("the secrets from files are valid");
    assert_eq!(config.erp.secret, CURRENT);
    assert_eq!(config.erp.invoice_webhook_secret.as_deref(), Some(PREVIOUS));
    assert_eq!(config.erp.webhook.previous_secrets, vec![PREVIOUS, CURRENT]);
    let debug = format!("{config:?}");
    assert!(
        !debug.contains("ZG9ja2xpbmUtc2VjcmV0cy10") && !debug.contains("c2Vjb25k"),
        "{debug}"
    );

    std::fs::remove_file(&cur).expect("remove");
    let err = dockline_host::config::load::<Config>(Some(&cfg), Vec::<(String, String)>::new())
        .expect_err("missing file")
        .to_string();
    assert!(err.contains(&cur.display().to_string()), "{err}");
    assert!(err.contains("cannot read the secret file"), "{err}");
}

#[test]
fn the_collector_reads_its_secret_from_a_named_variable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let cfg = dir.path().join("collector.toml");
    write(
        &cfg,
        &format!(
            "data_dir = {:?}\n[api]\nlisten = \"127.0.0.1:0\"\n[mqtt]\nport = 9\n\
             [erp]\nurl = \"http://127.0.0.1:9/events\"\nsecret = {{ env = \"{VAR}\" }}\n",
            data.display().to_string()
        ),
    );
    let exe = env!("CARGO_BIN_EXE_dockline-collector");

    // Without the variable: refused at start, naming it.
    let out = Command::new(exe)
        .arg("--config")
        .arg(&cfg)
        .env_remove(VAR)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(VAR) && stderr.contains("not set"),
        "{stderr}"
    );

    // A wrong value: refused, and the value is not printed.
    let out = Command::new(exe)
        .arg("--config")
        .arg(&cfg)
        .env(VAR, "not-a-webhook-secret-value")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("erp.secret"), "{stderr}");
    assert!(!stderr.contains("not-a-webhook-secret-value"), "{stderr}");

    // With it: the collector starts (its API comes up), and logs no secret.
    let log = dir.path().join("collector.log");
    let log_file = std::fs::File::create(&log).expect("log");
    let mut child = Command::new(exe)
        .arg("--config")
        .arg(&cfg)
        .env(VAR, CURRENT)
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().expect("log"))
        .stderr(log_file)
        .spawn()
        .expect("start");
    let addr = data.join("api.addr");
    let start = Instant::now();
    let started = loop {
        if std::fs::read_to_string(&addr).is_ok_and(|a| !a.trim().is_empty()) {
            break true;
        }
        if start.elapsed() > Duration::from_secs(20) || child.try_wait().ok().flatten().is_some() {
            break false;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = child.kill();
    let _ = child.wait();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(started, "the collector did not start: {text}");
    assert!(!text.contains("ZG9ja2xpbmUtc2VjcmV0cy10"), "{text}");
}
