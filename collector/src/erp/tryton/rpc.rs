//! Tryton's JSON-RPC, as trytond 8.2 speaks it (`trytond/protocols/jsonrpc.py`
//! and `dispatcher.py`), without I/O.
//!
//! - Every call is `POST /{database}/rpc/` with exactly `{"id", "method",
//!   "params"}`: a body with any other member (`"jsonrpc": "2.0"`) makes
//!   trytond answer errors as bare HTTP 4xx/5xx pages instead.
//! - `common.db.login` takes `[login, {"password": …}, language]` and
//!   answers `[user_id, token, bus_url]`; later calls carry
//!   `Authorization: Session base64("login:user_id:token")`. A refused or
//!   expired session is a real HTTP 401, a login rate limit a 429, an
//!   unknown database a 404, a method outside the model's RPC table a 403.
//! - Model calls take their positional arguments then the context last:
//!   `model.stock.shipment.out.search_read` `[domain, offset, limit, order,
//!   fields, context]`, a button `[[ids], context]`.
//! - Errors arrive in HTTP 200 as `{"id", "error": [name, args]}`:
//!   `["UserError", [message, description, domain]]`,
//!   `["UserWarning", [name, message, description]]`,
//!   `["ConcurrencyException", message]`, `["LoginException", [name,
//!   message, type]]`; any other exception as `[str(exception), traceback]`.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Value, json};

/// The body of one call.
pub fn request(id: u64, method: &str, params: Value) -> Value {
    json!({ "id": id, "method": method, "params": params })
}

/// The `Authorization` header value of a session.
pub fn session_header(login: &str, user_id: i64, token: &str) -> String {
    format!(
        "Session {}",
        BASE64.encode(format!("{login}:{user_id}:{token}"))
    )
}

/// Bytes as Tryton's JSON encodes them (for a `Binary` field).
pub fn bytes_value(bytes: &[u8]) -> Value {
    json!({ "__class__": "bytes", "base64": BASE64.encode(bytes) })
}

/// What kind of error Tryton raised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// `UserError` (also `AccessError`, `ValidationError`, refused buttons):
    /// the ERP refuses the request as it is.
    User,
    /// `UserWarning`: the ERP wants a person to confirm.
    Warning,
    /// `ConcurrencyException`: another write got there first.
    Concurrency,
    /// `LoginException`: the login needs more than a password.
    Login,
    /// Any other exception (a locked database, a server bug).
    Server,
}

/// A JSON-RPC answer in an HTTP 200.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// `result`.
    Result(Value),
    /// `error`, reduced to its kind and a readable message.
    Error {
        /// The kind.
        kind: ErrorKind,
        /// The message (and description, when Tryton gave one).
        message: String,
    },
}

/// Reads an HTTP 200 body; `Err` names what was not JSON-RPC.
pub fn answer(body: &str) -> Result<Answer, String> {
    let value: Value = serde_json::from_str(body).map_err(|e| {
        format!(
            "Tryton answered HTTP 200 with a body that is not JSON ({e}): {}",
            body.chars().take(200).collect::<String>()
        )
    })?;
    if let Some(error) = value.get("error").filter(|e| !e.is_null()) {
        let (kind, message) = error_of(error);
        return Ok(Answer::Error { kind, message });
    }
    match value.get("result") {
        Some(result) => Ok(Answer::Result(result.clone())),
        None => Err(format!(
            "Tryton answered HTTP 200 without `result` or `error`: {}",
            body.chars().take(200).collect::<String>()
        )),
    }
}

/// The trimmed text of an optional JSON string ("" otherwise).
fn text(v: Option<&Value>) -> &str {
    v.and_then(Value::as_str).unwrap_or_default().trim()
}

fn error_of(error: &Value) -> (ErrorKind, String) {
    let name = error.get(0).and_then(Value::as_str).unwrap_or_default();
    let args = error.get(1).unwrap_or(&Value::Null);
    let joined = |message: &str, description: &str| {
        if description.is_empty() {
            message.to_owned()
        } else {
            format!("{message} ({description})")
        }
    };
    match name {
        "UserError" => (
            ErrorKind::User,
            joined(text(args.get(0)), text(args.get(1))),
        ),
        "UserWarning" => (
            ErrorKind::Warning,
            joined(text(args.get(1)), text(args.get(2))),
        ),
        "ConcurrencyException" => (ErrorKind::Concurrency, text(Some(args)).to_owned()),
        "LoginException" => (ErrorKind::Login, text(args.get(1)).to_owned()),
        // `[str(exception), traceback]`: the first line says what it was.
        other if !other.is_empty() => (ErrorKind::Server, other.to_owned()),
        _ => (ErrorKind::Server, error.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_and_errors_as_trytond_sends_them() {
        assert_eq!(
            answer(r#"{"id": 3, "result": null}"#),
            Ok(Answer::Result(Value::Null))
        );
        // Measured on 8.2.1: replaying `do` on a done shipment.
        assert_eq!(
            answer(
                r#"{"id": 4, "error": ["UserError", ["You can not call \"do\" on \"1 [SO-42]\" of \"Stock Shipment Out\".", "", null]]}"#
            ),
            Ok(Answer::Error {
                kind: ErrorKind::User,
                message: r#"You can not call "do" on "1 [SO-42]" of "Stock Shipment Out"."#.into()
            })
        );
        assert_eq!(
            answer(r#"{"id": 5, "error": ["UserError", ["Bad.", "Fix it.", null]]}"#),
            Ok(Answer::Error {
                kind: ErrorKind::User,
                message: "Bad. (Fix it.)".into()
            })
        );
        assert_eq!(
            answer(
                r#"{"id": 6, "error": ["ConcurrencyException", "Records were modified in the meanwhile"]}"#
            ),
            Ok(Answer::Error {
                kind: ErrorKind::Concurrency,
                message: "Records were modified in the meanwhile".into()
            })
        );
        assert_eq!(
            answer(r#"{"id": 7, "error": ["UserWarning", ["w1", "Sure?", ""]]}"#),
            Ok(Answer::Error {
                kind: ErrorKind::Warning,
                message: "Sure?".into()
            })
        );
        assert_eq!(
            answer(r#"{"id": 8, "error": ["database is locked", "Traceback …"]}"#),
            Ok(Answer::Error {
                kind: ErrorKind::Server,
                message: "database is locked".into()
            })
        );
        assert!(answer("<html>").is_err());
        assert!(answer(r#"{"id": 9}"#).is_err());
    }

    #[test]
    fn request_shapes() {
        assert_eq!(
            request(
                1,
                "common.db.login",
                json!(["admin", {"password": "p"}, "en"])
            ),
            json!({"id": 1, "method": "common.db.login", "params": ["admin", {"password": "p"}, "en"]})
        );
        // base64("admin:1:tok")
        assert_eq!(
            session_header("admin", 1, "tok"),
            "Session YWRtaW46MTp0b2s="
        );
        assert_eq!(
            bytes_value(b"hi"),
            json!({"__class__": "bytes", "base64": "aGk="})
        );
    }
}
