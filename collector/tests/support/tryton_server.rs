//! A real trytond 8.2 (+ trytond-stock) on SQLite for tests, started on a
//! free loopback port in a temporary folder and killed when dropped (also
//! when the test fails).
//!
//! Runs only with `DOCKLINE_TEST_TRYTON=1`; the virtualenv holding
//! `trytond`, `trytond-stock` and `proteus` is `DOCKLINE_TEST_TRYTON_VENV`
//! (default `target/tryton-venv`, which `.ci/run` creates). The database is
//! filled by `tryton_setup.py` beside this file.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use serde_json::{Value, json};

/// The admin password of the test database.
pub const ADMIN_PASSWORD: &str = "dockline-admin";
/// The test database's name.
pub const DATABASE: &str = "dockline";

/// The virtualenv to use, or `None` after printing why `test` is skipped.
pub fn venv_or_skip(test: &str) -> Option<PathBuf> {
    if std::env::var("DOCKLINE_TEST_TRYTON").as_deref() != Ok("1") {
        eprintln!(
            "SKIP {test}: set DOCKLINE_TEST_TRYTON=1 (and DOCKLINE_TEST_TRYTON_VENV to a virtualenv with trytond==8.2.*, trytond-stock==8.2.*, proteus==8.2.*; .ci/run makes one) to run against a real Tryton"
        );
        return None;
    }
    Some(std::env::var_os("DOCKLINE_TEST_TRYTON_VENV").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/tryton-venv"),
        PathBuf::from,
    ))
}

/// A running trytond.
pub struct TrytonServer {
    child: Child,
    /// The server's address.
    pub addr: SocketAddr,
    /// Shipment ids by reference, as the setup script made them.
    pub shipments: HashMap<String, i64>,
    /// The server's log.
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for TrytonServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn run(what: &str, cmd: &mut Command, stdin: &[u8], log: &Path) -> Result<String> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {what}: {cmd:?}"))?;
    if let Some(mut i) = child.stdin.take() {
        i.write_all(stdin)?;
    }
    let out = child.wait_with_output()?;
    let mut text = out.stdout.clone();
    text.extend_from_slice(&out.stderr);
    std::fs::write(log, &text)?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&text)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl TrytonServer {
    /// Creates the database (modules: stock), fills it with one waiting
    /// shipment per reference (see `tryton_setup.py` for `:draft` and
    /// `:cancelled`), and starts the server. Blocking: ~20 s.
    pub fn start(venv: &Path, references: &[&str]) -> Result<Self> {
        let bin = venv.join("bin");
        if !bin.join("trytond").exists() {
            bail!(
                "{} has no trytond; create it with `python3 -m venv {0} && {0}/bin/pip install 'trytond==8.2.*' 'trytond-stock==8.2.*' 'proteus==8.2.*'` (as .ci/run does)",
                venv.display()
            );
        }
        let started = Instant::now();
        let dir = tempfile::tempdir()?;
        let d = dir.path();
        let port = free_port()?;
        let conf = d.join("trytond.conf");
        std::fs::write(
            &conf,
            format!(
                "[database]\nuri = sqlite://\npath = {}\n[web]\nlisten = 127.0.0.1:{port}\n",
                d.display()
            ),
        )?;
        // SQLite databases must exist (empty) before trytond-admin.
        std::fs::write(d.join(format!("{DATABASE}.sqlite")), b"")?;
        let pass = d.join("admin.pass");
        std::fs::write(&pass, ADMIN_PASSWORD)?;
        // The first init asks for the admin's e-mail on stdin: an empty line.
        run(
            "trytond-admin",
            Command::new(bin.join("trytond-admin"))
                .args(["-c"])
                .arg(&conf)
                .args([
                    "-d",
                    DATABASE,
                    "--all",
                    "--activate-dependencies",
                    "-u",
                    "stock",
                ])
                .env("TRYTONPASSFILE", &pass),
            b"\n",
            &d.join("admin.log"),
        )?;
        // Beside this file, from the collector's tests and the workspace's
        // `tests/` crate alike.
        let setup = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../collector/tests/support/tryton_setup.py");
        let out = run(
            "tryton_setup.py",
            Command::new(bin.join("python"))
                .arg(&setup)
                .arg(&conf)
                .arg(DATABASE)
                .args(references),
            b"",
            &d.join("setup.log"),
        )?;
        let line = out.lines().last().unwrap_or_default();
        let ids: HashMap<String, i64> = serde_json::from_str(line)
            .with_context(|| format!("tryton_setup.py printed {out:?}, expected JSON"))?;
        let log = d.join("trytond.log");
        let child = Command::new(bin.join("trytond"))
            .arg("-c")
            .arg(&conf)
            .args(["-d", DATABASE])
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log)?)
            .stderr(std::fs::File::create(d.join("trytond.err"))?)
            .spawn()
            .context("cannot start trytond")?;
        let server = Self {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            shipments: ids,
            log,
            _dir: dir,
        };
        server.wait_ready(Duration::from_secs(30))?;
        eprintln!(
            "trytond 8.2 ready on {} in {:.1} s",
            server.addr,
            started.elapsed().as_secs_f64()
        );
        Ok(server)
    }

    fn wait_ready(&self, timeout: Duration) -> Result<()> {
        let until = Instant::now() + timeout;
        while Instant::now() < until {
            if std::net::TcpStream::connect(self.addr).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(anyhow!(
            "trytond did not listen on {} within {timeout:?}; see {}",
            self.addr,
            self.log.display()
        ))
    }

    /// The server's stderr (where trytond logs).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.log.with_file_name("trytond.err")).unwrap_or_default()
    }

    /// One JSON-RPC call as admin (a fresh login each time; for checks).
    pub async fn call(&self, method: &str, params: Value) -> Result<Value> {
        let http = reqwest::Client::new();
        let url = format!("http://{}/{DATABASE}/rpc/", self.addr);
        let login: Value = http
            .post(&url)
            .json(&json!({"id": 1, "method": "common.db.login",
                "params": ["admin", {"password": ADMIN_PASSWORD}, "en"]}))
            .send()
            .await?
            .json()
            .await?;
        let uid = login["result"][0]
            .as_i64()
            .ok_or_else(|| anyhow!("login failed: {login}"))?;
        let token = login["result"][1].as_str().unwrap_or_default();
        use base64::Engine;
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("admin:{uid}:{token}"));
        let answer: Value = http
            .post(&url)
            .header("authorization", format!("Session {auth}"))
            .json(&json!({"id": 2, "method": method, "params": params}))
            .send()
            .await?
            .json()
            .await?;
        if !answer["error"].is_null() {
            bail!("{method} failed: {}", answer["error"]);
        }
        Ok(answer["result"].clone())
    }

    /// The state of the shipment with this reference.
    pub async fn state(&self, reference: &str) -> Result<String> {
        let rows = self
            .call(
                "model.stock.shipment.out.search_read",
                json!([[["reference", "=", reference]], 0, 10, null, ["state"], {}]),
            )
            .await?;
        rows[0]["state"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| anyhow!("no shipment {reference}: {rows}"))
    }

    /// How many times the shipment entered each state (Tryton's own
    /// transition log, `ir.model.log`), e.g. `["state:picked", …]`.
    pub async fn transitions(&self, reference: &str) -> Result<Vec<String>> {
        let id = self.shipments[reference];
        let rows = self
            .call(
                "model.ir.model.log.search_read",
                json!([
                    [
                        ["resource", "=", format!("stock.shipment.out,{id}")],
                        ["event", "=", "transition"]
                    ],
                    0,
                    100,
                    [["id", "ASC"]],
                    ["target"],
                    {}
                ]),
            )
            .await?;
        Ok(rows
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["target"].as_str().map(str::to_owned))
            .collect())
    }

    /// The attachments of the shipment with this reference (their names).
    pub async fn attachments(&self, reference: &str) -> Result<Vec<String>> {
        let id = self.shipments[reference];
        let rows = self
            .call(
                "model.ir.attachment.search_read",
                json!([
                    [["resource", "=", format!("stock.shipment.out,{id}")]],
                    0,
                    100,
                    null,
                    ["name"],
                    {}
                ]),
            )
            .await?;
        Ok(rows
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["name"].as_str().map(str::to_owned))
            .collect())
    }
}
