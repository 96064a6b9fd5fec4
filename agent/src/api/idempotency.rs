//! Client idempotency keys (`Idempotency-Key`) on `POST /v1/events` and
//! `POST /v1/tasks`.
//!
//! A client sends the same key with every retry of one request. The key and
//! the SHA-256 of the request's canonical JSON (keys sorted, whitespace
//! dropped, so a re-serialised retry still matches) identify the request:
//!
//! - events: the key is stored in the outbox with the event, in the same
//!   transaction ([`crate::outbox::ClientKey`]), so it survives a crash
//!   between commit and answer and lives as long as the event's receipt;
//! - pick lists: they live in memory only (a restart drops them), so their
//!   keys do too: the last [`TASK_KEYS`] are kept.
//!
//! Same key and body: the first answer again, with 200 instead of 201. Same
//! key, other body: 422. A key is 1 to [`MAX_KEY_LEN`] visible ASCII
//! characters (a UUID is the usual choice); anything else is 400.

use std::collections::{HashMap, VecDeque};

use axum::http::HeaderMap;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::outbox::ClientKey;

/// The header's name.
pub const HEADER: &str = "idempotency-key";
/// Longest key accepted.
pub const MAX_KEY_LEN: usize = 128;
/// Pick-list keys remembered (oldest forgotten first).
pub const TASK_KEYS: usize = 4096;

/// The request's key, if it sent one: `Err` says what is wrong with it.
pub fn key_of(headers: &HeaderMap) -> Result<Option<String>, String> {
    let Some(value) = headers.get(HEADER) else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or_default();
    if text.is_empty() || text.len() > MAX_KEY_LEN || !text.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "Idempotency-Key must be 1 to {MAX_KEY_LEN} visible ASCII characters (a UUID is a good key); send the same key with every retry of one request"
        ));
    }
    Ok(Some(text.to_string()))
}

/// The key with the digest of the request's canonical JSON.
pub fn client_key(key: String, body: &Value) -> ClientKey {
    // serde_json's maps are ordered by key, so this text is canonical.
    let canonical = serde_json::to_vec(body).unwrap_or_default();
    ClientKey {
        key,
        body_sha256: Sha256::digest(&canonical).into(),
    }
}

/// What a remembered pick-list key answers.
#[derive(Debug, Clone, PartialEq)]
pub enum Remembered {
    /// The same request came before: its answer body.
    Same(Value),
    /// The key came with another request.
    Conflict,
}

/// The last [`TASK_KEYS`] pick-list keys with their request digest and
/// answer.
#[derive(Debug, Default)]
pub struct TaskKeys {
    answers: HashMap<String, ([u8; 32], Value)>,
    order: VecDeque<String>,
}

impl TaskKeys {
    /// What `key` answered before, if it was seen.
    pub fn lookup(&self, key: &ClientKey) -> Option<Remembered> {
        self.answers.get(&key.key).map(|(digest, answer)| {
            if *digest == key.body_sha256 {
                Remembered::Same(answer.clone())
            } else {
                Remembered::Conflict
            }
        })
    }

    /// Remembers the answer to a new key, forgetting the oldest beyond
    /// [`TASK_KEYS`].
    pub fn remember(&mut self, key: &ClientKey, answer: Value) {
        if self
            .answers
            .insert(key.key.clone(), (key.body_sha256, answer))
            .is_none()
        {
            self.order.push_back(key.key.clone());
        }
        while self.order.len() > TASK_KEYS {
            if let Some(old) = self.order.pop_front() {
                self.answers.remove(&old);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use serde_json::json;

    #[test]
    fn keys_are_checked() {
        let mut h = HeaderMap::new();
        assert_eq!(key_of(&h), Ok(None));
        h.insert(HEADER, HeaderValue::from_static("0190a1b2-key"));
        assert_eq!(key_of(&h), Ok(Some("0190a1b2-key".into())));
        h.insert(HEADER, HeaderValue::from_static("has space"));
        assert!(key_of(&h).is_err());
        h.insert(HEADER, HeaderValue::from_static(""));
        assert!(key_of(&h).is_err());
        let long = "k".repeat(MAX_KEY_LEN + 1);
        h.insert(HEADER, HeaderValue::from_str(&long).expect("header"));
        assert!(key_of(&h).is_err());
    }

    #[test]
    fn digest_ignores_key_order_and_whitespace() {
        let a: Value = serde_json::from_str(r#"{"a": 1, "b": {"c": 2}}"#).expect("json");
        let b: Value = serde_json::from_str(r#"{"b":{"c":2},"a":1}"#).expect("json");
        let c = json!({"a": 1, "b": {"c": 3}});
        let k = |v: &Value| client_key("k".into(), v).body_sha256;
        assert_eq!(k(&a), k(&b));
        assert_ne!(k(&a), k(&c));
    }

    #[test]
    fn task_keys_answer_same_conflict_and_forget_the_oldest() {
        let mut keys = TaskKeys::default();
        let first = client_key("k-0".into(), &json!({"order": "SO-1"}));
        keys.remember(&first, json!({"order": "SO-1"}));
        assert_eq!(
            keys.lookup(&first),
            Some(Remembered::Same(json!({"order": "SO-1"})))
        );
        let other = client_key("k-0".into(), &json!({"order": "SO-2"}));
        assert_eq!(keys.lookup(&other), Some(Remembered::Conflict));
        for i in 1..=TASK_KEYS {
            keys.remember(&client_key(format!("k-{i}"), &json!(i)), json!(i));
        }
        assert_eq!(keys.lookup(&first), None, "the oldest key is forgotten");
        assert_eq!(keys.answers.len(), TASK_KEYS);
    }
}
