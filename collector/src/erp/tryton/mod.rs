//! The Tryton adapter (`erp.kind = "tryton"`): picks, packs, departures and
//! proofs of delivery become transitions of Tryton's outbound shipment
//! (`stock.shipment.out`), over the JSON-RPC every trytond 6.0–8.x serves.
//!
//! # Finding the shipment
//!
//! By the event's order reference (`refs.order`) in the shipment's
//! `reference` field, Tryton's "external identifier for the shipment". Not
//! `origin`: a shipment has no `origin` of its own in Tryton (only its moves
//! do, and the shipment's `origins` is a computed text that cannot be
//! searched). An event with no order but a `refs.shipment` is matched on the
//! shipment's `number` instead. Cancelled shipments are ignored unless they
//! are all there is; two open shipments with one reference are refused
//! (dockline cannot tell which one the devices handled).
//!
//! # One event, one attempt
//!
//! Every attempt reads the shipment first, asks the pure
//! [`workflow::next_step`] which button (if any) the event needs from that
//! state, presses it, reads again, and so on until the target state is
//! reached. So:
//! - a retry after a lost response (the connection closed after Tryton
//!   committed `pack`) reads `packed` and books the event as a duplicate
//!   without pressing anything: exactly once, no error;
//! - a button Tryton refuses (`UserError` in an HTTP 200) is followed by one
//!   more read: if another event or a person moved the shipment to the
//!   target meanwhile it is booked, otherwise the event is refused (dead
//!   letter, `rejected` to the device) with Tryton's message and the state;
//! - a shipment not yet in a state the event can follow from (a pack before
//!   its pick is booked) parks the event, as does a reference Tryton does not
//!   know yet (the shipment is not created);
//! - `ConcurrencyException` is a bounded conflict retry, any other server
//!   exception a transient one; HTTP statuses other than 200 (401, 403, 404,
//!   429, 5xx) go through the common table of [`crate::delivery::policy`].
//!
//! A proof of delivery also stores its evidence, before `do` is pressed:
//! - each of its media (the signature, the photo: `ErpEvent::media`) as an
//!   `ir.attachment` of the shipment named `<role>-<hex>.<png|jpg>`
//!   ([`crate::erp::media_file_name`]) holding the bytes, searched by
//!   resource and name before it is created: a retry after a lost answer to
//!   the `create` finds it and does not attach it twice;
//! - then the event as a CloudEvents JSON file (`ir.attachment` named
//!   `dockline-pod-{event id}.json`, searched before it is created), which
//!   lists the media by hash and role; media whose wait ran out
//!   (`ErpEvent::media_missing`) are named in it and in the attachment's
//!   description ("MEDIA MISSING: …"), which Tryton shows with the
//!   shipment's attachments. The event is booked without them.
//!
//! # Session
//!
//! One `common.db.login` session (plus the user's preferences as the call
//! context) is shared by all lanes. A 401 on a call logs in again once and
//! repeats the call; a second 401 halts the endpoint (wrong user or
//! password), so [`ErpAdapter::credentials`] reports `AlreadyRefreshed`.

mod config;
pub mod rpc;
pub mod workflow;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Value, json};
use tokio::sync::Mutex;
use tracing::{debug, info};

use self::rpc::{Answer, ErrorKind};
use self::workflow::{Button, Goal, Shipment, ShipmentState, Step};
use super::{AdapterFuture, Attempt, ErpAdapter, ErpEvent};
use crate::erp::ErpConfig;
use crate::erp::ErpSetupError;
use crate::erp::outcome::{AttemptOutcome, Credentials, Response, RpcOutcome};
use crate::erp::webhook::cloudevents::MediaEntry;
pub use config::TrytonConfig;

/// The model the adapter drives.
const SHIPMENT: &str = "stock.shipment.out";
/// Reads and presses in one attempt, at most (a pick from `waiting` needs
/// read, assign_try, read, pick, read: a few steps; this only bounds a
/// misbehaving server).
const MAX_STEPS: usize = 8;

/// A logged-in session.
#[derive(Debug)]
struct Session {
    /// `Authorization` header value.
    authorization: String,
    /// The user's preferences: the context of every call.
    context: Value,
}

/// Why a call gave no result.
enum CallError {
    /// Tryton answered with an error inside HTTP 200.
    Rpc(ErrorKind, String),
    /// The attempt ends with this outcome (transport error, HTTP status,
    /// unreadable answer).
    Outcome(AttemptOutcome),
}

/// Drives `stock.shipment.out` over JSON-RPC.
#[derive(Debug)]
pub struct TrytonAdapter {
    client: reqwest::Client,
    /// `{base}/rpc/`: database-less calls (the probe).
    server_rpc: reqwest::Url,
    /// `{base}/{database}/rpc/`.
    db_rpc: reqwest::Url,
    config: TrytonConfig,
    session: Mutex<Option<Arc<Session>>>,
    next_id: AtomicU64,
}

/// The shipment row the adapter reads.
#[derive(Debug, Clone)]
struct Row {
    id: i64,
    /// `number [reference]`, Tryton's own name for it.
    name: String,
    state: ShipmentState,
    single_step: bool,
}

impl TrytonAdapter {
    /// Prepares the adapter from `[erp]` (`url`, `timeout_ms`) and
    /// `[erp.tryton]`.
    pub fn new(erp: &ErpConfig) -> Result<Self, ErpSetupError> {
        let config = erp.tryton.clone().ok_or_else(|| ErpSetupError::Url {
            url: erp.url.clone(),
            problem: "kind = \"tryton\" needs an [erp.tryton] table (database, user, password)"
                .into(),
        })?;
        let mut base = super::parse_url(erp)?;
        // Join below keeps a path prefix only when it ends in '/'.
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        let join = |path: &str| {
            base.join(path).map_err(|e| ErpSetupError::Url {
                url: erp.url.clone(),
                problem: format!("cannot append {path:?}: {e}"),
            })
        };
        Ok(Self {
            server_rpc: join("rpc/")?,
            db_rpc: join(&format!("{}/rpc/", config.database))?,
            client: super::http_client(erp)?,
            config,
            session: Mutex::new(None),
            next_id: AtomicU64::new(1),
        })
    }

    /// One POST; `Ok` holds a 200's body, anything else is the outcome.
    async fn post(
        &self,
        url: &reqwest::Url,
        method: &str,
        params: Value,
        authorization: Option<&str>,
    ) -> Result<String, AttemptOutcome> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut request = self
            .client
            .post(url.clone())
            .json(&rpc::request(id, method, params));
        if let Some(a) = authorization {
            request = request.header("authorization", a);
        }
        let mut resp = request.send().await.map_err(|e| {
            let (kind, detail) = super::transport_error(&e);
            AttemptOutcome::Transport {
                kind,
                detail: format!("{detail} (Tryton {method})"),
            }
        })?;
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = super::read_body(&mut resp).await;
        if status == 200 {
            return Ok(body);
        }
        let body = if body.trim().is_empty() {
            format!("(Tryton {method})")
        } else {
            format!("(Tryton {method}) {body}")
        };
        Err(AttemptOutcome::Response(Response {
            status,
            retry_after,
            location: None,
            body,
            class: None,
        }))
    }

    /// Logs in and reads the user's preferences.
    async fn login(&self) -> Result<Session, AttemptOutcome> {
        let c = &self.config;
        let body = self
            .post(
                &self.db_rpc,
                "common.db.login",
                json!([c.user, {"password": c.password}, c.language]),
                None,
            )
            .await?;
        let result = match rpc::answer(&body) {
            Ok(Answer::Result(r)) => r,
            Ok(Answer::Error { message, .. }) => {
                return Err(fault(format!(
                    "Tryton refused the login of {:?}: {message}; check erp.tryton.user and the user's login methods",
                    c.user
                )));
            }
            Err(problem) => return Err(fault(problem)),
        };
        let (Some(user_id), Some(token)) = (
            result.get(0).and_then(Value::as_i64),
            result.get(1).and_then(Value::as_str),
        ) else {
            return Err(fault(format!(
                "Tryton's login answered {result}, expected [user id, session, …]; is erp.url a trytond 6.0–8.x server?"
            )));
        };
        let authorization = rpc::session_header(&c.user, user_id, token);
        let prefs = self
            .post(
                &self.db_rpc,
                "model.res.user.get_preferences",
                json!([true, {}]),
                Some(&authorization),
            )
            .await?;
        let context = match rpc::answer(&prefs) {
            Ok(Answer::Result(v)) if v.is_object() => v,
            Ok(other) => {
                return Err(fault(format!(
                    "Tryton's get_preferences answered {other:?}, expected the user's context"
                )));
            }
            Err(problem) => return Err(fault(problem)),
        };
        info!(database = %c.database, user = %c.user, "logged in to Tryton");
        Ok(Session {
            authorization,
            context,
        })
    }

    /// The current session, logging in if there is none; `true` when it is
    /// new (a 401 on it is not worth a second login).
    async fn session(&self) -> Result<(Arc<Session>, bool), AttemptOutcome> {
        let mut slot = self.session.lock().await;
        if let Some(s) = slot.as_ref() {
            return Ok((Arc::clone(s), false));
        }
        let s = Arc::new(self.login().await?);
        *slot = Some(Arc::clone(&s));
        Ok((s, true))
    }

    /// Drops `old` if it is still the current session.
    async fn forget(&self, old: &Arc<Session>) {
        let mut slot = self.session.lock().await;
        if slot.as_ref().is_some_and(|s| Arc::ptr_eq(s, old)) {
            *slot = None;
        }
    }

    /// Calls `model.{model}.{method}` with `args` and the session's context;
    /// logs in again once on a 401.
    async fn call(&self, model: &str, method: &str, args: Vec<Value>) -> Result<Value, CallError> {
        let full = format!("model.{model}.{method}");
        let mut relogged = false;
        loop {
            let (session, fresh) = self.session().await.map_err(CallError::Outcome)?;
            let mut params = args.clone();
            params.push(session.context.clone());
            let sent = self
                .post(
                    &self.db_rpc,
                    &full,
                    Value::Array(params),
                    Some(&session.authorization),
                )
                .await;
            let body = match sent {
                Ok(body) => body,
                Err(AttemptOutcome::Response(r)) if r.status == 401 && !fresh && !relogged => {
                    debug!("Tryton session expired; logging in again");
                    self.forget(&session).await;
                    relogged = true;
                    continue;
                }
                Err(outcome) => return Err(CallError::Outcome(outcome)),
            };
            return match rpc::answer(&body) {
                Ok(Answer::Result(v)) => Ok(v),
                Ok(Answer::Error { kind, message }) => Err(CallError::Rpc(kind, message)),
                Err(problem) => Err(CallError::Outcome(fault(problem))),
            };
        }
    }

    /// Reads the event's shipment.
    async fn find(&self, field: &str, value: &str) -> Result<Result<Row, RpcOutcome>, CallError> {
        let rows = self
            .call(
                SHIPMENT,
                "search_read",
                vec![
                    json!([[field, "=", value]]),
                    json!(0),
                    json!(10),
                    json!([["id", "ASC"]]),
                    json!([
                        "id",
                        "rec_name",
                        "state",
                        "warehouse_storage",
                        "warehouse_output"
                    ]),
                ],
            )
            .await?;
        Ok(choose(field, value, &rows))
    }

    /// Whether the shipment has an attachment called `name`.
    async fn has_attachment(&self, resource: &str, name: &str) -> Result<bool, CallError> {
        let found = self
            .call(
                "ir.attachment",
                "search",
                vec![
                    json!([["resource", "=", resource], ["name", "=", name]]),
                    json!(0),
                    json!(1),
                    Value::Null,
                ],
            )
            .await?;
        Ok(found.as_array().is_some_and(|a| !a.is_empty()))
    }

    /// Attaches each medium of the event to the shipment unless it is
    /// there (searched by resource and [`crate::erp::media_file_name`]).
    async fn attach_media(&self, row: &Row, event: ErpEvent<'_>) -> Result<(), CallError> {
        let resource = format!("{SHIPMENT},{}", row.id);
        for medium in event.media {
            let name = crate::erp::media_file_name(medium.role, &medium.hash, medium.media_type);
            if self.has_attachment(&resource, &name).await? {
                continue;
            }
            let description = format!(
                "{} of the proof of delivery (dockline event {} from {}, sha256:{})",
                medium.role.name(),
                event.envelope.id,
                event.envelope.device,
                medium.hash
            );
            self.call(
                "ir.attachment",
                "create",
                vec![json!([{
                    "name": name,
                    "type": "data",
                    "data": rpc::bytes_value(&medium.bytes),
                    "resource": resource,
                    "description": description,
                }])],
            )
            .await?;
        }
        Ok(())
    }

    /// Stores the proof of delivery on the shipment unless it is there.
    async fn attach_pod(&self, row: &Row, event: ErpEvent<'_>) -> Result<(), CallError> {
        let name = format!("dockline-pod-{}.json", event.envelope.id);
        let resource = format!("{SHIPMENT},{}", row.id);
        if self.has_attachment(&resource, &name).await? {
            return Ok(());
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
        let mut description = match &event.event.detail {
            dockline_protocol::EventDetail::Delivered(pod) => format!(
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
        self.call(
            "ir.attachment",
            "create",
            vec![json!([{
                "name": name,
                "type": "data",
                "data": rpc::bytes_value(&body),
                "resource": resource,
                "description": description,
            }])],
        )
        .await?;
        Ok(())
    }

    async fn book(&self, event: ErpEvent<'_>) -> Attempt {
        let refs = &event.event.refs;
        let (field, value) = match (&refs.order, &refs.shipment) {
            (Some(order), _) => ("reference", order.as_str()),
            (None, Some(number)) => ("number", number.as_str()),
            (None, None) => {
                return Attempt {
                    outcome: AttemptOutcome::Rpc(RpcOutcome::Refused {
                        message: "the event names no order (refs.order) or shipment (refs.shipment); the Tryton adapter finds the shipment by them".into(),
                    }),
                    request: format!("tryton {}: no reference", self.config.database),
                };
            }
        };
        let mut trail = Vec::new();
        let outcome = self.steps(event, field, value, &mut trail).await;
        Attempt {
            outcome,
            request: format!(
                "tryton {} {SHIPMENT} {field}={value:?}: {}",
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
        trail: &mut Vec<&'static str>,
    ) -> AttemptOutcome {
        let goal = workflow::goal(&event.event.detail);
        let mut pressed: Vec<Button> = Vec::new();
        let mut refused: Option<String> = None;
        let mut attached = false;
        for _ in 0..MAX_STEPS {
            trail.push("read");
            let row = match self.find(field, value).await {
                Ok(Ok(row)) => row,
                Ok(Err(outcome)) => return AttemptOutcome::Rpc(outcome),
                Err(e) => return call_outcome(e, "search_read", None),
            };
            let target = match goal {
                Goal::Reach(target) => target,
                Goal::Nothing(kind) => {
                    return AttemptOutcome::Rpc(RpcOutcome::Applied {
                        document: format!(
                            "{} ({kind}: no shipment state in Tryton, nothing changed)",
                            row.name
                        ),
                    });
                }
            };
            let shipment = Shipment {
                state: row.state,
                single_step: row.single_step,
            };
            let step = workflow::next_step(target, shipment, &pressed, self.config.assign_force);
            if goal == Goal::Reach(ShipmentState::Done)
                && !attached
                && matches!(step, Step::Reached | Step::Press(Button::Do))
            {
                if !event.media.is_empty() {
                    trail.push("attach media");
                    if let Err(e) = self.attach_media(&row, event).await {
                        return call_outcome(e, "ir.attachment", Some(&row));
                    }
                }
                trail.push("attach proof of delivery");
                if let Err(e) = self.attach_pod(&row, event).await {
                    return call_outcome(e, "ir.attachment", Some(&row));
                }
                attached = true;
            }
            let button = match step {
                Step::Reached => {
                    let document = row.name.clone();
                    return AttemptOutcome::Rpc(if pressed.is_empty() {
                        RpcOutcome::AlreadyThere { document }
                    } else {
                        RpcOutcome::Applied { document }
                    });
                }
                _ if refused.is_some() => {
                    let message = refused.take().unwrap_or_default();
                    return AttemptOutcome::Rpc(RpcOutcome::Refused { message });
                }
                Step::NotReady(why) => {
                    return AttemptOutcome::Rpc(RpcOutcome::NotReady {
                        message: format!("{}: {why}", row.name),
                    });
                }
                Step::Refused(why) => {
                    return AttemptOutcome::Rpc(RpcOutcome::Refused {
                        message: format!("{}: {why}", row.name),
                    });
                }
                Step::Press(button) => button,
            };
            trail.push(button.method());
            debug!(shipment = %row.name, state = %row.state, button = button.method(), "pressing Tryton button");
            match self
                .call(SHIPMENT, button.method(), vec![json!([row.id])])
                .await
            {
                Ok(_) => pressed.push(button),
                Err(CallError::Rpc(ErrorKind::User | ErrorKind::Warning, message)) => {
                    // Read once more: a concurrent event or a person may have
                    // moved the shipment to the target meanwhile.
                    refused = Some(format!(
                        "Tryton refused `{}` on {} (state {}): {message}",
                        button.method(),
                        row.name,
                        row.state
                    ));
                }
                Err(e) => return call_outcome(e, button.method(), Some(&row)),
            }
        }
        fault(format!(
            "the shipment {field}={value:?} did not reach its state in {MAX_STEPS} steps ({}); check it in Tryton",
            trail.join(", ")
        ))
    }

    async fn server_version(&self) -> bool {
        match self
            .post(&self.server_rpc, "common.server.version", json!([]), None)
            .await
        {
            Ok(body) => {
                let version = rpc::answer(&body);
                info!(?version, "Tryton probed");
                matches!(version, Ok(Answer::Result(_)))
            }
            Err(outcome) => {
                info!(?outcome, "Tryton probe failed");
                false
            }
        }
    }
}

impl ErpAdapter for TrytonAdapter {
    fn kind(&self) -> &'static str {
        "tryton"
    }

    fn deliver<'a>(&'a self, event: ErpEvent<'a>) -> AdapterFuture<'a, Attempt> {
        Box::pin(self.book(event))
    }

    fn probe(&self) -> AdapterFuture<'_, bool> {
        Box::pin(self.server_version())
    }

    fn credentials(&self) -> Credentials {
        // `call` already logged in again once before a 401 reaches the policy.
        Credentials::AlreadyRefreshed
    }
}

/// The outcome of a failed call.
fn call_outcome(e: CallError, what: &str, row: Option<&Row>) -> AttemptOutcome {
    let on = row.map_or_else(String::new, |r| {
        format!(" on {} (state {})", r.name, r.state)
    });
    match e {
        CallError::Outcome(o) => o,
        CallError::Rpc(ErrorKind::User | ErrorKind::Warning, message) => {
            AttemptOutcome::Rpc(RpcOutcome::Refused {
                message: format!("Tryton refused `{what}`{on}: {message}"),
            })
        }
        CallError::Rpc(ErrorKind::Concurrency, message) => {
            AttemptOutcome::Rpc(RpcOutcome::Conflict {
                message: format!("Tryton `{what}`{on} conflicted with another write: {message}"),
            })
        }
        CallError::Rpc(ErrorKind::Login | ErrorKind::Server, message) => {
            AttemptOutcome::Rpc(RpcOutcome::Fault {
                message: format!("Tryton `{what}`{on} failed on the server: {message}"),
            })
        }
    }
}

fn fault(message: String) -> AttemptOutcome {
    AttemptOutcome::Rpc(RpcOutcome::Fault { message })
}

/// Picks the event's shipment from the rows a search returned (pure).
fn choose(field: &str, value: &str, rows: &Value) -> Result<Row, RpcOutcome> {
    let Some(list) = rows.as_array() else {
        return Err(RpcOutcome::Fault {
            message: format!("Tryton's search_read answered {rows}, expected a list"),
        });
    };
    let parsed: Vec<Row> = match list.iter().map(row_of).collect() {
        Ok(rows) => rows,
        Err(message) => return Err(RpcOutcome::Refused { message }),
    };
    super::single_open(
        &parsed,
        |d| d.state == ShipmentState::Cancelled,
        |d| d.name.as_str(),
        || {
            format!(
                "Tryton has no {SHIPMENT} with {field} {value:?} (yet); the event waits until the shipment is created"
            )
        },
        |count, names| {
            format!(
                "{count} open shipments in Tryton have {field} {value:?} ({names}); dockline books one shipment per order: cancel or re-reference the others, then replay"
            )
        },
    )
}

fn row_of(v: &Value) -> Result<Row, String> {
    let id = v
        .get("id")
        .and_then(Value::as_i64)
        .ok_or_else(|| format!("a shipment row without an id: {v}"))?;
    let name = v
        .get("rec_name")
        .and_then(Value::as_str)
        .map_or_else(|| format!("shipment {id}"), |n| format!("shipment {n}"));
    let state_name = v.get("state").and_then(Value::as_str).unwrap_or_default();
    let state = ShipmentState::parse(state_name).ok_or_else(|| {
        format!("{name} is in state {state_name:?}, which the dockline Tryton adapter does not know (8.x states: draft … done, cancelled)")
    })?;
    let storage = v.get("warehouse_storage").and_then(Value::as_i64);
    let output = v.get("warehouse_output").and_then(Value::as_i64);
    Ok(Row {
        id,
        name,
        state,
        single_step: storage.is_some() && storage == output,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: i64, state: &str) -> Value {
        json!({"id": id, "rec_name": format!("{id} [SO-1]"), "state": state,
            "warehouse_storage": 3, "warehouse_output": 2})
    }

    #[test]
    fn one_open_shipment_per_reference() {
        let one = choose(
            "reference",
            "SO-1",
            &json!([row(1, "cancelled"), row(2, "packed")]),
        )
        .expect("the open one");
        assert_eq!((one.id, one.state), (2, ShipmentState::Packed));
        assert_eq!(one.name, "shipment 2 [SO-1]");
        assert!(!one.single_step);
        let cancelled =
            choose("reference", "SO-1", &json!([row(1, "cancelled")])).expect("cancelled");
        assert_eq!(cancelled.state, ShipmentState::Cancelled);
        assert!(matches!(
            choose("reference", "SO-1", &json!([])),
            Err(RpcOutcome::NotReady { message }) if message.contains("SO-1")
        ));
        assert!(matches!(
            choose("reference", "SO-1", &json!([row(1, "waiting"), row(2, "assigned")])),
            Err(RpcOutcome::Refused { message }) if message.contains("2 open shipments")
        ));
        assert!(matches!(
            choose("reference", "SO-1", &json!([row(1, "request")])),
            Err(RpcOutcome::Refused { .. })
        ));
        let single = choose(
            "number",
            "7",
            &json!([{"id": 7, "rec_name": "7", "state": "assigned",
                "warehouse_storage": 4, "warehouse_output": 4}]),
        )
        .expect("row");
        assert!(single.single_step);
    }
}
