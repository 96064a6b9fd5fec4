//! The Odoo adapter (`erp.kind = "odoo"`, Odoo 17, 18 and 19): picks,
//! packs, departures and proofs of delivery become writes on the order's
//! delivery (`stock.picking` of type outgoing) and its validation, over
//! `/jsonrpc`, the web session routes or 19's JSON-2 ([`rpc`]).
//!
//! Tested only against a stateful emulator of the behaviours the research
//! cites (`collector/tests/support/odoo_emulator.rs`), never against a real
//! Odoo: Odoo cannot be installed on the build machines.
//!
//! # Finding the picking
//!
//! By the event's order reference (`refs.order`) in the picking's `origin`,
//! among outgoing pickings that are not backorders (`backorder_id = false`:
//! the delivery the devices handled). An event that names a shipment
//! (`refs.shipment`) is matched on the picking's `name` (`WH/OUT/00042`)
//! instead, which is how a backorder's own events find it (a new pick that
//! names only the order while its delivery is done and a backorder is open
//! is refused, never swallowed as a duplicate). Cancelled
//! pickings are ignored unless they are all there is; two open pickings for
//! one reference are refused.
//!
//! # One event, one attempt
//!
//! The attempt reads the picking, asks the pure [`workflow`] what the event
//! needs, and does it with search-before-create and compare-before-write,
//! re-reading the state before the validation:
//! - a pick is first recorded as an attachment on the picking (its
//!   ledger), then the item's line is *set* to the ledger's sum;
//! - a pack creates its package once (searched by name) and moves the
//!   picked, unpacked lines into it;
//! - the validation presses `button_validate`; when Odoo answers with the
//!   backorder wizard's action dict (a short pick), the adapter answers it
//!   as `erp.odoo.backorder` says (`process` or `process_cancel_backorder`
//!   on `stock.backorder.confirmation`), then reads the state again: only
//!   `done` books the event. Any other wizard (another module's pre-done
//!   check) refuses the event with the wizard's name;
//! - a proof of delivery first attaches each of its media (`ErpEvent::media`)
//!   as an `ir.attachment` with `res_model = 'stock.picking'`, `res_id` the
//!   picking, named `<role>-<hex>.<png|jpg>` ([`crate::erp::media_file_name`]),
//!   the bytes in `datas`, searched by those three before it is created (a
//!   retry after a lost answer finds it: one attachment per medium); then
//!   the event itself (`dockline-pod-{event id}.json`, listing its media);
//!   media whose wait ran out (`ErpEvent::media_missing`) are named in that
//!   attachment's description ("MEDIA MISSING: …") and its JSON, and the
//!   event is booked without them;
//! - an attempt that changed nothing (all found in place) books the event as
//!   a duplicate: that is a retry after a lost answer.
//!
//! Errors: `UserError`/`ValidationError` refuse the event (after one more
//! read: a done picking is success); a serialization failure that outlived
//! Odoo's own retries is a bounded conflict retry; `AccessError`, other
//! server exceptions and a version mismatch are transient faults (nothing is
//! failed; the reason is logged and shown); JSON-2's HTTP statuses go
//! through the common table of [`crate::delivery::policy`].
//!
//! # Session
//!
//! `/jsonrpc`: `common.authenticate` once for the uid, the secret in every
//! call. `web`: a `session_id` cookie from `/web/session/authenticate`.
//! JSON-2: a bearer API key, no session. An expired session (`code: 100`)
//! or a refused login (`AccessDenied`) logs in again once and repeats the
//! call; a second refusal halts the endpoint
//! ([`ErpAdapter::credentials`] is `AlreadyRefreshed`), as does JSON-2's
//! 401 (rotate the key).

pub mod config;
pub mod rpc;
pub mod workflow;

pub use self::config::{Backorder, OdooConfig, OdooTransport, ValidateOn};

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use dockline_protocol::{EventDetail, WeightUnit};
use serde_json::{Value, json};
use tokio::sync::Mutex;
use tracing::{debug, info};

use self::rpc::{Answer, ErrorKind, OdooError, OrmCall};
use self::workflow::{Gate, Line, PickRecord, PickingState};
use super::{AdapterFuture, Attempt, ErpAdapter, ErpEvent};
use crate::erp::ErpConfig;
use crate::erp::ErpSetupError;
use crate::erp::outcome::{AttemptOutcome, BodyClass, Credentials, Response, RpcOutcome};
use crate::erp::webhook::cloudevents::MediaEntry;

const PICKING: &str = "stock.picking";
const MOVE_LINE: &str = "stock.move.line";
const ATTACHMENT: &str = "ir.attachment";
const BACKORDER_WIZARD: &str = "stock.backorder.confirmation";
/// Prefix of the pick ledger's attachments.
const PICK_PREFIX: &str = "dockline-pick-";

/// A logged-in session.
#[derive(Debug)]
enum Session {
    /// `/jsonrpc`: the uid `common.authenticate` returned.
    JsonRpc { uid: i64 },
    /// Web routes: the `Cookie` header value.
    Web { cookie: String },
    /// JSON-2: nothing to log in to.
    Json2,
}

/// Why a call gave no result.
enum CallError {
    /// Odoo raised an error (in a 200, or a JSON-2 error body).
    Odoo(OdooError),
    /// The attempt ends with this outcome (transport, HTTP status, a
    /// refused login, an unreadable answer).
    Outcome(AttemptOutcome),
}

/// The picking the adapter reads.
#[derive(Debug, Clone)]
struct Picking {
    id: i64,
    name: String,
    state: PickingState,
}

/// Drives `stock.picking` over one of Odoo's external APIs.
#[derive(Debug)]
pub struct OdooAdapter {
    client: reqwest::Client,
    /// The server's base URL, ending in '/'.
    base: reqwest::Url,
    config: OdooConfig,
    transport: OdooTransport,
    session: Mutex<Option<Arc<Session>>>,
    next_id: AtomicU64,
}

type Step<T> = Result<T, AttemptOutcome>;

impl OdooAdapter {
    /// Prepares the adapter from `[erp]` (`url`, `timeout_ms`) and
    /// `[erp.odoo]`.
    pub fn new(erp: &ErpConfig) -> Result<Self, ErpSetupError> {
        let config = erp.odoo.clone().ok_or_else(|| ErpSetupError::Url {
            url: erp.url.clone(),
            problem: "kind = \"odoo\" needs an [erp.odoo] table (version, database, login, password or api_key)".into(),
        })?;
        let mut base = super::parse_url(erp)?;
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        Ok(Self {
            client: super::http_client(erp)?,
            base,
            transport: config.transport(),
            config,
            session: Mutex::new(None),
            next_id: AtomicU64::new(1),
        })
    }

    fn url(&self, path: &str) -> Result<reqwest::Url, AttemptOutcome> {
        self.base
            .join(path)
            .map_err(|e| fault(format!("cannot build the Odoo URL {path:?}: {e}")))
    }

    fn id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// One POST; `Ok` holds the status and body of any answer (the caller
    /// knows which statuses mean what on its route), `Err` a transport
    /// failure.
    async fn post(
        &self,
        path: &str,
        body: &Value,
        headers: &[(&str, &str)],
        what: &str,
    ) -> Result<(u16, String, Option<String>, Vec<String>), AttemptOutcome> {
        let mut request = self.client.post(self.url(path)?).json(body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let mut resp = request.send().await.map_err(|e| {
            let (kind, detail) = super::transport_error(&e);
            AttemptOutcome::Transport {
                kind,
                detail: format!("{detail} (Odoo {what})"),
            }
        })?;
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let cookies = resp
            .headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_owned))
            .collect();
        let text = super::read_body(&mut resp).await;
        Ok((status, text, retry_after, cookies))
    }

    /// A JSON-RPC route: a 200 is read as JSON-RPC, anything else goes to
    /// the policy as it is.
    async fn post_rpc(
        &self,
        path: &str,
        body: &Value,
        headers: &[(&str, &str)],
        what: &str,
    ) -> Result<(Answer, Vec<String>), CallError> {
        let (status, text, retry_after, cookies) = self
            .post(path, body, headers, what)
            .await
            .map_err(CallError::Outcome)?;
        if status != 200 {
            return Err(CallError::Outcome(http_outcome(
                status,
                text,
                retry_after,
                what,
            )));
        }
        match rpc::answer(&text) {
            Ok(answer) => Ok((answer, cookies)),
            Err(problem) => Err(CallError::Outcome(fault(format!("{problem} ({what})")))),
        }
    }

    /// Logs in (or, for JSON-2, does nothing).
    async fn login(&self) -> Result<Session, CallError> {
        let c = &self.config;
        let refused = |detail: String| {
            CallError::Outcome(AttemptOutcome::Response(Response {
                status: 200,
                retry_after: None,
                location: None,
                body: format!(
                    "Odoo refused the login of {:?} on database {:?}: {detail}; check erp.odoo.login, erp.odoo.password / api_key and erp.odoo.database",
                    c.login, c.database
                ),
                class: Some(BodyClass::SessionExpired),
            }))
        };
        match self.transport {
            OdooTransport::Json2 => Ok(Session::Json2),
            OdooTransport::JsonRpc => {
                let (version, _) = self
                    .post_rpc(
                        "jsonrpc",
                        &rpc::common(self.id(), "version", json!([])),
                        &[],
                        "common.version",
                    )
                    .await?;
                self.check_version(&version)?;
                let body = rpc::common(
                    self.id(),
                    "authenticate",
                    json!([c.database, c.login, c.rpc_secret(), {}]),
                );
                match self
                    .post_rpc("jsonrpc", &body, &[], "common.authenticate")
                    .await?
                {
                    (Answer::Result(uid), _) => match uid.as_i64() {
                        Some(uid) if uid > 0 => {
                            info!(database = %c.database, login = %c.login, uid, "logged in to Odoo (/jsonrpc)");
                            Ok(Session::JsonRpc { uid })
                        }
                        _ => Err(refused(format!("common.authenticate answered {uid}"))),
                    },
                    (Answer::Error(e), _) => Err(refused(format!("{} ({})", e.message, e.name))),
                }
            }
            OdooTransport::Web => {
                let body = rpc::web_authenticate(self.id(), &c.database, &c.login, &c.password);
                let (answer, cookies) = self
                    .post_rpc(
                        "web/session/authenticate",
                        &body,
                        &[],
                        "/web/session/authenticate",
                    )
                    .await?;
                let info = match answer {
                    Answer::Result(info) => info,
                    Answer::Error(e) => return Err(refused(format!("{} ({})", e.message, e.name))),
                };
                if info.get("uid").and_then(Value::as_i64).is_none() {
                    return Err(refused(format!(
                        "no uid in {}",
                        rpc::clip(&info.to_string())
                    )));
                }
                self.check_version(&Answer::Result(info))?;
                let Some(cookie) = cookies.iter().find_map(|c| {
                    c.split(';')
                        .next()
                        .filter(|kv| kv.trim_start().starts_with("session_id="))
                        .map(|kv| kv.trim().to_owned())
                }) else {
                    return Err(CallError::Outcome(fault(
                        "Odoo's /web/session/authenticate set no session_id cookie; is erp.url the Odoo server itself (not a proxy that strips cookies)?".into(),
                    )));
                };
                info!(database = %c.database, login = %c.login, "logged in to Odoo (web session)");
                Ok(Session::Web { cookie })
            }
        }
    }

    /// Compares the server's major version with `erp.odoo.version`.
    fn check_version(&self, answer: &Answer) -> Result<(), CallError> {
        let Answer::Result(info) = answer else {
            return Ok(());
        };
        match rpc::major_version(info) {
            Some(major) if major != u64::from(self.config.version) => {
                Err(CallError::Outcome(fault(format!(
                    "Odoo at {} is version {major} but erp.odoo.version = {}; set erp.odoo.version = {major} (the adapter speaks each version's API)",
                    self.base, self.config.version
                ))))
            }
            _ => Ok(()),
        }
    }

    /// The current session, logging in if there is none; `true` when new.
    async fn session(&self) -> Result<(Arc<Session>, bool), CallError> {
        let mut slot = self.session.lock().await;
        if let Some(s) = slot.as_ref() {
            return Ok((Arc::clone(s), false));
        }
        let s = Arc::new(self.login().await?);
        *slot = Some(Arc::clone(&s));
        Ok((s, true))
    }

    async fn forget(&self, old: &Arc<Session>) {
        let mut slot = self.session.lock().await;
        if slot.as_ref().is_some_and(|s| Arc::ptr_eq(s, old)) {
            *slot = None;
        }
    }

    /// One ORM call over the configured transport; logs in again once when
    /// the session expired or the login was refused.
    async fn call(&self, call: &OrmCall) -> Result<Value, CallError> {
        let mut relogged = false;
        loop {
            let (session, fresh) = self.session().await?;
            let sent = self.send(call, &session).await;
            match sent {
                Err(CallError::Odoo(e))
                    if matches!(e.kind, ErrorKind::SessionExpired | ErrorKind::AccessDenied) =>
                {
                    if !fresh && !relogged {
                        debug!(call = %call.name(), "Odoo session expired ({}); logging in again", e.message);
                        self.forget(&session).await;
                        relogged = true;
                        continue;
                    }
                    return Err(CallError::Outcome(AttemptOutcome::Response(Response {
                        status: 200,
                        retry_after: None,
                        location: None,
                        body: format!(
                            "Odoo refused `{}` with {} ({}) right after a fresh login; check the Odoo user and its rights",
                            call.name(),
                            e.message,
                            e.name
                        ),
                        class: Some(BodyClass::SessionExpired),
                    })));
                }
                other => return other,
            }
        }
    }

    async fn send(&self, call: &OrmCall, session: &Session) -> Result<Value, CallError> {
        let what = call.name();
        let answer = match session {
            Session::JsonRpc { uid } => {
                let body = rpc::execute_kw(
                    self.id(),
                    &self.config.database,
                    *uid,
                    self.config.rpc_secret(),
                    call,
                );
                self.post_rpc("jsonrpc", &body, &[], &what).await?.0
            }
            Session::Web { cookie } => {
                let (path, body) = rpc::call_kw(self.id(), call);
                self.post_rpc(&path, &body, &[("cookie", cookie)], &what)
                    .await?
                    .0
            }
            Session::Json2 => {
                let (path, body) = rpc::json2(call);
                let bearer = format!("bearer {}", self.config.api_key);
                let (status, text, retry_after, _) = self
                    .post(
                        &path,
                        &body,
                        &[
                            ("authorization", &bearer),
                            ("x-odoo-database", &self.config.database),
                        ],
                        &what,
                    )
                    .await
                    .map_err(CallError::Outcome)?;
                if status == 200 {
                    return serde_json::from_str(&text).map_err(|e| {
                        CallError::Outcome(fault(format!(
                            "Odoo JSON-2 `{what}` answered 200 with a body that is not JSON ({e}): {}",
                            rpc::clip(&text)
                        )))
                    });
                }
                // 401 (bad or expired key), 429 and 5xx without a known
                // exception name go to the common table.
                return match rpc::json2_error(&text) {
                    Some(e) if status != 401 && e.kind != ErrorKind::Server => {
                        Err(CallError::Odoo(e))
                    }
                    _ => Err(CallError::Outcome(http_outcome(
                        status,
                        text,
                        retry_after,
                        &what,
                    ))),
                };
            }
        };
        match answer {
            Answer::Result(v) => Ok(v),
            Answer::Error(e) => Err(CallError::Odoo(e)),
        }
    }

    /// `search_read` with a domain and fields.
    async fn search_read(
        &self,
        model: &str,
        domain: Value,
        fields: &[&str],
    ) -> Result<Vec<Value>, CallError> {
        let call = OrmCall::model(model, "search_read")
            .param("domain", domain)
            .param("fields", json!(fields))
            .param("offset", json!(0))
            .param("limit", json!(100))
            .param("order", json!("id asc"));
        let rows = self.call(&call).await?;
        match rows {
            Value::Array(rows) => Ok(rows),
            other => Err(CallError::Outcome(fault(format!(
                "Odoo's {model}.search_read answered {}, expected a list",
                rpc::clip(&other.to_string())
            )))),
        }
    }

    /// `create` of one record; its id.
    async fn create(&self, model: &str, values: Value) -> Result<i64, CallError> {
        let created = self
            .call(&OrmCall::model(model, "create").param("vals_list", json!([values])))
            .await?;
        created
            .as_i64()
            .or_else(|| created.get(0).and_then(Value::as_i64))
            .ok_or_else(|| {
                CallError::Outcome(fault(format!(
                    "Odoo's {model}.create answered {created}, expected the new id"
                )))
            })
    }

    async fn write(&self, model: &str, ids: Vec<i64>, values: Value) -> Result<(), CallError> {
        self.call(&OrmCall::records(model, "write", ids).param("vals", values))
            .await
            .map(drop)
    }

    /// Reads the event's picking.
    async fn find(
        &self,
        field: &str,
        value: &str,
    ) -> Result<Result<Picking, RpcOutcome>, CallError> {
        let mut domain = vec![
            json!([field, "=", value]),
            json!(["picking_type_code", "=", "outgoing"]),
        ];
        if field == "origin" {
            domain.push(json!(["backorder_id", "=", false]));
        }
        let rows = self
            .search_read(PICKING, Value::Array(domain), &["id", "name", "state"])
            .await?;
        Ok(choose(field, value, &rows))
    }

    /// A pick found its order's original delivery done. A replay of a pick
    /// booked there (its ledger entry is on it), or a pick on a delivery
    /// someone validated with no backorder left, is a duplicate; a new pick
    /// while a backorder of the order is open cannot be told apart from a
    /// pick for that backorder, so it is refused (never swallowed): the
    /// device must name the backorder in `refs.shipment`.
    async fn pick_on_done(
        &self,
        original: &Picking,
        field: &str,
        value: &str,
        event: ErpEvent<'_>,
    ) -> Step<AttemptOutcome> {
        let document = original.name.clone();
        let read = |e| call_outcome(e, &format!("backorder check on {document}"));
        let name = format!("{PICK_PREFIX}{}.json", event.envelope.id);
        let mine = self
            .search_read(
                ATTACHMENT,
                json!([
                    ["res_model", "=", PICKING],
                    ["res_id", "=", original.id],
                    ["name", "=", name]
                ]),
                &["id"],
            )
            .await
            .map_err(read)?;
        let open = self
            .search_read(
                PICKING,
                json!([
                    [field, "=", value],
                    ["picking_type_code", "=", "outgoing"],
                    ["backorder_id", "!=", false],
                    ["state", "not in", ["done", "cancel"]]
                ]),
                &["name"],
            )
            .await
            .map_err(read)?;
        if !mine.is_empty() || open.is_empty() {
            return Ok(AttemptOutcome::Rpc(RpcOutcome::AlreadyThere { document }));
        }
        let names: Vec<&str> = open
            .iter()
            .filter_map(|p| p.get("name")?.as_str())
            .collect();
        Ok(refused(format!(
            "{document} ({field} {value:?}) is already done and this pick was not booked on it, while its backorder {} is open: dockline cannot tell whether the pick is for the backorder; send refs.shipment with the backorder's name (or record it in Odoo)",
            names.join(", ")
        )))
    }

    async fn lines(&self, picking: &Picking) -> Result<Vec<Line>, CallError> {
        let rows = self
            .search_read(
                MOVE_LINE,
                json!([["picking_id", "=", picking.id]]),
                &[
                    "id",
                    "product_id",
                    "quantity",
                    "picked",
                    "result_package_id",
                ],
            )
            .await?;
        Ok(rows
            .iter()
            .filter_map(|r| {
                Some(Line {
                    id: r.get("id")?.as_i64()?,
                    product: rpc::many2one(r.get("product_id")),
                    quantity: r.get("quantity").and_then(Value::as_f64).unwrap_or(0.0),
                    picked: r.get("picked").and_then(Value::as_bool).unwrap_or(false),
                    package: rpc::many2one(r.get("result_package_id")),
                })
            })
            .collect())
    }

    /// Creates the attachment `name` on the picking unless it is there;
    /// true when created.
    async fn ensure_attachment(
        &self,
        picking: &Picking,
        name: &str,
        description: &str,
        event: ErpEvent<'_>,
    ) -> Result<bool, CallError> {
        let found = self
            .search_read(
                ATTACHMENT,
                json!([
                    ["res_model", "=", PICKING],
                    ["res_id", "=", picking.id],
                    ["name", "=", name]
                ]),
                &["id"],
            )
            .await?;
        if !found.is_empty() {
            return Ok(false);
        }
        let entries: Vec<MediaEntry<'_>> = event
            .media
            .iter()
            .map(|medium| MediaEntry {
                medium,
                dataref: None,
            })
            .collect();
        let body = crate::erp::webhook::cloudevents::cloudevent_body_with_media(
            event.site,
            event.envelope,
            event.event,
            &entries,
            event.media_missing,
        );
        self.create(
            ATTACHMENT,
            json!({
                "name": name,
                "type": "binary",
                "datas": BASE64.encode(&body),
                "mimetype": "application/cloudevents+json",
                "res_model": PICKING,
                "res_id": picking.id,
                "description": description,
            }),
        )
        .await?;
        Ok(true)
    }

    /// Attaches each medium of the event to the picking unless it is there
    /// (searched by `res_model`, `res_id` and
    /// [`crate::erp::media_file_name`]); true when one was created.
    async fn attach_media(
        &self,
        picking: &Picking,
        event: ErpEvent<'_>,
    ) -> Result<bool, CallError> {
        let mut created = false;
        for medium in event.media {
            let name = crate::erp::media_file_name(medium.role, &medium.hash, medium.media_type);
            let found = self
                .search_read(
                    ATTACHMENT,
                    json!([
                        ["res_model", "=", PICKING],
                        ["res_id", "=", picking.id],
                        ["name", "=", name]
                    ]),
                    &["id"],
                )
                .await?;
            if !found.is_empty() {
                continue;
            }
            let description = format!(
                "{} of the proof of delivery (dockline event {} from {}, sha256:{})",
                medium.role.name(),
                event.envelope.id,
                event.envelope.device,
                medium.hash
            );
            self.create(
                ATTACHMENT,
                json!({
                    "name": name,
                    "type": "binary",
                    "datas": BASE64.encode(&medium.bytes),
                    "mimetype": medium.media_type.content_type(),
                    "res_model": PICKING,
                    "res_id": picking.id,
                    "description": description,
                }),
            )
            .await?;
            created = true;
        }
        Ok(created)
    }

    /// Records a pick and sets the item's line to the ledger's sum.
    async fn record_pick(&self, picking: &Picking, event: ErpEvent<'_>) -> Step<bool> {
        let EventDetail::Picked { item, quantity, .. } = &event.event.detail else {
            return Ok(false);
        };
        let on = |what: &str| format!("{what} on {} (state {})", picking.name, picking.state);
        let products = self
            .search_read(
                "product.product",
                json!(["|", ["barcode", "=", item], ["default_code", "=", item]]),
                &["id"],
            )
            .await
            .map_err(|e| call_outcome(e, &on("product.product.search_read")))?;
        let products: Vec<i64> = products
            .iter()
            .filter_map(|p| p.get("id")?.as_i64())
            .collect();
        if products.is_empty() {
            return Err(refused(format!(
                "item {item:?} is no product in Odoo (neither a barcode nor an internal reference); add it to the product, then replay"
            )));
        }
        let lines = self
            .lines(picking)
            .await
            .map_err(|e| call_outcome(e, &on("stock.move.line.search_read")))?;
        let Some(line) = workflow::line_for(&lines, &products).cloned() else {
            return Err(refused(format!(
                "item {item:?} is not on {} (no move line of that product); check the order in Odoo",
                picking.name
            )));
        };
        let record = PickRecord {
            item: item.clone(),
            quantity: *quantity,
        };
        let description = serde_json::to_string(&record).unwrap_or_default();
        let name = format!("{PICK_PREFIX}{}.json", event.envelope.id);
        let mut changed = self
            .ensure_attachment(picking, &name, &description, event)
            .await
            .map_err(|e| call_outcome(e, &on("ir.attachment")))?;
        let ledger = self
            .search_read(
                ATTACHMENT,
                json!([
                    ["res_model", "=", PICKING],
                    ["res_id", "=", picking.id],
                    ["name", "=like", format!("{PICK_PREFIX}%")]
                ]),
                &["name", "description"],
            )
            .await
            .map_err(|e| call_outcome(e, &on("ir.attachment.search_read")))?;
        let records: Vec<PickRecord> = ledger
            .iter()
            .filter_map(|a| serde_json::from_str(a.get("description")?.as_str()?).ok())
            .collect();
        let total = workflow::picked_total(&records, item);
        if line.quantity != total || !line.picked {
            self.write(
                MOVE_LINE,
                vec![line.id],
                json!({"quantity": total, "picked": true}),
            )
            .await
            .map_err(|e| call_outcome(e, &on("stock.move.line.write")))?;
            changed = true;
        }
        Ok(changed)
    }

    /// Creates the event's package once and moves the picked lines into it.
    async fn pack(&self, picking: &Picking, event: ErpEvent<'_>) -> Step<bool> {
        let on = |what: &str| format!("{what} on {} (state {})", picking.name, picking.state);
        let lines = self
            .lines(picking)
            .await
            .map_err(|e| call_outcome(e, &on("stock.move.line.search_read")))?;
        let todo = workflow::unpacked(&lines);
        if todo.is_empty() && !lines.iter().any(|l| l.picked && l.package.is_some()) {
            return Err(AttemptOutcome::Rpc(RpcOutcome::NotReady {
                message: format!(
                    "nothing on {} is picked yet; a pack needs its picks booked first",
                    picking.name
                ),
            }));
        }
        if todo.is_empty() {
            return Ok(false);
        }
        let model = package_model(self.config.version);
        let name = event
            .event
            .refs
            .sscc
            .clone()
            .unwrap_or_else(|| format!("dockline-{}", event.envelope.id));
        let found = self
            .search_read(model, json!([["name", "=", name]]), &["id"])
            .await
            .map_err(|e| call_outcome(e, &on(&format!("{model}.search_read"))))?;
        let package = match found.first().and_then(|p| p.get("id")?.as_i64()) {
            Some(id) => id,
            None => {
                let mut values = json!({"name": name});
                if let EventDetail::Packed {
                    weight: Some(w), ..
                } = &event.event.detail
                {
                    values["shipping_weight"] = json!(kilograms(w.value, w.unit));
                }
                self.create(model, values)
                    .await
                    .map_err(|e| call_outcome(e, &on(&format!("{model}.create"))))?
            }
        };
        self.write(MOVE_LINE, todo, json!({"result_package_id": package}))
            .await
            .map_err(|e| call_outcome(e, &on("stock.move.line.write")))?;
        Ok(true)
    }

    /// Validates the picking (re-reading it first), answering the backorder
    /// wizard per `erp.odoo.backorder`. `Ok(true)` when this attempt did it.
    async fn validate(&self, field: &str, value: &str, trail: &mut Vec<String>) -> Step<bool> {
        trail.push("read".into());
        let picking = self.reread(field, value).await?;
        match picking.state {
            PickingState::Done => return Ok(false),
            PickingState::Assigned => {}
            state => {
                return Err(
                    match workflow::gate(
                        workflow::Plan {
                            validate: true,
                            ..Default::default()
                        },
                        state,
                    ) {
                        Gate::Refused(why) => refused(format!("{}: {why}", picking.name)),
                        Gate::NotReady(why) => not_ready(format!("{}: {why}", picking.name)),
                        Gate::Go | Gate::AlreadyDone => {
                            not_ready(format!("{} is {state}", picking.name))
                        }
                    },
                );
            }
        }
        let on = |what: &str| format!("{what} on {} (state {})", picking.name, picking.state);
        let lines = self
            .lines(&picking)
            .await
            .map_err(|e| call_outcome(e, &on("stock.move.line.search_read")))?;
        workflow::validate_gate(&picking.name, &lines).map_err(not_ready)?;
        trail.push("button_validate".into());
        let pressed = self
            .call(&OrmCall::records(
                PICKING,
                "button_validate",
                vec![picking.id],
            ))
            .await;
        let mut asked: Option<String> = None;
        match pressed {
            Ok(result) => {
                if let Some(action) = rpc::action_of(&result) {
                    if action.res_model == BACKORDER_WIZARD {
                        trail.push(
                            format!("backorder wizard: {:?}", self.config.backorder).to_lowercase(),
                        );
                        let answered = self
                            .answer_backorder(&action)
                            .await
                            .map_err(|e| call_outcome(e, &on(BACKORDER_WIZARD)))?;
                        asked = rpc::action_of(&answered).map(|a| a.res_model);
                    } else {
                        asked = Some(action.res_model);
                    }
                }
            }
            Err(CallError::Odoo(e)) if e.kind == ErrorKind::User => {
                // Read once more: a person or a lost earlier answer may have
                // validated it meanwhile.
                let again = self.reread(field, value).await?;
                if again.state == PickingState::Done {
                    return Ok(false);
                }
                return Err(refused(format!(
                    "Odoo refused `button_validate` on {} (state {}): {} ({})",
                    picking.name, again.state, e.message, e.name
                )));
            }
            Err(e) => return Err(call_outcome(e, &on("button_validate"))),
        }
        // Other modules may add their own pre-done wizards: only the state
        // says whether the picking was validated.
        trail.push("read".into());
        let after = self.reread(field, value).await?;
        if after.state == PickingState::Done {
            return Ok(true);
        }
        Err(refused(match asked {
            Some(model) => format!(
                "Odoo answered `button_validate` on {} with a `{model}` wizard the adapter cannot decide; validate it in Odoo, then replay",
                picking.name
            ),
            None => format!(
                "Odoo accepted `button_validate` on {} but it stayed {}; check it in Odoo",
                picking.name, after.state
            ),
        }))
    }

    /// Creates the backorder wizard with the action's context and presses
    /// `process` (create the backorder) or `process_cancel_backorder`.
    async fn answer_backorder(&self, action: &rpc::Action) -> Result<Value, CallError> {
        let pick_ids = action
            .context
            .get("button_validate_picking_ids")
            .cloned()
            .unwrap_or_else(|| json!([]));
        let links: Vec<Value> = pick_ids
            .as_array()
            .map(|ids| ids.iter().map(|id| json!([4, id])).collect())
            .unwrap_or_default();
        let wizard = self
            .call(
                &OrmCall::model(BACKORDER_WIZARD, "create")
                    .param("vals_list", json!([{"pick_ids": links}]))
                    .with_context(action.context.clone()),
            )
            .await?;
        let id = wizard
            .as_i64()
            .or_else(|| wizard.get(0).and_then(Value::as_i64))
            .ok_or_else(|| {
                CallError::Outcome(fault(format!(
                    "Odoo's {BACKORDER_WIZARD}.create answered {wizard}, expected the new id"
                )))
            })?;
        let method = match self.config.backorder {
            Backorder::Create => "process",
            Backorder::Cancel => "process_cancel_backorder",
        };
        self.call(
            &OrmCall::records(BACKORDER_WIZARD, method, vec![id])
                .with_context(action.context.clone()),
        )
        .await
    }

    async fn reread(&self, field: &str, value: &str) -> Step<Picking> {
        match self.find(field, value).await {
            Ok(Ok(p)) => Ok(p),
            Ok(Err(outcome)) => Err(AttemptOutcome::Rpc(outcome)),
            Err(e) => Err(call_outcome(e, "stock.picking.search_read")),
        }
    }

    async fn book(&self, event: ErpEvent<'_>) -> Attempt {
        let refs = &event.event.refs;
        let (field, value) = match (&refs.shipment, &refs.order) {
            (Some(name), _) => ("name", name.as_str()),
            (None, Some(order)) => ("origin", order.as_str()),
            (None, None) => {
                return Attempt {
                    outcome: AttemptOutcome::Rpc(RpcOutcome::Refused {
                        message: "the event names no order (refs.order) or shipment (refs.shipment); the Odoo adapter finds the picking by them".into(),
                    }),
                    request: format!("odoo {}: no reference", self.config.database),
                };
            }
        };
        let mut trail = Vec::new();
        let outcome = match self.steps(event, field, value, &mut trail).await {
            Ok(outcome) | Err(outcome) => outcome,
        };
        Attempt {
            outcome,
            request: format!(
                "odoo {} {} {} {PICKING} {field}={value:?}: {}",
                self.config.version,
                self.transport.name(),
                self.config.database,
                trail.join(", ")
            ),
        }
    }

    async fn steps(
        &self,
        event: ErpEvent<'_>,
        field: &str,
        value: &str,
        trail: &mut Vec<String>,
    ) -> Step<AttemptOutcome> {
        let plan = workflow::plan(&event.event.detail, self.config.validate_on);
        trail.push("read".into());
        let picking = self.reread(field, value).await?;
        let document = picking.name.clone();
        match workflow::gate(plan, picking.state) {
            Gate::Go => {}
            Gate::AlreadyDone if plan.record_pick && field == "origin" => {
                trail.push("backorder check".into());
                return self.pick_on_done(&picking, field, value, event).await;
            }
            Gate::AlreadyDone => {
                return Ok(AttemptOutcome::Rpc(RpcOutcome::AlreadyThere { document }));
            }
            Gate::NotReady(why) => return Ok(not_ready(format!("{document}: {why}"))),
            Gate::Refused(why) => return Ok(refused(format!("{document}: {why}"))),
        }
        if plan.is_empty() {
            return Ok(AttemptOutcome::Rpc(RpcOutcome::Applied {
                document: format!("{document} (nothing to record in Odoo for this event)"),
            }));
        }
        let mut changed = false;
        if plan.record_pick {
            trail.push("record pick".into());
            changed |= self.record_pick(&picking, event).await?;
        }
        if plan.pack {
            trail.push("pack".into());
            changed |= self.pack(&picking, event).await?;
        }
        if plan.attach_pod {
            if !event.media.is_empty() {
                trail.push("attach media".into());
                changed |= self
                    .attach_media(&picking, event)
                    .await
                    .map_err(|e| call_outcome(e, &format!("ir.attachment on {document}")))?;
            }
            trail.push("attach proof of delivery".into());
            let mut description = match &event.event.detail {
                EventDetail::Delivered(pod) => format!(
                    "Proof of delivery: received by {}, {} pieces (dockline event {} from {})",
                    pod.received_by, pod.pieces, event.envelope.id, event.envelope.device
                ),
                _ => format!("dockline event {}", event.envelope.id),
            };
            let missing = crate::erp::media_missing_note(event.media_missing);
            if !missing.is_empty() {
                description.push_str(". ");
                description.push_str(&missing);
            }
            let name = format!("dockline-pod-{}.json", event.envelope.id);
            changed |= self
                .ensure_attachment(&picking, &name, &description, event)
                .await
                .map_err(|e| call_outcome(e, &format!("ir.attachment on {document}")))?;
        }
        if plan.validate && picking.state != PickingState::Done {
            changed |= self.validate(field, value, trail).await?;
        }
        Ok(AttemptOutcome::Rpc(if changed {
            RpcOutcome::Applied { document }
        } else {
            RpcOutcome::AlreadyThere { document }
        }))
    }

    async fn probe_server(&self) -> bool {
        let answered = match self.transport {
            OdooTransport::JsonRpc => self
                .post(
                    "jsonrpc",
                    &rpc::common(self.id(), "version", json!([])),
                    &[],
                    "common.version",
                )
                .await
                .map(|(status, ..)| status == 200),
            OdooTransport::Web => self
                .post(
                    "web/webclient/version_info",
                    &rpc::empty_call(self.id()),
                    &[],
                    "version_info",
                )
                .await
                .map(|(status, ..)| status == 200),
            OdooTransport::Json2 => {
                let bearer = format!("bearer {}", self.config.api_key);
                let (path, body) = rpc::json2(&OrmCall::model("res.users", "context_get"));
                self.post(
                    &path,
                    &body,
                    &[
                        ("authorization", &bearer),
                        ("x-odoo-database", &self.config.database),
                    ],
                    "res.users.context_get",
                )
                .await
                .map(|(status, ..)| status < 500 && status != 429)
            }
        };
        info!(?answered, "Odoo probed");
        answered.unwrap_or(false)
    }
}

impl ErpAdapter for OdooAdapter {
    fn kind(&self) -> &'static str {
        "odoo"
    }

    fn deliver<'a>(&'a self, event: ErpEvent<'a>) -> AdapterFuture<'a, Attempt> {
        Box::pin(self.book(event))
    }

    fn probe(&self) -> AdapterFuture<'_, bool> {
        Box::pin(self.probe_server())
    }

    fn credentials(&self) -> Credentials {
        // `call` already logged in again once before a refusal reaches the
        // policy; JSON-2's API key cannot be refreshed from here.
        Credentials::AlreadyRefreshed
    }
}

/// The package model of a version (19 renamed it, OCA/stock-logistics-tracking#53).
pub fn package_model(version: u8) -> &'static str {
    if version >= 19 {
        "stock.package"
    } else {
        "stock.quant.package"
    }
}

fn kilograms(value: f64, unit: WeightUnit) -> f64 {
    match unit {
        WeightUnit::Kg => value,
        WeightUnit::G => value / 1000.0,
        WeightUnit::Lb => value * 0.453_592_37,
        WeightUnit::Oz => value * 0.028_349_523_125,
    }
}

/// An HTTP answer that is not a 200 on its route, for the policy's table.
fn http_outcome(
    status: u16,
    body: String,
    retry_after: Option<String>,
    what: &str,
) -> AttemptOutcome {
    AttemptOutcome::Response(Response {
        status,
        retry_after,
        location: None,
        body: if body.trim().is_empty() {
            format!("(Odoo {what})")
        } else {
            format!("(Odoo {what}) {body}")
        },
        class: None,
    })
}

/// The outcome of a failed call.
fn call_outcome(e: CallError, what: &str) -> AttemptOutcome {
    match e {
        CallError::Outcome(o) => o,
        CallError::Odoo(e) => {
            let said = format!("{} ({})", e.message, e.name);
            match e.kind {
                ErrorKind::User | ErrorKind::Missing => {
                    refused(format!("Odoo refused `{what}`: {said}"))
                }
                ErrorKind::Conflict => AttemptOutcome::Rpc(RpcOutcome::Conflict {
                    message: format!("Odoo `{what}` hit a concurrent update: {said}"),
                }),
                ErrorKind::Access => fault(format!(
                    "Odoo denied `{what}` to erp.odoo.login: {said}; give the user Inventory rights (nothing is failed meanwhile)"
                )),
                ErrorKind::SessionExpired | ErrorKind::AccessDenied | ErrorKind::Server => {
                    fault(format!("Odoo `{what}` failed on the server: {said}"))
                }
            }
        }
    }
}

fn fault(message: String) -> AttemptOutcome {
    AttemptOutcome::Rpc(RpcOutcome::Fault { message })
}

fn refused(message: String) -> AttemptOutcome {
    AttemptOutcome::Rpc(RpcOutcome::Refused { message })
}

fn not_ready(message: String) -> AttemptOutcome {
    AttemptOutcome::Rpc(RpcOutcome::NotReady { message })
}

/// Picks the event's picking from the rows a search returned (pure).
fn choose(field: &str, value: &str, rows: &[Value]) -> Result<Picking, RpcOutcome> {
    let mut parsed = Vec::new();
    for row in rows {
        let id = row.get("id").and_then(Value::as_i64);
        let name = row.get("name").and_then(Value::as_str);
        let state_name = row.get("state").and_then(Value::as_str).unwrap_or_default();
        let (Some(id), Some(name)) = (id, name) else {
            return Err(RpcOutcome::Fault {
                message: format!("Odoo returned a picking without id or name: {row}"),
            });
        };
        let Some(state) = PickingState::parse(state_name) else {
            return Err(RpcOutcome::Refused {
                message: format!(
                    "{name} is in state {state_name:?}, which the dockline Odoo adapter does not know (draft, waiting, confirmed, assigned, done, cancel)"
                ),
            });
        };
        parsed.push(Picking {
            id,
            name: name.to_owned(),
            state,
        });
    }
    super::single_open(
        &parsed,
        |d| d.state == PickingState::Cancel,
        |d| d.name.as_str(),
        || {
            format!(
                "Odoo has no outgoing {PICKING} with {field} {value:?} (yet); the event waits until the delivery is created"
            )
        },
        |count, names| {
            format!(
                "{count} open deliveries in Odoo have {field} {value:?} ({names}); dockline books one delivery per order: cancel the others, or send refs.shipment with the picking's name, then replay"
            )
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_open_picking_per_reference() {
        let row = |id: i64, state: &str| json!({"id": id, "name": format!("WH/OUT/{id:05}"), "state": state});
        let one =
            choose("origin", "SO-1", &[row(1, "cancel"), row(2, "assigned")]).expect("open one");
        assert_eq!((one.id, one.state), (2, PickingState::Assigned));
        assert_eq!(one.name, "WH/OUT/00002");
        assert_eq!(
            choose("origin", "SO-1", &[row(1, "cancel")])
                .expect("cancelled")
                .state,
            PickingState::Cancel
        );
        assert!(
            matches!(choose("origin", "SO-1", &[]), Err(RpcOutcome::NotReady { message }) if message.contains("SO-1"))
        );
        assert!(matches!(
            choose("origin", "SO-1", &[row(1, "assigned"), row(2, "confirmed")]),
            Err(RpcOutcome::Refused { message }) if message.contains("2 open deliveries")
        ));
        assert!(matches!(
            choose("origin", "SO-1", &[row(1, "packed")]),
            Err(RpcOutcome::Refused { .. })
        ));
    }

    #[test]
    fn versions_and_units() {
        assert_eq!(package_model(17), "stock.quant.package");
        assert_eq!(package_model(18), "stock.quant.package");
        assert_eq!(package_model(19), "stock.package");
        assert!((kilograms(1500.0, WeightUnit::G) - 1.5).abs() < 1e-9);
        assert!((kilograms(1.0, WeightUnit::Lb) - 0.453_592_37).abs() < 1e-9);
    }
}
