//! Odoo's three external APIs, as request bodies and answer readers without
//! I/O (research `erp-and-events.md` §1.1; Odoo's `external_api.rst`).
//!
//! | transport | request | auth | errors |
//! |---|---|---|---|
//! | `/jsonrpc` | `{"jsonrpc":"2.0","method":"call","params":{"service":"object","method":"execute_kw","args":[db, uid, secret, model, method, args, kwargs]}}` | `common.authenticate` → uid; the secret in every call | HTTP 200 + `error` |
//! | `/web/dataset/call_kw/<model>/<method>` | `{"jsonrpc":"2.0","method":"call","params":{"model","method","args","kwargs"}}` | `session_id` cookie from `/web/session/authenticate` | HTTP 200 + `error`; `code: 100` = session expired |
//! | `/json/2/<model>/<method>` (19+) | `{"ids": [...], "context": {...}, <param>: <value>, ...}` (named) | `Authorization: bearer <API key>`, `X-Odoo-Database` | real 4xx/5xx, body `{name, message, arguments, context, debug}` |
//!
//! An [`OrmCall`] holds one ORM method call with its parameters named as in
//! Odoo's Python signatures and listed in signature order, so the same call
//! renders positionally (`execute_kw`, `call_kw`) and by name (JSON-2).
//! Record methods take the record ids first (`ids`); `create` is always
//! positional on the RPC routes (Odoo's `call_kw` for `create` reads
//! `args[0]`).
//!
//! Errors are classified by the exception's qualified `name` (`data.name`
//! on the RPC routes, `name` on JSON-2), which is stable across 17–19,
//! never by the translated message, except the PostgreSQL serialization
//! failure, which is also recognised by its fixed English text.

use serde_json::{Map, Value, json};

/// One ORM method call.
#[derive(Debug, Clone, PartialEq)]
pub struct OrmCall {
    /// The model (`stock.picking`).
    pub model: String,
    /// The method (`search_read`, `button_validate`).
    pub method: &'static str,
    /// The records a record method runs on; `None` for `@api.model` methods.
    pub ids: Option<Vec<i64>>,
    /// The parameters, named as in Odoo, in signature order.
    pub params: Vec<(&'static str, Value)>,
    /// The call's context (an object).
    pub context: Value,
}

impl OrmCall {
    /// A model-level call (`search_read`, `create`).
    pub fn model(model: &str, method: &'static str) -> Self {
        Self {
            model: model.to_owned(),
            method,
            ids: None,
            params: Vec::new(),
            context: Value::Object(Map::new()),
        }
    }

    /// A record-level call (`write`, `button_validate`) on `ids`.
    pub fn records(model: &str, method: &'static str, ids: Vec<i64>) -> Self {
        Self {
            ids: Some(ids),
            ..Self::model(model, method)
        }
    }

    /// Adds the next parameter.
    #[must_use]
    pub fn param(mut self, name: &'static str, value: Value) -> Self {
        self.params.push((name, value));
        self
    }

    /// Sets the context.
    #[must_use]
    pub fn with_context(mut self, context: Value) -> Self {
        self.context = context;
        self
    }

    /// `args` of `execute_kw` / `call_kw`: the ids first, then the values.
    fn positional(&self) -> Vec<Value> {
        let ids = self.ids.iter().map(|ids| json!(ids));
        ids.chain(self.params.iter().map(|(_, v)| v.clone()))
            .collect()
    }

    /// `model.method`, for messages.
    pub fn name(&self) -> String {
        format!("{}.{}", self.model, self.method)
    }
}

/// `/jsonrpc` body of `common.<method>(*args)`.
pub fn common(id: u64, method: &str, args: Value) -> Value {
    json!({"jsonrpc": "2.0", "method": "call", "id": id,
        "params": {"service": "common", "method": method, "args": args}})
}

/// `/jsonrpc` body of `object.execute_kw(db, uid, secret, model, method, args, kwargs)`.
pub fn execute_kw(id: u64, database: &str, uid: i64, secret: &str, call: &OrmCall) -> Value {
    json!({"jsonrpc": "2.0", "method": "call", "id": id,
    "params": {"service": "object", "method": "execute_kw", "args": [
        database, uid, secret, call.model, call.method, call.positional(),
        {"context": call.context},
    ]}})
}

/// `/web/session/authenticate` body.
pub fn web_authenticate(id: u64, database: &str, login: &str, password: &str) -> Value {
    json!({"jsonrpc": "2.0", "method": "call", "id": id,
        "params": {"db": database, "login": login, "password": password}})
}

/// Body of a JSON-RPC route that takes no parameters (`/web/webclient/version_info`).
pub fn empty_call(id: u64) -> Value {
    json!({"jsonrpc": "2.0", "method": "call", "id": id, "params": {}})
}

/// Path (below the base URL) and body of `/web/dataset/call_kw`.
pub fn call_kw(id: u64, call: &OrmCall) -> (String, Value) {
    (
        format!("web/dataset/call_kw/{}/{}", call.model, call.method),
        json!({"jsonrpc": "2.0", "method": "call", "id": id,
            "params": {"model": call.model, "method": call.method,
                "args": call.positional(), "kwargs": {"context": call.context}}}),
    )
}

/// Path (below the base URL) and body of a JSON-2 call.
pub fn json2(call: &OrmCall) -> (String, Value) {
    let mut body = Map::new();
    if let Some(ids) = &call.ids {
        body.insert("ids".into(), json!(ids));
    }
    body.insert("context".into(), call.context.clone());
    for (name, value) in &call.params {
        body.insert((*name).to_owned(), value.clone());
    }
    (
        format!("json/2/{}/{}", call.model, call.method),
        Value::Object(body),
    )
}

/// What kind of error Odoo raised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// `code: 100` / `odoo.http.SessionExpiredException`: log in again.
    SessionExpired,
    /// `odoo.exceptions.AccessDenied`: the login or key was refused.
    AccessDenied,
    /// PostgreSQL serialization failure or deadlock that outlived Odoo's own
    /// retries (`SERIALIZATION_FAILURE, retry 1/5`): re-read and re-apply.
    Conflict,
    /// `UserError`, `ValidationError`, `RedirectWarning`: the ERP refuses
    /// the request as it is.
    User,
    /// `AccessError`: the user lacks rights on a model or record.
    Access,
    /// `MissingError`: a record was deleted meanwhile.
    Missing,
    /// Anything else (a server bug, a database down).
    Server,
}

/// An Odoo error, reduced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OdooError {
    /// Its kind.
    pub kind: ErrorKind,
    /// The exception's qualified name (`odoo.exceptions.UserError`).
    pub name: String,
    /// Its message.
    pub message: String,
}

/// A JSON-RPC answer in an HTTP 200.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// `result`.
    Result(Value),
    /// `error`.
    Error(OdooError),
}

/// The kind of an error from its JSON-RPC `code`, qualified `name` and
/// message.
pub fn kind_of(code: Option<i64>, name: &str, message: &str) -> ErrorKind {
    let short = name.rsplit('.').next().unwrap_or(name);
    if code == Some(100) || short == "SessionExpiredException" {
        return ErrorKind::SessionExpired;
    }
    match short {
        "AccessDenied" => ErrorKind::AccessDenied,
        "SerializationFailure"
        | "DeadlockDetected"
        | "LockNotAvailable"
        | "TransactionRollbackError" => ErrorKind::Conflict,
        "UserError" | "ValidationError" | "RedirectWarning" | "except_orm" => ErrorKind::User,
        "AccessError" => ErrorKind::Access,
        "MissingError" => ErrorKind::Missing,
        _ if message.contains("could not serialize access") => ErrorKind::Conflict,
        _ => ErrorKind::Server,
    }
}

/// Reads a JSON-RPC body from an HTTP 200; `Err` names what was not JSON-RPC.
pub fn answer(body: &str) -> Result<Answer, String> {
    let value: Value = serde_json::from_str(body).map_err(|e| {
        format!(
            "Odoo answered HTTP 200 with a body that is not JSON ({e}): {}",
            clip(body)
        )
    })?;
    if let Some(error) = value.get("error").filter(|e| !e.is_null()) {
        let code = error.get("code").and_then(Value::as_i64);
        let data = error.get("data").unwrap_or(&Value::Null);
        let name = data.get("name").and_then(Value::as_str).unwrap_or_default();
        let message = data
            .get("message")
            .and_then(Value::as_str)
            .or_else(|| error.get("message").and_then(Value::as_str))
            .unwrap_or_default()
            .trim()
            .to_owned();
        return Ok(Answer::Error(OdooError {
            kind: kind_of(code, name, &message),
            name: name.to_owned(),
            message,
        }));
    }
    match value.get("result") {
        Some(result) => Ok(Answer::Result(result.clone())),
        None => Err(format!(
            "Odoo answered HTTP 200 without `result` or `error`: {}",
            clip(body)
        )),
    }
}

/// Reads a JSON-2 error body (`{name, message, arguments, context, debug}`);
/// `None` when it is not one (a proxy's page, say).
pub fn json2_error(body: &str) -> Option<OdooError> {
    let value: Value = serde_json::from_str(body).ok()?;
    let name = value.get("name")?.as_str()?.to_owned();
    let message = value
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .trim()
        .to_owned();
    Some(OdooError {
        kind: kind_of(None, &name, &message),
        name,
        message,
    })
}

/// A window action a button returned instead of `True` (a wizard asking a
/// person to decide).
#[derive(Debug, Clone, PartialEq)]
pub struct Action {
    /// The wizard's model (`stock.backorder.confirmation`).
    pub res_model: String,
    /// The action's title.
    pub name: String,
    /// The context the wizard must be created and run with.
    pub context: Value,
}

/// The action in a button's result, if it is one.
pub fn action_of(result: &Value) -> Option<Action> {
    let object = result.as_object()?;
    let kind = object.get("type").and_then(Value::as_str)?;
    if !kind.starts_with("ir.actions.") {
        return None;
    }
    Some(Action {
        res_model: object
            .get("res_model")
            .and_then(Value::as_str)
            .unwrap_or(kind)
            .to_owned(),
        name: object
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        context: object
            .get("context")
            .filter(|c| c.is_object())
            .cloned()
            .unwrap_or_else(|| Value::Object(Map::new())),
    })
}

/// The major version in `server_version_info` (`[17, 0, 0, "final", 0, ""]`).
pub fn major_version(info: &Value) -> Option<u64> {
    info.get("server_version_info")?.get(0)?.as_u64()
}

/// A many2one value as read (`[id, "name"]` or `false`): the id.
pub fn many2one(value: Option<&Value>) -> Option<i64> {
    let value = value?;
    value
        .get(0)
        .and_then(Value::as_i64)
        .or_else(|| value.as_i64())
}

/// At most 200 characters of a body, for messages.
pub fn clip(body: &str) -> String {
    body.chars().take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_call_renders_for_each_transport() {
        let call = OrmCall::records("stock.move.line", "write", vec![501])
            .param("vals", json!({"quantity": 4, "picked": true}));
        assert_eq!(
            execute_kw(6, "prod", 7, "key", &call),
            json!({"jsonrpc": "2.0", "method": "call", "id": 6, "params": {"service": "object",
                "method": "execute_kw", "args": ["prod", 7, "key", "stock.move.line", "write",
                [[501], {"quantity": 4, "picked": true}], {"context": {}}]}})
        );
        let (path, body) = call_kw(6, &call);
        assert_eq!(path, "web/dataset/call_kw/stock.move.line/write");
        assert_eq!(
            body["params"]["args"],
            json!([[501], {"quantity": 4, "picked": true}])
        );
        let validate = OrmCall::records("stock.picking", "button_validate", vec![42])
            .with_context(json!({"skip_backorder": true, "picking_ids_not_to_backorder": [42]}));
        let (path, body) = json2(&validate);
        assert_eq!(path, "json/2/stock.picking/button_validate");
        // The research's example request, exactly.
        assert_eq!(
            body,
            json!({"ids": [42], "context": {"skip_backorder": true, "picking_ids_not_to_backorder": [42]}})
        );
        let search = OrmCall::model("stock.picking", "search_read")
            .param("domain", json!([["origin", "=", "SO-42"]]))
            .param("fields", json!(["id", "state"]));
        assert_eq!(
            json2(&search).1,
            json!({"context": {}, "domain": [["origin", "=", "SO-42"]], "fields": ["id", "state"]})
        );
        assert_eq!(
            execute_kw(1, "d", 2, "s", &search)["params"]["args"][5],
            json!([[["origin", "=", "SO-42"]], ["id", "state"]])
        );
    }

    #[test]
    fn errors_as_odoo_sends_them() {
        let user = r#"{"jsonrpc":"2.0","id":3,"error":{"code":200,"message":"Odoo Server Error","data":{"name":"odoo.exceptions.UserError","message":"Nothing to check the availability for.","arguments":["Nothing to check the availability for."],"debug":"Traceback…"}}}"#;
        assert_eq!(
            answer(user),
            Ok(Answer::Error(OdooError {
                kind: ErrorKind::User,
                name: "odoo.exceptions.UserError".into(),
                message: "Nothing to check the availability for.".into()
            }))
        );
        let expired = r#"{"jsonrpc":"2.0","id":4,"error":{"code":100,"message":"Odoo Session Expired","data":{"name":"odoo.http.SessionExpiredException","message":"Session expired"}}}"#;
        assert!(
            matches!(answer(expired), Ok(Answer::Error(e)) if e.kind == ErrorKind::SessionExpired)
        );
        let bare =
            r#"{"jsonrpc":"2.0","id":4,"error":{"code":100,"message":"Odoo Session Expired"}}"#;
        assert!(
            matches!(answer(bare), Ok(Answer::Error(e)) if e.kind == ErrorKind::SessionExpired && e.message == "Odoo Session Expired")
        );
        let serial = r#"{"jsonrpc":"2.0","id":5,"error":{"code":200,"message":"Odoo Server Error","data":{"name":"psycopg2.errors.SerializationFailure","message":"could not serialize access due to concurrent update\n"}}}"#;
        assert!(
            matches!(answer(serial), Ok(Answer::Error(e)) if e.kind == ErrorKind::Conflict && e.message == "could not serialize access due to concurrent update")
        );
        assert_eq!(
            kind_of(
                Some(200),
                "psycopg2.OperationalError",
                "could not serialize access due to read/write dependencies"
            ),
            ErrorKind::Conflict
        );
        assert_eq!(
            kind_of(Some(200), "odoo.exceptions.ValidationError", ""),
            ErrorKind::User
        );
        assert_eq!(
            kind_of(Some(200), "odoo.exceptions.AccessDenied", ""),
            ErrorKind::AccessDenied
        );
        assert_eq!(
            kind_of(Some(200), "odoo.exceptions.AccessError", ""),
            ErrorKind::Access
        );
        assert_eq!(
            kind_of(Some(200), "builtins.KeyError", "x"),
            ErrorKind::Server
        );
        assert_eq!(
            answer(r#"{"jsonrpc":"2.0","id":1,"result":false}"#),
            Ok(Answer::Result(json!(false)))
        );
        assert!(answer("<html>").is_err());
        assert!(answer(r#"{"jsonrpc":"2.0","id":1}"#).is_err());
        // JSON-2, from external_api.rst.
        let unauthorized = r#"{"name": "werkzeug.exceptions.Unauthorized", "message": "Invalid apikey", "arguments": ["Invalid apikey", 401], "context": {}, "debug": "Traceback"}"#;
        assert_eq!(
            json2_error(unauthorized).map(|e| (e.kind, e.message)),
            Some((ErrorKind::Server, "Invalid apikey".into()))
        );
        assert_eq!(json2_error("<html>bad gateway</html>"), None);
    }

    #[test]
    fn actions_versions_and_many2ones() {
        let wizard = json!({"name": "Create Backorder?", "type": "ir.actions.act_window",
            "res_model": "stock.backorder.confirmation", "target": "new",
            "context": {"button_validate_picking_ids": [42], "default_pick_ids": [[4, 42]]}});
        let action = action_of(&wizard).expect("an action");
        assert_eq!(action.res_model, "stock.backorder.confirmation");
        assert_eq!(action.context["button_validate_picking_ids"], json!([42]));
        assert_eq!(action_of(&json!(true)), None);
        assert_eq!(action_of(&json!({"id": 1})), None);
        assert_eq!(
            major_version(&json!({"server_version_info": [18, 0, 0, "final", 0, ""]})),
            Some(18)
        );
        assert_eq!(many2one(Some(&json!([7, "Box"]))), Some(7));
        assert_eq!(many2one(Some(&json!(false))), None);
        assert_eq!(many2one(None), None);
    }
}
