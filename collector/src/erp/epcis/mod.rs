//! EPCIS 2.0: the capture adapter (`[erp] kind = "epcis"`), the export of
//! dockline business events as GS1 EPCIS 2.0 JSON-LD, and a client for an
//! EPCIS repository's capture interface, with one options struct
//! ([`EpcisOptions`], `[erp.epcis]`).
//!
//! - `export`: envelope → EPCIS event → `EPCISDocument` (pure, no I/O);
//! - `gs1`: GTIN / SSCC / GLN → EPC URIs and Digital Link URIs (pure);
//! - `capture`: `POST /capture` and capture-job reads, errors classified
//!   for the delivery policy;
//! - [`EpcisAdapter`] (here): delivers through these: [`Exporter::document_for`],
//!   then [`CaptureClient::event_exists`] and [`CaptureClient::capture`], with
//!   [`CaptureError::attempt_outcome`] handed to the delivery policy.
//!
//! # The adapter
//!
//! Every business event is exported as a one-event `EPCISDocument` and
//! captured at `{erp.url}capture`, the REST root of an EPCIS repository.
//!
//! # One attempt
//!
//! 1. A capture job this process started for the event and has not seen
//!    end is read first (its answer was "still running" last time).
//! 2. `GET {root}events/{eventID}` (with `[erp.epcis] read_before_capture`,
//!    the default): 200 means the repository already holds the event, so it
//!    is booked as a duplicate without a second capture.
//! 3. `POST {root}capture`; `202 Accepted` names a capture job in
//!    `Location`, which is read until it ends (at most `job_wait_ms`):
//!    `success` with no errors books the event (document `EPCIS capture
//!    {captureID}`), a failed job is the repository refusing the event.
//!
//! | answer | policy input | decision |
//! |---|---|---|
//! | job ended, stored | [`RpcOutcome::Applied`] | booked |
//! | `GET /events/{eventID}` 200, or a 409 / duplicate error in the job | [`RpcOutcome::AlreadyThere`], or a 409 [`Response`](crate::erp::outcome::Response) | booked, duplicate |
//! | job ended with errors (`ValidationException`, …) | [`RpcOutcome::Refused`] | dead letter, the device is told |
//! | 400, 422, other 4xx on capture | [`Response`](crate::erp::outcome::Response) | dead letter, the device is told |
//! | 401 / 403 / 404 / 406 / 415 | [`Response`](crate::erp::outcome::Response) | the endpoint halts (or 413/415: dead letter, our side) |
//! | 429, 503 | [`Response`](crate::erp::outcome::Response) | every lane pauses for `Retry-After` |
//! | 5xx, timeouts, resets | [`Response`](crate::erp::outcome::Response) / transport | retried, same eventID |
//! | job still running after `job_wait_ms` | [`RpcOutcome::Fault`] | retried: the next attempt reads the job again |
//! | the event cannot be expressed in EPCIS (a bad SSCC check digit) | [`RpcOutcome::Refused`] | dead letter with the export error |
//!
//! # Exactly-once effect
//!
//! The `eventID` is `urn:uuid:{dockline event id}`, the same on every
//! attempt. EPCIS 2.0 keeps `eventID` optional and its REST binding defines
//! no answer for capturing the same `eventID` twice (`/capture` answers
//! 202, 400, 401, 403, 406, 413, 415 or 500): some repositories refuse the
//! repeat (a 409, or an error in the capture job, both booked here as a
//! duplicate), others would store a second copy. So the adapter does not
//! rely on the repository: before a capture it reads
//! `GET /events/{eventID}` (200 or 404 in the binding), and a resend after a
//! lost `202` finds the stored event instead of capturing it again. The one
//! gap left: a resend that comes while the lost capture's job is still
//! running (the event is not readable yet) captures again; the retry
//! backoff (`erp.retry_min_ms`) normally outlasts a one-event job.
//!
//! # Mapping (CBV 2.0 vocabulary)
//!
//! | dockline event | EPCIS event | action | bizStep | disposition | what |
//! |---|---|---|---|---|---|
//! | `picked` | ObjectEvent | OBSERVE | `picking` | `in_progress` | `quantityList`: the item's class × quantity |
//! | `packed`, SSCC and contents known | AggregationEvent | ADD | `packing` | `in_progress` | `parentID` = SSCC; `childEPCs` = inner SSCCs, `childQuantityList` = items ([`Contents`], from the caller) |
//! | `packed`, otherwise | ObjectEvent | OBSERVE | `packing` | `in_progress` | `epcList` = the SSCC (or empty) |
//! | `loaded` | ObjectEvent | OBSERVE | `loading` | `in_progress` | the SSCC, else the vehicle |
//! | `departed` | ObjectEvent | OBSERVE | `departing` | `in_transit` | the SSCC, else the vehicle |
//! | `arrived` | ObjectEvent | OBSERVE | `arriving` | `in_transit` | the SSCC, else the vehicle |
//! | `delivered` (proof of delivery) | ObjectEvent | OBSERVE | `accepting` | none | the SSCC (or empty) |
//! | `exception` | ObjectEvent | OBSERVE | see below | see below | the SSCC (or empty) |
//!
//! A packed weight becomes a `sensorElementList` `Mass` report (UN/ECE units
//! `KGM`, `GRM`, `LBR`, `ONZ`). `packed` is an AggregationEvent only when the
//! SSCC and at least one child are known, because EPCIS requires a parent and
//! children for `ADD`; the packed event itself names no items, so the caller
//! passes what it knows (the order's picks) or nothing.
//!
//! **Exceptions** have no CBV business step of their own. They are exported
//! as `inspecting` ("reviewing objects to address potential physical or
//! documentation defects"), a step outside the pick→deliver flow so that
//! counts of `picking` or `packing` events are not inflated, with the
//! disposition saying what was found: `short_pick` → `mismatch_quantity`,
//! `wrong_item` → `mismatch_class`, `weight_mismatch` → `non_conformant`,
//! `damaged` → `damaged`, `other` → none. A refused delivery or nobody at home
//! is `holding` ("segregated for further review") with `in_transit`: the
//! goods stay with the carrier. The dockline kind and note ride along as
//! `dockline:exception` and `dockline:note`.
//!
//! # Identifiers
//!
//! - `eventID`: `urn:uuid:{dockline event id}`, stable across retries, so a
//!   repository can refuse a second capture of the same event.
//! - `eventTime`: the capture time in UTC with milliseconds;
//!   `eventTimeZoneOffset`: the site's configured fixed offset
//!   ([`ExportConfig::utc_offset`]; it does not follow daylight saving time).
//! - Items: a GTIN whose GS1 Company Prefix is configured becomes
//!   `urn:epc:idpat:sgtin:…` (or `urn:epc:class:lgtin:…` with a lot); a GTIN
//!   with an unknown prefix, or a GTIN-8, becomes its Digital Link URI
//!   (`https://id.gs1.org/01/…`), since nothing in a GTIN tells where its
//!   prefix ends and guessing would write another company's product; a SKU
//!   (anything that is not a GTIN with a valid check digit) becomes
//!   `{private_base}item/{sku}`. A numeric SKU of 8, 12, 13 or 14 digits
//!   whose last digit happens to be a valid check digit is read as a GTIN.
//! - Units: an SSCC becomes `urn:epc:id:sscc:…` (prefix configured) or
//!   `https://id.gs1.org/00/…`; an SSCC with a bad check digit fails the
//!   export ([`ExportError::Sscc`]) rather than naming a different unit.
//!   Vehicles are `{private_base}vehicle/{id}`.
//! - Locations: `refs.location` that is a GLN → `urn:epc:id:sgln:…` (or
//!   Digital Link); a bin or door code at the site with a configured site
//!   GLN → the site GLN with the code as extension (AI 254,
//!   `urn:epc:id:sgln:{prefix}.{ref}.{code}`); otherwise
//!   `{private_base}site/{site}/loc/{code}` (or `{private_base}loc/{code}` on
//!   the route). Without a location, a GNSS fix becomes a `geo:` read point.
//!   `bizLocation` is the site (GLN or `{private_base}site/{site}`) for events
//!   at the site except `departed`; on the route it is left out.
//! - Business transactions: the order as `poc` ("sometimes internally
//!   referred to as a Sales Order"), the shipment as `desadv`, written
//!   `urn:epcglobal:cbv:bt:{party GLN}:{number}` with a configured party
//!   GLN, else `{private_base}order/…` and `{private_base}shipment/…`.
//!
//! `dockline:` extension fields (namespace [`DEFAULT_EXTENSION_NAMESPACE`]
//! unless configured) keep what EPCIS has no field for: `device`, `epoch`,
//! `seq`, `timeSource`, `stop`, `vehicle`, `lot`, `quantity` (packed),
//! `receivedBy`, `pieces`, `signatureRef`, `photoRef`, `exception`, `note`,
//! `position` (a `geo:` URI when the read point is a location).
//!
//! **Media.** A delivered event with stored media (`ErpEvent::media`) links
//! them in `dockline:media` (`dockline:role`, `dockline:hash`,
//! `dockline:mediaType` and, with a `[media]` link key, `dockline:url`: the
//! collector's signed, expiring link). Media whose wait ran out are named in
//! `dockline:mediaMissing` and `dockline:mediaNote`; the event is captured
//! anyway. The bytes never travel in EPCIS: the repository (or whoever reads
//! the event) fetches them by the link. The link is signed when the
//! document is built, so a retried capture carries a fresher `exp`; the
//! `eventID` (what exactly-once rests on) does not change.
//!
//! # Checked against
//!
//! `collector/tests/epcis.rs` validates every event kind against GS1's EPCIS
//! 2.0 JSON Schema with format checking (Python `jsonschema`, see the README)
//! and shows that a broken document fails the same check.

mod capture;
mod export;
mod gs1;

pub use capture::{
    CaptureAccepted, CaptureClient, CaptureConfig, CaptureError, CaptureFailure, CaptureJob,
    ErrorBehaviour, Problem,
};
pub use export::{
    Contents, DEFAULT_EXTENSION_NAMESPACE, EPCIS_CONTEXT, ExportConfig, ExportConfigError,
    ExportError, Exporter, ItemCount, exception_step,
};
pub use gs1::{CompanyPrefixes, Gs1Error, Gtin};

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use dockline_protocol::SiteId;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tracing::{debug, info, warn};

use super::{AdapterFuture, Attempt, ErpAdapter, ErpEvent};
use crate::erp::ErpSetupError;
use crate::erp::outcome::{AttemptOutcome, Credentials, RpcOutcome};
use crate::erp::{ErpConfig, ErpMediaOptions};
use crate::media::ErpMedium;

/// `[erp.epcis]`: how events are exported and captured. Only
/// `private_base` is required.
#[derive(Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EpcisOptions {
    /// The site whose GLN `site_gln` is; events of other sites are exported
    /// with private location URIs. Needed with `site_gln`.
    #[serde(default)]
    pub site: Option<String>,
    /// The site's GLN (13 digits): `bizLocation` and the base of bin read
    /// points. Without it, private URIs.
    #[serde(default)]
    pub site_gln: Option<String>,
    /// The GLN of the party whose order and shipment numbers the events
    /// carry: business transactions become `urn:epcglobal:cbv:bt:{gln}:…`.
    #[serde(default)]
    pub party_gln: Option<String>,
    /// GS1 Company Prefixes written as EPC URIs (others: Digital Link).
    #[serde(default)]
    pub company_prefixes: Vec<String>,
    /// Absolute URI ending in `/` under which dockline names what has no
    /// GS1 key (`https://wms.example.com/id/`).
    pub private_base: String,
    /// The site's fixed UTC offset, `+HH:MM` or `-HH:MM`.
    #[serde(default = "default_offset")]
    pub utc_offset: String,
    /// Namespace IRI of the `dockline:` extension fields.
    #[serde(default)]
    pub extension_namespace: Option<String>,
    /// `GS1-Capture-Error-Behaviour`: `rollback` (the default) or `proceed`
    /// (one event per document: the same outcome).
    #[serde(default)]
    pub error_behaviour: ErrorBehaviour,
    /// The `Authorization` header value (`Bearer …`), when the repository
    /// wants one; better set by `DOCKLINE_ERP__EPCIS__AUTHORIZATION`.
    #[serde(default)]
    pub authorization: Option<String>,
    /// How long one attempt reads its capture job before leaving it for
    /// the next attempt, milliseconds.
    #[serde(default = "default_job_wait_ms")]
    pub job_wait_ms: u64,
    /// Read `GET /events/{eventID}` before each capture, so a resend after a
    /// lost answer does not capture the event twice. Turn off only for a
    /// repository without the events resource that refuses repeated
    /// eventIDs itself.
    #[serde(default = "default_true")]
    pub read_before_capture: bool,
}

impl std::fmt::Debug for EpcisOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the credential.
        f.debug_struct("EpcisOptions")
            .field("site", &self.site)
            .field("site_gln", &self.site_gln)
            .field("party_gln", &self.party_gln)
            .field("company_prefixes", &self.company_prefixes)
            .field("private_base", &self.private_base)
            .field("utc_offset", &self.utc_offset)
            .field("extension_namespace", &self.extension_namespace)
            .field("error_behaviour", &self.error_behaviour)
            .field(
                "authorization",
                &self.authorization.as_ref().map(|_| "(set)"),
            )
            .field("job_wait_ms", &self.job_wait_ms)
            .field("read_before_capture", &self.read_before_capture)
            .finish()
    }
}

fn default_offset() -> String {
    "+00:00".into()
}
fn default_job_wait_ms() -> u64 {
    5_000
}
fn default_true() -> bool {
    true
}

/// A site id no real site has, for checking the options without one.
const ANY_SITE: &str = "any-site";

impl EpcisOptions {
    /// Options with the defaults and `private_base`.
    pub fn new(private_base: impl Into<String>) -> Self {
        Self {
            site: None,
            site_gln: None,
            party_gln: None,
            company_prefixes: Vec::new(),
            private_base: private_base.into(),
            utc_offset: default_offset(),
            extension_namespace: None,
            error_behaviour: ErrorBehaviour::default(),
            authorization: None,
            job_wait_ms: default_job_wait_ms(),
            read_before_capture: true,
        }
    }

    /// The export config for events of `site`: the site GLN applies only to
    /// the configured site.
    fn export_config(&self, site: &str) -> ExportConfig {
        let own = self.site.as_deref() == Some(site);
        ExportConfig {
            site: site.to_owned(),
            site_gln: if own { self.site_gln.clone() } else { None },
            party_gln: self.party_gln.clone(),
            company_prefixes: self.company_prefixes.clone(),
            private_base: self.private_base.clone(),
            utc_offset: self.utc_offset.clone(),
            extension_namespace: self.extension_namespace.clone(),
        }
    }

    fn capture_config(&self, erp: &ErpConfig) -> CaptureConfig {
        CaptureConfig {
            root: erp.url.clone(),
            error_behaviour: self.error_behaviour,
            timeout: erp.timeout(),
            authorization: self.authorization.clone(),
        }
    }

    /// Checks what serde cannot: GLNs, prefixes, URIs, the offset, the
    /// authorization value. The error names the key and the fix.
    pub fn check(&self, erp: &ErpConfig) -> Result<(), (&'static str, String)> {
        if self.site_gln.is_some() && self.site.is_none() {
            return Err((
                "erp.epcis.site",
                "is missing; site_gln is the GLN of one site, so name that site (the [[devices]] site id) too".into(),
            ));
        }
        let site = self.site.as_deref().unwrap_or(ANY_SITE);
        Exporter::new(&self.export_config(site)).map_err(|e| ("erp.epcis", e.to_string()))?;
        CaptureClient::new(&self.capture_config(erp)).map_err(|e| ("erp.epcis", e.to_string()))?;
        if self.job_wait_ms == 0 {
            return Err((
                "erp.epcis.job_wait_ms",
                "is 0; use the time a capture job may take, e.g. 5000".into(),
            ));
        }
        Ok(())
    }
}

/// Captures events in an EPCIS 2.0 repository.
#[derive(Debug)]
pub struct EpcisAdapter {
    client: CaptureClient,
    options: EpcisOptions,
    /// One exporter per site seen (an exporter names its site's locations).
    exporters: Mutex<HashMap<SiteId, Arc<Exporter>>>,
    /// Capture jobs that were still running when their attempt ended, by
    /// dockline event id: the next attempt reads the job instead of
    /// capturing again.
    running: Mutex<HashMap<String, String>>,
    /// Links to media (`[media]`).
    media: ErpMediaOptions,
}

impl EpcisAdapter {
    /// Prepares the adapter from `[erp]` (`url` = the repository's REST
    /// root, `timeout_ms`) and `[erp.epcis]`.
    pub fn new(erp: &ErpConfig) -> Result<Self, ErpSetupError> {
        let problem = |problem: String| ErpSetupError::Url {
            url: erp.url.clone(),
            problem,
        };
        let options = erp.epcis.clone().ok_or_else(|| {
            problem("kind = \"epcis\" needs an [erp.epcis] table with at least private_base".into())
        })?;
        options
            .check(erp)
            .map_err(|(key, p)| problem(format!("{key} {p}")))?;
        let client =
            CaptureClient::new(&options.capture_config(erp)).map_err(|e| problem(e.to_string()))?;
        Ok(Self {
            client,
            options,
            exporters: Mutex::new(HashMap::new()),
            running: Mutex::new(HashMap::new()),
            media: ErpMediaOptions::default(),
        })
    }

    fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
        // Each update is one insert or remove that cannot panic half-way.
        m.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn exporter(&self, site: &SiteId) -> Result<Arc<Exporter>, String> {
        if let Some(e) = Self::lock(&self.exporters).get(site) {
            return Ok(Arc::clone(e));
        }
        let exporter = Exporter::new(&self.options.export_config(site.as_str()))
            .map(Arc::new)
            .map_err(|e| e.to_string())?;
        Self::lock(&self.exporters).insert(site.clone(), Arc::clone(&exporter));
        Ok(exporter)
    }

    /// Hands the event's media to the adapter (`erp::from_config`): the
    /// delivered event links each medium by its signed URL.
    pub fn with_media(mut self, media: ErpMediaOptions) -> Self {
        self.media = media;
        self
    }

    /// The EPCISDocument for one event (its media linked), or why it cannot
    /// be written.
    fn document(&self, event: ErpEvent<'_>) -> Result<Value, String> {
        let exporter = self.exporter(event.site)?;
        // The packed event names no items; without the order's picks at
        // hand it is an ObjectEvent (see the export's module docs).
        let mut e = exporter
            .event(event.envelope, &Contents::default())
            .map_err(|e| e.to_string())?;
        let media: Vec<(&ErpMedium, Option<String>)> = event
            .media
            .iter()
            .map(|m| (m, self.media.link(&m.hash)))
            .collect();
        exporter.link_media(&mut e, &media, event.media_missing);
        exporter
            .document(vec![e], crate::now_ms())
            .map_err(|e| e.to_string())
    }

    async fn capture_event(&self, event: ErpEvent<'_>) -> Attempt {
        let envelope = event.envelope;
        let id = envelope.id.to_string();
        let event_id = format!("urn:uuid:{id}");
        let job = Self::lock(&self.running).get(&id).cloned();
        if let Some(job) = job {
            return self.await_job(&id, &event_id, &job, true).await;
        }
        if self.options.read_before_capture {
            let url = self.client.event_url(&event_id);
            match self.client.event_exists(&event_id).await {
                Ok(true) => {
                    info!(event_id = %id, "EPCIS repository already holds the event; not capturing it again");
                    return rpc(
                        format!("GET {url}"),
                        RpcOutcome::AlreadyThere {
                            document: format!("EPCIS event {event_id}"),
                        },
                    );
                }
                Ok(false) => {}
                Err(e) => return refused(format!("GET {url}"), &e),
            }
        }
        let document = match self.document(event) {
            Ok(d) => d,
            Err(problem) => {
                return rpc(
                    format!("export {event_id}"),
                    RpcOutcome::Refused {
                        message: format!(
                            "the event cannot be written as EPCIS 2.0: {problem}; fix the event data and replay"
                        ),
                    },
                );
            }
        };
        let request = format!("POST {} eventID={event_id}", self.client.capture_url());
        debug!(device = %envelope.device, seq = envelope.seq, event_id = %id, "capturing event in the EPCIS repository");
        match self.client.capture(&document).await {
            Ok(accepted) => match accepted.job {
                Some(job) => self.await_job(&id, &event_id, &job, false).await,
                None => {
                    // EPCIS 2.0 requires a Location; without one the 2xx is
                    // all there is to go by.
                    warn!(event_id = %id, status = accepted.status,
                        "EPCIS repository accepted the capture without naming a capture job");
                    rpc(
                        request,
                        RpcOutcome::Applied {
                            document: format!("EPCIS capture (HTTP {})", accepted.status),
                        },
                    )
                }
            },
            Err(e) => refused(request, &e),
        }
    }

    /// Reads the capture job until it ends or `job_wait_ms` passes.
    /// `again`: the job was started by an earlier attempt.
    async fn await_job(&self, id: &str, event_id: &str, job: &str, again: bool) -> Attempt {
        let request = format!("GET {job} (capture of {event_id})");
        let deadline = Instant::now() + Duration::from_millis(self.options.job_wait_ms);
        let mut pause = Duration::from_millis(10);
        loop {
            let read = self.client.job(job).await;
            match read {
                Ok(j) if j.running => {}
                Ok(j) => {
                    Self::lock(&self.running).remove(id);
                    return rpc(request, job_outcome(&j, job, again));
                }
                Err(CaptureError::Refused {
                    status: 404 | 410, ..
                }) => {
                    // The repository forgot the job: look the event up
                    // before capturing again.
                    Self::lock(&self.running).remove(id);
                    return rpc(
                        request,
                        RpcOutcome::Fault {
                            message: format!(
                                "capture job {job} is gone; the next attempt looks the event up"
                            ),
                        },
                    );
                }
                Err(e) => {
                    Self::lock(&self.running).insert(id.to_owned(), job.to_owned());
                    return refused(request, &e);
                }
            }
            if Instant::now() + pause > deadline {
                Self::lock(&self.running).insert(id.to_owned(), job.to_owned());
                return rpc(
                    request,
                    RpcOutcome::Fault {
                        message: format!(
                            "capture job {job} still running after {} ms; the next attempt reads it again",
                            self.options.job_wait_ms
                        ),
                    },
                );
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(500));
        }
    }

    async fn probe_repository(&self) -> bool {
        match self.client.discover().await {
            Ok(status) => {
                let up = !(status >= 500 || status == 429);
                info!(status, up, "EPCIS repository probed");
                up
            }
            Err(e) => {
                info!("EPCIS repository probe failed: {e}");
                false
            }
        }
    }
}

/// What an ended capture job means for the one event it held.
fn job_outcome(job: &CaptureJob, url: &str, again: bool) -> RpcOutcome {
    let document = format!(
        "EPCIS capture {}",
        job.capture_id
            .as_deref()
            .or_else(|| url.rsplit('/').next())
            .unwrap_or(url)
    );
    if job.stored() {
        return if again {
            RpcOutcome::AlreadyThere { document }
        } else {
            RpcOutcome::Applied { document }
        };
    }
    let problems: Vec<String> = job
        .errors
        .iter()
        .map(|p| {
            [p.exception(), p.title.as_deref(), p.detail.as_deref()]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(": ")
        })
        .collect();
    let duplicate = job.errors.iter().any(|p| {
        p.status == Some(409)
            || p.exception()
                .is_some_and(|e| e.contains("AlreadyExists") || e.contains("Duplicate"))
    });
    if duplicate {
        return RpcOutcome::AlreadyThere { document };
    }
    RpcOutcome::Refused {
        message: format!(
            "the EPCIS repository's capture job {url} failed: {}; fix the event data or the export and replay",
            if problems.is_empty() {
                "no error named".to_owned()
            } else {
                problems.join("; ")
            }
        ),
    }
}

fn rpc(request: String, outcome: RpcOutcome) -> Attempt {
    Attempt {
        outcome: AttemptOutcome::Rpc(outcome),
        request,
    }
}

fn refused(request: String, e: &CaptureError) -> Attempt {
    if let CaptureError::Refused {
        failure: CaptureFailure::Duplicate,
        ..
    } = e
    {
        info!("EPCIS repository answered 409: it already holds the event");
    }
    Attempt {
        outcome: e.attempt_outcome(),
        request,
    }
}

impl ErpAdapter for EpcisAdapter {
    fn kind(&self) -> &'static str {
        "epcis"
    }

    fn deliver<'a>(&'a self, event: ErpEvent<'a>) -> AdapterFuture<'a, Attempt> {
        Box::pin(self.capture_event(event))
    }

    fn probe(&self) -> AdapterFuture<'_, bool> {
        Box::pin(self.probe_repository())
    }

    fn credentials(&self) -> Credentials {
        // A static Authorization header cannot be refreshed.
        Credentials::Fixed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::erp::epcis::Problem;

    fn job(running: bool, success: bool, errors: Vec<Problem>) -> CaptureJob {
        CaptureJob {
            capture_id: Some("cap-7".into()),
            running,
            success,
            error_behaviour: None,
            errors,
        }
    }

    #[test]
    fn ended_jobs_are_bookings_duplicates_or_refusals() {
        let url = "http://r/epcis/capture/cap-7";
        assert_eq!(
            job_outcome(&job(false, true, vec![]), url, false),
            RpcOutcome::Applied {
                document: "EPCIS capture cap-7".into()
            }
        );
        assert!(matches!(
            job_outcome(&job(false, true, vec![]), url, true),
            RpcOutcome::AlreadyThere { .. }
        ));
        let problem = |kind: &str, status| Problem {
            kind: Some(kind.into()),
            title: Some("refused".into()),
            status,
            detail: Some("bizStep pickingX".into()),
        };
        let RpcOutcome::Refused { message } = job_outcome(
            &job(
                false,
                false,
                vec![problem("epcisException:ValidationException", Some(400))],
            ),
            url,
            false,
        ) else {
            panic!("a refusal")
        };
        assert!(
            message.contains("ValidationException: refused: bizStep pickingX"),
            "{message}"
        );
        assert!(matches!(
            job_outcome(
                &job(
                    false,
                    false,
                    vec![problem(
                        "epcisException:ResourceAlreadyExistsException",
                        None
                    )]
                ),
                url,
                false
            ),
            RpcOutcome::AlreadyThere { .. }
        ));
    }

    #[test]
    fn options_are_checked_with_the_key_named() {
        let erp = ErpConfig::new("http://127.0.0.1:1/epcis/", "");
        let ok = EpcisOptions::new("https://wms.example.com/id/");
        assert_eq!(ok.check(&erp), Ok(()));
        let no_site = EpcisOptions {
            site_gln: Some("4012345000016".into()),
            ..ok.clone()
        };
        assert_eq!(no_site.check(&erp).map_err(|e| e.0), Err("erp.epcis.site"));
        let bad_base = EpcisOptions::new("wms");
        let err = bad_base.check(&erp).expect_err("not a URI");
        assert!(err.1.contains("private_base"), "{err:?}");
        let secret = EpcisOptions {
            authorization: Some("Bearer s3cr3t".into()),
            ..ok
        };
        assert!(!format!("{secret:?}").contains("s3cr3t"));
    }

    #[test]
    fn an_epcis_site_is_configured_in_erp_epcis() {
        use crate::config::Config;
        use crate::erp::ErpKind;
        let text = "[erp]\nkind = \"epcis\"\nurl = \"https://epcis.example.com/epcis/\"\n[erp.epcis]\nprivate_base = \"https://wms.example.com/id/\"\nsite = \"BRU1\"\nsite_gln = \"4012345000016\"\nauthorization = \"Bearer t0k3n\"\n";
        let cfg: Config = toml::from_str(text).expect("parses");
        assert_eq!(cfg.erp.kind, ErpKind::Epcis);
        cfg.check().expect("valid without a webhook secret");
        assert!(!format!("{cfg:?}").contains("t0k3n"), "Debug hides it");
        assert!(EpcisAdapter::new(&cfg.erp).is_ok());
        let e = cfg.erp.epcis.as_ref().expect("table");
        assert_eq!((e.job_wait_ms, e.read_before_capture), (5_000, true));
        let missing: Config =
            toml::from_str("[erp]\nkind = \"epcis\"\nurl = \"http://x/\"\n").expect("parses");
        assert_eq!(missing.check().expect_err("no table").key, "erp.epcis");
        let bad: Config =
            toml::from_str(&text.replace("4012345000016", "4012345000017")).expect("parses");
        let err = bad.check().expect_err("a GLN with a bad check digit");
        assert_eq!(err.key, "erp.epcis", "{err}");
        assert!(toml::from_str::<Config>(&format!("{text}jobwait_ms = 3\n")).is_err());
    }

    #[test]
    fn the_site_gln_applies_to_its_own_site_only() {
        let options = EpcisOptions {
            site: Some("BRU1".into()),
            site_gln: Some("4012345000016".into()),
            ..EpcisOptions::new("https://wms.example.com/id/")
        };
        assert!(options.export_config("BRU1").site_gln.is_some());
        assert!(options.export_config("ANR2").site_gln.is_none());
    }
}
