//! Plays a [`Timeline`]: opens its virtual devices, waits for the agent to
//! open them, then writes each chunk's bytes and posts its pick lists and
//! events at their times.
//!
//! The ports are opened before the agent starts (its config names their
//! links), and kept until the player is dropped, so the devices stay
//! plugged in while the agent drains. A post answered 201 becomes a
//! generated event in the shared [`Production`]; one that fails is counted
//! (its expected events may then be missing, which the report shows next to
//! the failure).
//!
//! The player notes when each chunk's bytes were written (Unix ms, just
//! after the write), so the events they trigger can be timed to their
//! booking ([`Played::expected`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::watch;
use tokio::time::Instant;

use super::{Act, Expected, Timeline};
use crate::demo::{PostError, Production, get_json, post_event_keyed};
use crate::devices::{PortError, VirtualPort};
use crate::latency::unix_ms;
use crate::media::Medium;

/// A timeline's devices, open.
#[derive(Debug)]
pub struct Ports {
    dir: PathBuf,
    ports: HashMap<String, VirtualPort>,
}

impl Ports {
    /// Opens one virtual port per device of `timeline`, linked as
    /// `dir/<device name>`.
    pub fn open(timeline: &Timeline, dir: &Path) -> Result<Ports, PortError> {
        std::fs::create_dir_all(dir).map_err(|source| PortError::Link {
            link: dir.into(),
            pts: PathBuf::new(),
            source,
        })?;
        let mut ports = HashMap::new();
        for d in &timeline.devices {
            ports.insert(d.name.clone(), VirtualPort::open(&dir.join(&d.name))?);
        }
        Ok(Ports {
            dir: dir.into(),
            ports,
        })
    }

    /// The folder of the links.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Bytes written and dropped over all ports.
    pub fn bytes(&self) -> (u64, u64) {
        self.ports
            .values()
            .fold((0, 0), |(w, d), p| (w + p.written(), d + p.dropped()))
    }
}

/// Counters of one play, shared with the progress lines.
#[derive(Debug, Default)]
pub struct PlayStats {
    /// Chunks played.
    pub chunks: AtomicU64,
    /// Posts (pick lists, PODs) answered 201.
    pub posts_ok: AtomicU64,
    /// Posts that failed.
    pub posts_failed: AtomicU64,
}

/// Where and what the player posts.
#[derive(Debug, Clone)]
pub struct Target {
    /// The agent's device id.
    pub device: String,
    /// Its API address.
    pub api: SocketAddr,
}

/// Waits until the agent shows every device of `timeline` connected, at
/// most `timeout`. Returns whether they all are.
pub async fn wait_connected(
    client: &reqwest::Client,
    target: &Target,
    timeline: &Timeline,
    timeout: Duration,
) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = get_json(client, format!("http://{}/v1/status", target.api)).await {
            let connected = status["devices"]
                .as_array()
                .map(|ds| {
                    ds.iter()
                        .filter(|d| d["connected"] == Value::Bool(true))
                        .count()
                })
                .unwrap_or(0);
            if connected >= timeline.devices.len() {
                return true;
            }
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What a play needs besides its ports.
#[derive(Debug, Clone)]
pub(crate) struct Play {
    /// HTTP client for the agent's API.
    pub client: reqwest::Client,
    /// What to play.
    pub timeline: Arc<Timeline>,
    /// The agent.
    pub target: Target,
    /// Where accepted posts are recorded.
    pub production: Arc<Production>,
    /// Counters.
    pub stats: Arc<PlayStats>,
    /// Post the events' media (else their bodies go as they are).
    pub media: bool,
}

/// A finished play: the ports, still open for the drain, and when each
/// chunk was played.
#[derive(Debug)]
pub struct Played {
    /// The timeline's devices.
    pub ports: Ports,
    /// Per chunk of the timeline, when its bytes were written (Unix ms);
    /// `None` for chunks not played or not bytes.
    pub written_ms: Vec<Option<u64>>,
}

impl Played {
    /// The timeline's expected events, each with `made_ms` set to when its
    /// triggering bytes were written (left `None` when unknown or unplayed).
    pub fn expected(&self, timeline: &Timeline) -> Vec<Expected> {
        timeline
            .expected
            .iter()
            .map(|x| Expected {
                made_ms: x
                    .trigger
                    .and_then(|i| self.written_ms.get(i).copied().flatten()),
                ..x.clone()
            })
            .collect()
    }
}

/// Plays the timeline from `start` until its end or `stop`; gives the ports
/// back (still open) for the drain, with the times of the writes.
pub(crate) async fn play(
    p: Play,
    mut ports: Ports,
    start: Instant,
    mut stop: watch::Receiver<bool>,
) -> Played {
    let Play {
        client,
        timeline,
        target,
        production,
        stats,
        media: with_media,
    } = p;
    let mut written_ms = vec![None; timeline.chunks.len()];
    for (index, chunk) in timeline.chunks.iter().enumerate() {
        let at = start + Duration::from_millis(chunk.at_ms);
        tokio::select! {
            () = tokio::time::sleep_until(at) => {}
            _ = stop.wait_for(|s| *s) => break,
        }
        match &chunk.act {
            Act::Bytes { device, bytes } => {
                if let Some(port) = ports.ports.get_mut(device) {
                    port.send(bytes);
                    written_ms[index] = Some(unix_ms());
                }
            }
            Act::PostTask(body) => {
                let ok = post_json(&client, &format!("http://{}/v1/tasks", target.api), body).await;
                let counter = if ok {
                    &stats.posts_ok
                } else {
                    &stats.posts_failed
                };
                counter.fetch_add(1, Ordering::Relaxed);
            }
            Act::PostEvent { kind, body, media } => {
                let media: &[Medium] = if with_media { media } else { &[] };
                match post_event_with_media(&client, &target.device, target.api, body, media).await
                {
                    Ok(accepted) => {
                        production.record_media(&accepted.device, media);
                        production.record(accepted.into_generated(kind, &timeline.source));
                        stats.posts_ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        if let PostError::Failed(m) = &e {
                            tracing::warn!(agent = %target.device, %kind, "POD not accepted: {m}");
                        }
                        stats.posts_failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
        stats.chunks.fetch_add(1, Ordering::Relaxed);
    }
    Played { ports, written_ms }
}

/// Posts each medium to the agent's `POST /v1/media` (retried under one
/// `Idempotency-Key` each), then the event naming them by hash. A medium
/// the agent did not take fails the whole post: an event must not name a
/// medium its agent does not hold (the collector would wait for it).
pub(crate) async fn post_event_with_media(
    client: &reqwest::Client,
    device: &str,
    api: std::net::SocketAddr,
    body: &Value,
    media: &[Medium],
) -> Result<crate::demo::Accepted, PostError> {
    for m in media {
        post_medium(client, api, m).await?;
    }
    let mut body = body.clone();
    crate::media::reference_in(&mut body, media);
    post_event_retried(client, device, api, &body).await
}

/// Posts one medium, retrying twice when the answer was lost; 201 (new)
/// or 200 (held already) take it.
async fn post_medium(
    client: &reqwest::Client,
    api: std::net::SocketAddr,
    m: &Medium,
) -> Result<(), PostError> {
    let key = uuid::Uuid::now_v7().to_string();
    let mut last = PostError::Failed("not sent".into());
    for attempt in 0..3 {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let sent = client
            .post(format!("http://{api}/v1/media"))
            .header("content-type", m.content_type())
            .header("idempotency-key", &key)
            .body(m.bytes.to_vec())
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() => return Ok(()),
            Ok(r) => {
                let status = r.status();
                let text = r.text().await.unwrap_or_default();
                return Err(PostError::Failed(format!(
                    "POST /v1/media ({} bytes) answered {status}: {text}",
                    m.bytes.len()
                )));
            }
            Err(e) if e.is_connect() => return Err(PostError::Refused(e.to_string())),
            Err(e) => last = PostError::Failed(format!("POST /v1/media: {e}")),
        }
    }
    Err(last)
}

/// Posts an event, retrying twice when the answer was lost, all under one
/// `Idempotency-Key`: a retry of an event the agent did store is answered
/// with that event, never stored twice.
async fn post_event_retried(
    client: &reqwest::Client,
    device: &str,
    api: std::net::SocketAddr,
    body: &Value,
) -> Result<crate::demo::Accepted, PostError> {
    let key = uuid::Uuid::now_v7().to_string();
    let mut last = PostError::Failed("not sent".into());
    for attempt in 0..3 {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        match post_event_keyed(client, device, api, body, Some(&key)).await {
            Ok(a) => return Ok(a),
            // Nothing reached the agent: the event was not made; no retry.
            Err(PostError::Refused(m)) => return Err(PostError::Refused(m)),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Posts JSON, retrying twice on failure under one `Idempotency-Key`; true
/// on 201 (or 200: a retry the agent had already taken).
async fn post_json(client: &reqwest::Client, url: &str, body: &Value) -> bool {
    let key = uuid::Uuid::now_v7().to_string();
    for _ in 0..3 {
        match client
            .post(url)
            .header("idempotency-key", &key)
            .json(body)
            .send()
            .await
        {
            Ok(r) if r.status().is_success() => return true,
            Ok(r) => {
                let status = r.status();
                let text = r.text().await.unwrap_or_default();
                tracing::warn!(%url, %status, "post refused: {text}");
                return false;
            }
            Err(e) => {
                tracing::warn!(%url, "post failed: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    false
}
