//! An agent started in-process on 127.0.0.1:0 for the API tests, stopped
//! at the end of each test (and its folder removed on drop).

#![allow(dead_code)]

pub mod fake_collector;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};

pub struct Agent {
    pub addr: SocketAddr,
    pub token: Option<String>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
    pub dir: PathBuf,
    _dir: Option<tempfile::TempDir>,
}

/// A port nothing listens on: the uplink keeps retrying, the API must not care.
pub fn dead_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

pub async fn start_agent() -> Agent {
    start_agent_with("").await
}

/// Starts an agent whose config ends with `extra` (TOML).
pub async fn start_agent_with(extra: &str) -> Agent {
    start_agent_api("", extra).await
}

/// Starts an agent with `api` lines in its `[api]` table and `extra` at
/// the end of its config.
pub async fn start_agent_api(api: &str, extra: &str) -> Agent {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().to_path_buf();
    let mut agent = start_agent_in(&path, api, extra).await;
    agent._dir = Some(dir);
    agent
}

/// Starts an agent on the data folder `dir` (kept by the caller, so a
/// second agent can reopen it).
pub async fn start_agent_in(dir: &Path, api: &str, extra: &str) -> Agent {
    let toml = format!(
        "site = \"dc-test\"\ndevice = \"hh-api\"\ndata_dir = {:?}\n[api]\nlisten = \"127.0.0.1:0\"\n{api}[mqtt]\nport = {}\n{extra}",
        dir.display().to_string(),
        dead_port()
    );
    start_agent_toml(dir, &toml).await
}

/// Starts an agent on `dir` with the whole config `toml` (its `[api]`
/// must listen on 127.0.0.1:0 and `data_dir` must be `dir`).
pub async fn start_agent_toml(dir: &Path, toml: &str) -> Agent {
    let path = dir.join("agent.toml");
    std::fs::write(&path, toml).expect("write config");
    let config: dockline_agent::Config =
        dockline_host::config::load(Some(&path), Vec::<(String, String)>::new())
            .expect("config loads");
    let addr_file = dir.join("api.addr");
    let _ = std::fs::remove_file(&addr_file);
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        dockline_agent::run(config, async {
            let _ = rx.await;
        })
        .await
        .expect("agent runs");
    });
    for _ in 0..200 {
        if let Ok(text) = std::fs::read_to_string(&addr_file) {
            let addr = text.parse().expect("address");
            let token = std::fs::read_to_string(dir.join("api.token"))
                .ok()
                .map(|t| t.trim().to_string());
            return Agent {
                addr,
                token,
                stop: Some(tx),
                task,
                dir: dir.to_path_buf(),
                _dir: None,
            };
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("agent did not write {}", addr_file.display());
}

impl Agent {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// A client that sends the per-install token, as a local app would.
    pub fn http(&self) -> reqwest::Client {
        let mut headers = HeaderMap::new();
        if let Some(t) = &self.token {
            headers.insert(
                AUTHORIZATION,
                HeaderValue::from_str(&format!("Bearer {t}")).expect("header"),
            );
        }
        reqwest::Client::builder()
            .default_headers(headers)
            .build()
            .expect("client")
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        tokio::time::timeout(Duration::from_secs(10), &mut self.task)
            .await
            .expect("stops in time")
            .expect("join");
    }
}
