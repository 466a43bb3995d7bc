// Edgefleet dashboard: alerts, fleet health per model, version and group, and one device's
// drill-down. Loaded after app.js, whose helpers ($, el, api, time, ago, canOperate, state) it
// uses.
"use strict";

// ---- alerts ----

async function loadAlerts() {
  $("alerts-error").textContent = "";
  const query = $("alerts-all").checked ? "?all=true" : "";
  const { alerts } = await api(`/api/v1/alerts${query}`);
  const open = alerts.filter((a) => a.state !== "resolved").length;
  $("alerts-open").hidden = open === 0;
  $("alerts-open").textContent = String(open);
  $("alerts-count").textContent = `${alerts.length} shown`;
  $("alerts").tBodies[0].replaceChildren(
    ...alerts.map((a) => {
      const buttons = [];
      if (canOperate() && a.state === "firing") {
        buttons.push(el("button", { type: "button", "data-ack": a.id, onclick: (e) => (e.stopPropagation(), changeAlert(a.id, "ack")) }, "Acknowledge"));
      }
      if (canOperate() && a.state !== "resolved") {
        buttons.push(el("button", { type: "button", class: "quiet", "data-resolve": a.id, onclick: (e) => (e.stopPropagation(), changeAlert(a.id, "resolve")) }, "Resolve"));
      }
      const row = el(
        "tr",
        { "data-alert": a.id, tabindex: "0" },
        el("td", { "data-label": "#" }, String(a.id)),
        el("td", { "data-label": "State" }, el("span", { class: `badge state-${a.state}` }, a.state)),
        el("td", { "data-label": "Alert" }, a.summary),
        el("td", { "data-label": "Seen" }, `${a.occurrences}×`),
        el("td", { "data-label": "Opened", title: time(a.opened_at) }, ago(a.opened_at)),
        el("td", {}, buttons),
      );
      row.addEventListener("click", () => showAlert(a));
      row.addEventListener("keydown", (e) => e.key === "Enter" && showAlert(a));
      return row;
    }),
  );
}

async function changeAlert(id, action) {
  try {
    const updated = await api(`/api/v1/alerts/${id}/${action}`, { method: "POST" });
    showAlert(updated);
  } catch (e) {
    $("alerts-error").textContent = e.message;
  }
  await loadAlerts().catch((e) => ($("alerts-error").textContent = e.message));
}

function showAlert(a) {
  $("alert-detail").hidden = false;
  $("alert-title").textContent = `#${a.id} ${a.name} · ${a.state}`;
  $("alert-description").textContent = a.description;
  const facts = [];
  const fact = (name, value) => facts.push(el("dt", {}, name), el("dd", {}, value));
  fact("Labels", Object.entries(a.labels).map(([k, v]) => `${k}=${v}`).join(", "));
  fact("Opened", time(a.opened_at));
  if (a.acknowledged) fact("Acknowledged", `by ${a.acknowledged.by} ${ago(a.acknowledged.at)}${a.acknowledged.note ? ": " + a.acknowledged.note : ""}`);
  if (a.resolved_at) fact("Resolved", time(a.resolved_at));
  if (a.last_delivery_error) fact("Webhook", a.last_delivery_error);
  $("alert-facts").replaceChildren(...facts);
  $("alert-evidence").replaceChildren(
    ...a.evidence.map((e) => el("li", {}, el("time", {}, time(e.at)), ` ${e.device || "server"}: ${e.detail}`)),
  );
  $("alert-actions").replaceChildren(
    ...(a.actions.length ? a.actions.map((x) => el("li", {}, el("time", {}, time(x.at)), ` ${x.what}`)) : [el("li", { class: "muted" }, "nothing yet")]),
  );
}

// ---- review queue and sampled log ----

async function loadReview() {
  $("review-error").textContent = "";
  const which = $("review-state").value;
  const query = new URLSearchParams({ limit: "200" });
  if (which) query.set("review", which);
  const { samples } = await api(`/api/v1/samples?${query}`);
  $("review-count").textContent = `${samples.length} shown`;
  $("review").tBodies[0].replaceChildren(
    ...samples.map((s) => {
      const p = s.sample;
      const key = `${s.device}/${s.model}/${p.id}`;
      const features = Object.entries(p.features || {}).map(([k, v]) => `${k}=${v}`).join(" ");
      const r = s.review;
      const verdict = !r ? "–" : r.truth ? `${r.state}: ${r.truth.label ?? r.truth.value} (${r.by})` : r.by ? `${r.state} (${r.by})` : r.state;
      const cells = [];
      if (canOperate() && r && r.state === "open") {
        const input = el("input", { type: "text", placeholder: "true label or value", "aria-label": "true label", "data-truth": key });
        const send = (body) => closeReview(s, body);
        cells.push(
          input,
          el("button", { type: "button", "data-review-label": key, onclick: () => send(p.value !== undefined ? { value: Number(input.value) } : { label: input.value.trim() }) }, "Label"),
          el("button", { type: "button", class: "quiet", "data-dismiss": key, onclick: () => send({ dismiss: true }) }, "Dismiss"),
        );
      }
      return el(
        "tr",
        { "data-sample": key },
        el("td", { "data-label": "Device" }, s.device),
        el("td", { "data-label": "Version" }, `${s.model} ${s.version}`),
        el("td", { "data-label": "Prediction", title: time(p.at_unix) }, p.id),
        el("td", { "data-label": "Answer" }, p.label ?? (p.value !== undefined ? String(p.value) : "–")),
        el("td", { "data-label": "Score" }, p.score === undefined ? "–" : p.score.toFixed(3)),
        el("td", { "data-label": "Features" }, features || "–"),
        el("td", { "data-label": "Review" }, verdict),
        el("td", {}, cells),
      );
    }),
  );
}

async function closeReview(s, body) {
  const path = [s.device, s.model, s.sample.id].map(encodeURIComponent).join("/");
  try {
    await api(`/api/v1/review/${path}`, { method: "POST", body: JSON.stringify(body), headers: { "content-type": "application/json" } });
  } catch (e) {
    $("review-error").textContent = e.message;
    return;
  }
  await loadReview().catch((e) => ($("review-error").textContent = e.message));
}

// ---- fleet health ----

async function loadHealth() {
  $("health-error").textContent = "";
  const registry = await api("/api/v1/models");
  const models = new Set([...state.rollouts.values()].map((r) => r.model));
  for (const m of registry.models) models.add(m.model);
  const select = $("health-model");
  const wanted = select.value || [...models].sort()[0] || "";
  select.replaceChildren(...[...models].sort().map((m) => el("option", { value: m }, m)));
  select.value = wanted;
  const groups = state.deviceGroups;
  const group = $("health-group").value;
  $("health-group").replaceChildren(el("option", { value: "" }, "all groups"), ...groups.map((g) => el("option", { value: g }, g)));
  $("health-group").value = groups.includes(group) ? group : "";
  if (!wanted) return;
  const query = new URLSearchParams({ model: wanted, since_seconds: $("health-since").value });
  if ($("health-group").value) query.set("group", $("health-group").value);
  const body = await api(`/api/v1/telemetry?${query}`);
  const percent = (x) => (x === null || x === undefined ? "–" : `${(x * 100).toFixed(1)}%`);
  const mix = (predictions) => {
    const total = Object.values(predictions).reduce((a, b) => a + b, 0);
    return total ? Object.entries(predictions).map(([l, n]) => `${l} ${percent(n / total)}`).join(", ") : "–";
  };
  const drift = (v) => {
    const worst = Object.entries(v.drift_psi).sort((a, b) => b[1] - a[1])[0];
    return worst ? `${worst[0]} ${worst[1].toFixed(3)}` : driftWaiting(v);
  };
  $("health").tBodies[0].replaceChildren(
    ...body.versions.map((v) => {
      const q = v.quality;
      const decayed = (v.decay || []).map((d) => `${d.metric} ${d.field.toFixed(3)} (signed ${d.release.toFixed(3)})`);
      return el(
        "tr",
        { "data-version": v.version },
        el("td", { "data-label": "Version" }, v.version),
        el("td", { "data-label": "Devices" }, String(v.devices)),
        el("td", { "data-label": "Requests" }, String(v.requests)),
        el("td", { "data-label": "Errors", class: v.error_rate > 0.05 ? "error" : "" }, percent(v.error_rate)),
        el("td", { "data-label": "p50 / p99" }, `${v.latency_ms.p50_ms.toFixed(2)} / ${v.latency_ms.p99_ms.toFixed(2)} ms`),
        el("td", { "data-label": "Predictions" }, mix(v.predictions)),
        el("td", { "data-label": "Worst drift (PSI)", class: Object.values(v.drift_psi).some((x) => x > 0.25) ? "error" : "" }, drift(v)),
        el("td", { "data-label": "Accuracy (labels)" }, q ? `${percent(q.accuracy)} (${q.labelled})` : "–"),
        el("td", { "data-label": "Decay", class: decayed.length ? "error" : "" }, decayed.length ? `DECAYED: ${decayed.join("; ")}` : "–"),
      );
    }),
  );
  $("health-count").textContent = `${body.batches} telemetry batches`;
}

// ---- one device ----

async function showDevice(id) {
  const [d, metrics] = await Promise.all([
    api(`/api/v1/devices/${encodeURIComponent(id)}`),
    api(`/api/v1/devices/${encodeURIComponent(id)}/metrics?since_seconds=3600`),
  ]);
  $("device-detail").hidden = false;
  $("device-title").textContent = `${d.id} · ${d.group}`;
  const facts = [];
  const fact = (name, value) => facts.push(el("dt", {}, name), el("dd", {}, value));
  for (const m of (d.reported && d.reported.models) || []) {
    fact(m.model, `${m.active ? m.active.version : "–"} (previous ${m.previous ? m.previous.version : "–"}), ${m.state}${m.last_error ? " — " + m.last_error : ""}`);
  }
  const totals = new Map();
  for (const stored of metrics.batches) {
    for (const m of stored.batch.models) {
      const key = `${m.model} ${m.version}`;
      const t = totals.get(key) || { requests: 0, errors: 0, labelled: 0 };
      t.requests += m.requests;
      t.errors += m.errors;
      t.labelled += (m.quality && m.quality.labelled) || 0;
      totals.set(key, t);
    }
  }
  for (const [key, t] of totals) fact(`${key} (recent telemetry)`, `${t.requests} requests, ${t.errors} errors, ${t.labelled} labels`);
  $("device-facts").replaceChildren(...facts);
  $("device-events").replaceChildren(
    ...(d.events || []).slice(0, 30).map((e) => {
      const m = e.message;
      return el("li", { class: `kind-${m.kind}` }, el("time", {}, time(e.at)), ` ${m.kind.replace("_", " ")} ${m.target || ""}${m.detail ? " — " + m.detail : ""}`);
    }),
  );
}
