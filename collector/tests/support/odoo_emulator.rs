//! A stateful emulator of the parts of Odoo 17/18/19 the dockline Odoo
//! adapter touches, on 127.0.0.1:0. It is **not Odoo**: it encodes only the
//! behaviours research `erp-and-events.md` §1.1 cites, so tests against it
//! are named `odoo_emulated_*` and prove the adapter against those
//! behaviours, never against a real server.
//!
//! Encoded (each is a counter or a state the tests read):
//! - transports: `POST /jsonrpc` (`common.version`, `common.authenticate`,
//!   `object.execute_kw` with db/uid/secret checked on every call),
//!   `/web/session/authenticate` (password only, `session_id` cookie) +
//!   `/web/dataset/call_kw/<model>/<method>`, and on 19 only
//!   `/json/2/<model>/<method>` (bearer API key, `X-Odoo-Database`, named
//!   parameters, `ids` and `context` top-level); a 17/18 server answers 404
//!   there;
//! - errors as Odoo sends them: HTTP 200 + `error` (`code: 200`,
//!   `data.name` = the exception's qualified name) on the RPC routes,
//!   `code: 100` "Odoo Session Expired" for a dead web session, JSON-2 real
//!   statuses with `{name, message, arguments, context, debug}` (401 for a
//!   bad key, as documented; 422 for `UserError`, 500 for a serialization
//!   failure: these two statuses are assumptions);
//! - the stock model subset: `stock.picking` (draft/confirmed/assigned/
//!   done/cancel, `origin`, `backorder_id`, `picking_type_code`),
//!   `stock.move` (demand `product_uom_qty`, `quantity`, `picked`),
//!   `stock.move.line` (`quantity` and `picked`, 17+), `product.product`,
//!   `ir.attachment`, the package model per version (`stock.quant.package`
//!   on 17/18, `stock.package` on 19; the other name is an unknown model);
//! - `button_validate`: `_pre_action_done_hook` marks every move picked
//!   when none is (the auto-pick hook, persisted even when a wizard is
//!   returned), then returns the `stock.backorder.confirmation` action dict
//!   when a picked quantity is short of the demand unless the context has
//!   `skip_backorder`; `_action_done` creates a backorder for the rest
//!   unless the picking is in `picking_ids_not_to_backorder`; a done or
//!   cancelled picking raises `UserError`;
//! - the wizard: `create` then `process` (backorder) or
//!   `process_cancel_backorder` (no backorder), both validating the
//!   context's `button_validate_picking_ids` with `skip_backorder`;
//! - faults on demand: sessions expired, the password or API key changed,
//!   a serialization failure (`psycopg2.errors.SerializationFailure`, "could
//!   not serialize access due to concurrent update") or a `UserError` on
//!   the next call of a method, another module's pre-done wizard.
//!
//! Not encoded: stock quants and reservations, units of measure, lots,
//! access rights, record rules, the real ORM's field semantics beyond the
//! fields above.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Map, Value, json};
use tokio::task::JoinHandle;

/// The database, login and secrets every emulator starts with.
pub const DATABASE: &str = "prod";
pub const LOGIN: &str = "dockline-bot";
pub const PASSWORD: &str = "bot-password";
pub const API_KEY: &str = "6578616d706c65206a736f6e20617069206b6579";
const UID: i64 = 7;

/// Effects counted so tests can assert "exactly once".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    /// Successful logins (`common.authenticate` or web).
    pub logins: u32,
    /// Pickings moved to `done`.
    pub validations: u32,
    /// Backorder pickings created.
    pub backorders: u32,
    /// Remainders cancelled instead of backordered.
    pub remainders_cancelled: u32,
    /// Backorder wizard action dicts returned.
    pub backorder_wizards: u32,
    /// Other modules' wizards returned.
    pub other_wizards: u32,
    /// Times the auto-pick hook marked every move picked.
    pub auto_picks: u32,
    /// Packages created.
    pub packages: u32,
    /// Attachments created.
    pub attachments: u32,
    /// `stock.move.line.write` calls applied.
    pub line_writes: u32,
    /// Calls answered "session expired".
    pub sessions_expired: u32,
    /// Injected faults answered.
    pub faults: u32,
}

/// A fault for the next call of a method.
#[derive(Debug, Clone)]
pub enum Fault {
    /// `psycopg2.errors.SerializationFailure` after Odoo's own retries.
    Serialization,
    /// `odoo.exceptions.UserError` with this message.
    User(String),
}

struct OdooErr {
    name: String,
    message: String,
    status: u16,
}

impl OdooErr {
    fn user(message: impl Into<String>) -> Self {
        Self {
            name: "odoo.exceptions.UserError".into(),
            message: message.into(),
            status: 422,
        }
    }
    fn access_denied() -> Self {
        Self {
            name: "odoo.exceptions.AccessDenied".into(),
            message: "Access Denied".into(),
            status: 403,
        }
    }
}

#[derive(Default)]
struct Db {
    version: u8,
    password: String,
    api_key: String,
    models: BTreeMap<String, Vec<Map<String, Value>>>,
    next_id: i64,
    sessions: HashSet<String>,
    faults: Vec<(String, Fault)>,
    pre_done_wizard: Option<String>,
    counters: Counters,
    calls: Vec<String>,
}

/// The emulator; stops when dropped.
pub struct OdooEmulator {
    /// Its address.
    pub addr: SocketAddr,
    db: Arc<Mutex<Db>>,
    task: JoinHandle<()>,
}

impl Drop for OdooEmulator {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type Shared = Arc<Mutex<Db>>;

impl OdooEmulator {
    /// Starts an Odoo `version` (17, 18 or 19).
    pub async fn start(version: u8) -> Self {
        let db = Arc::new(Mutex::new(Db {
            version,
            password: PASSWORD.into(),
            api_key: API_KEY.into(),
            next_id: 1,
            ..Db::default()
        }));
        let app = Router::new()
            .route("/jsonrpc", post(jsonrpc))
            .route("/web/session/authenticate", post(web_authenticate))
            .route("/web/webclient/version_info", post(version_info_handler))
            .route("/web/dataset/call_kw/{model}/{method}", post(call_kw))
            .route("/json/2/{model}/{method}", post(json2))
            .with_state(Arc::clone(&db));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, db, task }
    }

    fn db(&self) -> std::sync::MutexGuard<'_, Db> {
        self.db.lock().expect("emulator lock")
    }

    /// Adds a product with this barcode; its id.
    pub fn add_product(&self, barcode: &str) -> i64 {
        let mut db = self.db();
        db.insert(
            "product.product",
            json!({"name": format!("Product {barcode}"), "barcode": barcode, "default_code": false}),
        )
    }

    /// Adds an outgoing picking for `origin` with one move per (product,
    /// demand); `assigned` reserves everything (one line per move, quantity
    /// = demand, not picked). Its id.
    pub fn add_delivery(&self, origin: &str, demand: &[(i64, f64)], state: &str) -> i64 {
        self.db().delivery(origin, demand, state, None)
    }

    /// A picking's fields.
    pub fn picking(&self, id: i64) -> Map<String, Value> {
        self.db()
            .get("stock.picking", id)
            .cloned()
            .expect("picking")
    }

    /// A picking's state.
    pub fn state(&self, id: i64) -> String {
        self.picking(id)["state"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Sets a picking's state (a person did something in Odoo).
    pub fn set_state(&self, id: i64, state: &str) {
        let mut db = self.db();
        db.get_mut("stock.picking", id).expect("picking")["state"] = json!(state);
    }

    /// Validates a picking as a person would with everything picked.
    pub fn validate_by_hand(&self, id: i64) {
        let mut db = self.db();
        let lines = db.ids_where("stock.move.line", |l| l["picking_id"] == json!(id));
        for l in lines {
            db.get_mut("stock.move.line", l).expect("line")["picked"] = json!(true);
        }
        db.validate(&[id], &json!({"skip_backorder": true}))
            .ok()
            .expect("validated by hand");
    }

    /// The move lines of a picking.
    pub fn lines(&self, picking: i64) -> Vec<Map<String, Value>> {
        self.db()
            .all("stock.move.line", |l| l["picking_id"] == json!(picking))
    }

    /// The moves of a picking.
    pub fn moves(&self, picking: i64) -> Vec<Map<String, Value>> {
        self.db()
            .all("stock.move", |m| m["picking_id"] == json!(picking))
    }

    /// Every picking whose origin is `origin`.
    pub fn pickings_of(&self, origin: &str) -> Vec<Map<String, Value>> {
        self.db()
            .all("stock.picking", |p| p["origin"] == json!(origin))
    }

    /// Attachments of a picking (names).
    pub fn attachments(&self, picking: i64) -> Vec<String> {
        self.db()
            .all("ir.attachment", |a| {
                a["res_model"] == json!("stock.picking") && a["res_id"] == json!(picking)
            })
            .iter()
            .map(|a| a["name"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    /// Records of any model.
    pub fn records(&self, model: &str) -> Vec<Map<String, Value>> {
        self.db().all(model, |_| true)
    }

    /// The effect counters.
    pub fn counters(&self) -> Counters {
        self.db().counters.clone()
    }

    /// Every `model.method` called, in order.
    pub fn calls(&self) -> Vec<String> {
        self.db().calls.clone()
    }

    /// Ends every web session (the next call answers `code: 100`).
    pub fn expire_sessions(&self) {
        self.db().sessions.clear();
    }

    /// Changes the user's password (logins with the old one fail).
    pub fn set_password(&self, password: &str) {
        self.db().password = password.into();
    }

    /// Revokes the API key (JSON-2 answers 401, `/jsonrpc` AccessDenied).
    pub fn revoke_api_key(&self) {
        self.db().api_key = String::new();
    }

    /// The next call of `model.method` fails with `fault` (once per call).
    pub fn fail_next(&self, call: &str, fault: Fault) {
        self.db().faults.push((call.into(), fault));
    }

    /// Another module adds a pre-done wizard (`res_model`) to
    /// `button_validate`.
    pub fn add_pre_done_wizard(&self, res_model: &str) {
        self.db().pre_done_wizard = Some(res_model.into());
    }
}

impl Db {
    fn package_model(&self) -> &'static str {
        if self.version >= 19 {
            "stock.package"
        } else {
            "stock.quant.package"
        }
    }

    fn insert(&mut self, model: &str, values: Value) -> i64 {
        let id = self.next_id;
        self.next_id += 1;
        let mut record = values.as_object().cloned().unwrap_or_default();
        record.insert("id".into(), json!(id));
        self.models.entry(model.into()).or_default().push(record);
        id
    }

    fn get(&self, model: &str, id: i64) -> Option<&Map<String, Value>> {
        self.models
            .get(model)?
            .iter()
            .find(|r| r["id"] == json!(id))
    }

    fn get_mut(&mut self, model: &str, id: i64) -> Option<&mut Map<String, Value>> {
        self.models
            .get_mut(model)?
            .iter_mut()
            .find(|r| r["id"] == json!(id))
    }

    fn all(
        &self,
        model: &str,
        keep: impl Fn(&Map<String, Value>) -> bool,
    ) -> Vec<Map<String, Value>> {
        self.models
            .get(model)
            .map(|rs| rs.iter().filter(|r| keep(r)).cloned().collect())
            .unwrap_or_default()
    }

    fn ids_where(&self, model: &str, keep: impl Fn(&Map<String, Value>) -> bool) -> Vec<i64> {
        self.all(model, keep)
            .iter()
            .filter_map(|r| r["id"].as_i64())
            .collect()
    }

    fn delivery(
        &mut self,
        origin: &str,
        demand: &[(i64, f64)],
        state: &str,
        backorder_of: Option<i64>,
    ) -> i64 {
        let n = self.models.get("stock.picking").map_or(0, Vec::len) + 1;
        let picking = self.insert(
            "stock.picking",
            json!({"name": format!("WH/OUT/{n:05}"), "origin": origin, "state": state,
                "picking_type_code": "outgoing", "backorder_id": backorder_of.map_or(json!(false), |b| json!(b))}),
        );
        for (product, qty) in demand {
            let reserved = if state == "assigned" { *qty } else { 0.0 };
            let mv = self.insert(
                "stock.move",
                json!({"picking_id": picking, "product_id": product, "product_uom_qty": qty,
                    "quantity": reserved, "picked": false, "state": state}),
            );
            if state == "assigned" {
                self.insert(
                    "stock.move.line",
                    json!({"picking_id": picking, "move_id": mv, "product_id": product,
                        "quantity": qty, "picked": false, "result_package_id": false}),
                );
            }
        }
        picking
    }

    /// The model a many2one field points to.
    fn target(&self, field: &str) -> Option<&'static str> {
        Some(match field {
            "product_id" => "product.product",
            "picking_id" | "backorder_id" => "stock.picking",
            "move_id" => "stock.move",
            "result_package_id" => self.package_model(),
            _ => return None,
        })
    }

    fn models_known(&self) -> Vec<&'static str> {
        vec![
            "stock.picking",
            "stock.move",
            "stock.move.line",
            "product.product",
            "ir.attachment",
            "stock.backorder.confirmation",
            "res.users",
            self.package_model(),
        ]
    }

    /// Runs one ORM call.
    fn call(
        &mut self,
        model: &str,
        method: &str,
        ids: Option<Vec<i64>>,
        named: Map<String, Value>,
        context: &Value,
    ) -> Result<Value, OdooErr> {
        let name = format!("{model}.{method}");
        self.calls.push(name.clone());
        if let Some(i) = self.faults.iter().position(|(c, _)| *c == name) {
            let (_, fault) = self.faults.remove(i);
            self.counters.faults += 1;
            return Err(match fault {
                Fault::Serialization => OdooErr {
                    name: "psycopg2.errors.SerializationFailure".into(),
                    message: "could not serialize access due to concurrent update\n".into(),
                    status: 500,
                },
                Fault::User(m) => OdooErr::user(m),
            });
        }
        if !self.models_known().contains(&model) {
            return Err(OdooErr {
                name: "KeyError".into(),
                message: format!("'{model}'"),
                status: 404,
            });
        }
        let ids = ids.unwrap_or_default();
        match method {
            "search_read" => {
                let domain = named.get("domain").cloned().unwrap_or(json!([]));
                let fields: Vec<String> = named
                    .get("fields")
                    .and_then(Value::as_array)
                    .map(|f| {
                        f.iter()
                            .filter_map(|v| v.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default();
                let limit = named
                    .get("limit")
                    .and_then(Value::as_u64)
                    .unwrap_or(u64::MAX);
                let rows: Vec<Value> = self
                    .all(model, |r| matches(&domain, r))
                    .into_iter()
                    .take(usize::try_from(limit).unwrap_or(usize::MAX))
                    .map(|r| self.render(&r, &fields))
                    .collect();
                Ok(Value::Array(rows))
            }
            "create" => {
                let vals = named.get("vals_list").cloned().unwrap_or(json!([]));
                let list = match &vals {
                    Value::Array(list) => list.clone(),
                    one => vec![one.clone()],
                };
                let mut created = Vec::new();
                for values in list {
                    let mut values = values;
                    if model == "stock.backorder.confirmation" {
                        // pick_ids: [[4, id], …] → [id, …]; keep the context.
                        let picks: Vec<Value> = values["pick_ids"]
                            .as_array()
                            .map(|l| l.iter().filter_map(|c| c.get(1).cloned()).collect())
                            .unwrap_or_default();
                        values["pick_ids"] = Value::Array(picks);
                    }
                    created.push(self.insert(model, values));
                    if model == "ir.attachment" {
                        self.counters.attachments += 1;
                    } else if model == self.package_model() {
                        self.counters.packages += 1;
                    }
                }
                Ok(if vals.is_array() {
                    json!(created)
                } else {
                    json!(created[0])
                })
            }
            "write" => {
                let vals = named
                    .get("vals")
                    .and_then(Value::as_object)
                    .cloned()
                    .unwrap_or_default();
                for id in &ids {
                    let record = self.get_mut(model, *id).ok_or_else(|| OdooErr {
                        name: "odoo.exceptions.MissingError".into(),
                        message: format!(
                            "Record does not exist or has been deleted. (Record: {model}({id},))"
                        ),
                        status: 404,
                    })?;
                    for (k, v) in &vals {
                        record.insert(k.clone(), v.clone());
                    }
                }
                if model == "stock.move.line" {
                    self.counters.line_writes += 1;
                    self.sync_moves();
                }
                Ok(json!(true))
            }
            "button_validate" if model == "stock.picking" => self.validate(&ids, context),
            "process" | "process_cancel_backorder" if model == "stock.backorder.confirmation" => {
                let wizard = ids
                    .first()
                    .and_then(|id| self.get(model, *id))
                    .cloned()
                    .ok_or_else(|| OdooErr::user("The wizard is gone."))?;
                let picks: Vec<i64> = context["button_validate_picking_ids"]
                    .as_array()
                    .map(|l| l.iter().filter_map(Value::as_i64).collect())
                    .unwrap_or_default();
                let mut ctx = context.as_object().cloned().unwrap_or_default();
                ctx.insert("skip_backorder".into(), json!(true));
                if method == "process_cancel_backorder" {
                    ctx.insert(
                        "picking_ids_not_to_backorder".into(),
                        wizard["pick_ids"].clone(),
                    );
                }
                self.validate(&picks, &Value::Object(ctx))
            }
            "context_get" if model == "res.users" => {
                Ok(json!({"lang": "en_US", "tz": "Europe/Brussels", "uid": UID}))
            }
            _ => Err(OdooErr {
                name: "AttributeError".into(),
                message: format!("The method '{method}' does not exist on the model '{model}'"),
                status: 400,
            }),
        }
    }

    /// A record as `search_read` returns it: the fields asked for (all if
    /// none), many2ones as `[id, name]` or `false`.
    fn render(&self, record: &Map<String, Value>, fields: &[String]) -> Value {
        let mut out = Map::new();
        out.insert("id".into(), record["id"].clone());
        for (k, v) in record {
            if !fields.is_empty() && !fields.contains(k) {
                continue;
            }
            let value = match (self.target(k), v.as_i64()) {
                (Some(target), Some(id)) => {
                    let name = self
                        .get(target, id)
                        .and_then(|r| r.get("name"))
                        .cloned()
                        .unwrap_or(json!(""));
                    json!([id, name])
                }
                _ => v.clone(),
            };
            out.insert(k.clone(), value);
        }
        Value::Object(out)
    }

    /// `stock.move.picked` follows its lines.
    fn sync_moves(&mut self) {
        let lines = self.all("stock.move.line", |_| true);
        if let Some(moves) = self.models.get_mut("stock.move") {
            for mv in moves.iter_mut() {
                let mine: Vec<&Map<String, Value>> =
                    lines.iter().filter(|l| l["move_id"] == mv["id"]).collect();
                if !mine.is_empty() {
                    mv.insert(
                        "picked".into(),
                        json!(mine.iter().any(|l| l["picked"] == json!(true))),
                    );
                }
            }
        }
    }

    /// Quantity picked on a move: its picked lines' quantities.
    fn picked_qty(&self, move_id: &Value) -> f64 {
        self.all("stock.move.line", |l| {
            l["move_id"] == *move_id && l["picked"] == json!(true)
        })
        .iter()
        .filter_map(|l| l["quantity"].as_f64())
        .sum()
    }

    /// `button_validate` as research §1.1 describes it.
    fn validate(&mut self, ids: &[i64], context: &Value) -> Result<Value, OdooErr> {
        for id in ids {
            let picking = self
                .get("stock.picking", *id)
                .cloned()
                .ok_or_else(|| OdooErr::user("Missing picking"))?;
            let name = picking["name"].as_str().unwrap_or_default().to_owned();
            match picking["state"].as_str() {
                Some("done") => {
                    return Err(OdooErr::user(format!(
                        "The transfer {name} is already done."
                    )));
                }
                Some("cancel") => {
                    return Err(OdooErr::user(format!(
                        "You cannot validate the cancelled transfer {name}."
                    )));
                }
                _ => {}
            }
            let lines = self.all("stock.move.line", |l| l["picking_id"] == json!(id));
            if lines
                .iter()
                .all(|l| l["quantity"].as_f64().unwrap_or(0.0) <= 0.0)
            {
                return Err(OdooErr::user(
                    "You cannot validate a transfer if no quantities are reserved nor done. To force the transfer, encode quantities.",
                ));
            }
        }
        // _pre_action_done_hook: the auto-pick (persisted whatever follows).
        for id in ids {
            let moves = self.all("stock.move", |m| m["picking_id"] == json!(id));
            if moves.iter().all(|m| m["picked"] != json!(true)) {
                self.counters.auto_picks += 1;
                for l in self.ids_where("stock.move.line", |l| l["picking_id"] == json!(id)) {
                    self.get_mut("stock.move.line", l).expect("line")["picked"] = json!(true);
                }
                self.sync_moves();
            }
        }
        if let Some(model) = self.pre_done_wizard.clone() {
            self.counters.other_wizards += 1;
            return Ok(
                json!({"name": "Confirm", "type": "ir.actions.act_window", "res_model": model,
                "view_mode": "form", "target": "new", "context": context}),
            );
        }
        if context["skip_backorder"] != json!(true) {
            let short = ids.iter().any(|id| {
                self.all("stock.move", |m| m["picking_id"] == json!(id))
                    .iter()
                    .any(|m| {
                        self.picked_qty(&m["id"]) < m["product_uom_qty"].as_f64().unwrap_or(0.0)
                    })
            });
            if short {
                self.counters.backorder_wizards += 1;
                let mut ctx = context.as_object().cloned().unwrap_or_default();
                ctx.insert("button_validate_picking_ids".into(), json!(ids));
                ctx.insert("default_show_transfers".into(), json!(false));
                ctx.insert(
                    "default_pick_ids".into(),
                    json!(ids.iter().map(|id| json!([4, id])).collect::<Vec<_>>()),
                );
                return Ok(
                    json!({"name": "Create Backorder?", "type": "ir.actions.act_window",
                    "view_mode": "form", "res_model": "stock.backorder.confirmation",
                    "views": [[false, "form"]], "target": "new", "context": ctx}),
                );
            }
        }
        // _action_done.
        let not_to_backorder: Vec<i64> = context["picking_ids_not_to_backorder"]
            .as_array()
            .map(|l| l.iter().filter_map(Value::as_i64).collect())
            .unwrap_or_default();
        for id in ids {
            let picking = self
                .get("stock.picking", *id)
                .cloned()
                .expect("checked above");
            let mut rest = Vec::new();
            for mv in self.all("stock.move", |m| m["picking_id"] == json!(id)) {
                let done = self.picked_qty(&mv["id"]);
                let demand = mv["product_uom_qty"].as_f64().unwrap_or(0.0);
                if done < demand {
                    rest.push((mv["product_id"].as_i64().unwrap_or(0), demand - done));
                }
                let m = self
                    .get_mut("stock.move", mv["id"].as_i64().unwrap_or(0))
                    .expect("move");
                m.insert("quantity".into(), json!(done));
                m.insert(
                    "state".into(),
                    json!(if done > 0.0 { "done" } else { "cancel" }),
                );
            }
            // Unpicked lines are dropped.
            if let Some(lines) = self.models.get_mut("stock.move.line") {
                lines.retain(|l| l["picking_id"] != json!(id) || l["picked"] == json!(true));
            }
            if !rest.is_empty() {
                if not_to_backorder.contains(id) {
                    self.counters.remainders_cancelled += 1;
                } else {
                    let origin = picking["origin"].as_str().unwrap_or_default().to_owned();
                    self.delivery(&origin, &rest, "assigned", Some(*id));
                    self.counters.backorders += 1;
                }
            }
            self.get_mut("stock.picking", *id).expect("picking")["state"] = json!("done");
            self.counters.validations += 1;
        }
        Ok(json!(true))
    }
}

/// Evaluates an Odoo domain (Polish notation, implicit `&`) on a record.
fn matches(domain: &Value, record: &Map<String, Value>) -> bool {
    let mut stack: Vec<bool> = Vec::new();
    for token in domain
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .rev()
    {
        match token.as_str() {
            Some(op @ ("&" | "|")) => {
                let a = stack.pop().unwrap_or(true);
                let b = stack.pop().unwrap_or(true);
                stack.push(if op == "&" { a && b } else { a || b });
            }
            Some("!") => {
                let a = stack.pop().unwrap_or(true);
                stack.push(!a);
            }
            _ => stack.push(leaf(token, record)),
        }
    }
    stack.into_iter().all(|b| b)
}

fn leaf(token: &Value, record: &Map<String, Value>) -> bool {
    let (Some(field), Some(op), Some(value)) = (token[0].as_str(), token[1].as_str(), token.get(2))
    else {
        return false;
    };
    let have = record.get(field).unwrap_or(&Value::Bool(false));
    let eq = |a: &Value, b: &Value| match (a, b) {
        (Value::Null | Value::Bool(false), Value::Null | Value::Bool(false)) => true,
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    };
    match op {
        "=" => eq(have, value),
        "!=" => !eq(have, value),
        "in" => value
            .as_array()
            .is_some_and(|l| l.iter().any(|v| eq(have, v))),
        "not in" => !value
            .as_array()
            .is_some_and(|l| l.iter().any(|v| eq(have, v))),
        "=like" => match (have.as_str(), value.as_str()) {
            (Some(text), Some(pattern)) => like(pattern, text),
            _ => false,
        },
        _ => false,
    }
}

/// SQL LIKE with `%` only.
fn like(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('%').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || !text[first.len()..].ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    true
}

// ---- wire ----

fn version_info(version: u8) -> Value {
    json!({"server_version": format!("{version}.0"), "server_version_info": [version, 0, 0, "final", 0, ""],
        "server_serie": format!("{version}.0"), "protocol_version": 1})
}

fn rpc_result(id: &Value, result: Value) -> Response {
    axum::Json(json!({"jsonrpc": "2.0", "id": id, "result": result})).into_response()
}

fn rpc_error(id: &Value, e: &OdooErr) -> Response {
    axum::Json(json!({"jsonrpc": "2.0", "id": id, "error": {"code": 200, "message": "Odoo Server Error",
        "data": {"name": e.name, "message": e.message, "arguments": [e.message], "context": {},
            "debug": format!("Traceback (most recent call last):\n  (emulated)\n{}: {}", e.name, e.message)}}}))
    .into_response()
}

fn session_expired(id: &Value) -> Response {
    axum::Json(
        json!({"jsonrpc": "2.0", "id": id, "error": {"code": 100, "message": "Odoo Session Expired",
        "data": {"name": "odoo.http.SessionExpiredException", "message": "Session expired",
            "arguments": ["Session expired"], "context": {}, "debug": "Traceback (emulated)"}}}),
    )
    .into_response()
}

/// Positional `args` to (ids, named) for the methods the emulator knows.
fn named_args(
    method: &str,
    args: &[Value],
    kwargs: &Value,
) -> (Option<Vec<i64>>, Map<String, Value>, Value) {
    let record_method = matches!(
        method,
        "write" | "button_validate" | "process" | "process_cancel_backorder" | "read" | "unlink"
    );
    let mut args = args.to_vec();
    let ids = if record_method && !args.is_empty() {
        let first = args.remove(0);
        Some(match first {
            Value::Array(l) => l.iter().filter_map(Value::as_i64).collect(),
            v => v.as_i64().into_iter().collect(),
        })
    } else {
        None
    };
    let names: &[&str] = match method {
        "search_read" => &["domain", "fields", "offset", "limit", "order"],
        "create" => &["vals_list"],
        "write" => &["vals"],
        _ => &[],
    };
    let mut named = Map::new();
    for (name, value) in names.iter().zip(args) {
        named.insert((*name).into(), value);
    }
    let mut context = json!({});
    if let Some(kw) = kwargs.as_object() {
        for (k, v) in kw {
            if k == "context" {
                context = v.clone();
            } else {
                named.insert(k.clone(), v.clone());
            }
        }
    }
    (ids, named, context)
}

async fn jsonrpc(State(db): State<Shared>, body: Bytes) -> Response {
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let id = request["id"].clone();
    let params = &request["params"];
    let args = params["args"].as_array().cloned().unwrap_or_default();
    let mut db = db.lock().expect("emulator lock");
    match (params["service"].as_str(), params["method"].as_str()) {
        (Some("common"), Some("version")) => rpc_result(&id, version_info(db.version)),
        (Some("common"), Some("authenticate" | "login")) => {
            let ok = args.first() == Some(&json!(DATABASE))
                && args.get(1) == Some(&json!(LOGIN))
                && args
                    .get(2)
                    .and_then(Value::as_str)
                    .is_some_and(|s| db.secret_ok(s));
            if ok {
                db.counters.logins += 1;
            }
            rpc_result(&id, if ok { json!(UID) } else { json!(false) })
        }
        (Some("object"), Some("execute_kw")) => {
            let ok = args.first() == Some(&json!(DATABASE))
                && args.get(1) == Some(&json!(UID))
                && args
                    .get(2)
                    .and_then(Value::as_str)
                    .is_some_and(|s| db.secret_ok(s));
            if !ok {
                return rpc_error(&id, &OdooErr::access_denied());
            }
            let model = args
                .get(3)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            let method = args
                .get(4)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            let positional = args
                .get(5)
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let (ids, named, context) =
                named_args(&method, &positional, args.get(6).unwrap_or(&Value::Null));
            match db.call(&model, &method, ids, named, &context) {
                Ok(v) => rpc_result(&id, v),
                Err(e) => rpc_error(&id, &e),
            }
        }
        _ => rpc_error(
            &id,
            &OdooErr {
                name: "Exception".into(),
                message: "unknown service or method".into(),
                status: 400,
            },
        ),
    }
}

impl Db {
    /// `/jsonrpc` accepts the password or the API key.
    fn secret_ok(&self, secret: &str) -> bool {
        !secret.is_empty() && (secret == self.password || secret == self.api_key)
    }
}

async fn web_authenticate(State(db): State<Shared>, body: Bytes) -> Response {
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let id = request["id"].clone();
    let p = &request["params"];
    let mut db = db.lock().expect("emulator lock");
    // A web session logs in with the password only (API keys are for RPC).
    let ok = p["db"] == json!(DATABASE)
        && p["login"] == json!(LOGIN)
        && p["password"] == json!(db.password);
    if !ok {
        return rpc_error(&id, &OdooErr::access_denied());
    }
    db.counters.logins += 1;
    let session = format!("s{}x{}", db.next_id, db.counters.logins);
    db.sessions.insert(session.clone());
    let mut info = version_info(db.version);
    info["uid"] = json!(UID);
    info["db"] = json!(DATABASE);
    info["username"] = json!(LOGIN);
    let mut resp = rpc_result(&id, info);
    resp.headers_mut().insert(
        "set-cookie",
        HeaderValue::from_str(&format!(
            "session_id={session}; Expires=Tue, 01 Dec 2099 00:00:00 GMT; HttpOnly; Path=/"
        ))
        .expect("cookie"),
    );
    resp
}

async fn version_info_route(db: &Shared, id: &Value) -> Response {
    let v = db.lock().expect("emulator lock").version;
    rpc_result(id, version_info(v))
}

async fn version_info_handler(State(db): State<Shared>, body: Bytes) -> Response {
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    version_info_route(&db, &request["id"]).await
}

async fn call_kw(
    State(db): State<Shared>,
    Path((model, method)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let id = request["id"].clone();
    let session = headers
        .get("cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|c| {
            c.split(';')
                .find_map(|kv| kv.trim().strip_prefix("session_id="))
        })
        .map(str::to_owned);
    let mut db = db.lock().expect("emulator lock");
    if !session.is_some_and(|s| db.sessions.contains(&s)) {
        db.counters.sessions_expired += 1;
        return session_expired(&id);
    }
    let p = &request["params"];
    let args = p["args"].as_array().cloned().unwrap_or_default();
    let (ids, named, context) = named_args(&method, &args, &p["kwargs"]);
    match db.call(&model, &method, ids, named, &context) {
        Ok(v) => rpc_result(&id, v),
        Err(e) => rpc_error(&id, &e),
    }
}

fn json2_error(e: &OdooErr) -> Response {
    let body = json!({"name": e.name, "message": e.message, "arguments": [e.message, e.status],
        "context": {}, "debug": format!("Traceback (emulated)\n{}: {}", e.name, e.message)});
    (
        StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        axum::Json(body),
    )
        .into_response()
}

async fn json2(
    State(db): State<Shared>,
    Path((model, method)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut db = db.lock().expect("emulator lock");
    if db.version < 19 {
        return (
            StatusCode::NOT_FOUND,
            "<!doctype html><title>404 Not Found</title>",
        )
            .into_response();
    }
    let key = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("bearer ")
                .or_else(|| v.strip_prefix("Bearer "))
        });
    if !key.is_some_and(|k| !db.api_key.is_empty() && k == db.api_key) {
        return json2_error(&OdooErr {
            name: "werkzeug.exceptions.Unauthorized".into(),
            message: "Invalid apikey".into(),
            status: 401,
        });
    }
    if headers.get("x-odoo-database").and_then(|v| v.to_str().ok()) != Some(DATABASE) {
        return json2_error(&OdooErr {
            name: "werkzeug.exceptions.NotFound".into(),
            message: "database not found".into(),
            status: 404,
        });
    }
    let mut named = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v.as_object().cloned())
        .unwrap_or_default();
    let ids = named.remove("ids").and_then(|v| {
        v.as_array()
            .map(|l| l.iter().filter_map(Value::as_i64).collect())
    });
    let context = named.remove("context").unwrap_or(json!({}));
    match db.call(&model, &method, ids, named, &context) {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => json2_error(&e),
    }
}
