// dockline handheld app: vanilla JS, talks only to the agent that served it.
//
// Every action becomes an event with its own Idempotency-Key, kept in
// localStorage until the agent stored it: a retry (network error, 5xx, the
// agent restarting, the page reloading) sends the same key, so the agent
// books the event once. For UNDO_MS after an action the event waits on the
// handheld and can be undone; then it is sent. Receipts follow the event
// live with a long poll on GET /v1/events/{id}?known=STATE.
'use strict';

const UNDO_MS = 4000;
const RETRY_MAX_MS = 8000;
const LS = { op: 'dockline.operator', queue: 'dockline.queue', sent: 'dockline.sent', media: 'dockline.media.' };

const $ = (id) => document.getElementById(id);
const load = (k, d) => { try { const v = localStorage.getItem(k); return v ? JSON.parse(v) : d; } catch (_) { return d; } };
const save = (k, v) => { try { localStorage.setItem(k, JSON.stringify(v)); return true; } catch (_) { return false; } };

function newKey() {
  if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
  const b = new Uint8Array(16);
  crypto.getRandomValues(b);
  return Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
}

// ---- screens -------------------------------------------------------------

const TITLES = { signin: 'Sign in', home: 'dockline', tasks: 'Pick', pick: 'Pick', pack: 'Pack',
  load: 'Load', depart: 'Depart', arrive: 'Arrive', deliver: 'Deliver', exception: 'Exception', receipts: 'Receipts' };
let screen = 'signin';
const trail = [];

function show(name, push = true) {
  if (push && screen !== name) trail.push(screen);
  screen = name;
  document.querySelectorAll('.screen').forEach((s) => { s.hidden = s.id !== 's-' + name; });
  $('title').textContent = TITLES[name] || 'dockline';
  $('back').hidden = name === 'signin' || name === 'home';
  const first = document.querySelector('#s-' + name + ' input.scan, #s-' + name + ' input');
  if (first && name !== 'home') first.focus();
  if (name === 'tasks') refreshTasks();
  if (name === 'receipts') { renderReceipts(); refreshMedia(); }
  if (name === 'deliver') sizeCanvas();
  document.body.dataset.screen = name;
}

function back() { show(trail.pop() || 'home', false); }

// ---- the station scale's weight ------------------------------------------
// On the pick screen, the last stable weight of a station scale (from
// /v1/status, once a second) when one is configured; hidden otherwise.
async function refreshScale() {
  if (screen !== 'pick') return;
  try {
    const res = await fetch('/v1/status', { credentials: 'same-origin' });
    if (!res.ok) return;
    const st = await res.json();
    const w = (st.stations || []).map((s) => s.weight_kg).find((k) => typeof k === 'number');
    $('pick-scale-row').hidden = w === undefined;
    if (w !== undefined) $('pick-scale').textContent = w.toFixed(3) + ' kg';
  } catch (_) { /* offline: keep the last value */ }
}
setInterval(refreshScale, 1000);
// Media states move with the collector's acks: refresh them while the receipts show.
setInterval(() => { if (!$('receipt-list') || $('receipt-list').closest('[hidden]')) return; refreshMedia(); }, 3000);

// ---- operator ------------------------------------------------------------

let operator = load(LS.op, null);

function signIn() {
  const id = $('signin-id').value.trim();
  if (!id) { $('signin-id').focus(); return; }
  operator = id;
  save(LS.op, id);
  $('who').textContent = id;
  show('home');
}

function signOut() {
  operator = null;
  localStorage.removeItem(LS.op);
  $('who').textContent = '';
  $('signin-id').value = '';
  trail.length = 0;
  show('signin', false);
}

// ---- sending: undo window, retries with one key, receipts ----------------

let queue = load(LS.queue, []); // [{key, label, body, state, due}]
let sent = load(LS.sent, []); // [{key, label, event_id, state, document, reason, media}]
let undoTimer = null;

function persist() { save(LS.queue, queue); save(LS.sent, sent); }

// Queues an event; it is sent after the undo window.
function act(label, body, media) {
  // The operator signed in travels in every event (refs.operator).
  if (operator) body = Object.assign({}, body, { refs: Object.assign({}, body.refs || {}, { operator }) });
  const item = { key: newKey(), label, body, state: 'pending', due: Date.now() + UNDO_MS, media: media || [] };
  queue.push(item);
  persist();
  toast(label + ' - sending in ' + Math.round(UNDO_MS / 1000) + ' s', item.key);
  clearTimeout(undoTimer);
  undoTimer = setTimeout(pump, UNDO_MS);
  renderReceipts();
  return item;
}

function undo(key) {
  const i = queue.findIndex((q) => q.key === key && q.state === 'pending' && !q.sending);
  if (i >= 0) {
    const [item] = queue.splice(i, 1);
    (item.media || []).forEach((m) => localStorage.removeItem(LS.media + m));
    persist();
    toast('Undone: ' + item.label, null);
    renderReceipts();
    if (item.onUndo) item.onUndo();
    return true;
  }
  return false;
}

function toast(text, key) {
  $('toast-text').textContent = text;
  $('toast-undo').hidden = !key;
  $('toast-undo').dataset.key = key || '';
  $('toast').hidden = false;
  clearTimeout(toast.t);
  toast.t = setTimeout(() => { $('toast').hidden = true; }, key ? UNDO_MS : 2500);
}

let pumping = false;
let backoff = 500;

async function pump() {
  if (pumping) return;
  pumping = true;
  try {
    for (;;) {
      const item = queue.find((q) => q.due <= Date.now());
      if (!item) break;
      item.sending = true;
      const outcome = await send(item);
      item.sending = false;
      if (outcome === 'retry') {
        setNet(false);
        setTimeout(pump, backoff);
        backoff = Math.min(backoff * 2, RETRY_MAX_MS);
        break;
      }
      backoff = 500;
      setNet(true);
    }
  } finally {
    pumping = false;
  }
  const next = queue.filter((q) => q.due > Date.now()).map((q) => q.due).sort()[0];
  if (next) setTimeout(pump, next - Date.now() + 10);
}

// Bytes and type of a data: URL.
function dataUrlBytes(url) {
  const m = /^data:(image\/(?:png|jpeg));base64,(.*)$/.exec(url || '');
  if (!m) return null;
  const bin = atob(m[2]);
  const bytes = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  return { type: m[1], bytes };
}

// Moves an event's media to the agent (PUT /v1/media/<sha256>), where they
// are kept sealed; 'done' when all are there.
async function uploadMedia(item) {
  item.uploaded = item.uploaded || [];
  for (const ref of item.media || []) {
    if (item.uploaded.includes(ref)) continue;
    const media = dataUrlBytes(load(LS.media + ref, null));
    if (!media) { item.uploaded.push(ref); continue; } // lost on the handheld: nothing to send
    let res;
    try {
      res = await fetch('/v1/media/' + ref.replace('sha256:', ''), {
        method: 'PUT', headers: { 'content-type': media.type }, body: media.bytes, credentials: 'same-origin',
      });
    } catch (_) {
      return 'retry';
    }
    if (!res.ok) return 'retry';
    item.uploaded.push(ref);
    localStorage.removeItem(LS.media + ref);
    persist();
  }
  return 'done';
}

// Sends one event (its media first); 'done' when the agent answered for
// good, 'retry' otherwise.
async function send(item) {
  if ((await uploadMedia(item)) === 'retry') return 'retry';
  let res;
  try {
    res = await fetch('/v1/events', {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'idempotency-key': item.key },
      body: JSON.stringify(item.body),
      credentials: 'same-origin',
    });
  } catch (_) {
    return 'retry';
  }
  if (res.status === 401) {
    // The app cookie is stale (the agent's token changed): fetch the page
    // again for a fresh one, then retry with the same key.
    try { await fetch('/app/', { credentials: 'same-origin' }); } catch (_) { /* offline */ }
    return 'retry';
  }
  if (res.status >= 500 || res.status === 429 || res.status === 408) return 'retry';
  let answer = {};
  try { answer = await res.json(); } catch (_) { /* empty */ }
  queue = queue.filter((q) => q.key !== item.key);
  const entry = { key: item.key, label: item.label, media: item.media || [] };
  if (res.ok) {
    entry.event_id = answer.event_id;
    entry.state = answer.state || 'queued';
    sent.unshift(entry);
    sent = sent.slice(0, 200);
    persist();
    renderReceipts();
    follow(entry);
  } else {
    entry.state = 'failed';
    entry.reason = answer.error || ('HTTP ' + res.status);
    sent.unshift(entry);
    persist();
    renderReceipts();
    toast(item.label + ' refused: ' + entry.reason, null);
  }
  return 'done';
}

const FINAL = ['booked', 'rejected', 'shed'];

// Long-polls one receipt until it is final.
async function follow(entry) {
  while (entry.event_id && !FINAL.includes(entry.state)) {
    let r;
    try {
      const res = await fetch('/v1/events/' + entry.event_id + '?known=' + encodeURIComponent(entry.state) + '&wait_ms=25000',
        { credentials: 'same-origin' });
      if (res.status === 404) return;
      if (!res.ok) throw new Error('HTTP ' + res.status);
      r = await res.json();
      setNet(true);
    } catch (_) {
      setNet(false);
      await new Promise((ok) => setTimeout(ok, 3000));
      continue;
    }
    if (r.state !== entry.state || r.document !== entry.document) {
      entry.state = r.state;
      entry.document = r.document;
      entry.reason = r.reason;
      persist();
      renderReceipts();
    }
  }
}

function setNet(ok) {
  $('net').textContent = ok ? 'online' : 'offline';
  $('net').className = 'pill ' + (ok ? 'ok' : 'bad');
}

// Each medium's state on the agent (GET /v1/media): queued with the bytes
// the collector has, stored at the collector, attached at the ERP, refused.
let mediaStates = {};
function mediaText(m) {
  if (!m) return 'image kept on the agent';
  const kb = (n) => Math.round(n / 1024) + ' KB';
  switch (m.state) {
    case 'queued': return m.have > 0
      ? 'image going to the collector: ' + kb(m.have) + ' of ' + kb(m.bytes)
      : 'image queued on the agent (' + kb(m.bytes) + '), sent after its event';
    case 'stored': return 'image stored at the collector';
    case 'attached': return 'image attached at the ERP' + (m.document ? ' to ' + m.document : '');
    case 'refused': return 'image refused by the collector: ' + (m.reason || '');
    default: return 'image: ' + m.state;
  }
}
async function refreshMedia() {
  try {
    const res = await fetch('/v1/media', { credentials: 'same-origin' });
    if (!res.ok) return;
    const next = {};
    for (const m of (await res.json()).media || []) next[m.ref] = m;
    const changed = JSON.stringify(next) !== JSON.stringify(mediaStates);
    mediaStates = next;
    if (changed) renderReceipts();
  } catch (e) { /* offline agent: keep what we showed */ }
}

function renderReceipts() {
  const ul = $('receipt-list');
  if (!ul) return;
  ul.textContent = '';
  const rows = queue.map((q) => ({ label: q.label, state: 'pending', key: q.key, media: q.media }))
    .concat(sent);
  $('receipt-empty').hidden = rows.length > 0;
  for (const r of rows) {
    const li = document.createElement('li');
    li.dataset.key = r.key;
    li.dataset.state = r.state;
    const title = document.createElement('div');
    title.textContent = r.label;
    const state = document.createElement('span');
    state.className = 'state ' + r.state;
    state.textContent = r.state === 'pending' ? 'waiting to send' : r.state;
    title.appendChild(state);
    li.appendChild(title);
    if (r.document) { const d = document.createElement('div'); d.textContent = 'ERP document ' + r.document; li.appendChild(d); }
    if (r.reason) { const d = document.createElement('div'); d.textContent = r.reason; li.appendChild(d); }
    for (const ref of r.media || []) {
      const d = document.createElement('div');
      d.className = 'media';
      d.textContent = r.state === 'pending' ? 'image on this handheld, going to the agent' : mediaText(mediaStates[ref]);
      li.appendChild(d);
    }
    if (r.state === 'pending') {
      const b = document.createElement('button');
      b.className = 'ghost';
      b.textContent = 'Undo';
      b.addEventListener('click', () => undo(r.key));
      li.appendChild(b);
    }
    ul.appendChild(li);
  }
}

// ---- scans ---------------------------------------------------------------

// A GTIN from a scan: plain digits (8, 12, 13 or 14) or a GS1 element string
// with AI 01, as 14 digits; null when it is not one.
function gtinOf(text) {
  let t = String(text || '').trim().replace(/^\]C1|^\]d2|^\]Q3/, '').replace(/[()]/g, '');
  if (/^01\d{14}/.test(t) && t.length > 14) t = t.slice(2, 16);
  if (!/^\d{8}$|^\d{12,14}$/.test(t)) return null;
  return t.padStart(14, '0');
}

function ssccOf(text) {
  let t = String(text || '').trim().replace(/[()]/g, '');
  if (/^00\d{18}$/.test(t)) t = t.slice(2);
  return /^\d{18}$/.test(t) ? t : null;
}

// ---- picking -------------------------------------------------------------

let tasks = [];
let pick = null; // {task, line, picked: [qty per line]}

async function refreshTasks() {
  try {
    const res = await fetch('/v1/tasks', { credentials: 'same-origin' });
    if (!res.ok) throw new Error('HTTP ' + res.status);
    tasks = (await res.json()).tasks || [];
    setNet(true);
  } catch (_) {
    setNet(false);
  }
  const ul = $('task-list');
  ul.textContent = '';
  $('task-empty').hidden = tasks.length > 0;
  tasks.forEach((t, i) => {
    const li = document.createElement('li');
    li.className = 'tap';
    li.dataset.order = t.order;
    li.textContent = t.order + ' - ' + t.lines.length + (t.lines.length === 1 ? ' line' : ' lines');
    li.addEventListener('click', () => startPick(tasks[i]));
    ul.appendChild(li);
  });
}

function startPick(task) {
  pick = { task, line: 0, picked: task.lines.map(() => 0), wrong: null };
  showLine();
  show('pick');
}

function showLine() {
  const line = pick.task.lines[pick.line];
  $('pick-order').textContent = 'Order ' + pick.task.order;
  $('pick-progress').textContent = 'Line ' + (pick.line + 1) + ' of ' + pick.task.lines.length;
  $('pick-item').textContent = line.item;
  $('pick-want').textContent = line.quantity + (line.unit_weight_kg ? ' (' + line.unit_weight_kg + ' kg each)' : '');
  $('pick-qty').value = '0';
  $('pick-scan').value = '';
  $('pick-wrong').hidden = true;
  pick.wrong = null;
  msg('');
  $('pick-scan').focus();
}

function msg(text, kind) {
  $('pick-msg').textContent = text;
  $('pick-msg').className = 'msg ' + (kind || '');
}

function onScan(raw) {
  const gtin = gtinOf(raw);
  const line = pick.task.lines[pick.line];
  $('pick-scan').value = '';
  if (!gtin) { msg('Not an item barcode: ' + raw, 'bad'); return; }
  if (gtin !== line.item) {
    pick.wrong = gtin;
    $('pick-wrong').hidden = false;
    msg('Wrong item ' + gtin, 'bad');
    return;
  }
  pick.wrong = null;
  $('pick-wrong').hidden = true;
  const q = Number($('pick-qty').value || 0) + 1;
  $('pick-qty').value = String(q);
  msg(q >= line.quantity ? 'All ' + q + ' scanned' : q + ' of ' + line.quantity, 'ok');
}

function nextLine() {
  if (pick.line + 1 < pick.task.lines.length) {
    pick.line += 1;
    showLine();
  } else {
    toast('Pick list ' + pick.task.order + ' done', null);
    pick = null;
    show('tasks', false);
  }
}

function confirmPick(short) {
  const line = pick.task.lines[pick.line];
  const qty = Math.max(0, Math.floor(Number($('pick-qty').value || 0)));
  const order = pick.task.order;
  const at = { line: pick.line };
  const restore = () => { if (pick && pick.task.order === order) { pick.line = at.line; showLine(); $('pick-qty').value = String(qty); } };
  if (qty > 0) {
    const it = act('Picked ' + qty + ' x ' + line.item, { detail: { picked: { item: line.item, quantity: qty } }, refs: { order } });
    it.onUndo = restore;
  }
  if (short || qty < line.quantity) {
    const it = act('Short pick ' + line.item, { detail: { exception: { kind: 'short_pick',
      note: 'picked ' + qty + ' of ' + line.quantity + ' x ' + line.item + ' by ' + operator } }, refs: { order } });
    it.onUndo = restore;
  }
  nextLine();
}

function reportWrong() {
  const line = pick.task.lines[pick.line];
  act('Wrong item ' + pick.wrong, { detail: { exception: { kind: 'wrong_item',
    note: 'scanned ' + pick.wrong + ' for ' + line.item + ' by ' + operator } }, refs: { order: pick.task.order } });
  $('pick-wrong').hidden = true;
  msg('Wrong item reported; scan the right one', '');
  $('pick-scan').focus();
}

// Camera scanning where the browser has BarcodeDetector.
let stream = null;
async function cameraScan() {
  if (stream) { stopCamera(); return; }
  try {
    const detector = new window.BarcodeDetector({ formats: ['ean_13', 'ean_8', 'upc_a', 'code_128', 'data_matrix', 'qr_code'] });
    stream = await navigator.mediaDevices.getUserMedia({ video: { facingMode: 'environment' } });
    const video = $('pick-video');
    video.srcObject = stream;
    video.hidden = false;
    await video.play();
    const tick = async () => {
      if (!stream) return;
      try {
        const codes = await detector.detect(video);
        if (codes.length) { onScan(codes[0].rawValue); stopCamera(); return; }
      } catch (_) { /* next frame */ }
      requestAnimationFrame(tick);
    };
    tick();
  } catch (e) {
    msg('Camera not available: ' + e.message, 'bad');
    stopCamera();
  }
}

function stopCamera() {
  if (stream) stream.getTracks().forEach((t) => t.stop());
  stream = null;
  $('pick-video').hidden = true;
}

// ---- pack, load, depart, arrive ------------------------------------------

function need(id, check, what) {
  const el = $(id);
  const v = check ? check(el.value) : el.value.trim();
  if (!v) { el.focus(); el.setAttribute('aria-invalid', 'true'); toast(what, null); return null; }
  el.removeAttribute('aria-invalid');
  return v;
}

function clear(...ids) { ids.forEach((id) => { $(id).value = ''; }); }

function packed() {
  const order = need('pack-order', null, 'Enter the order');
  const sscc = order && need('pack-sscc', ssccOf, 'Scan the 18-digit SSCC label');
  if (!sscc) return;
  const qty = Math.max(1, Math.floor(Number($('pack-qty').value || 1)));
  act('Packed ' + sscc, { detail: { packed: { quantity: qty } }, refs: { order, sscc } });
  clear('pack-sscc');
  $('pack-sscc').focus();
}

function loaded() {
  const vehicle = need('load-vehicle', null, 'Enter the vehicle');
  const sscc = vehicle && need('load-sscc', ssccOf, 'Scan the 18-digit SSCC label');
  if (!sscc) return;
  const refs = { sscc };
  const order = $('load-order').value.trim();
  if (order) refs.order = order;
  act('Loaded ' + sscc + ' on ' + vehicle, { detail: { loaded: { vehicle } }, refs });
  clear('load-sscc');
  $('load-sscc').focus();
}

function moved(kind) {
  const vehicle = need(kind + '-vehicle', null, 'Enter the vehicle');
  if (!vehicle) return;
  const refs = {};
  if (kind === 'depart' && $('depart-shipment').value.trim()) refs.shipment = $('depart-shipment').value.trim();
  if (kind === 'arrive') {
    const stop = need('arrive-stop', null, 'Enter the stop');
    if (!stop) return;
    refs.stop = stop;
  }
  const detail = kind === 'depart' ? { departed: { vehicle } } : { arrived: { vehicle } };
  act((kind === 'depart' ? 'Departed ' : 'Arrived ') + vehicle, { detail, refs });
  show('home', false);
}

// ---- proof of delivery ---------------------------------------------------

let inked = false;
function sizeCanvas() {
  const c = $('pod-sig');
  const w = c.clientWidth || 320;
  if (c.width !== w) { c.width = w; c.height = 160; inked = false; }
}

function setupSignature() {
  const c = $('pod-sig');
  const g = c.getContext('2d');
  let down = false;
  const at = (e) => { const r = c.getBoundingClientRect(); return [e.clientX - r.left, e.clientY - r.top]; };
  c.addEventListener('pointerdown', (e) => {
    down = true; c.setPointerCapture(e.pointerId);
    g.lineWidth = 3; g.lineCap = 'round'; g.strokeStyle = '#000';
    g.beginPath(); g.moveTo(...at(e));
  });
  c.addEventListener('pointermove', (e) => { if (!down) return; g.lineTo(...at(e)); g.stroke(); inked = true; });
  const up = () => { down = false; };
  c.addEventListener('pointerup', up);
  c.addEventListener('pointercancel', up);
  $('pod-sig-clear').addEventListener('click', () => { g.clearRect(0, 0, c.width, c.height); inked = false; });
}

async function sha256(bytes) {
  const digest = await crypto.subtle.digest('SHA-256', bytes);
  return Array.from(new Uint8Array(digest), (x) => x.toString(16).padStart(2, '0')).join('');
}

// Keeps an image on the handheld under the SHA-256 of its bytes until it
// is on the agent; returns the reference the event carries.
async function keepMedia(dataUrl) {
  const media = dataUrlBytes(dataUrl);
  const ref = 'sha256:' + (await sha256(media ? media.bytes : new Uint8Array()));
  if (!save(LS.media + ref, dataUrl)) toast('Storage full: media not kept', null);
  return ref;
}

// A photo from <input capture>, scaled to 800 px as JPEG.
function photoDataUrl(input) {
  const file = input.files && input.files[0];
  if (!file) return Promise.resolve(null);
  return new Promise((ok) => {
    const img = new Image();
    const url = URL.createObjectURL(file);
    img.onload = () => {
      const scale = Math.min(1, 800 / Math.max(img.width, img.height));
      const c = document.createElement('canvas');
      c.width = Math.round(img.width * scale); c.height = Math.round(img.height * scale);
      c.getContext('2d').drawImage(img, 0, 0, c.width, c.height);
      URL.revokeObjectURL(url);
      ok(c.toDataURL('image/jpeg', 0.7));
    };
    img.onerror = () => { URL.revokeObjectURL(url); ok(null); };
    img.src = url;
  });
}

async function delivered() {
  const order = need('pod-order', null, 'Enter the order');
  const stop = order && need('pod-stop', null, 'Enter the stop');
  const name = stop && need('pod-name', null, 'Enter who received the goods');
  if (!name) return;
  if (!inked) { toast('Ask for a signature', null); return; }
  const pieces = Math.max(0, Math.floor(Number($('pod-pieces').value || 0)));
  const media = [];
  const pod = { received_by: name, pieces };
  pod.signature_ref = await keepMedia($('pod-sig').toDataURL('image/png'));
  media.push(pod.signature_ref);
  const photo = await photoDataUrl($('pod-photo'));
  if (photo) { pod.photo_ref = await keepMedia(photo); media.push(pod.photo_ref); }
  act('Delivered ' + order + ' to ' + name, { detail: { delivered: pod }, refs: { order, stop } }, media);
  clear('pod-name', 'pod-photo');
  $('pod-photo-preview').hidden = true;
  $('pod-sig-clear').click();
  show('receipts');
}

let excKind = null;
async function reportException() {
  if (!excKind) { toast('Choose a reason', null); return; }
  const order = $('pod-order').value.trim();
  const stop = $('pod-stop').value.trim();
  const refs = {};
  if (order) refs.order = order;
  if (stop) refs.stop = stop;
  let note = $('exc-note').value.trim();
  const media = [];
  const photo = await photoDataUrl($('exc-photo'));
  if (photo) { const ref = await keepMedia(photo); media.push(ref); note = (note ? note + ' ' : '') + '[photo ' + ref + ']'; }
  act('Exception ' + excKind.replace('_', ' ') + (order ? ' ' + order : ''),
    { detail: { exception: { kind: excKind, note: (note + ' (by ' + operator + ')').trim() } }, refs }, media);
  clear('exc-note', 'exc-photo');
  excKind = null;
  document.querySelectorAll('#exc-kinds button').forEach((b) => b.setAttribute('aria-pressed', 'false'));
  show('receipts');
}

// ---- wiring --------------------------------------------------------------

function onEnter(id, fn) {
  $(id).addEventListener('keydown', (e) => { if (e.key === 'Enter') { e.preventDefault(); fn($(id).value); } });
}

document.addEventListener('DOMContentLoaded', () => {
  $('back').addEventListener('click', back);
  $('signin-go').addEventListener('click', signIn);
  onEnter('signin-id', signIn);
  $('signout').addEventListener('click', signOut);
  document.querySelectorAll('[data-go]').forEach((b) => b.addEventListener('click', () => show(b.dataset.go)));
  $('task-refresh').addEventListener('click', refreshTasks);
  onEnter('pick-scan', onScan);
  $('pick-plus').addEventListener('click', () => { $('pick-qty').value = String(Number($('pick-qty').value || 0) + 1); });
  $('pick-minus').addEventListener('click', () => { $('pick-qty').value = String(Math.max(0, Number($('pick-qty').value || 0) - 1)); });
  $('pick-ok').addEventListener('click', () => confirmPick(false));
  $('pick-short').addEventListener('click', () => confirmPick(true));
  $('pick-wrong').addEventListener('click', reportWrong);
  if ('BarcodeDetector' in window && navigator.mediaDevices) {
    $('pick-camera').hidden = false;
    $('pick-camera').addEventListener('click', cameraScan);
  }
  $('pack-ok').addEventListener('click', packed);
  onEnter('pack-sscc', packed);
  $('load-ok').addEventListener('click', loaded);
  onEnter('load-sscc', loaded);
  $('depart-ok').addEventListener('click', () => moved('depart'));
  $('arrive-ok').addEventListener('click', () => moved('arrive'));
  setupSignature();
  $('pod-photo').addEventListener('change', async () => {
    const url = await photoDataUrl($('pod-photo'));
    $('pod-photo-preview').hidden = !url;
    if (url) $('pod-photo-preview').src = url;
  });
  $('pod-ok').addEventListener('click', delivered);
  $('pod-exception').addEventListener('click', () => show('exception'));
  document.querySelectorAll('#exc-kinds button').forEach((b) => b.addEventListener('click', () => {
    excKind = b.dataset.kind;
    document.querySelectorAll('#exc-kinds button').forEach((x) => x.setAttribute('aria-pressed', String(x === b)));
  }));
  $('exc-ok').addEventListener('click', reportException);
  $('toast-undo').addEventListener('click', () => undo($('toast-undo').dataset.key));

  if (operator) { $('who').textContent = operator; show('home', false); } else { show('signin', false); }
  // Events left from before a reload are sent now, with their keys.
  queue.forEach((q) => { q.sending = false; });
  pump();
  sent.filter((s) => !FINAL.includes(s.state)).forEach(follow);
  renderReceipts();
});
