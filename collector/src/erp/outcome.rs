//! What one ERP attempt came to, in the words every adapter reports it in
//! ([`AttemptOutcome`]: an HTTP [`Response`], a [`TransportError`], or an
//! RPC adapter's own [`RpcOutcome`]), and the classes delivery sorts
//! failures into ([`FailureClass`]). The adapters fill these in; the
//! delivery policy ([`crate::delivery::policy::decide`]) reads them. Pure
//! data, no I/O: this module sits below both, so an adapter never imports
//! delivery.

/// How an attempt failed before any HTTP status arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportError {
    /// Connection refused, DNS or TLS failure: the request never left.
    Connect,
    /// Timed out while connecting: the request never left.
    TimeoutBeforeSend,
    /// Timed out after the request was (perhaps partly) sent: the ERP may
    /// have committed.
    TimeoutAfterSend,
    /// The connection was reset or closed after the request was sent.
    ResetAfterSend,
}

impl TransportError {
    /// True when the ERP may have received (and committed) the request.
    pub fn maybe_committed(self) -> bool {
        matches!(self, Self::TimeoutAfterSend | Self::ResetAfterSend)
    }
}

/// What the ERP's response body says, where the adapter can tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyClass {
    /// The target state is already reached (a duplicate of a booked event).
    AlreadyBooked {
        /// The existing document, when the ERP named it.
        document: Option<String>,
    },
    /// The original request with this key is still being processed.
    InFlight,
    /// A concurrent write conflicted; re-applying may succeed.
    Conflict,
    /// A document the event refers to does not exist (yet) in the ERP.
    ReferenceMissing,
    /// The session or token expired.
    SessionExpired,
    /// A legacy RPC error inside an HTTP 2xx (Odoo/Tryton JSON-RPC).
    RpcError {
        /// The ERP's message.
        message: String,
    },
}

/// An HTTP response, reduced to what the policy reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The `Retry-After` header, as sent.
    pub retry_after: Option<String>,
    /// The `Location` header.
    pub location: Option<String>,
    /// The body (possibly cut).
    pub body: String,
    /// The body's meaning, where the adapter recognised it.
    pub class: Option<BodyClass>,
}

/// The outcome of one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// The ERP answered.
    Response(Response),
    /// No answer.
    Transport {
        /// How it failed.
        kind: TransportError,
        /// The error text, for logs and the dead letter.
        detail: String,
    },
    /// An RPC adapter's own reading of the ERP's answers, where the HTTP
    /// status says nothing (Tryton's JSON-RPC answers 200 with an `error`
    /// member); the adapter read the document's state to tell a duplicate
    /// from a failure.
    Rpc(RpcOutcome),
}

/// What an RPC adapter ([`crate::erp::tryton`]) made of an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RpcOutcome {
    /// This attempt moved the document to the event's target state.
    Applied {
        /// The ERP document, for the device's verdict.
        document: String,
    },
    /// The document was already in (or past) the event's target state: an
    /// earlier attempt whose answer was lost, or another event, did it.
    AlreadyThere {
        /// The ERP document.
        document: String,
    },
    /// The ERP refused the call (a Tryton `UserError`): permanent.
    Refused {
        /// The ERP's message and the document's state.
        message: String,
    },
    /// A concurrent write conflicted (`ConcurrencyException`): re-reading
    /// and re-applying may succeed.
    Conflict {
        /// The ERP's message.
        message: String,
    },
    /// The document the event refers to does not exist yet, or is not yet
    /// in the state the event needs (its predecessor is not booked): parked.
    NotReady {
        /// What is missing.
        message: String,
    },
    /// The ERP failed on its side (an exception that is not a business
    /// error, e.g. a locked database): transient.
    Fault {
        /// The ERP's message.
        message: String,
    },
}

/// What the endpoint can do about an authentication failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credentials {
    /// Fixed credentials (a webhook secret): nothing to refresh.
    Fixed,
    /// Can be refreshed and have not been since the last success.
    Refreshable,
    /// Were refreshed since the last success and failed again.
    AlreadyRefreshed,
}

/// Why an attempt failed, for logs, stats and dead letters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureClass {
    /// Might work the next time.
    Transient,
    /// The ERP asked us to slow down.
    Throttled,
    /// A concurrent write conflicted.
    Conflict,
    /// The original request is still in flight at the ERP.
    InFlight,
    /// The credentials were refused.
    ReAuth,
    /// The ERP refused this event.
    Permanent,
    /// A referenced document is missing.
    Parked,
    /// The endpoint or our request is misconfigured.
    Config,
}

impl FailureClass {
    /// A short lowercase name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Transient => "transient",
            Self::Throttled => "throttled",
            Self::Conflict => "conflict",
            Self::InFlight => "in_flight",
            Self::ReAuth => "re_auth",
            Self::Permanent => "permanent",
            Self::Parked => "parked",
            Self::Config => "config",
        }
    }
}

/// The body's JSON `document` (or `id`) field, when there is one.
pub fn document_from_body(body: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(body).ok()?;
    ["document", "id"].iter().find_map(|k| match value.get(k)? {
        serde_json::Value::String(s) if !s.is_empty() => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    })
}
