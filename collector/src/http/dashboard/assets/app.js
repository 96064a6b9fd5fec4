// dockline dashboard: one script for the five pages. It polls the page's
// JSON endpoint every POLL_MS (paused while the tab is hidden) and redraws.
// Every number comes from the server; ages use the server's clock (now_ms in
// each answer), so a tablet with a wrong clock still shows the right ages.
// Text is always set with textContent: nothing from the inbox becomes HTML.
"use strict";

const PAGE = document.body.dataset.page;
const POLL_MS = 5000;
const TOKEN_KEY = "dockline.token";
const STUCK_KEY = "dockline.stuckAfterMin";

// The role from /v1/whoami: "operator" or "viewer" ("operator" too on a
// collector without access control), null when the collector has no
// /v1/whoami (older: everyone may replay), "none" when not signed in.
let role = null;
let timer = null;
let lastOk = 0;
// Page state that survives a redraw.
const ui = { openLane: null, timeline: null, media: {}, showResolved: false, openAttempts: new Set() };

function token() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

async function api(path, options) {
  const opts = Object.assign({ method: "GET" }, options || {});
  const headers = { Accept: "application/json" };
  const t = token();
  if (t) headers.Authorization = "Bearer " + t;
  opts.headers = Object.assign(headers, opts.headers || {});
  const r = await fetch(path, opts);
  const text = await r.text();
  if (!r.ok) {
    const e = new Error(r.status + " " + (text.trim() || r.statusText));
    e.status = r.status;
    throw e;
  }
  try { return JSON.parse(text); } catch (_) { return text; }
}

// h("td", {class: "num", "data-label": "Backlog"}, "12") → element.
function h(tag, attrs, ...kids) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const kid of kids.flat()) {
    if (kid === null || kid === undefined || kid === false) continue;
    el.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
  }
  return el;
}

function duration(ms) {
  if (ms === null || ms === undefined) return "–";
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return s + " s";
  const m = Math.floor(s / 60);
  if (m < 60) return m + " min";
  const hrs = Math.floor(m / 60);
  if (hrs < 24) return hrs + " h " + String(m % 60).padStart(2, "0") + " min";
  const d = Math.floor(hrs / 24);
  return d + " d " + (hrs % 24) + " h";
}

function ago(now, ms) {
  return ms === null || ms === undefined ? "never" : duration(now - ms) + " ago";
}

function clock(ms) {
  if (ms === null || ms === undefined) return "–";
  const d = new Date(ms);
  const today = new Date();
  const time = d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false });
  return d.toDateString() === today.toDateString()
    ? time
    : d.toLocaleDateString([], { month: "short", day: "numeric" }) + " " + time;
}

function plural(n, word) {
  return n + " " + word + (n === 1 ? "" : "s");
}

function words(s) {
  return String(s || "").replace(/_/g, " ");
}

function badge(value, text) {
  return h("span", { class: "badge " + value, "data-state": value }, text || words(value));
}

function card(id, label, value, tone, sub) {
  return h("div", { class: "card " + (tone || ""), "data-testid": id },
    h("div", { class: "label" }, label),
    h("div", { class: "value" }, value),
    sub ? h("div", { class: "sub" }, sub) : null);
}

function table(columns, rows, empty) {
  if (!rows.length) return h("div", { class: "tablewrap" }, h("p", { class: "empty" }, empty));
  return h("div", { class: "tablewrap" },
    h("table", {},
      h("thead", {}, h("tr", {}, columns.map(c => h("th", { class: c.num ? "num" : null }, c.label)))),
      h("tbody", {}, rows)));
}

function cell(label, content, num) {
  return h("td", { "data-label": label, class: num ? "num" : null }, content);
}

function show(id, text) {
  const el = document.getElementById(id);
  el.textContent = text || "";
  el.hidden = !text;
}

// ---- devices ----

async function devicesPage() {
  const d = await api("/v1/devices");
  const s = d.summary;
  const now = d.now_ms;
  const rows = d.devices.map(dev => h("tr", { "data-device": dev.device },
    cell("Device", [h("strong", { class: "id" }, dev.device), h("div", { class: "muted id" }, dev.site)]),
    cell("State", [badge(dev.state), h("div", { class: "muted" }, dev.since_ms ? "for " + duration(now - dev.since_ms) : "")]),
    cell("Last seen", ago(now, dev.last_seen_ms)),
    cell("Backlog", dev.backlog === null ? "–" : String(dev.backlog), true),
    cell("Oldest unsent", dev.oldest_unsent_age_ms === null ? "–" : duration(dev.oldest_unsent_age_ms), true),
    cell("For the ERP", String(dev.pending_erp), true),
    cell("Gaps", dev.gaps.length
      ? dev.gaps.map(g => h("div", { class: "mono" }, g.from === g.to ? "#" + g.from : "#" + g.from + "–" + g.to))
      : "none"),
    cell("Peripherals", dev.peripherals.length
      ? h("div", { class: "pills" }, dev.peripherals.map(p =>
          badge(p.connected ? "connected" : "disconnected",
            p.name + (p.connected ? " ✓" : " ✗") + (p.last_reading_ms ? " · " + ago(now, p.last_reading_ms) : ""))))
      : h("span", { class: "muted" }, "none reported"))));
  return [
    h("div", { class: "cards" },
      card("card-online", "Online", s.online, "ok"),
      card("card-offline", "Offline", s.offline, s.offline ? "off" : ""),
      card("card-silent", "Silent", s.silent, s.silent ? "warn" : "", "no word for " + duration(d.silent_after_ms)),
      card("card-backlog", "Backlog on devices", s.backlog, s.backlog ? "warn" : "", "events not yet sent"),
      card("card-oldest", "Oldest unsent", duration(s.oldest_unsent_age_ms), s.oldest_unsent_age_ms ? "warn" : ""),
      card("card-gaps", "Gaps", s.gaps, s.gaps ? "bad" : "", plural(s.missing, "event") + " missing")),
    table([
      { label: "Device" }, { label: "State" }, { label: "Last seen" }, { label: "Backlog", num: true },
      { label: "Oldest unsent", num: true }, { label: "For the ERP", num: true }, { label: "Gaps" },
      { label: "Peripherals" }], rows, "No devices yet."),
  ];
}

// ---- orders ----

// The order states in the order people scan them (as /v1/orders names them).
const ORDER_STATES = ["in_progress", "parked", "blocked", "rejected", "delivered"];

function stateFilter() {
  return new URLSearchParams(location.search).get("state") || "";
}

function timelineView(t) {
  return h("ol", { class: "timeline", "data-timeline": t.lane }, t.events.map(e => h("li", { class: e.verdict, "data-seq": e.device + "/" + e.seq },
    h("div", { class: "what" }, words(e.kind), " ", h("span", { class: "muted" }, e.detail)),
    h("div", { class: "meta" },
      clock(e.captured_ms), " · ", h("span", { class: "mono" }, e.device), " #" + e.seq, " · ",
      badge(e.verdict), " ",
      e.document ? h("span", { class: "mono", "data-document": e.document }, e.document) : null,
      e.verdict_ms ? h("span", { class: "muted" }, " at " + clock(e.verdict_ms)) : null,
      e.reason ? " " + e.reason : null,
      e.verdict === "pending" && e.last_error ? " last try: " + e.last_error : null,
      e.late ? " (after its park limit, out of order)" : null,
      e.dead_letter ? h("a", { href: "/ui/dead-letters" }, " dead letter #" + e.dead_letter) : null),
    mediaView(ui.media[e.id]))));
}

// A delivery's signature and photos: <img> tags to short-lived signed links
// the collector hands out with /v1/events/{id}/media (an <img> cannot send
// the token); a medium not received yet is named, not shown.
function mediaView(list) {
  if (!list || !list.length) return null;
  return h("div", { class: "media" }, list.map(m => m.stored && m.url
    ? h("figure", { "data-media": m.role },
      h("img", { src: m.url, alt: words(m.role), loading: "lazy", width: "160" }),
      h("figcaption", { class: "muted" }, words(m.role) + (m.attached ? " · attached at the ERP" : " · stored")))
    : h("p", { class: "muted", "data-media-missing": m.role },
      words(m.role) + " sha256:" + m.hash.slice(0, 8) + "… not received yet")));
}

async function ordersPage() {
  const state = stateFilter();
  const d = await api("/v1/orders" + (state ? "?state=" + encodeURIComponent(state) : ""));
  const now = d.now_ms;
  if (ui.openLane) {
    try { ui.timeline = await api("/v1/orders/timeline?lane=" + encodeURIComponent(ui.openLane)); }
    catch (e) { ui.timeline = null; }
    if (ui.timeline) {
      // Asked again only while one is missing: a stored medium's link stays
      // the same, so the browser keeps the image between polls.
      const ask = e => e.kind === "delivered" && !(ui.media[e.id] && ui.media[e.id].every(m => m.stored));
      await Promise.all(ui.timeline.events.filter(ask).map(async e => {
        try { ui.media[e.id] = await api("/v1/events/" + encodeURIComponent(e.id) + "/media"); }
        catch (_) { ui.media[e.id] = null; }
      }));
    }
  }
  const total = Object.values(d.counts).reduce((a, b) => a + b, 0);
  const chip = (value, label, n) => h("button", {
    class: "chip", type: "button", "aria-pressed": String(state === value), "data-filter": value || "all",
    onclick: () => {
      const url = new URL(location.href);
      if (value) url.searchParams.set("state", value); else url.searchParams.delete("state");
      history.replaceState(null, "", url);
      refresh();
    },
  }, label, h("span", { class: "n" }, n));
  const rows = [];
  for (const o of d.orders) {
    const open = ui.openLane === o.lane;
    rows.push(h("tr", {
      class: "clickable" + (open ? " open" : ""), "data-order": o.reference, "data-lane": o.lane,
      onclick: () => { ui.openLane = open ? null : o.lane; refresh(); },
    },
      cell("Order", [h("strong", { class: "id" }, o.reference), o.kind === "order" ? null : h("div", { class: "muted" }, o.kind)]),
      cell("State", badge(o.state)),
      cell("Booked up to", o.booked_stage ? words(o.booked_stage) : "nothing yet"),
      cell("Events", o.booked + " booked · " + o.pending + " pending" + (o.rejected ? " · " + o.rejected + " rejected" : "")),
      cell("Exceptions", String(o.exceptions), true),
      cell("Last progress", ago(now, o.last_progress_ms))));
    if (open && ui.timeline && ui.timeline.lane === o.lane) {
      rows.push(h("tr", { class: "detail" }, h("td", { colspan: 6 }, timelineView(ui.timeline))));
    }
  }
  return [
    h("div", { class: "chips" }, chip("", "All", total),
      ORDER_STATES.map(k => chip(k, words(k), d.counts[k] || 0))),
    table([{ label: "Order" }, { label: "State" }, { label: "Booked up to" }, { label: "Events" },
      { label: "Exceptions", num: true }, { label: "Last progress" }], rows,
      state ? "No orders " + words(state) + "." : "No orders yet."),
    h("p", { class: "muted" }, "Tap an order for its timeline from pick to proof of delivery."),
  ];
}

// ---- stuck work ----

function stuckAfterMin() {
  const v = Number(localStorage.getItem(STUCK_KEY));
  return Number.isFinite(v) && v > 0 ? v : 30;
}

async function stuckPage() {
  const minutes = stuckAfterMin();
  const d = await api("/v1/stuck?after_ms=" + Math.round(minutes * 60000));
  const s = d.summary;
  const now = d.now_ms;
  // Lanes waiting for a signature or photo (the collector's media wait).
  let waiting = [];
  try { waiting = await api("/v1/media-lanes"); } catch (_) { waiting = []; }
  const mediaLanes = waiting.map(l => h("tr", { "data-lane": l.lane, "data-media-wait": "" },
    cell("Lane", h("strong", { class: "mono" }, l.lane)),
    cell("Status", badge("parked")),
    cell("Waiting", duration(now - l.since_ms)),
    cell("Why", h("span", { class: "why" }, l.reason)),
    cell("Pending", "—", true),
    cell("Next look", "in " + duration(l.until_ms - now) + " or when it arrives")));
  const lanes = mediaLanes.concat(d.lanes.map(l => h("tr", { "data-lane": l.lane },
    cell("Lane", h("strong", { class: "mono" }, l.lane)),
    cell("Status", badge(l.status)),
    cell("Waiting", duration(l.waiting_ms)),
    cell("Why", h("span", { class: "why" }, l.reason)),
    cell("Pending", String(l.pending), true),
    cell("Next look", l.next_look_ms ? "in " + duration(l.next_look_ms - now) : "when released"))));
  const orders = d.stalled_orders.map(o => h("tr", { "data-order": o.reference },
    cell("Order", h("strong", { class: "id" }, o.reference)),
    cell("State", badge(o.state)),
    cell("Booked up to", o.booked_stage ? words(o.booked_stage) : "nothing yet"),
    cell("No progress for", duration(now - o.last_progress_ms)),
    cell("Pending", String(o.pending), true)));
  const input = h("input", { id: "stuck-after", type: "number", min: "1", step: "1", value: String(minutes) });
  return [
    h("form", {
      class: "setting", onsubmit: ev => {
        ev.preventDefault();
        const v = Number(input.value);
        if (Number.isFinite(v) && v > 0) localStorage.setItem(STUCK_KEY, String(v));
        refresh();
      },
    }, h("label", { for: "stuck-after" }, "Orders with no progress for more than"), input, "minutes",
      h("button", { type: "submit" }, "Apply")),
    h("div", { class: "cards" },
      card("card-blocked", "Blocked lanes", s.blocked, s.blocked ? "bad" : "", "a dead letter holds them"),
      card("card-parked", "Parked lanes", s.parked + waiting.length, s.parked + waiting.length ? "warn" : "", "waiting for an earlier step, a gap or media"),
      card("card-stalled", "Stalled orders", s.stalled_orders, s.stalled_orders ? "warn" : "", "over " + duration(d.after_ms)),
      card("card-longest", "Longest wait", duration(s.longest_wait_ms), "")),
    h("h2", {}, "Lanes parked or blocked"),
    table([{ label: "Lane" }, { label: "Status" }, { label: "Waiting" }, { label: "Why" },
      { label: "Pending", num: true }, { label: "Next look" }], lanes, "No lane waits."),
    h("h2", {}, "Orders without progress"),
    table([{ label: "Order" }, { label: "State" }, { label: "Booked up to" }, { label: "No progress for" },
      { label: "Pending", num: true }], orders, "Every open order moved within " + duration(d.after_ms) + "."),
  ];
}

// ---- exceptions ----

async function exceptionsPage() {
  const d = await api("/v1/exceptions");
  const rows = d.items.map(x => h("tr", { "data-kind": x.kind },
    cell("Age", duration(x.age_ms)),
    cell("Kind", h("strong", {}, words(x.kind))),
    cell("Device", h("span", { class: "mono" }, x.device + " #" + x.seq)),
    cell("Concerns", x.lane ? h("span", { class: "mono" }, x.lane) : "–"),
    cell("Note", x.note || "–"),
    cell("ERP", [badge(x.verdict), x.document ? " " + x.document : null])));
  return [
    h("div", { class: "cards wide" }, d.by_kind.map(k => card("card-" + k.kind, words(k.kind), k.count,
      k.count ? (k.last_hour ? "bad" : "warn") : "",
      k.count
        ? [h("div", {}, k.last_hour + " in the last hour"),
           h("div", {}, k.last_day + " earlier today, " + k.older + " older"),
           h("div", {}, "oldest " + duration(k.oldest_age_ms))]
        : "none"))),
    h("h2", {}, "Newest first"),
    table([{ label: "Age" }, { label: "Kind" }, { label: "Device" }, { label: "Concerns" }, { label: "Note" },
      { label: "ERP" }], rows, "No exceptions reported."),
  ];
}

// ---- dead letters ----

function mayReplay() {
  return role === null || role === "operator";
}

async function replay(id, button) {
  button.disabled = true;
  button.textContent = "Replaying…";
  try {
    await api("/dlq/" + id + "/replay", { method: "POST" });
    show("notice", "Dead letter #" + id + " replayed: its event is queued for the ERP again.");
    show("error", "");
  } catch (e) {
    show("error", "Replay of #" + id + " failed: " + e.message);
  }
  refresh();
}

async function deadLettersPage() {
  const d = await api("/v1/dead-letters" + (ui.showResolved ? "?all=true" : ""));
  const now = d.now_ms;
  const rows = d.dead_letters.map(x => {
    const attempts = h("details", {
      open: ui.openAttempts.has(x.id),
      ontoggle: ev => { if (ev.target.open) ui.openAttempts.add(x.id); else ui.openAttempts.delete(x.id); },
    }, h("summary", {}, plural(x.attempts, "attempt")),
      h("ol", { class: "attempts" }, x.attempt_log.map(a => h("li", {},
        clock(a.at_ms) + " · " + (a.status ? "HTTP " + a.status : (a.error || "no answer")) + " · " + a.decision))));
    let action;
    if (x.state !== "open") action = h("span", { class: "muted" }, "–");
    else if (mayReplay()) {
      action = h("button", { class: "primary", type: "button", "data-replay": x.id });
      action.textContent = "Replay";
      action.addEventListener("click", ev => { ev.stopPropagation(); replay(x.id, action); });
    } else action = h("span", { class: "muted", title: "Replaying needs the operator role" }, "operator only");
    return h("tr", { "data-dead-letter": x.id },
      cell("#", h("strong", {}, "#" + x.id)),
      cell("Event", [h("span", { class: "mono" }, x.device + " #" + x.seq), h("div", { class: "muted" }, words(x.kind))]),
      cell("Lane", x.lane ? h("span", { class: "mono" }, x.lane) : "–"),
      cell("Why", h("span", { class: "why" }, h("strong", {}, x.class), " ", x.reason)),
      cell("Attempts", attempts),
      cell("Since", ago(now, x.created_ms)),
      cell("State", badge(x.state)),
      cell("Event now", x.event ? [badge(x.event.state), x.event.document ? h("div", { class: "mono", "data-document": x.event.document }, x.event.document) : null] : "–"),
      cell("", action));
  });
  const toggle = h("input", {
    type: "checkbox", id: "show-resolved", checked: ui.showResolved,
    onchange: ev => { ui.showResolved = ev.target.checked; refresh(); },
  });
  return [
    h("div", { class: "cards" },
      card("card-open", "Open", d.counts.open, d.counts.open ? "bad" : "ok", "each blocks its lane"),
      ui.showResolved ? card("card-replayed", "Replayed", d.counts.replayed, "") : null,
      ui.showResolved ? card("card-discarded", "Discarded", d.counts.discarded, "") : null),
    h("div", { class: "setting" }, toggle, h("label", { for: "show-resolved" }, "Show replayed and discarded ones too")),
    role === "viewer" ? h("p", { class: "muted" }, "Signed in as viewer: replaying needs the operator role.") : null,
    table([{ label: "#" }, { label: "Event" }, { label: "Lane" }, { label: "Why" }, { label: "Attempts" },
      { label: "Since" }, { label: "State" }, { label: "Event now" }, { label: "" }], rows,
      ui.showResolved ? "No dead letters." : "No open dead letters: nothing waits for an operator."),
  ];
}

// ---- frame ----

const PAGES = {
  devices: devicesPage,
  orders: ordersPage,
  stuck: stuckPage,
  exceptions: exceptionsPage,
  "dead-letters": deadLettersPage,
};

async function whoami() {
  let open = false;
  try {
    const me = await api("/v1/whoami");
    role = me && me.role ? me.role : null;
    // An API without credentials answers every caller as "anonymous".
    open = Boolean(me && me.who === "anonymous");
  } catch (e) {
    // 404: no access control on this collector; 401: the token is missing or wrong.
    role = e.status === 404 ? null : "none";
    if (e.status === 401 || e.status === 403) show("error", "Sign in with an access token to see this page.");
  }
  const label = document.getElementById("role");
  label.textContent = open ? "open access" : role && role !== "none" ? "role: " + role : "";
  for (const id of ["user", "token", "token-save"]) document.getElementById(id).hidden = open;
  document.getElementById("login").classList.toggle("signed-in", Boolean(token()));
  document.getElementById("token-clear").hidden = !token();
}

let busy = false;
async function refresh() {
  if (busy) return;
  busy = true;
  const live = document.getElementById("live");
  try {
    const parts = await PAGES[PAGE]();
    const content = document.getElementById("content");
    content.replaceChildren(...parts.filter(Boolean));
    lastOk = Date.now();
    live.className = "live ok";
    live.textContent = "live · " + clock(lastOk);
    if (document.getElementById("error").textContent.startsWith("Cannot load")) show("error", "");
  } catch (e) {
    live.className = "live stale";
    live.textContent = lastOk ? "stale since " + clock(lastOk) : "offline";
    show("error", "Cannot load this page's data: " + e.message);
  } finally {
    busy = false;
  }
}

function schedule() {
  clearInterval(timer);
  timer = document.hidden ? null : setInterval(refresh, POLL_MS);
}

// Sign in: a user name and password go to POST /v1/login for a session
// token; a secret without a user name is used as a configured access token.
document.getElementById("login").addEventListener("submit", async ev => {
  ev.preventDefault();
  const user = document.getElementById("user");
  const secret = document.getElementById("token");
  show("error", "");
  try {
    if (user.value.trim()) {
      const r = await api("/v1/login", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ username: user.value.trim(), password: secret.value }),
      });
      sessionStorage.setItem(TOKEN_KEY, r.token);
    } else if (secret.value.trim()) {
      sessionStorage.setItem(TOKEN_KEY, secret.value.trim());
    }
  } catch (e) {
    show("error", "Sign-in failed: " + e.message);
  }
  user.value = "";
  secret.value = "";
  await whoami();
  refresh();
});
document.getElementById("token-clear").addEventListener("click", async () => {
  if (token()) {
    try { await api("/v1/logout", { method: "POST" }); } catch (_) { /* a plain token has no session */ }
  }
  sessionStorage.removeItem(TOKEN_KEY);
  await whoami();
  refresh();
});
document.addEventListener("visibilitychange", () => { schedule(); if (!document.hidden) refresh(); });

whoami().then(refresh);
schedule();
