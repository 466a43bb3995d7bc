// The Edgefleet dashboard: plain DOM, no framework, no fetch beyond this server's API.
// State comes from the API once, then from the server-sent event stream (/api/v1/stream),
// read with fetch so the bearer token travels in a header and never in a URL or cookie.
"use strict";

const TOKEN_KEY = "edgefleet.token";
const ROLES = { viewer: 0, operator: 1, admin: 2 };
const COLORS = ["#2563eb", "#dc2626", "#059669", "#d97706", "#7c3aed"];

const state = {
  me: null,
  rollouts: new Map(),
  // The page of the device list in view, and what the server said about the whole list.
  devices: new Map(),
  deviceGroups: [],
  deviceTotal: 0,
  deviceNext: null,
  // `after` of each page before the one in view, for going back.
  devicePages: [],
  deviceAfter: null,
  selected: null,
  pending: null, // { action, id } awaiting confirmation
  streamAbort: null,
  streaming: "",
  timelineSeen: new Set(),
};

const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) node.append(child);
  }
  return node;
}

function svg(tag, attrs = {}) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  return node;
}

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function api(path, options = {}) {
  const token = sessionStorage.getItem(TOKEN_KEY);
  const response = await fetch(path, {
    ...options,
    headers: { Authorization: `Bearer ${token}`, ...(options.headers || {}) },
  });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    if (response.status === 401) signOut("Your token was refused: " + (body.error || "sign in again"));
    throw new ApiError(response.status, body.error || `HTTP ${response.status}`);
  }
  return body;
}

function ago(unix) {
  if (!unix) return "never";
  const seconds = Math.max(0, Math.round(Date.now() / 1000 - unix));
  if (seconds < 60) return `${seconds} s ago`;
  if (seconds < 3600) return `${Math.round(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.round(seconds / 3600)} h ago`;
  return new Date(unix * 1000).toISOString().slice(0, 10);
}

function time(unix) {
  return new Date(unix * 1000).toLocaleTimeString();
}

// ---- sign-in ----

async function signIn(token) {
  sessionStorage.setItem(TOKEN_KEY, token);
  const me = await api("/api/v1/whoami");
  if (me.kind !== "operator") {
    sessionStorage.removeItem(TOKEN_KEY);
    throw new Error("that is a device credential; sign in with an operator token");
  }
  state.me = me;
  $("who").textContent = `${me.name} (${me.role})`;
  $("login").hidden = true;
  $("app").hidden = false;
  $("logout").hidden = false;
  await loadAll();
  loadAlerts().catch(() => {});
  openStream();
}

function signOut(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  if (state.streamAbort) state.streamAbort.abort();
  state.me = null;
  $("app").hidden = true;
  $("logout").hidden = true;
  $("who").textContent = "";
  $("login").hidden = false;
  $("login-error").textContent = message || "";
  setLive(false);
}

function canOperate() {
  return state.me && ROLES[state.me.role] >= ROLES.operator;
}

// ---- data ----

async function loadAll() {
  const [rollouts] = await Promise.all([api("/api/v1/rollouts"), loadDevices()]);
  state.rollouts = new Map(rollouts.rollouts.map((r) => [r.id, r]));
  if (!state.selected && rollouts.rollouts.length) state.selected = rollouts.rollouts[0].id;
  renderRollouts();
  if (state.selected) loadTelemetry();
}

// The stream tells of the devices in view only (the server follows at most 500 per stream): a
// new page of devices opens a new stream.
function streamedDevices() {
  return [...state.devices.keys()].sort().join(",");
}

async function openStream() {
  if (state.streamAbort) state.streamAbort.abort();
  const abort = new AbortController();
  state.streamAbort = abort;
  state.streaming = streamedDevices();
  while (!abort.signal.aborted) {
    try {
      const query = new URLSearchParams({ devices: state.streaming });
      const response = await fetch(`/api/v1/stream?${query}`, {
        headers: { Authorization: `Bearer ${sessionStorage.getItem(TOKEN_KEY)}` },
        signal: abort.signal,
      });
      if (response.status === 401) return signOut("Your token was revoked.");
      if (!response.ok || !response.body) throw new Error(`stream: HTTP ${response.status}`);
      setLive(true);
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          dispatch(buffer.slice(0, end));
          buffer = buffer.slice(end + 2);
        }
      }
    } catch (e) {
      if (abort.signal.aborted) return;
    }
    setLive(false);
    await new Promise((resolve) => setTimeout(resolve, 2000));
  }
}

function dispatch(frame) {
  let type = "message";
  const data = [];
  for (const line of frame.split("\n")) {
    if (line.startsWith("event:")) type = line.slice(6).trim();
    else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
  }
  if (!data.length) return;
  const payload = JSON.parse(data.join("\n"));
  if (type === "rollout") {
    state.rollouts.set(payload.id, payload);
    if (!state.selected) state.selected = payload.id;
    renderRollouts();
  } else if (type === "device") {
    // Only the page in view is kept; a device elsewhere shows when its page is loaded.
    if (state.devices.has(payload.id)) {
      state.devices.set(payload.id, payload);
      renderDevicesSoon();
    }
  } else if (type === "event") {
    addTimeline(payload);
    if (payload.message.kind === "guard_breached") loadAlerts().catch(() => {});
  }
}

function setLive(on) {
  $("live").textContent = on ? "live" : "offline";
  $("live").classList.toggle("on", on);
}

// ---- rollouts ----

function sortedRollouts() {
  return [...state.rollouts.values()].sort((a, b) => b.created_at - a.created_at);
}

function renderRollouts() {
  const list = $("rollout-list");
  const rollouts = sortedRollouts();
  $("rollouts-empty").hidden = rollouts.length > 0;
  list.replaceChildren(
    ...rollouts.map((r) => {
      const done = r.waves.reduce((n, w) => n + w.healthy, 0);
      const total = r.waves.reduce((n, w) => n + w.devices, 0);
      return el(
        "li",
        {
          class: r.id === state.selected ? "selected" : "",
          "data-rollout-id": r.id,
          tabindex: "0",
          onclick: () => select(r.id),
          onkeydown: (e) => e.key === "Enter" && select(r.id),
        },
        el("strong", {}, `${r.model} ${r.version}`),
        el("span", { class: `badge ${r.state.state}` }, r.state.state.replace("_", " ")),
        el("span", { class: "muted" }, `${done}/${total} healthy · ${ago(r.created_at)}`),
      );
    }),
  );
  renderRollout();
}

function select(id) {
  state.selected = id;
  state.pending = null;
  renderRollouts();
  loadTelemetry();
}

const ACTIONS = {
  pause: { label: "Pause", when: ["running", "baking", "awaiting_approval"] },
  resume: { label: "Resume", when: ["paused"] },
  approve: { label: "Approve next wave", when: ["awaiting_approval"] },
  "retry-failed": { label: "Retry failed", when: ["halted", "running", "paused"] },
  abort: { label: "Abort", when: ["running", "baking", "awaiting_approval", "paused", "halted"], confirm: "Abort this rollout? Devices keep what they run." },
};

function renderRollout() {
  const r = state.rollouts.get(state.selected);
  $("rollout").hidden = !r;
  if (!r) return;
  $("rollout-title").textContent = `${r.model} ${r.version}`;
  const badge = $("rollout-state");
  badge.textContent = r.state.state.replace("_", " ");
  badge.className = `badge ${r.state.state}`;
  badge.dataset.state = r.state.state;
  $("rollout-reason").textContent = r.state.reason || "";

  const actions = $("actions");
  actions.replaceChildren();
  if (canOperate()) {
    for (const [action, spec] of Object.entries(ACTIONS)) {
      if (!spec.when.includes(r.state.state)) continue;
      actions.append(
        el("button", {
          "data-action": action,
          class: action === "abort" ? "danger" : "",
          onclick: () => (spec.confirm ? ask(action, r.id, spec.confirm) : act(action, r.id)),
        }, spec.label),
      );
    }
  } else {
    actions.append(el("span", { class: "muted" }, "Viewer role: read only."));
  }
  const pending = state.pending && state.pending.id === r.id;
  $("confirm").hidden = !pending;

  $("waves").replaceChildren(
    ...r.waves.map((w) => {
      const bar = el("div", { class: "bar-track" });
      for (const [part, count] of [["healthy", w.healthy], ["failed", w.failed], ["rolled_back", w.rolled_back], ["in_progress", w.in_progress]]) {
        if (!count) continue;
        const seg = el("span", { class: `seg ${part}`, title: `${count} ${part.replace("_", " ")}` });
        seg.style.width = `${(100 * count) / w.devices}%`;
        bar.append(seg);
      }
      const current = r.state.wave === w.wave;
      return el(
        "li",
        { class: current ? "wave current" : "wave", "data-wave": w.wave },
        el("span", { class: "wave-name" }, `Wave ${w.wave} · ${w.percent}%`),
        bar,
        el("span", { class: "wave-count" }, `${w.healthy}/${w.devices} healthy` + (w.shadowing ? `, ${w.shadowing} shadowing` : "") + (w.failed ? `, ${w.failed} failed` : "") + (w.rolled_back ? `, ${w.rolled_back} rolled back` : "")),
      );
    }),
  );

  // The shadow gate's comparison for the wave it judged: challenger against champion on the
  // same requests.
  // A split's: each arm on its own share of requests, with the significance readout.
  const shadow = r.shadow_check;
  const share = `${Math.round((r.shadow?.share ?? 0) * 100)}%`;
  const named = { shadow: "Shadow", split: "Split" }[r.strategy];
  $("shadow-check").hidden = !named;
  // One line per wave: the decisions of earlier waves, then the current wave's (maybe waiting).
  const line = (c) => `${named} (wave ${c.wave + 1}): ${c.decision} — ${c.summary}`;
  const earlier = (r.verdicts || []).filter((v) => !shadow || v.wave !== shadow.wave).map(line);
  $("shadow-check").textContent = !named
    ? ""
    : shadow
      ? [...earlier, line(shadow)].join("\n")
      : r.strategy === "shadow"
        ? `Shadow: each wave runs ${r.version} beside the serving version on ${share} of requests before it answers; no verdict yet.`
        : `Split: ${r.version} answers ${share} of each device's requests, the serving version the rest; no verdict yet.`;

  const check = r.model_check;
  $("model-check").textContent = r.gates.model
    ? check
      ? `Model gates (wave ${check.wave + 1}): ${check.passed ? "pass" : "not yet"} — ${check.summary}`
      : "Model gates: waiting for telemetry."
    : "No model gates on this rollout; figures below are for watching.";

  $("history").replaceChildren(
    ...r.history.slice(-30).reverse().map((h) => el("li", {}, el("time", {}, time(h.at)), " ", h.text)),
  );
}

function ask(action, id, text) {
  state.pending = { action, id };
  $("confirm-text").textContent = text;
  renderRollout();
}

async function act(action, id) {
  state.pending = null;
  $("action-error").textContent = "";
  try {
    const updated = await api(`/api/v1/rollouts/${encodeURIComponent(id)}/${action}`, { method: "POST" });
    state.rollouts.set(updated.id, updated);
  } catch (e) {
    $("action-error").textContent = e.message;
  }
  renderRollouts();
}

// ---- live model figures ----

let telemetryTimer = null;

async function loadTelemetry() {
  clearTimeout(telemetryTimer);
  const id = state.selected;
  if (!id || $("app").hidden) return;
  try {
    const t = await api(`/api/v1/rollouts/${encodeURIComponent(id)}/telemetry`);
    if (id === state.selected) renderTelemetry(t);
  } catch (e) {
    $("compare").textContent = `Telemetry unavailable: ${e.message}`;
  }
  telemetryTimer = setTimeout(loadTelemetry, 5000);
}

// Drift is shown only once enough live values are pooled; until then, how far along that is.
function driftWaiting(v) {
  const samples = Object.values(v.drift_samples || {});
  if (!samples.length) return "–";
  const least = samples.reduce((a, b) => (a.pooled / a.needed <= b.pooled / b.needed ? a : b));
  return `waiting: ${least.pooled} of ${least.needed} values`;
}

function renderTelemetry(t) {
  const row = (name, c, p, fmt) => el("tr", {}, el("th", {}, name), el("td", {}, fmt(c)), el("td", {}, fmt(p)));
  const maxDrift = (v) => {
    const values = Object.values(v.drift_psi);
    return values.length ? Math.max(...values).toFixed(3) : driftWaiting(v);
  };
  // Ground truth joined on the devices, with how many labels it rests on.
  const accuracy = (v) =>
    v.quality && v.quality.accuracy != null
      ? `${(v.quality.accuracy * 100).toFixed(1)}% (${v.quality.labelled})`
      : "–";
  const c = t.candidate;
  const p = t.previous;
  $("compare").replaceChildren(
    el(
      "table",
      { class: "figures" },
      el("thead", {}, el("tr", {}, el("th"), el("th", {}, `new ${c.version}`), el("th", {}, "previous"))),
      el(
        "tbody",
        {},
        row("devices", c, p, (v) => v.devices),
        row("requests", c, p, (v) => v.requests),
        row("error rate", c, p, (v) => `${(v.error_rate * 100).toFixed(2)}%`),
        row("p50 / p99", c, p, (v) => `${v.latency_ms.p50_ms.toFixed(2)} / ${v.latency_ms.p99_ms.toFixed(2)} ms`),
        row("max drift PSI", c, p, maxDrift),
        row("accuracy (labels)", c, p, accuracy),
      ),
    ),
  );
  const versions = [...new Set(t.series.map((s) => s.version))].sort();
  chart($("chart-latency"), t.series, versions, (s) => s.p99_ms);
  chart($("chart-errors"), t.series, versions, (s) => s.error_rate * 100);
  chart($("chart-drift"), t.series, versions, (s) => s.max_drift_psi);
  $("legend").replaceChildren(
    ...versions.map((v, i) => {
      const swatch = el("span", { class: "swatch" });
      swatch.style.background = COLORS[i % COLORS.length];
      return el("span", {}, swatch, ` ${v}${v === c.version ? " (new)" : ""}`);
    }),
  );
}

function chart(node, series, versions, value) {
  const W = 320, H = 140, L = 34, B = 18, T = 6;
  node.replaceChildren();
  const points = series.filter((s) => value(s) !== null && value(s) !== undefined);
  if (!points.length) {
    const text = svg("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "axis" });
    text.textContent = "no data yet";
    node.append(text);
    return;
  }
  const t0 = Math.min(...points.map((s) => s.at));
  const t1 = Math.max(...points.map((s) => s.at), t0 + 1);
  const top = Math.max(...points.map(value)) * 1.1 || 1;
  const x = (at) => L + ((at - t0) / (t1 - t0)) * (W - L - 4);
  const y = (v) => H - B - (v / top) * (H - B - T);
  node.append(svg("line", { x1: L, y1: H - B, x2: W, y2: H - B, class: "grid" }));
  for (const v of [0, top / 2, top]) {
    const label = svg("text", { x: L - 4, y: y(v) + 4, "text-anchor": "end", class: "axis" });
    label.textContent = v >= 10 ? v.toFixed(0) : v.toFixed(2);
    node.append(label, svg("line", { x1: L, y1: y(v), x2: W, y2: y(v), class: "grid" }));
  }
  for (const [edge, at] of [["start", t0], ["end", t1]]) {
    const label = svg("text", { x: x(at), y: H - 4, "text-anchor": edge, class: "axis" });
    label.textContent = time(at);
    node.append(label);
  }
  versions.forEach((version, i) => {
    const mine = points.filter((s) => s.version === version).sort((a, b) => a.at - b.at);
    if (!mine.length) return;
    const color = COLORS[i % COLORS.length];
    const d = mine.map((s, k) => `${k ? "L" : "M"}${x(s.at).toFixed(1)},${y(value(s)).toFixed(1)}`).join(" ");
    node.append(svg("path", { d, fill: "none", stroke: color, "stroke-width": 2, "data-version": version }));
    for (const s of mine) {
      node.append(svg("circle", { cx: x(s.at).toFixed(1), cy: y(value(s)).toFixed(1), r: 2.5, fill: color }));
    }
  });
}

// ---- devices ----

let devicesPending = false;
function renderDevicesSoon() {
  if (devicesPending) return;
  devicesPending = true;
  requestAnimationFrame(() => {
    devicesPending = false;
    renderDevices();
  });
}

const DEVICE_PAGE = 100;

// One page of the device list, filtered and paged by the server: a fleet of 100,000 is never
// loaded into the browser.
async function loadDevices() {
  const query = new URLSearchParams({ limit: String(DEVICE_PAGE) });
  const text = $("filter-text").value.trim();
  if (text) query.set("q", text);
  if ($("filter-group").value) query.set("group", $("filter-group").value);
  const status = $("filter-status").value;
  if (status) query.set("online", String(status === "online"));
  if (state.deviceAfter) query.set("after", state.deviceAfter);
  const page = await api(`/api/v1/devices?${query}`);
  state.devices = new Map(page.devices.map((d) => [d.id, d]));
  state.deviceGroups = page.groups;
  state.deviceTotal = page.total;
  state.deviceNext = page.next_after;
  renderDevices();
  if (state.streamAbort && state.streaming !== streamedDevices()) openStream();
}

function loadDevicesReporting() {
  loadDevices().catch((e) => ($("device-count").textContent = e.message));
}

// A filter changed: back to the first page, once typing pauses.
let filterTimer = null;
function filterDevices() {
  clearTimeout(filterTimer);
  filterTimer = setTimeout(() => {
    state.devicePages = [];
    state.deviceAfter = null;
    loadDevicesReporting();
  }, 250);
}

function turnDevicePage(forward) {
  if (forward) {
    if (!state.deviceNext) return;
    state.devicePages.push(state.deviceAfter);
    state.deviceAfter = state.deviceNext;
  } else {
    if (!state.devicePages.length) return;
    state.deviceAfter = state.devicePages.pop();
  }
  loadDevicesReporting();
}

function renderDevices() {
  const group = $("filter-group").value;
  const groups = state.deviceGroups;
  const select = $("filter-group");
  if (select.options.length - 1 !== groups.length || groups.some((g, i) => select.options[i + 1].value !== g)) {
    select.replaceChildren(el("option", { value: "" }, "all groups"), ...groups.map((g) => el("option", { value: g }, g)));
    select.value = groups.includes(group) ? group : "";
  }
  const shown = [...state.devices.values()];
  const first = state.devicePages.length * DEVICE_PAGE;
  $("device-count").textContent = shown.length ? `${first + 1}–${first + shown.length} of ${state.deviceTotal}` : `0 of ${state.deviceTotal}`;
  $("devices-prev").disabled = !state.devicePages.length;
  $("devices-next").disabled = !state.deviceNext;
  $("devices").tBodies[0].replaceChildren(
    ...shown.map((d) => {
      const models = Object.entries(d.running);
      const health = models.map(([, m]) => m.state || "–");
      const bad = health.some((h) => ["rejected", "rolled_back"].includes(h));
      return el(
        "tr",
        { "data-device": d.id, tabindex: "0", onclick: () => showDevice(d.id).catch((e) => ($("device-title").textContent = e.message)) },
        el("td", { "data-label": "Device" }, d.id),
        el("td", { "data-label": "Group" }, d.group),
        el("td", { "data-label": "Status" }, el("span", { class: d.online ? "dot on" : "dot" }), d.online ? "online" : "offline"),
        el("td", { "data-label": "Models" }, models.map(([name, m]) => `${name} ${m.version || "–"}`).join(", ") || "–"),
        el("td", { "data-label": "Health", class: bad ? "error" : "" }, health.join(", ") || "–"),
        el("td", { "data-label": "Last seen" }, ago(d.last_seen)),
      );
    }),
  );
}

// ---- timeline ----

function addTimeline(stored) {
  // A stream opened again starts with the latest events: each is shown once.
  const key = `${stored.device}/${stored.seq}`;
  if (state.timelineSeen.has(key)) return;
  state.timelineSeen.add(key);
  if (state.timelineSeen.size > 2000) state.timelineSeen = new Set([...state.timelineSeen].slice(-1000));
  const m = stored.message;
  const text = `${stored.device}: ${m.kind.replace("_", " ")} ${m.model}${m.target ? " " + m.target.split("/").slice(-2, -1)[0] : ""}${m.detail ? " — " + m.detail : ""}`;
  const item = el("li", { class: `kind-${m.kind}` }, el("time", {}, time(stored.at)), " ", text);
  const list = $("timeline");
  list.prepend(item);
  while (list.children.length > 300) list.lastChild.remove();
}

// ---- audit ----

let auditTimer = null;

function compact(value) {
  if (value === null || value === undefined) return "–";
  return Object.entries(value).map(([k, v]) => `${k} ${typeof v === "object" ? JSON.stringify(v) : v}`).join(", ");
}

async function loadAudit() {
  if (!state.me || ROLES[state.me.role] < ROLES.admin) {
    $("audit-note").textContent = "The audit log needs an admin token.";
    return;
  }
  const query = new URLSearchParams({ limit: "200" });
  const actor = $("audit-actor").value.trim();
  const route = $("audit-route").value.trim();
  const since = $("audit-since").value;
  if (actor) query.set("actor", actor);
  if (route) query.set("route", route);
  if (since) query.set("since", String(Math.floor(Date.now() / 1000) - Number(since)));
  const { entries } = await api(`/api/v1/audit?${query}`);
  $("audit-count").textContent = `${entries.length} shown`;
  $("audit").tBodies[0].replaceChildren(
    ...entries.map((e) =>
      el(
        "tr",
        { "data-seq": e.seq },
        el("td", { "data-label": "#" }, String(e.seq)),
        el("td", { "data-label": "When", title: time(e.at) }, ago(e.at)),
        el("td", { "data-label": "Who" }, e.actor),
        el("td", { "data-label": "Call" }, `${e.method} ${e.path}`),
        el("td", { "data-label": "Status", class: e.status >= 400 ? "error" : "" }, String(e.status)),
        el("td", { "data-label": "Subject" }, e.subject || "–"),
        el("td", { "data-label": "Change" }, e.before || e.after ? `${compact(e.before)} → ${compact(e.after)}` : "–"),
      ),
    ),
  );
}

function loadAuditSoon() {
  clearTimeout(auditTimer);
  auditTimer = setTimeout(() => loadAudit().catch((e) => ($("audit-note").textContent = e.message)), 250);
}

async function verifyAudit() {
  const check = await api("/api/v1/audit/verify");
  const out = $("audit-chain");
  if (check.broken) {
    out.className = "error";
    out.textContent = `Broken at entry ${check.broken.seq}: ${check.broken.reason}`;
  } else {
    out.className = "muted";
    out.textContent = check.entries
      ? `Chain intact: ${check.entries} entries from #${check.first_seq}; head ${check.head_seq}:${check.head_hash}`
      : "Chain intact: no entries yet";
  }
}

// ---- registry ----

function lineageSummary(lineage, key) {
  const map = lineage && lineage[key];
  if (!map) return "–";
  return Object.entries(map).map(([k, v]) => `${k} ${v}`).join(", ") || "–";
}

function codeSummary(lineage) {
  const code = lineage && lineage.code;
  if (!code) return "–";
  if (code.commit) return `commit ${code.commit.slice(0, 12)}`;
  if (code.sha256) return `${code.path || "script"} ${code.sha256.slice(0, 12)}`;
  return code.repository || "–";
}

// The newest champion–challenger verdict on a version: `split promoted vs 2.0.0`.
function verdictSummary(v) {
  if (!v) return "–";
  return `${v.strategy} ${v.decision}${v.champion ? ` vs ${v.champion}` : ""}`;
}

function rolloutRecord(r) {
  const approved = (r.approvals || []).map((a) => `${a.by} (wave ${a.wave + 1})`).join(", ");
  const head = `${r.rollout} · ${r.strategy} · ${r.state} · started by ${r.started_by} ${new Date(r.started_at * 1000).toLocaleString()}` + (approved ? ` · approved by ${approved}` : "");
  const verdicts = (r.verdicts || []).map((v) =>
    el("li", {}, `Wave ${v.wave}: ${v.decision} against ${v.champion || "–"} on ${v.window.to - v.window.from} s of traffic — ${v.summary}`),
  );
  return el("li", {}, head, verdicts.length ? el("ul", {}, ...verdicts) : "");
}

async function loadRegistry() {
  const { models } = await api("/api/v1/models");
  const rows = [];
  for (const m of models) {
    for (const v of m.versions) {
      const row = el(
        "tr",
        { "data-model": m.model, "data-version": v.version, tabindex: "0" },
        el("td", { "data-label": "Model" }, m.model),
        el("td", { "data-label": "Version" }, v.version),
        el("td", { "data-label": "Stage" }, v.stage),
        el("td", { "data-label": "Seq" }, String(v.sequence)),
        el("td", { "data-label": "Pushed by" }, v.pushed_by || "–"),
        el("td", { "data-label": "Metrics" }, lineageSummary(v.lineage, "metrics")),
        el("td", { "data-label": "Code" }, codeSummary(v.lineage)),
        el("td", { "data-label": "Challenger verdict" }, verdictSummary(v.verdict)),
      );
      const open = () => showVersion(m.model, v.version).catch((e) => ($("registry-title").textContent = e.message));
      row.addEventListener("click", open);
      row.addEventListener("keydown", (e) => e.key === "Enter" && open());
      rows.push(row);
    }
  }
  $("registry").tBodies[0].replaceChildren(...rows);
}

async function showVersion(model, version) {
  const v = await api(`/api/v1/models/${encodeURIComponent(model)}/versions/${encodeURIComponent(version)}`);
  $("registry-detail").hidden = false;
  $("registry-title").textContent = `${model} ${version} · ${v.stage}`;
  const facts = [];
  const fact = (name, value) => facts.push(el("dt", {}, name), el("dd", {}, value));
  const l = v.lineage || {};
  fact("Target", `${v.target} · sha256 ${v.sha256}`);
  if (l.code) fact("Code", Object.entries(l.code).map(([k, x]) => `${k} ${x}`).join(", "));
  if (l.data) fact("Data", Object.entries(l.data).map(([k, x]) => `${k} ${x}`).join(", "));
  if (l.params) fact("Parameters", lineageSummary(l, "params"));
  if (l.metrics) fact("Metrics", lineageSummary(l, "metrics"));
  if (l.source) fact("Source", l.source);
  if (!v.lineage) fact("Lineage", "none signed with this version");
  $("registry-lineage").replaceChildren(...facts);
  const rollouts = v.rollouts || [];
  $("registry-rollouts").replaceChildren(...(rollouts.length ? rollouts.map(rolloutRecord) : [el("li", { class: "muted" }, "Not rolled out yet.")]));
  $("registry-card-hash").textContent = v.card ? `sha256 ${v.card.sha256.slice(0, 16)}…, signed` : "";
  // Text, never HTML: a card is the pusher's words.
  $("registry-card").textContent = v.card_text || (v.card ? `(${v.card.length} bytes; fetch ${v.card.url})` : "No model card was signed with this version.");
}

// ---- wiring ----

function showTab(name) {
  if (name === "audit") loadAuditSoon();
  if (name === "health") loadHealth().catch((e) => ($("health-error").textContent = e.message));
  if (name === "alerts") loadAlerts().catch((e) => ($("alerts-error").textContent = e.message));
  if (name === "review") loadReview().catch((e) => ($("review-error").textContent = e.message));
  if (name === "registry") loadRegistry().catch((e) => ($("registry-title").textContent = e.message));
  for (const tab of document.querySelectorAll("[role=tab]")) {
    tab.setAttribute("aria-selected", String(tab.dataset.tab === name));
  }
  for (const section of document.querySelectorAll(".tab")) {
    section.hidden = section.id !== `tab-${name}`;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  for (const tab of document.querySelectorAll("[role=tab]")) {
    tab.addEventListener("click", () => showTab(tab.dataset.tab));
  }
  for (const id of ["filter-text", "filter-group", "filter-status"]) {
    $(id).addEventListener("input", filterDevices);
  }
  $("devices-prev").addEventListener("click", () => turnDevicePage(false));
  $("devices-next").addEventListener("click", () => turnDevicePage(true));
  for (const id of ["audit-actor", "audit-route", "audit-since"]) {
    $(id).addEventListener("input", loadAuditSoon);
  }
  for (const id of ["health-model", "health-group", "health-since"]) {
    $(id).addEventListener("input", () => loadHealth().catch((e) => ($("health-error").textContent = e.message)));
  }
  $("alerts-all").addEventListener("input", () => loadAlerts().catch((e) => ($("alerts-error").textContent = e.message)));
  $("review-state").addEventListener("input", () => loadReview().catch((e) => ($("review-error").textContent = e.message)));
  $("audit-verify").addEventListener("click", () => verifyAudit().catch((e) => ($("audit-chain").textContent = e.message)));
  $("confirm-yes").addEventListener("click", () => state.pending && act(state.pending.action, state.pending.id));
  $("confirm-no").addEventListener("click", () => {
    state.pending = null;
    renderRollout();
  });
  $("logout").addEventListener("click", () => signOut(""));
  $("login-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    $("login-error").textContent = "";
    try {
      await signIn($("login-token").value.trim());
      $("login-token").value = "";
    } catch (err) {
      signOut(err.message);
    }
  });
  // Relative times age and devices enrol: refresh the page in view without waiting for a change.
  setInterval(() => !$("app").hidden && !$("tab-devices").hidden && loadDevicesReporting(), 10000);
  const saved = sessionStorage.getItem(TOKEN_KEY);
  if (saved) signIn(saved).catch((e) => signOut(e.message));
  else signOut("");
});
