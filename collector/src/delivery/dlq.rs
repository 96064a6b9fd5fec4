//! Dead letters as people see them: the views and actions shared by the
//! `dockline-collector dlq list|show|replay|discard` commands and the HTTP
//! API (`GET /dlq`, `GET /dlq/{id}`, `POST /dlq/{id}/replay`,
//! `POST /dlq/{id}/discard`).
//!
//! Both work on the inbox database directly, so the commands work whether
//! or not the collector is running (SQLite's WAL and busy timeout let them
//! share the file; a PostgreSQL inbox is shared anyway); a running collector
//! picks a replayed event up at its next rescan (within 5 s), or at once
//! when the replay came through its API.
//!
//! A replay keeps the event's id, so the ERP receives the same
//! `Idempotency-Key` and `webhook-id` as before: if an earlier attempt did
//! book it after all, the ERP answers with the existing booking.

use std::path::PathBuf;

use dockline_protocol::SiteId;
use serde_json::{Value, json};

use crate::erp::webhook::cloudevents;
use crate::inbox::{DeadLetter, DeadLetterSummary, InboxError, InboxStore, Resolution};

/// Most dead letters listed at once.
pub const LIST_LIMIT: usize = 1000;

/// A dead-letter command failed.
#[derive(Debug, thiserror::Error)]
pub enum DlqError {
    /// There is no inbox database where the config says.
    #[error(
        "no collector database at {0}; check data_dir in the config (the collector creates inbox.db on its first start)"
    )]
    NoDatabase(PathBuf),
    /// The inbox failed.
    #[error(transparent)]
    Inbox(#[from] InboxError),
    /// No dead letter has the id.
    #[error("no dead letter {0}; `dockline-collector dlq list --all` shows them all")]
    NotFound(i64),
    /// The dead letter was already replayed or discarded.
    #[error("dead letter {id} is already {state}; nothing to do")]
    AlreadyResolved {
        /// The id.
        id: i64,
        /// `replayed` or `discarded`.
        state: String,
    },
}

/// Opens the configured inbox for a dead-letter command: the PostgreSQL
/// one of `[inbox] url`, or the SQLite file in `data_dir`, refusing to
/// create a new file (a typo in `data_dir` must not look like "no dead
/// letters").
/// `path` is the SQLite file (`Config::inbox_path`).
pub fn open_existing(
    inbox: &crate::inbox::InboxConfig,
    path: &std::path::Path,
) -> Result<Box<dyn InboxStore>, DlqError> {
    if inbox.url.is_none() && !path.is_file() {
        return Err(DlqError::NoDatabase(path.to_path_buf()));
    }
    Ok(inbox.open(path)?)
}

/// The full JSON view of one dead letter: its fields, the original event as
/// the CloudEvent the ERP receives, every attempt.
pub fn show_json(dl: &DeadLetter) -> Value {
    let event = match &dl.envelope {
        Ok(envelope) => match (SiteId::new(dl.site.as_str()), envelope.business_event()) {
            (Ok(site), Some(event)) => {
                let body = cloudevents::cloudevent_body(&site, envelope, event);
                serde_json::from_slice(&body).unwrap_or(Value::Null)
            }
            _ => Value::Null,
        },
        Err(problem) => json!({ "unreadable": problem }),
    };
    let mut out = serde_json::to_value(&dl.summary).unwrap_or_else(|_| json!({}));
    if let Value::Object(map) = &mut out {
        map.insert("site".into(), json!(dl.site));
        map.insert("resolution".into(), json!(dl.resolution));
        map.insert("lane_blocked".into(), json!(dl.summary.state == "open"));
        map.insert("event".into(), event);
        map.insert(
            "attempt_log".into(),
            serde_json::to_value(&dl.attempts).unwrap_or(Value::Null),
        );
    }
    out
}

/// The list as a text table, one dead letter a line.
pub fn list_text(items: &[DeadLetterSummary]) -> String {
    if items.is_empty() {
        return "no dead letters\n".into();
    }
    let mut out = format!(
        "{:>5}  {:<9} {:<12} {:>5} {:>8}  {:<9} {:<9} {:>3}  reason\n",
        "id", "state", "device", "epoch", "seq", "kind", "class", "try"
    );
    for d in items {
        let reason: String = d.reason.chars().take(100).collect();
        out.push_str(&format!(
            "{:>5}  {:<9} {:<12} {:>5} {:>8}  {:<9} {:<9} {:>3}  {}{}\n",
            d.id,
            d.state,
            d.device,
            d.epoch,
            d.seq,
            d.kind,
            d.class,
            d.attempts,
            if d.erp_rejected {
                "[ERP rejected] "
            } else {
                ""
            },
            reason
        ));
    }
    out
}

/// Replays (`discard` is `None`) or discards dead letter `id`.
pub fn resolve(
    inbox: &mut dyn InboxStore,
    id: i64,
    discard: Option<&str>,
    now_ms: i64,
) -> Result<Value, DlqError> {
    let resolution = match discard {
        None => inbox.replay_dead_letter(id, now_ms)?,
        Some(note) => inbox.discard_dead_letter(id, note, now_ms)?,
    };
    match resolution {
        Resolution::Done {
            device,
            lane,
            still_blocked,
        } => Ok(json!({
            "id": id,
            "state": if discard.is_some() { "discarded" } else { "replayed" },
            "device": device.as_str(),
            "lane": lane,
            "lane_blocked": still_blocked,
        })),
        Resolution::NotFound => Err(DlqError::NotFound(id)),
        Resolution::AlreadyResolved { state } => Err(DlqError::AlreadyResolved { id, state }),
    }
}
