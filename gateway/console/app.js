// The Euglena console: the public fleet view, your tasks (submit, list, follow live over
// SSE, cancel) and the ops chart. Plain DOM, no framework; every value from the API is set
// with textContent, never parsed as HTML. Served by the gateway itself (same origin), so the
// page talks to no other host.
"use strict";

const $ = (id) => document.getElementById(id);
const TERMINAL = new Set(["completed", "failed", "cancelled"]);
const state = { token: sessionStorage.getItem("euglena.token") || "", cursor: null, following: null };

function el(tag, props = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === "class") e.className = v;
    else if (k === "testid") e.dataset.testid = v;
    else e[k] = v;
  }
  for (const c of children) e.append(c);
  return e;
}

async function api(path, options = {}) {
  const headers = { ...(options.headers || {}) };
  if (state.token) headers.Authorization = `Bearer ${state.token}`;
  const resp = await fetch(path, { ...options, headers });
  if (resp.ok) return resp;
  let detail = `${resp.status} ${resp.statusText}`;
  try { detail = (await resp.json()).detail || detail; } catch { /* not a problem body */ }
  const err = new Error(detail);
  err.status = resp.status;
  throw err;
}

// ---- Public fleet view -------------------------------------------------------------------
async function refreshFleet() {
  try {
    const c = await (await fetch("/agents/count")).json();
    $("agent-count").textContent = `${c.count} agent${c.count === 1 ? "" : "s"} (${c.busy} busy, ${c.idle} idle)`;
  } catch { $("agent-count").textContent = "agents unknown"; }
}

// ---- Ops chart ---------------------------------------------------------------------------
const SERIES = ["ready", "in_flight", "workers", "busy", "dead_letter"];
const SVG = "http://www.w3.org/2000/svg";

function svg(tag, attrs) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  return e;
}

async function refreshOps() {
  let samples;
  try { samples = (await (await fetch("/ops/samples?minutes=60")).json()).samples; } catch { return; }
  const last = samples[samples.length - 1];
  $("queue-depth").textContent = last && last.ready != null ? `queue ${last.ready}` : "queue –";
  drawChart(samples);
}

function drawChart(samples) {
  const chart = $("ops-chart");
  chart.replaceChildren();
  const W = 600, H = 220, L = 32, B = 20, T = 8;
  // The last hour, or less while there is less history, so a young fleet fills the width.
  const now = Date.now();
  const span = Math.min(3600_000, Math.max(60_000, samples.length ? now - samples[0].at : 3600_000));
  const from = now - span;
  const max = Math.max(1, ...samples.flatMap((s) => SERIES.map((k) => s[k] ?? 0)));
  const x = (t) => L + ((t - from) / span) * (W - L - 4);
  const y = (v) => T + (1 - v / max) * (H - T - B);
  chart.append(svg("line", { class: "axis", x1: L, y1: H - B, x2: W, y2: H - B }));
  chart.append(svg("line", { class: "axis", x1: L, y1: T, x2: L, y2: H - B }));
  const top = svg("text", { x: 2, y: T + 10 }); top.textContent = String(max); chart.append(top);
  const zero = svg("text", { x: 2, y: H - B }); zero.textContent = "0"; chart.append(zero);
  const ago = svg("text", { x: L, y: H - 4 });
  ago.textContent = span >= 120_000 ? `−${Math.round(span / 60_000)} min` : `−${Math.round(span / 1000)} s`;
  chart.append(ago);
  const nowLabel = svg("text", { x: W - 30, y: H - 4 }); nowLabel.textContent = "now"; chart.append(nowLabel);
  // Scale-out and scale-in: where the agent count changed.
  for (let i = 1; i < samples.length; i++) {
    const a = samples[i - 1].workers, b = samples[i].workers;
    if (a != null && b != null && a !== b) {
      const m = svg("line", { class: "marker", x1: x(samples[i].at), y1: T, x2: x(samples[i].at), y2: H - B });
      m.dataset.testid = "scale-marker";
      const t = svg("title", {}); t.textContent = `${b > a ? "scale out" : "scale in"}: ${a} → ${b} agents`;
      m.append(t);
      chart.append(m);
    }
  }
  for (const k of SERIES) {
    const pts = samples.filter((s) => s[k] != null).map((s) => `${x(s.at).toFixed(1)},${y(s[k]).toFixed(1)}`);
    if (pts.length === 0) continue;
    const line = svg("polyline", { class: k, points: pts.join(" ") });
    line.dataset.testid = `series-${k}`;
    line.dataset.points = String(pts.length);
    chart.append(line);
  }
}

// ---- Your tasks --------------------------------------------------------------------------
function showAuth(message, bad) {
  const m = $("auth-message");
  m.textContent = message;
  m.classList.toggle("error", Boolean(bad));
}

async function useToken(token) {
  state.token = token.trim();
  sessionStorage.setItem("euglena.token", state.token);
  state.cursor = null;
  $("task-list").replaceChildren();
  try {
    await loadTasks();
    showAuth("Signed in; your tasks are below.", false);
    $("submit-form").hidden = false;
    $("list-wrap").hidden = false;
    loadDeadLetters();
  } catch (e) {
    $("submit-form").hidden = true;
    $("list-wrap").hidden = true;
    showAuth(e.status === 401 || e.status === 403 ? `That token was refused: ${e.message}` : `Could not load your tasks: ${e.message}`, true);
  }
}

async function loadTasks() {
  const q = new URLSearchParams({ limit: "10" });
  if (state.cursor) q.set("cursor", state.cursor);
  const page = await (await api(`/tasks?${q}`)).json();
  for (const t of page.tasks) $("task-list").append(taskRow(t));
  state.cursor = page.next_cursor;
  $("more-button").hidden = !state.cursor;
}

function taskRow(t) {
  const link = el("a", { href: `#${t.correlation_id}`, textContent: t.mandate.slice(0, 80) || t.correlation_id });
  link.addEventListener("click", (ev) => { ev.preventDefault(); follow(t.correlation_id, t.max_ticks); });
  const badge = el("span", { class: `status ${t.status}`, textContent: t.status });
  badge.dataset.task = t.correlation_id;
  return el("li", { testid: "task-row" }, badge, link);
}

// Keeps the history's badge of the followed task in step with its stream.
function updateRow(id, status) {
  for (const b of document.querySelectorAll("#task-list .status")) {
    if (b.dataset.task === id) { b.textContent = status; b.className = `status ${status}`; }
  }
}

async function submit(ev) {
  ev.preventDefault();
  $("submit-error").textContent = "";
  const body = { mandate: $("mandate-input").value, max_ticks: Number($("max-ticks-input").value) };
  const budget = $("max-tokens-input").value.trim();
  if (budget) body.max_tokens = Number(budget);
  const hook = $("webhook-input").value.trim();
  if (hook) body.webhook_url = hook;
  const tools = $("tools-input").value.split(",").map((t) => t.trim()).filter(Boolean);
  if (tools.length) body.tools = tools;
  try {
    const t = await (await api("/tasks", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) })).json();
    $("task-list").prepend(taskRow(t));
    $("mandate-input").value = "";
    follow(t.correlation_id, t.max_ticks);
  } catch (e) {
    $("submit-error").textContent = e.message;
  }
}

function render(status, tick, maxTicks) {
  $("task-status").textContent = status;
  $("task-tick").textContent = tick != null ? `tick ${tick} of ${maxTicks}` : "";
  $("cancel-button").hidden = TERMINAL.has(status);
  $("retry-button").hidden = !(status === "failed" || status === "cancelled");
  $("extend-form").hidden = status !== "incomplete";
  $("message-form").hidden = TERMINAL.has(status) || status === "…";
  if (status !== "requires_action") $("pending-action").hidden = true;
}

// A parked task: the call it waits on, from the task itself (the event names only its id).
async function showPending(id) {
  try {
    const t = await (await api(`/tasks/${id}`)).json();
    const a = t.required_action;
    if (!a || state.followingId !== id) return;
    $("pending-tool").textContent = a.tool;
    $("pending-arguments").textContent = JSON.stringify(a.arguments);
    $("pending-expires").textContent = a.expires_at;
    const box = $("pending-action");
    box.dataset.call = a.call_id;
    box.hidden = false;
  } catch (e) { $("task-status").textContent = `could not read the pending call: ${e.message}`; }
}

async function decide(decision) {
  const id = state.followingId, call = $("pending-action").dataset.call;
  try {
    await api(`/tasks/${id}/actions/${encodeURIComponent(call)}`, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ decision }) });
    $("pending-action").hidden = true;
  } catch (e) { $("task-status").textContent = `${decision} failed: ${e.message}`; }
}

async function sendMessage(ev) {
  ev.preventDefault();
  const text = $("message-input").value.trim();
  if (!text) return;
  try {
    await api(`/tasks/${state.followingId}/messages`, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ text }) });
    $("message-input").value = "";
    $("message-status").textContent = "sent: the agent reads it at its next tick";
  } catch (e) { $("message-status").textContent = `not sent: ${e.message}`; }
}

function showResult(result, error, stopped = false) {
  const box = $("task-result");
  box.replaceChildren();
  if (error) box.append(el("p", { class: "message error", textContent: `Error: ${error}` }));
  if (result) {
    const verdict = stopped ? "Stopped before it finished; what it has so far:" : result.success ? "The mandate was met." : "The mandate was not met.";
    box.append(el("p", { textContent: verdict }));
    const d = el("ul", { testid: "deliverables" });
    for (const item of result.deliverables || []) d.append(el("li", { textContent: item }));
    box.append(el("h4", { textContent: "Deliverables" }), d);
    if ((result.sources || []).length) {
      const s = el("ul", { testid: "sources" });
      for (const url of result.sources) {
        const ok = /^https?:\/\//i.test(url);
        s.append(el("li", {}, ok ? el("a", { href: url, textContent: url, rel: "noopener noreferrer", target: "_blank" }) : url));
      }
      box.append(el("h4", { textContent: "Sources" }), s);
    }
    if (result.notes) box.append(el("p", { class: "message", textContent: result.notes }));
  }
  box.hidden = false;
}

// Follows one task over GET /tasks/{id}/events. EventSource cannot send the Authorization
// header, so the stream is read with fetch; on a dropped stream it resumes from the last id.
async function follow(id, maxTicks) {
  if (state.following) state.following.abort();
  const ctrl = new AbortController();
  state.following = ctrl;
  state.followingId = id;
  $("message-status").textContent = "";
  $("task-detail").hidden = false;
  $("task-id").textContent = id;
  $("task-actions").replaceChildren();
  $("task-result").hidden = true;
  $("cancel-button").dataset.id = id;
  render("…", null, maxTicks);
  let last = null;
  // The stream ends after the task's last terminal event: a retried task's replay shows the
  // earlier run's end, then goes on with the next run.
  let ended = false;
  for (let tries = 0; tries < 20 && !ctrl.signal.aborted; tries++) {
    try {
      const headers = last ? { "Last-Event-ID": last } : {};
      const resp = await api(`/tasks/${id}/events`, { headers, signal: ctrl.signal });
      const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += value;
        let end;
        while ((end = buf.indexOf("\n\n")) >= 0) {
          const block = buf.slice(0, end);
          buf = buf.slice(end + 2);
          const ev = parseEvent(block);
          if (!ev) continue;
          if (ev.id) last = ev.id;
          if (ev.data.status) updateRow(id, ev.data.status);
          ended = onEvent(ev, maxTicks);
        }
      }
      if (ended) return;
    } catch (e) {
      if (ctrl.signal.aborted) return;
      if (e.status === 404 || e.status === 401) { render(`unavailable: ${e.message}`, null, maxTicks); return; }
    }
    await new Promise((r) => setTimeout(r, 1000));
  }
}

function parseEvent(block) {
  let event = "message", id = null, data = "";
  for (const line of block.split("\n")) {
    if (!line || line.startsWith(":")) continue;
    const i = line.indexOf(":");
    const k = i < 0 ? line : line.slice(0, i);
    const v = i < 0 ? "" : line.slice(i + 1).replace(/^ /, "");
    if (k === "event") event = v; else if (k === "id") id = v; else if (k === "data") data += v;
  }
  if (!data) return null;
  try { return { event, id, data: JSON.parse(data) }; } catch { return null; }
}

// Returns true when the event ends a run for good (unless later events say otherwise).
function onEvent(ev, maxTicks) {
  const d = ev.data;
  if (ev.event === "tick") {
    const tool = d.tool ? ` ${d.tool}` : "";
    $("task-actions").append(el("li", { textContent: `tick ${d.tick}: ${d.action}${tool}` }));
    render(d.status, d.tick, maxTicks);
  } else if (ev.event === "message") {
    $("task-actions").append(el("li", { class: "owner", textContent: `you: ${d.message}` }));
  } else if (ev.event === "status") {
    render(d.status, null, maxTicks);
    if (d.status === "requires_action") showPending(state.followingId);
    if (d.status === "incomplete") {
      // Stopped at a budget: what it has so far; the stream stays open for an extend.
      $("extend-reason").textContent = d.reason === "max_tokens" ? "token" : "tick";
      showResult(d.result, null, true);
    }
    if (d.status === "in_queue") $("task-result").hidden = true;
    if (TERMINAL.has(d.status)) {
      showResult(d.result, d.error);
      return true;
    }
  }
  return false;
}

async function retry() {
  const id = state.followingId;
  try {
    await api(`/tasks/${id}/retry`, { method: "POST", headers: { "Content-Type": "application/json" }, body: "{}" });
    const t = await (await api(`/tasks/${id}`)).json();
    follow(id, t.max_ticks);
  } catch (e) { $("task-status").textContent = `retry failed: ${e.message}`; }
}

async function extend(ev) {
  ev.preventDefault();
  const body = {};
  if ($("extend-tokens").value) body.max_tokens = Number($("extend-tokens").value);
  if ($("extend-ticks").value) body.max_ticks = Number($("extend-ticks").value);
  try {
    await api(`/tasks/${state.followingId}/extend`, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
    $("extend-form").hidden = true;
  } catch (e) { $("task-status").textContent = `extend failed: ${e.message}`; }
}

// ---- Operators: the dead-letter queue (shown only when the token has the operator role) --
function isOperator(token) {
  const claim = state.operatorClaim;
  if (!claim) return false;
  try {
    const b64 = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    let at = JSON.parse(atob(b64 + "=".repeat((4 - (b64.length % 4)) % 4)));
    for (const k of claim.path) at = at && typeof at === "object" ? at[k] : undefined;
    return at === claim.value;
  } catch { return false; }
}

async function loadDeadLetters() {
  // The gateway decides; this only spares other users a request that would be refused.
  if (!isOperator(state.token)) { $("dead-letters").hidden = true; return; }
  let page;
  try { page = await (await api("/admin/dead-letters?limit=100")).json(); } catch { $("dead-letters").hidden = true; return; }
  const rows = page.dead_letters.map((d) => el("tr", { testid: "dead-letter-row" },
    el("td", {}, el("code", { textContent: d.correlation_id })), el("td", { textContent: d.user_id || "–" }),
    el("td", { textContent: d.reason || "–" }), el("td", { textContent: d.status || "gone" }), el("td", { textContent: d.first_death_at })));
  $("dead-letter-rows").replaceChildren(...rows);
  $("dead-letters").hidden = false;
}

// A redrive is dry first: the real one is enabled by a dry run, for the same dead letters.
async function redrive(dry) {
  const body = dry ? { dry_run: true } : { ids: state.redriveIds, operation_id: state.redriveOp };
  try {
    const r = await (await api("/admin/dead-letters/redrive", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) })).json();
    const counts = {};
    for (const x of r.results) counts[x.outcome] = (counts[x.outcome] || 0) + 1;
    $("redrive-report").textContent = `${dry ? "Dry run" : "Redrive"}: ` + (Object.entries(counts).map(([k, n]) => `${n} ${k}`).join(", ") || "nothing to do");
    state.redriveIds = dry ? r.results.filter((x) => x.outcome.startsWith("would_")).map((x) => x.correlation_id) : [];
    state.redriveOp = dry ? crypto.randomUUID() : null;
    $("redrive").disabled = !dry || state.redriveIds.length === 0;
    if (!dry) loadDeadLetters();
  } catch (e) { $("redrive-report").textContent = `redrive failed: ${e.message}`; }
}

async function cancel() {
  const id = $("cancel-button").dataset.id;
  try { await api(`/tasks/${id}/cancel`, { method: "POST" }); } catch (e) { $("task-status").textContent = `cancel failed: ${e.message}`; }
}

async function devToken() {
  const sub = "console-user";
  try {
    const t = await (await fetch("/dev/token", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ sub }) })).json();
    $("token-input").value = t.token;
    await useToken(t.token);
    showAuth(`Signed in with a DEVELOPMENT token for "${sub}" (local mode only, valid ${Math.round(t.expires_in / 60)} min).`, false);
  } catch { showAuth("No development tokens on this gateway.", true); }
}

async function init() {
  $("token-form").addEventListener("submit", (ev) => { ev.preventDefault(); useToken($("token-input").value); });
  $("submit-form").addEventListener("submit", submit);
  $("more-button").addEventListener("click", () => loadTasks().catch((e) => showAuth(e.message, true)));
  $("cancel-button").addEventListener("click", cancel);
  $("retry-button").addEventListener("click", retry);
  $("extend-form").addEventListener("submit", extend);
  $("redrive-dry").addEventListener("click", () => redrive(true));
  $("redrive").addEventListener("click", () => redrive(false));
  $("approve-button").addEventListener("click", () => decide("approve"));
  $("deny-button").addEventListener("click", () => decide("deny"));
  $("message-form").addEventListener("submit", sendMessage);
  $("dev-token").addEventListener("click", devToken);
  try {
    const config = await (await fetch("/console/config")).json();
    $("dev-token").hidden = !config.dev_tokens;
    state.operatorClaim = config.operator_claim || null;
  } catch { /* stays hidden */ }
  if (state.token) { $("token-input").value = state.token; useToken(state.token); }
  refreshFleet(); refreshOps();
  setInterval(refreshFleet, 3000);
  setInterval(refreshOps, 5000);
}

document.addEventListener("DOMContentLoaded", init);
