//! The dashboard: five pages for people, served by the collector's HTTP
//! server, and the JSON endpoints they read.
//!
//! | method | path | what |
//! |---|---|---|
//! | GET | `/ui/` | redirects to `/ui/devices` |
//! | GET | `/ui/{page}` | `devices`, `orders`, `stuck`, `exceptions`, `dead-letters` |
//! | GET | `/ui/assets/app.css`, `/ui/assets/app.js` | the pages' style and script |
//! | GET | `/v1/devices` | devices: online, offline or silent (`?silent_after_ms=`, default 90 s: three missed 30 s heartbeats), since when, last seen, backlog and oldest unsent age, pending for the ERP, gaps, peripherals |
//! | GET | `/v1/orders` | orders and shipments with their state and counts per state (`?state=in_progress\|parked\|blocked\|rejected\|delivered`) |
//! | GET | `/v1/orders/timeline` | one order's events from pick to proof of delivery (`?lane=order:SO-1001`): device, capture time, ERP verdict, document reference |
//! | GET | `/v1/stuck` | parked and blocked lanes with how long they wait, and orders without progress for longer than `?after_ms=` (default 30 min) |
//! | GET | `/v1/exceptions` | exceptions by kind and age, and the newest ones |
//! | GET | `/v1/dead-letters` | dead letters (`?all=true`: also resolved ones) with their attempts and their event's current ERP verdict |
//!
//! # Design
//!
//! The pages are static HTML, CSS and vanilla JavaScript compiled into the
//! binary (`include_str!`): no Node build, no files to deploy. The script
//! polls its page's JSON endpoint every few seconds (paused while the tab
//! is hidden), so the pages follow the inbox live; every number is computed
//! on the server ([`queries`]) from committed inbox data, read through
//! `Inbox::read` on the blocking pool like every other
//! inbox call. The replay button posts to `/dlq/{id}/replay` (see
//! [`crate::http`]).
//!
//! Access: the script sends `Authorization: Bearer <token>` when a token was
//! entered in the page header (kept in the tab's `sessionStorage`, never
//! in a cookie, so no other site can make the browser send it). It asks
//! `/v1/whoami` for the role and hides the replay button unless the role
//! may replay; a collector without that endpoint (no access control) lets
//! everyone replay.

pub use crate::inbox::read_model as queries;

use std::collections::BTreeMap;

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tracing::error;

use crate::delivery::dlq;
use crate::http::ApiState;
use crate::inbox::{DeadLetterSummary, InboxError};

/// The pages: path segment and title.
pub const PAGES: [(&str, &str); 5] = [
    ("devices", "Devices"),
    ("orders", "Orders"),
    ("stuck", "Stuck work"),
    ("exceptions", "Exceptions"),
    ("dead-letters", "Dead letters"),
];

const PAGE_HTML: &str = include_str!("assets/page.html");
const APP_CSS: &str = include_str!("assets/app.css");
const APP_JS: &str = include_str!("assets/app.js");

/// Silence after which an online device shows as `silent`: three missed
/// heartbeats at the agent's default 30 s interval.
pub const DEFAULT_SILENT_AFTER_MS: i64 = 90_000;
/// No progress for this long puts an open order on the stuck page.
pub const DEFAULT_STUCK_AFTER_MS: i64 = 30 * 60_000;
/// Most dead letters the page lists.
const DEAD_LETTER_LIMIT: usize = 200;

/// The dashboard's routes, to merge into the API router (state applied
/// there).
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/ui", get(|| async { Redirect::to("/ui/devices") }))
        .route("/ui/", get(|| async { Redirect::to("/ui/devices") }))
        .route("/ui/assets/app.css", get(css))
        .route("/ui/assets/app.js", get(js))
        .route("/ui/{page}", get(page))
        .route("/v1/devices", get(devices))
        .route("/v1/orders", get(orders))
        .route("/v1/orders/timeline", get(timeline))
        .route("/v1/stuck", get(stuck))
        .route("/v1/exceptions", get(exceptions))
        .route("/v1/dead-letters", get(dead_letters))
}

/// The HTML of one page, or `None` for an unknown page.
pub fn page_html(page: &str) -> Option<String> {
    let (_, title) = PAGES.iter().find(|(p, _)| *p == page)?;
    let nav: String = PAGES
        .iter()
        .map(|(p, t)| {
            let current = if *p == page {
                r#" aria-current="page""#
            } else {
                ""
            };
            format!(r#"<a href="/ui/{p}" data-nav="{p}"{current}>{t}</a>"#)
        })
        .collect();
    Some(
        PAGE_HTML
            .replace("{{page}}", page)
            .replace("{{title}}", title)
            .replace("{{nav}}", &nav),
    )
}

async fn page(Path(page): Path<String>) -> Response {
    match page_html(&page) {
        Some(html) => (
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            html,
        )
            .into_response(),
        None => (
            StatusCode::NOT_FOUND,
            format!(
                "no dashboard page {page:?}; the pages are {}\n",
                PAGES
                    .iter()
                    .map(|(p, _)| format!("/ui/{p}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
            .into_response(),
    }
}

async fn css() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        APP_CSS,
    )
        .into_response()
}

async fn js() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        APP_JS,
    )
        .into_response()
}

fn failed(what: &str, e: &InboxError) -> Response {
    error!("dashboard cannot {what}: {e}");
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("cannot {what}: {e}\n"),
    )
        .into_response()
}

/// Every response carries the server's clock, so ages shown in the
/// browser do not depend on the tablet's clock.
fn with_now<T: Serialize>(now_ms: i64, body: T) -> Response {
    let mut v = serde_json::to_value(body).unwrap_or_else(|_| json!({}));
    if let serde_json::Value::Object(map) = &mut v {
        map.insert("now_ms".into(), json!(now_ms));
    }
    Json(v).into_response()
}

#[derive(Debug, Deserialize)]
struct DevicesQuery {
    silent_after_ms: Option<i64>,
}

async fn devices(State(api): State<ApiState>, Query(q): Query<DevicesQuery>) -> Response {
    let silent_after = q.silent_after_ms.unwrap_or(DEFAULT_SILENT_AFTER_MS).max(0);
    let now = crate::now_ms();
    let result = api
        .inbox
        .call(move |i| {
            let holes = i.open_holes()?;
            i.dashboard_devices(&holes, now, silent_after)
        })
        .await;
    match result {
        Ok(devices) => {
            let count = |s: &str| devices.iter().filter(|d| d.state == s).count();
            let summary = json!({
                "online": count("online"),
                "offline": count("offline"),
                "silent": count("silent"),
                "backlog": devices.iter().filter_map(|d| d.backlog).sum::<u64>(),
                "oldest_unsent_age_ms": devices.iter().filter_map(|d| d.oldest_unsent_age_ms).max(),
                "pending_erp": devices.iter().map(|d| d.pending_erp).sum::<u64>(),
                "gaps": devices.iter().map(|d| d.gaps.len()).sum::<usize>(),
                "missing": devices.iter().map(|d| d.missing).sum::<u64>(),
            });
            with_now(
                now,
                json!({ "silent_after_ms": silent_after, "summary": summary, "devices": devices }),
            )
        }
        Err(e) => failed("read devices", &e),
    }
}

#[derive(Debug, Deserialize)]
struct OrdersQuery {
    state: Option<String>,
}

async fn orders(State(api): State<ApiState>, Query(q): Query<OrdersQuery>) -> Response {
    if let Some(s) = &q.state
        && !s.is_empty()
        && !queries::ORDER_STATES.contains(&s.as_str())
    {
        return (
            StatusCode::BAD_REQUEST,
            format!(
                "unknown order state {s:?}; use one of {}\n",
                queries::ORDER_STATES.join(", ")
            ),
        )
            .into_response();
    }
    let now = crate::now_ms();
    match api.inbox.call(|i| i.dashboard_orders()).await {
        Ok(all) => {
            let counts = queries::count_by_state(&all);
            let state = q.state.filter(|s| !s.is_empty());
            let shown: Vec<_> = all
                .into_iter()
                .filter(|o| state.as_deref().is_none_or(|s| o.state == s))
                .collect();
            with_now(
                now,
                json!({ "state": state, "counts": counts, "orders": shown }),
            )
        }
        Err(e) => failed("read orders", &e),
    }
}

#[derive(Debug, Deserialize)]
struct TimelineQuery {
    lane: String,
}

async fn timeline(State(api): State<ApiState>, Query(q): Query<TimelineQuery>) -> Response {
    let now = crate::now_ms();
    let lane = q.lane.clone();
    match api.inbox.call(move |i| i.dashboard_timeline(&lane)).await {
        Ok(events) if events.is_empty() => (
            StatusCode::NOT_FOUND,
            format!(
                "no events in lane {:?}; lanes are named order:<ref> or shipment:<ref>\n",
                q.lane
            ),
        )
            .into_response(),
        Ok(events) => with_now(now, json!({ "lane": q.lane, "events": events })),
        Err(e) => failed("read an order's timeline", &e),
    }
}

#[derive(Debug, Deserialize)]
struct StuckQuery {
    after_ms: Option<i64>,
}

async fn stuck(State(api): State<ApiState>, Query(q): Query<StuckQuery>) -> Response {
    let after = q.after_ms.unwrap_or(DEFAULT_STUCK_AFTER_MS).max(0);
    let now = crate::now_ms();
    let result = api
        .inbox
        .call(move |i| {
            Ok((
                i.waiting_lanes(1000)?,
                i.dashboard_stalled(now.saturating_sub(after))?,
            ))
        })
        .await;
    match result {
        Ok((lanes, stalled)) => {
            let lanes = queries::waiting(lanes, now);
            let count = |s: &str| lanes.iter().filter(|l| l.lane.status == s).count();
            with_now(
                now,
                json!({
                    "after_ms": after,
                    "summary": {
                        "parked": count("parked"),
                        "blocked": count("blocked"),
                        "stalled_orders": stalled.len(),
                        "longest_wait_ms": lanes.iter().map(|l| l.waiting_ms).max(),
                    },
                    "lanes": lanes,
                    "stalled_orders": stalled,
                }),
            )
        }
        Err(e) => failed("read stuck work", &e),
    }
}

async fn exceptions(State(api): State<ApiState>) -> Response {
    let now = crate::now_ms();
    match api.inbox.call(move |i| i.dashboard_exceptions(now)).await {
        Ok((by_kind, items)) => with_now(now, json!({ "by_kind": by_kind, "items": items })),
        Err(e) => failed("read exceptions", &e),
    }
}

#[derive(Debug, Deserialize)]
struct DeadLettersQuery {
    #[serde(default)]
    all: bool,
}

/// A dead letter on the page: its summary, its attempts, and what became
/// of its event since (booked after a replay?).
#[derive(Debug, Serialize)]
struct DeadLetterRow {
    #[serde(flatten)]
    summary: DeadLetterSummary,
    lane: Option<String>,
    attempt_log: Vec<crate::inbox::AttemptLog>,
    event: Option<queries::EventVerdict>,
}

async fn dead_letters(State(api): State<ApiState>, Query(q): Query<DeadLettersQuery>) -> Response {
    let now = crate::now_ms();
    let result = api
        .inbox
        .call(move |i| {
            let list = i.dead_letters(q.all, DEAD_LETTER_LIMIT)?;
            let mut rows = Vec::with_capacity(list.len());
            for summary in list {
                let full = i.dead_letter(summary.id)?;
                let event = i.event_verdict(&summary.device, summary.epoch, summary.seq)?;
                let lane = full.as_ref().and_then(|d| {
                    let env = d.envelope.as_ref().ok()?;
                    let event = env.business_event()?;
                    Some(crate::delivery::lane::lane_key(&env.device, event))
                });
                rows.push(DeadLetterRow {
                    attempt_log: full.map(|d| d.attempts).unwrap_or_default(),
                    summary,
                    lane,
                    event,
                });
            }
            Ok(rows)
        })
        .await;
    match result {
        Ok(rows) => {
            let mut by_state: BTreeMap<&str, u64> =
                [("open", 0), ("replayed", 0), ("discarded", 0)].into();
            for r in &rows {
                if let Some(n) = by_state.get_mut(r.summary.state.as_str()) {
                    *n += 1;
                }
            }
            with_now(
                now,
                json!({ "counts": by_state, "dead_letters": rows, "limit": dlq::LIST_LIMIT.min(DEAD_LETTER_LIMIT) }),
            )
        }
        Err(e) => failed("list dead letters", &e),
    }
}
